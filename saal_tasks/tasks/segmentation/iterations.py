"""One iteration window of a longer training run, for mmengine's Runner.

The in-run schedule trains one run in windows ``[start, stop)`` with selections between
them, and a window restarts from its beginning after a crash. Three pieces make a window a
pure function of ``(seed, start, stop)`` and the state saved at ``start``:

* :class:`IterationBatches` — item ``k`` is iteration ``start + k``'s source and target batch,
  drawn up front from one generator seeded with the window's seed (RIPU draws its source and
  target images independently and with replacement);
* :class:`WindowTrainLoop` — mmengine's ``IterBasedTrainLoop`` started at ``start`` with the
  optimizer and schedulers restored from memory. mmengine's own resume would replay
  ``start`` batches through the data loader to skip them (``Advance dataloader``); the
  batches here are indexed by iteration, so nothing is replayed;
* :class:`TrainProgressHook` — the run log's progress line (mean terms, learning rate,
  iterations per second, time left), written to the logger that was current before the
  Runner took over, so it lands in ``run.log`` like the rest of the round.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop
from torch.utils.data import Dataset

from ...core.scorer import format_seconds
from .adaptation_model import LOSS_TERMS
from .annotations import PixelLabels
from .augment import TrainPipeline, sample_seed
from .classes import CLASSES16
from .data import ImageSet, load_batch

__all__ = ['IterationBatches', 'TrainProgressHook', 'WindowTrainLoop', 'draw_window',
           'unwrap_single']


def draw_window(seed: int, start: int, stop: int, num_source: int, num_target: int,
                batch_size: int, target_batch_size: int,
                flip: bool) -> list[tuple[np.ndarray, ...]]:
    """The samples and flips of every iteration in ``[start, stop)``.

    Args:
        seed: The window's seed.
        start: First iteration.
        stop: End of the window (exclusive).
        num_source: Source images to draw from.
        num_target: Target images to draw from (the whole pool: CE where pixels are
            revealed, the optional unsupervised term everywhere).
        batch_size: Source images per iteration.
        target_batch_size: Target images per iteration.
        flip: Draw horizontal flips (probability 0.5 each), else none.

    Returns:
        Per iteration ``(source ids [B_s], source flips [B_s], target ids [B_t],
        target flips [B_t])``.
    """
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(start, stop):
        src = rng.integers(num_source, size=batch_size)
        tgt = rng.integers(num_target, size=target_batch_size)
        flips = (rng.random(batch_size + target_batch_size) < 0.5 if flip
                 else np.zeros(batch_size + target_batch_size, bool))
        draws.append((src, flips[:batch_size], tgt, flips[batch_size:]))
    return draws


class IterationBatches(Dataset):
    """Item ``k``: the batches of the window's ``k``-th iteration, as the model's inputs.

    Args:
        source: The labeled source split.
        target: The target pool.
        revealed: The revealed target pixels (target labels, 255 elsewhere).
        draws: Per iteration the ids and flips of :func:`draw_window`.
        rank: This process's rank; with ``world > 1`` each rank loads its contiguous part
            of every batch (the global batch is the same on every rank).
        world: Number of processes.
        pipeline: Optional augmentation of every sample (``task.train_pipeline``).
        seed: The window's seed (seeds the augmentation of each sample).
        start: The window's first iteration.
    """

    #: The Runner's train loop hands this to the visualizer.
    metainfo = dict(classes=CLASSES16)

    def __init__(self, source: ImageSet, target: ImageSet, revealed: PixelLabels,
                 draws: Sequence[tuple[np.ndarray, ...]], rank: int = 0, world: int = 1,
                 pipeline: TrainPipeline | None = None, seed: int = 0,
                 start: int = 0) -> None:
        self.source, self.target, self.revealed = source, target, revealed
        self.pipeline, self.seed, self.start = pipeline, int(seed), int(start)
        # A sample's position in the global batch (its augmentation seed), rank by rank.
        self.offsets = [0, 0]
        if world > 1:
            self.offsets = [sum(len(part) for part in np.array_split(draws[0][i], world)[:rank])
                            for i in (0, 2)] if draws else [0, 0]
            draws = [tuple(np.array_split(a, world)[rank] for a in d) for d in draws]
        self.draws = list(draws)

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        src, src_flips, tgt, tgt_flips = self.draws[index]
        x_s, y_s = load_batch(self.source, src, src_flips,
                              transform=self._transform(index, 0))
        x_t, y_t = load_batch(self.target, tgt, tgt_flips, self.revealed,
                              transform=self._transform(index, 1))
        return dict(x_s=x_s, y_s=y_s, x_t=x_t, y_t=y_t)

    def _transform(self, index: int, batch: int) -> Any:
        """The pipeline with each sample's seed (by its place in the global batch), or
        ``None`` without a pipeline."""
        pipeline = self.pipeline
        if pipeline is None:
            return None
        iteration, offset = self.start + index, self.offsets[batch]
        return lambda image, label, k: pipeline(
            image, label, sample_seed(self.seed, iteration, batch, offset + k))


def unwrap_single(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate of a loader with ``batch_size=1`` over :class:`IterationBatches`: an item is
    already a whole iteration."""
    return items[0]


