"""Start-up cost of the commands a user types before anything runs: `anima-run --params` and `anima-run --plan`,
side by side with `python -c "import torch"`, each timed `--repeats` times in alternation (median seconds, then the
ratio to torch's import). The goal: both within 2.5x of importing torch on the same machine, in the same run.

Run from the project root: `.venv/bin/python tests/bench/bench_startup.py [--repeats 5]`
"""
import argparse, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {'import torch': [sys.executable, '-c', 'import torch'],
            'anima-run --params': [sys.executable, '-m', 'anima_nb.pipeline', '--params'],
            'anima-run --plan': [sys.executable, '-m', 'anima_nb.pipeline', '--plan', '--run-name', 'bench-startup']}

def timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0

def main(repeats=5, goal=2.5):
    times = {k: [] for k in COMMANDS}
    for _ in range(repeats):                       # alternate, so a slow moment of the machine hits every command
        for k, cmd in COMMANDS.items(): times[k].append(timed(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med['import torch']
    print(f"{'command':<22} {'median s':>9} {'x import torch':>15}")
    for k, v in med.items(): print(f"{k:<22} {v:>9.2f} {v / base:>15.2f}")
    worst = max(med[k] / base for k in COMMANDS if k != 'import torch')
    print(f"worst ratio {worst:.2f} (goal <= {goal}): {'met' if worst <= goal else 'MISSED'}")
    return 0 if worst <= goal else 1

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeats', type=int, default=5)
    sys.exit(main(ap.parse_args().repeats))
