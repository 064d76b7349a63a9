"""Contract tests over every registered component (timm-style).

Each registry below has an explicit table: registered name -> how to build it (its defaults or
the minimum config) and what it runs on. ``test_every_registered_name_has_a_case`` fails for
a registered name with no case, so a new component is either covered here or named as
uncovered. Components that only run on an mmdet/mmseg task have an ``Elsewhere`` case that
points at their task-specific test; keep those few.

What runs on what:

* scorers: the float64 digits task (``conftest.make_task``), a model trained once per module on
  100 labeled ids; LL4AL on the same task with its training extension; pixel scorers on a tiny
  fake segmentation-like task (1x1 conv on random 8x8 images);
* engines x perturbations: ``SharpnessScorer`` on the digits model, exact engines against
  ``ReferenceEngine`` in float64;
* selectors: a ``SelectionContext`` over digits candidates; the unit selector on random unit
  maps of the fake pixel task;
* oracles, schedules, initial sets, hooks, embeddings: their contracts on fakes or digits.

Everything is built through the checked config boundary (``build_checked``), so every case is
also a valid config.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

# Every plugin module that registers something (the registries' lazy locations would import
# most of them on first build; importing them here makes ``module_dict`` complete up front).
import saal_tasks.core.perturbation  # noqa: F401  PERTURBATIONS
import saal_tasks.engine  # noqa: F401
import saal_tasks.engine.initial_sets  # noqa: F401  INITIAL_SETS
import saal_tasks.engine.schedules  # noqa: F401  SCHEDULES
import saal_tasks.hooks  # noqa: F401  AL_HOOKS
import saal_tasks.oracles  # noqa: F401  ORACLES
import saal_tasks.scorers  # noqa: F401  SCORERS, ENGINES
import saal_tasks.selectors  # noqa: F401  SELECTORS, EMBEDDINGS
import saal_tasks.tasks.classification  # noqa: F401
import saal_tasks.tasks.segmentation.scorers  # noqa: F401  pixel SCORERS (pure torch)
from saal_tasks import registry as registries
from saal_tasks.core.build import build_checked
from saal_tasks.core.errors import ConfigError
from saal_tasks.core.hooks import ALHook
from saal_tasks.core.oracle import BaseOracle, QueryPending
from saal_tasks.core.scorer import BaseScorer, ScoreResult
from saal_tasks.core.selection import (BaseSelector, BaseUnitSelector, Selection,
                                       SelectionContext, SelectorContractError)
from saal_tasks.core.task import BaseTask
from saal_tasks.engine.initial_sets import InitialSet
from saal_tasks.engine.schedules import Schedule

from conftest import bit_identical, make_task, snapshot

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures('one_torch_thread')

#: Optional plugin modules: (module, the package it needs). Imported where that package is
#: installed, so that their registrations are checked against the tables too.
OPTIONAL_PLUGINS = (('saal_tasks.tasks.detection.scorers', 'mmdet'),)


def import_optional_plugins() -> None:
    for module, needs in OPTIONAL_PLUGINS:
        if importlib.util.find_spec(needs) is not None:
            importlib.import_module(module)


# =============================================================================== the tables
@dataclass(frozen=True)
class Case:
    """How to build a component and where it runs.

    Attributes:
        cfg: The config (its defaults or the minimum options), or a function of a
            ``tmp_path`` giving it (components that read files).
        on: What it runs on: ``'digits'``, ``'digits_ll4al'``, ``'pixels'`` or ``'-'``
            (tables whose tests build their own fakes).
        options: Table-specific facts (e.g. ``exact`` for engines, ``unit`` for selectors).
    """

    cfg: dict | Callable[[Path], dict]
    on: str = '-'
    options: dict = field(default_factory=dict)

    def config(self, tmp_path: Path | None = None) -> dict:
        return dict(self.cfg(tmp_path) if callable(self.cfg) else self.cfg)


@dataclass(frozen=True)
class Elsewhere:
    """A component only exercised on an mmdet/mmseg task, by the test named here.

    Attributes:
        test: ``tests/<file>.py::<test function>``.
        needs: The package its module imports (it is registered only where it is installed).
    """

    test: str
    needs: str


LL4AL_EXTENSION = dict(type='LossPredictionExtension', feature_layers=['features.1', 'features.3'],
                       hidden=8)

SCORER_CASES: dict[str, tuple[Case | Elsewhere, ...]] = {
    'SharpnessScorer': (Case(dict(type='SharpnessScorer'), 'digits'),),
    'RandomScorer': (Case(dict(type='RandomScorer'), 'digits'),),
    'EntropyScorer': (Case(dict(type='EntropyScorer'), 'digits'),),
    'LeastConfidenceScorer': (Case(dict(type='LeastConfidenceScorer'), 'digits'),),
    'MarginScorer': (Case(dict(type='MarginScorer'), 'digits'),),
    'GradientNormScorer': (Case(dict(type='GradientNormScorer'), 'digits'),),
    'LossPredictionScorer': (Case(dict(type='LossPredictionScorer'), 'digits_ll4al'),),
    # Small networks and few iterations, as configs/sweeps/digits_table1.py (an MLP VAE).
    'VAALScorer': (Case(dict(type='VAALScorer', vae=dict(type='MLPVAE', hidden=32, latent_dim=8),
                             discriminator_hidden=16, iterations=10, batch_size=16), 'digits'),),
    'PixelEntropyScorer': (Case(dict(type='PixelEntropyScorer', batch_size=4), 'pixels'),),
    'RandomPixelScorer': (Case(dict(type='RandomPixelScorer', batch_size=4), 'pixels'),),
    'RegionImpurityScorer': (
        Case(dict(type='RegionImpurityScorer', pixel_scorer=dict(type='PixelEntropyScorer'),
                  window_average=True), 'pixels'),  # RIPU
        Case(dict(type='RegionImpurityScorer', pixel_scorer=dict(type='SharpnessScorer')),
             'pixels'),  # RI-SAAL
    ),
    'BoxEntropyScorer': (Elsewhere('tests/test_detection.py::test_entropy_scores_sum_box_entropies',
                                   needs='mmdet'),),
}

#: ``exact``: per-sample ε like the reference (the others must match it to 1e-10 in float64).
ENGINE_CASES: dict[str, tuple[Case, ...]] = {
    'ReferenceEngine': (Case(dict(type='ReferenceEngine'), 'digits', dict(exact=True)),),
    'BatchwiseEngine': (Case(dict(type='BatchwiseEngine'), 'digits', dict(exact=False)),),
    'VectorizedEngine': (Case(dict(type='VectorizedEngine'), 'digits', dict(exact=True)),),
    'FastExactEngine': (Case(dict(type='FastExactEngine'), 'digits', dict(exact=True)),),
}

PERTURBATION_CASES: dict[str, tuple[Case, ...]] = {
    'SAMPerturbation': (Case(dict(type='SAMPerturbation'), 'digits'),
                        Case(dict(type='SAMPerturbation', q=3.0), 'digits')),  # dense routes
    'ASAMPerturbation': (Case(dict(type='ASAMPerturbation'), 'digits'),),
}

#: ``unit``: chooses units inside samples (a ``BaseUnitSelector``).
SELECTOR_CASES: dict[str, tuple[Case, ...]] = {
    'TopKSelector': (Case(dict(type='TopKSelector'), 'digits'),),
    'ScoreKMeansPPSelector': (Case(dict(type='ScoreKMeansPPSelector'), 'digits'),),
    'EmbeddingKMeansPPSelector': (Case(dict(type='EmbeddingKMeansPPSelector'), 'digits'),
                                  Case(dict(type='EmbeddingKMeansPPSelector',
                                            weight_by_score=True), 'digits')),
    'BADGESelector': (Case(dict(type='BADGESelector'), 'digits'),),
    'KCenterGreedySelector': (Case(dict(type='KCenterGreedySelector'), 'digits'),),
    'ProbCoverSelector': (Case(dict(type='ProbCoverSelector'), 'digits'),),
    'RegionSelector': (
        Case(dict(type='RegionSelector', budget_pixels=20, num_selections=2), 'pixels',
             dict(unit=True)),
        Case(dict(type='RegionSelector', budget_ratio=0.25, num_selections=1, region_radius=0,
                  suppress_radius=1), 'pixels', dict(unit=True)),  # pixel-based
        Case(dict(type='RegionSelector', budget_ratio=0.25, num_selections=2,
                  budget_rule='regions', persistent_suppression=True), 'pixels',
             dict(unit=True)),  # RIPU's protocol
    ),
}


def _precomputed_embedding(tmp_path: Path) -> dict:
    path = tmp_path / 'embeddings.npz'
    ids = np.arange(2000, dtype=np.int64)  # a superset of the digits pool's ids
    vectors = np.random.default_rng(0).normal(size=(len(ids), 5))
    np.savez(path, sample_ids=ids, embeddings=vectors)
    return dict(type='PrecomputedEmbedding', path=str(path))


EMBEDDING_CASES: dict[str, tuple[Case, ...]] = {
    'ModelFeatures': (Case(dict(type='ModelFeatures'), 'digits'),
                      Case(dict(type='ModelFeatures', batch_size=16), 'digits')),
    'FlatInputs': (Case(dict(type='FlatInputs'), 'digits'),),
    'PrecomputedEmbedding': (Case(_precomputed_embedding, 'digits'),),
}

ORACLE_CASES: dict[str, tuple[Case, ...]] = {
    'SimulatedOracle': (Case(dict(type='SimulatedOracle'), 'digits'),),
    'FileOracle': (Case(dict(type='FileOracle'), 'digits'),),
}

SCHEDULE_CASES: dict[str, tuple[Case, ...]] = {
    'ScratchSchedule': (Case(dict(type='ScratchSchedule'), options=dict(num_rounds=2)),),
    'ContinueSchedule': (Case(dict(type='ContinueSchedule'), options=dict(num_rounds=2)),),
    'InRunSchedule': (Case(dict(type='InRunSchedule', round_iters=[2, 4, 6]),
                           options=dict(num_rounds=2)),),
}

INITIAL_SET_CASES: dict[str, tuple[Case, ...]] = {
    'RandomInitialSet': (Case(dict(type='RandomInitialSet'), 'digits'),),
    'BalancedInitialSet': (Case(dict(type='BalancedInitialSet'), 'digits'),),
}

HOOK_CASES: dict[str, tuple[Case, ...]] = {
    'LearningCurveHook': (Case(dict(type='LearningCurveHook')),),
    'SharpnessDiagnosticsHook': (Case(dict(type='SharpnessDiagnosticsHook')),),
    'RunReportHook': (Case(dict(type='RunReportHook')),),
    'ScalarsHook': (Case(dict(type='ScalarsHook')),),
}

#: Registry name -> its table.
TABLES: dict[str, dict[str, tuple]] = {
    'SCORERS': SCORER_CASES, 'ENGINES': ENGINE_CASES, 'PERTURBATIONS': PERTURBATION_CASES,
    'SELECTORS': SELECTOR_CASES, 'ORACLES': ORACLE_CASES, 'SCHEDULES': SCHEDULE_CASES,
    'INITIAL_SETS': INITIAL_SET_CASES, 'AL_HOOKS': HOOK_CASES, 'EMBEDDINGS': EMBEDDING_CASES,
}
TABLE_NAMES = {'SCORERS': 'SCORER_CASES', 'ENGINES': 'ENGINE_CASES',
               'PERTURBATIONS': 'PERTURBATION_CASES', 'SELECTORS': 'SELECTOR_CASES',
               'ORACLES': 'ORACLE_CASES', 'SCHEDULES': 'SCHEDULE_CASES',
               'INITIAL_SETS': 'INITIAL_SET_CASES', 'AL_HOOKS': 'HOOK_CASES',
               'EMBEDDINGS': 'EMBEDDING_CASES'}


def params(table: dict[str, tuple], where: Callable[[Case], bool] = lambda c: True) -> list:
    """``pytest.param(name, case)`` for every runnable case of a table, with readable ids."""
    out = []
    for name, cases in table.items():
        runnable = [c for c in cases if isinstance(c, Case) and where(c)]
        for k, case in enumerate(runnable):
            out.append(pytest.param(name, case, id=name if len(runnable) == 1 else f'{name}-{k}'))
    return out


# =============================================================================== coverage
def _own_names(registry) -> set[str]:
    """Names registered by saal_tasks itself (not by other test modules' fakes)."""
    return {name for name, obj in registry.module_dict.items()
            if getattr(obj, '__module__', '').startswith('saal_tasks.')}


@pytest.mark.parametrize('registry_name', sorted(TABLES))
def test_every_registered_name_has_a_case(registry_name):
    import_optional_plugins()
    registry = getattr(registries, registry_name)
    registry.import_from_location()
    table = TABLES[registry_name]
    registered = _own_names(registry)
    missing = sorted(registered - set(table))
    assert not missing, (
        f'{registry_name} has components with no contract case: {missing}. Add a case for each '
        f'to {TABLE_NAMES[registry_name]} in tests/test_registry_contracts.py (how to build it '
        'from its defaults or the minimum config, and what it runs on), or, if it only runs on '
        'an mmdet/mmseg task, an Elsewhere(...) case naming its task-specific test')
    stale = sorted(name for name, cases in table.items() if name not in registered
                   and not all(isinstance(c, Elsewhere) for c in cases))
    assert not stale, (f'{TABLE_NAMES[registry_name]} has cases for {stale}, which are not '
                       f'registered in {registry_name}: remove or rename them')
    for name, cases in table.items():
        assert cases, f'{TABLE_NAMES[registry_name]}[{name!r}] holds no case'
        for case in cases:
            assert isinstance(case, (Case, Elsewhere)), (name, case)
            if isinstance(case, Case) and not callable(case.cfg):
                assert case.cfg.get('type') == name, (name, case.cfg)


def test_elsewhere_cases_point_at_existing_tests():
    cases = [c for table in TABLES.values() for cs in table.values() for c in cs
             if isinstance(c, Elsewhere)]
    assert len(cases) <= 3, 'keep the components tested only elsewhere few'
    for case in cases:
        file, _, test = case.test.partition('::')
        path = ROOT / file
        assert path.is_file(), case.test
        assert f'def {test}(' in path.read_text(), f'{case.test} does not exist'


def test_detection_scorers_register_and_build_from_defaults():
    pytest.importorskip('mmdet')
    importlib.import_module('saal_tasks.tasks.detection.scorers')
    for name, cases in SCORER_CASES.items():
        if any(isinstance(c, Elsewhere) and c.needs == 'mmdet' for c in cases):
            assert name in registries.SCORERS.module_dict, name
            assert isinstance(build_checked('SCORERS', dict(type=name), 'scorer'), BaseScorer)


# =============================================================================== fixtures
LABELED = np.arange(100, dtype=np.int64)
CANDIDATES = np.arange(500, 540, dtype=np.int64)  # 40 unlabeled ids


def _trained(task):
    task.set_annotations(task.ground_truth(LABELED))
    return task.train(task.build_model(seed=0), LABELED, seed=0).eval()


@pytest.fixture(scope='module')
def digits():
    """This module's own float64 digits task and a model trained on 100 ids for 1 epoch."""
    task = make_task(epochs=1)
    return task, _trained(task)


@pytest.fixture(scope='module')
def digits_ll4al():
    """The digits task with LL4AL's loss-prediction extension (tests/test_strategies_ll4al)."""
    task = make_task(epochs=1, train_extensions=[LL4AL_EXTENSION])
    return task, _trained(task)


class PixelTask(BaseTask):
    """A segmentation-like fake: random 3x8x8 images (a function of the id), a 1x1 conv with
    C = 4 classes, one unit per pixel; ``labeled_units`` from :attr:`labeled` (default none)."""

    num_classes = 4
    partial_annotations = True
    shape = (8, 8)

    def __init__(self, n: int = 10) -> None:
        self.n = n
        self.labeled: dict[int, np.ndarray] = {}

    def sample_ids(self):
        return np.arange(self.n, dtype=np.int64)

    def image(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(100 + int(i))
        return torch.randn(3, *self.shape, generator=g, dtype=torch.float64)

    def pool_batches(self, sample_ids, batch_size):
        ids = np.asarray(sample_ids, dtype=np.int64)
        for s in range(0, len(ids), batch_size):
            chunk = ids[s:s + batch_size]
            yield chunk, torch.stack([self.image(i) for i in chunk])

    def build_model(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Conv2d(3, self.num_classes, 1).double()

    def pixel_logits(self, model, images):
        return model(images)

    def pseudo_label(self, model, images):
        return model(images).argmax(dim=1)

    def loss_per_unit(self, model, images, targets):
        return F.cross_entropy(model(images), targets, reduction='none')  # [B, H, W]

    def labeled_units(self, sample_ids):
        return [self.labeled.get(int(i), np.zeros(self.shape, dtype=bool)).copy()
                for i in sample_ids]

    def ground_truth(self, sample_ids):
        return {int(i): np.zeros(self.shape, dtype=np.int64) for i in sample_ids}

    def set_annotations(self, annotations):
        pass

    def train(self, model, labeled_ids, seed):
        return model

    def evaluate(self, model):
        return {}


@pytest.fixture(scope='module')
def pixels():
    task = PixelTask()
    return task, task.build_model(seed=0).eval()


def task_and_model(request, on: str):
    return request.getfixturevalue(on)


# =============================================================================== scorers
def _check_score_result(result, ids):
    assert isinstance(result, ScoreResult)
    np.testing.assert_array_equal(result.sample_ids, ids)
    scores = np.asarray(result.scores)
    assert scores.shape == (len(ids),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    for name, extra in result.extras.items():
        assert len(extra) == len(ids), name


@pytest.mark.parametrize('name,case', params(SCORER_CASES))
def test_scorer_contract(request, name, case):
    task, model = task_and_model(request, case.on)
    ids = CANDIDATES if case.on.startswith('digits') else task.sample_ids()
    labeled = LABELED if case.on.startswith('digits') else ids[:0]
    scorer = build_checked('SCORERS', case.config(), 'scorer')
    assert isinstance(scorer, BaseScorer)
    before = snapshot(model)
    first = scorer.score(task, model, ids, np.random.default_rng(7), labeled_ids=labeled)
    again = scorer.score(task, model, ids, np.random.default_rng(7), labeled_ids=labeled)
    assert bit_identical(model, before), f'{name} changed the model parameters'
    assert not model.training, f'{name} did not restore eval mode'
    _check_score_result(first, ids)
    np.testing.assert_array_equal(again.scores, first.scores)
    if case.on == 'pixels':
        assert first.unit_scores is not None and len(first.unit_scores) == len(ids)
        for unit_map, again_map in zip(first.unit_scores, again.unit_scores):
            assert np.shape(unit_map) == task.shape and np.isfinite(unit_map).all()
            np.testing.assert_array_equal(unit_map, again_map)
        if first.unit_targets is not None:
            assert len(first.unit_targets) == len(ids)
            assert all(np.shape(t) == task.shape for t in first.unit_targets)
    else:
        assert first.unit_scores is None, f'{name}: one unit per image, no unit maps'


# =============================================================================== engines
def _sharpness(engine: Case, pert: Case) -> BaseScorer:
    return build_checked('SCORERS', dict(type='SharpnessScorer', engine=engine.config(),
                                         perturbation=pert.config()), 'scorer')


@pytest.fixture(scope='module')
def reference_scores(digits):
    """``ReferenceEngine`` scores per perturbation case, computed once."""
    cache: dict[int, np.ndarray] = {}

    def get(pert: Case) -> np.ndarray:
        if id(pert) not in cache:
            task, model = digits
            scorer = _sharpness(Case(dict(type='ReferenceEngine')), pert)
            cache[id(pert)] = scorer.score(task, model, CANDIDATES,
                                           np.random.default_rng(0)).scores
        return cache[id(pert)]

    return get


@pytest.mark.parametrize('pert_name,pert', params(PERTURBATION_CASES))
@pytest.mark.parametrize('engine_name,engine', params(ENGINE_CASES))
def test_engine_and_perturbation_contract(digits, reference_scores, engine_name, engine,
                                          pert_name, pert):
    task, model = digits
    scorer = _sharpness(engine, pert)
    before = snapshot(model)
    grads = [p.grad for p in model.parameters()]
    first = scorer.score(task, model, CANDIDATES, np.random.default_rng(0))
    again = scorer.score(task, model, CANDIDATES, np.random.default_rng(1))
    assert bit_identical(model, before), f'{engine_name} changed the model parameters'
    assert all(g is None and p.grad is None or torch.equal(g, p.grad)
               for g, p in zip(grads, model.parameters())), f'{engine_name} left gradients'
    _check_score_result(first, CANDIDATES)
    np.testing.assert_array_equal(again.scores, first.scores)
    assert (first.scores >= 0).all()  # a cross-entropy under any perturbation
    if engine.options['exact'] and engine_name != 'ReferenceEngine':
        np.testing.assert_allclose(first.scores, reference_scores(pert), rtol=1e-10, atol=0)


# =============================================================================== selectors
def _sample_context(task, model, candidates, seed=5) -> SelectionContext:
    scores = np.random.default_rng(11).random(len(candidates))
    return SelectionContext(candidate_ids=candidates, scores=scores, labeled_ids=LABELED,
                            budget=7, rng=np.random.default_rng(seed), task=task, model=model)


@pytest.mark.parametrize('name,case', params(SELECTOR_CASES, lambda c: not c.options.get('unit')))
def test_sample_selector_contract(digits, name, case):
    task, model = digits
    candidates = np.arange(300, 360, dtype=np.int64)
    selector = build_checked('SELECTORS', case.config(), 'selector')
    assert isinstance(selector, BaseSelector) and not selector.selects_units
    before = snapshot(model)
    context = _sample_context(task, model, candidates)
    picked = selector.select(context)
    assert isinstance(picked, Selection) and picked.units is None
    ids = np.asarray(picked.sample_ids)
    assert ids.dtype == np.int64 and ids.shape == (7,)
    assert len(np.unique(ids)) == 7 and np.isin(ids, candidates).all()
    by_id = dict(zip(candidates.tolist(), context.scores.tolist()))
    np.testing.assert_array_equal(picked.scores, [by_id[int(i)] for i in ids])
    # A fresh selector and a fresh context with the same seed: the same query, same order.
    again = build_checked('SELECTORS', case.config(), 'selector').select(
        _sample_context(task, model, candidates))
    np.testing.assert_array_equal(again.sample_ids, ids)
    assert bit_identical(model, before), f'{name} changed the model parameters'


def _unit_context(task, seed=3) -> SelectionContext:
    ids = task.sample_ids()[:6]
    rng = np.random.default_rng(21)
    unit_scores = [rng.random(task.shape) for _ in ids]
    return SelectionContext(candidate_ids=ids, scores=np.array([m.mean() for m in unit_scores]),
                            labeled_ids=np.zeros(0, np.int64), budget=None,
                            rng=np.random.default_rng(seed), task=task, unit_scores=unit_scores)


@pytest.mark.parametrize('labeled_fraction', [0.0, 0.3])
@pytest.mark.parametrize('name,case', params(SELECTOR_CASES, lambda c: c.options.get('unit')))
def test_unit_selector_contract(name, case, labeled_fraction):
    task = PixelTask()
    rng = np.random.default_rng(4)
    task.labeled = {int(i): rng.random(task.shape) < labeled_fraction for i in task.sample_ids()}
    selector = build_checked('SELECTORS', case.config(), 'selector')
    assert isinstance(selector, BaseUnitSelector) and selector.selects_units
    context = _unit_context(task)
    picked = selector.select(context)
    assert picked.units is not None and len(picked.units) == len(picked.sample_ids)
    assert np.isin(picked.sample_ids, context.candidate_ids).all()
    assert len(np.unique(picked.sample_ids)) == len(picked.sample_ids)
    position = {int(i): k for k, i in enumerate(context.candidate_ids)}
    budget = selector.round_budget(task.shape)
    for sample_id, units, score in zip(picked.sample_ids, picked.units, picked.scores):
        k = position[int(sample_id)]
        assert score == context.scores[k]
        units = np.asarray(units)
        assert units.dtype == np.int64 and 0 < len(units) <= budget
        assert np.array_equal(units, np.unique(units)), 'units must be sorted and unique'
        assert not task.labeled[int(sample_id)].reshape(-1)[units].any(), 'labeled unit chosen'
    if labeled_fraction == 0.0:  # nothing labeled: every image gets units
        assert len(picked.sample_ids) == len(context.candidate_ids)
    again = build_checked('SELECTORS', case.config(), 'selector').select(_unit_context(task))
    np.testing.assert_array_equal(again.sample_ids, picked.sample_ids)
    for a, b in zip(again.units, picked.units):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name,case', params(SELECTOR_CASES, lambda c: c.options.get('unit')))
def test_per_sample_unit_selectors_select_the_same_in_chunks(name, case):
    """A unit selector that declares ``per_sample`` is run chunk by chunk by the loop: its
    units for a candidate must not depend on the other candidates of the call."""
    selector = build_checked('SELECTORS', case.config(), 'selector')
    if not selector.per_sample:
        pytest.skip(f'{name} does not declare per_sample')
    task = PixelTask()
    rng = np.random.default_rng(4)
    task.labeled = {int(i): rng.random(task.shape) < 0.2 for i in task.sample_ids()}
    whole = _unit_context(task)
    picked = selector.select(whole)
    parts = []
    for chunk in (slice(0, 2), slice(2, 3), slice(3, 6)):
        parts.append(selector.select(SelectionContext(
            candidate_ids=whole.candidate_ids[chunk], scores=whole.scores[chunk],
            labeled_ids=whole.labeled_ids, budget=None, rng=np.random.default_rng(3),
            task=task, unit_scores=list(whole.unit_scores)[chunk])))
    np.testing.assert_array_equal(np.concatenate([p.sample_ids for p in parts]),
                                  picked.sample_ids)
    chunked = [u for p in parts for u in p.units]
    assert len(chunked) == len(picked.units)
    for a, b in zip(chunked, picked.units):
        np.testing.assert_array_equal(a, b)


class _Broken(BaseSelector):
    def __init__(self, positions):
        self.positions = positions

    def _select(self, context):
        return np.asarray(self.positions)


@pytest.mark.parametrize('positions', [[0, 0, 1], [0, 1], [0, 1, 2, 3], [0, 1, 10], [-1, 0, 1]],
                         ids=['duplicate', 'too-few', 'too-many', 'outside', 'negative'])
def test_broken_selector_breaks_the_contract(positions):
    context = SelectionContext.of_scores(np.arange(10.0), budget=3)
    with pytest.raises(SelectorContractError):
        _Broken(positions).select(context)


class _BrokenUnits(BaseUnitSelector):
    def __init__(self, units):
        self.units = units

    def select_units(self, unit_scores, labeled, rng):
        return [np.asarray(self.units, dtype=np.int64) for _ in unit_scores]


@pytest.mark.parametrize('units', [[3, 3], [0]], ids=['repeated', 'labeled'])
def test_broken_unit_selector_breaks_the_contract(units):
    task = PixelTask()
    task.labeled = {int(i): np.eye(*task.shape, dtype=bool) for i in task.sample_ids()}
    with pytest.raises(SelectorContractError):
        _BrokenUnits(units).select(_unit_context(task))


# =============================================================================== embeddings
@pytest.mark.parametrize('name,case', params(EMBEDDING_CASES))
def test_embedding_contract(digits, tmp_path, name, case):
    task, model = digits
    embedding = build_checked('EMBEDDINGS', case.config(tmp_path), 'selector.embedding')
    context = _sample_context(task, model, CANDIDATES)
    candidates = embedding(context, 'candidates')
    labeled = embedding(context, 'labeled')
    assert candidates.ndim == 2 and candidates.shape[0] == len(CANDIDATES)
    assert labeled.shape == (len(LABELED), candidates.shape[1])
    assert np.isfinite(candidates).all() and np.isfinite(labeled).all()
    again = build_checked('EMBEDDINGS', case.config(tmp_path), 'selector.embedding')(
        _sample_context(task, model, CANDIDATES), 'candidates')
    np.testing.assert_array_equal(again, candidates)


# =============================================================================== oracles
@pytest.mark.parametrize('name,case', params(ORACLE_CASES))
def test_every_oracle_builds_and_attaches(tmp_path, name, case):
    oracle = build_checked('ORACLES', case.config(), 'oracle')
    assert isinstance(oracle, BaseOracle)
    oracle.attach(tmp_path)


def test_simulated_oracle_reveals_the_ground_truth(digits):
    task, _ = digits
    oracle = build_checked('ORACLES', dict(type='SimulatedOracle'), 'oracle')
    assert oracle.reveals_ground_truth is True
    ids = np.array([5, 700, 42], dtype=np.int64)
    answers = dict(oracle.annotate(task, ids, round_idx=1))
    assert answers == task.ground_truth(ids)
    with pytest.raises(ConfigError, match='FileOracle'):
        oracle.import_answers(task, Path('answers.csv'), 1, ids, None)


def test_file_oracle_exports_the_query_and_waits(digits, tmp_path):
    task, _ = digits
    oracle = build_checked('ORACLES', dict(type='FileOracle'), 'oracle')
    assert oracle.reveals_ground_truth is False
    oracle.attach(tmp_path)
    ids = np.array([12, 7, 300], dtype=np.int64)
    with pytest.raises(QueryPending) as pending:
        oracle.annotate(task, ids, round_idx=2)
    assert pending.value.round_idx == 2 and pending.value.num_samples == 3
    listing = json.loads((pending.value.folder / 'query.json').read_text())
    assert listing['sample_ids'] == ids.tolist() and listing['round'] == 2
    assert pending.value.folder == tmp_path / 'queries' / 'round_002'


# =============================================================================== schedules
class RecordingTask(PixelTask):
    """Records ``build_model``, ``train`` and ``train_steps`` calls; models are tiny convs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def build_model(self, seed):
        model = super().build_model(seed)
        self.calls.append(('build_model', seed, id(model)))
        return model

    def train(self, model, labeled_ids, seed):
        self.calls.append(('train', seed, id(model), len(labeled_ids)))
        return model

    def train_steps(self, model, labeled_ids, seed, start, stop, total, optim_state):
        self.calls.append(('train_steps', (start, stop, total), id(model),
                           None if optim_state is None else dict(optim_state)))
        return model, {'step': stop}


def _run_schedule(schedule, task, rounds):
    model, models = None, []
    for r in rounds:
        model = schedule.train(task, model, np.arange(3 * r), seed=10 + r, round_idx=r)
        models.append(model)
    return models


@pytest.mark.parametrize('name,case', params(SCHEDULE_CASES))
def test_every_schedule_builds_checks_and_trains(name, case):
    schedule = build_checked('SCHEDULES', case.config(), 'al.schedule')
    assert isinstance(schedule, Schedule)
    num_rounds = case.options['num_rounds']
    schedule.check(num_rounds)
    models = _run_schedule(schedule, RecordingTask(), range(1, num_rounds + 2))
    assert all(isinstance(m, nn.Module) for m in models)
    assert schedule.persists_state == (schedule.state_dict() is not None)


def test_scratch_schedule_builds_a_new_model_every_round():
    task = RecordingTask()
    models = _run_schedule(build_checked('SCHEDULES', dict(type='ScratchSchedule'), 's'), task,
                           [1, 2, 3])
    assert [c[:2] for c in task.calls] == [('build_model', 11), ('train', 11),
                                           ('build_model', 12), ('train', 12),
                                           ('build_model', 13), ('train', 13)]
    assert len({id(m) for m in models}) == 3


def test_continue_schedule_reuses_the_previous_model():
    task = RecordingTask()
    models = _run_schedule(build_checked('SCHEDULES', dict(type='ContinueSchedule'), 's'), task,
                           [1, 2, 3])
    assert [c[0] for c in task.calls] == ['build_model', 'train', 'train', 'train']
    assert models[0] is models[1] is models[2]
    assert {c[2] for c in task.calls} == {id(models[0])}


def test_in_run_schedule_trains_consecutive_windows_and_carries_its_state():
    task = RecordingTask()
    schedule = build_checked('SCHEDULES', dict(type='InRunSchedule', round_iters=[2, 4, 6]), 's')
    assert schedule.persists_state and schedule.state_dict() is None
    models = _run_schedule(schedule, task, [1, 2, 3])
    steps = [c for c in task.calls if c[0] == 'train_steps']
    assert [c[1] for c in steps] == [(0, 2, 6), (2, 4, 6), (4, 6, 6)]
    assert [c[3] for c in steps] == [None, {'step': 2}, {'step': 4}]
    assert [c[0] for c in task.calls].count('build_model') == 1
    assert models[0] is models[1] is models[2]
    assert schedule.state_dict() == {'step': 6}
    # A resumed run: a new schedule continues from the persisted state.
    resumed = build_checked('SCHEDULES', dict(type='InRunSchedule', round_iters=[2, 4, 6]), 's')
    resumed.load_state_dict({'step': 4})
    task.calls.clear()
    resumed.train(task, models[0], np.arange(3), seed=1, round_idx=3)
    assert task.calls[-1][1] == (4, 6, 6) and task.calls[-1][3] == {'step': 4}
    schedule.check(2)
    for wrong in (1, 3):
        with pytest.raises(ConfigError, match='round_iters'):
            schedule.check(wrong)
    with pytest.raises(ConfigError, match='increasing'):
        build_checked('SCHEDULES', dict(type='InRunSchedule', round_iters=[4, 2]), 's')


# =============================================================================== initial sets
@pytest.mark.parametrize('name,case', params(INITIAL_SET_CASES))
def test_initial_set_contract(digits, name, case):
    task, _ = digits
    initial = build_checked('INITIAL_SETS', case.config(), 'al.initial_set')
    assert isinstance(initial, InitialSet)
    ids = task.sample_ids()
    chosen = initial.choose(task, ids, 25, np.random.default_rng(3))
    assert chosen.dtype == np.int64 and chosen.shape == (25,)
    assert len(np.unique(chosen)) == 25 and np.isin(chosen, ids).all()
    assert np.array_equal(chosen, np.sort(chosen))
    np.testing.assert_array_equal(initial.choose(task, ids, 25, np.random.default_rng(3)), chosen)
    assert not np.array_equal(initial.choose(task, ids, 25, np.random.default_rng(4)), chosen)
    empty = initial.choose(task, ids, 0, np.random.default_rng(3))
    assert empty.dtype == np.int64 and empty.shape == (0,)


@pytest.mark.parametrize('size', [10, 25, 37])
def test_balanced_initial_set_is_balanced(digits, size):
    task, _ = digits
    initial = build_checked('INITIAL_SETS', dict(type='BalancedInitialSet'), 'al.initial_set')
    chosen = initial.choose(task, task.sample_ids(), size, np.random.default_rng(0))
    counts = np.bincount(task.stratify_labels(chosen), minlength=10)
    assert counts.sum() == size and counts.max() - counts.min() <= 1


# =============================================================================== hooks
@pytest.mark.parametrize('name,case', params(HOOK_CASES))
def test_every_hook_builds_from_its_defaults(name, case):
    hook = build_checked('AL_HOOKS', case.config(), 'hooks[0]')
    assert isinstance(hook, ALHook)
