"""SIGKILL, resume, and get the uninterrupted result: segmentation (in-run) and detection.

The classification version is tests/test_kill_resume.py. Here every process costs seconds of
imports, so each task runs one chain: a fresh run is killed at the first point, every later
run resumes the previous one (``--resume``) and is itself killed at the next point, and a last
``--resume`` finishes. After each kill the manifest must show the run stopped where intended
(the last recorded stage, a file written but not recorded, a file not written yet), and every
state file it records must have the SHA-256 the uninterrupted run recorded for it; at the end
everything must equal the uninterrupted run: metrics (timings aside), every selection, every
annotation, every model's tensors and every state file's bytes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SEG_TASK = 'saal_tasks.tasks.segmentation.task:SegmentationTask'
DET_TASK = 'saal_tasks.tasks.detection.task:DetectionTask'

# Two selections inside one 12-iteration run (rounds train 0-6, 6-9, 9-12) on 32x64 images.
SEG_CONFIG = """
_base_ = ['{root}/configs/seg/ri_saal_tiny_demo.py']
custom_imports = dict(imports=['saal_tasks.tasks.segmentation.task',
                               'saal_tasks.tasks.segmentation.scorers', 'fault_injection'],
                      allow_failed_imports=False)
task = dict(source=dict(data_root='{data}/synthia'), target=dict(data_root='{data}/cityscapes'),
            val=dict(data_root='{data}/cityscapes'), source_size=(32, 64),
            target_size=(32, 64), batch_size=2, target_batch_size=2, log_interval=1000)
al = dict(schedule=dict(round_iters=[6, 9, 12]))
hooks = []
"""

# 8 pool images at most 96 px, 4 labeled at random, one round of 2 queries; 1 epoch of batch 2
# (2 iterations in round 1, 3 in round 2). Threshold 0: an untrained SSD's detections are
# pseudo-boxes, so the scores are not all zero.
DET_CONFIG = """
_base_ = ['{root}/configs/det/ssd_tiny_voc_demo.py']
custom_imports = dict(imports=['saal_tasks.tasks.detection.task',
                               'saal_tasks.tasks.detection.scorers', 'fault_injection'],
                      allow_failed_imports=False)
task = dict(data_root='{data}/', train_dataloader=dict(batch_size=2),
            test_dataloader=dict(batch_size=4), train_cfg=dict(max_epochs=1),
            model=dict(test_cfg=dict(max_per_img=10)), pseudo_score_thr=0.0)
