"""Typed model of Jailhouse cell and system configs (config revision 14).

Every struct of ``include/jailhouse/cell-config.h`` is a frozen record here (a slotted
class with keyword constructors, value equality, ``replace`` and the dataclass protocol:
see :mod:`jailhouse.config._record`), every flag word an :class:`enum.IntFlag` and every
type code an :class:`enum.IntEnum`.  Enum
fields keep values this library does not know (as ``UNKNOWN_0x..`` members) so that a
config the driver accepts always packs back to the same bytes; :func:`validate` reports
them.  Sequences are tuples and CPU sets frozensets, so configs are hashable and compare
by value.  The flag words, type codes, constants and CPU-set helpers are defined in
:mod:`jailhouse.config.flags` and re-exported here.
"""

from __future__ import annotations

from jailhouse.config._format import bdf_text as _bdf_text
from jailhouse.config._format import irq_pins as _irq_pins
from jailhouse.config._record import PackedArray, Record, decoded
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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Final

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


_set = object.__setattr__
# Defaults of the flag fields (an IntFlag call in a signature would run at every import).
_NO_CONSOLEFLAGS: Final = ConsoleFlag(0)
_NO_MEMFLAGS: Final = MemFlag(0)
_NO_CACHEFLAGS: Final = CacheFlag(0)
_NO_PCICAPFLAGS: Final = PciCapFlag(0)
_NO_CELLFLAGS: Final = CellFlag(0)
_NO_SYSTEMFLAGS: Final = SystemFlag(0)


class Console(Record):
    """A console device (``struct jailhouse_console``, 32 bytes)."""

    __slots__ = ("address", "clock_reg", "divider", "flags", "gate_nr", "size", "type")
    address: int
    size: int
    type: ConsoleType
    flags: ConsoleFlag
    divider: int
    gate_nr: int
    clock_reg: int

    def __init__(  # noqa: PLR0917 - the C struct's fields, positional as before
        self,
        address: int = 0,
        size: int = 0,
        type: ConsoleType = ConsoleType.NONE,  # noqa: A002 - the C field's name
        flags: ConsoleFlag = _NO_CONSOLEFLAGS,
        divider: int = 0,
        gate_nr: int = 0,
        clock_reg: int = 0,
    ) -> None:
        """Make a console; every field has a default."""
        _set(self, "address", address)
        _set(self, "size", size)
        _set(self, "type", type)
        _set(self, "flags", flags)
        _set(self, "divider", divider)
        _set(self, "gate_nr", gate_nr)
        _set(self, "clock_reg", clock_reg)

    def __str__(self) -> str:
        """Summarise the console as ``PL011 mmio@0x9000000+0x1000``."""
        if self.type == ConsoleType.NONE:
            return "none"
        access = "mmio" if ConsoleFlag.ACCESS_MMIO in self.flags else "pio"
        return f"{self.type.name} {access}@{self.address:#x}+{self.size:#x}"


_NO_CONSOLE: Final = Console()
_COMM_REGION_BIT: Final = int(MemFlag.COMM_REGION)


class MemoryRegion(Record):
    """A memory region of a cell (``struct jailhouse_memory``, 32 bytes)."""

    __slots__ = ("flags", "phys_start", "size", "virt_start")
    phys_start: int
    virt_start: int
    size: int
    flags: MemFlag

    def __init__(
        self, phys_start: int, virt_start: int, size: int, flags: MemFlag = _NO_MEMFLAGS
    ) -> None:
        """Make a region."""
        _set(self, "phys_start", phys_start)
        _set(self, "virt_start", virt_start)
        _set(self, "size", size)
        _set(self, "flags", flags)

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


class CacheRegion(Record):
    """A cache partition (``struct jailhouse_cache``, 12 bytes)."""

    __slots__ = ("flags", "size", "start", "type")
    start: int
    size: int
    type: CacheType
    flags: CacheFlag

    def __init__(
        self,
        start: int,
        size: int,
        type: CacheType = CacheType.L3,  # noqa: A002 - the C field's name
        flags: CacheFlag = _NO_CACHEFLAGS,
    ) -> None:
        """Make a cache partition."""
        _set(self, "start", start)
        _set(self, "size", size)
        _set(self, "type", type)
        _set(self, "flags", flags)


