"""Hidden tests of the chapter "From autoencoders to conditional VAEs" (``ae_to_cvae``).

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel, where it
records what the student's object returns on seeded inputs, and in the grader, where the
reference from ``genlab`` meets the same inputs and every record is compared. Every call is held
to the course's contract (arguments left as they were, results of the reference's kind, dtype and
device); each check's ``conditions`` list what its exercise's text states, and the probe draws them.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from autograder.probing import Trial, backward, check, close, legacy_names
from genlab import latent, losses, train
from genlab.models import mlp

DTYPES = (torch.float32, torch.float64)


def _linear_shapes(net: nn.Module) -> list[list[int]]:
    """Weight shapes of the module's Linear layers, sorted: the architecture, whatever the registration order."""
    return sorted(list(m.weight.shape) for m in net.modules() if isinstance(m, nn.Linear))


CONSTRUCTOR = {"repeat": "a constructor: every call builds a new module"}


def _mlp(t: Trial, cls, args: tuple[int, int], kind: str, hint: str) -> None:
    """Shared probe of the encoder and decoder: layer sizes, then the function computed with fixed weights."""
    name = f"{kind}{args}"
    net = t.call(cls, *args, what=name, exempt=CONSTRUCTOR)
    t.same(
        f"{name}/layers",
        _linear_shapes(net),
        what=f"{name}: the nn.Linear weight shapes (out, in)",
        hint="Three nn.Linear layers with the sizes of the table, each with its bias, and nothing else.",
    )
    t.same(
        f"{name}/parameters",
        sum(p.numel() for p in net.parameters()),
        what=f"{name}: the number of parameters",
        hint="Only the three linear layers have parameters.",
    )
    t.init_module(net)
    for dtype in DTYPES:
        net.to(t.device, dtype)
        for n in (1, 5):
            if kind == "Encoder" and args[0] == 784 and n == 5:
                x = t.rand(n, 1, 28, 28, dtype=dtype)  # images; n = 1 gives the flat form
            elif kind == "Encoder":
                x = t.rand(n, args[0], dtype=dtype)
            else:
                x = t.randn(n, args[0], dtype=dtype, scale=2.0)
            out = t.call(net, x, what=f"{name} on input of shape {tuple(x.shape)}")
            t.same(f"{name}/{dtype}/{n}", out, what=f"{name} on input of shape {tuple(x.shape)}, {dtype}", hint=hint)


ENCODER = {
    "layers": "Linear(input_size, 256), ReLU, Linear(256, 64), ReLU, Linear(64, out_size), for several sizes",
    "images-or-flat": "images (N, 1, 28, 28) as well as flat vectors (N, input_size), N = 1 included",
    "no-activation-on-codes": "the last layer has no activation: codes may be negative",
    "float32-and-float64": "the module in float32 and in float64",
}


@check(mlp.Encoder, conditions=ENCODER)
def probe_encoder(t: Trial, Encoder) -> None:
    """``Encoder(input_size, out_size)``: flatten, input_size -> 256 -> 64 -> out_size with ReLUs between."""
    hint = (
        "ReLU after the first two linear layers only; the last layer has no activation "
        "(codes, means and log-stds can be negative)."
    )
    t.covers(*ENCODER)
    for args in [(784, 16), (784, 4), (30, 3)]:
        _mlp(t, Encoder, args, "Encoder", hint)


DECODER = {
    "layers": "Linear(in_size, 64), ReLU, Linear(64, 256), ReLU, Linear(256, output_size), for several sizes",
    "flat-output": "codes (N, in_size) in, flat probabilities (N, output_size) out, N = 1 included",
    "sigmoid": "a Sigmoid at the end: every output is a probability",
    "float32-and-float64": "the module in float32 and in float64",
}


