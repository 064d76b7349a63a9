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
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.device import get_device
from torch import nn

from ...core.errors import AnnotationError, ConfigError
from ...core.task import BaseTask
from ...registry import TASKS
from .annotations import PixelAnnotationFormat, PixelLabels
from .augment import TrainPipeline
from .pictures import draw_revealed
from .classes import CLASSES16, IGNORE_INDEX
from .data import ImageSet, to_tensor
from .label_files import export_region_query, read_label_zip
from .metrics import SegmentationMeter
from .models import build_segmentor, model_config, segment_logits
from .training import SourceTargetTrainer


@TASKS.register_module()
class SegmentationTask(PixelAnnotationFormat, BaseTask):
    """Active domain adaptation for semantic segmentation (source -> target).

    Args:
        source: Source dataset ``dict(kind='synthia', data_root=...)`` (fully labeled);
            ``None`` for a task that only scores and queries (no training).
        target: Target pool ``dict(kind='cityscapes', data_root=..., split='train')``, or
            ``dict(kind='folder', data_root=...)`` for unlabeled images (query mode).
        val: Target evaluation set ``dict(kind='cityscapes', data_root=..., split='val')``;
            ``None`` for a task that does not evaluate.
        model: ``dict(arch='tiny' | 'deeplab_v2' | 'deeplab_v3plus', backbone_weights=...)``
            or a full mmseg segmentor config (with ``type``).
        source_size: ``(H, W)`` source images are resized to (RIPU: 720 x 1280).
        target_size: ``(H, W)`` target images are resized to for training and scoring
            (RIPU: 640 x 1280).
        unit_size: ``(H, W)`` of the annotation units (the pixels that are scored, selected,
            revealed and exported); the logits are upsampled to it (bilinear, corners
            aligned) before scoring, as RIPU does at the label resolution (Cityscapes:
            1024 x 2048), and the revealed labels are resized to ``target_size`` (nearest)
            for training. ``None`` = ``target_size`` (faster: no upsampling).
        batch_size: Source images per iteration.
        target_batch_size: Target images per iteration.
        lr: Base learning rate (SGD); the decode head uses ``lr * head_lr_mult``.
        head_lr_mult: Learning-rate factor of the decode head (DeepLab's classifier: 10).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        poly_power: Poly schedule ``lr * (1 - it / total) ** poly_power``.
        iters_per_round: Iterations per round in the retrain-per-round schedule.
        local_consistency_weight: Weight of RIPU's local-consistency term on the source
            batch (RIPU: 0.1; 0 = off).
        negative_learning_weight: Weight of RIPU's negative-learning term on the target
            batch (RIPU: 1.0; 0 = off).
        negative_learning_threshold: Probability below which a class is a negative label.
        flip: Random horizontal flips in training.
        train_pipeline: mmseg/mmcv augmentations applied to every training sample after the
            resize and flip (``RandomCrop``, ``RandomFlip``, ``PhotoMetricDistortion``, ...;
            see ``augment.py``); ``None`` = none (RIPU's SYNTHIA protocol).
        optim_wrapper: An mmengine ``optim_wrapper`` config used as is (e.g. AdamW, or SGD
            with other ``paramwise_cfg``) instead of the one built from ``lr``,
            ``momentum``, ``weight_decay`` and ``head_lr_mult``; ``None`` = that one.
        param_scheduler: mmengine ``param_scheduler`` config(s) used instead of the poly
            schedule; iteration-based, and one without ``end`` ends with the run (the in-run
            schedule's ``lr_horizon``). ``None`` = ``PolyLR`` with ``poly_power``.
        amp: Automatic mixed precision in training (mmengine's ``AmpOptimWrapper``; CUDA).
        num_workers: Data-loading processes in training (0: load in the training process).
        vis_backends: mmengine visualizer backends for the training scalars, e.g.
            ``[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]``; they
            write under the round's ``train_logs``.
        cache_images: Keep decoded images in memory (demo-sized data).
        val_limit: Evaluate on the first ``val_limit`` images only (``None`` = all).
        eval_batch_size: Images per forward pass in evaluation.
        log_interval: Training progress every this many iterations.

    Attributes:
        trainer: The training recipe built from the training options
            (:class:`~.training.SourceTargetTrainer`); it runs :meth:`train_steps`.
        device: Where the model trains, scores and evaluates: mmengine's device (CUDA when
            present; ``CUDA_VISIBLE_DEVICES=`` keeps a run on the CPU).
        labels: The revealed target pixels (:class:`~.annotations.PixelLabels`).
    """

    partial_annotations = True
    needs_initial_labels = False

    def __init__(self, source: dict | None, target: dict, val: dict | None, model: dict,
                 source_size: tuple[int, int] = (760, 1280),
                 target_size: tuple[int, int] = (640, 1280),
                 unit_size: tuple[int, int] | None = None, batch_size: int = 2,
                 target_batch_size: int = 2, lr: float = 2.5e-4, head_lr_mult: float = 10.0,
                 momentum: float = 0.9, weight_decay: float = 5e-4, poly_power: float = 0.9,
                 iters_per_round: int = 1000, local_consistency_weight: float = 0.0,
                 negative_learning_weight: float = 0.0,
                 negative_learning_threshold: float = 0.05, flip: bool = True,
                 train_pipeline: Sequence[dict] | None = None,
                 optim_wrapper: dict | None = None,
                 param_scheduler: dict | Sequence[dict] | None = None,
                 amp: bool = False, num_workers: int = 0,
                 vis_backends: Sequence[dict] = (dict(type='LocalVisBackend'),),
                 cache_images: bool = False, val_limit: int | None = None,
                 eval_batch_size: int = 2, log_interval: int = 50) -> None:
        for name, value in (('batch_size', batch_size), ('target_batch_size', target_batch_size),
                            ('iters_per_round', iters_per_round),
                            ('eval_batch_size', eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f'task.{name} must be an integer >= 1, got {value!r}')
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f'task.num_workers must be an integer >= 0, got {num_workers!r}')
        if not lr > 0:
            raise ConfigError(f'task.lr must be > 0, got {lr!r}')
        self.model_cfg = model_config(model, num_classes=len(CLASSES16))
        # A task that only queries (query mode) reads neither source nor val.
        self.source = None if source is None else ImageSet(source, source_size, cache_images)
        self.target = ImageSet(target, target_size, cache_images)
        # The same images at the unit resolution (ground truth, exports, pictures).
        self.units = (self.target if unit_size is None
                      or tuple(unit_size) == self.target.size
                      else ImageSet(target, tuple(unit_size), cache_images))
        self.val = (None if val is None
                    else ImageSet(val, target_size, cache_images, limit=val_limit))
        self.num_classes = len(CLASSES16)
        self.trainer = SourceTargetTrainer(
            batch_size=batch_size, target_batch_size=target_batch_size, lr=lr,
            head_lr_mult=head_lr_mult, momentum=momentum, weight_decay=weight_decay,
            poly_power=poly_power, lc_weight=local_consistency_weight,
            nl_weight=negative_learning_weight, nl_threshold=negative_learning_threshold,
            flip=flip, log_interval=log_interval, amp=bool(amp), num_workers=num_workers,
            vis_backends=tuple(dict(b) for b in vis_backends),
            pipeline=None if train_pipeline is None else TrainPipeline(train_pipeline),
            optim_wrapper=None if optim_wrapper is None else dict(optim_wrapper),
            param_scheduler=None if param_scheduler is None else tuple(
                [param_scheduler] if isinstance(param_scheduler, dict) else param_scheduler))
        if amp:
            self.trainer.optim_wrapper_cfg()  # refuses AMP without CUDA before any training
        self.device = torch.device(get_device())
        self._log_dir: Path | None = None
        self.iters_per_round = iters_per_round
        self.eval_batch_size = eval_batch_size
        height, width = self.units.size
        self.labels = PixelLabels(height * width, self.num_classes, (height, width))

    # ------------------------------------------------------------------ data
    def sample_ids(self) -> np.ndarray:
        return np.arange(len(self.target), dtype=np.int64)

    def sample_keys(self) -> dict[int, str] | None:
        """Each image's file key for a folder pool (ids are positions in it); ``None`` for
        Cityscapes, whose sorted file names are fixed."""
        if self.target.labeled:
            return None
        return {int(i): self.target.dataset.get_data_info(int(i))['file_key']
                for i in self.sample_ids()}

    def sample_files(self, sample_ids: np.ndarray) -> dict[int, str]:
        """Paths relative to the folder of a folder pool, else the images' own paths."""
        if self.sample_keys():
            return super().sample_files(sample_ids)
        return {int(i): str(self.target.dataset.get_data_info(int(i))['img_path'])
                for i in sample_ids}

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, np.ndarray]:
        """Full train-id label maps ``[H, W]`` (uint8) at the unit resolution."""
        if not self.target.labeled:
            raise ConfigError('the target images have no labels: they can be queried '
                              '(tools/query.py), not used with a simulated oracle')
        return {int(i): self.units.get(int(i))[1] for i in sample_ids}

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

    def export_query(self, sample_ids: np.ndarray, folder: Path,
                     units: Sequence[np.ndarray] | None = None,
                     predictions: dict[int, Any] | None = None) -> dict:
        """Write each queried image and a mask of its pixels to label (see ``label_files``).

        Args:
            sample_ids: Queried target images, shape ``[K]``.
            folder: The query folder.
            units: Per image, flat pixel indices (at the unit resolution) to label.
            predictions: Not written (the label format has no room for a guess); reports
                draw them.

        Returns:
            The image size and file names, for the query list.
        """
        if units is None:
            raise ConfigError('segmentation queries ask for pixels of images, not whole '
                              'images: use a unit selector and al.initial_size=0')
        ids = np.asarray(sample_ids, dtype=np.int64)
        return export_region_query(
            [self.units.get(int(i))[0] for i in ids], ids, units, Path(folder),
            [os.path.basename(self.target.dataset.get_data_info(int(i))['img_path'])
             for i in ids])

    # ------------------------------------------------------------------ query mode
    @classmethod
    def query_config(cls, task_cfg: dict, data: str) -> dict:
        """The target pool becomes the images under ``data`` (``kind='folder'``, resized to
        ``target_size`` like the training targets); source and val are not read."""
        return {**dict(task_cfg), 'target': dict(kind='folder', data_root=data),
                'source': None, 'val': None}

    def predict_annotations(self, model: nn.Module, sample_ids: np.ndarray,
                            units: list[np.ndarray] | None = None) -> dict[int, Any]:
        """The model's class of each queried pixel: ``{'units': [U], 'labels': [U]}``."""
        ids = np.asarray(sample_ids, dtype=np.int64)
        if units is None:
            return {}
        was_training = model.training
        model.eval()
        found: dict[int, Any] = {}
        try:
            with torch.no_grad():
                for k, sid in enumerate(ids):
                    classes = self.pseudo_label(
                        model, to_tensor([self.target.get(int(sid))[0]]).to(self.device)).cpu()
                    pixels = np.asarray(units[k], dtype=np.int64)
                    found[int(sid)] = {'units': pixels,
                                       'labels': classes[0].reshape(-1)[pixels].numpy()
                                       .astype(np.int64)}
        finally:
            model.train(was_training)
        return found

    def read_answers(self, path: Path) -> list[tuple[int, np.ndarray]]:
        """Full label maps ``[H, W]`` from a zip of label PNGs; the oracle keeps only the
        queried pixels (:meth:`restrict_annotation`)."""
        return read_label_zip(Path(path), self.units.size)

    def labeled_units(self, sample_ids: np.ndarray) -> list[np.ndarray]:
        return [self.labels.revealed(int(i)).reshape(self.units.size) for i in sample_ids]

    def preview(self, sample_ids: np.ndarray,
                annotations: dict[int, Any] | None = None) -> list[np.ndarray]:
        """Each target image (RGB, the unit size) with its revealed pixels coloured by
        class, drawn by mmseg's ``SegLocalVisualizer``."""
        return draw_revealed(self.units, sample_ids, annotations or {})

    def annotation_classes(self, annotation: Any) -> list[int]:
        """The classes of the revealed (or predicted) pixels, most pixels first, each once:
        a query's class mix counts the images each class was labeled in."""
        labels = np.asarray(annotation['labels'], dtype=np.int64)
        counts = np.bincount(labels[labels != IGNORE_INDEX], minlength=self.num_classes)
        present = np.flatnonzero(counts)
        return [int(c) for c in present[np.argsort(-counts[present], kind='stable')]]

    def class_names(self) -> list[str]:
        return list(CLASSES16)

    def annotation_stats(self) -> dict[str, float]:
        height, width = self.units.size
        revealed = self.labels.num_revealed()
        return {'labeled_pixels': revealed,
                'labeled_pixel_percent': 100.0 * revealed / (len(self.target) * height * width),
                'labeled_images': len(self.labels.images())}

    # ------------------------------------------------------------------ model
    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_segmentor(self.model_cfg).to(self.device)

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        model, _ = self.train_steps(model, labeled_ids, seed, 0, self.iters_per_round,
                                    self.iters_per_round, None)
        return model

    def train_steps(self, model: nn.Module, labeled_ids: np.ndarray, seed: int, start: int,
                    stop: int, total: int, optim_state: dict | None
                    ) -> tuple[nn.Module, dict]:
        """Iterations ``[start, stop)`` of one run (:meth:`.SourceTargetTrainer.run`).

        ``labeled_ids`` is not read: target batches come from the whole pool, with the
        revealed pixels of :attr:`labels` as their labels.
        """
        if self.source is None:
            raise ConfigError('task.source is None: this segmentation task only scores and '
                              'queries; configure a source dataset to train')
        return self.trainer.run(model, self.source, self.target, self.labels, seed, start,
                                stop, total, optim_state, self._log_dir)

    def use_log_dir(self, folder: Path | None) -> None:
        """The Runner of the next training writes its logs and scalars there."""
        self._log_dir = folder

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """mIoU over 16 and 13 classes, pixel accuracy and per-class IoU on ``val``.

        Predictions are made at the target resolution and upsampled to each label's own
        resolution (Cityscapes is scored at 2048 x 1024, as in RIPU).
        """
        if self.val is None:
            raise ConfigError('task.val is None: this segmentation task only scores and '
                              'queries; configure a val dataset to evaluate')
        meter = SegmentationMeter(num_classes=self.num_classes)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(self.val), self.eval_batch_size):
                    indices = range(start, min(start + self.eval_batch_size, len(self.val)))
                    pairs = [self.val.for_evaluation(i) for i in indices]
                    logits = segment_logits(model, to_tensor([image for image, _ in pairs])
                                            .to(self.device))
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
            yield chunk, to_tensor([self.target.get(int(i))[0] for i in chunk]).to(self.device)

    @property
    def unit_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the annotation units (score maps have it)."""
        return self.units.size

    def unit_logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits at the unit resolution, ``[B, C, H_u, W_u]``: the model's logits at
        the input resolution, upsampled (bilinear, ``align_corners=True``, as RIPU) when
        ``unit_size`` differs."""
        logits = segment_logits(model, inputs)
        if tuple(logits.shape[-2:]) != self.units.size:
            logits = F.interpolate(logits, size=self.units.size, mode='bilinear',
                                   align_corners=True)
        return logits

    def pixel_logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits of every unit pixel, ``[B, C, H, W]`` (:meth:`unit_logits`)."""
        return self.unit_logits(model, inputs)

    def pseudo_label(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Per-pixel argmax of the model's prediction, ``[B, H, W]`` (int64), unit size."""
        return self.unit_logits(model, inputs).argmax(dim=1)

    def pseudo_label_and_loss(self, model: nn.Module, inputs: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-labels and per-pixel CE from one forward pass (graph kept), unit size."""
        logits = self.unit_logits(model, inputs)
        targets = logits.detach().argmax(dim=1)
        return targets, F.cross_entropy(logits, targets, reduction='none')

    def loss_per_unit(self, model: nn.Module, inputs: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        """Per-pixel cross-entropy against ``targets``, ``[B, H, W]`` (unreduced).

        The sharpness scorer reduces it with ``objective_reduction`` into the loss whose
        gradient defines an image's ε (see docs/segmentation.md for why the image mean).
        """
        return F.cross_entropy(self.unit_logits(model, inputs), targets, reduction='none')

    # batch_size_of is BaseTask's: the first dimension of the image batch [B, 3, H, W].
