"""A run's visual report: one self-contained HTML file (images embedded, no network).

``report.html`` in the work dir shows the learning curve, then per round (newest first) the
queried samples as a gallery with their scores and answers, the score histogram of the
candidates with the picked ones marked, and the class mix of the answers. Everything is read
from the round files (``scores.npz``, ``selected.json``, ``annotations.json``,
``metrics.json``), so the same page is drawn by :class:`RunReportHook` after each round and by
``tools/report.py`` for any work dir; :func:`query_report` draws the page of a query-mode
folder. Pictures come from the task's :meth:`~saal_tasks.core.task.SamplePictures.preview`
(classification: the image; detection: the answered boxes drawn by mmdet's
``DetLocalVisualizer``; segmentation: the revealed pixels drawn by mmseg's
``SegLocalVisualizer``); a task without one shows ids only.

A small script at the end of the page counts images that failed to load into
``<body data-broken="N">``, so a headless browser can check the page (``tools/report.py
--check``).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from mmengine.logging import print_log

from ..core.hooks import ALHook
from ..core.io import atomic_write
from ..core.scorer import ScoreResult
from ..core.task import BaseTask
from ..registry import AL_HOOKS

#: Thumbnail edge in pixels (small images are enlarged with nearest-neighbour sampling).
THUMB = 96
#: Picks shown per round (the highest-ranked first); the rest are counted.
GALLERY_LIMIT = 48

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.gallery{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:4px;text-align:center}
figcaption{font-size:11px;line-height:1.3;max-width:100px;word-wrap:break-word}
img.thumb{width:96px;height:96px;object-fit:contain}img.small{image-rendering:pixelated}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px}
.note{color:#666;font-size:13px}
"""
_CHECK = ("<script>window.addEventListener('load',function(){var b=0;"
          "document.querySelectorAll('img').forEach(function(i){"
          "if(!i.complete||i.naturalWidth===0)b++;});"
          "document.body.setAttribute('data-broken',String(b));});</script>")


