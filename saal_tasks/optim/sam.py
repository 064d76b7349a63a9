"""Sharpness-Aware Minimization (SAM) and its adaptive variant (ASAM).

SAM (Foret et al., ICLR 2021) minimises the worst-case loss in a neighbourhood of the
weights. Each step approximates the inner maximisation with one ascent step:

* ``e(w) = rho * g / ||g||_2`` (SAM), or
* ``e(w) = rho * w^2 * g / ||w * g||_2`` (ASAM, Kwon et al., ICML 2021; the neighbourhood
  is scaled element-wise by ``|w|`` so it is invariant to weight rescaling),

where ``g = dL/dw`` and the norms run over *all* parameters with a gradient. The gradient
is then re-evaluated at ``w + e(w)`` and the base optimizer (SGD, Adam, ...) applies that
gradient to the original weights ``w``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

# mmengine registers the torch optimizers in its OPTIMIZERS registry (the parent of ours)
# only when ``mmengine.optim`` is imported, and a child registry does not trigger its
# parent's lazy import. Importing it here makes ``OPTIMIZERS.build(dict(type='SGD'))``
# work both for SAM's ``base_optimizer`` dicts and for anyone building through our
# registry (whose lazy import loads this package).
import mmengine.optim  # noqa: F401
from saal_tasks.registry import OPTIMIZERS

__all__ = ['SAM']

#: Added to the gradient norm so an all-zero gradient gives a zero (not NaN) perturbation.
_NORM_EPS = 1e-12


@OPTIMIZERS.register_module()
class SAM(Optimizer):
    """Sharpness-Aware Minimization wrapper around a base optimizer.

    ``step(closure)`` follows torch's closure convention, so a training loop treats SAM like
    any optimizer: the closure clears the gradients, recomputes the loss, calls
    ``backward()`` and returns the loss. SAM calls it twice: at the weights ``w`` (the
    gradient that defines ``e(w)``) and at ``w + e(w)`` (the gradient the base optimizer
    applies), restoring ``w`` exactly in between::

        def closure():
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure)  # the loss at w

    ``param_groups`` (and ``state``) are the base optimizer's own objects, so LR
    schedulers attached to this optimizer drive the base optimizer, and per-group
    ``rho``/``adaptive`` overrides live next to ``lr`` etc. in each group.

    Args:
        params: Iterable of parameters or of param-group dicts (as for any torch
            optimizer). Groups may override ``rho`` and ``adaptive``.
        base_optimizer: Either a config dict such as ``dict(type='SGD', lr=0.1)`` built
            through ``saal_tasks.registry.OPTIMIZERS`` (a bare type name string is also
            accepted), or an optimizer class such as ``torch.optim.SGD``.
        rho: Radius of the neighbourhood (``>= 0``; 0 reduces to the base optimizer).
        adaptive: Use the ASAM perturbation ``rho * w^2 * g / ||w * g||``.
        **base_kwargs: Extra keyword arguments for the base optimizer (e.g. ``lr``);
            merged into (and overriding) a config dict.

    Raises:
        ValueError: If ``rho`` is negative.
        TypeError: If ``base_optimizer`` is neither a dict, a string nor an optimizer
            class.
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'base_optimizer': 'OPTIMIZERS'}
    #: Options this class fills in when it builds those children (not required in configs).
    config_injected = {'base_optimizer': ('params',)}

    def __init__(self,
                 params: Iterable[Tensor] | Iterable[dict[str, Any]],
                 base_optimizer: Mapping[str, Any] | str | type[Optimizer],
                 rho: float = 0.05,
                 adaptive: bool = False,
                 **base_kwargs: Any) -> None:
        if rho < 0.0:
            raise ValueError(f'SAM: rho must be >= 0, got {rho}')
        sam_defaults = dict(rho=rho, adaptive=adaptive)
        # Builds self.param_groups with the SAM defaults; the base optimizer below adopts
        # these very dicts and fills in its own hyper-parameters.
        super().__init__(params, sam_defaults)
        self.base_optimizer: Optimizer = self._build_base(base_optimizer, base_kwargs)
        # Share (not copy) groups and state: a scheduler changing ``lr`` here must be seen
        # by the base optimizer's step.
        self._link_to_base()
        self.defaults = {**self.base_optimizer.defaults, **sam_defaults}
        # Original weights saved by first_step, keyed by parameter; empty when the
        # weights are not perturbed.
        self._saved_weights: dict[Tensor, Tensor] = {}

    # ------------------------------------------------------------------ construction
    def _build_base(self, base_optimizer: Mapping[str, Any] | str | type[Optimizer],
                    base_kwargs: dict[str, Any]) -> Optimizer:
        """Instantiate the base optimizer on ``self.param_groups``."""
        if isinstance(base_optimizer, str):
            base_optimizer = dict(type=base_optimizer)
        if isinstance(base_optimizer, Mapping):
            cfg = dict(base_optimizer)
            cfg.update(base_kwargs)
            if 'params' in cfg:
                raise ValueError('SAM: base_optimizer must not set params; they are SAM\'s')
            cfg['params'] = self.param_groups
            built = OPTIMIZERS.build(cfg)
        elif isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer):
            built = base_optimizer(self.param_groups, **base_kwargs)
        else:
            raise TypeError('SAM: base_optimizer must be a config dict, an optimizer name or '
                            f'a torch.optim.Optimizer subclass, got {base_optimizer!r}')
        if not isinstance(built, Optimizer):
            raise TypeError(f'SAM: base_optimizer built {type(built).__name__}, which is not a '
                            'torch.optim.Optimizer')
        if isinstance(built, SAM):
            raise TypeError('SAM: base_optimizer cannot itself be SAM')
        return built

    def _link_to_base(self) -> None:
        """Make ``param_groups`` and ``state`` the base optimizer's objects.

        Needed after construction and after anything that rebinds them on the base
        optimizer (``load_state_dict`` does).
        """
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (with optional ``rho``/``adaptive``) to SAM and the base.

        Args:
            param_group: Dict with ``params`` and optional hyper-parameters.
        """
        base = self.__dict__.get('base_optimizer')
        if base is None:
            # Called from Optimizer.__init__, before the base optimizer exists.
            super().add_param_group(param_group)
        else:
            param_group.setdefault('rho', self.defaults['rho'])
            param_group.setdefault('adaptive', self.defaults['adaptive'])
            # Appends to the shared list, i.e. to self.param_groups too.
            base.add_param_group(param_group)
        if param_group['rho'] < 0.0:
            raise ValueError(f'SAM: rho must be >= 0, got {param_group["rho"]}')

    # ------------------------------------------------------------------ SAM steps
    def _params_with_grad(self) -> Iterable[tuple[dict[str, Any], Tensor]]:
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is not None:
                    yield group, p

    def _grad_norm(self) -> Tensor | None:
        """Global L2 norm of ``g`` (SAM groups) or ``|w| * g`` (ASAM groups).

        Returns:
            Scalar tensor ``[]`` on the first parameter's device, or ``None`` when no
            parameter has a gradient.
        """
        norms: list[Tensor] = []
        for group, p in self._params_with_grad():
            # ||w * g|| == || |w| * g ||; abs() keeps the intent (a per-weight scale) clear.
            g = p.grad * p.abs() if group['adaptive'] else p.grad
            norms.append(torch.linalg.vector_norm(g, ord=2))
        if not norms:
            return None
        # Per-tensor norms may live on different devices/dtypes (model parallel, mixed
        # precision): combine them on one device in the widest dtype.
        device = norms[0].device
        dtype = functools.reduce(torch.promote_types, (n.dtype for n in norms))
        return torch.linalg.vector_norm(
            torch.stack([n.to(device=device, dtype=dtype) for n in norms]), ord=2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move the weights to ``w + e(w)`` using the current gradients.

        Saves a copy of every perturbed weight so that :meth:`second_step` can restore
        it bit-exactly (subtracting ``e(w)`` again would not be exact in floating point).

        Args:
            zero_grad: Clear the gradients afterwards (needed before the closure's
                backward, which would otherwise accumulate into them).

        Raises:
            RuntimeError: If the weights are already perturbed (``first_step`` twice
                without ``second_step``), which would lose the original weights.
        """
        if self._saved_weights:
            raise RuntimeError('SAM.first_step called twice without second_step; the '
                               'weights are already perturbed')
        grad_norm = self._grad_norm()
        if grad_norm is not None:
            for group, p in self._params_with_grad():
                scale = (group['rho'] / (grad_norm + _NORM_EPS)).to(device=p.device,
                                                                     dtype=p.dtype)
                self._saved_weights[p] = p.detach().clone()
                e_w = p.grad * scale
                if group['adaptive']:
                    e_w = e_w * torch.square(p)
                p.add_(e_w)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def _restore_weights(self) -> None:
        """Copy the weights saved by :meth:`first_step` back (no-op if none saved)."""
        for p, original in self._saved_weights.items():
            p.copy_(original)
        self._saved_weights.clear()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the original weights and apply the base optimizer's step.

        The gradients present now (computed at ``w + e(w)``) are the ones used.

        Args:
            zero_grad: Clear the gradients after the base step.
        """
        self._restore_weights()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM update.

        Args:
            closure: Callable that clears the gradients, recomputes the loss at the current
                weights, calls ``backward()`` on it and returns it. Required.

        Returns:
            The loss at the unperturbed weights (the closure's first result).

        Raises:
            ValueError: If ``closure`` is ``None``.
        """
        if closure is None:
            raise ValueError(
                'SAM.step needs a closure that clears the gradients, re-evaluates the loss '
                'and calls backward(); or use first_step()/second_step() explicitly')
        # The caller may be inside no_grad (e.g. a wrapped step); both backward passes need
        # a graph regardless.
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                closure()
        except BaseException:
            # Never leave the model at the perturbed weights.
            self._restore_weights()
            raise
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all parameters (delegates to the base optimizer).

        Args:
            set_to_none: Set ``.grad`` to ``None`` instead of zero-filling it.
        """
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Base optimizer state dict; its param groups include ``rho``/``adaptive``.

        Returns:
            A torch optimizer state dict (``state`` and ``param_groups``).
        """
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Load a state dict produced by :meth:`state_dict`.

        Args:
            state_dict: Dict with ``state`` and ``param_groups``.
        """
        self.base_optimizer.load_state_dict(state_dict)
        # The base optimizer replaced its group list and state mapping: re-share them.
        self._link_to_base()

    def __getstate__(self) -> dict[str, Any]:
        # Optimizer.__getstate__ keeps only defaults/state/param_groups; pickling and
        # deepcopy also need the base optimizer (shared objects survive via the memo).
        state = super().__getstate__()
        state['base_optimizer'] = self.base_optimizer
        state['_saved_weights'] = self._saved_weights
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault('_saved_weights', {})
        if 'base_optimizer' in self.__dict__:
            self._link_to_base()

    def __repr__(self) -> str:
        return f'SAM(base_optimizer={self.base_optimizer!r})'
