"""The student edition of genlab holds no graded body: every check's reference, imported from the
folder a grading kernel gets, raises the "graded exercise" error at its first call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder import release
from autograder.checks import __path__ as checks_path

CHAPTERS = sorted(p.stem for p in Path(checks_path[0]).glob("*.py") if p.stem != "__init__")

PROBE_ALL = """
import importlib, json, sys
from autograder import probing
out = {}
for chapter in sys.argv[1:]:
    module = importlib.import_module(f"autograder.checks.{chapter}")
    for name, check in probing.checks_of(module).items():
        if name.startswith("probe_"):
            out[f"{chapter}.{check.exercise}"] = check.run(check.reference, 0)["crash"]
import genlab
out["__file__"] = genlab.__file__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def crashes(tmp_path_factory) -> dict[str, str | None]:
    site = release.kernel_site()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE_ALL, *CHAPTERS],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path_factory.mktemp("elsewhere"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found.pop("__file__").startswith(str(site)), "the kernel must import genlab from its site folder"
    return found


def test_every_chapter_has_checks(crashes):
    assert {key.split(".")[0] for key in crashes} == set(CHAPTERS)


def test_every_graded_reference_is_withheld(crashes):
    kept = {key: crash for key, crash in crashes.items() if not crash or "graded exercise" not in crash}
    assert not kept, f"the student edition computes these graded exercises (or fails otherwise): {kept}"


def test_the_wheel_is_the_kernels_edition(tmp_path):
    wheel = release.student_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {name: zf.read(name) for name in zf.namelist() if name.startswith("genlab/")}
    assert shipped == release.student_sources()
    site = release.kernel_site()
    assert all((site / name).read_bytes() == data for name, data in shipped.items())


def test_the_kernel_site_holds_no_grader_code():
    site = release.kernel_site()
    grader = {p.relative_to(site).as_posix() for p in (site / "autograder").rglob("*.py")}
    assert grader == {
        "autograder/__init__.py",
        "autograder/probing.py",
        "autograder/checks/__init__.py",
        *(f"autograder/checks/{c}.py" for c in CHAPTERS),
    }


def test_grader_only_helpers_of_the_checks_are_stripped_in_the_kernel():
    site = release.kernel_site()
    for chapter in CHAPTERS:
        source = (Path(checks_path[0]) / f"{chapter}.py").read_text()
        kernel = (site / "autograder" / "checks" / f"{chapter}.py").read_text()
        assert kernel == release.strip_reference(source)


# ----------------------------------------------------------------------------- the test cells a student sees


def _test_cells() -> list[tuple[str, str, str]]:
    """(chapter, grade_id, source) of every autograded test cell of the source notebooks."""
    from autograder import manifest, notebooks

    cells = []
    for m in manifest.all_manifests():
        for cell in notebooks.read(m.source).cells:
            meta = notebooks.meta(cell)
            if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
                cells.append((m.name, meta["grade_id"], cell.source))
    return cells


@pytest.mark.parametrize("chapter, gid, source", _test_cells(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_hidden_block_runs_before_the_visible_asserts(chapter, gid, source):
    """So that the probe has recorded when a visible assert fails, and feedback shows its diagnosis."""
    from autograder import notebooks

    (first, _last), *_ = notebooks.regions(source, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN)
    assert first == 0, f"{chapter}/{gid}: the hidden block must open the cell"


@pytest.mark.parametrize("chapter, gid, source", _test_cells(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_visible_assert_says_what_it_expected(chapter, gid, source):
    import ast

    from autograder import notebooks

    visible = notebooks.drop_regions(source, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN)
    silent = [
        ast.unparse(node)[:80]
        for node in ast.walk(ast.parse(visible))
        if isinstance(node, ast.Assert) and node.msg is None
    ]
    assert not silent, f"{chapter}/{gid}: asserts without a message: {silent}"
