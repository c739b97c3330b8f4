"""Where each submission stands: a table beside nbgrader's, in the same gradebook database.

One row per (assignment, student, digest of the submitted files): ``queued``, ``running``,
``graded`` or ``ungraded`` (the grader could not grade it; ``reason`` says why), with the time
spent in each phase, the number of times the notebook was executed, and once graded the
autograded notebook and its per-cell scores. The row is the record of a grading run: a driver
that restarts grades only what has no result for the current files, and the export shows
``ungraded`` submissions as such, never as a zero.

Exactly once. A grading process takes a submission by *claiming* its row: one atomic
``UPDATE ... WHERE state = 'queued'`` that sets ``running``, the claim's token, host, pid and the
process's start time, and adds one to ``executions`` (:func:`claim`). Only one process can win it,
whatever the database (SQLite locks the file, PostgreSQL re-checks the condition after a
concurrent update). The winner alone executes the notebook; it heartbeats while it runs and
:func:`record_graded` stores the result, under the same token, once nbgrader has saved the
scores. A claim whose process is gone (:func:`claim_alive`: the pid on its own host, the
heartbeat elsewhere) is lost: :func:`requeue` puts it back with a compare-and-set on its token,
so that of several processes noticing the loss only one requeues it.

One record per submission and run. Under a grading task, nbgrader grades against a private
gradebook in the task's folder: its scores reach nobody until :func:`record_graded` stores them
(the autograded notebook, the per-cell scores, the log) in the row, under the claim. Only the
driver then applies a stored result to nbgrader's own gradebook and marks it ``applied``
(:func:`mark_applied`), so a process whose claim was lost cannot write a score anywhere, and a
result stored by a worker that died before the driver took it is applied by the next run.

``nbgrader autograde`` run by hand (no ``GENLAB_CLAIM`` in its environment) records the same
states without the exclusive claim, so an instructor may always regrade by hand; nbgrader wrote
the gradebook itself then, so its result counts as applied.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

STATES = ("queued", "running", "graded", "ungraded")
PHASES = ("queued_s", "prepare_s", "execute_s", "verify_s", "write_s")
CLAIM_ENV = "GENLAB_CLAIM"  # the token of a claim a grading task holds for its nbgrader process
DIGEST_ENV = "GENLAB_DIGEST"  # the digest of the submission as the driver saw it
TASK_START_ENV = "GENLAB_TASK_START"  # wall-clock time at which the grading task started (phase "prepare")
RECORD_ENV = "GENLAB_RECORD"  # the database of this table when nbgrader grades against a private gradebook
# Why a submission is ungraded, where the kind matters to what happens next:
GIVEN_CODE = "given-code"  # its kernel died in code the course gave: graded again once at once, with the same limits
GRADER = "grader"  # the grading machinery failed after execution (a check raised, nbgrader crashed)
MACHINE = "machine"  # the kernel did not start, no sandbox, another worker's code
HEARTBEAT_S = 10.0
STALE_S = 60.0  # a claim on another host whose heartbeat is older than this is lost
LOG_CHARS = 20_000

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
    sa.Column("seen", sa.DateTime(timezone=True)),  # when a driver first took these files in: the newest is current
    sa.Column("fault", sa.String(32), default=""),  # for an ungraded one: GIVEN_CODE, GRADER, MACHINE or ""
    *(sa.Column(phase, sa.Float, default=0.0) for phase in PHASES),
    # the claim of the process grading it (state running)
    sa.Column("token", sa.String(64)),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("proc_start", sa.BigInteger),  # the process's start time (ticks since boot): pids are reused
    sa.Column("claimed", sa.DateTime(timezone=True)),
    sa.Column("heartbeat", sa.DateTime(timezone=True)),
    # the result (state graded)
    sa.Column("notebook", sa.LargeBinary),  # the autograded notebook, zlib-compressed
    sa.Column("scores", sa.Text),  # JSON {grade_id: [score, max_score, cell_type]}
    sa.Column("submitted", sa.String(40)),  # the submission's timestamp as nbgrader read it (ISO 8601, UTC)
    sa.Column("log", sa.Text),  # the tail of the grading process's log
    # False: stored by a worker, not yet in nbgrader's gradebook; True: applied; NULL: written by
    # nbgrader itself (a grader before the single record)
    sa.Column("applied", sa.Boolean),
    sa.Column("sandboxed", sa.Boolean),  # whether its kernel ran in the sandbox
    sa.Column("code", sa.String(64)),  # the digest of the course code it was graded with
    sa.Column("peak_mb", sa.Float),  # the kernel's peak memory (its cgroup's; else its largest process)
    sa.Column("cpu_s", sa.Float),  # the CPU seconds its kernel used
)

_engines: dict[str, sa.Engine] = {}


class ClaimRefused(RuntimeError):
    """Another process holds this submission, or it is graded already: this process must not execute it."""


def engine(db_url: str) -> sa.Engine:
    """One engine per database URL, with the table created (or given its new columns) on first use."""
    if db_url not in _engines:
        eng = sa.create_engine(db_url, pool_pre_ping=True)
        metadata.create_all(eng)
        _add_missing_columns(eng)
        _engines[db_url] = eng
    return _engines[db_url]


def _add_missing_columns(eng: sa.Engine) -> None:
    """A table made by an older grader gets the columns it lacks (all nullable)."""
    have = {c["name"] for c in sa.inspect(eng).get_columns(table.name)}
    missing = [c for c in table.columns if c.name not in have]
    if not missing:
        return
    with eng.begin() as conn:
        for column in missing:
            kind = column.type.compile(dialect=eng.dialect)
            try:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
            except sa.exc.DBAPIError:  # another process added it first
                pass


def digest(folder: Path) -> str:
    """A hash of a submission folder's notebooks (their names and bytes); links and folders are skipped."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.ipynb")):
        if path.is_file() and not path.is_symlink():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for what was stored in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _key(assignment: str, student: str, sha: str) -> dict[str, str]:
    return dict(assignment=assignment, student=student, digest=sha)


