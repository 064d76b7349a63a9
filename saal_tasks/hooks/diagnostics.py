"""Opt-in per-round diagnostics of the sharpness-aware acquisition (paper Sections 3–4).

Add to a config's ``hooks``::

    hooks = [dict(type='LearningCurveHook'),
             dict(type='SharpnessDiagnosticsHook', num_samples=200, landscape_rounds=[1, -1])]

Each acquiring round writes, under ``work_dir/diagnostics/``:

* ``round_NNN.json``: ψ(ρ), the relative margin, Theorem 3.1 / Proposition 3.2 checks, the
  means of Theorem 3.3's terms and their correlations with the SAAL score, the bound check,
  the perturbed loss of the labeled / unlabeled / whole set, and the seconds spent;
* ``round_NNN.npz``: the per-sample values behind those numbers;
* ``round_NNN.png``: the score against loss, gradient norm and λ₁;
* for the rounds in ``landscape_rounds``: ``round_NNN_landscape.{json,png}``;

and the end of the run writes ``summary.png`` (every round) and ``summary.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from mmengine.logging import print_log

from ..core.errors import ConfigError
from ..core.io import atomic_write, atomic_write_json
from ..core.perturbation import Perturbation, SAMPerturbation
from ..registry import AL_HOOKS, PERTURBATIONS
from ..core.hooks import ALHook

_STREAM_SUBSET, _STREAM_POWER, _STREAM_LANDSCAPE = range(3)


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


@AL_HOOKS.register_module()
class SharpnessDiagnosticsHook(ALHook):
    """Measures, per round, what the paper's analyses show (see the module docstring).

    Every quantity uses the run's scorer perturbation (unless ``perturbation`` is given),
    the task protocol and, for ground-truth quantities, the task's ``ground_truth_targets``,
    which is only used with a simulated oracle.

    Args:
        decomposition: Loss, gradient norm and Hessian λ₁ per sample (Theorem 3.3).
        pseudo_labels: ψ(ρ) and the margin of Theorem 3.1.
        perturbed_sets: Perturbed loss of the labeled, unlabeled and whole set (needs the
            ground truth).
        num_samples: Diagnose at most this many of the round's scored samples (a seeded
            uniform subset); ``None`` diagnoses all of them.
        final_round: Also diagnose the last round's model (which scores nothing) on a
            uniform subset of the unlabeled pool of the same size.
        perturbation: Perturbation config to use instead of the scorer's (e.g. to diagnose
            a baseline run; default SAM ρ = 0.05 when the scorer has none).
        objective_reduction: Unit-loss reduction defining ε (default: the scorer's).
        reduction: Unit-loss reduction of per-sample values (default: the scorer's score
            reduction).
        use_truth: Use ground truth; ``None`` means "when the oracle is simulated".
        power_iters: Power-iteration limit for λ₁ (per sample and of the landscape's set).
        tol: Relative tolerance of λ₁.
        chunk_size: Samples per ``vmap`` chunk.
        landscape_rounds: Rounds whose model gets a 2-D loss landscape on the labeled set
            (negative counts from the end: ``-1`` is the last round).
        landscape_span: The landscape grid covers ``[-span, span]²``.
        landscape_steps: Grid points per direction.
        landscape_samples: Labeled samples averaged in the landscape (``None``: all).
        plot: Write the per-round and summary figures.
        save_model: Also write each round's trained weights to
            ``diagnostics/round_NNN_model.pth`` (for ``tools/diagnose.py`` when the loop
            does not keep them).
        seed: Seed of the subsets, start vectors and landscape directions (combined with
            the round).
        out_dir: Folder inside the work directory.
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'perturbation': 'PERTURBATIONS'}

    def __init__(self, decomposition: bool = True, pseudo_labels: bool = True,
                 perturbed_sets: bool = True, num_samples: int | None = None,
                 final_round: bool = True, perturbation: dict | None = None,
                 objective_reduction: str | None = None, reduction: str | None = None,
                 use_truth: bool | None = None, power_iters: int = 20, tol: float = 1e-3,
                 chunk_size: int = 64, landscape_rounds: Sequence[int] = (),
                 landscape_span: float = 1.0, landscape_steps: int = 21,
                 landscape_samples: int | None = None, plot: bool = True,
                 save_model: bool = False, seed: int = 0,
                 out_dir: str = 'diagnostics') -> None:
        name = 'SharpnessDiagnosticsHook'
        for key, value, low in (('num_samples', num_samples, 1), ('power_iters', power_iters, 2),
                                ('chunk_size', chunk_size, 1),
                                ('landscape_steps', landscape_steps, 2),
                                ('landscape_samples', landscape_samples, 1)):
            if value is not None and (not isinstance(value, int) or value < low):
                raise ConfigError(f'{name}.{key} must be an integer >= {low}, got {value!r}')
        for key, value in (('objective_reduction', objective_reduction),
                           ('reduction', reduction)):
            if value not in (None, 'sum', 'mean'):
                raise ConfigError(f"{name}.{key} must be 'sum' or 'mean', got {value!r}")
        if not tol > 0 or not landscape_span > 0:
            raise ConfigError(f'{name}.tol and landscape_span must be > 0, got {tol}, '
                              f'{landscape_span}')
        if not all(isinstance(r, int) and r != 0 for r in landscape_rounds):
            raise ConfigError(f'{name}.landscape_rounds must be round numbers (1 = first, '
                              f'-1 = last), got {list(landscape_rounds)}')
        self.decomposition = decomposition
        self.pseudo_labels = pseudo_labels
        self.perturbed_sets = perturbed_sets
        self.num_samples = num_samples
        self.final_round = final_round
        self.perturbation_cfg = perturbation
        self.objective_reduction = objective_reduction
        self.reduction = reduction
        self.use_truth = use_truth
        self.power_iters = power_iters
        self.tol = tol
        self.chunk_size = chunk_size
        self.landscape_rounds = list(landscape_rounds)
        self.landscape_span = landscape_span
        self.landscape_steps = landscape_steps
        self.landscape_samples = landscape_samples
        self.plot = plot
        self.save_model = save_model
        self.seed = seed
        self.out_dir = out_dir
        self._perturbation: Perturbation | None = None
        self._metrics: dict[int, dict] = {}
        self._seconds = 0.0

    # ------------------------------------------------------------------ set-up
    def before_run(self, loop) -> None:
        scorer = loop.scorer
        if self.perturbation_cfg is not None:
            self._perturbation = PERTURBATIONS.build(self.perturbation_cfg)
        else:
            self._perturbation = getattr(scorer, 'perturbation', None) or SAMPerturbation(0.05)
        self._objective = self.objective_reduction or getattr(scorer, 'objective_reduction',
                                                              'mean')
        self._reduction = self.reduction or getattr(scorer, 'score_reduction', 'sum')
        if self.use_truth is None:
            self._truth = loop.oracle.reveals_ground_truth
        else:
            self._truth = bool(self.use_truth)
        last = loop.num_rounds + 1
        self._landscape = {r if r > 0 else last + 1 + r for r in self.landscape_rounds}

    def _dir(self, loop) -> Path:
        return Path(loop.work_dir) / self.out_dir

    # ------------------------------------------------------------------ hook points
    def after_train(self, loop, round_idx: int, model) -> None:
        start = time.perf_counter()
        if self.save_model:
            import torch
            state = model.state_dict()
            atomic_write(self._dir(loop) / f'round_{round_idx:03d}_model.pth',
                         lambda f: torch.save(state, f))
        if round_idx in self._landscape:
            self._write_landscape(loop, round_idx, model)
        self._seconds += time.perf_counter() - start

    def after_evaluate(self, loop, round_idx: int, metrics: dict[str, float]) -> None:
        self._metrics[round_idx] = dict(metrics)
        if self.final_round and round_idx == loop.num_rounds + 1:
            unlabeled = loop.state.unlabeled_ids()
            size = self.num_samples or loop.subset_size or len(unlabeled)
            rng = np.random.default_rng(_seed(self.seed, round_idx, _STREAM_SUBSET))
            pool = np.sort(rng.choice(unlabeled, min(size, len(unlabeled)), replace=False))
            self._diagnose(loop, round_idx, pool, None, num_scored=0)

    def after_score(self, loop, round_idx: int, result) -> None:
        self._diagnose(loop, round_idx, np.asarray(result.sample_ids),
                       np.asarray(result.scores), num_scored=len(result.sample_ids))

    def after_run(self, loop, records: list[dict[str, Any]]) -> None:
        folder = self._dir(loop)
        rounds = sorted(folder.glob('round_[0-9][0-9][0-9].json'))
        if not rounds:
            return
        summaries = [json.loads(p.read_text()) for p in rounds]
        atomic_write_json(folder / 'summary.json', {
            'rounds': [s['round'] for s in summaries],
            'seconds_this_process': round(self._seconds, 3),
            'seconds_per_round': {str(s['round']): s['seconds'] for s in summaries}})
        if self.plot:
            from ..diagnostics.plots import plot_summary
            path = plot_summary(folder / 'summary.png', summaries,
                                f'{loop.run_name}: SAAL diagnostics ({self._perturbation!r})')
            print_log(f'diagnostics summary written to {path}', logger='current')

    # ------------------------------------------------------------------ work
    def _diagnose(self, loop, round_idx: int, candidates: np.ndarray,
                  scores: np.ndarray | None, num_scored: int) -> None:
        from ..diagnostics.report import diagnose_model
        start = time.perf_counter()
        ids = candidates
        if self.num_samples is not None and len(ids) > self.num_samples:
            rng = np.random.default_rng(_seed(self.seed, round_idx, _STREAM_SUBSET))
            pick = np.sort(rng.choice(len(ids), self.num_samples, replace=False))
            ids = ids[pick]
            scores = scores[pick] if scores is not None else None
        labeled = loop.state.labeled_ids()
        diag = diagnose_model(
            loop.task, loop.model, pool_ids=ids, labeled_ids=labeled,
            num_unlabeled=len(loop.state.unlabeled_ids()), perturbation=self._perturbation,
            use_truth=self._truth, acquisition_scores=scores,
            decomposition=self.decomposition, pseudo_labels=self.pseudo_labels,
            perturbed_sets=self.perturbed_sets, objective_reduction=self._objective,
            reduction=self._reduction, power_iters=self.power_iters, tol=self.tol,
            chunk_size=self.chunk_size, seed=_seed(self.seed, round_idx, _STREAM_POWER))
        folder = self._dir(loop)
        stem = folder / f'round_{round_idx:03d}'
        summary = {'round': round_idx, 'num_labeled': int(len(labeled)),
                   'num_scored': int(num_scored), 'metrics': self._metrics.get(round_idx),
                   **diag.summary}
        arrays = diag.arrays
        atomic_write(stem.with_suffix('.npz'), lambda f: np.savez(f, **arrays))
        if self.plot and diag.decomposition is not None:
            from ..diagnostics.plots import plot_decomposition_scatter
            plot_decomposition_scatter(stem.with_suffix('.png'), diag.decomposition, diag.scores,
                                       f'round {round_idx}, {len(labeled)} labeled '
                                       f'({self._perturbation!r})')
        summary['seconds']['total'] = time.perf_counter() - start
        atomic_write_json(stem.with_suffix('.json'), summary)
        self._seconds += summary['seconds']['total']
        print_log(self._log_line(summary), logger='current')

    @staticmethod
    def _log_line(s: dict) -> str:
        parts = [f"diagnostics round {s['round']}:"]
        pl = s.get('pseudo_labels', {})
        if 'psi' in pl:
            parts.append(f"psi {pl['psi']:.3f}")
        if 'relative_margin' in pl:
            parts.append(f"rel. margin {pl['relative_margin']:.3f}")
        dec = s.get('decomposition')
        if dec:
            sp = dec['spearman_with_score']
            parts.append(f"spearman(score; l, |g|, lambda1) {sp['loss']:.2f}, "
                         f"{sp['grad_norm']:.2f}, {sp['lambda_max']:.2f}")
        pls = s.get('perturbed_loss', {})
        if 'total' in pls:
            parts.append(f"perturbed loss L/U/total {pls['labeled']:.3f}/{pls['unlabeled']:.3f}"
                         f"/{pls['total']:.3f}")
        parts.append(f"({s['seconds']['total']:.1f}s)")
        return ' '.join(parts)

    def _write_landscape(self, loop, round_idx: int, model) -> None:
        from ..diagnostics.functional import pseudo_targets, true_targets
        from ..diagnostics.hessian import set_top_eigenvalue
        from ..diagnostics.landscape import loss_surface
        ids = loop.state.labeled_ids()
        seed = _seed(self.seed, round_idx, _STREAM_LANDSCAPE)
        if self.landscape_samples is not None and len(ids) > self.landscape_samples:
            rng = np.random.default_rng(seed)
            ids = np.sort(rng.choice(ids, self.landscape_samples, replace=False))
        targets = true_targets if self._truth else pseudo_targets
        start = time.perf_counter()
        surface = loss_surface(loop.task, model, ids, targets_fn=targets,
                               span=self.landscape_span, steps=self.landscape_steps,
                               reduction=self._reduction, seed=seed)
        lam, iters = set_top_eigenvalue(loop.task, model, ids, targets_fn=targets,
                                        reduction=self._reduction, power_iters=self.power_iters,
                                        tol=self.tol, seed=seed)
        stem = self._dir(loop) / f'round_{round_idx:03d}_landscape'
        atomic_write_json(stem.with_suffix('.json'), {
            'round': round_idx, 'num_samples': surface.num_samples,
            'targets': 'ground truth' if self._truth else 'pseudo-labels',
            'alphas': surface.alphas.tolist(), 'betas': surface.betas.tolist(),
            'loss': surface.loss.tolist(), 'center_loss': surface.center_loss,
            'lambda_max': lam, 'power_iterations': iters,
            'seconds': time.perf_counter() - start})
        if self.plot:
            from ..diagnostics.plots import plot_landscape
            plot_landscape(stem.with_suffix('.png'), surface,
                           f'round {round_idx}: {surface.num_samples} labeled samples, '
                           f'λ₁ of the mean-loss Hessian {lam:.3g}')
        print_log(f'diagnostics round {round_idx}: landscape written to {stem}.png '
                  f'(lambda1 {lam:.4g})', logger='current')
