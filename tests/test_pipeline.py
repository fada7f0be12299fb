"The papermill chain: refused names, YAML + --set, the run-or-skip plan, a failing step, the demo chain end to end and killed anywhere."
import json, os, random, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import ROOT, make_outputs
from anima_nb.core import read_json, read_jsonl, read_manifest, load_profile, notebook_schema, LEFTOVERS
from anima_nb.pipeline import (CHAIN, gather_params, param_types, check_names, step_inputs, prepare,
                               plan_steps, select_steps, run_needs, StepFailed)

NBS = ROOT/'nbs'
DECL = {s: notebook_schema(NBS/f'{nb}.ipynb') for s, nb in CHAIN.items()}
TYPES = param_types(DECL)
BIN = Path(sys.executable).parent

def command(*args) -> list:
    "The CLI as the README runs it (`anima-run`, else `python -m anima_nb.pipeline`)."
    return ([str(BIN/'anima-run')] if (BIN/'anima-run').exists() else [sys.executable, '-m', 'anima_nb.pipeline']) + list(args)

def anima_run(*args, timeout=600, env=None):
    "Run the CLI from the project root."
    return subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)

def run_files(outputs, run='demo'):
    return sorted(p.name for p in (outputs/run).iterdir()) if (outputs/run).exists() else []

# --- parameters ---------------------------------------------------------------------------------------------------

def test_every_step_declares_profile_and_run_name():
    for s, d in DECL.items(): assert {'profile', 'run_name'} <= set(d), s

def test_undeclared_name_refused_before_anything_runs(outputs):
    r = anima_run('--profile', 'demo', '--set', 'max_step=4')
    assert r.returncode == 2, r.stderr
    assert "No notebook of the chain declares ['max_step']" in r.stderr and 'max_steps' in r.stderr
    assert sorted(os.listdir(outputs)) == ['.cache']

def test_wrong_type_refused_before_anything_runs(outputs):
    r = anima_run('--set', 'max_steps=four')
    assert r.returncode == 2 and "'max_steps' of 02_train must be int" in r.stderr, r.stderr
    assert sorted(os.listdir(outputs)) == ['.cache']

def test_unknown_name_in_config_refused(outputs, tmp_path):
    cfg = tmp_path/'run.yaml'; cfg.write_text('max_steps: 4\nlearning_rte: 1.0e-3\n')
    r = anima_run('--config', str(cfg))
    assert r.returncode == 2 and "['learning_rte']" in r.stderr, r.stderr

def test_value_no_step_uses_refused_before_anything_runs(outputs):
    r = anima_run('--plan', '--set', 'judge_model=gpt-4o')      # the demo's Elo step replays recorded verdicts
    assert r.returncode == 2, r.stderr
    assert 'judge_model is given but no step uses it: 05_elo: answers is empty' in r.stderr, r.stderr
    r = anima_run('--plan', '--set', 'temperature=0.2')
    assert r.returncode == 2 and '04_inference: do_sample is false' in r.stderr, r.stderr
    r = anima_run('--plan', '--set', 'temperature=0.2', '--set', 'do_sample=true')
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(outputs)) == ['.cache']

def test_unknown_step_refused(outputs):
    r = anima_run('--steps', 'train,evaluate')
    assert r.returncode == 2 and "Unknown step(s) ['evaluate']" in r.stderr, r.stderr

