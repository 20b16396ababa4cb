"""The simulated Jailhouse host: driver and hypervisor semantics over a state directory.

Each operation follows the real driver's and hypervisor's checks in their order (ABI fact
sheet §2) and fails with the errno they return, leaving the state as the real stack
would.  Every operation runs under an exclusive ``flock`` on ``root/.lock``: it loads
``state.json``, changes it, writes it back atomically and rewrites the sysfs files that
changed, so several processes can share one host.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

from jailhouse import _abi
from jailhouse._ffi import ffi
from jailhouse._listing import SIM_TREE_PENDING
from jailhouse.config.flags import (
    CONFIG_REVISION,
    PAGE_SIZE,
    Arch,
    CellFlag,
    MemFlag,
    PciType,
    SystemFlag,
    format_cpus,
)
from jailhouse.errors import InvalidConfigError
from jailhouse.sim import _sysfs
from jailhouse.sim._state import (
    CONSOLE_SIZE,
    COUNTER_MASK,
    ON_START,
    OPS,
    U32,
    CellRecord,
    Fault,
    HostInfo,
    Ring,
    Script,
    State,
    start_burst,
    stat_names,
    tick_profile,
)
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from jailhouse._ffi import CellDesc
    from jailhouse.config.model import CellConfig
    from jailhouse.sim._device import FakeDevice

__all__ = [
    "CellSnapshot",
    "ConsoleCursor",
    "HostSnapshot",
    "SimHost",
    "dispatch_ioctl",
]

_SYSTEM_HEADER_SIZE: Final = ffi.sizeof("struct jailhouse_system")
_CELL_DESC_SIZE: Final = ffi.sizeof("struct jailhouse_cell_desc")
_ROOT_CELL_OFFSET: Final = ffi.offsetof("struct jailhouse_system", "root_cell")
_NAME_OFFSET: Final = ffi.offsetof("struct jailhouse_cell_desc", "name")
_FLAGS_OFFSET: Final = ffi.offsetof("struct jailhouse_cell_desc", "flags")
_KMALLOC_MAX: Final = 4 << 20
"""Largest ``kmalloc`` on a 4 KiB-page kernel: a bigger ``config_size`` gives ENOMEM."""
_TEMPORARY_PAGES: Final = 16
"""The hypervisor maps a cell config through 16 temporary pages (``NUM_TEMPORARY_PAGES``)."""
_MAX_CPU_SET: Final = PAGE_SIZE
"""The hypervisor refuses ``cpu_set_size`` above one page."""
_CORE_SIZE: Final = 0x40000
"""Size of the simulated hypervisor core image (and of the ``core`` attribute)."""
_PERCPU_SIZE: Final = 0x6000
"""Hypervisor memory each CPU slot takes."""
_REMAP_POOL_PAGES: Final = 0x20000
"""Pages of the simulated remapping pool."""
_MAX_HOST_CPUS: Final = 8192
_POLL: Final = 0.1
"""A blocking console read polls every 100 ms, as the driver does."""
_IMAGE_CHUNK: Final = 1 << 20
_NAMELEN: Final = 31
_STATE_FILES: Final = ("state.json", "host.json")
"""The files written beside themselves as ``.<name>.<pid>.<thread>.tmp`` and renamed."""


class _Errno(Exception):  # noqa: N818 - an errno in flight, not an error of this module
    """An errno the simulated driver returns; the state it leaves is committed."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)
        self.errno = err
        self.message = message


@dataclass
class ConsoleCursor:
    """One open file's console position, as the driver keeps it per file.

    Attributes:
        head: How far into the console (``tail`` units, a u32) this file has read.
        snapshot_id: The post-disable console snapshot this file has drained.
    """

    head: int = 0
    snapshot_id: int = 0


@dataclass(frozen=True, slots=True)
class CellSnapshot:
    """A cell as :meth:`SimHost.snapshot` saw it.

    Attributes:
        id: The cell id (0 for the root cell).
        name: The name, one character per byte (latin-1, as the config codec packs it).
        state: The cell state.
        cpus: The CPUs the cell holds.
        failed_cpus: Those of its CPUs in the failed state.
        images: ``(target_address, size)`` of the images the last load copied.
    """

    id: int
    name: str
    state: CellState
    cpus: frozenset[int]
    failed_cpus: frozenset[int]
    images: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        """Render as ``1 'inmate' shut down, CPUs 2-3``."""
        text = f"{self.id} {self.name!r} {self.state.text}, CPUs {format_cpus(self.cpus) or '-'}"
        if self.failed_cpus:
            text += f", failed {format_cpus(self.failed_cpus)}"
        return text


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """A frozen summary of a simulated host.

    Attributes:
        arch: The host's architecture, ``None`` until it is known.
        cpus: How many CPUs the host has, ``None`` until it is known.
        enabled: Whether the hypervisor runs.
        online: The CPUs Linux has online.
        root_cpus: The root cell's CPUs (empty while disabled).
        cells: Every cell, the root cell first (empty while disabled).
        console: The console ring's text from its oldest byte (at most 2048 bytes), kept
            after disable.
        console_total: Bytes ever written to the ring since the last enable (its tail).
    """

    arch: Arch | None
    cpus: int | None
    enabled: bool
    online: frozenset[int]
    root_cpus: frozenset[int]
    cells: tuple[CellSnapshot, ...]
    console: bytes
    console_total: int

    def cell(self, key: int | str) -> CellSnapshot:
        """Return the cell with this id (an int) or name (a str).

        Raises:
            KeyError: There is no such cell.
        """
        for cell in self.cells:
            if (isinstance(key, str) and cell.name == key) or cell.id == key:
                return cell
        raise KeyError(key)

    @property
    def free_cpus(self) -> frozenset[int]:
        """CPUs no non-root cell holds."""
        taken = frozenset().union(*(c.cpus for c in self.cells[1:]))
        return frozenset(range(self.cpus or 0)) - taken

    def __str__(self) -> str:
        """Render a few lines like ``jailhouse cell list``."""
        arch = self.arch.name if self.arch is not None else "?"
        head = (
            f"{arch} host, {self.cpus if self.cpus is not None else '?'} CPUs, online "
            f"{format_cpus(self.online) or '-'}, {'enabled' if self.enabled else 'disabled'}"
        )
        return "\n".join([head, *(f"  {cell}" for cell in self.cells)])


@dataclass
class _Txn:
    info: HostInfo
    state: State


def _name(raw: bytes) -> bytes:
    """The driver's view of a 32-byte name field: ``name[31] = 0``, up to the first NUL."""
    return raw[:_NAMELEN].split(b"\0", 1)[0]