def _where(**key: Any):
    return sa.and_(*(table.c[name] == value for name, value in key.items()))


# ----------------------------------------------------------------------------- this process


def host_id() -> str:
    """This machine and pid namespace: a pid means the same process only under the same host id."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        boot, pidns = "", 0
    return f"{socket.gethostname()}/{boot}/{pidns}"


def proc_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has finished
        return None
    return int(fields[19])


def claim_alive(row: dict[str, Any], *, stale_s: float = STALE_S) -> bool:
    """Whether the process that claimed ``row`` may still be working on it."""
    if row.get("state") != "running":
        return False
    if row.get("host") == host_id() and row.get("pid"):
        return proc_start(row["pid"]) == row.get("proc_start")
    beat = _aware(row.get("heartbeat"))
    return beat is not None and (_now() - beat).total_seconds() < stale_s


# ----------------------------------------------------------------------------- the driver's side


def ensure(db_url: str, assignment: str, student: str, sha: str) -> dict[str, Any]:
    """The row of a submission, created ``queued`` when there is none."""
    key = _key(assignment, student, sha)
    eng = engine(db_url)
    with eng.begin() as conn:
        row = conn.execute(sa.select(table).where(_where(**key))).mappings().first()
        if row is not None:
            return dict(row)
    try:
        with eng.begin() as conn:
            conn.execute(
                table.insert().values(
                    **key,
                    state="queued",
                    reason="",
                    executions=0,
                    updated=_now(),
                    seen=_now(),
                    **{p: 0.0 for p in PHASES},
                )
            )
    except sa.exc.IntegrityError:  # another driver inserted it first
        pass
    return existing(db_url, assignment, student, sha)


def existing(db_url: str, assignment: str, student: str, sha: str) -> dict[str, Any]:
    """The row of a submission that has one (rows are never deleted)."""
    row = get(db_url, assignment, student, sha)
    if row is None:
        raise LookupError(f"no row for {student}'s submission {sha[:12]} of {assignment} in {table.name}")
    return row


def get(db_url: str, assignment: str, student: str, sha: str) -> dict[str, Any] | None:
    """One submission's row."""
    with engine(db_url).connect() as conn:
        row = conn.execute(sa.select(table).where(_where(**_key(assignment, student, sha)))).mappings().first()
    return dict(row) if row is not None else None


