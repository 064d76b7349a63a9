"""mmseg/mmcv augmentation of training samples: ``task.train_pipeline``.

The task reads, resizes and (with ``flip``) flips its samples itself, so that scoring, export
and training share one image at one size. ``train_pipeline`` adds mmseg's (and mmcv's) data
transforms on top, for training batches only, e.g.::

    train_pipeline=[dict(type='RandomCrop', crop_size=(512, 1024), cat_max_ratio=0.75),
                    dict(type='RandomFlip', prob=0.5),
                    dict(type='PhotoMetricDistortion')]

Each transform sees mmseg's keys: ``img`` (``[H, W, 3]`` uint8, BGR as mmseg's loaders give
it), ``gt_seg_map`` (``[H, W]``, 255 = ignore, which for a target sample is every pixel not
revealed) and ``seg_fields``. Loading and packing stay the task's, so ``LoadImageFromFile``,
``LoadAnnotations`` and ``PackSegInputs`` are refused.

mmcv's random transforms draw from the global ``random`` and ``numpy`` generators. Every
sample is transformed with both seeded from ``(window seed, iteration, batch, position in
it)`` and restored afterwards, so a batch does not depend on the data-loader workers or on
where a restarted window begins.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np

from ...core.errors import ConfigError

__all__ = ['TrainPipeline', 'sample_seed']

#: Transforms that read files or pack model inputs: the task does both itself.
REFUSED = ('LoadImageFromFile', 'LoadAnnotations', 'LoadImageFromNDArray',
           'LoadBiomedicalImageFromFile', 'PackSegInputs')


def sample_seed(seed: int, iteration: int, batch: int, position: int) -> int:
    """The augmentation seed (32 bits) of sample ``position`` of the source (``batch=0``)
    or target (``batch=1``) batch of ``iteration`` in a window seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(iteration), int(batch), int(position)])
               .generate_state(1)[0])


class TrainPipeline:
    """mmseg/mmcv transforms applied to one training sample at a time.

    Args:
        transforms: Transform configs, as in an mmseg ``train_pipeline`` without its loading
            and packing steps.

    Raises:
        ConfigError: A transform is not a config dict, loads or packs, or is not registered.
    """

    def __init__(self, transforms: Sequence[dict]) -> None:
        from mmcv.transforms import Compose
        from mmengine.registry import DefaultScope

        import mmseg.datasets  # noqa: F401  (registers mmseg's transforms)
        from mmseg.registry import TRANSFORMS

        if isinstance(transforms, (str, dict)) or not isinstance(transforms, Sequence):
            raise ConfigError(f'task.train_pipeline must be a list of transform configs, got '
                              f'{transforms!r}')
        built = []
        for k, cfg in enumerate(transforms):
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise ConfigError(f'task.train_pipeline[{k}] must be a dict with a type, got '
                                  f'{cfg!r}')
            if cfg['type'] in REFUSED:
                raise ConfigError(f"task.train_pipeline[{k}] is {cfg['type']}: the task loads "
                                  'and packs samples itself; list only the augmentations')
            with DefaultScope.overwrite_default_scope('mmseg'):
                try:
                    built.append(TRANSFORMS.build(dict(cfg)))
                except KeyError as err:
                    raise ConfigError(f"task.train_pipeline[{k}]: {cfg['type']!r} is not an "
                                      'mmseg or mmcv transform (mmseg.registry.TRANSFORMS)'
                                      ) from err
        self.transforms = [dict(cfg) for cfg in transforms]
        self.compose = Compose(built)

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Transform one sample.

        Args:
            image: RGB image ``[H, W, 3]`` (uint8).
            label: Train-id labels ``[H, W]`` (255 = ignore).
            seed: The sample's seed (:func:`sample_seed`).

        Returns:
            The transformed RGB image ``[H', W', 3]`` and labels ``[H', W']``.

        Raises:
            ConfigError: A transform dropped the sample.
        """
        results: dict[str, Any] = dict(
            img=np.ascontiguousarray(image[..., ::-1]), gt_seg_map=np.array(label),
            seg_fields=['gt_seg_map'], img_shape=image.shape[:2], ori_shape=image.shape[:2],
            reduce_zero_label=False)
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            out = self.compose(results)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        if out is None:
            raise ConfigError(f'task.train_pipeline dropped a training sample ({self.transforms}'
                              '): use transforms that always return one')
        return np.ascontiguousarray(out['img'][..., ::-1]), out['gt_seg_map']
