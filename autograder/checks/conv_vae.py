"""Hidden tests of the chapter "Convolutional VAEs and their latent space" (``conv_vae``).

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel, where it
records what the student's object returns on seeded inputs, and in the grader, where the reference
from ``genlab`` meets the same inputs and every record is compared. Known wrong answers (the
typical mistakes of assignments/conv_vae.toml) are named in the messages: the variants are
computed in the grader only, from the same inputs.

Networks are compared in float64 with weights set by ``Trial.init_module`` (by parameter shape, so
the order in which layers are registered does not matter): float32 convolutions on a GPU may use
TF32 and differ from the CPU by more than the course's tolerance. Their outputs are compared within
``NETWORK_RTOL`` and ``NETWORK_ATOL``: the tanh approximation of GELU (``nn.GELU(approximate="tanh")``,
a GELU too) moves them by at most 2.5e-4 of their scale, ten times less; a ReLU or SiLU in its
place moves them by more than 1e-2. Every call is held to the course's contract (autograder/probing.py), and each
check's ``conditions`` list what its exercise's text states.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autograder.probing import Test, Trial, backward, check, close, naming
from genlab import latent, losses
from genlab.models import conv

DTYPES = (torch.float32, torch.float64)
NETWORK_RTOL = NETWORK_ATOL = 3e-3
CONSTRUCTOR = {"repeat": "a constructor: every call builds a new module"}


def _shapes(net: nn.Module) -> list[list[int]]:
    """Every parameter's shape, sorted: the architecture, whatever the registration order."""
    return sorted(list(p.shape) for p in net.parameters())


def _listed(got: Any, want: Any, _records: dict[str, Any]) -> str | None:
    """Equal lists (of shapes, of sides), or both shown."""
    if got == want:
        return None
    text = str(got) if isinstance(got, (list, tuple)) else repr(got)
    return f"got {text[:300]}, expected {str(want)[:300]}"


def _architecture(t: Trial, net: nn.Module, name: str, hint: str) -> None:
    t.check(
        f"{name}/shapes", _shapes(net), what=f"{name}: the shapes of its parameters (sorted)", hint=hint, test=_listed
    )
    t.same(
        f"{name}/parameters",
        sum(p.numel() for p in net.parameters()),
        what=f"{name}: the number of parameters",
        hint=hint,
    )


# ----------------------------------------------------------------------------- the conv encoder


CONV_ENCODER = {
    "architecture": "five 3x3 convolutions (1->h->h->2h->2h->2h, strides 2, 1, 2, 1, 2) and one Linear(2h*16, 2nz)",
    "default-hidden": "hidden defaults to 32",
    "gelu": "nn.GELU() after every convolution, nothing on mu or logstd",
    "tuple": "forward returns the tuple (mu, logstd), each (N, nz): the first nz outputs are mu",
    "batch-sizes": "images (N, 1, 28, 28) in [0, 1], N = 1 included",
}


@check(conv.ConvEncoder, conditions=CONV_ENCODER)
def probe_conv_encoder(t: Trial, ConvEncoder) -> None:
    """``ConvEncoder(nz, hidden)``: five 3x3 convolutions with GELUs, one Linear(2h*16, 2*nz); (mu, logstd)."""
    arch = (
        "Five nn.Conv2d with kernel 3 and padding 1 (channels 1->h->h->2h->2h->2h, strides 2, 1, 2, 1, 2) and "
        "one nn.Linear(2h * 4 * 4, 2 * nz), each with its bias, and no other parameters."
    )
    values = (
        "GELU after every convolution, flatten (N, 2h, 4, 4) -> (N, 2h * 16), then the linear layer; its first "
        "nz outputs are mu and the last nz are logstd (x.chunk(2, dim=1)). No activation on mu or logstd."
    )
    t.covers(*CONV_ENCODER)
    default = t.call(ConvEncoder, 5, what="ConvEncoder(5) (hidden left at its default)", exempt=CONSTRUCTOR)
    _architecture(t, default, "ConvEncoder(5)", arch + " hidden defaults to 32.")
    for nz, hidden in [(20, 32), (3, 8)]:
        name = f"ConvEncoder({nz}, {hidden})"
        enc = t.call(ConvEncoder, nz, hidden, what=name, exempt=CONSTRUCTOR)
        _architecture(t, enc, name, arch)
        t.init_module(enc)
        enc.to(t.device, torch.float64)
        for n in (1, 5):
            x = t.rand(n, 1, 28, 28, dtype=torch.float64)
            out = t.call(enc, x, what=f"{name} on images of shape {tuple(x.shape)}")
            for i, part in enumerate(("mu", "logstd")):
                t.same(
                    f"{name}/{n}/{part}",
                    out[i] if isinstance(out, (tuple, list)) and len(out) == 2 else out,
                    what=f"{name}: {part} for images of shape {tuple(x.shape)}",
                    hint=values,
                    rtol=NETWORK_RTOL,
                    atol=NETWORK_ATOL,
                )


