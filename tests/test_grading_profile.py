"""Each chapter's source notebook runs to the end in the grading profile, as a plain process.

While nbgrader grades (``NBGRADER_EXECUTION`` set) the notebooks train with other shapes than in
the smoke profile the book executes, and a native crash there (a signal from torch's CPU kernels)
kills every kernel that grades the chapter, correct submissions included. A kernel's death only
reads "the kernel died" in a grading run; here the notebook's code cells run as one IPython
script in a subprocess of their own (on one torch thread, as a grading kernel does), so a crash
reports its signal and the last cell that started, before any sample is graded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from autograder import manifest, notebooks

pytestmark = pytest.mark.slow
MARK = "genlab-cell:"


def as_script(nb) -> str:
    """The notebook's code cells as one IPython script that prints a marker before each cell."""
    transform = TransformerManager().transform_cell
    parts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        name = cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i}"
        parts.append(f"print({MARK + name!r}, flush=True)\n{transform(cell.source)}")
    return "\n".join(parts)


def last_cell(output: str) -> str:
    marks = [line[len(MARK) :] for line in output.splitlines() if line.startswith(MARK)]
    return marks[-1] if marks else "(before the first cell)"


@pytest.mark.parametrize("name", [m.name for m in manifest.all_manifests()])
def test_source_notebook_survives_the_grading_profile(name, tmp_path):
    script = tmp_path / f"{name}.py"
    script.write_text(as_script(notebooks.read(manifest.load(name).source)))
    env = {
        **os.environ,
        "NBGRADER_EXECUTION": "autograde",
        "GENLAB_PROFILE": "smoke",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONFAULTHANDLER": "1",
    }
    env.pop("GENLAB_PROBE_DIR", None)  # without it each probe verifies at once, as under nbval
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--quick", "--no-banner", "--colors=nocolor", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode < 0:
        pytest.fail(
            f"{name}: the process died of {signal.Signals(-proc.returncode).name} in cell "
            f"{last_cell(output)!r} of the grading profile:\n{output[-3000:]}"
        )
    assert proc.returncode == 0, f"{name}: cell {last_cell(output)!r} failed in the grading profile:\n{output[-3000:]}"
    assert "Traceback" not in output, f"{name}: cell {last_cell(output)!r} raised:\n{output[-3000:]}"
