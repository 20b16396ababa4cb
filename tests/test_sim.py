"""Tests for the simulated Jailhouse host (jailhouse.sim): semantics, errno paths, sysfs.

Expected errnos, check orders and sysfs formats come from the ABI fact sheet
(/work/shared/jailhouse-abi.md, §1 console, §2 errno per ioctl, §4 sysfs, §8 gotchas);
each test names the rule it checks.  Every test builds a fresh host in ``tmp_path`` and
uses the example configs of :mod:`jailhouse.examples` (4 CPUs; arm64-demo on CPU 3,
arm64-linux on CPUs 1-2; likewise for x86).
"""

from __future__ import annotations

import errno
import re
import threading
import time
from typing import TYPE_CHECKING

import pytest

from jailhouse import _abi
from jailhouse._ffi import ffi
from jailhouse.config.model import (
    Arch,
    CellConfig,
    CellFlag,
    MemFlag,
    MemoryRegion,
    SystemConfig,
    SystemFlag,
    format_cpus,
)
from jailhouse.device import Device
from jailhouse.errors import DeviceError, PermissionDeniedError
from jailhouse.examples import example_cells, example_system
from jailhouse.sim import FakeDevice, SimHost, dispatch_ioctl
from jailhouse.sim._sysfs import read_tree, render
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

DRIVER = "devices/jailhouse"
MISSED = re.compile(rb"<missed ([0-9]+) bytes of console log>\n")


# -- helpers -------------------------------------------------------------------------


def system(arch: str = "arm64", **changes: object) -> SystemConfig:
    """Return the example system config, optionally with root-cell fields changed."""
    config = example_system(arch)  # type: ignore[arg-type]
    if changes:
        config = config.replace(root_cell=config.root_cell.replace(**changes))
    return config


def cell(name: str = "arm64-demo", arch: str = "arm64", **changes: object) -> CellConfig:
    """Return an example cell config, optionally with fields changed."""
    config = example_cells(arch)[name]  # type: ignore[arg-type]
    return config.replace(**changes) if changes else config


def talking(name: str = "arm64-linux") -> CellConfig:
    """An example cell without PASSIVE_COMMREG: its inmate answers shutdown requests."""
    config = cell(name)
    return config.replace(flags=config.flags & ~CellFlag.PASSIVE_COMMREG)


def fails(err: int, call: Callable[..., object], *args: object) -> OSError:
    """Call and require an OSError with this errno; return it."""
    with pytest.raises(OSError, match=r".") as info:
        call(*args)
    assert info.value.errno == err, f"{info.value!r}, expected {errno.errorcode[err]}"
    return info.value


def read(host: SimHost, relpath: str) -> str:
    """Read a file of the host's driver directory."""
    return (host.sysfs_root / DRIVER / relpath).read_text()


def check_consistent(host: SimHost, *, offline: frozenset[int] = frozenset()) -> None:
    """Require the invariants: root owns exactly the free CPUs, sysfs tells the truth."""
    snap = host.snapshot()
    assert snap.cpus is not None
    every = frozenset(range(snap.cpus))
    online_text = (host.sysfs_root / "devices/system/cpu/online").read_text()
    assert online_text == format_cpus(snap.online) + "\n"
    assert read(host, "enabled") == ("1\n" if snap.enabled else "0\n")
    on_disk = sorted(int(p.name) for p in (host.sysfs_root / DRIVER / "cells").iterdir())
    assert on_disk == sorted(c.id for c in snap.cells)
    if not snap.enabled:
        assert snap.online == every - offline
        assert on_disk == []
        return
    others = [c.cpus for c in snap.cells[1:]]
    taken = frozenset().union(*others)
    assert sum(map(len, others)) == len(taken), "two cells share a CPU"
    assert snap.root_cpus == every - taken
    assert snap.online == snap.root_cpus - offline
    for c in snap.cells:
        base = f"cells/{c.id}"
        assert read(host, f"{base}/name") == c.name + "\n"
        assert read(host, f"{base}/cpus_assigned_list") == format_cpus(c.cpus) + "\n"
        assert read(host, f"{base}/state") == c.state.text + "\n"
        stats = host.sysfs_root / DRIVER / base / "statistics"
        cpu_dirs = {int(p.name[3:]) for p in stats.iterdir() if p.name.startswith("cpu")}
        assert cpu_dirs == c.cpus


@pytest.fixture
def host(tmp_path: Path) -> SimHost:
    """A fresh 4-CPU arm64 host, disabled."""
    return SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=4)


@pytest.fixture
def on(host: SimHost) -> SimHost:
    """The host, enabled with the arm64 example system."""
    host.enable(system().to_bytes())
    return host


@pytest.fixture
def x86(tmp_path: Path) -> SimHost:
    """A fresh 4-CPU x86 host, enabled with the x86 example system."""
    h = SimHost(tmp_path / "x86", arch=Arch.X86, cpus=4)
    h.enable(system("x86").to_bytes())
    return h


# -- the machine ---------------------------------------------------------------------


def test_host_fixed_from_first_system_config(tmp_path: Path) -> None:
    """A host made without arguments takes arch and CPU count from its first enable."""
    h = SimHost(tmp_path)
    assert (h.arch, h.cpus) == (None, None)
    h.enable(system("x86").to_bytes())
    assert (h.arch, h.cpus) == (Arch.X86, 4)
    again = SimHost(tmp_path)
    assert (again.arch, again.cpus) == (Arch.X86, 4)
    assert again.snapshot() == h.snapshot()
    check_consistent(again)


def test_reopen_with_conflicting_arguments_names_both(tmp_path: Path) -> None:
    """Reopening a host with another arch or CPU count is a ValueError naming both values."""
    SimHost(tmp_path, arch=Arch.ARM64, cpus=4)
    with pytest.raises(ValueError, match=r"X86.*ARM64"):
        SimHost(tmp_path, arch=Arch.X86)
    with pytest.raises(ValueError, match=r"8.*4"):
        SimHost(tmp_path, cpus=8)
    assert SimHost(tmp_path, arch=Arch.ARM64, cpus=4).cpus == 4


def test_sysfs_repaired_on_open(on: SimHost) -> None:
    """Opening a host rewrites sysfs files a crash left wrong or missing."""
    on.cell_create(cell().to_bytes())
    (on.sysfs_root / DRIVER / "cells/1/name").unlink()
    (on.sysfs_root / DRIVER / "enabled").write_text("0\n")
    (on.sysfs_root / DRIVER / "cells/7").mkdir()
    reopened = SimHost(on.root)
    assert read(reopened, "cells/1/name") == "arm64-demo\n"
    assert read(reopened, "enabled") == "1\n"
    assert not (on.sysfs_root / DRIVER / "cells/7").exists()
    check_consistent(reopened)


