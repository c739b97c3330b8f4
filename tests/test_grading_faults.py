"""A grading run that finishes whatever it is given, and never turns a fault of the course or the machine into a
grade (issues 17 and 21): fast tests of the pieces; tests/test_grade_parallel.py grades batches end to end."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_code_cell, new_notebook

from autograder import grade, manifest, runner, sandbox, status
from autograder.preprocessors import gradeexecute
from autograder.preprocessors.gradeexecute import GradeExecute, GradingFailure

# ----------------------------------------------------------------------------- the local cluster's start


class FakeRay:
    """ray.init failing as a loaded machine makes it fail, ``failures`` times."""

    def __init__(self, failures: int, message: str = "The current node timed out during startup. This could happen"):
        self.failures, self.message, self.inits, self.shutdowns = failures, message, 0, 0

    def init(self, **kwargs):
        self.inits += 1
        self.kwargs = kwargs
        if self.inits <= self.failures:
            raise Exception(self.message)

    def shutdown(self):
        self.shutdowns += 1


@pytest.fixture
def fake_ray(monkeypatch):
    import ray

    def use(failures: int, **kw) -> FakeRay:
        fake = FakeRay(failures, **kw)
        monkeypatch.setattr(ray, "init", fake.init)
        monkeypatch.setattr(ray, "shutdown", fake.shutdown)
        return fake

    return use


def test_a_local_start_that_times_out_is_tried_again(fake_ray):
    fake = fake_ray(1)
    runner.start_local(2, None, budget_s=60)
    assert fake.inits == 2
    assert fake.kwargs["address"] == "local"  # never the cluster a `ray start` on this machine left behind


def test_a_local_start_that_keeps_timing_out_says_what_timed_out(fake_ray):
    fake = fake_ray(10)
    with pytest.raises(runner.ClusterError) as info:
        runner.start_local(2, None, budget_s=1)
    assert fake.inits == 2  # one retry, even when the budget is spent
    text = str(info.value)
    assert "2 tries" in text and "the raylet" in text and "dashboard agent" in text
    assert "GENLAB_RAY_START_S=2" in text and "ray start --head" in text and "load average" in text


def test_another_failure_to_start_is_not_retried(fake_ray):
    fake = fake_ray(10, message="port 6379 is in use")
    with pytest.raises(runner.ClusterError, match="port 6379 is in use"):
        runner.start_local(2, None, budget_s=60)
    assert fake.inits == 1


def test_the_start_budget_waits_for_the_node_past_rays_own_30_s(monkeypatch):
    from ray._private import services

    asked = []

    def slow_node(*args):  # registers at the fourth question
        asked.append(time.monotonic())
        if len(asked) < 4:
            raise RuntimeError("GCS cannot find the node")
        return {"node": "up"}

    monkeypatch.setattr(services, "get_node", slow_node)
    monkeypatch.setattr(runner, "_raylet_died", lambda: False)
    with runner._startup_budget(60):
        assert services.get_node("gcs", "node") == {"node": "up"}
        assert os.environ["RAY_gcs_server_port_wait_time_s"] == "60"
    assert services.get_node is slow_node and len(asked) == 4
    asked.clear()
    monkeypatch.setattr(runner, "_raylet_died", lambda: True)  # a raylet that aborted: no point in waiting
    with runner._startup_budget(60), pytest.raises(RuntimeError):
        services.get_node("gcs", "node")
    assert len(asked) == 1


# ----------------------------------------------------------------------------- the sandbox, the code, the nodes


def test_without_a_usable_sandbox_grading_stops_unless_told(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "not root" in sandbox.missing()
    step = GradeExecute()
    monkeypatch.delenv("GENLAB_SANDBOX", raising=False)
    with pytest.raises(GradingFailure, match="refusing to grade without the sandbox.*GENLAB_SANDBOX=0") as info:
        step._sandboxed()
    assert info.value.fault == status.MACHINE and "bubblewrap" in str(info.value)
    monkeypatch.setenv("GENLAB_SANDBOX", "0")
    assert step._sandboxed() is False


def test_a_sandbox_needs_its_tools_and_cgroups(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox.shutil, "which", lambda tool: None if tool == "bwrap" else f"/usr/bin/{tool}")
    assert "bwrap not found" in sandbox.missing()
    monkeypatch.setattr(sandbox.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(sandbox, "_cgroup_layout", lambda: None)
    assert "no cgroup hierarchy" in sandbox.missing()


def _report(**kw) -> runner.NodeReport:
    return runner.NodeReport(
        **{"node": "n1", "host": "gpu-7", "code": runner.code_digest(), "gradebook": None, "sandbox": None, **kw}
    )


@pytest.mark.parametrize(
    "report, error, words",
    [
        (_report(code="f" * 64), runner.ClusterError, ["gpu-7", "other course code", "ffffffffffff"]),
        (_report(gradebook="connection refused"), grade.GradebookError, ["gpu-7", "connection refused"]),
        (_report(sandbox="bwrap not found"), grade.SandboxMissing, ["gpu-7", "bwrap not found", "GENLAB_SANDBOX=0"]),
    ],
    ids=["other-code", "no-gradebook", "no-sandbox"],
)
def test_a_node_that_cannot_grade_stops_the_run_before_any_submission(monkeypatch, report, error, words):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": "n1", "Alive": True}])
    monkeypatch.setattr(runner, "survey", lambda db_url: [report])
    monkeypatch.delenv("GENLAB_SANDBOX", raising=False)
    grade._surveyed.clear()
    with pytest.raises(error) as info:
        grade._check_nodes("sqlite:///nowhere.db")
    assert all(w in str(info.value) for w in words), str(info.value)
    if report.code != runner.code_digest():
        assert runner.code_digest()[:12] in str(info.value)  # both digests


def test_unsandboxed_grading_is_allowed_when_asked_for(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": "n1", "Alive": True}])
    monkeypatch.setattr(runner, "survey", lambda db_url: [_report(sandbox="bwrap not found")])
    monkeypatch.setenv("GENLAB_SANDBOX", "0")
    grade._surveyed.clear()
    grade._check_nodes("sqlite:///nowhere.db")


def test_a_worker_with_other_code_refuses_the_job():
    job = runner.Job(assignment="a", student="ada", digest="d", notebook="a.ipynb", db_url="sqlite:///x.db", budget_s=1)
    job.code = "0" * 64
    with pytest.raises(runner.CodeMismatch) as info:
        runner.grade_submission(job, {})
    assert "000000000000" in str(info.value) and runner.code_digest()[:12] in str(info.value)


def test_the_code_digest_follows_the_grading_code(tmp_path, monkeypatch):
    before = runner.code_digest()
    check = Path(runner.__file__).parent / "checks" / "zz_digest_probe.py"
    try:
        check.write_text("# a check edited on one worker\n")
        assert runner.code_digest() != before
    finally:
        check.unlink()
    assert runner.code_digest() == before


# ----------------------------------------------------------------------------- a dead kernel: whose fault


def _cell(source: str, **nbgrader) -> nbformat.NotebookNode:
    meta = {"nbgrader": {"grade_id": nbgrader.pop("gid", "x"), "schema_version": 3, **nbgrader}} if nbgrader else {}
    return new_code_cell(source, metadata=meta)


def test_given_cells_are_the_courses_and_the_rest_the_students(tmp_path):
    release = new_notebook(cells=[_cell("import torch"), _cell("train(model)", locked=True, gid="train")])
    (tmp_path / "release" / "a").mkdir(parents=True)
    nbformat.write(release, tmp_path / "release" / "a" / "a.ipynb")
    step = GradeExecute()
    step._given = gradeexecute.given_sources(tmp_path, "a", "a.ipynb")
    assert step._is_given(_cell("import torch"))  # unchanged given code
    assert step._is_given(_cell("train(model)", locked=True, gid="train"))
    assert not step._is_given(_cell("import torch\nos._exit(1)"))  # given code the student changed
    assert not step._is_given(_cell("x = 1"))  # a cell the student added
    assert not step._is_given(_cell("def f(): ...", solution=True, grade=False, gid="f"))
    assert not step._is_given(_cell("probe_f(f)", grade=True, solution=False, locked=True, gid="test_f"))


class FakeCgroup:
    def __init__(self, oom: bool):
        self.oom, self.folders = oom, ["x"]

    def out_of_memory(self) -> bool:
        return self.oom

    def peak_mb(self) -> float:
        return 4096.0


def _death(code: int | None, *, oom: bool = False, sandboxed: bool = True, exc=None) -> str:
    step = GradeExecute()
    step.timeout = 300
    step.km = SimpleNamespace(provisioner=SimpleNamespace(process=SimpleNamespace(poll=lambda: code)))
    jail = SimpleNamespace(
        cgroup=FakeCgroup(oom), sandboxed=sandboxed, limits=sandbox.Limits(memory_mb=4096, cpu_s=1200)
    )
    return step._death_cause(jail, exc or DeadKernelError("Kernel died"))


def test_a_dead_kernel_says_which_limit_or_signal_ended_it():
    assert _death(137, oom=True) == "the memory limit of 4096 MB was hit (peak 4096 MB)"
    assert _death(128 + 24) == "the CPU time limit of 1200 s was used up (SIGXCPU)"
    assert _death(134) == "it was killed by SIGABRT (an abort, such as a failed check inside a library)"
    assert _death(-11, sandboxed=False) == "it was killed by SIGSEGV (a crash)"
    assert _death(3) == "it exited with status 3"
    assert "did not stop when interrupted" in _death(None, exc=CellTimeoutError("x"))


def test_the_kernel_gets_the_grading_profile_whatever_the_shell_says(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_PROFILE", "full")
    jail = SimpleNamespace(sandboxed=False, scratch=tmp_path)
    env = GradeExecute()._kernel_env(jail, 7, tmp_path)
    assert env["GENLAB_PROFILE"] == "smoke" and env["NBGRADER_EXECUTION"] == "autograde"
    assert "GENLAB_PROFILE" not in runner.PASSED_ENV


# ----------------------------------------------------------------------------- the run's end: checks and summary


def _result(student: str, cells: dict[str, float], **kw) -> grade.Result:
    return grade.Result(student, auto_score=sum(cells.values()), auto_max=10, cells=cells, **kw)


@pytest.fixture
def chapter(tmp_path) -> manifest.Manifest:
    """A manifest with two rounds of mistakes over the three test cells of tests/gradingcourse.py."""
    from tests import gradingcourse as gc

    gc.make_course_files(tmp_path)
    with open(tmp_path / "assignments" / f"{gc.NAME}.toml", "a") as fh:
        for name, cell, fails in [("a", "one_hot", "test_one_hot"), ("b", "one_hot", "test_one_hot")]:
            fh.write(f"[[mistakes]]\nname = '{name}'\ncell = '{cell}'\ncode = 'x'\nfails = ['{fails}']\n")
    return manifest.load(gc.NAME, tmp_path)


FULL = {"test_interpolate": 3.0, "test_one_hot": 2.0, "test_gaussian_kl": 5.0}


def test_samples_that_grade_as_they_must_pass(chapter, tmp_path):
    results = [
        _result("demo-correct", FULL),
        _result("demo-blank", dict.fromkeys(FULL, 0.0)),
        _result("demo-mistakes", {**FULL, "test_one_hot": 0.0}),
    ]
    assert grade.check_samples(chapter, results, tmp_path) == []


def test_samples_that_grade_wrong_name_the_chapter_and_what_is_wrong(chapter, tmp_path):
    results = [
        _result("demo-correct", {**FULL, "test_gaussian_kl": 0.0}),
        _result("demo-blank", {**dict.fromkeys(FULL, 0.0), "test_one_hot": 2.0}),
        _result("demo-mistakes", FULL),
        grade.Result("demo-mistakes-2", error="the kernel died in the course's given cell `train`"),
    ]
    problems = grade.check_samples(chapter, results, tmp_path)
    assert len(problems) == 4 and all(p.startswith(f"{chapter.name}: ") for p in problems)
    assert "demo-correct (the source solutions) got 5 / 10" in problems[0] and "lost test_gaussian_kl" in problems[0]
    assert "demo-blank (the untouched release)" in problems[1] and "kept test_one_hot" in problems[1]
    assert "typical mistakes a" in problems[2] and "kept test_one_hot" in problems[2]
    assert "demo-mistakes-2" in problems[3] and "was not graded" in problems[3]


def test_the_summary_names_what_needs_attention(tmp_path):
    outcomes = {
        "adversarial": grade.Graded(
            [
                _result("ada", FULL, sandboxed=True),
                grade.Result("bob", error="the kernel died in given cell `train`: SIGABRT", fault=status.GIVEN_CODE),
                grade.Result("cy", error="verification failed: GraderError", fault=status.GRADER),
            ],
            problems=["adversarial: nbgrader export failed (exit 1: boom); grades.csv was not updated"],
        ),
        "dcgan": grade.Graded(),
        "vae_theory": "assignment vae_theory has no release",
        "harmonic": grade.Graded([_result("dee", FULL, sandboxed=False)]),
    }
    text, attention = grade.summary(outcomes, tmp_path)
    assert attention
    assert "adversarial: 3 submission(s): 1 graded, 2 ungraded (1 kernel died in given code, 1 grader failed)" in text
    assert "ungraded bob: the kernel died in given cell `train`: SIGABRT" in text
    assert "problem: adversarial: nbgrader export failed" in text
    assert f"dcgan: no submissions in {tmp_path / 'submitted'}/<student>/dcgan/" in text
    assert "vae_theory: not graded: assignment vae_theory has no release" in text
    assert "harmonic: 1 submission(s): 1 graded, 0 ungraded; 1 unsandboxed" in text
    assert "needs attention: adversarial" in text and "vae_theory" in text.splitlines()[-1]
    _, calm = grade.summary({"dcgan": grade.Graded()}, tmp_path)
    assert not calm


def test_one_assignment_failing_does_not_stop_the_others(monkeypatch, tmp_path, capsys):
    graded = []

    def fake_grade(name, **kw):
        if name == "broken":
            raise FileNotFoundError("assignment broken has no release")
        if name == "crashing":
            raise KeyError("a bug in the grader")
        graded.append(name)
        return grade.Graded([_result("ada", FULL)]) if name == "good" else grade.Graded()

    monkeypatch.setattr(grade, "grade", fake_grade)
    monkeypatch.setattr(manifest, "load", lambda name, root=None: SimpleNamespace(name=name, title=name))
    with pytest.raises(SystemExit) as info:
        grade.main(["broken", "crashing", "good", "empty", "--course", str(tmp_path)])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and graded == ["good", "empty"]
    assert "error: assignment broken has no release" in err and "KeyError" in err
    assert "crashing: not graded: the grader failed (KeyError" in out and "empty: no submissions" in out


def test_a_gradebook_that_cannot_be_reached_stops_the_run_at_once(monkeypatch, tmp_path, capsys):
    def fake_grade(name, **kw):
        raise grade.GradebookError("cannot reach the gradebook postgresql://genlab@db/genlab")

    monkeypatch.setattr(grade, "grade", fake_grade)
    monkeypatch.setattr(manifest, "load", lambda name, root=None: SimpleNamespace(name=name, title=name))
    with pytest.raises(SystemExit) as info:
        grade.main(["a", "b", "--course", str(tmp_path)])
    assert info.value.code == 2
    assert "cannot reach the gradebook" in capsys.readouterr().err


def test_a_submission_intake_cannot_handle_waits_ungraded_and_the_others_go_on(monkeypatch, tmp_path):
    from tests import gradingcourse as gc

    gc.make_course_files(tmp_path)
    m = manifest.load(gc.NAME, tmp_path)
    (tmp_path / "release" / gc.NAME).mkdir(parents=True)
    nbformat.write(gc.source_notebook(), tmp_path / "release" / gc.NAME / f"{gc.NAME}.ipynb")
    gc.submit(tmp_path, ["correct-1", "blank"])

    def intake(folder, m, release_nb):
        if folder.parent.name == "blank":
            raise AttributeError("'str' object has no attribute 'get'")
        return []

    monkeypatch.setattr(grade, "intake", intake)
    db = f"sqlite:///{tmp_path / 'gradebook.db'}"
    folders = sorted((tmp_path / "submitted").glob(f"*/{gc.NAME}"))
    results, rows = grade._take_in(db, m, folders, tmp_path, regrade=False)
    assert list(rows) == ["correct-1"] and rows["correct-1"]["state"] == "queued"
    blank = results["blank"]
    assert blank.fault == status.MACHINE and "intake failed (AttributeError" in blank.error
    assert status.current(db, gc.NAME)["blank"]["state"] == "ungraded"


def test_the_clusters_processes_import_jsonschema_without_its_iri_grammar():
    import subprocess
    import sys

    code = "import jsonschema, nbformat, sys; print('rfc3987_syntax' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(runner.STAND_INS)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