# ----------------------------------------------------------------------------- the conv decoder


def _transposed_sides(t: Trial, net: nn.Module, z: torch.Tensor, what: str) -> tuple[Any, list[int]]:
    """The decoder's output, and the side of the output of every nn.ConvTranspose2d in call order."""
    sides: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sides.append(int(out.shape[-1])))
        for m in net.modules()
        if isinstance(m, nn.ConvTranspose2d)
    ]
    hooks.append(net.register_forward_pre_hook(lambda *_: sides.clear()))  # one forward pass's sides
    try:
        out = t.call(net, z, what=what)
    finally:
        for h in hooks:
            h.remove()
    return out, sides


def _decoder_variant(
    t: Trial, nz: int, levels: int, hidden: int, z: torch.Tensor, paddings: tuple[int, int, int]
) -> torch.Tensor:
    """The reference decoder with other output paddings, its output cropped or zero-padded to 28 x 28."""
    net = t.init_module(conv.ConvDecoder(nz, levels, hidden)).to(z.device, z.dtype)
    for layer, pad in zip([m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)], paddings):
        layer.output_padding = (pad, pad)
    with torch.no_grad():
        out = net(z)
    side = out.shape[-1]
    return out[..., :28, :28] if side > 28 else F.pad(out, (0, 28 - side, 0, 28 - side))


CONV_DECODER = {
    "architecture": "Linear(nz, 2h*16), then transposed and plain 3x3 convolutions as the table says",
    "defaults": "levels defaults to 16 and hidden to 32",
    "output-padding": "the sides inside the network: 4 -> 7 -> 14 -> 28, no cropping or padding after",
    "logits": "GELU where the table says; the last layer's logits (N, levels, 28, 28) as they are",
    "batch-sizes": "codes (N, nz), N = 1 included",
}


@check(conv.ConvDecoder, conditions=CONV_DECODER)
def probe_conv_decoder(t: Trial, ConvDecoder) -> None:
    """``ConvDecoder(nz, levels, hidden)``: Linear, reshape to 4x4, transposed convolutions 4 -> 7 -> 14 -> 28."""
    arch = (
        "nn.Linear(nz, 2h * 16), then nn.ConvTranspose2d(2h, 2h, 3), nn.Conv2d(2h, 2h, 3), "
        "nn.ConvTranspose2d(2h, h, 3), nn.Conv2d(h, h, 3) and nn.ConvTranspose2d(h, levels, 3), each with its "
        "bias, and no other parameters."
    )
    padding = (
        "A transposed convolution with kernel 3, stride 2 and padding 1 gives side 2 * (in - 1) - 1 + "
        "output_padding: 4 -> 7 needs output_padding=0, 7 -> 14 and 14 -> 28 need output_padding=1."
    )
    values = (
        "Linear + GELU, reshape to (N, 2h, 4, 4); then each transposed convolution but the last is followed by "
        "GELU, a 3x3 convolution with padding 1 and GELU; the last layer's output (N, levels, 28, 28) is "
        "returned as it is (logits: no softmax, no sigmoid). " + padding
    )
    t.covers(*CONV_DECODER)
    default = t.call(
        ConvDecoder, 5, what="ConvDecoder(5) (levels and hidden left at their defaults)", exempt=CONSTRUCTOR
    )
    _architecture(t, default, "ConvDecoder(5)", arch + " levels defaults to 16 and hidden to 32.")
    for nz, levels, hidden in [(20, 16, 32), (3, 4, 8)]:
        name = f"ConvDecoder({nz}, {levels}, {hidden})"
        dec = t.call(ConvDecoder, nz, levels, hidden, what=name, exempt=CONSTRUCTOR)
        _architecture(t, dec, name, arch)
        t.init_module(dec)
        dec.to(t.device, torch.float64)
        for n in (1, 4):
            z = t.randn(n, nz, dtype=torch.float64)
            out, sides = _transposed_sides(t, dec, z, f"{name} on codes of shape {(n, nz)}")
            t.check(
                f"{name}/{n}/sides",
                sides,
                what=f"{name}: the sides of the transposed convolutions' outputs",
                hint=padding + " Do not crop or pad the output afterwards: fix the output padding.",
                test=_listed,
            )
            variants = [
                (
                    lambda z=z, nz=nz, lv=levels, h=hidden: _decoder_variant(t, nz, lv, h, z, (0, 1, 0)),
                    "this is a 27 x 27 output zero-padded to 28 x 28 (the last transposed convolution needs "
                    "output_padding=1)",
                ),
                (
                    lambda z=z, nz=nz, lv=levels, h=hidden: _decoder_variant(t, nz, lv, h, z, (1, 0, 0)),
                    "this is a 29 x 29 output cropped to 28 x 28 (4 -> 7 needs output_padding=0, the other two 1)",
                ),
            ]
            t.check(
                f"{name}/{n}/logits",
                out,
                what=f"{name}: the logits for codes of shape {(n, nz)}",
                hint=values,
                test=naming(variants, rtol=NETWORK_RTOL, atol=NETWORK_ATOL),
            )


