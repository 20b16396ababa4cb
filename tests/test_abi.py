"""Known-answer and round-trip tests of the compiled ioctl shim and jailhouse._abi."""

from __future__ import annotations

import ast
import errno
import gc
import os
from pathlib import Path

import pytest

import jailhouse
from jailhouse import _abi
from jailhouse._ffi import ffi, lib

# ABI fact sheet, section 1: request numbers, identical on x86-64 and arm64.
KNOWN_REQUESTS = [
    ("ENABLE", 0x40080000, 0, 8),
    ("DISABLE", 0x00000001, 1, 0),
    ("CELL_CREATE", 0x40100002, 2, 16),
    ("CELL_LOAD", 0x40300003, 3, 48),
    ("CELL_START", 0x40280004, 4, 40),
    ("CELL_DESTROY", 0x40280005, 5, 40),
]

# ABI fact sheet, sections 1 and 3: struct sizes.
KNOWN_SIZES = [
    ("struct jailhouse_cell_create", 16),
    ("struct jailhouse_cell_id", 40),
    ("struct jailhouse_cell_load", 48),
    ("struct jailhouse_preload_image", 32),
    ("struct jailhouse_cell_desc", 132),
    ("struct jailhouse_system", 488),
    ("struct jailhouse_console", 32),
    ("struct jailhouse_memory", 32),
    ("struct jailhouse_cache", 12),
    ("struct jailhouse_irqchip", 32),
    ("struct jailhouse_pio", 4),
    ("struct jailhouse_pci_device", 56),
    ("struct jailhouse_pci_capability", 8),
    ("struct jailhouse_iommu", 28),
    ("union jailhouse_stream_id", 4),
]

# ABI fact sheet, sections 1 and 3: field offsets.
KNOWN_OFFSETS = [
    ("struct jailhouse_cell_create", ("config_size",), 8),
    ("struct jailhouse_cell_id", ("name",), 8),
    ("struct jailhouse_cell_load", ("num_preload_images",), 40),
    ("struct jailhouse_cell_load", ("image",), 48),
    ("struct jailhouse_preload_image", ("target_address",), 16),
    ("struct jailhouse_cell_desc", ("architecture",), 5),
    ("struct jailhouse_cell_desc", ("revision",), 6),
    ("struct jailhouse_cell_desc", ("name",), 8),
    ("struct jailhouse_cell_desc", ("id",), 40),
    ("struct jailhouse_cell_desc", ("cpu_set_size",), 48),
    ("struct jailhouse_cell_desc", ("num_stream_ids",), 76),
    ("struct jailhouse_cell_desc", ("vpci_irq_base",), 80),
    ("struct jailhouse_cell_desc", ("cpu_reset_address",), 84),
    ("struct jailhouse_cell_desc", ("msg_reply_timeout",), 92),
    ("struct jailhouse_cell_desc", ("console",), 100),
    ("struct jailhouse_console", ("type",), 12),
    ("struct jailhouse_console", ("clock_reg",), 24),
    ("struct jailhouse_cache", ("flags",), 10),
    ("struct jailhouse_irqchip", ("pin_bitmap",), 16),
    ("struct jailhouse_pci_device", ("bar_mask",), 6),
    ("struct jailhouse_pci_device", ("caps_start",), 30),
    ("struct jailhouse_pci_device", ("msi_flags",), 35),
    ("struct jailhouse_pci_device", ("msix_address",), 40),
    ("struct jailhouse_pci_device", ("shmem_protocol",), 54),
    ("struct jailhouse_pci_capability", ("flags",), 6),
    ("struct jailhouse_iommu", ("base",), 4),
    ("struct jailhouse_iommu", ("amd",), 16),
    ("struct jailhouse_iommu", ("amd", "features"), 20),
    ("struct jailhouse_iommu", ("tipvu", "tlb_size"), 24),
    ("struct jailhouse_system", ("flags",), 8),
    ("struct jailhouse_system", ("hypervisor_memory",), 12),
    ("struct jailhouse_system", ("debug_console",), 44),
    ("struct jailhouse_system", ("platform_info",), 76),
    ("struct jailhouse_system", ("platform_info", "pci_domain"), 86),
    ("struct jailhouse_system", ("platform_info", "iommu_units"), 88),
    ("struct jailhouse_system", ("platform_info", "x86"), 312),
    ("struct jailhouse_system", ("platform_info", "x86", "vtd_interrupt_limit"), 316),
    ("struct jailhouse_system", ("platform_info", "x86", "apic_khz"), 324),
    ("struct jailhouse_system", ("platform_info", "arm"), 312),
    ("struct jailhouse_system", ("platform_info", "arm", "gicd_base"), 316),
    ("struct jailhouse_system", ("platform_info", "arm", "gicr_base"), 348),
    ("struct jailhouse_system", ("root_cell",), 356),
]


