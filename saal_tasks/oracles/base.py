"""The oracle interface: the loop asks, an oracle answers (now, or later from files)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    # Hints only: saal_tasks.core imports the oracles (a cycle at import time).
    from ..core.task import BaseTask

#: What an oracle returns: sample id -> annotation, or (id, annotation) pairs (which lets the
#: loop detect an id answered twice).
Answers = Mapping[int, Any] | Iterable[tuple[int, Any]]


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
    """

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
        from ..core.errors import ConfigError  # here: saal_tasks.core imports this module
        raise ConfigError(f'{type(self).__name__} cannot answer queries for parts of samples '
                          "(pixels or regions) yet: use oracle = dict(type='SimulatedOracle')")
