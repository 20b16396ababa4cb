"""Pieces both architectures use: the kernel command line, the root cell's ivshmem link."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from jailhouse.config.model import (
    IVSHMEM_BAR_MASK_INTX,
    IVSHMEM_BAR_MASK_MSIX,
    MemFlag,
    MemoryRegion,
    PciDevice,
    PciType,
    ShmemProtocol,
)
from jailhouse.hostcheck import parse_cmdline, parse_memmap, parse_memsize

if TYPE_CHECKING:
    from jailhouse.configgen._common import HostTree

__all__ = ["IVSHMEM_LINK_SIZE", "cmdline_args", "ivshmem_device", "ivshmem_regions", "mem_limit"]

IVSHMEM_LAYOUT: Final = ((0x0000, 0x1000), (0x1000, 0x9000), (0xA000, 0x2000), (0xC000, 0x2000))
"""A two-peer ivshmem link: state table, read/write section, one output section per peer."""
IVSHMEM_LINK_SIZE: Final = 0xE000
"""Bytes of :data:`IVSHMEM_LAYOUT`."""


def cmdline_args(
    host: HostTree, fallback: str | None = None
) -> tuple[str, list[tuple[str, str | None]]]:
    """Return the kernel command line's source and its ``(name, value)`` pairs.

    ``/proc/cmdline`` wins; ``fallback`` (``/chosen/bootargs`` of a device tree) is used
    when it is missing.
    """
    text = host.text("/proc/cmdline")
    if text is not None:
        return "/proc/cmdline", parse_cmdline(text)
    if fallback is not None:
        return "/proc/device-tree/chosen/bootargs", parse_cmdline(fallback)
    return "/proc/cmdline", []


def mem_limit(args: list[tuple[str, str | None]]) -> tuple[int, str] | None:
    """Return the last ``mem=`` value and its text, or None."""
    found: tuple[int, str] | None = None
    for name, value in args:
        if name == "mem" and value and value != "nopentium":
            try:
                size, _ = parse_memsize(value)
            except ValueError:
                continue
            found = size, f"mem={value}"
    return found


def memmap_reserved(args: list[tuple[str, str | None]]) -> list[tuple[int, int, str]]:
    """Return the ``memmap=SIZE$START`` reservations as ``(start, end, text)``."""
    out: list[tuple[int, int, str]] = []
    for name, value in args:
        if name != "memmap" or not value:
            continue
        try:
            entries = parse_memmap(value)
        except ValueError:
            continue
        out.extend(
            (e.range.start, e.range.end, f"memmap={e.text}")
            for e in entries
            if e.kind.value == "$" and e.range is not None
        )
    return out


def ivshmem_regions(base: int, dev_id: int, *, root: bool) -> tuple[MemoryRegion, ...]:
    """Return the four regions of a two-peer ivshmem link at ``base`` as peer ``dev_id``."""
    shared = MemFlag(0) if root else MemFlag.ROOTSHARED
    regions = []
    for pos, (offset, size) in enumerate(IVSHMEM_LAYOUT):
        writable = pos == 1 or pos == 2 + dev_id
        flags = MemFlag.READ | (MemFlag.WRITE if writable else MemFlag(0)) | shared
        regions.append(MemoryRegion(base + offset, base + offset, size, flags))
    return tuple(regions)


def ivshmem_device(bdf: int, domain: int, regions_start: int, *, msix: bool) -> PciDevice:
    """Return peer 0's ivshmem device of a two-peer link (the root cell's end)."""
    return PciDevice(
        type=PciType.IVSHMEM,
        domain=domain,
        bdf=bdf,
        bar_mask=IVSHMEM_BAR_MASK_MSIX if msix else IVSHMEM_BAR_MASK_INTX,
        num_msix_vectors=2 if msix else 0,
        shmem_regions_start=regions_start,
        shmem_dev_id=0,
        shmem_peers=2,
        shmem_protocol=ShmemProtocol.UNDEFINED,
    )
