"Kill anywhere: the demo chain SIGKILLed at seeded random moments of every step, rerun with the same command."
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import ROOT
from anima_nb.core import read_json, LEFTOVERS
from anima_nb.pipeline import CHAIN

BIN = Path(sys.executable).parent
FAST = ['--set', 'max_steps=4', '--set', 'save_steps=2', '--set', 'compare_modes=false', '--set', 'bootstrap_rounds=200',
        '--set', 'permutations=20']
KILL_WITHIN = {'data': 4.0, 'train': 10.0, 'merge': 6.0, 'inference': 6.0, 'elo': 3.0}   # seconds into the step, at most
KILLS = ['data', 'train', 'train', 'merge', 'inference', 'elo']                          # training twice: it costs most

def command(run):
    exe = [str(BIN/'anima-run')] if (BIN/'anima-run').exists() else [sys.executable, '-m', 'anima_nb.pipeline']
    return exe + ['--profile', 'demo', '--run-name', run, *FAST]

def comparable(summary:dict) -> dict:
    "A run's summary without what differs between two runs of the same work: its name and times (paths are relative)."
    s = json.loads(json.dumps(summary))
    s.pop('run'); s.pop('folder'); s['train'].pop('seconds')
    return s

def running(outputs, run, step) -> bool:
    try: return read_json(outputs/run/'manifest.json')['steps'][step]['status'] == 'running'
    except (OSError, ValueError, KeyError): return False

def leftovers(folder) -> list:
    return sorted(str(p) for pat in LEFTOVERS + ('.lock',) for p in Path(folder).rglob(pat))

@pytest.mark.slow
def test_kill_anywhere_then_rerun(outputs):
    "One run killed in every step in turn (training twice), each time rerun with the same command; then it completes."
    ref = subprocess.run(command('whole'), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    rng, killed = random.Random(42), []
    for step in KILLS:
        p = subprocess.Popen(command('killed'), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        t0 = time.time()
        while not running(outputs, 'killed', step):
            assert p.poll() is None, f'the run ended before {step} started'
            assert time.time() - t0 < 300
            time.sleep(0.05)
        time.sleep(rng.uniform(0, KILL_WITHIN[step]))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL); p.wait(); killed.append(step)
    final = subprocess.run(command('killed'), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert comparable(read_json(outputs/'killed'/'summary.json')) == comparable(read_json(outputs/'whole'/'summary.json'))
    assert leftovers(outputs/'killed') == [], leftovers(outputs/'killed')
    print(f'kill points: {len(KILLS)} tried, {len(killed)} killed mid-step ({", ".join(killed)}), all survived: the '
          f'final summary equals the uninterrupted run\'s, 0 files left behind')
    assert len(killed) >= len(KILLS) - 1                 # the seeded moments fall inside the steps