def test_module_entry_point_plans_without_running(outputs, tmp_path):
    cfg = tmp_path/'run.yaml'; cfg.write_text('max_new_tokens: 8\n')
    r = subprocess.run([sys.executable, '-m', 'anima_nb.pipeline', '--plan', '--config', str(cfg), '--steps', 'inference,elo'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['inference', 'run', 'never', 'ran', 'elo', 'run', 'never', 'ran']
    assert sorted(os.listdir(outputs)) == ['.cache']

def test_one_pipeline_per_run_folder(outputs):
    (outputs/'demo').mkdir()
    (outputs/'demo'/'.lock').write_text(str(os.getpid()))        # a live process holds the run
    r = anima_run('--steps', 'data')
    assert r.returncode == 2 and 'is in use by process' in r.stderr, r.stderr
    assert sorted(os.listdir(outputs/'demo')) == ['.lock']

def test_yaml_then_set_then_flags(tmp_path):
    cfg = tmp_path/'run.yaml'
    cfg.write_text('profile: anima33b\nrun_name: big\nmax_steps: 100\nlearning_rate: 2e-4\nrounds: 50\nbf16: true\n')
    v = gather_params(TYPES, config=cfg, sets=['max_steps=10000', 'rounds=null', 'judge_model=gpt-4o'])
    assert v == {'profile': 'anima33b', 'run_name': 'big', 'max_steps': 10000, 'learning_rate': 2e-4, 'rounds': None,
                 'bf16': True, 'judge_model': 'gpt-4o'}
    v2 = gather_params(TYPES, profile='demo', run_name='small', config=cfg)
    assert (v2['profile'], v2['run_name'], v2['max_steps']) == ('demo', 'small', 100)
    check_names(v, DECL)

def test_each_step_receives_only_what_it_declares():
    v = gather_params(TYPES, sets=['max_steps=4', 'max_new_tokens=8', 'seed=7', 'rounds=10'])
    got = {s: step_inputs(v, DECL[s]) for s in CHAIN}
    base = {'profile': 'demo', 'run_name': 'demo'}
    assert got['data'] == base
    assert got['train'] == {**base, 'max_steps': 4, 'seed': 7}
    assert got['merge'] == base
    assert got['inference'] == {**base, 'max_new_tokens': 8, 'seed': 7}
    assert got['elo'] == {**base, 'seed': 7, 'rounds': 10}

def test_resolved_parameters_fill_from_profile(outputs):
    pre = prepare(gather_params(TYPES, profile='anima33b', sets=['max_steps=10000']), steps='train,merge')
    assert [p['step'] for p in pre['plan']] == ['train', 'merge']
    r = pre['resolved']['train']
    assert (r['max_steps'], r['lora_r'], r['run_name']) == (10000, load_profile('anima33b')['lora_r'], 'anima33b')
    assert sorted(os.listdir(outputs)) == ['.cache']          # planning creates nothing

def test_profile_file_names_the_run(outputs, tmp_path):
    prof = tmp_path/'small.yaml'; prof.write_text('base: demo\nmax_steps: 3\nmax_new_tokens: 16\n')
    pre = prepare(gather_params(TYPES, profile=str(prof), sets=['max_new_tokens=8']))
    assert pre['values']['run_name'] == 'small'
    assert (pre['resolved']['train']['max_steps'], pre['resolved']['inference']['max_new_tokens']) == (3, 8)
    assert pre['resolved']['train']['lora_r'] == load_profile('demo')['lora_r']

# --- the plan -------------------------------------------------------------------------------------------------------

STEPS = list(CHAIN)
RES = {s: {'profile': 'demo', 'run_name': 'demo', 'x': 1} for s in STEPS}

def _done(res=RES):
    return {s: dict(status='complete', params=res[s], started=f'2026-01-01T00:0{i}:00+00:00',
                    finished=f'2026-01-01T00:0{i}:30+00:00') for i, s in enumerate(STEPS)}

def _acts(plan): return {p['step']: p['action'] for p in plan}

def test_plan_fresh_run_runs_everything():
    assert set(_acts(plan_steps(STEPS, RES, {})).values()) == {'run'}

def test_plan_complete_run_skips_everything():
    assert set(_acts(plan_steps(STEPS, RES, _done())).values()) == {'skip'}

DOWNSTREAM = dict(data=['data'], train=['train', 'merge', 'inference', 'elo'], merge=['merge', 'inference', 'elo'],
                  inference=['inference', 'elo'], elo=['elo'])

@pytest.mark.parametrize('step', STEPS)
def test_plan_changed_parameter_reruns_that_step_and_those_reading_from_it(step):
    res = {**RES, step: {**RES[step], 'x': 2}}
    p = plan_steps(STEPS, res, _done())
    assert [q['step'] for q in p if q['action'] == 'run'] == DOWNSTREAM[step]
    assert p[STEPS.index(step)]['reason'] == 'parameters changed: x: 1 -> 2'

def test_plan_profiling_the_data_never_retrains():
    m = _done(); del m['data']
    assert _acts(plan_steps(STEPS, RES, m)) == dict(data='run', train='skip', merge='skip', inference='skip', elo='skip')

def test_plan_failed_or_running_step_reruns():
    for status in ('failed', 'running'):
        m = _done(); m['merge']['status'] = status
        p = plan_steps(STEPS, RES, m)
        assert _acts(p) == dict(data='skip', train='skip', merge='run', inference='run', elo='run')
        assert p[2]['reason'] == f'its last run is {status}'

def test_plan_step_older_than_an_earlier_one_reruns():
    m = _done(); m['train']['finished'] = '2026-01-02T00:00:00+00:00'
    p = plan_steps(STEPS, RES, m)
    assert _acts(p)['train'] == 'skip' and _acts(p)['merge'] == 'run'
    assert p[2]['reason'] == 'train finished after it started'

def test_plan_selected_steps_and_force():
    assert _acts(plan_steps(['train', 'merge'], RES, _done(), force=True)) == dict(train='run', merge='run')
    assert _acts(plan_steps(select_steps('05_elo,inference'), RES, _done())) == dict(inference='skip', elo='skip')

def test_plan_replayed_elo_does_not_rerun_after_inference():
    "Replaying recorded verdicts reads no answers: new answers rerun the Elo step only when it plays them."
    res = {**RES, 'inference': {**RES['inference'], 'x': 2}, 'elo': {**RES['elo'], 'judge': 'replay', 'answers': None}}
    done = _done({**RES, 'elo': res['elo']})
    assert _acts(plan_steps(STEPS, res, done, needs=run_needs(res)))['elo'] == 'skip'
    played = {**res, 'elo': {**res['elo'], 'answers': 'outputs/other/inference'}}
    done = _done({**RES, 'elo': played['elo']})
    assert _acts(plan_steps(STEPS, played, done, needs=run_needs(played)))['elo'] == 'run'

def test_plan_compares_as_json():
    res = {s: {**RES[s], 'modules': ('q', 'v')} for s in STEPS}
    done = _done({s: {**RES[s], 'modules': ['q', 'v']} for s in STEPS})
    assert set(_acts(plan_steps(STEPS, res, done)).values()) == {'skip'}

# --- the executed copy while a step runs ----------------------------------------------------------------------------

def test_running_copy_is_written_at_most_every_save_every_seconds(tmp_path, monkeypatch):
    "A step's executed copy shows how far it got, written at most every `SAVE_EVERY` seconds; the end is always written."
    import nbformat, papermill.engines
    from anima_nb import pipeline as P
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f'part {i}') for i in range(10)] + [
        nbformat.v4.new_code_cell("import time; print('first cell', 'done'); time.sleep(1.5)"),
        nbformat.v4.new_code_cell("import os, json\n"
                                  "seen = os.path.exists(partial) and [o['text'] for c in json.load(open(partial))['cells']\n"
                                  "                                    for o in c.get('outputs', []) if 'text' in o]\n"
                                  "print('seen:', bool(seen))")])
    nb.metadata['kernelspec'] = dict(name='python3', display_name='Python 3', language='python')
    src = tmp_path/'step.ipynb'; nbformat.write(nb, src)
    writes = []
    real = papermill.engines.write_ipynb
    monkeypatch.setattr(papermill.engines, 'write_ipynb', lambda nb, path: (writes.append(path), real(nb, path)))
    def run(every):
        monkeypatch.setattr(P, 'SAVE_EVERY', every); writes.clear()
        out = P.run_notebook('probe', src, tmp_path/f'out{every}'/'step.ipynb',
                             {'partial': str(tmp_path/f'out{every}'/'.step.partial.ipynb')}, cwd=tmp_path)
        text = ''.join(o.get('text', '') for c in nbformat.read(out, 4).cells if c.cell_type == 'code' for o in c.outputs)
        assert 'first cell done' in text and not (out.parent/'.step.partial.ipynb').exists()
        return text, len(writes)
    text, n = run(1)                   # the first cell takes longer than the cadence: the second sees its output
    assert 'seen: True' in text and 2 <= n < 6, n
    text, n = run(1000)                # written as it starts (no outputs yet) and at the end, nothing between
    assert 'seen: False' in text and n == 2, n
    text, n = run(0)                   # papermill's own behaviour: every cell's start and end, markdown too
    assert n >= 2 * len(nb.cells), n

