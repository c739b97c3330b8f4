"""``RecordGraded``: the last autograde step; stores the result in the submission's row and marks it graded.

It runs after ``SaveAutoGrades`` (and the late penalties), so a submission is ``graded`` in the
status table (autograder/status.py) only once nbgrader has scored it: a grading process killed
at any moment before leaves it ``running``, and a restarted driver grades it again rather than
losing it. The row then holds the whole result: the autograded notebook (as nbgrader is about
to write it), the per-cell scores, the submission's timestamp, the time of each phase, what the
kernel used and whether it ran sandboxed, and the digest of the code that graded it.

Under a grading task nbgrader's gradebook is the task's private one, and this row is the only
record that leaves the task (under its claim): the driver applies it to the course's gradebook.
Run by hand, nbgrader has written the course's gradebook itself, and the row says it is applied.
"""

from __future__ import annotations

import os

import nbformat
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool

from autograder import gradebook, status
from autograder.runner import code_digest


class RecordGraded(NbGraderPreprocessor):
    """Record the autograded notebook, its scores and phase times, and mark the submission graded."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict):
        db_url, assignment, student, sha, token = status.context(resources)
        scores, timestamp = gradebook.cell_scores(
            resources["nbgrader"]["db_url"], resources["nbgrader"]["notebook"], assignment, student
        )
        status.record_graded(
            db_url,
            assignment,
            student,
            sha,
            token,
            notebook=nbformat.writes(nb),
            scores=scores,
            phases=status.phase_times(resources),
            applied=not os.environ.get(status.RECORD_ENV),
            submitted=timestamp,
            code=code_digest(),
            **status.usage(resources),
        )
        return nb, resources
