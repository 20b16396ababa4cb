"""The device interface every backend implements, and the kernel device backend.

A :class:`Device` is one open file of ``/dev/jailhouse`` (or of something that behaves
like it): ioctls with the driver's request numbers and a user-space address as argument,
``read()`` of the hypervisor console, and the sysfs root that goes with it.  The
:class:`~jailhouse.hypervisor.Hypervisor` builds the ioctl structs (``jailhouse._abi``),
keeps them alive for the call and passes their address, exactly as the syscall takes it;
so the simulated device (``jailhouse.sim.FakeDevice``) reads the same bytes the kernel
would copy from user memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from jailhouse.config.model import Arch

__all__ = ["Device"]


@runtime_checkable
class Device(Protocol):
    """One open file of the hypervisor device.

    Attributes:
        sysfs_root: The directory that plays ``/sys``: the driver's files are under
            ``sysfs_root / "devices/jailhouse"``, the online CPUs in
            ``sysfs_root / "devices/system/cpu/online"``.
        arch: The host's architecture.  The driver answers a CREATE whose arch byte
            differs with success and creates nothing, so callers check it first.
    """

    sysfs_root: Path
    arch: Arch

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
