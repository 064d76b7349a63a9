"""The per-layer rules against the perturbations' own formulas (float64, one layer)."""
from __future__ import annotations

import pytest
import torch

from saal_tasks.core.perturbation import NORM_EPS, ASAMPerturbation, SAMPerturbation
from saal_tasks.scorers.perturbation_rules import ASAMRule, rule_for

RHO = 0.05


def _asam_expected(grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """θ + ρ·θ²⊙g / (‖|θ|⊙g‖ + NORM_EPS) per sample, written out directly."""
    norm = (param.abs() * grad).flatten(1).norm(dim=1)
    scale = (RHO / (norm + NORM_EPS)).view(-1, *([1] * param.dim()))
    return param + scale * param * param * grad


@pytest.fixture
def layer() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    param = torch.randn(7, 13, generator=gen, dtype=torch.float64)
    grad = torch.randn(5, 7, 13, generator=gen, dtype=torch.float64)
    return param, grad


def test_rule_for_maps_exact_types_only():
    assert isinstance(rule_for(ASAMPerturbation(rho=RHO)), ASAMRule)
    assert rule_for(SAMPerturbation(rho=RHO, q=2)).low_rank

    class Custom(ASAMPerturbation):
        pass

    assert rule_for(Custom(rho=RHO)) is None


def test_asam_kept_route_matches_the_formula(layer):
    param, grad = layer
    rule = ASAMRule(RHO)
    prepared, terms = rule.prepare(grad.clone(), param)
    torch.testing.assert_close(terms, (param.abs() * grad).flatten(1).square().sum(1),
                               rtol=1e-13, atol=0)
    weights = rule.finish(prepared, param, rule.scale(terms))
    torch.testing.assert_close(weights, _asam_expected(grad, param), rtol=1e-13, atol=0)
    assert weights.data_ptr() == prepared.data_ptr()  # in the gradient's memory


def test_asam_recomputed_routes_match_the_formula(layer):
    param, grad = layer
    rule = ASAMRule(RHO)
    scale = rule.scale(rule.norm_terms(grad, param))
    expected = _asam_expected(grad, param)
    torch.testing.assert_close(rule.perturbed(grad.clone(), param, scale), expected,
                               rtol=1e-13, atol=0)
    shifted = rule.shifted(grad * scale.view(-1, 1, 1), param)
    torch.testing.assert_close(shifted, expected, rtol=1e-13, atol=0)


def test_asam_uses_the_parameter_as_it_is_now(layer):
    param, grad = layer
    rule = ASAMRule(RHO)
    before = rule.norm_terms(grad, param)
    with torch.no_grad():
        param.mul_(2.0)  # a rule made before a weight update must not keep the old values
    after = rule.norm_terms(grad, param)
    torch.testing.assert_close(after, 4 * before, rtol=1e-13, atol=0)
    scale = rule.scale(after)
    torch.testing.assert_close(rule.perturbed(grad.clone(), param, scale),
                               _asam_expected(grad, param), rtol=1e-13, atol=0)
