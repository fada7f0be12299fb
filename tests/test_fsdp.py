"Past one GPU: FSDP-QLoRA on two CPU processes against one process, kill and resume, the layer split, the estimates."
import os, sys, json, subprocess, time
from pathlib import Path
import psutil, pytest
from conftest import ROOT, train_here
from anima_nb.core import step_params, run_dir, read_manifest, read_jsonl
from anima_nb import train as T, models

pytestmark = pytest.mark.slow        # torchrun and accelerate launches: minutes, not seconds

# Eight steps of four examples: two processes of two examples each under FSDP, or one process of four. The same
# sampler seed gives both the same examples per step; group_by_length is off so that the order does not depend on how
# the batch is split. torch's AdamW on both sides (FSDP replaces bitsandbytes' optimizers by it).
RUN = dict(max_steps=8, source_max_len=48, target_max_len=32, eval_steps=8, save_steps=2, eval_dataset_size=8,
           sample_max_new_tokens=2, optim='adamw_torch', group_by_length=False)
LOSS_RTOL = 1e-5            # per-step loss, relative: fp32 sums in another order across two processes
ADAPTER_ATOL = 1e-5         # LoRA weights after 8 AdamW steps at lr 1e-3 (weights of order 1e-2 to 1e-1)
ACCELERATE = str(ROOT/'.venv'/'bin'/'accelerate') if (ROOT/'.venv'/'bin'/'accelerate').exists() else 'accelerate'

