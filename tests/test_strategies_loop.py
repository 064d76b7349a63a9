"""Strategies inside the loop: the pool view hook, and a resume between scoring and selection."""
import numpy as np
import pytest

from saal_tasks.core.errors import ConfigError
from mmengine.config import Config

from saal_tasks.core.loop import ActiveLearningLoop
from saal_tasks.hooks import ALHook


def _cfg(work_dir, selector, scorer=None, hooks=True):
    return Config(dict(
        task=dict(type='ClassificationTask', dataset=dict(type='DigitsData'),
                  model=dict(type='SmallCNN', width=4), optimizer=dict(type='Adam', lr=1e-2),
                  epochs=1, batch_size=32, log_interval=1000),
        scorer=scorer or dict(type='RandomScorer'), selector=selector,
        hooks=[dict(type='PoolViewHook')] if hooks else [],
        al=dict(num_rounds=2, budget=5, subset_size=40, initial_size=20),
        seed=1, work_dir=str(work_dir)))


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
    # still finds the round's candidates and the labeled set through the pool view.
    resumed = ActiveLearningLoop.from_cfg(cfg)
    resumed.run(resume=True)
    assert resumed.state == reference.state
    assert resumed.state.num_labeled == 30


def test_missing_hook_is_a_clear_error(tmp_path):
    loop = ActiveLearningLoop.from_cfg(_cfg(tmp_path, dict(type='KCenterGreedySelector'),
                                            hooks=False))
    with pytest.raises(ConfigError, match="add dict\\(type='PoolViewHook'\\)"):
        loop.run()


def test_candidates_seen_by_the_selector_are_the_scored_ones(tmp_path):
    seen = {}

    class Spy(ALHook):
        def after_select(self, loop, round_idx, selected_ids):
            seen[round_idx] = (loop.selector.pool.candidate_ids(), selected_ids)

    loop = ActiveLearningLoop.from_cfg(_cfg(tmp_path, dict(type='KCenterGreedySelector')))
    loop.hooks.append(Spy())
    loop.run()
    for round_idx, (candidates, selected) in seen.items():
        with np.load(loop.round_dir(round_idx) / 'scores.npz') as data:
            assert np.array_equal(candidates, data['sample_ids'])
        assert set(selected.tolist()) <= set(candidates.tolist())
        assert len(candidates) == 40
