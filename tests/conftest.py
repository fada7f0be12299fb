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

# Under `-n 2 --dist loadfile` each file runs on one worker, and xdist hands the files out most tests first, which
# started a 2.5-minute file last while the other worker had nothing left. Here they go out in this order: the longest
# file first (it builds the demo base), the files that need no demo base next (the other worker runs them meanwhile),
# then the rest longest first. Seconds per file on the 2-core host from `--durations=0`, summed, in the comments.
ORDER = ['test_train.py',                                                                            # 280, builds the base
         'test_00_nbdev_sync.py', 'test_floors.py', 'test_elo.py', 'test_docs.py', 'test_parameters_tag.py',   # 70, no base
         'test_pipeline.py', 'test_bench.py', 'test_fsdp.py', 'test_01_notebooks.py',                  # 220, 145, 105, 65
         'test_export.py', 'test_install.py', 'test_merge.py', 'test_benchmarks.py', 'test_data.py',   # 45 to 20
         'test_dpo.py', 'test_inference.py', 'test_tokenizer.py']

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: runs a whole chain, a subprocess training run or a launcher; '
                                       '`pytest -m "not slow" tests` leaves these out between edits')
    if hasattr(config.option, 'loadscopereorder'): config.option.loadscopereorder = False   # xdist: keep ORDER

def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(ORDER)}
    items.sort(key=lambda item: rank.get(item.path.name, len(ORDER)))       # stable: a file's tests keep their order

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

def train_here(*args, outputs=None):
    """`python -m anima_nb.train *args` run in this process (its entry point, `anima_nb.train.main`), into `outputs` when
    given: the same code without starting Python and importing torch, transformers and peft again."""
    from unittest.mock import patch
    from anima_nb.train import main
    with patch.dict(os.environ, {'ANIMA_NB_OUTPUTS': str(outputs)} if outputs else {}): main(list(args))

@pytest.fixture
def outputs(tmp_path, monkeypatch):
    "A fresh outputs folder for one test."
    out = make_outputs(tmp_path/'outputs')
    monkeypatch.setenv('ANIMA_NB_OUTPUTS', str(out))
    return out
