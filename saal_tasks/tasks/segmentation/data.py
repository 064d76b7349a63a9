"""SYNTHIA and Cityscapes with the 16 shared classes, as mmseg datasets.

Both read 8-bit train-id labels written by ``tools/convert_seg_labels.py`` (layouts in
:mod:`saal_tasks.tasks.segmentation.convert`); :func:`check_layout` says exactly what is missing
and which command makes it. SYNTHIA has no official split: the whole folder is the source
training set. Cityscapes ``train`` is the target pool and ``val`` the evaluation set.

Importing this module registers ``SynthiaDataset`` and ``Cityscapes16Dataset`` in mmseg's
``DATASETS`` registry (configs name them with ``custom_imports``).

:class:`ImageSet` serves one split's samples resized to the task's resolution, and
:func:`to_tensor` / :func:`load_batch` turn them into normalised training and scoring batches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from saal_tasks.core.errors import ConfigError
from saal_tasks.core.image_files import file_key, folder_images
from saal_tasks.compat.mmcv_ops import ensure_mmcv_ops

from .annotations import PixelLabels
from .classes import CLASSES16, PALETTE16
from .convert import (CITYSCAPES_IMG_DIR, CITYSCAPES_IMG_SUFFIX, CITYSCAPES_LABEL_DIR,
                      CITYSCAPES_LABEL_SUFFIX, CITYSCAPES_RAW_SUFFIX, CONVERT_COMMAND,
                      SYNTHIA_IMG_DIR, SYNTHIA_LABEL_DIR, SYNTHIA_RAW_LABEL_DIR)

# mmseg imports mmcv.ops at import time; this supplies a fallback where mmcv has no compiled ops.
ensure_mmcv_ops()

from mmseg.datasets import BaseSegDataset, CityscapesDataset  # noqa: E402
from mmseg.registry import DATASETS  # noqa: E402

__all__ = [
    'Cityscapes16Dataset', 'DATASET_KINDS', 'DEMO_HINT', 'ImageFolderSegDataset', 'ImageSet',
    'MEAN', 'STD',
    'SynthiaDataset', 'build_seg_dataset', 'check_layout', 'cityscapes_prefix', 'load_batch',
    'check_label_files', 'read_sample', 'sample_names', 'to_tensor'
]

#: Values of ``kind`` in :func:`build_seg_dataset` (``'folder'``: images without labels).
DATASET_KINDS = ('synthia', 'cityscapes', 'folder')
#: How to get data when there is none (named in errors).
DEMO_HINT = ('for a small generated stand-in in the same layout run `make demo-seg` '
             '(python tools/make_seg_demo.py, data in data/seg_demo/)')

#: ImageNet statistics (RGB, 0..255) the ResNet backbones expect.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)

_METAINFO16 = dict(classes=CLASSES16, palette=[list(colour) for colour in PALETTE16])


@DATASETS.register_module()
class SynthiaDataset(BaseSegDataset):
    """SYNTHIA RAND-CITYSCAPES with Cityscapes' 16 classes (the source domain).

    Layout: ``data_root/RGB/*.png`` images and ``data_root/GT/LABELS16/*.png`` train-id labels
    with the same file names, written from ``GT/LABELS`` by
    ``python tools/convert_seg_labels.py synthia ROOT``. Labels hold train ids ``0..15`` and
    255 (ignore).
    """

    METAINFO = _METAINFO16

    def __init__(self, img_suffix: str = '.png', seg_map_suffix: str = '.png',
                 data_prefix: dict | None = None, **kwargs) -> None:
        if data_prefix is None:
            data_prefix = dict(img_path=SYNTHIA_IMG_DIR, seg_map_path=SYNTHIA_LABEL_DIR)
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         data_prefix=data_prefix, **kwargs)


@DATASETS.register_module()
class Cityscapes16Dataset(CityscapesDataset):
    """Cityscapes with the 16 classes shared with SYNTHIA (the target domain).

    Layout: ``leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` images and
    ``gtFine/SPLIT/CITY/*_gtFine_labelTrainIds16.png`` labels, written from
    ``*_gtFine_labelIds.png`` by ``python tools/convert_seg_labels.py cityscapes ROOT``. The
    default ``data_prefix`` is the train split; pass
    ``dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val')`` for val.
    """

    METAINFO = _METAINFO16

    def __init__(self, img_suffix: str = CITYSCAPES_IMG_SUFFIX,
                 seg_map_suffix: str = CITYSCAPES_LABEL_SUFFIX, data_prefix: dict | None = None,
                 **kwargs) -> None:
        if data_prefix is None:
            data_prefix = cityscapes_prefix('train')
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         data_prefix=data_prefix, **kwargs)


@DATASETS.register_module()
class ImageFolderSegDataset(BaseSegDataset):
    """Every image under ``data_root`` (any depth, sorted by relative path) without a label:
    the unlabeled target images of query mode. Image ``k`` of the list is sample ``k``; its
    record holds ``file_key`` (relative path, size, content hash) and no ``seg_map_path``."""

    METAINFO = _METAINFO16

    def load_data_list(self) -> list[dict]:
        root, files = folder_images(self.data_root)
        return [dict(img_path=str(path), seg_map_path=None, label_map=None,
                     reduce_zero_label=False, seg_fields=[],
                     file_key=file_key(root, path, path.read_bytes())) for path in files]


def cityscapes_prefix(split: str) -> dict:
    """``data_prefix`` of one Cityscapes split for :class:`Cityscapes16Dataset`."""
    return dict(img_path=f'{CITYSCAPES_IMG_DIR}/{split}',
                seg_map_path=f'{CITYSCAPES_LABEL_DIR}/{split}')


def _stems(folder: Path, pattern: str, suffix: str) -> set[str]:
    """Names (relative to ``folder``, without ``suffix``) of the files matching ``pattern``."""
    if not folder.is_dir():
        return set()
    return {str(p.relative_to(folder))[:-len(suffix)] for p in folder.glob(pattern)}


def _check_pairs(what: str, root: Path, images: set[str], labels: set[str], raw: set[str],
                 image_glob: str, label_glob: str, raw_glob: str, convert: str) -> None:
    """Raise the one error that says what is missing among images / labels / raw labels.

    Labels of images are matched by name; an image with a raw label but no converted one
    calls for the converter, an image with neither for the data (or the demo).
    """
    expected = f'expected images {image_glob} and train-id labels {label_glob}'
    if not images:
        if not root.is_dir():
            problem = f'{what} folder {root} does not exist'
        else:
            problem = f'no {what} images at {image_glob}'
        raise ConfigError(f'{problem} ({expected}): point data_root at the dataset, or '
                          f'{DEMO_HINT}')
    missing = sorted(images - labels)
    if not missing:
        return
    convertible = [name for name in missing if name in raw]
    if convertible:
        raise ConfigError(f'{len(convertible)} of {len(images)} {what} images have no train-id '
                          f'label in {label_glob} but a raw one (e.g. {convertible[0]}): convert '
                          f'the raw labels with `{convert}`')
    raise ConfigError(f'{len(missing)} of {len(images)} {what} images have no label (e.g. '
                      f'{missing[0]}; {expected}, made from raw labels {raw_glob} by '
                      f'`{convert}`): restore the labels, or {DEMO_HINT}')


def check_layout(kind: str, data_root: str | Path, split: str | None = None) -> None:
    """Check that a dataset folder holds images and converted labels for every image.

    Args:
        kind: ``'synthia'`` or ``'cityscapes'``.
        data_root: The dataset folder.
        split: Cityscapes split (``'train'``, ``'val'``); required for Cityscapes. SYNTHIA has
            no split: None or ``'train'`` (the whole folder).

    Raises:
        ConfigError: One line naming the expected paths and the command that fixes it: the
            label converter when raw labels exist but converted ones are missing, the demo
            generator when there is nothing.
    """
    root = Path(data_root)
    if kind == 'synthia':
        if split not in (None, 'train'):
            raise ConfigError(f'SYNTHIA has no {split!r} split: use split=None or \'train\' (the '
                              'whole folder is the source training set)')
        _check_pairs(
            'SYNTHIA', root,
            images=_stems(root / SYNTHIA_IMG_DIR, '*.png', '.png'),
            labels=_stems(root / SYNTHIA_LABEL_DIR, '*.png', '.png'),
            raw=_stems(root / SYNTHIA_RAW_LABEL_DIR, '*.png', '.png'),
            image_glob=f'{root}/{SYNTHIA_IMG_DIR}/*.png',
            label_glob=f'{root}/{SYNTHIA_LABEL_DIR}/*.png',
            raw_glob=f'{root}/{SYNTHIA_RAW_LABEL_DIR}/*.png',
            convert=f'{CONVERT_COMMAND} synthia {root}')
    elif kind == 'cityscapes':
        if not split:
            raise ConfigError('Cityscapes needs a split: pass split=\'train\' or \'val\'')
        img_dir = root / CITYSCAPES_IMG_DIR / split
        label_dir = root / CITYSCAPES_LABEL_DIR / split
        _check_pairs(
            f'Cityscapes {split}', root,
            images=_stems(img_dir, f'*/*{CITYSCAPES_IMG_SUFFIX}', CITYSCAPES_IMG_SUFFIX),
            labels=_stems(label_dir, f'*/*{CITYSCAPES_LABEL_SUFFIX}', CITYSCAPES_LABEL_SUFFIX),
            raw=_stems(label_dir, f'*/*{CITYSCAPES_RAW_SUFFIX}', CITYSCAPES_RAW_SUFFIX),
            image_glob=f'{img_dir}/*/*{CITYSCAPES_IMG_SUFFIX}',
            label_glob=f'{label_dir}/*/*{CITYSCAPES_LABEL_SUFFIX}',
            raw_glob=f'{label_dir}/*/*{CITYSCAPES_RAW_SUFFIX}',
            convert=f'{CONVERT_COMMAND} cityscapes {root} --split {split}')
    elif kind != 'folder':  # a folder of images has no layout; its dataset checks it
        raise ConfigError(f'unknown segmentation dataset kind {kind!r}: choose from '
                          f'{DATASET_KINDS}')


