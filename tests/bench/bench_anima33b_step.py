"""Seconds per optimizer step of the anima33b training step at full LLaMA-33B shape, three ways, measured side by side.

The model: LLaMA-33B's shape (60 layers, 6,656 hidden, 17,920 FFN, 52 heads, 32,000 vocabulary) with random weights,
built on the meta device, drawn and quantized to NF4 (double quantization) one linear layer at a time on the device,
so no full-precision copy of the model ever exists and no time goes to drawing 32e9 numbers on the CPU; LoRA r=64, alpha 16 on all seven linear modules of every layer;
gradient checkpointing; paged AdamW 32-bit (plain AdamW where bitsandbytes has no paged optimizer); clipping 0.3.
Each optimizer step takes 16 examples whose prompt and response lengths follow the data: a log-normal fitted to the
published quantiles of Anima's data (run_Amina_training.sh: q0.8..q0.98; q0.9 = 297 source / 342 target tokens), or
to the quantiles of a `profile.json` the data step wrote (`--lengths`), each capped at 512 as the profile does. The
examples come in the order training gives them (`length_order: "grouped"`): a pool of `--pool` examples ordered by
transformers' length-grouped sampler (`get_length_grouped_indices`, megabatches of 50 micro-batches of 16, sorted by
length, the longest first), cut into steps of 16. The first step is then the longest the run will take, as in a real
run; the JSON gives the tokens of the mean and of the longest step beside the seconds of both.

Configurations, all with the per-example objective (`loss_weighting='example'`, `anima_nb.train.summed_loss`):
- upstream:      batch 1 x 16, padded (nothing to pad at batch 1), fp32 compute with TF32 matmuls, fp32 LoRA;
- faithful-fast: the same numerics, the examples of a step flattened into micro-batches of `--fast-batch` (16 x 1);
- bf16-fast:     flattened as faithful-fast, bf16 compute and bf16 LoRA weights (qlora.py's --bf16).

Each configuration computes attention with the kernel training would pick (`models.attention_implementation`: on a GPU
flex_attention for flattened fp32 rows, flash-attention for flattened bf16 rows when installed, SDPA for padded rows).
Printed and written to JSON (`--out`): median seconds per optimizer step over the measured steps (after `--warmup`),
peak device memory (GPU: max allocated by torch's caching allocator, `peak_gb`, and the most the driver reported in
use after any micro-batch or optimizer step, `device_used_peak_gb`, which also counts the paged AdamW states in
managed memory; CPU: peak RSS of the process), projected hours for 10,000 steps, and the ratio
of each configuration's speed to upstream's. With `--layers`/`--hidden` smaller than the real shape the hours are
scaled by the layer count only and marked so; ratios measured at a reduced shape are not the full-depth ratios.

Run (GPU): python tests/bench/bench_anima33b_step.py --steps 3 --warmup 1 --out $OUT/bench.json
Run (tiny, CPU): python tests/bench/bench_anima33b_step.py --layers 2 --hidden 64 --ffn 128 --heads 4 --vocab 512 \
                 --max-len 24 --steps 1 --warmup 0
"""
import argparse, gc, json, math, os, resource, statistics, sys, time
import numpy as np
import torch

PUBLISHED = {'source': {0.8: 188, 0.85: 228, 0.9: 297, 0.95: 396, 0.98: 515},
             'target': {0.8: 222, 0.85: 267, 0.9: 342, 0.95: 491, 0.98: 670.28}}
CONFIGS = {'upstream': dict(batch=1, flatten=False, bf16=False),
           'faithful-fast': dict(batch=None, flatten=True, bf16=False),
           'bf16-fast': dict(batch=None, flatten=True, bf16=True)}
STEP_EXAMPLES, FULL_LAYERS, RUN_STEPS = 16, 60, 10_000

def lognormal_fit(quantiles:dict) -> tuple:
    "`(mu, sigma)` of the log-normal whose quantiles fit `{p: value}` best (least squares in log space)."
    from scipy.stats import norm
    z = np.array([norm.ppf(p) for p in quantiles]); y = np.log(np.array(list(quantiles.values()), dtype=float))
    sigma, mu = np.polyfit(z, y, 1)
    return float(mu), float(sigma)

