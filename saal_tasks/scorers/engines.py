"""Engines that compute clean and perturbed per-unit losses for the sharpness scorer.

All engines yield, batch after batch, ``(ids [B], clean [B, *U], perturbed [B, *U], targets)``
where ``perturbed`` is the unit loss under ``θ + ε``, ε comes from the pseudo-label loss, and
``targets`` are the pseudo-labels both losses were computed against (segmentation reads them
back as pixel-wise pseudo-label maps for region impurity):

* :class:`ReferenceEngine`: one sample at a time, ε from that sample's gradient, weights
  perturbed in place and restored by copy (bit-exact, no model copies). The ground truth the
  others are tested against.
* :class:`BatchwiseEngine`: one ε for each group of ``group_size`` samples, from the group's
  mean loss (paper Table 2). An approximation: a sample's score depends on its group.
* :class:`VectorizedEngine`: exact per-sample ε like the reference, computed for a chunk of
  samples at once with ``torch.func`` (per-sample gradients by ``vmap(grad)``, per-sample
  perturbed forwards by ``vmap`` over the weights). Memory grows as ``chunk_size × |θ|``.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..core.perturbation import Perturbation
from ..core.task import BaseTask
from ..registry import ENGINES
from ..core.units import reduce_units

EngineOutput = Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, Any]]


class PerturbedLossEngine:
    """Base class of the engines; see the module docstring for the contract."""

    def run(self, task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
            perturbation: Perturbation, objective_reduction: str) -> EngineOutput:
        """Yield ``(ids, clean, perturbed, targets)`` batches over ``sample_ids`` in order.

        Args:
            task: Task adapter.
            model: Model in eval mode; its parameters are bit-identical after the generator is
                exhausted or closed.
            sample_ids: Ids to score, shape ``[N]``.
            perturbation: Maps gradients to ε.
            objective_reduction: How a sample's unit losses reduce to the scalar loss whose
                gradient defines ε (``'mean'`` or ``'sum'``; SAM's and ASAM's ε are invariant
                to a positive rescaling of the loss, so for one sample both give the same ε).
        """
        raise NotImplementedError


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


@ENGINES.register_module()
class BatchwiseEngine(PerturbedLossEngine):
    """One ε per group of ``group_size`` samples, from the group's mean loss (approximate).

    Args:
        group_size: Samples sharing one perturbation (the paper's batch size B).
    """

    def __init__(self, group_size: int = 100) -> None:
        if group_size < 1:
            raise ValueError(f'group_size must be >= 1, got {group_size}')
        self.group_size = group_size

    def run(self, task, model, sample_ids, perturbation, objective_reduction):
        named = _trainable(model)
        params = [p for _, p in named]
        # One clone of the weights per scoring call (not per sample): restoring by copy is
        # exact, whereas subtracting ε again would leave rounding errors in the weights.
        originals = [p.detach().clone() for p in params]
        try:
            for ids, inputs in task.pool_batches(sample_ids, self.group_size):
                targets, clean = task.pseudo_label_and_loss(model, inputs)
                objective = reduce_units(clean, objective_reduction).mean()
                grads = torch.autograd.grad(objective, params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
                eps = perturbation.epsilon(grads, originals)
                with torch.no_grad():
                    try:
                        for p, e in zip(params, eps):
                            p.add_(e)
                        perturbed = task.loss_per_unit(model, inputs, targets)
                    finally:
                        for p, o in zip(params, originals):
                            p.copy_(o)
                yield ids, clean.detach(), perturbed, targets
        finally:
            with torch.no_grad():
                for p, o in zip(params, originals):
                    p.copy_(o)


@ENGINES.register_module()
class ReferenceEngine(BatchwiseEngine):
    """Exact per-sample SAAL, one sample at a time (a batch-wise group of one)."""

    def __init__(self) -> None:
        super().__init__(group_size=1)


class _TaskLoss(nn.Module):
    """``forward(inputs, targets) = task.loss_per_unit(model, inputs, targets)``.

    Wrapping the task's loss in a module lets ``functional_call`` swap the wrapped model's
    weights for any task, without the task knowing about ``torch.func``.
    """

    def __init__(self, task: BaseTask, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.task.loss_per_unit(self.model, inputs, targets)


@ENGINES.register_module()
class VectorizedEngine(PerturbedLossEngine):
    """Exact per-sample SAAL for a chunk of samples at once with ``torch.func``.

    Requires inputs and pseudo-labels that are tensors with a leading sample dimension and a
    model whose forward works under ``vmap`` (no in-place ops on inputs, no ``.item()``).

    Args:
        chunk_size: Samples per chunk; bounds memory at about ``3 × chunk_size × |θ|``.
    """

    def __init__(self, chunk_size: int = 64) -> None:
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
        self.chunk_size = chunk_size

    def run(self, task, model, sample_ids, perturbation, objective_reduction):
        wrapper = _TaskLoss(task, model)
        names = [f'model.{n}' for n, _ in _trainable(model)]
        params = {k: p.detach() for k, (_, p) in zip(names, _trainable(model))}

        def sample_objective(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            units = functional_call(wrapper, p, (x.unsqueeze(0), y.unsqueeze(0)))
            return reduce_units(units, objective_reduction)[0]

        def perturbed_units(e: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            shifted = {k: params[k] + e[k] for k in params}
            return functional_call(wrapper, shifted, (x.unsqueeze(0), y.unsqueeze(0)))[0]

        per_sample_grad = vmap(grad(sample_objective), in_dims=(None, 0, 0))
        per_sample_perturbed = vmap(perturbed_units, in_dims=(0, 0, 0))
        for ids, inputs in task.pool_batches(sample_ids, self.chunk_size):
            with torch.no_grad():
                targets = task.pseudo_label(model, inputs) if torch.is_tensor(inputs) else None
                if not (torch.is_tensor(inputs) and torch.is_tensor(targets)):
                    raise TypeError(
                        f'VectorizedEngine needs tensor inputs and pseudo-labels; '
                        f'{type(task).__name__} gives {type(inputs).__name__}/'
                        f'{type(targets).__name__}: use ReferenceEngine for this task')
                clean = task.loss_per_unit(model, inputs, targets)
                grads = per_sample_grad(params, inputs, targets)
                eps = perturbation.epsilon([grads[k] for k in names],
                                           [params[k] for k in names], batched=True)
                perturbed = per_sample_perturbed(dict(zip(names, eps)), inputs, targets)
            yield ids, clean, perturbed, targets
