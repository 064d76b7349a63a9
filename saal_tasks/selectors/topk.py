"""Greedy selection of the highest scores (paper Algorithm 1, line 8)."""
from __future__ import annotations

import numpy as np

from ..registry import SELECTORS
from .base import BaseSelector


@SELECTORS.register_module()
class TopKSelector(BaseSelector):
    """The ``budget`` highest scores; ties go to the earlier candidate (stable, deterministic)."""

    def _select(self, scores, budget, rng, embeddings):
        return np.argsort(-scores, kind='stable')[:budget]
