"""Per-round summaries of the diagnostics: means, correlations, how often the bounds hold."""
from __future__ import annotations

import math

import numpy as np

from .hessian import Decomposition
from .perturbed import PerturbedStats

#: Slack for "holds" checks: float32 models round at about 1e-6 relative.
_RTOL = 1e-4


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 0 with ties given their average rank (as Spearman needs)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two ``[N]`` arrays; NaN when either is constant or N < 2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two ``[N]`` arrays (ties averaged); NaN if undefined."""
    return pearson(_ranks(np.asarray(x)), _ranks(np.asarray(y)))


def at_most(lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``lhs <= rhs`` elementwise, with slack for float32 rounding (``[N]`` bool)."""
    return lhs <= rhs + _RTOL * np.maximum(np.abs(rhs), 1.0)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def summarize_decomposition(dec: Decomposition, scores: np.ndarray, rho: float,
                            sam_l2: bool) -> dict:
    """Means of Theorem 3.3's terms and their correlations with the score.

    Args:
        dec: The decomposition of the diagnosed samples.
        scores: SAAL score of the same samples, ``[N]`` (mode ``'max'``).
        rho: The perturbation radius.
        sam_l2: Whether the perturbation is SAM with ``q = 2``, the setting of the theorem;
            the bound checks are reported only then.

    Returns:
        A JSON-ready dict.
    """
    terms = {'loss': dec.loss, 'grad_norm': dec.grad_norm, 'lambda_max': dec.lambda_max}
    out = {
        'num_samples': int(len(dec.sample_ids)),
        'mean': {**{k: _mean(v) for k, v in terms.items()},
                 'grad_curvature': _mean(dec.grad_curvature), 'score': _mean(scores)},
        # The terms as they enter the bound: l, ρ‖g‖, ½ρ²λ₁ (Fig. 1b of the paper).
        'bound_terms': {'loss': _mean(dec.loss), 'rho_grad_norm': _mean(rho * dec.grad_norm),
                        'half_rho2_lambda_max': _mean(0.5 * rho ** 2 * dec.lambda_max)},
        'pearson_with_score': {k: pearson(v, scores) for k, v in terms.items()},
        'spearman_with_score': {k: spearman(v, scores) for k, v in terms.items()},
        'power_iteration': {'converged_fraction': _mean(dec.converged.astype(float)),
                            'median_iterations': float(np.median(dec.iterations))
                            if len(dec.iterations) else math.nan,
                            'negative_top_fraction': _mean((dec.lambda_max < 0).astype(float))},
    }
    if sam_l2:
        bound = dec.upper_bound(rho)
        out['theorem_3_3'] = {
            'bound_holds_fraction': _mean(at_most(scores, bound).astype(float)),
            'mean_bound': _mean(bound),
            # What the second-order Taylor expansion along ε misses: O(ρ³) by the theorem.
            'mean_abs_third_order': _mean(np.abs(scores - dec.second_order_score(rho))),
        }
    return out


def summarize_probe(stats: PerturbedStats) -> dict:
    """ψ(ρ), the margin of Theorem 3.1 and how often the paper's inequalities hold.

    Args:
        stats: Output of :func:`~saal_tasks.diagnostics.perturbed.probe_pseudo_labels`.

    Returns:
        A JSON-ready dict; the ground-truth entries only when the probe had the truth.
    """
    ex = stats.extras
    score = stats.perturbed_loss
    out = {'num_samples': int(len(score)), 'psi': _mean(ex['label_kept']),
           'margin_mean': _mean(ex['margin']), 'score_mean': _mean(score)}
    if 'true_perturbed_loss' in ex:
        true_max = ex['true_perturbed_loss']
        # Both ε̂ and ε̄ lie in the ρ-ball, so the larger loss is the best available lower
        # bound of the true maximum over the ball.
        true_best = np.maximum(true_max, ex['true_loss_at_pseudo_eps'])
        kept = ex['label_kept'] >= 1.0
        positive = true_max > 0
        out.update({
            'relative_margin': _mean(ex['margin'][positive] / true_max[positive]),
            'true_perturbed_mean': _mean(true_max),
            # Theorem 3.1: l(ŷ; θ+ε̂) <= max l(ȳ) + δ.
            'theorem_3_1_holds_fraction': _mean(at_most(score, true_best + ex['margin'])
                                                .astype(float)),
            # Proposition 3.2 among samples whose label survives: l(ŷ; θ+ε̂) <= l(ȳ; θ+ε̂).
            'proposition_3_2_holds_fraction': _mean(
                at_most(score[kept], ex['true_loss_at_pseudo_eps'][kept]).astype(float)),
            # The lower-bound claim on every sample, with the SAM maximiser for the truth.
            'pseudo_below_true_fraction': _mean(at_most(score, true_max).astype(float)),
        })
    return out
