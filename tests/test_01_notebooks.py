"Every notebook in nbs/ runs top to bottom under nbdev's test runner: one pytest result per notebook."
import os
from pathlib import Path
import pytest
import nbdev.test as nbt

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('[!_]*.ipynb'))

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook(nb, outputs, monkeypatch):
    monkeypatch.chdir(ROOT/'nbs')
    monkeypatch.setenv('IN_TEST', '1')   # test_nb sets it for good; set here, it is removed after the notebook
    ok, secs = nbt.test_nb(ROOT/'nbs'/nb, skip_flags=['notest', 'slow', 'gpu'], force_flags=[], do_print=False, basepath=ROOT)
    assert ok, f'{nb} failed under nbdev_test'
