"""``RepairCells``: the first sanitising step of ``nbgrader autograde``; a tampered notebook is repaired, not fatal.

nbgrader's own sanitising steps trust a submission's metadata and raise on what they did not
expect: a test cell whose flags were flipped, an answer cell marked as graded, a ``grade_id``
that is a list, metadata that is a string, a forged graded cell. The submission then ends
ungraded, again on every run, at the student's choice. This step runs before them and repairs
the notebook from the gradebook's copy of the source (:func:`autograder.repair.repair`), so the
steps after it (``DeduplicateIds``, ``OverwriteCells``, ``CheckCellMetadata``) meet only the
course's own metadata; what it repaired is listed in a "Grading notes" cell at the top, which
the feedback shows. ``python -m autograder.grade`` repairs at intake already (from the release);
this step makes a plain ``nbgrader autograde`` just as robust.
"""

from __future__ import annotations

import json
from typing import Any

from nbformat import NotebookNode
from nbgrader.api import Gradebook
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool

from autograder import repair
from autograder.intake import notes_cell


def gradebook_reference(db_url: str, notebook: str, assignment: str) -> repair.Reference:
    """The graded cells of a notebook as the gradebook recorded them when the assignment was generated."""
    with Gradebook(db_url) as gb:
        source = gb.find_notebook(notebook, assignment)
        points = {c.name: c.max_score for c in source.grade_cells}
        solutions = {c.name for c in source.solution_cells}
        tasks = {c.name for c in source.task_cells}
        cells = []
        for cell in source.source_cells:
            meta: dict[str, Any] = {
                "cell_type": cell.cell_type,
                "checksum": cell.checksum,
                "grade": cell.name in points,
                "grade_id": cell.name,
                "locked": bool(cell.locked),
                "schema_version": 3,
                "solution": cell.name in solutions,
                "task": cell.name in tasks,
            }
            if cell.name in points:
                meta["points"] = points[cell.name]
            cells.append(repair.Cell(cell.name, cell.cell_type, meta, cell.source))
        kernelspec = json.loads(source.kernelspec) if source.kernelspec else None
    return repair.Reference(tuple(cells), kernelspec, restore_sources=False)


class RepairCells(NbGraderPreprocessor):
    """Repair a tampered submission from the gradebook before nbgrader's sanitising steps read it."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict):
        info = resources["nbgrader"]
        ref = gradebook_reference(info["db_url"], info["notebook"], info["assignment"])
        notes = repair.repair(nb, ref, what="the assignment")
        if notes:
            for note in notes:
                self.log.warning("%s/%s: %s", info["assignment"], info["notebook"], note)
            nb.cells.insert(0, notes_cell(notes))
        return nb, resources
