"""Acquisition speed and exactness, side by side: the authors' loop, our engines, inference.

One run scores the same pool with the same model (ResNet-18 for 32x32 inputs, eval mode, on
CIFAR-shaped synthetic images, see ``synthetic_data.py``) with

* ``authors``: the released code's loop (deep copy, backward, in-place ε, forward per sample;
  ``authors_loop.py``), the baseline of every comparison;
* ``reference``: ``ReferenceEngine`` (exact, one sample at a time, perturbs in place);
* ``fast``: ``FastExactEngine`` (exact, per-layer factors, chunks of ``--chunk`` for SAM and
  of ``--asam-chunk`` for ASAM: the chunk sizes of the shipped scorer configs by default);
* ``batchwise10`` / ``batchwise100``: ``BatchwiseEngine`` (one ε per group: an approximation);

for SAM (ρ = 0.05, q = 2) and ASAM (ρ = 0.05), plus plain batched inference of the same model
(batches of ``--chunk``), the yardstick for "forward passes per sample". Every method runs in
its own process (fresh peak-memory counter) on the same saved model, after a short warm-up.

Printed and written (``--out``): a Markdown table and a JSON file with samples/s, speed-up over
``authors``, forward passes per sample (inference samples/s over the method's) and the same
paired (the method's seconds over those of inference on the same pool in the same process,
timed right before and after it; the median over runs), max
relative score difference to ``authors`` (``|s − a| / max(|a|, 1e-3)``) and the same for the
clean losses (the floor set by batched against one-sample kernels), Spearman rank correlation
and top-10 % overlap with ``authors``, for ``fast`` the seconds of its factorisation check
(once per model and round, on the first chunk; paid in the warm-up, so that samples/s and
passes are per sample, and timed apart: that chunk with a fresh scorer less the same chunk
with the checked one), peak memory (peak RSS of the method's process, or CUDA
peak allocation, and its rise during the method), and the 1-minute load average around it.

    .venv/bin/python benchmarks/bench_acquisition.py    # CPU, ~7 min quiet (2 vCPUs)
    .venv/bin/python benchmarks/bench_acquisition.py --pool 100 --methods fast,batchwise100
    .venv/bin/python benchmarks/bench_acquisition.py --device cuda --pool 2000
    .venv/bin/python benchmarks/bench_acquisition.py --threads 1,2   # one table per thread count
    .venv/bin/python benchmarks/bench_acquisition.py --repeats 3     # median and range of 3 runs
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from mmengine.config import Config

# The perturbation module first: it imports the core package before the scorers package.
from saal_tasks.registry import PERTURBATIONS, TASKS
from saal_tasks.core.allocator import keep_freed_memory
from saal_tasks.scorers import SharpnessScorer

from authors_loop import authors_loop_scores
from machine import cpu_name
import synthetic_data  # noqa: F401  (registers SyntheticImagesData)

PERTURBATION_CFGS = {
    'sam': dict(type='SAMPerturbation', rho=0.05, q=2),
    'asam': dict(type='ASAMPerturbation', rho=0.05),
}
SCORING_METHODS = ('authors', 'reference', 'fast', 'batchwise10', 'batchwise100')
BASELINE = 'authors'


def shipped_chunk(scorer_config: str) -> int:
    """The ``FastExactEngine`` chunk size of a shipped scorer config, so that the benchmark
    times what the configs run (``configs/_base_/scorers/<scorer_config>.py``)."""
    path = Path(__file__).resolve().parents[1] / 'configs/_base_/scorers' / f'{scorer_config}.py'
    return int(Config.fromfile(str(path)).scorer.engine.chunk_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--pool', type=int, default=500, help='samples scored per method')
    parser.add_argument('--chunk', type=int, default=shipped_chunk('saal_sam'),
                        help='FastExactEngine chunk size for SAM and inference batch size '
                             '(default: that of configs/_base_/scorers/saal_sam.py)')
    parser.add_argument('--asam-chunk', type=int, default=shipped_chunk('saal_asam'),
                        help='FastExactEngine chunk size for ASAM (default: that of '
                             'configs/_base_/scorers/saal_asam.py)')
    parser.add_argument('--dtype', choices=('float32', 'float64'), default='float32')
    parser.add_argument('--threads', default=str(torch.get_num_threads()),
                        help='torch intra-op threads in every method process; a comma-separated '
                        'list (e.g. 1,2) runs the whole table once per thread count')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--methods', default=','.join(SCORING_METHODS),
                        help=f'comma-separated subset of {",".join(SCORING_METHODS)}')
    parser.add_argument('--perturbations', default='sam,asam', help='comma-separated: sam,asam')
    parser.add_argument('--warmup', type=int, default=8,
                        help="samples scored before timing (with the same scorer: "
                        "FastExactEngine's check falls here; 0 times it with the pool)")
    parser.add_argument('--train-samples', type=int, default=512,
                        help='labeled synthetic samples the model is trained on first')
    parser.add_argument('--train-epochs', type=int, default=1,
                        help='epochs of that training (0: random weights, calibrated BN)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None,
                        help='output folder (default work_dirs/bench_acquisition/<time>)')
    parser.add_argument('--repeats', type=int, default=1,
                        help='timed runs of every method, interleaved with the other methods '
                        '(round-robin); the table gives the median and the range')
    parser.add_argument('--allocator', choices=('kept', 'default'), default='kept',
                        help="'kept': glibc keeps freed memory for reuse, as tools/train_al.py "
                        "and tools/query.py set it (saal_tasks/core/allocator.py); 'default': "
                        "glibc's own behaviour")
    parser.add_argument('--in-process', action='store_true',
                        help='run every method in this process (no per-method peak memory)')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.methods.split(',')) - set(SCORING_METHODS)
    if unknown:
        parser.error(f'unknown methods {sorted(unknown)}: choose from {SCORING_METHODS}')
    unknown = set(args.perturbations.split(',')) - set(PERTURBATION_CFGS)
    if unknown:
        parser.error(f'unknown perturbations {sorted(unknown)}: choose from sam, asam')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda but torch sees no CUDA device')
    try:
        args.thread_counts = [int(t) for t in str(args.threads).split(',')]
    except ValueError:
        parser.error(f'--threads takes integers separated by commas, got {args.threads!r}')
    if min([args.pool, args.chunk, args.asam_chunk, args.repeats, *args.thread_counts]) < 1 \
            or args.warmup < 0:
        parser.error('--pool, --chunk, --asam-chunk, --repeats and --threads must be >= 1, '
                     '--warmup >= 0')
    # One thread count per table: the workers of a sweep are started with the one they time.
    args.threads = args.thread_counts[0]
    return args


# --------------------------------------------------------------------------- set-up
def build_task(args: argparse.Namespace):
    """The classification task on synthetic images (same data in every process)."""
    return TASKS.build(dict(
        type='ClassificationTask',
        dataset=dict(type='SyntheticImagesData', num_train=args.train_samples + args.pool,
                     num_test=16, seed=args.seed),
        model=dict(type='ResNet18CIFAR'), optimizer=dict(type='Adam', lr=1e-3),
        epochs=max(args.train_epochs, 1), batch_size=64, eval_batch_size=args.chunk,
        device=args.device, dtype=args.dtype, log_interval=10**6))


def pool_ids(args: argparse.Namespace) -> np.ndarray:
    """The scored pool: the samples after the training ones."""
    return np.arange(args.train_samples, args.train_samples + args.pool, dtype=np.int64)


def prepare_model(args: argparse.Namespace, path: Path) -> None:
    """Build, optionally train, calibrate batch norm, and save the benchmarked model."""
    task = build_task(args)
    model = task.build_model(args.seed)
    train_ids = np.arange(args.train_samples, dtype=np.int64)
    if args.train_epochs > 0 and args.train_samples > 0:
        task.set_annotations(task.ground_truth(train_ids))
        model = task.train(model, train_ids, args.seed)
    if args.train_samples > 0:
        # Cumulative running statistics over the training images: a well-conditioned
        # eval-mode network even with random or briefly trained weights.
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for _, x in task.pool_batches(train_ids, 64):
                model(x)
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
    torch.save(model.eval().state_dict(), path)


def load_model(args: argparse.Namespace, task, path: Path) -> torch.nn.Module:
    model = task.build_model(args.seed)
    model.load_state_dict(torch.load(path, map_location=args.device, weights_only=True))
    return model.eval()


def run_inference(task, model: torch.nn.Module, sample_ids: np.ndarray, batch: int) -> None:
    """Plain batched inference of ``sample_ids``: the yardstick of "forward passes per sample"."""
    with torch.no_grad():
        for _, x in task.pool_batches(sample_ids, batch):
            model(x)


# --------------------------------------------------------------------------- one measurement
def _status_mb(field: str) -> float:
    """A memory line of ``/proc/self/status`` in MiB: ``VmRSS`` (now) or ``VmHWM`` (peak).

    ``VmHWM`` belongs to this process image; ``getrusage``'s ``ru_maxrss`` would carry the
    parent's peak across ``exec``.
    """
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field} missing from /proc/self/status')


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def chunk_for(args: argparse.Namespace, perturbation: str | None) -> int:
    """The exact engine's chunk for a perturbation: ``--asam-chunk`` for ASAM, else ``--chunk``."""
    return args.asam_chunk if perturbation == 'asam' else args.chunk