# ----------------------------------------------------------------------------- losses


CATEGORICAL_NLL = {
    "sum-over-pixels": "the cross-entropy of every pixel's level, summed over the pixels of each image",
    "per-image": "one value per image, shape (N,), for several K, H, W",
    "differentiable": "differentiable in the logits",
    "float32-and-float64": "logits in float32 and float64",
}


def _divided(value: Callable[[], torch.Tensor], by: float, batch_sum: bool = False) -> torch.Tensor:
    """A wrong variant of the per-image sums: divided by ``by`` (after summing over the batch)."""
    sums = value()
    return (sums.sum() if batch_sum else sums) / by


@check(losses.categorical_nll, conditions=CATEGORICAL_NLL)
def probe_categorical_nll(t: Trial, categorical_nll) -> None:
    """Cross-entropy of integer levels under per-pixel logits, summed over pixels: one value per example."""
    hint = (
        "-log softmax(logits)[level] for every pixel, SUMMED over the pixels of each image: "
        "F.cross_entropy(logits, target.squeeze(1), reduction='none') has shape (N, H, W); sum it over (H, W)."
    )
    t.covers(*CATEGORICAL_NLL)
    for dtype in DTYPES:
        for n, k, h, w in [(4, 16, 28, 28), (3, 4, 5, 7), (2, 256, 3, 2)]:
            case = f"logits {(n, k, h, w)}, {dtype}"
            logits = t.randn(n, k, h, w, dtype=dtype, scale=2.0).requires_grad_()
            target = t.randint(0, k, n, 1, h, w)
            got = t.call(categorical_nll, logits, target, what=f"categorical_nll({case})")
            right = functools.partial(losses.categorical_nll, logits, target)
            variants: list[tuple[Callable[[], Any], str]] = [
                (
                    functools.partial(_divided, right, h * w),
                    "this is the mean over the pixels; the log-likelihood of an image is the SUM over its pixels",
                ),
                (
                    functools.partial(_divided, right, n, batch_sum=True),
                    "this is the batch mean; return one value per example, shape (N,)",
                ),
                (
                    functools.partial(_divided, right, n * h * w, batch_sum=True),
                    "this is the mean over everything (F.cross_entropy's default reduction); return one sum over the "
                    "pixels per example",
                ),
            ]
            t.check(f"nll/{case}", got, what=f"categorical_nll, {case}", hint=hint, test=naming(variants))
            backward(got, t.rand(n, dtype=dtype, low=0.5, high=1.5))
            t.same(
                f"grad/{case}",
                logits.grad,
                what=f"the gradient of categorical_nll with respect to the logits, {case}",
                hint="Compute the loss from the logits with torch operations (no .detach(), no .item()), "
                "one value per example.",
            )


BATCH_BPD = {
    "batch-mean": "the mean over the batch of nats / (ln 2 * C * H * W)",
    "one-image": "C * H * W counts the values of ONE image, for several image shapes",
    "images-shape-only": "only the shape of images matters: integer levels or floats",
    "differentiable": "a 0-dim tensor that stays differentiable (the training loop back-propagates it)",
    "float32-and-float64": "nats in float32 and float64",
}


