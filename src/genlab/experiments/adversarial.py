"""The experiments of the chapter "Adversarial attacks and defenses": recipes, training, tables.

    python -m genlab.experiments.adversarial --profile smoke|full [--out results/adversarial]

The notebook and this runner share what is given: the plan of each profile (:func:`make_plan`:
sizes, epochs, budgets), the random crop and flip (:func:`augment`), the training loop
(:func:`train_classifier`: SGD with Nesterov momentum, weight decay and a one-cycle learning rate,
on genlab's on-device batches through :func:`genlab.train.fit`), the strongest-of-restarts attack
(:func:`worst_of_restarts`) and the result tables (:class:`Table`). The notebook trains with the
student's functions; the runner trains the same models with genlab's references and writes the
accuracies and times to ``<out>/<profile>/`` with the command, commit and machine that made them.

Models (all CIFAR ResNets, :mod:`genlab.models.resnet`): *standard* (no augmentation), *augmented*
(random crop and flip), *A* and *B* (standard recipe, on the two halves of the training set, for
transfer), *FGSM loss* (Goodfellow et al.'s adversarial objective), *PGD batches* (each batch plus
its PGD examples) and *FGSM-RS* (Wong et al.'s FGSM with a random start), the last three with
augmentation.
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import genlab
from genlab.data import TensorData, load
from genlab.models.resnet import CifarResNet
from genlab.train import History, fit

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_CLASSES",
    "Plan",
    "Table",
    "augment",
    "class_names",
    "data_statistics",
    "make_model",
    "make_plan",
    "one_cycle",
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

    Budgets are in pixel units (images in [0, 1]); ``pgd_train_*`` is the attack of PGD training,
    ``pgd_eval_*`` the one of the table, ``curve_*`` the PGD measured after every epoch of the
    FGSM-trained models, ``rs_alpha`` the step of FGSM with a random start.
    """

    profile: str
    n_train: int | None  # None: the whole training set
    n_test: int | None
    n_attack: int  # test examples every attack is evaluated on
    blocks: tuple[int, int, int, int]
    width: int
    batch_size: int
    lr_max: float
    epochs: Mapping[str, int]
    eps: float = 8 / 255
    eps_sweep: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    fgsm_alpha: float = 0.5
    pgd_train_steps: int = 7
    pgd_train_alpha: float = 2 / 255
    pgd_eval_steps: int = 20
    pgd_eval_alpha: float = 2 / 255
    rs_alpha: float = 10 / 255
    restarts: int = 10
    curve_examples: int = 1000
    curve_steps: int = 10
    weight_decay: float = 5e-4
    notes: tuple[str, ...] = field(default=())

    @property
    def model_name(self) -> str:
        depth = 2 + 2 * sum(self.blocks)
        return f"ResNet-{depth}" + ("" if self.width == 64 else f", width {self.width}")


def make_plan(profile: str | None = None, *, grading: bool = False) -> Plan:
    """The plan of ``profile`` (default: ``genlab.profile()``); ``grading`` shrinks it to the minimum."""
    prof = genlab.profile()
    profile = profile or prof.name
    grading = grading or prof.grading
    if profile == "full":
        return Plan(
            profile="full", n_train=None, n_test=None, n_attack=10_000, blocks=(2, 2, 2, 2), width=64,
            batch_size=128, lr_max=0.2,
            epochs={"standard": 30, "augmented": 30, "half": 30, "fgsm_loss": 15, "pgd": 15, "fgsm_rs": 15},
            notes=("CIFAR-10, all 50 000 training and 10 000 test images; ResNet-18 (width 64)",
                   "one-cycle SGD (Nesterov momentum 0.9, weight decay 5e-4, peak learning rate 0.2), batches of 128",
                   "PGD training: 7 steps of 2/255; the table's PGD: 20 steps of 2/255; eps = 8/255 throughout",
                   "FGSM with a random start: step 10/255 (1.25 eps), as Wong et al. 2020"),
        )
    if profile != "smoke":
        raise ValueError(f"profile must be 'smoke' or 'full', got {profile!r}")
    if grading:
        return Plan(
            profile="smoke", n_train=128, n_test=64, n_attack=64, blocks=(1, 1, 1, 1), width=4, batch_size=64,
            lr_max=0.05, epochs={k: 1 for k in ("standard", "augmented", "half", "fgsm_loss", "pgd", "fgsm_rs")},
            eps_sweep=(0.0, 8 / 255), pgd_train_steps=1, pgd_eval_steps=2, restarts=2, curve_examples=64,
            curve_steps=2, notes=("grading run: the minimum that the later cells need",),
        )
    return Plan(
        profile="smoke", n_train=2048, n_test=512, n_attack=256, blocks=(1, 1, 1, 1), width=8, batch_size=64,
        lr_max=0.05, epochs={"standard": 3, "augmented": 3, "half": 3, "fgsm_loss": 3, "pgd": 2, "fgsm_rs": 3},
        eps_sweep=(0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255), pgd_train_steps=2, pgd_train_alpha=5 / 255,
        pgd_eval_steps=5, pgd_eval_alpha=2.5 / 255, restarts=4, curve_examples=256, curve_steps=5,
        notes=("smoke profile: the first 2048 training and 512 test images; a ResNet-10 (one block per stage) "
               "of width 8 instead of ResNet-18 of width 64; 3-4 epochs",
               "CIFAR-10 is replaced by Fashion-MNIST padded to 3x32x32 when absent (printed)",
               "PGD training: 2 steps of 5/255; the table's PGD: 5 steps of 2.5/255; eps = 8/255"),
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
    return model.to(device or data.device, memory_format=torch.channels_last)


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

    return fit(model, scheduled_step, lambda: data.batches(batch_size), epochs=epochs, optimizer=optimizer,
               desc=desc, on_epoch_end=epoch_end)


# ----------------------------------------------------------------------------------------------
# evaluation


def worst_of_restarts(attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
                      restarts: int) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
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


class Table:
    """A small table that notebooks show as HTML and terminals as aligned text.

    ``rows`` are mappings from column name to value; floats are shown with ``fmt``.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], *, title: str = "", fmt: str = "{:.1%}"):
        if not rows:
            raise ValueError("a table needs at least one row")
        self.columns = list(dict.fromkeys(k for row in rows for k in row))
        self.rows = [dict(row) for row in rows]
        self.title = title
        self.fmt = fmt

    def _cell(self, value: Any) -> str:
        if isinstance(value, float):
            return self.fmt.format(value)
        return "" if value is None else str(value)

    def __repr__(self) -> str:
        cells = [self.columns] + [[self._cell(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title] if self.title else []
        for k, row in enumerate(cells):
            lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(self._cell(r.get(c)))}</td>" for c in self.columns) + "</tr>"
            for r in self.rows
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(self._cell(r.get(c)) for c in self.columns) + " |" for r in self.rows]
        return "\n".join(lines)