def test_incremental_sysfs_matches_full_render(on: SimHost) -> None:
    """After a run of operations the files on disk are exactly what the state renders."""
    on.cell_create(cell().to_bytes())
    on.cell_create(cell("arm64-linux").to_bytes())
    on.cell_start("arm64-demo")
    on.tick(5)
    on.cell_destroy("arm64-linux")
    tree = read_tree(on.sysfs_root)
    state = on._read_state()
    assert tree == render(on._read_info(), state)


def _leave_writer_debris(host: SimHost) -> list[Path]:
    """Leave what a writer SIGKILLed under the lock leaves, named as the simulator names it.

    A half-built cell directory and a half-deleted one in ``.scratch``, and cut-off
    ``.state.json``/``.host.json`` temporary files of a dead process's thread.
    """
    root = host.root
    stage = root / ".scratch" / "cell-2-0123456789abcdef0123456789abcdef"
    (stage / "statistics").mkdir(parents=True)
    (stage / "name").write_text("arm64-linux\n")
    (stage / "name").chmod(0o444)
    trash = root / ".scratch" / "trash-fedcba9876543210fedcba9876543210"
    trash.mkdir()
    (trash / "state").write_text("running\n")
    state_tmp = root / ".state.json.999999.140000000000000.tmp"
    state_tmp.write_text('{"enabled": tr')
    host_tmp = root / ".host.json.999999.140000000000000.tmp"
    host_tmp.write_text("")
    return [stage, trash, state_tmp, host_tmp]


def test_dead_writers_leftovers_are_swept_on_open(on: SimHost) -> None:
    """Opening a host removes a killed writer's scratch entries and temporary files only."""
    on.cell_create(cell().to_bytes())
    before = on.snapshot()
    debris = _leave_writer_debris(on)
    foreign = on.root / ".notes.tmp"  # not a name the simulator writes
    foreign.write_text("keep")
    reopened = SimHost(on.root)
    assert [p for p in debris if p.exists()] == []
    assert list((on.root / ".scratch").iterdir()) == []
    assert foreign.read_text() == "keep"
    assert reopened.snapshot() == before
    check_consistent(reopened)


def test_dead_writers_leftovers_are_swept_before_a_commit(on: SimHost) -> None:
    """An open host sweeps leftovers of a writer killed meanwhile when it next commits."""
    debris = _leave_writer_debris(on)
    on.cell_create(cell().to_bytes())
    assert [p for p in debris if p.exists()] == []
    assert list((on.root / ".scratch").iterdir()) == []
    check_consistent(on)


# -- lifecycle -----------------------------------------------------------------------


def test_lifecycle(on: SimHost) -> None:
    """Create, load, start, shut down, destroy and disable move CPUs and states as §2 says."""
    check_consistent(on)
    on.cell_create(cell().to_bytes())
    demo = on.snapshot().cell("arm64-demo")
    assert (demo.id, demo.state, demo.cpus) == (1, CellState.SHUT_DOWN, {3})
    assert on.snapshot().online == {0, 1, 2}  # CPU 3 went offline in Linux
    check_consistent(on)
    on.cell_load("arm64-demo", [(b"\x90" * 64, 0x0)])
    assert on.snapshot().cell(1).images == ((0x0, 64),)
    on.cell_start(1)
    assert on.snapshot().cell(1).state == CellState.RUNNING
    on.cell_load(1)  # shutdown is a load with no images
    assert on.snapshot().cell(1).state == CellState.SHUT_DOWN
    on.cell_destroy("arm64-demo")
    assert on.snapshot().online == {0, 1, 2, 3}
    check_consistent(on)
    on.disable()
    check_consistent(on)
    assert not list((on.sysfs_root / DRIVER / "cells").iterdir())


def test_ids_are_lowest_unused(on: SimHost) -> None:
    """New cells get the lowest unused id; the root cell is 0."""
    on.cell_create(cell().to_bytes())
    on.cell_create(cell("arm64-linux").to_bytes())
    on.cell_destroy("arm64-demo")
    on.cell_create(cell().replace(name="third").to_bytes())
    assert {c.name: c.id for c in on.snapshot().cells} == {
        "arm64-root": 0,
        "third": 1,
        "arm64-linux": 2,
    }


def test_start_restarts_running_cell_and_keeps_counters(on: SimHost) -> None:
    """Start of a running cell restarts it; statistics survive restart and shutdown (§8.16)."""
    on.cell_create(cell().to_bytes())
    on.cell_start("arm64-demo")
    on.tick(3)
    before = int(read(on, "cells/1/statistics/vmexits_total"))
    assert before > 0
    on.cell_start("arm64-demo")
    after_restart = int(read(on, "cells/1/statistics/vmexits_total"))
    assert after_restart > before
    on.cell_load("arm64-demo")
    assert int(read(on, "cells/1/statistics/vmexits_total")) == after_restart


def test_failed_cell(on: SimHost) -> None:
    """A faulting inmate: failed, all CPUs failed; load(0) clears it; destroy works (§8.15)."""
    on.cell_create(cell("arm64-linux").to_bytes())
    on.script_cell("arm64-linux", on_start="fail")
    on.cell_start("arm64-linux")
    assert read(on, "cells/1/state") == "failed\n"
    assert read(on, "cells/1/cpus_failed_list") == "1-2\n"
    assert read(on, "cells/1/cpus_failed") == "6\n"
    on.cell_load("arm64-linux")
    assert read(on, "cells/1/state") == "shut down\n"
    assert read(on, "cells/1/cpus_failed_list") == "\n"
    on.cell_start("arm64-linux")
    on.cell_destroy("arm64-linux")
    check_consistent(on)


def test_inmate_shuts_itself_down(on: SimHost) -> None:
    """An inmate scripted to stop leaves its cell shut down right after start."""
    on.cell_create(cell().to_bytes())
    on.script_cell("arm64-demo", on_start="shutdown")
    on.cell_start("arm64-demo")
    assert on.snapshot().cell("arm64-demo").state == CellState.SHUT_DOWN


def test_scripts_are_shared_between_processes_views(on: SimHost) -> None:
    """A script set through one SimHost object applies to a cell started through another."""
    on.cell_create(cell().to_bytes())
    SimHost(on.root).script_cell("arm64-demo", on_start="lock")
    on.cell_start("arm64-demo")
    assert read(on, "cells/1/state") == "running/locked\n"


# -- ENABLE --------------------------------------------------------------------------


