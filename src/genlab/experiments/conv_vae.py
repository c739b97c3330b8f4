"""The categorical conv VAE of the chapter conv_vae on 4-bit MNIST: training with bpd curves and
checkpoints, samples from one run at several epochs, the z = 2 data manifold, and result files.

    python -m genlab.experiments.conv_vae --profile smoke|reference|full [--out results/conv_vae]
                                          [--cache DIR] [--no-manifold]

The ``reference`` profile (:mod:`genlab.experiments.reference`) trains on real Fashion-MNIST, long
enough for the bpd curves to flatten, in about twenty minutes on a 2-core CPU; its files are the ones
the chapter shows beside its smoke run.

Pixels are quantised to 16 grey levels (:mod:`genlab.quantize`); the decoder outputs 16 logits per
pixel and the loss is the negative ELBO in bits per dimension, with its reconstruction and KL parts
logged apart. The z = 20 model trains for ``plan.epochs`` epochs (80 in the full profile) and is
checkpointed (:func:`genlab.train.save_checkpoint`) at ``plan.snapshots`` (before training, after
10 and after 80 epochs in the full profile), so the sample grids of all three stages come from one
run. The validation images are the last ``plan.n_val`` of the training split.

The notebook calls :func:`train_with_snapshots` with the student's loss functions; the command line
passes genlab's. Files written to ``<out>/<profile>/``: ``curves.csv`` (one row per epoch),
``summary.csv`` / ``summary.md`` (the measured bpd; on MNIST beside the figures of the exercise
this chapter follows: about 4 bpd at the start, below 2.0 after 2 epochs, about 0.52 after 80),
``curves.png``, ``samples.png`` (ten samples per snapshot), ``manifold.png`` (the z = 2 model's
grid of mean images) and ``README.md`` (command, commit, machine, wall times).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

import matplotlib
import torch
from torch import nn

import genlab
from genlab.data import TensorData, load
from genlab.experiments import provenance, reference
from genlab.latent import manifold_codes
from genlab.models.conv import CategoricalConvVAE
from genlab.quantize import quantize
from genlab.train import History, atomic_write, cache_dir, fit, load_checkpoint, save_checkpoint

Terms = Callable[..., torch.Tensor]


class LossTerms(TypedDict):
    """The functions a conv VAE's loss is computed with (a notebook passes its own answers)."""

    nll: Terms
    bpd: Terms
    kl: Terms
    sample: Terms


#: The figures (train bpd on MNIST) of the exercise this chapter follows, by epoch (0 = the start).
REFERENCE_BPD = {0: ("about 4", 4.0), 2: ("below 2.0", 2.0), 80: ("about 0.52", 0.52)}


@dataclass(frozen=True)
class Plan:
    """How much work one profile does."""

    profile: str
    n_train: int | None  # training images (None: the whole training split but the validation images)
    n_val: int
    n_test: int | None  # test images (None: all)
    epochs: int
    snapshots: tuple[int, ...]  # epochs after which the model is checkpointed (0: before training)
    manifold_epochs: int
    batch: int = 128
    lr: float = 1e-3
    nz: int = 20
    hidden: int = 32
    levels: int = 16
    manifold_n: int = 10  # the manifold's grid is manifold_n x manifold_n (10: legible at page width)
    data: str = "mnist"  # what load_splits loads: "mnist" (a printed stand-in in smoke) or "fashion-mnist"
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: leave torch's setting)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def config(self, nz: int | None = None, epochs: int | None = None) -> dict[str, Any]:
        """What a checkpoint must have been trained with to be reused for this plan."""
        return {
            "model": "CategoricalConvVAE",
            "nz": self.nz if nz is None else nz,
            "hidden": self.hidden,
            "levels": self.levels,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "batch": self.batch,
            "lr": self.lr,
            "epochs": self.epochs if epochs is None else epochs,
            "seed": self.seed,
            "data": self.data,
        }

    @property
    def on_mnist(self) -> bool:
        """Whether the exercise's MNIST figures apply (never to another data set, a stand-in included)."""
        return self.data == "mnist"


