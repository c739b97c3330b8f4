"""What students see in their feedback: the calls and messages of failed checks (never the checks'
code), a score that says which points are decided and which still wait for a person, math that is
typeset without a network connection, and messages that wrap instead of running off the page.

``nbgrader generate_feedback`` uses these through nbgrader_config.py:

- :class:`GetGradeStates` (in place of nbgrader's ``GetGrades``) tells each graded cell's state;
- :class:`SanitizeErrors` trims error tracebacks to the notebook's own frames;
- :class:`FeedbackExporter` renders the page with the template ``templates/genlab_feedback``.
"""

from __future__ import annotations

import base64
import gzip
import re
from functools import cache
from pathlib import Path

from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from nbgrader import utils
from nbgrader.preprocessors import GetGrades
from traitlets import Bool

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


class GetGradeStates(GetGrades):
    """nbgrader's ``GetGrades``, and the state of each graded cell for the feedback page.

    ``cell.metadata.nbgrader.state`` becomes ``"auto"`` (scored by the autograder), ``"graded"`` (a
    person gave the score), ``"unanswered"`` (a written answer left as released: 0 points, decided
    automatically) or ``"pending"`` (an answer that waits for a person: it has no score yet).
    ``resources["nbgrader"]["pending_points"]`` adds up the points of the pending cells.
    """

    def preprocess(self, nb, resources):
        resources["nbgrader"]["pending_points"] = 0.0
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
def packed_mathjax() -> str:
    """MathJax 3 (TeX in, SVG out: no font files to fetch), gzipped and base64-encoded for a page.

    The PyPI package django-static-mathjax ships it; the page unpacks it with the browser's
    DecompressionStream, so the feedback typesets its math offline at a third of MathJax's size.
    """
    import mathjax

    script = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg.js"
    return base64.b64encode(gzip.compress(script.read_bytes(), 9, mtime=0)).decode("ascii")


class FeedbackExporter(HTMLExporter):
    """The HTML exporter of ``nbgrader generate_feedback`` with genlab's feedback template.

    The template (``templates/genlab_feedback``) shows every graded cell's state (see
    :class:`GetGradeStates`), carries MathJax inside the page, and wraps long output lines.
    nbgrader's own feedback template stays reachable as ``feedback`` (its base).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # generate_feedback configures HTMLExporter (template "feedback", nbgrader's template folder);
        # this exporter's template extends that one.
        self.extra_template_basedirs = [str(TEMPLATES), *self.extra_template_basedirs]
        self.template_name = "genlab_feedback"
        self.template_paths = self._template_paths()  # computed once by default: again, for this template

    def _init_resources(self, resources):
        resources = super()._init_resources(resources)
        resources["genlab_mathjax"] = packed_mathjax()
        return resources