# --- a failing step -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_failed_step_stops_the_chain_and_names_step_cell_and_notebook(outputs, tmp_path):
    bad = tmp_path/'bad.json'; bad.write_text('[{"prompt": "hi", "output": "x"}]')      # alpaca rows need 'instruction'
    r = anima_run('--run-name', 'broken', '--set', f'dataset={bad}', '--steps', 'data,train')
    assert r.returncode == 1, r.stdout + r.stderr
    nb = outputs/'broken'/'notebooks'/'01_data.ipynb'
    assert "Step 'data' failed in cell" in r.stderr and '(In [' in r.stderr and str(nb) in r.stderr, r.stderr
    assert nb.exists()
    m = read_manifest(outputs/'broken')
    assert m['status'] == 'failed' and m['steps']['data']['status'] == 'failed'
    assert m['steps']['data']['failure']['ename'] and m['steps']['train']['status'] == 'not run'
    assert not (outputs/'broken'/'train').exists()

# --- the demo chain end to end --------------------------------------------------------------------------------------

# The real notebooks on the demo profile, with less work: 12 training steps (a checkpoint every 4), one merge mode,
# fewer resamples for the rating intervals. The README's command itself (the full demo) is timed by
# tests/bench/bench_demo.py. The chain runs once for this file: the end-to-end test goes on from it, and the kill test
# compares its own run, killed and rerun, with it.
FAST = ['--set', 'max_steps=12', '--set', 'save_steps=4', '--set', 'compare_modes=false', '--set', 'bootstrap_rounds=200',
        '--set', 'permutations=20']

