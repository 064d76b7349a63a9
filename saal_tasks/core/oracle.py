"""The oracle contract: the loop asks, an oracle answers (now, or later from files)."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from .errors import AnnotationError, ConfigError
from .task import BaseTask

#: What an oracle returns: sample id -> annotation, or (id, annotation) pairs (which lets the
#: loop detect an id answered twice).
Answers = Mapping[int, Any] | Iterable[tuple[int, Any]]


#: The listing of an exported query, inside its folder: ``sample_ids`` (and ``units``), the
#: round when a run made it, and what the task's export added (file names, image size).
QUERY_LIST = 'query.json'
#: Keys of the listing that the exporter owns (a task's export cannot replace them).
LISTING_KEYS = ('round', 'sample_ids', 'units')


def query_listing(sample_ids: Sequence[int] | np.ndarray, units: Sequence[np.ndarray] | None,
                  round_idx: int | None = None) -> dict[str, Any]:
    """The exporter's part of :data:`QUERY_LIST` (ids, units, round when there is one)."""
    listing: dict[str, Any] = {} if round_idx is None else {'round': round_idx}
    listing['sample_ids'] = [int(i) for i in sample_ids]
    if units is not None:
        listing['units'] = [np.asarray(u, dtype=np.int64).tolist() for u in units]
    return listing


def export_query_folder(task: BaseTask, listing: dict[str, Any], folder: Path,
                        units: Sequence[np.ndarray] | None = None,
                        **options: Any) -> None:
    """Export a query into ``folder``: the task's files and the :data:`QUERY_LIST` listing.

    The export goes into a fresh sibling folder that is then renamed, so a query folder is
    complete or absent (an interrupted export is redone, never half-read).

    Args:
        task: The task (:meth:`~saal_tasks.core.task.AnnotationFiles.export_query`).
        listing: :func:`query_listing` of the query (not modified).
        folder: The query folder (replaced).
        units: Per sample, the flat unit indices to label (partial annotation).
        **options: Keyword options of the task's ``export_query`` (``predictions``, ...).
    """
    folder = Path(folder)
    staging = folder.with_name(folder.name + '.partial')
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if units is not None:
        options['units'] = [np.asarray(u, dtype=np.int64) for u in units]
    added = task.export_query(np.asarray(listing['sample_ids'], dtype=np.int64), staging,
                              **options)
    full = dict(listing)
    if isinstance(added, Mapping):
        full.update({k: v for k, v in added.items() if k not in LISTING_KEYS})
    (staging / QUERY_LIST).write_text(json.dumps(full, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


class QueryPending(Exception):
    """The query was handed to people; the run stops until their answers are imported.

    Not an error: ``tools/train_al.py`` prints where the query is and exits with code 3.
    """

    def __init__(self, round_idx: int, folder: Path, num_samples: int) -> None:
        self.round_idx = round_idx
        self.folder = Path(folder)
        self.num_samples = num_samples
        super().__init__(
            f'round {round_idx}: {num_samples} samples to label, exported to {folder}; label '
            'them, then run tools/import_labels.py CONFIG ANSWERS (or put the answers there) '
            'and continue with --resume')


class BaseOracle:
    """Answers queries with annotations.

    The loop calls :meth:`attach` once with the run's folder, then :meth:`annotate` for each
    query (round 0 is the initial labeled set). An oracle either returns the answers or
    raises :class:`QueryPending`; the loop validates every answer before it is persisted.
    Oracles that take answers from files also implement :meth:`import_answers`.

    Attributes:
        reveals_ground_truth: Whether the answers are the dataset's ground truth (a
            simulation); diagnostics may then compare pseudo-labels with the truth.
        takes_answer_files: Whether :meth:`import_answers` is implemented (people's answers
            come back as files).
    """

    reveals_ground_truth: ClassVar[bool] = False
    takes_answer_files: ClassVar[bool] = False

    def attach(self, work_dir: Path) -> None:
        """Called once before the run with its work directory."""

    def annotate(self, task: BaseTask, sample_ids: np.ndarray, round_idx: int) -> Answers:
        """Annotations of ``sample_ids`` (shape ``[K]``) queried in round ``round_idx``."""
        raise NotImplementedError

    def annotate_units(self, task: BaseTask, sample_ids: np.ndarray,
                       units: Sequence[np.ndarray], round_idx: int) -> Answers:
        """Annotations of some units of each sample (partial annotation: pixels of images).

        Args:
            task: The task (it cuts a full annotation down to units).
            sample_ids: Queried samples, shape ``[K]``.
            units: Per queried sample, flat indices of the units to annotate.
            round_idx: The round that asks.

        Returns:
            Per sample, the annotation of exactly those units (the task's partial format).
        """
        raise ConfigError(f'{type(self).__name__} cannot answer queries for parts of samples '
                          "(pixels or regions) yet: use oracle = dict(type='SimulatedOracle')")

    def import_answers(self, task: BaseTask, path: Path, round_idx: int,
                       sample_ids: np.ndarray, units: list[np.ndarray] | None) -> int:
        """Validate a file of answers to the waiting query and keep it for ``--resume``.

        Args:
            task: The task (reads and validates the answers).
            path: The answers file.
            round_idx: The round whose query waits.
            sample_ids: The queried ids, ``[K]``.
            units: Per queried sample, the units asked for (partial queries), else ``None``.

        Returns:
            The number of answers imported.
        """
        raise self.no_answer_files()

    def no_answer_files(self) -> ConfigError:
        """The error of an oracle that takes no answer files."""
        return ConfigError(f"the config's oracle is {type(self).__name__}; importing answers "
                          "needs oracle = dict(type='FileOracle')")


def validate_answers(task: BaseTask, sample_ids: np.ndarray, answers: Answers) -> dict[int, Any]:
    """Check an oracle's answers against the query, then by the task.

    Args:
        task: Validates the annotations themselves (e.g. class range).
        sample_ids: The queried ids, ``[K]``.
        answers: The oracle's answers.

    Returns:
        ``{sample id: annotation}`` for exactly the queried ids.

    Raises:
        AnnotationError: An id answered twice, not queried, or not answered; or the task
            refused an annotation.
    """
    pairs = list(answers.items()) if isinstance(answers, Mapping) else list(answers)
    queried = set(int(i) for i in sample_ids)
    keys = [int(k) for k, _ in pairs]
    duplicated = sorted(k for k, n in Counter(keys).items() if n > 1)
    if duplicated:
        raise AnnotationError(f'the oracle answered ids {duplicated[:5]} more than once: '
                              'give exactly one annotation per queried id')
    unknown = sorted(set(keys) - queried)
    if unknown:
        raise AnnotationError(f'the oracle answered ids {unknown[:5]} that were not '
                              'queried: answer only the queried ids')
    missing = sorted(queried - set(keys))
    if missing:
        raise AnnotationError(f'the oracle did not answer queried ids {missing[:5]}: '
                              'annotate every queried id')
    result = {int(k): v for k, v in pairs}
    task.validate_annotations(result)
    return result