def _selector(cell: int | str) -> tuple[int, bytes]:
    """Turn an id or a name into the driver's ``(id, name)``; id -1 selects by name."""
    if isinstance(cell, str):
        return _abi.CELL_ID_UNUSED, _name(cell.encode("latin-1"))
    return int(cell), b""


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _bytes_reader(data: bytes, what: str) -> Callable[[int, int], bytes]:
    """Read ``data`` as user memory: a range beyond its end faults."""

    def read(offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > len(data):
            raise _Errno(
                errno.EFAULT,
                f"{what}: {size} bytes at offset {offset} lie beyond its {len(data)} bytes",
            )
        return data[offset : offset + size]

    return read


def _errname(err: int) -> str:
    return errno.errorcode.get(err, str(err))


class SimHost:
    """A simulated Jailhouse host whose whole state lives under ``root``.

    ``root/host.json`` fixes the machine (architecture, number of CPUs) once it is known:
    from the arguments, else from the first system config the host is enabled with
    (its arch, and the highest CPU of its root cell plus one).  ``root/state.json`` holds
    the driver and hypervisor.  ``root/sys`` is a real sysfs tree (:attr:`sysfs_root`)
    with the driver's files in their exact formats.

    The operations raise :class:`OSError` with the errno the real driver and hypervisor
    return, in their check order (ABI fact sheet §2).  Where the real machine would hang
    (enabling with a root cell that leaves out an online CPU) the simulator refuses with
    EINVAL and says so on the console.

    Args:
        root: The host's directory; created if missing.
        arch: The host's architecture.
        cpus: How many CPUs it has (all online at first).

    Raises:
        ValueError: ``arch`` or ``cpus`` conflicts with what ``host.json`` fixed, or
            ``cpus`` is out of range.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        arch: Arch | None = None,
        cpus: int | None = None,
    ) -> None:
        """Open (or create) the host under ``root``."""
        if cpus is not None and not 1 <= cpus <= _MAX_HOST_CPUS:
            raise ValueError(f"cpus = {cpus}: a host has 1 to {_MAX_HOST_CPUS} CPUs")
        if arch is not None and not Arch(arch).known:
            raise ValueError(f"arch = {arch!r}: not an architecture Jailhouse supports")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._info: HostInfo | None = None
        with self._locked():
            self._sweep()
            info = self._read_info()
            if arch is not None and info.arch is not None and info.arch != arch:
                raise ValueError(
                    f"arch = {Arch(arch).name}: the host at {self.root} is {info.arch.name}"
                )
            if cpus is not None and info.cpus is not None and info.cpus != cpus:
                raise ValueError(f"cpus = {cpus}: the host at {self.root} has {info.cpus} CPUs")
            state = self._read_state()
            if info.arch is None and arch is not None:
                info.arch = Arch(arch)
            if info.cpus is None and cpus is not None:
                info.cpus = cpus
                state.online = set(range(cpus))
            self._mark_pending()
            self._write_info(info)
            self._write_state(state)
            sys_root = self.sysfs_root
            _sysfs.skeleton(sys_root)
            new = _sysfs.render(info, state)
            _sysfs.apply(sys_root, self._scratch, _sysfs.read_tree(sys_root), new)
            _sysfs.remove_strays(sys_root, self._scratch, new)
            self._clear_pending()

    # -- files and locking ---------------------------------------------------------

    @property
    def sysfs_root(self) -> Path:
        """The directory that plays ``/sys``."""
        return self.root / "sys"

    @property
    def _scratch(self) -> Path:
        return self.root / ".scratch"

    @property
    def arch(self) -> Arch | None:
        """The host's architecture; ``None`` until it is fixed."""
        return self._host_info().arch

    @property
    def cpus(self) -> int | None:
        """How many CPUs the host has; ``None`` until it is fixed."""
        return self._host_info().cpus

    def _host_info(self) -> HostInfo:
        if self._info is not None and self._info.arch is not None and self._info.cpus is not None:
            return self._info  # fixed for good
        self._info = self._read_info()
        return self._info

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _mark_pending(self) -> None:
        """Say that ``sys/`` may lag ``state.json`` from here on (:data:`SIM_TREE_PENDING`).

        Only called under the lock, before the state changes.  The quick ``cell list``
        reads ``sys/`` without opening the host; the mark sends it to the full path, which
        renders the tree again, if this writer dies before :meth:`_clear_pending`.
        """
        os.close(
            os.open(self.root / SIM_TREE_PENDING, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        )

    def _clear_pending(self) -> None:
        """Say that ``sys/`` shows ``state.json`` again."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / SIM_TREE_PENDING).unlink()

    def _sweep(self) -> None:
        """Remove what a writer killed mid-operation left: scratch entries, temporary files.

        Only called under the lock.  Every scratch directory and temporary file is created
        and removed by a lock holder, so while we hold the lock none is still being
        written: whatever is there belongs to a process that died holding the lock.  (The
        temporary files of a killed writer inside ``sys/`` are repaired when the host is
        opened: :func:`_sysfs.apply` removes every file the rendering does not have.)
        """
        scratch = self._scratch
        with contextlib.suppress(FileNotFoundError):
            for entry in scratch.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        for name in _STATE_FILES:
            for tmp in self.root.glob(f".{name}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    def _read_info(self) -> HostInfo:
        try:
            return HostInfo.from_json((self.root / "host.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return HostInfo()

    def _write_info(self, info: HostInfo) -> None:
        path = self.root / "host.json"
        text = info.to_json()
        with contextlib.suppress(FileNotFoundError):
            if path.read_text(encoding="utf-8") == text:
                return
        self._atomic_write(path, text)

    def _read_state(self) -> State:
        try:
            return State.from_json((self.root / "state.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return State()

    def _write_state(self, state: State) -> None:
        path = self.root / "state.json"
        text = state.to_json()
        with contextlib.suppress(FileNotFoundError):
            if path.read_text(encoding="utf-8") == text:
                return  # opening a host rewrites nothing (no fsync) when nothing changed
        self._atomic_write(path, text)

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Txn]:
        """Load the state under the lock; write back what changed, also after an errno."""
        with self._locked():
            info = self._read_info()
            try:
                raw = (self.root / "state.json").read_text(encoding="utf-8")
            except FileNotFoundError:
                raw = State().to_json()
            old_info = HostInfo(info.arch, info.cpus)
            txn = _Txn(info, State.from_json(raw))
            try:
                yield txn
            except _Errno:
                self._commit(old_info, raw, txn)
                raise
            self._commit(old_info, raw, txn)

    def _commit(self, old_info: HostInfo, raw: str, txn: _Txn) -> None:
        text = txn.state.to_json()
        info_changed = old_info != txn.info
        if text == raw and not info_changed:
            return
        self._sweep()
        self._mark_pending()
        if info_changed:
            self._write_info(txn.info)
            self._info = txn.info
        self._atomic_write(self.root / "state.json", text)
        old = _sysfs.render(old_info, State.from_json(raw))
        _sysfs.apply(self.sysfs_root, self._scratch, old, _sysfs.render(txn.info, txn.state))
        self._clear_pending()

    def _run(self, op: Callable[[_Txn], None]) -> None:
        """Run one operation; an errno becomes :class:`OSError` after the commit."""
        try:
            with self._transaction() as txn:
                op(txn)
        except _Errno as exc:
            raise OSError(exc.errno, exc.message) from None

    def _call(self, op: Callable[[_Txn], None]) -> int:
        """Run one operation as an ioctl: return 0 or ``-errno``."""
        try:
            with self._transaction() as txn:
                op(txn)
        except _Errno as exc:
            return -exc.errno
        return 0

    # -- public operations ---------------------------------------------------------

    def enable(self, blob: bytes) -> None:
        """Enable the hypervisor with a system config (``JAILHOUSE_ENABLE``).

        Raises:
            OSError: EINVAL for a bad signature, revision or arch, an empty root CPU set,
                hypervisor memory too small, or a root CPU set other than the online
                CPUs; EBUSY when already enabled; EFAULT when the blob is shorter than
                its header says.
        """
        self._run(lambda txn: self._op_enable(txn, _bytes_reader(blob, "system config")))

    def disable(self) -> None:
        """Disable the hypervisor (``JAILHOUSE_DISABLE``), destroying every cell first.

        Raises:
            OSError: EINVAL while disabled; EPERM when a cell refuses to shut down (the
                cells before it stay destroyed); EBUSY when a root CPU is offline.
        """
        self._run(self._op_disable)

    def cell_create(self, blob: bytes) -> None:
        """Create a cell from its config (``JAILHOUSE_CELL_CREATE``).

        Like the driver, this returns nothing: the new cell's id is the lowest unused
        one, found in sysfs or :meth:`snapshot`.  A config whose arch byte differs from
        the host's returns successfully and creates nothing (the driver's bug).

        Raises:
            OSError: See ABI fact sheet §2: EINVAL, EEXIST, EBUSY, EPERM, E2BIG, ENOMEM.
        """
        self._run(lambda txn: self._op_create(txn, len(blob), _bytes_reader(blob, "cell config")))

    def cell_load(self, cell: int | str, images: Sequence[tuple[bytes, int]] = ()) -> None:
        """Shut a cell down and load images into it (``JAILHOUSE_CELL_LOAD``).

        Args:
            cell: The cell's id, or its name.
            images: ``(data, target_address)`` pairs; none just shuts the cell down.

        Raises:
            OSError: EINVAL while disabled, for the root cell, or for an image outside
                a writable loadable region (the cell stays shut down); ENOENT; EPERM when
                the cell refuses to shut down.
        """

        def image(index: int) -> tuple[int, int, Callable[[int, int], bytes]]:
            data, target = images[index]
            return len(data), target, _bytes_reader(data, f"images[{index}]")

        self._run(lambda txn: self._op_load(txn, _selector(cell), len(images), image))

    def cell_start(self, cell: int | str) -> None:
        """Start (or restart) a cell (``JAILHOUSE_CELL_START``).

        Raises:
            OSError: EINVAL while disabled or for the root cell; ENOENT; EPERM when a
                running cell refuses to shut down for the restart.
        """
        self._run(lambda txn: self._op_start(txn, _selector(cell)))

    def cell_destroy(self, cell: int | str) -> None:
        """Destroy a cell and give its CPUs back (``JAILHOUSE_CELL_DESTROY``).

        Raises:
            OSError: EINVAL while disabled or for the root cell; ENOENT; EPERM when
                another cell is running/locked or this one refuses to shut down.
        """
        self._run(lambda txn: self._op_destroy(txn, _selector(cell)))

    def console_read(self, head: int, count: int, *, nonblock: bool) -> tuple[bytes, int]:
        """Read the console as a file positioned at ``head`` would.

        This reader keeps nothing but its head, so it is a freshly opened file at that
        position: after disable it reads the console snapshot each time (and never
        reaches the EAGAIN a drained file gets).  :class:`FakeDevice` keeps a full
        :class:`ConsoleCursor` per open file; use :meth:`read_console` for that.

        Returns:
            The bytes read (or the missed-bytes marker) and the new head.

        Raises:
            OSError: EAGAIN (non-blocking, disabled), EPERM (no virtual console flag).
        """
        cursor = ConsoleCursor(head & U32)
        data = self.read_console(cursor, count, nonblock=nonblock)
        return data, cursor.head

    def read_console(
        self,
        cursor: ConsoleCursor,
        count: int,
        *,
        nonblock: bool,
        interrupt: threading.Event | None = None,
    ) -> bytes:
        r"""Read the console for one open file, as the driver's ``read`` does.

        At most ``min(count, 2048)`` bytes come back.  A reader the writer lapped (or a
        fresh one on a ring that wrapped) gets ``<missed N bytes of console log>\\n``
        first.  After disable or a failed enable, readers drain the driver's snapshot of
        the last console once.  A blocking read polls every 100 ms until there is data;
        while disabled it resets its head to 0 and keeps waiting.

        Args:
            cursor: The file's position; updated.
            count: Most bytes to return.
            nonblock: Return 0 bytes (or EAGAIN while disabled) instead of waiting.
            interrupt: Set it to make a waiting read fail with EINTR.

        Raises:
            OSError: EAGAIN, EPERM, EINTR, or an injected fault.
        """
        with self._transaction() as txn:
            armed = self._arm(txn.state, "console")
            state = txn.state
        if armed is not None:
            raise OSError(armed, f"console read: injected fault ({_errname(armed)})")
        while True:
            try:
                data, missed = _console_poll(state, cursor)
            except _Errno as exc:
                if exc.errno != errno.EAGAIN:
                    raise OSError(exc.errno, exc.message) from None
                if nonblock:
                    raise OSError(exc.errno, exc.message) from None
                cursor.head = 0
            else:
                if data:
                    return _console_finish(cursor, data, missed, count)
                if nonblock:
                    return b""
            if interrupt is None:
                time.sleep(_POLL)
            elif interrupt.wait(_POLL):
                interrupt.clear()
                raise OSError(errno.EINTR, "console read interrupted")
            with self._locked():
                state = self._read_state()

    # -- simulation controls ---------------------------------------------------------

    def script_cell(
        self,
        name: str,
        *,
        console: bytes = b"",
        on_start: str = "run",
        refuse_shutdown: bool = False,
    ) -> None:
        """Say what the inmate of the cell called ``name`` does.

        The script is stored in the host's state, so every process sees it.  ``console``
        and ``on_start`` apply each time the cell is started; ``refuse_shutdown`` to
        every later shutdown request.

        Args:
            name: The cell's name.
            console: Bytes the inmate writes to the hypervisor console when started.  They
                reach the ring only if the cell's config has
                ``VIRTUAL_CONSOLE_PERMITTED`` (or ``VIRTUAL_CONSOLE_ACTIVE``, which the
                driver turns into both), as the hypervisor allows only such cells to
                write.
            on_start: ``"run"`` (state running), ``"lock"`` (running/locked: no cell
                may be created or destroyed meanwhile), ``"fail"`` (every CPU of the
                cell faults: state failed, all its CPUs in ``cpus_failed``), or
                ``"shutdown"`` (the inmate stops itself: state shut down).
            refuse_shutdown: Deny the hypervisor's shutdown requests while running, so
                load, start and destroy of the cell fail with EPERM (a cell with
                ``PASSIVE_COMMREG`` is never asked).

        Raises:
            ValueError: ``on_start`` is unknown, or ``name`` is longer than 31 bytes or
                holds a NUL or a character beyond latin-1.
        """
        if on_start not in ON_START:
            raise ValueError(f"on_start = {on_start!r}: one of {', '.join(ON_START)}")
        raw = name.encode("latin-1", "replace")
        if len(raw) > _NAMELEN or b"\0" in raw or raw.decode("latin-1") != name:
            raise ValueError(
                f"name = {name!r}: a cell name is at most 31 latin-1 bytes, without NUL"
            )

        def op(txn: _Txn) -> None:
            txn.state.scripts[raw] = Script(bytes(console), on_start, refuse_shutdown)

        self._run(op)

    def inject_fault(self, op: str, errno: int, *, nth: int = 1) -> None:
        """Make the ``nth`` next call of an operation fail with ``errno``.

        The failing call goes through the driver's checks first (an earlier check's
        errno wins) and fails where the real stack calls the hypervisor, leaving the
        state as a real failure there would: a failed enable snapshots the console and
        leaves the hypervisor disabled; a failed create has taken the cell's CPUs
        offline and brought them back and made nothing; a failed disable has already
        destroyed the non-root cells; load, start and destroy change nothing; a console
        read keeps its position.

        Args:
            op: One of ``enable``, ``disable``, ``create``, ``load``, ``start``,
                ``destroy``, ``console``.
            errno: The positive errno to fail with.
            nth: 1 for the next call, 2 for the one after, ...

        Raises:
            ValueError: An unknown ``op``, or ``errno`` or ``nth`` below 1.
        """
        if op not in OPS:
            raise ValueError(f"op = {op!r}: one of {', '.join(OPS)}")
        if errno < 1:
            raise ValueError(f"errno = {errno}: must be a positive errno")
        if nth < 1:
            raise ValueError(f"nth = {nth}: must be 1 or more")

        def add(txn: _Txn) -> None:
            txn.state.faults.append(Fault(op, errno, nth))

        self._run(add)

    def tick(self, n: int = 1) -> None:
        """Let ``n`` time steps pass: every running cell's online CPUs take VM exits.

        Counters wrap at 2**31 as the hypervisor's do.

        Raises:
            ValueError: ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"n = {n}: must not be negative")

        def op(txn: _Txn) -> None:
            state, arch = txn.state, txn.info.arch
            if not state.enabled or arch is None or n == 0:
                return
            step = tick_profile(arch, n)
            for cell in state.cells:
                if cell.state not in (CellState.RUNNING, CellState.RUNNING_LOCKED):
                    continue
                for cpu in cell.cpus:
                    if cell.id == 0 and cpu not in state.online:
                        continue  # an offline root CPU does not run
                    _bump(state, cpu, step)

        self._run(op)

    def set_cpu_online(self, cpu: int, online: bool) -> None:
        """Take a CPU offline or bring it online, as writing Linux's ``cpuN/online`` does.

        A root-cell CPU taken offline is not brought back by the driver: creating a cell
        on it and destroying the cell leaves it offline, and disable fails with EBUSY
        until it is online again.

        Raises:
            OSError: ENODEV for a CPU the host lacks; EPERM for x86 CPU 0; EBUSY for
                the last online CPU, or to online a CPU a non-root cell holds.
            ValueError: The host's CPU count is not known yet.
        """

        def op(txn: _Txn) -> None:
            state, info = txn.state, txn.info
            if info.cpus is None:
                raise ValueError("the host's number of CPUs is not known yet")
            if not 0 <= cpu < info.cpus:
                raise _Errno(errno.ENODEV, f"cpu{cpu}: the host has CPUs 0-{info.cpus - 1}")
            if online:
                if cpu in state.online:
                    return
                if state.enabled and any(cpu in c.cpus for c in state.cells[1:]):
                    raise _Errno(errno.EBUSY, f"cpu{cpu}: a non-root cell holds it")
                state.online.add(cpu)
                state.offlined.discard(cpu)
                return
            if cpu not in state.online:
                return
            if info.arch == Arch.X86 and cpu == 0:
                raise _Errno(errno.EPERM, "cpu0: x86 cannot take CPU 0 offline")
            if len(state.online) == 1:
                raise _Errno(errno.EBUSY, f"cpu{cpu}: the last online CPU")
            state.online.discard(cpu)

        self._run(op)

    def snapshot(self) -> HostSnapshot:
        """Return a frozen summary of the host."""
        with self._locked():
            info = self._read_info()
            state = self._read_state()
        cells = tuple(
            CellSnapshot(
                id=c.id,
                name=c.name.decode("latin-1"),
                state=CellState(c.state),
                cpus=frozenset(c.cpus),
                failed_cpus=frozenset(c.failed),
                images=tuple(c.images),
            )
            for c in (state.cells if state.enabled else [])
        )
        return HostSnapshot(
            arch=info.arch,
            cpus=info.cpus,
            enabled=state.enabled,
            online=frozenset(state.online),
            root_cpus=frozenset(state.root.cpus) if state.enabled else frozenset(),
            cells=cells,
            console=state.ring.text(),
            console_total=state.ring.tail,
        )

    def system_config(self) -> bytes | None:
        """Return the bytes of the system config the hypervisor runs with (``None``: disabled)."""
        with self._locked():
            return self._read_state().system_config

    def device(self) -> FakeDevice:
        """Open a file of the host's simulated ``/dev/jailhouse``; the caller closes it."""
        from jailhouse.sim._device import FakeDevice  # noqa: PLC0415 - it imports this module

        return FakeDevice(self)

    def __repr__(self) -> str:
        """Name the root."""
        return f"SimHost({str(self.root)!r})"

    # -- the driver and hypervisor -------------------------------------------------

    @staticmethod
    def _arm(state: State, op: str) -> int | None:
        """Count one call of ``op``; return the errno of a fault that fires now."""
        fired: int | None = None
        keep: list[Fault] = []
        for fault in state.faults:
            if fault.op == op:
                fault.remaining -= 1
                if fault.remaining == 0:
                    fired = fired if fired is not None else fault.errno
                    continue
            keep.append(fault)
        state.faults = keep
        return fired

    def _op_enable(self, txn: _Txn, mem: Callable[[int, int], bytes]) -> None:
        state, info = txn.state, txn.info
        fault = self._arm(state, "enable")
        header = mem(0, _SYSTEM_HEADER_SIZE)
        system = ffi.from_buffer("struct jailhouse_system *", header)
        if header[:5] != b"JHSYS":
            raise _Errno(errno.EINVAL, f"not a system config: signature {header[:5]!r}")
        if system.revision != CONFIG_REVISION:
            raise _Errno(
                errno.EINVAL,
                f"config revision {system.revision}, the driver speaks {CONFIG_REVISION}",
            )
        arch = Arch(system.architecture)
        if not arch.known or (info.arch is not None and arch != info.arch):
            host = info.arch.name if info.arch is not None else "?"
            raise _Errno(errno.EINVAL, f"config arch {arch.name}, host {host}")
        set_size = system.root_cell.cpu_set_size
        cpu_bits = int.from_bytes(mem(_ROOT_CELL_OFFSET + _CELL_DESC_SIZE, set_size), "little")
        if not cpu_bits:
            raise _Errno(errno.EINVAL, "the root cell's CPU set is empty")
        max_cpus = cpu_bits.bit_length()
        if state.enabled:
            raise _Errno(errno.EBUSY, "the hypervisor is already enabled")
        if info.arch is None:
            info.arch = arch
        if info.cpus is None:
            info.cpus = min(max_cpus, _MAX_HOST_CPUS)
            state.online = set(range(info.cpus))
        size = _abi.system_config_size(header)
        try:
            blob = mem(0, size)
        except _Errno:
            # The driver had unmapped the old hypervisor memory (and its core attribute)
            # and dropped the console snapshot before it copied the config.
            state.core_size = None
            state.snapshot_valid = False
            raise
        from jailhouse.config.codec import parse_system  # noqa: PLC0415 - off the status path

        try:
            config = parse_system(blob)
        except InvalidConfigError as exc:
            raise _Errno(errno.EINVAL, f"system config: {exc}") from None
        hv_size = config.hypervisor_memory.size
        core_and_percpu = _CORE_SIZE + _PERCPU_SIZE * max_cpus
        if core_and_percpu >= hv_size or size >= hv_size - core_and_percpu:
            raise _Errno(
                errno.EINVAL,
                f"hypervisor_memory.size {hv_size:#x} does not hold the core, "
                f"{max_cpus} CPU slots and the config",
            )
        # The driver maps the hypervisor memory afresh: the console page starts zeroed,
        # the old snapshot is dropped, and the core attribute is recreated.
        state.ring = Ring()
        state.snapshot_valid = False
        state.core_size = _CORE_SIZE
        state.console_available = SystemFlag.VIRTUAL_DEBUG_CONSOLE in config.flags
        root_set = {cpu for cpu in range(max_cpus) if cpu_bits >> cpu & 1}
        state.mem_pool_size = (hv_size - core_and_percpu) // PAGE_SIZE - _pages(size)
        state.mem_pool_base = 16 + 2 * max_cpus + len(config.root_cell.mem_regions)
        state.remap_pool_size = _REMAP_POOL_PAGES
        io_regions = sum(1 for r in config.root_cell.mem_regions if MemFlag.IO in r.flags)
        state.remap_pool_base = 8 * max_cpus + io_regions
        ring = state.ring
        first = min(state.online)
        ring.write(
            f"Jailhouse simulator: {arch.libvirt_name} hypervisor starting on CPU {first}\n"
            f"Hypervisor memory {config.hypervisor_memory.phys_start:#x}+{hv_size:#x}, "
            f"{max_cpus} CPU slots\n"
            f"Page pools after setup: mem {state.mem_pool_used}/{state.mem_pool_size}, "
            f"remap {state.remap_pool_base}/{state.remap_pool_size}\n".encode()
        )
        for cpu in sorted(state.online & root_set):
            ring.write(f"CPU {cpu} entered the hypervisor\n".encode())
        err: _Errno | None = None
        if fault is not None:
            err = _Errno(fault, f"enable: injected fault ({_errname(fault)})")
            ring.write(f"Injected failure: CPU initialisation returns {_errname(fault)}\n".encode())
        elif state.mem_pool_base > state.mem_pool_size:
            err = _Errno(errno.ENOMEM, "the hypervisor's memory pool is too small to set up")
            ring.write(b"Memory pool exhausted during setup\n")
        elif state.online - root_set:
            left_out = format_cpus(state.online - root_set)
            ring.write(
                f"Online CPU {left_out} not in the root cell's CPU set "
                f"{format_cpus(root_set)}: a real machine would hang here; the simulator "
                f"refuses with EINVAL\n".encode()
            )
            err = _Errno(
                errno.EINVAL,
                f"the root cell's CPUs {format_cpus(root_set)} leave out online CPU "
                f"{left_out}: a real machine would hang",
            )
        elif root_set != state.online:
            ring.write(
                f"Root cell CPUs {format_cpus(root_set)} are not the online CPUs "
                f"{format_cpus(state.online)}: enable fails\n".encode()
            )
            err = _Errno(
                errno.EINVAL,
                f"the root cell's CPUs {format_cpus(root_set)} are not the online CPUs "
                f"{format_cpus(state.online)}",
            )
        if err is not None:
            _snapshot_console(state)
            state.core_size = None
            raise err
        root = config.root_cell
        state.cells = [
            CellRecord(
                id=0,
                name=_name(root.name.encode("latin-1")),
                cpus=set(root_set),
                state=CellState.RUNNING,
                flags=int(root.flags),
                regions=[
                    (r.phys_start, r.virt_start, r.size, int(r.flags)) for r in root.mem_regions
                ],
            )
        ]
        width = len(stat_names(arch))
        state.cpu_stats = {cpu: [0] * width for cpu in root_set}
        state.offlined = set()
        state.enabled = True
        state.system_config = bytes(blob)
        ring.write(
            f'Root cell "{_show(state.root.name)}" runs on CPUs {format_cpus(root_set)}\n'
            f"Hypervisor enabled\n".encode()
        )

    def _op_disable(self, txn: _Txn) -> None:
        state = txn.state
        fault = self._arm(state, "disable")
        if not state.enabled:
            raise _Errno(errno.EINVAL, "the hypervisor is not enabled")
        for cell in list(state.cells[1:]):
            self._destroy_cell(txn, cell, fault=None)
        root = state.root
        if len(state.online) != len(root.cpus):
            raise _Errno(
                errno.EBUSY,
                f"root cell CPUs {format_cpus(root.cpus)} but online CPUs "
                f"{format_cpus(state.online)}: an offline root CPU would be lost",
            )
        if fault is not None:
            raise _Errno(fault, f"disable: injected fault ({_errname(fault)})")
        state.ring.write(
            f'Hypervisor shutting down; root cell "{_show(root.name)}" keeps CPUs '
            f"{format_cpus(root.cpus)}\n".encode()
        )
        _snapshot_console(state)
        state.cells = []
        state.cpu_stats = {}
        state.enabled = False
        state.system_config = None

    def _op_create(self, txn: _Txn, config_size: int, mem: Callable[[int, int], bytes]) -> None:
        state, info = txn.state, txn.info
        fault = self._arm(state, "create")
        if config_size > _KMALLOC_MAX:
            raise _Errno(errno.ENOMEM, f"config_size {config_size} bytes: kmalloc fails")
        blob = mem(0, config_size)
        if config_size < _CELL_DESC_SIZE:
            raise _Errno(errno.EINVAL, f"config_size {config_size} < {_CELL_DESC_SIZE}")
        if blob[:5] != b"JHCLL":
            raise _Errno(errno.EINVAL, f"not a cell config: signature {blob[:5]!r}")
        desc = cast("CellDesc", ffi.from_buffer("struct jailhouse_cell_desc *", blob))
        if desc.revision != CONFIG_REVISION:
            raise _Errno(
                errno.EINVAL,
                f"config revision {desc.revision}, the driver speaks {CONFIG_REVISION}",
            )
        if info.arch is not None and desc.architecture != info.arch:
            return  # the driver's bug: success, and nothing is created
        flags = CellFlag(int.from_bytes(blob[_FLAGS_OFFSET : _FLAGS_OFFSET + 4], "little"))
        if CellFlag.VIRTUAL_CONSOLE_ACTIVE in flags:
            flags |= CellFlag.VIRTUAL_CONSOLE_PERMITTED
        if not state.enabled:
            raise _Errno(errno.EINVAL, "the hypervisor is not enabled")
        name = _name(blob[_NAME_OFFSET : _NAME_OFFSET + _NAMELEN + 1])
        if any(c.name == name for c in state.cells):
            raise _Errno(errno.EEXIST, f'a cell named "{_show(name)}" exists')
        set_size = desc.cpu_set_size
        set_bytes = blob[_CELL_DESC_SIZE : _CELL_DESC_SIZE + set_size]
        bits = int.from_bytes(set_bytes, "little")
        cpus = {cpu for cpu in range(bits.bit_length()) if bits >> cpu & 1}
        root = state.root
        if not cpus <= root.cpus:
            raise _Errno(
                errno.EBUSY,
                f"CPUs {format_cpus(cpus - root.cpus)} are not the root cell's "
                f"(it holds {format_cpus(root.cpus) or 'none'})",
            )
        offlined_now: set[int] = set()

        def roll_back() -> None:
            # As the driver does: every offline CPU of the set comes back online.
            for cpu in cpus:
                if cpu not in state.online:
                    state.online.add(cpu)
                    state.offlined.discard(cpu)
                root.cpus.add(cpu)

        for cpu in sorted(cpus):
            if info.arch == Arch.X86 and cpu == 0:
                roll_back()
                raise _Errno(errno.EINVAL, "cannot assign CPU 0 to other cells on x86")
            if cpu in state.online:
                if len(state.online) == 1:
                    roll_back()
                    raise _Errno(errno.EBUSY, f"CPU {cpu} is the last online CPU")
                state.online.discard(cpu)
                offlined_now.add(cpu)
            root.cpus.discard(cpu)
        try:
            config = self._hv_create(state, info, blob, desc, fault)
        except _Errno:
            roll_back()
            raise
        state.offlined |= offlined_now
        used = {c.id for c in state.cells}
        new_id = next(i for i in range(len(used) + 1) if i not in used)
        regions = [(r.phys_start, r.virt_start, r.size, int(r.flags)) for r in config.mem_regions]
        cell = CellRecord(
            id=new_id,
            name=name,
            cpus=set(cpus),
            state=CellState.SHUT_DOWN,
            flags=int(flags),
            regions=regions,
            pool_pages=_cell_pages(_abi.cell_config_size(desc), set_size, len(regions)),
        )
        state.cells.append(cell)
        width = len(stat_names(cast("Arch", info.arch)))
        for cpu in cpus:
            state.cpu_stats[cpu] = [0] * width
        state.ring.write(
            f'Cell "{_show(name)}" created on CPUs {format_cpus(cpus) or "none"}\n'
            f"Page pools after cell creation: mem {state.mem_pool_used}/"
            f"{state.mem_pool_size}, remap {state.remap_pool_base}/"
            f"{state.remap_pool_size}\n".encode()
        )

    def _hv_create(
        self, state: State, info: HostInfo, blob: bytes, desc: CellDesc, fault: int | None
    ) -> CellConfig:
        """The hypervisor's CELL_CREATE checks, in order; return the parsed config."""
        if fault is not None:
            raise _Errno(fault, f"cell create: injected fault ({_errname(fault)})")
        locked = [c for c in state.cells[1:] if c.state == CellState.RUNNING_LOCKED]
        if locked:
            raise _Errno(errno.EPERM, f'cell "{_show(locked[0].name)}" is running/locked')
        total = _abi.cell_config_size(desc)
        if _pages(total) > _TEMPORARY_PAGES:
            raise _Errno(
                errno.E2BIG,
                f"the config needs {total} bytes, more than {_TEMPORARY_PAGES} pages",
            )
        if total > len(blob):
            raise _Errno(
                errno.EINVAL,
                f"the header describes {total} bytes but config_size is {len(blob)} "
                "(the real hypervisor would read past the driver's copy)",
            )
        if desc.cpu_set_size > _MAX_CPU_SET:
            raise _Errno(errno.EINVAL, f"cpu_set_size {desc.cpu_set_size} > {_MAX_CPU_SET}")
        from jailhouse.config.codec import parse_cell  # noqa: PLC0415 - off the status path

        try:
            config = parse_cell(blob)
        except InvalidConfigError as exc:
            raise _Errno(errno.EINVAL, f"cell config: {exc}") from None
        pages = _cell_pages(total, desc.cpu_set_size, len(config.mem_regions))
        if state.mem_pool_used + pages > state.mem_pool_size:
            raise _Errno(errno.ENOMEM, f"the memory pool has no {pages} free pages")
        for index, chip in enumerate(config.irqchips):
            if info.arch == Arch.X86 and chip.pin_base != 0:
                raise _Errno(errno.EINVAL, f"irqchips[{index}].pin_base {chip.pin_base} != 0")
            if info.arch != Arch.X86 and chip.pin_base % 32:
                raise _Errno(
                    errno.EINVAL, f"irqchips[{index}].pin_base {chip.pin_base} not a multiple of 32"
                )
        for index, dev in enumerate(config.pci_devices):
            if dev.type == PciType.IVSHMEM and (
                dev.shmem_regions_start + 2 + dev.shmem_peers > len(config.mem_regions)
            ):
                raise _Errno(
                    errno.EINVAL,
                    f"pci_devices[{index}]: shmem regions run past the memory regions",
                )
        return config

    def _find(self, state: State, sel: tuple[int, bytes]) -> CellRecord:
        if not state.enabled:
            raise _Errno(errno.EINVAL, "the hypervisor is not enabled")
        cell_id, name = sel
        for cell in state.cells:
            if cell.id == cell_id or (cell_id == _abi.CELL_ID_UNUSED and cell.name == name):
                return cell
        what = f'named "{_show(name)}"' if cell_id == _abi.CELL_ID_UNUSED else f"id {cell_id}"
        raise _Errno(errno.ENOENT, f"no cell {what}")

    def _prologue(self, state: State, cell: CellRecord, fault: int | None, what: str) -> None:
        """The hypervisor's management prologue: root, then shutdown approval."""
        if fault is not None:
            raise _Errno(fault, f"{what}: injected fault ({_errname(fault)})")
        if cell.id == 0:
            raise _Errno(errno.EINVAL, "the root cell cannot be managed")
        if what == "cell destroy":
            locked = [
                c for c in state.cells[1:] if c is not cell and c.state == CellState.RUNNING_LOCKED
            ]
            if locked:
                raise _Errno(errno.EPERM, f'cell "{_show(locked[0].name)}" is running/locked')
        if not _shutdown_ok(state, cell):
            state.ring.write(f'Cell "{_show(cell.name)}" denied the shutdown request\n'.encode())
            raise _Errno(errno.EPERM, f'cell "{_show(cell.name)}" refused to shut down')

    def _op_load(
        self,
        txn: _Txn,
        sel: tuple[int, bytes],
        count: int,
        image: Callable[[int], tuple[int, int, Callable[[int, int], bytes]]],
    ) -> None:
        state = txn.state
        fault = self._arm(state, "load")
        cell = self._find(state, sel)
        self._prologue(state, cell, fault, "cell load")
        cell.failed = set()
        if not cell.loadable:
            cell.state = CellState.SHUT_DOWN
            cell.loadable = True
            state.ring.write(f'Cell "{_show(cell.name)}" shut down for loading\n'.encode())
        cell.images = []
        for index in range(count):
            size, target, source = image(index)
            if size == 0:
                continue
            region = next(
                (r for r in cell.regions if target >= r[1] and target - r[1] < r[2]), None
            )
            if region is None:
                raise _Errno(
                    errno.EINVAL, f"images[{index}]: target {target:#x} is in no memory region"
                )
            _phys, virt, region_size, flags = region
            needed = MemFlag.WRITE | MemFlag.LOADABLE
            if size > region_size - (target - virt) or flags & needed != needed:
                raise _Errno(
                    errno.EINVAL,
                    f"images[{index}]: {size} bytes at {target:#x} do not fit a writable, "
                    f"loadable region (region {virt:#x}+{region_size:#x}, flags {flags:#x})",
                )
            for offset in range(0, size, _IMAGE_CHUNK):
                source(offset, min(_IMAGE_CHUNK, size - offset))
            cell.images.append((target, size))

    def _op_start(self, txn: _Txn, sel: tuple[int, bytes]) -> None:
        state, info = txn.state, txn.info
        fault = self._arm(state, "start")
        cell = self._find(state, sel)
        self._prologue(state, cell, fault, "cell start")
        cell.loadable = False
        cell.failed = set()
        cell.state = CellState.RUNNING
        arch = cast("Arch", info.arch)
        for cpu in cell.cpus:
            _bump(state, cpu, start_burst(arch))
        name = _show(cell.name)
        state.ring.write(
            f'Cell "{name}" started on CPUs {format_cpus(cell.cpus) or "none"}\n'.encode()
        )
        script = state.scripts.get(cell.name, Script())
        permitted = CellFlag.VIRTUAL_CONSOLE_PERMITTED | CellFlag.VIRTUAL_CONSOLE_ACTIVE
        if script.console and cell.flags & permitted:
            state.ring.write(script.console)
        if script.on_start == "lock":
            cell.state = CellState.RUNNING_LOCKED
        elif script.on_start == "shutdown":
            cell.state = CellState.SHUT_DOWN
            state.ring.write(f'Cell "{name}" shut itself down\n'.encode())
        elif script.on_start == "fail":
            for cpu in sorted(cell.cpus):
                state.ring.write(
                    f'FATAL: cell "{name}": unhandled trap on CPU {cpu}, CPU parked\n'.encode()
                )
            cell.failed = set(cell.cpus)
            cell.state = CellState.FAILED

    def _op_destroy(self, txn: _Txn, sel: tuple[int, bytes]) -> None:
        state = txn.state
        fault = self._arm(state, "destroy")
        cell = self._find(state, sel)
        self._destroy_cell(txn, cell, fault=fault)

    def _destroy_cell(self, txn: _Txn, cell: CellRecord, *, fault: int | None) -> None:
        state = txn.state
        self._prologue(state, cell, fault, "cell destroy")
        root = state.root
        width = len(stat_names(cast("Arch", txn.info.arch)))
        for cpu in cell.cpus:
            root.cpus.add(cpu)
            state.cpu_stats[cpu] = [0] * width
            if cpu in state.offlined:
                state.online.add(cpu)
                state.offlined.discard(cpu)
        state.cells.remove(cell)
        state.ring.write(
            f'Cell "{_show(cell.name)}" destroyed, CPUs {format_cpus(cell.cpus) or "none"} '
            f"back in the root cell\n"
            f"Page pools after cell destruction: mem {state.mem_pool_used}/"
            f"{state.mem_pool_size}, remap {state.remap_pool_base}/"
            f"{state.remap_pool_size}\n".encode()
        )

    # -- the ioctl entry point ---------------------------------------------------------

    def ioctl(self, request: int, arg: int, read_mem: Callable[[int, int], bytes]) -> int:
        """Carry out one ioctl, as the driver's ``unlocked_ioctl`` does.

        The argument struct is read at ``arg`` first (EFAULT before anything else), then
        what it points at, when the driver gets to it.

        Args:
            request: The request number (``jailhouse._abi.ENABLE`` ...).
            arg: The user-space address of the argument (ignored by ``DISABLE``).
            read_mem: ``read_mem(address, size)`` returns the caller's memory there,
                raising :class:`OSError` (EFAULT) where it is not readable.

        Returns:
            0, or ``-errno`` as the driver returns it; ``-EINVAL`` for an unknown request.
        """
        try:
            if request == _abi.ENABLE:
                mem = _user(read_mem, arg)
                return self._call(lambda txn: self._op_enable(txn, mem))
            if request == _abi.DISABLE:
                return self._call(self._op_disable)
            if request == _abi.CELL_CREATE:
                params = _abi.decode_cell_create(_user(read_mem, arg)(0, _CELL_CREATE_SIZE))
                blob = _user(read_mem, params.config_address)
                return self._call(lambda txn: self._op_create(txn, params.config_size, blob))
            if request == _abi.CELL_LOAD:
                return self._ioctl_load(arg, read_mem)
            if request in (_abi.CELL_START, _abi.CELL_DESTROY):
                cell = _abi.decode_cell_id(_user(read_mem, arg)(0, _CELL_ID_SIZE))
                sel = _selector(cell.name if cell.cell_id is None else cell.cell_id)
                op = self._op_start if request == _abi.CELL_START else self._op_destroy
                return self._call(lambda txn: op(txn, sel))
        except _Errno as exc:
            return -exc.errno
        return -errno.EINVAL

    def _ioctl_load(self, arg: int, read_mem: Callable[[int, int], bytes]) -> int:
        """``CELL_LOAD``: the 48-byte header now, each image entry when the driver gets to it."""
        load = _abi.decode_cell_load(_user(read_mem, arg)(0, _CELL_LOAD_SIZE))
        sel = _selector(load.name if load.cell_id is None else load.cell_id)

        def image(index: int) -> tuple[int, int, Callable[[int, int], bytes]]:
            offset = _CELL_LOAD_SIZE + index * _abi.PRELOAD_IMAGE_SIZE
            entry = _abi.decode_preload_image(_user(read_mem, arg)(offset, _abi.PRELOAD_IMAGE_SIZE))
            return entry.size, entry.target_address, _user(read_mem, entry.source_address)

        return self._call(lambda txn: self._op_load(txn, sel, load.num_images, image))


