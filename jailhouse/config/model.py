"""Typed model of Jailhouse cell and system configs (config revision 14).

Every struct of ``include/jailhouse/cell-config.h`` is a frozen dataclass here, every
flag word an :class:`enum.IntFlag` and every type code an :class:`enum.IntEnum`.  Enum
fields keep values this library does not know (as ``UNKNOWN_0x..`` members) so that a
config the driver accepts always packs back to the same bytes; :func:`validate` reports
them.  Sequences are tuples and CPU sets frozensets, so configs are hashable and compare
by value.  The flag words, type codes, constants and CPU-set helpers are defined in
:mod:`jailhouse.config.flags` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from jailhouse.config.flags import (
    CELL_SIGNATURE,
    CONFIG_REVISION,
    IVSHMEM_BAR_MASK_INTX,
    IVSHMEM_BAR_MASK_INTX_64K,
    IVSHMEM_BAR_MASK_MSIX,
    IVSHMEM_BAR_MASK_MSIX_64K,
    NAME_MAXLEN,
    PAGE_SIZE,
    SYSTEM_SIGNATURE,
    ApicMode,
    Arch,
    CacheFlag,
    CacheType,
    CellFlag,
    ConsoleFlag,
    ConsoleType,
    IommuType,
    MemFlag,
    PciCapFlag,
    PciType,
    ShmemProtocol,
    SystemFlag,
    format_cpus,
    parse_cpus,
)

if TYPE_CHECKING:
    from pathlib import Path

    from jailhouse.config.validate import Finding

__all__ = [
    "CELL_SIGNATURE",
    "CONFIG_REVISION",
    "IVSHMEM_BAR_MASK_INTX",
    "IVSHMEM_BAR_MASK_INTX_64K",
    "IVSHMEM_BAR_MASK_MSIX",
    "IVSHMEM_BAR_MASK_MSIX_64K",
    "NAME_MAXLEN",
    "PAGE_SIZE",
    "SYSTEM_SIGNATURE",
    "ApicMode",
    "Arch",
    "ArmPlatform",
    "CacheFlag",
    "CacheRegion",
    "CacheType",
    "CellConfig",
    "CellFlag",
    "Console",
    "ConsoleFlag",
    "ConsoleType",
    "IommuType",
    "IommuUnit",
    "IrqChip",
    "MemFlag",
    "MemoryRegion",
    "PciCapFlag",
    "PciCapability",
    "PciDevice",
    "PciType",
    "PioRegion",
    "PlatformInfo",
    "ShmemProtocol",
    "SystemConfig",
    "SystemFlag",
    "X86Platform",
    "format_cpus",
    "load_config",
    "parse_cpus",
]


@dataclass(frozen=True, slots=True)
class Console:
    """A console device (``struct jailhouse_console``, 32 bytes)."""

    address: int = 0
    size: int = 0
    type: ConsoleType = ConsoleType.NONE
    flags: ConsoleFlag = ConsoleFlag(0)
    divider: int = 0
    gate_nr: int = 0
    clock_reg: int = 0

    def __str__(self) -> str:
        """Summarise the console as ``PL011 mmio@0x9000000+0x1000``."""
        if self.type == ConsoleType.NONE:
            return "none"
        access = "mmio" if ConsoleFlag.ACCESS_MMIO in self.flags else "pio"
        return f"{self.type.name} {access}@{self.address:#x}+{self.size:#x}"


_COMM_REGION_BIT: Final = int(MemFlag.COMM_REGION)


@dataclass(frozen=True, slots=True)
class MemoryRegion:
    """A memory region of a cell (``struct jailhouse_memory``, 32 bytes)."""

    phys_start: int
    virt_start: int
    size: int
    flags: MemFlag = MemFlag(0)

    @property
    def phys_end(self) -> int:
        """First physical address after the region."""
        return self.phys_start + self.size

    @property
    def virt_end(self) -> int:
        """First guest address after the region."""
        return self.virt_start + self.size

    @property
    def is_comm_region(self) -> bool:
        """Whether this is the cell's communication region."""
        flags = self.flags
        if type(flags) is MemFlag:  # as Flag.__contains__ decides, without its call
            return int(flags) & _COMM_REGION_BIT == _COMM_REGION_BIT
        return MemFlag.COMM_REGION in flags

    @property
    def is_ram(self) -> bool:
        """Whether this is ordinary RAM: read, write, execute and DMA, not IO or shared."""
        ram = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA
        other = MemFlag.IO | MemFlag.COMM_REGION | MemFlag.ROOTSHARED
        return (self.flags & ram) == ram and not self.flags & other

    @property
    def is_subpage(self) -> bool:
        """Whether the guest start or size is not page aligned (the region is trapped)."""
        return bool(self.virt_start % PAGE_SIZE or self.size % PAGE_SIZE)

    def __str__(self) -> str:
        """Render as ``0x40000000-0x40ffffff -> 0x0 (R|W|X)``."""
        end = self.phys_end - 1 if self.size else self.phys_start
        flags = "|".join(f.name or "?" for f in MemFlag if f in self.flags) or "-"
        return f"{self.phys_start:#x}-{end:#x} -> {self.virt_start:#x} ({flags})"


