"""Human annotators: export each query as files, read the answers back from files."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from mmengine.dist import barrier, is_main_process

from ..core.errors import AnnotationError, ConfigError, naming_file
from ..core.io import atomic_write
from ..core.oracle import (QUERY_LIST, Answers, BaseOracle, QueryPending, export_query_folder,
                           query_listing, validate_answers)
from ..core.task import BaseTask
from ..registry import ORACLES



def restrict_answers(task: BaseTask, answers: Answers, sample_ids: Sequence[int],
                     units: Sequence[np.ndarray]) -> list[tuple[int, Any]]:
    """Cut people's full answers down to the queried units (partial annotation).

    Whatever an answer says outside the queried units is never read. Answers for ids that
    were not queried are passed on unchanged, so that the loop's check names them.

    Args:
        task: The task (:meth:`~saal_tasks.core.task.BaseTask.restrict_annotation`).
        answers: Full annotations by id, as the task's ``read_answers`` returns them.
        sample_ids: Queried samples, shape ``[K]``.
        units: Per queried sample, flat indices of the units asked for.

    Returns:
        ``(sample_id, partial annotation)`` pairs in the order of ``answers``.
    """
    wanted = {int(i): np.asarray(u, dtype=np.int64) for i, u in zip(sample_ids, units)}
    pairs = list(answers.items()) if isinstance(answers, Mapping) else list(answers)
    out = []
    for key, value in pairs:
        if int(key) not in wanted:
            out.append((int(key), value))
            continue
        try:
            out.append((int(key), task.restrict_annotation(value, wanted[int(key)])))
        except (IndexError, ValueError, TypeError) as err:
            raise AnnotationError(f'sample {key}: the answer does not cover the queried units '
                                  f'({err}): answer at the size of the exported query') from None
    return out


@ORACLES.register_module()
class FileOracle(BaseOracle):
    """Exports a query to ``work_dir/queries/round_NNN/`` and waits for its answers.

    The export is the task's native format (``BaseTask.export_query``: images and a CSV for
    classification, images and a COCO file for detection, images and masks of the pixels to
    label for segmentation). People label it with any tool; ``tools/import_labels.py``
    validates their answers and stores them as ``answers.<ext>`` in the same folder, and
    ``--resume`` continues the run. Answers placed there by hand are validated the same way
    when the run resumes.

    ``query.json`` in the folder lists the round, the queried ``sample_ids``, for partial
    queries the ``units`` (flat indices per sample), and what the task's export adds to it
    (e.g. file names).

    Args:
        folder: Where queries go, relative to the work directory.
        export_options: Keyword arguments of the task's ``export_query``, e.g.
            ``dict(pre_annotations=False)`` for detection.
    """

    takes_answer_files = True

    def __init__(self, folder: str = 'queries', export_options: dict | None = None) -> None:
        self.folder = folder
        self.export_options = dict(export_options or {})
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

    def import_answers(self, task: BaseTask, path: Path, round_idx: int,
                       sample_ids: np.ndarray, units: list[np.ndarray] | None) -> int:
        """Validate people's answers file and store it as the query's ``answers.<ext>``.

        Nothing is stored unless every answer is valid (queried ids only, each once, all of
        them, and accepted by the task). For a partial query the answers are first cut down
        to the queried units (what they say elsewhere is ignored), so the task validates
        exactly the labels of the units that were asked for.
        """
        path = Path(path)
        try:
            read = task.read_answers(path)
            if units is not None:
                read = restrict_answers(task, read, sample_ids, units)
            answers = validate_answers(task, sample_ids, read)
        except (AnnotationError, ValueError) as err:
            raise naming_file(path, err) from None
        folder = self.query_dir(round_idx)
        folder.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        target = folder / f'answers{path.suffix}'
        atomic_write(target, lambda f: f.write(data))
        for old in folder.glob('answers.*'):  # an earlier import in another format
            if old != target:
                old.unlink()
        return len(answers)

    def annotate(self, task: BaseTask, sample_ids: np.ndarray, round_idx: int) -> Answers:
        return self._ask(task, sample_ids, None, round_idx)

    def annotate_units(self, task: BaseTask, sample_ids: np.ndarray,
                       units: Sequence[np.ndarray], round_idx: int) -> Answers:
        """Export the images with masks of the units to label; answers are cut to them."""
        return self._ask(task, sample_ids, units, round_idx)

    def _ask(self, task: BaseTask, sample_ids: np.ndarray,
             units: Sequence[np.ndarray] | None, round_idx: int) -> Answers:
        folder = self.query_dir(round_idx)
        ids = [int(i) for i in sample_ids]
        answers = self.answers_file(folder) if folder.is_dir() else None
        if answers is not None:
            try:
                read = task.read_answers(answers)
            except (AnnotationError, ValueError) as err:
                raise naming_file(answers, err) from None
            return read if units is None else restrict_answers(task, read, ids, units)
        listing = query_listing(ids, units, round_idx)
        if is_main_process() and not self._exported(folder / QUERY_LIST, listing):
            export_query_folder(task, listing, folder, units, **self._export_options(task))
        barrier()  # the export is complete before any rank stops
        raise QueryPending(round_idx, folder, len(ids))

    def _export_options(self, task: BaseTask) -> dict[str, Any]:
        """``export_options``, checked against the task's ``export_query``."""
        options = dict(self.export_options)
        valid = [name for name in inspect.signature(task.export_query).parameters
                 if name not in ('sample_ids', 'folder', 'units', 'predictions')]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f'oracle.export_options.{unknown[0]} is not an option of '
                              f'{type(task).__name__}.export_query; valid: '
                              f"{', '.join(valid) or '(none)'}")
        return options

    @staticmethod
    def _exported(listed: Path, listing: dict[str, Any]) -> bool:
        """Whether ``listed`` already describes this exact query (ids and units)."""
        if not listed.is_file():
            return False
        try:
            old = json.loads(listed.read_text())
        except ValueError:
            return False
        return all(old.get(key) == listing.get(key) for key in ('sample_ids', 'units'))
