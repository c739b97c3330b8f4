"""Models with exact answers for the chapter ``vae_theory``: a linear-Gaussian latent-variable model
(log p(x) and the posterior in closed form) and per-pixel categorical histograms of images.

Densities are written out (no ``torch.distributions``), as in ``genlab.theory``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genlab.theory import LOG_2PI, LogLikelihood, _tensor

__all__ = ["LinearGaussian", "pixel_histograms", "pixel_log_likelihood"]


# ----------------------------------------------------------------------------- a model with exact answers


@dataclass
class LinearGaussian:
    """z ~ N(0, I_D), x | z ~ N(W z + b, s^2 I_M): a latent-variable model with every answer in closed form.

    Marginally x ~ N(b, W W^T + s^2 I). When the columns of W are orthogonal (``random`` builds
    them so) the posterior p(z | x) is a diagonal Gaussian, the family a VAE's encoder outputs.
    """

    weight: torch.Tensor  # W, (M, D)
    bias: torch.Tensor  # b, (M,)
    noise_std: float  # s

    def __post_init__(self) -> None:
        w, b = _tensor("weight", self.weight), _tensor("bias", self.bias)
        if w.dim() != 2:
            raise ValueError(f"weight must be a matrix (M, D), got shape {tuple(w.shape)}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape (M,) = ({w.shape[0]},), got {tuple(b.shape)}")
        if not (isinstance(self.noise_std, (int, float)) and self.noise_std > 0):
            raise ValueError(f"noise_std must be a positive number, got {self.noise_std!r}")
        self.noise_std = float(self.noise_std)

    @classmethod
    def random(
        cls,
        latent_dim: int,
        data_dim: int,
        *,
        column_norm: float = 2.0,
        noise_std: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> LinearGaussian:
        """A model with orthogonal columns of W, each of norm ``column_norm``, and a random bias.

        Each latent dimension is then pinned down by x to a posterior standard deviation of
        1 / sqrt(1 + column_norm^2 / noise_std^2), whatever the dimension D.
        """
        if not (isinstance(latent_dim, int) and isinstance(data_dim, int) and 1 <= latent_dim <= data_dim):
            raise ValueError(
                f"need integers 1 <= latent_dim <= data_dim, got latent_dim={latent_dim!r}, data_dim={data_dim!r}"
            )
        if column_norm <= 0:
            raise ValueError(f"column_norm must be positive, got {column_norm}")
        a = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))  # a unique, uniformly random orthonormal frame
        bias = torch.randn(data_dim, generator=generator, dtype=torch.float64)
        return cls((column_norm * q).to(dtype), bias.to(dtype), noise_std)

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    @property
    def data_dim(self) -> int:
        return self.weight.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws from the generative story: (x (n, M), z (n, D))."""
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.weight.dtype)
        noise = torch.randn(n, self.data_dim, generator=generator, dtype=self.weight.dtype)
        return z @ self.weight.T + self.bias + self.noise_std * noise, z

    def log_likelihood(self, x: torch.Tensor) -> LogLikelihood:
        """The function z (L, ..., D) -> log p(x | z) (L, ...), for data ``x`` (..., M)."""
        x = _tensor("x", x)
        if x.shape[-1:] != (self.data_dim,):
            raise ValueError(f"x must have shape (..., M = {self.data_dim}), got {tuple(x.shape)}")
        s, m = self.noise_std, self.data_dim

        def log_px_given_z(z: torch.Tensor) -> torch.Tensor:
            mean = z @ self.weight.to(z).T + self.bias.to(z)
            return -0.5 * ((x.to(z) - mean) ** 2).sum(-1) / s**2 - m * (math.log(s) + 0.5 * LOG_2PI)

        return log_px_given_z

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log p(x) = log N(x; b, W W^T + s^2 I) for x (..., M), in float64."""
        x = _tensor("x", x).to(torch.float64)
        if x.shape[-1:] != (self.data_dim,):
            raise ValueError(f"x must have shape (..., M = {self.data_dim}), got {tuple(x.shape)}")
        w, b = self.weight.to(torch.float64), self.bias.to(torch.float64)
        cov = w @ w.T + self.noise_std**2 * torch.eye(self.data_dim, dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        diff = (x - b).unsqueeze(-1)
        white = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1)
        log_det = 2 * torch.log(torch.diagonal(chol)).sum()
        return -0.5 * ((white**2).sum(-1) + log_det + self.data_dim * LOG_2PI)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact p(z | x) = N(mu, diag exp(logstd)^2) for x (..., M): (mu, logstd), each (..., D), float64."""
        x = _tensor("x", x).to(torch.float64)
        w, b = self.weight.to(torch.float64), self.bias.to(torch.float64)
        gram = w.T @ w
        off = gram - torch.diag(torch.diagonal(gram))
        if float(off.abs().max()) > 1e-8 * float(gram.abs().max()):
            raise ValueError("the posterior is a diagonal Gaussian only when the columns of weight are orthogonal")
        var = 1.0 / (1.0 + torch.diagonal(gram) / self.noise_std**2)
        mu = var * ((x - b) @ w) / self.noise_std**2
        return mu, 0.5 * torch.log(var).expand_as(mu)


