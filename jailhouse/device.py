"""The device interface every backend implements, and the kernel device backend.

A :class:`Device` is one open file of ``/dev/jailhouse`` (or of something that behaves
like it): ioctls with the driver's request numbers and a user-space address as argument,
``read()`` of the hypervisor console, and the sysfs root that goes with it.  The
:class:`~jailhouse.hypervisor.Hypervisor` builds the ioctl structs (``jailhouse._abi``),
keeps them alive for the call and passes their address, exactly as the syscall takes it;
so the simulated device (``jailhouse.sim.FakeDevice``) reads the same bytes the kernel
would copy from user memory.

:class:`KernelDevice` is the backend for a real ``/dev/jailhouse``: it issues the ioctl
through the cffi shim's ``jh_ioctl`` helper, which returns ``-errno`` rather than setting
a thread-local errno.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from jailhouse.config.flags import Arch
from jailhouse.errors import (
    DeviceNotFoundError,
    PermissionDeniedError,
    error_for_errno,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["DEFAULT_PATH", "Device", "KernelDevice"]

DEFAULT_PATH = "/dev/jailhouse"
"""Where the driver's misc device appears."""


@runtime_checkable
class Device(Protocol):
    """One open file of the hypervisor device.

    Attributes:
        sysfs_root: The directory that plays ``/sys``: the driver's files are under
            ``sysfs_root / "devices/jailhouse"``, the online CPUs in
            ``sysfs_root / "devices/system/cpu/online"``.
        arch: The host's architecture.  The driver answers a CREATE whose arch byte
            differs with success and creates nothing, so callers check it first.
            ``None`` only for a simulated host whose architecture is not fixed yet (it
            takes the arch of the first system config it is enabled with).
    """

    sysfs_root: Path

    @property
    def arch(self) -> Arch | None:
        """The host's architecture (``None``: a simulated host not enabled yet)."""
        ...

    def ioctl(self, request: int, arg: int = 0) -> int:
        """Issue an ioctl.

        Args:
            request: The request number (``jailhouse._abi.CELL_CREATE`` ...).
            arg: The user-space address of the argument struct, 0 for none.

        Returns:
            The driver's return value, or ``-errno`` on failure (never raises for an errno).
        """
        ...

    def read(self, count: int, *, nonblock: bool = False) -> bytes:
        """Read the hypervisor console, at most ``count`` bytes, from this file's position.

        Raises:
            DeviceError: The driver's errno (EAGAIN while disabled and non-blocking,
                EPERM without the virtual console flag, EINTR).
        """
        ...

    def close(self) -> None:
        """Close the file; closing twice does nothing."""
        ...

    def __enter__(self) -> Self:
        """Return the device itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the device."""
        ...


