"""VAAL (Sinha et al., 2019): a VAE and a discriminator trained on labeled versus unlabeled.

Each round, from scratch: a VAE learns a latent space of the task's inputs from labeled and
unlabeled samples (reconstruction + β·KL), while a discriminator on the latent means learns to
tell labeled (1) from unlabeled (0) and the VAE is trained adversarially to make every sample
look labeled. Unlabeled samples the discriminator is surest are unlabeled are the ones least
represented by the labeled set: the score is ``1 − D(μ(x))``.

The networks are independent of the task model (as in the paper); only the inputs come from
the task (``pool_batches``). The scorer needs the labeled ids (``labeled_ids`` of
:meth:`~saal_tasks.core.scorer.BaseScorer.score`, which the loop passes); the unlabeled
samples are the task's other samples.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..core.scorer import BaseScorer, ScoreResult
from ..core.task import BaseTask
from ..registry import MODELS, SCORERS


@MODELS.register_module()
class MLPVAE(nn.Module):
    """A VAE over flattened inputs (small images such as 8×8 digits).

    Args:
        input_shape: Shape of one input, e.g. ``(1, 8, 8)``.
        hidden: Width of the hidden layers.
        latent_dim: Size of the latent code.
    """

    def __init__(self, input_shape: tuple[int, ...], hidden: int = 256,
                 latent_dim: int = 32) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        size = math.prod(self.input_shape)
        self.encoder = nn.Sequential(nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU())
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, size))
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)``, each ``[B, latent_dim]``, of inputs ``[B, *input_shape]``."""
        h = self.encoder(x.flatten(1))
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, *input_shape]`` of codes ``[B, latent_dim]``."""
        return self.decoder(z).view(-1, *self.input_shape)


@MODELS.register_module()
class ConvVAE(nn.Module):
    """A convolutional VAE for square images whose side is divisible by 8 (32×32).

    Args:
        input_shape: ``(C, H, W)`` of one input.
        width: Channels of the first conv (doubling twice).
        latent_dim: Size of the latent code.
    """

    def __init__(self, input_shape: tuple[int, int, int], width: int = 64,
                 latent_dim: int = 64) -> None:
        super().__init__()
        c, h, w = input_shape
        if h % 8 or w % 8:
            raise ConfigError(f'ConvVAE needs H and W divisible by 8, got {input_shape}: use '
                             'MLPVAE')
        self.input_shape = (c, h, w)
        self.latent_dim = latent_dim

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU()]

        self.encoder = nn.Sequential(*down(c, width), *down(width, 2 * width),
                                     *down(2 * width, 4 * width), nn.Flatten(1))
        self._grid = (4 * width, h // 8, w // 8)
        flat = math.prod(self._grid)
        self.mu = nn.Linear(flat, latent_dim)
        self.logvar = nn.Linear(flat, latent_dim)
        self.project = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(*up(4 * width, 2 * width), *up(2 * width, width),
                                     nn.ConvTranspose2d(width, c, 4, 2, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.project(z).view(-1, *self._grid))


class Discriminator(nn.Module):
    """MLP on latent codes; the logit of "labeled"."""

    def __init__(self, latent_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` for codes ``[B, latent_dim]``."""
        return self.net(z).squeeze(1)


