"""Tests for jailhouse.configgen on host trees recorded from emulated QEMU machines.

The trees under ``fixtures/hosts`` were written by ``fixtures/hosts/record.py`` (one
boot each of Debian's kernel under QEMU TCG; see the README there); the expected numbers
below are facts of those QEMU machines and of upstream Jailhouse's board configs for them,
cited where they are used.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from jailhouse.cli import main
from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CellConfig,
    ConsoleFlag,
    ConsoleType,
    IommuType,
    MemFlag,
    PciCapFlag,
    PciType,
    SystemConfig,
    X86Platform,
    load_config,
)
from jailhouse.config.validate import Severity, check_configs
from jailhouse.configgen import (
    NoteKind,
    detect_host_arch,
    device_tree_uart_irq,
    generate_system,
    new_cell,
    to_c_source,
)
from jailhouse.configgen._acpi import parse_dmar, parse_ivrs, parse_madt, parse_mcfg
from jailhouse.configgen._common import HostTree
from jailhouse.configgen._devicetree import DeviceTree
from jailhouse.errors import ConfigError
from jailhouse.hostcheck import CheckStatus, validate_host
from jailhouse.hypervisor import Hypervisor, Image
from jailhouse.inmates import park_inmate
from jailhouse.sim import SimHost
from jailhouse.sysfs import CellState

HOSTS = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"
RESERVED_HOSTS = ("qemu-arm64-virt", "qemu-q35", "qemu-q35-iommu", "qemu-q35-amd-iommu")
"""Recorded with memmap= or mem= on the command line, as upstream's QEMU configs expect."""
ALL_HOSTS = (*RESERVED_HOSTS, "qemu-arm64-virt-smmu")
C_HEADERS = Path(__file__).resolve().parent / "data" / "cconfig"
IO = MemFlag.READ | MemFlag.WRITE | MemFlag.IO


def errors(system: SystemConfig, *cells: CellConfig) -> list[str]:
    """Return the error findings of a partitioned system, as text."""
    return [str(f) for f in check_configs(system, *cells) if f.severity is Severity.ERROR]


def region_at(cell: CellConfig, address: int) -> list[tuple[int, int, MemFlag]]:
    """Return ``(start, size, flags)`` of the regions holding physical ``address``."""
    return [
        (r.phys_start, r.size, r.flags)
        for r in cell.mem_regions
        if r.phys_start <= address < r.phys_end
    ]


def copy_host(name: str, tmp_path: Path) -> Path:
    """Copy a recorded tree so a test can change it."""
    target = tmp_path / name
    shutil.copytree(HOSTS / name, target)
    return target


# -- every recorded tree ------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_HOSTS)
def test_recorded_tree_gives_a_system_that_passes_check_configs(name: str) -> None:
    """Each recorded host's generated system config has no check_configs finding at all."""
    result = generate_system(HOSTS / name)
    system = result.config
    assert check_configs(system) == []
    assert SystemConfig.from_bytes(system.to_bytes()) == system
    assert len(result.region_comments) == len(system.root_cell.mem_regions)


@pytest.mark.parametrize("name", RESERVED_HOSTS)
def test_host_validate_passes_the_config_checks_on_its_own_host(name: str) -> None:
    """host-validate on the recorded root passes every check that compares the config."""
    system = generate_system(HOSTS / name).config
    checks = {c.name: c for c in validate_host(HOSTS / name, system=system)}
    for probe in ("architecture", "memory", "root-cpus"):
        assert checks[probe].status is CheckStatus.PASS, checks[probe]


def test_architecture_comes_from_cpuinfo() -> None:
    """The recorded trees' /proc/cpuinfo tells arm64 from x86."""
    assert detect_host_arch(HOSTS / "qemu-arm64-virt") is Arch.ARM64
    assert detect_host_arch(HOSTS / "qemu-q35") is Arch.X86


def test_an_empty_root_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """A directory with no host files raises a ConfigError naming what is missing."""
    with pytest.raises(ConfigError, match="cpuinfo"):
        generate_system(tmp_path)
    with pytest.raises(ConfigError, match="/proc/iomem"):
        generate_system(tmp_path, arch=Arch.X86)
    with pytest.raises(ConfigError, match="device-tree"):
        generate_system(tmp_path, arch=Arch.ARM64)


# -- arm64: QEMU virt against upstream's configs/arm64/qemu-arm64.c ----------------------------
# Upstream's board config is for "QEMU arm64 virtual target, 1G RAM, 16 cores" with
# gic-version=3 and "mem=768M"; the tree was recorded with -smp 16 -m 1G and that mem=.


@pytest.fixture(scope="module")
def virt() -> SystemConfig:
    """The system config generated from the QEMU virt tree."""
    return generate_system(HOSTS / "qemu-arm64-virt").config


def test_virt_cpus_match_upstream(virt: SystemConfig) -> None:
    """16 CPUs, all in the root cell (upstream lists phys_id 0-15)."""
    assert virt.arch is Arch.ARM64
    assert virt.root_cell.cpus == frozenset(range(16))


def test_virt_ram_and_hypervisor_memory_match_upstream(virt: SystemConfig) -> None:
    """RAM from 0x40000000, hypervisor memory 0x7fc00000+0x400000 at its 1 GiB top."""
    hv = virt.hypervisor_memory
    assert (hv.phys_start, hv.size) == (0x7FC00000, 0x400000)
    ram = [r for r in virt.root_cell.mem_regions if r.flags & MemFlag.EXECUTE]
    assert ram[0].phys_start == 0x40000000
    # QEMU virt's RAM bank is 0x40000000+1 GiB; every byte below the hypervisor that the
    # ivshmem link does not use is root-cell RAM, as upstream's 0x40000000+0x3fa10000 is.
    ram_end = max(r.phys_end for r in ram)
    link = [r for r in virt.root_cell.mem_regions if r.phys_start >= ram_end]
    assert all(r.phys_end <= hv.phys_start for r in link if r.phys_start < hv.phys_start)
    assert (
        sum(r.size for r in ram) + sum(r.size for r in link if r.phys_end <= hv.phys_start)
        == hv.phys_start - 0x40000000
    )


def test_virt_gic_matches_upstream(virt: SystemConfig) -> None:
    """GICv3, GICD 0x08000000, GICR 0x080a0000, maintenance IRQ 25, SPIs 32-159."""
    arm = virt.platform.arch_info
    assert isinstance(arm, ArmPlatform)
    assert (arm.gic_version, arm.gicd_base, arm.gicr_base, arm.maintenance_irq) == (
        3,
        0x08000000,
        0x080A0000,
        25,
    )
    (chip,) = virt.root_cell.irqchips
    assert (chip.address, chip.pin_base, chip.pin_bitmap) == (0x08000000, 32, (0xFFFFFFFF,) * 4)
    # The hypervisor emulates the distributor and redistributors: not mapped for root.
    assert region_at(virt.root_cell, 0x08000000) == []
    assert region_at(virt.root_cell, 0x080A0000) == []


def test_virt_uart_matches_upstream(virt: SystemConfig) -> None:
    """The debug console is the PL011 at 0x09000000 (MMIO, 4-byte registers)."""
    con = virt.debug_console
    assert (con.address, con.size, con.type) == (0x09000000, 0x1000, ConsoleType.PL011)
    assert con.flags == ConsoleFlag.ACCESS_MMIO | ConsoleFlag.REGDIST_4
    assert region_at(virt.root_cell, 0x09000000) == [(0x09000000, 0x1000, IO)]


