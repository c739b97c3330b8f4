"""Grade every submission of assignments with the standard nbgrader commands, fanned out over Ray.

    python -m autograder.grade <assignment> [...] [--jobs N] [--address ray://host:port] [--regrade]
                               [--course DIR] [--samples]

0. Checks first, before any submission is touched: the gradebook (``GENLAB_GRADEBOOK``, SQLite
   in the course by default) answers and knows the assignment, the Ray cluster answers
   (``--address`` or ``RAY_ADDRESS``; else a local cluster with N worker slots is started, with a
   start-up budget that holds on a loaded machine) and has a GPU if the manifest says
   ``gpu = "required"``; a task on every node of the cluster checks that it reaches the
   gradebook, has the driver's course code (a digest) and can sandbox kernels (else the run stops
   with how to enable the sandbox, unless ``GENLAB_SANDBOX=0`` says to grade without it).
1. intake (autograder/intake.py): each submitted/<student>/<assignment>/ is made gradable before
   nbgrader sees it: links and special files removed, a renamed notebook renamed back, a file
   that is not a notebook set aside, deleted graded cells restored; notes reach the feedback. A
   submission intake cannot handle is left ungraded with the reason; the run goes on.
2. One Ray task per submission that has no result yet for its current files (the status table,
   autograder/status.py, keyed by the digest of the submitted notebooks): the task grades in a
   private course folder with ``nbgrader autograde`` against a private gradebook
   (autograder/runner.py) and stores its result in the submission's row. This driver alone,
   taking results as they complete, applies them to nbgrader's gradebook and autograded/
   (autograder/gradebook.py). A run killed at any moment and started again grades only what is
   left, each submission exactly once, and applies what was stored but not applied; a changed
   resubmission is graded again.
3. ``nbgrader generate_feedback`` and ``nbgrader export`` (a failure of either fails the command);
   a grade table with the time of each phase, the kernel's peak memory and CPU time is printed,
   and the phase times are written to grading-times.csv beside grades.csv.

Every assignment given is graded whatever happens to the others; at the end a summary names each
submission left ungraded (with why) and each assignment that could not be graded, and the command
exits non-zero if there is any. With ``--samples`` it also checks its own grades: the source
solutions (``demo-correct``) must get full autograded marks, the untouched release
(``demo-blank``) none, and each round of typical mistakes must lose exactly the tests the manifest
lists.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import os
import shutil
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from autograder import gradebook, manifest, notebooks, runner, sandbox, status
from autograder.course import gradebook_url, safe_url
from autograder.gradebook import GradebookError
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
FAULTS = {
    status.GIVEN_CODE: "kernel died in given code",
    status.GRADER: "grader failed",
    status.MACHINE: "machine or set-up",
}


class SandboxMissing(RuntimeError):
    """A node of the cluster cannot sandbox kernels and nobody said to grade without it."""


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
    fault: str = ""  # whose failure left it ungraded (status.GIVEN_CODE, GRADER, MACHINE)
    state: str = "queued"
    phases: dict[str, float] = field(default_factory=dict)
    executions: int = 0
    digest: str = ""
    sandboxed: bool | None = None  # whether its kernel ran in the sandbox (None: not executed)
    peak_mb: float | None = None  # its kernel's peak memory
    cpu_s: float | None = None  # its kernel's CPU time
    cells: dict[str, float] = field(default_factory=dict)  # autograded score of each graded code cell
    apply_s: float = 0.0  # the driver's share of the single record: applying the stored result
    gpu_ids: list[str] = field(default_factory=list)  # the GPUs its task held in this run
    window: tuple[float, float] = (0.0, 0.0)  # wall-clock start and end of its task in this run


class Graded(list[Result]):
    """The results of one assignment's run, and what went wrong beside them (feedback, export)."""

    def __init__(self, results: Iterable[Result] = (), problems: list[str] | None = None):
        super().__init__(results)
        self.problems: list[str] = problems or []


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


