"""Tests for jailhouse.sysfs: the driver's sysfs text formats and the typed reader.

The file contents below are written as the driver writes them; each format is cited
from the ABI fact sheet §4 (driver/sysfs.c, Documentation/sysfs-entries.txt).
"""

from __future__ import annotations

import errno
import shutil
from typing import TYPE_CHECKING

import pytest

from jailhouse.errors import DeviceError, DeviceNotFoundError, StatusParseError
from jailhouse.sysfs import (
    CellState,
    CellStatus,
    HypervisorStatus,
    SysfsReader,
    parse_cpu_bitmap,
    parse_cpu_list,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def write_tree(root: Path, files: dict[str, str]) -> None:
    """Create the files below ``root``, making directories as needed."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# ABI sheet §4, example: QEMU x86, root cell QEMU-VM on CPUs 0-3, apic-demo created on CPU 3.
QEMU_EXAMPLE = {
    "devices/system/cpu/online": "0-3\n",
    "devices/jailhouse/enabled": "1\n",
    "devices/jailhouse/mem_pool_size": "1520\n",
    "devices/jailhouse/mem_pool_used": "120\n",
    "devices/jailhouse/remap_pool_size": "256\n",
    "devices/jailhouse/remap_pool_used": "14\n",
    "devices/jailhouse/cells/0/name": "QEMU-VM\n",
    "devices/jailhouse/cells/0/state": "running\n",
    "devices/jailhouse/cells/0/cpus_assigned": "7\n",
    "devices/jailhouse/cells/0/cpus_assigned_list": "0-2\n",
    "devices/jailhouse/cells/0/cpus_failed": "0\n",
    "devices/jailhouse/cells/0/cpus_failed_list": "\n",
    "devices/jailhouse/cells/0/statistics/vmexits_total": "30\n",
    "devices/jailhouse/cells/0/statistics/vmexits_mmio": "3\n",
    "devices/jailhouse/cells/0/statistics/cpu0/vmexits_total": "10\n",
    "devices/jailhouse/cells/0/statistics/cpu0/vmexits_mmio": "1\n",
    "devices/jailhouse/cells/0/statistics/cpu1/vmexits_total": "10\n",
    "devices/jailhouse/cells/0/statistics/cpu1/vmexits_mmio": "1\n",
    "devices/jailhouse/cells/0/statistics/cpu2/vmexits_total": "10\n",
    "devices/jailhouse/cells/0/statistics/cpu2/vmexits_mmio": "1\n",
    "devices/jailhouse/cells/1/name": "apic-demo\n",
    "devices/jailhouse/cells/1/state": "shut down\n",
    "devices/jailhouse/cells/1/cpus_assigned": "8\n",
    "devices/jailhouse/cells/1/cpus_assigned_list": "3\n",
    "devices/jailhouse/cells/1/cpus_failed": "0\n",
    "devices/jailhouse/cells/1/cpus_failed_list": "\n",
    "devices/jailhouse/cells/1/statistics/vmexits_total": "0\n",
    "devices/jailhouse/cells/1/statistics/cpu3/vmexits_total": "0\n",
}


@pytest.fixture
def qemu_tree(tmp_path: Path) -> SysfsReader:
    """Return a reader on the fact sheet's QEMU example tree."""
    write_tree(tmp_path, QEMU_EXAMPLE)
    return SysfsReader(tmp_path)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        # ABI sheet §4: `%*pb` examples `f`, `0c`, `00000000,0000000f`.
        ("f\n", {0, 1, 2, 3}),
        ("0c\n", {2, 3}),
        ("00000000,0000000f\n", {0, 1, 2, 3}),
        ("7\n", {0, 1, 2}),
        ("8\n", {3}),
        ("0\n", set()),
        ("00000001,00000000\n", {32}),
        ("80000000,00000001\n", {0, 63}),
        ("1,00000000,00000000\n", {64}),
        ("\n", set()),
    ],
)
def test_parse_cpu_bitmap_known_answers(text: str, cpus: set[int]) -> None:
    """The hex bitmap format of cpus_assigned parses to the CPUs whose bits are set."""
    assert parse_cpu_bitmap(text) == frozenset(cpus)


