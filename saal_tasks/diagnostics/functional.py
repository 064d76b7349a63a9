"""The task protocol as pure functions of the weights, and per-sample mapping over a pool.

Diagnostics need per-sample gradients, Hessian-vector products and forwards at perturbed
weights. They get all of them from the task's own ``loss_per_unit`` and ``pseudo_label``:
the task's methods are wrapped in a module so that ``torch.func.functional_call`` can swap
the weights, which works for any task without the task knowing about ``torch.func``.

A *sample function* ``fn(inputs, targets, *extra)`` computes something for one sample given
as a batch of one (``inputs`` and ``targets`` as :meth:`BaseTask.pool_batches` and the target
function give them for a single id). :func:`sample_chunks` runs it over a pool: with
``vmap`` on chunks when the inputs and targets are tensors, one sample at a time otherwise.
Both paths evaluate the same function, so they agree to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..core.task import BaseTask

Params = dict[str, torch.Tensor]
#: ``targets_fn(task, model, ids [B], inputs) -> targets`` for ``loss_per_unit``.
TargetFn = Callable[[BaseTask, nn.Module, np.ndarray, Any], Any]


class _TaskCall(nn.Module):
    """``forward(*args) = method(model, *args)`` so that ``functional_call`` swaps weights."""

    def __init__(self, model: nn.Module, method: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: Any) -> Any:
        return self.method(self.model, *args)


@dataclass
class WeightFunctions:
    """The task's loss and pseudo-labels as functions of explicit weights.

    Attributes:
        params: The model's trainable weights θ (detached, shared storage), keyed as the
            functions below expect them.
        loss_call: Wrapper module of ``task.loss_per_unit``.
        label_call: Wrapper module of ``task.pseudo_label``.
    """

    params: Params
    loss_call: _TaskCall
    label_call: _TaskCall

    def loss_units(self, params: Params, inputs: Any, targets: Any) -> torch.Tensor:
        """``task.loss_per_unit`` at weights ``params``, shape ``[B, *U]``."""
        return functional_call(self.loss_call, params, (inputs, targets))

    def pseudo_label(self, params: Params, inputs: Any) -> Any:
        """``task.pseudo_label`` at weights ``params`` (no gradient flows through it)."""
        return functional_call(self.label_call, params, (inputs,))

    def shifted(self, delta: Params, scale: float | torch.Tensor = 1.0) -> Params:
        """``θ + scale · delta`` for every trainable weight."""
        return {k: p + scale * delta[k] for k, p in self.params.items()}


def weight_functions(task: BaseTask, model: nn.Module) -> WeightFunctions:
    """Wrap ``task.loss_per_unit`` and ``task.pseudo_label`` of ``model`` as weight functions.

    Only trainable parameters become explicit; buffers (BatchNorm statistics) stay those of
    ``model``, which must already be in eval mode so samples do not interact.
    """
    loss_call = _TaskCall(model, task.loss_per_unit)
    label_call = _TaskCall(model, task.pseudo_label)
    params = {f'model.{n}': p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return WeightFunctions(params=params, loss_call=loss_call, label_call=label_call)


def pseudo_targets(task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
                   inputs: Any) -> Any:
    """Targets = the model's pseudo-labels (what the SAAL score uses)."""
    with torch.no_grad():
        return task.pseudo_label(model, inputs)


def true_targets(task: BaseTask, model: nn.Module, sample_ids: np.ndarray, inputs: Any) -> Any:
    """Targets = the ground truth (simulated oracle only)."""
    return task.ground_truth_targets(sample_ids, inputs)