def check_samples(m: manifest.Manifest, results: list[Result], root: Path = ROOT) -> list[str]:
    """What is wrong with the grades of the sample submissions that were graded (see :func:`write_samples`).

    The source solutions must get every autograded point, the untouched release none, and each
    round of typical mistakes must lose exactly the test cells its ``fails`` name. One line each.
    """
    source = notebooks.read(m.source_at(root))
    tests = {
        notebooks.meta(c)["grade_id"]: float(notebooks.meta(c).get("points", 0))
        for c in source.cells
        if c.cell_type == "code" and notebooks.meta(c).get("grade") and not notebooks.meta(c).get("solution")
    }
    by_student = {r.student: r for r in results}
    expected = {"demo-correct": set(), "demo-blank": {gid for gid, points in tests.items() if points}}
    names = {"demo-correct": "the source solutions", "demo-blank": "the untouched release"}
    for k, mistakes in enumerate(m.mistake_rounds()):
        expected[mistake_student(k)] = {gid for x in mistakes for gid in x.fails}
        names[mistake_student(k)] = "typical mistakes " + ", ".join(x.name for x in mistakes)
    problems = []
    for student, fails in expected.items():
        r = by_student.get(student)
        if r is None:
            continue  # a round that was not written (tests grade the first only)
        if r.error:  # its reason is among the ungraded submissions
            problems.append(f"{m.name}: {student} ({names[student]}) was not graded, so its grades are unchecked")
            continue
        lost = {gid for gid, points in tests.items() if r.cells.get(gid, 0.0) < points}
        if lost != fails:
            wrong = [f"lost {', '.join(sorted(lost - fails))}"] if lost - fails else []
            wrong += [f"kept {', '.join(sorted(fails - lost))}"] if fails - lost else []
            problems.append(
                f"{m.name}: {student} ({names[student]}) got {r.auto_score:g} / {r.auto_max:g} autograded points and "
                f"{' and '.join(wrong)} against the manifest"
            )
    return problems


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


def _deliver(root: Path, m: manifest.Manifest, student: str, notebook: bytes) -> None:
    """Write an autograded notebook into the course (where nbgrader autograde would)."""
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


def _apply(db_url: str, m: manifest.Manifest, root: Path, result: dict[str, Any], config: Any) -> float:
    """Apply a stored result (``student``, ``digest``, ``notebook`` bytes, ``submitted``) to nbgrader's
    gradebook and autograded/, then note it applied; return the seconds it took."""
    start = time.perf_counter()
    gradebook.apply(db_url, m, result["student"], result["notebook"], result.get("submitted"), config)
    _deliver(root, m, result["student"], result["notebook"])
    status.mark_applied(db_url, m.name, result["student"], result["digest"])
    return time.perf_counter() - start


def _discard(root: Path, m: manifest.Manifest, student: str) -> None:
    """Remove an autograded notebook that belongs to an older submission (or to a run that failed)."""
    shutil.rmtree(root / "autograded" / student / m.name, ignore_errors=True)


