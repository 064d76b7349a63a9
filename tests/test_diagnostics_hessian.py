"""Theorem 3.3's terms: power iteration and per-sample loss, gradient norm and λ₁."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from saal_tasks.diagnostics import decompose, power_iteration, set_top_eigenvalue
from saal_tasks.diagnostics.functional import true_targets

from conftest import bit_identical, snapshot
from diagnostics_tasks import QuadraticTask, TensorTask


def _operator(matrices: torch.Tensor):
    """hvp(v, idx) for a batch of explicit symmetric matrices ``[B, D, D]``."""
    def hvp(v, idx):
        return {'w': torch.einsum('bij,bj->bi', matrices[idx], v['w'])}
    return hvp


def test_power_iteration_finds_dominant_eigenvalues():
    g = torch.Generator().manual_seed(0)
    eig = torch.tensor([[5.0, 1.0, 0.5, -0.2], [-4.0, 3.0, 1.0, 0.0], [2.0, 1.9, 0.1, 0.0]],
                       dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 4, 4, generator=g, dtype=torch.float64))
    mats = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    init = {'w': torch.randn(3, 4, generator=g, dtype=torch.float64)}
    lam, vec, iters, conv = power_iteration(_operator(mats), init, max_iters=400, tol=1e-12)
    # Dominant by magnitude: 5, -4, and 2 (slow: ratio 1.9/2).
    np.testing.assert_allclose(lam.numpy(), [5.0, -4.0, 2.0], rtol=1e-8)
    assert conv.all() and iters[0] < iters[2]  # a larger eigen-gap converges faster
    # Each returned vector is a unit eigenvector: H v = λ v.
    hv = torch.einsum('bij,bj->bi', mats, vec['w'])
    torch.testing.assert_close(hv, lam[:, None] * vec['w'], atol=1e-5, rtol=0)
    # A shift by -5 turns the first operator's dominant eigenvalue into -0.2 - 5.
    shifted, _, _, _ = power_iteration(_operator(mats), init, 400, 1e-12,
                                       shift=torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64))
    assert shifted[0].item() == pytest.approx(-5.2, rel=1e-8)


def test_power_iteration_stops_samples_that_converged():
    calls = []
    eig = torch.tensor([[3.0, 0.0], [1.0, 0.999]], dtype=torch.float64)
    mats = torch.diag_embed(eig)

    def hvp(v, idx):
        calls.append(len(idx))
        return _operator(mats)(v, idx)
    init = {'w': torch.ones(2, 2, dtype=torch.float64)}
    lam, _, iters, conv = power_iteration(hvp, init, max_iters=50, tol=1e-10)
    assert lam[0].item() == pytest.approx(3.0) and conv[0] and not conv[1]
    assert iters.tolist() == [iters[0].item(), 50]
    # After the first sample converged only the second is multiplied.
    assert calls[0] == 2 and calls[-1] == 1 and sum(calls) < 2 * 50


@pytest.mark.parametrize('vectorize', [True, False])
def test_quadratic_task_known_answers(vectorize):
    # Sample 1's most negative eigenvalue dominates: λ₁ = 1.5 needs the shifted second run.
    eig = np.array([[4.0, 2.0, 1.0, 0.5], [1.5, -0.5, -3.0, -6.0], [-1.0, -2.0, 0.3, 0.2]])
    task = QuadraticTask(eig, seed=1)
    model = task.build_model(0)
    dec = decompose(task, model, np.arange(3), power_iters=300, tol=1e-12, chunk_size=2,
                    vectorize=vectorize)
    np.testing.assert_allclose(dec.lambda_max, [4.0, 1.5, 0.3], rtol=1e-6)
    w = task.w0
    grad = torch.einsum('bij,j->bi', task.A, w) + task.b
    loss = 0.5 * torch.einsum('i,bij,j->b', w, task.A, w) + task.b @ w
    np.testing.assert_allclose(dec.grad_norm, grad.norm(dim=1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(dec.loss, loss.numpy(), rtol=1e-12)
    u = grad / grad.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(dec.grad_curvature,
                               torch.einsum('bi,bij,bj->b', u, task.A, u).numpy(), rtol=1e-10)
    assert dec.converged.all()
    assert dec.iterations[1] > dec.iterations[0]  # the shifted run adds iterations


def _exact_hessian(model, loss_of_flat):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflatten(v):
        out, s = {}, 0
        for n, shape in zip(names, shapes):
            k = int(np.prod(shape))
            out[n] = v[s:s + k].reshape(shape)
            s += k
        return out
    f = lambda v: loss_of_flat(unflatten(v))  # noqa: E731
    return torch.autograd.functional.hessian(f, flat), torch.autograd.functional.jacobian(f, flat)


@pytest.mark.parametrize('vectorize', [True, False])
def test_mlp_matches_exact_hessian(vectorize):
    task = TensorTask(num_samples=12, structured=not vectorize)
    model = task.train(task.build_model(0), np.arange(12), seed=0)
    before = snapshot(model)
    ids = np.array([0, 3, 5, 7, 11])
    dec = decompose(task, model, ids, power_iters=2000, tol=1e-13, chunk_size=3)
    assert bit_identical(model, before)
    for k, i in enumerate(ids):
        x = task.x[i:i + 1]
        with torch.no_grad():
            y = model(x).argmax(1)  # the pseudo-label
        hess, grad = _exact_hessian(
            model, lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))
        eig = torch.linalg.eigvalsh(hess)
        assert dec.lambda_max[k] == pytest.approx(eig[-1].item(), rel=1e-6, abs=1e-9)
        assert dec.grad_norm[k] == pytest.approx(grad.norm().item(), rel=1e-10)
        u = grad / grad.norm()
        assert dec.grad_curvature[k] == pytest.approx((u @ hess @ u).item(), rel=1e-8)
        assert dec.grad_curvature[k] <= dec.lambda_max[k] + 1e-9  # a Rayleigh quotient


def test_vectorized_equals_one_at_a_time():
    vec_task, loop_task = TensorTask(num_samples=20), TensorTask(num_samples=20, structured=True)
    model = vec_task.train(vec_task.build_model(0), np.arange(20), seed=0)
    ids = np.arange(20)[::-1].copy()  # order is kept
    a = decompose(vec_task, model, ids, power_iters=50, tol=1e-10, chunk_size=6, seed=3)
    b = decompose(loop_task, model, ids, power_iters=50, tol=1e-10, chunk_size=6, seed=3)
    assert np.array_equal(a.sample_ids, ids) and np.array_equal(b.sample_ids, ids)
    for field in ('loss', 'grad_norm', 'grad_curvature'):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-10)
    np.testing.assert_allclose(a.lambda_max, b.lambda_max, rtol=1e-6)


def test_set_top_eigenvalue_matches_exact_hessian_of_the_mean_loss():
    task = TensorTask(num_samples=16)
    model = task.train(task.build_model(0), np.arange(16), seed=0)
    ids = np.arange(16)
    lam, _ = set_top_eigenvalue(task, model, ids, targets_fn=true_targets, power_iters=500,
                                tol=1e-13, batch_size=8)
    hess, _ = _exact_hessian(model, lambda p: F.cross_entropy(
        functional_call(model, p, (task.x,)), task.y))
    assert lam == pytest.approx(torch.linalg.eigvalsh(hess)[-1].item(), rel=1e-6)


def test_decomposition_on_the_digits_cnn(digits_task, trained_cnn):
    """Bit-identical weights, finite values, l and ‖g‖ against plain autograd."""
    before = snapshot(trained_cnn)
    ids = np.arange(300, 304)
    dec = decompose(digits_task, trained_cnn, ids, power_iters=6, chunk_size=4)
    assert bit_identical(trained_cnn, before)
    assert np.isfinite(dec.lambda_max).all() and (dec.grad_norm > 0).all()
    _, x = next(digits_task.pool_batches(ids[:1], 1))
    y = trained_cnn(x).argmax(1)
    loss = F.cross_entropy(trained_cnn(x), y)
    grads = torch.autograd.grad(loss, list(trained_cnn.parameters()))
    assert dec.grad_norm[0] == pytest.approx(
        torch.cat([g.reshape(-1) for g in grads]).norm().item(), rel=1e-10)
    assert dec.loss[0] == pytest.approx(loss.item(), rel=1e-12)


def test_bad_arguments_are_refused(digits_task, trained_cnn):
    with pytest.raises(ValueError, match='power_iters must be >= 2'):
        decompose(digits_task, trained_cnn, np.arange(3), power_iters=1)
    with pytest.raises(ValueError, match="reduction must be 'sum' or 'mean'"):
        decompose(digits_task, trained_cnn, np.arange(3), reduction='max')
