"""Query mode: score images nobody has labeled with a trained model; export the picks.

Installed as ``saal-query``; in a checkout ``python tools/query.py``. Example::

    python tools/train_al.py configs/cls/saal_cnn_digits.py --work-dir work_dirs/digits
    python tools/query.py configs/cls/saal_cnn_digits.py \\
        --checkpoint work_dirs/digits/rounds/round_021/model.pth \\
        --data my_unlabeled_images/ --budget 20 --out work_dirs/digits_query

The config's scorer and selector pick ``--budget`` images of ``--data`` (a folder, any
depth); ``--out`` receives ``images/`` (each pick as ``sample_<id>.png`` and ``query.csv``,
the file oracle's export: fill in ``label``), ``selected.csv`` (rank, sample id, original
file, score) and ``report.html`` (the picks and the score histogram). Without ``--data``
the config's own pool is queried. A killed query rerun with the same arguments continues
and picks the same images. Classification only, for now.
"""
from __future__ import annotations

import argparse
import os.path as osp
from pathlib import Path

from mmengine.logging import MMLogger

from ..cli import load_config, parse_cfg_options, run_reporting_errors
from ..core.errors import ConfigError
from ..core.io import sha256_file
from ..engine.config_check import build_checked
from ..engine.query import load_model_file, run_query
from ..engine.store import config_hash, plain_config
from ..hooks.report import query_report
from ..registry import SCORERS, SELECTORS, TASKS

#: Tasks whose config can take a folder of unlabeled images as ``--data``.
FOLDER_TASKS = ('ClassificationTask',)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Pick the images to label next with a '
                                     'trained model (no training)')
    parser.add_argument('config', help='the config the model was trained with')
    parser.add_argument('--checkpoint', required=True,
                        help="the trained model: a run's rounds/round_NNN/model.pth")
    parser.add_argument('--data', help='folder of unlabeled images (default: the '
                        "config's own pool)")
    parser.add_argument('--budget', type=int, required=True, help='images to pick')
    parser.add_argument('--out', help='output folder (default: work_dirs/<config>_query)')
    parser.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                        help='the --cfg-options the model was trained with')
    parser.add_argument('--seed', type=int, help="seed of the scorer's and selector's random "
                        "streams (default: the config's seed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> int:
        cfg = load_config(args.config, cfg_options=parse_cfg_options(args.cfg_options),
                          seed=args.seed)
        out = Path(args.out or osp.join(
            'work_dirs', f'{osp.splitext(osp.basename(args.config))[0]}_query'))
        MMLogger.get_instance('saal_tasks_query', log_level='INFO')
        trained_with = config_hash(plain_config(cfg))
        task_cfg = dict(cfg.task)
        if args.data is not None:
            if task_cfg.get('type') not in FOLDER_TASKS:
                raise ConfigError(f'--data with {task_cfg.get("type")}: query mode reads '
                                  f'folders for {", ".join(FOLDER_TASKS)} so far; leave '
                                  "--data out to query the config's own pool")
            task_cfg['dataset'] = dict(type='UnlabeledImagesData', root=args.data,
                                       like=task_cfg['dataset'])
        task = build_checked(TASKS, task_cfg, 'task')
        scorer = build_checked(SCORERS, cfg.scorer, 'scorer')
        selector = build_checked(SELECTORS, cfg.selector, 'selector')
        model = load_model_file(task, args.checkpoint)
        keys = task.sample_keys() or {}
        sources = {sid: key.rsplit(' ', 2)[0] for sid, key in keys.items()}
        outcome = run_query(
            task, scorer, selector, model, args.budget, out, seed=int(cfg.get('seed', 0)),
            depends_on={'config': trained_with, 'checkpoint': sha256_file(args.checkpoint),
                        'data': str(Path(args.data).resolve()) if args.data else None},
            sources=sources)
        page = query_report(out, task, outcome.result.sample_ids, outcome.result.scores,
                            outcome.sample_ids, outcome.scores, sources,
                            f'query: {osp.basename(args.config)}')
        print(f'picked {len(outcome.sample_ids)} of {len(outcome.result.sample_ids)}: '
              f'{outcome.out_dir}/selected.csv (rank, sample id, file, score); images to '
              f'label in {outcome.out_dir}/images (fill in query.csv); report {page}')
        return 0

    return run_reporting_errors(run)
