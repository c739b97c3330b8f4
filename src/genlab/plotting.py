"""Plotting helpers that work headless (Agg) and inline in notebooks alike."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

from genlab.train import History


def as_images(x: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
    """Turn a batch (flat vectors, uint8 or float) into float images (N, C, H, W) in [0, 1]."""
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255
    if shape is not None:
        x = x.reshape(-1, *shape)
    elif x.dim() == 2:
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise ValueError(f"cannot guess an image shape for vectors of length {x.shape[1]}; pass shape=")
        x = x.reshape(-1, 1, side, side)
    elif x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float().clamp(0, 1)


def image_grid(
    images: torch.Tensor,
    *,
    nrow: int = 8,
    title: str,
    shape: Sequence[int] | None = None,
    ax: plt.Axes | None = None,
    ylabel: str | None = None,
) -> plt.Axes:
    """Show a batch of images as one titled grid."""
    grid = make_grid(as_images(images, shape), nrow=nrow, padding=2, pad_value=1.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(1.2 * nrow, 12), 1.2 * max(1, -(-len(images) // nrow)) + 0.6))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax


def loss_curves(
    curves: Mapping[str, Sequence[float]] | History,
    *,
    title: str,
    xlabel: str = "epoch",
    ylabel: str = "loss",
    logy: bool = False,
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Plot one line per named curve (or every epoch metric of a History)."""
    if isinstance(curves, History):
        curves = curves.epochs
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        xs = range(1, len(values) + 1)
        ax.plot(xs, list(values), marker="o" if len(values) < 30 else None, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax
