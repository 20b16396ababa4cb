"""Tiny kernel images for the Linux-boot tests: valid headers, no kernel behind them.

Nothing here is a real kernel; each builder writes the header fields a boot loader reads
(layouts from the kernel's ``Documentation/arch/arm64/booting.rst`` and
``Documentation/arch/x86/boot.rst``) and pads the rest with a recognisable byte.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["ARM64_FLAGS_4K", "arm64_image"]

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
