"""Outputs the grader can store, and a graded notebook held under the assignment's output cap.

A submission's kernel decides what its outputs are, so they may be anything a message can carry:
JSON nested thousands deep, strings nbformat cannot write (lone surrogates), payloads the
notebook format refuses, or simply hundreds of megabytes (a display updated again and again, a
flood of crash messages through the probes' records). None of that may stop grading or make the
grader write more than the manifest's ``output_limit_mb``:

* :func:`unstorable` says why a message's content cannot be stored (the execution step then keeps
  a one-line note in its place, :func:`note`);
* :func:`cap_notebook` cuts a notebook's outputs until the whole notebook fits a number of bytes:
  outputs are kept in order while they fit; after that only the errors of graded cells stay
  (shortened: an error is what makes a test cell score 0), and a note says what was cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from nbformat.v4 import new_output

from autograder import manifest, notebooks

MAX_DEPTH = 32  # nesting of an output's JSON (a pandas table's is under 6)
ERROR_CHARS = 2000  # what an error keeps of its message and traceback once the cap is reached
RESERVE = 64 * 2**10  # room kept for the notes and shortened errors


def unstorable(content: Any) -> str | None:
    """Why a message's content cannot go into a notebook (too deep, not UTF-8), or None."""
    stack = [(content, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"its JSON is nested more than {MAX_DEPTH} deep"
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    try:
        json.dumps(content, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        return f"it is not text a notebook can hold ({type(exc).__name__})"
    return None


def note(text: str) -> NotebookNode:
    """A one-line output that says what the grader did in place of an output."""
    return new_output("stream", name="stdout", text=f"[{text}]\n")


# nbformat writes each line of a text as a string of its own, in a list, indented: at most this many
# bytes more per line and per string.
LINE_BYTES = 16
OVERHEAD = 200  # bytes an output takes in a written notebook besides its content


def _bytes(value: Any, depth: int = 0) -> int:
    """At least the bytes ``value`` takes in a notebook as nbformat writes it, nested ``depth`` deep there."""
    text = json.dumps(value, indent=1, ensure_ascii=False)
    extra = depth * text.count("\n") + LINE_BYTES * (text.count("\\n") + text.count('"') // 2)
    return len(text.encode("utf-8", "replace")) + extra


OUTPUT_DEPTH = 6  # an output's lines are indented this much more in a notebook than alone


def notebook_bytes(nb: NotebookNode) -> int:
    """At least the bytes of ``nb`` as nbformat writes it."""
    return _bytes(nb)


def _shortened(error: NotebookNode, chars: int) -> NotebookNode:
    evalue = str(error.get("evalue", ""))
    traceback = [str(line) for line in error.get("traceback", [])]
    while traceback and sum(len(line) for line in traceback) > chars:
        traceback.pop(0)  # the last frames and the message say the most
    cut = evalue if len(evalue) <= chars else evalue[:chars] + " [... cut]"
    return new_output("error", ename=str(error.get("ename", "Error"))[:200], evalue=cut, traceback=traceback)


def _keep(nb: NotebookNode, outputs: list[list[NotebookNode]], budget: int, limit: int, chars: int) -> int:
    """Give each code cell the outputs of ``outputs`` that fit ``budget`` in order, and graded errors; bytes cut."""
    cut, noted = 0, False
    code = [c for c in nb.cells if "outputs" in c]
    for cell, original in zip(code, outputs):
        graded = bool(notebooks.meta(cell).get("grade"))
        kept = []
        for output in original:
            bytes_ = _bytes(output, OUTPUT_DEPTH)
            if bytes_ <= budget:
                kept.append(output)
                budget -= bytes_
                continue
            cut += bytes_
            if not noted:
                kept.append(note(f"output cut: this notebook's outputs passed the {limit / 2**20:g} MB it may keep"))
                noted = True
            if graded and output.get("output_type") == "error":
                kept.append(_shortened(output, chars))
        cell.outputs = kept
    return cut


def cap_notebook(nb: NotebookNode, limit: int) -> int:
    """Cut ``nb``'s outputs (in place) until the notebook fits ``limit`` bytes; return the bytes cut.

    Cell sources are never cut (intake caps them); the errors of graded cells always stay.
    """
    total = notebook_bytes(nb)
    if total <= limit:
        return 0
    outputs = [list(c.outputs) for c in nb.cells if "outputs" in c]
    bare = {**nb, "cells": [{**c, "outputs": []} if "outputs" in c else c for c in nb.cells]}
    budget = limit - _bytes(bare) - RESERVE
    for _ in range(4):  # the estimate of an output's bytes is close; each pass corrects it by what was over
        cut = _keep(nb, outputs, budget, limit, ERROR_CHARS)
        over = notebook_bytes(nb) - limit
        if over <= 0:
            return cut
        budget -= over + RESERVE
    return _keep(nb, outputs, 0, limit, 200)  # only the gist of each graded error is left


def output_limit(resources: dict, default: int) -> int:
    """The output cap in bytes of the assignment a step works on (its manifest's), or ``default``."""
    assignment = resources.get("nbgrader", {}).get("assignment")
    path = resources.get("metadata", {}).get("path")
    if not assignment or not path:
        return default
    try:  # <course>/autograded/<student>/<assignment>
        return manifest.load(assignment, Path(path).parents[2]).output_limit_mb * 2**20
    except (FileNotFoundError, ValueError, IndexError):
        return default
