"""Hidden-test checks of the chapter "From autoencoders to conditional VAEs" (``ae_to_cvae``).

Every ``check_*`` takes the student's object, compares it with the reference in ``genlab`` on
random inputs (several shapes, float32 and float64, on ``genlab.device()``), checks the properties
the exercise asks for, and raises ``AssertionError`` with a message the student can act on.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

import genlab
from genlab import latent, losses, train
from genlab.models import mlp

DTYPES = (torch.float32, torch.float64)
# Tolerances per dtype: float32 sums of a few hundred terms keep about 5 significant digits.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-9)}


# ----------------------------------------------------------------------------- helpers


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape: Sequence[int], gen: torch.Generator, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(tuple(shape), generator=gen, dtype=torch.float64)).to(genlab.device(), dtype)


def _rand(shape: Sequence[int], gen: torch.Generator, dtype=torch.float32, low=0.0, high=1.0) -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=gen, dtype=torch.float64)
    return (low + (high - low) * u).to(genlab.device(), dtype)


def _call(fn: Callable, *args, what: str, **kwargs):
    """Call the student's code; turn a crash into an AssertionError that says where it happened."""
    try:
        return fn(*args, **kwargs)
    except AssertionError:
        raise
    except Exception as exc:  # the student's code may raise anything
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from None


def _as_tensor(value, what: str) -> torch.Tensor:
    assert isinstance(value, torch.Tensor), f"{what} should return a torch.Tensor, got {type(value).__name__}"
    return value


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, hint: str = "", **tol) -> None:
    tol = tol or TOL.get(expected.dtype, TOL[torch.float32])
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}. {hint}".strip()
    )
    actual = actual.detach().to(expected.device, expected.dtype)
    if not torch.allclose(actual, expected.detach(), **tol):
        diff = (actual - expected).abs()
        i = int(diff.flatten().argmax())
        raise AssertionError(
            f"{what}: wrong values (largest difference {diff.max().item():.3g} at flat index {i}: "
            f"got {actual.flatten()[i].item():.6g}, expected {expected.flatten()[i].item():.6g}). {hint}".strip()
        )


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _check_mlp(cls, args: tuple[int, int], hidden: tuple[int, int], reference_cls, kind: str) -> None:
    """Shared check of the encoder and decoder MLPs: layer sizes, then the function they compute."""
    in_size, out_size = args
    torch.manual_seed(0)
    net = _call(cls, *args, what=f"{kind}{args}")
    assert isinstance(net, nn.Module), f"{kind} must be an nn.Module subclass"
    sizes = [in_size, *hidden, out_size]
    expected = [(sizes[i + 1], sizes[i]) for i in range(3)]
    got = [tuple(m.weight.shape) for m in _linears(net)]
    assert got == expected, (
        f"{kind}{args}: expected three nn.Linear layers {' -> '.join(map(str, sizes))}, i.e. weight shapes "
        f"{expected}; found {got}"
    )
    assert all(m.bias is not None for m in _linears(net)), f"{kind}{args}: every nn.Linear should keep its bias"
    reference = reference_cls(*args)
    n_ref = sum(p.numel() for p in reference.parameters())
    n_got = sum(p.numel() for p in net.parameters())
    assert n_got == n_ref, f"{kind}{args}: {n_got} parameters, expected {n_ref} (only the three linear layers)"
    for mine, ref in zip(_linears(net), _linears(reference)):  # same weights: compare the functions
        ref.weight.data.copy_(mine.weight.data)
        ref.bias.data.copy_(mine.bias.data)
    gen = _generator(sum(args))
    for dtype in DTYPES:
        net.to(genlab.device(), dtype)
        reference.to(genlab.device(), dtype)
        for n in (1, 5):
            if kind == "Encoder" and in_size == 784:
                x = _rand((n, 1, 28, 28), gen, dtype)
            elif kind == "Encoder":
                x = _rand((n, in_size), gen, dtype)
            else:
                x = _randn((n, in_size), gen, dtype, scale=2.0)
            y = _as_tensor(_call(net, x, what=f"{kind}{args} on input of shape {tuple(x.shape)}"), f"{kind}.forward")
            if kind == "Decoder":
                assert y.min() >= 0 and y.max() <= 1, "Decoder outputs must be probabilities in [0, 1]: end with a Sigmoid"
            hint = (
                "Check the order of the layers and where the activations go: ReLU after the first two "
                "linear layers only" + (", and a Sigmoid at the very end." if kind == "Decoder" else
                                        "; the last layer has no activation (means and log-stds can be negative).")
            )
            _assert_close(y, reference(x), f"{kind}{args} on input of shape {tuple(x.shape)}", hint)


