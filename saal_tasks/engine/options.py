"""Checks of the loop's options that need the built components (the config check has already
refused unknown keys and wrong types)."""
from __future__ import annotations

import numpy as np

from ..core.errors import ConfigError
from ..core.selection import BaseSelector
from ..core.task import BaseTask


def check_loop_values(task: BaseTask, selector: BaseSelector, *, num_rounds: int,
                  budget: int | None, initial_size: int, subset_size: int | None,
                  seed: int) -> None:
    """Refuse loop options that cannot work with this task and selector.

    Raises:
        ConfigError: Naming the ``al`` key (or ``seed``) and the fix.
    """
    check_pairing(task, selector, budget)
    checks: list[tuple[str, object, int]] = [('num_rounds', num_rounds, 0),
              ('initial_size', initial_size, 1 if task.needs_initial_labels else 0)]
    if not selector.selects_units:
        checks.append(('budget', budget, 1))
    for name, value, low in checks:
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f'al.{name} must be an integer >= {low}, got {value!r}')
    if subset_size is not None:
        if not isinstance(subset_size, (int, np.integer)) or subset_size < 1:
            raise ConfigError(f'al.subset_size must be an integer >= 1, or None to score '
                              f'the whole unlabeled pool; got {subset_size!r}')
        if budget is not None and subset_size < budget:
            raise ConfigError(f'al.subset_size ({subset_size}) must be >= budget '
                              f'({budget}): the query is chosen from the scored subset')
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f'seed must be a non-negative integer, got {seed!r}')


def check_pairing(task: BaseTask, selector: BaseSelector, budget: int | None) -> None:
    """Whole-sample tasks need sample selectors; partial-annotation tasks unit selectors."""
    if selector.selects_units and not task.partial_annotations:
        raise ConfigError(f'{type(selector).__name__} picks units inside samples but '
                          f'{type(task).__name__} annotates whole samples: choose a sample '
                          "selector (e.g. dict(type='TopKSelector'))")
    if task.partial_annotations and not selector.selects_units:
        raise ConfigError(f'{type(task).__name__} annotates parts of samples (pixels): '
                          "choose a unit selector (e.g. dict(type='RegionSelector', ...))")
    if selector.selects_units and budget is not None:
        raise ConfigError(f'al.budget ({budget}) does not apply with '
                          f'{type(selector).__name__}: its own per-sample budget decides '
                          'how much is queried; set al.budget=None')
