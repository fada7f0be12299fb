"""Pre-training schedules of the demo base side by side: each base built, the demo chain fine-tuned from it, what a reader sees.

For every schedule (optimizer steps, peak learning rate, data-order seed) a demo base is built into a folder of its own
with `models.build_demo_model` (the demo's tokenizer and architecture, one thread), then `anima-run --profile demo`
runs data -> train -> merge -> inference from it (`model_name_or_path` set to the folder) in a fresh outputs folder.
Printed per schedule: epochs over the sample text, the last pre-training loss, the pre-training time, the held-out loss
before and after fine-tuning, how many of the 40 answers are Chinese text and how many ended on `</s>`. The table under
*How long to pre-train* in `nbs/01a_models.ipynb` came from this comparison (about 2 minutes per schedule on 2 cores).
Run: .venv/bin/python tests/bench/bench_pretraining.py [--schedules 300:1e-2:0,600:3e-3:0] [--work DIR] [--out F.json]
     [anima-run args, e.g. --set max_steps=12]
"""
import sys, json, time, argparse, tempfile
from pathlib import Path
from bench_demo import run_chain      # the chain in a subprocess, as the README runs it

DEFAULT = '600:3e-3:0,400:6e-3:0,300:1e-2:0,300:1e-2:1,300:6e-3:0,250:1e-2:0'

def parse_schedules(text:str) -> list:
    "`steps:rate:seed` items, comma-separated, as dicts of `pretrain_demo_base` settings."
    out = []
    for item in text.split(','):
        steps, rate, seed = (item.split(':') + ['0'])[:3]
        out.append(dict(steps=int(steps), learning_rate=float(rate), seed=int(seed)))
    return out

def build_base(folder:Path, pretrain:dict) -> dict:
    "Build (or reuse) the demo base of one schedule in `folder`; its `pretraining.json`."
    from anima_nb.core import use_threads
    from anima_nb.models import build_demo_model, TINY_LLAMA
    if not (folder/'config.json').exists():
        use_threads(TINY_LLAMA['hidden_size'])                    # the thread policy, as `resolve_model` applies it
        tmp = folder.with_name(folder.name + '.tmp')
        build_demo_model(tmp, pretrain=pretrain)
        tmp.rename(folder)
    return json.loads((folder/'pretraining.json').read_text())

def chain_from(base:Path, outputs:Path, extra:list) -> dict:
    "Run the demo chain up to the answers from `base` (`bench_demo.run_chain`); its summary."
    r = run_chain(outputs, ['--steps', 'data,train,merge,inference', '--set', f'model_name_or_path={base}', *extra])
    if r['rc'] != 0: raise RuntimeError(f"the chain from {base} failed:\n{r['log'][-4000:]}")
    return json.loads((outputs/'demo'/'summary.json').read_text())

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--schedules', default=DEFAULT, help='steps:peak_rate:seed, comma-separated')
    ap.add_argument('--work', default=None, help='where the bases and runs go (default: a temporary folder, removed)')
    ap.add_argument('--out', default=None, help='also write the rows as JSON here')
    a, extra = ap.parse_known_args(argv)
    from anima_nb.core import cpu_name, usable_cores
    tmp = None if a.work else tempfile.TemporaryDirectory(prefix='anima-pretraining-')
    work = Path(a.work or tmp.name); work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for p in parse_schedules(a.schedules):
            name = f"{p['steps']}-{p['learning_rate']:g}-{p['seed']}"
            t0 = time.time()
            pre = build_base(work/f'base-{name}', p)
            S = chain_from(work/f'base-{name}', work/f'outputs-{name}', extra)
            rows.append(dict(**p, epochs=pre['epochs'], final_pretraining_loss=round(pre['final_loss'], 2),
                             pretraining_seconds=pre['seconds'], held_out_before=round(S['train']['first_eval_loss'], 3),
                             held_out_after=round(S['train']['final_eval_loss'], 3), chinese=S['answer_kinds']['chinese'],
                             ended_by_eos=S['answer_kinds']['stopped_on_eos'], answers=S['answers'],
                             seconds=round(time.time() - t0, 1)))
            print(f"done {name} in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    finally:
        if tmp: tmp.cleanup()
    print(f"demo base pre-training schedules on {cpu_name()}, {usable_cores()} usable cores; chain args: {extra or '(none)'}")
    print('| steps | peak rate | seed | epochs | final loss | pre-training | held-out loss, before -> after | Chinese answers | ended by </s> |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['steps']} | {r['learning_rate']:g} | {r['seed']} | {r['epochs']} | {r['final_pretraining_loss']} | "
              f"{r['pretraining_seconds']} s | {r['held_out_before']} -> {r['held_out_after']} | {r['chinese']} of "
              f"{r['answers']} | {r['ended_by_eos']} |")
    if a.out: Path(a.out).write_text(json.dumps(rows, indent=1))
    return rows

if __name__ == '__main__':
    main()
