"""The Jailhouse metadata of a domain: ``<metadata><jailhouse:cell>`` in our namespace.

The element holds what libvirt's standard elements cannot say exactly.  Every part is
optional; a part that is present is taken verbatim and replaces what the translator would
otherwise derive from the standard elements::

    <jailhouse:cell xmlns:jailhouse="urn:x-python-jailhouse:domain:1"
                    flags="PASSIVE_COMMREG|VIRTUAL_CONSOLE_PERMITTED" cpu-set-size="8"
                    id="0" vpci-irq-base="0" cpu-reset-address="0x0" msg-reply-timeout="0">
      <jailhouse:cpus>1-2</jailhouse:cpus>
      <jailhouse:memory-regions>
        <jailhouse:region phys="0x3a600000" virt="0x0" size="0x100000"
                          flags="READ|WRITE|EXECUTE|DMA|LOADABLE"/>
      </jailhouse:memory-regions>
      <jailhouse:cache-regions/>   <jailhouse:irqchips/>   <jailhouse:pio-regions/>
      <jailhouse:pci-devices/>     <jailhouse:pci-caps/>   <jailhouse:stream-ids/>
      <jailhouse:console type="UART_8250" address="0x2f8" .../>
      <jailhouse:trailing>00ff</jailhouse:trailing>
      <jailhouse:boot><jailhouse:image file="/demo.bin" address="0x0"/></jailhouse:boot>
    </jailhouse:cell>

Numbers are decimal or ``0x`` hex; flag words are ``|``-separated member names and numbers;
enum fields take a member name or a number.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar, cast

from lxml import etree

from jailhouse.config.model import (
    CacheFlag,
    CacheRegion,
    CacheType,
    CellConfig,
    CellFlag,
    Console,
    ConsoleFlag,
    ConsoleType,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PciCapability,
    PciCapFlag,
    PciDevice,
    PciType,
    PioRegion,
    format_cpus,
)
from jailhouse.domxml._types import BootImage
from jailhouse.domxml._xml import (
    MAX_CELL_CPU,
    NS,
    PREFIX,
    Where,
    XPath,
    attr_path,
    children,
    parse_cpuset,
    parse_int,
    path_of,
    text_of,
)
from jailhouse.errors import TranslationError, _show

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Metadata", "build_metadata", "read_metadata"]

_U8: Final = 0xFF
_U16: Final = 0xFFFF
_U32: Final = 0xFFFF_FFFF
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF
_BDF: Final = re.compile(r"0*([0-9a-fA-F]{1,2}):0*([0-9a-fA-F]{1,2})\.0*([0-9])")
"""``bus:device.function`` in hex, hex and decimal; leading zeros allowed, no sign or space."""

_SHORT_NUMBER: Final = re.compile(r"0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20}")
"""Numbers :func:`parse_int` reads the same way, short enough to need no digit check."""


_NUMBERS: Final[dict[str, int]] = {}
"""Texts :func:`_short_number` has read -> their values (domains repeat ``0x0`` and the like)."""
_NUMBERS_LIMIT: Final = 4096


def _short_number(text: str) -> int | None:
    """Read a :data:`_SHORT_NUMBER` as :func:`parse_int` would; None for anything else."""
    value = _NUMBERS.get(text)
    if value is not None:
        return value
    if not _SHORT_NUMBER.fullmatch(text):
        return None
    value = int(text, 16) if text[:2] in ("0x", "0X") else int(text)
    if len(_NUMBERS) < _NUMBERS_LIMIT:  # a hostile document cannot grow it further
        _NUMBERS[text] = value
    return value


_CELL_ATTRS: Final = {
    "name-hex",
    "arch",
    "flags",
    "cpu-set-size",
    "id",
    "vpci-irq-base",
    "cpu-reset-address",
    "msg-reply-timeout",
}
_CONTAINERS: Final = {  # container -> its item element, and the Metadata field it fills
    "memory-regions": ("region", "mem_regions"),
    "cache-regions": ("cache", "cache_regions"),
    "irqchips": ("irqchip", "irqchips"),
    "pio-regions": ("pio", "pio_regions"),
    "pci-devices": ("pci-device", "pci_devices"),
    "pci-caps": ("pci-cap", "pci_caps"),
    "stream-ids": ("stream-id", "stream_ids"),
    "boot": ("image", "images"),
}
_SINGLES: Final = {"cpus", "console", "trailing"}
_PARTS: Final = {f"{{{NS}}}{local}": local for local in (*_CONTAINERS, *_SINGLES)}
"""The tag of each part of ``<jailhouse:cell>`` -> its local name."""

_E = TypeVar("_E", bound=enum.IntEnum)
_F = TypeVar("_F", bound=enum.IntFlag)
_M = TypeVar("_M", bound=enum.IntEnum | enum.IntFlag)


def _q(local: str) -> str:
    return f"{{{NS}}}{local}"


@dataclass(slots=True)
class Metadata:
    """The parts of ``<jailhouse:cell>``; ``None`` means "not given, derive it".

    Attributes:
        wheres: Where each part that was given is, by part name (for errors and notes);
            an :class:`~jailhouse.domxml._xml.XPath` turns into text only when asked.
    """

    element: etree._Element | None = None
    name: str | None = None
    arch: int | None = None
    flags: CellFlag | None = None
    cpu_set_size: int | None = None
    id: int | None = None
    vpci_irq_base: int | None = None
    cpu_reset_address: int | None = None
    msg_reply_timeout: int | None = None
    cpus: frozenset[int] | None = None
    mem_regions: tuple[MemoryRegion, ...] | None = None
    cache_regions: tuple[CacheRegion, ...] | None = None
    irqchips: tuple[IrqChip, ...] | None = None
    pio_regions: tuple[PioRegion, ...] | None = None
    pci_devices: tuple[PciDevice, ...] | None = None
    pci_caps: tuple[PciCapability, ...] | None = None
    stream_ids: tuple[int, ...] | None = None
    console: Console | None = None
    trailing: bytes | None = None
    images: tuple[BootImage, ...] | None = None
    wheres: dict[str, XPath] = field(default_factory=dict)

    @property
    def paths(self) -> dict[str, str]:
        """The XPath of each part that was given, by part name."""
        return {part: str(where) for part, where in self.wheres.items()}

    @property
    def given(self) -> bool:
        """Whether the domain had a ``<jailhouse:cell>`` element at all."""
        return self.element is not None

    def path(self, part: str) -> str:
        """Return the XPath of a part, or of the metadata element when it was not given."""
        return str(self.where(part))

    def where(self, part: str) -> Where:
        """Return what :meth:`path` gives, worked out only when it is turned into text."""
        where = self.wheres.get(part)
        if where is not None:
            return where
        if self.element is not None:
            return XPath(self.element)
        return "/domain/metadata"


# -- reading ---------------------------------------------------------------------------------


def read_metadata(
    domain: etree._Element,
) -> tuple[Metadata, list[tuple[etree._Element, str]]]:
    """Find and parse ``<jailhouse:cell>`` under ``/domain/metadata``.

    Returns:
        The parsed metadata and a list of ``(element, reason)`` for ignored duplicates.

    Raises:
        TranslationError: An unknown part, attribute or a bad value, naming it.
    """
    ignored: list[tuple[etree._Element, str]] = []
    found: etree._Element | None = None
    for metadata in domain.findall("metadata"):
        for child in children(metadata):
            if child.tag != _q("cell"):
                if etree.QName(child).namespace == NS:
                    raise TranslationError(
                        path_of(child),
                        etree.QName(child).localname,
                        f"unknown element of the {PREFIX} namespace; expected {PREFIX}:cell",
                    )
                continue
            if found is None:
                found = child
            else:
                ignored.append((child, f"a second {PREFIX}:cell element; only the first is read"))
    if found is None:
        return Metadata(), ignored
    return _parse_cell(found), ignored


def _parse_cell(el: etree._Element) -> Metadata:
    meta = Metadata(element=el)
    wheres = meta.wheres  # XPaths are worked out only for an error or a note
    for name in el.attrib:
        if name not in _CELL_ATTRS:
            raise TranslationError(
                attr_path(el, str(name)), el.get(name), f"unknown attribute of {PREFIX}:cell"
            )
    name_hex = el.get("name-hex")
    if name_hex is not None:
        where = XPath(el, "name-hex")
        raw = _hex_bytes(name_hex, str(where))
        if len(raw) > 32:
            raise TranslationError(str(where), name_hex, "a cell name is at most 32 bytes")
        meta.name = raw.decode("latin-1")
        wheres["name"] = where
    meta.arch = _opt_int(el, "arch", _U8, meta)
    flags = el.get("flags")
    if flags is not None:
        where = wheres["flags"] = XPath(el, "flags")
        meta.flags = _parse_flags(flags, CellFlag, where, _U32)
    meta.cpu_set_size = _opt_int(el, "cpu-set-size", _U32, meta)
    meta.id = _opt_int(el, "id", _U32, meta)
    meta.vpci_irq_base = _opt_int(el, "vpci-irq-base", _U32, meta)
    meta.cpu_reset_address = _opt_int(el, "cpu-reset-address", _U64, meta)
    meta.msg_reply_timeout = _opt_int(el, "msg-reply-timeout", _U64, meta)

    seen: set[str] = set()
    for child in children(el):
        tag = child.tag
        known = _PARTS.get(str(tag))
        if known is None:
            raise TranslationError(
                path_of(child),
                etree.QName(child).localname,
                f"unknown part of {PREFIX}:cell; expected one of "
                + ", ".join(sorted(_CONTAINERS.keys() | _SINGLES)),
            )
        local = known
        if local in seen:
            raise TranslationError(path_of(child), local, f"{PREFIX}:{local} may appear only once")
        seen.add(local)
        where = wheres[local] = XPath(child)
        if local in _CONTAINERS:
            _parse_container(child, local, meta)
        elif local == "cpus":
            _no_attrs(child)
            text = text_of(child).strip()
            meta.cpus = parse_cpuset(text, where, limit=MAX_CELL_CPU) if text else frozenset()
        elif local == "console":
            meta.console = _parse_console(child, where)
        else:  # trailing
            _no_attrs(child)
            meta.trailing = _hex_bytes(text_of(child).strip(), where)
    return meta


def _parse_container(el: etree._Element, local: str, meta: Metadata) -> None:
    _no_attrs(el)
    item, field_name = _CONTAINERS[local]
    parse = _ITEM_PARSERS[item]
    tag = _q(item)
    values = []
    for child in el:
        if child.tag == tag:
            values.append(parse(child, None))  # XPaths are built only for an error
        elif isinstance(child.tag, str):  # comments and processing instructions pass
            raise TranslationError(
                path_of(child),
                etree.QName(child).localname,
                f"{PREFIX}:{local} holds only {PREFIX}:{item} elements",
            )
    # Each item parser returns the type of its container's field (see _ITEM_PARSERS).
    setattr(meta, field_name, tuple(values))


class _Attrs:
    """Reads the attributes of one element, refusing unknown ones.

    ``path`` is the element's XPath where the caller has it; otherwise it is worked out
    only when an error needs it.
    """

    def __init__(self, el: etree._Element, known: Sequence[str], path: Where | None) -> None:
        self.el = el
        self.path = path
        for name in el.attrib:
            if name not in known:
                raise TranslationError(
                    attr_path(el, str(name)),
                    el.get(name),
                    f"unknown attribute; {PREFIX}:{etree.QName(el).localname} takes "
                    + ", ".join(known),
                )
        if text_of(el).strip():
            raise TranslationError(path_of(el), text_of(el), "this element takes no text")

    def where(self, name: str) -> str:
        """Return the XPath of attribute ``name``, as :func:`attr_path` does."""
        return f"{path_of(self.el) if self.path is None else self.path}/@{name}"

    def lazy(self, name: str) -> Where:
        """Return the XPath of attribute ``name``, to be worked out only if an error needs it."""
        return XPath(self.el, name) if self.path is None else self.where(name)

    def number(self, name: str, limit: int, *, required: bool = False) -> int:
        text = self.el.get(name)
        if text is None:
            if required:
                raise TranslationError(self.where(name), None, "this attribute is required")
            return 0
        value = _short_number(text)  # the usual case: no XPath to build
        if value is not None and value <= limit:
            return value
        return parse_int(text, self.where(name), limit=limit)  # raises with the XPath

    def words(self, name: str, count: int) -> tuple[int, ...]:
        text = self.el.get(name)
        if text is None:
            return (0,) * count
        parts = text.split()
        if len(parts) == count:
            values = [_short_number(p) for p in parts]
            if all(v is not None and v <= _U32 for v in values):
                return tuple(v for v in values if v is not None)
        where = self.where(name)  # something is wrong: the slow path names it
        if len(parts) != count:
            raise TranslationError(where, text, f"expected {count} numbers separated by spaces")
        return tuple(parse_int(p, where, limit=_U32) for p in parts)

    def flags(self, name: str, cls: type[_F], limit: int) -> _F:
        text = self.el.get(name)
        if text is None:
            return cls(0)
        seen = _FLAG_WORDS.get((cls, text))
        if seen is not None and seen[1] <= limit:
            return cast("_F", seen[0])
        members = _members(cls)
        value = 0
        for token in text.split("|"):
            bit = members.get(token.strip())
            if bit is None:  # a number, or a mistake: the slow path reads or names it
                member = _parse_flags(text, cls, self.lazy(name), limit)
                value = int(member)
                break
            value |= bit
        else:
            if value > limit:
                return _parse_flags(text, cls, self.lazy(name), limit)  # raises, naming it
            member = _member(cls, value)
        if len(_FLAG_WORDS) < _MEMBERS_SEEN_LIMIT:  # a hostile document cannot grow it
            _FLAG_WORDS[cls, text] = (member, value)
        return member

    def choice(self, name: str, cls: type[_E], limit: int, default: int = 0) -> _E:
        text = self.el.get(name)
        if text is None:
            return cls(default)
        value = _members(cls).get(text)
        if value is not None:
            return _member(cls, value)
        return _parse_enum(text, cls, self.where(name), limit)

    def boolean(self, name: str) -> bool:
        text = self.el.get(name)
        if text is None or text == "no":
            return False
        if text == "yes":
            return True
        raise TranslationError(self.where(name), text, "expected yes or no")


def _parse_region(el: etree._Element, path: str | None) -> MemoryRegion:
    a = _Attrs(el, ("phys", "virt", "size", "flags"), path)
    return MemoryRegion(
        a.number("phys", _U64),
        a.number("virt", _U64),
        a.number("size", _U64),
        a.flags("flags", MemFlag, _U64),
    )


def _parse_cache(el: etree._Element, path: str | None) -> CacheRegion:
    a = _Attrs(el, ("start", "size", "type", "flags"), path)
    return CacheRegion(
        a.number("start", _U32),
        a.number("size", _U32),
        a.choice("type", CacheType, _U8, CacheType.L3),
        a.flags("flags", CacheFlag, _U16),
    )


def _parse_irqchip(el: etree._Element, path: str | None) -> IrqChip:
    a = _Attrs(el, ("address", "id", "pin-base", "pin-bitmap"), path)
    w = a.words("pin-bitmap", 4)
    return IrqChip(
        a.number("address", _U64),
        a.number("id", _U32),
        a.number("pin-base", _U32),
        (w[0], w[1], w[2], w[3]),
    )


def _parse_pio(el: etree._Element, path: str | None) -> PioRegion:
    a = _Attrs(el, ("base", "length"), path)
    return PioRegion(a.number("base", _U16), a.number("length", _U16))


_PCI_ATTRS: Final = (
    "type",
    "domain",
    "bdf",
    "iommu",
    "bar-mask",
    "caps-start",
    "num-caps",
    "msi-vectors",
    "msi-64bits",
    "msi-maskable",
    "msix-vectors",
    "msix-region-size",
    "msix-address",
    "shmem-regions-start",
    "shmem-dev-id",
    "shmem-peers",
    "shmem-protocol",
)


def _parse_pci_device(el: etree._Element, path: str | None) -> PciDevice:
    a = _Attrs(el, _PCI_ATTRS, path)
    if el.get("type") is None:
        raise TranslationError(attr_path(el, "type"), None, "this attribute is required")
    bdf_text = el.get("bdf")
    if bdf_text is None:
        raise TranslationError(attr_path(el, "bdf"), None, "this attribute is required")
    m = a.words("bar-mask", 6)
    return PciDevice(
        type=a.choice("type", PciType, _U8),
        domain=a.number("domain", _U16),
        bdf=parse_bdf(bdf_text, a.lazy("bdf")),
        iommu=a.number("iommu", _U8),
        bar_mask=(m[0], m[1], m[2], m[3], m[4], m[5]),
        caps_start=a.number("caps-start", _U16),
        num_caps=a.number("num-caps", _U16),
        num_msi_vectors=a.number("msi-vectors", _U8),
        msi_64bits=a.boolean("msi-64bits"),
        msi_maskable=a.boolean("msi-maskable"),
        num_msix_vectors=a.number("msix-vectors", _U16),
        msix_region_size=a.number("msix-region-size", _U16),
        msix_address=a.number("msix-address", _U64),
        shmem_regions_start=a.number("shmem-regions-start", _U32),
        shmem_dev_id=a.number("shmem-dev-id", _U8),
        shmem_peers=a.number("shmem-peers", _U8),
        shmem_protocol=a.number("shmem-protocol", _U16),
    )


def _parse_pci_cap(el: etree._Element, path: str | None) -> PciCapability:
    a = _Attrs(el, ("id", "start", "len", "flags"), path)
    return PciCapability(
        a.number("id", _U16),
        a.number("start", _U16),
        a.number("len", _U16),
        a.flags("flags", PciCapFlag, _U16),
    )


def _parse_stream_id(el: etree._Element, path: str | None) -> int:
    a = _Attrs(el, ("value",), path)
    return a.number("value", _U32, required=True)


def _parse_image(el: etree._Element, path: str | None) -> BootImage:
    a = _Attrs(el, ("file", "address"), path)
    file = el.get("file")
    if not file:
        raise TranslationError(attr_path(el, "file"), file, "an image needs a file")
    return BootImage(file, a.number("address", _U64, required=True))


_ITEM_PARSERS: Final[dict[str, Callable[[etree._Element, str | None], object]]] = {
    "region": _parse_region,
    "cache": _parse_cache,
    "irqchip": _parse_irqchip,
    "pio": _parse_pio,
    "pci-device": _parse_pci_device,
    "pci-cap": _parse_pci_cap,
    "stream-id": _parse_stream_id,
    "image": _parse_image,
}
"""The parser of each container's item element."""


