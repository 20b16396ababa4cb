"""Config validation: each check fires on a config made to trip it, and not on clean sets."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from strategies import cell_configs, system_configs

from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CacheRegion,
    CacheType,
    CellConfig,
    CellFlag,
    Console,
    ConsoleType,
    IommuType,
    IommuUnit,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PciDevice,
    PciType,
    PioRegion,
    SystemConfig,
    SystemFlag,
    X86Platform,
)
from jailhouse.config.validate import (
    Finding,
    Severity,
    check_configs,
    validate_cell,
    validate_system,
)
from jailhouse.examples import EXAMPLE_ARCHES, example_cells, example_system

if TYPE_CHECKING:
    from collections.abc import Callable

ERROR, WARNING = Severity.ERROR, Severity.WARNING
R, W, X, D = MemFlag.READ, MemFlag.WRITE, MemFlag.EXECUTE, MemFlag.DMA
RW, RWX, RWXD = R | W, R | W | X, R | W | X | D
IO, RS, L, COMM = MemFlag.IO, MemFlag.ROOTSHARED, MemFlag.LOADABLE, MemFlag.COMM_REGION


def x86_demo() -> CellConfig:
    """Return the clean x86 demo cell."""
    return example_cells("x86")["x86-demo"]


def x86_linux() -> CellConfig:
    """Return the clean x86 Linux cell."""
    return example_cells("x86")["x86-linux"]


def arm_demo() -> CellConfig:
    """Return the clean arm64 demo cell."""
    return example_cells("arm64")["arm64-demo"]


def arm_linux() -> CellConfig:
    """Return the clean arm64 Linux cell."""
    return example_cells("arm64")["arm64-linux"]


def add_regions(cell: CellConfig, *regions: MemoryRegion) -> CellConfig:
    """Return ``cell`` with ``regions`` appended."""
    return cell.replace(mem_regions=(*cell.mem_regions, *regions))


def set_region(cell: CellConfig, index: int, **changes: object) -> CellConfig:
    """Return ``cell`` with one region changed."""
    regions = list(cell.mem_regions)
    regions[index] = replace(regions[index], **changes)  # type: ignore[arg-type]
    return cell.replace(mem_regions=tuple(regions))


def set_pci(cell: CellConfig, index: int, **changes: object) -> CellConfig:
    """Return ``cell`` with one PCI device changed."""
    devices = list(cell.pci_devices)
    devices[index] = replace(devices[index], **changes)  # type: ignore[arg-type]
    return cell.replace(pci_devices=tuple(devices))


def with_root(system: SystemConfig, **changes: object) -> SystemConfig:
    """Return ``system`` with its root cell changed."""
    return system.replace(root_cell=system.root_cell.replace(**changes))


def only(findings: list[Finding], field: str, *, cell: str | None = None) -> list[Finding]:
    """Return the findings about ``field`` (of ``cell``, if given)."""
    return [f for f in findings if f.field == field and (cell is None or f.cell == cell)]


def assert_finding(
    findings: list[Finding],
    field: str,
    severity: Severity,
    value: object,
    *,
    cell: str | None = None,
    says: str = "",
) -> Finding:
    """Assert that a finding names ``field`` with ``value`` at ``severity``; return it."""
    matches = only(findings, field, cell=cell)
    assert matches, f"no finding for {field!r} in {[str(f) for f in findings]}"
    hits = [f for f in matches if f.severity == severity and f.value == value and says in f.reason]
    assert hits, f"{field!r}: {[str(f) for f in matches]}"
    return hits[0]


# -- the clean sets -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_example_sets_are_clean(arch: str) -> None:
    """The example system with all its cells has no finding at all."""
    system = example_system(arch)  # type: ignore[arg-type]
    cells = example_cells(arch)  # type: ignore[arg-type]
    assert validate_system(system) == []
    for cell in cells.values():
        assert validate_cell(cell) == []
    assert check_configs(system, *cells.values()) == []


def upstream_style_arm64() -> tuple[SystemConfig, list[CellConfig]]:
    """Build the layout relations of upstream's QEMU arm64 set (research notes §3.2).

    Root RAM that also covers the inmates' RAM; a three-peer ivshmem link shared by the
    root and both cells; a veth link with its empty read/write section; one UART mapped
    ROOTSHARED into both cells.
    """

    def group(base: int, dev_id: int, peers: int, shared: MemFlag) -> tuple[MemoryRegion, ...]:
        regions = [MemoryRegion(base, base, 0x1000, R | shared), MemoryRegion(0, 0, 0)]
        for peer in range(peers):
            start = base + 0x1000 + peer * 0x7F000
            regions.append(
                MemoryRegion(start, start, 0x7F000, (RW if peer == dev_id else R) | shared)
            )
        return tuple(regions)

    demo_link = tuple(MemoryRegion(0x7FAF0000 + o, 0x7FAF0000 + o, s, R)
                      for o, s in ((0, 0x1000), (0x1000, 0x9000), (0xA000, 0x2000),
                                   (0xC000, 0x2000), (0xE000, 0x2000)))  # fmt: skip

    def demo_as(dev_id: int, shared: MemFlag) -> tuple[MemoryRegion, ...]:
        return tuple(
            replace(r, flags=(RW if i == 1 or i == 2 + dev_id else R) | shared)
            for i, r in enumerate(demo_link)
        )

    def ivshmem(bdf: int, dev_id: int, peers: int, start: int) -> PciDevice:
        return PciDevice(
            PciType.IVSHMEM,
            bdf,
            domain=1,
            bar_mask=(0xFFFFF000, 0, 0, 0, 0, 0),
            shmem_regions_start=start,
            shmem_dev_id=dev_id,
            shmem_peers=peers,
        )

    uart = MemoryRegion(0x09000000, 0x09000000, 0x1000, RW | IO | RS)
    comm = MemoryRegion(0, 0x80000000, 0x1000, RW | COMM)
    root = CellConfig(
        name="qemu-arm64",
        arch=Arch.ARM64,
        cpus=frozenset(range(4)),
        mem_regions=(
            *demo_as(0, MemFlag(0)),
            *group(0x7FB00000, 0, 2, RS),
            MemoryRegion(0x09000000, 0x09000000, 0x37000000, RW | IO),
            MemoryRegion(0x40000000, 0x40000000, 0x3FA10000, RWX),
            MemoryRegion(0x4010000000, 0x4010000000, 0x10000000, RW | IO),
        ),
        irqchips=(IrqChip(0x08000000, pin_base=32, pin_bitmap=(0xFFFFFFFF,) * 4),),
        pci_devices=(ivshmem(0, 0, 3, 0), ivshmem(8, 0, 2, 5)),
        vpci_irq_base=96,
    )
    system = SystemConfig(
        arch=Arch.ARM64,
        flags=SystemFlag.VIRTUAL_DEBUG_CONSOLE,
        hypervisor_memory=MemoryRegion(0x7FC00000, 0, 0x400000),
        platform=example_system("arm64").platform,
        root_cell=root,
    )
    inmate = CellConfig(
        name="inmate-demo",
        arch=Arch.ARM64,
        flags=CellFlag.PASSIVE_COMMREG,
        cpus=frozenset({1}),
        mem_regions=(
            *demo_as(1, RS),
            uart,
            MemoryRegion(0x7FA00000, 0, 0x10000, RWX | L),
            comm,
        ),
        irqchips=(IrqChip(0x08000000, pin_base=32, pin_bitmap=(0, 0, 0, 1 << 16)),),
        pci_devices=(ivshmem(0, 1, 3, 0),),
        vpci_irq_base=112,
    )
    linux = CellConfig(
        name="linux-demo",
        arch=Arch.ARM64,
        flags=CellFlag.PASSIVE_COMMREG | CellFlag.VIRTUAL_CONSOLE_PERMITTED,
        cpus=frozenset({2, 3}),
        mem_regions=(
            *demo_as(2, RS),
            *group(0x7FB00000, 1, 2, RS),
            uart,
            MemoryRegion(0x7F900000, 0, 0x10000, RWX | L),
            MemoryRegion(0x70000000, 0x70000000, 0x8000000, RWXD | L),
            comm,
        ),
        irqchips=(IrqChip(0x08000000, pin_base=32, pin_bitmap=(1 << 1, 0, 0, 3 << 12)),),
        pci_devices=(ivshmem(0, 2, 3, 0), ivshmem(8, 1, 2, 5)),
        vpci_irq_base=108,
    )
    return system, [inmate, linux]


def test_upstream_style_layout_is_clean() -> None:
    """Carved inmate RAM, three-peer ivshmem, empty sections and a shared UART pass."""
    system, cells = upstream_style_arm64()
    assert check_configs(system, *cells) == []


# -- one cell on its own ------------------------------------------------------------------------

CELL_CASES: list[tuple[str, Callable[[], CellConfig], str, Severity, object]] = [
    ("empty name", lambda: x86_demo().replace(name=""), "name", ERROR, ""),
    ("long name", lambda: x86_demo().replace(name="n" * 32), "name", ERROR, "n" * 32),
    ("non-latin-1 name", lambda: x86_demo().replace(name="d\u20ac"), "name", ERROR, "d\u20ac"),
    ("NUL in name", lambda: x86_demo().replace(name="a\0b"), "name", ERROR, "a\0b"),
    ("non-ASCII name", lambda: x86_demo().replace(name="caf\xe9"), "name", WARNING, "caf\xe9"),
    ("cpu set size 0", lambda: x86_demo().replace(cpu_set_size=0), "cpu_set_size", ERROR, 0),
    ("cpu set too big", lambda: x86_demo().replace(cpu_set_size=4104), "cpu_set_size", ERROR, 4104),
    ("cpu set size odd", lambda: x86_demo().replace(cpu_set_size=12), "cpu_set_size", WARNING, 12),
    ("cpu outside set", lambda: x86_demo().replace(cpus=frozenset({3, 64})), "cpus", ERROR, "64"),
    ("no cpu", lambda: x86_demo().replace(cpus=frozenset()), "cpus", WARNING, ""),
    ("x86 cpu 0", lambda: x86_demo().replace(cpus=frozenset({0, 3})), "cpus", ERROR, "0,3"),
    (
        "over 16 pages",
        lambda: x86_demo().replace(stream_ids=(0,) * 16300),
        "size",
        ERROR,
        392 + 4 * 16300,
    ),
    (
        "unknown cell flag",
        lambda: x86_demo().replace(flags=CellFlag(0x41)),
        "flags",
        WARNING,
        0x41,
    ),
    (
        "unknown console",
        lambda: x86_demo().replace(console=Console(type=ConsoleType(0x77))),
        "console.type",
        WARNING,
        0x77,
    ),
    ("unknown arch", lambda: x86_demo().replace(arch=Arch(7)), "arch", ERROR, 7),
    (
        "unknown memory flag",
        lambda: set_region(x86_demo(), 4, flags=RWX | L | MemFlag(0x200)),
        "mem_regions[4].flags",
        WARNING,
        int(RWX | L) | 0x200,
    ),
    (
        "region wraps",
        lambda: set_region(x86_demo(), 4, phys_start=0xFFFF_FFFF_FFF8_0000),
        "mem_regions[4].size",
        ERROR,
        0x100000,
    ),
    (
        "second comm region",
        lambda: add_regions(x86_demo(), MemoryRegion(0, 0x200000, 0x1000, RW | COMM)),
        "mem_regions[6].flags",
        WARNING,
        int(RW | COMM),
    ),
    (
        "big comm region",
        lambda: set_region(x86_demo(), 5, size=0x2000),
        "mem_regions[5].size",
        ERROR,
        0x2000,
    ),
    (
        "unaligned comm region",
        lambda: set_region(x86_demo(), 5, virt_start=0x100800),
        "mem_regions[5].virt_start",
        ERROR,
        0x100800,
    ),
    (
        "empty region",
        lambda: add_regions(x86_demo(), MemoryRegion(0x3EF00000, 0x300000, 0, RW)),
        "mem_regions[6].size",
        WARNING,
        0,
    ),
    (
        "sub-page size without width",
        lambda: add_regions(x86_demo(), MemoryRegion(0xFED00000, 0xFED00000, 0x400, RW | IO)),
        "mem_regions[6].size",
        ERROR,
        0x400,
    ),
    (
        "sub-page start without width",
        lambda: add_regions(x86_demo(), MemoryRegion(0xFED00000, 0xFED00100, 0x1000, RW | IO)),
        "mem_regions[6].virt_start",
        ERROR,
        0xFED00100,
    ),
    (
        "unaligned phys",
        lambda: set_region(x86_demo(), 4, phys_start=0x3EF00800),
        "mem_regions[4].phys_start",
        ERROR,
        0x3EF00800,
    ),
    (
        "loadable, not writable",
        lambda: set_region(x86_demo(), 4, flags=R | X | L),
        "mem_regions[4].flags",
        WARNING,
        int(R | X | L),
    ),
    (
        "physical overlap",
        lambda: add_regions(x86_demo(), MemoryRegion(0x3EF80000, 0x400000, 0x1000, RW)),
        "mem_regions[6].phys_start",
        ERROR,
        0x3EF80000,
    ),
    (
        "virtual overlap",
        lambda: add_regions(x86_demo(), MemoryRegion(0x3EE00000, 0x80000, 0x1000, RW)),
        "mem_regions[6].virt_start",
        ERROR,
        0x80000,
    ),
    (
        "x86 two cache regions",
        lambda: x86_demo().replace(cache_regions=(CacheRegion(0, 2), CacheRegion(2, 2))),
        "cache_regions[1]",
        ERROR,
        2,
    ),
    (
        "x86 cache type",
        lambda: x86_demo().replace(cache_regions=(CacheRegion(0, 2, CacheType.L3_DATA),)),
        "cache_regions[0].type",
        ERROR,
        2,
    ),
    (
        "x86 unknown cache type",
        lambda: x86_demo().replace(cache_regions=(CacheRegion(0, 2, CacheType(9)),)),
        "cache_regions[0].type",
        ERROR,
        9,
    ),
    (
        "x86 empty cache",
        lambda: x86_demo().replace(cache_regions=(CacheRegion(0, 0),)),
        "cache_regions[0].size",
        ERROR,
        0,
    ),
    (
        "arm cache regions",
        lambda: arm_demo().replace(cache_regions=(CacheRegion(0, 2),)),
        "cache_regions",
        WARNING,
        1,
    ),
    (
        "x86 pin base",
        lambda: x86_linux().replace(irqchips=(IrqChip(0xFEC00000, 0xFF00, pin_base=32),)),
        "irqchips[0].pin_base",
        ERROR,
        32,
    ),
    (
        "gic pin base",
        lambda: arm_linux().replace(irqchips=(IrqChip(0x08000000, pin_base=48),)),
        "irqchips[0].pin_base",
        ERROR,
        48,
    ),
    (
        "gic pin range",
        lambda: arm_linux().replace(irqchips=(IrqChip(0x08000000, pin_base=928),)),
        "irqchips[0].pin_base",
        ERROR,
        928,
    ),
    (
        "x86 ports past 0xffff",
        lambda: x86_demo().replace(pio_regions=(PioRegion(0xFFF8, 0x10),)),
        "pio_regions[0].length",
        ERROR,
        0x10,
    ),
    (
        "arm ports",
        lambda: arm_demo().replace(pio_regions=(PioRegion(0x3F8, 8),)),
        "pio_regions",
        WARNING,
        1,
    ),
    (
        "unknown pci type",
        lambda: set_pci(x86_demo(), 0, type=PciType(9)),
        "pci_devices[0].type",
        ERROR,
        9,
    ),
    (
        "caps past the array",
        lambda: set_pci(x86_demo(), 0, caps_start=1, num_caps=2),
        "pci_devices[0].num_caps",
        ERROR,
        2,
    ),
    (
        "ivshmem group past regions",
        lambda: set_pci(x86_demo(), 0, shmem_regions_start=3),
        "pci_devices[0].shmem_regions_start",
        ERROR,
        3,
    ),
    (
        "ivshmem vectors",
        lambda: set_pci(x86_demo(), 0, num_msix_vectors=17),
        "pci_devices[0].num_msix_vectors",
        ERROR,
        17,
    ),
    (
        "ivshmem peers",
        lambda: set_pci(x86_demo(), 0, shmem_peers=13),
        "pci_devices[0].shmem_peers",
        ERROR,
        13,
    ),
    (
        "ivshmem id range",
        lambda: set_pci(x86_demo(), 0, shmem_dev_id=12),
        "pci_devices[0].shmem_dev_id",
        ERROR,
        12,
    ),
    (
        "ivshmem id beyond peers",
        lambda: set_pci(x86_demo(), 0, shmem_dev_id=2),
        "pci_devices[0].shmem_dev_id",
        ERROR,
        2,
    ),
    (
        "writes another peer's output",
        lambda: set_region(x86_demo(), 2, flags=RW | RS),
        "mem_regions[2].flags",
        WARNING,
        int(RW | RS),
    ),
    (
        "arm INTx without its SPI",
        lambda: arm_demo().replace(vpci_irq_base=100),
        "pci_devices[0].bdf",
        WARNING,
        0,
    ),
    (
        "x86 reset address",
        lambda: x86_demo().replace(cpu_reset_address=0x1000),
        "cpu_reset_address",
        WARNING,
        0x1000,
    ),
    (
        "no comm region, not passive",
        lambda: x86_demo().replace(flags=CellFlag(0), mem_regions=x86_demo().mem_regions[:5]),
        "flags",
        WARNING,
        0,
    ),
]


@pytest.mark.parametrize(
    ("make", "field", "severity", "value"),
    [case[1:] for case in CELL_CASES],
    ids=[case[0] for case in CELL_CASES],
)
def test_cell_check_fires(
    make: Callable[[], CellConfig], field: str, severity: Severity, value: object
) -> None:
    """A cell made to break one rule gets a finding naming the field and the value."""
    findings = validate_cell(make())
    finding = assert_finding(findings, field, severity, value)
    assert finding.cell is None
    assert finding.reason.strip()


def test_sub_page_region_with_access_width_is_fine() -> None:
    """A sub-page MMIO region that permits 32-bit accesses has no finding."""
    cell = add_regions(
        x86_demo(), MemoryRegion(0xFED00000, 0xFED00000, 0x400, RW | IO | MemFlag.IO_32)
    )
    assert validate_cell(cell) == []


def test_comm_region_phys_zero_does_not_overlap() -> None:
    """The comm region's ignored phys_start 0 does not collide with RAM at phys 0."""
    cell = set_region(x86_demo(), 4, phys_start=0)
    assert validate_cell(cell) == []


