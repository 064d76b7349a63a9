"""Two CPU processes (gloo) select exactly what one process selects."""
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
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ['al.num_rounds=2', 'al.budget=10', 'al.subset_size=200', 'task.epochs=15',
             'task.optimizer.lr=0.01', 'task.model.width=8', 'hooks=[]']



def _sharded_scores(rank, world, port, out):
    torch.set_num_threads(1)
    from conftest import make_task
    from saal_tasks.engine.sharded import ShardedScoring
    from saal_tasks.scorers import SharpnessScorer
    task = make_task()
    ids = np.arange(300)
    task.set_annotations(task.ground_truth(ids))
    # Trained before joining the group: the same model on every rank, so only the sharded
    # scoring differs between the runs.
    model = task.train(task.build_model(seed=0), ids, seed=0)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch_dist.init_process_group('gloo', rank=rank, world_size=world)
    scoring = ShardedScoring(SharpnessScorer(engine=dict(type='ReferenceEngine')), rank, world)
    result = scoring.score(task, model, np.arange(400, 457), np.random.default_rng(0), ids)
    if rank == 0:
        np.savez(Path(out) / f'scores_{world}.npz', ids=result.sample_ids, scores=result.scores)
    torch_dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_scoring_equals_one_process(tmp_path):
    for world in (1, 2):
        mp.start_processes(_sharded_scores, args=(world, free_port(), str(tmp_path)),
                           nprocs=world, start_method='spawn')
    one = np.load(tmp_path / 'scores_1.npz')
    two = np.load(tmp_path / 'scores_2.npz')
    assert np.array_equal(one['ids'], np.arange(400, 457))  # gathered in the original order
    assert np.array_equal(one['ids'], two['ids'])
    np.testing.assert_array_equal(one['scores'], two['scores'])


@pytest.mark.slow
def test_torchrun_two_ranks_select_like_one(tmp_path):
    config = ROOT / 'configs' / 'cls' / 'saal_cnn_digits.py'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    one = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(config),
                          '--work-dir', str(tmp_path / 'one'), '--cfg-options', *OVERRIDES],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                          f'--master_port={free_port()}', str(ROOT / 'tools' / 'train_al.py'),
                          str(config), '--launcher', 'pytorch', '--work-dir',
                          str(tmp_path / 'two'), '--cfg-options', *OVERRIDES],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    for r in (1, 2):
        a = json.loads((tmp_path / 'one' / 'rounds' / f'round_{r:03d}' / 'selected.json')
                       .read_text())
        b = json.loads((tmp_path / 'two' / 'rounds' / f'round_{r:03d}' / 'selected.json')
                       .read_text())
        assert a['sample_ids'] == b['sample_ids']
    metrics = [json.loads(l) for l in (tmp_path / 'two' / 'metrics.jsonl').read_text()
               .splitlines()]
    assert max(m['accuracy'] for m in metrics) > 40  # the distributed training learned (chance: 10)
