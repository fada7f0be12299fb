"""Length profiling, the upstream way against the project's way, on the same 50,000 rows in one run.

Upstream: one `tokenizer.encode` per row inside a non-batched `datasets.Dataset.map`.
Here: `anima_nb.data.pair_lengths`: distinct lines tokenized once, in offset-free batches of the Rust tokenizer.
The rows are sample sentences recombined at random, so no target line repeats: only the template's lines do.
Run: .venv/bin/python tests/bench/bench_profile.py [rows]
"""
import os, sys, time, tempfile
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('ANIMA_NB_OUTPUTS', tempfile.mkdtemp())
import numpy as np, datasets
from transformers import AutoTokenizer
from anima_nb.core import resolve_path, read_json
from anima_nb.models import resolve_model, DEMO_MODEL
from anima_nb.data import pair_lengths

def upstream(pairs, tok):
    ds = datasets.Dataset.from_list(pairs)
    ds = ds.map(lambda x: {'source_len': len(tok.encode(x['source'])), 'target_len': len(tok.encode(x['target']))},
                load_from_cache_file=False, keep_in_memory=True)
    return np.array(ds['source_len']), np.array(ds['target_len'])

def synthetic_pairs(n, seed=0):
    "n alpaca rows whose lines do not repeat: sentences of the sample data recombined at random."
    import random, re
    from anima_nb.data import alpaca_prompt
    rows = read_json(resolve_path('pkg:sample_instructions.json'))
    sents = [s for r in rows for s in re.split(r'(?<=[。！？])', r['output']) if s.strip()]
    rng = random.Random(seed)
    def text(k): return '\n'.join(''.join(rng.choices(sents, k=rng.randint(1, 4))) for _ in range(k))
    return [{'source': alpaca_prompt(text(1), text(1) if rng.random() < .3 else ''), 'target': text(rng.randint(1, 5))}
            for _ in range(n)]

def main(n=50_000):
    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(resolve_model(DEMO_MODEL))
    pairs = synthetic_pairs(n)
    t0 = time.perf_counter(); up_s, up_t = upstream(pairs, tok); t_up = time.perf_counter() - t0
    t0 = time.perf_counter(); L = pair_lengths(pairs, tok); t_ours = time.perf_counter() - t0
    same = bool((L['source'] == up_s).all() and (L['target'] == up_t).all())   # encode() adds bos, we count bos/eos: +1 either way
    print(f'rows: {n}, cores: {os.cpu_count()}')
    print(f'upstream (per-row encode in Dataset.map): {t_up:8.2f} s')
    print(f'anima_nb (batched fast tokenizer):         {t_ours:8.2f} s')
    print(f'speed-up: {t_up / t_ours:.1f}x  (lengths identical: {same})')

if __name__ == '__main__': main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
