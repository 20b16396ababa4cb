"""The codec's struct formats agree with the layout the C compiler gives the packed structs.

The codec packs with hand-written ``struct`` formats for speed; these tests pack a model
whose every field holds a distinct value and read the same bytes back through the cffi
shim's structs, which the compiler lays out (``cffi_build/ioctl.csrc.c``).  A field at a
wrong offset, of a wrong width or in a wrong order reads back a different value.
"""

from __future__ import annotations

from typing import Any

import pytest

from jailhouse._ffi import ffi
from jailhouse.config import _format
from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CacheFlag,
    CacheRegion,
    CacheType,
    CellConfig,
    CellFlag,
    Console,
    ConsoleFlag,
    ConsoleType,
    IommuType,
    IommuUnit,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PciCapability,
    PciCapFlag,
    PciDevice,
    PciType,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    SystemFlag,
    X86Platform,
)

CONSOLE = Console(
    0x1122334455667788, 0x99AABBCC, ConsoleType.PL011, ConsoleFlag(0x3003), 0x0DDCCBBA, 0x13, 0xF00D
)
CELL = CellConfig(
    name="layout-probe",
    arch=Arch.ARM64,
    id=0x01020304,
    flags=CellFlag(0xC0000007),
    cpus=frozenset({1, 9, 63}),
    cpu_set_size=8,
    mem_regions=(
        MemoryRegion(
            0x1111111111111111, 0x2222222222222222, 0x3333333333333333, MemFlag(0x0F_0067)
        ),
    ),
    cache_regions=(CacheRegion(0x44444444, 0x55555555, CacheType.L3_DATA, CacheFlag(0x0101)),),
    irqchips=(IrqChip(0x6666666666666666, 0x77777777, 0x20, (0xA, 0xB, 0xC, 0xD)),),
    pio_regions=(PioRegion(0x3F8, 0x0008),),
    pci_devices=(
        PciDevice(
            type=PciType.IVSHMEM,
            iommu=0x7E,
            domain=0x1234,
            bdf=0x00F8,
            bar_mask=(0xFFFFF000, 0xFFFF0000, 3, 4, 5, 6),
            caps_start=0x0102,
            num_caps=0x0304,
            num_msi_vectors=0x05,
            msi_64bits=False,
            msi_maskable=True,
            num_msix_vectors=0x0607,
            msix_region_size=0x0809,
            msix_address=0x0A0B0C0D0E0F1011,
            shmem_regions_start=0x12131415,
            shmem_dev_id=0x16,
            shmem_peers=0x17,
            shmem_protocol=0x1819,
        ),
    ),
    pci_caps=(PciCapability(0x8010, 0x0040, 0x0024, PciCapFlag.WRITE),),
    stream_ids=(0xDEADBEEF,),
    vpci_irq_base=0x7A7B7C7D,
    cpu_reset_address=0x0123456789ABCDEF,
    msg_reply_timeout=0xFEDCBA9876543210,
    console=CONSOLE,
)


def _struct(cdecl: str, blob: bytes, offset: int = 0) -> Any:
    """View ``blob[offset:]`` as a packed struct laid out by the compiler."""
    view = ffi.from_buffer(blob)
    return ffi.cast(f"{cdecl} *", ffi.cast("char *", view) + offset)[0]


def _console_fields(c: Any) -> tuple[int, ...]:
    return (c.address, c.size, c.type, c.flags, c.divider, c.gate_nr, c.clock_reg)


def _expected_console(con: Console) -> tuple[int, ...]:
    return (con.address, con.size, con.type, con.flags, con.divider, con.gate_nr, con.clock_reg)


@pytest.mark.parametrize(
    ("fmt", "cdecl"),
    [
        (_format.CELL_DESC, "struct jailhouse_cell_desc"),
        (_format.CONSOLE, "struct jailhouse_console"),
        (_format.MEMORY, "struct jailhouse_memory"),
        (_format.CACHE, "struct jailhouse_cache"),
        (_format.IRQCHIP, "struct jailhouse_irqchip"),
        (_format.PIO, "struct jailhouse_pio"),
        (_format.PCI_DEVICE, "struct jailhouse_pci_device"),
        (_format.PCI_CAP, "struct jailhouse_pci_capability"),
        (_format.STREAM_ID, "union jailhouse_stream_id"),
        (_format.IOMMU, "struct jailhouse_iommu"),
    ],
)
def test_struct_sizes_match_compiler(fmt: Any, cdecl: str) -> None:
    """Each codec format is as long as the compiler's packed struct."""
    assert fmt.size == ffi.sizeof(cdecl)


