"""Repair a tampered submission from a reference: every graded cell as the course made it, answers as written.

A student owns the text of their answer cells and nothing else. Whatever else a submitted notebook
says about grading (nbgrader's metadata, the locked cells, the kernel) is taken from a
:class:`Reference`: the release (at intake, :mod:`autograder.intake`) or the gradebook's copy of
the source (inside ``nbgrader autograde``, :class:`~autograder.preprocessors.repaircells.RepairCells`).

:func:`repair` changes the notebook in place and returns one note per repair:

* a cell is recognised by its ``grade_id``, or, when its nbgrader metadata is damaged or was
  removed, by the cell id the release gave it; its metadata, cell type and (when locked) its source
  are restored;
* a cell that claims to be graded under an id the course does not know is dropped; other unknown
  nbgrader metadata is removed (the cell stays, as an ordinary cell);
* of several copies of one graded cell the last is kept; earlier copies of a locked cell are
  dropped, earlier copies of an answer stay as ordinary cells;
* cell ids that repeat or break the format are renewed; the kernelspec is the course's.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nbformat
from nbformat import NotebookNode

from autograder import notebooks

CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FLAGS = ("grade", "solution", "locked", "task")


@dataclass(frozen=True)
class Cell:
    """One graded, answer, locked or task cell as the course made it."""

    grade_id: str
    cell_type: str
    meta: dict[str, Any]  # its nbgrader metadata
    source: str  # restored when the cell is locked
    cell_id: str | None = None
    extra_meta: dict[str, Any] | None = None  # the cell's other metadata keys that the course sets (editable, ...)
    after: tuple[str | None, str] | None = None  # (cell id, source) of the cell before it: where it goes back

    @property
    def locked(self) -> bool:
        return bool(self.meta.get("locked"))

    def as_new_cell(self) -> NotebookNode:
        """The cell as released: what a student who deleted it gets back."""
        metadata = {**(self.extra_meta or {}), "nbgrader": copy.deepcopy(self.meta)}
        if self.cell_type == "code":
            return nbformat.v4.new_code_cell(self.source, metadata=metadata)
        return nbformat.v4.new_markdown_cell(self.source, metadata=metadata)


@dataclass(frozen=True)
class Reference:
    """The graded cells of a notebook in their order, and its kernelspec."""

    cells: tuple[Cell, ...]
    kernelspec: dict[str, Any] | None = None
    restore_sources: bool = True  # False where a later step (nbgrader's OverwriteCells) restores them

    @classmethod
    def from_notebook(cls, nb: NotebookNode) -> Reference:
        cells = []
        for i, cell in enumerate(nb.cells):
            meta = notebooks.meta(cell)
            gid = meta.get("grade_id")
            if isinstance(gid, str) and any(meta.get(flag) for flag in FLAGS):
                extra = {k: v for k, v in cell.metadata.items() if k in ("editable", "deletable")}
                before = (nb.cells[i - 1].get("id"), nb.cells[i - 1].source) if i else None
                cells.append(Cell(gid, cell.cell_type, dict(meta), cell.source, cell.get("id"), extra, before))
        return cls(tuple(cells), dict(nb.metadata.get("kernelspec") or {}) or None)

    def by_id(self) -> dict[str, Cell]:
        return {c.grade_id: c for c in self.cells}


def grading_meta(cell: NotebookNode) -> tuple[Any, bool]:
    """(the cell's nbgrader metadata as submitted, whether it says anything about grading)."""
    raw = cell.get("metadata", {}).get("nbgrader") if isinstance(cell.get("metadata"), dict) else None
    if raw is None:
        return None, False
    if not isinstance(raw, dict):
        return raw, True
    return raw, any(raw.get(flag) for flag in FLAGS) or "grade_id" in raw


def _identify(cell: NotebookNode, known: dict[str, Cell], by_cell_id: dict[str, Cell]) -> Cell | None:
    raw, _ = grading_meta(cell)
    gid = raw.get("grade_id") if isinstance(raw, dict) else None
    if isinstance(gid, str) and gid in known:
        return known[gid]
    cell_id = cell.get("id")
    return by_cell_id.get(cell_id) if isinstance(cell_id, str) else None


def _set_type(cell: NotebookNode, cell_type: str) -> None:
    """Make ``cell`` a cell of ``cell_type``, keeping its source."""
    if cell.cell_type == cell_type:
        return
    cell.cell_type = cell_type
    if cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)


def _differs(submitted: Any, meta: dict[str, Any]) -> bool:
    if not isinstance(submitted, dict):
        return True
    keys = ("grade_id", *FLAGS, "points")
    return any(bool(submitted.get(k)) != bool(meta.get(k)) for k in FLAGS) or any(
        submitted.get(k) != meta.get(k) for k in keys if k not in FLAGS
    )


