"""Your own images: ``root/{train,test}/<class name>/*.png|jpg`` loaded into memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmengine.logging import print_log

from ...core.errors import ConfigError
from ...registry import DATASETS
from .data import ClassificationData, DatasetNotFoundError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


class CorruptImageError(ConfigError):
    """An image file cannot be decoded."""


def _list_split(root: Path, split: str, classes: list[str] | None) -> tuple[list[Path], list[int],
                                                                          list[str]]:
    folder = root / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f'image folder {folder} does not exist: expected '
                                   f'{root}/{{train,test}}/<class name>/<images>; check '
                                   'task.dataset.root')
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    classes = classes if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ConfigError(f'{folder} has class folders {unknown} that the train split does not '
                          'have: use the same class folders in both splits')
    files, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).glob('*')) if (folder / name).is_dir() else []:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(label)
    if not files:
        raise ConfigError(f'no images ({", ".join(IMAGE_SUFFIXES)}) found under {folder}/<class '
                          'name>/: the dataset is empty; check task.dataset.root')
    return files, labels, classes


def _decode(paths: list[Path], mode: str, on_corrupt: str) -> tuple[list[np.ndarray], list[int]]:
    """Decode images; return arrays ``[H, W, C]`` and the positions that decoded."""
    from PIL import Image, UnidentifiedImageError
    arrays, kept, bad = [], [], []
    for pos, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                arrays.append(np.asarray(img.convert(mode), dtype=np.uint8).reshape(
                    img.size[1], img.size[0], -1))
            kept.append(pos)
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            if on_corrupt == 'stop':
                raise CorruptImageError(
                    f'corrupt or truncated image {path} ({err}): replace or remove it, or set '
                    "task.dataset.on_corrupt='skip' to leave it out") from None
            bad.append(path)
    if bad:
        print_log(f'skipped {len(bad)} corrupt image(s) (on_corrupt=skip): '
                  f"{', '.join(str(p) for p in bad[:5])}{' ...' if len(bad) > 5 else ''}",
                  logger='current', level=30)
    return arrays, kept


@DATASETS.register_module()
def ImageFolderData(root: str, grayscale: bool = False,
                    on_corrupt: str = 'stop') -> ClassificationData:
    """Images in class folders, split into ``train`` (the pool) and ``test``.

    Sample ids are positions in the sorted list of training files, counted before corrupt
    files are skipped, so skipping a file never changes another file's id.

    Args:
        root: Folder holding ``train/<class>/`` and ``test/<class>/``.
        grayscale: Load one channel instead of RGB.
        on_corrupt: ``'stop'`` (error naming the file) or ``'skip'`` (leave it out, warn).

    Returns:
        The dataset with uint8 images ``[N, C, H, W]``; every image must have the same size.
    """
    if on_corrupt not in ('stop', 'skip'):
        raise ConfigError(f"task.dataset.on_corrupt must be 'stop' or 'skip', got {on_corrupt!r}")
    root_path = Path(root).expanduser().resolve()
    mode = 'L' if grayscale else 'RGB'
    train_files, train_labels, classes = _list_split(root_path, 'train', None)
    test_files, test_labels, _ = _list_split(root_path, 'test', classes)
    splits = []
    for files, labels in ((train_files, train_labels), (test_files, test_labels)):
        arrays, kept = _decode(files, mode, on_corrupt)
        if not arrays:
            raise ConfigError(f'every image under {files[0].parent.parent} is corrupt: the '
                              'dataset is empty')
        first = arrays[0].shape
        for a, k in zip(arrays, kept):
            if a.shape != first:
                raise ConfigError(f'image {files[k]} is {a.shape[1]}x{a.shape[0]} but '
                                  f'{files[kept[0]]} is {first[1]}x{first[0]}: resize all '
                                  'images to one size')
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor([labels[k] for k in kept], dtype=torch.long)
        splits.append((x, y, torch.tensor(kept, dtype=torch.long)))
    (train_x, train_y, train_ids), (test_x, test_y, _) = splits
    scaled = train_x.float() / 255
    return ClassificationData(
        name=f'ImageFolder({root_path.name})', train_x=train_x, train_y=train_y,
        test_x=test_x, test_y=test_y, num_classes=len(classes), in_channels=train_x.shape[1],
        mean=tuple(scaled.mean(dim=(0, 2, 3)).tolist()),
        std=tuple(max(s, 1e-6) for s in scaled.std(dim=(0, 2, 3)).tolist()),
        max_value=255.0, train_ids=train_ids)

