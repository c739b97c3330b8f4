"""What the contract of every call (autograder/probing.py) costs a submission, chapter by chapter.

    python benchmarks/bench_contract.py [--seeds 3] [--chapters vae_theory ...] [--no-notebooks]

For every chapter it measures, in one run and in mirrored order (contract, bare, bare, contract,
so that a drifting load favours neither side):

* the probes of all its checks in the kernel, on the reference answers, with ``Trial.call`` as it
  is (arguments snapshot, device watch, result signature, second call) and with a bare call
  (the student's function called once, as before the contract);
* the chapter's source notebook executed in the grading profile (``NBGRADER_EXECUTION`` set, the
  probes recording into a folder as in a grading kernel), once;
* the grader's verification of all its checks (the reference runs and the comparisons).

and prints

    contract_execution_overhead: <notebook with the contract / the same without>x   (target <= 1.30x)
    verification_per_submission: <s, the slowest chapter>                           (target <= 1 s)

with the raw figures per chapter. "Without" is the measured execution minus the probes' extra time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from autograder import manifest, probing  # noqa: E402

CHAPTERS = ("vae_theory", "ae_to_cvae", "conv_vae", "dcgan", "adversarial", "harmonic")


@contextmanager
def bare_calls() -> Iterator[None]:
    """Trial.call as before the contract: the student's function, called once, nothing recorded about it."""
    contract = probing.Trial.call

    def call(self: probing.Trial, fn: Callable, *args: Any, what: str, exempt: Any = None, **kwargs: Any) -> Any:
        self.doing = what
        return fn(*args, **kwargs) if self.reference else self._guarded(fn, args, kwargs, what)

    probing.Trial.call = call  # type: ignore[method-assign]
    try:
        yield
    finally:
        probing.Trial.call = contract  # type: ignore[method-assign]


def checks(chapter: str) -> list[probing.Check]:
    module = importlib.import_module(f"autograder.checks.{chapter}")
    return [c for name, c in probing.checks_of(module).items() if name.startswith("probe_")]


def probes(chapter: str, seeds: range) -> float:
    """Seconds for the kernel side of every check of the chapter, per submission (mean over seeds)."""
    start = time.perf_counter()
    for seed in seeds:
        for check in checks(chapter):
            check.run(check.reference, seed)
    return (time.perf_counter() - start) / len(seeds)


def verification(chapter: str, seeds: range) -> float:
    """Seconds for the grader side of every check of the chapter, per submission (mean over seeds)."""
    payloads = {seed: {c.exercise: c.run(c.reference, seed) for c in checks(chapter)} for seed in seeds}
    start = time.perf_counter()
    for seed in seeds:
        for check in checks(chapter):
            assert check.verify(payloads[seed][check.exercise], seed) is None, check.exercise
    return (time.perf_counter() - start) / len(seeds)


def notebook(chapter: str) -> float:
    """Seconds to execute the chapter's source notebook in the grading profile, probes recording."""
    import nbclient
    import nbformat

    nb = nbformat.read(manifest.load(chapter).source, as_version=4)
    env = {"GENLAB_PROFILE": "smoke", "NBGRADER_EXECUTION": "autograde", "GENLAB_PROGRESS": "0"}
    saved = {k: os.environ.get(k) for k in (*env, probing.PROBE_DIR_ENV)}
    with tempfile.TemporaryDirectory() as probes_dir:
        os.environ.update(env, **{probing.PROBE_DIR_ENV: probes_dir})
        try:
            start = time.perf_counter()
            nbclient.NotebookClient(nb, timeout=1200, resources={"metadata": {"path": str(ROOT)}}).execute()
            return time.perf_counter() - start
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--chapters", nargs="*", default=list(CHAPTERS))
    parser.add_argument("--no-notebooks", action="store_true", help="skip the notebooks (no overhead ratio)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = range(args.seeds)
    load = os.getloadavg()[0]
    rows = []
    for chapter in args.chapters:
        probes(chapter, range(1))  # imports, first optimizer steps: paid once, by neither side
        with_contract, bare = [probes(chapter, seeds)], []
        with bare_calls():
            bare += [probes(chapter, seeds), probes(chapter, seeds)]
        with_contract.append(probes(chapter, seeds))
        executed = None if args.no_notebooks else notebook(chapter)
        rows.append(
            (chapter, statistics.mean(with_contract), statistics.mean(bare), executed, verification(chapter, seeds))
        )
    for chapter, on, off, executed, verify in rows:
        extra = on - off
        ratio = f"{executed / (executed - extra):.3f}x" if executed else "not measured"
        print(
            f"    {chapter}: probes {on:.2f}s with the contract, {off:.2f}s bare (+{extra:.2f}s); notebook in the "
            f"grading profile {executed or 0:.1f}s -> {ratio}; verification {verify:.2f}s"
        )
    if not args.no_notebooks:
        worst = max(executed / (executed - (on - off)) for _, on, off, executed, _ in rows if executed)
        print(f"contract_execution_overhead: {worst:.3f}x (the chapter where it adds most)")
    print(f"verification_per_submission: {max(r[4] for r in rows):.2f}s (the slowest chapter, all its checks)")
    print(
        f"    {os.cpu_count()} cores, one torch thread, {args.seeds} seeds; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
