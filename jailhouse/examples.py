"""Example systems and cells for QEMU-like x86 and arm64 machines.

Each architecture has a system config (4 CPUs; the root cell keeps CPU 0) and two
non-root cells that fit on it at the same time:

- ``<arch>-demo``: a bare-metal inmate on CPU 3 with 1 MiB (x86) or 64 KiB (arm64) of RAM
  at guest address 0, and an ivshmem link to the root cell (device 01:0e.0 on x86,
  0001:00:00.0 on arm64; the root cell is peer 0, the demo cell peer 1);
- ``<arch>-linux``: a Linux cell on CPUs 1-2 with a small loader RAM at guest address 0 and
  a large RAM for kernel, device tree and initrd, a serial port of its own (x86) or a shared
  PL011 (arm64), and the virtual console.

Every non-root cell has a comm region and at least one region with WRITE and LOADABLE, and
the whole set passes :func:`~jailhouse.config.validate.check_configs` without an error.
The layouts follow the address maps of QEMU's q35 and ``virt`` machines (1 GiB of RAM); the
host kernel must leave the inmate and shared memory alone: ``memmap=82M$0x3a000000`` on
x86, ``mem=768M`` on arm64.

Nothing is built at import; every call returns fresh, immutable configs.
"""

from __future__ import annotations

from typing import Final, Literal

from jailhouse.config.model import (
    IVSHMEM_BAR_MASK_INTX,
    IVSHMEM_BAR_MASK_MSIX,
    Arch,
    ArmPlatform,
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
    PciDevice,
    PciType,
    PioRegion,
    PlatformInfo,
    ShmemProtocol,
    SystemConfig,
    SystemFlag,
    X86Platform,
)

__all__ = [
    "EXAMPLE_ARCHES",
    "ExampleArch",
    "example_cells",
    "example_files",
    "example_system",
]

ExampleArch = Literal["x86", "arm64"]
"""The architectures with examples, by the names used in file and cell names."""
EXAMPLE_ARCHES: Final[tuple[ExampleArch, ...]] = ("x86", "arm64")
"""Every :data:`ExampleArch`."""

_R: Final = MemFlag.READ
_W: Final = MemFlag.WRITE
_X: Final = MemFlag.EXECUTE
_D: Final = MemFlag.DMA
_RW: Final = _R | _W
_RWX: Final = _RW | _X
_RWXD: Final = _RWX | _D
_RS: Final = MemFlag.ROOTSHARED
_L: Final = MemFlag.LOADABLE
_IO: Final = MemFlag.IO
_COMM: Final = MemFlag.COMM_REGION

_X86_HV_BASE: Final = 0x3A000000
_X86_SHMEM: Final = 0x3F000000
_X86_IVSHMEM_BDF: Final = 0x100 | (0x0E << 3)  # 01:0e.0
_X86_IOAPIC: Final = 0xFEC00000
_ARM64_SHMEM: Final = 0x7FAF0000
_ARM64_UART: Final = 0x09000000
_ARM64_GICD: Final = 0x08000000
_ARM64_IVSHMEM_BDF: Final = 0x00  # 0001:00:00.0
_ARM64_ROOT_VPCI_IRQ_BASE: Final = 128 - 32
_ARM64_DEMO_VPCI_IRQ_BASE: Final = 144 - 32


def _check_arch(arch: str) -> ExampleArch:
    if arch == "x86":
        return "x86"
    if arch == "arm64":
        return "arm64"
    raise ValueError(f"no example configs for {arch!r}; choose one of {', '.join(EXAMPLE_ARCHES)}")


