"""Grade every submission of an assignment with the standard nbgrader commands, fanned out over Ray.

    python -m autograder.grade <assignment> [...] [--jobs N] [--address ray://host:port] [--regrade]
                               [--course DIR] [--samples]

0. Checks first, before any submission is touched: the assignment has a release, the gradebook
   (``GENLAB_GRADEBOOK``, SQLite in the course by default) answers and knows the assignment, the
   Ray cluster answers (``--address`` or ``RAY_ADDRESS``; else a local cluster with N worker
   slots is started) and has a GPU if the manifest says ``gpu = "required"``.
1. intake (autograder/intake.py): each submitted/<student>/<assignment>/ is made gradable before
   nbgrader sees it: links and special files removed, a renamed notebook renamed back, a file
   that is not a notebook set aside, deleted graded cells restored; notes reach the feedback.
2. One Ray task per submission that has no result yet for its current files (the status table,
   autograder/status.py, keyed by the digest of the submitted notebooks): the task grades in a
   private course folder with ``nbgrader autograde`` (autograder/runner.py), each kernel in the
   sandbox; one broken submission never stops the rest. The autograded notebooks are written
   into the course as results arrive. A run killed at any moment and started again grades only
   what is left, each submission exactly once; a changed resubmission is graded again.
3. ``nbgrader generate_feedback`` and ``nbgrader export``; a grade table with the time of each
   phase is printed, and the phase times are written to grading-times.csv beside grades.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import sqlalchemy as sa
from nbgrader.api import Gradebook, MissingEntry

from autograder import manifest, notebooks, runner, status
from autograder.course import gradebook_url
from autograder.intake import NOTES_TITLE, intake
from autograder.release import nbgrader

ROOT = manifest.ROOT
TIMES_CSV = "grading-times.csv"
PHASE_NAMES = {
    "queued_s": "queued",
    "prepare_s": "preparing",
    "execute_s": "executing",
    "verify_s": "verifying",
    "write_s": "writing",
}


class GradebookError(RuntimeError):
    """The gradebook database cannot be used (unreachable, or the assignment cannot be recorded in it)."""


@dataclass
class Result:
    student: str
    auto_score: float = 0.0  # code cells: the hidden and visible tests
    auto_max: float = 0.0
    written_score: float = 0.0  # written answers (nbgrader scores an untouched one 0 by itself)
    written_max: float = 0.0
    written_pending: float = 0.0  # points of written answers a person still has to grade
    seconds: float = 0.0  # the five phases together
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why the submission is ungraded
    state: str = "queued"
    phases: dict[str, float] = field(default_factory=dict)
    executions: int = 0
    digest: str = ""
    gpu_ids: list[str] = field(default_factory=list)  # the GPUs its task held in this run
    window: tuple[float, float] = (0.0, 0.0)  # wall-clock start and end of its task in this run


def mistake_student(k: int) -> str:
    """The sample student of the k-th round of typical mistakes (0-based)."""
    return "demo-mistakes" if k == 0 else f"demo-mistakes-{k + 1}"


def write_samples(m: manifest.Manifest, root: Path = ROOT, rounds: int | None = None) -> dict[str, Path]:
    """Sample submissions: the source solutions, the untouched release, and the typical mistakes.

    A cell can have several typical mistakes but a submission holds one answer per cell, so the
    mistakes come in rounds (:meth:`Manifest.mistake_rounds`): ``demo-mistakes`` holds the first
    mistake of every cell, ``demo-mistakes-2`` the second, and so on (``rounds`` of them; all by default).
    """
    release_nb = notebooks.read(root / "release" / m.name / m.notebook)
    source_nb = notebooks.read(m.source_at(root))
    samples = {"demo-correct": notebooks.fill(release_nb, source_nb), "demo-blank": release_nb}
    for k, mistakes in enumerate(m.mistake_rounds()[:rounds]):
        samples[mistake_student(k)] = notebooks.fill(release_nb, source_nb, {x.cell: x.code for x in mistakes})
    paths = {}
    for student, nb in samples.items():
        folder = root / "submitted" / student / m.name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / m.notebook)
        paths[student] = folder / m.notebook
    return paths


# ----------------------------------------------------------------------------- checks before anything


def _safe_url(db_url: str) -> str:
    try:
        return sa.engine.make_url(db_url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return db_url


def check_gradebook(db_url: str, m: manifest.Manifest, root: Path) -> None:
    """The gradebook answers and holds the assignment (recorded from its source when it does not)."""
    try:
        url = sa.engine.make_url(db_url)
        args = {"connect_timeout": 10} if url.get_backend_name() == "postgresql" else {}
        with sa.create_engine(url, connect_args=args).connect():
            pass
    except Exception as exc:  # a bad URL, a refused connection, a missing driver or database, wrong credentials
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GradebookError(
            f"cannot reach the gradebook {_safe_url(db_url)} ({reason}). Start the database (a private PostgreSQL: "
            "`python -m autograder.pgserver start`) or fix GENLAB_GRADEBOOK (unset, it is SQLite in the course)"
        ) from None
    with Gradebook(db_url) as gb:  # first, so that nbgrader creates (and versions) a new database itself
        try:
            known = {nb.name for nb in gb.find_assignment(m.name).notebooks}
        except MissingEntry:
            known = set()
    if Path(m.notebook).stem not in known:
        _record_assignment(m, root, db_url)
    status.engine(db_url)


def _record_assignment(m: manifest.Manifest, root: Path, db_url: str) -> None:
    """Record an assignment in a gradebook that lacks it (a new database): run ``generate_assignment`` aside."""
    scratch = Path(tempfile.mkdtemp(prefix="genlab-record-"))
    try:
        shutil.copy(root / "nbgrader_config.py", scratch / "nbgrader_config.py")
        shutil.copytree(root / "source" / m.name, scratch / "source" / m.name, symlinks=True)
        env_before = os.environ.get("GENLAB_GRADEBOOK")
        os.environ["GENLAB_GRADEBOOK"] = db_url
        try:
            proc = nbgrader("generate_assignment", m.name, "--force", root=scratch, check=False)
        finally:
            if env_before is None:
                os.environ.pop("GENLAB_GRADEBOOK", None)
            else:
                os.environ["GENLAB_GRADEBOOK"] = env_before
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["generate_assignment failed"])[-1]
            raise GradebookError(f"could not record assignment {m.name} in the gradebook {_safe_url(db_url)}: {last}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_cluster_reaches(db_url: str, cluster: runner.Cluster) -> None:
    if cluster.address == "local" or not db_url.startswith("sqlite"):
        return
    host = cluster.address.split("://")[-1].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "auto", os.uname().nodename):
        raise GradebookError(
            f"the Ray cluster at {cluster.address} cannot reach the SQLite gradebook {db_url} on this machine: set "
            "GENLAB_GRADEBOOK to a database server both reach (postgresql://user:password@host:port/db)"
        )


# ----------------------------------------------------------------------------- the run


def _notes_in(path: Path) -> list[str]:
    """The grading notes intake put at the top of a notebook (for a run that resumes after intake)."""
    try:
        first = notebooks.read(path).cells[0]
    except (OSError, IndexError, ValueError):
        return []
    if first.cell_type != "markdown" or not first.source.startswith(NOTES_TITLE):
        return []
    return [line[2:] for line in first.source.splitlines() if line.startswith("- ")]


def _deliver(root: Path, m: manifest.Manifest, student: str, notebook: bytes) -> float:
    """Write an autograded notebook into the course (where nbgrader autograde would); return the seconds taken."""
    start = time.perf_counter()
    dest = root / "autograded" / student / m.name
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / m.notebook
    if not (target.is_file() and not target.is_symlink() and target.read_bytes() == notebook):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(notebook)
        os.replace(tmp, target)
    stamp = root / "submitted" / student / m.name / "timestamp.txt"
    if stamp.is_file() and not stamp.is_symlink():
        shutil.copyfile(stamp, dest / "timestamp.txt")
    return time.perf_counter() - start


def _discard(root: Path, m: manifest.Manifest, student: str) -> None:
    """Remove an autograded notebook that belongs to an older submission (or to a run that failed)."""
    shutil.rmtree(root / "autograded" / student / m.name, ignore_errors=True)


def grade(
    name: str,
    *,
    jobs: int = 2,
    root: Path = ROOT,
    address: str | None = None,
    regrade: bool = False,
    gpus: float | None = None,
    keep_cluster: bool = True,
) -> list[Result]:
    """Checks, intake, grading on Ray, feedback and export for every submission of assignment ``name``.

    ``address`` (else ``$RAY_ADDRESS``) names an existing Ray cluster; without one a local cluster
    with ``jobs`` worker slots (and ``gpus`` declared GPUs, if given) is started, and kept for the
    next call in this process unless ``keep_cluster`` is false. ``regrade`` grades again what is
    graded already (after a hidden test was fixed).
    """
    bin_dir = str(Path(sys.executable).parent)  # nbgrader runs `alembic` when it creates a gradebook
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    m = manifest.load(name, root)
    release_nb = root / "release" / m.name / m.notebook
    if not release_nb.exists():
        raise FileNotFoundError(
            f"assignment {m.name} has no release ({release_nb} is missing): run `make release` "
            f"or `python -m autograder.release {m.name}` first"
        )
    folders = sorted(p for p in (root / "submitted").glob(f"*/{m.name}") if p.is_dir() and not p.is_symlink())
    if not folders:
        raise FileNotFoundError(f"no submissions in {root / 'submitted'}/<student>/{m.name}/")
    db_url = gradebook_url(root)
    check_gradebook(db_url, m, root)
    cluster = _cluster(address, jobs, gpus)
    _check_cluster_reaches(db_url, cluster)
    runner.check_gpu(m, cluster)

    # intake, once per submitted file: a folder whose digest has a row was taken in already
    results: dict[str, Result] = {}
    rows: dict[str, dict[str, Any]] = {}
    for folder in folders:
        student = folder.parent.name
        sha = status.digest(folder)
        row = status.get(db_url, m.name, student, sha)
        if row is None:
            notes = intake(folder, m, release_nb)
            sha = status.digest(folder)
            row = status.ensure(db_url, m.name, student, sha)
        else:
            notes = _notes_in(folder / m.notebook)
        if row["state"] == "ungraded" or (regrade and row["state"] == "graded"):
            status.requeue(db_url, row, reason="")
            row = status.get(db_url, m.name, student, sha)
        results[student] = Result(student, notes=notes, digest=sha)
        rows[student] = row

    todo = [s for s, row in rows.items() if row["state"] != "graded"]
    for student in todo:
        _discard(root, m, student)
    for student, row in rows.items():
        if row["state"] == "graded":
            data = status.notebook_bytes(status.get(db_url, m.name, student, row["digest"]))
            if data is not None:
                _deliver(root, m, student, data)

    course = runner.course_files(root, m)
    env = {k: os.environ[k] for k in runner.PASSED_ENV if k in os.environ}
    jobs_list = [
        runner.Job(
            assignment=m.name,
            student=s,
            digest=rows[s]["digest"],
            notebook=m.notebook,
            db_url=db_url,
            budget_s=runner.budget(m),
            env=env,
            files=runner.submission_files(root / "submitted" / s / m.name, m, s),
        )
        for s in todo
    ]
    if jobs_list:
        _run(m, jobs_list, course, cluster, root, db_url, jobs, results)
    if not keep_cluster:
        stop_cluster()

    nbgrader("generate_feedback", m.name, "--force", root=root, check=False)
    nbgrader("export", f"--CsvExportPlugin.filename={root / 'grades.csv'}", root=root, check=False)
    _collect(db_url, m, results)
    write_times(root / TIMES_CSV, m, list(results.values()))
    return list(results.values())


_local_cluster = False  # whether this process started the Ray it uses (and may restart it to fit a run)


def _cluster(address: str | None, jobs: int, gpus: float | None) -> runner.Cluster:
    global _local_cluster
    import ray

    if ray.is_initialized() and _local_cluster:
        resources = ray.cluster_resources()
        if (
            address
            or os.environ.get("RAY_ADDRESS")
            or resources.get("CPU", 0) < jobs
            or (gpus is not None and resources.get("GPU", 0) != gpus)
        ):
            runner.shutdown()  # the local cluster of an earlier call does not fit this one
            _local_cluster = False
    cluster = runner.connect(address, jobs=jobs, gpus=gpus)
    _local_cluster = _local_cluster or cluster.started_here
    return cluster


def stop_cluster() -> None:
    """Stop the Ray this process uses (a local cluster started by :func:`grade` goes with it)."""
    global _local_cluster
    runner.shutdown()
    _local_cluster = False


def _run(m, jobs_list, course, cluster, root, db_url, jobs, results) -> None:
    from genlab.progress import progress

    counts = {"graded": 0, "ungraded": 0}
    bar = progress(None, total=len(jobs_list), desc=f"grading {m.name}", unit="submission", leave=True)

    def advance(state: str) -> None:
        counts[state] += 1
        bar.set_postfix(counts, refresh=False)
        bar.update(1)

    def on_result(job: runner.Job, result: dict[str, Any]) -> None:
        queued = max(0.0, result["started"] - job.submitted)
        write = 0.0
        if result["state"] == "graded" and result["notebook"] is not None:
            write = _deliver(root, m, job.student, result["notebook"])
        phases = {**result["phases"], "queued_s": queued, "write_s": result["phases"].get("write_s", 0.0) + write}
        status.set_phase(db_url, m.name, job.student, job.digest, **phases)
        results[job.student].gpu_ids = list(result.get("gpu_ids", []))
        results[job.student].window = (result["started"], result.get("finished", result["started"]))
        advance("graded" if result["state"] == "graded" else "ungraded")

    def on_failure(job: runner.Job, reason: str) -> None:
        row = status.get(db_url, m.name, job.student, job.digest)
        if row and row["state"] == "graded":  # its process outlived the task and recorded the result
            on_result(job, {**runner._result(job, row, job.submitted, ""), "started": job.submitted})
            return
        if row and status.claim_alive(row):
            row = status.wait_while_running(db_url, row, timeout_s=job.budget_s)
            if row["state"] == "graded":
                on_result(job, {**runner._result(job, row, job.submitted, ""), "started": job.submitted})
                return
        if row and row["state"] in ("queued", "running") and not status.claim_alive(row):
            status.set_state(
                db_url,
                m.name,
                job.student,
                job.digest,
                "ungraded",
                f"its grading task failed twice ({reason}); grade it again later",
                token=row.get("token") if row["state"] == "running" else None,
                expect=row["state"],
            )
        advance("ungraded")

    try:
        runner.run(m, jobs_list, course, cluster, limit=max(1, jobs), on_result=on_result, on_failure=on_failure)
    finally:
        bar.close()


def _collect(db_url: str, m: manifest.Manifest, results: dict[str, Result]) -> None:
    """Scores from the gradebook, states and phase times from the status table."""
    with Gradebook(db_url) as gb:
        for r in results.values():
            row = status.get(db_url, m.name, r.student, r.digest) or {}
            r.state = row.get("state", "queued")
            r.executions = row.get("executions") or 0
            r.phases = {p: row.get(p) or 0.0 for p in status.PHASES}
            r.seconds = sum(r.phases.values())
            if r.state != "graded":
                r.error = row.get("reason") or f"not graded ({r.state})"
                continue
            try:
                sub = gb.find_submission(m.name, r.student)
            except MissingEntry:  # recorded as graded in another gradebook?
                r.error = "graded, but the gradebook has no scores for it"
                continue
            grades = [g for nb in sub.notebooks for g in nb.grades]
            code = [g for g in grades if g.cell.cell_type == "code"]
            written = [g for g in grades if g.cell.cell_type != "code"]
            r.auto_score, r.auto_max = sum(g.score for g in code), sum(g.max_score for g in code)
            r.written_score, r.written_max = sum(g.score for g in written), sum(g.max_score for g in written)
            r.written_pending = sum(g.max_score for g in written if g.needs_manual_grade)


def write_times(path: Path, m: manifest.Manifest, results: list[Result]) -> None:
    """One row per submission: its state, the seconds of each phase, how often it was executed."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["assignment", "student", "digest", "state", *status.PHASES, "total_s", "executions", "note"])
        for r in results:
            writer.writerow(
                [
                    m.name,
                    r.student,
                    r.digest[:16],
                    r.state,
                    *(f"{r.phases.get(p, 0.0):.2f}" for p in status.PHASES),
                    f"{r.seconds:.2f}",
                    r.executions,
                    r.error or "",
                ]
            )


