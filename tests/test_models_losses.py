"""Unit tests of the MLP models, the VAE losses and latent interpolation (genlab.models.mlp,
genlab.losses, genlab.latent, genlab.train.ae_train_step), and of the hidden-test checks of the
chapter ae_to_cvae that use them as their oracle."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from autograder import probing
from autograder.checks import ae_to_cvae as checks
from genlab.latent import interpolate
from genlab.losses import bernoulli_nll, gaussian_kl, vae_loss
from genlab.models import CVAE, VAE, AutoEncoder, Decoder, Encoder, condition, one_hot, reparameterize
from genlab.train import ae_train_step
from tests.verdicts import Notebook, coverage_gaps, unstable_verdicts


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- modules


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 784)])
def test_encoder_maps_images_or_vectors_to_codes(shape):
    enc = Encoder(784, 12)
    assert enc(torch.rand(shape)).shape == (5, 12)
    sizes = [tuple(m.weight.shape) for m in enc.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(256, 784), (64, 256), (12, 64)]


def test_encoder_output_is_unconstrained():
    out = Encoder(10, 6)(torch.randn(200, 10))
    assert out.min() < 0 < out.max()


def test_decoder_gives_flat_probabilities():
    dec = Decoder(8, 784)
    out = dec(10 * torch.randn(7, 8))
    assert out.shape == (7, 784)
    assert out.min() >= 0 and out.max() <= 1
    sizes = [tuple(m.weight.shape) for m in dec.modules() if isinstance(m, nn.Linear)]
    assert sizes == [(64, 8), (256, 64), (784, 256)]


def test_autoencoder_vae_and_cvae_shapes():
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 3, 9, 3])
    assert AutoEncoder(6)(x).shape == (4, 784)
    vae = VAE(6)
    recon, mu, logstd = vae(x)
    assert recon.shape == (4, 784) and mu.shape == logstd.shape == (4, 6)
    assert vae.sample(5).shape == (5, 784)
    cvae = CVAE(6)
    recon, mu, logstd = cvae(x, y)
    assert recon.shape == (4, 784) and mu.shape == logstd.shape == (4, 6)
    assert cvae.encoder.net[1].in_features == 784 + 10 and cvae.decoder.net[0].in_features == 6 + 10
    assert cvae.sample(y).shape == (4, 784)


def test_cvae_decoder_sees_the_label():
    cvae = CVAE(3)
    z = torch.randn(1, 3).repeat(2, 1)
    out = cvae.decode(z, torch.tensor([1, 7]))
    assert not torch.allclose(out[0], out[1])


# ----------------------------------------------------------------------------- reparameterisation


def test_reparameterize_uses_the_standard_deviation():
    mu, logstd, eps = torch.tensor([0.0, 1.0]), torch.tensor([0.0, math.log(2.0)]), torch.tensor([1.0, -1.0])
    assert torch.allclose(reparameterize(mu, logstd, eps), torch.tensor([1.0, -1.0]))


def test_reparameterize_gradients_reach_mu_and_logstd():
    mu = torch.randn(3, 4, requires_grad=True)
    logstd = torch.randn(3, 4, requires_grad=True)
    eps = torch.randn(3, 4)
    reparameterize(mu, logstd, eps).sum().backward()
    assert torch.allclose(mu.grad, torch.ones(3, 4))
    assert torch.allclose(logstd.grad, torch.exp(logstd.detach()) * eps)


def test_reparameterize_samples_have_the_right_mean_and_std():
    n = 200_000
    mu = torch.tensor([-2.0, 0.0, 1.5])
    logstd = torch.tensor([-1.0, 0.0, 0.7])
    z = reparameterize(mu.expand(n, 3), logstd.expand(n, 3)).double()
    std = torch.exp(logstd).double()
    assert torch.all((z.mean(0) - mu.double()).abs() < 5 * std / math.sqrt(n))
    assert torch.allclose(z.std(0), std, rtol=0.01)


# ----------------------------------------------------------------------------- KL and losses


def _random_gaussians(shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(sum(shape))
    mu_q, mu_p = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    ls_q = torch.rand(shape, generator=g, dtype=dtype) * 2 - 1
    ls_p = torch.rand(shape, generator=g, dtype=dtype) * 2 - 1
    return mu_q, ls_q, mu_p, ls_p


def test_gaussian_kl_known_values():
    one = torch.ones(1)
    assert torch.allclose(gaussian_kl(one, 0 * one), torch.tensor(0.5))
    assert torch.allclose(gaussian_kl(0 * one, one), torch.tensor(0.5 * (math.exp(2) - 1) - 1))
    # N(0, 1) against N(0, e^2): log e + 1 / (2 e^2) - 1/2
    assert torch.allclose(gaussian_kl(0 * one, 0 * one, 0.0, 1.0), torch.tensor(1 + 0.5 * math.exp(-2) - 0.5))


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 6)])
def test_gaussian_kl_matches_torch_distributions(shape):
    mu_q, ls_q, mu_p, ls_p = _random_gaussians(shape)
    expected = kl_divergence(Normal(mu_q, ls_q.exp()), Normal(mu_p, ls_p.exp())).sum(-1)
    got = gaussian_kl(mu_q, ls_q, mu_p, ls_p)
    assert got.shape == shape[:-1]
    assert torch.allclose(got, expected)


def test_gaussian_kl_closed_form_agrees_with_monte_carlo():
    mu_q, ls_q, mu_p, ls_p = _random_gaussians((4,))
    q, p = Normal(mu_q, ls_q.exp()), Normal(mu_p, ls_p.exp())
    torch.manual_seed(1)
    z = reparameterize(mu_q.expand(400_000, 4), ls_q.expand(400_000, 4))
    log_ratio = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    mc, err = log_ratio.mean(), log_ratio.std() / math.sqrt(len(log_ratio))
    assert abs(mc - gaussian_kl(mu_q, ls_q, mu_p, ls_p)) < 5 * err


def test_gaussian_kl_is_not_symmetric():
    mu_q, ls_q, mu_p, ls_p = _random_gaussians((6,))
    assert not torch.allclose(gaussian_kl(mu_q, ls_q, mu_p, ls_p), gaussian_kl(mu_p, ls_p, mu_q, ls_q))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_kl_is_nonnegative_and_zero_only_for_equal_gaussians(dtype):
    mu_q, ls_q, mu_p, ls_p = (t.to(dtype) for t in _random_gaussians((1000, 8)))
    assert (gaussian_kl(mu_q, ls_q, mu_p, ls_p) > 0).all()
    assert (gaussian_kl(mu_q, 3 * ls_q) >= 0).all()
    assert torch.equal(gaussian_kl(mu_q, ls_q, mu_q, ls_q), torch.zeros(1000, dtype=dtype))
    assert (gaussian_kl(mu_q, ls_q, mu_q + 1e-2, ls_q) > 0).all()
    assert (gaussian_kl(mu_q, ls_q, mu_q, ls_q + 1e-2) > 0).all()
    assert gaussian_kl(mu_q, ls_q).dtype == dtype


def test_bernoulli_nll_is_bce_summed_over_pixels():
    probs = torch.rand(3, 1, 4, 4) * 0.9 + 0.05
    x = torch.rand(3, 1, 4, 4)
    manual = -(x * probs.log() + (1 - x) * (1 - probs).log()).flatten(1).sum(1)
    assert torch.allclose(bernoulli_nll(probs.flatten(1), x), manual)
    assert torch.allclose(
        bernoulli_nll(torch.full((2, 784), 0.5), torch.rand(2, 784)), torch.full((2,), 784 * math.log(2))
    )


def test_vae_loss_on_a_hand_example():
    half = torch.full((2, 4), 0.5)  # each pixel costs log 2
    x = torch.rand(2, 1, 2, 2)
    mu = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # KL 1 and 0: mean over the batch 0.5
    logstd = torch.zeros(2, 2)
    assert torch.allclose(vae_loss(half, x, mu, logstd, beta=0.0), torch.tensor(4 * math.log(2)))
    assert torch.allclose(vae_loss(half, x, mu, logstd, beta=3.0), torch.tensor(4 * math.log(2) + 1.5))
    assert torch.allclose(vae_loss(half, x, mu, logstd), torch.tensor(4 * math.log(2) + 0.5))


def test_vae_loss_is_not_symmetric_in_its_bce_arguments():
    recon = torch.rand(3, 10) * 0.9 + 0.05
    x = (torch.rand(3, 10) > 0.5).float()
    mu, logstd = torch.zeros(3, 2), torch.zeros(3, 2)
    right = vae_loss(recon, x, mu, logstd)
    swapped = F.binary_cross_entropy(x, recon, reduction="none").sum(1).mean()
    assert not torch.allclose(right, swapped)


def test_ae_train_step_loss_and_update():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Sigmoid())
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(2, 1, 2, 2)
    loss = ae_train_step(model, opt, x)
    assert isinstance(loss, float) and math.isclose(loss, 4 * math.log(2), rel_tol=1e-6)
    # one SGD step on mean_n sum_i BCE: the bias gradient is the batch mean of (0.5 - x)
    assert torch.allclose(model[1].bias, -0.1 * (0.5 - x.flatten(1)).mean(0))
    # the second step uses only its own gradient: nothing left over from the first
    w1, b1 = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    ae_train_step(model, opt, x)
    probs = torch.sigmoid(x.flatten(1) @ w1.T + b1)
    assert torch.allclose(model[1].bias.grad, (probs - x.flatten(1)).mean(0), atol=1e-6)


# ----------------------------------------------------------------------------- latent tools and conditioning


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interpolate_endpoints_and_spacing(dtype):
    z0, z1 = torch.randn(5, dtype=dtype), torch.randn(5, dtype=dtype)
    path = interpolate(z0, z1, 6)
    assert path.shape == (6, 5) and path.dtype == dtype
    assert torch.equal(path[0], z0)
    assert torch.allclose(path[-1], z1)
    steps = path.diff(dim=0)
    assert torch.allclose(steps, ((z1 - z0) / 5).expand(5, 5))
    assert interpolate(z0[None], z1[None], 6).shape == (6, 5)


def test_one_hot_has_the_requested_width_and_float_dtype():
    codes = one_hot(torch.tensor([0, 1, 1]), 10)
    assert codes.shape == (3, 10) and codes.dtype == torch.float32
    assert torch.equal(codes.argmax(1), torch.tensor([0, 1, 1])) and torch.equal(codes.sum(1), torch.ones(3))
    assert one_hot(torch.tensor([2], dtype=torch.int32), 3).tolist() == [[0.0, 0.0, 1.0]]


def test_condition_appends_the_label_code_after_the_features():
    h = torch.rand(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    joined = condition(h, torch.tensor([1, 0]), 3)
    assert joined.shape == (2, 7) and joined.dtype == torch.float64
    assert torch.equal(joined[:, :4], h.detach().flatten(1))
    assert joined[:, 4:].tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    joined.sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))


# ----------------------------------------------------------------------------- the chapter's hidden-test checks
# Each probe runs here in-process: the "student" run and the reference run, then the comparison.


def test_every_probe_is_verified_against_its_package_reference():
    found = probing.checks_of(checks)
    assert {c.exercise for c in found.values()} == {
        "encoder",
        "decoder",
        "ae_train_step",
        "reparameterize",
        "gaussian_kl",
        "vae_loss",
        "interpolate",
        "one_hot",
        "condition",
    }
    assert (
        found["probe_gaussian_kl"].reference is gaussian_kl and found["check_gaussian_kl"] is found["probe_gaussian_kl"]
    )


def _step(swap=False, clear=True, reduce_pixels="sum", as_float=lambda loss: loss.item()):
    def step(model, optimizer, x):
        if clear:
            optimizer.zero_grad()
        recon = model(x)
        target = x.reshape(recon.shape)
        pred, tgt = (target, recon) if swap else (recon, target)
        if reduce_pixels == "mean":
            loss = F.binary_cross_entropy(pred, tgt)
        else:
            loss = F.binary_cross_entropy(pred, tgt, reduction="none").sum(1).mean()
        loss.backward()
        optimizer.step()
        return as_float(loss)

    return step


def _step_sum_over_batch_size(model, optimizer, x):
    recon = model(x)
    loss = F.binary_cross_entropy(recon, x.flatten(1), reduction="sum") / x.shape[0]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _step_flattens_in_place(model, optimizer, x):
    """Changes the caller's batch: x is clamped in place to keep the BCE finite."""
    x.clamp_(0.0, 1.0)
    return _step()(model, optimizer, x)


