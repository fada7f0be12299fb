"""Torch intra-op threads against model width, on an idle machine and with one core held busy, side by side in one run.

The workload is the demo base's pre-training step (and, at that size, the fine-tuning step's order of work): a
`LlamaForCausalLM` of the given width, 16 rows of 128 tokens, forward, backward and an AdamW step. For each width and
each thread count from 1 to the cores this process may use, the median seconds per step over `--steps` steps (after
two warm-up steps) is measured twice: with nothing else running, and while a busy-looping process this script starts
and stops holds one core. The ratios to one thread are what `anima_nb.core.thread_policy` is chosen from.
Run: .venv/bin/python tests/bench/bench_threads.py [--steps 8] [--widths 64,128,512,1024] [--out threads.json]
"""
import os, sys, time, json, argparse, statistics, multiprocessing as mp
from pathlib import Path

def spin(stop):
    "Hold one core until `stop` is set (what a second kernel, a test worker or a browser does to a 2-core box)."
    x = 0
    while not stop.is_set():
        for _ in range(100_000): x += 1

def step_seconds(width:int, threads:int, steps:int, layers:int=2, batch:int=16, seq:int=128) -> float:
    "Median seconds of one training step of a LLaMA of `width` with `threads` torch threads."
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=3000, hidden_size=width, intermediate_size=int(width * 2.75) // 16 * 16,
                      num_hidden_layers=layers, num_attention_heads=max(1, width // 32),
                      num_key_value_heads=max(1, width // 64), max_position_embeddings=512)
    model = LlamaForCausalLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 3000, (batch, seq))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if i >= 2: times.append(time.perf_counter() - t0)
    return statistics.median(times)

def measure(widths, thread_counts, steps, busy:bool) -> dict:
    "seconds per step for every (width, threads), with one core held busy or not."
    stop = mp.Event()
    hog = mp.Process(target=spin, args=(stop,), daemon=True) if busy else None
    if hog: hog.start(); time.sleep(0.5)
    try: return {w: {n: step_seconds(w, n, steps) for n in thread_counts} for w in widths}
    finally:
        if hog: stop.set(); hog.join(5)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=8, help='timed steps per cell (after 2 warm-up steps)')
    ap.add_argument('--widths', default='64,128,512,1024', help='hidden sizes, comma-separated (128: the demo model)')
    ap.add_argument('--out', default=None, help='also write the figures as JSON here')
    a = ap.parse_args(argv)
    import torch
    from anima_nb.core import usable_cores, cpu_name, thread_policy
    cores = usable_cores()
    widths = [int(w) for w in a.widths.split(',')]
    counts = sorted({1, *range(2, cores + 1)})
    res = {'idle': measure(widths, counts, a.steps, busy=False), 'one core busy': measure(widths, counts, a.steps, busy=True)}
    print(f"{cpu_name()}, {cores} usable cores, torch {torch.__version__}; 16 x 128 tokens, 2 layers, AdamW, "
          f"median of {a.steps} steps")
    head = ' | '.join(f'{n} thr {c}' for c in res for n in counts)
    print(f"| hidden | {head} | policy |")
    print('|---' * (1 + len(counts) * len(res) + 1) + '|')
    for w in widths:
        cells = []
        for c in res:
            base = res[c][w][1]
            cells += [f"{res[c][w][n]:.3f} s" + ('' if n == 1 else f" (x{res[c][w][n] / base:.2f})") for n in counts]
        print(f"| {w} | {' | '.join(cells)} | {thread_policy(w, cores)[0]} |")
    if a.out:
        Path(a.out).write_text(json.dumps(dict(cpu=cpu_name(), cores=cores, torch=torch.__version__, steps=a.steps,
                                               seconds_per_step={c: {str(w): {str(n): s for n, s in v.items()}
                                                                     for w, v in r.items()} for c, r in res.items()},
                                               policy={str(w): thread_policy(w, cores)[0] for w in widths}), indent=1))
    return 0

if __name__ == '__main__': sys.exit(main())
