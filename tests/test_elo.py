"The Elo step: the published reproduction, the upstream importer, the judge client under faults, kill-and-resume, and secrets."
import ast, json, os, random, re, signal, subprocess, sys, time, uuid
from pathlib import Path
import pytest
import papermill as pm
from conftest import ROOT, reference
from elo_server import ChatServer, default_verdict
from anima_nb.core import step_params, read_jsonl, read_json, write_json, write_jsonl
from anima_nb.judge import *
from anima_nb.elo import *
from anima_nb.ratings import *

NB = ROOT/'nbs'/'05_elo.ipynb'
MARKER = 'marker-secret-' + uuid.uuid4().hex   # a fresh fake key each run, never a literal in the repo

def nb_params(**kw) -> dict:
    "The notebook's parameters given `kw`: resolved as the notebook resolves them (given, profile, declared default)."
    return step_params('elo', **kw)

@pytest.fixture
def tourney(tmp_path):
    "Ten questions (two coding, one math) and three answer sets, as files."
    cats = ['generic'] * 7 + ['coding', 'coding', 'math']
    qs = [dict(question_id=i + 1, category=c, text=f'question {i + 1}', translation=f'问题 {i + 1}') for i, c in enumerate(cats)]
    write_json(tmp_path/'questions.json', qs)
    (tmp_path/'answers').mkdir()
    for m, style in [('mine', '我的回答'), ('ref', '参考答案'), ('base', '基线')]:
        write_jsonl(tmp_path/'answers'/f'{m}.jsonl', [dict(question_id=q['question_id'], answer=f'{style} {q["question_id"]}' * (1 + q['question_id'] % 3)) for q in qs])
    return dict(questions=str(tmp_path/'questions.json'), answers=str(tmp_path/'answers'))

def judge_for(server, tmp_path, **kw):
    os.environ['OPENAI_API_KEY'] = MARKER
    return OpenAIJudge(base_url=server.url, cache=tmp_path/'cache.jsonl', timeout=kw.pop('timeout', 5.0), backoff_base=0.05, backoff_cap=0.5, seed=0, **kw)

MSGS = [judge_messages(f'问题 {i}', f'回答甲 {i}', f'回答乙 {i}', 'generic') for i in range(6)]

# ---- the published tournament ----

def test_replay_lands_on_published_table(outputs):
    r = run_elo(nb_params(bootstrap_rounds=20, permutations=5))
    pub = load_published()['published_table']
    assert {m: round(v, 2) for m, v in r['report']['online_elo'].items()} == pub
    out = outputs/'demo'/'elo'
    assert {'battles.jsonl', 'ratings.json', 'manifest.json', 'win_rate.png', 'battle_counts.png', 'ratings.png'} <= {p.name for p in out.iterdir()}
    assert read_json(out/'manifest.json')['status'] == 'complete'
    assert len(read_jsonl(out/'battles.jsonl')) == 215

def test_importer_reproduces_recorded_verdicts():
    nb = reference('anima', 'upstream_elo_tournament.ipynb')
    up = read_upstream_notebook(nb)
    assert up['verdicts'] == read_jsonl(reference('anima', 'elo_judgements.jsonl'))
    assert up['verdicts'] == load_verdicts()
    sk = read_jsonl(reference('anima', 'elo_skipped_draws.jsonl'))
    assert [(s['row_id'], s['first_model'], s['second_model']) for s in up['skipped']] == [(s['row_id'], s['first_model'], s['second_model']) for s in sk]
    ans = {(a['question_id'], a['model']): a['answer'] for a in read_jsonl(reference('anima', 'answers.jsonl'))}
    assert {(a['question_id'], a['model']): a['answer'] for a in up['answers']} == ans
    # every rating the notebook printed is the online Elo state after that verdict
    pub = load_published()
    _, hist = online_elo(verdicts_to_battles(up['verdicts']), pub['params']['model_order'], start=pub['rating_before_first_recorded_round'], history=True)
    assert all(abs(h[m] - p[m]) < 1e-9 for h, p in zip(hist, up['ratings']) for m in p)
    # the shipped skipped draws are the importer's, read with the better parser; FastChat's parser fails on every one
    shipped = read_jsonl(ROOT/'anima_nb'/'assets'/'anima_elo_skipped.jsonl')
    assert [(s['draw'], s['row_id'], s['first_model']) for s in shipped] == [(s['draw'], s['row_id'], s['first_model']) for s in up['skipped']]
    assert [[s['score_1'], s['score_2']] for s in shipped] == [parse_score_better(s['review']) for s in up['skipped']]
    assert all(parse_score_fastchat(s['review']) == [-1, -1] for s in up['skipped'])
    assert {s['category'] for s in shipped} == {'math'}