class IrqChip(Record):
    """Interrupt lines of one interrupt controller (``struct jailhouse_irqchip``, 32 bytes).

    ``pin_bitmap`` holds four 32-bit words: bit n of word w is pin ``pin_base + 32 * w + n``.
    """

    __slots__ = ("address", "id", "pin_base", "pin_bitmap")
    address: int
    id: int
    pin_base: int
    pin_bitmap: tuple[int, int, int, int]

    def __init__(
        self,
        address: int,
        id: int = 0,  # noqa: A002 - the C field's name
        pin_base: int = 0,
        pin_bitmap: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> None:
        """Make an interrupt chip entry."""
        _set(self, "address", address)
        _set(self, "id", id)
        _set(self, "pin_base", pin_base)
        _set(self, "pin_bitmap", pin_bitmap)

    @property
    def pins(self) -> frozenset[int]:
        """The interrupt pins the bitmap grants."""
        return _irq_pins(self.pin_base, self.pin_bitmap)


class PioRegion(Record):
    """An x86 port I/O range the cell may access (``struct jailhouse_pio``, 4 bytes)."""

    __slots__ = ("base", "length")
    base: int
    length: int

    def __init__(self, base: int, length: int) -> None:
        """Make a port range."""
        _set(self, "base", base)
        _set(self, "length", length)


class PciDevice(Record):
    """A PCI device of a cell (``struct jailhouse_pci_device``, 56 bytes)."""

    __slots__ = (
        "bar_mask",
        "bdf",
        "caps_start",
        "domain",
        "iommu",
        "msi_64bits",
        "msi_maskable",
        "msix_address",
        "msix_region_size",
        "num_caps",
        "num_msi_vectors",
        "num_msix_vectors",
        "shmem_dev_id",
        "shmem_peers",
        "shmem_protocol",
        "shmem_regions_start",
        "type",
    )
    type: PciType
    bdf: int
    domain: int
    iommu: int
    bar_mask: tuple[int, int, int, int, int, int]
    caps_start: int
    num_caps: int
    num_msi_vectors: int
    msi_64bits: bool
    msi_maskable: bool
    num_msix_vectors: int
    msix_region_size: int
    msix_address: int
    shmem_regions_start: int
    shmem_dev_id: int
    shmem_peers: int
    shmem_protocol: int

    def __init__(  # noqa: PLR0917 - the C struct's fields, positional as before
        self,
        type: PciType,  # noqa: A002 - the C field's name
        bdf: int,
        domain: int = 0,
        iommu: int = 0,
        bar_mask: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0),
        caps_start: int = 0,
        num_caps: int = 0,
        num_msi_vectors: int = 0,
        msi_64bits: bool = False,
        msi_maskable: bool = False,
        num_msix_vectors: int = 0,
        msix_region_size: int = 0,
        msix_address: int = 0,
        shmem_regions_start: int = 0,
        shmem_dev_id: int = 0,
        shmem_peers: int = 0,
        shmem_protocol: int = 0,
    ) -> None:
        """Make a PCI device entry."""
        _set(self, "type", type)
        _set(self, "bdf", bdf)
        _set(self, "domain", domain)
        _set(self, "iommu", iommu)
        _set(self, "bar_mask", bar_mask)
        _set(self, "caps_start", caps_start)
        _set(self, "num_caps", num_caps)
        _set(self, "num_msi_vectors", num_msi_vectors)
        _set(self, "msi_64bits", msi_64bits)
        _set(self, "msi_maskable", msi_maskable)
        _set(self, "num_msix_vectors", num_msix_vectors)
        _set(self, "msix_region_size", msix_region_size)
        _set(self, "msix_address", msix_address)
        _set(self, "shmem_regions_start", shmem_regions_start)
        _set(self, "shmem_dev_id", shmem_dev_id)
        _set(self, "shmem_peers", shmem_peers)
        _set(self, "shmem_protocol", shmem_protocol)

    @property
    def bdf_text(self) -> str:
        """Bus, device and function as ``0000:00:1f.0``."""
        return _bdf_text(self.domain, self.bdf)


class PciCapability(Record):
    """A PCI capability the cell may see (``struct jailhouse_pci_capability``, 8 bytes)."""

    __slots__ = ("flags", "id", "len", "start")
    id: int
    start: int
    len: int
    flags: PciCapFlag

    def __init__(
        self,
        id: int,  # noqa: A002 - the C field's name
        start: int,
        len: int,  # noqa: A002 - the C field's name
        flags: PciCapFlag = _NO_PCICAPFLAGS,
    ) -> None:
        """Make a capability entry."""
        _set(self, "id", id)
        _set(self, "start", start)
        _set(self, "len", len)
        _set(self, "flags", flags)

    @property
    def extended(self) -> bool:
        """Whether this is a PCI Express extended capability."""
        return bool(self.id & 0x8000)


