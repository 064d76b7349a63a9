"""Summaries of a sweep: final metric, area under the budget curve, pairwise comparisons."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.errors import ConfigError
from ..engine import METRICS
from ..engine.store import MetricsLog
from .plan import Cell


def aubc(num_labeled: Sequence[float], values: Sequence[float]) -> float:
    """Area under the budget curve, normalised by the budget range.

    ``AUBC = ∫ metric(n) dn / (n_max − n_min)`` with the trapezoidal rule over the measured
    points: the average metric over the labeling budget, in the metric's own unit. A single
    point gives that point's value.

    Args:
        num_labeled: Labeled-set sizes, increasing, shape ``[R]``.
        values: Metric at each size, shape ``[R]``.
    """
    x = np.asarray(num_labeled, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f'need two equal-length 1-D sequences, got {x.shape} and {y.shape}')
    if len(x) == 1:
        return float(y[0])
    if np.any(np.diff(x) <= 0):
        raise ValueError('num_labeled must be strictly increasing')
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(x) / 2.0))
    return area / float(x[-1] - x[0])


def load_curve(cell: Cell, metric: str) -> tuple[list[int], list[float]]:
    """``(num_labeled, metric)`` per finished round, from the cell's ``metrics.jsonl``."""
    path = Path(cell.work_dir) / METRICS
    records = MetricsLog.decode(path.read_text())
    records.sort(key=lambda r: r['round'])
    if any(metric not in r for r in records):
        raise ConfigError(f'{path} has no metric {metric!r}: set sweep.metric to one of '
                       f"{sorted(k for k in records[0] if not k.endswith('_s'))}")
    return [int(r['num_labeled']) for r in records], [float(r[metric]) for r in records]


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {'mean': float(arr.mean()), 'std': float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            'n': int(len(arr)), 'values': [float(v) for v in arr]}


def summarize(curves: dict[Cell, tuple[list[int], list[float]]]) -> dict[str, Any]:
    """Per strategy and optimizer: final metric and AUBC (mean, sample std, n) and the mean
    curve with its std band.

    Args:
        curves: Finished cells and their curves (from :func:`load_curve`).

    Returns:
        ``{optimizer: {strategy: {'final': stats, 'aubc': stats, 'curve': {...}}}}``.
    """
    groups: dict[tuple[str, str], list[tuple[Cell, list[int], list[float]]]] = {}
    for cell, (x, y) in curves.items():
        groups.setdefault((cell.optimizer, cell.strategy), []).append((cell, x, y))
    out: dict[str, Any] = {}
    for (opt, strategy), members in groups.items():
        members.sort(key=lambda m: m[0].seed)
        lengths = {len(x) for _, x, _ in members}
        if len(lengths) != 1:
            raise ValueError(f'{strategy}/{opt}: seeds have curves of different lengths '
                             f'{sorted(lengths)}; the sweep mixes protocols')
        ys = np.asarray([y for _, _, y in members])
        out.setdefault(opt, {})[strategy] = {
            'seeds': [m[0].seed for m in members],
            'final': _stats([y[-1] for _, _, y in members]),
            'aubc': _stats([aubc(x, y) for _, x, y in members]),
            'curve': {'num_labeled': members[0][1], 'mean': ys.mean(axis=0).tolist(),
                      'std': (ys.std(axis=0, ddof=1) if len(ys) > 1
                              else np.zeros(ys.shape[1])).tolist()},
        }
    return out


def penalty_matrix(summary: dict[str, Any], strategies: Sequence[str],
                   key: str = 'final') -> dict[str, Any]:
    """How often strategy ``i`` beats strategy ``j`` (paper Figure 13a).

    A comparison case is one (optimizer, seed) where both finished; ``i`` beats ``j`` when
    its ``key`` value (``'final'`` or ``'aubc'``) is strictly higher. Same seed means same
    initial set, so every case is a paired comparison.

    Returns:
        ``{'strategies': [...], 'wins': [[...]], 'cases': [[...]], 'rate': [[...]]}`` where
        ``rate[i][j] = wins[i][j] / cases[i][j]`` (``None`` without cases or on the diagonal).
    """
    n = len(strategies)
    wins = np.zeros((n, n), dtype=int)
    cases = np.zeros((n, n), dtype=int)
    for per_strategy in summary.values():
        values = {s: dict(zip(per_strategy[s]['seeds'], per_strategy[s][key]['values']))
                  for s in strategies if s in per_strategy}
        for i, a in enumerate(strategies):
            for j, b in enumerate(strategies):
                if i == j or a not in values or b not in values:
                    continue
                for seed in set(values[a]) & set(values[b]):
                    cases[i, j] += 1
                    wins[i, j] += values[a][seed] > values[b][seed]
    rate = [[None if i == j or cases[i, j] == 0 else float(wins[i, j] / cases[i, j])
             for j in range(n)] for i in range(n)]
    return {'strategies': list(strategies), 'key': key, 'wins': wins.tolist(),
            'cases': cases.tolist(), 'rate': rate}
