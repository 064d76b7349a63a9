"""FastExactEngine's factorisation check: parameters used outside their layer's forward fall back.

Each model below uses a trainable parameter in a way the per-layer factors do not see (or, for
the supported ones, in a way they do); every score must equal ReferenceEngine's in float64.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn

from saal_tasks.scorers import SharpnessScorer
from saal_tasks.scorers import engine_guard
from saal_tasks.scorers.engine_guard import FactorisationCheck, structure_key

from conftest import bit_identical, snapshot
from test_fast_engine import ASAM, IDS, SAM, TokenNet, _randomised, _scores

GUARD = "used outside their layer's forward"
FAST = dict(type='FastExactEngine', chunk_size=10)


class Trunk(nn.Module):
    """Conv features of an 8x8 digit: ``[B, 1, 8, 8] -> [B, 16]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return F.avg_pool2d(torch.tanh(self.conv(x)), 4).flatten(1)


class CosineHead(nn.Module):
    """Cosine classifier: ``fc`` is never called, its weight is normalised in this forward."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.fc = nn.Linear(16, 10, bias=False)

    def forward(self, x):
        z = F.normalize(self.trunk(x), dim=1)
        return 5.0 * F.linear(z, F.normalize(self.fc.weight, dim=1))


class FunctionalReuse(nn.Module):
    """``fc`` is called once and its weight reused functionally on a second embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.mix = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        z = self.trunk(x)
        return self.fc(z) + F.linear(torch.tanh(self.mix(z)), self.fc.weight)


class HiddenTie(nn.Module):
    """``dec`` reads ``enc``'s weight without registering it (``dec`` keeps only its bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.enc = nn.Linear(16, 16)
        self.dec = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 10)
        del self.dec.weight  # out of dec's parameters ...
        self.dec.__dict__['weight'] = self.enc.weight  # ... and read by its forward

    def forward(self, x):
        return self.fc(torch.tanh(self.dec(torch.tanh(self.enc(self.trunk(x))))))


class VisibleTie(nn.Module):
    """The same tie, registered in both modules (plan_layers sees the shared parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.enc = nn.Linear(16, 16)
        self.dec = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 10)
        self.dec.weight = self.enc.weight

    def forward(self, x):
        return self.fc(torch.tanh(self.dec(torch.tanh(self.enc(self.trunk(x))))))


class TwiceCalled(nn.Module):
    """``mix`` called twice through ``__call__`` (recorded twice: supported)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.mix = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.tanh(self.mix(torch.tanh(self.mix(self.trunk(x))))))


class TwiceBypassed(TwiceCalled):
    """``mix`` called twice, the second time as ``mix.forward(h)``: no hooks see that call."""

    def forward(self, x):
        return self.fc(torch.tanh(self.mix.forward(torch.tanh(self.mix(self.trunk(x))))))


class DeadRead(nn.Module):
    """A read with zero gradient at θ: ``fc.bias`` gated through a ReLU that is off at θ.

    Autograd gives ``fc.bias`` no gradient from the gated term, so the gradient test passes;
    the reference engine still evaluates the gate at ``θ + ε``, which only the read watch sees.
    """

    def __init__(self, threshold: float = 1e-3) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.fc = nn.Linear(16, 10)
        self.threshold = threshold

    def forward(self, x):
        # With fc.bias = 0 (see the test) the gate and its gradient are 0 at θ; at θ + ε it
        # opens (‖ε_bias‖₁ > threshold) and sharpens the logits.
        gate = torch.relu(self.fc.bias.abs().sum() - self.threshold)
        return self.fc(self.trunk(x)) * (1 + 10 * gate)


def _lines() -> tuple[logging.Handler, list[str]]:
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    return Lines(), lines


def _logged(fn):
    """``fn()``'s result and the FastExactEngine lines it logged."""
    logger = MMLogger.get_current_instance()
    handler, lines = _lines()
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        out = fn()
    finally:
        logger.removeHandler(handler)
    return out, [line for line in lines if line.startswith('FastExactEngine:')]


def _assert_exact(task, model, pert, engine_cfg=FAST):
    """Fast scores equal the reference's within 1e-10 relative; parameters bit-identical.

    Returns:
        The scorer's engine and the FastExactEngine lines logged while it scored.
    """
    ref = _scores(task, model, dict(type='ReferenceEngine'), pert)
    assert ref.scores.std() > 0
    before = snapshot(model)
    scorer = SharpnessScorer(perturbation=pert, engine=engine_cfg)
    fast, said = _logged(lambda: scorer.score(task, model, IDS, np.random.default_rng(0)))
    assert bit_identical(model, before)
    assert np.array_equal(fast.sample_ids, ref.sample_ids)
    scale = np.maximum(np.abs(ref.scores), 1e-3)
    assert np.max(np.abs(fast.scores - ref.scores) / scale) <= 1e-10
    return scorer.engine, said


# --------------------------------------------------------------------------- caught
@pytest.mark.parametrize('pert', [SAM, ASAM])
@pytest.mark.parametrize('cls,names', [(CosineHead, 'fc.weight'),
                                       (FunctionalReuse, 'fc.weight'),
                                       (HiddenTie, 'enc.weight'),
                                       (TwiceBypassed, 'mix.weight, mix.bias')])
def test_use_outside_the_layer_falls_back_exactly(digits_task, cls, names, pert):
    model = _randomised(cls())
    engine, said = _assert_exact(digits_task, model, pert)
    guard = [line for line in said if GUARD in line]
    assert len(guard) == 1 and len(said) == 1, said  # one line, and no first-chunk line
    assert f'parameters {names} are {GUARD}' in guard[0]
    assert 'scoring with ReferenceEngine instead' in guard[0]
    assert engine.fallback_reason is not None and names in engine.fallback_reason


