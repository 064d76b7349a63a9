"""The run store: everything a run keeps on disk, and the rules that keep it resumable.

It owns the work directory: round folders, atomic writes recorded with their checksums in the
manifest, the model and optimizer files of each round, ``config.json`` and the comparison of a
resumed run's config with it, and ``metrics.jsonl``. Only rank 0 writes; every rank reads.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Mapping

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..core.dist import barrier
from ..core.errors import ResumeError, WorkDirError
from ..core.io import atomic_write, atomic_write_json
from ..core.pool_state import PoolState
from .manifest import MANIFEST_NAME, Manifest

MANIFEST = MANIFEST_NAME
METRICS = 'metrics.jsonl'
CONFIG_JSON = 'config.json'
#: Held (``flock``) by the process running in the work dir; holds that process's PID.
LOCK = '.lock'
#: What a process leaves before its first state file (the log, the config): a folder holding
#: one of them but no manifest is a run killed before its first stage.
STARTED_MARKERS = ('run.log', CONFIG_JSON)
#: Keys that do not change what a run computes.
_IGNORED_KEYS = ('work_dir',)


def plain_config(cfg: Config | Mapping) -> dict[str, Any]:
    """A config as plain JSON data (tuples as lists, objects as their repr), ``work_dir`` out."""
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    data = {k: v for k, v in data.items() if k not in _IGNORED_KEYS}
    # JSON round trip: tuples become lists, objects their repr, so hashes are stable.
    return json.loads(json.dumps(data, sort_keys=True, default=repr))


def config_hash(cfg: Config | Mapping) -> str:
    """SHA-256 of a config, ignoring keys that do not change results (``work_dir``)."""
    return hashlib.sha256(json.dumps(plain_config(cfg), sort_keys=True).encode()).hexdigest()


def _flatten(data: Any, prefix: str = '') -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f'{prefix}{k}.'))
        return out
    return {prefix[:-1]: data}


def config_diff(old: Mapping, new: Mapping) -> list[str]:
    """Dotted keys whose values differ between two plain configs, sorted."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    return sorted(k for k in set(a) | set(b) if a.get(k, '<unset>') != b.get(k, '<unset>'))


