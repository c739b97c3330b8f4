"""Security suite: what a submission's kernel can and cannot do inside the grading sandbox."""
from __future__ import annotations

import os
import textwrap

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from autograder import sandbox
from autograder.course import ROOT

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="needs root and bubblewrap (Debian package `bubblewrap`)")


def run_in_sandbox(folder, *sources: str) -> list[str]:
    """Execute cells in a sandboxed kernel whose submission folder is ``folder``; return their stdout."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(s)) for s in sources]
    client = NotebookClient(nb, kernel_manager_class=sandbox.SandboxKernelManager, timeout=120,
                            resources={"metadata": {"path": str(folder)}})
    client.execute()
    return ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells]


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "submitted" / "student" / "ae_to_cvae"
    path.mkdir(parents=True)
    return path


def test_kernel_is_confined(folder):
    out = run_in_sandbox(
        folder,
        "import os; print(os.getuid())",
        """
        import socket
        try:
            socket.create_connection(("127.0.0.1", 22), timeout=2)
            print("network open")
        except OSError:
            print("no network")
        """,
        f"""
        import os
        print(sorted(os.listdir({str(ROOT)!r})))
        """,
        f"""
        for target in [{str(ROOT / 'src' / 'x.py')!r}, "/etc/x", {str(folder.parent / 'x')!r}]:
            try:
                open(target, "w")
                print("wrote", target)
            except OSError:
                print("refused")
        open("answer.txt", "w").write("mine")
        print(open("answer.txt").read())
        """,
        "import genlab, autograder.checks; print('imports ok')",
    )
    assert out[0].strip() == "65534"
    assert out[1].strip() == "no network"
    visible = eval(out[2])
    assert "src" in visible and "autograder" in visible
    for hidden in ("source", "gradebook.db", ".git", "submitted", "autograded", "release"):
        assert hidden not in visible, f"{hidden} is visible to submissions"
    assert out[3].split() == ["refused", "refused", "refused", "mine"]
    assert out[4].strip() == "imports ok"


def test_memory_and_process_limits(folder):
    out = run_in_sandbox(
        folder,
        """
        try:
            block = bytearray(64 * 2**30)
            print("allocated")
        except MemoryError:
            print("memory refused")
        """,
        """
        import resource
        print(resource.getrlimit(resource.RLIMIT_NPROC)[0], resource.getrlimit(resource.RLIMIT_CPU)[0])
        """,
    )
    assert out[0].strip() == "memory refused"
    nproc, cpu = map(int, out[1].split())
    assert 0 < nproc <= 4096 and 0 < cpu < 10**6


def test_other_files_of_the_host_stay_hidden(folder, tmp_path):
    secret = tmp_path / "other-student.txt"
    secret.write_text("their answer")
    with pytest.raises(CellExecutionError, match="FileNotFoundError"):
        run_in_sandbox(folder, f"open({str(secret)!r}).read()")
    assert os.stat(folder).st_uid == sandbox.NOBODY
