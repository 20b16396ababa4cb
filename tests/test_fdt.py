"""The flattened device tree writer and reader, checked against ``dtc`` and the spec."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import device_trees

from jailhouse.linux.fdt import DeviceTree, Node, parse, set_chosen

DTC = shutil.which("dtc")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc (apt: device-tree-compiler) is missing")

SAMPLE_DTS = """/dts-v1/;
/memreserve/ 0x10000000 0x4000;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    model = "sample board";
    compatible = "vendor,board", "vendor,soc";
    interrupt-parent = <&gic>;

    gic: interrupt-controller@8000000 {
        compatible = "arm,gic-v3";
        interrupt-controller;
        #interrupt-cells = <3>;
        reg = <0x0 0x08000000 0x0 0x10000>, <0x0 0x080a0000 0x0 0xf60000>;
    };

    memory@40000000 {
        device_type = "memory";
        reg = <0x0 0x40000000 0x1 0x0>;
    };

    chosen {
        bootargs = "console=ttyAMA0";
        stdout-path = "/uart@9000000";
    };
};
"""


def dtc(*args: str, data: bytes) -> bytes:
    """Run dtc on ``data`` and return its output (warnings go to stderr)."""
    assert DTC is not None
    return subprocess.run(
        [DTC, "-q", *args, "-"], input=data, capture_output=True, check=True
    ).stdout


def sample_tree() -> DeviceTree:
    """Build a small tree with the helpers."""
    tree = DeviceTree(reservations=[(0x48000000, 0x1000)], boot_cpuid_phys=1)
    root = tree.root
    root.set_u32("#address-cells", 2)
    root.set_u32("#size-cells", 2)
    root.set_strings("compatible", "jailhouse,cell", "other")
    gic = root.add_child("interrupt-controller@8000000")
    gic.set_empty("interrupt-controller")
    gic.set_cells("reg", (0x08000000, 2), (0x10000, 2))
    root.set_u32("interrupt-parent", tree.phandle(gic))
    chosen = root.add_child("chosen")
    chosen.set_string("bootargs", "console=ttyAMA0 root=/dev/vda")
    chosen.set_u64("linux,initrd-start", 0x7100_0000)
    return tree


# -- writer ----------------------------------------------------------------------------------


def test_header_layout_as_the_spec_lays_it_out() -> None:
    """The header carries magic, version 17/16 and block offsets in dtc's order."""
    blob = sample_tree().to_bytes()
    words = struct.unpack_from(">10I", blob)
    magic, total, off_struct, off_strings, off_rsvmap, version, last_comp, boot = words[:8]
    size_strings, size_struct = words[8:]
    assert (magic, version, last_comp, boot) == (0xD00DFEED, 17, 16, 1)
    assert total == len(blob)
    # one reservation plus the (0, 0) terminator, 16 bytes each, right after the header
    assert off_rsvmap == 0x28
    assert off_struct == 0x28 + 2 * 16
    assert off_strings == off_struct + size_struct
    assert total == off_strings + size_strings
    assert struct.unpack_from(">QQ", blob, off_rsvmap) == (0x48000000, 0x1000)
    # the structure block ends with FDT_END_NODE (root) then FDT_END
    assert blob[off_strings - 8 : off_strings] == struct.pack(">II", 2, 9)


def test_strings_block_shares_names() -> None:
    """Each property name is stored once, and a name that ends another is shared."""
    tree = DeviceTree()
    tree.root.set_u32("#size-cells", 1)
    tree.root.add_child("a").set_u32("#size-cells", 2)
    tree.root.add_child("b").set_u32("size-cells", 3)
    blob = tree.to_bytes()
    size_strings = struct.unpack_from(">I", blob, 32)[0]
    assert blob[-size_strings:] == b"#size-cells\0"


