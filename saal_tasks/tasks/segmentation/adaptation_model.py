"""RIPU's domain-adaptive objective as an mmengine model: what the Runner trains.

:class:`DomainAdaptiveSegmentor` wraps a segmentor (an mmseg ``EncoderDecoder`` from
:func:`~.models.build_segmentor`) for training only. Its ``loss`` mode takes one iteration's
source and target batches and returns the weighted terms, which mmengine's
``BaseModel.train_step`` sums (every key holds ``'loss'``), back-propagates and steps through
the ``OptimWrapper``: source CE + CE on the revealed target pixels, plus RIPU's optional
local-consistency and negative-learning terms. The active-learning loop keeps, scores and
saves the inner segmentor; the wrapper lives for one training window.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import nn

from .classes import IGNORE_INDEX
from .losses import local_consistency_loss, negative_learning_loss
from .models import segment_logits

__all__ = ['LOSS_TERMS', 'DomainAdaptiveSegmentor']

#: The loss terms an iteration may return, in the order they are summed and logged.
LOSS_TERMS = ('loss_src', 'loss_lc', 'loss_tgt', 'loss_nl')


class DomainAdaptiveSegmentor(BaseModel):
    """A segmentor trained on a labeled source and a partially labeled target batch.

    Args:
        segmentor: The segmentor to train (an mmseg ``EncoderDecoder``); its parameter names
            keep their prefix ``segmentor.``, so ``paramwise_cfg`` keys such as
            ``'decode_head'`` match as in mmseg's own configs.
        lc_weight: Weight of RIPU's local-consistency term on the source batch (0: off).
        nl_weight: Weight of RIPU's negative-learning term on the target batch (0: off).
        nl_threshold: Probability below which a class is a negative label.
    """

    def __init__(self, segmentor: nn.Module, lc_weight: float = 0.0, nl_weight: float = 0.0,
                 nl_threshold: float = 0.05) -> None:
        # mmengine's BaseDataPreprocessor only moves the batch to the model's device: the
        # task normalises the images itself.
        super().__init__(data_preprocessor=None)
        self.segmentor = segmentor
        self.lc_weight = float(lc_weight)
        self.nl_weight = float(nl_weight)
        self.nl_threshold = float(nl_threshold)

    def forward(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor,
                y_t: torch.Tensor, mode: str = 'loss') -> dict[str, torch.Tensor]:
        """The iteration's weighted loss terms (mode ``'loss'``, the only one).

        Args:
            x_s: Source images ``[B_s, 3, H_s, W_s]`` (normalised).
            y_s: Source labels ``[B_s, H_s, W_s]`` (int64, 255 = ignore).
            x_t: Target images ``[B_t, 3, H_t, W_t]`` (normalised).
            y_t: Target labels ``[B_t, H_t, W_t]``, 255 where not revealed.
            mode: ``'loss'``; prediction goes through the segmentor itself.

        Returns:
            Scalar terms keyed by :data:`LOSS_TERMS` (graph kept), already weighted; no
            ``loss_tgt`` when no target pixel of the batch is revealed.

        Raises:
            ValueError: ``mode`` is not ``'loss'``.
        """
        if mode != 'loss':
            raise ValueError(f"DomainAdaptiveSegmentor only computes losses (mode='loss'), got "
                             f'{mode!r}: predict with its segmentor')
        terms: dict[str, torch.Tensor] = {}
        logits_s = segment_logits(self.segmentor, x_s)
        terms['loss_src'] = F.cross_entropy(logits_s, y_s, ignore_index=IGNORE_INDEX)
        if self.lc_weight:  # RIPU: on the source predictions, at the source label boundaries
            terms['loss_lc'] = self.lc_weight * local_consistency_loss(logits_s.softmax(dim=1),
                                                                       y_s)
        labeled = bool((y_t != IGNORE_INDEX).any())
        if labeled or self.nl_weight:
            logits_t = segment_logits(self.segmentor, x_t)
            if labeled:
                terms['loss_tgt'] = F.cross_entropy(logits_t, y_t, ignore_index=IGNORE_INDEX)
            if self.nl_weight:  # RIPU: on every target pixel, revealed or not
                terms['loss_nl'] = self.nl_weight * negative_learning_loss(
                    logits_t.softmax(dim=1), self.nl_threshold)
        return terms
