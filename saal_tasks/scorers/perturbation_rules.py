"""How a perturbation ε splits into per-layer pieces, for engines that never stack all gradients.

Every perturbation of :mod:`saal_tasks.core.perturbation` has the form, per sample ``b``::

    ε_b = s_b · φ(g_b, θ)      with   s_b = ρ / (N(Σ_layers ψ(g_b,l, θ_l)) + NORM_EPS)

where ``φ`` and ``ψ`` act entry by entry. A :class:`PerturbationRule` exposes ``ψ`` (summed per
sample), ``N`` and ``φ`` separately, so an engine can visit one layer at a time: first add up
the per-sample norm terms of every layer, then perturb each layer with its own ``φ`` and the
shared scale ``s``. The rules reproduce the perturbations' formulas exactly (same ``NORM_EPS``,
same placement of ``ρ``); only the order of the floating-point sums differs.

Two properties let an engine save work:

* ``low_rank`` (SAM with ``q = 2``): ``φ(g) = g``, so a layer's ε is its (low-rank) gradient
  times a scalar and can be applied without being formed.
* ``linear`` (SAM with ``q = 2``, ASAM): ``φ(s·g) = s·φ(g)``, so the scale can be folded into
  the output gradients before a per-sample gradient is formed (:meth:`shifted`).

The per-sample tensors here can be as large as a layer's weight times the chunk size, so the
methods avoid temporaries of that size (batched dot products, in-place updates).
"""
from __future__ import annotations

import torch

from ..core.perturbation import NORM_EPS, ASAMPerturbation, Perturbation, SAMPerturbation


def _per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: ``[B, ...] -> [B]``."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _per_sample_sq(t: torch.Tensor) -> torch.Tensor:
    """``Σ t²`` per sample, ``[B, ..., K] -> [B]``, without a squared copy of ``t``.

    Norms of the rows (last axis) first, then their squares summed in float64: measured on
    CPU, this is several times faster than a squared temporary or a batched dot product, and
    in float32 far more accurate than one norm over the whole flattened sample.
    """
    rows = t.reshape(t.shape[0], -1, t.shape[-1]) if t.dim() > 2 else t.unsqueeze(1)
    sq = torch.linalg.vector_norm(rows, dim=2).to(torch.float64).square().sum(dim=1)
    return sq.to(t.dtype)


