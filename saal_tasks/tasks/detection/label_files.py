"""Detection queries as COCO files people can label, and their COCO answers read back.

Export (into the query folder):

* ``images/sample_<id>.<ext>``: each queried image, the original file's bytes (hard link when
  the file system allows it, else a copy), named after our sample id so that the id survives
  tools that rename or prefix files (Label Studio prefixes uploads with a hash).
* ``query_coco.json``: a COCO detection file. ``images``: ``id`` = our sample id,
  ``file_name`` = ``sample_<id>.<ext>`` (a bare name: CVAT matches uploaded images by name,
  Label Studio's COCO importer prepends an image root URL), ``width``/``height`` in pixels.
  ``categories``: the task's classes with ids ``1..C``. ``annotations``: optional
  pre-annotations, the current model's pseudo-boxes with their ``score`` (empty when no model
  has been trained yet, e.g. for the initial set).

Answers: a COCO JSON as annotation tools export it (CVAT's "COCO 1.0", Label Studio's "COCO"),
or CVAT's export zip holding exactly one such JSON. Tools renumber images and categories, so
an image is matched by the ``sample_<id>`` part of its ``file_name`` and a category by its
``name``; ``bbox`` is ``[x, y, width, height]`` in pixels; ``iscrowd`` 1 becomes
``ignore_flag`` 1 (as mmdet reads COCO); ``score`` and every other field are ignored. An image
listed without boxes is a valid, empty answer.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ...core.errors import AnnotationError
from ...core.text_files import decode_text, read_text

#: The exported COCO file of a query.
QUERY_COCO = 'query_coco.json'
#: Folder of the exported images inside the query folder.
IMAGE_DIR = 'images'
_ID_IN_NAME = re.compile(r'sample_(\d+)')
#: Boxes may leave the image by this much (pixels) from float round-off in tools that store
#: relative coordinates (Label Studio keeps percentages); they are clipped to the image.
EDGE_TOLERANCE = 1e-3

#: An image's size: ``(width, height)`` in pixels, or ``None`` for an id outside the pool.
SizeOf = Callable[[int], 'tuple[int, int] | None']


def image_file_name(sample_id: int, suffix: str) -> str:
    """Exported name of an image: ``sample_<id>`` plus the original suffix (e.g. ``.jpg``)."""
    return f'sample_{int(sample_id):06d}{suffix}'


def sample_id_of(file_name: str) -> int | None:
    """Our sample id in an image file name (any folder or tool prefix), or ``None``."""
    match = _ID_IN_NAME.search(os.path.basename(str(file_name)))
    return int(match.group(1)) if match else None


def to_coco_box(box: Sequence[float]) -> list[float]:
    """``[x1, y1, x2, y2]`` (0-based pixels) to COCO's ``[x, y, width, height]``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def from_coco_box(bbox: Sequence[float]) -> list[float]:
    """COCO's ``[x, y, width, height]`` to ``[x1, y1, x2, y2]``."""
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


# ---------------------------------------------------------------------------- export
def predicted_boxes(task: Any, model: nn.Module, sample_ids: np.ndarray,
                    batch_size: int = 8) -> dict[int, list[dict]]:
    """The model's pseudo-boxes of each image, in the image's own pixels.

    The boxes are :meth:`DetectionTask.pseudo_boxes` (the units SAAL scored: detections at
    or above ``pseudo_score_thr``), mapped from network-input pixels back to the original
    image by the test pipeline's ``scale_factor`` (as mmdet's ``predict(rescale=True)``) and
    clipped to the image.

    Args:
        task: A :class:`~saal_tasks.tasks.detection.task.DetectionTask`.
        model: The detector.
        sample_ids: Images, shape ``[K]``.
        batch_size: Images per forward pass.

    Returns:
        Per image, ``{'bbox': [x1, y1, x2, y2], 'bbox_label': c, 'score': s}`` by decreasing
        score; boxes with no area left after clipping are dropped.
    """
    was_training = model.training
    model.eval()
    found: dict[int, list[dict]] = {}
    try:
        for ids, inputs in task.pool_batches(np.asarray(sample_ids, dtype=np.int64), batch_size):
            for sid, sample, boxes in zip(ids, inputs['data_samples'],
                                          task.pseudo_boxes(model, inputs)):
                width, height = (float(v) for v in sample.metainfo['ori_shape'][::-1])
                scale = torch.as_tensor(sample.metainfo['scale_factor'],
                                        dtype=boxes.bboxes.dtype).repeat(2)
                rows = []
                for box, label, score in zip((boxes.bboxes / scale).tolist(),
                                             boxes.labels.tolist(), boxes.scores.tolist()):
                    x1, x2 = (min(max(v, 0.0), width) for v in box[0::2])
                    y1, y2 = (min(max(v, 0.0), height) for v in box[1::2])
                    if x2 > x1 and y2 > y1:
                        rows.append({'bbox': [x1, y1, x2, y2], 'bbox_label': int(label),
                                     'score': float(score)})
                found[int(sid)] = rows
    finally:
        model.train(was_training)
    return found


