"""Write the COCO-format detection demo: generated images in COCO's layout.

Example::

    python tools/make_coco_demo.py                       # data/coco_demo
    python tools/make_coco_demo.py --root /tmp/coco --seed 1

The folder holds annotations/instances_train2017.json (one image in six without objects),
instances_val2017.json and image_info_unlabeled2017.json (images only), next to the
train2017/, val2017/ and unlabeled2017/ images, read as is by mmdet's CocoDataset and
CocoMetric (configs/det/ssd_tiny_coco_demo.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Write the COCO-layout detection demo data')
    parser.add_argument('--root', default='data/coco_demo',
                        help='folder to write (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the generated images')
    args = parser.parse_args(argv)
    # Only the generator: it needs numpy and OpenCV, not mmdet.
    from saal_tasks.tasks.detection.demo import write_coco_demo

    counts = write_coco_demo(args.root, seed=args.seed)
    summary = ', '.join(f'{k}: {v}' for k, v in counts.items())
    print(f'wrote {args.root} ({summary} images)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