def _png(fig: Any) -> str:
    """A matplotlib figure as a data URI (and closed)."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    plt.close(fig)
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode()


def _thumb(picture: np.ndarray) -> str:
    """A ``[H, W, 3]`` uint8 picture as a PNG data URI, enlarged to about :data:`THUMB`."""
    from PIL import Image
    image = Image.fromarray(np.ascontiguousarray(picture))
    scale = max(1, THUMB // max(image.size))
    if scale > 1:
        image = image.resize((image.size[0] * scale, image.size[1] * scale), Image.NEAREST)
    elif max(image.size) > 2 * THUMB:  # sharp on high-density screens, small in the page
        image.thumbnail((2 * THUMB, 2 * THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode()


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use('Agg')  # files only: no display on servers
    import matplotlib.pyplot as plt
    return plt


def score_histogram(scores: np.ndarray, picked: np.ndarray, title: str) -> str:
    """Histogram of the candidates' scores with the picked ones in their own colour."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.histogram_bin_edges(scores, bins=min(40, max(5, len(scores) // 5)))
    ax.hist(scores, bins=bins, color='#9ecae1', label=f'candidates ({len(scores)})')
    ax.hist(picked, bins=bins, color='#d94801', label=f'picked ({len(picked)})')
    ax.set_xlabel('score')
    ax.set_ylabel('samples')
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def class_mix(classes: Sequence[int], names: Sequence[str] | None, title: str) -> str:
    """Bar chart of how many answers fall in each class."""
    plt = _pyplot()
    count = max(len(names or []), max(classes, default=-1) + 1)
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=count)
    labels = list(names) if names and len(names) == count else [str(i) for i in range(count)]
    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * count + 1), 3))
    ax.bar(range(count), counts, color='#6baed6')
    ax.set_xticks(range(count), labels, rotation=90 if count > 12 else 0, fontsize=8)
    ax.set_ylabel('answers')
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def learning_curve(records: Sequence[dict[str, Any]], title: str) -> str | None:
    """The evaluation metrics against what was labeled (``None`` without records).

    The x-axis is the labeled pixel percentage where the task reports one (partial
    annotation: every round labels pixels of the same images), else the labeled samples.
    Per-class entries (``IoU.road``) and annotation counts are left out.
    """
    first = records[0] if records else {}
    metrics = [k for k in first
               if k not in ('round', 'num_labeled') and not k.endswith('_s')
               and not k.startswith(('num_', 'labeled_')) and '.' not in k
               and isinstance(first[k], (int, float))]
    if not metrics:
        return None
    x_key, x_label = (('labeled_pixel_percent', 'labeled pixels (%)')
                      if 'labeled_pixel_percent' in first else ('num_labeled', 'labeled samples'))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r[x_key] for r in records]
    for metric in metrics[:4]:
        ax.plot(xs, [r.get(metric, np.nan) for r in records], marker='o', markersize=3,
                label=metric)
    ax.set_xlabel(x_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def gallery(task: BaseTask | None, ids: np.ndarray, scores: np.ndarray,
            answers: dict[int, Any] | None, sources: dict[int, str] | None = None,
            answer_word: str = 'label') -> str:
    """Figures of the picks: picture (when the task has one), rank, id, score, answer.

    ``answers`` are drawn on the pictures and their classes captioned after
    ``answer_word`` (``'predicted'`` for a query's model answers).
    """
    shown = np.asarray(ids[:GALLERY_LIMIT], dtype=np.int64)
    pictures = task.preview(shown, answers) if task is not None and len(shown) else None
    names = task.class_names() if task is not None else None
    items = []
    for k, sid in enumerate(shown):
        lines = [f'#{k + 1} · id {int(sid)}', f'score {float(scores[k]):.4g}']
        if answers and int(sid) in answers and task is not None:
            classes = task.annotation_classes(answers[int(sid)])
            if classes:
                lines.append(f'{answer_word} ' + ', '.join(names[c] if names and c < len(names)
                                                  else str(c) for c in classes[:4]))
        if sources and int(sid) in sources:
            lines.append(sources[int(sid)])
        small = pictures is not None and max(pictures[k].shape[:2]) < THUMB
        picture = (f'<img class="thumb{" small" if small else ""}" alt="sample {int(sid)}" '
                   f'src="{_thumb(pictures[k])}">' if pictures is not None else '')
        caption = '<br>'.join(html.escape(line) for line in lines)
        items.append(f'<figure>{picture}<figcaption>{caption}</figcaption></figure>')
    more = (f'<p class="note">and {len(ids) - len(shown)} more (all in selected.json)</p>'
            if len(ids) > len(shown) else '')
    return f'<div class="gallery">{"".join(items)}</div>{more}'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f'</title><style>{_STYLE}</style></head><body data-broken="?">'
            f'<h1>{html.escape(title)}</h1>{body}{_CHECK}</body></html>')


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def round_section(work_dir: Path, round_idx: int, task: BaseTask | None) -> str:
    """The HTML of one round: metrics, histogram, gallery, class mix (what exists of them)."""
    folder = Path(work_dir) / 'rounds' / f'round_{round_idx:03d}'
    parts = [f'<h2>Round {round_idx}</h2>']
    metrics = _read_json(folder / 'metrics.json')
    if metrics:
        def table(items: list[tuple[str, Any]]) -> str:
            return '<table>' + ''.join(
                f'<tr><th>{html.escape(str(k))}</th><td>'
                f'{f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))}</td></tr>'
                for k, v in items) + '</table>'
        main = [(k, v) for k, v in metrics.items() if '.' not in k]
        per_class = [(k, v) for k, v in metrics.items() if '.' in k]
        parts.append(table(main))
        if per_class:  # e.g. IoU.road: folded, the page stays short
            parts.append(f'<details><summary>per class ({len(per_class)})</summary>'
                         f'{table(per_class)}</details>')
    selected = _read_json(folder / 'selected.json')
    if not selected or not (folder / 'scores.npz').exists():
        parts.append('<p class="note">no query in this round (the last round trains and '
                     'evaluates only)</p>')
        return ''.join(parts)
    result = ScoreResult.load(folder / 'scores.npz')
    candidates, scores = result.sample_ids, result.scores
    position = {int(i): k for k, i in enumerate(candidates)}
    ids = np.asarray(selected['sample_ids'], dtype=np.int64)
    picked_scores = np.array([scores[position[int(i)]] for i in ids if int(i) in position])
    raw = _read_json(folder / 'annotations.json')
    answers = ({int(k): task.decode_annotation(v) for k, v in raw.items()}
               if raw and task is not None else None)
    figures = [f'<img alt="scores of round {round_idx}" src="'
               f'{score_histogram(scores, picked_scores, f"round {round_idx}: scores")}">']
    if answers and task is not None:
        classes = [c for sid in ids if int(sid) in answers
                   for c in task.annotation_classes(answers[int(sid)])]
        if classes:
            figures.append(f'<img alt="class mix of round {round_idx}" src="'
                           f'{class_mix(classes, task.class_names(), "answers per class")}">')
    parts.append(f'<p>{len(ids)} picked of {len(candidates)} scored.</p>')
    parts.append(f'<div class="figs">{"".join(figures)}</div>')
    parts.append(gallery(task, ids, picked_scores, answers))
    return ''.join(parts)


