"""A FUSE-mocked ``/dev/jailhouse``: the kernel's syscall path, with a simulated driver behind it.

:class:`FuseDevice` mounts a userspace filesystem whose files answer like the driver's
device node, backed by a :class:`jailhouse.sim.SimHost`.  The code under test opens it
with the unchanged :class:`jailhouse.device.KernelDevice` (only the paths differ), so
every request makes the real trip: the cffi shim builds the ioctl struct, the kernel
copies ``_IOC_SIZE(request)`` bytes of it in, and the server reads the memory the struct
points at (config blob, image array, images) from the calling thread through
``/proc/TID/mem``, as the driver's ``copy_from_user`` would.  It then hands the request to
the simulated driver (:func:`jailhouse.sim.dispatch_ioctl`) and returns its errno to the
caller.

The mount holds two files:

``MOUNT/jailhouse``
    The device node for ioctls.  It is a *directory*: the VFS answers request ``0x1``
    (``JAILHOUSE_DISABLE``, which is also ``FIBMAP``) itself on every regular file, so
    only a directory lets it reach the server.  A directory opens only read-only; the
    driver checks no access mode for ioctls, so that changes nothing for them.
``MOUNT/jailhouse-console``
    The console, a regular file read with ``direct_io`` (a directory cannot be read), with
    the driver's per-open position and its blocking and non-blocking semantics.

The sysfs tree is the simulated host's own (``HOST_ROOT/sys``), read directly.  Open the
device with :meth:`FuseDevice.open_device`, or with ``jailhouse.open(device.uri)``.

The server runs in a subprocess of its own (the same interpreter), not a thread:
the caller's memory is then really another process's, as it is for a driver; the server
cannot share a lock, the GIL or an import with the code under test; and a crash in it
fails the requests with ENOTCONN instead of taking the test run down.  The simulated
host keeps its state on disk under a lock, so the test process can drive the same host
(``SimHost(host_root).script_cell(...)``, ``.snapshot()``) while the server serves it.

The server decodes the structs it receives by the driver's layout (``driver/jailhouse.h``;
ABI fact sheet §1), written down here rather than taken from the shim under test, and
accepts exactly the driver's six request numbers.  A shim whose struct changes size
therefore sends request numbers the mock refuses with EINVAL, and one whose fields move
has them read where the driver reads them, so the tests that run through this device
fail as they would against the real driver.

What the mock cannot reproduce:

- The node is a directory, not a character device: ``stat()`` says so, it opens only
  read-only, and requests the VFS handles itself for directories never reach the mock
  (``FIOQSIZE`` returns the directory's size; ``FIGETBSZ``, ``FIOCLEX``, ``FIONBIO``,
  ``FIOASYNC`` and the freeze and clone requests are handled by the VFS for the real
  node too).
- The console is a second file, not a ``read()`` on the node; each open of it has its
  own position, as each open of the node has with the driver.
- The kernel copies exactly ``_IOC_SIZE`` bytes at the argument before the server sees
  the request, so an unreadable argument gives EFAULT for every request number, also an
  unknown one (the driver answers EINVAL to an unknown request without touching the
  argument).  For ``ENABLE`` that copy is the first 8 bytes of the system config.
- ``/proc/PID/mem`` reads memory the caller could not read itself (``PROT_NONE``
  pages), where ``copy_from_user`` answers EFAULT; only unmapped memory faults.
- A blocking console read is interrupted by a signal only through FUSE's interrupt
  request; the reader sees EINTR after the server's next 100 ms poll.  A fatal signal
  ends the read at once, as with the driver.
- There is no hypervisor: whatever the simulator does not simulate (the firmware, CPU
  hot-plug by the kernel, real inmates) the mock does not either.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import importlib.util
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import TracebackType

    from jailhouse.config.model import Arch
    from jailhouse.device import KernelDevice
    from jailhouse.sim import SimHost

__all__ = [
    "CONSOLE_NAME",
    "DRIVER_REQUESTS",
    "NODE_NAME",
    "FuseDevice",
    "fuse_unavailable",
    "mount_fuse_device",
]

NODE_NAME: Final = "jailhouse"
"""The device node's name inside the mount (a directory; see the module docstring)."""
CONSOLE_NAME: Final = "jailhouse-console"
"""The console file's name inside the mount."""

