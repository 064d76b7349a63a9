"""Domain-adaptive semantic segmentation (SYNTHIA -> Cityscapes, 16 classes) on mmseg 1.x.

Modules:
    task: ``SegmentationTask``, the adapter (registered in ``TASKS``): labeled source, target
        images as the pool, partial pixel annotations, in-run or per-round training.
    training: ``SourceTargetTrainer``, the task's training recipe, run by mmengine's Runner.
    adaptation_model: ``DomainAdaptiveSegmentor``, the source + target objective the Runner
        trains (RIPU's optional terms included).
    iterations: one iteration window of a run for the Runner (``IterationBatches``,
        ``WindowTrainLoop``, the progress hook).
    annotations: revealed target pixels merged over rounds, and their compact persisted form.
    classes: the 16 shared classes and the SYNTHIA / Cityscapes id mappings (numpy only).
    data: ``SynthiaDataset`` and ``Cityscapes16Dataset`` for mmseg, layout checks, and the
        resized splits (``ImageSet``) and normalised batches the task trains and scores on.
    convert: raw label files -> 8-bit train-id files (used by tools/convert_seg_labels.py).
    metrics: mIoU over 16 and 13 classes with mmseg's IoU machinery.
    models: DeepLab-v2 (ASPP sum head), DeepLab-v3+, a tiny CPU model, and the task's
        ``model=dict(arch=...)`` option (``model_config``).
    losses: RIPU's optional local-consistency and negative-learning terms.
    demo: the generator of the small SYNTHIA/Cityscapes-layout demo (numpy + OpenCV).

The acquisition pieces are task-agnostic and live with the core: region impurity and the
pixel scorers in ``saal_tasks.tasks.segmentation.scorers``, the region/pixel selector in
``saal_tasks.selectors.region``. Nothing here is imported by ``saal_tasks.tasks``: configs
name ``saal_tasks.tasks.segmentation.task`` in ``custom_imports``, so the core runs without
mmseg. Modules importing mmseg first make ``mmcv.ops`` importable
(:func:`saal_tasks.compat.mmcv_ops.ensure_mmcv_ops`). Names below are imported on first
access.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    'SegmentationTask': '.task',
    'PixelLabels': '.annotations',
    'CLASSES16': '.classes',
    'SegmentationMeter': '.metrics',
    'metrics_from_confusion': '.metrics',
    'build_segmentor': '.models',
    'write_seg_demo': '.demo',
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = sorted(_LAZY)
