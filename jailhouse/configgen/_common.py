"""Shared pieces of the probes: the host tree, notes, and a page-aligned region builder."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from jailhouse.config.model import PAGE_SIZE, CellConfig, MemFlag, MemoryRegion, SystemConfig

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Generated", "HostTree", "Note", "NoteKind", "RegionMap", "size_text"]

MIB: Final = 1 << 20


class NoteKind(enum.Enum):
    """How much a note asks of the user."""

    WARNING = "warning"
    """The generator guessed or left something out: the user must supply or check it."""
    NOTE = "note"
    """A choice the generator made that the user should know about."""


@dataclass(frozen=True, slots=True)
class Note:
    """Something the generator could not decide alone, or a choice it made.

    Attributes:
        kind: Warning or note.
        source: The file or device-tree node it concerns (``/proc/iomem``,
            ``/proc/device-tree/reserved-memory``).
        message: What was found, or not found.
        supply: What the user must add or check, with a value where one is known.
    """

    kind: NoteKind
    source: str
    message: str
    supply: str | None = None

    def __str__(self) -> str:
        """Render as ``warning: /proc/iomem: message; supply``."""
        tail = f"; {self.supply}" if self.supply else ""
        return f"{self.kind.value}: {self.source}: {self.message}{tail}"

    def to_dict(self) -> dict[str, str | None]:
        """Return the note as a JSON-ready dict."""
        return {
            "kind": self.kind.value,
            "source": self.source,
            "message": self.message,
            "supply": self.supply,
        }


_T = TypeVar("_T", SystemConfig, CellConfig)


@dataclass(frozen=True, slots=True)
class Generated(Generic[_T]):
    """A generated config and the notes about it.

    Attributes:
        config: The system or cell config.
        notes: Warnings (what the user must supply) and notes (choices made), each naming
            the file or device-tree node it concerns.
        region_comments: One comment per memory region of the (root) cell: where it came
            from, for the C output.
    """

    config: _T
    notes: tuple[Note, ...] = ()
    region_comments: tuple[str, ...] = ()

    @property
    def warnings(self) -> tuple[Note, ...]:
        """The notes that ask the user for something."""
        return tuple(n for n in self.notes if n.kind is NoteKind.WARNING)


class HostTree:
    """Read files of a host below a root directory; never writes, never opens a device."""

    def __init__(self, root: str | Path = "/") -> None:
        """Read below ``root`` (``/`` for the running host)."""
        self.root = Path(root)

    def path(self, host_path: str) -> Path:
        """Map a host path (``/proc/iomem``) to the file below the root."""
        return self.root / host_path.lstrip("/")

    def text(self, host_path: str) -> str | None:
        """Return a text file's contents, or None when it is missing or unreadable."""
        try:
            return self.path(host_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def bytes(self, host_path: str) -> bytes | None:
        """Return a file's bytes, or None when it is missing or unreadable."""
        try:
            return self.path(host_path).read_bytes()
        except OSError:
            return None

    def exists(self, host_path: str) -> bool:
        """Tell whether the host path exists below the root."""
        return self.path(host_path).exists()

    def listdir(self, host_path: str) -> list[str]:
        """Return the sorted entries of a directory (empty when it is missing)."""
        try:
            return sorted(p.name for p in self.path(host_path).iterdir())
        except OSError:
            return []


def size_text(size: int) -> str:
    """Render a size as the kernel's memparse() reads it: ``82M``, ``4K``, ``0x1800``."""
    for suffix, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{suffix}"
    return f"{size:#x}"


def page_down(value: int) -> int:
    """Round an address down to a page."""
    return value & ~(PAGE_SIZE - 1)


def page_up(value: int) -> int:
    """Round an address up to a page."""
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


@dataclass(slots=True)
class _Span:
    start: int
    end: int
    flags: MemFlag
    comment: str
    keep: bool = False
    hole: bool = False


class RegionMap:
    """Collect identity-mapped root-cell regions, page-aligned, without overlaps.

    RAM is rounded inward (a partial page is not RAM), everything else outward; a later
    span never takes addresses an earlier one holds, and neighbours with the same flags
    merge unless one of them is kept apart (``keep``).  A ``hole`` holds its addresses but
    becomes no region (the hypervisor memory).
    """

    def __init__(self) -> None:
        """Start empty."""
        self._spans: list[_Span] = []

    def add(
        self,
        start: int,
        end: int,
        flags: MemFlag,
        comment: str,
        *,
        ram: bool,
        keep: bool = False,
        hole: bool = False,
    ) -> None:
        """Add ``[start, end)`` with ``flags`` unless it is empty after rounding."""
        lo, hi = (page_up(start), page_down(end)) if ram else (page_down(start), page_up(end))
        pieces = [(lo, hi)]
        for span in self._spans:
            cut: list[tuple[int, int]] = []
            for a, b in pieces:
                if b <= span.start or span.end <= a:
                    cut.append((a, b))
                    continue
                if a < span.start:
                    cut.append((a, span.start))
                if span.end < b:
                    cut.append((span.end, b))
            pieces = cut
        self._spans.extend(_Span(a, b, flags, comment, keep, hole) for a, b in pieces if b > a)

    def covered(self, start: int, end: int) -> bool:
        """Tell whether any region holds an address of ``[start, end)``."""
        return any(s.start < end and start < s.end and not s.hole for s in self._spans)

    def regions(self) -> tuple[tuple[MemoryRegion, str], ...]:
        """Return the regions by address, merged, each with its comment."""
        out: list[_Span] = []
        for span in sorted(self._spans, key=lambda s: s.start):
            if span.hole:
                continue
            last = out[-1] if out else None
            mergeable = last is not None and not last.keep and not span.keep
            if (
                last is not None
                and mergeable
                and last.end == span.start
                and last.flags == span.flags
            ):
                last.end = span.end
                if span.comment not in last.comment.split(", "):
                    last.comment = f"{last.comment}, {span.comment}"
                continue
            out.append(_Span(span.start, span.end, span.flags, span.comment))
        return tuple(
            (MemoryRegion(s.start, s.start, s.end - s.start, s.flags), s.comment) for s in out
        )


def merge_notes(*groups: Iterable[Note]) -> tuple[Note, ...]:
    """Join note lists, keeping the first of equal notes."""
    seen: dict[Note, None] = {}
    for group in groups:
        for note in group:
            seen.setdefault(note, None)
    return tuple(seen)