def _kl_seed_constant(mu_q, logstd_q, mu_p=0.0, logstd_p=0.0):
    return (torch.exp(2 * logstd_q) + mu_q**2 - logstd_q - 0.5).sum(-1)


def _kl_reversed(mu_q, logstd_q, mu_p=0.0, logstd_p=0.0):
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device).expand_as(mu_q)
    logstd_p = torch.as_tensor(logstd_p, dtype=mu_q.dtype, device=mu_q.device).expand_as(mu_q)
    return gaussian_kl(mu_p, logstd_p, mu_q, logstd_q)


def _kl_torch_distributions(mu_q, logstd_q, mu_p=0.0, logstd_p=0.0):
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device).expand_as(mu_q)
    logstd_p = torch.as_tensor(logstd_p, dtype=mu_q.dtype, device=mu_q.device).expand_as(mu_q)
    return kl_divergence(Normal(mu_q, logstd_q.exp()), Normal(mu_p, logstd_p.exp())).sum(-1)


def _kl_float32_inside(mu_q, logstd_q, mu_p=0.0, logstd_p=0.0):
    out = gaussian_kl(mu_q.float(), logstd_q.float(), torch.as_tensor(mu_p).float(), torch.as_tensor(logstd_p).float())
    return out.to(mu_q.dtype)


