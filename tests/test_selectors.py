"""Selectors: exact budget, uniqueness, determinism, the k-means++ rules, and the selection
contract (the invariants the base class enforces)."""
import numpy as np
import pytest

from saal_tasks.selectors import (BaseSelector, EmbeddingKMeansPPSelector,
                                  ScoreKMeansPPSelector, SelectionContext,
                                  SelectorContractError, TopKSelector)

from _strategy_helpers import Identity, PointsTask


def _positions(selector, scores, budget, rng, **kwargs):
    """The positions a selector picks among candidates ``0..N-1`` (ids = positions)."""
    context = SelectionContext.of_scores(scores, budget, rng, **kwargs)
    return selector.select(context).sample_ids


def _with_embeddings(emb):
    """Context fields whose ``embeddings()`` are ``emb`` (a task embedding the points)."""
    return dict(task=PointsTask(emb), model=Identity())


def test_topk_picks_highest_with_stable_ties():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    selection = TopKSelector().select(SelectionContext.of_scores(scores, 3, 0))
    assert selection.sample_ids.tolist() == [1, 3, 2]
    assert selection.scores.tolist() == [0.9, 0.9, 0.5]


def test_selection_maps_positions_to_candidate_ids():
    context = SelectionContext.of_scores([0.1, 0.9, 0.5], 2, 0,
                                         candidate_ids=np.array([10, 20, 30]))
    assert TopKSelector().select(context).sample_ids.tolist() == [20, 30]


@pytest.mark.parametrize('budget', [1, 7, 50, 200])
def test_score_kmeanspp_exact_budget_unique(budget):
    scores = np.random.default_rng(1).gamma(2.0, size=200)
    picked = _positions(ScoreKMeansPPSelector(), scores, budget, np.random.default_rng(0))
    assert len(picked) == budget and len(set(picked.tolist())) == budget
    assert picked[0] == np.argmax(scores)  # the first pick is the maximum


def test_score_kmeanspp_deterministic_for_seed():
    scores = np.random.default_rng(2).random(500)
    sel = ScoreKMeansPPSelector()
    a = _positions(sel, scores, 30, np.random.default_rng(7))
    b = _positions(sel, scores, 30, np.random.default_rng(7))
    c = _positions(sel, scores, 30, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_score_kmeanspp_spreads_over_score_range():
    # Two tight clusters: D^2 sampling must reach the low cluster after the first (high) pick.
    scores = np.concatenate([np.full(50, 10.0) + np.linspace(0, 1e-3, 50),
                             np.linspace(0, 1e-3, 50)])
    picked = _positions(ScoreKMeansPPSelector(), scores, 2, np.random.default_rng(0))
    assert picked[0] == 49 and picked[1] >= 50


def test_score_kmeanspp_constant_scores_still_fill_budget():
    picked = _positions(ScoreKMeansPPSelector(), np.ones(20), 20, np.random.default_rng(0))
    assert sorted(picked.tolist()) == list(range(20))


def test_embedding_kmeanspp_budget_unique_deterministic():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(100, 8))
    emb[50:] = emb[0]  # many duplicates: scikit-learn may repeat indices
    scores = rng.random(100)
    sel = EmbeddingKMeansPPSelector()
    a = _positions(sel, scores, 60, np.random.default_rng(5), **_with_embeddings(emb))
    b = _positions(sel, scores, 60, np.random.default_rng(5), **_with_embeddings(emb))
    assert len(set(a.tolist())) == 60 and np.array_equal(a, b)


def test_embedding_kmeanspp_weighted_prefers_high_scores():
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(300, 4))
    scores = np.where(np.arange(300) < 30, 10.0, 0.1)
    picked = _positions(EmbeddingKMeansPPSelector(weight_by_score=True), scores, 10,
                        np.random.default_rng(0), **_with_embeddings(emb))
    assert (picked < 30).mean() >= 0.8


