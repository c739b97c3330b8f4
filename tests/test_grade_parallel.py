"""Grading at scale (issue 8): Ray workers, a PostgreSQL gradebook, resumable runs, exactly once.

The slow tests grade the twelve submissions of tests/gradingcourse.py (correct, blank, typical
mistakes, one sleeping past its cell time limit, one allocating past its memory limit, one whose
kernel exits, one printing warnings) and compare every cell's score with what sequential
``nbgrader autograde`` gives for the same submission.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest

from autograder import grade, manifest, notebooks, runner, sandbox, status
from autograder.course import gradebook_url
from tests import gradingcourse as gc
from tests.postgres import durable_folder, postgres  # noqa: F401 (a fixture)

NAME = gc.NAME
DRIVER = (
    "import sys; from pathlib import Path; from autograder import grade; "
    "rs = grade.grade(sys.argv[1], jobs=2, root=Path(sys.argv[2])); print(grade.table(rs))"
)


def _env(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "GENLAB_PROGRESS": "0", **extra}
    if not sandbox.available():
        env["GENLAB_SANDBOX"] = "0"
    return env


@pytest.fixture(autouse=True)
def _sandbox_or_not(monkeypatch):
    if not sandbox.available():  # as root without bubblewrap the grader refuses to run student code
        monkeypatch.setenv("GENLAB_SANDBOX", "0")


# ----------------------------------------------------------------------------- the record (fast)


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'gradebook.db'}?timeout=60"


def test_only_one_claim_wins_and_it_counts_one_execution(db):
    status.ensure(db, NAME, "ada", "d1")
    assert status.claim(db, NAME, "ada", "d1", "token-a")["executions"] == 1
    with pytest.raises(status.ClaimRefused, match="running"):
        status.claim(db, NAME, "ada", "d1", "token-b")
    row = status.get(db, NAME, "ada", "d1")
    assert (row["state"], row["token"], row["executions"], row["pid"]) == ("running", "token-a", 1, os.getpid())
    assert status.claim_alive(row)  # this process holds it
    status.record_graded(
        db, NAME, "ada", "d1", "token-a", notebook="{}", scores={"t": [1, 1, "code"]}, phases={"execute_s": 2.0}
    )
    with pytest.raises(status.ClaimRefused):  # graded: nobody executes it again
        status.claim(db, NAME, "ada", "d1", "token-c")
    row = status.get(db, NAME, "ada", "d1")
    assert row["state"] == "graded" and row["executions"] == 1 and status.notebook_bytes(row) == b"{}"


def test_a_claim_whose_process_is_gone_is_requeued_once(db):
    status.ensure(db, NAME, "bob", "d2")
    code = f"from autograder import status; status.claim({db!r}, {NAME!r}, 'bob', 'd2', 'dead-token')"
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
    row = status.get(db, NAME, "bob", "d2")
    assert row["state"] == "running" and not status.claim_alive(row)  # its process has exited
    assert status.requeue(db, row, reason="lost") is True
    assert status.requeue(db, row, reason="lost") is False  # compare-and-set: only one requeues it
    assert status.claim(db, NAME, "bob", "d2", "new-token")["executions"] == 2


def test_a_result_needs_the_claim_that_produced_it(db):
    status.ensure(db, NAME, "cy", "d3")
    status.claim(db, NAME, "cy", "d3", "mine")
    with pytest.raises(status.ClaimRefused, match="lost"):
        status.record_graded(db, NAME, "cy", "d3", "someone-else", notebook="{}", scores={}, phases={})


def test_a_table_from_an_older_grader_gets_the_new_columns(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE genlab_grading (assignment VARCHAR(128), student VARCHAR(128), "
                "digest VARCHAR(64), state VARCHAR(16) NOT NULL, reason TEXT, executions INTEGER, "
                "updated DATETIME, PRIMARY KEY (assignment, student, digest))"
            )
        )
    status.ensure(url, NAME, "dee", "d4")
    assert status.claim(url, NAME, "dee", "d4", "t")["host"] == status.host_id()


@pytest.mark.parametrize(
    "line, message",
    [
        ("gpu_fraction = 0", "gpu_fraction must be a number in (0, 1]"),
        ("gpu_fraction = 1.5", "gpu_fraction must be a number in (0, 1]"),
        ('gpu_fraction = "half"', "gpu_fraction must be a number"),
    ],
)
def test_manifest_gpu_fraction_is_validated(tmp_path, line, message):
    path = tmp_path / "a.toml"
    path.write_text(gc.manifest_text("optional") + line + "\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        manifest.load(path)
    path.write_text(gc.manifest_text("none") + "gpu_fraction = 0.5\n")
    with pytest.raises(ValueError, match='gpu = "none"'):
        manifest.load(path)
    path.write_text(gc.manifest_text("required", 0.25))
    assert manifest.load(path).gpu_fraction == 0.25


def test_gpu_options_and_the_missing_gpu_message(tmp_path):
    (tmp_path / "a.toml").write_text(gc.manifest_text("required", 0.25))
    m = manifest.load(tmp_path / "a.toml")
    assert runner.task_options(m, gpu=True)["num_gpus"] == 0.25
    assert runner.task_options(m, gpu=False)["num_gpus"] == 0
    assert runner.task_options(m, gpu=True)["max_retries"] == 1
    assert runner.task_options(m, gpu=True)["retry_exceptions"] == [runner.InfrastructureError]
    with pytest.raises(runner.ClusterError, match='gpu = "required".*has 0.*--address or RAY_ADDRESS'):
        runner.check_gpu(m, runner.Cluster(address="local", cpus=2, gpus=0, started_here=True))
    runner.check_gpu(m, runner.Cluster(address="local", cpus=2, gpus=1, started_here=True))


# ----------------------------------------------------------------------------- the grading server (fast)


def _job(tmp_path: Path, db: str, student: str, *argv: str, budget_s: float = 120.0) -> Path:
    """A job folder whose grading process runs ``nbgrader <argv>`` for ``student``'s row."""
    folder = tmp_path / student
    folder.mkdir()
    status.ensure(db, NAME, student, "d1")
    spec = {
        "argv": [str(Path(sys.executable).parent / "nbgrader"), *argv],
        "env": dict(os.environ),
        "cwd": str(folder),
        "budget_s": budget_s,
        "db_url": db,
        "key": [NAME, student, "d1"],
    }
    (folder / runner.JOB_FILE).write_text(json.dumps(spec))
    return folder


