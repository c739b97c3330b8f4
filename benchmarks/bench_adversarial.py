"""The adversarial chapter's two speed lines: a training epoch of its ResNet, and PGD-10.

    python benchmarks/bench_adversarial.py [--n 2048] [--reps 3] [--threads N] [--width 8] [--blocks 1]

1. ``adversarial_epoch``: one epoch of the chapter's CIFAR ResNet (SGD, cross-entropy, batches of
   64, random crops and flips) on genlab's on-device batches (``TensorData.batches`` + the batched
   ``experiments.adversarial.augment``) against the common pattern: ``torchvision.datasets.CIFAR10``
   reading the same images from CIFAR-10's pickle files (written to a temporary folder) with
   ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()`` and ``ToTensor()`` per image, and a
   ``DataLoader(batch_size=64, shuffle=True, num_workers=2)`` whose batches are moved to the device.
   Both start from the same weights and take the same number of steps. Ratio: baseline / genlab.
2. ``pgd10_vs_torchattacks``: ``genlab.attacks.pgd`` against ``torchattacks.PGD`` (eps 8/255, step
   2/255, 10 steps, random start) on the same trained-for-nothing network in eval mode and the same
   batch of 256 images. Ratio: torchattacks / genlab.
3. ``onednn_guard_epoch``: the cost of the ResNet's guard against the oneDNN crash
   (``genlab.models.resnet.StridedPointwiseConv2d``) where oneDNN works: the smoke network's epoch
   with the guard against the same network whose strided shortcuts are plain ``nn.Conv2d``. Ratio:
   unguarded / guarded (1.00x: no cost). Beside it, ``onednn_guard_vs_plain_layout``: the grading
   profile's width-4 network on one thread (where the unguarded network crashes), guarded against
   the blunt alternative of training it all in the default memory layout. Ratio: plain / guarded.

The images are CIFAR-10's when installed, else the smoke profile's stand-in (Fashion-MNIST padded
to 3x32x32; printed). The first two lines are the headlines ``<name>: <ratio>x``; the raw figures
(medians of ``--reps`` alternating runs, in the same process) follow, indented. The network is the
smoke profile's (one block per stage, width 8) unless ``--width``/``--blocks`` say otherwise: a
width-64 ResNet-18 epoch takes many minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed

import genlab
from genlab.attacks import pgd
from genlab.data import TensorData, load
from genlab.experiments.adversarial import augment, data_statistics
from genlab.models.resnet import CifarResNet, StridedPointwiseConv2d

BATCH = 64


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def write_cifar_pickles(data: TensorData, folder: Path) -> None:
    """``data`` in CIFAR-10's python format: five training batches, a test batch and the metadata."""
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True)
    x = data.x.cpu().reshape(len(data), -1).numpy()
    y = data.y.cpu().tolist()
    parts = torch.arange(len(data)).chunk(5)
    for i, idx in enumerate(parts, start=1):
        with open(base / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": x[idx.numpy()], "labels": [y[j] for j in idx.tolist()]}, f)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": x[:10], "labels": y[:10]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(k) for k in range(10)]}, f)


def baseline_loader(root: Path):
    from torchvision import datasets, transforms

    class CIFAR10Files(datasets.CIFAR10):
        """torchvision's CIFAR-10 reader, without the MD5 check (the files hold other images)."""

        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f)[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    transform = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    )
    ds = CIFAR10Files(str(root), train=True, transform=transform, download=False)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=False)


def train_epoch(model, optimizer, batches, dev, augmented_on_device: bool) -> int:
    model.train()
    steps = 0
    for x, y in batches:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if augmented_on_device:
            x = augment(x)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        steps += 1
    sync(dev)
    return steps


