"""Grading on Ray: one self-contained task per submission.

:func:`grade_submission` needs nothing from the driver's disk. It receives the course's files
(``nbgrader_config.py``, the manifest, the assignment's source files other than notebooks) and
the submission (its notebook and timestamp) as bytes, writes them into a private course folder
on its worker and grades there with the standard ``nbgrader autograde``, against the central
gradebook, so the sandbox, the probes and their verification apply unchanged. It returns the
autograded notebook, the per-cell scores, the phase times and the log.

One record (see autograder/status.py): the task's ``nbgrader autograde`` grades against a private
gradebook in its folder (a copy of the assignment's records, autograder/gradebook.py) and stores
its result in the submission's row under its claim; only the driver applies it to the course's
gradebook. A job carries the digest of the driver's course code (:func:`code_digest`); a worker
whose code differs refuses it (:class:`CodeMismatch`), naming both.

Exactly once: the ``nbgrader autograde`` process claims the submission's row atomically before
it executes anything. It runs *detached* from the task (a
double fork, its own session), under a small watchdog (:func:`job_main`) that enforces the time
budget and keeps the log, so a worker or a driver killed with SIGKILL does not take it down:
the process finishes and records the result itself. Both are forked from the worker's grading
server (:func:`serve`), which has nbgrader, torch and the checks imported already: a fresh
``nbgrader`` process would spend about 3.5 s importing them for every submission. A task that
finds the submission claimed waits for the claim while its process lives and takes it over once
it is gone; a task that finds it graded returns the stored result without running anything. A
submission whose kernel died in code the course gave (not the student's) is graded once more at
once, with the same limits, before it is left ungraded.

:func:`run` is the driver's loop: every task is submitted up front but at most ``limit`` are in
flight, results are taken in completion order with ``ray.wait``, Ray retries a task whose worker
died once elsewhere (``max_retries``) and retries an exception only when it is an
:class:`InfrastructureError` (never what a submission did: that is graded, not raised).
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import pkgutil
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock
from urllib.parse import urlparse

from autograder import sandbox, status

# What of the driver's environment a task passes on to its grading process (a remote worker has
# its own environment; these settings belong to the run). The profile is not among them: the
# execution step pins the grading profile itself.
PASSED_ENV = ("GENLAB_SANDBOX", "GENLAB_DATA", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PGPASSWORD")
TEMPLATE = "gradebook.db"  # the private gradebook a task's nbgrader grades against (see autograder/gradebook.py)
START_BUDGET_ENV = "GENLAB_RAY_START_S"
START_BUDGET_S = 300  # for a local cluster's start, tries included (about 45 s each on a loaded 2-core machine)
STAND_INS = Path(__file__).parent / "stand_ins"  # modules a local cluster's processes import instead
SURVEY_S = 300  # for every node to answer the checks of a run's start (a new runtime_env is unpacked first)
BUDGET_MARGIN_S = 300  # on top of the manifest's limits: nbgrader's start, kernel retries, verification
POLL_S = 0.2
JOB_FILE, LOG_FILE = "job.json", "autograde.log"
SERVER_ARGV = (sys.executable, "-P", "-m", "autograder.runner", "serve")  # -P: nothing imported from its folder
SERVER_START_S = 120  # a busy worker's first job waits for the server's imports
# What an ``nbgrader autograde`` of this course imports, loaded once by each worker's grading server.
PRELOAD = (
    "nbgrader.apps.nbgraderapp",
    "nbconvert.preprocessors",
    "autograder.preprocessors",
    "autograder.preprocessors.recordgraded",
    "autograder.feedback",
    "autograder.export",
    "autograder.linkguard",
    *(f"autograder.checks.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "checks")])),
)


@dataclass
class _Server:
    proc: subprocess.Popen
    stamp: tuple  # the grading code it imported (see :func:`_code_stamp`)
    errors: Any  # its stderr, a temporary file

    @classmethod
    def start(cls, stamp: tuple) -> _Server:
        # A session of its own, so that signals meant for the worker's group do not reach it; it
        # ends by itself when its stdin closes.
        errors = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            SERVER_ARGV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            bufsize=1,
            cwd=tempfile.gettempdir(),
            start_new_session=True,
            preexec_fn=sandbox.unblock_signals,
        )
        return cls(proc, stamp, errors)

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read().decode(errors="replace").strip()[-500:]


_server: _Server | None = None  # this worker's grading server (see :func:`serve`)


class InfrastructureError(RuntimeError):
    """The grading machinery failed (a database away, a full disk): the task may be retried elsewhere."""


class ClusterError(RuntimeError):
    """The Ray cluster cannot grade this run (does not answer, has no GPU for it, its workers differ)."""


class NoGpu(ClusterError):
    """The assignment needs a GPU and the cluster has none."""


class CodeMismatch(RuntimeError):
    """A worker's course code is not the driver's: it refuses the job (which would grade with other checks)."""


@dataclass
class Job:
    """One submission to grade; with the course's files, everything its task needs."""

    assignment: str
    student: str
    digest: str
    notebook: str  # the graded notebook's file name
    db_url: str
    budget_s: float  # how long its nbgrader process may run before it is killed
    code: str = ""  # the digest of the driver's course code (:func:`code_digest`); a worker must match it
    files: dict[str, bytes] = field(default_factory=dict)  # course-relative path -> bytes
    env: dict[str, str] = field(default_factory=dict)
    submitted: float = 0.0  # wall-clock time the driver submitted it (for the time queued)


