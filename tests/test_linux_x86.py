"""Tests for the x86 Linux boot pieces: bzImage header, boot_params, loader stub.

The offsets the tests read back are Linux's, not ours: the setup header fields from
``Documentation/arch/x86/boot.rst`` ("THE REAL-MODE KERNEL HEADER"), the ``boot_params``
layout from ``arch/x86/include/uapi/asm/bootparam.h`` (its offset comments), and
``struct jailhouse_setup_data`` from the same header (``setup_data.h`` in newer trees).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from jailhouse.config.model import PioRegion
from jailhouse.errors import BootError
from jailhouse.examples import example_cells, example_system
from jailhouse.inmates import default_load_address
from jailhouse.linux import _x86

if TYPE_CHECKING:
    from pathlib import Path

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


# --- boot_params ---------------------------------------------------------------------
# bootparam.h offsets of struct boot_params (its /* 0x... */ comments).
EXT_RAMDISK_IMAGE = 0x0C0
EXT_RAMDISK_SIZE = 0x0C4
EXT_CMD_LINE_PTR = 0x0C8
E820_ENTRIES = 0x1E8
SENTINEL = 0x1EF
TYPE_OF_LOADER = 0x210
RAMDISK_IMAGE = 0x218
RAMDISK_SIZE = 0x21C
SETUP_DATA = 0x250
E820_TABLE = 0x2D0  # struct boot_e820_entry {u64 addr; u64 size; u32 type;} packed, 20 bytes


def u32(data: bytes, offset: int) -> int:
    """Read a little-endian u32."""
    return struct.unpack_from("<I", data, offset)[0]


def u64(data: bytes, offset: int) -> int:
    """Read a little-endian u64."""
    return struct.unpack_from("<Q", data, offset)[0]


def e820(data: bytes) -> list[tuple[int, int, int]]:
    """Read the e820 table back from a zero page."""
    return [struct.unpack_from("<QQI", data, E820_TABLE + 20 * n) for n in range(data[0x1E8])]


def jailhouse_record(data: bytes) -> dict[str, object]:
    """Unpack the setup_data record the zero page's setup_data field points at."""
    start = u64(data, SETUP_DATA) - PARAMS_AT  # the record's offset in the loaded bytes
    nxt, kind, length = struct.unpack_from("<QII", data, start)
    # struct jailhouse_setup_data: hdr{u16 version, compatible_version}, v1{u16
    # pm_timer_address, u16 num_cpus, u64 pci_mmconfig_base, u32 tsc_khz, u32 apic_khz,
    # u8 standard_ioapic, u8 cpu_ids[255]}, v2{u32 flags}; all packed.
    fields = struct.unpack_from("<HHHHQIIB255sI", data, start + 16)
    names = ("version", "compatible", "pm_timer", "num_cpus", "mmconfig", "tsc", "apic")
    record: dict[str, object] = dict(zip(names, fields[:7], strict=True))
    record.update(next=nxt, type=kind, len=length, ioapic=fields[7], flags=fields[9])
    record["cpu_ids"] = list(fields[8][: fields[3]])
    return record


PARAMS_AT = 0xF5000
CMDLINE_AT = 0xF7000
RAM = [(0, 0x100000), (0x200000, 0x4700000)]


def params(image=None, **overrides) -> bytes:
    """Build boot params for the synthetic kernel with sensible defaults."""
    arguments = {
        "ram": RAM,
        "params_address": PARAMS_AT,
        "cmdline_address": CMDLINE_AT,
        "cmdline": b"console=ttyS1 earlyprintk=ttyS1",
        "initrd": (0x3000000, 0x123456),
        "cpus": [1, 2],
        "pm_timer_address": 0x608,
        "standard_ioapic": True,
    }
    arguments.update(overrides)
    return _x86.build_boot_params(image or _x86.parse_bzimage(make_bzimage()), **arguments)


def params_error(**overrides) -> BootError:
    """Build boot params and return the one BootError they raise."""
    with pytest.raises(BootError) as info:
        params(**overrides)
    return info.value


def test_boot_params_header_fields():
    """The patched setup-header fields read back at bootparam.h's offsets."""
    data = params(reserved=[(0x100000, 0x1000)])
    assert len(data) == _x86.PARAMS_IMAGE_SIZE
    assert data[TYPE_OF_LOADER] == 0xFF
    assert data[LOADFLAGS] & 0x01  # LOADED_HIGH
    assert not data[LOADFLAGS] & 0xC0  # neither CAN_USE_HEAP nor KEEP_SEGMENTS
    assert data[SENTINEL] == 0
    assert u32(data, CMD_LINE_PTR) == CMDLINE_AT
    assert u32(data, EXT_CMD_LINE_PTR) == 0
    assert u32(data, RAMDISK_IMAGE) == 0x3000000
    assert u32(data, RAMDISK_SIZE) == 0x123456
    assert u32(data, EXT_RAMDISK_IMAGE) == u32(data, EXT_RAMDISK_SIZE) == 0
    assert u64(data, SETUP_DATA) == PARAMS_AT + 0x1000
    # The rest of the header is the kernel's own.
    assert data[HEADER : HEADER + 4] == b"HdrS"
    assert u64(data, PREF_ADDRESS) == 0x1000000
    assert u32(data, INIT_SIZE) == 0x800000
    assert u32(data, CMDLINE_SIZE) == 2047


