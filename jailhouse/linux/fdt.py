"""Flattened device trees (DTB, devicetree specification v0.4, format version 17).

A small tree model, :class:`Node` (ordered properties holding raw big-endian bytes, then
ordered children) inside a :class:`DeviceTree` (root, memory reservations, boot CPU),
with a writer (:meth:`DeviceTree.to_bytes`) and a strict reader (:func:`parse`).

The writer lays a blob out as ``dtc`` does: the 40-byte header, the memory reservation
block at offset 0x28, the structure block, then the strings block, whose names are
shared the way ``dtc`` shares them (a name already present, even as the tail of a longer
one, is reused).  So a tree parsed from a ``dtc``-compiled blob writes back to the same
bytes.  The reader checks every header field, block bound, token and string offset, and
raises :class:`ValueError` naming the field and value.

:func:`set_chosen` edits ``/chosen`` of a user-given blob (``bootargs``,
``linux,initrd-start`` and ``linux,initrd-end``) and keeps everything else.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "FDT_MAGIC",
    "DeviceTree",
    "Node",
    "parse",
    "set_chosen",
]

FDT_MAGIC: Final = 0xD00DFEED
"""First word of every flattened device tree."""
_VERSION: Final = 17
_LAST_COMP_VERSION: Final = 16
_HEADER: Final = struct.Struct(">10I")
_RESERVE: Final = struct.Struct(">QQ")
_BEGIN_NODE: Final = 1
_END_NODE: Final = 2
_PROP: Final = 3
_NOP: Final = 4
_END: Final = 9
_U32_MAX: Final = 0xFFFFFFFF
_U64_MAX: Final = 0xFFFFFFFFFFFFFFFF

# Devicetree specification 2.2.1 and 2.2.4: node names, then property names.
_NODE_NAME: Final = re.compile(r"[0-9A-Za-z,._+-]{1,31}(@[0-9A-Za-z,._+-]+)?")
_PROP_NAME: Final = re.compile(r"[0-9A-Za-z,._+?#-]{1,31}")


def _check_node_name(name: str) -> None:
    if not _NODE_NAME.fullmatch(name):
        raise ValueError(f"node name {name!r} is not a devicetree node name (spec 2.2.1)")


def _check_prop_name(name: str) -> None:
    if not _PROP_NAME.fullmatch(name):
        raise ValueError(f"property name {name!r} is not a devicetree property name (spec 2.2.4)")


def _cells(values: tuple[int, ...], words: int, name: str) -> bytes:
    limit = _U32_MAX if words == 1 else _U64_MAX
    out = bytearray()
    for value in values:
        if not 0 <= value <= limit:
            raise ValueError(f"property {name!r}: {value:#x} does not fit {words * 32} bits")
        out += value.to_bytes(4 * words, "big")
    return bytes(out)


@dataclass(eq=True)
class Node:
    """A device tree node: properties (name to raw value, in order), then child nodes.

    Attributes:
        name: The node name with its unit address (``memory@70000000``); ``""`` for the
            root.
        properties: Property values as they are stored in the blob (big-endian cells,
            NUL-terminated strings).
        children: Child nodes in order; names are unique among siblings.
    """

    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    # -- children ------------------------------------------------------------------------

    def child(self, name: str) -> Node | None:
        """Return the child called ``name``, or ``None``."""
        return next((c for c in self.children if c.name == name), None)

    def add_child(self, name: str) -> Node:
        """Append and return a new, empty child node.

        Raises:
            ValueError: ``name`` is not a node name, or a sibling has it already.
        """
        _check_node_name(name)
        if self.child(name) is not None:
            raise ValueError(f"node {self.name or '/'!r} already has a child {name!r}")
        node = Node(name)
        self.children.append(node)
        return node

    def get_child(self, name: str) -> Node:
        """Return the child called ``name``, adding it when absent."""
        return self.child(name) or self.add_child(name)

    def walk(self, path: str = "") -> Iterator[tuple[str, Node]]:
        """Yield ``(path, node)`` for this node and every descendant, depth first."""
        yield path or "/", self
        for child in self.children:
            yield from child.walk(f"{path}/{child.name}")

    # -- setting properties ----------------------------------------------------------------

    def set(self, name: str, value: bytes) -> None:
        """Set a property to raw bytes (replacing its value in place if present)."""
        _check_prop_name(name)
        self.properties[name] = bytes(value)

    def set_empty(self, name: str) -> None:
        """Set a property without a value (``interrupt-controller;``)."""
        self.set(name, b"")

    def set_u32(self, name: str, *values: int) -> None:
        """Set a property to one or more 32-bit cells."""
        self.set(name, _cells(values, 1, name))

    def set_u64(self, name: str, *values: int) -> None:
        """Set a property to one or more 64-bit values (two cells each)."""
        self.set(name, _cells(values, 2, name))

    def set_cells(self, name: str, *groups: tuple[int, int]) -> None:
        """Set a property from ``(value, cells)`` pairs, each value in ``cells`` 32-bit cells.

        For ``reg`` and ``ranges``, whose layout the parent's ``#address-cells`` and
        ``#size-cells`` decide: ``node.set_cells("reg", (base, 2), (size, 2))``.

        Raises:
            ValueError: A value does not fit its cells.
        """
        out = bytearray()
        for value, cells in groups:
            if cells < 0 or not 0 <= value < 1 << (32 * cells):
                raise ValueError(f"property {name!r}: {value:#x} does not fit {cells} cells")
            out += value.to_bytes(4 * cells, "big")
        self.set(name, bytes(out))

    def set_string(self, name: str, value: str) -> None:
        """Set a property to one NUL-terminated string."""
        self.set_strings(name, value)

    def set_strings(self, name: str, *values: str) -> None:
        """Set a property to a string list (``compatible = "a", "b"``).

        Raises:
            ValueError: A string holds a NUL or a non-ASCII character.
        """
        for value in values:
            if "\0" in value or not value.isascii():
                raise ValueError(f"property {name!r}: {value!r} is not a printable string")
        self.set(name, b"".join(v.encode("ascii") + b"\0" for v in values))

    # -- reading properties ----------------------------------------------------------------

    def get(self, name: str) -> bytes:
        """Return a property's raw value.

        Raises:
            KeyError: The node has no such property.
        """
        try:
            return self.properties[name]
        except KeyError:
            raise KeyError(f"node {self.name or '/'!r} has no property {name!r}") from None

    def get_u32s(self, name: str) -> tuple[int, ...]:
        """Return a property as 32-bit cells.

        Raises:
            KeyError: The property is absent.
            ValueError: Its length is not a multiple of 4.
        """
        raw = self.get(name)
        if len(raw) % 4:
            raise ValueError(f"property {name!r} is {len(raw)} bytes, not a list of cells")
        return struct.unpack(f">{len(raw) // 4}I", raw)

    def get_u32(self, name: str) -> int:
        """Return a property that is exactly one 32-bit cell."""
        cells = self.get_u32s(name)
        if len(cells) != 1:
            raise ValueError(f"property {name!r} has {len(cells)} cells, not 1")
        return cells[0]

    def get_u64(self, name: str) -> int:
        """Return a property that is exactly one 64-bit value."""
        raw = self.get(name)
        if len(raw) != 8:
            raise ValueError(f"property {name!r} is {len(raw)} bytes, not a 64-bit value")
        return int.from_bytes(raw, "big")

    def get_cells(self, name: str, *sizes: int) -> list[tuple[int, ...]]:
        """Split a property into records of values ``sizes`` cells wide.

        ``node.get_cells("reg", 2, 2)`` gives ``[(base, size), ...]``.

        Raises:
            ValueError: The length is not a whole number of records.
        """
        cells = self.get_u32s(name)
        width = sum(sizes)
        if width <= 0 or len(cells) % width:
            raise ValueError(f"property {name!r} has {len(cells)} cells, not records of {width}")
        records = []
        for start in range(0, len(cells), width):
            record = []
            pos = start
            for size in sizes:
                value = 0
                for cell in cells[pos : pos + size]:
                    value = value << 32 | cell
                record.append(value)
                pos += size
            records.append(tuple(record))
        return records

    def get_strings(self, name: str) -> list[str]:
        """Return a property as a string list.

        Raises:
            ValueError: The value is empty, not NUL-terminated, or not ASCII.
        """
        raw = self.get(name)
        if not raw or raw[-1] != 0:
            raise ValueError(f"property {name!r} is not a NUL-terminated string list")
        try:
            return raw[:-1].decode("ascii").split("\0")
        except UnicodeDecodeError:
            raise ValueError(f"property {name!r} is not an ASCII string list") from None

    def get_string(self, name: str) -> str:
        """Return a property that is exactly one string."""
        values = self.get_strings(name)
        if len(values) != 1:
            raise ValueError(f"property {name!r} holds {len(values)} strings, not 1")
        return values[0]


@dataclass(eq=True)
class DeviceTree:
    """A whole flattened device tree.

    Attributes:
        root: The root node (name ``""``).
        reservations: ``(address, size)`` entries of the memory reservation block.
        boot_cpuid_phys: The header's boot CPU id.
    """

    root: Node = field(default_factory=lambda: Node(""))
    reservations: list[tuple[int, int]] = field(default_factory=list)
    boot_cpuid_phys: int = 0

    @classmethod
    def from_bytes(cls, blob: bytes) -> DeviceTree:
        """Parse a blob; see :func:`parse`."""
        return parse(blob)

    def node(self, path: str) -> Node:
        """Return the node at an absolute path (``/cpus/cpu@1``).

        Raises:
            KeyError: No node has that path.
        """
        if not path.startswith("/"):
            raise KeyError(f"path {path!r} is not absolute")
        node = self.root
        for part in filter(None, path.split("/")):
            found = node.child(part)
            if found is None:
                raise KeyError(f"no node {path!r}")
            node = found
        return node

    def phandle(self, node: Node) -> int:
        """Return the node's phandle, giving it the next free one when it has none.

        Returns:
            The value of the node's ``phandle`` (or legacy ``linux,phandle``) property.
        """
        for name in ("phandle", "linux,phandle"):
            if name in node.properties:
                return node.get_u32(name)
        used = [
            other.get_u32(name)
            for _, other in self.root.walk()
            for name in ("phandle", "linux,phandle")
            if name in other.properties
        ]
        value = max(used, default=0) + 1
        if value >= _U32_MAX:
            raise ValueError("no free phandle is left below 0xffffffff")
        node.set_u32("phandle", value)
        return value

    def to_bytes(self) -> bytes:
        """Write the tree as a version-17 blob laid out as ``dtc`` lays it out.

        Raises:
            ValueError: A reservation or the boot CPU id does not fit its field.
        """
        reserve = bytearray()
        for address, size in self.reservations:
            if not (0 <= address <= _U64_MAX and 0 <= size <= _U64_MAX):
                raise ValueError(f"reservation ({address:#x}, {size:#x}) does not fit 64 bits")
            reserve += _RESERVE.pack(address, size)
        reserve += _RESERVE.pack(0, 0)
        if not 0 <= self.boot_cpuid_phys <= _U32_MAX:
            raise ValueError(f"boot_cpuid_phys {self.boot_cpuid_phys:#x} does not fit 32 bits")
        strings = bytearray()
        dt_struct = bytearray()
        _flatten(self.root, dt_struct, strings)
        dt_struct += _END.to_bytes(4, "big")
        off_rsvmap = _HEADER.size  # 40, already 8-aligned
        off_struct = off_rsvmap + len(reserve)
        off_strings = off_struct + len(dt_struct)
        total = off_strings + len(strings)
        header = _HEADER.pack(
            FDT_MAGIC,
            total,
            off_struct,
            off_strings,
            off_rsvmap,
            _VERSION,
            _LAST_COMP_VERSION,
            self.boot_cpuid_phys,
            len(strings),
            len(dt_struct),
        )
        return header + bytes(reserve) + bytes(dt_struct) + bytes(strings)


def _pad4(data: bytearray) -> None:
    data += bytes(-len(data) % 4)


def _string_offset(strings: bytearray, name: str) -> int:
    """Return the offset of ``name`` in the strings block, appending it if absent."""
    key = name.encode("ascii") + b"\0"
    found = strings.find(key)
    if found >= 0:
        return found
    strings += key
    return len(strings) - len(key)


def _flatten(node: Node, out: bytearray, strings: bytearray) -> None:
    out += _BEGIN_NODE.to_bytes(4, "big")
    out += node.name.encode("ascii") + b"\0"
    _pad4(out)
    for name, value in node.properties.items():
        out += struct.pack(">III", _PROP, len(value), _string_offset(strings, name))
        out += value
        _pad4(out)
    for child in node.children:
        _flatten(child, out, strings)
    out += _END_NODE.to_bytes(4, "big")


# -- reader ---------------------------------------------------------------------------------


def parse(blob: bytes) -> DeviceTree:
    """Parse a flattened device tree blob (format version 17, or newer compatible ones).

    Args:
        blob: The blob; bytes after ``totalsize`` are ignored.

    Returns:
        The tree, reservations and boot CPU id.

    Raises:
        ValueError: The blob is not a well-formed DTB; the message names the header field
            or block and the offending value.
    """
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise ValueError(f"blob is {len(blob)} bytes, shorter than the 40-byte FDT header")
    (
        magic,
        total,
        off_struct,
        off_strings,
        off_rsvmap,
        version,
        last_comp,
        boot_cpuid,
        size_strings,
        size_struct,
    ) = _HEADER.unpack_from(blob)
    if magic != FDT_MAGIC:
        raise ValueError(f"magic is {magic:#010x}, not {FDT_MAGIC:#010x}: not a device tree blob")
    if version < _VERSION:
        raise ValueError(f"version is {version}; only version {_VERSION} blobs are read")
    if last_comp > _VERSION:
        raise ValueError(f"last_comp_version is {last_comp}; this reader knows up to {_VERSION}")
    if total < _HEADER.size:
        raise ValueError(f"totalsize is {total}, smaller than the header")
    if total > len(blob):
        raise ValueError(f"totalsize is {total} but the blob is only {len(blob)} bytes: truncated")

    def check_block(name: str, offset: int, size: int, align: int) -> None:
        if offset % align:
            raise ValueError(f"off_{name} is {offset:#x}, not {align}-byte aligned")
        if offset < _HEADER.size or offset + size > total:
            raise ValueError(
                f"{name} block {offset:#x}+{size:#x} lies outside the blob (totalsize {total:#x})"
            )

    check_block("mem_rsvmap", off_rsvmap, _RESERVE.size, 8)
    check_block("dt_struct", off_struct, size_struct, 4)
    check_block("dt_strings", off_strings, size_strings, 1)
    reservations = []
    pos = off_rsvmap
    while True:
        if pos + _RESERVE.size > total:
            raise ValueError(f"mem_rsvmap has no (0, 0) terminator before offset {total:#x}")
        address, size = _RESERVE.unpack_from(blob, pos)
        pos += _RESERVE.size
        if address == 0 and size == 0:
            break
        reservations.append((address, size))
    root = _StructReader(
        blob[off_struct : off_struct + size_struct], blob[off_strings : off_strings + size_strings]
    ).read()
    return DeviceTree(root=root, reservations=reservations, boot_cpuid_phys=boot_cpuid)


class _StructReader:
    """Walks the structure block token by token."""

    def __init__(self, data: bytes, strings: bytes) -> None:
        self.data = data
        self.strings = strings
        self.pos = 0

    def word(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ValueError(f"dt_struct ends inside a token at offset {self.pos:#x}")
        value = int.from_bytes(self.data[self.pos : self.pos + 4], "big")
        self.pos += 4
        return value

    def token(self) -> int:
        while True:
            at = self.pos
            tok = self.word()
            if tok != _NOP:
                if tok not in (_BEGIN_NODE, _END_NODE, _PROP, _END):
                    raise ValueError(f"dt_struct: unknown token {tok:#x} at offset {at:#x}")
                return tok

    def string(self, data: bytes, start: int, what: str) -> str:
        end = data.find(b"\0", start)
        if end < 0:
            raise ValueError(f"{what} at offset {start:#x} is not NUL-terminated")
        try:
            return data[start:end].decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{what} at offset {start:#x} is not ASCII") from None

    def read(self) -> Node:
        at = self.pos
        if self.token() != _BEGIN_NODE:
            raise ValueError(f"dt_struct does not start with FDT_BEGIN_NODE (offset {at:#x})")
        root = self.node()
        if root.name:
            raise ValueError(f"root node is named {root.name!r}, not ''")
        at = self.pos
        if self.token() != _END:
            raise ValueError(f"dt_struct: expected FDT_END after the root node at {at:#x}")
        return root

    def node(self) -> Node:
        at = self.pos
        name = self.string(self.data, self.pos, "node name")
        if "/" in name:
            raise ValueError(f"node name {name!r} at offset {at:#x} contains '/'")
        self.pos += len(name) + 1
        self.pos += -self.pos % 4
        node = Node(name)
        while True:
            at = self.pos
            tok = self.token()
            if tok == _END_NODE:
                return node
            if tok == _BEGIN_NODE:
                child = self.node()
                if not child.name:
                    raise ValueError(f"subnode of {name or '/'!r} at offset {at:#x} has no name")
                if node.child(child.name) is not None:
                    raise ValueError(f"node {name or '/'!r} has a second child {child.name!r}")
                node.children.append(child)
            elif tok == _PROP:
                if node.children:
                    raise ValueError(f"property at offset {at:#x} follows a subnode of {name!r}")
                length, nameoff = self.word(), self.word()
                if nameoff >= len(self.strings):
                    raise ValueError(
                        f"property nameoff {nameoff:#x} at offset {at:#x} lies outside the "
                        f"strings block ({len(self.strings):#x} bytes)"
                    )
                prop = self.string(self.strings, nameoff, "property name")
                if not prop:
                    raise ValueError(f"property at offset {at:#x} has an empty name")
                if self.pos + length > len(self.data):
                    raise ValueError(
                        f"property {prop!r} of length {length:#x} at offset {at:#x} runs past "
                        "the end of dt_struct"
                    )
                if prop in node.properties:
                    raise ValueError(f"node {name or '/'!r} has property {prop!r} twice")
                node.properties[prop] = self.data[self.pos : self.pos + length]
                self.pos += length
                self.pos += -self.pos % 4
            else:
                raise ValueError(f"dt_struct: FDT_END at offset {at:#x} inside node {name!r}")


def set_chosen(blob: bytes, *, bootargs: str | None, initrd: tuple[int, int] | None) -> bytes:
    """Set boot parameters in ``/chosen`` of a user-given blob, keeping everything else.

    ``/chosen`` is added when absent.  The initrd addresses are written with the root's
    ``#address-cells`` (1 or 2; the devicetree default is 2) as Linux reads them.

    Args:
        blob: The device tree blob.
        bootargs: The kernel command line, or ``None`` to keep the blob's.
        initrd: ``(start, end)`` guest addresses of the initrd (end exclusive), or
            ``None`` to keep the blob's.

    Returns:
        The edited blob.

    Raises:
        ValueError: The blob is malformed, or ``initrd`` is empty, reversed or does not
            fit the address cells.
    """
    tree = parse(blob)
    chosen = tree.root.get_child("chosen")
    if bootargs is not None:
        chosen.set_string("bootargs", bootargs)
    if initrd is not None:
        start, end = initrd
        if not 0 <= start < end:
            raise ValueError(f"initrd ({start:#x}, {end:#x}) is not a non-empty address range")
        cells = 2
        if "#address-cells" in tree.root.properties:
            cells = tree.root.get_u32("#address-cells")
        if cells not in (1, 2):
            raise ValueError(f"root #address-cells is {cells}; initrd addresses need 1 or 2")
        chosen.set_cells("linux,initrd-start", (start, cells))
        chosen.set_cells("linux,initrd-end", (end, cells))
    return tree.to_bytes()
