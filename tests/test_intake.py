"""Intake of malformed and tampered submissions: never a stopped batch, always a notebook nbgrader can grade.

Each malformed kind of the hostile examination (issue 22) is set aside and replaced by the release;
each tampering kind is repaired from the release, keeping exactly what the student wrote in the
answer cells. After intake, nbgrader's own metadata validator accepts every notebook.
"""

from __future__ import annotations

import inspect
import json
import os
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgrader.nbgraderformat import MetadataValidator

from autograder import intake, manifest, notebooks
from tests import gradingcourse

NAME = gradingcourse.NAME
MY_ANSWER = "def one_hot(labels, num_classes=10):\n    return 'my own answer'\n"


@pytest.fixture
def course(tmp_path):
    """(manifest, release notebook path, submission folder, the correct submission)."""
    m = manifest.Manifest(name=NAME, title="t", notebook=f"{NAME}.ipynb", points=10, due=None)
    release_nb = gradingcourse.source_notebook()
    release_path = tmp_path / "release.ipynb"
    nbformat.write(release_nb, release_path)
    folder = tmp_path / "submitted" / "mallory" / NAME
    folder.mkdir(parents=True)
    honest = nbformat.from_dict(release_nb)
    answer(honest, "one_hot").source = MY_ANSWER
    return m, release_path, folder, honest


def answer(nb, gid: str):
    return next(c for c in nb.cells if notebooks.meta(c).get("grade_id") == gid)


def graded_ids(nb) -> list[str]:
    return [notebooks.meta(c)["grade_id"] for c in nb.cells if notebooks.meta(c)]


def take_in(course, content) -> tuple[list[str], nbformat.NotebookNode]:
    """Write ``content`` (a notebook, text or bytes) as the submission, run intake, read back what is graded."""
    m, release_path, folder, _ = course
    target = folder / m.notebook
    if isinstance(content, nbformat.NotebookNode):
        nbformat.write(content, target)
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    notes = intake.intake(folder, m, release_path)
    graded = notebooks.read(folder / m.notebook)
    MetadataValidator().validate_nb(graded)  # what nbgrader's CheckCellMetadata runs: it must not raise
    nbformat.validate(graded)
    return notes, graded


def notebook_json(**changes) -> str:
    nb = json.loads(nbformat.writes(gradingcourse.source_notebook()))
    nb.update(changes)
    return json.dumps(nb)


