"""What students see in their feedback: the calls and messages of failed checks (never the checks'
code), a score that says which points are decided and which still wait for a person, the exercise
each graded cell belongs to, math that is typeset without a network connection, messages that wrap
instead of running off the page, and nothing of the submission that can run (autograder/inert.py).

``nbgrader generate_feedback`` uses these through nbgrader_config.py:

- :class:`GetGradeStates` (in place of nbgrader's ``GetGrades``) tells each graded cell's state and
  names its exercise;
- :class:`SanitizeErrors` trims error tracebacks to the notebook's own frames;
- :class:`FeedbackExporter` renders the page with the template ``templates/genlab_feedback`` under a
  Content-Security-Policy that lets only the page's own MathJax run.
"""

from __future__ import annotations

import base64
import copy
import gzip
import re
from functools import cache
from pathlib import Path

from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import GetGrades
from traitlets import Bool

from autograder import inert, notebooks, outputcap

TEMPLATES = Path(__file__).resolve().parent / "templates"

# IPython names a notebook cell's frame "Cell In[12], line 3"; every other frame lies in
# a module (the checks, the genlab oracle) whose lines must not reach students.
_CELL_FRAME = re.compile(r"Cell In\[\d+\]|<ipython-input-")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sanitize_traceback(traceback: list[str], ename: str, evalue: str) -> list[str]:
    """Keep the notebook-cell frames and the final message; drop frames from modules."""
    kept = [frame for frame in traceback if _CELL_FRAME.search(_ANSI.sub("", frame))]
    return kept + [f"{ename}: {evalue}"]


class SanitizeErrors(Preprocessor):
    """nbconvert preprocessor for ``nbgrader generate_feedback``: trims error tracebacks."""

    enabled = Bool(True)  # nbconvert preprocessors skip their work unless enabled

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = sanitize_traceback(
                    output.get("traceback", []), output.get("ename", "Error"), output.get("evalue", "")
                )
        return cell, resources


# The line that names an exercise in the cells before its graded cell: a heading, or a bold
# "**Question ...**" / "**Exercise ...**" lead.
_HEADING = re.compile(r"^#{1,6}\s+(?P<heading>.+?)\s*$")
_LEAD = re.compile(r"^\*\*(?P<lead>(?:Question|Exercise)[^*]*)\*\*\s*(?P<rest>.*)$")
_POINTS = re.compile(r"\s*\((?:written(?: answer)?)?[^()]*\bpoints?\)|\s*\(written(?: answer)?\)", re.I)