def code_digest() -> str:
    """A digest of the code that decides a grade as this process would import it: the autograder (its
    checks, steps and sandbox) and genlab, from which the student edition a kernel imports is built."""
    h = hashlib.sha256()
    for name, path in _course_code():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# ----------------------------------------------------------------------------- what a task receives


def course_files(root: Path, m, template: bytes) -> dict[str, bytes]:
    """The course files a task needs for assignment ``m``: config, manifest, non-notebook sources, the
    released notebook (which tells given cells from the student's) and the private gradebook ``template``."""
    from autograder import manifest

    own = root / "assignments" / f"{m.name}.toml"
    files = {
        "nbgrader_config.py": (root / "nbgrader_config.py").read_bytes(),
        f"assignments/{m.name}.toml": (own if own.exists() else manifest.MANIFESTS / f"{m.name}.toml").read_bytes(),
        f"release/{m.name}/{m.notebook}": (root / "release" / m.name / m.notebook).read_bytes(),
        TEMPLATE: template,
    }
    source = root / "source" / m.name
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        rel = path.relative_to(source)
        skip = (
            path.suffix in (".ipynb", ".pyc")
            or path.is_symlink()
            or not path.is_file()
            or any(part.startswith(".") or part in ("__pycache__", "feedback", "results") for part in rel.parts)
        )
        if not skip:
            files[f"source/{m.name}/{rel}"] = path.read_bytes()
    return files


def submission_files(folder: Path, m, student: str) -> dict[str, bytes]:
    """A submission's graded notebook (and nbgrader's timestamp file) under their course-relative paths."""
    files = {}
    for name in (m.notebook, "timestamp.txt"):
        path = folder / name
        if path.is_file() and not path.is_symlink():
            files[f"submitted/{student}/{m.name}/{name}"] = path.read_bytes()
    return files


def budget(m) -> float:
    return float(m.time_limit_s + m.cell_timeout_s + BUDGET_MARGIN_S)


# ----------------------------------------------------------------------------- the task