def build_seg_dataset(kind: str, data_root: str | Path, split: str | None = None,
                      **kwargs) -> BaseSegDataset:
    """Build one checked dataset without a pipeline (for pools and direct reading).

    Args:
        kind: ``'synthia'``, ``'cityscapes'`` or ``'folder'`` (images only,
            :class:`ImageFolderSegDataset`).
        data_root: The dataset folder.
        split: Cityscapes split; for SYNTHIA None or ``'train'`` (see :func:`check_layout`).
        **kwargs: Passed on to the dataset class (e.g. ``pipeline``, ``indices``).

    Returns:
        A :class:`SynthiaDataset`, :class:`Cityscapes16Dataset` or
        :class:`ImageFolderSegDataset`, samples sorted by path.

    Raises:
        ConfigError: The folder is incomplete (see :func:`check_layout`).
    """
    kwargs.setdefault('pipeline', [])
    # Plain lists: pools index the data infos directly and nothing is shared across workers.
    kwargs.setdefault('serialize_data', False)
    if kind == 'folder':
        return ImageFolderSegDataset(data_root=str(data_root), **kwargs)
    check_layout(kind, data_root, split)
    if kind == 'synthia':
        return SynthiaDataset(data_root=str(data_root), **kwargs)
    return Cityscapes16Dataset(data_root=str(data_root), data_prefix=cityscapes_prefix(split),
                               **kwargs)


