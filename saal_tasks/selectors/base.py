"""Selectors turn the scores of a pool subset into a query of exactly ``budget`` samples."""
from __future__ import annotations

import numpy as np


class BaseSelector:
    """Chooses ``budget`` positions among scored candidates.

    Attributes:
        needs_embeddings: When true, the loop also passes ``embeddings`` from the task.
    """

    needs_embeddings: bool = False

    def select(self, scores: np.ndarray, budget: int, rng: np.random.Generator,
               embeddings: np.ndarray | None = None) -> np.ndarray:
        """Pick ``budget`` distinct candidates.

        Args:
            scores: One score per candidate, shape ``[N]`` (higher = more informative).
            budget: Number of candidates to return, ``1 <= budget <= N``.
            rng: Generator for selectors that sample.
            embeddings: Candidate embeddings ``[N, D]`` when :attr:`needs_embeddings`.

        Returns:
            Positions into ``scores`` (not sample ids), unique, shape ``[budget]``, in pick
            order.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1:
            raise ValueError(f'scores must be 1-D, got shape {scores.shape}')
        if not 1 <= budget <= len(scores):
            raise ValueError(f'budget {budget} must be between 1 and the number of scored '
                             f'candidates ({len(scores)}): lower the budget or score more')
        if not np.isfinite(scores).all():
            raise ValueError('scores contain NaN or inf: the model diverged; check the '
                             'learning rate or the perturbation radius rho')
        if self.needs_embeddings:
            if embeddings is None or len(embeddings) != len(scores):
                raise ValueError(f'{type(self).__name__} needs one embedding per candidate')
        picked = self._select(scores, budget, rng, embeddings)
        assert len(picked) == budget and len(np.unique(picked)) == budget
        return picked

    def _select(self, scores: np.ndarray, budget: int, rng: np.random.Generator,
                embeddings: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError
