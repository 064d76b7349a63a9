"""What each sample id points to, recorded when a run starts and checked when it goes on.

A task's ids are stable keys, but for file-based datasets they are positions in a sorted file
list: add one image and delete another and every id keeps its number while some point at other
files (an old label then sits on another image). Tasks that can tell what an id points to
return :meth:`~saal_tasks.core.task.BaseTask.sample_keys` (for files: the relative path, the
size and a content hash); round 0 stores them as ``rounds/round_000/sample_keys.json``, a
checksummed state file, and ``--resume`` and label imports refuse to go on, naming the files,
when they changed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import StateCorruptedError

if TYPE_CHECKING:  # pragma: no cover
    from .loop import ActiveLearningLoop

SAMPLE_KEYS = 'sample_keys.json'


class PoolChangedError(StateCorruptedError):
    """A sample id now points at other content than when the run started."""


def record_sample_keys(loop: 'ActiveLearningLoop') -> None:
    """Store what every sample id points to when a run starts (nothing for tasks without
    keys), recorded in the manifest at once."""
    keys = loop.task.sample_keys()
    if keys is not None:
        loop.store.write_json(loop.round_dir(0) / SAMPLE_KEYS,
                              {str(i): k for i, k in sorted(keys.items())})
        if loop.is_main:  # recorded now: the initial query may wait for people's answers
            loop.store.manifest.save(loop.work_dir)


def check_sample_keys(loop: 'ActiveLearningLoop') -> None:
    """Refuse to continue a run whose samples are no longer what they were.

    Runs recorded without keys (older runs, tasks without them) are not checked.

    Raises:
        PoolChangedError: Naming the first changed ids with their old and new content.
    """
    path = loop.round_dir(0) / SAMPLE_KEYS
    if not loop.store.is_recorded(path):
        return
    recorded = loop.store.read_json(0, SAMPLE_KEYS)
    current = {str(i): k for i, k in (loop.task.sample_keys() or {}).items()}
    changed = sorted((k for k in set(recorded) | set(current)
                      if recorded.get(k) != current.get(k)), key=int)
    if not changed:
        return
    shown = '; '.join(_change(k, recorded.get(k), current.get(k)) for k in changed[:2])
    raise PoolChangedError(
        f'{len(changed)} sample id(s) of the run in {loop.work_dir} point at other files than '
        f'when it started ({shown}{"; ..." if len(changed) > 2 else ""}): restore the dataset '
        'folder as it was, or start a new --work-dir (docs/reliability.md: growing a pool)')


def _change(sample_id: str, old: str | None, new: str | None) -> str:
    """``id 3: a.png is now b.png`` or ``id 3: a.png changed`` (keys start with the path)."""
    old_path = old.split(' ')[0] if old else '(no file)'
    new_path = new.split(' ')[0] if new else '(no file)'
    return (f'id {sample_id}: {old_path} changed' if old_path == new_path
            else f'id {sample_id}: {old_path} is now {new_path}')
