"""Query mode: score images nobody has labeled with a trained model; export the picks.

Installed as ``saal-query``; in a checkout ``python tools/query.py``. Example::

    python tools/train_al.py configs/cls/saal_cnn_digits.py --work-dir work_dirs/digits
    python tools/query.py configs/cls/saal_cnn_digits.py \\
        --checkpoint work_dirs/digits/rounds/round_021/model.pth \\
        --data my_unlabeled_images/ --budget 20 --out work_dirs/digits_query

The config's scorer and selector pick ``--budget`` images of ``--data``: a folder of images
(any depth) for every task, or for detection also a COCO-format ``.json`` (``images`` and
``categories``, as COCO's ``image_info_unlabeled2017.json``). ``--out`` receives ``images/``,
the file oracle's export (classification: ``sample_<id>.png`` and ``query.csv``, fill in
``label``; detection: the images and ``query_coco.json`` with the model's boxes as
pre-annotations to correct; segmentation: each image and a mask of the regions to label),
``selected.csv`` (rank, sample id, original file, score) and ``report.html`` (the picks with
the model's predictions drawn, and the score histogram). Segmentation's region selector
chooses the regions of every image with its own per-image budget; ``--budget`` then keeps
the N best images (default: all). Without ``--data`` the config's own pool is queried. A
killed query rerun with the same arguments continues and picks the same images.
"""
from __future__ import annotations

import argparse

from mmengine.logging import MMLogger

from ..api import query_with_model
from ..cli import parse_cfg_options, run_reporting_errors
from ..core.allocator import keep_freed_memory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Pick the images to label next with a '
                                     'trained model (no training)')
    parser.add_argument('config', help='the config the model was trained with')
    parser.add_argument('--checkpoint', required=True,
                        help="the trained model: a run's rounds/round_NNN/model.pth")
    parser.add_argument('--data', help='folder of unlabeled images, or for detection a COCO '
                        "file (default: the config's own pool)")
    parser.add_argument('--budget', type=int, help='images to pick (required, except with a '
                        'unit selector: there the N best images, default all)')
    parser.add_argument('--out', help='output folder (default: work_dirs/<config>_query)')
    parser.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                        help='the --cfg-options the model was trained with')
    parser.add_argument('--seed', type=int, help="seed of the scorer's and selector's random "
                        "streams (default: the config's seed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> int:
        keep_freed_memory()  # scoring reuses big buffers, as in training (see the module)
        MMLogger.get_instance('saal_tasks_query', log_level='INFO')
        outcome = query_with_model(
            args.config, args.checkpoint, data=args.data, budget=args.budget, out_dir=args.out,
            cfg_options=parse_cfg_options(args.cfg_options), seed=args.seed)
        units = ('' if outcome.units is None
                 else f' ({sum(len(u) for u in outcome.units)} units to label)')
        print(f'picked {len(outcome.sample_ids)} of {len(outcome.result.sample_ids)}{units}: '
              f'{outcome.out_dir}/selected.csv (rank, sample id, file, score); to label: '
              f'{outcome.out_dir}/images; report {outcome.report}')
        return 0

    return run_reporting_errors(run)
