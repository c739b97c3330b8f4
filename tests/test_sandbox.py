"""The grading sandbox itself: what a submission's processes can and cannot do inside its jail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from autograder import release, sandbox
from autograder.course import ROOT
from autograder.preprocessors.gradeexecute import GradeExecute, GradingFailure

needs_sandbox = pytest.mark.skipif(
    not sandbox.available(), reason="needs root and bubblewrap (Debian package `bubblewrap`)"
)


def run_jailed(script: str, limits: sandbox.Limits | None = None, env: dict | None = None) -> tuple[int, dict, bool]:
    """Run a Python script in a fresh jail as a kernel would; return its exit code, the JSON it printed last,
    and whether the jail's memory limit stopped a process."""
    site = release.kernel_site()
    with sandbox.Jail(limits or sandbox.Limits(), sandboxed=True) as jail:
        kernel_env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(site), **(env or {})}
        cmd = sandbox.bwrap_command(
            [sys.executable, "-c", textwrap.dedent(script)], jail=jail, env=kernel_env, read_only=[site]
        )
        procs = " ".join(jail.cgroup.procs_files) if jail.cgroup else ""
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "GENLAB_CGROUP_PROCS": procs}
        )
        lines = proc.stdout.strip().splitlines()
        out = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"stderr": proc.stderr}
        return proc.returncode, out, bool(jail.cgroup and jail.cgroup.out_of_memory())


@needs_sandbox
def test_a_jail_sees_little_and_writes_only_its_scratch():
    secret = ROOT / "gradebook.db"
    code, out, _ = run_jailed(f"""
        import json, os, socket
        out = {{"uid": os.getuid(), "cwd": os.getcwd(), "env": sorted(os.environ)}}
        try:
            socket.create_connection(("127.0.0.1", 22), timeout=2); out["net"] = "open"
        except OSError:
            out["net"] = "closed"
        out["visible"] = {{p: os.path.exists(p) for p in [{str(ROOT)!r}, {str(ROOT / "src")!r}, {str(secret)!r},
                           "/root/.bash_history", "/etc/shadow", "/usr/bin/python3", {str(sys.prefix)!r}]}}
        writes = {{}}
        for target in ["/usr/x", "/etc/x", os.path.join(os.getcwd(), "mine.txt"), "/tmp/mine.txt"]:
            try:
                open(target, "w").write("x"); writes[target] = True
            except OSError:
                writes[target] = False
        out["writes"] = writes
        import genlab.losses
        out["genlab"] = genlab.losses.__file__
        print(json.dumps(out))
    """)
    assert code == 0, out
    assert out["uid"] >= sandbox.UID_BASE and out["net"] == "closed"
    assert set(out["env"]) - {"LC_CTYPE", "PWD"} == {"HOME", "PATH", "PYTHONPATH"}  # nothing of the grader's
    visible = out["visible"]
    assert not visible[str(ROOT / "src")] and not visible[str(ROOT / "gradebook.db")]
    assert not visible["/root/.bash_history"] and visible["/usr/bin/python3"] and visible[sys.prefix]
    writes = out["writes"]
    assert writes == {
        "/usr/x": False,
        "/etc/x": False,
        os.path.join(out["cwd"], "mine.txt"): True,
        "/tmp/mine.txt": True,
    }
    assert out["genlab"].startswith(str(release.kernel_site()))


@needs_sandbox
def test_limits_hold_for_the_submission_as_a_whole():
    limits = sandbox.Limits(memory_mb=400, processes=40, disk_mb=32)
    code, out, oom = run_jailed(
        """
        import json, os, subprocess, time
        out = {}
        procs = []
        try:
            for _ in range(200):
                procs.append(subprocess.Popen(["sleep", "30"]))
        except OSError:
            pass
        out["processes"] = len(procs)
        for p in procs:
            p.kill()
            p.wait()
        try:
            with open("fill.bin", "wb") as fh:
                for _ in range(100):
                    fh.write(b"x" * 2**20)
            out["disk"] = "filled"
        except OSError:
            out["disk"] = "full"
        os.remove("fill.bin")
        children = []
        for _ in range(4):  # each below the limit, together past it
            pid = os.fork()
            if pid == 0:
                block = bytearray(150 * 2**20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        out["children"] = [os.waitpid(pid, 0)[1] for pid in children]
        print(json.dumps(out))
    """,
        limits,
    )
    assert code == 0, out
    assert out["processes"] < 40 and out["disk"] == "full"
    assert oom and any(status == 9 for status in out["children"]), out  # SIGKILLed by the memory cgroup


def test_grading_refuses_root_without_the_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "missing", lambda: "bubblewrap is not installed")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("GENLAB_SANDBOX", raising=False)
    with pytest.raises(GradingFailure, match="bubblewrap"):
        GradeExecute()._sandboxed()
    monkeypatch.setenv("GENLAB_SANDBOX", "0")  # the instructor's explicit choice
    assert GradeExecute()._sandboxed() is False


@needs_sandbox
@pytest.mark.parametrize("sigint_blocked", [False, True], ids=["plain", "sigint-blocked-by-the-caller"])
def test_a_timed_out_cell_is_interrupted_and_fails_alone(tmp_path, sigint_blocked):
    """Also when the grader runs in a thread that blocks SIGINT, as a Ray task's threads do."""
    if sigint_blocked:
        outcome: list[BaseException] = []

        def run() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                _interrupt_a_timed_out_cell()
            except BaseException as err:
                outcome.append(err)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if outcome:
            raise outcome[0]
    else:
        _interrupt_a_timed_out_cell()


