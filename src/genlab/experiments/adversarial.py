"""The experiments of the chapter "Adversarial attacks and defenses": recipes, training, tables.

    python -m genlab.experiments.adversarial --profile smoke|reference|full [--out results/adversarial]

The notebook and this runner share what is given: the plan of each profile (:func:`make_plan`:
sizes, epochs, budgets), the random crop and flip (:func:`augment`), the training loop
(:func:`train_classifier`: SGD with Nesterov momentum, weight decay and a one-cycle learning rate,
on genlab's on-device batches through :func:`genlab.train.fit`), the strongest-of-restarts attack
(:func:`worst_of_restarts`) and the result tables (:func:`percent_table`). The notebook trains with the
student's functions; the runner trains the same models with genlab's references and writes the
accuracies and times to ``<out>/<profile>/`` with the command, commit and machine that made them.
The ``reference`` profile (:mod:`genlab.experiments.reference`) trains on real Fashion-MNIST padded to
3x32x32, for longer than the smoke profile (about half an hour on a 2-core CPU), so that transfer and
the per-epoch curves of FGSM training can be read.

Models (all CIFAR ResNets, :mod:`genlab.models.resnet`): *standard* (no augmentation), *augmented*
(random crop and flip), *A* and *B* (standard recipe, on the two halves of the training set, for
transfer), *FGSM loss* (Goodfellow et al.'s adversarial objective), *PGD batches* (each batch plus
its PGD examples) and *FGSM-RS* (Wong et al.'s FGSM with a random start), the last three with
augmentation.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import genlab
from genlab.data import TensorData, load
from genlab.experiments import provenance, reference
from genlab.models.resnet import CifarResNet
from genlab.plotting import Table, data_label, figure_png
from genlab.train import History, fit

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_CLASSES",
    "Plan",
    "percent_table",
    "augment",
    "class_names",
    "data_statistics",
    "make_model",
    "make_plan",
    "one_cycle",
    "split_halves",
    "train_classifier",
    "worst_of_restarts",
    "main",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")

Step = Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor]], Any]


# ----------------------------------------------------------------------------------------------
# the plan of a profile


@dataclass(frozen=True)
class Plan:
    """Everything a profile decides: data sizes, the network, epochs, attack budgets.

    The names are those of the notebook's sizes cell (lower case); a test checks that both agree.
    Budgets are in pixel units (images in [0, 1]); ``eps_sweep`` is in grey levels (1/255).
    ``epochs`` is for the standard, augmented, A and B models, ``adv_epochs`` for FGSM loss, FGSM and
    FGSM-RS training, ``pgd_epochs`` for PGD training.
    """

    profile: str
    grading: bool
    n_train: int | None  # None: the whole training set
    n_test: int | None
    n_attack: int  # test examples every attack is measured on
    blocks: tuple[int, int, int, int]
    width: int
    batch: int
    lr_max: float
    epochs: int
    adv_epochs: int
    pgd_epochs: int
    eps: float
    eps_sweep: tuple[int, ...]
    alpha_loss: float
    pgd_train_steps: int
    pgd_train_alpha: float
    pgd_steps: int
    pgd_alpha: float
    rs_alpha: float
    restarts: int
    n_curve: int
    curve_steps: int

    @property
    def model_name(self) -> str:
        depth = 2 + 2 * sum(self.blocks)  # stem and head, two convolutions per basic block
        return f"ResNet-{depth}" + ("" if self.width == 64 else f" of width {self.width}")


def make_plan(profile: str | None = None, *, grading: bool | None = None) -> Plan:
    """The plan of ``profile`` (default ``genlab.profile()``), shrunk to the minimum while grading.

    ``reference`` is the smoke network on three times the images for two to three times the epochs.
    """
    if profile == reference.PROFILE:
        return replace(
            make_plan("smoke", grading=False),
            profile=profile,
            n_train=6144,
            n_test=1024,
            n_attack=512,
            epochs=8,
            adv_epochs=10,
            pgd_epochs=4,
            n_curve=256,
        )
    current = genlab.profile()
    prof = genlab.Profile(name=profile or current.name, grading=current.grading if grading is None else grading)
    if prof.name not in genlab.runtime.PROFILES:
        raise ValueError(f"profile must be one of {', '.join(genlab.runtime.PROFILES)}, got {prof.name!r}")
    P = prof  # the notebook's name for it: the pick calls below read like the notebook's sizes cell
    return Plan(
        profile=P.name,
        grading=P.grading,
        n_train=P.pick(smoke=2048, full=None, grading=128, dry=64),
        n_test=P.pick(smoke=512, full=None, grading=64),
        n_attack=P.pick(smoke=256, full=10_000, grading=64, dry=32),
        blocks=P.pick(smoke=(1, 1, 1, 1), full=(2, 2, 2, 2)),
        width=P.pick(smoke=8, full=64, grading=4),
        batch=P.pick(smoke=64, full=128),
        lr_max=P.pick(smoke=0.05, full=0.2),
        epochs=P.pick(smoke=3, full=30, grading=1, dry=1),
        adv_epochs=P.pick(smoke=3, full=15, grading=1, dry=1),
        pgd_epochs=P.pick(smoke=2, full=15, grading=1, dry=1),
        eps=8 / 255,
        eps_sweep=P.pick(smoke=(0, 2, 4, 8, 16, 32), full=(0, 1, 2, 4, 8, 16), grading=(0, 8), dry=(0, 8)),
        alpha_loss=0.5,
        pgd_train_steps=P.pick(smoke=2, full=7, grading=1, dry=2),
        pgd_train_alpha=P.pick(smoke=5 / 255, full=2 / 255),
        pgd_steps=P.pick(smoke=5, full=20, grading=2, dry=2),
        pgd_alpha=P.pick(smoke=2.5 / 255, full=2 / 255),
        rs_alpha=10 / 255,
        restarts=P.pick(smoke=4, full=10, grading=2, dry=1),
        n_curve=P.pick(smoke=256, full=1000, grading=64, dry=16),
        curve_steps=P.pick(smoke=5, full=10, grading=2, dry=2),
    )


# ----------------------------------------------------------------------------------------------
# data and model


def class_names(data: TensorData) -> tuple[str, ...]:
    """The ten class names of ``data``: CIFAR-10's, or Fashion-MNIST's for its stand-in."""
    if data.name == "cifar10" and not data.stand_in:
        return CIFAR10_CLASSES
    if data.name == "fashion-mnist" or (data.stand_in or "").startswith("fashion-mnist"):
        return FASHION_CLASSES
    raise ValueError(f"no class names known for {data.name!r} (stand-in {data.stand_in!r})")


def split_halves(data: TensorData) -> tuple[TensorData, TensorData]:
    """The first and the second half of ``data`` (disjoint; the first gets the extra example of an odd count)."""
    if len(data) < 2:
        raise ValueError(f"need at least 2 examples to split, got {len(data)}")
    h = (len(data) + 1) // 2
    first = replace(data, x=data.x[:h], y=None if data.y is None else data.y[:h])
    second = replace(data, x=data.x[h:], y=None if data.y is None else data.y[h:])
    return first, second


def data_statistics(data: TensorData) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the pixels of ``data`` (uint8 images), in [0, 1] units."""
    if data.x.dtype != torch.uint8 or data.x.dim() != 4:
        raise ValueError(f"data_statistics expects uint8 images (N, C, H, W), got {data.x.dtype} {tuple(data.x.shape)}")
    x = data.x.to(torch.float64) / 255
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def make_model(plan: Plan, data: TensorData, device: torch.device | str | None = None) -> CifarResNet:
    """The plan's CIFAR ResNet for ``data``, normalising with the data's own pixel statistics."""
    mean, std = data_statistics(data)
    model = CifarResNet(plan.blocks, width=plan.width, num_classes=10, in_channels=data.x.shape[1], mean=mean, std=std)
    # channels-last weights: 1.5-1.7x faster convolutions on a CPU (measured), and the layout GPUs prefer
    return model.to(device or data.device).to(memory_format=torch.channels_last)