def test_system_header_and_root_cell_offset_match_compiler() -> None:
    """The system header length and the root cell offset are the compiler's."""
    assert ffi.offsetof("struct jailhouse_system", "root_cell") == _format.SYSTEM_HEADER_SIZE
    assert (
        ffi.sizeof("struct jailhouse_system") == _format.SYSTEM_HEADER_SIZE + _format.CELL_DESC_SIZE
    )


def test_cell_descriptor_fields_read_back_through_compiled_struct() -> None:
    """Every descriptor field packed by the codec reads back at the compiler's offset."""
    blob = CELL.to_bytes()
    desc = _struct("struct jailhouse_cell_desc", blob)
    assert ffi.buffer(desc.signature)[:] == b"JHCLL"
    assert (desc.architecture, desc.revision) == (Arch.ARM64, 14)
    assert ffi.string(desc.name) == b"layout-probe"
    assert (desc.id, desc.flags, desc.cpu_set_size) == (0x01020304, 0xC0000007, 8)
    counts = (
        desc.num_memory_regions,
        desc.num_cache_regions,
        desc.num_irqchips,
        desc.num_pio_regions,
        desc.num_pci_devices,
        desc.num_pci_caps,
        desc.num_stream_ids,
    )
    assert counts == (1, 1, 1, 1, 1, 1, 1)
    assert desc.vpci_irq_base == 0x7A7B7C7D
    assert desc.cpu_reset_address == 0x0123456789ABCDEF
    assert desc.msg_reply_timeout == 0xFEDCBA9876543210
    assert _console_fields(desc.console) == _expected_console(CONSOLE)


def test_trailing_arrays_read_back_through_compiled_structs() -> None:
    """Each trailing array element lands where the compiler's struct sizes put it."""
    blob = CELL.to_bytes()
    offset = ffi.sizeof("struct jailhouse_cell_desc")
    assert int.from_bytes(blob[offset : offset + 8], "little") == (1 << 1) | (1 << 9) | (1 << 63)
    offset += 8

    mem = _struct("struct jailhouse_memory", blob, offset)
    region = CELL.mem_regions[0]
    assert (mem.phys_start, mem.virt_start, mem.size, mem.flags) == (
        region.phys_start,
        region.virt_start,
        region.size,
        region.flags,
    )
    offset += ffi.sizeof("struct jailhouse_memory")

    cache = _struct("struct jailhouse_cache", blob, offset)
    assert (cache.start, cache.size, cache.type, cache.flags) == (
        0x44444444,
        0x55555555,
        CacheType.L3_DATA,
        0x0101,
    )
    offset += ffi.sizeof("struct jailhouse_cache")

    irq = _struct("struct jailhouse_irqchip", blob, offset)
    assert (irq.address, irq.id, irq.pin_base, list(irq.pin_bitmap)) == (
        0x6666666666666666,
        0x77777777,
        0x20,
        [0xA, 0xB, 0xC, 0xD],
    )
    offset += ffi.sizeof("struct jailhouse_irqchip")

    pio = _struct("struct jailhouse_pio", blob, offset)
    assert (pio.base, pio.length) == (0x3F8, 8)
    offset += ffi.sizeof("struct jailhouse_pio")

    pci = _struct("struct jailhouse_pci_device", blob, offset)
    dev = CELL.pci_devices[0]
    assert (pci.type, pci.iommu, pci.domain, pci.bdf) == (dev.type, dev.iommu, dev.domain, dev.bdf)
    assert tuple(pci.bar_mask) == dev.bar_mask
    assert (pci.caps_start, pci.num_caps, pci.num_msi_vectors) == (0x0102, 0x0304, 0x05)
    # ABI sheet: bit 0 of byte 35 is msi_64bits, bit 1 msi_maskable.
    assert pci.msi_flags == 0b10
    assert (pci.num_msix_vectors, pci.msix_region_size, pci.msix_address) == (
        0x0607,
        0x0809,
        0x0A0B0C0D0E0F1011,
    )
    assert (pci.shmem_regions_start, pci.shmem_dev_id, pci.shmem_peers, pci.shmem_protocol) == (
        0x12131415,
        0x16,
        0x17,
        0x1819,
    )
    offset += ffi.sizeof("struct jailhouse_pci_device")

    cap = _struct("struct jailhouse_pci_capability", blob, offset)
    assert (cap.id, cap.start, cap.len, cap.flags) == (0x8010, 0x40, 0x24, 1)
    offset += ffi.sizeof("struct jailhouse_pci_capability")

    stream = _struct("union jailhouse_stream_id", blob, offset)
    assert stream.id == 0xDEADBEEF
    assert offset + ffi.sizeof("union jailhouse_stream_id") == len(blob) == CELL.size


