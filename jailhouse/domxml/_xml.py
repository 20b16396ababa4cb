"""Hardened XML parsing and the value grammars libvirt uses (units, cpusets, PCI numbers).

Everything here raises :class:`~jailhouse.errors.TranslationError` naming the element or
attribute by XPath and the offending value.  The parser never resolves entities, never
loads a DTD, never touches the network and refuses any document type declaration, so an
XXE or billion-laughs document is one clear error and never a file read.
"""

from __future__ import annotations

import codecs
import contextlib
import re
import threading
from typing import TYPE_CHECKING, Final, TypeAlias

from lxml import etree

from jailhouse.errors import TranslationError, _show

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "LIBVIRT_MAX_CPU",
    "MAX_CELL_CPU",
    "MAX_DIGITS",
    "MAX_DOCUMENT_BYTES",
    "NS",
    "PREFIX",
    "Where",
    "XPath",
    "attr_path",
    "child_paths",
    "children",
    "numbering",
    "parse_cpuset",
    "parse_decimal",
    "parse_document",
    "parse_int",
    "parse_pci_number",
    "parse_scaled",
    "path_of",
    "scale_of",
    "scaled_bytes",
    "text_of",
]

NS: Final = "urn:x-python-jailhouse:domain:1"
"""XML namespace of the Jailhouse metadata (prefix ``jailhouse``)."""
PREFIX: Final = "jailhouse"
"""Prefix the translator writes for :data:`NS`."""
MAX_DOCUMENT_BYTES: Final = 1 << 20
"""Largest domain XML accepted (1 MiB); real domain XML is a few KiB."""
LLONG_MAX: Final = (1 << 63) - 1
"""libvirt's limit for a scaled value in bytes."""

_XML_DECLARATION: Final = re.compile(r"\A\ufeff?\s*<\?xml[^>]*\?>")
_DOCTYPE: Final = re.compile(r"<!DOCTYPE[^>\[]*")
_DECIMAL: Final = re.compile(r"[0-9]+")
_C_SPACE_AND_SIGN: Final = re.compile(r"[ \t\n\v\f\r]*\+?")
"""What C ``strtoul`` skips before the digits (libvirt's number parsers use it)."""
_HEX_OR_DECIMAL: Final = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_C_INTEGER: Final = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_UNIT_POWERS: Final = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
MAX_DIGITS: Final = 30
"""Most significant digits a number may have (after ``0x`` and leading zeros).

No field takes more than 20 decimal digits (2**64); the bound also keeps ``int()`` off
Python's limit on converting long decimal strings (``sys.get_int_max_str_digits``).
"""
MAX_CELL_CPU: Final = 32767
"""Highest CPU a cell config can hold: ``cpu_set_size`` is at most 4096 bytes (the driver's
EINVAL above that, ABI fact sheet), a bitmap of 32768 CPUs."""
LIBVIRT_MAX_CPU: Final = 16383
"""Highest CPU a libvirt cpuset may name: libvirt parses them into bitmaps of
``VIR_DOMAIN_CPUMASK_LEN`` = 16384 bits (src/conf/domain_conf.h) and refuses a larger
number ("Failed to parse bitmap")."""


def parse_document(xml: str | bytes) -> etree._Element:
    """Parse a domain XML document safely and return its ``<domain>`` root.

    The text is decoded and screened in Python first: a document type declaration is
    refused before libxml2 sees it (libxml2 opens the files of external parameter entities
    even with entity resolution and DTD loading off).  libxml2 then parses vetted UTF-8
    with entities, DTDs and network access disabled.

    Args:
        xml: The document, as text or as encoded bytes.

    Returns:
        The root element.

    Raises:
        TranslationError: The input is too large, not decodable or not well-formed,
            declares a document type (entities), or its root is not ``<domain>``.
    """
    if isinstance(xml, str):
        _check_size(len(xml.encode("utf-8", "surrogatepass")))
        text = xml
    elif isinstance(xml, bytes | bytearray | memoryview):
        data = bytes(xml)
        _check_size(len(data))
        text = _decode(data)
    else:
        raise TranslationError("/", type(xml).__name__, "domain XML must be str or bytes")
    text = _XML_DECLARATION.sub("", text, count=1)
    doctype = _DOCTYPE.search(text)
    if doctype is not None:
        raise TranslationError(
            "/",
            doctype.group(0).strip(),
            "document type declarations are refused: their entities could read files or "
            "expand without bound",
        )
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    try:
        root = etree.fromstring(text.encode("utf-8"), parser)
    except (etree.XMLSyntaxError, ValueError, UnicodeError) as exc:
        # libxml2's text spans lines ("out of allowed range\n, line 1"): make it one
        detail = " ".join(str(exc).split()).replace(" ,", ",")
        # libxml2's advice for deep documents names a flag no caller of ours can set
        detail = detail.replace(", use XML_PARSE_HUGE option", " (the most libxml2 reads)")
        raise TranslationError("/", None, f"not well-formed XML: {detail}") from exc
    if root is None:
        raise TranslationError("/", None, "the document is empty")
    for node in root.iter(etree.Entity):
        parent = node.getparent()
        raise TranslationError(
            "/" if parent is None else path_of(parent), str(node), "entity references are refused"
        )
    if root.tag != "domain":
        raise TranslationError(
            "/" + _step(root), _tag_text(root), "expected a libvirt <domain> document"
        )
    return root


