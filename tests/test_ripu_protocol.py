"""RIPU's selection protocol, rule by rule: the round budget counted in regions, suppression
that persists across rounds, the pixel-annotation radius, and parity with a direct rendering
of RIPU's selection loop over several rounds."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from saal_tasks.core.errors import ConfigError
from saal_tasks.core.units import window_sum
from saal_tasks.selectors import RegionSelector
from saal_tasks.tasks.segmentation.scorers import region_impurity, window_mean

ROOT = Path(__file__).resolve().parents[1]


def ripu_round(scores, active, labeled, picks, r, s):
    """One round of RIPU's loop in one image, written out directly: ``picks`` times take the
    highest score as RIPU does (``torch.max`` over the rows, then over the columns, each
    returning its first maximum), reveal its ``(2r+1)²`` window and mask its ``(2s+1)²``
    window out of the scores and into ``active`` (which the caller keeps for the next round).
    In place."""
    score = torch.from_numpy(scores.astype(np.float64))
    score[torch.from_numpy(active)] = -np.inf
    for _ in range(picks):
        values, indices_h = torch.max(score, dim=0)
        _, indices_w = torch.max(values, dim=0)
        w = indices_w.item()
        h = indices_h[w].item()
        assert np.isfinite(float(score[h, w])), 'test sizes must leave candidates'
        score[max(h - s, 0):h + s + 1, max(w - s, 0):w + s + 1] = -np.inf
        active[max(h - s, 0):h + s + 1, max(w - s, 0):w + s + 1] = True
        labeled[max(h - r, 0):h + r + 1, max(w - r, 0):w + r + 1] = True


def test_round_budget_counts_regions_as_ripu():
    ra = RegionSelector(budget_ratio=0.022, num_selections=5, budget_rule='regions')
    # Cityscapes labels are 1024 x 2048: 1,026 regions a round; at the 640 x 1280 input 401.
    assert ra.round_regions((1024, 2048)) == 1026
    assert ra.round_regions((640, 1280)) == 401
    # The tiny demo: 64 x 128, 5 % over 2 rounds = ceil(22.76) regions a round.
    assert RegionSelector(budget_ratio=0.05, num_selections=2,
                          budget_rule='regions').round_regions((64, 128)) == 23
    pa = RegionSelector(budget_pixels=40, num_selections=5, region_radius=0,
                        suppress_radius=32, budget_rule='regions')
    assert pa.round_regions((640, 1280)) == 8
    # At most that many regions' pixels; the pixel rule: floor(0.022 * 640 * 1280) // 5.
    assert ra.round_budget((640, 1280)) == 401 * 9
    assert RegionSelector(budget_ratio=0.022, num_selections=5).round_budget((640, 1280)) \
        == 3604


def test_regions_rule_places_that_many_regions():
    rng = np.random.default_rng(3)
    sel = RegionSelector(budget_ratio=0.05, num_selections=2, budget_rule='regions',
                         persistent_suppression=True)
    scores = rng.random((64, 128)).astype(np.float32)
    centres, pixels = sel.select_regions(scores, np.zeros((64, 128), bool))
    assert len(centres) == 23
    rows, cols = np.divmod(centres, 128)
    interior = int(((rows > 0) & (rows < 63) & (cols > 0) & (cols < 127)).sum())
    # Regions never overlap (centres are >= 3 apart); border regions are clipped.
    assert len(pixels) <= 23 * 9 and len(pixels) >= interior * 9
    assert len(pixels) == len(np.unique(pixels))


def _two_round_case():
    """Round 1 labeled the 3 x 3 region around (3, 3); in round 2 the best pixel is (3, 5),
    at distance 2 from that centre: outside the labeled region, inside its 5 x 5
    suppression window."""
    labeled = np.zeros((7, 11), bool)
    labeled[2:5, 2:5] = True
    scores = np.zeros((7, 11), np.float32)
    scores[3, 5] = 1.0  # the best, but suppressed by round 1 under RIPU's protocol
    scores[3, 8] = 0.5  # the best pixel at distance >= 3 from (3, 3)
    return scores, labeled


def test_suppression_persists_across_rounds():
    scores, labeled = _two_round_case()
    kwargs = dict(budget_pixels=9, num_selections=1, region_radius=1, suppress_radius=2,
                  budget_rule='regions')
    centres, pixels = RegionSelector(**kwargs, persistent_suppression=True).select_regions(
        scores, labeled)
    assert centres.tolist() == [3 * 11 + 8]
    assert sorted(pixels.tolist()) == [r * 11 + c for r in (2, 3, 4) for c in (7, 8, 9)]
    # Without it (the earlier rule) (3, 5) is accepted and its region overlaps 3 labeled
    # pixels (column 4), which are not revealed again.
    centres, pixels = RegionSelector(**kwargs, persistent_suppression=False).select_regions(
        scores, labeled)
    assert centres.tolist() == [3 * 11 + 5]
    assert sorted(pixels.tolist()) == [r * 11 + c for r in (2, 3, 4) for c in (5, 6)]


def test_blocked_mask_is_the_union_of_earlier_suppression_windows():
    sel = RegionSelector(budget_ratio=0.05, num_selections=3, budget_rule='regions',
                         persistent_suppression=True)
    labeled = np.zeros((20, 30), bool)
    expected = np.zeros((20, 30), bool)
    for h, w in ((0, 0), (5, 7), (19, 29), (10, 0), (12, 15)):  # borders clip both boxes
        labeled[max(h - 1, 0):h + 2, max(w - 1, 0):w + 2] = True
        expected[max(h - 2, 0):h + 3, max(w - 2, 0):w + 3] = True
    np.testing.assert_array_equal(sel.blocked_before(labeled), expected)
    # Without persistence only the labeled pixels block.
    np.testing.assert_array_equal(
        RegionSelector(budget_ratio=0.05, num_selections=3).blocked_before(labeled), labeled)


def test_equal_scores_go_to_the_leftmost_column_first_as_in_ripu():
    scores = np.zeros((3, 4), np.float32)
    scores[0, 2] = scores[1, 0] = 1.0  # equal maxima: row 0 / column 2 and row 1 / column 0
    common = dict(budget_pixels=1, num_selections=1, region_radius=0, suppress_radius=0,
                  budget_rule='regions')
    ripu = RegionSelector(**common, tie_break='column_major')
    assert ripu.select_regions(scores, np.zeros((3, 4), bool))[0].tolist() == [1 * 4 + 0]
    row = RegionSelector(**common)  # the default
    assert row.select_regions(scores, np.zeros((3, 4), bool))[0].tolist() == [0 * 4 + 2]
    # Among all-equal scores RIPU walks down the first column.
    sel = RegionSelector(**dict(common, budget_pixels=3), tie_break='column_major')
    assert sel.select_regions(np.ones((3, 4), np.float32),
                              np.zeros((3, 4), bool))[0].tolist() == [0, 4, 8]


@pytest.mark.parametrize('setting', ['RA', 'PA', 'RA ties', 'PA ties'])
def test_selection_matches_ripu_loop_over_rounds(setting):
    """Five rounds against RIPU's loop written out; the 'ties' cases draw scores from a
    few levels (many exactly equal, as impurity's zeros make them), so the order of equal
    scores decides most picks."""
    if setting.startswith('RA'):
        sel = RegionSelector(budget_ratio=0.022, num_selections=5, region_radius=1,
                             suppress_radius=2, budget_rule='regions',
                             persistent_suppression=True, tie_break='column_major')
        shape = (48, 96)
    else:
        sel = RegionSelector(budget_pixels=40, num_selections=5, region_radius=0,
                             suppress_radius=32, budget_rule='regions',
                             persistent_suppression=True, tie_break='column_major')
        shape = (330, 660)  # room for 40 pixels 33 apart
    rng = np.random.default_rng(0)
    ripu_active = np.zeros(shape, bool)
    ripu_labeled = np.zeros(shape, bool)
    ours = np.zeros(shape, bool)
    picks = sel.round_regions(shape)
    for _ in range(5):
        scores = rng.random(shape).astype(np.float32)  # a new model each round
        if setting.endswith('ties'):
            scores = np.floor(scores * 3).astype(np.float32) / 3
        ripu_round(scores, ripu_active, ripu_labeled, picks, sel.region_radius,
                   sel.suppress_radius)
        pixels = sel.select_units([scores], [ours], rng)[0]
        assert not ours.reshape(-1)[pixels].any()
        ours.reshape(-1)[pixels] = True
        np.testing.assert_array_equal(ours, ripu_labeled)
        np.testing.assert_array_equal(sel.blocked_before(ours), ripu_active)
    expected = 5 * picks * (2 * sel.region_radius + 1) ** 2
    assert ours.sum() <= expected  # border regions are clipped
    if setting == 'PA':
        assert ours.sum() == 40


@pytest.mark.parametrize('kwargs, message', [
    (dict(budget_rule='region'), "budget_rule must be one of ('pixels', 'regions')"),
    (dict(persistent_suppression='yes'), 'persistent_suppression must be True or False'),
])
def test_bad_protocol_options_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
        RegionSelector(budget_ratio=0.05, num_selections=2, **kwargs)


def test_window_sum_is_exact_and_clipped():
    ones = torch.ones((1, 5, 7), dtype=torch.int64)
    counts = window_sum(ones, 1)[0]
    assert counts[0, 0] == 4 and counts[0, 3] == 6 and counts[2, 3] == 9
    assert int(window_sum(ones, 32)[0].min()) == 35  # the window covers the whole map
    x = torch.rand((2, 9, 13), dtype=torch.float64)
    direct = torch.stack([torch.stack([torch.stack([
        x[b, max(i - 2, 0):i + 3, max(j - 2, 0):j + 3].sum() for j in range(13)])
        for i in range(9)]) for b in range(2)])
    torch.testing.assert_close(window_sum(x, 2), direct, rtol=0, atol=1e-12)


def test_large_radius_windows_match_pooling():
    """Radii above the pooling limit use the integral image; the values agree with a direct
    window mean, and RIPU's 65 x 65 purity window runs at Cityscapes' input size."""
    rng = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (1, 20, 24), generator=rng)
    k = 6
    direct = torch.zeros(20, 24)
    for i in range(20):
        for j in range(24):
            window = labels[0, max(i - k, 0):i + k + 1, max(j - k, 0):j + k + 1]
            frac = torch.bincount(window.reshape(-1), minlength=4).double() / window.numel()
            direct[i, j] = float(-(torch.special.xlogy(frac, frac)).sum() / math.log(4))
    torch.testing.assert_close(region_impurity(labels, 4, k)[0], direct, rtol=0, atol=1e-6)
    values = torch.rand((1, 20, 24), generator=rng)
    mean = torch.stack([torch.stack([
        values[0, max(i - k, 0):i + k + 1, max(j - k, 0):j + k + 1].mean()
        for j in range(24)]) for i in range(20)])
    torch.testing.assert_close(window_mean(values, k)[0], mean, rtol=0, atol=1e-6)
    big = region_impurity(torch.randint(0, 16, (1, 640, 1280), generator=rng), 16, 32)
    assert big.shape == (1, 640, 1280) and 0.9 < float(big.min()) <= float(big.max()) <= 1


def test_in_run_schedule_decays_over_ripus_horizon():
    """RIPU's poly learning rate runs over MAX_ITER = 62500 while training stops at 40000:
    every window is trained with that horizon as its ``total``."""
    from saal_tasks.engine.schedules import InRunSchedule
    calls = []

    class Task:
        def build_model(self, seed):
            return 'model'

        def train_steps(self, model, labeled, seed, start, stop, total, state):
            calls.append((start, stop, total))
            return model, {'step': stop}

    iters = [10000, 12000, 14000, 16000, 18000, 40000]
    schedule = InRunSchedule(iters, lr_horizon=62500)
    model = None
    for r in range(1, 7):
        model = schedule.train(Task(), model, np.zeros(0, np.int64), 0, r)
    assert calls == [(a, b, 62500) for a, b in zip([0] + iters[:-1], iters)]
    calls.clear()
    InRunSchedule([5, 9]).train(Task(), None, np.zeros(0, np.int64), 0, 2)
    assert calls == [(5, 9, 9)]  # by default the run's length
    with pytest.raises(ConfigError, match='lr_horizon must be an integer >= the run length'):
        InRunSchedule(iters, lr_horizon=30000)


def test_paper_configs_use_ripus_protocol():
    from mmengine.config import Config
    ra = Config.fromfile(ROOT / 'configs/seg/ri_saal_synthia.py')
    assert ra.selector.budget_rule == 'regions' and ra.selector.persistent_suppression
    assert ra.selector.tie_break == 'column_major'
    assert (ra.selector.region_radius, ra.selector.suppress_radius) == (1, 2)
    assert ra.task.source_size == (720, 1280) and ra.task.target_size == (640, 1280)
    assert ra.task.flip is False and ra.task.unit_size == (1024, 2048)
    assert (ra.task.local_consistency_weight, ra.task.negative_learning_weight,
            ra.task.negative_learning_threshold) == (0.1, 1.0, 0.05)
    assert ra.al.schedule.lr_horizon == 62500
    for name in ('ri_saal_synthia_pixel', 'ripu_synthia_pixel'):
        pa = Config.fromfile(ROOT / f'configs/seg/{name}.py')
        assert pa.scorer.k == 32 and pa.selector.suppress_radius == 32
        assert pa.selector.tie_break == 'column_major'
        assert pa.selector.region_radius == 0 and pa.selector.budget_pixels == 40
    assert Config.fromfile(ROOT / 'configs/seg/ripu_synthia_pixel.py').scorer.pixel_scorer.type \
        == 'PixelEntropyScorer'
