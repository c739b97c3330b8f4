"""Hidden tests of the chapter "VAE theory" (``vae_theory``).

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel it
records what the student's function returns on inputs drawn from the run's seed; in the grader
the reference from ``genlab.theory`` (``genlab.losses.bits_per_dim``) meets the same inputs and
every record is compared. Where a wrong value matches a known wrong variant (a mean of logs,
weights q/p, KL with its arguments swapped, ...), the message names it. The exercises may not use
``torch.distributions``: every call runs with it switched off (``Trial.without_distributions``).
Every call is also held to the course's contract (autograder/probing.py: arguments left as they
were, results of the reference's dtype on the inputs' device, the same result when called again);
each check's ``conditions`` list what its exercise's text states, and the probe draws them all.

Hidden-test cells call them as ``probe_<exercise>(<the student's function>)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from autograder.probing import Test, Trial, check, describe, naming
from genlab import exact_models, losses, theory

DTYPES = (torch.float32, torch.float64)
NO_DISTRIBUTIONS = (
    "torch.distributions is switched off in this exercise: write the densities and the "
    "sampling with plain tensor operations."
)
# Statistical tests fail a correct answer with probability below this (seeds are fresh every run).
FALSE_ALARM = 1e-9


# ----------------------------------------------------------------------------- shared helpers


def _nan_where_finite(got: Any, want: Any) -> str | None:
    if isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor) and got.shape == want.shape:
        if bool((torch.isnan(got) & ~torch.isnan(want)).any()):
            return (
                "NaN where the answer is a number. Where p(x) = 0 the term p(x) log(...) is 0 (0 log 0 = 0): "
                "use torch.special.xlogy(p, ...) or torch.where, since 0 * log(0) is NaN in floating point"
            )
    return None


def _underflow(got: Any, want: Any) -> str | None:
    if isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor) and got.shape == want.shape:
        if bool((torch.isinf(got) & torch.isfinite(want)).any()) or bool((torch.isnan(got) & ~torch.isnan(want)).any()):
            return (
                "an infinity or NaN where the answer is finite: exp() of log-likelihoods in the hundreds "
                "underflows to 0 (or overflows). Stay in log space: torch.logsumexp(values, dim=0) - log(L)"
            )
    return None


def _outcome(t: Trial, fn: Callable, *args: Any, what: str) -> str:
    """Call the student's function where raising may be the right answer: what it raised, or what it returned."""
    t.doing = what
    try:
        result = fn(*args)
    except Exception as exc:  # an exception is the answer here
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return f"returned {describe(result)}"


def _raises_value_error(argument: str) -> Test:
    def test(got: Any, _want: Any, _records: dict[str, Any]) -> str | None:
        if isinstance(got, str) and got.startswith("ValueError") and argument in got:
            return None
        happened = got if isinstance(got, str) and got.startswith("returned") else f"raised {got}"
        return f"expected a ValueError whose message names {argument!r}; the call {happened}"

    return test