def _take_in(
    db_url: str, m: manifest.Manifest, folders: list[Path], root: Path, regrade: bool
) -> tuple[dict[str, Result], dict[str, dict[str, Any]]]:
    """Intake, once per submitted file (a folder whose digest has a row was taken in already).

    Under a lock, so that two drivers on one course take each submission in once. A submission
    that intake cannot handle is left ungraded with the reason; the others go on.
    """
    release_nb = root / "release" / m.name / m.notebook
    results: dict[str, Result] = {}
    rows: dict[str, dict[str, Any]] = {}
    (root / "submitted").mkdir(exist_ok=True)
    with open(root / "submitted" / f".intake-{m.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for folder in folders:
            student, sha = folder.parent.name, ""
            try:
                sha = status.digest(folder)
                row = status.get(db_url, m.name, student, sha)
                if row is None:
                    notes = intake(folder, m, release_nb)
                    sha = status.digest(folder)
                    row = status.ensure(db_url, m.name, student, sha)
                else:
                    notes = _notes_in(folder / m.notebook)
                status.saw(db_url, m.name, student, sha)
                if row["state"] == "ungraded" or (regrade and row["state"] == "graded"):
                    status.requeue(db_url, row, reason="")
                    row = status.get(db_url, m.name, student, sha) or row
            except Exception as exc:  # intake is built never to raise; if it does, this submission alone waits
                traceback.print_exc()
                reason = (
                    f"intake failed ({type(exc).__name__}: {str(exc)[:200]}): not graded; look at "
                    f"{folder.relative_to(root)} and grade again"
                )
                results[student] = Result(student, error=reason, fault=status.MACHINE, state="ungraded", digest=sha)
                if sha:
                    try:
                        status.set_state(db_url, m.name, student, sha, "ungraded", reason, fault=status.MACHINE)
                    except Exception:  # the result table above still says it
                        pass
                continue
            results[student] = Result(student, notes=notes, digest=sha)
            rows[student] = row
    return results, rows


def grade(
    name: str,
    *,
    jobs: int = 2,
    root: Path = ROOT,
    address: str | None = None,
    regrade: bool = False,
    gpus: float | None = None,
    keep_cluster: bool = True,
) -> Graded:
    """Checks, intake, grading on Ray, feedback and export for every submission of assignment ``name``.

    ``address`` (else ``$RAY_ADDRESS``) names an existing Ray cluster; without one a local cluster
    with ``jobs`` worker slots (and ``gpus`` declared GPUs, if given) is started, and kept for the
    next call in this process unless ``keep_cluster`` is false. ``regrade`` grades again what is
    graded already (after a hidden test was fixed). Returns one result per submission (none when
    there are none) and the problems of feedback and export.
    """
    gradebook.tools_on_path()
    m = manifest.load(name, root)
    release_nb = root / "release" / m.name / m.notebook
    if not release_nb.exists():
        raise FileNotFoundError(
            f"assignment {m.name} has no release ({release_nb} is missing): run `make release` "
            f"or `python -m autograder.release {m.name}` first"
        )
    folders = sorted(p for p in (root / "submitted").glob(f"*/{m.name}") if p.is_dir() and not p.is_symlink())
    if not folders:
        return Graded()
    db_url = gradebook_url(root)
    gradebook.check(db_url, m, root)
    cluster = _cluster(address, jobs, gpus)
    _check_nodes(db_url)
    runner.check_gpu(m, cluster)

    results, rows = _take_in(db_url, m, folders, root, regrade)
    config = gradebook.course_config(root)
    todo = [s for s, row in rows.items() if row["state"] != "graded"]
    for student in todo:
        _discard(root, m, student)
    for student, row in rows.items():
        if row["state"] == "graded":  # graded before; a result stored but not applied (a driver died) is applied now
            full = status.get(db_url, m.name, student, row["digest"]) or row
            data = status.notebook_bytes(full)
            if data is not None and full.get("applied") is False:
                _apply(db_url, m, root, {**full, "notebook": data}, config)
            elif data is not None:
                _deliver(root, m, student, data)

    if todo:
        start = time.perf_counter()
        course = runner.course_files(root, m, gradebook.template(db_url, m.name))
        template_s = time.perf_counter() - start
        env = {k: os.environ[k] for k in runner.PASSED_ENV if k in os.environ}
        code = runner.code_digest()
        jobs_list = [
            runner.Job(
                assignment=m.name,
                student=s,
                digest=rows[s]["digest"],
                notebook=m.notebook,
                db_url=db_url,
                budget_s=runner.budget(m),
                code=code,
                env=env,
                files=runner.submission_files(root / "submitted" / s / m.name, m, s),
            )
            for s in todo
        ]
        _run(m, jobs_list, course, cluster, root, db_url, jobs, results, config)
        for s in todo:
            results[s].apply_s += template_s / len(todo)
    if not keep_cluster:
        stop_cluster()

    problems = _feedback_and_export(m, root, db_url)
    _collect(db_url, m, results)
    write_times(root / TIMES_CSV, m, list(results.values()))
    return Graded(results.values(), problems)


def _feedback_and_export(m: manifest.Manifest, root: Path, db_url: str) -> list[str]:
    """Run ``nbgrader generate_feedback`` and ``nbgrader export``; say what failed, one line each."""
    problems = []
    steps = [
        (("generate_feedback", m.name, "--force"), "the feedback in feedback/ may be missing or out of date"),
        (
            ("export", f"--CsvExportPlugin.filename={root / 'grades.csv'}"),
            "grades.csv was not updated (it holds an earlier run's grades, if any)",
        ),
    ]
    if not any((root / "autograded").glob(f"*/{m.name}/{m.notebook}")):
        steps = steps[1:]  # nothing was graded: no feedback to make (nbgrader would call that an error)
    for args, consequence in steps:
        proc = nbgrader(*args, root=root, check=False)
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
            last = next((line for line in reversed(lines) if "rror" in line), lines[-1] if lines else "no output")
            problems.append(
                f"{m.name}: nbgrader {args[0]} failed (exit {proc.returncode}: "
                f"{runner.scrub(last.strip(), db_url)[:300]}); {consequence}"
            )
    return problems


_local_cluster = False  # whether this process started the Ray it uses (and may restart it to fit a run)
_surveyed: set[tuple] = set()  # the clusters and gradebooks whose nodes passed the checks of a run's start


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
            stop_cluster()  # the local cluster of an earlier call does not fit this one
    cluster = runner.connect(address, jobs=jobs, gpus=gpus)
    _local_cluster = _local_cluster or cluster.started_here
    return cluster


def _check_nodes(db_url: str) -> None:
    """From a task on every node: the gradebook answers, the course code is this driver's, kernels can be sandboxed."""
    import ray

    mine = runner.code_digest()
    key = (db_url, mine, os.environ.get(sandbox.OFF_ENV), tuple(sorted(n["NodeID"] for n in ray.nodes())))
    if key in _surveyed:
        return
    for report in runner.survey(db_url):
        if report.code != mine:
            raise runner.ClusterError(
                f"the Ray node {report.host} has other course code (digest {report.code[:12]}) than this driver "
                f"(digest {mine[:12]}): it would grade with other checks. Install this version of genlab and the "
                "autograder on every node (or grade with --address, whose tasks carry the driver's code)"
            )
        if report.gradebook:
            raise GradebookError(
                f"the Ray node {report.host} cannot reach the gradebook {safe_url(db_url)} ({report.gradebook}): set "
                "GENLAB_GRADEBOOK to a database server every node reaches (see `python -m autograder.pgserver`)"
            )
        if report.sandbox and os.environ.get(sandbox.OFF_ENV) != "0":
            raise SandboxMissing(sandbox.refusal(f"on the Ray node {report.host}, {report.sandbox}"))
    _surveyed.add(key)


def stop_cluster() -> None:
    """Stop the Ray this process uses (a local cluster started by :func:`grade` goes with it)."""
    global _local_cluster
    runner.shutdown()
    _local_cluster = False
    _surveyed.clear()


def _run(m, jobs_list, course, cluster, root, db_url, jobs, results, config) -> None:
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
            try:
                write = _apply(db_url, m, root, result, config)
            except Exception as exc:  # the result stays stored: the next run applies it
                print(f"{m.name}/{job.student}: could not apply its result: {exc}", file=sys.stderr)
            results[job.student].apply_s = write
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
                f"its grading task failed ({reason}); grade it again later",
                token=row.get("token") if row["state"] == "running" else None,
                expect=row["state"],
                fault=status.MACHINE,
            )
        advance("ungraded")

    try:
        runner.run(m, jobs_list, course, cluster, limit=max(1, jobs), on_result=on_result, on_failure=on_failure)
    finally:
        bar.close()


