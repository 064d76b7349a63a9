"""Image classification as an active-learning task (one unit per image)."""
from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

from ...core.task import BaseTask
from ...registry import DATASETS, MODELS, OPTIMIZERS, TASKS
from .datasets import ClassificationData


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation: zero-pad, random crop back to size, random h-flip.

    Args:
        x: Batch of images ``[B, C, H, W]``.
        generator: Source of the random offsets and flips.
        padding: Pixels of zero padding on each side.

    Returns:
        Augmented batch, ``[B, C, H, W]``.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(b):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def _index(sample_ids: np.ndarray) -> torch.Tensor:
    """Sample ids as a tensor index (a copy: ids may come from read-only views)."""
    return torch.tensor(np.asarray(sample_ids, dtype=np.int64))


@TASKS.register_module()
class ClassificationTask(BaseTask):
    """Classification on an in-memory dataset; sample ids are training-set indices.

    Args:
        dataset: Config of a registered dataset builder (e.g. ``dict(type='DigitsData')``).
        model: Config of a registered model; ``in_channels`` and ``num_classes`` are filled
            from the dataset.
        optimizer: Optimizer config: any torch optimizer (``dict(type='Adam', lr=1e-3)``) or
            ``dict(type='SAM', base_optimizer=dict(type='Adam', lr=1e-3), rho=0.05)``.
        epochs: Training epochs per round.
        batch_size: Training batch size.
        eval_batch_size: Batch size for evaluation and scoring inputs.
        augment: Random crop + flip during training (CIFAR/SVHN-style images).
        device: Torch device.
        dtype: ``'float32'`` or ``'float64'`` (float64 for exactness tests).
        log_interval: Print the training loss every this many epochs.
    """

    def __init__(self, dataset: dict, model: dict, optimizer: dict, epochs: int = 50,
                 batch_size: int = 64, eval_batch_size: int = 512, augment: bool = False,
                 device: str = 'cpu', dtype: str = 'float32', log_interval: int = 10) -> None:
        self.data: ClassificationData = DATASETS.build(dataset)
        self.model_cfg = dict(model)
        self.optimizer_cfg = dict(optimizer)
        self.epochs = epochs
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.augment = augment
        self.device = torch.device(device)
        self.dtype = {'float32': torch.float32, 'float64': torch.float64}[dtype]
        self.log_interval = log_interval
        self._labels: dict[int, int] = {}

    # ------------------------------------------------------------------ data
    def sample_ids(self) -> np.ndarray:
        return np.arange(len(self.data.train_y), dtype=np.int64)

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        ys = self.data.train_y[_index(sample_ids)]
        return {int(i): int(y) for i, y in zip(sample_ids, ys)}

    def stratify_labels(self, sample_ids: np.ndarray) -> np.ndarray:
        return self.data.train_y[_index(sample_ids)].numpy()

    def set_annotations(self, annotations: dict[int, Any]) -> None:
        for i, y in annotations.items():
            y = int(y)
            if not 0 <= y < self.data.num_classes:
                raise ValueError(f'label {y} of sample {i} is outside 0..'
                                 f'{self.data.num_classes - 1}')
            self._labels[int(i)] = y

    def decode_annotation(self, value: Any) -> int:
        return int(value)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.data.normalize(x).to(device=self.device, dtype=self.dtype)

    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        ids = np.asarray(sample_ids, dtype=np.int64)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            yield chunk, self._inputs(self.data.train_x[_index(chunk)])

    # ------------------------------------------------------------------ model
    def build_model(self, seed: int) -> nn.Module:
        cfg = dict(self.model_cfg)
        cfg.setdefault('in_channels', self.data.in_channels)
        cfg.setdefault('num_classes', self.data.num_classes)
        # Initialise from `seed` without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MODELS.build(cfg)
        return model.to(device=self.device, dtype=self.dtype)

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        missing = [int(i) for i in labeled_ids if int(i) not in self._labels]
        if missing:
            raise ValueError(f'no annotation for labeled samples {missing[:5]}')
        ids = _index(labeled_ids)
        x_all = self.data.train_x[ids]
        y_all = torch.tensor([self._labels[int(i)] for i in labeled_ids], dtype=torch.long)
        generator = torch.Generator().manual_seed(seed)
        optimizer = OPTIMIZERS.build({**self.optimizer_cfg, 'params': model.parameters()})
        model.train()
        start = time.perf_counter()
        for epoch in range(1, self.epochs + 1):
            order = torch.randperm(len(ids), generator=generator)
            total, count = 0.0, 0
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                x = self._inputs(x_all[idx])
                if self.augment:
                    x = random_crop_flip(x, generator)
                y = y_all[idx].to(self.device)

                def closure() -> torch.Tensor:
                    optimizer.zero_grad()
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    return loss

                # Every optimizer here (torch's and SAM) takes a closure that recomputes the
                # loss; SAM calls it twice (at θ and at θ + ε).
                loss = optimizer.step(closure)
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            if epoch % self.log_interval == 0 or epoch == self.epochs:
                print_log(f'  epoch {epoch}/{self.epochs}: loss {total / max(count, 1):.4f} '
                          f'({time.perf_counter() - start:.1f}s)', logger='current')
        model.eval()
        return model

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        correct = 0
        for s in range(0, len(self.data.test_y), self.eval_batch_size):
            x = self._inputs(self.data.test_x[s:s + self.eval_batch_size])
            pred = model(x).argmax(dim=1).cpu()
            correct += int((pred == self.data.test_y[s:s + self.eval_batch_size]).sum())
        return {'accuracy': 100.0 * correct / len(self.data.test_y)}

    # ------------------------------------------------------------------ scoring protocol
    def pseudo_label(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Argmax class of each image, ``[B]`` (model in eval mode)."""
        return model(inputs).argmax(dim=1)

    def loss_per_unit(self, model: nn.Module, inputs: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each image against ``targets``, ``[B]``."""
        return F.cross_entropy(model(inputs), targets, reduction='none')

    def embed(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Penultimate features, ``[B, D]``."""
        return model.forward_features(inputs)
