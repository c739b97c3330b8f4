"""MLP auto-encoders of the chapter "From autoencoders to conditional VAEs".

The encoder maps ``input_size -> 256 -> 64 -> out`` with ReLUs; the decoder mirrors it and ends
in a sigmoid, so its outputs are Bernoulli pixel probabilities. A VAE encoder has ``out = 2 * nz``
(mean and log-std); a conditional model adds the one-hot label to both inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    """Flatten, then ``input_size -> 256 -> 64 -> out_size`` with ReLUs between."""

    def __init__(self, input_size: int, out_size: int):
        super().__init__()
        # BEGIN REFERENCE
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(input_size, 256),
            nn.ReLU(),
            nn.Linear(256, 64),
            nn.ReLU(),
            nn.Linear(64, out_size),
        )
        # END REFERENCE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """``in_size -> 64 -> 256 -> output_size`` with ReLUs and a sigmoid output."""

    def __init__(self, in_size: int, output_size: int):
        super().__init__()
        # BEGIN REFERENCE
        self.net = nn.Sequential(
            nn.Linear(in_size, 64),
            nn.ReLU(),
            nn.Linear(64, 256),
            nn.ReLU(),
            nn.Linear(256, output_size),
            nn.Sigmoid(),
        )
        # END REFERENCE

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def reparameterize(mu: torch.Tensor, logstd: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``z ~ N(mu, exp(logstd)^2)`` as a differentiable function of ``mu`` and ``logstd``."""
    # BEGIN REFERENCE
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(logstd) * eps
    # END REFERENCE


def one_hot(labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Float one-hot rows for integer ``labels`` (the conditioning vector of a CVAE)."""
    # BEGIN REFERENCE
    return F.one_hot(labels.long(), num_classes).float()
    # END REFERENCE


def condition(h: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Append the one-hot code of ``labels`` to the flattened features ``h``: ``(N, D + num_classes)``.

    The features come first, the label code last; this is how a CVAE conditions both its encoder
    input (an image) and its decoder input (a latent code).
    """
    # BEGIN REFERENCE
    h = h.flatten(1)
    return torch.cat([h, one_hot(labels, num_classes).to(device=h.device, dtype=h.dtype)], dim=1)
    # END REFERENCE


class AutoEncoder(nn.Module):
    """Deterministic auto-encoder: ``x -> z -> x_hat``."""

    def __init__(self, nz: int, input_size: int = 784):
        super().__init__()
        self.nz = nz
        self.encoder = Encoder(input_size, nz)
        self.decoder = Decoder(nz, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class VAE(nn.Module):
    """Variational auto-encoder with a diagonal Gaussian posterior and a Bernoulli decoder."""

    def __init__(self, nz: int, input_size: int = 784):
        super().__init__()
        self.nz = nz
        self.encoder = Encoder(input_size, 2 * nz)
        self.decoder = Decoder(nz, input_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logstd = self.encoder(x).chunk(2, dim=1)
        return mu, logstd

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the reconstruction probabilities, the posterior mean and its log-std."""
        mu, logstd = self.encode(x)
        return self.decoder(reparameterize(mu, logstd)), mu, logstd

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.nz, device=next(self.parameters()).device)
        return self.decoder(z)


class CVAE(nn.Module):
    """Conditional VAE: the one-hot label joins the encoder's input and the decoder's latent.

    Not a subclass of :class:`VAE`: every method takes the labels too, so a CVAE cannot stand
    where a VAE is expected.
    """

    def __init__(self, nz: int, input_size: int = 784, num_classes: int = 10):
        super().__init__()
        self.nz, self.num_classes = nz, num_classes
        self.encoder = Encoder(input_size + num_classes, 2 * nz)
        self.decoder = Decoder(nz + num_classes, input_size)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logstd = self.encoder(condition(x, y, self.num_classes)).chunk(2, dim=1)
        return mu, logstd

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(condition(z, y, self.num_classes))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logstd = self.encode(x, y)
        return self.decode(reparameterize(mu, logstd), y), mu, logstd

    @torch.no_grad()
    def sample(self, y: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(y), self.nz, device=next(self.parameters()).device)
        return self.decode(z, y.to(z.device))
