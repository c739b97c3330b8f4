"""Assignment manifests (assignments/<name>.toml): what is graded, for how much, within what limits."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from autograder.course import ROOT

MANIFESTS = ROOT / "assignments"
GPU_CHOICES = ("none", "optional", "required")


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: one solution cell's source replaced, and the tests it must fail."""

    name: str
    cell: str
    code: str
    fails: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    notebook: str
    points: float
    due: datetime
    gpu: str = "optional"
    gpu_fraction: float = 1.0  # the share of one GPU a submission's grading task takes (several share a GPU)
    time_limit_s: int = 600
    memory_limit_mb: int = 6144
    disk_limit_mb: int = 1024
    cell_timeout_s: int = 300
    output_limit_mb: int = 8  # the graded notebook, its stored copy and its feedback page: each at most this
    mistakes: tuple[Mistake, ...] = field(default_factory=tuple)

    def mistake_rounds(self) -> list[tuple[Mistake, ...]]:
        """The mistakes as submissions: round k holds the k-th mistake of every cell that has one."""
        per_cell: dict[str, list[Mistake]] = {}
        for m in self.mistakes:
            per_cell.setdefault(m.cell, []).append(m)
        depth = max((len(v) for v in per_cell.values()), default=0)
        return [tuple(v[k] for v in per_cell.values() if len(v) > k) for k in range(depth)]

    def source_at(self, root: Path = ROOT) -> Path:
        """The source notebook in the course rooted at ``root``."""
        return root / "source" / self.name / self.notebook

    @property
    def source(self) -> Path:
        return self.source_at(ROOT)


def _require(data: dict, key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in data:
        raise ValueError(f"{path}: missing key {key!r}; see CONTRIBUTING.md for the manifest format")
    value = data[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{path}: {key!r} must be {names}, got {value!r}")
    return value


def load(name_or_path: str | Path, root: Path | None = None) -> Manifest:
    """Read and validate one manifest, by path or by assignment name.

    A name is looked up in ``root/assignments`` (a course of its own) and then in this course's.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        folders = [Path(root) / "assignments"] if root is not None else []
        path = next(
            (f / f"{name_or_path}.toml" for f in folders if (f / f"{name_or_path}.toml").exists()),
            MANIFESTS / f"{name_or_path}.toml",
        )
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in MANIFESTS.glob("*.toml"))) or "none"
        raise FileNotFoundError(f"no manifest {path}; known assignments: {known}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    gpu = data.get("gpu", "optional")
    if gpu not in GPU_CHOICES:
        raise ValueError(f"{path}: gpu must be one of {GPU_CHOICES}, got {gpu!r}")
    gpu_fraction = data.get("gpu_fraction", 1.0)
    if isinstance(gpu_fraction, bool) or not isinstance(gpu_fraction, (int, float)) or not 0 < gpu_fraction <= 1:
        raise ValueError(
            f"{path}: gpu_fraction must be a number in (0, 1] (the share of one GPU a submission "
            f"takes), got {gpu_fraction!r}"
        )
    if "gpu_fraction" in data and gpu == "none":
        raise ValueError(f'{path}: gpu_fraction is set but gpu = "none"; remove it or say "optional" or "required"')
    due = _require(data, "due", (str, datetime), path)
    mistakes = tuple(
        Mistake(
            name=_require(m, "name", str, path),
            cell=_require(m, "cell", str, path),
            code=_require(m, "code", str, path),
            fails=tuple(_require(m, "fails", list, path)),
        )
        for m in data.get("mistakes", [])
    )
    names = [m.name for m in mistakes]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: two mistakes share a name; give each its own")
    for key in ("time_limit_s", "memory_limit_mb", "disk_limit_mb", "cell_timeout_s", "output_limit_mb"):
        if key in data and (not isinstance(data[key], int) or data[key] <= 0):
            raise ValueError(f"{path}: {key} must be a positive integer, got {data[key]!r}")
    return Manifest(
        name=path.stem,
        title=_require(data, "title", str, path),
        notebook=_require(data, "notebook", str, path),
        points=float(_require(data, "points", (int, float), path)),
        due=due if isinstance(due, datetime) else datetime.fromisoformat(due),
        gpu=gpu,
        gpu_fraction=float(gpu_fraction),
        time_limit_s=data.get("time_limit_s", 600),
        memory_limit_mb=data.get("memory_limit_mb", 6144),
        disk_limit_mb=data.get("disk_limit_mb", 1024),
        cell_timeout_s=data.get("cell_timeout_s", 300),
        output_limit_mb=data.get("output_limit_mb", 8),
        mistakes=mistakes,
    )


def all_manifests() -> list[Manifest]:
    return [load(p) for p in sorted(MANIFESTS.glob("*.toml"))]
