"""Tests for jailhouse.hypervisor: the whole API on every backend (tests/backends.py).

Situations are set up through the simulated host's controls (scripts, injected faults,
offline CPUs) and outcomes checked against its state (``host.snapshot()``), never
against the API's own view alone.
"""

from __future__ import annotations

import doctest
import errno
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pytest
from backends import CELL_RAM, HOST_CPUS, Backend, cell_config, system_config

import jailhouse
import jailhouse.hypervisor
from jailhouse import _abi
from jailhouse.config.model import Arch, MemoryRegion
from jailhouse.console import ConsoleReader
from jailhouse.device import Device, KernelDevice
from jailhouse.errors import (
    BusyError,
    CellExistsError,
    CellNotFoundError,
    ConfigError,
    ConfigTooLargeError,
    DeviceError,
    DeviceNotFoundError,
    InvalidConfigError,
    NotEnabledError,
    PermissionDeniedError,
)
from jailhouse.hypervisor import Cell, Hypervisor, Image
from jailhouse.sim import FakeDevice, SimHost
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from collections.abc import Callable

ALL_CPUS = frozenset(range(HOST_CPUS))


def open_fds() -> int:
    """Count this process's open file descriptors."""
    return len(list(Path("/proc/self/fd").iterdir()))


def other_arch(arch: Arch) -> Arch:
    """Return an architecture that is not ``arch``."""
    return Arch.X86 if arch != Arch.X86 else Arch.ARM64


def assert_only_root(b: Backend) -> None:
    """Assert that no non-root cell is left and root holds every CPU again."""
    snap = b.snapshot()
    assert [c.id for c in snap.cells] == [0]
    assert snap.root_cpus == ALL_CPUS


# -- lifecycle ----------------------------------------------------------------------


def test_full_lifecycle(backend: Backend) -> None:
    """Enable, create, load, start, shut down, restart, destroy and disable in order."""
    hv = backend.hv
    assert not hv.status().enabled
    assert hv.cells() == []
    hv.enable(backend.system())
    assert hv.status().enabled
    (root,) = hv.cells()
    assert (root.id, root.cpus_assigned, root.state) == (0, ALL_CPUS, CellState.RUNNING)

    cell = hv.create_cell(backend.cell("inmate", frozenset({2, 3})))
    assert (cell.id, cell.name) == (1, "inmate")
    assert cell.status().state is CellState.SHUT_DOWN
    assert hv.cell(0).status().cpus_assigned == {0, 1}
    assert backend.snapshot().cell("inmate").cpus == {2, 3}

    cell.load([Image(b"\x7fELF" * 16, CELL_RAM), (b"x" * 10, CELL_RAM + 0x1000)])
    assert backend.snapshot().cell("inmate").images == ((CELL_RAM, 64), (CELL_RAM + 0x1000, 10))
    cell.start()
    assert cell.status().state is CellState.RUNNING
    cell.shutdown()
    assert cell.status().state is CellState.SHUT_DOWN
    assert backend.snapshot().cell(1).state is CellState.SHUT_DOWN
    cell.start()
    assert cell.status().state is CellState.RUNNING

    cell.destroy()
    assert cell.destroyed
    assert_only_root(backend)
    hv.disable()
    assert not hv.status().enabled
    assert not backend.snapshot().enabled
    assert hv.cells() == []


def test_cell_lookup(enabled: Backend) -> None:
    """cell() finds a cell by name or by id and refuses unknown ones with CellNotFoundError."""
    hv = enabled.hv
    created = hv.create_cell(enabled.cell("42"))
    assert hv.cell("42") == created
    assert hv.cell(created.id) == created
    assert hv.cell(0).name == "root"
    with pytest.raises(CellNotFoundError) as info:
        hv.cell(42)  # an int is an id, even though a cell is named "42"
    assert (info.value.errno, info.value.op, info.value.cell) == (errno.ENOENT, "cell lookup", 42)
    with pytest.raises(CellNotFoundError, match="'nope'"):
        hv.cell("nope")


