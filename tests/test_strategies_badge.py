"""BADGE: gradient embeddings equal the analytic last-layer gradient; k-means++ rules."""
import numpy as np
import torch
import torch.nn.functional as F

from saal_tasks.core.selection import SelectionContext
from saal_tasks.core.task import batched_eval
from saal_tasks.selectors.badge import BADGESelector, badge_kmeanspp


def test_gradient_embedding_equals_autograd_of_last_layer(digits_task, trained_cnn):
    ids = np.arange(300, 306)
    _, inputs = next(digits_task.pool_batches(ids, len(ids)))
    embedding = digits_task.gradient_embedding(trained_cnn, inputs)
    assert embedding.shape == (6, trained_cnn.head.weight.numel())
    for i in range(len(ids)):
        x = inputs[i:i + 1]
        logits = trained_cnn(x)
        loss = F.cross_entropy(logits, logits.argmax(dim=1))
        (grad,) = torch.autograd.grad(loss, trained_cnn.head.weight)
        torch.testing.assert_close(embedding[i], grad.flatten(), rtol=1e-10, atol=1e-12)


def test_kmeanspp_starts_at_largest_norm_and_spreads():
    rng = np.random.default_rng(0)
    cluster_a = rng.normal(0.0, 0.01, size=(20, 2)) + [5.0, 0.0]
    cluster_b = rng.normal(0.0, 0.01, size=(20, 2)) + [0.0, 3.0]
    points = np.concatenate([cluster_a, cluster_b])
    picked = badge_kmeanspp(points, 2, np.random.default_rng(1))
    assert picked[0] == np.argmax(np.linalg.norm(points, axis=1))
    assert (picked[0] < 20) != (picked[1] < 20)  # one pick per cluster


def test_kmeanspp_unique_and_deterministic():
    points = np.random.default_rng(2).normal(size=(50, 6))
    a = badge_kmeanspp(points, 20, np.random.default_rng(3))
    b = badge_kmeanspp(points, 20, np.random.default_rng(3))
    assert np.array_equal(a, b) and len(set(a.tolist())) == 20


def _context(task, model, candidates, **kwargs):
    return SelectionContext(candidate_ids=candidates, scores=np.zeros(len(candidates)),
                            labeled_ids=np.arange(200), budget=8, rng=np.random.default_rng(0),
                            task=task, model=model, **kwargs)


def test_selector_on_the_digits_task(digits_task, trained_cnn):
    candidates = np.arange(400, 460)
    selector = BADGESelector(batch_size=16)
    picked = selector.select(_context(digits_task, trained_cnn, candidates)).sample_ids
    _, inputs = next(digits_task.pool_batches(candidates, 60))
    norms = digits_task.gradient_embedding(trained_cnn, inputs).norm(dim=1)
    assert len(set(picked.tolist())) == 8 and set(picked.tolist()) <= set(candidates.tolist())
    assert picked[0] == candidates[int(norms.argmax())]


def test_selector_uses_the_context_embeddings_or_its_own_batch_size(digits_task, trained_cnn,
                                                                     monkeypatch):
    candidates = np.arange(400, 460)
    expected = badge_kmeanspp(
        batched_eval(digits_task, trained_cnn, candidates, 16, digits_task.gradient_embedding),
        8, np.random.default_rng(0))
    batches = []
    gradient_embedding = digits_task.gradient_embedding
    monkeypatch.setattr(digits_task, 'gradient_embedding', lambda model, inputs: (
        batches.append(len(inputs)) or gradient_embedding(model, inputs)))
    # Its own batch size (the context's differs): computed in batches of 16.
    context = _context(digits_task, trained_cnn, candidates, embed_batch_size=256)
    picked = BADGESelector(batch_size=16).select(context).sample_ids
    assert picked.tolist() == candidates[expected].tolist()
    assert batches == [16, 16, 16, 12]
    # The context's batch size: the context's gradient embeddings, computed once.
    batches.clear()
    context = _context(digits_task, trained_cnn, candidates, embed_batch_size=16)
    picked = BADGESelector(batch_size=16).select(context).sample_ids
    assert picked.tolist() == candidates[expected].tolist()
    context.gradient_embeddings()
    assert batches == [16, 16, 16, 12]
