"""One feedback page per chapter, as a student reads it, in a real browser (see tests/test_book.py).

Each chapter gets one submission made to show everything a feedback page can hold: the source
solutions with the chapter's first typical mistake (a failed check and its message), one written
answer left as released (not answered) and the others filled in (waiting for a grader). It goes
through the standard commands (``nbgrader autograde``, ``nbgrader generate_feedback``).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest

from autograder import feedback, manifest, notebooks, release
from autograder.course import gradebook_url
from tests import gradingcourse
from tests.conftest import make_course
from tests.test_book import CHROMIUM, check_page, chromium, inspect_page, serve

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
def test_feedback_names_the_exercise_of_each_graded_cell(feedback_root, m):
    page = html.unescape(page_of(feedback_root, m).read_text())
    for gid, title in feedback.exercise_titles(notebooks.read(m.source)).items():
        assert f"{title}</a>" in page and f"<code>{gid}</code>" in page, f"{m.name}: {gid} is not named {title!r}"


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


# ----------------------------------------------------------------------------------------------
# pages made from a hostile submission: nothing of it runs, nothing is fetched (issue 22)

# Each vector, if it ran, would fetch /pwned/<name> from the page's server, log "PWNED <name>" on the
# console and rename the page.
RUN = "fetch('/pwned/{0}');console.log('PWNED {0}');document.title='PWNED {0}'"
VECTOR_OUTPUTS = f"""
from IPython.display import HTML, SVG, Image, Javascript, Markdown, display
import base64
run = {RUN!r}
display(HTML("<script>" + run.format("script") + "</script>"))
display(HTML('<img src="x" onerror="' + run.format("img-onerror") + '">'))
display(HTML('<a id="jslink" href="javascript:' + run.format("a-href") + '">click me</a>'))
display(HTML('<iframe src="/pwned/iframe-src" srcdoc="<script>' + run.format("iframe-srcdoc") + '</script>"></iframe>'))
display(Javascript(run.format("application-javascript")))
display({{"application/vnd.jupyter.widget-view+json": {{"model_id": "x", "version_major": 2, "version_minor": 0}},
          "text/plain": "a widget"}}, raw=True)
svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20" onload="' + run.format("svg-onload")
       + '"><script>' + run.format("svg-script") + '</script><circle cx="10" cy="10" r="5"/></svg>')
display(SVG(svg))
display(HTML(svg.replace("svg-", "inline-svg-")))
display(HTML('<object data="/pwned/object"></object><embed src="/pwned/embed">'))
display(HTML('<meta http-equiv="refresh" content="0;url=/pwned/meta-refresh">'))
display(HTML('<div style="background-image:url(javascript:' + run.format("css-js-url") + ')">styled</div>'
             '<div style="background:url(/pwned/css-url)">x</div>'
             "<style>@import '/pwned/css-import'; body {{ background: url(/pwned/css-body) }}</style>"))
