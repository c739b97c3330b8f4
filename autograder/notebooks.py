"""Reading source notebooks: solution and hidden-test regions, and the sample submissions built from them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import nbformat
from nbformat import NotebookNode

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
BEGIN_REFERENCE, END_REFERENCE = "# BEGIN REFERENCE", "# END REFERENCE"
# Lines shorter than this ("return z", "nn.ReLU(),") carry no secret and occur anywhere.
MIN_SECRET_CHARS = 16


def read(path: Path) -> NotebookNode:
    return nbformat.read(path, as_version=4)


def meta(cell: NotebookNode) -> dict:
    """A cell's nbgrader metadata; {} where it has none or where it is not a mapping (a tampered cell)."""
    found = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return found if isinstance(found, dict) else {}


def regions(text: str, begin: str, end: str) -> Iterator[tuple[int, int]]:
    """(first, last) line indices of every ``begin`` ... ``end`` region, markers included."""
    lines = text.splitlines()
    start = None
    for i, line in enumerate(lines):
        if line.strip() == begin:
            start = i
        elif line.strip() == end and start is not None:
            yield start, i
            start = None


def drop_regions(text: str, begin: str, end: str) -> str:
    """Remove every marked region, markers included."""
    lines = text.splitlines()
    dropped = {i for a, b in regions(text, begin, end) for i in range(a, b + 1)}
    return "\n".join(line for i, line in enumerate(lines) if i not in dropped)


def drop_markers(text: str, *markers: str) -> str:
    """Remove the marker lines themselves, keeping what they enclose."""
    return "\n".join(line for line in text.splitlines() if line.strip() not in markers)


def secret_lines(nb: NotebookNode) -> set[str]:
    """Lines only the instructor may see: solutions, model answers and hidden tests.

    A line that also occurs in a public part of the notebook (prose, given code) is no secret.
    """
    secret: set[str] = set()
    public: set[str] = set()
    for cell in nb.cells:
        m = meta(cell)
        text = cell.source
        inside: set[int] = set()
        for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
            inside |= {i for a, b in regions(text, begin, end) for i in range(a + 1, b)}
        whole_cell_secret = m.get("solution") and cell.cell_type == "markdown"
        for i, line in enumerate(text.splitlines()):
            (secret if whole_cell_secret or i in inside else public).add(line.strip())
    return {line for line in secret - public if len(line) >= MIN_SECRET_CHARS}


def reference_lines(sources: Iterable[Path]) -> set[str]:
    """Lines of the package's graded reference code (``# BEGIN REFERENCE`` regions)."""
    secret: set[str] = set()
    public: set[str] = set()
    for path in sources:
        text = path.read_text()
        inside = {i for a, b in regions(text, BEGIN_REFERENCE, END_REFERENCE) for i in range(a + 1, b)}
        for i, line in enumerate(text.splitlines()):
            (secret if i in inside else public).add(line.strip())
    return {line for line in secret - public if len(line) >= MIN_SECRET_CHARS}


def find_leaks(text: str, secrets: set[str]) -> list[str]:
    """The secret lines that occur in ``text`` (compared line by line, whitespace-stripped)."""
    present = {line.strip() for line in re.split(r"\\n|\n", text)}
    return sorted(secrets & present)


def _solution_cells(nb: NotebookNode) -> dict[str, NotebookNode]:
    return {meta(c)["grade_id"]: c for c in nb.cells if meta(c).get("solution")}


def fill(release: NotebookNode, source: NotebookNode, replace: dict[str, str] | None = None) -> NotebookNode:
    """A submission: the release notebook with its answer cells taken from the source solutions.

    ``replace`` maps a solution cell's grade_id to the code a student wrote there instead.
    """
    nb = nbformat.from_dict(release)
    solutions = _solution_cells(source)
    replace = replace or {}
    unknown = set(replace) - set(solutions)
    if unknown:
        raise KeyError(f"no solution cell with grade_id {sorted(unknown)} in the source notebook")
    for cell in nb.cells:
        gid = meta(cell).get("grade_id")
        if meta(cell).get("solution") and gid in solutions:
            if gid in replace:
                cell.source = replace[gid]
            else:
                cell.source = drop_markers(solutions[gid].source, BEGIN_SOLUTION, END_SOLUTION)
    return nb
