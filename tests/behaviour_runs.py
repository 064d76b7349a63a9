"""Reference runs that pin the loop's behaviour across refactors.

Each run is a real ``tools/train_al.py`` invocation on embedded or generated data; what it
selected (ids and, for partial annotation, units, every round) and what it measured (metrics
without timings) are summarised to one JSON-able dict. ``tests/data/behaviour/`` holds the
summaries recorded before the layered-architecture refactor; ``test_behaviour_preserved.py``
runs them again and compares.

A recording belongs to a CPU kind: float32 kernels round differently on different vector
units, and over several rounds of training that changes which samples are picked. Recordings
live in ``tests/data/behaviour/<vendor>-<capability>.json`` (e.g. ``GenuineIntel-AVX512``,
torch's CPU capability), with ``<vendor>.json`` as the fallback (``AuthenticAMD.json`` was
recorded on an AMD EPYC before the layered refactor). ``AuthenticAMD-AVX512.json`` is an AMD
EPYC with AVX-512, where the fallback's float32 scores differ beyond rounding tolerance and a
segmentation selection changes: its runs come from the pre-refactor commit 41ad002 run on that
CPU, except ``seg``, recorded from 2c2cb81. There the pre-refactor code's round-2 score map
holds exactly equal scores at the competing pixels; the current code's maps agree with it to
1.4e-6 (relative) and tip that tie the other way (3 of 49 pixels), while the current selector
given the pre-refactor maps picks exactly the pre-refactor pixels. To add a CPU kind, record
on a commit whose behaviour is known to be right (a worktree of it), and copy the file here::

    .venv/bin/python tests/behaviour_runs.py --record

Re-record only for an intended change of behaviour, and say so in the commit.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = Path(__file__).resolve().parent / 'data' / 'behaviour'


def cpu_kind() -> tuple[str, str]:
    """``(vendor, capability)`` of this CPU, e.g. ``('GenuineIntel', 'AVX512')``."""
    import platform

    import torch

    vendor = platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('vendor_id'):
                vendor = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return vendor, torch.backends.cpu.get_cpu_capability()


def recording_path() -> Path | None:
    """This CPU kind's recording (exact kind first, then the vendor's), ``None`` if none."""
    vendor, capability = cpu_kind()
    for name in (f'{vendor}-{capability}.json', f'{vendor}.json'):
        if (RECORDINGS / name).exists():
            return RECORDINGS / name
    return None

# The digits demo shortened to 6 rounds (same protocol otherwise).
DIGITS = ['configs/cls/saal_cnn_digits.py', '--cfg-options', 'al.num_rounds=6']
# Pool-aware selectors (labeled set, candidates, embeddings) on the digits protocol.
DIGITS_BASELINE = """
_base_ = ['{root}/configs/cls/saal_cnn_digits.py']
scorer = dict(_delete_=True, type='{scorer}')
selector = dict(_delete_=True, type='{selector}')
hooks = []
al = dict(num_rounds=3)
task = dict(epochs=10)
"""
# The detection demo on a small generated VOC pool: 2 rounds of 4 queries.
DET = """
_base_ = ['{root}/configs/det/ssd_tiny_voc_demo.py']
task = dict(data_root='{data}/', train_dataloader=dict(batch_size=4),
            test_dataloader=dict(batch_size=4), train_cfg=dict(max_epochs=2),
            model=dict(test_cfg=dict(max_per_img=10)), pseudo_score_thr=0.0)
al = dict(num_rounds=2, budget=4, initial_size=6)
hooks = []
"""
# The segmentation demo (RI-SAAL, in-run schedule, regions) at 32x64: 2 selections.
SEG = """
_base_ = ['{root}/configs/seg/ri_saal_tiny_demo.py']
task = dict(source=dict(data_root='{data}/synthia'), target=dict(data_root='{data}/cityscapes'),
            val=dict(data_root='{data}/cityscapes'), source_size=(32, 64),
            target_size=(32, 64), batch_size=2, target_batch_size=2, log_interval=1000,
            flip=True, local_consistency_weight=0.0, negative_learning_weight=0.0)
