"Training step: collator, pad policy, dry run, papermill demo run, kill and resume, two processes, refusals."
import os, sys, json, time, signal, shutil, subprocess
from pathlib import Path
import pytest
import papermill as pm
from conftest import ROOT, train_here
from anima_nb.core import load_profile, step_schema, step_params, notebook_schema, read_json, read_jsonl, read_manifest, run_dir, write_json
from anima_nb.data import alpaca_prompt
from anima_nb import train as T, models

# Short sequences and few steps keep every run here to seconds on two CPU cores.
TINY = dict(max_steps=6, source_max_len=48, target_max_len=32, per_device_train_batch_size=2, eval_steps=3,
            save_steps=2, eval_dataset_size=8, sample_max_new_tokens=4)

def demo_params(**kw) -> dict:
    return step_params('train', **{**TINY, **kw})

def cli_args(**kw) -> list:
    return [a for k, v in {**TINY, **kw}.items() for a in (f'--{k}', str(v))]

def env() -> dict:
    return {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
            'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}

def adapter_tensors(d):
    from safetensors.torch import load_file
    return load_file(str(Path(d)/'adapter_model.safetensors'))

@pytest.fixture(scope='module')
def tok():
    return models.load_tokenizer('local:tiny-llama')

# ---- schema ----------------------------------------------------------------------------------------------------------
def test_schema_is_the_notebook():
    "The command line takes exactly the names, types and defaults of the parameters cell."
    nb = pm.inspect_notebook(str(ROOT/'nbs'/'02_train.ipynb'))
    schema = step_schema('train')
    assert list(schema) == [k for k in nb if k != 'restart'] and all(d['help'] for d in schema.values())
    assert nb['restart']['default'] == 'False'                        # papermill's `-p restart True`: an action, not recorded
    assert (schema['seed']['default'], schema['max_steps']['type'], schema['architecture']['type']) == (42, int, dict)
    defaults = T.cli_params([])
    prof = load_profile('demo')
    for k, d in schema.items():
        assert defaults[k] == prof.get(k, d['default']) if k != 'run_name' else defaults[k] == 'demo', k

def test_declaration_papermill_cannot_read_is_refused(tmp_path):
    "papermill skips a parameters line with a second '=' (even in its comment): the schema refuses to lose it."
    import nbformat
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("profile: str = 'demo'  # profile\nlora_alpha: int = None  # scale = alpha / r")
    cell.metadata['tags'] = ['parameters']
    nb.cells = [cell]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, tmp_path/'x.ipynb')
    with pytest.raises(ValueError, match=r"papermill cannot read the declaration of \['lora_alpha'\]"):
        notebook_schema(tmp_path/'x.ipynb')

def test_profiles_hold_the_recipe():
    a = load_profile('anima33b')
    assert (a['lora_r'], a['lora_alpha'], a['lora_dropout'], a['bits'], a['quant_type'], a['double_quant']) == (64, 16, 0.0, 4, 'nf4', True)
    assert (a['learning_rate'], a['lr_scheduler_type'], a['max_grad_norm'], a['optim']) == (1e-4, 'constant', 0.3, 'paged_adamw_32bit')
    assert (a['per_device_train_batch_size'], a['gradient_accumulation_steps'], a['max_steps']) == (1, 16, 10000)
    assert (a['source_max_len'], a['target_max_len'], a['eval_steps'], a['save_steps'], a['bf16']) == (512, 512, 200, 200, False)
    needed = [k for k, d in step_schema('train').items() if d['default'] is None and k != 'run_name']
    assert all(k in load_profile(p) for p in ('anima33b', 'demo') for k in needed)

def test_refuses_bad_parameters(outputs):
    with pytest.raises(TypeError, match='bogus'): T.train({**demo_params(), 'bogus': 1})
    with pytest.raises(TypeError, match='lora_r'): T.train({**demo_params(), 'lora_r': 'eight'})
    with pytest.raises(SystemExit): T.cli_params(['--lora_r', 'eight'])
    with pytest.raises(SystemExit): T.cli_params(['--bogus', '1'])
    with pytest.raises(SystemExit): T.cli_params(['--bf16', 'maybe'])
    assert T.cli_params(['--profile', 'anima33b', '--max_steps', '5'])['max_steps'] == 5

