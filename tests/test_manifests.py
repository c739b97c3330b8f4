"""Every assignment manifest agrees with its source notebook."""
from __future__ import annotations

import pytest

from autograder import manifest, notebooks

MANIFESTS = manifest.all_manifests()
IDS = [m.name for m in MANIFESTS]


def test_there_are_assignments():
    assert IDS, "no manifests in assignments/"


@pytest.mark.parametrize("m", MANIFESTS, ids=IDS)
def test_points_match_the_notebook(m):
    nb = notebooks.read(m.source)
    total = sum(notebooks.meta(c).get("points", 0) for c in nb.cells if notebooks.meta(c).get("grade"))
    assert total == m.points, f"{m.name}: manifest says {m.points} points, the notebook's graded cells sum to {total}"


@pytest.mark.parametrize("m", MANIFESTS, ids=IDS)
def test_mistakes_name_real_cells(m):
    nb = notebooks.read(m.source)
    solution = {notebooks.meta(c)["grade_id"] for c in nb.cells if notebooks.meta(c).get("solution")}
    autograded = {
        notebooks.meta(c)["grade_id"] for c in nb.cells
        if notebooks.meta(c).get("grade") and not notebooks.meta(c).get("solution")
    }
    assert len(m.mistakes) >= 3, f"{m.name}: give at least three typical mistakes"
    for mistake in m.mistakes:
        assert mistake.cell in solution, f"{mistake.name}: {mistake.cell} is not a solution cell"
        assert mistake.fails and set(mistake.fails) <= autograded, f"{mistake.name}: unknown test cells {mistake.fails}"


@pytest.mark.parametrize("m", MANIFESTS, ids=IDS)
def test_hidden_tests_only_call_checks(m):
    """Feedback shows hidden-test lines, so they may hold nothing but imports and check calls."""
    nb = notebooks.read(m.source)
    for cell in nb.cells:
        for a, b in notebooks.regions(cell.source, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN):
            for line in cell.source.splitlines()[a + 1 : b]:
                line = line.strip()
                assert not line or line.startswith(("from autograder.checks", "import ", "check_", "#")), (
                    f"{m.name}/{notebooks.meta(cell).get('grade_id')}: hidden test line {line!r} is test logic; "
                    "move it into autograder/checks"
                )


def test_bad_manifest_names_the_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('title = "x"\nnotebook = "x.ipynb"\npoints = 1\ndue = "2027-01-01"\ngpu = "sometimes"\n')
    with pytest.raises(ValueError, match="broken.toml.*gpu"):
        manifest.load(bad)
    with pytest.raises(FileNotFoundError, match="known assignments"):
        manifest.load("no-such-assignment")