def _shmem_group(base: int, dev_id: int, *, root: bool) -> tuple[MemoryRegion, ...]:
    """Return the four regions of a two-peer ivshmem link as peer ``dev_id`` maps them.

    State table (one page, read-only), read/write section, then one output section per
    peer, writable only by its owner.  Non-root peers mark them ROOTSHARED so the root
    cell keeps its mapping when the cell is created.
    """
    shared = MemFlag(0) if root else _RS
    layout = ((0x0000, 0x1000), (0x1000, 0x9000), (0xA000, 0x2000), (0xC000, 0x2000))
    regions = []
    for pos, (offset, size) in enumerate(layout):
        writable = pos == 1 or pos == 2 + dev_id
        flags = (_RW if writable else _R) | shared
        regions.append(MemoryRegion(base + offset, base + offset, size, flags))
    return tuple(regions)


def _ivshmem(bdf: int, dev_id: int, *, domain: int, msix: bool) -> PciDevice:
    return PciDevice(
        type=PciType.IVSHMEM,
        domain=domain,
        bdf=bdf,
        bar_mask=IVSHMEM_BAR_MASK_MSIX if msix else IVSHMEM_BAR_MASK_INTX,
        num_msix_vectors=2 if msix else 0,
        shmem_regions_start=0,
        shmem_dev_id=dev_id,
        shmem_peers=2,
        shmem_protocol=ShmemProtocol.UNDEFINED,
    )


# -- x86: QEMU q35, 1 GiB, 4 CPUs, Intel IOMMU ----------------------------------------------------

_X86_SERIAL1: Final = Console(address=0x3F8, type=ConsoleType.UART_8250)
_X86_SERIAL2: Final = Console(address=0x2F8, type=ConsoleType.UART_8250)


def _x86_system() -> SystemConfig:
    root = CellConfig(
        name="x86-root",
        arch=Arch.X86,
        cpus=frozenset(range(4)),
        mem_regions=(
            *_shmem_group(_X86_SHMEM, 0, root=True),
            MemoryRegion(0x00000000, 0x00000000, 0x3A000000, _RWXD),  # RAM below the hypervisor
            MemoryRegion(0x3A600000, 0x3A600000, 0x04A00000, _RWXD),  # RAM handed to inmates
            MemoryRegion(0x3F200000, 0x3F200000, 0x00DDF000, _RWXD),  # RAM above shared memory
            MemoryRegion(0x3FFDF000, 0x3FFDF000, 0x00021000, _R),  # ACPI tables
            MemoryRegion(0xFD000000, 0xFD000000, 0x01000000, _RW),  # VGA framebuffer
            MemoryRegion(0xFED00000, 0xFED00000, 0x00001000, _RW),  # HPET
        ),
        irqchips=(IrqChip(_X86_IOAPIC, id=0xFF00, pin_bitmap=(0xFFFFFF, 0, 0, 0)),),
        pio_regions=(
            PioRegion(0x40, 4),  # PIT
            PioRegion(0x60, 2),  # keyboard controller, NMI status
            PioRegion(0x64, 1),  # keyboard controller command
            PioRegion(0x70, 2),  # RTC
            PioRegion(0x2F8, 8),  # second serial port, until the Linux cell takes it
            PioRegion(0xD000, 0x100),  # PCI device I/O BARs
        ),
        pci_devices=(_ivshmem(_X86_IVSHMEM_BDF, 0, domain=0, msix=True),),
    )
    return SystemConfig(
        arch=Arch.X86,
        flags=SystemFlag.VIRTUAL_DEBUG_CONSOLE,
        hypervisor_memory=MemoryRegion(_X86_HV_BASE, 0, 0x600000),
        debug_console=_X86_SERIAL1,
        platform=PlatformInfo(
            pci_mmconfig_base=0xB0000000,
            pci_mmconfig_end_bus=0xFF,
            iommu_units=(IommuUnit(IommuType.INTEL, base=0xFED90000, size=0x1000),),
            arch_info=X86Platform(pm_timer_address=0x608, vtd_interrupt_limit=256),
        ),
        root_cell=root,
    )