def test_helpers_encode_cells_and_strings() -> None:
    """u32, u64, cell groups and string lists encode as big-endian cells and NUL strings."""
    node = Node("n")
    node.set_u32("a", 1, 0xFFFFFFFF)
    node.set_u64("b", 0x1_0000_0002)
    node.set_cells("reg", (0x4010000000, 2), (0x1000, 1))
    node.set_strings("compatible", "x,y", "z")
    assert node.properties["a"] == bytes.fromhex("00000001ffffffff")
    assert node.properties["b"] == bytes.fromhex("0000000100000002")
    assert node.properties["reg"] == bytes.fromhex("000000401000000000001000")
    assert node.properties["compatible"] == b"x,y\0z\0"
    assert node.get_u32s("a") == (1, 0xFFFFFFFF)
    assert node.get_u64("b") == 0x1_0000_0002
    assert node.get_cells("reg", 2, 1) == [(0x4010000000, 0x1000)]
    assert node.get_strings("compatible") == ["x,y", "z"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda n: n.set_u32("a", 1 << 32), "does not fit 32 bits"),
        (lambda n: n.set_u32("a", -1), "does not fit 32 bits"),
        (lambda n: n.set_cells("reg", (1 << 64, 2)), "does not fit 2 cells"),
        (lambda n: n.set_string("s", "a\0b"), "not a printable string"),
        (lambda n: n.set_u32("bad name", 1), "not a devicetree property name"),
        (lambda n: n.add_child("a/b"), "not a devicetree node name"),
        (lambda n: n.add_child("kid") and n.add_child("kid"), "already has a child 'kid'"),
    ],
)
def test_setters_refuse_what_the_format_cannot_hold(call, message) -> None:
    """Out-of-range cells, NULs in strings, bad names and duplicate children are refused."""
    with pytest.raises(ValueError, match=message):
        call(Node("n"))


@pytest.mark.parametrize(
    ("value", "getter", "message"),
    [
        (b"\0\0\0", "get_u32", "not a list of cells"),
        (b"\0\0\0\1\0\0\0\2", "get_u32", "has 2 cells, not 1"),
        (b"\0\0\0\1", "get_u64", "not a 64-bit value"),
        (b"abc", "get_strings", "not a NUL-terminated"),
        (b"a\0b\0", "get_string", "holds 2 strings"),
    ],
)
def test_getters_refuse_values_of_another_shape(value, getter, message) -> None:
    """A getter names the property when its value has another shape."""
    node = Node("n", {"p": value})
    with pytest.raises(ValueError, match=rf"property 'p' .*{message}"):
        getattr(node, getter)("p")


def test_phandle_allocation_takes_the_next_free_value() -> None:
    """phandle() keeps an existing phandle and gives a new node one above every other."""
    tree = DeviceTree()
    a = tree.root.add_child("a")
    b = tree.root.add_child("b")
    c = tree.root.add_child("c")
    b.set_u32("linux,phandle", 7)
    assert tree.phandle(b) == 7
    assert tree.phandle(a) == 8
    assert tree.phandle(a) == 8
    assert tree.phandle(c) == 9
    assert a.get_u32("phandle") == 8


def test_node_lookup_by_path() -> None:
    """node() follows an absolute path and names the path it could not find."""
    tree = sample_tree()
    assert tree.node("/chosen").get_string("bootargs").startswith("console=")
    assert tree.node("/") is tree.root
    with pytest.raises(KeyError, match="/chosen/nothing"):
        tree.node("/chosen/nothing")


@given(device_trees())
def test_round_trip(tree: DeviceTree) -> None:
    """Every tree parses back equal from the bytes it writes."""
    assert parse(tree.to_bytes()) == tree


# -- against dtc -----------------------------------------------------------------------------


@needs_dtc
def test_dtc_reads_our_blob() -> None:
    """Decompiling our blob with dtc gives the nodes, properties and values we set."""
    dts = dtc("-I", "dtb", "-O", "dts", data=sample_tree().to_bytes()).decode()
    assert "/memreserve/\t0x0000000048000000 0x0000000000001000;" in dts
    assert 'compatible = "jailhouse,cell\\0other";' in dts
    assert "interrupt-parent = <0x01>;" in dts
    assert "reg = <0x00 0x8000000 0x00 0x10000>;" in dts
    assert 'bootargs = "console=ttyAMA0 root=/dev/vda";' in dts
    assert "linux,initrd-start = <0x00 0x71000000>;" in dts