def _check_size(size: int) -> None:
    if size > MAX_DOCUMENT_BYTES:
        raise TranslationError(
            "/",
            size,
            f"the document is larger than {MAX_DOCUMENT_BYTES} bytes; refusing to parse it",
        )


_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_NO_BOM: Final = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)
_DECLARED_ENCODING: Final = re.compile(
    rb"\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"']"
)


def _decode(data: bytes) -> str:
    """Decode a document's bytes the way an XML parser detects the encoding."""
    encoding = "utf-8"
    body = data
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, body = name, data[len(bom) :]
            break
    else:
        for start, name in _NO_BOM:
            if data.startswith(start):
                encoding = name
                break
        else:
            declared = _DECLARED_ENCODING.match(data)
            if declared is not None:
                encoding = declared.group(1).decode("ascii")
    try:
        return body.decode(encoding)
    except LookupError:
        raise TranslationError("/", encoding, "unknown character encoding") from None
    except UnicodeDecodeError as exc:
        raise TranslationError("/", None, f"not well-formed XML: not {encoding}: {exc}") from exc


def children(el: etree._Element) -> Iterator[etree._Element]:
    """Yield the element children of ``el`` (no comments or processing instructions)."""
    for child in el:
        if isinstance(child.tag, str):
            yield child


_TAG_TEXTS: Final[dict[object, str]] = {}
"""Tag -> its XPath name, for plain and metadata tags (which need no prefix lookup)."""
_TAG_TEXTS_LIMIT: Final = 1024


def _tag_text(el: etree._Element) -> str:
    tag = el.tag
    text = _TAG_TEXTS.get(tag)
    if text is not None:
        return text
    tag = str(tag)
    if not tag.startswith("{"):
        text = tag
    else:
        namespace, _, local = tag[1:].partition("}")
        if namespace != NS:
            return f"{el.prefix or 'ns'}:{local}"  # the prefix is the element's own
        text = f"{PREFIX}:{local}"
    if len(_TAG_TEXTS) < _TAG_TEXTS_LIMIT:  # a hostile document cannot grow it further
        _TAG_TEXTS[tag] = text
    return text


_STEP_CACHE_SIZE: Final = 64


class _StepCache(threading.local):
    """The XPath steps of the children of the last few parents, per thread, while reading.

    A document with thousands of same-tag siblings (vCPU pins, consoles) gets a path for
    each; numbering a parent's children once keeps that linear where counting the siblings
    of each one was quadratic.  ``steps`` maps a parent to each element child's step, least
    recently used first, so ancestors stay while leaves pass through.  Only a reader that
    leaves its tree alone may keep them: :func:`numbering` turns the cache on around one
    translation and empties it afterwards; outside it every path is worked out afresh.
    """

    def __init__(self) -> None:
        self.active = 0
        self.steps: dict[etree._Element, dict[etree._Element, str]] = {}


_step_cache = _StepCache()


@contextlib.contextmanager
def numbering() -> Iterator[None]:
    """Keep the numbered children of the elements paths are asked for, until the block ends.

    The block must not change the trees it asks paths of.  Nested blocks share one cache;
    the outermost one empties it, dropping the elements it holds.
    """
    cache = _step_cache
    cache.active += 1
    try:
        yield
    finally:
        cache.active -= 1
        if not cache.active:
            cache.steps.clear()