# The driver's request numbers and argument structs (driver/jailhouse.h, ABI fact sheet
# §1; identical on x86-64 and arm64).  The kernel ABI is frozen, so these are the oracle
# the shim is checked against: they must not come from the shim.
_ENABLE: Final = 0x40080000  # _IOW(0, 0, void *): the argument is the config itself
_DISABLE: Final = 0x00000001  # _IO(0, 1)
_CELL_CREATE: Final = 0x40100002  # _IOW(0, 2, struct jailhouse_cell_create)
_CELL_LOAD: Final = 0x40300003  # _IOW(0, 3, struct jailhouse_cell_load)
_CELL_START: Final = 0x40280004  # _IOW(0, 4, struct jailhouse_cell_id)
_CELL_DESTROY: Final = 0x40280005  # _IOW(0, 5, struct jailhouse_cell_id)

DRIVER_REQUESTS: Final[Mapping[int, str]] = {
    _ENABLE: "enable",
    _DISABLE: "disable",
    _CELL_CREATE: "cell create",
    _CELL_LOAD: "cell load",
    _CELL_START: "cell start",
    _CELL_DESTROY: "cell destroy",
}
"""The request numbers the mock serves, as the 64-bit driver defines them; any other
number (also one whose size field differs) gets EINVAL, as from the driver."""

_CELL_CREATE_LAYOUT: Final = struct.Struct("<QI4x")
"""``struct jailhouse_cell_create``: config_address, config_size, padding."""
_CELL_ID_LAYOUT: Final = struct.Struct("<i4x32s")
"""``struct jailhouse_cell_id``: id, padding, name[32]."""
_CELL_LOAD_LAYOUT: Final = struct.Struct("<i4x32sI4x")
"""``struct jailhouse_cell_load`` without ``image[]``: cell_id, num_preload_images, padding."""
_PRELOAD_IMAGE_LAYOUT: Final = struct.Struct("<QQQ8x")
"""``struct jailhouse_preload_image``: source_address, size, target_address, padding."""

_FUSE_LIBRARY: Final = "fuse3"
_MOUNT_TIMEOUT: Final = 30.0
_EXIT_TIMEOUT: Final = 10.0
_POLL: Final = 0.01
_PR_SET_PDEATHSIG: Final = 1
_SERVER_MAIN: Final = "import sys; from jailhouse.testing.fusedev import _serve; sys.exit(_serve())"


