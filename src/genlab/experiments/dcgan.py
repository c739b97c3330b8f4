"""The DCGAN chapter's experiment from a terminal: train, measure, and write tables and figures.

    python -m genlab.experiments.dcgan --profile smoke|reference|full [--out results/dcgan/<profile>]

It trains with genlab's reference steps (:mod:`genlab.gan`) and the sizes of a profile
(:func:`genlab.gan.settings`, shared with the chapter's notebook). The ``reference`` profile
(:mod:`genlab.experiments.reference`) trains on real Fashion-MNIST padded to 3x32x32 for about twenty
minutes on a 2-core CPU: the run the chapter shows where its smoke run is too short.
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

from genlab.experiments import provenance, reference
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
    from genlab.plotting import data_label, figure_png, image_grid

    s = settings(profile)
    dev = device or genlab.device()
    out.mkdir(parents=True, exist_ok=True)
    if profile == reference.PROFILE:
        train = reference.load_fashion(True, subset=s.n_train, rgb32=True, device=dev)
        test = reference.load_fashion(False, subset=s.n_test, rgb32=True, device=dev)
    else:
        train = load("cifar10", train=True, subset=s.n_train, device=dev)
        test = load("cifar10", train=False, subset=s.n_test, device=dev)
    label = data_label(train)
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
    start_codes = fixed_codes(s.actmax_codes, s.code_size, seed=1).to(dev)
    actmax_codes, actmax_images = activation_maximisation(
        G, D, start_codes, classification_loss, steps=s.vis_steps, lr=s.vis_lr
    )
    start_images = sample(G, start_codes)
    with torch.no_grad():
        p_before, p_after = (float(torch.sigmoid(D(images)).mean()) for images in (start_images, actmax_images))
    actmax = {
        "p_real_before": round(p_before, 4),
        "p_real_after": round(p_after, 4),
        "code_moved": round(float((actmax_codes - start_codes).norm(dim=1).mean()), 3),
        "code_norm": round(float(start_codes.norm(dim=1).mean()), 3),
    }
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

    with open(out / "actmax.csv", "w") as f:
        f.write("quantity,value\n" + "".join(f"{key},{value}\n" for key, value in actmax.items()))

    # figures: 7.5 inches wide, at most ten thumbnails a row
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3), sharey=True)
    for ax, (name, (_, _, h)) in zip(axes, runs.items()):
        for key, values in h.smoothed().items():
            ax.plot(range(1, len(values) + 1), values, label=key)
        ax.axhline(2 * math.log(2), color="C0", ls=":", lw=1)
        ax.axhline(math.log(2), color="C1", ls=":", lw=1)
        ax.set_title(f"{name}: smoothed losses")
        ax.set_xlabel("step")
        ax.set_ylabel("BCE (dotted: chance)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"DCGAN on {label}")
    fig.tight_layout()
    figure_png(fig, out / "loss_curves.png", dpi=100)
    plt.close(fig)

    def pair(left: torch.Tensor, right: torch.Tensor, titles: tuple[str, str], suptitle: str, name: str) -> None:
        side = max(1, int(math.sqrt(len(left))))
        fig, axes = plt.subplots(1, 2, figsize=(7.5, 4.2))
        image_grid(left[: side * side], nrow=side, title=titles[0], ax=axes[0])
        image_grid(right[: side * side], nrow=side, title=titles[1], ax=axes[1])
        fig.suptitle(suptitle)
        fig.tight_layout()
        figure_png(fig, out / name, dpi=100)
        plt.close(fig)

    (_, _, plain_hist), (_, _, sn_hist) = runs["plain"], runs["spectral norm"]
    pair(
        plain_hist.grids[-1][1][:25],
        sn_hist.grids[-1][1][:25],
        (f"plain, step {plain_hist.grids[-1][0]}", f"spectral norm, step {sn_hist.grids[-1][0]}"),
        f"25 fixed codes at the end of each run ({label})",
        "samples.png",
    )
    pair(
        start_images,
        actmax_images,
        (f"random codes: D says real {p_before:.2f}", f"after {s.vis_steps} steps: {p_after:.2f}"),
        f"Activation maximisation, plain run ({label})",
        "actmax.png",
    )
    pair(
        x_test,
        sample(G, codes),
        ("test images", f"reconstructions G(z*), MSE {recon_error:.4f}"),
        f"Reconstruction by latent optimisation ({label})",
        "reconstructions.png",
    )

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for name, curve in curves.items():
        per_epoch = runs[name][2].steps_per_epoch
        ax.plot([st / per_epoch for st, _ in curve], [v for _, v in curve], marker="o", label=name)
    ax.axhline(floor, color="grey", ls=":", label="real vs real (floor)")
    ax.set_yscale("log")
    ax.set_title(f"Frechet distance on the course classifier's features (not FID), {label}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Frechet distance (log scale)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    figure_png(fig, out / "frechet.png", dpi=100)
    plt.close(fig)

    summary = {
        "profile": profile,
        "data": label,
        "steps": {name: h.steps for name, (_, _, h) in runs.items()},
        "seconds": {name: round(h.seconds, 1) for name, (_, _, h) in runs.items()},
        "classifier_accuracy": round(accuracy, 4),
        "frechet_floor": round(floor, 3),
        "frechet_final": {name: round(curve[-1][1], 3) for name, curve in curves.items()},
        "frechet_best": {name: round(min(v for _, v in curve), 3) for name, curve in curves.items()},
        "reconstruction_mse": round(recon_error, 5),
        "actmax": actmax,
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
        "profile on CIFAR-10: below 0.145)",
        f"- activation maximisation ({s['actmax_codes']} codes, {s['vis_steps']} Adam steps, lr {s['vis_lr']}): "
        f"the discriminator's mean probability of real from {summary['actmax']['p_real_before']:.3f} to "
        f"{summary['actmax']['p_real_after']:.3f}; the codes moved {summary['actmax']['code_moved']:.2f} on average "
        f"(their norm: {summary['actmax']['code_norm']:.2f})",
        "",
        "The Frechet distance is computed on the features of a small classifier trained here "
        "(genlab.frechet), not on Inception-v3: it is not comparable with published FID values.",
        "",
        "Files: losses.csv (every step), frechet.csv, actmax.csv, loss_curves.png, samples.png, frechet.png, "
        "actmax.png, reconstructions.png.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m genlab.experiments.dcgan --profile smoke --out results/dcgan/smoke``."""
    parser = argparse.ArgumentParser(description="The DCGAN chapter's experiment: tables and figures")
    parser.add_argument(
        "--profile", choices=(*PROFILES, reference.PROFILE), default=os.environ.get("GENLAB_PROFILE", "smoke")
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the results (default results/dcgan/<profile>)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (default: torch's choice)")
    provenance.add_dirty_flag(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty)
    if args.profile != reference.PROFILE:  # a reference run loads Fashion-MNIST by name
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
