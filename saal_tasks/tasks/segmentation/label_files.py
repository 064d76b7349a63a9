"""Region queries of segmentation as image and mask files, and label PNGs read back.

Export (into the query folder), per queried target image, at the task's target resolution
``H x W`` (the resolution the queried pixel indices refer to):

* ``sample_<id>.png``: the RGB image.
* ``sample_<id>_mask.png``: 8-bit mask, 255 = label this pixel, 0 = not asked.

Answers: one ``.zip`` of label PNGs ``sample_<id>_label.png`` (any folder inside the zip), each
one 8-bit channel (grey or palette indices) of ``H x W`` Cityscapes-style train ids ``0..15``,
255 = void. Only the pixels of the mask are read; everything else in a PNG is ignored, so a
fully labeled image is a valid answer too.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ...core.errors import AnnotationError

_ID_IN_NAME = re.compile(r'sample_(\d+)')
#: What an answer file's name ends with.
LABEL_SUFFIX = '_label.png'


def image_file_name(sample_id: int) -> str:
    """Exported RGB image of a sample."""
    return f'sample_{int(sample_id):06d}.png'


def mask_file_name(sample_id: int) -> str:
    """Exported mask of the pixels to label."""
    return f'sample_{int(sample_id):06d}_mask.png'


def label_file_name(sample_id: int) -> str:
    """Name of the answer PNG of a sample."""
    return f'sample_{int(sample_id):06d}{LABEL_SUFFIX}'


def query_mask(units: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The mask of a query: ``[H, W]`` uint8, 255 at the flat pixel indices ``units``."""
    mask = np.zeros(size[0] * size[1], dtype=np.uint8)
    mask[np.asarray(units, dtype=np.int64)] = 255
    return mask.reshape(size)


def export_region_query(images: Sequence[np.ndarray], sample_ids: np.ndarray,
                        units: Sequence[np.ndarray], folder: Path,
                        sources: Sequence[str] | None = None) -> dict:
    """Write each queried image and the mask of its pixels to label.

    Args:
        images: Per sample, the RGB image ``[H, W, 3]`` uint8 at the target resolution.
        sample_ids: Queried samples, shape ``[K]``.
        units: Per sample, flat indices (row-major in ``H x W``) of the pixels to label.
        folder: Query folder (created if missing).
        sources: Per sample, the original image's file name (listed for people).

    Returns:
        What the query list adds: ``size`` ``[H, W]`` and, per sample, its ``files``
        (``image``, ``mask``, the expected ``answer`` name and the ``source``).
    """
    from PIL import Image
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    size = tuple(images[0].shape[:2]) if len(images) else (0, 0)
    for k, (sid, image, asked) in enumerate(zip(sample_ids, images, units)):
        sid = int(sid)
        Image.fromarray(np.ascontiguousarray(image)).save(folder / image_file_name(sid))
        Image.fromarray(query_mask(asked, image.shape[:2])).save(folder / mask_file_name(sid))
        files.append({'sample_id': sid, 'image': image_file_name(sid),
                      'mask': mask_file_name(sid), 'answer': label_file_name(sid),
                      'num_pixels': int(len(asked)),
                      'source': sources[k] if sources is not None else ''})
    return {'size': [int(size[0]), int(size[1])], 'files': files}


def _decode(data: bytes, name: str, size: tuple[int, int]) -> np.ndarray:
    """A label PNG as ``[H, W]`` uint8 train ids, checked for mode and size."""
    from PIL import Image, UnidentifiedImageError
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise AnnotationError(f'{name} is not a readable PNG ({err}): save the labels as '
                              'PNG') from None
    if image.mode not in ('L', 'P'):
        raise AnnotationError(f'{name} has mode {image.mode}: save one 8-bit channel of train '
                              'ids (grey or palette indices), not colours')
    labels = np.asarray(image, dtype=np.uint8)
    if labels.shape != tuple(size):
        raise AnnotationError(f'{name} is {labels.shape[1]}x{labels.shape[0]} but the query is '
                              f'{size[1]}x{size[0]} (width x height): label at the size of the '
                              'exported image')
    return labels


def read_label_zip(path: Path, size: tuple[int, int]) -> list[tuple[int, np.ndarray]]:
    """Read a zip of ``sample_<id>_label.png`` files into ``(sample_id, labels)`` pairs.

    Args:
        path: The ``.zip`` of answers.
        size: ``(H, W)`` every label PNG must have (the task's target resolution).

    Returns:
        Pairs of sample id and full label map ``[H, W]`` uint8, in the zip's order;
        duplicated ids are kept (the loop names them).

    Raises:
        AnnotationError: One line naming the file and the fix.
    """
    path = Path(path)
    if path.suffix.lower() != '.zip':
        raise AnnotationError('segmentation answers must be one .zip of sample_<id>_label.png '
                              'files')
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist()
                     if n.lower().endswith(LABEL_SUFFIX) and not n.startswith('__MACOSX')]
            if not names:
                raise AnnotationError(f'the zip holds no *{LABEL_SUFFIX} file: name each answer '
                                      f'sample_<id>{LABEL_SUFFIX} as listed in query.json')
            pairs = []
            for name in names:
                base = os.path.basename(name)
                match = _ID_IN_NAME.search(base)
                if match is None:
                    raise AnnotationError(f'{name}: the name has no sample_<id>: name each '
                                          f'answer sample_<id>{LABEL_SUFFIX}')
                pairs.append((int(match.group(1)), _decode(archive.read(name), base, size)))
    except zipfile.BadZipFile as err:
        raise AnnotationError(f'not a readable zip ({err})') from None
    return pairs


__all__ = ['LABEL_SUFFIX', 'export_region_query', 'image_file_name', 'label_file_name',
           'mask_file_name', 'query_mask', 'read_label_zip']