def test_prompts_are_fastchat_v1_as_sent_upstream():
    up = read_upstream_notebook(reference('anima', 'upstream_elo_tournament.ipynb'))
    qs = {q['question_id'] - 1: q for q in read_json(reference('anima', 'translated_vicuna_eval_set.json'))}
    n = 0
    for d in up['draws']:
        q = qs[d['row_id']]
        if 'answers' in d:
            assert judge_messages(q['translation'], d['answers'][d['first_model']], d['answers'][d['second_model']], q['category'])[1]['content'] == d['prompt']
            n += 1
        else:
            assert d['prompt'].endswith('[System]\n' + JUDGE_PROMPTS['math'] + '\n\n') and q['category'] == 'math'
    assert n == 215

def test_upstream_draw_rule_reproduces_recorded_stretch():
    order = load_published()['params']['model_order']
    up = read_upstream_notebook(reference('anima', 'upstream_elo_tournament.ipynb'))
    target = [(d['row_id'], order.index(d['first_model']), order.index(d['second_model'])) for d in up['draws']]
    stream = upstream_draws(42, 80, 4)
    before = [next(stream) for _ in range(102)]       # rounds 1-85: 102 raw draws, 95 after repeats (README)
    assert len(set(before)) == 95
    recorded = {d for d in before if d[0] not in (67, 68, 69)}
    played, repeats = [], []
    for d in stream:
        if d in recorded: repeats.append(d); continue
        if len(played) == len(target) or d != target[len(played)]: break
        if d[0] not in (67, 68, 69): recorded.add(d)
        played.append(d)
    # exactly the first 23 saved draws (rounds 86-105 and the three unparseable math draws between them), no more
    assert len(played) == 23 and played == target[:23]
    assert [up['draws'][i].get('round') for i in range(23)] == [86, 87, 88, 89, None, 90, 91, 92, None, None] + list(range(93, 106))
    assert [target[i][0] for i in range(23) if up['draws'][i].get('round') is None] == [68, 69, 67]
    # on the way the rule redrew four repeats, two of them of draws played within the stretch itself
    assert repeats == [(14, 0, 2), (36, 1, 2), (33, 3, 1), (33, 1, 2)] and {(36, 1, 2), (33, 1, 2)} <= set(played)
    # the first draw the saved outputs cannot explain: round 106 was anima vs belle on row 31, the rule draws row 26
    assert (d, target[23], up['draws'][23]['round']) == ((26, 1, 2), (31, 0, 1), 106)

# ---- the judge client against a local server ----

def test_retries_429_500_timeout_drop(tmp_path):
    faults = {1: ('429', 1), 2: '500', 3: ('timeout', 2.0), 4: 'drop'}
    with ChatServer(faults=faults) as srv:
        j = judge_for(srv, tmp_path, timeout=0.5)
        t0 = time.time()
        out = j.complete(MSGS[0])
        assert out == default_verdict(MSGS[0])
        assert time.time() - t0 >= 1.0 + 0.5          # honoured Retry-After, waited out the timeout
        assert j.stats['retries'] == 4 and j.stats['waits'][0] == 1.0
        assert srv.requests == 5 and sum(srv.answered.values()) == 1
        assert srv.auth == {f'Bearer {MARKER}': 5}
        assert j.complete(MSGS[0]) == out and srv.requests == 5 and j.stats['cache_hits'] == 1