def run_report(work_dir: str | Path, task: BaseTask | None, records: Sequence[dict[str, Any]],
               title: str, sections: dict[int, str] | None = None) -> Path:
    """Write ``work_dir/report.html`` for the rounds in ``records``.

    Args:
        work_dir: The run's folder.
        task: The run's task (pictures and class names), or ``None`` for ids only.
        records: The finished rounds' records (``metrics.jsonl``).
        title: Page title (the run name).
        sections: Already drawn round sections, reused and extended in place.

    Returns:
        The report's path.
    """
    work_dir = Path(work_dir)
    sections = sections if sections is not None else {}
    for record in records:
        r = int(record['round'])
        if r not in sections:
            sections[r] = round_section(work_dir, r, task)
    curve = learning_curve(records, title)
    body = (f'<img alt="learning curve" src="{curve}">' if curve else
            '<p class="note">no finished round yet</p>')
    body += ''.join(sections[int(r['round'])] for r in reversed(records))
    path = work_dir / 'report.html'
    atomic_write(path, lambda f: f.write(_page(title, body).encode()))
    return path


def query_report(out_dir: str | Path, task: BaseTask | None, candidates: np.ndarray,
                 scores: np.ndarray, picked: np.ndarray, picked_scores: np.ndarray,
                 sources: dict[int, str] | None, title: str,
                 predictions: dict[int, Any] | None = None,
                 num_units: int | None = None) -> Path:
    """Write ``out_dir/report.html`` for a query-mode folder: histogram and gallery, the
    model's ``predictions`` drawn on the picks (boxes, the queried pixels' classes), and
    ``num_units`` (units to label in all, unit selectors)."""
    units = '' if num_units is None else f' ({num_units} units to label)'
    body = (f'<p>{len(picked)} picked of {len(candidates)} scored{units}.</p>'
            '<div class="figs">'
            f'<img alt="scores" src="{score_histogram(scores, picked_scores, "scores")}">'
            f'</div>{gallery(task, picked, picked_scores, predictions, sources, "predicted")}')
    path = Path(out_dir) / 'report.html'
    atomic_write(path, lambda f: f.write(_page(title, body).encode()))
    return path


@AL_HOOKS.register_module()
class RunReportHook(ALHook):
    """Rewrites ``work_dir/report.html`` after every round (see the module).

    A round's section is drawn once and kept; the page is rewritten with the new round on
    top, so a run stopped for human labels or interrupted still has its report.
    """

    def __init__(self) -> None:
        self._sections: dict[int, str] = {}

    def after_round(self, loop, round_idx: int, record: dict[str, Any]) -> None:
        if not loop.is_main:
            return
        path = run_report(loop.work_dir, loop.task, loop.records, loop.run_name,
                          self._sections)
        if round_idx == 1:
            print_log(f'report: {path} (rewritten after each round)', logger='current')


__all__ = ['RunReportHook', 'class_mix', 'gallery', 'learning_curve', 'query_report',
           'round_section', 'run_report', 'score_histogram']
