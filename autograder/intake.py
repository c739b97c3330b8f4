"""Intake: make one submission folder gradable before nbgrader, which runs as root, touches it.

:func:`intake` never fails because of what a submission holds; it returns the notes that explain
what it did, and every note also goes into a "Grading notes" cell at the top of the notebook, so
it reaches the student's feedback.

* Links and special files are refused: a symlink, a hard link, a FIFO or a device in a submission
  would make root read, copy or chmod something outside it. They are removed (their names are
  noted); if the notebook itself was one, the untouched release is graded.
* A renamed notebook is renamed back. A notebook that cannot be read (not JSON, not a notebook, a
  folder, an nbformat version Jupyter never wrote, nesting too deep, too big) is set aside (kept
  as ``<name>.invalid``) and the untouched release is graded in its place.
* A tampered notebook is repaired from the release (:mod:`autograder.repair`): the grading
  metadata of every cell, the locked cells, the kernelspec; forged graded cells and duplicates
  go; deleted graded cells come back (scoring nothing). Saved outputs that are not valid are
  removed (grading runs the notebook afresh anyway).
* A ``timestamp.txt`` that cannot be read is set aside and the submission counts as on time.

Only a fault of the machine (the submission folder cannot be written) raises, as ``OSError``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader.utils import parse_utc

from autograder import manifest, notebooks, repair

NOTES_TITLE = "**Grading notes** (added by the course's grader)"
MAX_NOTEBOOK_BYTES = 64 * 2**20  # a submitted file above this is not read (honest ones are a few MB with outputs)
MAX_TEXT_BYTES = 2**20  # the notebook without outputs (the course's hold 0.1 MB); its feedback page is ~5x that
MAX_DEPTH = 64  # nesting of the JSON without outputs (a notebook's is under 10)
MAX_TIMESTAMP_BYTES = 200
TIMESTAMP = "timestamp.txt"


class Unreadable(Exception):
    """A submitted file is not a notebook the grader can run; the message says why, in the student's terms."""


def unsafe_entries(folder: Path) -> list[Path]:
    """Everything under ``folder`` that a root process must not follow or copy: links and special files."""
    found: list[Path] = []
    pending = [folder]
    while pending:  # iterative: a folder nested thousands deep must not exhaust the recursion limit
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    found.append(path)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                else:
                    info = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                        found.append(path)
    return sorted(found)


