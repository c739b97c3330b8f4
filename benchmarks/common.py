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


def sync(dev) -> None:
    """Wait for the GPU's queued work, so that a timer sees it (nothing to wait for on a CPU)."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def thread_settings(threads: int) -> list[int]:
    """The torch thread counts to measure: ``threads`` alone, or (0) all cores and then one."""
    import os

    return [threads] if threads > 0 else list(dict.fromkeys([os.cpu_count() or 1, 1]))


def warm_up(*makers: Callable[[], object], batches: int) -> None:
    """Draw ``batches`` batches from each loader: first-call costs (kernels, worker start-up) out of the figures."""
    for make in makers:
        it = iter(make())
        for _ in range(batches):
            next(it)
        del it


def data_epoch(batches: Callable[[], object], dev, *, move: bool) -> tuple[float, int]:
    """Seconds to draw one epoch of ``batches()`` and touch each batch on ``dev``, and the batches drawn."""
    import torch

    sync(dev)
    start = time.perf_counter()
    steps, total = 0, torch.zeros((), device=dev)
    for x, _ in batches():
        if move:
            x = x.to(dev, non_blocking=True)
        total += x.flatten()[0]
        steps += 1
    sync(dev)
    return time.perf_counter() - start, steps


def epochs_side_by_side(contenders, train_epoch: Callable, dev, reps: int) -> dict:
    """Alternate each contender's training epoch and data-only epoch ``reps`` times; medians of each.

    ``contenders`` are ``(name, batches, move)``: ``batches()`` makes one epoch's loader, ``move``
    says whether its batches still have to go to ``dev``. ``train_epoch(batches, move=...)`` returns
    (seconds, steps, last loss). The result holds each name's and ``<name>_data`` median, ``steps``,
    the raw ``runs`` and the last ``losses``; contenders that take different step counts are an error.
    """
    times: dict[str, list[float]] = {}
    steps: dict[str, int] = {}
    losses: dict[str, float] = {}
    for _ in range(max(1, reps)):
        for name, batches, move in contenders:
            seconds, steps[name], losses[name] = train_epoch(batches, move=move)
            times.setdefault(name, []).append(seconds)
            seconds, _ = data_epoch(batches, dev, move=move)
            times.setdefault(f"{name}_data", []).append(seconds)
    if len(set(steps.values())) > 1:
        raise SystemExit(f"step counts differ: {steps}")
    med: dict = {k: statistics.median(v) for k, v in times.items()}
    med.update(steps=next(iter(steps.values())), runs=times, losses=losses)
    return med
