"""A sandboxed kernel for grading: each submission's code runs under bubblewrap.

Inside the sandbox the kernel has no network, sees the file system read-only, can write only
its own submission folder and a private /tmp, cannot see the course's source notebooks, other
submissions, the gradebook or the git history, runs as ``nobody`` and under resource limits
(CPU time, memory, processes, file size). Because it has its own network namespace, the kernel
talks to nbgrader over IPC sockets in a folder both sides can reach.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from autograder import manifest

COURSE_ROOT = manifest.ROOT
NOBODY = 65534
# What a kernel needs from the course folder; everything else in it is hidden.
VISIBLE_IN_COURSE = ("src", "autograder", ".venv", "pyproject.toml", "data")


def available() -> bool:
    """True when bubblewrap and util-linux's setpriv and prlimit are installed and we are root."""
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("bwrap", "setpriv", "prlimit"))


def limits_for(cwd: Path) -> dict[str, int]:
    """Resource limits for the assignment whose submission folder is ``cwd``."""
    try:
        m = manifest.load(cwd.name)
        time_s, memory_mb = m.time_limit_s, m.memory_limit_mb
    except (FileNotFoundError, ValueError):
        time_s, memory_mb = 600, 6144
    return {
        # CPU seconds across threads: a 2-core machine spends up to twice the wall time.
        "cpu": 2 * time_s,
        "data": memory_mb * 2**20,
        "nproc": 1024,  # counts threads of every sandbox sharing the uid `nobody`
        "fsize": 256 * 2**20,
        "nofile": 1024,
    }


class _Mounts:
    """bwrap arguments for tmpfs mounts with selected paths bound back into them."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.tmpfs: list[Path] = []

    def hide(self, path: Path, perms: str = "0755") -> None:
        self.args += ["--perms", perms, "--tmpfs", str(path)]
        self.tmpfs.append(path)

    def bind(self, path: Path, *, writable: bool = False) -> None:
        # bwrap creates missing folders leading to a bind point as 0700, which nobody cannot cross.
        for top in self.tmpfs:
            if path.is_relative_to(top) and path != top:
                for parent in reversed(path.relative_to(top).parents[:-1]):
                    self.args += ["--perms", "0755", "--dir", str(top / parent)]
        self.args += ["--bind" if writable else "--ro-bind", str(path), str(path)]


def bwrap_command(cmd: list[str], *, cwd: Path, sockets: Path, limits: dict[str, int]) -> list[str]:
    """Wrap a kernel command line in bubblewrap, setpriv and prlimit."""
    m = _Mounts()
    m.args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for dev in sorted(glob.glob("/dev/nvidia*")):  # GPU runners: keep the devices
        m.args += ["--dev-bind", dev, dev]
    m.hide(Path("/tmp"), perms="1777")
    home = Path.home()
    if home != Path("/") and not COURSE_ROOT.is_relative_to(home):
        m.hide(home)
        for p in {sys.base_prefix, sys.prefix, os.environ.get("GENLAB_DATA", "")}:
            if p and Path(p).is_relative_to(home):
                m.bind(Path(p))
    m.hide(COURSE_ROOT)
    for name in VISIBLE_IN_COURSE:
        if (COURSE_ROOT / name).exists():
            m.bind(COURSE_ROOT / name)
    m.bind(cwd, writable=True)
    m.bind(sockets, writable=True)
    return [
        "bwrap", *m.args,
        "--chdir", str(cwd),
        "--setenv", "HOME", "/tmp",
        # In its own pid namespace the kernel would take its parent for dead; bwrap ends it with us.
        "--unsetenv", "JPY_PARENT_PID",
        "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib",
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session",
        "--cap-add", "CAP_SETUID,CAP_SETGID",
        "--",
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all",
        "prlimit", *(f"--{name}={value}" for name, value in limits.items()), "--",
        *cmd,
    ]


class SandboxKernelManager(AsyncKernelManager):
    """Kernel manager that starts every kernel inside the grading sandbox."""

    _sockets: Path | None = None

    async def _async_pre_start_kernel(self, **kw: Any):
        cwd = Path(kw.get("cwd") or os.getcwd()).resolve()
        self._sockets = Path(tempfile.mkdtemp(prefix="genlab-kernel-"))
        os.chown(self._sockets, NOBODY, NOBODY)
        # The kernel runs as nobody: it may write its own submission folder, nothing else.
        for path in [cwd, *cwd.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        self.transport = "ipc"
        self.ip = str(self._sockets / "kernel")
        self.connection_file = str(self._sockets / "connection.json")
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        os.chmod(self.connection_file, 0o644)
        return bwrap_command(cmd, cwd=cwd, sockets=self._sockets, limits=limits_for(cwd)), kw

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if self._sockets is not None and not restart:
            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None
