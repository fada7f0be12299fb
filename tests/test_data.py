"Data loading against the reference samples, bad input, parameter refusal and the papermill run from the root."
import json, subprocess, sys, os
from pathlib import Path
import pytest
from conftest import ROOT, reference
from anima_nb.data import load_pairs, alpaca_prompt, read_rows

def test_merge_sample_loads_as_alpaca():
    p = reference('chinese-vicuna', 'merge_sample.json')
    rows = json.loads(p.read_text(encoding='utf-8'))
    pairs, stats = load_pairs(str(p), 'alpaca')
    assert stats['rows'] == len(rows) == 10
    for r, pair in zip(rows, pairs):
        assert pair['source'] == alpaca_prompt(r['instruction'], r['input'])
        assert pair['source'].endswith('### Response: ')
        assert pair['target'] == r['output']

def test_instruct_sample_jsonl():
    p = reference('chinese-vicuna', 'instruct_sample.jsonl')
    pairs, stats = load_pairs(str(p), 'alpaca')
    with_input = [json.loads(l) for l in p.read_text(encoding='utf-8').splitlines() if l.strip()]
    assert stats['rows'] == len(with_input) >= 9
    assert [q['target'] for q in pairs] == [r['output'] for r in with_input]
    assert sum('### Input:' in q['source'] for q in pairs) == sum(bool(r['input']) for r in with_input)

def test_chat_sample_is_refused_with_its_address():
    "Multi-turn rows hold lists, not strings: the alpaca format must name the row instead of guessing."
    p = reference('chinese-vicuna', 'chat_sample.jsonl')
    with pytest.raises(ValueError, match=r"chat_sample.jsonl, line 1: field 'input' must be a string, got list"):
        load_pairs(str(p), 'input-output')
    with pytest.raises(ValueError, match=r"'alpaca' needs column\(s\) \['instruction'\]"):
        load_pairs(str(p), 'alpaca')

def test_all_formats(tmp_path):
    rows = {'chip2': {'text': '<human>: 问\n<bot>: 答'}, 'self-instruct': {'prompt': '问', 'completion': '答'},
            'hh-rlhf': {'chosen': '答'}, 'oasst1': {'text': '答'}, 'input-output': {'input': '问', 'output': '答'},
            'alpaca-clean': {'instruction': '问', 'input': '', 'output': '答'}}
    for fmt, row in rows.items():
        f = tmp_path/f'{fmt}.jsonl'; f.write_text(json.dumps(row, ensure_ascii=False) + '\n', encoding='utf-8')
        (pair,), _ = load_pairs(str(f), fmt)
        assert pair['target'] == '答', fmt

def test_csv_and_parquet_addresses(tmp_path):
    import pandas as pd
    df = pd.DataFrame([{'instruction': 'a', 'input': '', 'output': 'b'}, {'instruction': 'c', 'input': '', 'output': 'd'}])
    df.to_csv(tmp_path/'d.csv', index=False); df.to_parquet(tmp_path/'d.parquet')
    assert [w.split(', ')[1] for w, _ in read_rows(str(tmp_path/'d.csv'))] == ['line 2', 'line 3']
    assert load_pairs(str(tmp_path/'d.parquet'), 'alpaca')[1]['rows'] == 2
    with pytest.raises(ValueError, match='unsupported file type'):
        (tmp_path/'d.txt').write_text('x'); load_pairs(str(tmp_path/'d.txt'), 'alpaca')

def _papermill(nb, *params, cwd=ROOT, env=None):
    args = [sys.executable, '-m', 'papermill', f'nbs/{nb}', str(env['ANIMA_NB_OUTPUTS'] + '/out.ipynb'), '--cwd', str(cwd)]
    for k, v in params: args += ['-p', k, str(v)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)

def test_papermill_refuses_undeclared_parameter(outputs):
    r = _papermill('01_data.ipynb', ('max_steps', 1), env=dict(os.environ))
    assert r.returncode != 0
    assert "does not accept parameter(s) ['max_steps']" in r.stdout + r.stderr
    assert not (outputs/'demo'/'data'/'profile.json').exists() and not (outputs/'demo-papermill').exists()

@pytest.mark.slow
def test_papermill_runs_from_the_root(outputs):
    r = _papermill('01_data.ipynb', ('source_max_len', 256), env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (outputs/'demo').exists()                     # the papermill command's run is not the chain's
    prof = json.loads((outputs/'demo-papermill'/'data'/'profile.json').read_text(encoding='utf-8'))
    assert prof['configured']['source_max_len'] == 256
    assert 256 in map(int, prof['coverage']['source'])
    man = json.loads((outputs/'demo-papermill'/'data'/'manifest.json').read_text(encoding='utf-8'))
    assert man['status'] == 'complete' and man['inputs'][0]['sha256']
    assert (outputs/'demo-papermill'/'data'/'lengths.png').stat().st_size > 10_000
