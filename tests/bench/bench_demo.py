"""The demo chain end to end, as the README's first command runs it, twice: on an idle machine and with one core busy.

`anima-run --profile demo` runs in a subprocess against a fresh outputs folder (no demo-model cache, as on a fresh
clone), so every step executes. It runs twice, side by side in one invocation: once with nothing else running, once
while a busy-looping process that this script starts and stops holds one core (a second kernel, a test worker, a
browser: what a user's machine usually has). While a chain runs, the memory of its whole process tree (the pipeline,
the notebook kernel of the step, the next step's kernel starting, the pre-training processes) is sampled every 0.2 s
as proportional set size (each shared page, such as torch's libraries that every process maps, split among the
processes sharing it); the peak of that sum is the memory the chain needs at once (the plain sum of resident sizes,
which counts shared pages once per process, is printed beside it). Per-step times come from the run manifest, the demo base's build and pre-training time from the data
step's manifest. Goals on 2 cores: 120 s idle, 200 s with one core busy, 2 GB, the demo base built and pre-trained
included. It also prints what the run shows a reader (held-out loss from step 0 to the end, Chinese answers) and
whether the two runs agree exactly, as they must on one machine.
With `--warm-vs-cold` it runs the chain twice on the idle machine with the demo base cached instead: as `anima-run` runs
it (each step's kernel started and its libraries imported while the step before runs) and with `--no-warm` (each
kernel started when its step starts), and prints the ratio.
Run: .venv/bin/python tests/bench/bench_demo.py [--keep-cache] [--only idle|busy] [--warm-vs-cold] [anima-run args ...]
"""
import os, sys, time, tempfile, subprocess, resource, shutil, json, multiprocessing as mp
from pathlib import Path
import psutil

ROOT = Path(__file__).resolve().parents[2]
TARGET_S = {'idle': 120, 'one core busy': 200}
TARGET_GB = 2.0
GB = 1024**3

def tree_memory(p:psutil.Process) -> tuple:
    "`(rss, pss)` of `p` and all its descendants, in bytes: resident memory summed, and summed with each shared page split among its sharers."
    rss = pss = 0
    for q in [p, *p.children(recursive=True)]:
        try: m = q.memory_full_info(); rss += m.rss; pss += getattr(m, 'pss', m.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied): pass
    return rss, pss

def run_chain(out:Path, extra=()) -> dict:
    "Run the demo chain into `out`; return wall time, peak tree RSS and the largest child's peak RSS."
    env = {**os.environ, 'ANIMA_NB_OUTPUTS': str(out), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
    exe = Path(sys.executable).parent/'anima-run'
    cmd = ([str(exe)] if exe.exists() else [sys.executable, '-m', 'anima_nb.pipeline']) + ['--profile', 'demo', *extra]
    t0, peak, peak_rss = time.perf_counter(), 0, 0
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    lines = []
    import threading
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True); reader.start()
    while proc.poll() is None:
        try: rss, pss = tree_memory(ps); peak, peak_rss = max(peak, pss), max(peak_rss, rss)
        except psutil.NoSuchProcess: break
        time.sleep(0.2)
    reader.join(5)
    wall = time.perf_counter() - t0
    child_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024     # Linux reports kB
    return dict(rc=proc.returncode, wall=wall, peak_tree=peak, peak_rss=peak_rss, peak_child=child_max, log=''.join(lines))

def spin(stop):
    "Hold one core until `stop` is set."
    x = 0
    while not stop.is_set():
        for _ in range(100_000): x += 1

def machine_speed() -> float:
    "Seconds of one demo-base training step on one thread, measured now: how fast this machine is at the moment."
    code = ('import sys; sys.path.insert(0, "tests/bench"); from bench_threads import step_seconds; '
            'print(step_seconds(128, 1, 6))')
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    return float(r.stdout.strip().splitlines()[-1])

def one_run(condition:str, keep:bool, extra) -> dict:
    "Run the chain into a fresh outputs folder under `condition` ('one core busy' or another: idle); what it took and showed."
    out = Path(tempfile.mkdtemp(prefix='anima_bench_'))
    if keep: (out/'.cache').symlink_to(ROOT/'outputs'/'.cache', target_is_directory=True)
    stop = mp.Event()
    hog = mp.Process(target=spin, args=(stop,), daemon=True) if condition == 'one core busy' else None
    if hog: hog.start(); time.sleep(0.5)
    try:
        speed = machine_speed()
        r = run_chain(out, extra)
    finally:
        if hog: stop.set(); hog.join(5)
    if r['rc'] != 0:
        print(r['log'][-6000:]); print(f'chain failed (exit {r["rc"]}); outputs kept in {out}'); return None
    m = json.loads((out/'demo'/'manifest.json').read_text())
    r['steps'] = {s: rec['seconds'] for s, rec in m['steps'].items()}
    r['speed'] = speed
    data = json.loads((out/'demo'/'data'/'manifest.json').read_text())['runtime']
    r['built'], r['threads'] = data.get('demo_base_built'), data.get('threads')
    r['summary'] = json.loads((out/'demo'/'summary.json').read_text())
    r['answers'] = [json.loads(l) for l in (out/'demo'/'inference'/'answers.jsonl').read_text().splitlines()]
    shutil.rmtree(out, ignore_errors=True)
    return r