def _place(source: str, target: Path) -> None:
    """``target`` holds the bytes of ``source``: a hard link (no copy) where possible."""
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def export_coco_query(infos: Sequence[dict], sample_ids: np.ndarray, classes: Sequence[str],
                      folder: Path, boxes: dict[int, list[dict]] | None = None) -> dict:
    """Write the images and ``query_coco.json`` of a query into ``folder``.

    Args:
        infos: Per queried image, its pool record (``img_path``, ``width``, ``height``).
        sample_ids: The queried ids, shape ``[K]`` (same order as ``infos``).
        classes: Class names; category ``k + 1`` is ``classes[k]``.
        folder: Query folder (created if missing).
        boxes: Optional pre-annotations per id (see :func:`predicted_boxes`).

    Returns:
        The written COCO dictionary.
    """
    folder = Path(folder)
    (folder / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for sid, info in zip((int(i) for i in sample_ids), infos):
        name = image_file_name(sid, Path(info['img_path']).suffix.lower() or '.jpg')
        _place(info['img_path'], folder / IMAGE_DIR / name)
        images.append({'id': sid, 'file_name': name, 'width': int(info['width']),
                       'height': int(info['height'])})
        for row in (boxes or {}).get(sid, []):
            bbox = to_coco_box(row['bbox'])
            annotations.append({'id': len(annotations) + 1, 'image_id': sid,
                                'category_id': int(row['bbox_label']) + 1, 'bbox': bbox,
                                'area': bbox[2] * bbox[3], 'iscrowd': 0, 'segmentation': [],
                                'score': float(row['score'])})
    coco = {'info': {'description': 'active-learning query: label every image, boxes '
                                    '[x, y, width, height] in pixels'},
            'images': images,
            'categories': [{'id': k + 1, 'name': name, 'supercategory': ''}
                           for k, name in enumerate(classes)],
            'annotations': annotations}
    (folder / QUERY_COCO).write_text(json.dumps(coco, indent=1))
    return coco


# ---------------------------------------------------------------------------- import
def _load_coco(path: Path) -> dict:
    """The COCO dictionary of a ``.json`` file, or of the one JSON inside a ``.zip``."""
    try:
        if path.suffix.lower() == '.zip':
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist()
                         if n.lower().endswith('.json') and not n.startswith('__MACOSX')]
                if len(names) != 1:
                    raise AnnotationError(f'the zip holds {len(names)} JSON files {names[:3]}: '
                                          'it must hold exactly one COCO annotation file')
                text = decode_text(archive.read(names[0]), names[0])
        elif path.suffix.lower() == '.json':
            text = read_text(path)
        else:
            raise AnnotationError('detection answers must be a COCO .json file (or a .zip '
                                  'holding one, as CVAT exports it)')
        data = json.loads(text)
    except AnnotationError:
        raise
    except (ValueError, zipfile.BadZipFile) as err:
        raise AnnotationError(f'not a readable COCO file ({err})') from None
    if not isinstance(data, dict) or not isinstance(data.get('images'), list) or \
            not isinstance(data.get('categories'), list):
        raise AnnotationError('not a COCO detection file: it needs "images" and "categories" '
                              'lists (export the labels in COCO format)')
    return data


def _class_index(name: Any, classes: Sequence[str]) -> int | None:
    text = str(name).strip()
    if text in classes:
        return list(classes).index(text)
    lowered = [c.lower() for c in classes]
    return lowered.index(text.lower()) if text.lower() in lowered else None