@pytest.mark.parametrize(
    "text", ["g\n", "0x3\n", "000000001,0\n", "1,f\n", ",1\n", "1 \n", "123456789\n", "-1\n"]
)
def test_parse_cpu_bitmap_rejects_other_text(text: str) -> None:
    """Text the kernel's %*pb never writes is refused."""
    with pytest.raises(ValueError, match="CPU bitmap"):
        parse_cpu_bitmap(text)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        # ABI sheet §4: `%*pbl` examples `0-2`, `3`, `1,3-5`; an empty set reads as `\n`.
        ("0-2\n", {0, 1, 2}),
        ("3\n", {3}),
        ("1,3-5\n", {1, 3, 4, 5}),
        ("\n", set()),
    ],
)
def test_parse_cpu_list_known_answers(text: str, cpus: set[int]) -> None:
    """The range-list format of cpus_assigned_list parses to its CPUs."""
    assert parse_cpu_list(text) == frozenset(cpus)


@pytest.mark.parametrize("text", ["0-\n", "a\n", "3-1\n", " 1\n", "1,,2\n"])
def test_parse_cpu_list_rejects_other_text(text: str) -> None:
    """Text the kernel's %*pbl never writes is refused."""
    with pytest.raises(ValueError, match=r"CPU range list|runs backwards"):
        parse_cpu_list(text)


@pytest.mark.parametrize(
    ("text", "state"),
    [
        # ABI sheet §2, cell state table: the six strings of cells/<id>/state.
        ("running\n", CellState.RUNNING),
        ("running/locked\n", CellState.RUNNING_LOCKED),
        ("shut down\n", CellState.SHUT_DOWN),
        ("failed\n", CellState.FAILED),
        ("Comm ABI mismatch\n", CellState.FAILED_COMM_REV),
        ("invalid\n", CellState.INVALID),
    ],
)
def test_cell_state_from_text(text: str, state: CellState) -> None:
    """Each state string the driver writes maps to its state and back."""
    assert CellState.from_text(text) is state
    assert str(state) + "\n" == text


def test_cell_state_values_match_hypervisor() -> None:
    """The enum values are the hypervisor's JAILHOUSE_CELL_* numbers (ABI sheet §2)."""
    assert [CellState.RUNNING, CellState.RUNNING_LOCKED, CellState.SHUT_DOWN] == [0, 1, 2]
    assert [CellState.FAILED, CellState.FAILED_COMM_REV] == [3, 4]


@pytest.mark.parametrize("text", ["failed/OS\n", "Running\n", "shut_down\n", ""])
def test_cell_state_rejects_unknown_text(text: str) -> None:
    """A state string the driver does not write (there is no failed/OS) is refused."""
    with pytest.raises(ValueError, match="is not one of"):
        CellState.from_text(text)


def test_status_reads_pool_counters(qemu_tree: SysfsReader) -> None:
    """status() returns the enabled flag and the four pool counters in pages."""
    status = qemu_tree.status()
    assert status == HypervisorStatus(
        enabled=True, mem_pool_size=1520, mem_pool_used=120, remap_pool_size=256, remap_pool_used=14
    )
    assert str(status) == "enabled, memory pool 120/1520 pages, remap pool 14/256 pages"


def test_status_disabled(tmp_path: Path) -> None:
    """A disabled hypervisor reads 0 everywhere and says so."""
    write_tree(
        tmp_path,
        {f"devices/jailhouse/{name}": "0\n" for name in ("enabled", *_POOL_FILES)},
    )
    status = SysfsReader(tmp_path).status()
    assert not status.enabled
    assert str(status) == "disabled"


_POOL_FILES = ("mem_pool_size", "mem_pool_used", "remap_pool_size", "remap_pool_used")


