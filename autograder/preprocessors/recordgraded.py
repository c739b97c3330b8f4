"""``RecordGraded``: the last autograde step; marks a submission graded once nbgrader saved its scores.

It runs after ``SaveAutoGrades`` (and the late penalties), so a submission is ``graded`` in the
status table (autograder/status.py) only when its scores are in the gradebook: a grading process
killed at any moment before leaves it ``running``, and a restarted driver grades it again rather
than losing it. With the state it stores the autograded notebook (as nbgrader is about to write
it), the per-cell scores and the time of each phase, so a driver that restarts can deliver a
result whose process outlived it.
"""

from __future__ import annotations

import nbformat
from nbformat import NotebookNode
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool

from autograder import status


def cell_scores(db_url: str, notebook: str, assignment: str, student: str) -> dict[str, list]:
    """{grade_id: [score, max_score, cell_type]} of one submitted notebook, from the gradebook."""
    with Gradebook(db_url) as gb:
        try:
            sub = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            return {}
        return {g.name: [g.score, g.max_score, g.cell.cell_type] for g in sub.grades}


class RecordGraded(NbGraderPreprocessor):
    """Record the autograded notebook, its scores and phase times, and mark the submission graded."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict):
        db_url, assignment, student, sha, token = status.context(resources)
        scores = cell_scores(db_url, resources["nbgrader"]["notebook"], assignment, student)
        status.record_graded(
            db_url,
            assignment,
            student,
            sha,
            token,
            notebook=nbformat.writes(nb),
            scores=scores,
            phases=status.phase_times(resources),
        )
        return nb, resources
