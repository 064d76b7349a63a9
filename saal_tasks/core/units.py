"""Per-unit values and their reduction to one value per sample (shared by scorers and
diagnostics)."""
from __future__ import annotations

import numpy as np
import torch


def reduce_units(units: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce per-unit values ``[B, *U]`` to one value per sample ``[B]``.

    Args:
        units: Per-unit tensor; ``[B]`` passes through unchanged.
        how: ``'sum'`` or ``'mean'`` over the unit dimensions.
    """
    if units.dim() == 1:
        return units
    flat = units.reshape(units.shape[0], -1)
    return flat.sum(dim=1) if how == 'sum' else flat.mean(dim=1)


def check_reduction(name: str, value: str) -> str:
    """Validate a unit-reduction option at construction time (one clear line on a typo)."""
    if value not in ('sum', 'mean'):
        raise ValueError(f"{name} must be 'sum' or 'mean', got {value!r}")
    return value


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detach a tensor to a float64 numpy array."""
    return t.detach().to(torch.float64).cpu().numpy()

