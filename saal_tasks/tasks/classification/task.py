"""Image classification as an active-learning task (one unit per image)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ...core.errors import AnnotationError, ConfigError
from ...core.build import build_component
from ...core.dist import rank_and_world
from ...core.task import BaseTask, batched_eval
from ...core.scorer import format_seconds
from ...registry import DATASETS, MODELS, OPTIMIZERS, TASKS, TRAIN_EXTENSIONS
from .data import ClassificationData, network_inputs, rows_of
from .label_files import export_images, read_answers


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
        train_extensions: Configs of registered ``TrainExtension``s (``TRAIN_EXTENSIONS``):
            each adds modules to every built model and a term to the training loss (e.g.
            LL4AL's loss-prediction module). Empty: plain cross-entropy training.
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'dataset': 'DATASETS', 'model': 'MODELS', 'optimizer': 'OPTIMIZERS',
                       'train_extensions': 'TRAIN_EXTENSIONS'}
    #: Options this class fills in when it builds those children (not required in configs).
    config_injected = {'model': ('in_channels', 'num_classes'), 'optimizer': ('params',)}

    def __init__(self, dataset: dict, model: dict, optimizer: dict, epochs: int = 50,
                 batch_size: int = 64, eval_batch_size: int = 512, augment: bool = False,
                 device: str = 'cpu', dtype: str = 'float32', log_interval: int = 10,
                 train_extensions: Sequence[dict] = ()) -> None:
        # Messages start with the option's name: the config boundary prefixes the key path.
        for name, value in (('epochs', epochs), ('batch_size', batch_size),
                            ('eval_batch_size', eval_batch_size), ('log_interval', log_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f'{name} must be an integer >= 1, got {value!r}')
        if dtype not in ('float32', 'float64'):
            raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.data: ClassificationData = build_component(DATASETS, dataset, 'task.dataset')
        if len(self.data.train_y) == 0:
            raise ConfigError(f'dataset {self.data.name} has no training samples: check '
                              'task.dataset (root, split)')
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
        n = len(self.data.train_y)
        self._ids = (np.arange(n, dtype=np.int64) if self.data.train_ids is None
                     else self.data.train_ids.numpy().astype(np.int64))
        self.train_extensions = [
            build_component(TRAIN_EXTENSIONS, ext, 'task.train_extensions[]')
            for ext in train_extensions]

    # ------------------------------------------------------------------ data
    def sample_ids(self) -> np.ndarray:
        return self._ids.copy()

    def sample_keys(self) -> dict[int, str] | None:
        if self.data.sample_keys is None:
            return None
        return dict(zip(self._ids.tolist(), self.data.sample_keys))

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        if self.data.unlabeled:
            raise ConfigError(f'{self.data.name} has no labels: it can be queried '
                              '(tools/query.py), not used with a simulated oracle')
        ys = self.data.train_y[rows_of(self._ids, sample_ids, self.data.name)]
        return {int(i): int(y) for i, y in zip(sample_ids, ys)}

    def stratify_labels(self, sample_ids: np.ndarray) -> np.ndarray:
        return self.data.train_y[rows_of(self._ids, sample_ids, self.data.name)].numpy()

    def validate_annotations(self, annotations: dict[int, Any]) -> None:
        for i, y in annotations.items():
            if isinstance(y, bool) or not isinstance(y, (int, np.integer)):
                raise AnnotationError(f'label {y!r} of sample {i} is not an integer class '
                                      f'index: use 0..{self.data.num_classes - 1}')
            if not 0 <= int(y) < self.data.num_classes:
                raise AnnotationError(
                    f'label {int(y)} of sample {i} is not a class of {self.data.name} '
                    f'(0..{self.data.num_classes - 1}): fix the annotation')

    def set_annotations(self, annotations: dict[int, Any]) -> None:
        self.validate_annotations(annotations)
        self._labels.update({int(i): int(y) for i, y in annotations.items()})

    def decode_annotation(self, value: Any) -> int:
        return int(value)

    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        ids = np.asarray(sample_ids, dtype=np.int64)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            rows = rows_of(self._ids, chunk, self.data.name)
            yield chunk, network_inputs(self.data, self.data.train_x[rows], self.device,
                                        self.dtype)

    # ------------------------------------------------------------------ model
    def build_model(self, seed: int) -> nn.Module:
        cfg = dict(self.model_cfg)
        cfg.setdefault('in_channels', self.data.in_channels)
        cfg.setdefault('num_classes', self.data.num_classes)
        # Initialise from `seed` without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MODELS.build(cfg).to(device=self.device, dtype=self.dtype)
            if self.train_extensions:
                example = network_inputs(self.data, self.data.train_x[:2], self.device,
                                         self.dtype)
                for extension in self.train_extensions:
                    extension.extend_model(model, example)
        return model.to(device=self.device, dtype=self.dtype)

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        missing = [int(i) for i in labeled_ids if int(i) not in self._labels]
        if missing:
            raise ValueError(f'no annotation for labeled samples {missing[:5]}')
        ids = rows_of(self._ids, labeled_ids, self.data.name)
        x_all = self.data.train_x[ids]
        y_all = torch.tensor([self._labels[int(i)] for i in labeled_ids], dtype=torch.long)
        generator = torch.Generator().manual_seed(seed)
        optimizer = OPTIMIZERS.build({**self.optimizer_cfg, 'params': model.parameters()})
        rank, world_size = rank_and_world()
        if world_size > 1 and self.train_extensions:
            raise ConfigError('task.train_extensions are not supported in distributed runs '
                              'yet: run them in one process')
        # Distributed: every rank draws the same batches (same generator) and trains on its
        # part of each; DDP averages the gradients, so the ranks' models stay identical.
        net = DistributedDataParallel(model) if world_size > 1 else model
        model.train()
        start = time.perf_counter()
        for epoch in range(1, self.epochs + 1):
            order = torch.randperm(len(ids), generator=generator)
            total, count = 0.0, 0
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                if world_size > 1:
                    if len(idx) < world_size:
                        continue  # every rank must take part in each step
                    idx = idx.tensor_split(world_size)[rank]
                x = network_inputs(self.data, x_all[idx], self.device, self.dtype)
                if self.augment:
                    x = random_crop_flip(x, generator)
                y = y_all[idx].to(self.device)

                def closure() -> torch.Tensor:
                    optimizer.zero_grad()
                    if not self.train_extensions:
                        loss = F.cross_entropy(net(x), y)
                    else:
                        sample_losses = F.cross_entropy(model(x), y, reduction='none')
                        loss = sample_losses.mean()
                        for extension in self.train_extensions:
                            loss = loss + extension.extra_loss(model, x, y, sample_losses,
                                                               epoch, self.epochs)
                    loss.backward()
                    return loss

                # Every optimizer here (torch's and SAM) takes a closure that recomputes the
                # loss; SAM calls it twice (at θ and at θ + ε).
                loss = optimizer.step(closure)
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            if epoch % self.log_interval == 0 or epoch == self.epochs:
                elapsed = time.perf_counter() - start
                left = ('' if epoch == self.epochs else
                        f', {format_seconds(elapsed / epoch * (self.epochs - epoch))} left')
                print_log(f'  epoch {epoch}/{self.epochs}: loss {total / max(count, 1):.4f} '
                          f'({elapsed:.1f}s{left})', logger='current')
        model.eval()
        return model

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        correct = 0
        for s in range(0, len(self.data.test_y), self.eval_batch_size):
            x = network_inputs(self.data, self.data.test_x[s:s + self.eval_batch_size],
                               self.device, self.dtype)
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

    def predict_logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits, ``[B, K]``."""
        return model(inputs)

    def gradient_embedding(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """BADGE's embedding: ``∂ CE(head(h), ŷ) / ∂ head.weight`` per image, ``[B, K * D]``.

        For ``z = W h + b`` and pseudo-label ``ŷ = argmax z``, the gradient of the
        cross-entropy w.r.t. ``W`` is ``(softmax(z) − onehot(ŷ)) hᵀ``; computed in closed form
        (no autograd), flattened row-major like ``head.weight`` (``[K, D]``).
        """
        features = model.forward_features(inputs)
        probs = torch.softmax(model.head(features), dim=1)
        residual = probs - F.one_hot(probs.argmax(dim=1), probs.shape[1]).to(probs.dtype)
        return (residual[:, :, None] * features[:, None, :]).flatten(1)

    # ------------------------------------------------------------------ reports
    def preview(self, sample_ids: np.ndarray,
                annotations: dict[int, Any] | None = None) -> list[np.ndarray]:
        """Each image as uint8 RGB ``[H, W, 3]`` (grey images repeated to three channels);
        a class label is written in the caption, not drawn."""
        rows = rows_of(self._ids, np.asarray(sample_ids, dtype=np.int64), self.data.name)
        images = (self.data.train_x[rows].to(torch.float32) / self.data.max_value * 255)
        pixels = images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [np.repeat(p, 3, axis=2) if p.shape[2] == 1 else p for p in pixels]

    def annotation_classes(self, annotation: Any) -> list[int]:
        return [int(annotation)]

    def class_names(self) -> list[str]:
        return list(self.data.class_names)

    # ------------------------------------------------------------------ label files
    def export_query(self, sample_ids: np.ndarray, folder: Path,
                     predictions: dict[int, Any] | None = None) -> None:
        """Write the queried images as PNGs and ``query.csv`` (see ``label_files``).

        ``predictions`` are not written: a pre-filled label column would be taken as an
        answer. Reports show them beside each picture.
        """
        rows = rows_of(self._ids, sample_ids, self.data.name)
        export_images(self.data.train_x[rows], sample_ids, self.data.max_value, folder)

    # ------------------------------------------------------------------ query mode
    @classmethod
    def query_config(cls, task_cfg: dict, data: str) -> dict:
        """The pool becomes the images under ``data`` (:func:`UnlabeledImagesData`), prepared
        like the dataset the model was trained on."""
        out = dict(task_cfg)
        out['dataset'] = dict(type='UnlabeledImagesData', root=data, like=task_cfg['dataset'])
        return out

    def predict_annotations(self, model: nn.Module, sample_ids: np.ndarray,
                            units: list[np.ndarray] | None = None) -> dict[int, int]:
        """The model's class of each image (its pseudo-label)."""
        ids = np.asarray(sample_ids, dtype=np.int64)
        logits = batched_eval(self, model, ids, 256, self.predict_logits)
        return {int(i): int(c) for i, c in zip(ids, logits.argmax(axis=1))}

    def read_answers(self, path: Path) -> list[tuple[int, int]]:
        """``(sample_id, class)`` pairs from a CSV or JSON answers file."""
        return read_answers(path, self.data.class_names)
