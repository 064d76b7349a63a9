"""Detection baselines of the paper's Figure 10 (Entropy, BADGE), on the detection task.

Both use the same pseudo-boxes as box-sum SAAL (:meth:`DetectionTask.pseudo_boxes`), so the
three methods differ only in how a box is scored. Random is the core's ``RandomScorer``.

* :class:`BoxEntropyScorer`: a box's uncertainty is the entropy of its class distribution as
  its detector family defines it (SSD: the softmax of the anchor it was detected from,
  background included; RetinaNet: the sum of its per-class binary entropies); an image's score
  aggregates its boxes (``'sum'`` by default, like SAAL's box sum; ``'max'`` and ``'mean'``
  are offered). Images without pseudo-boxes score 0.
* BADGE needs no detection-specific scorer: :meth:`DetectionTask.gradient_embedding`
  answers the task protocol that the project's ``GradientNormScorer`` and
  ``BADGESelector`` use (``configs/det/ssd_voc_badge.py``).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ...registry import SCORERS
from ...core.scorer import BaseScorer, ScoreResult

AGGREGATIONS = ('sum', 'max', 'mean')


@SCORERS.register_module()
class BoxEntropyScorer(BaseScorer):
    """Entropy of the pseudo-boxes' class distributions, aggregated per image.

    Args:
        batch_size: Images per forward pass (scores do not depend on it).
        aggregate: ``'sum'``, ``'max'`` or ``'mean'`` over an image's boxes.
        log_interval: Progress output every this many images.
    """

    def __init__(self, batch_size: int = 8, aggregate: str = 'sum',
                 log_interval: int = 500) -> None:
        super().__init__(log_interval=log_interval)
        if aggregate not in AGGREGATIONS:
            raise ValueError(f'aggregate must be one of {AGGREGATIONS}, got {aggregate!r}')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.batch_size = batch_size
        self.aggregate = aggregate

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        scores, units, num_boxes = [], [], []
        start, last = time.perf_counter(), [0]
        with torch.no_grad():
            for ids, inputs in task.pool_batches(sample_ids, self.batch_size):
                for boxes in task.pseudo_boxes(model, inputs):
                    ent = task.box_entropies(boxes).double().cpu().numpy()
                    units.append(ent)
                    num_boxes.append(len(ent))
                    if len(ent) == 0:
                        scores.append(0.0)
                    else:
                        scores.append(float(getattr(np, self.aggregate)(ent)))
                self._progress(len(scores), len(sample_ids), start, last)
        return ScoreResult(sample_ids=sample_ids, scores=np.asarray(scores, dtype=np.float64),
                           unit_scores=units,
                           extras={'num_boxes': np.asarray(num_boxes, dtype=np.int64)})


__all__ = ['AGGREGATIONS', 'BoxEntropyScorer']
