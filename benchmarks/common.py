"""Helpers shared by the benchmark scripts (each is run as ``python benchmarks/<name>.py``)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T], reps: int, *, warmup: bool = False) -> tuple[float, T]:
    """Median wall time of ``reps`` calls of ``fn`` (after one untimed call if ``warmup``), and its last result."""
    if warmup:
        fn()
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out
