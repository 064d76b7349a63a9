"""Pictures of pool images with boxes, drawn by mmdet's ``DetLocalVisualizer`` (reports)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .data import ImagePool

#: The visualiser instance reports draw with (mmengine visualisers are named singletons).
VISUALIZER_NAME = 'saal_tasks_report_boxes'


def draw_boxes(pool: ImagePool, sample_ids: np.ndarray,
               annotations: dict[int, Any]) -> list[np.ndarray]:
    """Each pool image as uint8 RGB ``[H, W, 3]`` with the boxes of its annotation.

    Args:
        pool: The detection pool (image files, classes, palette).
        sample_ids: Images to draw, ``[K]``.
        annotations: Per id, boxes as ``{'bbox': [x1, y1, x2, y2], 'bbox_label': c}``; an id
            without one is drawn without boxes.
    """
    import cv2
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.structures import InstanceData

    if DetLocalVisualizer.check_instance_created(VISUALIZER_NAME):
        visualizer = DetLocalVisualizer.get_instance(VISUALIZER_NAME)
    else:
        visualizer = DetLocalVisualizer.get_instance(VISUALIZER_NAME, line_width=2)
    visualizer.dataset_meta = dict(classes=pool.classes,
                                   palette=pool.metainfo.get('palette') or 'random')
    pictures = []
    for sid in np.asarray(sample_ids, dtype=np.int64):
        info = pool.data_info(int(sid))
        image = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'cannot read image {info["img_path"]}: check the dataset')
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        boxes = annotations.get(int(sid)) or []
        sample = DetDataSample()
        height, width = image.shape[:2]
        bboxes = torch.tensor([b['bbox'] for b in boxes], dtype=torch.float32).reshape(-1, 4)
        # A box may end on the image border (x2 == width); the visualiser warns on any
        # coordinate past the last pixel, so drawing clamps to it.
        bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, width - 1)
        bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, height - 1)
        sample.gt_instances = InstanceData(
            bboxes=bboxes,
            labels=torch.tensor([int(b['bbox_label']) for b in boxes], dtype=torch.long))
        visualizer.add_datasample('report', image, sample, draw_pred=False)
        pictures.append(visualizer.get_image())
    return pictures


__all__ = ['draw_boxes']
