"""VAAL: the discriminator separates labeled from unlabeled, deterministically."""
import numpy as np
import pytest

from saal_tasks.core.errors import ConfigError

from saal_tasks.registry import SCORERS
from saal_tasks.strategies.context import FixedPoolView

from conftest import make_task

from _strategy_helpers import Identity

VAAL = dict(type='VAALScorer', vae=dict(type='MLPVAE', hidden=16, latent_dim=8),
            discriminator_hidden=16, iterations=40, batch_size=16, lr_vae=5e-3,
            lr_discriminator=5e-3)


@pytest.fixture(scope='module')
def split():
    task = make_task(dtype='float32')
    labels = task.stratify_labels(task.sample_ids())
    return task, np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)


def _scores(cfg, task, view, candidates, seed=0):
    scorer = SCORERS.build(cfg)
    scorer.bind(view)
    return scorer.score(task, Identity(), candidates, np.random.default_rng(seed)).scores


@pytest.mark.slow
def test_discriminator_scores_unlike_labeled_higher(split):
    task, zeros, ones = split
    # Labeled: only zeros; unlabeled: only ones; candidates (unseen in training): both kinds.
    # Without the adversarial and KL terms the VAE does not fight the discriminator, which
    # must then learn the split: the ones must score higher.
    view = FixedPoolView(task=task, model=None, labeled=zeros[:60], unlabeled=ones[:60])
    candidates = np.sort(np.concatenate([zeros[60:80], ones[60:80]]))
    scores = _scores(dict(VAAL, adversary_weight=0.0, beta=0.0), task, view, candidates)
    is_one = np.isin(candidates, ones)
    assert scores[is_one].mean() > scores[~is_one].mean() + 0.2


def test_adversarial_training_is_deterministic_and_gives_probabilities(split):
    task, zeros, ones = split
    view = FixedPoolView(task=task, model=None, labeled=zeros[:40], unlabeled=ones[:40])
    cfg = dict(VAAL, iterations=5)
    scores = _scores(cfg, task, view, ones[40:50])
    assert scores.shape == (10,) and np.all((scores > 0) & (scores < 1))
    np.testing.assert_array_equal(_scores(cfg, task, view, ones[40:50]), scores)
    assert not np.array_equal(_scores(cfg, task, view, ones[40:50], seed=1), scores)


def test_without_hook_names_the_fix(split):
    task, zeros, _ = split
    with pytest.raises(ConfigError, match='PoolViewHook'):
        SCORERS.build(VAAL).score(task, Identity(), zeros[:3], np.random.default_rng(0))


def test_conv_vae_shapes():
    import torch
    from saal_tasks.strategies.vaal import ConvVAE

    vae = ConvVAE((3, 32, 32), width=4, latent_dim=5)
    mu, logvar = vae.encode(torch.zeros(2, 3, 32, 32))
    assert mu.shape == logvar.shape == (2, 5)
    assert vae.decode(mu).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match='divisible by 8'):
        ConvVAE((1, 28, 28))