def test_load_from_paths(enabled: Backend, tmp_path: Path) -> None:
    """Images given as a str or Path are read from their files."""
    (tmp_path / "a.bin").write_bytes(b"a" * 100)
    (tmp_path / "b.bin").write_bytes(b"b" * 7)
    cell = enabled.hv.create_cell(enabled.cell())
    cell.load([(str(tmp_path / "a.bin"), CELL_RAM), Image(tmp_path / "b.bin", CELL_RAM + 0x200)])
    assert enabled.snapshot().cell(cell.id).images == ((CELL_RAM, 100), (CELL_RAM + 0x200, 7))


def test_config_from_bytes_and_path(enabled: Backend, tmp_path: Path) -> None:
    """Both enable and create_cell take a config's bytes or its file, not only the model."""
    hv = enabled.hv
    hv.disable()
    system_file = tmp_path / "sys.cell"
    system_file.write_bytes(enabled.system().to_bytes())
    hv.enable(system_file)
    a = hv.create_cell(enabled.cell("a", frozenset({3})).to_bytes())
    cell_file = tmp_path / "b.cell"
    cell_file.write_bytes(enabled.cell("b", frozenset({2}), slot=1).to_bytes())
    b = hv.create_cell(str(cell_file))
    assert [c.name for c in hv.cells()] == ["root", "a", "b"]
    assert (a.id, b.id) == (1, 2)


def test_create_reports_status_and_statistics(enabled: Backend) -> None:
    """A started cell's statistics come through sysfs and grow as time passes."""
    cell = enabled.hv.create_cell(enabled.cell())
    cell.start()
    before = cell.status().statistics["total"]
    enabled.host.tick(5)
    status = cell.status()
    assert status.statistics["total"] > before
    assert set(status.per_cpu) == {3}
    assert status.statistics["total"] == status.per_cpu[3]["total"]


# -- guards before the ioctl ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "words"),
    [
        (frozenset({0, 1, 2}), "leaves out online CPUs 3 (a real machine hangs)"),
        (frozenset({0, 2}), "leaves out online CPUs 1,3"),
        (frozenset(range(6)), "CPUs 4-5 are not online"),
    ],
)
def test_enable_refuses_root_cpus_other_than_online(
    backend: Backend, cpus: frozenset[int], words: str
) -> None:
    """A root CPU set that differs from the online CPUs is refused before ENABLE."""
    with pytest.raises(ConfigError) as info:
        backend.hv.enable(backend.system(cpus))
    exc = info.value
    assert exc.field == "root_cell.cpus"
    assert words in exc.reason
    assert "online CPUs 0-3" in str(exc)
    assert not backend.snapshot().enabled
    # The simulated console would say "a real machine would hang" had ENABLE been issued.
    assert b"hang" not in backend.snapshot().console


def test_enable_follows_offline_cpus(backend: Backend) -> None:
    """With CPU 2 offline, the full set is refused and the online set is accepted."""
    backend.host.set_cpu_online(2, online=False)
    with pytest.raises(ConfigError, match="CPUs 2 are not online"):
        backend.hv.enable(backend.system())
    backend.hv.enable(backend.system(frozenset({0, 1, 3})))
    assert backend.snapshot().root_cpus == {0, 1, 3}


def test_enable_refuses_foreign_arch(backend: Backend) -> None:
    """A system config for another architecture is refused before ENABLE."""
    foreign = other_arch(backend.arch)
    system = backend.system()
    system = system.replace(
        arch=foreign,
        root_cell=system.root_cell.replace(arch=foreign),
        platform=system_config(foreign).platform,
    )
    with pytest.raises(ConfigError) as info:
        backend.hv.enable(system)
    assert info.value.field == "arch"
    assert info.value.value == foreign.name
    assert not backend.snapshot().enabled


def test_enable_refuses_a_cell_config(backend: Backend) -> None:
    """Bytes of a cell config are not a system config."""
    with pytest.raises(InvalidConfigError):
        backend.hv.enable(backend.cell().to_bytes())


def test_create_guards_the_driver_arch_bug(enabled: Backend) -> None:
    """A cell config of another arch is refused; the bare ioctl would 'succeed' with no cell."""
    foreign = enabled.cell("alien").replace(arch=other_arch(enabled.arch))
    with pytest.raises(ConfigError) as info:
        enabled.hv.create_cell(foreign)
    assert info.value.field == "arch"
    assert "create no cell" in info.value.reason
    assert_only_root(enabled)
    # The driver bug the guard avoids: CREATE answers 0 and makes nothing.
    arg = _abi.cell_create_arg(foreign.to_bytes())
    assert enabled.hv.device.ioctl(_abi.CELL_CREATE, arg.address) == 0
    assert_only_root(enabled)