MALFORMED = {
    "null": "null",
    "nbformat-99": notebook_json(nbformat=99),
    "deep-json": "[" * 200_000 + "]" * 200_000,
    "deep-but-parseable": '{"cells": [], "nbformat": 4, "metadata": ' + '{"a": ' * 500 + "1" + "}" * 501,
    "a-list": "[1, 2, 3]",
    "cells-not-a-list": notebook_json(cells={"a": 1}),
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe",
    "truncated": '{"cells": [',
    "a-cell-without-type": notebook_json(cells=[{"source": "x", "metadata": {}}]),
    "lone-surrogate-in-a-cell": notebook_json(cells=[{"cell_type": "markdown", "source": "\udcff", "metadata": {}}]),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_notebook_is_set_aside_and_the_release_graded(course, kind):
    _, release_path, folder, _ = course
    notes, graded = take_in(course, MALFORMED[kind])
    assert len(notes) == 1 and "could not be read as a notebook" in notes[0] and ".invalid" in notes[0], notes
    kept = folder / f"{NAME}.ipynb.invalid"
    original = MALFORMED[kind]
    assert kept.read_bytes() == (original if isinstance(original, bytes) else original.encode())
    assert graded.cells[0].source.startswith(intake.NOTES_TITLE)
    assert [c.source for c in graded.cells[1:]] == [c.source for c in notebooks.read(release_path).cells]


def test_a_folder_in_place_of_the_notebook_is_set_aside(course):
    m, _, folder, _ = course
    (folder / m.notebook).mkdir()
    (folder / m.notebook / "inside.txt").write_text("x")
    notes = intake.intake(folder, m, course[1])
    assert "it is a folder" in notes[0]
    assert (folder / f"{m.notebook}.invalid" / "inside.txt").exists() and (folder / m.notebook).is_file()


def test_a_notebook_too_big_or_too_long_is_set_aside(course, monkeypatch):
    m, _, folder, honest = course
    monkeypatch.setattr(intake, "MAX_NOTEBOOK_BYTES", 1000)
    notes, _ = take_in(course, honest)
    assert "a submission may be at most" in notes[0]
    monkeypatch.setattr(intake, "MAX_NOTEBOOK_BYTES", 2**30)
    honest.cells.append(new_markdown_cell("x" * (intake.MAX_TEXT_BYTES + 1)))
    (folder / f"{m.notebook}.invalid").unlink()
    notes, _ = take_in(course, honest)
    assert "MB of text" in notes[0]


def test_damaged_metadata_is_restored_by_cell_id_and_the_answer_kept(course):
    _, _, _, nb = course
    answer(nb, "one_hot").metadata["nbgrader"] = "x"  # a string
    answer(nb, "test_one_hot").metadata["nbgrader"]["grade_id"] = ["a", "list"]  # unhashable
    del answer(nb, "test_gaussian_kl").metadata["nbgrader"]
    ids = {c.id for c in nb.cells}
    notes, graded = take_in(course, nb)
    assert graded_ids(graded) == graded_ids(gradingcourse.source_notebook())
    assert answer(graded, "one_hot").source == MY_ANSWER
    assert {c.id for c in graded.cells[1:]} == ids
    assert sum("grading metadata of cell" in n for n in notes) == 3, notes


def test_tampered_flags_points_and_types_are_restored(course):
    _, release_path, _, nb = course
    release = notebooks.read(release_path)
    test = answer(nb, "test_interpolate")
    test.metadata["nbgrader"].update(locked=False, solution=True, points=100)  # a test made an answer, worth more
    test.source = "pass  # no tests here"
    one_hot = answer(nb, "one_hot")
    one_hot.metadata["nbgrader"].update(grade=True, points=50)  # an answer cell marked as graded
    kl = answer(nb, "test_gaussian_kl")
    kl.cell_type, kl.source = "markdown", "not code any more"
    del kl["outputs"], kl["execution_count"]
    nb.metadata.kernelspec = {"name": "evil", "display_name": "Evil", "language": "python"}
    notes, graded = take_in(course, nb)
    for gid in ("test_interpolate", "one_hot", "test_gaussian_kl"):
        assert notebooks.meta(answer(graded, gid)) == notebooks.meta(answer(release, gid))
    assert answer(graded, "test_interpolate").source == answer(release, "test_interpolate").source
    assert answer(graded, "test_gaussian_kl").cell_type == "code"
    assert answer(graded, "test_gaussian_kl").source == answer(release, "test_gaussian_kl").source
    assert answer(graded, "one_hot").source == MY_ANSWER
    assert graded.metadata.kernelspec == release.metadata.kernelspec
    assert any("kernel 'evil'" in n for n in notes) and any("locked cell `test_interpolate`" in n for n in notes)


def test_forged_graded_cells_go_and_duplicates_leave_one_copy(course):
    _, _, _, nb = course
    forged = new_code_cell(
        "pass", metadata={"nbgrader": {"grade": True, "grade_id": "free_points", "points": 100, "locked": True}}
    )
    stray = new_code_cell("x = 1", metadata={"nbgrader": {"solution": True, "grade_id": "extra", "grade": False}})
    test_copy = nbformat.from_dict(answer(nb, "test_one_hot"))
    test_copy.source, test_copy.id = "print('a forged copy of a test')", "copy1"
    answer_copy = nbformat.from_dict(answer(nb, "one_hot"))
    answer_copy.source, answer_copy.id = "def helper():\n    return 1\n", "copy2"
    nb.cells[2:2] = [forged, stray, test_copy, answer_copy]
    notes, graded = take_in(course, nb)
    assert graded_ids(graded) == graded_ids(gradingcourse.source_notebook())
    sources = [c.source for c in graded.cells]
    assert "pass" not in sources and "print('a forged copy of a test')" not in sources
    assert "x = 1" in sources and "def helper():\n    return 1\n" in sources  # the student's code, ungraded
    assert answer(graded, "one_hot").source == MY_ANSWER
    assert any("free_points" in n for n in notes) and any("`test_one_hot` appears 2 times" in n for n in notes)


def test_repeated_or_invalid_cell_ids_are_renewed(course):
    _, _, _, nb = course
    data = json.loads(nbformat.writes(nb))
    data["cells"][1]["id"] = data["cells"][0]["id"]  # written as JSON: nbformat.write would renew it itself
    data["cells"][2]["id"] = "not a valid id!"
    notes, graded = take_in(course, json.dumps(data))
    ids = [c.id for c in graded.cells]
    assert len(set(ids)) == len(ids) and any("cell id" in n for n in notes)


@pytest.mark.parametrize(
    "output",
    [
        {"output_type": "display_data", "data": {"text/plain": 5}, "metadata": []},
        {"output_type": "stream", "name": "stdout", "text": "a lone surrogate: \udcff"},
        {"output_type": "display_data", "data": {"application/json": json.loads("[" * 900 + "]" * 900)}},
    ],
    ids=["invalid", "not-utf8", "deep"],
)
def test_invalid_saved_outputs_are_removed_not_fatal(course, output):
    _, _, _, nb = course
    data = json.loads(nbformat.writes(nb))
    code = next(c for c in data["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"metadata": {}, **output}]
    notes, graded = take_in(course, json.dumps(data))
    assert any("outputs saved in your notebook were not valid" in n for n in notes)
    assert answer(graded, "one_hot").source == MY_ANSWER


@pytest.mark.parametrize("stamp", ["not a date", "", "2024-13-45 99:99:99", "9" * 500, "\xff\xfe"])
def test_an_unreadable_timestamp_is_ignored_with_a_note(course, stamp):
    m, release_path, folder, nb = course
    (folder / "timestamp.txt").write_bytes(stamp.encode("latin-1"))
    notes, _ = take_in(course, nb)
    assert "counts as submitted on time" in notes[0]
    assert not (folder / "timestamp.txt").exists() and (folder / "timestamp.txt.invalid").exists()


def test_a_readable_timestamp_and_an_honest_notebook_are_left_alone(course):
    m, _, folder, nb = course
    (folder / "timestamp.txt").write_text("2026-12-31 23:00:00.000000 UTC")
    nbformat.write(nb, folder / m.notebook)
    before = (folder / m.notebook).read_bytes()
    assert intake.intake(folder, m, course[1]) == []
    assert (folder / m.notebook).read_bytes() == before and (folder / "timestamp.txt").exists()


def test_unsafe_entries_walks_deep_folders_without_recursion(tmp_path):
    deep = tmp_path
    for _ in range(100):
        deep = deep / "d"
        deep.mkdir()
    os.symlink("/etc/passwd", deep / "link")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 40)  # far less than the folder's depth
    try:
        found = intake.unsafe_entries(tmp_path)
    finally:
        sys.setrecursionlimit(limit)
    assert found == [deep / "link"]


def test_the_release_graded_in_place_of_a_broken_notebook_keeps_every_resubmission(course):
    m, _, folder, _ = course
    for _ in range(2):
        (folder / m.notebook).write_text("{")
        intake.intake(folder, m, course[1])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [m.notebook, f"{m.notebook}.invalid", f"{m.notebook}.invalid-2"]
    )
