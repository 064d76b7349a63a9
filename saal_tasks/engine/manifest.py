"""The run manifest: how far a run got, with what config, and checksums of its state files.

A round is a sequence of stages; after each one the loop records it here (atomically, last),
so ``--resume`` restarts at the first stage not recorded. No random-generator state needs
saving: every random choice of round ``r`` comes from a generator seeded by
``(seed, r, stream)``, so a stage repeated after a crash draws exactly the same numbers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import StateCorruptedError
from ..core.io import atomic_write_json, sha256_file

#: Stages of a round, in order. Rounds that do not acquire (the last) skip the middle three.
STAGES = ('train', 'evaluate', 'score', 'select', 'label', 'commit')
MANIFEST_NAME = 'manifest.json'
FORMAT_VERSION = 1


@dataclass
class Manifest:
    """Progress of a run.

    Attributes:
        config_hash: Hash of the config that started the run.
        seed: The run's seed (all random streams derive from it).
        round: Round in progress (or last finished when ``stages`` holds ``'commit'``).
        stages: Stages of ``round`` that are complete.
        completed_round: Last round whose every stage is complete (0 = initial set only).
        files: Work-dir-relative path -> SHA-256 of every state file written so far.
        pool_state: Relative path of the current pool state file.
        timings: Seconds per stage of ``round`` (kept so a resumed round reports them).
        round_timings: Round (as a string) -> its stage timings, kept at each commit so the
            round records of ``metrics.jsonl`` can be rebuilt from the round files.
        history: Notes of resumes and accepted config changes.
    """

    config_hash: str
    seed: int
    round: int = 0
    stages: list[str] = field(default_factory=list)
    completed_round: int = 0
    files: dict[str, str] = field(default_factory=dict)
    pool_state: str = ''
    timings: dict[str, float] = field(default_factory=dict)
    round_timings: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    version: int = FORMAT_VERSION

    @classmethod
    def load(cls, work_dir: Path) -> 'Manifest':
        """Read ``work_dir/manifest.json``.

        Raises:
            StateCorruptedError: The file is not a manifest this version can read.
        """
        path = Path(work_dir) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError(f'expected a JSON object, got {type(data).__name__}')
            _check_schema(data)
            manifest = cls(**data)
        except (ValueError, TypeError) as err:
            raise StateCorruptedError(
                f'{path} is corrupted ({err}); it is written atomically, so something else '
                'changed it: restore it from a backup or start a new --work-dir') from None
        if manifest.version != FORMAT_VERSION:
            raise StateCorruptedError(f'{path} has format version {manifest.version}, this '
                                      f'saal_tasks reads {FORMAT_VERSION}')
        return manifest

    def save(self, work_dir: Path) -> None:
        """Atomically write ``work_dir/manifest.json``."""
        atomic_write_json(Path(work_dir) / MANIFEST_NAME, asdict(self))

    def record_file(self, work_dir: Path, path: Path) -> None:
        """Remember the checksum of a state file just written."""
        self.files[str(Path(path).relative_to(work_dir))] = sha256_file(path)

    def verify(self, work_dir: Path) -> None:
        """Check every recorded state file exists and is unchanged.

        Raises:
            StateCorruptedError: Naming the first missing or modified file.
        """
        for rel, digest in sorted(self.files.items()):
            path = Path(work_dir) / rel
            if not path.is_file():
                raise StateCorruptedError(
                    f'state file {path} is missing: restore it, or start a new --work-dir')
            if sha256_file(path) != digest:
                raise StateCorruptedError(
                    f'state file {path} is corrupted (checksum mismatch): restore it, or '
                    'start a new --work-dir')

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Field -> (JSON type, type of each item or value) of a manifest; ``None``: not a container.
_SCHEMA: dict[str, tuple[type | tuple[type, ...], type | tuple[type, ...] | None]] = {
    'config_hash': (str, None), 'seed': (int, None), 'round': (int, None),
    'stages': (list, str), 'completed_round': (int, None), 'files': (dict, str),
    'pool_state': (str, None), 'timings': (dict, (int, float)),
    'round_timings': (dict, dict), 'history': (list, str), 'version': (int, None)}


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    # JSON booleans are Python ints: a manifest never holds one, so they are wrong here.
    return isinstance(value, kind) and not isinstance(value, bool)


def _check_schema(data: dict[str, Any]) -> None:
    """Refuse fields of the wrong type, so a damaged manifest fails here and not later.

    Raises:
        TypeError: Naming the field and both types.
        ValueError: A round or stage out of range.
    """
    for key, value in data.items():
        if key not in _SCHEMA:
            continue  # the dataclass names unknown fields
        kind, item = _SCHEMA[key]
        if not _is(value, kind):
            raise TypeError(f'{key} must be {getattr(kind, "__name__", kind)}, got '
                            f'{type(value).__name__}')
        items = value.values() if isinstance(value, dict) else value if item else ()
        bad = next((v for v in items if not _is(v, item)), None) if item else None
        if bad is not None:
            raise TypeError(f'{key} holds {bad!r:.30} ({type(bad).__name__})')
    for key in ('seed', 'round', 'completed_round'):
        if data.get(key, 0) < 0:
            raise ValueError(f'{key} must be >= 0, got {data[key]}')
    unknown = [s for s in data.get('stages', []) if s not in STAGES]
    if unknown:
        raise ValueError(f'stages holds {unknown[0]!r}, not one of {", ".join(STAGES)}')
