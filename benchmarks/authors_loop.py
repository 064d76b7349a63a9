"""The per-sample SAAL loop as the paper's released code runs it; for comparison only.

Per sample: a deep copy of the model, one forward pass whose argmax is the pseudo-label and
whose cross-entropy is the loss, ``loss.backward()`` (all weight gradients of the copy), ε
added to the copy's weights in place, and a second forward pass for the perturbed loss. This
is what the paper's timings (Figure 3, Table 2: 49.6 s per CIFAR-10 round) measure, and what
``saal_tasks`` replaces with perturb-in-place engines. ε uses the project's own formulas
(``perturbation.epsilon``), so scores are comparable with every engine.

It is classification-specific (logits in, cross-entropy out) like the original, and it is
not part of the package: never use it for acquisition.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saal_tasks.core.perturbation import Perturbation
from saal_tasks.core.task import BaseTask


def authors_loop_scores(task: BaseTask, model: nn.Module, sample_ids: np.ndarray,
                        perturbation: Perturbation) -> tuple[np.ndarray, np.ndarray]:
    """Perturbed and clean pseudo-label losses, one sample and one model copy at a time.

    Args:
        task: A classification task (``pool_batches`` gives image tensors).
        model: The trained model; it is copied, never modified.
        sample_ids: Ids to score, shape ``[N]``.
        perturbation: Maps a sample's gradients to ε.

    Returns:
        ``(perturbed, clean)`` losses, ``float64`` arrays of shape ``[N]``.
    """
    perturbed, clean = [], []
    for _, inputs in task.pool_batches(sample_ids, 1):
        net = copy.deepcopy(model)
        net.eval()
        logits = net(inputs)
        pseudo = logits.argmax(dim=1)
        loss = F.cross_entropy(logits, pseudo)
        loss.backward()
        params = [p for p in net.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        with torch.no_grad():
            for p, e in zip(params, perturbation.epsilon(grads, [p.detach() for p in params])):
                p.add_(e)
            perturbed.append(float(F.cross_entropy(net(inputs), pseudo)))
        clean.append(float(loss.detach()))
    return np.asarray(perturbed, dtype=np.float64), np.asarray(clean, dtype=np.float64)


__all__ = ['authors_loop_scores']
