"""What a results folder records beside its numbers: the commit and machine that made them, and CSV files.

Results name the commit of the code that made them, so that commit must hold that code: every
runner (``python -m genlab.experiments.<chapter>``) calls :func:`require_clean` before it starts
and refuses to run on uncommitted changes to the package unless given ``--allow-dirty`` (whose
README then says which files differed).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from genlab.train import atomic_write

PACKAGE = Path(__file__).resolve().parents[1]
_run_commit: str | None = None  # what require_clean found when this run started: the code that ran


def _commit_and_changes() -> tuple[str | None, list[str]]:
    """The short commit of the checkout (None outside a git checkout) and the package files that differ."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE)],
            cwd=PACKAGE,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None, []
    return commit or None, sorted({line[3:] for line in changed if line.strip()})


def git_commit() -> str:
    """The commit this run started from (see :func:`require_clean`), or else the checkout's now.

    A run takes minutes to hours; a commit made meanwhile holds other code, so it is not the one named.
    Uncommitted package files are named after it.
    """
    if _run_commit is not None:
        return _run_commit
    commit, files = _commit_and_changes()
    return (commit or "unknown") + (f" with uncommitted changes to {', '.join(files)}" if files else "")


def require_clean(allow_dirty: bool = False) -> str:
    """The commit results will name; a ``SystemExit`` that says what to do when it does not hold the code.

    ``allow_dirty`` lets a run go ahead anyway (a trial): its README then names the changed files.
    """
    global _run_commit
    commit, files = _commit_and_changes()
    if allow_dirty:
        _run_commit = None
        _run_commit = git_commit()
        return _run_commit
    if commit is None:
        raise SystemExit(
            f"{PACKAGE} is not in a git checkout, so results could not name the code that made them; "
            "run from a clone of the course, or pass --allow-dirty for a trial run"
        )
    if files:
        raise SystemExit(
            f"uncommitted changes to {', '.join(files)}: results would name commit {commit}, which lacks them. "
            "Commit first, or pass --allow-dirty for a trial run (its README names the changed files)"
        )
    _run_commit = commit
    return commit


def add_dirty_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--allow-dirty`` option every results runner offers (see :func:`require_clean`)."""
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run although the package has uncommitted changes (a trial: the README names them)",
    )


def machine(device: torch.device) -> str:
    """The hardware and software the numbers were measured on, in one line."""
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, device {device}{gpu}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {torch.get_num_threads()} torch thread(s)"
    )


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1-minute load average: times measured on a shared machine mean little without it."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "unknown"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], float_format: str = ".6g") -> Path:
    """Write ``rows`` (the union of their keys as columns) to ``path`` in one step; floats as ``float_format``."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: (format(v, float_format) if isinstance(v, float) else v) for k, v in r.items()})

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)
