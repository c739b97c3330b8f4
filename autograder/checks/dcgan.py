"""Hidden tests of the chapter "DCGAN" (``dcgan``).

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel, where it
records what the student's function returns or leaves behind on seeded inputs (losses, the
parameters and gradients of both networks after a step, the codes of a reconstruction), and in
the grader, where the reference from ``genlab.gan`` meets the same inputs and every record is
compared. Known wrong variants (BCE on logits, a sigmoid applied twice, real and fake in one
batch, a missing ``zero_grad``, fake samples not detached, the saturating generator loss, a
reconstruction that trains the generator) are recomputed in the grader to name the mistake.

Steps are probed with plain SGD, so that parameters after a step reflect the gradients linearly
(Adam's first step only keeps their signs). TF32 convolutions are switched off while a probe runs,
so a GPU kernel computes in true float32 and meets the CPU reference within the course's tolerance.
Every call is held to the course's contract (autograder/probing.py): a step that replaces a
network's parameters (its optimizer then holds stale ones) or switches their ``requires_grad`` is
caught there, whatever the exercise. Each check's ``conditions`` list what its text states.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from autograder.probing import Test, Trial, check, close, describe
from genlab import gan
from genlab.models.dcgan import Discriminator, Generator

LR = 0.05  # SGD's learning rate in the step probes
TRAINING = {
    "repeat": "a training step changes the networks by design",
    "graph": "the text lets a step return its loss as a tensor (still attached to the graph, say) or a float",
}
# A statistical test of one tensor fails a correct initialisation with probability below 1e-8 per side.
TAIL = 1e-8


@contextmanager
def _true_float32() -> Iterator[None]:
    """No TF32 in cuDNN convolutions or matmuls while a probe runs (a no-op on the CPU)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _networks(t: Trial, code_size: int) -> tuple[Generator, Discriminator]:
    """The chapter's networks with deterministic weights: BatchNorm scales near 1, so that signals and
    gradients keep their size through the layers (init_module alone would give them scales of ~0.1)."""
    G, D = Generator(code_size).to(t.device), Discriminator().to(t.device)
    for net in (G, D):
        t.init_module(net)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.copy_(t.rand(*m.weight.shape, low=0.8, high=1.2))
    return G.train(), D.train()


def _cpu(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).cpu()


# ----------------------------------------------------------------------------- dcgan_init


def _normal_draws(mean: float, std: float, layer: str) -> Test:
    """The recorded tensor must look like independent draws from N(mean, std^2)."""

    def test(got: Any, want: Any, _records: dict) -> str | None:
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            return f"expected a tensor of shape {tuple(want.shape)}, got {describe(got)}"
        from scipy import stats

        x = got.detach().double().flatten()
        n = x.numel()
        m, s = float(x.mean()), float(x.std())
        z = stats.norm.isf(TAIL / 2)
        lo = math.sqrt(stats.chi2.ppf(TAIL, n - 1) / (n - 1))
        hi = math.sqrt(stats.chi2.isf(TAIL, n - 1) / (n - 1))
        kurtosis = float(((x - m) ** 4).mean() / max(s, 1e-300) ** 4) if s > 0 else 0.0
        normal_shape = n < 20_000 or abs(kurtosis - 3) < 8 * math.sqrt(24 / n)
        if abs(m - mean) <= z * std / math.sqrt(n) and lo <= s / std <= hi and normal_shape:
            return None
        found = f"got mean {m:.4g} and standard deviation {s:.4g} over its {n} values"
        if s == 0:
            found += f" (all values are {m:.4g}: left at a constant)"
        elif not normal_shape:
            found += f" and a kurtosis of {kurtosis:.2f} (a normal distribution has 3: draw with nn.init.normal_)"
        return f"{layer} should hold draws from N({mean:g}, {std:g}^2); {found}"

    return test


def _kept_or_zero(got: Any, want: Any, _records: dict) -> str | None:
    """A convolution's bias: left as it was (the reference), or set to 0 (allowed)."""
    if isinstance(got, torch.Tensor) and got.shape == want.shape and not got.any():
        return None
    return close(got, want)


