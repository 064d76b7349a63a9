"""Loss landscapes (filter-normalised directions) and the ρ-sweep."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saal_tasks.diagnostics import (filter_normalized_direction, loss_surface, rho_sweep,
                                    true_targets, weight_functions)

from conftest import bit_identical, snapshot
from diagnostics_tasks import TensorTask


@pytest.fixture(scope='module')
def mlp():
    task = TensorTask(num_samples=20)
    return task, task.train(task.build_model(0), np.arange(10), seed=0)


def test_filter_normalized_direction(mlp):
    _, model = mlp
    params = weight_functions(TensorTask(), model).params
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    again = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for name, p in params.items():
        assert d[name].shape == p.shape and torch.equal(d[name], again[name])
        if p.dim() == 1:  # biases: no direction (Li et al.)
            assert (d[name] == 0).all()
        else:  # every filter (output row) has the norm of θ's filter
            torch.testing.assert_close(d[name].reshape(p.shape[0], -1).norm(dim=1),
                                       p.reshape(p.shape[0], -1).norm(dim=1))


def test_loss_surface_against_moved_copies(mlp):
    task, model = mlp
    before = snapshot(model)
    ids = np.arange(10)
    surface = loss_surface(task, model, ids, targets_fn=true_targets, span=0.5, steps=5,
                           batch_size=3, seed=4)
    assert bit_identical(model, before)
    assert surface.loss.shape == (5, 5) and surface.num_samples == 10
    np.testing.assert_allclose(surface.alphas, [-0.5, -0.25, 0, 0.25, 0.5])
    # θ itself is the centre of an odd grid: the plain mean training loss.
    with torch.no_grad():
        center = F.cross_entropy(model(task.x[:10]), task.y[:10]).item()
    assert surface.center_loss == pytest.approx(center, rel=1e-12)
    # One corner by hand: the same directions, applied to a copy of the model.
    gen = torch.Generator().manual_seed(4)
    params = weight_functions(task, model).params
    d1 = filter_normalized_direction(params, gen)
    d2 = filter_normalized_direction(params, gen)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(-0.5 * d1[f'model.{name}'] + 0.25 * d2[f'model.{name}'])
        corner = F.cross_entropy(moved(task.x[:10]), task.y[:10]).item()
    assert surface.loss[3, 0] == pytest.approx(corner, rel=1e-12)  # row β = 0.25, column α = -0.5
    assert surface.loss.max() > center  # the trained weights sit in a basin


def test_loss_surface_rejects_bad_grids(mlp):
    task, model = mlp
    with pytest.raises(ValueError, match='steps >= 2 and span > 0'):
        loss_surface(task, model, np.arange(3), targets_fn=true_targets, steps=1)


def test_rho_sweep(mlp):
    task, model = mlp
    pool = np.arange(10, 20)
    results = rho_sweep(task, model, pool, dict(type='SAMPerturbation', rho=0.05),
                        [1e-4, 0.05, 1.0], budget=3)
    assert [r['rho'] for r in results] == [1e-4, 0.05, 1.0]
    tiny, ref, large = results
    assert ref['reference_rho'] == 0.05 and ref['topk_overlap'] == 1.0
    # A vanishing perturbation keeps every label, has no margin, and queries by plain loss.
    assert tiny['psi'] == 1.0 and tiny['margin_mean'] == pytest.approx(0, abs=1e-6)
    assert tiny['topk_overlap_clean'] == 1.0
    assert large['psi'] < 1.0 and large['relative_margin'] > 0
    assert large['score_mean'] > ref['score_mean'] > tiny['score_mean']
    # Theorem 3.3 per ρ (SAM, q = 2): the remainder is cubic on this smooth network.
    cubic = [r['theorem_3_3']['median_abs_third_order_over_rho3'] for r in (tiny, ref)]
    assert cubic[1] == pytest.approx(cubic[0], rel=0.5)
    assert 0 <= large['theorem_3_3']['bound_holds_fraction'] <= 1
    asam = rho_sweep(task, model, pool, dict(type='ASAMPerturbation'), [0.05], budget=3)
    assert 'theorem_3_3' not in asam[0]  # the theorem is about the L2 ball only
    with pytest.raises(ValueError, match='reference_rho 0.3 is not among'):
        rho_sweep(task, model, pool, dict(type='SAMPerturbation'), [0.05], budget=3,
                  reference_rho=0.3)
    with pytest.raises(ValueError, match='budget must be in 1..10'):
        rho_sweep(task, model, pool, dict(type='SAMPerturbation'), [0.05], budget=11)
