"Shared test fixtures: offline hub access, a private outputs folder, the reference data when present."
import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent/'shared'/'reference'

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_NO_ADVISORY_WARNINGS', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: runs a whole chain, a subprocess training run or a launcher; '
                                       '`pytest -m "not slow" tests` leaves these out between edits')

def reference(*parts) -> Path:
    "A file under ../shared/reference/, or skip the test when it is absent."
    p = REFERENCE.joinpath(*parts)
    if not p.exists(): pytest.skip(f'reference file {p} is absent')
    return p

def make_outputs(out:Path) -> Path:
    "An empty outputs folder at `out` that shares the demo model cache (built once, kept fast)."
    out.mkdir(parents=True, exist_ok=True)
    cache = ROOT/'outputs'/'.cache'
    cache.mkdir(parents=True, exist_ok=True)
    (out/'.cache').symlink_to(cache, target_is_directory=True)
    return out

@pytest.fixture
def outputs(tmp_path, monkeypatch):
    "A fresh outputs folder for one test."
    out = make_outputs(tmp_path/'outputs')
    monkeypatch.setenv('ANIMA_NB_OUTPUTS', str(out))
    return out