def _init_records(t: Trial, module: nn.Module, where: str) -> None:
    """Record every parameter of ``module`` after the initialisation, with the test its kind needs."""
    for name, m in module.named_modules():
        label = f"{where}{'.' + name if name else ''} ({type(m).__name__})"
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            t.check(
                f"{label}/weight",
                m.weight,
                what=f"the weight of {label}",
                test=_normal_draws(0.0, 0.02, f"the weight of a {type(m).__name__}"),
                hint="Convolutions and transposed convolutions get weights from N(0, 0.02^2): "
                "nn.init.normal_(m.weight, 0.0, 0.02).",
            )
            if m.bias is not None:
                t.check(
                    f"{label}/bias",
                    m.bias,
                    what=f"the bias of {label}",
                    test=_kept_or_zero,
                    hint="The DCGAN initialisation does not draw the convolutions' biases: leave them (or set "
                    "them to 0).",
                )
        elif isinstance(m, nn.BatchNorm2d):
            t.check(
                f"{label}/weight",
                m.weight,
                what=f"the weight (scale) of {label}",
                test=_normal_draws(1.0, 0.02, "the weight of a BatchNorm2d"),
                hint="BatchNorm weights are drawn from N(1, 0.02^2) (mean 1, not 0): "
                "nn.init.normal_(m.weight, 1.0, 0.02).",
            )
            t.same(
                f"{label}/bias",
                m.bias,
                what=f"the bias (shift) of {label}",
                hint="BatchNorm biases are set to 0: nn.init.zeros_(m.bias).",
            )
        elif isinstance(m, nn.Linear):
            t.same(
                f"{label}/weight",
                m.weight,
                what=f"the weight of {label}",
                hint="Leave nn.Linear layers as they are: the DCGAN initialisation touches convolutions "
                "and BatchNorm layers only (test the layer's type, e.g. with isinstance).",
            )
            t.same(f"{label}/bias", m.bias, what=f"the bias of {label}", hint="Leave nn.Linear layers as they are.")


DCGAN_INIT = {
    "convolutions": "nn.Conv2d and nn.ConvTranspose2d weights drawn from N(0, 0.02^2)",
    "conv-biases": "the convolutions' biases kept (or set to 0)",
    "batchnorm": "nn.BatchNorm2d weights drawn from N(1, 0.02^2), biases set to 0",
    "others-untouched": "every other layer, nn.Linear included, left as it is",
    "in-place": "one layer, initialised in place: its parameters stay the same tensors",
    "apply": "net.apply(dcgan_init) over the chapter's generator and discriminator",
}
RANDOM_INIT = {"repeat": "draws random weights: two calls differ"}


@check(gan.dcgan_init, conditions=DCGAN_INIT)
def probe_dcgan_init(t: Trial, dcgan_init) -> None:
    """Conv/ConvTranspose weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02) and biases 0, Linear untouched."""
    t.covers(*DCGAN_INIT)
    layers = {
        "Conv2d(64, 128, 4)": nn.Conv2d(64, 128, 4, stride=2, padding=1),
        "ConvTranspose2d(128, 64, 4)": nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
        "BatchNorm2d(512)": nn.BatchNorm2d(512),
        "Linear(256, 128)": nn.Linear(256, 128),
    }
    for name, layer in layers.items():
        _start(t, layer)
        t.call(dcgan_init, layer, what=f"dcgan_init({name})", exempt=RANDOM_INIT)
        _init_records(t, layer, name)
    for name, net in (("Generator()", Generator()), ("Discriminator()", Discriminator())):
        _start(t, net)
        t.call(lambda net: net.apply(dcgan_init), net, what=f"{name}.apply(dcgan_init)", exempt=RANDOM_INIT)
        _init_records(t, net, name)


def _start(t: Trial, module: nn.Module) -> None:
    """Deterministic weights to start from; BatchNorm scales at PyTorch's default 1 (so that leaving them
    is seen as such) and BatchNorm shifts away from 0 (so that forgetting to zero them is seen)."""
    t.init_module(module.to(t.device))
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)


# ----------------------------------------------------------------------------- classification_loss


