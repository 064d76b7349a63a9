"""Installable package for saal_tasks."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name: str) -> list[str]:
    """Requirement lines of requirements/<name>.txt without comments and includes."""
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith(('#', '-r'))]


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
    install_requires=requirements('runtime'),
    extras_require={name: requirements(name) for name in ('tests', 'detection', 'segmentation', 'mnist')},
)