@dataclass(frozen=True, slots=True)
class CacheRegion:
    """A cache partition (``struct jailhouse_cache``, 12 bytes)."""

    start: int
    size: int
    type: CacheType = CacheType.L3
    flags: CacheFlag = CacheFlag(0)


@dataclass(frozen=True, slots=True)
class IrqChip:
    """Interrupt lines of one interrupt controller (``struct jailhouse_irqchip``, 32 bytes).

    ``pin_bitmap`` holds four 32-bit words: bit n of word w is pin ``pin_base + 32 * w + n``.
    """

    address: int
    id: int = 0
    pin_base: int = 0
    pin_bitmap: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def pins(self) -> frozenset[int]:
        """The interrupt pins the bitmap grants."""
        return frozenset(
            self.pin_base + 32 * word + bit
            for word, bits in enumerate(self.pin_bitmap)
            for bit in range(32)
            if bits >> bit & 1
        )


@dataclass(frozen=True, slots=True)
class PioRegion:
    """An x86 port I/O range the cell may access (``struct jailhouse_pio``, 4 bytes)."""

    base: int
    length: int


@dataclass(frozen=True, slots=True)
class PciDevice:
    """A PCI device of a cell (``struct jailhouse_pci_device``, 56 bytes)."""

    type: PciType
    bdf: int
    domain: int = 0
    iommu: int = 0
    bar_mask: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)
    caps_start: int = 0
    num_caps: int = 0
    num_msi_vectors: int = 0
    msi_64bits: bool = False
    msi_maskable: bool = False
    num_msix_vectors: int = 0
    msix_region_size: int = 0
    msix_address: int = 0
    shmem_regions_start: int = 0
    shmem_dev_id: int = 0
    shmem_peers: int = 0
    shmem_protocol: int = 0

    @property
    def bdf_text(self) -> str:
        """Bus, device and function as ``0000:00:1f.0``."""
        bus, dev, fn = self.bdf >> 8, (self.bdf >> 3) & 0x1F, self.bdf & 0x7
        return f"{self.domain:04x}:{bus:02x}:{dev:02x}.{fn:x}"


@dataclass(frozen=True, slots=True)
class PciCapability:
    """A PCI capability the cell may see (``struct jailhouse_pci_capability``, 8 bytes)."""

    id: int
    start: int
    len: int
    flags: PciCapFlag = PciCapFlag(0)

    @property
    def extended(self) -> bool:
        """Whether this is a PCI Express extended capability."""
        return bool(self.id & 0x8000)


