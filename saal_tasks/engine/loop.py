"""The active-learning loop (paper Algorithm 1): rounds of resumable stages, and hooks.

Round ``r`` (1-based) runs the stages of :mod:`saal_tasks.engine.stages`: ``train`` (on every
sample labeled in rounds ``1..r``, as the schedule says), ``evaluate``, and — except in the
last round — ``score`` (a random subset of the unlabeled pool), ``select``, ``label`` (ask the
oracle; the answers get round ``r + 1``), then ``commit``. The initial labeled set is round 1
and is chosen in "round 0".

Each stage writes its outputs through the :class:`~saal_tasks.engine.store.RunStore`, then is
recorded in the manifest with the outputs' checksums. ``run(resume=True)`` verifies them and
restarts at the first unrecorded stage, reloading what finished stages produced; because every
random choice of a round is drawn from a generator seeded by ``(seed, round, stream)``, a
resumed run ends exactly like an uninterrupted one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log
from torch import nn

from ..core.dist import barrier, rank_and_world
from ..core.errors import ConfigError, ResumeError
from ..core.hooks import ALHook
from ..core.oracle import BaseOracle, QueryPending
from ..core.pool_state import PoolState
from ..core.scorer import BaseScorer
from ..core.selection import BaseSelector
from ..core.task import BaseTask
from ..registry import AL_HOOKS, INITIAL_SETS, ORACLES, SCHEDULES, SCORERS, SELECTORS, TASKS
from .config_check import build_checked, check_config
from .identity import check_sample_keys, record_sample_keys
from .initial_sets import InitialSet
from .options import check_loop_values
from .queries import import_answers, pending_query
from .resume import restore
from .schedules import Schedule
from .sharded import ShardedScoring
from .stages import ROUND_STAGES, STREAM_INITIAL, STREAM_TRAIN, RoundState, annotate, timed
from .store import RunStore, config_hash, plain_config

__all__ = ['ActiveLearningLoop']

_SIZE_MISMATCH = re.compile(r'size mismatch for (\S+): copying a param with shape '
                            r'torch\.Size\((\[.*?\])\) from checkpoint, the shape in current '
                            r'model is torch\.Size\((\[.*?\])\)')


def describe_load_error(err: RuntimeError) -> str:
    """The first problem of a failed ``load_state_dict``, short enough for one line."""
    match = _SIZE_MISMATCH.search(str(err))
    if match:
        return f'size mismatch: {match[1]} is {match[2]} in the file, {match[3]} in the model'
    lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
    return (lines[0] if lines else str(err))[:120]


class ActiveLearningLoop:
    """Runs an active-learning experiment for any task adapter.

    Args:
        task: Task adapter (data, model, training, evaluation, unit losses).
        scorer: Acquisition scorer.
        selector: Turns a :class:`~saal_tasks.core.selection.SelectionContext` into a query.
        oracle: Answers queries with annotations.
        work_dir: Folder for state, per-round outputs, metrics and plots.
        num_rounds: Acquisition rounds; the run trains and evaluates ``num_rounds + 1`` times.
        budget: Samples queried per round; ``None`` with a unit selector, whose own per-sample
            budget decides how many units of each scored sample are queried.
        initial_size: Size of the initial labeled set (0 allowed when the task does not need
            initial labels, e.g. domain adaptation with a labeled source).
        subset_size: Unlabeled samples drawn at random and scored per round; ``None`` scores
            the whole unlabeled pool.
        schedule: How each round trains (``SCHEDULES``), default ``ScratchSchedule``.
        initial_set: How the initial set is drawn (``INITIAL_SETS``), default
            ``BalancedInitialSet``.
        seed: Seed of every random choice of the run (non-negative).
        hooks: Loop hooks.
        config: Plain config of the run (for the resume check and its explanation).
        embed_batch_size: Batch size of the embeddings selectors read from their context.
        unit_chunk: With a per-sample unit selector (``RegionSelector``), candidates scored
            and selected together: peak memory is this many score maps, and no map is
            persisted. ``None`` scores every candidate in one call and keeps all maps in
            ``scores.npz``.
        run_name: Name used in plots and logs.
    """

    #: Components among the ``al`` options (checked and built from the config).
    config_children: ClassVar[Mapping[str, str]] = {'schedule': 'SCHEDULES',
                                                    'initial_set': 'INITIAL_SETS'}

    def __init__(self, task: BaseTask, scorer: BaseScorer, selector: BaseSelector,
                 oracle: BaseOracle, *, work_dir: str | os.PathLike, num_rounds: int,
                 budget: int | None, initial_size: int, subset_size: int | None = None,
                 schedule: Schedule | None = None, initial_set: InitialSet | None = None,
                 seed: int = 0, hooks: Sequence[ALHook] = (),
                 config: Mapping[str, Any] | None = None, embed_batch_size: int = 256,
                 unit_chunk: int | None = 16, run_name: str = 'saal') -> None:
        self.unit_mode = selector.selects_units
        check_loop_values(task, selector, num_rounds=num_rounds, budget=budget,
                      initial_size=initial_size, subset_size=subset_size, seed=seed)
        self.schedule = schedule or SCHEDULES.build(dict(type='ScratchSchedule'))
        self.schedule.check(num_rounds)
        self.initial_set = initial_set or INITIAL_SETS.build(dict(type='BalancedInitialSet'))
        self.task, self.scorer, self.selector, self.oracle = task, scorer, selector, oracle
        self.num_rounds, self.initial_size = int(num_rounds), int(initial_size)
        self.budget = None if budget is None else int(budget)
        self.subset_size = subset_size
        self.seed = int(seed)
        self.hooks = list(hooks)
        self.embed_batch_size = embed_batch_size
        if unit_chunk is not None and (isinstance(unit_chunk, bool) or unit_chunk < 1):
            raise ConfigError(f'al.unit_chunk must be an integer >= 1, or None to score all '
                              f'candidates in one call; got {unit_chunk!r}')
        self.unit_chunk = unit_chunk
        #: Whether partial-annotation rounds score and select chunk by chunk.
        self.streams_units = bool(self.unit_mode and getattr(selector, 'per_sample', False)
                                  and unit_chunk is not None)
        self.run_name = run_name
        plain = plain_config(config or {})
        self.store = RunStore(work_dir, plain, config_hash(plain) if config is not None else '')
        self.scoring = ShardedScoring(scorer)
        self.state: PoolState | None = None
        self.model: nn.Module | None = None
        self.records: list[dict[str, Any]] = []
        #: Set when the run stopped to wait for human answers (see FileOracle).
        self.pending: QueryPending | None = None

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'ActiveLearningLoop':
        """Check the whole config, then build the loop and its components (the only place
        the config is read).

        The config has ``task``, ``scorer``, ``selector``, ``oracle`` (registry configs),
        ``al`` (keyword arguments of this class), ``hooks`` (list of hook configs), ``seed``
        and ``work_dir``.
        """
        check_config(cfg, cls.__init__, cls.config_children)
        if cfg.get('work_dir') is None:
            raise ConfigError("the config has no 'work_dir': pass --work-dir or set it")
        al = dict(cfg.al)
        for key, registry in (('schedule', SCHEDULES), ('initial_set', INITIAL_SETS)):
            if al.get(key) is not None:
                al[key] = build_checked(registry, al[key], f'al.{key}')
        return cls(
            task=build_checked(TASKS, cfg.task, 'task'),
            scorer=build_checked(SCORERS, cfg.scorer, 'scorer'),
            selector=build_checked(SELECTORS, cfg.selector, 'selector'),
            oracle=build_checked(ORACLES, cfg.get('oracle') or dict(type='SimulatedOracle'),
                                 'oracle'),
            work_dir=cfg.work_dir, seed=cfg.get('seed', 0),
            hooks=[build_checked(AL_HOOKS, h, f'hooks[{k}]')
                   for k, h in enumerate(cfg.get('hooks') or [])],
            config=cfg, run_name=Path(cfg.filename).stem if cfg.filename else 'saal', **al)

    # ------------------------------------------------------------------ what hooks read
    @property
    def work_dir(self) -> Path:
        """The run's folder."""
        return self.store.work_dir

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0, or the only process)."""
        return self.store.is_main

    def round_dir(self, round_idx: int) -> Path:
        """Folder of what round ``round_idx`` wrote (round 0 = the initial labeled set)."""
        return self.store.round_dir(round_idx)

    def seed_of(self, stream: int, round_idx: int) -> int:
        """Integer seed of a round's stream (for models and training)."""
        return int(np.random.SeedSequence([self.seed, round_idx, stream]).generate_state(1)[0])

    def rng(self, stream: int, round_idx: int) -> np.random.Generator:
        """The generator of a round's stream."""
        return np.random.default_rng([self.seed, round_idx, stream])

    def load_round_model(self, round_idx: int) -> nn.Module:
        """Round ``round_idx``'s trained model (and the schedule's state saved with it)."""
        if self.schedule.persists_state:
            self.schedule.load_state_dict(self.store.load_torch(round_idx, 'optim.pth'))
        model = self.task.build_model(self.seed_of(STREAM_TRAIN, round_idx))
        path = self.round_dir(round_idx) / 'model.pth'
        try:
            model.load_state_dict(self.store.load_torch(round_idx, 'model.pth'))
        except RuntimeError as err:  # missing keys, unexpected keys or other shapes
            raise ResumeError(
                f'{path} does not fit the model the config builds ({describe_load_error(err)}): '
                'the model settings changed since the run started; resume with the original '
                'model config, or start a new --work-dir') from None
        return model

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False,
            allow_config_change: bool = False) -> list[dict[str, Any]]:
        """Run (or resume) the experiment.

        Args:
            resume: Continue the run in ``work_dir`` at its first unfinished stage.
            allow_config_change: With ``resume``, accept a config that differs from the one
                that started the run (recorded in the manifest's history).

        Returns:
            One metrics record per finished round.
        """
        resume = self.prepare(resume)
        try:
            return self._run(resume, allow_config_change)
        finally:
            self.store.unlock()  # another loop of this process may take the folder next

    def _run(self, resume: bool, allow_config_change: bool) -> list[dict[str, Any]]:
        # Also for a run restarted after a kill before its first state file; the lock is held.
        self.store.remove_stale_temporaries()
        self.oracle.attach(self.work_dir)
        self.pending = None
        try:
            start_round = self._resume(allow_config_change) if resume else self._start()
            barrier()  # every rank has read the state before any writes again
            for hook in self.hooks:
                hook.before_run(self)
            for round_idx in range(start_round, self.num_rounds + 2):
                self._run_round(round_idx)
        except QueryPending as pending:
            # A normal stop: the answers come back through --resume.
            self.pending = pending
            print_log(str(pending), logger='current')
            return self.records
        for hook in self.hooks:
            hook.after_run(self, self.records)
        return self.records

    def prepare(self, resume: bool) -> bool:
        """Claim the work dir before anything is written to it (tools call this before they
        open ``run.log``; :meth:`run` calls it again with the answer, which is idempotent).

        Returns:
            Whether the run resumes (a run killed before its first state file restarts).

        Raises:
            WorkDirError: The folder is not writable or another process holds it.
            ResumeError: Nothing to resume, or a new run over an existing one.
        """
        rank, world_size = rank_and_world()
        if self.store.rank != rank or self.scoring.world_size != world_size:
            self.store.rank, self.scoring = rank, ShardedScoring(self.scorer, rank, world_size)
        return self.store.prepare(resume)

    def _start(self) -> int:
        self.store.ensure_new()
        ids = self.task.sample_ids()
        if len(ids) == 0:
            raise ConfigError(f'the pool of {type(self.task).__name__} is empty: check the '
                              'dataset config (root, split)')
        if self.initial_size > len(ids):
            raise ConfigError(f'al.initial_size ({self.initial_size}) is larger than the pool '
                              f'({len(ids)} samples): lower al.initial_size')
        needed = self.initial_size + self.num_rounds * (self.budget or 0)
        if needed > len(ids):
            raise ConfigError(
                f'the run needs {needed} samples (initial_size {self.initial_size} + '
                f'num_rounds {self.num_rounds} x budget {self.budget}) but the pool has '
                f'{len(ids)}: lower al.num_rounds or al.budget')
        self.store.start(self.seed)
        record_sample_keys(self)
        return self._initial_round()

    def _initial_round(self) -> int:
        """Round 0: choose and label the initial set (deterministic for the seed)."""
        self.state = PoolState(self.task.sample_ids())
        initial = self.initial_ids()
        annotate(self, 0, initial)
        self.store.mark(0, 'commit')
        print_log(f'initial labeled set: {len(initial)} samples '
                  f'({type(self.initial_set).__name__})', logger='current')
        return 1

    def initial_ids(self) -> np.ndarray:
        """The initial labeled set of this seed, ``[initial_size]``."""
        return self.initial_set.choose(self.task, self.task.sample_ids(), self.initial_size,
                                       self.rng(STREAM_INITIAL, 0))

    def _resume(self, allow_config_change: bool) -> int:
        manifest = self.store.load(allow_config_change)
        if manifest.round == 0 and 'commit' not in manifest.stages:
            check_sample_keys(self)
            next_round = self._initial_round()  # stopped before the initial set was labeled
        else:
            next_round = restore(self, manifest)
        # Only now, rebuilt with it, is an accepted config change written down.
        self.store.commit_config_change()
        return next_round

    def _run_round(self, round_idx: int) -> None:
        done = self.store.done_stages(round_idx)
        rnd = RoundState(round_idx)
        self.round_dir(round_idx).mkdir(parents=True, exist_ok=True)
        if not done:
            for hook in self.hooks:
                hook.before_round(self, round_idx)
        acquires = round_idx <= self.num_rounds
        for stage in ROUND_STAGES:
            if stage.acquiring and not acquires:
                continue
            if stage.name in done:
                stage.reload(self, rnd)
            else:
                self.store.mark(round_idx, stage.name, timed(stage, self, rnd))
        if rnd.record is not None:  # hooks see a round only once it is fully persisted
            for hook in self.hooks:
                hook.after_round(self, round_idx, rnd.record)

    # ------------------------------------------------------------------ human answers
    def pending_query(self) -> tuple[int, np.ndarray, list[np.ndarray] | None]:
        """The query waiting for answers: see :func:`saal_tasks.engine.queries.pending_query`."""
        return pending_query(self)

    def import_answers(self, path: str | os.PathLike) -> tuple[int, int]:
        """Import answers to the waiting query (see :mod:`saal_tasks.engine.queries`)."""
        return import_answers(self, path)
