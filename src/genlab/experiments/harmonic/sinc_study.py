"""Why the sinc encoders come out below the paper: one suspect changed at a time."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import genlab
from genlab.experiments import provenance
from genlab.experiments.harmonic.data import Dataset, load_dataset
from genlab.experiments.harmonic.estimates import _cpu64, probe_points
from genlab.experiments.harmonic.plan import Plan, torch_threads, with_plan_threads
from genlab.experiments.harmonic.tables import _markdown_section, _table, fmt, mean_std
from genlab.experiments.harmonic.training import StepFn, run_config, train_or_load
from genlab.experiments.harmonic_reference import PAPER
from genlab.experiments.reference import CHECKOUT
from genlab.models import harmonic as H


@dataclass(frozen=True)
class SincVariant:
    """One way of setting up the sinc(5t) encoder experiment; the defaults are the chapter's full profile."""

    name: str
    suspect: str  # what this variant changes, in words
    inputs: str = "pairs"  # "pairs": (value, time) per point, 344 inputs; "values": the 172 values alone
    # "signed": sin(5t)/(5t) mapped to [-1, 1]; "raw": sin(5t)/(5t) as it is (about -0.22 to 1);
    # "torch.sinc": torch.sinc(5t) = sin(5πt)/(5πt), the 2022 code's signal, mapped to [-1, 1] the same way
    values: str = "signed"
    latent: int = 1
    epochs: int = 100
    batch_size: int = 256
    target: str = "clean"  # "clean": the decoder reproduces x; "noisy": it reproduces x + noise (the 2022 code)
    sse_weight: float = 1.0  # weight of the squared error against the KL: 1 / (2 s^2) for a decoder N(g(z), s^2 I)
    sigma_ns: tuple[float, ...] | None = None  # the σ_N values this variant is trained at; None: the study's


SINC_VARIANTS = (
    SincVariant("baseline", "nothing (the chapter's setting)", sigma_ns=(0.0, 0.5, 1.0)),
    SincVariant("values only", "encoder input: the 172 values without their times", inputs="values"),
    SincVariant("raw values", "normalisation: sinc(5t) values not mapped to [-1, 1]", values="raw"),
    SincVariant("torch.sinc", "signal: sin(5πt)/(5πt), the 2022 code's torch.sinc(5t)", values="torch.sinc"),
    SincVariant("latent 2", "latent size", latent=2),
    SincVariant("latent 4", "latent size", latent=4),
    SincVariant("latent 8", "latent size", latent=8),
    SincVariant("latent 16", "latent size", latent=16),
    SincVariant("200 epochs", "training length: 2x the epochs", epochs=200),
    SincVariant("400 epochs", "training length: 4x the epochs", epochs=400),
    SincVariant("1000 epochs", "training length: 10x the epochs", epochs=1000),
    SincVariant("batch 64", "training length: 4x the steps (batches of 64)", batch_size=64),
    SincVariant("SSE weight 10", "likelihood: decoder variance 1/20 instead of 1/2", sse_weight=10.0),
    SincVariant(
        "SSE weight 100",
        "likelihood: decoder variance 1/200 instead of 1/2",
        sse_weight=100.0,
        sigma_ns=(0.0, 0.5, 1.0),
    ),
    # at σ_N = 0 the noisy target is the clean one: this variant only runs with noise
    SincVariant(
        "noisy target", "noise injection: the decoder reproduces the noisy input", target="noisy", sigma_ns=(0.5, 1.0)
    ),
)


def sinc_variant_data(variant: SincVariant, plan: Plan, device: torch.device) -> Dataset:
    """The sinc tracks as ``variant`` feeds them to the network."""
    from genlab.data import _sinc5_range

    data = load_dataset("sinc", plan, device)

    lo, hi = _sinc5_range()

    def convert(x: torch.Tensor) -> torch.Tensor:
        if variant.values == "raw":
            x = torch.stack([(x[..., 0] + 1) / 2 * (hi - lo) + lo, x[..., 1]], dim=-1)
        elif variant.values == "torch.sinc":  # same extremes (-0.2172 and 1), reached π times faster
            v = (torch.sinc(5 * x[..., 1].double()) - lo) / (hi - lo) * 2 - 1
            x = torch.stack([v.clamp(-1.0, 1.0).to(x.dtype), x[..., 1]], dim=-1)
        elif variant.values != "signed":
            raise ValueError(f"unknown values {variant.values!r}")
        return x[..., :1].contiguous() if variant.inputs == "values" else x

    return Dataset("sinc", convert(data.train), convert(data.test), data.stand_in)