def _parse_console(el: etree._Element, path: Where | None) -> Console:
    a = _Attrs(el, ("type", "address", "size", "flags", "divider", "gate-nr", "clock-reg"), path)
    return Console(
        address=a.number("address", _U64),
        size=a.number("size", _U32),
        type=a.choice("type", ConsoleType, _U16),
        flags=a.flags("flags", ConsoleFlag, _U16),
        divider=a.number("divider", _U32),
        gate_nr=a.number("gate-nr", _U32),
        clock_reg=a.number("clock-reg", _U64),
    )


def _opt_int(el: etree._Element, name: str, limit: int, meta: Metadata) -> int | None:
    text = el.get(name)
    if text is None:
        return None
    where = meta.wheres[name] = XPath(el, name)
    value = _short_number(text)  # the usual case: no XPath to build
    if value is not None and value <= limit:
        return value
    return parse_int(text, where, limit=limit)  # raises with the XPath


def _no_attrs(el: etree._Element) -> None:
    for name in el.attrib:
        raise TranslationError(attr_path(el, str(name)), el.get(name), "unknown attribute")


def _hex_bytes(text: str, where: Where) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise TranslationError(
            str(where), text, "expected hexadecimal bytes such as 00ff"
        ) from None


@functools.cache
def _members(cls: type[enum.Enum]) -> dict[str, int]:
    """Map the names of an enum's (or flag's) named members to their values, once per enum."""
    return {m.name: m.value for m in cls if m.name}