# ----------------------------------------------------------------------------- auto-encoder


def check_encoder(Encoder) -> None:
    """``Encoder(input_size, out_size)``: flatten, input_size -> 256 -> 64 -> out_size with ReLUs between."""
    for args in [(784, 16), (784, 4), (30, 3)]:
        _check_mlp(Encoder, args, (256, 64), mlp.Encoder, "Encoder")


def check_decoder(Decoder) -> None:
    """``Decoder(in_size, output_size)``: in_size -> 64 -> 256 -> output_size, ReLUs, sigmoid output."""
    for args in [(16, 784), (4, 784), (3, 30)]:
        _check_mlp(Decoder, args, (64, 256), mlp.Decoder, "Decoder")


def _tiny_autoencoder(d: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 6), nn.ReLU(), nn.Linear(6, d), nn.Sigmoid())


def check_ae_train_step(ae_train_step) -> None:
    """One step = zero_grad, BCE(recon, x) summed over pixels and averaged over the batch, backward, step."""
    dev = genlab.device()
    for dtype, shape in [(torch.float32, (8, 1, 6, 6)), (torch.float64, (5, 36)), (torch.float32, (3, 1, 6, 6))]:
        gen = _generator(len(shape) + shape[0])
        mine = _tiny_autoencoder(36, seed=shape[0]).to(dev, dtype)
        ref = _tiny_autoencoder(36, seed=shape[0]).to(dev, dtype)
        opt_mine = torch.optim.SGD(mine.parameters(), lr=0.05)
        opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05)
        before = [p.detach().clone() for p in mine.parameters()]
        # grey values and exact 0/1 pixels, as in real images
        batches = [_rand(shape, gen, dtype), (_rand(shape, gen, dtype) > 0.6).to(dtype)]
        for k, x in enumerate(batches, start=1):
            loss = _call(ae_train_step, mine, opt_mine, x.clone(), what=f"ae_train_step (step {k})")
            expected_loss = train.ae_train_step(ref, opt_ref, x.clone())
            assert isinstance(loss, (float, torch.Tensor)), "ae_train_step should return the loss (a float)"
            loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else loss
            assert math.isclose(loss, expected_loss, rel_tol=1e-4, abs_tol=1e-4), (
                f"step {k} on a batch of shape {shape}: returned loss {loss:.6g}, expected {expected_loss:.6g}. "
                "Return the loss computed before the update: binary cross-entropy of the input x under the "
                "reconstruction, F.binary_cross_entropy(recon, target) with the reconstruction FIRST and "
                "the target x second, summed over pixels and averaged over the batch."
            )
            if k == 1 and all(torch.equal(b, p.detach()) for b, p in zip(before, mine.parameters())):
                raise AssertionError(
                    "the parameters did not change after one step: call loss.backward() and then "
                    "optimizer.step() (and clear gradients before the backward pass, not between backward and step)"
                )
            for (name, p), q in zip(mine.named_parameters(), ref.parameters()):
                if not torch.allclose(p.detach(), q.detach(), rtol=1e-4, atol=1e-5):
                    if k == 1:
                        hint = ("the first update differs from one SGD step on the loss: check the loss (BCE "
                                "argument order: reconstruction first, target second; sum over pixels, mean "
                                "over the batch) and that you call backward() then optimizer.step() once")
                    else:
                        hint = ("the first update was right but the second was not: the gradients of the "
                                "previous step were still there. Call optimizer.zero_grad() before backward()")
                    raise AssertionError(f"parameter {name!r} after step {k}: {hint}")


# ----------------------------------------------------------------------------- VAE


