"""The multi-label example adapter: data, per-label losses, SAAL exactness, config, CLI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from projects.multilabel.multilabel_task import (NUM_LABELS, MultiLabelDigitsTask,
                                                 make_canvases, multilabel_metrics)
from saal_tasks.core.errors import AnnotationError
from saal_tasks.diagnostics import probe_pseudo_labels
from saal_tasks.registry import TASKS
from saal_tasks.scorers import SharpnessScorer

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / 'projects' / 'multilabel' / 'configs' / 'saal_cnn_digit_pairs.py'


@pytest.fixture(scope='module')
def task():
    return MultiLabelDigitsTask(model=dict(type='SmallCNN', width=4),
                                optimizer=dict(type='Adam', lr=1e-2), pool_size=120,
                                test_size=60, epochs=3, dtype='float64')


@pytest.fixture(scope='module')
def trained(task):
    ids = np.arange(60)
    task.set_annotations(task.ground_truth(ids))
    return task.train(task.build_model(0), ids, seed=0)


def test_canvases_show_the_digits_they_are_labeled_with():
    images = torch.arange(5 * 64, dtype=torch.float32).reshape(5, 1, 8, 8)
    labels = torch.tensor([3, 3, 7, 0, 9])
    x, y = make_canvases(images, labels, 50, 2, np.random.default_rng(1))
    assert x.shape == (50, 1, 8, 16) and y.shape == (50, NUM_LABELS)
    for canvas, target in zip(x, y):
        left, right = int(canvas[0, 0, 0]) // 64, int(canvas[0, 0, 8]) // 64  # image index
        assert left != right
        expected = torch.zeros(NUM_LABELS, dtype=torch.int64)
        expected[[int(labels[left]), int(labels[right])]] = 1
        assert torch.equal(target, expected)
    assert (y.sum(1) == 1).any() and (y.sum(1) == 2).any()  # the two 3s give one label


def test_pool_is_stable_and_seeded(task):
    again = MultiLabelDigitsTask(model={}, optimizer={}, pool_size=120, test_size=60)
    assert torch.equal(again.train_x, task.train_x) and torch.equal(again.train_y, task.train_y)
    other = MultiLabelDigitsTask(model={}, optimizer={}, pool_size=120, test_size=60,
                                 data_seed=1)
    assert not torch.equal(other.train_y, task.train_y)
    assert np.array_equal(task.sample_ids(), np.arange(120))


def test_loss_is_per_label_and_per_sample(task, trained):
    ids = np.arange(60, 80)
    _, x = next(task.pool_batches(ids, 20))
    y = task.pseudo_label(trained, x)
    units = task.loss_per_unit(trained, x, y)
    assert units.shape == (20, NUM_LABELS) and y.dtype == torch.int64
    manual = F.binary_cross_entropy_with_logits(trained(x), y.double(), reduction='none')
    torch.testing.assert_close(units, manual)
    # A sample's loss does not depend on its batch.
    single = task.loss_per_unit(trained, x[5:6], y[5:6])
    torch.testing.assert_close(single[0], units[5], rtol=1e-12, atol=1e-14)


def test_vectorized_saal_equals_reference(task, trained):
    ids = np.arange(60, 76)
    pert = dict(type='SAMPerturbation', rho=0.05)
    ref = SharpnessScorer(perturbation=pert, engine=dict(type='ReferenceEngine'))
    vec = SharpnessScorer(perturbation=pert, engine=dict(type='VectorizedEngine', chunk_size=6))
    a = ref.score(task, trained, ids, np.random.default_rng(0))
    b = vec.score(task, trained, ids, np.random.default_rng(0))
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-9)
    assert len(a.unit_scores) == 16 and a.unit_scores[0].shape == (NUM_LABELS,)
    # Score = the sum over the labels of the perturbed per-label losses.
    np.testing.assert_allclose(a.scores, [u.sum() for u in a.unit_scores], rtol=1e-12)
    # The diagnostics work on the multi-unit task unchanged: ψ is a share of labels kept.
    stats = probe_pseudo_labels(task, trained, ids, ref.perturbation, chunk_size=8)
    np.testing.assert_allclose(stats.perturbed_loss, a.scores, rtol=1e-9)
    kept = stats.extras['label_kept']
    assert ((kept >= 0) & (kept <= 1)).all() and np.allclose(kept * NUM_LABELS,
                                                             np.round(kept * NUM_LABELS))


def test_metrics_known_answers():
    targets = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    perfect = multilabel_metrics(torch.where(targets == 1, 5.0, -5.0), targets)
    assert perfect == {'mAP': 100.0, 'micro_f1': 100.0, 'exact_match': 100.0}
    # Everything predicted absent: F1 and exact match 0; constant scores give AP = prevalence.
    none = multilabel_metrics(torch.full((3, 3), -1.0), targets)
    assert none['micro_f1'] == 0 and none['exact_match'] == 0
    assert none['mAP'] == pytest.approx(100 * np.mean([2 / 3, 2 / 3, 1 / 3]))


def test_bad_annotations_are_one_line_errors(task):
    with pytest.raises(AnnotationError, match='must be 10 values 0/1'):
        task.set_annotations({0: [1, 0]})
    with pytest.raises(AnnotationError, match='sample 3'):
        task.set_annotations({3: [2] * 10})


def test_config_registers_the_task_through_custom_imports():
    cfg = Config.fromfile(str(CONFIG))
    assert cfg.custom_imports['imports'] == ['projects.multilabel.multilabel_task']
    assert TASKS.get('MultiLabelDigitsTask') is MultiLabelDigitsTask
    assert cfg.scorer.type == 'SharpnessScorer' and cfg.al.initial_set.type == 'RandomInitialSet'


@pytest.mark.slow
def test_cli_runs_the_project_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(CONFIG), '--work-dir',
         str(tmp_path), '--cfg-options', 'al.num_rounds=1', 'al.subset_size=30',
         'task.epochs=2', 'task.model.width=4', 'task.pool_size=200', 'task.test_size=50'],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'finished: 2 rounds, 30 labeled' in proc.stdout and "'mAP'" in proc.stdout
    assert (tmp_path / 'learning_curve.png').exists()