def test_create_reports_success_without_a_cell(enabled: Backend) -> None:
    """A device whose arch is wrong lets the bug through; create_cell then says so."""
    wrong = other_arch(enabled.arch)
    enabled.hv.device.arch = wrong  # as a KernelDevice opened with the wrong arch= would be
    with pytest.raises(DeviceError) as info:
        enabled.hv.create_cell(enabled.cell("ghost").replace(arch=wrong))
    assert "reported success but made no cell" in str(info.value)
    assert (info.value.op, info.value.cell) == ("cell create", "ghost")
    assert_only_root(enabled)


def test_create_finds_a_latin1_name(enabled: Backend) -> None:
    """A name with a latin-1 byte is packed, listed in sysfs and looked up as that one byte."""
    cell = enabled.hv.create_cell(enabled.cell("caf\u00e9"))
    assert cell.name == "caf\u00e9"
    name_file = enabled.host.root / f"sys/devices/jailhouse/cells/{cell.id}/name"
    assert name_file.read_bytes() == b"caf\xe9\n"  # the config's byte, printed with %s
    assert [c.name for c in enabled.host.snapshot().cells[1:]] == ["caf\u00e9"]
    assert enabled.hv.cell("caf\u00e9") == cell
    cell.destroy()
    assert_only_root(enabled)


def test_create_finds_a_32_byte_name_as_the_driver_cuts_it(enabled: Backend) -> None:
    """A 32-byte config name is kept by the driver as its first 31 bytes; the handle says so."""
    cell = enabled.hv.create_cell(enabled.cell("n" * 32))
    assert cell.name == "n" * 31
    assert [c.name for c in enabled.host.snapshot().cells[1:]] == ["n" * 31]
    cell.destroy()
    assert_only_root(enabled)


def test_create_destroys_a_cell_sysfs_does_not_list(enabled: Backend, tmp_path: Path) -> None:
    """A cell made but missing from sysfs is destroyed again and reported, not left holding CPUs."""
    blind = tmp_path / "blind-sysfs"
    (blind / "devices/jailhouse/cells").mkdir(parents=True)
    hv = Hypervisor(enabled.hv.device, sysfs=blind)
    with pytest.raises(DeviceError) as info:
        hv.create_cell(enabled.cell("unseen"))
    assert info.value.errno == errno.EIO
    assert (info.value.op, info.value.cell) == ("cell create", "unseen")
    assert "sysfs lists no cell of that name; it was destroyed again" in str(info.value)
    assert_only_root(enabled)


class RecordingDevice:
    """A Device wrapper that records the CREATE requests' config_size on their way."""

    def __init__(self, device: Device) -> None:
        """Wrap the device."""
        self.device = device
        self.sysfs_root = device.sysfs_root
        self.arch = device.arch
        self.sizes: list[int] = []

    def ioctl(self, request: int, arg: int = 0) -> int:
        """Record the config_size of a CREATE, then pass the call on."""
        if request == _abi.CELL_CREATE:
            raw = _abi.read_memory(arg, _abi.request_size(request))
            self.sizes.append(_abi.decode_cell_create(raw).config_size)
        return self.device.ioctl(request, arg)

    def read(self, count: int, *, nonblock: bool = False) -> bytes:
        """Pass the read on."""
        return self.device.read(count, nonblock=nonblock)

    def close(self) -> None:
        """Close the wrapped device."""
        self.device.close()

    def __enter__(self) -> Self:
        """Return the device itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the device."""
        self.close()


