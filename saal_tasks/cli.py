"""What the command-line tools share: reading a config with overrides, one-line errors."""
from __future__ import annotations

import argparse
import ast
import os
import os.path as osp
import sys
from typing import Callable

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


def load_config(path: str, *, work_dir: str | None = None, cfg_options: dict | None = None,
                seed: int | None = None) -> Config:
    """Read a config file and apply command-line overrides (the only place they apply).

    Args:
        path: Config file.
        work_dir: Overrides ``work_dir``; default ``work_dirs/<config name>``.
        cfg_options: ``--cfg-options`` key/value pairs.
        seed: Overrides ``seed``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist: check the path')
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


def run_reporting_errors(main: Callable[[], int]) -> int:
    """Run ``main``; a user error becomes one ``error: ...`` line and exit code 2."""
    try:
        return main()
    except USER_ERRORS as err:
        if os.environ.get('SAAL_DEBUG'):
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