def _kl_variance_form(mu_q, logstd_q, mu_p=0.0, logstd_p=0.0):
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logstd_p = torch.as_tensor(logstd_p, dtype=mu_q.dtype, device=mu_q.device)
    var_q, var_p = torch.exp(2 * logstd_q), torch.exp(2 * logstd_p)
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1).sum(dim=-1)


def _kl_subtracts_in_place(mu_q, logstd_q, mu_p=0.0, logstd_p=0.0):
    """Changes the caller's mu_q."""
    mu_q -= torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    return gaussian_kl(mu_q, logstd_q, 0.0, logstd_p)


def _loss(beta_on_rec=False, swap=False, pixel_mean=False):
    def loss(recon, x, mu, logstd, beta=1.0):
        target = x.reshape(recon.shape)
        pred, tgt = (target, recon) if swap else (recon, target)
        rec = F.binary_cross_entropy(pred, tgt, reduction="none")
        rec = rec.mean(1) if pixel_mean else rec.sum(1)
        kl = gaussian_kl(mu, logstd)
        return (beta * rec + kl).mean() if beta_on_rec else (rec + beta * kl).mean()

    return loss


def _loss_sums_then_divides(recon, x, mu, logstd, beta=1.0):
    rec = F.binary_cross_entropy(recon, x.view_as(recon), reduction="sum") / len(x)
    return rec + beta * gaussian_kl(mu, logstd).mean()