def test_gives_up_and_does_not_retry_client_errors(tmp_path):
    with ChatServer(faults={i: '503' for i in range(1, 10)}) as srv:
        j = judge_for(srv, tmp_path, max_attempts=3)
        with pytest.raises(JudgeError, match='after 3 attempts'): j.complete(MSGS[1])
        assert srv.requests == 3
    with ChatServer(faults={1: '401'}) as srv:
        j = judge_for(srv, tmp_path)
        with pytest.raises(JudgeError, match='AuthenticationError'): j.complete(MSGS[2])
        assert srv.requests == 1
    assert len(JudgeCache(tmp_path/'cache.jsonl')) == 0

@pytest.mark.parametrize('concurrency', [1, 3])
def test_nothing_more_is_sent_after_a_fatal_error(tmp_path, concurrency):
    "A rejected key stops a batch: the requests in flight finish, none is sent after (a pool used to send them all)."
    many = [[{'role': 'user', 'content': m[-1]['content'] + f' #{i}'}] for i in range(8) for m in MSGS[:1]]
    with ChatServer(faults={1: '401'}, latency=0.05) as srv:
        j = judge_for(srv, tmp_path)
        with pytest.raises(JudgeError, match='AuthenticationError'): j.judge_many(many, concurrency, progress=False)
        assert srv.requests <= concurrency, srv.requests

def test_malformed_verdicts_are_counted_and_skipped(tmp_path, tourney, outputs):
    bad = lambda n, body: 'malformed' if n % 5 == 0 else None
    with ChatServer(on_request=bad) as srv:
        os.environ['OPENAI_API_KEY'] = MARKER
        P = nb_params(judge='openai', judge_base_url=srv.url, rounds=20, concurrency=4, bootstrap_rounds=10, permutations=5, run_name='bad', **tourney)
        r = run_elo(P)['report']
    pf = r['parse_failures']
    assert pf['fastchat'] >= pf['better'] + 1 and pf['better'] >= 1      # math reviews fail only the faithful parser
    assert r['battles'] == 20 and all(b['question_id'] != 10 for b in read_jsonl(outputs/'bad'/'elo'/'battles.jsonl'))
    assert r['judge']['requests'] == pf['reviews'] and r['judge']['prompt_tokens'] > 0

def test_concurrency_does_not_change_the_tournament(tmp_path, tourney, outputs):
    res = []
    with ChatServer(latency=0.01) as srv:
        os.environ['OPENAI_API_KEY'] = MARKER
        for c in (1, 8):
            r = run_elo(nb_params(judge='openai', judge_base_url=srv.url, rounds=25, concurrency=c, bootstrap_rounds=10, permutations=5, run_name=f'c{c}', **tourney))
            res.append(read_jsonl(outputs/f'c{c}'/'elo'/'battles.jsonl'))
    assert res[0] == res[1]
    # the cache replays offline: same battles, no server
    P = nb_params(judge='replay', replay_file=str(outputs/'c8'/'elo'/'judge_cache.jsonl'), rounds=25, bootstrap_rounds=10, permutations=5, run_name='rp', **tourney)
    run_elo(P)
    assert read_jsonl(outputs/'rp'/'elo'/'battles.jsonl') == res[1]

def hand_row(n, q, a, b, v, **kw) -> dict:
    "A hand-made battle row: round `n`, question `q`, `a` shown first, verdict `v`."
    return dict(round=n, question_id=q, category='generic', model_a=a, model_b=b, verdict=v, judge='hand', **kw)

