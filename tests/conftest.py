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

def reference(*parts) -> Path:
    "A file under ../shared/reference/, or skip the test when it is absent."
    p = REFERENCE.joinpath(*parts)
    if not p.exists(): pytest.skip(f'reference file {p} is absent')
    return p

@pytest.fixture
def outputs(tmp_path, monkeypatch):
    "A fresh outputs folder for one test (the demo model cache is shared to keep tests fast)."
    out = tmp_path/'outputs'
    out.mkdir()
    cache = ROOT/'outputs'/'.cache'
    cache.mkdir(parents=True, exist_ok=True)
    (out/'.cache').symlink_to(cache, target_is_directory=True)
    monkeypatch.setenv('ANIMA_NB_OUTPUTS', str(out))
    return out