def test_cells_read_the_example(qemu_tree: SysfsReader) -> None:
    """cells() reads every cell of the QEMU example with both CPU formats agreeing."""
    root, demo = qemu_tree.cells()
    assert (root.id, root.name, root.state) == (0, "QEMU-VM", CellState.RUNNING)
    assert root.cpus_assigned == {0, 1, 2}
    assert root.cpus_failed == frozenset()
    assert dict(root.statistics) == {"total": 30, "mmio": 3}
    assert sorted(root.per_cpu) == [0, 1, 2]
    assert dict(root.per_cpu[1]) == {"total": 10, "mmio": 1}
    assert (demo.id, demo.name, demo.state) == (1, "apic-demo", CellState.SHUT_DOWN)
    assert demo.cpus_assigned == {3}
    assert str(demo) == "1 apic-demo: shut down, CPUs 3"


def test_cell_by_id_and_name(qemu_tree: SysfsReader) -> None:
    """cell(id) and find_cell(name) read the same cell; unknown ones are absent."""
    assert qemu_tree.cell(1) == qemu_tree.find_cell("apic-demo")
    assert qemu_tree.find_cell("nope") is None
    with pytest.raises(KeyError):
        qemu_tree.cell(7)


def test_cells_without_statistics(qemu_tree: SysfsReader) -> None:
    """statistics=False reads the same cells but leaves the counters empty."""
    full = qemu_tree.cells()
    bare = qemu_tree.cells(statistics=False)
    assert [(c.id, c.name, c.state, c.cpus_assigned) for c in bare] == [
        (c.id, c.name, c.state, c.cpus_assigned) for c in full
    ]
    assert all(not c.statistics and not c.per_cpu for c in bare)
    assert full[0].statistics


def test_find_cell_passes_over_an_id_reused_by_another_name(tmp_path: Path) -> None:
    """A name read before the id is reused by another cell does not return that cell."""
    write_tree(tmp_path / "sys", QEMU_EXAMPLE)

    class RenamingReader(SysfsReader):
        def cell(self, cell_id: int, *, statistics: bool = True) -> CellStatus:
            (self.driver_dir / f"cells/{cell_id}/name").write_text("other\n")
            return super().cell(cell_id, statistics=statistics)

    reader = RenamingReader(tmp_path / "sys")
    assert reader.find_cell("apic-demo") is None
    assert SysfsReader(tmp_path / "sys").find_cell("other") is not None


def test_cell_status_is_read_only(qemu_tree: SysfsReader) -> None:
    """The statistics mappings of a CellStatus cannot be changed."""
    cell = qemu_tree.cell(0)
    with pytest.raises(TypeError):
        cell.statistics["total"] = 0  # type: ignore[index]


def test_online_cpus(qemu_tree: SysfsReader) -> None:
    """online_cpus() reads devices/system/cpu/online as a range list."""
    assert qemu_tree.online_cpus() == {0, 1, 2, 3}


def test_online_cpus_unreadable_or_garbled(qemu_tree: SysfsReader) -> None:
    """A garbled online file is a StatusParseError; one that cannot be read a DeviceError."""
    online = qemu_tree.root / "devices/system/cpu/online"
    online.write_bytes(b"0-\xff\n")
    with pytest.raises(StatusParseError) as garbled:
        qemu_tree.online_cpus()
    assert garbled.value.path == str(online)
    online.unlink()
    online.mkdir()
    with pytest.raises(DeviceError, match=r"read .*online") as unreadable:
        qemu_tree.online_cpus()
    assert unreadable.value.errno == errno.EISDIR
    online.rmdir()
    with pytest.raises(KeyError):
        qemu_tree.online_cpus()


def test_bitmap_and_list_must_agree(qemu_tree: SysfsReader) -> None:
    """A bitmap that names other CPUs than its _list twin is a StatusParseError."""
    (qemu_tree.driver_dir / "cells/1/cpus_assigned").write_text("c\n")
    with pytest.raises(StatusParseError, match="names CPUs 2-3 but") as info:
        qemu_tree.cell(1)
    assert info.value.path.endswith("cells/1/cpus_assigned")


