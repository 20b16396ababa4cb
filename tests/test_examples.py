"""The example configs and the fixture files generated from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jailhouse.config.model import (
    Arch,
    CellConfig,
    CellFlag,
    MemFlag,
    PciType,
    SystemConfig,
    load_config,
)
from jailhouse.config.validate import Severity, check_configs
from jailhouse.examples import (
    EXAMPLE_ARCHES,
    example_cells,
    example_files,
    example_system,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOAD = MemFlag.WRITE | MemFlag.LOADABLE
RAM = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_fixtures_equal_a_fresh_generation(arch: str) -> None:
    """The checked-in fixture files are exactly what fixtures/generate.py writes now."""
    fresh = example_files(arch)  # type: ignore[arg-type]
    folder = FIXTURES / arch
    on_disk = {path.name: path.read_bytes() for path in folder.glob("*.cell")}
    assert sorted(on_disk) == sorted(fresh), "run `python fixtures/generate.py`"
    for name, data in fresh.items():
        assert on_disk[name] == data, f"{arch}/{name} is stale: run `python fixtures/generate.py`"


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_fixture_files_load_as_the_examples(arch: str) -> None:
    """Each fixture file loads back as the example config it was made from."""
    system = example_system(arch)  # type: ignore[arg-type]
    assert load_config(FIXTURES / arch / f"{arch}-root.cell") == system
    for name, cell in example_cells(arch).items():  # type: ignore[arg-type]
        assert load_config(FIXTURES / arch / f"{name}.cell") == cell


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_names_and_architecture(arch: str) -> None:
    """Configs are named after their architecture and declare it."""
    system = example_system(arch)  # type: ignore[arg-type]
    cells = example_cells(arch)  # type: ignore[arg-type]
    expected = Arch.X86 if arch == "x86" else Arch.ARM64
    assert system.arch == expected
    assert system.root_cell.name == f"{arch}-root"
    assert sorted(cells) == [f"{arch}-demo", f"{arch}-linux"]
    assert all(cell.arch == expected and cell.name == key for key, cell in cells.items())


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_whole_set_fits_without_error(arch: str) -> None:
    """All example cells fit on the example system at once, with no error."""
    system = example_system(arch)  # type: ignore[arg-type]
    findings = check_configs(system, *example_cells(arch).values())  # type: ignore[arg-type]
    assert [f for f in findings if f.severity == Severity.ERROR] == []


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_cpu_layout(arch: str) -> None:
    """Four CPUs: the root cell keeps CPU 0, the demo runs on 3, Linux on 1-2."""
    system = example_system(arch)  # type: ignore[arg-type]
    cells = example_cells(arch)  # type: ignore[arg-type]
    assert system.root_cell.cpus == {0, 1, 2, 3}
    assert cells[f"{arch}-demo"].cpus == {3}
    assert cells[f"{arch}-linux"].cpus == {1, 2}


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_every_cell_is_loadable_and_has_a_comm_region(arch: str) -> None:
    """Each non-root cell has a WRITE|LOADABLE region and a one-page comm region."""
    for cell in example_cells(arch).values():  # type: ignore[arg-type]
        assert any(r.flags & LOAD == LOAD for r in cell.mem_regions), cell.name
        comm = cell.comm_region
        assert comm is not None
        assert comm.size == 0x1000
        # research notes §5: the shutdown handshake is not answered by Linux or a park loop
        assert CellFlag.PASSIVE_COMMREG in cell.flags


def test_comm_regions_where_inmates_expect_them() -> None:
    """The comm region sits at 0x100000 on x86 and 0x80000000 on arm64."""
    # research notes §5: inmate library conventions for the comm region address
    for name, cell in example_cells("x86").items():
        assert cell.comm_region is not None
        assert cell.comm_region.virt_start == 0x100000, name
    for name, cell in example_cells("arm64").items():
        assert cell.comm_region is not None
        assert cell.comm_region.virt_start == 0x80000000, name


def big_loadable_ram(cell: CellConfig) -> int:
    """Return the size of the largest RWXD region that images can be loaded into."""
    sizes = [r.size for r in cell.mem_regions if r.flags & (RAM | LOAD) == RAM | LOAD]
    return max(sizes, default=0)


def test_linux_cells_suit_kernel_loading() -> None:
    """Each Linux cell has a loader region at the reset address and 64 MiB or more of RAM."""
    # research notes §5: x86 loads the loader at 0, boot params at 0x1000, cpu_reset_address 0;
    # arm64 loads the loader at cpu_reset_address and needs a large RWXD RAM for kernel and DTB
    for arch in EXAMPLE_ARCHES:
        cell = example_cells(arch)[f"{arch}-linux"]
        assert cell.cpu_reset_address == 0
        loader = next(r for r in cell.mem_regions if r.virt_start == 0)
        assert loader.flags & LOAD == LOAD
        assert loader.size >= 0x10000
        assert big_loadable_ram(cell) >= 64 << 20


def test_arm64_linux_gets_its_uart_interrupt() -> None:
    """The arm64 Linux cell maps the PL011 and owns its SPI 33."""
    cell = example_cells("arm64")["arm64-linux"]
    uart = cell.console.address
    assert any(r.phys_start == uart and MemFlag.IO in r.flags for r in cell.mem_regions)
    assert 33 in cell.irqchips[0].pins


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_ivshmem_pair_is_wired(arch: str) -> None:
    """The root cell and the demo cell are peers 0 and 1 of one ivshmem link."""
    system = example_system(arch)  # type: ignore[arg-type]
    demo = example_cells(arch)[f"{arch}-demo"]  # type: ignore[arg-type]
    (root_dev,) = [d for d in system.root_cell.pci_devices if d.type == PciType.IVSHMEM]
    (demo_dev,) = [d for d in demo.pci_devices if d.type == PciType.IVSHMEM]
    assert (root_dev.bdf, root_dev.domain) == (demo_dev.bdf, demo_dev.domain)
    assert (root_dev.shmem_dev_id, demo_dev.shmem_dev_id) == (0, 1)
    assert root_dev.shmem_peers == demo_dev.shmem_peers == 2

    def group(cell: CellConfig, start: int) -> list[tuple[int, int]]:
        return [(r.phys_start, r.size) for r in cell.mem_regions[start : start + 4]]

    assert group(system.root_cell, root_dev.shmem_regions_start) == group(
        demo, demo_dev.shmem_regions_start
    )
    demo_group = demo.mem_regions[demo_dev.shmem_regions_start :][:4]
    assert all(MemFlag.ROOTSHARED in r.flags for r in demo_group)
    # research notes §4: state table read-only, RW section shared, output i writable by peer i
    writable = [MemFlag.WRITE in r.flags for r in demo_group]
    assert writable == [False, True, False, True]


def test_unknown_arch_is_refused() -> None:
    """Asking for an architecture without examples raises ValueError naming it."""
    with pytest.raises(ValueError, match="'riscv'"):
        example_system("riscv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'arm'"):
        example_cells("arm")  # type: ignore[arg-type]


def test_each_call_returns_equal_configs() -> None:
    """The examples are built per call and compare equal across calls."""
    assert example_system("x86") == example_system("x86")
    assert isinstance(example_system("arm64"), SystemConfig)
    assert example_cells("arm64") == example_cells("arm64")


def test_import_is_cheap() -> None:
    """Importing the examples loads neither lxml nor the compiled shim."""
    code = (
        "import sys, jailhouse.examples; "
        "print(sorted(m for m in ('lxml', 'jailhouse._ffi', 'jailhouse._native', 'cffi') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