@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    "The demo chain run once: its outputs folder, the command's result and the summary it wrote, read before any test goes on."
    out = make_outputs(tmp_path_factory.mktemp('chain')/'outputs')
    r = anima_run('--profile', 'demo', *FAST, env={**os.environ, 'ANIMA_NB_OUTPUTS': str(out)})
    return dict(out=out, result=r, summary=read_json(out/'demo'/'summary.json') if r.returncode == 0 else None)

@pytest.mark.slow
def test_demo_chain_end_to_end(chain, monkeypatch):
    r, outputs = chain['result'], chain['out']
    monkeypatch.setenv('ANIMA_NB_OUTPUTS', str(outputs))          # what follows runs on the chain's folder
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    run = outputs/'demo'
    assert sorted(p.name for p in (run/'notebooks').iterdir()) == [f'{nb}.ipynb' for nb in CHAIN.values()]
    m = read_manifest(run)
    assert m['status'] == 'complete'
    for s in CHAIN:
        st = m['steps'][s]
        assert st['status'] == 'complete' and st['step_status'] == 'complete', (s, st)
        assert st['params']['run_name'] == 'demo' and st['git'] and st['versions'] and st['seconds'] > 0
        assert read_manifest(run/s)['params'] == st['params']
    assert m['steps']['train']['params']['max_steps'] == 12
    S = read_json(run/'summary.json')
    assert set(S['status'].values()) == {'complete'}
    assert S['train']['final_loss'] is not None and S['merge']['passed'] is True and S['data']['rows'] > 0
    assert S['train']['final_eval_loss'] < S['train']['first_eval_loss']          # held out, from step 0
    assert S['answer_kinds']['chinese'] > 0 and 'held-out' in r.stdout and 'Chinese text' in r.stdout
    assert len(S['elo']['bradley_terry']) >= 2 and all({'rating', 'lo', 'hi'} <= set(v) for v in S['elo']['bradley_terry'].values())
    assert any(p.endswith('loss.png') for p in S['plots']) and (run/'summary.md').exists()
    assert 'Bradley-Terry' in r.stdout and 'training' in r.stdout
    # a finished run extends: more steps resume from the last checkpoint, the plan says so and nothing is refused
    more = [a if a != 'max_steps=12' else 'max_steps=14' for a in FAST]
    p = anima_run('--profile', 'demo', *more, '--plan')
    assert p.returncode == 0 and 'extend max_steps 12 -> 14: resume from checkpoint-12' in p.stdout, p.stdout + p.stderr
    # others may read what the run wrote as far as the umask allows: no file 0600, no folder 0700
    from anima_nb.core import umask
    modes = {p.relative_to(run): p.stat().st_mode & 0o777 for p in run.rglob('*') if not p.is_symlink()}
    wrong = {str(k): oct(v) for k, v in modes.items()
             if v != ((0o777 if (run/k).is_dir() else 0o666) & ~umask()) and not v & 0o100}
    assert not wrong, wrong
    # the records name the run's files, and the demo base, relative to the run folder: a copied run still reads
    records = [p for p in run.rglob('*') if p.suffix in ('.json', '.jsonl') or p.name in ('README.md', 'summary.md')]
    absolute = [str(p.relative_to(run)) for p in records if str(outputs) in p.read_text(encoding='utf-8')]
    assert not absolute, absolute
    assert read_json(run/'train'/'adapter'/'adapter_config.json')['base_model_name_or_path'].startswith('../.cache/tiny-llama-')

    # the site's step pages are the executed copies: a plot and the Elo table render
    from nbconvert import HTMLExporter
    from anima_nb.pipeline import docs_sources
    site = docs_sources('demo', outputs.parent/'site', execute=['05b_ratings'])   # the docs build runs them all
    shared = read_json(site/'05b_ratings.ipynb')['cells']
    assert not any(c.get('outputs') for c in read_json(NBS/'05b_ratings.ipynb')['cells'])       # the source has none
    assert sum(bool(c.get('outputs')) for c in shared) >= 3 and all(c.get('execution_count') for c in shared
                                                                     if c['cell_type'] == 'code' and c['source'])
    elo_html, _ = HTMLExporter().from_filename(str(site/'05_elo.ipynb'))
    train_html, _ = HTMLExporter().from_filename(str(site/'02_train.ipynb'))
    assert '<img' in elo_html and 'data:image/png;base64' in train_html
    tables = re.findall(r'<table.*?</table>', elo_html, re.S)
    assert any('Bradley' in t and all(m in t for m in ('anima', 'belle', 'cn_vicuna', 'chatgpt')) for t in tables), \
        'the Elo table is not on the page'

    again = anima_run('--profile', 'demo', *FAST)
    assert again.returncode == 0, again.stderr[-3000:]
    m2 = read_manifest(run)
    assert {s: v['status'] for s, v in m2['steps'].items()} == {s: 'skipped' for s in CHAIN}
    assert again.stdout.count('skipped: complete with the same parameters') == len(CHAIN)

    changed = anima_run('--profile', 'demo', *FAST, '--set', 'max_new_tokens=8')
    assert changed.returncode == 0, changed.stderr[-3000:]
    m3 = read_manifest(run)
    assert {s: v['status'] for s, v in m3['steps'].items()} == dict(data='skipped', train='skipped', merge='skipped',
                                                                     inference='complete', elo='skipped')   # replay reads no answers
    assert f"max_new_tokens: {load_profile('demo')['max_new_tokens']} -> 8" in m3['steps']['inference']['reason']
    assert read_manifest(run/'inference')['params']['max_new_tokens'] == 8

    # a training value nothing learned depends on (the evaluation cadence): the training step records it, no step
    # after it runs again, and the next plan is all skips
    trained_at = read_manifest(run/'train')['finished']
    cadence = anima_run('--profile', 'demo', *FAST, '--set', 'max_new_tokens=8', '--set', 'eval_steps=3')
    assert cadence.returncode == 0, cadence.stderr[-3000:]
    assert {s: v['status'] for s, v in read_manifest(run)['steps'].items()} == dict(
        data='skipped', train='complete', merge='skipped', inference='skipped', elo='skipped')
    tm = read_manifest(run/'train')
    assert tm['params']['eval_steps'] == 3 and tm['recorded']['changes'] == ['eval_steps: 20 -> 3']
    assert tm['finished'] == trained_at and tm['status'] == 'complete'   # its outputs are the ones it made before
    plan = anima_run('--profile', 'demo', *FAST, '--set', 'max_new_tokens=8', '--set', 'eval_steps=3', '--plan')
    assert plan.returncode == 0 and plan.stdout.count(' skip ') == len(CHAIN), plan.stdout

    # the optional benchmarks step after the chain: lm-eval on the merged model, offline, shown in summary.md
    from anima_nb.benchmarks import has_lm_eval
    if has_lm_eval():
        b = anima_run('--profile', 'demo', *FAST, '--set', 'max_new_tokens=8', '--set', 'eval_steps=3',
                      '--steps', 'benchmarks')
        assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
        assert len(list((run/'benchmarks'/'subjects').glob('*.json'))) == 4
        md = (run/'summary.md').read_text()
        assert 'benchmarks 5-shot, lm-evaluation-harness' in md and 'ceval' in md and 'cmmlu' in md
        assert 'controlled for answer length and position' in md
    # one line per invocation that ran, never overwritten: the command, the plan, the machine and every package
    hist = read_jsonl(run/'runs.jsonl')
    assert len(hist) == (5 if has_lm_eval() else 4) and all(h['status'] == 'complete' for h in hist)
    assert hist[0]['command'][0] == 'anima-run' and 'torch' in hist[0]['packages'] and hist[0]['runtime']['cpu']
    assert [p['action'] for p in hist[2]['plan']] == ['skip', 'skip', 'skip', 'run', 'skip']
    # every model read or written is identified: local ones by sha256, and --verify hashes them again
    merged_sha = next(m['sha256'] for m in read_manifest(run/'merge')['models'] if m['role'] == 'merged')
    assert next(m for m in read_manifest(run/'inference')['models'])['sha256'] == merged_sha
    assert {m['role'] for m in read_manifest(run/'train')['models']} == {'base', 'adapter'}
    v = anima_run('--verify', 'demo')
    assert v.returncode == 0 and 'same     merged model' in v.stdout, v.stdout + v.stderr
    (run/'merge'/'model'/'generation_config.json').write_text('{}')
    v = anima_run('--verify', 'demo')
    assert v.returncode == 1 and 'changed  merged model' in v.stdout, v.stdout + v.stderr

