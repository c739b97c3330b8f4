"""Losses of the VAE family: Gaussian KL, reconstruction terms, the beta-ELBO, bits per dimension.

The bodies of graded exercises sit between reference markers (see CONTRIBUTING.md): the student
edition of the package (``make release``) ships those functions without a body.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import overload

import torch
import torch.nn.functional as F


def gaussian_kl(
    mu_q: torch.Tensor,
    logstd_q: torch.Tensor,
    mu_p: torch.Tensor | float = 0.0,
    logstd_p: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, summed over the last dimension.

    ``q = N(mu_q, exp(logstd_q)^2)`` and ``p = N(mu_p, exp(logstd_p)^2)``; the default ``p`` is
    the standard normal prior. Returns one value per row.
    """
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logstd_p = torch.as_tensor(logstd_p, dtype=mu_q.dtype, device=mu_q.device)
    # BEGIN REFERENCE
    var_ratio = torch.exp(2 * (logstd_q - logstd_p))
    mean_term = (mu_q - mu_p) ** 2 * torch.exp(-2 * logstd_p)
    return (logstd_p - logstd_q + 0.5 * (var_ratio + mean_term - 1)).sum(-1)
    # END REFERENCE


def bernoulli_nll(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``target`` under pixel probabilities ``probs``, summed per example."""
    # BEGIN REFERENCE
    return F.binary_cross_entropy(probs.flatten(1), target.flatten(1), reduction="none").sum(1)
    # END REFERENCE


def gaussian_nll(mean: torch.Tensor, target: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under N(mean, std^2 I), summed per example."""
    sq = ((target.flatten(1) - mean.flatten(1)) ** 2).sum(1)
    d = target[0].numel()
    return 0.5 * sq / std**2 + d * (math.log(std) + 0.5 * math.log(2 * math.pi))


def vae_loss(
    recon: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logstd: torch.Tensor,
    beta: float = 1.0,
) -> torch.Tensor:
    """The negative beta-ELBO averaged over the batch: Bernoulli reconstruction + beta * KL to N(0, I)."""
    # BEGIN REFERENCE
    return (bernoulli_nll(recon, x) + beta * gaussian_kl(mu, logstd)).mean()
    # END REFERENCE


@overload
def bits_per_dim(nll: torch.Tensor, img_shape: Sequence[int]) -> torch.Tensor: ...
@overload
def bits_per_dim(nll: float, img_shape: Sequence[int]) -> float: ...
def bits_per_dim(nll: torch.Tensor | float, img_shape: Sequence[int]) -> torch.Tensor | float:
    """Negative log-likelihood in nats per example -> bits per dimension.

    ``img_shape`` is the shape of the batch, batch dimension first (``x.shape``, e.g.
    (N, C, H, W)): the bits are spread over the dimensions of one example, C * H * W, never over N.
    ``nll`` is one value per example (N,) or any shape (a batch mean, say); the result has its shape.
    """
    if isinstance(img_shape, torch.Tensor) or not isinstance(img_shape, Sequence) or len(img_shape) < 2:
        raise ValueError(
            f"img_shape must be the shape of a batch, (N, d1, ..., dK) with the batch size first, got {img_shape!r}"
        )
    if any(not isinstance(d, int) or d <= 0 for d in img_shape):
        raise ValueError(f"img_shape must hold positive integers, got {tuple(img_shape)}")
    # BEGIN REFERENCE
    dims_per_example = math.prod(img_shape[1:])
    return nll * math.log2(math.e) / dims_per_example
    # END REFERENCE


def categorical_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats of integer pixel levels under per-pixel categorical logits.

    ``logits`` (N, K, H, W) hold K unnormalised log-probabilities for every pixel; ``target``
    (N, 1, H, W) (or (N, H, W)) holds the observed levels in ``[0, K)``. Returns one value per
    example, (N,): the cross-entropy summed over the pixels.
    """
    if logits.dim() < 3:
        raise ValueError(f"logits must have shape (N, K, H, W), got {tuple(logits.shape)}")
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must hold integer levels, got {target.dtype}")
    if target.numel() != logits.shape[0] * math.prod(logits.shape[2:]):
        raise ValueError(
            f"target of shape {tuple(target.shape)} does not fit logits of shape {tuple(logits.shape)}: "
            "expected (N, 1, H, W) levels for (N, K, H, W) logits"
        )
    # BEGIN REFERENCE
    levels = target.reshape(logits.shape[0], *logits.shape[2:]).long()
    per_pixel = F.cross_entropy(logits, levels, reduction="none")
    return per_pixel.flatten(1).sum(dim=1)
    # END REFERENCE


def batch_bpd(nats: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Bits per dimension of a batch: the batch mean of ``nats`` (one negative log-likelihood per
    example, in nats) divided by ``ln 2`` times the number of values in ONE image
    (``images.shape[1:]``, e.g. 1 x 28 x 28). Returns a 0-dim tensor.

    The batch-level form of :func:`bits_per_dim`, as the conv_vae chapter's training loop logs it.
    """
    if nats.dim() != 1 or images.dim() < 2 or len(nats) != len(images):
        raise ValueError(
            f"nats must have shape (N,) for images (N, ...), got nats {tuple(nats.shape)} "
            f"and images {tuple(images.shape)}"
        )
    # BEGIN REFERENCE
    return bits_per_dim(nats.mean(), tuple(images.shape))
    # END REFERENCE
