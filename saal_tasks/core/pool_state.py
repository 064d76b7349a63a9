"""The persisted labeling state of a pool, keyed by stable sample ids."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .io import atomic_write


class PoolStateMismatchError(ValueError):
    """A saved pool state does not belong to the dataset it is loaded for."""


class PoolState:
    """Which samples are labeled, and in which round; one array is both state and history.

    ``rounds[i]`` is 0 while ``sample_ids[i]`` is unlabeled and ``r >= 1`` once it was labeled
    in round ``r`` (the initial labeled set is round 1). Sample ids are stable, absolute keys
    given by the task (dataset index for classification, image id for detection), never
    positions in a random subset, so a state stays valid across runs and subsets.

    Args:
        sample_ids: Unique integer ids of every sample in the pool, shape ``[N]``.
        rounds: Optional round per sample, shape ``[N]``; all zeros when omitted.
    """

    def __init__(self, sample_ids: np.ndarray, rounds: np.ndarray | None = None) -> None:
        ids = np.asarray(sample_ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError(f'sample_ids must be 1-D, got shape {ids.shape}')
        if len(np.unique(ids)) != len(ids):
            raise ValueError('sample_ids must be unique: the task produced duplicate ids')
        order = np.argsort(ids, kind='stable')
        self._ids = ids[order]
        if rounds is None:
            self._rounds = np.zeros(len(ids), dtype=np.int32)
        else:
            rounds = np.asarray(rounds, dtype=np.int32)
            if rounds.shape != ids.shape:
                raise ValueError(f'rounds has shape {rounds.shape}, sample_ids {ids.shape}')
            if (rounds < 0).any():
                raise ValueError('rounds must be >= 0 (0 = unlabeled)')
            self._rounds = rounds[order]

    # ----------------------------------------------------------------- queries
    @property
    def sample_ids(self) -> np.ndarray:
        """All sample ids, sorted ascending, shape ``[N]`` (read-only view)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    @property
    def rounds(self) -> np.ndarray:
        """Round per sample aligned with :attr:`sample_ids`, shape ``[N]`` (read-only view)."""
        view = self._rounds.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def num_labeled(self) -> int:
        """Number of labeled samples."""
        return int((self._rounds > 0).sum())

    @property
    def last_round(self) -> int:
        """Highest round that labeled anything (0 when nothing is labeled)."""
        return int(self._rounds.max(initial=0))

    def labeled_ids(self, up_to_round: int | None = None) -> np.ndarray:
        """Ids labeled so far (or in rounds ``1..up_to_round``), sorted, shape ``[L]``."""
        mask = self._rounds > 0
        if up_to_round is not None:
            mask &= self._rounds <= up_to_round
        return self._ids[mask]

    def unlabeled_ids(self) -> np.ndarray:
        """Ids not labeled yet, sorted, shape ``[U]``."""
        return self._ids[self._rounds == 0]

    def ids_of_round(self, round_idx: int) -> np.ndarray:
        """Ids labeled in exactly round ``round_idx``, sorted."""
        return self._ids[self._rounds == round_idx]

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._ids, ids)
        pos = np.clip(pos, 0, len(self._ids) - 1)
        unknown = self._ids[pos] != ids
        if unknown.any():
            raise KeyError(f'unknown sample ids (first: {ids[unknown][:5].tolist()})')
        return pos

    # ----------------------------------------------------------------- update
    def mark_labeled(self, ids: np.ndarray, round_idx: int) -> None:
        """Record that ``ids`` were labeled in round ``round_idx``.

        Args:
            ids: Sample ids, shape ``[K]``; must be unique, known and currently unlabeled.
            round_idx: Round number, ``>= 1``.
        """
        if round_idx < 1:
            raise ValueError(f'round_idx must be >= 1, got {round_idx}')
        ids = np.asarray(ids, dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError('cannot label the same sample twice in one query')
        pos = self._positions(ids)
        already = self._rounds[pos] > 0
        if already.any():
            raise ValueError(
                f'samples already labeled: {ids[already][:5].tolist()}; '
                'a query must contain unlabeled samples only')
        self._rounds[pos] = round_idx

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the state to ``path`` (``.npz``)."""
        buf = io.BytesIO()
        np.savez(buf, sample_ids=self._ids, rounds=self._rounds)
        atomic_write(path, lambda f: f.write(buf.getvalue()))

    @classmethod
    def load(cls, path: str | os.PathLike,
             expected_ids: np.ndarray | None = None) -> 'PoolState':
        """Read a state written by :meth:`save`.

        Args:
            path: File written by :meth:`save`.
            expected_ids: The current dataset's sample ids, shape ``[N]``. When given, the
                saved ids must be exactly these, else the state belongs to another dataset.

        Raises:
            PoolStateMismatchError: The saved ids differ from ``expected_ids``.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            state = cls(data['sample_ids'], data['rounds'])
        if expected_ids is not None:
            expected = np.sort(np.asarray(expected_ids, dtype=np.int64))
            if expected.shape != state._ids.shape or not np.array_equal(expected, state._ids):
                raise PoolStateMismatchError(
                    f'pool state {path} holds {len(state)} sample ids that differ from the '
                    f"dataset's {len(expected)}: it was written for another dataset or split; "
                    'use a new --work-dir or point the config at the original data')
        return state

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PoolState) and np.array_equal(self._ids, other._ids)
                and np.array_equal(self._rounds, other._rounds))

    def __repr__(self) -> str:
        return (f'PoolState(num_samples={len(self)}, num_labeled={self.num_labeled}, '
                f'last_round={self.last_round})')
