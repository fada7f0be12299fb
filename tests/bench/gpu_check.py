"""The one prepared device command: every path that only a CUDA GPU exercises, at small scale, then the full-depth step.

Checks, in order, each timed and recorded whether it passes or fails (a failure does not stop the others):
- environment: the card, its memory, the versions, whether flash-attn is installed;
- demo_chain: `anima-run --profile demo` data -> train -> merge -> inference on the device (4-bit CUDA kernels, the
  profile's paged AdamW, the merge's fidelity check, batched generation), read back from the run's manifests;
- tf32: `train.set_tf32(True)` really turns TF32 on for fp32 matmuls (upstream's numerics);
- flattened_logits: the demo base under the kernel `models.attention_implementation` picks, in fp32 and in bf16
  (flash-attention when installed): a flattened row gives each example's own logits;
- flattened_training: `anima-train` on the demo run with `flatten=true`, two steps: on a GPU training's kernel for
  flattened fp32 rows is flex_attention (compiled, its backward through gradient checkpointing and the 4-bit layers);
- attention: `bench_attention.py`, the longest length-grouped step of 16 examples, dense-mask SDPA vs flex_attention
  vs per-example vs padded, forward and backward, 52 heads of 128 (LLaMA-33B's), fp32 with TF32 and bf16;
- fsdp_world_1: `torchrun --nproc_per_node 1 -m anima_nb.train --layout fsdp` (NCCL on a GPU), two steps at
  accumulation 2;
- dpo: two DPO steps on the demo run (`anima-run --steps dpo`);
- benchmark: `bench_anima33b_step.py` at LLaMA-33B's full depth (three configurations, length-grouped order).
Writes `gpu_check.json` and `gpu_check.md` (a table) to $OUT, or the working directory, with the attention and step
benchmarks' own records beside them (`gpu_check_attention_<dtype>.json`, `gpu_check_anima33b_step.json`).

Run (device, about 9 minutes): python tests/bench/gpu_check.py
Run (CPU, the same checks at tiny scale, what only CUDA has marked n/a): python tests/bench/gpu_check.py --cpu-smoke
"""
import os, sys, json, time, subprocess, tempfile, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

def _env(outputs) -> dict:
    return {**os.environ, 'ANIMA_NB_OUTPUTS': str(outputs), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
            'TOKENIZERS_PARALLELISM': 'false', 'PYTHONPATH': str(ROOT)}