def _x86_cells() -> dict[str, CellConfig]:
    demo = CellConfig(
        name="x86-demo",
        arch=Arch.X86,
        flags=CellFlag.PASSIVE_COMMREG | CellFlag.VIRTUAL_CONSOLE_PERMITTED,
        cpus=frozenset({3}),
        mem_regions=(
            *_shmem_group(_X86_SHMEM, 1, root=False),
            MemoryRegion(0x3EF00000, 0x00000000, 0x00100000, _RWX | _L),  # RAM, image at 0
            MemoryRegion(0, 0x00100000, 0x1000, _RW | _COMM),
        ),
        pio_regions=(PioRegion(0x3F8, 8),),
        pci_devices=(_ivshmem(_X86_IVSHMEM_BDF, 1, domain=0, msix=True),),
        console=_X86_SERIAL1,
    )
    linux = CellConfig(
        name="x86-linux",
        arch=Arch.X86,
        flags=CellFlag.PASSIVE_COMMREG | CellFlag.VIRTUAL_CONSOLE_PERMITTED,
        cpus=frozenset({1, 2}),
        mem_regions=(
            MemoryRegion(0x3A600000, 0x00000000, 0x00100000, _RWXD | _L),  # loader, boot params
            MemoryRegion(0, 0x00100000, 0x1000, _RW | _COMM),
            MemoryRegion(0x3A700000, 0x00200000, 0x04700000, _RWXD | _L),  # kernel, initrd
        ),
        irqchips=(IrqChip(_X86_IOAPIC, id=0xFF00, pin_bitmap=(1 << 3, 0, 0, 0)),),  # IRQ 3
        pio_regions=(PioRegion(0x2F8, 8),),
        console=_X86_SERIAL2,
    )
    return {demo.name: demo, linux.name: linux}


# -- arm64: QEMU virt, 1 GiB at 0x40000000, 4 CPUs, GICv3 -----------------------------------------

_ARM64_PL011: Final = Console(
    address=_ARM64_UART,
    size=0x1000,
    type=ConsoleType.PL011,
    flags=ConsoleFlag.ACCESS_MMIO | ConsoleFlag.REGDIST_4,
)


