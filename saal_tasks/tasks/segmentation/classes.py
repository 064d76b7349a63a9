"""The 16 classes shared by SYNTHIA and Cityscapes, and the label-id mappings to them.

SYNTHIA -> Cityscapes adaptation is evaluated on the 16 Cityscapes classes that SYNTHIA also
annotates (no terrain, truck, train). Both datasets' raw label ids are mapped to the same
train ids ``0..15``; every other id becomes :data:`IGNORE_INDEX`. mIoU is reported over the
16 classes and over 13 of them (without wall, fence and pole, which SYNTHIA renders poorly).

Nothing here imports mmseg: the demo generator and the label converter use only numpy.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np

__all__ = [
    'CITYSCAPES_TO_TRAIN', 'CLASSES13_INDICES', 'CLASSES16', 'IGNORE_INDEX', 'NUM_CLASSES',
    'PALETTE16', 'SYNTHIA_TO_TRAIN', 'cityscapes_to_train', 'synthia_to_train'
]

#: Class names in train-id order (Cityscapes names).
CLASSES16 = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
             'traffic sign', 'vegetation', 'sky', 'person', 'rider', 'car', 'bus', 'motorcycle',
             'bicycle')
#: Cityscapes colours of :data:`CLASSES16` (RGB).
PALETTE16 = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
             (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (70, 130, 180),
             (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 60, 100), (0, 0, 230), (119, 11, 32))
NUM_CLASSES = len(CLASSES16)
#: Label value of pixels that count neither in training losses nor in metrics.
IGNORE_INDEX = 255
#: Train ids of the 13-class protocol: all but wall (3), fence (4) and pole (5).
CLASSES13_INDICES = tuple(i for i in range(NUM_CLASSES) if i not in (3, 4, 5))

#: SYNTHIA RAND-CITYSCAPES class id -> train id.
SYNTHIA_TO_TRAIN: Mapping[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12,
    19: 13, 12: 14, 11: 15}
#: Cityscapes ``labelIds`` (the ``*_gtFine_labelIds.png`` values) -> train id.
CITYSCAPES_TO_TRAIN: Mapping[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9, 24: 10, 25: 11, 26: 12,
    28: 13, 32: 14, 33: 15}

# Lookup tables cover every value of the raw label dtype: uint16 for SYNTHIA, uint8 for
# Cityscapes. Built on first use (not at import) and shared read-only afterwards.
_SYNTHIA_LUT_SIZE = 1 << 16
_CITYSCAPES_LUT_SIZE = 1 << 8


@lru_cache(maxsize=None)
def _lookup_table(mapping_items: tuple[tuple[int, int], ...], size: int) -> np.ndarray:
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for raw_id, train_id in mapping_items:
        lut[raw_id] = train_id
    lut.setflags(write=False)
    return lut


def _apply_lookup(mapping: Mapping[int, int], size: int, ids: np.ndarray) -> np.ndarray:
    """Map integer ``ids`` of any shape through ``mapping``; ids outside the table -> ignore."""
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f'label ids must be an integer array, got dtype {ids.dtype}: read label '
                        'PNGs with cv2.IMREAD_UNCHANGED')
    lut = _lookup_table(tuple(sorted(mapping.items())), size)
    if ids.size == 0 or (ids.min() >= 0 and ids.max() < size):
        return lut[ids]
    out = np.full(ids.shape, IGNORE_INDEX, dtype=np.uint8)
    inside = (ids >= 0) & (ids < size)
    out[inside] = lut[ids[inside]]
    return out


def synthia_to_train(label: np.ndarray, class_channel: int = 2) -> np.ndarray:
    """Train ids ``[H, W]`` (uint8) of a SYNTHIA RAND-CITYSCAPES label image.

    The real label files are 16-bit PNGs with the class id in the first (red) channel and
    instance ids in the others. ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` returns the
    channels in BGR order, so the class id is channel **2** of the array cv2 gives; that is
    the default here. Arrays read in RGB order (imageio, PIL) need ``class_channel=0``.

    Args:
        label: ``[H, W, 3]`` or ``[H, W, 4]`` integer array as read by cv2 (uint16 for the real
            files), or ``[H, W]`` class ids already taken out of the channel.
        class_channel: Channel holding the class id when ``label`` has channels.

    Returns:
        uint8 ``[H, W]``: train ids ``0..15`` from :data:`SYNTHIA_TO_TRAIN`, 255 elsewhere.

    Raises:
        ValueError: ``label`` is neither ``[H, W]`` nor ``[H, W, 3|4]``.
    """
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[2] in (3, 4):
        label = label[..., class_channel]
    elif label.ndim != 2:
        raise ValueError(f'a SYNTHIA label must be [H, W] or [H, W, 3] as read by cv2, got shape '
                         f'{label.shape}')
    return _apply_lookup(SYNTHIA_TO_TRAIN, _SYNTHIA_LUT_SIZE, label)


def cityscapes_to_train(label_ids: np.ndarray) -> np.ndarray:
    """Train ids ``[H, W]`` (uint8) of a Cityscapes ``*_gtFine_labelIds.png`` array.

    Args:
        label_ids: ``[H, W]`` integer array of Cityscapes label ids (uint8 in the files).

    Returns:
        uint8 ``[H, W]``: train ids ``0..15`` from :data:`CITYSCAPES_TO_TRAIN`, 255 elsewhere.

    Raises:
        ValueError: ``label_ids`` is not two-dimensional (e.g. a colour ``*_color.png``).
    """
    label_ids = np.asarray(label_ids)
    if label_ids.ndim != 2:
        raise ValueError(f'Cityscapes label ids must be [H, W] (the *_gtFine_labelIds.png file), '
                         f'got shape {label_ids.shape}')
    return _apply_lookup(CITYSCAPES_TO_TRAIN, _CITYSCAPES_LUT_SIZE, label_ids)
