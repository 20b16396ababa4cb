r"""Tell kernel image formats apart, and parse the one the cell's architecture boots.

The formats recognised, each by its magic:

- arm64 ``Image``: ``ARM\x64`` at 0x38 (booted on arm64 cells);
- x86 ``bzImage``: ``HdrS`` at 0x202 behind the boot sector's 0xAA55 (booted on x86 cells);
- a few that cannot boot as they are, named in the error so the user knows what to give
  instead: a 32-bit ARM ``zImage``, an ELF ``vmlinux``, a gzip file (``Image.gz``), an
  EFI zboot image (``vmlinuz.efi``) and a U-Boot ``uImage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from jailhouse.config.flags import Arch
from jailhouse.errors import BootError
from jailhouse.linux._arm64 import is_arm64_image, parse_arm64_image
from jailhouse.linux._x86 import BzImage, parse_bzimage

if TYPE_CHECKING:
    from jailhouse.linux._arm64 import Arm64Image

__all__ = ["KernelImage", "X86Kernel", "detect_format", "parse_kernel"]

ARM64_IMAGE: Final = "arm64 Image"
X86_BZIMAGE: Final = "x86 bzImage"
_BZIMAGE_MAGIC: Final = (0x202, b"HdrS")
_BOOT_FLAG: Final = (0x1FE, b"\x55\xaa")
_ZIMAGE_MAGIC: Final = (0x24, (0x016F2818).to_bytes(4, "little"))
_FORMAT_ARCH: Final = {ARM64_IMAGE: Arch.ARM64, X86_BZIMAGE: Arch.X86}
_WANTED: Final = {Arch.ARM64: "an arm64 Image", Arch.X86: "an x86 bzImage"}
_UNBOOTABLE: Final = (
    (0, b"\x7fELF", "an ELF vmlinux; give the boot image (arm64: Image, x86: bzImage)"),
    (0, b"\x1f\x8b", "gzip-compressed (Image.gz?); decompress it first (gunzip)"),
    (0, b"\x27\x05\x19\x56", "a U-Boot uImage; give the plain Image inside it"),
)


class KernelImage(Protocol):
    """What every parsed kernel image offers (see :class:`~jailhouse.linux.Arm64Image`)."""

    @property
    def data(self) -> bytes:
        """The whole image."""
        ...

    @property
    def arch(self) -> Arch:
        """The architecture the kernel runs on."""
        ...

    @property
    def format(self) -> str:
        """The format's name, such as ``arm64 Image``."""
        ...


@dataclass(frozen=True, slots=True)
class X86Kernel:
    """An x86 bzImage and its setup header.

    Attributes:
        data: The whole file.
        header: What its setup header says (:func:`~jailhouse.linux._x86.parse_bzimage`).
    """

    data: bytes
    header: BzImage

    arch = Arch.X86
    """The architecture the kernel runs on."""
    format = X86_BZIMAGE
    """The image format, for messages."""

    def __str__(self) -> str:
        """Summarise the setup header."""
        return str(self.header)


def _has(data: bytes, where: tuple[int, bytes]) -> bool:
    offset, magic = where
    return data[offset : offset + len(magic)] == magic


def detect_format(data: bytes) -> str:
    """Name a kernel image's format by its magic.

    Returns:
        ``"arm64 Image"`` or ``"x86 bzImage"``.

    Raises:
        BootError: ``kernel.magic``: neither; the message names the format when it is a
            known one that cannot boot as it is (gzip, ELF, 32-bit ARM zImage ...).
    """
    if is_arm64_image(data):
        return ARM64_IMAGE
    if _has(data, _BZIMAGE_MAGIC) and _has(data, _BOOT_FLAG):
        return X86_BZIMAGE
    if _has(data, _ZIMAGE_MAGIC):
        raise BootError(
            "kernel.magic",
            data[0x24:0x28],
            "a 32-bit ARM zImage; booting Linux is supported in arm64 and x86 cells",
        )
    if data[:2] == b"MZ" and data[4:8] == b"zimg":
        raise BootError(
            "kernel.magic",
            data[4:8],
            "an EFI zboot image (compressed, started by UEFI firmware); give the plain "
            "arm64 Image (arch/arm64/boot/Image)",
        )
    for offset, magic, what in _UNBOOTABLE:
        if data[offset : offset + len(magic)] == magic:
            raise BootError("kernel.magic", magic, what)
    if len(data) < 0x40:
        raise BootError(
            "kernel.size",
            len(data),
            "too short for any kernel header (arm64 Image: 64 bytes, bzImage: 1 KiB); "
            "a truncated file?",
        )
    raise BootError(
        "kernel.magic",
        data[0x38:0x3C],
        "not a kernel image: no arm64 Image magic 'ARM\\x64' at 0x38 and no bzImage magic "
        "'HdrS' at 0x202",
    )


def parse_kernel(data: bytes, arch: Arch, *, cell: str = "") -> KernelImage:
    """Parse a kernel image for a cell of ``arch``.

    Args:
        data: The kernel image.
        arch: The cell's architecture.
        cell: The cell's name, for messages.

    Raises:
        BootError: ``kernel.magic``: not a kernel image, or ``kernel.arch``: one for
            another architecture; or what the format's parser raises (truncated header,
            unsupported flags ...).
    """
    whose = f"cell {cell!r}" if cell else "the cell"
    if arch not in _WANTED:
        raise BootError(
            "arch", arch.name, f"{whose}: Linux boots in arm64 and x86 cells, not {arch.name}"
        )
    fmt = detect_format(data)
    if _FORMAT_ARCH[fmt] != arch:
        raise BootError("kernel.arch", fmt, f"{whose} is {arch.name}; give {_WANTED[arch]}")
    if fmt == ARM64_IMAGE:
        image: Arm64Image = parse_arm64_image(data)
        return image
    return X86Kernel(data, parse_bzimage(data))