@LOOPS.register_module()
class WindowTrainLoop(IterBasedTrainLoop):
    """Iterations ``[begin, max_iters)`` of one run, started from state held in memory.

    Args:
        runner: The Runner (given by mmengine).
        dataloader: A loader whose ``k``-th batch is iteration ``begin + k``'s.
        begin: First iteration of the window.
        max_iters: End of the window (exclusive).
        state: ``{'optimizer': ..., 'param_schedulers': [...]}`` as returned by
            :meth:`window_state` at ``begin``, or ``None`` at iteration 0.
    """

    def __init__(self, runner: Any, dataloader: Any, begin: int, max_iters: int,
                 state: dict | None = None) -> None:
        super().__init__(runner, dataloader, max_iters, val_begin=max_iters + 1,
                         val_interval=max_iters + 1)
        self._iter = int(begin)
        self._state = state

    def run(self) -> torch.nn.Module:
        """Restore the optimizer and schedulers, then train to ``max_iters`` (no replay)."""
        runner = self.runner
        if self._state is not None:
            runner.optim_wrapper.load_state_dict(self._state['optimizer'])
            for scheduler, saved in zip(runner.param_schedulers,
                                        self._state['param_schedulers']):
                scheduler.load_state_dict(saved)
        # Gradients left on the weights by scoring must not reach the first step.
        runner.optim_wrapper.zero_grad()
        runner.call_hook('before_train')
        runner.call_hook('before_train_epoch')
        while self._iter < self._max_iters and not self.stop_training:
            runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
        runner.call_hook('after_train_epoch')
        runner.call_hook('after_train')
        return runner.model

    def window_state(self) -> dict:
        """The optimizer's and schedulers' ``state_dict`` at the current iteration."""
        optimizer = self.runner.optim_wrapper.state_dict()
        # The wrapper's base settings (a placeholder tensor and the base lr) are rebuilt from
        # the same config on every window; kept, a restored copy would pickle differently
        # (its key strings are not the interned ones) and a resumed run's files would not be
        # byte-identical to an uninterrupted run's.
        optimizer.pop('base_param_settings', None)
        return {'optimizer': optimizer,
                'param_schedulers': [s.state_dict() for s in self.runner.param_schedulers]}


class TrainProgressHook(Hook):
    """Every ``interval`` iterations: the mean of each loss term, the learning rate, the
    rate and the time left in the window, on ``logger``.

    Args:
        logger: Where the lines go (the run's logger, not the Runner's).
        interval: Iterations between lines; the window's last iteration always logs.
        total: Iterations of the whole run (shown as ``iter i/total``).
    """

    # Before ParamSchedulerHook (LOW) steps: the line shows the iteration's own rate.
    priority = 'NORMAL'

    def __init__(self, logger: MMLogger, interval: int, total: int) -> None:
        self.logger, self.interval, self.total = logger, int(interval), int(total)
        self._terms: list[dict[str, float]] = []
        self._began = 0.0
        self._first = 0

    def before_train(self, runner: Any) -> None:
        self._began, self._first, self._terms = time.perf_counter(), runner.iter, []

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        self._terms.append({k: float(torch.as_tensor(v).detach())
                            for k, v in (outputs or {}).items() if k in LOSS_TERMS})
        it, stop = runner.iter + 1, runner.train_loop.max_iters
        done = it - self._first
        if done % self.interval and it != stop:
            return
        # A term is averaged over the iterations that had it (a target batch without revealed
        # pixels has no target term).
        keys = [k for k in LOSS_TERMS if any(k in t for t in self._terms)]
        mean = {k: float(np.mean([t[k] for t in self._terms if k in t])) for k in keys}
        rate = done / max(time.perf_counter() - self._began, 1e-9)
        # Left until this window ends (the next selection or the end of training).
        left = '' if it == stop else f', {format_seconds((stop - it) / rate)} left'
        lr = runner.optim_wrapper.get_lr()['lr'][0]
        self.logger.log(logging.INFO,
                        f'iter {it}/{self.total}: '
                        + ', '.join(f'{k} {v:.4f}' for k, v in mean.items())
                        + f', lr {lr:.2e} ({rate:.1f} it/s{left})')
        self._terms = []
