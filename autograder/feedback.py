"""What students see of a failed check: the call and its message, never the checks' code."""
from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

# IPython names a notebook cell's frame "Cell In[12], line 3"; every other frame lies in
# a module (the checks, the genlab oracle) whose lines must not reach students.
_CELL_FRAME = re.compile(r"Cell In\[\d+\]|<ipython-input-")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sanitize_traceback(traceback: list[str], ename: str, evalue: str) -> list[str]:
    """Keep the notebook-cell frames and the final message; drop frames from modules."""
    kept = [frame for frame in traceback if _CELL_FRAME.search(_ANSI.sub("", frame))]
    return kept + [f"{ename}: {evalue}"]


class SanitizeErrors(Preprocessor):
    """nbconvert preprocessor for ``nbgrader generate_feedback``: trims error tracebacks."""

    enabled = Bool(True)  # nbconvert preprocessors skip their work unless enabled

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = sanitize_traceback(
                    output.get("traceback", []), output.get("ename", "Error"), output.get("evalue", "")
                )
        return cell, resources
