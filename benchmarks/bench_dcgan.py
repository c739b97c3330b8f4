"""One DCGAN training epoch: genlab's on-device TensorData.batches vs the common DataLoader pattern.

    python benchmarks/bench_dcgan.py [--quick] [--images N] [--reps N] [--threads N]

Model: the chapter's DCGAN (genlab.models.dcgan, code size 64) with the DCGAN initialisation, Adam
(lr 2e-4, betas (0.5, 0.999)), batches of 128, one discriminator step and one generator step per
batch (genlab.gan's reference steps), on the device genlab.device() picks. Both contenders start
from the same weights and take the same number of steps (one epoch, the last short batch dropped).

- genlab: ``load("cifar10", device=dev).batches(128, drop_last=True)``: uint8 tensors on the
  device, one randperm per epoch, whole-batch indexing, float conversion per batch.
- baseline: the usual pattern, ``torchvision.datasets.CIFAR10(transform=ToTensor())`` +
  ``DataLoader(batch_size=128, shuffle=True, num_workers=2, drop_last=True)``, each batch moved to
  the device. Where CIFAR-10 is not installed, both read the smoke profile's stand-in (Fashion-MNIST
  padded to 3x32x32, printed) and the baseline uses a dataset class that does what CIFAR10's does
  per image (a PIL image from the uint8 HWC array, then ToTensor).

The contenders alternate in one process, ``--reps`` times each; the medians are reported. The first
line is the headline ``dcgan_epoch: <baseline / genlab>x``; the raw figures follow, indented, with a
data-only pass (no model) of each. By default the epoch covers the first 10 000 training images
(78 steps: the CPU needs about a quarter of a second per step); ``--images 0`` takes all of them,
``--quick`` 2 560. On a CPU the model runs on one torch thread, as in the chapter's notebook (which
sets one thread there: on a shared 2-core machine two threads made these convolutions several times
slower); the DataLoader's two workers come on top.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import epochs_side_by_side, sync, warm_up

import genlab
from genlab import gan
from genlab.data import DataUnavailable, load
from genlab.models.dcgan import Discriminator, Generator

BATCH = 128


class ArrayImages(torch.utils.data.Dataset):
    """CIFAR10's per-image work on an in-memory uint8 array (N, H, W, 3): PIL image, then the transform."""

    def __init__(self, hwc: Any, labels: list[int], transform: Any):
        self.data, self.targets, self.transform = hwc, labels, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def baseline_dataset(data: Any, n: int | None) -> torch.utils.data.Dataset:
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    if data.stand_in is None:  # real CIFAR-10: torchvision's own class on the same files
        root = Path(data.source).parent
        ds = datasets.CIFAR10(str(root), train=True, download=False, transform=transforms.ToTensor())
        return Subset(ds, range(n)) if n else ds
    hwc = data.x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return ArrayImages(hwc, data.y.tolist(), transforms.ToTensor())


def train_epoch(batches, init: tuple[dict, dict], dev: torch.device, *, move: bool) -> tuple[float, int, float]:
    """Seconds for one epoch of DCGAN steps over ``batches()``, the steps taken and the last D loss."""
    G, D = Generator().to(dev), Discriminator().to(dev)
    G.load_state_dict(init[0])
    D.load_state_dict(init[1])
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = torch.Generator(device=dev).manual_seed(0)
    sync(dev)
    start = time.perf_counter()
    steps, loss = 0, torch.zeros(())
    for x, _ in batches():
        if move:
            x = x.to(dev, non_blocking=True)
        loss = gan.discriminator_step(D, G, x, torch.randn(len(x), 64, device=dev, generator=rng), opt_d)
        gan.generator_step(D, G, torch.randn(len(x), 64, device=dev, generator=rng), opt_g)
        steps += 1
    sync(dev)
    return time.perf_counter() - start, steps, float(loss)


def compare(data: Any, base: torch.utils.data.Dataset, dev: torch.device, reps: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    def genlab_batches():
        return data.batches(BATCH, shuffle=True, drop_last=True)

    def baseline_batches():
        return DataLoader(
            base, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True, pin_memory=dev.type == "cuda"
        )

    genlab.seed_everything(0)
    G, D = Generator(), Discriminator()
    G.apply(gan.dcgan_init)
    D.apply(gan.dcgan_init)
    init = ({k: v.to(dev) for k, v in G.state_dict().items()}, {k: v.to(dev) for k, v in D.state_dict().items()})
    warm_up(genlab_batches, baseline_batches, batches=3)
    return epochs_side_by_side(
        [("genlab", genlab_batches, False), ("baseline", baseline_batches, True)],
        lambda batches, move: train_epoch(batches, init, dev, move=move),
        dev,
        reps,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="training images per epoch (0: all)")
    parser.add_argument("--quick", action="store_true", help="2560 images (20 steps)")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of each contender")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on a CPU (default 1, as the chapter's notebook runs there)",
    )
    args = parser.parse_args(argv)
    n = 2560 if args.quick else (args.images or None)
    torch.set_num_threads(max(1, args.threads))
    dev = genlab.device()
    os.environ.setdefault("GENLAB_PROFILE", "smoke")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the stand-in notice; the headline comes first
            data = load("cifar10", train=True, subset=n, device=dev)
    except DataUnavailable as err:
        print(f"dcgan_epoch: unavailable (CIFAR-10 or its stand-in is needed)\n{err}", file=sys.stderr)
        return 2
    base = baseline_dataset(data, n)
    if len(base) != len(data):
        raise SystemExit(f"the two contenders disagree on the data: {len(base)} vs {len(data)} images")
    med = compare(data, base, dev, args.reps)
    runs, losses = med["runs"], med["losses"]
    print(f"dcgan_epoch: {med['baseline'] / med['genlab']:.2f}x")
    print(
        f"  device: {dev}, torch threads: {torch.get_num_threads()}, data: {data.stand_in or 'cifar10'}, "
        f"images: {len(data)}, batch: {BATCH}, steps per epoch: {med['steps']}, repetitions: {max(1, args.reps)} "
        "(medians)"
    )
    print(
        f"    train epoch, genlab TensorData.batches:                 {med['genlab']:.2f} s  "
        f"(runs {', '.join(f'{t:.2f}' for t in runs['genlab'])}; last D loss {losses['genlab']:.4f})"
    )
    print(
        f"    train epoch, dataset + ToTensor + DataLoader(2 workers): {med['baseline']:.2f} s  "
        f"(runs {', '.join(f'{t:.2f}' for t in runs['baseline'])}; last D loss {losses['baseline']:.4f})"
    )
    print(f"    data only, genlab:    {med['genlab_data']:.3f} s")
    print(
        f"    data only, baseline:  {med['baseline_data']:.3f} s  (ratio "
        f"{med['baseline_data'] / med['genlab_data']:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
