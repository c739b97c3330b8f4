"""Hidden tests of the chapter "harmonic" (reproducing "VAEs: a harmonic perspective").

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel it
records what the student's function returns on seeded inputs; in the grader the reference from
``genlab`` meets the same inputs, and every record is compared or tested there.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from autograder.probing import Trial, as_number, backward, check, close, describe, legacy_names
from genlab import attacks, lipschitz
from genlab.models import harmonic as H

DTYPES = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------
# the fixed-sigma encoder


SAMPLE_LATENT = {
    "given-eps": "with eps given, z = mu + sigma * eps exactly: sigma is the standard deviation",
    "sigma-forms": "sigma a float or a tensor that broadcasts against mu (0-dim and one per dimension)",
    "fresh-noise": "without eps, standard normal noise from torch.randn_like, new on every call",
    "noise-device": "the noise drawn on mu's device",
    "differentiable": "differentiable in mu and sigma",
    "float32-and-float64": "inputs in float32 and float64",
}
RANDOM = {"repeat": "draws fresh noise: two calls must differ (tested on their own)"}


@check(H.sample_latent, conditions=SAMPLE_LATENT)
def probe_sample_latent(t: Trial, sample_latent) -> None:
    """z = mu + sigma * eps: exact with a given eps; mean mu and std sigma (not sigma^2) without one."""
    hint = "With eps given, z = mu + sigma * eps: sigma is the standard deviation, do not square or exponentiate it."
    t.covers("given-eps", "sigma-forms", "float32-and-float64")
    cases = [  # (mu's shape, sigma, as what, dtype)
        ((5, 3), 0.1, "float", torch.float32),
        ((5, 3), 2.0, "tensor", torch.float64),
        ((2, 4, 6), 0.5, "float", torch.float64),
        ((2, 4, 6), 0.5, "tensor", torch.float32),
        ((4, 3), 0.3, "per-dimension tensor", torch.float64),
    ]
    for shape, sigma, kind, dtype in cases:
        mu, eps = t.randn(*shape, dtype=dtype), t.randn(*shape, dtype=dtype)
        if kind == "float":
            s: Any = sigma
        elif kind == "tensor":
            s = torch.tensor(sigma, dtype=dtype, device=t.device)
        else:
            s = t.rand(shape[-1], dtype=dtype, low=0.1, high=2.0)
        case = (
            f"sigma={sigma} as a {kind}, shape {shape}, {dtype}"
            if kind != "per-dimension tensor"
            else (f"sigma a tensor of shape ({shape[-1]},), shape {shape}, {dtype}")
        )
        got = t.call(sample_latent, mu, s, eps, what=f"sample_latent(mu, sigma, eps), {case}", draws=False)
        t.same(case, got, what=f"sample_latent(mu, sigma, eps), {case}", hint=hint)
    t.covers("fresh-noise", "noise-device")
    mu = torch.full((40_000, 2), 3.0, device=t.device)
    for sigma in (0.3, 2.0):
        z = t.call(
            sample_latent,
            mu,
            sigma,
            what=f"sample_latent(mu, {sigma}) without eps (draw the noise on mu's device, e.g. torch.randn_like(mu))",
            exempt=RANDOM,
        )
        t.check(
            f"samples/{sigma}",
            z,
            what=f"sample_latent(mu = 3, sigma = {sigma}) without eps",
            test=functools.partial(_normal_samples_test, mean=3.0, std=sigma),
        )
    again = [t.call(sample_latent, mu[:10], 1.0, what="sample_latent(mu, 1.0)", exempt=RANDOM) for _ in range(2)]
    t.note("fresh/first", again[0])
    t.check("fresh/second", again[1], what="a second call of sample_latent without eps", test=_differs("fresh/first"))
    t.covers("differentiable")
    mu_g = t.randn(4, 3).requires_grad_()
    sigma_g = torch.tensor(0.7, device=t.device, requires_grad=True)
    eps = t.randn(4, 3)
    backward(t.call(sample_latent, mu_g, sigma_g, eps, what="sample_latent(mu, sigma, eps) with requires_grad inputs"))
    t.same("dmu", mu_g.grad, what="the gradient with respect to mu", hint="dz/dmu = 1: do not detach mu.")
    t.same(
        "dsigma",
        sigma_g.grad,
        what="the gradient with respect to sigma",
        hint="dz/dsigma = eps (the reparameterisation).",
    )


def _normal_samples_test(got: Any, _want: Any, _records: dict, *, mean: float, std: float) -> str | None:
    """Samples of N(mean, std^2), judged in the grader: centre, spread and normality."""
    if not isinstance(got, torch.Tensor) or got.numel() < 1000:
        return f"expected a tensor of samples, got {describe(got)}"
    z = got.double().flatten()
    centre, spread = z.mean().item(), z.std().item()
    if abs(centre - mean) > 6 * std / math.sqrt(len(z)):
        return f"the samples must be centred on mu = {mean}; their mean is {centre:.4f}"
    if abs(spread - std) > 0.03 * std:
        squared = " (that is sigma^2: scale eps by sigma, not sigma^2)" if abs(spread - std**2) < 0.03 * std**2 else ""
        return f"the samples must have standard deviation sigma = {std}; got {spread:.4f}{squared}"
    kurtosis = ((z - centre) / spread).pow(4).mean().item()
    if not 2.7 < kurtosis < 3.3:
        return f"eps must be standard normal (torch.randn_like); its kurtosis is {kurtosis:.2f}, not 3"
    return None


def _differs(first_key: str):
    def test(got, _want, records) -> str | None:
        first = records.get(first_key)
        if (
            isinstance(got, torch.Tensor)
            and isinstance(first, torch.Tensor)
            and got.shape == first.shape
            and torch.equal(got, first)
        ):
            return "two calls returned the same noise: draw fresh noise on every call (do not re-seed)"
        return None

    return test


FIXED_SIGMA_KL = {
    "per-row": "KL(N(mu, sigma^2 I) || N(0, I)) summed over the last dimension: one value per row",
    "sigma-forms": "sigma a float, a 0-dim tensor, or one value per dimension",
    "sigma-values": "sigma below, at and above 1",
    "gradient": "differentiable in mu, with d KL / d mu = mu",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(H.fixed_sigma_kl, conditions=FIXED_SIGMA_KL)
def probe_fixed_sigma_kl(t: Trial, fixed_sigma_kl) -> None:
    """KL(N(mu, sigma^2 I) || N(0, I)) per row, for float and tensor sigmas, and its gradient."""
    hint = "Per dimension KL = (sigma^2 + mu^2 - 1) / 2 - log(sigma), summed over the last dimension only."
    t.covers("per-row", "sigma-forms", "sigma-values", "float32-and-float64")
    cases = [  # (mu's shape, sigma, as what, dtype)
        ((4, 3), 0.1, "float", torch.float32),
        ((7,), 1.0, "tensor", torch.float64),
        ((2, 5, 6), 2.0, "float", torch.float64),
        ((4, 3), 0.5, "tensor", torch.float32),
        ((7,), 2.0, "tensor", torch.float32),
        ((2, 5, 6), 0.5, "float", torch.float32),
    ]
    for shape, sigma, kind, dtype in cases:
        mu = t.randn(*shape, dtype=dtype, scale=1.5)
        s: Any = sigma if kind == "float" else torch.tensor(sigma, dtype=dtype, device=t.device)
        case = f"sigma={sigma} as a {kind}, mu of shape {shape}, {dtype}"
        got = t.call(fixed_sigma_kl, mu, s, what=f"fixed_sigma_kl(mu, sigma), {case}")
        t.same(case, got, what=f"fixed_sigma_kl(mu, sigma), {case}", hint=hint)
    mu = t.randn(6, 4, dtype=torch.float64)
    per_dim = torch.tensor([0.2, 0.5, 1.0, 3.0], dtype=torch.float64, device=t.device)
    got = t.call(fixed_sigma_kl, mu, per_dim, what="fixed_sigma_kl(mu, sigma) with one sigma per dimension")
    t.same(
        "per-dimension",
        got,
        what="fixed_sigma_kl with a per-dimension sigma tensor",
        hint="A sigma tensor of shape (dims,) must broadcast over the rows.",
    )
    t.covers("gradient")
    mu = t.randn(5, 3, dtype=torch.float64).requires_grad_()
    backward(t.call(fixed_sigma_kl, mu, 0.5, what="fixed_sigma_kl(mu, 0.5) with requires_grad inputs"))
    t.same(
        "dmu",
        mu.grad,
        what="the gradient of the KL with respect to mu",
        hint="d KL / d mu must equal mu: the mean term is mu^2 / 2, not mu^2.",
    )


# ----------------------------------------------------------------------------------------------
# the noise-injection training step


class _Recorder:
    """Forward hooks on a HarmonicVAE: what the encoder saw and returned, what the decoder got and gave."""

    def __init__(self, model: H.HarmonicVAE):
        self.seen: dict[str, torch.Tensor] = {}
        self.calls = {"encoder": 0, "decoder": 0}
        self.handles = [
            model.encoder.register_forward_hook(self._hook("encoder")),
            model.decoder.register_forward_hook(self._hook("decoder")),
        ]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.calls[name] += 1
            self.seen[f"{name}_in"] = inputs[0].detach().clone()
            self.seen[f"{name}_out"] = output.detach().clone()

        return hook


SHAPE, LATENT, SIGMA_ENC, N, LR = (6, 2), 3, 0.5, 1024, 0.05
TRAINING = {"repeat": "a training step changes the model by design (two steps in a row are probed)"}


def _kl(mu: torch.Tensor) -> torch.Tensor:
    return ((SIGMA_ENC**2 + mu**2 - 1) / 2 - math.log(SIGMA_ENC)).sum(-1)


def _recorded(records: dict, key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """A floating-point record of this many elements, in float64 and this shape; None for anything else."""
    value = records.get(key)
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() == math.prod(shape):
        return value.double().reshape(shape)
    return None


def _judge_step(
    records: dict,
    tag: str,
    x: torch.Tensor,
    sigma_n: float,
    before: dict[str, torch.Tensor] | str,
    shapes: dict[str, tuple[int, ...]],
) -> str | None:
    """Everything one call of noisy_step must satisfy, from what the hooks saw and the parameters after.

    ``before`` is the parameters before the call, or the tag of the previous call whose recorded
    parameters they are (the student's own noise made them).
    """
    names = list(shapes)
    if isinstance(before, str):
        found = {name: _recorded(records, f"{before}/param/{name}", shapes[name]) for name in names}
        if any(v is None for v in found.values()):
            return "the parameters after the first call could not be read from the hidden test's records"
        before = {name: v for name, v in found.items() if v is not None}
    calls = records.get(f"{tag}/calls")
    if calls != [1, 1]:
        return (
            f"noisy_step should encode and decode the batch once each; encoder and decoder ran {calls} times "
            "(the model's forward() counts as one of each)"
        )
    x = x.reshape(N, -1)
    x_in = _recorded(records, f"{tag}/encoder_in", (N, x.shape[1]))
    mu = _recorded(records, f"{tag}/encoder_out", (N, LATENT))
    z = _recorded(records, f"{tag}/decoder_in", (N, LATENT))
    x_hat = _recorded(records, f"{tag}/decoder_out", (N, x.shape[1]))
    if x_in is None or mu is None or z is None or x_hat is None:
        return "the hidden test could not read what the encoder and decoder saw (did noisy_step use model.encode?)"
    noise = x_in - x
    if sigma_n == 0:
        if noise.abs().max() > 1e-9:
            return "with sigma_n = 0 the encoder must see x unchanged"
    else:
        std = noise.std().item()
        if noise.std(dim=0).min().item() < 0.8 * std:
            return (
                "every example needs its own noise: the noise of one input entry barely varies across the batch; "
                "draw noise with the batch's shape, e.g. torch.randn_like(x)"
            )
        if abs(noise.mean().item()) > 0.03 or abs(std - sigma_n) > 0.04 * sigma_n:
            squared = " (that is sigma_n^2)" if abs(std - sigma_n**2) < 0.04 * sigma_n**2 else ""
            return (
                f"the input noise must be N(0, sigma_n^2) with sigma_n = {sigma_n}: got mean "
                f"{noise.mean().item():.3f}, std {std:.3f}{squared}"
            )
        if noise.std(dim=1).median().item() < 0.7 * sigma_n:
            return "each entry of an example needs its own noise, not one number per example"
    spread = (z - mu).std().item()
    if abs(spread - SIGMA_ENC) > 0.06 * SIGMA_ENC:
        squared = " (that is sigma_enc^2)" if abs(spread - SIGMA_ENC**2) < 0.06 * SIGMA_ENC**2 else ""
        return f"the latent sample should spread around mu with std sigma_enc = {SIGMA_ENC}; got {spread:.3f}{squared}"
    sse = ((x_hat - x) ** 2).sum(1)
    want = (sse + _kl(mu)).mean().item()
    loss = records.get(f"{tag}/loss")
    problem = close(loss, want, rtol=1e-5, atol=1e-8)
    if problem:
        hint = ""
        value = as_number(loss)
        value = math.nan if value is None else value
        noisy_target = (((x_hat - x_in) ** 2).sum(1) + _kl(mu)).mean().item()
        if sigma_n and math.isclose(value, noisy_target, rel_tol=1e-5):
            hint = " You compared the reconstruction with the noisy input; the target is the clean x."
        elif math.isclose(value, want * N, rel_tol=1e-5):
            hint = " You summed over the batch; average over it."
        elif math.isclose(value, sse.mean().item(), rel_tol=1e-5):
            hint = " The KL term is missing."
        return (
            f"the returned loss: {problem}; expected the batch mean of (sum of squared errors to the clean x + "
            f"KL) before the update.{hint} (noisy_step uses your sample_latent and fixed_sigma_kl: make their "
            "tests pass first)"
        )
    # The update must be one optimizer step on the gradient of that loss, old gradients cleared.
    model = H.HarmonicVAE(SHAPE, LATENT, SIGMA_ENC, hidden=8).double()
    params = {k: v.clone().requires_grad_(True) for k, v in before.items()}
    enc = {k[len("encoder.") :]: v for k, v in params.items() if k.startswith("encoder.")}
    dec = {k[len("decoder.") :]: v for k, v in params.items() if k.startswith("decoder.")}
    mu_re = torch.func.functional_call(model.encoder, enc, (x_in,))
    out = torch.func.functional_call(model.decoder, dec, (mu_re + (z - mu),))
    grads = torch.autograd.grad((((out - x) ** 2).sum(1) + _kl(mu_re)).mean(), list(params.values()))
    for name, g in zip(names, grads):
        after = records.get(f"{tag}/param/{name}")
        if not isinstance(after, torch.Tensor) or after.shape != before[name].shape:
            return f"parameter {name} was replaced (got {describe(after)}); update it in place with the optimizer"
        step = before[name] - after.double()
        if step.abs().max() == 0:
            return "noisy_step must update the parameters (optimizer.step())"
        if close(step, LR * g, rtol=1e-4, atol=1e-7):
            return (
                f"parameter {name} did not move by one optimizer step on the loss's gradient: clear old "
                "gradients (optimizer.zero_grad()) before loss.backward(), and detach nothing on the way to the loss"
            )
    return None


def _judge_step_test(_got, _want, records: dict, *, tag, xs, s, b, shapes) -> str | None:
    """:func:`_judge_step` as a ``t.check`` test bound to one call's inputs."""
    return _judge_step(records, tag, xs, s, b, shapes)


NOISY_STEP = {
    "fresh-noise": "N(0, sigma_n^2) noise on the encoder's input, fresh for every entry of every example and call",
    "no-noise": "sigma_n = 0 (the first sweep): the encoder sees x unchanged",
    "clean-target": "the loss is the batch mean of ||x - g(z)||^2 + KL, against the clean x",
    "latent-sample": "z drawn around mu with std sigma_enc (your sample_latent)",
    "one-step": "old gradients cleared, one optimizer step, two steps in a row",
    "python-float": "the loss returned as a float, computed before the update",
}


@check(H.noisy_step, conditions=NOISY_STEP)
def probe_noisy_step(t: Trial, noisy_step) -> None:
    """One SGD step on the noisy-input loss: fresh noise per entry and per call, clean target, mean of SSE + KL."""
    t.covers(*NOISY_STEP)
    x = t.rand(N, *SHAPE, dtype=torch.float64) * 2 - 1
    for sigma_n in (0.0, 0.7):
        model = t.init_module(H.HarmonicVAE(SHAPE, LATENT, SIGMA_ENC, hidden=8), scale=2.0).to(t.device, torch.float64)
        shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        initial = {k: v.detach().cpu().double().clone() for k, v in model.named_parameters()}
        for call in (1, 2):  # twice: noise re-drawn, stale gradients cleared
            before = initial if call == 1 else f"sigma_n={sigma_n}/call1"
            for p in model.parameters():
                p.grad = torch.ones_like(p)  # stale gradients that zero_grad must clear
            rec = _Recorder(model)
            tag = f"sigma_n={sigma_n}/call{call}"
            loss = t.call(
                noisy_step,
                model,
                x,
                sigma_n,
                optimizer,
                what=f"noisy_step(model, x, {sigma_n}, optimizer)",
                exempt=TRAINING,
            )
            rec.remove()
            t.note(f"{tag}/calls", [rec.calls["encoder"], rec.calls["decoder"]])
            for key, value in rec.seen.items():
                t.note(f"{tag}/{key}", value)
            for name, p in model.named_parameters():
                t.note(f"{tag}/param/{name}", p)
            t.check(
                f"{tag}/loss",
                loss,
                what=f"noisy_step with sigma_n = {sigma_n} (call {call})",
                test=functools.partial(_judge_step_test, tag=tag, xs=x.cpu(), s=sigma_n, b=before, shapes=shapes),
            )
        if sigma_n:
            t.check(
                f"{sigma_n}/fresh",
                None,
                what="the noise of two calls of noisy_step",
                test=functools.partial(_fresh_noise_test, sigma_n=sigma_n),
            )


def _fresh_noise_test(_got: Any, _want: Any, records: dict, *, sigma_n: float) -> str | None:
    first, second = (records.get(f"sigma_n={sigma_n}/call{k}/encoder_in") for k in (1, 2))
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and first.shape == second.shape:
        if torch.equal(first, second):
            return "two calls drew the same input noise: draw fresh noise on every call (do not re-seed)"
    return None


# ----------------------------------------------------------------------------------------------
# Lipschitz estimators


def _random_nets(t: Trial, dtype: torch.dtype) -> list[nn.Sequential]:
    nets = [
        H.sigmoid_mlp([6, 16, 16, 3]),
        H.sigmoid_mlp([1, 8, 8, 8, 10]),
        H.sigmoid_mlp([20, 32, 2]),
        nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4)),
        nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 7), nn.Sigmoid(), nn.Linear(7, 2)),
        nn.Sequential(nn.Linear(9, 4)),
    ]
    for net in nets:
        for m in net:
            if isinstance(m, nn.Linear):
                with torch.no_grad():
                    m.weight.copy_(t.randn(*m.weight.shape, dtype=torch.float64).cpu())
                    m.bias.copy_(t.randn(*m.bias.shape, dtype=torch.float64).cpu())
    return [net.to(t.device, dtype) for net in nets]