def _child_steps(parent: etree._Element) -> dict[etree._Element, str]:
    """Return the step of each element child of ``parent``, in document order."""
    cache = _step_cache
    steps = cache.steps.pop(parent, None) if cache.active else None
    if steps is None:
        kids = list(children(parent))
        total: dict[object, int] = {}
        for kid in kids:
            total[kid.tag] = total.get(kid.tag, 0) + 1
        seen: dict[object, int] = {}
        steps = {}
        for kid in kids:
            tag = kid.tag
            if total[tag] == 1:
                steps[kid] = _tag_text(kid)
            else:
                seen[tag] = position = seen.get(tag, 0) + 1
                steps[kid] = f"{_tag_text(kid)}[{position}]"
        if not cache.active:
            return steps
        if len(cache.steps) >= _STEP_CACHE_SIZE:
            del cache.steps[next(iter(cache.steps))]  # the least recently used
    cache.steps[parent] = steps  # (again) the most recently used
    return steps


def _step(el: etree._Element) -> str:
    parent = el.getparent()
    if parent is None:
        return _tag_text(el)
    return _child_steps(parent)[el]


def path_of(el: etree._Element) -> str:
    """Return the XPath of an element, such as ``/domain/devices/disk[2]``."""
    steps: list[str] = []
    node: etree._Element | None = el
    while node is not None:
        steps.append(_step(node))
        node = node.getparent()
    return "/" + "/".join(reversed(steps))


def child_paths(parent: etree._Element, parent_path: str) -> Iterator[tuple[etree._Element, str]]:
    """Yield the element children of ``parent`` with their XPaths, as :func:`path_of` gives them.

    Args:
        parent: The element.
        parent_path: Its XPath (``path_of(parent)``).
    """
    for kid, step in _child_steps(parent).items():
        yield kid, f"{parent_path}/{step}"


class XPath:
    """The XPath of an element or of one of its attributes, worked out when first needed.

    Parsers take it as their ``where`` and turn it into text only to raise (or to name
    something): most values are fine, and their paths are never built.
    """

    __slots__ = ("_attr", "_el", "_text")

    def __init__(self, el: etree._Element, attr: str | None = None) -> None:
        """Point at ``el``, or at its attribute ``attr``."""
        self._el = el
        self._attr = attr
        self._text: str | None = None

    def __str__(self) -> str:
        """Return the path, as :func:`path_of` or :func:`attr_path` give it."""
        if self._text is None:
            self._text = (
                path_of(self._el) if self._attr is None else attr_path(self._el, self._attr)
            )
        return self._text


Where: TypeAlias = "str | XPath"
"""Where a value comes from: an XPath, or an :class:`XPath` to work out on demand."""


def attr_path(el: etree._Element, name: str) -> str:
    """Return the XPath of an attribute, such as ``/domain/vcpu/@cpuset``."""
    return f"{path_of(el)}/@{name}"


def text_of(el: etree._Element) -> str:
    """Return the text content of an element ("" when empty)."""
    return el.text or ""


def parse_int(text: str, where: Where, *, limit: int | None = None) -> int:
    """Parse an unsigned integer written in decimal or ``0x`` hex (our metadata).

    Raises:
        TranslationError: Not such a number, or above ``limit``.
    """
    if not _HEX_OR_DECIMAL.fullmatch(text):
        raise TranslationError(str(where), text, "expected an unsigned number (decimal or 0x hex)")
    if text[:2].lower() == "0x":
        value = int(_significant(text[2:], text, where), 16)
    else:
        value = int(_significant(text, text, where))
    if limit is not None and value > limit:
        raise TranslationError(str(where), text, f"must be at most {limit:#x}")
    return value


def _significant(digits: str, text: str, where: Where) -> str:
    """Return ``digits`` without leading zeros, refusing more than :data:`MAX_DIGITS`.

    Args:
        digits: The digits of a number already matched by a grammar (no sign, no prefix).
        text: The whole value, for the error.
        where: XPath of the element or attribute, for the error.

    Raises:
        TranslationError: More than :data:`MAX_DIGITS` significant digits.
    """
    significant = digits.lstrip("0") or "0"
    if len(significant) > MAX_DIGITS:
        raise TranslationError(
            str(where),
            text,
            f"a number of {len(significant)} digits; no field takes more than {MAX_DIGITS}",
        )
    return significant


