"""The simulated ``/dev/jailhouse``: ioctl dispatch on user-space addresses, and a Device.

:func:`dispatch_ioctl` is the driver's ``unlocked_ioctl``: a request number and the
address of its argument, read through a memory reader exactly as ``copy_from_user``
would (struct first, then what it points at).  :class:`FakeDevice` is one open file of
the simulated device, reading its own process's memory; a FUSE-mocked device node can
call :func:`dispatch_ioctl` with a reader of the caller's memory instead.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import TYPE_CHECKING, Self

from jailhouse._usermem import read_user
from jailhouse.errors import error_for_errno
from jailhouse.sim._host import ConsoleCursor, SimHost, dispatch_ioctl

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from jailhouse.config.model import Arch
    from jailhouse.device import Device

__all__ = ["FakeDevice"]


class FakeDevice:
    """One open file of a simulated host's ``/dev/jailhouse``.

    It implements :class:`jailhouse.device.Device`: ioctls take the user-space address
    of their argument (build it with ``jailhouse._abi``), and the simulated driver reads
    the struct and the memory it points at from this process through ``/proc/self/mem``,
    so a bad pointer gives EFAULT.  Each file has its own console position.

    Args:
        host: The simulated host.

    Attributes:
        host: The simulated host.
        sysfs_root: The host's ``sys`` directory.
        arch: The host's architecture; ``None`` until the host knows it (before its
            first enable when it was created without ``arch``).
    """

    def __init__(self, host: SimHost) -> None:
        """Open a file of the simulated device."""
        self.host = host
        self.sysfs_root: Path = host.sysfs_root
        self.arch: Arch | None = host.arch
        self._cursor = ConsoleCursor()
        self._interrupt = threading.Event()
        self._closed = False

    def enabled_system_config(self) -> bytes | None:
        """Return the bytes of the system config the hypervisor was enabled with.

        Not a driver interface (``/dev/jailhouse`` keeps no readable copy): the simulator
        offers it so that :meth:`jailhouse.Hypervisor.plan_linux` can generate a
        complete device tree on a simulated host without ``system=``.  ``None`` while
        the hypervisor is disabled.
        """
        self._check_open()
        return self.host.system_config()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed")

    def ioctl(self, request: int, arg: int = 0) -> int:
        """Issue an ioctl.

        Args:
            request: The request number (``jailhouse._abi.CELL_CREATE`` ...).
            arg: The user-space address of the argument struct, 0 for none.

        Returns:
            0, or ``-errno`` as the driver returns it.

        Raises:
            ValueError: The device is closed.
        """
        self._check_open()
        pid = os.getpid()
        result = dispatch_ioctl(
            self.host, request, arg, lambda address, size: read_user(pid, address, size)
        )
        if self.arch is None:  # an enable may have fixed it (Arch.X86 is 0: no `or` here)
            self.arch = self.host.arch
        return result

    def read(self, count: int, *, nonblock: bool = False) -> bytes:
        """Read the hypervisor console, at most ``count`` bytes, from this file's position.

        A blocking read polls every 100 ms until there is data; :meth:`interrupt` (from
        another thread) makes it fail with EINTR, as a signal would.

        Raises:
            DeviceError: The driver's errno (EAGAIN while disabled and non-blocking,
                EPERM without the virtual console flag, EINTR).
            ValueError: The device is closed.
        """
        self._check_open()
        try:
            return self.host.read_console(
                self._cursor, count, nonblock=nonblock, interrupt=self._interrupt
            )
        except OSError as exc:
            err = exc.errno or errno.EIO
            raise error_for_errno(err, op="console read", detail=exc.strerror) from exc

    def interrupt(self) -> None:
        """Make a blocking :meth:`read` (now or the next one) fail with EINTR."""
        self._interrupt.set()

    def close(self) -> None:
        """Close the file; closing twice does nothing."""
        self._closed = True

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
        """Name the host and whether the file is open."""
        return f"FakeDevice({self.host!r}, {'closed' if self._closed else 'open'})"


if TYPE_CHECKING:

    def _is_a_device(device: FakeDevice) -> Device:
        """Let mypy check that FakeDevice implements the Device protocol."""
        return device