def make_plan(profile: str, *, grading: bool = False) -> Plan:
    """The plan of a profile: ``full`` is the exercise's (all of MNIST, 80 epochs, snapshots 0/10/80);
    ``reference`` 20 000 Fashion-MNIST images for 12 epochs; ``full-dry`` the full plan on a small folder
    for 2 epochs; ``smoke`` a few thousand images for two epochs; ``grading`` the least the notebook's
    later cells need."""
    if profile not in (*genlab.runtime.PROFILES, reference.PROFILE):
        raise ValueError(
            f"profile must be one of {', '.join((*genlab.runtime.PROFILES, reference.PROFILE))}, got {profile!r}"
        )
    if grading:
        return Plan(
            profile,
            n_train=256,
            n_val=128,
            n_test=128,
            epochs=1,
            snapshots=(0, 1),
            manifold_epochs=1,
            batch=64,
            threads=1 if genlab.device().type == "cpu" else None,
            notes=("grading run: 256 training images, one epoch",),
        )
    if profile == "full":
        return Plan(
            profile,
            n_train=None,
            n_val=5000,
            n_test=None,
            epochs=80,
            snapshots=(0, 10, 80),
            manifold_epochs=40,
            manifold_n=20,
        )
    if profile == reference.PROFILE:
        return Plan(
            profile,
            n_train=20_000,
            n_val=2000,
            n_test=5000,
            epochs=12,
            snapshots=(0, 2, 12),
            manifold_epochs=6,
            batch=64,
            lr=2e-3,
            threads=1,
            data="fashion-mnist",
            notes=(
                "reference profile: real Fashion-MNIST (MNIST is not available offline), 20 000 training images, "
                "12 epochs, batches of 64, learning rate 2e-3; snapshots before training and after 2 and 12 epochs",
                "the exercise's figures (about 4, below 2.0 after 2 epochs, about 0.52 after 80) are for MNIST: "
                "Fashion-MNIST's clothes are harder to compress, so they are context, not a target",
                "one CPU thread: small convolutions gain little from more, and shared cores slow them down",
            ),
        )
    if profile == "full-dry":
        return Plan(
            profile,
            n_train=None,
            n_val=32,
            n_test=None,
            epochs=2,
            snapshots=(0, 1, 2),
            manifold_epochs=1,
            notes=("full-dry run: the full plan's model, batches and loaders on a small MNIST folder, 2 epochs",),
        )
    return Plan(
        profile,
        n_train=4000,
        n_val=500,
        n_test=1000,
        epochs=2,
        snapshots=(0, 1, 2),
        manifold_epochs=2,
        batch=32,
        lr=3e-3,
        threads=1,
        notes=(
            "smoke profile: 4000 training images, 2 epochs, batches of 32 and learning rate 3e-3 "
            "(more, larger steps for a short run); snapshots after 0, 1 and 2 epochs",
            "MNIST is replaced by Fashion-MNIST where it is not installed (printed when it happens)",
            "one CPU thread: small convolutions gain little from more, and shared cores slow them down",
        ),
    )


def load_splits(plan: Plan, device: torch.device | None = None) -> tuple[TensorData, TensorData, TensorData]:
    """Training, validation (the last ``n_val`` training images) and test images, as uint8 tensors."""
    full = load(plan.data, train=True, device=device)
    if plan.n_val >= len(full):
        raise ValueError(f"n_val={plan.n_val} leaves no training images out of {len(full)}")
    cut = len(full) - plan.n_val
    train = replace(full, x=full.x[:cut], y=None if full.y is None else full.y[:cut])
    val = replace(full, x=full.x[cut:], y=None if full.y is None else full.y[cut:])
    if plan.n_train is not None:
        train = train.subset(plan.n_train)
    test = load(plan.data, train=False, subset=plan.n_test, device=device)
    return train, val, test


# ----------------------------------------------------------------------------------------------
# loss terms, evaluation, training


def vae_terms(
    model: CategoricalConvVAE, levels: torch.Tensor, *, nll: Terms, bpd: Terms, kl: Terms, sample: Terms
) -> dict[str, torch.Tensor]:
    """The negative ELBO of a batch of integer levels in bits per dimension (``loss``), and its
    reconstruction (``rec``) and KL (``kl``) parts, all through the given functions:
    ``nll(logits, levels)`` and ``kl(mu, logstd)`` give nats per example, ``bpd(nats, images)``
    the batch's bits per dimension, ``sample(mu, logstd)`` a code."""
    mu, logstd = model.encode(levels)
    rec = nll(model.decode(sample(mu, logstd)), levels)
    reg = kl(mu, logstd)
    return {"loss": bpd(rec + reg, levels), "rec": bpd(rec.detach(), levels), "kl": bpd(reg.detach(), levels)}