_MEMBERS_SEEN: Final[dict[tuple[type[enum.Enum], int], enum.Enum]] = {}
_MEMBERS_SEEN_LIMIT: Final = 1024
_FLAG_WORDS: Final[dict[tuple[type[enum.Enum], str], tuple[enum.Enum, int]]] = {}
"""``(flag class, text of member names)`` -> the flag word and its value, once read."""


def _member(cls: type[_M], value: int) -> _M:
    """Return ``cls(value)``: a lookup once a value has been seen, not an enum call."""
    member = _MEMBERS_SEEN.get((cls, value))
    if member is None:
        member = cls(value)
        if len(_MEMBERS_SEEN) < _MEMBERS_SEEN_LIMIT:  # a hostile document cannot grow it
            _MEMBERS_SEEN[cls, value] = member
    return cast("_M", member)


def _parse_flags(text: str, cls: type[_F], where: Where, limit: int) -> _F:
    """Parse ``READ|WRITE|0x100000`` into a flag word."""
    value = 0
    members = _members(cls)
    for raw in text.split("|"):
        token = raw.strip()
        if token in members:
            value |= members[token]
        elif token and token[0].isdigit():
            value |= parse_int(token, where, limit=limit)
        else:
            raise TranslationError(
                str(where),
                text,
                f"{_show(token)} is no {cls.__name__} member; use "
                + ", ".join(members)
                + " or numbers",
            )
    if value > limit:
        raise TranslationError(str(where), text, f"does not fit in the field (at most {limit:#x})")
    return cls(value)


