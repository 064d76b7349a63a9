"""What the acquisition needs from an SSD, per image and per pseudo-box.

* :func:`detect` is SSD's own post-processing (mmdet's ``_predict_by_feat_single`` for a
  softmax head: score threshold, ``nms_pre`` per level, box decoding, class-wise NMS,
  ``max_per_img``) that also remembers which anchor each detection came from, so that the
  full class distribution and the features behind every detection are available (entropy and
  BADGE need them). The tests check it returns exactly what ``model.predict`` returns.
* :func:`box_classification_losses` is SSD's classification loss split over the pseudo-boxes
  of ONE image, normalised within that image (see its docstring), so a box's loss never
  depends on the other images of a batch — unlike mmdet's ``SSDHead.loss``, which divides by
  the positives of the whole batch.
* :func:`badge_embeddings` is BADGE's gradient embedding of an image: the sum over its
  pseudo-boxes of ``(p − e_ŷ) ⊗ h``, with ``h`` the neck feature behind each box (optionally
  projected by :class:`LevelProjections`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor

from ...compat.mmcv_ops import ensure_mmcv_ops

ensure_mmcv_ops()  # before mmdet and mmcv.ops: mmdet imports mmcv.ops at import time

from mmcv.ops import batched_nms  # noqa: E402
from mmdet.models.utils import filter_scores_and_topk  # noqa: E402


@dataclass
class HeadOutput:
    """SSD outputs of a batch, flattened over levels (anchor order = mmdet's prior order).

    Attributes:
        feats: Neck features per level, each ``[B, C_l, H_l, W_l]``.
        cls_logits: Class logits ``[B, A, C + 1]`` (last column = background).
        bbox_deltas: Box deltas ``[B, A, 4]``, or ``None`` when only classification was run.
        priors: Anchors ``[A, 4]`` in network-input pixels.
        level_sizes: ``(H_l, W_l)`` per level.
        level_starts: Index of the first anchor of each level, ``[L + 1]`` (last = A).
        num_base_priors: Anchors per feature-map cell, per level.
        img_shapes: Network-input ``(h, w)`` per image.
    """

    feats: tuple[Tensor, ...]
    cls_logits: Tensor
    bbox_deltas: Tensor | None
    priors: Tensor
    level_sizes: list[tuple[int, int]]
    level_starts: list[int]
    num_base_priors: list[int]
    img_shapes: list[tuple[int, int]]


def head_forward(model: torch.nn.Module, batch_inputs: Tensor, img_shapes: list[tuple[int, int]],
                 with_boxes: bool = True) -> HeadOutput:
    """Run backbone, neck and SSD head; flatten the per-level outputs.

    Args:
        model: An mmdet ``SingleStageDetector`` with an ``SSDHead``.
        batch_inputs: Preprocessed images ``[B, 3, H, W]``.
        img_shapes: Network-input ``(h, w)`` of each image (for box clipping).
        with_boxes: Also run the regression branch (not needed for classification losses).

    Returns:
        The flattened outputs.
    """
    head = model.bbox_head
    feats = model.extract_feat(batch_inputs)
    b = batch_inputs.shape[0]
    logits = [conv(f).permute(0, 2, 3, 1).reshape(b, -1, head.cls_out_channels)
              for f, conv in zip(feats, head.cls_convs)]
    deltas = None
    if with_boxes:
        deltas = torch.cat([conv(f).permute(0, 2, 3, 1).reshape(b, -1, 4)
                            for f, conv in zip(feats, head.reg_convs)], dim=1)
    level_sizes = [tuple(int(s) for s in f.shape[-2:]) for f in feats]
    priors = head.prior_generator.grid_priors(level_sizes, dtype=batch_inputs.dtype,
                                              device=batch_inputs.device)
    starts = [0]
    for p in priors:
        starts.append(starts[-1] + p.shape[0])
    return HeadOutput(feats=feats, cls_logits=torch.cat(logits, dim=1), bbox_deltas=deltas,
                      priors=torch.cat(priors), level_sizes=level_sizes, level_starts=starts,
                      num_base_priors=list(head.num_base_priors), img_shapes=list(img_shapes))


def batch_forward(model: torch.nn.Module, inputs: dict, with_boxes: bool) -> HeadOutput:
    """:func:`head_forward` of a collated batch, through the model's data preprocessor.

    Args:
        model: An mmdet ``SingleStageDetector`` with an ``SSDHead``.
        inputs: A batch as the task's ``pool_batches`` yields it
            (``{'inputs': [...], 'data_samples': [...]}``).
        with_boxes: Also run the regression branch.

    Returns:
        The flattened outputs, for the network-input shapes of the preprocessed images.
    """
    data = model.data_preprocessor(inputs, False)
    shapes = [tuple(s.metainfo['img_shape'][:2]) for s in data['data_samples']]
    return head_forward(model, data['inputs'], shapes, with_boxes=with_boxes)


def detect(head: torch.nn.Module, out: HeadOutput, index: int,
           test_cfg: dict | None = None) -> InstanceData:
    """SSD post-processing of image ``index`` that keeps each detection's source anchor.

    Args:
        head: The ``SSDHead`` (its ``bbox_coder`` and ``test_cfg`` are used).
        out: Outputs of :func:`head_forward` with boxes.
        index: Image of the batch.
        test_cfg: Post-processing config; default ``head.test_cfg``.

    Returns:
        Detections in network-input pixels: ``bboxes [K, 4]``, ``scores [K]``, ``labels [K]``,
        ``anchors [K]`` (index into ``out.priors``) and ``probs [K, C + 1]`` (the full
        softmax of the source anchor, background last), by decreasing score.
    """
    cfg = head.test_cfg if test_cfg is None else test_cfg
    score_thr = cfg.get('score_thr', 0)
    nms_pre = cfg.get('nms_pre', -1)
    probs_all = out.cls_logits[index].softmax(-1)
    deltas_all = out.bbox_deltas[index]
    kept_scores, kept_labels, kept_anchors = [], [], []
    for level in range(len(out.level_sizes)):
        lo, hi = out.level_starts[level], out.level_starts[level + 1]
        # Same call as mmdet, per level, so that nms_pre keeps the same candidates.
        scores, labels, keep, _ = filter_scores_and_topk(probs_all[lo:hi, :-1], score_thr,
                                                         nms_pre)
        kept_scores.append(scores)
        kept_labels.append(labels)
        kept_anchors.append(keep + lo)
    anchors = torch.cat(kept_anchors)
    bboxes = head.bbox_coder.decode(out.priors[anchors], deltas_all[anchors],
                                    max_shape=out.img_shapes[index])
    result = InstanceData(bboxes=bboxes, scores=torch.cat(kept_scores),
                          labels=torch.cat(kept_labels), anchors=anchors,
                          probs=probs_all[anchors])
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0 and len(result) > 0:
        w = result.bboxes[:, 2] - result.bboxes[:, 0]
        h = result.bboxes[:, 3] - result.bboxes[:, 1]
        result = result[(w > min_size) & (h > min_size)]
    if len(result) > 0:
        _, keep = batched_nms(result.bboxes, result.scores, result.labels, cfg['nms'])
        result = result[keep][:cfg['max_per_img']]
    return result


def select_pseudo_boxes(detections: InstanceData, score_thr: float,
                        empty_policy: str) -> InstanceData:
    """The pseudo-labels of one image: detections scoring at least ``score_thr``.

    Args:
        detections: Output of :func:`detect`.
        score_thr: Minimum detection score of a pseudo-box.
        empty_policy: What an image with no detection above the threshold gets: ``'zero'``
            (no pseudo-box; its SAAL score is exactly 0) or ``'top1'`` (its single best
            detection, whatever its score, when the detector output any).

    Returns:
        The selected detections (same fields).
    """
    chosen = detections[detections.scores >= score_thr]
    if len(chosen) == 0 and empty_policy == 'top1' and len(detections) > 0:
        chosen = detections[:1]
    return chosen


@dataclass
class BoxLosses:
    """Classification losses of one image against its pseudo-boxes.

    Attributes:
        per_box: Loss of each pseudo-box ``[K]`` (the SAAL units).
        num_pos: Anchors matched to each box ``[K]``.
        image_loss: SSD's classification loss of this image alone (mmdet's ``loss_cls`` for
            a batch of one), a scalar tensor.
    """

    per_box: Tensor
    num_pos: Tensor
    image_loss: Tensor


def box_classification_losses(head: torch.nn.Module, logits: Tensor, priors: Tensor,
                              boxes: Tensor, labels: Tensor) -> BoxLosses:
    """SSD's classification loss of one image, split over its pseudo-boxes.

    Anchors are matched to the boxes by the head's own assigner (IoU >= 0.5, plus each box's
    best anchor). With ``CE`` the cross-entropy of an anchor against its target (the box's
    class, or background), ``P_k`` the anchors matched to box ``k``, ``P`` all matched
    anchors and ``N`` the ``neg_pos_ratio·|P|`` hardest background anchors (SSD's hard
    negative mining, within this image)::

        loss_k = sum_{a in P_k} CE_a / |P_k|  +  sum_{a in N} CE_a / |P|

    i.e. the mean loss of the box's own anchors plus the image's hard-negative loss per
    positive anchor. A box whose anchors all went to other boxes gets 0. Every term is
    normalised inside the image, so ``loss_k`` does not depend on the batch; and
    ``sum_k |P_k| · loss_k / |P|`` equals SSD's loss for this image alone (``image_loss``).

    Args:
        head: The ``SSDHead`` (assigner, ``num_classes``, ``neg_pos_ratio``).
        logits: Class logits of the image's anchors ``[A, C + 1]``.
        priors: Anchors ``[A, 4]``.
        boxes: Pseudo-boxes ``[K, 4]`` (network-input pixels), no gradient.
        labels: Their classes ``[K]``.

    Returns:
        The per-box losses (``[K]``, connected to ``logits`` even when ``K = 0``), the matched
        anchor counts and the image's loss.
    """
    k = boxes.shape[0]
    if k == 0:
        # Empty slice of the logits: zero-size, but still part of the graph, so that an
        # image without pseudo-boxes gives exact zero gradients instead of an autograd error.
        empty = logits.reshape(-1)[:0]
        return BoxLosses(per_box=empty, num_pos=torch.zeros(0, dtype=torch.long),
                         image_loss=logits.reshape(-1)[:1].sum() * 0)
    num_classes = head.num_classes
    assign = head.assigner.assign(InstanceData(priors=priors),
                                  InstanceData(bboxes=boxes.detach(), labels=labels))
    gt_inds = assign.gt_inds
    pos = gt_inds > 0
    box_of_pos = gt_inds[pos] - 1
    targets = torch.full_like(gt_inds, num_classes)
    targets[pos] = labels[box_of_pos]
    ce = F.cross_entropy(logits, targets, reduction='none')
    num_pos_total = int(pos.sum())
    neg_ce = ce[gt_inds == 0]
    num_neg = min(head.train_cfg['neg_pos_ratio'] * num_pos_total, neg_ce.numel())
    hard_neg = neg_ce.topk(num_neg).values.sum()
    pos_sum = ce.new_zeros(k).index_add(0, box_of_pos, ce[pos])
    num_pos = torch.bincount(box_of_pos, minlength=k)
    per_box = pos_sum / num_pos.clamp(min=1) + hard_neg / max(num_pos_total, 1)
    per_box = torch.where(num_pos > 0, per_box, torch.zeros_like(per_box))
    image_loss = (ce[pos].sum() + hard_neg) / max(num_pos_total, 1)
    return BoxLosses(per_box=per_box, num_pos=num_pos, image_loss=image_loss)


def box_entropies(probs: Tensor) -> Tensor:
    """Entropy (nats) of each box's class distribution, background included.

    Args:
        probs: Softmax of each box's source anchor ``[K, C + 1]``.

    Returns:
        ``[K]`` entropies in ``[0, log(C + 1)]``.
    """
    return -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)


def anchor_cells(out: HeadOutput, anchors: Tensor) -> list[tuple[int, int, int]]:
    """``(level, y, x)`` of the feature-map cell of each anchor index ``[K]``."""
    cells = []
    for a in anchors.tolist():
        level = max(i for i, s in enumerate(out.level_starts[:-1]) if s <= a)
        cell = (a - out.level_starts[level]) // out.num_base_priors[level]
        width = out.level_sizes[level][1]
        cells.append((level, cell // width, cell % width))
    return cells


class LevelProjections:
    """Fixed random projections of neck features to ``dim`` dimensions, one per width.

    The matrix for ``C_l`` channels is ``randn(dim, C_l) / sqrt(dim)`` from a generator
    seeded with ``seed * 7919 + C_l``, drawn once and kept.

    Args:
        dim: Dimensions ``D`` of the projected features.
        seed: Seed of the matrices.
    """

    def __init__(self, dim: int, seed: int) -> None:
        self.dim = dim
        self.seed = seed
        self._matrices: dict[int, Tensor] = {}

    def __call__(self, level_channels: int) -> Tensor:
        """The projection ``[D, C_l]`` of features with ``level_channels`` channels."""
        if level_channels not in self._matrices:
            gen = torch.Generator().manual_seed(self.seed * 7919 + level_channels)
            self._matrices[level_channels] = (torch.randn(self.dim, level_channels,
                                                          generator=gen) / self.dim ** 0.5)
        return self._matrices[level_channels]


def badge_embeddings(head: Any, out: HeadOutput, score_thr: float, empty_policy: str,
                     projections: LevelProjections | None = None) -> Tensor:
    """BADGE gradient embeddings of the images of a batch, ``[B, E]``.

    Each pseudo-box (:func:`select_pseudo_boxes` of :func:`detect`) with source-anchor class
    distribution ``p`` (background included), pseudo-label ``ŷ`` and neck feature ``h`` at
    its anchor's cell adds ``(p − e_ŷ) ⊗ h`` to its image's embedding, each level in its own
    block (``E = (C + 1) × sum of level channels``), or, with ``projections``, every level's
    ``h`` projected to ``D`` dimensions (``E = (C + 1) × D``). Images without pseudo-boxes
    embed to zero.

    Args:
        head: The ``SSDHead``.
        out: Outputs of :func:`head_forward` with boxes.
        score_thr: Minimum detection score of a pseudo-box.
        empty_policy: See :func:`select_pseudo_boxes`.
        projections: Projections of the features; ``None`` keeps the exact blocks.

    Returns:
        One row per image, ``[B, E]``.
    """
    channels = [f.shape[1] for f in out.feats]
    classes = head.cls_out_channels
    if projections is None:
        offsets = np.cumsum([0] + [classes * c for c in channels])
        dim = int(offsets[-1])
    else:
        dim = classes * projections.dim
    rows = []
    for i in range(len(out.img_shapes)):
        boxes = select_pseudo_boxes(detect(head, out, i), score_thr, empty_policy)
        emb = out.cls_logits.new_zeros(dim)
        grads = boxes.probs.clone()
        grads[torch.arange(len(boxes)), boxes.labels] -= 1.0
        for g, (level, y, x) in zip(grads, anchor_cells(out, boxes.anchors)):
            h = out.feats[level][i, :, y, x]
            if projections is None:
                lo = int(offsets[level])
                emb[lo:lo + classes * channels[level]] += torch.outer(g, h).flatten()
            else:
                h = projections(channels[level]).to(h) @ h
                emb += torch.outer(g, h).flatten()
        rows.append(emb)
    return torch.stack(rows)


__all__ = ['BoxLosses', 'HeadOutput', 'LevelProjections', 'anchor_cells', 'badge_embeddings',
           'batch_forward', 'box_classification_losses', 'box_entropies', 'detect',
           'head_forward', 'select_pseudo_boxes']