def test_virt_pci_matches_upstream(virt: SystemConfig) -> None:
    """Physical ECAM 0x4010000000+0x10000000 mapped; virtual host in PCI domain 1."""
    assert region_at(virt.root_cell, 0x4010000000) == [(0x4010000000, 0x10000000, IO)]
    p = virt.platform
    assert (p.pci_is_virtual, p.pci_domain, p.pci_mmconfig_end_bus) == (1, 1, 0)
    assert virt.root_cell.vpci_irq_base == 128 - 32
    (ivshmem,) = virt.root_cell.pci_devices
    assert (ivshmem.type, ivshmem.domain, ivshmem.bdf) == (PciType.IVSHMEM, 1, 0)
    # Upstream hand-picked 0x08e00000, inside the 0x080a0000+0xf60000 redistributor range
    # the device tree declares; ours is the first 1 MiB no device-tree node claims.
    dt = DeviceTree(HostTree(HOSTS / "qemu-arm64-virt"))
    claimed = [(a, a + s) for node in dt.walk() for a, s in node.reg()]
    base = p.pci_mmconfig_base
    assert base % 0x100000 == 0
    assert not any(a < base + 0x100000 and base < b for a, b in claimed)


def test_virt_device_tree_reg_is_translated() -> None:
    """``reg`` cells decode with the parents' #address-cells/#size-cells (2/2 on virt)."""
    dt = DeviceTree(HostTree(HOSTS / "qemu-arm64-virt"))
    gic = dt.node("/intc@8000000")
    assert gic is not None
    assert gic.reg() == [(0x08000000, 0x10000), (0x080A0000, 0xF60000)]
    assert gic.interrupts() == [16 + 9]  # the maintenance PPI
    assert device_tree_uart_irq(HOSTS / "qemu-arm64-virt", 0x09000000) == 32 + 1


def _prop(node: Path, name: str, *cells: int) -> None:
    node.mkdir(parents=True, exist_ok=True)
    (node / name).write_bytes(struct.pack(f">{len(cells)}I", *cells))


def test_device_tree_ranges_and_interrupt_parents(tmp_path: Path) -> None:
    """A bus's ranges translate its children's reg; a non-GIC interrupt parent is skipped."""
    dt_dir = tmp_path / "proc/device-tree"
    _prop(dt_dir, "#address-cells", 2)
    _prop(dt_dir, "#size-cells", 2)
    _prop(dt_dir / "gic", "#interrupt-cells", 3)
    _prop(dt_dir / "gic", "phandle", 1)
    _prop(dt_dir / "gpio", "#interrupt-cells", 2)
    _prop(dt_dir / "gpio", "phandle", 2)
    _prop(dt_dir, "interrupt-parent", 1)
    bus = dt_dir / "soc"
    _prop(bus, "#address-cells", 1)
    _prop(bus, "#size-cells", 1)
    _prop(bus, "ranges", 0x0, 0x0, 0x20000000, 0x1000000)  # child 0 -> CPU 0x20000000
    _prop(bus / "uart@1000", "reg", 0x1000, 0x100)
    _prop(bus / "uart@1000", "interrupts", 0, 5, 4)
    _prop(bus / "key", "interrupt-parent", 2)
    _prop(bus / "key", "interrupts", 3, 1)
    dt = DeviceTree(HostTree(tmp_path))
    uart, key = dt.node("/soc/uart@1000"), dt.node("/soc/key")
    assert uart is not None
    assert key is not None
    assert uart.reg() == [(0x20001000, 0x100)]
    assert uart.interrupts() == [32 + 5]
    assert key.interrupts() == []


def test_virt_with_its_and_smmuv3() -> None:
    """virt,its=on,iommu=smmuv3 (booted without mem=): SMMU unit, ITS mapped, warnings."""
    result = generate_system(HOSTS / "qemu-arm64-virt-smmu")
    system = result.config
    # QEMU virt's memory map: SMMUv3 at 0x09050000 (128 KiB), GIC ITS at 0x08080000.
    ((unit),) = system.platform.iommu_units
    assert (unit.type, unit.base, unit.size) == (IommuType.SMMUV3, 0x09050000, 0x20000)
    assert region_at(system.root_cell, 0x09050000) == []
    assert region_at(system.root_cell, 0x08080000)[0][2] == IO
    sources = {w.source for w in result.warnings}
    assert sources == {
        "/proc/device-tree/reserved-memory",
        "/proc/device-tree/smmuv3@9050000",
    }
    assert system.root_cell.cpus == frozenset(range(4))


