"""Figures of the diagnostics (files only; matplotlib's object API, no global pyplot state)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .hessian import Decomposition
from .landscape import LossSurface


def _figure(width: float, height: float):
    # Imported here: matplotlib is only needed when a figure is drawn.
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_decomposition_scatter(path: str | Path, dec: Decomposition, scores: np.ndarray,
                               title: str) -> Path:
    """Score against loss, gradient norm and λ₁, one panel each (paper Fig. 1a).

    Args:
        path: PNG to write.
        dec: Decomposition of the samples.
        scores: SAAL score of the same samples, ``[N]``.
        title: Figure title.
    """
    from .summary import spearman
    fig = _figure(12, 3.6)
    axes = fig.subplots(1, 3)
    for ax, (label, values) in zip(axes, (('loss l(θ)', dec.loss),
                                          ('gradient norm ‖∇l‖', dec.grad_norm),
                                          ('Hessian λ₁', dec.lambda_max))):
        ax.scatter(values, scores, s=6, alpha=0.5)
        ax.set_xlabel(label)
        ax.set_ylabel('SAAL score')
        ax.set_title(f'Spearman {spearman(values, scores):.2f}')
        if label.startswith('Hessian') and np.all(values > 0):
            ax.set_xscale('log')
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def _series(records: Sequence[dict], *keys: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for r in records:
        value = r
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            xs.append(r['num_labeled'])
            ys.append(value)
    return np.asarray(xs), np.asarray(ys, dtype=float)


def plot_summary(path: str | Path, records: Sequence[dict], title: str) -> Path:
    """Four panels across rounds: bound terms, their rank correlation with the score,
    the perturbed loss of the labeled/unlabeled/whole set, ψ and the relative margin.

    Args:
        path: PNG to write.
        records: Per-round diagnostics (the ``round_NNN.json`` contents), any order.
        title: Figure title.
    """
    records = sorted(records, key=lambda r: r['round'])
    fig = _figure(11, 7.5)
    (a, b), (c, d) = fig.subplots(2, 2)
    for key, label in (('loss', 'loss l'), ('rho_grad_norm', 'ρ‖∇l‖'),
                       ('half_rho2_lambda_max', '½ρ²λ₁')):
        a.plot(*_series(records, 'decomposition', 'bound_terms', key), marker='o', ms=3,
               label=label)
    twin = a.twinx()
    twin.plot(*_series(records, 'decomposition', 'mean', 'lambda_max'), color='gray', ls='--',
              label='λ₁ (right axis)')
    twin.set_ylabel('mean λ₁')
    a.set_title('Theorem 3.3 terms (mean over the diagnosed pool)')
    a.legend(loc='upper right', fontsize=8)
    twin.legend(loc='center right', fontsize=8)
    for key, label in (('loss', 'loss'), ('grad_norm', '‖∇l‖'), ('lambda_max', 'λ₁')):
        b.plot(*_series(records, 'decomposition', 'spearman_with_score', key), marker='o', ms=3,
               label=label)
    b.set_title('Spearman correlation with the SAAL score')
    b.set_ylim(-1.05, 1.05)
    b.axhline(0, color='k', lw=0.5)
    b.legend(fontsize=8)
    for key, label in (('labeled', 'labeled X_L'), ('unlabeled', 'unlabeled X_U'),
                       ('total', 'total X_L ∪ X_U')):
        c.plot(*_series(records, 'perturbed_loss', key), marker='o', ms=3, label=label)
    c.set_title('maximally perturbed loss (ground truth)')
    c.legend(fontsize=8)
    d.plot(*_series(records, 'pseudo_labels', 'psi'), marker='o', ms=3, label='ψ(ρ)')
    d.plot(*_series(records, 'pseudo_labels', 'relative_margin'), marker='o', ms=3,
           label='relative margin r(ρ, δ)')
    d.set_title('pseudo-label under the perturbation')
    d.set_ylim(-0.05, 1.05)
    d.legend(fontsize=8)
    for ax in (a, b, c, d):
        ax.set_xlabel('labeled samples')
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_landscape(path: str | Path, surface: LossSurface, title: str) -> Path:
    """Filled contours of a loss surface with θ marked (paper Fig. 5)."""
    fig = _figure(5.5, 4.5)
    ax = fig.subplots()
    alpha, beta = np.meshgrid(surface.alphas, surface.betas)
    # Log-spaced levels show both the basin and the walls.
    low, high = float(surface.loss.min()), float(surface.loss.max())
    levels = np.geomspace(max(low, 1e-6), max(high, low * 1.01 + 1e-6), 20)
    filled = ax.contourf(alpha, beta, np.maximum(surface.loss, levels[0]), levels=levels,
                         cmap='viridis')
    ax.contour(alpha, beta, surface.loss, levels=levels, colors='k', linewidths=0.3)
    ax.plot([0], [0], 'r+', ms=10)
    fig.colorbar(filled, ax=ax, label='mean loss')
    ax.set_xlabel('α (direction 1)')
    ax.set_ylabel('β (direction 2)')
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_sweep(path: str | Path, results: Sequence[dict], title: str) -> Path:
    """ψ(ρ), the relative margin and the query overlap against ρ (paper Fig. 6–7)."""
    fig = _figure(6, 4)
    ax = fig.subplots()
    rhos = [r['rho'] for r in results]
    for key, label in (('psi', 'ψ(ρ): label kept'), ('relative_margin', 'relative margin'),
                       ('topk_overlap', 'top-k overlap with reference ρ'),
                       ('topk_overlap_clean', 'top-k overlap with plain loss')):
        values = [r.get(key, math.nan) for r in results]
        if not all(isinstance(v, float) and math.isnan(v) for v in values):
            ax.plot(rhos, values, marker='o', label=label)
    if all('theorem_3_3' in r for r in results):
        ax.plot(rhos, [r['theorem_3_3']['bound_holds_fraction'] for r in results], marker='o',
                ls='--', label='share within l + ρ‖g‖ + ½ρ²λ₁')
    ax.set_xscale('log')
    ax.set_xlabel('ρ')
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
