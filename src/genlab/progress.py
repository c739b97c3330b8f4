"""Progress bars that show in a terminal or notebook and stay quiet in batch runs."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def interactive() -> bool:
    """True when a person is likely watching: a terminal, or a notebook with a front end.

    ``GENLAB_PROGRESS=1`` or ``0`` overrides; grading runs (``NBGRADER_EXECUTION``) are quiet.
    """
    forced = os.environ.get("GENLAB_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    if os.environ.get("NBGRADER_EXECUTION"):
        return False
    if "ipykernel" in sys.modules:
        # A kernel started by nbclient (nbval, jupyter-book, nbconvert) has no front end to draw on.
        return not os.environ.get("GENLAB_BATCH")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], **kwargs) -> Iterable[T]:
    """``tqdm`` over ``iterable``, disabled when nobody is watching."""
    kwargs.setdefault("disable", not interactive())
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