def _first_sentence(text: str, limit: int = 70) -> str:
    """The first sentence of ``text``, cut to ``limit`` characters without splitting inline math."""
    sentence = re.split(r"(?<=[.?!])\s", text.strip(), maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence
    cut = sentence[:limit]
    if cut.count("$") % 2:
        cut = cut[: cut.rindex("$")]
    return cut.rstrip() + "\u2026"


def _title_in(markdown: str) -> str | None:
    """The last heading or bold Question/Exercise lead (with its first sentence) of some Markdown."""
    title = None
    for paragraph in re.split(r"\n\s*\n", markdown):
        for line in paragraph.splitlines():
            if heading := _HEADING.match(line):
                title = _POINTS.sub("", heading["heading"]).strip("*_ ")
        if lead := _LEAD.match(" ".join(line.strip() for line in paragraph.strip().splitlines())):
            name = _POINTS.sub("", lead["lead"]).strip(" .:")
            title = f"{name}: {_first_sentence(lead['rest'])}" if lead["rest"] else name
    return title


def exercise_titles(nb: NotebookNode) -> dict[str, str]:
    """{grade_id: the title of its exercise or question} for each graded cell that follows one.

    The title is the last heading or bold "Question"/"Exercise" lead in the prose before the cell,
    looking no further back than the graded cell before it.
    """
    titles: dict[str, str] = {}
    for i, cell in enumerate(nb.cells):
        meta = notebooks.meta(cell)
        if not (meta.get("grade") or meta.get("task")) or not isinstance(meta.get("grade_id"), str):
            continue
        for before in reversed(nb.cells[:i]):
            if notebooks.meta(before).get("grade"):
                break
            title = _title_in(before.source) if before.cell_type == "markdown" else None
            if title and not notebooks.meta(before).get("solution"):
                titles[meta["grade_id"]] = title[:120]
                break
    return titles


class GetGradeStates(GetGrades):
    """nbgrader's ``GetGrades``, the state of each graded cell and the title of its exercise, for the page.

    ``cell.metadata.nbgrader.state`` becomes ``"auto"`` (scored by the autograder), ``"graded"`` (a
    person gave the score), ``"unanswered"`` (a written answer left as released: 0 points, decided
    automatically) or ``"pending"`` (an answer that waits for a person: it has no score yet).
    ``resources["nbgrader"]["pending_points"]`` adds up the points of the pending cells, and
    ``resources["genlab_exercises"]`` holds :func:`exercise_titles`.
    """

    def preprocess(self, nb, resources):
        resources["nbgrader"]["pending_points"] = 0.0
        resources["genlab_exercises"] = exercise_titles(nb)
        return super().preprocess(nb, resources)

    def _get_score(self, cell, resources) -> None:
        super()._get_score(cell, resources)
        grade = self.gradebook.find_grade(
            cell.metadata["nbgrader"]["grade_id"], self.notebook_id, self.assignment_id, self.student_id
        )
        if grade.manual_score is not None:
            state = "graded"
        elif grade.auto_score is None:
            state = "pending"
        elif utils.is_solution(cell) and grade.auto_score == 0:
            state = "unanswered"
        else:
            state = "auto"
        cell.metadata.nbgrader["state"] = state
        if state == "pending":
            resources["nbgrader"]["pending_points"] += float(grade.max_score or 0)


@cache
def mathjax_code() -> str:
    """MathJax 3 (TeX in, SVG out: no font files to fetch), from the PyPI package django-static-mathjax."""
    import mathjax

    return (Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg.js").read_text(encoding="utf-8")


# The page's one inline script: MathJax's configuration, then MathJax itself unpacked from the page
# (gzipped, base64) with the browser's DecompressionStream, so math is typeset offline at a third of
# MathJax's size. The policy admits this script and MathJax's code by their hashes, nothing else.
LOADER = """
window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
        processEscapes: true, processEnvironments: true},
  options: {skipHtmlTags: ["script", "noscript", "style", "textarea", "pre", "code"]},
  svg: {fontCache: "global"}
};
(function () {
  if (!window.DecompressionStream) return;  // an old browser shows the TeX source
  var bytes = Uint8Array.from(atob("@PACKED@"), function (c) { return c.charCodeAt(0); });
  new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text().then(function (code) {
    var script = document.createElement("script");
    script.text = code;
    document.head.appendChild(script);
  });
})();
"""


@cache
def page_scripts() -> tuple[str, str]:
    """(the page's inline loader script, its Content-Security-Policy)."""
    packed = base64.b64encode(gzip.compress(mathjax_code().encode("utf-8"), 9, mtime=0)).decode("ascii")
    loader = LOADER.replace("@PACKED@", packed)
    return loader, inert.content_security_policy(loader, mathjax_code())


class FeedbackExporter(HTMLExporter):
    """The HTML exporter of ``nbgrader generate_feedback`` with genlab's feedback template.

    The template (``templates/genlab_feedback``) shows every graded cell's state and exercise (see
    :class:`GetGradeStates`), carries MathJax inside the page under a policy that lets nothing else
    run, and wraps long output lines. nbgrader's own feedback template stays reachable as
    ``feedback`` (its base).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # generate_feedback configures HTMLExporter (template "feedback", nbgrader's template folder);
        # this exporter's template extends that one.
        self.extra_template_basedirs = [str(TEMPLATES), *self.extra_template_basedirs]
        self.template_name = "genlab_feedback"
        self.template_paths = self._template_paths()  # computed once by default: again, for this template

    page_limit_mb = 8  # where the assignment has no manifest with output_limit_mb

    def from_notebook_node(self, nb, resources=None, **kw):
        """The page, within the manifest's output cap: outputs are cut further while it is not (sources never)."""
        html, out = super().from_notebook_node(nb, resources, **kw)
        limit = outputcap.output_limit(out, self.page_limit_mb * 2**20)
        for _ in range(4):
            over = len(html.encode("utf-8")) - limit
            if over <= 0:
                break
            nb = copy.deepcopy(nb)
            outputcap.cap_notebook(nb, max(0, outputcap.notebook_bytes(nb) - 2 * over))
            html, out = super().from_notebook_node(nb, resources, **kw)
        return html, out

    def _init_resources(self, resources):
        resources = super()._init_resources(resources)
        resources.setdefault("genlab_exercises", {})
        resources["genlab_loader"], resources["genlab_csp"] = page_scripts()
        return resources
