"""Running the cells of a sweep, each resumable, the sweep restartable at any point.

A cell is *done* when its folder holds ``cell.json`` (written after the loop returned) for
the same config hash; a done cell is never run again. A cell that was interrupted is resumed
through the loop's own resume (``run(resume=True)``), so it ends with the same labels as an
uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from mmengine.config import Config
from mmengine.logging import MMLogger

from ..core.io import atomic_write_json
from ..engine import MANIFEST, ActiveLearningLoop, config_hash
from .plan import Cell, SweepError, cell_config

CELL_FILE = 'cell.json'
ERROR_FILE = 'error.txt'


def cell_status(cfg: Config, cell: Cell) -> str:
    """``'done'``, ``'partial'`` (a run to resume) or ``'todo'``.

    Raises:
        SweepError: The cell finished under another config (the protocol changed).
    """
    work_dir = Path(cell.work_dir)
    marker = work_dir / CELL_FILE
    if marker.exists():
        stored = json.loads(marker.read_text()).get('config_hash')
        if stored != config_hash(cell_config(cfg, cell)):
            raise SweepError(f'cell {cell.name} in {work_dir} finished under a different '
                             'config: restore the sweep config it was run with, delete the '
                             'cell folder, or choose another --work-dir')
        return 'done'
    return 'partial' if (work_dir / MANIFEST).exists() else 'todo'


def _cell_logger(cell: Cell) -> MMLogger:
    """A logger writing the cell's ``run.log``; only warnings reach the console."""
    name = f'benchmark:{cell.name}:{time.monotonic_ns()}'
    logger = MMLogger.get_instance(name, log_file=str(Path(cell.work_dir) / 'run.log'),
                                   log_level='INFO')
    for handler in logger.handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    return logger


def _close(logger: MMLogger) -> None:
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)


def run_cell(cfg: Config, cell: Cell) -> dict[str, Any]:
    """Run (or resume) one cell in this process and write its ``cell.json``.

    Returns:
        The content of ``cell.json``: the cell, its config hash, wall time and records.
    """
    cell_cfg = cell_config(cfg, cell)
    status = cell_status(cfg, cell)
    work_dir = Path(cell.work_dir)
    if status == 'done':
        return json.loads((work_dir / CELL_FILE).read_text())
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / ERROR_FILE).unlink(missing_ok=True)
    logger = _cell_logger(cell)
    start = time.perf_counter()
    try:
        if status == 'todo':
            cell_cfg.dump(str(work_dir / 'config.py'))
        records = ActiveLearningLoop.from_cfg(cell_cfg).run(resume=status == 'partial')
    finally:
        _close(logger)
    summary = {'strategy': cell.strategy, 'optimizer': cell.optimizer, 'seed': cell.seed,
               'config_hash': config_hash(cell_cfg), 'resumed': status == 'partial',
               'wall_s': round(time.perf_counter() - start, 2), 'records': records}
    atomic_write_json(work_dir / CELL_FILE, summary)
    return summary


def _worker(cfg_dict: dict, cell: Cell, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return _guarded(Config(cfg_dict), cell)


def _guarded(cfg: Config, cell: Cell) -> dict[str, Any]:
    """:func:`run_cell`, turning an exception into a failure record (other cells go on)."""
    try:
        return run_cell(cfg, cell)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - one failed cell must not stop the sweep
        text = traceback.format_exc()
        Path(cell.work_dir).mkdir(parents=True, exist_ok=True)
        (Path(cell.work_dir) / ERROR_FILE).write_text(text)
        return {'strategy': cell.strategy, 'optimizer': cell.optimizer, 'seed': cell.seed,
                'error': f'{type(err).__name__}: {err}'}


def run_sweep(cfg: Config, cells: list[Cell], workers: int = 1, threads: int | None = None,
              progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every cell not done yet; finished cells are skipped, interrupted ones resumed.

    Args:
        cfg: Sweep config.
        cells: Cells from :func:`plan_cells`.
        workers: Cells run at once (separate processes when > 1).
        threads: Torch threads per worker process (default: 1 when ``workers > 1``).
        progress: Receives one line per cell.

    Returns:
        One summary per cell (``cell.json`` content, or a record with ``error``).
    """
    statuses = {cell: cell_status(cfg, cell) for cell in cells}
    pending = [c for c in cells if statuses[c] != 'done']
    progress(f'{len(cells)} cells: {len(cells) - len(pending)} done, '
             f"{sum(statuses[c] == 'partial' for c in pending)} to resume, "
             f"{sum(statuses[c] == 'todo' for c in pending)} to start")
    results = {c: json.loads((Path(c.work_dir) / CELL_FILE).read_text())
               for c in cells if statuses[c] == 'done'}

    def report(cell: Cell, summary: dict[str, Any], index: int) -> None:
        results[cell] = summary
        if 'error' in summary:
            progress(f'[{index}/{len(pending)}] {cell.name}: FAILED ({summary["error"]}); '
                     f'traceback in {Path(cell.work_dir) / ERROR_FILE}')
        else:
            last = summary['records'][-1]
            metric = {k: v for k, v in last.items() if k not in ('round', 'num_labeled')
                      and not k.endswith('_s') and not k.startswith('num_')}
            progress(f'[{index}/{len(pending)}] {cell.name}: {metric} with '
                     f"{last['num_labeled']} labels ({summary['wall_s']:.1f} s)")

    if workers <= 1:
        for index, cell in enumerate(pending, 1):
            report(cell, _guarded(cfg, cell), index)
    else:
        context = get_context('spawn')  # no forked torch state in the workers
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_worker, cfg.to_dict(), cell, threads or 1): cell
                       for cell in pending}
            for index, future in enumerate(as_completed(futures), 1):
                report(futures[future], future.result(), index)
    return [results[c] for c in cells]
