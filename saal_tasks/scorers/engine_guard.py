"""A runtime check of :class:`~.fast_engine.FastExactEngine`'s per-layer factorisation.

The engine sees a trainable parameter only through the calls of the module that owns it: it
records each call's input and output gradient ``D`` in the clean pass and swaps the module's
forward in the perturbed pass. A parameter that reaches the loss any other way — read in a
parent's forward (a cosine head's ``F.normalize(self.fc.weight)``, ``F.linear(z,
self.fc.weight)``), tied into a module that does not register it, a module run through
``module.forward(x)`` (no hooks), a task's loss reading weights — gets a wrong ε and keeps its
clean value in the perturbed pass, with no error anywhere. :class:`FactorisationCheck` catches
these on one chunk, against autograd, with two tests:

* **gradients** (clean pass): the chunk's batch gradient of the summed objective, from
  autograd, must equal for every trainable parameter the sum over samples and calls of the
  per-sample gradients the engine's recorded factors imply (:func:`implied_batch_gradients`).
  A use the engine does not see adds to the first and not to the second.
* **reads** (perturbed pass): no torch operation may take a trainable parameter as an argument
  outside a hooked call of the layer the engine perturbs it in (:class:`ParameterReads`). Such
  a read sees ``θ`` here and ``θ + ε`` in the reference engine, even where its gradient is zero
  at ``θ`` (a dead ReLU, ``.data``, ``.detach()``) and the first test cannot see it.

What it cannot see: uses that differ between chunks (data-dependent control flow), a sample's
loss depending on other samples' rows (the sums agree; the task contract and the batch-norm mode
check cover that), and the arithmetic of the engine's routes (tested against autograd in
``tests/test_fast_engine.py``). :func:`structure_key` says when a model needs the check again.
"""
from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .layer_factors import ChannelLayer, PatchLayer, UnsupportedLayer

Layer = PatchLayer | ChannelLayer

#: Relative tolerance of the gradient test per dtype: a few hundred roundings of the dtype
#: (the two sides sum the same products in different orders); other dtypes get 1e-2.
GRADIENT_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}

#: A parameter's tolerance never falls below this share of the whole gradient's norm (times the
#: rtol): a gradient that small moves ε by less than the rtol, and its rounding noise may be
#: large relative to itself where its sum cancels.
NORM_FLOOR = 1e-3

#: Parameters named in a message before "+N more".
NAMED = 5

# Tensor-valued operations that read only a tensor's metadata (shape, dtype, device): a model
# calling them on a weight is not using its values.
_METADATA_ONLY = frozenset(
    [getattr(torch, n) for n in ('zeros_like', 'ones_like', 'empty_like', 'full_like')]
    + [getattr(torch.Tensor, n) for n in ('new_zeros', 'new_ones', 'new_empty', 'new_full')])


class FactorisationMismatch(UnsupportedLayer):
    """A model uses a trainable parameter in a way the per-layer factorisation does not see."""


def structure_key(task: Any, model: nn.Module) -> tuple:
    """What the check's verdict depends on, cheap to compute: equal keys, same verdict.

    Args:
        task: The task adapter (its loss may read parameters too).
        model: The network.

    Returns:
        The task's and modules' identities and classes, and ``(name, id, shape)`` of every
        trainable parameter, in registration order.
    """
    params = tuple((n, id(p), tuple(p.shape)) for n, p in model.named_parameters()
                   if p.requires_grad)
    modules = tuple((n, id(m), type(m)) for n, m in model.named_modules(remove_duplicate=False))
    return type(task), id(task), params, modules


class Verdicts:
    """Remembered check outcomes per model structure (see :func:`structure_key`).

    Each entry holds a weak reference to its model: once the model is gone its ids may be
    reused by another object, so a dead entry never answers.
    """

    #: Entries kept (one per model scored; the loop builds a new model every round).
    SIZE = 16

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[weakref.ref, str | None]] = {}

    def get(self, key: tuple, model: nn.Module) -> tuple[bool, str | None]:
        """``(known, reason)``: whether the structure was checked, and why it failed if it did."""
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not model:
            return False, None
        return True, entry[1]

    def put(self, key: tuple, model: nn.Module, reason: str | None) -> None:
        """Remember the outcome for ``key``: ``None`` passed, a string says why not."""
        self._entries = {k: v for k, v in self._entries.items() if v[0]() is not None}
        while len(self._entries) >= self.SIZE:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (weakref.ref(model), reason)


def gradient_rtol(dtype: torch.dtype) -> float:
    """Relative tolerance of the gradient test for parameters of ``dtype``."""
    return GRADIENT_RTOL.get(dtype, 1e-2)


def implied_batch_gradients(layers: Sequence[Layer],
                            calls: dict[int, tuple[list[Tensor], list[Tensor]]]
                            ) -> dict[int, Tensor]:
    """The chunk sums of the per-sample gradients the engine's recorded factors imply.

    Each layer's own forward runs again on its recorded inputs and the recorded output
    gradients ``D`` are back-propagated through it alone: ``Σ_calls (∂out/∂θ)ᵀ D``, which is
    ``Σ_b Σ_calls D_b U_bᵀ`` for a linear or convolution layer and ``Σ δ·x̂``, ``Σ δ`` for a batch
    norm, i.e. the sum over samples of what every route computes per sample.

    Args:
        layers: The engine's layer adapters.
        calls: Per layer index, the inputs ``[B, ...]`` (detached) and output gradients (shaped
            like the outputs) of its calls that reach the loss.

    Returns:
        ``id(parameter) -> gradient`` (shaped like the parameter) for each layer parameter that
        one of the calls reaches.
    """
    implied: dict[int, Tensor] = {}
    with torch.enable_grad():
        for i, (xs, ds) in calls.items():
            layer = layers[i]
            params = layer.params()
            if not params:
                continue
            # The class's forward, called directly: the module's hooks stay out of it.
            forward = type(layer.module).forward
            outputs = [forward(layer.module, x) for x in xs]
            grads = torch.autograd.grad(outputs, params, ds, allow_unused=True)
            implied.update((id(p), g) for p, g in zip(params, grads) if g is not None)
    return implied


