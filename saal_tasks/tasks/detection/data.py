"""The detection pool keyed by image id, and the labeled-subset dataset used for training.

Why not mmdet's own datasets with ``indices``: ``BaseDataset`` applies ``filter_cfg`` before
``indices``, so positions shift with the filter, and VOC training wraps
``RepeatDataset(ConcatDataset([VOC2007, VOC2012]))``, which cannot be subset at all. Here the
training dataset config is flattened into its leaf datasets (each a real mmdet dataset that
parses its own XML), every image gets an absolute integer id derived from its VOC image id,
and :class:`LabeledSubset` serves exactly the labeled ids, with the oracle's annotations.

Sample ids: ``leaf_index * 10**10 + int(img_id without '_')``, where ``leaf_index`` is the
position of the leaf in the flattened config (0 for VOC2007, 1 for VOC2012 in the paper's
config). VOC2007's ``'000005'`` is ``5``; VOC2012's ``'2008_000008'`` is ``12008000008``.
"""
from __future__ import annotations

import copy
from typing import Any, Collection, Sequence

import numpy as np
from torch.utils.data import Dataset

from ...core.errors import ConfigError

#: Wrapper dataset types that are unwrapped to reach the leaf datasets.
WRAPPERS_WITH_ONE = ('RepeatDataset', 'ClassBalancedDataset')
WRAPPERS_WITH_MANY = ('ConcatDataset',)
#: Ids of different leaves never collide: a VOC image id has at most 10 digits.
LEAF_STRIDE = 10 ** 10


def flatten_dataset_cfg(cfg: dict) -> list[dict]:
    """Leaf dataset configs of a (possibly wrapped) dataset config, in order.

    Args:
        cfg: A dataset config, e.g. ``RepeatDataset(ConcatDataset([VOC2007, VOC2012]))``.

    Returns:
        Copies of the leaf configs (no wrapper types).
    """
    kind = cfg.get('type')
    if kind in WRAPPERS_WITH_ONE:
        return flatten_dataset_cfg(cfg['dataset'])
    if kind in WRAPPERS_WITH_MANY:
        return [leaf for sub in cfg['datasets'] for leaf in flatten_dataset_cfg(sub)]
    return [copy.deepcopy(dict(cfg))]


def encode_sample_id(leaf_index: int, img_id: str) -> int:
    """Absolute pool id of image ``img_id`` of leaf dataset ``leaf_index``.

    Raises:
        ConfigError: ``img_id`` is not digits (and underscores) of at most 10 digits.
    """
    digits = str(img_id).replace('_', '')
    if not digits.isdigit() or len(digits) > 10:
        raise ConfigError(f'image id {img_id!r} cannot key the pool: ids must be at most 10 '
                          "digits with optional '_' (VOC style, e.g. 000005 or 2008_000008)")
    return leaf_index * LEAF_STRIDE + int(digits)


class ImagePool:
    """All images of the leaf datasets, addressable by absolute sample id.

    Args:
        leaves: Built mmdet datasets (``BaseDetDataset``), in flattened-config order. All must
            share the same ``classes``.
        skip: Per leaf, image ids left out of the pool (corrupt files under
            ``on_corrupt='skip'``); ``None`` keeps every image.

    Raises:
        ConfigError: Leaves disagree on classes, or two images map to the same id.
    """

    def __init__(self, leaves: Sequence[Any],
                 skip: Sequence[Collection[str]] | None = None) -> None:
        if not leaves:
            raise ConfigError('task.train_dataloader.dataset has no datasets: configure at '
                              'least one VOC image set')
        classes = tuple(leaves[0].metainfo['classes'])
        for leaf in leaves[1:]:
            if tuple(leaf.metainfo['classes']) != classes:
                raise ConfigError('the pool datasets have different classes: give every '
                                  'dataset of task.train_dataloader the same metainfo')
        self.leaves = list(leaves)
        self.classes = classes
        ids, where = [], {}
        for leaf_index, leaf in enumerate(self.leaves):
            left_out = set(skip[leaf_index]) if skip else set()
            for pos in range(len(leaf)):
                img_id = leaf.get_data_info(pos)['img_id']
                if img_id in left_out:
                    continue
                sid = encode_sample_id(leaf_index, img_id)
                if sid in where:
                    raise ConfigError(f'image {leaf.get_data_info(pos)["img_id"]} appears '
                                      'twice in one dataset: remove the duplicate from its '
                                      'ImageSets file')
                where[sid] = (leaf_index, pos)
                ids.append(sid)
        self._where = where
        self._ids = np.sort(np.asarray(ids, dtype=np.int64))

    @property
    def metainfo(self) -> dict:
        """The first leaf's metainfo (classes, palette, dataset type)."""
        return self.leaves[0].metainfo

    def sample_ids(self) -> np.ndarray:
        """Every pool id, sorted, ``int64`` ``[N]``."""
        return self._ids.copy()

    def locate(self, sample_id: int) -> tuple[int, int]:
        """``(leaf_index, position)`` of ``sample_id``.

        Raises:
            KeyError: The id is not in the pool.
        """
        try:
            return self._where[int(sample_id)]
        except KeyError:
            raise KeyError(f'sample id {sample_id} is not in the detection pool') from None

    def data_info(self, sample_id: int) -> dict:
        """A fresh copy of the leaf's parsed annotation record (img_path, size, instances)."""
        leaf_index, pos = self.locate(sample_id)
        return self.leaves[leaf_index].get_data_info(pos)

    def image_size(self, sample_id: int) -> tuple[int, int] | None:
        """``(width, height)`` of a pool image, ``None`` for an id outside the pool."""
        try:
            info = self.data_info(int(sample_id))
        except KeyError:
            return None
        return int(info['width']), int(info['height'])

    def pipeline(self, sample_id: int) -> Any:
        """The (training) pipeline of the leaf holding ``sample_id``."""
        return self.leaves[self.locate(sample_id)[0]].pipeline

    def ground_truth(self, sample_id: int) -> list[dict]:
        """The XML's instances of ``sample_id``: ``bbox`` (0-based x1, y1, x2, y2),
        ``bbox_label`` and ``ignore_flag`` (VOC "difficult" or too small)."""
        return [{'bbox': [float(v) for v in inst['bbox']],
                 'bbox_label': int(inst['bbox_label']),
                 'ignore_flag': int(inst.get('ignore_flag', 0))}
                for inst in self.data_info(sample_id)['instances']]


