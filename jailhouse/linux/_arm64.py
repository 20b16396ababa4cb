r"""The arm64 ``Image``: its 64-byte header, and our loader stub that enters it.

Facts from the kernel's ``Documentation/arch/arm64/booting.rst``: an uncompressed arm64
kernel starts with a 64-byte header, every field little-endian::

    0x00  u32 code0        executable code (a branch over the header)
    0x04  u32 code1
    0x08  u64 text_offset  image load offset from a 2 MiB aligned base
    0x10  u64 image_size   bytes the kernel uses from its start, BSS included
    0x18  u64 flags        bit 0: big-endian kernel; bits 1-2: page size
                           (0 unspecified, 1 4K, 2 16K, 3 64K); bit 3: the base may
                           be anywhere in RAM (0: as close to the start of RAM as possible)
    0x20  u64 res2, res3, res4
    0x38  u32 magic        "ARM\x64"
    0x3c  u32 res5         offset of the PE header (EFI stub), or 0

Before Linux 3.17 ``image_size`` is 0 and ``text_offset`` is 0x80000 whatever the
field says.  The kernel is entered at its first byte with the MMU off, interrupts
masked, ``x0`` = the device tree's address and ``x1`` .. ``x3`` = 0.

A Jailhouse cell's CPU comes out of reset at the cell's ``cpu_reset_address`` with the
MMU off and no argument in ``x0``, so :data:`ARM64_LOADER`, loaded there, sets the
registers up and branches to the kernel.  :data:`ARM64_LOADER_SOURCE` is its assembly
(GNU as); the bytes in :data:`ARM64_LOADER` are what ``aarch64-linux-gnu-as`` makes of
it, which ``tests/test_linux_arm64.py`` checks by assembling it again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from jailhouse.config.flags import Arch
from jailhouse.errors import BootError
from jailhouse.linux._loader import LoaderStub

__all__ = [
    "ARM64_LOADER",
    "ARM64_LOADER_SOURCE",
    "ARM64_MAGIC",
    "Arm64Image",
    "is_arm64_image",
    "parse_arm64_image",
]

ARM64_MAGIC: Final = b"ARM\x64"
"""The header's magic, at offset 0x38."""
HEADER_SIZE: Final = 64
_MAGIC_OFFSET: Final = 0x38
_HEADER: Final = struct.Struct("<IIQQQQQQ4sI")
_LEGACY_TEXT_OFFSET: Final = 0x80000
"""``text_offset`` of kernels before 3.17, whose header leaves ``image_size`` 0."""
_FLAG_BE: Final = 1 << 0
_FLAG_PAGE_SHIFT: Final = 1
_FLAG_PAGE_MASK: Final = 0b11 << _FLAG_PAGE_SHIFT
_FLAG_PHYS_ANYWHERE: Final = 1 << 3
_PAGE_SIZES: Final = {0: None, 1: 0x1000, 2: 0x4000, 3: 0x10000}
KERNEL_ALIGN: Final = 0x200000
"""The kernel's base (its start minus ``text_offset``) is 2 MiB aligned."""


@dataclass(frozen=True, slots=True)
class Arm64Image:
    """What an arm64 ``Image`` header says.

    Attributes:
        data: The whole image.
        text_offset: Where the image goes above a 2 MiB aligned base.
        image_size: Bytes the kernel uses from its start, BSS included (for a pre-3.17
            header, which gives none, the file size).
        page_size: The kernel's page size in bytes, ``None`` when unspecified.
        phys_anywhere: The base may be anywhere in RAM (flags bit 3); otherwise it should
            be as low in RAM as possible.
    """

    data: bytes
    text_offset: int
    image_size: int
    page_size: int | None
    phys_anywhere: bool

    arch = Arch.ARM64
    """The architecture the kernel runs on."""
    format = "arm64 Image"
    """The image format, for messages."""

    def __str__(self) -> str:
        """Summarise as ``arm64 Image, 18 MiB (text_offset 0x0, 4K pages)``."""
        pages = f"{self.page_size // 1024}K pages" if self.page_size else "page size unspecified"
        return (
            f"arm64 Image, {len(self.data)} bytes, image_size {self.image_size:#x} "
            f"(text_offset {self.text_offset:#x}, {pages})"
        )