def test_enable_twice_is_ebusy(on: SimHost) -> None:
    """ENABLE while enabled: EBUSY (§2 ENABLE step 4)."""
    fails(errno.EBUSY, on.enable, system().to_bytes())
    check_consistent(on)


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, b"JHCLL"), (0, b"JHSYST"), (6, b"\x0d\x00"), (5, b"\x00")],
    ids=["cell-signature", "old-signature", "revision-13", "x86-arch-on-arm64"],
)
def test_enable_header_checks_are_einval_before_ebusy(
    on: SimHost, offset: int, value: bytes
) -> None:
    """Signature, revision and arch are checked before the lock: EINVAL even while enabled."""
    blob = bytearray(system().to_bytes())
    blob[offset : offset + len(value)] = value
    fails(errno.EINVAL, on.enable, bytes(blob))
    assert on.snapshot().enabled


def test_enable_empty_root_set_is_einval(host: SimHost) -> None:
    """An all-zero root CPU set gives EINVAL (§2 ENABLE step 3)."""
    fails(errno.EINVAL, host.enable, system(cpus=frozenset()).to_bytes())
    check_consistent(host)


def test_enable_more_cpus_than_host_is_einval_with_snapshot(host: SimHost) -> None:
    """A root set with CPUs the host lacks: EINVAL after the CPUs entered (§2 step 10)."""
    fails(errno.EINVAL, host.enable, system(cpus=frozenset(range(6))).to_bytes())
    assert not host.snapshot().enabled
    assert not (host.sysfs_root / DRIVER / "core").exists()
    with FakeDevice(host) as dev:
        text = dev.read(2048, nonblock=True)
    assert b"CPU 3 entered" in text
    check_consistent(host)


def test_enable_leaving_out_online_cpu_refused(host: SimHost) -> None:
    """A root set missing an online CPU hangs a real machine: EINVAL and a console line."""
    fails(errno.EINVAL, host.enable, system(cpus=frozenset({0, 1, 2})).to_bytes())
    with FakeDevice(host) as dev:
        text = dev.read(2048, nonblock=True)
    assert b"would hang" in text
    assert b"CPU 3" in text
    check_consistent(host)


def test_enable_small_hypervisor_memory_is_einval(host: SimHost) -> None:
    """Hypervisor memory that cannot hold the core and CPU slots gives EINVAL (§2 step 7)."""
    config = system()
    small = config.replace(hypervisor_memory=MemoryRegion(0x7FC00000, 0, 0x10000))
    fails(errno.EINVAL, host.enable, small.to_bytes())
    check_consistent(host)


def test_enable_short_blob_is_efault(host: SimHost) -> None:
    """A blob shorter than its header describes: the driver's copy faults (EFAULT)."""
    fails(errno.EFAULT, host.enable, system().to_bytes()[:-8])
    fails(errno.EFAULT, host.enable, system().to_bytes()[:100])
    check_consistent(host)


def test_core_attribute_stays_after_disable(on: SimHost) -> None:
    """``core`` appears on enable (mode 0400) and stays after disable (§4)."""
    core = on.sysfs_root / DRIVER / "core"
    assert core.stat().st_mode & 0o777 == 0o400
    assert core.stat().st_size > 0
    on.disable()
    assert core.exists()
    assert read(on, "mem_pool_size") == "0\n"
    assert read(on, "console") == ""


# -- DISABLE -------------------------------------------------------------------------


def test_disable_while_disabled_is_einval(host: SimHost) -> None:
    """DISABLE while disabled: EINVAL (§8.5)."""
    fails(errno.EINVAL, host.disable)


def test_disable_destroys_cells(on: SimHost) -> None:
    """DISABLE destroys every non-root cell first and brings their CPUs back (§8.6)."""
    on.cell_create(cell().to_bytes())
    on.cell_create(cell("arm64-linux").to_bytes())
    on.cell_start("arm64-linux")
    on.disable()
    assert on.snapshot().online == {0, 1, 2, 3}
    check_consistent(on)


def test_disable_stops_at_refusing_cell(on: SimHost) -> None:
    """A cell refusing shutdown stops DISABLE with EPERM; cells before it are gone (§2)."""
    on.cell_create(cell().to_bytes())
    on.cell_create(talking().to_bytes())
    on.script_cell("arm64-linux", refuse_shutdown=True)
    on.cell_start("arm64-linux")
    fails(errno.EPERM, on.disable)
    snap = on.snapshot()
    assert snap.enabled
    assert [c.name for c in snap.cells] == ["arm64-root", "arm64-linux"]
    check_consistent(on)


def test_offline_root_cpu(on: SimHost) -> None:
    """A CPU offline before CREATE stays offline after DESTROY; DISABLE is EBUSY (§8.17)."""
    on.set_cpu_online(3, online=False)
    on.cell_create(cell().to_bytes())
    on.cell_destroy("arm64-demo")
    assert 3 not in on.snapshot().online
    check_consistent(on, offline=frozenset({3}))
    fails(errno.EBUSY, on.disable)
    on.set_cpu_online(3, online=True)
    on.disable()
    check_consistent(on)


def test_failed_create_onlines_every_cpu_of_the_set(on: SimHost) -> None:
    """The driver's error path brings up every offline CPU of the set (driver/cell.c)."""
    on.set_cpu_online(3, online=False)
    fails(errno.E2BIG, on.cell_create, huge_cell().to_bytes())
    assert 3 in on.snapshot().online
    check_consistent(on)


def test_cpu_hotplug_rules(on: SimHost) -> None:
    """The last online CPU cannot go offline; a cell's CPU cannot come online."""
    on.cell_create(cell("arm64-linux").to_bytes())
    fails(errno.EBUSY, lambda: on.set_cpu_online(1, online=True))
    on.set_cpu_online(3, online=False)
    fails(errno.EBUSY, lambda: on.set_cpu_online(0, online=False))
    fails(errno.ENODEV, lambda: on.set_cpu_online(9, online=False))


# -- CELL_CREATE ---------------------------------------------------------------------


def huge_cell(cpus: frozenset[int] = frozenset({3})) -> CellConfig:
    """A cell config over 16 pages: 2100 memory regions."""
    ram = MemoryRegion(0x7F900000, 0, 0x1000, MemFlag.READ | MemFlag.WRITE)
    config = cell(cpus=cpus, mem_regions=(ram,) * 2100, irqchips=(), pci_devices=(), pci_caps=())
    # ABI sheet §3: 132 + 8 + 2100 * 32 bytes, over 16 pages (65536 bytes)
    assert config.size == 67340
    return config


def test_create_while_disabled_is_einval(host: SimHost) -> None:
    """CREATE while disabled: EINVAL, not ENODEV (§2 CREATE step 7)."""
    fails(errno.EINVAL, host.cell_create, cell().to_bytes())