def test_adjacent_regions_do_not_overlap() -> None:
    """Regions that touch end to start, physically and virtually, do not overlap."""
    cell = add_regions(x86_demo(), MemoryRegion(0x3EE00000, 0x101000, 0x100000, RW))
    assert validate_cell(cell) == []


def test_passive_cell_without_comm_region_is_fine() -> None:
    """A PASSIVE_COMMREG cell needs no comm region."""
    cell = x86_demo().replace(mem_regions=x86_demo().mem_regions[:5])
    assert only(validate_cell(cell), "flags") == []


def test_arm_cpu_zero_is_fine() -> None:
    """On arm64 a non-root cell may take CPU 0."""
    assert validate_cell(arm_demo().replace(cpus=frozenset({0}))) == []


def test_single_l3_cache_region_is_fine() -> None:
    """One unified L3 region with a size passes on x86."""
    assert validate_cell(x86_demo().replace(cache_regions=(CacheRegion(0, 2),))) == []


def test_trailing_bytes_warning() -> None:
    """Bytes after the arrays are a warning naming the count, offset and a guess."""
    cell = x86_demo().replace(trailing=bytes(64))
    finding = assert_finding(validate_cell(cell), "trailing", WARNING, 64)
    assert f"offset {cell.size}" in finding.reason
    assert "num_memory_regions or num_irqchips (2 x 32 bytes)" in finding.reason
    assert "all zero" in finding.reason

    odd = x86_demo().replace(trailing=b"\x01\x02\x03")
    finding = assert_finding(validate_cell(odd), "trailing", WARNING, 3)
    assert "matches no array entry size" in finding.reason
    assert "all zero" not in finding.reason


