"""The stages of a round: each knows how to run and how to reload what it persisted.

Round ``r`` runs ``train``, ``evaluate`` and, in rounds that acquire, ``score``, ``select``,
``label``; then ``commit``. A stage writes its outputs under ``rounds/round_NNN/`` through the
run store (atomic, checksummed); the loop records it in the manifest afterwards. On resume
the loop calls :meth:`Stage.reload` for each recorded stage instead of running it again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from mmengine.logging import print_log
from torch import nn

from ..core.errors import ConfigError
from ..core.oracle import validate_answers
from ..core.scorer import ScoreResult
from ..core.selection import Selection, SelectionContext
from .streaming import check_scores, score_and_select

if TYPE_CHECKING:  # pragma: no cover
    from .loop import ActiveLearningLoop

# Independent random streams per round: (seed, round, stream) -> generator.
STREAM_INITIAL, STREAM_SUBSET, STREAM_SCORE, STREAM_SELECT, STREAM_TRAIN = range(5)


@dataclass
class RoundState:
    """What the stages of one round hand to each other."""

    index: int
    model: nn.Module | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    candidates: np.ndarray | None = None
    result: ScoreResult | None = None
    selection: Selection | None = None
    record: dict[str, Any] | None = None


class Stage:
    """One resumable step of a round.

    Attributes:
        name: The name recorded in the manifest.
        acquiring: Whether the stage runs only in rounds that query (not the last).
    """

    name: ClassVar[str]
    acquiring: ClassVar[bool] = False

    def run(self, loop: 'ActiveLearningLoop', rnd: RoundState) -> None:
        """Do the stage's work and persist its outputs."""
        raise NotImplementedError

    def reload(self, loop: 'ActiveLearningLoop', rnd: RoundState) -> None:
        """Restore what an earlier, interrupted process persisted for this stage."""


class TrainStage(Stage):
    """Train the round's model with the schedule; ``model.pth`` (and ``optim.pth``)."""

    name = 'train'

    def run(self, loop, rnd):
        labeled = loop.state.labeled_ids()
        what = 'samples with annotated units' if loop.unit_mode else 'labeled samples'
        print_log(f'round {rnd.index}/{loop.num_rounds + 1}: training on {len(labeled)} {what}',
                  logger='current')
        seed = loop.seed_of(STREAM_TRAIN, rnd.index)
        loop.task.use_log_dir(loop.store.round_dir(rnd.index) / 'train_logs')
        loop.model = loop.schedule.train(loop.task, loop.model, labeled, seed, rnd.index)
        if loop.schedule.persists_state:
            loop.store.save_torch(rnd.index, 'optim.pth', loop.schedule.state_dict())
        rnd.model = loop.model
        loop.store.save_torch(rnd.index, 'model.pth', loop.model.state_dict())
        for hook in loop.hooks:
            hook.after_train(loop, rnd.index, loop.model)

    def reload(self, loop, rnd):
        rnd.model = loop.model = loop.load_round_model(rnd.index)


class EvaluateStage(Stage):
    """Evaluate the model; ``metrics.json``."""

    name = 'evaluate'

    def run(self, loop, rnd):
        # The annotation numbers describe what this round trained on (the query comes later).
        rnd.metrics = {**loop.task.evaluate(loop.model), **loop.task.annotation_stats()}
        loop.store.write_json(loop.store.round_dir(rnd.index) / 'metrics.json', rnd.metrics)
        for hook in loop.hooks:
            hook.after_evaluate(loop, rnd.index, rnd.metrics)

    def reload(self, loop, rnd):
        rnd.metrics = loop.store.read_json(rnd.index, 'metrics.json')


