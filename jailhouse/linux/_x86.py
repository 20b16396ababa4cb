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
3. The boot parameters, ``build_boot_params(...)`` or ``boot_params_for_cell(...)``, at
   ``params_address`` (4 KiB aligned): the zero page, then at ``params_address +
   0x1000`` the Jailhouse setup_data record (:data:`SETUP_DATA_SIZE` bytes).  Nothing
   else; the command line is a separate image.
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
from typing import Final

from jailhouse.errors import BootError

__all__ = [
    "XLF_KERNEL_64",
    "BzImage",
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
