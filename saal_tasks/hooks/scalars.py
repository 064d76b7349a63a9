"""Per-round metrics through mmengine's visualiser backends (local JSON, TensorBoard, ...).

Each finished round's record (the metrics, the labeled count, the stage timings) goes to
every configured backend of an mmengine ``Visualizer`` with the round as the step:
``LocalVisBackend`` writes ``work_dir/vis_data/scalars.json`` (one JSON line per round), and
``dict(type='TensorboardVisBackend')`` writes event files for TensorBoard when it is
installed. Any other registered mmengine backend (WandB, MLflow, ...) works the same way.
"""
from __future__ import annotations

from typing import Any, Sequence

from mmengine.logging import print_log

from ..core.errors import ConfigError, MissingDependencyError
from ..core.hooks import ALHook
from ..registry import AL_HOOKS


@AL_HOOKS.register_module()
class ScalarsHook(ALHook):
    """Writes each round's numbers to mmengine visualiser backends.

    Args:
        vis_backends: mmengine backend configs; default the local JSON backend.
    """

    def __init__(self, vis_backends: Sequence[dict] | None = None) -> None:
        self.vis_backends = [dict(b) for b in (vis_backends or [dict(type='LocalVisBackend')])]
        for k, backend in enumerate(self.vis_backends):
            if not isinstance(backend.get('type'), str):
                raise ConfigError(f'vis_backends[{k}] needs a type, e.g. '
                                  "dict(type='TensorboardVisBackend')")
        self._visualizer: Any = None

    def _open(self, loop) -> Any:
        from mmengine.visualization import Visualizer
        if self._visualizer is None:
            # One instance per run folder: mmengine's visualisers are named singletons.
            name = f'saal_tasks:{loop.work_dir.resolve()}'
            self._visualizer = (Visualizer.get_instance(name) if
                                Visualizer.check_instance_created(name) else
                                Visualizer.get_instance(name, vis_backends=self.vis_backends,
                                                        save_dir=str(loop.work_dir)))
        return self._visualizer

    def after_round(self, loop, round_idx: int, record: dict[str, Any]) -> None:
        if not loop.is_main:
            return
        scalars = {k: v for k, v in record.items() if k != 'round'
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}
        try:  # backends import their packages on first use (TensorBoard: tensorboard)
            self._open(loop).add_scalars(scalars, step=int(round_idx))
        except ImportError as err:
            raise MissingDependencyError(
                'a visualiser backend of ScalarsHook needs a package that is not installed '
                f'({" ".join(str(err).split())}): install it, or remove that backend from '
                'the ScalarsHook vis_backends') from None
        if round_idx == 1:
            print_log(f'per-round scalars: {", ".join(b["type"] for b in self.vis_backends)} '
                      f'under {loop.work_dir}/vis_data', logger='current')

    def after_run(self, loop, records: list[dict[str, Any]]) -> None:
        if self._visualizer is not None:
            self._visualizer.close()


__all__ = ['ScalarsHook']