def _per_sample(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample ``[B]`` scale shaped to broadcast against ``like`` ``[B, ...]``."""
    return scale.reshape(-1, *([1] * (like.dim() - 1)))


class PerturbationRule:
    """ε = s · φ(g, θ), split per layer (see the module docstring).

    Attributes:
        rho: Radius ρ.
        low_rank: ``φ(g, θ) == g``.
        linear: ``φ(s·g, θ) == s·φ(g, θ)`` for a scalar ``s``.
    """

    rho: float
    low_rank: bool = False
    linear: bool = False

    def norm_terms(self, grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """Per-sample contribution of one parameter to the norm, ``Σ ψ(g, θ)``.

        Args:
            grad: Per-sample gradients ``[B, *shape]``.
            param: The parameter θ, ``[*shape]``.

        Returns:
            ``[B]``.
        """
        raise NotImplementedError

    def scale(self, total: torch.Tensor) -> torch.Tensor:
        """Per-sample scale ``s = ρ / (N(total) + NORM_EPS)`` from the summed norm terms ``[B]``."""
        raise NotImplementedError

    def direction(self, grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """``φ(g, θ)`` for per-sample gradients ``[B, *shape]``; same shape as ``grad``."""
        raise NotImplementedError

    def perturbed(self, grad: torch.Tensor, param: torch.Tensor,
                  scale: torch.Tensor) -> torch.Tensor:
        """Per-sample perturbed parameters ``θ + s_b · φ(g_b, θ)``, ``[B, *shape]``.

        Args:
            grad: Per-sample gradients ``[B, *shape]``; overwritten (the result reuses its
                memory where it can).
            param: θ, ``[*shape]``.
            scale: ``s`` ``[B]``.
        """
        return self.direction(grad, param).mul_(_per_sample(scale, grad)).add_(param)

    def prepare(self, grad: torch.Tensor,
                param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Norm terms of a per-sample gradient that is kept until the scale is known.

        Args:
            grad: Per-sample gradients ``[B, *shape]``; may be transformed in place into
                whatever form :meth:`finish` takes.
            param: θ, ``[*shape]``.

        Returns:
            The kept form and the norm terms ``[B]``.
        """
        return grad, self.norm_terms(grad, param)

    def finish(self, prepared: torch.Tensor, param: torch.Tensor,
               scale: torch.Tensor) -> torch.Tensor:
        """``θ + s_b · φ(g_b, θ)`` from the output of :meth:`prepare`, in its memory."""
        return self.perturbed(prepared, param, scale)

    def shifted(self, scaled_grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """``θ + φ(s_b·g_b, θ)`` from gradients already scaled by ``s`` (``linear`` rules only).

        Args:
            scaled_grad: ``s_b · g_b``, ``[B, *shape]``; overwritten with the result.
            param: θ, ``[*shape]``.
        """
        raise NotImplementedError(f'{type(self).__name__} is not linear in the gradient')


class SAMRule(PerturbationRule):
    """SAM, ``ε = ρ · sign(g)|g|^(q−1) / (‖g‖_q^q)^(1/p)``; ``q = 2`` gives ``ρ·g/‖g‖₂``.

    Args:
        rho: Radius ρ.
        q: Dual norm exponent ``q >= 1``.
    """

    def __init__(self, rho: float, q: float) -> None:
        self.rho = rho
        self.q = q
        self.low_rank = self.linear = q == 2.0

    def norm_terms(self, grad, param):
        if self.q == 2.0:
            return _per_sample_sq(grad)
        return _per_sample_sum(grad.abs() ** self.q)

    def scale(self, total):
        if self.q == 2.0:
            return self.rho / (total.sqrt() + NORM_EPS)
        return self.rho / (total ** (1 - 1 / self.q) + NORM_EPS)

    def direction(self, grad, param):
        if self.q == 2.0:
            return grad
        return torch.sign(grad) * grad.abs() ** (self.q - 1)

    def perturbed(self, grad, param, scale):
        if self.q == 2.0:
            # θ + s·g in one pass over g's memory.
            return torch.addcmul(param, grad, _per_sample(scale, grad), out=grad)
        return super().perturbed(grad, param, scale)

    def shifted(self, scaled_grad, param):
        if self.q != 2.0:
            return super().shifted(scaled_grad, param)
        return scaled_grad.add_(param)


class ASAMRule(PerturbationRule):
    """ASAM as the SAAL authors apply it, ``ε = ρ · θ²⊙g / ‖|θ|⊙g‖₂``.

    Args:
        rho: Radius ρ.
    """

    linear = True

    def __init__(self, rho: float) -> None:
        self.rho = rho

    def norm_terms(self, grad, param):
        return _per_sample_sq(param.abs() * grad)

    def scale(self, total):
        return self.rho / (total.sqrt() + NORM_EPS)

    def direction(self, grad, param):
        return param * param * grad

    def perturbed(self, grad, param, scale):
        return self.shifted(grad.mul_(_per_sample(scale, grad)), param)

    def shifted(self, scaled_grad, param):
        # θ + θ²⊙(s·g) in g's memory: no second weight-sized tensor per sample.
        return torch.addcmul(param, scaled_grad, param * param, out=scaled_grad)

    def prepare(self, grad, param):
        # In place, no temporary: g → |θ|⊙g (whose squares are the norm terms) → θ²⊙g, which
        # finish() turns into θ + s·θ²⊙g in a single pass.
        magnitude = param.abs()
        scaled = grad.mul_(magnitude)
        terms = _per_sample_sq(scaled)
        return scaled.mul_(magnitude), terms

    def finish(self, prepared, param, scale):
        return torch.addcmul(param, prepared, _per_sample(scale, prepared), out=prepared)


def rule_for(perturbation: Perturbation) -> PerturbationRule | None:
    """The per-layer rule of a perturbation, or ``None`` for a perturbation it does not know.

    Args:
        perturbation: A perturbation object (``SAMPerturbation`` or ``ASAMPerturbation``).
    """
    # Exact types: a subclass may change the formula, and a wrong rule would be silently wrong.
    if type(perturbation) is SAMPerturbation:
        return SAMRule(perturbation.rho, perturbation.q)
    if type(perturbation) is ASAMPerturbation:
        return ASAMRule(perturbation.rho)
    return None


__all__ = ['PerturbationRule', 'SAMRule', 'ASAMRule', 'rule_for']
