"""Uncertainty baselines scored from the model's predictive distribution.

With ``p = softmax(logits)`` of one sample (higher score = more informative):

* entropy: ``H(p) = −Σ_j p_j log p_j`` (Shannon);
* least confidence, the paper's "variation ratio": ``1 − max_j p_j``;
* margin: ``1 − (p_(1) − p_(2))``, one minus the gap between the two largest
  probabilities (so that, like the others, a higher score is more uncertain);
* gradient-embedding norm: ``‖(p − onehot(ŷ)) hᵀ‖ = ‖p − onehot(ŷ)‖·‖h‖``, the
  magnitude of BADGE's embedding (what BADGE's first pick maximises).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import ConfigError
from ..registry import SCORERS
from ..core.scorer import BaseScorer, ScoreResult, ids_in_order


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probs`` ``[B, C]`` (``0·log 0 = 0``), ``[B]``."""
    logs = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    return -(probs * logs).sum(dim=1)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """``1 − max_j p_j`` of each row of ``probs`` ``[B, C]``. Returns ``[B]``."""
    return 1.0 - probs.max(dim=1).values


def margin(probs: torch.Tensor) -> torch.Tensor:
    """``1 − (p_(1) − p_(2))`` of each row of ``probs`` ``[B, C]`` (``C >= 2``), ``[B]``."""
    if probs.shape[1] < 2:
        raise ValueError(f'margin needs at least 2 classes, got {probs.shape[1]}')
    top2 = probs.topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


class _BatchScorer(BaseScorer):
    """Scores batch by batch with :meth:`_batch_scores` (model in eval mode, no grad).

    Args:
        batch_size: Samples per forward pass.
        log_interval: Progress output every this many samples.
    """

    def __init__(self, batch_size: int = 256, log_interval: int = 10_000) -> None:
        super().__init__(log_interval=log_interval)
        if batch_size < 1:
            raise ConfigError(f'scorer.batch_size must be >= 1, got {batch_size}')
        self.batch_size = batch_size

    def _batch_scores(self, task, model, inputs) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        out_ids, scores = [], []
        with torch.no_grad():
            for ids, inputs in task.pool_batches(sample_ids, self.batch_size):
                out_ids.append(np.asarray(ids, dtype=np.int64))
                scores.append(self._batch_scores(task, model, inputs).double().cpu().numpy())
        ids = ids_in_order(task, out_ids, sample_ids)
        return ScoreResult(sample_ids=ids,
                           scores=np.concatenate(scores) if scores else np.zeros(0))


@SCORERS.register_module()
class EntropyScorer(_BatchScorer):
    """Entropy of the predicted class distribution (Shannon, 1948)."""

    def _batch_scores(self, task, model, inputs):
        return entropy(torch.softmax(task.predict_logits(model, inputs).double(), dim=1))


@SCORERS.register_module()
class LeastConfidenceScorer(_BatchScorer):
    """One minus the top class probability (the paper's variation ratio; Freeman, 1965)."""

    def _batch_scores(self, task, model, inputs):
        return least_confidence(torch.softmax(task.predict_logits(model, inputs).double(), dim=1))


@SCORERS.register_module()
class MarginScorer(_BatchScorer):
    """One minus the gap between the two most probable classes."""

    def _batch_scores(self, task, model, inputs):
        return margin(torch.softmax(task.predict_logits(model, inputs).double(), dim=1))


@SCORERS.register_module()
class GradientNormScorer(_BatchScorer):
    """Norm of the last-layer gradient embedding (``task.gradient_embedding``), BADGE's scale."""

    def _batch_scores(self, task, model, inputs):
        return task.gradient_embedding(model, inputs).double().norm(dim=1)


__all__ = ['entropy', 'least_confidence', 'margin', 'EntropyScorer', 'LeastConfidenceScorer',
           'MarginScorer', 'GradientNormScorer']