def test_boot_params_e820():
    """RAM becomes e820 type 1 and reserved ranges type 2, in address order."""
    data = params(reserved=[(0x100000, 0x1000)])
    assert data[E820_ENTRIES] == 3
    assert e820(data) == [(0, 0x100000, 1), (0x100000, 0x1000, 2), (0x200000, 0x4700000, 1)]


def test_boot_params_setup_data():
    """The Jailhouse setup_data record is version 2, compatible 1, with our values."""
    data = params(
        cpus=[2, 5, 7], pci_mmconfig_base=0xB0000000, tsc_khz=2_000_000, apic_khz=1_000_000
    )
    record = jailhouse_record(data)
    assert record["next"] == 0
    assert record["type"] == 6  # SETUP_JAILHOUSE
    assert record["len"] == 284  # hdr 4 + v1 276 + v2 4
    assert record["version"] == 2
    assert record["compatible"] == 1  # the kernel's JAILHOUSE_SETUP_REQUIRED_VERSION
    assert record["pm_timer"] == 0x608
    assert record["num_cpus"] == 3
    assert record["cpu_ids"] == [2, 5, 7]
    assert record["mmconfig"] == 0xB0000000
    assert record["tsc"] == 2_000_000
    assert record["apic"] == 1_000_000
    assert record["ioapic"] == 1
    assert record["flags"] == 0


def test_boot_params_without_initrd():
    """Without an initrd the ramdisk fields stay 0."""
    data = params(initrd=None)
    assert u32(data, RAMDISK_IMAGE) == u32(data, RAMDISK_SIZE) == 0


def test_boot_params_loader_block():
    """The loader block after the record holds the comm region address, 0 by default."""
    offset = _x86.LOADER_BLOCK_OFFSET
    assert offset % 8 == 0
    assert offset >= 0x1000 + _x86.SETUP_DATA_SIZE
    assert u64(params(), offset) == 0
    assert u64(params(comm_region_address=0x100000), offset) == 0x100000


def test_cmdline_at_the_limit():
    """A command line of exactly cmdline_size bytes is accepted; one more is not."""
    image = _x86.parse_bzimage(make_bzimage(cmdline_size=16))
    params(image, cmdline=b"x" * 16)
    with pytest.raises(BootError) as info:
        params(image, cmdline=b"x" * 17)
    assert info.value.field == "cmdline"
    assert "at most 16" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cmdline": b"a\0b"}, "cmdline"),
        ({"initrd": (0x3000800, 0x1000)}, "initrd.address"),
        ({"initrd": (0x7FFFF000, 0x2000)}, "initrd.address"),
        ({"initrd": (0x3000000, 0)}, "initrd"),
        ({"params_address": 0xF5800}, "params_address"),
        ({"params_address": 0xFFFFF000}, "params_address"),
        ({"cmdline_address": 0x1_0000_0000}, "cmdline_address"),
        ({"ram": [(0, 0x200000), (0x100000, 0x1000)]}, "ram"),
        ({"ram": []}, "ram"),
        ({"ram": [(n * 0x1000, 0x1000) for n in range(129)]}, "ram"),
        ({"cpus": []}, "cpus"),
        ({"cpus": [1, 1]}, "cpus"),
        ({"cpus": [256]}, "cpus"),
        ({"cpus": list(range(256))}, "cpus"),
        ({"pm_timer_address": 0x10000}, "pm_timer_address"),
        ({"uarts": 0x10}, "uarts"),
        ({"comm_region_address": 0xFFFFF800}, "comm_region_address"),
    ],
)
def test_bad_boot_input_gives_one_error(overrides, field):
    """Each impossible input gives a BootError naming the field."""
    assert params_error(**overrides).field == field


def test_initrd_above_initrd_addr_max_names_the_limit():
    """An initrd ending above initrd_addr_max says where it ends and what the limit is."""
    image = _x86.parse_bzimage(make_bzimage(initrd_addr_max=0x37FFFFFF))
    with pytest.raises(BootError) as info:
        params(image, initrd=(0x37FFF000, 0x2000))
    assert "0x37ffffff" in str(info.value)
    params(image, initrd=(0x37FFE000, 0x2000))  # ends exactly at the limit


# --- boot_params from a cell config --------------------------------------------------