def length_quantiles(path=None) -> dict:
    "Quantiles of source and target lengths: the published ones, or those of a data step's `profile.json`."
    if not path: return PUBLISHED
    prof = json.load(open(path))['quantiles']
    return {k: {float(q[1:]): v for q, v in prof[k].items() if q.startswith('q')} for k in ('source', 'target')}

def sample_lengths(n:int, quantiles:dict, max_len:int, seed:int) -> list:
    "`n` (source, target) token lengths drawn from the fitted log-normals, each within [2, max_len]."
    rng = np.random.default_rng(seed)
    cols = [np.exp(rng.normal(*lognormal_fit(quantiles[k]), n)) for k in ('source', 'target')]
    return [(int(min(max(s, 2), max_len)), int(min(max(t, 2), max_len))) for s, t in zip(*cols)]

def grouped_order(lengths:list, batch:int=STEP_EXAMPLES, seed:int=0) -> list:
    "`lengths` in the order of transformers' length-grouped sampler at micro-batch `batch` (the longest group first)."
    from transformers.trainer_pt_utils import get_length_grouped_indices
    idx = get_length_grouped_indices([s + t for s, t in lengths], batch, generator=torch.Generator().manual_seed(seed))
    return [lengths[i] for i in idx]

def step_tokens(lengths:list, steps:int) -> list:
    "Tokens (prompt and response) of each of the first `steps` optimizer steps of 16 examples."
    return [sum(s + t for s, t in lengths[i * STEP_EXAMPLES:(i + 1) * STEP_EXAMPLES]) for i in range(steps)]

def examples(lengths:list, vocab:int, seed:int) -> list:
    "Random token ids of the given lengths, the prompt masked out of the labels as training masks it."
    g = torch.Generator().manual_seed(seed)
    out = []
    for s, t in lengths:
        ids = torch.randint(3, vocab, (s + t,), generator=g).tolist()
        out.append({'input_ids': ids, 'labels': [-100] * s + ids[s:]})
    return out

def build_model(args, device):
    "The random NF4 model with fp32 norms and embeddings, quantized layer by layer on `device`."
    import bitsandbytes as bnb
    from transformers import LlamaConfig, LlamaForCausalLM, BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    cfg = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.heads, vocab_size=args.vocab,
                      max_position_embeddings=2048, tie_word_embeddings=False, use_cache=False)
    with torch.device('meta'): model = LlamaForCausalLM(cfg)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    model = replace_with_bnb_linear(model, modules_to_not_convert=['lm_head'], quantization_config=q)
    g = torch.Generator(device=device).manual_seed(0)    # drawn on the device: 32e9 values on a CPU take minutes
    for name, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            w = (torch.randn(mod.out_features, mod.in_features, generator=g, device=device) * 0.02).to(torch.float16)
            mod.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type='nf4', compress_statistics=True).to(device)
            del w
        else:
            for pname, p in list(mod.named_parameters(recurse=False)):
                if p.device.type == 'meta':
                    data = (torch.ones(p.shape, device=device) if 'norm' in name
                            else torch.randn(p.shape, generator=g, device=device) * 0.02)
                    setattr(mod, pname, torch.nn.Parameter(data, requires_grad=False))
    for name, buf in list(model.named_buffers()):
        if buf.device.type == 'meta':
            mod = model.get_submodule(name.rsplit('.', 1)[0]); key = name.rsplit('.', 1)[1]
            mod.register_buffer(key, torch.empty(buf.shape, dtype=buf.dtype, device=device), persistent=False)
    model.model.rotary_emb = type(model.model.rotary_emb)(cfg).to(device)     # inv_freq computed, not random
    model.is_loaded_in_4bit = True
    return model

def set_compute(model, bf16:bool):
    "Compute dtype of every 4-bit layer; TF32 for fp32 matmuls on CUDA (as upstream's qlora.py line 44)."
    import bitsandbytes as bnb
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit): m.compute_dtype = torch.bfloat16 if bf16 else torch.float32
    if torch.cuda.is_available(): torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not bf16