@pytest.mark.parametrize(("name", "request_number", "nr", "size"), KNOWN_REQUESTS)
def test_request_numbers(name, request_number, nr, size):
    """Each request constant equals the fact sheet's number and decodes to its nr and size."""
    value = getattr(_abi, name)
    assert value == request_number
    assert getattr(lib, f"JAILHOUSE_{name}") == request_number
    assert _abi.request_type(value) == 0
    assert _abi.request_nr(value) == nr
    assert _abi.request_size(value) == size
    expected_dir = _abi.IOC_NONE if name == "DISABLE" else _abi.IOC_WRITE
    assert _abi.request_dir(value) == expected_dir


def test_request_names_cover_every_request():
    """REQUEST_NAMES maps each of the six request numbers to its operation."""
    assert sorted(_abi.REQUEST_NAMES) == sorted(number for _, number, _, _ in KNOWN_REQUESTS)
    assert _abi.REQUEST_NAMES[_abi.CELL_CREATE] == "cell create"


def test_request_decoders_reject_non_u32():
    """A request number outside 32 bits is refused with ValueError naming it."""
    with pytest.raises(ValueError, match="request: -0x1"):
        _abi.request_size(-1)
    with pytest.raises(ValueError, match="0x100000000"):
        _abi.request_nr(1 << 32)


def test_cell_id_constants():
    """NAMELEN is 31 and the unused id is -1, as the driver header defines them."""
    assert _abi.NAMELEN == 31
    assert _abi.CELL_ID_UNUSED == -1
    assert ffi.sizeof(ffi.typeof("struct jailhouse_cell_id").fields[2][1].type) == 32


def test_config_constants():
    """The config-format constants match the fact sheet (revision 14, arch values, signatures)."""
    assert lib.JAILHOUSE_CONFIG_REVISION == 14
    assert (lib.JAILHOUSE_X86, lib.JAILHOUSE_ARM, lib.JAILHOUSE_ARM64) == (0, 1, 2)
    assert ffi.string(lib.JAILHOUSE_CELL_DESC_SIGNATURE) == b"JHCLL"
    assert ffi.string(lib.JAILHOUSE_SYSTEM_SIGNATURE) == b"JHSYS"
    assert lib.JAILHOUSE_SIGNATURE_LEN == 5
    assert lib.JAILHOUSE_CELL_NAME_MAXLEN == 31
    assert lib.JAILHOUSE_MAX_IOMMU_UNITS == 8


@pytest.mark.parametrize(("cdecl", "size"), KNOWN_SIZES)
def test_struct_sizes(cdecl, size):
    """Each struct has the size the fact sheet states, as laid out by the compiler."""
    assert ffi.sizeof(cdecl) == size


@pytest.mark.parametrize(("cdecl", "fields", "offset"), KNOWN_OFFSETS)
def test_struct_offsets(cdecl, fields, offset):
    """Each listed field sits at the offset the fact sheet states."""
    assert ffi.offsetof(cdecl, *fields) == offset


@pytest.mark.parametrize(("cdecl", "_size"), KNOWN_SIZES[4:])
def test_config_structs_are_packed(cdecl, _size):
    """The config-format structs have alignment 1, as __attribute__((packed)) gives."""
    assert ffi.alignof(cdecl) == 1