def _fix_command(dataset: BaseSegDataset) -> str:
    """The converter command that rewrites ``dataset``'s train-id labels (named in errors)."""
    root = dataset.data_root
    if isinstance(dataset, SynthiaDataset):
        return f'{CONVERT_COMMAND} synthia {root} --force'
    if isinstance(dataset, Cityscapes16Dataset):
        split = os.path.basename(os.path.normpath(dataset.data_prefix['seg_map_path']))
        return f'{CONVERT_COMMAND} cityscapes {root} --split {split} --force'
    return CONVERT_COMMAND


def _num_classes(dataset: BaseSegDataset) -> int:
    """Number of train ids of ``dataset`` (its metainfo's classes; the 16 classes otherwise)."""
    return len(dataset.metainfo.get('classes') or CLASSES16)


def _read_label(path: str) -> np.ndarray | None:
    """A label file as cv2 reads it unchanged; palette PNGs as their indices ``[H, W]``."""
    import cv2

    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is not None and label.ndim == 3:
        # OpenCV expands palette PNGs to colours; their indices are the train ids.
        from PIL import Image
        with Image.open(path) as image:
            if image.mode == 'P':
                return np.asarray(image, dtype=np.uint8)
    return label


def _check_label_values(label: np.ndarray, path: str, dataset: BaseSegDataset) -> None:
    """Raise if ``label`` holds a value that is neither a train id nor 255 (ignore)."""
    num_classes = _num_classes(dataset)
    counts = np.bincount(label.ravel(), minlength=256)
    bad = np.flatnonzero(counts[num_classes:255]) + num_classes
    if not bad.size:
        return
    shown = ', '.join(str(int(v)) for v in bad[:5])
    more = f' (and {bad.size - 5} more)' if bad.size > 5 else ''
    raise ConfigError(f'label {path} holds values {shown}{more} that are neither train ids '
                      f'0..{num_classes - 1} nor 255 (ignore): rerun `{_fix_command(dataset)}` '
                      f'(it writes train ids 0..{num_classes - 1} and 255) or replace the file')