def _box(ann: dict, file_name: str, size: tuple[int, int] | None) -> list[float]:
    """The ``[x1, y1, x2, y2]`` box of one COCO annotation, checked against the image."""
    bbox = ann.get('bbox')
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in bbox):
        raise AnnotationError(f'image {file_name}: annotation {ann.get("id")} has bbox '
                              f'{bbox!r}: give 4 finite numbers [x, y, width, height]')
    if not (bbox[2] > 0 and bbox[3] > 0):
        raise AnnotationError(f'image {file_name}: box {list(bbox)} (annotation '
                              f'{ann.get("id")}) has no area: redraw it with a positive width '
                              'and height')
    x1, y1, x2, y2 = from_coco_box(bbox)
    if size is None:
        return [x1, y1, x2, y2]
    width, height = size
    tol = EDGE_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise AnnotationError(f'image {file_name}: box {list(bbox)} [x, y, w, h] (annotation '
                              f'{ann.get("id")}) leaves the {width}x{height} image: move it '
                              'inside the image')
    return [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]


def read_coco_answers(path: Path, classes: Sequence[str],
                      size_of: SizeOf) -> list[tuple[int, list[dict]]]:
    """Parse a COCO file of answers into ``(sample_id, instances)`` pairs, in image order.

    Args:
        path: The answers (``.json``, or ``.zip`` with one JSON).
        classes: The task's class names (a category is matched by name).
        size_of: ``(width, height)`` of a pool image by id, ``None`` outside the pool (such
            images are returned as they are; the loop refuses them as not queried).

    Returns:
        Pairs with instances ``{'bbox': [x1, y1, x2, y2], 'bbox_label': c,
        'ignore_flag': 0 | 1}``; duplicated images are kept (the loop names them).

    Raises:
        AnnotationError: One line naming the image (or record) and the fix.
    """
    data = _load_coco(Path(path))
    categories: dict[Any, Any] = {}
    for cat in data['categories']:
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            raise AnnotationError(f'category {cat!r} needs an "id" and a "name"')
        categories[cat['id']] = cat['name']
    images: dict[Any, tuple[int, str]] = {}
    order: list[Any] = []
    for image in data['images']:
        if not isinstance(image, dict) or 'id' not in image or 'file_name' not in image:
            raise AnnotationError(f'image record {image!r} needs an "id" and a "file_name"')
        name = str(image['file_name'])
        sid = sample_id_of(name)
        if sid is None:
            raise AnnotationError(f'image {name}: its file name has no sample_<id>: keep the '
                                  'exported file names (sample_<id>.jpg) when labeling')
        if image['id'] in images:
            raise AnnotationError(f'image id {image["id"]} is used twice in "images": give '
                                  'each image one id')
        images[image['id']] = (sid, name)
        order.append(image['id'])
    instances: dict[Any, list[dict]] = {key: [] for key in order}
    annotations = data.get('annotations') or []
    if not isinstance(annotations, list):
        raise AnnotationError('"annotations" must be a list of COCO annotations')
    for ann in annotations:
        if not isinstance(ann, dict) or ann.get('image_id') not in images:
            raise AnnotationError(f'annotation {ann.get("id") if isinstance(ann, dict) else ann!r}'
                                  ' refers to an image_id that is not in "images": export the '
                                  'images with their annotations')
        sid, name = images[ann['image_id']]
        if ann.get('category_id') not in categories:
            raise AnnotationError(f'image {name}: annotation {ann.get("id")} has category_id '
                                  f'{ann.get("category_id")!r}, which is not in "categories"')
        cat_name = categories[ann['category_id']]
        label = _class_index(cat_name, classes)
        if label is None:
            raise AnnotationError(f'image {name}: class {cat_name!r} is not one of the task '
                                  f"classes ({', '.join(classes)}): rename the label")
        box = _box(ann, name, size_of(sid))
        instances[ann['image_id']].append({'bbox': box, 'bbox_label': label,
                                           'ignore_flag': 1 if ann.get('iscrowd') else 0})
    return [(images[key][0], instances[key]) for key in order]


__all__ = ['EDGE_TOLERANCE', 'IMAGE_DIR', 'QUERY_COCO', 'export_coco_query', 'from_coco_box',
           'image_file_name', 'predicted_boxes', 'read_coco_answers', 'sample_id_of',
           'to_coco_box']