def test_dead_read_is_caught_by_the_read_watch(digits_task):
    model = _randomised(DeadRead())
    with torch.no_grad():
        model.fc.bias.zero_()  # the gate is shut at θ
    engine, said = _assert_exact(digits_task, model, SAM)
    assert 'fc.bias' in engine.fallback_reason and 'perturbed pass' in engine.fallback_reason
    assert len([line for line in said if GUARD in line]) == 1


def test_visible_tie_is_refused_by_the_plan(digits_task):
    engine, said = _assert_exact(digits_task, _randomised(VisibleTie()), SAM)
    assert 'dec.weight is shared with enc.weight' in engine.fallback_reason
    assert not engine.checked  # refused before the check


def test_a_failed_structure_is_remembered(digits_task, monkeypatch):
    model = _randomised(CosineHead())
    calls = []
    check = FactorisationCheck.check_gradients
    monkeypatch.setattr(FactorisationCheck, 'check_gradients',
                        lambda self, *a: calls.append(1) or check(self, *a))
    scorer = SharpnessScorer(perturbation=SAM, engine=FAST)
    first, said = _logged(lambda: scorer.score(digits_task, model, IDS,
                                               np.random.default_rng(0)))
    again, said_again = _logged(lambda: scorer.score(digits_task, model, IDS,
                                                     np.random.default_rng(0)))
    assert len(calls) == 1
    assert len(said) == 1 and GUARD in said[0] and said_again == []  # said once
    assert GUARD in scorer.engine.fallback_reason  # still known, still exact
    np.testing.assert_array_equal(again.scores, first.scores)


# --------------------------------------------------------------------------- supported
@pytest.mark.parametrize('pert', [SAM, ASAM])
def test_double_call_through_call_is_exact_without_fallback(digits_task, pert):
    engine, said = _assert_exact(digits_task, _randomised(TwiceCalled()), pert)
    assert engine.fallback_reason is None and engine.checked
    assert not any(GUARD in line for line in said)


def test_small_cnn_passes_once_per_structure(digits_task, trained_cnn, monkeypatch):
    before = snapshot(trained_cnn)
    grads = [torch.ones_like(p) for p in trained_cnn.parameters()]
    for p, g in zip(trained_cnn.parameters(), grads):
        p.grad = g.clone()
    calls = []
    check = FactorisationCheck.check_gradients
    monkeypatch.setattr(FactorisationCheck, 'check_gradients',
                        lambda self, *a: calls.append(1) or check(self, *a))
    scorer = SharpnessScorer(perturbation=SAM, engine=dict(type='FastExactEngine', chunk_size=7))
    first, said = _logged(lambda: scorer.score(digits_task, trained_cnn, IDS,
                                               np.random.default_rng(0)))
    assert scorer.engine.fallback_reason is None and scorer.engine.checked
    assert len(said) == 1 and 'factorisation checked against autograd' in said[0]
    again, said_again = _logged(lambda: scorer.score(digits_task, trained_cnn, IDS,
                                                     np.random.default_rng(0)))
    assert not scorer.engine.checked and len(calls) == 1  # once for this structure (4 chunks)
    assert not any(GUARD in line for line in said + said_again)
    # The check leaves the scores as they are: bit-equal to the unchecked second run.
    np.testing.assert_array_equal(first.scores, again.scores)
    assert bit_identical(trained_cnn, before)
    for g, p in zip(grads, trained_cnn.parameters()):
        assert torch.equal(g, p.grad)
    for p in trained_cnn.parameters():
        p.grad = None
    ref = _scores(digits_task, trained_cnn, dict(type='ReferenceEngine'), SAM)
    np.testing.assert_allclose(first.scores, ref.scores, rtol=1e-10)


def test_changed_structure_is_checked_again(digits_task):
    model = _randomised(TokenNet())
    scorer = SharpnessScorer(perturbation=SAM, engine=FAST)
    scorer.score(digits_task, model, IDS[:10], np.random.default_rng(0))
    assert scorer.engine.checked
    key = structure_key(digits_task, model)
    model.head = nn.Linear(6, 10).double()  # a new parameter: a new structure
    assert structure_key(digits_task, model) != key
    scorer.score(digits_task, model, IDS[:10], np.random.default_rng(0))
    assert scorer.engine.checked and scorer.engine.fallback_reason is None


def test_float32_tolerance():
    assert engine_guard.gradient_rtol(torch.float32) == 1e-4
    assert engine_guard.gradient_rtol(torch.float64) == 1e-9


@pytest.mark.parametrize('cls', [CosineHead, FunctionalReuse, HiddenTie, TwiceBypassed,
                                 DeadRead])
def test_without_the_check_these_scores_are_wrong(digits_task, cls, monkeypatch):
    """The models above do need the check: taken as checked, the engine is off by > 1e-3."""
    model = _randomised(cls())
    if cls is DeadRead:
        with torch.no_grad():
            model.fc.bias.zero_()
    monkeypatch.setattr(engine_guard.Verdicts, 'get', lambda self, key, model: (True, None))
    ref = _scores(digits_task, model, dict(type='ReferenceEngine'), SAM)
    fast = _scores(digits_task, model, FAST, SAM)
    assert np.max(np.abs(fast.scores - ref.scores) / np.abs(ref.scores)) > 1e-3
