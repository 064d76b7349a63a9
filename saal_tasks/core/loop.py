"""The active-learning loop (paper Algorithm 1) as resumable, idempotent stages.

Round ``r`` (1-based) runs the stages ``train`` (on every sample labeled in rounds ``1..r``),
``evaluate``, and — except in the last round — ``score`` (a random subset of the unlabeled
pool), ``select``, ``label`` (ask the oracle; the answers get round ``r + 1``), then
``commit``. The initial labeled set is round 1 and is chosen in "round 0".

Each stage writes its outputs under ``work_dir/rounds/round_NNN/`` atomically, then records
itself in ``work_dir/manifest.json`` with the outputs' checksums. ``run(resume=True)``
verifies the checksums and restarts at the first unrecorded stage, reloading what finished
stages produced; because every random choice of a round is drawn from a generator seeded by
``(seed, round, stream)``, a resumed run ends exactly like an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from torch import nn

from ..hooks.base import ALHook
from ..oracles.base import BaseOracle, QueryPending
from ..registry import AL_HOOKS, ORACLES, SCORERS, SELECTORS, TASKS
from ..scorers.base import BaseScorer, ScoreResult
from ..selectors.base import BaseSelector
from .build import build_component, check_kwargs
from .dist import barrier, gather_in_rank_order, rank_and_world, shard
from .errors import (AnnotationError, ConfigError, ResumeError, ScoreError,
                     StateCorruptedError, WorkDirError)
from .io import atomic_write, atomic_write_json
from .manifest import MANIFEST_NAME, Manifest
from .pool_state import PoolState
from .task import BaseTask

# Independent random streams per round: (seed, round, stream) -> generator.
_STREAM_INITIAL, _STREAM_SUBSET, _STREAM_SCORE, _STREAM_SELECT, _STREAM_TRAIN = range(5)

MANIFEST = MANIFEST_NAME
METRICS = 'metrics.jsonl'
CONFIG_JSON = 'config.json'
#: Keys that do not change what a run computes.
_IGNORED_KEYS = ('work_dir',)

__all__ = ['ActiveLearningLoop', 'ResumeError', 'config_hash', 'MANIFEST', 'METRICS']


def _plain_config(cfg: Config | Mapping) -> dict[str, Any]:
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    data = {k: v for k, v in data.items() if k not in _IGNORED_KEYS}
    # JSON round trip: tuples become lists, objects their repr, so hashes are stable.
    return json.loads(json.dumps(data, sort_keys=True, default=repr))


def config_hash(cfg: Config | Mapping) -> str:
    """SHA-256 of a config, ignoring keys that do not change results (``work_dir``)."""
    return hashlib.sha256(json.dumps(_plain_config(cfg), sort_keys=True).encode()).hexdigest()


def _flatten(data: Any, prefix: str = '') -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f'{prefix}{k}.'))
        return out
    return {prefix[:-1]: data}


def config_diff(old: Mapping, new: Mapping) -> list[str]:
    """Dotted keys whose values differ between two plain configs, sorted."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    return sorted(k for k in set(a) | set(b) if a.get(k, '<unset>') != b.get(k, '<unset>'))


@dataclass
class _Round:
    """What the stages of one round hand to each other."""

    index: int
    model: nn.Module | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    candidates: np.ndarray | None = None
    result: ScoreResult | None = None
    selected: np.ndarray | None = None
    #: Per selected sample, the flat indices of its units to annotate (partial annotation).
    units: list[np.ndarray] | None = None
    record: dict[str, Any] | None = None


