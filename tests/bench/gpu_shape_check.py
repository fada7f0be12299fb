"""Real-shape QLoRA check on a CUDA GPU: a few decoder layers with LLaMA-33B dimensions, random weights.

NF4 with double quantization, LoRA r=64 on all seven linear modules, gradient checkpointing, paged AdamW 32-bit,
batch 1, 1024 tokens (512 + 512), as the anima33b profile trains. Prints seconds per step and peak GPU memory
beside the project's estimate (`anima_nb.estimates.memory_estimate`) for the same shape, in fp32 compute (the faithful
setting) and bf16. Each compute mode runs in its own process and writes gpu_shape_check_<mode>.json to $OUT (or the working directory).
Run: python tests/bench/gpu_shape_check.py [layers] [steps]      (--smoke: tiny dims on CPU, to test the script)
"""
import os, sys, json, time, gc, tempfile
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from anima_nb.core import load_profile, step_params
from anima_nb.models import load_base_model, add_lora
from anima_nb.estimates import counted_params, memory_estimate, meta_model

def make_checkpoint(arch, path, device):
    "A random LLaMA of `arch` saved in fp16, as a hub checkpoint would be."
    with torch.device(device): m = LlamaForCausalLM(LlamaConfig(**arch)).half()
    m.save_pretrained(path); del m; gc.collect()
    if device == 'cuda': torch.cuda.empty_cache()

def run(path, arch, P, steps, device, seq):
    if device == 'cuda': torch.cuda.reset_peak_memory_stats()
    model = add_lora(load_base_model(path, P), P)
    counts = counted_params(meta_model(LlamaConfig(**arch), P))   # a 4-bit weight's numel counts packed bytes: count on meta
    loaded = torch.cuda.max_memory_allocated() / 1e9 if device == 'cuda' else None
    import bitsandbytes as bnb
    params = [p for p in model.parameters() if p.requires_grad]
    opt = bnb.optim.PagedAdamW32bit(params, lr=1e-4) if device == 'cuda' else torch.optim.AdamW(params, lr=1e-4)
    x = torch.randint(3, arch['vocab_size'], (1, seq), device=device)
    times = []
    model.train()
    for _ in range(steps):
        if device == 'cuda': torch.cuda.synchronize()
        t = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, P['max_grad_norm'])
        opt.step(); opt.zero_grad(set_to_none=True)
        if device == 'cuda': torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == 'cuda' else None
    est = memory_estimate(counts, arch, P)
    del model, opt; gc.collect()
    if device == 'cuda': torch.cuda.empty_cache()
    warm = times[2:] or times
    return dict(compute='bf16' if P['bf16'] else 'fp32', seconds_per_step=round(sum(warm) / len(warm), 3),
                first_step_s=round(times[0], 2), loss=float(loss.detach()), peak_gb=peak and round(peak, 2),
                after_load_gb=loaded and round(loaded, 2), estimate_gb=est, params=counts)

def main(argv):
    smoke = '--smoke' in argv; argv = [a for a in argv if not a.startswith('--')]
    layers = int(argv[0]) if argv else 4; steps = int(argv[1]) if len(argv) > 1 else 10
    device = 'cpu' if smoke else 'cuda'
    arch = {**load_profile('anima33b')['architecture'], 'num_hidden_layers': layers}
    if smoke: arch.update(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=4, vocab_size=512)
    seq = 64 if smoke else 1024
    P = step_params('train', profile='anima33b', max_steps=steps)
    if smoke: P.update(source_max_len=32, target_max_len=32)
    path = tempfile.mkdtemp(dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    make_checkpoint(arch, path, device)
    out = dict(device=torch.cuda.get_device_name() if device == 'cuda' else 'cpu', layers=layers, seq=seq, batch=1,
               lora_r=P['lora_r'], torch=torch.__version__, runs=[])
    modes = [m for m in ('fp32', 'bf16') if f'--only={m}' in sys.argv] or ['fp32', 'bf16']
    if len(modes) > 1:          # each compute mode in its own process, so neither sees the other's memory
        import subprocess
        for m in modes: subprocess.run([sys.executable, __file__, *argv, *(['--smoke'] if smoke else []), f'--only={m}'], check=True)
        return
    for mode in modes:
        r = run(path, arch, {**P, 'bf16': mode == 'bf16'}, steps, device, seq)
        out['runs'].append(r)
        e = r['estimate_gb']
        print(f"{r['compute']}: {r['seconds_per_step']} s/step, peak {r['peak_gb']} GB (after load {r['after_load_gb']} GB); "
              f"estimate {e['total']} GB (weights {e['quantized_weights'] + e['quantization_constants'] + e['other_weights']:.2f}, "
              f"LoRA+grads+optimizer {e['lora_weights'] + e['lora_gradients'] + e['optimizer_states']:.2f}, "
              f"activations {e['checkpointed_activations'] + e['layer_activations'] + e['logits']:.2f})", flush=True)
    dest = os.path.join(os.environ.get('OUT', '.'), f'gpu_shape_check_{modes[0]}.json')
    with open(dest, 'w') as f: json.dump(out, f, indent=2)
    return out

if __name__ == '__main__': main(sys.argv[1:])
