"""Segmentation metrics of the SYNTHIA -> Cityscapes protocol: mIoU16, mIoU13, aAcc, per-class IoU.

Areas (intersection, union, predicted and labelled pixels per class) are counted with mmseg's
``IoUMetric.intersect_and_union`` and turned into IoU with ``IoUMetric.total_area_to_metrics``,
so the numbers are mmseg's. Values are percentages, not rounded.

A class that appears neither in the labels nor in the predictions has union 0 and IoU NaN; the
means skip NaN (``nanmean``), as mmseg does, so mIoU is over the classes that occur. A class
that is predicted but never labelled has IoU 0 and counts. mIoU13 is the mean over
:data:`~saal_tasks.tasks.segmentation.classes.CLASSES13_INDICES` (no wall, fence, pole).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from saal_tasks.compat.mmcv_ops import ensure_mmcv_ops

from .classes import CLASSES13_INDICES, CLASSES16, IGNORE_INDEX, NUM_CLASSES

# mmseg imports mmcv.ops at import time; this supplies a fallback where mmcv has no compiled ops.
ensure_mmcv_ops()

from mmseg.evaluation.metrics import IoUMetric  # noqa: E402

__all__ = ['SegmentationMeter', 'metrics_from_confusion']


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float('nan')


def _resolve(num_classes: int, class_names: Sequence[str] | None,
             subset13: Sequence[int] | None) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """Class names and the subset for ``mIoU13``; the 16-class defaults when None."""
    if class_names is None:
        class_names = CLASSES16 if num_classes == NUM_CLASSES else tuple(
            f'class{i}' for i in range(num_classes))
    if len(class_names) != num_classes:
        raise ValueError(f'{len(class_names)} class names for {num_classes} classes: give one '
                         'name per class')
    if subset13 is None and num_classes == NUM_CLASSES:
        subset13 = CLASSES13_INDICES
    if subset13 is not None and any(not 0 <= i < num_classes for i in subset13):
        raise ValueError(f'subset13 {tuple(subset13)} has indices outside 0..{num_classes - 1}')
    return tuple(class_names), (tuple(subset13) if subset13 is not None else None)


def _metrics_from_areas(intersect: torch.Tensor, union: torch.Tensor, pred_area: torch.Tensor,
                        label_area: torch.Tensor, class_names: tuple[str, ...],
                        subset13: tuple[int, ...] | None) -> dict[str, float]:
    """The metric dict from per-class areas ``[C]`` (float64 tensors)."""
    areas = IoUMetric.total_area_to_metrics(intersect, union, pred_area, label_area,
                                            metrics=['mIoU'])
    iou = np.asarray(areas['IoU'], dtype=np.float64) * 100
    out = {f'mIoU{len(class_names)}': _nanmean(iou)}
    if subset13 is not None:
        out[f'mIoU{len(subset13)}'] = _nanmean(iou[list(subset13)])
    out['aAcc'] = float(areas['aAcc']) * 100
    out.update({f'IoU.{name}': float(value) for name, value in zip(class_names, iou)})
    return out


def metrics_from_confusion(confusion: np.ndarray, class_names: Sequence[str] | None = None,
                           subset13: Sequence[int] | None = None) -> dict[str, float]:
    """The metrics of a confusion matrix (same keys and values as :class:`SegmentationMeter`).

    Args:
        confusion: ``[C, C]`` pixel counts; rows are ground-truth classes, columns predicted
            classes (ignored pixels are not in it).
        class_names: ``C`` names; default :data:`CLASSES16` when ``C == 16``, else
            ``class0..``.
        subset13: Class indices of the ``mIoU13`` mean; default :data:`CLASSES13_INDICES` when
            ``C == 16``, else no subset mean.

    Returns:
        ``{'mIoU<C>', 'mIoU<len(subset13)>', 'aAcc', 'IoU.<name>' per class}`` in percent.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f'a confusion matrix must be square [C, C], got shape {confusion.shape}')
    names, subset = _resolve(confusion.shape[0], class_names, subset13)
    matrix = torch.from_numpy(confusion)
    intersect = matrix.diagonal().clone()
    label_area = matrix.sum(dim=1)
    pred_area = matrix.sum(dim=0)
    return _metrics_from_areas(intersect, label_area + pred_area - intersect, pred_area,
                               label_area, names, subset)


