"""The upper-bound terms of Theorem 3.3 per sample: loss, gradient norm, Hessian top eigenvalue.

For a sample ``x`` with target ``y`` (the pseudo-label by default) and ``l(θ) = l(x, y; θ)``,
the paper bounds the SAAL score by ``l + ρ‖∇l‖₂ + ½ρ²λ₁ + O(ρ³)`` where ``λ₁`` is the largest
eigenvalue of the loss Hessian ``∇²l``. :func:`decompose` measures the three terms, plus the
curvature along the gradient ``uᵀ∇²l u`` (``u = ∇l/‖∇l‖``), which is the second-order term
of the score itself: the SAM perturbation moves along ``u``, so
``score = l + ρ‖∇l‖ + ½ρ² uᵀ∇²l u + O(ρ³)`` and ``uᵀ∇²l u ≤ λ₁``.

``λ₁`` comes from power iteration on Hessian-vector products (forward-over-reverse
``jvp(grad)``), run for a whole chunk of samples at once under ``vmap``. Power iteration
finds the eigenvalue of largest magnitude ``μ``; when ``μ < 0`` (an indefinite Hessian whose
most negative eigenvalue dominates) a second run on ``∇²l − μI`` finds ``λ₁ − μ``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import grad, grad_and_value, jvp

from ..core.task import BaseTask
from ..core.units import check_reduction, reduce_units
from .functional import (Params, TargetFn, make_mapper, per_sample_dot, per_sample_scale,
                         pseudo_targets, sample_chunks, tree_map, weight_functions)

#: Below this norm a Hessian-vector product counts as zero (the eigenvalue is then 0).
_TINY = 1e-30


@dataclass
class Decomposition:
    """Theorem 3.3's terms for each diagnosed sample (all arrays ``[N]``, float64).

    Attributes:
        sample_ids: Diagnosed ids, in the order given.
        loss: ``l(x, y; θ)``.
        grad_norm: ``‖∇θ l(x, y; θ)‖₂``.
        lambda_max: Largest eigenvalue ``λ₁`` of ``∇²θ l(x, y; θ)``.
        grad_curvature: ``uᵀ ∇²θ l u`` with ``u = ∇θ l / ‖∇θ l‖₂`` (0 for a zero gradient).
        iterations: Power iterations used for ``λ₁`` (both runs when a shift was needed).
        converged: Whether ``λ₁`` met the tolerance within the iteration limit.
    """

    sample_ids: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    lambda_max: np.ndarray
    grad_curvature: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray

    def upper_bound(self, rho: float) -> np.ndarray:
        """Theorem 3.3 without its third-order term: ``l + ρ‖g‖ + ½ρ² max(λ₁, 0)``, ``[N]``.

        ``max(λ₁, 0)`` because the bound maximises ``½(ρv)ᵀ∇²l(ρv)`` over ``‖v‖ ≤ 1``, which
        is ``½ρ²λ₁`` for ``λ₁ ≥ 0`` and 0 (at ``v = 0``) otherwise.
        """
        return self.loss + rho * self.grad_norm + 0.5 * rho ** 2 * np.maximum(self.lambda_max, 0)

    def second_order_score(self, rho: float) -> np.ndarray:
        """Taylor prediction of the SAM (q = 2) score to second order, ``[N]``."""
        return self.loss + rho * self.grad_norm + 0.5 * rho ** 2 * self.grad_curvature


def _index(params: Params, idx: torch.Tensor) -> Params:
    return {k: v[idx] for k, v in params.items()}


def power_iteration(hvp: Callable[[Params, torch.Tensor], Params], init: Params,
                    max_iters: int, tol: float, shift: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Params, torch.Tensor, torch.Tensor]:
    """Dominant eigenpair of ``H_i − shift_i·I`` for a batch of symmetric operators ``H_i``.

    Samples stop iterating once converged, so a chunk costs the mean, not the maximum,
    number of iterations.

    Args:
        hvp: ``(v, idx) ↦ H v`` for the samples ``idx`` (``[K]`` positions in the batch);
            ``v`` holds those samples only (each weight ``[K, *shape]``).
        init: Start vectors of the whole batch (each weight ``[B, *shape]``; need not be
            normalised; must not be zero).
        max_iters: Iteration limit.
        tol: A sample has converged when its Rayleigh quotient changes by at most
            ``tol · |quotient|`` between two iterations.
        shift: Per-sample shift ``[B]`` (``None``: no shift).

    Returns:
        ``(eigenvalue [B], eigenvector, iterations [B], converged [B])``; the eigenvalue is
        that of ``H − shift·I`` (the last Rayleigh quotient), the eigenvector has unit norm.
    """
    v = per_sample_scale(init, per_sample_dot(init, init).rsqrt())
    first = next(iter(v.values()))
    batch, device = first.shape[0], first.device
    iterations = torch.full((batch,), max_iters, dtype=torch.long, device=device)
    converged = torch.zeros(batch, dtype=torch.bool, device=device)
    quotient = torch.zeros(batch, dtype=first.dtype, device=device)
    for it in range(1, max_iters + 1):
        idx = (~converged).nonzero().flatten()
        v_active = _index(v, idx)
        hv = hvp(v_active, idx)
        if shift is not None:
            hv = {k: hv[k] - shift[idx].reshape(-1, *([1] * (hv[k].dim() - 1))) * v_active[k]
                  for k in hv}
        new = per_sample_dot(v_active, hv)  # Rayleigh quotient: v has unit norm
        if it > 1:
            now = (new - quotient[idx]).abs() <= tol * new.abs().clamp_min(_TINY)
            iterations[idx[now]] = it
            converged[idx[now]] = True
        quotient[idx] = new
        norm = per_sample_dot(hv, hv).sqrt()
        nonzero = norm > _TINY
        safe = torch.where(nonzero, norm, torch.ones_like(norm))
        for k in v:
            shape = (-1, *([1] * (hv[k].dim() - 1)))
            # A zero product (H v = 0) keeps v: its quotient is exactly 0 and converges.
            step = torch.where(nonzero.reshape(shape), hv[k] / safe.reshape(shape), v_active[k])
            v[k] = v[k].index_copy(0, idx, step)
        if bool(converged.all()):
            break
    return quotient, v, iterations, converged


def decompose(task: BaseTask, model: nn.Module, sample_ids: np.ndarray, *,
              reduction: str = 'sum', targets_fn: TargetFn = pseudo_targets,
              power_iters: int = 20, tol: float = 1e-3, chunk_size: int = 32, seed: int = 0,
              vectorize: bool = True) -> Decomposition:
    """Measure Theorem 3.3's terms for each sample.

    Args:
        task: Task adapter (its ``pool_batches``, ``pseudo_label`` and ``loss_per_unit``).
        model: Trained model; switched to eval mode during the call, parameters untouched.
        sample_ids: Ids to diagnose, shape ``[N]``.
        reduction: How a sample's unit losses reduce to its loss ``l`` (``'sum'`` or
            ``'mean'``; the scorer's ``score_reduction`` makes ``l`` comparable to scores).
        targets_fn: Targets ``y`` of ``l(x, y; θ)``; pseudo-labels by default.
        power_iters: Power-iteration limit per run.
        tol: Relative tolerance on the eigenvalue.
        chunk_size: Samples per ``vmap`` chunk (memory grows with ``chunk_size × |θ|``).
        seed: Seed of the random start vectors.
        vectorize: ``False`` forces one sample at a time.

    Returns:
        A :class:`Decomposition` aligned with ``sample_ids``.
    """
    check_reduction('reduction', reduction)
    if power_iters < 2:
        raise ValueError(f'power_iters must be >= 2 (convergence compares two iterates), '
                         f'got {power_iters}')
    was_training = model.training
    model.eval()
    try:
        return _decompose(task, model, sample_ids, reduction, targets_fn, power_iters, tol,
                          chunk_size, seed, vectorize)
    finally:
        model.train(was_training)


def _decompose(task, model, sample_ids, reduction, targets_fn, power_iters, tol, chunk_size,
               seed, vectorize) -> Decomposition:
    wf = weight_functions(task, model)
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(params: Params, inputs, targets) -> torch.Tensor:
        return reduce_units(wf.loss_units(params, inputs, targets), reduction)[0]

    def first_order(inputs, targets):
        g, value = grad_and_value(loss_fn)(wf.params, inputs, targets)
        return value, g

    def hvp_one(inputs, targets, v: Params) -> Params:
        return jvp(lambda q: grad(loss_fn)(q, inputs, targets), (wf.params,), (v,))[1]

    out: dict[str, list[np.ndarray]] = {k: [] for k in (
        'ids', 'loss', 'grad_norm', 'lambda_max', 'grad_curvature', 'iterations', 'converged')}
    for ids, inputs, targets, mapper in sample_chunks(task, model, sample_ids, chunk_size,
                                                      targets_fn, vectorize):
        def hvp(v: Params, idx: torch.Tensor, inputs=inputs, targets=targets,
                mapper=mapper) -> Params:
            if len(idx) == len(ids):
                return mapper(hvp_one, v)
            # Only the samples still iterating: a mapper over their slice of the chunk.
            sub = make_mapper(inputs[idx], tree_map(lambda t: t[idx], targets), len(idx))
            return sub(hvp_one, v)

        value, g = mapper(first_order)
        g_norm = per_sample_dot(g, g).sqrt()
        u = per_sample_scale(g, 1.0 / g_norm.clamp_min(_TINY))
        curvature = per_sample_dot(u, hvp(u, torch.arange(len(ids))))
        init = {k: torch.randn(p.shape, generator=generator, dtype=torch.float64)
                .to(dtype=p.dtype, device=p.device) for k, p in g.items()}
        mu, vec, iters, conv = power_iteration(hvp, init, power_iters, tol)
        lam = mu.clone()
        negative = mu < 0
        if bool(negative.any()):
            # ∇²l − μI is positive semi-definite when μ is the most negative eigenvalue, so
            # its dominant eigenvalue is λ₁ − μ. The run starts from a fresh random vector
            # (μ's eigenvector is in the null space of ∇²l − μI); samples with μ ≥ 0 get no
            # shift and start from their converged vector, so they stop at once.
            shift = torch.where(negative, mu, torch.zeros_like(mu))
            fresh = {k: torch.randn(p.shape, generator=generator, dtype=torch.float64)
                     .to(dtype=p.dtype, device=p.device) for k, p in g.items()}
            start = {k: torch.where(negative.reshape(-1, *([1] * (vec[k].dim() - 1))),
                                    fresh[k], vec[k]) for k in vec}
            top, _, iters2, conv2 = power_iteration(hvp, start, power_iters, tol, shift=shift)
            lam = torch.where(negative, top + shift, mu)
            iters = torch.where(negative, iters + iters2, iters)
            conv = torch.where(negative, conv & conv2, conv)
        for key, arr in (('ids', ids), ('loss', value), ('grad_norm', g_norm),
                         ('lambda_max', lam), ('grad_curvature', curvature),
                         ('iterations', iters), ('converged', conv)):
            out[key].append(arr if isinstance(arr, np.ndarray) else arr.detach().cpu().numpy())
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
    return Decomposition(
        sample_ids=cat['ids'].astype(np.int64), loss=cat['loss'].astype(np.float64),
        grad_norm=cat['grad_norm'].astype(np.float64),
        lambda_max=cat['lambda_max'].astype(np.float64),
        grad_curvature=cat['grad_curvature'].astype(np.float64),
        iterations=cat['iterations'].astype(np.int64), converged=cat['converged'].astype(bool))


def set_top_eigenvalue(task: BaseTask, model: nn.Module, sample_ids: np.ndarray, *,
                       targets_fn: TargetFn, reduction: str = 'sum', power_iters: int = 50,
                       tol: float = 1e-4, batch_size: int = 256, seed: int = 0
                       ) -> tuple[float, int]:
    """Largest eigenvalue of the Hessian of a set's mean loss ``(1/N) Σ_i l(x_i, y_i; θ)``.

    The sharpness of the loss landscape the paper reports next to its landscape plots.

    Args:
        task: Task adapter.
        model: Trained model (eval mode during the call, parameters untouched).
        sample_ids: The set, ``[N]``.
        targets_fn: Targets of each sample (ground truth for a labeled set).
        reduction: Per-sample reduction of unit losses.
        power_iters: Power-iteration limit.
        tol: Relative tolerance on the eigenvalue.
        batch_size: Samples per Hessian-vector product batch.
        seed: Seed of the random start vector.

    Returns:
        ``(λ₁, iterations used)``.
    """
    check_reduction('reduction', reduction)
    ids = np.asarray(sample_ids, dtype=np.int64)
    if len(ids) == 0:
        raise ValueError('set_top_eigenvalue needs at least one sample')
    was_training = model.training
    model.eval()
    try:
        wf = weight_functions(task, model)
        batches = [(inputs, targets_fn(task, model, b_ids, inputs), len(b_ids))
                   for b_ids, inputs in task.pool_batches(ids, batch_size)]

        def mean_loss(params: Params, inputs, targets) -> torch.Tensor:
            return reduce_units(wf.loss_units(params, inputs, targets), reduction).sum() / len(ids)

        def hvp(v: Params, idx: torch.Tensor) -> Params:
            single = {k: t[0] for k, t in v.items()}
            total = None
            for inputs, targets, _ in batches:
                part = jvp(lambda q: grad(mean_loss)(q, inputs, targets), (wf.params,),
                           (single,))[1]
                total = part if total is None else {k: total[k] + part[k] for k in total}
            return {k: t.unsqueeze(0) for k, t in total.items()}

        generator = torch.Generator().manual_seed(seed)
        init = {k: torch.randn((1, *p.shape), generator=generator, dtype=torch.float64)
                .to(dtype=p.dtype, device=p.device) for k, p in wf.params.items()}
        mu, _, iters, _ = power_iteration(hvp, init, power_iters, tol)
        if float(mu[0]) >= 0:
            return float(mu[0]), int(iters[0])
        # As in decompose(): the shifted run needs a start outside μ's eigenvector.
        fresh = {k: torch.randn(v.shape, generator=generator, dtype=torch.float64).to(v)
                 for k, v in init.items()}
        top, _, iters2, _ = power_iteration(hvp, fresh, power_iters, tol, shift=mu)
        return float(top[0] + mu[0]), int(iters[0] + iters2[0])
    finally:
        model.train(was_training)
