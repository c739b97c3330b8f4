"""The course pipeline end to end with the real nbgrader commands, for every assignment:
release (no leaks) -> autograde of a correct, a blank and a typical-mistakes submission ->
feedback (no check code) -> export. Bad submissions are graded as far as possible."""

from __future__ import annotations

import html
import re
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder import grade, manifest, notebooks, release
from autograder.course import gradebook_url
from tests.conftest import ROOT, make_course

pytestmark = pytest.mark.slow
MANIFESTS = manifest.all_manifests()
IDS = [m.name for m in MANIFESTS]


def page_text(page: str) -> str:
    """The visible text of an HTML page: tags dropped (code is split into spans), entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def autograded_cells(m: manifest.Manifest) -> dict[str, float]:
    nb = notebooks.read(m.source)
    return {
        notebooks.meta(c)["grade_id"]: notebooks.meta(c)["points"]
        for c in nb.cells
        if notebooks.meta(c).get("grade") and not notebooks.meta(c).get("solution")
    }


def cell_scores(root: Path, m: manifest.Manifest, student: str) -> dict[str, float]:
    with Gradebook(gradebook_url(root)) as gb:
        return {gid: gb.find_grade(gid, Path(m.notebook).stem, m.name, student).score for gid in autograded_cells(m)}


@pytest.fixture(scope="module", params=MANIFESTS, ids=IDS)
def graded(request, tmp_path_factory):
    """One course per assignment: released, three samples (plus bad ones) submitted and graded."""
    m = request.param
    root = make_course(tmp_path_factory.mktemp(m.name), [m.name])
    release.release([m.name], root=root)
    grade.write_samples(m, root, rounds=1)  # later rounds: each chapter's in-process mistake tests
    bad = bad_submissions(m, root)
    results = {r.student: r for r in grade.grade(m.name, jobs=2, root=root)}
    return m, root, results, bad


def bad_submissions(m: manifest.Manifest, root: Path) -> dict[str, str]:
    """Broken submissions made from the correct one: not JSON, renamed, a graded cell deleted."""
    correct = root / "submitted" / "demo-correct" / m.name / m.notebook
    nb = notebooks.read(correct)
    deleted = next(c for c in nb.cells if notebooks.meta(c).get("solution") and c.cell_type == "code")
    gid = notebooks.meta(deleted)["grade_id"]

    def folder(student: str) -> Path:
        path = root / "submitted" / student / m.name
        path.mkdir(parents=True)
        return path

    (folder("bad-json") / m.notebook).write_text(correct.read_text()[:-200])
    (folder("bad-renamed") / f"Copy of {m.notebook}").write_text(correct.read_text())
    nb.cells = [c for c in nb.cells if c is not deleted]
    nbformat.write(nb, folder("bad-deleted-cell") / m.notebook)
    return {"deleted": gid}


def test_release_keeps_signatures_and_drops_solutions(graded):
    m, root, _, _ = graded
    released = notebooks.read(root / "release" / m.name / m.notebook)
    answers = [c for c in released.cells if notebooks.meta(c).get("solution") and c.cell_type == "code"]
    assert answers and all("raise NotImplementedError()" in c.source for c in answers)
    text = (root / "release" / m.name / m.notebook).read_text()
    assert notebooks.BEGIN_HIDDEN not in text and notebooks.BEGIN_SOLUTION not in text
    assert not release.leaks(root / "release", [m], root)


def test_student_package_withholds_reference_code(graded):
    _, root, _, _ = graded
    (wheel,) = (root / "release").glob("genlab-*+student-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        losses = zf.read("genlab/losses.py").decode()
    assert "raise NotImplementedError" in losses and "BEGIN REFERENCE" not in losses
    assert "def gaussian_kl(" in losses  # signatures and docstrings stay


def test_committed_release_is_up_to_date(graded):
    m, root, _, _ = graded
    fresh = notebooks.read(root / "release" / m.name / m.notebook)
    committed_path = ROOT / "release" / m.name / m.notebook
    assert committed_path.exists(), "run `make release` and commit release/"
    committed = notebooks.read(committed_path)
    assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], "run `make release` and commit"
    (wheel,) = (root / "release").glob("*.whl")
    assert (ROOT / "release" / wheel.name).read_bytes() == wheel.read_bytes(), (
        "the committed student package is out of date: run `make release` and commit release/"
    )


def test_correct_submission_gets_full_autograded_marks(graded):
    m, root, results, _ = graded
    assert results["demo-correct"].error is None
    scores = cell_scores(root, m, "demo-correct")
    assert scores == autograded_cells(m), "the source solutions must pass every test"


def test_blank_submission_scores_zero_without_crashing(graded):
    m, root, results, _ = graded
    assert results["demo-blank"].error is None
    assert set(cell_scores(root, m, "demo-blank").values()) == {0}


def test_mistakes_lose_exactly_their_tests(graded):
    m, root, results, _ = graded
    failing = {gid for mistake in m.mistake_rounds()[0] for gid in mistake.fails}
    expected = {gid: 0 if gid in failing else pts for gid, pts in autograded_cells(m).items()}
    assert cell_scores(root, m, grade.mistake_student(0)) == expected


def test_the_samples_check_of_the_grader_agrees(graded):
    m, root, results, _ = graded
    assert grade.check_samples(m, list(results.values()), root) == []  # what --samples and make demo check


def test_bad_submissions_are_graded_with_notes(graded):
    m, root, results, bad = graded
    full = autograded_cells(m)
    assert cell_scores(root, m, "bad-renamed") == full
    assert set(cell_scores(root, m, "bad-json").values()) == {0}
    assert results["bad-json"].notes and "could not be read" in results["bad-json"].notes[0]
    assert (root / "submitted" / "bad-json" / m.name / f"{m.notebook}.invalid").exists()
    deleted = cell_scores(root, m, "bad-deleted-cell")
    assert sum(deleted.values()) < sum(full.values())
    for student, phrase in [
        ("bad-json", "could not be read"),
        ("bad-renamed", "Copy of"),
        ("bad-deleted-cell", "was missing from your submission"),
    ]:
        html = (root / "feedback" / student / m.name / m.notebook.replace(".ipynb", ".html")).read_text()
        assert phrase in html, f"{student}: the feedback does not explain what happened"


def test_feedback_shows_calls_and_messages_never_check_code(graded):
    m, root, _, _ = graded
    checks = ROOT / "autograder" / "checks" / f"{m.name}.py"
    check_lines = {
        line.strip()
        for line in checks.read_text().splitlines()
        if len(line.strip()) >= notebooks.MIN_SECRET_CHARS
        and not line.strip().startswith(("#", '"""', "def ", "from ", "import "))
    }
    secrets = check_lines | notebooks.reference_lines((ROOT / "src" / "genlab").rglob("*.py"))
    blank = (root / "feedback" / "demo-blank" / m.name / m.notebook.replace(".ipynb", ".html")).read_text()
    mistakes = (root / "feedback" / "demo-mistakes" / m.name / m.notebook.replace(".ipynb", ".html")).read_text()
    for student, page in (("demo-blank", blank), ("demo-mistakes", mistakes)):
        text = page_text(page)
        submitted = root / "submitted" / student / m.name / m.notebook
        own = {line.strip() for c in notebooks.read(submitted).cells for line in c.source.splitlines()}
        assert "probe_" in text  # the calls are shown...
        assert "autograder/checks" not in text  # ...but no frame of the checks' code
        leaked = notebooks.find_leaks(text, secrets - own)  # what the student wrote is theirs to see
        assert not leaked, f"feedback leaks check or reference code: {leaked[:3]}"
    assert "AssertionError" in page_text(mistakes)


def test_grade_table_splits_autograded_and_written_points(graded):
    m, _, results, _ = graded
    correct, blank = results["demo-correct"], results["demo-blank"]
    assert correct.auto_score == correct.auto_max == sum(autograded_cells(m).values())
    assert correct.auto_max + correct.written_max == m.points
    assert correct.written_pending == correct.written_max > 0  # model answers wait for a person
    assert blank.auto_score == blank.written_score == blank.written_pending == 0  # untouched answers score 0
    table = grade.table([correct, blank]).splitlines()
    assert "written answers" in table[0]
    assert f"{correct.auto_max:g} / {correct.auto_max:g}" in table[1] and "to grade by hand" in table[1]
    assert "to grade by hand" not in table[2]


def test_export_writes_grades(graded):
    m, root, _, _ = graded
    rows = (root / "grades.csv").read_text().splitlines()
    assert rows[0].startswith("assignment") and any("demo-correct" in r for r in rows[1:])