def test_combine_orders_agreement_is_a_win_disagreement_a_tie():
    rows = [hand_row(1, 1, 'x', 'y', 'model_a', score_a=9),     # q1 x-y: x wins shown first ...
            hand_row(2, 2, 'x', 'y', 'model_a'),                # q2 x-y: whoever is shown first wins: disagree
            hand_row(3, 3, 'y', 'z', 'model_b'),                # q3 y-z: z wins shown second ...
            hand_row(4, 1, 'x', 'z', 'model_b'),                # q1 x-z: judged in one order only
            hand_row(5, 1, 'y', 'x', 'model_b'),                # ... and shown second: agree, x wins
            hand_row(6, 3, 'z', 'y', 'model_a'),                # ... and shown first: agree, z wins
            hand_row(7, 2, 'y', 'x', 'model_a'),
            hand_row(8, 4, 'x', 'z', 'model_a'),                # q4 x-z: a win one way, a tie the other: tie
            hand_row(9, 5, 'z', 'y', 'tie'),                    # q5 z-y: a tie both ways: tie
            hand_row(10, 4, 'z', 'x', 'tie'),
            hand_row(11, 5, 'y', 'z', 'tie'),
            hand_row(12, 6, 'y', 'z', 'model_a')]               # q6 y-z: one order only
    before = [dict(r) for r in rows]
    out = combine_orders(rows)
    assert rows == before                                  # the input is not modified
    assert out == [hand_row(1, 1, 'x', 'y', 'model_a', score_a=9, orders=2),
                   hand_row(2, 2, 'x', 'y', 'tie', orders=2),
                   hand_row(3, 3, 'y', 'z', 'model_b', orders=2),
                   hand_row(4, 1, 'x', 'z', 'model_b'),
                   hand_row(8, 4, 'x', 'z', 'tie', orders=2),
                   hand_row(9, 5, 'z', 'y', 'tie', orders=2),
                   hand_row(12, 6, 'y', 'z', 'model_a')]
    winner = lambda r: {'model_a': r['model_a'], 'model_b': r['model_b']}.get(r['verdict'])
    assert [winner(r) for r in out] == ['x', None, 'z', 'z', None, None, 'y']
    assert combine_orders([]) == [] and combine_orders(rows[:1]) == rows[:1]

def test_balanced_both_orders_cancels_position_bias(tmp_path, tourney, outputs):
    first_wins = lambda msgs: '9 2\nthe first answer is better'
    own = [dict(question_id=q, category='generic', model='bal', answer=f'本次运行的回答 {q}') for q in range(1, 11)]
    write_jsonl(outputs/'bal'/'inference'/'answers.jsonl', own)          # the run's own answers join the given sets
    with ChatServer(verdict=first_wins) as srv:
        os.environ['OPENAI_API_KEY'] = MARKER
        r = run_elo(nb_params(judge='openai', judge_base_url=srv.url, schedule='balanced', both_orders=True, rounds=0, concurrency=8,
                              bootstrap_rounds=10, permutations=5, run_name='bal', **tourney))['report']
    assert r['battles'] == 10 * 6 * 2 and r['scored_battles'] == 60 and set(r['bradley_terry']) == {'bal', 'base', 'mine', 'ref'}
    assert r['first_slot']['first_slot_win_rate'] == 1.0
    assert all(abs(v['rating'] - 1000) < 1e-3 for v in r['bradley_terry'].values())
    comb = combine_orders(read_jsonl(outputs/'bal'/'elo'/'battles.jsonl'))      # every pair split by position: all ties
    assert len(comb) == 60 and all(b['verdict'] == 'tie' and b['orders'] == 2 for b in comb)

def test_live_judge_needs_answers(outputs):
    os.environ['OPENAI_API_KEY'] = MARKER
    with pytest.raises(ValueError, match='needs answers'): run_elo(nb_params(judge='openai'))
    assert not (outputs/'demo'/'elo'/'manifest.json').exists()              # refused before anything was written

# ---- kill and resume ----

RUNNER = """
import json, sys
from anima_nb.elo import run_elo
run_elo(json.loads(sys.argv[1]))
"""

