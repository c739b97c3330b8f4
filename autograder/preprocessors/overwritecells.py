"""``OverwriteCells`` that does not cry wolf about hidden tests.

nbgrader restores every locked cell of a submission from the gradebook's copy, which holds the
hidden tests, and warns "checksum has changed" whenever the submitted source differs from it
(nbgrader issue 1961). A released test cell always differs — its hidden tests were removed — so
the warning appeared for every test cell of every honest submission, which reads like tampering.
This step restores cells exactly as nbgrader's does, and warns only when a locked cell differs
from its released form: when the student really changed it.
"""

from __future__ import annotations

from nbgrader.preprocessors import OverwriteCells as NbgraderOverwriteCells

from autograder import notebooks


def released_form(source: str) -> str:
    """A cell's source as the release shows it: hidden tests removed, surrounding blank lines ignored."""
    return notebooks.drop_regions(source, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN).strip()


class OverwriteCells(NbgraderOverwriteCells):
    """nbgrader's OverwriteCells, quiet about the hidden tests the release removed on purpose."""

    def preprocess_cell(self, cell, resources, cell_index):
        self._submitted = cell.source
        return super().preprocess_cell(cell, resources, cell_index)

    def report_change(self, name, attr, old, new) -> None:
        if attr == "checksum":
            source_cell = self.gradebook.find_source_cell(name, self.notebook_id, self.assignment_id)
            if released_form(source_cell.source) == self._submitted.strip():
                return
        super().report_change(name, attr, old, new)
