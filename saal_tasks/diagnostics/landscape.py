"""2-D loss landscapes around trained weights (paper appendix A.6, Li et al. 2018).

``g(α, β) = (1/n) Σ_i l(x_i, y_i; θ + α d₁ + β d₂)`` on a grid of ``(α, β)``, with random
directions ``d₁, d₂`` that are *filter-normalised*: every filter (output slice ``d[k]`` of a
weight with two or more dimensions) is rescaled to the norm of the matching filter of θ, so
the plot does not depend on the scale of each layer's weights; biases and other
one-dimensional weights (BatchNorm) get no direction, as in Li et al.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.task import BaseTask
from ..core.units import check_reduction, reduce_units
from .functional import Params, TargetFn, weight_functions

#: Added to filter norms so that an all-zero filter gets a zero direction instead of NaN.
_NORM_EPS = 1e-10


@dataclass
class LossSurface:
    """A loss landscape on a grid.

    Attributes:
        alphas: Coordinates along ``d₁``, ``[A]``.
        betas: Coordinates along ``d₂``, ``[Bt]``.
        loss: Mean loss at ``θ + α d₁ + β d₂``, ``[Bt, A]`` (row = β, column = α).
        num_samples: Samples averaged per grid point.
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    num_samples: int

    @property
    def center_loss(self) -> float:
        """Loss at the grid point nearest to θ (α = β = 0)."""
        return float(self.loss[np.abs(self.betas).argmin(), np.abs(self.alphas).argmin()])


def filter_normalized_direction(params: Params, generator: torch.Generator) -> Params:
    """A Gaussian random direction with every filter scaled to the norm of θ's filter.

    Args:
        params: The weights θ, name -> tensor.
        generator: Source of the random direction.

    Returns:
        Direction per weight, same shapes; zero for one-dimensional weights.
    """
    out = {}
    for name, p in params.items():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p)
        flat_d, flat_p = d.reshape(p.shape[0], -1), p.detach().reshape(p.shape[0], -1)
        scale = flat_p.norm(dim=1, keepdim=True) / (flat_d.norm(dim=1, keepdim=True) + _NORM_EPS)
        out[name] = (flat_d * scale).reshape(p.shape)
    return out


def loss_surface(task: BaseTask, model: nn.Module, sample_ids: np.ndarray, *,
                 targets_fn: TargetFn, span: float = 1.0, steps: int = 21,
                 reduction: str = 'sum', batch_size: int = 256, seed: int = 0) -> LossSurface:
    """Evaluate the mean loss of ``sample_ids`` on a ``steps × steps`` grid around θ.

    Args:
        task: Task adapter (``pool_batches`` and ``loss_per_unit``).
        model: Trained model (eval mode during the call; its weights are never modified:
            every grid point is a functional call with shifted weights).
        sample_ids: Samples whose mean loss is plotted, ``[N]``.
        targets_fn: Targets of each sample, computed once at θ (ground truth for the
            labeled set, as in the paper).
        span: The grid covers ``[-span, span]`` in both directions.
        steps: Grid points per direction (odd puts θ itself on the grid).
        reduction: Per-sample reduction of unit losses.
        batch_size: Samples per forward.
        seed: Seed of the two random directions.

    Returns:
        The :class:`LossSurface`.
    """
    check_reduction('reduction', reduction)
    if steps < 2 or span <= 0:
        raise ValueError(f'the landscape needs steps >= 2 and span > 0, got steps={steps}, '
                         f'span={span}')
    ids = np.asarray(sample_ids, dtype=np.int64)
    if len(ids) == 0:
        raise ValueError('loss_surface needs at least one sample')
    was_training = model.training
    model.eval()
    try:
        wf = weight_functions(task, model)
        generator = torch.Generator().manual_seed(seed)
        d1 = filter_normalized_direction(wf.params, generator)
        d2 = filter_normalized_direction(wf.params, generator)
        batches = [(inputs, targets_fn(task, model, b_ids, inputs))
                   for b_ids, inputs in task.pool_batches(ids, batch_size)]
        coords = np.linspace(-span, span, steps)
        grid = np.zeros((steps, steps))
        with torch.no_grad():
            for i, beta in enumerate(coords):
                for j, alpha in enumerate(coords):
                    params = {k: p + float(alpha) * d1[k] + float(beta) * d2[k]
                              for k, p in wf.params.items()}
                    total = sum(float(reduce_units(wf.loss_units(params, x, y), reduction)
                                      .to(torch.float64).sum()) for x, y in batches)
                    grid[i, j] = total / len(ids)
    finally:
        model.train(was_training)
    return LossSurface(alphas=coords, betas=coords.copy(), loss=grid, num_samples=len(ids))
