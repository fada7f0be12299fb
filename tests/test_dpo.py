"DPO step: the loss against a hand computation, the adapter-off reference, the demo's curves, bad rows, pairs, dry run."
import os, re, json, math
from pathlib import Path
import pytest
import torch
from conftest import ROOT, make_outputs
from anima_nb.core import step_params, run_dir, read_jsonl, read_json, read_manifest, write_jsonl
from anima_nb import dpo as D, models

# A handful of pairs and steps keeps the module to well under a minute on two CPU cores.
TINY = dict(dpo_model='local:tiny-llama', dpo_max_length=96, dpo_batch_size=4, dpo_max_steps=8, dpo_eval_steps=4,
            dpo_save_steps=4, dpo_learning_rate=0.005, dpo_answer_batch_size=8)
QIDS = list(range(1, 13))

def answer_rows(run, answer=lambda q: f'我不太清楚第{q}个问题。'):
    return [dict(question_id=q, category='generic', model=run, prompt=f'### Instruction:\n问题{q}\n\n### Response: ',
                 answer=answer(q), settings=dict(max_new_tokens=6, do_sample=False, repetition_penalty=1.0),
                 prompt_tokens=9, answer_tokens=5, stop='length', seconds=0.1, batch_size=4) for q in QIDS]

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A run with answers to 12 sample questions, as inference leaves them; the demo base is the policy."
    out = make_outputs(tmp_path_factory.mktemp('dpo')/'outputs')
    old = os.environ.get('ANIMA_NB_OUTPUTS'); os.environ['ANIMA_NB_OUTPUTS'] = str(out)
    write_jsonl(run_dir('r', 'inference')/'answers.jsonl', answer_rows('r'))
    yield 'r'
    if old is None: os.environ.pop('ANIMA_NB_OUTPUTS')
    else: os.environ['ANIMA_NB_OUTPUTS'] = old

def params(run, **kw): return step_params('dpo', run_name=run, **{**TINY, **kw})

