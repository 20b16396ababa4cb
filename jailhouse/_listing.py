"""The cell listing read from sysfs with nothing but :mod:`os`: the core of ``cell list``.

``jhctl cell list`` runs in shell scripts, boot units and Salt states, often many times per
boot, so what it costs is the interpreter's start-up plus what it imports.  This module
imports nothing the interpreter has not loaded already, and holds what both the quick
``cell list`` of :mod:`jailhouse.cli._quick` and the full readers share, so that there is
one implementation of each:

- the kernel's CPU range lists (``%*pbl``, ``0-2,5``) and bitmaps (``%*pb``, ``0c``), which
  :mod:`jailhouse.sysfs` and :mod:`jailhouse.config.flags` re-export;
- the texts the driver writes to ``cells/<id>/state`` (:data:`STATE_TEXT`);
- upstream's ``cell list`` table and the ``--json`` document of it.

:func:`read_cells` reads every cell once and gives up (returns ``None``) at anything a full
reading would retry or report: a missing file, text the driver does not write, a CPU bitmap
and list that disagree, two cells holding one CPU.  The caller then reads through
:class:`jailhouse.sysfs.SysfsReader`, which retries and raises typed errors.  For a reading
this module accepts, both give the same cells (the tests hold them to it).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: this module is on the cold start of `jhctl cell list`
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Final

    Listed = tuple[int, str, str, frozenset[int], frozenset[int]]
    """One cell: id, name, state text, assigned CPUs, failed CPUs."""

__all__ = [
    "ARCH_NAMES",
    "LIST_HEADINGS",
    "LIST_WIDTHS",
    "SIM_TREE_PENDING",
    "STATE_TEXT",
    "format_cpus",
    "listing_json",
    "listing_table",
    "parse_cpu_bitmap",
    "parse_cpu_list",
    "parse_cpus",
    "read_cells",
    "read_sim_cells",
]

STATE_TEXT: Final[dict[int, str]] = {
    0: "running",
    1: "running/locked",
    2: "shut down",
    3: "failed",
    4: "Comm ABI mismatch",
    -1: "invalid",
}
"""What the driver writes to ``cells/<id>/state``, by ``JAILHOUSE_CELL_*`` value."""

ARCH_NAMES: Final[dict[str, int]] = {
    "x86_64": 0,
    "amd64": 0,
    "x86": 0,
    "aarch64": 2,
    "arm64": 2,
    "armv7l": 1,
    "armv7": 1,
    "arm": 1,
}
"""libvirt's and ``uname -m``'s architecture names (lower case) to the config's arch byte."""

LIST_HEADINGS: Final = ("ID", "Name", "State", "Assigned CPUs", "Failed CPUs")
LIST_WIDTHS: Final = (8, 24, 18, 24, 24)
"""Upstream ``jailhouse cell list``: ``printf("%-8s%-24s%-18s%-24s%-24s\\n", ...)``."""

SIM_TREE_PENDING: Final = ".sys-pending"
"""A file a simulated host's writer creates in the host directory before it changes
``state.json`` and removes once ``sys/`` shows the new state.  While it exists (the writer
is at work or died half-way), ``sys/`` may be stale: readers take the full path, which
renders the tree again from the state."""

_HEX: Final = frozenset("0123456789abcdefABCDEF")


# -- CPU sets -----------------------------------------------------------------------


def format_cpus(cpus: Iterable[int]) -> str:
    """Render a CPU set as a range list, the way sysfs ``cpus_assigned_list`` does (``0-2,5``)."""
    out: list[str] = []
    run: list[int] = []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(_run_text(run))
        run = [cpu]
    if run:
        out.append(_run_text(run))
    return ",".join(out)


def _run_text(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def parse_cpus(text: str) -> frozenset[int]:
    """Parse a range list such as ``0-2,5`` (the sysfs ``*_list`` format).

    Blanks around the list and around each range are allowed; empty text is no CPU.

    Raises:
        ValueError: The text is not a range list.
    """
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"{text!r} is not a CPU range list (like 0-2,5)")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"{part!r} in {text!r} runs backwards")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def parse_cpu_list(text: str) -> frozenset[int]:
    """Parse the kernel's ``%*pbl`` CPU range list, such as ``0-2,5``; empty text is no CPU.

    Unlike :func:`parse_cpus`, blanks are refused: the kernel writes none, only the newline.

    Raises:
        ValueError: The text is not a range list.
    """
    stripped = text.removesuffix("\n")
    if stripped != stripped.strip():
        raise ValueError(f"{text!r} is not a CPU range list (like 0-2,5)")
    return parse_cpus(stripped)


def parse_cpu_bitmap(text: str) -> frozenset[int]:
    """Parse the kernel's ``%*pb`` CPU bitmap, such as ``0c`` or ``00000000,0000000f``.

    The bitmap is hexadecimal, most significant digit first, with a comma every 32 bits
    (8 digits); the first group may be shorter.

    Args:
        text: The bitmap, with or without its newline.

    Returns:
        The CPUs whose bits are set.

    Raises:
        ValueError: The text is not such a bitmap.
    """
    stripped = text.removesuffix("\n")
    if not stripped:
        return frozenset()
    value = 0
    for i, group in enumerate(stripped.split(",")):
        if not 0 < len(group) <= 8 or (i > 0 and len(group) != 8) or not _HEX.issuperset(group):
            raise ValueError(
                f"{text!r} is not a CPU bitmap (hex with a comma every 8 digits: 00000000,0000000f)"
            )
        value = value << 32 | int(group, 16)
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


# -- reading ------------------------------------------------------------------------