def _parse_enum(text: str, cls: type[_E], where: str, limit: int) -> _E:
    members = _members(cls)
    if text in members:
        return cls(members[text])
    if text and text[0].isdigit():
        return cls(parse_int(text, where, limit=limit))
    raise TranslationError(
        where, text, f"no {cls.__name__} member; use " + ", ".join(members) + " or a number"
    )


def parse_bdf(text: str, where: Where) -> int:
    """Parse ``bb:dd.f`` (hex bus and device, function 0-7) or a plain number into a bdf."""
    if ":" in text:
        match = _BDF.fullmatch(text)
        b, d, f = (-1, -1, -1)
        if match is not None:
            b, d, f = int(match[1], 16), int(match[2], 16), int(match[3])
        if not 0 <= b <= _U8 or not 0 <= d <= 0x1F or not 0 <= f <= 7:
            raise TranslationError(str(where), text, "expected bus:device.function such as 00:1f.2")
        return b << 8 | d << 3 | f
    return parse_int(text, where, limit=_U16)


# -- writing ---------------------------------------------------------------------------------


def format_flags(value: int, cls: type[enum.IntFlag]) -> str:
    """Render a flag word as ``READ|WRITE`` plus any unknown bits in hex (``0`` when none)."""
    parts: list[str] = []
    rest = int(value)
    for member in cls:
        if member.name and rest & member.value == member.value and member.value:
            parts.append(member.name)
            rest &= ~member.value
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or "0"


