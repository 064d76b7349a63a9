"""Conversion of raw SYNTHIA / Cityscapes label files to 8-bit train-id PNGs, and the layouts.

The datasets read train ids ``0..15`` (255 = ignore) from files we write once, next to the raw
labels, instead of mapping ids on every load::

    SYNTHIA (RAND-CITYSCAPES)                 Cityscapes
    ROOT/RGB/0000000.png          image       ROOT/leftImg8bit/SPLIT/CITY/NAME_leftImg8bit.png
    ROOT/GT/LABELS/0000000.png    raw labels  ROOT/gtFine/SPLIT/CITY/NAME_gtFine_labelIds.png
    ROOT/GT/LABELS16/0000000.png  written     ROOT/gtFine/SPLIT/CITY/NAME_gtFine_labelTrainIds16.png

Every file is written atomically (a hidden temporary file in the same folder, then a rename),
so an interrupted conversion leaves complete label files or none; a rerun skips the files
that exist (``force=True`` rewrites them). The temporary names do not end in ``.png``, so no
dataset ever lists them.

Only numpy and OpenCV are used here (no mmseg): the demo generator and
``tools/convert_seg_labels.py`` share these functions.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from saal_tasks.core.errors import AnnotationError, ConfigError
from saal_tasks.core.io import new_file_mode

from .classes import cityscapes_to_train, synthia_to_train

__all__ = [
    'CITYSCAPES_IMG_DIR', 'CITYSCAPES_IMG_SUFFIX', 'CITYSCAPES_LABEL_DIR',
    'CITYSCAPES_LABEL_SUFFIX', 'CITYSCAPES_RAW_SUFFIX', 'CONVERT_COMMAND', 'ConversionStats',
    'SYNTHIA_IMG_DIR', 'SYNTHIA_LABEL_DIR', 'SYNTHIA_RAW_LABEL_DIR', 'cityscapes_label_pairs',
    'convert_cityscapes_file', 'convert_labels', 'convert_synthia_file', 'synthia_label_pairs',
    'write_png_atomic'
]

SYNTHIA_IMG_DIR = 'RGB'
SYNTHIA_RAW_LABEL_DIR = 'GT/LABELS'
SYNTHIA_LABEL_DIR = 'GT/LABELS16'
CITYSCAPES_IMG_DIR = 'leftImg8bit'
CITYSCAPES_LABEL_DIR = 'gtFine'
CITYSCAPES_IMG_SUFFIX = '_leftImg8bit.png'
CITYSCAPES_RAW_SUFFIX = '_gtFine_labelIds.png'
CITYSCAPES_LABEL_SUFFIX = '_gtFine_labelTrainIds16.png'

#: The commands named in error messages.
CONVERT_COMMAND = 'python tools/convert_seg_labels.py'


def write_png_atomic(path: str | Path, image: np.ndarray) -> None:
    """Write ``image`` as a PNG at ``path`` so that ``path`` is never a partial file.

    Args:
        path: Destination ``.png`` file; its folder is created if needed.
        image: ``[H, W]`` or ``[H, W, 3]`` (BGR) uint8 or uint16 array, as ``cv2.imwrite``
            takes it.
    """
    import cv2

    path = Path(path)
    ok, encoded = cv2.imencode('.png', image)
    if not ok:
        raise ValueError(f'cannot encode an array of shape {image.shape} and dtype {image.dtype} '
                         f'as PNG for {path}')
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp's 0600 would make the labels private
        with os.fdopen(fd, 'wb') as f:
            f.write(encoded.tobytes())
        # A rename within one folder is atomic: readers see the old file or the whole new one.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_label(path: Path, flags: int) -> np.ndarray:
    import cv2

    label = cv2.imread(str(path), flags)
    if label is None:
        raise AnnotationError(f'cannot read label file {path}: it is missing or not an image; '
                              'restore it from the dataset archive')
    return label


def convert_synthia_file(src: str | Path, dst: str | Path, force: bool = False) -> bool:
    """Convert one SYNTHIA 16-bit label PNG to an 8-bit train-id PNG.

    Args:
        src: Raw label (``GT/LABELS/*.png``; class id in the red channel).
        dst: Train-id label to write.
        force: Rewrite ``dst`` when it exists.

    Returns:
        Whether ``dst`` was written (False: it existed and ``force`` is off).
    """
    import cv2

    dst = Path(dst)
    if dst.exists() and not force:
        return False
    # IMREAD_UNCHANGED keeps the 16 bits and gives BGR order: synthia_to_train's default.
    raw = _read_label(Path(src), cv2.IMREAD_UNCHANGED)
    try:
        train_ids = synthia_to_train(raw)
    except ValueError as err:
        raise AnnotationError(f'{src}: {err}') from None
    write_png_atomic(dst, train_ids)
    return True


def convert_cityscapes_file(src: str | Path, dst: str | Path, force: bool = False) -> bool:
    """Convert one Cityscapes ``*_gtFine_labelIds.png`` to a 16-class train-id PNG.

    Args:
        src: Raw label-id file (8-bit, one channel).
        dst: Train-id label to write (``*_gtFine_labelTrainIds16.png``).
        force: Rewrite ``dst`` when it exists.

    Returns:
        Whether ``dst`` was written (False: it existed and ``force`` is off).
    """
    import cv2

    dst = Path(dst)
    if dst.exists() and not force:
        return False
    raw = _read_label(Path(src), cv2.IMREAD_UNCHANGED)
    try:
        train_ids = cityscapes_to_train(raw)
    except ValueError as err:
        raise AnnotationError(f'{src}: {err}') from None
    write_png_atomic(dst, train_ids)
    return True


def synthia_label_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """``(raw label, train-id label)`` paths of every SYNTHIA label under ``root``, sorted.

    Raises:
        ConfigError: ``root`` has no ``GT/LABELS/*.png``.
    """
    root = Path(root)
    raw_dir = root / SYNTHIA_RAW_LABEL_DIR
    sources = sorted(raw_dir.glob('*.png')) if raw_dir.is_dir() else []
    if not sources:
        raise ConfigError(f'no SYNTHIA labels at {raw_dir}/*.png: pass the RAND-CITYSCAPES folder '
                          f'that holds {SYNTHIA_IMG_DIR}/ and {SYNTHIA_RAW_LABEL_DIR}/')
    out_dir = root / SYNTHIA_LABEL_DIR
    return [(src, out_dir / src.name) for src in sources]


def cityscapes_label_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """``(labelIds file, train-id file)`` paths of one Cityscapes split, sorted.

    Raises:
        ConfigError: ``root`` has no ``gtFine/SPLIT/*/*_gtFine_labelIds.png``.
    """
    split_dir = Path(root) / CITYSCAPES_LABEL_DIR / split
    sources = sorted(split_dir.glob(f'*/*{CITYSCAPES_RAW_SUFFIX}')) if split_dir.is_dir() else []
    if not sources:
        raise ConfigError(f'no Cityscapes labels at {split_dir}/*/*{CITYSCAPES_RAW_SUFFIX}: pass '
                          f'the folder that holds {CITYSCAPES_IMG_DIR}/ and '
                          f'{CITYSCAPES_LABEL_DIR}/, or choose other splits')
    cut = len(CITYSCAPES_RAW_SUFFIX)
    return [(src, src.with_name(src.name[:-cut] + CITYSCAPES_LABEL_SUFFIX)) for src in sources]


@dataclass(frozen=True)
class ConversionStats:
    """What one conversion run did.

    Attributes:
        total: Label files found.
        written: Files converted and written.
        skipped: Files whose output existed (not rewritten without ``force``).
    """

    total: int
    written: int
    skipped: int


#: ``progress(done, total, written)``, called every few files and after the last one.
ProgressFn = Callable[[int, int, int], None]


def convert_labels(kind: str, root: str | Path, splits: Sequence[str] | None = None,
                   force: bool = False, progress: ProgressFn | None = None,
                   every: int = 500) -> ConversionStats:
    """Convert every raw label of a dataset folder to train ids.

    Args:
        kind: ``'synthia'`` or ``'cityscapes'``.
        root: The dataset folder (layouts in the module docstring).
        splits: Cityscapes splits (default ``('train', 'val')``); must be None for SYNTHIA,
            which has no splits.
        force: Rewrite outputs that exist.
        progress: Called with ``(done, total, written)`` every ``every`` files and at the end.
        every: Files between two ``progress`` calls.

    Returns:
        Counts of found, written and skipped files.

    Raises:
        ConfigError: Unknown ``kind``, splits given for SYNTHIA, or no raw labels at ``root``.
    """
    if every < 1:
        raise ConfigError(f'every must be >= 1, got {every}')
    if kind == 'synthia':
        if splits:
            raise ConfigError('SYNTHIA has no splits: drop --split (the whole folder is the '
                              'source training set)')
        pairs, convert = synthia_label_pairs(root), convert_synthia_file
    elif kind == 'cityscapes':
        pairs = [p for split in (splits or ('train', 'val'))
                 for p in cityscapes_label_pairs(root, split)]
        convert = convert_cityscapes_file
    else:
        raise ConfigError(f"unknown dataset kind {kind!r}: choose 'synthia' or 'cityscapes'")
    written = 0
    for done, (src, dst) in enumerate(pairs, start=1):
        written += convert(src, dst, force=force)
        if progress is not None and (done % every == 0 or done == len(pairs)):
            progress(done, len(pairs), written)
    return ConversionStats(total=len(pairs), written=written, skipped=len(pairs) - written)
