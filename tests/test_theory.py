"""Fidelity to the paper's theory, checked numerically on small float64 networks.

Theorem 3.3: the SAAL score is at most ``l + ρ‖g‖ + ½ρ²λ₁`` up to a third-order term. With the
SAM perturbation (q = 2) the score is ``l(θ + ρu)``, ``u = g/‖g‖``, whose Taylor expansion is
``l + ρ‖g‖ + ½ρ² uᵀHu + R(ρ)``; since ``uᵀHu ≤ λ₁`` the theorem holds with third-order term
``R(ρ)``, and ``R`` must shrink as ρ³.

Proposition 3.2: where the perturbed model keeps the pseudo-label, the pseudo-label perturbed
loss is at most the true-label perturbed loss.
"""
import numpy as np
import pytest

from saal_tasks.core.perturbation import SAMPerturbation
from saal_tasks.diagnostics import decompose, probe_pseudo_labels
from saal_tasks.scorers import SharpnessScorer

from diagnostics_tasks import TensorTask

RHOS = np.array([0.16, 0.08, 0.04, 0.02, 0.01])


@pytest.fixture(scope='module')
def smooth_model():
    """A tanh MLP trained on half of a 24-sample pool; the other half is 'unlabeled'."""
    task = TensorTask(num_samples=24)
    return task, task.train(task.build_model(0), np.arange(12), seed=0)


def _scores(task, model, ids, rho):
    """The SAAL score exactly as the scorer computes it (SAM, q = 2, exact per sample)."""
    scorer = SharpnessScorer(perturbation=dict(type='SAMPerturbation', rho=float(rho), q=2),
                             engine=dict(type='ReferenceEngine'), mode='max')
    return scorer.score(task, model, ids, np.random.default_rng(0)).scores


def _slopes(rhos, residuals):
    """Per-sample slope of log|residual| against log ρ (rows: ρ, columns: samples)."""
    return np.polyfit(np.log(rhos), np.log(np.abs(residuals)), 1)[0]


def test_theorem_3_3_bound_with_a_third_order_remainder(smooth_model):
    task, model = smooth_model
    ids = np.arange(12, 24)
    dec = decompose(task, model, ids, power_iters=1000, tol=1e-13)
    assert dec.converged.all()
    assert (dec.grad_curvature <= dec.lambda_max + 1e-10).all()  # uᵀHu <= λ₁
    scores = np.stack([_scores(task, model, ids, r) for r in RHOS])  # [ρ, sample]
    remainder = scores - np.stack([dec.second_order_score(r) for r in RHOS])
    bound = np.stack([dec.upper_bound(r) for r in RHOS])
    # The theorem: score <= l + ρ‖g‖ + ½ρ²λ₁ + (third-order term), for every sample and ρ.
    assert (scores - bound <= np.abs(remainder) + 1e-12).all()
    # The third-order term shrinks as ρ³: halving ρ divides it by about 8.
    slopes = _slopes(RHOS, remainder)
    assert np.median(slopes) == pytest.approx(3.0, abs=0.1)
    assert ((slopes > 2.7) & (slopes < 3.5)).all(), slopes
    # Negative control: without the second-order term the residual only shrinks as ρ².
    first_order = scores - np.stack([dec.loss + r * dec.grad_norm for r in RHOS])
    assert np.median(_slopes(RHOS, first_order)) == pytest.approx(2.0, abs=0.1)


def test_theorem_3_3_bound_violations_vanish_faster_than_the_bound_terms(smooth_model):
    """Where the bound without remainder fails, it fails by O(ρ³)."""
    task, model = smooth_model
    ids = np.arange(12, 24)
    dec = decompose(task, model, ids, power_iters=1000, tol=1e-13)
    for small, large in zip(RHOS[1:], RHOS[:-1]):
        v_small = np.maximum(_scores(task, model, ids, small) - dec.upper_bound(small), 0)
        v_large = np.maximum(_scores(task, model, ids, large) - dec.upper_bound(large), 0)
        # Halving ρ: violations shrink by at least ~8x (cubic), with slack for the ρ⁴ term.
        assert (v_small <= v_large / 6 + 1e-13).all()


@pytest.mark.parametrize('rho', [0.05, 0.3, 1.0])
def test_proposition_3_2_and_theorem_3_1(smooth_model, rho):
    task, model = smooth_model
    ids = np.arange(24)
    stats = probe_pseudo_labels(task, model, ids, SAMPerturbation(rho=rho), chunk_size=5)
    score = stats.perturbed_loss
    kept = stats.extras['label_kept'] == 1
    true_at_hat = stats.extras['true_loss_at_pseudo_eps']
    # Both ε̂ and ε̄ lie in the ρ-ball: the larger true loss bounds the true maximum below.
    true_max = np.maximum(true_at_hat, stats.extras['true_perturbed_loss'])
    assert kept.any()
    # Proposition 3.2: where the label survives ε̂, l(ŷ; θ+ε̂) <= l(ȳ; θ+ε̂) <= max l(ȳ).
    assert (score[kept] <= true_at_hat[kept] + 1e-12).all()
    assert (score[kept] <= true_max[kept] + 1e-12).all()
    # ... and the margin δ_x is exactly zero there.
    assert (stats.extras['margin'][kept] == 0).all()
    # Theorem 3.1 on every sample: l(ŷ; θ+ε̂) <= max l(ȳ) + δ_x.
    assert (score <= true_max + stats.extras['margin'] + 1e-12).all()
    # Non-trivial: some kept pseudo-labels are wrong, where the inequality is strict.
    wrong = kept & (stats.extras['true_clean_loss'] > stats.clean_loss + 1e-9)
    assert wrong.any()
    assert (score[wrong] < true_at_hat[wrong]).all()


def test_proposition_3_2_condition_matters(smooth_model):
    """Where the label does not survive, the pseudo-label loss can exceed the true loss."""
    task, model = smooth_model
    stats = probe_pseudo_labels(task, model, np.arange(24), SAMPerturbation(rho=1.0))
    flipped = stats.extras['label_kept'] < 1
    assert flipped.any()
    assert (stats.perturbed_loss[flipped] > stats.extras['true_loss_at_pseudo_eps'][flipped]
            ).any()
