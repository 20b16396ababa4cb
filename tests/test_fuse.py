"""Tests of the FUSE-mocked /dev/jailhouse (jailhouse.testing) and of what crosses the kernel.

The lifecycle and error-path tests in ``test_hypervisor.py`` already run on the ``fuse``
backend (``tests/backends.py``).  These add what only a device behind the syscall path
shows: request numbers and struct sizes as the kernel encodes them, pointers that the
kernel or the driver cannot read, fields read at the driver's offsets, the console's
blocking read and its interruption, and a shim with a broken struct layout failing the
lifecycle through the FUSE device while it still agrees with the in-process simulator.

Tests that take the ``backend``/``enabled`` fixture run on every backend with identical
expectations; the others need FUSE and are marked ``fuse``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from backends import HOST_CPUS, Backend, cell_config, system_config

import jailhouse
from jailhouse import _abi
from jailhouse.config.model import Arch
from jailhouse.hypervisor import Hypervisor, Image
from jailhouse.sim import SimHost
from jailhouse.testing import FuseDevice, fuse_unavailable
from jailhouse.testing.fusedev import DRIVER_REQUESTS

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[1]
_SIZE_MASK = 0x3FFF << 16
_READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(platform.machine())
_GIVE_UP = 30.0  # seconds before a stuck wait is released (never asserted on)


@dataclass
class Mounted:
    """A started FUSE device and the simulated host behind it."""

    fuse: FuseDevice
    host: SimHost
    arch: Arch


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mounted]:
    """Yield a FUSE device on a fresh disabled arm64 host with 4 CPUs."""
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(reason)
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=HOST_CPUS)
    with FuseDevice(tmp_path / "host", tmp_path / "mnt") as fuse:
        yield Mounted(fuse, host, Arch.ARM64)


def with_size(request: int, size: int) -> int:
    """Return ``request`` with its ``_IOC_SIZE`` field set to ``size``."""
    return (request & ~_SIZE_MASK) | (size << 16)


def unmapped_address() -> int:
    """Return the address of a page that was mapped and is not any more (a stale pointer)."""
    page = mmap.mmap(-1, mmap.PAGESIZE)
    view = ctypes.c_char.from_buffer(page)
    address = ctypes.addressof(view)
    del view
    page.close()
    return address


def open_fds() -> int:
    """Count this process's open file descriptors."""
    return len(list(Path("/proc/self/fd").iterdir()))


def buffer_of(data: bytes) -> ctypes.Array[ctypes.c_char]:
    """Copy ``data`` into a ctypes buffer that the test keeps alive across the ioctl."""
    return ctypes.create_string_buffer(data, len(data))


def address_of(buffer: ctypes.Array[ctypes.c_char]) -> int:
    """Return a ctypes buffer's address."""
    return ctypes.addressof(buffer)


def wait_blocked_in_read(tid: int, done: threading.Event) -> bool:
    """Wait until thread ``tid`` sits in a ``read`` syscall; False if it finished first."""
    path = Path(f"/proc/self/task/{tid}/syscall")
    while not done.is_set():
        try:
            fields = path.read_text().split()
        except FileNotFoundError:
            return False
        if fields and fields[0] == str(_READ_SYSCALL):
            return True
        done.wait(0.005)
    return False


# -- through every backend, with identical results ---------------------------------------


def test_unknown_requests_are_einval(enabled: Backend) -> None:
    """Request numbers the driver does not define get EINVAL, whatever their argument."""
    arg = _abi.cell_id_arg(name="root")
    for request in (
        0x40080006,  # _IOW(0, 6, 8): the next free number
        0x00000000,  # _IO(0, 0)
        0x40284A04,  # CELL_START's number with type 'J' instead of 0
        0x80280004,  # CELL_START's number as _IOR
        0xC0280004,  # CELL_START's number as _IOWR
    ):
        assert enabled.hv.device.ioctl(request, arg.address) == -errno.EINVAL, hex(request)


def test_wrong_struct_size_is_einval(enabled: Backend) -> None:
    """CREATE's number with another size field is refused; the same bytes with 16 succeed."""
    config = enabled.cell().to_bytes()
    arg = _abi.cell_create_arg(config)
    room = buffer_of(arg.data() + bytes(24))  # the struct, and room for a larger size field
    device = enabled.hv.device
    for size in (0, 8, 12, 24, 40):
        request = with_size(_abi.CELL_CREATE, size)
        assert device.ioctl(request, address_of(room)) == -errno.EINVAL, size
    assert [c.name for c in enabled.snapshot().cells] == ["root"]
    assert device.ioctl(_abi.CELL_CREATE, address_of(room)) == 0
    assert [c.name for c in enabled.snapshot().cells] == ["root", "inmate"]