def test_root_trailing_offset_is_in_the_system_blob() -> None:
    """Trailing bytes of the root cell are located from the start of the system config."""
    system = example_system("x86")
    system = with_root(system, trailing=bytes(56))
    finding = assert_finding(validate_system(system), "root_cell.trailing", WARNING, 56)
    assert f"offset {system.size}" in finding.reason
    assert "num_pci_devices (1 x 56 bytes)" in finding.reason


def test_finding_renders_alone() -> None:
    """A finding's text names severity, cell, field and value before the reason."""
    finding = Finding("mem_regions[3].size", 0x1001, "not page aligned", Severity.ERROR, "demo")
    assert str(finding) == "error: cell 'demo': mem_regions[3].size = 0x1001: not page aligned"
    warning = Finding("cpu_set_size", 12, "use 8", Severity.WARNING)
    assert str(warning) == "warning: cpu_set_size = 12: use 8"


# -- the system config --------------------------------------------------------------------------


def x86_system() -> SystemConfig:
    """Return the clean x86 example system."""
    return example_system("x86")


def arm_system() -> SystemConfig:
    """Return the clean arm64 example system."""
    return example_system("arm64")


def arm_info(**changes: object) -> Callable[[], SystemConfig]:
    """Return a builder of the arm64 system with its GIC info changed."""

    def build() -> SystemConfig:
        system = arm_system()
        info = system.platform.arch_info
        assert isinstance(info, ArmPlatform)
        platform = replace(system.platform, arch_info=replace(info, **changes))  # type: ignore[arg-type]
        return system.replace(platform=platform)

    return build


