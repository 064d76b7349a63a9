"""Selection at the label resolution (RIPU's rule): logits upsampled to ``task.unit_size``
before scoring, units at that size everywhere, revealed labels resized to the training size
with nearest neighbours."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmseg')
from seg_helpers import SIZE, tiny_seg_cfg, write_tiny_seg_data  # noqa: E402

from saal_tasks.core.build import build_checked  # noqa: E402
from saal_tasks.engine import ActiveLearningLoop  # noqa: E402
from saal_tasks.tasks.segmentation.data import load_batch  # noqa: E402
from saal_tasks.tasks.segmentation.models import segment_logits  # noqa: E402

UNITS = (2 * SIZE[0], 2 * SIZE[1])


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory) -> Path:
    return write_tiny_seg_data(tmp_path_factory.mktemp('seg_units'))


@pytest.fixture(scope='module')
def run(demo_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('seg_units_run')
    cfg = tiny_seg_cfg(demo_root, work_dir)
    cfg.task.unit_size = UNITS
    loop = ActiveLearningLoop.from_cfg(cfg)
    records = loop.run()
    return work_dir, loop, records


def test_logits_are_upsampled_to_the_units(run):
    _, loop, _ = run
    task = loop.task
    model = loop.model.eval()
    _, images = next(task.pool_batches(np.array([0, 1]), 2))
    with torch.no_grad():
        low = segment_logits(model, images)  # at the input (training) resolution
        expected = F.interpolate(low, size=UNITS, mode='bilinear', align_corners=True)
        torch.testing.assert_close(task.pixel_logits(model, images), expected, rtol=0, atol=0)
        assert tuple(low.shape[-2:]) == SIZE
        assert tuple(task.pseudo_label(model, images).shape) == (2, *UNITS)
        targets, losses = task.pseudo_label_and_loss(model, images)
        assert tuple(losses.shape) == (2, *UNITS)
        torch.testing.assert_close(targets, expected.argmax(dim=1))


def test_units_are_selected_and_revealed_at_the_label_resolution(run):
    work_dir, loop, records = run
    task = loop.task
    assert task.unit_shape == UNITS
    regions = loop.selector.round_regions(UNITS)
    for r in (1, 2):
        selected = json.loads((work_dir / f'rounds/round_{r:03d}/selected.json').read_text())
        for sample_id, units in zip(selected['sample_ids'], selected['units']):
            units = np.asarray(units)
            assert units.max() < UNITS[0] * UNITS[1]
            assert len(units) <= 9 * regions
            truth = task.ground_truth(np.array([sample_id]))[sample_id]
            assert truth.shape == UNITS
    assert records[-1]['labeled_pixels'] == sum(
        int(task.labels.revealed(i).sum()) for i in task.sample_ids())
    assert records[-1]['labeled_pixel_percent'] == pytest.approx(
        100 * records[-1]['labeled_pixels'] / (6 * UNITS[0] * UNITS[1]))
    # Pictures and exports are at the unit size too.
    assert task.preview(np.array([0]))[0].shape == (*UNITS, 3)


def test_training_sees_the_revealed_labels_resized_by_nearest_neighbours(run):
    _, loop, _ = run
    task = loop.task
    ids = np.array([i for i in task.sample_ids() if task.labels.revealed(int(i)).any()][:2])
    _, labels = load_batch(task.target, ids, np.zeros(len(ids), bool), task.labels)
    assert tuple(labels.shape) == (len(ids), *SIZE)
    for k, i in enumerate(ids):
        full = task.labels.targets(int(i)).reshape(UNITS)
        # Halving with OpenCV's nearest neighbour takes every second row and column.
        np.testing.assert_array_equal(labels[k].numpy(), full[::2, ::2])


def test_random_maps_have_the_unit_shape(run):
    _, loop, _ = run
    scorer = build_checked('SCORERS', dict(type='RandomPixelScorer'), 'scorer')
    result = scorer.score(loop.task, loop.model, np.array([0, 3]), np.random.default_rng(0))
    assert [m.shape for m in result.unit_scores] == [UNITS, UNITS]
