"Every pipeline notebook keeps a `parameters` cell papermill can see (nbdev_clean would strip the tag if misconfigured)."
import time, os, sys
from pathlib import Path
import papermill as pm
import pytest
from conftest import ROOT

PIPELINE = sorted(p.name for p in (ROOT/'nbs').glob('0[1-5]_*.ipynb'))

@pytest.mark.parametrize('nb', PIPELINE)
def test_has_parameters(nb):
    params = pm.inspect_notebook(str(ROOT/'nbs'/nb))
    assert 'profile' in params and 'run_name' in params, f'{nb}: parameters cell missing or untagged'
    assert all(p['help'] for p in params.values()), f'{nb}: every parameter needs a # help comment'


@pytest.mark.slow
def test_papermill_copy_into_nbs_refused(tmp_path):
    "`papermill` run from inside the notebook folder must not leave an executed copy there for nbdev to export."
    import shutil, subprocess
    (tmp_path/'nbs').mkdir()
    shutil.copy(ROOT/'settings.ini', tmp_path)
    shutil.copy(ROOT/'nbs'/'05_elo.ipynb', tmp_path/'nbs')
    papermill = Path(sys.executable).with_name('papermill')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    env.pop('ANIMA_NB_ROOT', None)
    r = subprocess.run([str(papermill), '05_elo.ipynb', 'out.ipynb', '-p', 'profile', 'demo'], cwd=tmp_path/'nbs',
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1                                   # an ordinary error: no signal (143), no traceback of ours
    assert 'refusing to write the executed notebook' in r.stderr and 'nbdev_export' in r.stderr
    for _ in range(50):                                        # the copy papermill wrote as it failed goes right after
        if sorted(p.name for p in (tmp_path/'nbs').iterdir()) == ['05_elo.ipynb']: break
        time.sleep(0.1)
    assert sorted(p.name for p in (tmp_path/'nbs').iterdir()) == ['05_elo.ipynb']
    # a name nbdev skips is fine: the notebook runs (here it stops later, for lack of a run folder's answers)
    r = subprocess.run([str(papermill), '05_elo.ipynb', '_out.ipynb', '-p', 'profile', 'demo'], cwd=tmp_path/'nbs',
                       capture_output=True, text=True, env=env, timeout=300)
    assert 'refusing' not in r.stderr and (tmp_path/'nbs'/'_out.ipynb').exists()

@pytest.mark.parametrize('nb', sorted(f'{nb}.ipynb' for nb in __import__('anima_nb.core').core.ALL_STEPS.values()))
def test_schema_reads_as_papermill_does(nb):
    "The package reads each parameters cell without papermill; the reading must be papermill's, field for field."
    from anima_nb.core import read_parameters, parameters_source
    assert read_parameters(parameters_source(ROOT/'nbs'/nb)) == pm.inspect_notebook(str(ROOT/'nbs'/nb))
