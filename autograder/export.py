"""``GradesExport``: nbgrader's CSV export, with what nbgrader cannot say about a submission.

nbgrader writes a score of 0 both for a student who submitted nothing and for a submission the
grader failed to grade. This export adds a ``status`` column (``graded``, ``ungraded``,
``not submitted``) and the ``reason`` of an ungraded one, whose score is left empty: a grading
failure is never recorded as a zero.
"""

from __future__ import annotations

import csv

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin

from autograder import status

COLUMNS = [
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
    "status",
    "reason",
]


class GradesExport(ExportPlugin):
    """One row per student and assignment, with the grading status."""

    def export(self, gradebook: Gradebook) -> None:
        dest = self.to or "grades.csv"
        db_url = str(gradebook.engine.url.render_as_string(hide_password=False))
        self.log.info("Exporting grades to %s", dest)
        with open(dest, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for assignment in gradebook.assignments:
                if self.assignment and assignment.name not in self.assignment:
                    continue
                for student in gradebook.students:
                    if self.student and student.id not in self.student:
                        continue
                    writer.writerow(self._row(gradebook, db_url, assignment, student))

    def _row(self, gradebook: Gradebook, db_url: str, assignment, student) -> dict:
        row = {
            "assignment": assignment.name,
            "duedate": assignment.duedate or "",
            "student_id": student.id,
            "last_name": student.last_name or "",
            "first_name": student.first_name or "",
            "email": student.email or "",
            "max_score": assignment.max_score,
            "reason": "",
        }
        try:
            submission = gradebook.find_submission(assignment.name, student.id)
        except MissingEntry:
            return {
                **row,
                "timestamp": "",
                "raw_score": 0.0,
                "late_submission_penalty": 0.0,
                "score": 0.0,
                "status": "not submitted",
            }
        latest = status.latest(db_url, assignment.name, student.id)
        if latest is not None and latest["state"] == "ungraded":
            return {
                **row,
                "timestamp": submission.timestamp or "",
                "raw_score": "",
                "late_submission_penalty": "",
                "score": "",
                "status": "ungraded",
                "reason": latest["reason"],
            }
        penalty = submission.late_submission_penalty or 0.0
        return {
            **row,
            "timestamp": submission.timestamp or "",
            "raw_score": submission.score,
            "late_submission_penalty": penalty,
            "score": max(0.0, submission.score - penalty),
            "status": "graded",
        }
