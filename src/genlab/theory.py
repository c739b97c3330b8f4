"""VAE theory (chapter ``vae_theory``): latent-variable models, likelihood estimates, KL, the ELBO.

The references of the chapter's graded exercises (bodies between REFERENCE markers, which the
student edition of the package ships without a body) and the given tools its experiments use:
the score-function (REINFORCE) gradient. The models the experiments run on, with answers known
exactly, are in ``genlab.exact_models``.

Nothing here uses ``torch.distributions``: the exercises ask for the densities written out.
Conventions: Monte-Carlo samples run along dimension 0 (``z`` and ``eps`` are ``(L, ..., D)``);
categorical distributions run along the last dimension (``(..., k)``). All results are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

LOG_2PI = math.log(2 * math.pi)
# How far from one the categories of a distribution may sum (float32 rounding of k = 256 terms
# stays far below; a forgotten normalisation is far above).
PROB_TOL = 1e-3

LogLikelihood = Callable[[torch.Tensor], torch.Tensor]
ScalarFunction = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "categorical_kl",
    "cross_entropy",
    "entropy",
    "importance_log_likelihood",
    "log_importance_weights",
    "mc_elbo",
    "mc_gaussian_kl",
    "mc_log_likelihood",
    "reparam_gradient",
    "sample_categorical",
    "score_function_gradient",
]


# ----------------------------------------------------------------------------- input checks


def _tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_probs(name: str, p: object) -> torch.Tensor:
    """``p`` holds distributions over its last dimension: non-negative, each summing to one."""
    p = _tensor(name, p)
    if not p.is_floating_point():
        raise ValueError(f"{name} must hold floating-point probabilities, got dtype {p.dtype}")
    if p.dim() == 0 or p.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., k) with k >= 1 categories last, got {tuple(p.shape)}")
    if p.numel() == 0:
        return p
    if bool((p < 0).any()):
        raise ValueError(f"{name} must be non-negative; its smallest entry is {p.min().item():.4g}")
    sums = p.sum(-1)
    bad = ~((sums - 1).abs() <= PROB_TOL)  # NaN sums are bad too
    if bool(bad.any()):
        raise ValueError(
            f"{name} must sum to one over its last dimension (the k categories); one of its rows sums to "
            f"{sums[bad].flatten()[0].item():.6g}"
        )
    return p


def _check_pair(p: object, q: object) -> None:
    """Two tensors of distributions that broadcast against each other."""
    p, q = _check_probs("p", p), _check_probs("q", q)
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"p and q must have the same number of categories (last dimension), got {p.shape[-1]} and {q.shape[-1]}"
        )
    try:
        torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError:
        raise ValueError(f"p {tuple(p.shape)} and q {tuple(q.shape)} must broadcast against each other") from None


def _check_samples(name: str, samples: object) -> torch.Tensor:
    samples = _tensor(name, samples)
    if samples.dim() == 0 or samples.shape[0] == 0:
        raise ValueError(f"{name} must hold L >= 1 samples along its first dimension, got shape {tuple(samples.shape)}")
    return samples


def _check_gaussian(mu_name: str, mu: object, scale_name: str, scale: object, eps: object) -> None:
    """``mu`` and ``scale`` (..., D), ``eps`` (L, ..., D), all broadcasting together."""
    mu, scale = _tensor(mu_name, mu), _tensor(scale_name, scale)
    eps = _check_samples("eps", eps)
    if mu.dim() == 0:
        raise ValueError(f"{mu_name} must have shape (..., D), got a 0-dim tensor")
    if scale.shape[-1:] != mu.shape[-1:]:
        raise ValueError(
            f"{scale_name} must have the shape of {mu_name} (..., D = {mu.shape[-1]}), got {tuple(scale.shape)}"
        )
    if eps.dim() < 2 or eps.shape[-1] != mu.shape[-1]:
        raise ValueError(
            f"eps must have shape (L, ..., D) with D = {mu.shape[-1]} (the last dimension of {mu_name}), "
            f"got {tuple(eps.shape)}"
        )
    try:
        torch.broadcast_shapes(mu.shape, scale.shape, eps.shape[1:])
    except RuntimeError:
        raise ValueError(
            f"eps {tuple(eps.shape)} must be (L, ...) followed by a shape that broadcasts with "
            f"{mu_name} {tuple(mu.shape)}"
        ) from None


def _check_values(name: str, values: object, n_samples: int) -> torch.Tensor:
    """What a log-likelihood callable returned: one value per sample along dimension 0."""
    if not isinstance(values, torch.Tensor) or values.dim() == 0 or values.shape[0] != n_samples:
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"{name}(z) must return one value per sample, shape (L = {n_samples}, ...), got {got}")
    return values


# ----------------------------------------------------------------------------- 1 latent-variable models


def sample_categorical(probs: torch.Tensor) -> torch.Tensor:
    """One draw per row of ``probs`` (..., k): integers in [0, k), shape (...), dtype torch.long.

    Every row is an independent categorical distribution; a ValueError names ``probs`` when a row
    does not sum to one.
    """
    _check_probs("probs", probs)
    # BEGIN REFERENCE
    k = probs.shape[-1]
    draws = torch.multinomial(probs.reshape(-1, k), num_samples=1, replacement=True)
    return draws.reshape(probs.shape[:-1])
    # END REFERENCE


# ----------------------------------------------------------------------------- 2-3 likelihood estimates


def mc_log_likelihood(log_px_given_z: LogLikelihood, z: torch.Tensor) -> torch.Tensor:
    """log (1/L) sum_l p(x | z_l) for prior samples ``z`` (L, ..., D), computed stably in log space.

    ``log_px_given_z(z)`` returns log p(x | z_l) with shape (L, ...); the result has shape (...).
    """
    z = _check_samples("z", z)
    # BEGIN REFERENCE
    values = _check_values("log_px_given_z", log_px_given_z(z), z.shape[0])
    return torch.logsumexp(values, dim=0) - math.log(z.shape[0])
    # END REFERENCE


def log_importance_weights(
    log_px_given_z: LogLikelihood, mu: torch.Tensor, logstd: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """log w_l = log p(x | z_l) + log p(z_l) - log q(z_l | x) for z_l = mu + exp(logstd) * eps_l, shape (L, ...).

    The proposal is q(z | x) = N(mu, diag exp(logstd)^2), the prior p(z) = N(0, I); ``mu``, ``logstd``
    (..., D); ``eps`` (L, ..., D). Differentiable in ``mu`` and ``logstd`` (the samples are reparameterised).
    """
    _check_gaussian("mu", mu, "logstd", logstd, eps)
    # BEGIN REFERENCE
    z = mu + torch.exp(logstd) * eps
    log_q = (-0.5 * eps**2 - logstd - 0.5 * LOG_2PI).sum(-1)
    log_prior = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
    return _check_values("log_px_given_z", log_px_given_z(z), eps.shape[0]) + log_prior - log_q
    # END REFERENCE


def importance_log_likelihood(
    log_px_given_z: LogLikelihood, mu: torch.Tensor, logstd: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Importance-sampled log p(x) = log (1/L) sum_l w_l with the weights of ``log_importance_weights``; shape (...)."""
    _check_gaussian("mu", mu, "logstd", logstd, eps)
    # BEGIN REFERENCE
    log_w = log_importance_weights(log_px_given_z, mu, logstd, eps)
    return torch.logsumexp(log_w, dim=0) - math.log(eps.shape[0])
    # END REFERENCE