def test_anima_train_refuses_a_run_another_process_holds(outputs, capsys):
    """One writer per run: while another process (here, one like anima-run) holds the run, anima-train says so in one
    line, exits 2, and writes nothing; once it lets go, the same command trains."""
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time\nfrom anima_nb.core import RunLock, run_dir\n'
                               "with RunLock(run_dir('held')): print('held', flush=True); time.sleep(60)"],
                              env={**env(), 'ANIMA_NB_OUTPUTS': str(outputs)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(SystemExit) as e: train_here('--run_name', 'held', *cli_args(max_steps=2))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count('\n') == 1 and f'in use by process {holder.pid}' in err, err
        assert sorted(p.name for p in (outputs/'held').iterdir()) == ['.lock']
    finally:
        holder.kill(); holder.wait()
    train_here('--run_name', 'held', *cli_args(max_steps=2))
    assert read_manifest(outputs/'held'/'train')['status'] == 'complete' and not (outputs/'held'/'.lock').exists()

# ---- collator --------------------------------------------------------------------------------------------------------
RESPONSE_TAIL = '\n\n### Response: '

def split_source(tok, src) -> tuple[list, list]:
    "Token ids of `src`'s head (before the last `\\n\\n### Response:`) and of its template tail, each tokenized here."
    c = src.rfind(RESPONSE_TAIL.rstrip())
    assert c > 0 and src[c:] == RESPONSE_TAIL
    head = tok(src[:c], add_special_tokens=False)['input_ids']
    full = tok(src, add_special_tokens=False)['input_ids']
    assert full[:len(head)] == head, 'the head tokenizes alike alone and in the whole prompt'
    tail = full[len(head):]
    alone = tok(RESPONSE_TAIL, add_special_tokens=False)['input_ids']
    assert tail in (alone, alone[1:]) and tok.decode(tail) == RESPONSE_TAIL   # alone: maybe a leading dummy-prefix piece
    return head, tail

# 15 and 16: the tail (14 tokens here) plus bos exactly fits / leaves one head token; 2 and 8: the tail alone does not fit.
@pytest.mark.parametrize('max_len', [2, 8, 15, 16, 24, 40, 64])
def test_long_prompt_keeps_response_line(tok, max_len):
    src = alpaca_prompt('请把下面的文章翻译成英文。' * 30, '春天来了，花开了。' * 40)
    head_ids, tail_ids = split_source(tok, src)
    n_tail = len(tail_ids)
    assert n_tail == 14 and len(head_ids) > 64
    ids, cut = T.encode_source(src, tok, max_len)
    assert cut and len(ids) == max_len and ids[0] == tok.bos_token_id
    keep = max_len - 1 - n_tail                    # head tokens kept: the budget left after bos and the whole tail
    if keep > 0:
        assert ids[1:1 + keep] == head_ids[:keep] and ids[1 + keep:] == tail_ids   # head, then the whole tail: no middle
        assert tok.decode(ids[1:]).endswith(RESPONSE_TAIL)
        assert src.startswith(tok.decode(head_ids[:keep]).strip())
    else:                                          # the tail alone does not fit: keep its last max_len - 1 tokens
        assert ids[1:] == tail_ids[n_tail - (max_len - 1):]
        assert RESPONSE_TAIL.endswith(tok.decode(ids[1:]))

def test_short_prompt_untouched(tok):
    src = alpaca_prompt('你好')
    ids, cut = T.encode_source(src, tok, 512)
    assert not cut and ids == [tok.bos_token_id] + tok(src, add_special_tokens=False)['input_ids']

def test_truncated_targets_are_counted(tok):
    pairs = [{'source': alpaca_prompt('写诗'), 'target': '春' * n} for n in (2, 200, 300)]
    ex, stats = T.encode_pairs(pairs, tok, {'source_max_len': 512, 'target_max_len': 16, 'train_on_source': False, 'source_truncation': 'middle'})
    assert stats == {'examples': 3, 'source_truncated': 0, 'target_truncated': 2}
    assert ex[0]['input_ids'][-1] == tok.eos_token_id and ex[1]['input_ids'][-1] != tok.eos_token_id

def test_collator_masks_source_and_padding(tok):
    a = T.encode_pair({'source': alpaca_prompt('写诗'), 'target': '春天'}, tok, 512, 16)
    b = T.encode_pair({'source': alpaca_prompt('写一首很长的诗'), 'target': '春天来了花开了'}, tok, 512, 16)
    batch = T.Collator(tok.pad_token_id)([a, b])
    n_src = len(T.encode_source(alpaca_prompt('写诗'), tok, 512)[0])
    lab, mask = batch['labels'], batch['attention_mask']
    assert (lab[0, :n_src] == -100).all() and lab[0, n_src:len(a['input_ids'])].tolist() == a['input_ids'][n_src:]
    assert (lab[mask == 0] == -100).all() and mask.sum(1).tolist() == [len(a['input_ids']), len(b['input_ids'])]
    on_src = T.encode_pair({'source': alpaca_prompt('写诗'), 'target': '春天'}, tok, 512, 16, train_on_source=True)
    assert on_src['labels'] == on_src['input_ids']

# ---- pad policy ------------------------------------------------------------------------------------------------------
def test_unk_pad_keeps_vocabulary(tok):
    assert tok.pad_token_id == tok.unk_token_id == 0 and len(tok) == 3000

def test_pad_token_added_adapter_is_lora_only(outputs):
    "Upstream's [PAD] policy grows the embedding for training; the adapter, as published, holds the LoRA weights only."
    P = demo_params(pad_token='[PAD]', max_steps=2, save_steps=100, eval_steps=100, run_name='pad')
    res = T.train(P)
    assert res['vocab_grown']
    ad = run_dir('pad', 'train')/'adapter'
    keys = adapter_tensors(ad)
    assert keys and all('lora_' in k for k in keys)
    assert (len(models.load_tokenizer(str(ad))), models.load_tokenizer(str(ad)).pad_token) == (3001, '[PAD]')
    model, tok = models.load_adapter_model(models.train_record('pad'))
    assert model.get_input_embeddings().weight.shape[0] == 3000 and tok.pad_token == '<unk>'

# ---- the objective: the same gradient whatever the split ---------------------------------------------------------------
SPLIT = dict(max_steps=1, eval_dataset_size=0, optim='sgd', learning_rate=1.0, max_grad_norm=0.0, warmup_ratio=0.0,
             save_steps=100, eval_steps=100, sample_max_new_tokens=1, group_by_length=False, source_max_len=96,
             target_max_len=96)

@pytest.fixture(scope='module')
def sixteen(tmp_path_factory):
    "16 sample instructions of very different lengths, as a dataset file."
    rows = json.loads((ROOT/'anima_nb'/'assets'/'sample_instructions.json').read_text())
    rows = sorted(rows, key=lambda r: len(r['output']))[::20][:16]
    f = tmp_path_factory.mktemp('split')/'sixteen.json'
    f.write_text(json.dumps(rows, ensure_ascii=False))
    return f

def one_step(weighting, batch, accum, flatten, dataset):
    "The LoRA B matrices after one SGD step (lr 1, no clipping) over the same 16 examples, split as given."
    run = f'{weighting}-{batch}x{accum}'
    T.train(demo_params(run_name=run, dataset=str(dataset), per_device_train_batch_size=batch,
                        gradient_accumulation_steps=accum, flatten=flatten, loss_weighting=weighting, **SPLIT))
    return {k: v for k, v in adapter_tensors(run_dir(run, 'train')/'adapter').items() if 'lora_B' in k}

def max_rel_diff(a, b):
    import torch
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in a)

