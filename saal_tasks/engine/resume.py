"""Restoring a run's state from its work directory (``--resume``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmengine.logging import print_log

from ..core.errors import AnnotationError, StateCorruptedError
from ..core.pool_state import PoolState
from ..core.scorer import ScoreResult
from ..core.selection import Selection
from .identity import check_sample_keys
from .manifest import Manifest
from .stages import round_record

if TYPE_CHECKING:  # pragma: no cover
    from .loop import ActiveLearningLoop


def restore(loop: 'ActiveLearningLoop', manifest: Manifest) -> int:
    """Load the pool state, the annotations, the metrics and the last model of a run.

    Args:
        loop: The loop to restore (its store holds the verified ``manifest``).
        manifest: The run's manifest, past round 0.

    Returns:
        The round to run next (the round in progress, or the one after the last committed).

    Raises:
        AnnotationError: A recorded annotation is no longer valid for the task (names the
            file).
        StateCorruptedError: The annotations and the pool state disagree.
        PoolChangedError: A sample id now points at another file than when the run started.
    """
    # Annotations first: a dataset whose classes changed is named by its file.
    per_round = [a for a in (_recorded_annotations(loop, r) for r in range(manifest.round + 1))
                 if a is not None]
    loop.state = PoolState.load(loop.work_dir / manifest.pool_state,
                                expected_ids=loop.task.sample_ids())
    check_sample_keys(loop)
    labeled = {k for answers in per_round for k in answers}
    if labeled != set(int(i) for i in loop.state.labeled_ids()):
        raise StateCorruptedError(
            f'annotations in {loop.work_dir}/rounds do not match the pool state: the work '
            'directory was modified; start a new one')
    for answers in per_round:  # in order: partial annotations of a sample merge
        loop.task.set_annotations(answers)
    _reopen_last_round(loop, manifest)
    loop.records = rebuild_records(loop, manifest)
    if manifest.completed_round >= 1:
        # The previous round's model: trained further by some schedules, read by hooks.
        loop.model = loop.load_round_model(manifest.completed_round)
    manifest.history.append(f'resumed at round {manifest.round} after stages '
                            f'{manifest.stages}')
    print_log(f'resuming {loop.work_dir}: round {manifest.round}, stages done '
              f'{manifest.stages or "none"} ({loop.state.num_labeled} labeled)',
              logger='current')
    return manifest.completed_round + 1 if 'commit' in manifest.stages else manifest.round


def _reopen_last_round(loop: 'ActiveLearningLoop', manifest: Manifest) -> bool:
    """Reopen a finished run's last round when the run was extended with more rounds.

    The last round of a run trains and evaluates but does not query. Resumed with a larger
    ``al.num_rounds``, that round must query now, exactly as it would have in the longer run:
    its train and evaluate stages stay done (their files are reused) and the acquiring stages
    and the commit run. Only the in-memory manifest changes here; it is written with the next
    save (the accepted config change or the first new stage). Either manifest on disk resumes
    the same way: committed without a query, the round is reopened again.

    Returns:
        Whether the round was reopened.
    """
    round_idx = manifest.round
    if ('commit' not in manifest.stages or 'label' in manifest.stages
            or not 1 <= round_idx <= loop.num_rounds):
        return False
    manifest.stages = [s for s in manifest.stages if s in ('train', 'evaluate')]
    manifest.completed_round = round_idx - 1
    manifest.history.append(f'extended to {loop.num_rounds} rounds: round {round_idx} queries')
    print_log(f'the run is extended to {loop.num_rounds} rounds: round {round_idx}, its last, '
              'makes its query now (its model and metrics are kept)', logger='current')
    return True


def _recorded_annotations(loop: 'ActiveLearningLoop', round_idx: int) -> dict[int, Any] | None:
    """Round ``round_idx``'s recorded answers, decoded and validated; ``None`` if none."""
    path = loop.round_dir(round_idx) / 'annotations.json'
    if not loop.store.is_recorded(path):
        return None
    raw = loop.store.read_json(round_idx, 'annotations.json')
    decoded = {int(k): loop.task.decode_annotation(v) for k, v in raw.items()}
    try:
        loop.task.validate_annotations(decoded)
    except (AnnotationError, ValueError) as err:
        raise AnnotationError(f'{path}: {err}') from None
    return decoded


def rebuild_records(loop: 'ActiveLearningLoop', manifest: Manifest) -> list[dict[str, Any]]:
    """The records of the committed rounds, from the checksummed round files.

    ``metrics.jsonl`` is only a view of them: when it is missing, damaged or edited it is
    rewritten (with a warning), so a resumed run never loses or trusts a line of it.
    """
    store, state = loop.store, loop.state
    if state is None:
        raise RuntimeError('rebuild_records() needs the pool state: load it first')
    records = []
    for r in range(1, manifest.completed_round + 1):
        result = selection = None
        scores = store.round_dir(r) / 'scores.npz'
        if store.is_recorded(scores) and store.is_recorded(store.round_dir(r) / 'selected.json'):
            result = ScoreResult.load(scores)
            selection = Selection.from_record(store.read_json(r, 'selected.json'))
        records.append(round_record(r, len(state.labeled_ids(r)),
                                    store.read_json(r, 'metrics.json'),
                                    manifest.round_timings.get(str(r), {}), result, selection))
    if not _holds(store.metrics.path, records):
        print_log(f'{store.metrics.path} was missing or did not match the round files: '
                  'rewritten from them', logger='current', level=30)
        if store.is_main:
            store.metrics.write(records)
    return records


def _holds(path: Path, records: list[dict[str, Any]]) -> bool:
    """Whether ``path`` starts with exactly ``records`` (a later line may be the record of a
    commit interrupted before it was marked; that commit runs again and rewrites the file).

    Runs written before the manifest kept every round's timings rebuild records without
    them; their lines are then compared without the ``*_s`` timings.
    """
    try:
        lines = path.read_text().splitlines()
        parsed = [json.loads(line) for line in lines[:len(records)]]
    except (OSError, ValueError):
        return False
    if not all(isinstance(r, dict) for r in parsed):
        return False
    if all(any(k.endswith('_s') for k in r) for r in records):
        return parsed == records
    return [_untimed(r) for r in parsed] == [_untimed(r) for r in records]


def _untimed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.endswith('_s')}
