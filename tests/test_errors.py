"""The bad-input catalogue (docs/errors.md): one clear line each, nothing persisted changed."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saal_tasks.core.errors import (AnnotationError, ConfigError, ResumeError, ScoreError,
                                    StateCorruptedError, WorkDirError)
from saal_tasks.engine import ActiveLearningLoop
from saal_tasks.core.pool_state import PoolStateMismatchError
from saal_tasks.oracles import BaseOracle
from saal_tasks.registry import ORACLES, SCORERS
from saal_tasks.core.scorer import BaseScorer, ScoreResult
from saal_tasks.tasks.classification.data import DatasetNotFoundError

from conftest import digits_loop_cfg


def make_cfg(work_dir, dataset=None, **al):
    """One round of 5 from 50 scored, 1 epoch; ``dataset`` replaces the digits."""
    return digits_loop_cfg(work_dir,
                           task=dict(epochs=1, dataset=dataset or dict(type='DigitsData')),
                           al=dict(dict(num_rounds=1, subset_size=50), **al))


def run(cfg, **kwargs):
    return ActiveLearningLoop.from_cfg(cfg).run(**kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing changed)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file() and p.name != 'run.log'}


def one_line(err: BaseException) -> str:
    text = str(err)
    assert '\n' not in text and len(text) < 400, text
    return text


@pytest.fixture()
def interrupted(tmp_path):
    """A run stopped after round 1 (the state a resume starts from)."""
    cfg = make_cfg(tmp_path / 'run', num_rounds=2)
    loop = ActiveLearningLoop.from_cfg(cfg)

    class Stop(Exception):
        pass

    class StopAfterRound1:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def after_round(self, loop, round_idx, record):
            raise Stop

    loop.hooks.append(StopAfterRound1())
    with pytest.raises(Stop):
        loop.run()
    return cfg, tmp_path / 'run'


def make_image_folder(root: Path, classes=('a', 'b', 'c'), per_class=8, size=8):
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 255, (size, size), dtype=np.uint8)
                Image.fromarray(img).save(root / split / c / f'{i:03d}.png')


# ----------------------------------------------------------------------------- data
def test_01_missing_dataset_root(tmp_path):
    cfg = make_cfg(tmp_path / 'w', dataset=dict(type='CIFAR10Data', root=str(tmp_path / 'no')))
    with pytest.raises(DatasetNotFoundError) as info:
        run(cfg)
    assert str(tmp_path / 'no') in one_line(info.value) and 'download=True' in str(info.value)


def test_02_empty_dataset(tmp_path):
    for split in ('train', 'test'):
        (tmp_path / 'imgs' / split / 'a').mkdir(parents=True)
    cfg = make_cfg(tmp_path / 'w', dataset=dict(type='ImageFolderData', root=str(tmp_path / 'imgs')))
    with pytest.raises(ConfigError, match='the dataset is empty') as info:
        run(cfg)
    one_line(info.value)


def test_03_corrupt_image_stops_and_names_the_file(tmp_path):
    make_image_folder(tmp_path / 'imgs')
    bad = tmp_path / 'imgs' / 'train' / 'b' / '003.png'
    bad.write_bytes(bad.read_bytes()[:30])  # truncated PNG
    cfg = make_cfg(tmp_path / 'w', dataset=dict(type='ImageFolderData', root=str(tmp_path / 'imgs'),
                                                grayscale=True), initial_size=6, budget=2,
                   subset_size=10)
    with pytest.raises(ConfigError, match="on_corrupt='skip'") as info:
        run(cfg)
    assert str(bad) in one_line(info.value)
    assert not (tmp_path / 'w' / 'manifest.json').exists()


def test_04_corrupt_image_skip_keeps_other_ids(tmp_path):
    from saal_tasks.registry import DATASETS
    make_image_folder(tmp_path / 'imgs')
    clean = DATASETS.build(dict(type='ImageFolderData', root=str(tmp_path / 'imgs'),
                                grayscale=True))
    bad = tmp_path / 'imgs' / 'train' / 'b' / '003.png'
    bad.write_bytes(b'not an image')
    skipped = DATASETS.build(dict(type='ImageFolderData', root=str(tmp_path / 'imgs'),
                                  grayscale=True, on_corrupt='skip'))
    assert len(skipped.train_y) == len(clean.train_y) - 1
    assert 8 + 3 not in skipped.train_ids.tolist()  # class b starts at position 8
    keep = clean.train_ids != 11
    assert np.array_equal(skipped.train_ids.numpy(), clean.train_ids[keep].numpy())
    assert np.array_equal(skipped.train_x.numpy(), clean.train_x[keep].numpy())


def test_05_annotation_file_with_unknown_class(tmp_path):
    make_image_folder(tmp_path / 'imgs')
    cfg = make_cfg(tmp_path / 'w', dataset=dict(type='ImageFolderData', root=str(tmp_path / 'imgs'),
                                                grayscale=True), initial_size=6, budget=2,
                   subset_size=10, num_rounds=1)
    run(cfg)
    before = snapshot(tmp_path / 'w')
    for split in ('train', 'test'):  # the dataset lost class 'c' since the run
        shutil.rmtree(tmp_path / 'imgs' / split / 'c')
    with pytest.raises(AnnotationError) as info:
        run(cfg, resume=True)
    text = one_line(info.value)
    assert 'annotations.json' in text and 'label 2' in text and '0..1' in text
    assert snapshot(tmp_path / 'w') == before


# ----------------------------------------------------------------------------- protocol
def test_06_budget_larger_than_remaining_pool(tmp_path):
    with pytest.raises(ConfigError, match='lower al.num_rounds or al.budget') as info:
        run(make_cfg(tmp_path, num_rounds=400, subset_size=None))
    one_line(info.value)
    assert not (tmp_path / 'manifest.json').exists()


def test_07_initial_set_larger_than_pool(tmp_path):
    with pytest.raises(ConfigError, match=r'al.initial_size \(5000\) is larger than the pool'):
        run(make_cfg(tmp_path, initial_size=5000, num_rounds=0))


@pytest.mark.parametrize('field, name, registry', [
    ('scorer', 'SharpScorer', 'scorer'), ('selector', 'TopKSelecter', 'selector'),
    ('task', 'ClassifyTask', 'task'), ('oracle', 'Simulated', 'oracle')])
def test_08_unknown_component_lists_registered(tmp_path, field, name, registry):
    cfg = make_cfg(tmp_path)
    cfg[field]['type'] = name
    with pytest.raises(ConfigError) as info:
        ActiveLearningLoop.from_cfg(cfg)
    text = one_line(info.value)
    assert f'{field}.type={name!r} is not a registered {registry}; ' in text
    assert 'registered: ' in text
    assert {'scorer': 'SharpnessScorer', 'selector': 'TopKSelector',
            'task': 'ClassificationTask', 'oracle': 'SimulatedOracle'}[field] in text


@pytest.mark.parametrize('rho', [0.0, -0.05, float('nan'), float('inf')])
def test_09_invalid_rho(tmp_path, rho):
    cfg = make_cfg(tmp_path)
    cfg.scorer.perturbation = dict(type='SAMPerturbation', rho=rho)
    with pytest.raises(ConfigError, match='rho must be a finite number > 0') as info:
        ActiveLearningLoop.from_cfg(cfg)
    one_line(info.value)


@SCORERS.register_module(force=True)
class _NaNScorer(BaseScorer):
    """Test scorer: NaN for every third candidate."""

    def _score(self, task, model, sample_ids, rng, labeled_ids):
        scores = np.arange(len(sample_ids), dtype=float)
        scores[::3] = np.nan
        scores[1] = np.inf
        return ScoreResult(sample_ids=sample_ids, scores=scores)


def test_10_nan_scores_are_reported_never_selected(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.scorer = dict(type='_NaNScorer')
    with pytest.raises(ScoreError) as info:
        run(cfg)
    text = one_line(info.value)
    assert '18 of 50 scores are NaN or infinite' in text and 'nothing was selected' in text
    assert not (tmp_path / 'rounds' / 'round_001' / 'selected.json').exists()
    assert not (tmp_path / 'rounds' / 'round_001' / 'scores.npz').exists()
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    assert manifest['stages'] == ['train', 'evaluate']


def test_11_subset_size_zero(tmp_path):
    with pytest.raises(ConfigError, match='al.subset_size must be an integer >= 1, or None'):
        ActiveLearningLoop.from_cfg(make_cfg(tmp_path, subset_size=0))


def test_12_unknown_loop_option(tmp_path):
    with pytest.raises(ConfigError, match=r'al.budgett is not an option of ActiveLearningLoop \(did you mean budget\?\); options: ') \
            as info:
        ActiveLearningLoop.from_cfg(make_cfg(tmp_path, budgett=3))
    assert 'budget' in one_line(info.value)


@pytest.mark.parametrize('key, value, message', [
    ('initial_set', dict(type='StratifiedInitialSet'),
     "al.initial_set.type='StratifiedInitialSet' is not a registered initial_set"),
    ('schedule', dict(type='FinetuneSchedule'),
     "al.schedule.type='FinetuneSchedule' is not a registered schedule"),
    ('budget', 0, 'al.budget must be an integer >= 1'),
])
def test_13_invalid_loop_values(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        ActiveLearningLoop.from_cfg(make_cfg(tmp_path, **{key: value}))


def test_14_negative_seed(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.seed = -1
    with pytest.raises(ConfigError, match='seed must be a non-negative integer'):
        ActiveLearningLoop.from_cfg(cfg)


# ----------------------------------------------------------------------------- resume
def test_15_resume_with_different_dataset(interrupted):
    cfg, work_dir = interrupted
    before = snapshot(work_dir)
    cfg.task.dataset = dict(type='DigitsData', test_fraction=0.3)
    with pytest.raises(PoolStateMismatchError, match='differ from the dataset') as info:
        run(cfg, resume=True, allow_config_change=True)
    one_line(info.value)
    assert {k for k in snapshot(work_dir)} == set(before)


def test_16_resume_with_missing_state_file(interrupted):
    cfg, work_dir = interrupted
    (work_dir / 'rounds' / 'round_001' / 'pool_state.npz').unlink()
    with pytest.raises(StateCorruptedError, match='round_001/pool_state.npz is missing'):
        run(cfg, resume=True)


def test_17_resume_with_corrupted_state_file(interrupted):
    cfg, work_dir = interrupted
    path = work_dir / 'rounds' / 'round_000' / 'annotations.json'
    path.write_text(path.read_text().replace('"', "'", 2))
    before = snapshot(work_dir)
    with pytest.raises(StateCorruptedError, match='annotations.json is corrupted') as info:
        run(cfg, resume=True)
    one_line(info.value)
    assert snapshot(work_dir) == before


def test_18_resume_with_corrupted_manifest(interrupted):
    cfg, work_dir = interrupted
    (work_dir / 'manifest.json').write_text('{"config_hash": ')
    with pytest.raises(StateCorruptedError, match='manifest.json is corrupted'):
        run(cfg, resume=True)


def test_19_resume_with_changed_config_and_override(interrupted):
    cfg, work_dir = interrupted
    before = snapshot(work_dir)
    cfg.al.budget = 6
    cfg.task.epochs = 2
    with pytest.raises(ResumeError, match=r'changed: al.budget, task.epochs\)') as info:
        run(cfg, resume=True)
    assert '--allow-config-change' in one_line(info.value)
    assert snapshot(work_dir) == before
    records = run(cfg, resume=True, allow_config_change=True)
    assert [r['round'] for r in records] == [1, 2, 3]
    history = json.loads((work_dir / 'manifest.json').read_text())['history']
    assert any('al.budget, task.epochs' in h for h in history)


def test_20_start_over_existing_run_and_resume_nothing(interrupted, tmp_path):
    cfg, work_dir = interrupted
    before = snapshot(work_dir)
    with pytest.raises(ResumeError, match='already holds a run: pass --resume'):
        run(cfg)
    assert snapshot(work_dir) == before
    with pytest.raises(ResumeError, match='nothing to resume'):
        run(make_cfg(tmp_path / 'empty'), resume=True)


# ----------------------------------------------------------------------------- oracle
@ORACLES.register_module(force=True)
class _BadOracle(BaseOracle):
    """Test oracle answering wrongly in one of several ways (after the initial set)."""

    def __init__(self, mistake):
        self.mistake = mistake
        self.calls = 0

    def annotate(self, task, sample_ids, round_idx):
        self.calls += 1
        truth = task.ground_truth(sample_ids)
        if self.calls == 1:
            return truth
        if self.mistake == 'not_queried':
            truth[10**6] = 0
        elif self.mistake == 'duplicated':
            return list(truth.items()) + [next(iter(truth.items()))]
        elif self.mistake == 'out_of_range':
            truth[int(sample_ids[0])] = 10
        elif self.mistake == 'missing':
            truth.pop(int(sample_ids[0]))
        return truth


@pytest.mark.parametrize('mistake, message', [
    ('not_queried', 'answered ids [1000000] that were not queried'),
    ('duplicated', 'more than once'),
    ('out_of_range', 'is not a class of digits (0..9)'),
    ('missing', 'did not answer queried ids'),
])
def test_21_oracle_answers_are_validated_before_writing(tmp_path, mistake, message):
    cfg = make_cfg(tmp_path)
    cfg.oracle = dict(type='_BadOracle', mistake=mistake)
    loop = ActiveLearningLoop.from_cfg(cfg)
    with pytest.raises(AnnotationError, match=re.escape(message)) as info:
        loop.run()
    one_line(info.value)
    assert not (tmp_path / 'rounds' / 'round_001' / 'annotations.json').exists()
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    assert manifest['stages'] == ['train', 'evaluate', 'score', 'select']
    assert manifest['pool_state'] == 'rounds/round_000/pool_state.npz'
    assert loop.state.num_labeled == 20


# ----------------------------------------------------------------------------- disk
def test_22_work_dir_not_writable(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(WorkDirError, match='is not writable') as info:
        run(make_cfg(tmp_path / 'file' / 'run'))
    assert 'choose another --work-dir' in one_line(info.value)


def test_23_disk_full_while_writing_state(interrupted, monkeypatch):
    cfg, work_dir = interrupted
    before = snapshot(work_dir)
    real_fsync = os.fsync

    def full(fd):
        if os.readlink(f'/proc/self/fd/{fd}').endswith('.tmp') and 'pool_state' in \
                os.readlink(f'/proc/self/fd/{fd}'):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', full)
    with pytest.raises(WorkDirError) as info:
        run(cfg, resume=True)
    text = one_line(info.value)
    assert 'No space left on device' in text and 'rerun with --resume' in text
    assert not list(work_dir.rglob('*.tmp'))  # no half-written file left behind
    after = snapshot(work_dir)
    assert all(after[k] == v for k, v in before.items() if k != 'manifest.json')
    monkeypatch.setattr(os, 'fsync', real_fsync)
    records = run(cfg, resume=True)  # space is back: the run completes
    assert [r['round'] for r in records] == [1, 2, 3]