def test_create_passes_the_exact_size(enabled: Backend) -> None:
    """A config file with trailing bytes is passed with its computed size only."""
    config = enabled.cell()
    # 5 MiB of trailing bytes: a config_size that large makes the driver's kmalloc fail.
    blob = config.to_bytes() + bytes(5 << 20)
    raw = _abi.cell_create_arg(blob)
    assert enabled.hv.device.ioctl(_abi.CELL_CREATE, raw.address) == -errno.ENOMEM
    recorder = RecordingDevice(enabled.open_device())
    assert isinstance(recorder, Device)
    with Hypervisor(recorder) as hv:
        cell = hv.create_cell(blob)
    assert recorder.sizes == [config.size]
    assert enabled.snapshot().cell(cell.id).name == "inmate"


# -- errno mapping -------------------------------------------------------------------


def _create_twice(b: Backend) -> Callable[[], object]:
    b.hv.create_cell(b.cell("dup"))
    return lambda: b.hv.create_cell(b.cell("dup", frozenset({2}), slot=1))


def _cpu_taken(b: Backend) -> Callable[[], object]:
    b.hv.create_cell(b.cell("first", frozenset({3})))
    return lambda: b.hv.create_cell(b.cell("second", frozenset({2, 3}), slot=1))


def _locked(b: Backend) -> Callable[[], object]:
    b.host.script_cell("locker", on_start="lock")
    b.hv.create_cell(b.cell("locker")).start()
    return lambda: b.hv.create_cell(b.cell("late", frozenset({2}), slot=1))


def _refuses(b: Backend) -> Callable[[], object]:
    b.host.script_cell("stubborn", refuse_shutdown=True)
    cell = b.hv.create_cell(b.cell("stubborn"))
    cell.start()
    return cell.destroy


def _refuses_disable(b: Backend) -> Callable[[], object]:
    _refuses(b)
    return b.hv.disable


def _bad_image(b: Backend) -> Callable[[], object]:
    cell = b.hv.create_cell(b.cell("img"))
    return lambda: cell.load([(b"x" * 16, 0x80000000)])  # the comm region is not loadable


def _too_large(b: Backend) -> Callable[[], object]:
    regions = tuple(MemoryRegion(0x40000000 + i * 0x1000, 0x1000 * i, 0x1000) for i in range(2100))
    return lambda: b.hv.create_cell(b.cell("huge").replace(mem_regions=regions))


def _gone(b: Backend) -> Callable[[], object]:
    cell = b.hv.create_cell(b.cell("gone"))
    other = Cell(b.hv, cell.id, cell.name)
    cell.destroy()
    return other.start


def _enable_twice(b: Backend) -> Callable[[], object]:
    return lambda: b.hv.enable(b.system())


def _injected(op: str, err: int, action: str) -> Callable[[Backend], Callable[[], object]]:
    def setup(b: Backend) -> Callable[[], object]:
        cell = b.hv.create_cell(b.cell("victim"))
        b.host.inject_fault(op, err)
        return getattr(cell, action)

    return setup


def _expect(
    cls: type[DeviceError], err: int, op: str, cell: str | None
) -> tuple[type[DeviceError], int, str, str | None]:
    return cls, err, op, cell


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            _enable_twice, _expect(BusyError, errno.EBUSY, "enable", None), id="enable-twice"
        ),
        pytest.param(
            _create_twice, _expect(CellExistsError, errno.EEXIST, "cell create", "dup"), id="dup"
        ),
        pytest.param(
            _cpu_taken, _expect(BusyError, errno.EBUSY, "cell create", "second"), id="cpu-taken"
        ),
        pytest.param(
            _locked,
            _expect(PermissionDeniedError, errno.EPERM, "cell create", "late"),
            id="locked",
        ),
        pytest.param(
            _refuses,
            _expect(PermissionDeniedError, errno.EPERM, "cell destroy", "stubborn"),
            id="refuses-shutdown",
        ),
        pytest.param(
            _refuses_disable,
            _expect(PermissionDeniedError, errno.EPERM, "disable", None),
            id="disable",
        ),
        pytest.param(
            _bad_image, _expect(DeviceError, errno.EINVAL, "cell load", "img"), id="bad-image"
        ),
        pytest.param(
            _too_large,
            _expect(ConfigTooLargeError, errno.E2BIG, "cell create", "huge"),
            id="too-large",
        ),
        pytest.param(
            _gone, _expect(CellNotFoundError, errno.ENOENT, "cell start", "gone"), id="gone"
        ),
        pytest.param(
            _injected("start", errno.EIO, "start"),
            _expect(DeviceError, errno.EIO, "cell start", "victim"),
            id="injected-start",
        ),
        pytest.param(
            _injected("load", errno.ENOMEM, "shutdown"),
            _expect(DeviceError, errno.ENOMEM, "cell shutdown", "victim"),
            id="injected-shutdown",
        ),
        pytest.param(
            _injected("destroy", errno.EBUSY, "destroy"),
            _expect(BusyError, errno.EBUSY, "cell destroy", "victim"),
            id="injected-destroy",
        ),
    ],
)
def test_errno_maps_to_exception(
    enabled: Backend,
    setup: Callable[[Backend], Callable[[], object]],
    expected: tuple[type[DeviceError], int, str, str | None],
) -> None:
    """Each driver errno comes out as its exception class with errno, op, cell and one line."""
    cls, err, op, cell = expected
    action = setup(enabled)
    with pytest.raises(DeviceError) as info:
        action()
    exc = info.value
    assert type(exc) is cls
    assert (exc.errno, exc.op, exc.cell) == (err, op, cell)
    assert isinstance(exc, OSError)
    text = str(exc)
    assert "\n" not in text
    assert text.startswith(op)
    assert errno.errorcode[err] in text


