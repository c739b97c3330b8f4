"""The DCGAN chapter's experiment from a terminal: train, measure, and write tables and figures.

    python -m genlab.experiments.dcgan --profile smoke --out results/dcgan/smoke

It trains with genlab's reference steps (:mod:`genlab.gan`) and the sizes of a profile
(:func:`genlab.gan.settings`, shared with the chapter's notebook).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from genlab.experiments import provenance
from genlab.gan import (
    GanHistory,
    activation_maximisation,
    classification_loss,
    dcgan_init,
    discriminator_step,
    fixed_codes,
    generator_step,
    reconstruct,
    reconstruction_error,
    sample,
    settings,
    train_gan,
)
from genlab.runtime import PROFILES


def run_experiment(profile: str, out: Path, *, device: torch.device | None = None) -> dict[str, Any]:
    """The chapter's experiment with the reference pieces; tables and figures written to ``out``.

    Trains the plain DCGAN and the one with a spectrally normalised discriminator on the same
    batches and codes, trains the feature classifier, computes the Frechet-distance curves,
    activation maximisation and the reconstruction of test images. Returns the summary numbers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import genlab
    from genlab import frechet
    from genlab.data import load
    from genlab.models.dcgan import Discriminator, Generator
    from genlab.plotting import image_grid

    s = settings(profile)
    dev = device or genlab.device()
    out.mkdir(parents=True, exist_ok=True)
    train = load("cifar10", train=True, subset=s.n_train, device=dev)
    test = load("cifar10", train=False, subset=s.n_test, device=dev)
    fixed = fixed_codes(64, s.code_size).to(dev)

    runs: dict[str, tuple[Generator, Discriminator, GanHistory]] = {}
    for name, spectral in (("plain", False), ("spectral norm", True)):
        genlab.seed_everything(s.seed)
        G = Generator(s.code_size).to(dev)
        G.apply(dcgan_init)
        D = Discriminator(spectral_norm=spectral, batch_norm=not spectral).to(dev)
        if not spectral:
            D.apply(dcgan_init)
        hist = train_gan(
            G,
            D,
            train,
            d_step=discriminator_step,
            g_step=generator_step,
            settings=s,
            fixed_noise=fixed,
            desc=f"DCGAN ({name})",
        )
        runs[name] = (G, D, hist)

    genlab.seed_everything(s.seed)
    net = frechet.train_feature_net(train, epochs=s.feature_epochs)
    accuracy = frechet.accuracy(net, test)
    real_stats = frechet.feature_stats(net, test.batches(500, shuffle=False))
    floor = frechet.frechet_distance(
        *real_stats, *frechet.feature_stats(net, train.subset(s.n_fake).batches(500, shuffle=False))
    )
    curves = {
        name: frechet.frechet_curve(net, real_stats, Generator(s.code_size).to(dev), hist.snapshots, n=s.n_fake)
        for name, (_, _, hist) in runs.items()
    }

    G, D, hist = runs["plain"]
    _, actmax_images = activation_maximisation(
        G,
        D,
        fixed_codes(s.actmax_codes, s.code_size, seed=1).to(dev),
        classification_loss,
        steps=s.vis_steps,
        lr=s.vis_lr,
    )
    x_test, _ = next(test.batches(s.n_recon, shuffle=False))
    codes = reconstruct(G, x_test, steps=s.vis_steps, lr=s.vis_lr)
    recon_error = float(reconstruction_error(G, codes, x_test).mean())

    # tables
    with open(out / "losses.csv", "w") as f:
        f.write("run,step,d_loss,g_loss\n")
        for name, (_, _, h) in runs.items():
            for i, (d, g) in enumerate(zip(h.d_loss, h.g_loss), 1):
                f.write(f"{name},{i},{d:.6f},{g:.6f}\n")
    with open(out / "frechet.csv", "w") as f:
        f.write("run,step,epoch,frechet_distance\n")
        for name, curve in curves.items():
            per_epoch = runs[name][2].steps_per_epoch
            for step, value in curve:
                f.write(f"{name},{step},{step / per_epoch:.3f},{value:.4f}\n")

    # figures (8 inches wide at most)
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3), sharey=True)
    for ax, (name, (_, _, h)) in zip(axes, runs.items()):
        for key, values in h.smoothed().items():
            ax.plot(range(1, len(values) + 1), values, label=key)
        ax.set_title(f"{name} discriminator: smoothed losses")
        ax.set_xlabel("step")
        ax.set_ylabel("BCE")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 4.3))
    for ax, (name, (_, _, h)) in zip(axes, runs.items()):
        step, images = h.grids[-1]
        image_grid(images, nrow=8, title=f"{name}: fixed noise, step {step}", ax=ax)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for name, curve in curves.items():
        per_epoch = runs[name][2].steps_per_epoch
        ax.plot([st / per_epoch for st, _ in curve], [v for _, v in curve], marker="o", label=name)
    ax.axhline(floor, color="grey", ls=":", label="real vs real (floor)")
    ax.set_yscale("log")
    ax.set_title("Frechet distance on the course classifier's features (not FID)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Frechet distance (log scale)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "frechet.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.2))
    n_side = max(1, int(math.sqrt(s.n_recon)))
    image_grid(x_test, nrow=n_side, title="test images", ax=axes[0])
    image_grid(sample(G, codes), nrow=n_side, title=f"reconstructions (MSE {recon_error:.4f})", ax=axes[1])
    image_grid(actmax_images, nrow=max(1, int(math.sqrt(s.actmax_codes))), title="activation maximisation", ax=axes[2])
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=120)
    plt.close(fig)

    summary = {
        "profile": profile,
        "data": train.stand_in or "cifar10",
        "steps": {name: h.steps for name, (_, _, h) in runs.items()},
        "seconds": {name: round(h.seconds, 1) for name, (_, _, h) in runs.items()},
        "classifier_accuracy": round(accuracy, 4),
        "frechet_floor": round(floor, 3),
        "frechet_final": {name: round(curve[-1][1], 3) for name, curve in curves.items()},
        "frechet_best": {name: round(min(v for _, v in curve), 3) for name, curve in curves.items()},
        "reconstruction_mse": round(recon_error, 5),
        "settings": asdict(s),
    }
    return summary


