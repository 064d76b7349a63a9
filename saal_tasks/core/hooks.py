"""The loop-hook contract: the extension points of the active-learning loop.

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
``AL_HOOKS`` so a config can name it. ``loop`` is read-only to a hook: :class:`LoopView`
lists what a hook may read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from .oracle import BaseOracle
from .pool_state import PoolState
from .scorer import BaseScorer, ScoreResult
from .task import BaseTask


class LoopView(Protocol):
    """What hooks read of the running loop."""

    task: BaseTask
    scorer: BaseScorer
    oracle: BaseOracle
    model: nn.Module | None
    state: PoolState | None
    num_rounds: int
    subset_size: int | None
    run_name: str

    @property
    def work_dir(self) -> Path:
        """The run's folder."""

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0, or the only process)."""


class ALHook:
    """Base class of loop hooks (all methods optional)."""

    def before_run(self, loop: LoopView) -> None:
        """Called once the pool state exists (new run or resume)."""

    def before_round(self, loop: LoopView, round_idx: int) -> None:
        """Called at the start of round ``round_idx``."""

    def after_train(self, loop: LoopView, round_idx: int, model: nn.Module) -> None:
        """Called with the freshly trained model."""

    def after_evaluate(self, loop: LoopView, round_idx: int,
                       metrics: dict[str, float]) -> None:
        """Called with the evaluation metrics of the round."""

    def after_score(self, loop: LoopView, round_idx: int, result: ScoreResult) -> None:
        """Called with the scores of the pool subset."""

    def after_select(self, loop: LoopView, round_idx: int, selected_ids: np.ndarray) -> None:
        """Called with the queried sample ids (before the oracle answers)."""

    def after_round(self, loop: LoopView, round_idx: int, record: dict[str, Any]) -> None:
        """Called with the round's metrics record, once everything is persisted."""

    def after_run(self, loop: LoopView, records: list[dict[str, Any]]) -> None:
        """Called at the end with every round's record."""
