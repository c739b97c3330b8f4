"""Grade every submission of an assignment with the standard nbgrader commands.

    python -m autograder.grade <assignment> [--jobs N] [--samples]

1. intake (autograder/intake.py): each submitted/<student>/<assignment>/ is made gradable before
   nbgrader sees it: links and special files removed, a renamed notebook renamed back, a file
   that is not a notebook set aside, deleted graded cells restored; notes reach the feedback.
2. ``nbgrader autograde <assignment> --student <s>`` for each student, ``--jobs`` at a time, each
   kernel in the sandbox (see autograder/sandbox.py); one broken submission never stops the rest.
3. ``nbgrader generate_feedback`` and ``nbgrader export``; a grade table is printed.
"""
from __future__ import annotations

import argparse
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from autograder import manifest, notebooks
from autograder.intake import intake
from autograder.course import gradebook_url
from autograder.release import nbgrader

ROOT = manifest.ROOT


@dataclass
class Result:
    student: str
    auto_score: float = 0.0  # code cells: the hidden and visible tests
    auto_max: float = 0.0
    written_score: float = 0.0  # written answers (nbgrader scores an untouched one 0 by itself)
    written_max: float = 0.0
    written_pending: float = 0.0  # points of written answers a person still has to grade
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def write_samples(m: manifest.Manifest, root: Path = ROOT) -> dict[str, Path]:
    """Three sample submissions: the source solutions, the untouched release, the typical mistakes."""
    release_nb = notebooks.read(root / "release" / m.name / m.notebook)
    source_nb = notebooks.read(m.source_at(root))
    samples = {
        "demo-correct": notebooks.fill(release_nb, source_nb),
        "demo-blank": release_nb,
        "demo-mistakes": notebooks.fill(release_nb, source_nb, {k.cell: k.code for k in m.mistakes}),
    }
    paths = {}
    for student, nb in samples.items():
        folder = root / "submitted" / student / m.name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / m.notebook)
        paths[student] = folder / m.notebook
    return paths


def _autograde_one(m: manifest.Manifest, student: str, root: Path) -> Result:
    start = time.perf_counter()
    proc = nbgrader(
        "autograde", m.name, "--student", student, "--force",
        f"--Execute.timeout={m.cell_timeout_s}", root=root, check=False,
    )
    result = Result(student, seconds=time.perf_counter() - start)
    if proc.returncode != 0:
        result.error = (proc.stderr.strip().splitlines() or ["autograde failed"])[-1]
    return result


def grade(name: str, *, jobs: int = 2, root: Path = ROOT) -> list[Result]:
    """Intake, autograde, feedback and export for every submission of assignment ``name``."""
    m = manifest.load(name, root)
    release_nb = root / "release" / m.name / m.notebook
    if not release_nb.exists():
        raise FileNotFoundError(f"{release_nb} is missing: run `make release` first")
    folders = sorted(p for p in (root / "submitted").glob(f"*/{m.name}") if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"no submissions in {root / 'submitted'}/<student>/{m.name}/")
    notes = {f.parent.name: intake(f, m, release_nb) for f in folders}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda s: _autograde_one(m, s, root), notes))
    nbgrader("generate_feedback", m.name, "--force", root=root, check=False)
    nbgrader("export", f"--CsvExportPlugin.filename={root / 'grades.csv'}", root=root, check=False)

    with Gradebook(gradebook_url(root)) as gb:
        for r in results:
            r.notes = notes[r.student]
            try:
                sub = gb.find_submission(m.name, r.student)
            except MissingEntry:  # autograde never recorded it; r.error says why
                continue
            grades = [g for nb in sub.notebooks for g in nb.grades]
            code = [g for g in grades if g.cell.cell_type == "code"]
            written = [g for g in grades if g.cell.cell_type != "code"]
            r.auto_score, r.auto_max = sum(g.score for g in code), sum(g.max_score for g in code)
            r.written_score, r.written_max = sum(g.score for g in written), sum(g.max_score for g in written)
            r.written_pending = sum(g.max_score for g in written if g.needs_manual_grade)
    return results


def table(results: list[Result]) -> str:
    """A plain-text grade table."""
    rows = [("student", "autograded", "written answers", "seconds", "notes")]
    for r in results:
        written = f"{r.written_score:g} / {r.written_max:g}"
        if r.written_pending:
            written += f" ({r.written_pending:g} to grade by hand)"
        rows.append((
            r.student, f"{r.auto_score:g} / {r.auto_max:g}", written,
            f"{r.seconds:.1f}", r.error or (f"{len(r.notes)} note(s)" if r.notes else ""),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    parser.add_argument("--samples", action="store_true",
                        help="first write three sample submissions: demo-correct, demo-blank, demo-mistakes")
    args = parser.parse_args(argv)
    if args.samples:
        write_samples(manifest.load(args.assignment))
    results = grade(args.assignment, jobs=args.jobs)
    print(f"\n{args.assignment}: {manifest.load(args.assignment).title}")
    print(table(results))
    print(f"feedback: {ROOT / 'feedback'}   grades: {ROOT / 'grades.csv'}")
    if any(r.error for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