def _describe(net: nn.Sequential) -> str:
    parts = [f"Linear({m.in_features},{m.out_features})" if isinstance(m, nn.Linear) else type(m).__name__ for m in net]
    return " -> ".join(parts)


def _product_test(sigmoids: int):
    def test(got, want, _records) -> str | None:
        problem = close(got, want, rtol=1e-4)
        if problem and isinstance(got, (int, float, torch.Tensor)):
            value = float(got) if not isinstance(got, torch.Tensor) or got.numel() == 1 else math.nan
            if sigmoids and math.isclose(value, want * 4**sigmoids, rel_tol=1e-4):
                return (
                    problem + ": the sigmoid's slope is at most 1/4 (its derivative s(1 - s) peaks at 1/2 * 1/2), not 1"
                )
            if any(math.isclose(value, v, rel_tol=1e-4) for v in (want**2, want**2 / 0.25**sigmoids)):
                return problem + ": that is the square; use the largest singular value, not its square"
        return problem

    return test


PRODUCT_BOUND = {
    "spectral-norms": "the product of the Linear weights' spectral norms (largest singular values)",
    "activations": "times each activation's largest slope: 1/4 for nn.Sigmoid, 1 for nn.Tanh and nn.ReLU",
    "no-activation": "a network of one Linear layer",
    "a-float": "returned as a float",
    "float32-and-float64": "networks in float32 and float64",
}


