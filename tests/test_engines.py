"""The three engines: exactness against the reference, untouched parameters, batch effects."""
import numpy as np
import pytest
import torch

from saal_tasks.scorers import SharpnessScorer
from saal_tasks.scorers.engines import ReferenceEngine, VectorizedEngine

from conftest import TinyBNNet, bit_identical, snapshot

IDS = np.arange(300, 340)
PERTURBATIONS = [dict(type='SAMPerturbation', rho=0.05), dict(type='ASAMPerturbation', rho=0.05),
                 dict(type='SAMPerturbation', rho=0.5, q=3)]


def _scores(task, model, engine, pert, mode='max', ids=IDS):
    scorer = SharpnessScorer(perturbation=pert, engine=engine, mode=mode)
    return scorer.score(task, model, ids, np.random.default_rng(0))


@pytest.mark.parametrize('mode', ['max', 'diff'])
@pytest.mark.parametrize('pert', PERTURBATIONS)
def test_vectorized_equals_reference_float64(digits_task, trained_cnn, pert, mode):
    ref = _scores(digits_task, trained_cnn, dict(type='ReferenceEngine'), pert, mode)
    vec = _scores(digits_task, trained_cnn, dict(type='VectorizedEngine', chunk_size=7), pert,
                  mode)
    assert np.array_equal(ref.sample_ids, IDS) and np.array_equal(vec.sample_ids, IDS)
    # diff scores can be tiny; compare relative to the score scale, per sample.
    scale = np.maximum(np.abs(ref.scores), 1e-3)
    assert np.max(np.abs(vec.scores - ref.scores) / scale) <= 1e-5
    assert ref.scores.std() > 0  # non-trivial scores: the check can fail


def test_vectorized_with_batchnorm_in_eval_mode(digits_task):
    model = TinyBNNet().double()
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.train()  # the scorer must switch to eval mode itself and restore this mode
    ref = _scores(digits_task, model, dict(type='ReferenceEngine'), PERTURBATIONS[0])
    vec = _scores(digits_task, model, dict(type='VectorizedEngine', chunk_size=16),
                  PERTURBATIONS[0])
    np.testing.assert_allclose(vec.scores, ref.scores, rtol=1e-5)
    assert model.training


@pytest.mark.parametrize('engine', [dict(type='ReferenceEngine'),
                                    dict(type='VectorizedEngine', chunk_size=8),
                                    dict(type='BatchwiseEngine', group_size=10)])
@pytest.mark.parametrize('pert', PERTURBATIONS[:2])
def test_parameters_bit_identical_after_scoring(digits_task, trained_cnn, engine, pert):
    before = snapshot(trained_cnn)
    grads_before = [p.grad for p in trained_cnn.parameters()]
    _scores(digits_task, trained_cnn, engine, pert)
    assert bit_identical(trained_cnn, before)
    assert all(g is None and p.grad is None or torch.equal(g, p.grad)
               for g, p in zip(grads_before, trained_cnn.parameters()))


def test_parameters_restored_when_scoring_fails(digits_task, trained_cnn):
    before = snapshot(trained_cnn)

    class Exploding(type(digits_task)):
        calls = 0

        def loss_per_unit(self, model, inputs, targets):
            Exploding.calls += 1
            if Exploding.calls == 4:  # the perturbed forward of the second sample
                raise RuntimeError('boom')
            return super().loss_per_unit(model, inputs, targets)

    task = Exploding.__new__(Exploding)
    task.__dict__.update(digits_task.__dict__)
    with pytest.raises(RuntimeError, match='boom'):
        _scores(task, trained_cnn, dict(type='ReferenceEngine'), PERTURBATIONS[0])
    assert bit_identical(trained_cnn, before)


def test_scores_do_not_depend_on_chunking(digits_task, trained_cnn):
    a = _scores(digits_task, trained_cnn, dict(type='VectorizedEngine', chunk_size=3),
                PERTURBATIONS[0])
    b = _scores(digits_task, trained_cnn, dict(type='VectorizedEngine', chunk_size=40),
                PERTURBATIONS[0])
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)


def test_batchwise_is_an_approximation(digits_task, trained_cnn):
    ref = _scores(digits_task, trained_cnn, dict(type='ReferenceEngine'), PERTURBATIONS[0])
    one = _scores(digits_task, trained_cnn, dict(type='BatchwiseEngine', group_size=1),
                  PERTURBATIONS[0])
    grouped = _scores(digits_task, trained_cnn, dict(type='BatchwiseEngine', group_size=20),
                      PERTURBATIONS[0])
    np.testing.assert_array_equal(one.scores, ref.scores)
    assert np.max(np.abs(grouped.scores - ref.scores)) > 1e-6
    # A shared ε is at most as harmful to each sample as its own worst-case direction, to
    # first order; on average the grouped scores are lower.
    assert grouped.scores.mean() < ref.scores.mean()


def test_max_and_diff_relation(digits_task, trained_cnn):
    mx = _scores(digits_task, trained_cnn, dict(type='ReferenceEngine'), PERTURBATIONS[0])
    df = _scores(digits_task, trained_cnn, dict(type='ReferenceEngine'), PERTURBATIONS[0], 'diff')
    np.testing.assert_allclose(mx.scores - mx.extras['clean_loss'], df.scores, atol=1e-12)
    assert (df.scores > 0).all()  # SAM's ε increases each sample's loss at this small rho


def test_tiny_rho_approaches_clean_loss(digits_task, trained_cnn):
    res = _scores(digits_task, trained_cnn, dict(type='ReferenceEngine'),
                  dict(type='SAMPerturbation', rho=1e-9))
    np.testing.assert_allclose(res.scores, res.extras['clean_loss'], rtol=1e-6)
    assert (res.scores >= res.extras['clean_loss']).all()


def test_vectorized_rejects_non_tensor_inputs(digits_task, trained_cnn):
    class DictInputs(type(digits_task)):
        def pool_batches(self, sample_ids, batch_size):
            for ids, x in super().pool_batches(sample_ids, batch_size):
                yield ids, {'img': x}

    task = DictInputs.__new__(DictInputs)
    task.__dict__.update(digits_task.__dict__)
    with pytest.raises(TypeError, match='use ReferenceEngine'):
        _scores(task, trained_cnn, dict(type='VectorizedEngine'), PERTURBATIONS[0])


def test_invalid_scorer_options():
    with pytest.raises(ValueError, match="mode must be 'max' or 'diff'"):
        SharpnessScorer(mode='maximum')
    with pytest.raises(ValueError, match='chunk_size'):
        VectorizedEngine(chunk_size=0)
    assert ReferenceEngine().group_size == 1