@check(mlp.Decoder, conditions=DECODER)
def probe_decoder(t: Trial, Decoder) -> None:
    """``Decoder(in_size, output_size)``: in_size -> 64 -> 256 -> output_size, ReLUs, sigmoid output."""
    hint = "ReLU after the first two linear layers, and a Sigmoid at the very end (outputs are probabilities)."
    t.covers(*DECODER)
    for args in [(16, 784), (4, 784), (3, 30)]:
        _mlp(t, Decoder, args, "Decoder", hint)


def _tiny_autoencoder() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 6), nn.ReLU(), nn.Linear(6, 36), nn.Sigmoid())


AE_TRAIN_STEP = {
    "zero-grad": "gradients left by an earlier step are cleared before the backward pass",
    "bce": "BCE with the reconstruction first, summed over the pixels, averaged over the batch",
    "flatten-x": "x as images (N, 1, H, W) against a flat reconstruction, and x already flat",
    "one-step": "one optimizer step on that loss, two steps in a row",
    "loss-before-update": "the loss as a Python float, computed before the update",
    "binary-and-grey": "grey pixel values and exact 0/1 pixels",
    "float32-and-float64": "the model and batch in float32 and in float64",
}
TRAINING = {"repeat": "a training step changes the model by design (two steps in a row are probed)"}


@check(train.ae_train_step, conditions=AE_TRAIN_STEP)
def probe_ae_train_step(t: Trial, ae_train_step) -> None:
    """zero_grad, BCE(recon, x) summed over pixels and averaged over the batch, backward, one step."""
    t.covers(*AE_TRAIN_STEP)
    for dtype, shape in [(torch.float32, (8, 1, 6, 6)), (torch.float64, (5, 36)), (torch.float32, (3, 1, 6, 6))]:
        model = t.init_module(_tiny_autoencoder()).to(t.device, dtype)
        for p in model.parameters():  # stale gradients, as a previous step would leave them
            p.grad = torch.ones_like(p)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        grey = t.rand(*shape, dtype=dtype)
        binary = (t.rand(*shape, dtype=dtype) > 0.6).to(dtype)  # exact 0/1 pixels, as in real images
        for k, x in enumerate((grey, binary), start=1):
            case = f"step {k} on a batch of shape {shape}, {dtype}"
            loss = t.call(ae_train_step, model, optimizer, x.clone(), what=f"ae_train_step ({case})", exempt=TRAINING)
            t.same(
                f"{shape}/{dtype}/loss{k}",
                loss,
                what=f"the loss returned at {case}",
                hint="Return the loss of the batch computed before the update, as a Python float: binary "
                "cross-entropy of x under the reconstruction, F.binary_cross_entropy(recon, target) with the "
                "reconstruction FIRST, summed over pixels and averaged over the batch.",
            )
            for name, p in model.named_parameters():
                t.same(
                    f"{shape}/{dtype}/{name}/{k}",
                    p,
                    what=f"parameter {name!r} after {case}",
                    hint="One optimizer step on the gradient of that loss: call optimizer.zero_grad() before "
                    "loss.backward() (old gradients are still there), then optimizer.step() once.",
                )