class ActiveLearningLoop:
    """Runs an active-learning experiment for any task adapter.

    Args:
        task: Task adapter (data, model, training, evaluation, unit losses).
        scorer: Acquisition scorer.
        selector: Turns scores into a query.
        oracle: Answers queries with annotations.
        work_dir: Folder for state, per-round outputs, metrics and plots.
        num_rounds: Acquisition rounds; the run trains and evaluates ``num_rounds + 1`` times.
        budget: Samples queried per round; ``None`` with a unit selector, whose own per-sample
            budget decides how many units of each scored sample are queried.
        initial_size: Size of the initial labeled set (0 allowed when the task does not need
            initial labels, e.g. domain adaptation with a labeled source).
        subset_size: Unlabeled samples drawn at random and scored per round; ``None`` scores
            the whole unlabeled pool.
        initial_strategy: ``'balanced'`` (same count per class, the paper's protocol) or
            ``'random'``.
        train_mode: ``'scratch'`` (a new model each round), ``'continue'`` (keep training
            the previous round's model), or ``'in_run'`` (one training run, with the queries
            made at the iterations ``round_iters``; the task's :meth:`BaseTask.train_steps`).
        round_iters: With ``'in_run'``: the iteration at which each round's training ends,
            ``num_rounds + 1`` increasing values; the last is the run's length. Round ``r``
            trains iterations ``[round_iters[r - 2], round_iters[r - 1])``.
        seed: Seed of every random choice of the run (non-negative).
        hooks: Loop hooks.
        config: Plain config of the run (for the resume check and its explanation).
        embed_batch_size: Batch size for embeddings (selectors that need them).
        run_name: Name used in plots and logs.
    """

    def __init__(self, task: BaseTask, scorer: BaseScorer, selector: BaseSelector,
                 oracle: BaseOracle, *, work_dir: str | os.PathLike, num_rounds: int,
                 budget: int | None, initial_size: int, subset_size: int | None = None,
                 initial_strategy: str = 'balanced', train_mode: str = 'scratch',
                 round_iters: Sequence[int] | None = None, seed: int = 0, hooks: Sequence[ALHook] = (),
                 config: Mapping[str, Any] | None = None, embed_batch_size: int = 256,
                 run_name: str = 'saal') -> None:
        if initial_strategy not in ('balanced', 'random'):
            raise ConfigError(
                f"al.initial_strategy must be 'balanced' or 'random', got {initial_strategy!r}")
        if train_mode not in ('scratch', 'continue', 'in_run'):
            raise ConfigError(f"al.train_mode must be 'scratch', 'continue' or 'in_run', got "
                              f'{train_mode!r}')
        self.unit_mode = bool(getattr(selector, 'selects_units', False))
        self._check_unit_mode(task, selector, budget)
        checks = [('num_rounds', num_rounds, 0),
                  ('initial_size', initial_size,
                   1 if getattr(task, 'needs_initial_labels', True) else 0)]
        if not self.unit_mode:
            checks.append(('budget', budget, 1))
        for name, value, low in checks:
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f'al.{name} must be an integer >= {low}, got {value!r}')
        self.round_iters = self._checked_round_iters(train_mode, round_iters, num_rounds)
        if subset_size is not None:
            if not isinstance(subset_size, (int, np.integer)) or subset_size < 1:
                raise ConfigError(f'al.subset_size must be an integer >= 1, or None to score '
                                  f'the whole unlabeled pool; got {subset_size!r}')
            if not self.unit_mode and subset_size < budget:
                raise ConfigError(f'al.subset_size ({subset_size}) must be >= budget '
                                  f'({budget}): the query is chosen from the scored subset')
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f'seed must be a non-negative integer, got {seed!r}')
        self.task = task
        self.scorer = scorer
        self.selector = selector
        self.oracle = oracle
        self.work_dir = Path(work_dir)
        self.num_rounds = int(num_rounds)
        self.budget = None if budget is None else int(budget)
        self.initial_size = int(initial_size)
        self.subset_size = subset_size
        self.initial_strategy = initial_strategy
        self.train_mode = train_mode
        self.seed = int(seed)
        self.hooks = list(hooks)
        self.config = _plain_config(config or {})
        self.config_hash = config_hash(self.config) if config is not None else ''
        self.embed_batch_size = embed_batch_size
        self.run_name = run_name
        self.state: PoolState | None = None
        self.model: nn.Module | None = None
        #: Optimizer state between the rounds of an in-run schedule.
        self.optim_state: dict | None = None
        self.records: list[dict[str, Any]] = []
        self.manifest: Manifest | None = None
        #: Set when the run stopped to wait for human answers (see FileOracle).
        self.pending: QueryPending | None = None
        self.rank, self.world_size = 0, 1

    @staticmethod
    def _check_unit_mode(task: BaseTask, selector: Any, budget: int | None) -> None:
        units = bool(getattr(selector, 'selects_units', False))
        partial = bool(getattr(task, 'partial_annotations', False))
        if units and not partial:
            raise ConfigError(f'{type(selector).__name__} picks units inside samples but '
                              f'{type(task).__name__} annotates whole samples: choose a sample '
                              "selector (e.g. dict(type='TopKSelector'))")
        if partial and not units:
            raise ConfigError(f'{type(task).__name__} annotates parts of samples (pixels): '
                              "choose a unit selector (e.g. dict(type='RegionSelector', ...))")
        if units and budget is not None:
            raise ConfigError(f'al.budget ({budget}) does not apply with '
                              f'{type(selector).__name__}: its own per-sample budget decides '
                              'how much is queried; set al.budget=None')

    @staticmethod
    def _checked_round_iters(train_mode: str, round_iters: Sequence[int] | None,
                             num_rounds: int) -> list[int] | None:
        if train_mode != 'in_run':
            if round_iters is not None:
                raise ConfigError("al.round_iters is only used with al.train_mode='in_run': "
                                  'remove it or change the train mode')
            return None
        values = list(round_iters or [])
        if len(values) != num_rounds + 1 or \
                not all(isinstance(v, (int, np.integer)) for v in values) or \
                not all(a < b for a, b in zip([0] + values, values)):
            raise ConfigError(
                f'al.round_iters must hold num_rounds + 1 = {num_rounds + 1} increasing positive '
                f'iterations (the end of each round\'s training; the last is the run length), '
                f'got {round_iters!r}')
        return [int(v) for v in values]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cfg(cls, cfg: Config) -> 'ActiveLearningLoop':
        """Build the loop and its components from a config (the only place it is read).

        The config has ``task``, ``scorer``, ``selector``, ``oracle`` (registry configs),
        ``al`` (keyword arguments of this class), ``hooks`` (list of hook configs), ``seed``
        and ``work_dir``.
        """
        for key in ('task', 'scorer', 'selector', 'al', 'work_dir'):
            if cfg.get(key) is None:
                raise ConfigError(f'the config has no {key!r}: inherit a base config from '
                                  'configs/_base_ or add it')
        al = dict(cfg.al)
        check_kwargs(cls.__init__, al, 'al')
        reserved = {'task', 'scorer', 'selector', 'oracle', 'work_dir', 'seed', 'hooks',
                    'config', 'run_name'} & set(al)
        if reserved:
            raise ConfigError(f'al.{sorted(reserved)[0]} belongs at the top level of the '
                              'config, not inside al')
        return cls(
            task=build_component(TASKS, cfg.task, 'task'),
            scorer=build_component(SCORERS, cfg.scorer, 'scorer'),
            selector=build_component(SELECTORS, cfg.selector, 'selector'),
            oracle=build_component(ORACLES, cfg.get('oracle', dict(type='SimulatedOracle')),
                                   'oracle'),
            work_dir=cfg.work_dir,
            seed=cfg.get('seed', 0),
            hooks=[build_component(AL_HOOKS, h, 'hooks[]') for h in cfg.get('hooks', [])],
            config=cfg,
            run_name=Path(cfg.filename).stem if cfg.filename else 'saal',
            **al)

    # ------------------------------------------------------------------ randomness
    def _seed(self, stream: int, round_idx: int) -> int:
        return int(np.random.SeedSequence([self.seed, round_idx, stream]).generate_state(1)[0])

    def _rng(self, stream: int, round_idx: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, round_idx, stream])

    # ------------------------------------------------------------------ paths
    def round_dir(self, round_idx: int) -> Path:
        """Folder of what round ``round_idx`` wrote (round 0 = the initial labeled set)."""
        return self.work_dir / 'rounds' / f'round_{round_idx:03d}'

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0, or the only process)."""
        return self.rank == 0

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
        self.rank, self.world_size = rank_and_world()
        self._check_writable()
        if resume and self.is_main:
            # Temporary files of writes interrupted before their rename: never part of the
            # state, safe to delete.
            for stale in self.work_dir.rglob('.*.tmp'):
                stale.unlink()
        if resume and not (self.work_dir / MANIFEST).exists() and \
                (self.work_dir / CONFIG_JSON).exists():
            # Killed before the initial set was recorded: nothing to keep, start it again.
            print_log(f'{self.work_dir} holds no finished stage: starting the run',
                      logger='current')
            resume = False
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

    def _check_writable(self) -> None:
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.work_dir):
                pass
        except OSError as err:
            raise WorkDirError(f'work directory {self.work_dir} is not writable '
                               f'({err.strerror or err}): choose another --work-dir') from None

    def _start(self) -> int:
        if (self.work_dir / MANIFEST).exists():
            raise ResumeError(
                f'{self.work_dir} already holds a run: pass --resume to continue it, or '
                'choose another --work-dir')
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
        self.manifest = Manifest(config_hash=self.config_hash, seed=self.seed)
        barrier()  # every rank has run the checks above before rank 0 writes
        if self.is_main:
            atomic_write_json(self.work_dir / CONFIG_JSON, self.config)
            self.manifest.save(self.work_dir)
        barrier()
        return self._initial_round()

    def _initial_round(self) -> int:
        """Round 0: choose and label the initial set (deterministic for the seed)."""
        self.state = PoolState(self.task.sample_ids())
        initial = self._initial_ids(self.state.sample_ids)
        self._label(0, initial)
        self._mark(0, 'commit')
        print_log(f'initial labeled set: {len(initial)} samples ({self.initial_strategy})',
                  logger='current')
        return 1

    def _initial_ids(self, ids: np.ndarray) -> np.ndarray:
        rng = self._rng(_STREAM_INITIAL, 0)
        if self.initial_size == 0:
            return np.zeros(0, dtype=np.int64)
        if self.initial_strategy == 'random':
            return np.sort(rng.choice(ids, self.initial_size, replace=False))
        labels = self.task.stratify_labels(ids)
        if labels is None:
            raise ConfigError(f'{type(self.task).__name__} has no classes to balance: '
                              "set al.initial_strategy='random'")
        classes = np.unique(labels)
        per_class = np.full(len(classes), self.initial_size // len(classes))
        # The remainder goes to randomly chosen classes, one extra sample each.
        per_class[rng.permutation(len(classes))[:self.initial_size % len(classes)]] += 1
        chosen = []
        for c, k in zip(classes, per_class):
            members = ids[labels == c]
            if k > len(members):
                raise ConfigError(f'class {c} has only {len(members)} samples, {k} needed '
                                  "for a balanced initial set: use "
                                  "al.initial_strategy='random'")
            chosen.append(rng.choice(members, k, replace=False))
        return np.sort(np.concatenate(chosen))

    # ------------------------------------------------------------------ resume
    def _resume(self, allow_config_change: bool) -> int:
        if not (self.work_dir / MANIFEST).exists():
            raise ResumeError(f'nothing to resume in {self.work_dir} (no {MANIFEST}): '
                              'run without --resume to start')
        manifest = Manifest.load(self.work_dir)
        if self.config_hash and manifest.config_hash != self.config_hash:
            self._config_changed(manifest, allow_config_change)
        manifest.verify(self.work_dir)
        self.manifest = manifest
        if manifest.round == 0 and 'commit' not in manifest.stages:
            return self._initial_round()  # stopped before the initial set was labeled
        # Annotations first: a dataset whose classes changed is named by its file.
        annotations: dict[int, Any] = {}
        per_round: list[dict[int, Any]] = []
        for r in range(manifest.round + 1):
            path = self.round_dir(r) / 'annotations.json'
            if str(path.relative_to(self.work_dir)) in manifest.files:
                raw = json.loads(path.read_text())
                decoded = {int(k): self.task.decode_annotation(v) for k, v in raw.items()}
                try:
                    self.task.validate_annotations(decoded)
                except (AnnotationError, ValueError) as err:
                    raise AnnotationError(f'{path}: {err}') from None
                annotations.update(decoded)
                per_round.append(decoded)
        self.state = PoolState.load(self.work_dir / manifest.pool_state,
                                    expected_ids=self.task.sample_ids())
        if set(annotations) != set(int(i) for i in self.state.labeled_ids()):
            raise StateCorruptedError(
                f'annotations in {self.work_dir}/rounds do not match the pool state: the work '
                'directory was modified; start a new one')
        for decoded in per_round:  # in order: partial annotations of a sample merge
            self.task.set_annotations(decoded)
        metrics_path = self.work_dir / METRICS
        lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
        records = [json.loads(line) for line in lines if line.strip()]
        self.records = [r for r in records if r['round'] <= manifest.completed_round]
        if manifest.completed_round >= 1:
            # The previous round's model: trained in 'continue' mode, inspected by hooks.
            self.model = self._load_model(manifest.completed_round)
            self.optim_state = self._load_optim_state(manifest.completed_round)
        manifest.history.append(f'resumed at round {manifest.round} after stages '
                                f'{manifest.stages}')
        print_log(f'resuming {self.work_dir}: round {manifest.round}, stages done '
                  f'{manifest.stages or "none"} ({self.state.num_labeled} labeled)',
                  logger='current')
        return manifest.completed_round + 1 if 'commit' in manifest.stages else manifest.round

    def _config_changed(self, manifest: Manifest, allow: bool) -> None:
        stored = self.work_dir / CONFIG_JSON
        old = json.loads(stored.read_text()) if stored.exists() else {}
        changed = config_diff(old, self.config) if old else ['(unknown)']
        shown = ', '.join(changed[:5]) + (f' and {len(changed) - 5} more'
                                          if len(changed) > 5 else '')
        if not allow:
            raise ResumeError(
                f'{self.work_dir} was started with a different config (changed: {shown}); '
                'a resumed run would not match the run it continues: resume with the original '
                'config (saved in the work dir), start a new --work-dir, or pass '
                '--allow-config-change to accept the change')
        print_log(f'resuming with a changed config ({shown}), as allowed', logger='current',
                  level=30)
        manifest.history.append(f'config changed on resume: {shown}')
        manifest.config_hash = self.config_hash
        if self.is_main:
            atomic_write_json(stored, self.config)

    # ------------------------------------------------------------------ persistence
    def _write(self, path: Path, write: Callable) -> None:
        """Atomically write a state file and remember its checksum (rank 0 only)."""
        if self.is_main:
            atomic_write(path, write)
            self.manifest.record_file(self.work_dir, path)

    def _write_json(self, path: Path, obj: Any) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        self._write(path, lambda f: f.write(data))

    def _mark(self, round_idx: int, stage: str, seconds: float | None = None) -> None:
        """Record a finished stage; the manifest is written last, atomically."""
        if self.manifest.round != round_idx:
            self.manifest.round, self.manifest.stages, self.manifest.timings = round_idx, [], {}
        self.manifest.stages.append(stage)
        if seconds is not None:
            self.manifest.timings[f'{stage}_s'] = round(seconds, 4)
        if stage == 'commit':
            self.manifest.completed_round = round_idx
        if self.is_main:
            self.manifest.save(self.work_dir)
        barrier()  # every rank has finished the stage before any starts the next

    def _save_model(self, round_idx: int, model: nn.Module) -> None:
        state_dict = model.state_dict()
        self._write(self.round_dir(round_idx) / 'model.pth', lambda f: torch.save(state_dict, f))

    def _load_model(self, round_idx: int) -> nn.Module:
        model = self.task.build_model(self._seed(_STREAM_TRAIN, round_idx))
        # Plain tensors only: safe loading is enough and stays on.
        state_dict = torch.load(self.round_dir(round_idx) / 'model.pth', map_location='cpu',
                                weights_only=True)
        model.load_state_dict(state_dict)
        return model

    def _load_optim_state(self, round_idx: int) -> dict | None:
        if self.train_mode != 'in_run':
            return None
        return torch.load(self.round_dir(round_idx) / 'optim.pth', map_location='cpu',
                          weights_only=True)

    # ------------------------------------------------------------------ a round
    def _run_round(self, round_idx: int) -> None:
        acquires = round_idx <= self.num_rounds
        done = set(self.manifest.stages) if self.manifest.round == round_idx else set()
        ctx = _Round(round_idx)
        self.round_dir(round_idx).mkdir(parents=True, exist_ok=True)
        if not done:
            for hook in self.hooks:
                hook.before_round(self, round_idx)
        stages = [('train', self._train), ('evaluate', self._evaluate)]
        if acquires:
            stages += [('score', self._score), ('select', self._select),
                       ('label', self._label_stage)]
        stages.append(('commit', self._commit))
        for name, stage in stages:
            if name in done:
                self._reload(name, ctx)
                continue
            t0 = time.perf_counter()
            stage(ctx)
            self._mark(round_idx, name, time.perf_counter() - t0)
        if ctx.record is not None:  # hooks see a round only once it is fully persisted
            for hook in self.hooks:
                hook.after_round(self, round_idx, ctx.record)

    def _reload(self, stage: str, ctx: _Round) -> None:
        """Restore what a stage finished before an interruption produced."""
        out = self.round_dir(ctx.index)
        if stage == 'train':
            ctx.model = self.model = self._load_model(ctx.index)
            self.optim_state = self._load_optim_state(ctx.index)
        elif stage == 'evaluate':
            ctx.metrics = json.loads((out / 'metrics.json').read_text())
        elif stage == 'score':
            with np.load(out / 'scores.npz', allow_pickle=False) as data:
                ctx.candidates = data['sample_ids']
                num = len(data['sample_ids'])
                ctx.result = ScoreResult(
                    sample_ids=data['sample_ids'], scores=data['scores'],
                    unit_scores=[data[f'units_{k}'] for k in range(num)]
                    if 'units_0' in data.files else None,
                    extras={k[len('extra_'):]: data[k] for k in data.files
                            if k.startswith('extra_')})
        elif stage == 'select':
            selected = json.loads((out / 'selected.json').read_text())
            ctx.selected = np.asarray(selected['sample_ids'], dtype=np.int64)
            if 'units' in selected:
                ctx.units = [np.asarray(u, dtype=np.int64) for u in selected['units']]

    def _train(self, ctx: _Round) -> None:
        labeled = self.state.labeled_ids()
        what = 'samples with annotated units' if self.unit_mode else 'labeled samples'
        print_log(f'round {ctx.index}/{self.num_rounds + 1}: training on {len(labeled)} {what}',
                  logger='current')
        seed = self._seed(_STREAM_TRAIN, ctx.index)
        if self.model is None or self.train_mode == 'scratch':
            self.model = self.task.build_model(seed)
        if self.train_mode == 'in_run':
            start = 0 if ctx.index == 1 else self.round_iters[ctx.index - 2]
            stop, total = self.round_iters[ctx.index - 1], self.round_iters[-1]
            print_log(f'round {ctx.index}: iterations {start}-{stop} of {total}',
                      logger='current')
            self.model, self.optim_state = self.task.train_steps(
                self.model, labeled, seed, start, stop, total, self.optim_state)
            state = self.optim_state
            self._write(self.round_dir(ctx.index) / 'optim.pth', lambda f: torch.save(state, f))
        else:
            self.model = self.task.train(self.model, labeled, seed=seed)
        ctx.model = self.model
        self._save_model(ctx.index, self.model)
        for hook in self.hooks:
            hook.after_train(self, ctx.index, self.model)

    def _evaluate(self, ctx: _Round) -> None:
        # The annotation numbers describe what this round trained on (the query comes later).
        ctx.metrics = {**self.task.evaluate(self.model), **self.task.annotation_stats()}
        self._write_json(self.round_dir(ctx.index) / 'metrics.json', ctx.metrics)
        for hook in self.hooks:
            hook.after_evaluate(self, ctx.index, ctx.metrics)

    def _score(self, ctx: _Round) -> None:
        # With partial annotation a labeled sample still has unlabeled units.
        pool = self.state.sample_ids if self.unit_mode else self.state.unlabeled_ids()
        if self.subset_size is None or self.subset_size >= len(pool):
            candidates = pool
        else:
            rng = self._rng(_STREAM_SUBSET, ctx.index)
            # Sorted absolute ids: scoring order (and tie-breaking) does not depend on draws.
            candidates = np.sort(rng.choice(pool, self.subset_size, replace=False))
        if not self.unit_mode and len(candidates) < self.budget:
            raise ConfigError(f'only {len(candidates)} unlabeled samples remain for a budget '
                              f'of {self.budget}: lower al.budget or al.num_rounds')
        result = self._score_sharded(candidates, self._rng(_STREAM_SCORE, ctx.index))
        bad = ~np.isfinite(result.scores)
        if bad.any():
            raise ScoreError(
                f'round {ctx.index}: {int(bad.sum())} of {len(bad)} scores are NaN or infinite '
                f'(sample ids {result.sample_ids[bad][:5].tolist()}); nothing was selected: '
                'the model or the perturbation diverged, lower the learning rate or rho')
        ctx.candidates, ctx.result = candidates, result

        if self.unit_mode and result.unit_scores is None:
            raise ConfigError(f'{type(self.selector).__name__} needs a score per unit, but '
                              f'{type(self.scorer).__name__} gives one per sample: choose a '
                              "pixel scorer (e.g. dict(type='RegionImpurityScorer', ...))")
        # Unit maps are kept (float32) only where a unit selector will read them.
        units = ({f'units_{k}': np.asarray(u, dtype=np.float32)
                  for k, u in enumerate(result.unit_scores)} if self.unit_mode else {})

        def write(f):
            np.savez(f, sample_ids=result.sample_ids, scores=result.scores, **units,
                     **{f'extra_{k}': v for k, v in result.extras.items()})
        self._write(self.round_dir(ctx.index) / 'scores.npz', write)
        for hook in self.hooks:
            hook.after_score(self, ctx.index, result)

    def _score_sharded(self, candidates: np.ndarray, rng: np.random.Generator) -> ScoreResult:
        """Score ``candidates``; with several ranks each scores one contiguous shard.

        Gathering the shards in rank order restores the candidates' order, and per-sample
        scores do not depend on which samples share a call, so every rank ends with the scores
        a single process computes (and hence the same selection).
        """
        if self.world_size == 1:
            return self.scorer.score(self.task, self.model, candidates, rng)
        part = self.scorer.score(self.task, self.model,
                                 shard(candidates, self.rank, self.world_size), rng)
        parts = gather_in_rank_order(part)
        extras = {k: np.concatenate([p.extras[k] for p in parts]) for k in part.extras}
        units = [u for p in parts for u in (p.unit_scores or [])]
        return ScoreResult(sample_ids=np.concatenate([p.sample_ids for p in parts]),
                           scores=np.concatenate([p.scores for p in parts]),
                           unit_scores=units or None,
                           seconds=max(p.seconds for p in parts), extras=extras)

    def _select(self, ctx: _Round) -> None:
        record = self._select_units(ctx) if self.unit_mode else self._select_samples(ctx)
        self._write_json(self.round_dir(ctx.index) / 'selected.json',
                         {'round': ctx.index, 'sample_ids': ctx.selected.tolist(), **record})
        for hook in self.hooks:
            hook.after_select(self, ctx.index, ctx.selected)

    def _select_samples(self, ctx: _Round) -> dict[str, Any]:
        """Whole samples: the selector picks ``budget`` candidates; returns what to record."""
        embeddings = (self._embeddings(ctx.candidates) if self.selector.needs_embeddings
                      else None)
        positions = self.selector.select(ctx.result.scores, self.budget,
                                         self._rng(_STREAM_SELECT, ctx.index), embeddings)
        ctx.selected = ctx.candidates[positions]
        return {'scores': ctx.result.scores[positions].tolist()}

    def _select_units(self, ctx: _Round) -> dict[str, Any]:
        """Partial annotation: the selector picks units inside every scored sample."""
        units = self.selector.select_units(ctx.result.unit_scores,
                                           self.task.labeled_units(ctx.candidates),
                                           self._rng(_STREAM_SELECT, ctx.index))
        keep = [k for k, u in enumerate(units) if len(u)]
        ctx.selected = ctx.candidates[keep]
        ctx.units = [np.asarray(units[k], dtype=np.int64) for k in keep]
        return {'num_units': int(sum(len(u) for u in ctx.units)),
                'units': [u.tolist() for u in ctx.units]}

    def _label_stage(self, ctx: _Round) -> None:
        self._label(ctx.index, ctx.selected, ctx.units)

    def _label(self, round_idx: int, ids: np.ndarray,
               units: list[np.ndarray] | None = None) -> None:
        """Ask the oracle for ``ids`` (or their ``units``), validate every answer, persist.

        Nothing is written unless every answer is valid: the answers are checked against the
        query (no unknown, missing or duplicated ids) and by the task (e.g. class range).
        """
        if len(ids) == 0:  # an empty initial set (the task learns from other data first)
            answers: dict[int, Any] = {}
        elif units is not None:
            answers = self._validated_answers(ids, self.oracle.annotate_units(
                self.task, ids, units, round_idx=round_idx))
        else:
            answers = self._validated_answers(
                ids, self.oracle.annotate(self.task, ids, round_idx=round_idx))
        out = self.round_dir(round_idx)
        self._write_json(out / 'annotations.json',
                         {str(i): self.task.encode_annotation(a) for i, a in answers.items()})
        # A partially annotated sample keeps the round it was first labeled in.
        new = ids[~np.isin(ids, self.state.labeled_ids())] if self.unit_mode else ids
        self.state.mark_labeled(new, round_idx + 1)
        if answers:
            self.task.set_annotations(answers)
        if self.is_main:
            self.state.save(out / 'pool_state.npz')  # atomic itself
            self.manifest.record_file(self.work_dir, out / 'pool_state.npz')
        self.manifest.pool_state = str((out / 'pool_state.npz').relative_to(self.work_dir))

    def _validated_answers(self, ids: np.ndarray,
                           answers: Mapping[int, Any] | Iterable[tuple[int, Any]]
                           ) -> dict[int, Any]:
        pairs = list(answers.items()) if isinstance(answers, Mapping) else list(answers)
        queried = set(int(i) for i in ids)
        keys = [int(k) for k, _ in pairs]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise AnnotationError(f'the oracle answered ids {duplicated[:5]} more than once: '
                                  'give exactly one annotation per queried id')
        unknown = sorted(set(keys) - queried)
        if unknown:
            raise AnnotationError(f'the oracle answered ids {unknown[:5]} that were not '
                                  'queried: answer only the queried ids')
        missing = sorted(queried - set(keys))
        if missing:
            raise AnnotationError(f'the oracle did not answer queried ids {missing[:5]}: '
                                  'annotate every queried id')
        result = {int(k): v for k, v in pairs}
        self.task.validate_annotations(result)
        return result

    # ------------------------------------------------------------------ human answers
    def pending_query(self) -> tuple[int, np.ndarray, list[np.ndarray] | None]:
        """The round, ids and (partial annotation) units of the query waiting for answers.

        Returns:
            ``(round, sample_ids [K], units)``: ``units`` holds, per queried sample, the flat
            indices of the units asked for (``rounds/round_NNN/selected.json``), or is
            ``None`` when whole samples are asked for.

        Raises:
            ResumeError: No query is waiting.
        """
        manifest = Manifest.load(self.work_dir)
        if manifest.round == 0 and 'commit' not in manifest.stages:
            return 0, self._initial_ids(self.task.sample_ids()), None
        if manifest.stages and manifest.stages[-1] == 'select':
            selected = json.loads((self.round_dir(manifest.round) / 'selected.json').read_text())
            units = ([np.asarray(u, dtype=np.int64) for u in selected['units']]
                     if 'units' in selected else None)
            return (manifest.round, np.asarray(selected['sample_ids'], dtype=np.int64),
                    units)
        raise ResumeError(f'{self.work_dir} has no query waiting for answers (round '
                          f'{manifest.round}, stages {manifest.stages}): nothing to import')

    def import_answers(self, path: str | os.PathLike) -> tuple[int, int]:
        """Validate a file of answers against the waiting query and store it for --resume.

        Nothing is stored unless every answer is valid (queried ids only, each once, all of
        them, and accepted by the task). For a partial query the answers are first cut down
        to the queried units (what they say elsewhere is ignored), so the task validates
        exactly the labels of the units that were asked for.

        Returns:
            The round and the number of answers imported.
        """
        from ..oracles.file_oracle import FileOracle, restrict_answers
        if not isinstance(self.oracle, FileOracle):
            raise ConfigError(f'the config\'s oracle is {type(self.oracle).__name__}; importing '
                              "answers needs oracle = dict(type='FileOracle')")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'answers file {path} does not exist')
        self.oracle.attach(self.work_dir)
        round_idx, ids, units = self.pending_query()
        try:
            read = self.task.read_answers(path)
            if units is not None:
                read = restrict_answers(self.task, read, ids, units)
            answers = self._validated_answers(ids, read)
        except (AnnotationError, ValueError) as err:
            raise AnnotationError(f'{path}: {err}') from None
        folder = self.oracle.query_dir(round_idx)
        folder.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        target = folder / f'answers{path.suffix}'
        atomic_write(target, lambda f: f.write(data))
        for old in folder.glob('answers.*'):  # an earlier import in another format
            if old != target:
                old.unlink()
        return round_idx, len(answers)

    def _commit(self, ctx: _Round) -> None:
        timings = {k: v for k, v in self.manifest.timings.items()}
        record: dict[str, Any] = {'round': ctx.index,
                                  'num_labeled': int(len(self.state.labeled_ids(ctx.index))),
                                  **ctx.metrics, **timings}
        if ctx.result is not None:
            record['num_scored'] = int(len(ctx.result.scores))
            record['num_selected'] = int(len(ctx.selected))
            if ctx.units is not None:
                record['num_units_selected'] = int(sum(len(u) for u in ctx.units))
        self.records = [r for r in self.records if r['round'] < ctx.index] + [record]
        # Rewritten whole (atomically) instead of appended: repeating a commit is harmless.
        text = ''.join(json.dumps(r, sort_keys=True) + '\n' for r in self.records)
        if self.is_main:
            atomic_write(self.work_dir / METRICS, lambda f: f.write(text.encode()))
        metric_text = ', '.join(f'{k}: {v:.4f}' for k, v in ctx.metrics.items())
        print_log(f'round {ctx.index}: {record["num_labeled"]} labeled, {metric_text} '
                  f"(train {timings.get('train_s', 0):.1f}s, "
                  f"score {timings.get('score_s', 0):.1f}s)", logger='current')
        ctx.record = record

    def _embeddings(self, ids: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        chunks = []
        try:
            with torch.no_grad():
                for _, inputs in self.task.pool_batches(ids, self.embed_batch_size):
                    chunks.append(self.task.embed(self.model, inputs).double().cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(chunks)
