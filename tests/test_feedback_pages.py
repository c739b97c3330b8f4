"""One feedback page per chapter, as a student reads it, in a real browser (see tests/test_book.py).

Each chapter gets one submission made to show everything a feedback page can hold: the source
solutions with the chapter's first typical mistake (a failed check and its message), one written
answer left as released (not answered) and the others filled in (waiting for a grader). It goes
through the standard commands (``nbgrader autograde``, ``nbgrader generate_feedback``).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from autograder import manifest, notebooks, release
from tests.conftest import make_course
from tests.test_book import CHROMIUM, check_page, inspect_page, serve

pytestmark = pytest.mark.slow
MANIFESTS = manifest.all_manifests()
STUDENT = "reader"


def submission(m: manifest.Manifest, root: Path) -> nbformat.NotebookNode:
    released = notebooks.read(root / "release" / m.name / m.notebook)
    source = notebooks.read(m.source_at(root))
    mistakes = {k.cell: k.code for k in m.mistakes[:1]}
    nb = notebooks.fill(released, source, mistakes)
    written = [c for c in nb.cells if c.cell_type == "markdown" and notebooks.meta(c).get("solution")]
    if written:  # the first written answer stays as released
        gid = notebooks.meta(written[0])["grade_id"]
        written[0].source = next(c.source for c in released.cells if notebooks.meta(c).get("grade_id") == gid)
    return nb


@pytest.fixture(scope="module")
def feedback_root(tmp_path_factory) -> Path:
    names = [m.name for m in MANIFESTS]
    root = make_course(tmp_path_factory.mktemp("feedback-pages"), names)
    release.release(names, root=root)
    for m in MANIFESTS:
        folder = root / "submitted" / STUDENT / m.name
        folder.mkdir(parents=True)
        nbformat.write(submission(m, root), folder / m.notebook)
        release.nbgrader(
            "autograde", m.name, "--student", STUDENT, "--force", f"--Execute.timeout={m.cell_timeout_s}", root=root
        )
        release.nbgrader("generate_feedback", m.name, "--student", STUDENT, "--force", root=root)
    return root


@pytest.fixture(scope="module")
def feedback_server(feedback_root):
    yield from serve(feedback_root / "feedback" / STUDENT)


def page_of(feedback_root: Path, m: manifest.Manifest) -> Path:
    return feedback_root / "feedback" / STUDENT / m.name / m.notebook.replace(".ipynb", ".html")


@pytest.mark.parametrize("m", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_feedback_says_which_points_wait_for_a_grader(feedback_root, m):
    page = page_of(feedback_root, m).read_text()
    written = [
        c for c in notebooks.read(m.source).cells if c.cell_type == "markdown" and notebooks.meta(c).get("grade")
    ]
    if not written:
        pytest.skip(f"{m.name} has no written answers")
    assert "not answered: 0 /" in page, "an answer left as released must say so"
    if len(written) > 1:
        assert "awaiting a grader" in page and "wait for a grader" in page
    # A score is shown only where one is decided: never "0.0" for an answer nobody graded yet.
    for state in re.findall(r'class="grade-pending">([^<]*)<', page):
        assert "Score" not in state and "0.0 /" not in state


@pytest.mark.parametrize("m", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_feedback_carries_its_math_and_shows_the_failed_check(feedback_root, m):
    page = page_of(feedback_root, m).read_text()
    assert "cdn.jsdelivr.net" not in page.split("fromNetwork")[0], "MathJax must not come from a CDN first"
    assert "DecompressionStream" in page and len(page) > 500_000, "MathJax travels inside the page"
    if m.mistakes:
        assert "output_error" in page, f"{m.name}: the typical mistake should fail a test cell"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
@pytest.mark.parametrize("m", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_feedback_reads_well_in_a_browser(feedback_root, feedback_server, output_dir, m):
    url = f"{feedback_server}/{m.name}/{m.notebook.replace('.ipynb', '.html')}"
    page = inspect_page(url, f"feedback-{m.name}", output_dir)
    check_page(page, expect_tables=0, expect_math=True)
