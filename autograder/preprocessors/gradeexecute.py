"""``GradeExecute``: nbgrader's execution step, run in a jail and judged by nobody inside it.

It replaces nbgrader's ``Execute`` in ``Autograde.autograde_preprocessors``. For each submission it

1. picks a fresh probe seed and makes a jail (autograder/sandbox.py): a scratch folder where the
   kernel runs, with the files the assignment ships and an empty ``.probes`` folder;
2. starts the kernel with an environment from an allow-list and the student edition of genlab
   on its path (inside bubblewrap where available; as root without it only when
   ``GENLAB_SANDBOX=0`` says so), retrying a kernel that does not start;
3. runs the cells with the manifest's limits: a cell past its timeout is interrupted and fails
   alone; a kernel that dies (an exit, a segfault, the memory limit) or stops answering ends the
   run, and the cells after it are marked as not run; outputs are capped in bytes;
4. reads what the probes of its test cells wrote (regular files only, each and all of them
   size-capped, never following a link; other files in the folder are not read) into
   ``resources["genlab_probe"]`` for :class:`~autograder.preprocessors.verifyprobes.VerifyProbes`,
   and removes the jail.

A kernel that never starts is a grading failure, not a grade: the submission is recorded as
ungraded (autograder.status) and the step raises, so nbgrader reports the failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import sys
import threading
import time
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, Unicode

from autograder import manifest, notebooks, probing, release, sandbox, status
from autograder.preprocessors.verifyprobes import PROBE_CALL

PROBES = ".probes"
SANDBOX_ENV = "GENLAB_SANDBOX"


class GradingFailure(RuntimeError):
    """The grader could not grade this submission (not the submission's fault)."""


def _content_bytes(value: Any) -> int:
    """Size of a message's content without serialising it."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _content_bytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_content_bytes(v) for v in value)
    return 8


def _error(ename: str, evalue: str) -> NotebookNode:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _warm_up_verifier() -> None:
    """Import what verification needs while the kernel runs (torch's optimizers pull in torch._dynamo)."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


class GradeExecute(Execute):
    """Execute a submission in its jail and collect what its probes recorded."""

    sandbox = Unicode(
        "auto",
        help="'auto': bubblewrap where available (refusing to run as root without it unless "
        "GENLAB_SANDBOX=0); 'off': run kernels unsandboxed",
    ).tag(config=True)
    max_output_bytes = Integer(4 * 2**20, help="Cap on the bytes of all outputs of one notebook").tag(config=True)
    start_attempts = Integer(3, help="Kernel starts tried before the submission is reported ungraded").tag(config=True)
    store_widget_state = Bool(False)  # widget state of a grading run is useless and unbounded
    # After a timed-out cell is interrupted, the kernel has this long to report that it stopped before
    # it counts as stuck (and the rest of the submission is not run): a margin over nbclient's 4 s for
    # a busy machine; a kernel that stops reports at once, so it costs nothing then.
    iopub_timeout = Integer(10).tag(config=True)

    def _sandboxed(self) -> bool:
        if self.sandbox == "off" or os.environ.get(SANDBOX_ENV) == "0":
            return False
        if sandbox.available():
            return True
        if os.geteuid() == 0:
            raise GradingFailure(
                "refusing to run student code as root without the sandbox: install bubblewrap "
                "(Debian package `bubblewrap`) or, knowing what it means, set GENLAB_SANDBOX=0"
            )
        self.log.warning("bubblewrap is not available: kernels run unsandboxed as %s", os.getuid())
        return False

    def _limits(self, m: manifest.Manifest | None) -> sandbox.Limits:
        if m is None:
            return sandbox.Limits()
        return sandbox.Limits(memory_mb=m.memory_limit_mb, cpu_s=2 * m.time_limit_s, disk_mb=m.disk_limit_mb)

    def _kernel_env(self, jail: sandbox.Jail, seed: int, site: Path) -> dict[str, str]:
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": "/tmp" if jail.sandboxed else str(jail.scratch),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(site),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MPLCONFIGDIR": "/tmp/matplotlib" if jail.sandboxed else str(jail.scratch / ".matplotlib"),
            "NBGRADER_EXECUTION": "autograde",
            probing.PROBE_DIR_ENV: str(jail.scratch / PROBES),
            probing.PROBE_SEED_ENV: str(seed),
        }
        env.update({k: os.environ[k] for k in sandbox.PASSED_ENV if k in os.environ})
        data = _data_root()
        if data is not None:
            env["GENLAB_DATA"] = str(data)
        return env

    def _prepare(self, jail: sandbox.Jail, resources: dict) -> None:
        """Copy in the assignment's own files; a student's extra files are not used (the notebook is graded)."""
        given = Path(resources["metadata"]["path"])  # <course>/autograded/<student>/<assignment>
        source = given.parents[1].parent / "source" / given.name
        for path in sorted(source.iterdir()) if source.is_dir() else []:
            if path.suffix == ".ipynb" or not path.is_file() or path.is_symlink():
                continue
            shutil.copyfile(path, jail.scratch / path.name, follow_symlinks=False)
            jail.give(jail.scratch / path.name)
        probes = jail.scratch / PROBES
        probes.mkdir(mode=0o700)
        jail.give(probes)

    def preprocess(self, nb: NotebookNode, resources: dict, km=None):
        assignment = resources.get("nbgrader", {}).get("assignment")
        course = Path(resources["metadata"]["path"]).parents[2]  # <course>/autograded/<student>/<assignment>
        try:
            m = manifest.load(assignment, course) if assignment else None
        except (FileNotFoundError, ValueError):
            m = None
        cell_timeout = m.cell_timeout_s if m is not None else self.timeout
        seed = secrets.randbits(48)
        sandboxed = self._sandboxed()
        site = release.kernel_site()
        warm = threading.Thread(target=_warm_up_verifier, daemon=True)
        warm.start()
        notes: list[str] = []
        status.mark(self, resources, "running", executed=True)
        with sandbox.Jail(self._limits(m), sandboxed=sandboxed) as jail:
            self._prepare(jail, resources)
            env = self._kernel_env(jail, seed, site)
            read_only = [site] + ([Path(env["GENLAB_DATA"])] if "GENLAB_DATA" in env else [])
            path = resources["metadata"]["path"]
            resources["metadata"]["path"] = str(jail.scratch)
            try:
                self._run(nb, resources, jail, env, read_only, m, cell_timeout, notes)
            except GradingFailure as exc:
                resources["metadata"]["path"] = path
                status.mark(self, resources, "ungraded", str(exc))
                raise
            finally:
                resources["metadata"]["path"] = path
            payloads = read_probes(jail.scratch / PROBES, names=recorded_exercises(nb))
        warm.join()
        resources["genlab_probe"] = {"seed": seed, "payloads": payloads, "notes": notes}
        return nb, resources

    def _start(self, jail: sandbox.Jail, env: dict[str, str], read_only: list[Path], stack: ExitStack) -> None:
        self.kernel_manager_class = sandbox.SandboxKernelManager if jail.sandboxed else AsyncKernelManager
        self.km = self.create_kernel_manager()
        if jail.sandboxed:
            self.km.jail, self.km.kernel_env, self.km.read_only = jail, env, read_only
            stack.enter_context(self.setup_kernel())
        else:
            stack.enter_context(self.setup_kernel(env=env))
        info = self.wait_for_reply(self.kc.kernel_info())
        self.nb.metadata["language_info"] = info["content"]["language_info"]

    def _run(self, nb, resources, jail, env, read_only, m, cell_timeout: int, notes: list[str]) -> None:
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, None)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._output_bytes, self._cut = 0, False
        last: Exception | None = None
        for attempt in range(self.start_attempts):
            stack = ExitStack()
            try:
                self._start(jail, env, read_only, stack)
            except Exception as exc:  # any failure to start is the grader's, not the student's
                stack.close()
                if self.km is not None:
                    try:
                        self._cleanup_kernel()
                    except Exception:  # the half-started kernel dies with the jail anyway
                        pass
                    self.km = None
                last = exc
                self.log.warning("kernel start %d of %d failed: %s", attempt + 1, self.start_attempts, exc)
                time.sleep(1 + attempt)
                continue
            with stack:
                self._cells(nb, resources, jail, m, cell_timeout, notes)
            return
        raise GradingFailure(
            f"the kernel did not start ({type(last).__name__}: {last}); the submission was left "
            "ungraded, grade it again later"
        )

    def _cells(self, nb, resources, jail, m, cell_timeout: int, notes: list[str]) -> None:
        deadline = time.monotonic() + (m.time_limit_s if m else 3600)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self._stop(nb, index, f"the submission's time limit ({m.time_limit_s} s) was reached before this cell")
                notes.append("time limit reached")
                return
            self.timeout = max(1, int(min(cell_timeout, left)))
            oom_before = jail.cgroup is not None and jail.cgroup.out_of_memory()
            try:
                self.preprocess_cell(cell, resources, index)
            except (DeadKernelError, CellTimeoutError) as exc:
                oom = jail.cgroup is not None and jail.cgroup.out_of_memory()
                if oom:
                    why = f"the kernel was stopped for using more than {jail.limits.memory_mb} MB of memory"
                elif isinstance(exc, CellTimeoutError):
                    why = f"the kernel did not stop when interrupted after {self.timeout} s"
                else:
                    why = "the kernel died while running this cell (an exit, a crash or a resource limit)"
                cell.outputs.append(_error("KernelDied", why))
                self._stop(nb, index + 1, f"not run: {why} in an earlier cell")
                notes.append(why)
                return
            if not oom_before and jail.cgroup is not None and jail.cgroup.out_of_memory():
                # The kernel lived on (a child process was killed, or the cell was interrupted later):
                # say why, without changing the cell's score (an error only where there is one already).
                why = f"processes of this cell were stopped for using more than {jail.limits.memory_mb} MB of memory"
                failed = any(o.get("output_type") == "error" for o in cell.outputs)
                cell.outputs.append(
                    _error("MemoryLimit", why) if failed else new_output("stream", name="stdout", text=f"note: {why}\n")
                )
                notes.append(why)

    @staticmethod
    def _stop(nb: NotebookNode, start: int, why: str) -> None:
        """Mark the graded code cells from ``start`` on as not run (so none of them scores)."""
        for cell in nb.cells[start:]:
            if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
                cell.outputs = [_error("NotRun", why)]

    def output(self, outs, msg, display_id, cell_index):
        size = _content_bytes(msg.get("content", {}))
        if self._output_bytes + size > self.max_output_bytes:
            if not self._cut:
                self._cut = True
                outs.append(
                    new_output(
                        "stream",
                        name="stdout",
                        text=(
                            f"\n[output cut: this notebook's outputs passed {self.max_output_bytes // 2**20} MB; "
                            "the rest is not kept]\n"
                        ),
                    )
                )
            return None
        self._output_bytes += size
        return super().output(outs, msg, display_id, cell_index)


