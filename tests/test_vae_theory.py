"""Unit tests of genlab.theory, genlab.exact_models and genlab.losses.bits_per_dim (chapter vae_theory),
and of the chapter's hidden-test checks run in-process: the reference passes, correct answers written in other styles
pass, and each typical mistake fails with a message that points at the fix."""

from __future__ import annotations

import math

import pytest
import torch

from autograder import probing
from autograder.checks import vae_theory as checks
from genlab import exact_models, theory
from genlab.losses import bits_per_dim, gaussian_kl
from tests.verdicts import Notebook, coverage_gaps, unstable_verdicts

LOG_2PI = math.log(2 * math.pi)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _model(d: int = 3, m: int = 5, seed: int = 0) -> exact_models.LinearGaussian:
    return exact_models.LinearGaussian.random(d, m, generator=torch.Generator().manual_seed(seed))


# ============================================================================= genlab.theory


def test_sample_categorical_frequencies_shape_and_dtype():
    probs = torch.tensor([[0.2, 0.0, 0.8], [0.5, 0.5, 0.0]])
    draws = theory.sample_categorical(probs.expand(50_000, 2, 3).contiguous())
    assert draws.shape == (50_000, 2) and draws.dtype == torch.long
    freq = torch.nn.functional.one_hot(draws, 3).double().mean(0)
    assert torch.allclose(freq, probs.double(), atol=0.01)
    assert freq[0, 1] == 0 and freq[1, 2] == 0, "a category of probability 0 came up"


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([0.5, 0.4]), "probs must sum to one"),
        (torch.tensor([1.2, -0.2]), "probs must be non-negative"),
        (torch.tensor([0.5, float("nan")]), "probs must sum to one"),
        (torch.tensor([1, 0]), "probs must hold floating-point"),
        (torch.tensor(1.0), r"probs must have shape \(\.\.\., k\)"),
    ],
)
def test_sample_categorical_rejects_bad_probs(bad, match):
    with pytest.raises(ValueError, match=match):
        theory.sample_categorical(bad)


def test_mc_log_likelihood_is_stable_and_exact_for_equal_terms():
    values = torch.tensor([-1000.0, -1001.0, -1002.0], dtype=torch.float64)
    z = torch.zeros(3, 2, dtype=torch.float64)
    got = theory.mc_log_likelihood(lambda _z: values, z)
    expected = -1000 + math.log((1 + math.exp(-1) + math.exp(-2)) / 3)
    assert math.isclose(float(got), expected, rel_tol=1e-12)
    assert torch.isfinite(got)


def test_mc_log_likelihood_converges_on_the_linear_gaussian_model():
    model = _model(2, 4)
    x, _ = model.sample(3, torch.Generator().manual_seed(1))
    z = torch.randn(400_000, 3, 2, dtype=torch.float64)
    got = theory.mc_log_likelihood(model.log_likelihood(x), z)
    assert torch.allclose(got, model.log_evidence(x), atol=0.02)


def test_mc_log_likelihood_names_a_bad_log_likelihood():
    with pytest.raises(ValueError, match="log_px_given_z"):
        theory.mc_log_likelihood(lambda z: z.sum(), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="z must hold L >= 1 samples"):
        theory.mc_log_likelihood(lambda z: z.sum(-1), torch.zeros(0, 2))


def test_importance_sampling_with_the_exact_posterior_has_no_error():
    model = _model(4, 6)
    x, _ = model.sample(5, torch.Generator().manual_seed(2))
    mu, logstd = model.posterior(x)
    eps = torch.randn(3, 5, 4, dtype=torch.float64)
    got = theory.importance_log_likelihood(model.log_likelihood(x), mu, logstd, eps)
    assert torch.allclose(got, model.log_evidence(x), atol=1e-10)


def test_importance_sampling_with_the_prior_as_proposal_is_plain_monte_carlo():
    model = _model(2, 3)
    x, _ = model.sample(1, torch.Generator().manual_seed(3))
    eps = torch.randn(50, 1, 2, dtype=torch.float64)
    zeros = torch.zeros(1, 2, dtype=torch.float64)
    got = theory.importance_log_likelihood(model.log_likelihood(x), zeros, zeros, eps)
    assert torch.allclose(got, theory.mc_log_likelihood(model.log_likelihood(x), eps))


@pytest.mark.parametrize("fn", [theory.importance_log_likelihood, theory.mc_elbo])
def test_gaussian_estimators_name_arguments_that_do_not_fit(fn):
    log_lik = lambda z: z.sum(-1)
    mu = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"eps must have shape \(L, \.\.\., D\) with D = 3"):
        fn(log_lik, mu, mu, torch.zeros(10, 4, 2))
    with pytest.raises(ValueError, match="logstd must have the shape of mu"):
        fn(log_lik, mu, torch.zeros(4, 2), torch.zeros(10, 4, 3))
    with pytest.raises(ValueError, match="eps .* must be .* broadcasts with mu"):
        fn(log_lik, mu, mu, torch.zeros(10, 5, 3))
    with pytest.raises(ValueError, match="log_px_given_z"):
        fn(lambda z: z.sum(), mu, mu, torch.zeros(10, 4, 3))


def test_entropy_cross_entropy_and_kl_known_values():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.25, 0.25, 0.5])
    assert math.isclose(float(theory.entropy(p)), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(theory.entropy(torch.full((8,), 1 / 8))), math.log(8), rel_tol=1e-6)
    assert float(theory.entropy(torch.tensor([0.0, 1.0]))) == 0.0
    assert math.isclose(float(theory.cross_entropy(p, q)), math.log(4), rel_tol=1e-6)
    assert math.isclose(float(theory.categorical_kl(p, q)), math.log(2), rel_tol=1e-6)
    assert float(theory.categorical_kl(q, p)) == math.inf
    assert float(theory.cross_entropy(q, p)) == math.inf
    assert float(theory.categorical_kl(p, p)) == 0.0


