"""Segmentation acquisition: region impurity, pixel scorers and the region/pixel selector."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from saal_tasks.core.errors import ConfigError
from saal_tasks.core.selection import (BaseUnitSelector, SelectionContext,
                                       SelectorContractError)
from saal_tasks.core.task import BaseTask
from saal_tasks.registry import SCORERS, SELECTORS
from saal_tasks.selectors import RegionSelector
from saal_tasks.tasks.segmentation.scorers import (PixelEntropyScorer, RandomPixelScorer,
                                                   RegionImpurityScorer, region_impurity,
                                                   window_mean)

H, W, C = 12, 16, 4


# ---------------------------------------------------------------------------- toy task
class ToySegTask(BaseTask):
    """Random 3×12×16 images (a pure function of the id), a 2-layer conv net, C = 4."""

    num_classes = C

    def __init__(self, n: int = 6) -> None:
        self.n = n

    def sample_ids(self):
        return np.arange(self.n, dtype=np.int64)

    def image(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1000 + int(i))
        return torch.randn(3, H, W, generator=g, dtype=torch.float64)

    def pool_batches(self, sample_ids, batch_size):
        for s in range(0, len(sample_ids), batch_size):
            ids = np.asarray(sample_ids[s:s + batch_size], dtype=np.int64)
            yield ids, torch.stack([self.image(i) for i in ids])

    def build_model(self, seed):
        g = torch.Generator().manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, C, 1)).double()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            bn = model[1]  # non-trivial running statistics: buffers must survive scoring
            bn.running_mean.copy_(torch.rand(8, generator=g, dtype=torch.float64) - 0.5)
            bn.running_var.copy_(torch.rand(8, generator=g, dtype=torch.float64) + 0.5)
        return model

    def pixel_logits(self, model, images):
        return model(images)

    def pseudo_label(self, model, images):
        return model(images).argmax(dim=1)

    def loss_per_unit(self, model, images, targets):
        return F.cross_entropy(model(images), targets, reduction='none')

    # Not used by acquisition.
    def ground_truth(self, sample_ids):
        return {}

    def set_annotations(self, annotations):
        pass

    def train(self, model, labeled_ids, seed):
        return model

    def evaluate(self, model):
        return {}


@pytest.fixture(scope='module')
def task():
    return ToySegTask()


@pytest.fixture()
def model(task):
    return task.build_model(seed=0)


def _rng():
    return np.random.default_rng(0)


def _entropy_maps(task, model, ids):
    """Pixel entropy (float64) and argmax maps computed directly, ``[N, H, W]`` each."""
    with torch.no_grad():
        logits = model.eval()(torch.stack([task.image(i) for i in ids]))
    p = logits.softmax(dim=1)
    return -(p * p.log()).sum(dim=1), logits.argmax(dim=1)


# ---------------------------------------------------------------------------- region impurity
def _impurity_loop(labels: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    """Reference: the definition, pixel by pixel, windows clipped to the image."""
    out = np.zeros(labels.shape)
    for b in range(labels.shape[0]):
        for i in range(labels.shape[1]):
            for j in range(labels.shape[2]):
                win = labels[b, max(i - k, 0):i + k + 1, max(j - k, 0):j + k + 1].ravel()
                p = np.bincount(win, minlength=num_classes) / win.size
                p = p[p > 0]
                out[b, i, j] = -(p * np.log(p)).sum() / math.log(num_classes)
    return out


def test_impurity_uniform_map_is_zero():
    labels = torch.full((2, H, W), 3, dtype=torch.int64)
    p = region_impurity(labels, num_classes=C, k=1)
    assert p.shape == (2, H, W) and p.dtype == torch.float32
    assert torch.equal(p, torch.zeros_like(p))


def test_impurity_half_half_border_window_and_interior():
    labels = torch.ones(1, 5, 6, dtype=torch.int64)
    labels[..., 0] = 0  # column 0 is class 0, the rest class 1
    p = region_impurity(labels, num_classes=C, k=1)
    # Corner (0, 0): in-image window is 2×2 = 2 of class 0 and 2 of class 1.
    assert p[0, 0, 0].item() == pytest.approx(math.log(2) / math.log(C), abs=1e-6)
    assert p[0, 0, 0].item() == pytest.approx(0.5, abs=1e-6)
    # Interior (2, 1): full 3×3 window, 3 of class 0 and 6 of class 1.
    expected = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3)) / math.log(C)
    assert p[0, 2, 1].item() == pytest.approx(expected, abs=1e-6)
    # Border (0, 1): window rows 0-1, cols 0-2: 2 of class 0, 4 of class 1.
    assert p[0, 0, 1].item() == pytest.approx(expected, abs=1e-6)
    # Column 3 onwards sees only class 1.
    assert torch.equal(p[0, :, 3:], torch.zeros(5, 3))


def test_impurity_all_classes_equally_present_is_one():
    labels = torch.tensor([[[0, 1], [2, 3]]])
    for k in (1, 5):  # every in-image window is the whole 2×2 image
        assert torch.allclose(region_impurity(labels, C, k), torch.ones(1, 2, 2), atol=1e-6)
    assert torch.equal(region_impurity(labels, C, 0), torch.zeros(1, 2, 2))  # one pixel each


def test_impurity_normalised_by_given_num_classes():
    labels = torch.from_numpy(np.random.default_rng(3).integers(0, C, (2, H, W)))
    p4, p8 = region_impurity(labels, C, 1), region_impurity(labels, 8, 1)
    assert p4.std() > 0
    torch.testing.assert_close(p4, p8 * math.log(8) / math.log(4))


@pytest.mark.parametrize('k,num_classes', [(1, 5), (2, 3), (0, 2)])
def test_impurity_matches_definition(k, num_classes):
    labels = np.random.default_rng(k).integers(0, num_classes, (2, 7, 9))
    p = region_impurity(torch.from_numpy(labels), num_classes, k)
    np.testing.assert_allclose(p.numpy(), _impurity_loop(labels, num_classes, k), atol=1e-6)


def test_impurity_rejects_bad_input():
    labels = torch.zeros(1, 3, 3, dtype=torch.int64)
    with pytest.raises(ConfigError, match='num_classes >= 2'):
        region_impurity(labels, 1)
    with pytest.raises(ValueError, match=r'\[0, 4\)'):
        region_impurity(labels + 4, 4)
    with pytest.raises(ValueError, match='integer class maps'):
        region_impurity(labels.float(), 4)
    with pytest.raises(ConfigError, match='radius'):
        region_impurity(labels, 4, k=-1)


def test_window_mean_known_values():
    maps = torch.arange(12, dtype=torch.float64).reshape(1, 3, 4)
    m = window_mean(maps, 1)
    assert m.dtype == torch.float64
    assert m[0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert m[0, 1, 1].item() == pytest.approx(5.0)  # full window of 0,1,2,4,5,6,8,9,10
    assert m[0, 2, 3].item() == pytest.approx((6 + 7 + 10 + 11) / 4)
    assert torch.equal(window_mean(maps, 0), maps)
    assert torch.allclose(window_mean(maps, 9), torch.full_like(maps, 5.5))  # whole image


# ---------------------------------------------------------------------------- selector
def _reference_regions(scores, labeled, budget, r, s):
    """The documented greedy written the slow way: repeated argmax over free pixels."""
    h, w = scores.shape
    covered, blocked = labeled.copy(), labeled.copy()
    centres, revealed = [], 0
    while revealed < budget:
        free = np.where(blocked, -np.inf, scores.astype(np.float64))
        if np.isneginf(free).all():
            break
        idx = int(np.argmax(free))  # first maximum = lowest flat index among ties
        i, j = divmod(idx, w)
        win = (slice(max(i - r, 0), i + r + 1), slice(max(j - r, 0), j + r + 1))
        new = int((~covered[win]).sum())
        if revealed + new > budget:
            break
        covered[win] = True
        blocked[win] = True
        blocked[max(i - s, 0):i + s + 1, max(j - s, 0):j + s + 1] = True
        centres.append(idx)
        revealed += new
    return centres


def test_round_budget():
    sel = RegionSelector(budget_ratio=0.022, num_selections=5)
    assert sel.total_budget((1024, 2048)) == 46137  # floor(46137.344)
    assert sel.round_budget((1024, 2048)) == 9227
    assert RegionSelector(budget_ratio=0.29, num_selections=1).round_budget((10, 10)) == 29
    assert RegionSelector(budget_pixels=40, num_selections=5).round_budget((H, W)) == 8
    assert RegionSelector(budget_ratio=0.05, num_selections=5).round_budget((4, 4)) == 0


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_selections=5), 'exactly one'),
    (dict(budget_ratio=0.1, budget_pixels=4, num_selections=5), 'exactly one'),
    (dict(budget_ratio=0.0, num_selections=5), r'\(0, 1\]'),
    (dict(budget_ratio=1.5, num_selections=5), r'\(0, 1\]'),
    (dict(budget_pixels=0, num_selections=5), 'budget_pixels'),
    (dict(budget_pixels=40, num_selections=0), 'num_selections'),
    (dict(budget_pixels=40, num_selections=5, region_radius=-1), 'region_radius'),
    (dict(budget_pixels=40, num_selections=5, suppress_radius=1.5), 'suppress_radius'),
])
def test_selector_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RegionSelector(**kwargs)


def test_selector_known_regions_and_stop_rule():
    scores = np.zeros((6, 6))
    scores[2, 2], scores[2, 3], scores[5, 5] = 5.0, 4.0, 3.0
    labeled = np.zeros((6, 6), dtype=bool)
    first = {i * 6 + j for i in range(1, 4) for j in range(1, 4)}
    corner = {i * 6 + j for i in (4, 5) for j in (4, 5)}
    # Budget 13: (2, 2) reveals 9, (2, 3) is suppressed, the corner (5, 5) reveals 4.
    sel = RegionSelector(budget_pixels=13, num_selections=1, region_radius=1,
                         suppress_radius=2)
    centres, pixels = sel.select_regions(scores, labeled)
    assert centres.tolist() == [14, 35]
    assert pixels.tolist() == sorted(first | corner)
    # Budget 12: the corner would make 13 > 12, so the round stops after the first region
    # (even though later, smaller windows might still fit).
    sel12 = RegionSelector(budget_pixels=12, num_selections=1, region_radius=1,
                           suppress_radius=2)
    centres, pixels = sel12.select_regions(scores, labeled)
    assert centres.tolist() == [14] and pixels.tolist() == sorted(first)


def test_selector_ties_go_to_lower_flat_index():
    sel = RegionSelector(budget_pixels=3, num_selections=1, region_radius=0, suppress_radius=0)
    centres, pixels = sel.select_regions(np.ones((4, 5)), np.zeros((4, 5), dtype=bool))
    assert centres.tolist() == [0, 1, 2] and pixels.tolist() == [0, 1, 2]


def test_selector_unsigned_scores_do_not_wrap():
    scores = np.zeros((3, 3), dtype=np.uint8)
    scores[1, 2] = 200
    sel = RegionSelector(budget_pixels=1, num_selections=1, region_radius=0)
    assert sel.select_regions(scores, np.zeros((3, 3), dtype=bool))[0].tolist() == [5]


def test_selector_invariants_on_random_maps():
    rng = np.random.default_rng(0)
    for trial in range(150):
        h, w = rng.integers(3, 15, size=2)
        r, s = int(rng.integers(0, 3)), int(rng.integers(0, 4))
        if rng.random() < 0.5:
            sel = RegionSelector(budget_ratio=float(rng.uniform(0.05, 1.0)),
                                 num_selections=int(rng.integers(1, 4)), region_radius=r,
                                 suppress_radius=s)
        else:
            sel = RegionSelector(budget_pixels=int(rng.integers(1, 60)),
                                 num_selections=int(rng.integers(1, 4)), region_radius=r,
                                 suppress_radius=s)
        scores = rng.random((h, w))
        if trial % 3 == 0:  # many ties
            scores = np.round(scores * 3)
        labeled = rng.random((h, w)) < rng.uniform(0, 0.6)
        budget = sel.round_budget((h, w))
        centres, pixels = sel.select_regions(scores, labeled)

        assert pixels.dtype == np.int64 and np.array_equal(pixels, np.unique(pixels))
        assert len(pixels) <= budget
        assert not labeled.ravel()[pixels].any()
        assert not labeled.ravel()[centres].any()
        ci, cj = np.divmod(centres, w)
        for a in range(len(centres)):  # no centre within suppress_radius of an earlier one
            for b in range(a):
                assert max(abs(ci[a] - ci[b]), abs(cj[a] - cj[b])) > s
        union = np.zeros((h, w), dtype=bool)
        for i, j in zip(ci, cj):
            union[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1] = True
        assert np.array_equal(np.flatnonzero(union & ~labeled), pixels)
        assert centres.tolist() == _reference_regions(scores, labeled, budget, r, s)
        again = sel.select_units([scores], [labeled], np.random.default_rng(trial))
        assert np.array_equal(again[0], pixels)  # deterministic, rng unused


def test_pixel_mode_exact_count():
    rng = np.random.default_rng(1)
    sel = RegionSelector(budget_pixels=40, num_selections=5, region_radius=0,
                         suppress_radius=1)
    maps = [rng.random((H, W)) for _ in range(20)]
    masks = [rng.random((H, W)) < 0.3 for _ in range(20)]
    out = sel.select_units(maps, masks, _rng())
    assert all(len(p) == 8 for p in out)
    assert all(not m.ravel()[p].any() for p, m in zip(out, masks))


def test_selector_rejects_bad_input():
    sel = RegionSelector(budget_pixels=4, num_selections=1)
    ok, mask = np.zeros((3, 3)), np.zeros((3, 3), dtype=bool)
    bad = ok.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match='not finite'):
        sel.select_units([bad], [mask], _rng())
    with pytest.raises(ValueError, match='bool'):
        sel.select_units([ok], [mask.astype(np.uint8)], _rng())
    with pytest.raises(ValueError, match='shape'):
        sel.select_units([ok], [np.zeros((3, 4), dtype=bool)], _rng())
    with pytest.raises(ValueError, match='one mask per'):
        sel.select_units([ok, ok], [mask], _rng())
    with pytest.raises(ValueError, match='2-D'):
        sel.select_units([ok.ravel()], [mask.ravel()], _rng())


# ---------------------------------------------------------------------------- scorers
def test_pixel_entropy_scorer(task, model):
    ids = task.sample_ids()
    res = PixelEntropyScorer(batch_size=4).score(task, model, ids, _rng())
    ent, arg = _entropy_maps(task, model, ids)
    assert np.array_equal(res.sample_ids, ids) and len(res.unit_scores) == len(ids)
    for n in range(len(ids)):
        assert res.unit_scores[n].shape == (H, W) and res.unit_scores[n].dtype == np.float32
        np.testing.assert_allclose(res.unit_scores[n], ent[n].numpy(), rtol=1e-5, atol=1e-6)
        assert np.array_equal(res.unit_targets[n], arg[n].numpy())
    np.testing.assert_allclose(res.scores, ent.flatten(1).mean(1).numpy(), rtol=1e-5)


def test_ripu_equals_impurity_times_window_mean_entropy(task, model):
    ids = task.sample_ids()
    scorer = SCORERS.build(dict(type='RegionImpurityScorer', k=1, window_average=True,
                                pixel_scorer=dict(type='PixelEntropyScorer')))
    res = scorer.score(task, model, ids, _rng())
    ent, arg = _entropy_maps(task, model, ids)
    p = region_impurity(arg, C, 1).double()
    expected = p * window_mean(ent, 1)
    assert p.std() > 0 and expected.std() > 0  # non-trivial maps
    for n in range(len(ids)):
        assert res.unit_scores[n].dtype == np.float32
        np.testing.assert_allclose(res.unit_scores[n], expected[n].numpy(), rtol=1e-5,
                                   atol=1e-6)
        assert np.array_equal(res.unit_targets[n], arg[n].numpy())
    np.testing.assert_allclose(res.scores, expected.flatten(1).mean(1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(res.extras['impurity_mean'], p.flatten(1).mean(1).numpy(),
                               rtol=1e-5)


def _manual_perturbed_ce(task, model, i, rho):
    """Per-pixel CE of sample ``i`` at θ + ρ·g/‖g‖₂, g from its mean pseudo-label CE."""
    x = task.image(i)[None]
    params = dict(model.named_parameters())
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    shifted = {k: p.detach() + rho * g / norm for (k, p), g in zip(params.items(), grads)}
    with torch.no_grad():
        logits = functional_call(model, shifted, (x,))
        clean = F.cross_entropy(model(x), y, reduction='none')[0]
    return F.cross_entropy(logits, y, reduction='none')[0], clean, y[0]


def test_ri_saal_equals_impurity_times_perturbed_ce(task, model):
    ids = task.sample_ids()[:3]
    rho = 0.5
    cfg = dict(type='RegionImpurityScorer', k=1, pixel_scorer=dict(
        type='SharpnessScorer', perturbation=dict(type='SAMPerturbation', rho=rho, q=2),
        engine=dict(type='ReferenceEngine'), mode='max', objective_reduction='mean',
        score_reduction='mean'))
    model.train()  # the scorer switches to eval itself and restores the mode
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res = SCORERS.build(cfg).score(task, model, ids, _rng())
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # params and buffers

    model.eval()
    for n, i in enumerate(ids):
        perturbed, clean, y = _manual_perturbed_ce(task, model, i, rho)
        assert (perturbed - clean).abs().max() > 1e-3  # the perturbation matters
        p = region_impurity(y[None], C, 1)[0].double()
        assert p.std() > 0
        np.testing.assert_allclose(res.unit_scores[n], (p * perturbed).numpy(), rtol=1e-5,
                                   atol=1e-6)
        assert np.array_equal(res.unit_targets[n], y.numpy())
        assert res.scores[n] == pytest.approx((p * perturbed).mean().item(), rel=1e-5)
    assert set(res.extras) == {'clean_loss', 'impurity_mean'}


def test_region_scorer_num_classes_override(task, model):
    ids = task.sample_ids()[:2]
    base = RegionImpurityScorer(pixel_scorer=dict(type='PixelEntropyScorer'))
    wide = RegionImpurityScorer(pixel_scorer=dict(type='PixelEntropyScorer'), num_classes=8)
    a, b = base.score(task, model, ids, _rng()), wide.score(task, model, ids, _rng())
    for u, v in zip(a.unit_scores, b.unit_scores):
        np.testing.assert_allclose(v, u * math.log(4) / math.log(8), rtol=1e-5, atol=1e-7)


def test_region_scorer_needs_pixel_maps_and_targets(task, model):
    scorer = RegionImpurityScorer(pixel_scorer=dict(type='RandomPixelScorer'))
    with pytest.raises(ConfigError, match='no unit_targets.*PixelEntropyScorer'):
        scorer.score(task, model, task.sample_ids(), _rng())
    with pytest.raises(ConfigError, match='scorer config'):
        RegionImpurityScorer(pixel_scorer='PixelEntropyScorer')


def test_random_pixel_scorer_independent_of_batching_and_order(task, model):
    ids = task.sample_ids()
    full = RandomPixelScorer(batch_size=4).score(task, model, ids, np.random.default_rng(5))
    assert full.unit_targets is None
    assert all(m.shape == (H, W) and m.dtype == np.float32 and m.min() >= 0 and m.max() < 1
               for m in full.unit_scores)
    np.testing.assert_allclose(full.scores, [m.mean() for m in full.unit_scores], rtol=1e-6)
    sub = np.array([4, 1, 3])
    part = RandomPixelScorer(batch_size=1).score(task, model, sub, np.random.default_rng(5))
    for n, i in enumerate(sub):
        assert np.array_equal(part.unit_scores[n], full.unit_scores[i])
    other = RandomPixelScorer().score(task, model, ids, np.random.default_rng(6))
    assert not np.array_equal(other.unit_scores[0], full.unit_scores[0])
    assert not np.array_equal(full.unit_scores[0], full.unit_scores[1])


def test_scores_feed_the_selector(task, model):
    res = RegionImpurityScorer(pixel_scorer=dict(type='PixelEntropyScorer'),
                               window_average=True).score(task, model, task.sample_ids(),
                                                          _rng())
    sel = SELECTORS.build(dict(type='RegionSelector', budget_ratio=0.2, num_selections=2,
                               region_radius=1, suppress_radius=2))
    masks = [np.zeros((H, W), dtype=bool) for _ in res.unit_scores]
    picked = sel.select_units(res.unit_scores, masks, _rng())
    budget = sel.round_budget((H, W))
    assert budget == 19  # floor(0.2 · 192) // 2
    assert all(0 < len(p) <= budget for p in picked)
    # The first region is centred on the highest score of each map.
    for u, p in zip(res.unit_scores, picked):
        assert int(np.argmax(u)) in p


class _PartlyLabeled(ToySegTask):
    """The toy task with the first row of every image annotated before."""

    def labeled_units(self, sample_ids):
        masks = [np.zeros((H, W), dtype=bool) for _ in sample_ids]
        for m in masks:
            m[0] = True
        return masks


def _unit_context(task, res, ids):
    return SelectionContext(candidate_ids=ids, scores=res.scores, labeled_ids=np.zeros(0),
                            budget=None, rng=_rng(), task=task, unit_scores=res.unit_scores)


def test_select_on_a_context_is_select_units_on_its_maps_and_masks(model):
    task = _PartlyLabeled()
    ids = np.array([1, 3, 4])
    res = RegionImpurityScorer(pixel_scorer=dict(type='PixelEntropyScorer')).score(
        task, model, ids, _rng())
    sel = RegionSelector(budget_ratio=0.2, num_selections=2, region_radius=1,
                         suppress_radius=2)
    selection = sel.select(_unit_context(task, res, ids))
    units = sel.select_units(res.unit_scores, task.labeled_units(ids), _rng())
    keep = [k for k, u in enumerate(units) if len(u)]
    assert selection.sample_ids.tolist() == ids[keep].tolist()
    assert [u.tolist() for u in selection.units] == [units[k].tolist() for k in keep]
    np.testing.assert_array_equal(selection.scores, res.scores[keep])
    assert all(not np.isin(u, np.arange(W)).any() for u in selection.units)  # row 0 labeled
    with pytest.raises(ValueError, match='needs a score per unit'):
        sel.select(SelectionContext.of_scores(res.scores, None, task=task,
                                              candidate_ids=ids))


class _RevealsLabeled(BaseUnitSelector):
    """Breaks the unit contract: asks for pixel 0 (labeled) of every image."""

    def select_units(self, unit_scores, labeled, rng):
        return [np.array([0], dtype=np.int64) for _ in unit_scores]


def test_a_unit_selector_breaking_the_contract_is_caught(model):
    task = _PartlyLabeled()
    ids = np.array([0, 2])
    res = PixelEntropyScorer().score(task, model, ids, _rng())
    with pytest.raises(SelectorContractError, match='already labeled units'):
        _RevealsLabeled().select(_unit_context(task, res, ids))


def test_region_scorer_unknown_pixel_scorer_names_alternatives():
    with pytest.raises(ConfigError, match='registered:.*PixelEntropyScorer'):
        RegionImpurityScorer(pixel_scorer=dict(type='PixelEntropyScorr'))