def _run(cmd, outputs, timeout) -> str:
    r = subprocess.run(cmd, cwd=ROOT, env=_env(outputs), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0: raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... exit {r.returncode}: {r.stderr[-1500:]}")
    return r.stdout

def _anima_run(ctx, *args, timeout=600) -> str:
    exe = BIN/'anima-run'
    cmd = ([str(exe)] if exe.exists() else [sys.executable, '-m', 'anima_nb.pipeline'])
    return _run([*cmd, '--profile', 'demo', '--run-name', 'gpu_check', *args], ctx['outputs'], timeout)

def check_environment(ctx) -> dict:
    import importlib.util, torch, transformers, peft, bitsandbytes
    cuda = torch.cuda.is_available()
    return dict(device=torch.cuda.get_device_name() if cuda else 'cpu',
                memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
                versions={m.__name__: m.__version__ for m in (torch, transformers, peft, bitsandbytes)},
                cuda=torch.version.cuda, flash_attn=importlib.util.find_spec('flash_attn') is not None)

def check_demo_chain(ctx) -> dict:
    small = [] if ctx['cuda'] else ['--set', 'max_steps=2', '--set', 'eval_steps=2', '--set', 'save_steps=2',
                                    '--set', 'max_new_tokens=4']
    _anima_run(ctx, '--steps', 'data,train,merge,inference', *small)
    from anima_nb.core import read_manifest, run_dir
    train = read_manifest(run_dir('gpu_check', 'train'))
    merge = read_json_or_none(run_dir('gpu_check', 'merge')/'report.json')
    inf = read_manifest(run_dir('gpu_check', 'inference'))
    ok = all(m and m['status'] == 'complete' for m in (train, inf)) and merge and merge['chosen']['passed']
    if not ok: raise AssertionError(f"train {train and train['status']}, merge passed {merge and merge['chosen']['passed']}")
    s = train['summary']
    return dict(steps=s['steps'], first_loss=s['first_loss'], final_loss=s['final_loss'], train_seconds=s['seconds'],
                merge_vs_qlora=merge['chosen']['vs_qlora']['max_abs_diff'], answers=inf['summary']['answers'],
                optim=train['params']['optim'], threads=train.get('runtime', {}).get('threads'))

def read_json_or_none(p):
    return json.loads(Path(p).read_text()) if Path(p).exists() else None

def check_tf32(ctx) -> dict:
    import torch
    if not ctx['cuda']: return dict(na='TF32 exists on CUDA only')
    from anima_nb.train import set_tf32
    on = set_tf32(True)
    a = torch.randn(256, 256, device='cuda')
    exact = (a.double() @ a.double()).float()
    err_tf32 = ((a @ a) - exact).abs().max().item()
    set_tf32(False)
    err_fp32 = ((a @ a) - exact).abs().max().item()
    if not on or not err_tf32 > err_fp32: raise AssertionError(f'TF32 not in force (errors {err_tf32} vs {err_fp32})')
    return dict(allow_tf32=on, max_err_tf32=err_tf32, max_err_fp32=err_fp32)

def check_flattened_logits(ctx) -> dict:
    import torch
    from transformers import AutoModelForCausalLM
    from anima_nb.models import resolve_model, attention_implementation, DEMO_MODEL
    dev = 'cuda' if ctx['cuda'] else 'cpu'
    out = {}
    for bf16 in (False, True):
        impl = attention_implementation({'flatten': True, 'bf16': bf16}, dev)
        if ctx['cuda']: torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # exact fp32
        dtype = torch.bfloat16 if bf16 else torch.float32
        model = AutoModelForCausalLM.from_pretrained(resolve_model(DEMO_MODEL), dtype=dtype,
                                                     attn_implementation=impl).to(dev).eval()
        g = torch.Generator().manual_seed(0)
        ex = [torch.randint(3, 2000, (n,), generator=g).to(dev) for n in (7, 31, 12)]
        with torch.no_grad():
            alone = torch.cat([model(input_ids=e[None]).logits[0] for e in ex]).float()
            pos = torch.cat([torch.arange(len(e), device=dev) for e in ex])[None]
            flat = model(input_ids=torch.cat(ex)[None], position_ids=pos).logits[0].float()
        scale = alone.abs().max().item()                      # bf16 keeps about 3 significant digits
        err, tol = (alone - flat).abs().max().item(), (2e-2 * scale if bf16 else 1e-4 * max(1.0, scale))
        out['bf16' if bf16 else 'fp32'] = dict(attn_implementation=impl, max_abs_diff=err)
        if err > tol: raise AssertionError(f'{impl} in {dtype}: flattened logits differ by {err} (> {tol})')
    return out

def check_flattened_training(ctx) -> dict:
    from anima_nb.core import read_manifest, run_dir
    args = dict(flatten='true', max_steps=2, eval_steps=2, save_steps=2, sample_max_new_tokens=2,
                run_name='gpu_check_flat')
    _run([sys.executable, '-m', 'anima_nb.train', *[a for k, v in args.items() for a in (f'--{k}', str(v))]],
         ctx['outputs'], 600)
    m = read_manifest(run_dir('gpu_check_flat', 'train'))
    if m['status'] != 'complete': raise AssertionError(m.get('error'))
    est = read_json_or_none(run_dir('gpu_check_flat', 'train')/'estimate.json') or {}
    return dict(steps=m['summary']['steps'], final_loss=m['summary']['final_loss'],
                attn_implementation=est.get('attn_implementation_here'), seconds=m['summary']['seconds'])

def check_attention(ctx) -> dict:
    runs = {}
    for dtype in ('float32', 'bfloat16'):
        shape = ['--heads', '52', '--repeats', '5'] if ctx['cuda'] else ['--heads', '1', '--repeats', '1', '--step', 'median']
        out = ctx['dest']/f'gpu_check_attention_{dtype}.json'          # the benchmark's whole record, kept beside ours
        _run([sys.executable, str(ROOT/'tests'/'bench'/'bench_attention.py'), *shape, '--dtype', dtype,
              '--out', str(out)], ctx['outputs'], 600)
        res = json.loads(out.read_text())
        runs[dtype] = dict(tokens=res['tokens'], pass_kind=res['pass_kind'],
                           seconds={r['impl']: r['seconds'] for r in res['runs']},
                           relative_to_dense={r['impl']: r['relative_to_dense'] for r in res['runs']})
        if not ctx['cuda']: break                               # a CPU has no bf16 flex path worth timing
    return runs

def check_fsdp_world_1(ctx) -> dict:
    from anima_nb.train import fsdp_config_file
    from anima_nb.core import read_manifest, run_dir
    args = dict(layout='fsdp', max_steps=2, gradient_accumulation_steps=2, per_device_train_batch_size=2,
                source_max_len=48, target_max_len=32, eval_steps=2, save_steps=2, eval_dataset_size=8,
                sample_max_new_tokens=2, optim='adamw_torch', group_by_length=False, run_name='gpu_check_fsdp')
    exe = BIN/'accelerate'
    _run([str(exe) if exe.exists() else 'accelerate', 'launch', '--config_file', str(fsdp_config_file()),
          '--num_processes', '1', '-m', 'anima_nb.train', *[a for k, v in args.items() for a in (f'--{k}', str(v))]],
         ctx['outputs'], 600)
    m = read_manifest(run_dir('gpu_check_fsdp', 'train'))
    if m['status'] != 'complete': raise AssertionError(m.get('error'))
    return dict(steps=m['summary']['steps'], layout=m['summary'].get('layout'), final_loss=m['summary']['final_loss'])

def check_dpo(ctx) -> dict:
    _anima_run(ctx, '--steps', 'dpo', '--set', 'dpo_max_steps=2', '--set', 'dpo_eval_steps=2',
               '--set', 'dpo_save_steps=2')
    from anima_nb.core import read_manifest, run_dir
    m = read_manifest(run_dir('gpu_check', 'dpo'))
    if m['status'] != 'complete': raise AssertionError(m.get('error'))
    return {k: m['summary'].get(k) for k in ('steps', 'seconds')}

def check_benchmark(ctx) -> dict:
    out = ctx['dest']/'gpu_check_anima33b_step.json'                   # the benchmark's whole record, kept beside ours
    shape = [] if ctx['cuda'] else ['--layers', '2', '--hidden', '64', '--ffn', '128', '--heads', '4', '--vocab', '512',
                                    '--max-len', '24']
    _run([sys.executable, str(ROOT/'tests'/'bench'/'bench_anima33b_step.py'), *shape, '--steps', '2', '--warmup', '1',
          '--out', str(out)], ctx['outputs'], 900)
    res = json.loads(out.read_text())
    keys = ('config', 'seconds_per_step', 'tokens_per_step_mean', 'tokens_per_step_max', 'seconds_longest_step',
            'peak_gb', 'hours_10k', 'speedup_vs_upstream')
    return dict(full_shape=res['full_shape'], length_order=res['length_order'],
                runs=[{k: r[k] for k in keys} for r in res['runs']])

CHECKS = [check_environment, check_demo_chain, check_tf32, check_flattened_logits, check_flattened_training,
          check_attention, check_fsdp_world_1, check_dpo, check_benchmark]

def markdown(results:list, header:dict) -> str:
    lines = [f"gpu_check on {header['device']} ({header.get('versions', {})}), {header['when']}", '',
             '| check | result | seconds | details |', '|---|---|---|---|']
    for r in results:
        res = 'n/a' if r.get('details', {}).get('na') else ('ok' if r['ok'] else 'FAILED')
        det = r.get('error') or json.dumps(r.get('details'), ensure_ascii=False)
        lines.append(f"| {r['check']} | {res} | {r['seconds']} | {det[:300].replace('|', '/')} |")
    return '\n'.join(lines) + '\n'

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import torch
    smoke = '--cpu-smoke' in argv
    if not smoke and not torch.cuda.is_available():
        print('gpu_check: no CUDA device here; use --cpu-smoke to run the checks at tiny scale on the CPU'); return 2
    dest = Path(os.environ.get('OUT') or '.')
    dest.mkdir(parents=True, exist_ok=True)
    outputs = Path(tempfile.mkdtemp(prefix='gpu_check_'))
    if (ROOT/'outputs'/'.cache').exists() and smoke:          # the demo base, built once on this machine
        (outputs/'.cache').symlink_to(ROOT/'outputs'/'.cache', target_is_directory=True)
    os.environ['ANIMA_NB_OUTPUTS'] = str(outputs)           # the run folders are read back in this process too
    ctx = dict(cuda=torch.cuda.is_available() and not smoke, outputs=outputs, dest=dest.resolve())
    results, t_all = [], time.perf_counter()
    for check in CHECKS:
        name, t0 = check.__name__.removeprefix('check_'), time.perf_counter()
        try: rec = dict(check=name, ok=True, details=check(ctx))
        except Exception as e: rec = dict(check=name, ok=False, error=f'{type(e).__name__}: {e}', trace=traceback.format_exc()[-2000:])
        rec['seconds'] = round(time.perf_counter() - t0, 1)
        results.append(rec)
        print(f"{name:<18} {'ok' if rec['ok'] else 'FAILED'} in {rec['seconds']} s", flush=True)
    env = next((r['details'] for r in results if r['check'] == 'environment' and r['ok']), {})
    header = dict(device=env.get('device', '?'), versions=env.get('versions'), cpu_smoke=smoke,
                  when=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), seconds=round(time.perf_counter() - t_all, 1),
                  command=' '.join([Path(sys.argv[0]).name, *argv]))
    (dest/'gpu_check.json').write_text(json.dumps(dict(**header, checks=results), indent=1, ensure_ascii=False))
    (dest/'gpu_check.md').write_text(markdown(results, header))
    print(markdown(results, header))
    return 0 if all(r['ok'] for r in results) else 1

if __name__ == '__main__': sys.exit(main())
