"""What the command-line tools share: reading a config with overrides, one-line errors, and
the exact command that continues a run."""
from __future__ import annotations

import argparse
import ast
import os
import os.path as osp
import shlex
import sys
from typing import Callable, Sequence

from mmengine.config import Config, DictAction

from .core.errors import ConfigError, UserError
from .core.pool_state import PoolStateMismatchError

#: Errors that mean "the input is wrong", reported as one line (set SAAL_DEBUG=1 for the
#: traceback). Anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError, PoolStateMismatchError, FileNotFoundError)


def parse_cfg_options(items: list[str] | None) -> dict:
    """``--cfg-options KEY=VALUE ...`` as the dict mmengine's ``DictAction`` makes of them.

    Values are parsed by ``DictAction`` (ints, floats, bools, ``None``, lists ``a,b`` and
    ``[a,(b,c)]``); the last of repeated keys wins.

    Raises:
        ConfigError: An item has no ``=`` or an empty key.
    """
    for item in items or []:
        key, sep, _ = item.partition('=')
        if not sep:
            raise ConfigError(f"--cfg-options item {item!r} has no '=': write KEY=VALUE, e.g. "
                              f'{item or "al.num_rounds"}=5')
        if not key.strip():
            raise ConfigError(f'--cfg-options item {item!r} has an empty key: write KEY=VALUE, '
                              'e.g. al.num_rounds=5')
    namespace = argparse.Namespace(cfg_options=None)
    DictAction([], 'cfg_options')(None, namespace, list(items or []))
    return dict(namespace.cfg_options or {})


#: Prefix of the configs that ship with the package: ``saal_tasks::cls/saal_cnn_digits.py``.
PACKAGE_SCOPE = 'saal_tasks::'


def package_config_dirs() -> list[str]:
    """Where the shipped configs are: inside an installed package (``.mim/configs``, copied
    there by setup.py) or beside the package in a checkout (``configs/``)."""
    package = osp.dirname(osp.abspath(__file__))
    return [osp.join(package, '.mim', 'configs'), osp.join(osp.dirname(package), 'configs')]


def resolve_config(path: str) -> str:
    """The file of a config argument: a path, or ``saal_tasks::<path under configs/>``.

    Raises:
        FileNotFoundError: No such file (one line naming where it was looked for).
    """
    if path.startswith(PACKAGE_SCOPE):
        relative = path[len(PACKAGE_SCOPE):]
        for folder in package_config_dirs():
            candidate = osp.join(folder, relative)
            if osp.isfile(candidate):
                return candidate
        raise FileNotFoundError(f'config {path} is not among the shipped configs (looked in '
                                f'{" and ".join(package_config_dirs())}): check the name, '
                                'e.g. saal_tasks::cls/saal_cnn_digits.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist: check the path (the '
                                'shipped configs are also reachable as saal_tasks::<path '
                                'under configs/>, e.g. saal_tasks::cls/saal_cnn_digits.py)')
    return path


def load_config(path: str, *, work_dir: str | None = None, cfg_options: dict | None = None,
                seed: int | None = None) -> Config:
    """Read a config file and apply command-line overrides (the only place they apply).

    Args:
        path: Config file, or a shipped config as ``saal_tasks::cls/saal_cnn_digits.py``.
        work_dir: Overrides ``work_dir``; default ``work_dirs/<config name>``.
        cfg_options: ``--cfg-options`` key/value pairs.
        seed: Overrides ``seed``.
    """
    path = resolve_config(path)
    try:
        cfg = Config.fromfile(path)
    except FileNotFoundError:
        # mmengine says only "[Errno 2] No such file or directory", naming no file.
        raise ConfigError(_missing_base(path) or (
            f'cannot read config {path}: a file it reads does not exist (check its _base_ '
            'and any paths it opens)')) from None
    except (SyntaxError, ImportError, KeyError, ValueError, TypeError) as err:
        raise ConfigError(f'cannot read config {path}: {err}') from None
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f'cannot apply --cfg-options {cfg_options}: {err}') from None
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(path))[0])
    if seed is not None:
        cfg.seed = seed
    return cfg


def _bases(path: str) -> list[str]:
    """The ``_base_`` entries of a config file (literal strings only; ``[]`` if none)."""
    try:
        tree = ast.parse(open(path, encoding='utf-8').read())
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '_base_'
                                                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [value] if isinstance(value, str) else [v for v in value
                                                           if isinstance(v, str)]
    return []


def _missing_base(path: str, chain: tuple[str, ...] = ()) -> str | None:
    """The error text naming the missing ``_base_`` file of ``path`` or of its bases."""
    for base in _bases(path):
        if '::' in base:  # another package's config (mmdet::...): its own loader's business
            continue
        full = osp.normpath(osp.join(osp.dirname(path), base))
        if not osp.isfile(full):
            via = ''.join(f' (inherited through {c})' for c in reversed(chain))
            return (f'config {path}{via} inherits {base!r} (_base_), but {full} does not exist: '
                    'fix the _base_ path (it is relative to the config file)')
        found = _missing_base(full, (*chain, path))
        if found is not None:
            return found
    return None


