"""The maximum-damage attack on the image models."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import genlab
from genlab.experiments import provenance
from genlab.experiments.harmonic.data import Dataset, load_dataset
from genlab.experiments.harmonic.plan import Plan, comparable, data_title, with_plan_threads
from genlab.experiments.harmonic.tables import _markdown_section, _table, fmt
from genlab.experiments.harmonic.training import StepFn, run_config, train_or_load
from genlab.experiments.harmonic_reference import ATTACK_PAPER, ATTACK_REPRO_2022
from genlab.models import harmonic as H


def log_likelihood_degradation(x: torch.Tensor, clean: torch.Tensor, attacked: torch.Tensor) -> torch.Tensor:
    """Relative change of the Gaussian log-likelihood of ``x`` from the clean to the attacked reconstruction.

    With the decoder's likelihood ``log p(x | x_hat) = -||x - x_hat||^2 + const`` (the training loss),
    this is ``(log p(x | attacked) - log p(x | clean)) / |log p(x | clean)|`` without the constants:
    0 for no harm, -1 when the squared error doubles.
    """
    e_clean = H.squared_error(clean, x)
    e_att = H.squared_error(attacked, x)
    return -(e_att - e_clean) / e_clean


def attack_pair(
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    plan: Plan,
    seed: int = 0,
    methods: Sequence[str] = ("pgd", "lbfgs"),
    project: Callable | None = None,
) -> list[dict[str, Any]]:
    """Maximum-damage attack (projected gradient ascent and L-BFGS-B) on one encoder/decoder pair, per radius.

    ``project`` replaces genlab's projection onto the L2 ball in the gradient ascent.
    """
    from genlab import attacks

    x = x.flatten(1)
    with torch.no_grad():
        clean = decoder(encoder(x))
    rows = []
    for radius in plan.attack_radii:
        for method in methods:
            t0 = time.perf_counter()
            if method == "pgd":
                delta, damage = attacks.maximum_damage_attack(
                    encoder,
                    decoder,
                    x,
                    radius,
                    steps=plan.attack_steps,
                    restarts=plan.attack_restarts,
                    lr=plan.attack_lr,
                    generator=torch.Generator(device=x.device).manual_seed(seed),
                    project=project,
                )
            else:
                delta, damage = attacks.lbfgs_damage(
                    encoder, decoder, x, radius, maxiter=plan.lbfgs_iters, generator=torch.Generator().manual_seed(seed)
                )
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                attacked = decoder(encoder(x + delta))
            rows.append(
                {
                    "radius": radius,
                    "method": method,
                    "seconds": round(seconds, 3),
                    "damage_mean": float(torch.as_tensor(damage).float().mean()),
                    "delta_norm_max": float(delta.flatten(1).norm(dim=1).max()),
                    "clean_sse": float(H.squared_error(clean, x).mean()),
                    "degradation": float(log_likelihood_degradation(x, clean, attacked).mean()),
                }
            )
    return rows


def attack_target(
    plan: Plan, cache: str | os.PathLike, *, device: torch.device | None = None, step: StepFn | None = None
) -> tuple[H.HarmonicVAE, Dataset]:
    """The attacked network, sigma_enc = 1.0 on ``plan.attack_dataset`` (first seed), and its data."""
    data = load_dataset(plan.attack_dataset, plan, device or genlab.device())
    cfg = run_config(plan, data, "sigma_enc", 1.0, plan.seeds[0], step=step)
    model, _ = train_or_load(cfg, data, Path(cache) / plan.profile, step)
    return model, data


@with_plan_threads
def run_attack(
    plan: Plan,
    out: str | os.PathLike,
    cache: str | os.PathLike,
    *,
    device: torch.device | None = None,
    step: StepFn | None = None,
    project: Callable | None = None,
) -> list[dict[str, Any]]:
    """Attack the sigma_enc = 1.0 model of ``plan.attack_dataset`` (first seed); write attack.csv/.md."""
    model, data = attack_target(plan, cache, device=device, step=step)
    rows = [
        {"dataset": data.name, "stand_in": data.stand_in or "", **r}
        for r in attack_pair(model.encoder, model.decoder, data.test[: plan.attack_points], plan, project=project)
    ]
    for r in rows:
        r["paper"] = ATTACK_PAPER.get(r["radius"], math.nan)
        r["repro2022"] = ATTACK_REPRO_2022.get(r["radius"], math.nan)
    out_dir = Path(out) / plan.profile
    provenance.write_csv(out_dir / "attack.csv", rows)
    (out_dir / "attack.md").write_text(attack_markdown(rows, plan))
    return rows


def attack_table(rows: Sequence[Mapping[str, Any]], plan: Plan):
    """The attack as a :class:`genlab.plotting.Table`: damage, likelihood loss and time per radius and optimiser."""
    name, stand_in = rows[0]["dataset"], rows[0]["stand_in"]
    beside = comparable(name, stand_in)  # the published numbers only beside a run on their data
    body = [
        [
            f"{r['radius']:g}",
            "projected gradient ascent" if r["method"] == "pgd" else "scipy L-BFGS-B",
            f"{r['damage_mean']:.4g}",
            f"{r['degradation']:.4g}",
            f"{r['seconds']:.3g}",
            *((fmt(r["paper"], math.nan), fmt(r["repro2022"], math.nan)) if beside else ()),
        ]
        for r in rows
    ]
    notes = [
        f"{plan.attack_points} test inputs in [-1, 1]; damage = ‖g(p(x+δ)) − g(p(x))‖₂ with "
        "‖δ‖₂ ≤ C; degradation = relative change of the decoder's Gaussian log-likelihood of x "
        "(see the chapter)."
    ]
    if not beside:
        published = ", ".join(f"{v:.3g} at C = {c:g}" for c, v in ATTACK_PAPER.items())
        notes.append(f"For context, on other data (CIFAR-10), the paper reports a degradation of {published}.")
    return _table(
        [
            "C",
            "optimiser",
            "damage (mean)",
            "degradation (mean)",
            "time (s)",
            *(("paper", "2022 reproduction") if beside else ()),
        ],
        body,
        title=f"Maximum-damage attack on the σ_enc = 1.0 model, {data_title(name, stand_in)}",
        notes=notes,
    )


def attack_markdown(rows: Sequence[Mapping[str, Any]], plan: Plan) -> str:
    """The attack table as a Markdown file (attack.md)."""
    return "\n".join(_markdown_section(attack_table(rows, plan), "#")).rstrip("\n") + "\n"
