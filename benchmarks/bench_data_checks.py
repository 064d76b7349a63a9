"""Cost of the VOC file checks run before mmdet parses an image set (docs/reliability.md).

Writes a VOCdevkit of generated VOC-sized images (about 500x375, up to 3 objects each),
then times :func:`saal_tasks.tasks.detection.voc_files.check_voc_image_set` against mmdet's
own parse of the same image set (``VOCDataset.full_init``), both with a warm file cache, and
prints both and the check's projection to VOC07+12 trainval (16,551 images)::

    python benchmarks/bench_data_checks.py --images 2000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOC_TRAINVAL = 16551


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=2000)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()

    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo
    from saal_tasks.tasks.detection.voc_files import check_voc_image_set

    register_all_modules()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / 'VOCdevkit'
        start = time.perf_counter()
        write_voc_demo(root, splits=(DemoSplit('VOC2007', 'trainval', args.images),),
                       image_size=(375, 500), seed=0)
        print(f'wrote {args.images} images in {time.perf_counter() - start:.1f} s')
        cfg = dict(type='VOCDataset', data_root=str(root), ann_file='VOC2007/ImageSets/Main/'
                   'trainval.txt', data_prefix=dict(sub_data_root='VOC2007/'), pipeline=[],
                   lazy_init=True)
        checks, parses = [], []
        for _ in range(args.repeats):
            dataset = DATASETS.build(cfg)
            start = time.perf_counter()
            check_voc_image_set(dataset, 'bench')
            checks.append(time.perf_counter() - start)
            start = time.perf_counter()
            dataset.full_init()
            parses.append(time.perf_counter() - start)
        check, parse = min(checks), min(parses)
        per_image = check / args.images
        print(f'check: {check:.2f} s ({per_image * 1e3:.2f} ms/image); mmdet parse: '
              f'{parse:.2f} s ({parse / args.images * 1e3:.2f} ms/image); check/parse '
              f'{check / parse:.2f}x; projected check for VOC07+12 trainval: '
              f'{per_image * VOC_TRAINVAL:.1f} s')


if __name__ == '__main__':
    main()
