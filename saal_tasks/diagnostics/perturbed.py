"""Losses and predictions at each sample's own worst-case weights (Theorem 3.1, Prop. 3.2).

For a sample ``x`` with pseudo-label ``ŷ`` the scorer perturbs the weights by
``ε̂ = perturbation.epsilon(∇θ l(x, ŷ; θ))`` and scores ``l(x, ŷ; θ + ε̂)``. This module
evaluates that same perturbed model further, through the task protocol only:

* ``label_kept``: the share of the sample's units whose pseudo-label at ``θ + ε̂`` is still
  ``ŷ`` (for classification 1 or 0); its mean over the pool is ψ(ρ) of the paper (Fig. 6).
* ``margin``: ``δ_x = l(x, ŷ; θ + ε̂) − l(x, ŷ*; θ + ε̂)`` with ``ŷ* = pseudo_label`` at
  ``θ + ε̂``. For softmax cross-entropy ``l(x, y) = logsumexp f − f_y``, so this is exactly the
  paper's ``[max_j f_j − f_ŷ]₊`` at ``θ + ε̂`` (Theorem 3.1), and 0 where the label is kept
  (Proposition 3.2).
* with the ground truth ``ȳ`` (simulated oracle): ``l(x, ȳ; θ + ε̂)`` and the maximally
  perturbed true loss ``l(x, ȳ; θ + ε̄)`` with ``ε̄`` from ``∇θ l(x, ȳ; θ)``. The relative
  margin of Fig. 7 is ``δ_x / l(x, ȳ; θ + ε̄)``.

The ε is computed exactly as the scorer's engines compute it (same perturbation object, same
``objective_reduction``), so ``perturbed_loss`` equals the SAAL score of mode ``'max'``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import grad

from ..core.perturbation import Perturbation
from ..core.task import BaseTask
from ..core.units import check_reduction, reduce_units
from .functional import (Params, TargetFn, WeightFunctions, make_mapper, pseudo_targets,
                         sample_chunks, true_targets, weight_functions)


@dataclass
class PerturbedStats:
    """Per-sample values at the perturbed weights (arrays ``[N]``, float64).

    Attributes:
        sample_ids: Ids, in the order given.
        clean_loss: ``l(x, y; θ)`` for the probe's targets ``y``.
        perturbed_loss: ``l(x, y; θ + ε_y)``, ε from the gradient of that same loss.
        extras: Further per-sample arrays (see :func:`probe_pseudo_labels`).
    """

    sample_ids: np.ndarray
    clean_loss: np.ndarray
    perturbed_loss: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def _epsilon(wf: WeightFunctions, perturbation: Perturbation, objective_reduction: str,
             inputs, targets) -> Params:
    """The scorer's ε for one sample (a batch of one) with the given targets."""
    def objective(params: Params) -> torch.Tensor:
        return reduce_units(wf.loss_units(params, inputs, targets), objective_reduction)[0]
    g = grad(objective)(wf.params)
    names = list(wf.params)
    eps = perturbation.epsilon([g[k] for k in names], [wf.params[k] for k in names])
    return dict(zip(names, eps))


def _kept_fraction(labels, reference) -> torch.Tensor:
    """Share of units (``[1, *U]`` labels) whose label equals the reference, ``[1]``."""
    if not (torch.is_tensor(labels) and torch.is_tensor(reference)):
        raise TypeError('label_kept needs tensor pseudo-labels; '
                        f'{type(labels).__name__} cannot be compared unit by unit')
    same = (labels == reference).reshape(labels.shape[0], -1)
    return same.to(torch.float64).mean(dim=1)


def perturbed_losses(task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
                     perturbation: Perturbation, *, targets_fn: TargetFn = true_targets,
                     objective_reduction: str = 'mean', reduction: str = 'sum',
                     chunk_size: int = 64, vectorize: bool = True) -> PerturbedStats:
    """Clean and maximally perturbed loss of each sample for the given targets.

    With ``targets_fn=pseudo_targets`` the perturbed loss is the SAAL score (mode
    ``'max'``); with ``true_targets`` (the default) it is the paper's maximally perturbed
    loss of a labeled or unlabeled set (Fig. 4, averaged by the caller).

    Args:
        task: Task adapter.
        model: Trained model (eval mode during the call; parameters untouched).
        sample_ids: Ids, ``[N]``.
        perturbation: Maps a sample's gradient to its ε (the scorer's perturbation).
        targets_fn: Targets ``y`` of the loss.
        objective_reduction: Reduction of unit losses into the loss whose gradient gives ε.
        reduction: Reduction of unit losses into the reported per-sample values.
        chunk_size: Samples per ``vmap`` chunk.
        vectorize: ``False`` forces one sample at a time.

    Returns:
        :class:`PerturbedStats` aligned with ``sample_ids``.
    """
    check_reduction('objective_reduction', objective_reduction)
    check_reduction('reduction', reduction)
    was_training = model.training
    model.eval()
    try:
        wf = weight_functions(task, model)

        def one(inputs, targets):
            eps = _epsilon(wf, perturbation, objective_reduction, inputs, targets)
            clean = reduce_units(wf.loss_units(wf.params, inputs, targets), reduction)[0]
            perturbed = reduce_units(wf.loss_units(wf.shifted(eps), inputs, targets),
                                     reduction)[0]
            return clean.detach(), perturbed.detach()

        ids_out, clean_out, pert_out = [], [], []
        for ids, _, _, mapper in sample_chunks(task, model, sample_ids, chunk_size, targets_fn,
                                               vectorize):
            clean, perturbed = mapper(one)
            ids_out.append(ids)
            clean_out.append(clean.to(torch.float64).cpu().numpy())
            pert_out.append(perturbed.to(torch.float64).cpu().numpy())
    finally:
        model.train(was_training)
    return PerturbedStats(sample_ids=_cat(ids_out, np.int64), clean_loss=_cat(clean_out),
                          perturbed_loss=_cat(pert_out))


