"""Host memory of loading a 4-bit base for FSDP: peak RSS per process, two FSDP ranks against one process, side by side.

Under `layout='fsdp'` rank 0 reads and quantizes the base and the other ranks build it on the meta device and receive
only their shards (`train.load_base_per_rank`, `train.receive_shards`). This benchmark makes a LLaMA base big enough
for that to show in resident memory (random weights, the demo tokenizer; by default 16 layers of 1,024 hidden,
about 0.2e9 parameters, 0.86 GB in fp32 on disk), then trains it for one step with `anima-train`:
- one process (`layout='ddp'`, what every FSDP rank did when each read the whole base);
- FSDP over two processes on the CPU (gloo), launched with accelerate as the README launches it.
Printed and written to JSON (`--out`): each process's peak RSS just before the base is loaded and once it is loaded
(and sharded), and over the whole run (from the run's manifest), the weight bytes it read or received, and the ratio
of the memory loading added on rank 1 (and rank 0) to what it added to one process. The base is written once to `--work` (a temporary folder
by default) and kept there with `--keep`.

Run (CPU, about 2 minutes): python tests/bench/bench_fsdp_loading.py
Run (smaller, for a check): python tests/bench/bench_fsdp_loading.py --layers 2 --hidden 256 --ffn 704
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUN = dict(max_steps=1, per_device_train_batch_size=2, source_max_len=48, target_max_len=32, eval_steps=100,
           save_steps=100, eval_dataset_size=8, sample_max_new_tokens=2, optim='adamw_torch', group_by_length='False')

def make_base(folder:Path, layers:int, hidden:int, ffn:int, heads:int) -> int:
    "A random LLaMA base with the demo tokenizer in `folder`; its parameter count."
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from anima_nb.models import resolve_model, DEMO_MODEL
    demo = Path(resolve_model(DEMO_MODEL))
    cfg = LlamaConfig.from_pretrained(demo)
    cfg.update(dict(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads,
                    num_key_value_heads=heads, head_dim=hidden // heads))
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    for f in demo.iterdir():
        if f.name.startswith('tokenizer') or f.name == 'generation_config.json': shutil.copy(f, folder/f.name)
    return sum(p.numel() for p in model.parameters())

def env(outputs) -> dict:
    return {**os.environ, 'ANIMA_NB_OUTPUTS': str(outputs), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
            'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}

def train(cmd:list, outputs:Path, run_name:str, base:Path, **kw) -> dict:
    args = [a for k, v in {**RUN, **kw, 'run_name': run_name, 'model_name_or_path': str(base)}.items()
            for a in (f'--{k}', str(v))]
    t = time.perf_counter()
    r = subprocess.run([*cmd, *args], cwd=ROOT, env=env(outputs), capture_output=True, text=True, timeout=1200)
    if r.returncode: raise SystemExit(f'{run_name} failed:\n{r.stderr[-3000:]}')
    from anima_nb.core import read_manifest
    s = read_manifest(outputs/run_name/'train')['summary']
    return dict(run=run_name, seconds=round(time.perf_counter() - t, 1), processes=s['processes'],
                peak_rss_gb_loading=s['peak_rss_gb_loading_per_process'], peak_rss_gb=s['peak_rss_gb_per_process'],
                weight_bytes=s['weight_bytes_read_or_received'])

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--layers', type=int, default=16); ap.add_argument('--hidden', type=int, default=1024)
    ap.add_argument('--ffn', type=int, default=2816); ap.add_argument('--heads', type=int, default=8)
    ap.add_argument('--work'); ap.add_argument('--keep', action='store_true'); ap.add_argument('--out')
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix='fsdp_loading_'))
    base, outputs = work/'base', work/'outputs'
    outputs.mkdir(parents=True, exist_ok=True)
    cache = ROOT/'outputs'/'.cache'
    if cache.exists() and not (outputs/'.cache').exists(): (outputs/'.cache').symlink_to(cache, target_is_directory=True)
    os.environ['ANIMA_NB_OUTPUTS'] = str(outputs)
    n = make_base(base, args.layers, args.hidden, args.ffn, args.heads) if not (base/'config.json').exists() else None
    acc = str(BIN/'accelerate') if (BIN/'accelerate').exists() else 'accelerate'
    from anima_nb.train import fsdp_config_file
    one = train([sys.executable, '-m', 'anima_nb.train'], outputs, 'one', base)
    two = train([acc, 'launch', '--config_file', str(fsdp_config_file()), '--num_processes', '2', '-m', 'anima_nb.train'],
                outputs, 'fsdp2', base, layout='fsdp', per_device_train_batch_size=1)
    import torch, platform
    out = dict(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", torch=torch.__version__,
               shape=dict(layers=args.layers, hidden=args.hidden, ffn=args.ffn, heads=args.heads), parameters=n,
               checkpoint_gb=round(sum(f.stat().st_size for f in base.glob('*.safetensors')) / 1e9, 3),
               runs=[one, two], command=' '.join(sys.argv))
    added = lambda r, i: r['peak_rss_gb_loading'][i]['loaded'] - r['peak_rss_gb_loading'][i]['before']
    out['loading_rank1_vs_one_process'] = round(added(two, 1) / added(one, 0), 3)
    out['loading_rank0_vs_one_process'] = round(added(two, 0) / added(one, 0), 3)
    print(f"{out['machine']}, torch {out['torch']}; base {out['shape']}, {out['checkpoint_gb']} GB on disk")
    for r in out['runs']:
        load = ', '.join(f"{x['before']:.3f} -> {x['loaded']:.3f}" for x in r['peak_rss_gb_loading'])
        print(f"{r['run']:<6} {r['processes']} process(es): peak RSS before -> after loading {load} GB, whole run "
              f"{r['peak_rss_gb']} GB; weight bytes read or received {r['weight_bytes']}; {r['seconds']} s")
    print(f"host memory added by loading, FSDP rank 1 / one process: {out['loading_rank1_vs_one_process']}; "
          f"rank 0 / one process: {out['loading_rank0_vs_one_process']}")
    if args.out: Path(args.out).write_text(json.dumps(out, indent=2))
    if not (args.keep or args.work): shutil.rmtree(work, ignore_errors=True)
    return out

if __name__ == '__main__': main()