def root_region(
    system: Callable[[], SystemConfig], region: MemoryRegion
) -> Callable[[], SystemConfig]:
    """Return a builder of ``system`` with one more root region."""

    def build() -> SystemConfig:
        base = system()
        return with_root(base, mem_regions=(*base.root_cell.mem_regions, region))

    return build


def x86_units(*units: IommuUnit) -> Callable[[], SystemConfig]:
    """Return a builder of the x86 system with other IOMMU units."""

    def build() -> SystemConfig:
        system = x86_system()
        return system.replace(platform=replace(system.platform, iommu_units=units))

    return build


X86_NEXT = len(x86_system().root_cell.mem_regions)
ARM_NEXT = len(arm_system().root_cell.mem_regions)

SYSTEM_CASES: list[tuple[str, Callable[[], SystemConfig], str, Severity, object]] = [
    ("unknown arch", lambda: x86_system().replace(arch=Arch(5)), "arch", ERROR, 5),
    ("unknown flag", lambda: x86_system().replace(flags=SystemFlag(3)), "flags", WARNING, 3),
    (
        "unknown debug console",
        lambda: x86_system().replace(debug_console=Console(type=ConsoleType(0x40))),
        "debug_console.type",
        WARNING,
        0x40,
    ),
    (
        "no hypervisor memory",
        lambda: x86_system().replace(hypervisor_memory=MemoryRegion(0x3A000000, 0, 0)),
        "hypervisor_memory.size",
        ERROR,
        0,
    ),
    (
        "hypervisor size",
        lambda: x86_system().replace(hypervisor_memory=MemoryRegion(0x3A000000, 0, 0x600001)),
        "hypervisor_memory.size",
        ERROR,
        0x600001,
    ),
    (
        "hypervisor start",
        lambda: x86_system().replace(hypervisor_memory=MemoryRegion(0x3A000800, 0, 0x600000)),
        "hypervisor_memory.phys_start",
        ERROR,
        0x3A000800,
    ),
    (
        "nine IOMMUs",
        x86_units(*[IommuUnit(IommuType.UNUSED)] * 9),
        "platform.iommu_units",
        ERROR,
        9,
    ),
    (
        "unknown IOMMU",
        x86_units(IommuUnit(IommuType(6), 0xFED90000, 0x1000)),
        "platform.iommu_units[0].type",
        ERROR,
        6,
    ),
    (
        "x86 with ARM info",
        lambda: x86_system().replace(platform=arm_system().platform),
        "platform.arch_info",
        ERROR,
        "ArmPlatform",
    ),
    (
        "arm64 with x86 info",
        lambda: arm_system().replace(platform=x86_system().platform),
        "platform.arch_info",
        ERROR,
        "X86Platform",
    ),
    (
        "unknown APIC mode",
        lambda: x86_system().replace(
            platform=replace(x86_system().platform, arch_info=X86Platform(apic_mode=7))  # type: ignore[arg-type]
        ),
        "platform.arch_info.apic_mode",
        WARNING,
        7,
    ),
    ("GIC version", arm_info(gic_version=4), "platform.arch_info.gic_version", ERROR, 4),
    (
        "root cell of another arch",
        lambda: with_root(x86_system(), arch=Arch.ARM64),
        "root_cell.arch",
        WARNING,
        2,
    ),
    (
        "root without CPUs",
        lambda: with_root(x86_system(), cpus=frozenset()),
        "root_cell.cpus",
        ERROR,
        "",
    ),
    (
        "root overlaps hypervisor",
        root_region(x86_system, MemoryRegion(0x3A400000, 0x3A400000, 0x1000, RW)),
        f"root_cell.mem_regions[{X86_NEXT}].phys_start",
        ERROR,
        0x3A400000,
    ),
    (
        "root maps MMCONFIG",
        root_region(x86_system, MemoryRegion(0xBFFFF000, 0xBFFFF000, 0x2000, RW)),
        f"root_cell.mem_regions[{X86_NEXT}].phys_start",
        ERROR,
        0xBFFFF000,
    ),
    (
        "root maps the IOMMU",
        root_region(x86_system, MemoryRegion(0xFED90000, 0xFED90000, 0x1000, RW)),
        f"root_cell.mem_regions[{X86_NEXT}].phys_start",
        ERROR,
        0xFED90000,
    ),
    (
        "root maps the xAPIC",
        root_region(x86_system, MemoryRegion(0xFEE00000, 0xFEE00000, 0x1000, RW)),
        f"root_cell.mem_regions[{X86_NEXT}].phys_start",
        ERROR,
        0xFEE00000,
    ),
    (
        "root maps the IOAPIC",
        root_region(x86_system, MemoryRegion(0xFEC00000, 0xFEC00000, 0x1000, RW)),
        f"root_cell.mem_regions[{X86_NEXT}].phys_start",
        ERROR,
        0xFEC00000,
    ),
    (
        "root maps GICD",
        root_region(arm_system, MemoryRegion(0x0800F000, 0x0800F000, 0x1000, RW | IO)),
        f"root_cell.mem_regions[{ARM_NEXT}].phys_start",
        ERROR,
        0x0800F000,
    ),
    (
        "root maps GICR",
        root_region(arm_system, MemoryRegion(0x080B0000, 0x080B0000, 0x1000, RW | IO)),
        f"root_cell.mem_regions[{ARM_NEXT}].phys_start",
        ERROR,
        0x080B0000,
    ),
    (
        "root maps GICv2 GICC",
        root_region(
            arm_info(
                gic_version=2, gicc_base=0x08010000, gich_base=0x08030000, gicv_base=0x08040000
            ),
            MemoryRegion(0x08011000, 0x08011000, 0x1000, RW | IO),
        ),
        f"root_cell.mem_regions[{ARM_NEXT}].phys_start",
        ERROR,
        0x08011000,
    ),
    (
        "irqchip not at GICD",
        lambda: with_root(arm_system(), irqchips=(IrqChip(0x08010000, pin_base=32),)),
        "root_cell.irqchips[0].address",
        WARNING,
        0x08010000,
    ),
    (
        "IOMMU index",
        lambda: with_root(x86_system(), pci_devices=(PciDevice(PciType.DEVICE, 0x10, iommu=1),)),
        "root_cell.pci_devices[0].iommu",
        ERROR,
        1,
    ),
    (
        "root comm region",
        root_region(x86_system, MemoryRegion(0, 0x50000000, 0x1000, RW | COMM)),
        f"root_cell.mem_regions[{X86_NEXT}].flags",
        WARNING,
        int(RW | COMM),
    ),
]


