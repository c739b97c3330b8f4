"""The grid: every sweep, dataset and seed trained and measured."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab.experiments.harmonic.data import Dataset, load_dataset
from genlab.experiments.harmonic.estimates import Bounds, cached_estimate, probe_points
from genlab.experiments.harmonic.plan import NETWORK, SWEEPS, Plan, with_plan_threads
from genlab.experiments.harmonic.tables import write_tables
from genlab.experiments.harmonic.training import StepFn, checkpoint_path, run_config, train_or_load
from genlab.models import harmonic as H
from genlab.progress import progress


@dataclass
class GridResult:
    """Per-run records of a grid and how many networks were trained or reused."""

    runs: list[dict[str, Any]]
    trained: int = 0
    reused: int = 0
    seconds: float = 0.0
    paths: list[Path] = field(default_factory=list)


@with_plan_threads
def run_grid(
    plan: Plan,
    out: str | os.PathLike,
    cache: str | os.PathLike,
    *,
    device: torch.device | None = None,
    step: StepFn | None = None,
    bounds: Bounds = Bounds(),
) -> GridResult:
    """Train (or reuse) every network of the plan, estimate its constant four ways, write the tables.

    ``step`` and ``bounds`` replace the package's training step and estimators (a notebook passes its own).
    """
    t0 = time.perf_counter()
    device = device or genlab.device()
    out_dir, cache_dir = Path(out) / plan.profile, Path(cache) / plan.profile
    result = GridResult(runs=[])
    jobs = [(d, s, v, seed) for d in plan.datasets for s in SWEEPS for v in SWEEPS[s] for seed in plan.seeds]
    datasets: dict[str, Dataset] = {}
    for name, sweep, value, seed in progress(jobs, desc="harmonic grid", unit="net", leave=True):
        if name not in datasets:
            datasets[name] = load_dataset(name, plan, device)
        data = datasets[name]
        cfg = run_config(plan, data, sweep, value, seed, step=step)
        t1 = time.perf_counter()
        model, status = train_or_load(cfg, data, cache_dir, step)
        train_s = time.perf_counter() - t1
        result.trained += status != "cached"
        result.reused += status == "cached"
        network = NETWORK[sweep]
        est = cached_estimate(
            checkpoint_path(cache_dir, cfg),
            network,
            getattr(model, network),
            probe_points(model, network, data, plan.lower_points),
            plan,
            bounds,
        )
        with torch.no_grad():
            test_sse = float(H.squared_error(model.reconstruct(data.test), data.test).mean())
        result.runs.append(
            {
                "dataset": name,
                "stand_in": data.stand_in or "",
                "sweep": sweep,
                "network": network,
                "value": value,
                "seed": seed,
                "status": status,
                "train_s": round(train_s, 3),
                "test_sse": test_sse,
                **est,
            }
        )
    result.seconds = time.perf_counter() - t0
    result.paths = write_tables(plan, result.runs, out_dir)
    return result