class _EncoderReluOut(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(i, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, o), nn.ReLU()
        )

    def forward(self, x):
        return self.net(x)


class _EncoderOutputLayerFirst(nn.Module):
    """Correct, but registers its layers in another order than forward() uses them."""

    def __init__(self, i, o):
        super().__init__()
        self.out = nn.Linear(64, o)
        self.hidden2 = nn.Linear(256, 64)
        self.hidden1 = nn.Linear(i, 256)

    def forward(self, x):
        h = F.relu(self.hidden1(x.flatten(1)))
        return self.out(F.relu(self.hidden2(h)))


class _EncoderReshape(nn.Module):
    """Correct: a list of layers, the input reshaped by hand."""

    def __init__(self, input_size, out_size):
        super().__init__()
        self.sizes = [input_size, 256, 64, out_size]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.sizes, self.sizes[1:]))

    def forward(self, x):
        h = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


class _EncoderFlattenOnlyImages(nn.Module):
    """Flattens only 4-D inputs with a view: flat vectors (the text allows them) break it."""

    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(i, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, o))

    def forward(self, x):
        return self.net(x.view(x.shape[0], x.shape[2] * x.shape[3]))


class _DecoderNoSigmoid(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(i, 64), nn.ReLU(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, o))

    def forward(self, z):
        return self.net(z)


class _DecoderFunctional(nn.Module):
    """Correct: the layers in a ModuleList, activations from torch.nn.functional."""

    def __init__(self, i, o):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(i, 64), nn.Linear(64, 256), nn.Linear(256, o)])

    def forward(self, z):
        for layer in self.layers[:-1]:
            z = torch.relu(layer(z))
        return torch.sigmoid(self.layers[-1](z))


class _DecoderNamedLayers(nn.Module):
    """Correct: named attributes, the sigmoid from torch."""

    def __init__(self, in_size, output_size):
        super().__init__()
        self.fc3 = nn.Linear(256, output_size)
        self.fc1 = nn.Linear(in_size, 64)
        self.fc2 = nn.Linear(64, 256)

    def forward(self, z):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(z))))).sigmoid()


