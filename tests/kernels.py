"""Tiny kernel images for the Linux-boot tests: valid headers, no kernel behind them.

Nothing here is a real kernel; each builder writes the header fields a boot loader reads
(layouts from the kernel's ``Documentation/arch/arm64/booting.rst`` and
``Documentation/arch/x86/boot.rst``) and pads the rest with a recognisable byte.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["ARM64_FLAGS_4K", "arm64_image", "bzimage"]

ARM64_FLAGS_4K: Final = 0b1010
"""arm64 header flags: little-endian, 4K pages (bits 1-2 = 1), placement anywhere (bit 3)."""


def arm64_image(
    size: int = 0x20000,
    *,
    text_offset: int = 0,
    image_size: int | None = None,
    flags: int = ARM64_FLAGS_4K,
    magic: bytes = b"ARM\x64",
) -> bytes:
    """Build an arm64 ``Image`` of ``size`` bytes with a valid 64-byte header.

    Args:
        size: File size.
        text_offset: The header's ``text_offset``.
        image_size: The header's ``image_size``; by default the file size plus 64 KiB
            of BSS.
        flags: The header's flags.
        magic: The magic at 0x38.
    """
    header = struct.pack(
        "<IIQQQQQQ4sI",
        0x14000010,  # b +0x40: branch over the header, as code0 of a real Image
        0,
        text_offset,
        size + 0x10000 if image_size is None else image_size,
        flags,
        0,
        0,
        0,
        magic,
        0,
    )
    return header + b"\xa5" * (size - len(header))


def bzimage(
    payload_size: int = 0x4000,
    *,
    setup_sects: int = 1,
    pref_address: int = 0x1000000,
    init_size: int = 0x400000,
    kernel_alignment: int = 0x200000,
    relocatable: bool = True,
    cmdline_size: int = 2047,
    initrd_addr_max: int = 0x7FFFFFFF,
    xloadflags: int = 0b11,
) -> bytes:
    """Build an x86 bzImage: boot sector, a protocol 2.15 setup header, setup sectors, payload.

    Offsets from boot.rst's "THE REAL-MODE KERNEL HEADER"; the payload is ``0x90`` bytes.
    """
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    struct.pack_into("<I", image, 0x1F4, payload_size // 16)  # syssize
    struct.pack_into("<H", image, 0x1FE, 0xAA55)  # boot_flag
    image[0x200:0x202] = bytes([0xEB, 0x26C - 0x202])  # jmp over the header to 0x26c
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x020F)  # version 2.15
    image[0x211] = 0x01  # loadflags: LOADED_HIGH
    struct.pack_into("<I", image, 0x22C, initrd_addr_max)
    struct.pack_into("<I", image, 0x230, kernel_alignment)
    image[0x234] = int(relocatable)
    struct.pack_into("<H", image, 0x236, xloadflags)
    struct.pack_into("<I", image, 0x238, cmdline_size)
    struct.pack_into("<Q", image, 0x258, pref_address)
    struct.pack_into("<I", image, 0x260, init_size)
    return bytes(image) + b"\x90" * payload_size