def requeue(db_url: str, row: dict[str, Any], reason: str = "") -> bool:
    """Put a lost claim (or an ungraded submission) back in the queue; False if its row changed meanwhile."""
    cond = _where(**_key(row["assignment"], row["student"], row["digest"]), state=row["state"])
    if row["state"] == "running":
        cond = (
            sa.and_(cond, table.c.token == row["token"]) if row.get("token") else sa.and_(cond, table.c.token.is_(None))
        )
    with engine(db_url).begin() as conn:
        done = conn.execute(
            table.update()
            .where(cond)
            .values(
                state="queued",
                reason=reason,
                fault="",
                token=None,
                pid=None,
                proc_start=None,
                heartbeat=None,
                updated=_now(),
            )
        )
    return done.rowcount == 1


def saw(db_url: str, assignment: str, student: str, sha: str) -> None:
    """Note that a driver found these files in the student's folder now: they are the current submission."""
    with engine(db_url).begin() as conn:
        conn.execute(table.update().where(_where(**_key(assignment, student, sha))).values(seen=_now()))


def set_phase(db_url: str, assignment: str, student: str, sha: str, **phases: float) -> None:
    """Set phase times the driver measures (time queued, its share of writing)."""
    with engine(db_url).begin() as conn:
        conn.execute(table.update().where(_where(**_key(assignment, student, sha))).values(**phases))


def set_log(db_url: str, assignment: str, student: str, sha: str, log: str) -> None:
    with engine(db_url).begin() as conn:
        conn.execute(table.update().where(_where(**_key(assignment, student, sha))).values(log=log[-LOG_CHARS:]))


def mark_applied(db_url: str, assignment: str, student: str, sha: str) -> bool:
    """Note that a graded row's result is in nbgrader's gradebook and the course's folders."""
    cond = sa.and_(_where(**_key(assignment, student, sha)), table.c.state == "graded")
    with engine(db_url).begin() as conn:
        return conn.execute(table.update().where(cond).values(applied=True)).rowcount == 1


def notebook_bytes(row: dict[str, Any]) -> bytes | None:
    """The autograded notebook stored with a graded row."""
    return zlib.decompress(row["notebook"]) if row.get("notebook") else None


# ----------------------------------------------------------------------------- the grading process's side


def claim(db_url: str, assignment: str, student: str, sha: str, token: str) -> dict[str, Any]:
    """Take a queued submission for this process, or raise :class:`ClaimRefused`.

    Counts one execution, records who holds it, and starts a heartbeat for the claim.
    """
    ensure(db_url, assignment, student, sha)
    pid = os.getpid()
    now = _now()
    cond = sa.and_(
        _where(**_key(assignment, student, sha)),
        sa.or_(table.c.state == "queued", sa.and_(table.c.state == "running", table.c.token == token)),
    )
    with engine(db_url).begin() as conn:
        done = conn.execute(
            table.update()
            .where(cond)
            .values(
                state="running",
                reason="",
                token=token,
                host=host_id(),
                pid=pid,
                proc_start=proc_start(pid),
                claimed=now,
                heartbeat=now,
                updated=now,
                executions=table.c.executions + 1,
            )
        )
    if done.rowcount != 1:
        row = get(db_url, assignment, student, sha) or {}
        raise ClaimRefused(
            f"{student}'s submission of {assignment} is {row.get('state')} "
            f"(claimed by {row.get('host')} pid {row.get('pid')}): not executed again"
        )
    _start_heartbeat(db_url, _key(assignment, student, sha), token)
    return existing(db_url, assignment, student, sha)