class SegmentationMeter:
    """Accumulates per-class areas over predictions and reports mIoU, mIoU13 and aAcc.

    Example::

        meter = SegmentationMeter()
        for logits, labels in batches:            # logits [B, 16, H, W], labels [B, H, W]
            meter.add(logits.argmax(dim=1), labels)
        meter.compute()                           # {'mIoU16': ..., 'mIoU13': ..., ...}

    Args:
        num_classes: Number of classes ``C``.
        ignore_index: Label value of pixels left out of every count.
        class_names: ``C`` names for the ``'IoU.<name>'`` keys; default :data:`CLASSES16` when
            ``C == 16``.
        subset13: Class indices of the ``mIoU13`` mean; default :data:`CLASSES13_INDICES` when
            ``C == 16``, else no subset mean.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None,
                 subset13: Sequence[int] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names, self.subset13 = _resolve(num_classes, class_names, subset13)
        self.reset()

    def reset(self) -> None:
        """Forget every added pixel."""
        zeros = torch.zeros(self.num_classes, dtype=torch.float64)
        self.intersect, self.union = zeros.clone(), zeros.clone()
        self.pred_area, self.label_area = zeros.clone(), zeros.clone()

    def add(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Count one image or a batch.

        Args:
            pred: Predicted classes ``[H, W]`` or ``[B, H, W]`` (integer). A value outside
                ``0..C-1`` is a prediction of no class: the pixel counts as labelled, not hit.
            label: Ground truth of the same shape; values in ``0..C-1`` or ``ignore_index``.

        Raises:
            ValueError: Shapes differ, are not 2-D/3-D, or a label is out of range.
        """
        pred, label = torch.as_tensor(pred), torch.as_tensor(label)
        if pred.shape != label.shape or pred.dim() not in (2, 3):
            raise ValueError(f'pred and label must have the same shape [H, W] or [B, H, W], got '
                             f'{tuple(pred.shape)} and {tuple(label.shape)}')
        if pred.is_floating_point() or label.is_floating_point():
            raise ValueError('pred and label must hold integer class ids: take logits.argmax(1)')
        valid = label[label != self.ignore_index]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.num_classes):
            raise ValueError(f'label values must be in 0..{self.num_classes - 1} or '
                             f'{self.ignore_index}, found {int(valid.min())}..{int(valid.max())}: '
                             'use train-id labels (tools/convert_seg_labels.py)')
        label = label.to(pred.device)
        if pred.dim() == 2:
            pred, label = pred[None], label[None]
        # One image at a time: intersect_and_union counts in float32 histograms, exact only up
        # to 2**24 pixels per class, which a batch of full-size Cityscapes frames can exceed.
        for image_pred, image_label in zip(pred, label):
            intersect, union, pred_area, label_area = IoUMetric.intersect_and_union(
                image_pred, image_label, self.num_classes, self.ignore_index)
            self.intersect += intersect.double()
            self.union += union.double()
            self.pred_area += pred_area.double()
            self.label_area += label_area.double()

    def compute(self) -> dict[str, float]:
        """The metrics of everything added so far (percentages; NaN before any labelled pixel).

        Returns:
            ``{'mIoU16', 'mIoU13', 'aAcc', 'IoU.<name>' per class}`` (``mIoU<C>`` for ``C``
            classes; the subset key is absent when there is no subset).
        """
        return _metrics_from_areas(self.intersect, self.union, self.pred_area, self.label_area,
                                   self.class_names, self.subset13)
