"""Training with a checkpoint cache: a network is trained once per config and loaded afterwards."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab.experiments.harmonic.data import Dataset
from genlab.experiments.harmonic.plan import LATENT, SIGMA_ENC_RIGHT, Plan
from genlab.models import harmonic as H
from genlab.progress import progress
from genlab.train import History, load_checkpoint, save_checkpoint

StepFn = Callable[[H.HarmonicVAE, torch.Tensor, float, torch.optim.Optimizer], float]


def _code_fingerprint(fn: Callable) -> str:
    """A short hash of a step function's byte code and of the functions it names.

    A changed exercise answer (a notebook's noisy_step, sample_latent or KL) then invalidates the cache.
    """
    fns = [fn]
    code = getattr(fn, "__code__", None)
    if code is not None:
        scope = getattr(fn, "__globals__", {})
        fns += [scope[n] for n in code.co_names if hasattr(scope.get(n), "__code__")]
    for cell in getattr(fn, "__closure__", None) or ():
        if hasattr(cell.cell_contents, "__code__"):
            fns.append(cell.cell_contents)
    h = hashlib.sha256()
    for f in fns:
        c = getattr(f, "__code__", None)
        h.update(repr((c.co_code, c.co_consts)).encode() if c else repr(f).encode())
    return h.hexdigest()[:12]


def estimates_path(checkpoint: Path) -> Path:
    """The file beside a checkpoint that keeps its networks' estimates."""
    return checkpoint.with_suffix(".estimates.json")


def run_config(
    plan: Plan,
    data: Dataset,
    sweep: str,
    value: float,
    seed: int,
    defect: str | None = None,
    step: StepFn | None = None,
) -> dict[str, Any]:
    """Everything that determines a trained network; a checkpoint is reused only for an equal config.

    The sweep is not part of it: sigma_enc = 0.5 without noise is one network, shared by both sweeps.
    """
    sigma_enc, sigma_n = (value, 0.0) if sweep == "sigma_enc" else (SIGMA_ENC_RIGHT, value)
    return {
        "dataset": data.name,
        "stand_in": data.stand_in,
        "n_train": len(data.train),
        "shape": list(data.shape),
        "sigma_enc": float(sigma_enc),
        "sigma_n": float(sigma_n),
        "seed": seed,
        "latent": LATENT[data.name],
        "hidden": plan.hidden,
        "epochs": plan.epochs[data.name],
        "batch_size": plan.batch_size[data.name],
        "lr": plan.lr,
        "defect": defect,
        "code": _code_fingerprint(step or H.noisy_step),
    }


def checkpoint_path(cache: Path, cfg: Mapping[str, Any]) -> Path:
    """Where the network of ``cfg`` is cached (one file per dataset, stds, seed and defect)."""
    defect = f"-{cfg['defect']}" if cfg["defect"] else ""
    name = f"enc{cfg['sigma_enc']:g}-noise{cfg['sigma_n']:g}-seed{cfg['seed']}{defect}.pt"
    return cache / cfg["dataset"] / name


def train_model(cfg: Mapping[str, Any], data: Dataset, step: StepFn | None = None) -> tuple[H.HarmonicVAE, History]:
    """Train one network of the grid from its config (Adam, shuffled batches, noisy steps)."""
    gen = genlab.seed_everything(int(cfg["seed"]))  # same init for every setting of a seed: paired runs
    model = H.HarmonicVAE(data.shape, cfg["latent"], cfg["sigma_enc"], hidden=cfg["hidden"]).to(data.train.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    step = step or H.noisy_step  # looked up now, so a notebook can plug in its own noisy_step
    history = History()
    n = len(data.train)
    model.train()
    desc = f"{cfg['dataset']} sigma_enc={cfg['sigma_enc']:g} sigma_n={cfg['sigma_n']:g} seed {cfg['seed']}"
    for _ in progress(range(cfg["epochs"]), desc=desc, unit="epoch"):
        order = torch.randperm(n, generator=gen).to(data.train.device)
        steps = 0
        for i in range(0, n, cfg["batch_size"]):
            history.log_step(
                {"loss": step(model, data.train[order[i : i + cfg["batch_size"]]], cfg["sigma_n"], optimizer)}
            )
            steps += 1
        history.close_epoch(steps)
    model.eval()
    return model, history


def train_or_load(
    cfg: Mapping[str, Any], data: Dataset, cache: Path, step: StepFn | None = None
) -> tuple[H.HarmonicVAE, str]:
    """The network of ``cfg``: from its checkpoint when the config matches, else trained and saved.

    Returns the model and ``"cached"``, ``"trained"`` or ``"retrained"`` (config changed or file damaged).
    """
    path = checkpoint_path(cache, cfg)
    status = "trained"
    if path.exists():
        model = H.HarmonicVAE(data.shape, cfg["latent"], cfg["sigma_enc"], hidden=cfg["hidden"])
        try:
            load_checkpoint(path, model, config=cfg)
            return model.to(data.train.device).eval(), "cached"
        except (ValueError, RuntimeError):
            status = "retrained"
    model, history = train_model(cfg, data, step)
    estimates_path(path).unlink(missing_ok=True)  # estimates of the old network are void
    save_checkpoint(path, model, config=cfg, seed=int(cfg["seed"]), epoch=int(cfg["epochs"]), history=history)
    return model, status