def fuse_unavailable() -> str | None:
    """Say why a :class:`FuseDevice` cannot be mounted here, or return ``None`` if it can.

    Checks ``/dev/fuse``, ``fusermount3`` and root (reading the caller's memory through
    ``/proc/PID/mem`` and mounting need it).  A missing ``mfusepy`` is not a reason to
    skip: it is a dependency of the ``fuse`` extra, and :class:`FuseDevice` raises
    :class:`ModuleNotFoundError` for it.
    """
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is absent (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    if os.geteuid() != 0:
        return "not root: the FUSE device reads callers' memory through /proc/PID/mem"
    return None


def _require_mfusepy() -> None:
    """Raise a clear error if ``mfusepy`` cannot be imported by the server."""
    if importlib.util.find_spec("mfusepy") is None:
        raise ModuleNotFoundError(
            "jailhouse.testing.FuseDevice needs mfusepy: pip install 'python-jailhouse[fuse]'",
            name="mfusepy",
        )


class FuseDevice:
    """A FUSE-mocked ``/dev/jailhouse`` serving the simulated host under ``host_root``.

    :meth:`start` (or entering the ``with`` block) starts the server process and waits for
    the mount; :meth:`stop` (or leaving the block, also by an exception) unmounts it and
    ends the server, killing it if it does not exit.  Close every file opened in the mount
    before stopping; a file still open is detached lazily and the server is killed.
    If the process that started the device dies without stopping it, the server unmounts
    and exits (``PR_SET_PDEATHSIG``, which fires when the starting *thread* ends: start
    the device from a thread that outlives it, such as the main thread).

    Args:
        host_root: The simulated host's directory (:class:`jailhouse.sim.SimHost`);
            created if missing.
        mountpoint: An empty directory to mount on; created if missing.
        arch: The host's architecture, if the host does not fix it yet.
        cpus: The host's number of CPUs, if the host does not fix it yet.
        timeout: Seconds to wait for the mount to appear.

    Attributes:
        host_root: The simulated host's directory.
        mountpoint: Where the filesystem is mounted.
        device_path: The device node (``mountpoint / "jailhouse"``), for ioctls.
        console_path: The console file (``mountpoint / "jailhouse-console"``).
        sysfs_root: The host's sysfs tree (``host_root / "sys"``).
        arch: The host's architecture once known (after :meth:`start`), else ``None``.
    """

    def __init__(
        self,
        host_root: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        *,
        arch: Arch | None = None,
        cpus: int | None = None,
        timeout: float = _MOUNT_TIMEOUT,
    ) -> None:
        """Remember the paths; nothing is started yet."""
        self.host_root = Path(host_root).absolute()
        self.mountpoint = Path(mountpoint).absolute()
        self.device_path = self.mountpoint / NODE_NAME
        self.console_path = self.mountpoint / CONSOLE_NAME
        self.sysfs_root = self.host_root / "sys"
        self.arch: Arch | None = arch
        self._cpus = cpus
        self._timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def uri(self) -> str:
        """The ``jailhouse.open`` URI of the device: the kernel scheme with these paths."""
        query = [
            f"device={quote(str(self.device_path))}",
            f"console={quote(str(self.console_path))}",
            f"sysfs={quote(str(self.sysfs_root))}",
        ]
        if self.arch is not None:
            query.append(f"arch={self.arch.name.lower()}")
        return "jailhouse:///system?" + "&".join(query)

    def open_device(self) -> KernelDevice:
        """Open the device with the kernel backend; the caller closes it.

        Raises:
            DeviceError: The mount is not there (not started, or the server died).
        """
        from jailhouse.device import KernelDevice  # noqa: PLC0415 - loads the cffi shim

        return KernelDevice(
            self.device_path,
            console_path=self.console_path,
            sysfs_root=self.sysfs_root,
            arch=self.arch,
        )

    def start(self) -> Self:
        """Start the server and wait until the mount is there.

        Raises:
            ModuleNotFoundError: ``mfusepy`` is not installed.
            RuntimeError: FUSE is unavailable here (see :func:`fuse_unavailable`), the
                mountpoint is already a mount, or the server failed or timed out (the
                message carries its log).
            ValueError: ``arch`` or ``cpus`` conflicts with the host.
        """
        if self._process is not None:
            raise RuntimeError(f"{self!r} is already started")
        _require_mfusepy()
        reason = fuse_unavailable()
        if reason is not None:
            raise RuntimeError(f"cannot mount a FUSE device: {reason}")
        from jailhouse.sim import SimHost  # noqa: PLC0415 - the simulator loads only when asked

        host = SimHost(self.host_root, arch=self.arch, cpus=self._cpus)  # validates, creates
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(self.mountpoint):
            raise RuntimeError(f"mountpoint {self.mountpoint} is already a mount")
        command = [
            sys.executable,
            "-c",
            _SERVER_MAIN,
            str(self.host_root),
            str(self.mountpoint),
            "--parent",
            str(os.getpid()),
        ]
        self._log = tempfile.TemporaryFile(prefix="jailhouse-fusedev-")  # noqa: SIM115 - kept until stop()
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                env=_server_environment(),
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise
        try:
            self._wait_for_mount()
        except BaseException:
            self.stop()
            raise
        self.arch = host.arch or self.arch
        return self

    def _wait_for_mount(self) -> None:
        """Poll until the mount is there; raise with the server's log if it is not."""
        process = self._process
        if process is None:  # pragma: no cover - start() sets it
            raise RuntimeError("the server is not started")
        deadline = time.monotonic() + self._timeout
        while not os.path.ismount(self.mountpoint):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the FUSE server exited with {process.returncode} before mounting "
                    f"{self.mountpoint}: {self._log_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the FUSE server did not mount {self.mountpoint} within "
                    f"{self._timeout} s: {self._log_text()}"
                )
            time.sleep(_POLL)

    def _log_text(self) -> str:
        """Return the server's output so far (its last 4000 characters)."""
        if self._log is None:
            return "(no log)"
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        return text[-4000:] if text else "(empty log)"

    def server_log(self) -> str:
        """Return what the server wrote to stdout and stderr so far."""
        return self._log_text()

    def stop(self) -> None:
        """Unmount and end the server; stopping twice does nothing.

        Unmounts with ``fusermount3 -u``; if a file in the mount is still open, detaches
        it lazily (``-z``).  A server that does not exit after the unmount is sent
        SIGTERM, then SIGKILL, and a mount it leaves behind is removed.
        """
        process, self._process = self._process, None
        if process is None:
            return
        try:
            clean = not os.path.ismount(self.mountpoint) or _fusermount(self.mountpoint)
            if not clean:
                # A file is still open: detach the mount; the server would serve it until
                # that file is closed, so it is ended now rather than waited for.
                _fusermount(self.mountpoint, lazy=True)
            _end(process, patient=clean)
        finally:
            if process.poll() is None:  # pragma: no cover - _end kills it
                process.kill()
                process.wait()
            if os.path.ismount(self.mountpoint):
                _fusermount(self.mountpoint, lazy=True)
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> Self:
        """Start the device (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the device (see :meth:`stop`)."""
        self.stop()

    def __repr__(self) -> str:
        """Name the host, the mount and the server."""
        state = "stopped" if self._process is None else f"pid={self._process.pid}"
        return f"FuseDevice({str(self.host_root)!r}, {str(self.mountpoint)!r}, {state})"


