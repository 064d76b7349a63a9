"""Partial pixel annotations of target images: what the oracle revealed, merged over rounds.

An annotation of one image in one round is ``{'units': int64 [K], 'labels': uint8 [K]}``:
flat pixel indices (at the task's target resolution) and their train ids (255 = void in the
ground truth, still counted as labeled: the annotator looked at it). Persisted compactly
(zlib + base64 inside the round's ``annotations.json``), because the paper's budget puts a few
thousand pixels per Cityscapes image into every round.
"""
from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np

from ...core.errors import AnnotationError
from .classes import IGNORE_INDEX


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(array.tobytes(), 6)).decode('ascii')


def _unpack(text: str, dtype: type) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).copy()


def encode_pixels(annotation: dict[str, np.ndarray]) -> dict[str, Any]:
    """JSON-serialisable form of a pixel annotation (indices as int32, labels as uint8)."""
    return {'num': int(len(annotation['units'])),
            'units': _pack(np.asarray(annotation['units'], dtype=np.int32)),
            'labels': _pack(np.asarray(annotation['labels'], dtype=np.uint8))}


def decode_pixels(value: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_pixels`."""
    try:
        units = _unpack(value['units'], np.int32).astype(np.int64)
        labels = _unpack(value['labels'], np.uint8)
    except (KeyError, TypeError, ValueError, zlib.error) as err:
        raise AnnotationError(f'unreadable pixel annotation ({err}): the file was modified; '
                              'start a new work directory') from None
    return {'units': units, 'labels': labels}


def restrict_pixels(annotation: np.ndarray, units: np.ndarray) -> dict[str, np.ndarray]:
    """The pixel annotation of ``units`` taken from a full label map.

    Args:
        annotation: A full train-id label map ``[H, W]`` (any shape whose flat order is the
            pixel order).
        units: Flat pixel indices ``[K]``.

    Returns:
        ``{'units': int64 [K], 'labels': [K]}``: the indices and their labels.
    """
    units = np.asarray(units, dtype=np.int64)
    return {'units': units, 'labels': np.asarray(annotation).reshape(-1)[units]}


class PixelAnnotationFormat:
    """The pixel-annotation part of the task contract: how a revealed-pixel annotation is cut
    from a full label map, persisted and read back (no task state needed)."""

    def restrict_annotation(self, annotation: np.ndarray, units: np.ndarray
                            ) -> dict[str, np.ndarray]:
        """A full label map ``[H, W]`` restricted to flat pixel indices ``[K]``."""
        return restrict_pixels(annotation, units)

    def encode_annotation(self, annotation: dict[str, np.ndarray]) -> dict[str, Any]:
        """The persisted (JSON) form of a pixel annotation."""
        return encode_pixels(annotation)

    def decode_annotation(self, value: dict[str, Any]) -> dict[str, np.ndarray]:
        """Inverse of :meth:`encode_annotation`."""
        return decode_pixels(value)


class PixelLabels:
    """Revealed target pixels of every pool image, at one resolution.

    Args:
        num_pixels: Pixels per image (``H × W`` of the annotation units).
        num_classes: Number of train ids (labels are ``< num_classes`` or 255).
        shape: ``(H, W)`` of the units, when known (training resizes the revealed labels
            from it to its own resolution).
    """

    def __init__(self, num_pixels: int, num_classes: int,
                 shape: tuple[int, int] | None = None) -> None:
        if shape is not None and int(shape[0]) * int(shape[1]) != num_pixels:
            raise ValueError(f'shape {shape} does not hold {num_pixels} pixels')
        self.num_pixels = num_pixels
        self.num_classes = num_classes
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))
        self._labels: dict[int, np.ndarray] = {}

    def check(self, sample_id: int, annotation: Any) -> None:
        """Raise ``AnnotationError`` unless ``annotation`` is a valid pixel annotation."""
        if not isinstance(annotation, dict) or set(annotation) != {'units', 'labels'}:
            raise AnnotationError(f'sample {sample_id}: a pixel annotation is a dict with '
                                  "'units' and 'labels'")
        units = np.asarray(annotation['units'])
        labels = np.asarray(annotation['labels'])
        if units.ndim != 1 or units.shape != labels.shape:
            raise AnnotationError(f'sample {sample_id}: units and labels must be 1-D arrays '
                                  f'of one length, got {units.shape} and {labels.shape}')
        if len(units) and (units.min() < 0 or units.max() >= self.num_pixels):
            raise AnnotationError(f'sample {sample_id}: pixel indices must lie in '
                                  f'[0, {self.num_pixels}), got {units.min()}..{units.max()}')
        if len(np.unique(units)) != len(units):
            raise AnnotationError(f'sample {sample_id}: a pixel is annotated twice')
        bad = (labels >= self.num_classes) & (labels != IGNORE_INDEX)
        if bad.any():
            raise AnnotationError(f'sample {sample_id}: labels must be train ids 0..'
                                  f'{self.num_classes - 1} or {IGNORE_INDEX}, got '
                                  f'{sorted(set(labels[bad].tolist()))[:5]}')

    def add(self, sample_id: int, annotation: dict[str, np.ndarray]) -> None:
        """Merge one round's annotation of an image into what is known."""
        known = self._labels.get(sample_id)
        if known is None:
            # 254 = "not revealed": distinct from 255 (revealed but void in the ground truth).
            known = self._labels[sample_id] = np.full(self.num_pixels, 254, dtype=np.uint8)
        known[np.asarray(annotation['units'], dtype=np.int64)] = annotation['labels']

    def revealed(self, sample_id: int) -> np.ndarray:
        """Bool mask ``[num_pixels]`` of the revealed pixels of an image."""
        known = self._labels.get(sample_id)
        return np.zeros(self.num_pixels, bool) if known is None else known != 254

    def targets(self, sample_id: int) -> np.ndarray:
        """Training targets ``[num_pixels]`` (uint8): train ids where revealed, else 255."""
        known = self._labels.get(sample_id)
        if known is None:
            return np.full(self.num_pixels, IGNORE_INDEX, dtype=np.uint8)
        return np.where(known == 254, IGNORE_INDEX, known).astype(np.uint8)

    def num_revealed(self) -> int:
        """Revealed pixels over all images."""
        return int(sum(int((k != 254).sum()) for k in self._labels.values()))

    def images(self) -> list[int]:
        """Ids of the images with at least one revealed pixel."""
        return sorted(i for i, k in self._labels.items() if (k != 254).any())