def check_reparameterize(reparameterize) -> None:
    """``z = mu + exp(logstd) * eps``: values with a given eps, gradients, and the sampling distribution."""
    dev = genlab.device()
    for dtype in DTYPES:
        for shape in [(3,), (4, 5), (2, 3, 4)]:
            gen = _generator(len(shape))
            mu = _randn(shape, gen, dtype, scale=2.0).requires_grad_()
            logstd = _rand(shape, gen, dtype, low=-1.0, high=1.0).requires_grad_()
            eps = _randn(shape, gen, dtype)
            z = _as_tensor(_call(reparameterize, mu, logstd, eps, what="reparameterize(mu, logstd, eps)"),
                           "reparameterize")
            assert z.dtype == dtype, f"reparameterize returned {z.dtype} for {dtype} inputs"
            expected = mlp.reparameterize(mu.detach(), logstd.detach(), eps)
            hint = ("The standard deviation is exp(logstd): z = mu + exp(logstd) * eps. Not exp(logstd)**2 "
                    "(that is the variance), not logstd itself, and use the eps you are given.")
            _assert_close(z, expected, f"reparameterize with shape {shape}, {dtype}", hint)
            weights = _randn(shape, gen, dtype)
            assert z.requires_grad, ("the sample is cut off from the graph: compute it from mu and logstd with "
                                     "torch operations (no .detach(), .item(), numpy or torch.normal)")
            (z * weights).sum().backward()
            assert mu.grad is not None and logstd.grad is not None, "gradients must reach both mu and logstd"
            _assert_close(mu.grad, weights, "gradient of the sample with respect to mu", "dz/dmu must be 1.")
            _assert_close(logstd.grad, weights * torch.exp(logstd.detach()) * eps,
                          "gradient of the sample with respect to logstd", "dz/dlogstd must be exp(logstd) * eps.")
    # Without eps: fresh standard normal noise, independent for every entry.
    torch.manual_seed(1234)
    n = 200_000
    mu = torch.tensor([-2.0, 0.0, 1.0, 3.0], device=dev)
    logstd = torch.tensor([-1.0, 0.0, 0.5, 1.0], device=dev)
    z = _as_tensor(_call(reparameterize, mu.expand(n, 4), logstd.expand(n, 4), what="reparameterize(mu, logstd)"),
                   "reparameterize")
    assert tuple(z.shape) == (n, 4), f"reparameterize(mu, logstd) returned shape {tuple(z.shape)}, expected {(n, 4)}"
    z = z.detach().double()
    std = torch.exp(logstd).double()
    mean_err = ((z.mean(0) - mu.double()) / (std / math.sqrt(n))).abs().max().item()
    rel_std_err = ((z.std(0) / std) - 1).abs().max().item()
    assert mean_err < 6 and rel_std_err < 0.02, (
        f"without eps, samples of N(mu, exp(logstd)^2) should have mean mu and std exp(logstd); got means "
        f"{z.mean(0).tolist()} and stds {z.std(0).tolist()} for mu={mu.tolist()}, "
        f"exp(logstd)={std.tolist()}. Draw eps with torch.randn_like(mu) (standard normal, one per entry)."
    )
    z2 = _call(reparameterize, mu, logstd, what="reparameterize(mu, logstd)")
    z3 = _call(reparameterize, mu, logstd, what="reparameterize(mu, logstd)")
    assert not torch.equal(z2, z3), "two calls without eps returned the same sample: draw new noise on every call"


def check_gaussian_kl(gaussian_kl) -> None:
    """Closed-form KL(q || p) of diagonal Gaussians, summed over the last dimension."""
    for dtype in DTYPES:
        for shape in [(7,), (5, 3), (2, 4, 6)]:
            gen = _generator(sum(shape))
            mu_q, mu_p = _randn(shape, gen, dtype, 1.5), _randn(shape, gen, dtype, 1.5)
            ls_q = _rand(shape, gen, dtype, -1.5, 1.0)
            ls_p = _rand(shape, gen, dtype, -1.0, 1.0)
            hint = ("Per dimension KL(q||p) = log(sigma_p/sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) "
                    "- 1/2, summed over the last dimension. q (the first two arguments) comes first.")
            got = _as_tensor(_call(gaussian_kl, mu_q, ls_q, mu_p, ls_p, what="gaussian_kl(mu_q, logstd_q, mu_p, logstd_p)"),
                             "gaussian_kl")
            _assert_close(got, losses.gaussian_kl(mu_q, ls_q, mu_p, ls_p),
                          f"gaussian_kl on inputs of shape {shape}, {dtype}", hint)
            assert got.dtype == dtype, f"gaussian_kl returned {got.dtype} for {dtype} inputs"
            prior = _as_tensor(_call(gaussian_kl, mu_q, ls_q, what="gaussian_kl(mu_q, logstd_q)"), "gaussian_kl")
            _assert_close(prior, losses.gaussian_kl(mu_q, ls_q),
                          f"gaussian_kl(mu_q, logstd_q) against the standard normal prior, shape {shape}", hint)
            assert (got >= -1e-6).all() and (prior >= -1e-6).all(), "a KL divergence is never negative"
            same = _call(gaussian_kl, mu_q, ls_q, mu_q.clone(), ls_q.clone(), what="gaussian_kl(q, q)")
            assert same.abs().max().item() <= 1e-6, (
                f"KL(q||q) must be 0, got up to {same.abs().max().item():.3g}: check the constant -1/2 per dimension"
            )
            shifted = gaussian_kl(mu_q, ls_q, mu_q + 0.5, ls_q)
            assert (shifted > 0).all(), "KL between Gaussians with different means must be positive"
        # Gradients reach every parameter of q.
        mu = _randn((4, 3), _generator(7), dtype).requires_grad_()
        ls = _rand((4, 3), _generator(8), dtype, -1, 1).requires_grad_()
        out = _call(gaussian_kl, mu, ls, what="gaussian_kl(mu, logstd) with requires_grad inputs")
        out.sum().backward()
        assert mu.grad is not None and ls.grad is not None, "gradients of the KL must reach mu and logstd"
        expected_mu, expected_ls = torch.autograd.grad(losses.gaussian_kl(mu, ls).sum(), (mu, ls))
        _assert_close(mu.grad, expected_mu, "gradient of the KL with respect to mu")
        _assert_close(ls.grad, expected_ls, "gradient of the KL with respect to logstd")


