"""SAAL: the maximally perturbed pseudo-label loss of each unit (paper Eq. 8, 11, 12)."""
from __future__ import annotations

import time

import numpy as np
import torch

from ..registry import ENGINES, PERTURBATIONS, SCORERS
from ..core.scorer import BaseScorer, ScoreResult, ids_in_order
from ..core.units import (check_reduction, reduce_units,
                   to_numpy)


@SCORERS.register_module()
class SharpnessScorer(BaseScorer):
    """Sharpness-aware acquisition score.

    For each sample, ŷ = the model's pseudo-label (eval mode), g = ∇θ l(x, ŷ; θ) of that sample
    alone, ε = ``perturbation.epsilon(g)``, and each unit scores ``l(x, ŷ; θ + ε)`` (mode
    ``'max'``) or ``l(x, ŷ; θ + ε) − l(x, ŷ; θ)`` (mode ``'diff'``). The per-sample score
    reduces the unit scores with ``score_reduction``.

    Args:
        perturbation: Config of a registered perturbation (SAM with dual norm q, or ASAM).
        engine: Config of a registered engine (reference, vectorized or batch-wise).
        mode: ``'max'`` (perturbed loss) or ``'diff'`` (perturbed minus clean loss).
        objective_reduction: Reduction of a sample's unit losses into the loss that defines ε.
        score_reduction: Reduction of a sample's unit scores into its score (detection sums
            over boxes).
        log_interval: Progress output every this many samples.
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'perturbation': 'PERTURBATIONS', 'engine': 'ENGINES'}

    def __init__(self, perturbation: dict | None = None, engine: dict | None = None,
                 mode: str = 'max', objective_reduction: str = 'mean',
                 score_reduction: str = 'sum', log_interval: int = 500) -> None:
        super().__init__(log_interval=log_interval)
        if mode not in ('max', 'diff'):
            raise ValueError(f"mode must be 'max' or 'diff', got {mode!r}")
        self.subtract_clean = mode == 'diff'
        self.mode = mode
        self.objective_reduction = check_reduction('objective_reduction', objective_reduction)
        self.score_reduction = check_reduction('score_reduction', score_reduction)
        self.perturbation = PERTURBATIONS.build(perturbation or dict(type='SAMPerturbation'))
        self.engine = ENGINES.build(engine or dict(type='ReferenceEngine'))

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        out_ids, scores, clean_losses, units_out, targets_out = [], [], [], [], []
        start, last = time.perf_counter(), [0]
        for ids, clean, perturbed, targets in self.engine.run(task, model, sample_ids,
                                                              self.perturbation,
                                                              self.objective_reduction):
            unit_scores = perturbed - clean if self.subtract_clean else perturbed
            out_ids.append(np.asarray(ids, dtype=np.int64))
            scores.append(to_numpy(reduce_units(unit_scores, self.score_reduction)))
            clean_losses.append(to_numpy(reduce_units(clean, self.score_reduction)))
            if unit_scores.dim() > 1:
                units_out.extend(to_numpy(u) for u in unit_scores)
                if torch.is_tensor(targets) and targets.shape == unit_scores.shape:
                    # Pseudo-labels per unit (pixels): region impurity is computed from them.
                    targets_out.extend(t.cpu().numpy() for t in targets)
            self._progress(sum(len(i) for i in out_ids), len(sample_ids), start, last)
        ids = ids_in_order(task, out_ids, sample_ids)
        return ScoreResult(
            sample_ids=ids,
            scores=np.concatenate(scores) if scores else np.zeros(0),
            unit_scores=units_out or None,
            unit_targets=targets_out or None,
            extras={'clean_loss': np.concatenate(clean_losses) if clean_losses
                    else np.zeros(0)})

    def __repr__(self) -> str:
        return (f'SharpnessScorer({self.perturbation!r}, engine={type(self.engine).__name__}, '
                f'mode={self.mode!r})')


def uniform_by_id(sample_ids: np.ndarray, key: int) -> np.ndarray:
    """A uniform number in [0, 1) per id, a pure function of ``(key, id)`` (splitmix64).

    Scores that depend only on the sample, not on the other samples of the call, keep sharded
    scoring identical to scoring in one process.
    """
    with np.errstate(over='ignore'):  # uint64 arithmetic wraps by design
        z = (np.asarray(sample_ids).astype(np.uint64) + np.uint64(key)) * \
            np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2 ** 53)


@SCORERS.register_module()
class RandomScorer(BaseScorer):
    """Uniform random scores: with top-k selection, a uniformly random query (baseline)."""

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        key = int(rng.integers(2 ** 63))
        return ScoreResult(sample_ids=sample_ids, scores=uniform_by_id(sample_ids, key))


__all__ = ['SharpnessScorer', 'RandomScorer']
