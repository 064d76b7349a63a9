"""The active-learning loop (paper Algorithm 1) with persisted, resumable rounds.

Round ``r`` (1-based) trains on every sample labeled in rounds ``1..r``, evaluates, and —
except in the last round — draws a random subset of the unlabeled pool, scores it, selects a
query, asks the oracle, and labels the query with round ``r + 1``. The initial labeled set is
round 1 and is chosen in "round 0". Everything a round did is written to
``work_dir/rounds/round_NNN/`` before ``work_dir/manifest.json`` records the round as done,
so an interrupted run resumes from the last finished round and ends with the same labels.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from torch import nn

from ..hooks.base import ALHook
from ..oracles.simulated import BaseOracle
from ..registry import AL_HOOKS, ORACLES, SCORERS, SELECTORS, TASKS
from ..scorers.base import BaseScorer, ScoreResult
from ..selectors.base import BaseSelector
from .io import append_jsonl, atomic_write, atomic_write_json
from .pool_state import PoolState
from .task import BaseTask

# Independent random streams per round: (seed, round, stream) -> generator. Deriving them
# instead of carrying one generator through the run makes every round reproducible on its own,
# which is what makes a resumed run identical to an uninterrupted one.
_STREAM_INITIAL, _STREAM_SUBSET, _STREAM_SCORE, _STREAM_SELECT, _STREAM_TRAIN = range(5)

MANIFEST = 'manifest.json'
METRICS = 'metrics.jsonl'


class ResumeError(RuntimeError):
    """The work directory cannot be resumed with the given configuration."""


def config_hash(cfg: Config | dict) -> str:
    """SHA-256 of a config, ignoring keys that do not change results (``work_dir``)."""
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    data = {k: v for k, v in data.items() if k not in ('work_dir',)}
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class ActiveLearningLoop:
    """Runs an active-learning experiment for any task adapter.

    Args:
        task: Task adapter (data, model, training, evaluation, unit losses).
        scorer: Acquisition scorer.
        selector: Turns scores into a query.
        oracle: Answers queries with annotations.
        work_dir: Folder for state, per-round outputs, metrics and plots.
        num_rounds: Acquisition rounds; the run trains and evaluates ``num_rounds + 1`` times.
        budget: Samples queried per round.
        initial_size: Size of the initial labeled set.
        subset_size: Unlabeled samples drawn at random and scored per round; ``None`` scores
            the whole unlabeled pool.
        initial_strategy: ``'balanced'`` (same count per class, the paper's protocol) or
            ``'random'``.
        train_mode: ``'scratch'`` (a new model each round) or ``'continue'`` (keep training
            the previous round's model).
        seed: Seed of every random choice of the run.
        hooks: Loop hooks.
        config_hash: Hash of the run's config; a resume with another config is refused.
        embed_batch_size: Batch size for embeddings (selectors that need them).
    """

    def __init__(self, task: BaseTask, scorer: BaseScorer, selector: BaseSelector,
                 oracle: BaseOracle, *, work_dir: str, num_rounds: int, budget: int,
                 initial_size: int, subset_size: int | None = None,
                 initial_strategy: str = 'balanced', train_mode: str = 'scratch',
                 seed: int = 0, hooks: Sequence[ALHook] = (), config_hash: str = '',
                 embed_batch_size: int = 256, run_name: str = 'saal') -> None:
        if initial_strategy not in ('balanced', 'random'):
            raise ValueError(
                f"initial_strategy must be 'balanced' or 'random', got {initial_strategy!r}")
        if train_mode not in ('scratch', 'continue'):
            raise ValueError(f"train_mode must be 'scratch' or 'continue', got {train_mode!r}")
        for name, value in (('num_rounds', num_rounds), ('budget', budget),
                            ('initial_size', initial_size)):
            if value < (0 if name == 'num_rounds' else 1):
                raise ValueError(f'{name} must be positive, got {value}')
        if subset_size is not None and subset_size < budget:
            raise ValueError(f'subset_size ({subset_size}) must be >= budget ({budget}): '
                             'the query is chosen from the scored subset')
        self.task = task
        self.scorer = scorer
        self.selector = selector
        self.oracle = oracle
        self.work_dir = Path(work_dir)
        self.num_rounds = num_rounds
        self.budget = budget
        self.initial_size = initial_size
        self.subset_size = subset_size
        self.initial_strategy = initial_strategy
        self.train_mode = train_mode
        self.seed = seed
        self.hooks = list(hooks)
        self.config_hash = config_hash
        self.embed_batch_size = embed_batch_size
        self.run_name = run_name
        self.state: PoolState | None = None
        self.model: nn.Module | None = None
        self.records: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cfg(cls, cfg: Config) -> 'ActiveLearningLoop':
        """Build the loop and its components from a config (the only place it is read).

        The config has ``task``, ``scorer``, ``selector``, ``oracle`` (registry configs),
        ``al`` (keyword arguments of this class), ``hooks`` (list of hook configs), ``seed``
        and ``work_dir``.
        """
        for key in ('task', 'scorer', 'selector', 'al', 'work_dir'):
            if key not in cfg:
                raise KeyError(f'config has no {key!r}: inherit a base config from '
                               "configs/_base_ or add it")
        return cls(
            task=TASKS.build(cfg.task),
            scorer=SCORERS.build(cfg.scorer),
            selector=SELECTORS.build(cfg.selector),
            oracle=ORACLES.build(cfg.get('oracle', dict(type='SimulatedOracle'))),
            work_dir=cfg.work_dir,
            seed=int(cfg.get('seed', 0)),
            hooks=[AL_HOOKS.build(h) for h in cfg.get('hooks', [])],
            config_hash=config_hash(cfg),
            run_name=Path(cfg.filename).stem if cfg.filename else 'saal',
            **cfg.al)

    # ------------------------------------------------------------------ randomness
    def _seed(self, stream: int, round_idx: int) -> int:
        return int(np.random.SeedSequence([self.seed, round_idx, stream]).generate_state(1)[0])

    def _rng(self, stream: int, round_idx: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, round_idx, stream])

    # ------------------------------------------------------------------ paths
    def round_dir(self, round_idx: int) -> Path:
        """Folder of what round ``round_idx`` wrote (round 0 = the initial labeled set)."""
        return self.work_dir / 'rounds' / f'round_{round_idx:03d}'

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> list[dict[str, Any]]:
        """Run (or resume) the experiment; returns one metrics record per finished round."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        completed = self._resume() if resume else self._start()
        for hook in self.hooks:
            hook.before_run(self)
        for round_idx in range(completed + 1, self.num_rounds + 2):
            self._run_round(round_idx)
        for hook in self.hooks:
            hook.after_run(self, self.records)
        return self.records

    def _start(self) -> int:
        if (self.work_dir / MANIFEST).exists():
            raise ResumeError(
                f'{self.work_dir} already holds a run: pass --resume to continue it, or '
                'choose another --work-dir')
        ids = self.task.sample_ids()
        needed = self.initial_size + self.num_rounds * self.budget
        if needed > len(ids):
            raise ValueError(
                f'the run needs {needed} samples (initial_size {self.initial_size} + '
                f'num_rounds {self.num_rounds} x budget {self.budget}) but the pool has '
                f'{len(ids)}: lower al.num_rounds or al.budget')
        self.state = PoolState(ids)
        initial = self._initial_ids(self.state.sample_ids)
        self._label(0, initial)
        self._commit(0, record=None)
        print_log(f'initial labeled set: {len(initial)} samples ({self.initial_strategy})',
                  logger='current')
        return 0

    def _initial_ids(self, ids: np.ndarray) -> np.ndarray:
        rng = self._rng(_STREAM_INITIAL, 0)
        if self.initial_strategy == 'random':
            return np.sort(rng.choice(ids, self.initial_size, replace=False))
        labels = self.task.stratify_labels(ids)
        if labels is None:
            raise ValueError(f'{type(self.task).__name__} has no classes to balance: '
                             "set al.initial_strategy='random'")
        classes = np.unique(labels)
        per_class = np.full(len(classes), self.initial_size // len(classes))
        # The remainder goes to randomly chosen classes, one extra sample each.
        per_class[rng.permutation(len(classes))[:self.initial_size % len(classes)]] += 1
        chosen = []
        for c, k in zip(classes, per_class):
            members = ids[labels == c]
            if k > len(members):
                raise ValueError(f'class {c} has only {len(members)} samples, {k} needed for '
                                 "a balanced initial set: use initial_strategy='random'")
            chosen.append(rng.choice(members, k, replace=False))
        return np.sort(np.concatenate(chosen))

    def _label(self, round_idx: int, ids: np.ndarray) -> None:
        """Ask the oracle for ``ids``, record them as labeled in ``round_idx + 1``, persist."""
        annotations = self.oracle.annotate(self.task, ids)
        missing = set(int(i) for i in ids) - set(annotations)
        if missing:
            raise ValueError(f'the oracle did not annotate ids {sorted(missing)[:5]}')
        self.state.mark_labeled(ids, round_idx + 1)
        self.task.set_annotations({int(i): annotations[int(i)] for i in ids})
        out = self.round_dir(round_idx)
        atomic_write_json(out / 'annotations.json',
                          {str(int(i)): self.task.encode_annotation(annotations[int(i)])
                           for i in ids})
        self.state.save(out / 'pool_state.npz')

    def _commit(self, round_idx: int, record: dict[str, Any] | None) -> None:
        """Mark ``round_idx`` as finished; the manifest is written last, atomically."""
        if record is not None:
            append_jsonl(self.work_dir / METRICS, record)
            self.records.append(record)
        atomic_write_json(self.work_dir / MANIFEST, {
            'completed_round': round_idx,
            'num_rounds': self.num_rounds,
            'config_hash': self.config_hash,
            'seed': self.seed,
        })

    def _resume(self) -> int:
        manifest_path = self.work_dir / MANIFEST
        if not manifest_path.exists():
            raise ResumeError(f'nothing to resume in {self.work_dir} (no {MANIFEST}): '
                              'run without --resume to start')
        manifest = json.loads(manifest_path.read_text())
        if self.config_hash and manifest['config_hash'] != self.config_hash:
            raise ResumeError(
                f'{self.work_dir} was started with a different config (hash '
                f"{manifest['config_hash'][:12]} vs {self.config_hash[:12]}): resume with the "
                'original config (work_dir/<name>.py) or start a new --work-dir')
        completed = int(manifest['completed_round'])
        self.state = PoolState.load(self.round_dir(completed) / 'pool_state.npz',
                                    expected_ids=self.task.sample_ids())
        annotations = {}
        for r in range(completed + 1):
            path = self.round_dir(r) / 'annotations.json'
            if path.exists():
                annotations.update({int(k): self.task.decode_annotation(v)
                                    for k, v in json.loads(path.read_text()).items()})
        if set(annotations) != set(int(i) for i in self.state.labeled_ids()):
            raise ResumeError(f'annotations in {self.work_dir}/rounds do not match the pool '
                              'state: the work directory was modified; start a new one')
        self.task.set_annotations(annotations)
        # Drop metric lines of a round that was interrupted after logging but before commit.
        metrics_path = self.work_dir / METRICS
        lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
        self.records = [json.loads(l) for l in lines if l.strip()]
        self.records = [r for r in self.records if r['round'] <= completed]
        text = ''.join(json.dumps(r, sort_keys=True) + '\n' for r in self.records)
        atomic_write(metrics_path, lambda f: f.write(text.encode()))
        if self.train_mode == 'continue' and completed >= 1:
            self.model = self.task.build_model(self._seed(_STREAM_TRAIN, 0))
            state_dict = torch.load(self.round_dir(completed) / 'model.pth',
                                    map_location='cpu', weights_only=True)
            self.model.load_state_dict(state_dict)
        print_log(f'resuming {self.work_dir} after round {completed} '
                  f'({self.state.num_labeled} labeled)', logger='current')
        return completed

    def _run_round(self, round_idx: int) -> None:
        acquires = round_idx <= self.num_rounds
        for hook in self.hooks:
            hook.before_round(self, round_idx)
        labeled = self.state.labeled_ids()
        print_log(f'round {round_idx}/{self.num_rounds + 1}: training on {len(labeled)} '
                  'labeled samples', logger='current')
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        if self.model is None or self.train_mode == 'scratch':
            self.model = self.task.build_model(self._seed(_STREAM_TRAIN, round_idx))
        self.model = self.task.train(self.model, labeled, seed=self._seed(_STREAM_TRAIN,
                                                                          round_idx))
        timings['train_s'] = time.perf_counter() - t0
        for hook in self.hooks:
            hook.after_train(self, round_idx, self.model)

        t0 = time.perf_counter()
        metrics = self.task.evaluate(self.model)
        timings['eval_s'] = time.perf_counter() - t0
        for hook in self.hooks:
            hook.after_evaluate(self, round_idx, metrics)

        out = self.round_dir(round_idx)
        out.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {'round': round_idx, 'num_labeled': int(len(labeled)),
                                  **metrics}
        if acquires:
            selected, num_scored = self._acquire(round_idx, timings)
            record['num_scored'] = num_scored
            record['num_selected'] = int(len(selected))
        else:
            # The last round labels nothing; its state file still marks where a resume starts.
            self.state.save(out / 'pool_state.npz')
        if self.train_mode == 'continue':
            state_dict = self.model.state_dict()
            atomic_write(out / 'model.pth', lambda f: torch.save(state_dict, f))
        record.update({k: round(v, 4) for k, v in timings.items()})
        metric_text = ', '.join(f'{k}: {v:.4f}' for k, v in metrics.items())
        print_log(f'round {round_idx}: {len(labeled)} labeled, {metric_text} '
                  f"(train {timings['train_s']:.1f}s, score {timings.get('score_s', 0):.1f}s)",
                  logger='current')
        self._commit(round_idx, record)
        for hook in self.hooks:
            hook.after_round(self, round_idx, record)

    def _acquire(self, round_idx: int, timings: dict[str, float]) -> tuple[np.ndarray, int]:
        """Score a random subset of the unlabeled pool, select, annotate, persist."""
        unlabeled = self.state.unlabeled_ids()
        if self.subset_size is None or self.subset_size >= len(unlabeled):
            candidates = unlabeled
        else:
            rng = self._rng(_STREAM_SUBSET, round_idx)
            # Sorted absolute ids: scoring order (and tie-breaking) does not depend on draws.
            candidates = np.sort(rng.choice(unlabeled, self.subset_size, replace=False))

        t0 = time.perf_counter()
        result = self.scorer.score(self.task, self.model, candidates,
                                   self._rng(_STREAM_SCORE, round_idx))
        timings['score_s'] = time.perf_counter() - t0
        for hook in self.hooks:
            hook.after_score(self, round_idx, result)

        t0 = time.perf_counter()
        embeddings = self._embeddings(candidates) if self.selector.needs_embeddings else None
        positions = self.selector.select(result.scores, self.budget,
                                         self._rng(_STREAM_SELECT, round_idx), embeddings)
        selected = candidates[positions]
        timings['select_s'] = time.perf_counter() - t0
        for hook in self.hooks:
            hook.after_select(self, round_idx, selected)

        out = self.round_dir(round_idx)
        self._save_scores(out, result)
        atomic_write_json(out / 'selected.json', {
            'round': round_idx, 'sample_ids': selected.tolist(),
            'scores': result.scores[positions].tolist()})
        t0 = time.perf_counter()
        self._label(round_idx, selected)
        timings['label_s'] = time.perf_counter() - t0
        return selected, int(len(candidates))

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

    @staticmethod
    def _save_scores(out: Path, result: ScoreResult) -> None:
        def write(f):
            np.savez(f, sample_ids=result.sample_ids, scores=result.scores,
                     **{f'extra_{k}': v for k, v in result.extras.items()})
        atomic_write(out / 'scores.npz', write)