def _start_heartbeat(db_url: str, key: dict[str, str], token: str) -> None:
    def beat() -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            try:
                with engine(db_url).begin() as conn:
                    done = conn.execute(
                        table.update()
                        .where(sa.and_(_where(**key), table.c.token == token, table.c.state == "running"))
                        .values(heartbeat=_now())
                    )
                if done.rowcount != 1:
                    return
            except Exception:  # the database is away for a moment; the next beat tries again
                continue

    threading.Thread(target=beat, name="genlab-heartbeat", daemon=True).start()


def set_state(
    db_url: str,
    assignment: str,
    student: str,
    sha: str,
    state: str,
    reason: str = "",
    *,
    executed: bool = False,
    token: str | None = None,
    expect: str | None = None,
    fault: str = "",
    **values: Any,
) -> bool:
    """Record a submission's state and other columns; with ``token``, only while that claim holds it,
    with ``expect``, only while the row is in that state. ``fault`` says whose failure left it ungraded.

    Phase times given here replace the recorded ones. Returns whether a row was written.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    key = _key(assignment, student, sha)
    now = _now()
    ensure(db_url, assignment, student, sha)
    cond = _where(**key)
    if token is not None:
        cond = sa.and_(cond, table.c.token == token)
    if expect is not None:
        cond = sa.and_(cond, table.c.state == expect)
    update: dict[str, Any] = dict(state=state, reason=reason, fault=fault, updated=now, **values)
    if executed:
        update["executions"] = table.c.executions + 1
    if state == "running" and token is None:  # a run by hand: who runs it, so a driver waits for it
        pid = os.getpid()
        update.update(token=None, host=host_id(), pid=pid, proc_start=proc_start(pid), claimed=now, heartbeat=now)
    with engine(db_url).begin() as conn:
        done = conn.execute(table.update().where(cond).values(**update))
    return done.rowcount == 1


def lap(resources: dict, phase: str) -> None:
    """Note the wall-clock time at which an nbgrader step begins a phase (execute, verify, write)."""
    resources.setdefault("genlab_times", {})[phase] = time.time()


def context(resources: dict) -> tuple[str, str, str, str, str | None]:
    """(database of this table, assignment, student, digest, claim token) of the submission an nbgrader
    step works on: ``$GENLAB_RECORD`` under a grading task (whose nbgrader has a private gradebook),
    else nbgrader's own gradebook."""
    nbg = resources.get("nbgrader", {})
    sha = os.environ.get(DIGEST_ENV)
    if not sha:
        autograded = Path(resources["metadata"]["path"])  # <course>/autograded/<student>/<assignment>
        sha = digest(autograded.parents[1].parent / "submitted" / nbg["student"] / nbg["assignment"])
    db_url = os.environ.get(RECORD_ENV) or nbg["db_url"]
    return db_url, nbg["assignment"], nbg["student"], sha, os.environ.get(CLAIM_ENV) or None


def usage(resources: dict) -> dict[str, Any]:
    """What the execution step measured (sandboxed, peak_mb, cpu_s), as columns of the row."""
    return dict(resources.get("genlab_usage", {}))


def mark(step: Any, resources: dict, state: str, reason: str = "", *, executed: bool = False, fault: str = "") -> None:
    """Record the state of the submission an nbgrader step is working on (found from its resources).

    ``running`` with ``executed`` begins the execution: under a grading task (``$GENLAB_CLAIM``) it
    is the exclusive claim, and :class:`ClaimRefused` stops the step when another process holds
    the submission or it is graded already. Other records never stop grading: a failure to
    write one is logged. A step that leaves a submission ``ungraded`` without saying whose fault it
    is reports a failure of the grading machinery (:data:`GRADER`).
    """
    if state == "running":
        lap(resources, "execute")
    db_url, assignment, student, sha, token = context(resources)
    if state == "running" and token is not None:
        claim(db_url, assignment, student, sha, token)  # raises ClaimRefused
        return
    fault = fault or (GRADER if state == "ungraded" else "")
    try:
        set_state(
            db_url,
            assignment,
            student,
            sha,
            state,
            reason,
            executed=executed,
            token=token,
            fault=fault,
            **usage(resources),
        )
    except Exception as exc:  # grading goes on; only the record is missing
        step.log.error("could not record %s as %s: %s", student, state, exc)


