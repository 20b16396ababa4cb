"""Booting an x86 Linux kernel in a Jailhouse cell: bzImage, ``boot_params``, loader stub.

Facts are from Linux's boot protocol (``Documentation/arch/x86/boot.rst``, "THE REAL-MODE
KERNEL HEADER" and "64-bit BOOT PROTOCOL"), its UAPI headers (``asm/bootparam.h``: the
``boot_params`` offsets and ``struct jailhouse_setup_data``; ``asm/setup_data.h``), what
the guest kernel reads (``arch/x86/kernel/jailhouse.c``) and what upstream Jailhouse's
``tools/jailhouse-cell-linux`` and x86 vCPU reset code do.  Every line here is ours.

What a bzImage is
-----------------
A bzImage is a real-mode setup part of ``(setup_sects + 1) * 512`` bytes (``setup_sects``
0 meaning 4), then the protected-mode kernel (the "payload" here) of ``syssize * 16``
bytes.  The setup header sits at 0x1f1.  A 64-bit kernel (``XLF_KERNEL_64``, protocol
2.12+) has a 64-bit entry point 0x200 bytes into the payload; it wants 64-bit mode, an
identity map of the kernel's ``init_size`` range, the ``boot_params`` page and the
command line, interrupts off, and ``rsi`` = the ``boot_params`` address.

Contract for the load plan (branch ``linux``)
---------------------------------------------
The plan places, in the cell's loadable RAM below 4 GiB (guest addresses):

1. :data:`X86_LOADER` at ``cell.cpu_reset_address`` (``load_address`` is None and the
   entry is offset 0).  It occupies ``len(X86_LOADER.code)`` bytes (page tables
   included, see below) and needs ``cpu_reset_address`` 64 KiB aligned and below 1 MiB
   (:func:`check_reset_address`; upstream cells use 0).  Its parameter block is filled
   with ``X86_LOADER.with_params(kernel_entry, params_address)``.
2. The protected-mode kernel, ``data[image.payload_offset:][:image.payload_size]``, at a
   ``kernel_address`` aligned to ``image.kernel_alignment`` (``image.pref_address`` when
   that fits, as upstream does), with ``image.init_size`` bytes free from there: the
   kernel decompresses in place inside that range.  ``kernel_entry`` is
   ``kernel_address + image.entry_64_offset``.  (Upstream loads the whole file at
   ``pref_address - payload_offset``, which puts the payload at the same place.)
3. The boot parameters, ``boot_params_for_cell(...)`` (or ``build_boot_params(...)``),
   :data:`PARAMS_IMAGE_SIZE` bytes at ``params_address`` (4 KiB aligned): the zero
   page, at ``params_address + 0x1000`` the Jailhouse setup_data record, then a loader
   block for :data:`X86_LOADER` (the comm region's address).  The command line is a
   separate image.
4. The command line, ``cmdline`` and a NUL, at ``cmdline_address``.
5. The initrd, if any, at a page-aligned address with its end at or below
   ``image.initrd_addr_max + 1``.

None of these may overlap; each lies in one WRITE+LOADABLE region.  The identity map
covers the first 4 GiB, so everything the kernel is handed must be below 4 GiB.

Every CPU of an x86 non-root cell starts at the reset address: Jailhouse resets each
CPU of the cell with the BSP pseudo-SIPI (``arch_reset_cpu``), in real mode, ``CS.base
= cpu_reset_address & ~0xffff``, ``IP = cpu_reset_address & 0xffff``, ``CR0 = CD | NW |
ET``.  The stub lets the first CPU that claims it boot Linux and parks the others with
``cli; hlt``; Linux wakes them later with INIT/SIPI as on any PC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import Arch, X86Platform
from jailhouse.errors import BootError
from jailhouse.linux._loader import LoaderStub

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jailhouse.config.model import CellConfig, SystemConfig

__all__ = [
    "BOOT_PARAMS_SIZE",
    "LOADER_BLOCK_OFFSET",
    "PARAMS_IMAGE_SIZE",
    "SETUP_DATA_OFFSET",
    "SETUP_DATA_SIZE",
    "X86_LOADER",
    "X86_LOADER_SOURCE",
    "XLF_KERNEL_64",
    "BzImage",
    "boot_params_for_cell",
    "build_boot_params",
    "check_reset_address",
    "looks_like_bzimage",
    "parse_bzimage",
]

# --- the real-mode kernel header (boot.rst, "THE REAL-MODE KERNEL HEADER") ---------------

SETUP_HEADER_OFFSET: Final = 0x1F1
"""Where ``struct setup_header`` starts, in the image and in ``boot_params``."""

_SECTOR: Final = 512
_DEFAULT_SETUP_SECTS: Final = 4  # "If this field is 0, the real value is 4."
_BOOT_FLAG: Final = 0xAA55
_HDRS: Final = b"HdrS"
_MIN_VERSION: Final = 0x020C  # 2.12: first protocol with xloadflags (XLF_KERNEL_64)
_ENTRY_64: Final = 0x200  # "the start address of loaded 64-bit kernel plus 0x200"

XLF_KERNEL_64: Final = 1 << 0
"""``xloadflags`` bit: the kernel has the 64-bit entry point at 0x200."""
XLF_CAN_BE_LOADED_ABOVE_4G: Final = 1 << 1
"""``xloadflags`` bit: the kernel, boot_params, cmdline and initrd may lie above 4 GiB."""

LOADED_HIGH: Final = 1 << 0
"""``loadflags`` bit: the protected-mode code is loaded at 0x100000 or above."""
KEEP_SEGMENTS: Final = 1 << 6
"""``loadflags`` bit (obsolete): do not reload the segment registers in the 32-bit entry."""
CAN_USE_HEAP: Final = 1 << 7
"""``loadflags`` bit: ``heap_end_ptr`` is valid."""

# Field offsets of the setup header, absolute in the image and in boot_params (boot.rst).
_OFF_SETUP_SECTS: Final = 0x1F1  # u8
_OFF_SYSSIZE: Final = 0x1F4  # u32, 16-byte paragraphs of protected-mode code (2.04+)
_OFF_BOOT_FLAG: Final = 0x1FE  # u16, 0xAA55
_OFF_JUMP: Final = 0x200  # u16; its second byte + 0x202 is the end of the header
_OFF_HEADER: Final = 0x202  # "HdrS"
_OFF_VERSION: Final = 0x206  # u16
_OFF_TYPE_OF_LOADER: Final = 0x210  # u8
_OFF_LOADFLAGS: Final = 0x211  # u8
_OFF_RAMDISK_IMAGE: Final = 0x218  # u32
_OFF_RAMDISK_SIZE: Final = 0x21C  # u32
_OFF_CMD_LINE_PTR: Final = 0x228  # u32 (2.02+)
_OFF_INITRD_ADDR_MAX: Final = 0x22C  # u32 (2.03+)
_OFF_KERNEL_ALIGNMENT: Final = 0x230  # u32 (2.05+)
_OFF_RELOCATABLE: Final = 0x234  # u8 (2.05+)
_OFF_XLOADFLAGS: Final = 0x236  # u16 (2.12+)
_OFF_CMDLINE_SIZE: Final = 0x238  # u32 (2.06+)
_OFF_SETUP_DATA: Final = 0x250  # u64 (2.09+)
_OFF_PREF_ADDRESS: Final = 0x258  # u64 (2.10+)
_OFF_INIT_SIZE: Final = 0x260  # u32 (2.10+)
_HEADER_212_END: Final = _OFF_INIT_SIZE + 4  # a 2.12 header reaches at least this far

_ARM64_MAGIC_OFFSET: Final = 0x38  # arm64 booting.rst: "magic = 0x644d5241" ("ARM\x64")
_ARM64_MAGIC: Final = b"ARM\x64"


@dataclass(frozen=True, slots=True)
class BzImage:
    """The parts of an x86 bzImage's setup header a Linux boot needs.

    Attributes:
        setup_sects: Real-mode setup sectors after the boot sector (0 in the file read
            as 4).
        version: Boot protocol version, such as ``0x020f`` for 2.15.
        loadflags: The header's ``loadflags`` byte.
        xloadflags: The header's ``xloadflags`` (``XLF_*`` bits).
        syssize: Protected-mode code size in 16-byte paragraphs.
        pref_address: Preferred load address of the protected-mode kernel.
        init_size: Bytes the kernel needs from its load address to decompress and start.
        kernel_alignment: Alignment a relocatable kernel must be loaded at.
        relocatable_kernel: Whether the kernel may go elsewhere than ``pref_address``.
        cmdline_size: Longest command line the kernel reads, without the final NUL.
        initrd_addr_max: Highest address the initrd's last byte may have.
        payload_offset: Offset in the file of the protected-mode kernel.
        payload_size: Its size in bytes (``syssize * 16``).
        entry_64_offset: Offset of the 64-bit entry point from the payload's start.
        setup_header: The raw setup header, from 0x1f1 to its end (``0x202`` plus the
            byte at 0x201), as a boot loader copies it into ``boot_params``.
        file_size: Length of the whole file.
    """

    setup_sects: int
    version: int
    loadflags: int
    xloadflags: int
    syssize: int
    pref_address: int
    init_size: int
    kernel_alignment: int
    relocatable_kernel: bool
    cmdline_size: int
    initrd_addr_max: int
    payload_offset: int
    payload_size: int
    entry_64_offset: int
    setup_header: bytes
    file_size: int

    def __str__(self) -> str:
        """Render as ``bzImage 2.15, 8 MiB payload, init_size 0x2000000``."""
        return (
            f"bzImage {_version_text(self.version)}, payload {self.payload_size:#x} bytes "
            f"at file offset {self.payload_offset:#x}, pref_address {self.pref_address:#x}, "
            f"init_size {self.init_size:#x}"
        )


def _version_text(version: int) -> str:
    """Render a boot protocol version as ``2.12``."""
    return f"{version >> 8}.{version & 0xFF:02d}"


def _u8(data: bytes, offset: int) -> int:
    return data[offset]


def _u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def _u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])


def looks_like_arm64_image(data: bytes) -> bool:
    """Return whether ``data`` starts like an arm64 ``Image`` (magic ``ARMd`` at 0x38)."""
    end = _ARM64_MAGIC_OFFSET + len(_ARM64_MAGIC)
    return data[_ARM64_MAGIC_OFFSET:end] == _ARM64_MAGIC


def looks_like_bzimage(data: bytes) -> bool:
    """Return whether ``data`` starts like an x86 bzImage.

    Only the two markers are looked at: the boot flag 0xAA55 at 0x1fe and ``HdrS`` at
    0x202.  :func:`parse_bzimage` checks the rest.
    """
    if len(data) < _OFF_HEADER + len(_HDRS):
        return False
    return (
        _u16(data, _OFF_BOOT_FLAG) == _BOOT_FLAG
        and data[_OFF_HEADER : _OFF_HEADER + len(_HDRS)] == _HDRS
    )


def parse_bzimage(data: bytes) -> BzImage:
    """Read and check the setup header of an x86 bzImage.

    Args:
        data: The whole kernel file.

    Returns:
        The header fields a boot needs.

    Raises:
        BootError: ``kernel.magic`` for a file that is not a bzImage (an arm64 ``Image``
            is named as such), ``kernel.boot_flag`` for a missing 0xAA55,
            ``kernel.version`` for a protocol older than 2.12, ``kernel.xloadflags`` for a
            kernel without the 64-bit entry point, ``kernel.size`` for a file shorter
            than its header or payload, ``kernel.syssize`` for an empty payload,
            ``kernel.kernel_alignment`` for an alignment that is not a power of two.
    """
    if looks_like_arm64_image(data):
        raise BootError(
            "kernel.magic",
            _ARM64_MAGIC,
            "this is an arm64 Image (magic 'ARM\\x64' at 0x38), not an x86 bzImage; "
            "boot it in an arm64 cell",
        )
    if len(data) < _OFF_VERSION + 2:
        raise BootError(
            "kernel.size",
            len(data),
            f"a bzImage has its setup header at 0x1f1..0x{_HEADER_212_END:x}; "
            "the file ends before it",
        )
    magic = data[_OFF_HEADER : _OFF_HEADER + len(_HDRS)]
    if magic != _HDRS:
        raise BootError(
            "kernel.magic",
            magic,
            "no 'HdrS' at 0x202: not an x86 bzImage (a vmlinux ELF or a raw Image will "
            "not do; use arch/x86/boot/bzImage)",
        )
    boot_flag = _u16(data, _OFF_BOOT_FLAG)
    if boot_flag != _BOOT_FLAG:
        raise BootError(
            "kernel.boot_flag", boot_flag, "a bzImage has 0xaa55 at 0x1fe; the file is damaged"
        )
    version = _u16(data, _OFF_VERSION)
    if version < _MIN_VERSION:
        raise BootError(
            "kernel.version",
            _version_text(version),
            "boot protocol 2.12 or later is needed: older kernels have no xloadflags, "
            "so no announced 64-bit entry point (Linux 3.8 and later have it)",
        )
    header_end = _OFF_HEADER + data[_OFF_JUMP + 1]
    if header_end < _HEADER_212_END:
        raise BootError(
            "kernel.header",
            header_end,
            f"a protocol {_version_text(version)} setup header reaches at least "
            f"0x{_HEADER_212_END:x}, but its jump says it ends at {header_end:#x}",
        )
    if len(data) < header_end:
        raise BootError(
            "kernel.size",
            len(data),
            f"the setup header ends at {header_end:#x}, after the end of the file",
        )
    xloadflags = _u16(data, _OFF_XLOADFLAGS)
    if not xloadflags & XLF_KERNEL_64:
        raise BootError(
            "kernel.xloadflags",
            xloadflags,
            "XLF_KERNEL_64 is not set: a 32-bit kernel, which a Jailhouse cell cannot "
            "start (build it with CONFIG_X86_64)",
        )
    setup_sects = _u8(data, _OFF_SETUP_SECTS) or _DEFAULT_SETUP_SECTS
    payload_offset = (setup_sects + 1) * _SECTOR
    syssize = _u32(data, _OFF_SYSSIZE)
    if syssize == 0:
        raise BootError("kernel.syssize", syssize, "the protected-mode kernel is empty")
    payload_size = syssize * 16
    if len(data) < payload_offset + payload_size:
        raise BootError(
            "kernel.size",
            len(data),
            f"setup_sects {setup_sects} and syssize {syssize:#x} say the kernel ends at "
            f"{payload_offset + payload_size:#x}: the file is truncated",
        )
    kernel_alignment = _u32(data, _OFF_KERNEL_ALIGNMENT)
    if kernel_alignment & (kernel_alignment - 1) or kernel_alignment == 0:
        raise BootError(
            "kernel.kernel_alignment", kernel_alignment, "the alignment is not a power of two"
        )
    return BzImage(
        setup_sects=setup_sects,
        version=version,
        loadflags=_u8(data, _OFF_LOADFLAGS),
        xloadflags=xloadflags,
        syssize=syssize,
        pref_address=_u64(data, _OFF_PREF_ADDRESS),
        init_size=_u32(data, _OFF_INIT_SIZE),
        kernel_alignment=kernel_alignment,
        relocatable_kernel=bool(_u8(data, _OFF_RELOCATABLE)),
        cmdline_size=_u32(data, _OFF_CMDLINE_SIZE),
        initrd_addr_max=_u32(data, _OFF_INITRD_ADDR_MAX),
        payload_offset=payload_offset,
        payload_size=payload_size,
        entry_64_offset=_ENTRY_64,
        setup_header=bytes(data[SETUP_HEADER_OFFSET:header_end]),
        file_size=len(data),
    )


# --- boot_params, the "zero page" (asm/bootparam.h, struct boot_params) -----------------

BOOT_PARAMS_SIZE: Final = 0x1000
"""Size of ``struct boot_params``."""
SETUP_DATA_OFFSET: Final = BOOT_PARAMS_SIZE
"""Offset of the Jailhouse setup_data record in :func:`build_boot_params`' output."""

