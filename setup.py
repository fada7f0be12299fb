import shutil
from configparser import ConfigParser
from pathlib import Path
import setuptools
from setuptools.command.build_py import build_py

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, f"missing expected setting: {o}"
setup_cfg = {o: cfg[o] for o in cfg_keys}

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable',
            '6 - Mature', '7 - Inactive']
py_versions = '3.11 3.12'.split()

requirements = cfg.get('requirements', '').split()  # torch==2.13.0 stays first
bench_requirements = cfg.get('bench_requirements', '').split()   # the benchmarks step (lm-evaluation-harness)
gguf_requirements = cfg.get('gguf_requirements', '').split()     # the export step (llama.cpp, built from source)
dev_requirements = cfg.get('dev_requirements', '').split() + bench_requirements
min_python = cfg['min_python']
lic = licenses[cfg['license'].lower()]

class build_py_with_notebooks(build_py):
    "Build the package with the notebooks papermill runs (nbs/NN_*.ipynb) inside it, as anima_nb/notebooks/."
    def run(self):
        super().run()
        dest = Path(self.build_lib)/cfg['lib_path']/'notebooks'
        dest.mkdir(parents=True, exist_ok=True)
        for nb in sorted(Path('nbs').glob('[0-9][0-9]*_*.ipynb')): shutil.copy(nb, dest/nb.name)

setuptools.setup(
    cmdclass={'build_py': build_py_with_notebooks},
    name=cfg['lib_name'],
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title(),
                 'License :: ' + lic[1]] +
                ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['anima_nb', 'anima_nb.*']),
    include_package_data=True,
    package_data={'anima_nb': ['assets/*', 'assets/benchmarks/*/*', 'profiles/*.yaml', 'configs/*.yaml']},
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'bench': bench_requirements, 'gguf': gguf_requirements},
    dependency_links=cfg.get('dep_links', '').split(),
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    **setup_cfg)
