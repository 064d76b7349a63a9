"""Unlabeled images for detection: a plain folder, or a COCO file without annotations.

Query mode (``tools/query.py --data``) replaces the pool of the config the detector was
trained with by one of these, as an mmdet dataset, so the training config's pipeline, classes
and head adapter apply unchanged:

* a folder: :class:`ImageFolderDetDataset`, every image under it (any depth, sorted by
  relative path, ``list_images``); image ``k`` of that list is sample id ``k``, and each
  id's file (relative path, size, content hash) is part of the query's fingerprint;
* a ``.json`` file: mmdet's ``CocoDataset`` (COCO's ``image_info_*.json`` form: ``images``
  and ``categories``, ``annotations`` optional), ids are the COCO image ids. Its images are
  read from ``<root>/<split>/`` when the file is ``<root>/annotations/<name>_<split>.json``
  (COCO's own layout, e.g. ``image_info_unlabeled2017.json`` beside ``unlabeled2017/``),
  otherwise from the file's own folder.
"""
from __future__ import annotations

import copy
import io
from pathlib import Path

from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS

from ...core.errors import ConfigError
from ...core.image_files import file_key, folder_images


@DATASETS.register_module()
class ImageFolderDetDataset(BaseDetDataset):
    """Every image under ``data_root`` as a detection sample without objects.

    Each record has ``img_path``, ``img_id`` (its position in :func:`list_images`, as
    digits), ``width``/``height`` from the file's header, ``instances = []`` and
    ``file_key`` (:func:`~saal_tasks.core.image_files.file_key`).
    """

    def load_data_list(self) -> list[dict]:
        from PIL import Image, UnidentifiedImageError
        root, files = folder_images(self.data_root)
        infos = []
        for pos, path in enumerate(files):
            data = path.read_bytes()  # read once: hashed for the key, header for the size
            try:
                with Image.open(io.BytesIO(data)) as img:
                    width, height = img.size
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
                raise ConfigError(f'image {path} cannot be read ({err}): replace or remove '
                                  'it') from None
            infos.append(dict(img_path=str(path), img_id=str(pos), width=int(width),
                              height=int(height), instances=[],
                              file_key=file_key(root, path, data)))
        return infos


def coco_image_dir(ann_file: Path) -> Path:
    """Where the images of a COCO file are (see the module): ``<root>/<split>/`` for
    ``<root>/annotations/<name>_<split>.json``, else the file's folder."""
    split = ann_file.stem.rsplit('_', 1)[-1]
    beside = ann_file.parent.parent / split
    if ann_file.parent.name == 'annotations' and beside.is_dir():
        return beside
    return ann_file.parent


def query_pool_cfg(leaf_cfg: dict, data: str) -> dict:
    """The pool dataset config of a query on ``data`` (a folder or a COCO file).

    Args:
        leaf_cfg: The first leaf of the training pool's dataset config (its pipeline and
            classes are kept).
        data: The ``--data`` path.

    Returns:
        A leaf dataset config (``ImageFolderDetDataset`` or ``CocoDataset``).

    Raises:
        FileNotFoundError: ``data`` does not exist.
        ConfigError: ``data`` is a file that is not ``.json``.
    """
    path = Path(data).expanduser().resolve()
    classes = (leaf_cfg.get('metainfo') or {}).get('classes') \
        or DATASETS.get(leaf_cfg['type']).METAINFO['classes']
    common = dict(metainfo=dict(classes=tuple(classes)),
                  pipeline=copy.deepcopy(leaf_cfg['pipeline']), filter_cfg=None)
    if path.is_dir():
        return dict(type='ImageFolderDetDataset', data_root=str(path), ann_file='', **common)
    if not path.exists():
        raise FileNotFoundError(f'--data {path} does not exist: give a folder of images or a '
                                'COCO-format .json file')
    if path.suffix.lower() != '.json':
        raise ConfigError(f'--data {path} is neither a folder nor a COCO .json file: give a '
                          'folder of images or a COCO file (images, categories)')
    return dict(type='CocoDataset', data_root='', ann_file=str(path),
                data_prefix=dict(img=str(coco_image_dir(path)) + '/'), **common)


__all__ = ['ImageFolderDetDataset', 'coco_image_dir', 'query_pool_cfg']
