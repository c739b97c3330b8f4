"""The grading sandbox: each submission's kernel runs under bubblewrap in a jail of its own.

A :class:`Jail` holds what confines one submission:

* a **scratch folder** where the kernel runs and writes (a size-limited tmpfs where mounting is
  allowed, a plain folder otherwise); nbgrader's own folders never meet the kernel, so nothing
  the kernel leaves behind (a symlink, a 2 GB file) reaches what runs as root afterwards;
* a **uid of its own** (a slot held by a lock for the jail's lifetime), so per-user limits such as
  the process count bind this submission only;
* a **cgroup** (v1 or v2, memory and pids) where the machine allows one, so memory and processes
  are limited for the submission as a whole, forks included; its processes are killed at the end.

:class:`SandboxKernelManager` starts the kernel through :func:`bwrap_command`: a fresh mount
namespace with only what a kernel needs bound read-only (the system's programs and libraries,
the Python environment, the student edition of genlab, the data), a private /tmp, no network, an
environment built from an allow-list, and message-based interrupts (a signal would reach
bubblewrap, not the kernel).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import glob
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from autograder import seccomp

UID_BASE = 2_000_000  # uids of sandboxed submissions: UID_BASE + slot, unused by any account
SLOTS = 4096
LOCKS = Path("/run/genlab-sandbox")
CGROUP_ROOT = Path("/sys/fs/cgroup")
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What a Python kernel reads from /etc: the loader's cache, fonts, time zone, alternatives' links.
ETC_PATHS = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "fonts",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "mime.types",
)
# Variables a kernel may inherit from the grader; everything else (a gradebook URL with its
# password, tokens, the grader's paths) stays outside.
PASSED_ENV = (
    "GENLAB_PROFILE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "GENLAB_PROGRESS",
    "TZ",
)


OFF_ENV = "GENLAB_SANDBOX"  # "0": grade without the sandbox, knowingly
CPU_GRACE_S = 5  # SIGXCPU at the CPU limit, SIGKILL this long after: a death by CPU time is told apart


def missing() -> str | None:
    """Why this machine cannot confine a submission's kernel, or None when it can.

    The sandbox needs root (a uid and a cgroup per submission), bubblewrap with util-linux's
    setpriv and prlimit, and a cgroup hierarchy with the memory and pids controllers that root
    may write (the limits hold for a submission as a whole, forks included).
    """
    if os.geteuid() != 0:
        return f"the grader runs as uid {os.geteuid()}, not root"
    tools = [tool for tool in ("bwrap", "setpriv", "prlimit") if not shutil.which(tool)]
    if tools:
        return f"{', '.join(tools)} not found (Debian packages bubblewrap and util-linux)"
    layout = _cgroup_layout()
    if not layout:
        return f"no cgroup hierarchy with the memory and pids controllers under {CGROUP_ROOT}"
    writable = {folder.parent if not folder.exists() else folder for folder in layout[1].values()}
    if not all(os.access(folder, os.W_OK) for folder in writable):
        return f"the cgroups under {CGROUP_ROOT} are read-only here (mount them writable, or delegate one)"
    return None


def available() -> bool:
    """True when this machine can sandbox kernels (see :func:`missing`)."""
    return missing() is None


def refusal(reason: str) -> str:
    """The message that stops grading on a machine without a usable sandbox."""
    return (
        f"refusing to grade without the sandbox: {reason}. Student code would run with the grader's rights. "
        "Run the grader as root on a machine with bubblewrap (`apt-get install bubblewrap`) and writable "
        "cgroups (memory and pids controllers), or, knowing what it means, set GENLAB_SANDBOX=0 (the grade "
        "table and grades.csv then say 'unsandboxed')"
    )


@dataclass(frozen=True)
class Limits:
    """What one submission may use, as a whole."""

    memory_mb: int = 6144
    cpu_s: int = 1200
    processes: int = 512
    disk_mb: int = 1024
    file_mb: int = 512
    open_files: int = 1024


# ----------------------------------------------------------------------------- cgroups


def _cgroup_layout() -> tuple[str, dict[str, Path]] | None:
    """("v1" | "v2", {controller: parent folder for genlab's groups}) where memory and pids can be limited."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        controllers = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        if {"memory", "pids"} <= set(controllers):
            return "v2", {"memory": CGROUP_ROOT / "genlab", "pids": CGROUP_ROOT / "genlab"}
        return None
    if (CGROUP_ROOT / "memory" / "cgroup.procs").exists() and (CGROUP_ROOT / "pids" / "cgroup.procs").exists():
        return "v1", {"memory": CGROUP_ROOT / "memory" / "genlab", "pids": CGROUP_ROOT / "pids" / "genlab"}
    return None


class Cgroup:
    """A memory-and-pids cgroup for one submission (absent where the machine offers none)."""

    def __init__(self, name: str, limits: Limits):
        self.folders: list[Path] = []
        layout = os.geteuid() == 0 and _cgroup_layout()
        if not layout:
            return
        version, parents = layout
        try:
            if version == "v2":
                parent = parents["memory"]
                parent.mkdir(exist_ok=True)
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory +pids")
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
                group = parent / name
                group.mkdir(exist_ok=True)
                self.folders = [group]
                self._kill_all()
                (group / "memory.max").write_text(str(limits.memory_mb * 2**20))
                if (group / "memory.swap.max").exists():
                    (group / "memory.swap.max").write_text("0")
                (group / "pids.max").write_text(str(limits.processes))
            else:
                for controller in ("memory", "pids"):
                    parents[controller].mkdir(exist_ok=True)
                    (parents[controller] / name).mkdir(exist_ok=True)
                    self.folders.append(parents[controller] / name)
                self._kill_all()
                memory, pids = self.folders
                (memory / "memory.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
                if (memory / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
                (pids / "pids.max").write_text(str(limits.processes))
        except OSError:
            self.folders = []  # read-only or delegated elsewhere: fall back to per-process limits

    @property
    def procs_files(self) -> list[str]:
        return [str(f / "cgroup.procs") for f in self.folders]

    def pids(self) -> set[int]:
        """The processes in this cgroup now."""
        pids: set[int] = set()
        for procs in self.procs_files:
            try:
                pids |= {int(p) for p in Path(procs).read_text().split()}
            except OSError:
                pass
        return pids

    def _kill_all(self) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def out_of_memory(self) -> bool:
        """Whether the kernel's memory cgroup killed a process of this submission."""
        for folder in self.folders:
            for name in ("memory.events", "memory.oom_control"):  # v2, v1: an "oom_kill <count>" line
                try:
                    lines = (folder / name).read_text().splitlines()
                except OSError:
                    continue
                if any(line.split()[:1] == ["oom_kill"] and line.split()[1] != "0" for line in lines):
                    return True
        return False

    def peak_mb(self) -> float | None:
        """The most memory this submission's processes used together, in MB (None where unknown)."""
        for folder in self.folders:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):  # v2, v1
                try:
                    return int((folder / name).read_text().split()[0]) / 2**20
                except (OSError, ValueError, IndexError):
                    continue
        return None

    def close(self) -> None:
        self._kill_all()
        for folder in self.folders:
            try:
                folder.rmdir()
            except OSError:
                pass


# ----------------------------------------------------------------------------- the jail


def _claim_slot() -> tuple[int, int]:
    """(slot, fd of its lock): a uid no other running submission on this machine holds."""
    LOCKS.mkdir(mode=0o700, parents=True, exist_ok=True)
    for slot in range(SLOTS):
        fd = os.open(LOCKS / f"slot-{slot}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return slot, fd
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
    raise RuntimeError(f"all {SLOTS} sandbox slots are in use ({LOCKS})")


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700,nosuid,nodev", "tmpfs", str(path)],
        capture_output=True,
    )
    return result.returncode == 0


class Jail:
    """One submission's scratch folder, uid and cgroup. Use as a context manager."""

    def __init__(self, limits: Limits, *, sandboxed: bool):
        self.limits = limits
        self.sandboxed = sandboxed
        self.slot: int | None = None
        self._lock: int | None = None
        self.cgroup: Cgroup | None = None
        self.mounted = False
        self.scratch = Path()
        self.sockets = Path()

    @property
    def uid(self) -> int:
        return UID_BASE + (self.slot or 0)

    def __enter__(self) -> Jail:
        self.scratch = Path(tempfile.mkdtemp(prefix="genlab-scratch-"))
        self.sockets = Path(tempfile.mkdtemp(prefix="genlab-kernel-"))
        if self.sandboxed:
            self.slot, self._lock = _claim_slot()
            self.cgroup = Cgroup(f"slot-{self.slot}", self.limits)
            self.mounted = _mount_tmpfs(self.scratch, self.limits.disk_mb)
            os.chown(self.scratch, self.uid, self.uid)
            os.chmod(self.scratch, 0o700)
            self._prepare_sockets()
        return self

    # ------------------------------------------------------------------ the kernel's connection folder
    # It lives outside the scratch folder, on the host, and the grader connects to what is in it as
    # root: so it belongs to root and only the kernel's group may read it. The kernel binds its
    # sockets in run/ while it starts (before any cell runs); then run/ is locked (lock_sockets), so
    # that no socket can be replaced and nothing written there, where no disk limit applies.
    @property
    def run(self) -> Path:
        """The folder of the kernel's IPC sockets."""
        return self.sockets / "run"

    def _prepare_sockets(self) -> None:
        os.chown(self.sockets, 0, self.uid)
        os.chmod(self.sockets, 0o750)
        self.run.mkdir(mode=0o700)
        os.chown(self.run, self.uid, self.uid)
        (self.sockets / "seccomp.bpf").write_bytes(seccomp.refuse_user_namespaces() if seccomp.supported() else b"")

    def share(self, path: Path) -> None:
        """Let the kernel read a file the grader wrote in the connection folder, and nothing more."""
        if self.sandboxed:
            os.chown(path, 0, self.uid, follow_symlinks=False)
            os.chmod(path, 0o640, follow_symlinks=False)

    def lock_sockets(self, expected: list[Path]) -> None:
        """Take run/ from the kernel once it bound ``expected``; raise if anything else is there.

        Raises RuntimeError (a failed start, retried): no student code has run yet, so anything
        unexpected is the machine's fault.
        """
        if not self.sandboxed:
            return
        os.chown(self.run, 0, self.uid)
        os.chmod(self.run, 0o750)
        with os.scandir(self.run) as entries:
            found = {Path(e.path): e.stat(follow_symlinks=False) for e in entries}
        for path, info in found.items():
            if path not in expected or not stat.S_ISSOCK(info.st_mode) or info.st_uid != self.uid:
                raise RuntimeError(f"unexpected entry in the kernel's socket folder: {path.name}")
        missing = [p.name for p in expected if p not in found]
        if missing:
            raise RuntimeError(f"the kernel did not create its sockets {missing}")

    def give(self, path: Path) -> None:
        """Hand a file or folder we created in the scratch folder to the submission's uid."""
        if self.sandboxed:
            os.chown(path, self.uid, self.uid, follow_symlinks=False)

    def __exit__(self, *exc: Any) -> None:
        if self.cgroup is not None:
            self.cgroup.close()
        if self.sandboxed:
            _kill_uid(self.uid)
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.scratch)], capture_output=True)
        for folder in (self.scratch, self.sockets):
            shutil.rmtree(folder, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process that runs as ``uid`` (what a machine without cgroups has left to do)."""
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            for line in Path(status).read_text().splitlines():
                if line.startswith("Uid:") and int(line.split()[1]) == uid:
                    os.kill(int(Path(status).parent.name), signal.SIGKILL)
                    break
        except (OSError, ValueError):
            continue


# ----------------------------------------------------------------------------- bubblewrap


class _Binds:
    """bwrap arguments for read-only and writable binds at the same paths.

    bwrap creates a missing folder on the way to a bind point with mode 0700, which the
    sandbox's uid cannot cross; those folders are made 0755 first. A path inside one already
    bound is visible already and is skipped.
    """

    def __init__(self, args: list[str]):
        self.args = args
        self.bound: list[Path] = []
        self.made: set[Path] = {Path("/"), Path("/tmp")}

    def _visible(self, path: Path) -> bool:
        return any(path == b or path.is_relative_to(b) for b in self.bound)

    def add(self, path: str | Path, *, writable: bool = False) -> None:
        path = Path(path)
        if str(path.parent) == "/" and path.is_symlink():  # merged /usr: /bin -> usr/bin
            self.args += ["--symlink", os.readlink(path), str(path)]
            self.made.add(path)
            return
        if not path.exists() or (self._visible(path) and not writable):
            return
        for parent in reversed(path.parents):
            if parent not in self.made and not self._visible(parent):
                self.args += ["--perms", "0755", "--dir", str(parent)]
                self.made.add(parent)
        self.args += ["--bind" if writable else "--ro-bind", str(path), str(path)]
        self.bound.append(path)


def _passwd(jail: Jail) -> Path:
    """An /etc/passwd that names the sandbox's user (getpass and friends look it up)."""
    path = jail.sockets / "passwd"
    path.write_text(f"root:x:0:0:root:/root:/bin/false\nstudent:x:{jail.uid}:{jail.uid}:student:/tmp:/bin/false\n")
    jail.share(path)
    return path


def kernel_paths() -> list[Path]:
    """What a kernel reads beyond the system: the Python installation and its environment."""
    return sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix)})