def _scorer(method: str, perturbation: str, chunk: int) -> SharpnessScorer:
    engine = {
        'reference': dict(type='ReferenceEngine'),
        'fast': dict(type='FastExactEngine', chunk_size=chunk),
        'batchwise10': dict(type='BatchwiseEngine', group_size=10),
        'batchwise100': dict(type='BatchwiseEngine', group_size=100),
    }[method]
    return SharpnessScorer(perturbation=PERTURBATION_CFGS[perturbation], engine=engine,
                           log_interval=10**9)


def measure(args: argparse.Namespace, spec: dict[str, str], model_path: Path) -> dict[str, Any]:
    """Warm up, then time one method on the whole pool; scores and memory included."""
    torch.set_num_threads(args.threads)
    if args.allocator == 'kept':
        keep_freed_memory()
    task = build_task(args)
    model = load_model(args, task, model_path)
    ids = pool_ids(args)
    method, pert = spec['method'], spec.get('perturbation')

    chunk = chunk_for(args, pert)
    # One scorer for the warm-up and the timed run: FastExactEngine checks its factorisation
    # against autograd once per model (engine_guard), a fixed cost per round that the warm-up
    # pays here and that is timed on its own below, so that the samples/s are per sample.
    scorer = None if method in ('inference', 'authors') else _scorer(method, pert, chunk)

    def infer(sample_ids: np.ndarray) -> None:
        run_inference(task, model, sample_ids, args.chunk)

    def run(sample_ids: np.ndarray,
            scorer: SharpnessScorer | None = scorer) -> tuple[np.ndarray, np.ndarray] | None:
        """Scores and clean losses (``None`` for inference)."""
        if method == 'inference':
            infer(sample_ids)
            return None
        if method == 'authors':
            return authors_loop_scores(task, model, sample_ids,
                                       PERTURBATIONS.build(PERTURBATION_CFGS[pert]))
        assert scorer is not None
        result = scorer.score(task, model, sample_ids, np.random.default_rng(0))
        return result.scores, result.extras['clean_loss']

    def timed(call: Callable[[], Any]) -> tuple[float, Any]:
        """Seconds of ``call()`` (the device synchronised around it), and its result."""
        _sync(args.device)
        start = time.perf_counter()
        result = call()
        _sync(args.device)
        return time.perf_counter() - start, result

    cuda = args.device.startswith('cuda')
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_mb = torch.cuda.memory_allocated() / 2**20
    else:
        base_mb = _status_mb('VmRSS')
    load_before = os.getloadavg()[0]
    if args.warmup:
        run(ids[:args.warmup])
    paired = method != 'inference'
    if paired:
        # The yardstick timed in this process right before and after the method: the machine's
        # speed drifts between processes (inference alone moved by up to 25 % over minutes).
        infer(ids[:args.chunk])
        inference_s = timed(lambda: infer(ids))[0]
    seconds, out = timed(lambda: run(ids))
    if paired:
        inference_s = (inference_s + timed(lambda: infer(ids))[0]) / 2
    check_s = None
    if method == 'fast':
        # The check's cost: the first chunk with a fresh scorer (checked) less the same chunk
        # with the one that has checked this model already. Its peak memory counts below.
        first = ids[:chunk]
        fresh = _scorer(method, pert, chunk)
        check_s = timed(lambda: run(first, fresh))[0] - timed(lambda: run(first))[0]
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = _status_mb('VmHWM')
    return dict(method=method, perturbation=pert, seconds=seconds,
                samples_per_s=len(ids) / seconds, check_s=check_s,
                paired_passes=seconds / inference_s if paired else None, peak_mb=peak_mb,
                peak_over_start_mb=peak_mb - base_mb,
                load_1m=(load_before + os.getloadavg()[0]) / 2,
                scores=None if out is None else out[0].tolist(),
                clean=None if out is None else out[1].tolist())


