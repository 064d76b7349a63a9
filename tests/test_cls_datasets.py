"""Tests of the classification dataset builders (saal_tasks.tasks.classification.data)."""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from saal_tasks.registry import DATASETS
from saal_tasks.tasks.classification.data import (ClassificationData, DatasetNotFoundError,
                                                      DigitsData)


@pytest.fixture(scope='module')
def digits() -> ClassificationData:
    return DigitsData()


def test_digits_sizes_types_and_range(digits: ClassificationData) -> None:
    assert digits.num_train + digits.num_test == 1797
    # sklearn rounds the test size up: ceil(0.25 * 1797) = 450.
    assert digits.num_test == 450
    assert digits.train_x.shape == (1347, 1, 8, 8)
    assert digits.test_x.shape == (450, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32
    assert digits.train_y.dtype == torch.int64 and digits.test_y.dtype == torch.int64
    assert (digits.num_classes, digits.in_channels, digits.max_value) == (10, 1, 16.0)
    for x in (digits.train_x, digits.test_x):
        assert float(x.min()) == 0.0 and float(x.max()) == 16.0
        # Digit pixels are integer intensities 0..16.
        assert torch.equal(x, x.round())
    assert set(digits.train_y.tolist()) == set(range(10))


def test_digits_split_is_stratified_and_disjoint(digits: ClassificationData) -> None:
    train_counts = torch.bincount(digits.train_y, minlength=10)
    test_counts = torch.bincount(digits.test_y, minlength=10)
    assert bool((test_counts > 0).all())
    total = train_counts + test_counts
    # Stratified: every class contributes ~25 % of its images to the test split.
    assert torch.all((test_counts.double() - 0.25 * total.double()).abs() <= 1.0)
    # No (image, label) pair is in both splits (digits has no cross-split duplicates).
    train_flat = {tuple(row.tolist()) + (int(y), )
                  for row, y in zip(digits.train_x.flatten(1), digits.train_y)}
    test_flat = [tuple(row.tolist()) + (int(y), )
                 for row, y in zip(digits.test_x.flatten(1), digits.test_y)]
    assert sum(t in train_flat for t in test_flat) == 0


def test_digits_deterministic_and_seed_dependent(digits: ClassificationData) -> None:
    again = DATASETS.build(dict(type='DigitsData'))
    assert isinstance(again, ClassificationData)
    for name in ('train_x', 'train_y', 'test_x', 'test_y'):
        assert torch.equal(getattr(digits, name), getattr(again, name))
    assert again.mean == digits.mean and again.std == digits.std

    other = DigitsData(split_seed=1)
    assert not torch.equal(other.test_y, digits.test_y) or not torch.equal(
        other.test_x, digits.test_x)
    smaller = DigitsData(test_fraction=0.5)
    assert smaller.num_train + smaller.num_test == 1797
    assert smaller.num_test in (898, 899)


def test_digits_mean_std_and_normalize(digits: ClassificationData) -> None:
    scaled = digits.train_x.double() / 16.0
    assert digits.mean[0] == pytest.approx(float(scaled.mean()), abs=1e-12)
    assert digits.std[0] == pytest.approx(float(scaled.std(unbiased=False)), abs=1e-12)

    raw = digits.train_x.clone()
    z = digits.normalize(digits.train_x)
    assert z.dtype == torch.float32 and z.shape == digits.train_x.shape
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(digits.train_x, raw)  # input left untouched
    # Exact formula on one pixel, and single images [C, H, W] are accepted.
    single = digits.normalize(digits.train_x[0])
    expected = (digits.train_x[0] / 16.0 - digits.mean[0]) / digits.std[0]
    torch.testing.assert_close(single, expected.float())
    with pytest.raises(ValueError):
        digits.normalize(torch.zeros(2, 3, 8, 8))


def test_classification_data_is_frozen_and_validated(digits: ClassificationData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.num_classes = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match='train_y'):
        dataclasses.replace(digits, train_y=digits.train_y[:-1])
    with pytest.raises(ValueError, match='mean'):
        dataclasses.replace(digits, mean=(0.1, 0.2))


def test_uint8_normalize_uses_per_channel_stats() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    data = ClassificationData(
        name='toy', train_x=x.contiguous(), train_y=torch.zeros(1, dtype=torch.int64),
        test_x=x.contiguous(), test_y=torch.zeros(1, dtype=torch.int64), num_classes=1,
        in_channels=2, mean=(0.5, 0.25), std=(0.5, 0.25), max_value=255.0)
    z = data.normalize(x)
    torch.testing.assert_close(z[0, 0], torch.full((2, 2), -1.0))
    torch.testing.assert_close(z[0, 1], torch.full((2, 2), 3.0))


@pytest.mark.parametrize('type_name,display', [
    ('CIFAR10Data', 'CIFAR-10'),
    ('CIFAR100Data', 'CIFAR-100'),
    ('FashionMNISTData', 'Fashion-MNIST'),
    ('SVHNData', 'SVHN'),
])
def test_missing_dataset_raises_one_clear_line(tmp_path: Path, type_name: str,
                                               display: str) -> None:
    root = tmp_path / 'absent'
    with pytest.raises(DatasetNotFoundError) as info:
        DATASETS.build(dict(type=type_name, root=str(root)))
    err = info.value
    assert isinstance(err, FileNotFoundError)
    message = str(err)
    assert '\n' not in message
    assert message.startswith(f'{display} not found under {root}:')
    assert 'download=True' in message and 'dataset.root' in message
    # Raised ``from None``: torchvision's error is not chained into the traceback.
    assert err.__cause__ is None and err.__suppress_context__


def test_relative_root_is_reported_absolute(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match='not found under') as info:
        DATASETS.build(dict(type='CIFAR10Data'))  # default root 'data/cifar10'
    assert str(tmp_path / 'data' / 'cifar10') in str(info.value)


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX format: big-endian magic (0x08 = uint8, then the number of dims), dims, bytes.
    header = struct.pack('>i', 0x0800 + array.ndim) + struct.pack(f'>{array.ndim}i',
                                                                  *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_loads_from_local_files(tmp_path: Path) -> None:
    raw = tmp_path / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    test_images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    train_labels = np.array([0, 1, 2, 9, 4], dtype=np.uint8)
    test_labels = np.array([3, 3, 7], dtype=np.uint8)
    _write_idx(raw / 'train-images-idx3-ubyte', train_images)
    _write_idx(raw / 'train-labels-idx1-ubyte', train_labels)
    _write_idx(raw / 't10k-images-idx3-ubyte', test_images)
    _write_idx(raw / 't10k-labels-idx1-ubyte', test_labels)

    data = DATASETS.build(dict(type='FashionMNISTData', root=str(tmp_path)))
    assert isinstance(data, ClassificationData)
    assert data.train_x.shape == (5, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (3, 1, 28, 28)
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(train_images))
    assert data.train_y.tolist() == [0, 1, 2, 9, 4] and data.train_y.dtype == torch.int64
    assert data.test_y.tolist() == [3, 3, 7]
    assert (data.num_classes, data.in_channels, data.max_value) == (10, 1, 255.0)
    assert data.mean == (0.2860, ) and data.std == (0.3530, )
    z = data.normalize(data.test_x)
    expected = (torch.from_numpy(test_images).float() / 255.0 - 0.2860) / 0.3530
    torch.testing.assert_close(z[:, 0], expected)
