"""Segmentation with two CPU processes (gloo): one global batch split across ranks, and
sharded scoring that selects what one process selects."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.config import Config

from conftest import free_port
from seg_helpers import ROOT, SIZE, tiny_seg_cfg, write_tiny_seg_data

pytest.importorskip('mmseg')




def _train(rank: int, world: int, port: int, root: str, out: str) -> None:
    torch.set_num_threads(1)
    from mmengine.config import Config

    from saal_tasks.registry import TASKS
    cfg = Config.fromfile(ROOT / 'configs/seg/ri_saal_tiny_demo.py')
    for part in ('source', 'target', 'val'):
        cfg.task[part].data_root = f"{root}/{'synthia' if part == 'source' else 'cityscapes'}"
    cfg.task.source_size = cfg.task.target_size = SIZE
    cfg.task.log_interval = 1000
    if world > 1:
        os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), LOCAL_RANK=str(rank))
        torch_dist.init_process_group('gloo', rank=rank, world_size=world)
    task = TASKS.build(cfg.task)
    # Reveal every pixel of two target images, so the target term takes part too.
    task.set_annotations({i: task.restrict_annotation(task.ground_truth([i])[i],
                                                      torch.arange(SIZE[0] * SIZE[1]).numpy())
                          for i in (0, 1)})
    model = task.build_model(seed=0)
    model, state = task.train_steps(model, [0, 1], seed=1, start=0, stop=4, total=8,
                                    optim_state=None)
    torch.save(model.state_dict(), Path(out) / f'model_{world}_{rank}.pth')
    if world > 1:
        torch_dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_train_one_model(tmp_path):
    from saal_tasks.tasks.segmentation.demo import write_seg_demo
    write_seg_demo(tmp_path / 'data', num_source=8, num_target_train=4, num_target_val=2,
                   size=SIZE, seed=1)
    for world in (1, 2):
        mp.start_processes(_train, args=(world, free_port(), str(tmp_path / 'data'),
                                         str(tmp_path)), nprocs=world, start_method='spawn')
    one = torch.load(tmp_path / 'model_1_0.pth', weights_only=True)
    rank0 = torch.load(tmp_path / 'model_2_0.pth', weights_only=True)
    rank1 = torch.load(tmp_path / 'model_2_1.pth', weights_only=True)
    # Averaged gradients and broadcast BatchNorm statistics: the ranks hold one model.
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # It is the single-process model up to how the pixel means are split across ranks.
    weights = [k for k in one if k.endswith('weight') and one[k].dim() == 4]
    moved = sum(float((rank0[k] - one[k]).norm()) for k in weights)
    assert moved < 0.05 * sum(float(one[k].norm()) for k in weights)


@pytest.mark.slow
def test_torchrun_selects_what_one_process_selects_with_the_same_model(tmp_path):
    """Two ranks under torchrun: sharded RI-SAAL maps and the region selection of round 1
    equal what one process computes with round 1's saved model."""
    from saal_tasks.core.selection import SelectionContext
    from saal_tasks.registry import SCORERS, SELECTORS, TASKS
    data = write_tiny_seg_data(tmp_path / 'data')
    cfg = tiny_seg_cfg(data, tmp_path / 'run')
    config = tmp_path / 'tiny.py'
    cfg.dump(str(config))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                          f'--master_port={free_port()}', str(ROOT / 'tools' / 'train_al.py'),
                          str(config), '--launcher', 'pytorch'],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    selected = json.loads((tmp_path / 'run/rounds/round_001/selected.json').read_text())

    torch.set_num_threads(1)
    cfg = Config.fromfile(str(config))
    task = TASKS.build(cfg.task)
    model = task.build_model(seed=0)
    model.load_state_dict(torch.load(tmp_path / 'run/rounds/round_001/model.pth',
                                     weights_only=True))
    ids = task.sample_ids()
    result = SCORERS.build(cfg.scorer).score(task, model, ids, np.random.default_rng(0))
    selection = SELECTORS.build(cfg.selector).select(SelectionContext(
        candidate_ids=ids, scores=result.scores, labeled_ids=np.zeros(0, np.int64),
        budget=None, rng=np.random.default_rng(0), task=task, model=model,
        unit_scores=result.unit_scores))
    assert selected['sample_ids'] == ids.tolist() == selection.sample_ids.tolist()
    assert selected['units'] == [u.tolist() for u in selection.units]
