"""Classification networks with a separable embedding and linear head.

Every model here exposes the same small interface used by the active-learning scorers:

* ``forward_features(x)`` returns the penultimate embedding ``[B, D]``;
* ``head`` is the final ``nn.Linear(D, num_classes)``;
* ``forward(x) == head(forward_features(x))`` returns logits ``[B, num_classes]``;
* ``embed_dim`` is ``D``.

The forward passes avoid in-place ops on their inputs, ``.item()`` and data-dependent
Python control flow, so that per-sample gradients can be computed with
``torch.func.functional_call`` + ``vmap`` + ``grad`` (in eval mode, where BatchNorm uses
its running statistics and therefore does not mix samples of a batch).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from saal_tasks.registry import MODELS

__all__ = ['SmallCNN', 'ResNet18CIFAR']


@MODELS.register_module()
class SmallCNN(nn.Module):
    """A two-conv network for fast runs on small images (8x8 digits up to 32x32).

    Layout: ``conv3x3(in, w) -> [BN] -> ReLU -> conv3x3(w, 2w) -> [BN] -> ReLU ->
    maxpool2 -> adaptive avgpool 2x2 -> flatten -> head``. The final pooling is to 2x2
    rather than 1x1 because on 8x8 digits a global average would throw away the coarse
    layout of the stroke, which is most of what distinguishes the classes; it also makes
    the embedding size independent of the input resolution.

    Args:
        in_channels: Number of input channels ``C``.
        num_classes: Number of output classes ``K``.
        width: Channels of the first conv; the second conv has ``2 * width``.
        batch_norm: Insert ``BatchNorm2d`` after each conv. Off by default so that the
            network behaves identically in train and eval mode (simplifies per-sample
            gradient code).
    """

    #: Spatial size (per side) of the pooled feature map that is flattened into the embedding.
    pooled_size: int = 2

    def __init__(self,
                 in_channels: int = 1,
                 num_classes: int = 10,
                 width: int = 32,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if in_channels <= 0 or num_classes <= 0 or width <= 0:
            raise ValueError(
                f'SmallCNN needs positive in_channels, num_classes and width, got '
                f'{in_channels}, {num_classes}, {width}')
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.batch_norm = batch_norm

        def block(cin: int, cout: int) -> list[nn.Module]:
            # The conv bias is redundant when BatchNorm follows (BN has its own shift).
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            # Not in-place: keeps the graph simple for torch.func transforms.
            layers.append(nn.ReLU(inplace=False))
            return layers

        self.features = nn.Sequential(
            *block(in_channels, width),
            *block(width, 2 * width),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.AdaptiveAvgPool2d(self.pooled_size),
            nn.Flatten(start_dim=1),
        )
        self.embed_dim: int = 2 * width * self.pooled_size * self.pooled_size
        self.head = nn.Linear(self.embed_dim, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Compute the penultimate embedding.

        Args:
            x: Images ``[B, C, H, W]`` (float), ``H, W >= 2``.

        Returns:
            Embedding ``[B, embed_dim]``.
        """
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Compute class logits.

        Args:
            x: Images ``[B, C, H, W]`` (float).

        Returns:
            Logits ``[B, num_classes]``.
        """
        return self.head(self.forward_features(x))


@MODELS.register_module()
class ResNet18CIFAR(nn.Module):
    """torchvision ResNet-18 with the usual stem for 32x32 inputs.

    The ImageNet stem (7x7 stride-2 conv followed by a stride-2 max-pool) would shrink a
    32x32 image to 8x8 before the first residual stage; for CIFAR-sized images it is
    replaced by a 3x3 stride-1 conv without bias and no max-pool. The torchvision ``fc``
    becomes ``self.head`` so that the embedding (512-d after global average pooling) and
    the classifier can be used separately.

    Args:
        in_channels: Number of input channels ``C``.
        num_classes: Number of output classes ``K``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if in_channels <= 0 or num_classes <= 0:
            raise ValueError(
                f'ResNet18CIFAR needs positive in_channels and num_classes, got '
                f'{in_channels}, {num_classes}')
        # Imported here so that importing this module (e.g. through the registry's lazy
        # import) does not pull in torchvision.models unless a ResNet is actually built.
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=num_classes)
        conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        # Same initialisation torchvision applies to all its convs, so the replaced stem
        # is not the odd one out.
        nn.init.kaiming_normal_(conv1.weight, mode='fan_out', nonlinearity='relu')

        self.in_channels = in_channels
        self.num_classes = num_classes
        # Modules are lifted to top-level attributes (instead of keeping a wrapped
        # ``backbone``) so state-dict keys read ``conv1.weight``, ``layer1.0...``,
        # ``head.weight``.
        self.conv1 = conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = nn.Identity()
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.avgpool = net.avgpool
        self.head: nn.Linear = net.fc
        self.embed_dim: int = self.head.in_features

    def forward_features(self, x: Tensor) -> Tensor:
        """Compute the penultimate (globally pooled) embedding.

        Args:
            x: Images ``[B, C, H, W]`` (float), typically ``32x32``.

        Returns:
            Embedding ``[B, 512]``.
        """
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Compute class logits.

        Args:
            x: Images ``[B, C, H, W]`` (float).

        Returns:
            Logits ``[B, num_classes]``.
        """
        return self.head(self.forward_features(x))
