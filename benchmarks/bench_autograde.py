"""Autograde time per submission, and what the sandbox and parallel grading cost or save.

    python benchmarks/bench_autograde.py [assignment]

Grades the three sample submissions (correct, blank, typical mistakes) of one assignment in a
throw-away course: once one at a time without the sandbox, once one at a time in the sandbox,
once two at a time in the sandbox. Prints

    autograde_sandbox_overhead: <sandboxed / plain>x
    autograde_parallel_speedup: <one at a time / two at a time>x

followed by the seconds per submission of each run (target: under 60 s each on a 2-core CPU).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from autograder import grade, manifest, release
from autograder.course import ROOT


def course(name: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix="genlab-bench-"))
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "source" / name, root / "source" / name)
    release.release([name], root=root)
    return root


def run(name: str, *, sandbox: bool, jobs: int) -> tuple[float, list[grade.Result]]:
    os.environ["GENLAB_SANDBOX"] = "1" if sandbox else "0"
    root = course(name)
    try:
        grade.write_samples(manifest.load(name), root)
        start = time.perf_counter()
        results = grade.grade(name, jobs=jobs, root=root)
        return time.perf_counter() - start, results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else manifest.all_manifests()[0].name
    plain, plain_results = run(name, sandbox=False, jobs=1)
    boxed, boxed_results = run(name, sandbox=True, jobs=1)
    parallel, _ = run(name, sandbox=True, jobs=2)
    per = lambda rs: ", ".join(f"{r.student} {r.seconds:.1f}s" for r in rs)  # noqa: E731
    print(f"autograde_sandbox_overhead: {boxed / plain:.2f}x")
    print(f"    {name}: plain {plain:.1f}s [{per(plain_results)}]; sandboxed {boxed:.1f}s [{per(boxed_results)}]")
    print(f"autograde_parallel_speedup: {boxed / parallel:.2f}x")
    print(f"    {name}: 3 submissions one at a time {boxed:.1f}s, two at a time {parallel:.1f}s (incl. feedback, export)")


if __name__ == "__main__":
    main()