class _GiveUpError(Exception):
    """This reading is not one the quick path vouches for: read through SysfsReader."""


def _read(path: str) -> bytes | None:
    """Read a sysfs file whole; ``None`` if it is missing (any other error gives up)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        raise _GiveUpError from None
    try:
        parts = []
        while chunk := os.read(fd, 4096):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        raise _GiveUpError from None
    finally:
        os.close(fd)


def _read_cpus(path: str, *, required: bool) -> frozenset[int]:
    """Read a CPU set from its bitmap file and its ``_list`` twin, which must agree."""
    bitmap, ranges = _read(path), _read(path + "_list")
    try:
        sets = [
            parse(data.decode("ascii", errors="replace"))
            for data, parse in ((bitmap, parse_cpu_bitmap), (ranges, parse_cpu_list))
            if data is not None
        ]
    except ValueError:
        raise _GiveUpError from None
    if not sets:
        if required:
            raise _GiveUpError
        return frozenset()
    if len(sets) == 2 and sets[0] != sets[1]:
        raise _GiveUpError
    return sets[0]


def read_cells(sys_root: str) -> list[Listed] | None:
    """Read every cell once, by ascending id, without statistics.

    Args:
        sys_root: The directory that plays ``/sys``.

    Returns:
        One tuple per cell (an empty list while the hypervisor is disabled), or ``None``
        if the reading is not whole: the driver directory is missing, a cell lacks a file
        or holds text the driver does not write, its CPU files disagree, two cells hold
        the same CPU, or a read failed.  :class:`jailhouse.sysfs.SysfsReader` then says
        what is wrong, or reads again until the tree holds still.
    """
    driver = os.path.join(sys_root, "devices/jailhouse")
    try:
        entries = os.listdir(driver + "/cells")
    except FileNotFoundError:
        return [] if os.path.isdir(driver) else None
    except OSError:
        return None
    known = frozenset(STATE_TEXT.values())
    out: list[Listed] = []
    try:
        for cell_id in sorted(int(name) for name in entries if name.isdigit()):
            base = f"{driver}/cells/{cell_id}/"
            name, state = _read(base + "name"), _read(base + "state")
            if name is None or state is None:
                return None
            state_text = state.decode("ascii", errors="replace").removesuffix("\n")
            if state_text not in known:
                return None
            out.append(
                (
                    cell_id,
                    name.decode("latin-1").removesuffix("\n"),
                    state_text,
                    _read_cpus(base + "cpus_assigned", required=True),
                    _read_cpus(base + "cpus_failed", required=False),
                )
            )
    except (_GiveUpError, ValueError):
        return None
    held = [cell[3] for cell in out]
    if sum(map(len, held)) != len(frozenset().union(*held)):
        return None  # a create or destroy half-way: the full reader reads again
    return out


def read_sim_cells(root: str) -> list[Listed] | None:
    """Read the cells of the simulated host in ``root`` while no writer is at work.

    Takes the host's lock shared (writers take it exclusively), so the tree holds still.

    Returns:
        The cells as :func:`read_cells` gives them, or ``None`` when the host needs the
        full path: it is new (no ``state.json``), a writer is at work or died half-way
        (:data:`SIM_TREE_PENDING`, scratch entries or temporary files are left), or the
        reading itself gives up.
    """
    import fcntl  # noqa: PLC0415 - a small C module, only for a simulated host

    try:
        fd = os.open(os.path.join(root, ".lock"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        names = os.listdir(root)
        if (
            SIM_TREE_PENDING in names
            or "state.json" not in names
            or "host.json" not in names
            or any(name.endswith(".tmp") for name in names)
            or (".scratch" in names and os.listdir(os.path.join(root, ".scratch")))
        ):
            return None
        return read_cells(os.path.join(root, "sys"))
    except OSError:
        return None
    finally:
        os.close(fd)


# -- output -------------------------------------------------------------------------


def listing_table(cells: Iterable[Listed]) -> str:
    """Render cells as upstream's ``jailhouse cell list`` does (same columns and widths)."""
    rows = [LIST_HEADINGS] + [
        (str(cell_id), name, state, format_cpus(assigned), format_cpus(failed))
        for cell_id, name, state, assigned, failed in cells
    ]
    return "\n".join(
        "".join(f"{cell:<{width}}" for cell, width in zip(row, LIST_WIDTHS, strict=True)).rstrip()
        for row in rows
    )


def listing_json(cells: Sequence[Listed]) -> str:
    """Render cells as ``json.dumps(documents, indent=2)`` would, without importing json.

    The documents are ``cell list --json``'s: ``id``, ``name``, ``state``,
    ``cpus_assigned`` and ``cpus_failed`` (sorted CPU numbers), in that order.
    """
    try:
        from _json import encode_basestring_ascii as quote  # noqa: PLC0415 - json's C part
    except ImportError:  # pragma: no cover - an interpreter without the accelerator
        from json import dumps as quote  # noqa: PLC0415

    def cpus(values: frozenset[int]) -> str:
        if not values:
            return "[]"
        return "[\n" + ",\n".join(f"      {cpu}" for cpu in sorted(values)) + "\n    ]"

    if not cells:
        return "[]"
    return (
        "[\n"
        + ",\n".join(
            f'  {{\n    "id": {cell_id},\n    "name": {quote(name)},\n'
            f'    "state": {quote(state)},\n    "cpus_assigned": {cpus(assigned)},\n'
            f'    "cpus_failed": {cpus(failed)}\n  }}'
            for cell_id, name, state, assigned, failed in cells
        )
        + "\n]"
    )
