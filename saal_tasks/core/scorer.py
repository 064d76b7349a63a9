"""The scorer contract: what every acquisition scorer returns, and the base class that runs
one on a pool subset."""
from __future__ import annotations

import contextlib
import contextvars
import os
import time
from dataclasses import dataclass, field
from typing import IO, Iterator

import numpy as np
from mmengine.logging import print_log
from torch import nn

from .task import BaseTask


@dataclass
class ScoreResult:
    """Scores of the scored pool subset.

    Attributes:
        sample_ids: Scored ids, shape ``[N]``.
        scores: One score per sample (units reduced), ``float64``, shape ``[N]``.
        unit_scores: Per-unit scores per sample (``[*U]`` each) when a sample has more than
            one unit (boxes, pixels); ``None`` for one unit per sample.
        unit_targets: Pseudo-label of each unit per sample (``[*U]`` each, aligned with
            ``unit_scores``) when the scorer has them; region impurity reads them.
        seconds: Wall time of the scoring.
        extras: Scorer-specific arrays worth persisting (e.g. clean losses), each ``[N]``.
    """

    sample_ids: np.ndarray
    scores: np.ndarray
    unit_scores: list[np.ndarray] | None = None
    unit_targets: list[np.ndarray] | None = None
    seconds: float = 0.0
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, f: IO[bytes], with_units: bool = False) -> None:
        """Write the result as ``.npz`` (a round's or a query's ``scores.npz``).

        Args:
            f: Binary file to write to.
            with_units: Keep the per-unit maps (float32), for unit selectors.
        """
        units = ({f'units_{k}': np.asarray(u, dtype=np.float32)
                  for k, u in enumerate(self.unit_scores or [])} if with_units else {})
        # numpy's stubs type savez's **kwds like its keyword flags.
        np.savez(f, sample_ids=self.sample_ids, scores=self.scores,
                 **units, **{f'extra_{k}': v  # type: ignore[arg-type]
                             for k, v in self.extras.items()})

    @classmethod
    def concatenate(cls, parts: list['ScoreResult'], seconds: float | None = None,
                    with_units: bool = True) -> 'ScoreResult':
        """The parts (shards or chunks of the candidates) as one result, in order.

        Args:
            parts: Results of consecutive pieces of the candidates, each with the same extras.
            seconds: Wall time of the whole (default: the sum of the parts').
            with_units: Keep the unit maps of the parts. Their ``unit_targets`` are not kept:
                only scorers that wrap a pixel scorer read them, before results are joined.
        """
        if not parts:
            return cls(sample_ids=np.zeros(0, np.int64), scores=np.zeros(0),
                       seconds=seconds or 0.0)
        units = [u for p in parts for u in (p.unit_scores or [])] if with_units else []
        return cls(sample_ids=np.concatenate([p.sample_ids for p in parts]),
                   scores=np.concatenate([p.scores for p in parts]),
                   unit_scores=units or None,
                   seconds=sum(p.seconds for p in parts) if seconds is None else seconds,
                   extras={k: np.concatenate([p.extras[k] for p in parts])
                           for k in parts[0].extras})

    @classmethod
    def load(cls, path: str | os.PathLike) -> 'ScoreResult':
        """The result :meth:`save` wrote to ``path``."""
        with np.load(path, allow_pickle=False) as data:
            num = len(data['sample_ids'])
            return cls(sample_ids=data['sample_ids'], scores=data['scores'],
                       unit_scores=[data[f'units_{k}'] for k in range(num)]
                       if 'units_0' in data.files else None,
                       extras={k[len('extra_'):]: data[k] for k in data.files
                               if k.startswith('extra_')})


class BaseScorer:
    """Scores samples of the pool; subclasses implement :meth:`_score`.

    :meth:`score` puts the model in eval mode for the whole acquisition (pseudo-labels are
    eval-mode predictions, BatchNorm uses running statistics so samples do not interact) and
    restores the previous mode afterwards.

    Args:
        log_interval: Print progress every this many scored samples.
    """

    def __init__(self, log_interval: int = 500) -> None:
        self.log_interval = log_interval

    def score(self, task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
              rng: np.random.Generator, labeled_ids: np.ndarray | None = None) -> ScoreResult:
        """Score ``sample_ids`` with ``model``.

        Args:
            task: Task adapter giving batches, pseudo-labels and unit losses.
            model: Trained model; its parameters are unchanged on return.
            sample_ids: Ids to score, shape ``[N]``.
            rng: Generator for scorers that draw random numbers.
            labeled_ids: Ids labeled so far, ``[L]``, for scorers that contrast the labeled
                and unlabeled pools (VAAL); the loop always passes them.

        Returns:
            A :class:`ScoreResult` aligned with ``sample_ids``.
        """
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            result = self._score(task, model, np.asarray(sample_ids, dtype=np.int64), rng,
                                 labeled_ids)
        finally:
            model.train(was_training)
        result.seconds = time.perf_counter() - start
        return result

    def _score(self, task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
               rng: np.random.Generator, labeled_ids: np.ndarray | None) -> ScoreResult:
        raise NotImplementedError

    def _progress(self, done: int, total: int, start: float, last: list[int]) -> None:
        """Log progress after the first batch (an early estimate of the time it takes), then
        whenever another ``log_interval`` samples are done, and at the end (not inside
        :func:`progress_muted`)."""
        if _MUTED.get():
            return
        if done - last[0] >= self.log_interval or done == total or (last[0] == 0 < done):
            last[0] = done
            print_log(f'scoring {progress_text(done, total, start, "samples")}',
                      logger='current')


#: Set while a caller that scores in chunks reports the progress of the whole pool itself.
_MUTED: contextvars.ContextVar[bool] = contextvars.ContextVar('scoring_progress_muted',
                                                              default=False)


@contextlib.contextmanager
def progress_muted() -> Iterator[None]:
    """Silence scorers' own progress lines (a chunked caller logs one for the whole pool)."""
    token = _MUTED.set(True)
    try:
        yield
    finally:
        _MUTED.reset(token)


def progress_text(done: int, total: int, start: float, what: str, digits: int = 1) -> str:
    """``'done/total what (rate what/s, time left)'`` for progress lines since ``start``
    (a ``time.perf_counter()`` reading)."""
    rate = done / max(time.perf_counter() - start, 1e-9)
    left = '' if done == total else f', {format_seconds((total - done) / rate)} left'
    return f'{done}/{total} {what} ({rate:.{digits}f} {what}/s{left})'


def format_seconds(seconds: float) -> str:
    """A duration for progress lines: ``'42 s'``, ``'7 min 5 s'``, ``'3 h 20 min'``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f'{seconds} s'
    if seconds < 3600:
        return f'{seconds // 60} min {seconds % 60} s'
    return f'{seconds // 3600} h {seconds % 3600 // 60} min'


def ids_in_order(task: BaseTask, batches: list[np.ndarray],
                 sample_ids: np.ndarray) -> np.ndarray:
    """The ids of a scorer's batches, concatenated; they must be ``sample_ids`` in order.

    Scores are stored against ``sample_ids`` by position, so a task whose ``pool_batches``
    reorders ids would silently attach scores to the wrong samples.
    """
    ids = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    if not np.array_equal(ids, sample_ids):
        raise RuntimeError(f'{type(task).__name__}.pool_batches changed the order of ids')
    return ids
