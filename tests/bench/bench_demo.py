"""The demo chain end to end, as the README's first command runs it: wall time per step and peak memory.

`anima-run --profile demo` runs in a subprocess against a fresh outputs folder (no demo-model cache, as on a fresh
clone), so every step executes. While it runs, the resident memory of its whole process tree (the pipeline and the
notebook kernel of the step) is sampled every 0.2 s; the peak of that sum is the memory the chain needs at once. The
largest single process (getrusage of the children) is printed beside it. Per-step times come from the run manifest.
Targets: under 3 minutes and under 2 GB on 2 CPU cores, the demo model built and pre-trained included. It also prints
what the run shows a reader: the held-out loss from step 0 to the end, and how many of the 40 answers are Chinese text.
Run: .venv/bin/python tests/bench/bench_demo.py [--keep-cache] [--set name=value ...]
"""
import os, sys, time, tempfile, subprocess, resource, shutil, json
from pathlib import Path
import psutil

ROOT = Path(__file__).resolve().parents[2]
TARGET_S, TARGET_GB = 180, 2.0
GB = 1024**3

def tree_rss(p:psutil.Process) -> int:
    "Resident memory of `p` and all its descendants, in bytes."
    total = 0
    for q in [p, *p.children(recursive=True)]:
        try: total += q.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied): pass
    return total

def run_chain(out:Path, extra=()) -> dict:
    "Run the demo chain into `out`; return wall time, peak tree RSS and the largest child's peak RSS."
    env = {**os.environ, 'ANIMA_NB_OUTPUTS': str(out), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
    exe = Path(sys.executable).parent/'anima-run'
    cmd = ([str(exe)] if exe.exists() else [sys.executable, '-m', 'anima_nb.pipeline']) + ['--profile', 'demo', *extra]
    t0, peak = time.perf_counter(), 0
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    lines = []
    import threading
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True); reader.start()
    while proc.poll() is None:
        try: peak = max(peak, tree_rss(ps))
        except psutil.NoSuchProcess: break
        time.sleep(0.2)
    reader.join(5)
    wall = time.perf_counter() - t0
    child_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024     # Linux reports kB
    return dict(rc=proc.returncode, wall=wall, peak_tree=peak, peak_child=child_max, log=''.join(lines))

def main(argv):
    keep = '--keep-cache' in argv
    extra = [a for a in argv if a != '--keep-cache']
    out = Path(tempfile.mkdtemp(prefix='anima_bench_'))
    if keep: (out/'.cache').symlink_to(ROOT/'outputs'/'.cache', target_is_directory=True)
    r = run_chain(out, extra)
    if r['rc'] != 0:
        print(r['log'][-6000:]); print(f'chain failed (exit {r["rc"]}); outputs kept in {out}'); return 1
    m = json.loads((out/'demo'/'manifest.json').read_text())
    print(f"demo chain on {os.cpu_count()} CPU cores ({'demo model cached' if keep else 'fresh outputs: demo model built'}), "
          f"args: {' '.join(extra) or '(none)'}")
    print(f"{'step':<10} {'status':<9} {'wall s':>7}")
    for s, rec in m['steps'].items(): print(f"{s:<10} {rec['status']:<9} {rec['seconds']:>7.1f}")
    steps = sum(rec['seconds'] for rec in m['steps'].values())
    print(f"{'steps':<20}{steps:>7.1f}")
    print(f"{'total':<20}{r['wall']:>7.1f}   target < {TARGET_S} s: {'met' if r['wall'] < TARGET_S else 'MISSED'}")
    print(f"peak memory, process tree: {r['peak_tree']/GB:.2f} GB   target < {TARGET_GB} GB: {'met' if r['peak_tree']/GB < TARGET_GB else 'MISSED'}")
    print(f"peak memory, largest single process: {r['peak_child']/GB:.2f} GB")
    S = json.loads((out/'demo'/'summary.json').read_text())
    t, k = S['train'], S['answer_kinds']
    print(f"held-out loss {t['first_eval_loss']:.3f} at step 0 -> {t['final_eval_loss']:.3f} at step {t['steps']} "
          f"({100 * (t['final_eval_loss'] / t['first_eval_loss'] - 1):+.1f}%); answers: {k['chinese']} of "
          f"{S['answers']} Chinese text, {k['stopped_on_eos']} ended by </s>")
    rows = [json.loads(l) for l in (out/'demo'/'inference'/'answers.jsonl').read_text().splitlines()]
    for row in rows[:3]: print(f"  Q{row['question_id']}: {row['answer'].strip()!r} ({row['stop']})")
    pre = next((out/'.cache').glob('tiny-llama-*/pretraining.json'), None)
    if pre: print(f"demo base pre-training: {json.loads(pre.read_text())['seconds']} s")
    shutil.rmtree(out, ignore_errors=True)
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
