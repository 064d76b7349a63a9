"""Write the segmentation demo data: generated street scenes in the SYNTHIA and Cityscapes layouts.

Example::

    python tools/make_seg_demo.py                          # data/seg_demo
    python tools/make_seg_demo.py --root /tmp/seg_demo --seed 1 --num-source 40

The folder holds ``synthia/`` (RGB, GT/LABELS, GT/LABELS16) and ``cityscapes/`` (leftImg8bit,
gtFine with labelIds and the converted labelTrainIds16, train and val). Rewriting a folder
that holds an earlier demo replaces it; a non-empty folder with other data is refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Write the SYNTHIA -> Cityscapes demo data')
    parser.add_argument('--root', default='data/seg_demo',
                        help='folder to write (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the generated images')
    parser.add_argument('--num-source', type=int, default=160,
                        help='SYNTHIA-layout source images (default: %(default)s)')
    parser.add_argument('--num-target-train', type=int, default=60,
                        help='Cityscapes-layout train images (default: %(default)s)')
    parser.add_argument('--num-target-val', type=int, default=30,
                        help='Cityscapes-layout val images (default: %(default)s)')
    parser.add_argument('--size', type=int, nargs=2, default=(64, 128),
                        metavar=('HEIGHT', 'WIDTH'), help='image size (default: 64 128)')
    args = parser.parse_args(argv)
    # Only the generator: it needs numpy and OpenCV, not mmseg.
    from saal_tasks.cli import run_reporting_errors
    from saal_tasks.tasks.segmentation.demo import write_seg_demo

    def run() -> int:
        out = write_seg_demo(args.root, num_source=args.num_source,
                             num_target_train=args.num_target_train,
                             num_target_val=args.num_target_val, size=tuple(args.size),
                             seed=args.seed)
        height, width = out['size']
        print(f"wrote {out['synthia']} ({out['source']} source images) and {out['cityscapes']} "
              f"(train: {out['target_train']}, val: {out['target_val']} images), "
              f'{height}x{width} px, seed {out["seed"]}')
        return 0

    return run_reporting_errors(run)


if __name__ == '__main__':
    sys.exit(main())