def _collect(db_url: str, m: manifest.Manifest, results: dict[str, Result]) -> None:
    """Scores from the gradebook; states, phase times and what the kernel used from the status table."""
    with Gradebook(db_url) as gb:
        for r in results.values():
            if r.error and not r.digest:  # intake failed before the submission had a row
                continue
            row = status.get(db_url, m.name, r.student, r.digest) or {}
            r.state = row.get("state", r.state)
            r.fault = row.get("fault") or r.fault
            r.executions = row.get("executions") or 0
            r.phases = {p: row.get(p) or 0.0 for p in status.PHASES}
            r.seconds = sum(r.phases.values())
            r.sandboxed, r.peak_mb, r.cpu_s = row.get("sandboxed"), row.get("peak_mb"), row.get("cpu_s")
            if r.state != "graded":
                r.error = row.get("reason") or r.error or f"not graded ({r.state})"
                continue
            if row.get("applied") is False:
                r.error = "graded, but its result is not in the gradebook yet (the next run applies it)"
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
            r.cells = {g.name: g.score for g in code}


def write_times(path: Path, m: manifest.Manifest, results: list[Result]) -> None:
    """One row per submission: its state, the seconds of each phase, how often it was executed, what it used.

    The rows of other assignments (graded in the same run or before) are kept, as grades.csv keeps them.
    """
    from genlab.train import atomic_write

    header = [
        "assignment",
        "student",
        "digest",
        "state",
        *status.PHASES,
        "total_s",
        "executions",
        "peak_mb",
        "cpu_s",
        "sandboxed",
        "note",
    ]
    kept: list[list[str]] = []
    if path.exists():
        with open(path, newline="") as fh:
            old = list(csv.reader(fh))
        if old and old[0] == header:
            kept = [row for row in old[1:] if row and row[0] != m.name]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(kept)
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
                        "" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                        "" if r.cpu_s is None else f"{r.cpu_s:.1f}",
                        "" if r.sandboxed is None else ("yes" if r.sandboxed else "no"),
                        r.error or "",
                    ]
                )

    atomic_write(path, write)


