"""Object detection with mmdet 3 detectors on VOC- or COCO-format data.

The task adapter, its data, the head adapters (what box-sum SAAL needs from each detector
family: SSD and RetinaNet ship; a detector without one is refused in one line naming them),
and the detection baselines.

Modules:
    task: ``DetectionTask``, the adapter (registered in ``TASKS``).
    scorers: the box-entropy baseline for detection (registered in ``SCORERS``).
    heads: head adapters: detections with their class distributions, per-box
        classification losses, box entropies, BADGE embeddings, per detector family.
    data: the pool keyed by image id, the labeled-subset dataset, dataloader configs.
    label_files: COCO-format queries for people and their answers.
    demo: the generators of the VOC- and COCO-layout demo datasets (numpy and OpenCV only).

Running mmengine's Runner inside a loop without global side effects is in
:mod:`saal_tasks.compat.mmengine_runtime`. Nothing here is imported by ``saal_tasks.tasks``:
configs name ``task`` and ``scorers`` in ``custom_imports``, so the core and classification
run without mmdet. The modules that import mmdet first call
:func:`saal_tasks.compat.mmcv_ops.ensure_mmcv_ops`, because mmdet imports ``mmcv.ops`` at
import time. Names below are imported on first access.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    'DetectionTask': '.task',
    'BoxEntropyScorer': '.scorers',
    'ImagePool': '.data',
    'LabeledSubset': '.data',
    'encode_sample_id': '.data',
    'DEMO_CLASSES': '.demo',
    'write_voc_demo': '.demo',
    'write_coco_demo': '.demo',
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = sorted(_LAZY)
