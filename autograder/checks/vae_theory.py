"""Hidden tests of the chapter "VAE theory" (``vae_theory``).

Each ``probe_<exercise>`` runs twice (see autograder/probing.py): in the student's kernel it
records what the student's function returns on inputs drawn from the run's seed; in the grader
the reference from ``genlab.theory`` (``genlab.losses.bits_per_dim``) meets the same inputs and
every record is compared. Where a wrong value matches a known wrong variant (a mean of logs,
weights q/p, KL with its arguments swapped, ...), the message names it. The exercises may not use
``torch.distributions``: every call runs with it switched off (``Trial.without_distributions``).

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
    """Call the student's function where raising is the right answer: what it raised, or what it returned."""
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


def _log_lik(t: Trial, d: int, dtype: torch.dtype, *, offset: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Gaussian-shaped log p(x | z) for one x: z (L, ..., d) -> (L, ...), peaked away from the origin."""
    m = d + 2
    a = t.randn(d, m, dtype=dtype)
    target = t.randn(m, dtype=dtype, scale=1.5)
    sharpness = 0.5 + t.integer(0, 4)

    def log_px_given_z(z: torch.Tensor) -> torch.Tensor:
        return offset - 0.5 * sharpness * ((z @ a - target) ** 2).sum(-1)

    return log_px_given_z


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


@check(theory.sample_categorical)
def probe_sample_categorical(t: Trial, sample_categorical) -> None:
    """Independent categorical draws, one per row of probs; a ValueError names probs when rows do not sum to one."""
    hint = (
        "Draw one category per row of probs (..., k), independently, with a random number created on probs' "
        f"device; return integer indices of dtype torch.long and shape probs.shape[:-1]. {NO_DISTRIBUTIONS}"
    )
    # Six pixels over five grey levels, some impossible; pixels 0 and 1 share their probabilities.
    base = t.rand(6, 5, dtype=torch.float64, low=0.2, high=1.0)
    base[1] = base[0]
    for pixel, level in ((2, 0), (3, 4), (3, 1), (5, 2)):
        base[pixel, level] = 0.0
    probs = base / base.sum(-1, keepdim=True)
    cases = [
        ("(20000, 6, 5)", probs.to(torch.float32).expand(20000, 6, 5).contiguous(), 20000, probs, (0, 1)),
    ]
    other = t.rand(2, 3, 4, dtype=torch.float64, low=0.05, high=1.0)
    other = other / other.sum(-1, keepdim=True)
    cases.append(("(8000, 2, 3, 4)", other.expand(8000, 2, 3, 4).contiguous(), 8000, other, None))
    for label, big, n, p, pair in cases:
        with t.without_distributions(), t.default_device_elsewhere():
            draws = t.call(
                sample_categorical,
                big,
                what=f"sample_categorical(probs) on probs of shape {label} "
                "(random numbers must be created on probs.device)",
            )
        t.check(
            f"draws{label}",
            draws,
            what=f"sample_categorical(probs), probs of shape {label}",
            test=_frequency_test(p, n, pair),
            hint=hint,
        )
    uniform = torch.full((64, 10), 0.1, device=t.device)
    with t.without_distributions():
        first = t.call(sample_categorical, uniform, what="sample_categorical(probs), a first call")
        second = t.call(sample_categorical, uniform, what="sample_categorical(probs), a second call")
    t.note("fresh/first", first)
    t.check(
        "fresh/second",
        second,
        what="a second call of sample_categorical on the same probs",
        test=_differs_from("fresh/first"),
    )
    bad = probs[:3].to(torch.float32) * 0.8
    with t.without_distributions():
        outcome = _outcome(t, sample_categorical, bad, what="sample_categorical(probs) with rows that sum to 0.8")
    t.check(
        "bad_rows",
        outcome,
        what="sample_categorical(probs) with rows that sum to 0.8",
        test=_raises_value_error("probs"),
        hint="Check that every row of probs sums to one (up to rounding, say 1e-3) and raise "
        "ValueError('probs must sum to one ...') otherwise.",
    )


# ----------------------------------------------------------------------------- 2 Monte-Carlo likelihood


@check(theory.mc_log_likelihood)
def probe_mc_log_likelihood(t: Trial, mc_log_likelihood) -> None:
    """log (1/L) sum_l p(x | z_l), in log space, over the samples along dimension 0."""
    hint = (
        "The estimate is log((1/L) sum_l p(x | z_l)) = torch.logsumexp(values, dim=0) - log(L), with "
        "values = log_px_given_z(z) of shape (L, ...)."
    )
    for dtype in DTYPES:
        for offset in (-3.0, -900.0, 400.0):
            for shape in [(50, 3), (40, 4, 2), (1, 2), (7, 5, 1)]:
                d = shape[-1]
                log_lik = _log_lik(t, d, dtype, offset=offset)
                z = t.randn(*shape, dtype=dtype)
                case = f"z of shape {shape}, log-likelihoods near {offset:g}, {dtype}"
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


def _probe_weights(t: Trial, impl, name: str, kind: str, hint: str, grad_hint: str | None = None) -> None:
    """Shared probe of the three functions of (log_px_given_z, mu, logstd, eps)."""
    for dtype in DTYPES:
        for shape, L, offset in [((3,), 30, -2.0), ((4, 2), 25, -600.0), ((5, 1), 1, 0.0), ((2, 3, 4), 12, -50.0)]:
            log_lik = _log_lik(t, shape[-1], dtype, offset=offset)
            mu, logstd, eps = _gaussian_inputs(t, shape, L, dtype)
            if grad_hint:
                mu, logstd = mu.requires_grad_(), logstd.requires_grad_()
            case = f"mu of shape {shape}, L = {L}, log-likelihoods near {offset:g}, {dtype}"
            with t.without_distributions():
                got = t.call(impl, log_lik, mu, logstd, eps, what=f"{name}(log_px_given_z, mu, logstd, eps), {case}")
            t.check(
                case,
                got,
                what=f"{name}, {case}",
                hint=hint,
                test=naming(_weights_variants(log_lik, mu, logstd, eps, kind), extra=_underflow),
            )
            if grad_hint:
                _record_gradients(t, case, got, {"mu": mu, "logstd": logstd}, what=f"{name} ({case})", hint=grad_hint)
        log_lik, mu, logstd = _exact_model(t, 3, dtype, batch=4)
        eps = t.randn(20, 4, 3, dtype=dtype)
        case = f"the exact posterior as q (then every weight equals p(x)), {dtype}"
        with t.without_distributions():
            got = t.call(impl, log_lik, mu, logstd, eps, what=f"{name} with {case}")
        t.check(
            f"exact/{dtype}",
            got,
            what=f"{name} with {case}",
            hint=hint,
            test=naming(_weights_variants(log_lik, mu, logstd, eps, kind)),
        )


@check(theory.log_importance_weights)
def probe_log_importance_weights(t: Trial, log_importance_weights) -> None:
    """log w_l = log p(x | z_l) + log p(z_l) - log q(z_l | x) with z_l = mu + exp(logstd) eps_l, shape (L, ...)."""
    _probe_weights(
        t,
        log_importance_weights,
        "log_importance_weights",
        "weights",
        WEIGHTS_HINT + "Return one log-weight per sample, shape (L, ...). " + NO_DISTRIBUTIONS,
    )


@check(theory.importance_log_likelihood)
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


@check(theory.entropy)
def probe_entropy(t: Trial, entropy) -> None:
    """H(p) = -sum p log p in nats over the last dimension, 0 log 0 = 0."""
    hint = f"H(p) = -sum_x p(x) log p(x) over the last dimension, where a term with p(x) = 0 counts 0. {NATS}"
    for dtype in DTYPES:
        for shape, zeros in [((7,), 0.0), ((4, 6), 0.3), ((2, 3, 5), 0.4), ((3, 1), 0.0), ((2, 256), 0.5)]:
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


def _pairs(t: Trial, dtype: torch.dtype):
    """(label, p, q) cases: zeros in p, zeros in q where p is 0 too, q = 0 < p (inf), broadcasting."""
    p1, q1 = _distributions(t, 4, 6, dtype=dtype), _distributions(t, 4, 6, dtype=dtype)
    p2, q2 = _distributions(t, 3, 5, dtype=dtype, zeros=0.4), _distributions(t, 3, 5, dtype=dtype)
    p3 = _distributions(t, 2, 2, 7, dtype=dtype, zeros=0.4)
    q3 = _distributions(t, 2, 2, 7, dtype=dtype)
    q3 = torch.where(p3 == 0, torch.zeros_like(q3), q3)  # q is 0 only where p is 0 too
    q3 = q3 / q3.sum(-1, keepdim=True)
    p4, q4 = _distributions(t, 3, 4, dtype=dtype), _distributions(t, 3, 4, dtype=dtype, zeros=0.5)
    p5, q5 = _distributions(t, 6, dtype=dtype, zeros=0.3), _distributions(t, 5, 6, dtype=dtype)
    return [
        ("p, q of shape (4, 6)", p1, q1),
        ("p with zeros, (3, 5)", p2, q2),
        ("p and q with zeros in the same places, (2, 2, 7)", p3, q3),
        ("q = 0 where p > 0 in some rows, (3, 4)", p4, q4),
        ("one p (6,) against a batch of q (5, 6)", p5, q5),
    ]


@check(theory.cross_entropy)
def probe_cross_entropy(t: Trial, cross_entropy) -> None:
    """H(p, q) = -sum p log q in nats over the last dimension; 0 where p = 0, inf where q = 0 < p."""
    hint = (
        "H(p, q) = -sum_x p(x) log q(x) over the last dimension: a term with p(x) = 0 counts 0 (even if q(x) = 0), "
        f"a term with q(x) = 0 < p(x) makes it inf. p and q broadcast against each other. {NATS}"
    )
    for dtype in DTYPES:
        for label, p, q in _pairs(t, dtype):
            case = f"{label}, {dtype}"
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


@check(theory.categorical_kl)
def probe_categorical_kl(t: Trial, categorical_kl) -> None:
    """KL(p || q) = sum p log(p / q) in nats over the last dimension; 0 log 0 = 0, inf where q = 0 < p."""
    hint = (
        "KL(p || q) = sum_x p(x) log(p(x) / q(x)) over the last dimension, p first: a term with p(x) = 0 counts 0, "
        f"one with q(x) = 0 < p(x) makes it inf. p and q broadcast against each other. {NATS}"
    )
    for dtype in DTYPES:
        for label, p, q in _pairs(t, dtype):
            case = f"{label}, {dtype}"
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


@check(theory.mc_elbo)
def probe_mc_elbo(t: Trial, mc_elbo) -> None:
    """(1/L) sum_l log w_l, the mean log-weight with reparameterised samples; and its gradients."""
    _probe_weights(
        t,
        mc_elbo,
        "mc_elbo",
        "elbo",
        WEIGHTS_HINT + "The ELBO is the mean of log w over the samples (dim 0). " + NO_DISTRIBUTIONS,
        grad_hint="The estimate must stay differentiable in mu and logstd: build z = mu + exp(logstd) * eps "
        "with torch operations (no .detach(), .item(), numpy or torch.normal) and use it "
        "everywhere.",
    )


# ----------------------------------------------------------------------------- 6 the KL term by Monte Carlo


def _log_ratio(z: torch.Tensor, *, mq, lq, mp, lp) -> torch.Tensor:
    """log q(z) - log p(z) of two diagonal Gaussians (the grader's, for naming wrong variants)."""
    # BEGIN REFERENCE
    log_q = (-0.5 * ((z - mq) / lq.exp()) ** 2 - lq).sum(-1)
    log_p = (-0.5 * ((z - mp) / lp.exp()) ** 2 - lp).sum(-1)
    return log_q - log_p
    # END REFERENCE


@check(theory.mc_gaussian_kl)
def probe_mc_gaussian_kl(t: Trial, mc_gaussian_kl) -> None:
    """(1/L) sum_l [log q(z_l) - log p(z_l)] with z_l = mu_q + exp(logstd_q) eps_l, samples from q."""
    hint = (
        "Sample from q: z = mu_q + exp(logstd_q) * eps; then average log q(z) - log p(z) over the samples (dim 0), "
        "each diagonal Gaussian log-density summed over the last dimension. " + NO_DISTRIBUTIONS
    )
    for dtype in DTYPES:
        for shape, L in [((4,), 40), ((3, 2), 15), ((2, 2, 5), 8), ((6, 1), 1)]:
            mu_q, logstd_q, eps = _gaussian_inputs(t, shape, L, dtype)
            mu_p = t.randn(*shape, dtype=dtype)
            logstd_p = t.rand(*shape, dtype=dtype, low=-0.5, high=0.8)
            for general in (False, True):
                args = (mu_q, logstd_q, eps) + ((mu_p, logstd_p) if general else ())
                call = "mc_gaussian_kl(mu_q, logstd_q, eps" + (", mu_p, logstd_p)" if general else ")")
                case = f"{call}, mu_q of shape {shape}, L = {L}, {dtype}"
                with t.without_distributions():
                    got = t.call(mc_gaussian_kl, *args, what=case)
                prior = args[3:] if general else (torch.zeros(()), torch.zeros(()))
                mq, lq, e, mp, lp = _cpu(mu_q, logstd_q, eps, *prior)
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


@check(theory.reparam_gradient)
def probe_reparam_gradient(t: Trial, reparam_gradient) -> None:
    """Gradients of (1/L) sum_l f(mu + sigma * eps_l) with respect to mu and sigma, per batch entry."""
    hint = (
        "Make z = mu + sigma * eps differentiable in mu and sigma (e.g. detached copies with requires_grad_()), "
        "average f(z) over the samples (dim 0), and take the gradient of its SUM over the batch "
        "(torch.autograd.grad): each batch entry keeps its own gradient. Return (grad_mu, grad_sigma)."
    )
    for dtype in DTYPES:
        for shape, L in [((3,), 20), ((4, 2), 10), ((2, 3, 3), 5), ((1,), 1)]:
            f = _test_function(t, shape[-1], dtype)
            mu = t.randn(*shape, dtype=dtype)
            sigma = t.rand(*shape, dtype=dtype, low=0.1, high=1.5)
            eps = t.randn(L, *shape, dtype=dtype)
            case = f"mu of shape {shape}, L = {L}, {dtype}"
            with t.without_distributions():
                got = t.call(reparam_gradient, f, mu, sigma, eps, what=f"reparam_gradient(f, mu, sigma, eps), {case}")
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


@check(losses.bits_per_dim)
def probe_bits_per_dim(t: Trial, bits_per_dim) -> None:
    """nll * log2(e) / (product of the non-batch dimensions of img_shape)."""
    hint = (
        "bpd = nll * log2(e) / (d1 * ... * dK) where d1..dK are img_shape without its first (batch) entry; "
        "the result has the shape of nll."
    )
    cases: list[tuple[str, Any, Any]] = []
    for dtype in DTYPES:
        for shape in [(5, 1, 28, 28), (3, 3, 32, 32), (4, 784), (2, 3, 8, 8)]:
            nll = t.rand(shape[0], dtype=dtype, low=50.0, high=3000.0)
            cases.append((f"nll of shape ({shape[0]},), img_shape {shape}, {dtype}", nll, torch.Size(shape)))
        cases.append(
            (
                f"a batch-mean nll (0-dim), img_shape (16, 1, 28, 28), {dtype}",
                t.rand(dtype=dtype, low=100.0, high=900.0),
                (16, 1, 28, 28),
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