# -- x86: QEMU q35 against upstream's configs/x86/qemu-x86.c -----------------------------------
# Upstream's "QEMU Q35 VM, 1 GB RAM, 4 cores, 6 MB hypervisor" with memmap=82M$0x3a000000;
# the trees were recorded with the same -m 1G -smp 4 and memmap=.


def test_q35_matches_upstream() -> None:
    """Hypervisor, MMCONFIG, PM timer, IOAPIC and the RAM layout of upstream's q35 config."""
    system = generate_system(HOSTS / "qemu-q35-iommu").config
    root = system.root_cell
    hv = system.hypervisor_memory
    assert (hv.phys_start, hv.size) == (0x3A000000, 0x600000)
    p = system.platform
    assert (p.pci_mmconfig_base, p.pci_mmconfig_end_bus) == (0xB0000000, 0xFF)
    x86 = p.arch_info
    assert isinstance(x86, X86Platform)
    assert (x86.pm_timer_address, x86.vtd_interrupt_limit) == (0x608, 256)
    ((unit),) = p.iommu_units
    assert (unit.type, unit.base, unit.size) == (IommuType.INTEL, 0xFED90000, 0x1000)
    (ioapic,) = root.irqchips
    assert (ioapic.address, ioapic.id, ioapic.pin_bitmap) == (
        0xFEC00000,
        0xFF00,
        (0xFFFFFF, 0, 0, 0),
    )
    rwxd = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA
    assert region_at(root, 0x100000) == [(0x100000, 0x39F00000, rwxd)]
    assert region_at(root, 0x3F200000) == [(0x3F200000, 0xDDF000, rwxd)]
    assert region_at(root, 0x3A600000)[0][0] == 0x3A600000  # the inmates' RAM
    assert region_at(root, 0x3FFDF000) == [(0x3FFDF000, 0x21000, MemFlag.READ | MemFlag.WRITE)]
    assert region_at(root, 0xFED00000) == [(0xFED00000, 0x1000, MemFlag.READ | MemFlag.WRITE)]
    assert region_at(root, 0xFEC00000) == []  # the IOAPIC is the hypervisor's
    assert region_at(root, 0xB0000000) == []  # so is MMCONFIG


def test_q35_e1000e_capabilities_match_upstream() -> None:
    """00:02.0 (e1000e) has upstream's caps, MSI-X vectors and an unmapped MSI-X page."""
    system = generate_system(HOSTS / "qemu-q35").config
    root = system.root_cell
    (nic,) = [d for d in root.pci_devices if d.bdf == 0x10]
    caps = root.pci_caps[nic.caps_start : nic.caps_start + nic.num_caps]
    # qemu-x86.c lists PM 0xc8/8, MSI 0xd0/14, EXP 0xe0/20, MSIX 0xa0/12, AER 0x100 and DSN
    # 0x140; its AER and DSN have length 4 where upstream's generator gives 64 and 12, and
    # its EXP is writable where the generator grants it read-only.  We follow the generator.
    assert [(c.id, c.start, c.len) for c in caps] == [
        (0x01, 0xC8, 8),
        (0x05, 0xD0, 14),
        (0x10, 0xE0, 20),
        (0x11, 0xA0, 12),
        (0x8001, 0x100, 64),
        (0x8003, 0x140, 12),
    ]
    assert [c.flags for c in caps] == [PciCapFlag.WRITE] * 2 + [PciCapFlag(0)] + [
        PciCapFlag.WRITE
    ] + [PciCapFlag(0)] * 2
    assert (nic.num_msi_vectors, nic.msi_64bits, nic.num_msix_vectors) == (1, True, 5)
    assert (nic.msix_address, nic.msix_region_size) == (0xFEBD0000, 0x1000)
    assert nic.bar_mask == (0xFFFE0000, 0xFFFE0000, 0xFFFFFFE0, 0xFFFFC000, 0, 0)
    assert region_at(root, 0xFEBD0000) == []
    assert region_at(root, 0xFEBD1000)[0][0] == 0xFEBD1000
    (ahci,) = [d for d in root.pci_devices if d.bdf == 0xFA]
    caps = root.pci_caps[ahci.caps_start : ahci.caps_start + ahci.num_caps]
    assert [(c.id, c.start, c.len) for c in caps] == [(0x05, 0x80, 14), (0x12, 0xA8, 2)]


