"""The config format as plain data: struct layouts, sizes and the codes of each field.

Nothing here imports :mod:`enum`: ``jhctl config check`` on a clean set reads and checks
configs through this module, :mod:`jailhouse.config._rules` and
:mod:`jailhouse.config._lean` alone, so its start-up is the interpreter's plus these.  The
enums of :mod:`jailhouse.config.flags` name the same codes for the typed model;
``tests/test_lean.py`` holds the two to the same values, and ``tests/test_layout.py``
holds the layouts to the structs the C compiler lays out.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # not typing's: this module is on the cold start of `config check`
if TYPE_CHECKING:
    from typing import Final

# -- format constants (re-exported by jailhouse.config.flags and .model) ----------------------

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

# -- layouts (cell-config.h, revision 14; little-endian, packed) ------------------------------

# struct jailhouse_cell_desc: signature, architecture, revision, name, then eleven u32
# (id, flags, cpu_set_size, the eight counts, vpci_irq_base), cpu_reset_address,
# msg_reply_timeout, and the embedded struct jailhouse_console.
CONSOLE_FORMAT: Final = "QIHHIIQ"  # struct jailhouse_console, embedded in two headers
CELL_DESC: Final = struct.Struct("<5sBH32s11IQQ" + CONSOLE_FORMAT)
CONSOLE: Final = struct.Struct("<" + CONSOLE_FORMAT)
MEMORY: Final = struct.Struct("<QQQQ")
CACHE: Final = struct.Struct("<IIBxH")
IRQCHIP: Final = struct.Struct("<QII4I")
PIO: Final = struct.Struct("<HH")
PCI_DEVICE: Final = struct.Struct("<BBHH6IHHBBHHQIBBH")
PCI_CAP: Final = struct.Struct("<HHHH")
STREAM_ID: Final = struct.Struct("<I")
# struct jailhouse_system up to platform_info: signature, architecture, revision, flags,
# hypervisor_memory, debug_console.
SYSTEM_HEAD: Final = struct.Struct("<5sBHI" + "QQQQ" + CONSOLE_FORMAT)
PLATFORM_PCI: Final = struct.Struct("<QBBH")
IOMMU: Final = struct.Struct("<IQI12s")
IOMMU_AMD: Final = struct.Struct("<HBBI4x")
IOMMU_PVU: Final = struct.Struct("<QI")
X86_PLATFORM: Final = struct.Struct("<HBxIII28x")
ARM_PLATFORM: Final = struct.Struct("<BB2xQQQQQ")
NUM_IOMMUS: Final = 8

CELL_DESC_SIZE: Final = CELL_DESC.size
"""Bytes of a cell descriptor before its CPU set (132)."""
SYSTEM_HEADER_SIZE: Final = (
    SYSTEM_HEAD.size + PLATFORM_PCI.size + NUM_IOMMUS * IOMMU.size + ARM_PLATFORM.size
)
"""Bytes of a system config before its root cell's descriptor (356)."""
ENTRY_SIZES: Final = (
    MEMORY.size,
    CACHE.size,
    IRQCHIP.size,
    PIO.size,
    PCI_DEVICE.size,
    PCI_CAP.size,
    STREAM_ID.size,
)
"""Entry sizes of the arrays after the CPU set, in file order (memory regions first)."""
COUNT_OFFSETS: Final = {
    "cpu_set_size": 48,
    "num_memory_regions": 52,
    "num_cache_regions": 56,
    "num_irqchips": 60,
    "num_pio_regions": 64,
    "num_pci_devices": 68,
    "num_pci_caps": 72,
    "num_stream_ids": 76,
}
"""Offsets of the descriptor's CPU-set size and array counts, in file order."""

# -- codes, as the enums of jailhouse.config.flags define them ----------------------------

ARCH_MEMBERS: Final = ("X86", "ARM", "ARM64")
"""The names of :class:`~jailhouse.config.flags.Arch`, by code (0 x86, 1 arm, 2 arm64)."""
ARCH_X86: Final = 0
ARCH_ARM: Final = 1
ARCH_ARM64: Final = 2

CELL_PASSIVE_COMMREG: Final = 0x1
CELL_FLAGS_KNOWN: Final = 0x1 | 0x2 | 0x4 | 0x40000000 | 0x80000000
SYSTEM_FLAGS_KNOWN: Final = 0x1

MEM_WRITE: Final = 0x2
MEM_IO: Final = 0x10
MEM_COMM_REGION: Final = 0x20
MEM_LOADABLE: Final = 0x40
MEM_ROOTSHARED: Final = 0x80
MEM_IO_WIDTHS: Final = 0x10000 | 0x20000 | 0x40000 | 0x80000
"""IO_8, IO_16, IO_32 and IO_64: the access widths a sub-page region permits."""
MEM_FLAGS_KNOWN: Final = 0x1FF | 0x8000 | MEM_IO_WIDTHS

CONSOLE_TYPES: Final = frozenset(range(0xB))
"""NONE (0) to SCIF (0xa)."""
CACHE_L3: Final = 3
PCI_TYPES: Final = frozenset({1, 2, 3})
PCI_IVSHMEM: Final = 3
IOMMU_UNUSED: Final = 0
IOMMU_TYPES: Final = frozenset(range(6))
"""UNUSED (0) to ARM_MMU500 (5)."""
APIC_MODES: Final = frozenset({0, 1, 2})


def arch_name(code: int) -> str:
    """Name an architecture code as :class:`~jailhouse.config.flags.Arch` does."""
    if 0 <= code < len(ARCH_MEMBERS):
        return ARCH_MEMBERS[code]
    return f"UNKNOWN_{code:#x}"


def _bits(value: int, base: int = 0) -> list[int]:
    """The positions of the set bits of a non-negative ``value``, plus ``base``, low first."""
    found = []
    while value:
        low = value & -value
        found.append(base + low.bit_length() - 1)
        value ^= low
    return found


def cpu_set(raw: bytes) -> frozenset[int]:
    """The CPUs of a cell's CPU set: bit n of the little-endian bitmap is CPU n."""
    return frozenset(_bits(int.from_bytes(raw, "little")))


def irq_pins(pin_base: int, pin_bitmap: tuple[int, ...]) -> frozenset[int]:
    """The interrupt pins an irqchip's bitmap grants: bit n of word w is base + 32 w + n."""
    return frozenset(
        pin
        for word, value in enumerate(pin_bitmap)
        # a word is a u32: higher bits are not pins
        for pin in _bits(value & 0xFFFFFFFF, pin_base + 32 * word)
    )


def bdf_text(domain: int, bdf: int) -> str:
    """A PCI domain and bus/device/function as ``0000:00:1f.0``."""
    return f"{domain:04x}:{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 0x7:x}"