def _log_lik(
    t: Trial, d: int, dtype: torch.dtype, *, offset: float | torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Gaussian-shaped log p(x | z) for one x: z (L, ..., d) -> (L, ...), peaked away from the origin.

    ``offset`` is a number, or one number per batch entry (...): entries whose log-likelihoods lie
    thousands of nats apart must each be estimated stably, not shifted by one global maximum.
    """
    m = d + 2
    a = t.randn(d, m, dtype=dtype)
    target = t.randn(m, dtype=dtype, scale=1.5)
    sharpness = 0.5 + t.integer(0, 4)

    def log_px_given_z(z: torch.Tensor) -> torch.Tensor:
        return offset - 0.5 * sharpness * ((z @ a - target) ** 2).sum(-1)

    return log_px_given_z


# Log-likelihoods near these values: e^-900 underflows to 0 and e^400 overflows even in float64;
# "apart" gives every batch entry its own offset, from about -3 down to about -3000.
OFFSETS: tuple[float | str, ...] = (-3.0, -900.0, 400.0, "apart")


def _offset(t: Trial, kind: float | str, batch: tuple[int, ...], dtype: torch.dtype) -> float | torch.Tensor:
    if kind != "apart":
        return float(kind)
    n = math.prod(batch)
    spread = torch.linspace(-3.0, -3000.0, max(n, 2), dtype=torch.float64)[:n]
    order = torch.argsort(t.rand(n, dtype=torch.float64).cpu())
    return spread[order].reshape(batch).to(t.device, dtype)


def _offset_words(kind: float | str) -> str:
    return (
        "log-likelihoods thousands of nats apart between batch entries"
        if kind == "apart"
        else (f"log-likelihoods near {kind:g}")
    )


def _cpu(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Detached copies on the CPU (wrong variants are computed in the grader, from the reference side's inputs)."""
    return tuple(x.detach().cpu() for x in tensors)


def _record_gradients(t: Trial, key: str, value: Any, leaves: dict[str, torch.Tensor], *, what: str, hint: str) -> None:
    """The gradients of value.sum() with respect to each leaf (None where none flows)."""
    grads: dict[str, Any] = {name: None for name in leaves}
    if isinstance(value, torch.Tensor) and value.requires_grad:
        t.doing = f"back-propagating through {what}"
        try:
            found = torch.autograd.grad(value.sum(), list(leaves.values()), allow_unused=True)
            grads = dict(zip(leaves, found, strict=True))
        except RuntimeError:
            pass
    for name, grad in grads.items():
        t.same(f"{key}/d{name}", grad, what=f"the gradient of {what} with respect to {name}", hint=hint)


# ----------------------------------------------------------------------------- 1 sampling images


def _frequency_test(probs: torch.Tensor, n: int, pair: tuple[int, int] | None) -> Test:
    """Draws (n, *probs.shape[:-1]) against probs (..., k): range, zero-probability categories, a
    chi-square goodness-of-fit test per pixel and, for ``pair`` (two pixels with the same probs), a
    chi-square test of the joint frequencies against independence."""
    from scipy import stats

    p = probs.detach().cpu().double()
    k = p.shape[-1]
    shape = (n, *p.shape[:-1])
    p = p.reshape(-1, k)

    def test(got: Any, _want: Any, _records: dict[str, Any]) -> str | None:
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor of category indices, got {describe(got)}"
        if tuple(got.shape) != shape:
            return (
                f"expected shape {shape} (one draw per row of probs: the last dimension, the k = {k} categories, "
                f"goes away), got {tuple(got.shape)}"
            )
        if got.dtype != torch.int64:
            return f"expected integer category indices of dtype torch.long (int64), got {got.dtype}"
        draws = got.reshape(n, -1)
        if int(draws.min()) < 0 or int(draws.max()) >= k:
            return f"category indices must lie in [0, {k}), found values from {int(draws.min())} to {int(draws.max())}"
        counts = torch.nn.functional.one_hot(draws, k).sum(0).double()  # (pixels, k)
        expected = n * p
        impossible = int(counts[expected == 0].sum())
        if impossible > 1e-3 * draws.numel():
            return (
                f"{impossible} draws fell in categories of probability 0: category i must come up with "
                "probability probs[..., i] (check the comparison with the cumulative sums)"
            )
        positive = expected > 0
        chi2 = float((((counts - expected) ** 2) / expected.clamp_min(1e-300))[positive].sum())
        dof = int(positive.sum()) - p.shape[0]
        p_value = float(stats.chi2.sf(chi2, dof))
        if p_value < FALSE_ALARM:
            return (
                f"the frequencies of {n} draws do not follow probs (chi-square {chi2:.1f} on {dof} degrees of "
                f"freedom, p = {p_value:.1e}): every row needs its own fresh random draw, and category i must "
                "come up with probability probs[..., i]"
            )
        if pair is not None:
            i, j = pair
            joint = torch.zeros(k, k, dtype=torch.float64)
            joint.index_put_((draws[:, i], draws[:, j]), torch.ones(n, dtype=torch.float64), accumulate=True)
            exp_joint = n * torch.outer(p[i], p[j])
            pos = exp_joint > 0
            chi2 = float((((joint - exp_joint) ** 2) / exp_joint.clamp_min(1e-300))[pos].sum())
            dof = int(pos.sum()) - 1
            p_value = float(stats.chi2.sf(chi2, dof))
            if p_value < FALSE_ALARM:
                return (
                    f"two pixels with the same probabilities are not drawn independently (chi-square {chi2:.1f} "
                    f"on {dof} degrees of freedom, p = {p_value:.1e}): draw a separate random number for every "
                    "pixel, not one shared by the whole image"
                )
        return None

    return test


def _differs_from(key: str) -> Test:
    def test(got: Any, _want: Any, records: dict[str, Any]) -> str | None:
        first = records.get(key)
        if (
            isinstance(got, torch.Tensor)
            and isinstance(first, torch.Tensor)
            and got.shape == first.shape
            and torch.equal(got, first)
        ):
            return "two calls returned the same draws: draw new random numbers on every call (do not re-seed)"
        return None

    return test


SAMPLE_CATEGORICAL = {
    "leading-dimensions": "probs has shape (..., k): one distribution per row along the last dimension",
    "independent-rows": "one draw per row, independently for every row",
    "exact-probabilities": "category i comes up with probability exactly p_i (probability 0: never)",
    "long-indices": "integer category indices of dtype torch.long and shape probs.shape[:-1]",
    "probs-device": "random numbers created on probs.device",
    "fresh-draws": "a random draw: new numbers on every call",
    "rounding-allowed": "rows within 1e-3 of one are valid (rounding)",
    "bad-row-raises": "a row further than 1e-3 from one raises a ValueError whose message names probs",
    "float32-and-float64": "probabilities in float32 and float64",
}


@check(theory.sample_categorical, conditions=SAMPLE_CATEGORICAL)
def probe_sample_categorical(t: Trial, sample_categorical) -> None:
    """Independent categorical draws, one per row of probs; a ValueError names probs when a row is off by > 1e-3."""
    hint = (
        "Draw one category per row of probs (..., k), independently, with a random number created on probs' "
        f"device; return integer indices of dtype torch.long and shape probs.shape[:-1]. {NO_DISTRIBUTIONS}"
    )
    random = {"repeat": "a random draw: two calls must differ (tested on its own below)"}
    # Six pixels over five grey levels, some impossible; pixels 0 and 1 share their probabilities.
    base = t.rand(6, 5, dtype=torch.float64, low=0.2, high=1.0)
    base[1] = base[0]
    for pixel, level in ((2, 0), (3, 4), (3, 1), (5, 2)):
        base[pixel, level] = 0.0
    probs = base / base.sum(-1, keepdim=True)
    other = t.rand(2, 3, 4, dtype=torch.float64, low=0.05, high=1.0)
    other = other / other.sum(-1, keepdim=True)
    t.covers(
        "leading-dimensions",
        "independent-rows",
        "exact-probabilities",
        "long-indices",
        "probs-device",
        "float32-and-float64",
    )
    cases = [
        ("(3000, 6, 5), float32", probs.to(torch.float32).expand(3000, 6, 5).contiguous(), 3000, probs, (0, 1)),
        ("(1500, 2, 3, 4), float64", other.expand(1500, 2, 3, 4).contiguous(), 1500, other, None),
        ("(1500, 5), float64", probs[4].expand(1500, 5).contiguous(), 1500, probs[4], None),
    ]
    for label, big, n, p, pair in cases:
        with t.without_distributions():
            draws = t.call(
                sample_categorical,
                big,
                what=f"sample_categorical(probs) on probs of shape {label} (random numbers must be created on "
                "probs.device)",
                exempt=random,
            )
        t.check(
            f"draws{label}",
            draws,
            what=f"sample_categorical(probs), probs of shape {label}",
            test=_frequency_test(p, n, pair),
            hint=hint,
        )
    t.covers("fresh-draws")
    uniform = torch.full((64, 10), 0.1, device=t.device)
    with t.without_distributions():
        first = t.call(sample_categorical, uniform, what="sample_categorical(probs), a first call", exempt=random)
        second = t.call(sample_categorical, uniform, what="sample_categorical(probs), a second call", exempt=random)
    t.note("fresh/first", first)
    t.check(
        "fresh/second",
        second,
        what="a second call of sample_categorical on the same probs",
        test=_differs_from("fresh/first"),
    )
    # Rows off by 5e-4 (as float32 rounding of a softmax leaves them) are valid; 0.02 is not.
    t.covers("rounding-allowed")
    rounded = probs.clone()
    rounded[torch.arange(6), probs.argmax(-1)] += torch.tensor([5e-4, -5e-4] * 3, dtype=torch.float64, device=t.device)
    with t.without_distributions():
        outcome = _outcome(
            t,
            sample_categorical,
            rounded.to(torch.float32).repeat(50, 1),
            what="sample_categorical(probs) with rows that sum to 1 +- 5e-4",
        )
    t.check(
        "rounded_rows",
        outcome,
        what="sample_categorical(probs) with rows that sum to 1 +- 5e-4 (rounding)",
        test=_returns_draws(k=5),
        hint="Rows within 1e-3 of one are valid: compare |row sum - 1| with 1e-3, not with exact equality.",
    )
    t.covers("bad-row-raises")
    for label, bad in _bad_batches(t, probs):
        with t.without_distributions():
            outcome = _outcome(t, sample_categorical, bad, what=f"sample_categorical(probs) with {label}")
        t.check(
            f"bad/{label}",
            outcome,
            what=f"sample_categorical(probs) with {label}",
            test=_raises_value_error("probs"),
            hint="Check that every row of probs sums to one within 1e-3 (all rows, not their mean or the first) "
            "and raise ValueError('probs must sum to one ...') otherwise.",
        )


def _bad_batches(t: Trial, probs: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Batches with rows further than 1e-3 from one: all rows at 0.8, one row among good ones at 0.98 or 1.02."""
    good = probs.to(torch.float32).repeat(20, 1)  # (120, 5)
    low, high = good.clone(), good.clone()
    row = t.integer(1, len(good))
    low[row] *= 0.98
    high[row] *= 1.02
    return [
        ("rows that sum to 0.8", probs[:3].to(torch.float32) * 0.8),
        ("one row among 120 that sums to 0.98", low),
        ("one row among 120 that sums to 1.02", high),
    ]


def _returns_draws(k: int) -> Test:
    def test(got: Any, _want: Any, _records: dict[str, Any]) -> str | None:
        if isinstance(got, str) and got.startswith("returned"):
            return None
        return f"expected draws, since every row sums to one within 1e-3; the call raised {got}"

    return test


# ----------------------------------------------------------------------------- 2 Monte-Carlo likelihood


MC_LOG_LIKELIHOOD = {
    "samples-first": "z holds L samples along its first dimension, shape (L, ..., D), L = 1 included",
    "batch-entries": "the ... are independent estimates side by side; the result has shape (...)",
    "log-space": "log-likelihoods far below -745 and above 710, where exp under- or overflows",
    "entries-apart": "batch entries whose log-likelihoods lie thousands of nats apart",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(theory.mc_log_likelihood, conditions=MC_LOG_LIKELIHOOD)
def probe_mc_log_likelihood(t: Trial, mc_log_likelihood) -> None:
    """log (1/L) sum_l p(x | z_l), in log space, over the samples along dimension 0."""
    hint = (
        "The estimate is log((1/L) sum_l p(x | z_l)) = torch.logsumexp(values, dim=0) - log(L), with "
        "values = log_px_given_z(z) of shape (L, ...): each batch entry is shifted by its own maximum."
    )
    t.covers("float32-and-float64", "samples-first", "batch-entries", "log-space", "entries-apart")
    cases: list[tuple[tuple[int, ...], float | str, torch.dtype]] = [  # (z's shape, log-likelihoods, dtype)
        ((50, 3), -3.0, torch.float32),
        ((40, 4, 2), -900.0, torch.float64),
        ((1, 2), 400.0, torch.float32),
        ((7, 5, 1), -3.0, torch.float64),
        ((30, 2, 3, 4), "apart", torch.float32),
        ((40, 6, 2), "apart", torch.float64),
        ((25, 3), 400.0, torch.float64),
        ((9, 5, 3), -900.0, torch.float32),
    ]
    for shape, kind, dtype in cases:
        d = shape[-1]
        log_lik = _log_lik(t, d, dtype, offset=_offset(t, kind, shape[1:-1], dtype))
        z = t.randn(*shape, dtype=dtype)
        case = f"z of shape {shape}, {_offset_words(kind)}, {dtype}"
        with t.without_distributions():
            got = t.call(mc_log_likelihood, log_lik, z, what=f"mc_log_likelihood(log_px_given_z, z), {case}")
        variants = [
            (
                lambda f=log_lik, z=z: f(z).mean(0),
                "that is the mean of the log-likelihoods, a lower bound "
                "(Jensen); the estimator takes the log of the mean likelihood",
            ),
            (
                lambda f=log_lik, z=z: torch.logsumexp(f(z), 0),
                "that is log of the SUM of the likelihoods: subtract log L",
            ),
        ]
        t.check(
            f"{case}",
            got,
            what=f"mc_log_likelihood, {case}",
            hint=hint,
            test=naming(variants, extra=_underflow),
        )


# ----------------------------------------------------------------------------- 3 importance sampling


def _gaussian_inputs(t: Trial, shape: tuple[int, ...], L: int, dtype: torch.dtype):
    mu = t.randn(*shape, dtype=dtype, scale=1.2)
    logstd = t.rand(*shape, dtype=dtype, low=-1.5, high=0.5)
    eps = t.randn(L, *shape, dtype=dtype)
    return mu, logstd, eps


def _log_weight_parts(log_lik, mu, logstd, eps):
    """(log p(x|z), log p(z), log q(z|x)) on the CPU, for the wrong variants."""
    # BEGIN REFERENCE
    mu, logstd, eps = _cpu(mu, logstd, eps)
    z = mu + torch.exp(logstd) * eps
    log_q = (-0.5 * eps**2 - logstd - 0.5 * theory.LOG_2PI).sum(-1)
    log_p = (-0.5 * z**2 - 0.5 * theory.LOG_2PI).sum(-1)
    return log_lik(z), log_p, log_q
    # END REFERENCE


def _lme(x: torch.Tensor) -> torch.Tensor:
    # BEGIN REFERENCE
    return torch.logsumexp(x, 0) - math.log(x.shape[0])
    # END REFERENCE


def _exact_model(t: Trial, d: int, dtype: torch.dtype, batch: int):
    """A linear-Gaussian model, data from it, and its exact posterior (mu, logstd) on the trial's device."""
    gen = torch.Generator().manual_seed(t.integer(0, 2**31))
    model = exact_models.LinearGaussian.random(d, d + 3, column_norm=1.5, generator=gen)
    x, _ = model.sample(batch, gen)
    mu, logstd = model.posterior(x)
    x = x.to(t.device, dtype)
    log_lik = model.log_likelihood(x)
    return log_lik, mu.to(t.device, dtype), logstd.to(t.device, dtype)


def _weights_variants(log_lik, mu, logstd, eps, kind: str) -> list[tuple[Callable[[], Any], str]]:
    """Known wrong answers for the log-weights (``kind`` "weights"), the importance-sampled
    log-likelihood ("is") and the ELBO ("elbo"), computed from the reference side's inputs."""

    def parts():
        return _log_weight_parts(log_lik, mu, logstd, eps)

    c = 0.5 * theory.LOG_2PI * mu.shape[-1]
    reduce = {"weights": lambda w: w, "is": _lme, "elbo": lambda w: w.mean(0)}[kind]
    variants = [
        (
            lambda: reduce(parts()[0] - parts()[1] + parts()[2]),
            "the weights are upside down: w = p(z) / q(z | x), i.e. log w = log p(x | z) + log p(z) - log q(z | x)",
        ),
        (lambda: reduce(parts()[0] - parts()[2]), "the prior log p(z) is missing from the log-weight"),
        (lambda: reduce(parts()[0] + parts()[1]), "log q(z | x) is missing: subtract it"),
        (
            lambda: reduce(parts()[0] + parts()[1] - parts()[2] + c),
            "one density lacks its -(D/2) log(2 pi) constant (log p(z) has it too)",
        ),
        (
            lambda: reduce(parts()[0] + parts()[1] - parts()[2] - c),
            "one density lacks its -(D/2) log(2 pi) constant (log q(z | x) has it too)",
        ),
    ]
    if kind == "elbo":
        variants.append(
            (
                lambda: _lme(sum(parts()[:2]) - parts()[2]),
                "that is the importance-sampled log-likelihood "
                "(log of the mean weight); the ELBO is the MEAN of the log-weights",
            )
        )
    elif kind == "is":
        variants += [
            (
                lambda: (parts()[0] + parts()[1] - parts()[2]).mean(0),
                "that is the mean of the log-weights (the "
                "ELBO); the estimate is the log of the mean weight: logsumexp over the samples - log L",
            ),
            (
                lambda: torch.logsumexp(parts()[0] + parts()[1] - parts()[2], 0),
                "that is the log of the SUM of the weights: subtract log L",
            ),
        ]
    return variants


WEIGHTS_HINT = (
    "With z = mu + exp(logstd) * eps: log w = log p(x | z) + log N(z; 0, I) - log N(z; mu, exp(logstd)^2), "
    "each Gaussian log-density summed over the last dimension. "
)


WEIGHTS = {
    "shapes": "mu, logstd (..., D) and eps (L, ..., D), L = 1 included, give (L, ...) or (...)",
    "log-space": "log-likelihoods far below -745, and entries thousands of nats apart",
    "exact-posterior": "with the exact posterior as q every weight equals p(x)",
    "float32-and-float64": "inputs in float32 and float64",
}
DIFFERENTIABLE = {"differentiable": "the result stays differentiable in mu and logstd"}


def _probe_weights(t: Trial, impl, name: str, kind: str, hint: str, grad_hint: str | None = None) -> None:
    """Shared probe of the three functions of (log_px_given_z, mu, logstd, eps)."""
    t.covers("shapes", "log-space", "float32-and-float64")
    if grad_hint:
        t.covers("differentiable")
    cases: list[tuple[tuple[int, ...], int, float | str, torch.dtype]] = [  # (mu's shape, L, log-likelihoods, dtype)
        ((3,), 30, -2.0, torch.float32),
        ((4, 2), 25, -600.0, torch.float64),
        ((5, 1), 1, 0.0, torch.float32),
        ((2, 3, 4), 12, -50.0, torch.float64),
        ((6, 3), 20, "apart", torch.float32),
        ((5, 2), 16, "apart", torch.float64),
    ]
    for k, (shape, L, offset, dtype) in enumerate(cases):
        log_lik = _log_lik(t, shape[-1], dtype, offset=_offset(t, offset, shape[:-1], dtype))
        mu, logstd, eps = _gaussian_inputs(t, shape, L, dtype)
        differentiated = bool(grad_hint) and k in (0, 1, 4)  # float32 and float64 among them
        if differentiated:
            mu, logstd = mu.requires_grad_(), logstd.requires_grad_()
        case = f"mu of shape {shape}, L = {L}, {_offset_words(offset)}, {dtype}"
        with t.without_distributions():
            got = t.call(
                impl, log_lik, mu, logstd, eps, what=f"{name}(log_px_given_z, mu, logstd, eps), {case}", draws=False
            )
        t.check(
            case,
            got,
            what=f"{name}, {case}",
            hint=hint,
            test=naming(_weights_variants(log_lik, mu, logstd, eps, kind), extra=_underflow),
        )
        if differentiated:
            _record_gradients(t, case, got, {"mu": mu, "logstd": logstd}, what=f"{name} ({case})", hint=grad_hint or "")
    t.covers("exact-posterior")
    for dtype in DTYPES:
        log_lik, mu, logstd = _exact_model(t, 3, dtype, batch=4)
        eps = t.randn(20, 4, 3, dtype=dtype)
        case = f"the exact posterior as q (then every weight equals p(x)), {dtype}"
        with t.without_distributions():
            got = t.call(impl, log_lik, mu, logstd, eps, what=f"{name} with {case}", draws=False)
        t.check(
            f"exact/{dtype}",
            got,
            what=f"{name} with {case}",
            hint=hint,
            test=naming(_weights_variants(log_lik, mu, logstd, eps, kind)),
        )


GRADIENT_HINT = (
    "The result must stay differentiable in mu and logstd: build z = mu + exp(logstd) * eps with torch "
    "operations (no .detach(), .item(), numpy or torch.normal) and use it everywhere."
)


@check(theory.log_importance_weights, conditions=WEIGHTS | DIFFERENTIABLE)
def probe_log_importance_weights(t: Trial, log_importance_weights) -> None:
    """log w_l = log p(x | z_l) + log p(z_l) - log q(z_l | x) with z_l = mu + exp(logstd) eps_l, shape (L, ...)."""
    _probe_weights(
        t,
        log_importance_weights,
        "log_importance_weights",
        "weights",
        WEIGHTS_HINT + "Return one log-weight per sample, shape (L, ...). " + NO_DISTRIBUTIONS,
        grad_hint=GRADIENT_HINT,
    )


@check(theory.importance_log_likelihood, conditions=WEIGHTS)
def probe_importance_log_likelihood(t: Trial, importance_log_likelihood) -> None:
    """log (1/L) sum_l w_l: the log of the mean importance weight, over the samples."""
    _probe_weights(
        t,
        importance_log_likelihood,
        "importance_log_likelihood",
        "is",
        WEIGHTS_HINT + "The estimate is logsumexp(log w, dim=0) - log L. " + NO_DISTRIBUTIONS,
    )


# ----------------------------------------------------------------------------- 4 information


def _distributions(t: Trial, *shape: int, dtype: torch.dtype, zeros: float = 0.0) -> torch.Tensor:
    """Random distributions over the last dimension, a fraction ``zeros`` of entries exactly 0 (never a whole row)."""
    logits = t.randn(*shape, dtype=torch.float64, scale=1.5)
    keep = t.rand(*shape, dtype=torch.float64) >= zeros
    keep |= logits == logits.max(-1, keepdim=True).values
    p = torch.softmax(logits, -1) * keep
    return (p / p.sum(-1, keepdim=True)).to(dtype)


NATS = "Work in nats: the natural logarithm torch.log, not log2 (bits) or log10."


def _cross_entropy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """-sum p log q over the last dimension (the grader's, for naming wrong variants)."""
    # BEGIN REFERENCE
    return -torch.special.xlogy(p, q).sum(-1)
    # END REFERENCE


def _kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) over the last dimension (the grader's, for naming wrong variants)."""
    # BEGIN REFERENCE
    return (torch.special.xlogy(a, a) - torch.special.xlogy(a, b)).sum(-1)
    # END REFERENCE


ENTROPY = {
    "nats": "in nats (the natural logarithm)",
    "last-dimension": "over the last dimension of p (..., k), returning (...), for 1-D and batched p",
    "zeros": "a term with p(x) = 0 contributes 0 (0 log 0 = 0), a one-hot p included",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(theory.entropy, conditions=ENTROPY)
def probe_entropy(t: Trial, entropy) -> None:
    """H(p) = -sum p log p in nats over the last dimension, 0 log 0 = 0."""
    hint = f"H(p) = -sum_x p(x) log p(x) over the last dimension, where a term with p(x) = 0 counts 0. {NATS}"
    t.covers("nats", "last-dimension", "zeros", "float32-and-float64")
    for k, (shape, zeros) in enumerate([((7,), 0.0), ((4, 6), 0.3), ((2, 3, 5), 0.4), ((3, 1), 0.0), ((2, 256), 0.5)]):
        dtype = DTYPES[k % 2]
        p = _distributions(t, *shape, dtype=dtype, zeros=zeros)
        case = f"p of shape {shape}{' with zeros' if zeros else ''}, {dtype}"
        with t.without_distributions():
            got = t.call(entropy, p, what=f"entropy(p), {case}")
        (pc,) = _cpu(p)
        h = partial(_cross_entropy, pc, pc)
        variants = [
            (lambda h=h: h() / math.log(2), "that is in bits; the entropy is asked in nats (torch.log)"),
            (lambda h=h: -h(), "the sign is wrong: H(p) = -sum p log p is never negative"),
            (lambda h=h: h() / math.log(10), "that uses log10; use the natural logarithm"),
        ]
        t.check(case, got, what=f"entropy(p), {case}", hint=hint, test=naming(variants, extra=_nan_where_finite))
    one_hot = torch.eye(4, device=t.device)
    with t.without_distributions():
        got = t.call(entropy, one_hot, what="entropy of one-hot distributions")
    t.same(
        "one-hot",
        got,
        what="entropy of one-hot distributions (a certain outcome carries no information)",
        hint="0 log 0 = 0, so a one-hot distribution has entropy 0, not NaN.",
    )


def _pairs(t: Trial):
    """(label, p, q, conditions) cases: zeros in p, zeros in q where p is 0 too, q = 0 < p (inf), broadcasting;
    float32 and float64 by turns."""
    cases = [  # (label, p's shape, its zeros, q's shape, its zeros, conditions)
        ("p, q of shape (4, 6)", (4, 6), 0.0, (4, 6), 0.0, ("last-dimension",)),
        ("p with zeros, (3, 5)", (3, 5), 0.4, (3, 5), 0.0, ("zero-p",)),
        ("p and q with zeros in the same places, (2, 2, 7)", (2, 2, 7), 0.4, (2, 2, 7), 0.0, ("zero-p",)),
        ("q = 0 where p > 0 in some rows, (3, 4)", (3, 4), 0.0, (3, 4), 0.5, ("zero-q",)),
        ("one p (6,) against a batch of q (5, 6)", (6,), 0.3, (5, 6), 0.0, ("broadcast-q-batch",)),
        ("a batch of p (5, 6) against one q (6,)", (5, 6), 0.3, (6,), 0.0, ("broadcast-p-batch",)),
        ("p (3, 1, 4) against q (2, 4), broadcasting to (3, 2)", (3, 1, 4), 0.3, (2, 4), 0.0, ("broadcast-both",)),
    ]
    pairs = []
    for k, (label, p_shape, p_zeros, q_shape, q_zeros, conditions) in enumerate(cases):
        dtype = DTYPES[k % 2]
        p = _distributions(t, *p_shape, dtype=dtype, zeros=p_zeros)
        q = _distributions(t, *q_shape, dtype=dtype, zeros=q_zeros)
        if "same places" in label:  # q is 0 only where p is 0 too
            q = torch.where(p == 0, torch.zeros_like(q), q)
            q = q / q.sum(-1, keepdim=True)
        pairs.append((label, p, q, conditions))
    return pairs


PAIRS = {
    "nats": "in nats (the natural logarithm)",
    "last-dimension": "over the last dimension, returning (...)",
    "zero-p": "a term with p(x) = 0 counts 0, even where q(x) = 0 too",
    "zero-q": "a term with q(x) = 0 < p(x) makes the result inf",
    "broadcast-q-batch": "one p (k,) against a batch of q (n, k)",
    "broadcast-p-batch": "a batch of p (n, k) against one q (k,)",
    "broadcast-both": "p and q that broadcast against each other in other dimensions",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(theory.cross_entropy, conditions=PAIRS)
def probe_cross_entropy(t: Trial, cross_entropy) -> None:
    """H(p, q) = -sum p log q in nats over the last dimension; 0 where p = 0, inf where q = 0 < p."""
    hint = (
        "H(p, q) = -sum_x p(x) log q(x) over the last dimension: a term with p(x) = 0 counts 0 (even if q(x) = 0), "
        f"a term with q(x) = 0 < p(x) makes it inf. p and q broadcast against each other. {NATS}"
    )
    t.covers("nats", "float32-and-float64")
    for label, p, q, conditions in _pairs(t):
        t.covers(*conditions)
        case = f"{label}, {p.dtype}"
        with t.without_distributions():
            got = t.call(cross_entropy, p, q, what=f"cross_entropy(p, q), {case}")
        pc, qc = _cpu(p, q)
        variants = [
            (
                lambda pc=pc, qc=qc: _cross_entropy(qc, pc),
                "that is H(q, p): the arguments are swapped; H(p, q) averages -log q under p",
            ),
            (lambda pc=pc, qc=qc: _cross_entropy(pc, qc) / math.log(2), "that is in bits; use nats (torch.log)"),
            (lambda pc=pc, qc=qc: -_cross_entropy(pc, qc), "the sign is wrong: -sum p log q"),
        ]
        t.check(
            case,
            got,
            what=f"cross_entropy(p, q), {case}",
            hint=hint,
            test=naming(variants, extra=_nan_where_finite),
        )


@check(theory.categorical_kl, conditions=PAIRS | {"order": "KL(p || q): the expectation under the first argument"})
def probe_categorical_kl(t: Trial, categorical_kl) -> None:
    """KL(p || q) = sum p log(p / q) in nats over the last dimension; 0 log 0 = 0, inf where q = 0 < p."""
    hint = (
        "KL(p || q) = sum_x p(x) log(p(x) / q(x)) over the last dimension, p first: a term with p(x) = 0 counts 0, "
        f"one with q(x) = 0 < p(x) makes it inf. p and q broadcast against each other. {NATS}"
    )
    t.covers("nats", "float32-and-float64", "order")
    for label, p, q, conditions in _pairs(t):
        t.covers(*conditions)
        case = f"{label}, {p.dtype}"
        with t.without_distributions():
            got = t.call(categorical_kl, p, q, what=f"categorical_kl(p, q), {case}")
        pc, qc = _cpu(p, q)
        variants = [
            (
                lambda pc=pc, qc=qc: _kl(qc, pc),
                "that is KL(q || p): the arguments are swapped (KL is not "
                "symmetric; the first argument is the distribution the expectation is taken under)",
            ),
            (lambda pc=pc, qc=qc: _kl(pc, qc) / math.log(2), "that is in bits; use nats (torch.log)"),
            (
                lambda pc=pc, qc=qc: _cross_entropy(pc, qc),
                "that is the cross-entropy H(p, q); KL(p || q) = H(p, q) - H(p)",
            ),
            (lambda pc=pc, qc=qc: -_kl(pc, qc), "the sign is wrong: KL is never negative"),
        ]
        t.check(
            case,
            got,
            what=f"categorical_kl(p, q), {case}",
            hint=hint,
            test=naming(variants, extra=_nan_where_finite),
        )


# ----------------------------------------------------------------------------- 5 the ELBO


@check(theory.mc_elbo, conditions=WEIGHTS | DIFFERENTIABLE)
def probe_mc_elbo(t: Trial, mc_elbo) -> None:
    """(1/L) sum_l log w_l, the mean log-weight with reparameterised samples; and its gradients."""
    _probe_weights(
        t,
        mc_elbo,
        "mc_elbo",
        "elbo",
        WEIGHTS_HINT + "The ELBO is the mean of log w over the samples (dim 0). " + NO_DISTRIBUTIONS,
        grad_hint=GRADIENT_HINT,
    )


# ----------------------------------------------------------------------------- 6 the KL term by Monte Carlo


def _log_ratio(z: torch.Tensor, *, mq, lq, mp, lp) -> torch.Tensor:
    """log q(z) - log p(z) of two diagonal Gaussians (the grader's, for naming wrong variants)."""
    # BEGIN REFERENCE
    log_q = (-0.5 * ((z - mq) / lq.exp()) ** 2 - lq).sum(-1)
    log_p = (-0.5 * ((z - mp) / lp.exp()) ** 2 - lp).sum(-1)
    return log_q - log_p
    # END REFERENCE


MC_GAUSSIAN_KL = {
    "samples-from-q": "z_l = mu_q + exp(logstd_q) * eps_l, samples from q",
    "shapes": "mu_q, logstd_q (..., D), eps (L, ..., D), L = 1 included, result (...)",
    "prior-default": "mu_p and logstd_p default to 0: the standard normal",
    "prior-numbers": "mu_p and logstd_p given as numbers",
    "prior-tensors": "mu_p and logstd_p given as tensors of mu_q's shape",
    "prior-broadcast": "mu_p and logstd_p given as tensors that broadcast, of shape (D,)",
    "float32-and-float64": "inputs in float32 and float64",
}


def _priors(t: Trial, shape: tuple[int, ...], dtype: torch.dtype) -> list[tuple[str, tuple[Any, ...], str]]:
    """(words, the extra arguments mu_p and logstd_p, condition) for every form the text allows."""
    mu_p = t.randn(*shape, dtype=dtype)
    logstd_p = t.rand(*shape, dtype=dtype, low=-0.5, high=0.8)
    row_mu, row_logstd = t.randn(shape[-1], dtype=dtype), t.rand(shape[-1], dtype=dtype, low=-0.5, high=0.8)
    numbers = (round(float(t.randn(1, dtype=torch.float64)), 3), round(float(t.rand(1, low=-0.5, high=0.8)), 3))
    return [
        (")", (), "prior-default"),
        (f", mu_p={numbers[0]}, logstd_p={numbers[1]}) with numbers", numbers, "prior-numbers"),
        (", mu_p, logstd_p) with tensors of mu_q's shape", (mu_p, logstd_p), "prior-tensors"),
        (f", mu_p, logstd_p) with tensors of shape ({shape[-1]},)", (row_mu, row_logstd), "prior-broadcast"),
    ]


@check(theory.mc_gaussian_kl, conditions=MC_GAUSSIAN_KL)
def probe_mc_gaussian_kl(t: Trial, mc_gaussian_kl) -> None:
    """(1/L) sum_l [log q(z_l) - log p(z_l)] with z_l = mu_q + exp(logstd_q) eps_l, samples from q."""
    hint = (
        "Sample from q: z = mu_q + exp(logstd_q) * eps; then average log q(z) - log p(z) over the samples (dim 0), "
        "each diagonal Gaussian log-density summed over the last dimension; mu_p and logstd_p may be numbers or "
        "tensors that broadcast. " + NO_DISTRIBUTIONS
    )
    t.covers("samples-from-q", "shapes", "float32-and-float64")
    for k, (shape, L) in enumerate([((4,), 40), ((3, 2), 15), ((2, 2, 5), 8), ((6, 1), 1)]):
        dtype = DTYPES[k % 2]
        mu_q, logstd_q, eps = _gaussian_inputs(t, shape, L, dtype)
        for words, prior, condition in _priors(t, shape, dtype)[k % 2 :: 2]:
            t.covers(condition)
            case = f"mc_gaussian_kl(mu_q, logstd_q, eps{words}, mu_q of shape {shape}, L = {L}, {dtype}"
            with t.without_distributions():
                got = t.call(mc_gaussian_kl, mu_q, logstd_q, eps, *prior, what=case, draws=False)
            mp, lp = (torch.as_tensor(v, dtype=torch.float64).cpu() for v in (prior or (0.0, 0.0)))
            mq, lq, e = _cpu(mu_q, logstd_q, eps)
            log_ratio = partial(_log_ratio, mq=mq, lq=lq, mp=mp, lp=lp)
            variants = [
                (
                    lambda e=e, mp=mp, lp=lp, f=log_ratio: f(mp + lp.exp() * e).mean(0),
                    "the samples come from p; KL(q || p) is an expectation under q: z = mu_q + exp(logstd_q) * eps",
                ),
                (
                    lambda e=e, mq=mq, lq=lq, f=log_ratio: -f(mq + lq.exp() * e).mean(0),
                    "that is log p - log q; KL(q || p) averages log q(z) - log p(z)",
                ),
                (
                    lambda e=e, mq=mq, lq=lq, f=log_ratio: f(mq + lq.exp() * e).sum(0),
                    "that sums over the samples; average them",
                ),
            ]
            t.check(case, got, what=case, hint=hint, test=naming(variants))


# ----------------------------------------------------------------------------- 7 reparameterised gradients


def _test_function(t: Trial, d: int, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(z) for z (L, ..., d) -> (L, ...): smooth, non-quadratic, each batch entry on its own."""
    a, b = t.randn(d, dtype=dtype), t.rand(d, dtype=dtype, low=0.2, high=1.0)
    c = t.randn(d, dtype=dtype)

    def f(z: torch.Tensor) -> torch.Tensor:
        return (a * torch.sin(z) + b * (z - c) ** 2).sum(-1) + 0.3 * z.sum(-1) ** 2

    return f


def _cpu_grads(f, mu, sigma, eps, *, power: int = 1, batch_mean: bool = False):
    # BEGIN REFERENCE
    mu_, sigma_ = (x.detach().cpu().clone().requires_grad_(True) for x in (mu, sigma))
    e = eps.detach().cpu()
    values = f(mu_ + sigma_**power * e).mean(0)
    total = values.mean() if batch_mean else values.sum()
    return torch.autograd.grad(total, (mu_, sigma_))
    # END REFERENCE


REPARAM_GRADIENT = {
    "gradient-of-the-mean": "the gradient of (1/L) sum_l f(mu + sigma * eps_l), sigma a standard deviation",
    "per-entry": "each batch entry has its own estimate: grad_mu and grad_sigma of shape (..., D)",
    "plain-inputs": "inputs that do not require gradients",
    "inputs-with-grad": "inputs that require gradients and carry a .grad: the caller's tensors are left as they are",
    "float32-and-float64": "inputs in float32 and float64",
}


@check(theory.reparam_gradient, conditions=REPARAM_GRADIENT)
def probe_reparam_gradient(t: Trial, reparam_gradient) -> None:
    """Gradients of (1/L) sum_l f(mu + sigma * eps_l) with respect to mu and sigma, per batch entry."""
    hint = (
        "Make z = mu + sigma * eps differentiable in mu and sigma (e.g. detached copies with requires_grad_()), "
        "average f(z) over the samples (dim 0), and take the gradient of its SUM over the batch "
        "(torch.autograd.grad): each batch entry keeps its own gradient. Return (grad_mu, grad_sigma)."
    )
    t.covers("gradient-of-the-mean", "per-entry", "float32-and-float64")
    for dtype in DTYPES:
        for k, (shape, L) in enumerate([((3,), 20), ((4, 2), 10), ((2, 3, 3), 5), ((1,), 1)]):
            f = _test_function(t, shape[-1], dtype)
            mu = t.randn(*shape, dtype=dtype)
            sigma = t.rand(*shape, dtype=dtype, low=0.1, high=1.5)
            eps = t.randn(L, *shape, dtype=dtype)
            case = f"mu of shape {shape}, L = {L}, {dtype}"
            if k % 2:  # the caller's own leaves, with gradients of their own that must stay as they are
                t.covers("inputs-with-grad")
                mu.requires_grad_()
                sigma.requires_grad_()
                mu.grad, sigma.grad = torch.ones_like(mu), torch.ones_like(sigma)
                case += ", mu and sigma requiring grad"
            else:
                t.covers("plain-inputs")
            with t.without_distributions():
                got = t.call(
                    reparam_gradient,
                    f,
                    mu,
                    sigma,
                    eps,
                    what=f"reparam_gradient(f, mu, sigma, eps), {case}",
                    draws=False,
                )
            parts = list(got) if isinstance(got, (tuple, list)) and len(got) == 2 else [got, None]
            for i, name in enumerate(("mu", "sigma")):
                variants = [
                    (
                        lambda f=f, i=i, m=mu, s=sigma, e=eps: _cpu_grads(f, m, s, e, power=2)[i],
                        "that is the gradient "
                        "for z = mu + sigma^2 * eps: sigma is the standard deviation, z = mu + sigma * eps",
                    ),
                    (
                        lambda f=f, i=i, m=mu, s=sigma, e=eps: _cpu_grads(f, m, s, e, batch_mean=True)[i],
                        "that is "
                        "divided by the batch size: sum the estimates over the batch before differentiating (each "
                        "entry's gradient is its own)",
                    ),
                    (
                        lambda f=f, i=i, m=mu, s=sigma, e=eps: theory.score_function_gradient(f, *_cpu(m, s, e))[i],
                        "that is the score-function (REINFORCE) estimate; "
                        "differentiate f through z = mu + sigma * eps instead",
                    ),
                ]
                t.check(
                    f"{case}/grad_{name}",
                    parts[i],
                    what=f"grad_{name} from reparam_gradient, {case}",
                    hint=hint,
                    test=naming(variants),
                )


# ----------------------------------------------------------------------------- 8 bits per dimension


BITS_PER_DIM = {
    "per-image": "nll with one value per image, shape (N,): the result has the shape of nll",
    "batch-mean": "a batch mean nll, a 0-dim tensor",
    "float-nll": "a Python float nll (the result is then a number)",
    "shape-forms": "img_shape given as x.shape (a torch.Size), a tuple or a list",
    "image-dims": "every dimension after the batch size counts: (N, C, H, W) and flat (N, D)",
    "float32-and-float64": "nll in float32 and float64",
}


@check(losses.bits_per_dim, conditions=BITS_PER_DIM)
def probe_bits_per_dim(t: Trial, bits_per_dim) -> None:
    """nll * log2(e) / (product of the non-batch dimensions of img_shape)."""
    hint = (
        "bpd = nll * log2(e) / (d1 * ... * dK) where d1..dK are img_shape without its first (batch) entry; "
        "the result has the shape of nll."
    )
    t.covers("per-image", "image-dims", "float32-and-float64", "batch-mean", "float-nll", "shape-forms")
    cases: list[tuple[str, Any, Any]] = []
    for dtype in DTYPES:
        for shape, form in [
            ((5, 1, 28, 28), torch.Size),
            ((3, 3, 32, 32), tuple),
            ((4, 784), list),
            ((2, 3, 8, 8), tuple),
        ]:
            nll = t.rand(shape[0], dtype=dtype, low=50.0, high=3000.0)
            label = f"nll of shape ({shape[0]},), img_shape {shape} as a {form.__name__}, {dtype}"
            cases.append((label, nll, form(shape)))
        cases.append(
            (
                f"a batch-mean nll (0-dim), img_shape (16, 1, 28, 28), {dtype}",
                t.rand(dtype=dtype, low=100.0, high=900.0),
                torch.Size((16, 1, 28, 28)),
            )
        )
    cases.append(("a Python float nll, img_shape [8, 3, 32, 32] (a list)", 2000.0 + t.integer(0, 1000), [8, 3, 32, 32]))
    for label, nll, shape in cases:
        got = t.call(bits_per_dim, nll, shape, what=f"bits_per_dim(nll, img_shape), {label}")
        dims = math.prod(shape[1:])
        value = lambda nll=nll: nll.cpu() if isinstance(nll, torch.Tensor) else nll
        variants = [
            (
                lambda v=value, s=shape: v() * math.log2(math.e) / math.prod(s),
                "that also divides by the batch size; divide by the dimensions of ONE example, img_shape[1:]",
            ),
            (lambda v=value, d=dims: v() / d, "that is nats per dimension; multiply by log2(e) = 1 / ln 2 to get bits"),
            (
                lambda v=value, d=dims: v() * math.log(2) / d,
                "that multiplies by ln 2; bits = nats * log2(e) = nats / ln 2",
            ),
            (
                lambda v=value, s=shape: v() * math.log2(math.e) / math.prod(s[2:]),
                "that leaves out the first "
                "non-batch dimension; include every dimension after the batch size (channels too)",
            ),
        ]
        t.check(label, got, what=f"bits_per_dim, {label}", hint=hint, test=naming(variants))
