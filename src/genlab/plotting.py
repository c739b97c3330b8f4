"""Plotting and table helpers that work headless (Agg) and inline in notebooks alike.

Figures are at most 7.5 inches wide, so that the book shows them without shrinking their text, and
image grids hold at most about ten thumbnails a row. :func:`figure_png` writes a figure with notes
the book's browser test reads (its smallest text, its dpi, its smallest thumbnail).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator
from torchvision.utils import make_grid

from genlab.data import TensorData
from genlab.train import History

#: The gid of an image drawn by :func:`image_grid`, followed by its number of columns.
GRID_GID = "genlab-grid:"


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
    batch = as_images(images, shape)
    grid = make_grid(batch, nrow=nrow, padding=2, pad_value=1.0)
    if ax is None:
        # At most 7.5 inches wide: the book shows a figure at its page width (about 8 inches at 100 dpi)
        # without shrinking it, so the title keeps its size.
        width = min(0.75 * nrow, 7.5)
        rows = max(1, -(-len(images) // nrow))
        _, ax = plt.subplots(figsize=(width, width / nrow * rows + 0.5))
    columns = min(nrow, len(batch))
    ax.imshow(
        grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest", gid=f"{GRID_GID}{columns}"
    )
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps are whole numbers
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def data_label(data: TensorData) -> str:
    """How a title or table names the images of ``data``: by what they are, never by what they stand in for."""
    if data.stand_in:
        padded = data.x.dim() == 4 and data.x.shape[1] == 3
        return "Fashion-MNIST" + (" padded to 3x32x32" if padded else "") + " (smoke stand-in)"
    if data.name == "fashion-mnist" and data.x.dim() == 4 and data.x.shape[1] == 3:
        return "Fashion-MNIST padded to 3x32x32"
    return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "celeba": "CelebA"}.get(
        data.name, data.name
    )


def figure_notes(fig: Figure) -> dict[str, str]:
    """What the book checks on a figure's PNG: its smallest font (pt), its dpi and its smallest thumbnail (px).

    A thumbnail is one image of an :func:`image_grid`, measured as drawn at the figure's dpi.
    """
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    notes = {"genlab:min_font_pt": f"{min(sizes):g}" if sizes else "", "genlab:dpi": f"{fig.dpi:g}"}
    fig.draw_without_rendering()  # settles each axes' aspect, hence the images' drawn size
    thumbs = [
        image.get_window_extent().width / int(str(image.get_gid())[len(GRID_GID) :])
        for image in fig.findobj(AxesImage)
        if str(image.get_gid() or "").startswith(GRID_GID)
    ]
    if thumbs:
        notes["genlab:min_thumb_px"] = f"{min(thumbs):.1f}"
    return notes


def figure_png(fig: Figure, path: str | os.PathLike | None = None, *, dpi: float | None = None) -> bytes:
    """The figure as a PNG (cropped to its content) with :func:`figure_notes`; written to ``path`` when given."""
    if dpi is not None:
        fig.set_dpi(dpi)
    notes = figure_notes(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=fig.dpi, metadata=notes)
    data = buffer.getvalue()
    if path is not None:
        from genlab.train import atomic_write

        def write(tmp: Path) -> None:
            tmp.write_bytes(data)

        atomic_write(path, write)
    return data


class Table:
    """A small table that shows as a real table wherever a chapter displays it.

    ``display(Table(...))`` gives an HTML table in Jupyter and in the book, ``str()`` aligned text
    (a terminal, a log), :meth:`markdown` a GitHub Markdown table and :meth:`to_csv` the raw values,
    for files under results/. Cells are strings or numbers; floats are shown with ``float_format``.
    """

    def __init__(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        title: str = "",
        notes: Sequence[str] = (),
        float_format: str = "{:.4g}",
    ):
        self.columns = [str(c) for c in columns]
        self.values = [list(row) for row in rows]
        for row in self.values:
            if len(row) != len(self.columns):
                raise ValueError(f"a row has {len(row)} cells for {len(self.columns)} columns: {row}")
        self.rows = [[_cell(v, float_format) for v in row] for row in self.values]
        self.title = title
        self.notes = list(notes)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, object]], **kwargs) -> Table:
        """A table of mappings from column name to value (columns in order of appearance; gaps left empty)."""
        if not records:
            raise ValueError("a table needs at least one row")
        columns = list(dict.fromkeys(k for r in records for k in r))
        return cls(columns, [[r.get(c) for c in columns] for r in records], **kwargs)

    def markdown(self) -> str:
        """The table in GitHub Markdown (title and notes not included)."""

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        return "\n".join([line(self.columns), "|" + "---|" * len(self.columns), *map(line, self.rows)]) + "\n"

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the raw values (not the shown strings) to ``path`` in one step."""
        from genlab.train import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(self.columns)
                writer.writerows(self.values)

        return atomic_write(path, write)

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)

        def cell(text: str) -> str:
            if not _NUMBER.fullmatch(text.strip()):
                return f"<td>{escape(text)}</td>"
            # A spread goes under its mean: a wide table of "mean ± std" cells then fits the page's column.
            mean, sep, spread = text.partition(" ± ")
            under = f'<span class="spread">± {escape(spread)}</span>' if sep else ""
            return f'<td class="num">{escape(mean if sep else text)}{under}</td>'

        body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in self.rows)
        caption = f"<caption>{escape(self.title)}</caption>" if self.title else ""
        notes = "".join(f'<p class="genlab-table-note">{escape(n)}</p>' for n in self.notes)
        return (
            f'<table class="genlab-table">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}'
        )

    def __str__(self) -> str:
        widths = [
            max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c) for i, c in enumerate(self.columns)
        ]
        fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
        lines = ([self.title] if self.title else []) + [fmt.format(*self.columns)]
        lines += [fmt.format(*row) for row in self.rows] + self.notes
        return "\n".join(lines)

    __repr__ = __str__


# A cell that is a number, with a sign, a unit or a spread: "0.0258 ± 0.0028", "79.7%", "-0.67", "1.2e-05 s".
_NUMBER = re.compile(r"[-+−]?[\d.,]+(e[-+]?\d+)?\s*%?( ?(±|\+/-) ?[\d.,]+(e[-+]?\d+)?%?)?( [a-zµ]{1,3})?")


def _cell(value: object, float_format: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return float_format.format(value)
    return str(value)
