"""Typed model of Jailhouse cell and system configs (config revision 14).

Every struct of ``include/jailhouse/cell-config.h`` is a frozen dataclass here, every
flag word an :class:`enum.IntFlag` and every type code an :class:`enum.IntEnum`.  Enum
fields keep values this library does not know (as ``UNKNOWN_0x..`` members) so that a
config the driver accepts always packs back to the same bytes; :func:`validate` reports
them.  Sequences are tuples and CPU sets frozensets, so configs are hashable and compare
by value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Self

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
]

CONFIG_REVISION: Final = 14
"""The only config revision this library reads and writes (upstream master/next)."""
CELL_SIGNATURE: Final = b"JHCLL"
"""First five bytes of a cell config."""
SYSTEM_SIGNATURE: Final = b"JHSYS"
"""First five bytes of a system config."""
NAME_MAXLEN: Final = 31
"""Longest cell name in bytes; the field is 32 bytes with the terminating NUL."""
PAGE_SIZE: Final = 0x1000
"""The hypervisor's page size on every architecture it supports."""

IVSHMEM_BAR_MASK_INTX: Final = (0xFFFFF000, 0, 0, 0, 0, 0)
"""ivshmem BAR masks: 4 KiB register BAR, legacy INTx."""
IVSHMEM_BAR_MASK_MSIX: Final = (0xFFFFF000, 0xFFFFF000, 0, 0, 0, 0)
"""ivshmem BAR masks: 4 KiB register BAR plus an MSI-X BAR."""
IVSHMEM_BAR_MASK_INTX_64K: Final = (0xFFFF0000, 0, 0, 0, 0, 0)
"""ivshmem BAR masks: 64 KiB register BAR, legacy INTx."""
IVSHMEM_BAR_MASK_MSIX_64K: Final = (0xFFFF0000, 0xFFFF0000, 0, 0, 0, 0)
"""ivshmem BAR masks: 64 KiB register BAR plus a 64 KiB MSI-X BAR."""


class _OpenEnum(enum.IntEnum):
    """An IntEnum that keeps unknown values as ``UNKNOWN_0x..`` pseudo-members."""

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value:#x}"
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        """Whether the value is one the format defines."""
        return self._value_ in type(self)._value2member_map_


class Arch(_OpenEnum):
    """Architecture byte of a config (``JAILHOUSE_X86`` ...)."""

    X86 = 0
    """x86-64."""
    ARM = 1
    """32-bit ARM (ARMv7 with virtualisation extensions)."""
    ARM64 = 2
    """AArch64."""

    @property
    def libvirt_name(self) -> str:
        """The name libvirt and ``uname -m`` use for the architecture."""
        return {0: "x86_64", 1: "armv7l", 2: "aarch64"}[self.value]

    @classmethod
    def from_name(cls, name: str) -> Arch:
        """Map a libvirt or ``uname -m`` architecture name to an :class:`Arch`.

        Raises:
            ValueError: The name is not an architecture Jailhouse supports.
        """
        table = {
            "x86_64": cls.X86,
            "amd64": cls.X86,
            "x86": cls.X86,
            "aarch64": cls.ARM64,
            "arm64": cls.ARM64,
            "armv7l": cls.ARM,
            "armv7": cls.ARM,
            "arm": cls.ARM,
        }
        try:
            return table[name.lower()]
        except KeyError:
            raise ValueError(
                f"architecture {name!r} is not supported by Jailhouse (x86_64, aarch64 or armv7l)"
            ) from None


class CellFlag(enum.IntFlag):
    """Cell flags (``JAILHOUSE_CELL_*``)."""

    PASSIVE_COMMREG = 0x00000001
    """The cell does not answer comm-region messages; shutdown is not negotiated."""
    TEST_DEVICE = 0x00000002
    """Expose the hypervisor's test device to the cell."""
    AARCH32 = 0x00000004
    """Run the cell's CPUs in AArch32 mode (arm64 only)."""
    VIRTUAL_CONSOLE_PERMITTED = 0x40000000
    """The cell may write to the hypervisor console."""
    VIRTUAL_CONSOLE_ACTIVE = 0x80000000
    """The cell uses the hypervisor console (implies PERMITTED)."""


class SystemFlag(enum.IntFlag):
    """System config flags (``JAILHOUSE_SYS_*``)."""

    VIRTUAL_DEBUG_CONSOLE = 0x0001
    """The root cell may read the hypervisor console through the device."""


