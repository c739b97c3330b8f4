"""Where each submission stands: a table beside nbgrader's, in the same gradebook database.

One row per (assignment, student, digest of the submitted files): ``queued``, ``running``,
``graded`` or ``ungraded`` (the grader could not grade it; ``reason`` says why), with the time
spent in each phase. A grading driver that restarts reads it to grade only what has no result
for the current files; the export shows ``ungraded`` submissions as such, never as a zero.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

STATES = ("queued", "running", "graded", "ungraded")
PHASES = ("queued_s", "prepare_s", "execute_s", "verify_s", "write_s")

metadata = sa.MetaData()
table = sa.Table(
    "genlab_grading",
    metadata,
    sa.Column("assignment", sa.String(128), primary_key=True),
    sa.Column("student", sa.String(128), primary_key=True),
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, default=""),
    sa.Column("executions", sa.Integer, default=0),  # autograde runs that executed the notebook
    sa.Column("updated", sa.DateTime(timezone=True)),
    *(sa.Column(phase, sa.Float, default=0.0) for phase in PHASES),
)

_engines: dict[str, sa.Engine] = {}


def engine(db_url: str) -> sa.Engine:
    """One engine per database URL, with the table created on first use."""
    if db_url not in _engines:
        eng = sa.create_engine(db_url)
        metadata.create_all(eng)
        _engines[db_url] = eng
    return _engines[db_url]


def digest(folder: Path) -> str:
    """A hash of a submission folder's notebooks (their names and bytes); links and folders are skipped."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.ipynb")):
        if path.is_file() and not path.is_symlink():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def set_state(db_url: str, assignment: str, student: str, sha: str, state: str, reason: str = "",
              *, executed: bool = False, **phases: float) -> None:
    """Record a submission's state (and add to its phase times)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    key = dict(assignment=assignment, student=student, digest=sha)
    now = datetime.now(timezone.utc)
    with engine(db_url).begin() as conn:
        row = conn.execute(sa.select(table).filter_by(**key)).mappings().first()
        values: dict[str, Any] = dict(state=state, reason=reason, updated=now)
        if row is None:
            values.update(executions=int(executed), **{p: phases.get(p, 0.0) for p in PHASES})
            conn.execute(table.insert().values(**key, **values))
        else:
            values["executions"] = row["executions"] + int(executed)
            values.update({p: (row[p] or 0.0) + phases[p] for p in phases})
            conn.execute(table.update().filter_by(**key).values(**values))


def rows(db_url: str, assignment: str | None = None) -> list[dict[str, Any]]:
    """Every recorded submission state (of one assignment, if given)."""
    query = sa.select(table)
    if assignment:
        query = query.filter_by(assignment=assignment)
    with engine(db_url).connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def latest(db_url: str, assignment: str, student: str) -> dict[str, Any] | None:
    """The most recently updated state of a student's submission."""
    found = [r for r in rows(db_url, assignment) if r["student"] == student]
    return max(found, key=lambda r: r["updated"]) if found else None


def mark(step: Any, resources: dict, state: str, reason: str = "", *, executed: bool = False) -> None:
    """Record the state of the submission an nbgrader step is working on (found from its resources)."""
    nbg = resources.get("nbgrader", {})
    autograded = Path(resources["metadata"]["path"])  # <course>/autograded/<student>/<assignment>
    submitted = autograded.parents[1].parent / "submitted" / nbg["student"] / nbg["assignment"]
    try:
        set_state(nbg["db_url"], nbg["assignment"], nbg["student"], digest(submitted), state, reason, executed=executed)
    except Exception as exc:  # grading goes on; only the record is missing
        step.log.error("could not record %s as %s: %s", nbg.get("student"), state, exc)