@pytest.mark.parametrize(
    ("action", "op"),
    [
        (lambda b: b.hv.disable(), "disable"),
        (lambda b: b.hv.create_cell(b.cell("early")), "cell create"),
        (lambda b: Cell(b.hv, 1, "early").start(), "cell start"),
        (lambda b: Cell(b.hv, 1, "early").load([]), "cell load"),
        (lambda b: Cell(b.hv, 1, "early").destroy(), "cell destroy"),
    ],
)
def test_not_enabled(backend: Backend, action: Callable[[Backend], object], op: str) -> None:
    """EINVAL while sysfs says disabled becomes NotEnabledError."""
    with pytest.raises(NotEnabledError) as info:
        action(backend)
    assert (info.value.errno, info.value.op) == (errno.EINVAL, op)
    assert "enable the hypervisor first" in str(info.value)


def test_einval_while_enabled_is_not_not_enabled(enabled: Backend) -> None:
    """An EINVAL for a bad image while enabled stays a plain DeviceError."""
    cell = enabled.hv.create_cell(enabled.cell())
    with pytest.raises(DeviceError) as info:
        cell.load([(b"x", 0x7000_0000)])
    assert not isinstance(info.value, NotEnabledError)


def test_destroyed_handle_is_dead(enabled: Backend) -> None:
    """A handle refuses to act after its cell was destroyed, even if the id is reused."""
    cell = enabled.hv.create_cell(enabled.cell("first"))
    cell.destroy()
    enabled.hv.create_cell(enabled.cell("second"))  # takes id 1 again
    for action in (cell.start, cell.destroy, cell.shutdown, cell.status):
        with pytest.raises(CellNotFoundError):
            action()
    assert enabled.snapshot().cell(1).name == "second"


def test_status_of_a_cell_replaced_behind_the_handle(enabled: Backend) -> None:
    """status() notices that another cell now has the handle's id."""
    cell = enabled.hv.create_cell(enabled.cell("first"))
    Cell(enabled.hv, cell.id, cell.name).destroy()
    enabled.hv.create_cell(enabled.cell("second"))
    with pytest.raises(CellNotFoundError):
        cell.status()


# -- rollback ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "err"),
    [("create", errno.ENOMEM), ("load", errno.EFAULT), ("start", errno.EIO)],
)
def test_run_cell_rolls_back(enabled: Backend, op: str, err: int) -> None:
    """A failing step of run_cell leaves no new cell and root with every CPU nobody holds."""
    keeper = enabled.hv.create_cell(enabled.cell("keeper", frozenset({1}), slot=1))
    enabled.host.inject_fault(op, err)
    with pytest.raises(DeviceError) as info:
        enabled.hv.run_cell(enabled.cell("doomed", frozenset({2, 3})), [(b"img", CELL_RAM)])
    assert info.value.errno == err
    snap = enabled.snapshot()
    assert [c.name for c in snap.cells] == ["root", "keeper"]
    assert snap.root_cpus == ALL_CPUS - snap.cell("keeper").cpus
    assert keeper.status().state is CellState.SHUT_DOWN


