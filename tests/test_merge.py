"Merge step: settings read from the training run, refusal to merge into 4-bit, fidelity of both merge modes, papermill."
import os, subprocess, sys
from pathlib import Path
import pytest, torch
from conftest import ROOT, make_outputs
from anima_nb.core import read_manifest, read_json, run_dir, step_params
from anima_nb import merge as M, models

RUN = 'mergetest'

@pytest.fixture(scope='module')
def outdir(tmp_path_factory):
    "One outputs folder for the module, holding a demo training run (adapter with non-zero LoRA B)."
    out = make_outputs(tmp_path_factory.mktemp('outputs'))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('ANIMA_NB_OUTPUTS', str(out))
        mp.setattr(M, 'FIDELITY_QUESTIONS', 2)          # fewer probe prompts in-process; papermill runs the full check
        models.demo_adapter(RUN)
        yield out

def tight(c:dict) -> bool:
    "A float32 merge agrees to float32 rounding: 4e-6 of the logits' scale (a trained base's logits reach ~15)."
    return c["max_abs_diff"] <= 4e-6 * max(1.0, c["logit_scale"])

def params(**kw): return step_params('merge', **{'run_name': RUN, 'merge_mode': 'nf4-roundtrip', **kw})

def test_settings_come_from_training_run(outdir):
    rec = models.train_record(RUN)
    test = read_json(Path(rec['adapter_dir'])/'adapter_config.json')
    assert (test['r'], test['lora_alpha']) == (rec['params']['lora_r'], rec['params']['lora_alpha'])
    assert models.base_of(rec) == ('local:tiny-llama', None)
    with pytest.raises(FileNotFoundError, match='Run 02_train first'): models.train_record('no-such-run')

def test_adapter_must_match_its_manifest(outdir):
    from anima_nb.core import write_json
    f = run_dir(RUN, 'train')/'adapter'/'adapter_config.json'
    good = read_json(f)
    try:
        write_json(f, {**good, 'r': good['r'] * 2})
        with pytest.raises(ValueError, match='is not the one the manifest describes'): models.train_record(RUN)
    finally: write_json(f, good)

def test_merge_into_4bit_is_refused(outdir):
    model, _ = models.load_adapter_model(models.train_record(RUN))
    assert M.is_quantized(model)
    with pytest.raises(ValueError, match='Merging LoRA into a quantized'): M.refuse_quantized(model)
    for bad in ('nf4', '4bit', 'int8'):
        with pytest.raises(ValueError, match='refused'): M.merge(params(merge_dtype=bad))
    assert not (run_dir(RUN, 'merge', create=False)/'model').exists()

def test_roundtrip_is_what_bitsandbytes_dequantizes(outdir):
    import bitsandbytes.functional as F
    rec = models.train_record(RUN)
    q4 = models.load_base_model('local:tiny-llama', rec['params'])
    full = models.load_full_base('local:tiny-llama', 'float32')
    assert M.nf4_roundtrip_(full, rec['params']) == 14            # 7 linears x 2 layers, lm_head left alone
    for (n, a), (_, b) in zip(M._quantized_linears(q4), M._quantized_linears(full)):
        assert torch.equal(F.dequantize_4bit(a.weight.data, a.weight.quant_state), b.weight.data), n

def test_merge_fidelity_both_modes(outdir):
    report = M.merge(params(compare_modes=True))
    nf4, plain = report['chosen'], report['other_modes'][0]
    assert (nf4['merge_mode'], plain['merge_mode']) == ('nf4-roundtrip', 'plain')
    assert nf4['passed'] and plain['passed']
    assert tight(nf4['vs_qlora']) and nf4['vs_qlora']['greedy_identical']
    assert tight(nf4['vs_unmerged']) and plain['vs_unmerged'] == plain['vs_full']
    assert tight(plain['vs_full']) and plain['vs_full']['greedy_identical']
    assert plain['vs_qlora']['max_abs_diff'] > 100 * nf4['vs_qlora']['max_abs_diff']   # the 4-bit rounding matters
    d = run_dir(RUN, 'merge')
    assert read_json(d/'report.json') == report
    m = read_manifest(d)
    assert m['status'] == 'complete' and m['summary']['passed']
    files = set(os.listdir(d/'model'))
    assert {'config.json', 'generation_config.json', 'model.safetensors.index.json', 'tokenizer.json'} <= files
    assert sum(f.startswith('model-000') for f in files) > 1                       # sharded
    from transformers import AutoModelForCausalLM
    reloaded = AutoModelForCausalLM.from_pretrained(d/'model')
    assert not M.is_quantized(reloaded) and getattr(reloaded.config, 'quantization_config', None) is None
    qlora, tok = models.load_adapter_model(models.train_record(RUN))
    got = M.probe(reloaded, tok, M.fidelity_prompts(1), n_tokens=4)
    ref = M.probe(qlora, tok, M.fidelity_prompts(1), n_tokens=4)
    assert tight(M.compare(got, ref))

