"""RIPU's training recipe, run by mmengine's Runner one iteration window at a time.

:class:`SourceTargetTrainer` holds the recipe of :class:`~.task.SegmentationTask` (SGD with a
faster decode head, poly learning rate, batch sizes, flips, the optional RIPU terms) and turns
it into mmengine's configs at the edge: an ``optim_wrapper`` with the head's learning-rate
factor as ``paramwise_cfg.custom_keys``, a ``PolyLR`` ``param_scheduler`` over the whole run,
and a :class:`~.iterations.WindowTrainLoop` for the window ``[start, stop)``. The Runner then
owns the device (CUDA when present, CPU otherwise), automatic mixed precision
(``AmpOptimWrapper``), data-parallel training (``MMDistributedDataParallel`` under torchrun)
and the scalar logs (its visualizer's backends). Every iteration draws a source batch (full
labels) and a target batch (labels only where revealed); the objective is
:class:`~.adaptation_model.DomainAdaptiveSegmentor`'s.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader

from ...compat.mmengine_runtime import (isolated_runner_globals, preserved_global_rng,
                                        quiet_current_logger, runner_launch_args)
from ...core.dist import broadcast_buffers, rank_and_world
from ...core.errors import ConfigError
from .adaptation_model import DomainAdaptiveSegmentor
from .annotations import PixelLabels
from .augment import TrainPipeline
from .data import ImageSet
from .iterations import IterationBatches, TrainProgressHook, draw_window, unwrap_single

__all__ = ['SourceTargetTrainer']


@dataclass(frozen=True)
class SourceTargetTrainer:
    """The training recipe of the segmentation task (options as in ``SegmentationTask``).

    Attributes:
        batch_size: Source images per iteration.
        target_batch_size: Target images per iteration.
        lr: Base learning rate (SGD); the decode head uses ``lr * head_lr_mult``.
        head_lr_mult: Learning-rate factor of the decode head.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        poly_power: Poly schedule ``lr * (1 - it / total) ** poly_power``.
        lc_weight: Weight of the local-consistency term on the source batch (0: off).
        nl_weight: Weight of the negative-learning term on the target batch (0: off).
        nl_threshold: Probability below which a class is a negative label.
        flip: Random horizontal flips.
        log_interval: Training progress every this many iterations.
        amp: Automatic mixed precision (mmengine's ``AmpOptimWrapper``; needs CUDA).
        num_workers: Data-loading processes (0: load in the training process).
        vis_backends: mmengine visualizer backends for the training scalars (e.g.
            ``dict(type='TensorboardVisBackend')``).
        pipeline: mmseg/mmcv augmentation of every training sample, or ``None``.
        optim_wrapper: An mmengine ``optim_wrapper`` config used as is instead of the one
            built from ``lr``, ``momentum``, ``weight_decay`` and ``head_lr_mult``.
        param_scheduler: mmengine ``param_scheduler`` configs used instead of the poly
            schedule; iteration-based (``by_epoch=False``, filled in when absent), and a
            scheduler without ``end`` ends with the run (``total + 1``).
    """

    batch_size: int
    target_batch_size: int
    lr: float
    head_lr_mult: float
    momentum: float
    weight_decay: float
    poly_power: float
    lc_weight: float
    nl_weight: float
    nl_threshold: float
    flip: bool
    log_interval: int
    amp: bool = False
    num_workers: int = 0
    vis_backends: tuple = field(default=(dict(type='LocalVisBackend'),))
    pipeline: TrainPipeline | None = None
    optim_wrapper: dict | None = None
    param_scheduler: tuple | None = None

    def __post_init__(self) -> None:
        if self.optim_wrapper is not None:
            if not isinstance(self.optim_wrapper, dict) or 'optimizer' not in self.optim_wrapper:
                raise ConfigError(f'task.optim_wrapper must be an mmengine optim_wrapper config '
                                  f"with an optimizer, e.g. dict(type='OptimWrapper', "
                                  f"optimizer=dict(type='SGD', lr=0.01)); got "
                                  f'{self.optim_wrapper!r}')
            if self.amp:
                raise ConfigError("task.amp=True applies to the optim_wrapper the task builds; "
                                  "with your own task.optim_wrapper set its "
                                  "type='AmpOptimWrapper' instead")
        for k, cfg in enumerate(self.param_scheduler or ()):
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise ConfigError(f'task.param_scheduler[{k}] must be an mmengine scheduler '
                                  f'config with a type, got {cfg!r}')
            if cfg.get('by_epoch', False):
                raise ConfigError(f'task.param_scheduler[{k}] has by_epoch=True: segmentation '
                                  'trains in iterations; set by_epoch=False')

    def optim_wrapper_cfg(self) -> dict:
        """mmengine's ``optim_wrapper`` config: SGD, the decode head at ``head_lr_mult``."""
        if self.optim_wrapper is not None:
            return copy.deepcopy(self.optim_wrapper)
        if self.amp and not torch.cuda.is_available():
            raise ConfigError('task.amp=True needs a CUDA device (mmengine\'s AmpOptimWrapper '
                              'autocasts on CUDA): set task.amp=False on this machine')
        return dict(type='AmpOptimWrapper' if self.amp else 'OptimWrapper',
                    optimizer=dict(type='SGD', lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay),
                    # Substring match on parameter names: segmentor.decode_head.*
                    paramwise_cfg=dict(custom_keys={'decode_head': dict(
                        lr_mult=self.head_lr_mult)}))

    def param_scheduler_cfg(self, total: int) -> list[dict]:
        """mmengine's schedulers: by default the poly schedule, RIPU's
        ``lr * (1 - it / total) ** power`` at iteration ``it``.

        mmengine's ``PolyLR`` decays to ``eta_min`` at iteration ``end - 1``
        (``total_iters = end - begin - 1``), so ``end = total + 1`` gives RIPU's horizon.
        """
        if self.param_scheduler is not None:
            return [{'by_epoch': False, 'end': total + 1, **copy.deepcopy(cfg)}
                    for cfg in self.param_scheduler]
        return [dict(type='PolyLR', eta_min=0.0, power=self.poly_power, begin=0,
                     end=total + 1, by_epoch=False)]

    def run(self, model: nn.Module, source: ImageSet, target: ImageSet, revealed: PixelLabels,
            seed: int, start: int, stop: int, total: int, optim_state: dict | None,
            log_dir: Path | None = None) -> tuple[nn.Module, dict]:
        """Train iterations ``[start, stop)`` of a ``total``-iteration run with a Runner.

        Args:
            model: The segmentor to train (in place; the Runner moves it to its device).
            source: The labeled source split.
            target: The target pool; batches are drawn from all of it.
            revealed: The revealed target pixels (the target labels).
            seed: Seed of the window's batches, flips and the Runner's randomness.
            start: First iteration (0-based).
            stop: End of the window (exclusive).
            total: Iterations of the whole run (the poly schedule's horizon).
            optim_state: What this method returned at ``start``, or ``None``.
            log_dir: Folder for the Runner's logs and scalars (``None``: a temporary one).

        Returns:
            The model and ``{'optimizer': ..., 'param_schedulers': [...]}`` at ``stop``.

        Raises:
            ConfigError: The batch sizes do not split evenly over the processes, or AMP
                without CUDA.
        """
        rank, world = rank_and_world()
        if self.batch_size % world or self.target_batch_size % world:
            raise ConfigError(f'task.batch_size ({self.batch_size}) and task.target_batch_size '
                              f'({self.target_batch_size}) must be multiples of the number of '
                              f'processes ({world}): each takes an equal part of every batch')
        # Distributed: every rank draws the same global batches (same generator) and trains
        # on its part; DDP averages the gradients, so the ranks' weights stay identical.
        draws = draw_window(seed, start, stop, len(source), len(target), self.batch_size,
                            self.target_batch_size, self.flip)
        loader = DataLoader(IterationBatches(source, target, revealed, draws, rank, world,
                                             self.pipeline, seed, start),
                            batch_size=1, shuffle=False, num_workers=self.num_workers,
                            collate_fn=unwrap_single)
        wrapper = DomainAdaptiveSegmentor(model, self.lc_weight, self.nl_weight,
                                          self.nl_threshold)
        # The progress lines go to the run's log, which is current until the Runner starts.
        progress = TrainProgressHook(MMLogger.get_current_instance(), self.log_interval, total)
        # Built here rather than by the Runner: mmengine's constructor logs one warning per
        # parameter without gradient (every frozen batch norm of DeepLab-v2), each window.
        with quiet_current_logger('ERROR'):
            optim_wrapper = build_optim_wrapper(wrapper, self.optim_wrapper_cfg())
        workdir = str(log_dir) if log_dir else tempfile.mkdtemp(prefix='saal_seg_runner_')
        try:
            with preserved_global_rng(), isolated_runner_globals():
                runner = Runner(
                    model=wrapper, work_dir=workdir, train_dataloader=loader,
                    optim_wrapper=optim_wrapper,
                    param_scheduler=self.param_scheduler_cfg(total),
                    train_cfg=dict(type='WindowTrainLoop', begin=start, max_iters=stop,
                                   state=optim_state),
                    default_hooks=dict(timer=dict(type='IterTimerHook'),
                                       logger=dict(type='LoggerHook',
                                                   interval=self.log_interval),
                                       param_scheduler=dict(type='ParamSchedulerHook'),
                                       checkpoint=None),
                    custom_hooks=[progress],
                    visualizer=dict(type='Visualizer', vis_backends=list(self.vis_backends)),
                    randomness=dict(seed=seed), env_cfg=dict(cudnn_benchmark=False),
                    # The Runner's own lines (environment, config) stay in its log file.
                    log_level='WARNING', experiment_name='saal_segmentation',
                    **runner_launch_args(world > 1))
                runner.train()
                state = runner.train_loop.window_state()
        finally:
            if not log_dir:
                shutil.rmtree(workdir, ignore_errors=True)
        # DDP here does not broadcast buffers each step: score with rank 0's statistics.
        broadcast_buffers(model)
        return model, state