class _DecoderToImages(nn.Module):
    """Reshapes to images: the text asks for flat probabilities."""

    def __init__(self, i, o):
        super().__init__()
        self.net = Decoder(i, o)

    def forward(self, z):
        return self.net(z).view(len(z), 1, -1)


def _reparameterize_reseeding(mu, logstd, eps=None):
    if eps is None:
        torch.manual_seed(0)  # "for reproducibility": every call draws the same noise
        eps = torch.randn_like(mu)
    return mu + logstd.exp() * eps


def _reparameterize_drawing_anyway(mu, logstd, eps=None):
    noise = torch.randn_like(mu)  # drawn whether or not eps is given
    return mu + logstd.exp() * (noise if eps is None else eps)


def _warns(loss):
    warnings.warn("a warning on stderr is no error", UserWarning, stacklevel=2)
    return float(loss)


CORRECT = {
    "probe_encoder": {
        "output-layer-registered-first": _EncoderOutputLayerFirst,
        "module-list-reshape": _EncoderReshape,
    },
    "probe_decoder": {"module-list": _DecoderFunctional, "named-layers": _DecoderNamedLayers},
    "probe_ae_train_step": {
        "float-of-a-tensor": _step(as_float=lambda loss: float(loss)),
        "that-warns": _step(as_float=_warns),
        "sum-over-batch-size": _step_sum_over_batch_size,
        "detached-tensor": _step(as_float=lambda loss: loss.detach()),
    },
    "probe_reparameterize": {
        "normal-noise-by-hand": lambda mu, ls, eps=None: (
            mu + ls.exp() * (torch.normal(torch.zeros_like(mu), torch.ones_like(mu)) if eps is None else eps)
        ),
        "randn-with-device": lambda mu, ls, eps=None: (
            mu + torch.exp(ls) * (eps if eps is not None else torch.randn(mu.shape, dtype=mu.dtype, device=mu.device))
        ),
        "empty-like-normal": lambda mu, ls, eps=None: (
            mu + ls.exp() * (torch.empty_like(mu).normal_() if eps is None else eps)
        ),
    },
    "probe_gaussian_kl": {
        "torch-distributions": _kl_torch_distributions,
        "float32-inside": _kl_float32_inside,
        "variance-form": _kl_variance_form,
    },
    "probe_vae_loss": {"sum-then-divide": _loss_sums_then_divides},
    "probe_interpolate": {
        "float32-weights-cast-back": lambda z0, z1, steps: torch.stack(
            [(1 - w) * z0 + w * z1 for w in torch.linspace(0, 1, steps).tolist()]
        ),
        "lerp": lambda z0, z1, steps: torch.lerp(
            z0, z1, torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)[:, None]
        ),
    },
    "probe_one_hot": {
        "scatter": lambda y, k=10: torch.zeros(len(y), k, device=y.device).scatter_(1, y.long()[:, None], 1.0),
        "functional": lambda y, k=10: F.one_hot(y.long(), num_classes=k).to(torch.float32),
    },
    "probe_condition": {
        "functional-one-hot": lambda h, y, k=10: torch.cat([h.flatten(1), F.one_hot(y.long(), k).to(h)], dim=1),
    },
}
for name in CORRECT:
    CORRECT[name]["reference"] = getattr(checks, name).reference

