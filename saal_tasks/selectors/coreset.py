"""Coreset (Sener & Savarese, 2018): k-center greedy on embeddings, from the labeled set.

Each pick is the candidate farthest from its nearest center, where the centers are the
labeled samples and the candidates picked so far: the greedy 2-approximation of the k-center
problem that the Coreset paper uses (without its robust mixed-integer refinement). The
candidates and the labeled set come from the selection context.
"""
from __future__ import annotations

import numpy as np

from ..core.selection import BaseSelector, SelectionContext
from ..registry import EMBEDDINGS, SELECTORS


def min_distances(points: np.ndarray, centers: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance of each point to its nearest center.

    Args:
        points: ``[N, D]``.
        centers: ``[M, D]``; with ``M = 0`` every distance is ``inf``.
        chunk: Centers per block (bounds memory at ``N × chunk`` floats).

    Returns:
        ``[N]`` float64.
    """
    points = np.asarray(points, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    best = np.full(len(points), np.inf)
    p2 = (points ** 2).sum(axis=1)
    for s in range(0, len(centers), chunk):
        c = centers[s:s + chunk]
        # |p - c|² = |p|² + |c|² − 2 p·c, clipped at 0 against rounding.
        d2 = p2[:, None] + (c ** 2).sum(axis=1)[None, :] - 2.0 * points @ c.T
        best = np.minimum(best, np.sqrt(np.maximum(d2, 0.0)).min(axis=1))
    return best


def k_center_greedy(points: np.ndarray, centers: np.ndarray, budget: int) -> np.ndarray:
    """Greedy k-center: repeatedly pick the point farthest from every center so far.

    Args:
        points: Candidates, ``[N, D]``.
        centers: Initial centers (the labeled set), ``[M, D]``; may be empty.
        budget: Picks, ``1 <= budget <= N``.

    Returns:
        Positions into ``points`` in pick order, ``[budget]``. Ties go to the lowest
        position; with no centers the first pick is position 0.
    """
    points = np.asarray(points, dtype=np.float64)
    dist = min_distances(points, centers)
    picked = []
    for _ in range(budget):
        nxt = int(np.argmax(dist))
        picked.append(nxt)
        dist = np.minimum(dist, np.sqrt(((points - points[nxt]) ** 2).sum(axis=1)))
        # Picked points must never be picked again, even when every distance is 0.
        dist[picked] = -np.inf
    return np.asarray(picked, dtype=np.int64)


@SELECTORS.register_module()
class KCenterGreedySelector(BaseSelector):
    """Coreset: k-center greedy on embeddings of the candidates, the labeled set as centers.

    The candidates and the labeled set are the context's ``candidate_ids`` and
    ``labeled_ids``; the default embedding needs the context's task and model.

    Args:
        embedding: Config of a registered embedding (``EMBEDDINGS``); default: the current
            model's penultimate features.
    """

    config_children = {'embedding': 'EMBEDDINGS'}  # checked config boundary

    def __init__(self, embedding: dict | None = None) -> None:
        self.embedding = EMBEDDINGS.build(embedding or dict(type='ModelFeatures'))

    def _select(self, context: SelectionContext) -> np.ndarray:
        """Positions in pick order, ``[budget]``, by :func:`k_center_greedy` on the
        candidates' embeddings ``[N, D]`` from the labeled ones ``[L, D]``."""
        points = self.embedding(context, 'candidates')
        centers = self.embedding(context, 'labeled')
        return k_center_greedy(points, centers, context.budget)
