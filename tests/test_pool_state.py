"""PoolState: round encoding, validation, persistence, and refusing another dataset."""
import numpy as np
import pytest

from saal_tasks.core.pool_state import PoolState, PoolStateMismatchError


def test_rounds_encode_state_and_history():
    state = PoolState(np.array([30, 10, 20, 40]))
    state.mark_labeled([20, 40], 1)
    state.mark_labeled([10], 2)
    assert state.sample_ids.tolist() == [10, 20, 30, 40]
    assert state.rounds.tolist() == [2, 1, 0, 1]
    assert state.labeled_ids().tolist() == [10, 20, 40]
    assert state.labeled_ids(up_to_round=1).tolist() == [20, 40]
    assert state.unlabeled_ids().tolist() == [30]
    assert state.ids_of_round(2).tolist() == [10]
    assert state.num_labeled == 3 and state.last_round == 2


def test_mark_labeled_rejects_bad_queries():
    state = PoolState(np.arange(5))
    state.mark_labeled([1], 1)
    with pytest.raises(ValueError, match='already labeled'):
        state.mark_labeled([1, 2], 2)
    with pytest.raises(KeyError, match='unknown sample ids'):
        state.mark_labeled([99], 2)
    with pytest.raises(ValueError, match='twice'):
        state.mark_labeled([3, 3], 2)
    with pytest.raises(ValueError, match='round_idx'):
        state.mark_labeled([4], 0)
    assert state.rounds.tolist() == [0, 1, 0, 0, 0]  # failed calls changed nothing


def test_ids_must_be_unique():
    with pytest.raises(ValueError, match='unique'):
        PoolState(np.array([1, 1, 2]))


def test_state_is_read_only_from_outside():
    state = PoolState(np.arange(3))
    with pytest.raises(ValueError):
        state.rounds[0] = 5


def test_round_trip(tmp_path):
    state = PoolState(np.array([5, 3, 9, 100]))
    state.mark_labeled([9], 1)
    state.mark_labeled([3, 100], 4)
    state.save(tmp_path / 'state.npz')
    loaded = PoolState.load(tmp_path / 'state.npz', expected_ids=np.array([100, 9, 5, 3]))
    assert loaded == state
    assert list(tmp_path.iterdir()) == [tmp_path / 'state.npz']  # no temporary files left


def test_load_refuses_other_dataset(tmp_path):
    PoolState(np.arange(10)).save(tmp_path / 'state.npz')
    with pytest.raises(PoolStateMismatchError, match='differ'):
        PoolState.load(tmp_path / 'state.npz', expected_ids=np.arange(1, 11))
    with pytest.raises(PoolStateMismatchError):
        PoolState.load(tmp_path / 'state.npz', expected_ids=np.arange(11))