def _loss_diagnosis(case: tuple[torch.Tensor, torch.Tensor]) -> Test:
    """Compare with the reference; name the mistake when a known wrong variant matches."""

    def test(got: Any, want: Any, _records: dict) -> str | None:
        problem = close(got, want)
        if problem is None:
            return None
        logits, labels = case
        variants = {
            "that is the BCE of the logits read as probabilities: F.binary_cross_entropy expects "
            "probabilities, use F.binary_cross_entropy_with_logits on logits": lambda: F.binary_cross_entropy(
                logits.clamp(0, 1), labels
            ),
            "that is a sigmoid applied twice: binary_cross_entropy_with_logits already contains the sigmoid, "
            "give it the logits themselves": lambda: F.binary_cross_entropy_with_logits(torch.sigmoid(logits), labels),
            "that is the BCE of sigmoid(logits): for large logits the sigmoid rounds to exactly 0 or 1 and "
            "the log is clipped; compute from the logits (binary_cross_entropy_with_logits)": lambda: (
                F.binary_cross_entropy(torch.sigmoid(logits), labels)
            ),
            "that is the sum over the entries; average them": lambda: (
                gan.classification_loss(logits, labels) * logits.numel()
            ),
            "the labels are swapped: the target is labels, the probabilities are sigmoid(logits)": lambda: (
                gan.classification_loss(logits, 1 - labels)
            ),
        }
        for text, value in variants.items():
            try:
                if close(got, value()) is None:
                    return f"{problem}: {text}"
            except (RuntimeError, ValueError):
                continue
        return problem

    return test


CLASSIFICATION_LOSS = {
    "mean-over-entries": "the BCE averaged over all entries",
    "any-shape": "logits of any shape, labels of the same shape: (N, 1), (N, k) and (N,)",
    "soft-labels": "labels 1 (real), 0 (fake) and values in between",
    "confident-logits": "logits up to +-60, from the logits (sigmoid(l) rounds to 0 or 1 there)",
    "differentiable": "the loss as a tensor that back-propagates into the logits",
    "float32-and-float64": "logits in float32 and float64",
}


def _confident_logits(t: Trial, dtype: torch.dtype) -> torch.Tensor:
    """Logits spread over the promised +-60, two of them at +-59.5 (where any sigmoid rounds to 0 or 1)."""
    spread = t.rand(10, 1, dtype=dtype, low=-60.0, high=60.0)
    return torch.cat([spread, torch.tensor([[59.5], [-59.5]], dtype=dtype, device=t.device)])


