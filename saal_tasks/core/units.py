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



def window_sum(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of each unit's in-map ``(2k+1) × (2k+1)`` window, from an integral image.

    The cost is ``O(H·W)`` whatever ``k`` (a pooling kernel costs ``O(H·W·k²)``, which at
    RIPU's pixel-annotation radius ``k = 32`` and 1024 × 2048 is hours on a CPU). Windows are
    clipped to the map. Integer and bool maps are summed in ``int64`` (exact), floating maps
    in ``float64``.

    Args:
        maps: Unit maps, shape ``[B, H, W]``.
        k: Window radius, ``>= 0``.

    Returns:
        Window sums, shape ``[B, H, W]``, ``int64`` for integer or bool input, else
        ``float64``.
    """
    if maps.dim() != 3:
        raise ValueError(f'maps must have shape [B, H, W], got {tuple(maps.shape)}')
    dtype = torch.float64 if maps.is_floating_point() else torch.int64
    b, h, w = maps.shape
    integral = torch.zeros((b, h + 1, w + 1), dtype=dtype, device=maps.device)
    integral[:, 1:, 1:] = maps.to(dtype).cumsum(dim=1).cumsum(dim=2)
    rows = torch.arange(h, device=maps.device)
    cols = torch.arange(w, device=maps.device)
    top, bottom = (rows - k).clamp(min=0), (rows + k + 1).clamp(max=h)
    left, right = (cols - k).clamp(min=0), (cols + k + 1).clamp(max=w)
    lower, upper = integral[:, bottom], integral[:, top]  # [B, H, W + 1]
    return (lower[:, :, right] - upper[:, :, right]
            - lower[:, :, left] + upper[:, :, left])
