"""One short in-run segmentation run on generated data: training speed, selection time, memory.

The paper's config (``configs/seg/ri_saal_synthia.py``: DeepLab-v2, RIPU's recipe and
selection rules, RI-SAAL) runs through ``ActiveLearningLoop`` exactly as
``tools/train_al.py`` runs it, on generated SYNTHIA/Cityscapes-layout data written at the
label resolution, with ``--iters`` training iterations, one selection, ``--after`` more
iterations and an evaluation on two validation images. No ImageNet weights
(``backbone_weights=None``): speed and memory do not depend on them. The Runner picks the
device (CUDA when present). Printed: iterations per second of the first window (its Runner
start-up included), selection seconds per target image (scoring + region selection), and
peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: peak RSS).

    # the GPU check's segmentation part (benchmarks/gpu_check.sh)
    .venv/bin/python benchmarks/bench_seg_training.py --arch deeplab_v2 --size 640x1280 \
        --units 1024x2048 --iters 300 --images 8
    # a CPU-sized run of the same code
    .venv/bin/python benchmarks/bench_seg_training.py --arch tiny --size 64x128 --iters 50
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from mmengine.config import Config

from saal_tasks.engine.loop import ActiveLearningLoop
from saal_tasks.tasks.segmentation.demo import write_seg_demo

CONFIG = Path(__file__).resolve().parents[1] / 'configs/seg/ri_saal_synthia.py'


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split('x'))
    return height, width


def run(arch: str, size: tuple[int, int], units: tuple[int, int] | None, iters: int,
        after: int, images: int, sources: int, work: Path, amp: bool, workers: int) -> dict:
    label_size = units or size
    started = time.perf_counter()
    write_seg_demo(work / 'data', num_source=sources, num_target_train=images,
                   num_target_val=2, size=label_size, seed=0)
    generated_s = time.perf_counter() - started
    cfg = Config.fromfile(CONFIG)
    data = work / 'data'
    cfg.merge_from_dict({
        'work_dir': str(work / 'run'),
        'task.source.data_root': str(data / 'synthia'),
        'task.target.data_root': str(data / 'cityscapes'),
        'task.val.data_root': str(data / 'cityscapes'),
        'task.model': dict(_delete_=True, arch=arch) if arch == 'tiny' else dict(
            arch=arch, backbone_weights=None, freeze_bn=True),
        'task.source_size': size, 'task.target_size': size, 'task.unit_size': units,
        'task.val_limit': 2, 'task.log_interval': max(1, iters // 4), 'task.amp': amp,
        'task.num_workers': workers,
        'selector.num_selections': 1,
        'al.num_rounds': 1,
        'al.schedule.round_iters': [iters, iters + after], 'al.schedule.lr_horizon': None,
        'hooks': [],
    })
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    loop = ActiveLearningLoop.from_cfg(cfg)
    records = loop.run()
    first = records[0]  # round 1: the first window, the selection, the evaluation
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_what = 'CUDA max allocated'
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_what = 'CPU peak RSS'
    return dict(arch=arch, size=f'{size[0]}x{size[1]}',
                units=f'{label_size[0]}x{label_size[1]}', iters=iters, images=images,
                device=torch.cuda.get_device_name(0) if torch.cuda.is_available()
                else f'CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)',
                amp=amp, workers=workers, generated_s=generated_s,
                train_s=first['train_s'], iters_per_s=iters / first['train_s'],
                # A streamed round selects inside its scoring stage (select_s is then 0).
                select_s=first['score_s'] + first['select_s'],
                select_s_per_image=(first['score_s'] + first['select_s']) / images,
                eval_s=first.get('evaluate_s'), peak_mb=peak, peak_what=peak_what,
                labeled_pixel_percent=records[-1]['labeled_pixel_percent'])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='tiny', help='tiny, deeplab_v2 or deeplab_v3plus')
    parser.add_argument('--size', type=_size, default=(64, 128), help='training size HxW')
    parser.add_argument('--units', type=_size, default=None,
                        help='selection (label) resolution HxW; default: the training size')
    parser.add_argument('--iters', type=int, default=50, help='iterations before the selection')
    parser.add_argument('--after', type=int, default=5, help='iterations after it')
    parser.add_argument('--images', type=int, default=8, help='target pool images')
    parser.add_argument('--sources', type=int, default=8, help='source images')
    parser.add_argument('--amp', action='store_true', help='mixed precision (CUDA)')
    parser.add_argument('--workers', type=int, default=0, help='data-loading processes')
    parser.add_argument('--out', default=None, help='write results.json here')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='bench_seg_training_') as tmp:
        row = run(args.arch, args.size, args.units, args.iters, args.after, args.images,
                  args.sources, Path(tmp), args.amp, args.workers)
    print(f"\n{row['device']}, AMP {row['amp']}, {row['workers']} data workers\n")
    print('| model | train size | units | iterations | it/s (first window) | '
          'selection s/image | peak MB |')
    print('| --- | --- | --- | ---: | ---: | ---: | ---: |')
    print(f"| {row['arch']} | {row['size']} | {row['units']} | {row['iters']} | "
          f"{row['iters_per_s']:.2f} | {row['select_s_per_image']:.2f} | "
          f"{row['peak_mb']:.0f} ({row['peak_what']}) |")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / 'results.json').write_text(json.dumps(row, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
