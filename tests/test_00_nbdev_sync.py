"The notebooks are the source: cleaning them and exporting them must leave git exactly as it is."
import subprocess, shutil, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def _git_status():
    r = subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT, capture_output=True, text=True)
    if r.returncode: pytest.skip('not a git checkout')
    return r.stdout

@pytest.mark.parametrize('cmd', ['nbdev_clean', 'nbdev_export'])
def test_leaves_git_clean(cmd):
    before = _git_status()
    subprocess.run([str(BIN/cmd)], cwd=ROOT, check=True, capture_output=True)
    after = _git_status()
    assert after == before, f'{cmd} changed the checkout:\n{after}'