def test_any_split_gives_the_same_step(outputs, sixteen):
    splits = [(1, 16, False), (4, 4, False), (16, 1, True)]
    ex = [one_step('example', *s, sixteen) for s in splits]
    tk = [one_step('token', *s, sixteen) for s in splits]
    tol = 1e-4                                  # fp32 sums in another order, and attention over a packed row
    assert all(max_rel_diff(e, ex[0]) < tol for e in ex[1:]), [max_rel_diff(e, ex[0]) for e in ex[1:]]
    assert all(max_rel_diff(t, tk[0]) < tol for t in tk[1:]), [max_rel_diff(t, tk[0]) for t in tk[1:]]
    assert max_rel_diff(tk[0], ex[0]) > 100 * tol                 # the lengths differ, so the objectives do

# ---- dry run ---------------------------------------------------------------------------------------------------------
def test_dry_run_anima33b(outputs):
    P = step_params('train', profile='anima33b', dry_run=True)
    est = T.train(P)
    assert read_json(run_dir('anima33b', 'train')/'estimate.json') == json.loads(json.dumps(est))
    assert est['params']['lora'] == 487_587_840 == T.lora_param_count(load_profile('anima33b')['architecture'], 64)
    assert 32.4e9 < est['params']['total'] < 32.6e9
    mem = est['memory_gb']
    assert 16.0 < mem['quantized_weights'] < 16.1 and 0.50 < mem['quantization_constants'] < 0.52
    assert abs(mem['optimizer_states'] - 2 * mem['lora_weights']) < 1e-2 and 25 < mem['total'] < 35
    assert est['compute']['tokens'] == 10000 * 16 * 1024 and est['compute']['compute_dtype'] == 'tf32'
    assert est['parameters']['seed'] == 42 and est['parameters']['loss_weighting'] == 'example'
    assert not (run_dir('anima33b', 'train')/'adapter').exists()

