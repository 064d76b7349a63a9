"""Diagnose a trained round of an active-learning run: ρ-sweep and 2-D loss landscape.

Examples::

    python tools/diagnose.py rho-sweep configs/cls/saal_cnn_digits_diagnostics.py \\
        --work-dir work_dirs/run --round 5 --rhos 0.01 0.02 0.05 0.1 0.2
    python tools/diagnose.py landscape configs/cls/saal_cnn_digits_diagnostics.py \\
        --work-dir work_dirs/run --round 5 --set labeled --steps 21 --span 1.0

The model of round ``R`` is read from ``WORK_DIR/rounds/round_RRR/model.pth`` (or from
``WORK_DIR/diagnostics/round_RRR_model.pth``, written by ``SharpnessDiagnosticsHook`` with
``save_model=True``), the labeled set from the run's pool state. Outputs go to
``WORK_DIR/diagnostics/`` (``rho_sweep_round_RRR.{json,png}``,
``landscape_round_RRR_<set>.{json,png}``) unless ``--out-dir`` says otherwise.
Exit codes: 0 done, 2 bad input (one ``error:`` line).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Running from a checkout without installing still finds the package (and projects/).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from saal_tasks.cli import load_config, parse_cfg_options, run_reporting_errors  # noqa: E402
from saal_tasks.core.build import build_component  # noqa: E402
from saal_tasks.core.errors import ConfigError, ResumeError  # noqa: E402
from saal_tasks.core.io import atomic_write_json  # noqa: E402
from saal_tasks.core.pool_state import PoolState  # noqa: E402
from saal_tasks.registry import TASKS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Diagnostics of a trained round of a run')
    sub = parser.add_subparsers(dest='command', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('config', help='the config the run was started with')
    common.add_argument('--work-dir', help='the run folder (default: work_dirs/<config name>)')
    common.add_argument('--round', type=int, help='round whose model to diagnose (default: '
                        'the last round with a saved model)')
    common.add_argument('--num-samples', type=int, default=500,
                        help='samples of the chosen set to use (a seeded uniform subset)')
    common.add_argument('--seed', type=int, default=0, help='seed of subsets and directions')
    common.add_argument('--out-dir', help='output folder (default: WORK_DIR/diagnostics)')
    common.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                        help='override config entries (e.g. task.device=cuda)')
    sweep = sub.add_parser('rho-sweep', parents=[common],
                           help='psi(rho), relative margin and query overlap for several rho '
                           'on the unlabeled pool of a round')
    sweep.add_argument('--rhos', type=float, nargs='+',
                       default=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
    sweep.add_argument('--budget', type=int, help='query size for the top-k overlap '
                       '(default: the config\'s al.budget)')
    sweep.add_argument('--no-truth', action='store_true',
                       help='skip ground-truth quantities (the relative margin)')
    sweep.add_argument('--no-taylor', action='store_true',
                       help='skip the Theorem 3.3 check (one Hessian decomposition of the pool)')
    land = sub.add_parser('landscape', parents=[common],
                          help='2-D loss landscape around the weights of a round')
    land.add_argument('--set', choices=['labeled', 'unlabeled'], default='labeled',
                      help='samples whose mean loss is plotted (ground-truth targets)')
    land.add_argument('--span', type=float, default=1.0)
    land.add_argument('--steps', type=int, default=21)
    return parser.parse_args(argv)


def _model_path(work_dir: Path, round_idx: int) -> Path | None:
    for path in (work_dir / 'rounds' / f'round_{round_idx:03d}' / 'model.pth',
                 work_dir / 'diagnostics' / f'round_{round_idx:03d}_model.pth'):
        if path.exists():
            return path
    return None


def _pick_round(work_dir: Path, requested: int | None) -> tuple[int, Path]:
    if not work_dir.is_dir():
        raise ResumeError(f'{work_dir} is not a run folder: pass the --work-dir of a run')
    if requested is not None:
        path = _model_path(work_dir, requested)
        if path is None:
            raise ResumeError(
                f'no model saved for round {requested} in {work_dir}: use a round with '
                'rounds/round_NNN/model.pth, or rerun with '
                "SharpnessDiagnosticsHook(save_model=True)")
        return requested, path
    rounds = sorted(int(p.name[len('round_'):]) for p in (work_dir / 'rounds').glob('round_*')
                    if p.name[len('round_'):].isdigit())
    rounds += sorted(int(p.name[6:9]) for p in (work_dir / 'diagnostics').glob(
        'round_[0-9][0-9][0-9]_model.pth'))
    for r in sorted(set(rounds), reverse=True):
        path = _model_path(work_dir, r)
        if path is not None:
            return r, path
    raise ResumeError(f'{work_dir} holds no saved model: run with '
                      'SharpnessDiagnosticsHook(save_model=True) or '
                      "al.schedule=dict(type='ContinueSchedule')")


def _pool_state(work_dir: Path, expected_ids: np.ndarray) -> PoolState:
    """The newest pool state of the run: the round array is the whole labeling history."""
    states = sorted((work_dir / 'rounds').glob('round_*/pool_state.npz'))
    if not states:
        raise ResumeError(f'{work_dir} holds no rounds/round_NNN/pool_state.npz: is it a run '
                          'folder of tools/train_al.py?')
    return PoolState.load(states[-1], expected_ids=expected_ids)


def _subset(ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size < 1:
        raise ConfigError(f'--num-samples must be >= 1, got {size}')
    if len(ids) <= size:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size, replace=False))


def _setup(args: argparse.Namespace):
    cfg = load_config(args.config, work_dir=args.work_dir,
                      cfg_options=parse_cfg_options(args.cfg_options))
    work_dir = Path(cfg.work_dir)
    round_idx, model_path = _pick_round(work_dir, args.round)
    task = build_component(TASKS, cfg.task, 'task')
    state = _pool_state(work_dir, task.sample_ids())
    model = task.build_model(0)
    model.load_state_dict(torch.load(model_path, map_location='cpu', weights_only=True))
    model.eval()
    labeled = state.labeled_ids(up_to_round=round_idx)
    rounds = np.asarray(state.rounds)
    # Unlabeled *at that round*: never labeled, or labeled by a later round's query.
    unlabeled = state.sample_ids[(rounds == 0) | (rounds > round_idx)]
    out_dir = Path(args.out_dir) if args.out_dir else work_dir / 'diagnostics'
    return cfg, task, model, round_idx, labeled, unlabeled, out_dir


def rho_sweep_command(args: argparse.Namespace) -> int:
    from saal_tasks.diagnostics.plots import plot_sweep
    from saal_tasks.diagnostics.sweep import rho_sweep
    cfg, task, model, round_idx, labeled, unlabeled, out_dir = _setup(args)
    scorer = cfg.get('scorer', {})
    perturbation = dict(scorer.get('perturbation') or dict(type='SAMPerturbation', rho=0.05))
    budget = args.budget or cfg.get('al', {}).get('budget', 10)
    pool = _subset(unlabeled, args.num_samples, args.seed)
    results = rho_sweep(task, model, pool, perturbation, args.rhos, budget=budget,
                        with_truth=not args.no_truth, taylor=not args.no_taylor,
                        seed=args.seed,
                        objective_reduction=scorer.get('objective_reduction', 'mean'),
                        reduction=scorer.get('score_reduction', 'sum'))
    stem = out_dir / f'rho_sweep_round_{round_idx:03d}'
    atomic_write_json(stem.with_suffix('.json'), {
        'round': round_idx, 'num_labeled': int(len(labeled)), 'num_samples': int(len(pool)),
        'perturbation': perturbation, 'budget': budget, 'results': results})
    plot_sweep(stem.with_suffix('.png'), results,
               f'round {round_idx}: {len(pool)} unlabeled samples, '
               f"{perturbation['type']}, top-{budget}")
    nan = float('nan')
    print(f"{'rho':>8} {'psi':>6} {'rel.margin':>10} {'score':>8} {'overlap':>8} "
          f"{'vs loss':>8} {'in bound':>8} {'|R|/rho^3':>10}")
    for r in results:
        t = r.get('theorem_3_3', {})
        print(f"{r['rho']:8.4g} {r['psi']:6.3f} {r.get('relative_margin', nan):10.3f} "
              f"{r['score_mean']:8.4f} {r['topk_overlap']:8.2f} {r['topk_overlap_clean']:8.2f} "
              f"{t.get('bound_holds_fraction', nan):8.3f} "
              f"{t.get('median_abs_third_order_over_rho3', nan):10.4g}")
    print(f'written: {stem}.json, {stem}.png')
    return 0


def landscape_command(args: argparse.Namespace) -> int:
    from saal_tasks.diagnostics.functional import true_targets
    from saal_tasks.diagnostics.hessian import set_top_eigenvalue
    from saal_tasks.diagnostics.landscape import loss_surface
    from saal_tasks.diagnostics.plots import plot_landscape
    cfg, task, model, round_idx, labeled, unlabeled, out_dir = _setup(args)
    if args.steps < 2 or args.span <= 0:
        raise ConfigError(f'--steps must be >= 2 and --span > 0, got {args.steps}, {args.span}')
    ids = _subset(labeled if args.set == 'labeled' else unlabeled, args.num_samples, args.seed)
    reduction = cfg.get('scorer', {}).get('score_reduction', 'sum')
    surface = loss_surface(task, model, ids, targets_fn=true_targets, span=args.span,
                           steps=args.steps, reduction=reduction, seed=args.seed)
    lam, iters = set_top_eigenvalue(task, model, ids, targets_fn=true_targets,
                                    reduction=reduction, seed=args.seed)
    stem = out_dir / f'landscape_round_{round_idx:03d}_{args.set}'
    atomic_write_json(stem.with_suffix('.json'), {
        'round': round_idx, 'set': args.set, 'num_samples': surface.num_samples,
        'alphas': surface.alphas.tolist(), 'betas': surface.betas.tolist(),
        'loss': surface.loss.tolist(), 'center_loss': surface.center_loss,
        'lambda_max': lam, 'power_iterations': iters})
    plot_landscape(stem.with_suffix('.png'), surface,
                   f'round {round_idx}: {surface.num_samples} {args.set} samples, '
                   f'λ₁ of the mean-loss Hessian {lam:.3g}')
    print(f'round {round_idx}, {args.set} set ({surface.num_samples} samples): loss at theta '
          f'{surface.center_loss:.4f}, grid max {surface.loss.max():.4f}, lambda1 {lam:.4g}')
    print(f'written: {stem}.json, {stem}.png')
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = {'rho-sweep': rho_sweep_command, 'landscape': landscape_command}[args.command]
    return run_reporting_errors(lambda: command(args))


if __name__ == '__main__':
    sys.exit(main())