def _depth(value: object) -> int:
    """How deeply ``value`` (parsed JSON) nests, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


def read_submission(path: Path) -> tuple[NotebookNode, list[str]]:
    """The notebook at ``path`` without its saved outputs where they are not valid, and notes; or raise Unreadable."""
    if path.is_dir():
        raise Unreadable("it is a folder, not a file")
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise Unreadable(f"it is {size / 2**20:.0f} MB; a submission may be at most {MAX_NOTEBOOK_BYTES // 2**20} MB")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise Unreadable("it is not text (UTF-8)") from None
    except RecursionError:
        raise Unreadable("its JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Unreadable(f"it is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise Unreadable(f"it holds JSON ({type(data).__name__}) but not a notebook")
    version = data.get("nbformat")
    if version not in (3, 4):
        raise Unreadable(f"it says nbformat {str(version)[:20]}, a version Jupyter does not write (4 is current)")
    bare = {**data, "cells": [_without_outputs(c) for c in data["cells"]]}
    if _depth(bare) > MAX_DEPTH:
        raise Unreadable("its JSON is nested too deeply")
    try:
        text = len(json.dumps(bare, ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        raise Unreadable("it holds characters that are not valid text (lone surrogates)") from None
    if text > MAX_TEXT_BYTES:
        raise Unreadable(
            f"its cells hold {text / 2**20:.1f} MB of text and metadata; a submission may hold "
            f"{MAX_TEXT_BYTES / 2**20:g} MB besides its outputs"
        )
    notes = repair.renew_cell_ids(c for c in data["cells"] if isinstance(c, dict))
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # outputs that could not be written back
        nb = nbformat.reads(json.dumps(data), as_version=4)
        nbformat.validate(nb)
    except (nbformat.ValidationError, ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        if not _clear_outputs(data):
            raise Unreadable(f"it is not a valid notebook ({_first_line(exc)})") from None
        try:  # the outputs a student saved are no part of grading: without them, is it a notebook?
            nb = nbformat.reads(json.dumps(data), as_version=4)
            nbformat.validate(nb)
        except (nbformat.ValidationError, ValueError, TypeError, AttributeError, KeyError) as again:
            raise Unreadable(f"it is not a valid notebook ({_first_line(again)})") from None
        notes.append("The outputs saved in your notebook were not valid; they were removed before grading.")
    return nb, notes


def _without_outputs(cell: object) -> object:
    return {k: v for k, v in cell.items() if k != "outputs"} if isinstance(cell, dict) else cell


def _clear_outputs(data: dict) -> bool:
    """Remove saved outputs from parsed notebook JSON (in place); whether there were any."""
    cleared = False
    for cell in data["cells"]:
        if isinstance(cell, dict) and cell.get("outputs"):
            cell["outputs"], cleared = [], True
    return cleared


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _aside(path: Path) -> Path:
    """A free name beside ``path`` to keep what could not be used: ``<name>.invalid`` (then ``.invalid-2``, ...)."""
    candidates: Iterator[Path] = (
        path.with_name(path.name + (".invalid" if k == 1 else f".invalid-{k}")) for k in range(1, 1000)
    )
    return next(p for p in candidates if not os.path.lexists(p))


def _check_timestamp(folder: Path) -> list[str]:
    path = folder / TIMESTAMP
    if not path.is_file():
        return []
    try:
        text = path.read_bytes()[: MAX_TIMESTAMP_BYTES + 1].decode("utf-8").strip()
        if len(text) > MAX_TIMESTAMP_BYTES or not text:
            raise ValueError("empty or too long")
        parse_utc(text)
        return []
    except (ValueError, OverflowError, UnicodeDecodeError):
        kept = _aside(path)
        path.rename(kept)
        return [
            f"`{TIMESTAMP}` does not hold a time the grader can read; it was ignored (kept as `{kept.name}`) "
            "and the submission counts as submitted on time."
        ]


def notes_cell(notes: list[str]) -> NotebookNode:
    """The "Grading notes" cell that goes at the top of a notebook (and so reaches its feedback)."""
    return nbformat.v4.new_markdown_cell(NOTES_TITLE + "\n\n" + "\n".join(f"- {n}" for n in notes))


def _add_notes(path: Path, notes: list[str]) -> None:
    nb = notebooks.read(path)
    nb.cells.insert(0, notes_cell(notes))
    nbformat.write(nb, path)


def _grade_the_release(expected: Path, release_nb: Path, m: manifest.Manifest, reason: str) -> list[str]:
    """Keep the submitted file aside and put the untouched release in its place."""
    kept = _aside(expected)
    expected.rename(kept)
    shutil.copyfile(release_nb, expected)
    return [
        f"`{m.notebook}` could not be read as a notebook: {reason}. The untouched release was graded instead; "
        f"your file is kept as `{kept.name}`. Open it in Jupyter or a text editor, repair it, and resubmit."
    ]


def intake(folder: Path, m: manifest.Manifest, release_nb: Path) -> list[str]:
    """Make one submission folder gradable; return the notes explaining what was done (see the module doc)."""
    notes: list[str] = []
    for path in unsafe_entries(folder):
        kind = "a link" if path.is_symlink() or path.is_file() else "a special file"
        path.unlink()
        notes.append(f"`{path.relative_to(folder)}` was {kind}, which submissions may not contain; it was removed.")
    notes += _check_timestamp(folder)
    expected = folder / m.notebook
    if not os.path.lexists(expected):
        others = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
        if len(others) == 1:
            others[0].rename(expected)
            notes.append(f"Your notebook was named `{others[0].name}`; it was graded as `{m.notebook}`.")
        else:
            found = ", ".join(p.name for p in others) or "no notebook"
            shutil.copyfile(release_nb, expected)
            notes.append(f"`{m.notebook}` was not found (found: {found}); the untouched release was graded.")
    release = repair.Reference.from_notebook(notebooks.read(release_nb))
    try:
        nb, read_notes = read_submission(expected)
        repaired = read_notes + repair.repair(nb, release) + repair.restore_missing(nb, release)
    except Unreadable as exc:
        notes += _grade_the_release(expected, release_nb, m, str(exc))
    except (RecursionError, MemoryError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # Last resort: a notebook shaped in a way no rule above foresaw is still not a reason to stop a batch.
        notes += _grade_the_release(expected, release_nb, m, f"the grader could not make sense of it ({exc!r:.200})")
    else:
        if repaired:
            nbformat.write(nb, expected)
        notes += repaired
    if notes:
        _add_notes(expected, notes)
    return notes
