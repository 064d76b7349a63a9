"""Query mode: score a pool nobody has labeled with a trained model and pick what to label.

No training and no simulated oracle: the task's pool is scored by the configured scorer,
the configured selector picks ``budget`` samples (a unit selector picks the units to label in
each image: segmentation's regions), and the task exports them the way the file oracle does
into ``images/`` (classification: the images and ``query.csv``; detection: the images and
``query_coco.json`` with the model's boxes as pre-annotations; segmentation: the images and
masks of the pixels to label; always the listing ``query.json``), plus ``selected.csv`` with
each pick's original file, score and rank. The random streams are the loop's (``seed``, the
round, the stream), so a query with a round's model, candidates and labeled set picks what
that round of the loop picked.

The output folder is resumable like a round: ``query.json`` records a fingerprint of what the
query depends on (config, checkpoint bytes, the pool's files, budget, seed) and the stages
done; ``scores.npz`` and ``selected.json`` are written atomically, so a killed query rerun
with the same arguments continues and ends with the same selection, and a folder holding
another query is refused.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from mmengine.logging import print_log
from torch import nn

from ..core.errors import ConfigError, ResumeError
from ..core.io import atomic_write, atomic_write_json
from ..core.oracle import export_query_folder, query_listing
from ..core.scorer import BaseScorer, ScoreResult
from ..core.selection import BaseSelector, Selection, SelectionContext
from ..core.task import BaseTask
from .options import check_pairing
from .stages import STREAM_SCORE, STREAM_SELECT
from .streaming import score_and_select_chunks

#: The query's own record in its output folder.
QUERY_RECORD = 'query.json'


@dataclass
class QueryOutcome:
    """What a query chose.

    Attributes:
        sample_ids: The picked ids, in the selector's order, ``[K]``.
        scores: Each pick's score, ``[K]``.
        result: The scores of every candidate.
        out_dir: Where the export is.
        units: Per pick, the flat unit indices to label (unit selectors), else ``None``.
        predictions: The model's answer per pick (:meth:`BaseTask.predict_annotations`).
        report: The query's ``report.html`` once one is written (the API writes it).
    """

    sample_ids: np.ndarray
    scores: np.ndarray
    result: ScoreResult
    out_dir: Path
    units: list[np.ndarray] | None = None
    predictions: dict[int, Any] = field(default_factory=dict)
    report: Path | None = None


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short hash of what a query depends on (JSON of ``parts``, keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def load_model_file(task: BaseTask, path: str | Path) -> nn.Module:
    """A model of ``task`` with the weights of ``path``: a round's ``model.pth`` (a state
    dict) or an mmengine checkpoint (``{'state_dict': ...}``).

    Raises:
        FileNotFoundError: No such file.
        ConfigError: The file is not a checkpoint or does not fit the configured model.
    """
    import torch

    from .loop import describe_load_error
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path} does not exist: check --checkpoint (a '
                                "run's rounds/round_NNN/model.pth)")
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle, zip and format errors alike)
        raise ConfigError(f'checkpoint {path} cannot be read ({type(err).__name__}): give a '
                          "run's rounds/round_NNN/model.pth") from None
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ConfigError(f'checkpoint {path} holds no state dict: give a run\'s '
                          'rounds/round_NNN/model.pth')
    model = task.build_model(seed=0)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f'checkpoint {path} does not fit the model the config builds '
                          f'({describe_load_error(err)}): use the config the model was trained '
                          'with') from None
    return model.eval()


def _record(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / QUERY_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get('stages'), list):
            raise ValueError('not a query record')
        return record
    except ValueError as err:
        raise ResumeError(f'{path} is damaged ({err}): delete the folder or choose another '
                          '--out') from None


def _candidates(task: BaseTask, labeled_ids: np.ndarray,
                candidate_ids: np.ndarray | None, unit_mode: bool) -> np.ndarray:
    pool = task.sample_ids()
    if candidate_ids is None:
        # With partial annotation a labeled sample still has unlabeled units.
        candidates = pool if unit_mode else np.setdiff1d(pool, labeled_ids)
    else:
        candidates = np.sort(np.asarray(candidate_ids, dtype=np.int64))
        outside = np.setdiff1d(candidates, pool)
        if outside.size:
            raise ConfigError(f'candidate ids {outside[:5].tolist()} are not in the pool of '
                              f'{type(task).__name__}')
    return candidates


def run_query(task: BaseTask, scorer: BaseScorer, selector: BaseSelector, model: nn.Module,
              budget: int | None, out_dir: str | Path, *, seed: int = 0, round_idx: int = 1,
              labeled_ids: np.ndarray | None = None, candidate_ids: np.ndarray | None = None,
              depends_on: Mapping[str, Any] | None = None,
              sources: Mapping[int, str] | None = None,
              embed_batch_size: int = 256, unit_chunk: int | None = 16) -> QueryOutcome:
    """Score the candidates with ``model``, select ``budget`` of them and export them.

    With a whole-sample selector ``budget`` samples are picked. A unit selector (partial
    annotation) chooses the units of every candidate with its own per-sample budget, exactly
    as a round of the loop does; ``budget`` then keeps only the ``budget`` highest-scoring
    samples that received units (``None``: all of them), best first.

    Args:
        task: The task whose pool is scored (e.g. built on a folder of unlabeled images).
        scorer: The configured scorer.
        selector: The configured selector.
        model: The trained model (not modified: scoring restores every parameter).
        budget: Samples to pick, ``1 <= budget <= candidates``; optional for unit selectors.
        out_dir: Output folder (created; a folder holding another query is refused).
        seed: Seed of the random streams (the run's ``seed`` for parity with the loop).
        round_idx: Round of the streams (the round whose model is used, for parity).
        labeled_ids: Ids already labeled: not candidates for whole-sample selectors, and
            seen by selectors that use them (Coreset); default none.
        candidate_ids: Score only these ids (default: the pool less ``labeled_ids``; the
            whole pool for unit selectors).
        depends_on: What else the result depends on (config hash, checkpoint hash),
            recorded in the fingerprint.
        sources: Original file of each id (written to ``selected.csv``).
        embed_batch_size: Samples per forward pass for selectors' embeddings.
        unit_chunk: With a per-sample unit selector, candidates scored and selected this many
            at a time (``al.unit_chunk``, as the loop): memory stays at one chunk's maps and
            ``scores.npz`` holds no maps. ``None``: all in one call, maps saved.

    Returns:
        The picks, their units and the model's predictions for them, and every candidate's
        score.

    Raises:
        ConfigError: The selector does not fit the task, or a budget outside
            ``1..candidates``.
        ResumeError: ``out_dir`` holds a query of other inputs.
    """
    unit_mode = selector.selects_units
    check_pairing(task, selector, None)
    out = Path(out_dir)
    labeled = np.asarray(labeled_ids if labeled_ids is not None else [], dtype=np.int64)
    candidates = _candidates(task, labeled, candidate_ids, unit_mode)
    if budget is None and not unit_mode:
        raise ConfigError(f'--budget is required with {type(selector).__name__}: give the '
                          'number of samples to pick')
    if budget is not None and not 1 <= budget <= len(candidates):
        raise ConfigError(f'--budget must be between 1 and the {len(candidates)} candidates, '
                          f'got {budget}')
    keys = task.sample_keys()
    print_key = fingerprint({
        **dict(depends_on or {}), 'budget': None if budget is None else int(budget),
        'seed': int(seed), 'round': int(round_idx), 'candidates': candidates.tolist(),
        'labeled': labeled.tolist(),
        'keys': [keys[int(i)] for i in candidates] if keys else None})
    record = _record(out)
    if record is not None and record.get('fingerprint') != print_key:
        raise ResumeError(f'{out} holds a query of other inputs (config, checkpoint, data, '
                          'budget or seed differ): choose another --out, or delete the folder')
    if record is None:
        if out.exists() and any(out.iterdir()):
            raise ResumeError(f'{out} is not empty and holds no query: choose another --out')
        record = {'fingerprint': print_key, 'stages': []}
        atomic_write_json(out / QUERY_RECORD, record)

    def done(stage: str) -> None:
        record['stages'].append(stage)
        atomic_write_json(out / QUERY_RECORD, record)

    def check(part: ScoreResult) -> None:
        if unit_mode and part.unit_scores is None and len(part.sample_ids):
            raise ConfigError(f'{type(selector).__name__} needs a score per unit, but '
                              f'{type(scorer).__name__} gives one per sample: choose a pixel '
                              "scorer (e.g. dict(type='RegionImpurityScorer', ...))")
        if not np.isfinite(part.scores).all():
            raise ConfigError(f'{int((~np.isfinite(part.scores)).sum())} scores are NaN or '
                              'infinite: the model or the perturbation diverged')

    score_rng = np.random.default_rng([seed, round_idx, STREAM_SCORE])
    select_rng = np.random.default_rng([seed, round_idx, STREAM_SELECT])
    streamed = unit_mode and getattr(selector, 'per_sample', False)
    if streamed and unit_chunk is not None and 'select' not in record['stages']:
        # Scored and selected a chunk at a time, as a round of the loop; both files are
        # written once every chunk is done (a killed query scores again).
        result, selection = score_and_select_chunks(
            task, model, selector, candidates, labeled,
            lambda ids, rng: scorer.score(task, model, ids, rng, labeled), check,
            score_rng, select_rng, int(unit_chunk), embed_batch_size, 'query')
        atomic_write(out / 'scores.npz', lambda f: result.save(f, with_units=False))
        done('score')
        selection = _top_samples(selection, budget)
        atomic_write_json(out / 'selected.json', {'sample_ids': selection.sample_ids.tolist(),
                                                  **selection.record()})
        done('select')
    if 'score' in record['stages']:
        result = ScoreResult.load(out / 'scores.npz')
    else:
        result = scorer.score(task, model, candidates, score_rng, labeled)
        check(result)
        atomic_write(out / 'scores.npz', lambda f: result.save(f, with_units=unit_mode))
        done('score')
    if not np.isfinite(result.scores).all():  # also when read back from an earlier run
        raise ConfigError(f'{int((~np.isfinite(result.scores)).sum())} scores are NaN or '
                          'infinite: the model or the perturbation diverged')

    if 'select' in record['stages']:
        selection = Selection.from_record(json.loads((out / 'selected.json').read_text()))
    else:
        context = SelectionContext(
            candidate_ids=result.sample_ids, scores=result.scores, labeled_ids=labeled,
            budget=None if unit_mode else int(budget),  # type: ignore[arg-type]
            rng=select_rng, task=task,
            model=model, unit_scores=result.unit_scores if unit_mode else None,
            embed_batch_size=embed_batch_size)
        selection = selector.select(context)
        if unit_mode:  # best first, as a whole-sample query
            selection = _top_samples(selection, budget)
        atomic_write_json(out / 'selected.json', {'sample_ids': selection.sample_ids.tolist(),
                                                  **selection.record()})
        done('select')

    position = {int(i): k for k, i in enumerate(result.sample_ids)}
    picked = np.asarray(selection.sample_ids, dtype=np.int64)
    picked_scores = result.scores[[position[int(i)] for i in picked]]
    units = selection.units
    # The model's answers are recomputed (deterministic, eval mode), not stored: the export
    # and the report are their only readers.
    predictions = task.predict_annotations(model, picked, units)
    if 'export' not in record['stages']:
        export_query_folder(task, query_listing(picked, units), out / 'images', units,
                            predictions=predictions)
        _write_selected_csv(out / 'selected.csv', picked, picked_scores, sources, units)
        done('export')
    what = (f'{len(picked)} of {len(candidates)} samples picked' if units is None else
            f'{sum(len(u) for u in units)} units in {len(picked)} of {len(candidates)} '
            'samples picked')
    print_log(f'query: {what}; export in {out}', logger='current')
    return QueryOutcome(picked, picked_scores, result, out, units, predictions)


def _top_samples(selection: Selection, budget: int | None) -> Selection:
    """The ``budget`` (default all) highest-scoring samples of a unit selection, best first
    (stable: ties keep the selector's order)."""
    order = np.argsort(-np.asarray(selection.scores, dtype=np.float64), kind='stable')[:budget]
    assert selection.units is not None
    return Selection(sample_ids=selection.sample_ids[order], scores=selection.scores[order],
                     units=[selection.units[k] for k in order])


def _write_selected_csv(path: Path, ids: np.ndarray, scores: np.ndarray,
                        sources: Mapping[int, str] | None,
                        units: list[np.ndarray] | None = None) -> None:
    """``rank,sample_id,source,score`` per pick (rank 1 = picked first), and ``num_units``
    (units to label) with a unit selector."""
    def write(f):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator='\n')
        writer.writerow(['rank', 'sample_id', 'source', 'score']
                        + (['num_units'] if units is not None else []))
        for rank, (sid, score) in enumerate(zip(ids, scores), start=1):
            writer.writerow([rank, int(sid), (sources or {}).get(int(sid), ''),
                             repr(float(score))]
                            + ([len(units[rank - 1])] if units is not None else []))
        f.write(text.getvalue().encode())
    atomic_write(path, write)


__all__ = ['QUERY_RECORD', 'QueryOutcome', 'fingerprint', 'load_model_file', 'run_query']