# ---- runs ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_papermill_demo_run(outputs, tmp_path):
    # papermill's Python API; the executed copy written once, at the end or on the failing cell (saving it at every cell
    # cost this process 10 s of CPU, and it is the notebook under test, not papermill's saving)
    pm.execute_notebook(str(ROOT/'nbs'/'02_train.ipynb'), str(tmp_path/'out.ipynb'), parameters={'max_steps': 20},
                        cwd=str(ROOT), kernel_name='python3', progress_bar=False, request_save_on_cell_execute=False)
    d = run_dir('demo', 'train')
    m = read_manifest(d)
    assert m['status'] == 'complete' and m['summary']['steps'] == 20
    for k in ('model_name_or_path', 'lora_r', 'lora_alpha', 'lora_dropout', 'lora_modules', 'bits', 'double_quant',
              'quant_type', 'bf16', 'source_max_len', 'target_max_len'):
        assert k in m['params'], k
    s = m['summary']
    assert s['base_model'] == 'local:tiny-llama' and s['base_model_path'].startswith('../.cache/') and (d.parent/s['base_model_path']).exists() and 'base_revision' in s
    assert s['target_truncated'] >= 0 and m['inputs'][0]['sha256']
    assert (d/'adapter'/'adapter_model.safetensors').exists() and (d/'adapter'/'adapter_config.json').exists()
    assert (d/'adapter'/'tokenizer_config.json').exists() and (d/'loss.png').exists() and (d/'estimate.json').exists()
    assert read_jsonl(d/'samples.jsonl')
    losses = [r['loss'] for r in read_jsonl(d/'metrics.jsonl') if 'loss' in r]
    assert len(losses) == 20 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    evals = [r['eval_loss'] for r in read_jsonl(d/'metrics.jsonl') if 'eval_loss' in r]
    assert evals[-1] < evals[0]
    ckpts = sorted(p.name for p in (d/'checkpoints').iterdir())
    assert len(ckpts) <= load_profile('demo')['save_total_limit'] and all((d/'checkpoints'/c/T.MARK).exists() for c in ckpts)
    # another learning rate is refused, naming papermill's switch; `-p restart True` starts again, and is not recorded
    run = lambda **p: pm.execute_notebook(str(ROOT/'nbs'/'02_train.ipynb'), str(tmp_path/'again.ipynb'), parameters=p,
                                          cwd=str(ROOT), kernel_name='python3', progress_bar=False, request_save_on_cell_execute=False)
    with pytest.raises(pm.PapermillExecutionError, match='restart'): run(max_steps=20, learning_rate=5e-4)
    assert read_manifest(d)['params']['learning_rate'] != 5e-4 and len(list((d/'checkpoints').iterdir())) == len(ckpts)
    run(max_steps=4, learning_rate=5e-4, restart=True)
    m = read_manifest(d)
    assert (m['params']['learning_rate'], m['summary']['steps'], 'restart' in m['params']) == (5e-4, 4, False)

