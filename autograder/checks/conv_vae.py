"""Hidden tests of the chapter "Convolutional VAEs and their latent space" (``conv_vae``).

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel, where it
records what the student's object returns on seeded inputs, and in the grader, where the reference
from ``genlab`` meets the same inputs and every record is compared. Known wrong answers (the
typical mistakes of assignments/conv_vae.toml) are named in the messages: the variants are
computed in the grader only, from the same inputs.

Networks are compared in float64 with weights set by ``Trial.init_module`` (by parameter shape, so
the order in which layers are registered does not matter): float32 convolutions on a GPU may use
TF32 and differ from the CPU by more than the course's tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autograder.probing import Test, Trial, check, close, naming
from genlab import latent, losses
from genlab.models import conv

DTYPES = (torch.float32, torch.float64)


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


@check(conv.ConvEncoder)
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
    for nz, hidden in [(20, 32), (3, 8)]:
        name = f"ConvEncoder({nz}, {hidden})"
        enc = t.call(ConvEncoder, nz, hidden, what=name)
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


@check(conv.ConvDecoder)
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
    for nz, levels, hidden in [(20, 16, 32), (3, 4, 8)]:
        name = f"ConvDecoder({nz}, {levels}, {hidden})"
        dec = t.call(ConvDecoder, nz, levels, hidden, what=name)
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
                test=naming(variants),
            )


# ----------------------------------------------------------------------------- losses


@check(losses.categorical_nll)
def probe_categorical_nll(t: Trial, categorical_nll) -> None:
    """Cross-entropy of integer levels under per-pixel logits, summed over pixels: one value per example."""
    hint = (
        "-log softmax(logits)[level] for every pixel, SUMMED over the pixels of each image: "
        "F.cross_entropy(logits, target.squeeze(1), reduction='none') has shape (N, H, W); sum it over (H, W)."
    )
    for dtype in DTYPES:
        for n, k, h, w in [(4, 16, 28, 28), (3, 4, 5, 7), (2, 256, 3, 2)]:
            case = f"logits {(n, k, h, w)}, {dtype}"
            logits = t.randn(n, k, h, w, dtype=dtype, scale=2.0).requires_grad_()
            target = t.randint(0, k, n, 1, h, w)
            got = t.call(categorical_nll, logits, target, what=f"categorical_nll({case})")
            right = lambda logits=logits, target=target: losses.categorical_nll(logits, target)
            variants = [
                (
                    lambda right=right, hw=h * w: right() / hw,
                    "this is the mean over the pixels; the log-likelihood of an image is the SUM over its pixels",
                ),
                (
                    lambda right=right: right().mean(),
                    "this is the batch mean; return one value per example, shape (N,)",
                ),
                (
                    lambda right=right, hw=h * w: right().mean() / hw,
                    "this is the mean over everything (F.cross_entropy's default reduction); return one sum over the "
                    "pixels per example",
                ),
            ]
            t.check(f"nll/{case}", got, what=f"categorical_nll, {case}", hint=hint, test=naming(variants))
            weights = t.rand(n, dtype=dtype, low=0.5, high=1.5)
            if isinstance(got, torch.Tensor) and got.requires_grad and got.shape == (n,):
                (got * weights).sum().backward()
            t.same(
                f"grad/{case}",
                logits.grad,
                what=f"the gradient of categorical_nll with respect to the logits, {case}",
                hint="Compute the loss from the logits with torch operations (no .detach(), no .item()), "
                "one value per example.",
            )


@check(losses.batch_bpd)
def probe_batch_bpd(t: Trial, batch_bpd) -> None:
    """Batch mean of the nats divided by ln 2 and by the number of values in one image."""
    hint = "bpd = mean over the batch of nats / (ln 2 * C * H * W); C * H * W counts the values of ONE image."
    for dtype in DTYPES:
        for shape in [(5, 1, 28, 28), (2, 3, 8, 6), (16, 1, 5, 5)]:
            case = f"images {shape}, {dtype}"
            nats = t.rand(shape[0], dtype=dtype, low=100.0, high=3000.0)
            images = t.randint(0, 16, *shape) if dtype == torch.float32 else t.rand(*shape, dtype=dtype)
            got = t.call(batch_bpd, nats, images, what=f"batch_bpd(nats, images), {case}")
            d = math.prod(shape[1:])
            variants = [
                (
                    lambda nats=nats, shape=shape: nats.mean() / (math.prod(shape) * math.log(2)),
                    "you divided by the number of values of the whole batch; the dimensions are those of one image",
                ),
                (lambda nats=nats, d=d: nats.mean() / d, "this is nats per dimension: divide by ln 2 to get bits"),
                (
                    lambda nats=nats, d=d: nats.sum() / (d * math.log(2)),
                    "this is the sum over the batch: take the mean",
                ),
                (
                    lambda nats=nats, d=d: nats.mean() * math.log(2) / d,
                    "multiply nats by log2(e) = 1 / ln 2, not by ln 2",
                ),
            ]
            t.check(f"bpd/{case}", got, what=f"batch_bpd, {case}", hint=hint, test=naming(variants))


# ----------------------------------------------------------------------------- grids of codes


def _device_test(requested_key: str) -> Test:
    def test(got: Any, _want: Any, records: dict[str, Any]) -> str | None:
        asked = records.get(requested_key)
        if got == asked or str(got).split(":")[0] == str(asked).split(":")[0]:
            return None
        return f"the codes are on {got}, asked for device={asked}: create them with device=device"

    return test


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


@check(latent.manifold_codes)
def probe_manifold_codes(t: Trial, manifold_codes) -> None:
    """An n x n grid of codes at the normal quantiles of (i + 1/2) / n, first coordinate left to right,
    second bottom to top."""
    hint = (
        "q[i] = norm.ppf((i + 0.5) / n) for i = 0 .. n-1, and entry r * n + c of the (n * n, 2) result is "
        "(q[c], q[n - 1 - r])."
    )
    t.note("device", str(t.device))
    for dtype in DTYPES:
        for n in (20, 5, 2):
            case = f"n = {n}, {dtype}"
            got = t.call(manifold_codes, n, dtype=dtype, device=t.device, what=f"manifold_codes({case})")
            t.check(f"codes/{case}", got, what=f"manifold_codes, {case}", hint=hint, test=_grid_layout(lambda c: c))
            t.same(
                f"dtype/{case}",
                str(getattr(got, "dtype", None)),
                what=f"the dtype of manifold_codes, {case}",
                hint="Create the codes with dtype=dtype.",
            )
            t.check(
                f"device/{case}",
                str(getattr(got, "device", None)),
                what=f"the device of manifold_codes, {case}",
                test=_device_test("device"),
            )


@check(latent.top_variance_dims)
def probe_top_variance_dims(t: Trial, top_variance_dims) -> None:
    """Indices of the k code dimensions (columns) with the largest variance over the examples, largest first."""
    hint = (
        "Variance of every column over the rows (dim=0), then the indices of the k largest, largest first (torch.topk)."
    )
    for dtype in DTYPES:
        for n, d, k in [(500, 16, 2), (40, 6, 3), (20, 30, 2)]:
            case = f"codes ({n}, {d}), k = {k}, {dtype}"
            # Scales 1.3 times apart in a random order: sample variances almost never tie, so rounding
            # in another (correct) formula cannot change the ranking.
            ranks = torch.argsort(t.rand(d, dtype=torch.float64)).to(dtype)
            scales = 1.3 ** (ranks - d / 2)
            codes = t.randn(d, dtype=dtype, scale=3.0) + scales * t.randn(n, d, dtype=dtype)
            got = t.call(top_variance_dims, codes, k, what=f"top_variance_dims({case})")
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
                test=naming(variants, convert=lambda g: torch.as_tensor(g, dtype=torch.int64)),
            )


@check(latent.traversal_codes)
def probe_traversal_codes(t: Trial, traversal_codes) -> None:
    """A steps x steps grid of codes: zero but in dims (i, j), which take normal quantiles of low .. high."""
    hint = (
        "q = norm.ppf(linspace(low, high, steps)); every code is 0 except z[i] = q[c] and z[j] = q[steps - 1 - r] "
        "for entry r * steps + c."
    )
    t.note("device", str(t.device))
    cases = [
        (16, (3, 11), 7, 0.05, 0.95),
        (5, (4, 0), 7, 0.05, 0.95),
        (2, (0, 1), 5, 0.1, 0.9),
        (6, (2, 5), 4, 0.2, 0.7),
    ]
    for dtype in DTYPES:
        for nz, dims, steps, low, high in cases:
            case = f"nz = {nz}, dims = {dims}, steps = {steps}, low = {low}, high = {high}, {dtype}"
            t.seed_global(f"traversal {case}")
            got = t.call(
                traversal_codes,
                nz,
                dims,
                steps,
                low,
                high,
                dtype=dtype,
                device=t.device,
                what=f"traversal_codes({case})",
            )

            def others(codes: torch.Tensor, dims=dims, nz=nz) -> torch.Tensor:
                keep = [d for d in range(nz) if d not in dims]
                return codes[:, keep]

            def layout(got: Any, want: Any, records: dict[str, Any], dims=dims, others=others) -> str | None:
                problem = close(got, want)
                if problem is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
                    return problem
                rest = others(got)
                if rest.numel() and bool((rest != 0).any()):
                    return (
                        f"{problem}: the dimensions other than {tuple(dims)} must be exactly 0 (the prior's mean), "
                        "not random values"
                    )
                pair = [list(dims)]
                return _grid_layout(lambda c: c[:, pair[0]])(got, want, records)

            t.check(f"codes/{case}", got, what=f"traversal_codes, {case}", hint=hint, test=layout)
            t.same(
                f"dtype/{case}",
                str(getattr(got, "dtype", None)),
                what=f"the dtype of traversal_codes, {case}",
                hint="Create the codes with dtype=dtype.",
            )
            t.check(
                f"device/{case}",
                str(getattr(got, "device", None)),
                what=f"the device of traversal_codes, {case}",
                test=_device_test("device"),
            )


@check(latent.toward_class_mean)
def probe_toward_class_mean(t: Trial, toward_class_mean) -> None:
    """Rows z + a * (m - z), m the mean code of the target class."""
    hint = "m = codes[labels == target].mean(dim=0); row k is z + alphas[k] * (m - z), shape (len(alphas), nz)."
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
                    lambda z=z, a=alphas, codes=codes: z + a[:, None] * (codes.mean(0) - z),
                    "this moves towards the mean of ALL codes; use only the codes whose label is target",
                ),
                (
                    lambda z=z, a=alphas, m=mean: z + a[:, None] * m,
                    "this adds alpha * m; move along the difference m - z",
                ),
                (
                    lambda z=z, a=alphas, m=mean: m + a[:, None] * (z - m),
                    "alpha = 0 must give z itself and alpha = 1 the class mean, not the other way round",
                ),
                (
                    lambda z=z, a=alphas, codes=codes, labels=labels, target=target: (
                        z + a[:, None] * (codes[labels == target].mean(1).mean() - z)
                    ),
                    "the class mean is taken over the codes (dim=0), one value per dimension",
                ),
            ]
            t.check(f"codes/{case}", got, what=f"toward_class_mean, {case}", hint=hint, test=naming(variants))
