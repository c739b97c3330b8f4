"""One record per submission and run (issue 17, item 5): the status row, the private gradebook a task grades
against, the driver applying a stored result, and the export that never shows an older score."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from nbgrader.api import Gradebook
from traitlets.config import Config

from autograder import course, export, gradebook, manifest, runner, status

NAME = "recorded"


def _meta(gid: str, **kw) -> dict:
    return {"nbgrader": {"grade_id": gid, "schema_version": 3, "task": False, "locked": False, **kw}}


def graded_notebook(first_fails: bool = False) -> nbformat.NotebookNode:
    """An autograded notebook: an answer, two test cells (2 and 3 points), a written answer (1 point)."""
    nb = new_notebook()
    test_a = new_code_cell("probe_a(a)", metadata=_meta("test_a", grade=True, solution=False, locked=True, points=2))
    if first_fails:
        test_a.outputs = [new_output("error", ename="AssertionError", evalue="wrong", traceback=[])]
    nb.cells = [
        new_code_cell("def a(): return 1", metadata=_meta("a", solution=True, grade=False)),
        test_a,
        new_code_cell("probe_b(b)", metadata=_meta("test_b", grade=True, solution=False, locked=True, points=3)),
        new_markdown_cell("Because.", metadata=_meta("why", solution=True, grade=True, points=1)),
    ]
    return nb


@pytest.fixture
def central(tmp_path, monkeypatch) -> str:
    """A course gradebook that knows the assignment (as `nbgrader generate_assignment` would record it)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(url, "genlab") as gb:
        gb.add_assignment(NAME, duedate="2027-01-01 00:00:00")
        gb.add_notebook(NAME, NAME)
        for cell in graded_notebook().cells:
            meta = cell.metadata.nbgrader
            if meta.get("grade"):
                gb.add_grade_cell(meta["grade_id"], NAME, NAME, max_score=meta["points"], cell_type=cell.cell_type)
            if meta.get("solution"):
                gb.add_solution_cell(meta["grade_id"], NAME, NAME)
            gb.add_source_cell(
                meta["grade_id"], NAME, NAME, cell_type=cell.cell_type, locked=meta["locked"], source=cell.source
            )
    return url


def _manifest() -> manifest.Manifest:
    return manifest.Manifest(name=NAME, title="t", notebook=f"{NAME}.ipynb", points=6, due=None)


def _scores(url: str, student: str) -> dict[str, tuple]:
    with Gradebook(url) as gb:
        sub = gb.find_submission_notebook(NAME, NAME, student)
        return {g.name: (g.auto_score, g.manual_score, g.needs_manual_grade) for g in sub.grades}


def test_a_private_gradebook_holds_the_assignment_and_nothing_else(central, tmp_path):
    with Gradebook(central) as gb:
        gb.add_student("ada")
        gb.add_submission(NAME, "ada")
    path = tmp_path / "private.db"
    path.write_bytes(gradebook.template(central, NAME))
    with Gradebook(f"sqlite:///{path}") as gb:
        (nb,) = gb.find_assignment(NAME).notebooks
        assert sorted(c.name for c in nb.grade_cells) == ["test_a", "test_b", "why"]
        assert sorted(c.name for c in nb.source_cells) == ["a", "test_a", "test_b", "why"]
        assert gb.find_source_cell("test_a", NAME, NAME).source == "probe_a(a)"  # hidden tests come from here
        assert gb.students == [] and gb.assignment_submissions(NAME) == []


def test_the_driver_applies_a_stored_result_as_nbgrader_would(central):
    m = _manifest()
    data = nbformat.writes(graded_notebook(first_fails=True)).encode()
    gradebook.apply(central, m, "ada", data, "2026-12-01T10:00:00", Config())
    assert _scores(central, "ada") == {
        "test_a": (0.0, None, False),
        "test_b": (3.0, None, False),
        "why": (None, None, True),  # a written answer waits for a person
    }
    with Gradebook(central) as gb:  # a person grades the written answer and overrides a test
        gb.find_grade("why", NAME, NAME, "ada").manual_score = 1.0
        gb.find_grade("test_a", NAME, NAME, "ada").manual_score = 1.5
        gb.db.commit()
    gradebook.apply(central, m, "ada", nbformat.writes(graded_notebook()).encode(), None, Config())
    got = _scores(central, "ada")
    assert got["test_a"] == (2.0, 1.5, True)  # the new automatic score beside the person's, flagged for review
    assert got["why"] == (None, 1.0, True)
    with Gradebook(central) as gb:
        assert gb.find_submission(NAME, "ada").timestamp.isoformat().startswith("2026-12-01T10:00")


def test_applying_twice_changes_nothing(central):
    m = _manifest()
    data = nbformat.writes(graded_notebook(first_fails=True)).encode()
    gradebook.apply(central, m, "bob", data, None, Config())
    first = _scores(central, "bob")
    gradebook.apply(central, m, "bob", data, None, Config())
    assert _scores(central, "bob") == first
    with Gradebook(central) as gb:
        assert len(gb.assignment_submissions(NAME)) == 1


