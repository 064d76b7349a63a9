"""Training schedules: how each round's model is trained (registered in ``SCHEDULES``).

* :class:`ScratchSchedule` — a new model every round, trained on all labels so far (the
  paper's protocol).
* :class:`ContinueSchedule` — keep training the previous round's model.
* :class:`InRunSchedule` — one training run, with the queries made at given iterations
  (segmentation's protocol: selections at iterations 10k–18k of one 40k run); the optimizer
  state is carried between rounds and persisted with each round.

Config: ``al.schedule = dict(type='InRunSchedule', round_iters=[...])``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
from mmengine.logging import print_log
from torch import nn

from ..core.errors import ConfigError
from ..core.task import BaseTask
from ..registry import SCHEDULES


class Schedule:
    """Trains the model of each round.

    Attributes:
        persists_state: Whether :meth:`state_dict` holds state that the next round needs
            (saved as ``optim.pth`` with each round and reloaded on resume).
    """

    persists_state: ClassVar[bool] = False

    def check(self, num_rounds: int) -> None:
        """Refuse a schedule that does not fit ``num_rounds`` acquisition rounds."""

    def train(self, task: BaseTask, previous: nn.Module | None, labeled_ids: np.ndarray,
              seed: int, round_idx: int) -> nn.Module:
        """Train round ``round_idx``'s model.

        Args:
            task: The task adapter.
            previous: The previous round's model (``None`` in round 1 and after a resume
                that has none).
            labeled_ids: Ids with annotations, ``[L]``.
            seed: The round's training seed.
            round_idx: The round (1-based).

        Returns:
            The trained model.
        """
        raise NotImplementedError

    def state_dict(self) -> Any:
        """State carried to the next round (:attr:`persists_state`)."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict` on resume."""


@SCHEDULES.register_module()
class ScratchSchedule(Schedule):
    """A new model each round (seeded by the round), trained on every label so far."""

    def train(self, task, previous, labeled_ids, seed, round_idx):
        return task.train(task.build_model(seed), labeled_ids, seed=seed)


@SCHEDULES.register_module()
class ContinueSchedule(Schedule):
    """The previous round's model trained further (a new one only in the first round)."""

    def train(self, task, previous, labeled_ids, seed, round_idx):
        model = previous if previous is not None else task.build_model(seed)
        return task.train(model, labeled_ids, seed=seed)


@SCHEDULES.register_module()
class InRunSchedule(Schedule):
    """One training run; round ``r`` trains iterations ``[round_iters[r-2], round_iters[r-1])``.

    Uses :meth:`~saal_tasks.core.task.BaseTask.train_steps`; the optimizer state passes from
    round to round and is persisted with each.

    Args:
        round_iters: The iteration at which each round's training ends, ``num_rounds + 1``
            increasing positive values; the last is the run's length.
        lr_horizon: The iteration count the learning-rate schedule decays over (the
            ``total`` passed to ``train_steps``); ``None`` = the run's length. RIPU decays
            over ``MAX_ITER = 62500`` and stops at ``STOP_ITER = 40000``.
    """

    persists_state: ClassVar[bool] = True

    def __init__(self, round_iters: Sequence[int], lr_horizon: int | None = None) -> None:
        values = list(round_iters or [])
        if not all(isinstance(v, (int, np.integer)) for v in values) or \
                not all(a < b for a, b in zip([0] + values, values)):
            raise ConfigError(f'round_iters must hold increasing positive iterations (the end '
                              f"of each round's training; the last is the run length), got "
                              f'{round_iters!r}')
        self.round_iters = [int(v) for v in values]
        if lr_horizon is not None and (isinstance(lr_horizon, bool)
                                       or not isinstance(lr_horizon, (int, np.integer))
                                       or lr_horizon < self.round_iters[-1]):
            raise ConfigError(f'al.schedule.lr_horizon must be an integer >= the run length '
                              f'{self.round_iters[-1]} (round_iters[-1]), or None; got '
                              f'{lr_horizon!r}')
        self.lr_horizon = None if lr_horizon is None else int(lr_horizon)
        self.optim_state: dict | None = None

    def check(self, num_rounds: int) -> None:
        if len(self.round_iters) != num_rounds + 1:
            raise ConfigError(
                f'al.schedule.round_iters must hold num_rounds + 1 = {num_rounds + 1} '
                f'increasing positive iterations (the end of each round\'s training; the last '
                f'is the run length), got {self.round_iters!r}')

    def train(self, task, previous, labeled_ids, seed, round_idx):
        model = previous if previous is not None else task.build_model(seed)
        start = 0 if round_idx == 1 else self.round_iters[round_idx - 2]
        stop, length = self.round_iters[round_idx - 1], self.round_iters[-1]
        horizon = self.lr_horizon or length
        decay = '' if horizon == length else f' (learning rate decays over {horizon})'
        print_log(f'round {round_idx}: iterations {start}-{stop} of {length}{decay}',
                  logger='current')
        model, self.optim_state = task.train_steps(model, labeled_ids, seed, start, stop,
                                                   horizon, self.optim_state)
        return model

    def state_dict(self):
        return self.optim_state

    def load_state_dict(self, state):
        self.optim_state = state
