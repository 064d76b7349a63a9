"""Folders of image files as pools: which files, in which order, and what each id means.

Every task that reads a plain folder (classification's image folders, query mode's unlabeled
images for all three tasks) lists it the same way, so a sample id means the same file
whichever task reads the folder, and a changed file is noticed the same way.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ConfigError

#: Suffixes (lower case) of the files a folder of images is made of.
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (any depth), sorted by its path relative to ``root``.

    Args:
        root: The folder.

    Returns:
        The files; position ``k`` is sample id ``k`` of a folder pool.
    """
    return sorted((p for p in root.rglob('*')
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.relative_to(root).as_posix())


def folder_images(root: str | Path, option: str = '--data') -> tuple[Path, list[Path]]:
    """The folder ``root`` (resolved) and its images (:func:`list_images`).

    Args:
        root: What the user named as a folder of images.
        option: The option or config key that named it (for the error).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ConfigError: ``root`` is a file, or holds no image.
    """
    path = Path(root).expanduser().resolve()
    if path.is_file():
        raise ConfigError(f'{path} is a file, not a folder of images: check {option}')
    if not path.is_dir():
        raise FileNotFoundError(f'image folder {path} does not exist: check {option}')
    files = list_images(path)
    if not files:
        raise ConfigError(f'no images ({", ".join(IMAGE_SUFFIXES)}) under {path}: check '
                          f'{option}')
    return path, files


def file_key(root: Path, path: Path, data: bytes) -> str:
    """What a file is: relative path, size and a content hash (what its sample id means).

    Args:
        root: The folder the pool was listed from.
        path: The file, under ``root``.
        data: Its bytes.

    Returns:
        ``'<relative path> <size> <16 hex digits>'``; :func:`key_path` reads the path back.
    """
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return f'{path.relative_to(root).as_posix()} {len(data)} {digest}'


def key_path(key: str) -> str:
    """The relative path of a :func:`file_key` (paths may hold spaces)."""
    return key.rsplit(' ', 2)[0]


__all__ = ['IMAGE_SUFFIXES', 'file_key', 'folder_images', 'key_path', 'list_images']