_SHORT: Final = 20
"""Texts up to this long are read through the memos below (no number has more digits)."""
_MEMO_LIMIT: Final = 1024
_PCI_NUMBERS: Final[dict[str, int]] = {}
"""Texts :func:`parse_pci_number` has read -> their values (``0x0000`` and the like repeat)."""
_CPUSETS: Final[dict[tuple[str, int], frozenset[int]]] = {}
"""``(text, limit)`` -> the CPUs, for cpusets :func:`parse_cpuset` has read."""


def parse_decimal(text: str, where: Where, *, limit: int | None = None) -> int:
    """Parse an unsigned decimal the way libvirt does (C ``strtoul``, the whole text).

    Leading white space and a ``+`` are allowed; a ``-``, anything after the digits
    (trailing spaces too) and other bases are not.

    Raises:
        TranslationError: Not such a number, or above ``limit``.
    """
    if len(text) <= _SHORT and text.isascii() and text.isdigit():  # the usual case
        value = int(text)
        if limit is None or value <= limit:
            return value
    digits = _strtoul_digits(text)
    if not _DECIMAL.fullmatch(digits):
        raise TranslationError(str(where), text, "expected an unsigned decimal number")
    value = int(_significant(digits, text, where))
    if limit is not None and value > limit:
        raise TranslationError(str(where), text, f"must be at most {limit}")
    return value


def _strtoul_digits(text: str) -> str:
    """Return ``text`` after the white space and ``+`` that C ``strtoul`` skips."""
    lead = _C_SPACE_AND_SIGN.match(text)  # always matches, maybe nothing
    return text[lead.end() :] if lead else text


def parse_pci_number(text: str, where: Where, *, limit: int) -> int:
    """Parse a PCI address number as libvirt does (C ``strtoul`` base 0: hex, octal, decimal).

    Leading white space and a ``+`` are allowed, as ``strtoul`` skips them.

    Raises:
        TranslationError: Not such a number, or above ``limit``.
    """
    seen = _PCI_NUMBERS.get(text)
    if seen is not None and seen <= limit:
        return seen
    digits = _strtoul_digits(text)
    if not _C_INTEGER.fullmatch(digits):
        raise TranslationError(str(where), text, "expected a number such as 0x1f")
    if digits[:2].lower() == "0x":
        value = int(_significant(digits[2:], text, where), 16)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(_significant(digits, text, where), 8)
    else:
        value = int(_significant(digits, text, where))
    if value > limit:
        raise TranslationError(str(where), text, f"must be at most {limit:#x}")
    if len(_PCI_NUMBERS) < _MEMO_LIMIT:  # a hostile document cannot grow it further
        _PCI_NUMBERS[text] = value
    return value


def scale_of(unit: str | None, default: int, where: Where) -> int:
    """Return the byte factor of a libvirt unit suffix (``virScaleInteger``).

    ``b``/``byte``/``bytes`` are bytes; ``k``, ``M``, ``G``... alone or followed by ``iB``
    are powers of 1024; followed by ``B`` they are powers of 1000; case is ignored.  No unit
    (or an empty one) means ``default``.

    Raises:
        TranslationError: An unknown suffix.
    """
    if not unit:
        return default
    lower = unit.lower()
    if lower in ("b", "byte", "bytes"):
        return 1
    power = _UNIT_POWERS.get(lower[0])
    rest = lower[1:]
    if power is None or rest not in ("", "ib", "b"):
        raise TranslationError(
            str(where),
            unit,
            "unknown unit; use b, KB, KiB (k), MB, MiB (M), GB, GiB (G), TB, TiB (T), PB, "
            "PiB (P), EB or EiB (E)",
        )
    base = 1000 if rest == "b" else 1024
    return int(base**power)


def parse_scaled(el: etree._Element, *, default_unit: int) -> int:
    """Parse a libvirt scaled size (element text plus ``unit``) into bytes.

    Args:
        el: The element, such as ``<memory unit='MiB'>``.
        default_unit: The factor when there is no unit (1024 for memory, 1 for shmem).

    Returns:
        The size in bytes.

    Raises:
        TranslationError: A bad number or unit, or more than libvirt's limit of
            2**63 - 1 bytes.
    """
    return scaled_bytes(
        text_of(el),
        el.get("unit"),
        where=XPath(el),
        unit_where=XPath(el, "unit"),
        default_unit=default_unit,
    )