# --- killed anywhere -------------------------------------------------------------------------------------------------

KILL_WITHIN = {'data': 4.0, 'train': 10.0, 'merge': 6.0, 'inference': 6.0, 'elo': 3.0}   # seconds into the step, at most
KILLS = ['data', 'train', 'train', 'merge', 'inference', 'elo']                          # training twice: it costs most

def comparable(summary:dict) -> dict:
    "A run's summary without what differs between two runs of the same work: its name and times (paths are relative)."
    s = json.loads(json.dumps(summary))
    s.pop('run'); s.pop('folder'); s['train'].pop('seconds')
    return s

def running(outputs, run, step) -> bool:
    try: return read_json(outputs/run/'manifest.json')['steps'][step]['status'] == 'running'
    except (OSError, ValueError, KeyError): return False

def leftovers(folder) -> list:
    return sorted(str(p) for pat in LEFTOVERS + ('.lock',) for p in Path(folder).rglob(pat))

@pytest.mark.slow
def test_kill_anywhere_then_rerun(chain):
    "One run SIGKILLed at a seeded moment of every step in turn (training twice), each time rerun with the same command; it completes with the uninterrupted chain's summary."
    assert chain['summary'], 'the uninterrupted chain failed'
    outputs = chain['out']
    env = {**os.environ, 'ANIMA_NB_OUTPUTS': str(outputs)}
    cmd = command('--profile', 'demo', '--run-name', 'killed', *FAST)
    rng, killed = random.Random(42), []
    for step in KILLS:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        t0 = time.time()
        while not running(outputs, 'killed', step):
            assert p.poll() is None, f'the run ended before {step} started'
            assert time.time() - t0 < 300
            time.sleep(0.05)
        time.sleep(rng.uniform(0, KILL_WITHIN[step]))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL); p.wait(); killed.append(step)
    final = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert comparable(read_json(outputs/'killed'/'summary.json')) == comparable(chain['summary'])
    assert leftovers(outputs/'killed') == [], leftovers(outputs/'killed')
    print(f'kill points: {len(KILLS)} tried, {len(killed)} killed mid-step ({", ".join(killed)}), all survived: the '
          f'final summary equals the uninterrupted run\'s, 0 files left behind')
    assert len(killed) >= len(KILLS) - 1                 # the seeded moments fall inside the steps