def env(outputs) -> dict:
    return {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
            'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'ANIMA_NB_OUTPUTS': str(outputs)}

def args(run_name, **kw) -> list:
    return [a for k, v in {**RUN, **kw, 'run_name': run_name}.items() for a in (f'--{k}', str(v))]

def fsdp_cmd(run_name, offload=False, **kw) -> list:
    return [ACCELERATE, 'launch', '--config_file', str(T.fsdp_config_file(offload)), '--num_processes', '2',
            '-m', 'anima_nb.train', *args(run_name, **{'layout': 'fsdp', 'per_device_train_batch_size': 2, **kw})]

def run(cmd, outputs, timeout=300):
    r = subprocess.run(cmd, cwd=ROOT, env=env(outputs), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-4000:]
    return r

def adapter(outputs, run_name) -> dict:
    from safetensors.torch import load_file
    return load_file(str(outputs/run_name/'train'/'adapter'/'adapter_model.safetensors'))

def losses(outputs, run_name) -> list:
    return [r['loss'] for r in read_jsonl(outputs/run_name/'train'/'metrics.jsonl') if 'loss' in r]

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "One process of 4 examples a step; FSDP over two processes of 2, killed after its step-2 checkpoint and resumed."
    from conftest import make_outputs
    out = make_outputs(tmp_path_factory.mktemp('fsdp')/'outputs')
    t0 = time.time()
    train_here(*args('single', per_device_train_batch_size=4), outputs=out)
    ck = out/'fsdp'/'train'/'checkpoints'
    p = subprocess.Popen(fsdp_cmd('fsdp'), cwd=ROOT, env=env(out), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while not (ck/'checkpoint-2'/T.MARK).exists():
        assert p.poll() is None, 'the FSDP run ended before it could be killed'
        assert time.time() - t0 < 300
        time.sleep(0.01)
    launcher = psutil.Process(p.pid)
    tree = [*launcher.children(recursive=True), launcher]     # torchrun starts each worker in a session of its own
    for proc in tree: proc.kill()
    psutil.wait_procs(tree); p.wait()
    killed_at = sorted(c.name for c in ck.iterdir())
    run(fsdp_cmd('fsdp'), out)                                  # the same command again: it resumes
    return dict(out=out, killed_at=killed_at, seconds=time.time() - t0)

def test_each_process_holds_half_the_4bit_weights(runs):
    single = read_manifest(runs['out']/'single'/'train')['summary']['quantized_bytes']
    fsdp = read_manifest(runs['out']/'fsdp'/'train')['summary']
    held = fsdp['quantized_bytes']
    assert fsdp['layout'] == 'fsdp' and fsdp['processes'] == 2
    assert held['whole'] == single['whole'] == single['per_process'][0]     # float storage: the same bytes as uint8
    assert sum(held['per_process']) == held['whole']
    assert all(abs(h / held['whole'] - 0.5) < 0.01 for h in held['per_process']), held
    print(f"4-bit weights held per process: {held['per_process']} of {held['whole']} bytes")
    # rank 0 read the base; rank 1 built it on the meta device and received only its shards (about half of everything)
    read, whole = fsdp['weight_bytes_read_or_received'], read_manifest(runs['out']/'single'/'train')['summary']['weight_bytes_read_or_received']
    assert read[0] == whole[0] and abs(read[1] / whole[0] - 0.5) < 0.01, (read, whole)

def test_fsdp_matches_one_process(runs):
    "Per-step loss and saved adapter of the (killed and resumed) FSDP run against one process over the same examples."
    a, b = losses(runs['out'], 'single'), losses(runs['out'], 'fsdp')
    assert len(a) == len(b) == 8
    assert all(abs(x - y) <= LOSS_RTOL * abs(x) for x, y in zip(a, b)), list(zip(a, b))
    ea, eb = [[r['eval_loss'] for r in read_jsonl(runs['out']/n/'train'/'metrics.jsonl') if 'eval_loss' in r]
              for n in ('single', 'fsdp')]
    assert len(ea) == len(eb) == 2 and all(abs(x - y) <= LOSS_RTOL * x for x, y in zip(ea, eb)), (ea, eb)
    sa, sb = adapter(runs['out'], 'single'), adapter(runs['out'], 'fsdp')
    assert sa.keys() == sb.keys() and all('lora_' in k for k in sa)           # the single-device layout
    assert all(sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype for k in sa)
    diff = max((sa[k] - sb[k]).abs().max().item() for k in sa)
    assert diff <= ADAPTER_ATOL, diff
    print(f"loss: largest relative difference {max(abs(x - y) / abs(x) for x, y in zip(a, b)):.1e}; "
          f"adapter: largest absolute difference {diff:.1e}")
    assert max(v.abs().max().item() for k, v in sa.items() if 'lora_B' in k) > 100 * ADAPTER_ATOL   # it learned

def test_merge_and_inference_read_the_fsdp_adapter(runs, monkeypatch):
    monkeypatch.setenv('ANIMA_NB_OUTPUTS', str(runs['out']))
    import torch
    model, tok = models.load_adapter_model(models.train_record('fsdp'))
    ids = torch.tensor([tok('春天来了')['input_ids']])
    with torch.no_grad(): assert torch.isfinite(model(input_ids=ids).logits).all()

def test_kill_and_resume_under_fsdp(runs):
    "The FSDP run above was killed after its step-2 checkpoint and resumed: what it learned still matches one process."
    assert 'checkpoint-2' in runs['killed_at'] and 'checkpoint-8' not in runs['killed_at']
    m = read_manifest(runs['out']/'fsdp'/'train')
    assert m['status'] == 'complete' and m['summary']['resumed_from'] is not None and m['summary']['steps'] == 8
    steps = [r['step'] for r in read_jsonl(runs['out']/'fsdp'/'train'/'metrics.jsonl') if 'loss' in r]
    assert steps == list(range(1, 9))
    print(f"three runs in {runs['seconds']:.0f} s")

# ---- layer split -----------------------------------------------------------------------------------------------------
def test_layer_split_gives_the_unsplit_logits(outputs):
    "Two devices with a cap the first fills after one layer: the layers split; dispatched so, the logits are unchanged."
    import torch
    from accelerate import dispatch_model
    from accelerate.utils import compute_module_sizes
    P = step_params('train')
    base = models.load_base_model(P['model_name_or_path'], P)
    sizes = compute_module_sizes(base)
    cap = sizes['model.embed_tokens'] + sizes['model.layers.0'] + sizes['lm_head'] + 1000    # accelerate keeps room
    split = T.split_device_map(base, {0: cap, 1: 10**9})                                    # for the largest module
    assert (split['model.layers.0'], split['model.layers.1']) == (0, 1)
    tok = models.load_tokenizer(P['model_name_or_path'])
    ids = torch.tensor([tok('春天来了，花开了。')['input_ids']])
    with torch.no_grad(): whole = base(input_ids=ids).logits
    split_model = dispatch_model(base, device_map={k: 'cpu' for k in split}, force_hooks=True)
    assert any(hasattr(m, '_hf_hook') for m in split_model.modules())
    with torch.no_grad(): assert torch.equal(split_model(input_ids=ids).logits, whole)

# ---- estimates and refusals ------------------------------------------------------------------------------------------
def test_layout_estimates(outputs):
    "Per device over two cards: 33B fits 24 GB sharded or split; 70B needs offload on 24 GB, fits 40 GB sharded."
    est33 = T.estimate(step_params('train', profile='anima33b', processes=2))
    p70 = step_params('train', profile='anima70b', layout='fsdp', processes=2)
    est70 = T.estimate(p70)
    a33, a70 = est33['per_device_gb'], est70['per_device_gb']
    assert est70['devices'] == 2 and est70['layout'] == 'fsdp'
    assert 25 < a33['ddp']['gpu_gb'] < 35 and 50 < a70['ddp']['gpu_gb'] < 60
    for layout in ('fsdp', 'fsdp_offload', 'layer_split'): assert '24GB' in a33[layout]['fits'], layout
    assert '24GB' not in a70['fsdp']['fits'] and '24GB' in a70['fsdp_offload']['fits'] and '40GB' in a70['fsdp']['fits']
    assert a70['ddp']['fits'] == ['80GB'] and a70['fsdp_offload']['cpu_gb'] > a70['fsdp_offload']['gpu_gb']
    eight = T.layout_estimates(est70['memory_gb'], est70['architecture'], p70, 8)
    assert eight['fsdp']['gpu_gb'] < a70['fsdp']['gpu_gb'] and eight['ddp'] == a70['ddp']
    # host memory: rank 0 reads the whole 4-bit base (about 37 GB for 70B); the other seven receive shards on the device
    assert 30 < eight['fsdp']['cpu_gb'] < 45 and eight['fsdp']['cpu_gb_other_ranks'] < 2, eight['fsdp']
    print(f"70B over 8 ranks, host GB: rank 0 {eight['fsdp']['cpu_gb']}, each other {eight['fsdp']['cpu_gb_other_ranks']}; "
          f"33B over 2: {a33['fsdp']['cpu_gb']} / {a33['fsdp']['cpu_gb_other_ranks']}")

def test_dry_run_prints_the_layouts(outputs):
    r = subprocess.run([sys.executable, '-m', 'anima_nb.train', '--profile', 'anima65b', '--dry_run', 'true',
                        '--layout', 'fsdp', '--processes', '2'], cwd=ROOT, env=env(outputs), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'fsdp_offload' in r.stderr and '24GB' in r.stderr and 'per device over 2 devices' in r.stderr
    est = json.loads(r.stdout)
    assert 50 < est['memory_gb']['total'] < 60 and '40GB' in est['per_device_gb']['fsdp']['fits']

def test_refuses_bad_layouts(monkeypatch):
    P = step_params('train')
    assert any("layout='bogus' is not one of" in p for p in T.problems({**P, 'layout': 'bogus'}))
    assert any('bits must be 4' in p for p in T.problems({**P, 'layout': 'fsdp', 'bits': 8}))
    split = {**P, 'layout': 'layer_split'}
    assert any('is not a size' in p for p in T.problems({**split, 'max_memory_per_device': 'lots'}))
    assert any("is for layout='layer_split'" in p for p in T.problems({**P, 'max_memory_per_device': '20GiB'}))
    assert not T.problems({**P, 'layout': 'layer_split', 'max_memory_per_device': '38GiB'})
    monkeypatch.setenv('ACCELERATE_USE_FSDP', 'true')
    assert any('pass --layout fsdp' in p for p in T.problems(P))
    assert not T.problems({**P, 'dry_run': True})
    monkeypatch.setenv('ACCELERATE_USE_FSDP', 'false'); monkeypatch.setenv('WORLD_SIZE', '2')
    assert any('runs in one process' in p for p in T.problems({**P, 'layout': 'layer_split'}))
    assert any('processes=3 but 2 were launched' in p for p in T.problems({**P, 'processes': 3}))


# ---- one gradient reduction per optimizer step ------------------------------------------------------------------------
COUNTER = """
import os, json, atexit
if os.environ.get('COUNT_REDUCE_SCATTERS'):
    import torch.distributed as dist
    _calls, _orig = [0], dist.reduce_scatter_single
    def _counted(*a, **kw):
        _calls[0] += 1
        return _orig(*a, **kw)
    dist.reduce_scatter_single = _counted
    @atexit.register
    def _write():
        rank = os.environ.get('RANK')
        if rank is not None:
            with open(os.path.join(os.environ['COUNT_REDUCE_SCATTERS'], f'rank{rank}.json'), 'w') as f: json.dump(_calls[0], f)
"""

def counted_run(cmd, out, counts) -> list:
    "Run `cmd` with every `dist.reduce_scatter_single` counted; the count per rank."
    counts.mkdir(parents=True)
    (counts/'sitecustomize.py').write_text(COUNTER)
    e = {**env(out), 'PYTHONPATH': f"{counts}{os.pathsep}{ROOT}", 'COUNT_REDUCE_SCATTERS': str(counts)}
    r = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-4000:]
    return [json.loads((counts/f'rank{i}.json').read_text()) for i in range(2)]

def test_accumulation_reduces_once_per_step(tmp_path):
    "Accumulation 4 over two FSDP processes: as many reduce-scatters as accumulation 1 over the same steps, the same losses as one process; with CPU offload too."
    from conftest import make_outputs
    out = make_outputs(tmp_path/'outputs')
    steps = dict(max_steps=3, eval_steps=100, save_steps=100)
    train_here(*args('one', per_device_train_batch_size=8, **steps), outputs=out)
    every = counted_run(fsdp_cmd('acc1', per_device_train_batch_size=4, **steps), out, tmp_path/'c1')
    once = counted_run(fsdp_cmd('acc4', per_device_train_batch_size=1, gradient_accumulation_steps=4, **steps), out, tmp_path/'c4')
    offload = counted_run(fsdp_cmd('off', offload=True, per_device_train_batch_size=1, gradient_accumulation_steps=4, **steps),
                          out, tmp_path/'co')
    assert every[0] > 0 and once == every == offload, (every, once, offload)     # 4x as many without the fix
    a = losses(out, 'one')
    for name in ('acc1', 'acc4', 'off'):
        b = losses(out, name)
        assert len(a) == len(b) == 3 and all(abs(x - y) <= LOSS_RTOL * abs(x) for x, y in zip(a, b)), (name, a, b)
    print(f"reduce-scatters per rank over 3 steps: accumulation 1 {every}, accumulation 4 {once}, offloaded {offload}")
