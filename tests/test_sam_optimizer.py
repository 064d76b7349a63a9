"""Tests of the SAM / ASAM optimizer (saal_tasks.optim.sam)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from saal_tasks.optim import SAM
from saal_tasks.registry import OPTIMIZERS

# A non-quadratic objective with an analytic gradient, over two parameter tensors:
#   L(a, B) = 0.5 a^T A a + c^T a + sum(B^3) / 3,   dL/da = A a + c,   dL/dB = B^2.
# The gradient changes with the weights, so the SAM step differs from a plain SGD step.
A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 3.0]], dtype=torch.float64)
C = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)


def _loss(a: Tensor, b: Tensor) -> Tensor:
    return 0.5 * a @ A @ a + C @ a + (b**3).sum() / 3


def _grads(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return A @ a + C, b**2


def _init() -> tuple[nn.Parameter, nn.Parameter]:
    a = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([[0.3, -1.2], [2.0, 0.7]], dtype=torch.float64))
    return a, b


def _sam_step(opt: SAM, a: Tensor, b: Tensor) -> Tensor:
    def closure() -> Tensor:
        opt.zero_grad()
        loss = _loss(a, b)
        loss.backward()
        return loss

    return opt.step(closure)


@pytest.mark.parametrize('adaptive', [False, True])
def test_sam_step_matches_hand_computed_update(adaptive: bool) -> None:
    lr, rho = 0.1, 0.05
    a, b = _init()
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = SAM([a, b], base_optimizer=dict(type='SGD', lr=lr), rho=rho, adaptive=adaptive)
    loss = _sam_step(opt, a, b)

    ga, gb = _grads(a0, b0)
    if adaptive:
        # ASAM: e = rho * w^2 * g / ||w * g|| with the norm over all parameters.
        norm = torch.sqrt(((a0 * ga)**2).sum() + ((b0 * gb)**2).sum())
        ea, eb = rho * a0**2 * ga / norm, rho * b0**2 * gb / norm
    else:
        norm = torch.sqrt((ga**2).sum() + (gb**2).sum())
        ea, eb = rho * ga / norm, rho * gb / norm
    ga_adv, gb_adv = _grads(a0 + ea, b0 + eb)
    torch.testing.assert_close(a.detach(), a0 - lr * ga_adv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.detach(), b0 - lr * gb_adv, rtol=1e-12, atol=1e-12)
    # The loss at the unperturbed weights is returned, as torch optimizers do.
    torch.testing.assert_close(loss.detach(), _loss(a0, b0))
    # And the update is not just plain SGD.
    assert not torch.allclose(a.detach(), a0 - lr * ga, rtol=0, atol=1e-6)


def test_per_group_rho_override() -> None:
    lr = 0.2
    a, b = _init()
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = SAM([{'params': [a]}, {'params': [b], 'rho': 0.3}], torch.optim.SGD, rho=0.1, lr=lr)
    assert [g['rho'] for g in opt.param_groups] == [0.1, 0.3]
    _sam_step(opt, a, b)
    ga, gb = _grads(a0, b0)
    norm = torch.sqrt((ga**2).sum() + (gb**2).sum())  # still one global norm
    ga_adv, gb_adv = _grads(a0 + 0.1 * ga / norm, b0 + 0.3 * gb / norm)
    torch.testing.assert_close(a.detach(), a0 - lr * ga_adv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.detach(), b0 - lr * gb_adv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('adaptive', [False, True])
def test_weights_restored_bit_exactly_before_base_step(adaptive: bool) -> None:
    torch.manual_seed(0)
    # float32 with irregular values: subtracting e(w) again would not round-trip exactly.
    model = nn.Linear(7, 3)
    originals = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), dict(type='SGD', lr=0.0), rho=0.37, adaptive=adaptive)
    x, y = torch.randn(5, 7), torch.randn(5, 3)
    seen_in_closure: list[list[Tensor]] = []

    def closure() -> Tensor:
        seen_in_closure.append([p.detach().clone() for p in model.parameters()])
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert len(seen_in_closure) == 2
    # The closure ran first at the original weights, then at perturbed weights...
    assert all(torch.equal(s, o) for s, o in zip(seen_in_closure[0], originals))
    assert all(not torch.equal(s, o) for s, o in zip(seen_in_closure[1], originals))
    # ...and with lr=0 the weights are bit-identical to the originals afterwards.
    assert all(torch.equal(p.detach(), o) for p, o in zip(model.parameters(), originals))
    # The gradients left behind are the ones from the closure (fresh, not accumulated).
    assert all(p.grad is not None for p in model.parameters())


def test_closure_error_restores_weights() -> None:
    a, b = _init()
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = SAM([a, b], dict(type='SGD', lr=0.1), rho=0.5)
    calls = []

    def failing() -> Tensor:
        calls.append(1)
        if len(calls) == 2:  # fails at the perturbed weights
            raise KeyError('boom')
        opt.zero_grad()
        loss = _loss(a, b)
        loss.backward()
        return loss

    with pytest.raises(KeyError):
        opt.step(failing)
    assert torch.equal(a.detach(), a0) and torch.equal(b.detach(), b0)
    # The optimizer is usable again afterwards.
    _sam_step(opt, a, b)
    assert not torch.equal(a.detach(), a0)


def test_step_without_closure_raises() -> None:
    a, b = _init()
    opt = SAM([a, b], dict(type='SGD', lr=0.1))
    _loss(a, b).backward()
    with pytest.raises(ValueError, match='closure'):
        opt.step()


def test_explicit_first_and_second_step() -> None:
    lr, rho = 0.1, 0.05
    a, b = _init()
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = SAM([a, b], dict(type='SGD', lr=lr), rho=rho)
    _loss(a, b).backward()
    opt.first_step(zero_grad=True)
    assert a.grad is None and b.grad is None
    with pytest.raises(RuntimeError, match='twice'):
        opt.first_step()
    ga, gb = _grads(a0, b0)
    norm = torch.sqrt((ga**2).sum() + (gb**2).sum())
    torch.testing.assert_close(a.detach(), a0 + rho * ga / norm, rtol=1e-12, atol=1e-12)
    _loss(a, b).backward()
    opt.second_step(zero_grad=True)
    assert a.grad is None
    ga_adv, _ = _grads(a0 + rho * ga / norm, b0 + rho * gb / norm)
    torch.testing.assert_close(a.detach(), a0 - lr * ga_adv, rtol=1e-12, atol=1e-12)


def test_rho_zero_equals_base_optimizer() -> None:
    a, b = _init()
    ref_a, ref_b = _init()
    sam = SAM([a, b], dict(type='SGD', lr=0.1, momentum=0.9), rho=0.0)
    ref = torch.optim.SGD([ref_a, ref_b], lr=0.1, momentum=0.9)
    for _ in range(3):
        _sam_step(sam, a, b)
        ref.zero_grad()
        _loss(ref_a, ref_b).backward()
        ref.step()
    assert torch.equal(a.detach(), ref_a.detach()) and torch.equal(b.detach(), ref_b.detach())


def test_zero_grad_param_groups_and_lr_scheduler_are_shared() -> None:
    a, b = _init()
    opt = SAM([a, b], dict(type='SGD', lr=0.1), rho=0.05)
    assert isinstance(opt.base_optimizer, torch.optim.SGD)
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.param_groups[0]['rho'] == 0.05 and opt.param_groups[0]['adaptive'] is False
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _sam_step(opt, a, b)
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]['lr'] == pytest.approx(0.05)
    _loss(a, b).backward()
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    # A group added later gets SAM's defaults and reaches the base optimizer.
    extra = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt.add_param_group({'params': [extra]})
    assert len(opt.base_optimizer.param_groups) == 2
    assert opt.param_groups[1]['rho'] == 0.05 and opt.param_groups[1]['lr'] == 0.1


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)

    def train_step(opt: SAM, net: nn.Module) -> None:
        def closure() -> Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            return loss

        opt.step(closure)

    opt = SAM(model.parameters(), dict(type='Adam', lr=0.01), rho=0.1, adaptive=True)
    for _ in range(2):
        train_step(opt, model)
    saved = copy.deepcopy(opt.state_dict())
    assert saved['param_groups'][0]['rho'] == 0.1
    assert saved['param_groups'][0]['adaptive'] is True
    assert set(saved['state'][0]) >= {'exp_avg', 'exp_avg_sq', 'step'}

    clone = copy.deepcopy(model)
    opt2 = SAM(clone.parameters(), dict(type='Adam', lr=0.5), rho=0.9, adaptive=False)
    opt2.load_state_dict(saved)
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.state is opt2.base_optimizer.state
    assert opt2.param_groups[0]['lr'] == 0.01 and opt2.param_groups[0]['rho'] == 0.1
    assert opt2.param_groups[0]['adaptive'] is True
    for p, q in zip(model.parameters(), clone.parameters()):
        for key in ('exp_avg', 'exp_avg_sq'):
            assert torch.equal(opt.state[p][key], opt2.state[q][key])
    # Both continue identically.
    train_step(opt, model)
    train_step(opt2, clone)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


def test_registry_and_constructor_forms() -> None:
    a, b = _init()
    built = OPTIMIZERS.build(
        dict(type='SAM', params=[a, b], base_optimizer=dict(type='SGD', lr=0.1, momentum=0.9),
             rho=0.2))
    assert isinstance(built, SAM) and isinstance(built.base_optimizer, torch.optim.SGD)
    assert built.param_groups[0]['momentum'] == 0.9 and built.param_groups[0]['rho'] == 0.2
    # Torch optimizers are reachable through our registry (mmengine is the parent).
    adam = OPTIMIZERS.build(dict(type='Adam', lr=1e-3, params=[a]))
    assert isinstance(adam, torch.optim.Adam)
    # Class + kwargs, and a bare type name with kwargs merged in.
    by_class = SAM([a], torch.optim.SGD, lr=0.3)
    assert by_class.param_groups[0]['lr'] == 0.3
    by_name = SAM([a], 'SGD', lr=0.4)
    assert isinstance(by_name.base_optimizer, torch.optim.SGD)
    assert by_name.param_groups[0]['lr'] == 0.4
    # deepcopy keeps groups shared with the (copied) base optimizer.
    twin = copy.deepcopy(built)
    assert twin.param_groups is twin.base_optimizer.param_groups


def test_invalid_arguments() -> None:
    a, _ = _init()
    with pytest.raises(ValueError, match='rho'):
        SAM([a], dict(type='SGD', lr=0.1), rho=-0.1)
    with pytest.raises(TypeError, match='base_optimizer'):
        SAM([a], base_optimizer=42)  # type: ignore[arg-type]