def _format_enum(value: enum.IntEnum) -> str:
    cls = type(value)
    if int(value) in cls._value2member_map_:
        return str(value.name)
    return hex(int(value))


def format_bdf(bdf: int) -> str:
    """Render a bdf as ``bb:dd.f``."""
    return f"{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7:x}"


def _sub(parent: etree._Element, local: str, attrs: dict[str, str] | None = None) -> etree._Element:
    el = etree.SubElement(parent, _q(local))
    for key, value in (attrs or {}).items():
        el.set(key, value)
    return el


def _nonzero(attrs: dict[str, int]) -> dict[str, str]:
    return {k: hex(v) if v >= 0x1000 else str(v) for k, v in attrs.items() if v}


def build_metadata(
    cell: CellConfig, images: Sequence[BootImage], *, name_hex: bool, arch: bool
) -> etree._Element:
    """Build ``<jailhouse:cell>`` holding everything of ``cell`` exactly.

    Args:
        cell: The config.
        images: Bare-metal boot images to record.
        name_hex: Record the name as hex (it cannot be a libvirt ``<name>``).
        arch: Record the architecture byte (it has no libvirt name).
    """
    el = etree.Element(_q("cell"), nsmap={PREFIX: NS})
    if name_hex:
        el.set("name-hex", cell.name.encode("latin-1").hex())
    if arch:
        el.set("arch", str(int(cell.arch)))
    el.set("flags", format_flags(cell.flags, CellFlag))
    el.set("cpu-set-size", str(cell.cpu_set_size))
    el.set("id", str(cell.id))
    el.set("vpci-irq-base", str(cell.vpci_irq_base))
    el.set("cpu-reset-address", hex(cell.cpu_reset_address))
    el.set("msg-reply-timeout", str(cell.msg_reply_timeout))
    cpus = _sub(el, "cpus")
    cpus.text = format_cpus(cell.cpus)
    regions = _sub(el, "memory-regions")
    for r in cell.mem_regions:
        _sub(
            regions,
            "region",
            {
                "phys": hex(r.phys_start),
                "virt": hex(r.virt_start),
                "size": hex(r.size),
                "flags": format_flags(r.flags, MemFlag),
            },
        )
    caches = _sub(el, "cache-regions")
    for c in cell.cache_regions:
        _sub(
            caches,
            "cache",
            {
                "start": str(c.start),
                "size": str(c.size),
                "type": _format_enum(c.type),
                "flags": format_flags(c.flags, CacheFlag),
            },
        )
    chips = _sub(el, "irqchips")
    for chip in cell.irqchips:
        _sub(
            chips,
            "irqchip",
            {
                "address": hex(chip.address),
                "id": hex(chip.id),
                "pin-base": str(chip.pin_base),
                "pin-bitmap": " ".join(hex(w) for w in chip.pin_bitmap),
            },
        )
    pios = _sub(el, "pio-regions")
    for p in cell.pio_regions:
        _sub(pios, "pio", {"base": hex(p.base), "length": hex(p.length)})
    devices = _sub(el, "pci-devices")
    for d in cell.pci_devices:
        attrs = {
            "type": _format_enum(d.type),
            "domain": f"{d.domain:#06x}",
            "bdf": format_bdf(d.bdf),
        }
        if any(d.bar_mask):
            attrs["bar-mask"] = " ".join(f"{m:#010x}" for m in d.bar_mask)
        attrs.update(
            _nonzero(
                {
                    "iommu": d.iommu,
                    "caps-start": d.caps_start,
                    "num-caps": d.num_caps,
                    "msi-vectors": d.num_msi_vectors,
                }
            )
        )
        if d.msi_64bits:
            attrs["msi-64bits"] = "yes"
        if d.msi_maskable:
            attrs["msi-maskable"] = "yes"
        attrs.update(
            _nonzero(
                {
                    "msix-vectors": d.num_msix_vectors,
                    "msix-region-size": d.msix_region_size,
                    "msix-address": d.msix_address,
                    "shmem-regions-start": d.shmem_regions_start,
                    "shmem-dev-id": d.shmem_dev_id,
                    "shmem-peers": d.shmem_peers,
                    "shmem-protocol": d.shmem_protocol,
                }
            )
        )
        _sub(devices, "pci-device", attrs)
    caps = _sub(el, "pci-caps")
    for cap in cell.pci_caps:
        _sub(
            caps,
            "pci-cap",
            {
                "id": hex(cap.id),
                "start": hex(cap.start),
                "len": str(cap.len),
                "flags": format_flags(cap.flags, PciCapFlag),
            },
        )
    streams = _sub(el, "stream-ids")
    for sid in cell.stream_ids:
        _sub(streams, "stream-id", {"value": hex(sid)})
    con = cell.console
    _sub(
        el,
        "console",
        {
            "type": _format_enum(con.type),
            "address": hex(con.address),
            "size": hex(con.size),
            "flags": format_flags(con.flags, ConsoleFlag),
            "divider": str(con.divider),
            "gate-nr": str(con.gate_nr),
            "clock-reg": hex(con.clock_reg),
        },
    )
    if cell.trailing:
        _sub(el, "trailing").text = cell.trailing.hex()
    if images:
        boot = _sub(el, "boot")
        for image in images:
            _sub(boot, "image", {"file": image.path, "address": hex(image.address)})
    return el