@needs_dtc
def test_dtc_compiled_blob_parses_and_writes_back_identically() -> None:
    """A blob dtc compiled parses to its source's values and writes back byte for byte."""
    blob = dtc("-I", "dts", "-O", "dtb", data=SAMPLE_DTS.encode())
    tree = parse(blob)
    assert tree.reservations == [(0x10000000, 0x4000)]
    root = tree.root
    assert root.get_strings("compatible") == ["vendor,board", "vendor,soc"]
    gic = tree.node("/interrupt-controller@8000000")
    assert gic.get_cells("reg", 2, 2) == [(0x08000000, 0x10000), (0x080A0000, 0xF60000)]
    assert gic.get("interrupt-controller") == b""
    assert root.get_u32("interrupt-parent") == gic.get_u32("phandle")
    assert tree.node("/memory@40000000").get_cells("reg", 2, 2) == [(0x40000000, 1 << 32)]
    assert tree.to_bytes() == blob


@needs_dtc
@settings(max_examples=25)
@given(device_trees())
def test_dtc_rewrites_our_blobs_to_the_same_bytes(tree: DeviceTree) -> None:
    """Reading any blob of ours and writing a dtb again, dtc produces the same bytes."""
    blob = tree.to_bytes()
    assert dtc("-I", "dtb", "-O", "dtb", data=blob) == blob


# -- reader errors ---------------------------------------------------------------------------


def _patch(blob: bytes, offset: int, word: int) -> bytes:
    return blob[:offset] + struct.pack(">I", word) + blob[offset + 4 :]


def _blob() -> bytes:
    return sample_tree().to_bytes()


def _strings_off(blob: bytes) -> int:
    return struct.unpack_from(">I", blob, 12)[0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:39], "shorter than the 40-byte FDT header"),
        (lambda b: _patch(b, 0, 0xEDFE0DD0), r"magic is 0xedfe0dd0"),
        (lambda b: _patch(b, 20, 16), "version is 16"),
        (lambda b: _patch(b, 24, 18), "last_comp_version is 18"),
        (lambda b: b[:-1], r"totalsize is \d+ but the blob is only"),
        (lambda b: _patch(b, 8, 0x2A), "off_dt_struct is 0x2a, not 4-byte aligned"),
        (lambda b: _patch(b, 16, 0x24), "off_mem_rsvmap is 0x24, not 8-byte aligned"),
        (lambda b: _patch(b, 8, 0x10000), "dt_struct block 0x10000"),
        (lambda b: _patch(b, 32, 0x10000), "dt_strings block"),
        (lambda b: _patch(b, 16, 0x20), "mem_rsvmap block 0x20"),
        (lambda b: _patch(b, 0x38, 1), "no \\(0, 0\\) terminator"),
    ],
)
def test_reader_names_the_bad_header_field(damage, message) -> None:
    """A damaged header or block bound is refused naming the field and its value."""
    with pytest.raises(ValueError, match=message):
        parse(damage(_blob()))


def _struct_blob(*words: int, strings: bytes = b"p\0") -> bytes:
    """Return a blob with a hand-made structure block."""
    body = b"".join(struct.pack(">I", w) for w in words)
    total = 40 + 16 + len(body) + len(strings)
    header = struct.pack(
        ">10I", 0xD00DFEED, total, 56, 56 + len(body), 40, 17, 16, 0, len(strings), len(body)
    )
    return header + bytes(16) + body + strings


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ((2, 9), "does not start with FDT_BEGIN_NODE"),
        ((1, 0, 2), "dt_struct ends inside a token at offset 0xc"),
        ((1, 0, 2, 2, 9), "expected FDT_END after the root node"),
        ((1, 0, 7, 2, 9), "unknown token 0x7"),
        ((1, 0, 3, 0, 0x40, 2, 9), "nameoff 0x40 .* outside the strings block"),
        ((1, 0, 3, 0x100, 0, 2, 9), "runs past the end of dt_struct"),
        ((1, 0, 3, 0, 0, 3, 0, 0, 2, 9), "has property 'p' twice"),
        ((1, 0, 1, 0, 2, 3, 0, 0, 2, 9), "has no name"),
        ((1, 0, 1, 0x61000000, 2, 3, 0, 0, 2, 9), "follows a subnode"),
        ((1, 0, 1, 0x61000000, 2, 1, 0x61000000, 2, 2, 9), "second child 'a'"),
        ((1, 0x61000000, 2, 9), "root node is named 'a'"),
        ((1, 0, 9), "FDT_END at offset 0x8 inside node ''"),
        (
            (
                1,
                0x61616161,
            ),
            "node name at offset 0x4 is not NUL-terminated",
        ),
    ],
)
def test_reader_names_the_bad_structure(words, message) -> None:
    """A malformed structure block is refused naming the token, offset or name."""
    with pytest.raises(ValueError, match=message):
        parse(_struct_blob(*words))


