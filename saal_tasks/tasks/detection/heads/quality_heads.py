"""Head adapter for mmdet's ``GFLHead`` (Generalized Focal Loss): a joint class-quality score.

GFL classifies every anchor with a sigmoid whose target, for a positive anchor, is not 1 but
the IoU of the box it predicts with its ground-truth box (Quality Focal Loss); it predicts a
box as four distributions over ``reg_max + 1`` distance bins (their expectation, times the
level's stride, is the distance from the anchor's centre to each side).

So a pseudo-box's classification loss depends on the box branch too: at any weights, the
target of each positive anchor is the IoU of the box the anchor predicts at those weights,
detached, exactly as mmdet's ``GFLHead.loss_by_feat_single`` computes it. The loss passes
therefore run the box branch as well (``with_boxes`` is ignored), and the gradient that
defines ε is the focal term's alone (the IoU target carries none), as in mmdet's loss. The
assignment is ATSS's (``ATSSAssigner`` with the anchors inside the image per level), and the
image's loss is the sum over anchors divided by the positives, so
:func:`.base.split_over_boxes` applies with every background anchor in the background term.
"""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ....core.errors import ConfigError
from .anchor_heads import HeadOutput, LevelMaps, focal_box_losses
from .base import HEAD_ADAPTERS, BoxLosses
from .centerness_heads import ATSSAdapter

# After .anchor_heads, which makes mmcv's ops importable before mmdet is.
from mmdet.structures.bbox import bbox_overlaps  # noqa: E402


@HEAD_ADAPTERS.register_module()
class GFLAdapter(ATSSAdapter):
    """mmdet's ``GFLHead``: ATSS assignment, Quality Focal Loss, distribution box branch."""

    head_types = ('GFLHead',)

    def check_model_cfg(self, model_cfg: dict) -> None:
        head = model_cfg.get('bbox_head', {})
        loss = head.get('loss_cls', {})
        if loss.get('type') != 'QualityFocalLoss' or not loss.get('use_sigmoid', True):
            raise ConfigError(
                f'task.model.bbox_head.loss_cls is {loss.get("type")!r}: GFLAdapter splits '
                "GFL's sigmoid QualityFocalLoss over the pseudo-boxes; use "
                "dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0) "
                "as mmdet's GFL configs do")

    def level_maps(self, head: nn.Module, feats: tuple[Tensor, ...],
                   with_boxes: bool) -> LevelMaps:
        # The box branch always: the classification targets are the predicted boxes' IoUs.
        cls_scores, bbox_preds = head(feats)
        return list(cls_scores), list(bbox_preds), None

    def _distances(self, head: nn.Module, out: HeadOutput, index: int) -> Tensor:
        """Expected side distances ``[A, 4]`` in stride units, per level as mmdet computes
        them (so that they match its prediction bit for bit)."""
        deltas = out.bbox_deltas[index]
        return torch.cat([head.integral(deltas[lo:hi])
                          for lo, hi in zip(out.level_starts, out.level_starts[1:])])

    def _strides(self, head: nn.Module, out: HeadOutput, device: torch.device) -> Tensor:
        """Each prior's level stride ``[A]``."""
        return torch.cat([torch.full((hi - lo,), float(stride[0]), device=device)
                          for (lo, hi), stride in zip(zip(out.level_starts, out.level_starts[1:]),
                                                      head.prior_generator.strides)])

    def decode_boxes(self, head: nn.Module, out: HeadOutput, index: int,
                     anchors: Tensor) -> Tensor:
        """GFL's prediction: the expected distances times the stride, from the anchor centre."""
        distances = self._distances(head, out, index)[anchors]
        strides = self._strides(head, out, distances.device)[anchors]
        return head.bbox_coder.decode(head.anchor_center(out.priors[anchors]),
                                      distances * strides[:, None],
                                      max_shape=out.img_shapes[index])

    def anchor_losses(self, head: nn.Module, logits: Tensor, priors: Tensor,
                      boxes: InstanceData, out: HeadOutput, index: int) -> BoxLosses:
        """GFL's Quality Focal Loss of one image, split over its pseudo-boxes.

        Positive anchor ``a`` of box ``k`` has target ``(label_k, IoU_a)``, ``IoU_a`` the
        overlap of the box it predicts (at the weights of this pass, detached) with box ``k``,
        in stride units as mmdet computes it; background anchors have ``(background, 0)``;
        anchors outside the image count nothing.
        """
        gt_inds = self.assignment(head, priors, boxes, out, index)
        pos = gt_inds > 0
        box_of_pos = gt_inds[pos] - 1
        quality = logits.new_zeros(gt_inds.shape[0])
        if bool(pos.any()):
            strides = self._strides(head, out, priors.device)[pos][:, None]
            # Only the positives' distributions, as mmdet's loss integrates them.
            predicted = head.bbox_coder.decode(head.anchor_center(priors[pos]) / strides,
                                               head.integral(out.bbox_deltas[index][pos]))
            quality[pos] = bbox_overlaps(predicted.detach(),
                                         boxes.bboxes.detach()[box_of_pos] / strides,
                                         is_aligned=True)
        return focal_box_losses(head, logits, gt_inds, boxes.labels, self.pos_weight(head),
                                quality=quality)


__all__ = ['GFLAdapter']
