"The benchmarks step: lm-evaluation-harness on C-Eval and CMMLU, scored right, resumable, offline on the shipped questions."
import json, os
from pathlib import Path
import pytest
from conftest import ROOT
from anima_nb.core import step_params, read_json, read_jsonl, run_dir, read_manifest
from anima_nb import benchmarks as B

pytestmark = pytest.mark.skipif(not B.has_lm_eval(), reason=B.LM_EVAL_HINT)

def demo(**kw) -> dict: return step_params('benchmarks', **kw)

@pytest.fixture(scope='module')
def tm(): return B.task_manager()

def oracle(bench='ceval'):
    key = B.answer_key(bench)
    return B.ScriptedLM(lambda ctx: key[B.question_of(ctx)])

def test_always_right_scores_one_and_constant_a_quarter(outputs, tm, tmp_path):
    key = {**B.answer_key('ceval'), **B.answer_key('cmmlu')}
    right = B.ScriptedLM(lambda ctx: key[B.question_of(ctx)])
    s = B.run_benchmarks(demo(run_name='const-C', bench_model=str(tmp_path)), lm=B.ScriptedLM(lambda ctx: 'C'))
    assert {b: o['acc'] for b, o in s['overall'].items()} == {'ceval': 0.25, 'cmmlu': 0.25}
    s = B.run_benchmarks(demo(run_name='oracle', bench_model=str(tmp_path)), lm=right)
    assert {b: (o['acc'], o['questions'], o['subjects']) for b, o in s['overall'].items()} == {'ceval': (1.0, 16, 2), 'cmmlu': (1.0, 16, 2)}
    assert s['overall']['ceval']['acc_stderr'] == 0.0 and not s['comparable']
    rows = read_jsonl(outputs/'oracle'/'benchmarks'/'samples'/'cmmlu_elementary_mathematics.jsonl')
    assert len(rows) == 8 and all(r['chosen'] == r['target'] and len(r['loglikelihoods']) == 4 for r in rows)

def test_prompt_is_lm_evals_own(tm):
    "Local data change where the rows come from, nothing else of lm-eval's task."
    for bench, subject in (('ceval', 'middle_school_mathematics'), ('cmmlu', 'elementary_commonsense')):
        hub, local = B.task_config(tm, bench, subject, 'hub'), B.task_config(tm, bench, subject, 'local')
        assert {k: v for k, v in hub.items() if not k.startswith('dataset')} == {k: v for k, v in local.items() if not k.startswith('dataset')}
        assert hub['dataset_path'] == B.BENCHMARKS[bench]['hub'] and hub['dataset_name'] == subject
        assert local['dataset_path'] == 'json'

def test_shipped_questions_are_in_the_benchmarks_formats():
    for f in sorted((B.LOCAL_BENCH/'ceval').glob('*.jsonl')):
        for r in read_jsonl(f): assert set(r) == {'id', 'question', 'A', 'B', 'C', 'D', 'answer', 'explanation'} and r['answer'] in 'ABCD'
    for f in sorted((B.LOCAL_BENCH/'cmmlu').glob('*.jsonl')):
        for r in read_jsonl(f): assert set(r) == {'Question', 'A', 'B', 'C', 'D', 'Answer'} and r['Answer'] in 'ABCD'
    for bench, scored in (('ceval', 'val'), ('cmmlu', 'test')):
        for s in B.local_subjects(bench):
            answers = [r.get('answer') or r.get('Answer') for r in read_jsonl(B.LOCAL_BENCH/bench/f'{s}_{scored}.jsonl')]
            assert sorted(answers) == sorted('AABBCCDD')          # a constant answer scores exactly 0.25
            assert len(read_jsonl(B.LOCAL_BENCH/bench/f'{s}_dev.jsonl')) == 5