def probe_pseudo_labels(task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
                        perturbation: Perturbation, *, with_truth: bool = True,
                        objective_reduction: str = 'mean', reduction: str = 'sum',
                        chunk_size: int = 64, vectorize: bool = True) -> PerturbedStats:
    """The SAAL score and what the perturbed model predicts, per sample.

    Args:
        task: Task adapter; with ``with_truth`` its ``ground_truth_targets`` is used.
        model: Trained model (eval mode during the call; parameters untouched).
        sample_ids: Ids, ``[N]``.
        perturbation: The scorer's perturbation.
        with_truth: Also compute the ground-truth losses (simulated oracle only).
        objective_reduction: Reduction of unit losses into the loss whose gradient gives ε.
        reduction: Reduction of unit losses into the reported per-sample values.
        chunk_size: Samples per ``vmap`` chunk.
        vectorize: ``False`` forces one sample at a time.

    Returns:
        :class:`PerturbedStats` for the pseudo-label ``ŷ`` (``perturbed_loss`` is the SAAL
        score) with extras ``label_kept`` (share of units whose label survives ε̂),
        ``margin`` (δ_x) and, with the truth, ``true_clean_loss`` ``l(x, ȳ; θ)``,
        ``true_loss_at_pseudo_eps`` ``l(x, ȳ; θ + ε̂)`` and ``true_perturbed_loss``
        ``l(x, ȳ; θ + ε̄)``.
    """
    check_reduction('objective_reduction', objective_reduction)
    check_reduction('reduction', reduction)
    was_training = model.training
    model.eval()
    try:
        wf = weight_functions(task, model)

        def loss(params: Params, inputs, targets) -> torch.Tensor:
            return reduce_units(wf.loss_units(params, inputs, targets), reduction)[0]

        def pseudo(inputs, pseudo_labels):
            eps = _epsilon(wf, perturbation, objective_reduction, inputs, pseudo_labels)
            shifted = wf.shifted(eps)
            relabeled = wf.pseudo_label(shifted, inputs)
            at_eps = wf.loss_units(shifted, inputs, pseudo_labels)
            at_eps_relabeled = wf.loss_units(shifted, inputs, relabeled)
            return {'clean_loss': loss(wf.params, inputs, pseudo_labels),
                    'perturbed_loss': reduce_units(at_eps, reduction)[0],
                    'label_kept': _kept_fraction(relabeled, pseudo_labels)[0],
                    'margin': reduce_units(at_eps - at_eps_relabeled, reduction)[0],
                    'eps': eps}

        def truth(inputs, true_labels, eps_pseudo: Params):
            eps = _epsilon(wf, perturbation, objective_reduction, inputs, true_labels)
            return {'true_clean_loss': loss(wf.params, inputs, true_labels),
                    'true_loss_at_pseudo_eps': loss(wf.shifted(eps_pseudo), inputs,
                                                    true_labels),
                    'true_perturbed_loss': loss(wf.shifted(eps), inputs, true_labels)}

        columns: dict[str, list[np.ndarray]] = {}
        ids_out = []
        for ids, inputs, targets, mapper in sample_chunks(task, model, sample_ids, chunk_size,
                                                          pseudo_targets, vectorize):
            values = mapper(pseudo)
            eps_pseudo = values.pop('eps')
            if with_truth:
                true_labels = true_targets(task, model, ids, inputs)
                # Same inputs, other targets: a mapper over (inputs, truth) for this chunk.
                truth_mapper = make_mapper(inputs, true_labels, len(ids))
                values.update(truth_mapper(truth, eps_pseudo))
            ids_out.append(ids)
            for key, value in values.items():
                columns.setdefault(key, []).append(
                    value.detach().to(torch.float64).cpu().numpy())
    finally:
        model.train(was_training)
    cat = {k: _cat(v) for k, v in columns.items()}
    return PerturbedStats(sample_ids=_cat(ids_out, np.int64), clean_loss=cat.pop('clean_loss'),
                          perturbed_loss=cat.pop('perturbed_loss'), extras=cat)


def _cat(parts: list[np.ndarray], dtype=np.float64) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
