"""Packaging that fits an existing environment: ranges not pins, det/seg extras without mmcv,
console programs, configs inside the built package, files with ordinary permissions."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from saal_tasks.cli import load_config, resolve_config
from saal_tasks.core.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def source_copy(tmp_path_factory) -> Path:
    """What a source distribution holds, copied so a build writes nothing into the checkout."""
    out = tmp_path_factory.mktemp('src')
    for name in ('setup.py', 'README.md'):
        shutil.copy(ROOT / name, out / name)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim')
    shutil.copytree(ROOT / 'saal_tasks', out / 'saal_tasks', ignore=ignore)
    shutil.copytree(ROOT / 'configs', out / 'configs', ignore=ignore)
    return out


def _sections(text: str) -> dict[str, list[str]]:
    """``requires.txt`` of an egg-info: requirement lines per extra ('' = install_requires)."""
    sections: dict[str, list[str]] = {'': []}
    current = ''
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('[') and line.endswith(']'):
            current = line[1:-1].split(':')[0]
            sections.setdefault(current, [])
        elif line:
            sections[current].append(line)
    return sections


@pytest.fixture(scope='module')
def metadata(source_copy, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp('egg')
    subprocess.run([sys.executable, 'setup.py', '--quiet', 'egg_info', '--egg-base', str(base)],
                   cwd=source_copy, check=True, capture_output=True, text=True)
    return next(base.glob('*.egg-info'))


def test_requirements_are_ranges_and_extras_bring_no_mmcv(metadata):
    sections = _sections((metadata / 'requires.txt').read_text())
    runtime = sections['']
    names = {line.split('<')[0].split('>')[0].split('=')[0] for line in runtime}
    assert {'torch', 'torchvision', 'mmengine', 'numpy'} <= names
    assert not any('==' in line for line in runtime), runtime    # never replaces a CUDA torch
    assert not any(line.startswith('setuptools') for line in runtime)
    for extra in ('det', 'detection', 'seg', 'segmentation'):
        assert extra in sections, sorted(sections)
        assert not any(line.startswith('mmcv') for line in sections[extra]), sections[extra]
        assert any(line.startswith('setuptools<82') for line in sections[extra])
    assert sections['det'] == sections['detection'] and sections['seg'] == sections['segmentation']
    assert any(line.startswith('mmdet') for line in sections['det'])
    assert any(line.startswith('mmsegmentation') for line in sections['seg'])


def test_console_programs_are_declared(metadata):
    text = (metadata / 'entry_points.txt').read_text()
    assert 'saal-train = saal_tasks.commands.train:main' in text
    assert 'saal-import = saal_tasks.commands.import_labels:main' in text


@pytest.mark.slow
def test_built_wheel_ships_the_configs_and_the_programs(source_copy, tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps',
                    '--no-build-isolation', '-w', str(tmp_path), str(source_copy)],
                   check=True, capture_output=True, text=True)
    wheel = next(tmp_path.glob('saal_tasks-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(ROOT / 'configs')) for p in (ROOT / 'configs').rglob('*.py')}
    assert {f'saal_tasks/.mim/configs/{name}' for name in shipped} <= names
    assert 'saal_tasks/commands/train.py' in names and 'saal_tasks/py.typed' in names


def test_shipped_configs_are_reachable_by_scope(tmp_path):
    path = resolve_config('saal_tasks::cls/saal_cnn_digits.py')
    assert Path(path).read_bytes() == (ROOT / 'configs/cls/saal_cnn_digits.py').read_bytes()
    cfg = load_config('saal_tasks::cls/saal_cnn_digits.py')
    assert cfg.work_dir == os.path.join('work_dirs', 'saal_cnn_digits')
    with pytest.raises(FileNotFoundError) as err:
        resolve_config('saal_tasks::cls/nope.py')
    text = str(err.value)
    assert '\n' not in text and 'saal_tasks::cls/nope.py' in text and 'configs' in text


def test_saal_train_runs_a_shipped_config_by_scope(tmp_path):
    """The installed program (as pip's console script calls it) on a scoped config."""
    code = ('import sys; from saal_tasks.commands.train import main; '
            'sys.argv[0] = "saal-train"; sys.exit(main(sys.argv[1:]))')
    proc = subprocess.run([sys.executable, '-c', code, 'saal_tasks::cls/saal_cnn_digits.py',
                           '--work-dir', str(tmp_path / 'w'), '--cfg-options', 'al.num_rounds=0',
                           'task.epochs=1', 'task.model.width=4'],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'finished: 1 rounds' in proc.stdout
    header = (tmp_path / 'w' / 'run.log').read_text().splitlines()[0]
    import torch
    assert 'environment: Python ' in header and f'torch {torch.__version__}'.split('+')[0] in header
    assert 'device CPU' in header or 'device CUDA' in header


@pytest.mark.parametrize('umask', [0o022, 0o002])
def test_state_files_get_ordinary_permissions(tmp_path, umask, monkeypatch):
    import saal_tasks.core.io as io
    monkeypatch.setattr(io, '_NEW_FILE_MODE', None)
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / 'state.json', {'a': 1})
        plain = tmp_path / 'plain.txt'
        plain.write_text('x')
    finally:
        os.umask(old)
        monkeypatch.setattr(io, '_NEW_FILE_MODE', None)
    mode = stat.S_IMODE((tmp_path / 'state.json').stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask   # before: 0o600