def test_run_cell_rolls_back_a_bad_image(enabled: Backend) -> None:
    """An image the driver refuses (EINVAL) is rolled back like an injected fault."""
    with pytest.raises(DeviceError) as info:
        enabled.hv.run_cell(enabled.cell(), [(b"img", 0x90000000)])
    assert info.value.errno == errno.EINVAL
    assert_only_root(enabled)


def test_run_cell_rollback_failure_is_noted(enabled: Backend) -> None:
    """If the rollback's destroy fails too, the original error is raised with a note."""
    enabled.host.inject_fault("start", errno.EIO)
    enabled.host.inject_fault("destroy", errno.EBUSY)
    with pytest.raises(DeviceError) as info:
        enabled.hv.run_cell(enabled.cell("stuck"), [])
    assert info.value.errno == errno.EIO
    assert any("rollback" in note and "EBUSY" in note for note in info.value.__notes__)
    assert [c.name for c in enabled.snapshot().cells] == ["root", "stuck"]


def test_run_cell_reads_images_before_creating(enabled: Backend, tmp_path: Path) -> None:
    """A missing image file fails run_cell before any cell is created."""
    with pytest.raises(FileNotFoundError):
        enabled.hv.run_cell(enabled.cell(), [(tmp_path / "missing.bin", CELL_RAM)])
    assert_only_root(enabled)


def test_run_cell_success(enabled: Backend) -> None:
    """run_cell leaves a running cell with its images loaded."""
    cell = enabled.hv.run_cell(enabled.cell(), [Image(b"abc", CELL_RAM)])
    snap = enabled.snapshot().cell(cell.id)
    assert (snap.state, snap.images) == (CellState.RUNNING, ((CELL_RAM, 3),))


def test_temporary_cell_destroys_on_exception(enabled: Backend) -> None:
    """The body's exception propagates and the cell is destroyed anyway."""
    seen: list[Cell] = []

    def body() -> None:
        with enabled.hv.temporary_cell(enabled.cell(), [(b"abc", CELL_RAM)]) as cell:
            seen.append(cell)
            assert enabled.snapshot().cell(cell.id).state is CellState.RUNNING
            raise RuntimeError("body failed")

    with pytest.raises(RuntimeError, match="body failed"):
        body()
    assert seen[0].destroyed
    assert_only_root(enabled)


def test_temporary_cell_destroys_on_exit(enabled: Backend) -> None:
    """Without images the cell is created but not started, and destroyed on exit."""
    with enabled.hv.temporary_cell(enabled.cell()) as cell:
        assert cell.status().state is CellState.SHUT_DOWN
    assert_only_root(enabled)


def test_temporary_cell_body_may_destroy(enabled: Backend) -> None:
    """A body that destroys the cell itself is fine."""
    with enabled.hv.temporary_cell(enabled.cell(), start=True) as cell:
        assert cell.status().state is CellState.RUNNING
        cell.destroy()
    assert_only_root(enabled)


def test_temporary_cell_cleanup_failure_is_noted(enabled: Backend) -> None:
    """When the body raises and the destroy fails, the body's error carries a note."""

    def body() -> None:
        with enabled.hv.temporary_cell(enabled.cell()):
            enabled.host.inject_fault("destroy", errno.EBUSY)
            raise KeyError("x")

    with pytest.raises(KeyError) as info:
        body()
    assert any("rollback" in note and "EBUSY" in note for note in info.value.__notes__)


# -- console -------------------------------------------------------------------------


def test_console_read_and_follow(enabled: Backend) -> None:
    """The console shows the enable; follow() yields what a started cell writes."""
    reader = enabled.hv.console()
    assert isinstance(reader, ConsoleReader)
    assert "Hypervisor enabled" in reader.read()
    assert reader.read() == ""
    enabled.host.script_cell("talker", console=b"Hello from the inmate\n")
    cell = enabled.hv.create_cell(enabled.cell("talker", console=True))
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            cell.start()  # write while following
        return calls > 4

    text = "".join(reader.follow(poll=0, stop=stop))
    assert "Hello from the inmate\n" in text
    assert reader.missed_bytes == 0


