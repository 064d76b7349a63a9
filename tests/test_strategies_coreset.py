"""Coreset: k-center greedy on points with a known answer, and the selector on a selection
context."""
import numpy as np
import pytest

from saal_tasks.core.selection import SelectionContext
from saal_tasks.selectors.coreset import KCenterGreedySelector, k_center_greedy, min_distances

from _strategy_helpers import Identity, PointsTask


def test_min_distances_known_answer():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    centers = np.array([[0.0, 0.0], [6.0, 8.0]])
    np.testing.assert_allclose(min_distances(points, centers), [0.0, 5.0, 0.0], atol=1e-12)
    assert np.isinf(min_distances(points, np.zeros((0, 2)))).all()


def test_k_center_greedy_known_answer_on_a_line():
    points = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # Centre at 0: farthest is 10; then 3 (distance 3); then 1 and 2 tie at 1 -> lowest position.
    assert k_center_greedy(points, np.array([[0.0]]), 3).tolist() == [4, 3, 1]


def test_k_center_greedy_two_dimensions_and_no_centers():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    # No centers: position 0 first; then the farthest from it, (5, 5); then (0, 5) at 5 from both.
    assert k_center_greedy(points, np.zeros((0, 2)), 3).tolist() == [0, 3, 2]


def test_k_center_greedy_duplicates_still_unique():
    points = np.zeros((6, 3))
    picked = k_center_greedy(points, points[:1], 6)
    assert sorted(picked.tolist()) == list(range(6))


def test_selector_uses_labeled_set_as_centers():
    points = np.array([[0.0], [1.0], [2.0], [9.0], [10.0], [20.0]])
    task = PointsTask(points)
    # Labeled: ids 0 and 5 (positions 0 and 20); candidates: ids 1..4.
    context = SelectionContext(candidate_ids=np.array([1, 2, 3, 4]), scores=np.zeros(4),
                               labeled_ids=np.array([0, 5]), budget=2,
                               rng=np.random.default_rng(0), task=task, model=Identity())
    # Distances to {0, 20}: 1, 2, 9, 10 -> id 4 (position 3); then id 2 (distance 2 vs 1 / 1).
    # The same with the context's cached features and with features of another batch size.
    for embedding in (dict(type='FlatInputs'), dict(type='ModelFeatures'),
                      dict(type='ModelFeatures', batch_size=1)):
        selector = KCenterGreedySelector(embedding=embedding)
        assert selector.select(context).sample_ids.tolist() == [4, 2], embedding


def test_selector_without_task_and_model_is_a_clear_error():
    with pytest.raises(ValueError, match='has no task'):
        KCenterGreedySelector().select(SelectionContext.of_scores(np.zeros(3), 1))
    with pytest.raises(ValueError, match='FlatInputs computes from the model'):
        KCenterGreedySelector(embedding=dict(type='FlatInputs')).select(
            SelectionContext.of_scores(np.zeros(3), 1))