def bwrap_command(cmd: list[str], *, jail: Jail, env: dict[str, str], read_only: list[Path]) -> list[str]:
    """Wrap a kernel command line in bubblewrap, setpriv and prlimit (and the jail's cgroup)."""
    lim = jail.limits
    args = [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *_tmp_args(jail),
    ]
    binds = _Binds(args)
    for system in SYSTEM_PATHS:
        binds.add(system)
    for name in ETC_PATHS:
        binds.add(Path("/etc") / name)
    args += ["--ro-bind", str(_passwd(jail)), "/etc/passwd"]
    gpus = sorted(glob.glob("/dev/nvidia*"))
    for dev in gpus:  # GPU runners: the devices and what the driver reads from /sys
        args += ["--dev-bind", dev, dev]
    binds.add("/sys" if gpus else "/sys/devices/system/cpu")
    for path in [*kernel_paths(), *read_only]:
        binds.add(path)
    binds.add(jail.scratch, writable=True)
    binds.add(jail.sockets, writable=True)
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", str(jail.scratch), "--cap-add", "CAP_SETUID,CAP_SETGID"]
    filter_path = jail.sockets / "seccomp.bpf"
    if filter_path.is_file() and filter_path.stat().st_size:
        args += ["--seccomp", str(SECCOMP_FD)]
    limits = [
        f"--cpu={lim.cpu_s}:{lim.cpu_s + CPU_GRACE_S}",
        f"--nproc={lim.processes}",
        f"--fsize={lim.file_mb * 2**20}",
        f"--nofile={lim.open_files}",
    ]
    if not (jail.cgroup and jail.cgroup.folders):  # no cgroup: at least each process is bounded
        limits.append(f"--data={lim.memory_mb * 2**20}")
    wrapped = [
        "bwrap",
        *args,
        "--",
        "setpriv",
        f"--reuid={jail.uid}",
        f"--regid={jail.uid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "prlimit",
        *limits,
        "--",
        *cmd,
    ]
    # Join the cgroup first (as root, before bubblewrap starts): every process of the kernel inherits it.
    # bubblewrap reads the seccomp filter from a file descriptor, opened here.
    join = (
        'for f in $GENLAB_CGROUP_PROCS; do echo $$ > "$f" || exit 111; done; '
        if jail.cgroup and jail.cgroup.folders
        else ""
    )
    start = f'exec "$@" {SECCOMP_FD}<{shlex.quote(str(filter_path))}' if "--seccomp" in args else 'exec "$@"'
    return ["/bin/sh", "-c", join + start, "sh", *wrapped]