# ----------------------------------------------------------------------------- images as categorical pixels


def pixel_histograms(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    num_classes: int = 10,
    levels: int = 256,
    pseudo_count: float = 1.0,
) -> torch.Tensor:
    """Per-pixel categorical distributions over ``levels`` grey values, fitted by counting.

    ``images``: integers (N, ...) in [0, levels). Every count gets ``pseudo_count`` added, so no
    value has probability 0. Returns (pixels, levels), or (num_classes, pixels, levels) with
    one histogram per class when integer ``labels`` (N,) are given.
    """
    images = _tensor("images", images)
    if images.is_floating_point() or images.dim() < 2:
        raise ValueError(
            f"images must be integer grey values of shape (N, ...), got {images.dtype} {tuple(images.shape)}"
        )
    if pseudo_count <= 0:
        raise ValueError(f"pseudo_count must be positive, got {pseudo_count}")
    flat = images.reshape(images.shape[0], -1).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= levels):
        raise ValueError(f"images must hold values in [0, {levels}), found {int(flat.min())}..{int(flat.max())}")
    pixels = flat.shape[1]
    if labels is None:
        group = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
        groups = 1
    else:
        group, groups = _tensor("labels", labels).long().to(flat.device), num_classes
        if group.shape != (flat.shape[0],) or (group.numel() and (group.min() < 0 or group.max() >= groups)):
            raise ValueError(
                f"labels must be (N,) = ({flat.shape[0]},) integers in [0, {groups}), got {tuple(group.shape)}"
            )
    index = (group[:, None] * pixels + torch.arange(pixels, device=flat.device)) * levels + flat
    counts = torch.bincount(index.flatten(), minlength=groups * pixels * levels).double()
    counts = counts.reshape(groups, pixels, levels) + pseudo_count
    probs = counts / counts.sum(-1, keepdim=True)
    return probs[0] if labels is None else probs


def pixel_log_likelihood(probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """log p(x) = sum over pixels of log probs[pixel, x_pixel] for independent categorical pixels.

    ``probs``: (..., pixels, levels); ``images``: integers (N, ...) with ``pixels`` values each.
    Returns (..., N).
    """
    probs, images = _tensor("probs", probs), _tensor("images", images)
    flat = images.reshape(images.shape[0], -1).long().to(probs.device)
    if probs.dim() < 2 or flat.shape[1] != probs.shape[-2]:
        raise ValueError(
            f"probs must be (..., pixels, levels) with pixels = {flat.shape[1]} (the images' size), "
            f"got {tuple(probs.shape)}"
        )
    log_probs = torch.log(probs)
    index = flat.T.expand(*probs.shape[:-2], *flat.T.shape)  # (..., pixels, N)
    return log_probs.gather(-1, index).sum(-2)
