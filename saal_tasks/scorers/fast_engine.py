"""Exact per-sample SAAL at the cost of a few batched passes: :class:`FastExactEngine`.

Per chunk of ``B`` samples the engine runs:

1. **One clean forward pass** with the graph kept. ``task.pseudo_label`` runs first; the
   model's top-level forward is memoised for that call (with the graph) and handed back, with
   its graph, when ``task.loss_per_unit`` calls the model again with the same input objects.
   A task that calls its model differently simply gets a second forward pass; a task that
   shares the pseudo-label pass with its loss itself is handled too (every layer call made
   with gradients enabled is recorded, and the backward pass tells which reach the loss).
2. **One backward pass** for the summed per-sample objectives, asking only for the gradients at
   the outputs of the layers with trainable parameters (``D``), never for weight gradients.
   Because a sample's loss does not depend on the other samples of the batch (the task
   contract; batch norm in eval mode), ``D`` restricted to sample ``b`` is sample ``b``'s own.
3. **Per-layer per-sample gradients** from the recorded inputs and ``D``
   (:mod:`.layer_factors`): the low-rank route for SAM (``q = 2``) where it is cheaper, the
   dense route elsewhere, closed forms for batch norm. Their norm terms add up to each
   sample's ε scale (:mod:`.perturbation_rules`).
4. **One perturbed forward pass** in which every such layer computes its output with each
   sample's own ``θ + ε_b`` (its forward is swapped for the duration of the pass).

The weights are never written to, so they are bit-identical afterwards, and ``.grad`` is
untouched. Memory grows with ``chunk_size`` (activations, ``D``, low-rank factors, and dense
per-sample gradients up to ``max_kept_mb``), never with the pool.

Models with a trainable parameter outside ``nn.Linear``, ``nn.Conv2d`` (``groups = 1``, zero
padding), eval-mode ``nn.BatchNorm{1,2,3}d``, affine ``nn.GroupNorm``, mmdet's ``L2Norm``
(SSD's VGG16 neck) and mmcv's ``Scale`` (FCOS's and ATSS's box branches), parameters shared
between modules, layers
whose activations lack the leading sample dimension, and perturbations other than
``SAMPerturbation``/``ASAMPerturbation`` are scored by the ``fallback`` engine (exact), with one
log line saying why. SAM with ``q != 2`` and ASAM use the dense route everywhere (exact, slower).

A parameter can also reach the loss around its module's calls, where no hook sees it: a cosine
head's ``F.normalize(self.fc.weight)`` in the parent's forward, ``F.linear(z, self.fc.weight)``,
a weight tied into a module that does not register it, ``module.forward(x)`` called directly.
Its ε would be wrong and its perturbed value never used, with no error, so the first chunk of
every model structure (:func:`.engine_guard.structure_key`; checked once, remembered) is checked
against autograd (:class:`.engine_guard.FactorisationCheck`): the same backward pass also returns
every trainable parameter's batch gradient, which must equal the chunk sum of the per-sample
gradients the recorded calls imply (each layer's forward re-run on its recorded inputs, ``D``
back-propagated through it alone; rtol 1e-9 in float64, 1e-4 in float32), and the perturbed pass
runs under a torch-function mode that notes any operation on a trainable parameter outside a
hooked call of its layer (reads whose gradient is zero at ``θ`` included). A failure falls back
like the cases above, naming the parameters, once per structure. The check writes no weight and
no ``.grad``, and leaves the scores of models that pass bit-identical.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.profiler import record_function

from ..core.perturbation import Perturbation
from ..core.task import BaseTask
from ..registry import ENGINES
from ..core.units import reduce_units
from .engine_guard import FactorisationCheck, FactorisationMismatch, Verdicts, structure_key
from .engines import EngineOutput, PerturbedLossEngine
from .layer_factors import (BatchNormGradient, BatchNormLayer, ChannelLayer, DenseGradient,
                            GroupNormGradient, GroupNormLayer, L2NormGradient, L2NormLayer,
                            LayerGradient, LowRankGradient, PatchLayer, ScaleGradient,
                            ScaleLayer, UnsupportedLayer, layer_for)
from .perturbation_rules import PerturbationRule, rule_for

Layer = PatchLayer | ChannelLayer

#: The per-sample gradient of each channel-wise layer without running statistics
#: (route ``'channel_scale'``).
CHANNEL_GRADIENTS: dict[type, Callable[..., LayerGradient]] = {
    L2NormLayer: L2NormGradient, GroupNormLayer: GroupNormGradient, ScaleLayer: ScaleGradient}

#: Accepted values of ``layer_method``: how conv/linear layers get their per-sample gradients.
LAYER_METHODS = ('auto', 'low_rank', 'dense')

#: Per layer index: the inputs ``[B, ...]`` and output gradients of its calls that reach the loss.
LayerCalls = dict[int, tuple[list[Tensor], list[Tensor]]]


def plan_layers(model: nn.Module) -> tuple[list[Layer], list[str]]:
    """The per-layer adapters of a model's trainable parameters, and why any are unsupported.

    Args:
        model: The network.

    Returns:
        ``(layers, problems)``: one adapter per module that owns trainable parameters, and one
        message per obstacle (empty when the whole model is supported).
    """
    layers: list[Layer] = []
    problems: list[str] = []
    owners: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        for n, p in own:
            if id(p) in owners:
                problems.append(f'parameter {name}.{n} is shared with {owners[id(p)]}')
            owners[id(p)] = f'{name}.{n}'
        if 'forward' in module.__dict__:
            problems.append(f'{name or "model"} has an instance-level forward')
            continue
        try:
            layer = layer_for(module, name)
        except UnsupportedLayer as err:
            problems.append(str(err))
            continue
        if layer is None:
            problems.append(f'{name or "model"} ({type(module).__name__}) has trainable '
                            f'parameters and no per-sample rule')
            continue
        layers.append(layer)
    return layers, problems


# --------------------------------------------------------------------------- recording
class _Recorder:
    """Forward hooks that record, per planned layer and call, its input and output edge.

    Only calls made with gradients enabled are recorded: those are the ones whose graph the
    backward pass walks. ``batch`` is the chunk's sample count, checked on every call.
    """

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self.batch = 0
        self.records: dict[int, list[tuple[Tensor, int, Any]]] = {}
        self._handles: list[Any] = []

    @contextmanager
    def hooked(self) -> Iterator[None]:
        """Record while inside the block."""
        try:
            for i, layer in enumerate(self.layers):
                self._handles.append(layer.module.register_forward_hook(self._hook(i)))
            yield
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()

    def _hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not torch.is_grad_enabled():
                return
            x = args[0] if args else None
            layer = self.layers[index]
            if not (isinstance(x, Tensor) and isinstance(output, Tensor)):
                raise UnsupportedLayer(f'{layer.name} was called without a tensor input/output')
            if x.shape[0] != self.batch or output.shape[0] != self.batch:
                raise UnsupportedLayer(
                    f'{layer.name} sees {x.shape[0]} rows for a chunk of {self.batch} samples '
                    f'(its activations have no leading per-sample dimension)')
            if isinstance(layer, BatchNormLayer):
                layer.check_mode()
            if output.requires_grad:
                # The edge, not the tensor: an in-place op after the layer (ReLU(inplace=True))
                # rebinds the tensor to a new node, the edge still names the layer's output.
                self.records.setdefault(index, []).append(
                    (x, x._version, get_gradient_edge(output)))
        return hook

    def take(self) -> dict[int, list[tuple[Tensor, int, Any]]]:
        """Hand over the records so far and start empty."""
        records, self.records = self.records, {}
        return records


def _tensor_tree(out: Any) -> bool:
    if isinstance(out, Tensor):
        return True
    if isinstance(out, (list, tuple)):
        return all(_tensor_tree(o) for o in out)
    if isinstance(out, dict):
        return all(_tensor_tree(o) for o in out.values())
    return False


def _detach(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.detach()
    if isinstance(out, dict):
        return {k: _detach(v) for k, v in out.items()}
    return type(out)(_detach(o) for o in out)


def _versions(args: tuple, kwargs: dict) -> list[int]:
    return [a._version for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]


class _ForwardMemo:
    """Swaps the model's top-level forward so that the loss pass can reuse the pseudo-label pass.

    Phase ``'pseudo'``: the first call runs with gradients enabled (whatever the caller's mode)
    and is cached; the caller gets detached outputs, so pseudo-labels carry no graph. Phase
    ``'loss'``: a call with the very same argument objects, unmodified, returns the cached
    outputs with their graph, once. Any other call is an ordinary forward pass.
    """

    def __init__(self, model: nn.Module, recorder: _Recorder) -> None:
        self.model = model
        self.recorder = recorder
        self.phase: str | None = None
        self._cache: tuple[tuple, dict, list[int], Any] | None = None
        self._real: Callable = model.forward

    @contextmanager
    def installed(self) -> Iterator['_ForwardMemo']:
        """The memoising forward is in place inside the block."""
        with _patched_forwards({self.model: self._forward}):
            try:
                yield self
            finally:
                self._cache = None

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.phase == 'pseudo' and self._cache is None:
            self.recorder.take()
            with torch.enable_grad():
                out = self._real(*args, **kwargs)
            if _tensor_tree(out):
                self._cache = (args, kwargs, _versions(args, kwargs), out)
                return _detach(out)
            # Outputs we cannot detach safely: forget this pass and give the caller a plain one.
            self.recorder.take()
            with torch.no_grad():
                return self._real(*args, **kwargs)
        if self.phase == 'loss' and self._cache is not None:
            c_args, c_kwargs, versions, out = self._cache
            same = (len(args) == len(c_args) and all(a is b for a, b in zip(args, c_args))
                    and kwargs.keys() == c_kwargs.keys()
                    and all(kwargs[k] is c_kwargs[k] for k in kwargs)
                    and _versions(args, kwargs) == versions)
            self._cache = None
            if same:
                return out
        return self._real(*args, **kwargs)


_MISSING = object()


@contextmanager
def _patched_forwards(forwards: dict[nn.Module, Callable]) -> Iterator[None]:
    """Replace modules' forwards (instance attributes) inside the block; always restored."""
    saved: dict[nn.Module, Any] = {}
    try:
        for module, fn in forwards.items():
            saved[module] = module.__dict__.get('forward', _MISSING)
            module.forward = fn
        yield
    finally:
        for module, previous in saved.items():
            if previous is _MISSING:
                del module.forward
            else:
                module.forward = previous


class _Workspace:
    """Large buffers reused from chunk to chunk, for one scoring run.

    Per-sample weight gradients run to hundreds of megabytes; allocating them afresh for every
    chunk costs page faults that, measured on CPU, take longer than filling them.
    """

    def __init__(self) -> None:
        self._buffers: dict[Any, Tensor] = {}

    def get(self, key: Any, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A ``shape`` view of the buffer ``key`` (created or regrown as needed)."""
        buf = self._buffers.get(key)
        if (buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]
                or buf.dtype != like.dtype or buf.device != like.device):
            buf = like.new_empty(shape)
            self._buffers[key] = buf
        return buf[:shape[0]]

    def clear(self) -> None:
        self._buffers.clear()


# --------------------------------------------------------------------------- the engine
@ENGINES.register_module()
class FastExactEngine(PerturbedLossEngine):
    """Exact per-sample SAAL from per-layer gradient factors (see the module docstring).

    Args:
        chunk_size: Samples per chunk (one clean, one backward, one perturbed pass each).
            Memory grows linearly with it.
        layer_method: ``'auto'`` picks per conv/linear layer the cheaper of ``'low_rank'``
            (SAM with ``q = 2`` only) and ``'dense'``; the other two force one route (tests).
        max_kept_mb: Budget for dense per-sample gradients kept between the norm and the
            perturbed pass; layers beyond it form theirs a second time instead (the ones with
            the fewest positions first, where that is cheapest).
        fallback: Engine config for models or perturbations without per-layer rules.
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'fallback': 'ENGINES'}

    def __init__(self, chunk_size: int = 32, layer_method: str = 'auto',
                 max_kept_mb: float = 512.0, fallback: dict | None = None) -> None:
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
        if layer_method not in LAYER_METHODS:
            raise ValueError(f'layer_method must be one of {LAYER_METHODS}, got {layer_method!r}')
        if max_kept_mb < 0:
            raise ValueError(f'max_kept_mb must be >= 0, got {max_kept_mb}')
        self.chunk_size = chunk_size
        self.layer_method = layer_method
        self.max_kept_bytes = int(max_kept_mb * 2**20)
        self.fallback_cfg = dict(fallback or dict(type='ReferenceEngine'))
        #: Routes of the last chunk: {'low_rank': n, 'dense': n, 'batch_norm': n,
        #: 'channel_scale': n} (for logs).
        self.last_routes: dict[str, int] = {}
        #: Why the last run used the fallback engine, or ``None`` if it did not.
        self.fallback_reason: str | None = None
        #: Whether the last run checked the factorisation against autograd (first chunk).
        self.checked = False
        self._workspace = _Workspace()
        # Outcomes of the factorisation check per model structure (engine_guard).
        self._verdicts = Verdicts()

    # ------------------------------------------------------------------ contract
    def run(self, task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
            perturbation: Perturbation, objective_reduction: str) -> EngineOutput:
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        self.fallback_reason = None
        self.checked = False
        rule = rule_for(perturbation)
        layers, problems = plan_layers(model)
        if rule is None:
            problems.insert(0, f'no per-layer rule for {perturbation!r}')
        if self.layer_method == 'low_rank' and rule is not None and not rule.low_rank:
            raise ValueError(f"layer_method='low_rank' needs SAMPerturbation with q=2, got "
                             f"{perturbation!r}: use 'auto' or 'dense'")
        if problems:
            yield from self._fall_back(task, model, sample_ids, perturbation,
                                       objective_reduction, '; '.join(problems[:3]))
            return
        # The factorisation check: on the first chunk of a structure not seen before.
        key = structure_key(task, model)
        known, reason = self._verdicts.get(key, model)
        if reason is not None:
            # Said once when found; later runs of the same structure fall back quietly.
            yield from self._fall_back(task, model, sample_ids, perturbation,
                                       objective_reduction, reason, level=logging.DEBUG)
            return
        check = None if known else FactorisationCheck(model, layers)
        self.checked = check is not None
        done = 0
        self._workspace = _Workspace()
        try:
            for ids, inputs in task.pool_batches(sample_ids, self.chunk_size):
                try:
                    clean, perturbed, targets = self._chunk(task, model, inputs, len(ids), layers,
                                                              rule, objective_reduction, check)
                except UnsupportedLayer as err:
                    self._workspace.clear()
                    if isinstance(err, FactorisationMismatch):
                        self._verdicts.put(key, model, str(err))
                    yield from self._fall_back(task, model, sample_ids[done:], perturbation,
                                               objective_reduction, str(err))
                    return
                if check is not None:
                    self._verdicts.put(key, model, None)
                    check = None
                if done == 0:
                    checked = ', factorisation checked against autograd' if self.checked else ''
                    print_log(f'FastExactEngine: {perturbation!r}, chunks of '
                              f'{self.chunk_size}, layers {self.last_routes}{checked}',
                              logger='current')
                done += len(ids)
                yield ids, clean, perturbed, targets
        finally:
            self._workspace.clear()

    def _fall_back(self, task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
                   perturbation: Perturbation, objective_reduction: str, reason: str,
                   level: int = logging.WARNING) -> EngineOutput:
        # Our registry's scope: a task may score inside another default scope (mmdet's),
        # where mmengine would first search that scope's registry tree and warn.
        with DefaultScope.overwrite_default_scope(ENGINES.scope):
            engine = ENGINES.build(self.fallback_cfg)
        self.fallback_reason = reason
        print_log(f'FastExactEngine: scoring with {type(engine).__name__} instead (exact, '
                  f'slower): {reason}', logger='current', level=level)
        yield from engine.run(task, model, sample_ids, perturbation, objective_reduction)

    # ------------------------------------------------------------------ one chunk
    def _chunk(self, task: BaseTask, model: nn.Module, inputs: Any, batch: int,
               layers: list[Layer], rule: PerturbationRule, objective_reduction: str,
               check: FactorisationCheck | None = None) -> tuple[Tensor, Tensor, Any]:
        """Clean and perturbed unit losses ``[B, *U]`` of one chunk, and its pseudo-labels.

        Args:
            check: Test the factorisation against autograd on this chunk (engine_guard).

        Raises:
            UnsupportedLayer: The chunk cannot be scored exactly this way
                (:class:`FactorisationMismatch` where the check failed).
        """
        recorder = _Recorder(layers)
        recorder.batch = batch
        memo = _ForwardMemo(model, recorder)
        with recorder.hooked(), memo.installed(), record_function('fast_exact.clean_forward'):
            memo.phase = 'pseudo'
            with torch.no_grad():
                targets = task.pseudo_label(model, inputs)
            memo.phase = 'loss'
            pseudo_records = recorder.take()
            with torch.enable_grad():
                clean = task.loss_per_unit(model, inputs, targets)
            records = recorder.take()
            memo.phase = None
        # Calls from both phases: the loss may rest on the pseudo-label pass (the memo, or a
        # task sharing its own forward). Calls whose outputs do not reach the loss get no
        # gradient in the backward pass and drop out there.
        for i, calls in pseudo_records.items():
            records.setdefault(i, [])[:0] = calls

        with record_function('fast_exact.backward'):
            layer_calls, param_grads = self._backward(
                layers, records, clean, objective_reduction,
                check.params if check is not None else [])
        if check is not None:
            check.check_gradients(layer_calls or {}, param_grads)
        gradients = self._layer_gradients(layers, layer_calls, rule)
        # No graph from here on: the per-sample quantities involve the (grad-requiring)
        # weights, and a graph would keep every temporary alive.
        with torch.no_grad():
            forwards = {}
            if gradients:
                with record_function('fast_exact.norm'):
                    total = sum(g.norm_terms(rule) for g in gradients.values())
                    scale = rule.scale(total)
                    forwards = {layers[i].module: g.perturbed_forward(rule, scale)
                                for i, g in gradients.items()}
            watch = check.reads() if check is not None else None
            with _patched_forwards(forwards), (watch.watching() if watch else nullcontext()), \
                    record_function('fast_exact.perturbed_forward'):
                perturbed = task.loss_per_unit(model, inputs, targets)
        if watch is not None:
            FactorisationCheck.check_reads(watch)
        return clean.detach(), perturbed.detach(), targets

    def _backward(self, layers: list[Layer], records: dict[int, list], clean: Tensor,
                  objective_reduction: str,
                  params: list[nn.Parameter]) -> tuple[LayerCalls | None, list[Tensor | None]]:
        """One backward pass to the recorded layer outputs (and to ``params``, if any).

        Args:
            layers: The layer adapters.
            records: Per layer index, its recorded calls ``(input, input version, edge)``.
            clean: The chunk's unit losses ``[B, *U]``, with their graph.
            objective_reduction: How a sample's units reduce to its objective.
            params: Parameters whose batch gradients to return as well (the factorisation
                check's; asked in the same pass, so the output gradients are unchanged).

        Returns:
            ``(calls, grads)``: per layer, the inputs and output gradients of its calls that
            reach the loss (``None`` where nothing was recorded or the loss has no graph), and
            the gradient of the summed objective for each of ``params`` (``None`` if unused).
        """
        flat = [(i, x, version, edge) for i, calls in records.items()
                for x, version, edge in calls]
        no_grads: list[Tensor | None] = [None] * len(params)
        if not clean.requires_grad or not (flat or params):
            return None, no_grads
        # Summed over samples: each sample's part of D is its own gradient (see module doc).
        objective = reduce_units(clean, objective_reduction).sum()
        wanted = [e for *_, e in flat] + list(params)
        grads = torch.autograd.grad(objective, wanted, allow_unused=True)
        deltas = grads[:len(flat)]
        param_grads: list[Tensor | None] = list(grads[len(flat):])
        if not flat:
            return None, param_grads
        per_layer: LayerCalls = {}
        for (i, x, version, _), delta in zip(flat, deltas):
            if x._version != version:
                raise UnsupportedLayer(f'the input of {layers[i].name} was modified in place '
                                       f'after the layer used it')
            if delta is None:  # this call's output does not reach the loss
                continue
            xs, ds = per_layer.setdefault(i, ([], []))
            xs.append(x.detach())
            ds.append(delta)
        return per_layer, param_grads

    def _layer_gradients(self, layers: list[Layer], per_layer: LayerCalls | None,
                         rule: PerturbationRule) -> dict[int, LayerGradient]:
        """Each layer's per-sample gradient from its calls' inputs and output gradients."""
        if per_layer is None:
            self.last_routes = {}
            return {}
        routes = {'low_rank': 0, 'dense': 0, 'batch_norm': 0, 'channel_scale': 0}
        gradients: dict[int, LayerGradient] = {}
        dense: list[tuple[int, PatchLayer, list[Tensor], list[Tensor], int]] = []
        for i, (xs, ds) in per_layer.items():
            layer = layers[i]
            if isinstance(layer, BatchNormLayer):
                gradients[i] = BatchNormGradient(layer, xs, ds)
                routes['batch_norm'] += 1
                continue
            if isinstance(layer, (L2NormLayer, GroupNormLayer, ScaleLayer)):
                gradients[i] = CHANNEL_GRADIENTS[type(layer)](layer, xs, ds)
                routes['channel_scale'] += 1
                continue
            d_mats = [layer.delta_matrix(d) for d in ds]
            if self._use_low_rank(layer, xs, rule):
                gradients[i] = LowRankGradient(layer, xs, d_mats)
                routes['low_rank'] += 1
            else:
                dense.append((i, layer, xs, d_mats, sum(d.shape[2] for d in d_mats)))
                routes['dense'] += 1
        # Keep dense gradients where forming them again would cost most per byte kept (the
        # most positions); the others are formed a second time in the perturbed pass.
        budget = self.max_kept_bytes
        for i, layer, xs, d_mats, _ in sorted(dense, key=lambda item: -item[4]):
            shape = (d_mats[0].shape[0], layer.out_features, layer.in_features)
            size = math.prod(shape) * d_mats[0].element_size()
            keep = size <= budget
            budget -= size if keep else 0
            # Kept gradients own a buffer; the others share one per shape (used one at a time).
            key = ('kept', i) if keep else ('scratch', shape[1:])
            gradients[i] = DenseGradient(
                layer, xs, d_mats, keep,
                lambda key=key, shape=shape, like=d_mats[0]: self._workspace.get(key, shape, like))
        self.last_routes = routes
        return gradients

    def _use_low_rank(self, layer: PatchLayer, inputs: list[Tensor],
                      rule: PerturbationRule) -> bool:
        if not rule.low_rank or self.layer_method == 'dense':
            return False
        if self.layer_method == 'low_rank':
            return True
        calls = len(inputs)
        # The low-rank products pair every call with every other one.
        low_rank = calls * sum(layer.low_rank_cost(x) for x in inputs)
        return low_rank < sum(layer.dense_cost(x) for x in inputs)


__all__ = ['FastExactEngine', 'LAYER_METHODS', 'plan_layers']
