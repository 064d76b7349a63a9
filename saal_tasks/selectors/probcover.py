"""ProbCover (Yehuda et al., 2022): greedy maximum coverage of δ-balls on an embedding.

Points are the labeled samples and the round's candidates, L2-normalised. A candidate is
covered when a labeled or already picked point lies within δ of it. Each pick is the
candidate whose δ-ball holds the most uncovered candidates; once everything is covered the
remaining picks are uniform at random, as in the paper.

δ is either given or, as in the paper, the largest radius whose balls are "pure" for a
fraction ``purity`` of the points, where purity means every point in the ball has the same
k-means cluster as its centre.

The paper embeds with a self-supervised encoder (SimCLR). None ships with this project, so the
default embedding is the *current model's* penultimate features (``ModelFeatures``); name a
``PrecomputedEmbedding`` to use self-supervised features computed offline.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.errors import ConfigError
from ..core.selection import BaseSelector, SelectionContext
from ..registry import EMBEDDINGS, SELECTORS
from .coreset import min_distances


def _pairwise(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    d2 = ((points ** 2).sum(1)[:, None] + (others ** 2).sum(1)[None, :]
          - 2.0 * points @ others.T)
    return np.sqrt(np.maximum(d2, 0.0))


def purity_radius(points: np.ndarray, clusters: np.ndarray, purity: float = 0.95) -> float:
    """Largest δ such that at least ``purity`` of the δ-balls around ``points`` are pure.

    The ball around ``x`` is pure when no point of another cluster lies within δ, i.e. when
    δ is below ``d_other(x)``, the distance from ``x`` to the nearest point of another cluster.

    Args:
        points: ``[N, D]``.
        clusters: Cluster label of each point, ``[N]``.
        purity: Required fraction of pure balls, in ``(0, 1]``.

    Returns:
        The radius (``inf`` when all points share one cluster).
    """
    if not 0.0 < purity <= 1.0:
        raise ValueError(f'purity must be in (0, 1], got {purity}')
    points = np.asarray(points, dtype=np.float64)
    clusters = np.asarray(clusters)
    d_other = np.full(len(points), np.inf)
    for s in range(0, len(points), 1024):
        d = _pairwise(points[s:s + 1024], points)
        d[clusters[s:s + 1024, None] == clusters[None, :]] = np.inf
        d_other[s:s + 1024] = d.min(axis=1)
    ordered = np.sort(d_other)
    needed = math.ceil(purity * len(points))
    # At least `needed` values of d_other must exceed δ: δ just below the needed-th largest.
    return float(np.nextafter(ordered[len(points) - needed], 0.0))


def probcover_greedy(candidates: np.ndarray, labeled: np.ndarray, radius: float, budget: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Greedy coverage of the candidates by δ-balls (closed: distance <= δ).

    Args:
        candidates: ``[N, D]``.
        labeled: Points that already cover, ``[M, D]`` (may be empty).
        radius: δ.
        budget: Picks, ``1 <= budget <= N``.
        rng: Generator for the uniform picks once everything is covered.

    Returns:
        Positions into ``candidates`` in pick order, ``[budget]``. Ties go to the lowest
        position.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    covered = min_distances(candidates, labeled) <= radius
    adjacency = np.zeros((len(candidates), len(candidates)), dtype=bool)
    for s in range(0, len(candidates), 1024):
        adjacency[s:s + 1024] = _pairwise(candidates[s:s + 1024], candidates) <= radius
    degree = adjacency[:, ~covered].sum(axis=1).astype(np.int64)
    picked: list[int] = []
    available = np.ones(len(candidates), dtype=bool)
    for _ in range(budget):
        gains = np.where(available, degree, -1)
        if gains.max() > 0:
            nxt = int(np.argmax(gains))
        else:
            nxt = int(rng.choice(np.flatnonzero(available)))
        picked.append(nxt)
        available[nxt] = False
        newly = adjacency[nxt] & ~covered
        covered |= newly
        degree -= adjacency[:, newly].sum(axis=1)
    return np.asarray(picked, dtype=np.int64)


@SELECTORS.register_module()
class ProbCoverSelector(BaseSelector):
    """ProbCover's selection over the context's candidates, covered by its labeled samples.

    The default embedding needs the context's task and model.

    Args:
        embedding: Config of a registered embedding (``EMBEDDINGS``). Default: the current
            model's penultimate features (there is no self-supervised encoder here).
        radius: δ; ``None`` chooses it each round by cluster purity.
        purity: Fraction of pure balls required when choosing δ (the paper's α = 0.95).
        num_clusters: k-means clusters for the purity (the paper: the number of classes).
        normalize: L2-normalise the embeddings first (as the paper does).
        max_purity_points: Points (drawn at random) on which δ is estimated, bounding the
            cost of the purity search on large pools.
    """

    config_children = {'embedding': 'EMBEDDINGS'}  # checked config boundary

    def __init__(self, embedding: dict | None = None, radius: float | None = None,
                 purity: float = 0.95, num_clusters: int = 10, normalize: bool = True,
                 max_purity_points: int = 3000) -> None:
        if radius is not None and radius <= 0:
            raise ConfigError(f'selector.radius must be positive or None, got {radius}')
        if num_clusters < 2:
            raise ConfigError(f'selector.num_clusters must be >= 2, got {num_clusters}')
        if not 0.0 < purity <= 1.0:
            raise ConfigError(f'selector.purity must be in (0, 1], got {purity}')
        self.embedding = EMBEDDINGS.build(embedding or dict(type='ModelFeatures'))
        self.radius = radius
        self.purity = purity
        self.num_clusters = num_clusters
        self.normalize = normalize
        self.max_purity_points = max_purity_points
        #: δ used by the last selection (for logs and tests).
        self.last_radius: float | None = None

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if not self.normalize:
            return x
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def choose_radius(self, points: np.ndarray, rng: np.random.Generator) -> float:
        """δ by cluster purity on (a random subset of) ``points`` ``[N, D]``."""
        from sklearn.cluster import KMeans

        if len(points) > self.max_purity_points:
            points = points[rng.choice(len(points), self.max_purity_points, replace=False)]
        k = min(self.num_clusters, len(points))
        labels = KMeans(n_clusters=k, n_init=3,
                        random_state=int(rng.integers(2**31 - 1))).fit_predict(points)
        return purity_radius(points, labels, self.purity)

    def _select(self, context: SelectionContext) -> np.ndarray:
        """Positions in pick order, ``[budget]``, by :func:`probcover_greedy` on the
        candidates' embeddings ``[N, D]`` covered by the labeled ones ``[L, D]``."""
        budget, rng = context.budget, context.rng
        candidates = self._prepare(self.embedding(context, 'candidates'))
        labeled = self.embedding(context, 'labeled')
        if len(labeled) == 0:  # nothing labeled yet: no covering points, [0, D]
            labeled = np.zeros((0, candidates.shape[1]))
        labeled = self._prepare(labeled)
        radius = self.radius
        if radius is None:
            radius = self.choose_radius(np.concatenate([labeled, candidates]), rng)
        self.last_radius = radius
        return probcover_greedy(candidates, labeled, radius, budget, rng)