def test_reader_skips_nops() -> None:
    """FDT_NOP tokens anywhere between tokens are ignored."""
    tree = parse(_struct_blob(4, 1, 0, 4, 3, 4, 0, 0xAABBCCDD, 4, 2, 4, 9))
    assert tree.root.properties == {"p": bytes.fromhex("aabbccdd")}


@given(st.data())
def test_damaged_blobs_parse_or_raise_value_error(data: st.DataObject) -> None:
    """Whatever is damaged, parse() returns a tree or raises ValueError, nothing else."""
    buf = bytearray(_blob())
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    try:
        tree = parse(bytes(buf[:cut]))
    except ValueError:
        return
    assert isinstance(tree, DeviceTree)


# -- set_chosen ------------------------------------------------------------------------------


@needs_dtc
def test_set_chosen_edits_a_dtc_blob_and_keeps_the_rest() -> None:
    """set_chosen replaces bootargs, adds the initrd and keeps every other node and value."""
    blob = dtc("-I", "dts", "-O", "dtb", data=SAMPLE_DTS.encode())
    out = set_chosen(
        blob, bootargs="console=ttyAMA0 root=/dev/ram0", initrd=(0x7200_0000, 0x7280_0000)
    )
    before, after = parse(blob), parse(out)
    chosen = after.node("/chosen")
    assert chosen.get_string("bootargs") == "console=ttyAMA0 root=/dev/ram0"
    assert chosen.get_u64("linux,initrd-start") == 0x7200_0000
    assert chosen.get_u64("linux,initrd-end") == 0x7280_0000
    assert chosen.get_string("stdout-path") == "/uart@9000000"
    after.node("/chosen").properties = before.node("/chosen").properties
    assert after == before
    dts = dtc("-I", "dtb", "-O", "dts", data=out).decode()
    assert "linux,initrd-end = <0x00 0x72800000>;" in dts


def test_set_chosen_adds_chosen_and_follows_address_cells() -> None:
    """Without /chosen it is added; with #address-cells 1 the initrd is one cell."""
    tree = DeviceTree()
    tree.root.set_u32("#address-cells", 1)
    out = parse(set_chosen(tree.to_bytes(), bootargs=None, initrd=(0x1000, 0x2000)))
    chosen = out.node("/chosen")
    assert chosen.properties == {
        "linux,initrd-start": b"\0\0\x10\0",
        "linux,initrd-end": b"\0\0\x20\0",
    }


def test_set_chosen_none_keeps_values() -> None:
    """bootargs=None and initrd=None leave the blob's values alone."""
    blob = sample_tree().to_bytes()
    assert set_chosen(blob, bootargs=None, initrd=None) == blob


@pytest.mark.parametrize(
    ("initrd", "message"),
    [
        ((0x2000, 0x1000), r"initrd \(0x2000, 0x1000\) is not a non-empty"),
        ((0x1000, 0x1000), "is not a non-empty"),
        ((0x1000, 1 << 64), "does not fit 2 cells"),
    ],
)
def test_set_chosen_refuses_bad_initrd(initrd, message) -> None:
    """A reversed, empty or too-large initrd range is refused with its values."""
    with pytest.raises(ValueError, match=message):
        set_chosen(sample_tree().to_bytes(), bootargs=None, initrd=initrd)
