"""The 2022 report's defects, re-created one at a time."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab.experiments import provenance
from genlab.experiments.harmonic.attack import attack_pair
from genlab.experiments.harmonic.data import load_dataset
from genlab.experiments.harmonic.estimates import Bounds, cached_estimate, probe_points, with_relu
from genlab.experiments.harmonic.plan import LATENT, NETWORK, SWEEPS, Plan, data_title, with_plan_threads
from genlab.experiments.harmonic.tables import _markdown_section, _table
from genlab.experiments.harmonic.training import StepFn, checkpoint_path, run_config, train_or_load
from genlab.models import harmonic as H


def _defect_step(defect: str, sample_latent: Callable | None = None, kl: Callable | None = None) -> StepFn:
    """A training step with one of the report's loss mistakes, for the sigma_enc sweep (no input noise).

    ``sample_latent`` and ``kl`` default to the package's; a notebook passes its own.
    """
    sample_latent = sample_latent or H.sample_latent
    kl_fn = kl or H.fixed_sigma_kl

    def step(model: H.HarmonicVAE, x: torch.Tensor, sigma_n: float, optimizer: torch.optim.Optimizer) -> float:
        if sigma_n:
            raise ValueError("the defects are re-created on the sigma_enc sweep, which has no input noise")
        mu, s = model.encode(x), model.sigma_enc
        if defect == "sigma-squared":  # the report drew z = mu + sigma^2 eps
            z, kl_term = mu + s**2 * torch.randn_like(mu), kl_fn(mu, s)
        elif defect == "wrong-kl":  # the report's KL: sigma^2 + mu^2 - log(sigma) - 1/2 per dimension
            z, kl_term = sample_latent(mu, s), (s**2 + mu**2 - math.log(s) - 0.5).sum(-1)
        else:
            raise ValueError(f"unknown training defect {defect!r}")
        objective = (H.squared_error(model.decode(z), x) + kl_term).mean()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        return objective.detach().item()

    return step


@with_plan_threads
def run_defects(
    plan: Plan,
    out: str | os.PathLike,
    cache: str | os.PathLike,
    *,
    device: torch.device | None = None,
    step: StepFn | None = None,
    sample_latent: Callable | None = None,
    kl: Callable | None = None,
    bounds: Bounds = Bounds(),
) -> list[dict[str, Any]]:
    """Re-create each defect of the 2022 report and record what it does to the numbers (defects.csv/.md).

    ``step``, ``sample_latent``, ``kl`` and ``bounds`` replace the package's functions (a notebook passes its own).
    """
    device = device or genlab.device()
    cache_dir = Path(cache) / plan.profile
    rows: list[dict[str, Any]] = []
    data = load_dataset(plan.defect_dataset, plan, device)
    points = plan.lower_points
    # 1-2: training mistakes, measured on the decoder of the sigma_enc sweep.
    for defect in ("sigma-squared", "wrong-kl"):
        for value in SWEEPS["sigma_enc"]:
            for seed in plan.defect_seeds:
                pair = {}
                for variant in ("correct", defect):
                    use = step if variant == "correct" else _defect_step(defect, sample_latent, kl)
                    cfg = run_config(
                        plan, data, "sigma_enc", value, seed, None if variant == "correct" else defect, use
                    )
                    model, _ = train_or_load(cfg, data, cache_dir, use)
                    pair[variant] = cached_estimate(
                        checkpoint_path(cache_dir, cfg),
                        "decoder",
                        model.decoder,
                        probe_points(model, "decoder", data, points),
                        plan,
                        bounds,
                    )["lipsdp"]
                rows.append(
                    {
                        "defect": defect,
                        "dataset": data.name,
                        "stand_in": data.stand_in or "",
                        "network": "decoder",
                        "setting": f"sigma_enc={value}",
                        "seed": seed,
                        "measure": "LipSDP",
                        "correct": pair["correct"],
                        "defective": pair[defect],
                    }
                )
    # 3: LipSDP told the sigmoid's slope lies in [0, 1] instead of [0, 1/4].
    from genlab import lipschitz

    for sweep in SWEEPS:
        for value in SWEEPS[sweep]:
            seed = plan.defect_seeds[0]
            cfg = run_config(plan, data, sweep, value, seed, step=step)
            model, _ = train_or_load(cfg, data, cache_dir, step)
            net = getattr(model, NETWORK[sweep])
            right = cached_estimate(
                checkpoint_path(cache_dir, cfg),
                NETWORK[sweep],
                net,
                probe_points(model, NETWORK[sweep], data, points),
                plan,
                bounds,
            )["lipsdp"]
            rows.append(
                {
                    "defect": "slope-1",
                    "dataset": data.name,
                    "stand_in": data.stand_in or "",
                    "network": NETWORK[sweep],
                    "setting": f"{sweep}={value}",
                    "seed": seed,
                    "measure": "LipSDP",
                    "correct": right,
                    "defective": lipschitz.lipsdp(
                        with_relu(net), variant="neuron", method=plan.lipsdp_method, solver_options=plan.lipsdp_options
                    ),
                }
            )
    # 4: the attack run on the encoder of one model and the decoder of another.
    if plan.attack_dataset in LATENT:
        adata = data if plan.attack_dataset == data.name else load_dataset(plan.attack_dataset, plan, device)
        seed = plan.seeds[0]
        by_enc, _ = train_or_load(run_config(plan, adata, "sigma_enc", 1.0, seed, step=step), adata, cache_dir, step)
        by_noise, _ = train_or_load(run_config(plan, adata, "sigma_n", 1.0, seed, step=step), adata, cache_dir, step)
        x = adata.test[: plan.attack_points]
        one = replace(plan, attack_radii=plan.attack_radii[-1:])
        # L-BFGS-B needs no projection, so this runs before a notebook has written its own (section 5).
        (matched,) = attack_pair(by_enc.encoder, by_enc.decoder, x, one, methods=("lbfgs",))
        (mixed,) = attack_pair(by_noise.encoder, by_enc.decoder, x, one, methods=("lbfgs",))
        for measure in ("clean_sse", "damage_mean", "degradation"):
            rows.append(
                {
                    "defect": "mixed-pair",
                    "dataset": adata.name,
                    "stand_in": adata.stand_in or "",
                    "network": "encoder+decoder",
                    "setting": f"C={one.attack_radii[0]:g}",
                    "seed": seed,
                    "measure": measure,
                    "correct": matched[measure],
                    "defective": mixed[measure],
                }
            )
    for r in rows:
        r["ratio"] = r["defective"] / r["correct"] if r["correct"] else math.nan
    out_dir = Path(out) / plan.profile
    provenance.write_csv(out_dir / "defects.csv", rows)
    (out_dir / "defects.md").write_text(defects_markdown(rows, plan))
    return rows


DEFECT_TEXT = {
    "sigma-squared": "z = μ + σ²ε in the reparameterisation (std σ² instead of σ)",
    "wrong-kl": "KL per dimension σ² + μ² − log σ − 1/2 instead of (σ² + μ² − 1)/2 − log σ",
    "slope-1": "LipSDP with slope bounds [0, 1] for the sigmoid instead of [0, 1/4]",
    "mixed-pair": "attack on the encoder of the σ_N = 1.0 model with the decoder of the σ_enc = 1.0 model",
}


def defect_tables(rows: Sequence[Mapping[str, Any]], plan: Plan) -> list:
    """One :class:`genlab.plotting.Table` per defect: the correct number, the defective one and their ratio."""
    tables = []
    for defect in dict.fromkeys(r["defect"] for r in rows):
        body = [
            [
                data_title(r["dataset"], r.get("stand_in")),
                r["network"],
                r["setting"].replace("sigma_enc", "σ_enc").replace("sigma_n", "σ_N"),
                str(r["seed"]),
                r["measure"],
                f"{r['correct']:.4g}",
                f"{r['defective']:.4g}",
                f"{r['ratio']:.3g}",
            ]
            for r in rows
            if r["defect"] == defect
        ]
        tables.append(
            _table(
                ["data", "network", "setting", "seed", "measure", "correct", "defective", "ratio"],
                body,
                title=f"{defect}: {DEFECT_TEXT[defect]} ({plan.profile} profile)",
            )
        )
    return tables


def defects_markdown(rows: Sequence[Mapping[str, Any]], plan: Plan) -> str:
    """The defect tables as one Markdown file (defects.md)."""
    lines = [f"# The 2022 report's defects, re-created ({plan.profile} profile)", ""]
    for table in defect_tables(rows, plan):
        lines += _markdown_section(table)
    return "\n".join(lines).rstrip("\n") + "\n"