@contextlib.contextmanager
def mount_fuse_device(
    host_root: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
    *,
    arch: Arch | None = None,
    cpus: int | None = None,
) -> Iterator[FuseDevice]:
    """Mount a FUSE-mocked ``/dev/jailhouse`` for the block; unmount it afterwards.

    Example::

        with mount_fuse_device(tmp / "host", tmp / "mnt", arch=Arch.ARM64, cpus=4) as fuse:
            with jailhouse.open(fuse.uri) as hv:
                hv.enable(system)

    Args:
        host_root: The simulated host's directory.
        mountpoint: An empty directory to mount on.
        arch: The host's architecture, if the host does not fix it yet.
        cpus: The host's number of CPUs, if the host does not fix it yet.

    Yields:
        The started device; its paths are :attr:`FuseDevice.device_path`,
        :attr:`FuseDevice.console_path` and :attr:`FuseDevice.sysfs_root`.
    """
    with FuseDevice(host_root, mountpoint, arch=arch, cpus=cpus) as device:
        yield device


@functools.cache
def _libfuse3() -> str | None:
    """Return the name of libfuse 3's shared library, if the linker knows one."""
    return ctypes.util.find_library(_FUSE_LIBRARY)


def _server_environment() -> dict[str, str]:
    """Return the server's environment: libfuse 3 pinned, this package importable."""
    env = dict(os.environ)
    if "FUSE_LIBRARY_PATH" not in env:
        # mfusepy prefers libfuse 2 when both are installed; the mock needs FUSE 3.
        library = _libfuse3()
        if library is not None:
            env["FUSE_LIBRARY_PATH"] = library
    package_parent = str(Path(__file__).resolve().parents[2])
    paths = [package_parent, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _fusermount(mountpoint: Path, *, lazy: bool = False) -> bool:
    """Unmount with ``fusermount3``; return whether it succeeded."""
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), str(mountpoint)]
    result = subprocess.run(  # noqa: S603 - fixed command, no shell
        command, check=False, stdin=subprocess.DEVNULL, capture_output=True
    )
    return result.returncode == 0