def scaled_bytes(
    text: str, unit: str | None, *, where: Where, unit_where: Where, default_unit: int
) -> int:
    """Parse a number and a libvirt unit into bytes (see :func:`parse_scaled`).

    Raises:
        TranslationError: A bad number or unit, or more than 2**63 - 1 bytes.
    """
    value = parse_decimal(text, where)
    size = value * scale_of(unit, default_unit, unit_where)
    if size > LLONG_MAX:
        raise TranslationError(str(where), text, "larger than libvirt's limit of 2**63 - 1 bytes")
    return size


def parse_cpuset(text: str, where: Where, *, limit: int = LIBVIRT_MAX_CPU) -> frozenset[int]:
    """Parse a libvirt cpuset (see :func:`_parse_cpuset`); short ones are read once."""
    seen = _CPUSETS.get((text, limit))
    if seen is not None:
        return seen
    cpus = _parse_cpuset(text, where, limit)
    if len(text) <= _SHORT and len(_CPUSETS) < _MEMO_LIMIT:  # nor can this one
        _CPUSETS[text, limit] = cpus
    return cpus


def _parse_cpuset(text: str, where: Where, limit: int) -> frozenset[int]:
    """Parse a libvirt cpuset (``0-3,^2,8``): ranges and exclusions, applied left to right.

    Each CPU ends up as the last item naming it says (``^1,0-3`` includes 1, ``0-3,^1`` does
    not).  The items are painted from the last to the first, each CPU decided once, so the
    work is bounded by the length of the text plus ``limit``, however many times the
    ranges repeat or overlap.

    Args:
        text: The cpuset.
        where: XPath of the attribute or element, for errors.
        limit: The highest CPU number accepted: :data:`LIBVIRT_MAX_CPU` for libvirt's own
            cpusets, :data:`MAX_CELL_CPU` for a cell's CPU set in the metadata.

    Raises:
        TranslationError: Not a cpuset, a CPU above ``limit``, a range that runs backwards,
            or exclusions only.
    """
    items: list[tuple[int, int, bool]] = []  # (first, last, included)
    parts = text.split(",")
    if len(parts) > 1 and not parts[-1].strip():
        parts = parts[:-1]  # libvirt tolerates one trailing comma
    for raw in parts:
        item = raw.strip()
        if item.startswith("^"):
            number = item[1:].strip()
            if not _DECIMAL.fullmatch(number):
                raise TranslationError(
                    str(where), text, f"{_show(item)} is not an exclusion like ^3"
                )
            cpu = _cpu_number(number, text, where, limit)
            items.append((cpu, cpu, False))
            continue
        lo, sep, hi = item.partition("-")
        lo, hi = lo.strip(), hi.strip()
        if not _DECIMAL.fullmatch(lo) or (sep and not _DECIMAL.fullmatch(hi)):
            raise TranslationError(
                str(where), text, f"{_show(item)} is not a CPU number or range (like 0-3,^2,8)"
            )
        first = _cpu_number(lo, text, where, limit)
        last = _cpu_number(hi, text, where, limit) if sep else first
        if last < first:
            raise TranslationError(str(where), text, f"the range {_show(item)} runs backwards")
        items.append((first, last, True))
    if not any(included for _, _, included in items):
        raise TranslationError(str(where), text, "a cpuset needs at least one CPU")
    cpus: list[int] = []
    decided: dict[int, int] = {}  # a decided CPU -> a CPU above it, maybe undecided
    for first, last, included in reversed(items):
        cpu = _undecided(decided, first)
        while cpu <= last:
            if included:
                cpus.append(cpu)
            decided[cpu] = cpu + 1
            cpu = _undecided(decided, cpu + 1)
    return frozenset(cpus)


def _cpu_number(digits: str, text: str, where: Where, limit: int) -> int:
    """Return a CPU number of a cpuset, refusing one above ``limit``."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(limit)) or int(significant) > limit:
        raise TranslationError(
            str(where), text, f"CPU numbers above {limit} are refused ({limit + 1} CPUs at most)"
        )
    return int(significant)


def _undecided(decided: dict[int, int], cpu: int) -> int:
    """Return the lowest CPU from ``cpu`` up that no later item decided (path halving)."""
    while cpu in decided:
        above = decided[cpu]
        decided[cpu] = decided.get(above, above)
        cpu = above
    return cpu
