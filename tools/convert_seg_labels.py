"""Convert raw SYNTHIA / Cityscapes labels to the 16-class train-id PNGs the datasets read.

Example::

    python tools/convert_seg_labels.py synthia data/synthia             # GT/LABELS -> GT/LABELS16
    python tools/convert_seg_labels.py cityscapes data/cityscapes       # train and val
    python tools/convert_seg_labels.py cityscapes data/cityscapes --split val --force

Each file is written atomically, so an interrupted run leaves no half-written label; rerunning
skips the labels already converted (``--force`` rewrites them).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Convert segmentation labels to 16-class '
                                     'train ids')
    parser.add_argument('kind', choices=('synthia', 'cityscapes'), help='dataset layout')
    parser.add_argument('root', help='dataset folder (SYNTHIA: holds RGB/ and GT/; Cityscapes: '
                        'holds leftImg8bit/ and gtFine/)')
    parser.add_argument('--split', nargs='+', default=None,
                        help='Cityscapes splits (default: train val); not for SYNTHIA')
    parser.add_argument('--force', action='store_true', help='rewrite labels already converted')
    parser.add_argument('--every', type=int, default=500,
                        help='print progress every N files (default: %(default)s)')
    args = parser.parse_args(argv)
    # Only the converter: it needs numpy and OpenCV, not mmseg.
    from saal_tasks.cli import run_reporting_errors
    from saal_tasks.tasks.segmentation.convert import convert_labels

    start = time.monotonic()

    def report(done: int, total: int, written: int) -> None:
        print(f'{done}/{total} labels ({written} written, {done - written} already converted), '
              f'{time.monotonic() - start:.0f} s', flush=True)

    def run() -> int:
        stats = convert_labels(args.kind, args.root, splits=args.split, force=args.force,
                               progress=report, every=args.every)
        print(f'done: {stats.written} written, {stats.skipped} skipped of {stats.total} labels '
              f'under {args.root}')
        return 0

    return run_reporting_errors(run)


if __name__ == '__main__':
    sys.exit(main())