def _norm(t: Tensor | None) -> float:
    return 0.0 if t is None else float(torch.linalg.vector_norm(t.detach().double()))


def _named(names: Sequence[str]) -> str:
    shown = ', '.join(names[:NAMED])
    return shown + (f' (+{len(names) - NAMED} more)' if len(names) > NAMED else '')


def _tensors(obj: Any) -> Iterator[Tensor]:
    """The tensors in ``obj`` and its lists, tuples and dicts (torch-function arguments)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class ParameterReads(TorchFunctionMode):
    """Notes every torch operation on a trainable parameter outside its layer's hooked call.

    Forward pre-hooks and hooks on the layers' modules count the calls in progress; a call that
    bypasses ``__call__`` (``module.forward(x)``) runs no hooks and counts as outside.

    Args:
        owners: ``id(parameter) -> layer index``, ``None`` for a parameter no layer handles.
        names: ``id(parameter) -> qualified name``.
        modules: The layers' modules, by layer index.
    """

    def __init__(self, owners: dict[int, int | None], names: dict[int, str],
                 modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.owners, self.names, self.modules = owners, names, modules
        self._inside = [0] * len(modules)
        #: ``name -> the operation`` of the first read outside, per parameter, in order.
        self.outside: dict[str, str] = {}

    @contextmanager
    def watching(self) -> Iterator['ParameterReads']:
        """Watch inside the block; the hooks are always removed."""
        handles = []
        try:
            for i, module in enumerate(self.modules):
                handles.append(module.register_forward_pre_hook(self._enter(i)))
                handles.append(module.register_forward_hook(self._leave(i)))
            with self:
                yield self
        finally:
            for h in handles:
                h.remove()

    def _enter(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            self._inside[index] += 1
        return hook

    def _leave(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._inside[index] -= 1
        return hook

    def __torch_function__(self, func: Callable, types: Iterable[type], args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        # Only value reads matter: metadata (shape, dtype, device) comes back as non-tensors.
        if func not in _METADATA_ONLY and next(_tensors(result), None) is not None:
            for t in _tensors((args, kwargs)):
                key = id(t)
                if key in self.owners:
                    owner = self.owners[key]
                    if owner is None or not self._inside[owner]:
                        self.outside.setdefault(self.names[key],
                                                getattr(func, '__name__', repr(func)))
        return result


class FactorisationCheck:
    """Both tests of the module docstring for one model, on one chunk.

    Args:
        model: The network (its trainable parameters are checked).
        layers: The engine's layer adapters for it.
    """

    def __init__(self, model: nn.Module, layers: Sequence[Layer]) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        #: The trainable parameters, whose batch gradients the engine's backward pass returns.
        self.params: list[nn.Parameter] = [p for _, p in named]
        self.names = {id(p): n for n, p in named}
        self.layers = layers
        self.owners: dict[int, int | None] = {id(p): None for p in self.params}
        for i, layer in enumerate(layers):
            self.owners.update((id(p), i) for p in layer.params())

    def check_gradients(self, calls: dict[int, tuple[list[Tensor], list[Tensor]]],
                        grads: Sequence[Tensor | None]) -> None:
        """Test the batch gradients against the recorded factors.

        Args:
            calls: Per layer index, its recorded inputs and output gradients (see
                :func:`implied_batch_gradients`).
            grads: Autograd's gradients of the chunk's summed objective, one per
                :attr:`params` entry (``None`` where the objective does not reach it).

        Raises:
            FactorisationMismatch: Naming the parameters whose gradients differ.
        """
        implied = implied_batch_gradients(self.layers, calls)
        total = math.sqrt(sum(_norm(g) ** 2 for g in grads))
        bad: list[tuple[str, float]] = []
        for p, g in zip(self.params, grads):
            mine = implied.get(id(p))
            if g is None and mine is None:
                continue
            diff = _norm(g if mine is None else mine if g is None else g - mine)
            scale = max(_norm(g), _norm(mine))
            if diff > gradient_rtol(p.dtype) * (scale + NORM_FLOOR * total):
                bad.append((self.names[id(p)], diff / scale))
        if bad:
            worst = max(r for _, r in bad)
            raise FactorisationMismatch(
                f"parameters {_named([n for n, _ in bad])} are used outside their layer's "
                f'forward (their batch gradient differs from the one their layer calls give by '
                f'up to {worst:.1e} relative)')

    def reads(self) -> ParameterReads:
        """A fresh read watch over the layers' modules (``with check.reads().watching():``)."""
        return ParameterReads(self.owners, self.names, [layer.module for layer in self.layers])

    @staticmethod
    def check_reads(watch: ParameterReads) -> None:
        """Raise if ``watch`` saw a parameter read outside its layer's call.

        Raises:
            FactorisationMismatch: Naming the parameters and the first operation reading each.
        """
        if watch.outside:
            names = list(watch.outside)
            ops = sorted(set(watch.outside.values()))
            raise FactorisationMismatch(
                f"parameters {_named(names)} are used outside their layer's forward (read by "
                f"{', '.join(ops[:NAMED])} in the perturbed pass)")


__all__ = ['FactorisationCheck', 'FactorisationMismatch', 'ParameterReads', 'Verdicts',
           'implied_batch_gradients', 'structure_key', 'gradient_rtol']
