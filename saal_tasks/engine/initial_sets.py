"""How the initial labeled set is drawn (registered in ``INITIAL_SETS``).

Config: ``al.initial_set = dict(type='BalancedInitialSet')`` (the paper's protocol: the same
count per class) or ``dict(type='RandomInitialSet')``; its size is ``al.initial_size``.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import ConfigError
from ..core.task import BaseTask
from ..registry import INITIAL_SETS


class InitialSet:
    """Chooses the initial labeled set."""

    def choose(self, task: BaseTask, sample_ids: np.ndarray, size: int,
               rng: np.random.Generator) -> np.ndarray:
        """``size`` distinct ids of ``sample_ids`` (``[N]``), sorted, ``int64`` ``[size]``."""
        raise NotImplementedError


@INITIAL_SETS.register_module()
class RandomInitialSet(InitialSet):
    """Uniformly at random."""

    def choose(self, task, sample_ids, size, rng):
        if size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.sort(rng.choice(sample_ids, size, replace=False))


@INITIAL_SETS.register_module()
class BalancedInitialSet(InitialSet):
    """The same number of samples per class (``task.stratify_labels``); the remainder goes to
    randomly chosen classes, one extra sample each."""

    def choose(self, task, sample_ids, size, rng):
        if size == 0:
            return np.zeros(0, dtype=np.int64)
        labels = task.stratify_labels(sample_ids)
        if labels is None:
            raise ConfigError(f'{type(task).__name__} has no classes to balance: set '
                              "al.initial_set=dict(type='RandomInitialSet')")
        classes = np.unique(labels)
        per_class = np.full(len(classes), size // len(classes))
        per_class[rng.permutation(len(classes))[:size % len(classes)]] += 1
        chosen = []
        for c, k in zip(classes, per_class):
            members = sample_ids[labels == c]
            if k > len(members):
                raise ConfigError(f'class {c} has only {len(members)} samples, {k} needed for '
                                  "a balanced initial set: use "
                                  "al.initial_set=dict(type='RandomInitialSet')")
            chosen.append(rng.choice(members, k, replace=False))
        return np.sort(np.concatenate(chosen))
