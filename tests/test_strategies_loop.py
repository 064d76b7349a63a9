"""Strategies inside the loop: the selection context the loop builds, and a resume between
scoring and selection."""
import numpy as np
import pytest

from saal_tasks.engine import ActiveLearningLoop
from saal_tasks.hooks import ALHook

from conftest import digits_loop_cfg


def _cfg(work_dir, selector, scorer=None):
    """2 rounds of 5 from 40 scored (random scores by default), 1 epoch."""
    return digits_loop_cfg(work_dir, task=dict(epochs=1), selector=selector,
                           scorer=scorer or dict(type='RandomScorer'), seed=1)


class StopAfterSelect(ALHook):
    """Interrupts round 1 after selection, before the selection stage is recorded."""

    def after_select(self, loop, round_idx, selected_ids):
        if round_idx == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_before_selection_selects_the_same(tmp_path):
    # ProbCover: labeled set, candidates, model features and random draws all involved.
    selector = dict(type='ProbCoverSelector', num_clusters=3)
    reference = ActiveLearningLoop.from_cfg(_cfg(tmp_path / 'ref', selector))
    reference.run()
    cfg = _cfg(tmp_path / 'run', selector)
    loop = ActiveLearningLoop.from_cfg(cfg)
    loop.hooks.append(StopAfterSelect())
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    # A new process: the hooks' after_score is not called again for round 1, the selector
    # still gets the round's candidates and the labeled set in its selection context.
    resumed = ActiveLearningLoop.from_cfg(cfg)
    resumed.run(resume=True)
    assert resumed.state == reference.state
    assert resumed.state.num_labeled == 30


def test_candidates_seen_by_the_selector_are_the_scored_ones(tmp_path):
    seen, contexts = {}, []

    class Spy(ALHook):
        def after_select(self, loop, round_idx, selected_ids):
            seen[round_idx] = (contexts[-1], selected_ids, loop.state.labeled_ids())

    loop = ActiveLearningLoop.from_cfg(_cfg(tmp_path, dict(type='KCenterGreedySelector')))
    select = loop.selector._select
    loop.selector._select = lambda context: contexts.append(context) or select(context)
    loop.hooks.append(Spy())
    loop.run()
    assert seen
    for round_idx, (context, selected, labeled) in seen.items():
        with np.load(loop.round_dir(round_idx) / 'scores.npz') as data:
            assert np.array_equal(context.candidate_ids, data['sample_ids'])
            assert np.array_equal(context.scores, data['scores'])
        assert set(selected.tolist()) <= set(context.candidate_ids.tolist())
        assert len(context.candidate_ids) == 40 and context.budget == 5
        # The labeled set before the query (the query is labeled after selection).
        assert np.array_equal(context.labeled_ids, labeled)
        assert not set(context.labeled_ids.tolist()) & set(context.candidate_ids.tolist())
