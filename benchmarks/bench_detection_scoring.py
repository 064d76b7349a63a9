"""SSD300 box-sum SAAL: per-image scoring time over plain inference time, on this machine.

The detector is the paper's (mmdet's SSD300 VGG16 for VOC's 20 classes, from
``configs/det/ssd_voc_saal.py``), randomly initialised (no pretrained weights here), on
generated 300-400 px images in the VOC layout. Both sides load each image from disk, one
image at a time:

* ``inference``: ``model.predict`` (mmdet's inference with NMS) per image;
* ``scoring``: ``SharpnessScorer`` with ``ReferenceEngine`` (exact per-image SAAL: pseudo-
  labels, clean box losses, backward, ε, perturbed box losses, weights restored).

A random SSD300 is unsure of everything, so the number of pseudo-boxes is set directly: the
pseudo-box threshold is 0 and ``test_cfg.max_per_img`` caps the detections (``--boxes``).
Wall and CPU seconds are both printed: on a shared machine the CPU time is the steadier one.

    .venv/bin/python benchmarks/bench_detection_scoring.py                  # ~3 min, 1 thread
    .venv/bin/python benchmarks/bench_detection_scoring.py --boxes 1 10 50 --images 4
    .venv/bin/python benchmarks/bench_detection_scoring.py --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=4, help='timed images per measurement')
    parser.add_argument('--boxes', type=int, nargs='+', default=[10],
                        help='pseudo-boxes per image (detections kept after NMS)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--repeats', type=int, default=2,
                        help='alternating inference/scoring repeats (the minimum is kept)')
    return parser.parse_args(argv)


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    torch.set_num_threads(args.threads)
    MMLogger.get_instance('bench_detection', log_level='WARNING')
    from saal_tasks.compat.mmcv_ops import active_path
    from saal_tasks.registry import SCORERS, TASKS
    from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo

    tmp = Path(tempfile.mkdtemp(prefix='bench_det_'))
    n = args.images + 1  # one warm-up image
    write_voc_demo(tmp / 'VOCdevkit', image_size=(300, 400), seed=0, splits=(
        DemoSplit('VOC2007', 'trainval', n), DemoSplit('VOC2007', 'test', 1, first_number=900),
        DemoSplit('VOC2012', 'trainval', 1, id_prefix='2008_')))
    cfg = Config.fromfile(str(ROOT / 'configs' / 'det' / 'ssd_voc_saal.py'))
    task_cfg = cfg.task
    task_cfg.data_root = str(tmp / 'VOCdevkit') + '/'
    task_cfg.model.backbone.init_cfg = None
    task_cfg.pseudo_score_thr = 0.0
    task_cfg.log_level = 'WARNING'
    print(f'mmcv ops: {active_path()}; torch threads: {torch.get_num_threads()}; '
          f'load average: {os.getloadavg()[0]:.1f}')
    print('| boxes/image | inference s/img (wall, cpu) | scoring s/img (wall, cpu) | '
          'ratio wall | ratio cpu |')
    print('| --- | --- | --- | --- | --- |')
    for boxes in args.boxes:
        task_cfg.model.test_cfg.max_per_img = boxes
        task = TASKS.build(task_cfg)
        model = task.build_model(seed=0).eval()
        scorer = SCORERS.build(cfg.scorer)
        ids = task.sample_ids()[:n]
        warm, timed_ids = ids[:1], ids[1:]

        def infer(sample_ids):
            with torch.no_grad():
                for _, inputs in task.pool_batches(sample_ids, 1):
                    data = model.data_preprocessor(inputs, False)
                    model.predict(data['inputs'], data['data_samples'])

        def score(sample_ids):
            scorer.score(task, model, sample_ids, np.random.default_rng(0))

        infer(warm), score(warm)
        best_inf, best_score = (float('inf'),) * 2, (float('inf'),) * 2
        for _ in range(args.repeats):
            best_inf = min(best_inf, timed(lambda: infer(timed_ids)))
            best_score = min(best_score, timed(lambda: score(timed_ids)))
        k = len(timed_ids)
        with torch.no_grad():
            _, inputs = next(task.pool_batches(timed_ids[:1], 1))
            actual = len(task.pseudo_label(model, inputs)[0])
        print(f'| {actual} | {best_inf[0] / k:.3f}, {best_inf[1] / k:.3f} | '
              f'{best_score[0] / k:.3f}, {best_score[1] / k:.3f} | '
              f'{best_score[0] / best_inf[0]:.2f} | {best_score[1] / best_inf[1]:.2f} |')
    print(f'load average after: {os.getloadavg()[0]:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
