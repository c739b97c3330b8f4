"""One training epoch on Fashion-MNIST: genlab's in-memory TensorData.batches vs the common pattern.

    python benchmarks/bench_loader.py [--quick] [--reps N]

Model: MLP autoencoder 784-256-64-32 (ReLU) with a mirrored decoder ending in a sigmoid, BCE,
Adam (lr 1e-3), batch 64, on the device genlab.device() picks. Both contenders start from the same
weights and take the same number of steps (one epoch, the last batch short).

- genlab: ``load("fashion-mnist", device=dev).batches(64)``: uint8 tensors on the device, one
  randperm per epoch, whole-batch indexing, float conversion per batch.
- baseline: ``torchvision.datasets.FashionMNIST`` (reading the same files, put in torchvision's
  layout in a temporary folder) + ``transforms.ToTensor()`` + ``DataLoader(batch_size=64,
  shuffle=True, num_workers=2)``, each batch moved to the device.

The two are measured in the same process, alternating, ``--reps`` times each; the medians are
reported. The first line is the headline ``loader_epoch: <baseline / genlab>x``; the raw figures
follow, indented, including a data-only pass (no model) of each. ``--quick`` uses the first 10000
training images.

Threads: the headline uses as many torch threads as the machine has cores, which is what a
student's process gets by default (this script sets it explicitly because the Makefile exports
OMP_NUM_THREADS=1 for the test workers). The same comparison with one torch thread follows as a
second set of raw figures: there the baseline's two loader workers have a core to themselves and
the gap shrinks (measured: 1.5x against 3.0x). ``--threads N`` measures only N.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import epochs_side_by_side, sync, thread_settings, warm_up
from torch import nn

import genlab
from genlab.data import DataUnavailable, load

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
BATCH = 64


def autoencoder() -> nn.Module:
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 32)
    )
    decoder = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid()
    )
    return nn.Sequential(encoder, decoder)


def train_epoch(batches, init: dict, dev: torch.device, *, move: bool) -> tuple[float, int, float]:
    """Seconds for one epoch over ``batches`` (a fresh iterable), steps taken, last loss."""
    model = autoencoder().to(dev)
    model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync(dev)
    start = time.perf_counter()
    steps = 0
    for x, _ in batches():
        if move:
            x = x.to(dev, non_blocking=True)
        x = x.flatten(1)
        loss = F.binary_cross_entropy(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    sync(dev)
    return time.perf_counter() - start, steps, float(loss.detach())


def torchvision_layout(source: Path, dest: Path) -> None:
    """Put the IDX files of ``source`` (plain or .gz) as torchvision's FashionMNIST/raw in ``dest``."""
    raw = dest / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX:
        if (source / name).is_file():
            os.symlink((source / name).resolve(), raw / name)
        else:
            with gzip.open(source / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def compare(data, tv, dev: torch.device, reps: int) -> dict[str, Any]:
    """Median seconds of each contender (training epoch and data-only pass) over ``reps`` alternating runs,
    with the steps per epoch, every run's time and the last losses."""
    from torch.utils.data import DataLoader

    def genlab_batches():
        return data.batches(BATCH, shuffle=True)

    def baseline_batches():
        return DataLoader(tv, batch_size=BATCH, shuffle=True, num_workers=2, pin_memory=dev.type == "cuda")

    torch.manual_seed(0)
    init = {k: v.to(dev) for k, v in autoencoder().state_dict().items()}
    warm_up(genlab_batches, baseline_batches, batches=20)
    return epochs_side_by_side(
        [("genlab", genlab_batches, False), ("baseline", baseline_batches, True)],
        lambda batches, move: train_epoch(batches, init, dev, move=move),
        dev,
        reps,
    )


def report(med: dict, threads: int, reps: int, n_images: int, dev: torch.device) -> None:
    print(
        f"  device: {dev}, torch threads: {threads}, images: {n_images}, batch: {BATCH}, "
        f"steps per epoch: {med['steps']}, repetitions: {reps} (medians)"
    )
    runs, losses = med["runs"], med["losses"]
    print(
        f"    train epoch, genlab TensorData.batches:           {med['genlab']:.3f} s  "
        f"(runs {', '.join(f'{t:.3f}' for t in runs['genlab'])}; last loss {losses['genlab']:.4f})"
    )
    print(
        f"    train epoch, torchvision + ToTensor + DataLoader(2): {med['baseline']:.3f} s  "
        f"(runs {', '.join(f'{t:.3f}' for t in runs['baseline'])}; last loss {losses['baseline']:.4f})"
    )
    print(f"    baseline / genlab: {med['baseline'] / med['genlab']:.2f}x")
    print(f"    data only, genlab:    {med['genlab_data']:.3f} s")
    print(
        f"    data only, baseline:  {med['baseline_data']:.3f} s  "
        f"(ratio {med['baseline_data'] / med['genlab_data']:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use the first 10000 training images")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of each contender")
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
    n = 10_000 if args.quick else None
    try:
        data = load("fashion-mnist", subset=n, device=dev)
    except DataUnavailable as err:
        print(f"loader_epoch: unavailable (Fashion-MNIST is needed)\n{err}", file=sys.stderr)
        return 2
    if data.stand_in is not None:  # cannot happen for Fashion-MNIST; guard the comparison anyway
        print("loader_epoch: unavailable (stand-in data)", file=sys.stderr)
        return 2

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        torchvision_layout(Path(data.source), Path(tmp))
        tv = datasets.FashionMNIST(tmp, train=True, download=False, transform=transforms.ToTensor())
        if n is not None:
            tv = Subset(tv, range(n))
        if len(tv) != len(data):
            raise SystemExit(f"the two contenders disagree on the data: {len(tv)} vs {len(data)} images")
        for threads in settings:
            torch.set_num_threads(threads)
            results[threads] = compare(data, tv, dev, args.reps)

    head = results[settings[0]]
    print(f"loader_epoch: {head['baseline'] / head['genlab']:.2f}x")
    for threads, med in results.items():
        report(med, threads, max(1, args.reps), len(data), dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