def test_console_wraparound_is_counted(enabled: Backend) -> None:
    """A fresh reader of a wrapped ring gets the missed-bytes line, counted, then the ring."""
    line = b"0123456789abcdef" * 4 + b"\n"
    enabled.host.script_cell("chatty", console=line * 40)
    cell = enabled.hv.create_cell(enabled.cell("chatty", console=True))
    cell.start()
    total = enabled.snapshot().console_total
    assert total > 2048
    with enabled.open_device() as device:
        reader = ConsoleReader(device)
        first = reader.read_bytes()
        assert first == f"<missed {total - 2048} bytes of console log>\n".encode()
        assert (reader.missed_bytes, reader.missed_events) == (total - 2048, 1)
        rest = reader.read()
    assert rest.encode() == enabled.snapshot().console
    assert rest.endswith(line.decode())


def test_console_read_drains_marker_and_data(enabled: Backend) -> None:
    """read() returns the marker line followed by the ring in one string."""
    enabled.host.script_cell("chatty", console=b"z" * 3000)
    enabled.hv.create_cell(enabled.cell("chatty", console=True)).start()
    with enabled.open_device() as device:
        text = ConsoleReader(device).read()
    assert text.startswith("<missed ")
    assert text.endswith("z" * 100)


def test_console_while_disabled(backend: Backend) -> None:
    """A non-blocking read while the hypervisor was never enabled returns nothing."""
    reader = backend.hv.console()
    assert reader.read() == ""
    assert list(reader.follow(poll=0, stop=iter([False, False, True]).__next__)) == []


def test_console_without_debug_console_flag(backend: Backend) -> None:
    """Without VIRTUAL_DEBUG_CONSOLE the read is refused with a hint naming the flag."""
    backend.hv.enable(backend.system(console=False))
    with pytest.raises(PermissionDeniedError, match="VIRTUAL_DEBUG_CONSOLE") as info:
        backend.hv.console().read()
    assert (info.value.errno, info.value.op) == (errno.EPERM, "console read")


def test_console_reader_rejects_tiny_chunks(backend: Backend) -> None:
    """A chunk too small for the missed-bytes line is refused."""
    with pytest.raises(ValueError, match="at least 64"):
        ConsoleReader(backend.hv.device, chunk=16)


# -- open(uri) -----------------------------------------------------------------------


def test_open_sim_absolute(tmp_path: Path) -> None:
    """sim:///ABS/PATH opens a simulated host there with the given arch and CPUs."""
    with jailhouse.open(f"sim://{tmp_path}/h?arch=arm64&cpus=2") as hv:
        assert isinstance(hv.device, FakeDevice)
        assert hv.arch is Arch.ARM64
        assert hv.device.host.root == tmp_path / "h"
        assert hv.sysfs.online_cpus() == {0, 1}
    assert hv.device.closed
    assert SimHost(tmp_path / "h").cpus == 2