@check(losses.batch_bpd, conditions=BATCH_BPD)
def probe_batch_bpd(t: Trial, batch_bpd) -> None:
    """Batch mean of the nats divided by ln 2 and by the number of values in one image."""
    hint = (
        "bpd = mean over the batch of nats / (ln 2 * C * H * W); C * H * W counts the values of ONE image. "
        "Return a 0-dim tensor computed with torch operations (the training loop calls .backward() on it)."
    )
    t.covers(*BATCH_BPD)
    for dtype in DTYPES:
        for shape in [(5, 1, 28, 28), (2, 3, 8, 6), (16, 1, 5, 5)]:
            case = f"images {shape}, {dtype}"
            nats = t.rand(shape[0], dtype=dtype, low=100.0, high=3000.0).requires_grad_()
            images = t.randint(0, 16, *shape) if dtype == torch.float32 else t.rand(*shape, dtype=dtype)
            got = t.call(batch_bpd, nats, images, what=f"batch_bpd(nats, images), {case}")
            d = math.prod(shape[1:])
            n = nats.detach()
            variants = [
                (
                    lambda n=n, shape=shape: n.mean() / (math.prod(shape) * math.log(2)),
                    "you divided by the number of values of the whole batch; the dimensions are those of one image",
                ),
                (lambda n=n, d=d: n.mean() / d, "this is nats per dimension: divide by ln 2 to get bits"),
                (
                    lambda n=n, d=d: n.sum() / (d * math.log(2)),
                    "this is the sum over the batch: take the mean",
                ),
                (
                    lambda n=n, d=d: n.mean() * math.log(2) / d,
                    "multiply nats by log2(e) = 1 / ln 2, not by ln 2",
                ),
            ]
            t.check(f"bpd/{case}", got, what=f"batch_bpd, {case}", hint=hint, test=naming(variants))
            backward(got)
            t.same(
                f"grad/{case}",
                nats.grad,
                what=f"the gradient of batch_bpd with respect to nats, {case}",
                hint="Return a tensor computed from nats with torch operations (no float(), .item() or numpy): "
                "the training loop back-propagates the bpd.",
            )


# ----------------------------------------------------------------------------- grids of codes


def _grid_layout(columns: Callable[[torch.Tensor], torch.Tensor]) -> Test:
    """Name wrong grids: linspace values instead of quantiles, axes swapped or flipped, random filling."""

    def test(got: Any, want: Any, _records: dict[str, Any]) -> str | None:
        problem = close(got, want)
        if problem is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return problem
        a, b = columns(got.double()), columns(want.double())
        right = sorted(b.unique().tolist())
        n = len(right)
        if close(a[:, [1, 0]], b) is None:
            return f"{problem}: the two coordinates are swapped"
        if close(a[:, 1], b[:, 1]) is None and close(a[:, 0].flip(0), b[:, 0]) is None:
            return f"{problem}: the grid is mirrored"
        if close(a.flip(0), b) is None or close(a[:, 1].flip(0), b[:, 1]) is None:
            return (
                f"{problem}: the second coordinate runs the wrong way; it must grow from the bottom row "
                "(r = n - 1) to the top row (r = 0), like the y axis of a plot"
            )
        values = a.unique()
        if len(values) == n and close(torch.sort(values).values, torch.tensor(right, dtype=torch.float64)) is None:
            return f"{problem}: the values are right but in the wrong places; entry r * n + c is (q[c], q[n - 1 - r])"
        if len(values) == n and n > 2:
            gaps = values.sort().values.diff()
            if bool((gaps - gaps.mean()).abs().max() < 1e-6 * max(1.0, float(gaps.abs().max()))):
                return (
                    f"{problem}: the values are evenly spaced; use normal quantiles, scipy.stats.norm.ppf of "
                    "evenly spaced probabilities, so that the grid covers the prior's mass"
                )
        return problem

    return test


MANIFOLD_CODES = {
    "quantiles": "q[i] = norm.ppf((i + 1/2) / n), n = 2 included",
    "layout": "entry r * n + c is (q[c], q[n - 1 - r]): z1 left to right, z2 bottom to top",
    "dtype": "in the given dtype (float32 and float64)",
    "device": "on the given device",
    "defaults": "dtype defaults to float32 and device to the default device",
}
DEFAULT_DEVICE = {"device": "device=None asks for the default device, whatever the inputs' device"}


