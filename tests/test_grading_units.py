"""Fast tests of the grading helpers: marked regions, secrets, the student wheel, intake, feedback."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import feedback, intake, manifest, notebooks, release


def nbg(gid: str, **kw) -> dict:
    return {"nbgrader": {"grade_id": gid, "schema_version": 3, "task": False, "locked": False, **kw}}


def source_notebook():
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("Intro prose that mentions return mu + torch.exp(logstd) * eps in passing."),
        new_code_cell(
            "def f(x):\n    ### BEGIN SOLUTION\n    return torch.exp(logstd) * eps + x\n    ### END SOLUTION",
            metadata=nbg("f", solution=True, grade=False),
        ),
        new_code_cell(
            "assert f(0) == 0\n### BEGIN HIDDEN TESTS\ncheck_f_hidden_behaviour(f)\n### END HIDDEN TESTS",
            metadata=nbg("test_f", grade=True, solution=False, points=2),
        ),
        new_markdown_cell(
            "Because the posterior collapses onto the prior.", metadata=nbg("q", solution=True, grade=True, points=1)
        ),
    ]
    return nb


def test_secret_lines_are_solutions_answers_and_hidden_tests():
    secrets = notebooks.secret_lines(source_notebook())
    assert "return torch.exp(logstd) * eps + x" in secrets
    assert "check_f_hidden_behaviour(f)" in secrets
    assert "Because the posterior collapses onto the prior." in secrets
    assert not any("Intro prose" in s or "assert f(0)" in s for s in secrets)
    assert notebooks.find_leaks("x\n    check_f_hidden_behaviour(f)\n", secrets) == ["check_f_hidden_behaviour(f)"]


def test_strip_reference_keeps_signature_and_indentation():
    text = (
        'def g(a):\n    """Doc."""\n    # BEGIN REFERENCE\n    secret = a * 2\n    return secret\n    # END REFERENCE\n'
    )
    out = release.strip_reference(text)
    assert "secret" not in out and "def g(a):" in out and '"""Doc."""' in out
    assert f"    {release.WITHHELD}" in out
    namespace: dict = {}
    exec(out, namespace)
    with pytest.raises(NotImplementedError):
        namespace["g"](1)


def test_fill_takes_solutions_and_replacements():
    source = source_notebook()
    released = nbformat.from_dict(source)
    released.cells[1].source = "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    filled = notebooks.fill(released, source)
    assert "return torch.exp(logstd) * eps + x" in filled.cells[1].source
    assert "BEGIN SOLUTION" not in filled.cells[1].source
    wrong = notebooks.fill(released, source, {"f": "def f(x):\n    return 1"})
    assert wrong.cells[1].source.endswith("return 1")
    with pytest.raises(KeyError, match="nope"):
        notebooks.fill(released, source, {"nope": ""})


@pytest.fixture
def submission(tmp_path):
    m = manifest.Manifest(name="demo", title="Demo", notebook="demo.ipynb", points=3, due=None)
    release_nb = tmp_path / "release.ipynb"
    nbformat.write(source_notebook(), release_nb)
    folder = tmp_path / "submitted" / "alice" / "demo"
    folder.mkdir(parents=True)
    return m, release_nb, folder


def test_intake_renames_a_single_notebook(submission):
    m, release_nb, folder = submission
    nbformat.write(source_notebook(), folder / "demo (1).ipynb")
    notes = intake.intake(folder, m, release_nb)
    assert (folder / "demo.ipynb").exists() and "demo (1).ipynb" in notes[0]
    assert notebooks.read(folder / "demo.ipynb").cells[0].source.startswith(intake.NOTES_TITLE)


def test_intake_sets_aside_a_file_that_is_not_a_notebook(submission):
    m, release_nb, folder = submission
    (folder / "demo.ipynb").write_text('{"cells": [')
    notes = intake.intake(folder, m, release_nb)
    assert "could not be read" in notes[0] and (folder / "demo.ipynb.invalid").read_text() == '{"cells": ['
    graded = notebooks.read(folder / "demo.ipynb")
    assert len(graded.cells) == len(source_notebook().cells) + 1


def test_intake_notes_duplicated_cells_and_leaves_good_ones_alone(submission):
    m, release_nb, folder = submission
    nb = source_notebook()
    nbformat.write(nb, folder / "demo.ipynb")
    assert intake.intake(folder, m, release_nb) == []
    nb.cells.append(nbformat.from_dict(nb.cells[1]))
    nbformat.write(nb, folder / "demo.ipynb")
    assert "`f` appears 2 times" in intake.intake(folder, m, release_nb)[0]


def test_intake_restores_deleted_answer_cells_in_place(submission):
    m, release_nb, folder = submission
    nb = source_notebook()
    del nb.cells[1]  # the answer cell `f`
    nbformat.write(nb, folder / "demo.ipynb")
    notes = intake.intake(folder, m, release_nb)
    assert "`f` was missing from your submission" in notes[0]
    graded = notebooks.read(folder / "demo.ipynb")
    assert [notebooks.meta(c).get("grade_id") for c in graded.cells[1:]] == [None, "f", "test_f", "q"]


def test_feedback_preprocessor_runs_when_nbgrader_calls_it():
    nb = new_notebook()
    cell = new_code_cell("check_f(f)")
    cell.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="AssertionError",
            evalue="wrong",
            traceback=["Cell In[1], line 1", "File /x/checks.py:3, in check_f", "AssertionError: wrong"],
        )
    ]
    nb.cells = [cell]
    out, _ = feedback.SanitizeErrors()(nb, {})
    assert out.cells[0].outputs[0].traceback == ["Cell In[1], line 1", "AssertionError: wrong"]


def test_feedback_keeps_cell_frames_and_drops_module_frames():
    tb = [
        "\x1b[0;31m---------\x1b[0m",
        "Cell \x1b[0;32mIn[4], line 3\x1b[0m\n----> 3 check_f(f)",
        "File \x1b[0;32m/course/autograder/checks/demo.py:12\x1b[0m, in check_f\n---> 12 assert secret_logic",
        "\x1b[0;31mAssertionError\x1b[0m: f(1) should be 2",
    ]
    out = feedback.sanitize_traceback(tb, "AssertionError", "f(1) should be 2")
    assert out == [tb[1], "AssertionError: f(1) should be 2"]


def test_released_form_is_what_the_student_sees_of_a_test_cell():
    from autograder.preprocessors.overwritecells import released_form

    source = "assert f(0) == 0\n### BEGIN HIDDEN TESTS\nprobe_f(f)\n### END HIDDEN TESTS\n"
    assert released_form(source) == "assert f(0) == 0"
    assert released_form("x = 1\n") == "x = 1"


def test_the_times_table_keeps_every_assignment_of_a_run(tmp_path):
    """Grading several assignments in one run leaves one row per submission of each in grading-times.csv."""
    import csv
    from types import SimpleNamespace

    from autograder import grade

    path = tmp_path / grade.TIMES_CSV
    first, second = SimpleNamespace(name="a"), SimpleNamespace(name="b")
    grade.write_times(path, first, [grade.Result("ada", state="graded"), grade.Result("bo", state="graded")])
    grade.write_times(path, second, [grade.Result("ada", state="ungraded", error="kernel died")])
    grade.write_times(path, first, [grade.Result("ada", state="graded")])  # a regrade replaces a's rows
    with open(path, newline="") as fh:
        rows = [(r["assignment"], r["student"], r["state"]) for r in csv.DictReader(fh)]
    assert sorted(rows) == [("a", "ada", "graded"), ("b", "ada", "ungraded")]