def read_sample(dataset: BaseSegDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The image and train-id label of one sample, read from its files.

    Args:
        dataset: A dataset built by :func:`build_seg_dataset` (or any ``BaseSegDataset``).
        index: Sample index in ``dataset``.

    Returns:
        ``(image, label)``: image uint8 ``[H, W, 3]`` in RGB order; label uint8 ``[H, W]``
        (train ids, 255 = ignore; the dataset's ``label_map`` applied when it has one; all
        255 for a sample without a label file).

    Raises:
        FileNotFoundError: An image or label file cannot be read.
        ConfigError: The label is not one 8-bit channel, or (after ``label_map``) holds a
            value that is neither a train id (below the number of classes) nor 255; one line
            naming the file and the converter command that rewrites it.
    """
    import cv2

    info = dataset.get_data_info(index)
    image = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f'cannot read image {info["img_path"]}: check the dataset folder')
    path = info['seg_map_path']
    if path is None:  # an unlabeled image (query mode): every pixel unknown
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), np.full(image.shape[:2], 255, np.uint8)
    label = _read_label(path)
    if label is None:
        raise FileNotFoundError(f'cannot read label {path}: check the dataset '
                                'folder or rerun the label converter')
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ConfigError(f'label {path} must be one 8-bit channel of train ids (PNG mode L '
                          f'or P), got shape {label.shape} dtype {label.dtype}: rerun '
                          f'`{_fix_command(dataset)}` or replace the file')
    label_map = info.get('label_map')
    if label_map:
        mapped = label.copy()
        for old_id, new_id in label_map.items():
            mapped[label == old_id] = new_id
        label = mapped
    _check_label_values(label, path, dataset)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), label


def _png_header(path: str, what: str) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` of an image file, from its header only (no decoding)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (UnidentifiedImageError, OSError) as err:
        raise FileNotFoundError(f'cannot read {what} {path} ({type(err).__name__}): check the '
                                'dataset folder or rerun the label converter') from None


def _first_of(problems: list[str], total: int, what: str) -> str:
    """The one problem, or how many of ``total`` there are and the first."""
    if len(problems) == 1:
        return problems[0]
    return f'{len(problems)} of {total} labels {what}, the first: {problems[0]}'


def check_label_files(dataset: BaseSegDataset, count: int | None = None) -> None:
    """Check, from the PNG headers only, that each label fits its image.

    Every label of the first ``count`` samples (all when None) must be one 8-bit channel
    (mode ``'L'`` or ``'P'``) and have its image's width and height. Only headers are read
    (no pixel is decoded); the label values are checked lazily by :func:`read_sample`.

    Raises:
        ConfigError: One line naming the (first) wrong label, both sizes or its mode, how
            many are wrong, and the converter command that rewrites them.
        FileNotFoundError: A file's header cannot be read.
    """
    total = len(dataset) if count is None else min(int(count), len(dataset))
    wrong_mode: list[str] = []
    wrong_size: list[str] = []
    for index in range(total):
        info = dataset.get_data_info(index)
        label_path, image_path = info['seg_map_path'], info['img_path']
        (label_w, label_h), mode = _png_header(label_path, 'label')
        if mode not in ('L', 'P'):
            wrong_mode.append(f'label {label_path} has mode {mode}, not one 8-bit channel of '
                              'train ids (L or P)')
            continue
        (image_w, image_h), _ = _png_header(image_path, 'image')
        if (label_w, label_h) != (image_w, image_h):
            wrong_size.append(f'label {label_path} is {label_w}x{label_h} but its image '
                              f'{image_path} is {image_w}x{image_h}')
    files = 'the file' if len(wrong_mode) + len(wrong_size) == 1 else 'the files'
    fix = f'rerun `{_fix_command(dataset)}` or replace {files}'
    if wrong_mode:
        raise ConfigError(f'{_first_of(wrong_mode, total, "are not one 8-bit channel")}: '
                          f'labels must be train ids in one 8-bit channel; {fix}')
    if wrong_size:
        raise ConfigError(f'{_first_of(wrong_size, total, "differ in size from their image")}'
                          f': labels must have their image\'s size; {fix}')


def sample_names(dataset: BaseSegDataset) -> list[str]:
    """File names of the samples without the image suffix, in dataset order.

    For SYNTHIA ``'0000000'``; for Cityscapes ``'aachen_000000_000019'`` (city names are part
    of Cityscapes file names, so names are unique within a split).
    """
    cut = len(dataset.img_suffix)
    return [os.path.basename(dataset.get_data_info(i)['img_path'])[:-cut]
            for i in range(len(dataset))]


class ImageSet:
    """Images and train-id labels of one dataset split, resized to one size.

    Args:
        dataset: Dataset config ``dict(kind=..., data_root=..., split=...)``; ``kind='folder'``
            reads images without labels (query mode).
        size: ``(height, width)`` the images (bilinear) and labels (nearest) are resized to.
        cache: Keep decoded, resized samples in memory (small data); otherwise read the files
            on every access.
        limit: Use only the first ``limit`` samples (quick evaluation); ``None`` = all.
    """

    def __init__(self, dataset: dict, size: tuple[int, int], cache: bool = True,
                 limit: int | None = None) -> None:
        import cv2  # noqa: F401  (fail early: reading needs OpenCV)
        self.spec = dict(dataset)
        if 'kind' not in self.spec or 'data_root' not in self.spec:
            raise ConfigError(f"a segmentation dataset needs kind and data_root, got {dataset}: "
                              "e.g. dict(kind='cityscapes', data_root='data/cityscapes', "
                              "split='train')")
        self.dataset = build_seg_dataset(self.spec['kind'], self.spec['data_root'],
                                         self.spec.get('split'))
        self.size = (int(size[0]), int(size[1]))
        self.length = len(self.dataset) if limit is None else min(limit, len(self.dataset))
        #: Whether the samples have label files (a ``'folder'`` set has none).
        self.labeled = self.spec['kind'] != 'folder'
        if self.labeled:
            # Headers only: a label of another size than its image would be stretched silently.
            check_label_files(self.dataset, self.length)
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._eval_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``[h, w, 3]`` uint8 RGB and label ``[h, w]`` at the files' resolution."""
        return read_sample(self.dataset, index)

    def _resized(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        import cv2
        height, width = self.size
        if array.shape[:2] == (height, width):
            return array
        return cv2.resize(array, (width, height), interpolation=interpolation)

    def resized(self, array: np.ndarray, nearest: bool = False) -> np.ndarray:
        """``array`` (``[h, w]`` or ``[h, w, 3]`` uint8) at this set's size: bilinear, or
        nearest neighbours for labels."""
        import cv2
        return self._resized(array, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized image ``[H, W, 3]`` uint8 and label ``[H, W]`` uint8."""
        if index in self._cache:
            return self._cache[index]
        import cv2
        image, label = self.raw(index)
        pair = (self._resized(image, cv2.INTER_LINEAR), self._resized(label, cv2.INTER_NEAREST))
        if self.cache:
            self._cache[index] = pair
        return pair

    def for_evaluation(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized image ``[H, W, 3]`` and the label at the file's resolution ``[h, w]``.

        Read once per call (or once per run with ``cache``): evaluation predicts at the
        task's size and scores at the label's own size.
        """
        if index in self._eval_cache:
            return self._eval_cache[index]
        import cv2
        image, label = self.raw(index)
        pair = (self._resized(image, cv2.INTER_LINEAR), label)
        if self.cache:
            self._eval_cache[index] = pair
        return pair


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """Stack uint8 RGB images ``[H, W, 3]`` into a normalised float batch ``[B, 3, H, W]``."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (batch - mean) / std


def load_batch(images: ImageSet, indices: np.ndarray, flips: np.ndarray,
               revealed: PixelLabels | None = None,
               transform: Callable[[np.ndarray, np.ndarray, int],
                                   tuple[np.ndarray, np.ndarray]] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch of ``images``, each optionally flipped horizontally.

    Args:
        images: The split to read.
        indices: Sample indices in ``images``, shape ``[B]``.
        flips: Whether to flip each sample, bool ``[B]``.
        revealed: For target batches, the revealed pixels: labels are then the training
            targets of :meth:`PixelLabels.targets` (255 where not revealed) instead of the
            split's full labels. Revealed at another resolution (``revealed.shape``, e.g.
            Cityscapes' 1024 x 2048 labels), they are resized to the images' with nearest
            neighbours, as RIPU resizes its saved masks.
        transform: Optional augmentation ``(image, label, position in the batch) -> (image,
            label)`` applied to each sample after the flip (``task.train_pipeline``).

    Returns:
        Normalised images ``[B, 3, H, W]`` (float32) and labels ``[B, H, W]`` (int64).

    Raises:
        ConfigError: ``transform`` gave the samples of one batch different sizes.
    """
    pictures, labels = [], []
    for index, flip in zip(indices, flips):
        image, label = images.get(int(index))
        if revealed is not None:
            label = revealed.targets(int(index)).reshape(revealed.shape or images.size)
            label = images.resized(label, nearest=True)
        if flip:
            image, label = image[:, ::-1], label[:, ::-1]
        if transform is not None:
            image, label = transform(image, label, len(pictures))
        pictures.append(np.ascontiguousarray(image))
        labels.append(np.ascontiguousarray(label))
    shapes = sorted({p.shape[:2] for p in pictures} | {lab.shape[:2] for lab in labels})
    if len(shapes) > 1:
        raise ConfigError(f'task.train_pipeline gave the samples of one batch the sizes '
                          f'{shapes}: end it with a fixed size (RandomCrop with crop_size, or '
                          'Resize with keep_ratio=False)')
    return to_tensor(pictures), torch.from_numpy(np.stack(labels)).long()
