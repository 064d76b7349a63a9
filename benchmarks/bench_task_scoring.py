"""Per-sample scoring time over plain inference time, for the task and scorer of any config.

Builds the config's task and scorer, optionally trains the model on ``--train`` labeled
samples, then scores the first ``--pool`` samples of the pool with each engine (the config's
scorer with only its engine replaced) and times plain inference (``task.pseudo_label`` under
``no_grad``, batches of ``--chunk``) on the same samples. Works for any task adapter
(classification, detection, segmentation), so that their SAAL cost can be stated as
"scoring costs N inference passes per sample".

    .venv/bin/python benchmarks/bench_task_scoring.py configs/cls/saal_cnn_digits.py --train 200
    .venv/bin/python benchmarks/bench_task_scoring.py configs/det/ssd_tiny_voc_demo.py --pool 32
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
from mmengine.config import Config

# The perturbation module first: it imports the core package before the scorers package.
from saal_tasks.core.perturbation import Perturbation  # noqa: F401  (import order)
from saal_tasks.registry import SCORERS, TASKS

ENGINES = {
    'reference': dict(type='ReferenceEngine'),
    'fast': dict(type='FastExactEngine'),
    'vectorized': dict(type='VectorizedEngine'),
    'batchwise100': dict(type='BatchwiseEngine', group_size=100),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--pool', type=int, default=64, help='samples scored per engine')
    parser.add_argument('--chunk', type=int, default=16,
                        help='chunk of the fast/vectorized engines and the inference batch')
    parser.add_argument('--engines', default='reference,fast',
                        help=f'comma-separated subset of {",".join(ENGINES)}')
    parser.add_argument('--train', type=int, default=0,
                        help='label and train on this many samples first (0: initial weights)')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the results here')
    args = parser.parse_args(argv)
    unknown = set(args.engines.split(',')) - set(ENGINES)
    if unknown:
        parser.error(f'unknown engines {sorted(unknown)}: choose from {list(ENGINES)}')
    torch.set_num_threads(args.threads)

    cfg = Config.fromfile(args.config)
    task = TASKS.build(copy.deepcopy(cfg.task.to_dict()))
    model = task.build_model(args.seed)
    ids = np.asarray(task.sample_ids(), dtype=np.int64)
    rng = np.random.default_rng(args.seed)
    if args.train:
        labeled = np.sort(rng.choice(ids, size=args.train, replace=False))
        task.set_annotations(task.ground_truth(labeled))
        model = task.train(model, labeled, args.seed)
        ids = np.setdiff1d(ids, labeled)
    model.eval()
    pool = ids[:args.pool]

    def timed(fn) -> float:
        fn(pool[:min(4, len(pool))])  # warm-up
        start = time.perf_counter()
        out = fn(pool)
        return time.perf_counter() - start, out

    def inference(sample_ids):
        with torch.no_grad():
            for _, inputs in task.pool_batches(sample_ids, args.chunk):
                task.pseudo_label(model, inputs)

    seconds, _ = timed(inference)
    rows = [dict(method='inference', s_per_sample=seconds / len(pool), passes=1.0)]
    scores = {}
    for name in args.engines.split(','):
        scorer_cfg = copy.deepcopy(cfg.scorer.to_dict())
        engine = dict(ENGINES[name])
        if name in ('fast', 'vectorized'):
            engine['chunk_size'] = args.chunk
        scorer_cfg.update(engine=engine, log_interval=10**9)
        scorer = SCORERS.build(scorer_cfg)
        seconds, result = timed(lambda s: scorer.score(task, model, s, np.random.default_rng(0)))
        scores[name] = result.scores
        rows.append(dict(method=name, s_per_sample=seconds / len(pool),
                         passes=seconds / len(pool) / rows[0]['s_per_sample'],
                         nonzero=int(np.count_nonzero(result.scores))))
    if 'reference' in scores:
        ref = scores['reference']
        for row in rows[1:]:
            s = scores[row['method']]
            row['max_rel_diff_to_reference'] = float(
                np.max(np.abs(s - ref) / np.maximum(np.abs(ref), 1e-3)))

    print(f'\n{args.config}: pool {len(pool)}, chunk {args.chunk}, {args.threads} threads, '
          f'load {os.getloadavg()[0]:.2f}\n')
    # Non-zero scores: a detector without pseudo-boxes scores 0, which proves nothing.
    print('| method | ms/sample | inference passes/sample | max rel diff to reference | '
          'non-zero scores |')
    print('| --- | ---: | ---: | ---: | ---: |')
    for row in rows:
        diff = row.get('max_rel_diff_to_reference')
        print(f"| {row['method']} | {1000 * row['s_per_sample']:.1f} | {row['passes']:.2f} | "
              f"{'–' if diff is None else format(diff, '.1e')} | "
              f"{row.get('nonzero', '–')}/{len(pool)} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(config=args.config, args=vars(args), rows=rows), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