@pytest.mark.parametrize("arch", [Arch.X86, Arch.ARM64])
def test_system_fields_read_back_through_compiled_struct(arch: Arch) -> None:
    """Every system header field packed by the codec reads back at the compiler's offset."""
    arch_info: X86Platform | ArmPlatform
    if arch == Arch.X86:
        arch_info = X86Platform(0x0408, 2, 0x11223344, 0x55667788, 0x99AABBCC)
    else:
        arch_info = ArmPlatform(0x19, 3, 0x8000000, 0x8010000, 0x8030000, 0x8040000, 0x80A0000)
    units = (
        IommuUnit(IommuType.AMD, 0xFED80000, 0x80000, 0x0002, 0x40, 0x64, 0x80048824),
        IommuUnit(
            IommuType.PVU, 0x30F80000, 0x1000, tipvu_tlb_base=0x36000000, tipvu_tlb_size=0x10000
        ),
    )
    system = SystemConfig(
        arch=arch,
        flags=SystemFlag.VIRTUAL_DEBUG_CONSOLE,
        hypervisor_memory=MemoryRegion(0x3A000000, 0, 0x600000, MemFlag(0)),
        debug_console=CONSOLE,
        platform=PlatformInfo(
            pci_mmconfig_base=0xB0000000,
            pci_mmconfig_end_bus=0xFF,
            pci_is_virtual=1,
            pci_domain=0x0102,
            iommu_units=units,
            arch_info=arch_info,
        ),
        root_cell=CELL.replace(arch=arch),
    )
    blob = system.to_bytes()
    sysc = _struct("struct jailhouse_system", blob)
    assert ffi.buffer(sysc.signature)[:] == b"JHSYS"
    assert (sysc.architecture, sysc.revision, sysc.flags) == (arch, 14, 1)
    hv = sysc.hypervisor_memory
    assert (hv.phys_start, hv.virt_start, hv.size, hv.flags) == (0x3A000000, 0, 0x600000, 0)
    assert _console_fields(sysc.debug_console) == _expected_console(CONSOLE)
    pinfo = sysc.platform_info
    assert (pinfo.pci_mmconfig_base, pinfo.pci_mmconfig_end_bus, pinfo.pci_is_virtual) == (
        0xB0000000,
        0xFF,
        1,
    )
    assert pinfo.pci_domain == 0x0102
    amd, pvu = pinfo.iommu_units[0], pinfo.iommu_units[1]
    assert (amd.type, amd.base, amd.size) == (IommuType.AMD, 0xFED80000, 0x80000)
    assert (amd.amd.bdf, amd.amd.base_cap, amd.amd.msi_cap, amd.amd.features) == (
        0x0002,
        0x40,
        0x64,
        0x80048824,
    )
    assert (pvu.type, pvu.tipvu.tlb_base, pvu.tipvu.tlb_size) == (
        IommuType.PVU,
        0x36000000,
        0x10000,
    )
    assert all(pinfo.iommu_units[i].type == 0 for i in range(2, 8))
    if isinstance(arch_info, X86Platform):
        x86 = pinfo.x86
        assert (x86.pm_timer_address, x86.apic_mode, x86.vtd_interrupt_limit) == (
            0x0408,
            2,
            0x11223344,
        )
        assert (x86.tsc_khz, x86.apic_khz) == (0x55667788, 0x99AABBCC)
    else:
        arm = pinfo.arm
        assert (arm.maintenance_irq, arm.gic_version) == (0x19, 3)
        assert (arm.gicd_base, arm.gicc_base, arm.gich_base, arm.gicv_base, arm.gicr_base) == (
            0x8000000,
            0x8010000,
            0x8030000,
            0x8040000,
            0x80A0000,
        )
    root = sysc.root_cell
    assert ffi.buffer(root.signature)[:] == bytes(5)  # embedded root cell: header left zero
    assert ffi.string(root.name) == b"layout-probe"
    assert root.num_stream_ids == 1
    assert len(blob) == system.size