class CellConfig(Record):
    """A cell config: the descriptor and its trailing arrays.

    For a root cell embedded in a :class:`SystemConfig`, ``arch`` is the system's and the
    descriptor's own signature bytes live in :attr:`SystemConfig.root_header`.

    Attributes:
        trailing: Bytes after the declared arrays.  The driver ignores them; they are kept
            so the file packs back to the same bytes, and :meth:`validate` reports them.
    """

    # Five arrays live in private slots behind properties: a parsed config keeps them as
    # their bytes (PackedArray) until they are read, and packs those bytes back unread.
    __slots__ = (
        "_irqchips",
        "_mem_regions",
        "_packed",
        "_pci_caps",
        "_pio_regions",
        "_stream_ids",
        "arch",
        "cache_regions",
        "console",
        "cpu_reset_address",
        "cpu_set_size",
        "cpus",
        "flags",
        "id",
        "msg_reply_timeout",
        "name",
        "pci_devices",
        "trailing",
        "vpci_irq_base",
    )
    name: str
    arch: Arch
    cpus: frozenset[int]
    cpu_set_size: int
    flags: CellFlag
    _mem_regions: tuple[MemoryRegion, ...] | PackedArray
    cache_regions: tuple[CacheRegion, ...]
    _irqchips: tuple[IrqChip, ...] | PackedArray
    _pio_regions: tuple[PioRegion, ...] | PackedArray
    pci_devices: tuple[PciDevice, ...]
    _pci_caps: tuple[PciCapability, ...] | PackedArray
    _stream_ids: tuple[int, ...] | PackedArray
    _packed: bytes | None
    """For a config parsed from canonical bytes, what packing it gives after the 8-byte
    header (signature, arch, revision): the file's own bytes.  ``None`` otherwise."""
    vpci_irq_base: int
    cpu_reset_address: int
    msg_reply_timeout: int
    console: Console
    id: int
    trailing: bytes

    def __init__(
        self,
        *,
        name: str,
        arch: Arch,
        cpus: frozenset[int] = frozenset(),
        cpu_set_size: int = 8,
        flags: CellFlag = _NO_CELLFLAGS,
        mem_regions: tuple[MemoryRegion, ...] = (),
        cache_regions: tuple[CacheRegion, ...] = (),
        irqchips: tuple[IrqChip, ...] = (),
        pio_regions: tuple[PioRegion, ...] = (),
        pci_devices: tuple[PciDevice, ...] = (),
        pci_caps: tuple[PciCapability, ...] = (),
        stream_ids: tuple[int, ...] = (),
        vpci_irq_base: int = 0,
        cpu_reset_address: int = 0,
        msg_reply_timeout: int = 0,
        console: Console = _NO_CONSOLE,
        id: int = 0,  # noqa: A002 - the C field's name
        trailing: bytes = b"",
    ) -> None:
        """Make a cell config; only the name and the arch have no default."""
        _set(self, "name", name)
        _set(self, "arch", arch)
        _set(self, "cpus", cpus)
        _set(self, "cpu_set_size", cpu_set_size)
        _set(self, "flags", flags)
        _set(self, "_mem_regions", mem_regions)
        _set(self, "cache_regions", cache_regions)
        _set(self, "_irqchips", irqchips)
        _set(self, "_pio_regions", pio_regions)
        _set(self, "pci_devices", pci_devices)
        _set(self, "_pci_caps", pci_caps)
        _set(self, "_stream_ids", stream_ids)
        _set(self, "vpci_irq_base", vpci_irq_base)
        _set(self, "cpu_reset_address", cpu_reset_address)
        _set(self, "msg_reply_timeout", msg_reply_timeout)
        _set(self, "console", console)
        _set(self, "id", id)
        _set(self, "trailing", trailing)
        _set(self, "_packed", None)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        """Restore the fields after unpickling; the packed bytes are not kept."""
        super().__setstate__(state)
        _set(self, "_packed", None)

    @property
    def mem_regions(self) -> tuple[MemoryRegion, ...]:
        """The memory regions (``struct jailhouse_memory``)."""
        value = self._mem_regions
        if isinstance(value, PackedArray):
            unpacked: tuple[MemoryRegion, ...] = decoded(self, "_mem_regions", value)
            return unpacked
        return value

    @property
    def irqchips(self) -> tuple[IrqChip, ...]:
        """The interrupt chips and their pins (``struct jailhouse_irqchip``)."""
        value = self._irqchips
        if isinstance(value, PackedArray):
            unpacked: tuple[IrqChip, ...] = decoded(self, "_irqchips", value)
            return unpacked
        return value

    @property
    def pio_regions(self) -> tuple[PioRegion, ...]:
        """The x86 port ranges (``struct jailhouse_pio``)."""
        value = self._pio_regions
        if isinstance(value, PackedArray):
            unpacked: tuple[PioRegion, ...] = decoded(self, "_pio_regions", value)
            return unpacked
        return value

    @property
    def pci_caps(self) -> tuple[PciCapability, ...]:
        """The PCI capabilities (``struct jailhouse_pci_capability``)."""
        value = self._pci_caps
        if isinstance(value, PackedArray):
            unpacked: tuple[PciCapability, ...] = decoded(self, "_pci_caps", value)
            return unpacked
        return value

    @property
    def stream_ids(self) -> tuple[int, ...]:
        """The IOMMU stream ids (u32 each)."""
        value = self._stream_ids
        if isinstance(value, PackedArray):
            unpacked: tuple[int, ...] = decoded(self, "_stream_ids", value)
            return unpacked
        return value

    @property
    def size(self) -> int:
        """Byte size of the packed config, without :attr:`trailing`."""
        return (
            132
            + self.cpu_set_size
            + 32 * len(self._mem_regions)
            + 12 * len(self.cache_regions)
            + 32 * len(self._irqchips)
            + 4 * len(self._pio_regions)
            + 56 * len(self.pci_devices)
            + 8 * len(self._pci_caps)
            + 4 * len(self._stream_ids)
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

    def __str__(self) -> str:
        """Summarise as ``cell 'name' (ARM64, CPUs 2-3, 4 regions)``."""
        return (
            f"cell {self.name!r} ({self.arch.name}, CPUs {format_cpus(self.cpus) or 'none'}, "
            f"{len(self.mem_regions)} memory regions)"
        )


class IommuUnit(Record):
    """An IOMMU of the platform (``struct jailhouse_iommu``, 28 bytes).

    The ``amd_*`` fields are the AMD member of the union; the ``tipvu_*`` fields are the TI
    PVU member and are used when ``type`` is :attr:`IommuType.PVU`.
    """

    __slots__ = (
        "amd_base_cap",
        "amd_bdf",
        "amd_features",
        "amd_msi_cap",
        "base",
        "size",
        "tipvu_tlb_base",
        "tipvu_tlb_size",
        "type",
    )
    type: IommuType
    base: int
    size: int
    amd_bdf: int
    amd_base_cap: int
    amd_msi_cap: int
    amd_features: int
    tipvu_tlb_base: int
    tipvu_tlb_size: int

    def __init__(  # noqa: PLR0917 - the C struct's fields, positional as before
        self,
        type: IommuType,  # noqa: A002 - the C field's name
        base: int = 0,
        size: int = 0,
        amd_bdf: int = 0,
        amd_base_cap: int = 0,
        amd_msi_cap: int = 0,
        amd_features: int = 0,
        tipvu_tlb_base: int = 0,
        tipvu_tlb_size: int = 0,
    ) -> None:
        """Make an IOMMU entry."""
        _set(self, "type", type)
        _set(self, "base", base)
        _set(self, "size", size)
        _set(self, "amd_bdf", amd_bdf)
        _set(self, "amd_base_cap", amd_base_cap)
        _set(self, "amd_msi_cap", amd_msi_cap)
        _set(self, "amd_features", amd_features)
        _set(self, "tipvu_tlb_base", tipvu_tlb_base)
        _set(self, "tipvu_tlb_size", tipvu_tlb_size)


class X86Platform(Record):
    """x86 member of the platform info's arch union."""

    __slots__ = ("apic_khz", "apic_mode", "pm_timer_address", "tsc_khz", "vtd_interrupt_limit")
    pm_timer_address: int
    apic_mode: ApicMode
    vtd_interrupt_limit: int
    tsc_khz: int
    apic_khz: int

    def __init__(
        self,
        pm_timer_address: int = 0,
        apic_mode: ApicMode = ApicMode.AUTO,
        vtd_interrupt_limit: int = 0,
        tsc_khz: int = 0,
        apic_khz: int = 0,
    ) -> None:
        """Make the x86 platform info; every field has a default."""
        _set(self, "pm_timer_address", pm_timer_address)
        _set(self, "apic_mode", apic_mode)
        _set(self, "vtd_interrupt_limit", vtd_interrupt_limit)
        _set(self, "tsc_khz", tsc_khz)
        _set(self, "apic_khz", apic_khz)


class ArmPlatform(Record):
    """ARM and arm64 member of the platform info's arch union."""

    __slots__ = (
        "gic_version",
        "gicc_base",
        "gicd_base",
        "gich_base",
        "gicr_base",
        "gicv_base",
        "maintenance_irq",
    )
    maintenance_irq: int
    gic_version: int
    gicd_base: int
    gicc_base: int
    gich_base: int
    gicv_base: int
    gicr_base: int

    def __init__(  # noqa: PLR0917 - the C struct's fields, positional as before
        self,
        maintenance_irq: int = 0,
        gic_version: int = 0,
        gicd_base: int = 0,
        gicc_base: int = 0,
        gich_base: int = 0,
        gicv_base: int = 0,
        gicr_base: int = 0,
    ) -> None:
        """Make the ARM platform info; every field has a default."""
        _set(self, "maintenance_irq", maintenance_irq)
        _set(self, "gic_version", gic_version)
        _set(self, "gicd_base", gicd_base)
        _set(self, "gicc_base", gicc_base)
        _set(self, "gich_base", gich_base)
        _set(self, "gicv_base", gicv_base)
        _set(self, "gicr_base", gicr_base)


_X86_PLATFORM_DEFAULT: Final = X86Platform()


class PlatformInfo(Record):
    """Platform info of a system config.

    ``iommu_units`` holds up to 8 units; trailing empty slots are left out and packed as
    zeros.
    """

    __slots__ = (
        "arch_info",
        "iommu_units",
        "pci_domain",
        "pci_is_virtual",
        "pci_mmconfig_base",
        "pci_mmconfig_end_bus",
    )
    pci_mmconfig_base: int
    pci_mmconfig_end_bus: int
    pci_is_virtual: int
    pci_domain: int
    iommu_units: tuple[IommuUnit, ...]
    arch_info: X86Platform | ArmPlatform

    def __init__(
        self,
        *,
        pci_mmconfig_base: int = 0,
        pci_mmconfig_end_bus: int = 0,
        pci_is_virtual: int = 0,
        pci_domain: int = 0,
        iommu_units: tuple[IommuUnit, ...] = (),
        arch_info: X86Platform | ArmPlatform = _X86_PLATFORM_DEFAULT,
    ) -> None:
        """Make the platform info; every field has a default."""
        _set(self, "pci_mmconfig_base", pci_mmconfig_base)
        _set(self, "pci_mmconfig_end_bus", pci_mmconfig_end_bus)
        _set(self, "pci_is_virtual", pci_is_virtual)
        _set(self, "pci_domain", pci_domain)
        _set(self, "iommu_units", iommu_units)
        _set(self, "arch_info", arch_info)


_PLATFORM_DEFAULT: Final = PlatformInfo()


class SystemConfig(Record):
    """A system config: what ``jailhouse enable`` takes, with the root cell embedded.

    Attributes:
        root_header: The embedded root cell's own signature, arch and revision bytes
            (8 bytes).  Upstream leaves them zero and nothing checks them.
    """

    __slots__ = (
        "_packed",
        "arch",
        "debug_console",
        "flags",
        "hypervisor_memory",
        "platform",
        "root_cell",
        "root_header",
    )
    arch: Arch
    hypervisor_memory: MemoryRegion
    root_cell: CellConfig
    flags: SystemFlag
    debug_console: Console
    platform: PlatformInfo
    root_header: bytes
    _packed: bytes | None
    """For a config parsed from canonical bytes, the file's bytes; ``None`` otherwise."""

    def __init__(
        self,
        *,
        arch: Arch,
        hypervisor_memory: MemoryRegion,
        root_cell: CellConfig,
        flags: SystemFlag = _NO_SYSTEMFLAGS,
        debug_console: Console = _NO_CONSOLE,
        platform: PlatformInfo = _PLATFORM_DEFAULT,
        root_header: bytes = bytes(8),
    ) -> None:
        """Make a system config; the arch, hypervisor memory and root cell have no default."""
        _set(self, "arch", arch)
        _set(self, "hypervisor_memory", hypervisor_memory)
        _set(self, "root_cell", root_cell)
        _set(self, "flags", flags)
        _set(self, "debug_console", debug_console)
        _set(self, "platform", platform)
        _set(self, "root_header", root_header)
        _set(self, "_packed", None)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        """Restore the fields after unpickling; the packed bytes are not kept."""
        super().__setstate__(state)
        _set(self, "_packed", None)

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
import jailhouse.config.codec as _codec  # noqa: E402 - not `from jailhouse.config import`: no hook
