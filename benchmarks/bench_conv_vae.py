"""One training epoch of the conv_vae chapter's z = 20 model: genlab's on-device batches vs the common
torchvision Dataset + DataLoader pattern.

    python benchmarks/bench_conv_vae.py [--images N] [--reps N] [--threads N]

Model and step: ``CategoricalConvVAE.build(20)`` (the chapter's CNN encoder and transposed-CNN decoder,
16 logits per pixel), 4-bit quantisation of every batch, the negative ELBO in bits per dimension
(``genlab.experiments.conv_vae.vae_terms`` with genlab's categorical NLL, Gaussian KL and
reparameterisation), Adam (lr 1e-3), batch 128, on the device genlab.device() picks. Both contenders
start from the same weights and take the same number of steps.

- genlab: ``load("fashion-mnist", device=dev).batches(128)``: uint8 images kept on the device, one
  randperm per epoch, whole-batch indexing, float conversion per batch.
- baseline: ``torchvision.datasets.FashionMNIST`` over the same IDX files (linked into torchvision's
  layout in a temporary folder) + ``transforms.ToTensor()`` + ``DataLoader(batch_size=128,
  shuffle=True, num_workers=2)``, each batch moved to the device.

MNIST is not installed on the machines this was written on, so the images are Fashion-MNIST (same
shape and size; the work per step does not depend on the pixels). The epoch is over the first
``--images`` training images (default 10000; 0 for all 60000). The first line is the headline
``conv_vae_epoch: <baseline / genlab>x`` with as many torch threads as cores (what a student's process
gets); the raw figures follow, and the same comparison with one torch thread. Each contender's time is
the median of ``--reps`` epochs (``common.timed``), the two measured in the same process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_loader import torchvision_layout
from common import sync, thread_settings, timed, warm_up

import genlab
from genlab.data import DataUnavailable, load
from genlab.experiments.conv_vae import vae_terms
from genlab.losses import batch_bpd, categorical_nll, gaussian_kl
from genlab.models.conv import CategoricalConvVAE
from genlab.models.mlp import reparameterize
from genlab.quantize import quantize

BATCH = 128
LOSSES = {"nll": categorical_nll, "bpd": batch_bpd, "kl": gaussian_kl, "sample": reparameterize}


def epoch(batches, init: dict, dev: torch.device, *, move: bool) -> tuple[int, float]:
    """One training epoch over ``batches()`` from the weights ``init``: steps taken and the last loss."""
    model = CategoricalConvVAE.build(20).to(dev)
    model.load_state_dict(init)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps, loss = 0, torch.zeros(())
    for x, _ in batches():
        if move:
            x = x.to(dev, non_blocking=True)
        loss = vae_terms(model, quantize(x), **LOSSES)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    sync(dev)
    return steps, float(loss.detach())


def compare(data, tv, dev: torch.device, reps: int) -> dict[str, Any]:
    """Median seconds per epoch of each contender, with the steps and last losses."""
    from torch.utils.data import DataLoader

    def genlab_batches():
        return data.batches(BATCH, shuffle=True)

    def baseline_batches():
        return DataLoader(tv, batch_size=BATCH, shuffle=True, num_workers=2, pin_memory=dev.type == "cuda")

    torch.manual_seed(0)
    init = {k: v.to(dev) for k, v in CategoricalConvVAE.build(20).state_dict().items()}
    warm_up(genlab_batches, baseline_batches, batches=5)
    out: dict[str, Any] = {}
    for name, batches, move in (("genlab", genlab_batches, False), ("baseline", baseline_batches, True)):
        seconds, (steps, last) = timed(lambda: epoch(batches, init, dev, move=move), reps)
        out[name], out[f"{name}_steps"], out[f"{name}_loss"] = seconds, steps, last
    if out["genlab_steps"] != out["baseline_steps"]:
        raise SystemExit(f"step counts differ: {out['genlab_steps']} vs {out['baseline_steps']}")
    return out


def report(med: dict[str, Any], threads: int, reps: int, n_images: int, dev: torch.device) -> None:
    print(
        f"  device: {dev}, torch threads: {threads}, images: {n_images}, batch: {BATCH}, "
        f"steps per epoch: {med['genlab_steps']}, repetitions: {reps} (medians)"
    )
    print(
        f"    epoch, genlab TensorData.batches (data on the device):  {med['genlab']:.2f} s  "
        f"(last loss {med['genlab_loss']:.3f} bpd)"
    )
    print(
        f"    epoch, torchvision + ToTensor + DataLoader(2 workers):  {med['baseline']:.2f} s  "
        f"(last loss {med['baseline_loss']:.3f} bpd)"
    )
    print(
        f"    baseline / genlab: {med['baseline'] / med['genlab']:.2f}x; "
        f"{n_images / med['genlab']:.0f} vs {n_images / med['baseline']:.0f} images/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="training images per epoch (0: all)")
    parser.add_argument("--reps", type=int, default=1, help="epochs per contender (the median is reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="measure only with this many torch threads (default: all cores, then one)",
    )
    args = parser.parse_args(argv)
    settings = thread_settings(args.threads)

    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    dev = genlab.device()
    n = args.images or None
    try:
        data = load("fashion-mnist", subset=n, device=dev)
    except DataUnavailable as err:
        print(f"conv_vae_epoch: unavailable (Fashion-MNIST is needed)\n{err}", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-conv-vae-") as tmp:
        torchvision_layout(Path(data.source), Path(tmp))
        tv = datasets.FashionMNIST(tmp, train=True, download=False, transform=transforms.ToTensor())
        if n is not None:
            tv = Subset(tv, range(min(n, len(tv))))
        if len(tv) != len(data):
            raise SystemExit(f"the two contenders disagree on the data: {len(tv)} vs {len(data)} images")
        for threads in settings:
            torch.set_num_threads(threads)
            results[threads] = compare(data, tv, dev, max(1, args.reps))
    head = results[settings[0]]
    print(f"conv_vae_epoch: {head['baseline'] / head['genlab']:.2f}x")
    for threads, med in results.items():
        report(med, threads, max(1, args.reps), len(data), dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