def test_a_result_stored_under_a_claim_waits_for_the_driver(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    status.ensure(db, NAME, "ada", "d1")
    status.claim(db, NAME, "ada", "d1", "tok")
    status.record_graded(
        db, NAME, "ada", "d1", "tok", notebook="{}", scores={}, phases={}, submitted=None, sandboxed=True, peak_mb=9.0
    )
    row = status.existing(db, NAME, "ada", "d1")
    assert (row["state"], row["applied"], row["sandboxed"], row["peak_mb"]) == ("graded", False, True, 9.0)
    assert status.mark_applied(db, NAME, "ada", "d1")
    assert status.existing(db, NAME, "ada", "d1")["applied"] is True
    status.ensure(db, NAME, "bob", "d2")
    assert not status.mark_applied(db, NAME, "bob", "d2")  # only a graded row can be applied


def test_a_lost_claim_writes_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    status.ensure(db, NAME, "cy", "d1")
    status.claim(db, NAME, "cy", "d1", "old")
    status.requeue(db, status.existing(db, NAME, "cy", "d1"), reason="its heartbeat stopped")
    status.claim(db, NAME, "cy", "d1", "new")
    with pytest.raises(status.ClaimRefused, match="was lost"):
        status.record_graded(db, NAME, "cy", "d1", "old", notebook="{}", scores={"t": [9, 9, "code"]}, phases={})
    row = status.existing(db, NAME, "cy", "d1")
    assert row["state"] == "running" and row["token"] == "new" and row["scores"] is None


def test_the_current_submission_is_the_one_a_driver_saw_last(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    status.ensure(db, NAME, "ada", "old")
    status.ensure(db, NAME, "ada", "new")
    assert status.current(db, NAME)["ada"]["digest"] == "new"
    status.set_state(db, NAME, "ada", "old", "graded")  # an orphan of the old files finishing late
    assert status.current(db, NAME)["ada"]["digest"] == "new"
    status.saw(db, NAME, "ada", "old")  # the student handed the old files in again
    assert status.current(db, NAME)["ada"]["digest"] == "old"


def _export(central: str, dest: Path) -> dict[str, dict[str, str]]:
    with Gradebook(central) as gb:
        export.GradesExport(to=str(dest)).export(gb)
    with open(dest) as fh:
        return {row["student_id"]: row for row in csv.DictReader(fh)}


def test_the_export_never_shows_an_older_score(central, tmp_path):
    m = _manifest()
    full = nbformat.writes(graded_notebook()).encode()
    for student in ("graded", "queued", "running", "ungraded", "pending", "unboxed"):
        gradebook.apply(central, m, student, full, None, Config())  # an older submission's 5 points
        status.ensure(central, NAME, student, "old")
        status.set_state(central, NAME, student, "old", "graded", applied=True)
    with Gradebook(central) as gb:
        gb.add_student("absent")
    status.ensure(central, NAME, "graded", "new")
    status.set_state(central, NAME, "graded", "new", "graded", applied=True, sandboxed=True)
    status.ensure(central, NAME, "queued", "new")
    status.ensure(central, NAME, "running", "new")
    status.set_state(central, NAME, "running", "new", "running")
    status.ensure(central, NAME, "ungraded", "new")
    status.set_state(central, NAME, "ungraded", "new", "ungraded", "the kernel died in the given cell `train`")
    status.ensure(central, NAME, "pending", "new")
    status.set_state(central, NAME, "pending", "new", "graded", applied=False)
    status.ensure(central, NAME, "newcomer", "first")  # never graded: not in nbgrader's gradebook at all
    status.set_state(central, NAME, "newcomer", "first", "ungraded", "intake failed")
    status.ensure(central, NAME, "unboxed", "new")
    status.set_state(central, NAME, "unboxed", "new", "graded", applied=True, sandboxed=False)
    rows = _export(central, tmp_path / "grades.csv")
    assert {s: (r["status"], r["score"]) for s, r in rows.items()} == {
        "graded": ("graded", "5.0"),
        "queued": ("queued", ""),
        "running": ("running", ""),
        "ungraded": ("ungraded", ""),
        "pending": ("pending", ""),
        "unboxed": ("graded", "5.0"),
        "absent": ("not submitted", "0.0"),
        "newcomer": ("ungraded", ""),
    }
    assert rows["ungraded"]["reason"] == "the kernel died in the given cell `train`"
    assert rows["unboxed"]["sandbox"] == "unsandboxed" and rows["graded"]["sandbox"] == ""


def test_a_failed_export_leaves_the_previous_file_whole(central, tmp_path, monkeypatch):
    dest = tmp_path / "grades.csv"
    dest.write_text("the previous export\n")

    def broken(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(export.GradesExport, "_row", broken)
    gradebook.apply(central, _manifest(), "ada", nbformat.writes(graded_notebook()).encode(), None, Config())
    with pytest.raises(RuntimeError, match="went away"), Gradebook(central) as gb:
        export.GradesExport(to=str(dest)).export(gb)
    assert dest.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_gradebook_password_comes_from_a_file_and_never_shows(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("s3cret-Pass\n")
    monkeypatch.setenv("GENLAB_GRADEBOOK", "postgresql+psycopg2://genlab@db.example:5432/genlab")
    monkeypatch.setenv(course.PASSWORD_FILE_ENV, str(secret))
    url = course.gradebook_url(tmp_path)
    assert "s3cret-Pass" in url and "s3cret-Pass" not in course.safe_url(url)
    scrubbed = runner.scrub(f"could not connect to {url}", url)
    assert scrubbed == f"could not connect to {url.replace('s3cret-Pass', '***')}"
    monkeypatch.setenv(course.PASSWORD_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read the gradebook's password from .*missing"):
        course.gradebook_url(tmp_path)


def test_a_gradebook_that_cannot_be_reached_says_why(tmp_path):
    assert gradebook.reachable(f"sqlite:///{tmp_path / 'gradebook.db'}") is not None  # never created by a check
    (tmp_path / "gradebook.db").touch()
    assert gradebook.reachable(f"sqlite:///{tmp_path / 'gradebook.db'}") is None
    why = gradebook.reachable("postgresql+psycopg2://genlab@127.0.0.1:9/genlab", timeout_s=2)
    assert why and "127.0.0.1" in why
