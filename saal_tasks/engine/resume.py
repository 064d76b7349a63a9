"""Restoring a run's state from its work directory (``--resume``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmengine.logging import print_log

from ..core.errors import AnnotationError, StateCorruptedError
from ..core.pool_state import PoolState
from .manifest import Manifest

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
    """
    # Annotations first: a dataset whose classes changed is named by its file.
    per_round = [a for a in (_recorded_annotations(loop, r) for r in range(manifest.round + 1))
                 if a is not None]
    loop.state = PoolState.load(loop.work_dir / manifest.pool_state,
                                expected_ids=loop.task.sample_ids())
    labeled = {k for answers in per_round for k in answers}
    if labeled != set(int(i) for i in loop.state.labeled_ids()):
        raise StateCorruptedError(
            f'annotations in {loop.work_dir}/rounds do not match the pool state: the work '
            'directory was modified; start a new one')
    for answers in per_round:  # in order: partial annotations of a sample merge
        loop.task.set_annotations(answers)
    loop.records = loop.store.metrics.read(manifest.completed_round)
    if manifest.completed_round >= 1:
        # The previous round's model: trained further by some schedules, read by hooks.
        loop.model = loop.load_round_model(manifest.completed_round)
    manifest.history.append(f'resumed at round {manifest.round} after stages '
                            f'{manifest.stages}')
    print_log(f'resuming {loop.work_dir}: round {manifest.round}, stages done '
              f'{manifest.stages or "none"} ({loop.state.num_labeled} labeled)',
              logger='current')
    return manifest.completed_round + 1 if 'commit' in manifest.stages else manifest.round


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
