"""Oracles answer a query with annotations; the loop does not know which kind it talks to."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.task import BaseTask
from ..registry import ORACLES


class BaseOracle:
    """Answers queries: ``annotate(task, ids)`` returns one annotation per queried id."""

    def annotate(self, task: BaseTask, sample_ids: np.ndarray) -> dict[int, Any]:
        """Annotations of ``sample_ids`` (sample id -> task-specific annotation)."""
        raise NotImplementedError


@ORACLES.register_module()
class SimulatedOracle(BaseOracle):
    """Reveals the dataset's ground truth, as in every benchmark of the paper."""

    def annotate(self, task: BaseTask, sample_ids: np.ndarray) -> dict[int, Any]:
        return task.ground_truth(np.asarray(sample_ids, dtype=np.int64))
