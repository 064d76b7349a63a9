"""Plot of the evaluation metric(s) against the labeled amount: samples, or the labeled pixel
percentage for partial-annotation tasks."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mmengine.logging import print_log

from ..core.errors import ConfigError
from ..core.hooks import ALHook
from ..registry import AL_HOOKS

#: The x-axes a learning curve can have: record key and axis label.
X_AXES = {'samples': ('num_labeled', 'labeled samples'),
          'pixels': ('labeled_pixel_percent', 'labeled pixels (%)')}


@AL_HOOKS.register_module()
class LearningCurveHook(ALHook):
    """Writes ``work_dir/<filename>``: the metric(s) versus the labeled amount, at the end of a
    run.

    Args:
        metric: Key of the evaluation metric to plot (e.g. ``'accuracy'``), or several keys
            drawn as one line each (segmentation: ``['mIoU16', 'mIoU13']``).
        filename: PNG file name inside the run's work directory.
        x_axis: ``'samples'`` (``num_labeled``), ``'pixels'`` (``labeled_pixel_percent``:
            partial annotation reveals pixels of images already in the labeled set, so the
            sample count stops growing) or ``'auto'``: pixels when the records have them.
    """

    def __init__(self, metric: str | Sequence[str] = 'accuracy',
                 filename: str = 'learning_curve.png', x_axis: str = 'auto') -> None:
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        if not self.metrics or not all(isinstance(m, str) for m in self.metrics):
            raise ConfigError(f'LearningCurveHook.metric must be a metric name or a list of '
                              f'them, got {metric!r}')
        if x_axis not in ('auto', *X_AXES):
            raise ConfigError(f"LearningCurveHook.x_axis must be 'auto', 'samples' or "
                              f"'pixels', got {x_axis!r}")
        self.filename = filename
        self.x_axis = x_axis

    def axis(self, records: Sequence[dict[str, Any]]) -> tuple[str, str]:
        """The record key and the label of the x-axis for ``records``."""
        if self.x_axis == 'auto':
            partial = bool(records) and X_AXES['pixels'][0] in records[0]
            return X_AXES['pixels' if partial else 'samples']
        return X_AXES[self.x_axis]

    def after_run(self, loop, records) -> None:
        if not loop.is_main:
            return
        x_key, x_label = self.axis(records)
        curves = {m: [(r[x_key], r[m]) for r in records if m in r and x_key in r]
                  for m in self.metrics}
        curves = {m: points for m, points in curves.items() if points}
        if not curves:
            print_log(f'LearningCurveHook: no metric {self.metrics!r} against {x_key!r} in '
                      'the records; set hooks=[dict(type="LearningCurveHook", metric=...)]',
                      logger='current')
            return
        import matplotlib
        matplotlib.use('Agg')  # files only: no display on servers
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, points in curves.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker='o', markersize=3, label=name)
        ax.set_xlabel(x_label)
        ax.set_ylabel(next(iter(curves)) if len(curves) == 1 else 'metric')
        if len(curves) > 1:
            ax.legend()
        ax.set_title(loop.run_name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(loop.work_dir) / self.filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print_log(f'learning curve written to {path}', logger='current')
