"""LL4AL: the ranking loss, the loss-prediction module inside the model, and its scorer."""
import numpy as np
import pytest
import torch

from saal_tasks.registry import SCORERS
from saal_tasks.scorers.ll4al import LossPredictionModule, ranking_loss

from conftest import make_task

EXTENSION = dict(type='LossPredictionExtension', feature_layers=['features.1', 'features.3'],
                 hidden=8)


def test_ranking_loss_known_answer():
    predicted = torch.tensor([3.0, 1.0, 2.0, 0.0])
    target = torch.tensor([4.0, 2.0, 1.0, 3.0])
    # Pairs (0, 3): true 4 > 3, predicted 3 - 0 = 3 -> max(0, 1 - 3) = 0.
    # Pairs (1, 2): true 2 > 1, predicted 1 - 2 = -1 -> max(0, 1 + 1) = 2. Mean: 1.
    assert ranking_loss(predicted, target, margin=1.0).item() == pytest.approx(1.0)
    # Odd batch: the middle sample is left out; one sample gives 0.
    assert ranking_loss(predicted[:3], target[:3]).item() == pytest.approx(0.0)
    assert ranking_loss(predicted[:1], target[:1]).item() == 0.0


def test_module_is_part_of_the_model_and_leaves_the_backbone_init_alone():
    plain = make_task(dtype='float32').build_model(seed=3)
    task = make_task(dtype='float32', train_extensions=[EXTENSION])
    model = task.build_model(seed=3)
    assert isinstance(model.loss_prediction, LossPredictionModule)
    state = model.state_dict()
    assert any(k.startswith('loss_prediction.') for k in state)
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key  # same backbone initialisation
    again = task.build_model(seed=3).state_dict()
    assert all(torch.equal(again[k], v) for k, v in state.items())


def test_training_trains_the_module_and_detaches_late():
    task = make_task(dtype='float32', epochs=2, train_extensions=[EXTENSION])
    ids = np.arange(64)
    task.set_annotations(task.ground_truth(ids))
    model = task.build_model(seed=0)
    before = {k: v.clone() for k, v in model.loss_prediction.state_dict().items()}
    task.train(model, ids, seed=0)
    after = model.loss_prediction.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # After `detach_after` of the epochs, the ranking loss no longer reaches the backbone.
    extension = task.train_extensions[0]
    _, x = next(task.pool_batches(ids[:8], 8))
    y = torch.tensor([task.ground_truth(ids[:8])[int(i)] for i in ids[:8]])
    for epoch, backbone_moves in ((1, True), (10, False)):
        model.zero_grad()
        losses = torch.nn.functional.cross_entropy(model(x), y, reduction='none')
        extension.extra_loss(model, x, y, losses.detach(), epoch, 10).backward()
        backbone = model.features[0].weight.grad
        assert (backbone is not None and backbone.abs().sum() > 0) == backbone_moves
        assert model.loss_prediction.out.weight.grad.abs().sum() > 0


def test_scorer_returns_the_predicted_losses():
    task = make_task(dtype='float64', train_extensions=[EXTENSION])
    model = task.build_model(seed=1).eval()
    ids = np.arange(10, 20)
    result = SCORERS.build(dict(type='LossPredictionScorer', batch_size=4)).score(
        task, model, ids, np.random.default_rng(0))
    _, inputs = next(task.pool_batches(ids, 10))
    with torch.no_grad():
        model(inputs)
        expected = model.loss_prediction(model.loss_prediction.tap.features())
    np.testing.assert_allclose(result.scores, expected.numpy(), rtol=1e-12)


def test_clear_errors():
    with pytest.raises(ValueError, match='no loss-prediction module'):
        SCORERS.build(dict(type='LossPredictionScorer')).score(
            make_task(), make_task().build_model(0), np.arange(3), np.random.default_rng(0))
    task = make_task(train_extensions=[dict(EXTENSION, feature_layers=['layer9'])])
    with pytest.raises(ValueError, match="no submodule 'layer9'"):
        task.build_model(0)