def test_stale_config_pointer_is_efault(enabled: Backend) -> None:
    """A cell_create whose config_address points at unmapped memory gets EFAULT."""
    size = len(enabled.cell().to_bytes())
    create = buffer_of(struct.pack("<QI4x", unmapped_address(), size))
    assert enabled.hv.device.ioctl(_abi.CELL_CREATE, address_of(create)) == -errno.EFAULT
    assert [c.name for c in enabled.snapshot().cells] == ["root"]


def test_stale_argument_pointer_is_efault(enabled: Backend) -> None:
    """An argument pointer to unmapped memory gets EFAULT for every request with a struct."""
    stale = unmapped_address()
    for request in (_abi.CELL_CREATE, _abi.CELL_LOAD, _abi.CELL_START, _abi.CELL_DESTROY):
        assert enabled.hv.device.ioctl(request, stale) == -errno.EFAULT, hex(request)
    assert enabled.hv.device.ioctl(_abi.DISABLE, stale) == 0  # DISABLE reads no argument
    assert not enabled.snapshot().enabled


def test_stale_system_config_is_efault(backend: Backend) -> None:
    """ENABLE with a config address that is not mapped gets EFAULT and enables nothing."""
    assert backend.hv.device.ioctl(_abi.ENABLE, unmapped_address()) == -errno.EFAULT
    assert not backend.snapshot().enabled


def test_stale_image_pointer_is_efault(enabled: Backend) -> None:
    """A load whose image source is unmapped gets EFAULT; the image array is read too."""
    cell = enabled.hv.create_cell(enabled.cell())
    header = buffer_of(
        struct.pack("<i4x32sI4x", cell.id, b"", 1)
        + struct.pack("<QQQ8x", unmapped_address(), 64, 0x0)
    )
    assert enabled.hv.device.ioctl(_abi.CELL_LOAD, address_of(header)) == -errno.EFAULT
    assert enabled.snapshot().cell("inmate").images == ()


def test_fields_are_read_at_the_drivers_offsets(enabled: Backend) -> None:
    """A struct with its fields swapped is read as the driver reads it, and fails as there."""
    config = buffer_of(enabled.cell().to_bytes())
    good = struct.pack("<QI4x", address_of(config), len(config))
    size_in_padding = struct.pack("<Q4xI", address_of(config), len(config))
    device = enabled.hv.device
    # The driver reads config_size 0, shorter than a cell config header.
    assert device.ioctl(_abi.CELL_CREATE, address_of(buffer_of(size_in_padding))) == (-errno.EINVAL)
    assert [c.name for c in enabled.snapshot().cells] == ["root"]
    assert device.ioctl(_abi.CELL_CREATE, address_of(buffer_of(good))) == 0
    # A name where the id belongs: its first four bytes are an id no cell has.
    misplaced = buffer_of(struct.pack("<32s8x", b"inmate"))
    assert device.ioctl(_abi.CELL_START, address_of(misplaced)) == -errno.ENOENT
    by_name = buffer_of(struct.pack("<i4x32s", _abi.CELL_ID_UNUSED, b"inmate"))
    assert device.ioctl(_abi.CELL_START, address_of(by_name)) == 0
    assert str(enabled.snapshot().cell("inmate").state) == "running"


def test_ioctl_from_another_thread(enabled: Backend) -> None:
    """A cell created from a worker thread is read from that thread's memory."""
    result: list[object] = []

    def create() -> None:
        try:
            result.append(enabled.hv.create_cell(enabled.cell()))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread
            result.append(exc)

    worker = threading.Thread(target=create)
    worker.start()
    worker.join()
    assert [type(r).__name__ for r in result] == ["Cell"]
    assert [c.name for c in enabled.snapshot().cells] == ["root", "inmate"]


def test_blocking_read_waits_for_the_hypervisor(backend: Backend) -> None:
    """A blocking console read on a disabled host waits, then returns the enable output."""
    result: list[bytes | BaseException] = []
    done = threading.Event()

    opened = threading.Event()

    def read() -> None:
        try:
            with backend.open_device() as device:
                opened.set()
                result.append(device.read(2048))  # nothing to read until the enable
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            result.append(exc)
        finally:
            opened.set()
            done.set()

    reader = threading.Thread(target=read)
    reader.start()
    opened.wait()
    backend.hv.enable(backend.system())
    reader.join()
    [data] = result
    assert isinstance(data, bytes)
    assert data
    assert backend.snapshot().console.startswith(data)


