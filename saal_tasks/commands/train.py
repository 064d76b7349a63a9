"""Run a sharpness-aware active-learning experiment from a config file.

Installed as ``saal-train``; in a checkout ``python tools/train_al.py``. Example::

    python tools/train_al.py configs/cls/saal_cnn_digits.py
    python tools/train_al.py configs/cls/saal_cnn_digits.py --resume
    python tools/train_al.py CONFIG --cfg-options al.num_rounds=5 scorer.mode=diff --seed 1

Exit codes: 0 done, 2 bad input (one ``error:`` line), 3 waiting for human labels, 130
stopped by Ctrl-C (one line naming the round and the exact command that continues the run).
"""
from __future__ import annotations

import argparse
import os.path as osp
from pathlib import Path

from mmengine.logging import MMLogger, print_log

from ..cli import (environment_header, import_command, load_config, parse_cfg_options,
                            resume_command, run_reporting_errors)
from ..core.allocator import keep_freed_memory
from ..core.dist import barrier, init_launcher, rank_and_world
from ..engine import ActiveLearningLoop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Sharpness-aware active learning')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='folder for state, logs and outputs '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                        help='override config entries, e.g. al.num_rounds=5 scorer.mode=diff')
    parser.add_argument('--resume', action='store_true',
                        help='continue the run in the work dir at its first unfinished stage')
    parser.add_argument('--allow-config-change', action='store_true',
                        help='with --resume, accept a config that differs from the one the '
                        'run started with (recorded in the manifest)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help="'pytorch' when started by torchrun: distributed training and "
                        'sharded scoring')
    parser.add_argument('--seed', type=int, help='seed of every random choice (default: '
                        'the config\'s seed)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started: dict = {}  # what an interruption reports, filled in as the run gets going

    def interrupted() -> str:
        loop = started.get('loop')
        if loop is None:
            return 'interrupted before the run started: nothing was written'
        try:
            manifest = loop.store.manifest
        except RuntimeError:  # stopped before the run's first state file
            manifest = None
        if manifest is None:
            where = 'before the first stage finished'
        elif 'commit' in manifest.stages:
            where = f'in round {manifest.round + 1} (before its first stage finished)'
        else:
            where = f'in round {manifest.round} (stages finished: {", ".join(manifest.stages)})'
        command = resume_command(args.config, started['work_dir'], args.cfg_options,
                                 args.seed, args.launcher)
        return (f'interrupted {where}; every finished stage is kept: continue with: '
                f'{command}')

    def run() -> int:
        keep_freed_memory()  # CPU training and scoring reuse big buffers (see the module)
        cfg = load_config(args.config, work_dir=args.work_dir,
                          cfg_options=parse_cfg_options(args.cfg_options),
                          seed=args.seed)
        work_dir = Path(cfg.work_dir)
        init_launcher(args.launcher)
        rank, _ = rank_and_world()
        loop = ActiveLearningLoop.from_cfg(cfg)
        started.update(loop=loop, work_dir=str(work_dir))
        # Writable, not held by another process, something to resume: all before run.log.
        resume = loop.prepare(args.resume)
        barrier()  # every rank has checked before rank 0 writes anything
        # Rank 0 logs (and writes); the other ranks only report warnings.
        MMLogger.get_instance('saal_tasks', log_file=str(work_dir / 'run.log') if rank == 0
                              else None, log_level='INFO' if rank == 0 else 'WARNING')
        print_log(environment_header(), logger='current')
        if not resume and rank == 0:
            # A resumed run keeps the config it was started with (its hash is checked).
            cfg.dump(str(work_dir / osp.basename(args.config)))
        records = loop.run(resume=resume, allow_config_change=args.allow_config_change)
        if loop.pending is not None:
            if rank == 0:
                print(f'waiting for labels: {loop.pending}')
                print('import the answers with: ' + import_command(
                    args.config, str(work_dir), args.cfg_options, args.seed))
            return 3
        if records and rank == 0:
            last = records[-1]
            metric = {k: v for k, v in last.items() if k not in ('round', 'num_labeled')
                      and not k.endswith('_s') and not k.startswith('num_')}
            print(f'finished: {len(records)} rounds, {last["num_labeled"]} labeled, {metric}; '
                  f'outputs in {cfg.work_dir}')
        return 0

    return run_reporting_errors(run, interrupted)

