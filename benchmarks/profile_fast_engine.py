"""Where FastExactEngine's time goes: its phases and the heaviest operators, per perturbation.

Scores one pool with ``FastExactEngine`` under ``torch.profiler`` (the same ResNet-18, data and
options as ``bench_acquisition.py``, ASAM at ``--asam-chunk``; random weights with calibrated
batch norm unless ``--train-epochs``; the once-per-model factorisation check paid in a warm-up)
and prints, per perturbation, each phase of a chunk — the clean forward
(pseudo-labels and losses), the backward pass to the layer outputs, the per-layer norm terms
(per-sample gradients formed there) and the perturbed forward — in milliseconds per sample and
in forward-pass equivalents (plain batched inference of the same pool, timed first), then the
operators with the most self time.

    .venv/bin/python benchmarks/profile_fast_engine.py --threads 1 --pool 96
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import bench_acquisition as bench

PHASES = ('fast_exact.clean_forward', 'fast_exact.backward', 'fast_exact.norm',
          'fast_exact.perturbed_forward')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a.startswith('--train-epochs') for a in argv):
        argv = [*argv, '--train-epochs', '0']
    if not any(a.startswith('--pool') for a in argv):
        argv = [*argv, '--pool', '96']
    args = bench.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.allocator == 'kept':
        bench.keep_freed_memory()  # as the benchmark's method processes and the tools
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'model.pt'
        bench.prepare_model(args, path)
        task = bench.build_task(args)
        model = bench.load_model(args, task, path)
    ids = bench.pool_ids(args)

    def infer() -> None:
        bench.run_inference(task, model, ids, args.chunk)

    infer()
    start = time.perf_counter()
    infer()
    ms_forward = (time.perf_counter() - start) * 1e3 / len(ids)
    print(f'{bench.environment(args)["cpu"]}, {args.threads} thread(s), pool {len(ids)}, '
          f'chunk {args.chunk}: inference {ms_forward:.2f} ms/sample')
    for pert in args.perturbations.split(','):
        chunk = bench.chunk_for(args, pert)  # the benchmark's and the configs' chunk
        scorer = bench._scorer('fast', pert, chunk)
        # Warm-up, with the once-per-model factorisation check, so that the profile is per sample.
        scorer.score(task, model, ids[:chunk], np.random.default_rng(0))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            scorer.score(task, model, ids, np.random.default_rng(0))
            total = (time.perf_counter() - start) * 1e3 / len(ids)
        events = prof.key_averages()
        print(f'\n{pert} (chunk {chunk}): {total:.2f} ms/sample = {total / ms_forward:.2f} '
              f'forward passes (profiled)')
        by_name = {e.key: e for e in events}
        for phase in PHASES:
            e = by_name.get(phase)
            if e is None:
                continue
            ms = e.cpu_time_total / 1e3 / len(ids)
            print(f'  {phase.split(".")[1]:<18} {ms:7.2f} ms/sample  {ms / ms_forward:5.2f} passes')
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=14,
                                        max_name_column_width=36))
    return 0


if __name__ == '__main__':
    sys.exit(main())
