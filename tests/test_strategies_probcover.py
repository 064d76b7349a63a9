"""ProbCover: coverage on a toy graph with a known answer, and the purity radius."""
import numpy as np
import pytest

from saal_tasks.core.errors import ConfigError
from saal_tasks.core.selection import SelectionContext
from saal_tasks.selectors.probcover import ProbCoverSelector, probcover_greedy, purity_radius

from _strategy_helpers import Identity, PointsTask

LINE = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])


def test_greedy_coverage_known_answer():
    # δ = 1.5: balls {0,1}, {0,1,2}, {1,2}, {10,11}, {10,11}, {20}. Greedy: 1 (covers 3),
    # then 10 (covers 2; ties with 11 -> lowest position), then 20.
    picked = probcover_greedy(LINE, np.zeros((0, 1)), 1.5, 3, np.random.default_rng(0))
    assert picked.tolist() == [1, 3, 5]


def test_labeled_points_cover_first_then_uniform_fill():
    labeled = np.array([[10.5]])  # covers 10 and 11
    picked = probcover_greedy(LINE, labeled, 1.5, 4, np.random.default_rng(0))
    assert picked[:2].tolist() == [1, 5]
    # Everything is covered after two picks: the rest are uniform among the others.
    assert set(picked[2:].tolist()) <= {0, 2, 3, 4} and len(set(picked.tolist())) == 4
    again = probcover_greedy(LINE, labeled, 1.5, 4, np.random.default_rng(0))
    assert np.array_equal(picked, again)


def test_purity_radius_known_answer():
    points = np.array([[0.0], [1.0], [10.0], [11.0]])
    clusters = np.array([0, 0, 1, 1])
    # Distance to the nearest point of the other cluster: 10, 9, 9, 10.
    full = purity_radius(points, clusters, 1.0)
    assert full < 9.0 and full == pytest.approx(9.0)
    half = purity_radius(points, clusters, 0.5)
    assert half < 10.0 and half == pytest.approx(10.0)
    with pytest.raises(ValueError, match='purity'):
        purity_radius(points, clusters, 0.0)


def _context(task, labeled=(6,), seed=0):
    return SelectionContext(candidate_ids=np.arange(6), scores=np.zeros(6),
                            labeled_ids=np.asarray(labeled, dtype=np.int64), budget=3,
                            rng=np.random.default_rng(seed), task=task, model=Identity())


def test_selector_on_a_context_with_fixed_radius_and_auto_radius():
    task = PointsTask(np.concatenate([LINE, [[30.0]]]))
    fixed = ProbCoverSelector(embedding=dict(type='FlatInputs'), radius=1.5, normalize=False)
    assert fixed.select(_context(task)).sample_ids.tolist() == [1, 3, 5]
    auto = ProbCoverSelector(embedding=dict(type='FlatInputs'), normalize=False, num_clusters=3)
    picked = auto.select(_context(task)).sample_ids
    assert len(set(picked.tolist())) == 3 and auto.last_radius > 0
    # With nothing labeled, the candidates are all uncovered: the same greedy answer.
    assert fixed.select(_context(task, labeled=())).sample_ids.tolist() == [1, 3, 5]


def test_precomputed_embedding(tmp_path):
    path = tmp_path / 'emb.npz'
    np.savez(path, sample_ids=np.array([5, 3, 9]), embeddings=np.array([[5.0], [3.0], [9.0]]))
    selector = ProbCoverSelector(embedding=dict(type='PrecomputedEmbedding', path=str(path)))
    context = SelectionContext.of_scores(np.zeros(2), 1, candidate_ids=np.array([9, 3]),
                                         labeled_ids=np.array([5]))
    np.testing.assert_array_equal(selector.embedding(context, 'candidates'), [[9.0], [3.0]])
    np.testing.assert_array_equal(selector.embedding(context, 'labeled'), [[5.0]])
    with pytest.raises(ValueError, match='of must be one of'):
        selector.embedding(context, 'unlabeled')
    with pytest.raises(ConfigError, match='no precomputed embedding'):
        selector.embedding(SelectionContext.of_scores(np.zeros(1), 1,
                                                      candidate_ids=np.array([4])),
                           'candidates')
    with pytest.raises(FileNotFoundError, match='sample_ids'):
        ProbCoverSelector(embedding=dict(type='PrecomputedEmbedding', path=str(tmp_path / 'x')))