def _interrupt_a_timed_out_cell() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(60)"), nbformat.v4.new_code_cell("print('after')")]
    site = release.kernel_site()
    with sandbox.Jail(sandbox.Limits(), sandboxed=True) as jail:
        client = NotebookClient(
            nb,
            kernel_manager_class=sandbox.SandboxKernelManager,
            timeout=5,
            allow_errors=True,
            interrupt_on_timeout=True,
            resources={"metadata": {"path": str(jail.scratch)}},
        )
        client.km = client.create_kernel_manager()
        client.km.jail = jail
        client.km.kernel_env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": "/tmp",
            "PYTHONPATH": str(site),
        }
        client.km.read_only = [site]
        client.execute()
    assert nb.cells[0].outputs[-1].ename == "KeyboardInterrupt"
    assert nb.cells[1].outputs[0].text == "after\n"


# ----------------------------------------------------------------------------- the kernel's connection folder


def _run_in_sandboxed_kernel(cells: list[str], limits: sandbox.Limits | None = None) -> nbformat.NotebookNode:
    """Execute ``cells`` in a sandboxed kernel (as GradeExecute starts it); the executed notebook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    site = release.kernel_site()
    with sandbox.Jail(limits or sandbox.Limits(), sandboxed=True) as jail:
        client = NotebookClient(
            nb,
            kernel_manager_class=sandbox.SandboxKernelManager,
            timeout=60,
            allow_errors=True,
            resources={"metadata": {"path": str(jail.scratch)}},
        )
        client.km = client.create_kernel_manager()
        client.km.jail = jail
        client.km.kernel_env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": "/tmp",
            "PYTHONPATH": str(site),
        }
        client.km.read_only = [site]
        client.execute()
    return nb


CONNECTION_ATTACKS = """
import json, os, socket, subprocess
from ipykernel import get_connection_file
out = {}
info_path = get_connection_file()
folder = os.path.dirname(info_path)
info = json.load(open(info_path))
run = os.path.dirname(info["ip"])
def attempt(name, action):
    try:
        action()
        out[name] = "done"
    except OSError as exc:
        out[name] = type(exc).__name__
attempt("write connection file", lambda: open(info_path, "a").write("x"))
attempt("create beside it", lambda: open(os.path.join(folder, "x"), "w"))
attempt("create in run/", lambda: open(os.path.join(run, "x"), "w"))
attempt("chmod run/", lambda: os.chmod(run, 0o777))
attempt("rename run/", lambda: os.rename(run, run + "2"))
for name in sorted(os.listdir(run)):
    attempt("unlink " + name, lambda: os.unlink(os.path.join(run, name)))
def rebind():
    s = socket.socket(socket.AF_UNIX)
    s.bind(info["ip"] + "-" + str(info["shell_port"]))
attempt("bind over the shell socket", rebind)
r = subprocess.run(["unshare", "-Ur", "true"], capture_output=True)
out["unshare -Ur"] = r.returncode
written = 0
for target in ("/tmp/fill.bin", "fill.bin"):
    try:
        with open(target, "wb") as fh:
            for _ in range(64):
                fh.write(b"x" * 2**20)
                written += 1
    except OSError:
        pass
out["MB written"] = written
print(json.dumps(out))
"""


@needs_sandbox
def test_the_kernel_can_neither_replace_its_sockets_nor_write_past_its_disk_limit():
    nb = _run_in_sandboxed_kernel([CONNECTION_ATTACKS, "print('still answering')"], sandbox.Limits(disk_mb=48))
    out = json.loads(nb.cells[0].outputs[-1].text)
    assert {k: v for k, v in out.items() if k not in ("unshare -Ur", "MB written")} == {
        k: "PermissionError" for k in out if k not in ("unshare -Ur", "MB written", "bind over the shell socket")
    } | {"bind over the shell socket": "OSError"}, out
    assert out["unshare -Ur"] != 0, "a user namespace was created inside the sandbox"
    assert out["MB written"] <= 48, f"{out['MB written']} MB written against a 48 MB disk limit (/tmp and the scratch)"
    assert nb.cells[1].outputs[0].text == "still answering\n"


@needs_sandbox
def test_the_grader_refuses_a_socket_folder_it_did_not_expect():
    with sandbox.Jail(sandbox.Limits(), sandboxed=True) as jail:
        (jail.run / "kernel-1").write_text("not a socket")
        with pytest.raises(RuntimeError, match="unexpected entry"):
            jail.lock_sockets([jail.run / "kernel-1"])
        assert os.stat(jail.run).st_uid == 0, "the folder is the grader's even so"


@needs_sandbox
def test_user_namespaces_are_refused_but_processes_and_threads_work():
    code, out, _ = run_jailed("""
        import ctypes, json, os, subprocess, threading
        libc = ctypes.CDLL(None, use_errno=True)
        out = {"unshare": libc.unshare(0x10000000), "errno": ctypes.get_errno()}
        thread = threading.Thread(target=lambda: out.setdefault("thread", True))
        thread.start(); thread.join()
        out["subprocess"] = subprocess.run(["echo", "ok"], capture_output=True, text=True).stdout.strip()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitpid(pid, 0)[1] >> 8
        print(json.dumps(out))
    """)
    assert code == 0, out
    assert out == {"unshare": -1, "errno": 1, "thread": True, "subprocess": "ok", "fork": 7}
