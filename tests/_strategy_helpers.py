"""Small fakes shared by the strategy tests: a task over fixed points with a linear model."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class PointsTask:
    """Duck-typed task whose samples are given vectors; ``embed`` and ``predict_logits``
    apply the model (or return the points for ``embed`` when the model is ``None``)."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = torch.as_tensor(np.asarray(points, dtype=np.float64))

    def sample_ids(self) -> np.ndarray:
        return np.arange(len(self.points), dtype=np.int64)

    def pool_batches(self, sample_ids, batch_size):
        ids = np.asarray(sample_ids, dtype=np.int64)
        for s in range(0, len(ids), batch_size):
            chunk = ids[s:s + batch_size]
            yield chunk, self.points[torch.as_tensor(chunk)]

    def embed(self, model, inputs):
        return inputs

    def predict_logits(self, model, inputs):
        return model(inputs)


class PoolOf:
    """A task whose pool (``sample_ids``) is restricted to ``ids``; everything else, batches of
    any id included, is the wrapped task's."""

    def __init__(self, task, ids) -> None:
        self._task = task
        self._ids = np.unique(np.asarray(ids, dtype=np.int64))

    def sample_ids(self) -> np.ndarray:
        return self._ids

    def __getattr__(self, name):
        return getattr(self._task, name)


class Identity(nn.Module):
    def forward(self, x):
        return x
