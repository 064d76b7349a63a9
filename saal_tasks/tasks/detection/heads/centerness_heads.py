"""Head adapters for mmdet's dense heads with a centre-ness branch: FCOS and ATSS.

Both classify every prior with a sigmoid trained by focal loss, as RetinaNet does, and add a
quality branch (centre-ness) whose sigmoid multiplies the class scores before NMS; mmdet's
shared post-processing does that through ``score_factors``, and so does
:meth:`.anchor_heads.AnchorHeadAdapter.detect`. The centre-ness loss is not a
classification loss, so the per-box losses are the focal loss alone, split over the boxes as
for RetinaNet (:func:`.anchor_heads.focal_box_losses`). The families differ in the
assignment of priors to the pseudo-boxes:

* FCOS (anchor-free, one point per feature-map cell): a point is positive for the smallest
  box that contains it (or its centre region, with ``center_sampling``) whose size fits the
  point's level (``regress_ranges``); there are no ignored points;
* ATSS (one anchor per cell): mmdet's ``ATSSAssigner``, with the number of anchors inside the
  image per level, as ``ATSSHead`` calls it.
"""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from .anchor_heads import (HeadOutput, LevelMaps, SigmoidAnchorAdapter, check_focal_loss,
                           class_tower_maps)
from .base import HEAD_ADAPTERS


class CenternessAdapter(SigmoidAnchorAdapter):
    """The part of FCOS and ATSS that is the same: three maps per level, the class tower
    alone for the box losses."""

    #: Name of the head's final class convolution (after its class tower ``cls_convs``).
    classifier: str = ''

    def check_model_cfg(self, model_cfg: dict) -> None:
        check_focal_loss(type(self).__name__, model_cfg)

    def level_maps(self, head: nn.Module, feats: tuple[Tensor, ...],
                   with_boxes: bool) -> LevelMaps:
        if with_boxes:
            # In eval mode, as mmdet predicts (FCOS scales its distances by the stride then).
            cls_scores, bbox_preds, centernesses = head(feats)
            return list(cls_scores), list(bbox_preds), list(centernesses)
        return class_tower_maps(feats, head.cls_convs, getattr(head, self.classifier)), None, None


@HEAD_ADAPTERS.register_module()
class FCOSAdapter(CenternessAdapter):
    """mmdet's ``FCOSHead``: anchor-free points, focal loss, centre-ness.

    The assignment is mmdet's own (``FCOSHead.get_targets``: inside the box or its centre
    region, within the level's regression range, smallest box first). It returns labels, not
    box indices, so it is called with each pseudo-box labelled by its negative index
    ``k − K``: a point's returned label names its box, background stays ``num_classes``.
    FCOS weighs every point 1 and divides by the positives, as the focal-loss split assumes.
    """

    head_types = ('FCOSHead',)
    classifier = 'conv_cls'

    def pos_weight(self, head: nn.Module) -> float:
        return -1  # FCOS weighs every point 1 whatever train_cfg says

    def prior_assignment(self, head: nn.Module, priors: Tensor, boxes: InstanceData,
                         out: HeadOutput, index: int) -> Tensor:
        """mmdet's FCOS assignment of the points, as box indices (see the class docstring)."""
        num_boxes = len(boxes)
        points = [priors[lo:hi] for lo, hi in zip(out.level_starts, out.level_starts[1:])]
        box_of = torch.arange(num_boxes, device=priors.device) - num_boxes
        assigned, _ = head.get_targets(
            points, [InstanceData(bboxes=boxes.bboxes.detach(), labels=box_of)])
        assigned = torch.cat(assigned)
        return torch.where(assigned < 0, assigned + num_boxes + 1, torch.zeros_like(assigned))


@HEAD_ADAPTERS.register_module()
class ATSSAdapter(CenternessAdapter):
    """mmdet's ``ATSSHead``: anchors assigned by ``ATSSAssigner``, focal loss, centre-ness.

    As in ``ATSSHead``, only anchors inside the image (``allowed_border``) are assigned, the
    assigner gets their count per level, and positives weigh ``pos_weight`` (1 when ``<= 0``).
    mmdet divides by the positive anchors plus float32's epsilon, where the split divides by
    ``max(positives, 1)``: the same to 1e-7 whenever a box matched an anchor.
    """

    head_types = ('ATSSHead',)
    classifier = 'atss_cls'

    def assign_inside(self, head: nn.Module, priors: Tensor, inside: Tensor, out: HeadOutput,
                      boxes: InstanceData) -> Tensor:
        per_level = [hi - lo for lo, hi in zip(out.level_starts, out.level_starts[1:])]
        inside_per_level = head.get_num_level_anchors_inside(per_level, inside)
        return head.assigner.assign(InstanceData(priors=priors[inside]), inside_per_level,
                                    boxes).gt_inds


__all__ = ['ATSSAdapter', 'CenternessAdapter', 'FCOSAdapter']
