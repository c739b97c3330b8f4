"""The experiment of the chapter "From autoencoders to conditional VAEs" from a terminal.

    python -m genlab.experiments.ae_to_cvae --profile reference|smoke [--out results/ae_to_cvae]

It trains the chapter's models with genlab's references (:mod:`genlab.models.mlp`,
:func:`genlab.losses.vae_loss`): the auto-encoder, the VAE for every beta of the sweep and the CVAE,
with the notebook's recipe (Adam, 32 latent dimensions, the same seeds). The ``reference`` profile
(:mod:`genlab.experiments.reference`) is the chapter's full recipe, all 60 000 training images for 20
epochs, on real Fashion-MNIST (MNIST is not available offline), a quarter of an hour on a 2-core CPU.

Files written to ``<out>/<profile>/``: ``sweep.csv`` (test BCE of the mean reconstruction, KL and
their sum per beta, and the auto-encoder's BCE), ``codes.csv`` (the spread of the auto-encoder's
codes), ``ae.png`` (its reconstructions and its decoder on prior codes), ``sweep.png`` (per beta:
reconstructions and samples), ``interpolation.png`` (AE against VAE paths), ``cvae.png`` (one class per
row, one shared code per column) and ``README.md`` (command, commit, machine, time).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import genlab
from genlab.data import TensorData, to_float
from genlab.experiments import provenance, reference
from genlab.train import fit

#: The classes of Fashion-MNIST, the data of every profile of this runner.
CLASSES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
#: The notebook's interpolation pairs (first test image of each class).
PAIRS = ((1, 0), (4, 9), (3, 8))


@dataclass(frozen=True)
class Plan:
    """How much one profile trains; the recipe is the notebook's."""

    profile: str
    n_train: int
    n_test: int
    epochs: int
    batch: int
    lr: float
    betas: tuple[float, ...]
    nz: int = 32
    good_beta: float = 1.0


def make_plan(profile: str) -> Plan:
    """``reference``: the chapter's full recipe on Fashion-MNIST; ``smoke``: the notebook's smoke sizes."""
    if profile == reference.PROFILE:
        return Plan(profile, 60_000, 10_000, 20, 128, 1e-3, (0.0, 0.1, 0.3, 1.0, 3.0, 10.0))
    if profile == "smoke":
        return Plan(profile, 10_000, 1000, 4, 64, 3e-3, (0.0, 0.1, 1.0, 10.0))
    raise ValueError(f"profile must be 'smoke' or 'reference', got {profile!r}")


