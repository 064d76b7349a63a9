"""Diagnostics of the sharpness-aware acquisition: the paper's analyses as functions.

* :mod:`.hessian`: Theorem 3.3's terms per sample (loss, gradient norm, Hessian λ₁ by power
  iteration on Hessian-vector products).
* :mod:`.perturbed`: losses and predictions at each sample's worst-case weights: ψ(ρ), the
  margin of Theorem 3.1, Proposition 3.2, the perturbed loss of a set.
* :mod:`.landscape`: 2-D loss landscapes with filter-normalised directions.
* :mod:`.sweep`: the same probes over several ρ.
* :mod:`.report`, :mod:`.summary`, :mod:`.plots`: one model's diagnostics, their summaries
  and figures (used by ``SharpnessDiagnosticsHook`` and ``tools/diagnose.py``).

Everything goes through the task protocol (``pool_batches``, ``pseudo_label``,
``loss_per_unit``, and ``ground_truth_targets`` for the truth) and the scorer's perturbation.
"""
from .functional import pseudo_targets, true_targets, weight_functions
from .hessian import Decomposition, decompose, power_iteration, set_top_eigenvalue
from .landscape import LossSurface, filter_normalized_direction, loss_surface
from .perturbed import PerturbedStats, perturbed_losses, probe_pseudo_labels
from .report import RoundDiagnostics, diagnose_model
from .summary import pearson, spearman, summarize_decomposition, summarize_probe
from .sweep import rho_sweep

__all__ = ['pseudo_targets', 'true_targets', 'weight_functions', 'Decomposition', 'decompose',
           'power_iteration', 'set_top_eigenvalue', 'LossSurface', 'filter_normalized_direction',
           'loss_surface', 'PerturbedStats', 'perturbed_losses', 'probe_pseudo_labels',
           'RoundDiagnostics', 'diagnose_model', 'pearson', 'spearman',
           'summarize_decomposition', 'summarize_probe', 'rho_sweep']
