"""ε against hand-computed values on a one-layer model, for SAM (several q) and ASAM."""
import numpy as np
import pytest
import torch
from torch import nn

from saal_tasks.core.perturbation import ASAMPerturbation, SAMPerturbation
from saal_tasks.scorers import SharpnessScorer

from conftest import make_task


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _hand_case(seed=0):
    rng = np.random.default_rng(seed)
    W = 0.1 * rng.normal(size=(10, 64))  # moderate logits: p is far from one-hot
    x = rng.normal(size=64)
    p = _softmax(W @ x)
    y = int(np.argmax(p))
    onehot = np.eye(10)[y]
    g = np.outer(p - onehot, x)  # d CE / dW for a bias-free linear layer
    return W, x, y, g


def test_sam_q2_epsilon_matches_hand_value():
    W, x, y, g = _hand_case()
    eps = SAMPerturbation(rho=0.05).epsilon([torch.tensor(g)], [torch.tensor(W)])[0].numpy()
    np.testing.assert_allclose(eps, 0.05 * g / np.linalg.norm(g), rtol=1e-10)
    assert np.linalg.norm(eps) == pytest.approx(0.05, rel=1e-12)


@pytest.mark.parametrize('q', [1.0, 1.5, 3.0])
def test_sam_dual_norm_epsilon_matches_hand_value(q):
    W, x, y, g = _hand_case(1)
    p = q / (q - 1) if q > 1 else np.inf
    expected = 0.05 * np.sign(g) * np.abs(g) ** (q - 1) / (np.sum(np.abs(g) ** q) ** (1 - 1 / q))
    eps = SAMPerturbation(rho=0.05, q=q).epsilon([torch.tensor(g)], [torch.tensor(W)])[0]
    np.testing.assert_allclose(eps.numpy(), expected, rtol=1e-10)
    # ε lies on the boundary of the Lp ball of radius rho (Hölder's equality case).
    norm = np.abs(eps.numpy()).max() if np.isinf(p) else np.sum(np.abs(eps.numpy()) ** p) ** (1 / p)
    assert norm == pytest.approx(0.05, rel=1e-9)


def test_asam_epsilon_matches_hand_value():
    W, x, y, g = _hand_case(2)
    eps = ASAMPerturbation(rho=0.05).epsilon([torch.tensor(g)], [torch.tensor(W)])[0].numpy()
    np.testing.assert_allclose(eps, W ** 2 * g * 0.05 / np.linalg.norm(np.abs(W) * g),
                               rtol=1e-10)


@pytest.mark.parametrize('pert', [SAMPerturbation(0.1), SAMPerturbation(0.1, q=3),
                                  ASAMPerturbation(0.1)])
def test_batched_epsilon_equals_per_sample(pert):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=gen, dtype=torch.float64),
              torch.randn(3, generator=gen, dtype=torch.float64)]
    grads = [torch.randn(5, 4, 3, generator=gen, dtype=torch.float64),
             torch.randn(5, 3, generator=gen, dtype=torch.float64)]
    batched = pert.epsilon(grads, params, batched=True)
    for i in range(5):
        single = pert.epsilon([g[i] for g in grads], params)
        for b, s in zip(batched, single):
            torch.testing.assert_close(b[i], s, rtol=1e-13, atol=0)


def test_zero_gradient_gives_zero_epsilon():
    eps = SAMPerturbation().epsilon([torch.zeros(3)], [torch.ones(3)])
    assert torch.equal(eps[0], torch.zeros(3))


@pytest.mark.parametrize('rho', [0, -1, float('nan'), float('inf'), '0.05'])
def test_invalid_rho(rho):
    for cls in (SAMPerturbation, ASAMPerturbation):
        with pytest.raises(ValueError, match='rho must be a finite number > 0'):
            cls(rho=rho)


def test_invalid_q():
    with pytest.raises(ValueError, match='q must be a finite number >= 1'):
        SAMPerturbation(q=0.5)


@pytest.mark.parametrize('pert_cfg', [dict(type='SAMPerturbation', rho=0.05),
                                      dict(type='ASAMPerturbation', rho=0.05)])
def test_scorer_score_is_hand_computed_perturbed_loss(pert_cfg):
    """End to end on a one-layer model: score = CE((W + ε) x, ŷ) with ε computed by hand."""
    task = make_task()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 64, generator=torch.Generator().manual_seed(3),
                                          dtype=torch.float64) * 0.3)
    ids = np.arange(6)
    scorer = SharpnessScorer(perturbation=pert_cfg, engine=dict(type='ReferenceEngine'))
    result = scorer.score(task, model, ids, np.random.default_rng(0))
    W = model[1].weight.detach().numpy()
    for i, (_, x) in enumerate(task.pool_batches(ids, 1)):
        x = x.flatten().numpy()
        p = _softmax(W @ x)
        y = int(np.argmax(p))
        g = np.outer(p - np.eye(10)[y], x)
        if pert_cfg['type'] == 'SAMPerturbation':
            eps = 0.05 * g / np.linalg.norm(g)
        else:
            eps = W ** 2 * g * 0.05 / np.linalg.norm(np.abs(W) * g)
        expected = -np.log(_softmax((W + eps) @ x)[y])
        assert result.scores[i] == pytest.approx(expected, rel=1e-10)
        assert expected > -np.log(p[y])  # the perturbation increases the loss