def test_kl_is_cross_entropy_minus_entropy_and_broadcasts():
    p = torch.softmax(torch.randn(7, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(4, 7, dtype=torch.float64), -1)
    kl = theory.categorical_kl(p, q)
    assert kl.shape == (4,) and (kl > 0).all()
    assert torch.allclose(kl, theory.cross_entropy(p, q) - theory.entropy(p))


@pytest.mark.parametrize("fn", [theory.cross_entropy, theory.categorical_kl])
def test_pairs_of_distributions_are_checked(fn):
    good = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="q must sum to one"):
        fn(good, torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="p must be non-negative"):
        fn(torch.tensor([1.5, -0.5]), good)
    with pytest.raises(ValueError, match="same number of categories"):
        fn(good, torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="must broadcast"):
        fn(torch.full((3, 2), 0.5), torch.full((4, 2), 0.5))
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        fn(good, [0.5, 0.5])


def test_elbo_equals_log_evidence_at_the_posterior_and_its_gap_is_the_kl():
    model = _model(3, 5)
    x, _ = model.sample(2, torch.Generator().manual_seed(4))
    mu, logstd = model.posterior(x)
    log_px = model.log_evidence(x)
    exact = theory.mc_elbo(model.log_likelihood(x), mu, logstd, torch.randn(5, 2, 3, dtype=torch.float64))
    assert torch.allclose(exact, log_px, atol=1e-10)
    q_mu, q_logstd = 0.5 * mu, logstd + 0.4
    elbo = theory.mc_elbo(model.log_likelihood(x), q_mu, q_logstd, torch.randn(200_000, 2, 3, dtype=torch.float64))
    gap = gaussian_kl(q_mu, q_logstd, mu, logstd)
    assert (elbo < log_px).all()
    assert torch.allclose(log_px - elbo, gap, atol=0.02)


def test_elbo_is_differentiable_in_mu_and_logstd():
    model = _model(2, 3)
    x, _ = model.sample(1, torch.Generator().manual_seed(5))
    mu = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    logstd = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    theory.mc_elbo(model.log_likelihood(x), mu, logstd, torch.randn(100, 1, 2, dtype=torch.float64)).sum().backward()
    assert mu.grad is not None and logstd.grad is not None and mu.grad.abs().sum() > 0


def test_mc_gaussian_kl_agrees_with_the_closed_form():
    f64 = dict(dtype=torch.float64)
    mu_q, logstd_q = torch.tensor([0.5, -1.0, 2.0], **f64), torch.tensor([0.2, -0.5, 0.0], **f64)
    mu_p, logstd_p = torch.tensor([0.0, 1.0, 1.0], **f64), torch.tensor([0.3, 0.0, -0.2], **f64)
    eps = torch.randn(400_000, 3, **f64)
    got_prior = theory.mc_gaussian_kl(mu_q, logstd_q, eps)
    assert math.isclose(float(got_prior), float(gaussian_kl(mu_q, logstd_q)), abs_tol=0.01)
    got = theory.mc_gaussian_kl(mu_q, logstd_q, eps, mu_p, logstd_p)
    assert math.isclose(float(got), float(gaussian_kl(mu_q, logstd_q, mu_p, logstd_p)), abs_tol=0.02)
    with pytest.raises(ValueError, match="eps must have shape"):
        theory.mc_gaussian_kl(mu_q, logstd_q, torch.zeros(3))


def test_reparam_and_score_function_gradients_are_unbiased():
    f = lambda z: (z**2).sum(-1)
    mu = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    sigma = torch.tensor([[1.0, 0.5], [0.3, 2.0]], dtype=torch.float64)
    eps = torch.randn(400_000, 2, 2, dtype=torch.float64)
    g_mu, g_sigma = theory.reparam_gradient(f, mu, sigma, eps)
    assert g_mu.shape == g_sigma.shape == (2, 2)
    assert torch.allclose(g_mu, 2 * mu, atol=0.02) and torch.allclose(g_sigma, 2 * sigma, atol=0.02)
    s_mu, s_sigma = theory.score_function_gradient(f, mu, sigma, eps)
    assert torch.allclose(s_mu, 2 * mu, atol=0.1) and torch.allclose(s_sigma, 2 * sigma, atol=0.2)


def test_reparam_gradient_of_a_linear_function_is_exact_and_per_entry():
    w = torch.tensor([1.0, -2.0, 3.0])
    mu, sigma = torch.randn(4, 3), torch.rand(4, 3)
    g_mu, g_sigma = theory.reparam_gradient(lambda z: z @ w, mu, sigma, torch.randn(7, 4, 3))
    assert torch.allclose(g_mu, w.expand(4, 3))  # one gradient per batch entry, not divided by the batch size
    with torch.no_grad():  # works inside no_grad too
        g_mu, _ = theory.reparam_gradient(lambda z: z @ w, mu, sigma, torch.randn(7, 4, 3))
    assert torch.allclose(g_mu, w.expand(4, 3))


@pytest.mark.parametrize("fn", [theory.reparam_gradient, theory.score_function_gradient])
def test_gradient_estimators_reject_a_negative_sigma(fn):
    with pytest.raises(ValueError, match="sigma is a standard deviation and must be non-negative"):
        fn(lambda z: z.sum(-1), torch.zeros(2), torch.tensor([1.0, -0.1]), torch.randn(5, 2))