def repair(nb: NotebookNode, ref: Reference, what: str = "the release") -> list[str]:
    """Restore everything of ``nb`` but its answers from ``ref``; return a note for each repair (see module doc)."""
    known = ref.by_id()
    by_cell_id = {c.cell_id: c for c in ref.cells if c.cell_id}
    notes: list[str] = []
    identified = [(_identify(cell, known, by_cell_id), cell) for cell in nb.cells]
    last = {ref_cell.grade_id: i for i, (ref_cell, _) in enumerate(identified) if ref_cell is not None}
    copies = Counter(ref_cell.grade_id for ref_cell, _ in identified if ref_cell is not None)
    kept: list[NotebookNode] = []
    for i, (ref_cell, cell) in enumerate(identified):
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = NotebookNode()
        raw, claims = grading_meta(cell)
        if ref_cell is None:
            if claims and isinstance(raw, dict) and raw.get("grade"):
                notes.append(f"A cell marked as graded ({_name(raw)}) is not part of the assignment; it was removed.")
                continue
            if claims:
                notes.append(
                    f"Cell {i + 1} carried grading metadata the assignment does not know ({_name(raw)}); "
                    "it was graded as an ordinary cell."
                )
            if raw is not None:
                del cell.metadata["nbgrader"]
            kept.append(cell)
            continue
        gid = ref_cell.grade_id
        if last[gid] != i:  # an earlier copy
            if ref_cell.locked:
                continue
            del cell.metadata["nbgrader"]
            kept.append(cell)
            continue
        if copies[gid] > 1:
            notes.append(
                f"Cell `{gid}` appears {copies[gid]} times; only its last copy was graded"
                + (" (the earlier copies of a locked cell were removed)." if ref_cell.locked else ".")
            )
        if _differs(raw, ref_cell.meta) or cell.cell_type != ref_cell.cell_type:
            notes.append(f"The grading metadata of cell `{gid}` had been changed; it was restored from {what}.")
        _set_type(cell, ref_cell.cell_type)
        cell.metadata["nbgrader"] = copy.deepcopy(ref_cell.meta)
        cell.metadata.update(copy.deepcopy(ref_cell.extra_meta or {}))
        if ref_cell.locked and ref.restore_sources and cell.source != ref_cell.source:
            notes.append(f"The locked cell `{gid}` had been changed; it was restored from {what}.")
            cell.source = ref_cell.source
        kept.append(cell)
    nb.cells = kept
    notes += renew_cell_ids(nb.cells)
    if ref.kernelspec and nb.metadata.get("kernelspec") != ref.kernelspec:
        given = nb.metadata.get("kernelspec")
        if given:
            name = given.get("name") if isinstance(given, dict) else given
            notes.append(f"The notebook asked for the kernel {str(name)[:60]!r}; it was run with the course's kernel.")
        nb.metadata["kernelspec"] = copy.deepcopy(ref.kernelspec)
    return notes


def restore_missing(nb: NotebookNode, ref: Reference, what: str = "the release") -> list[str]:
    """Put back the answer and test cells a student deleted, where they stood; one note per cell.

    nbgrader restores deleted test cells itself, but not answer cells: without them the tests
    that follow fail with a NameError and no word of why.
    """
    present = {notebooks.meta(c).get("grade_id") for c in nb.cells}
    notes: list[str] = []
    position = 0
    for ref_cell in ref.cells:
        if ref_cell.grade_id in present:
            position = next(i for i, c in enumerate(nb.cells) if notebooks.meta(c).get("grade_id") == ref_cell.grade_id)
            position += 1
        elif ref_cell.meta.get("solution") or ref_cell.meta.get("grade"):
            position = max(position, _after(nb.cells, ref_cell.after))
            nb.cells.insert(position, ref_cell.as_new_cell())
            position += 1
            notes.append(
                f"Cell `{ref_cell.grade_id}` was missing from your submission; it was restored from {what} "
                "and scores no points."
            )
    renew_cell_ids(nb.cells)
    return notes


def _after(cells: list[NotebookNode], before: tuple[str | None, str] | None) -> int:
    """The position just after the cell that preceded a deleted one in the release (0 if the student removed it)."""
    if before is None:
        return 0
    cell_id, source = before
    for i, cell in enumerate(cells):
        if (cell_id is not None and cell.get("id") == cell_id) or cell.source == source:
            return i + 1
    return 0


def renew_cell_ids(cells: Iterable[dict[str, Any]]) -> list[str]:
    """Give a new id to every cell whose id repeats an earlier one or is not a valid id."""
    seen: set[str] = set()
    renewed = 0
    for cell in cells:
        cell_id = cell.get("id")
        if cell_id is None:
            continue
        if not isinstance(cell_id, str) or not CELL_ID.match(cell_id) or cell_id in seen:
            cell["id"] = uuid.uuid4().hex[:8]
            renewed += 1
        seen.add(cell["id"])
    return [f"{renewed} cell id(s) repeated or were not valid; they were renewed."] if renewed else []


def _name(raw: Any) -> str:
    gid = raw.get("grade_id") if isinstance(raw, dict) else None
    return f"id `{str(gid)[:60]}`" if isinstance(gid, str) else "no valid id"
