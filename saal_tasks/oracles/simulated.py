"""The simulated oracle of every benchmark: it reveals the dataset's ground truth."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.oracle import Answers, BaseOracle
from ..core.task import BaseTask
from ..registry import ORACLES


@ORACLES.register_module()
class SimulatedOracle(BaseOracle):
    """Reveals the dataset's ground truth, as in every benchmark of the paper."""

    reveals_ground_truth = True

    def annotate(self, task: BaseTask, sample_ids: np.ndarray, round_idx: int) -> Answers:
        return task.ground_truth(np.asarray(sample_ids, dtype=np.int64))

    def annotate_units(self, task: BaseTask, sample_ids: np.ndarray,
                       units: Sequence[np.ndarray], round_idx: int) -> Answers:
        # One sample at a time: full annotations (label maps) of a whole query can be large.
        return {int(i): task.restrict_annotation(task.ground_truth(np.asarray([i]))[int(i)], u)
                for i, u in zip(sample_ids, units)}