def linux_cell():
    """Return the x86 example Linux cell (loader RAM at 0, comm region at 1 MiB)."""
    return example_cells("x86")["x86-linux"]


def cell_params(cell=None, system=None, **overrides) -> bytes:
    """Build boot params for a cell config."""
    arguments = {
        "params_address": PARAMS_AT,
        "cmdline_address": CMDLINE_AT,
        "cmdline": b"console=ttyS1",
        "initrd": None,
    }
    arguments.update(overrides)
    image = _x86.parse_bzimage(make_bzimage())
    return _x86.boot_params_for_cell(image, cell or linux_cell(), system, **arguments)


def test_cell_params_from_the_example_cell():
    """RAM, comm region, CPUs, IOAPIC and UART come from the cell; platform from the system."""
    system = example_system("x86")
    cell = linux_cell()
    data = cell_params(cell, system)
    ram = [(r.virt_start, r.size, 1) for r in cell.mem_regions if r.is_ram]
    comm = [(r.virt_start, r.size, 2) for r in cell.mem_regions if r.is_comm_region]
    assert e820(data) == sorted(ram + comm)
    record = jailhouse_record(data)
    assert record["cpu_ids"] == sorted(cell.cpus)
    assert record["pm_timer"] == system.platform.arch_info.pm_timer_address
    assert record["mmconfig"] == system.platform.pci_mmconfig_base
    assert record["ioapic"] == 1  # the example cell has the IOAPIC at 0xfec00000
    assert record["flags"] == 0b10  # PIO 0x2f8/8 is UART 1
    assert u64(data, _x86.LOADER_BLOCK_OFFSET) == 0x100000


def test_cell_params_without_system_config():
    """Without a system config the platform values are 0, for the loader to fill in."""
    record = jailhouse_record(cell_params())
    assert record["pm_timer"] == record["mmconfig"] == record["tsc"] == record["apic"] == 0


def test_cell_params_overrides():
    """APIC ids and the timer frequencies can be given instead of derived."""
    data = cell_params(apic_ids=[4, 6], tsc_khz=3_000_000, apic_khz=25_000)
    record = jailhouse_record(data)
    assert record["cpu_ids"] == [4, 6]
    assert (record["tsc"], record["apic"]) == (3_000_000, 25_000)


def test_cell_params_uart_and_ioapic_detection():
    """A PIO range covering all of 0x3f8..0x3ff grants UART 0; a partial one does not."""
    cell = replace(linux_cell(), pio_regions=(PioRegion(0x3F0, 0x10), PioRegion(0x2E8, 4)))
    assert jailhouse_record(cell_params(cell))["flags"] == 0b1
    no_ioapic = replace(linux_cell(), irqchips=())
    assert jailhouse_record(cell_params(no_ioapic))["ioapic"] == 0


def test_cell_params_refuse_other_cells():
    """An arm64 cell, or an x86 cell whose reset address the loader cannot use, is refused."""
    arm = example_cells("arm64")["arm64-linux"]
    with pytest.raises(BootError) as info:
        cell_params(arm)
    assert info.value.field == "cell.arch"
    for address in (0x1000, 0x100000):
        with pytest.raises(BootError) as info:
            cell_params(replace(linux_cell(), cpu_reset_address=address))
        assert info.value.field == "cpu_reset_address"


# --- the loader stub -----------------------------------------------------------------

needs_binutils = pytest.mark.skipif(
    shutil.which("as") is None or shutil.which("objcopy") is None,
    reason="GNU binutils for x86-64 (as, objcopy) are not installed",
)


def assemble(source: str, directory: Path) -> bytes:
    """Assemble x86-64 GNU as source and return its .text section as raw bytes."""
    (directory / "stub.S").write_text(source)
    subprocess.run(["as", "--64", "-o", "stub.o", "stub.S"], cwd=directory, check=True)
    relocations = subprocess.run(
        ["readelf", "-r", "stub.o"], cwd=directory, check=True, capture_output=True, text=True
    ).stdout
    assert "There are no relocations" in relocations  # offsets only: runs at any base
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", "stub.o", "stub.bin"],
        cwd=directory,
        check=True,
    )
    return (directory / "stub.bin").read_bytes()


def symbols(directory: Path) -> dict[str, int]:
    """Return the symbol table of the assembled stub.o, name to value."""
    listing = subprocess.run(
        ["nm", "stub.o"], cwd=directory, check=True, capture_output=True, text=True
    ).stdout
    return {
        name: int(value, 16) for value, _, name in (line.split() for line in listing.splitlines())
    }


@needs_binutils
def test_loader_bytes_are_the_source_assembled(tmp_path):
    """The stub's committed bytes are exactly what GNU as makes of the committed source."""
    assert assemble(_x86.X86_LOADER_SOURCE, tmp_path) == _x86.X86_LOADER.code


