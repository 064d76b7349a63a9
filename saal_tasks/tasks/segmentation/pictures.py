"""Target images with their revealed pixels, drawn by mmseg's ``SegLocalVisualizer`` (reports)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .classes import CLASSES16, IGNORE_INDEX, PALETTE16
from .data import ImageSet

#: The visualiser instance reports draw with (mmengine visualisers are named singletons).
VISUALIZER_NAME = 'saal_tasks_report_pixels'


def draw_revealed(images: ImageSet, sample_ids: np.ndarray,
                  annotations: dict[int, Any]) -> list[np.ndarray]:
    """Each image as uint8 RGB ``[H, W, 3]`` with the revealed pixels in their class colour.

    Args:
        images: The target split (images at the task's target size).
        sample_ids: Images to draw, ``[K]`` (indices into ``images``).
        annotations: Per id, ``{'units': flat pixel indices [U], 'labels': train ids [U]}``;
            an id without one is drawn as it is.
    """
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmseg.visualization import SegLocalVisualizer

    if SegLocalVisualizer.check_instance_created(VISUALIZER_NAME):
        visualizer = SegLocalVisualizer.get_instance(VISUALIZER_NAME)
    else:
        visualizer = SegLocalVisualizer.get_instance(VISUALIZER_NAME, alpha=0.7)
    visualizer.dataset_meta = dict(classes=CLASSES16, palette=[list(c) for c in PALETTE16])
    pictures = []
    for sid in np.asarray(sample_ids, dtype=np.int64):
        image = images.get(int(sid))[0]
        mask = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.int64)
        answer = annotations.get(int(sid))
        if answer is not None:
            mask.reshape(-1)[np.asarray(answer['units'], dtype=np.int64)] = answer['labels']
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(mask)[None])
        # No class-name labels: at thumbnail size they would hide the few revealed pixels.
        visualizer.add_datasample('report', image, sample, draw_pred=False, with_labels=False)
        # mmseg blends the whole image with the class colours (black where none): keep its
        # blend on the revealed pixels only, so the rest of the image stays as it is.
        revealed = (mask < len(CLASSES16))[..., None]
        pictures.append(np.where(revealed, visualizer.get_image(), image).astype(np.uint8))
    return pictures


__all__ = ['draw_revealed']