def is_arm64_image(data: bytes) -> bool:
    """Tell whether ``data`` carries the arm64 ``Image`` magic at 0x38."""
    return data[_MAGIC_OFFSET : _MAGIC_OFFSET + len(ARM64_MAGIC)] == ARM64_MAGIC


def parse_arm64_image(data: bytes) -> Arm64Image:
    r"""Read an arm64 ``Image`` header.

    Args:
        data: The kernel image.

    Raises:
        BootError: ``kernel.size``: shorter than the header; ``kernel.magic``: not
            ``ARM\x64`` at 0x38; ``kernel.flags``: a big-endian kernel (the loader
            and the cell's reset state are little-endian); ``kernel.image_size``:
            smaller than the file.
    """
    if len(data) < HEADER_SIZE:
        raise BootError(
            "kernel.size",
            len(data),
            f"an arm64 Image starts with a {HEADER_SIZE}-byte header; this is a truncated file",
        )
    (_code0, _code1, text_offset, image_size, flags, *_res, magic, _res5) = _HEADER.unpack_from(
        data
    )
    if magic != ARM64_MAGIC:
        raise BootError(
            "kernel.magic",
            magic,
            f"an arm64 Image has {ARM64_MAGIC!r} at offset 0x38; this is no arm64 kernel Image",
        )
    if flags & _FLAG_BE:
        raise BootError(
            "kernel.flags",
            flags,
            "bit 0 says the kernel is big-endian; the cell starts little-endian, so build "
            "the kernel with CONFIG_CPU_LITTLE_ENDIAN",
        )
    if image_size == 0:  # a pre-3.17 header: the offset is fixed and the size unknown
        text_offset, image_size = _LEGACY_TEXT_OFFSET, len(data)
    elif image_size < len(data):
        raise BootError(
            "kernel.image_size",
            image_size,
            f"the header says the kernel uses fewer bytes than the file's {len(data):#x}; "
            "the header is corrupt",
        )
    if text_offset % 0x1000:
        raise BootError(
            "kernel.text_offset",
            text_offset,
            "is not page aligned; the header is corrupt",
        )
    return Arm64Image(
        data=data,
        text_offset=text_offset,
        image_size=image_size,
        page_size=_PAGE_SIZES[(flags & _FLAG_PAGE_MASK) >> _FLAG_PAGE_SHIFT],
        phys_anywhere=bool(flags & _FLAG_PHYS_ANYWHERE),
    )


ARM64_LOADER_SOURCE: Final = """\
	.text
	.global	_start
_start:
	msr	daifset, #0xf		// mask D, A, I and F, as the boot protocol asks
	ldr	x4, kernel_entry	// PC-relative loads from the parameter block
	ldr	x0, boot_arg		// x0 = the device tree's address
	mov	x1, xzr			// x1 .. x3 are reserved and must be 0
	mov	x2, xzr
	mov	x3, xzr
	br	x4			// enter the kernel at its first byte
	.balign	8
kernel_entry:
	.quad	0
boot_arg:
	.quad	0
"""
"""The arm64 loader stub's assembly (GNU as syntax), ours under the project's licence."""

ARM64_LOADER: Final = LoaderStub(
    arch=Arch.ARM64,
    code=bytes.fromhex(
        "df4f03d5"  # msr daifset, #0xf
        "e4000058"  # ldr x4, kernel_entry (pc + 0x1c)
        "00010058"  # ldr x0, boot_arg (pc + 0x20)
        "e1031faa"  # mov x1, xzr
        "e2031faa"  # mov x2, xzr
        "e3031faa"  # mov x3, xzr
        "80001fd6"  # br x4
        "1f2003d5"  # nop (.balign 8)
    )
    + bytes(16),  # kernel_entry, boot_arg
    entry_offset=0,
    params_offset=0x20,
)
"""The arm64 loader stub: 48 bytes, entered at its first byte, loaded at ``cpu_reset_address``."""