@needs_binutils
def test_loader_layout_matches_the_module(tmp_path):
    """Entry, parameter block, page tables and params offsets agree with the module."""
    assemble(_x86.X86_LOADER_SOURCE, tmp_path)
    names = symbols(tmp_path)
    loader = _x86.X86_LOADER
    assert names["_start"] == loader.entry_offset == 0
    assert names["params"] == loader.params_offset
    assert loader.load_address is None  # goes at the cell's cpu_reset_address
    assert loader.arch.name == "X86"
    assert len(loader.code) == 0x7000
    assert names["PML4"] % 0x1000 == 0
    assert names["PD"] + 4 * 0x1000 == len(loader.code)  # 4 directories: 2048 x 2 MiB
    # The offsets the 64-bit code uses inside the params image are the module's.
    assert names["SETUP_DATA"] == _x86.SETUP_DATA_OFFSET + 16  # after struct setup_data
    assert names["LOADER_BLOCK"] == _x86.LOADER_BLOCK_OFFSET
    # boot.rst: __BOOT_CS is 0x10 and __BOOT_DS is 0x18.
    assert (names["CS64"], names["DS"]) == (0x10, 0x18)
    # Its code and data stay below its first page, which is also the kernel's stack.
    assert len(loader.code[: names["PML4"]].rstrip(b"\0")) < 0x400


def test_loader_with_params_fills_the_block():
    """with_params writes the kernel entry and boot_params address where the stub reads."""
    image = _x86.X86_LOADER.with_params(0x1000200, 0xF5000)
    offset = _x86.X86_LOADER.params_offset
    assert struct.unpack_from("<QQ", image, offset) == (0x1000200, 0xF5000)
    assert len(image) == len(_x86.X86_LOADER.code)
    assert image[:offset] == _x86.X86_LOADER.code[:offset]


def test_loader_fits_the_example_cell():
    """The stub fits at the example Linux cell's reset address, inside one 64 KiB segment."""
    cell = linux_cell()
    _x86.check_reset_address(cell.cpu_reset_address)
    assert default_load_address(cell, len(_x86.X86_LOADER.code)) == cell.cpu_reset_address


def disassemble(code: bytes, directory: Path, machine: str, start: int, stop: int) -> str:
    """Disassemble part of a flat binary with objdump, for one CPU mode."""
    (directory / "flat.bin").write_bytes(code)
    return subprocess.run(
        [
            "objdump",
            "-D",
            "-b",
            "binary",
            "-m",
            machine,
            f"--start-address={start:#x}",
            f"--stop-address={stop:#x}",
            "flat.bin",
        ],
        cwd=directory,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@needs_binutils
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump is not installed")
def test_loader_mode_switches(tmp_path):
    """objdump, in each mode's decoding, finds the steps of the switch in order."""
    assemble(_x86.X86_LOADER_SOURCE, tmp_path)
    names = symbols(tmp_path)
    code = _x86.X86_LOADER.code
    real = disassemble(code, tmp_path, "i8086", 0, names["start32"])
    protected = disassemble(code, tmp_path, "i386", names["start32"], names["start64"])
    long_mode = disassemble(code, tmp_path, "i386:x86-64", names["start64"], names["gdt"])

    def in_order(text: str, *steps: str) -> None:
        position = 0
        for step in steps:
            found = text.find(step, position)
            assert found >= 0, f"{step!r} missing or out of order in:\n{text}"
            position = found + len(step)

    in_order(
        real,
        "cli",
        "xchg   %al,",
        "lgdtl",
        "mov    %cr0,%eax",
        "or     $0x1,%al",
        "mov    %eax,%cr0",
        "ljmpl  *",
        "hlt",
    )
    in_order(
        protected,
        "mov    %eax,%ss",
        "loop",
        "loop",
        "or     $0x20,%eax",
        "mov    %eax,%cr4",
        "mov    %eax,%cr3",
        "mov    $0x2ff,%ecx",
        "wrmsr",
        "mov    $0xc0000080,%ecx",
        "or     $0x100,%eax",
        "wrmsr",
        "mov    $0x80010033,%eax",
        "mov    %eax,%cr0",
        "ljmp   *",
    )
    in_order(
        long_mode,
        "mov    %ebx,%ebx",
        f"mov    {names['params']:#x}(%rbx),%rax",
        f"mov    {names['params'] + 8:#x}(%rbx),%rsi",
        "xor    %ebp,%ebp",
        "xor    %edi,%edi",
        "xor    %ebx,%ebx",
        "jmp    *%rax",
    )
    # The GDT holds flat descriptors: 32-bit code, 64-bit code (L=1), data.
    gdt = struct.unpack_from("<4Q", code, names["gdt"])
    assert gdt == (0, 0x00CF9B000000FFFF, 0x00AF9B000000FFFF, 0x00CF93000000FFFF)
