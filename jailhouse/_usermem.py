"""Read another (or this) process's memory the way the kernel's ``copy_from_user`` does.

The simulated driver (:mod:`jailhouse.sim`) gets ioctl arguments as user-space
addresses, exactly as the syscall passes them.  It reads the struct and every buffer the
struct points at through ``/proc/<pid>/mem`` with :func:`os.pread`, so an address that
is not mapped gives EFAULT, as the real driver answers, instead of crashing the
interpreter the way dereferencing it would.
"""

from __future__ import annotations

import errno
import os
from typing import Final

__all__ = ["read_user"]

_ADDRESS_LIMIT: Final = 1 << 63
"""``pread`` offsets are signed 64-bit; no user-space address lies at or above this."""


def read_user(pid: int, address: int, size: int) -> bytes:
    """Copy ``size`` bytes at ``address`` from the memory of process ``pid``.

    Args:
        pid: The process whose memory to read (``os.getpid()`` for this one).  Reading
            another process needs ptrace rights over it (root, or the same user with
            ``kernel.yama.ptrace_scope`` 0).
        address: The user-space address.
        size: How many bytes to copy; 0 copies nothing and never faults.

    Returns:
        Exactly ``size`` bytes.

    Raises:
        OSError: EFAULT when any byte of the range is not mapped (a null, kernel-half or
            unmapped address, or a range running off a mapping); another errno when
            ``/proc/<pid>/mem`` cannot be opened (ESRCH when the process is gone,
            EACCES without ptrace rights).
        ValueError: ``size`` is negative.
    """
    if size < 0:
        raise ValueError(f"size = {size}: must not be negative")
    if size == 0:
        return b""
    if address <= 0 or address + size > _ADDRESS_LIMIT:
        raise _fault(address, size)
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ESRCH, f"process {pid} does not exist") from None
    try:
        chunks: list[bytes] = []
        done = 0
        while done < size:
            try:
                chunk = os.pread(fd, size - done, address + done)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EFAULT):
                    raise _fault(address, size) from None
                raise
            if not chunk:
                raise _fault(address, size)
            chunks.append(chunk)
            done += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _fault(address: int, size: int) -> OSError:
    """Build the EFAULT error for an unreadable range."""
    return OSError(errno.EFAULT, f"bad address: {size} bytes at {address:#x} are not readable")
