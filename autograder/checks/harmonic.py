"""Checks of the chapter "harmonic" (reproducing "VAEs: a harmonic perspective").

Each check takes the student's function, runs it on random inputs of several shapes and dtypes on
``genlab.device()``, and compares with an oracle computed here (closed forms, exact SVDs) or with
the genlab package. The oracles never call the functions a notebook may hand to the runner, so a
notebook cannot change them.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

import genlab
from genlab.models.harmonic import HarmonicVAE, sigmoid_mlp

DTYPES = (torch.float32, torch.float64)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-10}


def _as_float(value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        assert value.numel() == 1, f"{what} should be one number, got a tensor of shape {tuple(value.shape)}"
        value = value.item()
    assert isinstance(value, (int, float)), f"{what} should be a float, got {type(value).__name__}"
    return float(value)


# ----------------------------------------------------------------------------------------------
# the fixed-sigma encoder


def check_fixed_sigma_kl(fixed_sigma_kl: Callable) -> None:
    """KL(N(mu, sigma^2 I) || N(0, I)) per row, against torch.distributions, for floats and tensors."""
    dev = genlab.device()
    g = torch.Generator().manual_seed(0)
    zero = fixed_sigma_kl(torch.zeros(3, 5, device=dev), 1.0)
    assert torch.allclose(zero, torch.zeros(3, device=dev), atol=1e-6), (
        f"fixed_sigma_kl(mu=0, sigma=1) must be 0 (the posterior equals the prior); got {zero.tolist()}. "
        "Per dimension the KL is (sigma^2 + mu^2 - 1) / 2 - log(sigma)."
    )
    for dtype in DTYPES:
        for shape in [(4, 3), (7,), (2, 5, 6)]:
            for sigma in (0.1, 0.5, 1.0, 2.0):
                mu = (torch.randn(shape, generator=g) * 1.5).to(dev, dtype)
                want = kl_divergence(Normal(mu, torch.full_like(mu, sigma)), Normal(torch.zeros_like(mu), 1.0)).sum(-1)
                for s in (sigma, torch.tensor(sigma, dtype=dtype, device=dev)):
                    got = fixed_sigma_kl(mu, s)
                    assert isinstance(got, torch.Tensor), f"fixed_sigma_kl must return a tensor, got {type(got).__name__}"
                    assert got.shape == want.shape, (
                        f"for mu of shape {tuple(shape)} expected one KL per row, shape {tuple(want.shape)}, "
                        f"got {tuple(got.shape)} (sum over the last dimension only)"
                    )
                    assert got.dtype == dtype, f"fixed_sigma_kl changed the dtype {dtype} to {got.dtype}"
                    assert torch.allclose(got, want, **_tol(dtype)), (
                        f"wrong KL for sigma={sigma}, {dtype}: expected {want.flatten()[:3].tolist()}, "
                        f"got {got.flatten()[:3].tolist()}. Per dimension KL = (sigma^2 + mu^2 - 1)/2 - log(sigma)."
                    )
    # per-dimension sigma broadcasts along the rows
    mu = torch.randn(6, 4, generator=g, dtype=torch.float64).to(dev)
    sig = torch.tensor([0.2, 0.5, 1.0, 3.0], dtype=torch.float64, device=dev)
    want = kl_divergence(Normal(mu, sig.expand_as(mu)), Normal(torch.zeros_like(mu), 1.0)).sum(-1)
    assert torch.allclose(fixed_sigma_kl(mu, sig), want, rtol=1e-9), "a per-dimension sigma tensor must broadcast over rows"
    # the gradient pulls each mean towards 0 with slope 1 (d KL / d mu = mu)
    mu = torch.randn(5, 3, generator=g, dtype=torch.float64).to(dev).requires_grad_(True)
    fixed_sigma_kl(mu, 0.5).sum().backward()
    assert mu.grad is not None and torch.allclose(mu.grad, mu.detach(), rtol=1e-9), (
        "d KL / d mu must equal mu: the mean term is mu^2 / 2, not mu^2"
    )


def check_sample_latent(sample_latent: Callable) -> None:
    """z = mu + sigma * eps: exact with a given eps; mean mu and std sigma (not sigma^2) without one."""
    dev = genlab.device()
    g = torch.Generator().manual_seed(1)
    for dtype in DTYPES:
        for shape in [(5, 3), (2, 4, 6)]:
            mu = torch.randn(shape, generator=g).to(dev, dtype)
            eps = torch.randn(shape, generator=g).to(dev, dtype)
            for sigma in (0.1, 0.5, 2.0):
                for s in (sigma, torch.tensor(sigma, dtype=dtype, device=dev)):
                    got = sample_latent(mu, s, eps)
                    assert got.shape == mu.shape and got.dtype == dtype, (
                        f"sample_latent must keep the shape {tuple(mu.shape)} and dtype {dtype}, "
                        f"got {tuple(got.shape)} {got.dtype}"
                    )
                    assert torch.allclose(got, mu + sigma * eps, **_tol(dtype)), (
                        f"with eps given, z must be mu + sigma * eps (sigma={sigma}); "
                        "sigma is the standard deviation: do not square it or exponentiate it"
                    )
    torch.manual_seed(2)
    mu = torch.full((40_000, 2), 3.0, device=dev)
    for sigma in (0.3, 2.0):
        z = sample_latent(mu, sigma)
        std = z.std().item()
        assert abs(z.mean().item() - 3.0) < 0.05, f"samples must be centred on mu (got mean {z.mean().item():.3f}, mu = 3)"
        assert abs(std - sigma) < 0.03 * sigma, (
            f"samples must have standard deviation sigma = {sigma}; got {std:.4f}"
            + (" (that is sigma^2: scale eps by sigma, not sigma^2)" if abs(std - sigma**2) < 0.03 * sigma**2 else "")
        )
        kurt = (((z - z.mean()) / std) ** 4).mean().item()
        assert 2.7 < kurt < 3.3, f"eps must be standard normal (torch.randn_like); its kurtosis is {kurt:.2f}, not 3"
    a, b = sample_latent(mu[:10], 1.0), sample_latent(mu[:10], 1.0)
    assert not torch.equal(a, b), "two calls without eps must draw fresh noise"
    mu_g = torch.randn(4, 3, device=dev, requires_grad=True)
    sig_g = torch.tensor(0.7, device=dev, requires_grad=True)
    eps = torch.randn(4, 3, device=dev)
    sample_latent(mu_g, sig_g, eps).sum().backward()
    assert mu_g.grad is not None and torch.allclose(mu_g.grad, torch.ones_like(mu_g)), (
        "gradients must flow to mu with dz/dmu = 1 (do not detach mu)"
    )
    assert sig_g.grad is not None and torch.allclose(sig_g.grad, eps.sum()), "dz/dsigma must be eps (the reparameterisation)"


# ----------------------------------------------------------------------------------------------
# the noise-injection training step


class _Recorder:
    """Forward hooks on a HarmonicVAE: what the encoder saw and returned, what the decoder got and gave."""

    def __init__(self, model: HarmonicVAE):
        self.seen: dict[str, torch.Tensor] = {}
        self.calls = {"encoder": 0, "decoder": 0}
        model.encoder.register_forward_hook(self._hook("encoder"))
        model.decoder.register_forward_hook(self._hook("decoder"))

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.calls[name] += 1
            self.seen[f"{name}_in"] = inputs[0].detach().clone()
            self.seen[f"{name}_out"] = output.detach().clone()

        return hook


def _fixed_kl(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    s = torch.full_like(mu, sigma)
    return kl_divergence(Normal(mu, s), Normal(torch.zeros_like(mu), 1.0)).sum(-1)


def check_noisy_step(noisy_step: Callable) -> None:
    """One SGD step on the noisy-input loss: fresh noise per entry, clean target, mean of SSE + KL."""
    dev = genlab.device()
    torch.manual_seed(3)
    shape, latent, sigma_enc = (6, 2), 3, 0.5
    n = 1024
    x = (torch.rand(n, *shape) * 2 - 1).to(dev, torch.float64)
    for sigma_n in (0.0, 0.7):
        model = HarmonicVAE(shape, latent, sigma_enc, hidden=8).to(dev, torch.float64)
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        for p in model.parameters():  # stale gradients that zero_grad must clear
            p.grad = torch.ones_like(p)
        rec = _Recorder(model)
        lr = 0.05
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        loss = _as_float(noisy_step(model, x, sigma_n, opt), "noisy_step's return value")
        assert rec.calls["encoder"] == 1 and rec.calls["decoder"] == 1, (
            f"noisy_step should encode and decode the batch once each; encoder ran {rec.calls['encoder']} times, "
            f"decoder {rec.calls['decoder']} times"
        )
        x_in = rec.seen["encoder_in"].reshape(n, -1)
        noise = x_in - x.reshape(n, -1)
        if sigma_n == 0:
            assert torch.allclose(noise, torch.zeros_like(noise)), "with sigma_n = 0 the encoder must see x unchanged"
        else:
            across = noise.std(dim=0).min().item()
            assert across > 0.8 * noise.std().item(), (
                "every example needs its own noise: the noise of one input entry barely varies across the batch "
                f"(std {across:.3g}); draw noise with the batch's shape, e.g. torch.randn_like(x)"
            )
            std = noise.std().item()
            assert abs(noise.mean().item()) < 0.03 and abs(std - sigma_n) < 0.04 * sigma_n, (
                f"the input noise must be N(0, sigma_n^2) with sigma_n = {sigma_n}: got mean {noise.mean().item():.3f}, "
                f"std {std:.3f}" + (" (that is sigma_n^2)" if abs(std - sigma_n**2) < 0.04 * sigma_n**2 else "")
            )
            within = noise.std(dim=1).median().item()
            assert within > 0.7 * sigma_n, "each entry of an example needs its own noise, not one number per example"
        mu = rec.seen["encoder_out"]
        z = rec.seen["decoder_in"]
        spread = (z - mu).std().item()
        assert abs(spread - sigma_enc) < 0.06 * sigma_enc, (
            f"the latent sample should spread around mu with std sigma_enc = {sigma_enc}; got {spread:.3f}"
            + (" (that is sigma_enc^2)" if abs(spread - sigma_enc**2) < 0.06 * sigma_enc**2 else "")
        )
        x_hat = rec.seen["decoder_out"].reshape(n, -1)
        sse = ((x_hat - x.reshape(n, -1)) ** 2).sum(1)
        want = (sse + _fixed_kl(mu, sigma_enc)).mean().item()
        noisy_target = (((x_hat - x_in) ** 2).sum(1) + _fixed_kl(mu, sigma_enc)).mean().item()
        hint = ""
        if sigma_n and math.isclose(loss, noisy_target, rel_tol=1e-6):
            hint = " You compared the reconstruction with the noisy input; the target is the clean x."
        elif math.isclose(loss, want * n, rel_tol=1e-6):
            hint = " You summed over the batch; average over it."
        elif math.isclose(loss, sse.mean().item(), rel_tol=1e-6):
            hint = " The KL term is missing."
        assert math.isclose(loss, want, rel_tol=1e-6), (
            f"noisy_step returned {loss:.6g}; the batch mean of (sum of squared errors to the clean x + KL) "
            f"before the update is {want:.6g}.{hint} (noisy_step uses your sample_latent and fixed_sigma_kl: "
            "make their tests pass first)"
        )
        # The update must be one optimizer step on the gradient of that loss (with old gradients cleared).
        params = {k: v.clone().requires_grad_(True) for k, v in before.items()}
        eps_shift = (z - mu).detach()
        mu_re = torch.func.functional_call(model.encoder, {k[len("encoder."):]: v for k, v in params.items() if k.startswith("encoder.")}, (x_in,))
        out = torch.func.functional_call(model.decoder, {k[len("decoder."):]: v for k, v in params.items() if k.startswith("decoder.")}, (mu_re + eps_shift,))
        ref = (((out - x.reshape(n, -1)) ** 2).sum(1) + _fixed_kl(mu_re, sigma_enc)).mean()
        grads = torch.autograd.grad(ref, list(params.values()))
        for (name, p), g0 in zip(model.named_parameters(), grads):
            step = before[name] - p.detach()
            assert not torch.allclose(step, torch.zeros_like(step)), "noisy_step must update the parameters (optimizer.step())"
            assert torch.allclose(step, lr * g0, rtol=1e-5, atol=1e-9), (
                f"parameter {name} did not move by one optimizer step on the loss's gradient; clear old gradients "
                "(optimizer.zero_grad()) before loss.backward(), and do not detach anything on the path to the loss"
            )


# ----------------------------------------------------------------------------------------------
# Lipschitz estimators


def _random_nets(dtype: torch.dtype) -> list[nn.Sequential]:
    torch.manual_seed(4)
    nets = [
        sigmoid_mlp([6, 16, 16, 3]),
        sigmoid_mlp([1, 8, 8, 8, 10]),
        sigmoid_mlp([20, 32, 2]),
        nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4)),
        nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 7), nn.Sigmoid(), nn.Linear(7, 2)),
        nn.Sequential(nn.Linear(9, 4)),
    ]
    for net in nets:
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0)
    return [net.to(genlab.device(), dtype) for net in nets]


def check_product_bound(product_bound: Callable) -> None:
    """Product of the layers' spectral norms times each activation's largest slope (sigmoid: 1/4)."""
    from genlab.lipschitz import spectral_product_bound

    for dtype in DTYPES:
        for net in _random_nets(dtype):
            got = _as_float(product_bound(net), "product_bound(net)")
            want = float(spectral_product_bound(net))
            n_sig = sum(isinstance(m, nn.Sigmoid) for m in net)
            hint = ""
            if n_sig and math.isclose(got, want * 4**n_sig, rel_tol=1e-4):
                hint = " The sigmoid's slope is at most 1/4 (its derivative s(1 - s) peaks at 1/2 * 1/2), not 1."
            elif math.isclose(got, want**2, rel_tol=1e-4):
                hint = " That is the square: use the largest singular value, not its square."
            assert math.isclose(got, want, rel_tol=1e-4), (
                f"product_bound gave {got:.6g}, expected {want:.6g} for {_describe(net)} ({dtype}).{hint}"
                " Multiply the spectral norms (largest singular values) of the weights and the activations' slopes."
            )


def _describe(net: nn.Sequential) -> str:
    parts = [f"Linear({m.in_features},{m.out_features})" if isinstance(m, nn.Linear) else type(m).__name__ for m in net]
    return " -> ".join(parts)


def _jacobian_norm(net: nn.Module, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(net, x)
    return torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), ord=2).item()


def check_power_iteration_norm(power_iteration_norm: Callable) -> None:
    """Largest singular value of the Jacobian at a point: close to the SVD's, never above it."""
    dev = genlab.device()
    # a linear map with a known spectrum: 3, 1.5, 1, 0.5
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64))
    w = u[:, :4] @ torch.diag(torch.tensor([3.0, 1.5, 1.0, 0.5], dtype=torch.float64)) @ v.T
    lin = nn.Linear(4, 6).to(dev, torch.float64)
    with torch.no_grad():
        lin.weight.copy_(w.to(dev))
    got = _as_float(power_iteration_norm(lin, torch.zeros(4, dtype=torch.float64, device=dev)), "power_iteration_norm")
    hint = " (that is the square of the singular value)" if math.isclose(got, 9.0, rel_tol=1e-3) else ""
    assert math.isclose(got, 3.0, rel_tol=1e-4), (
        f"for a linear layer with singular values 3, 1.5, 1, 0.5 the Jacobian's norm is 3; got {got:.6g}{hint}"
    )
    g = torch.Generator().manual_seed(7)
    for dtype in DTYPES:
        tol = 2e-3 if dtype == torch.float32 else 1e-4
        for net in _random_nets(dtype):
            n_in = next(m for m in net if isinstance(m, nn.Linear)).in_features
            values = []
            for _ in range(2):
                x = torch.randn(n_in, generator=g).to(dev, dtype)
                want = _jacobian_norm(net, x)
                got = _as_float(power_iteration_norm(net, x), "power_iteration_norm")
                values.append(got)
                assert got <= want * (1 + tol), (
                    f"power_iteration_norm gave {got:.6g}, above the Jacobian's spectral norm {want:.6g} at this point "
                    f"({_describe(net)}, {dtype}); ||J v|| for a unit v can never exceed it (Frobenius norm?)"
                )
                assert got >= want * (1 - tol), (
                    f"power_iteration_norm gave {got:.6g}, the Jacobian's spectral norm at this point is {want:.6g} "
                    f"({_describe(net)}, {dtype}): iterate v <- J^T J v / ||J^T J v|| long enough, return ||J v||"
                )


