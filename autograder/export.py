"""``GradesExport``: nbgrader's CSV export, with what nbgrader cannot say about a submission.

nbgrader writes a score of 0 both for a student who submitted nothing and for a submission the
grader failed to grade, and keeps the scores of an older submission while a newer one waits. This
export adds a ``status`` column and leaves the score empty unless the student's current
submission (the files a grading run took in last, autograder/status.py) is graded and its result
is in the gradebook:

* ``graded``: the score is the current submission's;
* ``queued`` / ``running``: the current submission waits or is being graded (an older score is not shown);
* ``ungraded``: the grader could not grade it (``reason`` says why): never a zero;
* ``pending``: graded, but its result is not applied to the gradebook yet (the next run applies it);
* ``not submitted``: nothing was handed in (a score of 0, as nbgrader's).

A ``sandbox`` column says ``unsandboxed`` for a submission graded with ``GENLAB_SANDBOX=0``. The
file is written whole or not at all.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

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
    "sandbox",
]


class GradesExport(ExportPlugin):
    """One row per student and assignment, with the grading status."""

    def export(self, gradebook: Gradebook) -> None:
        dest = Path(self.to or "grades.csv")
        db_url = str(gradebook.engine.url.render_as_string(hide_password=False))
        self.log.info("Exporting grades to %s", dest)
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=COLUMNS)
                writer.writeheader()
                for assignment in gradebook.assignments:
                    if self.assignment and assignment.name not in self.assignment:
                        continue
                    current = status.current(db_url, assignment.name)
                    students: dict[str, Any] = {s.id: s for s in gradebook.students}
                    for student_id in current:  # graded by nobody yet: not in nbgrader's gradebook
                        students.setdefault(student_id, None)
                    for student_id, student in sorted(students.items()):
                        if self.student and student_id not in self.student:
                            continue
                        writer.writerow(self._row(gradebook, current.get(student_id), assignment, student_id, student))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _row(self, gradebook: Gradebook, current: dict | None, assignment, student_id: str, student) -> dict:
        row = {
            "assignment": assignment.name,
            "duedate": assignment.duedate or "",
            "student_id": student_id,
            "last_name": getattr(student, "last_name", None) or "",
            "first_name": getattr(student, "first_name", None) or "",
            "email": getattr(student, "email", None) or "",
            "max_score": assignment.max_score,
            "reason": "",
            "sandbox": "unsandboxed" if current is not None and current.get("sandboxed") is False else "",
        }
        try:
            submission = gradebook.find_submission(assignment.name, student_id)
        except MissingEntry:
            submission = None
        if submission is None and current is None:
            return {
                **row,
                "timestamp": "",
                "raw_score": 0.0,
                "late_submission_penalty": 0.0,
                "score": 0.0,
                "status": "not submitted",
            }
        state = _state(current)
        if state != "graded" or submission is None:
            state = "pending" if state == "graded" else state
            return {
                **row,
                "timestamp": getattr(submission, "timestamp", None) or "",
                "raw_score": "",
                "late_submission_penalty": "",
                "score": "",
                "status": state,
                "reason": (current or {}).get("reason") or _WAITING.get(state, ""),
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


_WAITING = {
    "queued": "its current submission waits to be graded",
    "running": "its current submission is being graded",
    "pending": "graded; the next grading run applies the result to the gradebook",
}


def _state(current: dict | None) -> str:
    """What the export says of a submission whose current row is ``current`` (None: graded by nbgrader alone)."""
    if current is None:
        return "graded"
    if current["state"] == "graded" and current.get("applied") is False:
        return "pending"
    return current["state"]