class RunStore:
    """The work directory of one run.

    Args:
        work_dir: The run's folder.
        config: Plain config of the run (what ``config.json`` holds).
        config_hash: Its hash, compared on resume (``''`` skips the comparison).
        rank: This process's rank; only rank 0 writes.
    """

    def __init__(self, work_dir: str | os.PathLike, config: dict[str, Any], config_hash: str,
                 rank: int = 0) -> None:
        self.work_dir = Path(work_dir)
        self.config = config
        self.config_hash = config_hash
        self.rank = rank
        self._manifest: Manifest | None = None
        self._lock_fd: int | None = None
        #: Set by :meth:`load` when a changed config was accepted; written by
        #: :meth:`commit_config_change` once the run has been rebuilt with it.
        self._config_change_pending = False
        self.config_record = ConfigRecord(self.work_dir / CONFIG_JSON, config, config_hash)
        self.metrics = MetricsLog(self.work_dir / METRICS)

    @property
    def manifest(self) -> Manifest:
        """The run's manifest (after :meth:`start` or :meth:`load`)."""
        if self._manifest is None:
            raise RuntimeError('the run store has no manifest yet: start or load the run first')
        return self._manifest

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0, or the only process)."""
        return self.rank == 0

    def round_dir(self, round_idx: int) -> Path:
        """Folder of what round ``round_idx`` wrote (round 0 = the initial labeled set)."""
        return self.work_dir / 'rounds' / f'round_{round_idx:03d}'

    # ------------------------------------------------------------------ the folder
    def check_writable(self) -> None:
        """Create the work dir and prove it can hold files.

        Raises:
            WorkDirError: It cannot be created or written.
        """
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.work_dir):
                pass
        except OSError as err:
            raise WorkDirError(f'work directory {self.work_dir} is not writable '
                               f'({err.strerror or err}): choose another --work-dir') from None

    def lock(self) -> None:
        """Hold the work dir for this process (rank 0; idempotent) until it exits.

        An advisory ``flock`` on ``.lock``: the kernel drops it when the process ends, however
        it ends, so a killed run never leaves a stale lock behind.

        Raises:
            WorkDirError: Another process holds the work dir (its PID is named).
        """
        if not self.is_main or self._lock_fd is not None:
            return
        path = self.work_dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise WorkDirError(f'work directory {self.work_dir} is not writable '
                               f'({err.strerror or err}): choose another --work-dir') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise WorkDirError(
                f'another process (PID {holder}) is running in {self.work_dir}: wait for it to '
                'finish or stop it, or choose another --work-dir') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()}\n'.encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release :meth:`lock` (also released when the process exits)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def prepare(self, resume: bool) -> bool:
        """Check the folder before anything is written to it; say whether to resume.

        Makes the work dir, proves it writable and locks it, then resolves ``resume``: a
        folder that a process entered but left before its first state file (its log or
        config, no manifest) is started afresh, since nothing would be lost.

        Returns:
            Whether the run resumes.

        Raises:
            WorkDirError: The folder cannot be written or another process holds it.
            ResumeError: ``resume`` with nothing to resume, or a new run over an existing one.
        """
        self.check_writable()
        self.lock()
        if not resume:
            self.ensure_new()
            return False
        if self.has_run():
            return True
        if any((self.work_dir / name).exists() for name in STARTED_MARKERS):
            print_log(f'{self.work_dir} holds no finished stage: starting the run',
                      logger='current')
            return False
        raise ResumeError(f'nothing to resume in {self.work_dir} (no {MANIFEST}): '
                          'run without --resume to start')

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files of writes interrupted before their rename (never state)."""
        if self.is_main:
            for stale in self.work_dir.rglob('.*.tmp'):
                stale.unlink()

    def has_run(self) -> bool:
        """Whether the folder holds a run (its manifest)."""
        return (self.work_dir / MANIFEST).exists()

    # ------------------------------------------------------------------ state files
    def write(self, path: Path, write: Callable[[IO[bytes]], Any]) -> None:
        """Atomically write a state file and remember its checksum (rank 0 only)."""
        if self.is_main:
            atomic_write(path, write)
            self.manifest.record_file(self.work_dir, path)

    def write_json(self, path: Path, obj: Any) -> None:
        """:meth:`write` of indented, key-sorted JSON."""
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        self.write(path, lambda f: f.write(data))

    def read_json(self, round_idx: int, name: str) -> Any:
        """A JSON state file of a round."""
        return json.loads((self.round_dir(round_idx) / name).read_text())

    def is_recorded(self, path: Path) -> bool:
        """Whether ``path`` is a state file of the manifest."""
        return str(path.relative_to(self.work_dir)) in self.manifest.files

    def save_torch(self, round_idx: int, name: str, obj: Any) -> None:
        """Persist tensors (a state dict, an optimizer state) in a round's folder."""
        self.write(self.round_dir(round_idx) / name, lambda f: torch.save(obj, f))

    def load_torch(self, round_idx: int, name: str) -> Any:
        """Read tensors written by :meth:`save_torch`."""
        # Plain tensors only: safe loading is enough and stays on.
        return torch.load(self.round_dir(round_idx) / name, map_location='cpu',
                          weights_only=True)

    def save_pool_state(self, round_idx: int, state: PoolState) -> None:
        """The pool state after a round's labels, recorded as the current one."""
        path = self.round_dir(round_idx) / 'pool_state.npz'
        if self.is_main:
            state.save(path)  # atomic itself
            self.manifest.record_file(self.work_dir, path)
        self.manifest.pool_state = str(path.relative_to(self.work_dir))

    # ------------------------------------------------------------------ the manifest
    def ensure_new(self) -> None:
        """Refuse to start a run in a folder that holds one.

        Raises:
            ResumeError: The folder already holds a run.
        """
        if self.has_run():
            raise ResumeError(
                f'{self.work_dir} already holds a run: pass --resume to continue it, or '
                'choose another --work-dir')

    def start(self, seed: int) -> None:
        """A new run: a fresh manifest and ``config.json`` (rank 0), seen by every rank.

        Raises:
            ResumeError: The folder already holds a run.
        """
        self.ensure_new()
        self._manifest = Manifest(config_hash=self.config_hash, seed=seed)
        barrier()  # every rank has run the checks before rank 0 writes
        if self.is_main:
            self.config_record.write()
            self.manifest.record_file(self.work_dir, self.config_record.path)
            self.manifest.save(self.work_dir)
        barrier()

    def load(self, allow_config_change: bool) -> Manifest:
        """The manifest of the run to resume, its state files verified.

        Raises:
            ResumeError: Nothing to resume, or the config changed and that is not allowed.
            StateCorruptedError: A state file is missing or modified.
        """
        if not self.has_run():
            raise ResumeError(f'nothing to resume in {self.work_dir} (no {MANIFEST}): '
                              'run without --resume to start')
        manifest = Manifest.load(self.work_dir)
        manifest.verify(self.work_dir)  # config.json too, before it is compared
        if self.config_hash and manifest.config_hash != self.config_hash:
            self.config_record.accept_change(manifest, allow_config_change)
            self._config_change_pending = True
        self._manifest = manifest
        return manifest

    def inspect(self) -> Manifest:
        """The manifest of the run, its state files verified, for tools that read a run
        without resuming it (label import); the config is not compared.

        Raises:
            ResumeError: The folder holds no run.
            StateCorruptedError: A state file is missing or modified.
        """
        if not self.has_run():
            raise ResumeError(f'{self.work_dir} holds no run (no {MANIFEST}): start it with '
                              'tools/train_al.py first')
        manifest = Manifest.load(self.work_dir)
        manifest.verify(self.work_dir)
        self._manifest = manifest
        return manifest

    def commit_config_change(self) -> None:
        """Write an accepted config change (``config.json``, its checksum, the manifest).

        Called once the run has been rebuilt with the new config (annotations validated, the
        last model loaded), so a change that cannot run leaves the work dir as it was.
        """
        if not self._config_change_pending:
            return
        self._config_change_pending = False
        if self.is_main:
            self.config_record.write()
            self.manifest.record_file(self.work_dir, self.config_record.path)
            self.manifest.save(self.work_dir)
        barrier()

    def mark(self, round_idx: int, stage: str, seconds: float | None = None) -> None:
        """Record a finished stage; the manifest is written last, atomically."""
        manifest = self.manifest
        if manifest.round != round_idx:
            manifest.round, manifest.stages, manifest.timings = round_idx, [], {}
        manifest.stages.append(stage)
        if seconds is not None:
            manifest.timings[f'{stage}_s'] = round(seconds, 4)
        if stage == 'commit':
            manifest.completed_round = round_idx
        if self.is_main:
            manifest.save(self.work_dir)
        barrier()  # every rank has finished the stage before any starts the next

    def done_stages(self, round_idx: int) -> set[str]:
        """Stages of ``round_idx`` already recorded."""
        return set(self.manifest.stages) if self.manifest.round == round_idx else set()


