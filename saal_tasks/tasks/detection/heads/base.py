"""The contract between the detection task and a detector family: a head adapter.

Box-sum SAAL needs three things from a detector, and each family computes them differently:

1. its **pseudo-boxes**: the detector's own post-processing (score threshold, NMS, top-k),
   keeping for every detection what the other methods need (its class distribution, the
   feature behind it);
2. the **classification loss of each pseudo-box**, normalised inside its image, such that the
   weighted sum over the image's boxes equals mmdet's classification loss for that image
   alone (``sum_k weights_k · per_box_k = image_loss``), so box-sum SAAL means the same thing
   for every detector and an image's units never depend on the rest of its batch;
3. optionally, the **entropy** of a box and a **BADGE** gradient embedding of an image.

A :class:`HeadAdapter` answers these from the network's outputs. Adapters are registered in
:data:`HEAD_ADAPTERS` and chosen from the model config by :func:`build_head_adapter` (the
first whose :meth:`HeadAdapter.matches` accepts it); a model no adapter accepts is refused
with one line naming the adapters that exist. docs/detection.md ("Adding a detector") shows
how to write one and what to test.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from mmengine.registry import Registry
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ....core.errors import ConfigError

#: Head adapters, one per detector family (``task.head_adapter=dict(type=...)`` forces one).
HEAD_ADAPTERS = Registry('detection head adapter', scope='saal_tasks',
                         locations=['saal_tasks.tasks.detection.heads'])


@dataclass
class BoxLosses:
    """Classification losses of one image against its pseudo-boxes.

    Attributes:
        per_box: Loss of each pseudo-box ``[K]`` (the SAAL units), connected to the network
            outputs even when ``K = 0``.
        weights: Weight of each box ``[K]`` with ``(weights * per_box).sum() == image_loss``
            (the head's own normalisation), no gradient.
        num_pos: Training samples (anchors, RoIs) matched to each box ``[K]``.
        image_loss: The head's classification loss of this image alone (mmdet's
            ``loss_cls`` for a batch of one with the pseudo-boxes as ground truth), a scalar.
    """

    per_box: Tensor
    weights: Tensor
    num_pos: Tensor
    image_loss: Tensor


def empty_box_losses(connected_to: Tensor) -> BoxLosses:
    """The losses of an image without pseudo-boxes.

    The per-box tensor is an empty slice of ``connected_to``: zero-size, but part of the
    graph, so that such an image gives exact zero gradients instead of an autograd error.
    """
    flat = connected_to.reshape(-1)
    return BoxLosses(per_box=flat[:0], weights=flat.new_zeros(0).detach(),
                     num_pos=torch.zeros(0, dtype=torch.long), image_loss=flat[:1].sum() * 0)


def split_over_boxes(sample_loss: Tensor, gt_inds: Tensor, num_boxes: int,
                     neg_sum: Tensor) -> BoxLosses:
    """Split an image's classification loss over its boxes (anchor and RoI heads alike).

    With ``L_a`` the loss of training sample ``a`` (an anchor or a RoI), ``P_k`` the samples
    matched to box ``k``, ``P`` all matched samples and ``Neg`` the sum of the losses of the
    background samples that the head counts (all of them for focal loss, the hard negatives
    for SSD)::

        per_box_k = sum_{a in P_k} L_a / |P_k|  +  Neg / |P|,   weights_k = |P_k| / |P|

    i.e. the mean loss of the box's own samples plus the image's background loss per matched
    sample; a box whose samples all went to other boxes gets 0. Then
    ``sum_k weights_k · per_box_k = (sum_{a in P} L_a + Neg) / |P|``, the head's loss of the
    image when it averages over positives (SSD, RetinaNet).

    Args:
        sample_loss: Loss of each training sample ``[A]``.
        gt_inds: Assignment of each sample ``[A]``: ``k + 1`` for box ``k``, 0 background,
            -1 ignored (mmdet's ``AssignResult.gt_inds``).
        num_boxes: ``K``.
        neg_sum: The background term ``Neg`` (a scalar tensor).

    Returns:
        The per-box losses, weights, matched counts and the image loss.
    """
    pos = gt_inds > 0
    box_of_pos = gt_inds[pos] - 1
    num_pos_total = int(pos.sum())
    pos_sum = sample_loss.new_zeros(num_boxes).index_add(0, box_of_pos, sample_loss[pos])
    num_pos = torch.bincount(box_of_pos, minlength=num_boxes)
    per_box = pos_sum / num_pos.clamp(min=1) + neg_sum / max(num_pos_total, 1)
    per_box = torch.where(num_pos > 0, per_box, torch.zeros_like(per_box))
    image_loss = (sample_loss[pos].sum() + neg_sum) / max(num_pos_total, 1)
    weights = (num_pos.to(sample_loss.dtype) / max(num_pos_total, 1)).detach()
    return BoxLosses(per_box=per_box, weights=weights, num_pos=num_pos, image_loss=image_loss)


def select_pseudo_boxes(detections: InstanceData, score_thr: float,
                        empty_policy: str) -> InstanceData:
    """The pseudo-labels of one image: detections scoring at least ``score_thr``.

    Args:
        detections: Output of :meth:`HeadAdapter.detect`, by decreasing score.
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


class HeadAdapter(ABC):
    """What the detection task needs from one family of detectors.

    Subclasses set :attr:`head_types` (mmdet class names of the head that decides the
    family) and implement :meth:`forward`, :meth:`detect` and :meth:`box_losses`; they may
    implement :meth:`box_entropies` and :meth:`badge_embeddings`, whose defaults refuse with
    one line. An adapter holds no weights: every method receives the model.
    """

    #: mmdet head types this adapter handles (``model.bbox_head.type`` for single-stage
    #: detectors, ``model.roi_head.bbox_head.type`` for two-stage ones).
    head_types: ClassVar[tuple[str, ...]] = ()
    #: Where :meth:`matches` looks for the head type in the model config.
    head_key: ClassVar[tuple[str, ...]] = ('bbox_head',)

    @classmethod
    def head_type_of(cls, model_cfg: dict) -> str | None:
        """The head type at :attr:`head_key` of a model config (``None`` when absent)."""
        node: Any = model_cfg
        for key in cls.head_key:
            node = node.get(key) if isinstance(node, dict) else None
        return node.get('type') if isinstance(node, dict) else None

    @classmethod
    def matches(cls, model_cfg: dict) -> bool:
        """Whether this adapter handles the detector of ``model_cfg``."""
        return cls.head_type_of(model_cfg) in cls.head_types

    def check_model_cfg(self, model_cfg: dict) -> None:
        """Refuse, with one line, options of a matched model that the adapter cannot honour."""

    def prepare(self, model: nn.Module) -> None:
        """Make a freshly built detector ready for scoring (e.g. work around mmdet bugs)."""

    def num_classes(self, model_cfg: dict) -> int | None:
        """The detector's number of object classes, read from its config."""
        node: Any = model_cfg
        for key in self.head_key:
            node = node.get(key, {})
        return node.get('num_classes')

    @abstractmethod
    def forward(self, model: nn.Module, inputs: dict, with_boxes: bool) -> Any:
        """Run the network on a collated batch.

        Args:
            model: The detector.
            inputs: A batch as the task's ``pool_batches`` yields it
                (``{'inputs': [...], 'data_samples': [...]}``), before the data preprocessor.
            with_boxes: Whether :meth:`detect` will be called on the result (otherwise only
                what :meth:`box_losses` needs is computed).

        Returns:
            The adapter's outputs of the batch (autograd graph kept when grad is enabled).
        """

    @abstractmethod
    def num_images(self, out: Any) -> int:
        """Images in a :meth:`forward` result."""

    @abstractmethod
    def detect(self, model: nn.Module, out: Any, index: int) -> InstanceData:
        """The detector's own post-processing of image ``index``.

        Returns:
            Detections in network-input pixels, by decreasing score: ``bboxes [K, 4]``,
            ``scores [K]``, ``labels [K]`` and ``probs [K, C']`` (the class distribution the
            detection came from), plus whatever the adapter's other methods need.
        """

    @abstractmethod
    def box_losses(self, model: nn.Module, out: Any, index: int,
                   boxes: InstanceData) -> BoxLosses:
        """Classification loss of each pseudo-box of image ``index`` (see :class:`BoxLosses`).

        Args:
            model: The detector (possibly at perturbed weights).
            out: :meth:`forward` of the batch at those weights.
            index: Image of the batch.
            boxes: Its pseudo-boxes (:func:`select_pseudo_boxes` of :meth:`detect` at the
                clean weights; no gradient), ``bboxes [K, 4]`` and ``labels [K]``.
        """

    def box_entropies(self, boxes: InstanceData) -> Tensor:
        """Uncertainty (nats) of each pseudo-box ``[K]``, for the entropy baseline."""
        raise ConfigError(f'{type(self).__name__} has no box entropy: use SharpnessScorer or '
                          'RandomScorer with this detector, or add box_entropies to its '
                          'head adapter')

    def badge_embeddings(self, model: nn.Module, out: Any,
                         boxes: list[InstanceData], projections: Any) -> Tensor:
        """BADGE gradient embeddings ``[B, E]`` of the batch's images."""
        raise ConfigError(f'{type(self).__name__} has no BADGE embedding: use another '
                          'scorer with this detector, or add badge_embeddings to its head '
                          'adapter')


def build_head_adapter(model_cfg: dict, adapter_cfg: dict | None = None) -> HeadAdapter:
    """The adapter of a detector: ``adapter_cfg`` when given, otherwise the first that matches.

    Raises:
        ConfigError: No registered adapter handles the model (the line names them all).
    """
    import saal_tasks.tasks.detection.heads  # noqa: F401  (registers the shipped adapters)

    if adapter_cfg is not None:
        adapter = HEAD_ADAPTERS.build(dict(adapter_cfg))
    else:
        found = [cls for cls in HEAD_ADAPTERS.module_dict.values() if cls.matches(model_cfg)]
        if not found:
            known = '; '.join(f'{name} ({", ".join(cls.head_types)})'
                              for name, cls in sorted(HEAD_ADAPTERS.module_dict.items()))
            heads = model_cfg.get('bbox_head') or model_cfg.get('roi_head', {}).get(
                'bbox_head') or {}
            raise ConfigError(
                f'task.model: no head adapter handles {model_cfg.get("type")!r} with head '
                f'{heads.get("type")!r}. Adapters: {known}. Use one of these heads, or '
                'register a HeadAdapter for yours (docs/detection.md, "Adding a detector")')
        adapter = found[0]()
    adapter.check_model_cfg(model_cfg)
    return adapter


__all__ = ['BoxLosses', 'HEAD_ADAPTERS', 'HeadAdapter', 'build_head_adapter',
           'empty_box_losses', 'select_pseudo_boxes', 'split_over_boxes']
