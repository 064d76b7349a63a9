"""Reports of a sweep: results JSON, Markdown table, learning curves, penalty matrices."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.io import atomic_write_json
from .metrics import penalty_matrix


def _fmt(stats: dict[str, Any] | None, expected: int, bold: bool) -> str:
    if stats is None:
        return '–'
    text = f"{stats['mean']:.1f} ± {stats['std']:.1f}"
    if bold:
        text = f'**{text}**'
    if stats['n'] != expected:
        text += f" (n={stats['n']})"
    return text


def markdown_table(summary: dict[str, Any], strategies: Sequence[str],
                   optimizers: Sequence[str], expected_seeds: int,
                   labels: dict[str, str] | None = None) -> str:
    """Rows: strategies; columns: final metric and AUBC per optimizer (mean ± std over seeds).

    The best mean of each column is bold; an entry with fewer than ``expected_seeds`` seeds
    shows its ``n``.
    """
    labels = labels or {}
    header = ['strategy']
    for opt in optimizers:
        header += [f'{labels.get(opt, opt)} final', f'{labels.get(opt, opt)} AUBC']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    best = {}
    for opt in optimizers:
        for key in ('final', 'aubc'):
            means = [summary.get(opt, {}).get(s, {}).get(key, {}).get('mean') for s in strategies]
            means = [m for m in means if m is not None]
            best[opt, key] = max(means) if means else None
    for s in strategies:
        row = [labels.get(s, s)]
        for opt in optimizers:
            entry = summary.get(opt, {}).get(s)
            for key in ('final', 'aubc'):
                stats = entry[key] if entry else None
                row.append(_fmt(stats, expected_seeds,
                                stats is not None and stats['mean'] == best[opt, key]))
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines) + '\n'


#: Line styles cycled over once the ten colours of ``tab10`` are used up.
_STYLES = ('-', '--', ':', '-.')


def curve_styles(strategies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct (colour, line style) per strategy, the same in every panel: the ten
    ``tab10`` colours first with solid lines, then again dashed, dotted, dash-dotted. SAAL
    variants are drawn thicker (the comparison the paper makes)."""
    import matplotlib.pyplot as plt
    colours = plt.get_cmap('tab10').colors
    return {s: dict(color=colours[k % 10], linestyle=_STYLES[(k // 10) % len(_STYLES)],
                    lw=2.4 if s.startswith('saal') else 1.4)
            for k, s in enumerate(strategies)}


def curve_figure(summary: dict[str, Any], strategies: Sequence[str],
                 optimizers: Sequence[str], metric: str,
                 labels: dict[str, str] | None = None) -> Any:
    """Mean learning curve with a ±1 std band per strategy, one panel per optimizer, and
    one legend for all panels below them."""
    import matplotlib
    matplotlib.use('Agg')  # files only: no display on servers
    import matplotlib.pyplot as plt

    labels = labels or {}
    styles = curve_styles(strategies)
    fig, axes = plt.subplots(1, len(optimizers), figsize=(6.5 * len(optimizers), 5.2),
                             squeeze=False, sharey=True)
    handles: dict[str, Any] = {}
    for ax, opt in zip(axes[0], optimizers):
        for s in strategies:
            entry = summary.get(opt, {}).get(s)
            if entry is None:
                continue
            x = np.asarray(entry['curve']['num_labeled'])
            mean = np.asarray(entry['curve']['mean'])
            std = np.asarray(entry['curve']['std'])
            (line,) = ax.plot(x, mean, label=labels.get(s, s), **styles[s])
            ax.fill_between(x, mean - std, mean + std, color=styles[s]['color'], alpha=0.10)
            handles.setdefault(s, line)
        ax.set_title(labels.get(opt, opt))
        ax.set_xlabel('labeled samples')
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    ordered = [s for s in strategies if s in handles]
    columns = min(len(ordered), 6) or 1
    fig.legend([handles[s] for s in ordered], [labels.get(s, s) for s in ordered],
               loc='lower center', ncol=columns, fontsize=9, frameon=False)
    rows = -(-len(ordered) // columns)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * rows, 1, 1))
    return fig


def plot_curves(summary: dict[str, Any], strategies: Sequence[str], optimizers: Sequence[str],
                path: Path, metric: str, labels: dict[str, str] | None = None) -> None:
    """:func:`curve_figure`, saved to ``path``."""
    import matplotlib.pyplot as plt
    fig = curve_figure(summary, strategies, optimizers, metric, labels)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_penalty(matrix: dict[str, Any], path: Path, title: str,
                 labels: dict[str, str] | None = None) -> None:
    """Heat map of ``rate[i][j]``: the fraction of cases in which row beats column."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = labels or {}
    names = [labels.get(s, s) for s in matrix['strategies']]
    rate = np.array([[np.nan if v is None else v for v in row] for row in matrix['rate']])
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.8 + 0.55 * n))
    image = ax.imshow(rate, cmap='RdYlGn', vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            if not np.isnan(rate[i, j]):
                ax.text(j, i, f'{rate[i, j]:.2f}', ha='center', va='center', fontsize=7)
    ax.set_xticks(range(n), names, rotation=60, ha='right', fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out_dir: str | Path, summary: dict[str, Any], strategies: Sequence[str],
                 optimizers: Sequence[str], expected_seeds: int, metric: str,
                 extra: dict[str, Any] | None = None,
                 labels: dict[str, str] | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``curves.png``, ``penalty_final.png`` and
    ``penalty_aubc.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    present = [s for s in strategies if any(s in summary.get(o, {}) for o in optimizers)]
    penalties = {key: penalty_matrix(summary, present, key) for key in ('final', 'aubc')}
    paths = {'json': out / 'results.json', 'markdown': out / 'results.md',
             'curves': out / 'curves.png', 'penalty_final': out / 'penalty_final.png',
             'penalty_aubc': out / 'penalty_aubc.png'}
    atomic_write_json(paths['json'], {'metric': metric, 'strategies': list(strategies),
                                      'optimizers': list(optimizers),
                                      'expected_seeds': expected_seeds, 'summary': summary,
                                      'penalty': penalties, **(extra or {})})
    paths['markdown'].write_text(markdown_table(summary, strategies, optimizers,
                                                expected_seeds, labels))
    if present:
        plot_curves(summary, present, optimizers, paths['curves'], metric, labels)
        for key, name in (('final', 'final ' + metric), ('aubc', 'AUBC')):
            plot_penalty(penalties[key], paths[f'penalty_{key}'],
                         f'fraction of (optimizer, seed) cases where row beats column ({name})',
                         labels)
    return paths