def sinc_variant_step(variant: SincVariant) -> StepFn | None:
    """The training step of ``variant``: None (the package's noisy_step) unless it changes the loss."""
    if variant.target == "clean" and variant.sse_weight == 1.0:
        return None
    # BEGIN REFERENCE
    # The study's steps are variants of the graded noisy_step, so the student edition leaves them out.
    noisy_target, weight = variant.target == "noisy", float(variant.sse_weight)

    def step(model: H.HarmonicVAE, x: torch.Tensor, sigma_n: float, optimizer: torch.optim.Optimizer) -> float:
        x_in = x + sigma_n * torch.randn_like(x)
        mu = model.encode(x_in)
        x_hat = model.decode(H.sample_latent(mu, model.sigma_enc))
        loss = (
            weight * H.squared_error(x_hat, x_in if noisy_target else x) + H.fixed_sigma_kl(mu, model.sigma_enc)
        ).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step
    # END REFERENCE


def encoder_measures(model: H.HarmonicVAE, data: Dataset, plan: Plan, *, lipsdp: bool = False) -> dict[str, float]:
    """The encoder's constant several ways, and how it reads its input (values against times).

    ``lower``: genlab's Jacobian lower bound (gradient ascent from the probe points); ``at_data``: the
    largest Jacobian norm at the probe points themselves; ``values_part``/``times_part``: the largest
    norm of the Jacobian's columns that belong to the values / the times; ``linf_at_data``: the largest
    norm of the Jacobian as a map from the ℓ∞ input norm to the ℓ2 output norm, ``max ||J s||_2`` over
    sign vectors ``s`` (the ℓ1 norm of the gradient for a one-dimensional latent; a lower bound found
    by a sign power iteration otherwise), which is what a constant for per-coordinate (box)
    perturbations measures; ``linf_lower``: the same norm after the lower bound's gradient ascent
    (:func:`linf_lower_bound`); ``linf_product``: an upper bound on that ℓ∞ → ℓ2 constant, the product
    bound with the first layer's ℓ∞ → ℓ2 norm bounded by the ℓ2 norm of its rows' ℓ1 norms;
    ECLipsE-Fast, the product bound and (when asked) LipSDP-neuron, all three for the ℓ2 norm.
    """
    # BEGIN REFERENCE
    # The exact Jacobian norms here are the graded jacobian_spectral_norm's reference, so the student
    # edition leaves the study's measurements out (the chapter reads their committed results).
    from genlab import lipschitz

    net = _cpu64(model.encoder)
    points = probe_points(model, "encoder", data, plan.lower_points)
    out = {
        "lower": lipschitz.jacobian_lower_bound(
            net, points, steps=plan.lower_steps, generator=torch.Generator().manual_seed(0)
        )
    }
    jac = torch.stack([torch.autograd.functional.jacobian(lambda p: net(p.unsqueeze(0)).squeeze(0), p) for p in points])
    jac = jac.reshape(len(points), model.latent, -1)
    out["at_data"] = float(torch.linalg.matrix_norm(jac, ord=2).max())
    s = torch.sign(torch.linalg.svd(jac).Vh[:, 0, :]).unsqueeze(-1)  # sign of the top right singular vector
    for _ in range(10):  # ascent on ||J s||_2 over sign vectors; a fixed point at once for one latent
        s = torch.sign(jac.transpose(1, 2) @ (jac @ s))
    out["linf_at_data"] = float(torch.linalg.vector_norm(jac @ s, dim=(1, 2)).max())
    out["linf_lower"] = max(out["linf_at_data"], linf_lower_bound(net, points, steps=plan.lower_steps))
    if data.shape[-1] == 2:
        cols = jac.reshape(len(points), model.latent, -1, 2)
        out["values_part"] = float(torch.linalg.matrix_norm(cols[..., 0], ord=2).max())
        out["times_part"] = float(torch.linalg.matrix_norm(cols[..., 1], ord=2).max())
    else:
        out["values_part"], out["times_part"] = out["at_data"], math.nan
    out["eclipse"] = lipschitz.eclipse_fast_bound(net)
    out["product"] = lipschitz.spectral_product_bound(net)
    first = net[0]
    assert isinstance(first, nn.Linear)  # the encoder's networks start with their first layer
    w1 = first.weight.detach()  # ||W1 s||_2 <= ||(||row_i||_1)_i||_2 for every sign vector s
    out["linf_product"] = out["product"] * float(w1.abs().sum(1).norm() / torch.linalg.matrix_norm(w1, ord=2))
    if lipsdp:
        out["lipsdp"] = lipschitz.lipsdp(
            net, variant="neuron", method=plan.lipsdp_method, solver_options=plan.lipsdp_options
        )
    return out
    # END REFERENCE