def test_bfloat16_merge_within_its_tolerance(outdir):
    report = M.merge(params(merge_dtype='bfloat16', compare_modes=True))
    nf4, plain = report['chosen'], report['other_modes'][0]
    assert nf4['passed'] and plain['passed'] and nf4['tolerance'] == M.TOLERANCE['bfloat16']
    assert nf4['qlora_tolerance'] is None                  # training computed in float32: reported, not judged
    assert 0 < plain['vs_full']['max_abs_diff'] < nf4['vs_full']['max_abs_diff']

def test_outside_tolerance_fails_and_saves_nothing(outdir, monkeypatch):
    d = run_dir(RUN, 'merge')
    import shutil; shutil.rmtree(d)
    monkeypatch.setattr(M, 'nf4_roundtrip_', lambda model, p: 0)          # a merge that ignores the 4-bit rounding
    with pytest.raises(ValueError, match='outside the tolerance: .* against the qlora reference'): M.merge(params(compare_modes=False))
    assert read_manifest(d)['status'] == 'failed' and not (d/'model').exists()
    assert read_json(d/'report.json')['chosen']['passed'] is False

def test_disk_check_fails_early_with_the_figure():
    with pytest.raises(OSError, match=r'needs about \d+\.\d+ GB'): M.check_disk('/', 1 << 60)
    assert M.model_bytes('local:tiny-llama', 'float16') * 2 == M.model_bytes('local:tiny-llama', 'float32')

def _papermill(outdir, *args):
    env = {**os.environ, 'ANIMA_NB_OUTPUTS': str(outdir), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
    env.pop('IN_TEST', None)
    return subprocess.run([sys.executable, '-m', 'papermill', 'nbs/03_merge.ipynb', str(outdir/'out.ipynb'), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

@pytest.mark.slow
def test_papermill_from_root(outdir):
    r = _papermill(outdir, '-p', 'run_name', RUN, '-p', 'merge_mode', 'plain')
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_json(outdir/RUN/'merge'/'report.json')['chosen']['merge_mode'] == 'plain'
    r = _papermill(outdir, '-p', 'run_name', 'untrained')
    assert r.returncode != 0 and 'Run 02_train first' in r.stderr + r.stdout

def test_merge_of_a_real_training_run(outdir):
    from anima_nb.train import train
    P = step_params('train', run_name='trained', max_steps=3, eval_steps=3, save_steps=3, sample_max_new_tokens=4)
    train(P)
    report = M.merge(params(run_name='trained', compare_modes=False))
    assert report['chosen']['passed'] and tight(report['chosen']['vs_qlora'])
    assert report['chosen']['vs_full']['max_abs_diff'] > 1e-3

def test_pad_policy_merge_keeps_the_base_vocabulary(outdir):
    "Upstream's [PAD] policy: the adapter is LoRA only, the merged model and its tokenizer have the base's 3,000 rows."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    models.demo_adapter('padrun', pad_token='[PAD]')
    M.merge(params(run_name='padrun', compare_modes=False))
    d = run_dir('padrun', 'merge')/'model'
    model, tok = AutoModelForCausalLM.from_pretrained(d), AutoTokenizer.from_pretrained(d)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 3000
    assert read_manifest(run_dir('padrun', 'merge'))['summary']['vocab_size'] == 3000

def test_killed_merge_leaves_nothing_behind(outdir):
    "A merged model being saved when the merge was killed (its temporary folder) is removed by the next merge."
    d = run_dir(RUN, 'merge')
    (d/'.model.k1ll3d').mkdir(parents=True); (d/'.model.k1ll3d'/'model-00001-of-00009.safetensors').write_bytes(b'x' * 100)
    M.merge(params(compare_modes=False))
    assert not list(d.glob('.model.*')) and (d/'model'/'config.json').exists()


def test_merge_default_is_plain_as_published():
    "Anima33B-merged was made by adding the LoRA product to the original base: that is the default; the other is asked for."
    assert step_params('merge', profile='anima33b')['merge_mode'] == 'plain'
    assert step_params('merge', profile='anima33b', merge_mode='nf4-roundtrip')['merge_mode'] == 'nf4-roundtrip'
