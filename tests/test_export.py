"The export step: llama.cpp's converter and quantizer on a merged demo model, and greedy parity with transformers."
import json, os, shutil
from pathlib import Path
import pytest
from anima_nb.core import step_params, read_json, read_jsonl, read_manifest, run_dir, load_profile, resolve_path
from anima_nb import export as E
from anima_nb.models import merged_record, resolve_model, DEMO_MODEL

# No skip: the README's test command installs the `gguf` extra, so a missing llama-cpp-python is a failure here.
if not E.has_llama_cpp(): raise ImportError("tests/test_export.py needs llama-cpp-python: pip install -e '.[dev,gguf]'")

def merged(run):
    from anima_nb.merge import demo_adapter, merge
    demo_adapter(run)
    merge({**load_profile('demo'), 'run_name': run, 'merge_mode': 'nf4-roundtrip', 'compare_modes': False})
    return merged_record(run)

@pytest.mark.slow
def test_f16_is_token_for_token_and_quantized_splits_are_near_ties(outputs):
    rec = merged('gx')
    s = E.run_export(step_params('export', run_name='gx', gguf_types='f32,f16,q8_0,q4_k_m'))
    out = outputs/'gx'/'export'
    assert sorted(p.name for p in out.glob('*.gguf')) == ['gx-f16.gguf', 'gx-f32.gguf', 'gx-q4_k_m.gguf', 'gx-q8_0.gguf']
    assert s['files']['q4_k_m']['bytes'] < s['files']['q8_0']['bytes'] < s['files']['f16']['bytes']
    p = read_json(out/'parity.json')
    for t in ('f32', 'f16'):                                            # three questions and the seed's raw prompt
        assert p[t]['identical'] == p[t]['of'] == 4 and p[t]['agreement'] > 0.9999, p[t]
    for t in ('q8_0', 'q4_k_m'):
        assert p[t]['unexplained'] == 0 and p[t]['identical'] + p[t]['near_ties'] == p[t]['of'], p[t]
    assert all(p[t]['chat_template'] and p[t]['name'] == 'gx' for t in p)
    m = read_manifest(out)
    assert m['status'] == 'complete' and m['summary']['llama_cpp_python'] == E.llama_cpp_version()
    assert all(len(f['sha256']) == 64 for f in m['summary']['files'].values())
    # a second run keeps every file made from the same merged model
    before = {f.name: f.stat().st_mtime_ns for f in out.glob('*.gguf')}
    lines = []
    E.export_files(step_params('export', run_name='gx', gguf_types='f32,f16,q8_0,q4_k_m'), out, rec, echo=lines.append)
    assert {f.name: f.stat().st_mtime_ns for f in out.glob('*.gguf')} == before and all('kept' in l for l in lines)

@pytest.mark.slow
def test_a_wrong_model_is_reported_as_unexplained(outputs):
    "The parity check can fail: the untrained demo base converted, compared with the fine-tuned merged model."
    rec = merged('wrong')
    conv = E.converter_dir(step_params('export'))
    base = Path(resolve_model(DEMO_MODEL))
    bad = E.convert(base, outputs/'base-f16.gguf', 'f16', conv, {'general.name': 'base'})
    p = E.parity_report(Path(rec['model_dir']), {'f16': bad}, step_params('export', run_name='wrong'))
    assert p['f16']['unexplained'] >= 1 and p['f16']['identical'] < p['f16']['of'], p['f16']

def test_only_quantized_keeps_no_f16_and_refuses_short_disk(outputs, monkeypatch):
    merged('q4')
    s = E.run_export(step_params('export', run_name='q4', gguf_types='q4_k_m', gguf_prompts=1, gguf_parity_tokens=4))
    out = outputs/'q4'/'export'
    assert [f.name for f in out.glob('*.gguf')] == ['q4-q4_k_m.gguf'] and list(read_json(out/'files.json')) == ['q4_k_m']
    assert s['parity']['q4_k_m']['of'] == 2 and s['parity']['q4_k_m']['unexplained'] == 0
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ValueError, match='need about'): E.run_export(step_params('export', run_name='q4', gguf_types='f16'))