@pytest.mark.parametrize(
    ("make", "field", "severity", "value"),
    [case[1:] for case in SYSTEM_CASES],
    ids=[case[0] for case in SYSTEM_CASES],
)
def test_system_check_fires(
    make: Callable[[], SystemConfig], field: str, severity: Severity, value: object
) -> None:
    """A system made to break one rule gets a finding naming the field and the value."""
    assert_finding(validate_system(make()), field, severity, value)


def test_root_cell_may_have_cpu_zero_and_no_comm_region() -> None:
    """Rules for non-root cells (x86 CPU 0, comm region) do not apply to the root cell."""
    findings = validate_system(example_system("x86"))
    assert findings == []
    assert 0 in example_system("x86").root_cell.cpus


# -- a partitioned system -----------------------------------------------------------------------


def test_arch_mismatch() -> None:
    """A cell of another architecture than the system is an error naming the cell."""
    cell = x86_demo().replace(arch=Arch.ARM64)
    findings = check_configs(x86_system(), cell)
    assert_finding(findings, "arch", ERROR, "ARM64", cell="x86-demo")


def test_a_system_checked_again_gives_its_findings_again() -> None:
    """check_configs remembers what a system alone yields, and nothing of the cells it had."""
    system = x86_system()
    system = system.replace(hypervisor_memory=replace(system.hypervisor_memory, size=0x1001))
    first = check_configs(system, x86_demo().replace(cpu_set_size=12))
    again = check_configs(system)
    assert again == check_configs(system.replace())  # an equal system, another object
    assert_finding(first, "hypervisor_memory.size", ERROR, 0x1001)
    assert_finding(again, "hypervisor_memory.size", ERROR, 0x1001)
    assert_finding(first, "cpu_set_size", WARNING, 12, cell="x86-demo")
    assert not only(again, "cpu_set_size")
    assert [f for f in first if f.cell == "x86-root"] == again