# ----------------------------------------------------------------------------- 4 information


def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum_x p(x) log p(x) in nats over the last dimension, with 0 log 0 = 0."""
    _check_probs("p", p)
    # BEGIN REFERENCE
    return -torch.special.xlogy(p, p).sum(-1)
    # END REFERENCE


def cross_entropy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """H(p, q) = -sum_x p(x) log q(x) in nats over the last dimension: 0 where p = 0, inf where q = 0 < p."""
    _check_pair(p, q)
    # BEGIN REFERENCE
    return -torch.special.xlogy(p, q).sum(-1)
    # END REFERENCE


def categorical_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_x p(x) log(p(x) / q(x)) in nats over the last dimension (0 log 0 = 0; inf where q = 0 < p)."""
    _check_pair(p, q)
    # BEGIN REFERENCE
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1)
    # END REFERENCE


# ----------------------------------------------------------------------------- 5-6 ELBO and KL estimates


def mc_elbo(log_px_given_z: LogLikelihood, mu: torch.Tensor, logstd: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo ELBO: the mean of the log-weights, (1/L) sum_l [log p(x | z_l) + log p(z_l) - log q(z_l | x)].

    Same arguments as ``log_importance_weights``; the samples are reparameterised, so the estimate is
    differentiable in ``mu`` and ``logstd``. Result (...).
    """
    _check_gaussian("mu", mu, "logstd", logstd, eps)
    # BEGIN REFERENCE
    return log_importance_weights(log_px_given_z, mu, logstd, eps).mean(dim=0)
    # END REFERENCE


def mc_gaussian_kl(
    mu_q: torch.Tensor,
    logstd_q: torch.Tensor,
    eps: torch.Tensor,
    mu_p: torch.Tensor | float = 0.0,
    logstd_p: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Monte-Carlo KL(q || p) = (1/L) sum_l [log q(z_l) - log p(z_l)] with z_l = mu_q + exp(logstd_q) eps_l ~ q.

    Diagonal Gaussians q = N(mu_q, exp(logstd_q)^2) and p = N(mu_p, exp(logstd_p)^2) (default N(0, I));
    ``mu_q``, ``logstd_q`` (..., D); ``eps`` (L, ..., D); result (...), summed over D.
    """
    _check_gaussian("mu_q", mu_q, "logstd_q", logstd_q, eps)
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logstd_p = torch.as_tensor(logstd_p, dtype=mu_q.dtype, device=mu_q.device)
    # BEGIN REFERENCE
    z = mu_q + torch.exp(logstd_q) * eps
    log_q = (-0.5 * eps**2 - logstd_q).sum(-1)
    log_p = (-0.5 * ((z - mu_p) * torch.exp(-logstd_p)) ** 2 - logstd_p).sum(-1)
    return (log_q - log_p).mean(dim=0)  # the 0.5 log(2 pi) of both densities cancel
    # END REFERENCE


# ----------------------------------------------------------------------------- 7 gradients of expectations


def _check_sigma(mu: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> None:
    _check_gaussian("mu", mu, "sigma", sigma, eps)
    if bool((sigma < 0).any()):
        raise ValueError(
            f"sigma is a standard deviation and must be non-negative; its smallest entry is {sigma.min().item():.4g}"
        )


def reparam_gradient(
    f: ScalarFunction, mu: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised estimate of d/d(mu, sigma) E_{z ~ N(mu, sigma^2)}[f(z)] from the samples mu + sigma * eps.

    ``f`` maps z (L, ..., D) to (L, ...), treating the entries of the batch (...) independently;
    ``mu``, ``sigma`` (..., D); ``eps`` (L, ..., D). Returns the gradients of the sample mean
    (1/L) sum_l f(z_l) with respect to ``mu`` and ``sigma``, each of shape (..., D).
    """
    _check_sigma(mu, sigma, eps)
    # BEGIN REFERENCE
    mu_ = mu.detach().clone().requires_grad_(True)
    sigma_ = sigma.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = mu_ + sigma_ * eps
        estimate = f(z).mean(dim=0).sum()  # the sum over the batch keeps each entry's gradient apart
        grad_mu, grad_sigma = torch.autograd.grad(estimate, (mu_, sigma_))
    return grad_mu, grad_sigma
    # END REFERENCE


def score_function_gradient(
    f: ScalarFunction, mu: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score-function (REINFORCE) estimate of d/d(mu, sigma) E_{z ~ N(mu, sigma^2)}[f(z)], same shapes.

    (1/L) sum_l f(z_l) * d log N(z_l; mu, sigma^2) / d(mu, sigma): it needs values of f only, never
    its gradient. With z = mu + sigma * eps the two scores are eps / sigma and (eps^2 - 1) / sigma.
    """
    _check_sigma(mu, sigma, eps)
    with torch.no_grad():
        values = _check_values("f", f(mu + sigma * eps), eps.shape[0]).unsqueeze(-1)
        grad_mu = (values * eps / sigma).mean(dim=0)
        grad_sigma = (values * (eps**2 - 1) / sigma).mean(dim=0)
    shape = torch.broadcast_shapes(mu.shape, sigma.shape, eps.shape[1:])
    return grad_mu.expand(shape), grad_sigma.expand(shape)
