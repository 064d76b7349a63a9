"""BADGE (Ash et al., 2020): k-means++ seeding on last-layer gradient embeddings.

The embedding of a candidate is ``∂ l(x, ŷ; θ) / ∂ θ_out`` for its pseudo-label ``ŷ``
(``task.gradient_embedding``): its norm grows with uncertainty and its direction spreads
over classes and features, so k-means++ seeding picks samples that are both uncertain and
diverse. The first pick is the largest embedding norm, each next one is drawn with
probability proportional to its squared distance to the nearest pick (without replacement).
"""
from __future__ import annotations

import numpy as np

from ..registry import SELECTORS
from ..strategies.context import PoolAware, batched_eval
from .base import BaseSelector
from .kmeanspp import _d2_fill


def badge_kmeanspp(embeddings: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding started at the largest-norm embedding.

    Args:
        embeddings: Gradient embeddings, ``[N, E]``.
        budget: Picks, ``1 <= budget <= N``.
        rng: Generator for the D² draws.

    Returns:
        Unique positions in pick order, ``[budget]``.
    """
    points = np.asarray(embeddings, dtype=np.float64)
    first = int(np.argmax((points ** 2).sum(axis=1)))
    return np.asarray(_d2_fill(points, [first], budget, rng), dtype=np.int64)


@SELECTORS.register_module()
class BADGESelector(PoolAware, BaseSelector):
    """BADGE's selection; needs ``dict(type='PoolViewHook')`` in the config's hooks.

    The scores it receives are not used (pair it with ``GradientNormScorer`` so that the
    persisted scores are the embedding norms).

    Args:
        batch_size: Samples per forward pass when computing the embeddings.
    """

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size

    def _select(self, scores, budget, rng, embeddings):
        view = self.pool
        ids = view.candidate_ids()
        if len(ids) != len(scores):
            raise RuntimeError(f'{len(ids)} candidate ids for {len(scores)} scores')
        grads = batched_eval(view.task, view.model, ids, self.batch_size,
                             view.task.gradient_embedding)
        return badge_kmeanspp(grads, budget, rng)
