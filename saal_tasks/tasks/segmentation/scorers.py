"""Pixel-wise acquisition for segmentation: region impurity (RIPU) and RI-SAAL.

RIPU (Xie et al., CVPR 2022) scores pixel ``(i, j)`` with ``A = P × U``: ``P`` is the region
impurity, the entropy of the histogram of predicted classes in the window
``N_k(i, j) = {(u, v) : |u − i| <= k, |v − j| <= k}``, and ``U`` the mean pixel entropy in the
same window. RI-SAAL (SAAL paper, appendix A.8) keeps ``P`` and replaces ``U`` by the
pixel-wise SAAL score ``S`` (the perturbed pseudo-label cross-entropy of the pixel), so
``A = P × S``.

Conventions fixed here (RIPU leaves them implicit):

* Windows are clipped to the image: at a border the class fractions are over the in-image
  pixels of the window only (no padding class, no zero padding in the mean).
* ``P`` is divided by ``log C`` for the task's actual number of classes ``C`` (RIPU hard-codes
  19), so ``0 <= P <= 1``.

Unit maps have the ``H × W`` of the task's annotation units; a task's ``pixel_logits``
returns logits at that resolution (the segmentation task upsamples to its ``unit_size``).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ...core.build import build_component
from ...core.errors import ConfigError
from ...core.scorer import BaseScorer, ScoreResult, ids_in_order
from ...core.units import window_sum
from ...registry import SCORERS


def _check_radius(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError(f'window radius k must be an integer >= 0, got {k!r}')
    return int(k)


#: Above this radius window means come from an integral image (O(H·W)) instead of a pooling
#: kernel (O(H·W·k²)): RIPU's pixel-annotation windows are 65 × 65.
_POOLING_MAX_RADIUS = 3


def _box_mean(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over the in-image ``(2k+1)²`` window of each pixel; ``[N, H, W]`` float."""
    if k == 0:
        return maps
    if k > _POOLING_MAX_RADIUS:
        counts = window_sum(torch.ones((1, *maps.shape[1:]), dtype=torch.int64,
                                       device=maps.device), k)
        return (window_sum(maps, k) / counts).to(maps.dtype)
    # count_include_pad=False divides by the number of in-image pixels of each window, which
    # is exactly the clipped-window convention of the module docstring.
    return F.avg_pool2d(maps.unsqueeze(1), kernel_size=2 * k + 1, stride=1, padding=k,
                        count_include_pad=False).squeeze(1)