def test_open_sim_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sim:relative/path (no //) is relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    with jailhouse.open("sim:hosts/one?arch=x86&cpus=3") as hv:
        assert hv.arch is Arch.X86
    assert SimHost(tmp_path / "hosts/one").cpus == 3


def test_open_sim_percent_escapes(tmp_path: Path) -> None:
    """Percent escapes in a sim path are decoded."""
    with jailhouse.open(f"sim://{tmp_path}/with%20space?arch=arm64&cpus=1"):
        pass
    assert (tmp_path / "with space" / "sys").is_dir()


def test_open_kernel_with_overrides(tmp_path: Path) -> None:
    """jailhouse:///system takes device, sysfs and arch overrides; /dev/null answers ENOTTY."""
    uri = f"jailhouse:///system?device=/dev/null&sysfs={tmp_path}&arch=arm64"
    with jailhouse.open(uri) as hv:
        assert isinstance(hv.device, KernelDevice)
        assert hv.device.path == Path("/dev/null")
        assert hv.sysfs.root == tmp_path
        assert hv.arch is Arch.ARM64
        with pytest.raises(DeviceError) as info:
            hv.disable()
        assert (info.value.errno, info.value.op) == (errno.ENOTTY, "disable")
    assert hv.device.closed


def test_open_kernel_separate_console(tmp_path: Path) -> None:
    """console= reads the console from a separate file."""
    console = tmp_path / "console"
    console.write_bytes(b"boot log\n")
    with jailhouse.open(f"jailhouse:///system?device=/dev/null&console={console}") as hv:
        assert hv.console().read() == "boot log\n"


def test_open_kernel_default_needs_the_driver() -> None:
    """jailhouse:///system without the driver loaded raises DeviceNotFoundError."""
    if Path("/dev/jailhouse").exists():
        pytest.skip("a /dev/jailhouse exists here")
    with pytest.raises(DeviceNotFoundError, match="modprobe jailhouse"):
        jailhouse.open("jailhouse:///system")


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("http://example.com/", "unknown scheme 'http'"),
        ("/dev/jailhouse", "unknown scheme ''"),
        ("jailhouse://host/system", "jailhouse:///system"),
        ("jailhouse:///session", "jailhouse:///system"),
        ("jailhouse:///system?bogus=1", "unknown parameter bogus"),
        ("jailhouse:///system?device=", "'device' is empty"),
        ("jailhouse:///system?arch=mips", "not supported"),
        ("jailhouse:///system#frag", "fragment"),
        ("jailhouse:///system?arch=x86&arch=arm64", "given 2 times"),
        ("jailhouse:///system?arch", "malformed query"),
        ("sim://relative/path", "host name"),
        ("sim:", "names no directory"),
        ("sim:///tmp/x?cpus=0", "not a positive number"),
        ("sim:///tmp/x?cpus=four", "not a positive number"),
        ("sim:///tmp/x?device=/dev/null", "unknown parameter device"),
    ],
)
def test_open_bad_uri(uri: str, words: str) -> None:
    """A malformed URI raises ValueError naming the URI and the problem."""
    with pytest.raises(ValueError, match="URI") as info:
        jailhouse.open(uri)
    assert repr(uri) in str(info.value)
    assert words in str(info.value)


# -- resources -----------------------------------------------------------------------


def test_no_fd_leaks(tmp_path: Path) -> None:
    """A whole session, a refused one and a kernel-device one leave no fd open."""
    before = open_fds()
    with jailhouse.open(f"sim://{tmp_path}/h?arch=arm64&cpus=4") as hv:
        hv.enable(system_config(Arch.ARM64))
        with hv.temporary_cell(cell_config(Arch.ARM64), [(b"x", CELL_RAM)]):
            hv.console().read()
        hv.disable()
    with pytest.raises(ConfigError), jailhouse.open(f"sim://{tmp_path}/h") as hv:
        hv.enable(system_config(Arch.ARM64, frozenset({0})))
    with (
        pytest.raises(DeviceError),
        jailhouse.open("jailhouse:///system?device=/dev/null&arch=x86") as hv,
    ):
        hv.disable()
    assert open_fds() == before


def test_module_docstring_session_runs() -> None:
    """The session in jailhouse.hypervisor's docstring runs and prints what it shows."""
    result = doctest.testmod(jailhouse.hypervisor, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_lazy_exports() -> None:
    """The package exports the API names lazily from their modules."""
    assert jailhouse.open is jailhouse.hypervisor.open
    assert jailhouse.Hypervisor is Hypervisor
    assert "open" in jailhouse.__all__


@pytest.mark.parametrize("arch", [Arch.ARM64, Arch.X86])
def test_unfixed_sim_host_takes_arch_from_first_enable(tmp_path: Path, arch: Arch) -> None:
    """A sim:/// host opened without arch= takes the first system config's arch and CPUs."""
    with jailhouse.open(f"sim://{tmp_path}") as hv:
        assert hv.arch is None
        hv.enable(system_config(arch))
        assert hv.arch == arch
        assert hv.status().enabled
        # from now on the guard applies: a cell of the other arch is refused before CREATE
        other = Arch.X86 if arch == Arch.ARM64 else Arch.ARM64
        with pytest.raises(ConfigError) as info:
            hv.create_cell(cell_config(arch).replace(arch=other))
        assert info.value.field == "arch"
    with jailhouse.open(f"sim://{tmp_path}") as again:
        assert again.arch == arch  # fixed for good, also for a later process
