"The docs site's sources: every notebook renders to HTML, the Quarto config and sidebar hold together, README and index agree."
import json, re, subprocess, sys
from pathlib import Path
import pytest, yaml
from conftest import ROOT

NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p.name for p in NBS.glob('[!_]*.ipynb'))
BIN = Path(sys.executable).parent

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook_renders_to_html(nb):
    from nbconvert import HTMLExporter
    html, _ = HTMLExporter().from_filename(str(NBS/nb))
    assert '<html' in html and len(html) > 1000

def test_nbconvert_command_renders_all(tmp_path):
    r = subprocess.run([str(BIN/'jupyter-nbconvert'), '--to', 'html', '--output-dir', str(tmp_path), *map(str, (NBS/n for n in NOTEBOOKS))],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob('*.html')) == sorted(n.replace('.ipynb', '.html') for n in NOTEBOOKS)

def test_quarto_config():
    q = yaml.safe_load((NBS/'_quarto.yml').read_text())
    assert q['project']['type'] == 'website'
    assert {'nbdev.yml', 'sidebar.yml'} <= set(q['metadata-files'])
    assert (NBS/q['format']['html']['css']).exists()

def test_sidebar_lists_every_notebook():
    side = yaml.safe_load((NBS/'sidebar.yml').read_text())['website']['sidebar']['contents']
    assert side[0] == 'index.ipynb' and sorted(side) == NOTEBOOKS

def test_deploy_workflow_renders_and_publishes():
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/'deploy.yaml').read_text())
    steps = [s for job in wf['jobs'].values() for s in job['steps']]
    text = json.dumps(steps)
    assert 'quarto-dev/quarto-actions/setup' in text and 'nbdev_docs' in text and '_docs' in text

def _words(md:str) -> str: return ' '.join(md.split())

def test_index_carries_the_readme_opening():
    "index.ipynb's text before its first section is README.md up to its Quick start (kept in step by hand: Quarto renders the README)."
    idx = json.loads((NBS/'index.ipynb').read_text())
    md = [''.join(c['source']) for c in idx['cells'] if c['cell_type'] == 'markdown']
    first = ' '.join(md[:next(i for i, t in enumerate(md) if t.startswith('## '))])      # cells before the first section
    readme = (ROOT/'README.md').read_text()
    assert '## Quick start' in readme
    assert _words(first) == _words(readme[:readme.index('## Quick start')])

def test_readme_commands():
    readme = (ROOT/'README.md').read_text()
    demo = re.search(r'<!-- demo-command -->\n```\n(.*?)\n```', readme).group(1)
    assert demo.rstrip().endswith('anima-run --profile demo')
    test = re.search(r'<!-- test-command -->\n```\n(.*?)\n```', readme).group(1)
    assert 'pytest' in test
