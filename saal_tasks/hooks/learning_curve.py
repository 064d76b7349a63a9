"""Plot of the evaluation metric against the number of labeled samples."""
from __future__ import annotations

from pathlib import Path

from mmengine.logging import print_log

from ..registry import AL_HOOKS
from ..core.hooks import ALHook


@AL_HOOKS.register_module()
class LearningCurveHook(ALHook):
    """Writes ``work_dir/<filename>``: ``metric`` versus labeled-set size, at the end of a run.

    Args:
        metric: Key of the evaluation metric to plot (e.g. ``'accuracy'``).
        filename: PNG file name inside the run's work directory.
    """

    def __init__(self, metric: str = 'accuracy', filename: str = 'learning_curve.png') -> None:
        self.metric = metric
        self.filename = filename

    def after_run(self, loop, records) -> None:
        if not loop.is_main:
            return
        points = [(r['num_labeled'], r[self.metric]) for r in records if self.metric in r]
        if not points:
            print_log(f'LearningCurveHook: no metric {self.metric!r} in the records; '
                      'set hooks=[dict(type="LearningCurveHook", metric=...)]',
                      logger='current')
            return
        import matplotlib
        matplotlib.use('Agg')  # files only: no display on servers
        import matplotlib.pyplot as plt
        xs, ys = zip(*points)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(xs, ys, marker='o', markersize=3)
        ax.set_xlabel('labeled samples')
        ax.set_ylabel(self.metric)
        ax.set_title(loop.run_name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(loop.work_dir) / self.filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print_log(f'learning curve written to {path}', logger='current')
