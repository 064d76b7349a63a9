"""LL4AL (Yoo & Kweon, 2019): a loss-prediction module trained with the task model.

The module reads intermediate feature maps of the task model (forward hooks on named
submodules), pools each to a vector, maps it through ``Linear + ReLU``, concatenates, and
predicts the task loss of the sample with a final ``Linear``. It is trained jointly with the
model through the task's training-extension mechanism with the paper's pairwise ranking loss
(pairs ``(i, B−1−i)`` of a batch, margin ξ, weight λ); after a fraction of the epochs the
features are detached so the module no longer shapes the backbone. The acquisition score of
an unlabeled sample is its predicted loss.

The module is a submodule of the task model (attribute ``module_name``), so it is trained by
the task's optimizer (Adam or SAM), saved and reloaded with the model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.task import TrainExtension
from ..registry import SCORERS, TRAIN_EXTENSIONS
from ..core.scorer import BaseScorer, ScoreResult


def ranking_loss(predicted: torch.Tensor, target: torch.Tensor,
                 margin: float = 1.0) -> torch.Tensor:
    """The paper's pairwise loss-prediction objective.

    Pairs sample ``i`` with sample ``B−1−i`` (first half against the reversed second half; the
    middle sample of an odd batch is left out) and charges
    ``max(0, −sign(l_i − l_j)·(l̂_i − l̂_j) + ξ)``, averaged over the pairs.

    Args:
        predicted: Predicted losses, ``[B]``.
        target: True losses, ``[B]`` (detached here: the task loss is not trained by it).
        margin: ξ.

    Returns:
        Scalar; 0 for a batch of fewer than two samples.
    """
    half = predicted.shape[0] // 2
    if half == 0:
        return predicted.sum() * 0.0
    target = target.detach()
    diff_pred = predicted[:half] - predicted.flip(0)[:half]
    diff_true = target[:half] - target.flip(0)[:half]
    sign = torch.where(diff_true > 0, 1.0, -1.0).to(predicted.dtype)
    return torch.clamp(margin - sign * diff_pred, min=0.0).mean()


class LossPredictionModule(nn.Module):
    """Predicts a sample's loss from pooled feature maps.

    Args:
        in_dims: Channels of each tapped feature map (or width of each feature vector).
        hidden: Width of each per-map ``Linear + ReLU``.
    """

    def __init__(self, in_dims: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Linear(d, hidden) for d in in_dims)
        self.out = nn.Linear(hidden * len(in_dims), 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predicted losses ``[B]`` from feature maps ``[B, C, ...]`` (one per branch)."""
        pooled = [f.flatten(2).mean(dim=2) if f.dim() > 2 else f for f in features]
        hidden = [torch.relu(branch(p)) for branch, p in zip(self.branches, pooled)]
        return self.out(torch.cat(hidden, dim=1)).squeeze(1)


class _FeatureTap:
    """Forward hooks that keep the latest output of named submodules (not a module, so it
    adds nothing to the model's state dict)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.names = list(names)
        for name in self.names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                known = ', '.join(n for n, _ in model.named_modules() if n)
                raise ConfigError(f'feature_layers: the model has no submodule {name!r}; '
                                 f'its submodules are {known}') from None
            module.register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output
        return hook

    def features(self) -> list[torch.Tensor]:
        return [self.outputs[n] for n in self.names]


@TRAIN_EXTENSIONS.register_module()
class LossPredictionExtension(TrainExtension):
    """Adds LL4AL's loss-prediction module to every built model and its loss to training.

    Args:
        feature_layers: Names of the model's submodules whose outputs feed the module
            (ResNet-18: ``layer1..layer4``; SmallCNN: ``features.1``, ``features.3``).
        hidden: Width of each branch.
        weight: λ, the weight of the ranking loss in the total loss.
        margin: ξ of the ranking loss.
        detach_after: Fraction of the epochs after which the module's input features are
            detached (paper: epoch 120 of 200 = 0.6).
        module_name: Attribute under which the module is stored on the model.
    """

    def __init__(self, feature_layers: Sequence[str], hidden: int = 128, weight: float = 1.0,
                 margin: float = 1.0, detach_after: float = 0.6,
                 module_name: str = 'loss_prediction') -> None:
        if not feature_layers:
            raise ConfigError('feature_layers must name at least one submodule of the model')
        self.feature_layers = list(feature_layers)
        self.hidden = hidden
        self.weight = weight
        self.margin = margin
        self.detach_after = detach_after
        self.module_name = module_name

    def extend_model(self, model: nn.Module, example_inputs) -> None:
        tap = _FeatureTap(model, self.feature_layers)
        # Eval mode: a train-mode probe would update BatchNorm statistics of the new model.
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example_inputs)
        model.train(was_training)
        dims = [f.shape[1] for f in tap.features()]
        module = LossPredictionModule(dims, self.hidden).to(
            device=example_inputs.device, dtype=example_inputs.dtype)
        # A plain attribute (not a submodule or buffer): nothing of it enters the state dict.
        module.tap = tap
        model.add_module(self.module_name, module)

    def extra_loss(self, model, inputs, targets, sample_losses, epoch, num_epochs):
        module = getattr(model, self.module_name)
        features = module.tap.features()
        if epoch > self.detach_after * num_epochs:
            features = [f.detach() for f in features]
        return self.weight * ranking_loss(module(features), sample_losses, self.margin)


@SCORERS.register_module()
class LossPredictionScorer(BaseScorer):
    """LL4AL's acquisition: the loss predicted by the model's loss-prediction module.

    The task must be configured with a ``LossPredictionExtension`` (same ``module_name``).

    Args:
        module_name: Attribute of the model holding the module.
        batch_size: Samples per forward pass.
    """

    def __init__(self, module_name: str = 'loss_prediction', batch_size: int = 256) -> None:
        super().__init__(log_interval=10_000)
        self.module_name = module_name
        self.batch_size = batch_size

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        module = getattr(model, self.module_name, None)
        if not isinstance(module, LossPredictionModule):
            raise ConfigError(
                f"the model has no loss-prediction module {self.module_name!r}: add "
                "train_extensions=[dict(type='LossPredictionExtension', feature_layers=[...])] "
                'to the task config')
        scores = []
        with torch.no_grad():
            for _, inputs in task.pool_batches(sample_ids, self.batch_size):
                model(inputs)
                scores.append(module(module.tap.features()).double().cpu().numpy())
        return ScoreResult(sample_ids=np.asarray(sample_ids, dtype=np.int64),
                           scores=np.concatenate(scores) if scores else np.zeros(0))
