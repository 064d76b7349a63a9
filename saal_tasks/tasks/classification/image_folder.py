"""Your own images: ``root/{train,test}/<class name>/*.png|jpg`` loaded into memory."""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from mmengine.logging import print_log

from ...core.errors import ConfigError
from ...core.image_files import IMAGE_SUFFIXES, file_key, folder_images
from ...registry import DATASETS
from .data import ClassificationData, DatasetNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

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
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        found_here = [p for p in (sorted((folder / name).glob('*')) if (folder / name).is_dir()
                                  else []) if p.suffix.lower() in IMAGE_SUFFIXES]
        if (folder / name).is_dir() and not found_here:
            empty.append(folder / name)
        files.extend(found_here)
        labels.extend([label] * len(found_here))
    if not files:
        raise ConfigError(f'no images ({", ".join(IMAGE_SUFFIXES)}) found under {folder}/<class '
                          'name>/: the dataset is empty; check task.dataset.root')
    if split == 'train' and empty:
        # It would still count as a class, one the model never sees a sample of.
        raise ConfigError(f'class folder {empty[0]} holds no images '
                          f'({", ".join(IMAGE_SUFFIXES)}): add images or remove the folder')
    return files, labels, classes


def _pixels(img: 'Image.Image', mode: str, path: Path) -> np.ndarray:
    """The image as uint8 ``[H, W, C]`` in ``mode``, 16-bit images scaled, not clipped.

    PIL's ``convert`` clips 16-bit grey values (``I;16``, ``I``) to 255, so a 16-bit PNG would
    load as a white image; the high byte is the exact 8-bit value of a 16-bit sample.
    """
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        grey = np.asarray(img, dtype=np.int64)
        if grey.min(initial=0) < 0 or grey.max(initial=0) > 65535:
            raise CorruptImageError(
                f'image {path} is {img.mode} with values outside 0..65535: save it as an 8- or '
                '16-bit PNG')
        grey = (grey >> 8).astype(np.uint8)
        return grey[..., None] if mode == 'L' else np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == 'F':
        raise CorruptImageError(f'image {path} holds floating-point pixels (mode F): save it '
                                'as an 8- or 16-bit PNG or a JPEG')
    return np.asarray(img.convert(mode), dtype=np.uint8).reshape(img.size[1], img.size[0], -1)


def _decode(root: Path, paths: list[Path], mode: str,
            on_corrupt: str) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Decode images; return arrays ``[H, W, C]``, the positions that decoded, their keys."""
    from PIL import Image, UnidentifiedImageError
    arrays, kept, keys, bad = [], [], [], []
    for pos, path in enumerate(paths):
        try:
            data = path.read_bytes()  # read once: hashed for the key and decoded
            with Image.open(io.BytesIO(data)) as img:
                img.load()  # a truncated file fails here, not later in training
                arrays.append(_pixels(img, mode, path))
            kept.append(pos)
            keys.append(file_key(root, path, data))
        except CorruptImageError:  # a readable file we cannot use: named already
            if on_corrupt == 'stop':
                raise
            bad.append(path)
        except Image.DecompressionBombError as err:
            if on_corrupt == 'stop':
                raise CorruptImageError(
                    f'image {path} is too large to decode safely ({err}): resize it, or set '
                    "task.dataset.on_corrupt='skip' to leave it out") from None
            bad.append(path)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            if on_corrupt == 'stop':
                raise CorruptImageError(
                    f'corrupt or truncated image {path} ({err}): replace or remove it, or set '
                    "task.dataset.on_corrupt='skip' to leave it out") from None
            bad.append(path)
    if bad:
        print_log(f'skipped {len(bad)} unreadable image(s) (on_corrupt=skip): '
                  f"{', '.join(str(p) for p in bad[:5])}{' ...' if len(bad) > 5 else ''}",
                  logger='current', level=30)
    return arrays, kept, keys


@DATASETS.register_module()
def ImageFolderData(root: str, grayscale: bool = False,
                    on_corrupt: str = 'stop') -> ClassificationData:
    """Images in class folders, split into ``train`` (the pool) and ``test``.

    Sample ids are positions in the sorted list of training files, counted before corrupt
    files are skipped, so skipping a file never changes another file's id. Each id's file
    (relative path, size, content hash) is recorded when a run starts: a resumed run whose
    ids now point at other files is refused. 16-bit grey images are scaled to 8 bits;
    images too large to decode safely (PIL's decompression-bomb limit) count as unreadable.

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
    splits, train_keys = [], []
    for files, labels in ((train_files, train_labels), (test_files, test_labels)):
        arrays, kept, keys = _decode(root_path, files, mode, on_corrupt)
        if not splits:  # the train split: its keys say what each sample id is
            train_keys = keys
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
        max_value=255.0, train_ids=train_ids, sample_keys=tuple(train_keys))



def _resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, C]`` uint8 resized (bilinear) to ``size = (H, W)`` when it differs."""
    if array.shape[:2] == size:
        return array
    from PIL import Image
    squeezed = array[..., 0] if array.shape[2] == 1 else array
    out = np.asarray(Image.fromarray(squeezed).resize((size[1], size[0]), Image.BILINEAR))
    return out.reshape(size[0], size[1], array.shape[2])


@DATASETS.register_module()
def UnlabeledImagesData(root: str, like: dict, on_corrupt: str = 'stop') -> ClassificationData:
    """A folder of images nobody has labeled, prepared like the data a model was trained on.

    For query mode: every image under ``root`` (any depth, sorted by relative path; no class
    folders needed) becomes a pool sample, id = its position in that list (counted before
    corrupt files are skipped). Images are converted to the channels of ``like``, resized
    (bilinear) to its image size, scaled to its value range and normalised with its
    statistics, so the trained model sees them as it saw its training images.

    Args:
        root: Folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``).
        like: Config of the dataset the model was trained on (``task.dataset`` of its run);
            built once for its shape, scale, statistics and classes.
        on_corrupt: ``'stop'`` (error naming the file) or ``'skip'`` (leave it out, warn).

    Returns:
        The pool (``train_x``/``train_y``; the labels are unknown and set to 0, the test
        split is empty) with each image's file in ``sample_keys``.
    """
    from ...core.build import build_component
    if on_corrupt not in ('stop', 'skip'):
        raise ConfigError(f"task.dataset.on_corrupt must be 'stop' or 'skip', got {on_corrupt!r}")
    root_path, files = folder_images(root)
    reference: ClassificationData = build_component(DATASETS, like, 'task.dataset.like')
    channels, height, width = reference.train_x.shape[1:]
    mode = 'L' if channels == 1 else 'RGB'
    arrays, kept, keys = _decode(root_path, files, mode, on_corrupt)
    if not arrays:
        raise ConfigError(f'every image under {root_path} is corrupt: nothing to query')
    pixels = np.stack([_resized(a, (height, width)) for a in arrays])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    if reference.max_value != 255.0 or reference.train_x.dtype != torch.uint8:
        # The reference's scale (e.g. 0..16 for the digits): 0..255 maps onto 0..max_value.
        x = (x.float() * (reference.max_value / 255.0)).to(reference.train_x.dtype)
    count = len(kept)
    return ClassificationData(
        name=f'Unlabeled({root_path.name})', train_x=x,
        train_y=torch.zeros(count, dtype=torch.long), test_x=x[:0],
        test_y=torch.zeros(0, dtype=torch.long), num_classes=reference.num_classes,
        in_channels=int(channels), mean=reference.mean, std=reference.std,
        max_value=reference.max_value, train_ids=torch.tensor(kept, dtype=torch.long),
        sample_keys=tuple(keys), unlabeled=True)