def test_ioctl_structs_are_naturally_aligned():
    """The ioctl structs keep natural alignment, unlike the packed config structs."""
    assert ffi.alignof("struct jailhouse_cell_create") == 8
    assert ffi.alignof("struct jailhouse_cell_id") == 4
    assert ffi.alignof("struct jailhouse_cell_load") == 8


def test_pci_msi_flag_bits():
    """The MSI bitfield byte's bits are msi_64bits (0x1) and msi_maskable (0x2)."""
    assert lib.JAILHOUSE_PCI_MSI_64BITS == 0x1
    assert lib.JAILHOUSE_PCI_MSI_MASKABLE == 0x2


def test_cell_config_size_known_answer():
    """A header with an 8-byte CPU set and two memory regions describes 204 bytes."""
    desc = ffi.new("struct jailhouse_cell_desc *")
    desc.cpu_set_size = 8
    desc.num_memory_regions = 2
    # ABI sheet: 132-byte header + 8-byte cpu set + 2 regions * 32
    assert _abi.cell_config_size(desc) == 204


def test_cell_config_size_counts_every_array():
    """The size formula adds each trailing array with its element size."""
    desc = ffi.new("struct jailhouse_cell_desc *")
    for count_field in (
        "num_memory_regions",
        "num_cache_regions",
        "num_irqchips",
        "num_pio_regions",
        "num_pci_devices",
        "num_pci_caps",
        "num_stream_ids",
    ):
        setattr(desc, count_field, 1)
    # ABI sheet: 132 + 32 + 12 + 32 + 4 + 56 + 8 + 4
    assert _abi.cell_config_size(desc) == 280


def test_cell_create_round_trip():
    """A create argument decodes to the blob's address and length, and that memory is the blob."""
    blob = bytes(range(256)) * 3
    arg = _abi.cell_create_arg(blob)
    assert arg.size == 16
    request = _abi.decode_cell_create(arg.data())
    assert request.config_size == len(blob)
    assert ffi.buffer(ffi.cast("char *", request.config_address), request.config_size)[:] == blob
    assert _abi.read_memory(request.config_address, request.config_size) == blob


def test_cell_create_struct_read_back_through_ffi():
    """The create argument's own bytes hold the address at offset 0 and the size at 8."""
    blob = b"JHCLL" + bytes(200)
    arg = _abi.cell_create_arg(blob)
    create = ffi.cast("struct jailhouse_cell_create *", arg.address)
    assert create.config_size == len(blob)
    assert create.padding == 0
    assert ffi.buffer(ffi.cast("char *", create.config_address), len(blob))[:] == blob


def test_cell_create_empty_blob():
    """An empty blob still builds an argument (the driver answers EINVAL to it)."""
    assert _abi.decode_cell_create(_abi.cell_create_arg(b"").data()).config_size == 0


@pytest.mark.parametrize(
    ("cell_id", "name", "expected"),
    [
        (None, "linux-demo", (None, "linux-demo")),
        (3, None, (3, "")),
        (0, "root", (0, "root")),
        (None, "x" * 31, (None, "x" * 31)),
        (None, "züri", (None, "züri")),
        (None, "é" * 31, (None, "é" * 31)),
        (0x7FFFFFFF, None, (0x7FFFFFFF, "")),
    ],
)
def test_cell_id_round_trip(cell_id, name, expected):
    """A cell-id argument decodes to the id (None for by-name) and the name it was built with."""
    arg = _abi.cell_id_arg(cell_id, name)
    assert arg.size == 40
    assert tuple(_abi.decode_cell_id(arg.data())) == expected


def test_cell_id_by_name_uses_unused_id():
    """Selecting by name stores id -1 and a NUL-terminated name in the 40 raw bytes."""
    raw = _abi.cell_id_arg(name="demo").data()
    assert raw[:4] == b"\xff\xff\xff\xff"
    assert raw[8:13] == b"demo\0"
    assert raw[13:] == bytes(27)