def _process_start_time() -> float:
    """Wall-clock time at which this process started."""
    try:
        ticks = proc_start(os.getpid()) or 0
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return time.time()


def phase_times(resources: dict, end: float | None = None) -> dict[str, float]:
    """prepare/execute/verify/write seconds from the laps of one nbgrader run (see :func:`lap`)."""
    laps = resources.get("genlab_times", {})
    end = time.time() if end is None else end
    start = float(os.environ.get(TASK_START_ENV) or _process_start_time())
    execute = laps.get("execute", end)
    verify = laps.get("verify", execute)
    write = laps.get("write", verify)
    return {
        "prepare_s": max(0.0, execute - start),
        "execute_s": max(0.0, verify - execute),
        "verify_s": max(0.0, write - verify),
        "write_s": max(0.0, end - write),
    }


def record_graded(
    db_url: str,
    assignment: str,
    student: str,
    sha: str,
    token: str | None,
    *,
    notebook: str,
    scores: dict[str, list],
    phases: dict[str, float],
    applied: bool = False,
    **values: Any,
) -> None:
    """Store the result of a grading run and mark it graded (under the claim ``token``, if any).

    ``applied``: nbgrader wrote these scores into the course's gradebook itself (a run by hand);
    otherwise the driver applies them. ``values``: other columns (sandboxed, code, peak_mb, cpu_s).
    """
    written = set_state(
        db_url,
        assignment,
        student,
        sha,
        "graded",
        token=token,
        notebook=zlib.compress(notebook.encode(), 6),
        scores=json.dumps(scores),
        applied=applied,
        **{**phases, **values},
    )
    if not written:
        raise ClaimRefused(
            f"{student}'s submission of {assignment}: the claim {token} was lost before its result was recorded"
        )


def rows(db_url: str, assignment: str | None = None) -> list[dict[str, Any]]:
    """Every recorded submission state (of one assignment, if given)."""
    query = sa.select(*(c for c in table.columns if c.name not in ("notebook", "log")))
    if assignment:
        query = query.where(table.c.assignment == assignment)
    with engine(db_url).connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def current(db_url: str, assignment: str) -> dict[str, dict[str, Any]]:
    """The row of each student's current submission of ``assignment``: the files a driver took in last.

    A row without ``seen`` (from a grader before that column) counts by its last update.
    """
    epoch = datetime.min.replace(tzinfo=UTC)
    found: dict[str, dict[str, Any]] = {}
    for row in rows(db_url, assignment):
        when = _aware(row.get("seen") or row.get("updated")) or epoch
        best = found.get(row["student"])
        if best is None or when > (_aware(best.get("seen") or best.get("updated")) or epoch):
            found[row["student"]] = row
    return found


def wait_while_running(
    db_url: str, row: dict[str, Any], *, poll_s: float = 0.5, timeout_s: float | None = None
) -> dict[str, Any]:
    """Wait while ``row``'s claim is alive and unfinished; return the row as it then stands."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        row = get(db_url, row["assignment"], row["student"], row["digest"]) or row
        if row["state"] != "running" or not claim_alive(row):
            return row
        if deadline is not None and time.monotonic() > deadline:
            return row
        time.sleep(poll_s)


def since(moment: datetime | None) -> float:
    """Seconds since ``moment`` (0 when unknown)."""
    moment = _aware(moment)
    return (_now() - moment).total_seconds() if moment else 0.0


__all__ = [
    "GIVEN_CODE",
    "GRADER",
    "MACHINE",
    "PHASES",
    "RECORD_ENV",
    "STATES",
    "ClaimRefused",
    "claim",
    "claim_alive",
    "digest",
    "engine",
    "ensure",
    "existing",
    "current",
    "get",
    "lap",
    "mark",
    "mark_applied",
    "notebook_bytes",
    "phase_times",
    "record_graded",
    "requeue",
    "rows",
    "saw",
    "set_log",
    "set_phase",
    "set_state",
    "since",
    "usage",
    "wait_while_running",
]