def test_q35_pio_is_what_upstreams_template_grants() -> None:
    """PIT, keyboard/NMI, RTC, port 0x80, VGA and 0xd00-0xffff, nothing else."""
    root = generate_system(HOSTS / "qemu-q35").config.root_cell
    assert [(p.base, p.length) for p in root.pio_regions] == [
        (0x40, 4),
        (0x60, 2),
        (0x64, 1),
        (0x70, 2),
        (0x80, 1),
        (0x3B0, 0x30),
        (0xD00, 0x10000 - 0xD00),
    ]


def test_amd_iommu_from_ivrs() -> None:
    """The AMD IOMMU of q35 + amd-iommu: unit, IOAPIC source ID, its function left out."""
    system = generate_system(HOSTS / "qemu-q35-amd-iommu").config
    ((unit),) = system.platform.iommu_units
    # QEMU's amd-iommu: registers at 0xfed80000, PCI function 00:03.0, capability at 0x40;
    # its IVRS names the IOAPIC's requester ID 00:14.0 (0xa0).
    assert (unit.type, unit.base, unit.amd_bdf, unit.amd_base_cap) == (
        IommuType.AMD,
        0xFED80000,
        0x18,
        0x40,
    )
    assert system.root_cell.irqchips[0].id == 0xA0
    assert 0x18 not in {d.bdf for d in system.root_cell.pci_devices}


def test_no_iommu_is_a_warning_naming_the_tables() -> None:
    """Plain q35 has no DMAR/IVRS: a warning names both tables."""
    result = generate_system(HOSTS / "qemu-q35")
    (warning,) = result.warnings
    assert "/sys/firmware/acpi/tables/DMAR" in warning.source
    assert result.config.platform.iommu_units == ()


def test_acpi_tables_decode() -> None:
    """The recorded MCFG, DMAR, IVRS and APIC tables decode to QEMU's values."""
    tables = HOSTS / "qemu-q35-iommu" / "sys/firmware/acpi/tables"
    (mcfg,) = parse_mcfg((tables / "MCFG").read_bytes())
    assert (mcfg.base, mcfg.segment, mcfg.start_bus, mcfg.end_bus) == (0xB0000000, 0, 0, 0xFF)
    (drhd,) = parse_dmar((tables / "DMAR").read_bytes())
    assert (drhd.base, drhd.include_all, drhd.ioapics) == (0xFED90000, False, ((0, 0xFF00),))
    assert 0xFA in drhd.devices  # 00:1f.2
    ioapics, apic_ids = parse_madt((tables / "APIC").read_bytes())
    assert [(i.id, i.address, i.gsi_base) for i in ioapics] == [(0, 0xFEC00000, 0)]
    assert apic_ids == [0, 1, 2, 3]
    (ivhd,) = parse_ivrs((HOSTS / "qemu-q35-amd-iommu/sys/firmware/acpi/tables/IVRS").read_bytes())
    assert ivhd.ioapics == ((0, 0xA0),)


def test_a_truncated_table_names_itself() -> None:
    """A short or foreign table raises ValueError naming the table."""
    data = (HOSTS / "qemu-q35/sys/firmware/acpi/tables/MCFG").read_bytes()
    with pytest.raises(ValueError, match="MCFG"):
        parse_mcfg(data[:20])
    with pytest.raises(ValueError, match="DMAR"):
        parse_dmar(data)