def grade_submission(job: Job | dict, course: dict[str, bytes]) -> dict[str, Any]:
    """Grade one submission in a private course folder; return its result (see :func:`_result`).

    Safe to run twice for the same submission (a retried task, a restarted driver): the
    submission's row decides whether it runs, waits for the process that runs it, or returns
    the result that process recorded.
    """
    job = Job(**job) if isinstance(job, dict) else job
    started = time.time()
    log = ""
    mine = code_digest()
    if job.code and job.code != mine:
        raise CodeMismatch(
            f"{job.student}: the worker on {socket.gethostname()} has other course code (digest {mine[:12]}) than "
            f"the driver (digest {job.code[:12]}): install the driver's version of genlab and the autograder there, "
            "or let the run ship its code (--address runs carry it with runtime_env)"
        )
    ran = retried = False
    try:
        row = status.ensure(job.db_url, job.assignment, job.student, job.digest)
        for _ in range(100):  # each pass changes the row's state or ends
            if row["state"] == "ungraded" and row.get("fault") == status.GIVEN_CODE and ran and not retried:
                # this task's kernel died in code the course gave: a crash of the machine or the
                # libraries, not the student's; once more with the same limits before it stays ungraded
                retried = True
                status.requeue(job.db_url, row, reason=f"graded again: {row.get('reason')}")
                row = status.existing(job.db_url, job.assignment, job.student, job.digest)
                continue
            if row["state"] in ("graded", "ungraded"):
                return _result(job, row, started, log)
            if row["state"] == "running":
                if status.claim_alive(row):
                    row = status.wait_while_running(job.db_url, row, timeout_s=job.budget_s + 60)
                    if status.claim_alive(row):
                        _kill_claim(row)
                        row = status.existing(job.db_url, job.assignment, job.student, job.digest)
                    continue
                if status.requeue(job.db_url, row, reason="its grading process was lost"):
                    row = status.existing(job.db_url, job.assignment, job.student, job.digest)
                else:
                    row = status.existing(job.db_url, job.assignment, job.student, job.digest)
                    continue
            row, log = _execute(job, course, started)
            ran = True
        raise InfrastructureError(f"{job.student}: the submission's state kept changing; grade it again")
    except (OSError, _db_errors()) as exc:
        raise InfrastructureError(f"{job.student}: {type(exc).__name__}: {exc}") from exc


def _db_errors() -> type[Exception]:
    import sqlalchemy as sa

    return sa.exc.OperationalError


def _gpu_ids() -> list[str]:
    try:
        import ray

        return [str(i) for i in ray.get_gpu_ids()] if ray.is_initialized() else []
    except Exception:  # not in a Ray worker
        return []


def _execute(job: Job, course: dict[str, bytes], started: float) -> tuple[dict[str, Any], str]:
    """Run ``nbgrader autograde`` for a queued submission in a private course; return its row and log.

    Returns as soon as the row holds this run's result: the process may still be exiting (and
    removes its folder itself), which overlaps with the next task's start.
    """
    folder = Path(tempfile.mkdtemp(prefix="genlab-task-"))
    launched = False
    try:
        for rel, data in {**course, **job.files}.items():
            target = folder / rel
            if not target.resolve().is_relative_to(folder.resolve()):
                raise ValueError(f"a task file outside its course: {rel}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (folder / "source" / job.assignment).mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("GENLAB_GRADEBOOK", "GENLAB_PROFILE")},
            **job.env,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            status.RECORD_ENV: job.db_url,  # nbgrader's own gradebook is the folder's (TEMPLATE)
            status.CLAIM_ENV: token,
            status.DIGEST_ENV: job.digest,
            status.TASK_START_ENV: repr(started),
            "CUDA_VISIBLE_DEVICES": ",".join(_gpu_ids()),
        }
        argv = [
            os.path.join(bin_dir, "nbgrader"),
            "autograde",
            job.assignment,
            "--student",
            job.student,
            "--force",
            f"--CourseDirectory.root={folder}",
        ]
        spec = {
            "argv": argv,
            "env": env,
            "cwd": str(folder),
            "budget_s": job.budget_s,
            "db_url": job.db_url,
            "key": [job.assignment, job.student, job.digest],
        }
        (folder / JOB_FILE).write_text(json.dumps(spec))
        os.chmod(folder / JOB_FILE, 0o600)  # it holds the gradebook URL
        pid = _launch(folder)
        launched = True
        row = _wait_for(pid, job, token)
        log = row.get("log") or ""
        if row["state"] == "queued":
            # nbgrader ended before it executed anything (a database hiccup, a broken course): the
            # machinery's failure, so Ray tries the task once more; a second failure leaves it ungraded
            raise InfrastructureError(
                f"{job.student}: nbgrader ended before executing the notebook: {_last_error(log)}"
            )
        if row["state"] == "running" and row["token"] == token:
            # it ended without a result after executing (nbgrader itself crashed or was killed, a course
            # without the RecordGraded step): a grading failure, never a zero
            status.set_state(
                job.db_url,
                job.assignment,
                job.student,
                job.digest,
                "ungraded",
                f"grading failed: {_last_error(log)}",
                token=token,
                fault=status.GRADER,
            )
            row = status.existing(job.db_url, job.assignment, job.student, job.digest)
        return row, log
    finally:
        if not launched:  # once launched, the grading process removes its folder when it ends
            shutil.rmtree(folder, ignore_errors=True)


