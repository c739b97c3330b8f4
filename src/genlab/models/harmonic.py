"""The sigmoid MLP VAE of the Lipschitz study ("VAEs: a harmonic perspective") with a fixed encoder std.

The encoder maps a flattened input through three sigmoid layers of width 256 to the posterior mean;
the posterior std ``sigma_enc`` is a hyperparameter, not an output. The decoder mirrors the encoder
and ends in a linear layer (a Gaussian decoder), so the loss is the sum of squared errors plus KL.
``.encoder`` and ``.decoder`` are plain ``nn.Sequential`` stacks of Linear and Sigmoid layers, the
form ``genlab.lipschitz`` accepts; flattening and reshaping happen outside them.

Functions whose bodies sit between ``# BEGIN REFERENCE`` and ``# END REFERENCE`` are graded
exercises of the chapter "harmonic".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def sigmoid_mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``widths`` with a sigmoid after every layer but the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def sample_latent(mu: torch.Tensor, sigma: float | torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """A differentiable sample of ``N(mu, sigma^2 I)``: ``mu + sigma * eps`` with ``eps ~ N(0, I)``."""
    # BEGIN REFERENCE
    if eps is None:
        eps = torch.randn_like(mu)
    # sigma is the standard deviation: scaling eps by sigma**2 would shrink the noise for sigma < 1.
    return mu + sigma * eps
    # END REFERENCE


def fixed_sigma_kl(mu: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2 I) || N(0, I)) summed over the last dimension: one value per row."""
    # BEGIN REFERENCE
    sigma = torch.as_tensor(sigma, dtype=mu.dtype, device=mu.device)
    per_dim = 0.5 * (sigma**2 + mu**2 - 1) - torch.log(sigma)
    return per_dim.expand_as(mu).sum(-1)
    # END REFERENCE


def squared_error(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors per example (the Gaussian decoder's negative log-likelihood up to constants)."""
    return ((x_hat.flatten(1) - x.flatten(1)) ** 2).sum(1)


class HarmonicVAE(nn.Module):
    """MLP VAE with sigmoid hidden layers, a linear Gaussian decoder and a fixed encoder std."""

    def __init__(
        self,
        input_shape: Sequence[int],
        latent: int,
        sigma_enc: float,
        hidden: int = 256,
        depth: int = 3,
    ):
        super().__init__()
        if sigma_enc <= 0:
            raise ValueError(f"sigma_enc must be positive, got {sigma_enc}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.latent = int(latent)
        self.sigma_enc = float(sigma_enc)
        d = math.prod(self.input_shape)
        self.encoder = sigmoid_mlp([d] + [hidden] * depth + [latent])
        self.decoder = sigmoid_mlp([latent] + [hidden] * depth + [d])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean of a batch of inputs (any shape with batch first)."""
        return self.encoder(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder mean, shaped like the inputs."""
        return self.decoder(z).reshape(-1, *self.input_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the reconstruction from a posterior sample and the posterior mean."""
        mu = self.encode(x)
        return self.decode(sample_latent(mu, self.sigma_enc)), mu

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction through the means (the map the attack and the estimators see)."""
        return self.decode(self.encode(x))


def harmonic_loss(
    model: HarmonicVAE, x_in: torch.Tensor, target: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Batch mean of squared error + KL; ``target`` (default ``x_in``) is what the decoder must reproduce."""
    target = x_in if target is None else target
    x_hat, mu = model(x_in)
    sse = squared_error(x_hat, target)
    kl = fixed_sigma_kl(mu, model.sigma_enc)
    return {"loss": (sse + kl).mean(), "sse": sse.mean().detach(), "kl": kl.mean().detach()}


def noisy_step(model: HarmonicVAE, x: torch.Tensor, sigma_n: float, optimizer: torch.optim.Optimizer) -> float:
    """One training step with Gaussian noise of std ``sigma_n`` on the encoder's input; return the loss."""
    # BEGIN REFERENCE
    # Fresh noise for every entry of every example; the decoder still has to reproduce the clean x.
    x_noisy = x + sigma_n * torch.randn_like(x)
    mu = model.encode(x_noisy)
    x_hat = model.decode(sample_latent(mu, model.sigma_enc))
    loss = (squared_error(x_hat, x) + fixed_sigma_kl(mu, model.sigma_enc)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
    # END REFERENCE
