"""Run grader code on a submission's data in a forked process of its own, with memory and CPU limits.

What a submission's kernel wrote is read and judged outside the sandbox, as root, in a grading
process that may hold many submissions' work on a big machine. A record built to blow up (a
tensor whose shape dwarfs its storage, shared references a walk follows billions of times, a
product of shapes the student chose) must cost that submission its test, never the machine.

:class:`Confined` forks a worker from the calling process (no imports to repeat: a fork of a
process that has torch loaded takes a fraction of a second), lowers its limits, and runs
``target(request)`` for each request it is sent, one at a time:

* memory: the worker may grow its data segment (``RLIMIT_DATA``) by ``memory_mb`` beyond what it
  inherited; past that an allocation fails inside it;
* CPU: each request may use ``cpu_s`` seconds of CPU (``RLIMIT_CPU``, moved up per request);
  past that the kernel stops the worker; a request that takes ``wall_s`` seconds is killed too;
* the worker runs torch on one thread, writes no core file, and answers in JSON (nothing it
  sends is unpickled).

:meth:`Confined.call` returns the target's result (a JSON value), re-raises an exception of the
allowed kinds as that kind (say, ``probing.GraderError``: a fault of the course), and raises
:class:`LimitExceeded` when a limit stopped the request. After a limit the worker is replaced
for the next request.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct("!I")


@dataclass(frozen=True)
class Limits:
    """What one confined worker may use: memory beyond its parent's, CPU and wall seconds per request."""

    memory_mb: int = 1024
    cpu_s: int = 20
    wall_s: int = 60


class LimitExceeded(Exception):
    """A confined request went over a limit; the message names the limit."""


def out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is a failed allocation."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "out of memory" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _data_segment_bytes() -> int:
    """This process's data segment now (VmData), what RLIMIT_DATA counts."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _send(fd: int, message: Any) -> None:
    data = json.dumps(message).encode("utf-8")
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class _Closed(Exception):
    pass


def _receive(fd: int, deadline: float | None) -> Any:
    """One message from ``fd``; _Closed when the other side is gone, TimeoutError past ``deadline``."""

    def exactly(n: int) -> bytes:
        chunks, left = [], n
        while left:
            if deadline is not None:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise _Closed
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    (size,) = _HEADER.unpack(exactly(_HEADER.size))
    return json.loads(exactly(size))


class Confined:
    """A forked worker with limits that answers ``target(request)``; a context manager."""

    def __init__(
        self,
        target: Callable[[Any], Any],
        limits: Limits = Limits(),
        *,
        exceptions: tuple[type[Exception], ...] = (),
    ):
        self.target = target
        self.limits = limits
        self.exceptions = {cls.__name__: cls for cls in exceptions}
        self.pid: int | None = None
        self.peak_rss_mb = 0.0  # the largest resident set of any worker so far (for tests and benchmarks)
        self._to = self._from = -1

    def __enter__(self) -> Confined:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the worker
    def _start(self) -> None:
        to_worker, from_parent = os.pipe()
        to_parent, from_worker = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(from_parent)
            os.close(to_parent)
            try:
                self._serve(to_worker, from_worker)
            finally:
                os._exit(0)
        os.close(to_worker)
        os.close(from_worker)
        self.pid, self._to, self._from = pid, from_parent, to_parent

    def _serve(self, requests: int, answers: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        grow = self.limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (_data_segment_bytes() + grow, resource.RLIM_INFINITY))
        try:
            import torch

            torch.set_num_threads(1)  # the parent's thread pool does not survive a fork
        except ImportError:
            pass
        while True:
            try:
                request = _receive(requests, None)
            except _Closed:
                return
            used = resource.getrusage(resource.RUSAGE_SELF)
            cpu = int(used.ru_utime + used.ru_stime) + self.limits.cpu_s
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.RLIM_INFINITY))
            try:
                answer = {"value": self.target(request)}
            except Exception as exc:  # everything goes back to the parent, which decides
                if out_of_memory(exc):
                    _send(answers, {"limit": f"more than {self.limits.memory_mb} MB of memory"})
                    return
                answer = {"raised": type(exc).__name__, "message": str(exc)}
            _send(answers, answer)

    def _stop(self) -> None:
        if self.pid is None:
            return
        for fd in (self._to, self._from):
            os.close(fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap(0)

    def _reap(self, flags: int) -> int | None:
        """Wait for the worker; its wait status (None if it still runs and ``flags`` says not to wait)."""
        assert self.pid is not None
        pid, status, usage = os.wait4(self.pid, flags)
        if pid == 0:
            return None
        self.peak_rss_mb = max(self.peak_rss_mb, usage.ru_maxrss / 1024)
        self.pid = None
        return status

    # ------------------------------------------------------------------ the parent
    def call(self, request: Any) -> Any:
        """``target(request)`` in the worker: its result, its exception, or LimitExceeded (see the module doc)."""
        if self.pid is None:
            self._start()
        try:
            _send(self._to, request)
            answer = _receive(self._from, time.monotonic() + self.limits.wall_s)
        except TimeoutError:
            self._stop()
            raise LimitExceeded(f"more than {self.limits.wall_s} s") from None
        except (_Closed, BrokenPipeError):
            os.close(self._to)
            os.close(self._from)
            status = self._reap(0)
            if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
                raise LimitExceeded(f"more than {self.limits.cpu_s} s of CPU time") from None
            raise LimitExceeded(f"the verifying process stopped: {_describe(status)}") from None
        if "limit" in answer:
            self._stop()
            raise LimitExceeded(answer["limit"])
        if "raised" in answer:
            cls = self.exceptions.get(answer["raised"], RuntimeError)
            raise cls(answer["message"] if cls is not RuntimeError else f"{answer['raised']}: {answer['message']}")
        return answer["value"]

    def close(self) -> None:
        """End the worker (it would end by itself once the parent's end of its pipe closes)."""
        self._stop()


def _describe(status: int | None) -> str:
    if status is None:
        return "unknown"
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"