def trainer_and_batch(run, **kw):
    "A trainer whose adapter is perturbed (policy != reference), and a batch of 4 pairs."
    p = params(run, **kw)
    rows = D.training_rows(D.run_pairs(run, p['dpo_questions']))
    tr = D.make_trainer(p, *D.split_pairs(rows, 0.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, w in tr.model.named_parameters():
            if 'lora_B' in n: w.normal_(0, 0.02)
    return tr, tr.data_collator([tr.train_dataset[i] for i in range(4)])

def test_loss_equals_hand_computation(run):
    tr, batch = trainer_and_batch(run)
    model = tr.model.eval()
    policy = D.sequence_logps(model, batch)
    with model.disable_adapter(): ref = D.sequence_logps(model, batch)
    hand = D.dpo_loss(*policy.chunk(2), *ref.chunk(2), 0.1)
    with torch.no_grad(): trl = tr.compute_loss(model, batch)
    assert abs(trl.item() - hand['loss'].item()) < 1e-4, (trl.item(), hand['loss'].item())
    assert abs(hand['loss'].item() - math.log(2)) > 1e-3             # the adapter matters: not the trivial log 2
    # the margin by hand: beta * ((pc - rc) - (pr - rr)), pair by pair
    pc, pr, rc, rr = *policy.chunk(2), *ref.chunk(2)
    assert torch.allclose(hand['margins'], 0.1 * ((pc - rc) - (pr - rr)))

def test_adapter_off_reference_equals_a_separate_copy(run):
    tr, batch = trainer_and_batch(run)
    off = torch.cat(tr.compute_ref_log_probs(tr.model, batch))
    separate = models.load_base_model(D.policy_path(params(run)), params(run)).eval()
    copy = D.sequence_logps(separate, batch)
    assert (off - copy).abs().max().item() < 1e-3, (off, copy)       # fp32 sums of ~100 log-probs
    tr2, batch2 = trainer_and_batch(run, dpo_reference='model')
    assert tr2.ref_model is not None
    assert (torch.cat(tr2.compute_ref_log_probs(tr2.ref_model, batch2)) - copy).abs().max().item() < 1e-3
    assert (D.sequence_logps(tr.model, batch) - copy).abs().max().item() > 1e-3      # the policy is not the reference

def test_demo_margins_and_accuracy_rise(run):
    s = D.run_dpo(params(run))
    d = run_dir(run, 'dpo')
    rows = [r for r in read_jsonl(d/'metrics.jsonl') if 'rewards/margins' in r]
    m = [r['rewards/margins'] for r in rows]; acc = [r['rewards/accuracies'] for r in rows]
    assert len(rows) == 8 and m[0] == pytest.approx(0, abs=1e-6)            # a fresh adapter: policy == reference
    assert sum(m[-3:]) / 3 > sum(m[:2]) / 2 + 0.05 and sum(acc[-3:]) / 3 > sum(acc[:2]) / 2
    assert rows[-1]['loss'] < rows[0]['loss']
    for f in ('adapter/adapter_config.json', 'metrics.jsonl', 'dpo.png', 'answers.jsonl', 'prepost.json',
              'pairs.jsonl'):
        assert (d/f).exists(), f
    table = read_json(d/'prepost.json')['table']
    assert [r['model'] for r in table] == ['r', 'r-dpo'] and sum(r['wins'] + r['ties'] for r in table) > 0
    assert read_manifest(d)['status'] == 'complete' and s['curves']['rewards/margins']['last'] > 0
    assert D.dpo_plan(params(run))['action'] == 'complete'                  # the same parameters: not run again
    assert D.dpo_plan(params(run, dpo_beta=0.2))['action'] == 'refuse'      # other parameters: checkpoints kept

def test_bad_rows_name_file_and_line(tmp_path):
    f = tmp_path/'prefs.jsonl'
    good = dict(prompt='问：', chosen='好的回答', rejected='坏的回答')
    cases = [(dict(good, chosen='  '), 'line 2: empty chosen response'),
             ({k: good[k] for k in ('prompt', 'chosen')}, "line 2: missing field(s) ['rejected']"),
             ('{"prompt": ', 'line 2: not valid JSON')]
    for row, msg in cases:
        f.write_text(json.dumps(good, ensure_ascii=False) + '\n' + (row if isinstance(row, str) else json.dumps(row)))
        with pytest.raises(ValueError, match=re.escape(msg)): D.read_preferences(f, "triples")
        assert str(f) in str(pytest.raises(ValueError, D.read_preferences, f, 'triples').value)
    f.write_text(json.dumps(dict(chosen='\n\nHuman: 嗨\n\nAssistant: 你好', rejected='\n\nHuman: 嗨\n\nAssistant: 你好')))
    assert [D.identical(p) for p in D.read_preferences(f)] == [True]          # kept, as upstream keeps it

def test_pairs_from_the_run(run, tmp_path):
    pairs = D.run_pairs(run, 'pkg:sample_questions_reference.json')
    refs = D.load_references('pkg:sample_questions_reference.json')
    assert [p['question_id'] for p in pairs] == QIDS
    assert all(p['chosen'] == refs[p['question_id']] and p['rejected'] == f"我不太清楚第{p['question_id']}个问题。"
               for p in pairs)
    assert pairs[0]['prompt'] == answer_rows(run)[0]['prompt']
    other = tmp_path/'q.json'
    other.write_text(json.dumps([dict(question_id=1, reference='只有一个')], ensure_ascii=False))
    with pytest.raises(ValueError, match=r'answers.jsonl, line 2 \(question 2\): no reference answer'):
        D.run_pairs(run, str(other))

def test_dry_run_prints_both_reference_modes(capsys, outputs):
    D.main(['--profile', 'anima33b_dpo', '--dry_run', 'true', '--run_name', 'dry'])
    out = capsys.readouterr().out
    assert 'reference=adapter_off' in out and 'reference=model' in out
    est = read_json(run_dir('dry', 'dpo')/'estimate.json')['memory_gb']
    gap = est['model']['total'] - est['adapter_off']['total']
    assert gap == pytest.approx(est['model']['reference_weights'], abs=0.01)
    assert 15 < est['model']['reference_weights'] < 22                     # a second 4-bit LLaMA-33B

def test_unknown_and_bad_values_refused_before_loading(run):
    with pytest.raises(TypeError, match='bogus'): D.run_dpo({**params(run), 'bogus': 1})
    with pytest.raises(ValueError, match="dpo_reference='twin' is not one of"):
        D.run_dpo(params(run, dpo_reference='twin'))

def test_interrupted_run_resumes_from_its_newest_checkpoint(run):
    "After the demo run above: its last checkpoint lost and its record failed, a rerun resumes from step 4."
    import shutil
    from anima_nb.core import write_json
    d = run_dir(run, 'dpo')
    if not (d/'checkpoints'/'checkpoint-8').exists(): D.run_dpo(params(run))
    shutil.rmtree(d/'checkpoints'/'checkpoint-8')
    write_json(d/'manifest.json', {**read_manifest(d), 'status': 'failed'})
    assert D.dpo_plan(params(run))['checkpoint'] == 'checkpoint-4'
    s = D.run_dpo(params(run))
    assert s['resumed_from'] == 'checkpoint-4' and s['steps'] == 8
    steps = [r['step'] for r in read_jsonl(d/'metrics.jsonl') if 'loss' in r and 'eval_loss' not in r]
    assert steps == list(range(1, 9))                    # the rows after the checkpoint were dropped, then written again

def test_killed_after_its_last_checkpoint_trains_no_more(run):
    "Its record failed but checkpoint-8 complete: the rerun takes step 8's weights and trains 0 steps (the Trainer took a ninth)."
    from anima_nb.core import write_json
    d = run_dir(run, 'dpo')
    if not (d/'checkpoints'/'checkpoint-8').exists(): D.run_dpo(params(run))
    write_json(d/'manifest.json', {**read_manifest(d), 'status': 'failed'})
    s = D.run_dpo(params(run))
    assert s['resumed_from'] == 'checkpoint-8' and s['steps'] == 8
    assert sorted(p.name for p in (d/'checkpoints').iterdir())[-1] == 'checkpoint-8'

def test_live_judge_keeps_every_cap(tmp_path, monkeypatch):
    "DPO's paid judge comes from the same factory as the Elo step's: the request cap, the Retry-After cap, the endpoint."
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-test')
    from anima_nb import judge as J
    p = params('r', dpo_judge='openai', judge_max_requests=7, judge_max_wait=5.0, judge_base_url='http://127.0.0.1:9/v1')
    j = D.judge_for(p, tmp_path)
    assert type(j).__name__ == 'OpenAIJudge' and (j.max_requests, j.retry_after_cap, j.model) == (7, 5.0, 'gpt-4')
    assert j.url.startswith('http://127.0.0.1:9/v1')
    d = step_params('dpo', run_name='r')                   # the defaults: the same caps as the Elo step's
    e = step_params('elo', run_name='r')
    assert all(d[k] == e[k] for k in ('judge_max_requests', 'judge_max_wait', 'judge_timeout', 'judge_temperature'))

def test_before_after_ratings_are_the_tournaments():
    "Three wins in four: the same Bradley-Terry gap in DPO's before/after table as in the Elo step's ratings."
    from anima_nb import ratings as R
    battles = [R.battle_row(i, 'g', 'r', 'r-dpo', 6, 8) for i in range(3)] + [R.battle_row(9, 'g', 'r-dpo', 'r', 6, 8)]
    table = R.two_player_table(battles, ('r', 'r-dpo'), bootstrap=0)
    bt = R.bradley_terry(battles, ['r', 'r-dpo'], bootstrap=0)
    gap = table[1]['rating'] - table[0]['rating']
    assert abs(gap - 400 * math.log10(3)) < 0.1 and abs(gap - (bt['r-dpo']['rating'] - bt['r']['rating'])) < 0.1

def test_live_judge_goes_where_told_stops_at_its_caps_and_pays_once(run, monkeypatch):
    """DPO with the live judge and `judge_base_url` at a local server: every request goes there, the request cap stops
    it, a judge that answers without scores stops it with an error, and a rerun pays only for the verdicts it lacks."""
    from elo_server import ChatServer
    from anima_nb.judge import JudgeError
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-test')
    d = run_dir(run, 'dpo')
    if not (d/'checkpoints'/'checkpoint-8').exists(): D.run_dpo(params(run))
    draws = 2 * len(QIDS)                                     # every question, in both orders
    with ChatServer() as server:
        with pytest.raises(JudgeError, match='cap of 5 paid judge requests'):
            D.run_dpo(params(run, dpo_judge='openai', judge_base_url=server.url, judge_max_requests=5))
        assert server.requests == 5 and read_manifest(d)['status'] == 'failed'
    with ChatServer(verdict=lambda messages: 'I am unable to compare these two answers.') as scoreless:
        with pytest.raises(JudgeError, match='20 of 20 verdicts had no scores'):
            D.run_dpo(params(run, dpo_judge='openai', judge_base_url=scoreless.url, judge_model='gpt-4-scoreless'))
        assert scoreless.requests == 20
    with ChatServer() as server:
        s = D.run_dpo(params(run, dpo_judge='openai', judge_base_url=server.url))
        assert server.requests == draws - 5 and s['steps'] == 8          # the 5 paid verdicts came from the cache
        assert s['prepost']['battles'] == draws and s['prepost']['judge'] == 'openai'
    again = D.run_dpo(params(run, dpo_judge='openai', judge_base_url=server.url))
    assert again == s                                                     # complete: nothing sent, nothing trained
    rec = D.run_dpo(params(run, dpo_judge='openai', judge_base_url=server.url, dpo_eval_steps=2))
    assert rec == s and read_manifest(d)['params']['dpo_eval_steps'] == 2  # run-only: recorded, not run again

def test_preference_file_as_upstream_reads_it(run, tmp_path):
    """Upstream's reading of a preference file: its test split is the held-out set, a pair with the same text on both
    sides is kept and counted, a dialogue scored whole needs no `Assistant:` turn, and batches are grouped by length."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    rows = [dict(chosen=f'\n\nHuman: 问题{i}\n\nAssistant: ' + '好' * (i + 1), rejected=f'\n\nHuman: 问题{i}\n\nAssistant: 坏')
            for i in range(10)]
    rows.append(dict(chosen='一段没有对话轮次的文字', rejected='另一段文字'))               # no turn: fine when scored whole
    rows.append(dict(chosen='\n\nHuman: 嗨\n\nAssistant: 你好', rejected='\n\nHuman: 嗨\n\nAssistant: 你好'))   # identical
    rows += [dict(r, split='test') for r in rows[:3]]
    f = tmp_path/'prefs.jsonl'
    f.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    p = step_params('dpo', run_name='prefs', **{**TINY, 'dpo_data': str(f), 'dpo_train_on_source': True,
                                               'dpo_max_steps': 2, 'dpo_save_steps': 2, 'dpo_eval_steps': 2})
    s = D.run_dpo(p)
    assert (s['pairs'], s['train_pairs'], s['eval_pairs'], s['eval_from']) == (15, 12, 3, 'the test split')
    assert s['identical_pairs'] == 1 and s['steps'] == 2
    pairs = read_jsonl(run_dir('prefs', 'dpo')/'pairs.jsonl')
    assert pairs[0]['prompt'] == '' and pairs[0]['chosen'] == rows[0]['chosen']        # the whole dialogue, unsplit
    with pytest.raises(ValueError, match='share no prompt'):                           # split when the prompt is not scored
        D.read_preferences(f, 'hh-rlhf', parse=True)
    held = [q['split'] == 'test' for q in pairs]
    tr = D.make_trainer(p, *D.split_pairs(D.training_rows(pairs, True), 0.1, 42, held))
    assert isinstance(tr._get_train_sampler(), LengthGroupedSampler)
    assert tr.train_dataset['length'][0] == len(rows[0]['chosen']) + len(rows[0]['rejected'])
