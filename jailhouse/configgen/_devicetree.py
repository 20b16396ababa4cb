"""Read a device tree in the layout Linux exports it: ``/proc/device-tree``.

Each node is a directory and each property a file holding the property's raw bytes (cells
are big-endian 32-bit words, strings NUL-terminated).  Addresses in ``reg`` are translated
to CPU physical addresses through the parents' ``ranges``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jailhouse.configgen._common import HostTree

__all__ = ["DeviceTree", "DtNode"]


@dataclass(frozen=True, slots=True)
class DtNode:
    """One node: its path (``/intc@8000000``) within the tree."""

    tree: DeviceTree
    path: str

    @property
    def name(self) -> str:
        """The node's name with its unit address (``pl011@9000000``)."""
        return self.path.rsplit("/", 1)[-1] or "/"

    @property
    def source(self) -> str:
        """The host path of the node's directory, for notes."""
        return f"{self.tree.base}{self.path if self.path != '/' else ''}"

    @property
    def parent(self) -> DtNode | None:
        """The parent node, or None for the root."""
        if self.path == "/":
            return None
        head = self.path.rsplit("/", 1)[0]
        return DtNode(self.tree, head or "/")

    def prop(self, name: str) -> bytes | None:
        """Return a property's raw bytes, or None when the node has no such property."""
        return self.tree.host.bytes(f"{self.source}/{name}")

    def has(self, name: str) -> bool:
        """Tell whether the node has a property."""
        return self.tree.host.path(f"{self.source}/{name}").is_file()

    def cells(self, name: str) -> tuple[int, ...]:
        """Return a property as 32-bit cells (empty when absent or not whole cells)."""
        raw = self.prop(name) or b""
        if len(raw) % 4:
            return ()
        return struct.unpack(f">{len(raw) // 4}I", raw)

    def strings(self, name: str) -> tuple[str, ...]:
        """Return a string-list property (``compatible``)."""
        raw = self.prop(name) or b""
        return tuple(s.decode("ascii", "replace") for s in raw.split(b"\0") if s)

    def string(self, name: str) -> str | None:
        """Return the first string of a property, or None."""
        values = self.strings(name)
        return values[0] if values else None

    def children(self) -> list[DtNode]:
        """Return the child nodes, by name."""
        prefix = "" if self.path == "/" else self.path
        return [
            DtNode(self.tree, f"{prefix}/{entry}")
            for entry in self.tree.host.listdir(self.source)
            if self.tree.host.path(f"{self.source}/{entry}").is_dir()
        ]

    def compatible(self, *names: str) -> bool:
        """Tell whether the node is compatible with any of ``names``."""
        return bool(set(self.strings("compatible")) & set(names))

    def address_cells(self) -> int:
        """``#address-cells`` of this node (for its children's ``reg``); 2 by default."""
        cells = self.cells("#address-cells")
        return cells[0] if cells else 2

    def size_cells(self) -> int:
        """``#size-cells`` of this node (for its children's ``reg``); 1 by default."""
        cells = self.cells("#size-cells")
        return cells[0] if cells else 1

    def reg(self) -> list[tuple[int, int]]:
        """Return ``reg`` as ``(cpu_address, size)`` pairs, translated through ``ranges``."""
        parent = self.parent
        if parent is None:
            return []
        na, ns = parent.address_cells(), parent.size_cells()
        words = self.cells("reg")
        step = na + ns
        out: list[tuple[int, int]] = []
        for i in range(0, len(words) - step + 1, step):
            addr = _join(words[i : i + na])
            size = _join(words[i + na : i + step])
            out.append((parent.translate(addr), size))
        return out

    def translate(self, addr: int) -> int:
        """Map an address on this node's bus to a CPU physical address."""
        parent = self.parent
        if parent is None:
            return addr
        if not self.has("ranges"):
            return addr  # no ranges: treated as 1:1, as on QEMU's flat buses
        words = self.cells("ranges")
        if not words:
            return parent.translate(addr)
        na, pa, ns = self.address_cells(), parent.address_cells(), self.size_cells()
        step = na + pa + ns
        for i in range(0, len(words) - step + 1, step):
            child = _join(words[i : i + na])
            target = _join(words[i + na : i + na + pa])
            size = _join(words[i + na + pa : i + step])
            if child <= addr < child + size:
                return parent.translate(target + addr - child)
        return parent.translate(addr)

    def interrupt_parent(self) -> int | None:
        """Return the phandle of the node's interrupt controller (inherited), or None."""
        node: DtNode | None = self
        while node is not None:
            cells = node.cells("interrupt-parent")
            if cells:
                return cells[0]
            node = node.parent
        return None

    def interrupts(self) -> list[int]:
        """Return the node's GIC interrupts as interrupt IDs (SPI n is 32 + n, PPI n 16 + n).

        Only the three-cell GIC binding (``<type number flags>``) is decoded, and only for
        nodes whose interrupt parent is a GIC (``#interrupt-cells`` 3 and
        ``interrupt-controller``) or is not named.
        """
        parent = self.interrupt_parent()
        if parent is not None:
            controller = self.tree.by_phandle(parent)
            if controller is not None and controller.cells("#interrupt-cells") != (3,):
                return []
        words = self.cells("interrupts")
        out: list[int] = []
        for i in range(0, len(words) - 2, 3):
            kind, number = words[i], words[i + 1]
            out.append(number + (16 if kind == 1 else 32))
        return out


def _join(words: tuple[int, ...]) -> int:
    value = 0
    for word in words:
        value = value << 32 | word
    return value


class DeviceTree:
    """A device tree below a host root, as Linux exports it."""

    def __init__(self, host: HostTree, base: str = "/proc/device-tree") -> None:
        """Read the tree at ``base`` (a host path) through ``host``."""
        self.host = host
        self.base = base
        self._phandles: dict[int, DtNode] | None = None

    def exists(self) -> bool:
        """Tell whether the tree is there."""
        return self.host.path(self.base).is_dir()

    @property
    def root(self) -> DtNode:
        """The root node."""
        return DtNode(self, "/")

    def node(self, path: str) -> DtNode | None:
        """Return the node at an absolute path, or None."""
        node = DtNode(self, path.rstrip("/") or "/")
        return node if self.host.path(node.source).is_dir() else None

    def by_phandle(self, phandle: int) -> DtNode | None:
        """Return the node with this ``phandle``, or None."""
        if self._phandles is None:
            self._phandles = {}
            for node in self.walk():
                cells = node.cells("phandle") or node.cells("linux,phandle")
                if cells:
                    self._phandles[cells[0]] = node
        return self._phandles.get(phandle)

    def walk(self) -> list[DtNode]:
        """Return every node, parents before children."""
        out: list[DtNode] = []
        todo = [self.root]
        while todo:
            node = todo.pop(0)
            out.append(node)
            todo[0:0] = node.children()
        return out

    def resolve(self, spec: str) -> DtNode | None:
        """Resolve a path or an alias (``serial0``), dropping ``:options``."""
        spec = spec.split(":", 1)[0]
        if not spec.startswith("/"):
            aliases = self.node("/aliases")
            target = aliases.string(spec) if aliases is not None else None
            if target is None:
                return None
            spec = target
        return self.node(spec)