def _stored_log(db: str, student: str, folder: Path) -> str:
    """The log a grading process stored, once it has also removed its folder."""
    deadline = time.monotonic() + 120
    while status.get(db, NAME, student, "d1").get("log") is None or folder.exists():
        assert time.monotonic() < deadline, f"{student}'s grading process did not finish"
        time.sleep(0.2)
    return status.get(db, NAME, student, "d1")["log"]


def test_the_grading_server_forks_grading_processes_and_is_started_again_when_gone(tmp_path, db, monkeypatch):
    ada = _job(tmp_path, db, "ada", "--version")
    runner._launch(ada)
    assert "nbgrader version" in _stored_log(db, "ada", ada)
    server = runner._server.proc
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()

    bob = _job(tmp_path, db, "bob", "--version")
    runner._launch(bob)
    assert runner._server.proc.pid != server.pid
    assert "nbgrader version" in _stored_log(db, "bob", bob)

    cy = _job(tmp_path, db, "cy", "autograde", "--no-such-option", budget_s=0.01)
    runner._launch(cy)
    assert "was killed after its budget of 0 s" in _stored_log(db, "cy", cy)

    server = runner._server.proc
    monkeypatch.setattr(runner, "_code_stamp", lambda: ("a check was edited",))
    dan = _job(tmp_path, db, "dan", "--version")
    runner._launch(dan)
    assert runner._server.proc.pid != server.pid, "a server kept grading with the code it imported before a change"
    assert server.wait(timeout=30) == 0  # the old one ended when its stdin closed
    assert "nbgrader version" in _stored_log(db, "dan", dan)


def test_a_grading_server_that_cannot_start_is_an_infrastructure_error(tmp_path, db, monkeypatch):
    monkeypatch.setattr(runner, "SERVER_ARGV", (sys.executable, "-c", "import sys; sys.exit('nbgrader is missing')"))
    monkeypatch.setattr(runner, "_server", None)
    with pytest.raises(runner.InfrastructureError, match="did not start a grading process: nbgrader is missing"):
        runner._launch(_job(tmp_path, db, "eve", "--version"))


