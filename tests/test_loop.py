"""The active-learning loop: protocol, outputs, resume, refusals."""
import json

import numpy as np
import pytest

from saal_tasks.core.errors import ResumeError
from saal_tasks.engine import ActiveLearningLoop, config_hash
from saal_tasks.core.pool_state import PoolState
from saal_tasks.hooks import ALHook

from conftest import digits_loop_cfg


def _cfg(work_dir, **al):
    """3 rounds of 5 from 60 scored, a balanced initial set of 20, retrained from scratch."""
    return digits_loop_cfg(
        work_dir, hooks=[dict(type='LearningCurveHook')], seed=3,
        al=dict(dict(num_rounds=3, subset_size=60, initial_set=dict(type='BalancedInitialSet'),
                     schedule=dict(type='ScratchSchedule')), **al))


class Interrupt(ALHook):
    """Simulates a crash right after round `at` was committed."""

    def __init__(self, at):
        self.at = at

    def after_round(self, loop, round_idx, record):
        if round_idx == self.at:
            raise KeyboardInterrupt


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('run')
    loop = ActiveLearningLoop.from_cfg(_cfg(work_dir))
    records = loop.run()
    return work_dir, loop, records


def test_protocol_and_outputs(finished_run):
    work_dir, loop, records = finished_run
    assert [r['round'] for r in records] == [1, 2, 3, 4]
    assert [r['num_labeled'] for r in records] == [20, 25, 30, 35]
    assert all(0 <= r['accuracy'] <= 100 and r['train_s'] > 0 for r in records)
    assert all(r['num_scored'] == 60 for r in records[:3]) and 'num_scored' not in records[3]
    state = loop.state
    assert state.num_labeled == 35
    assert [len(state.ids_of_round(r)) for r in (1, 2, 3, 4)] == [20, 5, 5, 5]
    # balanced initial set: 2 per class
    labels = loop.task.stratify_labels(state.ids_of_round(1))
    assert np.bincount(labels, minlength=10).tolist() == [2] * 10
    lines = (work_dir / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(l)['round'] for l in lines] == [1, 2, 3, 4]
    assert (work_dir / 'learning_curve.png').stat().st_size > 1000
    for r in (1, 2, 3):
        rd = work_dir / 'rounds' / f'round_{r:03d}'
        sel = json.loads((rd / 'selected.json').read_text())
        scores = np.load(rd / 'scores.npz')
        # the query is the top-5 of the scored subset, by absolute sample id
        top = scores['sample_ids'][np.argsort(-scores['scores'], kind='stable')[:5]]
        assert sel['sample_ids'] == top.tolist()
        assert sorted(sel['sample_ids']) == state.ids_of_round(r + 1).tolist()
        # scored candidates were unlabeled at that time and are absolute ids
        before = PoolState.load(work_dir / 'rounds' / f'round_{r - 1:03d}' / 'pool_state.npz')
        assert set(scores['sample_ids']) <= set(before.unlabeled_ids())
        annotations = json.loads((rd / 'annotations.json').read_text())
        assert {int(k): v for k, v in annotations.items()} == \
            loop.task.ground_truth(np.array(sel['sample_ids']))


@pytest.mark.parametrize('schedule', ['ScratchSchedule', 'ContinueSchedule'])
def test_resume_after_interruption_matches_uninterrupted(tmp_path, finished_run, schedule):
    if schedule == 'ScratchSchedule':
        _, reference, ref_records = finished_run
    else:
        reference = ActiveLearningLoop.from_cfg(_cfg(tmp_path / 'ref',
                                                     schedule=dict(type=schedule)))
        ref_records = reference.run()
    cfg = _cfg(tmp_path / 'run', schedule=dict(type=schedule))
    loop = ActiveLearningLoop.from_cfg(cfg)
    loop.hooks.append(Interrupt(at=2))
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    resumed = ActiveLearningLoop.from_cfg(cfg)  # a new process would build everything anew
    records = resumed.run(resume=True)
    assert resumed.state == reference.state
    assert [r['accuracy'] for r in records] == [r['accuracy'] for r in ref_records]
    lines = (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(l)['round'] for l in lines] == [1, 2, 3, 4]


def test_resume_drops_uncommitted_metrics_line(tmp_path):
    cfg = _cfg(tmp_path, num_rounds=1)
    loop = ActiveLearningLoop.from_cfg(cfg)
    loop.hooks.append(Interrupt(at=1))
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    # A crash between logging round 2's metrics and committing it leaves a stray line.
    with open(tmp_path / 'metrics.jsonl', 'a') as f:
        f.write(json.dumps({'round': 2, 'num_labeled': 0, 'accuracy': -1}) + '\n')
    records = ActiveLearningLoop.from_cfg(cfg).run(resume=True)
    assert [r['round'] for r in records] == [1, 2] and records[1]['accuracy'] >= 0


def test_same_seed_same_selection_different_seed_differs(tmp_path, finished_run):
    _, reference, _ = finished_run
    again = ActiveLearningLoop.from_cfg(_cfg(tmp_path / 'a'))
    again.run()
    assert again.state == reference.state
    other_cfg = _cfg(tmp_path / 'b')
    other_cfg.seed = 4
    other = ActiveLearningLoop.from_cfg(other_cfg)
    other.run()
    assert other.state != reference.state


def test_resume_refuses_changed_config(tmp_path):
    loop = ActiveLearningLoop.from_cfg(_cfg(tmp_path, num_rounds=1))
    loop.hooks.append(Interrupt(at=1))
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    changed = ActiveLearningLoop.from_cfg(_cfg(tmp_path, num_rounds=1, budget=6))
    with pytest.raises(ResumeError, match='different config'):
        changed.run(resume=True)


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path, finished_run):
    work_dir, _, _ = finished_run
    before = (work_dir / 'metrics.jsonl').read_text()
    with pytest.raises(ResumeError, match='already holds a run'):
        ActiveLearningLoop.from_cfg(_cfg(work_dir)).run()
    assert (work_dir / 'metrics.jsonl').read_text() == before
    with pytest.raises(ResumeError, match='nothing to resume'):
        ActiveLearningLoop.from_cfg(_cfg(tmp_path / 'empty')).run(resume=True)


def test_budget_larger_than_pool_is_refused(tmp_path):
    with pytest.raises(ValueError, match='lower al.num_rounds or al.budget'):
        ActiveLearningLoop.from_cfg(_cfg(tmp_path, num_rounds=1000, subset_size=None)).run()
    with pytest.raises(ValueError, match='subset_size'):
        ActiveLearningLoop.from_cfg(_cfg(tmp_path, subset_size=2))


def test_random_initial_set_and_config_hash_ignores_work_dir(tmp_path):
    loop = ActiveLearningLoop.from_cfg(_cfg(tmp_path, num_rounds=0, initial_set=dict(type='RandomInitialSet')))
    records = loop.run()
    assert len(records) == 1 and loop.state.num_labeled == 20
    assert config_hash(_cfg('/a')) == config_hash(_cfg('/b'))
    assert config_hash(_cfg('/a')) != config_hash(_cfg('/a', budget=6))


def test_kmeanspp_selector_and_embeddings(tmp_path):
    cfg = _cfg(tmp_path, num_rounds=1)
    cfg.selector = dict(type='EmbeddingKMeansPPSelector')
    loop = ActiveLearningLoop.from_cfg(cfg)
    loop.run()
    assert loop.state.num_labeled == 25