def _data_root() -> Path | None:
    from genlab.data import data_root

    root = data_root()
    return root.resolve() if root.is_dir() else None


def recorded_exercises(nb: NotebookNode) -> set[str]:
    """The exercises whose records the notebook's test cells verify (``probe_<x>``/``check_<x>`` calls)."""
    return {
        name.split("_", 1)[1]
        for cell in nb.cells
        if cell.cell_type == "code" and notebooks.meta(cell).get("grade") and not notebooks.meta(cell).get("solution")
        for name in PROBE_CALL.findall(cell.source)
    }


def read_probes(
    folder: Path,
    limit: int = probing.MAX_RECORD_BYTES,
    names: Collection[str] | None = None,
    total: int = probing.MAX_PROBE_BYTES,
) -> dict[str, bytes]:
    """The probes' files as bytes: regular files only, never through a link, each at most ``limit``.

    Only the records of ``names`` are read (when given), and at most ``total`` bytes in all: the
    folder belongs to the submission's uid, which may have filled it with anything. By now no
    process of that uid runs, so nothing changes while it is read.
    """
    found: dict[str, bytes] = {}
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return found
    left = total
    try:
        wanted = sorted(f"{n}.pt" for n in names) if names is not None else sorted(os.listdir(dir_fd))[:200]
        for name in wanted:
            if not name.endswith(".pt") or name.startswith(".") or "/" in name:
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                info = os.fstat(fd)
                if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_size <= min(limit, left):
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        found[name[:-3]] = fh.read(limit + 1)[:limit]
                    left -= len(found[name[:-3]])
            finally:
                os.close(fd)
    finally:
        os.close(dir_fd)
    return found
