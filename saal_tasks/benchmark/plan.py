"""Sweep planning: which cells (strategy × optimizer × seed) to run, and each cell's config.

A sweep config is an ordinary run config (``task``, ``al``, ``oracle``, ``hooks``, ...)
without ``scorer``/``selector``, plus:

* ``strategies``: name -> partial config with ``scorer``, ``selector`` and optionally
  ``hooks`` (appended to the run's hooks) and ``task`` (merged into the task config);
* ``optimizers``: name -> optimizer config (replaces ``task.optimizer``);
* ``sweep``: defaults ``strategies`` (list of names), ``optimizers`` (list), ``seeds`` (list
  of ints) and ``metric`` (the evaluation key to report).

Every cell of one sweep shares the protocol, so seed ``s`` gives every strategy and optimizer
the same initial labeled set (the loop draws it from ``(s, round 0)`` only).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmengine.config import Config

from ..core.errors import ConfigError

#: Keys a strategy entry may set.
STRATEGY_KEYS = ('scorer', 'selector', 'hooks', 'task')
#: Keys of a sweep config that are not part of a cell's run config.
SWEEP_KEYS = ('strategies', 'optimizers', 'sweep')


class SweepError(ConfigError):
    """The sweep config or the requested selection is invalid (one-line message)."""


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Attributes:
        strategy: Strategy name (key of the sweep config's ``strategies``).
        optimizer: Optimizer name (key of ``optimizers``).
        seed: Seed of the run.
        work_dir: The run's folder.
    """

    strategy: str
    optimizer: str
    seed: int
    work_dir: str

    @property
    def name(self) -> str:
        """``strategy/optimizer/seed_N``, the cell's path below the sweep's ``cells``."""
        return f'{self.strategy}/{self.optimizer}/seed_{self.seed}'


def _pick(kind: str, requested: Sequence[Any] | None, available: Mapping[str, Any],
          default: Sequence[Any] | None) -> list[str]:
    names = list(requested) if requested else list(default or available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SweepError(f'unknown {kind} {unknown[0]!r}: the config defines '
                         f"{', '.join(available)}")
    if len(set(names)) != len(names):
        raise SweepError(f'{kind} are listed twice: {names}')
    return names


def plan_cells(cfg: Config, sweep_dir: str | Path, strategies: Sequence[str] | None = None,
               optimizers: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None) -> list[Cell]:
    """The cells of a sweep, ordered seed-major so that partial sweeps cover all strategies.

    Args:
        cfg: Sweep config (see the module docstring).
        sweep_dir: Folder of the sweep; cells go to ``sweep_dir/cells/<name>``.
        strategies: Strategy names (default: ``sweep.strategies``, else all).
        optimizers: Optimizer names (default: ``sweep.optimizers``, else all).
        seeds: Seeds (default: ``sweep.seeds``).

    Raises:
        SweepError: A name is unknown or the config lacks a section.
    """
    for key in ('strategies', 'optimizers'):
        if not isinstance(cfg.get(key), Mapping) or not cfg.get(key):
            raise SweepError(f'the sweep config has no {key!r} dict: inherit '
                             'configs/cls/baselines/_base_/strategies.py or define it')
    defaults = cfg.get('sweep', {}) or {}
    names = _pick('strategy', strategies, cfg.strategies, defaults.get('strategies'))
    opts = _pick('optimizer', optimizers, cfg.optimizers, defaults.get('optimizers'))
    seed_list = list(seeds) if seeds is not None else list(defaults.get('seeds', [0]))
    if not seed_list or any(not isinstance(s, int) or s < 0 for s in seed_list):
        raise SweepError(f'seeds must be non-negative integers, got {seed_list}')
    root = Path(sweep_dir) / 'cells'
    return [Cell(s, o, seed, str(root / s / o / f'seed_{seed}'))
            for seed in seed_list for o in opts for s in names]


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cell_config(cfg: Config, cell: Cell) -> Config:
    """The run config of one cell: the protocol with the strategy, optimizer and seed.

    The sweep-only sections are dropped, so a cell's config hash (which the loop checks on
    resume) depends only on what that cell runs.

    Raises:
        SweepError: The strategy entry is malformed.
    """
    data = cfg.to_dict()
    strategies, optimizers = data['strategies'], data['optimizers']
    for key in SWEEP_KEYS:
        data.pop(key, None)
    entry = strategies[cell.strategy]
    if not isinstance(entry, Mapping):
        raise SweepError(f'strategies.{cell.strategy} must be a dict with scorer and selector')
    unknown = sorted(set(entry) - set(STRATEGY_KEYS))
    missing = [k for k in ('scorer', 'selector') if k not in entry]
    if unknown or missing:
        raise SweepError(f'strategies.{cell.strategy}: '
                         + (f'unknown key {unknown[0]!r}' if unknown else f'no {missing[0]!r}')
                         + f"; a strategy sets {', '.join(STRATEGY_KEYS)}")
    if 'task' not in data:
        raise SweepError("the sweep config has no 'task': inherit a dataset base config")
    data['scorer'] = copy.deepcopy(entry['scorer'])
    data['selector'] = copy.deepcopy(entry['selector'])
    data['hooks'] = list(data.get('hooks') or []) + copy.deepcopy(list(entry.get('hooks', [])))
    data['task'] = _merge(data['task'], entry.get('task', {}))
    data['task']['optimizer'] = copy.deepcopy(optimizers[cell.optimizer])
    data['seed'] = cell.seed
    data['work_dir'] = cell.work_dir
    # The file name only names the run in logs and plots; the text is a placeholder so that
    # mmengine does not try to read a file of that name.
    return Config(data, cfg_text=f'# cell {cell.name} of a benchmark sweep\n',
                  filename=f'{cell.strategy}_{cell.optimizer}_seed{cell.seed}.py')
