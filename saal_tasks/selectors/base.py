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


class BaseUnitSelector:
    """Chooses units *inside* samples (pixels of an image) instead of whole samples.

    Used when annotation is partial: every scored sample may receive a few more annotated
    units per round (segmentation's region- and pixel-based annotation). The loop passes
    each candidate's unit score map and the mask of its units already annotated; the
    selector returns, per candidate, the flat indices of the units to annotate now.

    Attributes:
        selects_units: Marks unit selectors for the loop.
        needs_embeddings: Unit selectors work on scores only.
    """

    selects_units: bool = True
    needs_embeddings: bool = False

    def select_units(self, unit_scores: list[np.ndarray], labeled: list[np.ndarray],
                     rng: np.random.Generator) -> list[np.ndarray]:
        """Pick units to annotate in each candidate.

        Args:
            unit_scores: Per candidate, a score map ``[*U]`` (e.g. ``[H, W]``), higher = more
                informative; finite.
            labeled: Per candidate, a bool mask ``[*U]`` of units annotated before.
            rng: Generator for selectors that sample.

        Returns:
            Per candidate, sorted unique flat indices (``int64``) of units to annotate now,
            none of them already labeled; an array may be empty.
        """
        raise NotImplementedError
