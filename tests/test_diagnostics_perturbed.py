"""The pseudo-label probe: SAAL score parity, ψ(ρ), the margin, ground-truth losses."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saal_tasks.core.perturbation import ASAMPerturbation, SAMPerturbation
from saal_tasks.diagnostics import (perturbed_losses, probe_pseudo_labels, pseudo_targets,
                                    summarize_probe)
from saal_tasks.scorers import SharpnessScorer

from conftest import bit_identical, snapshot
from diagnostics_tasks import TensorTask

IDS = np.arange(300, 330)


def _manual(model, x, target, perturbation):
    """Reference: one sample's ε from autograd, weights moved on a copy; logits at θ + ε."""
    moved = copy.deepcopy(model)
    loss = F.cross_entropy(moved(x), target)
    params = list(moved.parameters())
    grads = torch.autograd.grad(loss, params)
    eps = perturbation.epsilon(list(grads), [p.detach() for p in params])
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.add_(e)
        return moved(x)


@pytest.mark.parametrize('pert', [dict(type='SAMPerturbation', rho=0.05),
                                  dict(type='ASAMPerturbation', rho=0.5)])
def test_probe_score_equals_the_scorer(digits_task, trained_cnn, pert):
    scorer = SharpnessScorer(perturbation=pert, engine=dict(type='ReferenceEngine'))
    ref = scorer.score(digits_task, trained_cnn, IDS, np.random.default_rng(0))
    before = snapshot(trained_cnn)
    stats = probe_pseudo_labels(digits_task, trained_cnn, IDS, scorer.perturbation,
                                chunk_size=7)
    assert bit_identical(trained_cnn, before)
    assert np.array_equal(stats.sample_ids, IDS)
    np.testing.assert_allclose(stats.perturbed_loss, ref.scores, rtol=1e-9)
    np.testing.assert_allclose(stats.clean_loss, ref.extras['clean_loss'], rtol=1e-12)


def test_label_kept_and_margin_against_the_logits(digits_task, trained_cnn):
    # A ρ at which some pseudo-labels flip (4 of 16 survive), so the margin is not all 0.
    pert = SAMPerturbation(rho=0.1)
    ids = IDS[:16]
    stats = probe_pseudo_labels(digits_task, trained_cnn, ids, pert, chunk_size=5)
    kept, margin, truth_at = [], [], []
    for i in ids:
        _, x = next(digits_task.pool_batches(np.array([i]), 1))
        y_hat = trained_cnn(x).argmax(1)
        y_true = torch.tensor([digits_task.ground_truth(np.array([i]))[int(i)]])
        logits = _manual(trained_cnn, x, y_hat, pert)
        kept.append(float(logits.argmax(1) == y_hat))
        # Theorem 3.1's margin as the paper defines it: [max_j f_j − f_ŷ]₊ at θ + ε̂.
        margin.append(float((logits.max() - logits[0, y_hat]).clamp_min(0)))
        truth_at.append(float(F.cross_entropy(logits, y_true)))
    assert 0 < sum(kept) < len(kept)  # both cases occur, so the checks below can fail
    np.testing.assert_array_equal(stats.extras['label_kept'], kept)
    np.testing.assert_allclose(stats.extras['margin'], margin, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.extras['true_loss_at_pseudo_eps'], truth_at, rtol=1e-9)
    assert (stats.extras['margin'][np.array(kept) == 1] == 0).all()


def test_true_perturbed_loss_uses_the_true_labels_own_epsilon(digits_task, trained_cnn):
    pert = ASAMPerturbation(rho=0.5)
    ids = IDS[:8]
    stats = probe_pseudo_labels(digits_task, trained_cnn, ids, pert, chunk_size=3)
    sets = perturbed_losses(digits_task, trained_cnn, ids, pert, chunk_size=4)
    expected = []
    for i in ids:
        _, x = next(digits_task.pool_batches(np.array([i]), 1))
        y_true = torch.tensor([digits_task.ground_truth(np.array([i]))[int(i)]])
        expected.append(float(F.cross_entropy(_manual(trained_cnn, x, y_true, pert), y_true)))
    np.testing.assert_allclose(stats.extras['true_perturbed_loss'], expected, rtol=1e-9)
    np.testing.assert_allclose(sets.perturbed_loss, expected, rtol=1e-9)
    assert not np.allclose(stats.extras['true_perturbed_loss'], stats.perturbed_loss)


def test_one_at_a_time_path_equals_vmap():
    task, structured = TensorTask(num_samples=15), TensorTask(num_samples=15, structured=True)
    model = task.train(task.build_model(0), np.arange(15), seed=0)
    pert = SAMPerturbation(rho=0.3)
    a = probe_pseudo_labels(task, model, np.arange(15), pert, chunk_size=4)
    b = probe_pseudo_labels(structured, model, np.arange(15), pert, chunk_size=4)
    np.testing.assert_allclose(a.perturbed_loss, b.perturbed_loss, rtol=1e-10)
    for key in a.extras:
        np.testing.assert_allclose(a.extras[key], b.extras[key], rtol=1e-10, atol=1e-14)
    c = perturbed_losses(task, model, np.arange(15), pert, targets_fn=pseudo_targets)
    np.testing.assert_allclose(c.perturbed_loss, a.perturbed_loss, rtol=1e-10)


def test_probe_summary_known_values():
    from saal_tasks.diagnostics.perturbed import PerturbedStats
    stats = PerturbedStats(
        sample_ids=np.arange(4), clean_loss=np.zeros(4),
        perturbed_loss=np.array([1.0, 2.0, 3.0, 4.0]),
        extras={'label_kept': np.array([1.0, 1.0, 0.0, 0.5]),
                'margin': np.array([0.0, 0.0, 1.0, 0.5]),
                'true_loss_at_pseudo_eps': np.array([1.5, 1.0, 2.5, 4.0]),
                'true_perturbed_loss': np.array([2.0, 2.5, 2.0, 5.0])})
    s = summarize_probe(stats)
    assert s['psi'] == pytest.approx(0.625)
    assert s['relative_margin'] == pytest.approx(np.mean([0, 0, 0.5, 0.1]))
    # Prop. 3.2 among kept samples (0 and 1): 1 <= 1.5 holds, 2 <= 1.0 fails.
    assert s['proposition_3_2_holds_fraction'] == pytest.approx(0.5)
    # Theorem 3.1 with max(ε̂, ε̄) truth: 1<=2, 2<=2.5, 3<=2.5+1, 4<=5+0.5 all hold.
    assert s['theorem_3_1_holds_fraction'] == pytest.approx(1.0)
    # Score below the SAM-maximised true loss: fails only for sample 2 (3 > 2).
    assert s['pseudo_below_true_fraction'] == pytest.approx(0.75)
