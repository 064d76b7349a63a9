"""SSD training with two CPU processes (gloo) through mmengine's Runner: one model on all ranks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from conftest import free_port

pytest.importorskip('mmdet')



def _train(rank: int, world: int, port: int, voc_root: str, out: str) -> None:
    torch.set_num_threads(1)
    from test_detection import make_task
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), LOCAL_RANK=str(rank),
                      RANK=str(rank), WORLD_SIZE=str(world))
    torch_dist.init_process_group('gloo', rank=rank, world_size=world)
    task = make_task(Path(voc_root))
    ids = task.sample_ids()[:8]
    task.set_annotations(task.ground_truth(ids))
    before = task.build_model(seed=0)
    initial = {k: v.clone() for k, v in before.state_dict().items()}
    model = task.train(before, ids, seed=1)
    torch.save({'initial': initial, 'trained': model.state_dict()},
               Path(out) / f'ssd_{rank}.pth')
    torch_dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_train_one_ssd(tmp_path):
    from saal_tasks.tasks.detection.demo import write_voc_demo
    from test_detection import SPLITS
    root = tmp_path / 'VOCdevkit'
    write_voc_demo(root, splits=SPLITS, image_size=(96, 128), seed=3)
    mp.start_processes(_train, args=(2, free_port(), str(root), str(tmp_path)), nprocs=2,
                       start_method='spawn')
    rank0 = torch.load(tmp_path / 'ssd_0.pth', weights_only=True)
    rank1 = torch.load(tmp_path / 'ssd_1.pth', weights_only=True)
    trained0, trained1 = rank0['trained'], rank1['trained']
    # Each rank trained on its own half of the images; DDP's averaged gradients and the
    # broadcast BatchNorm statistics leave one model on both ranks.
    assert all(torch.equal(trained0[k], trained1[k]) for k in trained0)
    assert not all(torch.equal(trained0[k], rank0['initial'][k]) for k in trained0)
    assert np.isfinite([float(v.float().sum()) for v in trained0.values()]).all()
