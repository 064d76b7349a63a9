"""Multi-label classification as a task adapter: which digits appear in an image.

Each sample is a canvas of ``digits_per_image`` real handwritten digits (scikit-learn's 8×8
digits, side by side) labeled with the set of digits it shows, a 10-way multi-hot vector.
Units are labels: ``loss_per_unit`` returns one binary cross-entropy per label, ``[B, 10]``,
so the SAAL score of a canvas sums the perturbed losses of its ten labels.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score
from torch import nn

from saal_tasks.core.errors import AnnotationError
from saal_tasks.core.task import BaseTask
from saal_tasks.registry import DATASETS, MODELS, OPTIMIZERS, TASKS

NUM_LABELS = 10


def make_canvases(images: torch.Tensor, labels: torch.Tensor, count: int, per_image: int,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Put ``per_image`` random digits side by side, ``count`` times.

    Args:
        images: Digits ``[N, 1, 8, 8]``.
        labels: Their classes ``[N]``.
        count: Canvases to make.
        per_image: Digits per canvas.
        rng: Source of the digit choices.

    Returns:
        Canvases ``[count, 1, 8, 8 * per_image]`` and multi-hot labels ``[count, 10]`` int64.
    """
    picks = torch.as_tensor(np.stack([rng.choice(len(labels), per_image, replace=False)
                                      for _ in range(count)]))
    canvases = torch.cat([images[picks[:, k]] for k in range(per_image)], dim=-1)
    targets = torch.zeros(count, NUM_LABELS, dtype=torch.int64)
    targets.scatter_(1, labels[picks], 1)
    return canvases, targets


def multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """mAP (macro average precision over labels), micro-F1 and exact match, in percent.

    Args:
        logits: ``[M, 10]``; a label is predicted where its logit is positive.
        targets: ``[M, 10]`` multi-hot.
    """
    y, scores = targets.numpy(), logits.double().numpy()
    present = y.sum(axis=0) > 0  # AP is undefined for a label with no positive
    predicted = (scores > 0).astype(int)
    return {'mAP': 100.0 * average_precision_score(y[:, present], scores[:, present],
                                                   average='macro'),
            'micro_f1': 100.0 * f1_score(y, predicted, average='micro', zero_division=0),
            'exact_match': 100.0 * float((predicted == y).all(axis=1).mean())}


@TASKS.register_module()
class MultiLabelDigitsTask(BaseTask):
    """Which digits does a canvas show? Sample ids are canvas indices ``0..pool_size-1``.

    Args:
        model: Config of a registered model taking ``[B, 1, 8, 8k]`` images
            (``num_classes`` and ``in_channels`` are filled in), e.g. ``SmallCNN``.
        optimizer: Optimizer config (torch optimizers or ``SAM``).
        pool_size: Canvases in the pool (built from the digits' training split).
        test_size: Canvases for evaluation (from the test split).
        digits_per_image: Digits per canvas.
        data_seed: Seed of the canvases (same seed -> same pool, so ids are stable).
        epochs: Training epochs per round.
        batch_size: Training batch size.
        eval_batch_size: Batch size of evaluation.
        dtype: ``'float32'`` or ``'float64'``.
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'model': 'MODELS', 'optimizer': 'OPTIMIZERS'}
    #: Options this class fills in when it builds those children (not required in configs).
    config_injected = {'model': ('in_channels', 'num_classes'), 'optimizer': ('params',)}

    def __init__(self, model: dict, optimizer: dict, pool_size: int = 1500,
                 test_size: int = 500, digits_per_image: int = 2, data_seed: int = 0,
                 epochs: int = 40, batch_size: int = 32, eval_batch_size: int = 512,
                 dtype: str = 'float32') -> None:
        if not 1 <= digits_per_image <= 4:
            raise ValueError(f'digits_per_image must be 1..4, got {digits_per_image}')
        digits = DATASETS.build(dict(type='DigitsData', test_fraction=0.25, split_seed=0))
        rng = np.random.default_rng(data_seed)
        self.train_x, self.train_y = make_canvases(digits.train_x, digits.train_y, pool_size,
                                                   digits_per_image, rng)
        self.test_x, self.test_y = make_canvases(digits.test_x, digits.test_y, test_size,
                                                 digits_per_image, rng)
        self.normalize = digits.normalize
        self.model_cfg, self.optimizer_cfg = dict(model), dict(optimizer)
        self.epochs, self.batch_size, self.eval_batch_size = epochs, batch_size, eval_batch_size
        self.dtype = {'float32': torch.float32, 'float64': torch.float64}[dtype]
        self._labels: dict[int, list[int]] = {}

    # ------------------------------------------------------------------ data
    def sample_ids(self) -> np.ndarray:
        return np.arange(len(self.train_y), dtype=np.int64)

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        return {int(i): self.train_y[int(i)].tolist() for i in sample_ids}

    def validate_annotations(self, annotations: dict[int, Any]) -> None:
        for i, y in annotations.items():
            if (not isinstance(y, (list, tuple)) or len(y) != NUM_LABELS
                    or any(v not in (0, 1) for v in y)):
                raise AnnotationError(f'annotation of sample {i} must be {NUM_LABELS} '
                                      f'values 0/1 (digit present or not), got {y!r}')

    def set_annotations(self, annotations: dict[int, Any]) -> None:
        self.validate_annotations(annotations)
        self._labels.update({int(i): [int(v) for v in y] for i, y in annotations.items()})

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x).to(self.dtype)

    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        ids = np.asarray(sample_ids, dtype=np.int64)
        for s in range(0, len(ids), batch_size):
            chunk = ids[s:s + batch_size]
            yield chunk, self._inputs(self.train_x[torch.as_tensor(chunk)])

    # ------------------------------------------------------------------ model
    def build_model(self, seed: int) -> nn.Module:
        cfg = {'in_channels': 1, 'num_classes': NUM_LABELS, **self.model_cfg}
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            return MODELS.build(cfg).to(self.dtype)

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        ids = torch.as_tensor(np.asarray(labeled_ids, dtype=np.int64))
        x_all = self._inputs(self.train_x[ids])
        y_all = torch.tensor([self._labels[int(i)] for i in labeled_ids], dtype=self.dtype)
        generator = torch.Generator().manual_seed(seed)
        optimizer = OPTIMIZERS.build({**self.optimizer_cfg, 'params': model.parameters()})
        model.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(ids), generator=generator)
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]

                def closure() -> torch.Tensor:
                    optimizer.zero_grad()
                    loss = F.binary_cross_entropy_with_logits(model(x_all[idx]), y_all[idx])
                    loss.backward()
                    return loss
                optimizer.step(closure)
        return model.eval()

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        logits = torch.cat([model(self._inputs(self.test_x[s:s + self.eval_batch_size]))
                            for s in range(0, len(self.test_y), self.eval_batch_size)])
        return multilabel_metrics(logits, self.test_y)

    # ------------------------------------------------------------------ scoring protocol
    def pseudo_label(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Predicted multi-hot labels (logit > 0), ``[B, 10]`` int64."""
        return (model(inputs) > 0).long()

    def loss_per_unit(self, model: nn.Module, inputs: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of each label, ``[B, 10]`` (one unit per label)."""
        logits = model(inputs)
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                                  reduction='none')

    def embed(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model.forward_features(inputs)
