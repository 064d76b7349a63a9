"""Query mode: score a pool nobody has labeled with a trained model and pick what to label.

No training and no simulated oracle: the task's pool is scored by the configured scorer,
the configured selector picks ``budget`` samples, and the task exports them the way the file
oracle does (for classification: the images, ``query.csv``), plus ``selected.csv`` with each
pick's original file, score and rank. The random streams are the loop's (``seed``, the
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from mmengine.logging import print_log
from torch import nn

from ..core.errors import ConfigError, ResumeError
from ..core.io import atomic_write, atomic_write_json
from ..core.scorer import BaseScorer, ScoreResult
from ..core.selection import BaseSelector, Selection, SelectionContext
from ..core.task import BaseTask
from .stages import STREAM_SCORE, STREAM_SELECT

#: The query's own record in its output folder.
QUERY_RECORD = 'query.json'


@dataclass
class QueryOutcome:
    """What a query chose.

    Attributes:
        sample_ids: The picked ids, in the selector's order, ``[budget]``.
        scores: Each pick's score, ``[budget]``.
        result: The scores of every candidate.
        out_dir: Where the export is.
    """

    sample_ids: np.ndarray
    scores: np.ndarray
    result: ScoreResult
    out_dir: Path


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
                candidate_ids: np.ndarray | None) -> np.ndarray:
    pool = task.sample_ids()
    if candidate_ids is None:
        candidates = np.setdiff1d(pool, labeled_ids)
    else:
        candidates = np.sort(np.asarray(candidate_ids, dtype=np.int64))
        outside = np.setdiff1d(candidates, pool)
        if outside.size:
            raise ConfigError(f'candidate ids {outside[:5].tolist()} are not in the pool of '
                              f'{type(task).__name__}')
    return candidates


def run_query(task: BaseTask, scorer: BaseScorer, selector: BaseSelector, model: nn.Module,
              budget: int, out_dir: str | Path, *, seed: int = 0, round_idx: int = 1,
              labeled_ids: np.ndarray | None = None, candidate_ids: np.ndarray | None = None,
              depends_on: Mapping[str, Any] | None = None,
              sources: Mapping[int, str] | None = None,
              embed_batch_size: int = 256) -> QueryOutcome:
    """Score the candidates with ``model``, select ``budget`` of them and export them.

    Args:
        task: The task whose pool is scored (e.g. built on a folder of unlabeled images).
        scorer: The configured scorer.
        selector: The configured selector (whole-sample selectors).
        model: The trained model (not modified: scoring restores every parameter).
        budget: Samples to pick, ``1 <= budget <= candidates``.
        out_dir: Output folder (created; a folder holding another query is refused).
        seed: Seed of the random streams (the run's ``seed`` for parity with the loop).
        round_idx: Round of the streams (the round whose model is used, for parity).
        labeled_ids: Ids already labeled: not candidates, and seen by selectors that use
            them (Coreset); default none.
        candidate_ids: Score only these ids (default: the pool less ``labeled_ids``).
        depends_on: What else the result depends on (config hash, checkpoint hash),
            recorded in the fingerprint.
        sources: Original file of each id (written to ``selected.csv``).
        embed_batch_size: Samples per forward pass for selectors' embeddings.

    Returns:
        The picks and every candidate's score.

    Raises:
        ConfigError: A unit selector, or a budget outside ``1..candidates``.
        ResumeError: ``out_dir`` holds a query of other inputs.
    """
    if selector.selects_units:
        raise ConfigError(f'{type(selector).__name__} selects parts of samples: query mode '
                          'picks whole samples for now; choose a whole-sample selector')
    out = Path(out_dir)
    labeled = np.asarray(labeled_ids if labeled_ids is not None else [], dtype=np.int64)
    candidates = _candidates(task, labeled, candidate_ids)
    if not 1 <= budget <= len(candidates):
        raise ConfigError(f'--budget must be between 1 and the {len(candidates)} candidates, '
                          f'got {budget}')
    keys = task.sample_keys()
    print_key = fingerprint({
        **dict(depends_on or {}), 'budget': int(budget), 'seed': int(seed),
        'round': int(round_idx), 'candidates': candidates.tolist(), 'labeled': labeled.tolist(),
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

    if 'score' in record['stages']:
        result = ScoreResult.load(out / 'scores.npz')
    else:
        result = scorer.score(task, model, candidates,
                              np.random.default_rng([seed, round_idx, STREAM_SCORE]), labeled)
        atomic_write(out / 'scores.npz', result.save)
        done('score')
    if not np.isfinite(result.scores).all():
        raise ConfigError(f'{int((~np.isfinite(result.scores)).sum())} scores are NaN or '
                          'infinite: the model or the perturbation diverged')

    if 'select' in record['stages']:
        selection = Selection.from_record(json.loads((out / 'selected.json').read_text()))
    else:
        context = SelectionContext(
            candidate_ids=result.sample_ids, scores=result.scores, labeled_ids=labeled,
            budget=int(budget), rng=np.random.default_rng([seed, round_idx, STREAM_SELECT]),
            task=task, model=model, embed_batch_size=embed_batch_size)
        selection = selector.select(context)
        atomic_write_json(out / 'selected.json', {'sample_ids': selection.sample_ids.tolist(),
                                                  **selection.record()})
        done('select')

    position = {int(i): k for k, i in enumerate(result.sample_ids)}
    picked = np.asarray(selection.sample_ids, dtype=np.int64)
    picked_scores = result.scores[[position[int(i)] for i in picked]]
    if 'export' not in record['stages']:
        task.export_query(picked, out / 'images')
        _write_selected_csv(out / 'selected.csv', picked, picked_scores, sources)
        done('export')
    print_log(f'query: {len(picked)} of {len(candidates)} samples picked; export in {out}',
              logger='current')
    return QueryOutcome(picked, picked_scores, result, out)


def _write_selected_csv(path: Path, ids: np.ndarray, scores: np.ndarray,
                        sources: Mapping[int, str] | None) -> None:
    """``rank,sample_id,source,score`` per pick (rank 1 = picked first)."""
    def write(f):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator='\n')
        writer.writerow(['rank', 'sample_id', 'source', 'score'])
        for rank, (sid, score) in enumerate(zip(ids, scores), start=1):
            writer.writerow([rank, int(sid), (sources or {}).get(int(sid), ''),
                             repr(float(score))])
        f.write(text.getvalue().encode())
    atomic_write(path, write)


__all__ = ['QUERY_RECORD', 'QueryOutcome', 'fingerprint', 'load_model_file', 'run_query']