class LabeledSubset(Dataset):
    """The labeled images of a pool, with the oracle's annotations, through the train pipeline.

    Item ``i`` is image ``sample_ids[i]``: its leaf's parsed record with ``instances``
    replaced by ``annotations[sample_id]``, passed through its leaf's pipeline. When the
    pipeline drops an image (a random crop found no valid box), the next labeled image is used
    instead, as mmdet's datasets do with a random one, but without a random draw.

    Args:
        pool: The image pool.
        sample_ids: Labeled ids, shape ``[N]``.
        annotations: Instances per labeled id (same format as :meth:`ImagePool.ground_truth`).
        max_refetch: Consecutive dropped images tolerated before giving up.

    Raises:
        KeyError: An id is not in the pool.
        ValueError: An id has no annotation.
    """

    def __init__(self, pool: ImagePool, sample_ids: np.ndarray,
                 annotations: dict[int, list[dict]], max_refetch: int = 100) -> None:
        self.pool = pool
        self.sample_ids = np.asarray(sample_ids, dtype=np.int64)
        missing = [int(i) for i in self.sample_ids if int(i) not in annotations]
        if missing:
            raise ValueError(f'no annotation for labeled images {missing[:5]}')
        for sid in self.sample_ids:
            pool.locate(sid)
        self.annotations = annotations
        self.max_refetch = max_refetch

    @property
    def metainfo(self) -> dict:
        """Metainfo of the pool (mmdet hooks check ``classes`` against the head)."""
        return self.pool.metainfo

    def __len__(self) -> int:
        return len(self.sample_ids)

    def data_info(self, index: int) -> dict:
        """Record of item ``index`` before the pipeline (annotations replaced)."""
        sid = int(self.sample_ids[index])
        info = self.pool.data_info(sid)
        info['instances'] = copy.deepcopy(self.annotations[sid])
        info['sample_id'] = sid
        return info

    def get_data_info(self, index: int) -> dict:
        """Same as :meth:`data_info` (the name mmdet's batch samplers call)."""
        return self.data_info(index)

    def __getitem__(self, index: int) -> Any:
        for attempt in range(self.max_refetch + 1):
            i = (index + attempt) % len(self)
            data = self.pool.pipeline(int(self.sample_ids[i]))(self.data_info(i))
            if data is not None:
                return data
        raise RuntimeError(f'the training pipeline dropped {self.max_refetch + 1} images in a '
                           'row: check the annotations and the crop settings')


def loader_cfg(cfg: dict, **overrides: Any) -> dict:
    """A copy of a dataloader config for ``Runner``, with ``overrides`` set.

    Args:
        cfg: An mmengine dataloader config (not modified; deep-copied).
        **overrides: Keys to set in the copy (not copied), e.g. ``dataset=`` a built dataset.

    Returns:
        The new config; without ``num_workers`` it has no ``persistent_workers`` (torch
        refuses persistent workers when there are none).
    """
    out = copy.deepcopy(cfg)
    out.update(overrides)
    if not out.get('num_workers'):
        out.pop('persistent_workers', None)
    return out


def labeled_loader_cfg(cfg: dict, dataset: LabeledSubset, seed: int) -> dict:
    """The training dataloader config of one round: ``cfg`` over the labeled images.

    Args:
        cfg: The task's ``train_dataloader`` config (not modified).
        dataset: The labeled images (:class:`LabeledSubset`).
        seed: Seed of ``DefaultSampler``'s shuffling.

    Returns:
        A config for ``Runner(train_dataloader=...)``.
    """
    return loader_cfg(cfg, dataset=dataset,
                      sampler=dict(type='DefaultSampler', shuffle=True, seed=seed))


__all__ = ['ImagePool', 'LabeledSubset', 'encode_sample_id', 'flatten_dataset_cfg',
           'labeled_loader_cfg', 'loader_cfg']
