"""Where and how a chapter runs: the profile, the device and the random seed."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

PROFILES = ("smoke", "full", "full-dry")
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """How much work a chapter does.

    ``name`` is ``smoke`` (CI, the demo: small subsets, CPU-friendly, printed stand-ins
    for datasets that are not available), ``full`` (the published numbers) or ``full-dry``:
    the full profile's code path (its model sizes and data loaders, never a stand-in) with
    epochs, sample counts and attack budgets cut to a minimum, so that CI executes what a GPU
    runner would, on small data folders, in minutes (``full`` is true for it too).
    ``grading`` is true while nbgrader executes a submission: training cells then do the
    minimum the hidden tests need.
    """

    name: str
    grading: bool = False

    @property
    def smoke(self) -> bool:
        return self.name == "smoke"

    @property
    def full(self) -> bool:
        return self.name in ("full", "full-dry")

    @property
    def dry(self) -> bool:
        return self.name == "full-dry"

    def pick(self, *, smoke: T, full: T, grading: T | None = None, dry: T | None = None) -> T:
        """The value for the current mode, e.g. ``epochs = P.pick(smoke=2, full=30, grading=1, dry=1)``.

        ``dry`` is the ``full-dry`` profile's value where the full one would take too long on a CPU
        (an epoch count, a sample size); without it, ``full-dry`` takes the full value.
        """
        if self.grading and grading is not None:
            return grading
        if self.dry and dry is not None:
            return dry
        return full if self.full else smoke


def profile() -> Profile:
    """Read ``GENLAB_PROFILE`` (default ``smoke``) and the grading mode (``NBGRADER_EXECUTION``)."""
    name = os.environ.get("GENLAB_PROFILE", "smoke").strip().lower() or "smoke"
    if name not in PROFILES:
        raise ValueError(f"GENLAB_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}")
    return Profile(name=name, grading=bool(os.environ.get("NBGRADER_EXECUTION")))


def device() -> torch.device:
    """The fastest device here: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