def table(results: list[Result]) -> str:
    """A plain-text grade table with the seconds of each grading phase."""
    rows = [("student", "autograded", "written answers", *PHASE_NAMES.values(), "total s", "notes")]
    for r in results:
        written = f"{r.written_score:g} / {r.written_max:g}"
        if r.written_pending:
            written += f" ({r.written_pending:g} to grade by hand)"
        score = f"{r.auto_score:g} / {r.auto_max:g}" if not r.error else "ungraded"
        rows.append(
            (
                r.student,
                score,
                written,
                *(f"{r.phases.get(p, 0.0):.1f}" for p in PHASE_NAMES),
                f"{r.seconds:.1f}",
                r.error or (f"{len(r.notes)} note(s)" if r.notes else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="+", metavar="assignment")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="submissions graded at once: the worker slots of a local Ray cluster (default 2)",
    )
    parser.add_argument(
        "--address",
        help="an existing Ray cluster (ray://host:10001 or host:6379; default $RAY_ADDRESS, else a local cluster)",
    )
    parser.add_argument(
        "--regrade", action="store_true", help="grade again what is graded already (after a hidden test was fixed)"
    )
    parser.add_argument("--course", type=Path, default=ROOT, help="the course's root folder (default: this repository)")
    parser.add_argument(
        "--samples",
        action="store_true",
        help="first write sample submissions: demo-correct, demo-blank, demo-mistakes (one per round of mistakes)",
    )
    args = parser.parse_args(argv)
    failed = False
    for name in args.assignments:
        try:
            root = args.course.resolve()
            m = manifest.load(name, root)
            if args.samples:
                write_samples(m, root)
            results = grade(name, jobs=args.jobs, root=root, address=args.address, regrade=args.regrade)
        except (FileNotFoundError, ValueError, GradebookError, runner.ClusterError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"\n{name}: {m.title}")
        print(table(results))
        print(f"feedback: {root / 'feedback'}   grades: {root / 'grades.csv'}   times: {root / TIMES_CSV}")
        failed |= any(r.error for r in results)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
