"""ρ-sweep: how the perturbation radius changes ψ, the margin and the query (paper Fig. 6–7).

For each ρ the same trained model and the same pool are probed with the scorer's perturbation
at that radius. Besides ψ(ρ) and the relative margin the sweep reports how much of the top-
``budget`` query would change relative to a reference ρ, which is what matters when tuning ρ
for a new dataset: a ρ whose query equals the plain-loss query measures no sharpness, a ρ that
flips most pseudo-labels (small ψ) scores a different model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

from ..core.task import BaseTask
from ..registry import PERTURBATIONS
from .hessian import decompose
from .perturbed import probe_pseudo_labels
from .report import is_sam_l2
from .summary import at_most, summarize_probe


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores (ties broken by position, like top-k)."""
    return np.argsort(-scores, kind='stable')[:k]


def rho_sweep(task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
              perturbation: dict, rhos: Sequence[float], *, budget: int,
              reference_rho: float | None = None, with_truth: bool = True,
              taylor: bool = True, objective_reduction: str = 'mean', reduction: str = 'sum',
              chunk_size: int = 64, power_iters: int = 20, tol: float = 1e-3,
              seed: int = 0) -> list[dict]:
    """Probe one model at several radii.

    Args:
        task: Task adapter.
        model: Trained model (parameters untouched).
        sample_ids: Pool to probe, ``[N]``.
        perturbation: Perturbation config (e.g. ``dict(type='SAMPerturbation', q=2)``); its
            ``rho`` is replaced by each value of ``rhos``.
        rhos: Radii to probe.
        budget: Query size for the top-k overlap.
        reference_rho: The ρ whose query the others are compared with (default: the
            config's ``rho`` if it is among ``rhos``, else the first).
        with_truth: Include ground-truth quantities (simulated oracle).
        taylor: For SAM with q = 2, also check Theorem 3.3 at each ρ: one decomposition of
            the pool (loss, ‖g‖, λ₁, curvature along g; independent of ρ) gives, per ρ, the
            share of samples within ``l + ρ‖g‖ + ½ρ²λ₁`` and the third-order remainder
            ``R(ρ) = score − (l + ρ‖g‖ + ½ρ² uᵀ∇²l u)``; ``median |R|/ρ³`` staying level
            across ρ is the cubic scaling of the theorem.
        objective_reduction: Reduction of unit losses into the loss whose gradient gives ε.
        reduction: Reduction of unit losses into per-sample values.
        chunk_size: Samples per ``vmap`` chunk.
        power_iters: Power-iteration limit for λ₁ (with ``taylor``).
        tol: Relative tolerance of λ₁.
        seed: Seed of the power-iteration start vectors.

    Returns:
        One dict per ρ (in the order of ``rhos``): ``rho``, the probe summary (ψ, margins,
        score mean, bound checks) and ``topk_overlap`` with the reference query, plus
        ``topk_overlap_clean``: the overlap of the query with the plain-loss top-k.
    """
    if not rhos:
        raise ValueError('rho_sweep needs at least one rho')
    if budget < 1 or budget > len(sample_ids):
        raise ValueError(f'budget must be in 1..{len(sample_ids)} (the probed pool), '
                         f'got {budget}')
    if reference_rho is None:
        reference_rho = perturbation.get('rho') if perturbation.get('rho') in rhos else rhos[0]
    if reference_rho not in rhos:
        raise ValueError(f'reference_rho {reference_rho} is not among rhos {list(rhos)}')
    perturbations = [PERTURBATIONS.build({**perturbation, 'rho': float(rho)}) for rho in rhos]
    dec = None
    if taylor and is_sam_l2(perturbations[0]):
        dec = decompose(task, model, sample_ids, reduction=reduction, power_iters=power_iters,
                        tol=tol, chunk_size=chunk_size, seed=seed)
    results, queries = [], {}
    for rho, pert in zip(rhos, perturbations):
        stats = probe_pseudo_labels(task, model, sample_ids, pert, with_truth=with_truth,
                                    objective_reduction=objective_reduction,
                                    reduction=reduction, chunk_size=chunk_size)
        query = top_k(stats.perturbed_loss, budget)
        clean_query = top_k(stats.clean_loss, budget)
        queries[rho] = query
        entry = {'rho': float(rho), **summarize_probe(stats),
                 'topk_overlap_clean': len(np.intersect1d(query, clean_query)) / budget}
        if dec is not None:
            score = stats.perturbed_loss
            remainder = np.abs(score - dec.second_order_score(rho))
            entry['theorem_3_3'] = {
                'bound_holds_fraction': float(np.mean(at_most(score, dec.upper_bound(rho)))),
                'mean_abs_third_order': float(np.mean(remainder)),
                'median_abs_third_order_over_rho3': float(np.median(remainder) / rho ** 3)}
        results.append(entry)
    for entry, rho in zip(results, rhos):
        entry['topk_overlap'] = len(np.intersect1d(queries[rho], queries[reference_rho])) / budget
        entry['reference_rho'] = float(reference_rho)
    return results
