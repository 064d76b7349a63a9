"""Head adapters for mmdet's dense anchor heads: SSD (softmax) and RetinaNet (sigmoid focal).

Both families predict, for every anchor of every feature level, class logits and box deltas,
and post-process them the same way (mmdet's ``BaseDenseHead._predict_by_feat_single``: score
threshold and ``nms_pre`` per level, box decoding, class-wise NMS, ``max_per_img``). The
shared part lives in :class:`AnchorHeadAdapter`; the families differ in

* how logits become class scores (softmax with background last, or a sigmoid per class),
* the loss of an anchor against the pseudo-boxes (cross-entropy with SSD's hard-negative
  mining, or the model's own focal loss over every non-ignored anchor),
* the entropy of a box (of its softmax, or the sum of its per-class binary entropies).

:meth:`AnchorHeadAdapter.detect` also remembers which anchor each detection came from, so
that the full class distribution and the features behind every detection are available
(entropy and BADGE need them). The tests check it returns exactly what ``model.predict``
returns.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ....compat.mmcv_ops import ensure_mmcv_ops
from ....core.errors import ConfigError
from .base import (HEAD_ADAPTERS, BoxLosses, HeadAdapter, empty_box_losses,
                   select_pseudo_boxes, split_over_boxes)

#: Metainfo key under which pseudo-boxes keep their prior assignment (see
#: :meth:`AnchorHeadAdapter.assignment`).
ASSIGNMENT_KEY = '_prior_assignment'

ensure_mmcv_ops()  # before mmdet and mmcv.ops: mmdet imports mmcv.ops at import time

from mmcv.ops import batched_nms  # noqa: E402
from mmdet.models.task_modules.prior_generators import anchor_inside_flags  # noqa: E402
from mmdet.models.utils import filter_scores_and_topk  # noqa: E402


@dataclass
class HeadOutput:
    """Dense-head outputs of a batch, flattened over levels (anchor order = mmdet's).

    Attributes:
        feats: Neck features per level, each ``[B, C_l, H_l, W_l]``.
        cls_logits: Class logits ``[B, A, C']`` (``C' = C + 1`` with background last for
            softmax heads, ``C`` for sigmoid heads).
        bbox_deltas: Box deltas ``[B, A, 4]``, or ``None`` when only classification was run.
        score_factors: Logits of the heads' quality branch ``[B, A]`` (FCOS's and ATSS's
            centre-ness), whose sigmoid multiplies the class scores before NMS; ``None`` for
            heads without one or when only classification was run.
        priors: Anchors ``[A, 4]`` (points ``[A, 2]`` for anchor-free heads) in network-input
            pixels.
        level_sizes: ``(H_l, W_l)`` per level.
        level_starts: Index of the first anchor of each level, ``[L + 1]`` (last = A).
        num_base_priors: Anchors per feature-map cell, per level.
        img_shapes: Network-input ``(h, w)`` per image.
        pad_shapes: Padded batch ``(h, w)`` per image (anchor valid flags).
    """

    feats: tuple[Tensor, ...]
    cls_logits: Tensor
    bbox_deltas: Tensor | None
    score_factors: Tensor | None
    priors: Tensor
    level_sizes: list[tuple[int, int]]
    level_starts: list[int]
    num_base_priors: list[int]
    img_shapes: list[tuple[int, int]]
    pad_shapes: list[tuple[int, int]]


def _flatten(level_maps: list[Tensor], width: int) -> Tensor:
    """Per-level ``[B, A_l·width, H, W]`` maps to ``[B, A, width]`` in mmdet's anchor order."""
    b = level_maps[0].shape[0]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, width) for m in level_maps], dim=1)


#: Per level: class-logit maps, box maps (``None`` unless asked for) and score-factor maps
#: (``None`` for heads without a quality branch, or unless box maps were asked for).
LevelMaps = tuple[list[Tensor], list[Tensor] | None, list[Tensor] | None]