def _pages(size: int) -> int:
    return -(-size // PAGE_SIZE)


def _cell_pages(config_size: int, cpu_set_size: int, regions: int) -> int:
    """Memory-pool pages a cell takes: its struct and config, a CPU set page, page tables."""
    return _pages(PAGE_SIZE + config_size) + (1 if cpu_set_size > 8 else 0) + 1 + regions


def _bump(state: State, cpu: int, step: list[int]) -> None:
    row = state.cpu_stats.setdefault(cpu, [0] * len(step))
    for index, value in enumerate(step):
        row[index] = (row[index] + value) & COUNTER_MASK


def _shutdown_ok(state: State, cell: CellRecord) -> bool:
    """Whether the cell approves a shutdown request (the hypervisor's message exchange)."""
    if cell.flags & CellFlag.PASSIVE_COMMREG:
        return True
    if cell.state in (CellState.SHUT_DOWN, CellState.FAILED):
        return True
    script = state.scripts.get(cell.name)
    return not (script is not None and script.refuse_shutdown)


def _snapshot_console(state: State) -> None:
    """The driver's ``update_last_console``: only when the root may read the console."""
    if not state.console_available:
        return
    state.snapshot = state.ring.copy()
    state.snapshot_id = (state.snapshot_id + 1) & U32
    state.snapshot_valid = True


def _dump_delta(ring: Ring, head: int) -> tuple[bytes, int]:
    """The driver's console delta: the bytes after ``head`` and how many were lost."""
    delta = (ring.tail - head) & U32
    missed = 0
    if delta > CONSOLE_SIZE:
        missed = delta - CONSOLE_SIZE
        head = (ring.tail - CONSOLE_SIZE) & U32
        delta = CONSOLE_SIZE
    start = head % CONSOLE_SIZE
    if start + delta > CONSOLE_SIZE:
        first = ring.content[start:]
        data = bytes(first + ring.content[: delta - len(first)])
    else:
        data = bytes(ring.content[start : start + delta])
    return data, missed


def _console_poll(state: State, cursor: ConsoleCursor) -> tuple[bytes, int]:
    """One pass of the driver's read loop: the snapshot if undrained, else the live ring."""
    if state.snapshot_id != cursor.snapshot_id and state.snapshot_valid:
        data, missed = _dump_delta(state.snapshot, cursor.head)
        if not data:
            cursor.snapshot_id = state.snapshot_id
        return data, missed
    if not state.enabled:
        raise _Errno(errno.EAGAIN, "the hypervisor is not enabled")
    if not state.console_available:
        raise _Errno(errno.EPERM, "the system config lacks JAILHOUSE_SYS_VIRTUAL_DEBUG_CONSOLE")
    if state.ring.tail == cursor.head:
        return b"", 0
    return _dump_delta(state.ring, cursor.head)


def _console_finish(cursor: ConsoleCursor, data: bytes, missed: int, count: int) -> bytes:
    """Return what the read hands back and advance the head, as the driver does."""
    count = max(count, 0)
    if missed:
        marker = f"<missed {missed} bytes of console log>\n".encode()
        cursor.head = (cursor.head + missed) & U32
        return marker[:count]
    out = data[:count]
    cursor.head = (cursor.head + len(out)) & U32
    return out


_CELL_CREATE_SIZE: Final = _abi.request_size(_abi.CELL_CREATE)
_CELL_LOAD_SIZE: Final = _abi.request_size(_abi.CELL_LOAD)
_CELL_ID_SIZE: Final = _abi.request_size(_abi.CELL_START)


def _user(read_mem: Callable[[int, int], bytes], base: int) -> Callable[[int, int], bytes]:
    """A reader of user memory relative to ``base``; any failure is the ioctl's errno."""

    def read(offset: int, size: int) -> bytes:
        try:
            return read_mem(base + offset, size)
        except OSError as exc:
            raise _Errno(exc.errno or errno.EFAULT, exc.strerror or "bad address") from None

    return read


def dispatch_ioctl(
    host: SimHost, request: int, arg: int, read_mem: Callable[[int, int], bytes]
) -> int:
    """Carry out one ioctl on a simulated host, as the driver does (:meth:`SimHost.ioctl`).

    Args:
        host: The simulated host.
        request: The request number (``jailhouse._abi.ENABLE`` ...).
        arg: The user-space address of the argument (0 for ``DISABLE``).
        read_mem: ``read_mem(address, size)`` returns the bytes of the calling process's
            memory there, raising :class:`OSError` (EFAULT) where they are not readable:
            :func:`jailhouse._usermem.read_user` bound to the caller's pid.

    Returns:
        0, or ``-errno`` as the driver returns it; an unknown request gives ``-EINVAL``.
    """
    return host.ioctl(request, arg, read_mem)