class MemFlag(enum.IntFlag):
    """Memory region flags (``JAILHOUSE_MEM_*``)."""

    READ = 0x0001
    """The cell may read the region."""
    WRITE = 0x0002
    """The cell may write the region."""
    EXECUTE = 0x0004
    """The cell may execute from the region."""
    DMA = 0x0008
    """Devices of the cell may DMA into the region."""
    IO = 0x0010
    """The region is device memory (MMIO)."""
    COMM_REGION = 0x0020
    """The region is the cell's communication region with the hypervisor."""
    LOADABLE = 0x0040
    """The root cell may load images into the region while the cell is shut down."""
    ROOTSHARED = 0x0080
    """The root cell keeps the region mapped after the cell is created."""
    NO_HUGEPAGES = 0x0100
    """Map the region with 4 KiB pages only."""
    IO_UNALIGNED = 0x8000
    """Sub-page MMIO region: allow unaligned accesses."""
    IO_8 = 0x10000
    """Sub-page MMIO region: allow 8-bit accesses."""
    IO_16 = 0x20000
    """Sub-page MMIO region: allow 16-bit accesses."""
    IO_32 = 0x40000
    """Sub-page MMIO region: allow 32-bit accesses."""
    IO_64 = 0x80000
    """Sub-page MMIO region: allow 64-bit accesses."""


class ConsoleType(_OpenEnum):
    """Console device type (``JAILHOUSE_CON_TYPE_*``)."""

    NONE = 0
    """No console."""
    EFIFB = 1
    """EFI framebuffer."""
    UART_8250 = 2
    """8250/16550 UART."""
    PL011 = 3
    """ARM PrimeCell PL011 UART."""
    XUARTPS = 4
    """Xilinx Zynq UART."""
    MVEBU = 5
    """Marvell EBU UART."""
    HSCIF = 6
    """Renesas HSCIF."""
    SCIFA = 7
    """Renesas SCIFA."""
    IMX = 8
    """NXP i.MX UART."""
    IMX_LPUART = 9
    """NXP i.MX low-power UART."""
    SCIF = 0xA
    """Renesas SCIF."""


class ConsoleFlag(enum.IntFlag):
    """Console flags (``JAILHOUSE_CON_*``); a clear bit means PIO, 1-byte distance, 1024x768."""

    ACCESS_MMIO = 0x0001
    """Registers are memory mapped (clear: port I/O)."""
    REGDIST_4 = 0x0002
    """Registers are 4 bytes apart (clear: 1 byte)."""
    FB_1920x1080 = 0x0004
    """Framebuffer resolution 1920x1080 (clear: 1024x768)."""
    INVERTED_GATE = 0x1000
    """The clock gate is active low."""
    MDR_QUIRK = 0x2000
    """The UART needs the MDR quirk."""


class CacheType(_OpenEnum):
    """Cache partition type (``JAILHOUSE_CACHE_*``)."""

    L3_CODE = 0x01
    """L3 code partition."""
    L3_DATA = 0x02
    """L3 data partition."""
    L3 = 0x03
    """Unified L3 partition."""


class CacheFlag(enum.IntFlag):
    """Cache region flags."""

    ROOTSHARED = 0x0001
    """The root cell keeps using the partition."""


class PciType(_OpenEnum):
    """PCI device type (``JAILHOUSE_PCI_TYPE_*``)."""

    DEVICE = 1
    """A physical PCI function."""
    BRIDGE = 2
    """A PCI bridge."""
    IVSHMEM = 3
    """A virtual inter-cell shared-memory device."""


class PciCapFlag(enum.IntFlag):
    """PCI capability flags."""

    WRITE = 0x0001
    """The cell may write the capability."""


class ShmemProtocol(enum.IntEnum):
    """Well-known ivshmem protocol codes; the field is a plain u16."""

    UNDEFINED = 0x0000
    """No protocol."""
    VETH = 0x0001
    """Virtual Ethernet."""
    CUSTOM = 0x4000
    """First of the custom range 0x4000-0x7fff."""
    VIRTIO_FRONT = 0x8000
    """First of the virtio front-end range 0x8000-0xbfff (plus the virtio device id)."""
    VIRTIO_BACK = 0xC000
    """First of the virtio back-end range 0xc000-0xffff (plus the virtio device id)."""


class IommuType(_OpenEnum):
    """IOMMU unit type (``JAILHOUSE_IOMMU_*``)."""

    UNUSED = 0
    """An empty slot."""
    AMD = 1
    """AMD-Vi."""
    INTEL = 2
    """Intel VT-d."""
    SMMUV3 = 3
    """ARM SMMUv3."""
    PVU = 4
    """TI Peripheral Virtualization Unit."""
    ARM_MMU500 = 5
    """ARM MMU-500."""


class ApicMode(_OpenEnum):
    """x86 APIC mode of the system."""

    AUTO = 0
    """Use what the root cell runs in."""
    XAPIC = 1
    """Force xAPIC."""
    X2APIC = 2
    """Force x2APIC."""


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


def format_cpus(cpus: frozenset[int] | set[int]) -> str:
    """Render a CPU set as a range list, the way sysfs ``cpus_assigned_list`` does (``0-2,5``)."""
    out: list[str] = []
    run: list[int] = []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(_run_text(run))
        run = [cpu]
    if run:
        out.append(_run_text(run))
    return ",".join(out)


def _run_text(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def parse_cpus(text: str) -> frozenset[int]:
    """Parse a range list such as ``0-2,5`` (the sysfs ``*_list`` format).

    Raises:
        ValueError: The text is not a range list.
    """
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"{text!r} is not a CPU range list (like 0-2,5)")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"{part!r} in {text!r} runs backwards")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


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