@pytest.mark.slow
def test_rerun_never_loses_checkpoints(outputs, capsys):
    "A complete run is not redone; other hyper-parameters are refused while checkpoints exist; --force restarts."
    args = cli_args(max_steps=4, eval_steps=100)
    train_here(*args, '--run_name', 'keep')
    d = run_dir('keep', 'train')
    before = {p.name: p.stat().st_mtime_ns for p in (d/'checkpoints').iterdir()}
    first = read_manifest(d)
    train_here(*args, '--run_name', 'keep')
    assert read_manifest(d)['started'] == first['started'] and {p.name: p.stat().st_mtime_ns for p in (d/'checkpoints').iterdir()} == before
    r = subprocess.run([sys.executable, '-m', 'anima_nb.train', *args, '--run_name', 'keep', '--learning_rate', '5e-4'],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert r.returncode != 0 and f"learning_rate: {load_profile('demo')['learning_rate']} -> 0.0005" in r.stderr and '--force' in r.stderr
    assert sorted(p.name for p in (d/'checkpoints').iterdir()) == sorted(before)
    capsys.readouterr()
    train_here(*args, '--run_name', 'keep', '--learning_rate', '5e-4', '--force')
    assert 'deleting checkpoint-2, checkpoint-4, metrics.jsonl' in capsys.readouterr().err
    assert read_manifest(d)['params']['learning_rate'] == 5e-4 and read_manifest(d)['status'] == 'complete'

# Eight steps with dropout on (the RNG state must be restored too), uninterrupted: what a resumed or extended run must equal
WHOLE8 = cli_args(max_steps=8, eval_steps=100, lora_dropout=0.1)

@pytest.fixture(scope='module')
def whole8(tmp_path_factory):
    "The adapter of an uninterrupted 8-step run."
    from conftest import make_outputs
    out = make_outputs(tmp_path_factory.mktemp('whole8')/'outputs')
    train_here(*WHOLE8, '--run_name', 'whole8', outputs=out)
    return adapter_tensors(out/'whole8'/'train'/'adapter')

@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(outputs, whole8):
    "SIGKILL after the step-4 checkpoint, resume: the final adapter equals an uninterrupted run's (tolerance 1e-6; on CPU it is bit-identical)."
    args = WHOLE8
    ck = run_dir('cut', 'train')/'checkpoints'
    p = subprocess.Popen([sys.executable, '-m', 'anima_nb.train', *args, '--run_name', 'cut'], cwd=ROOT, env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (ck/'checkpoint-4'/T.MARK).exists():
        assert p.poll() is None, 'the run ended before it could be killed'
        assert time.time() - t0 < 180
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert read_manifest(ck.parent)['status'] == 'running'
    (ck/'checkpoint-99').mkdir()                              # a torn checkpoint: no COMPLETE mark, must be ignored
    train_here(*args, '--run_name', 'cut')                   # the plain command again: it resumes
    m = read_manifest(ck.parent)
    assert m['status'] == 'complete' and m['summary']['steps'] == 8 and m['summary']['resumed_from'] is not None
    assert not (ck/'checkpoint-99').exists()
    a, b = whole8, adapter_tensors(ck.parent/'adapter')
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    steps = [r['step'] for r in read_jsonl(ck.parent/'metrics.jsonl') if 'loss' in r]
    assert steps == list(range(1, 9))

def _spin(stop):
    while not stop.is_set(): sum(range(10_000))

@pytest.mark.slow
def test_two_runs_agree_exactly_busy_or_not(outputs):
    "The thread policy decides the threads, not the machine's load: a run beside a busy core equals one on an idle machine."
    import multiprocessing as mp
    from anima_nb.core import THREADS_ENV
    e = {k: v for k, v in env().items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', THREADS_ENV)}
    args = cli_args(max_steps=4, eval_steps=2, save_steps=100)
    def run(name, **extra):
        r = subprocess.run([sys.executable, '-m', 'anima_nb.train', *args, '--run_name', name], cwd=ROOT,
                           env={**e, **extra}, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        return read_manifest(run_dir(name, 'train'))
    idle = run('idle')
    stop = mp.Event(); hog = mp.Process(target=_spin, args=(stop,), daemon=True); hog.start()
    try: busy = run('busy')
    finally: stop.set(); hog.join(5)
    assert idle['runtime']['threads'] == busy['runtime']['threads'] == 1 and 'one thread' in idle['runtime']['threads_why']
    a, b = (adapter_tensors(run_dir(n, 'train')/'adapter') for n in ('idle', 'busy'))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)           # bit for bit
    def losses(n): return [(r['step'], r.get('loss'), r.get('eval_loss')) for r in read_jsonl(run_dir(n, 'train')/'metrics.jsonl')]
    assert losses('idle') == losses('busy')
    assert run('two', **{THREADS_ENV: '2'})['runtime']['threads'] == min(2, len(os.sched_getaffinity(0)))

@pytest.mark.slow
def test_two_processes(outputs):
    "Data-parallel on two CPU processes (accelerate's `--cpu` launches one process; `--multi_gpu` starts the two)."
    r = subprocess.run([str(ROOT/'.venv'/'bin'/'accelerate') if (ROOT/'.venv'/'bin'/'accelerate').exists() else 'accelerate',
                        'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
                        '--dynamo_backend', 'no', '-m', 'anima_nb.train', *cli_args(max_steps=3, eval_steps=2), '--run_name', 'ddp'],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_manifest(run_dir('ddp', 'train'))
    assert m['status'] == 'complete' and m['summary']['processes'] == 2 and m['summary']['steps'] == 3
    assert (run_dir('ddp', 'train')/'adapter'/'adapter_model.safetensors').exists()

def test_non_finite_loss_names_the_step(outputs):
    P = demo_params(learning_rate=1e8, max_grad_norm=1e9, eval_steps=100, save_steps=100, run_name='nan')
    with pytest.raises(FloatingPointError, match=r'Non-finite training loss .* at step \d+'): T.train(P)
    assert read_manifest(run_dir('nan', 'train'))['status'] == 'failed'


def test_demo_base_never_saw_a_held_out_row():
    "The demo base is pre-trained on the sample rows that the demo's training split keeps, and on no held-out row."
    from anima_nb.models import demo_pretraining_texts, DEMO_EVAL_ROWS
    from anima_nb.data import pairs_dataset
    p = step_params('train', profile='demo')
    assert p['eval_dataset_size'] == DEMO_EVAL_ROWS
    train_pairs, eval_pairs = T.split_dataset(pairs_dataset(p['dataset'], p['dataset_format']), p['eval_dataset_size'])
    corpus = '\n'.join(demo_pretraining_texts())
    assert len(eval_pairs) == DEMO_EVAL_ROWS and not any(t in corpus for t in eval_pairs['target'])
    assert all(t in corpus for t in train_pairs['target'])
    assert not set(eval_pairs['target']) & set(train_pairs['target'])


# ---- attention --------------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_flash(tmp_path, monkeypatch):
    "An importable `flash_attn` (no kernels): what `attention_implementation` looks for."
    (tmp_path/'flash_attn').mkdir(); (tmp_path/'flash_attn'/'__init__.py').write_text('__version__ = "2.8.0"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib; importlib.invalidate_caches()
    return tmp_path

def test_dry_run_records_a_kernel_that_cannot_crash(outputs, fake_flash):
    "anima33b_fast computes in fp32: flash-attn (installed) would refuse its q/k/v, so the dry run records flex_attention; bf16 gets flash."
    fast = step_params('train', profile='anima33b_fast')
    assert fast['flatten'] and not fast['bf16']
    assert T.estimate(fast)['attn_implementation'] == 'flex_attention'
    assert T.estimate({**fast, 'flatten': False})['attn_implementation'] == 'sdpa'
    assert T.estimate({**fast, 'bf16': True})['attn_implementation'] == 'flash_attention_2'
    assert T.estimate({**fast, 'bf16': True})['attn_implementation_here'] == ('flash_attention_2' if __import__('torch').cuda.is_available() else 'sdpa')

def test_merge_and_inference_do_not_inherit_the_training_kernel(outputs, fake_flash):
    "A base loaded for merging or answering gets transformers' default kernel, whatever training's `flatten` and `bf16`."
    p = {**demo_params(), 'flatten': True, 'bf16': True}
    assert models.load_base_model(models.DEMO_MODEL, p).config._attn_implementation == 'sdpa'

@pytest.mark.parametrize('impl', ['sdpa', 'eager', pytest.param('flex_attention', marks=pytest.mark.slow)])
def test_flattened_logits_equal_per_example(impl):
    "Three examples flattened into one row (position ids restart at 0) give each example's own logits, per kernel (flex: forward only, as on a CPU)."
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(models.resolve_model(models.DEMO_MODEL), attn_implementation=impl).eval()
    g = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, 2000, (n,), generator=g) for n in (5, 17, 9)]
    with torch.no_grad():
        alone = [model(input_ids=e[None]).logits[0] for e in examples]
        row = torch.cat(examples)[None]
        pos = torch.cat([torch.arange(len(e)) for e in examples])[None]
        flat = model(input_ids=row, position_ids=pos).logits[0]
    assert torch.allclose(torch.cat(alone), flat, atol=1e-5), (torch.cat(alone) - flat).abs().max()

@pytest.mark.slow
def test_extend_a_finished_run(outputs, whole8, capsys):
    "Train 4 steps, then ask for 8: it resumes from checkpoint-4, deletes nothing, and equals 8 steps from the start (constant LR)."
    train_here(*cli_args(max_steps=4, eval_steps=100, lora_dropout=0.1), '--run_name', 'ext')
    d = run_dir('ext', 'train')
    capsys.readouterr()
    train_here(*WHOLE8, '--run_name', 'ext')
    err = capsys.readouterr().err
    assert 'extend max_steps 4 -> 8: resume from checkpoint-4' in err and 'deleting' not in err
    m = read_manifest(d)
    assert m['status'] == 'complete' and m['summary']['steps'] == 8 and m['summary']['resumed_from'] == 'checkpoint-4'
    assert 'checkpoint-8' in {p.name for p in (d/'checkpoints').iterdir()}       # older ones go by save_total_limit only
    a, b = whole8, adapter_tensors(d/'adapter')
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert [x['step'] for x in read_jsonl(d/'metrics.jsonl') if 'loss' in x] == list(range(1, 9))
    assert T.resume_plan(demo_params(max_steps=8, eval_steps=100, lora_dropout=0.1, run_name='ext'))['action'] == 'complete'

@pytest.mark.slow
def test_resume_at_the_last_checkpoint_trains_no_more(outputs):
    "Killed after its final checkpoint, before its manifest said complete: the rerun trains 0 steps and keeps the weights."
    args = cli_args(max_steps=4, eval_steps=100)
    train_here(*args, '--run_name', 'fin')
    d = run_dir('fin', 'train')
    whole = adapter_tensors(d/'adapter')
    m = read_manifest(d); m['status'] = 'running'; write_json(d/'manifest.json', m)     # as a kill would leave it
    train_here(*args, '--run_name', 'fin')
    m = read_manifest(d)
    assert m['status'] == 'complete' and m['summary']['steps'] == 4 and m['summary']['resumed_from'] == 'checkpoint-4'
    assert sorted(p.name for p in (d/'checkpoints').iterdir())[-1] == 'checkpoint-4'
    again = adapter_tensors(d/'adapter')
    assert max((whole[k] - again[k]).abs().max().item() for k in whole) == 0
