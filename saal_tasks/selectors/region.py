"""Greedy region / pixel selection inside each image (segmentation, RIPU's annotation).

A unit selector: :meth:`BaseUnitSelector.select` reads the per-pixel score maps and the
masks of pixels labeled before from the selection context and calls
:meth:`RegionSelector.select_units`.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.selection import BaseUnitSelector
from ..core.units import window_sum
from ..registry import SELECTORS

#: How a round's budget is counted: revealed pixels (``'pixels'``) or picked regions
#: (``'regions'``, RIPU's rule).
BUDGET_RULES = ('pixels', 'regions')
#: Which of equal scores is visited first: the lower row-major index (``'row_major'``), or
#: the leftmost column, then the top row (``'column_major'``: RIPU's two ``torch.max`` calls,
#: over rows and then over columns, each returning the first maximum).
TIE_BREAKS = ('row_major', 'column_major')


def _nonneg_int(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f'RegionSelector.{name} must be an integer >= {minimum}, '
                          f'got {value!r}')
    return int(value)


@SELECTORS.register_module()
class RegionSelector(BaseUnitSelector):
    """Picks square regions (or single pixels) of highest score in every image.

    The annotation budget of an image over the whole run is ``budget_ratio × H × W`` pixels
    or ``budget_pixels``, spread evenly over ``num_selections`` rounds. In one round, per
    image:

    1. blocked pixels are never centres: the pixels labeled before and, with
       ``persistent_suppression``, every pixel within Chebyshev distance ``suppress_radius``
       of an earlier round's centre (see below); the other pixels are visited in descending
       score, equal scores in ``tie_break`` order, one stable argsort per image;
    2. a pixel is skipped if it became blocked earlier in this round;
    3. its region is the ``(2r+1)²`` window around it (``r = region_radius``) clipped to the
       image; the newly revealed pixels are the region minus the pixels labeled before or
       revealed this round;
    4. the round's budget (``budget_rule``) decides whether the pick is taken; a taken pick
       blocks its region and every pixel within Chebyshev distance ``suppress_radius``.

    ``budget_rule``:

    * ``'pixels'``: a round reveals at most ``floor(total) // num_selections`` pixels; a pick
      whose new pixels would exceed that ends the round for the image.
    * ``'regions'`` (RIPU): a round places ``ceil(total / num_selections / (2r+1)²)``
      regions, computed in floating point as RIPU does; a region clipped at the border counts
      as one region.

    ``persistent_suppression`` (RIPU keeps its ``active`` mask between rounds): the
    suppression windows of earlier rounds still block. They are not stored: the union of the
    ``(2s+1)²`` windows around earlier centres is the labeled mask dilated by ``s − r``
    (a clipped ``(2r+1)²`` box dilated by ``s − r`` is the clipped ``(2s+1)²`` box), exact
    when the labeled pixels are this selector's regions and a conservative extension
    (suppression around every labeled pixel) otherwise. So resume needs nothing beyond the
    labeled masks.

    ``region_radius = 0`` is pixel-based annotation (each pick reveals its own pixel).

    ``tie_break``: RIPU takes each centre with ``torch.max`` over the rows, then over the
    columns, so of equal scores the leftmost column wins, then the top row
    (``'column_major'``); ``'row_major'`` prefers the top row, then the leftmost column.
    Equal scores are common where they matter: region impurity is exactly 0 in every pure
    window, so P × S ties at 0 wherever a class region is wider than the window.

    RIPU's settings (the paper configs): region-based ``budget_ratio=0.022`` (DeepLab-v2) or
    ``0.05`` (DeepLab-v3+), ``num_selections=5``, ``region_radius=1``, ``suppress_radius=2``;
    pixel-based ``budget_pixels=40``, ``num_selections=5``, ``region_radius=0``,
    ``suppress_radius=32``; both with ``budget_rule='regions'``,
    ``persistent_suppression=True`` and ``tie_break='column_major'``.

    Args:
        budget_ratio: Total fraction of each image's pixels to annotate over the run, in
            ``(0, 1]``. Exactly one of ``budget_ratio`` and ``budget_pixels``.
        budget_pixels: Total number of pixels per image to annotate over the run, ``>= 1``.
        num_selections: Number of selection rounds the total budget is spread over.
        region_radius: Radius ``r`` of the revealed ``(2r+1) × (2r+1)`` window.
        suppress_radius: Chebyshev radius ``s`` around a pick whose pixels cannot be picked
            again (in the same round, or in any later round with ``persistent_suppression``).
        budget_rule: ``'pixels'`` or ``'regions'`` (above).
        persistent_suppression: Earlier rounds' suppression windows still block (RIPU).
        tie_break: Order of equal scores, one of :data:`TIE_BREAKS` (RIPU: ``'column_major'``).
    """

    #: Each image's units depend only on its own map and mask (chunked scoring applies).
    per_sample = True

    def __init__(self, *, budget_ratio: float | None = None, budget_pixels: int | None = None,
                 num_selections: int, region_radius: int = 1,
                 suppress_radius: int = 2, budget_rule: str = 'pixels',
                 persistent_suppression: bool = False, tie_break: str = 'row_major') -> None:
        if (budget_ratio is None) == (budget_pixels is None):
            raise ConfigError('RegionSelector needs exactly one of budget_ratio (fraction of '
                              'each image) and budget_pixels (pixels per image)')
        if budget_ratio is not None:
            if isinstance(budget_ratio, bool) or not isinstance(
                    budget_ratio, (int, float, np.integer, np.floating)) \
                    or not 0 < budget_ratio <= 1:
                raise ConfigError(f'RegionSelector.budget_ratio must be in (0, 1], '
                                  f'got {budget_ratio!r}')
            # The decimal the user wrote, exactly: 0.29 × 100 must floor to 29, not 28.
            self._ratio: Fraction | None = Fraction(repr(float(budget_ratio)))
        else:
            self._ratio = None
            budget_pixels = _nonneg_int('budget_pixels', budget_pixels, minimum=1)
        self.budget_ratio = budget_ratio
        self.budget_pixels = budget_pixels
        self.num_selections = _nonneg_int('num_selections', num_selections, minimum=1)
        self.region_radius = _nonneg_int('region_radius', region_radius)
        self.suppress_radius = _nonneg_int('suppress_radius', suppress_radius)
        if budget_rule not in BUDGET_RULES:
            raise ConfigError(f'RegionSelector.budget_rule must be one of {BUDGET_RULES}, '
                              f'got {budget_rule!r}')
        if not isinstance(persistent_suppression, (bool, np.bool_)):
            raise ConfigError(f'RegionSelector.persistent_suppression must be True or False, '
                              f'got {persistent_suppression!r}')
        if tie_break not in TIE_BREAKS:
            raise ConfigError(f'RegionSelector.tie_break must be one of {TIE_BREAKS}, '
                              f'got {tie_break!r}')
        self.budget_rule = budget_rule
        self.persistent_suppression = bool(persistent_suppression)
        self.tie_break = tie_break

    # ------------------------------------------------------------------ budget
    def total_budget(self, shape: tuple[int, ...]) -> int:
        """Pixels of an image of ``shape`` (``(H, W)``) to annotate over the whole run."""
        pixels = int(np.prod(shape))
        if self._ratio is not None:
            return int(self._ratio * pixels)  # int() of a non-negative Fraction floors
        return min(int(self.budget_pixels), pixels)

    def round_budget(self, shape: tuple[int, ...]) -> int:
        """Most pixels one round reveals in an image of ``shape`` (``(H, W)``): the pixel
        budget under ``budget_rule='pixels'``, the regions times their area under
        ``'regions'``."""
        if self.budget_rule == 'regions':
            return self.round_regions(shape) * (2 * self.region_radius + 1) ** 2
        return self.total_budget(shape) // self.num_selections

    def round_regions(self, shape: tuple[int, ...]) -> int:
        """Regions one round places in an image of ``shape`` (``(H, W)``) under
        ``budget_rule='regions'``: RIPU's ``ceil(H·W·ratio/rounds/(2r+1)²)`` (region-based)
        and ``ceil(pixels/rounds)`` per ``(2r+1)²`` (pixel-based), in RIPU's float
        arithmetic."""
        area = (2 * self.region_radius + 1) ** 2
        if self._ratio is not None:
            return math.ceil(int(np.prod(shape)) * (float(self.budget_ratio)
                                                     / self.num_selections) / area)
        return math.ceil(int(self.budget_pixels) / self.num_selections / area)

    def blocked_before(self, labeled: np.ndarray) -> np.ndarray:
        """Pixels that cannot be centres at the start of a round: the labeled mask, dilated
        by ``suppress_radius − region_radius`` with ``persistent_suppression``.

        Args:
            labeled: Bool mask ``[H, W]`` of pixels annotated before.

        Returns:
            Bool mask ``[H, W]``.
        """
        grow = self.suppress_radius - self.region_radius
        if not self.persistent_suppression or grow <= 0 or not labeled.any():
            return labeled.copy()
        return window_sum(torch.from_numpy(labeled)[None], grow)[0].numpy() > 0

    # ------------------------------------------------------------------ selection
    def select_regions(self, scores: np.ndarray,
                       labeled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One round in one image (the algorithm of the class docstring).

        Args:
            scores: Score map ``[H, W]``, finite, higher = more informative.
            labeled: Bool mask ``[H, W]`` of pixels annotated before.

        Returns:
            ``(centres, pixels)``: flat indices (``int64``) of the picked centres in pick
            order, and the sorted flat indices of all newly revealed pixels.
        """
        return self._select_image(*self._check_pair(scores, labeled, 0))

    def _select_image(self, scores: np.ndarray,
                      labeled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width = scores.shape[1]
        by_pixels = self.budget_rule == 'pixels'
        budget = (self.round_budget(scores.shape) if by_pixels
                  else self.round_regions(scores.shape))  # pixels, or regions
        covered = labeled.copy()  # labeled before or revealed this round
        covered_flat = covered.reshape(-1)  # a view: window writes show up here
        r, s = self.region_radius, self.suppress_radius
        centres: list[int] = []
        revealed = 0
        if budget > 0:
            # Pixels that cannot be centres (labeled, suppressed, revealed this round), one
            # lookup per visit: the walk may pass many of them, windows are written per pick.
            blocked = self.blocked_before(labeled)
            blocked_flat = blocked.reshape(-1)
            order = self._visit_order(scores)
            order = order[~blocked_flat[order]]
            for idx in order.tolist():  # Python ints iterate faster than numpy scalars
                if blocked_flat[idx]:
                    continue
                i, j = divmod(idx, width)
                window = covered[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
                new = window.size - int(np.count_nonzero(window))
                if by_pixels and revealed + new > budget:
                    break
                window[...] = True
                blocked[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1] = True
                blocked[max(i - s, 0):i + s + 1, max(j - s, 0):j + s + 1] = True
                centres.append(idx)
                revealed += new if by_pixels else 1
                if revealed == budget:
                    break
        pixels = np.flatnonzero(covered_flat & ~labeled.reshape(-1)).astype(np.int64)
        return np.asarray(centres, dtype=np.int64), pixels

    def _visit_order(self, scores: np.ndarray) -> np.ndarray:
        """Flat (row-major) indices ``[H·W]`` by descending score, ties in ``tie_break``
        order (one stable argsort)."""
        # float64 first: negating unsigned integer scores would wrap around.
        negated = -scores.astype(np.float64)
        if self.tie_break == 'row_major':
            return np.argsort(negated.reshape(-1), kind='stable')
        height, width = scores.shape
        by_column = np.argsort(negated.T.reshape(-1), kind='stable')  # w·H + h
        return (by_column % height) * width + by_column // height

    def select_units(self, unit_scores: list[np.ndarray], labeled: list[np.ndarray],
                     rng: np.random.Generator) -> list[np.ndarray]:
        """Newly revealed pixels of each image (see :meth:`select_regions`); ``rng`` unused.

        Args:
            unit_scores: Per image, a finite score map ``[H, W]``.
            labeled: Per image, a bool mask ``[H, W]`` of pixels annotated before.
            rng: Unused (the selection is deterministic).

        Returns:
            Per image, sorted unique flat ``int64`` indices of the pixels to annotate now.
        """
        if len(unit_scores) != len(labeled):
            raise ValueError(f'got {len(unit_scores)} score maps but {len(labeled)} labeled '
                             'masks: pass one mask per scored image')
        pairs = [self._check_pair(s, m, n) for n, (s, m) in enumerate(zip(unit_scores,
                                                                          labeled))]
        return [self._select_image(s, m)[1] for s, m in pairs]

    @staticmethod
    def _check_pair(scores: np.ndarray, labeled: np.ndarray,
                    n: int) -> tuple[np.ndarray, np.ndarray]:
        scores, labeled = np.asarray(scores), np.asarray(labeled)
        if scores.ndim != 2:
            raise ValueError(f'score map {n} must be 2-D [H, W], got shape {scores.shape}')
        if labeled.dtype != np.bool_:
            raise ValueError(f'labeled mask {n} must be a bool array, got dtype '
                             f'{labeled.dtype}')
        if labeled.shape != scores.shape:
            raise ValueError(f'labeled mask {n} has shape {labeled.shape} but its score map '
                             f'has {scores.shape}: they must match')
        if scores.dtype.kind not in 'iuf' or not np.isfinite(scores).all():
            raise ValueError(f'score map {n} is not finite real numbers: the model diverged; '
                             'check the learning rate or the perturbation radius rho')
        return scores, labeled

    def __repr__(self) -> str:
        budget = (f'budget_ratio={self.budget_ratio}' if self._ratio is not None
                  else f'budget_pixels={self.budget_pixels}')
        return (f'RegionSelector({budget}, num_selections={self.num_selections}, '
                f'region_radius={self.region_radius}, '
                f'suppress_radius={self.suppress_radius}, budget_rule={self.budget_rule!r}, '
                f'persistent_suppression={self.persistent_suppression}, '
                f'tie_break={self.tie_break!r})')


__all__ = ['RegionSelector']
