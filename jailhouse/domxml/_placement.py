"""Where a new cell's CPUs and memory go: the free resources of a system and its cells.

Memory comes from the *inmate pool*, the host memory set aside for non-root cells.  Jailhouse
configs do not mark it, so the rule is (documented in :mod:`jailhouse.domxml`):

- an explicit pool (``pool=`` of :func:`~jailhouse.domxml.domain_to_cell`) is used as given,
  lowest address first;
- otherwise the pool is the one root-cell RAM region nearest to the hypervisor memory.
  Upstream setups hide the hypervisor and the inmate memory from root Linux with one kernel
  parameter: on x86 ``memmap=82M$0x3a000000`` reserves the hypervisor plus a RAM region right
  after it (that region begins where the hypervisor ends, and is filled from its bottom); on
  arm64 ``mem=768M`` leaves the top of RAM, just below the hypervisor, to the inmates (that
  region ends below the hypervisor, and is filled from its top, away from root Linux).  On a
  tie the region above the hypervisor wins.

From the pool, everything any cell already maps (other than comm regions), the hypervisor
memory and every root-cell region that is not RAM are taken out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import PAGE_SIZE, MemFlag, MemoryRegion

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from jailhouse.config.model import CellConfig, SystemConfig

__all__ = ["MemoryPool", "is_ram", "pool_for"]

HUGE_PAGE: Final = 0x200000
"""Blocks this large are aligned to 2 MiB when possible (huge pages, arm64 kernel alignment)."""
# Plain ints: ``int(flags) & mask`` costs a tenth of IntFlag's ``__and__``.
_RAM: Final = int(MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE)
_NOT_RAM: Final = int(MemFlag.IO | MemFlag.COMM_REGION | MemFlag.ROOTSHARED)


def is_ram(region: MemoryRegion) -> bool:
    """Whether a region is guest RAM: read, write and execute; not IO, comm or shared."""
    flags = int(region.flags)
    return (flags & (_RAM | _NOT_RAM)) == _RAM and region.size > 0


def _subtract(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if end <= a or b <= start:
            out.append((a, b))
            continue
        if a < start:
            out.append((a, start))
        if end < b:
            out.append((end, b))
    return out


@dataclass(slots=True)
class MemoryPool:
    """Free host memory for a new cell, with the order in which it is handed out.

    Attributes:
        free: Free ``(start, end)`` ranges, in preference order.
        top_down: Fill each range from its top instead of its bottom.
        source: Where the pool came from, for error messages.
    """

    free: list[tuple[int, int]] = field(default_factory=list)
    top_down: bool = False
    source: str = ""

    def take(self, start: int, size: int) -> None:
        """Remove ``[start, start+size)`` from the free ranges."""
        if size:
            self.free = _subtract(self.free, start, start + size)

    def largest(self) -> int:
        """Return the size of the largest free range."""
        return max((b - a for a, b in self.free), default=0)

    def allocate(self, size: int) -> int | None:
        """Take ``size`` bytes (a page multiple) and return their start, or ``None``.

        Blocks of 2 MiB or more are placed on a 2 MiB boundary when some range allows it,
        else on a page boundary.
        """
        aligns = (HUGE_PAGE, PAGE_SIZE) if size >= HUGE_PAGE else (PAGE_SIZE,)
        for align in aligns:
            for a, b in self.free:
                if self.top_down:
                    start = (b - size) // align * align
                    fits = b - size >= a and start >= a
                else:
                    start = -(-a // align) * align
                    fits = start + size <= b
                if fits:
                    self.take(start, size)
                    return start
        return None


def _used_ranges(system: SystemConfig, defined: Sequence[CellConfig]) -> Iterable[tuple[int, int]]:
    hv = system.hypervisor_memory
    yield hv.phys_start, hv.phys_end
    for region in system.root_cell.mem_regions:
        if not is_ram(region) and region.size and not region.is_comm_region:
            yield region.phys_start, region.phys_end
    for cell in defined:
        for region in cell.mem_regions:
            if region.size and not region.is_comm_region:
                yield region.phys_start, region.phys_end


def pool_for(
    system: SystemConfig,
    defined: Sequence[CellConfig],
    pool: Sequence[tuple[int, int]] | None,
) -> MemoryPool:
    """Return the free inmate memory of a system with some cells defined.

    Args:
        system: The system config.
        defined: The cells already defined; their memory is not free.
        pool: Explicit ``(start, size)`` ranges of host memory reserved for inmates, or
            ``None`` for the default rule (see the module docstring).
    """
    if pool is not None:
        free = sorted((start, start + size) for start, size in pool if size > 0)
        result = MemoryPool(free, top_down=False, source="the given pool")
    else:
        result = _default_pool(system)
    for start, end in _used_ranges(system, defined):
        result.free = _subtract(result.free, start, end)
    order = sorted(result.free, reverse=result.top_down)
    result.free = order
    return result


def _default_pool(system: SystemConfig) -> MemoryPool:
    hv = system.hypervisor_memory
    best: tuple[int, int, MemoryRegion] | None = None  # (distance, 0 above / 1 below, region)
    for region in system.root_cell.mem_regions:
        if not is_ram(region):
            continue
        if region.phys_start >= hv.phys_end:
            key = (region.phys_start - hv.phys_end, 0)
        elif region.phys_end <= hv.phys_start:
            key = (hv.phys_start - region.phys_end, 1)
        else:
            continue  # overlaps the hypervisor: a broken system config; never hand it out
        if best is None or key < best[:2]:
            best = (key[0], key[1], region)
    if best is None:
        return MemoryPool([], source="the root cell's RAM (it has none)")
    _, below, region = best
    where = "below" if below else "above"
    return MemoryPool(
        [(region.phys_start, region.phys_end)],
        top_down=bool(below),
        source=(
            f"root-cell RAM {region.phys_start:#x}-{region.phys_end - 1:#x} "
            f"({where} the hypervisor memory)"
        ),
    )