def tree_map(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """Apply ``fn`` to every tensor in nested tuples, lists and dicts (other leaves pass)."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(tree_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: tree_map(fn, v) for k, v in value.items()}
    return value


def _is_tensor_tree(value: Any) -> bool:
    if torch.is_tensor(value):
        return True
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(_is_tensor_tree(v) for v in value)
    if isinstance(value, dict):
        return len(value) > 0 and all(_is_tensor_tree(v) for v in value.values())
    return False


#: ``mapper(fn, *extra)`` evaluates ``fn(inputs_1, targets_1, *extra_1)`` for every sample of
#: a chunk and stacks the outputs along a leading ``[B]`` dimension.
Mapper = Callable[..., Any]


def sample_chunks(task: BaseTask, model: nn.Module, sample_ids: np.ndarray, chunk_size: int,
                  targets_fn: TargetFn, vectorize: bool = True
                  ) -> Iterator[tuple[np.ndarray, Any, Any, Mapper]]:
    """Iterate a pool in chunks with a per-sample mapper for each chunk.

    Args:
        task: Task adapter.
        model: Model in eval mode (targets are computed with it).
        sample_ids: Ids to iterate, shape ``[N]``; chunks keep this order.
        chunk_size: Samples per ``vmap`` chunk.
        targets_fn: Targets of a batch (:func:`pseudo_targets` or :func:`true_targets`).
        vectorize: Use ``vmap`` when inputs and targets are tensors; ``False`` forces one
            sample at a time (the fallback for tasks with structured inputs).

    Yields:
        ``(ids [B], inputs, targets, mapper)`` per chunk.
    """
    for ids, inputs in task.pool_batches(np.asarray(sample_ids, dtype=np.int64),
                                         chunk_size if vectorize else 1):
        targets = targets_fn(task, model, ids, inputs)
        if len(ids) == 1 or (torch.is_tensor(inputs) and _is_tensor_tree(targets)):
            yield ids, inputs, targets, make_mapper(inputs, targets, len(ids))
        else:
            # Structured inputs cannot be vmapped: fall back to batches of one.
            yield from sample_chunks(task, model, ids, 1, targets_fn, vectorize=False)


def make_mapper(inputs: Any, targets: Any, batch_size: int) -> Mapper:
    """The per-sample mapper of one chunk: ``vmap`` for several samples, a call for one.

    Args:
        inputs: The chunk's inputs (tensors ``[B, ...]`` when ``batch_size > 1``).
        targets: The chunk's targets (tensors ``[B, ...]`` when ``batch_size > 1``).
        batch_size: Samples in the chunk.
    """
    if batch_size == 1:
        return _single_mapper(inputs, targets)
    if not (torch.is_tensor(inputs) and _is_tensor_tree(targets)):
        raise TypeError(f'per-sample vmap needs tensor inputs and targets, got '
                        f'{type(inputs).__name__}/{type(targets).__name__}: use vectorize=False')
    return _vmap_mapper(inputs, targets)


def _single_mapper(inputs: Any, targets: Any) -> Mapper:
    def mapper(fn: Callable[..., Any], *extra: Any) -> Any:
        squeezed = tree_map(lambda t: t[0], extra)
        return tree_map(lambda t: t.unsqueeze(0), fn(inputs, targets, *squeezed))
    return mapper


def _vmap_mapper(inputs: torch.Tensor, targets: Any) -> Mapper:
    def mapper(fn: Callable[..., Any], *extra: Any) -> Any:
        def one(x: torch.Tensor, y: Any, *e: Any) -> Any:
            return fn(x.unsqueeze(0), tree_map(lambda t: t.unsqueeze(0), y), *e)
        return vmap(one)(inputs, targets, *extra)
    return mapper


def per_sample_dot(a: Params, b: Params) -> torch.Tensor:
    """``<a_i, b_i>`` summed over all weights, per sample: ``[B]`` from ``[B, *shape]`` each."""
    return sum((a[k] * b[k]).reshape(a[k].shape[0], -1).sum(dim=1) for k in a)


def per_sample_scale(a: Params, scale: torch.Tensor) -> Params:
    """Multiply each sample's slice of every weight by ``scale [B]``."""
    return {k: v * scale.reshape(-1, *([1] * (v.dim() - 1))) for k, v in a.items()}
