"""A seccomp filter that refuses new user namespaces to a sandboxed kernel (bubblewrap loads it).

Inside the sandbox the kernel runs as an unprivileged uid, but Linux still lets such a process
create a user namespace of its own, where it is uid 0 (``unshare -Ur``) and reaches kernel code
that only root would otherwise reach. :func:`refuse_user_namespaces` is a classic BPF program
for ``bwrap --seccomp FD``: ``unshare`` and ``clone`` with ``CLONE_NEWUSER`` fail with EPERM;
``clone3`` fails with ENOSYS, so the C library falls back to ``clone`` (whose flags the filter
can read); system calls of another architecture (32-bit, x32) fail with EPERM. Every other call
is allowed.
"""

from __future__ import annotations

import platform
import struct

# classic BPF (linux/filter.h, linux/seccomp.h)
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_NR_OFFSET, _ARCH_OFFSET, _ARG0_LOW_OFFSET = 0, 4, 16  # struct seccomp_data, little-endian
CLONE_NEWUSER = 0x10000000
_X32_BIT = 0x40000000

# machine -> (AUDIT_ARCH_*, clone, unshare, clone3)
_ARCHES = {
    "x86_64": (0xC000003E, 56, 272, 435),
    "aarch64": (0xC00000B7, 220, 97, 435),
}


def supported() -> bool:
    """Whether a filter can be built for this machine's architecture."""
    return platform.machine() in _ARCHES


def refuse_user_namespaces(machine: str | None = None) -> bytes:
    """The filter program (an array of ``struct sock_filter``) for ``machine`` (this one by default)."""
    arch, clone, unshare, clone3 = _ARCHES[machine or platform.machine()]

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("<HBBI", code, jt, jf, k)

    program = [
        op(_LD_W_ABS, _ARCH_OFFSET),
        op(_JEQ_K, arch, 1, 0),  # another architecture's system calls:
        op(_RET_K, _ERRNO | _EPERM),  # refused
        op(_LD_W_ABS, _NR_OFFSET),
        op(_JGE_K, _X32_BIT, 0, 1),  # x32 numbers share x86_64's architecture tag
        op(_RET_K, _ERRNO | _EPERM),
        op(_JEQ_K, clone3, 0, 1),
        op(_RET_K, _ERRNO | _ENOSYS),
        op(_JEQ_K, unshare, 1, 0),
        op(_JEQ_K, clone, 0, 3),
        op(_LD_W_ABS, _ARG0_LOW_OFFSET),  # the flags
        op(_JSET_K, CLONE_NEWUSER, 0, 1),
        op(_RET_K, _ERRNO | _EPERM),
        op(_RET_K, _ALLOW),
    ]
    return b"".join(program)
