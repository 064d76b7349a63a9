"""Selectors: exact budget, uniqueness, determinism, and the k-means++ rules."""
import numpy as np
import pytest

from saal_tasks.selectors import (EmbeddingKMeansPPSelector, ScoreKMeansPPSelector,
                                  TopKSelector)


def test_topk_picks_highest_with_stable_ties():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    picked = TopKSelector().select(scores, 3, np.random.default_rng(0))
    assert picked.tolist() == [1, 3, 2]


@pytest.mark.parametrize('budget', [1, 7, 50, 200])
def test_score_kmeanspp_exact_budget_unique(budget):
    scores = np.random.default_rng(1).gamma(2.0, size=200)
    picked = ScoreKMeansPPSelector().select(scores, budget, np.random.default_rng(0))
    assert len(picked) == budget and len(set(picked.tolist())) == budget
    assert picked[0] == np.argmax(scores)  # the first pick is the maximum


def test_score_kmeanspp_deterministic_for_seed():
    scores = np.random.default_rng(2).random(500)
    sel = ScoreKMeansPPSelector()
    a = sel.select(scores, 30, np.random.default_rng(7))
    b = sel.select(scores, 30, np.random.default_rng(7))
    c = sel.select(scores, 30, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_score_kmeanspp_spreads_over_score_range():
    # Two tight clusters: D^2 sampling must reach the low cluster after the first (high) pick.
    scores = np.concatenate([np.full(50, 10.0) + np.linspace(0, 1e-3, 50),
                             np.linspace(0, 1e-3, 50)])
    picked = ScoreKMeansPPSelector().select(scores, 2, np.random.default_rng(0))
    assert picked[0] == 49 and picked[1] >= 50


def test_score_kmeanspp_constant_scores_still_fill_budget():
    picked = ScoreKMeansPPSelector().select(np.ones(20), 20, np.random.default_rng(0))
    assert sorted(picked.tolist()) == list(range(20))


def test_embedding_kmeanspp_budget_unique_deterministic():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(100, 8))
    emb[50:] = emb[0]  # many duplicates: scikit-learn may repeat indices
    scores = rng.random(100)
    sel = EmbeddingKMeansPPSelector()
    assert sel.needs_embeddings
    a = sel.select(scores, 60, np.random.default_rng(5), emb)
    b = sel.select(scores, 60, np.random.default_rng(5), emb)
    assert len(set(a.tolist())) == 60 and np.array_equal(a, b)


def test_embedding_kmeanspp_weighted_prefers_high_scores():
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(300, 4))
    scores = np.where(np.arange(300) < 30, 10.0, 0.1)
    picked = EmbeddingKMeansPPSelector(weight_by_score=True).select(
        scores, 10, np.random.default_rng(0), emb)
    assert (picked < 30).mean() >= 0.8


def test_selector_input_errors():
    with pytest.raises(ValueError, match='budget 5 must be between 1 and'):
        TopKSelector().select(np.ones(3), 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match='NaN or inf'):
        TopKSelector().select(np.array([1.0, np.nan]), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match='needs one embedding'):
        EmbeddingKMeansPPSelector().select(np.ones(3), 1, np.random.default_rng(0))