def _vae_loss_diagnosis(got: float, recon, x, mu, ls, beta: float) -> str:
    """Name the mistake when the value matches a known wrong variant of the loss."""
    rec = losses.bernoulli_nll(recon, x)
    kl = losses.gaussian_kl(mu, ls)
    swapped = torch.nn.functional.binary_cross_entropy(
        x.flatten(1), recon.flatten(1), reduction="none").sum(1)
    variants = {
        "beta multiplies the reconstruction term; it weights the KL term": (beta * rec + kl).mean(),
        "the loss is summed over the batch; average it over the batch": (rec + beta * kl).sum(),
        "the BCE is averaged over pixels; sum it over pixels (the log-likelihood of an image is a sum)":
            (rec / recon[0].numel() + beta * kl).mean(),
        "the KL is averaged over latent dimensions; sum it over them": (rec + beta * kl / mu.shape[-1]).mean(),
        "the BCE arguments are swapped; F.binary_cross_entropy(recon, x) takes the prediction first":
            (swapped + beta * kl).mean(),
    }
    for text, value in variants.items():
        if math.isclose(got, float(value), rel_tol=1e-4, abs_tol=1e-5):
            return text
    return ("expected the mean over the batch of [BCE summed over pixels + beta * KL(q || N(0, I)) summed over "
            "latent dimensions]")


def check_vae_loss(vae_loss) -> None:
    """Mean over the batch of (BCE summed over pixels + beta * KL to the standard normal)."""
    for dtype in DTYPES:
        for n, image_shape, nz in [(4, (1, 28, 28), 3), (1, (12,), 5), (6, (1, 28, 28), 2)]:
            gen = _generator(n + nz)
            recon = _rand((n, math.prod(image_shape)), gen, dtype, 0.02, 0.98)
            grey = _rand((n, *image_shape), gen, dtype)
            for x in (grey, (grey > 0.5).to(dtype)):
                mu, ls = _randn((n, nz), gen, dtype), _rand((n, nz), gen, dtype, -1.0, 0.5)
                for beta in (0.3, 4.0, 0.0, 1.0):  # informative values first, for the diagnosis
                    got = _as_tensor(_call(vae_loss, recon, x, mu, ls, beta, what="vae_loss(recon, x, mu, logstd, beta)"),
                                     "vae_loss")
                    assert got.dim() == 0, f"vae_loss must return a scalar (0-dim tensor), got shape {tuple(got.shape)}"
                    expected = losses.vae_loss(recon, x, mu, ls, beta)
                    if not torch.allclose(got.detach().to(dtype), expected, **TOL[dtype]):
                        raise AssertionError(
                            f"vae_loss with beta={beta}, x of shape {tuple(x.shape)}, {dtype}: got "
                            f"{got.item():.6g}, expected {expected.item():.6g}: "
                            + _vae_loss_diagnosis(got.item(), recon, x, mu, ls, beta)
                        )
                default = _call(vae_loss, recon, x, mu, ls, what="vae_loss(recon, x, mu, logstd)")
                _assert_close(default, losses.vae_loss(recon, x, mu, ls, 1.0), "vae_loss with the default beta",
                              "The default is beta = 1, the plain negative ELBO.")
        recon = _rand((3, 10), _generator(5), dtype, 0.05, 0.95).requires_grad_()
        mu = _randn((3, 2), _generator(6), dtype).requires_grad_()
        ls = _rand((3, 2), _generator(7), dtype, -1, 1).requires_grad_()
        x = _rand((3, 10), _generator(8), dtype)
        _call(vae_loss, recon, x, mu, ls, 2.0, what="vae_loss with requires_grad inputs").backward()
        for name, t in [("recon", recon), ("mu", mu), ("logstd", ls)]:
            assert t.grad is not None, f"no gradient reached {name}: keep the loss a differentiable torch expression"


