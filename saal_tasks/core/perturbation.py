"""Closed-form weight perturbations ε for the sharpness-aware acquisition (paper Eq. 3 / 11).

Each perturbation maps gradients ``g`` (one tensor per parameter) to ``ε`` with the same
shapes. With ``batched=True`` every gradient carries a leading sample dimension ``[B, ...]``
and the norms are taken per sample, which is what the vectorized engine needs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..registry import PERTURBATIONS
from .errors import ConfigError

#: Added to every norm so that a zero gradient (a sample the model fits perfectly) gives ε = 0
#: instead of NaN; the same constant the SAM and ASAM reference code uses.
NORM_EPS = 1e-12


def _per_sample_sum(tensors: Sequence[torch.Tensor], batched: bool) -> torch.Tensor:
    """Sum of all entries of all tensors: a scalar, or ``[B]`` when ``batched``."""
    parts = [t.reshape(t.shape[0], -1).sum(dim=1) if batched else t.sum() for t in tensors]
    if not parts:
        return torch.zeros(())
    total = parts[0]
    for part in parts[1:]:  # left to right, in the tensors' order (exact reproducibility)
        total = total + part
    return total


def _broadcast(scale: torch.Tensor, like: torch.Tensor, batched: bool) -> torch.Tensor:
    """Reshape a per-sample ``[B]`` scale so it broadcasts against ``like`` ``[B, ...]``."""
    return scale.reshape(-1, *([1] * (like.dim() - 1))) if batched else scale


def check_rho(rho: float) -> float:
    """Validate the radius ρ: a finite number > 0 (0 would make every score the plain loss).

    Raises:
        ConfigError: ρ is not a finite positive number.
    """
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) \
            or rho <= 0:
        raise ConfigError(f'perturbation rho must be a finite number > 0 (the paper uses '
                          f'0.05), got {rho!r}')
    return float(rho)


class Perturbation:
    """Base class: ``epsilon(grads, params)`` returns the perturbation of each parameter."""

    rho: float

    def epsilon(self, grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                batched: bool = False) -> list[torch.Tensor]:
        """Compute ε.

        Args:
            grads: Gradient per parameter, each ``[*shape]`` (or ``[B, *shape]`` if batched).
            params: The unperturbed parameters θ, each ``[*shape]``.
            batched: Whether ``grads`` carry a leading per-sample dimension.

        Returns:
            ε per parameter, same shapes as ``grads``.
        """
        raise NotImplementedError


@PERTURBATIONS.register_module()
class SAMPerturbation(Perturbation):
    """SAM's first-order maximiser of the loss in an Lp ball (Foret et al., paper Eq. 11).

    ``ε = ρ · sign(g) · |g|^(q-1) / (‖g‖_q^q)^(1/p)`` with ``1/p + 1/q = 1``; ``q = 2`` (the
    default) gives ``ε = ρ · g / ‖g‖₂``, and ``q = 1`` (p = ∞) gives ``ε = ρ · sign(g)``.

    Args:
        rho: Radius ρ of the perturbation ball.
        q: Dual norm exponent, ``q >= 1``.
    """

    def __init__(self, rho: float = 0.05, q: float = 2.0) -> None:
        self.rho = check_rho(rho)
        if not math.isfinite(q) or q < 1:
            raise ConfigError(f'perturbation q must be a finite number >= 1 (the dual norm '
                              f'exponent; 2 is the default), got {q}')
        self.q = float(q)

    def epsilon(self, grads, params, batched=False):
        if self.q == 2.0:
            # Written out for q = 2 so that it matches ρ·g/‖g‖₂ to the last bit.
            norm = _per_sample_sum([g * g for g in grads], batched).sqrt()
            return [g * _broadcast(self.rho / (norm + NORM_EPS), g, batched) for g in grads]
        # (Σ|g|^q)^(1/p) with 1/p = 1 - 1/q.
        denom = _per_sample_sum([g.abs() ** self.q for g in grads], batched) ** (1 - 1 / self.q)
        scale = self.rho / (denom + NORM_EPS)
        return [torch.sign(g) * g.abs() ** (self.q - 1) * _broadcast(scale, g, batched)
                for g in grads]

    def __repr__(self) -> str:
        return f'SAMPerturbation(rho={self.rho}, q={self.q})'


@PERTURBATIONS.register_module()
class ASAMPerturbation(Perturbation):
    """Adaptive SAM (Kwon et al. 2021), as the SAAL authors' released code applies it.

    ``ε = ρ · θ² ⊙ g / ‖ |θ| ⊙ g ‖₂`` over all parameters; the scale-invariant neighbourhood
    makes the perturbation of a weight proportional to its magnitude.

    Args:
        rho: Radius ρ of the (adaptive) perturbation ball.
    """

    def __init__(self, rho: float = 0.05) -> None:
        self.rho = check_rho(rho)

    def epsilon(self, grads, params, batched=False):
        norm = _per_sample_sum([(p.abs() * g) ** 2 for p, g in zip(params, grads)],
                               batched).sqrt()
        return [p * p * g * _broadcast(self.rho / (norm + NORM_EPS), g, batched)
                for p, g in zip(params, grads)]

    def __repr__(self) -> str:
        return f'ASAMPerturbation(rho={self.rho})'