def table(results: list[Result]) -> str:
    """A plain-text grade table with the seconds of each grading phase and what each kernel used."""
    rows = [("student", "autograded", "written answers", *PHASE_NAMES.values(), "total s", "peak MB", "CPU s", "notes")]
    for r in results:
        written = f"{r.written_score:g} / {r.written_max:g}"
        if r.written_pending:
            written += f" ({r.written_pending:g} to grade by hand)"
        score = f"{r.auto_score:g} / {r.auto_max:g}" if not r.error else "ungraded"
        notes = r.error or (f"{len(r.notes)} note(s)" if r.notes else "")
        if r.sandboxed is False:
            notes = "unsandboxed" + (f"; {notes}" if notes else "")
        rows.append(
            (
                r.student,
                score,
                written,
                *(f"{r.phases.get(p, 0.0):.1f}" for p in PHASE_NAMES),
                f"{r.seconds:.1f}",
                "" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                "" if r.cpu_s is None else f"{r.cpu_s:.0f}",
                notes,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def summary(outcomes: dict[str, Graded | str], root: Path) -> tuple[str, bool]:
    """The end of a run, read at 8 a.m.: per assignment what happened, then every submission left ungraded
    and every problem. Returns the text and whether anything needs attention."""
    lines = ["summary"]
    attention = []
    for name, outcome in outcomes.items():
        if isinstance(outcome, str):
            lines.append(f"  {name}: not graded: {outcome}")
            attention.append(f"{name}: not graded")
            continue
        if not outcome and not outcome.problems:
            lines.append(f"  {name}: no submissions in {root / 'submitted'}/<student>/{name}/")
            continue
        ungraded = [r for r in outcome if r.error]
        faults = Counter(FAULTS.get(r.fault, "other") for r in ungraded)
        detail = f" ({', '.join(f'{n} {why}' for why, n in faults.most_common())})" if ungraded else ""
        unboxed = sum(r.sandboxed is False for r in outcome)
        lines.append(
            f"  {name}: {len(outcome)} submission(s): {len(outcome) - len(ungraded)} graded, "
            f"{len(ungraded)} ungraded{detail}" + (f"; {unboxed} unsandboxed" if unboxed else "")
        )
        lines += [f"    ungraded {r.student}: {r.error}" for r in ungraded]
        lines += [f"    problem: {p}" for p in outcome.problems]
        if ungraded or outcome.problems:
            attention.append(f"{name}: {len(ungraded)} ungraded, {len(outcome.problems)} problem(s)")
    if attention:
        lines.append("needs attention: " + "; ".join(attention))
    return "\n".join(lines), bool(attention)


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
        help="first write sample submissions (demo-correct, demo-blank, demo-mistakes: one per round of mistakes), "
        "then check that they got the grades they must",
    )
    args = parser.parse_args(argv)
    root = args.course.resolve()
    outcomes: dict[str, Graded | str] = {}
    stop = None
    for name in args.assignments:
        try:
            m = manifest.load(name, root)
            if args.samples:
                write_samples(m, root)
            results = grade(name, jobs=args.jobs, root=root, address=args.address, regrade=args.regrade)
        except (GradebookError, runner.ClusterError, SandboxMissing) as exc:
            if isinstance(exc, runner.NoGpu):  # this assignment's need, not the run's
                outcomes[name] = str(exc)
                print(f"error: {exc}", file=sys.stderr)
                continue
            stop = str(exc)  # the gradebook, the cluster or the sandbox: every assignment would fail alike
            break
        except (FileNotFoundError, ValueError) as exc:  # a missing release, a broken manifest
            outcomes[name] = str(exc)
            print(f"error: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # a fault of the grader: this assignment only, the others are graded
            traceback.print_exc()
            outcomes[name] = f"the grader failed ({type(exc).__name__}: {exc})"
            continue
        if args.samples:
            results.problems += check_samples(m, results, root)
        outcomes[name] = results
        print(f"\n{name}: {m.title}")
        print(table(results) if results else "no submissions")
        print(f"feedback: {root / 'feedback'}   grades: {root / 'grades.csv'}   times: {root / TIMES_CSV}")
    text, attention = summary(outcomes, root)
    print("\n" + text)
    if stop is not None:
        left = [n for n in args.assignments if n not in outcomes]
        print(f"error: {stop}\n(not graded: {', '.join(left)})", file=sys.stderr)
        raise SystemExit(2)
    if any(isinstance(o, str) for o in outcomes.values()):
        raise SystemExit(2)
    if attention:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
