"""Box-sum SAAL: per-image scoring time over plain inference time, per detector and engine.

The detectors are those of ``--configs``: by default the paper's (mmdet's SSD300 VGG16 for
VOC's 20 classes, ``configs/det/ssd_voc_saal.py``, on generated 300x400 images), plus any
other detection config (the tiny RetinaNet, Faster R-CNN, FCOS, ATSS and GFL demos run on
96x128 images),
randomly initialised, on generated images in the VOC layout. Both sides load the images
from disk, ``--batch`` at a time:

* ``inference``: ``model.predict`` (mmdet's inference with NMS) on batches of ``--batch``;
* ``scoring``: ``SharpnessScorer`` with each engine of ``--engines``: ``ReferenceEngine``
  (exact, one image at a time) or ``FastExactEngine`` (exact, a chunk of ``--chunk`` images,
  by default ``--batch``, per pass, each with its own ε; it falls back to the reference where
  its factorisation does not hold, e.g. a RoI head, and says so).

Like ``tools/train_al.py``, the benchmark keeps freed memory in the process
(``saal_tasks/core/allocator.py``); without it SSD300's batch-8 inference re-faults its
activations and runs slower per image than batch 1.

A random detector is unsure of everything, so the number of pseudo-boxes is set directly:
the pseudo-box threshold is 0 and ``test_cfg.max_per_img`` caps the detections (``--boxes``).
Wall and CPU seconds are both printed: on a shared machine the CPU time is the steadier one.

    .venv/bin/python benchmarks/bench_detection_scoring.py                  # SSD300, 1 thread
    .venv/bin/python benchmarks/bench_detection_scoring.py --boxes 1 10 50 --images 4
    .venv/bin/python benchmarks/bench_detection_scoring.py --engines ReferenceEngine \
        FastExactEngine --batch 8 --images 8 --configs configs/det/ssd_voc_saal.py \
        configs/det/retinanet_tiny_voc_demo.py configs/det/faster_rcnn_tiny_voc_demo.py \
        configs/det/fcos_tiny_voc_demo.py configs/det/atss_tiny_voc_demo.py \
        configs/det/gfl_tiny_voc_demo.py
    .venv/bin/python benchmarks/bench_detection_scoring.py --engines FastExactEngine \
        --batch 8 --chunk 32 --images 32 --configs configs/det/retinanet_tiny_voc_demo.py
    .venv/bin/python benchmarks/bench_detection_scoring.py --device cuda   # the GPU check
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

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, beside this script)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=4, help='timed images per measurement')
    parser.add_argument('--boxes', type=int, nargs='+', default=[10],
                        help='pseudo-boxes per image (detections kept after NMS)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--repeats', type=int, default=2,
                        help='alternating inference/scoring repeats (the minimum is kept)')
    parser.add_argument('--configs', nargs='+', default=['configs/det/ssd_voc_saal.py'],
                        help='detection configs (paths relative to the checkout)')
    parser.add_argument('--engines', nargs='+', default=['ReferenceEngine'],
                        help='ReferenceEngine and/or FastExactEngine')
    parser.add_argument('--batch', type=int, default=1,
                        help='images per inference batch and per FastExactEngine chunk')
    parser.add_argument('--chunk', type=int, default=None,
                        help='images per FastExactEngine chunk, if not --batch '
                             '(configs/_base_/scorers/saal_sam.py uses 32)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--train-iters', type=int, default=0,
                        help='also time this many training iterations (SGD, batch --batch, '
                             'the generated ground truth)')
    args = parser.parse_args(argv)
    args.chunk = args.chunk or args.batch
    return args


def train_seconds(model, task, ids, batch: int, iters: int, device: str) -> float:
    """Seconds per training iteration (forward, mmdet's losses, backward, SGD step) on
    batches of ``batch`` images, after one warm-up iteration."""
    import torch
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    batches = [inputs for _, inputs in task.pool_batches(ids, batch)]
    times = []
    for it in range(iters + 1):
        data = model.data_preprocessor(batches[it % len(batches)], True)
        start = time.perf_counter()
        losses = model.loss(data['inputs'], data['data_samples'])
        total = sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items()
                    if 'loss' in k)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        _sync(device)
        if it:
            times.append(time.perf_counter() - start)
    model.eval()
    return sum(times) / len(times)


def _sync(device: str) -> None:
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def object_sized_boxes(model) -> None:
    """Give a random FCOS object-sized boxes: its distances start near 0, so its boxes are
    points that contain no point of any level, every box loss is 0 and the scores would agree
    trivially. A bias of 2 strides on the distance branch gives boxes of 16-64 px, as a
    trained FCOS predicts. Other detectors are left as they are."""
    head = getattr(model, 'bbox_head', None)
    if type(head).__name__ == 'FCOSHead':
        import torch
        with torch.no_grad():
            head.conv_reg.bias.fill_(2.0)


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

    from saal_tasks.core.allocator import keep_freed_memory
    torch.set_num_threads(args.threads)
    # As tools/train_al.py does: without it, glibc unmaps and re-faults every large
    # activation, which made SSD300's batch-8 inference slower per image than batch 1.
    keep_freed_memory()
    MMLogger.get_instance('bench_detection', log_level='WARNING')
    from saal_tasks.compat.mmcv_ops import active_path
    from saal_tasks.registry import SCORERS, TASKS
    from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo

    import saal_tasks.tasks.detection.task  # noqa: F401  (chooses the mmcv ops)
    tmp = Path(tempfile.mkdtemp(prefix='bench_det_'))
    n = args.images + max(args.batch, args.chunk)  # the first batch or chunk warms up
    print(f'mmcv ops: {active_path()}; torch threads: {torch.get_num_threads()}; '
          f'device {args.device}; CPU {cpu_name()}; inference batch {args.batch}; '
          f'FastExactEngine chunk {args.chunk}; '
          f'load average: {os.getloadavg()[0]:.1f}')
    print('| detector | engine | boxes/image | inference s/img (wall, cpu) | '
          'scoring s/img (wall, cpu) | ratio wall | ratio cpu |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for config in args.configs:
        cfg = Config.fromfile(str(ROOT / config))
        paper = 'ssd_voc_saal' in config
        root = tmp / Path(config).stem / 'VOCdevkit'
        write_voc_demo(root, image_size=(300, 400) if paper else (96, 128), seed=0, splits=(
            DemoSplit('VOC2007', 'trainval', n), DemoSplit('VOC2007', 'test', 1,
                                                           first_number=900),
            DemoSplit('VOC2012', 'trainval', 1, id_prefix='2008_')))
        task_cfg = cfg.task
        task_cfg.data_root = str(root) + '/'
        if paper:
            task_cfg.model.backbone.init_cfg = None
        task_cfg.pseudo_score_thr = 0.0
        task_cfg.log_level = 'WARNING'
        test_cfg = task_cfg.model.test_cfg.get('rcnn', task_cfg.model.test_cfg)
        test_cfg.score_thr = 0.0
        for boxes in args.boxes:
            test_cfg.max_per_img = boxes
            task = TASKS.build(task_cfg)
            model = task.build_model(seed=0).to(args.device).eval()
            object_sized_boxes(model)
            ids = task.sample_ids()[:n]
            warm = ids[:max(args.batch, args.chunk)]
            timed_ids = ids[len(warm):]

            def infer(sample_ids):
                with torch.no_grad():
                    for _, inputs in task.pool_batches(sample_ids, args.batch):
                        data = model.data_preprocessor(inputs, False)
                        model.predict(data['inputs'], data['data_samples'])
                _sync(args.device)

            scores: dict[str, np.ndarray] = {}
            for engine in args.engines:
                chunk = {'chunk_size': args.chunk} if engine == 'FastExactEngine' else {}
                scorer = SCORERS.build({**cfg.scorer, 'engine': dict(type=engine, **chunk)})

                def score(sample_ids):
                    result = scorer.score(task, model, sample_ids, np.random.default_rng(0))
                    _sync(args.device)
                    scores[engine] = result.scores

                infer(warm), score(warm)
                best_inf, best_score = (float('inf'),) * 2, (float('inf'),) * 2
                for _ in range(args.repeats):
                    best_inf = min(best_inf, timed(lambda: infer(timed_ids)))
                    best_score = min(best_score, timed(lambda: score(timed_ids)))
                k = len(timed_ids)
                with torch.no_grad():
                    _, inputs = next(task.pool_batches(timed_ids[:1], 1))
                    actual = len(task.pseudo_label(model, inputs)[0])
                print(f'| {Path(config).stem} | {engine} | {actual} | '
                      f'{best_inf[0] / k:.3f}, {best_inf[1] / k:.3f} | '
                      f'{best_score[0] / k:.3f}, {best_score[1] / k:.3f} | '
                      f'{best_score[0] / best_inf[0]:.2f} | {best_score[1] / best_inf[1]:.2f} |',
                      flush=True)
            if len(scores) > 1:
                ref = scores[args.engines[0]]
                worst = max(float(np.max(np.abs(v - ref) / np.maximum(np.abs(ref), 1e-12)))
                            for v in scores.values())
                print(f'{Path(config).stem}: scores of {", ".join(scores)} agree to {worst:.1e} '
                      'relative (max over images)', flush=True)
            if args.train_iters:
                seconds = train_seconds(model, task, ids, args.batch, args.train_iters,
                                        args.device)
                print(f'{Path(config).stem}: training {seconds:.3f} s/iteration at batch '
                      f'{args.batch} ({args.device})', flush=True)
    print(f'load average after: {os.getloadavg()[0]:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