@check(latent.manifold_codes, conditions=MANIFOLD_CODES)
def probe_manifold_codes(t: Trial, manifold_codes) -> None:
    """An n x n grid of codes at the normal quantiles of (i + 1/2) / n, first coordinate left to right,
    second bottom to top."""
    hint = (
        "q[i] = norm.ppf((i + 0.5) / n) for i = 0 .. n-1, and entry r * n + c of the (n * n, 2) result is "
        "(q[c], q[n - 1 - r]), in the given dtype and on the given device."
    )
    t.covers(*MANIFOLD_CODES)
    for dtype in DTYPES:
        for n in (20, 5, 2):
            case = f"n = {n}, {dtype}, device={t.device}"
            got = t.call(manifold_codes, n, dtype=dtype, device=t.device, what=f"manifold_codes({case})")
            t.check(f"codes/{case}", got, what=f"manifold_codes, {case}", hint=hint, test=_grid_layout(lambda c: c))
    got = t.call(
        manifold_codes, 3, what="manifold_codes(3) (dtype and device left at their defaults)", exempt=DEFAULT_DEVICE
    )
    t.check("codes/defaults", got, what="manifold_codes(3)", hint=hint, test=_grid_layout(lambda c: c))


TOP_VARIANCE_DIMS = {
    "over-examples": "the variance of every column (dimension) over the rows (examples)",
    "largest-first": "the indices of the k largest variances, the largest first",
    "int64": "an int64 tensor of shape (k,)",
    "default-k": "k defaults to 2",
    "float32-and-float64": "codes in float32 and float64",
}


@check(latent.top_variance_dims, conditions=TOP_VARIANCE_DIMS)
def probe_top_variance_dims(t: Trial, top_variance_dims) -> None:
    """Indices of the k code dimensions (columns) with the largest variance over the examples, largest first."""
    hint = (
        "Variance of every column over the rows (dim=0), then the indices of the k largest, largest first "
        "(torch.topk), as an int64 tensor of shape (k,)."
    )
    t.covers(*TOP_VARIANCE_DIMS)
    for dtype in DTYPES:
        for n, d, k in [(500, 16, 2), (40, 6, 3), (20, 30, None)]:
            case = f"codes ({n}, {d}), k = {k or '2 (the default)'}, {dtype}"
            # Scales 1.3 times apart in a random order: sample variances almost never tie, so rounding
            # in another (correct) formula cannot change the ranking.
            ranks = torch.argsort(t.rand(d, dtype=torch.float64)).to(dtype)
            scales = 1.3 ** (ranks - d / 2)
            codes = t.randn(d, dtype=dtype, scale=3.0) + scales * t.randn(n, d, dtype=dtype)
            args = (codes,) if k is None else (codes, k)
            k = k or 2
            got = t.call(top_variance_dims, *args, what=f"top_variance_dims({case})")
            variants = [
                (
                    lambda codes=codes, k=k: torch.topk(codes.var(dim=1), k).indices,
                    "these are rows (examples); the variance is taken over the examples, dim=0, one per dimension",
                ),
                (
                    lambda codes=codes, k=k: torch.topk(codes.var(dim=0), k, largest=False).indices,
                    "these are the SMALLEST variances",
                ),
                (
                    lambda codes=codes, k=k: torch.topk(codes.var(dim=0), k).indices.flip(0),
                    "list the largest variance first",
                ),
                (
                    lambda codes=codes, k=k: torch.topk((codes**2).mean(dim=0), k).indices,
                    "this ranks the mean square, not the variance: subtract each dimension's mean",
                ),
            ]
            t.check(
                f"dims/{case}",
                got,
                what=f"top_variance_dims, {case}",
                hint=hint,
                test=naming(variants),
            )


TRAVERSAL_CODES = {
    "quantiles": "q = norm.ppf(linspace(low, high, steps)), for several steps, low and high",
    "layout": "z[i] = q[c] and z[j] = q[steps - 1 - r] for entry r * steps + c, with i > j too",
    "zeros-elsewhere": "every other dimension exactly 0",
    "defaults": "steps = 7, low = 0.05, high = 0.95, float32 on the default device by default",
    "dtype": "in the given dtype (float32 and float64)",
    "device": "on the given device",
}


