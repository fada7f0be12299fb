"Every pipeline notebook keeps a `parameters` cell papermill can see (nbdev_clean would strip the tag if misconfigured)."
import papermill as pm
import pytest
from conftest import ROOT

PIPELINE = sorted(p.name for p in (ROOT/'nbs').glob('0[1-5]_*.ipynb'))

@pytest.mark.parametrize('nb', PIPELINE)
def test_has_parameters(nb):
    params = pm.inspect_notebook(str(ROOT/'nbs'/nb))
    assert 'profile' in params and 'run_name' in params, f'{nb}: parameters cell missing or untagged'
    assert all(p['help'] for p in params.values()), f'{nb}: every parameter needs a # help comment'
