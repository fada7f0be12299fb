"The docs site's sources: every notebook renders to HTML, the Quarto config and sidebar hold together, README and index agree."
import json, re, subprocess, sys
from pathlib import Path
import pytest, yaml
from conftest import ROOT

NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p.name for p in NBS.glob('[!_]*.ipynb'))
BIN = Path(sys.executable).parent

def markdown_lines(nb_path) -> list:
    "The lines of a notebook's markdown cells, outside fenced code blocks."
    out = []
    for c in json.loads(Path(nb_path).read_text())['cells']:
        if c['cell_type'] != 'markdown': continue
        fenced = False
        for line in ''.join(c['source']).splitlines():
            if line.lstrip().startswith(('```', '~~~')): fenced = not fenced; continue
            if not fenced: out.append(line)
        out.append('')                                       # a cell ends any table
    return out

def heading_html(line:str) -> str:
    "The element nbconvert writes for a markdown heading line: `<hN id=...>` text, an anchor link (its id: spaces as -, URL-quoted)."
    from html import escape
    from urllib.parse import quote
    hashes, text = re.match(r'^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$', line).groups()
    plain = re.sub(r'`([^`]*)`', r'\1', text)
    inner = re.sub(r'`([^`]*)`', r'<code>\1</code>', escape(text, quote=False))
    hid = escape(quote(plain.replace(' ', '-'), safe="?/:@!$&'()*+,;="), quote=False)
    n = len(hashes)
    return f'<h{n} id="{hid}">{inner}<a class="anchor-link" href="#{hid}">¶</a></h{n}>'

def table_count(lines:list) -> int:
    "Markdown tables: runs of consecutive lines starting with `|`."
    return sum(1 for i, l in enumerate(lines) if l.startswith('|') and (i == 0 or not lines[i - 1].startswith('|')))

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook_renders_to_html(nb):
    from nbconvert import HTMLExporter
    html, _ = HTMLExporter().from_filename(str(NBS/nb))
    assert '<html' in html and len(html) > 1000
    lines = markdown_lines(NBS/nb)
    heads = [heading_html(l) for l in lines if re.match(r'^#{1,6}\s', l)]
    assert heads and heads[0].startswith('<h1 '), 'every notebook opens with its title'
    pos = [html.find(h) for h in heads]
    missing = [h for h, p in zip(heads, pos) if p < 0]
    assert not missing, f'headings not rendered: {missing}'
    assert pos == sorted(pos), 'headings rendered out of order'
    assert len(re.findall(r'<h[1-6][ >]', html)) >= len(heads)
    n_tables = table_count(lines)
    if n_tables:
        assert html.count('<table') >= n_tables and '<th>' in html and '<td>' in html

@pytest.mark.slow
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

def test_module_docstrings_are_whole_sentences():
    "Each module's docstring (the notebook's one-line description) ends where its sentence ends."
    import ast
    for f in sorted((ROOT/'anima_nb').glob('*.py')):
        if f.name.startswith('_'): continue
        doc = ast.get_docstring(ast.parse(f.read_text()))
        assert doc and doc.rstrip().endswith('.'), f"{f.name}: {doc!r}"