def test_either_cpu_file_suffices(qemu_tree: SysfsReader) -> None:
    """With only the bitmap, or only the list, the CPU set is still read."""
    (qemu_tree.driver_dir / "cells/1/cpus_assigned_list").unlink()
    assert qemu_tree.cell(1).cpus_assigned == {3}
    (qemu_tree.driver_dir / "cells/0/cpus_assigned").unlink()
    assert qemu_tree.cell(0).cpus_assigned == {0, 1, 2}


@pytest.mark.parametrize(
    ("rel", "text", "reason", "method"),
    [
        ("enabled", "yes\n", "expected 0 or 1", "status"),
        ("mem_pool_used", "12 pages\n", "expected an integer", "status"),
        ("cells/1/state", "failed/OS\n", "is not one of", "cells"),
        ("cells/1/cpus_assigned_list", "3-\n", "CPU range list", "cells"),
        ("cells/0/statistics/cpu1/vmexits_mmio", "x\n", "expected an integer", "cells"),
    ],
)
def test_malformed_files_raise_status_parse_error(
    qemu_tree: SysfsReader, rel: str, text: str, reason: str, method: str
) -> None:
    """A file with text the driver does not write raises StatusParseError naming it."""
    (qemu_tree.driver_dir / rel).write_text(text)
    with pytest.raises(StatusParseError, match=reason) as info:
        getattr(qemu_tree, method)()
    assert info.value.path == str(qemu_tree.driver_dir / rel)
    assert info.value.text == text


def test_missing_file_is_key_error(qemu_tree: SysfsReader) -> None:
    """A missing file raises KeyError naming its path."""
    (qemu_tree.driver_dir / "remap_pool_used").unlink()
    with pytest.raises(KeyError, match="remap_pool_used"):
        qemu_tree.status()


def test_module_not_loaded(tmp_path: Path) -> None:
    """Without devices/jailhouse every read says the driver is not loaded."""
    reader = SysfsReader(tmp_path)
    assert not reader.is_loaded()
    for read in (reader.status, reader.cells, reader.enabled, lambda: reader.cell(0)):
        with pytest.raises(DeviceNotFoundError, match="modprobe jailhouse") as info:
            read()
        assert info.value.errno == errno.ENOENT


def test_no_cells_while_disabled(tmp_path: Path) -> None:
    """An empty cells/ directory (disabled hypervisor) lists no cell."""
    (tmp_path / "devices/jailhouse/cells").mkdir(parents=True)
    assert SysfsReader(tmp_path).cells() == []


def test_failed_cpus(qemu_tree: SysfsReader) -> None:
    """cpus_failed is read like cpus_assigned and shown in the summary."""
    write_tree(
        qemu_tree.root,
        {
            "devices/jailhouse/cells/1/state": "failed\n",
            "devices/jailhouse/cells/1/cpus_failed": "8\n",
            "devices/jailhouse/cells/1/cpus_failed_list": "3\n",
        },
    )
    cell = qemu_tree.cell(1)
    assert cell.cpus_failed == {3}
    assert str(cell) == "1 apic-demo: failed, CPUs 3 (failed: 3)"


def test_cell_status_defaults() -> None:
    """A CellStatus without CPUs renders a dash for its CPU set."""
    cell = CellStatus(id=2, name="x", state=CellState.SHUT_DOWN)
    assert str(cell) == "2 x: shut down, CPUs -"


class ChangingReader(SysfsReader):
    """A reader under which a writer acts once: right after the first read of one file."""

    def __init__(self, root: Path, after: str, change: Callable[[Path], None]) -> None:
        """Run ``change(driver_dir)`` after the first read of ``after`` (below the driver)."""
        super().__init__(root)
        self.after = after
        self.change: Callable[[Path], None] | None = change
        self.reads: list[str] = []

    def read_text(self, relpath: str, encoding: str = "ascii") -> str:
        """Read the file; the first time it is ``after``, let the writer act."""
        self.reads.append(relpath)
        text = super().read_text(relpath, encoding)
        if relpath == self.after and self.change is not None:
            change, self.change = self.change, None
            change(self.driver_dir)
        return text