SECCOMP_FD = 3


def _tmp_args(jail: Jail) -> list[str]:
    """bwrap arguments for the kernel's /tmp: a folder of the scratch tmpfs (one disk limit for both), or a tmpfs."""
    if jail.mounted:
        tmp = jail.scratch / ".tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        jail.give(tmp)
        return ["--bind", str(tmp), "/tmp"]
    return ["--size", str(jail.limits.disk_mb * 2**20), "--perms", "1777", "--tmpfs", "/tmp"]


class SandboxKernelManager(AsyncKernelManager):
    """Starts a kernel inside ``jail`` with the environment ``kernel_env`` (set before starting)."""

    jail: Jail | None = None
    kernel_env: dict[str, str] = {}
    read_only: list[Path] = []

    async def _async_pre_start_kernel(self, **kw: Any):
        assert self.jail is not None, "SandboxKernelManager needs a jail (see autograder.preprocessors)"
        assert self.kernel_spec is not None, "a kernel manager knows its kernel spec once it starts one"
        self.kernel_spec.interrupt_mode = "message"  # SIGINT would reach bubblewrap, not the kernel
        self.transport = "ipc"
        self.ip = str(self.jail.run / "kernel")
        self.connection_file = str(self.jail.sockets / "connection.json")
        kw["env"] = {
            **self.kernel_env,
            "GENLAB_CGROUP_PROCS": " ".join(self.jail.cgroup.procs_files if self.jail.cgroup else []),
        }
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        self.jail.share(Path(self.connection_file))
        # A blocked signal mask is inherited through fork and exec: a grader started from a Ray task
        # (whose threads block SIGINT) would start kernels that never see the interrupt of a timed-out
        # cell, so one endless cell would cost the whole submission.
        kw["preexec_fn"] = unblock_signals
        return bwrap_command(cmd, jail=self.jail, env=self.kernel_env, read_only=self.read_only), kw

    async def _async_post_start_kernel(self, **kw: Any) -> None:
        await super()._async_post_start_kernel(**kw)
        await self._lock_sockets()

    async def _lock_sockets(self, timeout_s: float = 120) -> None:
        """Wait until the kernel bound its sockets, then take their folder from it (Jail.lock_sockets)."""
        assert self.jail is not None
        ports = [self.shell_port, self.iopub_port, self.stdin_port, self.control_port, self.hb_port]
        expected = [Path(f"{self.ip}-{port}") for port in ports]
        deadline = time.monotonic() + timeout_s
        while not all(p.exists() for p in expected):
            if time.monotonic() > deadline or not await self.is_alive():
                raise RuntimeError("the kernel did not bind its sockets")
            await asyncio.sleep(0.05)
        self.jail.lock_sockets(expected)


def unblock_signals() -> None:
    """Clear the calling thread's blocked-signal mask (a child process inherits it)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