def bce_per_image(probs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every image, summed over its pixels (nats)."""
    return F.binary_cross_entropy(probs, x.reshape(probs.shape), reduction="none").sum(1)


@torch.no_grad()
def test_terms(reconstruct, encode, data: TensorData) -> tuple[float, float]:
    """Mean test BCE of ``reconstruct(x)`` and mean KL of ``encode(x) = (mu, logstd)`` (0 without it), nats."""
    from genlab.losses import gaussian_kl

    bce = kl = 0.0
    for x, _ in data.batches(1000, shuffle=False):
        bce += float(bce_per_image(reconstruct(x), x).sum())
        if encode is not None:
            kl += float(gaussian_kl(*encode(x)).sum())
    return bce / len(data), kl / len(data)


def train(model: nn.Module, step, data: TensorData, plan: Plan, seed: int, desc: str) -> float:
    """Adam with the plan's learning rate for the plan's epochs; returns the seconds it took."""
    genlab.seed_everything(seed)
    start = time.perf_counter()
    fit(
        model,
        step,
        lambda: data.batches(plan.batch),
        epochs=plan.epochs,
        optimizer=torch.optim.Adam(model.parameters(), lr=plan.lr),
        desc=desc,
    )
    model.eval()
    return time.perf_counter() - start


def run(plan: Plan, out: Path, command: str) -> Path:
    """Train and measure every model of the chapter; write the tables, figures and README to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab.losses import vae_loss
    from genlab.models.mlp import CVAE, VAE, AutoEncoder
    from genlab.plotting import data_label, figure_png, image_grid

    device = genlab.device()
    out.mkdir(parents=True, exist_ok=True)
    load_start = provenance.load_average()
    train_data = reference.load_fashion(True, subset=plan.n_train, device=device)
    test_data = reference.load_fashion(False, subset=plan.n_test, device=device)
    label = data_label(train_data)
    seconds: dict[str, float] = {}

    def vae_step(beta: float, conditional: bool = False):
        def step(model, batch):
            x, y = batch
            recon, mu, logstd = model(x, y) if conditional else model(x)
            return vae_loss(recon, x, mu, logstd, beta)

        return step

    ae = AutoEncoder(plan.nz).to(device)
    seconds["AE"] = train(ae, lambda m, b: bce_per_image(m(b[0]), b[0]).mean(), train_data, plan, 1, "auto-encoder")
    vaes: dict[float, VAE] = {}
    for beta in plan.betas:
        vaes[beta] = VAE(plan.nz).to(device)
        seconds[f"VAE beta={beta:g}"] = train(vaes[beta], vae_step(beta), train_data, plan, 2, f"VAE beta={beta:g}")
    cvae = CVAE(plan.nz).to(device)
    seconds["CVAE"] = train(cvae, vae_step(plan.good_beta, conditional=True), train_data, plan, 3, "CVAE")

    def mean_reconstruction(vae: VAE):
        return lambda x: vae.decoder(vae.encode(x)[0])

    rows: list[dict[str, object]] = [
        {"model": "auto-encoder", "beta": "", "test BCE": test_terms(ae, None, test_data)[0], "KL": "", "BCE + KL": ""}
    ]
    for beta, vae in vaes.items():
        bce, kl = test_terms(mean_reconstruction(vae), vae.encode, test_data)
        rows.append({"model": "VAE", "beta": f"{beta:g}", "test BCE": bce, "KL": kl, "BCE + KL": bce + kl})
    provenance.write_csv(out / "sweep.csv", rows, ".2f")
    with torch.no_grad():
        codes = ae.encoder(to_float(test_data.x))
    means, stds = codes.mean(0), codes.std(0)
    provenance.write_csv(
        out / "codes.csv",
        [
            {"statistic": "mean", "min": float(means.min()), "max": float(means.max())},
            {"statistic": "std", "min": float(stds.min()), "max": float(stds.max())},
        ],
        ".3f",
    )

    x_first, _ = next(test_data.batches(10, shuffle=False))
    prior = torch.randn(10, plan.nz, generator=torch.Generator().manual_seed(0)).to(device)

    with torch.no_grad():
        fig, axes = plt.subplots(3, 1, figsize=(7.5, 3.8))
        image_grid(x_first, nrow=10, title="test images", ax=axes[0])
        image_grid(ae(x_first), nrow=10, title="auto-encoder reconstructions", ax=axes[1])
        image_grid(ae.decoder(prior), nrow=10, title="auto-encoder decoder on codes drawn from N(0, I)", ax=axes[2])
        fig.suptitle(f"The auto-encoder, {label}")
        fig.tight_layout()
        figure_png(fig, out / "ae.png", dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(2 * len(vaes), 1, figsize=(7.5, 1.25 * 2 * len(vaes) + 0.4))
        for k, (beta, vae) in enumerate(vaes.items()):
            image_grid(
                mean_reconstruction(vae)(x_first), nrow=10, title=f"beta = {beta:g}: reconstructions", ax=axes[2 * k]
            )
            image_grid(vae.decoder(prior), nrow=10, title=f"beta = {beta:g}: samples", ax=axes[2 * k + 1])
        fig.suptitle(f"The beta sweep, {label} (the test images are those of the first figure)")
        fig.tight_layout()
        figure_png(fig, out / "sweep.png", dpi=100)
        plt.close(fig)

        good = vaes[plan.good_beta]
        fig, axes = plt.subplots(2 * len(PAIRS), 1, figsize=(7.5, 1.25 * 2 * len(PAIRS) + 0.4))
        for k, (a, b) in enumerate(PAIRS):
            xa, xb = (first_of_class(test_data, c) for c in (a, b))
            t = torch.linspace(0, 1, 10, device=device).unsqueeze(1)
            za, zb = ae.encoder(xa), ae.encoder(xb)
            ma, mb = good.encode(xa)[0], good.encode(xb)[0]
            for j, (name, decoded) in enumerate(
                (
                    ("AE", ae.decoder(za + t * (zb - za))),
                    (f"VAE (beta = {plan.good_beta:g})", good.decoder(ma + t * (mb - ma))),
                )
            ):
                image_grid(
                    torch.cat([xa.flatten(1), decoded, xb.flatten(1)]),
                    nrow=12,
                    title=f"{name}: {CLASSES[a]} to {CLASSES[b]}",
                    ax=axes[2 * k + j],
                )
        fig.suptitle(f"Straight paths between two codes, {label}")
        fig.tight_layout()
        figure_png(fig, out / "interpolation.png", dpi=100)
        plt.close(fig)

        z_columns = torch.randn(10, plan.nz, generator=torch.Generator().manual_seed(1)).to(device)
        labels = torch.arange(10, device=device).repeat_interleave(10)
        fig, ax = plt.subplots(figsize=(7.5, 7.9))
        image_grid(cvae.decode(z_columns.repeat(10, 1), labels), nrow=10, ax=ax, title=f"CVAE samples, {label}")
        ax.set_yticks([16 + 30 * c for c in range(10)], list(CLASSES))
        ax.set_ylabel("requested class")
        ax.set_xlabel("code z (the same in every row)")
        fig.tight_layout()
        figure_png(fig, out / "cvae.png", dpi=100)
        plt.close(fig)

    reference.write_readme(
        out,
        title=f"Reference run of the chapter ae_to_cvae ({label})",
        command=command,
        data=f"{label}, {len(train_data)} training and {len(test_data)} test images",
        settings=[
            f"recipe: {plan.epochs} epochs, batches of {plan.batch}, Adam lr {plan.lr:g}, {plan.nz} latent dimensions, "
            f"betas {', '.join(f'{b:g}' for b in plan.betas)}; the CVAE with beta = {plan.good_beta:g}",
        ],
        seconds=seconds,
        load_average=[load_start, provenance.load_average()],
        notes=[
            "Files: sweep.csv, codes.csv, ae.png, sweep.png, interpolation.png, cvae.png. The test BCE is that of "
            "the mean reconstruction (the decoded posterior mean), in nats per image.",
        ],
    )
    return out


def first_of_class(data: TensorData, label: int) -> torch.Tensor:
    """The first image of ``data`` with this label, as a float batch of one."""
    if data.y is None:
        raise ValueError(f"{data.name} has no labels")
    index = int((data.y == label).nonzero()[0, 0])
    return to_float(data.x[index : index + 1])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m genlab.experiments.ae_to_cvae", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", choices=("smoke", reference.PROFILE), default=reference.PROFILE)
    parser.add_argument("--out", type=Path, default=Path("results/ae_to_cvae"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (small MLPs gain little from more)")
    provenance.add_dirty_flag(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty)
    torch.set_num_threads(args.threads)
    plan = make_plan(args.profile)
    out = run(plan, args.out / plan.profile, "python -m genlab.experiments.ae_to_cvae " + " ".join(argv))
    print(f"results in {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