@pytest.mark.parametrize("name", ["x" * 32, "é" * 32, "a" * 100])
def test_cell_id_name_too_long(name):
    """A name over 31 latin-1 bytes is refused with ValueError naming the field and value."""
    with pytest.raises(ValueError, match=r"name: '.*' is \d+ bytes") as info:
        _abi.cell_id_arg(name=name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    ("cell_id", "name", "message"),
    [
        (None, None, "cell_id, name: both are None"),
        (-1, None, "cell_id: -1 is outside"),
        (1 << 31, None, "cell_id: 2147483648 is outside"),
        (None, "", "name: '' is empty"),
        (None, "a\0b", "name: 'a\\\\x00b' contains a NUL"),
    ],
)
def test_cell_id_invalid(cell_id, name, message):
    """Missing or out-of-range cell selectors raise ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        _abi.cell_id_arg(cell_id, name)


def test_decode_cell_id_forces_name_terminator():
    """A 32-byte name without NUL decodes to its first 31 bytes, as the driver reads it."""
    raw = (-1).to_bytes(4, "little", signed=True) + bytes(4) + b"n" * 32
    assert _abi.decode_cell_id(raw) == (None, "n" * 31)


def test_decode_cell_id_keeps_other_negative_ids():
    """Only -1 means by-name; another negative id is reported as is."""
    raw = (-5).to_bytes(4, "little", signed=True) + bytes(36)
    assert _abi.decode_cell_id(raw).cell_id == -5


def test_cell_id_name_is_latin1():
    """A name is packed one byte per character, as the config codec packs cell names."""
    raw = _abi.cell_id_arg(name="caf\u00e9").data()
    assert raw[8:13] == b"caf\xe9\0"


def test_cell_id_name_beyond_latin1_is_refused():
    """A character no config name can hold is refused with ValueError naming the field."""
    with pytest.raises(ValueError, match=r"name: '\u2603' has a character beyond latin-1"):
        _abi.cell_id_arg(name="\u2603")


def test_decode_cell_id_name_bytes():
    """Every name byte decodes to the character of that number (latin-1), UTF-8 or not."""
    raw = (-1).to_bytes(4, "little", signed=True) + bytes(4) + b"\xff\xfe" + bytes(30)
    assert _abi.decode_cell_id(raw).name == "\xff\xfe"


def test_cell_load_round_trip():
    """A load argument decodes to its cell and images, each image readable at its address."""
    images = [(b"\x7fELF" + bytes(60), 0x1000), (b"", 0), (b"dtb" * 100, 0xFFFF_FFFF_FFFF_F000)]
    arg = _abi.cell_load_arg(name="linux", images=images)
    # ABI sheet: 48-byte header + 32 bytes per image
    assert arg.size == 48 + 3 * 32
    raw = arg.data()
    header_size = _abi.request_size(_abi.CELL_LOAD)
    assert tuple(_abi.decode_cell_load(raw[:header_size])) == (None, "linux", 3)
    for index, (data, target) in enumerate(images):
        start = header_size + index * _abi.PRELOAD_IMAGE_SIZE
        image = _abi.decode_preload_image(raw[start : start + _abi.PRELOAD_IMAGE_SIZE])
        assert image.size == len(data)
        assert image.target_address == target
        assert _abi.read_memory(image.source_address, image.size) == data


def test_cell_load_without_images_is_shutdown():
    """A load argument without images is the bare 48-byte header with num_preload_images 0."""
    arg = _abi.cell_load_arg(7)
    assert arg.size == 48
    assert _abi.decode_cell_load(arg.data()) == (7, "", 0)


def test_cell_load_validates_cell_and_targets():
    """A load argument checks its cell selector and each target address."""
    with pytest.raises(ValueError, match=r"name: 'x{40}'"):
        _abi.cell_load_arg(name="x" * 40)
    with pytest.raises(ValueError, match=r"images\[1\]\.target_address: -4096"):
        _abi.cell_load_arg(1, images=[(b"a", 0), (b"b", -4096)])
    with pytest.raises(ValueError, match=r"images\[0\]\.target_address"):
        _abi.cell_load_arg(1, images=[(b"a", 1 << 64)])


@pytest.mark.parametrize(
    ("decoder", "size"),
    [
        (_abi.decode_cell_create, 16),
        (_abi.decode_cell_id, 40),
        (_abi.decode_cell_load, 48),
        (_abi.decode_preload_image, 32),
    ],
)
def test_decoders_require_exact_length(decoder, size):
    """Each decoder refuses bytes that are not exactly one struct long."""
    decoder(bytes(size))
    for wrong in (size - 1, size + 1):
        with pytest.raises(ValueError, match=rf"raw: {wrong} bytes, but struct .* is {size}"):
            decoder(bytes(wrong))


def _system_blob(*, cpu_set_size: int, num_memory_regions: int, extra: int) -> bytes:
    """Return a system config header with the given root cell counts and extra trailing bytes."""
    system = ffi.new("struct jailhouse_system *")
    ffi.buffer(system.signature)[:] = b"JHSYS"
    system.revision = 14
    system.root_cell.cpu_set_size = cpu_set_size
    system.root_cell.num_memory_regions = num_memory_regions
    return ffi.buffer(system)[:] + bytes(extra)


def test_enable_arg_points_at_the_blob():
    """The enable argument is the address of the system blob itself, of the described length."""
    blob = _system_blob(cpu_set_size=8, num_memory_regions=2, extra=8 + 64)
    # ABI sheet: 356 + (132 + 8 + 2 * 32)
    assert _abi.system_config_size(blob) == 560
    arg = _abi.enable_arg(blob)
    assert arg.size == len(blob) == 560
    assert ffi.buffer(ffi.cast("char *", arg.address), arg.size)[:] == blob
    assert arg.data()[:5] == b"JHSYS"


def test_enable_arg_refuses_short_blobs():
    """A blob shorter than the header, or than its header describes, is refused before the ioctl."""
    with pytest.raises(ValueError, match="system_blob: 100 bytes is shorter than the 488-byte"):
        _abi.enable_arg(bytes(100))
    blob = _system_blob(cpu_set_size=8, num_memory_regions=2, extra=8)
    with pytest.raises(ValueError, match="system_blob: 496 bytes, but its header describes 560"):
        _abi.enable_arg(blob)


def test_no_arg():
    """DISABLE's argument is the null address with nothing to read."""
    assert _abi.NO_ARG.address == 0
    assert _abi.NO_ARG.data() == b""