#: Distributions named in the environment header of ``run.log`` (those installed).
ENVIRONMENT_PACKAGES = ('saal_tasks', 'torch', 'torchvision', 'mmengine', 'mmcv', 'mmcv-lite',
                        'mmdet', 'mmsegmentation', 'numpy', 'scikit-learn')


def environment_header() -> str:
    """One line for the top of ``run.log``: Python, the installed versions, the device.

    Read from the installed distributions' metadata (nothing is imported), so it costs no
    start-up time and names exactly what ran.
    """
    import platform
    from importlib import metadata

    import torch

    versions = []
    for name in ENVIRONMENT_PACKAGES:
        try:
            versions.append(f'{name} {metadata.version(name)}')
        except metadata.PackageNotFoundError:
            continue
    if torch.cuda.is_available():
        device = f'CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}'
    else:
        device = f'CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})'
    return (f'environment: Python {platform.python_version()} on {platform.platform()}; '
            f'{", ".join(versions)}; device {device}')


#: Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


#: The installed programs (``setup.py``'s console scripts).
INSTALLED_PROGRAMS = ('saal-train', 'saal-import', 'saal-query')


def _installed() -> bool:
    """Whether this process is one of the installed programs (not ``tools/*.py``)."""
    return osp.basename(sys.argv[0]) in INSTALLED_PROGRAMS


def _invocation(program: str, script: str) -> list[str]:
    """How to start a program the way this process was started: ``[program]`` when run as
    an installed program, else ``['python', script]`` (a checkout)."""
    return [program] if _installed() else ['python', script]


def _run_options(seed: int | None, cfg_options: Sequence[str] | None) -> list[str]:
    """The options a printed command repeats so the run's config is the same."""
    return ([] if seed is None else ['--seed', str(seed)]) + (
        ['--cfg-options', *cfg_options] if cfg_options else [])


def resume_command(config: str, work_dir: str, cfg_options: Sequence[str] | None = None,
                   seed: int | None = None, launcher: str = 'none') -> str:
    """The command that continues a run, quoted for a POSIX shell.

    ``saal-train ...`` when this process is an installed program, ``python tools/train_al.py
    ...`` in a checkout.

    It repeats the run's ``--cfg-options`` (the resumed config must be the one the run was
    started with, or resume refuses it as "a different config") and names the work dir.

    Args:
        config: The config file as the user named it.
        work_dir: The run's work dir.
        cfg_options: The ``--cfg-options`` items as given (``KEY=VALUE`` strings).
        seed: ``--seed`` when it was given.
        launcher: ``--launcher``; ``'pytorch'`` prefixes ``torchrun --nproc_per_node=N``.
    """
    argv = [config, '--work-dir', str(work_dir), '--resume', *_run_options(seed, cfg_options)]
    if launcher == 'pytorch':
        world = os.environ.get('WORLD_SIZE', 'N')
        # torchrun starts a script: the checkout's, or the installed program's file.
        script = sys.argv[0] if _installed() else 'tools/train_al.py'
        return shlex.join(['torchrun', f'--nproc_per_node={world}', script, *argv,
                           '--launcher', 'pytorch'])
    return shlex.join([*_invocation('saal-train', 'tools/train_al.py'), *argv])


def import_command(config: str, work_dir: str, cfg_options: Sequence[str] | None = None,
                   seed: int | None = None, answers: str = 'ANSWERS') -> str:
    """The import command for a run's waiting query (shell-quoted; ``saal-import`` or
    ``python tools/import_labels.py`` as in :func:`resume_command`).

    Args:
        config: The config file as the user named it.
        work_dir: The run's work dir.
        cfg_options: The run's ``--cfg-options`` items (the config must be the run's).
        seed: ``--seed`` when it was given.
        answers: The answers file (a placeholder by default).
    """
    return shlex.join([*_invocation('saal-import', 'tools/import_labels.py'), config, answers,
                       '--work-dir', str(work_dir), *_run_options(seed, cfg_options)])


def run_reporting_errors(main: Callable[[], int],
                         on_interrupt: Callable[[], str] | None = None) -> int:
    """Run ``main``; a user error becomes one ``error: ...`` line and exit code 2.

    Args:
        main: The tool's work; returns its exit code.
        on_interrupt: Called on Ctrl-C for the one line to print instead of a traceback
            (where the run stopped and how to continue it); exit code
            :data:`EXIT_INTERRUPTED`.
    """
    try:
        return main()
    except USER_ERRORS as err:
        if os.environ.get('SAAL_DEBUG'):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get('SAAL_DEBUG') or on_interrupt is None:
            raise
        print(on_interrupt(), file=sys.stderr)
        return EXIT_INTERRUPTED
