"""Head adapter for mmdet's two-stage detectors: Faster R-CNN's RoI head.

Detections are mmdet's own: the RPN proposes (``rpn_head.predict``), the RoI head classifies
and regresses every proposal, and ``multiclass_nms`` keeps the detections; the adapter
re-runs that post-processing with ``return_inds`` so that each detection keeps the softmax of
the RoI it came from (for its entropy).

The loss of a pseudo-box is the RoI head's cross-entropy of the pseudo-box itself taken as a
RoI. That is mmdet's ``roi_head.loss`` classification term for the image alone with the
pseudo-boxes as ground truth and no proposals from the RPN: mmdet adds the ground-truth
boxes to the proposals (``add_gt_as_proposals``) and assigns each to itself, every RoI is a
positive, and ``loss_cls`` averages their cross-entropies (weights ``1/K``).

What the RPN contributes: the proposals the detections come from, nothing to the loss.
mmdet draws the RoIs it trains on from the RPN proposals at random (``RandomSampler``), so a
loss over them would make an image's score a random variable; without them the loss has no
background term, and the RPN's weights get no gradient, hence no perturbation (``ε = 0``
there). The RPN's objectness loss is not a classification of the detected objects and is
left out. Not supported: cascades, mask heads and RoI heads without a softmax classifier
(refused in one line).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ....compat.mmcv_ops import ensure_mmcv_ops
from ....core.errors import ConfigError
from .base import HEAD_ADAPTERS, BoxLosses, HeadAdapter, empty_box_losses, split_over_boxes

ensure_mmcv_ops()  # before mmdet: mmdet imports mmcv.ops at import time

from mmdet.models.layers import multiclass_nms  # noqa: E402


@dataclass
class TwoStageOutput:
    """Backbone/neck features of a batch and, for detection, the RPN's proposals.

    Attributes:
        feats: Neck features per level, each ``[B, C_l, H_l, W_l]``.
        proposals: Per image the RPN's proposals (``bboxes [P, 4]``), or ``None`` when only
            the box losses are needed.
        img_shapes: Network-input ``(h, w)`` per image.
    """

    feats: tuple[Tensor, ...]
    proposals: list[InstanceData] | None
    img_shapes: list[tuple[int, int]]


def _rois(boxes: Tensor, index: int) -> Tensor:
    """RoIs ``[K, 5]`` (batch index, x1, y1, x2, y2) of image ``index`` of the batch."""
    return torch.cat([boxes.new_full((boxes.shape[0], 1), float(index)), boxes], dim=1)


@HEAD_ADAPTERS.register_module()
class TwoStageAdapter(HeadAdapter):
    """Faster R-CNN: mmdet's ``StandardRoIHead`` with a softmax ``BBoxHead``."""

    head_types = ('Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead', 'ConvFCBBoxHead', 'BBoxHead')
    head_key = ('roi_head', 'bbox_head')

    def check_model_cfg(self, model_cfg: dict) -> None:
        roi_head = model_cfg.get('roi_head', {})
        if roi_head.get('type') != 'StandardRoIHead':
            raise ConfigError(f"task.model.roi_head.type is {roi_head.get('type')!r}: "
                              f"{type(self).__name__} handles mmdet's StandardRoIHead "
                              '(Faster R-CNN); cascades and mask heads need their own adapter')
        loss = roi_head.get('bbox_head', {}).get('loss_cls', {})
        if loss.get('type') != 'CrossEntropyLoss' or loss.get('use_sigmoid', False):
            raise ConfigError(
                f'task.model.roi_head.bbox_head.loss_cls is {loss.get("type")!r} with '
                f'use_sigmoid={loss.get("use_sigmoid")}: {type(self).__name__} splits a '
                "softmax cross-entropy over the pseudo-boxes; use dict(type='CrossEntropyLoss',"
                " use_sigmoid=False, ...) as mmdet's Faster R-CNN configs do")

    def forward(self, model: nn.Module, inputs: dict, with_boxes: bool) -> TwoStageOutput:
        data = model.data_preprocessor(inputs, False)
        samples = data['data_samples']
        feats = model.extract_feat(data['inputs'])
        proposals = (model.rpn_head.predict(feats, samples, rescale=False)
                     if with_boxes else None)
        return TwoStageOutput(feats=feats, proposals=proposals,
                              img_shapes=[tuple(s.metainfo['img_shape'][:2]) for s in samples])

    def num_images(self, out: TwoStageOutput) -> int:
        return len(out.img_shapes)

    def _classify(self, model: nn.Module, out: TwoStageOutput, index: int,
                  boxes: Tensor, hidden: bool = False) -> dict:
        """The RoI head on ``boxes`` ``[K, 4]`` of image ``index``: ``cls_score [K, C + 1]``,
        ``bbox_pred`` and, with ``hidden``, the classifier's input ``[K, D]`` (``hidden``)."""
        if not hidden:
            return model.roi_head._bbox_forward(out.feats, _rois(boxes, index))
        seen: list[Tensor] = []
        # The input of the last classification layer is what BADGE multiplies with the
        # logit gradient; every BBoxHead variant ends its class branch in fc_cls.
        handle = model.roi_head.bbox_head.fc_cls.register_forward_pre_hook(
            lambda _module, args: seen.append(args[0]))
        try:
            res = model.roi_head._bbox_forward(out.feats, _rois(boxes, index))
        finally:
            handle.remove()
        return {**res, 'hidden': seen[0].flatten(1)}

    def detect(self, model: nn.Module, out: TwoStageOutput, index: int) -> InstanceData:
        """mmdet's RoI-head post-processing of image ``index``, keeping each detection's RoI.

        Returns:
            ``bboxes [K, 4]``, ``scores [K]``, ``labels [K]``, ``rois [K]`` (index into the
            image's proposals) and ``probs [K, C + 1]`` (the softmax of that RoI).
        """
        if out.proposals is None:
            raise RuntimeError('detect() needs forward(..., with_boxes=True)')
        head = model.roi_head.bbox_head
        cfg = model.roi_head.test_cfg
        proposals = out.proposals[index].bboxes
        classes = head.num_classes
        empty = InstanceData(bboxes=proposals.new_zeros(0, 4), scores=proposals.new_zeros(0),
                             labels=torch.zeros(0, dtype=torch.long, device=proposals.device),
                             rois=torch.zeros(0, dtype=torch.long, device=proposals.device),
                             probs=proposals.new_zeros(0, classes + 1),
                             hidden=proposals.new_zeros(0, head.fc_cls.in_features))
        if proposals.shape[0] == 0:
            return empty
        res = self._classify(model, out, index, proposals, hidden=True)
        probs = F.softmax(res['cls_score'], dim=-1)
        per_roi = 1 if head.reg_class_agnostic else classes
        rois = proposals.repeat_interleave(per_roi, dim=0)
        deltas = res['bbox_pred'].view(-1, head.bbox_coder.encode_size)
        bboxes = head.bbox_coder.decode(rois, deltas, max_shape=out.img_shapes[index])
        bboxes = bboxes.view(proposals.shape[0], -1)
        dets, labels, inds = multiclass_nms(bboxes, probs, cfg.score_thr, cfg.nms,
                                            cfg.max_per_img, return_inds=True)
        if dets.shape[0] == 0:
            return empty
        # multiclass_nms flattens (RoI, class) pairs, background excluded.
        source = inds // classes
        return InstanceData(bboxes=dets[:, :-1], scores=dets[:, -1], labels=labels,
                            rois=source, probs=probs[source], hidden=res['hidden'][source])

    def box_losses(self, model: nn.Module, out: TwoStageOutput, index: int,
                   boxes: InstanceData) -> BoxLosses:
        """The RoI head's cross-entropy of each pseudo-box as its own RoI (see the module
        docstring); weights ``1/K``, one RoI per box."""
        if len(boxes) == 0:
            return empty_box_losses(out.feats[0][index])
        bboxes = boxes.bboxes.detach()
        cls_score = self._classify(model, out, index, bboxes)['cls_score']
        ce = F.cross_entropy(cls_score, boxes.labels, reduction='none')
        ce = ce * model.roi_head.bbox_head.loss_cls.loss_weight
        own = torch.arange(1, len(boxes) + 1, device=ce.device)
        return split_over_boxes(ce, own, len(boxes), ce.new_zeros(()))

    def badge_embeddings(self, model: nn.Module, out: TwoStageOutput,
                         boxes: list[InstanceData], projections: Any) -> Tensor:
        """BADGE gradient embeddings of the batch's images, ``[B, E]``.

        Each pseudo-box with RoI softmax ``p``, pseudo-label ``ŷ`` and classifier input
        ``h`` (the RoI head's last hidden feature of its RoI) adds ``(p − e_ŷ) ⊗ h`` to its
        image's embedding: the gradient of the box's cross-entropy with respect to
        ``fc_cls``'s weights. ``E = (C + 1) × D``, or ``(C + 1) × projections.dim`` with
        ``projections``. Images without pseudo-boxes embed to zero.
        """
        head = model.roi_head.bbox_head
        width = head.fc_cls.in_features if projections is None else projections.dim
        classes = head.num_classes + 1
        rows = []
        for image_boxes in boxes:
            grads = image_boxes.probs.clone()
            grads[torch.arange(len(image_boxes)), image_boxes.labels] -= 1.0
            hidden = image_boxes.hidden
            if projections is not None:
                hidden = hidden @ projections(hidden.shape[1]).to(hidden).T
            rows.append((grads[:, :, None] * hidden[:, None, :]).sum(0).reshape(
                classes * width) if len(image_boxes) else grads.new_zeros(classes * width))
        return torch.stack(rows)

    def box_entropies(self, boxes: InstanceData) -> Tensor:
        """Entropy (nats) of each box's RoI softmax, background included, in
        ``[0, log(C + 1)]``."""
        probs = boxes.probs
        return -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)


__all__ = ['TwoStageAdapter', 'TwoStageOutput']