def test_create_arch_bug_returns_success_and_creates_nothing(on: SimHost) -> None:
    """A CREATE whose arch byte differs returns success and creates nothing (§8.1)."""
    on.cell_create(cell("x86-demo", "x86").to_bytes())
    assert [c.name for c in on.snapshot().cells] == ["arm64-root"]
    check_consistent(on)


def test_create_arch_bug_even_while_disabled(host: SimHost) -> None:
    """The arch check runs before the enabled check: success while disabled too (§8.13)."""
    host.cell_create(cell("x86-demo", "x86").to_bytes())
    blob = bytearray(cell().to_bytes())
    blob[:6] = b"JHCELL"  # the old 6-byte signature fails the 5-byte "JHCLL" check
    fails(errno.EINVAL, host.cell_create, bytes(blob))


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda b: b[:131], "shorter than 132"),
        (lambda b: b"JHSYS" + b[5:], "signature"),
        (lambda b: b[:6] + b"\x0d\x00" + b[8:], "revision"),
    ],
)
def test_create_header_checks(on: SimHost, mangle: Callable[[bytes], bytes], why: str) -> None:
    """Short configs, foreign signatures and other revisions give EINVAL (§2 CREATE step 4)."""
    fails(errno.EINVAL, on.cell_create, mangle(cell().to_bytes()))
    assert len(on.snapshot().cells) == 1, why


def test_create_duplicate_name_is_eexist_before_ebusy(on: SimHost) -> None:
    """A taken name gives EEXIST even when the CPUs are taken too (driver order)."""
    on.cell_create(cell().to_bytes())
    fails(errno.EEXIST, on.cell_create, cell().to_bytes())
    fails(
        errno.EEXIST, on.cell_create, cell(name="arm64-demo").replace(name="arm64-root").to_bytes()
    )
    check_consistent(on)


def test_create_cpu_of_other_cell_is_ebusy(on: SimHost) -> None:
    """A CPU another cell holds is not in root's current set: EBUSY (§2 step 10)."""
    on.cell_create(cell().to_bytes())
    fails(errno.EBUSY, on.cell_create, cell().replace(name="again").to_bytes())
    check_consistent(on)


def test_create_cpu_host_lacks_is_ebusy(on: SimHost) -> None:
    """A CPU the host does not have gives EBUSY and creates nothing (observed, §2 step 9)."""
    fails(errno.EBUSY, on.cell_create, cell(cpus=frozenset({9})).to_bytes())
    check_consistent(on)


def test_create_last_online_cpu_is_ebusy(on: SimHost) -> None:
    """Taking every root CPU fails at the last online one, rolled back (§2 step 12)."""
    fails(errno.EBUSY, on.cell_create, cell(cpus=frozenset(range(4))).to_bytes())
    assert on.snapshot().online == {0, 1, 2, 3}
    on.cell_create(cell(cpus=frozenset({0, 1, 2})).to_bytes())  # arm64 may take CPU 0
    assert on.snapshot().root_cpus == {3}
    check_consistent(on)


def test_create_x86_cpu0_is_einval(x86: SimHost) -> None:
    """On x86, CPU 0 in a cell's set gives EINVAL (§2 step 10)."""
    config = cell("x86-demo", "x86", cpus=frozenset({0, 3}))
    fails(errno.EINVAL, x86.cell_create, config.to_bytes())
    check_consistent(x86)


def test_create_empty_cpu_set_is_accepted(on: SimHost) -> None:
    """An empty CPU set is accepted: no CPUs, no statistics/cpuN (observed, §2 step 9)."""
    on.cell_create(cell(cpus=frozenset()).to_bytes())
    assert read(on, "cells/1/cpus_assigned_list") == "\n"
    check_consistent(on)


def test_create_cpu_set_size_limits(on: SimHost) -> None:
    """cpu_set_size 16 is accepted, 4104 gives EINVAL (observed, §2 step 9 and 12)."""
    fails(errno.EINVAL, on.cell_create, cell(cpu_set_size=4104).to_bytes())
    check_consistent(on)
    on.cell_create(cell(cpu_set_size=16).to_bytes())
    assert on.snapshot().cell(1).cpus == {3}


def test_create_over_16_pages_is_e2big_and_rolls_back(on: SimHost) -> None:
    """A config over 16 pages: E2BIG after the CPUs went offline and back (§2 step 12)."""
    fails(errno.E2BIG, on.cell_create, huge_cell().to_bytes())
    assert on.snapshot().online == {0, 1, 2, 3}
    check_consistent(on)


def test_create_while_a_cell_is_locked(on: SimHost) -> None:
    """A running/locked cell makes CREATE fail: EBUSY (driver) first, then EPERM, then E2BIG."""
    on.cell_create(cell("arm64-linux").to_bytes())
    on.script_cell("arm64-linux", on_start="lock")
    on.cell_start("arm64-linux")
    fails(errno.EBUSY, on.cell_create, cell(cpus=frozenset({1})).to_bytes())
    fails(errno.EPERM, on.cell_create, cell().to_bytes())
    fails(errno.EPERM, on.cell_create, huge_cell().to_bytes())
    check_consistent(on)


def test_create_config_shorter_than_its_counts(on: SimHost) -> None:
    """A config_size below what the counts describe is refused (EINVAL), nothing made."""
    fails(errno.EINVAL, on.cell_create, cell().to_bytes()[:-4])
    check_consistent(on)


def test_create_ivshmem_regions_must_exist(on: SimHost) -> None:
    """An ivshmem device whose region group runs past the regions: EINVAL (§2 step 12)."""
    demo = cell()
    fails(errno.EINVAL, on.cell_create, demo.replace(mem_regions=demo.mem_regions[:3]).to_bytes())
    check_consistent(on)


# -- CELL_LOAD, CELL_START, CELL_DESTROY ----------------------------------------------


@pytest.mark.parametrize("op", ["cell_load", "cell_start", "cell_destroy"])
def test_management_while_disabled_is_einval(host: SimHost, op: str) -> None:
    """Every cell op while disabled gives EINVAL, even for an unknown cell (§8.5)."""
    fails(errno.EINVAL, getattr(host, op), "nope")


@pytest.mark.parametrize("op", ["cell_load", "cell_start", "cell_destroy"])
def test_management_unknown_cell_is_enoent(on: SimHost, op: str) -> None:
    """An unknown name or id gives ENOENT."""
    fails(errno.ENOENT, getattr(on, op), "nope")
    fails(errno.ENOENT, getattr(on, op), 5)


@pytest.mark.parametrize("op", ["cell_load", "cell_start", "cell_destroy"])
def test_management_of_root_is_einval(on: SimHost, op: str) -> None:
    """The root cell cannot be loaded, started or destroyed: EINVAL (§2)."""
    fails(errno.EINVAL, getattr(on, op), 0)
    fails(errno.EINVAL, getattr(on, op), "arm64-root")