class ScoreStage(Stage):
    """Score a random subset of the pool; ``scores.npz`` (ids, scores, unit maps, extras)."""

    name = 'score'
    acquiring = True

    def run(self, loop, rnd):
        # With partial annotation a labeled sample still has unlabeled units.
        pool = loop.state.sample_ids if loop.unit_mode else loop.state.unlabeled_ids()
        if loop.subset_size is None or loop.subset_size >= len(pool):
            candidates = pool
        else:
            rng = loop.rng(STREAM_SUBSET, rnd.index)
            # Sorted absolute ids: scoring order (and tie-breaking) does not depend on draws.
            candidates = np.sort(rng.choice(pool, loop.subset_size, replace=False))
        if not loop.unit_mode and len(candidates) < loop.budget:
            raise ConfigError(f'only {len(candidates)} unlabeled samples remain for a budget '
                              f'of {loop.budget}: lower al.budget or al.num_rounds')
        if loop.streams_units:
            # Chunk by chunk: the unit maps never all sit in memory or on disk.
            result, rnd.selection = score_and_select(
                loop, rnd.index, candidates, loop.rng(STREAM_SCORE, rnd.index),
                loop.rng(STREAM_SELECT, rnd.index))
        else:
            result = loop.scoring.score(loop.task, loop.model, candidates,
                                        loop.rng(STREAM_SCORE, rnd.index),
                                        loop.state.labeled_ids())
            check_scores(loop, rnd.index, result)
        rnd.candidates, rnd.result = candidates, result
        # Unit maps are kept only where a unit selector will read them from the file.
        keep_units = loop.unit_mode and not loop.streams_units
        loop.store.write(loop.store.round_dir(rnd.index) / 'scores.npz',
                         lambda f: result.save(f, with_units=keep_units))
        if rnd.selection is not None:  # chosen with the scores: persisted with them
            write_selection(loop, rnd)
        for hook in loop.hooks:
            hook.after_score(loop, rnd.index, result)

    def reload(self, loop, rnd):
        rnd.result = ScoreResult.load(loop.store.round_dir(rnd.index) / 'scores.npz')
        rnd.candidates = rnd.result.sample_ids
        if loop.streams_units:
            SelectStage().reload(loop, rnd)


class SelectStage(Stage):
    """Choose the query from the scores; ``selected.json``."""

    name = 'select'
    acquiring = True

    def run(self, loop, rnd):
        if rnd.selection is None:  # else chosen (and persisted) with the scores
            context = SelectionContext(
                candidate_ids=rnd.candidates, scores=rnd.result.scores,
                labeled_ids=loop.state.labeled_ids(), budget=loop.budget,
                rng=loop.rng(STREAM_SELECT, rnd.index), task=loop.task, model=loop.model,
                unit_scores=rnd.result.unit_scores, embed_batch_size=loop.embed_batch_size)
            rnd.selection = loop.selector.select(context)
            write_selection(loop, rnd)
        for hook in loop.hooks:
            hook.after_select(loop, rnd.index, rnd.selection.sample_ids)

    def reload(self, loop, rnd):
        rnd.selection = Selection.from_record(loop.store.read_json(rnd.index, 'selected.json'))


def write_selection(loop: 'ActiveLearningLoop', rnd: RoundState) -> None:
    """``selected.json`` of the round: the queried ids and their scores or units."""
    selection = rnd.selection
    if selection is None:
        raise RuntimeError(f'round {rnd.index} has no selection to write')
    loop.store.write_json(loop.store.round_dir(rnd.index) / 'selected.json',
                          {'round': rnd.index, 'sample_ids': selection.sample_ids.tolist(),
                           **selection.record()})


class LabelStage(Stage):
    """Ask the oracle for the query; ``annotations.json`` and ``pool_state.npz``."""

    name = 'label'
    acquiring = True

    def run(self, loop, rnd):
        annotate(loop, rnd.index, rnd.selection.sample_ids, rnd.selection.units)