def write_readme(out: Path, summary: dict[str, Any], command: str, dev: torch.device) -> None:
    """results/dcgan/<profile>/README.md: what was run, where, and the numbers."""
    s = summary["settings"]
    lines = [
        f"# DCGAN results, profile `{summary['profile']}`",
        "",
        f"- command: `{command}`",
        f"- commit: {provenance.git_commit()}",
        f"- machine: {provenance.machine(dev)}; load average {provenance.load_average()} at the end",
        f"- data: {summary['data']}; {s['n_train'] or 'all'} training images, {s['n_test']} test images",
        f"- training: {s['epochs']} epochs, batch {s['batch_size']}, Adam lr {s['lr']}, betas {tuple(s['betas'])}, "
        f"code size {s['code_size']}, seed {s['seed']}",
        f"- time: {summary['total']['wall_s']} s wall clock, {summary['total']['cpu_s']} s of CPU time in all "
        "(the machine was shared: the wall clock depends on the load)"
        if "total" in summary
        else "",
        "",
        "| run | steps | seconds (wall) | final Frechet distance | best Frechet distance |",
        "|---|---|---|---|---|",
    ]
    for name in summary["steps"]:
        lines.append(
            f"| {name} | {summary['steps'][name]} | {summary['seconds'][name]} | "
            f"{summary['frechet_final'][name]} | {summary['frechet_best'][name]} |"
        )
    lines += [
        "",
        f"- feature classifier test accuracy: {summary['classifier_accuracy']:.3f}; Frechet distance between "
        f"{s['n_fake']} training and the {s['n_test']} test images (real against real, the floor): "
        f"{summary['frechet_floor']:.1f}",
        f"- reconstruction of {s['n_recon']} test images ({s['vis_steps']} Adam steps, lr {s['vis_lr']}): "
        f"mean squared error per pixel {summary['reconstruction_mse']:.4f} (the seed's bar for the full "
        "profile: below 0.145)",
        "",
        "The Frechet distance is computed on the features of a small classifier trained here "
        "(genlab.frechet), not on Inception-v3: it is not comparable with published FID values.",
        "",
        "Files: losses.csv (every step), frechet.csv, loss_curves.png, samples.png, frechet.png, reconstructions.png.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m genlab.experiments.dcgan --profile smoke --out results/dcgan/smoke``."""
    parser = argparse.ArgumentParser(description="The DCGAN chapter's experiment: tables and figures")
    parser.add_argument("--profile", choices=PROFILES, default=os.environ.get("GENLAB_PROFILE", "smoke"))
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the results (default results/dcgan/<profile>)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (default: torch's choice)")
    provenance.add_dirty_flag(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty)
    os.environ["GENLAB_PROFILE"] = args.profile  # the data loader's stand-in rule follows the profile
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    import genlab

    dev = genlab.device()
    out = args.out or Path("results") / "dcgan" / args.profile
    command = "python -m genlab.experiments.dcgan " + " ".join(argv if argv is not None else sys.argv[1:])
    wall, cpu = time.perf_counter(), time.process_time()
    summary = run_experiment(args.profile, out, device=dev)
    summary["total"] = {"wall_s": round(time.perf_counter() - wall), "cpu_s": round(time.process_time() - cpu)}
    write_readme(out, summary, command.strip(), dev)
    print(
        f"wrote {out}: Frechet distance (final) {summary['frechet_final']}, "
        f"reconstruction MSE {summary['reconstruction_mse']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