class AnchorHeadAdapter(HeadAdapter):
    """The part of every dense head that is the same: outputs, post-processing, BADGE."""

    # ------------------------------------------------------------ family-specific parts
    def level_maps(self, head: nn.Module, feats: tuple[Tensor, ...],
                   with_boxes: bool) -> LevelMaps:
        """The head's maps per level (see :data:`LevelMaps`)."""
        cls_scores, bbox_preds = head(feats)
        return list(cls_scores), list(bbox_preds) if with_boxes else None, None

    def distribution(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(probs [A, C'], scores [A, C])`` of anchor logits: the class distribution kept
        with each detection, and the per-class scores that post-processing thresholds."""
        raise NotImplementedError

    def decode_boxes(self, head: nn.Module, out: HeadOutput, index: int,
                     anchors: Tensor) -> Tensor:
        """Boxes ``[K, 4]`` (network-input pixels) of the priors ``anchors [K]`` of image
        ``index``: the head's coder on each prior's box outputs, clipped to the image."""
        return head.bbox_coder.decode(out.priors[anchors], out.bbox_deltas[index][anchors],
                                      max_shape=out.img_shapes[index])

    def anchor_losses(self, head: nn.Module, logits: Tensor, priors: Tensor,
                      boxes: InstanceData, out: HeadOutput, index: int) -> BoxLosses:
        """The family's classification loss of one image's anchors, split over its boxes.

        Args:
            head: The dense head.
            logits: Class logits of the image's priors ``[A, C']``.
            priors: The priors ``[A, 4]`` (points ``[A, 2]``).
            boxes: The image's pseudo-boxes (``bboxes [K, 4]``, no gradient; ``labels [K]``),
                ``K > 0``.
            out: The batch's outputs (level sizes, image and pad shapes).
            index: The image in the batch.
        """
        raise NotImplementedError

    def prior_assignment(self, head: nn.Module, priors: Tensor, boxes: InstanceData,
                         out: HeadOutput, index: int) -> Tensor:
        """The head's own assignment of the image's priors to its pseudo-boxes, ``gt_inds
        [A]``: ``k + 1`` for box ``k``, 0 background, -1 ignored (families that assign)."""
        raise NotImplementedError

    def assignment(self, head: nn.Module, priors: Tensor, boxes: InstanceData,
                   out: HeadOutput, index: int) -> Tensor:
        """:meth:`prior_assignment`, computed once per pseudo-boxes object and geometry.

        The assignment depends on the priors and the boxes only, never on the weights, so the
        clean and the perturbed pass of an image share it: it is kept in the boxes' metainfo
        with what it was computed from (the boxes' storage, version and count, the level
        sizes, the image and pad shapes), and a slice or an edited copy of the boxes, or
        other priors, compute their own.
        """
        key = (boxes.bboxes.data_ptr(), boxes.bboxes._version, len(boxes),
               tuple(out.level_sizes), out.img_shapes[index], out.pad_shapes[index],
               str(priors.device))
        kept = boxes.metainfo.get(ASSIGNMENT_KEY)
        if kept is not None and kept[0] == key:
            return kept[1]
        gt_inds = self.prior_assignment(head, priors, boxes, out, index)
        boxes.set_metainfo({ASSIGNMENT_KEY: (key, gt_inds)})
        return gt_inds

    # ------------------------------------------------------------ shared parts
    def forward(self, model: nn.Module, inputs: dict, with_boxes: bool) -> HeadOutput:
        data = model.data_preprocessor(inputs, False)
        metas = [s.metainfo for s in data['data_samples']]
        batch_inputs = data['inputs']
        head = model.bbox_head
        feats = model.extract_feat(batch_inputs)
        cls_maps, box_maps, factor_maps = self.level_maps(head, feats, with_boxes)
        level_sizes = [tuple(int(s) for s in f.shape[-2:]) for f in feats]
        priors = head.prior_generator.grid_priors(level_sizes, dtype=batch_inputs.dtype,
                                                  device=batch_inputs.device)
        starts = [0]
        for p in priors:
            starts.append(starts[-1] + p.shape[0])
        return HeadOutput(
            feats=feats, cls_logits=_flatten(cls_maps, head.cls_out_channels),
            # Box channels per prior: 4 deltas, or GFL's 4 distributions over its bins.
            bbox_deltas=None if box_maps is None else _flatten(
                box_maps, box_maps[0].shape[1] // head.prior_generator.num_base_priors[0]),
            score_factors=None if factor_maps is None else _flatten(factor_maps, 1)[..., 0],
            priors=torch.cat(priors), level_sizes=level_sizes, level_starts=starts,
            num_base_priors=list(head.prior_generator.num_base_priors),
            img_shapes=[tuple(m['img_shape'][:2]) for m in metas],
            pad_shapes=[tuple(m.get('pad_shape', m['img_shape'])[:2]) for m in metas])

    def num_images(self, out: HeadOutput) -> int:
        return len(out.img_shapes)

    def detect(self, model: nn.Module, out: HeadOutput, index: int,
               test_cfg: dict | None = None) -> InstanceData:
        """mmdet's dense-head post-processing of image ``index``, keeping source anchors.

        Returns:
            ``bboxes [K, 4]``, ``scores [K]``, ``labels [K]``, ``anchors [K]`` (index into
            ``out.priors``) and ``probs [K, C']`` (the source anchor's class distribution);
            with a quality branch also ``score_factors [K]`` (its sigmoid), and then
            ``scores = probs[label] · score_factors``, as mmdet multiplies them before NMS.
        """
        head = model.bbox_head
        cfg = head.test_cfg if test_cfg is None else test_cfg
        score_thr = cfg.get('score_thr', 0)
        nms_pre = cfg.get('nms_pre', -1)
        probs_all, scores_all = self.distribution(out.cls_logits[index])
        kept_scores, kept_labels, kept_anchors = [], [], []
        for level in range(len(out.level_sizes)):
            lo, hi = out.level_starts[level], out.level_starts[level + 1]
            # Same call as mmdet, per level, so that nms_pre keeps the same candidates.
            scores, labels, keep, _ = filter_scores_and_topk(scores_all[lo:hi], score_thr,
                                                             nms_pre)
            kept_scores.append(scores)
            kept_labels.append(labels)
            kept_anchors.append(keep + lo)
        anchors = torch.cat(kept_anchors)
        bboxes = self.decode_boxes(head, out, index, anchors)
        result = InstanceData(bboxes=bboxes, scores=torch.cat(kept_scores),
                              labels=torch.cat(kept_labels), anchors=anchors,
                              probs=probs_all[anchors])
        if out.score_factors is not None:
            result.score_factors = out.score_factors[index][anchors].sigmoid()
            result.scores = result.scores * result.score_factors
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0 and len(result) > 0:
            w = result.bboxes[:, 2] - result.bboxes[:, 0]
            h = result.bboxes[:, 3] - result.bboxes[:, 1]
            result = result[(w > min_size) & (h > min_size)]
        if len(result) > 0:
            _, keep = batched_nms(result.bboxes, result.scores, result.labels, cfg['nms'])
            result = result[keep][:cfg['max_per_img']]
        return result

    def box_losses(self, model: nn.Module, out: HeadOutput, index: int,
                   boxes: InstanceData) -> BoxLosses:
        logits = out.cls_logits[index]
        if len(boxes) == 0:
            return empty_box_losses(logits)
        return self.anchor_losses(model.bbox_head, logits, out.priors, boxes, out, index)

    def badge_embeddings(self, model: nn.Module, out: HeadOutput, boxes: list[InstanceData],
                         projections: 'LevelProjections | None') -> Tensor:
        """BADGE gradient embeddings of the images of a batch, ``[B, E]``.

        Each pseudo-box with source-anchor class distribution ``p``, pseudo-label ``ŷ`` and
        neck feature ``h`` at its anchor's cell adds ``(p − e_ŷ) ⊗ h`` to its image's
        embedding (``p − e_ŷ`` is the gradient of the box's cross-entropy, softmax or
        per-class sigmoid, with respect to its logits), each level in its own block
        (``E = C' × sum of level channels``), or, with ``projections``, every level's ``h``
        projected to ``D`` dimensions (``E = C' × D``). Images without pseudo-boxes embed to
        zero.
        """
        channels = [f.shape[1] for f in out.feats]
        classes = out.cls_logits.shape[-1]
        if projections is None:
            offsets = np.cumsum([0] + [classes * c for c in channels])
            dim = int(offsets[-1])
        else:
            dim = classes * projections.dim
        rows = []
        for i, image_boxes in enumerate(boxes):
            emb = out.cls_logits.new_zeros(dim)
            grads = image_boxes.probs.clone()
            grads[torch.arange(len(image_boxes)), image_boxes.labels] -= 1.0
            for g, (level, y, x) in zip(grads, anchor_cells(out, image_boxes.anchors)):
                h = out.feats[level][i, :, y, x]
                if projections is None:
                    lo = int(offsets[level])
                    emb[lo:lo + classes * channels[level]] += torch.outer(g, h).flatten()
                else:
                    h = projections(channels[level]).to(h) @ h
                    emb += torch.outer(g, h).flatten()
            rows.append(emb)
        return torch.stack(rows)


@HEAD_ADAPTERS.register_module()
class SSDAdapter(AnchorHeadAdapter):
    """mmdet's ``SSDHead``: softmax over ``C + 1`` classes, hard-negative mining."""

    head_types = ('SSDHead',)

    def prepare(self, model: nn.Module) -> None:
        """Work around mmdet 3.3.0's SSD inference bug, in this one place.

        ``SSDHead.__init__`` skips ``AnchorHead.__init__`` and never sets ``loss_cls``, but
        the shared post-processing (``BaseDenseHead._predict_by_feat_single``) reads
        ``self.loss_cls.custom_cls_channels``, so ``model.predict`` raises
        ``AttributeError`` (mmdetection issues 11063 and 11305). SSD classifies with a plain
        softmax and has no loss module, so ``None`` is the truthful value and makes that
        check fall through.
        """
        head = model.bbox_head
        if not hasattr(head, 'loss_cls'):
            head.loss_cls = None

    def level_maps(self, head: nn.Module, feats: tuple[Tensor, ...],
                   with_boxes: bool) -> LevelMaps:
        # SSD's head is one conv per level and branch: run only the branches needed.
        cls_maps = [conv(f) for f, conv in zip(feats, head.cls_convs)]
        box_maps = [conv(f) for f, conv in zip(feats, head.reg_convs)] if with_boxes else None
        return cls_maps, box_maps, None

    def distribution(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        probs = logits.softmax(-1)
        return probs, probs[:, :-1]

    def anchor_losses(self, head: nn.Module, logits: Tensor, priors: Tensor,
                      boxes: InstanceData, out: HeadOutput, index: int) -> BoxLosses:
        """SSD's classification loss of one image, split over its pseudo-boxes.

        Anchors are matched to the boxes by the head's own assigner (IoU >= 0.5, plus each
        box's best anchor); the background term is the cross-entropy of the
        ``neg_pos_ratio·|P|`` hardest background anchors (SSD's hard-negative mining, within
        this image). See :func:`.base.split_over_boxes`.
        """
        return ssd_box_losses(head, logits, priors, boxes.bboxes.detach(), boxes.labels)

    def box_entropies(self, boxes: InstanceData) -> Tensor:
        """Entropy (nats) of each box's softmax, background included, in
        ``[0, log(C + 1)]``."""
        probs = boxes.probs
        return -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)


def ssd_box_losses(head: nn.Module, logits: Tensor, priors: Tensor, boxes: Tensor,
                   labels: Tensor) -> BoxLosses:
    """SSD's classification loss of one image split over its pseudo-boxes (see
    :meth:`SSDAdapter.anchor_losses`); ``logits [A, C + 1]``, ``boxes [K, 4]``."""
    if boxes.shape[0] == 0:
        return empty_box_losses(logits)
    assign = head.assigner.assign(InstanceData(priors=priors),
                                  InstanceData(bboxes=boxes.detach(), labels=labels))
    gt_inds = assign.gt_inds
    pos = gt_inds > 0
    targets = torch.full_like(gt_inds, head.num_classes)
    targets[pos] = labels[gt_inds[pos] - 1]
    ce = F.cross_entropy(logits, targets, reduction='none')
    neg_ce = ce[gt_inds == 0]
    num_neg = min(head.train_cfg['neg_pos_ratio'] * int(pos.sum()), neg_ce.numel())
    hard_neg = neg_ce.topk(num_neg).values.sum()
    return split_over_boxes(ce, gt_inds, boxes.shape[0], hard_neg)


@HEAD_ADAPTERS.register_module()
class SigmoidAnchorAdapter(AnchorHeadAdapter):
    """mmdet's sigmoid anchor heads trained with focal loss: RetinaNet's ``RetinaHead``.

    The loss of an anchor is the model's own ``loss_cls`` (``FocalLoss``, summed over
    classes) against its target from the model's own assigner (``MaxIoUAssigner``:
    positives, background, and ignored anchors between the IoU thresholds, which count
    nothing), over the anchors inside the image (``allowed_border``), as mmdet's
    ``AnchorHead`` computes targets. mmdet divides the image's summed loss by its positive
    anchors (``PseudoSampler``), so :func:`.base.split_over_boxes` applies with every
    background anchor in the background term.
    """

    head_types = ('RetinaHead', 'RetinaSepBNHead')

    def check_model_cfg(self, model_cfg: dict) -> None:
        check_focal_loss(type(self).__name__, model_cfg)
        train_cfg = model_cfg.get('train_cfg') or {}
        sampler = train_cfg.get('sampler', {}).get('type', 'PseudoSampler')
        if sampler != 'PseudoSampler':
            raise ConfigError(f'task.model.train_cfg.sampler is {sampler!r}: the focal-loss '
                              "adapter needs 'PseudoSampler' (every anchor counts, as in "
                              'RetinaNet)')

    def level_maps(self, head: nn.Module, feats: tuple[Tensor, ...],
                   with_boxes: bool) -> LevelMaps:
        if with_boxes or type(head).__name__ != 'RetinaHead':
            return super().level_maps(head, feats, with_boxes)
        # RetinaHead's towers are separate: the box losses need only the class tower.
        return class_tower_maps(feats, head.cls_convs, head.retina_cls), None, None

    def distribution(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        probs = logits.sigmoid()
        return probs, probs

    def anchor_losses(self, head: nn.Module, logits: Tensor, priors: Tensor,
                      boxes: InstanceData, out: HeadOutput, index: int) -> BoxLosses:
        """The focal loss of one image, split over its pseudo-boxes."""
        gt_inds = self.assignment(head, priors, boxes, out, index)
        return focal_box_losses(head, logits, gt_inds, boxes.labels, self.pos_weight(head))

    def pos_weight(self, head: nn.Module) -> float:
        """Weight of a positive prior's loss (mmdet's ``train_cfg.pos_weight``)."""
        return (head.train_cfg or {}).get('pos_weight', -1)

    def prior_assignment(self, head: nn.Module, priors: Tensor, boxes: InstanceData,
                         out: HeadOutput, index: int) -> Tensor:
        """The anchors inside the image assigned by the head's assigner; the others are
        ignored (-1), as mmdet's ``AnchorHead`` computes targets."""
        valid = torch.cat(head.prior_generator.valid_flags(out.level_sizes, out.pad_shapes[index],
                                                           device=priors.device))
        inside = anchor_inside_flags(priors, valid, out.img_shapes[index],
                                     head.train_cfg['allowed_border'])
        gt_inds = torch.full((priors.shape[0],), -1, dtype=torch.long, device=priors.device)
        gt_inds[inside] = self.assign_inside(
            head, priors, inside, out,
            InstanceData(bboxes=boxes.bboxes.detach(), labels=boxes.labels))
        return gt_inds

    def assign_inside(self, head: nn.Module, priors: Tensor, inside: Tensor, out: HeadOutput,
                      boxes: InstanceData) -> Tensor:
        """The head's own assignment of the anchors inside the image to the pseudo-boxes.

        Args:
            head: The dense head.
            priors: Every anchor ``[A, 4]``.
            inside: Which anchors are inside the image ``[A]`` (bool).
            out: The batch's outputs (level sizes).
            boxes: The pseudo-boxes as ground truth (``bboxes``, ``labels``).

        Returns:
            ``gt_inds`` of the inside anchors ``[A_inside]`` (mmdet's ``AssignResult``).
        """
        return head.assigner.assign(InstanceData(priors=priors[inside]), boxes).gt_inds

    def box_entropies(self, boxes: InstanceData) -> Tensor:
        """Sum over classes of each box's binary entropies (a sigmoid head scores every
        class independently), in ``[0, C·log 2]``."""
        p = boxes.probs.clamp(1e-12, 1 - 1e-12)
        return -(p * p.log() + (1 - p) * (1 - p).log()).sum(dim=1)


def class_tower_maps(feats: tuple[Tensor, ...], tower: nn.ModuleList,
                     classifier: nn.Module) -> list[Tensor]:
    """Class logits per level from a head's class tower alone (the box tower is not needed
    for the box losses): ``classifier(tower(x))`` for each level's features ``x``."""
    maps = []
    for x in feats:
        for conv in tower:
            x = conv(x)
        maps.append(classifier(x))
    return maps


def check_focal_loss(adapter: str, model_cfg: dict) -> None:
    """Refuse, in one line, a dense head whose ``loss_cls`` is not a sigmoid ``FocalLoss``
    (the loss the focal-loss adapters split over the pseudo-boxes)."""
    head = model_cfg.get('bbox_head', {})
    loss = head.get('loss_cls', {})
    if not loss.get('use_sigmoid', False) or loss.get('type') != 'FocalLoss':
        raise ConfigError(
            f'task.model.bbox_head.loss_cls is {loss.get("type")!r} with use_sigmoid='
            f'{loss.get("use_sigmoid")}: {adapter} splits a sigmoid FocalLoss over the '
            "pseudo-boxes; use dict(type='FocalLoss', use_sigmoid=True, ...) as mmdet's "
            f'{head.get("type")} configs do')


def focal_box_losses(head: nn.Module, logits: Tensor, gt_inds: Tensor, labels: Tensor,
                     pos_weight: float, quality: Tensor | None = None) -> BoxLosses:
    """A sigmoid head's focal loss of one image split over its pseudo-boxes.

    The loss of a prior is the model's own ``loss_cls`` (``FocalLoss``, summed over classes)
    against its target: the label of its box, or background; ignored priors count nothing.
    mmdet divides the image's summed loss by its positive priors, so
    :func:`.base.split_over_boxes` applies with every background prior in the background term.

    Args:
        head: The dense head (``loss_cls``, ``num_classes``).
        logits: Class logits of the image's priors ``[A, C]``.
        gt_inds: Assignment of each prior ``[A]`` (``k + 1`` box ``k``, 0 background, -1
            ignored).
        labels: Labels of the pseudo-boxes ``[K]``.
        pos_weight: Weight of a positive prior's loss (``<= 0``: 1, as mmdet's ``pos_weight``).
        quality: Soft targets ``[A]`` for a Quality Focal Loss (GFL: each positive prior's
            IoU, 0 for the others), passed with the labels as ``(labels, quality)``; ``None``
            for a plain focal loss.
    """
    pos = gt_inds > 0
    targets = torch.full_like(gt_inds, head.num_classes)
    targets[pos] = labels[gt_inds[pos] - 1]
    weights = (gt_inds >= 0).to(logits.dtype)
    if pos_weight > 0:
        weights[pos] = pos_weight
    if quality is None:  # FocalLoss: [A, C], summed over the classes
        prior_loss = head.loss_cls(logits, targets, weights,
                                   reduction_override='none').sum(dim=1)
    else:  # QualityFocalLoss sums over the classes itself: [A]
        prior_loss = head.loss_cls(logits, (targets, quality), weights,
                                   reduction_override='none')
    neg_sum = prior_loss[gt_inds == 0].sum()
    return split_over_boxes(prior_loss, gt_inds, labels.shape[0], neg_sum)


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


__all__ = ['AnchorHeadAdapter', 'HeadOutput', 'LevelMaps', 'LevelProjections', 'SSDAdapter',
           'SigmoidAnchorAdapter', 'anchor_cells', 'check_focal_loss', 'class_tower_maps',
           'focal_box_losses',
           'select_pseudo_boxes',
           'ssd_box_losses']