# ----------------------------------------------------------------------------- latent space and CVAE


def check_interpolate(interpolate) -> None:
    """``steps`` evenly spaced codes from z0 to z1, both ends included: shape (steps, nz)."""
    for dtype in DTYPES:
        for nz, steps in [(2, 2), (5, 7), (32, 10), (3, 4)]:
            gen = _generator(nz * steps)
            z0, z1 = _randn((nz,), gen, dtype, 2.0), _randn((nz,), gen, dtype, 2.0)
            got = _as_tensor(_call(interpolate, z0, z1, steps, what=f"interpolate(z0, z1, {steps})"), "interpolate")
            assert tuple(got.shape) == (steps, nz), (
                f"interpolate(z0, z1, {steps}) with codes of shape ({nz},) must return shape ({steps}, {nz}), "
                f"got {tuple(got.shape)}"
            )
            _assert_close(got[0], z0, "the first interpolated code", "It must be z0 itself.")
            _assert_close(got[-1], z1, "the last interpolated code",
                          f"It must be z1 itself: use weights t = 0, 1/(steps-1), ..., 1 ({steps} values).")
            _assert_close(got, latent.interpolate(z0, z1, steps), f"interpolate(z0, z1, {steps}), {dtype}",
                          "Points must be evenly spaced on the straight line: (1 - t) * z0 + t * z1.")
            assert got.dtype == dtype, f"interpolate returned {got.dtype} for {dtype} codes"


def check_one_hot(one_hot) -> None:
    """Float32 one-hot rows of width ``num_classes`` on the labels' device."""
    dev = genlab.device()
    cases = [
        (torch.tensor([3, 0, 9, 3, 1]), 10),
        (torch.tensor([0, 1, 1]), 10),  # the highest classes are absent from this batch
        (torch.tensor([2, 0]), 3),
        (torch.arange(10).flip(0), 10),
    ]
    for labels, k in cases:
        for ltype in (torch.int64, torch.int32):
            y = labels.to(dev, ltype)
            got = _as_tensor(_call(one_hot, y, k, what=f"one_hot(labels, {k})"), "one_hot")
            expected = mlp.one_hot(y, k)
            assert tuple(got.shape) == (len(y), k), (
                f"one_hot({labels.tolist()}, num_classes={k}) must have shape ({len(y)}, {k}), got "
                f"{tuple(got.shape)}: the width is num_classes, whatever labels the batch happens to hold"
            )
            assert got.dtype == torch.float32, (
                f"one_hot must return float32 (it is concatenated with images and codes), got {got.dtype}"
            )
            assert got.device == y.device, f"one_hot returned a tensor on {got.device}, labels were on {y.device}"
            _assert_close(got, expected, f"one_hot({labels.tolist()}, {k})", "Row i must have a single 1 in column labels[i].")
    default = _call(one_hot, torch.tensor([1, 2], device=dev), what="one_hot(labels)")
    assert tuple(default.shape) == (2, 10), "the default number of classes is 10"


def check_condition(condition) -> None:
    """``condition(h, labels, num_classes)`` = [flattened h, one_hot(labels)] along dimension 1."""
    dev = genlab.device()
    for dtype in DTYPES:
        for shape, k in [((4, 1, 28, 28), 10), ((3, 8), 10), ((5, 6), 4), ((2, 2, 3, 3), 10)]:
            gen = _generator(sum(shape))
            h = _rand(shape, gen, dtype).requires_grad_()
            labels = torch.randint(0, k, (shape[0],), generator=gen).to(dev)
            labels[0] = 0  # keep the batch from holding every class
            got = _as_tensor(_call(condition, h, labels, k, what=f"condition(h of shape {shape}, labels, {k})"),
                             "condition")
            width = math.prod(shape[1:]) + k
            assert tuple(got.shape) == (shape[0], width), (
                f"condition on h of shape {shape} with {k} classes must return shape ({shape[0]}, {width}): "
                "flatten h to (N, D), then concatenate along dimension 1"
            )
            expected = mlp.condition(h.detach(), labels, k)
            _assert_close(got, expected, f"condition(h of shape {shape}, labels, {k})",
                          "The flattened features come first and the one-hot label code last.")
            assert got.dtype == dtype, f"condition returned {got.dtype} for {dtype} features"
            assert got.requires_grad, "condition cut h off from the graph: do not detach it (gradients must reach the encoder)"
            got.sum().backward()
            assert h.grad is not None, "gradients must flow back into h through condition"