def test_cell_findings_carry_the_cell_name() -> None:
    """In a set check, per-cell findings name their cell."""
    findings = check_configs(x86_system(), x86_demo().replace(cpu_set_size=12), x86_linux())
    assert_finding(findings, "cpu_set_size", WARNING, 12, cell="x86-demo")


def test_duplicate_names() -> None:
    """Two cells, or a cell and the root cell, with one name are an error."""
    twin = x86_linux().replace(name="x86-demo")
    assert_finding(check_configs(x86_system(), x86_demo(), twin), "name", ERROR, "x86-demo",
                   cell="x86-demo", says="cell 'x86-demo'")  # fmt: skip
    rooty = x86_demo().replace(name="x86-root")
    assert_finding(check_configs(x86_system(), rooty), "name", ERROR, "x86-root",
                   cell="x86-root", says="root cell")  # fmt: skip


def test_cpu_not_owned_by_root() -> None:
    """A CPU outside the root cell's set is an error (EBUSY at create)."""
    cell = x86_demo().replace(cpus=frozenset({3, 4, 5}))
    finding = assert_finding(
        check_configs(x86_system(), cell), "cpus", ERROR, "4-5", cell="x86-demo"
    )
    assert "EBUSY" in finding.reason


def test_overlapping_cores() -> None:
    """Two non-root cells sharing a CPU is an error on the later cell."""
    linux = x86_linux().replace(cpus=frozenset({2, 3}))
    findings = check_configs(x86_system(), x86_demo(), linux)
    finding = assert_finding(findings, "cpus", ERROR, "3", cell="x86-linux")
    assert "'x86-demo'" in finding.reason