WRONG = {
    "probe_encoder": {
        "relu-on-codes": (_EncoderReluOut, "no activation"),
        "flat-vectors-refused": (_EncoderFlattenOnlyImages, "shape \\(1, 784\\) raised IndexError"),
    },
    "probe_decoder": {
        "without-sigmoid": (_DecoderNoSigmoid, "Sigmoid"),
        "images-out": (_DecoderToImages, "expected shape"),
    },
    "probe_ae_train_step": {
        "no-zero-grad": (_step(clear=False), "zero_grad"),
        "bce-swapped": (_step(swap=True), "reconstruction FIRST"),
        "bce-pixel-mean": (_step(reduce_pixels="mean"), "summed over pixels"),
        "returns-the-graph": (_step(as_float=lambda loss: loss), "graph history.*\\.item\\(\\)"),
        "clamps-x-in-place": (_step_flattens_in_place, "changed what it was given.*changed in place"),
    },
    "probe_reparameterize": {
        "variance": (
            lambda mu, ls, eps=None: mu + torch.exp(2 * ls) * (torch.randn_like(mu) if eps is None else eps),
            "the variance",
        ),
        "logstd-as-std": (
            lambda mu, ls, eps=None: mu + ls * (torch.randn_like(mu) if eps is None else eps),
            "standard deviation is exp",
        ),
        "detached": (lambda mu, ls, eps=None: reparameterize(mu, ls, eps).detach(), "no .detach"),
        "torch-normal-without-eps": (
            lambda mu, ls, eps=None: mu + ls.exp() * eps if eps is not None else torch.normal(mu, ls.exp()),
            "torch.normal",
        ),
        "noise-on-the-default-device": (
            lambda mu, ls, eps=None: mu + ls.exp() * (torch.randn(mu.shape) if eps is None else eps),
            "device",
        ),
        "reseeds": (_reparameterize_reseeding, "new noise on every call"),
        "draws-even-with-eps": (_reparameterize_drawing_anyway, "drew from the global random number generator"),
    },
    "probe_gaussian_kl": {
        "seed-constant": (_kl_seed_constant, "log.sigma_p/sigma_q"),
        "wrong-direction": (_kl_reversed, "KL.p .. q."),
        "not-summed": (
            lambda *a, **k: gaussian_kl(*a, **k)[..., None].expand(*a[0].shape),
            "summed over the last dimension",
        ),
        "subtracts-in-place": (_kl_subtracts_in_place, "changed what it was given"),
    },
    "probe_vae_loss": {
        "beta-on-reconstruction": (_loss(beta_on_rec=True), "beta multiplies"),
        "bce-swapped": (_loss(swap=True), "arguments are swapped"),
        "pixel-mean": (_loss(pixel_mean=True), "averaged over pixels"),
        "a-float": (lambda *a, **k: vae_loss(*a, **k).item(), "differentiable"),
    },
    "probe_interpolate": {
        "misses-end": (
            lambda z0, z1, steps: torch.stack([z0 + i / steps * (z1 - z0) for i in range(steps)]),
            "last is z1",
        ),
        "float32-always": (
            lambda z0, z1, steps: interpolate(z0, z1, steps).float(),
            "dtype torch.float32; expected torch.float64",
        ),
    },
    "probe_one_hot": {
        "width-from-data": (lambda y, k=10: F.one_hot(y.long()).float(), "shape"),
        "integer": (lambda y, k=10: F.one_hot(y.long(), k), "dtype"),
        "on-the-cpu": (lambda y, k=10: torch.eye(k)[y.long()], "labels.device|inputs' device"),
    },
    "probe_condition": {
        "label-first": (lambda h, y, k=10: torch.cat([one_hot(y, k), h.flatten(1)], 1), "AFTER the features"),
        "detached": (lambda h, y, k=10: condition(h.detach(), y, k), "detach|differentiable"),
    },
}
CHECKS = sorted(n for n in probing.checks_of(checks) if n.startswith("probe_"))


def test_every_check_has_correct_styles_and_wrong_answers():
    assert set(CORRECT) == set(WRONG) == set(CHECKS)
    assert sum(len(styles) - 1 for styles in CORRECT.values()) >= 5


@pytest.mark.parametrize("name", CHECKS)
def test_checks_accept_correct_answers_in_other_styles(name):
    for style in CORRECT[name].values():
        getattr(checks, name)(style)


@pytest.mark.parametrize("name,wrong", [(n, w) for n in CHECKS for w in WRONG[n]])
def test_checks_reject_typical_mistakes_with_a_hint(name, wrong):
    answer, pattern = WRONG[name][wrong]
    with pytest.raises(probing.Failed, match=pattern):
        getattr(checks, name)(answer)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_verdicts_do_not_depend_on_the_seed(name):
    assert unstable_verdicts(probing.checks_of(checks)[name], CORRECT[name], WRONG[name]) == []


def test_every_condition_of_the_texts_is_drawn():
    assert coverage_gaps(checks) == {}


NOTEBOOK = Notebook("ae_to_cvae", names={"math": math, "torch": torch, "nn": nn, "F": F})


def test_the_source_solutions_pass_every_test_cell():
    assert NOTEBOOK.failing({}) == set()


@pytest.mark.parametrize("mistake", NOTEBOOK.mistakes, ids=lambda m: m.name)
def test_each_manifest_mistake_fails_exactly_its_test_cells(mistake):
    assert NOTEBOOK.failing({mistake.cell: mistake.code}) == set(mistake.fails)