def test_destroy_root_is_einval_before_eperm(on: SimHost) -> None:
    """The hypervisor checks root before the running/locked rule."""
    on.cell_create(cell().to_bytes())
    on.script_cell("arm64-demo", on_start="lock")
    on.cell_start("arm64-demo")
    fails(errno.EINVAL, on.cell_destroy, 0)


def test_load_targets(on: SimHost) -> None:
    """Images must land inside a WRITE+LOADABLE region and fit; else EINVAL, cell parked."""
    on.cell_create(cell("arm64-linux").to_bytes())  # loader RAM 64 KiB at 0, RAM at 0x70000000
    on.cell_start("arm64-linux")
    fails(errno.EINVAL, on.cell_load, "arm64-linux", [(b"x" * 16, 0x60000000)])
    assert on.snapshot().cell(1).state == CellState.SHUT_DOWN  # §8.14: still parked
    fails(errno.EINVAL, on.cell_load, "arm64-linux", [(b"x" * 0x10001, 0x0)])
    fails(errno.EINVAL, on.cell_load, "arm64-linux", [(b"x", 0x9000000)])  # UART: not loadable
    on.cell_load("arm64-linux", [(b"x" * 0x10000, 0x0), (b"", 0x60000000), (b"k", 0x70000000)])
    assert on.snapshot().cell(1).images == ((0x0, 0x10000), (0x70000000, 1))


def test_load_first_matching_region_wins(on: SimHost) -> None:
    """The first region (config order) containing the target decides, even if not loadable."""
    rw = MemFlag.READ | MemFlag.WRITE
    regions = (
        MemoryRegion(0x7F900000, 0x1000, 0x1000, rw),
        MemoryRegion(0x7F910000, 0x0, 0x4000, rw | MemFlag.LOADABLE),
    )
    on.cell_create(cell(mem_regions=regions, pci_devices=(), pci_caps=()).to_bytes())
    fails(errno.EINVAL, on.cell_load, 1, [(b"x", 0x1000)])
    on.cell_load(1, [(b"x", 0x2000)])


def test_load_stops_at_first_failing_image(on: SimHost) -> None:
    """Images after the first failure are not loaded."""
    on.cell_create(cell("arm64-linux").to_bytes())
    fails(errno.EINVAL, on.cell_load, 1, [(b"a", 0x0), (b"b", 0x60000000), (b"c", 0x100)])
    assert on.snapshot().cell(1).images == ((0x0, 1),)


def test_refused_shutdown_is_eperm(on: SimHost) -> None:
    """A running cell that denies shutdown: EPERM for load, start and destroy (§2)."""
    on.cell_create(talking().to_bytes())
    on.script_cell("arm64-linux", refuse_shutdown=True)
    on.cell_start("arm64-linux")
    for op in (on.cell_load, on.cell_start, on.cell_destroy):
        fails(errno.EPERM, op, "arm64-linux")
    assert on.snapshot().cell(1).state == CellState.RUNNING
    on.script_cell("arm64-linux")
    on.cell_destroy("arm64-linux")
    check_consistent(on)


def test_passive_commreg_cell_cannot_refuse(on: SimHost) -> None:
    """A PASSIVE_COMMREG cell is never asked, so it cannot refuse (hypervisor message rule)."""
    demo = cell()
    assert CellFlag.PASSIVE_COMMREG in demo.flags
    on.cell_create(demo.to_bytes())
    on.script_cell("arm64-demo", refuse_shutdown=True)
    on.cell_start("arm64-demo")
    on.cell_destroy("arm64-demo")


def test_destroy_while_other_cell_locked_is_eperm(on: SimHost) -> None:
    """DESTROY fails with EPERM while another cell is running/locked; the locked one may go."""
    on.cell_create(cell().to_bytes())
    on.cell_create(cell("arm64-linux").to_bytes())
    on.script_cell("arm64-linux", on_start="lock")
    on.cell_start("arm64-linux")
    fails(errno.EPERM, on.cell_destroy, "arm64-demo")
    on.cell_destroy("arm64-linux")
    on.cell_destroy("arm64-demo")
    check_consistent(on)


# -- sysfs formats -------------------------------------------------------------------


def test_sysfs_known_answers_x86(x86: SimHost) -> None:
    """Root on 0-3 with the demo on CPU 3: cpus_assigned 7, list 0-2 (§4 example)."""
    x86.cell_create(cell("x86-demo", "x86").to_bytes())
    assert read(x86, "cells/0/cpus_assigned") == "7\n"
    assert read(x86, "cells/0/cpus_assigned_list") == "0-2\n"
    assert read(x86, "cells/1/name") == "x86-demo\n"
    assert read(x86, "cells/1/state") == "shut down\n"
    assert read(x86, "cells/1/cpus_assigned_list") == "3\n"
    assert read(x86, "cells/1/cpus_assigned") == "8\n"
    assert read(x86, "cells/1/cpus_failed") == "0\n"
    assert read(x86, "enabled") == "1\n"
    assert (x86.sysfs_root / "devices/system/cpu/online").read_text() == "0-2\n"
    assert (x86.sysfs_root / DRIVER / "module").resolve().name == "jailhouse"


@pytest.mark.parametrize(
    ("cpus", "cell_cpus", "root_mask", "cell_mask"),
    [
        (8, {2, 3}, "f3", "0c"),  # §4: "0c"
        (64, {0, 1, 2, 3}, "ffffffff,fffffff0", "00000000,0000000f"),  # §4: "00000000,0000000f"
        (36, {33}, "d,ffffffff", "2,00000000"),
    ],
)
def test_cpu_bitmap_width_and_groups(
    tmp_path: Path, cpus: int, cell_cpus: set[int], root_mask: str, cell_mask: str
) -> None:
    """Bitmaps are nr_cpu_ids wide, zero-padded, a comma every 32 bits (``%*pb``, §4)."""
    h = SimHost(tmp_path, arch=Arch.ARM64, cpus=cpus)
    h.enable(system(cpus=frozenset(range(cpus))).to_bytes())
    h.cell_create(cell(cpus=frozenset(cell_cpus)).to_bytes())
    assert read(h, "cells/0/cpus_assigned") == root_mask + "\n"
    assert read(h, "cells/1/cpus_assigned") == cell_mask + "\n"
    check_consistent(h)


