"""Checks of a VOC image set's files before mmdet parses them, each failure one named line.

mmdet's ``XMLDataset`` reads the XML of every listed image when the dataset is built, but a
missing file surfaces as bare errno text, malformed XML as a long ``ParseError`` traceback
naming no file, an object of a class outside ``metainfo['classes']`` is dropped silently, a
``<size>`` that disagrees with the JPEG is trusted (and the boxes blamed later), and a
truncated JPEG is found only when training reaches it. :func:`check_voc_image_set` reads
what the dataset will read — the image-set file, each XML, each image's header and its last
bytes (no pixel is decoded) — and names the file, the image-set file that lists it and the
fix. On PASCAL VOC 07+12 trainval (16,551 images) this costs one pass over small files.
"""
from __future__ import annotations

import os.path as osp
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from mmengine.logging import print_log

from ...core.errors import ConfigError

#: Values of ``task.on_unknown_class``.
UNKNOWN_CLASS_POLICIES = ('stop', 'drop')
#: Values of ``task.on_corrupt``.
CORRUPT_POLICIES = ('stop', 'skip')
#: Bytes at the end of a file searched for its end marker: some writers pad after it.
_TAIL_BYTES = 1024
_END_MARKERS = {b'\xff\xd8': (b'\xff\xd9', 'JPEG end-of-image marker'),
                b'\x89PNG': (b'IEND', 'PNG IEND chunk')}


@dataclass
class ImageSetReport:
    """What :func:`check_voc_image_set` found in one image set.

    Attributes:
        corrupt: Image ids left out (``on_corrupt='skip'``), with the reason of each.
        unknown: Boxes of classes outside the dataset's classes, per class name (dropped, as
            mmdet drops them, with ``on_unknown_class='drop'``).
    """

    corrupt: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)


def _listed_ids(dataset: Any, key: str) -> list[str]:
    """Image ids of an ImageSets file, read as mmdet reads them (one id per line)."""
    from mmengine.fileio import list_from_file
    ann_file = dataset.ann_file
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'{key}: image-set file {ann_file} does not exist: check '
                                'data_root and ann_file')
    ids = list_from_file(ann_file, backend_args=dataset.backend_args)
    for number, img_id in enumerate(ids, start=1):
        if not img_id or img_id != img_id.strip() or ' ' in img_id or '\t' in img_id:
            raise ConfigError(f'line {number} of {ann_file} is {img_id!r}: an image-set file '
                              'holds one image id per line and nothing else (remove empty '
                              'lines, spaces and extra columns)')
    return ids