# -- warnings name the file or node and what to supply ----------------------------------------


def test_x86_without_memmap_asks_for_one(tmp_path: Path) -> None:
    """No memmap= on the command line: a warning with the memmap= to add, in free RAM."""
    root = copy_host("qemu-q35", tmp_path)
    (root / "proc/cmdline").write_text("console=ttyS0 quiet\n")
    iomem = (root / "proc/iomem").read_text()
    # What the kernel shows without the reservation: the area is System RAM again.
    iomem = iomem.replace("00100000-39ffffff : System RAM", "00100000-3ffdefff : System RAM")
    iomem = iomem.replace("3a000000-3f1fffff : Reserved\n", "").replace(
        "3f200000-3ffdefff : System RAM\n", ""
    )
    (root / "proc/iomem").write_text(iomem)
    result = generate_system(root)
    warning = next(w for w in result.warnings if "/proc/cmdline" in w.source)
    # The largest RAM range ends at 0x3ffdf000: 82 MiB (0x5200000) below 0x3fe00000.
    assert warning.supply is not None
    assert "memmap=82M$0x3ac00000" in warning.supply
    assert result.config.hypervisor_memory.phys_start == 0x3AC00000
    assert errors(result.config) == []


def test_arm64_without_mem_or_reserved_memory_asks_for_mem(tmp_path: Path) -> None:
    """No mem= and no reserved-memory node: a warning naming the node, with mem=768M."""
    root = copy_host("qemu-arm64-virt", tmp_path)
    (root / "proc/cmdline").write_text("console=ttyAMA0\n")
    result = generate_system(root)
    (warning,) = result.warnings
    assert warning.kind is NoteKind.WARNING
    assert warning.source == "/proc/device-tree/reserved-memory"
    assert warning.supply is not None
    assert warning.supply.startswith("boot with mem=768M")
    assert result.config.hypervisor_memory.phys_start == 0x7FC00000


def test_arm64_reserved_memory_node_holds_hypervisor_and_pool(tmp_path: Path) -> None:
    """A no-map /reserved-memory child is used for the hypervisor (its top) and the pool."""
    root = copy_host("qemu-arm64-virt", tmp_path)
    (root / "proc/cmdline").write_text("console=ttyAMA0\n")
    node = root / "proc/device-tree/reserved-memory/jailhouse@60000000"
    node.mkdir(parents=True)
    (node.parent / "#address-cells").write_bytes(struct.pack(">I", 2))
    (node.parent / "#size-cells").write_bytes(struct.pack(">I", 2))
    (node.parent / "ranges").write_bytes(b"")
    (node / "reg").write_bytes(struct.pack(">4I", 0, 0x60000000, 0, 0x10000000))
    (node / "no-map").write_bytes(b"")
    result = generate_system(root)
    assert result.warnings == ()
    hv = result.config.hypervisor_memory
    assert (hv.phys_start, hv.size) == (0x6FC00000, 0x400000)
    note = next(n for n in result.notes if "jailhouse@60000000" in n.source)
    assert "inmate pool 0x60000000-" in note.message
    assert errors(result.config) == []


# -- new cells -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["qemu-arm64-virt", "qemu-q35-iommu"])
def test_new_cells_fit_beside_each_other(name: str) -> None:
    """Two new cells take disjoint CPUs and memory, and the set passes check_configs."""
    system = generate_system(HOSTS / name).config
    first = new_cell(system, cpus=1, mem_mib=16, name="first", ivshmem=True).config
    second = new_cell(system, cpus=2, mem_mib=32, name="second", cells=[first]).config
    assert errors(system, first, second) == []
    assert first.cpus.isdisjoint(second.cpus)
    assert first.comm_region is not None
    assert first.console == system.debug_console
    (dev,) = first.pci_devices
    (root_dev,) = [d for d in system.root_cell.pci_devices if d.type == PciType.IVSHMEM]
    assert (dev.bdf, dev.domain, dev.shmem_dev_id) == (root_dev.bdf, root_dev.domain, 1)
    with pytest.raises(ConfigError, match="ivshmem"):
        new_cell(system, cpus=1, mem_mib=1, name="third", cells=[first], ivshmem=True)