# ABI sheet §4: the statistic names of each architecture.
ARM64_STATS = {
    "vmexits_total",
    "vmexits_mmio",
    "vmexits_management",
    "vmexits_hypercall",
    "vmexits_maintenance",
    "vmexits_virt_irq",
    "vmexits_virt_sgi",
    "vmexits_psci",
    "vmexits_smccc",
}
X86_STATS = {
    "vmexits_total",
    "vmexits_mmio",
    "vmexits_management",
    "vmexits_hypercall",
    "vmexits_pio",
    "vmexits_xapic",
    "vmexits_cr",
    "vmexits_cpuid",
    "vmexits_xsetbv",
    "vmexits_exception",
    "vmexits_msr_other",
    "vmexits_msr_x2apic_icr",
}


def stat_files(host: SimHost, relpath: str) -> dict[str, int]:
    """Read every vmexits_* file of a statistics directory."""
    directory = host.sysfs_root / DRIVER / relpath
    return {p.name: int(p.read_text()) for p in directory.iterdir() if p.is_file()}


def test_statistic_names_per_arch(on: SimHost, x86: SimHost) -> None:
    """Each architecture has its own statistic names, per cell and per CPU (§4)."""
    assert set(stat_files(on, "cells/0/statistics")) == ARM64_STATS
    assert set(stat_files(on, "cells/0/statistics/cpu2")) == ARM64_STATS
    assert set(stat_files(x86, "cells/0/statistics")) == X86_STATS
    assert set(stat_files(x86, "cells/0/statistics/cpu0")) == X86_STATS


def test_counters(on: SimHost) -> None:
    """Counters move on start and tick, sum per cell, and reset only when a CPU moves."""
    on.cell_create(cell("arm64-linux").to_bytes())
    zero = stat_files(on, "cells/1/statistics")
    assert set(zero.values()) == {0}
    on.cell_start("arm64-linux")
    started = stat_files(on, "cells/1/statistics")
    assert started["vmexits_total"] > 0
    on.tick(2)
    ticked = stat_files(on, "cells/1/statistics")
    per_cpu = [stat_files(on, f"cells/1/statistics/cpu{n}") for n in (1, 2)]
    for name, value in ticked.items():
        assert value == per_cpu[0][name] + per_cpu[1][name]
        assert value >= started[name]
    assert ticked["vmexits_total"] > started["vmexits_total"]
    assert ticked["vmexits_total"] == sum(v for k, v in ticked.items() if k != "vmexits_total")
    on.cell_load("arm64-linux")
    on.tick(5)  # a shut-down cell does not run
    assert stat_files(on, "cells/1/statistics") == ticked
    root_cpu0 = stat_files(on, "cells/0/statistics/cpu0")
    assert root_cpu0["vmexits_total"] > 0
    on.cell_destroy("arm64-linux")  # CPUs 1-2 move back to the root cell: reset
    assert set(stat_files(on, "cells/0/statistics/cpu1").values()) == {0}
    assert stat_files(on, "cells/0/statistics/cpu0") == root_cpu0


def test_counters_wrap_at_31_bits(on: SimHost) -> None:
    """Per-CPU counters are masked to 31 bits (§4)."""
    on.tick(1)
    one = stat_files(on, "cells/0/statistics/cpu0")["vmexits_total"]
    on.tick((1 << 31) - 1)  # now 2**31 ticks in all
    assert stat_files(on, "cells/0/statistics/cpu0")["vmexits_total"] == (one << 31) & 0x7FFFFFFF


def test_pools_and_enabled_files(on: SimHost) -> None:
    """Pool files hold page counts while enabled; creating a cell uses pages (§4)."""
    used = int(read(on, "mem_pool_used"))
    assert 0 < used < int(read(on, "mem_pool_size"))
    on.cell_create(cell().to_bytes())
    assert int(read(on, "mem_pool_used")) > used
    on.cell_destroy("arm64-demo")
    assert int(read(on, "mem_pool_used")) == used
    assert int(read(on, "remap_pool_size")) > 0


# -- console -------------------------------------------------------------------------


def test_console_wraps_and_two_readers_see_missed_marker(on: SimHost) -> None:
    """Lapped readers and fresh readers of a wrapped ring get the missed marker (§1)."""
    early = FakeDevice(on)
    first = early.read(4096, nonblock=True)
    head = len(first)
    assert first.startswith(b"Jailhouse simulator")
    assert len(first) < 2048
    on.cell_create(cell().to_bytes())
    output = bytes(range(32, 127)) * 40  # 3800 bytes: the ring wraps
    on.script_cell("arm64-demo", console=output)
    on.cell_start("arm64-demo")
    total = on.snapshot().console_total
    assert total > 2048
    marker = early.read(4096, nonblock=True)
    assert int(MISSED.fullmatch(marker).group(1)) == total - head - 2048  # type: ignore[union-attr]
    data = early.read(4096, nonblock=True)
    assert len(data) == 2048
    assert data.endswith(output[-1000:])
    assert early.read(4096, nonblock=True) == b""
    fresh = FakeDevice(on)
    assert (
        fresh.read(100, nonblock=True) == f"<missed {total - 2048} bytes of console log>\n".encode()
    )
    assert fresh.read(2048, nonblock=True) == data
    assert read(on, "console").encode("latin-1") == data


def test_console_marker_cut_to_read_size(on: SimHost) -> None:
    """A read shorter than the marker gets its start, and the head still skips the gap."""
    on.cell_create(cell().to_bytes())
    on.script_cell("arm64-demo", console=b"z" * 3000)
    on.cell_start("arm64-demo")
    dev = FakeDevice(on)
    assert dev.read(9, nonblock=True) == b"<missed 1"[:9]
    assert dev.read(10, nonblock=True) == on.snapshot().console[:10]


def test_console_needs_permission_flag_for_inmate_output(on: SimHost) -> None:
    """Only a cell with VIRTUAL_CONSOLE_PERMITTED writes to the hypervisor console."""
    quiet = cell(flags=CellFlag(0))
    on.cell_create(quiet.to_bytes())
    on.script_cell("arm64-demo", console=b"SECRET\n")
    on.cell_start("arm64-demo")
    assert b"SECRET" not in on.snapshot().console
    active = cell("arm64-linux", flags=CellFlag.VIRTUAL_CONSOLE_ACTIVE)
    on.cell_create(active.to_bytes())  # the driver adds PERMITTED to ACTIVE
    on.script_cell("arm64-linux", console=b"HELLO\n")
    on.cell_start("arm64-linux")
    assert b"HELLO\n" in on.snapshot().console


def test_console_eagain_while_disabled(host: SimHost) -> None:
    """A non-blocking read while disabled fails with EAGAIN (§1)."""
    with FakeDevice(host) as dev, pytest.raises(DeviceError) as info:
        dev.read(128, nonblock=True)
    assert info.value.errno == errno.EAGAIN


