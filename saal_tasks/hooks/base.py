"""Hooks: the extension points of the active-learning loop.

The loop calls, in this order, for each round ``r``::

    before_run(loop)                           once, after state is loaded or initialised
      before_round(loop, r)
      after_train(loop, r, model)
      after_evaluate(loop, r, metrics)
      after_score(loop, r, result)             only in rounds that acquire
      after_select(loop, r, selected_ids)      only in rounds that acquire
      after_round(loop, r, record)             after the round is persisted
    after_run(loop, records)                   once, at the end (also on a finished resume)

Every method is a no-op by default; override the ones you need and register the class in
``AL_HOOKS`` so a config can name it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from ..core.loop import ActiveLearningLoop
    from ..scorers.base import ScoreResult


class ALHook:
    """Base class of loop hooks (all methods optional)."""

    def before_run(self, loop: 'ActiveLearningLoop') -> None:
        """Called once the pool state exists (new run or resume)."""

    def before_round(self, loop: 'ActiveLearningLoop', round_idx: int) -> None:
        """Called at the start of round ``round_idx``."""

    def after_train(self, loop: 'ActiveLearningLoop', round_idx: int, model: nn.Module) -> None:
        """Called with the freshly trained model."""

    def after_evaluate(self, loop: 'ActiveLearningLoop', round_idx: int,
                       metrics: dict[str, float]) -> None:
        """Called with the evaluation metrics of the round."""

    def after_score(self, loop: 'ActiveLearningLoop', round_idx: int,
                    result: 'ScoreResult') -> None:
        """Called with the scores of the pool subset."""

    def after_select(self, loop: 'ActiveLearningLoop', round_idx: int,
                     selected_ids: np.ndarray) -> None:
        """Called with the queried sample ids (before the oracle answers)."""

    def after_round(self, loop: 'ActiveLearningLoop', round_idx: int,
                    record: dict[str, Any]) -> None:
        """Called with the round's metrics record, once everything is persisted."""

    def after_run(self, loop: 'ActiveLearningLoop', records: list[dict[str, Any]]) -> None:
        """Called at the end with every round's record."""