# The rules the recording was made with (RIPU's rules became the configs' default later).
selector = dict(budget_rule='pixels', persistent_suppression=False, tie_break='row_major')
al = dict(schedule=dict(round_iters=[20, 30, 40]))
hooks = []
"""


def summarise(work_dir: Path) -> dict[str, Any]:
    """What a finished run selected and measured, round by round (timings left out)."""
    rounds = []
    for line in (work_dir / 'metrics.jsonl').read_text().splitlines():
        # NaN metrics are written as null (strict JSON) since the recordings were made.
        record = {k: math.nan if v is None else v for k, v in json.loads(line).items()}
        entry = {'metrics': {k: v for k, v in sorted(record.items()) if not k.endswith('_s')}}
        selected = work_dir / 'rounds' / f"round_{record['round']:03d}" / 'selected.json'
        if selected.exists():
            data = json.loads(selected.read_text())
            entry['selected'] = data['sample_ids']
            if 'units' in data:
                entry['units'] = data['units']
            if 'scores' in data:
                entry['scores'] = data['scores']
        rounds.append(entry)
    pool = work_dir / 'rounds' / 'round_000' / 'annotations.json'
    initial = sorted(int(k) for k in json.loads(pool.read_text()))
    return {'initial': initial, 'rounds': rounds}


def _train(args: list[str], work_dir: Path, threads: int = 1) -> Path:
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'PYTHONPATH': str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train_al.py'), *args,
                           '--work-dir', str(work_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'train_al.py {args} failed ({proc.returncode}):\n'
                           f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return work_dir


def run_digits(tmp: Path) -> dict[str, Any]:
    return summarise(_train(DIGITS, tmp / 'digits'))


def run_digits_baseline(tmp: Path, name: str, scorer: str, selector: str) -> dict[str, Any]:
    cfg = tmp / f'{name}.py'
    cfg.write_text(DIGITS_BASELINE.format(root=ROOT, scorer=scorer, selector=selector))
    return summarise(_train([str(cfg)], tmp / name))


def run_det(tmp: Path) -> dict[str, Any]:
    from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo
    data = tmp / 'voc'
    write_voc_demo(data, splits=(DemoSplit('VOC2007', 'trainval', 12),
                                 DemoSplit('VOC2007', 'test', 4, first_number=101),
                                 DemoSplit('VOC2012', 'trainval', 6, id_prefix='2008_')),
                   image_size=(64, 96), seed=0)
    cfg = tmp / 'det.py'
    cfg.write_text(DET.format(root=ROOT, data=data))
    return summarise(_train([str(cfg)], tmp / 'det'))


def run_seg(tmp: Path) -> dict[str, Any]:
    from saal_tasks.tasks.segmentation.demo import write_seg_demo
    data = tmp / 'seg'
    write_seg_demo(data, num_source=12, num_target_train=6, num_target_val=4, size=(32, 64),
                   seed=0)
    cfg = tmp / 'seg.py'
    cfg.write_text(SEG.format(root=ROOT, data=data))
    return summarise(_train([str(cfg)], tmp / 'seg_run'))


RUNS: dict[str, Callable[[Path], dict[str, Any]]] = {
    'digits': run_digits,
    'digits_badge': lambda tmp: run_digits_baseline(tmp, 'digits_badge', 'GradientNormScorer',
                                                    'BADGESelector'),
    'digits_coreset': lambda tmp: run_digits_baseline(tmp, 'digits_coreset', 'RandomScorer',
                                                      'KCenterGreedySelector'),
    'digits_probcover': lambda tmp: run_digits_baseline(tmp, 'digits_probcover',
                                                        'RandomScorer', 'ProbCoverSelector'),
    'det': run_det,
    'seg': run_seg,
}


def main() -> None:
    import tempfile
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--record', action='store_true', help='write the recording')
    parser.add_argument('--only', nargs='*', default=list(RUNS))
    args = parser.parse_args()
    vendor, capability = cpu_kind()
    target = RECORDINGS / f'{vendor}-{capability}.json'
    results = json.loads(target.read_text()) if target.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            results[name] = RUNS[name](Path(tmp))
            print(name, json.dumps(results[name])[:200])
    if args.record:
        RECORDINGS.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=1, sort_keys=True) + '\n')
        print(f'recorded {target}')


if __name__ == '__main__':
    main()
