"""Tests of the arm64 ``Image`` header parser and of our arm64 loader stub."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
from kernels import arm64_image

from jailhouse.config.flags import Arch
from jailhouse.errors import BootError
from jailhouse.linux import ARM64_LOADER, ARM64_LOADER_SOURCE, detect_format, parse_arm64_image

if TYPE_CHECKING:
    from pathlib import Path


def test_header_fields_are_read() -> None:
    """text_offset, image_size, page size and placement come from the header."""
    image = parse_arm64_image(
        arm64_image(0x3000, text_offset=0x80000, image_size=0x9000, flags=0b0100)
    )
    assert (image.text_offset, image.image_size) == (0x80000, 0x9000)
    assert image.page_size == 0x4000  # bits 1-2 = 2: 16K pages
    assert not image.phys_anywhere
    assert image.arch == Arch.ARM64
    assert parse_arm64_image(arm64_image(0x1000, flags=0b1000)).page_size is None


def test_pre_317_header_has_the_fixed_text_offset() -> None:
    """image_size 0 means a pre-3.17 kernel: text_offset is 0x80000, the size the file's."""
    image = parse_arm64_image(arm64_image(0x2000, text_offset=0x1234000, image_size=0))
    assert (image.text_offset, image.image_size) == (0x80000, 0x2000)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param(arm64_image(0x1000)[:63], "kernel.size", id="truncated"),
        pytest.param(arm64_image(0x1000, magic=b"ARM\x65"), "kernel.magic", id="magic"),
        pytest.param(arm64_image(0x1000, flags=0b1011), "kernel.flags", id="big-endian"),
        pytest.param(arm64_image(0x2000, image_size=0x1000), "kernel.image_size", id="size"),
        pytest.param(arm64_image(0x1000, text_offset=0x80), "kernel.text_offset", id="offset"),
    ],
)
def test_bad_headers_name_the_field(data: bytes, field: str) -> None:
    """Each bad header is one BootError naming the field it found wrong."""
    with pytest.raises(BootError) as info:
        parse_arm64_image(data)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param(b"\x1f\x8b\x08" + bytes(100), "gzip", id="gzip"),
        pytest.param(b"\x7fELF" + bytes(100), "ELF", id="elf"),
        pytest.param(b"MZ\0\0zimg" + bytes(100), "zboot", id="zboot"),
        pytest.param(bytes(0x24) + (0x016F2818).to_bytes(4, "little") + bytes(64), "zImage"),
        pytest.param(bytes(0x1000), "not a kernel image", id="zeros"),
    ],
)
def test_formats_that_cannot_boot_are_named(data: bytes, words: str) -> None:
    """A known format that does not boot as it is gets an error saying what it is."""
    with pytest.raises(BootError, match=words) as info:
        detect_format(data)
    assert info.value.field == "kernel.magic"


def test_stub_shape() -> None:
    """The stub is 48 bytes, entered at its start, with the parameter block at 0x20."""
    assert len(ARM64_LOADER.code) == 48
    assert (ARM64_LOADER.entry_offset, ARM64_LOADER.params_offset) == (0, 0x20)
    assert ARM64_LOADER.load_address is None
    assert ARM64_LOADER.code[0x20:] == bytes(16)


def _words(code: bytes) -> list[int]:
    return [int.from_bytes(code[i : i + 4], "little") for i in range(0, len(code), 4)]


def test_stub_loads_its_parameters_pc_relative() -> None:
    """Decoded by the A64 encoding, the stub loads x4 and x0 from its block, zeroes x1-x3, br x4."""
    words = _words(ARM64_LOADER.code[:0x20])
    targets = {}
    for index, word in enumerate(words):
        if word >> 24 == 0x58:  # LDR (literal), 64-bit: imm19 << 2 from this instruction
            imm19 = (word >> 5) & 0x7FFFF
            targets[word & 0x1F] = index * 4 + imm19 * 4
    assert targets == {4: 0x20, 0: 0x28}  # x4 = kernel entry, x0 = boot argument
    for reg in (1, 2, 3):  # ORR Xd, XZR, XZR (mov Xd, xzr)
        assert 0xAA1F03E0 | reg in words
    assert 0xD61F0000 | (4 << 5) in words  # BR x4
    assert words.index(0xD61F0080) > max(words.index(0xAA1F03E0 | r) for r in (1, 2, 3))


def test_with_params_fills_the_block_little_endian() -> None:
    """with_params writes the kernel entry then the boot argument as LE u64."""
    code = ARM64_LOADER.with_params(0x7020_0000, 0x7123_4568)
    assert code[:0x20] == ARM64_LOADER.code[:0x20]
    assert code[0x20:0x28] == (0x7020_0000).to_bytes(8, "little")
    assert code[0x28:0x30] == (0x7123_4568).to_bytes(8, "little")


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-as") is None, reason="no aarch64 binutils")
def test_stub_bytes_are_what_the_source_assembles_to(tmp_path: Path) -> None:
    """aarch64-linux-gnu-as turns ARM64_LOADER_SOURCE into exactly the committed bytes."""
    source = tmp_path / "loader.S"
    source.write_text(ARM64_LOADER_SOURCE)
    obj, binary = tmp_path / "loader.o", tmp_path / "loader.bin"
    subprocess.run(["aarch64-linux-gnu-as", "-o", str(obj), str(source)], check=True)
    objcopy = shutil.which("aarch64-linux-gnu-objcopy") or "objcopy"
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    assert binary.read_bytes() == ARM64_LOADER.code
