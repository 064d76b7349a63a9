"""Pool-scoring throughput with 1 and 2 CPU processes (sharded scoring over gloo).

Scores the same digits subset with the same trained SmallCNN (a) in one process with T
threads and (b) in P processes of T/P threads each, every process scoring one contiguous
shard, the scores gathered in rank order (what ``--launcher pytorch`` does). Prints samples/s
and checks that the gathered scores equal the one-process scores.

    python benchmarks/bench_dist_scoring.py --pool 1000 --engine ReferenceEngine
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _setup(engine: str, width: int):
    """A trained digits model and its task, and the scorer to time."""
    from saal_tasks.registry import TASKS
    from saal_tasks.scorers import SharpnessScorer
    task = TASKS.build(dict(type='ClassificationTask', dataset=dict(type='DigitsData'),
                            model=dict(type='SmallCNN', width=width),
                            optimizer=dict(type='Adam', lr=1e-3), epochs=10, log_interval=1000))
    ids = np.arange(200)
    task.set_annotations(task.ground_truth(ids))
    model = task.train(task.build_model(seed=0), ids, seed=0)
    return task, model, SharpnessScorer(engine=dict(type=engine), log_interval=10**9), ids


def _worker(rank, world, port, args, out):
    torch.set_num_threads(max(1, args.threads // world))
    from saal_tasks.engine.sharded import ShardedScoring
    task, model, scorer, labeled = _setup(args.engine, args.width)
    scoring = ShardedScoring(scorer, rank, world)
    if world > 1:
        os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        torch_dist.init_process_group('gloo', rank=rank, world_size=world)
        torch_dist.barrier()
    candidates = np.arange(300, 300 + args.pool)
    start = time.perf_counter()
    result = scoring.score(task, model, candidates, np.random.default_rng(0), labeled)
    seconds = time.perf_counter() - start
    if rank == 0:
        np.save(Path(out) / f'scores_{world}.npy', result.scores)
        (Path(out) / f'time_{world}.json').write_text(json.dumps({'seconds': seconds}))
    if world > 1:
        torch_dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pool', type=int, default=1000)
    parser.add_argument('--engine', default='ReferenceEngine')
    parser.add_argument('--width', type=int, default=32)
    parser.add_argument('--threads', type=int, default=2, help='threads in all')
    parser.add_argument('--procs', type=int, nargs='+', default=[1, 2])
    args = parser.parse_args()
    out = tempfile.mkdtemp()
    rows = []
    for world in args.procs:
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        mp.start_processes(_worker, args=(world, port, args, out), nprocs=world,
                           start_method='spawn')
        seconds = json.loads((Path(out) / f'time_{world}.json').read_text())['seconds']
        rows.append((world, max(1, args.threads // world), args.pool / seconds))
    base = np.load(Path(out) / f'scores_{args.procs[0]}.npy')
    print(f'| processes | threads each | samples/s ({args.engine}, SmallCNN w{args.width}, '
          f'{args.pool} digits) |')
    print('| --- | --- | --- |')
    for world, threads, rate in rows:
        print(f'| {world} | {threads} | {rate:.1f} |')
    top = np.argsort(-base, kind='stable')[:10]
    for world in args.procs[1:]:
        other = np.load(Path(out) / f'scores_{world}.npy')
        # Thread counts differ between the runs, so float reductions may round differently.
        rel = np.max(np.abs(other - base) / np.maximum(np.abs(base), 1e-12))
        same_top = np.array_equal(top, np.argsort(-other, kind='stable')[:10])
        print(f'{world} processes vs {args.procs[0]}: max relative score difference {rel:.2e}, '
              f'same top-10: {same_top}')


if __name__ == '__main__':
    main()