def _launch(folder: Path) -> int:
    """Have this worker's grading server start :func:`job_main` for ``folder``; return its detached pid."""
    global _server
    stamp = _code_stamp()
    if _server is not None and _server.stamp != stamp:  # a check was fixed: grade with the new code
        if _server.proc.stdin is not None:
            _server.proc.stdin.close()
        _server = None
    detail = ""
    for _ in range(2):  # a server that died (killed, out of memory) is started again once
        if _server is None or _server.proc.poll() is not None:
            _server = _Server.start(stamp)
        proc = _server.proc
        assert proc.stdin is not None and proc.stdout is not None  # both are pipes
        try:
            proc.stdin.write(f"{folder}\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], SERVER_START_S)
            return int(proc.stdout.readline() if ready else "")
        except (OSError, ValueError):
            proc.kill()
            proc.wait()
            detail = _server.stderr()
    _server = None
    raise InfrastructureError(f"the grading server did not start a grading process: {detail or 'no output'}")


def _packages() -> list[tuple[str, Path]]:
    """(name, folder) of the packages whose code decides a grade, as this process imports them."""
    found = []
    for package in ("autograder", "genlab"):
        spec = importlib.util.find_spec(package)
        found += [(package, Path(f)) for f in sorted(spec.submodule_search_locations or [])] if spec else []
    return found


def _course_code() -> list[tuple[str, Path]]:
    """(name under its package, path) of every file of the code that decides a grade: autograder and genlab."""
    return [
        (f"{package}/{path.relative_to(base)}", path)
        for package, base in _packages()
        for path in sorted(base.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def code_env() -> dict[str, Any]:
    """A Ray runtime_env that carries this driver's course code (autograder, genlab) to every worker it uses.

    A worker of an existing cluster then grades with the driver's checks whatever it has installed
    (and its digest matches); its Python environment must still hold nbgrader, torch and the rest.
    """
    return {"py_modules": [str(folder) for _, folder in _packages()], "excludes": ["__pycache__", "*.pyc"]}


def _code_stamp() -> tuple:
    """The modification times of the grading code's files (cheaper than :func:`code_digest`)."""
    return tuple((name, path.stat().st_mtime_ns) for name, path in _course_code())


def _wait_for(pid: int, job: Job, token: str) -> dict[str, Any]:
    """The submission's row once this run recorded its result, or once the process ``pid`` has ended."""
    start = status.proc_start(pid)
    while True:
        row = status.existing(job.db_url, job.assignment, job.student, job.digest)
        if row["token"] == token and row["state"] in ("graded", "ungraded"):
            return row
        if start is None or status.proc_start(pid) != start:
            return status.existing(job.db_url, job.assignment, job.student, job.digest)
        time.sleep(POLL_S)


def _kill_claim(row: dict[str, Any]) -> None:
    """Kill a claim's process on this host that outlived its budget (its nbgrader and kernel with it)."""
    if row.get("host") == status.host_id() and row.get("pid"):
        if status.proc_start(row["pid"]) == row.get("proc_start"):
            try:
                os.killpg(row["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            time.sleep(0.5)
            return
    raise InfrastructureError(
        f"{row['student']}: its grading process on {row.get('host')} ran past its budget "
        "and cannot be stopped from here"
    )


def _result(job: Job, row: dict[str, Any], started: float, log: str) -> dict[str, Any]:
    return {
        "student": job.student,
        "digest": job.digest,
        "state": row["state"],
        "reason": row.get("reason") or "",
        "executions": row.get("executions") or 0,
        "notebook": status.notebook_bytes(row),
        "scores": json.loads(row["scores"]) if row.get("scores") else {},
        "submitted": row.get("submitted"),
        "phases": {p: row.get(p) or 0.0 for p in status.PHASES},
        "log": log or row.get("log") or "",
        "started": started,
        "finished": time.time(),
        "host": status.host_id(),
        "gpu_ids": _gpu_ids(),
        "pid": os.getpid(),
    }


def _tail(path: Path, chars: int = status.LOG_CHARS) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def scrub(text: str, db_url: str) -> str:
    """``text`` without the database password in ``db_url`` (a log that a driver and instructors read)."""
    import sqlalchemy as sa

    try:
        password = sa.engine.make_url(db_url).password
    except sa.exc.ArgumentError:
        return text
    return text.replace(str(password), "***") if password else text


def _last_error(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    return (errors or lines or ["nbgrader exited without a result"])[-1][:300]


# ----------------------------------------------------------------------------- the detached job


def serve() -> None:
    """``python -m autograder.runner serve``: a warm parent of grading processes, one per Ray worker.

    Imports nbgrader, nbconvert, torch and the course's preprocessors once (about 3.5 s that every
    ``nbgrader`` command pays again), then for each job folder read from stdin forks a detached
    :func:`job_main` and writes its pid. It ends when its stdin closes (its worker is gone); the
    grading processes it started carry on without it.
    """
    for name in PRELOAD:
        importlib.import_module(name)
    import torch

    if torch.cuda.is_initialized():  # a forked child could not use the GPU then
        sys.exit("the grading server initialised CUDA while importing; it must not")
    gc.freeze()  # the children share these objects' pages instead of copying them on the first collection
    for line in sys.stdin:
        read, write = os.pipe()
        first = os.fork()
        if first == 0:  # double fork: the watchdog is nobody's child, and the server leaves no zombie
            try:  # nothing raised here may unwind into the server's loop
                os.close(read)
                watchdog = os.fork()
                if watchdog == 0:
                    os.close(write)
                    job_main(Path(line.strip()))
                os.write(write, str(watchdog).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(first, 0)
        with os.fdopen(read) as fh:
            print(fh.read(), flush=True)


def job_main(folder: Path) -> NoReturn:
    """Run the ``nbgrader autograde`` of one job folder, in a forked copy of the server, and exit.

    In a session of its own with its output in the folder's log, it kills nbgrader when it passes
    its budget, stores the log's tail with the submission's row, and removes the folder.
    """
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    spec = json.loads((folder / JOB_FILE).read_text())
    with open(folder / LOG_FILE, "wb") as output:
        pid = os.fork()
        if pid == 0:
            try:  # nothing raised here may unwind into the watchdog's code
                _nbgrader(spec, output.fileno())
            finally:
                os._exit(1)
    done = select.select([os.pidfd_open(pid)], [], [], spec["budget_s"])[0]
    if not done:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    log = scrub(_tail(folder / LOG_FILE), spec["db_url"])
    if not done:
        log += f"\nERROR: genlab: nbgrader was killed after its budget of {spec['budget_s']:.0f} s"
    elif rc != 0 and "ERROR" not in log:
        log += f"\nERROR: genlab: nbgrader exited with status {rc}"
    try:
        assignment, student, sha = spec["key"]
        status.set_log(spec["db_url"], assignment, student, sha, log)
    except Exception:  # the log is a convenience; the result is already recorded
        pass
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)


def _nbgrader(spec: dict[str, Any], log: int) -> NoReturn:
    """Be ``nbgrader <argv>`` with the job's environment, folder and output (a fork of the warm server)."""
    os.setsid()  # its own process group: the watchdog kills it with its kernel
    sandbox.unblock_signals()  # Ray's threads block SIGINT; the kernel inherits the mask
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(spec["cwd"])
    os.environ.clear()
    os.environ.update(spec["env"])
    if spec["env"].get("OMP_NUM_THREADS", "").isdigit():  # read once by the OpenMP runtime, at the server's start
        import torch

        torch.set_num_threads(int(spec["env"]["OMP_NUM_THREADS"]))
    sys.argv = spec["argv"]
    code = 1
    try:
        from nbgrader.apps.nbgraderapp import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skips the interpreter's teardown (a second with torch loaded): the result is stored


# ----------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    address: str  # "local" for a cluster this process started
    cpus: float
    gpus: float
    started_here: bool


def _check_reachable(address: str) -> None:
    """Fail at once, with the fix, when nothing answers at a Ray address."""
    if address in ("auto", "local"):
        return
    url = urlparse(address if "://" in address else f"ray://{address}")
    host, port = url.hostname, url.port
    if not host or not port:
        raise ClusterError(f"Ray address {address!r} is not host:port (e.g. ray://head:10001, or 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        raise ClusterError(
            f"the Ray cluster at {address} does not answer ({exc.strerror or exc}). Start it (`ray start --head` on "
            "its head node), or fix --address / RAY_ADDRESS; leave both unset to grade on a local cluster"
        ) from None


def connect(address: str | None = None, *, jobs: int = 2, gpus: float | None = None) -> Cluster:
    """Use the Ray of this process, or connect to ``address`` (``RAY_ADDRESS``), or start a local cluster.

    A local cluster has ``jobs`` worker slots (and ``gpus`` GPUs if given, else those detected).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    started = False
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, runtime_env=code_env(), log_to_driver=False, logging_level=logging.WARNING)
            except Exception as exc:
                raise ClusterError(
                    f"could not join the Ray cluster at {address}: {exc}. Check --address / "
                    "RAY_ADDRESS and that the cluster runs this course's Python environment"
                ) from None
        else:
            start_local(max(1, jobs), gpus)
            started = True
    resources = ray.cluster_resources()
    return Cluster(
        address=address or "local", cpus=resources.get("CPU", 0.0), gpus=resources.get("GPU", 0.0), started_here=started
    )


def start_local(cpus: int, gpus: float | None, budget_s: float | None = None) -> None:
    """Start a local cluster within a start-up budget (``$GENLAB_RAY_START_S``, else 300 s), trying again.

    On a loaded 2-core machine Ray's start misses its own waits: the raylet gives its dashboard
    agent (a Python process) a fixed 15 s to report its ports and aborts when it does not, and the
    driver gives the node 30 s to register. The budget replaces the driver's waits, a raylet that
    died is noticed at once, and a failed start is tried again (at least once) while the budget
    lasts. What still fails raises :class:`ClusterError` naming what did not come up.
    """
    import ray

    budget = float(budget_s or os.environ.get(START_BUDGET_ENV) or START_BUDGET_S)
    kwargs: dict[str, Any] = {"num_gpus": gpus} if gpus is not None else {}
    deadline = time.monotonic() + budget
    tries = 0
    while True:
        tries += 1
        try:
            with _startup_budget(max(30.0, deadline - time.monotonic())):
                ray.init(
                    address="local",  # a new cluster, never one a `ray start` on this machine left behind
                    num_cpus=cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    **kwargs,
                )
            return
        except Exception as exc:  # Ray raises a bare Exception when its node times out during startup
            ray.shutdown()
            what = _what_timed_out(exc)
            if what is None:
                raise ClusterError(f"could not start a local Ray cluster: {exc}") from exc
            if tries >= 2 and time.monotonic() > deadline - 30:
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                raise ClusterError(
                    f"could not start a local Ray cluster in {tries} tries within its start-up budget of "
                    f"{budget:.0f} s: {what} (load average {load} on {os.cpu_count()} cores). Give it longer "
                    f"({START_BUDGET_ENV}={2 * budget:.0f}), or start a cluster once with `ray start --head` and "
                    "grade with --address"
                ) from exc


def _what_timed_out(exc: Exception) -> str | None:
    """Which part of a local Ray start timed out, or None when ``exc`` is no time-out."""
    text = str(exc)
    if "node timed out during startup" in text:
        return (
            "its node (the raylet) did not register with the cluster's GCS server; a raylet dies when its "
            "dashboard agent has not reported its ports within Ray's fixed 15 s (see raylet.out in Ray's session logs)"
        )
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"a part of it did not come up ({text.strip().splitlines()[0][:200]})"
    return None


def _raylet_died() -> bool:
    """Whether a raylet this process started has ended (Ray's start would then wait for nothing)."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if name == "raylet" and fields[1] == me:
            return fields[0] in ("Z", "X")
    return False


@contextmanager
def _startup_budget(seconds: float) -> Iterator[None]:
    """Let Ray's start wait ``seconds`` for its GCS server's port and for its node to register, and
    start fewer of its Python daemons.

    The GCS wait has a setting (``RAY_gcs_server_port_wait_time_s``); the node's is a fixed 30 s
    loop around ``ray._private.services.get_node``, which is made to keep asking until the budget
    is spent or the raylet has died.
    Each Python daemon spends seconds of CPU importing Ray while the raylet's dashboard agent has
    15 s to report its ports: a local cluster of fixed size needs no autoscaler monitor, and with
    ``log_to_driver`` off no log monitor, so neither is started; the others import Ray four times
    faster without jsonschema's IRI grammar (see autograder/stand_ins/rfc3987_syntax.py).
    """
    from ray._private import parameter, services

    deadline = time.monotonic() + seconds
    get_node = services.get_node
    params_init = parameter.RayParams.__init__

    def patient_get_node(*args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                return get_node(*args, **kwargs)
            except RuntimeError:  # not registered yet
                if time.monotonic() > deadline or _raylet_died():
                    raise
                time.sleep(0.5)

    def lean_params(self: Any, *args: Any, **kwargs: Any) -> None:
        params_init(self, *args, **{**kwargs, "no_monitor": True, "include_log_monitor": False})

    path = os.pathsep.join([str(STAND_INS), *filter(None, [os.environ.get("PYTHONPATH")])])
    with (
        mock.patch.dict(os.environ, {"RAY_gcs_server_port_wait_time_s": str(int(seconds)), "PYTHONPATH": path}),
        mock.patch.object(services, "get_node", patient_get_node),
        mock.patch.object(parameter.RayParams, "__init__", lean_params),
    ):
        yield


@dataclass
class NodeReport:
    """What one node of the cluster says at the start of a run."""

    node: str  # Ray's node id
    host: str
    code: str  # its course code's digest
    gradebook: str | None  # why it cannot reach the gradebook, or None
    sandbox: str | None  # why it cannot sandbox a kernel, or None


def _node_report(db_url: str) -> dict[str, Any]:
    """Run on a node: its code digest, whether it reaches the gradebook and can sandbox kernels."""
    import ray

    from autograder import gradebook, sandbox

    return asdict(
        NodeReport(
            node=ray.get_runtime_context().get_node_id(),
            host=socket.gethostname(),
            code=code_digest(),
            gradebook=gradebook.reachable(db_url),
            sandbox=sandbox.missing(),
        )
    )


def survey(db_url: str, timeout_s: float = SURVEY_S) -> list[NodeReport]:
    """Ask every live node of the cluster, from a task on it, for its :class:`NodeReport`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(_node_report)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    refs = {
        remote.options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False), max_retries=0
        ).remote(db_url): n
        for n in nodes
    }
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    if late:
        names = ", ".join(refs[r].get("NodeManagerHostname", refs[r]["NodeID"][:12]) for r in late)
        raise ClusterError(f"the Ray node(s) {names} did not run a check task within {timeout_s:.0f} s")
    reports = []
    for ref in ready:
        try:
            reports.append(NodeReport(**ray.get(ref)))
        except Exception as exc:
            host = refs[ref].get("NodeManagerHostname", refs[ref]["NodeID"][:12])
            raise ClusterError(
                f"a check task on the Ray node {host} failed ({_failure_reason(exc)}): does it run this course's "
                "Python environment?"
            ) from None
    return reports


def check_gpu(m, cluster: Cluster) -> None:
    """A ``gpu = "required"`` assignment on a cluster without GPUs fails now instead of waiting forever."""
    if m.gpu == "required" and cluster.gpus < m.gpu_fraction:
        raise NoGpu(
            f'assignment {m.name} needs a GPU (gpu = "required" in its manifest) but the Ray cluster at '
            f"{cluster.address} has {cluster.gpus:g}. Grade on a cluster with GPUs (--address or RAY_ADDRESS), "
            f'or set gpu = "optional" in assignments/{m.name}.toml to let CPUs grade it'
        )


def task_options(m, *, gpu: bool) -> dict[str, Any]:
    """Ray options of one submission's task: one CPU slot, a share of a GPU when ``gpu``."""
    return {
        "num_cpus": 1,
        "num_gpus": m.gpu_fraction if gpu else 0,
        "max_retries": 1,
        "retry_exceptions": [InfrastructureError],
        "name": f"grade:{m.name}",
    }


def run(
    m,
    jobs: Iterable[Job],
    course: dict[str, bytes],
    cluster: Cluster,
    *,
    limit: int,
    on_result: Callable[[Job, dict[str, Any]], None],
    on_failure: Callable[[Job, str], None],
) -> None:
    """Submit one task per job, at most ``limit`` in flight, and hand each result over as it completes.

    GPUs: ``required`` tasks always ask for ``m.gpu_fraction`` of one; ``optional`` ones ask for it
    while the cluster's GPUs have room for another share, and take a CPU slot otherwise; ``none``
    tasks never ask.
    """
    import ray

    remote = ray.remote(grade_submission)
    course_ref = ray.put(course)
    gpu_slots = int(cluster.gpus / m.gpu_fraction + 1e-9) if m.gpu != "none" and cluster.gpus else 0
    pending = list(jobs)[::-1]
    in_flight: dict[Any, tuple[Job, bool]] = {}
    while pending or in_flight:
        while pending and len(in_flight) < limit:
            job = pending.pop()
            on_gpu = m.gpu == "required" or (m.gpu == "optional" and sum(g for _, g in in_flight.values()) < gpu_slots)
            job.submitted = time.time()
            ref = remote.options(**task_options(m, gpu=on_gpu)).remote(asdict(job), course_ref)
            in_flight[ref] = (job, on_gpu)
        (ready,), _ = ray.wait(list(in_flight), num_returns=1)
        job, _ = in_flight.pop(ready)
        try:
            result = ray.get(ready)
        except Exception as exc:  # the task failed twice (a worker lost) or the machinery broke
            on_failure(job, _failure_reason(exc))
            continue
        on_result(job, result)


def _failure_reason(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


def shutdown() -> None:
    """Stop the Ray of this process (a local cluster goes with it)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        sys.exit("usage: python -m autograder.runner serve (started by a grading task)")
