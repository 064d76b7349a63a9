"""A small detection dataset written in the real PASCAL VOC layout (the embedded default).

The images are generated (coloured shapes on textured backgrounds, one shape per class), but
the files are exactly what mmdet's ``VOCDataset`` reads for the real data::

    VOCdevkit/
      VOC2007/Annotations/000001.xml        VOC XML: size, objects with 1-based bndbox
      VOC2007/JPEGImages/000001.jpg
      VOC2007/ImageSets/Main/trainval.txt   image ids, one per line
      VOC2007/ImageSets/Main/test.txt
      VOC2012/...                           ids like 2008_000001 (trainval only, like VOC)

so the same configs, pool keys and evaluation run on it as on VOC07+12. :func:`write_coco_demo`
writes the same kind of images in COCO's layout (``annotations/instances_*.json``), with
images that hold no object and an unlabeled set. Nothing depends on this module at run time
except the demos and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

#: Classes of the demo data: real VOC class names, so ``VOCDataset`` accepts the XML.
DEMO_CLASSES = ('bottle', 'car', 'person')
#: Shape drawn for each demo class (why the classes are learnable from few images).
_SHAPES = {'bottle': 'tall_rectangle', 'car': 'wide_ellipse', 'person': 'triangle'}
_COLOURS = {'bottle': (40, 160, 40), 'car': (30, 30, 200), 'person': (200, 120, 20)}  # BGR


@dataclass(frozen=True)
class DemoSplit:
    """One image set to write.

    Attributes:
        year_dir: ``'VOC2007'`` or ``'VOC2012'``.
        image_set: ``'trainval'`` or ``'test'``.
        num_images: Images in the set.
        id_prefix: Prepended to the running number, e.g. ``'2008_'`` for VOC2012-style ids.
        first_number: Running number of the first image.
    """

    year_dir: str
    image_set: str
    num_images: int
    id_prefix: str = ''
    first_number: int = 1


#: The default layout: a VOC07+12-like pool (trainval of both years) and a VOC07 test set.
DEFAULT_SPLITS = (
    DemoSplit('VOC2007', 'trainval', 48),
    DemoSplit('VOC2007', 'test', 24, first_number=1001),
    DemoSplit('VOC2012', 'trainval', 24, id_prefix='2008_'),
)


def _draw_object(img: np.ndarray, cls: str, box: tuple[int, int, int, int],
                 rng: np.random.Generator) -> None:
    """Draw one shape of class ``cls`` filling the 0-based box ``(x1, y1, x2, y2)``."""
    import cv2

    x1, y1, x2, y2 = box
    colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in _COLOURS[cls])
    shape = _SHAPES[cls]
    if shape == 'tall_rectangle' or shape == 'wide_rectangle':
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness=-1)
    elif shape == 'wide_ellipse':
        centre = ((x1 + x2) // 2, (y1 + y2) // 2)
        cv2.ellipse(img, centre, ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, colour, -1)
    else:
        points = np.array([[(x1 + x2) // 2, y1], [x1, y2], [x2, y2]], dtype=np.int32)
        cv2.fillPoly(img, [points], colour)


def _object_box(cls: str, width: int, height: int,
                rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random 0-based box inside the image with the class's aspect ratio."""
    long_side = int(rng.integers(28, max(29, min(width, height) * 2 // 3)))
    short_side = max(12, int(long_side * rng.uniform(0.45, 0.65)))
    if cls == 'bottle':
        w, h = short_side, long_side
    elif cls == 'car':
        w, h = long_side, short_side
    else:
        w = h = long_side
    w, h = min(w, width - 2), min(h, height - 2)
    x1 = int(rng.integers(0, width - w))
    y1 = int(rng.integers(0, height - h))
    return x1, y1, x1 + w - 1, y1 + h - 1


def _annotation_xml(year_dir: str, img_id: str, width: int, height: int,
                    objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    """VOC XML with 1-based inclusive pixel coordinates (what VOC and mmdet expect)."""
    parts = [
        '<annotation>',
        f'  <folder>{year_dir}</folder>',
        f'  <filename>{escape(img_id)}.jpg</filename>',
        f'  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>',
        '  <segmented>0</segmented>',
    ]
    for cls, (x1, y1, x2, y2) in objects:
        parts += [
            '  <object>',
            f'    <name>{cls}</name><pose>Unspecified</pose>',
            '    <truncated>0</truncated><difficult>0</difficult>',
            f'    <bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>'
            f'<xmax>{x2 + 1}</xmax><ymax>{y2 + 1}</ymax></bndbox>',
            '  </object>',
        ]
    parts.append('</annotation>')
    return '\n'.join(parts) + '\n'


def write_voc_demo(root: str | Path, splits: tuple[DemoSplit, ...] = DEFAULT_SPLITS,
                   image_size: tuple[int, int] = (112, 160), max_objects: int = 3,
                   classes: tuple[str, ...] = DEMO_CLASSES, seed: int = 0) -> dict[str, int]:
    """Write a VOCdevkit folder of generated images under ``root``.

    Args:
        root: The ``VOCdevkit`` folder to create (its ``VOC2007``/``VOC2012`` subfolders are
            written; existing files with the same names are overwritten).
        splits: Image sets to write.
        image_size: Inclusive range of image widths and heights in pixels.
        max_objects: At most this many objects per image (at least one).
        classes: Class names to draw, a subset of :data:`DEMO_CLASSES`.
        seed: Seed of every random choice; the same seed writes the same bytes.

    Returns:
        Number of images written per ``'<year_dir>/<image_set>'``.

    Raises:
        ValueError: An unknown class, an empty split, or an image size below 64 pixels.
    """
    import cv2

    _check_args(image_size, classes)
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for split in splits:
        if split.num_images < 1:
            raise ValueError(f'split {split.year_dir}/{split.image_set} has no images')
        base = root / split.year_dir
        for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
            (base / sub).mkdir(parents=True, exist_ok=True)
        ids = []
        for n in range(split.first_number, split.first_number + split.num_images):
            img_id = f'{split.id_prefix}{n:06d}'
            img, objects = _generate_image(rng, image_size, 1, max_objects, classes)
            height, width = img.shape[:2]
            cv2.imwrite(str(base / 'JPEGImages' / f'{img_id}.jpg'), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            (base / 'Annotations' / f'{img_id}.xml').write_text(
                _annotation_xml(split.year_dir, img_id, width, height, objects))
            ids.append(img_id)
        (base / 'ImageSets' / 'Main' / f'{split.image_set}.txt').write_text(
            '\n'.join(ids) + '\n')
        counts[f'{split.year_dir}/{split.image_set}'] = len(ids)
    return counts


def _check_args(image_size: tuple[int, int], classes: tuple[str, ...]) -> None:
    unknown = sorted(set(classes) - set(DEMO_CLASSES))
    if unknown:
        raise ValueError(f'demo classes {unknown} cannot be drawn: choose from {DEMO_CLASSES}')
    if image_size[0] < 64 or image_size[1] < image_size[0]:
        raise ValueError(f'image_size must be (min, max) with 64 <= min <= max, got {image_size}')


def _generate_image(rng: np.random.Generator, image_size: tuple[int, int], min_objects: int,
                    max_objects: int, classes: tuple[str, ...]
                    ) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """One BGR image ``[H, W, 3]`` and its objects ``(class, 0-based inclusive box)``."""
    width, height = (int(v) for v in rng.integers(image_size[0], image_size[1] + 1, 2))
    # Smooth random background plus noise, so "empty" is not a flat colour.
    gradient = np.linspace(0, 1, width)[None, :, None] * rng.uniform(20, 90, 3)
    background = rng.uniform(60, 180, 3) + gradient
    img = background + rng.normal(0, 12, (height, width, 3))
    img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    objects = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        cls = classes[int(rng.integers(len(classes)))]
        box = _object_box(cls, width, height, rng)
        _draw_object(img, cls, box, rng)
        objects.append((cls, box))
    return img, objects


#: The COCO demo's sets: a training pool, a validation set and an unlabeled set.
COCO_SPLITS = {'train2017': 48, 'val2017': 24, 'unlabeled2017': 16}


def write_coco_demo(root: str | Path, splits: dict[str, int] | None = None,
                    image_size: tuple[int, int] = (112, 160), max_objects: int = 3,
                    empty_every: int = 6, classes: tuple[str, ...] = DEMO_CLASSES,
                    seed: int = 0) -> dict[str, int]:
    """Write a COCO-layout folder of generated images under ``root``::

        root/annotations/instances_train2017.json     images, annotations, categories
        root/annotations/instances_val2017.json
        root/annotations/image_info_unlabeled2017.json  images and categories only
        root/train2017/000000000001.jpg ...

    as mmdet's ``CocoDataset`` and ``CocoMetric`` read COCO itself (boxes ``[x, y, w, h]``,
    category ids from 1). In the annotated sets every ``empty_every``-th image holds no object
    (and has no annotation), as real pools do; the ``unlabeled2017`` file has no
    ``annotations`` at all, like COCO's own ``image_info_unlabeled2017.json``.

    Args:
        root: The folder to create (existing files with the same names are overwritten).
        splits: Images per set (default :data:`COCO_SPLITS`); a set named ``unlabeled*``
            is written without annotations.
        image_size: Inclusive range of image widths and heights in pixels.
        max_objects: At most this many objects per non-empty image (at least one).
        empty_every: Every this many images is empty (0: none).
        classes: Class names to draw, a subset of :data:`DEMO_CLASSES`.
        seed: Seed of every random choice; the same seed writes the same bytes.

    Returns:
        Number of images written per set.
    """
    import json

    import cv2

    _check_args(image_size, classes)
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [{'id': i + 1, 'name': name, 'supercategory': 'demo'}
                  for i, name in enumerate(classes)]
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    next_image, next_ann = 1, 1
    for name, num in (splits or COCO_SPLITS).items():
        if num < 1:
            raise ValueError(f'COCO demo set {name} has no images')
        (root / name).mkdir(exist_ok=True)
        images, annotations = [], []
        for n in range(num):
            empty = empty_every > 0 and n % empty_every == empty_every - 1
            img, objects = _generate_image(rng, image_size, 0 if empty else 1,
                                           0 if empty else max_objects, classes)
            height, width = img.shape[:2]
            file_name = f'{next_image:012d}.jpg'
            cv2.imwrite(str(root / name / file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append({'id': next_image, 'file_name': file_name, 'width': width,
                           'height': height})
            for cls, (x1, y1, x2, y2) in objects:
                w, h = x2 - x1 + 1, y2 - y1 + 1
                annotations.append({'id': next_ann, 'image_id': next_image,
                                    'category_id': classes.index(cls) + 1,
                                    'bbox': [x1, y1, w, h], 'area': w * h, 'iscrowd': 0})
                next_ann += 1
            next_image += 1
        content: dict = {'images': images, 'categories': categories}
        if name.startswith('unlabeled'):
            target = root / 'annotations' / f'image_info_{name}.json'
        else:
            content['annotations'] = annotations
            target = root / 'annotations' / f'instances_{name}.json'
        target.write_text(json.dumps(content))
        counts[name] = num
    return counts


__all__ = ['COCO_SPLITS', 'DEFAULT_SPLITS', 'DEMO_CLASSES', 'DemoSplit', 'write_coco_demo',
           'write_voc_demo']