class ConfigRecord:
    """``config.json``: the plain config a run was started with, compared on resume.

    Args:
        path: The file.
        config: The current plain config.
        config_hash: Its hash.
    """

    def __init__(self, path: Path, config: dict[str, Any], config_hash: str) -> None:
        self.path, self.config, self.config_hash = path, config, config_hash

    def write(self) -> None:
        """Write the current config (atomically)."""
        atomic_write_json(self.path, self.config)

    def accept_change(self, manifest: Manifest, allow: bool) -> None:
        """A resume with another config: refuse it, naming the changed keys, or (``allow``)
        note the change in the manifest's history and hash (in memory: the store writes both
        with the new ``config.json`` once the run has been rebuilt).

        Raises:
            ResumeError: The config changed and ``allow`` is false.
        """
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        changed = config_diff(old, self.config) if old else ['(unknown)']
        shown = ', '.join(changed[:5]) + (f' and {len(changed) - 5} more'
                                          if len(changed) > 5 else '')
        if not allow:
            raise ResumeError(
                f'{self.path.parent} was started with a different config (changed: {shown}); '
                'a resumed run would not match the run it continues: resume with the original '
                'config (saved in the work dir), start a new --work-dir, or pass '
                '--allow-config-change to accept the change')
        print_log(f'resuming with a changed config ({shown}), as allowed', logger='current',
                  level=30)
        manifest.history.append(f'config changed on resume: {shown}')
        manifest.config_hash = self.config_hash


def _finite_or_none(record: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in record.items()}


class MetricsLog:
    """``metrics.jsonl``: one JSON record per committed round, derived from the round files.

    The file is a view for people and plotting tools: ``--resume`` never trusts it, it
    rebuilds the records from the checksummed round files and rewrites the file when it is
    missing or differs (see :func:`saal_tasks.engine.resume.restore`).

    Args:
        path: The file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def encode(records: list[dict[str, Any]]) -> bytes:
        """The file's bytes for ``records``: strict JSON, a NaN or infinite metric (the IoU of
        a class absent from the evaluation set) written as ``null``."""
        return ''.join(json.dumps(_finite_or_none(r), sort_keys=True, allow_nan=False) + '\n'
                       for r in records).encode()

    @staticmethod
    def decode(text: str) -> list[dict[str, Any]]:
        """The records of the file's ``text``, ``null`` metrics read back as NaN."""
        return [{k: math.nan if v is None else v for k, v in json.loads(line).items()}
                for line in text.splitlines() if line.strip()]

    def write(self, records: list[dict[str, Any]]) -> None:
        """Rewrite the file whole (atomically), so repeating a commit is harmless."""
        data = self.encode(records)
        atomic_write(self.path, lambda f: f.write(data))

    def matches(self, records: list[dict[str, Any]]) -> bool:
        """Whether the file holds exactly ``records``."""
        try:
            return self.path.read_bytes() == self.encode(records)
        except OSError:
            return False