# ----------------------------------------------------------------------------- batches (slow)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 worker slots and 1 declared GPU (that does not exist), for this module."""
    grade.stop_cluster()
    runner.start_local(2, 1)
    yield
    grade.stop_cluster()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, float]]:
    """Every cell's score of the batch, graded by sequential ``nbgrader autograde`` (after the same intake)."""
    root = gc.make_course(tmp_path_factory.mktemp("reference"))
    gc.submit(root)
    _, failed = gc.autograde_sequentially(root, gc.BATCH, env=_env())
    db = gradebook_url(root)
    ungraded = {r["student"] for r in status.rows(db, NAME) if r["state"] != "graded"} | set(failed)
    if ungraded:  # a grading failure (a kernel that did not start on a busy machine) is no grade: once more
        _, failed = gc.autograde_sequentially(root, sorted(ungraded), env=_env())
    rows = {r["student"]: r for r in status.rows(db, NAME)}
    assert not failed and all(r["state"] == "graded" for r in rows.values()), (
        {s: r["reason"] for s, r in rows.items() if r["state"] != "graded"},
        failed,
    )
    got = gc.scores(db)
    assert set(got) == set(gc.BATCH)
    return got


EXPECTED = {  # what each submission must score (points per test: interpolate 3, one_hot 2, gaussian_kl 5)
    "correct-1": 10,
    "correct-2": 10,
    "blank": 0,
    "wrong-interpolate": 7,
    "wrong-one_hot": 8,
    "wrong-gaussian_kl": 5,
    "wrong-all": 0,
    "sleeps-past-limit": 10,
    "kernel-exits": 5,
    "warnings": 10,
    "half": 3,
}


@pytest.mark.slow
def test_ray_batch_grades_like_sequential_autograde(cluster, reference, tmp_path):
    root = gc.make_course(tmp_path / "course")
    gc.submit(root)
    results = {r.student: r for r in grade.grade(NAME, jobs=2, root=root)}
    db = gradebook_url(root)
    assert gc.scores(db) == reference
    totals = {s: sum(cells.values()) for s, cells in reference.items()}
    assert {s: totals[s] for s in EXPECTED} == EXPECTED
    assert totals["memory-hog"] <= 5  # killed by its memory limit after one_hot's test (or its allocation failed)
    for student, r in results.items():
        assert r.state == "graded" and r.error is None, (student, r.error)
        assert r.executions == 1 and r.gpu_ids == []  # gpu = "none": never a GPU, though the cluster has one
        assert r.phases["execute_s"] > 0 and r.phases["prepare_s"] > 0 and r.phases["verify_s"] > 0
    assert results["correct-1"].auto_score == 10
    with open(root / grade.TIMES_CSV) as fh:
        times = list(csv.DictReader(fh))
    assert {row["student"] for row in times} == set(gc.BATCH)
    assert all(float(row["execute_s"]) > 0 and row["executions"] == "1" for row in times)
    assert "executing" in grade.table(list(results.values())).splitlines()[0]
    page = (root / "feedback" / "kernel-exits" / NAME / f"{NAME}.html").read_text()
    assert "KernelDied" in page or "kernel died" in page

    # a second run grades nothing again; a changed resubmission is graded (once)
    nb_path = root / "submitted" / "blank" / NAME / f"{NAME}.ipynb"
    nbformat.write(gc.submission("correct-1"), nb_path)
    again = {r.student: r for r in grade.grade(NAME, jobs=2, root=root)}
    assert again["blank"].auto_score == 10 and again["blank"].executions == 1
    assert all(r.executions == 1 for r in again.values())
    assert [r["student"] for r in status.rows(db, NAME) if r["executions"] != 1] == []
    assert len(status.rows(db, NAME)) == len(gc.BATCH) + 1  # the blank submission's old row stays, graded


def _proc_file(pid: int | str, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # it ended meanwhile
        return b""


def _processes_of(ray_tmp: str) -> list[int]:
    """The processes of a run started with ``RAY_TMPDIR=ray_tmp``: Ray's, its workers', the grading servers' and
    the grading processes they forked (whose command line is their server's)."""
    tag = f"RAY_TMPDIR={ray_tmp}".encode()
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if tag in _proc_file(p.name, "environ").split(b"\0")]


