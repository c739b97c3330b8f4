"""Every assignment manifest agrees with its source notebook."""

from __future__ import annotations

import importlib

import pytest

from autograder import manifest, notebooks, probing
from autograder.preprocessors.verifyprobes import probe_calls

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
        notebooks.meta(c)["grade_id"]
        for c in nb.cells
        if notebooks.meta(c).get("grade") and not notebooks.meta(c).get("solution")
    }
    assert len(m.mistakes) >= 3, f"{m.name}: give at least three typical mistakes"
    for mistake in m.mistakes:
        assert mistake.cell in solution, f"{mistake.name}: {mistake.cell} is not a solution cell"
        assert mistake.fails and set(mistake.fails) <= autograded, f"{mistake.name}: unknown test cells {mistake.fails}"


@pytest.mark.parametrize("m", MANIFESTS, ids=IDS)
def test_every_autograded_cell_is_decided_by_probes(m):
    """Verdicts come from probes verified outside the kernel, and feedback shows hidden-test lines:
    every autograded test cell calls probes of its chapter, and its hidden part holds nothing else."""
    module = importlib.import_module(f"autograder.checks.{m.name}")
    probes = {name for name in probing.checks_of(module) if name.startswith("probe_")}
    used = set()
    for cell in notebooks.read(m.source).cells:
        meta = notebooks.meta(cell)
        if not (meta.get("grade") and not meta.get("solution") and cell.cell_type == "code"):
            continue
        calls = probe_calls(cell.source)
        assert calls, f"{m.name}/{meta['grade_id']}: an autograded test cell must call a probe in its hidden part"
        for chapter, name in calls:
            assert chapter == m.name and name in probes, f"{m.name}/{meta['grade_id']}: unknown probe {name}"
            used.add(name)
        for a, b in notebooks.regions(cell.source, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN):
            for line in cell.source.splitlines()[a + 1 : b]:
                line = line.strip()
                assert not line or line.startswith((f"from autograder.checks.{m.name} import probe_", "probe_", "#")), (
                    f"{m.name}/{meta['grade_id']}: hidden test line {line!r} is test logic; move it into a probe"
                )
    assert used == probes, f"{m.name}: probes no test cell calls: {sorted(probes - used)}"


def test_bad_manifest_names_the_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('title = "x"\nnotebook = "x.ipynb"\npoints = 1\ndue = "2027-01-01"\ngpu = "sometimes"\n')
    with pytest.raises(ValueError, match="broken.toml.*gpu"):
        manifest.load(bad)
    with pytest.raises(FileNotFoundError, match="known assignments"):
        manifest.load("no-such-assignment")


@pytest.mark.parametrize(
    ("line", "message"),
    [('points = "ten"', "'points' must be int or float"), ("due = 5", "'due' must be str or datetime")],
)
def test_a_value_of_the_wrong_type_is_named_with_the_types_it_may_have(tmp_path, line, message):
    fields = {"title": '"x"', "notebook": '"x.ipynb"', "points": "1", "due": '"2027-01-01"'}
    key = line.split(" = ")[0]
    text = "".join(f"{k} = {v}\n" for k, v in fields.items() if k != key) + line + "\n"
    (tmp_path / "typed.toml").write_text(text)
    with pytest.raises(ValueError, match=f"typed.toml: {message}, got"):
        manifest.load(tmp_path / "typed.toml")