def test_root_cpu_starvation() -> None:
    """Non-root cells that take every root CPU leave the root cell starving."""
    system = with_root(arm_system(), cpus=frozenset({1, 2, 3}))
    findings = check_configs(system, arm_demo(), arm_linux())
    assert_finding(findings, "root_cell.cpus", ERROR, "1-3", cell="arm64-root")


def test_no_starvation_without_cells() -> None:
    """The starvation check needs at least one non-root cell."""
    assert check_configs(x86_system()) == []


def test_loadable_memory_outside_root() -> None:
    """LOADABLE memory outside the root cell's regions is an error; other memory a warning."""
    demo = set_region(x86_demo(), 4, phys_start=0x40000000)
    findings = check_configs(x86_system(), demo)
    assert_finding(findings, "mem_regions[4].phys_start", ERROR, 0x40000000, cell="x86-demo",
                   says="LOADABLE")  # fmt: skip
    plain = set_region(x86_demo(), 4, phys_start=0x40000000, flags=RWX)
    assert_finding(check_configs(x86_system(), plain), "mem_regions[4].phys_start", WARNING,
                   0x40000000, cell="x86-demo")  # fmt: skip


def test_memory_spanning_two_root_regions_is_inside() -> None:
    """Memory covered by two adjacent root regions counts as inside the root cell."""
    system = example_system("x86")
    regions = list(system.root_cell.mem_regions)
    inmates = regions[5]
    assert (inmates.phys_start, inmates.size) == (0x3A600000, 0x04A00000)
    upper = replace(inmates, phys_start=0x3C600000, virt_start=0x3C600000, size=0x2A00000)
    regions[5:6] = [replace(inmates, size=0x2000000), upper]
    findings = check_configs(with_root(system, mem_regions=tuple(regions)), x86_linux())
    assert findings == []


