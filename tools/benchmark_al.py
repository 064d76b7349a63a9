"""Run a comparison of active-learning strategies under one protocol, resumably.

Every combination of strategy × optimizer × seed is one cell, run by the same loop as
``tools/train_al.py`` in its own folder; a rerun skips finished cells and resumes interrupted
ones. The report (results JSON, Markdown table, learning curves, penalty matrices) is
written from whatever cells have finished.

Example::

    python tools/benchmark_al.py configs/sweeps/digits_table1.py --seeds 5
    python tools/benchmark_al.py configs/sweeps/digits_table1.py \\
        --strategies saal random entropy --optimizers adam --seeds 3 --work-dir work_dirs/x
    python tools/benchmark_al.py configs/cls/baselines/cifar10.py --export-configs out/
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import Config  # noqa: E402

from saal_tasks.benchmark import (SweepError, cell_config, cell_status, plan_cells,  # noqa: E402
                                  run_sweep, summarize, write_report)
from saal_tasks.benchmark.metrics import load_curve  # noqa: E402
from saal_tasks.cli import parse_cfg_options  # noqa: E402
from saal_tasks.core.errors import ConfigError, UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark active-learning strategies')
    parser.add_argument('config', help='sweep config (protocol + strategies + optimizers)')
    parser.add_argument('--strategies', nargs='+', help='strategy names (default: the config\'s '
                        'sweep.strategies)')
    parser.add_argument('--optimizers', nargs='+', help='optimizer names (default: the '
                        'config\'s sweep.optimizers)')
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument('--seeds', type=int, help='run seeds 0..N-1')
    seeds.add_argument('--seed-list', type=int, nargs='+', help='run these seeds')
    parser.add_argument('--work-dir', help='sweep folder (default: work_dirs/<config name>)')
    parser.add_argument('--workers', type=int, default=1, help='cells run in parallel '
                        '(processes); default 1')
    parser.add_argument('--threads', type=int, help='torch threads per process (default: '
                        'torch\'s choice with --workers 1, else 1); on a busy machine 1 is '
                        'much faster for small models')
    parser.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                        help='override entries of the sweep config')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--report-only', action='store_true',
                      help='write the report from the finished cells, run nothing')
    mode.add_argument('--dry-run', action='store_true', help='list the cells and their status')
    mode.add_argument('--export-configs', metavar='DIR',
                      help='write each cell\'s standalone config (for tools/train_al.py)')
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> Config:
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config} does not exist')
    options = parse_cfg_options(args.cfg_options)
    try:
        cfg = Config.fromfile(args.config)
        if options:
            cfg.merge_from_dict(options)
    except (SyntaxError, ImportError, KeyError, ValueError, TypeError) as err:
        raise ConfigError(f'cannot read config {args.config}: {err}') from None
    return cfg


def report(cfg: Config, cells, work_dir: Path, expected: int, extra: dict) -> Path:
    """Aggregate the finished cells and write the report files; returns the table path."""
    metric = (cfg.get('sweep') or {}).get('metric', 'accuracy')
    curves = {c: load_curve(c, metric) for c in cells if cell_status(cfg, c) == 'done'}
    summary = summarize(curves)
    strategies = list(dict.fromkeys(c.strategy for c in cells))
    optimizers = list(dict.fromkeys(c.optimizer for c in cells))
    labels = dict((cfg.get('sweep') or {}).get('labels', {}))
    cell_walls = [json.loads((Path(c.work_dir) / 'cell.json').read_text())['wall_s']
                  for c in curves]
    extra = {**extra, 'cells_planned': len(cells), 'cells_finished': len(curves),
             'cell_wall_s_total': round(sum(cell_walls), 1)}
    paths = write_report(work_dir, summary, strategies, optimizers, expected, metric, extra,
                         labels)
    return paths['markdown']


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args)
        work_dir = Path(args.work_dir or osp.join(
            'work_dirs', osp.splitext(osp.basename(args.config))[0]))
        seeds = (list(range(args.seeds)) if args.seeds is not None else args.seed_list)
        cells = plan_cells(cfg, work_dir, args.strategies, args.optimizers, seeds)
        if args.workers < 1:
            raise SweepError(f'--workers must be >= 1, got {args.workers}')
        expected = len({c.seed for c in cells})
        if args.dry_run:
            for cell in cells:
                print(f'{cell_status(cfg, cell):8s} {cell.name}  ->  {cell.work_dir}')
            return 0
        if args.export_configs:
            out = Path(args.export_configs)
            for cell in cells:
                target = out / f'{cell.strategy}_{cell.optimizer}_seed{cell.seed}.py'
                target.parent.mkdir(parents=True, exist_ok=True)
                cell_config(cfg, cell).dump(str(target))
            print(f'wrote {len(cells)} configs to {out}')
            return 0
        extra = {'config': args.config, 'command': ' '.join(sys.argv)}
        if args.threads is not None and args.workers == 1:
            import torch
            torch.set_num_threads(args.threads)
        if not args.report_only:
            start = time.perf_counter()
            results = run_sweep(cfg, cells, workers=args.workers, threads=args.threads)
            wall = time.perf_counter() - start
            failed = [r for r in results if 'error' in r]
            print(f'sweep wall time of this invocation: {wall:.1f} s; '
                  f'{len(results) - len(failed)} of {len(results)} cells finished')
            extra['last_invocation_wall_s'] = round(wall, 1)
        table = report(cfg, cells, work_dir, expected, extra)
        print(table.read_text())
        print(f'report written to {work_dir}')
        if not args.report_only and any('error' in r for r in results):
            return 1
    except (UserError, FileNotFoundError) as err:
        # Input mistakes (config, names, changed protocol): one line. Anything else is a bug
        # and keeps its traceback. SAAL_DEBUG=1 shows the traceback of these too.
        if os.environ.get('SAAL_DEBUG'):
            raise
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