class KernelDevice:
    """The kernel driver's ``/dev/jailhouse``, opened read-write.

    Whoever creates it closes it: use it as a context manager or call :meth:`close`.
    There is no ``__del__``; an unclosed device keeps its fd until the process ends.

    By default one file serves both the ioctls and the console reads, as the driver's
    node does.  Given ``console_path``, the console is read from that file instead, and
    the node, which then only takes ioctls, is opened read-only: the driver checks no
    access mode for ioctls, and a node emulated by a userspace filesystem
    (:mod:`jailhouse.testing.fusedev`) must be a directory, which opens only read-only,
    because the VFS answers request ``0x1`` (``DISABLE``, also ``FIBMAP``) on a regular
    file itself.  Each file keeps its own console position, as the driver does per open.

    Args:
        path: The device node.
        sysfs_root: The directory that plays ``/sys`` for this device.
        arch: The host's architecture; defaults to the running machine's
            (``os.uname().machine``).
        console_path: A separate file to read the console from; ``None`` (the
            default) reads it from ``path``.

    Attributes:
        path: The device node.
        console_path: The file the console is read from (``path`` by default).
        sysfs_root: The directory that plays ``/sys``.
        arch: The host's architecture.

    Raises:
        DeviceNotFoundError: The node does not exist (the driver is not loaded).
        PermissionDeniedError: The node is not accessible (not root).
        DeviceError: Opening failed with another errno.
        ValueError: ``arch`` is not given and the machine is not one Jailhouse supports.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        sysfs_root: str | os.PathLike[str] = "/sys",
        arch: Arch | None = None,
        console_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """Open the device node (and the console file, if it is separate)."""
        self.path = Path(path)
        self.console_path = self.path if console_path is None else Path(console_path)
        self.sysfs_root = Path(sysfs_root)
        self.arch = arch if arch is not None else Arch.from_name(os.uname().machine)
        self._nonblock = False
        self._fd: int | None = None
        self._console_fd: int | None = None
        if console_path is None:
            self._fd = self._console_fd = _open_node(self.path, os.O_RDWR)
            return
        fd = _open_node(self.path, os.O_RDONLY)
        try:
            self._console_fd = _open_node(self.console_path, os.O_RDONLY)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._fd is None

    def fileno(self) -> int:
        """Return the file descriptor.

        Raises:
            ValueError: The device is closed.
        """
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def ioctl(self, request: int, arg: int = 0) -> int:
        """Issue an ioctl through the cffi shim.

        Args:
            request: The request number (``jailhouse._abi.CELL_CREATE`` ...).
            arg: The user-space address of the argument struct, 0 for none.  The caller
                keeps the memory alive for the call.

        Returns:
            The driver's return value, or ``-errno`` on failure.

        Raises:
            ValueError: The device is closed.
        """
        from jailhouse._ffi import lib  # noqa: PLC0415 - load the extension on first use

        return lib.jh_ioctl(self.fileno(), request, arg)

    def read(self, count: int, *, nonblock: bool = False) -> bytes:
        """Read the hypervisor console, at most ``count`` bytes, from this file's position.

        Args:
            count: Most bytes to return (the driver returns at most 2048).
            nonblock: Return at once when there is nothing new, instead of waiting.

        Returns:
            The bytes; empty when non-blocking and there is nothing new.

        Raises:
            DeviceError: The driver's errno (EAGAIN while disabled and non-blocking,
                EPERM without the virtual console flag, EINTR).
            ValueError: The device is closed.
        """
        fd = self._console_fd
        if fd is None:
            raise ValueError(f"{self.path} is closed")
        if nonblock != self._nonblock:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            flags = flags | os.O_NONBLOCK if nonblock else flags & ~os.O_NONBLOCK
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            self._nonblock = nonblock
        try:
            return os.read(fd, count)
        except OSError as exc:
            raise error_for_errno(exc.errno or errno.EIO, op="console read") from exc

    def close(self) -> None:
        """Close the file; closing twice does nothing."""
        fd, self._fd = self._fd, None
        console_fd, self._console_fd = self._console_fd, None
        if fd is not None:
            os.close(fd)
        if console_fd is not None and console_fd != fd:
            os.close(console_fd)

    def __enter__(self) -> Self:
        """Return the device itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the device."""
        self.close()

    def __repr__(self) -> str:
        """Name the node, the arch and whether it is open."""
        state = "closed" if self._fd is None else f"fd={self._fd}"
        return f"KernelDevice({str(self.path)!r}, arch={self.arch.name}, {state})"


def _open_node(path: Path, mode: int) -> int:
    """Open a device file with close-on-exec, mapping failures to device errors.

    Raises:
        DeviceNotFoundError: The file does not exist (the driver is not loaded).
        PermissionDeniedError: The file is not accessible (not root).
        DeviceError: Opening failed with another errno.
    """
    op = f"open {path}"
    try:
        return os.open(path, mode | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise DeviceNotFoundError(
            errno.ENOENT,
            op=op,
            hint="the jailhouse driver is not loaded (modprobe jailhouse); "
            "for a simulated host open 'sim:///PATH'",
        ) from exc
    except PermissionError as exc:
        raise PermissionDeniedError(exc.errno or errno.EACCES, op=op, hint="run as root") from exc
    except OSError as exc:
        raise error_for_errno(exc.errno or errno.EIO, op=op) from exc
