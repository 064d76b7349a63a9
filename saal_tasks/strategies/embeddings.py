"""Sample embeddings for the diversity selectors (Coreset, ProbCover), named by config.

* :class:`ModelFeatures` — the current model's penultimate features (``task.embed``); the
  default, since no pretrained self-supervised encoder ships with this project.
* :class:`FlatInputs` — the model inputs flattened (pixels), independent of the model.
* :class:`PrecomputedEmbedding` — vectors stored in a ``.npz`` file keyed by sample id, e.g.
  self-supervised (SimCLR) features computed offline, as ProbCover uses.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..registry import EMBEDDINGS
from .context import batched_eval

if TYPE_CHECKING:  # pragma: no cover
    from ..core.task import BaseTask


class Embedding:
    """Maps sample ids to vectors, shape ``[N, D]``."""

    def __call__(self, task: 'BaseTask', model: torch.nn.Module,
                 sample_ids: np.ndarray) -> np.ndarray:
        """Embed ``sample_ids`` (shape ``[N]``) into a float64 array ``[N, D]``."""
        raise NotImplementedError


@EMBEDDINGS.register_module()
class ModelFeatures(Embedding):
    """``task.embed(model, inputs)`` of the current model, in eval mode.

    Args:
        batch_size: Samples per forward pass.
    """

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size

    def __call__(self, task, model, sample_ids):
        return batched_eval(task, model, sample_ids, self.batch_size, task.embed)


@EMBEDDINGS.register_module()
class FlatInputs(Embedding):
    """The task's (normalised) model inputs, flattened; tensor inputs only.

    Args:
        batch_size: Samples per batch.
    """

    def __init__(self, batch_size: int = 1024) -> None:
        self.batch_size = batch_size

    def __call__(self, task, model, sample_ids):
        return batched_eval(task, model, sample_ids, self.batch_size,
                            lambda _, inputs: inputs.flatten(1))


@EMBEDDINGS.register_module()
class PrecomputedEmbedding(Embedding):
    """Vectors read from a ``.npz`` file with arrays ``sample_ids [M]`` and ``embeddings [M, D]``.

    Args:
        path: The file; every requested id must be in it.
    """

    def __init__(self, path: str) -> None:
        from ..core.errors import ConfigError  # here: the core imports the selectors

        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f'embedding file {file} does not exist: write an .npz with '
                                    'arrays sample_ids [M] and embeddings [M, D]')
        with np.load(file, allow_pickle=False) as data:
            if 'sample_ids' not in data.files or 'embeddings' not in data.files:
                raise ConfigError(f'{file} must hold arrays sample_ids and embeddings, has '
                                 f'{data.files}')
            ids = np.asarray(data['sample_ids'], dtype=np.int64)
            vectors = np.asarray(data['embeddings'], dtype=np.float64)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ConfigError(f'{file}: embeddings must be [M, D] with M = len(sample_ids), got '
                             f'{vectors.shape} for {len(ids)} ids')
        order = np.argsort(ids)
        self._ids, self._vectors = ids[order], vectors[order]

    def __call__(self, task, model, sample_ids):
        ids = np.asarray(sample_ids, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._ids, ids), 0, len(self._ids) - 1)
        missing = self._ids[pos] != ids
        if missing.any():
            from ..core.errors import ConfigError  # here: the core imports the selectors

            raise ConfigError(f'no precomputed embedding for sample ids '
                           f'{ids[missing][:5].tolist()}: recompute the file for this dataset')
        return self._vectors[pos]