REPARAMETERIZE = {
    "given-eps": "with eps given, z = mu + exp(logstd) * eps exactly, for several shapes",
    "standard-deviation": "the scale is the standard deviation exp(logstd), not the variance or logstd",
    "differentiable": "z is differentiable in mu and logstd, with and without eps",
    "fresh-noise": "without eps, standard normal noise drawn afresh on every call",
    "noise-device": "the noise is drawn on mu's device (torch.randn_like)",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(mlp.reparameterize, conditions=REPARAMETERIZE)
def probe_reparameterize(t: Trial, reparameterize) -> None:
    """``z = mu + exp(logstd) * eps``: values and gradients with a given eps; fresh N(0, 1) noise without."""
    hint = (
        "The standard deviation is exp(logstd): z = mu + exp(logstd) * eps. Not exp(logstd)**2 (the "
        "variance), not logstd itself, and use the eps you are given."
    )
    t.covers("given-eps", "standard-deviation", "differentiable", "float32-and-float64")
    for dtype in DTYPES:
        for shape in [(3,), (4, 5), (2, 3, 4)]:
            mu = t.randn(*shape, dtype=dtype, scale=2.0).requires_grad_()
            logstd = t.rand(*shape, dtype=dtype, low=-1.0, high=1.0).requires_grad_()
            eps, weights = t.randn(*shape, dtype=dtype), t.randn(*shape, dtype=dtype)
            case = f"shape {shape}, {dtype}"
            z = t.call(reparameterize, mu, logstd, eps, what=f"reparameterize(mu, logstd, eps), {case}", draws=False)
            t.same(f"z/{case}", z, what=f"reparameterize(mu, logstd, eps), {case}", hint=hint)
            t.same(
                f"z.requires_grad/{case}",
                z.requires_grad,
                what=f"the sample's link to the graph, {case}",
                hint="Compute z from mu and logstd with torch operations: no .detach(), .item(), numpy or "
                "torch.normal, so that gradients reach the encoder.",
            )
            backward(z, weights)
            t.same(
                f"dmu/{case}",
                mu.grad,
                what=f"the gradient of the sample with respect to mu, {case}",
                hint="dz/dmu must be 1.",
            )
            t.same(
                f"dlogstd/{case}",
                logstd.grad,
                what=f"the gradient with respect to logstd, {case}",
                hint="dz/dlogstd must be exp(logstd) * eps.",
            )
    _probe_fresh_noise(t, reparameterize)


def _sample_statistics(got, _want, records) -> str | None:
    """Samples of N(mu, exp(logstd)^2) in the grader: mean, spread and shape of the noise."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (40_000, 4):
        shape = got if isinstance(got, str) else tuple(getattr(got, "shape", ()))
        return f"expected samples of shape (40000, 4), got {shape}"
    mu, std = torch.tensor([-2.0, 0.0, 1.0, 3.0]), torch.tensor([-1.0, 0.0, 0.5, 1.0]).exp()
    z = got.double()
    eps = (z - mu) / std
    mean_err = (eps.mean(0) * math.sqrt(len(z))).abs().max().item()  # in standard errors
    spread = eps.std(0)
    if mean_err > 6 or (spread - 1).abs().max() > 0.03:
        squared = (
            " (that is the variance exp(2 logstd), not the standard deviation)"
            if (((z - mu).std(0) / std**2 - 1).abs().max() < 0.03)
            else ""
        )
        return (
            f"samples of N(mu, exp(logstd)^2) should have mean mu and standard deviation exp(logstd); got "
            f"means {[round(v, 3) for v in z.mean(0).tolist()]} and standard deviations "
            f"{[round(v, 3) for v in z.std(0).tolist()]} for mu = {mu.tolist()} and exp(logstd) = "
            f"{[round(v, 3) for v in std.tolist()]}{squared}. Draw eps with torch.randn_like(mu)."
        )
    kurtosis = (eps - eps.mean(0)).pow(4).mean(0) / spread.pow(4)
    if (kurtosis - 3).abs().max() > 0.3:
        return (
            f"the noise is not normal (kurtosis {kurtosis.tolist()}, a normal's is 3): "
            "use torch.randn_like, not torch.rand_like"
        )
    return None


def _differs(got, _want, records) -> str | None:
    first = records.get("fresh/first")
    if (
        isinstance(got, torch.Tensor)
        and isinstance(first, torch.Tensor)
        and got.shape == first.shape
        and torch.equal(got, first)
    ):
        return "two calls without eps returned the same sample: draw new noise on every call (do not re-seed)"
    return None


def _gradients_without_eps(got, want, records) -> str | None:
    """Without eps the sample must still carry gradients: d z / d logstd = weights * (z - mu)."""
    noted = [records.get(f"grad/{name}") for name in ("z", "mu", "weights")]
    if not all(isinstance(v, torch.Tensor) and v.is_floating_point() and v.shape == want.shape for v in noted):
        return "the hidden test could not read the sample it drew (did reparameterize return a tensor of mu's shape?)"
    z, mu, weights = noted
    if not isinstance(got, torch.Tensor):
        return "no gradient reached logstd: the sample must be computed from mu and logstd (not torch.normal)"
    return close(got, weights * (z - mu), rtol=1e-4, atol=1e-5)


def _probe_fresh_noise(t: Trial, reparameterize) -> None:
    """Without eps: fresh standard normal noise, drawn on the inputs' device, that gradients flow through."""
    t.covers("fresh-noise", "noise-device")
    random = {"repeat": "draws fresh noise: two calls must differ (tested on their own)"}
    mu = torch.tensor([-2.0, 0.0, 1.0, 3.0], device=t.device).expand(40_000, 4)
    logstd = torch.tensor([-1.0, 0.0, 0.5, 1.0], device=t.device).expand(40_000, 4)
    z = t.call(
        reparameterize,
        mu,
        logstd,
        what="reparameterize(mu, logstd) without eps (noise created on "
        "mu's device: torch.randn_like(mu), or torch.randn(..., device=mu.device))",
        exempt=random,
    )
    t.check("fresh/first", z, what="reparameterize(mu, logstd) without eps", test=_sample_statistics)
    again = t.call(reparameterize, mu, logstd, what="reparameterize(mu, logstd), a second call", exempt=random)
    t.check("fresh/second", again, what="a second call of reparameterize(mu, logstd)", test=_differs)
    mu_g = t.randn(6, 3).requires_grad_()
    logstd_g = t.rand(6, 3, low=-1.0, high=1.0).requires_grad_()
    weights = t.randn(6, 3)
    z = t.call(
        reparameterize, mu_g, logstd_g, what="reparameterize(mu, logstd) with requires_grad inputs", exempt=random
    )
    backward(z, weights)
    t.note("grad/z", z)
    t.note("grad/mu", mu_g)
    t.note("grad/weights", weights)
    t.check(
        "grad/dlogstd",
        logstd_g.grad,
        what="the gradient with respect to logstd when no eps is given",
        test=_gradients_without_eps,
        hint="Without eps, still compute mu + exp(logstd) * eps with eps = torch.randn_like(mu): a sample "
        "from torch.normal(mu, std) does not pass gradients back to logstd.",
    )
    t.same("grad/dmu", mu_g.grad, what="the gradient with respect to mu when no eps is given", hint="dz/dmu must be 1.")


def _kl_diagnosis(got, want, records, case: tuple) -> str | None:
    """Name a swapped-argument KL when that is what came back."""
    problem = close(got, want)
    if problem and isinstance(got, torch.Tensor):
        mu_q, ls_q, mu_p, ls_p = case
        if close(got, losses.gaussian_kl(mu_p, ls_p, mu_q, ls_q)) is None:
            return problem + ": that is KL(p || q); the arguments of q (the encoder's) come first"
    return problem


GAUSSIAN_KL = {
    "closed-form": "KL(q || p) of two diagonal Gaussians with q (the encoder's) first",
    "last-dimension": "inputs (..., nz) give (...): summed over the last dimension only",
    "prior-default": "p defaults to N(0, I)",
    "prior-numbers": "mu_p and logstd_p as plain numbers",
    "equal-is-zero": "KL(q || q) = 0",
    "differentiable": "differentiable in mu and logstd",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(losses.gaussian_kl, conditions=GAUSSIAN_KL)
def probe_gaussian_kl(t: Trial, gaussian_kl) -> None:
    """Closed-form KL(q || p) of diagonal Gaussians, summed over the last dimension."""
    hint = (
        "Per dimension KL(q||p) = log(sigma_p/sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2, "
        "summed over the last dimension only."
    )
    t.covers(*GAUSSIAN_KL)
    for dtype in DTYPES:
        for shape in [(7,), (5, 3), (2, 4, 6)]:
            mu_q, mu_p = t.randn(*shape, dtype=dtype, scale=1.5), t.randn(*shape, dtype=dtype, scale=1.5)
            ls_q, ls_p = (
                t.rand(*shape, dtype=dtype, low=-1.5, high=1.0),
                t.rand(*shape, dtype=dtype, low=-1.0, high=1.0),
            )
            case = f"shape {shape}, {dtype}"
            got = t.call(
                gaussian_kl, mu_q, ls_q, mu_p, ls_p, what=f"gaussian_kl(mu_q, logstd_q, mu_p, logstd_p), {case}"
            )
            args = tuple(a.cpu() for a in (mu_q, ls_q, mu_p, ls_p))
            t.check(
                f"pq/{case}",
                got,
                what=f"gaussian_kl(mu_q, logstd_q, mu_p, logstd_p), {case}",
                hint=hint,
                test=functools.partial(_kl_diagnosis, case=args),
            )
            prior = t.call(gaussian_kl, mu_q, ls_q, what=f"gaussian_kl(mu_q, logstd_q), {case}")
            t.same(f"prior/{case}", prior, what=f"gaussian_kl(mu_q, logstd_q) against N(0, I), {case}", hint=hint)
            same = t.call(gaussian_kl, mu_q, ls_q, mu_q.clone(), ls_q.clone(), what=f"gaussian_kl(q, q), {case}")
            t.same(f"qq/{case}", same, what=f"KL(q || q), {case}", hint="KL(q || q) is 0: keep the -1/2 per dimension.")
            numbers = (round(float(t.randn(1, dtype=torch.float64)), 3), round(float(t.rand(1, low=-1.0, high=1.0)), 3))
            call = f"gaussian_kl(mu_q, logstd_q, {numbers[0]}, {numbers[1]})"
            plain = t.call(gaussian_kl, mu_q, ls_q, *numbers, what=f"{call}, {case}")
            t.same(f"numbers/{case}", plain, what=f"{call} with plain numbers for p, {case}", hint=hint)
        mu = t.randn(4, 3, dtype=dtype).requires_grad_()
        logstd = t.rand(4, 3, dtype=dtype, low=-1.0, high=1.0).requires_grad_()
        out = t.call(gaussian_kl, mu, logstd, what=f"gaussian_kl(mu, logstd) with requires_grad inputs, {dtype}")
        backward(out)
        t.same(f"dmu/{dtype}", mu.grad, what=f"the gradient of the KL with respect to mu, {dtype}")
        t.same(f"dlogstd/{dtype}", logstd.grad, what=f"the gradient of the KL with respect to logstd, {dtype}")


def _vae_loss_diagnosis(got, want, records, case: tuple) -> str | None:
    """Name the mistake when the value matches a known wrong variant of the loss."""
    problem = close(got, want)
    if problem is None:
        return None
    recon, x, mu, ls, beta = case
    rec, kl = losses.bernoulli_nll(recon, x), losses.gaussian_kl(mu, ls)
    swapped = nn.functional.binary_cross_entropy(x.flatten(1), recon.flatten(1), reduction="none").sum(1)
    variants = {
        "beta multiplies the reconstruction term; it weights the KL term": (beta * rec + kl).mean(),
        "the loss is summed over the batch; average it over the batch": (rec + beta * kl).sum(),
        "the BCE is averaged over pixels; sum it over pixels (the log-likelihood of an image is a sum)": (
            rec / recon[0].numel() + beta * kl
        ).mean(),
        "the KL is averaged over latent dimensions; sum it over them": (rec + beta * kl / mu.shape[-1]).mean(),
        "the BCE arguments are swapped; F.binary_cross_entropy(recon, x) takes the prediction first": (
            swapped + beta * kl
        ).mean(),
    }
    for text, value in variants.items():
        if close(got, value) is None:
            return f"{problem}: {text}"
    return (
        f"{problem}. Expected the mean over the batch of [BCE summed over pixels + beta * KL(q || N(0, I)) "
        "summed over latent dimensions]"
    )


VAE_LOSS = {
    "per-image-sum": "per image, the BCE summed over pixels plus beta times the KL summed over latent dimensions",
    "batch-mean": "then the mean over the batch, a batch of one included",
    "beta-on-kl": "beta weights the KL term only, beta = 0 included",
    "default-beta": "beta defaults to 1",
    "bce-order": "F.binary_cross_entropy with the prediction first, on grey and on exact 0/1 pixels",
    "x-images-or-flat": "x as images (N, 1, 28, 28) or flat (N, D) against a flat reconstruction",
    "differentiable": "the loss is a tensor that back-propagates into recon, mu and logstd",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(losses.vae_loss, conditions=VAE_LOSS)
def probe_vae_loss(t: Trial, vae_loss) -> None:
    """Mean over the batch of (BCE summed over pixels + beta * KL to the standard normal)."""
    t.covers(*VAE_LOSS)
    for dtype in DTYPES:
        for n, image_shape, nz in [(4, (1, 28, 28), 3), (1, (12,), 5), (6, (1, 28, 28), 2)]:
            recon = t.rand(n, math.prod(image_shape), dtype=dtype, low=0.02, high=0.98)
            grey = t.rand(n, *image_shape, dtype=dtype)
            for kind, x in (("grey", grey), ("binary", (grey > 0.5).to(dtype))):
                mu, ls = t.randn(n, nz, dtype=dtype), t.rand(n, nz, dtype=dtype, low=-1.0, high=0.5)
                for beta in (0.3, 4.0, 0.0, 1.0):
                    case = f"beta={beta}, {kind} x of shape {(n, *image_shape)}, {dtype}"
                    got = t.call(vae_loss, recon, x, mu, ls, beta, what=f"vae_loss(recon, x, mu, logstd, beta), {case}")
                    args = tuple(a.cpu() for a in (recon, x, mu, ls)) + (beta,)
                    t.check(
                        f"{case}",
                        got,
                        what=f"vae_loss with {case}",
                        test=functools.partial(_vae_loss_diagnosis, case=args),
                    )
                default = t.call(vae_loss, recon, x, mu, ls, what="vae_loss(recon, x, mu, logstd)")
                t.same(
                    f"default/{kind}/{n}/{dtype}",
                    default,
                    what="vae_loss with the default beta",
                    hint="The default is beta = 1, the plain negative ELBO.",
                )
        recon = t.rand(3, 10, dtype=dtype, low=0.05, high=0.95).requires_grad_()
        mu = t.randn(3, 2, dtype=dtype).requires_grad_()
        ls = t.rand(3, 2, dtype=dtype, low=-1.0, high=1.0).requires_grad_()
        x = t.rand(3, 10, dtype=dtype)
        backward(t.call(vae_loss, recon, x, mu, ls, 2.0, what="vae_loss with requires_grad inputs"))
        for name, tensor in (("recon", recon), ("mu", mu), ("logstd", ls)):
            t.same(
                f"grad/{name}/{dtype}",
                tensor.grad,
                what=f"the gradient of the loss with respect to {name}",
                hint="Keep the loss one differentiable torch expression (no .item() or detach on the way).",
            )


INTERPOLATE = {
    "both-ends": "rows (1 - t) z0 + t z1 for t = 0, 1/(steps - 1), ..., 1: first row z0, last row z1",
    "shape": "shape (steps, nz), steps = 2 included",
    "float32-and-float64": "codes in float32 and float64",
}


@check(latent.interpolate, conditions=INTERPOLATE)
def probe_interpolate(t: Trial, interpolate) -> None:
    """``steps`` evenly spaced codes from z0 to z1, both ends included: shape (steps, nz)."""
    t.covers(*INTERPOLATE)
    for dtype in DTYPES:
        for nz, steps in [(2, 2), (5, 7), (32, 10), (3, 4)]:
            z0, z1 = t.randn(nz, dtype=dtype, scale=2.0), t.randn(nz, dtype=dtype, scale=2.0)
            got = t.call(interpolate, z0, z1, steps, what=f"interpolate(z0, z1, {steps})")
            t.same(
                f"{nz}/{steps}/{dtype}",
                got,
                what=f"interpolate(z0, z1, {steps}) with codes of shape ({nz},), {dtype}",
                hint=f"Return shape ({steps}, {nz}): rows (1 - t) z0 + t z1 for t = 0, 1/(steps-1), ..., 1, so the "
                "first row is z0 and the last is z1.",
            )


ONE_HOT = {
    "float32": "a float32 matrix (N, num_classes), a single 1 per row in column labels[i]",
    "width": "the width is num_classes even when the batch lacks the largest classes",
    "device": "on the labels' device",
    "default-classes": "num_classes defaults to 10",
    "integer-labels": "labels of dtype int64 and int32",
}


@check(mlp.one_hot, conditions=ONE_HOT)
def probe_one_hot(t: Trial, one_hot) -> None:
    """Float32 one-hot rows of width ``num_classes``, on the labels' device."""
    t.covers(*ONE_HOT)
    cases = [
        (t.randint(0, 10, 7), 10),
        (t.randint(0, 2, 3), 10),  # the highest classes are absent from this batch
        (t.randint(0, 3, 4), 3),
        (torch.arange(10, device=t.device).flip(0), 10),
    ]
    for labels, k in cases:
        for ltype in (torch.int64, torch.int32):
            y = labels.to(ltype)
            got = t.call(one_hot, y, k, what=f"one_hot(labels, {k}) (the result must be on the labels' device)")
            t.same(
                f"{k}/{y.tolist()}/{ltype}",
                got,
                what=f"one_hot({y.tolist()}, num_classes={k}) with {ltype} labels",
                exact_dtype=True,
                hint=f"Float32, shape ({len(y)}, {k}) whatever labels the batch holds, a single 1 per row in "
                "column labels[i], created on labels.device.",
            )
    default = t.call(one_hot, torch.tensor([1, 2], device=t.device), what="one_hot(labels)")
    t.same(
        "default",
        default,
        what="one_hot(labels) with the default number of classes",
        hint="The default number of classes is 10.",
    )


CONDITION = {
    "flatten": "h flattened to (N, D): images (N, 1, H, W) and codes (N, nz) alike",
    "label-after": "the one-hot labels appended AFTER the features: (N, D + num_classes)",
    "dtype-of-h": "in the dtype of h (float32 and float64)",
    "differentiable": "differentiable in h",
    "classes": "num_classes other than 10",
}


@check(mlp.condition, conditions=CONDITION)
def probe_condition(t: Trial, condition) -> None:
    """``condition(h, labels, num_classes)`` = [flattened h, one_hot(labels)] along dimension 1."""
    t.covers(*CONDITION)
    for dtype in DTYPES:
        for shape, k in [((4, 1, 28, 28), 10), ((3, 8), 10), ((5, 6), 4), ((2, 2, 3, 3), 10)]:
            h = t.rand(*shape, dtype=dtype).requires_grad_()
            labels = t.randint(0, k, shape[0])
            case = f"h of shape {shape}, {k} classes, {dtype}"
            got = t.call(condition, h, labels, k, what=f"condition({case})")
            t.same(
                case,
                got,
                what=f"condition({case})",
                hint="Flatten h to (N, D), then concatenate the one-hot code AFTER the features, along dimension 1.",
            )
            hint = "Do not detach h: gradients must flow back into the encoder."
            linked = getattr(got, "requires_grad", None)
            t.same(f"requires_grad/{case}", linked, what=f"the output's link to h ({case})", hint=hint)
            if linked:
                got.sum().backward()
                t.same(f"grad/{case}", h.grad, what=f"the gradient reaching h through condition ({case})", hint=hint)


legacy_names(globals())