@check(lipschitz.spectral_product_bound, conditions=PRODUCT_BOUND)
def probe_product_bound(t: Trial, product_bound) -> None:
    """Product of the layers' spectral norms times each activation's largest slope (sigmoid: 1/4)."""
    t.covers(*PRODUCT_BOUND)
    for dtype in DTYPES:
        for net in _random_nets(t, dtype):
            got = t.call(product_bound, net, what=f"product_bound({_describe(net)}), {dtype}")
            sigmoids = sum(isinstance(m, nn.Sigmoid) for m in net)
            t.check(
                f"{_describe(net)}/{dtype}",
                got,
                what=f"product_bound for {_describe(net)} ({dtype})",
                hint="Multiply the spectral norms (largest singular values) of the weights and the "
                "activations' largest slopes.",
                test=_product_test(sigmoids),
            )


def _power_test(dtype: torch.dtype):
    tol = 2e-3 if dtype == torch.float32 else 1e-4

    def test(got, want, _records) -> str | None:
        value = as_number(got)
        if value is None:
            return f"expected a float, got {describe(got)}"
        if value > want * (1 + tol):
            squared = (
                " (that is the square of the singular value)" if math.isclose(value, want**2, rel_tol=1e-3) else ""
            )
            return (
                f"got {value:.6g}, above the Jacobian's spectral norm {want:.6g} at this point{squared}; ||J v|| for "
                "a unit v can never exceed it (a Frobenius norm, or J^T J v instead of J v?)"
            )
        if value < want * (1 - tol):
            return (
                f"got {value:.6g}, the Jacobian's spectral norm at this point is {want:.6g}: iterate "
                "v <- J^T J v / ||J^T J v|| long enough, then return ||J v||"
            )
        return None

    return test