display(HTML('<img src="/pwned/img-src"><link rel="stylesheet" href="/pwned/link-css"><base href="/pwned/base/">'))
display(HTML('<p>isolated</p><script>' + run.format("isolated") + '</script>'), metadata={{"isolated": True}})
display(Markdown("<script>" + run.format("markdown-output") + "</script>"))
display(Markdown("[md link](javascript:" + run.format("md") + ")"))
display(HTML("<table class='dataframe'><tr><th>col</th></tr><tr><td>kept-table-cell</td></tr></table>"))
display(Image(base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")))
"""
VECTOR_MARKDOWN = (
    'Markdown with $x^2$ math and vectors: <script>{script}</script> <img src=x onerror="{onerror}">\n\n'
    "[a link](javascript:{link}) <iframe src='/pwned/md-iframe'></iframe> <form action='/pwned/md-form'>"
    "<button>go</button></form> <meta http-equiv='refresh' content='0;url=/pwned/md-meta'>"
).format(
    script=RUN.format("md-script"), onerror=RUN.format("md-onerror").replace("'", "&#39;"), link=RUN.format("md-link")
)
MALLORY = "mallory"


def formgrader_view(root: Path, notebook: Path) -> str:
    """The page formgrader serves for a submission: an HTMLExporter configured from the course's nbgrader_config.py."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {
        "assignment_id": gradingcourse.NAME,
        "notebook_id": gradingcourse.NAME,
        "submission_id": "x",
        "index": 0,
        "total": 1,
        "base_url": "",
        "student": MALLORY,
        "last_name": "",
        "first_name": "",
        "notebook_path": str(notebook),
    }
    return HTMLExporter(config=config).from_filename(str(notebook), resources=resources)[0]


@pytest.fixture(scope="module")
def hostile_pages(tmp_path_factory) -> Path:
    """A course where a correct submission carries every vector in its outputs and Markdown; graded, with its pages."""
    root = gradingcourse.make_course(tmp_path_factory.mktemp("inert-pages"))
    nb = gradingcourse.submission("correct-1")
    nb.cells += [nbformat.v4.new_code_cell(VECTOR_OUTPUTS), nbformat.v4.new_markdown_cell(VECTOR_MARKDOWN)]
    folder = root / "submitted" / MALLORY / gradingcourse.NAME
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{gradingcourse.NAME}.ipynb")
    release.nbgrader("autograde", gradingcourse.NAME, "--student", MALLORY, "--force", root=root)
    release.nbgrader("generate_feedback", gradingcourse.NAME, "--student", MALLORY, "--force", root=root)
    graded = root / "autograded" / MALLORY / gradingcourse.NAME / f"{gradingcourse.NAME}.ipynb"
    (root / "formgrader").mkdir()
    (root / "formgrader" / "view.html").write_text(formgrader_view(root, graded))
    return root


def test_a_hostile_submission_is_graded_on_its_answers(hostile_pages):
    got = gradingcourse.scores(gradebook_url(hostile_pages))[MALLORY]
    assert got == {"test_interpolate": 3, "test_one_hot": 2, "test_gaussian_kl": 5}
    graded = (hostile_pages / "autograded" / MALLORY / gradingcourse.NAME / f"{gradingcourse.NAME}.ipynb").read_text()
    assert "application/javascript" in graded, "the graded notebook keeps what the kernel sent; pages show it inert"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)")
@pytest.mark.parametrize("view", ["feedback", "formgrader"])
def test_nothing_of_a_submission_runs_or_fetches_in_its_pages(hostile_pages, view):
    page = {
        "feedback": f"feedback/{MALLORY}/{gradingcourse.NAME}/{gradingcourse.NAME}.html",
        "formgrader": "formgrader/view.html",
    }[view]
    text = (hostile_pages / page).read_text()
    assert "kept-table-cell" in text and "data:image/png;base64" in text, "tables and images stay"
    if view == "feedback":
        policy = re.search(r'<meta content="([^"]*)" http-equiv="Content-Security-Policy"', text)
        assert policy and "script-src 'sha256-" in policy.group(1) and "default-src 'none'" in policy.group(1)
    requests: list[str] = []
    server = serve(hostile_pages, requests)
    url = next(server)
    try:
        dom = chromium("--dump-dom", f"{url}/{page}", console=True)
    finally:
        next(server, None)
    console = [line for line in dom.splitlines() if ":CONSOLE" in line]
    assert not [r for r in requests if "pwned" in r], f"the page fetched {requests}"
    assert not [line for line in console if "PWNED" in line], console
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    # inside a tag (the cells' code shows the same text, escaped, outside any tag)
    assert not re.search(r"""<[^<>]*\s(href|src|action)=["']?\s*javascript:""", dom, re.I), "a javascript: URL"
    # the cells' code shows these names escaped (&lt;iframe); as elements they must not exist
    assert not re.search(r"<(iframe|object|embed|form|meta http-equiv|base)\b", dom, re.I)