def _end(process: subprocess.Popen[bytes], *, patient: bool) -> None:
    """End the server: wait for it to exit (if ``patient``), else terminate, then kill it."""
    steps = (
        (None, process.terminate, process.kill) if patient else (process.terminate, process.kill)
    )
    for stop in steps:
        if stop is not None:
            stop()
        try:
            process.wait(_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            continue
        return


# -- the server (runs in the subprocess) ------------------------------------------------


class _CallerMemory:
    """The calling thread's memory for one ioctl, as the driver's ``copy_from_user`` sees it.

    The bytes the kernel copied in (``_IOC_SIZE(request)`` at the argument) are served
    from that copy; everything else is read from ``/proc/TID/mem``.  The argument struct
    and each ``image[]`` entry are read by the driver's layout and handed to the
    simulator re-encoded in the shim's, so a shim whose layout differs is read as the
    driver would read it.

    Args:
        tid: The calling thread (FUSE's context pid is the thread's id).
        request: The request number.
        arg: The ioctl argument (a user-space address).
        copied: The bytes the kernel copied in at ``arg``.
    """

    def __init__(self, tid: int, request: int, arg: int, copied: bytes) -> None:
        """Remember the call."""
        self.tid = tid
        self.request = request
        self.arg = arg
        self.copied = copied

    def __call__(self, address: int, size: int) -> bytes:
        """Return ``size`` bytes at ``address``, as the driver would read them.

        Raises:
            OSError: EFAULT where the memory is not mapped; EINVAL where a struct's
                values do not fit the shim's layout.
        """
        request, arg = self.request, self.arg
        if address == arg and size == len(self.copied) and size:
            if request == _CELL_CREATE:
                return _reencode_cell_create(self.copied)
            if request in (_CELL_START, _CELL_DESTROY):
                return _reencode_cell_id(self.copied)
            if request == _CELL_LOAD:
                return _reencode_cell_load(self.copied)
        array = arg + _CELL_LOAD_LAYOUT.size
        if (
            request == _CELL_LOAD
            and address >= array
            and (address - array) % _PRELOAD_IMAGE_LAYOUT.size == 0
            and size == _PRELOAD_IMAGE_LAYOUT.size
        ):
            return _reencode_preload_image(self._raw(address, size))
        return self._raw(address, size)

    def _raw(self, address: int, size: int) -> bytes:
        """Read memory, taking the part the kernel copied in from that copy."""
        from jailhouse._usermem import read_user  # noqa: PLC0415 - server side only

        start, end = self.arg, self.arg + len(self.copied)
        low, high = max(address, start), min(address + size, end)
        if low >= high:
            return read_user(self.tid, address, size)
        before = read_user(self.tid, address, low - address)
        after = read_user(self.tid, high, address + size - high)
        return before + self.copied[low - start : high - start] + after


def _shim_bytes(cdecl: str, fields: dict[str, Any]) -> bytes:
    """Encode a struct in the shim's layout.

    Raises:
        OSError: EINVAL when a value does not fit the shim's field.
    """
    from jailhouse._ffi import ffi  # noqa: PLC0415 - server side only

    try:
        obj = ffi.new(f"{cdecl} *", fields)
    except (OverflowError, TypeError, ValueError, IndexError) as exc:
        raise OSError(errno.EINVAL, f"{cdecl}: {exc}") from None
    return ffi.buffer(obj, ffi.sizeof(cdecl))[:]


def _reencode_cell_create(raw: bytes) -> bytes:
    """Read a ``jailhouse_cell_create`` by the driver's layout; encode it in the shim's."""
    address, size = _CELL_CREATE_LAYOUT.unpack(raw)
    return _shim_bytes(
        "struct jailhouse_cell_create", {"config_address": address, "config_size": size}
    )


def _reencode_cell_id(raw: bytes) -> bytes:
    """Read a ``jailhouse_cell_id`` by the driver's layout; encode it in the shim's."""
    cell_id, name = _CELL_ID_LAYOUT.unpack(raw)
    return _shim_bytes("struct jailhouse_cell_id", {"id": cell_id, "name": name})


def _reencode_cell_load(raw: bytes) -> bytes:
    """Read a ``jailhouse_cell_load`` header by the driver's layout; encode it in the shim's."""
    cell_id, name, count = _CELL_LOAD_LAYOUT.unpack(raw)
    return _shim_bytes(
        "struct jailhouse_cell_load",
        {"cell_id": {"id": cell_id, "name": name}, "num_preload_images": count},
    )


def _reencode_preload_image(raw: bytes) -> bytes:
    """Read a ``jailhouse_preload_image`` by the driver's layout; encode it in the shim's."""
    source, size, target = _PRELOAD_IMAGE_LAYOUT.unpack(raw)
    return _shim_bytes(
        "struct jailhouse_preload_image",
        {"source_address": source, "size": size, "target_address": target},
    )


def _ioc_size(request: int) -> int:
    """Return ``_IOC_SIZE(request)``: the bytes the kernel copies in for an ``_IOW``."""
    return (request >> 16) & 0x3FFF


def _operations(host: SimHost, mfusepy: Any) -> Any:  # noqa: ANN401 - mfusepy is untyped
    """Build the FUSE operations serving ``host``."""
    from jailhouse.sim import ConsoleCursor, dispatch_ioctl  # noqa: PLC0415 - server side

    fuse_os_error = mfusepy.FuseOSError
    # libfuse's fuse_interrupted(), which mfusepy does not wrap: whether the kernel sent an
    # interrupt request for the request this thread is serving.
    interrupted: Callable[[], int] = getattr(
        getattr(mfusepy, "_libfuse", None), "fuse_interrupted", lambda: 0
    )

    class FuseInterrupt(threading.Event):
        """The driver's ``signal_pending`` check: FUSE's interrupt request for this read."""

        def wait(self, timeout: float | None = None) -> bool:
            time.sleep(timeout or 0)
            return bool(interrupted())

    class DeviceOperations(mfusepy.Operations):  # type: ignore[misc]  # mfusepy is untyped
        """The driver's file operations on the simulated host."""

        use_ns = True  # nanosecond times; also silences mfusepy's DeprecationWarning

        def __init__(self) -> None:
            self.cursors: dict[int, ConsoleCursor] = {}
            self.lock = threading.Lock()
            self.next_fh = 1

        def getattr(self, path: str, fh: object = None) -> dict[str, int]:
            del fh
            if path == "/":
                return {"st_mode": 0o040755, "st_nlink": 3}
            if path == "/" + NODE_NAME:
                return {"st_mode": 0o040600, "st_nlink": 2}
            if path == "/" + CONSOLE_NAME:
                return {"st_mode": 0o100400, "st_nlink": 1, "st_size": 0}
            raise fuse_os_error(errno.ENOENT)

        def readdir(self, path: str, fh: int) -> list[str]:
            del fh
            if path == "/":
                return [".", "..", NODE_NAME, CONSOLE_NAME]
            return [".", ".."]

        def open(self, path: str, fi: Any) -> int:  # noqa: ANN401 - struct fuse_file_info
            if path != "/" + CONSOLE_NAME:
                raise fuse_os_error(errno.ENOENT)
            with self.lock:
                fh, self.next_fh = self.next_fh, self.next_fh + 1
                self.cursors[fh] = ConsoleCursor()
            fi.fh = fh
            fi.direct_io = 1  # st_size is 0: without it the page cache answers every read
            fi.nonseekable = 1  # the driver's llseek is noop_llseek
            return 0

        def release(self, path: str, fi: Any) -> int:  # noqa: ANN401 - struct fuse_file_info
            del path
            with self.lock:
                self.cursors.pop(fi.fh, None)
            return 0

        def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:  # noqa: ANN401
            del path, offset
            with self.lock:
                cursor = self.cursors.get(fi.fh)
            if cursor is None:
                raise fuse_os_error(errno.EBADF)
            nonblock = bool(fi.flags & os.O_NONBLOCK)  # the file's current flags
            try:
                return host.read_console(cursor, size, nonblock=nonblock, interrupt=FuseInterrupt())
            except OSError as exc:
                raise fuse_os_error(exc.errno or errno.EIO) from None

        def ioctl(  # noqa: PLR0917 - mfusepy's positional callback signature
            self,
            path: str,
            cmd: int,
            arg: int | None,
            fh: object,
            flags: int,
            data: int | None,
        ) -> int:
            del fh, flags
            if path != "/" + NODE_NAME:
                raise fuse_os_error(errno.ENOTTY)
            if cmd not in DRIVER_REQUESTS:
                raise fuse_os_error(errno.EINVAL)  # the driver's default case
            size = _ioc_size(cmd)
            copied = ctypes.string_at(data, size) if data and size else b""
            tid = mfusepy.fuse_get_context()[2]
            address = arg or 0
            result = dispatch_ioctl(host, cmd, address, _CallerMemory(tid, cmd, address, copied))
            if result < 0:
                raise fuse_os_error(-result)
            return result

    return DeviceOperations()


def _serve(argv: Sequence[str] | None = None) -> int:
    """Run the server in the foreground until unmounted; the subprocess's entry point.

    Args:
        argv: ``HOST_ROOT MOUNTPOINT [--parent PID]``; ``sys.argv[1:]`` by default.

    Returns:
        The exit status.
    """
    import argparse  # noqa: PLC0415 - server side only

    parser = argparse.ArgumentParser(prog="jailhouse.testing.fusedev")
    parser.add_argument("host_root", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--parent", type=int, help="exit when this process ends")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.parent is not None:
        # Unmount and exit (libfuse's SIGTERM handler) when the test process dies.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != args.parent:
            return 1
    import mfusepy  # noqa: PLC0415 - optional dependency, server side only

    if mfusepy.fuse_version_major != 3:
        sys.stderr.write(
            f"jailhouse.testing.fusedev needs libfuse 3, mfusepy loaded "
            f"{mfusepy.fuse_version_major}; set FUSE_LIBRARY_PATH to libfuse3.so.3\n"
        )
        return 2
    from jailhouse.sim import SimHost  # noqa: PLC0415 - server side only

    host = SimHost(args.host_root)
    mfusepy.FUSE(
        _operations(host, mfusepy),
        str(args.mountpoint),
        raw_fi=True,
        foreground=True,
        fsname="jailhouse-fusedev",
    )
    return 0