def test_preflight_reports_every_problem_before_anything_runs(outputs, tmp_path, monkeypatch):
    "Bad values of three steps and a missing key: one refusal naming them all, exit 2, nothing written."
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    r = anima_run('--set', 'max_steps=0', '--set', 'gradient_accumulation_steps=0', '--set', 'merge_dtype=int4',
                  '--set', 'judge=openai', '--set', f'answers={tmp_path}', '--set', 'source_max_len=0')
    assert r.returncode == 2, r.stderr
    for text in ('02_train: max_steps=0 must be greater than 0', '02_train: gradient_accumulation_steps=0',
                 '01_data: source_max_len=0', "03_merge: merge_dtype 'int4' is not one of",
                 'OPENAI_API_KEY is not set'):
        assert text in r.stderr, text
    assert sorted(os.listdir(outputs)) == ['.cache']

def test_run_name_rule_holds_for_plan(outputs):
    r = anima_run('--plan', '--run-name', 'demo\n')
    assert r.returncode == 2 and 'Invalid run or step name' in r.stderr, r.stderr

def test_read_only_outputs_give_a_clear_error(tmp_path, monkeypatch):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    if os.geteuid() == 0: ro = Path('/sys/anima_nb_outputs')             # root writes into read-only folders; not here
    monkeypatch.setenv('ANIMA_NB_OUTPUTS', str(ro))
    r = anima_run('--steps', 'data')
    assert r.returncode == 2 and 'cannot write where the run goes' in r.stderr, r.stderr

def test_preflight_checks_free_disk_for_the_merge(outputs, monkeypatch):
    "A disk too small for the merged model is found before training starts."
    import shutil
    from anima_nb.models import resolve_model, DEMO_MODEL
    resolve_model(DEMO_MODEL)                                           # its size is known once it is on this machine
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ValueError, match='03_merge: Not enough disk space for the merged model'):
        prepare(gather_params(TYPES))

def test_os_errors_are_one_line_exit_2(outputs, monkeypatch, capsys):
    "A read-only file system or a full disk under the run: one line naming the file, exit status 2, no traceback."
    import errno
    from anima_nb import pipeline as P
    for code, text in ((errno.EROFS, 'Read-only file system'), (errno.ENOSPC, 'No space left on device')):
        def fail(*a, **k): raise OSError(code, text, str(outputs/'demo'/'manifest.json'))
        monkeypatch.setattr(P, 'run_pipeline', fail)
        assert P.main(['--profile', 'demo', '--steps', 'data']) == 2
        err = capsys.readouterr().err.strip()
        assert err.count('\n') == 0 and text in err and 'manifest.json' in err and 'Traceback' not in err
