"""Entropy, least confidence and margin: known answers on fixed probabilities."""
import math

import numpy as np
import pytest
import torch

from saal_tasks.registry import SCORERS
from saal_tasks.scorers.uncertainty import entropy, least_confidence, margin

from _strategy_helpers import Identity, PointsTask

PROBS = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3],
                      [0.7, 0.2, 0.1]], dtype=torch.float64)


def test_entropy_known_answers():
    expected = [0.0, math.log(2), math.log(3),
                -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))]
    assert torch.allclose(entropy(PROBS), torch.tensor(expected, dtype=torch.float64))


def test_least_confidence_known_answers():
    assert torch.allclose(least_confidence(PROBS),
                          torch.tensor([0.0, 0.5, 2 / 3, 0.3], dtype=torch.float64))


def test_margin_known_answers():
    assert torch.allclose(margin(PROBS), torch.tensor([0.0, 1.0, 1.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match='at least 2 classes'):
        margin(torch.ones(2, 1))


@pytest.mark.parametrize('name, fn', [('EntropyScorer', entropy),
                                      ('LeastConfidenceScorer', least_confidence),
                                      ('MarginScorer', margin)])
def test_scorers_score_softmax_of_task_logits(name, fn):
    logits = torch.randn(13, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    task = PointsTask(logits.numpy())
    ids = np.array([12, 0, 5, 7, 3])
    scorer = SCORERS.build(dict(type=name, batch_size=2))
    result = scorer.score(task, Identity(), ids, np.random.default_rng(0))
    expected = fn(torch.softmax(logits[ids], dim=1)).numpy()
    assert result.sample_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(result.scores, expected, rtol=1e-12)


def test_most_uncertain_sample_scores_highest():
    # A confident, a 50/50 and a uniform prediction: every scorer ranks uniform >= 50/50 > sure.
    logits = torch.log(PROBS[:3].clamp_min(1e-12))
    task = PointsTask(logits.numpy())
    for name in ('EntropyScorer', 'LeastConfidenceScorer', 'MarginScorer'):
        scores = SCORERS.build(dict(type=name)).score(
            task, Identity(), np.arange(3), np.random.default_rng(0)).scores
        assert scores[0] < scores[1] <= scores[2] + 1e-9, name


def test_task_without_logits_is_a_clear_error():
    from saal_tasks.core.task import BaseTask

    with pytest.raises(NotImplementedError, match='uncertainty scorers'):
        BaseTask.predict_logits(object(), None, None)