def test_read_memory_rejects_bad_addresses():
    """read_memory refuses a negative size and a null address."""
    with pytest.raises(ValueError, match="size: -1 is negative"):
        _abi.read_memory(0x1000, -1)
    with pytest.raises(ValueError, match="address: 0x0"):
        _abi.read_memory(0, 4)


def test_ioctl_returns_negative_errno():
    """The C helper returns -errno instead of raising: ENOTTY on /dev/null, EBADF on a bad fd."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert _abi.ioctl(fd, _abi.DISABLE, 0) == -errno.ENOTTY
    finally:
        os.close(fd)
    assert _abi.ioctl(-1, _abi.DISABLE, 0) == -errno.EBADF


def test_arg_keeps_buffers_alive():
    """An Arg's memory stays valid after the caller drops its own reference to the data."""
    arg = _abi.cell_load_arg(name="c", images=[(bytes([0xAB]) * 4096, 0)])
    gc.collect()
    churn = [bytes([i]) * 4096 for i in range(64)]
    image = _abi.decode_preload_image(arg.data()[48:80])
    assert len(churn) == 64
    assert _abi.read_memory(image.source_address, image.size) == bytes([0xAB]) * 4096


def test_stub_lists_every_lib_name():
    """The typed stub's Lib class names exactly the constants and functions of the compiled lib."""
    stub = Path(jailhouse.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    (lib_class,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Lib")
    stub_names = {
        node.target.id
        for node in lib_class.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    } | {node.name for node in lib_class.body if isinstance(node, ast.FunctionDef)}
    assert stub_names == set(dir(lib))