def test_console_eperm_without_flag(host: SimHost) -> None:
    """Enabled without VIRTUAL_DEBUG_CONSOLE: EPERM; no snapshot after disable (§1)."""
    host.enable(example_system("arm64").replace(flags=SystemFlag(0)).to_bytes())
    dev = FakeDevice(host)
    with pytest.raises(PermissionDeniedError):
        dev.read(128, nonblock=True)
    assert (host.sysfs_root / DRIVER / "console").stat().st_mode & 0o777 == 0
    host.disable()
    with pytest.raises(DeviceError) as info:
        dev.read(128, nonblock=True)
    assert info.value.errno == errno.EAGAIN


def test_console_snapshot_after_disable(on: SimHost) -> None:
    """After disable a reader drains the snapshot once, then gets 0, then EAGAIN (§1)."""
    dev = FakeDevice(on)
    before = dev.read(4096, nonblock=True)
    on.disable()
    rest = dev.read(4096, nonblock=True)
    assert rest.startswith(b"Hypervisor shutting down")
    assert dev.read(4096, nonblock=True) == b""
    with pytest.raises(DeviceError) as info:
        dev.read(4096, nonblock=True)
    assert info.value.errno == errno.EAGAIN
    fresh = FakeDevice(on)
    assert fresh.read(4096, nonblock=True) == before + rest


def test_nonblocking_reader_across_reenable_sees_underflow(on: SimHost) -> None:
    """A non-blocking fd kept across disable/enable reads a u32-underflow marker (§1)."""
    on.cell_create(cell().to_bytes())
    dev = FakeDevice(on)
    while dev.read(4096, nonblock=True):
        pass
    on.disable()
    while True:
        try:
            dev.read(4096, nonblock=True)
        except DeviceError:
            break
    on.enable(system().to_bytes())
    marker = dev.read(4096, nonblock=True)
    assert int(MISSED.fullmatch(marker).group(1)) > 1 << 31  # type: ignore[union-attr]


def test_blocking_read_waits_for_data_and_resets_head(on: SimHost) -> None:
    """A blocking reader waits through disable and reads the new ring from its start (§1)."""
    dev = FakeDevice(on)
    while dev.read(4096, nonblock=True):
        pass
    on.disable()
    assert dev.read(4096).startswith(b"Hypervisor shutting down")  # the snapshot
    assert dev.read(4096, nonblock=True) == b""  # drained
    assert dev._cursor.head != 0
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(dev.read(60)))
    reader.start()
    for _ in range(3000):  # until the waiting reader has seen the disabled hypervisor
        if dev._cursor.head == 0:
            break
        time.sleep(0.01)
    on.enable(system().to_bytes())
    reader.join(timeout=30)
    assert got == [on.snapshot().console[:60]]


def test_blocking_read_interrupted_is_eintr(host: SimHost) -> None:
    """A waiting read fails with EINTR when interrupted, as on a signal (§1)."""
    dev = FakeDevice(host)
    errors: list[int | None] = []

    def wait() -> None:
        try:
            dev.read(128)
        except DeviceError as exc:
            errors.append(exc.errno)

    reader = threading.Thread(target=wait)
    reader.start()
    dev.interrupt()
    reader.join(timeout=30)
    assert errors == [errno.EINTR]


def test_console_read_by_head(on: SimHost) -> None:
    """The head-only console_read returns data and the new head."""
    data, head = on.console_read(0, 20, nonblock=True)
    assert (data, head) == (on.snapshot().console[:20], 20)
    data, head = on.console_read(head, 10, nonblock=True)
    assert (data, head) == (on.snapshot().console[20:30], 30)


# -- fault injection -----------------------------------------------------------------


def test_fault_on_enable(host: SimHost) -> None:
    """An injected enable fault leaves the hypervisor disabled with a console snapshot."""
    host.inject_fault("enable", errno.ENOMEM)
    fails(errno.ENOMEM, host.enable, system().to_bytes())
    assert not host.snapshot().enabled
    assert b"CPU 0 entered" in FakeDevice(host).read(4096, nonblock=True)
    check_consistent(host)
    host.enable(system().to_bytes())
    check_consistent(host)


def test_fault_on_create_brings_cpus_back(on: SimHost) -> None:
    """An injected create fault creates nothing and brings the CPUs back online."""
    on.inject_fault("create", errno.ENOMEM)
    fails(errno.ENOMEM, on.cell_create, cell("arm64-linux").to_bytes())
    assert len(on.snapshot().cells) == 1
    check_consistent(on)
    on.cell_create(cell("arm64-linux").to_bytes())


def test_fault_nth_call(on: SimHost) -> None:
    """nth=2 spares the next call and fails the one after it."""
    on.cell_create(cell().to_bytes())
    on.inject_fault("start", errno.EIO, nth=2)
    on.cell_start("arm64-demo")
    fails(errno.EIO, on.cell_start, "arm64-demo")
    on.cell_start("arm64-demo")


@pytest.mark.parametrize("op", ["load", "start", "destroy"])
def test_fault_on_management_changes_nothing(on: SimHost, op: str) -> None:
    """Injected load/start/destroy faults leave every cell as it was."""
    on.cell_create(cell().to_bytes())
    on.cell_start("arm64-demo")
    before = on.snapshot()
    on.inject_fault(op, errno.EINTR)
    fails(errno.EINTR, getattr(on, f"cell_{op}"), "arm64-demo")
    after = on.snapshot()
    assert after.cells == before.cells
    check_consistent(on)


def test_fault_loses_to_an_earlier_check(host: SimHost) -> None:
    """A driver check that fails first wins, and the fault is used up."""
    host.inject_fault("start", errno.EIO)
    fails(errno.EINVAL, host.cell_start, "demo")
    fails(errno.EINVAL, host.cell_start, "demo")


def test_fault_on_disable_after_cells_destroyed(on: SimHost) -> None:
    """An injected disable fault strikes after the cells are gone; the hypervisor stays on."""
    on.cell_create(cell().to_bytes())
    on.inject_fault("disable", errno.EIO)
    fails(errno.EIO, on.disable)
    snap = on.snapshot()
    assert snap.enabled
    assert len(snap.cells) == 1
    check_consistent(on)
    on.disable()


def test_fault_on_console_keeps_position(on: SimHost) -> None:
    """An injected console fault fails one read; the next one reads from the same place."""
    dev = FakeDevice(on)
    on.inject_fault("console", errno.EINTR)
    with pytest.raises(DeviceError) as info:
        dev.read(16, nonblock=True)
    assert info.value.errno == errno.EINTR
    assert dev.read(16, nonblock=True) == on.snapshot().console[:16]