al = dict(num_rounds=1, budget=2, initial_size=4)
hooks = []
"""


@dataclass(frozen=True)
class Kill:
    """A kill point and where the killed run must have stopped.

    Attributes:
        at: ``SAAL_KILL_AT`` (tests/fault_injection.py; counts are per process).
        round: The manifest's round after the kill.
        last_stage: The last stage the manifest records.
        pending: A state file written (or half-written: its temporary file) but not recorded.
        absent: A state file not written yet.
    """

    at: str
    round: int
    last_stage: str
    pending: str = ''
    absent: str = ''


SEG_CHAIN = [
    # Round 1 trains on the source only (no pixel revealed yet): the 5th CE is iteration 5.
    Kill('train:1:5', 0, 'commit', absent='rounds/round_001/model.pth'),
    Kill('score:1:3', 1, 'evaluate', absent='rounds/round_001/scores.npz'),  # 3rd image
    # The region selector chooses each chunk's units while the round scores (al.unit_chunk):
    # killed while writing selected.json, the score stage is not recorded and the resume
    # scores again; killed after the select stage, selected.json was recorded with the scores
    # and the resume reloads both.
    Kill('write:round_001/selected.json', 1, 'evaluate',
         pending='rounds/round_001/selected.json'),
    Kill('select:1', 1, 'score'),
    # Round 2 continues round 1's run: its weights, optimizer state and revealed pixels.
    Kill('train:1:3', 1, 'commit', absent='rounds/round_002/model.pth'),
    # The first manifest write of that process records round 2's training.
    Kill('write:manifest.json:1', 1, 'commit', pending='rounds/round_002/optim.pth'),
    # Killed while labeling round 2: its annotations.json (pixels of images that already hold
    # round 1's) is on disk but not recorded; the resume asks again and merges in order.
    Kill('write:round_002/pool_state.npz', 2, 'select',
         pending='rounds/round_002/pool_state.npz'),
]

DET_CHAIN = [
    Kill('train:1:2', 0, 'commit', absent='rounds/round_001/model.pth'),  # before update 2
    # Two unit-loss calls per image (clean, perturbed): the 3rd is the 2nd image's clean loss.
    Kill('score:1:3', 1, 'evaluate', absent='rounds/round_001/scores.npz'),
    Kill('write:round_001/pool_state.npz', 1, 'select',
         pending='rounds/round_001/pool_state.npz'),
]


def run_tool(cfg: Path, work_dir: Path, task: str, kill_at: str | None = None,
             resume: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f'{TESTS}{os.pathsep}{os.environ.get("PYTHONPATH", "")}',
               OMP_NUM_THREADS='1', SAAL_KILL_TASK=task,
               # A killed detection run leaves its Runner's temporary folder behind.
               TMPDIR=str(cfg.parent))
    env.pop('SAAL_KILL_AT', None)
    env.pop('SAAL_KILL_TRAIN_CALL', None)
    if kill_at:
        env['SAAL_KILL_AT'] = kill_at
    cmd = [sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(cfg), '--work-dir',
           str(work_dir)] + (['--resume'] if resume else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def manifest(work_dir: Path) -> dict:
    return json.loads((work_dir / 'manifest.json').read_text())


def written(work_dir: Path, rel: str) -> bool:
    """Whether ``rel`` exists, whole or as the temporary file of an interrupted write."""
    path = work_dir / rel
    return path.exists() or any(path.parent.glob(f'.{path.name}.*.tmp'))


def outcome(work_dir: Path) -> dict:
    """What must not depend on interruptions (timings aside)."""
    state = manifest(work_dir)
    # Through JSON text: NaN metrics (IoU of absent classes) compare equal to themselves.
    metrics = [json.dumps({k: v for k, v in json.loads(line).items() if not k.endswith('_s')},
                          sort_keys=True)
               for line in (work_dir / 'metrics.jsonl').read_text().splitlines()]
    per_round = {name: {p.parent.name: json.loads(p.read_text())
                        for p in sorted(work_dir.glob(f'rounds/*/{name}'))}
                 for name in ('selected.json', 'annotations.json')}
    return dict(metrics=metrics, **per_round, round=state['round'], stages=state['stages'],
                completed_round=state['completed_round'], pool_state=state['pool_state'])


def models(work_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.parent.name: torch.load(p, map_location='cpu', weights_only=True)
            for p in sorted(work_dir.glob('rounds/*/model.pth'))}


def check_kill_chain(cfg: Path, task: str, chain: list[Kill], reference: Path,
                     work_dir: Path) -> None:
    ref_files = manifest(reference)['files']
    for step, kill in enumerate(chain):
        proc = run_tool(cfg, work_dir, task, kill_at=kill.at, resume=step > 0)
        assert proc.returncode == -signal.SIGKILL, f'{kill.at}: {proc.stderr[-3000:]}'
        state = manifest(work_dir)
        assert (state['round'], state['stages'][-1]) == (kill.round, kill.last_stage), kill.at
        if kill.pending:
            assert written(work_dir, kill.pending) and kill.pending not in state['files'], \
                kill.at
        if kill.absent:
            assert not written(work_dir, kill.absent), kill.at
        # Everything recorded so far is what the uninterrupted run recorded.
        differ = sorted(p for p, digest in state['files'].items() if ref_files.get(p) != digest)
        assert not differ, f'after {kill.at}, these differ from the uninterrupted run: {differ}'
    proc = run_tool(cfg, work_dir, task, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert outcome(work_dir) == outcome(reference)
    got, want = models(work_dir), models(reference)
    assert sorted(got) == sorted(want) and len(want) >= 2
    for name, tensors in want.items():
        assert got[name].keys() == tensors.keys(), name
        assert all(torch.equal(got[name][k], v) for k, v in tensors.items()), name
    # Every state file, byte for byte (optimizer states, scores, pool states included).
    assert manifest(work_dir)['files'] == ref_files
    assert not list(work_dir.rglob('*.tmp'))  # no half-written file survives the resume


def uninterrupted(cfg: Path, task: str, work_dir: Path) -> Path:
    proc = run_tool(cfg, work_dir, task)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work_dir


# ---------------------------------------------------------------------------- segmentation
@pytest.mark.skipif(find_spec('mmseg') is None, reason='needs mmseg')
def test_segmentation_in_run_killed_seven_times_resumes_to_the_uninterrupted_run(tmp_path):
    from saal_tasks.tasks.segmentation.demo import write_seg_demo
    data = tmp_path / 'seg_demo'
    write_seg_demo(data, num_source=12, num_target_train=6, num_target_val=4, size=(32, 64),
                   seed=3)
    cfg = tmp_path / 'seg_tiny.py'
    cfg.write_text(SEG_CONFIG.format(root=ROOT, data=data))
    reference = uninterrupted(cfg, SEG_TASK, tmp_path / 'reference')
    # The run the chain must reproduce: two selections reveal pixels, three rounds train.
    ref = outcome(reference)
    assert len(ref['metrics']) == 3 and sorted(ref['selected.json']) == ['round_001',
                                                                         'round_002']
    selected = ref['selected.json']
    assert all(s['num_units'] > 0 for s in selected.values())
    # Round 2 reveals more pixels of images that hold round 1's: the resume must merge them.
    assert set(selected['round_001']['sample_ids']) & set(selected['round_002']['sample_ids'])
    assert (reference / 'rounds/round_003/optim.pth').exists()
    check_kill_chain(cfg, SEG_TASK, SEG_CHAIN, reference, tmp_path / 'killed')


# ---------------------------------------------------------------------------- detection
@pytest.mark.slow
@pytest.mark.skipif(find_spec('mmdet') is None, reason='needs mmdet')
def test_detection_killed_three_times_resumes_to_the_uninterrupted_run(tmp_path):
    from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo
    data = tmp_path / 'voc' / 'VOCdevkit'
    write_voc_demo(data, splits=(DemoSplit('VOC2007', 'trainval', 6),
                                 DemoSplit('VOC2007', 'test', 3, first_number=101),
                                 DemoSplit('VOC2012', 'trainval', 2, id_prefix='2008_')),
                   image_size=(64, 96), seed=3)
    cfg = tmp_path / 'det_tiny.py'
    cfg.write_text(DET_CONFIG.format(root=ROOT, data=data))
    reference = uninterrupted(cfg, DET_TASK, tmp_path / 'reference')
    ref = outcome(reference)
    assert len(ref['metrics']) == 2 and len(ref['selected.json']['round_001']['sample_ids']) == 2
    check_kill_chain(cfg, DET_TASK, DET_CHAIN, reference, tmp_path / 'killed')