def test_cpu_files_changed_between_reads_are_read_again(tmp_path: Path) -> None:
    """A bitmap read before a writer finished the list is read again, not a StatusParseError."""
    write_tree(tmp_path, QEMU_EXAMPLE)
    (tmp_path / "devices/jailhouse/cells/0/cpus_assigned").write_text("f\n")  # CPU 3 back

    def finish(driver: Path) -> None:
        (driver / "cells/0/cpus_assigned_list").write_text("0-3\n")

    reader = ChangingReader(tmp_path, "cells/0/cpus_assigned_list", finish)
    assert reader.cell(0).cpus_assigned == {0, 1, 2, 3}
    assert reader.reads.count("cells/0/name") == 2  # the cell was read twice


def test_statistics_directory_vanishing_is_read_again(tmp_path: Path) -> None:
    """A statistics/cpuN directory removed while the cell is read is absent from the re-read."""
    write_tree(tmp_path, QEMU_EXAMPLE)

    def take_cpu2(driver: Path) -> None:
        stats = driver / "cells/0/statistics/cpu2"
        for entry in stats.iterdir():
            entry.unlink()
        stats.rmdir()

    reader = ChangingReader(tmp_path, "cells/0/statistics/cpu1/vmexits_mmio", take_cpu2)
    assert set(reader.cell(0).per_cpu) == {0, 1}


def test_cell_destroyed_while_read_is_left_out(tmp_path: Path) -> None:
    """A cell removed between two of its files is missing from cells() and a KeyError for cell()."""
    write_tree(tmp_path, QEMU_EXAMPLE)

    def destroy(driver: Path) -> None:
        shutil.rmtree(driver / "cells/1")

    reader = ChangingReader(tmp_path, "cells/1/name", destroy)
    assert [c.id for c in reader.cells()] == [0]
    reader = ChangingReader(tmp_path, "cells/0/state", lambda _: None)
    with pytest.raises(KeyError, match="cells/1"):
        reader.cell(1)


def test_cpu_files_that_always_disagree_stay_an_error(tmp_path: Path) -> None:
    """CPU files that disagree on every reading are a StatusParseError after the re-reads."""
    write_tree(tmp_path, QEMU_EXAMPLE)
    (tmp_path / "devices/jailhouse/cells/1/cpus_assigned").write_text("c\n")
    reader = ChangingReader(tmp_path, "none", lambda _: None)
    with pytest.raises(StatusParseError, match="names CPUs 2-3 but"):
        reader.cell(1)
    assert reader.reads.count("cells/1/cpus_assigned_list") == 6  # sysfs._ATTEMPTS readings


class ReusedIdReader(SysfsReader):
    """A reader under which cell 1 is destroyed and a new cell 1 created while it reads it."""

    def __init__(self, root: Path, keep: Path) -> None:
        """Keep a copy of cell 1's directory in ``keep`` to bring back as the new cell."""
        super().__init__(root)
        self.keep = keep
        self.torn = False

    def cell(self, cell_id: int, *, statistics: bool = True) -> CellStatus:
        """Read the cell; the first time it is cell 1, its id is freed and reused mid-read."""
        if cell_id != 1 or self.torn:
            return super().cell(cell_id, statistics=statistics)
        self.torn = True
        directory = self.driver_dir / "cells/1"
        shutil.copytree(directory, self.keep)
        shutil.rmtree(directory)
        try:
            return super().cell(cell_id, statistics=statistics)  # KeyError: the directory is gone
        finally:
            shutil.copytree(self.keep, directory)  # a new cell took id 1 meanwhile


def test_cell_id_reused_while_listed_is_read_again(tmp_path: Path) -> None:
    """A cell id destroyed and reused during cells() makes the listing read again, not KeyError."""
    write_tree(tmp_path / "sys", QEMU_EXAMPLE)
    reader = ReusedIdReader(tmp_path / "sys", tmp_path / "kept")
    assert [c.id for c in reader.cells()] == [0, 1]
    assert reader.torn