def test_arm64_new_cell_gets_its_ivshmem_spi_and_the_console_irq() -> None:
    """On arm64 the ivshmem INTx SPI and (asked for) the PL011's SPI 33 are granted."""
    system = generate_system(HOSTS / "qemu-arm64-virt").config
    cell = new_cell(system, cpus=1, mem_mib=8, ivshmem=True, console_irq=33).config
    (chip,) = cell.irqchips
    # vpci_irq_base 112: INTx of device 00.0 is interrupt 32 + 112 + 0.
    assert cell.vpci_irq_base == 112
    assert chip.pins == {33, 144}
    assert chip.address == 0x08000000


def test_new_cell_errors_name_the_option() -> None:
    """Too many CPUs or too much memory raise ConfigError naming cpus or mem."""
    system = generate_system(HOSTS / "qemu-q35").config
    with pytest.raises(ConfigError) as exc:
        new_cell(system, cpus=4, mem_mib=1)
    assert exc.value.field == "cpus"
    with pytest.raises(ConfigError) as exc:
        new_cell(system, cpus=1, mem_mib=4096)
    assert exc.value.field == "mem"


@pytest.mark.parametrize(
    ("name", "arch"), [("qemu-arm64-virt", Arch.ARM64), ("qemu-q35", Arch.X86)]
)
def test_generated_cell_boots_on_the_simulated_host(tmp_path: Path, name: str, arch: Arch) -> None:
    """Enable the generated system on sim, then create, load (park loop) and start a cell."""
    system = generate_system(HOSTS / name).config
    cell = new_cell(system, cpus=1, mem_mib=16, name="demo", ivshmem=True).config
    host = SimHost(tmp_path / "sim", arch=arch, cpus=len(system.root_cell.cpus))
    with Hypervisor(host.device()) as hv:
        hv.enable(system)
        handle = hv.create_cell(cell)
        loadable = next(r for r in cell.mem_regions if r.flags & MemFlag.LOADABLE)
        handle.load([Image(park_inmate(arch), loadable.virt_start)])
        handle.start()
        assert handle.status().state is CellState.RUNNING
        snap = host.snapshot().cell("demo")
        assert snap.cpus == cell.cpus
        assert hv.cell(0).status().cpus_assigned == system.root_cell.cpus - cell.cpus
        handle.destroy()
        hv.disable()


# -- C output -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcc() -> str:
    """The C compiler, or skip."""
    path = shutil.which("gcc")
    if path is None or shutil.which("objcopy") is None:
        pytest.skip("gcc and objcopy are needed (apt-get install gcc binutils)")
    return path


def compile_config(gcc: str, source: str, tmp_path: Path) -> bytes:
    """Compile C config source and extract its data section, as upstream's build does."""
    c_file, obj, out = tmp_path / "config.c", tmp_path / "config.o", tmp_path / "config.cell"
    c_file.write_text(source)
    subprocess.run(
        [gcc, "-Wall", "-Werror", "-O2", "-I", str(C_HEADERS), "-c", str(c_file), "-o", str(obj)],
        check=True,
    )
    subprocess.run(
        ["objcopy", "-O", "binary", "--remove-section=.note.gnu.property", str(obj), str(out)],
        check=True,
    )
    return out.read_bytes()


