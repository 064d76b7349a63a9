"""Write the detection demo dataset: generated images in the real PASCAL VOC layout.

Example::

    python tools/make_voc_demo.py                        # data/voc_demo/VOCdevkit
    python tools/make_voc_demo.py --root /tmp/VOCdevkit --seed 1

The folder holds VOC2007 (trainval, test) and VOC2012 (trainval) with Annotations XML,
JPEGImages and ImageSets/Main, read as is by mmdet's VOCDataset
(configs/det/ssd_tiny_voc_demo.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Write the VOC-layout detection demo data')
    parser.add_argument('--root', default='data/voc_demo/VOCdevkit',
                        help='VOCdevkit folder to write (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the generated images')
    args = parser.parse_args(argv)
    # Only the generator: it needs numpy and OpenCV, not mmdet.
    from saal_tasks.tasks.detection.demo import write_voc_demo

    counts = write_voc_demo(args.root, seed=args.seed)
    summary = ', '.join(f'{k}: {v}' for k, v in counts.items())
    print(f'wrote {args.root} ({summary} images)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
