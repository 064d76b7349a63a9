"""RIPU's optional training terms on predicted class probabilities.

Exactly what is computed (``p`` = softmax probabilities ``[B, C, H, W]``):

* :func:`local_consistency_loss`: the mean, over every pair of 8-neighbouring pixels of the
  same image, of the L1 distance ``sum_c |p[b, c, i] - p[b, c, j]|`` between their class
  distributions. Pairs are unordered (each pair counted once); as the distance is symmetric,
  the mean equals the mean over ordered (pixel, neighbour) pairs. Image borders have fewer
  neighbours: no padding is invented. Range [0, 2].

  RIPU's own term differs in two details: it compares each pixel with the mean of its 3x3
  window (centre included, replicate padding), and averages only over pixels on source-label
  boundaries. The version here needs no labels, so it can also be applied to target images.

* :func:`negative_learning_loss`: "complementary labels" are the (pixel, class) pairs with
  ``p < threshold`` (a selection made without gradient); the loss is
  ``-mean over those pairs of log(1 - p + 1e-6)``, i.e. it pushes already-unlikely classes
  further down. With ``mask``, only the pixels where ``mask`` is true take part (for
  example the unlabeled target pixels). RIPU applies it to all target pixels
  (``mask=None``). When no pair is selected the result is an exact zero that is still
  connected to ``probs``, so ``backward()`` works unconditionally.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['local_consistency_loss', 'negative_learning_loss']

#: Added inside the log of the negative-learning loss (RIPU's value) against log(0).
NEGATIVE_LEARNING_EPS = 1e-6


def _check_probs(probs: Tensor, name: str) -> None:
    if not isinstance(probs, Tensor) or probs.dim() != 4 or not probs.is_floating_point():
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f'{name} expects float class probabilities [B, C, H, W], got '
                         f'{shape}; pass softmax(logits, dim=1)')


def _zero_like_graph(probs: Tensor) -> Tensor:
    """A scalar 0 that depends on ``probs`` (its gradient is zero, not missing)."""
    return probs.sum() * 0.0


def local_consistency_loss(probs: Tensor) -> Tensor:
    """Mean L1 distance between the class distributions of 8-neighbouring pixels.

    Args:
        probs: Class probabilities ``[B, C, H, W]``.

    Returns:
        Scalar loss in [0, 2] (0 when ``H = W = 1``: there is no neighbour).
    """
    _check_probs(probs, 'local_consistency_loss')
    b, _, h, w = probs.shape
    # The four "forward" neighbour offsets cover each unordered pair exactly once:
    # right, down, down-right, down-left.
    diffs = (
        probs[:, :, :, 1:] - probs[:, :, :, :-1],
        probs[:, :, 1:, :] - probs[:, :, :-1, :],
        probs[:, :, 1:, 1:] - probs[:, :, :-1, :-1],
        probs[:, :, 1:, :-1] - probs[:, :, :-1, 1:],
    )
    pairs = b * (h * (w - 1) + (h - 1) * w + 2 * (h - 1) * (w - 1))
    if pairs == 0:
        return _zero_like_graph(probs)
    total = sum(d.abs().sum() for d in diffs)
    return total / pairs


def negative_learning_loss(probs: Tensor, threshold: float = 0.05,
                           mask: Tensor | None = None) -> Tensor:
    """Negative learning on complementary labels (classes with probability < threshold).

    Args:
        probs: Class probabilities ``[B, C, H, W]``.
        threshold: A class is a complementary label of a pixel when its probability is
            below this, in (0, 1].
        mask: Optional bool ``[B, H, W]``; only pixels where it is true take part.

    Returns:
        Scalar ``-mean(log(1 - p + 1e-6))`` over the selected (pixel, class) pairs; a zero
        connected to ``probs`` when none is selected.
    """
    _check_probs(probs, 'negative_learning_loss')
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f'negative_learning_loss threshold must be in (0, 1], got '
                         f'{threshold}')
    selected = (probs < threshold).detach()
    if mask is not None:
        b, _, h, w = probs.shape
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool \
                or tuple(mask.shape) != (b, h, w):
            got = f'{mask.dtype} {tuple(mask.shape)}' if isinstance(mask, Tensor) \
                else type(mask).__name__
            raise ValueError(f'negative_learning_loss mask must be a bool tensor [B, H, W] = '
                             f'{(b, h, w)}, got {got}')
        selected = selected & mask.to(probs.device).unsqueeze(1)
    count = selected.sum()
    if int(count) == 0:
        return _zero_like_graph(probs)
    picked = probs[selected]
    return -torch.log1p(-picked + NEGATIVE_LEARNING_EPS).sum() / count