POWER_ITERATION = {
    "largest-singular-value": "the largest singular value of the Jacobian of net at the point x",
    "never-above": "never above it (||J v|| for a unit v), close to it after the iterations",
    "known-spectrum": "a linear layer whose singular values are known",
    "a-float": "returned as a float",
    "float32-and-float64": "networks and points in float32 and float64",
}
RANDOM_START = {"repeat": "starts from a random vector: two calls agree only as far as the iteration converged"}


@check(lipschitz.jacobian_spectral_norm, conditions=POWER_ITERATION)
def probe_power_iteration_norm(t: Trial, power_iteration_norm) -> None:
    """Largest singular value of the Jacobian at a point: close to the SVD's, never above it."""
    t.covers(*POWER_ITERATION)
    u, _ = torch.linalg.qr(t.randn(6, 6, dtype=torch.float64).cpu())
    v, _ = torch.linalg.qr(t.randn(4, 4, dtype=torch.float64).cpu())
    lin = nn.Linear(4, 6).double()
    with torch.no_grad():  # a linear map with a known spectrum: 3, 1.5, 1, 0.5
        lin.weight.copy_(u[:, :4] @ torch.diag(torch.tensor([3.0, 1.5, 1.0, 0.5], dtype=torch.float64)) @ v.T)
    lin.to(t.device)
    got = t.call(
        power_iteration_norm,
        lin,
        torch.zeros(4, dtype=torch.float64, device=t.device),
        what="power_iteration_norm on a linear layer with singular values 3, 1.5, 1, 0.5",
        exempt=RANDOM_START,
    )
    t.check(
        "linear",
        got,
        what="power_iteration_norm of a linear layer with singular values 3, 1.5, 1, 0.5",
        test=_power_test(torch.float64),
    )
    nets = _random_nets(t, torch.float64)[::2]  # sigmoids deep and wide, and a ReLU: three networks
    for k, net in enumerate(nets):  # one point per network, float32 and float64 by turns
        dtype = DTYPES[k % 2]
        net.to(dtype)
        x = t.randn(next(m for m in net if isinstance(m, nn.Linear)).in_features, dtype=dtype)
        got = t.call(
            power_iteration_norm,
            net,
            x,
            what=f"power_iteration_norm({_describe(net)}, x), {dtype}",
            exempt=RANDOM_START,
        )
        t.check(
            f"{k}/{dtype}",
            got,
            what=f"power_iteration_norm for {_describe(net)} ({dtype})",
            test=_power_test(dtype),
        )


