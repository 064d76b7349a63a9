"""Head adapters: what box-sum SAAL needs from each detector family (see :mod:`.base`).

Modules:
    base: the :class:`HeadAdapter` contract, :data:`HEAD_ADAPTERS`, the per-box split of an
        image's loss, pseudo-box selection.
    anchor_heads: SSD (softmax, hard-negative mining) and RetinaNet (sigmoid focal loss).
    centerness_heads: FCOS (anchor-free points) and ATSS (adaptive anchor assignment), sigmoid
        focal loss with a centre-ness factor on the scores.
    quality_heads: GFL (Quality Focal Loss: the target is the predicted box's IoU).
    two_stage: Faster R-CNN (the RoI head's cross-entropy of each pseudo-box as a RoI).
"""
from .base import (HEAD_ADAPTERS, BoxLosses, HeadAdapter, build_head_adapter,
                   empty_box_losses, select_pseudo_boxes, split_over_boxes)
from .anchor_heads import (AnchorHeadAdapter, HeadOutput, LevelProjections, SSDAdapter,
                           SigmoidAnchorAdapter, anchor_cells, ssd_box_losses)
from .centerness_heads import ATSSAdapter, CenternessAdapter, FCOSAdapter
from .quality_heads import GFLAdapter
from .two_stage import TwoStageAdapter, TwoStageOutput

__all__ = ['ATSSAdapter', 'AnchorHeadAdapter', 'BoxLosses', 'CenternessAdapter', 'FCOSAdapter',
           'GFLAdapter', 'HEAD_ADAPTERS', 'HeadAdapter', 'HeadOutput', 'LevelProjections',
           'SSDAdapter', 'SigmoidAnchorAdapter', 'TwoStageAdapter', 'TwoStageOutput',
           'anchor_cells', 'build_head_adapter', 'empty_box_losses', 'select_pseudo_boxes',
           'split_over_boxes', 'ssd_box_losses']
