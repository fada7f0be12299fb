"Shared test fixtures: offline hub access, a private outputs folder, the reference data when present."
import os, sys, subprocess
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
    if getattr(config.option, 'numprocesses', None) and not hasattr(config, 'workerinput'):   # the xdist controller
        config.option.loadscopereorder = False          # hand out the files in `pytest_collection_modifyitems`' order
        config._demo_base_builder = build_demo_base_aside()

def pytest_unconfigure(config):
    p = getattr(config, '_demo_base_builder', None)
    if p is not None and p.poll() is None: p.terminate(); p.wait(30)        # an interrupted session: the next one rebuilds

def build_demo_base_aside():
    """Start building the demo base in a process of its own, unless it is built: the files that need no model run meanwhile.

    Tests that need it wait on the build's lock, as they would wait on a test that started it; a failed build leaves the
    first such test to build it and report why."""
    from anima_nb.models import demo_model_dir
    if (ROOT/'outputs'/'.cache'/demo_model_dir().name/'config.json').exists(): return None
    env = {**os.environ, 'ANIMA_NB_OUTPUTS': str(ROOT/'outputs')}
    return subprocess.Popen([sys.executable, '-c', 'from anima_nb.models import resolve_model, DEMO_MODEL; '
                             'resolve_model(DEMO_MODEL)'], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

# Seconds each file took in a run of the whole suite on 2 cores (`--durations=0`, summed per file). Under
# `-n 2 --dist loadfile` the files go out in this order: first those that need no demo base (they run while it is
# built), then the rest longest first, so that no long file starts last while the other worker has nothing to do.
NO_MODEL = ['test_00_nbdev_sync.py', 'test_floors.py', 'test_elo.py', 'test_docs.py', 'test_parameters_tag.py']
SECONDS = {'test_train.py': 329, 'test_bench.py': 262, 'test_faults.py': 178, 'test_pipeline.py': 160, 'test_fsdp.py': 120,
           'test_01_notebooks.py': 81, 'test_export.py': 53, 'test_merge.py': 48, 'test_install.py': 44,
           'test_inference.py': 26, 'test_data.py': 26, 'test_benchmarks.py': 24, 'test_dpo.py': 16, 'test_tokenizer.py': 1}

def pytest_collection_modifyitems(config, items):
    def key(item):
        name = item.path.name
        return (name not in NO_MODEL, NO_MODEL.index(name) if name in NO_MODEL else -SECONDS.get(name, 60), name)
    items.sort(key=key)                                  # stable: the tests of a file keep their order

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