def run_child(P, env):
    return subprocess.Popen([sys.executable, '-c', RUNNER, json.dumps(P)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

@pytest.mark.slow
def test_sigkill_and_resume_gives_identical_ratings(tmp_path, tourney, outputs):
    env = {**os.environ, 'OPENAI_API_KEY': MARKER, 'ANIMA_NB_OUTPUTS': str(outputs)}
    common = dict(judge='openai', rounds=40, concurrency=4, bootstrap_rounds=20, permutations=5, **tourney)
    with ChatServer(latency=0.02) as srv:
        p = run_child(nb_params(judge_base_url=srv.url, run_name='whole', **common), env)
        assert p.wait(60) == 0, p.stderr.read().decode()[-2000:]
    whole = read_json(outputs/'whole'/'elo'/'ratings.json')
    child = {}
    def kill_at(n, body):
        if n == 15:
            srv.frozen = True                           # answer nothing more; let answers already sent reach the cache
            time.sleep(0.3); os.kill(child['p'].pid, signal.SIGKILL)
            return 'drop'
    with ChatServer(latency=0.02, on_request=kill_at) as srv:
        P = nb_params(judge_base_url=srv.url, run_name='killed', **common)
        child['p'] = run_child(P, env)
        assert child['p'].wait(60) == -signal.SIGKILL
        cached = len(read_jsonl(outputs/'killed'/'elo'/'judge_cache.jsonl', tolerate_torn_tail=True))
        assert 0 < cached < 40 and not (outputs/'killed'/'elo'/'ratings.json').exists()
        srv.frozen, srv.on_request = False, None
        p = run_child(P, env)
        assert p.wait(60) == 0, p.stderr.read().decode()[-2000:]
        assert srv.repeated_answers == 0 and sum(srv.answered.values()) == len(read_jsonl(outputs/'killed'/'elo'/'judge_cache.jsonl'))
    resumed = read_json(outputs/'killed'/'elo'/'ratings.json')
    for k in ('online_elo', 'bradley_terry', 'permuted_elo', 'first_slot'): assert resumed[k] == whole[k], k
    assert read_jsonl(outputs/'killed'/'elo'/'battles.jsonl') == read_jsonl(outputs/'whole'/'elo'/'battles.jsonl')

# ---- secrets ----

@pytest.mark.slow
def test_key_never_reaches_run_folder_or_notebook(tmp_path, tourney, outputs):
    env = {**os.environ, 'OPENAI_API_KEY': MARKER, 'ANIMA_NB_OUTPUTS': str(outputs)}
    env.pop('OPENAI_BASE_URL', None)
    out_nb = tmp_path/'out.ipynb'
    with ChatServer(faults={2: ('429', 1), 3: '500'}) as srv:
        args = ['-p', 'judge', 'openai', '-p', 'judge_base_url', srv.url, '-p', 'rounds', '12', '-p', 'bootstrap_rounds', '20',
                '-p', 'permutations', '5', '-p', 'run_name', 'secret', '-p', 'answers', tourney['answers'], '-p', 'questions', tourney['questions']]
        r = subprocess.run([sys.executable, '-m', 'papermill', str(NB), str(out_nb), *args, '--cwd', str(ROOT)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        assert srv.auth[f'Bearer {MARKER}'] == srv.requests > 12      # the key was used ...
    files = [out_nb, *[p for p in (outputs/'secret').rglob('*') if p.is_file()]]
    assert any(f.name == 'judge_cache.jsonl' for f in files)
    for f in files: assert MARKER.encode() not in f.read_bytes(), f     # ... and written nowhere
    assert MARKER not in r.stdout + r.stderr


# ---- the judge's budget ----

def test_judge_without_scores_stops_early(tmp_path, tourney, outputs):
    "A judge that never gives scores is paid for about 20 verdicts, not for the whole draw budget."
    with ChatServer(on_request=lambda n, body: 'malformed') as srv:
        os.environ['OPENAI_API_KEY'] = MARKER
        with pytest.raises(JudgeError, match=r'of \d+ verdicts had no scores .*max_unparseable.*not able to compare'):
            run_elo(nb_params(judge='openai', judge_base_url=srv.url, rounds=300, concurrency=4, run_name='mute', **tourney))
        assert 0 < srv.requests <= 24                    # not the 16,000 paid calls of the draw budget

def test_html_body_names_the_url(tmp_path):
    with ChatServer(faults={1: 'html'}) as srv:
        with pytest.raises(JudgeError, match=re.escape(srv.url) + '.*not a chat completion'):
            judge_for(srv, tmp_path).complete(MSGS[0])

def test_connection_error_names_the_url(tmp_path):
    with ChatServer() as srv: url = srv.url
    os.environ['OPENAI_API_KEY'] = MARKER
    j = OpenAIJudge(base_url=url, timeout=1.0, max_attempts=2, backoff_base=0.01, backoff_cap=0.01, seed=0)
    with pytest.raises(JudgeError, match='judge request to ' + re.escape(url)): j.complete(MSGS[0])

def test_retry_after_is_capped(tmp_path):
    waits = []
    with ChatServer(faults={1: ('429', 5000)}) as srv:
        j = judge_for(srv, tmp_path, retry_after_cap=1.5, sleep=waits.append)
        j.complete(MSGS[0])
    assert waits == [1.5]

def test_paid_requests_are_capped(tmp_path, tourney, outputs):
    with ChatServer() as srv:
        os.environ['OPENAI_API_KEY'] = MARKER
        with pytest.raises(JudgeError, match='cap of 5 paid judge requests'):
            run_elo(nb_params(judge='openai', judge_base_url=srv.url, rounds=20, concurrency=1, judge_max_requests=5,
                              run_name='capped', **tourney))
        assert srv.requests == 5

def test_key_echoed_by_the_judge_is_not_cached(tmp_path):
    with ChatServer(verdict=lambda messages: f'8 7\nAssistant 1 was better; your key is {MARKER}') as srv:
        j = judge_for(srv, tmp_path)
        j.complete(MSGS[0])
    text = (tmp_path/'cache.jsonl').read_text()
    assert MARKER not in text and '***' in text


class _FixedJudge(BaseJudge):
    "Answers every request with the same readable verdict, and counts nothing."
    def _fetch(self, messages): return {'content': '8 7', 'usage': {}}

def test_live_upstream_schedule_uses_upstream_model_order():
    "A live tournament of the four published answer sets draws the pairs and slots of upstream's `model_order`."
    qs = [dict(question_id=i + 1, question=f'q{i}', category='generic') for i in range(80)]
    names = ['anima', 'belle', 'chatgpt', 'cn_vicuna']
    answers = {(q['question_id'], m): f"{m}{q['question_id']}" for q in qs for m in names}
    order = step_params('elo', profile='anima33b')['model_order']
    assert order == 'anima,belle,cn_vicuna,chatgpt'
    models, questions = playable(qs, answers, order)
    t = upstream_tournament(questions, answers, models, _FixedJudge(), SCORE_PARSERS['fastchat'], 20, 42, 1,
                            progress=False)
    got = [(b['question_id'], b['model_a'], b['model_b']) for b in t['battles']]
    a, b, v, c = 'anima', 'belle', 'cn_vicuna', 'chatgpt'
    assert got == [(15, a, v), (36, b, a), (18, a, v), (70, a, v), (55, a, b), (12, b, a), (65, a, v), (26, c, a),
                   (58, v, a), (21, c, b), (44, a, b), (49, a, b), (45, v, a), (59, a, b), (11, v, c), (80, v, c),
                   (25, a, b), (30, v, a), (30, a, b), (36, c, v)]
    # sorting the names instead (belle, chatgpt, cn_vicuna swap indices) would pit other models on the same draws
    sorted_models, _ = playable(qs, answers, '')
    assert sorted_models == sorted(names) and sorted_models != models

def test_judge_prices_and_max_tokens(outputs):
    p = step_params('elo', profile='anima33b')
    assert p['judge_max_tokens'] == 0 and p['judge_prices'] is None       # upstream sent no max_tokens
    assert any('judge_prices' in x for x in problems({**p, 'judge_prices': [0.03]}))
    assert not any('judge_prices' in x for x in problems({**p, 'judge_prices': [0.01, 0.02]}))

def test_max_tokens_sent_only_when_set(tmp_path):
    seen = []
    def spy(n, body): seen.append(json.loads(body)); return None
    with ChatServer(on_request=spy) as srv:
        judge_for(srv, tmp_path).complete(MSGS[0])                       # the faithful judge: no max_tokens
        judge_for(srv, tmp_path, max_tokens=1024).complete(MSGS[0])      # FastChat's: 1024 (a different request)
    assert 'max_tokens' not in seen[0] and seen[1]['max_tokens'] == 1024 and len(seen) == 2

# ---- controlled for length and position ----

def test_published_lengths_match_the_reference_answers():
    "The shipped lengths are the characters of every answer in the reference file, nothing else."
    lengths = load_answer_lengths()
    ref = {}
    for r in read_jsonl(reference('anima', 'answers.jsonl')): ref.setdefault(r['model'], {})[str(r['question_id'])] = len(r['answer'])
    assert lengths == ref

def test_ratings_file_holds_length_controlled_win_rates(outputs):
    r = run_elo(nb_params(bootstrap_rounds=50, permutations=5))
    ctl = read_json(outputs/'demo'/'elo'/'ratings.json')['controlled']
    lp = ctl['length_position']
    assert ctl['battles_without_lengths'] == 0 and lp['battles'] == 215
    for m, w in lp['win_rate'].items():
        assert w['lo'] <= w['controlled'] <= w['hi'] and 0 < w['raw'] < 1
    assert lp['length']['coef'] > 2 * lp['length']['se'] > 0                 # the recorded judge prefers longer answers
    assert ctl['rank_moves']['length_position'] == {'anima': 1, 'belle': -1, 'cn_vicuna': 0, 'chatgpt': 0}
    assert {m: round(v['rating'], 1) for m, v in ctl['position']['ratings'].items()} != \
           {m: round(v['rating'], 1) for m, v in lp['ratings'].items()}

def test_length_judge_is_controlled_away_in_a_played_tournament(tmp_path, outputs):
    "A judge that mostly rewards the longer answer, and models that differ only in how much they write."
    import hashlib
    def longer_mostly_wins(msgs):
        user = msgs[1]['content']
        a1 = user.split("[The Start of Assistant 1's Answer]\n")[1].split('\n\n[The End')[0]
        a2 = user.split("[The Start of Assistant 2's Answer]\n")[1].split('\n\n[The End')[0]
        longer_first = len(a1) >= len(a2)
        right = int(hashlib.sha256(user.encode()).hexdigest(), 16) % 100 < 80      # 80%: the longer one wins
        return '8 6\nx' if longer_first == right else '6 8\nx'
    rng = random.Random(0)
    qs = [dict(question_id=i, category='generic', text=f'question {i}', translation=f'问题 {i}') for i in range(1, 41)]
    write_json(tmp_path/'qs.json', qs)
    ans = tmp_path/'lens'; ans.mkdir()
    for m, (lo, hi) in {'wordy': (40, 90), 'middle': (20, 70), 'terse': (5, 50)}.items():
        write_jsonl(ans/f'{m}.jsonl', [dict(question_id=i, answer='字' * rng.randint(lo, hi)) for i in range(1, 41)])
    with ChatServer(verdict=longer_mostly_wins) as srv:
        os.environ['OPENAI_API_KEY'] = MARKER
        rep = run_elo(nb_params(judge='openai', judge_base_url=srv.url, schedule='balanced', both_orders=False, rounds=0,
                                concurrency=8, bootstrap_rounds=50, permutations=5, run_name='lens',
                                questions=str(tmp_path/'qs.json'), answers=str(ans)))['report']
    lp = rep['controlled']['length_position']
    assert rep['controlled']['battles_without_lengths'] == 0 and lp['battles'] == 120 and not lp['separated']
    assert lp['length']['coef'] > 2 * lp['length']['se']
    spread = lambda t: max(v['rating'] for v in t.values()) - min(v['rating'] for v in t.values())
    assert spread(lp['ratings']) < 0.5 * spread(rep['bradley_terry'])
    assert rep['controlled']['ranking']['bradley_terry'] == ['wordy', 'middle', 'terse']
