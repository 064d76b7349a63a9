"""Active learning from Python (notebooks, your own labelling loop): the ``Learner``.

In the spirit of modAL and baal: build a learner from a config, ask it what to label, teach
it the answers, look at the report::

    from saal_tasks.api import Learner

    learner = Learner.from_config('configs/cls/saal_cnn_digits.py', work_dir='work_dirs/nb')
    query = learner.query()                  # trains and scores up to the next query
    learner.teach({i: my_label(i) for i in query.sample_ids})
    ...                                      # query / teach until query() returns None
    learner.report()                         # work_dirs/nb/report.html

A trained model and data nobody has labeled need no run (query mode, ``tools/query.py``)::

    from saal_tasks.api import query_with_model

    picks = query_with_model('configs/cls/saal_cnn_digits.py', 'work_dirs/nb/rounds/'
                             'round_021/model.pth', data='my_images/', budget=20,
                             out_dir='work_dirs/my_query')
    picks.sample_ids, picks.report          # the picks, work_dirs/my_query/report.html

The learner is the command-line run underneath (``tools/train_al.py`` with a file oracle): the same
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
from .core.io import sha256_file
from .engine import ActiveLearningLoop
from .engine.config_check import build_checked
from .engine.manifest import MANIFEST_NAME
from .engine.query import QueryOutcome, load_model_file, run_query
from .engine.store import config_hash, plain_config
from .hooks.report import query_report, run_report
from .registry import SCORERS, SELECTORS, TASKS


def _config(config: str | Path | Config | Mapping[str, Any], work_dir: str | Path | None,
            cfg_options: Mapping[str, Any] | None, seed: int | None) -> Config:
    """A config from a file (overrides applied as on the command line) or an object."""
    if isinstance(config, (str, Path)):
        return load_config(str(config), work_dir=None if work_dir is None else str(work_dir),
                           cfg_options=dict(cfg_options or {}), seed=seed)
    cfg = config.copy() if isinstance(config, Config) else Config(dict(config))
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    if seed is not None:
        cfg.seed = seed
    return cfg


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
        cfg = _config(config, work_dir, cfg_options, seed)
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


def query_with_model(config: str | Path | Config | Mapping[str, Any],
                     checkpoint: str | Path, *, data: str | Path | None = None,
                     budget: int | None = None, out_dir: str | Path | None = None,
                     cfg_options: Mapping[str, Any] | None = None,
                     seed: int | None = None) -> QueryOutcome:
    """Query mode: pick what to label in unlabeled data with a trained model (no training).

    Args:
        config: The config the model was trained with (file or object).
        checkpoint: The model: a run's ``rounds/round_NNN/model.pth`` or an mmengine
            checkpoint.
        data: Unlabeled data the task reads (a folder of images; for detection also a COCO
            file of images); default the config's own pool.
        budget: Samples to pick; with a unit selector (segmentation's regions) the best
            ``budget`` images, default all.
        out_dir: Output folder (default ``work_dirs/<config name>_query``); a killed query
            rerun with the same arguments continues there.
        cfg_options: The overrides the model was trained with (``--cfg-options``).
        seed: Overrides ``seed`` (the scorer's and selector's random streams).

    Returns:
        The picks (``sample_ids``, ``scores``, ``units``), every candidate's scores, the
        model's predictions for the picks and ``report`` (``out_dir/report.html``).

    Raises:
        ConfigError: A config, checkpoint, data or budget that does not fit (one line).
        FileNotFoundError: The checkpoint or the data does not exist.
        ResumeError: ``out_dir`` holds another query.
    """
    cfg = _config(config, None, cfg_options, seed)
    name = Path(config).stem if isinstance(config, (str, Path)) else 'config'
    out = Path(out_dir) if out_dir is not None else Path('work_dirs') / f'{name}_query'
    task_cfg = dict(cfg.task)
    if data is not None:
        task_type = TASKS.get(task_cfg.get('type'))
        if task_type is None:
            raise ConfigError(f'task.type {task_cfg.get("type")!r} is not a registered task: '
                              'check the config')
        task_cfg = task_type.query_config(task_cfg, str(data))
    task = build_checked(TASKS, task_cfg, 'task')
    scorer = build_checked(SCORERS, cfg.scorer, 'scorer')
    selector = build_checked(SELECTORS, cfg.selector, 'selector')
    model = load_model_file(task, checkpoint)
    sources = task.sample_files(task.sample_ids())
    outcome = run_query(
        task, scorer, selector, model, budget, out, seed=int(cfg.get('seed', 0)),
        depends_on={'config': config_hash(plain_config(cfg)),
                    'checkpoint': sha256_file(checkpoint),
                    'data': str(Path(data).resolve()) if data is not None else None},
        sources=sources, unit_chunk=cfg.get('al', {}).get('unit_chunk', 16))
    num_units = None if outcome.units is None else int(sum(len(u) for u in outcome.units))
    outcome.report = query_report(
        out, task, outcome.result.sample_ids, outcome.result.scores, outcome.sample_ids,
        outcome.scores, sources, f'query: {name}', outcome.predictions, num_units)
    return outcome


__all__ = ['Learner', 'Query', 'query_with_model']
