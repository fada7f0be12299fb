"The modules' floors: each imports, at module level, only modules on floors below it; no step imports another step."
import ast
from pathlib import Path
import pytest
from conftest import ROOT

FLOOR = {'core': 0, 'models': 1, 'ratings': 1, 'data': 1, 'generation': 2, 'judge': 2, 'estimates': 2, 'distribution': 2,
         'train': 3, 'trainer': 3, 'merge': 3, 'export': 3, 'inference': 3, 'elo': 3, 'dpo': 3, 'benchmarks': 3,
         'pipeline': 4}
STEP_MODULES = {'train': ('trainer',), 'trainer': ('train',)}     # one step written as two modules

def imports(path:Path, top_only:bool) -> set:
    "The package modules `path` imports (at module level only, or anywhere)."
    tree = ast.parse(path.read_text(encoding='utf-8'))
    nodes = tree.body if top_only else list(ast.walk(tree))
    found = set()
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ''
            if n.level == 1: found.add(mod.split('.')[0] if mod else '')
            elif mod.startswith('anima_nb.'): found.add(mod.split('.')[1])
        elif isinstance(n, ast.Import):
            found |= {a.name.split('.')[1] for a in n.names if a.name.startswith('anima_nb.')}
    return found - {'', '_modidx'}

def test_every_test_file_has_its_turn():
    "The order the test files go out in (`conftest.ORDER`) names every test file, once."
    from conftest import ORDER
    assert sorted(ORDER) == sorted(p.name for p in (ROOT/'tests').glob('test_*.py')) and len(set(ORDER)) == len(ORDER)

def test_every_module_has_a_floor():
    assert {p.stem for p in (ROOT/'anima_nb').glob('*.py')} - {'__init__', '_modidx'} == set(FLOOR)

@pytest.mark.parametrize('mod', sorted(FLOOR))
def test_module_level_imports_go_down(mod):
    up = {m for m in imports(ROOT/'anima_nb'/f'{mod}.py', top_only=True)
          if FLOOR[m] >= FLOOR[mod] and m not in STEP_MODULES.get(mod, ())}
    assert not up, f'{mod} (floor {FLOOR[mod]}) imports {sorted(up)} at module level'

@pytest.mark.parametrize('mod', sorted(m for m, f in FLOOR.items() if f == 3))
def test_no_step_imports_another_step(mod):
    steps = {m for m in imports(ROOT/'anima_nb'/f'{mod}.py', top_only=False)
             if FLOOR.get(m) == 3 and m != mod and m not in STEP_MODULES.get(mod, ())}
    assert not steps, f'the {mod} step imports the steps {sorted(steps)}'

@pytest.mark.parametrize('args', [['--params'], ['--plan', '--run-name', 'startup-check'],
                                  ['--plan', '--profile', 'anima33b', '--steps', 'data,train,merge']])
def test_planning_imports_no_framework(args, outputs):
    "Listing parameters and planning a run (the merge's disk check included) import neither torch nor transformers."
    import subprocess, sys
    code = ("import sys, io, contextlib\nfrom anima_nb.pipeline import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): rc = main({args!r})\n"
            "print(rc, sorted(m for m in ('torch', 'transformers', 'peft', 'papermill', 'datasets') if m in sys.modules))")
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stdout.split('\n')[-2] == '0 []', r.stdout + r.stderr

from anima_nb.core import ALL_STEPS

@pytest.mark.parametrize('step', sorted(ALL_STEPS))
def test_every_step_keeps_the_contract(step):
    """Every step module answers the pipeline the same way: `problems(params)`, `preflight(params, ctx)`, `run_step`,
    `STEP_OUTPUTS`, `read_outputs(run_name)` (None for a run the step has not completed) and `KERNEL_IMPORTS`, the
    libraries its kernel is warmed with (each one installed, or the warm-up would fail and the step start cold)."""
    import importlib, importlib.util, inspect
    mod = importlib.import_module(f'anima_nb.{step}')
    assert list(inspect.signature(mod.problems).parameters) == ['params']
    assert list(inspect.signature(mod.preflight).parameters) == ['params', 'ctx']
    assert list(inspect.signature(mod.run_step).parameters)[0] == 'params'
    assert isinstance(mod.STEP_OUTPUTS, tuple) and mod.STEP_OUTPUTS
    assert list(inspect.signature(mod.read_outputs).parameters) == ['run_name'] and mod.read_outputs('no-such-run') is None
    assert isinstance(mod.KERNEL_IMPORTS, tuple) and all(importlib.util.find_spec(m) for m in mod.KERNEL_IMPORTS)

def test_pipeline_preflight_has_no_step_of_its_own():
    "The pipeline asks each step; it holds no step's special case."
    import inspect
    from anima_nb.pipeline import preflight
    src = inspect.getsource(preflight)
    assert not [s for s in ALL_STEPS if f"'{s}'" in src], src

def _directives(src:str) -> list: return [l.strip() for l in src.split('\n') if l.strip().startswith('#|')]
def _is_export(src:str) -> bool: return any(d.startswith('#| export') for d in _directives(src))

@pytest.mark.parametrize('nb', sorted(p.name for p in (ROOT/'nbs').glob('[!_]*.ipynb')))
def test_notebooks_read_as_documents(nb):
    """One definition (a function or a class) per export cell, and under each, before the next export cell, a visible
    code cell that shows or asserts what it does."""
    import json
    cells = [c for c in json.loads((ROOT/'nbs'/nb).read_text())['cells'] if c['cell_type'] == 'code']
    bad = []
    for i, c in enumerate(cells):
        src = ''.join(c['source'])
        if not _is_export(src): continue
        tree = ast.parse('\n'.join(l for l in src.split('\n') if not l.strip().startswith('#|')))
        defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        if len(defs) > 1: bad.append(f"cell {c['id']} defines {defs}")
        if not defs: continue
        after = [''.join(d['source']) for d in cells[i + 1:]]
        shown = next((s for s in after if _is_export(s) or not any(x.startswith('#| hide') for x in _directives(s))), None)
        if shown is None or _is_export(shown): bad.append(f"cell {c['id']} ({defs[0]}): nothing shows it before the next export cell")
    assert not bad, f'{nb}: ' + '; '.join(bad)