def run_isolated(args: argparse.Namespace, spec: dict[str, str], model_path: Path,
                 argv: list[str]) -> dict[str, Any]:
    """:func:`measure` in a fresh process (its own peak-memory counter)."""
    result_path = model_path.parent / f'{spec["method"]}_{spec.get("perturbation")}.json'
    job = dict(spec=spec, model=str(model_path), result=str(result_path))
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, '--worker', json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{spec} failed:\n{proc.stderr[-3000:]}')
    return json.loads(result_path.read_text())


# --------------------------------------------------------------------------- comparison
def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's runs as one row: median time (the run list kept), highest peak memory.

    The scores are the first run's (every run scores the same pool the same way).
    """
    seconds = float(np.median([r['seconds'] for r in runs]))
    pool = runs[0]['samples_per_s'] * runs[0]['seconds']
    row = dict(runs[0])
    checks = [r['check_s'] for r in runs if r.get('check_s') is not None]
    paired = [r['paired_passes'] for r in runs if r.get('paired_passes') is not None]
    row.update(seconds=seconds, samples_per_s=pool / seconds,
               check_s=float(np.median(checks)) if checks else None,
               paired_passes=float(np.median(paired)) if paired else None,
               paired_passes_runs=paired,
               samples_per_s_runs=[r['samples_per_s'] for r in runs],
               peak_mb=max(r['peak_mb'] for r in runs),
               peak_over_start_mb=max(r['peak_over_start_mb'] for r in runs),
               load_1m=float(np.mean([r['load_1m'] for r in runs])))
    return row


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> float:
    """Share of ``b``'s top ``fraction`` that is also in ``a``'s (stable order on ties)."""
    k = max(1, int(round(fraction * len(a))))
    top_a = set(np.argsort(-a, kind='stable')[:k].tolist())
    top_b = set(np.argsort(-b, kind='stable')[:k].tolist())
    return len(top_a & top_b) / k


def compare(results: list[dict[str, Any]]) -> None:
    """Add speed-up, forward passes per sample and agreement with ``authors`` to each row."""
    inference = next((r for r in results if r['method'] == 'inference'), None)
    for r in results:
        if inference is not None:
            r['forward_passes_per_sample'] = inference['samples_per_s'] / r['samples_per_s']
        base = next((b for b in results if b['method'] == BASELINE
                     and b['perturbation'] == r['perturbation']), None)
        if base is None or r['scores'] is None:
            continue
        a, s = np.asarray(base['scores']), np.asarray(r['scores'])
        r['speedup'] = r['samples_per_s'] / base['samples_per_s']
        r['max_rel_diff'] = float(np.max(np.abs(s - a) / np.maximum(np.abs(a), 1e-3)))
        # The same measure on the clean losses: the floor set by batched vs one-sample kernels.
        ca, cs = np.asarray(base['clean']), np.asarray(r['clean'])
        r['clean_max_rel_diff'] = float(np.max(np.abs(cs - ca) / np.maximum(np.abs(ca), 1e-3)))
        r['spearman'] = spearman(a, s)
        r['top10_overlap'] = top_overlap(a, s)


def markdown(results: list[dict[str, Any]]) -> str:
    def fmt(v: Any, spec: str) -> str:
        return '–' if v is None else format(v, spec)

    def ranged(r: dict[str, Any], key: str, spec: str) -> str:
        """The median ``r[key]``, with the range of its runs where there are several."""
        runs = r.get(f'{key}_runs') or []
        if len(runs) < 2:
            return fmt(r.get(key), spec)
        return f"{r[key]:{spec}} ({min(runs):{spec}}–{max(runs):{spec}})"

    lines = ['| method | ε | samples/s | × authors | fwd passes/sample | (paired) | max rel diff | '
             '(clean) | Spearman | top-10 % | check s | peak MB | +MB | load |',
             '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: '
             '| ---: | ---: |']
    for r in results:
        lines.append(
            f"| {r['method']} | {r['perturbation'] or '–'} | {ranged(r, 'samples_per_s', '.1f')} | "
            f"{fmt(r.get('speedup'), '.2f')} | {fmt(r.get('forward_passes_per_sample'), '.2f')} | "
            f"{ranged(r, 'paired_passes', '.2f')} | "
            f"{fmt(r.get('max_rel_diff'), '.1e')} | {fmt(r.get('clean_max_rel_diff'), '.1e')} | "
            f"{fmt(r.get('spearman'), '.5f')} | {fmt(r.get('top10_overlap'), '.2f')} | "
            f"{fmt(r.get('check_s'), '.2f')} | {r['peak_mb']:.0f} | "
            f"{r['peak_over_start_mb']:.0f} | {r['load_1m']:.2f} |")
    return '\n'.join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    cpu = cpu_name()
    env = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), torch=torch.__version__,
               python=platform.python_version(), cpu=cpu, cpus=os.cpu_count(),
               threads=args.threads, device=args.device)
    if args.device.startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name()
    return env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        result = measure(args, job['spec'], Path(job['model']))
        Path(job['result']).write_text(json.dumps(result))
        return 0
    out = Path(args.out or f'work_dirs/bench_acquisition/'
               f'{datetime.datetime.now():%Y%m%d_%H%M%S}')
    out.mkdir(parents=True, exist_ok=True)
    specs = [dict(method='inference')] + [
        dict(method=m, perturbation=p) for p in args.perturbations.split(',')
        for m in args.methods.split(',')]
    sections, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / 'model.pt'
        print(f'preparing the model ({args.train_epochs} epoch(s) on {args.train_samples} '
              f'synthetic samples) ...', flush=True)
        torch.set_num_threads(args.thread_counts[0])
        prepare_model(args, model_path)
        for threads in args.thread_counts:
            # The same saved model for every thread count, so only the threads differ.
            targs = argparse.Namespace(**vars(args) | {'threads': threads})
            header, results, env = run_table(targs, specs, model_path,
                                             [*argv, '--threads', str(threads)])
            sections.append(header + '\n\n' + markdown(results))
            runs.append(dict(environment=env, results=results))
    text = '\n\n'.join(sections)
    print('\n' + text)
    (out / 'table.md').write_text(text + '\n')
    (out / 'results.json').write_text(json.dumps(
        dict(args=vars(args) | {'worker': None}, runs=runs), indent=1))
    print(f'\nwritten: {out}/table.md, {out}/results.json')
    return 0


def run_table(args: argparse.Namespace, specs: list[dict[str, str]], model_path: Path,
              argv: list[str]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Every method at ``args.threads`` threads: the table's header, the rows, the environment.

    Args:
        args: Parsed options, with ``threads`` the one thread count of this table.
        specs: The methods to time (``method`` and optional ``perturbation``).
        model_path: The saved model every method loads.
        argv: Command line for the method processes (ends with this ``--threads``).
    """
    torch.set_num_threads(args.threads)
    env = environment(args)
    env['load_start'] = os.getloadavg()
    print(f'{args.threads} thread(s):', flush=True)
    # Round-robin over the methods, so that a slow spell of the machine touches them all
    # rather than one method's every run.
    runs: list[list[dict[str, Any]]] = [[] for _ in specs]
    for repeat in range(args.repeats):
        for spec, spec_runs in zip(specs, runs):
            print(f'  {spec}{f" (run {repeat + 1}/{args.repeats})" if args.repeats > 1 else ""}'
                  f' ...', end=' ', flush=True)
            result = (measure(args, spec, model_path) if args.in_process
                      else run_isolated(args, spec, model_path, argv))
            print(f"{result['samples_per_s']:.1f} samples/s (load {result['load_1m']:.2f})",
                  flush=True)
            spec_runs.append(result)
    results = [median_run(spec_runs) for spec_runs in runs]
    env['load_end'] = os.getloadavg()
    compare(results)
    timing = f'median (range) of {args.repeats} runs' if args.repeats > 1 else '1 run'
    header = (f"{env['date']}, {env['cpu']} ({env['cpus']} CPUs, {args.threads} threads), "
              f"device {args.device}{' ' + env['gpu'] if 'gpu' in env else ''}, torch "
              f"{env['torch']}; ResNet-18 (32x32 stem, eval), {args.dtype}, pool {args.pool}, "
              f"chunk {args.chunk} (ASAM {args.asam_chunk}), allocator {args.allocator}, "
              f"{timing} per method; load average at start/end "
              f"{env['load_start'][0]:.2f}/{env['load_end'][0]:.2f}")
    return header, results, env


if __name__ == '__main__':
    sys.exit(main())