def test_dry_run_gives_disk_per_type_from_the_parameter_count(outputs):
    s = E.run_export(step_params('export', profile='anima33b', dry_run=True, gguf_types='f16,q8_0,q4_k_m'))
    assert {t: round(v) for t, v in s['gb'].items()} == {'f16': 65, 'q8_0': 35, 'q4_k_m': 20}
    assert round(s['needed_gb']) == 119 and s['free_gb'] > 0

def test_bad_values_refused_before_anything_is_converted(outputs):
    with pytest.raises(ValueError, match="unknown \\['q3'\\]"): E.run_export(step_params('export', gguf_types='q3'))
    with pytest.raises(ValueError, match='No complete merge'): E.run_export(step_params('export', run_name='nothing'))
    with pytest.raises(ValueError, match='no convert_hf_to_gguf.py'): E.run_export(step_params('export', gguf_converter='/tmp'))

def test_template_in_the_file_renders_the_training_prompt(outputs):
    import jinja2
    from anima_nb.data import alpaca_prompt
    tpl = jinja2.Environment().from_string(E.alpaca_chat_template())
    for q in ('天空为什么是蓝色的？', 'say "hi" {{ not jinja }}'):
        assert tpl.render(messages=[dict(role='user', content=q)], eos_token='</s>') == alpaca_prompt(q)

@pytest.mark.slow
def test_gguf_answers_play_in_the_elo_step(outputs, tmp_path, monkeypatch):
    "f16 answers through llama.cpp equal the transformers ones but at near ties; the Elo step plays the file against the run's answers."
    from elo_server import ChatServer
    from anima_nb.inference import infer
    from anima_nb.elo import run_elo
    merged('ga')
    infer(step_params('inference', run_name='ga', questions='pkg:sample_questions.json', max_new_tokens=12))
    s = E.run_export(step_params('export', run_name='ga', gguf_types='f16', gguf_prompts=1, gguf_answers='f16'))
    assert s['answers']['file'] == 'answers-f16.jsonl' and s['answers']['answers'] == 40
    ours = read_jsonl(outputs/'ga'/'inference'/'answers.jsonl')
    theirs = read_jsonl(outputs/'ga'/'export'/'answers-f16.jsonl')
    differ = [a for a, b in zip(ours, theirs) if a['answer'] != b['answer']]
    assert s['answers']['equal_to_transformers'] == 40 - len(differ) >= 36
    if differ:                              # f16's rounding may only settle a near tie the other way: the parity's test
        import llama_cpp
        from transformers import AutoModelForCausalLM
        from anima_nb.models import load_tokenizer
        model_dir = outputs/'ga'/'merge'/'model'
        tok, model = load_tokenizer(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval()
        llm = llama_cpp.Llama(str(outputs/'ga'/'export'/'ga-f16.gguf'), n_ctx=512, logits_all=True, verbose=False, seed=0)
        try:
            for a in differ:
                st = a['settings']
                args = (tok(a['prompt'])['input_ids'], st['max_new_tokens'], tok.eos_token_id, st['repetition_penalty'])
                c = E.compare(E.greedy_hf(model, *args), E.greedy_gguf(llm, *args))
                assert c['first_divergence'] is not None and c['near_tie'], (a['answer'], c)
        finally: llm.close()
    with ChatServer(verdict=lambda msgs: '7 6\nfine') as srv:
        monkeypatch.setenv('OPENAI_API_KEY', 'test-key-not-secret')
        rep = run_elo(step_params('elo', run_name='ga', judge='openai', judge_base_url=srv.url, schedule='balanced',
                                  rounds=0, bootstrap_rounds=10, permutations=5, questions='pkg:sample_questions.json',
                                  answers=str(outputs/'ga'/'export'/'answers-f16.jsonl')))['report']
    assert set(rep['bradley_terry']) == {'ga', 'ga-f16'} and rep['battles'] == 40