def _confident_labels(t: Trial, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Random 0/1 labels, the two extreme logits labelled against them (their loss is about 59.5 nats)."""
    labels = (t.rand(*shape, dtype=dtype) > 0.5).to(dtype)
    labels[-2:] = torch.tensor([[0.0], [1.0]], dtype=dtype, device=t.device)
    return labels


@check(gan.classification_loss, conditions=CLASSIFICATION_LOSS)
def probe_classification_loss(t: Trial, classification_loss) -> None:
    """Mean binary cross-entropy of the labels under sigmoid(logits), computed from the logits."""
    hint = (
        "Average over all entries of -[y log sigmoid(l) + (1 - y) log(1 - sigmoid(l))], computed from the "
        "logits l: F.binary_cross_entropy_with_logits(logits, labels)."
    )
    t.covers(*CLASSIFICATION_LOSS)
    cases = [
        (
            "logits in (0, 1)",
            lambda d: t.rand(8, 1, dtype=d, low=0.05, high=0.95),
            lambda d, s: (t.rand(*s, dtype=d) > 0.5).to(d),
        ),
        (
            "logits of a discriminator",
            lambda d: t.randn(16, 1, dtype=d, scale=3.0),
            lambda d, s: (t.rand(*s, dtype=d) > 0.5).to(d),
        ),
        ("soft labels", lambda d: t.randn(5, 3, dtype=d, scale=2.0), lambda d, s: t.rand(*s, dtype=d)),
        ("flat logits", lambda d: t.randn(7, dtype=d, scale=2.0), lambda d, s: (t.rand(*s, dtype=d) > 0.5).to(d)),
        (
            "a confident discriminator (logits up to +-60)",
            lambda d: _confident_logits(t, d),
            lambda d, s: _confident_labels(t, d, s),
        ),
    ]
    for dtype in (torch.float32, torch.float64):
        for kind, make_logits, make_labels in cases:
            logits = make_logits(dtype)
            labels = make_labels(dtype, tuple(logits.shape))
            case = f"{kind}, shape {tuple(logits.shape)}, {dtype}"
            got = t.call(classification_loss, logits, labels, what=f"classification_loss(logits, labels) ({case})")
            t.check(
                f"{case}",
                got,
                what=f"classification_loss(logits, labels) ({case})",
                hint=hint,
                test=_loss_diagnosis((logits.cpu(), labels.cpu())),
            )
        logits = t.randn(6, 1, dtype=dtype, scale=3.0).requires_grad_()
        labels = (t.rand(6, 1, dtype=dtype) > 0.5).to(dtype)
        loss = t.call(
            classification_loss, logits, labels, what=f"classification_loss with requires_grad logits, {dtype}"
        )
        grad = None
        if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1:
            (grad,) = torch.autograd.grad(loss.reshape(()), [logits])
        t.same(
            f"grad/{dtype}",
            grad,
            what=f"the gradient of the loss with respect to the logits, {dtype}",
            hint="Return the loss as a tensor (no .item(), no detach): the training steps back-propagate it. "
            "Its gradient is (sigmoid(l) - y) / number of entries.",
        )


# ----------------------------------------------------------------------------- discriminator_step


def _d_step_variants(
    D0: nn.Module, G0: nn.Module, real: torch.Tensor, z: torch.Tensor
) -> dict[str, list[torch.Tensor]]:
    """Losses of known wrong discriminator steps, recomputed in the grader (with the reference loss,
    which the kernel's student edition withholds)."""
    bce = gan.classification_loss
    n = real.shape[0]
    ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
    with torch.no_grad():
        D, G = copy.deepcopy(D0).train(), copy.deepcopy(G0).train()
        both = D(torch.cat([real, G(z)]))
        joint = bce(both, torch.cat([ones, zeros]))
        mixed = (
            "real and fake images went through the discriminator as ONE batch: its BatchNorm layers then "
            "normalise them together. Call the discriminator twice, once on the real batch and once on the fake one"
        )
        variants = {mixed: [joint, 2 * joint, bce(both[:n], ones) + bce(both[n:], zeros)]}
        D, G = copy.deepcopy(D0).train(), copy.deepcopy(G0).train()
        r, f = D(real), D(G(z))
        variants["the labels are swapped: real images have label 1, fake ones label 0"] = [bce(r, zeros) + bce(f, ones)]
        variants["that is the mean of the two losses; return their sum, BCE(D(real), 1) + BCE(D(fake), 0)"] = [
            (bce(r, ones) + bce(f, zeros)) / 2
        ]
    return variants


def _named(variants_of: Callable[[], dict[str, list[torch.Tensor]]], default: str) -> Test:
    def test(got: Any, want: Any, _records: dict) -> str | None:
        problem = close(got, want)
        if problem is None:
            return None
        for text, values in variants_of().items():
            if any(close(got, v) is None for v in values):
                return f"{problem}: {text}"
        return f"{problem}. {default}"

    return test


def _no_gradient(got: Any, _want: Any, _records: dict) -> str | None:
    """The generator's gradients after the discriminator step: all None (or zero)."""
    if not isinstance(got, list):
        return f"expected a list of gradients, got {describe(got)}"
    if all(g is None or (isinstance(g, torch.Tensor) and not g.any()) for g in got):
        return None
    return (
        "the generator received gradients from the discriminator's loss: detach the fake images "
        "(generator(z).detach()) before the discriminator sees them, so that this step trains the "
        "discriminator only"
    )


def _after_step(p0: torch.Tensor, stale: torch.Tensor | None, default: str) -> Test:
    """A parameter after one SGD step: name a missing zero_grad or a step that did not happen."""

    def test(got: Any, want: Any, _records: dict) -> str | None:
        problem = close(got, want)
        if problem is None:
            return None
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            if stale is not None and close(got, want - LR * stale) is None:
                return (
                    f"{problem}: the update used the old gradients too. Clear them with "
                    "optimizer.zero_grad() before loss.backward()"
                )
            if close(got, p0) is None:
                return f"{problem}: the parameter did not change. {default}"
        return f"{problem}. {default}"

    return test


DISCRIMINATOR_STEP = {
    "zero-grad": "old gradients (the generator step's) cleared before the backward pass",
    "separate-batches": "real and fake images through the discriminator as two separate batches",
    "detach": "the fakes detached: no gradient reaches the generator",
    "labels": "label 1 for real, 0 for fake, made with torch.ones_like / zeros_like (shape, dtype, device)",
    "sum-of-losses": "the loss is the sum of the two batch means",
    "one-step": "one optimizer step, the loss returned (a tensor or a float) as computed before it",
    "modes": "the networks' modes (train/eval) left as the training loop set them",
    "batch-sizes": "batches of several sizes",
}


def _modes_record(t: Trial, key: str, nets: dict[str, nn.Module], what: str) -> None:
    t.same(
        key,
        {name: [m.training for m in net.modules()] for name, net in nets.items()},
        what=f"the networks' modes after {what}",
        hint="Do not call train() or eval() here: the training loop sets the networks' modes.",
    )


@check(gan.discriminator_step, conditions=DISCRIMINATOR_STEP)
def probe_discriminator_step(t: Trial, discriminator_step) -> None:
    """zero_grad, BCE(D(real), 1) + BCE(D(G(z).detach()), 0) on two batches, backward, one step."""
    t.covers(*DISCRIMINATOR_STEP)
    with _true_float32():
        for n in (8, 5):
            G, D = _networks(t, code_size=16)
            stale = [t.randn(*p.shape, scale=0.1) for p in D.parameters()]
            for p, s in zip(D.parameters(), stale):
                p.grad = s.clone()  # what the previous generator step left in the discriminator
            optimizer = torch.optim.SGD(D.parameters(), lr=LR)
            real, z = t.rand(n, 3, 32, 32), t.randn(n, 16)
            before = {name: p.detach().cpu().clone() for name, p in D.named_parameters()}
            start = (_cpu(D), _cpu(G), real.cpu(), z.cpu()) if t.reference else None
            case = f"a batch of {n}"
            loss = t.call(
                discriminator_step,
                D,
                G,
                real,
                z,
                optimizer,
                what=f"discriminator_step(D, G, real, z, optimizer) on {case} (create labels on the "
                "logits' device, e.g. torch.ones_like(logits))",
                exempt=TRAINING,
            )
            _modes_record(t, f"{n}/modes", {"discriminator": D, "generator": G}, f"discriminator_step on {case}")
            t.check(
                f"{n}/loss",
                loss,
                what=f"the discriminator's loss returned for {case}",
                test=_named(
                    functools.partial(_d_step_variants, *start) if start is not None else dict,
                    "Expected BCE(D(real), 1) + BCE(D(G(z)), 0), each a mean over its batch, computed "
                    "before the update.",
                ),
            )
            t.check(
                f"{n}/generator grads",
                [p.grad for p in G.parameters()],
                what=f"the generator's gradients after the discriminator step ({case})",
                test=_no_gradient,
            )
            for (name, p), s in zip(D.named_parameters(), stale):
                t.check(
                    f"{n}/D/{name}",
                    p,
                    what=f"the discriminator's parameter {name!r} after the step ({case})",
                    test=_after_step(
                        before[name], s.cpu(), "One optimizer.step() on the gradient of the discriminator's loss."
                    ),
                )


# ----------------------------------------------------------------------------- generator_step


def _g_step_variants(D0: nn.Module, G0: nn.Module, z: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    bce = gan.classification_loss
    with torch.no_grad():
        logits = copy.deepcopy(D0).train()(copy.deepcopy(G0).train()(z))
        zeros = torch.zeros_like(logits)
        return {
            "that is the saturating loss with fake labels: the generator wants its images called REAL, "
            "so use the label 1, BCE(D(G(z)), 1)": [bce(logits, zeros), -bce(logits, zeros)],
            "that is the sum over the batch; average it": [bce(logits, torch.ones_like(logits)) * logits.numel()],
        }


GENERATOR_STEP = {
    "zero-grad": "the generator's old gradients cleared before the backward pass",
    "not-detached": "the fakes not detached: the gradient reaches the generator",
    "non-saturating": "the loss classification_loss(logits, ones): fakes labelled real, a batch mean",
    "generator-only": "one step of the optimizer given (the generator's); the discriminator unchanged",
    "modes": "the networks' modes (train/eval) left as the training loop set them",
    "batch-sizes": "batches of several sizes",
}


@check(gan.generator_step, conditions=GENERATOR_STEP)
def probe_generator_step(t: Trial, generator_step) -> None:
    """zero_grad, the non-saturating BCE(D(G(z)), 1) without detaching, backward, one generator step."""
    t.covers(*GENERATOR_STEP)
    with _true_float32():
        for n in (8, 5):
            G, D = _networks(t, code_size=16)
            stale = [t.randn(*p.shape, scale=0.1) for p in G.parameters()]
            for p, s in zip(G.parameters(), stale):
                p.grad = s.clone()
            optimizer = torch.optim.SGD(G.parameters(), lr=LR)
            z = t.randn(n, 16)
            before = {name: p.detach().cpu().clone() for name, p in G.named_parameters()}
            start = (_cpu(D), _cpu(G), z.cpu()) if t.reference else None
            case = f"a batch of {n} codes"
            loss = t.call(
                generator_step,
                D,
                G,
                z,
                optimizer,
                what=f"generator_step(D, G, z, optimizer) on {case} (create labels on the logits' "
                "device, e.g. torch.ones_like(logits))",
                exempt=TRAINING,
            )
            _modes_record(t, f"{n}/modes", {"discriminator": D, "generator": G}, f"generator_step on {case}")
            t.check(
                f"{n}/loss",
                loss,
                what=f"the generator's loss returned for {case}",
                test=_named(
                    functools.partial(_g_step_variants, *start) if start is not None else dict,
                    "Expected the non-saturating loss BCE(D(G(z)), 1), a mean over the batch, computed "
                    "before the update.",
                ),
            )
            for (name, p), s in zip(G.named_parameters(), stale):
                t.check(
                    f"{n}/G/{name}",
                    p,
                    what=f"the generator's parameter {name!r} after the step ({case})",
                    test=_after_step(
                        before[name],
                        s.cpu(),
                        "The gradient must reach the generator: do not detach G(z) here (and call "
                        "loss.backward() and optimizer.step()).",
                    ),
                )
            for name, p in D.named_parameters():
                t.same(
                    f"{n}/D/{name}",
                    p,
                    what=f"the discriminator's parameter {name!r} after the generator step",
                    hint="The generator step updates the generator only: step the optimizer you are given.",
                )


# ----------------------------------------------------------------------------- reconstruct


STEPS, STEP_LR = 12, 0.05  # a short run: Adam's path is reproducible to ~1e-6 here, not after hundreds of steps
CODE_RTOL, CODE_ATOL = 1e-3, 1e-4


class _Variant(nn.Module):
    """A generator seen through a lens: images scaled by ``scale`` (so that the reference's summed squared
    distance becomes a mean), or BatchNorm kept in training mode whatever ``eval()`` says."""

    def __init__(self, generator: nn.Module, scale: float, keep_training: bool):
        super().__init__()
        self.inner, self.scale, self.keep_training = generator, scale, keep_training
        self.code_size = generator.code_size

    def train(self, mode: bool = True) -> _Variant:
        self.training = mode
        self.inner.train(mode or self.keep_training)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z) * self.scale


def _reconstruct_variant(G0: nn.Module, x: torch.Tensor, *, divide: float, train: bool) -> torch.Tensor:
    """The reference reconstruction of a known variant: the loss divided by ``divide``, or in training mode.

    sum ||s G(z) - s x||^2 = s^2 sum ||G(z) - x||^2, so images scaled by 1/sqrt(divide) give the
    divided loss; it runs the reference (withheld in the kernel), never an implementation of its own.
    """
    scale = 1.0 / math.sqrt(divide)
    lens = cast(Generator, _Variant(copy.deepcopy(G0), scale, train))  # reconstruct needs only a generator's calls
    return gan.reconstruct(lens, x * scale, steps=STEPS, lr=STEP_LR)


def _codes_test(start: tuple[nn.Module, torch.Tensor] | None) -> Test:
    def test(got: Any, want: Any, _records: dict) -> str | None:
        problem = close(got, want, rtol=CODE_RTOL, atol=CODE_ATOL)
        if problem is None or start is None:
            return problem
        G0, x = start

        def matches(divide: float, train: bool = False) -> bool:
            variant = _reconstruct_variant(G0, x, divide=divide, train=train)
            return close(got, variant, rtol=CODE_RTOL, atol=CODE_ATOL) is None

        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            if matches(x.shape[0]):
                return None  # the squared distances averaged over the images: the same codes
            if not got.any():
                return (
                    f"{problem}: the codes are still zero. Optimise the codes (Adam over [z], z created with "
                    "requires_grad=True), not the generator's weights"
                )
            if matches(x[0].numel() * x.shape[0]) or matches(x[0].numel()):
                return (
                    f"{problem}: that is the mean over pixels (F.mse_loss's default). The squared L2 distance sums "
                    "over pixels; dividing it by 3072 shrinks the gradients to where Adam's eps (1e-8) slows its "
                    "steps, so the codes come out different. Use the sum (F.mse_loss(..., reduction='sum'))"
                )
            if matches(1.0, train=True):
                return (
                    f"{problem}: the generator ran in training mode. Call generator.eval() first: its BatchNorm "
                    "layers must use their running statistics, not the statistics of the batch being fitted"
                )
        return (
            f"{problem}. Start from zero codes (torch.zeros(N, generator.code_size, device=x.device, "
            "requires_grad=True)), run `steps` Adam steps at learning rate `lr` with default betas on "
            "sum ||G(z) - x||^2 (summed over pixels: a mean over pixels shrinks the gradients to where Adam's eps "
            "slows the steps), with optimizer.zero_grad() in every step and the generator in evaluation mode"
        )

    return test


RECONSTRUCT = {
    "eval-mode": "the generator switched to evaluation mode and left there",
    "zero-codes": "zero codes (N, generator.code_size) on x's device that require gradients",
    "adam-on-codes": "steps of Adam (lr, default betas) on the codes only: the generator unchanged",
    "squared-distance": "the squared distance summed over pixels and images (or averaged over images)",
    "detached": "the codes returned detached",
    "defaults": "steps=500 and lr=1e-2 by default",
    "batch-sizes": "a batch of 3 to 6 images, its size drawn afresh for every run",
}


def _unchanged(got: Any, _want: Any, _records: dict, *, before: torch.Tensor) -> str | None:
    """The test of a generator's state after reconstruct: as it was before."""
    return close(got, before)


@check(gan.reconstruct, conditions=RECONSTRUCT)
def probe_reconstruct(t: Trial, reconstruct) -> None:
    """Codes from zero by Adam on the squared L2 distance, generator in eval mode and unchanged."""
    t.covers(*RECONSTRUCT)
    with _true_float32():
        for n in (t.integer(3, 7),):  # one batch, of another size for every seed
            G, _ = _networks(t, code_size=8)
            with torch.no_grad():  # running statistics that differ from any batch's
                for _ in range(3):
                    G(t.randn(32, 8, scale=1.5))
                G.eval()
                x = (0.7 * G(t.randn(n, 8)) + 0.3 * t.rand(n, 3, 32, 32)).clamp(0, 1)
            G.train()
            state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
            start = (_cpu(G).eval(), x.cpu()) if t.reference else None
            case = f"{n} images, steps={STEPS}, lr={STEP_LR}"
            codes = t.call(
                reconstruct,
                G,
                x.clone(),
                steps=STEPS,
                lr=STEP_LR,
                what=f"reconstruct(generator, x, steps={STEPS}, lr={STEP_LR}) on {n} images (create the "
                "codes on x's device: torch.zeros(..., device=x.device))",
                exempt={
                    "repeat": "each call optimises fresh zero codes with a fresh Adam: a second call repeats the "
                    "probe's costliest part and nothing in the text keeps state between calls",
                },
            )
            t.check(f"{n}/codes", codes, what=f"the codes returned by reconstruct ({case})", test=_codes_test(start))
            t.same(
                f"{n}/training",
                G.training,
                what=f"the generator's mode after reconstruct ({case})",
                hint="Switch the generator to evaluation mode with generator.eval() and leave it there.",
            )
            for name, value in G.state_dict().items():
                hint = (
                    "Do not change the generator: the optimizer gets the codes only ([z]), not generator.parameters()."
                    if name in dict(G.named_parameters())
                    else "The BatchNorm running statistics changed: the generator must run in evaluation mode "
                    "(generator.eval()) while the codes are fitted."
                )
                t.check(
                    f"{n}/G/{name}",
                    value,
                    what=f"the generator's {name!r} after reconstruct ({case})",
                    test=functools.partial(_unchanged, before=state[name]),
                    hint=hint,
                )
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(reconstruct).parameters
    except (TypeError, ValueError):
        params = {}
    defaults = {k: params[k].default if k in params else None for k in ("steps", "lr")}
    t.same(
        "defaults",
        defaults,
        what="the default arguments of reconstruct",
        hint="Keep the signature reconstruct(generator, x, steps=500, lr=1e-2).",
    )