# ----------------------------------------------------------------------------------------------
# the attack's projection


PROJECT_L2 = {
    "per-example": "the norm of each example over all its other dimensions together",
    "inside-unchanged": "a perturbation inside the ball left as it is",
    "outside-scaled": "one outside scaled onto the sphere, delta * C / ||delta||",
    "zero": "a zero perturbation stays zero",
    "shapes": "perturbations (N, D) and (N, C, H, W), N = 1 included",
    "float32-and-float64": "perturbations in float32 and float64",
}


@check(attacks.project_l2, conditions=PROJECT_L2)
def probe_project_l2(t: Trial, project_l2) -> None:
    """Per-example projection onto the L2 ball: inside unchanged, outside scaled onto the sphere."""
    t.covers(*PROJECT_L2)
    hint = (
        "Per example (the norm over all but the batch dimension): leave a perturbation inside the ball as it "
        "is, scale one outside onto the sphere, keeping its direction."
    )
    for dtype in DTYPES:
        for shape in [(6, 10), (4, 3, 5, 5), (1, 7)]:
            delta = t.randn(*shape, dtype=dtype)
            radius = float(delta.flatten(1).norm(dim=1).median())  # some examples inside, some outside
            got = t.call(project_l2, delta.clone(), radius, what=f"project_l2(delta of shape {shape}, {radius:.3g})")
            t.same(f"{shape}/{dtype}", got, what=f"project_l2 on delta of shape {shape}, {dtype}", hint=hint)
    zero = t.call(project_l2, torch.zeros(3, 4, device=t.device), 1.0, what="project_l2 of the zero perturbation")
    t.same(
        "zero",
        zero,
        what="project_l2 of the zero perturbation",
        hint="The zero perturbation stays zero (no division by a zero norm).",
    )


legacy_names(globals())
