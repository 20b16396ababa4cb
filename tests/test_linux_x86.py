"""Tests for the x86 Linux boot pieces: bzImage header, boot_params, loader stub.

The offsets the tests read back are Linux's, not ours: the setup header fields from
``Documentation/arch/x86/boot.rst`` ("THE REAL-MODE KERNEL HEADER"), the ``boot_params``
layout from ``arch/x86/include/uapi/asm/bootparam.h`` (its offset comments), and
``struct jailhouse_setup_data`` from the same header (``setup_data.h`` in newer trees).
"""

from __future__ import annotations

import struct

import pytest

from jailhouse.errors import BootError
from jailhouse.linux import _x86

# boot.rst offsets, written out here independently of the module's constants.
SETUP_SECTS = 0x1F1
SYSSIZE = 0x1F4
BOOT_FLAG = 0x1FE
JUMP = 0x200
HEADER = 0x202
VERSION = 0x206
LOADFLAGS = 0x211
CMD_LINE_PTR = 0x228
INITRD_ADDR_MAX = 0x22C
KERNEL_ALIGNMENT = 0x230
RELOCATABLE = 0x234
XLOADFLAGS = 0x236
CMDLINE_SIZE = 0x238
PREF_ADDRESS = 0x258
INIT_SIZE = 0x260


def make_bzimage(
    *,
    setup_sects: int = 3,
    payload: bytes = b"\x90" * 0x400,
    version: int = 0x020F,
    xloadflags: int = 0x0003,
    pref_address: int = 0x1000000,
    init_size: int = 0x800000,
    cmdline_size: int = 2047,
    initrd_addr_max: int = 0x7FFFFFFF,
    kernel_alignment: int = 0x200000,
    header_end: int = 0x26C,
) -> bytes:
    """Build a tiny bzImage: a valid setup header, ``setup_sects`` sectors, a payload."""
    sects = setup_sects or 4
    image = bytearray((sects + 1) * 512)
    image[SETUP_SECTS] = setup_sects
    struct.pack_into("<I", image, SYSSIZE, len(payload) // 16)
    struct.pack_into("<H", image, BOOT_FLAG, 0xAA55)
    image[JUMP] = 0xEB  # jmp short; its displacement gives the header's end
    image[JUMP + 1] = header_end - 0x202
    image[HEADER : HEADER + 4] = b"HdrS"
    struct.pack_into("<H", image, VERSION, version)
    image[LOADFLAGS] = 0x01
    struct.pack_into("<I", image, INITRD_ADDR_MAX, initrd_addr_max)
    struct.pack_into("<I", image, KERNEL_ALIGNMENT, kernel_alignment)
    image[RELOCATABLE] = 1
    struct.pack_into("<H", image, XLOADFLAGS, xloadflags)
    struct.pack_into("<I", image, CMDLINE_SIZE, cmdline_size)
    struct.pack_into("<Q", image, PREF_ADDRESS, pref_address)
    struct.pack_into("<I", image, INIT_SIZE, init_size)
    return bytes(image) + payload


def boot_error(data: bytes) -> BootError:
    """Parse ``data`` and return the one BootError it raises."""
    with pytest.raises(BootError) as info:
        _x86.parse_bzimage(data)
    return info.value


def test_parse_reads_the_header_fields():
    """A synthetic bzImage's header fields come back at boot.rst's offsets."""
    image = _x86.parse_bzimage(make_bzimage(setup_sects=3, payload=bytes(0x1230)))
    assert image.setup_sects == 3
    assert image.version == 0x020F
    assert image.xloadflags & _x86.XLF_KERNEL_64
    assert image.loadflags == 0x01
    assert image.pref_address == 0x1000000
    assert image.init_size == 0x800000
    assert image.kernel_alignment == 0x200000
    assert image.relocatable_kernel
    assert image.cmdline_size == 2047
    assert image.initrd_addr_max == 0x7FFFFFFF
    # boot.rst: the protected-mode code starts at (setup_sects + 1) * 512
    assert image.payload_offset == 4 * 512
    assert image.payload_size == 0x1230
    assert image.entry_64_offset == 0x200
    assert image.file_size == 4 * 512 + 0x1230
    # The raw header runs from 0x1f1 to 0x202 + the byte at 0x201.
    assert len(image.setup_header) == 0x26C - 0x1F1
    assert image.setup_header[HEADER - 0x1F1 :][:4] == b"HdrS"
    assert "2.15" in str(image)


def test_zero_setup_sects_means_four():
    """boot.rst: a setup_sects of 0 is read as 4, so the payload starts at 5 * 512."""
    image = _x86.parse_bzimage(make_bzimage(setup_sects=0))
    assert image.setup_sects == 4
    assert image.payload_offset == 5 * 512


def test_looks_like_bzimage():
    """The quick test accepts a bzImage and refuses an arm64 Image and short data."""
    assert _x86.looks_like_bzimage(make_bzimage())
    arm64 = bytearray(0x1000)
    arm64[0x38:0x3C] = b"ARM\x64"
    assert not _x86.looks_like_bzimage(bytes(arm64))
    assert not _x86.looks_like_bzimage(b"HdrS")


def test_arm64_image_is_named():
    """An arm64 Image given as an x86 kernel is called one in the error."""
    arm64 = bytearray(0x1000)
    arm64[0x38:0x3C] = b"ARM\x64"
    error = boot_error(bytes(arm64))
    assert error.field == "kernel.magic"
    assert "arm64 Image" in str(error)


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ((HEADER, b"Hdrs"), "kernel.magic", "HdrS"),
        ((BOOT_FLAG, b"\x55\xab"), "kernel.boot_flag", "0xaa55"),
        ((VERSION, struct.pack("<H", 0x020B)), "kernel.version", "2.12"),
        ((XLOADFLAGS, struct.pack("<H", 0x0002)), "kernel.xloadflags", "XLF_KERNEL_64"),
        ((SYSSIZE, struct.pack("<I", 0)), "kernel.syssize", "empty"),
        ((KERNEL_ALIGNMENT, struct.pack("<I", 0x300000)), "kernel.kernel_alignment", "power"),
        ((JUMP + 1, bytes((0x20,))), "kernel.header", "0x264"),
    ],
)
def test_bad_header_gives_one_error(patch, field, words):
    """Each broken header field gives a BootError naming that field and saying why."""
    offset, value = patch
    data = bytearray(make_bzimage())
    data[offset : offset + len(value)] = value
    error = boot_error(bytes(data))
    assert error.field == field
    assert words in str(error)


def test_old_protocol_value_is_shown_as_version():
    """A 2.11 kernel's error shows the version as 2.11, not as a number."""
    data = bytearray(make_bzimage())
    struct.pack_into("<H", data, VERSION, 0x020B)
    assert boot_error(bytes(data)).value == "2.11"


def test_truncated_payload():
    """A file shorter than setup_sects and syssize say is refused as truncated."""
    data = make_bzimage(payload=bytes(0x1000))
    error = boot_error(data[:-1])
    assert error.field == "kernel.size"
    assert error.value == len(data) - 1
    assert "truncated" in str(error)


def test_truncated_header():
    """A file that ends inside the setup header is refused with its size."""
    data = make_bzimage()
    assert boot_error(data[:0x200]).field == "kernel.size"
    assert boot_error(data[:0x250]).field == "kernel.size"


def test_empty_file():
    """An empty file is refused, not an IndexError."""
    assert boot_error(b"").field == "kernel.size"