def alternated(runs: dict[str, Callable[[], float]], reps: int) -> dict[str, float]:
    """Median seconds of each run, called in turn ``reps`` times (in reversed order every other time)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(reps):
        for name in list(runs)[:: 1 if rep % 2 == 0 else -1]:
            times[name].append(runs[name]())
    return {name: statistics.median(t) for name, t in times.items()}


def guard_cost(data: TensorData, mean, std, dev: torch.device, width: int, reps: int) -> dict[str, float]:
    """Epoch seconds of the guarded network, the unguarded one and the all-default-layout one (see 3. above)."""

    def network(variant: str) -> CifarResNet:
        torch.manual_seed(0)
        model = CifarResNet((1,) * 4, width=width, mean=mean, std=std).to(dev)
        if variant == "plain layout":
            return model
        for module in model.modules():
            if variant == "unguarded" and isinstance(module, StridedPointwiseConv2d):
                module.__class__ = torch.nn.Conv2d
        return model.to(memory_format=torch.channels_last)

    def epoch(variant: str) -> Callable[[], float]:
        model = network(variant)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return lambda: timed(lambda: train_epoch(model, opt, data.batches(BATCH), dev, True), 1)[0]

    # the unguarded network crashes where the guard is needed (fewer than 8 channels on one thread)
    variants = ("guarded", "plain layout") if width < 8 else ("guarded", "unguarded")
    return alternated({v: epoch(v) for v in variants}, reps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="training images in the epoch")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=1, help="basic blocks per stage (2: ResNet-18)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = genlab.device()
    data = load("cifar10", train=True, subset=args.n, device=dev)
    mean, std = data_statistics(data)

    def network() -> CifarResNet:
        torch.manual_seed(0)
        return CifarResNet((args.blocks,) * 4, width=args.width, mean=mean, std=std).to(
            dev, memory_format=torch.channels_last
        )

    model_g, model_b = network(), network()
    opt_g = torch.optim.SGD(model_g.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar_pickles(data, Path(tmp))
        loader = baseline_loader(Path(tmp))
        ours, theirs, steps = [], [], None
        run_ours = lambda: timed(lambda: train_epoch(model_g, opt_g, data.batches(BATCH), dev, True), 1)
        run_theirs = lambda: timed(lambda: train_epoch(model_b, opt_b, loader, dev, False), 1)
        for rep in range(args.reps):  # alternate, in both orders, so that both meet the same machine load
            first, second = (run_ours, run_theirs) if rep % 2 == 0 else (run_theirs, run_ours)
            a, b = first(), second()
            (t_ours, steps), (t_theirs, _) = (a, b) if rep % 2 == 0 else (b, a)
            ours.append(t_ours)
            theirs.append(t_theirs)
        data_only_g, _ = timed(lambda: sum(augment(x).shape[0] for x, _ in data.batches(BATCH)), args.reps)
        data_only_b, _ = timed(lambda: sum(x.to(dev).shape[0] for x, _ in loader), args.reps)
    epoch_g, epoch_b = sorted(ours)[len(ours) // 2], sorted(theirs)[len(theirs) // 2]

    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    model = network().eval()
    x, y = next(data.batches(256, shuffle=False))

    def synced(attack_once):
        """``attack_once`` followed by a wait for the GPU, as one timed call."""

        def run():
            out = attack_once()
            sync(dev)
            return out

        return run

    ours_pgd = lambda: timed(synced(lambda: pgd(model, F.cross_entropy, x, y, 8 / 255, 2 / 255, 10)), 1)[0]
    pgd_g_all, pgd_t_all = [], []
    if torchattacks is not None:
        attack = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
        theirs_pgd = lambda: timed(synced(lambda: attack(x, y)), 1)[0]
        ours_pgd(), theirs_pgd()  # warm-up
        for rep in range(args.reps):
            if rep % 2 == 0:
                pgd_g_all.append(ours_pgd())
                pgd_t_all.append(theirs_pgd())
            else:
                pgd_t_all.append(theirs_pgd())
                pgd_g_all.append(ours_pgd())
        pgd_t = sorted(pgd_t_all)[len(pgd_t_all) // 2]
    else:
        ours_pgd()
        pgd_g_all = [ours_pgd() for _ in range(args.reps)]
    pgd_g = sorted(pgd_g_all)[len(pgd_g_all) // 2]

    guard = guard_cost(data, mean, std, dev, args.width, args.reps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    grading = guard_cost(data, mean, std, dev, 4, args.reps)
    torch.set_num_threads(threads)

    where = f"{dev}" + (
        f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f", {args.threads} torch thread(s)"
    )
    print(f"adversarial_epoch: {epoch_b / epoch_g:.2f}x")
    if torchattacks is not None:
        print(f"pgd10_vs_torchattacks: {pgd_t / pgd_g:.2f}x")
    else:
        print("pgd10_vs_torchattacks: skipped (torchattacks missing: make setup installs it)")
    if "unguarded" in guard:
        print(f"onednn_guard_epoch: {guard['unguarded'] / guard['guarded']:.2f}x")
    print(f"onednn_guard_vs_plain_layout: {grading['plain layout'] / grading['guarded']:.2f}x")
    print(
        f"  device {where}; {len(data)} images ({data.stand_in or 'CIFAR-10'}); ResNet with {args.blocks} block(s) "
        f"per stage, width {args.width}; {steps} steps of {BATCH}; medians of {args.reps}"
    )
    print(f"  epoch, genlab on-device batches + batched augment: {epoch_g:.2f} s  (data alone {data_only_g:.3f} s)")
    print(
        f"  epoch, torchvision CIFAR10 + transforms + DataLoader(num_workers=2): {epoch_b:.2f} s  "
        f"(data alone {data_only_b:.3f} s)"
    )
    print(f"  PGD-10 on 256 images, genlab.attacks.pgd: {pgd_g:.3f} s")
    print(
        f"  epoch at width {args.width}: guarded {guard['guarded']:.2f} s"
        + (f", unguarded {guard['unguarded']:.2f} s" if "unguarded" in guard else "")
    )
    print(
        f"  epoch at width 4, 1 thread: guarded {grading['guarded']:.2f} s, "
        f"all in the default layout {grading['plain layout']:.2f} s"
    )
    if torchattacks is not None:
        print(f"  PGD-10 on 256 images, torchattacks.PGD {torchattacks.__version__}: {pgd_t:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
