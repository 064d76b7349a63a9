"""The query a stopped run waits for, and importing people's answers to it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import ResumeError
from ..core.selection import Selection
from .identity import check_sample_keys
from .manifest import Manifest

if TYPE_CHECKING:  # pragma: no cover
    from .loop import ActiveLearningLoop


def pending_query(loop: 'ActiveLearningLoop') -> tuple[int, np.ndarray, list[np.ndarray] | None]:
    """The round, ids and (partial annotation) units of the query waiting for answers.

    Returns:
        ``(round, sample_ids [K], units)``: ``units`` holds, per queried sample, the flat
        indices of the units asked for (``rounds/round_NNN/selected.json``), or is ``None``
        when whole samples are asked for.

    Raises:
        ResumeError: No query is waiting.
    """
    manifest = Manifest.load(loop.work_dir)
    if manifest.round == 0 and 'commit' not in manifest.stages:
        return 0, loop.initial_ids(), None
    if manifest.stages and manifest.stages[-1] == 'select':
        selection = Selection.from_record(loop.store.read_json(manifest.round, 'selected.json'))
        return manifest.round, selection.sample_ids, selection.units
    raise ResumeError(f'{loop.work_dir} has no query waiting for answers (round '
                      f'{manifest.round}, stages {manifest.stages}): nothing to import')


def import_answers(loop: 'ActiveLearningLoop', path: str | os.PathLike) -> tuple[int, int]:
    """Hand a file of answers to the waiting query to the run's oracle, which validates it and
    keeps it for ``--resume`` (an oracle that takes no files refuses).

    Returns:
        The round and the number of answers imported.
    """
    if not loop.oracle.takes_answer_files:
        raise loop.oracle.no_answer_files()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'answers file {path} does not exist: check the path')
    loop.store.lock()  # no run may change the work dir while its answers come in
    try:
        loop.store.inspect()
        check_sample_keys(loop)  # answers keyed by id must still mean the images queried
        loop.oracle.attach(loop.work_dir)
        round_idx, ids, units = pending_query(loop)
        return round_idx, loop.oracle.import_answers(loop.task, path, round_idx, ids, units)
    finally:
        loop.store.unlock()
