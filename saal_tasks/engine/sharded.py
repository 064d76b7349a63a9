"""Scoring split over the processes of a distributed run."""
from __future__ import annotations

import numpy as np
from torch import nn

from ..core.dist import gather_in_rank_order, shard
from ..core.scorer import BaseScorer, ScoreResult
from ..core.task import BaseTask


class ShardedScoring:
    """Scores candidates with ``scorer``; with several ranks each scores one contiguous shard.

    Gathering the shards in rank order restores the candidates' order, and per-sample scores
    do not depend on which samples share a call, so every rank ends with the scores a single
    process computes (and hence the same selection).

    Args:
        scorer: The configured scorer.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, scorer: BaseScorer, rank: int = 0, world_size: int = 1) -> None:
        self.scorer = scorer
        self.rank = rank
        self.world_size = world_size

    def score(self, task: BaseTask, model: nn.Module, candidates: np.ndarray,
              rng: np.random.Generator, labeled_ids: np.ndarray) -> ScoreResult:
        """Every rank's copy of the scores of ``candidates`` (``[N]``)."""
        if self.world_size == 1:
            return self.scorer.score(task, model, candidates, rng, labeled_ids)
        part = self.scorer.score(task, model, shard(candidates, self.rank, self.world_size),
                                 rng, labeled_ids)
        parts = gather_in_rank_order(part)
        return ScoreResult.concatenate(parts, seconds=max(p.seconds for p in parts))