@pytest.mark.parametrize("name", ALL_HOSTS)
def test_c_output_compiles_to_the_same_bytes(gcc: str, tmp_path: Path, name: str) -> None:
    """Compiling and extracting the C source gives exactly the bytes of the config."""
    result = generate_system(HOSTS / name)
    source = to_c_source(result.config, comments=result.region_comments)
    assert "#include <jailhouse/cell-config.h>" in source
    assert compile_config(gcc, source, tmp_path) == result.config.to_bytes()


def test_c_output_of_a_new_cell_compiles(gcc: str, tmp_path: Path) -> None:
    """A generated cell's C source compiles to its .cell bytes."""
    system = generate_system(HOSTS / "qemu-arm64-virt").config
    cell = new_cell(system, cpus=2, mem_mib=8, ivshmem=True).config
    assert compile_config(gcc, to_c_source(cell), tmp_path) == cell.to_bytes()


# -- CLI ----------------------------------------------------------------------------------


def test_cli_create_then_new_cell_then_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The create, new-cell and check verbs agree on the files they write and read."""
    sys_cell, demo = tmp_path / "sys.cell", tmp_path / "demo.cell"
    root = str(HOSTS / "qemu-arm64-virt")
    assert main(["config", "create", "--root", root, "-o", str(sys_cell)]) == 0
    code = main(
        ["config", "new-cell", str(sys_cell), "--cpus", "1", "--mem", "16", "--ivshmem",
         "--root", root, "--console-irq", "auto", "-o", str(demo)]
    )  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert main(["config", "check", str(sys_cell), str(demo)]) == 0
    assert "no findings" in capsys.readouterr().out
    cell = load_config(demo)
    assert isinstance(cell, CellConfig)
    assert 33 in cell.irqchips[0].pins


def test_cli_create_json_and_formats(capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives the notes with their sources; --xml and --c print their text."""
    root = str(HOSTS / "qemu-q35")
    assert main(["config", "create", "--root", root, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["kind"] == "system"
    assert any(n["kind"] == "warning" and "DMAR" in n["source"] for n in doc["notes"])
    assert main(["config", "create", "--root", root, "--xml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!-- Jailhouse system config (x86_64)")
    assert "<domain" in out
    assert main(["config", "create", "--root", root, "--c"]) == 0
    assert "struct jailhouse_system header;" in capsys.readouterr().out


def test_cli_new_cell_error_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Asking for more CPUs than are free exits 2 with one line naming cpus."""
    sys_cell = tmp_path / "sys.cell"
    assert main(["config", "create", "--root", str(HOSTS / "qemu-q35"), "-o", str(sys_cell)]) == 0
    capsys.readouterr()
    code = main(["config", "new-cell", str(sys_cell), "--cpus", "9", "--mem", "1", "--xml"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cpus = 9" in err[0]


def test_cli_new_cell_xml_defines_and_starts_on_sim(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The --xml of new-cell is defined and started on a sim host enabled with create's -o."""
    sys_cell, xml = tmp_path / "sys.cell", tmp_path / "worker.xml"
    root = str(HOSTS / "qemu-arm64-virt")
    uri = f"sim://{tmp_path / 'sim'}?arch=arm64&cpus=16"
    assert main(["config", "create", "--root", root, "-o", str(sys_cell)]) == 0
    capsys.readouterr()
    new = ["config", "new-cell", str(sys_cell), "--cpus", "2", "--mem", "32", "--ivshmem"]
    assert main([*new, "--name", "worker", "--xml"]) == 0
    xml.write_text(capsys.readouterr().out)
    assert main(["-c", uri, "enable", str(sys_cell)]) == 0
    assert main(["-c", uri, "define", str(xml), "--system", str(sys_cell)]) == 0
    assert main(["-c", uri, "start", "worker"]) == 0
    capsys.readouterr()
    assert main(["-c", uri, "--json", "cell", "list"]) == 0
    cells = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert cells["worker"]["state"] == "running"
    assert cells["worker"]["cpus_assigned"] == [14, 15]
    assert cells["root"]["cpus_assigned"] == list(range(14))
    assert main(["-c", uri, "destroy", "worker"]) == 0