def test_linear_gaussian_identities():
    model = _model(3, 5)
    x, _ = model.sample(4, torch.Generator().manual_seed(6))
    mu, logstd = model.posterior(x)
    z = torch.randn(9, 4, 3, dtype=torch.float64)
    log_joint = model.log_likelihood(x)(z) + (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
    log_post = (-0.5 * ((z - mu) / logstd.exp()) ** 2 - logstd - 0.5 * LOG_2PI).sum(-1)
    assert torch.allclose(log_joint - log_post, model.log_evidence(x).expand(9, 4), atol=1e-10)  # Bayes' rule
    std = 1 / math.sqrt(1 + 2.0**2)  # column_norm 2, noise 1
    assert torch.allclose(logstd.exp(), torch.full_like(logstd, std))


def test_linear_gaussian_evidence_by_quadrature_in_one_dimension():
    model = exact_models.LinearGaussian(
        torch.tensor([[1.5], [-0.5]], dtype=torch.float64), torch.tensor([0.3, 0.1], dtype=torch.float64), 0.7
    )
    x = torch.tensor([1.0, -0.2], dtype=torch.float64)
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64).unsqueeze(-1)
    integrand = model.log_likelihood(x)(grid) - 0.5 * grid[:, 0] ** 2 - 0.5 * LOG_2PI
    quad = torch.logsumexp(integrand, 0) + math.log(float(grid[1, 0] - grid[0, 0]))
    assert math.isclose(float(model.log_evidence(x)), float(quad), abs_tol=1e-8)


def test_linear_gaussian_checks_its_arguments():
    with pytest.raises(ValueError, match="bias must have shape"):
        exact_models.LinearGaussian(torch.zeros(3, 2), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="noise_std must be a positive number"):
        exact_models.LinearGaussian(torch.zeros(3, 2), torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match="latent_dim <= data_dim"):
        exact_models.LinearGaussian.random(5, 3)
    skew = exact_models.LinearGaussian(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="columns of weight are orthogonal"):
        skew.posterior(torch.zeros(2))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., M = 5\)"):
        _model().log_likelihood(torch.zeros(4))


def test_pixel_histograms_and_log_likelihood():
    images = torch.randint(0, 4, (30, 1, 2, 3), dtype=torch.uint8)
    labels = torch.arange(30) % 3
    probs = exact_models.pixel_histograms(images, levels=4)
    assert probs.shape == (6, 4) and torch.allclose(probs.sum(-1), torch.ones(6, dtype=torch.float64))
    by_class = exact_models.pixel_histograms(images, labels, num_classes=3, levels=4, pseudo_count=0.5)
    assert by_class.shape == (3, 6, 4)
    ll = exact_models.pixel_log_likelihood(by_class, images[:5])
    assert ll.shape == (3, 5)
    manual = sum(math.log(by_class[1, m, int(v)]) for m, v in enumerate(images[2].flatten()))
    assert math.isclose(float(ll[1, 2]), manual, rel_tol=1e-12)
    with pytest.raises(ValueError, match=r"images must hold values in \[0, 4\)"):
        exact_models.pixel_histograms(images + 4, levels=4)
    with pytest.raises(ValueError, match="probs must be"):
        exact_models.pixel_log_likelihood(probs, torch.zeros(2, 7, dtype=torch.long))


def test_bits_per_dim():
    nll = torch.tensor([784 * math.log(2), 2 * 784 * math.log(2)])
    assert torch.allclose(bits_per_dim(nll, (2, 1, 28, 28)), torch.tensor([1.0, 2.0]))
    assert torch.allclose(bits_per_dim(nll, torch.Size([2, 784])), torch.tensor([1.0, 2.0]))
    assert math.isclose(bits_per_dim(3072 * math.log(2) * 8, [64, 3, 32, 32]), 8.0)
    for bad in [(784,), 784, torch.tensor([2, 784]), (2, 0, 28), (2, 1.5)]:
        with pytest.raises(ValueError, match="img_shape must"):
            bits_per_dim(nll, bad)


# ============================================================================= the checks, in-process
#
# Correct answers in several styles (written from the exercise texts) pass, and each wrong answer
# fails with a message that points at the fix, for every seed of the sweep (tests/verdicts.py).


def _rows_sum_to_one(probs):
    if ((probs.sum(-1) - 1).abs() > 1e-3).any():
        raise ValueError("probs must sum to one over the last dimension")


# ----------------------------------------------------------------------------- sample_categorical


def categorical_inverse_cdf(probs):
    _rows_sum_to_one(probs)
    u = torch.rand(*probs.shape[:-1], 1, dtype=probs.dtype, device=probs.device)
    return (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)


def categorical_gumbel_max(probs):
    _rows_sum_to_one(probs)
    gumbel = -torch.log(-torch.log(torch.rand_like(probs).clamp_min(1e-30)))
    return torch.argmax(torch.log(probs) + gumbel, dim=-1)