_FOUR_GIB: Final = 1 << 32
_PAGE: Final = 0x1000
_OFF_EXT_RAMDISK_IMAGE: Final = 0x0C0  # u32: bits 63..32 of ramdisk_image
_OFF_EXT_RAMDISK_SIZE: Final = 0x0C4  # u32
_OFF_EXT_CMD_LINE_PTR: Final = 0x0C8  # u32
_OFF_E820_ENTRIES: Final = 0x1E8  # u8
_OFF_E820_TABLE: Final = 0x2D0  # struct boot_e820_entry[128]: u64 addr, u64 size, u32 type
_E820_ENTRY: Final = struct.Struct("<QQI")
_E820_MAX: Final = 128  # E820_MAX_ENTRIES_ZEROPAGE
E820_RAM: Final = 1
"""e820 type of usable RAM."""
E820_RESERVED: Final = 2
"""e820 type of reserved memory (upstream gives the comm region this type)."""
_LOADER_UNDEFINED: Final = 0xFF  # type_of_loader: "0xFF = undefined" (boot.rst)

# struct setup_data (asm/setup_data.h): u64 next, u32 type, u32 len, then the payload.
_SETUP_DATA_HEADER: Final = struct.Struct("<QII")
SETUP_JAILHOUSE: Final = 6
"""setup_data type of the Jailhouse record."""
# struct jailhouse_setup_data, packed: hdr {u16 version, u16 compatible_version},
# v1 {u16 pm_timer_address, u16 num_cpus, u64 pci_mmconfig_base, u32 tsc_khz,
# u32 apic_khz, u8 standard_ioapic, u8 cpu_ids[255]}, v2 {u32 flags}.
_JAILHOUSE_V1: Final = struct.Struct("<HHHHQIIB255s")
_JAILHOUSE_V2_FLAGS: Final = struct.Struct("<I")
_SETUP_VERSION: Final = 2  # v2 adds the UART flags (Linux 5.5 and later read them)
_SETUP_COMPATIBLE_VERSION: Final = 1  # the kernel refuses anything but its REQUIRED_VERSION 1
_MAX_CPUS: Final = 255
SETUP_DATA_SIZE: Final = _SETUP_DATA_HEADER.size + _JAILHOUSE_V1.size + _JAILHOUSE_V2_FLAGS.size
"""Size of the Jailhouse setup_data record, header included (16 + 284 bytes)."""