def test_resume_reruns_only_what_changed(outputs, tm, tmp_path):
    "A finished subject is read back; a changed shot count or a new model runs it again; a deleted result is redone."
    p = demo(run_name='resume', bench_model=str(tmp_path), bench_tasks='ceval')
    calls = []
    key = B.answer_key('ceval')
    lm = B.ScriptedLM(lambda ctx: calls.append(1) or key[B.question_of(ctx)])
    B.run_benchmarks(p, lm=lm); first = len(calls)
    assert first == 2 * 8 * 4                                     # two subjects, eight questions, four letters
    B.run_benchmarks(p, lm=lm); assert len(calls) == first
    (outputs/'resume'/'benchmarks'/'subjects'/'ceval-valid_middle_school_mathematics.json').unlink()
    B.run_benchmarks(p, lm=lm); assert len(calls) == first + 32
    B.run_benchmarks({**p, 'bench_num_fewshot': 2}, lm=lm); assert len(calls) == first + 32 + 64
    (tmp_path/'config.json').write_text('{"hidden_size": 8}')       # another model in the same folder
    B.run_benchmarks({**p, 'bench_num_fewshot': 2}, lm=lm); assert len(calls) == first + 32 + 128

def test_bad_values_are_refused_before_anything_loads(outputs):
    with pytest.raises(ValueError, match="unknown benchmark 'mmlu'"): B.run_benchmarks(demo(bench_tasks='ceval,mmlu'))
    with pytest.raises(ValueError, match='no subject'): B.run_benchmarks(demo(bench_subjects='astrology'))
    with pytest.raises(ValueError, match='5 worked examples'): B.run_benchmarks(demo(bench_num_fewshot=6))
    with pytest.raises(ValueError, match='No complete merge'): B.run_benchmarks(demo(run_name='never-ran'))

def test_dry_run_counts_requests_of_the_published_sizes(outputs):
    est = B.run_benchmarks(step_params('benchmarks', profile='anima33b', dry_run=True))
    assert est['per_benchmark']['ceval']['requests'] == 4 * 1346 and est['per_benchmark']['cmmlu']['requests'] == 4 * 11528
    assert 32e9 < est['parameters'] < 33e9 and est['hours'] > 0
    one = B.run_benchmarks(step_params('benchmarks', profile='anima33b', dry_run=True, bench_subjects='computer_network'))
    assert one['per_benchmark']['ceval']['questions'] == round(1346 / 52) and one['per_benchmark']['cmmlu']['questions'] == 0

@pytest.mark.slow
def test_demo_model_through_lm_eval(outputs):
    "The real code path: lm-eval's HFLM on a merged demo model, offline, every subject scored and its prompt measured."
    from anima_nb.merge import demo_adapter, merge
    from anima_nb.core import load_profile
    demo_adapter('bm')
    merge({**load_profile('demo'), 'run_name': 'bm', 'merge_mode': 'nf4-roundtrip', 'compare_modes': False})
    s = B.run_benchmarks(demo(run_name='bm', bench_subjects='middle_school_geography,elementary_mathematics'))
    assert {b: o['questions'] for b, o in s['overall'].items()} == {'ceval': 8, 'cmmlu': 8}
    assert s['mean_prompt_tokens'] > 50 and s['lm_eval'] == '0.4.13' and len(s['task_hashes']) == 2
    m = read_manifest(run_dir('bm', 'benchmarks', create=False))
    assert m['status'] == 'complete' and m['versions']['lm_eval'] == '0.4.13' and m['summary']['model']['source'] == 'merged'
    assert (outputs/'bm'/'benchmarks'/'benchmarks.png').exists()
    records = [outputs/'bm'/'benchmarks'/'results.json', *(outputs/'bm'/'benchmarks'/'subjects').glob('*.json')]
    assert not [p.name for p in records if str(outputs) in p.read_text()]        # the model named relative to the run
    assert read_json(records[0])['summary']['model']['path'] == 'merge/model'
    # the 4-bit base with the run's adapter, as training left it: its own identity, so every subject runs again
    a = B.run_benchmarks(demo(run_name='bm', bench_model='adapter', bench_subjects='elementary_mathematics'))
    assert a['model']['source'] == 'adapter' and a['overall']['cmmlu']['questions'] == 8 and 'ceval' not in a['overall']
