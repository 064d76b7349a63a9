"""Per-image RI-SAAL map time over plain inference time, for the segmentation models.

For each model (``--models``, default tiny and DeepLab-v2) the segmentation demo task is built
at ``--size`` (the generated 64x128 demo images are resized, which is all timing needs), and
``--images`` target images are timed with:

* inference: one forward pass per image at the input size (``segment_logits`` under
  ``no_grad``, eval mode; no upsampling),
* RI-SAAL: ``RegionImpurityScorer`` over exact per-image SAAL (``SharpnessScorer`` with the
  ``ReferenceEngine``): pseudo-label, image-mean loss gradient, perturbed per-pixel loss,
  region impurity and the product,
* RIPU: ``RegionImpurityScorer`` over ``PixelEntropyScorer`` (the baseline's cost).

A third field of ``--models`` (``deeplab_v2:320x640:512x1024``) sets ``task.unit_size``: the
scorers then upsample the logits to it before scoring (RIPU's label-resolution selection).
The first image of each measurement is a warm-up and is not counted. The three are timed
``--repeats`` times, in alternating order (inference, RI-SAAL, RIPU, then the reverse), so a
drift of the machine's speed during the run reaches all three alike; the table gives each
time's median and the median (and range) of the per-repeat ratios. Needs the demo data
(``make demo-seg`` or ``python tools/make_seg_demo.py``). Example:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_seg_scoring.py \
        --models tiny:64x128,deeplab_v2:320x640 --images 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from mmengine.config import Config

from machine import cpu_name

# The perturbation module first: it imports the core package before the scorers package.
from saal_tasks.core.perturbation import Perturbation  # noqa: F401  (import order)
from saal_tasks.core.allocator import keep_freed_memory
from saal_tasks.registry import SCORERS, TASKS
from saal_tasks.tasks.segmentation.models import segment_logits

CONFIG = 'configs/seg/ri_saal_tiny_demo.py'
RIPU = dict(type='RegionImpurityScorer', k=1, window_average=True,
            pixel_scorer=dict(type='PixelEntropyScorer'))


def _timed_per_image(run, ids: np.ndarray) -> float:
    """Seconds per image of ``run(ids_chunk)`` over ``ids[1:]``."""
    start = time.perf_counter()
    run(ids[1:])
    return (time.perf_counter() - start) / max(len(ids) - 1, 1)


def measure(arch: str, size: tuple[int, int], images: int, seed: int,
            units: tuple[int, int] | None = None, repeats: int = 3) -> dict:
    cfg = Config.fromfile(CONFIG)
    cfg.task.model = dict(arch=arch)
    cfg.task.source_size = cfg.task.target_size = size
    cfg.task.unit_size = units
    task = TASKS.build(cfg.task)
    model = task.build_model(seed).eval()
    ids = task.sample_ids()[:images + 1]
    for i in ids:  # decode (and cache) the images first: reading files is not scoring
        task.target.get(int(i))
    rng = np.random.default_rng(seed)

    def inference(chunk):
        with torch.no_grad():
            for _, inputs in task.pool_batches(chunk, 1):
                segment_logits(model, inputs)  # the model alone: no upsampling to units

    before = [p.detach().clone() for p in model.parameters()]
    ri_saal = SCORERS.build(cfg.scorer)
    ripu = SCORERS.build(RIPU)
    runs = dict(inference=inference,
                ri_saal=lambda c: ri_saal.score(task, model, c, rng),
                ripu=lambda c: ripu.score(task, model, c, rng))
    for run in runs.values():  # warm-up on the first image
        run(ids[:1])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            times[name].append(_timed_per_image(runs[name], ids))
    row = dict(model=arch, size=f'{size[0]}x{size[1]}',
               units=f'{units[0]}x{units[1]}' if units else f'{size[0]}x{size[1]}',
               images=len(ids) - 1, repeats=repeats, times=times,
               **{f'{name}_s': float(np.median(t)) for name, t in times.items()})
    for name in ('ri_saal', 'ripu'):
        ratios = [a / b for a, b in zip(times[name], times['inference'])]
        row[f'{name}_ratio'] = float(np.median(ratios))
        row[f'{name}_ratio_range'] = (min(ratios), max(ratios))
    row['params_unchanged'] = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', default='tiny:64x128,deeplab_v2:320x640',
                        help='comma-separated arch:HxW[:HxW] (arch: tiny, deeplab_v2, '
                             'deeplab_v3plus; the second size: task.unit_size, the '
                             'resolution the logits are upsampled to for scoring)')
    parser.add_argument('--images', type=int, default=3, help='timed images per measurement')
    parser.add_argument('--repeats', type=int, default=3,
                        help='alternating repeats of the three timings (medians reported)')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the results here')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # As tools/train_al.py does: without it, backward passes on CPU re-fault their buffers.
    keep_freed_memory()
    rows = []
    for item in args.models.split(','):
        arch, size, *unit = item.split(':')
        height, width = (int(v) for v in size.split('x'))
        units = tuple(int(v) for v in unit[0].split('x')) if unit else None
        rows.append(measure(arch, (height, width), args.images, args.seed, units,
                            args.repeats))
        print(f'measured {arch} at {size}', file=sys.stderr)
    print(f'\n{cpu_name()}, {args.threads} threads, {args.repeats} repeats, '
          f'load {os.getloadavg()[0]:.2f}\n')
    print('| model | image | units | inference s/img | RI-SAAL s/img | RI-SAAL / inference '
          '(range) | RIPU / inference | parameters unchanged |')
    print('| --- | --- | --- | ---: | ---: | ---: | ---: | --- |')
    for r in rows:
        low, high = r['ri_saal_ratio_range']
        print(f"| {r['model']} | {r['size']} | {r['units']} | {r['inference_s']:.3f} | "
              f"{r['ri_saal_s']:.3f} | {r['ri_saal_ratio']:.2f}x ({low:.2f}-{high:.2f}) | "
              f"{r['ripu_ratio']:.2f}x | {r['params_unchanged']} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
