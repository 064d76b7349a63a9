"""Greedy selection of the highest scores (paper Algorithm 1, line 8)."""
from __future__ import annotations

import numpy as np

from ..registry import SELECTORS
from ..core.selection import BaseSelector, SelectionContext


@SELECTORS.register_module()
class TopKSelector(BaseSelector):
    """The ``budget`` highest scores; ties go to the earlier candidate (stable, deterministic)."""

    def _select(self, context: SelectionContext) -> np.ndarray:
        """Positions of the ``context.budget`` highest of ``context.scores`` (``[N]``).

        Returns:
            ``int64`` ``[budget]``, highest score first.
        """
        scores = np.asarray(context.scores, dtype=np.float64)
        return np.argsort(-scores, kind='stable')[:context.budget]
