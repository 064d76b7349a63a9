"""VAAL: the discriminator separates labeled from unlabeled, deterministically."""
import numpy as np
import pytest
import torch

from saal_tasks.core.errors import ConfigError

from saal_tasks.registry import SCORERS
from saal_tasks.scorers.vaal import vae_loss

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


class _FixedVAE(torch.nn.Module):
    """Encodes every sample to μ = 1, log σ² = 0 and reconstructs it exactly."""

    latent_dim = 3

    def encode(self, x):
        return torch.ones(len(x), 3, dtype=x.dtype), torch.zeros(len(x), 3, dtype=x.dtype)

    def decode(self, z):
        return self._x


def test_kl_is_summed_over_batch_and_latent_dimensions_as_in_the_release():
    # KL(N(1, 1) || N(0, 1)) = 0.5 per latent dimension; the release sums it over the batch
    # (B = 4) and the latent dimensions (3): 0.5 * 12 = 6, times β; the MSE is 0.
    vae = _FixedVAE()
    vae._x = torch.zeros(4, 1, 2, 2, dtype=torch.float64)
    loss, mu = vae_loss(vae, vae._x, beta=0.5, generator=torch.Generator().manual_seed(0))
    assert float(loss) == pytest.approx(0.5 * 6.0, rel=1e-12)
    assert mu.shape == (4, 3)


def test_two_vae_steps_per_discriminator_step_each_on_fresh_batches(split, monkeypatch):
    task, zeros, ones = split
    steps = {'vae': 0, 'disc': 0}
    original_step = torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        # The VAE's optimizer holds more parameter tensors than the discriminator's.
        steps['vae' if len(self.param_groups[0]['params']) > 6 else 'disc'] += 1
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, 'step', counting_step)
    draws = []
    pool = PoolOf(task, np.concatenate([zeros[:40], ones[:40]]))
    scorer = SCORERS.build(dict(VAAL, iterations=3))
    inputs = scorer._inputs
    monkeypatch.setattr(scorer, '_inputs', lambda t, ids: (draws.append(len(ids)), inputs(t, ids))[1])
    scorer.score(pool, Identity(), ones[40:45], np.random.default_rng(0), labeled_ids=zeros[:40])
    assert steps == {'vae': 6, 'disc': 3}
    # One example draw to size the VAE, two batches (labeled, unlabeled) per VAE step.
    assert len(draws) == 1 + 3 * 2 * 2


@pytest.mark.parametrize('key', ['vae_steps', 'discriminator_steps'])
def test_step_counts_must_be_positive_integers(key):
    with pytest.raises(ConfigError, match=f'scorer.{key} must be an integer >= 1'):
        SCORERS.build(dict(VAAL, **{key: 0}))
