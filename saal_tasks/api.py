"""Active learning from Python (notebooks, your own labelling loop): the ``Learner``.

In the spirit of modAL and baal: build a learner from a config, ask it what to label, teach
it the answers, look at the report::

    from saal_tasks.api import Learner

    learner = Learner.from_config('configs/cls/saal_cnn_digits.py', work_dir='work_dirs/nb')
    query = learner.query()                  # trains and scores up to the next query
    learner.teach({i: my_label(i) for i in query.sample_ids})
    ...                                      # query / teach until query() returns None
    learner.report()                         # work_dirs/nb/report.html

It is the command-line run underneath (``tools/train_al.py`` with a file oracle): the same
loop, stages, checks and files, so a learner resumes where a previous one (or a killed
notebook) stopped, and ``tools/import_labels.py`` / ``--resume`` work on the same work dir.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from mmengine.config import Config

from .cli import load_config
from .core.errors import ConfigError
from .engine import ActiveLearningLoop
from .engine.manifest import MANIFEST_NAME
from .hooks.report import run_report


@dataclass(frozen=True)
class Query:
    """What the learner asks to have labeled.

    Attributes:
        round: The round asking (0 = the initial labeled set).
        sample_ids: The samples to label, ``[K]``.
        folder: The exported query (images and ``query.csv`` for classification), for
            labelling with a tool instead of :meth:`Learner.teach` with a dict.
        units: Per sample, the units asked for (partial annotation), else ``None``.
    """

    round: int
    sample_ids: np.ndarray
    folder: Path
    units: list[np.ndarray] | None = None


class Learner:
    """An active-learning run driven from Python: :meth:`query`, :meth:`teach`, repeat.

    Args:
        loop: A loop whose oracle takes answer files (``FileOracle``); use
            :meth:`from_config`.
    """

    def __init__(self, loop: ActiveLearningLoop) -> None:
        if not loop.oracle.takes_answer_files:
            raise ConfigError(f'a Learner needs an oracle that takes answers, got '
                              f"{type(loop.oracle).__name__}: use oracle=dict(type='FileOracle')"
                              ' (Learner.from_config sets it)')
        self.loop = loop

    @classmethod
    def from_config(cls, config: str | Path | Config | Mapping[str, Any], *,
                    work_dir: str | Path | None = None,
                    cfg_options: Mapping[str, Any] | None = None,
                    seed: int | None = None) -> 'Learner':
        """A learner from a config file (or a ``Config``/dict), answered by you.

        Args:
            config: Config file path or config object.
            work_dir: Where the run's files go (default: ``work_dirs/<config name>``).
            cfg_options: Overrides, as ``--cfg-options`` (``{'al.num_rounds': 3}``).
            seed: Overrides ``seed``.

        The config's oracle is replaced by ``FileOracle``: the answers come from
        :meth:`teach`. A work dir that already holds this run is continued.
        """
        if isinstance(config, (str, Path)):
            cfg = load_config(str(config), work_dir=None if work_dir is None else str(work_dir),
                              cfg_options=dict(cfg_options or {}), seed=seed)
        else:
            cfg = config.copy() if isinstance(config, Config) else Config(dict(config))
            if cfg_options:
                cfg.merge_from_dict(dict(cfg_options))
            if work_dir is not None:
                cfg.work_dir = str(work_dir)
            if seed is not None:
                cfg.seed = seed
        if (cfg.get('oracle') or {}).get('type') != 'FileOracle':
            cfg.oracle = dict(type='FileOracle')
        return cls(ActiveLearningLoop.from_cfg(cfg))

    @property
    def work_dir(self) -> Path:
        """The run's folder."""
        return self.loop.work_dir

    @property
    def records(self) -> list[dict[str, Any]]:
        """One metrics record per finished round (``metrics.jsonl``)."""
        return list(self.loop.records)

    def query(self) -> Query | None:
        """Train, evaluate and score up to the next query; ``None`` once the run is done.

        Returns:
            The samples to label next (the initial set first).
        """
        started = (self.work_dir / MANIFEST_NAME).exists()
        self.loop.run(resume=started)
        if self.loop.pending is None:
            return None
        round_idx, ids, units = self.loop.pending_query()
        return Query(round_idx, np.asarray(ids, dtype=np.int64), self.loop.pending.folder,
                     units)

    def teach(self, answers: Mapping[int, Any] | str | Path) -> int:
        """Give the answers to the waiting query: every queried sample, once.

        Args:
            answers: ``{sample_id: annotation}`` (classification: the class index), or a
                file in the task's answers format (CSV/JSON, COCO, a zip of label PNGs).

        Returns:
            How many answers were taken.

        Raises:
            AnnotationError: An answer is missing, extra, or not valid for the task; nothing
                is kept.
        """
        if isinstance(answers, (str, Path)):
            return self.loop.import_answers(answers)[1]
        encoded = {str(int(k)): self.loop.task.encode_annotation(v) for k, v in answers.items()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / 'answers.json'
            path.write_text(json.dumps(encoded))
            return self.loop.import_answers(path)[1]

    def report(self) -> Path:
        """Write and return ``report.html`` for the rounds finished so far."""
        return run_report(self.work_dir, self.loop.task, self.loop.records,
                          self.loop.run_name)


__all__ = ['Learner', 'Query']