def categorical_searchsorted(probs):
    if not torch.isclose(probs.sum(-1), torch.ones_like(probs[..., 0]), rtol=0, atol=1e-3).all():
        raise ValueError(f"probs: every row must sum to one, got sums {probs.sum(-1).flatten()[:3].tolist()}...")
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), device=cdf.device, dtype=cdf.dtype)
    return (
        torch.searchsorted(cdf.contiguous(), u * cdf[..., -1:], right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    )


def categorical_multinomial_rows(probs):
    k = probs.shape[-1]
    flat = probs.reshape(-1, k)
    worst = (flat.sum(1) - 1).abs().max()
    if worst > 1e-3:
        raise ValueError(f"the rows of probs must sum to 1 (one is {worst.item():.3g} off)")
    return torch.multinomial(flat, 1).view(probs.shape[:-1])


def categorical_numpy_check(probs):
    import numpy as np

    sums = probs.sum(-1).detach().cpu().numpy()
    if np.any(np.abs(sums - 1) > 1e-3):
        raise ValueError("the rows of probs must sum to one")
    u = torch.rand_like(probs[..., :1])
    return (probs.cumsum(-1) < u).long().sum(-1).clamp(max=probs.shape[-1] - 1)


def categorical_one_number_per_image(probs):
    _rows_sum_to_one(probs)
    u = torch.rand(probs.shape[0], *[1] * (probs.dim() - 1), dtype=probs.dtype, device=probs.device)
    return (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)


def categorical_one_number_per_pixel_for_the_batch(probs):
    _rows_sum_to_one(probs)
    u = torch.rand(*probs.shape[1:-1], 1, dtype=probs.dtype, device=probs.device)
    return (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)


def categorical_off_by_one(probs):
    _rows_sum_to_one(probs)
    u = torch.rand(*probs.shape[:-1], 1, dtype=probs.dtype, device=probs.device)
    return (probs.cumsum(-1) < u).sum(-1).add(1).clamp(max=probs.shape[-1] - 1)


def categorical_without_the_check(probs):
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(probs.shape[:-1])


def categorical_float(probs):
    return categorical_inverse_cdf(probs).float()


def categorical_distributions(probs):
    _rows_sum_to_one(probs)
    return torch.distributions.Categorical(probs=probs).sample()


def categorical_default_device(probs):
    _rows_sum_to_one(probs)
    u = torch.rand(*probs.shape[:-1], 1, dtype=probs.dtype)
    return (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)


def categorical_exact_sums(probs):
    """Too strict: rows that rounding leaves 5e-4 off are refused."""
    if not torch.allclose(probs.sum(-1), torch.ones_like(probs[..., 0])):
        raise ValueError("probs must sum to one")
    return categorical_inverse_cdf(probs)


def categorical_checks_the_mean_row(probs):
    """A batch with one bad row among good ones passes: only the mean of the sums is checked."""
    if abs(probs.sum(-1).mean().item() - 1) > 1e-3:
        raise ValueError("probs must sum to one")
    u = torch.rand(*probs.shape[:-1], 1, dtype=probs.dtype, device=probs.device)
    return (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)


def categorical_checks_the_first_row(probs):
    flat = probs.reshape(-1, probs.shape[-1])
    if abs(flat[0].sum().item() - 1) > 1e-3:
        raise ValueError("probs must sum to one")
    return torch.multinomial(flat, 1).reshape(probs.shape[:-1])


def categorical_normalises_in_place(probs):
    """Changes the caller's tensor."""
    _rows_sum_to_one(probs)
    probs /= probs.sum(-1, keepdim=True)
    return categorical_inverse_cdf(probs)


# ----------------------------------------------------------------------------- mc_log_likelihood


def mc_ll_shifted(log_px_given_z, z):
    values = log_px_given_z(z)
    top = values.max(dim=0).values
    return top + torch.log(torch.exp(values - top).mean(dim=0))


def mc_ll_logsumexp_of_shifted(log_px_given_z, z):
    return torch.logsumexp(log_px_given_z(z) - math.log(z.shape[0]), dim=0)


def mc_ll_amax_keepdim(log_px_given_z, z):
    a = log_px_given_z(z)
    a_star = a.amax(dim=0, keepdim=True)
    return (a_star + torch.log(torch.exp(a - a_star).sum(0, keepdim=True)) - math.log(len(a))).squeeze(0)


def mc_ll_float64_inside(log_px_given_z, z):
    values = log_px_given_z(z).double()
    return (torch.logsumexp(values, 0) - math.log(values.shape[0])).to(z.dtype)


def mc_ll_tensor_log_l(log_px_given_z, z):
    values = log_px_given_z(z)
    n = torch.tensor(values.shape[0], dtype=values.dtype, device=values.device)
    return torch.logsumexp(values, dim=0) - torch.log(n)


def mc_ll_mean_of_logs(log_px_given_z, z):
    return log_px_given_z(z).mean(0)


def mc_ll_without_log_l(log_px_given_z, z):
    return torch.logsumexp(log_px_given_z(z), 0)


def mc_ll_naive(log_px_given_z, z):
    return torch.log(torch.exp(log_px_given_z(z)).mean(0))


def mc_ll_one_global_shift(log_px_given_z, z):
    """Shifts every batch entry by the one largest value: entries far below it underflow to -inf."""
    values = log_px_given_z(z)
    top = values.max()
    return top + torch.log(torch.exp(values - top).mean(0))


def mc_ll_float64_result(log_px_given_z, z):
    return torch.logsumexp(log_px_given_z(z).double(), 0) - math.log(z.shape[0])


# ----------------------------------------------------------------------------- importance sampling, ELBO


def _log_normal(x, mu, logstd):
    return (-0.5 * ((x - mu) / torch.exp(logstd)) ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(-1)


def weights_via_z(log_px_given_z, mu, logstd, eps):
    z = mu + torch.exp(logstd) * eps
    return log_px_given_z(z) + _log_normal(z, torch.zeros_like(z), torch.zeros_like(z)) - _log_normal(z, mu, logstd)


def weights_without_constants(log_px_given_z, mu, logstd, eps):
    z = mu + logstd.exp() * eps
    return log_px_given_z(z) - 0.5 * (z**2).sum(-1) + (0.5 * eps**2 + logstd).sum(-1)


def weights_per_dimension_loop(log_px_given_z, mu, logstd, eps):
    z = mu + torch.exp(logstd) * eps
    total = log_px_given_z(z)
    for d in range(z.shape[-1]):
        zd = z[..., d]
        total = total + (-0.5 * zd**2) - (-0.5 * eps[..., d] ** 2 - logstd[..., d])
    return total


def weights_q_over_p(log_px_given_z, mu, logstd, eps):
    z = mu + torch.exp(logstd) * eps
    return log_px_given_z(z) - _log_normal(z, 0 * z, 0 * z) + _log_normal(z, mu, logstd)


def weights_without_prior(log_px_given_z, mu, logstd, eps):
    z = mu + torch.exp(logstd) * eps
    return log_px_given_z(z) - _log_normal(z, mu, logstd)


def weights_detached(log_px_given_z, mu, logstd, eps):
    """Not differentiable in mu and logstd (3a's text asks that it is)."""
    return weights_via_z(log_px_given_z, mu.detach(), logstd.detach(), eps)


def is_via_z(log_px_given_z, mu, logstd, eps):
    return torch.logsumexp(weights_via_z(log_px_given_z, mu, logstd, eps), 0) - math.log(len(eps))


def is_without_constants(log_px_given_z, mu, logstd, eps):
    log_w = weights_without_constants(log_px_given_z, mu, logstd, eps)
    n = torch.tensor(float(eps.shape[0]), dtype=log_w.dtype, device=log_w.device)
    return torch.logsumexp(log_w, dim=0) - torch.log(n)


def is_shift_per_entry(log_px_given_z, mu, logstd, eps):
    log_w = weights_via_z(log_px_given_z, mu, logstd, eps)
    top = log_w.max(0).values
    return top + torch.log(torch.exp(log_w - top).mean(0))


def is_weights_q_over_p(log_px_given_z, mu, logstd, eps):
    return torch.logsumexp(weights_q_over_p(log_px_given_z, mu, logstd, eps), 0) - math.log(len(eps))


def is_mean_of_log_weights(log_px_given_z, mu, logstd, eps):
    return weights_via_z(log_px_given_z, mu, logstd, eps).mean(0)


def is_with_distributions(log_px_given_z, mu, logstd, eps):
    z = mu + torch.exp(logstd) * eps
    q = torch.distributions.Normal(mu, logstd.exp())
    log_w = log_px_given_z(z) + _log_normal(z, 0 * z, 0 * z) - q.log_prob(z).sum(-1)
    return torch.logsumexp(log_w, 0) - math.log(len(eps))


def is_without_log_l(log_px_given_z, mu, logstd, eps):
    return torch.logsumexp(weights_via_z(log_px_given_z, mu, logstd, eps), 0)


def is_one_global_shift(log_px_given_z, mu, logstd, eps):
    log_w = weights_via_z(log_px_given_z, mu, logstd, eps)
    top = log_w.max()
    return top + torch.log(torch.exp(log_w - top).mean(0))


def elbo_via_z(log_px_given_z, mu, logstd, eps):
    return weights_via_z(log_px_given_z, mu, logstd, eps).mean(dim=0)


def elbo_reconstruction_minus_kl_estimate(log_px_given_z, mu, logstd, eps):
    z = mu + logstd.exp() * eps
    reconstruction = log_px_given_z(z).mean(0)
    kl_estimate = (-0.5 * eps**2 - logstd + 0.5 * z**2).sum(-1).mean(0)
    return reconstruction - kl_estimate


def elbo_sum_over_samples(log_px_given_z, mu, logstd, eps):
    return weights_via_z(log_px_given_z, mu, logstd, eps).sum(dim=0) / eps.shape[0]


def elbo_log_mean_weight(log_px_given_z, mu, logstd, eps):
    return is_via_z(log_px_given_z, mu, logstd, eps)


def elbo_without_log_q(log_px_given_z, mu, logstd, eps):
    z = mu + torch.exp(logstd) * eps
    return (log_px_given_z(z) + _log_normal(z, 0 * z, 0 * z)).mean(0)


def elbo_detached(log_px_given_z, mu, logstd, eps):
    return elbo_via_z(log_px_given_z, mu.detach(), logstd.detach(), eps)


# ----------------------------------------------------------------------------- entropy, cross-entropy, KL


def entropy_where(p):
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(dim=-1)


def entropy_masked(p):
    logs = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    return -(p * logs).sum(-1)


def entropy_nan_to_num(p):
    return -(p * p.log()).nan_to_num(0.0).sum(-1)


def entropy_masked_fill(p):
    terms = (p * p.log()).masked_fill(p == 0, 0)
    return -terms.sum(dim=p.dim() - 1)


def entropy_in_bits(p):
    return -torch.special.xlogy(p, p).sum(-1) / math.log(2)


def entropy_naive(p):
    return -(p * torch.log(p)).sum(-1)


def entropy_accumulated_on_the_cpu(p):
    total = torch.zeros(p.shape[:-1], dtype=p.dtype)
    for i in range(p.shape[-1]):
        total += -torch.special.xlogy(p[..., i], p[..., i])
    return total


def cross_entropy_where(p, q):
    p, q = torch.broadcast_tensors(p, q)
    terms = torch.where(p > 0, -p * torch.log(q), torch.zeros_like(p))
    return terms.sum(-1)


def cross_entropy_masked(p, q):
    log_q = torch.log(q)
    terms = torch.where(p == 0, torch.zeros((), dtype=p.dtype, device=p.device), p * log_q)
    return -terms.sum(-1)


def cross_entropy_xlogy(p, q):
    return torch.special.xlogy(p, q).sum(dim=-1).neg()


def cross_entropy_swapped(p, q):
    return -torch.special.xlogy(q, p).sum(-1)


def cross_entropy_naive(p, q):
    return -(p * torch.log(q)).sum(-1)


def cross_entropy_expand_q(p, q):
    """Works only for one p against a batch of q: crashes the chapter's own KL cell."""
    return -torch.special.xlogy(p.expand_as(q), q).sum(-1)


def kl_where(p, q):
    p, q = torch.broadcast_tensors(p, q)
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return terms.sum(-1)


def kl_from_entropies(p, q):
    return -torch.special.xlogy(p, q).sum(-1) + torch.special.xlogy(p, p).sum(-1)


def kl_log_ratio(p, q):
    ratio = torch.where(p > 0, p / q, torch.ones_like(p / q))
    return (p * torch.log(ratio)).nan_to_num(0.0, posinf=math.inf).sum(-1)


def kl_swapped(p, q):
    return kl_where(q, p)


def kl_naive(p, q):
    return (p * torch.log(p / q)).sum(-1)


def kl_in_bits(p, q):
    return kl_where(p, q) / math.log(2)


def kl_expand_p(p, q):
    """Works only for a batch of p against one q."""
    q = q.expand_as(p)
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1)


# ----------------------------------------------------------------------------- Monte-Carlo KL


def mc_kl_with_constants(mu_q, logstd_q, eps, mu_p=0.0, logstd_p=0.0):
    mu_p = torch.as_tensor(mu_p).to(mu_q)
    logstd_p = torch.as_tensor(logstd_p).to(mu_q)
    z = mu_q + torch.exp(logstd_q) * eps
    return (_log_normal(z, mu_q, logstd_q) - _log_normal(z, mu_p.expand_as(z), logstd_p.expand_as(z))).mean(0)


def mc_kl_loop(mu_q, logstd_q, eps, mu_p=0.0, logstd_p=0.0):
    total = 0
    for e in eps:  # one sample at a time
        z = mu_q + logstd_q.exp() * e
        log_q = (-0.5 * e**2 - logstd_q).sum(-1)
        log_p = (-0.5 * (z - mu_p) ** 2 * torch.exp(-2 * torch.as_tensor(logstd_p).to(z)) - logstd_p).sum(-1)
        total = total + (log_q - log_p)
    return total / len(eps)


def mc_kl_standardised(mu_q, logstd_q, eps, mu_p=0.0, logstd_p=0.0):
    z = mu_q + logstd_q.exp() * eps
    u = (z - mu_p) * torch.exp(-torch.as_tensor(logstd_p, dtype=z.dtype, device=z.device))
    return (0.5 * (u**2 - eps**2) + torch.as_tensor(logstd_p).to(z) - logstd_q).sum(-1).mean(0)


def mc_kl_samples_from_p(mu_q, logstd_q, eps, mu_p=0.0, logstd_p=0.0):
    mu_p = torch.as_tensor(mu_p).to(mu_q)
    logstd_p = torch.as_tensor(logstd_p).to(mu_q)
    z = mu_p + torch.exp(logstd_p) * eps
    return (_log_normal(z, mu_q, logstd_q) - _log_normal(z, mu_p.expand_as(z), logstd_p.expand_as(z))).mean(0)


def mc_kl_backwards(mu_q, logstd_q, eps, mu_p=0.0, logstd_p=0.0):
    return -mc_kl_with_constants(mu_q, logstd_q, eps, mu_p, logstd_p)


def mc_kl_tensor_prior_only(mu_q, logstd_q, eps, mu_p=None, logstd_p=None):
    """Numbers for mu_p and logstd_p (the text allows them) are not handled."""
    if mu_p is None:
        mu_p, logstd_p = torch.zeros_like(mu_q), torch.zeros_like(logstd_q)
    return mc_kl_with_constants(mu_q, logstd_q, eps, mu_p.expand_as(mu_q), logstd_p.expand_as(mu_q))


# ----------------------------------------------------------------------------- reparameterised gradient


def reparam_backward(f, mu, sigma, eps):
    mu = mu.detach().clone().requires_grad_()
    sigma = sigma.detach().clone().requires_grad_()
    z = mu + sigma * eps
    f(z).mean(0).sum().backward()
    return mu.grad, sigma.grad


def reparam_grad_outputs(f, mu, sigma, eps):
    mu_, sigma_ = mu.detach().clone().requires_grad_(True), sigma.detach().clone().requires_grad_(True)
    estimate = f(mu_ + sigma_ * eps).mean(dim=0)
    return tuple(torch.autograd.grad(estimate, [mu_, sigma_], grad_outputs=torch.ones_like(estimate)))


def reparam_list_and_enable_grad(f, mu, sigma, eps):
    with torch.enable_grad():
        m = torch.tensor(mu.detach().cpu().numpy(), requires_grad=True, device=mu.device)
        s = sigma.detach().clone()
        s.requires_grad = True
        total = f(m + s * eps).sum() / eps.shape[0]
        return list(torch.autograd.grad(total, (m, s)))


def reparam_sigma_squared(f, mu, sigma, eps):
    mu = mu.detach().clone().requires_grad_()
    sigma = sigma.detach().clone().requires_grad_()
    f(mu + sigma**2 * eps).mean(0).sum().backward()
    return mu.grad, sigma.grad


def reparam_batch_mean(f, mu, sigma, eps):
    mu = mu.detach().clone().requires_grad_()
    sigma = sigma.detach().clone().requires_grad_()
    f(mu + sigma * eps).mean().backward()
    return mu.grad, sigma.grad


def reparam_is_reinforce(f, mu, sigma, eps):
    return theory.score_function_gradient(f, mu, sigma, eps)


def reparam_on_the_callers_tensors(f, mu, sigma, eps):
    """Back-propagates into the caller's tensors: their .grad accumulates from call to call."""
    mu.requires_grad_(True)
    sigma.requires_grad_(True)
    f(mu + sigma * eps).mean(0).sum().backward()
    return mu.grad, sigma.grad


def reparam_keeps_the_graph(f, mu, sigma, eps):
    mu_, sigma_ = mu.detach().clone().requires_grad_(), sigma.detach().clone().requires_grad_()
    return torch.autograd.grad(f(mu_ + sigma_ * eps).mean(0).sum(), (mu_, sigma_), create_graph=True)


# ----------------------------------------------------------------------------- bits per dimension


def bpd_divide_by_ln2(nll, img_shape):
    return nll / (math.log(2) * math.prod(img_shape[1:]))


def bpd_tensor_product(nll, img_shape):
    dims = torch.tensor(list(img_shape)[1:]).prod().item()
    return nll * math.log2(math.e) / dims


def bpd_numpy(nll, img_shape):
    """numpy.prod of the dimensions: a float nll gives numpy.float64 back (a float subclass)."""
    import numpy as np

    return nll * np.log2(np.e) / np.prod(list(img_shape)[1:])


def bpd_loop(nll, img_shape):
    dims = 1
    for d in list(img_shape)[1:]:
        dims *= int(d)
    return nll / dims / math.log(2)


def bpd_with_batch(nll, img_shape):
    return nll * math.log2(math.e) / math.prod(img_shape)


def bpd_in_nats(nll, img_shape):
    return nll / math.prod(img_shape[1:])


def bpd_float32_result(nll, img_shape):
    return (torch.as_tensor(nll) / (math.log(2) * math.prod(img_shape[1:]))).float()


# ----------------------------------------------------------------------------- the table

# Per check: correct answers in other styles, and wrong answers with (a pattern of) their message.
CORRECT = {
    "probe_sample_categorical": {
        "reference": theory.sample_categorical,
        "inverse-cdf": categorical_inverse_cdf,
        "gumbel-max": categorical_gumbel_max,
        "searchsorted": categorical_searchsorted,
        "multinomial-with-a-row-loop": categorical_multinomial_rows,
        "numpy-check-then-rand-like": categorical_numpy_check,
    },
    "probe_mc_log_likelihood": {
        "reference": theory.mc_log_likelihood,
        "shift-per-entry": mc_ll_shifted,
        "logsumexp-of-shifted": mc_ll_logsumexp_of_shifted,
        "amax-keepdim": mc_ll_amax_keepdim,
        "float64-inside": mc_ll_float64_inside,
        "tensor-log-L": mc_ll_tensor_log_l,
    },
    "probe_log_importance_weights": {
        "reference": theory.log_importance_weights,
        "via-z": weights_via_z,
        "without-constants": weights_without_constants,
        "loop-over-dimensions": weights_per_dimension_loop,
    },
    "probe_importance_log_likelihood": {
        "reference": theory.importance_log_likelihood,
        "via-z": is_via_z,
        "without-constants": is_without_constants,
        "shift-per-entry": is_shift_per_entry,
    },
    "probe_entropy": {
        "reference": theory.entropy,
        "where": entropy_where,
        "clamp": entropy_masked,
        "nan-to-num": entropy_nan_to_num,
        "masked-fill": entropy_masked_fill,
    },
    "probe_cross_entropy": {
        "reference": theory.cross_entropy,
        "where": cross_entropy_where,
        "masked": cross_entropy_masked,
        "xlogy-neg": cross_entropy_xlogy,
    },
    "probe_categorical_kl": {
        "reference": theory.categorical_kl,
        "where": kl_where,
        "from-entropies": kl_from_entropies,
        "log-ratio": kl_log_ratio,
    },
    "probe_mc_elbo": {
        "reference": theory.mc_elbo,
        "via-z": elbo_via_z,
        "reconstruction-minus-kl": elbo_reconstruction_minus_kl_estimate,
        "sum-over-samples": elbo_sum_over_samples,
    },
    "probe_mc_gaussian_kl": {
        "reference": theory.mc_gaussian_kl,
        "with-constants": mc_kl_with_constants,
        "loop": mc_kl_loop,
        "standardised": mc_kl_standardised,
    },
    "probe_reparam_gradient": {
        "reference": theory.reparam_gradient,
        "backward": reparam_backward,
        "grad-outputs": reparam_grad_outputs,
        "list-and-enable-grad": reparam_list_and_enable_grad,
    },
    "probe_bits_per_dim": {
        "reference": bits_per_dim,
        "divide-by-ln2": bpd_divide_by_ln2,
        "tensor-product": bpd_tensor_product,
        "numpy": bpd_numpy,
        "loop": bpd_loop,
    },
}

WRONG = {
    "probe_sample_categorical": {
        "one-number-per-image": (
            categorical_one_number_per_image,
            "not drawn independently.*separate random number for every pixel",
        ),
        "one-number-per-pixel-for-the-batch": (
            categorical_one_number_per_pixel_for_the_batch,
            "do not follow probs.*fresh random draw",
        ),
        "off-by-one": (categorical_off_by_one, "probability 0|do not follow probs"),
        "without-the-check": (categorical_without_the_check, "rows that sum to 0.8.*ValueError whose message names"),
        "float-indices": (categorical_float, "dtype torch.long"),
        "torch-distributions": (categorical_distributions, "torch.distributions is not available"),
        "random-numbers-on-the-default-device": (categorical_default_device, "same device.*device=x.device"),
        "exact-row-sums": (categorical_exact_sums, "1 \\+- 5e-4.*within 1e-3"),
        "checks-the-mean-row": (categorical_checks_the_mean_row, "one row among 120.*all rows"),
        "checks-the-first-row": (categorical_checks_the_first_row, "one row among 120.*all rows"),
        "normalises-in-place": (categorical_normalises_in_place, "changed what it was given.*changed in place"),
    },
    "probe_mc_log_likelihood": {
        "mean-of-logs": (mc_ll_mean_of_logs, "mean of the log-likelihoods, a lower bound"),
        "without-log-L": (mc_ll_without_log_l, "log of the SUM of the likelihoods: subtract log L"),
        "naive": (mc_ll_naive, "underflows to 0.*logsumexp"),
        "one-global-shift": (mc_ll_one_global_shift, "thousands of nats apart.*underflows"),
        "float64-result": (mc_ll_float64_result, "dtype torch.float64; expected torch.float32"),
    },
    "probe_log_importance_weights": {
        "q-over-p": (weights_q_over_p, "weights are upside down"),
        "without-prior": (weights_without_prior, "the prior log p\\(z\\) is missing"),
        "detached": (weights_detached, "gradient of log_importance_weights.*differentiable"),
    },
    "probe_importance_log_likelihood": {
        "q-over-p": (is_weights_q_over_p, "weights are upside down: w = p\\(z\\) / q\\(z \\| x\\)"),
        "mean-of-log-weights": (is_mean_of_log_weights, "mean of the log-weights \\(the ELBO\\)"),
        "torch-distributions": (is_with_distributions, "torch.distributions is not available"),
        "without-log-L": (is_without_log_l, "log of the SUM of the weights: subtract log L"),
        "one-global-shift": (is_one_global_shift, "underflows to 0"),
    },
    "probe_entropy": {
        "in-bits": (entropy_in_bits, "that is in bits; the entropy is asked in nats"),
        "naive": (entropy_naive, "NaN where the answer is a number.*0 log 0 = 0"),
        "accumulated-on-the-cpu": (entropy_accumulated_on_the_cpu, "same device.*torch.zeros_like"),
    },
    "probe_cross_entropy": {
        "swapped": (cross_entropy_swapped, "that is H\\(q, p\\): the arguments are swapped"),
        "naive": (cross_entropy_naive, "NaN where the answer is a number"),
        "expand-p-to-q": (cross_entropy_expand_q, "a batch of p \\(5, 6\\) against one q.*raised RuntimeError"),
    },
    "probe_categorical_kl": {
        "swapped": (kl_swapped, "that is KL\\(q \\|\\| p\\): the arguments are swapped"),
        "naive": (kl_naive, "NaN where the answer is a number.*0 log 0 = 0"),
        "in-bits": (kl_in_bits, "that is in bits"),
        "expand-q-to-p": (kl_expand_p, "one p \\(6,\\) against a batch of q.*raised RuntimeError"),
    },
    "probe_mc_elbo": {
        "log-mean-weight": (elbo_log_mean_weight, "importance-sampled log-likelihood.*MEAN of the log-weights"),
        "without-log-q": (elbo_without_log_q, "log q\\(z \\| x\\) is missing"),
        "detached": (
            elbo_detached,
            "gradient of mc_elbo .* with respect to mu: expected a torch.Tensor.*differentiable",
        ),
    },
    "probe_mc_gaussian_kl": {
        "samples-from-p": (
            mc_kl_samples_from_p,
            "the samples come from p; KL\\(q \\|\\| p\\) is an expectation under q",
        ),
        "backwards": (mc_kl_backwards, "that is log p - log q"),
        "numbers-for-the-prior-refused": (mc_kl_tensor_prior_only, "with numbers.*raised AttributeError"),
    },
    "probe_reparam_gradient": {
        "sigma-squared": (reparam_sigma_squared, "z = mu \\+ sigma\\^2 \\* eps: sigma is the standard deviation"),
        "batch-mean": (reparam_batch_mean, "divided by the batch size"),
        "reinforce": (reparam_is_reinforce, "score-function \\(REINFORCE\\) estimate"),
        "on-the-callers-tensors": (reparam_on_the_callers_tensors, "changed what it was given.*requires_grad"),
        "keeps-the-graph": (reparam_keeps_the_graph, "graph history.*detach"),
    },
    "probe_bits_per_dim": {
        "with-batch": (bpd_with_batch, "also divides by the batch size"),
        "in-nats": (bpd_in_nats, "nats per dimension; multiply by log2\\(e\\)"),
        "float32-result": (bpd_float32_result, "dtype torch.float32; expected torch.float64"),
    },
}
CHECKS = sorted(n for n in probing.checks_of(checks) if n.startswith("probe_"))


def test_every_check_has_correct_styles_and_wrong_answers():
    assert set(CORRECT) == set(WRONG) == set(CHECKS)
    assert sum(len(styles) - 1 for styles in CORRECT.values()) >= 5


@pytest.mark.parametrize("name", CHECKS)
def test_correct_styles_pass(name):
    for style in CORRECT[name].values():
        getattr(checks, name)(style)  # a fresh seed every run


@pytest.mark.parametrize("name,wrong", [(n, w) for n in CHECKS for w in WRONG[n]])
def test_wrong_answers_fail_with_a_hint(name, wrong):
    answer, pattern = WRONG[name][wrong]
    with pytest.raises(probing.Failed, match=pattern):
        getattr(checks, name)(answer)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_verdicts_do_not_depend_on_the_seed(name):
    assert unstable_verdicts(probing.checks_of(checks)[name], CORRECT[name], WRONG[name]) == []


def test_every_condition_of_the_texts_is_drawn():
    assert coverage_gaps(checks) == {}


@pytest.mark.parametrize("name", CHECKS)
def test_every_check_reports_an_unwritten_exercise(name):
    def blank(*_args, **_kwargs):
        raise NotImplementedError("graded exercise: write it in the chapter notebook")

    with pytest.raises(probing.Failed, match="NotImplementedError"):
        probing.checks_of(checks)[name](blank)


# ----------------------------------------------------------------------------- the notebook's test cells

NOTEBOOK = Notebook("vae_theory", given=["toy_model"])


def test_the_source_solutions_pass_every_test_cell():
    assert NOTEBOOK.failing({}) == set()


@pytest.mark.parametrize("mistake", NOTEBOOK.mistakes, ids=lambda m: m.name)
def test_each_manifest_mistake_fails_exactly_its_test_cells(mistake):
    assert NOTEBOOK.failing({mistake.cell: mistake.code}) == set(mistake.fails)
