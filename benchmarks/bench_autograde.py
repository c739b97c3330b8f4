"""Grading throughput on Ray against sequential ``nbgrader autograde``, and what each grading step costs.

    python benchmarks/bench_autograde.py [--submissions 12] [--jobs 2] [--overhead 6] [--in-kernel 6]
                                         [--gpu-fraction F]

Grades the batch of tests/gradingcourse.py (correct, blank, typical mistakes, a sleeper past its
cell limit, a memory hog, a kernel that exits, warnings; repeated to ``--submissions``) in
throw-away courses and prints

    ray_grading_speedup: <sequential autograde / Ray with --jobs workers>x   (target >= 1.8x with 2 workers)
    single_record_per_submission: <s>                                         (the driver applying a stored result)
    ray_overhead_per_submission: <s>                                          (target <= 1 s)
    sandbox_vs_in_kernel: <today's path / the previous in-kernel path>x       (issue 7)
    verification_per_submission: <s>                                          (target <= 1 s)

with the raw figures. Each figure is the mean of two runs made in mirrored order (sequential, Ray,
bare, Ray with one worker, in-kernel, then the same backwards), so a load that drifts during the
benchmark favours no side. The sequential reference runs ``nbgrader autograde --student`` for each
submission, one after the other. The Ray figure is the grading itself (first task submitted to
last result, on a started cluster); the run's total with intake, feedback, export and the
cluster's start is printed beside it. The overhead runs the Ray path with one worker on
``--overhead`` submissions against the same number of bare autogrades. The previous path is
nbgrader's own Execute without the jail, the hidden probes verifying inside the kernel (as they
do when ``$GENLAB_PROBE_DIR`` is unset).

GPU runners (16 cores, one GPU): ``--submissions 64 --jobs 16 --gpu-fraction 0.0625`` grades with
every task holding a sixteenth of the GPU; record its output under results/grading/ with the
command, the commit and the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402

from autograder import grade, status  # noqa: E402
from autograder.course import gradebook_url  # noqa: E402
from tests import gradingcourse as gc  # noqa: E402

IN_KERNEL_CONFIG = '''"""nbgrader's own autograde steps, no jail: the previous path, for comparison."""
from pathlib import Path
here = Path(__file__).resolve().parent
c = get_config()  # noqa: F821
c.CourseDirectory.root = str(here)
c.CourseDirectory.course_id = "genlab"
c.CourseDirectory.db_url = f"sqlite:///{here / 'gradebook.db'}?timeout=60"
c.Execute.timeout = 20  # the manifest's cell limit
c.Execute.interrupt_on_timeout = True
c.Execute.kernel_name = "python3"
'''


def students(n: int) -> dict[str, str]:
    """``n`` submissions: student id -> the batch's submission it hands in (the batch, repeated)."""
    batch = list(gc.BATCH)
    return {
        batch[i % len(batch)] + (f"-{i // len(batch)}" if i >= len(batch) else ""): batch[i % len(batch)]
        for i in range(n)
    }


def course(
    tag: str, names: dict[str, str], *, gpu: str = "none", fraction: float | None = None, config: Path | None = None
) -> Path:
    root = gc.make_course(
        Path(tempfile.mkdtemp(prefix=f"genlab-bench-{tag}-")), gpu=gpu, gpu_fraction=fraction, config=config
    )
    for student, kind in names.items():
        folder = root / "submitted" / student / gc.NAME
        folder.mkdir(parents=True)
        nbformat.write(gc.submission(kind), folder / f"{gc.NAME}.ipynb")
    return root


def sequential(names: dict[str, str], *, config: Path | None = None, env: dict | None = None) -> tuple[float, Path]:
    root = course("seq", names, config=config)
    seconds, _ = gc.autograde_sequentially(root, names, env=env)
    return seconds, root


def on_ray(names: dict[str, str], jobs: int, *, fraction: float | None = None) -> tuple[float, float, list]:
    """(grading seconds: first task submitted to last result, the whole run's seconds, results)."""
    root = course("ray", names, gpu="required" if fraction else "none", fraction=fraction)
    try:
        start = time.perf_counter()
        results = grade.grade(gc.NAME, jobs=jobs, root=root)
        total = time.perf_counter() - start
        first = min(r.window[0] - r.phases["queued_s"] for r in results)
        last = max(r.window[1] for r in results)
        return last - first, total, results
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _listed(seconds) -> str:
    """Each run's seconds, for the raw figures beside a ratio."""
    return ", ".join(f"{x:.1f}" for x in seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--overhead", type=int, default=6, help="submissions for the overhead figure (0: skip)")
    parser.add_argument("--in-kernel", type=int, default=6, help="submissions for the issue-7 figure (0: skip)")
    parser.add_argument("--gpu-fraction", type=float, help="grade as gpu = required with this share of a GPU per task")
    args = parser.parse_args()
    os.environ.setdefault("GENLAB_PROGRESS", "0")
    names = students(args.submissions)
    load = os.getloadavg()[0]

    start = time.perf_counter()
    grade._cluster(None, args.jobs, None)  # a started cluster: its start is counted apart
    cluster_start = time.perf_counter() - start
    few = dict(list(names.items())[: max(args.overhead, args.in_kernel)])
    config = Path(tempfile.mkdtemp(prefix="genlab-bench-config-")) / "nbgrader_config.py"
    config.write_text(IN_KERNEL_CONFIG)

    # Every figure is the mean of two runs in mirrored order (A B C ... C B A): a machine whose load
    # drifts during the benchmark favours no side.
    runs: dict[str, list] = {"seq": [], "ray": [], "bare": [], "one": [], "plain": []}
    seq_rows: list = []

    def measure(what: str) -> None:
        if what == "seq":
            seconds, root = sequential(names)
            seq_rows.extend(status.rows(gradebook_url(root), gc.NAME))
            shutil.rmtree(root, ignore_errors=True)
            runs["seq"].append(seconds)
        elif what == "ray":
            runs["ray"].append(on_ray(names, args.jobs, fraction=args.gpu_fraction))
        elif what == "bare":
            seconds, root = sequential(few)
            shutil.rmtree(root, ignore_errors=True)
            runs["bare"].append(seconds)
        elif what == "one":
            runs["one"].append(on_ray(few, 1)[0])
        else:
            seconds, root = sequential(few, config=config, env={"GENLAB_SANDBOX": "0"})
            shutil.rmtree(root, ignore_errors=True)
            runs["plain"].append(seconds)

    order = (
        ["seq", "ray"]
        + (["bare"] if few else [])
        + (["one"] if args.overhead else [])
        + (["plain"] if args.in_kernel else [])
    )
    for what in order + order[::-1]:
        measure(what)
    mean = statistics.mean
    seq = mean(runs["seq"])
    ray_s, ray_total = mean(r[0] for r in runs["ray"]), mean(r[1] for r in runs["ray"])
    once = all(r.state == "graded" and r.executions == 1 for run in runs["ray"] for r in run[2])
    print(f"ray_grading_speedup: {seq / ray_s:.2f}x")
    print(
        f"    {len(names)} submissions: sequential nbgrader autograde {seq:.1f}s ({seq / len(names):.1f}s each; runs "
        f"{_listed(runs['seq'])}); Ray with {args.jobs} workers {ray_s:.1f}s of grading (runs "
        f"{_listed(r[0] for r in runs['ray'])}), {ray_total:.1f}s for the whole run (intake, feedback, "
        f"export) + {cluster_start:.1f}s to start the local cluster once: end to end "
        f"{seq / (ray_total + cluster_start):.2f}x; every submission graded once: {once}"
    )
    applied = [r.apply_s for run in runs["ray"] for r in run[2] if r.apply_s]
    print(f"single_record_per_submission: {mean(applied):.3f}s")
    print(
        f"    the driver's share of the single record: the private gradebook's template (shared out) and applying "
        f"each stored result to nbgrader's gradebook and autograded/; mean of {len(applied)} (max {max(applied):.3f}s)"
    )
    if args.overhead:
        bare_s, one = mean(runs["bare"]), mean(runs["one"])
        print(f"ray_overhead_per_submission: {(one - bare_s) / len(few):.2f}s")
        print(
            f"    {len(few)} submissions one at a time: bare nbgrader autograde {bare_s:.1f}s (runs "
            f"{_listed(runs['bare'])}), Ray with one worker {one:.1f}s of grading (runs "
            f"{_listed(runs['one'])})"
        )
    if args.in_kernel:
        boxed, plain = mean(runs["bare"]), mean(runs["plain"])
        print(f"sandbox_vs_in_kernel: {boxed / plain:.2f}x")
        print(
            f"    per submission ({len(few)}: correct, blank, typical mistakes): GradeExecute + VerifyProbes in the "
            f"jail {boxed / len(few):.1f}s, nbgrader's Execute with the probes verifying in the kernel "
            f"{plain / len(few):.1f}s (runs {_listed(runs['plain'])})"
        )
    verify = [r["verify_s"] for r in seq_rows if r["verify_s"]]
    execute = [r["execute_s"] for r in seq_rows if r["execute_s"]]
    prepare = [r["prepare_s"] for r in seq_rows if r["prepare_s"]]
    print(f"verification_per_submission: {statistics.median(verify):.2f}s")
    print(
        f"    median of {len(verify)} sandboxed autogrades (max {max(verify):.2f}s); nbgrader's start and "
        f"sanitising {statistics.median(prepare):.1f}s, execution in the jail {statistics.median(execute):.1f}s"
    )
    print(
        "gpu_grading_speedup: not measured here (no GPU on this machine); on a runner with 16 cores and one GPU: "
        "python benchmarks/bench_autograde.py --submissions 64 --jobs 16 --gpu-fraction 0.0625, "
        "recorded under results/grading/ (target >= 12x)"
    )
    print(
        f"    machine: {os.cpu_count()} cores, load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        "end"
    )
    grade.stop_cluster()


if __name__ == "__main__":
    main()
