"""Peak memory and disk of one segmentation selection round against the target pool size.

For each pool size (``--images``, default 100 and 1000 generated Cityscapes-layout images at
``--size``) and each way of running the round (``--chunks``: ``16`` = scored and selected 16
images at a time, the default; ``none`` = every score map at once and in ``scores.npz``), a
fresh process runs the tiny RI-SAAL demo config for one selection (2 training iterations,
score, select, reveal, 1 more iteration) with the paper's region budget (2.2 % of each image
over 5 selections: one selection reveals 0.44 %) and reports its peak resident memory
(``ru_maxrss``) and the bytes of the round's files (``scores.npz``, ``selected.json``,
``annotations.json``). Images are not cached in memory, so what grows with the pool is what
the round keeps. Example:

    .venv/bin/python benchmarks/bench_seg_memory.py --images 100,1000 --chunks 16,none
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs/seg/ri_saal_tiny_demo.py'
ROUND_FILES = ('scores.npz', 'selected.json', 'annotations.json')


def one_round(data: Path, work_dir: Path, size: tuple[int, int], chunk: int | None) -> dict:
    """Run in this process (the child): one selection round, then report."""
    from mmengine.config import Config

    from saal_tasks.engine import ActiveLearningLoop
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'task.source.data_root': str(data / 'synthia'),
        'task.target.data_root': str(data / 'cityscapes'),
        'task.val.data_root': str(data / 'cityscapes'),
        'task.source_size': size, 'task.target_size': size, 'task.cache_images': False,
        'task.batch_size': 2, 'task.target_batch_size': 2, 'task.val_limit': 2,
        'al.num_rounds': 1, 'al.schedule.round_iters': [2, 3], 'al.unit_chunk': chunk,
        'selector.budget_ratio': 0.022, 'selector.num_selections': 5,
        'hooks': []})
    ActiveLearningLoop.from_cfg(cfg).run()
    round_dir = work_dir / 'rounds' / 'round_001'
    files = {name: (round_dir / name).stat().st_size for name in ROUND_FILES}
    return dict(peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                round_bytes=sum(files.values()), files=files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', default='100,1000', help='comma-separated pool sizes')
    parser.add_argument('--chunks', default='16,none',
                        help="comma-separated al.unit_chunk values ('none': one call)")
    parser.add_argument('--size', default='128x256', help='HxW of the target images')
    parser.add_argument('--json', default=None, help='also write the results here')
    parser.add_argument('--child', nargs=4, metavar=('DATA', 'WORK', 'SIZE', 'CHUNK'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        data, work, size, chunk = args.child
        h, w = (int(v) for v in size.split('x'))
        print(json.dumps(one_round(Path(data), Path(work), (h, w),
                                   None if chunk == 'none' else int(chunk))))
        return 0
    from saal_tasks.tasks.segmentation.demo import write_seg_demo
    h, w = (int(v) for v in args.size.split('x'))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.images.split(',')):
            data = Path(tmp) / f'data_{n}'
            write_seg_demo(data, num_source=4, num_target_train=n, num_target_val=2,
                           size=(h, w))
            for chunk in args.chunks.split(','):
                work = Path(tmp) / f'run_{n}_{chunk}'
                out = subprocess.run([sys.executable, __file__, '--child', str(data),
                                      str(work), args.size, chunk], check=True,
                                     capture_output=True, text=True)
                row = dict(images=n, chunk=chunk, **json.loads(out.stdout.splitlines()[-1]))
                rows.append(row)
                print(f'measured {n} images, unit_chunk={chunk}', file=sys.stderr)
    print(f'\n{cpu_name()}, {os.cpu_count()} CPUs, images {args.size}\n')
    print('| target images | al.unit_chunk | peak RSS MB | round files MB | scores.npz MB |')
    print('| ---: | --- | ---: | ---: | ---: |')
    for r in rows:
        print(f"| {r['images']} | {r['chunk']} | {r['peak_rss_mb']:.0f} | "
              f"{r['round_bytes'] / 2**20:.2f} | {r['files']['scores.npz'] / 2**20:.2f} |")
    for chunk in args.chunks.split(','):
        mine = [r for r in rows if r['chunk'] == chunk]
        if len(mine) >= 2:
            growth = mine[-1]['peak_rss_mb'] / mine[0]['peak_rss_mb'] - 1
            print(f"\nunit_chunk={chunk}: peak RSS {100 * growth:+.1f} % from "
                  f"{mine[0]['images']} to {mine[-1]['images']} images")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
