"""``GradeExecute``: nbgrader's execution step, run in a jail and judged by nobody inside it.

It replaces nbgrader's ``Execute`` in ``Autograde.autograde_preprocessors``. For each submission it

1. picks a fresh probe seed and makes a jail (autograder/sandbox.py): a scratch folder where the
   kernel runs, with the files the assignment ships and an empty ``.probes`` folder;
2. starts the kernel with an environment from an allow-list, the grading profile pinned
   (``GENLAB_PROFILE`` of the grader's shell never reaches it) and the student edition of genlab
   on its path, inside bubblewrap; without a usable sandbox (autograder/sandbox.py) it refuses
   to run student code unless ``GENLAB_SANDBOX=0`` says so; a kernel that does not start is
   retried;
3. runs the cells with the manifest's limits: a cell past its timeout is interrupted and fails
   alone; a kernel that dies (an exit, a crash, the memory or CPU limit) or stops answering in
   the student's own code (an answer cell, a test of it, a cell the student added) ends the run,
   and the cells after it are marked as not run, with the limit or signal that ended it; a kernel
   that dies in code the course gave (a given or training cell) is the course's fault, not a
   grade: the submission is left ungraded with the cause, and its task grades it once more; a
   message the grader cannot read (a bad signature, broken or too deep JSON) fails its cell and
   the run goes on; outputs are capped in bytes at the manifest's ``output_limit_mb`` (a display
   updated in place counts for every output it replaces), widget messages are ignored, and an
   output nbgrader could not store (too deep, not UTF-8, an invalid payload) becomes a one-line note;
4. reads what the probes of its test cells wrote (regular files only, each and all of them
   size-capped, never following a link; other files in the folder are not read) into
   ``resources["genlab_probe"]`` for :class:`~autograder.preprocessors.verifyprobes.VerifyProbes`,
   and removes the jail.

A kernel that never starts is a grading failure, not a grade: the submission is recorded as
ungraded (autograder.status) and the step raises, so nbgrader reports the failure. What the
kernel used (its peak memory, its CPU seconds) and whether it ran sandboxed go with the record.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
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
from nbformat import NotebookNode, ValidationError
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, Unicode

from autograder import manifest, notebooks, outputcap, probing, release, sandbox, status
from autograder.preprocessors.verifyprobes import PROBE_CALL
from autograder.sandbox import Jail, Limits

PROBES = ".probes"
SANDBOX_ENV = sandbox.OFF_ENV


class GradingFailure(RuntimeError):
    """The grader could not grade this submission (not the submission's fault)."""

    fault = status.MACHINE


class GivenCodeDied(GradingFailure):
    """The kernel died, or ran past its limit, in a cell the course gave: the course's fault, not a grade."""

    fault = status.GIVEN_CODE


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
    max_output_bytes = Integer(
        8 * 2**20, help="Cap on the bytes of all outputs of one notebook, where no manifest sets output_limit_mb"
    ).tag(config=True)
    start_attempts = Integer(3, help="Kernel starts tried before the submission is reported ungraded").tag(config=True)
    store_widget_state = Bool(False)  # widget state of a grading run is useless and unbounded
    # After a timed-out cell is interrupted, the kernel has this long to report that it stopped before
    # it counts as stuck (and the rest of the submission is not run): a margin over nbclient's 4 s for
    # a busy machine; a kernel that stops reports at once, so it costs nothing then.
    iopub_timeout = Integer(10).tag(config=True)

    profile = Unicode(
        "smoke",
        help="GENLAB_PROFILE of every grading kernel (with NBGRADER_EXECUTION set, chapters pick their grading "
        "values): the grader's own shell never decides what a submission is graded with",
    ).tag(config=True)

    def _sandboxed(self) -> bool:
        """Whether kernels run in the sandbox; refuse to grade when it is missing and nobody said to go without."""
        if self.sandbox == "off" or os.environ.get(SANDBOX_ENV) == "0":
            return False
        why = sandbox.missing()
        if why:
            raise GradingFailure(sandbox.refusal(why))
        return True

    def _limits(self, m: manifest.Manifest | None) -> Limits:
        if m is None:
            return sandbox.Limits()
        return sandbox.Limits(memory_mb=m.memory_limit_mb, cpu_s=2 * m.time_limit_s, disk_mb=m.disk_limit_mb)

    def _kernel_env(self, jail: Jail, seed: int, site: Path) -> dict[str, str]:
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
        env["GENLAB_PROFILE"] = self.profile
        data = _data_root()
        if data is not None:
            env["GENLAB_DATA"] = str(data)
        return env

    def _prepare(self, jail: Jail, resources: dict) -> None:
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
        self._given = given_sources(course, assignment, m.notebook if m is not None else None)
        warm = threading.Thread(target=_warm_up_verifier, daemon=True)
        warm.start()
        notes: list[str] = []
        status.mark(self, resources, "running", executed=True)
        try:
            sandboxed = self._sandboxed()
            site = release.kernel_site()
            self._usage: dict[str, float | None] = {"peak_mb": None, "cpu_s": None}
            try:
                with sandbox.Jail(self._limits(m), sandboxed=sandboxed) as jail:
                    self._prepare(jail, resources)
                    env = self._kernel_env(jail, seed, site)
                    read_only = [site] + ([Path(env["GENLAB_DATA"])] if "GENLAB_DATA" in env else [])
                    path = resources["metadata"]["path"]
                    resources["metadata"]["path"] = str(jail.scratch)
                    try:
                        self._run(nb, resources, jail, env, read_only, m, cell_timeout, notes)
                    finally:
                        resources["metadata"]["path"] = path
                        if jail.cgroup is not None:
                            self._usage["peak_mb"] = jail.cgroup.peak_mb()
                    payloads = read_probes(jail.scratch / PROBES, names=recorded_exercises(nb))
            finally:
                resources["genlab_usage"] = {"sandboxed": sandboxed, **self._usage}
        except GradingFailure as exc:
            status.mark(self, resources, "ungraded", str(exc), fault=exc.fault)
            raise
        warm.join()
        resources["genlab_probe"] = {"seed": seed, "payloads": payloads, "notes": notes}
        return nb, resources

    def _start(self, jail: Jail, env: dict[str, str], read_only: list[Path], stack: ExitStack) -> None:
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
        self._output_cap = m.output_limit_mb * 2**20 if m is not None else None
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
            self._cell_timed_out = False
            try:
                self.preprocess_cell(cell, resources, index)
                self._measure(jail)
            except (DeadKernelError, CellTimeoutError) as exc:
                why = self._death_cause(jail, exc)
                if self._is_given(cell):
                    raise GivenCodeDied(
                        f"the kernel died in the course's given cell {_cell_name(cell, index)}: {why}. Not the "
                        "student's code: graded again once, then left ungraded for the course to fix"
                    ) from None
                cell.outputs.append(_error("KernelDied", f"the kernel died while running this cell: {why}"))
                self._stop(nb, index + 1, f"not run: the kernel died in an earlier cell: {why}")
                notes.append(why)
                return
            except Exception as exc:  # a message nobody can read: the notebook is graded on
                self._unreadable(cell, exc, notes)
                continue
            if self._cell_timed_out and self._is_given(cell):
                raise GivenCodeDied(
                    f"the course's given cell {_cell_name(cell, index)} ran past its time limit of {self.timeout} s "
                    "and was interrupted: graded again once, then left ungraded for the course to fix"
                )
            if not oom_before and jail.cgroup is not None and jail.cgroup.out_of_memory():
                # The kernel lived on (a child process was killed, or the cell was interrupted later):
                # say why, without changing the cell's score (an error only where there is one already).
                why = f"processes of this cell were stopped for using more than {jail.limits.memory_mb} MB of memory"
                failed = any(o.get("output_type") == "error" for o in cell.outputs)
                cell.outputs.append(
                    _error("MemoryLimit", why) if failed else new_output("stream", name="stdout", text=f"note: {why}\n")
                )
                notes.append(why)

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None):
        self._cell_timed_out = True  # a given cell cut short leaves the cells after it without what they need
        return await super()._async_handle_timeout(timeout, cell)

    def _measure(self, jail: Jail) -> None:
        """Note the CPU seconds the kernel has used so far (and its peak memory where no cgroup keeps it)."""
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        pids = jail.cgroup.pids() if jail.cgroup is not None and jail.cgroup.folders else set()
        if process is not None:
            pids.add(process.pid)
        cpu, rss = processes_usage(pids)
        self._usage["cpu_s"] = max(cpu, self._usage["cpu_s"] or 0.0)
        if jail.cgroup is None or not jail.cgroup.folders:
            self._usage["peak_mb"] = max(rss, self._usage["peak_mb"] or 0.0)

    def _is_given(self, cell: NotebookNode) -> bool:
        """Whether ``cell`` is code the course gave, not the student's (see :func:`given_sources`)."""
        meta = notebooks.meta(cell)
        if meta.get("solution") or meta.get("grade"):
            return False  # an answer, or a test that runs the student's answer
        return bool(meta.get("locked")) or cell.source.strip() in self._given

    def _death_cause(self, jail: Jail, exc: Exception) -> str:
        """Which limit or signal ended the kernel, in words for the feedback and the grade table."""
        if jail.cgroup is not None and jail.cgroup.out_of_memory():
            peak = jail.cgroup.peak_mb()
            return f"the memory limit of {jail.limits.memory_mb} MB was hit" + (
                f" (peak {peak:.0f} MB)" if peak is not None else ""
            )
        if isinstance(exc, CellTimeoutError):
            return f"it did not stop when interrupted after the cell's time limit of {self.timeout} s"
        code = self._kernel_exit_status()
        if code is None:
            return "it stopped answering (an exit, a crash or a resource limit)"
        signo = -code if code < 0 else code - 128 if jail.sandboxed and code > 128 else 0
        if signo == signal.SIGXCPU:
            return f"the CPU time limit of {jail.limits.cpu_s} s was used up (SIGXCPU)"
        if signo:
            try:
                name = signal.Signals(signo).name
            except ValueError:
                name = f"signal {signo}"
            return f"it was killed by {name}" + (f" ({_SIGNAL_WORDS[name]})" if name in _SIGNAL_WORDS else "")
        return f"it exited with status {code}"

    def _kernel_exit_status(self) -> int | None:
        """The exit status of the kernel's process (bubblewrap's, in the sandbox), once it has ended."""
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        for _ in range(20):  # a process that just died may not be reaped yet
            code = process.poll() if process is not None else None
            if code is not None:
                return code
            time.sleep(0.1)
        return None

    @staticmethod
    def _stop(nb: NotebookNode, start: int, why: str) -> None:
        """Mark the graded code cells from ``start`` on as not run (so none of them scores)."""
        for cell in nb.cells[start:]:
            if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
                cell.outputs = [_error("NotRun", why)]

    # ---------------------------------------------------------------- outputs: capped and storable
    _output_cap: int | None = None  # the manifest's output_limit_mb in bytes, for this notebook

    def _room(self, grow: int) -> bool:
        """Whether ``grow`` more bytes of output fit under this notebook's cap (counting them if they do)."""
        if self._output_bytes + grow > (self._output_cap or self.max_output_bytes):
            return False
        self._output_bytes += grow
        return True

    def _cut_note(self) -> str:
        cap = (self._output_cap or self.max_output_bytes) / 2**20
        return f"output cut: this notebook's outputs passed the {cap:g} MB it may keep; the rest is not kept"

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if not self._room(_content_bytes(content) + outputcap.OVERHEAD):
            if not self._cut:
                self._cut = True
                outs.append(outputcap.note(self._cut_note()))
            return None
        why = outputcap.unstorable(content)
        if why is None:
            before = len(outs)
            try:
                out = super().output(outs, msg, display_id, cell_index)
            except ValidationError:  # nbclient drops some invalid outputs without a word, and raises on others
                out = None
            if out is not None or len(outs) != before or msg.get("msg_type") not in _OUTPUT_TYPES:
                return out
            why = f"it is not a valid {msg.get('msg_type')} output"
        if msg.get("msg_type") == "error":  # a failure stays a failure
            outs.append(_error("UnreadableError", f"the kernel reported an error the grader cannot store ({why})"))
        else:
            outs.append(outputcap.note(f"an output the grader cannot store was dropped: {why}"))
        return None

    def _update_display_id(self, display_id, msg):
        """A display updated in place: counted for every output it replaces, and stored only where it can be."""
        places = [
            self.nb.cells[cell_index].outputs[i]
            for cell_index, indices in self._display_id_map.get(display_id, {}).items()
            for i in indices
            if i < len(self.nb.cells[cell_index].outputs)
        ]
        content = msg.get("content", {})
        new = _content_bytes(content.get("data", {})) + _content_bytes(content.get("metadata", {}))
        old = sum(_content_bytes(o.get("data", {})) + _content_bytes(o.get("metadata", {})) for o in places)
        why = outputcap.unstorable(content)
        if why is None and not self._room(new * len(places) - old):
            why = self._cut_note()
        if why is None:
            try:
                return super()._update_display_id(display_id, msg)
            except ValidationError:
                why = "it is not a valid display"
        text = f"[display not updated: {why}]"
        super()._update_display_id(
            display_id, {**msg, "content": {**content, "data": {"text/plain": text}, "metadata": {}}}
        )

    def handle_comm_msg(self, outs, msg, cell_index):
        """Widget messages are ignored: their state is neither graded nor shown, and it has no cap."""

    # ---------------------------------------------------------------- messages that cannot be read
    def _unreadable(self, cell: NotebookNode, exc: Exception, notes: list[str]) -> None:
        """A kernel message the grader could not read (a bad signature, broken or too deep JSON): the cell fails."""
        why = f"the kernel sent a message the grader could not read ({type(exc).__name__}: {str(exc)[:200]})"
        cell.outputs.append(_error("UnreadableMessage", f"{why}; this cell counts as failed"))
        notes.append(why)
        self.log.warning("cell %s: %s", cell.get("id"), why)


_OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")


_SIGNAL_WORDS = {
    "SIGSEGV": "a crash",
    "SIGABRT": "an abort, such as a failed check inside a library",
    "SIGBUS": "a crash",
    "SIGFPE": "an arithmetic fault",
    "SIGILL": "an instruction this processor does not have",
    "SIGKILL": "killed from outside: a limit or another process",
}


def _cell_name(cell: NotebookNode, index: int) -> str:
    gid = notebooks.meta(cell).get("grade_id")
    return f"`{gid}` (cell {index})" if gid else f"{index} (`{cell.source.strip().splitlines()[0][:60]}`)"


def given_sources(course: Path, assignment: str | None, notebook: str | None) -> set[str]:
    """The sources of the code cells that the release gives students, from ``<course>/release/``.

    A cell of the submission whose source is one of these (stripped) is the course's code, and
    so is a locked cell; answer cells, test cells and anything else the student wrote are theirs.
    """
    if not assignment or not notebook:
        return set()
    try:
        released = notebooks.read(course / "release" / assignment / notebook)
    except (OSError, ValueError):
        return set()
    return {
        c.source.strip()
        for c in released.cells
        if c.cell_type == "code" and c.source.strip() and not notebooks.meta(c).get("solution")
    }


def processes_usage(pids: set[int]) -> tuple[float, float]:
    """(CPU seconds, with those of their ended children; largest resident size in MB) of the processes ``pids``."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu, rss = 0.0, 0.0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # it has ended
            continue
        fields = text[text.rindex(")") + 2 :].split()
        cpu += sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
        rss = max(rss, int(fields[21]) * page / 2**20)
    return round(cpu, 2), rss


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
