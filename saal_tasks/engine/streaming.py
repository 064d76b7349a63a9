"""A partial-annotation round scored and selected a chunk of images at a time.

When the unit selector chooses each image's units from that image alone
(:attr:`~saal_tasks.core.selection.BaseUnitSelector.per_sample`), a round does not need every
score map at once: each chunk of candidates is scored, its units chosen, and its maps dropped.
Peak memory is one chunk's maps, and the round persists the per-image scores and the chosen
units, not the maps (a Cityscapes round at 640 x 1280 would otherwise hold 2,975 float32
maps, about 9.7 GB).

Equality with scoring everything in one call rests on two contracts the distributed scoring
already relies on: a sample's scores do not depend on the samples scored with it, and every
chunk gets the round's generators in the same state, so a scorer that draws (the random
baseline's key) draws what one call would.
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Callable

import numpy as np
from mmengine.logging import print_log
from torch import nn

from ..core.errors import ConfigError, ScoreError
from ..core.scorer import ScoreResult, progress_muted, progress_text
from ..core.selection import BaseSelector, Selection, SelectionContext
from ..core.task import BaseTask

if TYPE_CHECKING:  # pragma: no cover
    from .loop import ActiveLearningLoop


def check_scores(loop: 'ActiveLearningLoop', round_idx: int, result: ScoreResult) -> None:
    """Refuse NaN or infinite scores, and per-sample scores where units are selected.

    Raises:
        ScoreError: Some scores are not finite (nothing is selected).
        ConfigError: The selector needs unit maps the scorer does not give.
    """
    bad = ~np.isfinite(result.scores)
    if bad.any():
        raise ScoreError(
            f'round {round_idx}: {int(bad.sum())} of {len(bad)} scores are NaN or infinite '
            f'(sample ids {result.sample_ids[bad][:5].tolist()}); nothing was selected: '
            'the model or the perturbation diverged, lower the learning rate or rho')
    if loop.unit_mode and result.unit_scores is None and len(result.sample_ids):
        raise ConfigError(f'{type(loop.selector).__name__} needs a score per unit, but '
                          f'{type(loop.scorer).__name__} gives one per sample: choose a '
                          "pixel scorer (e.g. dict(type='RegionImpurityScorer', ...))")


def score_and_select(loop: 'ActiveLearningLoop', round_idx: int, candidates: np.ndarray,
                     score_rng: np.random.Generator, select_rng: np.random.Generator
                     ) -> tuple[ScoreResult, Selection]:
    """Score ``candidates`` (``[N]``) and choose their units, ``loop.unit_chunk`` at a time.

    Args:
        loop: The running loop (task, model, scorer, per-sample unit selector).
        round_idx: The round (for messages).
        candidates: Sorted candidate ids, ``[N]``.
        score_rng: The round's scoring generator (each chunk gets a copy in this state).
        select_rng: The round's selection generator (likewise).

    Returns:
        The scores of every candidate (no unit maps) and the selection, both in candidate
        order, as one call over all candidates would give them.
    """
    if loop.state is None or loop.model is None or loop.unit_chunk is None:
        raise RuntimeError('score_and_select() needs a started run with a chunk size')
    labeled, model = loop.state.labeled_ids(), loop.model
    return score_and_select_chunks(
        loop.task, model, loop.selector, candidates, labeled,
        lambda ids, rng: loop.scoring.score(loop.task, model, ids, rng, labeled),
        lambda part: check_scores(loop, round_idx, part), score_rng, select_rng,
        int(loop.unit_chunk), loop.embed_batch_size, f'round {round_idx}',
        max(1, int(getattr(loop.scorer, 'log_interval', 500))))


def score_and_select_chunks(task: BaseTask, model: nn.Module, selector: BaseSelector,
                            candidates: np.ndarray, labeled: np.ndarray,
                            score: Callable[[np.ndarray, np.random.Generator], ScoreResult],
                            check: Callable[[ScoreResult], None],
                            score_rng: np.random.Generator, select_rng: np.random.Generator,
                            chunk: int, embed_batch_size: int, what: str,
                            log_every: int = 500) -> tuple[ScoreResult, Selection]:
    """Score and select ``chunk`` candidates at a time (a round of the loop, or a query).

    Args:
        task: The task of the candidates.
        model: The model that scores.
        selector: A per-sample unit selector.
        candidates: Sorted candidate ids, ``[N]``.
        labeled: Labeled ids, ``[L]`` (seen by the scorer and the selector).
        score: ``score(ids, rng)``: the scores of ``ids`` with their unit maps.
        check: Raises on scores that must not be selected from (NaN, no unit maps).
        score_rng: The scoring generator (each chunk gets a copy in this state).
        select_rng: The selection generator (likewise).
        chunk: Candidates per chunk.
        embed_batch_size: Samples per forward pass for selectors' embeddings.
        what: Prefix of the progress lines (``'round 2'``, ``'query'``).
        log_every: A progress line at least every this many images.

    Returns:
        The scores of every candidate (no unit maps) and the selection, both in candidate
        order, as one call over all candidates would give them.
    """
    parts, selections = [], []
    began, logged = time.perf_counter(), 0
    with progress_muted():
        for begin in range(0, len(candidates), chunk):
            ids = candidates[begin:begin + chunk]
            part = score(ids, copy.deepcopy(score_rng))
            check(part)
            selections.append(selector.select(SelectionContext(
                candidate_ids=part.sample_ids, scores=part.scores, labeled_ids=labeled,
                budget=None, rng=copy.deepcopy(select_rng), task=task, model=model,
                unit_scores=part.unit_scores, embed_batch_size=embed_batch_size)))
            part.unit_scores = part.unit_targets = None  # the chunk's maps go here
            parts.append(part)
            done = begin + len(ids)
            if done == len(candidates) or done - logged >= log_every or logged == 0:
                logged = done
                print_log(f'{what}: scored and selected '
                          f'{progress_text(done, len(candidates), began, "images", 2)}',
                          logger='current')
    selection = Selection(
        sample_ids=(np.concatenate([s.sample_ids for s in selections]) if selections
                    else np.zeros(0, np.int64)),
        scores=(np.concatenate([s.scores for s in selections]) if selections
                else np.zeros(0)),
        units=[u for s in selections for u in (s.units or [])])
    return ScoreResult.concatenate(parts), selection
