"""RIPU's training iterations: a labeled source batch and a partially labeled target batch.

:class:`SourceTargetTrainer` holds the recipe of :class:`~.task.SegmentationTask` (SGD with a
faster decode head, poly learning rate, batch sizes, flips, the optional RIPU terms) and runs
an iteration window ``[start, stop)`` of one ``total``-iteration run. Every iteration draws a
source batch (full labels) and a target batch (labels only where revealed) from one seeded
generator; loss = source CE + CE on revealed target pixels (+ RIPU's optional terms: local
consistency on the source batch's label boundaries, negative learning on every target pixel).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

from ...core.dist import average_gradients, broadcast_buffers, rank_and_world
from ...core.errors import ConfigError
from ...core.scorer import format_seconds
from .annotations import PixelLabels
from .classes import IGNORE_INDEX
from .data import ImageSet, load_batch
from .losses import local_consistency_loss, negative_learning_loss
from .models import segment_logits

__all__ = ['LOSS_TERMS', 'SourceTargetTrainer']

#: The loss terms an iteration may log, in log order.
LOSS_TERMS = ('loss_src', 'loss_tgt', 'loss_lc', 'loss_nl')


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

    def optimizer(self, model: nn.Module) -> torch.optim.SGD:
        """SGD over ``model`` with two groups: the backbone (``lr``), the decode head
        (``lr * head_lr_mult``)."""
        head = [p for p in model.decode_head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        return torch.optim.SGD([dict(params=rest, lr=self.lr),
                                dict(params=head, lr=self.lr * self.head_lr_mult)],
                               lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def loss(self, model: nn.Module, x_s: torch.Tensor, y_s: torch.Tensor,
             x_t: torch.Tensor, y_t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Source CE + CE on revealed target pixels (+ optional RIPU terms) and its parts.

        Args:
            model: The segmentor in training mode.
            x_s: Source images ``[B_s, 3, H_s, W_s]``.
            y_s: Source labels ``[B_s, H_s, W_s]`` (255 = ignore).
            x_t: Target images ``[B_t, 3, H_t, W_t]``.
            y_t: Target labels ``[B_t, H_t, W_t]``, 255 where not revealed.

        Returns:
            The scalar loss (graph kept) and the value of each term it has, keyed by
            :data:`LOSS_TERMS` (no ``loss_tgt`` when no target pixel is revealed).
        """
        logits_s = segment_logits(model, x_s)
        loss = F.cross_entropy(logits_s, y_s, ignore_index=IGNORE_INDEX)
        parts = {'loss_src': loss.item()}
        if self.lc_weight:  # RIPU: on the source predictions, at the source label boundaries
            term = local_consistency_loss(logits_s.softmax(dim=1), y_s)
            loss = loss + self.lc_weight * term
            parts['loss_lc'] = term.item()
        labeled = y_t != IGNORE_INDEX
        if labeled.any() or self.nl_weight:
            logits_t = segment_logits(model, x_t)
            if labeled.any():
                target_ce = F.cross_entropy(logits_t, y_t, ignore_index=IGNORE_INDEX)
                loss = loss + target_ce
                parts['loss_tgt'] = target_ce.item()
            if self.nl_weight:  # RIPU: on every target pixel, revealed or not
                term = negative_learning_loss(logits_t.softmax(dim=1), self.nl_threshold)
                loss = loss + self.nl_weight * term
                parts['loss_nl'] = term.item()
        return loss, parts

    def run(self, model: nn.Module, source: ImageSet, target: ImageSet, revealed: PixelLabels,
            seed: int, start: int, stop: int, total: int, optim_state: dict | None
            ) -> tuple[nn.Module, dict]:
        """Train iterations ``[start, stop)`` of a ``total``-iteration run.

        Args:
            model: The segmentor to train (in place).
            source: The labeled source split.
            target: The target pool; batches are drawn from all of it.
            revealed: The revealed target pixels (the target labels).
            seed: Seed of the window's batches and flips.
            start: First iteration (0-based).
            stop: End of the window (exclusive).
            total: Iterations of the whole run (the poly schedule's horizon).
            optim_state: Optimizer ``state_dict`` at ``start``, or ``None``.

        Returns:
            The model and the optimizer's ``state_dict`` at ``stop``.

        Raises:
            ConfigError: The batch sizes do not split evenly over the processes.
        """
        rank, world = rank_and_world()
        if self.batch_size % world or self.target_batch_size % world:
            raise ConfigError(f'task.batch_size ({self.batch_size}) and task.target_batch_size '
                              f'({self.target_batch_size}) must be multiples of the number of '
                              f'processes ({world}): each takes an equal part of every batch')
        optimizer = self.optimizer(model)
        if optim_state is not None:
            optimizer.load_state_dict(optim_state)
        # Distributed: every rank draws the same global batches (same generator) and trains on
        # its part; averaged gradients keep the ranks' weights identical.
        rng = np.random.default_rng(seed)
        # Target batches come from the whole pool: CE only where pixels are revealed, the
        # optional unsupervised terms everywhere (RIPU draws target images the same way).
        num_source, num_target = len(source), len(target)
        model.train()
        began, losses = time.perf_counter(), []
        for it in range(start, stop):
            factor = (1 - it / total) ** self.poly_power
            for group, base in zip(optimizer.param_groups,
                                   (self.lr, self.lr * self.head_lr_mult)):
                group['lr'] = base * factor
            src = rng.integers(num_source, size=self.batch_size)
            tgt = rng.integers(num_target, size=self.target_batch_size)
            flips = rng.random(self.batch_size + self.target_batch_size) < 0.5 if self.flip \
                else np.zeros(self.batch_size + self.target_batch_size, bool)
            src_flips, tgt_flips = flips[:self.batch_size], flips[self.batch_size:]
            if world > 1:
                src, src_flips, tgt, tgt_flips = (np.array_split(a, world)[rank] for a in
                                                  (src, src_flips, tgt, tgt_flips))
            x_s, y_s = load_batch(source, src, src_flips)
            x_t, y_t = load_batch(target, tgt, tgt_flips, revealed)
            loss, parts = self.loss(model, x_s, y_s, x_t, y_t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(model.parameters())
            optimizer.step()
            losses.append(parts)
            done = it + 1 - start
            if done % self.log_interval == 0 or it + 1 == stop:
                # A term is averaged over the iterations that had it (no revealed pixels in
                # a target batch: no target term).
                keys = [k for k in LOSS_TERMS if any(k in p for p in losses)]
                mean = {k: float(np.mean([p[k] for p in losses if k in p])) for k in keys}
                text = ', '.join(f'{k} {v:.4f}' for k, v in mean.items())
                rate = done / (time.perf_counter() - began)
                # Left until this stretch ends (the next selection or the end of training).
                left = '' if it + 1 == stop else f', {format_seconds((stop - it - 1) / rate)} left'
                print_log(f'iter {it + 1}/{total}: {text}, lr {optimizer.param_groups[0]["lr"]:.2e}'
                          f' ({rate:.1f} it/s{left})', logger='current')
                losses = []
        broadcast_buffers(model)
        return model, optimizer.state_dict()