def test_embedding_kmeanspp_reads_the_context_embeddings_once():
    # The context computes task.embed of the candidates once and caches it.
    rng = np.random.default_rng(6)
    task = PointsTask(rng.normal(size=(40, 3)))
    calls = []
    embed = task.embed
    task.embed = lambda model, inputs: calls.append(len(inputs)) or embed(model, inputs)
    context = SelectionContext.of_scores(rng.random(40), 5, 0, task=task, model=Identity(),
                                         embed_batch_size=16)
    picked = EmbeddingKMeansPPSelector().select(context).sample_ids
    assert calls == [16, 16, 8] and len(set(picked.tolist())) == 5
    np.testing.assert_array_equal(context.embeddings(), task.points.numpy())
    assert calls == [16, 16, 8]


def test_selector_input_errors():
    with pytest.raises(ValueError, match='budget 5 must be between 1 and'):
        TopKSelector().select(SelectionContext.of_scores(np.ones(3), 5))
    with pytest.raises(ValueError, match='budget None must be between 1 and'):
        TopKSelector().select(SelectionContext.of_scores(np.ones(3), None))
    with pytest.raises(ValueError, match='NaN or inf'):
        TopKSelector().select(SelectionContext.of_scores(np.array([1.0, np.nan]), 1))
    with pytest.raises(ValueError, match='one per candidate'):
        TopKSelector().select(SelectionContext.of_scores(np.ones(3), 1,
                                                         candidate_ids=np.arange(4)))
    with pytest.raises(ValueError, match='has no task'):
        EmbeddingKMeansPPSelector().select(SelectionContext.of_scores(np.ones(3), 1))


class _Broken(BaseSelector):
    """Returns given positions whatever the context: breaks the selection contract."""

    def __init__(self, positions):
        self.positions = positions

    def _select(self, context):
        return np.asarray(self.positions, dtype=np.int64)


@pytest.mark.parametrize('positions', [
    [0, 0, 1],        # a duplicate
    [2, 1],           # too few
    [0, 1, 2, 3],     # too many
    [0, 1, 5],        # outside the candidates
    [-1, 0, 1],       # negative
], ids=['duplicate', 'too-few', 'too-many', 'outside', 'negative'])
def test_a_selector_breaking_the_contract_is_caught(positions):
    with pytest.raises(SelectorContractError, match='exactly budget unique positions'):
        _Broken(positions).select(SelectionContext.of_scores(np.arange(5.0), 3))


def test_every_registered_selector_keeps_the_contract():
    from saal_tasks.registry import SELECTORS

    rng = np.random.default_rng(9)
    emb = rng.normal(size=(30, 4))
    scores = rng.random(30)
    for name in ('TopKSelector', 'ScoreKMeansPPSelector', 'EmbeddingKMeansPPSelector',
                 'KCenterGreedySelector', 'ProbCoverSelector'):
        selector = SELECTORS.build(dict(type=name))
        for budget in (1, 7, 30):
            for labeled in (np.zeros(0, np.int64), np.arange(25, 30)):
                candidates = np.setdiff1d(np.arange(30), labeled)
                context = SelectionContext(
                    candidate_ids=candidates, scores=scores[candidates], labeled_ids=labeled,
                    budget=min(budget, len(candidates)), rng=np.random.default_rng(0),
                    **_with_embeddings(emb))
                ids = selector.select(context).sample_ids
                assert len(set(ids.tolist())) == len(ids) == context.budget, name
                assert set(ids.tolist()) <= set(candidates.tolist()), name


def test_score_kmeanspp_reaches_the_bottom_half_as_often_as_the_top():
    # What the docstring promises: after the top pick, D² sampling on 1-D scores favours the
    # scores farthest from the picks, so on uniform scores about half of a query lies in the
    # bottom half of the range (top-k: none).
    rng = np.random.default_rng(0)
    bottom = []
    for _ in range(200):
        scores = rng.random(1000)
        picked = _positions(ScoreKMeansPPSelector(), scores, 20, rng)
        bottom.append(np.mean(scores[picked] < 0.5))
    assert 0.4 < np.mean(bottom) < 0.6