def _gic(*spis: int) -> IrqChip:
    """Return the GIC distributor entry granting the given interrupts (pin_base 32)."""
    words = [0, 0, 0, 0]
    for spi in spis:
        words[(spi - 32) // 32] |= 1 << ((spi - 32) % 32)
    return IrqChip(_ARM64_GICD, pin_base=32, pin_bitmap=(words[0], words[1], words[2], words[3]))


def _arm64_system() -> SystemConfig:
    root = CellConfig(
        name="arm64-root",
        arch=Arch.ARM64,
        cpus=frozenset(range(4)),
        mem_regions=(
            *_shmem_group(_ARM64_SHMEM, 0, root=True),
            MemoryRegion(0x09000000, 0x09000000, 0x37000000, _RW | _IO),  # MMIO above the GIC
            MemoryRegion(0x40000000, 0x40000000, 0x3FA10000, _RWX),  # RAM, inmate RAM at its top
            MemoryRegion(0x4010000000, 0x4010000000, 0x10000000, _RW | _IO),  # PCI ECAM
        ),
        irqchips=(IrqChip(_ARM64_GICD, pin_base=32, pin_bitmap=(0xFFFFFFFF,) * 4),),
        pci_devices=(_ivshmem(_ARM64_IVSHMEM_BDF, 0, domain=1, msix=False),),
        vpci_irq_base=_ARM64_ROOT_VPCI_IRQ_BASE,
    )
    return SystemConfig(
        arch=Arch.ARM64,
        flags=SystemFlag.VIRTUAL_DEBUG_CONSOLE,
        hypervisor_memory=MemoryRegion(0x7FC00000, 0, 0x400000),
        debug_console=_ARM64_PL011,
        platform=PlatformInfo(
            pci_mmconfig_base=0x08E00000,
            pci_mmconfig_end_bus=0,
            pci_is_virtual=1,
            pci_domain=1,
            arch_info=ArmPlatform(
                maintenance_irq=25, gic_version=3, gicd_base=_ARM64_GICD, gicr_base=0x080A0000
            ),
        ),
        root_cell=root,
    )


def _arm64_cells() -> dict[str, CellConfig]:
    uart = MemoryRegion(_ARM64_UART, _ARM64_UART, 0x1000, _RW | _IO | _RS)
    comm = MemoryRegion(0, 0x80000000, 0x1000, _RW | _COMM)
    demo = CellConfig(
        name="arm64-demo",
        arch=Arch.ARM64,
        flags=CellFlag.PASSIVE_COMMREG | CellFlag.VIRTUAL_CONSOLE_PERMITTED,
        cpus=frozenset({3}),
        mem_regions=(
            *_shmem_group(_ARM64_SHMEM, 1, root=False),
            uart,
            MemoryRegion(0x7FA00000, 0x00000000, 0x00010000, _RWX | _L),  # RAM, image at 0
            comm,
        ),
        irqchips=(_gic(32 + _ARM64_DEMO_VPCI_IRQ_BASE + (_ARM64_IVSHMEM_BDF >> 3 & 3)),),
        pci_devices=(_ivshmem(_ARM64_IVSHMEM_BDF, 1, domain=1, msix=False),),
        vpci_irq_base=_ARM64_DEMO_VPCI_IRQ_BASE,
        console=_ARM64_PL011,
    )
    linux = CellConfig(
        name="arm64-linux",
        arch=Arch.ARM64,
        flags=CellFlag.PASSIVE_COMMREG | CellFlag.VIRTUAL_CONSOLE_PERMITTED,
        cpus=frozenset({1, 2}),
        mem_regions=(
            uart,
            MemoryRegion(0x7F900000, 0x00000000, 0x00010000, _RWX | _L),  # loader, parameters
            MemoryRegion(0x70000000, 0x70000000, 0x08000000, _RWXD | _L),  # kernel, DTB, initrd
            comm,
        ),
        irqchips=(_gic(33),),  # the PL011's interrupt
        console=_ARM64_PL011,
    )
    return {demo.name: demo, linux.name: linux}


# -- public API ---------------------------------------------------------------------------------


def example_system(arch: ExampleArch) -> SystemConfig:
    """Return the example system config of an architecture.

    Args:
        arch: ``"x86"`` or ``"arm64"``.

    Returns:
        A QEMU-like system with 4 CPUs whose root cell is named ``<arch>-root``.

    Raises:
        ValueError: There is no example for ``arch``.
    """
    return _x86_system() if _check_arch(arch) == "x86" else _arm64_system()


def example_cells(arch: ExampleArch) -> dict[str, CellConfig]:
    """Return the example non-root cells of an architecture, by name.

    Args:
        arch: ``"x86"`` or ``"arm64"``.

    Returns:
        ``<arch>-demo`` and ``<arch>-linux``; all of them fit on
        :func:`example_system` at the same time.

    Raises:
        ValueError: There is no example for ``arch``.
    """
    return _x86_cells() if _check_arch(arch) == "x86" else _arm64_cells()


def example_files(arch: ExampleArch) -> dict[str, bytes]:
    """Return the packed example configs of an architecture, by file name.

    The system config is ``<arch>-root.cell``, each cell ``<name>.cell``: what
    ``fixtures/generate.py`` writes to ``fixtures/<arch>/``.

    Args:
        arch: ``"x86"`` or ``"arm64"``.

    Returns:
        File name to bytes.

    Raises:
        ValueError: There is no example for ``arch``.
    """
    system = example_system(arch)
    files = {f"{system.root_cell.name}.cell": system.to_bytes()}
    files.update({f"{name}.cell": cell.to_bytes() for name, cell in example_cells(arch).items()})
    return files
