"""VAAL: the discriminator separates labeled from unlabeled, deterministically."""
import numpy as np
import pytest

from saal_tasks.core.errors import ConfigError

from saal_tasks.registry import SCORERS

from conftest import make_task

from _strategy_helpers import Identity, PoolOf

VAAL = dict(type='VAALScorer', vae=dict(type='MLPVAE', hidden=16, latent_dim=8),
            discriminator_hidden=16, iterations=40, batch_size=16, lr_vae=5e-3,
            lr_discriminator=5e-3)


@pytest.fixture(scope='module')
def split():
    task = make_task(dtype='float32')
    labels = task.stratify_labels(task.sample_ids())
    return task, np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)


def _scores(cfg, task, labeled, unlabeled, candidates, seed=0):
    """Scores of ``candidates`` by VAAL trained on ``labeled`` versus ``unlabeled``: the pool
    is restricted to both sets, so the unlabeled samples are exactly ``unlabeled``."""
    pool = PoolOf(task, np.concatenate([labeled, unlabeled]))
    return SCORERS.build(cfg).score(pool, Identity(), candidates, np.random.default_rng(seed),
                                    labeled_ids=labeled).scores


@pytest.mark.slow
def test_discriminator_scores_unlike_labeled_higher(split):
    task, zeros, ones = split
    # Labeled: only zeros; unlabeled: only ones; candidates (unseen in training): both kinds.
    # Without the adversarial and KL terms the VAE does not fight the discriminator, which
    # must then learn the split: the ones must score higher.
    candidates = np.sort(np.concatenate([zeros[60:80], ones[60:80]]))
    scores = _scores(dict(VAAL, adversary_weight=0.0, beta=0.0), task, zeros[:60], ones[:60],
                     candidates)
    is_one = np.isin(candidates, ones)
    assert scores[is_one].mean() > scores[~is_one].mean() + 0.2


def test_adversarial_training_is_deterministic_and_gives_probabilities(split):
    task, zeros, ones = split
    cfg = dict(VAAL, iterations=5)
    scores = _scores(cfg, task, zeros[:40], ones[:40], ones[40:50])
    assert scores.shape == (10,) and np.all((scores > 0) & (scores < 1))
    np.testing.assert_array_equal(_scores(cfg, task, zeros[:40], ones[:40], ones[40:50]), scores)
    assert not np.array_equal(_scores(cfg, task, zeros[:40], ones[:40], ones[40:50], seed=1),
                              scores)


def test_unlabeled_are_the_other_samples_of_the_pool_sorted(split):
    task, zeros, ones = split
    scorer = SCORERS.build(dict(VAAL, iterations=1))
    seen = {}

    def fit(task, labeled, unlabeled, rng):
        seen.update(labeled=labeled, unlabeled=unlabeled)
        raise StopIteration

    scorer.fit = fit
    labeled = np.array([ones[3], zeros[5], zeros[1]])
    with pytest.raises(StopIteration):
        scorer.score(task, Identity(), zeros[:3], np.random.default_rng(0), labeled_ids=labeled)
    assert seen['labeled'].tolist() == sorted(labeled.tolist())
    assert seen['unlabeled'].tolist() == sorted(set(task.sample_ids().tolist())
                                                - set(labeled.tolist()))


def test_without_labeled_ids_names_the_fix(split):
    task, zeros, _ = split
    with pytest.raises(ConfigError, match=r'needs the labeled ids.*labeled_ids=\.\.\.'):
        SCORERS.build(VAAL).score(task, Identity(), zeros[:3], np.random.default_rng(0))


def test_conv_vae_shapes():
    import torch
    from saal_tasks.scorers.vaal import ConvVAE

    vae = ConvVAE((3, 32, 32), width=4, latent_dim=5)
    mu, logvar = vae.encode(torch.zeros(2, 3, 32, 32))
    assert mu.shape == logvar.shape == (2, 5)
    assert vae.decode(mu).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match='divisible by 8'):
        ConvVAE((1, 28, 28))
