"""A small course for grading tests and benchmarks: one assignment of three probed exercises, a batch of submissions.

The assignment (10 points: interpolate 3, one_hot 2, gaussian_kl 5, checked by the probes of
autograder/checks/ae_to_cvae.py) has small limits (a 20 s cell: room for importing torch on a
busy 2-core machine) so that a batch grades in minutes on two cores. :data:`BATCH` holds twelve
submissions: correct ones, a blank one, typical mistakes, one that sleeps past its cell time limit
(after the tests), one that allocates past its memory limit, one whose kernel exits, one that
prints warnings.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import notebooks, release

NAME = "tinygrade"
ROOT = Path(__file__).resolve().parent.parent


def manifest_text(gpu: str = "none", gpu_fraction: float | None = None) -> str:
    fraction = f"gpu_fraction = {gpu_fraction}\n" if gpu_fraction is not None else ""
    return f"""title = "Three small exercises"
notebook = "{NAME}.ipynb"
points = 10
due = "2027-01-01T00:00:00+00:00"
gpu = "{gpu}"
{fraction}time_limit_s = 180
memory_limit_mb = 1024
disk_limit_mb = 64
cell_timeout_s = 20
"""


SETUP = "import math, os, sys, time\nimport torch\nimport torch.nn.functional as F"
ANSWERS = {
    "interpolate": (
        "def interpolate(z0, z1, steps):\n",
        "    w = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)[:, None]\n"
        "    return (1 - w) * z0 + w * z1\n",
        3,
    ),
    "one_hot": (
        "def one_hot(labels, num_classes=10):\n",
        "    return F.one_hot(labels.long(), num_classes).float()\n",
        2,
    ),
    "gaussian_kl": (
        "def gaussian_kl(mu_q, logstd_q, mu_p=0.0, logstd_p=0.0):\n",
        "    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)\n"
        "    logstd_p = torch.as_tensor(logstd_p, dtype=mu_q.dtype, device=mu_q.device)\n"
        "    return (logstd_p - logstd_q + 0.5 * (torch.exp(2 * (logstd_q - logstd_p))\n"
        "            + (mu_q - mu_p) ** 2 * torch.exp(-2 * logstd_p) - 1)).sum(-1)\n",
        5,
    ),
}
WRONG = {
    "interpolate": "    return torch.stack([z0] * steps)\n",  # never moves towards z1
    "one_hot": "    return F.one_hot(labels.long(), num_classes)\n",  # integers, not floats
    "gaussian_kl": "    return 0.5 * (mu_q ** 2 + torch.exp(2 * logstd_q) - 1).sum(-1)\n",  # forgets -2 log sigma
}

# student -> (wrong answers, extra code, where the extra code goes: after the test of this exercise)
BATCH: dict[str, tuple[tuple[str, ...], str, str]] = {
    "correct-1": ((), "", ""),
    "correct-2": ((), "", ""),
    "blank": (("blank",), "", ""),
    "wrong-interpolate": (("interpolate",), "", ""),
    "wrong-one_hot": (("one_hot",), "", ""),
    "wrong-gaussian_kl": (("gaussian_kl",), "", ""),
    "wrong-all": (("interpolate", "one_hot", "gaussian_kl"), "", ""),
    "sleeps-past-limit": ((), "time.sleep(600)", "gaussian_kl"),
    "memory-hog": (
        (),
        "block = bytearray(3 * 2**30)\nfor i in range(0, len(block), 4096):\n    block[i] = 1",
        "one_hot",
    ),
    "kernel-exits": ((), "os._exit(3)", "one_hot"),
    "warnings": (
        (),
        "import warnings\nwarnings.warn('careful', UserWarning)\nprint('noise', file=sys.stderr)",
        "interpolate",
    ),
    "half": (("one_hot", "gaussian_kl"), "", ""),
}


def _meta(gid: str, **kw) -> dict:
    return {"nbgrader": {"grade_id": gid, "schema_version": 3, "task": False, **kw}}


def source_notebook(intro: str = "Three small exercises.") -> nbformat.NotebookNode:
    """The source notebook: the three ae_to_cvae exercises, each with its probe as the hidden test."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_markdown_cell(intro), new_code_cell(SETUP)]
    for name, (head, body, points) in ANSWERS.items():
        nb.cells.append(
            new_code_cell(
                f"{head}    ### BEGIN SOLUTION\n{body}    ### END SOLUTION",
                metadata=_meta(name, solution=True, grade=False, locked=False),
            )
        )
        nb.cells.append(
            new_code_cell(
                f"print('visible test of {name}')\n### BEGIN HIDDEN TESTS\n"
                f"from autograder.checks.ae_to_cvae import probe_{name}\nprobe_{name}({name})\n### END HIDDEN TESTS",
                metadata=_meta(f"test_{name}", solution=False, grade=True, locked=True, points=points),
            )
        )
    return nb


