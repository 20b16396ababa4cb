"""Constants, flag words, type codes and CPU-set helpers of Jailhouse configs.

The parts of :mod:`jailhouse.config.model` that hold no structs: importing this module
builds no dataclass, so the status and device code that only needs :class:`Arch` or
:func:`format_cpus` (``jhctl cell list``) does not pay for the whole model.
:mod:`jailhouse.config.model` re-exports every name.
"""

from __future__ import annotations

import enum

from jailhouse._listing import ARCH_NAMES, format_cpus, parse_cpus
from jailhouse.config._format import (
    CELL_SIGNATURE,
    CONFIG_REVISION,
    NAME_MAXLEN,
    PAGE_SIZE,
    SYSTEM_SIGNATURE,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, Self

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
    "CacheFlag",
    "CacheType",
    "CellFlag",
    "ConsoleFlag",
    "ConsoleType",
    "IommuType",
    "MemFlag",
    "PciCapFlag",
    "PciType",
    "ShmemProtocol",
    "SystemFlag",
    "format_cpus",
    "parse_cpus",
]

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
        try:
            return cls(ARCH_NAMES[name.lower()])
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