@check(latent.traversal_codes, conditions=TRAVERSAL_CODES)
def probe_traversal_codes(t: Trial, traversal_codes) -> None:
    """A steps x steps grid of codes: zero but in dims (i, j), which take normal quantiles of low .. high."""
    hint = (
        "q = norm.ppf(linspace(low, high, steps)); every code is 0 except z[i] = q[c] and z[j] = q[steps - 1 - r] "
        "for entry r * steps + c."
    )
    t.covers(*TRAVERSAL_CODES)
    cases = [
        (16, (3, 11), 7, 0.05, 0.95),
        (5, (4, 0), 7, 0.05, 0.95),
        (2, (0, 1), 5, 0.1, 0.9),
        (6, (2, 5), 4, 0.2, 0.7),
    ]
    for dtype in DTYPES:
        for nz, dims, steps, low, high in cases:
            case = f"nz = {nz}, dims = {dims}, steps = {steps}, low = {low}, high = {high}, {dtype}"
            got = t.call(
                traversal_codes,
                nz,
                dims,
                steps,
                low,
                high,
                dtype=dtype,
                device=t.device,
                what=f"traversal_codes({case}, device={t.device})",
            )
            t.check(f"codes/{case}", got, what=f"traversal_codes, {case}", hint=hint, test=_traversal_layout(dims, nz))
    got = t.call(
        traversal_codes,
        4,
        (2, 1),
        what="traversal_codes(4, (2, 1)) (the other arguments left at their defaults)",
        exempt=DEFAULT_DEVICE,
    )
    t.check("codes/defaults", got, what="traversal_codes(4, (2, 1))", hint=hint, test=_traversal_layout((2, 1), 4))


def _traversal_layout(dims: tuple[int, int], nz: int) -> Test:
    """The grid's layout in dims (i, j), and exact zeros in every other dimension."""
    keep = [d for d in range(nz) if d not in dims]

    def test(got: Any, want: Any, records: dict[str, Any]) -> str | None:
        problem = close(got, want)
        if problem is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return problem
        rest = got[:, keep]
        if rest.numel() and bool((rest != 0).any()):
            return (
                f"{problem}: the dimensions other than {tuple(dims)} must be exactly 0 (the prior's mean), "
                "not random values"
            )
        return _grid_layout(lambda c: c[:, list(dims)])(got, want, records)

    return test


def _toward(start: torch.Tensor, alphas: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Rows start + alpha_k (goal - start): the grader's, for naming wrong variants."""
    return start + alphas[:, None] * (goal - start)


TOWARD_CLASS_MEAN = {
    "class-mean": "m, the mean of the codes whose label is target, one value per dimension",
    "rows": "rows z + alpha_k (m - z), shape (A, nz)",
    "alphas-beyond": "alphas below 0 and above 1",
    "float32-and-float64": "codes in float32 and float64",
}


@check(latent.toward_class_mean, conditions=TOWARD_CLASS_MEAN)
def probe_toward_class_mean(t: Trial, toward_class_mean) -> None:
    """Rows z + a * (m - z), m the mean code of the target class."""
    hint = "m = codes[labels == target].mean(dim=0); row k is z + alphas[k] * (m - z), shape (len(alphas), nz)."
    t.covers(*TOWARD_CLASS_MEAN)
    for dtype in DTYPES:
        for m, nz, classes, n_alpha in [(60, 4, 5, 6), (25, 2, 3, 4), (200, 16, 10, 7)]:
            case = f"{m} codes of size {nz}, {classes} classes, {n_alpha} alphas, {dtype}"
            codes = t.randn(m, nz, dtype=dtype, scale=2.0)
            labels = t.randint(0, classes, m)
            labels[:classes] = torch.arange(classes, device=labels.device)  # every class is present
            target = t.integer(0, classes)
            z = t.randn(nz, dtype=dtype)
            alphas = t.rand(n_alpha, dtype=dtype, low=-0.5, high=1.5)
            got = t.call(toward_class_mean, z, codes, labels, target, alphas, what=f"toward_class_mean({case})")
            mean = codes[labels == target].mean(0)
            variants = [
                (
                    functools.partial(_toward, z, alphas, codes.mean(0)),
                    "this moves towards the mean of ALL codes; use only the codes whose label is target",
                ),
                (
                    functools.partial(_toward, z, alphas, z + mean),
                    "this adds alpha * m; move along the difference m - z",
                ),
                (
                    functools.partial(_toward, mean, alphas, z),
                    "alpha = 0 must give z itself and alpha = 1 the class mean, not the other way round",
                ),
                (
                    functools.partial(_toward, z, alphas, codes[labels == target].mean(1).mean()),
                    "the class mean is taken over the codes (dim=0), one value per dimension",
                ),
            ]
            t.check(f"codes/{case}", got, what=f"toward_class_mean, {case}", hint=hint, test=naming(variants))