def augment(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crops (zero padding of ``pad`` pixels) and horizontal flips of a batch, on its device.

    Each image is shifted by an offset drawn uniformly in ``[-pad, pad]`` along each axis (what
    ``RandomCrop(32, padding=4)`` does) and mirrored left-right with probability 1/2.
    """
    if x.dim() != 4:
        raise ValueError(f"augment expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative int, got {pad!r}")
    n, c, h, w = x.shape
    gdev = generator.device if generator is not None else x.device
    dy = torch.randint(0, 2 * pad + 1, (n,), device=gdev, generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=gdev, generator=generator).to(x.device)
    flip = torch.rand(n, device=gdev, generator=generator).to(x.device) < 0.5
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # (n, 1, w)
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------------
# training


def one_cycle(step: int, total: int, lr_max: float, peak: float = 0.4) -> float:
    """The learning rate at ``step`` of ``total``: linear from 0 to ``lr_max`` at ``peak * total``, then to 0."""
    if total < 1 or not 0 < peak < 1:
        raise ValueError(f"need total >= 1 and 0 < peak < 1, got total={total}, peak={peak}")
    t = (step + 1) / total
    return lr_max * (t / peak if t <= peak else max(0.0, (1 - t) / (1 - peak)))


def train_classifier(
    model: nn.Module,
    data: TensorData,
    step: Step,
    *,
    epochs: int,
    batch_size: int,
    lr_max: float,
    augmented: bool = False,
    weight_decay: float = 5e-4,
    desc: str = "train",
    on_epoch_end: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` on ``data`` for ``epochs`` with ``step(model, (x, y)) -> loss``.

    SGD with Nesterov momentum 0.9 and ``weight_decay``; the learning rate follows :func:`one_cycle`
    step by step; ``augmented`` applies :func:`augment` to every batch before ``step`` sees it.
    ``on_epoch_end(epoch, history)`` may evaluate the model: it is put back in train mode after.
    Returns the :class:`genlab.train.History` (per-step and per-epoch metrics, plus ``lr``).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    per_epoch = math.ceil(len(data) / batch_size)
    total = max(1, epochs * per_epoch)
    counter = {"i": 0}

    def scheduled_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        lr = one_cycle(min(counter["i"], total - 1), total, lr_max)
        counter["i"] += 1
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = batch
        out = step(model, (augment(x) if augmented else x, y))
        metrics = dict(out) if isinstance(out, Mapping) else {"loss": out}
        metrics["lr"] = torch.tensor(lr)
        return metrics

    def epoch_end(epoch: int, history: History) -> None:
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
            model.train()

    return fit(
        model,
        scheduled_step,
        lambda: data.batches(batch_size),
        epochs=epochs,
        optimizer=optimizer,
        desc=desc,
        on_epoch_end=epoch_end,
    )


# ----------------------------------------------------------------------------------------------
# evaluation


def worst_of_restarts(
    attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], restarts: int
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """An attack that runs ``attack`` (a randomised one: PGD with a random start) ``restarts`` times.

    Per example it keeps the first run whose example is misclassified, else the run with the
    highest loss; an example resists it only if it resists every run. The model is queried in eval
    mode and handed back in its modes.
    """
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be a positive int, got {restarts!r}")
    from genlab.attacks import _eval_mode

    def attacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        best = x.detach().clone()
        best_loss = torch.full((len(x),), -math.inf, device=x.device)
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with _eval_mode(model):
            for _ in range(restarts):
                adv = attack(model, x, y).detach()
                with torch.no_grad():
                    logits = model(adv)
                    loss = F.cross_entropy(logits, y, reduction="none").to(best_loss.dtype)
                    wrong = logits.argmax(1) != y
                take = ~fooled & (wrong | (loss > best_loss))
                best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), adv, best)
                best_loss = torch.where(take, loss, best_loss)
                fooled |= wrong
        return best

    return attacked


def percent_table(records: Sequence[Mapping[str, Any]], *, title: str = "") -> Table:
    """A :class:`genlab.plotting.Table` of records whose floats are accuracies, shown as percentages."""
    return Table.from_records(records, title=title, float_format="{:.1%}")


# ----------------------------------------------------------------------------------------------
# the runner: the notebook's experiments with genlab's references


def run(plan: Plan, out: str | os.PathLike, argv: Sequence[str] = ()) -> Path:
    """Train the chapter's seven networks with genlab's references, measure them, write the tables.

    Writes to ``<out>/<profile>/``: ``accuracy.{csv,md}`` (clean, FGSM and PGD accuracy of every
    network, with training times), ``sweep.csv`` (FGSM and random signs against eps),
    ``transfer.{csv,md}``, ``fast.{csv,md}`` (one PGD run against restarts), ``curves.csv`` (FGSM
    and PGD accuracy after every epoch of FGSM and FGSM-RS training) and ``README.md`` (command,
    commit, machine, plan, wall times).
    """
    from genlab.attacks import fgsm, pgd
    from genlab.defenses import accuracy_under_attack, adversarial_batch, fgsm_loss, fgsm_rs_loss

    start_all = time.perf_counter()
    load_before = provenance.load_average()
    device = genlab.device()
    out_dir = Path(out) / plan.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    if plan.profile == reference.PROFILE:
        train = reference.load_fashion(True, subset=plan.n_train, rgb32=True, device=device)
        test = reference.load_fashion(False, subset=plan.n_test, rgb32=True, device=device)
    else:
        train = load("cifar10", train=True, subset=plan.n_train, device=device)
        test = load("cifar10", train=False, subset=plan.n_test, device=device)
    label = data_label(train)
    attack_set = test.subset(plan.n_attack)
    curve_set = test.subset(plan.n_curve)
    CE = F.cross_entropy
    models: dict[str, nn.Module] = {}
    seconds: dict[str, float] = {}

    def batches(data: TensorData = attack_set):
        return data.batches(256, shuffle=False)

    def fgsm_attack(eps: float):
        return lambda m, x, y: fgsm(m, CE, x, y, eps)

    def pgd_attack(eps: float, alpha: float, steps: int, random_start: bool = True):
        return lambda m, x, y: pgd(m, CE, x, y, eps, alpha, steps, random_start=random_start)

    def noise_attack(eps: float):
        return lambda m, x, y: (x + eps * torch.randint_like(x, 0, 2).mul(2).sub(1)).clamp(0, 1)

    def train_one(
        name: str,
        step: Step,
        data: TensorData,
        epochs: int,
        *,
        augmented: bool,
        seed: int,
        curve: dict[str, list[float]] | None = None,
    ) -> None:
        genlab.seed_everything(seed)
        model = make_model(plan, train, device)

        def on_epoch_end(epoch: int, history: History) -> None:
            assert curve is not None  # passed to the harness only with a curve to fill
            curve["FGSM"].append(accuracy_under_attack(model, batches(curve_set), fgsm_attack(plan.eps)))
            curve["PGD"].append(
                accuracy_under_attack(model, batches(curve_set), pgd_attack(plan.eps, plan.pgd_alpha, plan.curve_steps))
            )

        t0 = time.perf_counter()
        train_classifier(
            model,
            data,
            step,
            epochs=epochs,
            batch_size=plan.batch,
            lr_max=plan.lr_max,
            augmented=augmented,
            weight_decay=5e-4,
            desc=name,
            on_epoch_end=on_epoch_end if curve is not None else None,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[name] = time.perf_counter() - t0
        models[name] = model.eval()
        print(f"{name}: {seconds[name]:.1f} s", flush=True)

    def standard_step(model, batch):
        return CE(model(batch[0]), batch[1])

    def fgsm_loss_step(model, batch):
        return fgsm_loss(model, CE, batch[0], batch[1], plan.eps, plan.alpha_loss, attack=fgsm)

    def pgd_batch_step(model, batch):
        images, labels = adversarial_batch(
            model, batch[0], batch[1], pgd_attack(plan.eps, plan.pgd_train_alpha, plan.pgd_train_steps)
        )
        return CE(model(images), labels)

    def fgsm_step(model, batch):
        return CE(model(fgsm(model, CE, batch[0], batch[1], plan.eps)), batch[1])

    def fgsm_rs_step(model, batch):
        return fgsm_rs_loss(model, CE, batch[0], batch[1], plan.eps, plan.rs_alpha, attack=pgd)

    half_a, half_b = split_halves(train)
    curves: dict[str, dict[str, list[float]]] = {"FGSM": {"FGSM": [], "PGD": []}, "FGSM-RS": {"FGSM": [], "PGD": []}}
    train_one("standard", standard_step, train, plan.epochs, augmented=False, seed=0)
    train_one("augmented", standard_step, train, plan.epochs, augmented=True, seed=0)
    train_one("A", standard_step, half_a, plan.epochs, augmented=False, seed=10)
    train_one("B", standard_step, half_b, plan.epochs, augmented=False, seed=11)
    train_one("FGSM loss", fgsm_loss_step, train, plan.adv_epochs, augmented=True, seed=0)
    train_one("PGD batches", pgd_batch_step, train, plan.pgd_epochs, augmented=True, seed=0)
    train_one("FGSM", fgsm_step, train, plan.adv_epochs, augmented=True, seed=20, curve=curves["FGSM"])
    train_one("FGSM-RS", fgsm_rs_step, train, plan.adv_epochs, augmented=True, seed=20, curve=curves["FGSM-RS"])

    t0 = time.perf_counter()
    genlab.seed_everything(1)
    sweep_rows = []
    for k in plan.eps_sweep:
        sweep_rows.append(
            {
                "eps (1/255)": k,
                "standard, FGSM": accuracy_under_attack(models["standard"], batches(), fgsm_attack(k / 255)),
                "augmented, FGSM": accuracy_under_attack(models["augmented"], batches(), fgsm_attack(k / 255)),
                "standard, random signs": accuracy_under_attack(models["standard"], batches(), noise_attack(k / 255)),
            }
        )
    percent_table(sweep_rows).to_csv(out_dir / "sweep.csv")

    transfer_rows = [
        {
            "attack": "none (clean)",
            **{f"accuracy of {t}": accuracy_under_attack(models[t], batches()) for t in ("A", "B")},
        }
    ]
    for k in (8, 16):
        for source in ("A", "B"):
            adversarial = [(fgsm(models[source], CE, x, y, k / 255), y) for x, y in batches()]
            transfer_rows.append(
                {
                    "attack": f"FGSM {k}/255 built on {source}",
                    **{f"accuracy of {t}": accuracy_under_attack(models[t], adversarial) for t in ("A", "B")},
                }
            )
    _write(
        percent_table(transfer_rows, title="Transfer between networks trained on the two halves"), out_dir / "transfer"
    )

    genlab.seed_everything(2)
    rows = []
    for name in ("standard", "augmented", "FGSM loss", "PGD batches", "FGSM", "FGSM-RS"):
        model = models[name]
        rows.append(
            {
                "model": name,
                "clean": accuracy_under_attack(model, batches()),
                "FGSM": accuracy_under_attack(model, batches(), fgsm_attack(plan.eps)),
                f"PGD-{plan.pgd_steps}": accuracy_under_attack(
                    model, batches(), pgd_attack(plan.eps, plan.pgd_alpha, plan.pgd_steps)
                ),
                "training time (s)": f"{seconds[name]:.1f}",
            }
        )
    _write(percent_table(rows, title=f"Accuracy at eps = 8/255 on {len(attack_set)} test images"), out_dir / "accuracy")

    genlab.seed_everything(3)
    fast_rows = []
    for name in ("PGD batches", "FGSM-RS"):
        single = pgd_attack(plan.eps, plan.pgd_alpha, plan.pgd_steps)
        fast_rows.append(
            {
                "model": name,
                "clean": accuracy_under_attack(models[name], batches()),
                f"PGD-{plan.pgd_steps}, one run": accuracy_under_attack(models[name], batches(), single),
                f"PGD-{plan.pgd_steps}, {plan.restarts} restarts": accuracy_under_attack(
                    models[name], batches(), worst_of_restarts(single, plan.restarts)
                ),
            }
        )
    _write(percent_table(fast_rows, title="One PGD run against restarts"), out_dir / "fast")
    curve_rows = [
        {"model": name, "epoch": e + 1, "FGSM": c["FGSM"][e], f"PGD-{plan.curve_steps}": c["PGD"][e]}
        for name, c in curves.items()
        for e in range(len(c["FGSM"]))
    ]
    percent_table(curve_rows).to_csv(out_dir / "curves.csv")
    figure_png(
        plot_curves(curves, plan.curve_steps, title=f"FGSM training with and without a random start, {label}"),
        out_dir / "curves.png",
        dpi=100,
    )
    seconds["evaluation"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start_all

    lines = [
        f"# Results of the {plan.profile} profile",
        "",
        f"- command: `python -m genlab.experiments.adversarial {' '.join(argv)}`".replace("  ", " "),
        f"- commit: {provenance.git_commit()}",
        f"- machine: {provenance.machine(device)}; CPU {provenance.cpu_model()}",
        f"- data: {label}; {len(train)} training images, {len(attack_set)} attacked test images",
        f"- network: {plan.model_name}; plan: "
        + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in asdict(plan).items()
            if k not in ("profile", "grading")
        ),
        f"- time: {seconds['total'] / 60:.0f} min wall clock ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        + f" (1-minute load average {load_before} at the start, {provenance.load_average()} at the end, on "
        f"{os.cpu_count()} cores))",
        "",
        "## Accuracy at eps = 8/255",
        "",
        percent_table(rows).markdown(),
        "",
        "## Transfer (FGSM built on one network, shown to both)",
        "",
        percent_table(transfer_rows).markdown(),
        "",
        "## One PGD run against restarts",
        "",
        percent_table(fast_rows).markdown(),
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))
    print(f"tables in {out_dir}: " + ", ".join(sorted(p.name for p in out_dir.iterdir())))
    return out_dir


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], pgd_steps: int, *, title: str) -> Any:
    """Accuracy under FGSM (dashed) and PGD (solid) after every epoch, one colour per training method."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (name, curve), color in zip(curves.items(), ("tab:red", "tab:blue", "tab:green")):
        epochs = range(1, len(curve["FGSM"]) + 1)
        ax.plot(epochs, curve["FGSM"], color=color, linestyle="--", marker="o", label=f"{name}: under FGSM")
        ax.plot(epochs, curve["PGD"], color=color, marker="o", label=f"{name}: under PGD-{pgd_steps}")
        ax.set_xticks(list(epochs))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def _write(table: Table, stem: Path) -> None:
    table.to_csv(stem.with_suffix(".csv"))
    stem.with_suffix(".md").write_text((f"{table.title}\n\n" if table.title else "") + table.markdown())


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m genlab.experiments.adversarial", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--profile", choices=(*genlab.runtime.PROFILES, reference.PROFILE), default=genlab.profile().name
    )
    parser.add_argument("--out", default="results/adversarial")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 on a CPU in the smoke profile, torch's default otherwise)",
    )
    provenance.add_dirty_flag(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty)
    if args.profile != reference.PROFILE:  # a reference run loads Fashion-MNIST by name
        os.environ["GENLAB_PROFILE"] = args.profile  # the data's stand-in rule follows the profile
    threads = args.threads or (
        1 if genlab.device().type == "cpu" and args.profile in ("smoke", reference.PROFILE) else None
    )
    if threads:
        torch.set_num_threads(threads)
    run(make_plan(args.profile, grading=False), args.out, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
