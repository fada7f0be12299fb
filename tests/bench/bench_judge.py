"""Judge client throughput: 300 judgements against the local chat-completions server with 200 ms of latency each,
sequential vs `concurrency=16`, then a rerun on the warm cache (which should send nothing).

Run from the project root: `.venv/bin/python tests/bench/bench_judge.py [--n 300] [--latency 0.2] [--concurrency 16]`
"""
import argparse, os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from elo_server import ChatServer
from anima_nb.judge import OpenAIJudge, judge_messages

def requests(n):
    "n distinct judge requests over synthetic questions and answers."
    return [judge_messages(f'问题 {i}', f'回答甲 {i} ' * (1 + i % 7), f'回答乙 {i} ' * (1 + i % 5), ('generic', 'coding', 'math')[i % 3]) for i in range(n)]

def timed(server, cache, msgs, concurrency):
    before = server.requests
    j = OpenAIJudge(base_url=server.url, cache=cache, timeout=10, seed=0)
    t0 = time.perf_counter()
    out = j.judge_many(msgs, concurrency=concurrency, progress=False)
    return time.perf_counter() - t0, server.requests - before, out

def main(n=300, latency=0.2, concurrency=16):
    os.environ.setdefault('OPENAI_API_KEY', 'sk-local-benchmark-key')
    msgs = requests(n)
    with tempfile.TemporaryDirectory() as d, ChatServer(latency=latency, lifetime=3600) as srv:
        t_seq, r_seq, out_seq = timed(srv, Path(d)/'seq.jsonl', msgs, 1)
        t_par, r_par, out_par = timed(srv, Path(d)/'par.jsonl', msgs, concurrency)
        t_warm, r_warm, out_warm = timed(srv, Path(d)/'par.jsonl', msgs, concurrency)
    assert out_seq == out_par == out_warm
    print(f'judgements: {n}, server latency: {latency * 1000:.0f} ms')
    print(f'sequential:        {t_seq:7.2f} s  ({r_seq} requests)')
    print(f'concurrency={concurrency:<3d}    {t_par:7.2f} s  ({r_par} requests)')
    print(f'speed-up:          {t_seq / t_par:7.1f}x  (target >= 8x)')
    print(f'warm-cache rerun:  {t_warm:7.2f} s  ({r_warm} requests, target 0)')
    return dict(sequential_s=t_seq, concurrent_s=t_par, ratio=t_seq / t_par, warm_requests=r_warm)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=300); ap.add_argument('--latency', type=float, default=0.2)
    ap.add_argument('--concurrency', type=int, default=16)
    a = ap.parse_args()
    main(a.n, a.latency, a.concurrency)
