"""nbgrader's gradebook as a grading run uses it: checked before the run, copied for the workers, written by the driver.

A grading task never writes the course's gradebook. Its ``nbgrader autograde`` grades against a
private SQLite gradebook in the task's folder, made from :func:`template` (the assignment's
notebooks and cells exactly as the course's gradebook holds them: nbgrader restores locked cells,
hidden tests included, from there). The task stores the autograded notebook in its row of the
status table (autograder/status.py); the driver alone puts it into the course's gradebook with
:func:`apply`, which runs nbgrader's own ``SaveAutoGrades`` and ``AssignLatePenalties`` on it, so
the scores, comments, manual grades and late penalties come out as ``nbgrader autograde`` would
have written them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import nbformat
import sqlalchemy as sa
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import AssignLatePenalties, SaveAutoGrades
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from autograder import manifest, status
from autograder.course import safe_url
from autograder.release import nbgrader


class GradebookError(RuntimeError):
    """The gradebook database cannot be used (unreachable, or the assignment cannot be recorded in it)."""


def tools_on_path() -> None:
    """Put this interpreter's scripts on ``PATH``: nbgrader runs ``alembic`` when it creates a gradebook."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def reachable(db_url: str, timeout_s: int = 10) -> str | None:
    """Why the database at ``db_url`` cannot be used from this process, or None when it answers."""
    try:
        url = sa.engine.make_url(db_url)
        args = {"connect_timeout": timeout_s} if url.get_backend_name() == "postgresql" else {}
        if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
            return f"the SQLite file {url.database} does not exist here"
        engine = sa.create_engine(url, connect_args=args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # a bad URL, a refused connection, a missing driver or database, wrong credentials
        return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def check(db_url: str, m: manifest.Manifest, root: Path) -> None:
    """The gradebook answers and holds the assignment (recorded from its source when it does not)."""
    tools_on_path()
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() != "sqlite":  # a new SQLite gradebook is made by nbgrader below
        why = reachable(db_url)
        if why:
            raise GradebookError(
                f"cannot reach the gradebook {safe_url(db_url)} ({why}). Start the database (a private PostgreSQL: "
                "`python -m autograder.pgserver start --dir DIR`), or fix GENLAB_GRADEBOOK and its password "
                "(GENLAB_GRADEBOOK_PASSWORD_FILE or PGPASSWORD); unset, the gradebook is SQLite in the course"
            )
    try:
        with Gradebook(db_url) as gb:  # first, so that nbgrader creates (and versions) a new database itself
            try:
                known = {nb.name for nb in gb.find_assignment(m.name).notebooks}
            except MissingEntry:
                known = set()
    except Exception as exc:
        raise GradebookError(f"cannot open the gradebook {safe_url(db_url)}: {exc}") from None
    if Path(m.notebook).stem not in known:
        _record_assignment(m, root, db_url)
    status.engine(db_url)


def _record_assignment(m: manifest.Manifest, root: Path, db_url: str) -> None:
    """Record an assignment in a gradebook that lacks it (a new database): run ``generate_assignment`` aside."""
    scratch = Path(tempfile.mkdtemp(prefix="genlab-record-"))
    try:
        shutil.copy(root / "nbgrader_config.py", scratch / "nbgrader_config.py")
        shutil.copytree(root / "source" / m.name, scratch / "source" / m.name, symlinks=True)
        env_before = os.environ.get("GENLAB_GRADEBOOK")
        os.environ["GENLAB_GRADEBOOK"] = db_url
        try:
            proc = nbgrader("generate_assignment", m.name, "--force", root=scratch, check=False)
        finally:
            if env_before is None:
                os.environ.pop("GENLAB_GRADEBOOK", None)
            else:
                os.environ["GENLAB_GRADEBOOK"] = env_before
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["generate_assignment failed"])[-1]
            raise GradebookError(f"could not record assignment {m.name} in the gradebook {safe_url(db_url)}: {last}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def template(db_url: str, assignment: str) -> bytes:
    """A new SQLite gradebook holding ``assignment`` as the one at ``db_url`` does, as bytes.

    Students and submissions stay behind: a task's nbgrader creates its one student.
    """
    tools_on_path()
    folder = Path(tempfile.mkdtemp(prefix="genlab-template-"))
    try:
        with Gradebook(db_url) as central:
            source = central.find_assignment(assignment)
            with Gradebook(f"sqlite:///{folder / 'gradebook.db'}", source.course_id) as private:
                private.update_or_create_assignment(source.name, duedate=source.duedate)
                for nb in source.notebooks:
                    private.add_notebook(nb.name, source.name)
                    for cell in nb.grade_cells:
                        private.add_grade_cell(
                            cell.name, nb.name, source.name, max_score=cell.max_score, cell_type=cell.cell_type
                        )
                    for cell in nb.solution_cells:
                        private.add_solution_cell(cell.name, nb.name, source.name)
                    for cell in nb.task_cells:
                        private.add_task_cell(
                            cell.name, nb.name, source.name, max_score=cell.max_score, cell_type=cell.cell_type
                        )
                    for cell in nb.source_cells:
                        private.add_source_cell(
                            cell.name,
                            nb.name,
                            source.name,
                            cell_type=cell.cell_type,
                            locked=cell.locked,
                            source=cell.source,
                            checksum=cell.checksum,
                        )
        return (folder / "gradebook.db").read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def course_config(root: Path) -> Config:
    """The course's nbgrader configuration (a late-penalty plugin it names applies to stored results too)."""
    path = root / "nbgrader_config.py"
    if not path.is_file():
        return Config()
    return PyFileConfigLoader(path.name, path=str(root)).load_config()


def apply(
    db_url: str, m: manifest.Manifest, student: str, notebook: bytes, timestamp: str | None, config: Config
) -> None:
    """Write a stored autograded notebook's scores into nbgrader's gradebook, as ``nbgrader autograde`` does.

    Idempotent: applying the same result twice leaves the same gradebook (a driver that died
    between applying and noting it applies again).
    """
    nb = nbformat.reads(notebook.decode(), as_version=4)
    resources: dict[str, Any] = {
        "nbgrader": {"notebook": Path(m.notebook).stem, "assignment": m.name, "student": student, "db_url": db_url}
    }
    with warnings.catch_warnings():
        # nbgrader's add_submission warns of its own objects while sqlalchemy autoflushes (it does so in
        # `nbgrader autograde` too); the rows it writes are right
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        with Gradebook(db_url) as gb:
            gb.update_or_create_student(student)
            stamp = {"timestamp": timestamp} if timestamp else {}
            gb.update_or_create_submission(m.name, student, **stamp)
    SaveAutoGrades(config=config).preprocess(nb, resources)
    AssignLatePenalties(config=config).preprocess(nb, resources)


def cell_scores(db_url: str, notebook: str, assignment: str, student: str) -> tuple[dict[str, list], str | None]:
    """({grade_id: [score, max_score, cell_type]}, the submission's timestamp) of one submitted notebook."""
    with Gradebook(db_url) as gb:
        try:
            sub = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            return {}, None
        stamp = sub.assignment.timestamp
        return (
            {g.name: [g.score, g.max_score, g.cell.cell_type] for g in sub.grades},
            stamp.isoformat() if stamp else None,
        )
