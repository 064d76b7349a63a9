"""All diagnostics of one trained model on one pool: what the hook and the tools write."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from ..core.perturbation import Perturbation, SAMPerturbation
from ..core.task import BaseTask
from .functional import true_targets
from .hessian import Decomposition, decompose
from .perturbed import perturbed_losses, probe_pseudo_labels
from .summary import spearman, summarize_decomposition, summarize_probe


@dataclass
class RoundDiagnostics:
    """Diagnostics of one model.

    Attributes:
        summary: JSON-ready numbers (means, correlations, bound checks, seconds).
        arrays: Per-sample arrays worth keeping (``sample_ids`` ``[N]`` and values ``[N]``).
        decomposition: Theorem 3.3's terms, when computed.
        scores: SAAL score of each diagnosed sample, ``[N]``.
    """

    summary: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    decomposition: Decomposition | None = None
    scores: np.ndarray | None = None


def is_sam_l2(perturbation: Perturbation) -> bool:
    """Whether ε is ``ρ·g/‖g‖₂``, the perturbation Theorem 3.3 is about."""
    return isinstance(perturbation, SAMPerturbation) and perturbation.q == 2.0


def diagnose_model(task: BaseTask, model: nn.Module, *, pool_ids: np.ndarray,
                   labeled_ids: np.ndarray | None, num_unlabeled: int,
                   perturbation: Perturbation, use_truth: bool,
                   acquisition_scores: np.ndarray | None = None,
                   decomposition: bool = True, pseudo_labels: bool = True,
                   perturbed_sets: bool = True, objective_reduction: str = 'mean',
                   reduction: str = 'sum', power_iters: int = 20, tol: float = 1e-3,
                   chunk_size: int = 64, seed: int = 0) -> RoundDiagnostics:
    """Run the enabled diagnostics on ``pool_ids`` (unlabeled) and ``labeled_ids``.

    Args:
        task: Task adapter.
        model: Trained model (parameters untouched).
        pool_ids: Unlabeled samples to diagnose (a uniform subset of the pool), ``[N]``.
        labeled_ids: The labeled set (for its perturbed loss), ``[L]``, or ``None``.
        num_unlabeled: Size of the whole unlabeled pool (weights the total perturbed loss).
        perturbation: The scorer's perturbation.
        use_truth: Whether ground truth may be used (simulated oracle).
        acquisition_scores: The run's acquisition scores of ``pool_ids``, ``[N]``, if any.
        decomposition: Compute Theorem 3.3's terms.
        pseudo_labels: Compute ψ(ρ) and the margin (the probe; the SAAL score needs it
            too, so it runs whenever anything else does).
        perturbed_sets: Compute the perturbed loss of the labeled, unlabeled and whole set
            (needs ``use_truth``).
        objective_reduction: Reduction of unit losses into the loss whose gradient gives ε.
        reduction: Reduction of unit losses into per-sample values (the score's).
        power_iters: Power-iteration limit for λ₁.
        tol: Relative tolerance of λ₁.
        chunk_size: Samples per ``vmap`` chunk.
        seed: Seed of the power-iteration start vectors.

    Returns:
        The :class:`RoundDiagnostics`.
    """
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    seconds: dict[str, float] = {}
    summary: dict = {'num_diagnosed': int(len(pool_ids)), 'rho': perturbation.rho,
                     'perturbation': repr(perturbation), 'use_truth': bool(use_truth),
                     'seconds': seconds}
    t0 = time.perf_counter()
    probe = probe_pseudo_labels(task, model, pool_ids, perturbation, with_truth=use_truth,
                                objective_reduction=objective_reduction, reduction=reduction,
                                chunk_size=chunk_size)
    seconds['probe'] = time.perf_counter() - t0
    scores = probe.perturbed_loss
    arrays = {'sample_ids': pool_ids, 'score': scores, 'clean_loss': probe.clean_loss,
              **probe.extras}
    if acquisition_scores is not None:
        arrays['acquisition_score'] = np.asarray(acquisition_scores, dtype=np.float64)
        summary['acquisition_score_spearman_with_saal'] = spearman(acquisition_scores, scores)
    if pseudo_labels:
        summary['pseudo_labels'] = summarize_probe(probe)
    dec = None
    if decomposition:
        t0 = time.perf_counter()
        dec = decompose(task, model, pool_ids, reduction=reduction, power_iters=power_iters,
                        tol=tol, chunk_size=chunk_size, seed=seed)
        seconds['decomposition'] = time.perf_counter() - t0
        summary['decomposition'] = summarize_decomposition(dec, scores, perturbation.rho,
                                                           is_sam_l2(perturbation))
        arrays.update(grad_norm=dec.grad_norm, lambda_max=dec.lambda_max,
                      grad_curvature=dec.grad_curvature, power_iterations=dec.iterations)
    if perturbed_sets and use_truth:
        t0 = time.perf_counter()
        unlabeled_mean = float(np.mean(probe.extras['true_perturbed_loss']))
        sets = {'unlabeled': unlabeled_mean, 'unlabeled_pseudo': float(np.mean(scores))}
        if labeled_ids is not None and len(labeled_ids):
            labeled = perturbed_losses(task, model, labeled_ids, perturbation,
                                       targets_fn=true_targets,
                                       objective_reduction=objective_reduction,
                                       reduction=reduction, chunk_size=chunk_size)
            n_l, n_u = len(labeled_ids), num_unlabeled
            sets.update(labeled=float(np.mean(labeled.perturbed_loss)),
                        labeled_clean=float(np.mean(labeled.clean_loss)),
                        # Eq. 6: the whole set's mean is the π-weighted sum of the two means.
                        pi_labeled=n_l / (n_l + n_u),
                        total=(n_l * float(np.mean(labeled.perturbed_loss))
                               + n_u * unlabeled_mean) / (n_l + n_u))
        summary['perturbed_loss'] = sets
        seconds['perturbed_sets'] = time.perf_counter() - t0
    return RoundDiagnostics(summary=summary, arrays=arrays, decomposition=dec, scores=scores)