def _ray_processes(ray_tmp: str) -> list[int]:
    """Ray's own processes (head, raylet, workers) of a cluster whose files are under ``ray_tmp``."""
    return [pid for pid in _processes_of(ray_tmp) if ray_tmp.encode() in _proc_file(pid, "cmdline")]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_a_killed_driver_resumes_and_grades_each_submission_exactly_once(postgres, reference, tmp_path):  # noqa: F811
    root = gc.make_course(tmp_path / "course")
    gc.submit(root)
    ray_tmp = tempfile.mkdtemp(prefix="gr-")  # short: Ray's socket paths must fit
    env = _env(GENLAB_GRADEBOOK=postgres.url, RAY_TMPDIR=ray_tmp)
    db = postgres.url
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, NAME, str(root)],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 900
        while True:
            assert driver.poll() is None, (
                "the driver finished before it could be killed:\n" + driver.stdout.read().decode()
            )
            assert time.monotonic() < deadline, "the driver graded nothing in time"
            rows = status.rows(db, NAME) if _has_table(db) else []
            graded = [r for r in rows if r["state"] == "graded"]
            just_claimed = [
                r for r in rows if r["state"] == "running" and status.claim_alive(r) and status.since(r["claimed"]) < 3
            ]  # it has most of its notebook to execute
            if len(graded) >= 3 and just_claimed:
                break
            time.sleep(0.3)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        killed = datetime.now(UTC)
    finally:
        if driver.poll() is None:
            driver.kill()
    _kill(_ray_processes(ray_tmp))  # what is left of the killed driver's local cluster

    restarted = subprocess.run(
        [sys.executable, "-c", DRIVER, NAME, str(root)], env=env, cwd=root, capture_output=True, text=True, timeout=900
    )
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    rows = status.rows(db, NAME)
    assert sorted(r["student"] for r in rows) == sorted(gc.BATCH)  # one row each: no file changed
    assert {r["student"]: (r["state"], r["executions"]) for r in rows} == {s: ("graded", 1) for s in gc.BATCH}
    assert gc.scores(db) == reference
    outlived = [r["student"] for r in rows if _utc(r["claimed"]) < killed < _utc(r["updated"])]
    assert outlived, "no grading process outlived the driver: the test did not test the orphan case"
    from nbgrader.api import Gradebook

    with Gradebook(db) as gb:
        subs = gb.assignment_submissions(NAME)
        assert len(subs) == len(gc.BATCH)
        assert all(
            g.auto_score is not None
            for sub in subs
            for nb in sub.notebooks
            for g in nb.grades
            if g.cell.cell_type == "code"
        )
    with open(root / "grades.csv") as fh:
        assert {row["student_id"]: row["status"] for row in csv.DictReader(fh)} == {s: "graded" for s in gc.BATCH}
    for student in gc.BATCH:
        assert (root / "autograded" / student / NAME / f"{NAME}.ipynb").exists()
        assert (root / "feedback" / student / NAME / f"{NAME}.html").exists()
    deadline = time.monotonic() + 60  # the servers end once their workers are gone
    while _processes_of(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_of(ray_tmp), "the restarted run left processes behind"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _has_table(db: str) -> bool:
    import sqlalchemy as sa

    return sa.inspect(status.engine(db)).has_table("genlab_grading")


@pytest.mark.slow
def test_gpu_tasks_wait_for_a_gpu_slot_and_optional_ones_take_a_free_share(cluster, tmp_path):
    root = gc.make_course(tmp_path / "course", gpu="required", gpu_fraction=1.0)
    gc.submit(root, ["correct-1", "wrong-one_hot"])
    required = {r.student: r for r in grade.grade(NAME, jobs=2, root=root)}
    assert all(r.gpu_ids == ["0"] and r.state == "graded" for r in required.values())
    (a0, a1), (b0, b1) = sorted(r.window for r in required.values())
    assert a1 <= b0, "two tasks held the one GPU at once"  # two CPU slots, one GPU: they ran one after the other

    (root / "assignments" / f"{NAME}.toml").write_text(gc.manifest_text("optional", 1.0))
    gc.submit(root, ["correct-2", "blank", "half"])
    optional = {
        r.student: r for r in grade.grade(NAME, jobs=2, root=root) if r.student in ("correct-2", "blank", "half")
    }
    assert all(r.state == "graded" for r in optional.values())
    on_gpu = sorted(r.window for r in optional.values() if r.gpu_ids)
    # the first two start together: one takes the free GPU, the other a CPU slot instead of waiting
    assert on_gpu and len(on_gpu) < len(optional), {s: r.gpu_ids for s, r in optional.items()}
    assert all(a[1] <= b[0] for a, b in zip(on_gpu, on_gpu[1:])), "two tasks held the one GPU at once"


# ----------------------------------------------------------------------------- bad input (slow: a release)


@pytest.fixture(scope="module")
def untouched(tmp_path_factory) -> Path:
    """A course with one submission whose notebook is misnamed: intake would rename it, so nothing may."""
    root = gc.make_course(tmp_path_factory.mktemp("bad-input"))
    folder = root / "submitted" / "ada" / NAME
    folder.mkdir(parents=True)
    nbformat.write(gc.submission("correct-1"), folder / "Copy of notebook.ipynb")
    return root


def _cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autograder.grade", *args, "--course", str(root)],
        cwd=root,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _assert_untouched(root: Path) -> None:
    assert [p.name for p in (root / "submitted" / "ada" / NAME).iterdir()] == ["Copy of notebook.ipynb"]
    assert not (root / "autograded").exists()


# Ports a Ray node takes for its own components unless told otherwise (a head given one of them fails).
RAY_DEFAULT_PORTS = {6379, 8076, 8265, 10001, 52365, 62365}


def _free_port() -> int:
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port


@pytest.mark.slow
def test_a_ray_address_that_does_not_answer(untouched):
    address = f"127.0.0.1:{_free_port()}"
    proc = _cli(untouched, NAME, "--address", address)
    assert proc.returncode == 2
    assert f"the Ray cluster at {address} does not answer" in proc.stderr and "ray start --head" in proc.stderr
    assert "RAY_ADDRESS" in proc.stderr and "Traceback" not in proc.stderr
    _assert_untouched(untouched)


@pytest.mark.slow
def test_a_gradebook_that_cannot_be_reached(untouched):
    url = f"postgresql+psycopg2://genlab@127.0.0.1:{_free_port()}/genlab"
    proc = _cli(untouched, NAME, GENLAB_GRADEBOOK=url)
    assert proc.returncode == 2
    assert "cannot reach the gradebook" in proc.stderr and "GENLAB_GRADEBOOK" in proc.stderr
    assert "autograder.pgserver start" in proc.stderr and "Traceback" not in proc.stderr
    _assert_untouched(untouched)


@pytest.mark.slow
def test_an_assignment_without_a_release(untouched):
    (untouched / "assignments" / "unreleased.toml").write_text(gc.manifest_text().replace(NAME, "unreleased"))
    proc = _cli(untouched, "unreleased")
    assert proc.returncode == 2
    assert "assignment unreleased has no release" in proc.stderr and "make release" in proc.stderr
    _assert_untouched(untouched)


@pytest.mark.slow
def test_a_required_gpu_on_a_cluster_without_one_fails_at_once(untouched):
    (untouched / "assignments" / "needsgpu.toml").write_text(gc.manifest_text("required").replace(NAME, "needsgpu"))
    (untouched / "release" / "needsgpu").mkdir()
    (untouched / "release" / "needsgpu" / "needsgpu.ipynb").write_text("{}")
    folder = untouched / "submitted" / "ada" / "needsgpu"
    folder.mkdir(parents=True)
    nbformat.write(gc.submission("correct-1"), folder / "Copy.ipynb")
    (untouched / "source" / "needsgpu").mkdir()
    nbformat.write(gc.source_notebook(), untouched / "source" / "needsgpu" / "needsgpu.ipynb")
    code = (
        "import sys; from pathlib import Path; from autograder import grade, runner\n"
        "try:\n    grade.grade('needsgpu', jobs=1, root=Path(sys.argv[1]), gpus=0)\n"
        "except runner.ClusterError as exc:\n    print(exc); sys.exit(3)\n"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(untouched)],
        env=_env(RAY_TMPDIR=tempfile.mkdtemp(prefix="gr-")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert 'needs a GPU (gpu = "required"' in proc.stdout and "has 0" in proc.stdout
    assert time.monotonic() - start < 240  # at once: no task waits for a GPU that does not exist
    assert [p.name for p in folder.iterdir()] == ["Copy.ipynb"]


# ------------------------------------------------------------------- faults of the course, the single record (slow)


def _tiny_course(tmp_path: Path, students: list[str], **options) -> Path:
    """A released course whose submissions are the release filled in (so they hold every given cell)."""
    root = gc.make_course(tmp_path / "course", **options)
    release_nb = nbformat.read(root / "release" / NAME / f"{NAME}.ipynb", as_version=4)
    source_nb = nbformat.read(root / "source" / NAME / f"{NAME}.ipynb", as_version=4)
    for student in students:
        folder = root / "submitted" / student / NAME
        folder.mkdir(parents=True)
        nbformat.write(notebooks.fill(release_nb, source_nb), folder / f"{NAME}.ipynb")
    return root


GIVEN_ABORT = (
    "import os\nif os.environ.get('NBGRADER_EXECUTION'):\n    os.abort()  # as oneDNN did in adversarial's training"
)


@pytest.mark.slow
def test_a_kernel_dying_in_given_code_is_ungraded_retried_once_and_counted(tmp_path):
    root = _tiny_course(tmp_path, ["ada"], given=GIVEN_ABORT)
    proc = _cli(root, NAME, RAY_TMPDIR=tempfile.mkdtemp(prefix="gr-"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = status.rows(gradebook_url(root), NAME)[0]
    assert (row["state"], row["fault"], row["executions"]) == ("ungraded", status.GIVEN_CODE, 2)  # once more, then left
    assert "given cell `given`" in row["reason"] and "SIGABRT" in row["reason"]
    assert "1 ungraded (1 kernel died in given code)" in proc.stdout and "ungraded ada: the kernel died" in proc.stdout
    with open(root / "grades.csv") as fh:
        (line,) = list(csv.DictReader(fh))
    assert (line["status"], line["score"]) == ("ungraded", "") and "SIGABRT" in line["reason"]


@pytest.mark.slow
def test_a_result_stored_by_a_worker_that_died_before_the_driver_took_it_is_applied_by_the_next_run(cluster, tmp_path):
    from nbgrader.api import Gradebook, MissingEntry

    from autograder import gradebook

    root = _tiny_course(tmp_path, ["ada"])
    m = manifest.load(NAME, root)
    db = gradebook_url(root)
    gradebook.check(db, m, root)
    folder = root / "submitted" / "ada" / NAME
    sha = status.digest(folder)
    status.ensure(db, NAME, "ada", sha)
    job = runner.Job(
        assignment=NAME,
        student="ada",
        digest=sha,
        notebook=m.notebook,
        db_url=db,
        budget_s=runner.budget(m),
        code=runner.code_digest(),
        files=runner.submission_files(folder, m, "ada"),
    )
    stored = runner.grade_submission(job, runner.course_files(root, m, gradebook.template(db, NAME)))
    assert stored["state"] == "graded"  # ... and the driver that submitted it is gone
    with Gradebook(db) as gb, pytest.raises(MissingEntry):
        gb.find_submission(NAME, "ada")  # the worker wrote no score into the course's gradebook
    assert status.existing(db, NAME, "ada", sha)["applied"] is False

    (result,) = grade.grade(NAME, jobs=2, root=root)
    assert result.error is None and result.auto_score == 10 and result.executions == 1  # applied, not run again
    assert status.existing(db, NAME, "ada", sha)["applied"] is True
    assert (root / "autograded" / "ada" / NAME / f"{NAME}.ipynb").exists()


@pytest.mark.slow
def test_a_claim_whose_heartbeat_stopped_is_graded_again_and_its_holder_cannot_write(cluster, tmp_path):
    root = _tiny_course(tmp_path, ["ada"])
    db = gradebook_url(root)
    from autograder import gradebook

    gradebook.check(db, manifest.load(NAME, root), root)
    sha = status.digest(root / "submitted" / "ada" / NAME)
    status.ensure(db, NAME, "ada", sha)
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    with status.engine(db).begin() as conn:  # a worker on another machine claimed it, then went silent
        conn.execute(
            status.table.update().values(
                state="running", token="stale", host="elsewhere/0/0", pid=4242, heartbeat=long_ago, executions=1
            )
        )
    (result,) = grade.grade(NAME, jobs=2, root=root)
    assert result.error is None and result.auto_score == 10 and result.executions == 2
    with pytest.raises(status.ClaimRefused):  # the silent worker wakes up: its result goes nowhere
        status.record_graded(db, NAME, "ada", sha, "stale", notebook="{}", scores={}, phases={})
    assert status.existing(db, NAME, "ada", sha)["scores"] != "{}"


# ----------------------------------------------------------------------------- a real two-node cluster (slow)

NODE_SCRIPT = """
set -e
# This node's processes see another file system: no course folder, no repository (the course's
# Python environment is bound back where it was, as a worker machine would have installed it).
mkdir -p "$SIDE"
mount --bind "$VENV" "$SIDE"
mount -t tmpfs tmpfs "$REPO"
mkdir -p "$VENV"
mount --bind "$SIDE" "$VENV"
mount -t tmpfs tmpfs "$COURSES"
test ! -e "$COURSE"
exec "$VENV/bin/ray" start --address="$HEAD" --num-cpus=1 --block --disable-usage-stats
"""
CLUSTER_DRIVER = (
    "import sys; from pathlib import Path; from autograder import grade; "
    "rs = grade.grade(sys.argv[1], jobs=2, root=Path(sys.argv[2]), address=sys.argv[3]); print(grade.table(rs)); "
    "sys.exit(1 if any(r.error for r in rs) or rs.problems else 0)"
)


def _start_head(port: int, env: dict[str, str]) -> None:
    """A Ray head node with one CPU; tried three times (a loaded machine can miss Ray's own start-up waits)."""
    ray = str(Path(sys.executable).parent / "ray")
    for _ in range(3):
        head = subprocess.run(
            [ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
            env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if head.returncode == 0:
            return
        _kill(_processes_of(env["RAY_TMPDIR"]))
    pytest.fail(f"the Ray head did not start: {head.stderr[-2000:]}")


def _alive_nodes(port: int, env: dict[str, str]) -> int:
    code = (
        f"import ray; ray.init(address='127.0.0.1:{port}', logging_level='ERROR'); "
        "print(len([n for n in ray.nodes() if n['Alive']]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0


def _join_node(port: int, env: dict[str, str], node_env: dict[str, str]) -> subprocess.Popen:
    """A second Ray node in a mount namespace, joined to the head; tried three times like the head."""
    for _ in range(3):
        node = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", NODE_SCRIPT],
            env=node_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while node.poll() is None and time.monotonic() < deadline:
            if _alive_nodes(port, env) >= 2:
                return node
            time.sleep(2)
        node.kill()
        output = node.stdout.read().decode()[-3000:] if node.stdout else ""
        _kill(_processes_of(node_env["RAY_TMPDIR"]))
    pytest.fail(f"the second Ray node did not join: {output}")


def _cluster_logs(head_tmp: str) -> str:
    """The last lines of the cluster's Ray logs (every node writes into the head's session folder)."""
    logs = sorted(Path(head_tmp).glob("ray/session_latest/logs/*"))
    return "\n".join(
        f"{p.name}: {p.read_text(errors='replace')[-1500:]}" for p in logs if p.suffix in (".log", ".err", ".out")
    )


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a mount namespace"
)
def test_a_cluster_whose_worker_has_no_course_folder_grades_like_the_local_run(postgres, tmp_path):  # noqa: F811
    postgres.reset()  # the server is the module's: an earlier test's rows would be read as this run's
    students = ["correct-1", "wrong-one_hot", "half", "blank"]
    root = gc.make_course(tmp_path / "course")
    gc.submit(root, students)
    head_tmp, node_tmp = tempfile.mkdtemp(prefix="rh-"), tempfile.mkdtemp(prefix="rn-")
    port = _free_port()
    # Every node and the driver share one token, as an instructor's cluster does: left to itself each
    # Ray process chooses token or no authentication from whether ~/.ray/auth_token exists.
    token = Path(head_tmp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = _env(
        GENLAB_GRADEBOOK=postgres.url, RAY_TMPDIR=head_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)
    )
    node = None
    try:
        _start_head(port, env)
        repo = Path(__file__).resolve().parent.parent
        node_env = {
            **env,
            "RAY_TMPDIR": node_tmp,
            "HEAD": f"127.0.0.1:{port}",
            "SIDE": str(Path(node_tmp) / "venv"),
            "VENV": str(Path(sys.executable).parent.parent),
            "REPO": str(repo),
            "COURSES": str(tmp_path.parents[1]),  # pytest's folder of this run's temporary folders
            "COURSE": str(root),
        }
        node = _join_node(port, env, node_env)

        driver = subprocess.Popen(
            [sys.executable, "-c", CLUSTER_DRIVER, NAME, str(root), f"127.0.0.1:{port}"],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        killed: list[int] = []
        deadline = time.monotonic() + 900
        while driver.poll() is None:  # kill the second node's worker while it grades a submission
            assert time.monotonic() < deadline, "the run on the cluster did not finish"
            if not killed:
                busy = [
                    p
                    for p in _processes_of(node_tmp)
                    if _proc_file(p, "cmdline").startswith(f"ray::grade:{NAME}".encode())
                ]
                _kill(busy)
                killed += busy
            time.sleep(0.5)
        out = driver.stdout.read().decode()
        assert driver.returncode == 0, out[-4000:]
        assert killed, f"no submission was graded on the node without the course folder: {_cluster_logs(head_tmp)}"
        rows = {r["student"]: r for r in status.rows(postgres.url, NAME)}
        assert {s: (r["state"], r["executions"]) for s, r in rows.items()} == {s: ("graded", 1) for s in students}
        totals = {s: sum(cells.values()) for s, cells in gc.scores(postgres.url, students).items()}
        assert totals == {s: EXPECTED[s] for s in students}  # what the local run gives (the batch test)
    finally:
        if node is not None and node.poll() is None:
            node.kill()
        _kill(_processes_of(node_tmp) + _processes_of(head_tmp))
        postgres.reset()


@pytest.mark.slow
def test_two_drivers_at_once_grade_each_submission_once(postgres, tmp_path):  # noqa: F811
    postgres.reset()
    students = ["correct-1", "wrong-interpolate", "half", "kernel-exits"]
    root = gc.make_course(tmp_path / "course")
    gc.submit(root, students)
    one_job = DRIVER.replace("jobs=2", "jobs=1")
    drivers = [
        subprocess.Popen(
            [sys.executable, "-c", one_job, NAME, str(root)],
            env=_env(GENLAB_GRADEBOOK=postgres.url, RAY_TMPDIR=tempfile.mkdtemp(prefix=f"g{i}-")),
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    try:
        outs = [d.communicate(timeout=1500)[0].decode() for d in drivers]
        assert [d.returncode for d in drivers] == [0, 0], outs
        rows = status.rows(postgres.url, NAME)
        assert {r["student"]: (r["state"], r["executions"]) for r in rows} == {s: ("graded", 1) for s in students}
        totals = {s: sum(cells.values()) for s, cells in gc.scores(postgres.url, students).items()}
        assert totals == {s: EXPECTED[s] for s in students}
        with open(root / "grades.csv") as fh:
            assert {row["student_id"]: row["status"] for row in csv.DictReader(fh)} == dict.fromkeys(students, "graded")
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
        postgres.reset()


@pytest.mark.slow
def test_the_gradebook_password_reaches_no_log_page_or_table(tmp_path):
    from autograder import pgserver

    if pgserver.missing():
        pytest.skip(pgserver.missing())
    folder = durable_folder(f"pg-{os.getpid()}")
    server = pgserver.start(folder)
    try:
        password = server.password_file.read_text().strip()
        root = _tiny_course(tmp_path, ["ada"])
        proc = _cli(
            root,
            NAME,
            GENLAB_GRADEBOOK=server.url,
            GENLAB_GRADEBOOK_PASSWORD_FILE=str(server.password_file),
            GENLAB_SANDBOX="0",
            RAY_TMPDIR=tempfile.mkdtemp(prefix="gp-"),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "unsandboxed" in proc.stdout  # GENLAB_SANDBOX=0 is said, in the table ...
        with open(root / "grades.csv") as fh:
            assert [row["sandbox"] for row in csv.DictReader(fh)] == ["unsandboxed"]  # ... and in grades.csv
        texts = [proc.stdout, proc.stderr, *(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())]
        import sqlalchemy as sa

        with sa.create_engine(sa.engine.make_url(server.url).set(password=password)).connect() as conn:
            texts += [str(row) for row in conn.execute(sa.text("SELECT * FROM genlab_grading"))]
        assert not [t[:200] for t in texts if password in t]
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
