"""Import people's answers to a query exported by ``oracle = dict(type='FileOracle')``.

Installed as ``saal-import``; in a checkout ``python tools/import_labels.py``. Example::

    python tools/train_al.py CONFIG                    # exits with code 3: query exported
    # ... label work_dirs/<name>/queries/round_001/ with any tool ...
    python tools/import_labels.py CONFIG answers.csv   # validated, stored for the run
    python tools/train_al.py CONFIG --resume           # continues with the answers

Answers: classification a CSV or JSON; detection a COCO JSON (or CVAT's COCO zip);
segmentation a zip of ``sample_<id>_label.png`` train-id PNGs (see docs/human_labels.md).
Every answer is checked (queried ids only, each once, all of them, classes in range; for
region queries only the queried pixels are read) before anything is stored; a rejected import
changes nothing.
"""
from __future__ import annotations

import argparse

from ..cli import (load_config, parse_cfg_options, resume_command,
                            run_reporting_errors)
from ..engine import ActiveLearningLoop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Import answers to an exported query')
    parser.add_argument('config', help='the config of the run')
    parser.add_argument('answers', help='answers file in the task\'s format: CSV or JSON '
                        '(classification), COCO JSON or zip (detection), zip of label PNGs '
                        '(segmentation)')
    parser.add_argument('--work-dir', help='the run\'s work dir (default: as in train_al.py)')
    parser.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                        help='the --cfg-options the run was started with')
    parser.add_argument('--seed', type=int, help='the --seed the run was started with')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> int:
        cfg = load_config(args.config, work_dir=args.work_dir,
                          cfg_options=parse_cfg_options(args.cfg_options), seed=args.seed)
        loop = ActiveLearningLoop.from_cfg(cfg)
        round_idx, count = loop.import_answers(args.answers)
        # The run's own --cfg-options: without them the resume sees "a different config".
        print(f'imported {count} answers for round {round_idx}; continue with: '
              f'{resume_command(args.config, cfg.work_dir, args.cfg_options, args.seed)}')
        return 0

    return run_reporting_errors(run)

