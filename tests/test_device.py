"""Tests for jailhouse.device.KernelDevice on real OS objects (no Jailhouse needed).

A missing node, an inaccessible one, ``/dev/null`` (whose ioctl answers ENOTTY) and a
FIFO (whose reads behave like the console's: data, nothing, EAGAIN) exercise every path
of the kernel backend: open, the cffi shim's ioctl call, read with and without
O_NONBLOCK, and close.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from jailhouse import _abi
from jailhouse.config.model import Arch
from jailhouse.console import ConsoleReader
from jailhouse.device import Device, KernelDevice
from jailhouse.errors import DeviceError, DeviceNotFoundError, PermissionDeniedError

if TYPE_CHECKING:
    from collections.abc import Iterator


def open_fds() -> int:
    """Count this process's open file descriptors."""
    return len(list(Path("/proc/self/fd").iterdir()))


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """Yield a FIFO's path and a write end that the test may feed."""
    path = tmp_path / "console"
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        yield path, writer
    finally:
        os.close(writer)


def test_missing_node_means_driver_not_loaded(tmp_path: Path) -> None:
    """A missing device node raises DeviceNotFoundError naming modprobe and sim://."""
    before = open_fds()
    with pytest.raises(DeviceNotFoundError) as info:
        KernelDevice(tmp_path / "jailhouse")
    exc = info.value
    assert exc.errno == errno.ENOENT
    assert isinstance(exc, FileNotFoundError)
    assert "modprobe jailhouse" in str(exc)
    assert "sim:///PATH" in str(exc)
    assert "\n" not in str(exc)
    assert open_fds() == before


def test_inaccessible_node_says_run_as_root() -> None:
    """A node that cannot be opened read-write raises PermissionDeniedError."""
    # A read-only sysfs attribute refuses O_RDWR with EACCES even for root (kernfs).
    path = "/sys/devices/system/cpu/online"
    try:
        os.close(os.open(path, os.O_RDWR))
    except PermissionError:
        pass
    except OSError:
        pytest.skip(f"{path} is not available here")
    else:
        pytest.skip(f"{path} opens read-write here")
    with pytest.raises(PermissionDeniedError, match="run as root") as info:
        KernelDevice(path)
    assert info.value.errno == errno.EACCES


def test_other_open_errors_keep_their_errno(tmp_path: Path) -> None:
    """Opening a directory fails with a DeviceError carrying EISDIR."""
    with pytest.raises(DeviceError) as info:
        KernelDevice(tmp_path)
    assert info.value.errno == errno.EISDIR
    assert info.value.op == f"open {tmp_path}"


def test_ioctl_goes_through_the_shim() -> None:
    """An ioctl on /dev/null reaches the kernel and comes back as -ENOTTY."""
    create = _abi.cell_create_arg(b"JHCLL")
    with KernelDevice("/dev/null", arch=Arch.ARM64) as device:
        assert device.ioctl(_abi.CELL_CREATE, create.address) == -errno.ENOTTY
        assert device.ioctl(_abi.DISABLE) == -errno.ENOTTY


def test_is_a_device() -> None:
    """KernelDevice implements the Device protocol and takes the given arch and sysfs root."""
    with KernelDevice("/dev/null", sysfs_root="/somewhere", arch=Arch.ARM64) as device:
        assert isinstance(device, Device)
        assert device.arch is Arch.ARM64
        assert str(device.sysfs_root) == "/somewhere"


def test_arch_defaults_to_the_machine() -> None:
    """Without arch, the device takes the running machine's architecture."""
    try:
        expected = Arch.from_name(os.uname().machine)
    except ValueError:
        pytest.skip("this machine's architecture is not one Jailhouse supports")
    with KernelDevice("/dev/null") as device:
        assert device.arch is expected


def test_close_is_idempotent_and_releases_the_fd() -> None:
    """close() releases the fd once; a second close does nothing; use after close fails."""
    before = open_fds()
    device = KernelDevice("/dev/null", arch=Arch.X86)
    assert open_fds() == before + 1
    assert not device.closed
    device.close()
    device.close()
    assert device.closed
    assert open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        device.ioctl(_abi.DISABLE)
    with pytest.raises(ValueError, match="closed"):
        device.read(10)


def test_context_manager_closes_on_error() -> None:
    """Leaving the with block by an exception closes the device."""
    before = open_fds()
    with pytest.raises(RuntimeError), KernelDevice("/dev/null", arch=Arch.X86) as device:
        raise RuntimeError
    assert device.closed
    assert open_fds() == before


def test_fd_is_close_on_exec() -> None:
    """The device fd is opened with O_CLOEXEC."""
    with KernelDevice("/dev/null", arch=Arch.X86) as device:
        assert fcntl.fcntl(device.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_read_blocking_and_nonblocking(fifo: tuple[Path, int]) -> None:
    """read() toggles O_NONBLOCK as asked and maps EAGAIN to a DeviceError."""
    path, writer = fifo
    with KernelDevice(path, arch=Arch.X86) as device:
        with pytest.raises(DeviceError) as info:
            device.read(64, nonblock=True)
        assert info.value.errno == errno.EAGAIN
        assert info.value.op == "console read"
        assert fcntl.fcntl(device.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        os.write(writer, b"hello")
        assert device.read(64) == b"hello"  # blocking, but data is there
        assert not fcntl.fcntl(device.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK


def test_console_reader_on_a_kernel_device(fifo: tuple[Path, int]) -> None:
    """ConsoleReader reads text through a KernelDevice and treats EAGAIN as nothing new."""
    path, writer = fifo
    with KernelDevice(path, arch=Arch.X86) as device:
        reader = ConsoleReader(device)
        assert reader.read() == ""
        os.write(writer, b"Initializing processors:\n CPU 1... OK\n")
        assert reader.read() == "Initializing processors:\n CPU 1... OK\n"
        os.write(writer, b"<missed 12 bytes of console log>\n")
        assert reader.read() == "<missed 12 bytes of console log>\n"
        assert (reader.missed_bytes, reader.missed_events) == (12, 1)


def test_console_reader_joins_a_split_character(fifo: tuple[Path, int]) -> None:
    """A UTF-8 character cut between two reads comes out whole with the second read."""
    path, writer = fifo
    text = "Grüße\n".encode()
    with KernelDevice(path, arch=Arch.X86) as device:
        reader = ConsoleReader(device)
        os.write(writer, text[:3])  # ends inside the two-byte "ü"
        assert reader.read() == "Gr"
        os.write(writer, text[3:])
        assert reader.read() == "üße\n"