def test_bad_fault_arguments(host: SimHost) -> None:
    """Unknown ops and non-positive errno or nth are ValueErrors naming the value."""
    with pytest.raises(ValueError, match="'reboot'"):
        host.inject_fault("reboot", errno.EIO)
    with pytest.raises(ValueError, match="errno = 0"):
        host.inject_fault("start", 0)
    with pytest.raises(ValueError, match="nth = 0"):
        host.inject_fault("start", errno.EIO, nth=0)
    with pytest.raises(ValueError, match="'dance'"):
        host.script_cell("x", on_start="dance")


# -- FakeDevice through real argument buffers ----------------------------------------


def test_fake_device_is_a_device(host: SimHost) -> None:
    """FakeDevice implements the Device protocol and closes idempotently."""
    dev = host.device()
    assert isinstance(dev, Device)
    assert dev.sysfs_root == host.sysfs_root
    assert dev.arch == Arch.ARM64
    with dev:
        pass
    dev.close()
    assert dev.closed
    with pytest.raises(ValueError, match="closed"):
        dev.ioctl(_abi.DISABLE)
    with pytest.raises(ValueError, match="closed"):
        dev.read(1)


def test_fake_device_lifecycle_through_abi_buffers(host: SimHost) -> None:
    """Every request works through _abi argument buffers and reads them from memory."""
    dev = FakeDevice(host)
    enable = _abi.enable_arg(system().to_bytes())
    assert dev.ioctl(_abi.ENABLE, enable.address) == 0
    create = _abi.cell_create_arg(cell("arm64-linux").to_bytes())
    assert dev.ioctl(_abi.CELL_CREATE, create.address) == 0
    assert dev.ioctl(_abi.CELL_CREATE, create.address) == -errno.EEXIST
    load = _abi.cell_load_arg(
        name="arm64-linux", images=[(b"\xaa" * 100, 0x10), (b"k", 0x70000000)]
    )
    assert dev.ioctl(_abi.CELL_LOAD, load.address) == 0
    assert host.snapshot().cell(1).images == ((0x10, 100), (0x70000000, 1))
    assert dev.ioctl(_abi.CELL_START, _abi.cell_id_arg(cell_id=1).address) == 0
    assert host.snapshot().cell(1).state == CellState.RUNNING
    assert dev.ioctl(_abi.CELL_DESTROY, _abi.cell_id_arg(name="arm64-linux").address) == 0
    assert dev.ioctl(_abi.CELL_DESTROY, _abi.cell_id_arg(cell_id=1).address) == -errno.ENOENT
    assert dev.ioctl(_abi.DISABLE) == 0
    assert dev.ioctl(_abi.DISABLE) == -errno.EINVAL
    check_consistent(host)


def test_fake_device_id_wins_over_name(on: SimHost) -> None:
    """With an id other than -1 the driver ignores the name (§1 lookup)."""
    on.cell_create(cell().to_bytes())
    arg = _abi.cell_id_arg(cell_id=1, name="no-such-cell")
    assert on.device().ioctl(_abi.CELL_START, arg.address) == 0


@pytest.mark.parametrize(
    "request_",
    [_abi.ENABLE, _abi.CELL_CREATE, _abi.CELL_LOAD, _abi.CELL_START, _abi.CELL_DESTROY],
)
@pytest.mark.parametrize("address", [0, 8, 0xFFFF_FFFF_FFFF_0000])
def test_bad_pointer_is_efault(host: SimHost, request_: int, address: int) -> None:
    """An unmapped argument address gives EFAULT, not a crash, even while disabled."""
    assert FakeDevice(host).ioctl(request_, address) == -errno.EFAULT


def test_bad_inner_pointers_are_efault(on: SimHost) -> None:
    """A bad config or image pointer inside a valid struct gives EFAULT; LOAD still parks."""
    dev = FakeDevice(on)
    create = ffi.new("struct jailhouse_cell_create *")
    create.config_address = 16
    create.config_size = 200
    assert dev.ioctl(_abi.CELL_CREATE, int(ffi.cast("uintptr_t", create))) == -errno.EFAULT
    on.cell_create(cell().to_bytes())
    on.cell_start("arm64-demo")
    load = _abi.cell_load_arg(name="arm64-demo", images=[(b"x" * 8, 0x0)])
    load.keepalive[0].image[0].source_address = 24
    assert dev.ioctl(_abi.CELL_LOAD, load.address) == -errno.EFAULT
    assert on.snapshot().cell(1).state == CellState.SHUT_DOWN
    check_consistent(on)


def test_unknown_request_is_einval(on: SimHost) -> None:
    """Unknown requests give EINVAL, not ENOTTY; so does a 32-bit ENABLE (§1)."""
    dev = FakeDevice(on)
    assert dev.ioctl(0x40080099, 0) == -errno.EINVAL
    assert dev.ioctl(0x40040000, 0) == -errno.EINVAL  # _IOW(0, 0, void *) on 32-bit


def test_dispatch_with_foreign_memory_reader(on: SimHost) -> None:
    """dispatch_ioctl reads through the reader it is given (as a FUSE server would)."""
    arg = _abi.cell_id_arg(name="arm64-demo")
    memory = {arg.address: arg.data()}

    def read_mem(address: int, size: int) -> bytes:
        data = memory.get(address)
        if data is None or len(data) < size:
            raise OSError(errno.EFAULT, "not mapped")
        return data[:size]

    assert dispatch_ioctl(on, _abi.CELL_START, arg.address, read_mem) == -errno.ENOENT
    assert dispatch_ioctl(on, _abi.CELL_START, arg.address + 8, read_mem) == -errno.EFAULT


def test_fake_device_arch_follows_first_enable(tmp_path: Path) -> None:
    """A device on a host without a known arch learns it from the first enable."""
    h = SimHost(tmp_path)
    dev = FakeDevice(h)
    assert dev.ioctl(_abi.ENABLE, _abi.enable_arg(system("x86").to_bytes()).address) == 0
    assert dev.arch == Arch.X86


def test_absurd_config_size_is_enomem_before_the_copy(on: SimHost) -> None:
    """A config_size kmalloc cannot serve gives ENOMEM before the blob is read (§2 CREATE 2)."""
    create = ffi.new("struct jailhouse_cell_create *")
    create.config_address = 16  # never read: the allocation fails first
    create.config_size = 5 << 20
    assert on.device().ioctl(_abi.CELL_CREATE, int(ffi.cast("uintptr_t", create))) == -errno.ENOMEM


def test_lazy_exports() -> None:
    """``jailhouse.SimHost`` and ``jailhouse.FakeDevice`` are the simulator's classes."""
    import jailhouse

    assert jailhouse.SimHost is SimHost
    assert jailhouse.FakeDevice is FakeDevice
    assert {"SimHost", "FakeDevice"} <= set(jailhouse.__all__)