# -- FUSE only -----------------------------------------------------------------------------


@pytest.mark.fuse
def test_driver_request_numbers_match_the_shim() -> None:
    """The mock's request numbers (the driver's header) equal the shim's compiled ones."""
    assert dict(DRIVER_REQUESTS) == dict(_abi.REQUEST_NAMES)


@pytest.mark.fuse
def test_mount_layout(mounted: Mounted) -> None:
    """The node is a directory, the console a regular file, sysfs the host's own tree."""
    fuse = mounted.fuse
    assert os.path.ismount(fuse.mountpoint)
    assert fuse.device_path.is_dir()
    assert fuse.console_path.is_file()
    assert fuse.sysfs_root == mounted.host.sysfs_root
    assert sorted(p.name for p in fuse.mountpoint.iterdir()) == ["jailhouse", "jailhouse-console"]
    assert fuse.arch is Arch.ARM64
    assert "console=" in fuse.uri
    assert "arch=arm64" in fuse.uri


@pytest.mark.fuse
def test_kernel_device_opens_node_read_only_and_console_apart(mounted: Mounted) -> None:
    """KernelDevice opens the node read-only and the console as a second file; close frees both."""
    before = open_fds()
    device = mounted.fuse.open_device()
    assert open_fds() == before + 2
    assert fcntl.fcntl(device.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    assert device.console_path == mounted.fuse.console_path
    device.close()
    device.close()
    assert open_fds() == before


@pytest.mark.fuse
def test_disable_reaches_the_mock(mounted: Mounted) -> None:
    """Request 0x1 on the node reaches the driver: EINVAL while disabled, then it disables."""
    with mounted.fuse.open_device() as device, Hypervisor(device) as hv:
        assert device.ioctl(_abi.DISABLE) == -errno.EINVAL
        hv.enable(system_config(mounted.arch))
        assert mounted.host.snapshot().enabled
        assert device.ioctl(_abi.DISABLE) == 0
        assert not mounted.host.snapshot().enabled


@pytest.mark.fuse
def test_regular_file_would_lose_disable(mounted: Mounted) -> None:
    """On the console file (a regular file) the VFS answers 0x1 itself, so the node is a dir."""
    fd = os.open(mounted.fuse.console_path, os.O_RDONLY)
    try:
        block = bytearray(4)
        assert fcntl.ioctl(fd, _abi.DISABLE, block) == 0  # FIBMAP, answered by the VFS
        with pytest.raises(OSError, match="ioctl") as info:
            fcntl.ioctl(fd, _abi.CELL_START, bytearray(40))
        assert info.value.errno == errno.ENOTTY  # what reaches the server is refused there
    finally:
        os.close(fd)


@pytest.mark.fuse
def test_unreadable_argument_faults_in_the_kernel(mounted: Mounted) -> None:
    """An unknown request with an unmapped argument faults in the kernel's copy (EFAULT)."""
    with mounted.fuse.open_device() as device:
        assert device.ioctl(0x40080006, unmapped_address()) == -errno.EFAULT
        assert device.ioctl(0x00000006, unmapped_address()) == -errno.EINVAL  # size 0: no copy


@pytest.mark.fuse
def test_nonblocking_flag_is_seen_per_read(mounted: Mounted) -> None:
    """Toggling O_NONBLOCK on an open console file changes how the next read behaves."""
    with mounted.fuse.open_device() as device, Hypervisor(device) as hv:
        with pytest.raises(jailhouse.DeviceError) as info:
            device.read(64, nonblock=True)
        assert info.value.errno == errno.EAGAIN
        hv.enable(system_config(mounted.arch))
        data = device.read(64)  # blocking, and there is data
        assert len(data) == 64
        while chunk := device.read(2048, nonblock=True):
            data += chunk
        assert data == mounted.host.snapshot().console
        assert device.read(64, nonblock=True) == b""


@pytest.mark.skipif(_READ_SYSCALL is None, reason="read's syscall number is known for x86_64/arm64")
@pytest.mark.fuse
def test_blocking_read_is_in_the_kernel(mounted: Mounted) -> None:
    """A blocking console read waits inside the read syscall until the hypervisor writes."""
    result: list[bytes | BaseException] = []
    done = threading.Event()
    tids: list[int] = []

    def read() -> None:
        tids.append(threading.get_native_id())
        try:
            with mounted.fuse.open_device() as device:
                result.append(device.read(2048))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            result.append(exc)
        finally:
            done.set()

    reader = threading.Thread(target=read)
    reader.start()
    while not tids:
        done.wait(0.001)
    assert wait_blocked_in_read(tids[0], done)
    with mounted.fuse.open_device() as device, Hypervisor(device) as hv:
        hv.enable(system_config(mounted.arch))
    reader.join()
    [data] = result
    assert isinstance(data, bytes)
    assert mounted.host.snapshot().console.startswith(data)


@pytest.mark.skipif(_READ_SYSCALL is None, reason="read's syscall number is known for x86_64/arm64")
@pytest.mark.fuse
def test_signal_interrupts_a_blocking_read(mounted: Mounted) -> None:
    """A signal to a reader blocked on the console ends its read with EINTR."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(mounted.fuse.console_path, os.O_RDONLY)
    outcome: list[tuple[int, int]] = []
    done = threading.Event()
    tids: list[int] = []

    def read() -> None:
        tids.append(threading.get_native_id())
        buffer = ctypes.create_string_buffer(2048)
        rv = libc.read(fd, buffer, 2048)  # raw read(2): EINTR is not retried
        outcome.append((rv, ctypes.get_errno()))
        done.set()

    previous = signal.signal(signal.SIGUSR1, lambda _signum, _frame: None)
    reader = threading.Thread(target=read)
    try:
        reader.start()
        while not tids:
            done.wait(0.001)
        assert wait_blocked_in_read(tids[0], done)
        assert reader.ident is not None
        signal.pthread_kill(reader.ident, signal.SIGUSR1)
        if not done.wait(_GIVE_UP):  # not interrupted: give it data, and fail below
            with Hypervisor(mounted.fuse.open_device()) as hv:
                hv.enable(system_config(mounted.arch))
        reader.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        os.close(fd)
    assert outcome == [(-1, errno.EINTR)]


@pytest.mark.fuse
def test_stop_with_an_open_file_leaves_no_mount(tmp_path: Path) -> None:
    """Stopping while a file in the mount is open detaches it and ends the server."""
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(reason)
    fuse = FuseDevice(tmp_path / "host", tmp_path / "mnt", arch=Arch.X86, cpus=2).start()
    fd = os.open(fuse.console_path, os.O_RDONLY)
    pid = fuse.pid
    try:
        fuse.stop()
        assert not os.path.ismount(fuse.mountpoint)
        assert fuse.pid is None
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists()
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the server that would release it is gone
            os.close(fd)
    fuse.stop()  # a second stop does nothing


@pytest.mark.fuse
def test_killed_server_is_cleaned_up(mounted: Mounted) -> None:
    """A server killed under a mount fails requests (ENOTCONN/ECONNABORTED); stop unmounts."""
    fuse = mounted.fuse
    pid = fuse.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    stat = Path(f"/proc/{pid}/stat")
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":  # dead, its fds closed
        threading.Event().wait(0.005)
    with pytest.raises(jailhouse.DeviceError) as info:
        fuse.open_device()
    # The kernel answers ENOTCONN once the connection is marked dead, ECONNABORTED while
    # the dead server's connection is still being aborted: both say "the server is gone".
    assert info.value.errno in {errno.ENOTCONN, errno.ECONNABORTED}
    assert os.path.ismount(fuse.mountpoint)
    fuse.stop()
    assert not os.path.ismount(fuse.mountpoint)


@pytest.mark.fuse
def test_start_refuses_a_mounted_mountpoint(mounted: Mounted, tmp_path: Path) -> None:
    """A second device on a mounted mountpoint is refused; the first keeps working."""
    other = FuseDevice(tmp_path / "other", mounted.fuse.mountpoint)
    with pytest.raises(RuntimeError, match="already a mount"):
        other.start()
    assert other.pid is None
    with mounted.fuse.open_device() as device:
        assert device.ioctl(_abi.DISABLE) == -errno.EINVAL


@pytest.mark.fuse
def test_open_uri_drives_the_lifecycle(mounted: Mounted) -> None:
    """jailhouse.open(fuse.uri) runs a cell through the unchanged kernel backend."""
    with jailhouse.open(mounted.fuse.uri) as hv:
        hv.enable(system_config(mounted.arch))
        cell = hv.run_cell(cell_config(mounted.arch), [Image(b"\x01" * 64, 0x0)])
        assert str(cell.status().state) == "running"
        assert mounted.host.snapshot().cell("inmate").images != ()
        cell.destroy()
        hv.disable()
    assert not mounted.host.snapshot().enabled


def test_import_loads_no_fuse() -> None:
    """Importing jailhouse.testing imports neither mfusepy nor the simulator."""
    code = (
        "import sys, jailhouse.testing; "
        "print(sorted(m for m in ('mfusepy', 'jailhouse.sim') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


# -- a shim with a broken struct layout --------------------------------------------------

_CELL_CREATE_FIELDS = [
    "    uint64_t config_address;",
    "    uint32_t config_size;",
    "    uint32_t padding;",
]
_BREAKS = {
    # The same 16 bytes with the fields moved: only the driver's offsets tell.
    "moved-fields": (
        ["    uint32_t config_size;", "    uint32_t padding;", "    uint64_t config_address;"],
        16,
    ),
    # The padding widened: 24 bytes, so the request number's size field changes.
    "resized": (
        ["    uint64_t config_address;", "    uint32_t config_size;", "    uint64_t padding;"],
        24,
    ),
}
"""Each break: the new body of ``struct jailhouse_cell_create`` and its size."""

_LIFECYCLE = """
import sys
from pathlib import Path
import jailhouse
from jailhouse.sim import SimHost
from jailhouse.hypervisor import Hypervisor, Image
from jailhouse.testing import FuseDevice
from backends import cell_config, system_config

assert jailhouse.__file__.startswith(sys.argv[1]), jailhouse.__file__
kind, tmp = sys.argv[2], Path(sys.argv[3])
arch = jailhouse.Arch.ARM64
host = SimHost(tmp / "host", arch=arch, cpus=4)

def lifecycle(hv):
    hv.enable(system_config(arch))
    try:
        cell = hv.run_cell(cell_config(arch), [Image(bytes(64), 0)])
        cell.destroy()
    finally:
        hv.disable()

try:
    if kind == "sim":
        with Hypervisor(host.device()) as hv:
            lifecycle(hv)
    else:
        with FuseDevice(tmp / "host", tmp / "mnt") as fuse, jailhouse.open(fuse.uri) as hv:
            lifecycle(hv)
except jailhouse.DeviceError as exc:
    print(f"{exc.op}: errno {exc.errno}")
else:
    print("ok")
"""


def _break_shim(tmp: Path, body: list[str], size: int) -> Path:
    """Copy the package and its shim source with another cell_create body; build the shim."""
    shutil.copytree(
        REPO / "jailhouse",
        tmp / "jailhouse",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    shutil.copytree(REPO / "cffi_build", tmp / "cffi_build")
    for name in ("ioctl.cdef.h", "ioctl.csrc.c"):
        path = tmp / "cffi_build" / name
        lines = path.read_text().splitlines()
        start = lines.index("struct jailhouse_cell_create {") + 1
        assert [line.split(";")[0] + ";" for line in lines[start : start + 3]] == (
            _CELL_CREATE_FIELDS
        ), lines[start : start + 3]
        lines[start : start + 3] = body
        text = "\n".join(lines) + "\n"
        path.write_text(
            text.replace(
                "sizeof(struct jailhouse_cell_create) == 16",
                f"sizeof(struct jailhouse_cell_create) == {size}",
            )
        )
    subprocess.run(
        [sys.executable, str(tmp / "cffi_build" / "build_ioctl.py")],
        check=True,
        capture_output=True,
        cwd=tmp,
    )
    return tmp


@pytest.mark.fuse
@pytest.mark.parametrize("brk", sorted(_BREAKS), ids=lambda b: f"fuse-{b}")
def test_broken_shim_layout_fails_through_fuse(brk: str, tmp_path: Path) -> None:
    """A shim with a broken cell_create layout passes on the simulator, fails through FUSE."""
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the broken shim")
    package = _break_shim(tmp_path / "pkg", *_BREAKS[brk])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), str(REPO / "tests")]))
    outputs = {}
    for kind in ("sim", "fuse"):
        run = tmp_path / kind
        run.mkdir()
        result = subprocess.run(
            [sys.executable, "-c", _LIFECYCLE, str(package), kind, str(run)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=run,
        )
        outputs[kind] = result.stdout.strip()
    # Moved fields: the driver takes the size (204) as the address and the address's low
    # 32 bits as the size: ENOMEM when those exceed what kmalloc gives, else EFAULT.
    # Resized: the request number is not the driver's, EINVAL.
    expected = (errno.ENOMEM, errno.EFAULT) if brk == "moved-fields" else (errno.EINVAL,)
    assert outputs["sim"] == "ok"  # the broken shim agrees with itself
    assert outputs["fuse"] in {f"cell create: errno {e}" for e in expected}