# ----------------------------------------------------------------------------------------------
# the attack's projection


def check_project_l2(project_l2: Callable) -> None:
    """Per-example projection onto the L2 ball: inside unchanged, outside scaled onto the sphere."""
    from genlab.attacks import project_l2 as reference

    dev = genlab.device()
    g = torch.Generator().manual_seed(8)
    for dtype in DTYPES:
        for shape in [(6, 10), (4, 3, 5, 5), (1, 7)]:
            delta = torch.randn(shape, generator=g).to(dev, dtype)
            norms = delta.flatten(1).norm(dim=1)
            radius = float(norms.median())  # some examples inside, some outside
            got = project_l2(delta.clone(), radius)
            assert got.shape == delta.shape and got.dtype == dtype, (
                f"project_l2 must keep the shape {tuple(shape)} and dtype {dtype}, got {tuple(got.shape)} {got.dtype}"
            )
            got_norms = got.flatten(1).norm(dim=1)
            inside = norms <= radius
            assert torch.allclose(got[inside], delta[inside], **_tol(dtype)), (
                "a perturbation already inside the ball must stay as it is (do not rescale it up to the radius)"
            )
            assert torch.allclose(got_norms[~inside], torch.full_like(got_norms[~inside], radius), **_tol(dtype)), (
                f"a perturbation outside the ball must end on its sphere (norm {radius:.4g}); got norms "
                f"{got_norms[~inside].tolist()} — the norm is taken per example, over all but the batch dimension"
            )
            cos = nn.functional.cosine_similarity(got.flatten(1), delta.flatten(1), dim=1)
            assert torch.allclose(cos, torch.ones_like(cos), atol=1e-4), "the projection must keep each direction (scale, do not clip coordinates)"
            assert torch.allclose(got, reference(delta.clone(), radius), **_tol(dtype)), "project_l2 disagrees with genlab.attacks.project_l2"
    zero = project_l2(torch.zeros(3, 4, device=dev), 1.0)
    assert torch.isfinite(zero).all() and torch.equal(zero, torch.zeros(3, 4, device=dev)), (
        "the zero perturbation must stay zero (no division by a zero norm)"
    )
