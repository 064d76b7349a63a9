"""RIPU's optional training terms on predicted class probabilities, as RIPU defines them.

Exactly what is computed (``p`` = softmax probabilities ``[B, C, H, W]``):

* :func:`local_consistency_loss` (RIPU's ``LocalConsistentLoss``, applied to the *source*
  batch with its labels): each pixel's discrepancy ``sum_c |p[c] - mean_3x3(p)[c]|`` with the
  mean of its 3 x 3 window (centre included, replicate padding), averaged over the pixels on
  a semantic boundary of the label map. A pixel is on a boundary when
  ``8·y(i) − Σ y(neighbours)`` is not 0 over its 8 neighbours with zero padding, on the raw
  label values (so pixels next to an ignore pixel, and border pixels of a non-zero class,
  count); ignore pixels (255) themselves are excluded. RIPU's weight: 0.1.
* :func:`negative_learning_loss` (RIPU's ``NegativeLearningLoss``, applied to every target
  pixel): "complementary labels" are the (pixel, class) pairs with ``p < threshold`` (chosen
  without gradient); the loss is ``-mean over those pairs of log(1 - p + 1e-6)``: it pushes
  already-unlikely classes further down. ``mask`` restricts it to some pixels (not RIPU's
  use). RIPU's weight: 1.0, threshold 0.05.

Where RIPU divides by zero (no boundary pixel, no complementary label) its loss is NaN; here
the result is an exact zero still connected to ``probs``, so ``backward()`` always works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .classes import IGNORE_INDEX

__all__ = ['local_consistency_loss', 'negative_learning_loss', 'semantic_boundary']

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


def semantic_boundary(labels: Tensor) -> Tensor:
    """RIPU's boundary test: ``8·y(i) − Σ y(8 neighbours) != 0`` with zero padding.

    Args:
        labels: Label maps ``[B, H, W]`` (integer train ids, 255 = ignore).

    Returns:
        Bool ``[B, H, W]``.
    """
    values = labels.to(torch.float64).unsqueeze(1)  # integers: the sums below are exact
    window = F.avg_pool2d(F.pad(values, (1, 1, 1, 1)), 3, stride=1, divisor_override=1)
    return (9 * values - window).squeeze(1) != 0


def local_consistency_loss(probs: Tensor, labels: Tensor) -> Tensor:
    """Mean discrepancy from the 3 x 3 window mean over the labels' boundary pixels.

    Args:
        probs: Class probabilities ``[B, C, H, W]``.
        labels: Label maps ``[B, H, W]`` of the same images (255 = ignore).

    Returns:
        Scalar loss in ``[0, 2]``; a zero connected to ``probs`` when no pixel is on a
        boundary.
    """
    _check_probs(probs, 'local_consistency_loss')
    b, _, h, w = probs.shape
    if not isinstance(labels, Tensor) or tuple(labels.shape) != (b, h, w) \
            or labels.is_floating_point():
        got = f'{labels.dtype} {tuple(labels.shape)}' if isinstance(labels, Tensor) \
            else type(labels).__name__
        raise ValueError(f'local_consistency_loss labels must be integer maps [B, H, W] = '
                         f'{(b, h, w)}, got {got}')
    mean = F.avg_pool2d(F.pad(probs, (1, 1, 1, 1), mode='replicate'), 3, stride=1)
    discrepancy = (probs - mean).abs().sum(dim=1)
    labels = labels.to(probs.device)
    mask = semantic_boundary(labels) & (labels != IGNORE_INDEX)
    if not bool(mask.any()):
        return _zero_like_graph(probs)
    return discrepancy[mask].mean()


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
