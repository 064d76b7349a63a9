"""Object detection (SSD on PASCAL VOC with mmdet 3): the task adapter and its baselines.

Modules:
    task: ``DetectionTask``, the adapter (registered in ``TASKS``).
    scorers: the box-entropy baseline for detection (registered in ``SCORERS``).
    ssd_units: SSD detections with their source anchors, per-box classification losses.
    voc_pool: the pool keyed by image id and the labeled-subset dataset.
    voc_demo: the generator of the VOC-layout demo dataset (numpy and OpenCV only).
    runtime: running mmengine's Runner inside a loop without global side effects.

Nothing here is imported by ``saal_tasks.tasks``: configs name ``task`` and ``scorers`` in
``custom_imports``, so the core and classification run without mmdet. The modules that
import mmdet first call :func:`saal_tasks.mmcv_ops_fallback.ensure_mmcv_ops`, because mmdet
imports ``mmcv.ops`` at import time. Names below are imported on first access.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    'DetectionTask': '.task',
    'BoxEntropyScorer': '.scorers',
    'ImagePool': '.voc_pool',
    'LabeledSubset': '.voc_pool',
    'encode_sample_id': '.voc_pool',
    'DEMO_CLASSES': '.voc_demo',
    'write_voc_demo': '.voc_demo',
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = sorted(_LAZY)