_STANDARD_IOAPIC: Final = 0xFEC00000  # the address the kernel registers the IOAPIC at
PLATFORM_UARTS: Final = (0x3F8, 0x2F8, 0x3E8, 0x2E8)
"""Port bases of the PC UARTs; bit n of the setup_data flags grants UART n."""
_UART_PORTS: Final = 8

LOADER_BLOCK_OFFSET: Final = (SETUP_DATA_OFFSET + SETUP_DATA_SIZE + 7) // 8 * 8
"""Offset of the loader block in :func:`build_boot_params`' output: one u64, the comm
region's guest address (0 for none), which :data:`X86_LOADER` reads.  The kernel does
not look past the setup_data record."""
PARAMS_IMAGE_SIZE: Final = LOADER_BLOCK_OFFSET + 8
"""Size of :func:`build_boot_params`' output: zero page, setup_data, loader block."""
_COMM_REGION_SIZE: Final = 0x1000


def check_reset_address(address: int) -> None:
    """Check that :data:`X86_LOADER` can start at a cell's ``cpu_reset_address``.

    The stub runs its first instructions in real mode and finds its own linear address
    as ``CS * 16``; that holds when the reset address is 64 KiB aligned (so IP starts
    at 0) and below 1 MiB (so the 16-bit CS selector encodes all of the base).

    Raises:
        BootError: ``cpu_reset_address`` is not such an address.
    """
    if address % 0x10000 or not 0 <= address < 0x100000:
        raise BootError(
            "cpu_reset_address",
            address,
            "the x86 Linux loader starts in real mode and needs a 64 KiB aligned reset "
            "address below 1 MiB (upstream's jailhouse-cell-linux requires 0)",
        )