def with_lora(model, bf16:bool, r:int):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(42)
    pm = get_peft_model(model, LoraConfig(r=r, lora_alpha=16, lora_dropout=0.0, bias='none', task_type='CAUSAL_LM',
                                          target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj',
                                                          'up_proj', 'down_proj']))
    for n, p in pm.named_parameters():
        if 'lora_' in n: p.data = p.data.to(torch.bfloat16 if bf16 else torch.float32)
    return pm

def collate(batch:list, flatten:bool, device):
    from transformers import DataCollatorWithFlattening
    from anima_nb.train import Collator
    out = (DataCollatorWithFlattening(return_position_ids=True, separator_id=-100) if flatten else Collator(0))(batch)
    return {k: v.to(device) for k, v in out.items()}

def data_lengths(data:list) -> list:
    "(prompt, response) lengths of the examples, read back from their labels."
    return [(sum(1 for l in d['labels'] if l == -100), sum(1 for l in d['labels'] if l != -100)) for d in data]

def driver_used_gb(device) -> float|None:
    "Device memory in use as the driver counts it (every allocation: the caching allocator's, paged/managed memory, the context)."
    if device != 'cuda': return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 1e9

def peak_gb(device) -> float:
    if device == 'cuda': return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9

def run_config(model, name, conf, data, args, device) -> dict:
    "Optimizer steps of one configuration; seconds per step and peak memory."
    from anima_nb.train import summed_loss
    from anima_nb.models import attention_implementation
    batch = conf['batch'] or args.fast_batch
    attn = attention_implementation({'flatten': conf['flatten'], 'bf16': conf['bf16']}, device)   # what training picks
    model.set_attn_implementation(attn)
    set_compute(model, conf['bf16'])
    pm = with_lora(model, conf['bf16'], args.lora_r)
    params = [p for p in pm.parameters() if p.requires_grad]
    try:
        import bitsandbytes as bnb
        opt = bnb.optim.PagedAdamW32bit(params, lr=1e-4) if device == 'cuda' else torch.optim.AdamW(params, lr=1e-4)
    except Exception: opt = torch.optim.AdamW(params, lr=1e-4)
    if device == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    used = [driver_used_gb(device)]
    pm.train()
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        exs = data[step * STEP_EXAMPLES:(step + 1) * STEP_EXAMPLES]
        if device == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter(); total = 0.0
        for i in range(0, STEP_EXAMPLES, batch):
            inputs = collate(exs[i:i + batch], conf['flatten'], device)
            labels, pos = inputs.pop('labels'), inputs.get('position_ids')
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=conf['bf16']):
                logits = pm(**inputs, use_cache=False).logits
            loss = summed_loss(logits, labels, pos, 'example') / STEP_EXAMPLES
            loss.backward(); total += loss.item(); del logits, loss
            used.append(driver_used_gb(device))
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step(); used.append(driver_used_gb(device)); opt.zero_grad(set_to_none=True)
        if device == 'cuda': torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(total)
    tokens = step_tokens(data_lengths(data), args.warmup + args.steps)
    measured, longest = times[args.warmup:] or times, max(range(len(tokens)), key=tokens.__getitem__)
    res = dict(config=name, micro_batch=batch, accumulation=STEP_EXAMPLES // batch, flatten=conf['flatten'],
               compute='bf16' if conf['bf16'] else 'fp32' + ('+tf32' if device == 'cuda' else ''),
               seconds_per_step=statistics.median(measured), steps_measured=len(measured),
               tokens_per_step_mean=round(statistics.mean(tokens[args.warmup:] or tokens), 1),
               tokens_per_step_max=tokens[longest], seconds_longest_step=round(times[longest], 4),
               peak_gb=round(peak_gb(device), 2), attn_implementation=attn, loss_first_step=round(losses[0], 4))
    if device == 'cuda': res['device_used_peak_gb'] = round(max(used), 2)    # the driver's view: paged optimizer states too
    scale = FULL_LAYERS / args.layers
    res['projected_hours_10k'] = res['hours_10k'] = round(res['seconds_per_step'] * RUN_STEPS / 3600 * scale, 2)
    pm.unload(); del opt, params, pm; gc.collect()
    return res

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--layers', type=int, default=60); ap.add_argument('--hidden', type=int, default=6656)
    ap.add_argument('--ffn', type=int, default=17920); ap.add_argument('--heads', type=int, default=52)
    ap.add_argument('--vocab', type=int, default=32000); ap.add_argument('--lora-r', type=int, default=64)
    ap.add_argument('--steps', type=int, default=3, help='measured optimizer steps per configuration (median)')
    ap.add_argument('--warmup', type=int, default=1, help='optimizer steps before measuring')
    ap.add_argument('--fast-batch', type=int, default=16, help='examples per flattened micro-batch (divides 16)')
    ap.add_argument('--max-len', type=int, default=512, help='cap on prompt and on response tokens')
    ap.add_argument('--lengths', help="a data step's profile.json whose quantiles replace the published ones")
    ap.add_argument('--pool', type=int, default=800, help='examples ordered by the length-grouped sampler (>= the steps run)')
    ap.add_argument('--configs', default=','.join(CONFIGS)); ap.add_argument('--out')
    args = ap.parse_args(argv)
    if STEP_EXAMPLES % args.fast_batch: ap.error('--fast-batch must divide 16')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    names = [c.strip() for c in args.configs.split(',')]
    bad = [c for c in names if c not in CONFIGS]
    if bad: ap.error(f'unknown configuration(s) {bad}: choose from {list(CONFIGS)}')
    n = STEP_EXAMPLES * (args.warmup + args.steps)
    pool = sample_lengths(max(args.pool, n), length_quantiles(args.lengths), args.max_len, seed=0)
    lengths = grouped_order(pool)[:n]
    data = examples(lengths, args.vocab, seed=0)
    model = build_model(args, device)
    from peft import prepare_model_for_kbit_training
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={'use_reentrant': False})
    full = (args.layers, args.hidden, args.ffn, args.heads, args.vocab) == (60, 6656, 17920, 52, 32000)
    out = dict(device=torch.cuda.get_device_name() if device == 'cuda' else f'cpu ({os.cpu_count()} cores)',
               versions={m: __import__(m).__version__ for m in ('torch', 'transformers', 'peft', 'bitsandbytes')},
               shape=dict(layers=args.layers, hidden=args.hidden, ffn=args.ffn, heads=args.heads, vocab=args.vocab),
               full_shape=full, examples_per_step=STEP_EXAMPLES, mean_example_tokens=round(sum(map(sum, lengths)) / n, 1),
               length_order='grouped', pool=max(args.pool, n), tokens_per_step=step_tokens(lengths, n // STEP_EXAMPLES),
               command=' '.join(sys.argv), runs=[])
    for name in names:
        out['runs'].append(run_config(model, name, CONFIGS[name], data, args, device))
    base = next((r for r in out['runs'] if r['config'] == 'upstream'), None)
    for r in out['runs']: r['speedup_vs_upstream'] = round(base['seconds_per_step'] / r['seconds_per_step'], 2) if base else None
    note = '' if full else f'  (reduced shape: hours scaled from {args.layers} to {FULL_LAYERS} layers; ratios are not full-depth)'
    print(f"{out['device']}; {out['shape']}; {out['mean_example_tokens']} tokens per example on average{note}")
    for r in out['runs']:
        print(f"{r['config']:<14} {r['micro_batch']:>2} x {r['accumulation']:<2} {'flat' if r['flatten'] else 'padded':<6} "
              f"{r['compute']:<9} {r['seconds_per_step']:9.3f} s/step ({r['tokens_per_step_mean']:.0f} tokens; longest "
              f"{r['tokens_per_step_max']} tokens {r['seconds_longest_step']:.3f} s)  {r['attn_implementation']}  peak {r['peak_gb']:7.2f} GB"
              f"{'' if 'device_used_peak_gb' not in r else ' (driver ' + format(r['device_used_peak_gb'], '.2f') + ' GB)'}  "
              f"{r['projected_hours_10k']:9.2f} h per 10k steps  x{r['speedup_vs_upstream']} vs upstream")
    if args.out:
        with open(args.out, 'w') as f: json.dump(out, f, indent=2)
    return out

if __name__ == '__main__': main()