def _inspect_image(path: str) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` from a whole image's header, or ``(size or None, why)``
    when the header cannot be read or the file is cut short (no end marker)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            size = image.size
    except (UnidentifiedImageError, OSError) as err:
        return None, f'unreadable image header ({type(err).__name__})'
    with open(path, 'rb') as handle:
        head = handle.read(4)
        handle.seek(0, 2)
        length = handle.tell()
        handle.seek(max(0, length - _TAIL_BYTES))
        tail = handle.read()
    for magic, (marker, name) in _END_MARKERS.items():
        if head.startswith(magic) and marker not in tail:
            return size, f'truncated: no {name} in its last {min(length, _TAIL_BYTES)} bytes'
    return size, None


def _xml_size(root: ET.Element, xml_path: str) -> tuple[int, int] | None:
    """``(width, height)`` of the XML's ``<size>``, None without one."""
    size = root.find('size')
    if size is None:
        return None
    try:
        return int(size.findtext('width', '')), int(size.findtext('height', ''))
    except ValueError:
        raise ConfigError(f'annotation {xml_path} has a <size> without integer <width> and '
                          '<height>: fix it or delete <size> (the image header is read '
                          'instead)') from None


def _check_objects(root: ET.Element, xml_path: str, classes: tuple[str, ...],
                   unknown: dict[str, list[str]]) -> None:
    """Every ``<object>`` has a name and four numeric box corners; collect unknown names."""
    for obj in root.iter('object'):
        name = obj.findtext('name')
        if not name:
            raise ConfigError(f'annotation {xml_path} has an <object> without <name>: add '
                              'the class name or remove the object')
        if name not in classes:
            unknown.setdefault(name, []).append(xml_path)
            continue
        box = obj.find('bndbox')
        try:
            if box is None:
                raise ValueError
            [float(box.findtext(tag, '')) for tag in ('xmin', 'ymin', 'xmax', 'ymax')]
        except ValueError:
            raise ConfigError(f'annotation {xml_path} has a {name!r} object without a '
                              '<bndbox> of numeric xmin, ymin, xmax, ymax: fix the box or '
                              'remove the object') from None


def check_voc_image_set(dataset: Any, key: str, on_unknown_class: str = 'stop',
                        on_corrupt: str = 'stop', pool: bool = True) -> ImageSetReport:
    """Check every file a VOC-style ``XMLDataset`` will read, before it reads them.

    Args:
        dataset: An mmdet ``XMLDataset`` (e.g. ``VOCDataset``) built with ``lazy_init=True``:
            its paths are resolved, nothing is parsed yet.
        key: Config key of the dataset, named in errors (``task.train_dataloader.dataset``).
        on_unknown_class: ``'stop'``: an object whose class is not among the dataset's
            classes is an error; ``'drop'``: such objects are left out (what mmdet does)
            and counted in one warning.
        on_corrupt: ``'stop'``: an image whose header cannot be read or whose file is cut
            short is an error; ``'skip'``: it is left out of the dataset (listed in the
            report and one warning). An evaluation set is always checked with ``'stop'``.

    Returns:
        The ids left out and the unknown classes dropped.

    Raises:
        ConfigError: Malformed XML, an object without name or numeric box, an unknown class
            (``'stop'``), a corrupt image (``'stop'``), or a ``<size>`` that is not the
            image's; one line naming the file, the image-set file and the fix.
        FileNotFoundError: The image-set file, an XML or an image does not exist.
    """
    ann_file = dataset.ann_file
    root_dir = dataset.sub_data_root
    classes = tuple(dataset.metainfo['classes'])
    listed = f'listed in {ann_file}'
    report = ImageSetReport()
    unknown: dict[str, list[str]] = {}
    for img_id in _listed_ids(dataset, key):
        xml_path = osp.join(root_dir, dataset.ann_subdir, f'{img_id}.xml')
        img_path = osp.join(root_dir, dataset.img_subdir, f'{img_id}.jpg')
        for path, what in ((xml_path, 'annotation'), (img_path, 'image')):
            if not osp.isfile(path):
                raise FileNotFoundError(f'{what} {path} of image {img_id} ({listed}) does not '
                                        f'exist: add the file or remove {img_id} from '
                                        f'{ann_file}')
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as err:
            raise ConfigError(f'annotation {xml_path} is not well-formed XML ({err}): fix or '
                              f'regenerate it, or remove {img_id} from {ann_file}') from None
        _check_objects(root, xml_path, classes, unknown)
        actual, problem = _inspect_image(img_path)
        if problem is not None:
            if pool and on_corrupt == 'skip':
                report.corrupt[img_id] = problem
                continue
            skip = (", or set task.on_corrupt='skip' to leave it out of the pool" if pool
                    else ' (evaluation uses every listed image)')
            raise ConfigError(f'corrupt image {img_path} ({problem}; {listed}): replace it or '
                              f'remove {img_id} from {ann_file}{skip}')
        declared = _xml_size(root, xml_path)
        if declared is not None and declared != actual:
            raise ConfigError(f'annotation {xml_path} gives <size> {declared[0]}x{declared[1]} '
                              f'but image {img_path} is {actual[0]}x{actual[1]}: fix <width> '
                              'and <height> in the XML (boxes are read in the image\'s pixels)')
    if unknown:
        names = sorted(unknown)
        files = sorted({path for paths in unknown.values() for path in paths})
        if on_unknown_class == 'stop':
            shown = ', '.join(repr(name) for name in names[:5])
            raise ConfigError(
                f'{key}: {len(files)} annotation(s) name classes that are not among the '
                f"dataset's {len(classes)} classes: {shown} (first in {files[0]}): fix the "
                "names, add the classes to the dataset's metainfo, or set "
                "task.on_unknown_class='drop' to leave those boxes out")
        report.unknown = {name: len(unknown[name]) for name in names}
        print_log(f'{key}: dropped {sum(report.unknown.values())} box(es) of classes outside '
                  f'the dataset ({report.unknown}) in {len(files)} annotation(s) '
                  "(task.on_unknown_class='drop')", logger='current', level=30)
    if report.corrupt:
        first = next(iter(report.corrupt.items()))
        print_log(f'{key}: left {len(report.corrupt)} corrupt image(s) out of the pool '
                  f"(task.on_corrupt='skip'), the first {first[0]}: {first[1]}",
                  logger='current', level=30)
    return report


def check_policies(on_unknown_class: str, on_corrupt: str) -> None:
    """Refuse unknown values of the two options (one line naming the key and the values)."""
    if on_unknown_class not in UNKNOWN_CLASS_POLICIES:
        raise ConfigError(f'task.on_unknown_class must be one of {UNKNOWN_CLASS_POLICIES}, '
                          f'got {on_unknown_class!r}')
    if on_corrupt not in CORRUPT_POLICIES:
        raise ConfigError(f'task.on_corrupt must be one of {CORRUPT_POLICIES}, got '
                          f'{on_corrupt!r}')


__all__ = ['CORRUPT_POLICIES', 'ImageSetReport', 'UNKNOWN_CLASS_POLICIES', 'check_policies',
           'check_voc_image_set']