def _check_below_4g(field: str, address: int, size: int) -> None:
    """Refuse a range the loader's identity map (the first 4 GiB) does not cover."""
    if address < 0 or address + size > _FOUR_GIB:
        raise BootError(
            field,
            address,
            f"{size:#x} bytes there reach past 4 GiB; the loader identity-maps only the "
            "first 4 GiB, and the kernel must reach this before it sets up its own tables",
        )


def _e820_table(
    ram: Sequence[tuple[int, int]], reserved: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """Return the e820 entries, sorted by address, after checking sizes and overlaps."""
    entries = [(a, s, E820_RAM) for a, s in ram] + [(a, s, E820_RESERVED) for a, s in reserved]
    entries.sort()
    if not any(kind == E820_RAM for _, _, kind in entries):
        raise BootError("ram", list(ram), "the kernel needs at least one RAM range")
    if len(entries) > _E820_MAX:
        raise BootError(
            "ram", len(entries), f"the zero page holds at most {_E820_MAX} e820 entries"
        )
    end = 0
    for address, size, kind in entries:
        name = "ram" if kind == E820_RAM else "reserved"
        if size <= 0 or address < 0:
            raise BootError(name, (address, size), "an e820 range needs a positive size")
        if address < end:
            raise BootError(
                name, (address, size), f"overlaps the range before it, which ends at {end:#x}"
            )
        end = address + size
    return entries


def _jailhouse_setup_data(
    *,
    cpus: Sequence[int],
    pm_timer_address: int,
    pci_mmconfig_base: int,
    tsc_khz: int,
    apic_khz: int,
    standard_ioapic: bool,
    uarts: int,
) -> bytes:
    """Pack the setup_data record of type SETUP_JAILHOUSE, version 2."""
    if not cpus:
        raise BootError("cpus", [], "the cell has no CPU to boot Linux on")
    if len(cpus) > _MAX_CPUS:
        raise BootError("cpus", len(cpus), f"the setup_data lists at most {_MAX_CPUS} CPUs")
    if len(set(cpus)) != len(cpus):
        raise BootError("cpus", list(cpus), "an APIC id is listed twice")
    for apic_id in cpus:
        if not 0 <= apic_id <= 0xFF:
            raise BootError("cpus", apic_id, "setup_data holds 8-bit APIC ids (0..255)")
    if not 0 <= pm_timer_address <= 0xFFFF:
        raise BootError("pm_timer_address", pm_timer_address, "an I/O port is 16 bits")
    for name, value in (("tsc_khz", tsc_khz), ("apic_khz", apic_khz)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise BootError(name, value, "the field is 32 bits")
    if not 0 <= uarts < 1 << len(PLATFORM_UARTS):
        raise BootError("uarts", uarts, "bits 0..3 name the UARTs at 0x3f8, 0x2f8, 0x3e8, 0x2e8")
    if not 0 <= pci_mmconfig_base < 1 << 64:
        raise BootError("pci_mmconfig_base", pci_mmconfig_base, "the field is 64 bits")
    body = _JAILHOUSE_V1.pack(
        _SETUP_VERSION,
        _SETUP_COMPATIBLE_VERSION,
        pm_timer_address,
        len(cpus),
        pci_mmconfig_base,
        tsc_khz,
        apic_khz,
        int(standard_ioapic),
        bytes(cpus),
    ) + _JAILHOUSE_V2_FLAGS.pack(uarts)
    return _SETUP_DATA_HEADER.pack(0, SETUP_JAILHOUSE, len(body)) + body


def build_boot_params(
    image: BzImage,
    *,
    ram: Sequence[tuple[int, int]],
    params_address: int,
    cmdline_address: int,
    cmdline: bytes,
    initrd: tuple[int, int] | None,
    cpus: Sequence[int],
    pm_timer_address: int,
    standard_ioapic: bool,
    reserved: Sequence[tuple[int, int]] = (),
    pci_mmconfig_base: int = 0,
    tsc_khz: int = 0,
    apic_khz: int = 0,
    uarts: int = 0,
    comm_region_address: int = 0,
) -> bytes:
    """Build the zero page, the Jailhouse setup_data record after it and a loader block.

    The setup header is copied from the image and patched as boot.rst asks a boot
    loader to: ``type_of_loader`` 0xff (undefined), ``loadflags`` with LOADED_HIGH and
    without CAN_USE_HEAP and KEEP_SEGMENTS (no real-mode heap, no 32-bit entry),
    ``cmd_line_ptr`` and ``ramdisk_image``/``ramdisk_size`` (their ``ext_`` high halves
    too), ``setup_data`` pointing at the record at ``params_address + 0x1000``.

    Args:
        image: The parsed kernel.
        ram: Usable RAM as (guest address, size) ranges: e820 type 1.
        params_address: Guest address the result is loaded at; 4 KiB aligned.
        cmdline_address: Guest address of the command line (loaded separately, with a
            terminating NUL).
        cmdline: The command line, without the NUL; at most ``image.cmdline_size`` bytes.
        initrd: (guest address, size) of the initrd, or None.
        cpus: APIC ids of the cell's CPUs (8-bit), for the kernel's CPU enumeration.
        pm_timer_address: I/O port of the ACPI PM timer (0 for none).
        standard_ioapic: Whether the cell has the IOAPIC at 0xfec00000, which the kernel
            then registers (with the legacy UART IRQs 3 and 4 for setup_data v1).
        reserved: Ranges to list as e820 type 2, such as the comm region.
        pci_mmconfig_base: Base of the PCI MMCONFIG window (0 for none).
        tsc_khz: TSC frequency; the kernel takes it as calibrated.
        apic_khz: Local APIC timer frequency; the kernel skips calibration with it.
        uarts: setup_data v2 flags: bit n grants the PC UART at ``PLATFORM_UARTS[n]``.
        comm_region_address: Guest address of the cell's comm region, or 0.  When set,
            :data:`X86_LOADER` fills each of ``pm_timer_address``,
            ``pci_mmconfig_base``, ``tsc_khz`` and ``apic_khz`` that is 0 here from the
            comm region, where the hypervisor put the values it runs with.

    Returns:
        :data:`PARAMS_IMAGE_SIZE` bytes: the zero page, at :data:`SETUP_DATA_OFFSET`
        the setup_data record, at :data:`LOADER_BLOCK_OFFSET` the loader block.

    Raises:
        BootError: ``cmdline`` is too long or holds a NUL; ``initrd`` is unaligned,
            empty or above ``initrd_addr_max``; an address is unaligned or not below
            4 GiB; the e820 ranges overlap or are too many; a CPU list or a field does
            not fit the setup_data.
    """
    if params_address % _PAGE:
        raise BootError("params_address", params_address, "boot_params must be 4 KiB aligned")
    _check_below_4g("params_address", params_address, BOOT_PARAMS_SIZE + SETUP_DATA_SIZE)
    if len(cmdline) > image.cmdline_size:
        raise BootError(
            "cmdline",
            cmdline.decode(errors="replace"),
            f"{len(cmdline)} bytes, but this kernel reads at most {image.cmdline_size}",
        )
    if b"\0" in cmdline:
        raise BootError("cmdline", cmdline.decode(errors="replace"), "the command line holds a NUL")
    _check_below_4g("cmdline_address", cmdline_address, len(cmdline) + 1)
    if initrd is not None:
        initrd_address, initrd_size = initrd
        if initrd_size <= 0:
            raise BootError("initrd", initrd_size, "the initrd is empty")
        if initrd_address % _PAGE:
            raise BootError("initrd.address", initrd_address, "the initrd must be 4 KiB aligned")
        last = initrd_address + initrd_size - 1
        if last > image.initrd_addr_max:
            raise BootError(
                "initrd.address",
                initrd_address,
                f"the initrd ends at {last:#x}, above this kernel's initrd_addr_max "
                f"{image.initrd_addr_max:#x}",
            )
        _check_below_4g("initrd.address", initrd_address, initrd_size)
    else:
        initrd_address = initrd_size = 0
    if comm_region_address:
        _check_below_4g("comm_region_address", comm_region_address, _COMM_REGION_SIZE)
    entries = _e820_table(ram, reserved)
    record = _jailhouse_setup_data(
        cpus=cpus,
        pm_timer_address=pm_timer_address,
        pci_mmconfig_base=pci_mmconfig_base,
        tsc_khz=tsc_khz,
        apic_khz=apic_khz,
        standard_ioapic=standard_ioapic,
        uarts=uarts,
    )

    page = bytearray(BOOT_PARAMS_SIZE)  # boot.rst: start from zeros, copy only the header
    page[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + len(image.setup_header)] = image.setup_header
    page[_OFF_TYPE_OF_LOADER] = _LOADER_UNDEFINED
    page[_OFF_LOADFLAGS] = (image.loadflags | LOADED_HIGH) & ~(CAN_USE_HEAP | KEEP_SEGMENTS)
    struct.pack_into("<I", page, _OFF_CMD_LINE_PTR, cmdline_address & 0xFFFFFFFF)
    struct.pack_into("<I", page, _OFF_EXT_CMD_LINE_PTR, cmdline_address >> 32)
    struct.pack_into("<I", page, _OFF_RAMDISK_IMAGE, initrd_address & 0xFFFFFFFF)
    struct.pack_into("<I", page, _OFF_EXT_RAMDISK_IMAGE, initrd_address >> 32)
    struct.pack_into("<I", page, _OFF_RAMDISK_SIZE, initrd_size & 0xFFFFFFFF)
    struct.pack_into("<I", page, _OFF_EXT_RAMDISK_SIZE, initrd_size >> 32)
    struct.pack_into("<Q", page, _OFF_SETUP_DATA, params_address + SETUP_DATA_OFFSET)
    page[_OFF_E820_ENTRIES] = len(entries)
    for index, entry in enumerate(entries):
        _E820_ENTRY.pack_into(page, _OFF_E820_TABLE + index * _E820_ENTRY.size, *entry)
    loader_block = bytes(LOADER_BLOCK_OFFSET - SETUP_DATA_OFFSET - len(record))
    loader_block += struct.pack("<Q", comm_region_address)
    return bytes(page) + record + loader_block


def _uart_flags(cell: CellConfig) -> int:
    """Return the setup_data v2 UART bits for the PC UARTs the cell's PIO regions grant."""
    flags = 0
    for bit, base in enumerate(PLATFORM_UARTS):
        for region in cell.pio_regions:
            if region.base <= base and base + _UART_PORTS <= region.base + region.length:
                flags |= 1 << bit
    return flags


def boot_params_for_cell(
    image: BzImage,
    cell: CellConfig,
    system: SystemConfig | None = None,
    *,
    params_address: int,
    cmdline_address: int,
    cmdline: bytes,
    initrd: tuple[int, int] | None,
    apic_ids: Sequence[int] | None = None,
    tsc_khz: int | None = None,
    apic_khz: int | None = None,
) -> bytes:
    """Build the boot parameters for a cell from its config, as upstream's tool does.

    Derived inputs: e820 RAM from the cell's RAM regions (read, write, execute and DMA;
    not IO, comm region or root-shared), the comm region as reserved (as upstream
    marks it); the CPUs' APIC ids from the cell's CPU set (Jailhouse numbers CPUs as the
    root Linux does, which on most machines is the APIC id; pass ``apic_ids`` where it
    is not); ``standard_ioapic`` when the cell has an irqchip at 0xfec00000; the UART
    flags from PIO regions covering all 8 ports of a PC UART; the PM timer, PCI
    MMCONFIG base and TSC and APIC timer frequencies from the system config.  Without a
    system config those stay 0, and :data:`X86_LOADER` copies the values the
    hypervisor put in the cell's comm region (its address goes in the loader block), as
    upstream's loader does.

    Args:
        image: The parsed kernel.
        cell: The cell config (arch x86).
        system: The system config, for the platform values.
        params_address: See :func:`build_boot_params`.
        cmdline_address: See :func:`build_boot_params`.
        cmdline: See :func:`build_boot_params`.
        initrd: See :func:`build_boot_params`.
        apic_ids: APIC ids to list instead of the CPU set's numbers.
        tsc_khz: TSC frequency instead of the system config's.
        apic_khz: APIC timer frequency instead of the system config's.

    Returns:
        The bytes to load at ``params_address``.

    Raises:
        BootError: The cell is not x86, its reset address does not suit the loader
            (:func:`check_reset_address`), or :func:`build_boot_params` refuses.
    """
    if cell.arch != Arch.X86:
        raise BootError("cell.arch", cell.arch.name, "an x86 bzImage boots in an x86 cell")
    check_reset_address(cell.cpu_reset_address)
    ram = [(r.virt_start, r.size) for r in cell.mem_regions if r.is_ram]
    reserved = [(r.virt_start, r.size) for r in cell.mem_regions if r.is_comm_region]
    comm = reserved[0][0] if reserved and reserved[0][0] + _COMM_REGION_SIZE <= _FOUR_GIB else 0
    platform = system.platform if system is not None else None
    x86 = platform.arch_info if platform is not None else None
    if not isinstance(x86, X86Platform):
        x86 = X86Platform()
    return build_boot_params(
        image,
        ram=ram,
        reserved=reserved,
        params_address=params_address,
        cmdline_address=cmdline_address,
        cmdline=cmdline,
        initrd=initrd,
        cpus=sorted(cell.cpus) if apic_ids is None else list(apic_ids),
        pm_timer_address=x86.pm_timer_address,
        standard_ioapic=any(chip.address == _STANDARD_IOAPIC for chip in cell.irqchips),
        pci_mmconfig_base=platform.pci_mmconfig_base if platform is not None else 0,
        tsc_khz=x86.tsc_khz if tsc_khz is None else tsc_khz,
        apic_khz=x86.apic_khz if apic_khz is None else apic_khz,
        uarts=_uart_flags(cell),
        comm_region_address=comm,
    )


# --- the loader stub ---------------------------------------------------------------------

X86_LOADER_SOURCE: Final = """\
# python-jailhouse x86 Linux loader stub.  GNU as, AT&T syntax; assemble with
#   as --64 -o stub.o stub.S && objcopy -O binary -j .text stub.o stub.bin
# All addresses are offsets from _start (no relocations); the stub finds its
# linear address at run time as CS * 16.
#
# Layout (offsets from the load address = the cell's cpu_reset_address):
#   0x0000  code, GDT, far pointers, claim byte, parameter block
#   0x1000  PML4            } identity map of the first 4 GiB with 2 MiB
#   0x2000  PDPT (4 used)   } pages, written at run time
#   0x3000  4 page directories (2048 entries)
#   0x7000  end
# The first page below 0x1000 is also the stack the kernel is entered with.

	.set	PML4, 0x1000
	.set	PDPT, 0x2000
	.set	PD, 0x3000
	.set	SETUP_DATA, 0x1010	# struct jailhouse_setup_data in the params image
	.set	LOADER_BLOCK, 0x1130	# u64 comm region address in the params image
	.set	CS32, 0x08
	.set	CS64, 0x10		# __BOOT_CS
	.set	DS, 0x18		# __BOOT_DS

	.text
	.code16
	.globl	_start
_start:
	cli
	cld
	mov	%cs, %ax
	mov	%ax, %ds		# real mode: labels are DS offsets
	movzwl	%ax, %ebx
	shl	$4, %ebx		# ebx = linear address of _start
	mov	$1, %al
	xchg	%al, claim - _start	# xchg with memory is atomic
	test	%al, %al
	jnz	park			# another CPU of the cell boots Linux
	addl	%ebx, gdt_desc + 2 - _start	# make the pointers linear
	addl	%ebx, far32 - _start
	addl	%ebx, far64 - _start
	lgdtl	gdt_desc - _start
	mov	%cr0, %eax
	or	$0x1, %al		# CR0.PE
	mov	%eax, %cr0
	ljmpl	*far32 - _start
park:
	cli
	hlt
	jmp	park

	.code32
start32:
	mov	$DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	lea	PDPT + 0x3(%ebx), %eax	# present, writable
	mov	%eax, PML4(%ebx)
	movl	$0, PML4 + 4(%ebx)
	lea	PDPT(%ebx), %edi
	lea	PD + 0x3(%ebx), %eax
	mov	$4, %ecx
1:	mov	%eax, (%edi)
	movl	$0, 4(%edi)
	add	$0x1000, %eax
	add	$8, %edi
	loop	1b
	lea	PD(%ebx), %edi
	mov	$0x83, %eax		# present, writable, 2 MiB page
	mov	$2048, %ecx
2:	mov	%eax, (%edi)
	movl	$0, 4(%edi)
	add	$0x200000, %eax
	add	$8, %edi
	loop	2b
	mov	%cr4, %eax
	or	$0x20, %eax		# CR4.PAE
	mov	%eax, %cr4
	lea	PML4(%ebx), %eax
	mov	%eax, %cr3
	mov	$0x2ff, %ecx		# IA32_MTRR_DEF_TYPE: enable the MTRRs
	rdmsr				# (Jailhouse resets it disabled: all uncached)
	or	$0x800, %eax
	wrmsr
	mov	$0xc0000080, %ecx	# IA32_EFER.LME
	rdmsr
	or	$0x100, %eax
	wrmsr
	mov	$0x80010033, %eax	# CR0: PG, WP, NE, ET, MP, PE; CD and NW clear
	mov	%eax, %cr0
	ljmpl	*far64 - _start(%ebx)

	.code64
start64:
	mov	%ebx, %ebx		# upper halves are undefined after the switch
	lea	0x1000(%rbx), %rsp
	mov	params - _start(%rbx), %rax	# kernel entry
	mov	params + 8 - _start(%rbx), %rsi	# boot_params
	mov	LOADER_BLOCK(%rsi), %rdx	# comm region, or 0
	test	%rdx, %rdx
	jz	boot
	cmpl	$0x4f43484a, (%rdx)	# "JHCO"
	jne	boot
	cmpw	$0x4d4d, 4(%rdx)	# "MM"
	jne	boot
	cmpw	$2, 6(%rdx)		# comm region ABI revision 2
	jne	boot
	lea	SETUP_DATA(%rsi), %rdi
	cmpw	$0, 4(%rdi)		# pm_timer_address <- comm 64
	jne	3f
	mov	64(%rdx), %cx
	mov	%cx, 4(%rdi)
3:	cmpq	$0, 8(%rdi)		# pci_mmconfig_base <- comm 56
	jne	4f
	mov	56(%rdx), %rcx
	mov	%rcx, 8(%rdi)
4:	cmpl	$0, 16(%rdi)		# tsc_khz <- comm 68
	jne	5f
	mov	68(%rdx), %ecx
	mov	%ecx, 16(%rdi)
5:	cmpl	$0, 20(%rdi)		# apic_khz <- comm 72
	jne	boot
	mov	72(%rdx), %ecx
	mov	%ecx, 20(%rdi)
boot:
	xor	%ebp, %ebp
	xor	%edi, %edi
	xor	%ebx, %ebx
	xor	%ecx, %ecx
	xor	%edx, %edx
	jmp	*%rax

	.balign	8, 0
gdt:
	.quad	0
	.quad	0x00cf9b000000ffff	# 0x08: 32-bit code, flat 4 GiB
	.quad	0x00af9b000000ffff	# 0x10: 64-bit code
	.quad	0x00cf93000000ffff	# 0x18: data, flat 4 GiB
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt - _start
far32:
	.long	start32 - _start
	.word	CS32
far64:
	.long	start64 - _start
	.word	CS64
claim:
	.byte	0
	.balign	8, 0
params:
	.quad	0			# kernel 64-bit entry address
	.quad	0			# boot_params address
	.balign	0x1000, 0
	.fill	0x6000, 1, 0		# page tables
"""
"""GNU assembler source of :data:`X86_LOADER` (x86-64 binutils; see its first lines)."""

# The stub's bytes up to the last non-zero one, as GNU as 2.40 assembles the source
# above (``tests/test_linux_x86.py`` reassembles it and compares); the rest of the
# image is zeros: the rest of the first page, then the page-table pages.
_X86_LOADER_HEAD: Final = bytes.fromhex(
    "fafc8cc88ed8660fb7d866c1e304b0018606a20184c0752266011e920166011e"
    "960166011e9c01660f011690010f20c00c010f22c066ff2e9601faf4ebfcb818"
    "0000008ed88ec08ed08ee08ee88d8303200000898300100000c7830410000000"
    "0000008dbb002000008d8303300000b9040000008907c7470400000000050010"
    "000083c708e2ed8dbb00300000b883000000b9000800008907c7470400000000"
    "050000200083c708e2ed0f20e083c8200f22e08d83001000000f22d8b9ff0200"
    "000f320d000800000f30b9800000c00f320d000100000f30b8330001800f22c0"
    "ffab9c01000089db488da300100000488b83a8010000488bb3b0010000488b96"
    "301100004885d27454813a4a48434f754c66817a044d4d754466837a0602753d"
    "488dbe1010000066837f04007508668b4a4066894f0448837f08007508488b4a"
    "3848894f08837f100075068b4a44894f10837f140075068b4a48894f1431ed31"
    "ff31db31c931d2ffe0000000000000000000000000000000ffff0000009bcf00"
    "ffff0000009baf00ffff00000093cf001f00700100003e0000000800e6000000"
    "10"
)
_X86_LOADER_SIZE: Final = 0x7000
_X86_LOADER_PARAMS: Final = 0x1A8  # the "params" label

X86_LOADER: Final = LoaderStub(
    arch=Arch.X86,
    code=_X86_LOADER_HEAD + bytes(_X86_LOADER_SIZE - len(_X86_LOADER_HEAD)),
    entry_offset=0,
    params_offset=_X86_LOADER_PARAMS,
)
"""Our x86 Linux loader: real mode at the reset address to the kernel's 64-bit entry.

Load it at ``cpu_reset_address`` (:func:`check_reset_address`); it is 28 KiB: code and
data in the first page, then the PML4, PDPT and four page directories it fills at run
time to identity-map the first 4 GiB with 2 MiB pages.  What it does, on each CPU of the
cell (Jailhouse starts them all at the reset address, in real mode):

1. ``cli; cld``; DS = CS; its linear address is CS * 16.  The first CPU to swap a 1
   into its claim byte goes on; the others ``cli; hlt`` until Linux sends them
   INIT/SIPI.
2. Makes its GDT pointer and far pointers linear, loads the GDT (0x08 flat 32-bit
   code, 0x10 64-bit code = ``__BOOT_CS``, 0x18 flat data = ``__BOOT_DS``), sets
   CR0.PE and far-jumps to 32-bit code.
3. Loads DS, ES, SS, FS, GS with 0x18; writes the page tables; sets CR4.PAE and CR3;
   enables the MTRRs (``IA32_MTRR_DEF_TYPE.E``: Jailhouse resets it off, which makes
   the guest's memory uncached) and ``IA32_EFER.LME``; writes CR0 = PG | WP | NE | ET |
   MP | PE (caching on: Jailhouse resets CR0 with CD and NW); far-jumps to 64-bit code.
4. Takes the kernel entry and the ``boot_params`` address from its parameter block,
   sets RSP to the end of its first page, and when the params image's loader block
   names a comm region that carries ``JHCOMM`` revision 2, fills each of
   ``pm_timer_address``, ``pci_mmconfig_base``, ``tsc_khz``, ``apic_khz`` in the
   setup_data record that is still 0 from it (comm region offsets 64, 56, 68, 72).
5. Clears RBP, RDI, RBX, RCX, RDX and jumps to the kernel with RSI = ``boot_params``.
"""