def window_mean(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of each pixel's in-image ``(2k+1) × (2k+1)`` window.

    Args:
        maps: Per-pixel values, shape ``[B, H, W]`` (floating point; integers are converted
            to ``float32``).
        k: Window radius (``k = 0`` returns the maps unchanged).

    Returns:
        Window means, shape ``[B, H, W]``, same dtype as ``maps`` (``float32`` for integer
        input).
    """
    k = _check_radius(k)
    if maps.dim() != 3:
        raise ValueError(f'maps must have shape [B, H, W], got {tuple(maps.shape)}')
    if not maps.is_floating_point():
        maps = maps.float()
    return _box_mean(maps, k)


def region_impurity(labels: torch.Tensor, num_classes: int, k: int = 1) -> torch.Tensor:
    """Normalised entropy of the class histogram in each pixel's in-image window.

    ``P = −Σ_c p_c log p_c / log C`` with ``p_c`` the fraction of the window's in-image
    pixels whose label is ``c``; ``0`` for a window of one class, ``1`` when all ``C`` classes
    are equally present.

    Memory: the class fractions are computed one class at a time, so the peak is a few
    ``[B, H, W]`` float32 maps (not ``[B, C, H, W]``); the loop is over classes, never pixels.

    Args:
        labels: Pseudo-label maps, shape ``[B, H, W]``, integer classes in
            ``[0, num_classes)``.
        num_classes: Number of classes ``C`` of the task (``>= 2``), the normaliser
            ``log C``.
        k: Window radius: windows are ``(2k+1) × (2k+1)``, clipped to the image.

    Returns:
        Region impurity in ``[0, 1]``, shape ``[B, H, W]``, ``float32``.
    """
    k = _check_radius(k)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 2:
        raise ConfigError(f'region impurity needs num_classes >= 2 (it divides by '
                          f'log num_classes), got {num_classes!r}')
    if labels.dim() != 3:
        raise ValueError(f'labels must have shape [B, H, W], got {tuple(labels.shape)}')
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'labels must be integer class maps, got dtype {labels.dtype}')
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f'labels must lie in [0, {num_classes}), got values in '
                         f'[{int(labels.min())}, {int(labels.max())}]: pass the task\'s '
                         'num_classes')
    impurity = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for c in range(int(num_classes)):
        frac = _box_mean((labels == c).to(torch.float32), k)
        # xlogy(0, 0) = 0: classes absent from a window contribute nothing.
        impurity -= torch.special.xlogy(frac, frac)
    return impurity / math.log(num_classes)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ConfigError(f'scorer.batch_size must be an integer >= 1, got {batch_size!r}')
    return int(batch_size)


@SCORERS.register_module()
class PixelEntropyScorer(BaseScorer):
    """Entropy of each pixel's predicted class distribution (the "Entropy" baseline).

    One no-grad forward per batch through ``task.pixel_logits`` (``[B, C, H, W]``). Each
    sample gets the map ``−Σ_c p_c log p_c`` (nats) as ``unit_scores`` and the argmax map of
    the same logits as ``unit_targets`` (so region impurity is computed from exactly the
    prediction the entropy describes); its score is the map's mean. RIPU's uncertainty is
    this map averaged over a window (``RegionImpurityScorer(window_average=True)``).

    Memory: one ``[H, W]`` float32 map and one int64 label map per scored sample.

    Args:
        batch_size: Images per forward pass.
        log_interval: Progress output every this many samples.
    """

    def __init__(self, batch_size: int = 1, log_interval: int = 500) -> None:
        super().__init__(log_interval=log_interval)
        self.batch_size = _check_batch_size(batch_size)

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        out_ids, scores, maps, targets = [], [], [], []
        start, last = time.perf_counter(), [0]
        with torch.no_grad():
            for ids, images in task.pool_batches(sample_ids, self.batch_size):
                logits = task.pixel_logits(model, images)
                if logits.dim() != 4 or logits.shape[0] != len(ids):
                    raise ValueError(f'{type(task).__name__}.pixel_logits must return '
                                     f'[B, C, H, W] logits, got {tuple(logits.shape)}')
                # At least float32 (half-precision logits lose the small probabilities);
                # float64 logits stay float64 and only the stored map is rounded.
                log_p = torch.log_softmax(
                    logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
                # log_softmax of finite logits is finite, so p · log p is 0 where p underflows.
                ent = -(log_p.exp() * log_p).sum(dim=1)
                out_ids.append(np.asarray(ids, dtype=np.int64))
                scores.append(ent.flatten(1).double().mean(dim=1).cpu().numpy())
                maps.extend(m.float().cpu().numpy() for m in ent)
                targets.extend(t.cpu().numpy() for t in logits.argmax(dim=1))
                self._progress(sum(len(i) for i in out_ids), len(sample_ids), start, last)
        ids = ids_in_order(task, out_ids, sample_ids)
        return ScoreResult(sample_ids=ids,
                           scores=np.concatenate(scores) if scores else np.zeros(0),
                           unit_scores=maps or None, unit_targets=targets or None)


def _uniform_map(key: int, sample_id: int, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform ``[0, 1)`` float32 map, a pure function of ``(key, sample_id, shape)``."""
    # SeedSequence hashes the (non-negative) entropy words; masking keeps negative ids valid.
    seed = np.random.SeedSequence([int(key), int(sample_id) & 0xFFFFFFFFFFFFFFFF])
    return np.random.Generator(np.random.PCG64(seed)).random(shape, dtype=np.float32)


@SCORERS.register_module()
class RandomPixelScorer(BaseScorer):
    """Uniform random pixel maps (the "Random" baseline for region/pixel selection).

    A key is drawn once per call from the ``rng`` passed to :meth:`score`; each sample's map
    is then a pure function of ``(key, sample id)``, so it does not depend on batching, on
    the order of ids or on sharding. Maps have the task's ``unit_shape`` when it has one, else
    the ``H × W`` of the images from ``task.pool_batches``; no model forward. No
    ``unit_targets``.

    Args:
        batch_size: Images per batch read from the pool (only to learn the image sizes).
        log_interval: Progress output every this many samples.
    """

    def __init__(self, batch_size: int = 1, log_interval: int = 500) -> None:
        super().__init__(log_interval=log_interval)
        self.batch_size = _check_batch_size(batch_size)

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        key = int(rng.integers(2 ** 63))
        out_ids, maps = [], []
        start, last = time.perf_counter(), [0]
        for ids, images in task.pool_batches(sample_ids, self.batch_size):
            # The units' resolution where the task has its own (maps are per unit pixel).
            shape = tuple(int(s) for s in getattr(task, 'unit_shape', images.shape[-2:]))
            out_ids.append(np.asarray(ids, dtype=np.int64))
            maps.extend(_uniform_map(key, i, shape) for i in out_ids[-1])
            self._progress(len(maps), len(sample_ids), start, last)
        ids = ids_in_order(task, out_ids, sample_ids)
        scores = np.array([m.mean(dtype=np.float64) for m in maps], dtype=np.float64)
        return ScoreResult(sample_ids=ids, scores=scores, unit_scores=maps or None)


@SCORERS.register_module()
class RegionImpurityScorer(BaseScorer):
    """``A = P × S`` per pixel: region impurity times a pixel-wise score (RIPU, RI-SAAL).

    The inner ``pixel_scorer`` runs on the ids and must return per-pixel ``unit_scores``
    ``U`` and pseudo-label maps ``unit_targets``. ``P = region_impurity(targets, C, k)``;
    ``S = window_mean(U, k)`` when ``window_average`` (RIPU's uncertainty, with
    :class:`PixelEntropyScorer`) and ``S = U`` otherwise (RI-SAAL, with ``SharpnessScorer``
    on a segmentation task: ``U`` is each pixel's perturbed pseudo-label cross-entropy).

    Returns ``unit_scores`` = the ``A`` maps (float32), ``unit_targets`` = the inner
    pseudo-label maps, ``scores`` = the mean of each ``A`` map, the inner scorer's 1-D extras
    plus ``'impurity_mean'`` (mean of each ``P`` map).

    Memory: the maps are turned into ``A`` one sample at a time, replacing the inner maps in
    place (float64 inner maps become float32), so the peak is what the inner scorer returns
    plus a few ``[H, W]`` maps.

    Args:
        pixel_scorer: Config of the inner scorer (``SharpnessScorer``,
            ``PixelEntropyScorer``).
        k: Window radius of ``P`` (and of the mean of ``S`` when ``window_average``).
        window_average: Average the pixel scores over the window (RIPU) or not (RI-SAAL).
        num_classes: ``C`` of the normaliser ``log C``; defaults to ``task.num_classes``.
        log_interval: Progress output every this many samples.
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'pixel_scorer': 'SCORERS'}

    def __init__(self, pixel_scorer: dict, k: int = 1, window_average: bool = False,
                 num_classes: int | None = None, log_interval: int = 500) -> None:
        super().__init__(log_interval=log_interval)
        if not isinstance(pixel_scorer, dict) or 'type' not in pixel_scorer:
            raise ConfigError("RegionImpurityScorer.pixel_scorer must be a scorer config "
                              "dict, e.g. dict(type='PixelEntropyScorer')")
        self.k = _check_radius(k)
        self.window_average = bool(window_average)
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 2):
            raise ConfigError(f'RegionImpurityScorer.num_classes must be >= 2, '
                              f'got {num_classes!r}')
        self.num_classes = num_classes
        self.pixel_scorer = build_component(SCORERS, pixel_scorer, 'scorer.pixel_scorer')

    def _classes(self, task) -> int:
        if self.num_classes is not None:
            return int(self.num_classes)
        num = getattr(task, 'num_classes', None)
        if num is None:
            raise ConfigError(f'{type(task).__name__} has no num_classes: pass '
                              'RegionImpurityScorer(num_classes=...)')
        return int(num)

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        num_classes = self._classes(task)
        inner = self.pixel_scorer.score(task, model, sample_ids, rng)
        name = type(self.pixel_scorer).__name__
        missing = [f for f in ('unit_scores', 'unit_targets') if getattr(inner, f) is None]
        if missing and len(sample_ids):
            raise ConfigError(
                f'RegionImpurityScorer needs per-pixel unit_scores and unit_targets, but '
                f'{name} returned no {" and no ".join(missing)}: use SharpnessScorer on a '
                'segmentation task or PixelEntropyScorer as pixel_scorer')
        units, targets = inner.unit_scores or [], inner.unit_targets or []
        if not len(units) == len(targets) == len(inner.sample_ids):
            raise RuntimeError(f'{name} returned {len(units)} score maps and {len(targets)} '
                               f'label maps for {len(inner.sample_ids)} samples')
        scores, impurity_mean = np.zeros(len(units)), np.zeros(len(units))
        start, last = time.perf_counter(), [0]
        for n, (u, t) in enumerate(zip(units, targets)):
            u_map = torch.as_tensor(np.asarray(u, dtype=np.float32))
            t_map = torch.as_tensor(np.asarray(t))
            if u_map.dim() != 2 or u_map.shape != t_map.shape:
                raise ValueError(f'{name} returned a score map of shape {tuple(u_map.shape)} '
                                 f'and a label map of shape {tuple(t_map.shape)} for sample '
                                 f'{int(inner.sample_ids[n])}: both must be the same [H, W]')
            p_map = region_impurity(t_map[None], num_classes, self.k)[0]
            s_map = window_mean(u_map[None], self.k)[0] if self.window_average else u_map
            a_map = (p_map * s_map).numpy()
            units[n] = a_map  # replace the inner map: memory stays at one map per sample
            scores[n] = a_map.mean(dtype=np.float64)
            impurity_mean[n] = p_map.double().mean().item()
            self._progress(n + 1, len(units), start, last)
        extras = {key: value for key, value in inner.extras.items()
                  if np.ndim(value) == 1 and len(value) == len(inner.sample_ids)}
        extras['impurity_mean'] = impurity_mean
        return ScoreResult(sample_ids=inner.sample_ids, scores=scores,
                           unit_scores=units or None, unit_targets=targets or None,
                           extras=extras)

    def __repr__(self) -> str:
        return (f'RegionImpurityScorer({self.pixel_scorer!r}, k={self.k}, '
                f'window_average={self.window_average})')


__all__ = ['region_impurity', 'window_mean', 'PixelEntropyScorer', 'RandomPixelScorer',
           'RegionImpurityScorer']
