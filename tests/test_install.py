"A package installed without the checkout (a wheel: what `pip install .` or a git URL installs) runs the steps."
import os, sys, shutil, subprocess, zipfile
import pytest
from conftest import ROOT, make_outputs
from anima_nb.core import read_manifest

@pytest.mark.slow
def test_wheel_runs_the_chain_without_the_checkout(tmp_path):
    "The wheel carries the step notebooks: from an empty folder, with only the wheel's package importable, the chain runs."
    src, wheel = tmp_path/'src', tmp_path/'wheel'       # a clean copy: no build/ left over from an earlier build
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns('.venv', '.git', 'outputs', 'build', '*.egg-info', '_proc',
                                                             '_docs', '__pycache__', '.pytest_cache'))
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps', '--no-build-isolation', '-q',
                        '-w', str(wheel)], cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    site = tmp_path/'site'
    with zipfile.ZipFile(next(wheel.glob('anima_nb-*.whl'))) as z: z.extractall(site)
    work = tmp_path/'work'
    out = make_outputs(work/'outputs')                       # the demo base cache, shared
    env = {k: v for k, v in os.environ.items() if k != 'ANIMA_NB_ROOT'}
    env.update(PYTHONPATH=str(site), ANIMA_NB_OUTPUTS=str(out), HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    where = subprocess.run([sys.executable, '-c', 'import anima_nb, anima_nb.core as c; print(anima_nb.__file__); '
                            'print(c.notebooks_dir())'], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    pkg, nbs = where.stdout.split()
    assert pkg.startswith(str(site)) and nbs == str(site/'anima_nb'/'notebooks'), where.stdout + where.stderr
    fast = ['--set', 'max_steps=2', '--set', 'compare_modes=false', '--set', 'bootstrap_rounds=50', '--set', 'permutations=5']
    r = subprocess.run([sys.executable, '-m', 'anima_nb.pipeline', '--profile', 'demo', '--run-name', 'w', *fast],
                       cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = read_manifest(out/'w')                                 # the whole chain, every step from the wheel's notebooks
    assert m['status'] == 'complete' and set(m['steps']) == {'data', 'train', 'merge', 'inference', 'elo'}
    assert all(st['status'] == 'complete' and st['notebook'].startswith('anima_nb/notebooks/') for st in m['steps'].values())
    assert (out/'w'/'notebooks'/'05_elo.ipynb').exists()