def linf_lower_bound(net: nn.Sequential, points: torch.Tensor, *, steps: int = 100, lr: float = 1e-2) -> float:
    """A lower bound on the ℓ∞ → ℓ2 Lipschitz constant of ``net``: ``max ||J(x) s||_2`` over visited points.

    From each of ``points``, Adam climbs ``||J(x) s||_2`` with the sign vector ``s`` renewed at every
    step as ``sign(J^T J s)`` (for a one-dimensional output: the sign of the gradient, so the objective
    is the gradient's ℓ1 norm). Each value is the derivative along a direction of ℓ∞ norm 1 that the
    network attains, hence a true lower bound.
    """
    # BEGIN REFERENCE
    from torch.func import jacrev, vmap

    f = _cpu64(net)
    for p in f.parameters():
        p.requires_grad_(False)
    jac = vmap(jacrev(lambda p: f(p.unsqueeze(0)).squeeze(0)))
    x = points.detach().to("cpu", torch.float64).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    best = 0.0
    with torch_threads(1):
        for i in range(steps + 1):
            J = jac(x)  # (n, k, d)
            sgn = torch.sign(J.detach().transpose(1, 2) @ J.detach().sum(2, keepdim=True))
            for _ in range(5):
                sgn = torch.sign(J.detach().transpose(1, 2) @ (J.detach() @ sgn))
            value = torch.linalg.vector_norm(J @ sgn, dim=(1, 2))
            best = max(best, float(value.detach().max()))
            if i == steps:
                break
            opt.zero_grad()
            (-value.sum()).backward()
            opt.step()
    return best
    # END REFERENCE


def decoder_measures(model: H.HarmonicVAE, data: Dataset, plan: Plan) -> dict[str, float]:
    """The decoder's Jacobian lower bound and ECLipsE-Fast bound (the paper: 5.2 at σ_enc = 0.5)."""
    from genlab import lipschitz

    net = _cpu64(model.decoder)
    points = probe_points(model, "decoder", data, plan.lower_points)
    return {
        "dec_lower": lipschitz.jacobian_lower_bound(
            net, points, steps=plan.lower_steps, generator=torch.Generator().manual_seed(0)
        ),
        "dec_eclipse": lipschitz.eclipse_fast_bound(net),
        "dec_paper": PAPER[("sinc", "sigma_enc", 0.5)][0],
    }


