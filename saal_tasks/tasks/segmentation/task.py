"""The domain-adaptive segmentation task: labeled source (SYNTHIA), actively labeled target.

The pool is the target training images (Cityscapes train); a sample's units are its pixels at
the target resolution, and annotation is partial: each selection round reveals a few regions of
every image (:class:`~saal_tasks.selectors.region.RegionSelector`). Training follows RIPU's
protocol: every iteration takes a source batch (full labels) and a target batch (labels only
where revealed), loss = source CE + CE on revealed target pixels (+ optional local-consistency
and negative-learning terms). :meth:`train_steps` trains an iteration window of one run (the
in-run schedule: selections at fixed iterations); :meth:`train` trains ``iters_per_round``
iterations (the retrain-per-round schedule).

Scoring protocol for the core: ``pool_batches`` gives normalised target images, the
pseudo-label is the per-pixel argmax, ``loss_per_unit`` the per-pixel cross-entropy
``[B, H, W]`` — so the task-agnostic SAAL scorer yields pixel-wise SAAL maps, and
``RegionImpurityScorer`` multiplies them with region impurity (RI-SAAL).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

from ...core.dist import average_gradients, broadcast_buffers, rank_and_world
from ...core.errors import AnnotationError, ConfigError
from ...core.task import BaseTask
from ...registry import TASKS
from .annotations import PixelLabels, decode_pixels, encode_pixels
from .classes import CLASSES16, IGNORE_INDEX
from .datasets import build_seg_dataset, read_sample
from .label_files import export_region_query, read_label_zip
from .losses import local_consistency_loss, negative_learning_loss
from .metrics import SegmentationMeter
from .models import build_segmentor, deeplab_v2, deeplab_v3plus, segment_logits, tiny

#: Model builders a config can name with ``model=dict(arch=...)``.
ARCHITECTURES = {'tiny': tiny, 'deeplab_v2': deeplab_v2, 'deeplab_v3plus': deeplab_v3plus}
#: ImageNet statistics (RGB, 0..255) the ResNet backbones expect.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


class ImageSet:
    """Images and train-id labels of one dataset split, resized to one size.

    Args:
        dataset: Dataset config ``dict(kind=..., data_root=..., split=...)``.
        size: ``(height, width)`` the images (bilinear) and labels (nearest) are resized to.
        cache: Keep decoded, resized samples in memory (small data); otherwise read the files
            on every access.
        limit: Use only the first ``limit`` samples (quick evaluation); ``None`` = all.
    """

    def __init__(self, dataset: dict, size: tuple[int, int], cache: bool = True,
                 limit: int | None = None) -> None:
        import cv2  # noqa: F401  (fail early: reading needs OpenCV)
        self.spec = dict(dataset)
        if 'kind' not in self.spec or 'data_root' not in self.spec:
            raise ConfigError(f"a segmentation dataset needs kind and data_root, got {dataset}: "
                              "e.g. dict(kind='cityscapes', data_root='data/cityscapes', "
                              "split='train')")
        self.dataset = build_seg_dataset(self.spec['kind'], self.spec['data_root'],
                                         self.spec.get('split'))
        self.size = (int(size[0]), int(size[1]))
        self.length = len(self.dataset) if limit is None else min(limit, len(self.dataset))
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._eval_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``[h, w, 3]`` uint8 RGB and label ``[h, w]`` at the files' resolution."""
        return read_sample(self.dataset, index)

    def _resized(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        import cv2
        height, width = self.size
        if array.shape[:2] == (height, width):
            return array
        return cv2.resize(array, (width, height), interpolation=interpolation)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized image ``[H, W, 3]`` uint8 and label ``[H, W]`` uint8."""
        if index in self._cache:
            return self._cache[index]
        import cv2
        image, label = self.raw(index)
        pair = (self._resized(image, cv2.INTER_LINEAR), self._resized(label, cv2.INTER_NEAREST))
        if self.cache:
            self._cache[index] = pair
        return pair

    def for_evaluation(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized image ``[H, W, 3]`` and the label at the file's resolution ``[h, w]``.

        Read once per call (or once per run with ``cache``): evaluation predicts at the
        task's size and scores at the label's own size.
        """
        if index in self._eval_cache:
            return self._eval_cache[index]
        import cv2
        image, label = self.raw(index)
        pair = (self._resized(image, cv2.INTER_LINEAR), label)
        if self.cache:
            self._eval_cache[index] = pair
        return pair


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """Stack uint8 RGB images ``[H, W, 3]`` into a normalised float batch ``[B, 3, H, W]``."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (batch - mean) / std


@TASKS.register_module()
class SegmentationTask(BaseTask):
    """Active domain adaptation for semantic segmentation (source -> target).

    Args:
        source: Source dataset ``dict(kind='synthia', data_root=...)`` (fully labeled).
        target: Target pool ``dict(kind='cityscapes', data_root=..., split='train')``.
        val: Target evaluation set ``dict(kind='cityscapes', data_root=..., split='val')``.
        model: ``dict(arch='tiny' | 'deeplab_v2' | 'deeplab_v3plus', backbone_weights=...)``
            or a full mmseg segmentor config (with ``type``).
        source_size: ``(H, W)`` source images are resized to (RIPU: 760 x 1280).
        target_size: ``(H, W)`` target images are resized to; pixels at this size are the
            annotation units (RIPU: 640 x 1280).
        batch_size: Source images per iteration.
        target_batch_size: Target images per iteration.
        lr: Base learning rate (SGD); the decode head uses ``lr * head_lr_mult``.
        head_lr_mult: Learning-rate factor of the decode head (DeepLab's classifier: 10).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        poly_power: Poly schedule ``lr * (1 - it / total) ** poly_power``.
        iters_per_round: Iterations per round in the retrain-per-round schedule.
        local_consistency_weight: Weight of the local-consistency term on target batches.
        negative_learning_weight: Weight of the negative-learning term on unlabeled target
            pixels.
        negative_learning_threshold: Probability below which a class is a negative label.
        flip: Random horizontal flips in training.
        cache_images: Keep decoded images in memory (demo-sized data).
        val_limit: Evaluate on the first ``val_limit`` images only (``None`` = all).
        eval_batch_size: Images per forward pass in evaluation.
        log_interval: Training progress every this many iterations.
    """

    partial_annotations = True
    needs_initial_labels = False

    def __init__(self, source: dict, target: dict, val: dict, model: dict,
                 source_size: tuple[int, int] = (760, 1280),
                 target_size: tuple[int, int] = (640, 1280), batch_size: int = 2,
                 target_batch_size: int = 2, lr: float = 2.5e-4, head_lr_mult: float = 10.0,
                 momentum: float = 0.9, weight_decay: float = 5e-4, poly_power: float = 0.9,
                 iters_per_round: int = 1000, local_consistency_weight: float = 0.0,
                 negative_learning_weight: float = 0.0,
                 negative_learning_threshold: float = 0.05, flip: bool = True,
                 cache_images: bool = False, val_limit: int | None = None,
                 eval_batch_size: int = 2, log_interval: int = 50) -> None:
        for name, value in (('batch_size', batch_size), ('target_batch_size', target_batch_size),
                            ('iters_per_round', iters_per_round),
                            ('eval_batch_size', eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f'task.{name} must be an integer >= 1, got {value!r}')
        if not lr > 0:
            raise ConfigError(f'task.lr must be > 0, got {lr!r}')
        self.model_cfg = self._model_config(model)
        self.source = ImageSet(source, source_size, cache_images)
        self.target = ImageSet(target, target_size, cache_images)
        self.val = ImageSet(val, target_size, cache_images, limit=val_limit)
        self.num_classes = len(CLASSES16)
        self.batch_size, self.target_batch_size = batch_size, target_batch_size
        self.lr, self.head_lr_mult = lr, head_lr_mult
        self.momentum, self.weight_decay, self.poly_power = momentum, weight_decay, poly_power
        self.iters_per_round = iters_per_round
        self.lc_weight = local_consistency_weight
        self.nl_weight = negative_learning_weight
        self.nl_threshold = negative_learning_threshold
        self.flip = flip
        self.eval_batch_size = eval_batch_size
        self.log_interval = log_interval
        height, width = self.target.size
        self.labels = PixelLabels(height * width, self.num_classes)

    def _model_config(self, model: dict) -> dict:
        model = dict(model)
        if 'type' in model:  # a full mmseg segmentor config
            return model
        arch = model.pop('arch', None)
        if arch not in ARCHITECTURES:
            raise ConfigError(f'task.model.arch must be one of {sorted(ARCHITECTURES)}, got '
                              f'{arch!r} (or give a full mmseg segmentor config with type)')
        return ARCHITECTURES[arch](num_classes=len(CLASSES16), **model)

    # ------------------------------------------------------------------ data
    def sample_ids(self) -> np.ndarray:
        return np.arange(len(self.target), dtype=np.int64)

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, np.ndarray]:
        """Full train-id label maps ``[H, W]`` (uint8) at the target resolution."""
        return {int(i): self.target.get(int(i))[1] for i in sample_ids}

    def restrict_annotation(self, annotation: np.ndarray, units: np.ndarray) -> dict:
        units = np.asarray(units, dtype=np.int64)
        return {'units': units, 'labels': np.asarray(annotation).reshape(-1)[units]}

    def validate_annotations(self, annotations: dict[int, Any]) -> None:
        known = len(self.target)
        for sample_id, annotation in annotations.items():
            if not 0 <= int(sample_id) < known:
                raise AnnotationError(f'sample {sample_id} is not a target image (0..'
                                      f'{known - 1})')
            self.labels.check(int(sample_id), annotation)

    def set_annotations(self, annotations: dict[int, Any]) -> None:
        for sample_id, annotation in annotations.items():
            self.labels.add(int(sample_id), annotation)

    def encode_annotation(self, annotation: dict) -> dict:
        return encode_pixels(annotation)

    def decode_annotation(self, value: dict) -> dict:
        return decode_pixels(value)

    def export_query(self, sample_ids: np.ndarray, folder: Path,
                     units: Sequence[np.ndarray] | None = None) -> dict:
        """Write each queried image and a mask of its pixels to label (see ``label_files``).

        Args:
            sample_ids: Queried target images, shape ``[K]``.
            folder: The query folder.
            units: Per image, flat pixel indices (at the target resolution) to label.

        Returns:
            The image size and file names, for the query list.
        """
        if units is None:
            raise ConfigError('segmentation queries ask for pixels of images, not whole '
                              'images: use a unit selector and al.initial_size=0')
        ids = np.asarray(sample_ids, dtype=np.int64)
        return export_region_query(
            [self.target.get(int(i))[0] for i in ids], ids, units, Path(folder),
            [os.path.basename(self.target.dataset.get_data_info(int(i))['img_path'])
             for i in ids])

    def read_answers(self, path: Path) -> list[tuple[int, np.ndarray]]:
        """Full label maps ``[H, W]`` from a zip of label PNGs; the oracle keeps only the
        queried pixels (:meth:`restrict_annotation`)."""
        return read_label_zip(Path(path), self.target.size)

    def labeled_units(self, sample_ids: np.ndarray) -> list[np.ndarray]:
        return [self.labels.revealed(int(i)).reshape(self.target.size) for i in sample_ids]

    def annotation_stats(self) -> dict[str, float]:
        height, width = self.target.size
        revealed = self.labels.num_revealed()
        return {'labeled_pixels': revealed,
                'labeled_pixel_percent': 100.0 * revealed / (len(self.target) * height * width),
                'labeled_images': len(self.labels.images())}

    # ------------------------------------------------------------------ model
    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_segmentor(self.model_cfg)

    def _optimizer(self, model: nn.Module) -> torch.optim.SGD:
        head = [p for p in model.decode_head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        return torch.optim.SGD([dict(params=rest, lr=self.lr),
                                dict(params=head, lr=self.lr * self.head_lr_mult)],
                               lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def _batch(self, images: ImageSet, indices: np.ndarray, flips: np.ndarray,
               targets: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 3, H, W]`` and labels ``[B, H, W]`` (revealed pixels for targets)."""
        pictures, labels = [], []
        for index, flip in zip(indices, flips):
            image, label = images.get(int(index))
            if targets:
                label = self.labels.targets(int(index)).reshape(images.size)
            if flip:
                image, label = image[:, ::-1], label[:, ::-1]
            pictures.append(np.ascontiguousarray(image))
            labels.append(np.ascontiguousarray(label))
        return to_tensor(pictures), torch.from_numpy(np.stack(labels)).long()

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        model, _ = self.train_steps(model, labeled_ids, seed, 0, self.iters_per_round,
                                    self.iters_per_round, None)
        return model

    def train_steps(self, model: nn.Module, labeled_ids: np.ndarray, seed: int, start: int,
                    stop: int, total: int, optim_state: dict | None
                    ) -> tuple[nn.Module, dict]:
        rank, world = rank_and_world()
        if self.batch_size % world or self.target_batch_size % world:
            raise ConfigError(f'task.batch_size ({self.batch_size}) and task.target_batch_size '
                              f'({self.target_batch_size}) must be multiples of the number of '
                              f'processes ({world}): each takes an equal part of every batch')
        optimizer = self._optimizer(model)
        if optim_state is not None:
            optimizer.load_state_dict(optim_state)
        # Distributed: every rank draws the same global batches (same generator) and trains on
        # its part; averaged gradients keep the ranks' weights identical.
        rng = np.random.default_rng(seed)
        # Target batches come from the whole pool: CE only where pixels are revealed, the
        # optional unsupervised terms everywhere (RIPU draws target images the same way).
        num_source, num_target = len(self.source), len(self.target)
        model.train()
        began, losses = time.perf_counter(), []
        for it in range(start, stop):
            factor = (1 - it / total) ** self.poly_power
            for group, base in zip(optimizer.param_groups,
                                   (self.lr, self.lr * self.head_lr_mult)):
                group['lr'] = base * factor
            src = rng.integers(num_source, size=self.batch_size)
            tgt = rng.integers(num_target, size=self.target_batch_size)
            flips = rng.random(self.batch_size + self.target_batch_size) < 0.5 if self.flip \
                else np.zeros(self.batch_size + self.target_batch_size, bool)
            src_flips, tgt_flips = flips[:self.batch_size], flips[self.batch_size:]
            if world > 1:
                src, src_flips, tgt, tgt_flips = (np.array_split(a, world)[rank] for a in
                                                  (src, src_flips, tgt, tgt_flips))
            x_s, y_s = self._batch(self.source, src, src_flips, targets=False)
            x_t, y_t = self._batch(self.target, tgt, tgt_flips, targets=True)
            loss, parts = self._loss(model, x_s, y_s, x_t, y_t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(model.parameters())
            optimizer.step()
            losses.append(parts)
            done = it + 1 - start
            if done % self.log_interval == 0 or it + 1 == stop:
                # A term is averaged over the iterations that had it (no revealed pixels in
                # a target batch: no target term).
                keys = [k for k in ('loss_src', 'loss_tgt', 'loss_lc', 'loss_nl')
                        if any(k in p for p in losses)]
                mean = {k: float(np.mean([p[k] for p in losses if k in p])) for k in keys}
                text = ', '.join(f'{k} {v:.4f}' for k, v in mean.items())
                print_log(f'iter {it + 1}/{total}: {text}, lr {optimizer.param_groups[0]["lr"]:.2e}'
                          f' ({done / (time.perf_counter() - began):.1f} it/s)',
                          logger='current')
                losses = []
        broadcast_buffers(model)
        return model, optimizer.state_dict()

    def _loss(self, model: nn.Module, x_s: torch.Tensor, y_s: torch.Tensor,
              x_t: torch.Tensor, y_t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Source CE + CE on revealed target pixels (+ optional RIPU terms) and its parts."""
        loss = F.cross_entropy(segment_logits(model, x_s), y_s, ignore_index=IGNORE_INDEX)
        parts = {'loss_src': loss.item()}
        labeled = y_t != IGNORE_INDEX
        need_target = labeled.any() or self.lc_weight or self.nl_weight
        if need_target:
            logits_t = segment_logits(model, x_t)
            if labeled.any():
                target_ce = F.cross_entropy(logits_t, y_t, ignore_index=IGNORE_INDEX)
                loss = loss + target_ce
                parts['loss_tgt'] = target_ce.item()
            probs = logits_t.softmax(dim=1)
            if self.lc_weight:
                term = local_consistency_loss(probs)
                loss = loss + self.lc_weight * term
                parts['loss_lc'] = term.item()
            if self.nl_weight:
                term = negative_learning_loss(probs, self.nl_threshold, mask=~labeled)
                loss = loss + self.nl_weight * term
                parts['loss_nl'] = term.item()
        return loss, parts

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """mIoU over 16 and 13 classes, pixel accuracy and per-class IoU on ``val``.

        Predictions are made at the target resolution and upsampled to each label's own
        resolution (Cityscapes is scored at 2048 x 1024, as in RIPU).
        """
        meter = SegmentationMeter(num_classes=self.num_classes)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(self.val), self.eval_batch_size):
                    indices = range(start, min(start + self.eval_batch_size, len(self.val)))
                    pairs = [self.val.for_evaluation(i) for i in indices]
                    logits = segment_logits(model, to_tensor([image for image, _ in pairs]))
                    for k, (_, label) in enumerate(pairs):
                        full = F.interpolate(logits[k:k + 1], size=label.shape,
                                             mode='bilinear', align_corners=False)
                        meter.add(full[0].argmax(0), torch.from_numpy(label).long())
        finally:
            model.train(was_training)
        return meter.compute()

    # ------------------------------------------------------------------ scoring protocol
    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        ids = np.asarray(sample_ids, dtype=np.int64)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            yield chunk, to_tensor([self.target.get(int(i))[0] for i in chunk])

    def pixel_logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits of every pixel, ``[B, C, H, W]`` at the input resolution."""
        return segment_logits(model, inputs)

    def pseudo_label(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Per-pixel argmax of the model's prediction, ``[B, H, W]`` (int64)."""
        return segment_logits(model, inputs).argmax(dim=1)

    def pseudo_label_and_loss(self, model: nn.Module, inputs: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-labels and per-pixel CE from one forward pass (graph kept)."""
        logits = segment_logits(model, inputs)
        targets = logits.detach().argmax(dim=1)
        return targets, F.cross_entropy(logits, targets, reduction='none')

    def loss_per_unit(self, model: nn.Module, inputs: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        """Per-pixel cross-entropy against ``targets``, ``[B, H, W]`` (unreduced).

        The sharpness scorer reduces it with ``objective_reduction`` into the loss whose
        gradient defines an image's ε (see docs/segmentation.md for why the image mean).
        """
        return F.cross_entropy(segment_logits(model, inputs), targets, reduction='none')

    def batch_size_of(self, inputs: torch.Tensor) -> int:
        return inputs.shape[0]
