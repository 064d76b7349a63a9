"""Sample embeddings for the diversity selectors (Coreset, ProbCover), named by config.

An embedding embeds the candidates or the labeled samples of a
:class:`~saal_tasks.core.selection.SelectionContext`:

* :class:`ModelFeatures` — the current model's penultimate features (``task.embed``); the
  default, since no pretrained self-supervised encoder ships with this project. With the
  context's batch size it reuses the context's embeddings (computed once per acquisition).
* :class:`FlatInputs` — the model inputs flattened (pixels), independent of the model.
* :class:`PrecomputedEmbedding` — vectors stored in a ``.npz`` file keyed by sample id, e.g.
  self-supervised (SimCLR) features computed offline, as ProbCover uses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from ..core.selection import SelectionContext
from ..core.task import BaseTask, batched_eval
from ..registry import EMBEDDINGS

#: What an embedding can embed: the context's candidates or its labeled samples.
EMBEDDED = ('candidates', 'labeled')


def embedded_ids(context: SelectionContext, of: str) -> np.ndarray:
    """The ids that ``of`` names in ``context``.

    Args:
        context: The acquisition.
        of: ``'candidates'`` (``context.candidate_ids``, ``[N]``) or ``'labeled'``
            (``context.labeled_ids``, ``[L]``).

    Returns:
        The ids, ``int64``.
    """
    if of == 'candidates':
        return np.asarray(context.candidate_ids, dtype=np.int64)
    if of == 'labeled':
        return np.asarray(context.labeled_ids, dtype=np.int64)
    raise ValueError(f"of must be one of {EMBEDDED}, got {of!r}")


def task_and_model(context: SelectionContext, who: str) -> BaseTask:
    """The context's task, checking that the context also has a model.

    Raises:
        ValueError: The context has no task or no model (e.g. built from scores only).
    """
    if context.task is None or context.model is None:
        raise ValueError(f'{who} computes from the model: this selection context has no task '
                         'and model')
    return context.task


class Embedding:
    """Embeds the candidates or the labeled samples of an acquisition."""

    def __call__(self, context: SelectionContext, of: str) -> np.ndarray:
        """Embed the samples of ``context`` that ``of`` names.

        Args:
            context: The acquisition.
            of: ``'candidates'`` (``[N]`` ids) or ``'labeled'`` (``[L]`` ids).

        Returns:
            ``float64`` ``[N, D]`` (or ``[L, D]``), aligned with the ids.
        """
        raise NotImplementedError


@EMBEDDINGS.register_module()
class ModelFeatures(Embedding):
    """``task.embed(model, inputs)`` of the current model, in eval mode.

    When ``batch_size`` equals the context's ``embed_batch_size`` the context's cached
    embeddings are returned (:meth:`SelectionContext.embeddings`,
    :meth:`SelectionContext.labeled_embeddings`), otherwise they are computed with
    ``batch_size`` samples per pass.

    Args:
        batch_size: Samples per forward pass.
    """

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size

    def __call__(self, context: SelectionContext, of: str) -> np.ndarray:
        ids = embedded_ids(context, of)
        if self.batch_size == context.embed_batch_size:
            return context.embeddings() if of == 'candidates' else context.labeled_embeddings()
        task = task_and_model(context, type(self).__name__)
        return batched_eval(task, context.model, ids, self.batch_size, task.embed)


@EMBEDDINGS.register_module()
class FlatInputs(Embedding):
    """The task's (normalised) model inputs, flattened; tensor inputs only.

    Args:
        batch_size: Samples per batch.
    """

    def __init__(self, batch_size: int = 1024) -> None:
        self.batch_size = batch_size

    def __call__(self, context: SelectionContext, of: str) -> np.ndarray:
        ids = embedded_ids(context, of)
        task = task_and_model(context, type(self).__name__)
        return batched_eval(task, context.model, ids, self.batch_size,
                            lambda _, inputs: inputs.flatten(1))


@EMBEDDINGS.register_module()
class PrecomputedEmbedding(Embedding):
    """Vectors read from a ``.npz`` file with arrays ``sample_ids [M]`` and ``embeddings [M, D]``.

    Args:
        path: The file; every requested id must be in it.
    """

    def __init__(self, path: str) -> None:
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

    def __call__(self, context: SelectionContext, of: str) -> np.ndarray:
        ids = embedded_ids(context, of)
        pos = np.clip(np.searchsorted(self._ids, ids), 0, len(self._ids) - 1)
        missing = self._ids[pos] != ids
        if missing.any():
            raise ConfigError(f'no precomputed embedding for sample ids '
                           f'{ids[missing][:5].tolist()}: recompute the file for this dataset')
        return self._vectors[pos]