@with_plan_threads
def sinc_encoder_study(
    plan: Plan,
    out: str | os.PathLike,
    cache: str | os.PathLike,
    variants: Sequence[SincVariant] = SINC_VARIANTS,
    sigma_ns: Sequence[float] = (0.0,),
    *,
    lipsdp: Sequence[str] = (),
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    """Train the input-noise sweep's sinc networks under each variant and measure their encoders.

    Each variant is trained at its own ``sigma_ns`` where it names them, else at ``sigma_ns``.
    Writes ``sinc-encoder.csv`` and ``sinc-encoder.md`` under ``out``; networks are cached under
    ``<cache>/<profile>/sinc-encoder/<variant>/``. ``lipsdp`` names the variants that also get LipSDP.
    """
    device = device or genlab.device()
    rows: list[dict[str, Any]] = []
    for variant in variants:
        data = sinc_variant_data(variant, plan, device)
        step = sinc_variant_step(variant)
        vplan = replace(
            plan,
            epochs={**plan.epochs, "sinc": variant.epochs},
            batch_size={**plan.batch_size, "sinc": variant.batch_size},
        )
        cache_dir = Path(cache) / plan.profile / "sinc-encoder" / variant.name.replace(" ", "-")
        for sigma_n in variant.sigma_ns or sigma_ns:
            for seed in plan.seeds:
                cfg = {
                    **run_config(vplan, data, "sigma_n", sigma_n, seed, step=step),
                    "latent": variant.latent,
                    "inputs": variant.inputs,
                    "values": variant.values,
                    "target": variant.target,
                }
                if variant.sse_weight != 1.0:
                    cfg["sse_weight"] = variant.sse_weight
                t0 = time.perf_counter()
                model, status = train_or_load(cfg, data, cache_dir, step)
                train_s = time.perf_counter() - t0
                with torch.no_grad():
                    mu = model.encode(data.train)
                    test_sse = float(sinc_value_sse(model.reconstruct(data.test), data.test, variant).mean())
                row = {
                    "variant": variant.name,
                    "suspect": variant.suspect,
                    "sigma_n": sigma_n,
                    "seed": seed,
                    "hidden": cfg["hidden"],
                    "n_train": cfg["n_train"],
                    "epochs": cfg["epochs"],
                    "batch_size": cfg["batch_size"],
                    "status": status,
                    "train_s": round(train_s, 1),
                    "test_sse": test_sse,
                    "mu_std": float(mu.std(dim=0).max()),
                    "paper": PAPER[("sinc", "sigma_n", sigma_n)][0],
                    **encoder_measures(model, data, plan, lipsdp=variant.name in lipsdp),
                }
                if sigma_n == 0.0:  # the sigma_enc = 0.5 network of the other sweep: its decoder too
                    row.update(decoder_measures(model, data, plan))
                rows.append(row)
                print(
                    f"{variant.name:>14s} sigma_N={sigma_n:g} seed {seed}: "
                    + ", ".join(f"{k} {row[k]:.3g}" for k in ("lower", "eclipse", "product", "test_sse", "mu_std")),
                    flush=True,
                )
    out_dir = Path(out)
    provenance.write_csv(out_dir / "sinc-encoder.csv", rows)
    (out_dir / "sinc-encoder.md").write_text(sinc_encoder_markdown(rows))
    return rows


def sinc_value_sse(x_hat: torch.Tensor, x: torch.Tensor, variant: SincVariant) -> torch.Tensor:
    """Squared error of the values alone, in the units of values mapped to [-1, 1], per track.

    The same yardstick for every variant: the times' error is left out (values-only networks have
    none) and raw values are scaled as the signed ones are.
    """
    err = (x_hat[..., 0] - x[..., 0]) ** 2
    if variant.values == "raw":
        from genlab.data import _sinc5_range

        lo, hi = _sinc5_range()
        err = err * (2 / (hi - lo)) ** 2
    return err.flatten(1).sum(1)


SINC_STUDY_CSV = Path("results", "harmonic", "sinc-encoder", "sinc-encoder.csv")


def find_sinc_encoder_csv(start: str | os.PathLike | None = None) -> Path | None:
    """The committed study's CSV (``results/harmonic/sinc-encoder/sinc-encoder.csv``), or None.

    Looked for in ``start`` (default: the working folder) and the folders above it, then in the
    checkout the package runs from; a copy of the course without ``results/`` gives None.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents, CHECKOUT):
        if (folder / SINC_STUDY_CSV).is_file():
            return folder / SINC_STUDY_CSV
    return None


def load_sinc_encoder_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``sinc-encoder.csv`` written by :func:`sinc_encoder_study`, as strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


SINC_STUDY_COLUMNS = (
    ("lower", "Jacobian lower bound"),
    ("at_data", "largest norm at the data"),
    ("values_part", "values' columns"),
    ("times_part", "times' columns"),
    ("linf_at_data", "ℓ∞ → ℓ2 at the data"),
    ("linf_lower", "ℓ∞ → ℓ2 lower bound"),
    ("linf_product", "ℓ∞ → ℓ2 product bound"),
    ("eclipse", "ECLipsE-Fast"),
    ("lipsdp", "LipSDP-neuron"),
    ("product", "product bound"),
    ("test_sse", "test SSE of the values"),
    ("mu_std", "std of μ"),
    ("dec_lower", "decoder: lower bound"),
    ("dec_eclipse", "decoder: ECLipsE-Fast"),
)


def sinc_encoder_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    suspects: bool = True,
    title: str = "The sinc(5t) encoder's Lipschitz constant, one suspect changed at a time",
):
    """The study as a :class:`genlab.plotting.Table`: one row per variant and σ_N, means ± std over seeds.

    ``rows`` as :func:`sinc_encoder_study` returns them or :func:`load_sinc_encoder_rows` reads them back;
    ``columns`` picks measures by key (default: all); ``suspects=False`` leaves out the column that
    says in words what each variant changes (a narrower table).
    """
    cols = [c for c in SINC_STUDY_COLUMNS if columns is None or c[0] in columns]
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["variant"], float(r["sigma_n"])), []).append(r)
    body = []
    for (name, sigma_n), rs in groups.items():
        cells = [
            fmt(*mean_std([float(r[k]) for r in rs])) if all(r.get(k) not in (None, "") for r in rs) else "—"
            for k, _ in cols
        ]
        body.append(
            [
                name,
                *([rs[0]["suspect"]] if suspects else []),
                f"{sigma_n:g}",
                str(len(rs)),
                *cells,
                f"{float(rs[0]['paper']):g}",
            ]
        )
    base = next((r for r in rows if r["variant"] == "baseline"), rows[0] if rows else None)
    setting = (
        f" (width {base['hidden']}, {base['n_train']} tracks, {base['epochs']} epochs in batches of "
        f"{base['batch_size']}, latent size 1, values and times in [-1, 1])"
        if base and "hidden" in base
        else ""
    )
    return _table(
        ["variant", *(["what it changes"] if suspects else []), "σ_N", "seeds", *(c[1] for c in cols), "paper"],
        body,
        title=title,
        notes=[
            f"Encoders of the input-noise sweep (σ_enc = 0.5), trained as the baseline{setting} "
            "except for the change named; mean ± std over seeds. Every column but the three ℓ∞ → ℓ2 ones is for the "
            "ℓ2 norm on inputs and codes; the decoder columns are the same σ_N = 0 networks' "
            "decoders (paper: 5.2 ± 0.3); — marks a measure not taken or not defined."
        ],
    )


def sinc_study_provenance(rows: Sequence[Mapping[str, Any]], load_before: str, cpu_s: float) -> list[str]:
    """README lines of a study run beyond the grid's: kernel and CPU, load, CPU time, what was trained."""
    import platform

    trained = [r for r in rows if r["status"] != "cached"]
    levels: dict[str, dict[str, None]] = {}
    for r in rows:
        levels.setdefault(r["variant"], {})[f"{float(r['sigma_n']):g}"] = None
    return [
        "",
        "## This run of the sinc encoder study",
        "",
        f"- system: {' '.join(platform.uname())}",
        f"- CPU: {provenance.cpu_model()}",
        f"- load average (1 min) at the start and at the end: {load_before}, {provenance.load_average()}",
        f"- CPU time of the process: {cpu_s:.0f} s",
        f"- networks: {len(rows)}, of which {len(trained)} trained in this run and {len(rows) - len(trained)} "
        "read from the checkpoint cache (their train_s is the time to load them)",
        "- variants and σ_N: " + "; ".join(f"{name} ({', '.join(sigmas)})" for name, sigmas in levels.items()),
    ]


def sinc_encoder_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The study's table as a Markdown file (sinc-encoder.md)."""
    return "\n".join(_markdown_section(sinc_encoder_table(rows), "#")).rstrip("\n") + "\n"
