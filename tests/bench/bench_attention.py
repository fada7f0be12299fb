"""Attention over one flattened optimizer step of 16 examples, four ways, forward and backward, measured side by side.

A flattened micro-batch is one row of Σ Lᵢ tokens whose examples must not see each other. What that costs depends on
the attention implementation:
- dense:       PyTorch's SDPA with the block-diagonal causal mask transformers builds from restarting position ids
               (`attn_implementation='sdpa'`): work and mask grow with (Σ Lᵢ)²;
- flex:        `torch.nn.attention.flex_attention`, compiled, with a document block mask (`attn_implementation=
               'flex_attention'`, transformers builds the mask from the same position ids): only the blocks on the
               diagonal are computed, work grows with Σ Lᵢ² (to the block size, 128);
- per-example: SDPA on each example alone, causal (the Σ Lᵢ² floor, what the examples cost one by one);
- padded:      16 rows padded to the longest example (upstream's micro-batch of 16 with padding): 16 · max Lᵢ².

The 16 lengths are a step of the length-grouped sampler drawn as `bench_anima33b_step.py` draws them (the published
quantiles of Anima's data, each part capped at 512): the longest step (`--step longest`, the first a run takes) or a
step of median tokens (`--step median`). Head dimension 128 as LLaMA's; `--heads` heads (LLaMA-33B has 52; a CPU
takes minutes at that, and the ratios between the implementations do not depend on the head count). fp32 unless
`--dtype bfloat16`. Each implementation's output is checked against per-example attention before it is timed.
The mask is built once per flattened row and shared by every layer (60 in LLaMA-33B), so its time is printed apart.
Printed and written to JSON (`--out`): median seconds of forward + backward over `--repeats` (forward only on a CPU,
where torch's flex_attention has no backward), the first call's seconds
(flex compiles there), and each implementation's time relative to the dense mask.

Run (CPU, a few minutes): python tests/bench/bench_attention.py --heads 2 --repeats 3
Run (GPU): python tests/bench/bench_attention.py --heads 52 --repeats 10 --out $OUT/attention.json
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_anima33b_step import sample_lengths, grouped_order, length_quantiles, STEP_EXAMPLES

HEAD_DIM = 128

def step_lengths(which:str, pool:int=800, max_len:int=512) -> list:
    "Token counts of the 16 examples of the longest (or a median-token) step of the length-grouped order."
    order = grouped_order(sample_lengths(pool, length_quantiles(), max_len, seed=0))
    steps = [[s + t for s, t in order[i:i + STEP_EXAMPLES]] for i in range(0, len(order) - STEP_EXAMPLES + 1, STEP_EXAMPLES)]
    steps.sort(key=sum)
    return steps[-1] if which == 'longest' else steps[len(steps) // 2]

def document_ids(lengths:list, device) -> torch.Tensor:
    "The example each token of the flattened row belongs to."
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))

def dense_mask(lengths:list, device):
    "The block-diagonal causal mask of a flattened row, dense (what transformers hands SDPA)."
    doc = document_ids(lengths, device)
    n = len(doc)
    return (doc[:, None] == doc[None, :]) & torch.ones(n, n, dtype=torch.bool, device=device).tril()

def dense(q, k, v, lengths, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

def flex_mask(lengths:list, device):
    "The document block mask of a flattened row (what transformers hands flex_attention): blocks of 128 x 128."
    from torch.nn.attention.flex_attention import create_block_mask
    doc = document_ids(lengths, device)
    def causal_document(b, h, qi, ki): return (doc[qi] == doc[ki]) & (qi >= ki)
    return create_block_mask(causal_document, None, None, len(doc), len(doc), device=device)

_FLEX = {}
def flex(q, k, v, lengths, mask):
    from torch.nn.attention.flex_attention import flex_attention
    if 'fn' not in _FLEX: _FLEX['fn'] = torch.compile(flex_attention)
    return _FLEX['fn'](q, k, v, block_mask=mask)

def per_example(q, k, v, lengths, mask=None):
    parts, start = [], 0
    for n in lengths:
        sl = slice(start, start + n); start += n
        parts.append(F.scaled_dot_product_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl], is_causal=True))
    return torch.cat(parts, dim=2)

def padded_mask(lengths:list, device):
    top = max(lengths)
    keep = torch.arange(top, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    return torch.ones(top, top, dtype=torch.bool, device=device).tril()[None, None] & keep[:, None, None, :]

def padded(q, k, v, lengths, mask):
    "16 rows padded to the longest, as a padded micro-batch computes them; the padding then dropped."
    top, rows, start = max(lengths), [], 0
    for n in lengths:
        rows.append([F.pad(t[0, :, start:start + n], (0, 0, 0, top - n)) for t in (q, k, v)]); start += n
    qb, kb, vb = (torch.stack([r[i] for r in rows]) for i in range(3))
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)
    return torch.cat([out[i, :, :n] for i, n in enumerate(lengths)], dim=1)[None]

IMPLS = {'dense': (dense, dense_mask), 'flex': (flex, flex_mask), 'per-example': (per_example, None),
         'padded': (padded, padded_mask)}

def inputs(lengths:list, heads:int, dtype, device, grad:bool, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(1, heads, sum(lengths), HEAD_DIM, generator=g, device=device, dtype=dtype).requires_grad_(grad)
            for _ in range(3)]

def timed(fn, q, k, v, lengths, mask, device, backward:bool) -> float:
    if device == 'cuda': torch.cuda.synchronize()
    t = time.perf_counter()
    if backward: fn(q, k, v, lengths, mask).float().square().mean().backward()
    else:
        with torch.no_grad(): fn(q, k, v, lengths, mask)
    if device == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--heads', type=int, default=2); ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--step', choices=('longest', 'median'), default='longest')
    ap.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
    ap.add_argument('--impls', default=','.join(IMPLS)); ap.add_argument('--out')
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.impls.split(',')]
    if bad := [n for n in names if n not in IMPLS]: ap.error(f'unknown implementation(s) {bad}: choose from {list(IMPLS)}')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and args.dtype == 'float32': torch.backends.cuda.matmul.allow_tf32 = True   # as anima33b_fast
    dtype = getattr(torch, args.dtype)
    backward = device == 'cuda'                  # torch's flex_attention has no backward on a CPU (torch 2.13)
    lengths = step_lengths(args.step)
    q, k, v = inputs(lengths, args.heads, dtype, device, backward)
    with torch.no_grad(): ref = per_example(q, k, v, lengths).float()
    out = dict(device=torch.cuda.get_device_name() if device == 'cuda' else f'cpu ({os.cpu_count()} cores)',
               torch=torch.__version__, threads=torch.get_num_threads(), dtype=args.dtype, heads=args.heads,
               head_dim=HEAD_DIM, pass_kind='forward+backward' if backward else 'forward', step=args.step, lengths=lengths, tokens=sum(lengths),
               work_ratio_dense_to_examples=round(sum(lengths) ** 2 / sum(n * n for n in lengths), 2),
               command=' '.join(sys.argv), runs=[])
    for name in names:
        fn, make_mask = IMPLS[name]
        t = time.perf_counter()
        mask = make_mask(lengths, device) if make_mask else None
        mask_secs = time.perf_counter() - t
        first = timed(fn, q, k, v, lengths, mask, device, backward)
        secs = [timed(fn, q, k, v, lengths, mask, device, backward) for _ in range(args.repeats)]
        with torch.no_grad(): err = (fn(q, k, v, lengths, mask).float() - ref).abs().max().item()
        out['runs'].append(dict(impl=name, seconds=round(statistics.median(secs), 4), first_call_seconds=round(first, 3),
                                mask_seconds=round(mask_secs, 4), max_abs_diff_vs_per_example=err))
    base = next((r['seconds'] for r in out['runs'] if r['impl'] == 'dense'), None)
    print(f"{out['device']}, torch {out['torch']}, {out['threads']} threads; {args.dtype}, {args.heads} heads x {HEAD_DIM}; "
          f"{args.step} step: {len(lengths)} examples, {out['tokens']} tokens, (Σ L)² / Σ L² = {out['work_ratio_dense_to_examples']}")
    for r in out['runs']:
        r['relative_to_dense'] = round(r['seconds'] / base, 3) if base else None
        print(f"{r['impl']:<12} {r['seconds']:9.3f} s {out['pass_kind']:<16} first call {r['first_call_seconds']:7.2f} s  mask {r['mask_seconds']:6.3f} s  "
              f"x{r['relative_to_dense']} of dense  max |diff| {r['max_abs_diff_vs_per_example']:.1e}")
    if args.out: Path(args.out).write_text(json.dumps(out, indent=2))
    return out

if __name__ == '__main__': main()
