"""BADGE (Ash et al., 2020): k-means++ seeding on last-layer gradient embeddings.

The embedding of a candidate is ``∂ l(x, ŷ; θ) / ∂ θ_out`` for its pseudo-label ``ŷ``
(``task.gradient_embedding``): its norm grows with uncertainty and its direction spreads
over classes and features, so k-means++ seeding picks samples that are both uncertain and
diverse. The first pick is the largest embedding norm, each next one is drawn with
probability proportional to its squared distance to the nearest pick (without replacement).

The embeddings come from the selection context (its task, model and candidates), so the
selector needs nothing but the context the loop builds.
"""
from __future__ import annotations

import numpy as np

from ..core.selection import BaseSelector, SelectionContext
from ..core.task import batched_eval
from ..registry import SELECTORS
from .embeddings import task_and_model
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
class BADGESelector(BaseSelector):
    """BADGE's selection on the gradient embeddings of the context's candidates.

    The scores it receives are not used (pair it with ``GradientNormScorer`` so that the
    persisted scores are the embedding norms). The context needs the task and the model.

    Args:
        batch_size: Samples per forward pass when computing the embeddings. Equal to the
            context's ``embed_batch_size``, the context's cached
            :meth:`~SelectionContext.gradient_embeddings` are used; otherwise they are
            computed with this batch size.
    """

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size

    def _select(self, context: SelectionContext) -> np.ndarray:
        """Positions in pick order, ``[budget]``, by :func:`badge_kmeanspp` on ``[N, E]``."""
        if self.batch_size == context.embed_batch_size:
            grads = context.gradient_embeddings()
        else:
            task = task_and_model(context, type(self).__name__)
            grads = batched_eval(task, context.model, context.candidate_ids, self.batch_size,
                                 task.gradient_embedding)
        return badge_kmeanspp(grads, context.budget, context.rng)