def test_ram_overlap_between_cells() -> None:
    """Two non-root cells claiming the same RAM is an error."""
    linux = set_region(x86_linux(), 2, size=0x4900000)  # now reaches into the demo's RAM
    findings = check_configs(x86_system(), x86_demo(), linux)
    finding = assert_finding(findings, "mem_regions[2].phys_start", ERROR, 0x3A700000,
                             cell="x86-linux")  # fmt: skip
    assert "cell 'x86-demo' mem_regions[4]" in finding.reason


def test_device_overlap_between_cells() -> None:
    """A device mapped into two cells without ROOTSHARED in both is a warning."""
    linux = set_region(arm_linux(), 0, flags=RW | IO)
    findings = check_configs(arm_system(), arm_demo(), linux)
    assert_finding(findings, "mem_regions[0].phys_start", WARNING, 0x09000000, cell="arm64-linux")
    assert [f for f in findings if f.severity == ERROR] == []


def test_ivshmem_duplicate_peer_id() -> None:
    """Two cells taking the same peer id of one ivshmem link is an error (EBUSY)."""
    demo = set_pci(x86_demo(), 0, shmem_dev_id=0)
    demo = set_region(demo, 2, flags=RW | RS)
    demo = set_region(demo, 3, flags=R | RS)
    findings = check_configs(x86_system(), demo)
    finding = assert_finding(findings, "pci_devices[0].shmem_dev_id", ERROR, 0, cell="x86-demo")
    assert "'x86-root'" in finding.reason
    assert "EBUSY" in finding.reason


def test_ivshmem_peer_count_mismatch() -> None:
    """Peers of one link that disagree on the peer count get a warning."""
    demo = add_regions(x86_demo(), MemoryRegion(0x3F00E000, 0x3F00E000, 0x2000, R | RS))
    regions = list(demo.mem_regions)
    regions.insert(4, regions.pop())  # the third output section right after the group
    demo = set_pci(demo.replace(mem_regions=tuple(regions)), 0, shmem_peers=3)
    findings = check_configs(x86_system(), demo)
    assert_finding(findings, "pci_devices[0].shmem_peers", WARNING, 3, cell="x86-demo")


def test_ivshmem_region_mismatch() -> None:
    """Peers of one link mapping different memory for a section is an error."""
    demo = set_region(x86_demo(), 0, phys_start=0x3F020000, virt_start=0x3F020000)
    findings = check_configs(x86_system(), demo)
    finding = assert_finding(findings, "mem_regions[0].phys_start", ERROR, 0x3F020000,
                             cell="x86-demo")  # fmt: skip
    assert "state table" in finding.reason


def test_non_root_region_overlapping_system_resources() -> None:
    """A non-root cell mapping the xAPIC or hypervisor memory is an error naming the cell."""
    cell = add_regions(x86_linux(), MemoryRegion(0xFEE00000, 0xFEE00000, 0x1000, RW | IO))
    findings = check_configs(x86_system(), cell)
    finding = assert_finding(findings, "mem_regions[3].phys_start", ERROR, 0xFEE00000,
                             cell="x86-linux")  # fmt: skip
    assert "xAPIC" in finding.reason


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_every_example_cell_alone_passes(arch: str) -> None:
    """Each example cell also passes the set check on its own."""
    system = example_system(arch)  # type: ignore[arg-type]
    for cell in example_cells(arch).values():  # type: ignore[arg-type]
        assert check_configs(system, cell) == []


# -- any config ------------------------------------------------------------------------------


@given(cell_configs())
def test_any_cell_validates_without_raising(cell: CellConfig) -> None:
    """Validation of arbitrary cells returns findings with a field and a reason."""
    for finding in validate_cell(cell):
        assert finding.field
        assert finding.reason
        assert finding.cell is None
        assert str(finding).startswith(finding.severity.value)


@given(system_configs(), cell_configs())
def test_any_set_validates_without_raising(system: SystemConfig, cell: CellConfig) -> None:
    """A set check of arbitrary configs names the cell of every finding."""
    names = {system.root_cell.name, cell.name}
    for finding in check_configs(system, cell):
        assert finding.field
        assert finding.cell in names