class CommitStage(Stage):
    """Close the round: its record in ``metrics.jsonl`` and the log line."""

    name = 'commit'

    def run(self, loop, rnd):
        manifest = loop.store.manifest
        timings = dict(manifest.timings)
        # Kept in the manifest (saved when the stage is marked) so --resume can rebuild this
        # record from the round files alone.
        manifest.round_timings[str(rnd.index)] = timings
        record = round_record(rnd.index, len(loop.state.labeled_ids(rnd.index)), rnd.metrics,
                              timings, rnd.result, rnd.selection)
        loop.records = [r for r in loop.records if r['round'] < rnd.index] + [record]
        if loop.is_main:
            loop.store.metrics.write(loop.records)
        metric_text = ', '.join(f'{k}: {v:.4f}' for k, v in rnd.metrics.items())
        print_log(f'round {rnd.index}: {record["num_labeled"]} labeled, {metric_text} '
                  f"(train {timings.get('train_s', 0):.1f}s, "
                  f"score {timings.get('score_s', 0):.1f}s)", logger='current')
        rnd.record = record


def round_record(round_idx: int, num_labeled: int, metrics: dict[str, Any],
                 timings: dict[str, float], result: ScoreResult | None,
                 selection: Selection | None) -> dict[str, Any]:
    """A round's line of ``metrics.jsonl`` (the commit and ``--resume`` build it alike).

    Args:
        round_idx: The round.
        num_labeled: Samples labeled in rounds ``1..round_idx`` (what it trained on).
        metrics: Its evaluation (``metrics.json``).
        timings: Seconds per stage (``<stage>_s``).
        result: Its scores, ``None`` in a round that does not acquire.
        selection: Its query, ``None`` in a round that does not acquire.
    """
    record: dict[str, Any] = {'round': round_idx, 'num_labeled': int(num_labeled), **metrics,
                              **timings}
    if result is not None and selection is not None:
        record['num_scored'] = int(len(result.scores))
        record['num_selected'] = int(len(selection.sample_ids))
        if selection.units is not None:
            record['num_units_selected'] = int(sum(len(u) for u in selection.units))
    return record


#: The stages of a round, in order.
ROUND_STAGES: tuple[Stage, ...] = (TrainStage(), EvaluateStage(), ScoreStage(), SelectStage(),
                                   LabelStage(), CommitStage())


def annotate(loop: 'ActiveLearningLoop', round_idx: int, ids: np.ndarray,
             units: list[np.ndarray] | None = None) -> None:
    """Ask the oracle for ``ids`` (or their ``units``), validate every answer, persist.

    Nothing is written unless every answer is valid: the answers are checked against the
    query (no unknown, missing or duplicated ids) and by the task (e.g. class range). The
    answered samples get round ``round_idx + 1`` in the pool state.
    """
    if len(ids) == 0:  # an empty initial set (the task learns from other data first)
        answers: dict[int, Any] = {}
    elif units is not None:
        answers = validate_answers(loop.task, ids, loop.oracle.annotate_units(
            loop.task, ids, units, round_idx=round_idx))
    else:
        answers = validate_answers(loop.task, ids,
                                   loop.oracle.annotate(loop.task, ids, round_idx=round_idx))
    store, state = loop.store, loop.state
    if state is None:
        raise RuntimeError('annotate() needs the pool state: start or resume the run first')
    store.write_json(store.round_dir(round_idx) / 'annotations.json',
                     {str(i): loop.task.encode_annotation(a) for i, a in answers.items()})
    # A partially annotated sample keeps the round it was first labeled in.
    new = ids[~np.isin(ids, state.labeled_ids())] if loop.unit_mode else ids
    state.mark_labeled(new, round_idx + 1)
    if answers:
        loop.task.set_annotations(answers)
    store.save_pool_state(round_idx, state)


def timed(stage: Stage, loop: 'ActiveLearningLoop', rnd: RoundState) -> float:
    """Run ``stage`` and return its wall time in seconds."""
    start = time.perf_counter()
    stage.run(loop, rnd)
    return time.perf_counter() - start
