"""Peak memory of preparing the training data: Python lists (the old way) against cached Arrow tables (`datasets`).

Synthetic alpaca rows whose prompt and response lengths follow the published length quantiles of Anima's data
(run_Amina_training.sh, q0.8..q0.98; one Chinese character per token, as the demo tokenizer counts them), written
to a JSON file. Each way runs in a fresh process that does what training does before its first step, and reports
its peak resident memory (ru_maxrss) and time:
- lists: `load_pairs` (every row a dict in a list), the held-out split, `encode_pairs` (token lists for every row);
- arrow: `pairs_dataset` (rows checked and written once to an Arrow table), `split_dataset`, `encode_dataset`
  (`datasets.map` into a second table), `pair_counts`; a second run in a new process finds both tables cached.

Run: python tests/bench/bench_data_memory.py [--rows 690000] [--list-rows 100000] [--out result.json]
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_anima33b_step import PUBLISHED, lognormal_fit      # the same length distribution as the step benchmark

CHARS = [chr(c) for c in range(0x4e00, 0x4e00 + 3000)]

def write_rows(path, n:int, seed=0):
    "`n` alpaca rows with lengths of the published distribution, streamed to a JSON list."
    rng = np.random.default_rng(seed)
    src = np.exp(rng.normal(*lognormal_fit(PUBLISHED['source']), n)).astype(int).clip(4, 4000)
    tgt = np.exp(rng.normal(*lognormal_fit(PUBLISHED['target']), n)).astype(int).clip(2, 4000)
    text = lambda k: ''.join(rng.choice(CHARS, k))
    with open(path, 'w', encoding='utf-8') as f:
        f.write('[')
        for i in range(n):
            row = {'instruction': text(max(src[i] - 40, 2)), 'input': '', 'output': text(tgt[i])}
            f.write(('' if i == 0 else ',\n') + json.dumps(row, ensure_ascii=False))
        f.write(']\n')

CHILD = """
import json, resource, sys, time
t0 = time.time()
from anima_nb.core import step_params
from anima_nb.models import load_tokenizer
from anima_nb import train as T, data as D
way, path, cache = sys.argv[1], sys.argv[2], sys.argv[3]
params = step_params('train', dataset=path, dataset_format='alpaca', eval_dataset_size=1)
tok = load_tokenizer(params['model_name_or_path'], params['pad_token'])
if way == 'lists':
    pairs, counts = D.load_pairs(path, 'alpaca')
    import random; idx = list(range(len(pairs))); random.Random(42).shuffle(idx)
    held = set(idx[:1]); train = [p for i, p in enumerate(pairs) if i not in held]
    ex, trunc = T.encode_pairs(train, tok, params)
    n = len(ex)
else:
    ds = D.pairs_dataset(path, 'alpaca', cache_dir=cache)
    tr, ev = T.split_dataset(ds, 1)
    enc = T.encode_dataset(tr, tok, params)
    counts = D.pair_counts(ds); n = len(enc)
print(json.dumps(dict(way=way, rows=n, seconds=round(time.time() - t0, 1),
                      peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3))))
"""

def measure(way, path, cache) -> dict:
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    r = subprocess.run([sys.executable, '-c', CHILD, way, str(path), str(cache)], capture_output=True, text=True, env=env)
    if r.returncode: raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rows', type=int, default=690_000); ap.add_argument('--list-rows', type=int, default=100_000)
    ap.add_argument('--out')
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp()
    res = []
    for n, ways in ((args.list_rows, ('lists', 'arrow')), (args.rows, ('arrow', 'arrow'))):
        path = os.path.join(work, f'rows_{n}.json'); write_rows(path, n)
        cache = os.path.join(work, f'cache_{n}')
        for way in ways:
            r = {**measure(way, path, cache), 'file_gb': round(os.path.getsize(path) / 1e9, 3)}
            res.append(r); print(json.dumps(r), flush=True)
    lists, arrow = res[0], res[1]
    print(f"{lists['rows']} rows: lists {lists['peak_rss_gb']} GB vs arrow {arrow['peak_rss_gb']} GB peak RSS "
          f"({lists['peak_rss_gb'] / arrow['peak_rss_gb']:.1f}x less); {res[2]['rows']} rows: arrow {res[2]['peak_rss_gb']} GB "
          f"first build in {res[2]['seconds']} s, {res[3]['peak_rss_gb']} GB and {res[3]['seconds']} s from the cache")
    if args.out: json.dump(res, open(args.out, 'w'), indent=2)

if __name__ == '__main__': main()