@torch.no_grad()
def evaluate(
    model: CategoricalConvVAE, data: TensorData, *, levels: int, batch: int = 500, **fns: Terms
) -> dict[str, float]:
    """Mean bpd terms (``loss``, ``rec``, ``kl``) over a whole split, one sampled code per image."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for x, _ in data.batches(batch, shuffle=False):
        terms = vae_terms(model, quantize(x, levels), **fns)
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(x)
    model.train(was_training)
    return {key: value / len(data) for key, value in sums.items()}


@dataclass
class Run:
    """One training run: a row per epoch (epoch 0 is before training), the step history and where
    the snapshots are."""

    rows: list[dict[str, float]]
    history: History
    checkpoints: dict[int, Path]
    config: dict[str, Any]
    seconds: float

    @property
    def first_step_bpd(self) -> float:
        return self.history.steps["loss"][0] if self.history.steps.get("loss") else math.nan


def checkpoint_path(folder: Path, config: Mapping[str, Any], epoch: int) -> Path:
    return Path(folder) / f"z{config['nz']}_epoch{epoch:03d}.pt"


def train_with_snapshots(
    model: CategoricalConvVAE,
    train: TensorData,
    val: TensorData,
    plan: Plan,
    folder: str | os.PathLike,
    *,
    nll: Terms,
    bpd: Terms,
    kl: Terms,
    sample: Terms,
    epochs: int | None = None,
    snapshots: Sequence[int] | None = None,
    desc: str = "conv VAE",
) -> Run:
    """Train ``model`` with Adam on the negative ELBO in bpd, evaluating the validation split after
    every epoch and checkpointing after the epochs in ``snapshots`` (0: before training)."""
    epochs = plan.epochs if epochs is None else epochs
    snapshots = tuple(plan.snapshots if snapshots is None else snapshots)
    config = plan.config(nz=getattr(model, "nz", plan.nz), epochs=epochs)
    fns: LossTerms = {"nll": nll, "bpd": bpd, "kl": kl, "sample": sample}
    folder = Path(folder)
    checkpoints: dict[int, Path] = {}
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr)
    start = time.perf_counter()

    def row(epoch: int, history: History | None) -> dict[str, float]:
        out: dict[str, float] = {"epoch": epoch}
        for key in ("loss", "rec", "kl"):
            out[f"train_{key}"] = history.epochs[key][-1] if history is not None else math.nan
        out.update({f"val_{k}": v for k, v in evaluate(model, val, levels=plan.levels, **fns).items()})
        return out

    def snapshot(epoch: int, history: History | None) -> None:
        if epoch in snapshots:
            checkpoints[epoch] = save_checkpoint(
                checkpoint_path(folder, config, epoch),
                model,
                config=config,
                seed=plan.seed,
                epoch=epoch,
                history=history,
            )

    rows = [row(0, None)]
    snapshot(0, None)

    def on_epoch_end(epoch: int, history: History) -> None:
        rows.append(row(epoch + 1, history))
        snapshot(epoch + 1, history)

    def step(_: nn.Module, batch: tuple[torch.Tensor, Any]) -> dict[str, torch.Tensor]:
        return vae_terms(model, quantize(batch[0], plan.levels), **fns)

    history = fit(
        model,
        step,
        lambda: train.batches(plan.batch),
        epochs=epochs,
        optimizer=optimizer,
        desc=desc,
        on_epoch_end=on_epoch_end,
    )
    return Run(rows, history, checkpoints, config, time.perf_counter() - start)


@torch.no_grad()
def snapshot_samples(model: CategoricalConvVAE, run: Run, n: int = 64, seed: int = 0) -> dict[int, torch.Tensor]:
    """``n`` samples from every checkpoint of ``run``, all from the same codes and pixel noise;
    the model is left with the weights of its last checkpoint."""
    device = next(model.parameters()).device
    z = torch.randn(n, model.nz, generator=torch.Generator().manual_seed(seed)).to(device)
    out = {}
    for epoch, path in sorted(run.checkpoints.items()):
        load_checkpoint(path, model, config=run.config)
        out[epoch] = model.sample(z, generator=torch.Generator().manual_seed(seed + 1)).cpu()
    return out


# ----------------------------------------------------------------------------------------------
# tables and figures


def summary_rows(run: Run, test: Mapping[str, float], *, on_mnist: bool = True) -> list[dict[str, str]]:
    """The measured bpd as rows of text: on MNIST beside the exercise's figures (``reference``), on any
    other data alone, at the start, after epoch 2 and after the last epoch."""
    by_epoch = {int(r["epoch"]): r for r in run.rows}
    last = max(by_epoch)

    def measured(epoch: int) -> str:
        if epoch == 0:
            return f"{run.first_step_bpd:.3f} (first step)"
        return f"{by_epoch[epoch]['train_loss']:.3f}" if epoch in by_epoch else f"not run (last epoch {last})"

    def quantity(epoch: int) -> str:
        return f"train bpd {'at the start' if epoch == 0 else f'after epoch {epoch}'}"

    if on_mnist:
        rows = [
            {"quantity": quantity(e), "reference": ref, "measured": measured(e)}
            for e, (ref, _) in REFERENCE_BPD.items()
        ]
    else:
        rows = [{"quantity": quantity(e), "measured": measured(e)} for e in sorted({0, *({2, last} & set(by_epoch))})]
    blank = {"reference": ""} if on_mnist else {}
    rows += [
        {"quantity": f"validation bpd after epoch {last}", **blank, "measured": f"{by_epoch[last]['val_loss']:.3f}"},
        {"quantity": "test bpd (negative ELBO)", **blank, "measured": f"{test['loss']:.3f}"},
        {"quantity": "  of which reconstruction", **blank, "measured": f"{test['rec']:.3f}"},
        {"quantity": "  of which KL", **blank, "measured": f"{test['kl']:.3f}"},
    ]
    return rows


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of equal keys as a fixed-width text table."""
    keys = list(rows[0])
    cells = [[str(k) for k in keys]] + [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(keys))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def plot_curves(rows: Sequence[Mapping[str, float]], *, title: str, ax: Any = None, reference: bool = True) -> Any:
    """Training and validation bpd per epoch (epoch 0: before training) with the reference figures."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    epochs = [r["epoch"] for r in rows]
    marker = "o" if len(rows) <= 30 else None
    styles = {"loss": ("negative ELBO", "-"), "rec": ("reconstruction", "--"), "kl": ("KL", ":")}
    for key, (name, line) in styles.items():
        ax.plot(
            epochs[1:], [r[f"train_{key}"] for r in rows[1:]], line, marker=marker, color="C0", label=f"train: {name}"
        )
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], line, marker=marker, color="C1", label=f"validation: {name}")
    if reference:
        shown = [(e, v) for e, (_, v) in REFERENCE_BPD.items() if e <= max(epochs)]
        ax.plot([e for e, _ in shown], [v for _, v in shown], "k*", markersize=10, label="reference (train)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_title(title)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("bits per dimension")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, ncol=2)
    return ax


def plot_snapshots(samples: Mapping[int, torch.Tensor], *, title: str, per_row: int = 10) -> Any:
    """The first ``per_row`` samples of every checkpoint, one row per checkpoint (7.5 inches wide)."""
    import matplotlib.pyplot as plt

    from genlab.plotting import image_grid

    fig, axes = plt.subplots(len(samples), 1, figsize=(7.5, 1.2 * len(samples) + 0.5), squeeze=False)
    for ax, (epoch, images) in zip(axes[:, 0], sorted(samples.items())):
        stage = "before training" if epoch == 0 else f"after {epoch} epoch{'s' * (epoch > 1)}"
        image_grid(images[:per_row], nrow=per_row, title=stage, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# command line


def write_provenance(
    out_dir: Path,
    argv: Sequence[str],
    seconds: Mapping[str, float],
    plan: Plan,
    data_note: str,
    load: Sequence[str] = (),
) -> Path:
    """A README beside the results: the command, the commit and the machine that made them."""
    lines = [
        f"# Results of the {plan.profile} profile",
        "",
        f"- command: `python -m genlab.experiments.conv_vae {' '.join(argv)}`",
        f"- commit: {provenance.git_commit()}",
        f"- machine: {provenance.machine(genlab.device())}"
        + (f"; load average {' -> '.join(load)} (start -> end, 1 min)" if load else ""),
        f"- data: {data_note}",
        f"- plan: z = {plan.nz}, {plan.levels} grey levels, {plan.epochs} epochs, snapshots {list(plan.snapshots)}, "
        f"batch {plan.batch}, Adam lr {plan.lr}, seed {plan.seed}; z = 2 manifold model {plan.manifold_epochs} epochs",
        f"- time: {sum(seconds.values()) / 60:.0f} min wall clock ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        + ")",
        "",
    ]
    lines += [f"- {n}" for n in plan.notes]
    path = out_dir / "README.md"
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    return path


def default_cache() -> Path:
    """Where this chapter's checkpoints are kept by default (:func:`genlab.train.cache_dir`)."""
    return cache_dir("conv_vae")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m genlab.experiments.conv_vae", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile", choices=(*genlab.runtime.PROFILES, reference.PROFILE), default=genlab.profile().name
    )
    parser.add_argument("--out", default="results/conv_vae")
    parser.add_argument("--cache", default=str(default_cache()), help="checkpoint folder")
    parser.add_argument("--no-manifold", action="store_true", help="skip the z = 2 model")
    provenance.add_dirty_flag(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab.losses import batch_bpd, categorical_nll, gaussian_kl
    from genlab.models.mlp import reparameterize
    from genlab.plotting import data_label, figure_png, image_grid

    plan = make_plan(args.profile)
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    device = genlab.device()
    fns: LossTerms = {"nll": categorical_nll, "bpd": batch_bpd, "kl": gaussian_kl, "sample": reparameterize}
    out_dir = Path(args.out) / plan.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.cache) / plan.profile
    seconds: dict[str, float] = {}
    load = [provenance.load_average()]

    train, val, test = load_splits(plan, device)
    label = data_label(train)
    on_mnist = plan.on_mnist and not train.stand_in
    data_note = f"{label}; {len(train)} training, {len(val)} validation, {len(test)} test images"
    genlab.seed_everything(plan.seed)
    model = CategoricalConvVAE.build(plan.nz, plan.levels, plan.hidden).to(device)
    run = train_with_snapshots(model, train, val, plan, ckpt, desc=f"z = {plan.nz}", **fns)
    seconds["z = 20 training"] = run.seconds
    test_terms = evaluate(model, test, levels=plan.levels, **fns)
    provenance.write_csv(out_dir / "curves.csv", run.rows, ".5f")
    summary = summary_rows(run, test_terms, on_mnist=on_mnist)
    provenance.write_csv(out_dir / "summary.csv", summary)
    atomic_write(out_dir / "summary.md", lambda tmp: tmp.write_text(markdown_table(summary) + "\n"))
    print(text_table(summary))

    ax = plot_curves(
        run.rows, title=f"Conv VAE, z = {plan.nz}, {label}: bits per dimension ({plan.profile})", reference=on_mnist
    )
    ax.figure.tight_layout()
    figure_png(ax.figure, out_dir / "curves.png", dpi=100)
    plt.close(ax.figure)
    fig = plot_snapshots(
        snapshot_samples(model, run, n=10), title=f"Samples of ten codes at three stages, {label} ({plan.profile})"
    )
    figure_png(fig, out_dir / "samples.png", dpi=100)
    plt.close(fig)

    if not args.no_manifold:
        genlab.seed_everything(plan.seed + 1)
        small = CategoricalConvVAE.build(2, plan.levels, plan.hidden).to(device)
        run2 = train_with_snapshots(
            small, train, val, plan, ckpt, epochs=plan.manifold_epochs, snapshots=(), desc="z = 2", **fns
        )
        seconds["z = 2 training"] = run2.seconds
        with torch.no_grad():
            images = small.mean_image(manifold_codes(plan.manifold_n, device=device)).cpu()
        fig, ax = plt.subplots(figsize=(7, 7.3))
        image_grid(
            images,
            nrow=plan.manifold_n,
            ax=ax,
            title=f"z = 2, {label}: mean images on a {plan.manifold_n} x {plan.manifold_n} grid of normal quantiles",
        )
        ax.set_xlabel("z1 (left to right)")
        ax.set_ylabel("z2 (bottom to top)")
        fig.tight_layout()
        figure_png(fig, out_dir / "manifold.png", dpi=100)
        plt.close(fig)
    load.append(provenance.load_average())
    write_provenance(out_dir, argv, seconds, plan, data_note, load)
    print(f"results in {out_dir}: " + ", ".join(sorted(p.name for p in out_dir.iterdir())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