@dataclass(frozen=True, slots=True, kw_only=True)
class CellConfig:
    """A cell config: the descriptor and its trailing arrays.

    For a root cell embedded in a :class:`SystemConfig`, ``arch`` is the system's and the
    descriptor's own signature bytes live in :attr:`SystemConfig.root_header`.

    Attributes:
        trailing: Bytes after the declared arrays.  The driver ignores them; they are kept
            so the file packs back to the same bytes, and :meth:`validate` reports them.
    """

    name: str
    arch: Arch
    cpus: frozenset[int] = frozenset()
    cpu_set_size: int = 8
    flags: CellFlag = CellFlag(0)
    mem_regions: tuple[MemoryRegion, ...] = ()
    cache_regions: tuple[CacheRegion, ...] = ()
    irqchips: tuple[IrqChip, ...] = ()
    pio_regions: tuple[PioRegion, ...] = ()
    pci_devices: tuple[PciDevice, ...] = ()
    pci_caps: tuple[PciCapability, ...] = ()
    stream_ids: tuple[int, ...] = ()
    vpci_irq_base: int = 0
    cpu_reset_address: int = 0
    msg_reply_timeout: int = 0
    console: Console = field(default_factory=Console)
    id: int = 0
    trailing: bytes = b""

    @property
    def size(self) -> int:
        """Byte size of the packed config, without :attr:`trailing`."""
        return (
            132
            + self.cpu_set_size
            + 32 * len(self.mem_regions)
            + 12 * len(self.cache_regions)
            + 32 * len(self.irqchips)
            + 4 * len(self.pio_regions)
            + 56 * len(self.pci_devices)
            + 8 * len(self.pci_caps)
            + 4 * len(self.stream_ids)
        )

    @property
    def comm_region(self) -> MemoryRegion | None:
        """The communication region, if the cell has one."""
        return next((r for r in self.mem_regions if r.is_comm_region), None)

    def to_bytes(self) -> bytes:
        """Pack the config into the binary ``.cell`` format.

        Raises:
            ConfigError: A value does not fit its field.
        """
        return _codec.pack_cell(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> CellConfig:
        """Parse a binary cell config.

        Raises:
            InvalidConfigError: The bytes are not a revision-14 cell config.
        """
        return _codec.parse_cell(data)

    def validate(self) -> list[Finding]:
        """Check the config on its own, as the driver and hypervisor would at create.

        Returns:
            The findings; empty when the config is clean.
        """
        from jailhouse.config.validate import validate_cell  # noqa: PLC0415 - validate imports model

        return validate_cell(self)

    def replace(self, **changes: object) -> CellConfig:
        """Return a copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        """Summarise as ``cell 'name' (ARM64, CPUs 2-3, 4 regions)``."""
        return (
            f"cell {self.name!r} ({self.arch.name}, CPUs {format_cpus(self.cpus) or 'none'}, "
            f"{len(self.mem_regions)} memory regions)"
        )


@dataclass(frozen=True, slots=True)
class IommuUnit:
    """An IOMMU of the platform (``struct jailhouse_iommu``, 28 bytes).

    The ``amd_*`` fields are the AMD member of the union; the ``tipvu_*`` fields are the TI
    PVU member and are used when ``type`` is :attr:`IommuType.PVU`.
    """

    type: IommuType
    base: int = 0
    size: int = 0
    amd_bdf: int = 0
    amd_base_cap: int = 0
    amd_msi_cap: int = 0
    amd_features: int = 0
    tipvu_tlb_base: int = 0
    tipvu_tlb_size: int = 0


@dataclass(frozen=True, slots=True)
class X86Platform:
    """x86 member of the platform info's arch union."""

    pm_timer_address: int = 0
    apic_mode: ApicMode = ApicMode.AUTO
    vtd_interrupt_limit: int = 0
    tsc_khz: int = 0
    apic_khz: int = 0


@dataclass(frozen=True, slots=True)
class ArmPlatform:
    """ARM and arm64 member of the platform info's arch union."""

    maintenance_irq: int = 0
    gic_version: int = 0
    gicd_base: int = 0
    gicc_base: int = 0
    gich_base: int = 0
    gicv_base: int = 0
    gicr_base: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformInfo:
    """Platform info of a system config.

    ``iommu_units`` holds up to 8 units; trailing empty slots are left out and packed as
    zeros.
    """

    pci_mmconfig_base: int = 0
    pci_mmconfig_end_bus: int = 0
    pci_is_virtual: int = 0
    pci_domain: int = 0
    iommu_units: tuple[IommuUnit, ...] = ()
    arch_info: X86Platform | ArmPlatform = field(default_factory=X86Platform)


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemConfig:
    """A system config: what ``jailhouse enable`` takes, with the root cell embedded.

    Attributes:
        root_header: The embedded root cell's own signature, arch and revision bytes
            (8 bytes).  Upstream leaves them zero and nothing checks them.
    """

    arch: Arch
    hypervisor_memory: MemoryRegion
    root_cell: CellConfig
    flags: SystemFlag = SystemFlag(0)
    debug_console: Console = field(default_factory=Console)
    platform: PlatformInfo = field(default_factory=PlatformInfo)
    root_header: bytes = bytes(8)

    @property
    def size(self) -> int:
        """Byte size of the packed config, without the root cell's trailing bytes."""
        return 356 + self.root_cell.size

    def to_bytes(self) -> bytes:
        """Pack the config into the binary format the ENABLE ioctl takes.

        Raises:
            ConfigError: A value does not fit its field.
        """
        return _codec.pack_system(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> SystemConfig:
        """Parse a binary system config.

        Raises:
            InvalidConfigError: The bytes are not a revision-14 system config.
        """
        return _codec.parse_system(data)

    def validate(self) -> list[Finding]:
        """Check the system config and its root cell.

        Returns:
            The findings; empty when the config is clean.
        """
        from jailhouse.config.validate import validate_system  # noqa: PLC0415

        return validate_system(self)

    def replace(self, **changes: object) -> SystemConfig:
        """Return a copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        """Summarise as ``system 'name' (ARM64, CPUs 0-3, hypervisor at 0x...)``."""
        hv = self.hypervisor_memory
        return (
            f"system {self.root_cell.name!r} ({self.arch.name}, CPUs "
            f"{format_cpus(self.root_cell.cpus) or 'none'}, hypervisor memory "
            f"{hv.phys_start:#x}+{hv.size:#x})"
        )


def load_config(source: bytes | bytearray | memoryview | str | Path) -> CellConfig | SystemConfig:
    """Parse a cell or system config from bytes or a file, telling them apart by signature.

    Args:
        source: The config's bytes, or the path of a ``.cell`` file.

    Returns:
        A :class:`SystemConfig` for a ``JHSYS`` blob, else a :class:`CellConfig`.

    Raises:
        InvalidConfigError: The bytes are not a revision-14 config.
        OSError: The file cannot be read.
    """
    if isinstance(source, _BYTES_LIKE):
        data = bytes(source)
    else:
        with open(source, "rb") as f:  # noqa: PTH123 - str or Path
            data = f.read()
    if data[:5] == SYSTEM_SIGNATURE:
        return _codec.parse_system(data)
    return _codec.parse_cell(data)


_BYTES_LIKE: Final = (bytes, bytearray, memoryview)

# The codec builds the classes above, so it is imported after them; the methods that pack
# and parse look it up when called.  (The package imports the codec first anyway.)
from jailhouse.config import codec as _codec  # noqa: E402
