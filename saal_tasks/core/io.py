"""Atomic file writes: a reader never sees a half-written file, a crash never corrupts one."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

from .errors import WorkDirError


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask.

    ``tempfile.mkstemp`` creates files readable by their owner only (0600); state files are
    renamed from such temporary files, and on a shared cluster a run's results must be
    readable by the group as any other file the user writes.
    """
    global _NEW_FILE_MODE
    if _NEW_FILE_MODE is None:
        mask = os.umask(0)  # reading the umask means setting it; restored at once
        os.umask(mask)
        _NEW_FILE_MODE = 0o666 & ~mask
    return _NEW_FILE_MODE


_NEW_FILE_MODE: int | None = None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    ``os.replace`` is atomic on POSIX, so the previous version of ``path`` stays intact until
    the new one is complete and flushed to disk.

    Args:
        path: Destination file.
        write: Callable that writes the full content to the binary file object it is given.

    Raises:
        WorkDirError: The file could not be written (disk full, permissions).
    """
    path = Path(path)
    tmp: str | None = None
    try:
        # Creating the folder or the temporary file is the first write: a full disk or a
        # read-only folder fails here, and gets the same one-line error as a failed write.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise WorkDirError(
                f'could not write {path} ({err.strerror or err}); the previous version is '
                'intact: free disk space or fix permissions, then rerun with --resume') from err
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON to ``path``."""
    data = json.dumps(obj, indent=2, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(data))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (state files are small; read in one go)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
