"""The benchmarks stay runnable: each one at a tiny scale, as a subprocess, the way its docstring says to run it (the attention
and 33B-step benchmarks inside the device check's CPU smoke run, which keeps their records)."""
import json, subprocess, sys
import pytest
from conftest import ROOT

def test_every_bench_imports(monkeypatch):
    "Every benchmark module imports against the current package (its names still exist); what they set is undone."
    import importlib.util, os
    saved = dict(os.environ)
    for path in sorted((ROOT/'tests'/'bench').glob('*.py')):
        spec = importlib.util.spec_from_file_location(f'bench_{path.stem}', path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    os.environ.clear(); os.environ.update(saved)          # a benchmark's outputs folder must not leak into later tests

@pytest.mark.slow
def test_gpu_shape_check_smoke(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT/'tests'/'bench'/'gpu_shape_check.py'), '2', '2', '--smoke'], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**__import__('os').environ, 'OUT': str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p.name for p in tmp_path.glob('*.json')} == {'gpu_shape_check_fp32.json', 'gpu_shape_check_bf16.json'}

@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    "The one prepared device command, at tiny scale on the CPU: every check passes (TF32 n/a) and the table is written."
    r = subprocess.run([sys.executable, str(ROOT/'tests'/'bench'/'gpu_check.py'), '--cpu-smoke'], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env={**__import__('os').environ, 'OUT': str(tmp_path)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path/'gpu_check.json').read_text())
    assert [c['check'] for c in res['checks']] == ['environment', 'demo_chain', 'tf32', 'flattened_logits',
                                                  'flattened_training', 'attention', 'fsdp_world_1', 'dpo', 'benchmark'] and all(c['ok'] for c in res['checks'])
    assert res['cpu_smoke'] and res['checks'][-1]['details']['length_order'] == 'grouped'
    assert '| demo_chain | ok |' in (tmp_path/'gpu_check.md').read_text()
    # its attention benchmark at one head on a median step: every way agrees with per-example attention, and the
    # dense mask costs the most
    att = json.loads((tmp_path/'gpu_check_attention_float32.json').read_text())
    assert att['work_ratio_dense_to_examples'] > 10 and len(att['lengths']) == 16
    runs = {x['impl']: x for x in att['runs']}
    assert set(runs) == {'dense', 'flex', 'per-example', 'padded'}
    assert all(x['max_abs_diff_vs_per_example'] < 1e-4 for x in runs.values()), runs
    assert runs['per-example']['seconds'] < runs['dense']['seconds']
    # its 33B step benchmark at a reduced shape: upstream's micro-batch 1 x 16 and ours 16 x 1 on the same examples
    step = json.loads((tmp_path/'gpu_check_anima33b_step.json').read_text())
    assert [x['config'] for x in step['runs']] == ['upstream', 'faithful-fast', 'bf16-fast'] and not step['full_shape']
    up, fast = step['runs'][0], step['runs'][1]
    assert (up['micro_batch'], up['accumulation'], fast['micro_batch'], fast['accumulation']) == (1, 16, 16, 1)
    assert up['speedup_vs_upstream'] == 1.0 and all(x['seconds_per_step'] > 0 for x in step['runs'])
    assert abs(up['loss_first_step'] - fast['loss_first_step']) < 1e-3     # the same objective on the same examples
    for run in step['runs']:
        assert {'tokens_per_step_mean', 'tokens_per_step_max', 'seconds_per_step', 'peak_gb', 'hours_10k'} <= set(run)
        assert run['tokens_per_step_max'] >= run['tokens_per_step_mean'] > 0
    assert step['tokens_per_step'][0] == max(step['tokens_per_step']) == up['tokens_per_step_max']   # the longest first

@pytest.mark.slow
def test_fsdp_loading_bench_tiny(tmp_path):
    "Two FSDP ranks on a small base: rank 1 receives half the weight bytes and loading adds less to it than to one process."
    out = tmp_path/'loading.json'
    r = subprocess.run([sys.executable, str(ROOT/'tests'/'bench'/'bench_fsdp_loading.py'), '--layers', '4', '--hidden', '512',
                        '--ffn', '1408', '--work', str(tmp_path/'work'), '--out', str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    one, two = res['runs']
    assert two['weight_bytes'][0] == one['weight_bytes'][0] and abs(two['weight_bytes'][1] / one['weight_bytes'][0] - 0.5) < 0.01
    assert res['loading_rank1_vs_one_process'] < 0.8, res
