"""Intake: make one submission folder gradable before nbgrader, which runs as root, touches it.

* Links and special files are refused: a symlink, a hard link, a FIFO or a device in a submission
  would make root read, copy or chmod something outside it. They are removed (their names are
  noted); if the notebook itself was one, the untouched release is graded.
* A renamed notebook is renamed back; a file that is not a notebook is set aside (kept as
  ``<name>.invalid``) and the untouched release is graded.
* Deleted graded cells are restored from the release (scoring nothing), duplicated ones noted.

Every note goes into a "Grading notes" cell at the top of the notebook, so it reaches the
student's feedback.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections import Counter
from pathlib import Path

import nbformat

from autograder import manifest, notebooks

NOTES_TITLE = "**Grading notes** (added by the course's grader)"


def unsafe_entries(folder: Path) -> list[Path]:
    """Everything under ``folder`` that a root process must not follow or copy: links and special files."""
    found: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                found.append(path)
            elif entry.is_dir(follow_symlinks=False):
                found += unsafe_entries(path)
            else:
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                    found.append(path)
    return found


def _add_notes(path: Path, notes: list[str]) -> None:
    nb = notebooks.read(path)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(NOTES_TITLE + "\n\n" + "\n".join(f"- {n}" for n in notes)))
    nbformat.write(nb, path)


def intake(folder: Path, m: manifest.Manifest, release_nb: Path) -> list[str]:
    """Make one submission folder gradable; return the notes explaining what was done."""
    notes: list[str] = []
    for path in unsafe_entries(folder):
        kind = "a link" if path.is_symlink() or path.is_file() else "a special file"
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        notes.append(f"`{path.relative_to(folder)}` was {kind}, which submissions may not contain; it was removed.")
    expected = folder / m.notebook
    if not expected.exists():
        others = sorted(p for p in folder.glob("*.ipynb"))
        if len(others) == 1:
            others[0].rename(expected)
            notes.append(f"Your notebook was named `{others[0].name}`; it was graded as `{m.notebook}`.")
        else:
            found = ", ".join(p.name for p in others) or "no notebook"
            shutil.copy(release_nb, expected)
            notes.append(f"`{m.notebook}` was not found (found: {found}); the untouched release was graded.")
    try:
        nb = nbformat.read(expected, as_version=4)
        nbformat.validate(nb)
    except (json.JSONDecodeError, nbformat.reader.NotJSONError, nbformat.ValidationError, UnicodeDecodeError) as exc:
        kept = expected.with_name(expected.name + ".invalid")
        expected.rename(kept)
        shutil.copy(release_nb, expected)
        reason = str(exc).splitlines()[0][:200]
        notes.append(
            f"`{m.notebook}` could not be read as a notebook ({reason}). The untouched release was graded "
            f"instead; your file is kept as `{kept.name}`. Open it in a text editor, repair it, and resubmit."
        )
        nb = notebooks.read(expected)
    counts = Counter(notebooks.meta(c).get("grade_id") for c in nb.cells if notebooks.meta(c).get("grade_id"))
    for gid, n in sorted(counts.items()):
        if n > 1:
            notes.append(f"Cell `{gid}` appears {n} times; only its last copy was graded.")
    restored = restore_missing(nb, notebooks.read(release_nb))
    if restored:
        nbformat.write(nb, expected)
        notes += [
            f"Cell `{gid}` was missing from your submission; it was restored from the release and scores no points."
            for gid in restored
        ]
    if notes:
        _add_notes(expected, notes)
    return notes


def restore_missing(nb: nbformat.NotebookNode, release: nbformat.NotebookNode) -> list[str]:
    """Put back the answer and test cells a student deleted, where they stood in the release.

    nbgrader restores deleted test cells itself, but not answer cells: without them the tests
    that follow fail with a NameError and no word of why.
    """
    present = {notebooks.meta(c).get("grade_id") for c in nb.cells}
    restored: list[str] = []
    position = 0
    for cell in release.cells:
        gid = notebooks.meta(cell).get("grade_id")
        if gid in present:
            position = next(i for i, c in enumerate(nb.cells) if notebooks.meta(c).get("grade_id") == gid) + 1
        elif gid and (notebooks.meta(cell).get("solution") or notebooks.meta(cell).get("grade")):
            nb.cells.insert(position, nbformat.from_dict(cell))
            position += 1
            restored.append(gid)
    return restored
