"""The contract between the task-agnostic core and a task adapter.

The loop, scorers, selectors and oracles only ever talk to a task through this class, which is
what lets one SAAL implementation serve classification (one unit per image), detection (one
unit per pseudo-box) and segmentation (one unit per pixel).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn


class BaseTask(ABC):
    """A task adapter: data keyed by stable ids, a model, training, evaluation, unit losses.

    Subclasses implement the abstract methods. Conventions every implementation must keep:

    * ``sample_ids`` are absolute and stable across runs (dataset index, image id).
    * :meth:`loss_per_unit` is *unreduced* and *per sample*: the loss of sample ``i`` must not
      depend on which other samples share the batch (no batch-level normalisation), because the
      scorers compare samples that were scored in different batches.
    * Nothing random happens without a seed passed in by the loop.
    """

    # ------------------------------------------------------------------ data
    @abstractmethod
    def sample_ids(self) -> np.ndarray:
        """Ids of every sample of the pool (labeled or not), unique ``int64``, shape ``[N]``."""

    @abstractmethod
    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        """True annotations of ``sample_ids``; only a simulated oracle may call this."""

    def stratify_labels(self, sample_ids: np.ndarray) -> np.ndarray | None:
        """Class of each sample for a class-balanced initial set, shape ``[K]``, or ``None``.

        Returning ``None`` means the task cannot balance and the loop refuses a balanced
        initial set with a clear error.
        """
        return None

    @abstractmethod
    def set_annotations(self, annotations: dict[int, Any]) -> None:
        """Add oracle answers (sample id -> annotation) to what training may use."""

    def encode_annotation(self, annotation: Any) -> Any:
        """Turn one annotation into a JSON-serialisable value (for the persisted state)."""
        return annotation

    def decode_annotation(self, value: Any) -> Any:
        """Inverse of :meth:`encode_annotation`."""
        return value

    # ------------------------------------------------------------------ model
    @abstractmethod
    def build_model(self, seed: int) -> nn.Module:
        """A freshly initialised model; initialisation is a function of ``seed`` only."""

    @abstractmethod
    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        """Train ``model`` on the annotated samples ``labeled_ids``; return the trained model."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` on the task's evaluation split (e.g. ``{'accuracy': 91.2}``)."""

    # ------------------------------------------------------------------ scoring protocol
    @abstractmethod
    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(ids, inputs)`` batches over ``sample_ids`` in the given order.

        Args:
            sample_ids: Ids to iterate, shape ``[N]``.
            batch_size: Samples per batch; the last batch may be smaller.

        Yields:
            ids of the batch (shape ``[B]``) and model inputs ready for :meth:`loss_per_unit`.
        """

    @abstractmethod
    def pseudo_label(self, model: nn.Module, inputs: Any) -> Any:
        """Pseudo-labels of a batch from ``model`` (already in eval mode, under no_grad)."""

    @abstractmethod
    def loss_per_unit(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        """Unreduced loss of each unit of each sample.

        Args:
            model: The network (possibly with perturbed or functionally replaced weights).
            inputs: A batch from :meth:`pool_batches`.
            targets: Pseudo-labels from :meth:`pseudo_label` for the same batch.

        Returns:
            Tensor of shape ``[B, *U]``: ``[B]`` for images, ``[B, n_boxes]`` for boxes,
            ``[B, H, W]`` for pixels.
        """

    def embed(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Embedding of each sample for diversity-based selectors, shape ``[B, D]``."""
        raise NotImplementedError(
            f'{type(self).__name__} has no embed(): choose a selector that uses scores only')

    # ------------------------------------------------------------------ helpers
    def batch_size_of(self, inputs: Any) -> int:
        """Number of samples in a batch of inputs (first dimension for tensors)."""
        if isinstance(inputs, torch.Tensor):
            return inputs.shape[0]
        raise NotImplementedError(f'{type(self).__name__} must implement batch_size_of()')
