"""Reference runs: a chapter's experiment run longer than the smoke profile, on data that is here.

The smoke profile proves that a chapter runs; some of its questions are about effects only a longer
run shows (a CVAE that obeys its label, catastrophic overfitting, transfer, a stable spectrally
normalised GAN, bpd curves that flatten). A reference run is the chapter's runner with
``--profile reference``: real Fashion-MNIST, the one image data set available offline (padded to
3x32x32 where the chapter was written for CIFAR-10, and always called by its own name), sized to
finish in about half an hour on a 2-core CPU. Its files go to ``results/<chapter>/reference/`` beside
a README that names the command, commit, machine and time (:func:`write_readme`); the chapters show
them with :class:`Reference`.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from genlab.data import TensorData, as_rgb32, load
from genlab.experiments import provenance
from genlab.train import atomic_write

PROFILE = "reference"
CHECKOUT = Path(__file__).resolve().parents[3]  # the checkout an editable install runs from


def load_fashion(
    train: bool, *, subset: int | None = None, rgb32: bool = False, device: torch.device | str | None = None
) -> TensorData:
    """Fashion-MNIST as it is (N, 1, 28, 28), or padded to CIFAR-10's shape (N, 3, 32, 32) with ``rgb32``."""
    data = load("fashion-mnist", train=train, subset=subset)
    if rgb32:
        data = replace(data, x=as_rgb32(data.x))
    return data.to(device) if device is not None else data


def results_dir(chapter: str, profile: str = PROFILE, start: str | os.PathLike | None = None) -> Path | None:
    """``results/<chapter>/<profile>`` of this copy of the course, or None when it has no such results.

    Looked for from ``start`` (default: the working folder) upwards, then in the checkout the package
    runs from (a notebook executes in a scratch folder).
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents, CHECKOUT):
        found = folder / "results" / chapter / profile
        if (found / "README.md").is_file():
            return found
    return None


def write_readme(
    out: Path,
    *,
    title: str,
    command: str,
    data: str,
    settings: Sequence[str],
    seconds: Mapping[str, float],
    load_average: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> Path:
    """``out/README.md``: what a reference run did, on which data, where and how long it took."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    total = sum(seconds.values())
    lines = [
        f"# {title}",
        "",
        f"- command: `{command}`",
        f"- commit: {provenance.git_commit()}",
        f"- machine: {provenance.machine(device)}; CPU {provenance.cpu_model()}"
        + (f"; load average {' -> '.join(load_average)} (1 min, start -> end)" if load_average else ""),
        f"- data: {data}",
        f"- time: {total / 60:.0f} min wall clock (" + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")",
        *(f"- {line}" for line in settings),
    ]
    if notes:
        lines += ["", *notes]
    out.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        tmp.write_text("\n".join(lines) + "\n")

    return atomic_write(out / "README.md", write)


@dataclass(frozen=True)
class Reference:
    """The committed reference run of a chapter, as a notebook shows it.

    ``Reference.find("conv_vae")`` is None in a copy of the course without ``results/``.
    """

    chapter: str
    folder: Path

    @classmethod
    def find(cls, chapter: str, profile: str = PROFILE) -> Reference | None:
        """The committed run of ``profile`` (the reference run, or another committed profile such as ``full``)."""
        folder = results_dir(chapter, profile)
        return None if folder is None else cls(chapter, folder)

    def fields(self) -> dict[str, str]:
        """The README's ``- key: value`` lines (command, commit, machine, data, time, ...)."""
        found = re.findall(r"^- ([a-z ]+): (.*)$", (self.folder / "README.md").read_text(), re.M)
        return {key: value.strip() for key, value in found}

    def caption(self) -> str:
        """One line for under a figure or table: which run made it, where and how long it took."""
        f = self.fields()
        data = f.get("data") or f.get("plan", "data not recorded")
        time = f.get("time") or f.get("wall time", "time not recorded")
        return (
            f"Committed run ({data}), results/{self.chapter}/{self.folder.name}: "
            f"{f.get('command', '').strip('`')}; commit {f.get('commit', '?')}; {time}."
        )

    def path(self, name: str) -> Path:
        path = self.folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not in the committed reference run; run its command again")
        return path

    def rows(self, name: str) -> list[dict[str, str]]:
        """The rows of one of the run's CSV files, as strings."""
        with open(self.path(name), newline="") as f:
            return list(csv.DictReader(f))

    def show(self, name: str) -> None:
        """Display one of the run's figures with its caption (in a notebook)."""
        from IPython.display import Image, Markdown, display

        display(Image(filename=str(self.path(name))), Markdown(f"*{self.caption()}*"))
