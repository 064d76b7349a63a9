"""A CIFAR-shaped synthetic dataset for benchmarks that must not download anything.

``SyntheticImagesData`` draws, per class, a random low-frequency colour template (a 4x4 random
image upsampled to the image size) and makes each image from its class template plus
low-frequency and pixel noise, quantised to uint8. The classes are learnable and the pixel
statistics are CIFAR-like, but these are not natural images: timings and score agreement
measured on them are about the computation, not about any dataset.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from saal_tasks.registry import DATASETS
from saal_tasks.tasks.classification.data import ClassificationData


def _smooth(rng: np.random.Generator, n: int, channels: int, size: int) -> torch.Tensor:
    """``n`` random 4x4 images bilinearly upsampled to ``size``: ``[n, C, size, size]``."""
    coarse = torch.from_numpy(rng.standard_normal((n, channels, 4, 4)).astype(np.float32))
    return F.interpolate(coarse, size=(size, size), mode='bilinear', align_corners=False)


@DATASETS.register_module()
def SyntheticImagesData(num_train: int = 2000, num_test: int = 500, num_classes: int = 10,
                        image_size: int = 32, channels: int = 3,
                        seed: int = 0) -> ClassificationData:
    """Class-template images with noise, uint8 ``[N, C, image_size, image_size]``.

    Args:
        num_train: Training images.
        num_test: Test images.
        num_classes: Classes (one template each).
        image_size: Height and width.
        channels: Image channels.
        seed: Seed of every random draw (same seed, same data).

    Returns:
        ``ClassificationData`` with mean/std computed on the training split.
    """
    if min(num_train, num_test, num_classes, image_size, channels) < 1:
        raise ValueError('SyntheticImagesData sizes must all be >= 1')
    rng = np.random.default_rng(seed)
    templates = _smooth(rng, num_classes, channels, image_size)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.from_numpy(rng.integers(0, num_classes, n)).to(torch.int64)
        noise = _smooth(rng, n, channels, image_size) * 0.8
        pixels = torch.from_numpy(
            rng.standard_normal((n, channels, image_size, image_size)).astype(np.float32))
        x = templates[labels] + noise + 0.3 * pixels
        return (x * 50 + 128).clamp(0, 255).round().to(torch.uint8), labels

    train_x, train_y = split(num_train)
    test_x, test_y = split(num_test)
    scaled = train_x.to(torch.float64) / 255
    mean = tuple(float(m) for m in scaled.mean(dim=(0, 2, 3)))
    std = tuple(float(s) for s in scaled.std(dim=(0, 2, 3)))
    return ClassificationData(name='synthetic-images', train_x=train_x, train_y=train_y,
                              test_x=test_x, test_y=test_y, num_classes=num_classes,
                              in_channels=channels, mean=mean, std=std, max_value=255.0)
