"""What strategies see beyond the scored candidates: the labeled pool, the model, the ids.

A scorer receives ``(task, model, candidate_ids, rng)`` and a selector only the candidates'
scores. Baselines such as Coreset (distances to the labeled set), ProbCover (coverage by the
labeled set), BADGE (gradient embeddings of the candidates) and VAAL (a discriminator trained
on labeled versus unlabeled samples) need more. They declare it by subclassing
:class:`PoolAware`; the :class:`PoolViewHook` (add ``dict(type='PoolViewHook')`` to the
config's ``hooks``) hands them, before the first round, a :class:`LoopPoolView` that reads the
loop's *live* state whenever they ask. Reading live state (instead of copying it in a hook at
fixed points) keeps the strategies correct when a run resumes in the middle of a round,
where the loop skips the hooks of the stages already done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    # Type hints only. This module imports nothing of saal_tasks at run time because the
    # selectors import it and the core (through the loop) imports the selectors.
    from ..core.loop import ActiveLearningLoop
    from ..core.task import BaseTask


class PoolView(Protocol):
    """Read access to the state of the current acquisition."""

    @property
    def task(self) -> BaseTask:
        """The task adapter."""

    @property
    def model(self) -> nn.Module:
        """The model trained in the current round."""

    def labeled_ids(self) -> np.ndarray:
        """Ids labeled so far, shape ``[L]``."""

    def unlabeled_ids(self) -> np.ndarray:
        """Ids not labeled yet, shape ``[U]``."""

    def candidate_ids(self) -> np.ndarray:
        """Ids scored in the current round, aligned with the scores a selector receives."""


@dataclass
class FixedPoolView:
    """A :class:`PoolView` over given arrays (tests, offline use)."""

    task: BaseTask
    model: nn.Module
    labeled: np.ndarray
    unlabeled: np.ndarray
    candidates: np.ndarray | None = None

    def labeled_ids(self) -> np.ndarray:
        return np.asarray(self.labeled, dtype=np.int64)

    def unlabeled_ids(self) -> np.ndarray:
        return np.asarray(self.unlabeled, dtype=np.int64)

    def candidate_ids(self) -> np.ndarray:
        if self.candidates is None:
            raise RuntimeError('this FixedPoolView has no candidates')
        return np.asarray(self.candidates, dtype=np.int64)


class LoopPoolView:
    """A :class:`PoolView` of a running :class:`ActiveLearningLoop`.

    The current round is the last round that labeled samples (round ``r`` labels its query
    with ``r + 1`` only after selection), and its candidates are the ids of the round's
    ``scores.npz``, which the loop writes before selecting (also when it resumes there).
    """

    def __init__(self, loop: 'ActiveLearningLoop') -> None:
        self._loop = loop

    @property
    def task(self) -> BaseTask:
        return self._loop.task

    @property
    def model(self) -> nn.Module:
        if self._loop.model is None:
            raise RuntimeError('the loop has no trained model yet')
        return self._loop.model

    def labeled_ids(self) -> np.ndarray:
        return self._loop.state.labeled_ids()

    def unlabeled_ids(self) -> np.ndarray:
        return self._loop.state.unlabeled_ids()

    def candidate_ids(self) -> np.ndarray:
        path = self._loop.round_dir(self._loop.state.last_round) / 'scores.npz'
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data['sample_ids'], dtype=np.int64)


class PoolAware:
    """Mixin for scorers and selectors that need a :class:`PoolView`."""

    _pool_view: PoolView | None = None

    def bind(self, view: PoolView) -> None:
        """Give the component access to the acquisition state (done by the hook)."""
        self._pool_view = view

    @property
    def pool(self) -> PoolView:
        """The bound view; a clear error names the missing hook when there is none."""
        if self._pool_view is None:
            # Imported here: importing the core at module level would be a cycle (see above).
            from ..core.errors import ConfigError
            raise ConfigError(
                f"{type(self).__name__} needs the labeled pool: add dict(type='PoolViewHook') "
                'to the config\'s hooks')
        return self._pool_view


def batched_eval(task: BaseTask, model: nn.Module, sample_ids: np.ndarray, batch_size: int,
                 fn: Callable[[nn.Module, Any], torch.Tensor]) -> np.ndarray:
    """Apply ``fn(model, inputs) -> Tensor [B, ...]`` over ``sample_ids`` in eval mode.

    Args:
        task: Task giving the batches.
        model: Model, put in eval mode for the call and restored afterwards.
        sample_ids: Ids, shape ``[N]``.
        batch_size: Samples per batch.
        fn: Function of a model and a batch of inputs.

    Returns:
        The concatenated outputs as float64, shape ``[N, ...]``.
    """
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for _, inputs in task.pool_batches(np.asarray(sample_ids, dtype=np.int64),
                                               batch_size):
                chunks.append(fn(model, inputs).detach().double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0,))