def same_results(a:dict, b:dict) -> bool:
    "Do two runs show the same losses, answers and ratings (times aside)?"
    def strip(s): return {k: v for k, v in s.items() if k not in ('folder', 'plots')} | {'train': {k: v for k, v in s['train'].items() if k != 'seconds'}}
    return strip(a['summary']) == strip(b['summary']) and [x['answer'] for x in a['answers']] == [x['answer'] for x in b['answers']]

def main(argv):
    compare = '--warm-vs-cold' in argv
    keep = '--keep-cache' in argv or compare
    only = argv[argv.index('--only') + 1] if '--only' in argv else None
    extra = [a for i, a in enumerate(argv) if a not in ('--keep-cache', '--warm-vs-cold', '--only') and (i == 0 or argv[i - 1] != '--only')]
    sys.path.insert(0, str(ROOT))
    from anima_nb.core import cpu_name, usable_cores
    conditions = ({'warm kernels': [], 'cold kernels': ['--no-warm']} if compare else
                  {c: [] for c in TARGET_S if only is None or only in c})
    runs = {}
    for c, more in conditions.items():
        runs[c] = one_run(c, keep, [*extra, *more])
        if runs[c] is None: return 1
    print(f"demo chain on {cpu_name()}, {usable_cores()} usable cores "
          f"({'demo model cached' if keep else 'fresh outputs: demo model built'}), args: {' '.join(extra) or '(none)'}")
    print(f"{'step':<22}" + ''.join(f"{c:>16}" for c in runs))
    for s in next(iter(runs.values()))['steps']: print(f"{s:<22}" + ''.join(f"{r['steps'][s]:>14.1f} s" for r in runs.values()))
    if not keep:
        print(f"{'  of which demo base':<22}" + ''.join(f"{(r['built'] or {}).get('seconds', 0):>14.1f} s" for r in runs.values()))
        print(f"{'  of which pre-training':<22}" + ''.join(f"{(r['built'] or {}).get('pretraining_seconds', 0):>14.1f} s" for r in runs.values()))
    print(f"{'total':<22}" + ''.join(f"{r['wall']:>14.1f} s" for r in runs.values()))
    if compare:
        w, c = runs['warm kernels']['wall'], runs['cold kernels']['wall']
        print(f"{'warm / cold':<22}{w / c:>14.2f} x   ({c - w:.1f} s saved by starting each kernel while the step before runs)")
    else:
        print(f"{'goal':<22}" + ''.join(f"{TARGET_S[c]:>12} s {'ok' if r['wall'] <= TARGET_S[c] else 'MISSED':>3}" for c, r in runs.items()))
    print(f"{'peak memory, tree':<22}" + ''.join(f"{r['peak_tree']/GB:>13.2f} GB" for r in runs.values())
          + f"   goal {TARGET_GB} GB: {'ok' if all(r['peak_tree']/GB <= TARGET_GB for r in runs.values()) else 'MISSED'}"
          + " (proportional set size)")
    print(f"{'  resident, summed':<22}" + ''.join(f"{r['peak_rss']/GB:>13.2f} GB" for r in runs.values())
          + "   (shared pages counted once per process)")
    print(f"{'speed: s per demo step':<22}" + ''.join(f"{r['speed']:>14.3f} s" for r in runs.values())
          + "   (one thread, measured just before the run: varies with the machine and its neighbours)")
    print(f"{'threads per step':<22}" + ''.join(f"{str(r['threads']):>16}" for r in runs.values()))
    r = next(iter(runs.values()))
    t, k = r['summary']['train'], r['summary']['answer_kinds']
    print(f"held-out loss {t['first_eval_loss']:.3f} at step 0 -> {t['final_eval_loss']:.3f} at step {t['steps']} "
          f"({100 * (t['final_eval_loss'] / t['first_eval_loss'] - 1):+.1f}%); answers: {k['chinese']} of "
          f"{r['summary']['answers']} Chinese text, {k['stopped_on_eos']} ended by </s>")
    for row in r['answers'][:3]: print(f"  Q{row['question_id']}: {row['answer'].strip()!r} ({row['stop']})")
    if len(runs) == 2: print(f"the two runs agree exactly: {'yes' if same_results(*runs.values()) else 'NO'}")
    return 0
if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