def vae_loss(vae: nn.Module, x: torch.Tensor, beta: float,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction MSE + β·KL of a batch, and the latent means it used.

    As in VAAL's release: the MSE is averaged over every element of the batch, while the KL
    divergence to N(0, I) is *summed* over the batch and the latent dimensions. With β = 1 the
    KL term therefore weighs ``B × latent_dim`` times more than a per-element mean would.

    Args:
        vae: The VAE (``encode``/``decode``).
        x: Inputs ``[B, ...]``.
        beta: Weight of the KL term.
        generator: Draws the reparameterisation noise.

    Returns:
        ``(loss, mu)``: scalar and ``[B, latent_dim]``.
    """
    mu, logvar = vae.encode(x)
    noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
    z = mu + noise * torch.exp(0.5 * logvar)
    recon = F.mse_loss(vae.decode(z), x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return recon + beta * kl, mu


@SCORERS.register_module()
class VAALScorer(BaseScorer):
    """VAAL's acquisition score ``1 − D(μ(x))``, networks retrained every round.

    The networks are trained on the labeled ids passed to :meth:`score` (``labeled_ids``)
    against the task's other samples, ``setdiff(task.sample_ids(), labeled_ids)`` (sorted).

    Args:
        vae: Config of the VAE (``MLPVAE`` or ``ConvVAE``; ``input_shape`` is filled in).
        discriminator_hidden: Width of the discriminator.
        iterations: Training iterations per round; each makes ``vae_steps`` VAE steps and
            ``discriminator_steps`` discriminator steps, every step on one labeled and one
            unlabeled batch.
        batch_size: Samples per batch (each of labeled and unlabeled).
        lr_vae: Adam learning rate of the VAE (paper: 5e-4).
        lr_discriminator: Adam learning rate of the discriminator (paper: 5e-4).
        beta: Weight of the KL term (paper: 1).
        adversary_weight: Weight of the VAE's adversarial term (paper: 1).
        vae_steps: VAE steps per iteration (release: 2).
        discriminator_steps: Discriminator steps per iteration (release: 1).
    """

    #: Options built from component dicts, and their registries (checked config boundary).
    config_children = {'vae': 'MODELS'}
    #: Options this class fills in when it builds those children (not required in configs).
    config_injected = {'vae': ('input_shape',)}

    def __init__(self, vae: dict | None = None, discriminator_hidden: int = 512,
                 iterations: int = 300, batch_size: int = 64, lr_vae: float = 5e-4,
                 lr_discriminator: float = 5e-4, beta: float = 1.0,
                 adversary_weight: float = 1.0, vae_steps: int = 2,
                 discriminator_steps: int = 1) -> None:
        super().__init__(log_interval=10_000)
        for key, value in (('iterations', iterations), ('batch_size', batch_size),
                           ('vae_steps', vae_steps),
                           ('discriminator_steps', discriminator_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f'scorer.{key} must be an integer >= 1, got {value!r}')
        self.vae_steps = vae_steps
        self.discriminator_steps = discriminator_steps
        self.vae_cfg = dict(vae or dict(type='MLPVAE'))
        self.discriminator_hidden = discriminator_hidden
        self.iterations = iterations
        self.batch_size = batch_size
        self.lr_vae = lr_vae
        self.lr_discriminator = lr_discriminator
        self.beta = beta
        self.adversary_weight = adversary_weight

    def _inputs(self, task: BaseTask, ids: np.ndarray) -> torch.Tensor:
        return next(iter(task.pool_batches(ids, len(ids))))[1]

    def fit(self, task: BaseTask, labeled: np.ndarray, unlabeled: np.ndarray,
            rng: np.random.Generator) -> tuple[nn.Module, Discriminator]:
        """Train a fresh VAE and discriminator.

        Args:
            task: Gives the inputs (``pool_batches``).
            labeled: Labeled ids, ``[L]``.
            unlabeled: Unlabeled ids, ``[U]``.
            rng: Generator of the batches and of the networks' seed.

        Returns:
            ``(vae, discriminator)``, both in eval mode.
        """
        example = self._inputs(task, labeled[:1])
        seed = int(rng.integers(2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = MODELS.build({**self.vae_cfg, 'input_shape': tuple(example.shape[1:])})
            disc = Discriminator(vae.latent_dim, self.discriminator_hidden)
        vae.to(device=example.device, dtype=example.dtype)
        disc.to(device=example.device, dtype=example.dtype)
        opt_vae = torch.optim.Adam(vae.parameters(), lr=self.lr_vae)
        opt_disc = torch.optim.Adam(disc.parameters(), lr=self.lr_discriminator)
        generator = torch.Generator().manual_seed(seed)
        vae.train()
        disc.train()
        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            x_l = self._inputs(task, rng.choice(labeled, min(self.batch_size, len(labeled)),
                                                replace=False))
            x_u = self._inputs(task, rng.choice(unlabeled,
                                                min(self.batch_size, len(unlabeled)),
                                                replace=False))
            return x_l, x_u

        def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

        for _ in range(self.iterations):
            x_l, x_u = draw()
            # The release's schedule: `vae_steps` VAE steps, each after the first on fresh
            # batches, then `discriminator_steps` discriminator steps starting on the last
            # batches the VAE saw. Its BCE terms are the *sum* of the labeled and the
            # unlabeled means (not one mean over both), kept here for the same weights.
            for step in range(self.vae_steps):
                if step:
                    x_l, x_u = draw()
                # Reconstruct both sets and make both look labeled to the discriminator.
                loss_l, mu_l = vae_loss(vae, x_l, self.beta, generator)
                loss_u, mu_u = vae_loss(vae, x_u, self.beta, generator)
                adversarial = bce(disc(mu_l), 1.0) + bce(disc(mu_u), 1.0)
                opt_vae.zero_grad()
                (loss_l + loss_u + self.adversary_weight * adversarial).backward()
                opt_vae.step()
            for step in range(self.discriminator_steps):
                if step:
                    x_l, x_u = draw()
                # On the (fixed) latent means: labeled 1, unlabeled 0.
                with torch.no_grad():
                    mu_l, _ = vae.encode(x_l)
                    mu_u, _ = vae.encode(x_u)
                opt_disc.zero_grad()
                (bce(disc(mu_l), 1.0) + bce(disc(mu_u), 0.0)).backward()
                opt_disc.step()
        return vae.eval(), disc.eval()

    def _score(self, task, model, sample_ids, rng, labeled_ids) -> ScoreResult:
        if labeled_ids is None:
            raise ConfigError(f'{type(self).__name__} needs the labeled ids (it trains on '
                              'labeled versus unlabeled samples): the loop passes them; outside '
                              'the loop call score(..., labeled_ids=...)')
        # Sorted, as the pool state gives them: the draws of fit() depend on the order.
        labeled = np.unique(np.asarray(labeled_ids, dtype=np.int64))
        unlabeled = np.setdiff1d(np.asarray(task.sample_ids(), dtype=np.int64), labeled)
        vae, disc = self.fit(task, labeled, unlabeled, rng)
        scores = []
        with torch.no_grad():
            for _, inputs in task.pool_batches(sample_ids, 512):
                mu, _ = vae.encode(inputs)
                scores.append((1.0 - torch.sigmoid(disc(mu))).double().cpu().numpy())
        return ScoreResult(sample_ids=np.asarray(sample_ids, dtype=np.int64),
                           scores=np.concatenate(scores) if scores else np.zeros(0))
