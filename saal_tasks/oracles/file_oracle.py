"""Human annotators: export each query as files, read the answers back from files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mmengine.dist import barrier, is_main_process

from ..registry import ORACLES
from .base import Answers, BaseOracle, QueryPending

if TYPE_CHECKING:  # pragma: no cover
    # Hints only: saal_tasks.core imports the oracles (a cycle at import time).
    from ..core.task import BaseTask

QUERY_LIST = 'query.json'


@ORACLES.register_module()
class FileOracle(BaseOracle):
    """Exports a query to ``work_dir/queries/round_NNN/`` and waits for its answers.

    The export is the task's native format (``BaseTask.export_query``: images and a CSV for
    classification). People label it with any tool; ``tools/import_labels.py`` validates their
    answers and stores them as ``answers.<ext>`` in the same folder, and ``--resume`` continues
    the run. Answers placed there by hand are validated the same way when the run resumes.

    Args:
        folder: Where queries go, relative to the work directory.
    """

    def __init__(self, folder: str = 'queries') -> None:
        self.folder = folder
        self.root: Path | None = None

    def attach(self, work_dir: Path) -> None:
        self.root = Path(work_dir) / self.folder

    def query_dir(self, round_idx: int) -> Path:
        """Folder of the query of ``round_idx``."""
        if self.root is None:
            raise RuntimeError('FileOracle.attach(work_dir) must be called first')
        return self.root / f'round_{round_idx:03d}'

    @staticmethod
    def answers_file(folder: Path) -> Path | None:
        """The imported answers in ``folder``, if any."""
        found = sorted(folder.glob('answers.*'))
        return found[0] if found else None

    def annotate(self, task: BaseTask, sample_ids: np.ndarray, round_idx: int) -> Answers:
        folder = self.query_dir(round_idx)
        ids = [int(i) for i in sample_ids]
        answers = self.answers_file(folder) if folder.is_dir() else None
        if answers is not None:
            return task.read_answers(answers)
        listed = folder / QUERY_LIST
        if is_main_process() and not (listed.is_file() and
                                      json.loads(listed.read_text())['sample_ids'] == ids):
            # Export into a fresh folder, then rename: a query folder is complete or absent.
            staging = folder.with_name(folder.name + '.partial')
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            task.export_query(np.asarray(ids, dtype=np.int64), staging)
            (staging / QUERY_LIST).write_text(json.dumps({'round': round_idx,
                                                          'sample_ids': ids}, indent=2))
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        barrier()  # the export is complete before any rank stops
        raise QueryPending(round_idx, folder, len(ids))