def make_course_files(
    root: Path, *, gpu: str = "none", gpu_fraction: float | None = None, config: Path | None = None, given: str = ""
) -> Path:
    """The small assignment's course files in ``root`` (config, manifest, source), not yet released.

    ``given``: the source of a given (locked) code cell after the answers, as a chapter's training cell.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(config or ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "assignments").mkdir(exist_ok=True)
    (root / "assignments" / f"{NAME}.toml").write_text(manifest_text(gpu, gpu_fraction))
    (root / "source" / NAME).mkdir(parents=True, exist_ok=True)
    nb = source_notebook()
    if given:
        nb.cells.append(new_code_cell(given, metadata=_meta("given", solution=False, grade=False, locked=True)))
    nbformat.write(nb, root / "source" / NAME / f"{NAME}.ipynb")
    return root


def make_course(root: Path, **options) -> Path:
    """A released course with the small assignment (its own manifest) in ``root`` (see :func:`make_course_files`)."""
    make_course_files(root, **options)
    release.release([NAME], root=root)
    return root


def submission(student: str) -> nbformat.NotebookNode:
    """The notebook of one student of :data:`BATCH`."""
    wrong, extra, after = BATCH[student]
    source = source_notebook()
    nb = new_notebook(metadata=source.metadata)
    for cell in source.cells:
        cell = nbformat.from_dict(cell)
        gid = notebooks.meta(cell).get("grade_id")
        if notebooks.meta(cell).get("solution"):
            head, body, _ = ANSWERS[gid]
            if "blank" in wrong:
                cell.source = f"{head}    raise NotImplementedError()\n"
            else:
                cell.source = head + (WRONG[gid] if gid in wrong else body)
        elif notebooks.meta(cell).get("grade"):
            cell.source = cell.source.split("### BEGIN HIDDEN TESTS")[0].rstrip()  # students never see them
        nb.cells.append(cell)
        if extra and gid == f"test_{after}":
            nb.cells.append(new_code_cell(textwrap.dedent(extra)))
    return nb


def submit(root: Path, students=None) -> list[str]:
    """Write the batch (or ``students`` of it) into root/submitted; return the students."""
    students = list(students or BATCH)
    for student in students:
        folder = root / "submitted" / student / NAME
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(submission(student), folder / f"{NAME}.ipynb")
    return students


def autograde_sequentially(root: Path, students, *, env: dict | None = None) -> tuple[float, dict[str, str]]:
    """``nbgrader autograde`` of each student, one after the other (the reference).

    Returns the seconds taken and, for each run that failed, the end of its output.
    """
    import os
    import sys
    import time

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    failed = {}
    start = time.perf_counter()
    for student in students:
        proc = subprocess.run(
            [
                str(bin_dir / "nbgrader"),
                "autograde",
                NAME,
                "--student",
                student,
                "--force",
                f"--CourseDirectory.root={root}",
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            failed[student] = (proc.stdout + proc.stderr)[-3000:]
    return time.perf_counter() - start, failed


def scores(db_url: str, students=None) -> dict[str, dict[str, float]]:
    """Per-cell autograded scores of every submission in the gradebook."""
    from nbgrader.api import Gradebook

    out: dict[str, dict[str, float]] = {}
    with Gradebook(db_url) as gb:
        for sub in gb.assignment_submissions(NAME):
            if students is None or sub.student.id in students:
                out[sub.student.id] = {g.name: g.score for nb in sub.notebooks for g in nb.grades}
    return out
