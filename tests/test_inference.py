"Inference step: the published prompt, checked question files, batched == one-at-a-time, answers.jsonl, papermill."
import os, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, reference, make_outputs
from anima_nb.core import step_params, read_jsonl, read_manifest, run_dir, write_json, sha256_file, read_json
from anima_nb import merge as M, inference as I, models, data

RUN = 'inferencetest'
FIELDS = {'question_id': int, 'category': str, 'model': str, 'prompt': str, 'answer': str, 'settings': dict,
          'prompt_tokens': int, 'answer_tokens': int, 'stop': str, 'seconds': float, 'batch_size': int}

@pytest.fixture(scope='module')
def outdir(tmp_path_factory):
    "One outputs folder for the module: a demo training run and its nf4-roundtrip merge."
    out = make_outputs(tmp_path_factory.mktemp('outputs'))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('ANIMA_NB_OUTPUTS', str(out))
        mp.setattr(M, 'FIDELITY_QUESTIONS', 1)
        models.demo_adapter(RUN, std=0.2)
        M.merge(step_params('merge', run_name=RUN, merge_mode='nf4-roundtrip', compare_modes=False))
        yield out

def params(**kw):
    return step_params('inference', **{'run_name': RUN, **kw})

def test_prompt_is_the_published_one():
    assert I.eval_prompt('如何提高我的时间管理技能？') == (
        'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n'
        '### Instruction:\n如何提高我的时间管理技能？请回答尽量详细和完善，详细的阐释回答的原因，并给出尽量完整的相关的背景信息。'
        '请使用中文回答问题。\n\n### Response: ')
    assert I.extract_answer(I.eval_prompt('问') + ' 答：### Response: 不') == ' 答：### Response: 不'

def test_question_file_sha256(outputs, monkeypatch):
    ref = reference('anima', 'translated_vicuna_eval_set.json')
    name = 'translated_vicuna_eval_set.json'
    assert sha256_file(ref) == data.ANIMA_FILES[name][1]
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(data, 'outputs_dir', lambda: outputs/'private')   # a cache of its own, not the shared .cache
    with pytest.raises(FileNotFoundError, match='downloads are off'): data.load_questions('anima:' + name)
    cached = outputs/'private'/'.cache'/'anima'/name; cached.parent.mkdir(parents=True)
    shutil.copy(ref, cached)
    qs = data.load_questions('anima:' + name)
    assert len(qs) == 80 and len({q['question_id'] for q in qs}) == 80 and {'question', 'category'} <= set(qs[0])
    cached.write_bytes(cached.read_bytes().replace('时间管理'.encode(), '时间安排'.encode()))
    with pytest.raises(ValueError, match='does not match'): data.load_questions('anima:' + name)
    assert len(data.load_questions(str(ref))) == 80                             # a local path is read as it is

@pytest.mark.parametrize('source', ['merged', 'adapter'])
def test_batched_greedy_equals_one_at_a_time(outdir, source):
    model, tok = I.load_model(RUN, source)
    qs = data.load_questions('pkg:sample_questions.json')[:8]
    prompts = [I.eval_prompt(q['question']) for q in qs]
    s = I.gen_settings(params(max_new_tokens=10))
    batched = I.generate_batch(model, tok, prompts, s)
    assert len({r['prompt_tokens'] for r in batched}) > 3                  # real left padding
    assert batched == [I.generate_batch(model, tok, [p], s)[0] for p in prompts]

def test_answers_jsonl(outdir, tmp_path, monkeypatch):
    qs = data.load_questions('pkg:sample_questions.json')[:6]
    write_json(tmp_path/'q.json', qs)
    rows = I.infer(params(questions=str(tmp_path/'q.json'), max_new_tokens=6, batch_size=4))
    d = run_dir(RUN, 'inference')
    saved = read_jsonl(d/'answers.jsonl')
    assert saved == rows and [r['question_id'] for r in saved] == [q['question_id'] for q in qs]
    for r in saved:
        assert set(r) == set(FIELDS) and all(isinstance(r[k], t) for k, t in FIELDS.items()), r
        assert r['prompt'] == I.eval_prompt(qs[[q['question_id'] for q in qs].index(r['question_id'])]['question'])
        assert r['settings'] == {'max_new_tokens': 6, 'do_sample': False, 'repetition_penalty': 1.3}   # the demo profile's
        assert 1 <= r['answer_tokens'] <= 6 and r['stop'] in ('eos', 'length')
    m = read_manifest(d)
    assert m['status'] == 'complete' and m['summary']['answers'] == 6 and m['inputs'][0]['sha256'] == sha256_file(tmp_path/'q.json')
    P = params(questions=str(tmp_path/'q.json'), max_new_tokens=6, batch_size=4)
    write_json(d/'manifest.json', {**m, 'status': 'running'})               # an interrupted run: resumed, nothing regenerated
    real, calls = I.generate_batch, []
    monkeypatch.setattr(I, 'generate_batch', lambda *a, **k: calls.append(1) or real(*a, **k))
    assert I.infer(P) == saved and calls == []
    I.infer(P)                                                              # a completed run: answered again
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'seconds'} for r in rows]
    assert len(calls) == 2 and strip(read_jsonl(d/'answers.jsonl')) == strip(saved)

def test_sampling_is_seeded(outdir):
    model, tok = I.load_model(RUN, 'merged')
    s = I.gen_settings(params(do_sample=True, temperature=1.0, max_new_tokens=8, seed=3))
    p = [I.eval_prompt('为什么天空是蓝色的？')]
    assert I.generate_batch(model, tok, p, s) == I.generate_batch(model, tok, p, s)

def test_missing_merge_is_explained(outputs):
    with pytest.raises(FileNotFoundError, match='run 03_merge first'): I.load_model('nothing-here', 'merged')
    with pytest.raises(FileNotFoundError, match='Run 02_train first'): I.load_model('nothing-here', 'adapter')

@pytest.mark.slow
def test_papermill_from_root(outdir):
    env = {**os.environ, 'ANIMA_NB_OUTPUTS': str(outdir), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
    env.pop('IN_TEST', None)
    r = subprocess.run([sys.executable, '-m', 'papermill', 'nbs/04_inference.ipynb', str(outdir/'out.ipynb'), '-p', 'run_name', RUN,
                        '-p', 'max_new_tokens', '8'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_jsonl(outdir/RUN/'inference'/'answers.jsonl')
    assert sorted(r['question_id'] for r in rows) == sorted(q['question_id'] for q in data.load_questions('pkg:sample_questions.json'))
