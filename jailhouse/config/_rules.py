"""The rules of :mod:`jailhouse.config.validate`, on anything shaped like a config.

The rules read configs through attributes alone (the :class:`CellLike` family below), so
they run on the typed model and on the plain records of :mod:`jailhouse.config._lean`,
which ``jhctl config check`` reads a clean set through without importing :mod:`enum`.
Codes are compared as ints from :mod:`jailhouse.config._format`; an enum member is an int,
so the model's fields compare the same.  What the rules find goes to a :class:`Report`:
:mod:`jailhouse.config.validate` collects them as findings, and the lean check stops at
the first one.
"""

from __future__ import annotations

from jailhouse._listing import format_cpus
from jailhouse.config._format import (
    APIC_MODES,
    ARCH_ARM,
    ARCH_ARM64,
    ARCH_X86,
    CACHE_L3,
    CELL_FLAGS_KNOWN,
    CELL_PASSIVE_COMMREG,
    CONSOLE_TYPES,
    IOMMU_TYPES,
    IOMMU_UNUSED,
    MEM_COMM_REGION,
    MEM_FLAGS_KNOWN,
    MEM_IO,
    MEM_IO_WIDTHS,
    MEM_LOADABLE,
    MEM_ROOTSHARED,
    MEM_WRITE,
    NAME_MAXLEN,
    PAGE_SIZE,
    PCI_IVSHMEM,
    PCI_TYPES,
    SYSTEM_FLAGS_KNOWN,
    arch_name,
    bdf_text,
    irq_pins,
)

TYPE_CHECKING = False  # not typing's: this module is on the cold start of `config check`
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, Final, Protocol

    class RegionLike(Protocol):
        """A memory region: :class:`~jailhouse.config.model.MemoryRegion` or a lean one."""

        @property
        def phys_start(self) -> int: ...
        @property
        def virt_start(self) -> int: ...
        @property
        def size(self) -> int: ...
        @property
        def flags(self) -> int: ...

    class CacheLike(Protocol):
        @property
        def type(self) -> int: ...
        @property
        def size(self) -> int: ...

    class IrqChipLike(Protocol):
        @property
        def address(self) -> int: ...
        @property
        def pin_base(self) -> int: ...
        @property
        def pin_bitmap(self) -> tuple[int, ...]: ...

    class PioLike(Protocol):
        @property
        def base(self) -> int: ...
        @property
        def length(self) -> int: ...

    class PciDeviceLike(Protocol):
        @property
        def type(self) -> int: ...
        @property
        def iommu(self) -> int: ...
        @property
        def domain(self) -> int: ...
        @property
        def bdf(self) -> int: ...
        @property
        def caps_start(self) -> int: ...
        @property
        def num_caps(self) -> int: ...
        @property
        def num_msix_vectors(self) -> int: ...
        @property
        def shmem_regions_start(self) -> int: ...
        @property
        def shmem_dev_id(self) -> int: ...
        @property
        def shmem_peers(self) -> int: ...

    class ConsoleLike(Protocol):
        @property
        def type(self) -> int: ...

    class CellLike(Protocol):
        """What the rules read of a cell config."""

        @property
        def name(self) -> str: ...
        @property
        def arch(self) -> int: ...
        @property
        def flags(self) -> int: ...
        @property
        def cpus(self) -> frozenset[int]: ...
        @property
        def cpu_set_size(self) -> int: ...
        @property
        def mem_regions(self) -> Sequence[RegionLike]: ...
        @property
        def cache_regions(self) -> Sequence[CacheLike]: ...
        @property
        def irqchips(self) -> Sequence[IrqChipLike]: ...
        @property
        def pio_regions(self) -> Sequence[PioLike]: ...
        @property
        def pci_devices(self) -> Sequence[PciDeviceLike]: ...
        @property
        def pci_caps(self) -> Sequence[object]: ...
        @property
        def vpci_irq_base(self) -> int: ...
        @property
        def cpu_reset_address(self) -> int: ...
        @property
        def msg_reply_timeout(self) -> int: ...
        @property
        def console(self) -> ConsoleLike: ...
        @property
        def trailing(self) -> bytes: ...
        @property
        def size(self) -> int: ...

    class IommuLike(Protocol):
        @property
        def type(self) -> int: ...
        @property
        def base(self) -> int: ...
        @property
        def size(self) -> int: ...

    class ArmLike(Protocol):
        """An ARM system's interrupt controller (``ArmPlatform``)."""

        @property
        def gic_version(self) -> int: ...
        @property
        def gicd_base(self) -> int: ...
        @property
        def gicc_base(self) -> int: ...
        @property
        def gich_base(self) -> int: ...
        @property
        def gicv_base(self) -> int: ...
        @property
        def gicr_base(self) -> int: ...

    class PlatformLike(Protocol):
        @property
        def pci_mmconfig_base(self) -> int: ...
        @property
        def pci_mmconfig_end_bus(self) -> int: ...
        @property
        def iommu_units(self) -> Sequence[IommuLike]: ...
        @property
        def arch_info(self) -> object: ...

    class SystemLike(Protocol):
        """What the rules read of a system config."""

        @property
        def arch(self) -> int: ...
        @property
        def flags(self) -> int: ...
        @property
        def debug_console(self) -> ConsoleLike: ...
        @property
        def hypervisor_memory(self) -> RegionLike: ...
        @property
        def platform(self) -> PlatformLike: ...
        @property
        def root_cell(self) -> CellLike: ...
        @property
        def size(self) -> int: ...


__all__ = [
    "ERROR",
    "WARNING",
    "Report",
    "Resource",
    "check_cell",
    "check_cells",
    "check_system",
    "root_spans",
    "shmem_groups",
    "system_resources",
]

ERROR: Final = "error"
"""The severity of a finding the driver or hypervisor refuses (``Severity.ERROR.value``)."""
WARNING: Final = "warning"
"""The severity of a finding that is accepted but probably wrong (``Severity.WARNING``)."""


class Report:
    """Where the rules put what they find, under one field prefix and cell name.

    Subclasses decide what a finding becomes in :meth:`add`.
    """

    __slots__ = ("cell", "findings", "prefix")

    def __init__(
        self, findings: list[Any] | None = None, prefix: str = "", cell: str | None = None
    ) -> None:
        self.findings: list[Any] = [] if findings is None else findings
        self.prefix = prefix
        self.cell = cell

    def add(self, severity: str, path: str, value: object, reason: str) -> None:
        """Take one finding; ``path`` is relative to :attr:`prefix`."""
        raise NotImplementedError

    def error(self, path: str, value: object, reason: str) -> None:
        self.add(ERROR, path, value, reason)

    def warn(self, path: str, value: object, reason: str) -> None:
        self.add(WARNING, path, value, reason)

    def scoped(self, prefix: str, cell: str | None) -> Report:
        """Return a report of the same kind that adds to the same list, elsewhere."""
        return type(self)(self.findings, prefix, cell)


# -- limits and constants (ABI fact sheet §2 and §3; upstream config checker) -----------------

_ARCHES: Final = frozenset({ARCH_X86, ARCH_ARM, ARCH_ARM64})
_MAX_CONFIG_SIZE: Final = 16 * PAGE_SIZE
"""The hypervisor maps a cell config through 16 temporary pages; more is E2BIG."""
_MAX_CPU_SET_SIZE: Final = 4096
"""``cpu_set_size`` above one page is EINVAL."""
_IVSHMEM_MAX_PEERS: Final = 12
_IVSHMEM_MAX_MSIX: Final = 16
_XAPIC_BASE: Final = 0xFEE00000
_PIO_SPACE: Final = 0x10000
_GIC_IRQS: Final = 1024
_ADDRESS_SPACE: Final = 1 << 64

# Trailing-array entry sizes, largest first, with the counts that declare them.
_ENTRY_SIZES: Final = (
    (56, "num_pci_devices"),
    (32, "num_memory_regions or num_irqchips"),
    (12, "num_cache_regions"),
    (8, "num_pci_caps"),
    (4, "num_pio_regions or num_stream_ids"),
)


# -- a set of cells -----------------------------------------------------------------------------


def check_cells(
    system: SystemLike,
    cells: Sequence[CellLike],
    report: Report,
    resources: Sequence[Resource],
    spans: Sequence[tuple[int, int]],
) -> None:
    """Check non-root cells on their own, against the system and as a set.

    ``resources`` and ``spans`` are :func:`system_resources` and :func:`root_spans` of the
    system; ``report`` names the root cell, and each cell's findings name that cell.
    """
    groups: list[dict[int, tuple[int, int]]] = []
    for cell in cells:
        cell_report = report.scoped("", cell.name)
        if cell.arch != system.arch:
            cell_report.error(
                "arch",
                arch_name(int(cell.arch)),
                f"the system is {arch_name(int(system.arch))}; the driver answers a CREATE of "
                "another architecture with success and creates nothing",
            )
        shmem = shmem_groups(cell)  # once per cell, for its own checks and the set's
        groups.append(shmem)
        check_cell(cell, cell_report, root=False, end_offset=cell.size, shmem=shmem)
        _check_cell_against_system(system, cell, cell_report, resources)
    _check_partitioning(system, cells, report, spans, groups)


def root_spans(system: SystemLike) -> tuple[tuple[int, int], ...]:
    """The root cell's non-empty regions as sorted ``(phys_start, phys_end)``."""
    return tuple(
        sorted(
            (r.phys_start, r.phys_start + r.size) for r in system.root_cell.mem_regions if r.size
        )
    )


def _arm_info(system: SystemLike) -> ArmLike | None:
    """The system's ARM platform info (``ArmPlatform``), or None for another kind."""
    info = system.platform.arch_info
    return info if hasattr(info, "gic_version") else None  # type: ignore[return-value]


# -- the system config ------------------------------------------------------------------------


def check_system(system: SystemLike, report: Report, resources: Sequence[Resource]) -> None:
    """Check a system config and its root cell on their own.

    ``resources`` is :func:`system_resources` of the system: what no cell may map.
    """
    arch = int(system.arch)
    if arch not in _ARCHES:
        report.error("arch", arch, "unknown architecture (0 x86, 1 arm, 2 arm64)")
    unknown = int(system.flags) & ~SYSTEM_FLAGS_KNOWN
    if unknown:
        report.warn("flags", int(system.flags), f"bits {unknown:#x} are no JAILHOUSE_SYS_* flag")
    _check_console(system.debug_console.type, "debug_console.type", report)
    hv = system.hypervisor_memory
    if hv.size == 0:
        report.error(
            "hypervisor_memory.size", 0, "the hypervisor needs memory to load its image into"
        )
    elif hv.size % PAGE_SIZE:
        report.error("hypervisor_memory.size", hv.size, "must be a multiple of the 4 KiB page size")
    if hv.phys_start % PAGE_SIZE:
        report.error(
            "hypervisor_memory.phys_start", hv.phys_start, "must be aligned to a 4 KiB page"
        )

    platform = system.platform
    if len(platform.iommu_units) > 8:
        report.error(
            "platform.iommu_units",
            len(platform.iommu_units),
            "a system config holds at most 8 IOMMU units",
        )
    for i, unit in enumerate(platform.iommu_units):
        if unit.type not in IOMMU_TYPES:
            report.error(
                f"platform.iommu_units[{i}].type",
                int(unit.type),
                "unknown IOMMU type (0 unused, 1 AMD, 2 Intel, 3 SMMUv3, 4 TI PVU, 5 MMU-500); "
                "upstream's config checker refuses the file",
            )

    info = platform.arch_info
    if arch == ARCH_X86:
        apic_mode = getattr(info, "apic_mode", None)  # X86Platform's, not ArmPlatform's
        if apic_mode is None:
            report.error(
                "platform.arch_info", type(info).__name__, "an x86 system needs X86Platform"
            )
        elif apic_mode not in APIC_MODES:
            report.warn(
                "platform.arch_info.apic_mode",
                int(apic_mode),
                "unknown APIC mode (0 auto, 1 xAPIC, 2 x2APIC)",
            )
    elif arch in _ARCHES:
        arm = _arm_info(system)
        if arm is None:
            report.error(
                "platform.arch_info",
                type(info).__name__,
                f"an {arch_name(arch)} system needs ArmPlatform",
            )
        elif arm.gic_version not in (2, 3):
            report.error(
                "platform.arch_info.gic_version",
                arm.gic_version,
                "the hypervisor supports GICv2 and GICv3 only; ENABLE fails with EINVAL",
            )

    root_report = report.scoped("root_cell.", report.cell)
    if system.root_cell.arch != system.arch:
        root_report.warn(
            "arch",
            int(system.root_cell.arch),
            f"differs from the system's {arch_name(arch)}; the packed config carries only the "
            "system's architecture",
        )
    check_cell(system.root_cell, root_report, root=True, end_offset=system.size)
    _check_cell_against_system(system, system.root_cell, root_report, resources)


# -- one cell on its own ------------------------------------------------------------------------


def check_cell(
    cell: CellLike,
    report: Report,
    *,
    root: bool,
    end_offset: int,
    shmem: dict[int, tuple[int, int]] | None = None,
) -> None:
    """Check the rules that hold for one cell descriptor and its arrays.

    ``end_offset`` is where the declared arrays end in the file (for trailing bytes);
    ``shmem`` is :func:`shmem_groups` of the cell, where the caller has it already.
    """
    arch = int(cell.arch)
    if arch not in _ARCHES and not root:
        report.error("arch", arch, "unknown architecture (0 x86, 1 arm, 2 arm64)")
    _check_name(cell.name, report)
    _check_cpus(cell, report, root=root)
    unknown = int(cell.flags) & ~CELL_FLAGS_KNOWN
    if unknown:
        report.warn("flags", int(cell.flags), f"bits {unknown:#x} are no JAILHOUSE_CELL_* flag")
    if not root and cell.size > _MAX_CONFIG_SIZE:
        report.error(
            "size",
            cell.size,
            f"the hypervisor maps a cell config through 16 pages ({_MAX_CONFIG_SIZE} bytes); "
            "CREATE fails with E2BIG: use fewer regions or devices",
        )
    _check_console(cell.console.type, "console.type", report)
    if shmem is None:
        shmem = shmem_groups(cell)
    _check_regions(cell, report, shmem, root=root)
    _check_overlaps_within(cell, report)
    _check_caches(cell, report)
    _check_irqchips(cell, report)
    _check_pio(cell, report)
    _check_pci(cell, report)
    if not root:
        if arch == ARCH_X86 and cell.cpu_reset_address:
            report.warn(
                "cpu_reset_address",
                cell.cpu_reset_address,
                "the field was added for ARM entry points and x86 cells do not use it; "
                "`jailhouse cell linux` refuses anything but 0",
            )
        has_comm = any(int(r.flags) & MEM_COMM_REGION for r in cell.mem_regions)
        if not has_comm and not int(cell.flags) & CELL_PASSIVE_COMMREG:
            wait = (
                "waits forever"
                if cell.msg_reply_timeout == 0
                else "times out and marks the cell failed"
            )
            report.warn(
                "flags",
                int(cell.flags),
                f"no comm region and no PASSIVE_COMMREG: the cell cannot answer the "
                f"hypervisor's shutdown request, so shutdown and destroy {wait}",
            )
    if cell.trailing:
        _report_trailing(cell.trailing, end_offset, report)


def _check_name(name: str, report: Report) -> None:
    if not name:
        report.error(
            "name", name, "a cell needs a name: the driver and the tools select cells by name"
        )
        return
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        report.error("name", name, "the name field holds bytes; use ASCII characters")
        return
    if b"\0" in raw:
        report.error("name", name, "a NUL byte ends the name early; the driver sees less")
    elif len(raw) > NAME_MAXLEN:
        report.error(
            "name",
            name,
            f"longer than {NAME_MAXLEN} bytes; the driver cuts it to {raw[:NAME_MAXLEN]!r}",
        )
    elif not all(0x20 <= b < 0x7F for b in raw):
        report.warn(
            "name",
            name,
            "not printable ASCII; sysfs and `jailhouse cell list` show the raw bytes",
        )


def _check_cpus(cell: CellLike, report: Report, *, root: bool) -> None:
    size = cell.cpu_set_size
    if size == 0:
        report.error(
            "cpu_set_size", 0, "the hypervisor's CPU-set bound underflows; use 8 (one u64)"
        )
    elif size > _MAX_CPU_SET_SIZE:
        report.error(
            "cpu_set_size",
            size,
            f"more than {_MAX_CPU_SET_SIZE} bytes is refused with EINVAL; upstream uses 8",
        )
    elif size % 8:
        report.warn(
            "cpu_set_size",
            size,
            "the hypervisor reads the CPU set as 64-bit words; use a multiple of 8",
        )
    outside = {cpu for cpu in cell.cpus if not 0 <= cpu < 8 * size}
    if outside:
        report.error(
            "cpus",
            format_cpus(frozenset(outside)),
            f"does not fit in a CPU set of {size} bytes; raise cpu_set_size",
        )
    if not cell.cpus:
        if root:
            report.error(
                "cpus", "", "the root cell needs every online CPU; ENABLE fails with EINVAL"
            )
        else:
            report.warn("cpus", "", "the cell has no CPU, so it can never run")
    elif not root and cell.arch == ARCH_X86 and 0 in cell.cpus:
        report.error(
            "cpus",
            format_cpus(cell.cpus),
            "CPU 0 cannot leave the root cell on x86; CREATE fails with EINVAL",
        )


def _check_console(con_type: int, path: str, report: Report) -> None:
    if con_type not in CONSOLE_TYPES:
        report.warn(path, int(con_type), "unknown console type; nothing will drive it")


def shmem_groups(cell: CellLike) -> dict[int, tuple[int, int]]:
    """Map region index to (PCI device index, position in its ivshmem group)."""
    groups: dict[int, tuple[int, int]] = {}
    for d, dev in enumerate(cell.pci_devices):
        if dev.type != PCI_IVSHMEM:
            continue
        length = 2 + dev.shmem_peers
        for pos in range(length):
            index = dev.shmem_regions_start + pos
            if index >= len(cell.mem_regions):
                break
            groups.setdefault(index, (d, pos))
    return groups


def _check_regions(
    cell: CellLike, report: Report, shmem: dict[int, tuple[int, int]], *, root: bool
) -> None:
    comm_seen = False
    for i, region in enumerate(cell.mem_regions):
        path = f"mem_regions[{i}]"
        flags = int(region.flags)
        unknown = flags & ~MEM_FLAGS_KNOWN
        if unknown:
            report.warn(
                f"{path}.flags",
                flags,
                f"bits {unknown:#x} are no JAILHOUSE_MEM_* flag; the hypervisor ignores them",
            )
        if region.phys_start + region.size > _ADDRESS_SPACE:
            report.error(
                f"{path}.size", region.size, "the region runs past the end of the address space"
            )
        if region.virt_start + region.size > _ADDRESS_SPACE:
            report.error(
                f"{path}.size",
                region.size,
                "the region runs past the end of the guest address space",
            )
        if flags & MEM_COMM_REGION:
            if root:
                report.warn(
                    f"{path}.flags",
                    flags,
                    "the root cell has no comm region; the flag is meaningless here",
                )
            elif comm_seen:
                report.warn(
                    f"{path}.flags",
                    flags,
                    "a second comm region: the inmate finds only one, at a fixed address",
                )
            comm_seen = True
            if region.size != PAGE_SIZE:
                report.error(
                    f"{path}.size",
                    region.size,
                    "the comm region is backed by one 4 KiB page: its size must be 0x1000",
                )
            if region.virt_start % PAGE_SIZE:
                report.error(
                    f"{path}.virt_start",
                    region.virt_start,
                    "the comm region must start on a 4 KiB page",
                )
            continue
        if region.size == 0:
            if i not in shmem:
                report.warn(f"{path}.size", 0, "a region of size 0 maps nothing")
            continue
        if region.virt_start % PAGE_SIZE or region.size % PAGE_SIZE:  # a sub-page region
            if not flags & MEM_IO_WIDTHS:
                which = "virt_start" if region.virt_start % PAGE_SIZE else "size"
                report.error(
                    f"{path}.{which}",
                    getattr(region, which),
                    "not page aligned, so this is a trapped sub-page region, but no IO_8/"
                    "IO_16/IO_32/IO_64 flag permits any access width: every access faults",
                )
        elif region.phys_start % PAGE_SIZE:
            report.error(
                f"{path}.phys_start",
                region.phys_start,
                "not page aligned: the hypervisor rounds it down and maps other memory; "
                "align it to 4 KiB",
            )
        if flags & MEM_LOADABLE and not flags & MEM_WRITE:
            report.warn(
                f"{path}.flags",
                flags,
                "LOADABLE without WRITE: CELL_LOAD refuses images for this region",
            )


def _overlaps(a_start: int, a_size: int, b_start: int, b_size: int) -> bool:
    """Whether two ranges share a byte; empty ranges overlap nothing (as upstream)."""
    return a_size > 0 and b_size > 0 and a_start < b_start + b_size and b_start < a_start + a_size


def _span(start: int, size: int) -> str:
    return f"{start:#x}-{start + size - 1:#x}"


def _any_overlap(spans: list[tuple[int, int]]) -> bool:
    """Whether two of some non-empty ``(start, end)`` ranges share a byte."""
    spans.sort()
    end = -1
    for start, stop in spans:
        if start < end:
            return True
        end = max(end, stop)
    return False


def _check_overlaps_within(cell: CellLike, report: Report) -> None:
    regions = cell.mem_regions
    comm = [int(r.flags) & MEM_COMM_REGION for r in regions]
    phys_spans = [
        (r.phys_start, r.phys_start + r.size)
        for r, c in zip(regions, comm, strict=True)
        if r.size and not c
    ]
    virt_spans = [(r.virt_start, r.virt_start + r.size) for r in regions if r.size]
    if not _any_overlap(phys_spans) and not _any_overlap(virt_spans):
        return  # the usual case: no pair to name, so no need to look at every pair
    for j, b in enumerate(regions):
        for i in range(j):
            a = regions[i]
            phys = (
                not comm[i]
                and not comm[j]
                and _overlaps(a.phys_start, a.size, b.phys_start, b.size)
            )
            virt = _overlaps(a.virt_start, a.size, b.virt_start, b.size)
            if not (phys or virt):
                continue
            how = (
                "physically and virtually"
                if phys and virt
                else "physically"
                if phys
                else "virtually"
            )
            which = "phys_start" if phys else "virt_start"
            start = a.phys_start if phys else a.virt_start
            report.error(
                f"mem_regions[{j}].{which}",
                b.phys_start if phys else b.virt_start,
                f"overlaps mem_regions[{i}] ({_span(start, a.size)}) {how}; "
                "the regions of one cell must not overlap",
            )


def _check_caches(cell: CellLike, report: Report) -> None:
    if not cell.cache_regions:
        return
    if cell.arch != ARCH_X86:
        report.warn(
            "cache_regions",
            len(cell.cache_regions),
            "cache regions are an x86 (Intel CAT) feature; they are ignored here",
        )
        return
    for i, cache in enumerate(cell.cache_regions):
        path = f"cache_regions[{i}]"
        if i >= 1:
            report.error(
                path,
                len(cell.cache_regions),
                "Intel CAT takes exactly one cache region per cell; CREATE fails with EINVAL",
            )
            continue
        if cache.type != CACHE_L3:  # also catches unknown codes
            report.error(
                f"{path}.type",
                int(cache.type),
                "only a unified L3 region (type 3) is supported; CREATE fails with EINVAL",
            )
        if cache.size == 0:
            report.error(f"{path}.size", 0, "an empty cache partition is refused with EINVAL")


def _check_irqchips(cell: CellLike, report: Report) -> None:
    for i, chip in enumerate(cell.irqchips):
        path = f"irqchips[{i}].pin_base"
        if cell.arch == ARCH_X86:
            if chip.pin_base != 0:
                report.error(
                    path, chip.pin_base, "an x86 IOAPIC entry needs pin_base 0; EINVAL otherwise"
                )
        elif cell.arch in _ARCHES:
            if chip.pin_base % 32:
                report.error(
                    path,
                    chip.pin_base,
                    "a GIC entry's pin_base must be a multiple of 32; EINVAL otherwise",
                )
            elif chip.pin_base + 128 > _GIC_IRQS:
                report.error(
                    path,
                    chip.pin_base,
                    f"the 128 pins from pin_base run past GIC interrupt {_GIC_IRQS - 1}; "
                    "EINVAL otherwise",
                )


def _check_pio(cell: CellLike, report: Report) -> None:
    if not cell.pio_regions:
        return
    if cell.arch != ARCH_X86:
        report.warn(
            "pio_regions",
            len(cell.pio_regions),
            "port I/O exists on x86 only; these regions are ignored",
        )
        return
    for i, pio in enumerate(cell.pio_regions):
        if pio.base + pio.length > _PIO_SPACE:
            report.error(
                f"pio_regions[{i}].length",
                pio.length,
                f"base {pio.base:#x} plus length runs past port 0xffff; the hypervisor "
                "does not range-check the I/O bitmap",
            )


def _check_pci(cell: CellLike, report: Report) -> None:
    n_regions = len(cell.mem_regions)
    pins: frozenset[int] | None = None
    for d, dev in enumerate(cell.pci_devices):
        path = f"pci_devices[{d}]"
        if dev.type not in PCI_TYPES:
            report.error(
                f"{path}.type",
                int(dev.type),
                "unknown PCI device type (1 device, 2 bridge, 3 ivshmem)",
            )
        if dev.num_caps and dev.caps_start + dev.num_caps > len(cell.pci_caps):
            report.error(
                f"{path}.num_caps",
                dev.num_caps,
                f"caps_start {dev.caps_start} + num_caps runs past the {len(cell.pci_caps)} "
                "entries of pci_caps; the hypervisor would read past the config",
            )
        if dev.type != PCI_IVSHMEM:
            continue
        end = dev.shmem_regions_start + 2 + dev.shmem_peers
        if end > n_regions:
            report.error(
                f"{path}.shmem_regions_start",
                dev.shmem_regions_start,
                f"the ivshmem group (state table, read/write section, {dev.shmem_peers} output "
                f"sections) needs regions up to index {end - 1} but the cell has {n_regions}; "
                "EINVAL",
            )
        if dev.num_msix_vectors > _IVSHMEM_MAX_MSIX:
            report.error(
                f"{path}.num_msix_vectors",
                dev.num_msix_vectors,
                f"ivshmem offers at most {_IVSHMEM_MAX_MSIX} MSI-X vectors; EINVAL",
            )
        if dev.shmem_peers > _IVSHMEM_MAX_PEERS:
            report.error(
                f"{path}.shmem_peers",
                dev.shmem_peers,
                f"an ivshmem link has at most {_IVSHMEM_MAX_PEERS} peers",
            )
        if dev.shmem_dev_id >= _IVSHMEM_MAX_PEERS:
            report.error(
                f"{path}.shmem_dev_id",
                dev.shmem_dev_id,
                f"peer ids run from 0 to {_IVSHMEM_MAX_PEERS - 1}; EINVAL",
            )
        elif dev.shmem_dev_id >= dev.shmem_peers:
            report.error(
                f"{path}.shmem_dev_id",
                dev.shmem_dev_id,
                f"must be below shmem_peers ({dev.shmem_peers}): the peer has no output section",
            )
        if end <= n_regions:
            for peer in range(dev.shmem_peers):
                index = dev.shmem_regions_start + 2 + peer
                region = cell.mem_regions[index]
                if peer != dev.shmem_dev_id and region.size and int(region.flags) & MEM_WRITE:
                    report.warn(
                        f"mem_regions[{index}].flags",
                        int(region.flags),
                        f"output section of ivshmem peer {peer} is writable here, but this cell "
                        f"is peer {dev.shmem_dev_id}; only the owner should write it",
                    )
        if cell.arch in (ARCH_ARM, ARCH_ARM64) and dev.num_msix_vectors == 0:
            if pins is None:
                pins = frozenset().union(
                    *(irq_pins(chip.pin_base, chip.pin_bitmap) for chip in cell.irqchips)
                )
            spi = 32 + cell.vpci_irq_base + ((dev.bdf >> 3) & 3)
            if spi not in pins:
                report.warn(
                    f"{path}.bdf",
                    dev.bdf,
                    f"the device raises INTx on SPI {spi} (32 + vpci_irq_base + slot), which no "
                    "irqchip of the cell grants; its interrupts never arrive",
                )


def _report_trailing(trailing: bytes, offset: int, report: Report) -> None:
    n = len(trailing)
    guesses = [
        f"{names} ({n // size} x {size} bytes)" for size, names in _ENTRY_SIZES if n % size == 0
    ]
    guess = (
        f"; if a count is too small, it may be {', or '.join(guesses)}"
        if guesses
        else "; the length matches no array entry size, so it is not a miscounted array"
    )
    zeros = " They are all zero (padding?)." if not any(trailing) else ""
    report.warn(
        "trailing",
        n,
        f"{n} bytes follow the declared arrays at offset {offset} ({offset:#x}); the driver "
        f"ignores them{guess}.{zeros}",
    )


# -- one cell against the system ----------------------------------------------------------------


class Resource:
    """A range no cell may map; ``end`` is worked out once, as the system's memo keeps it."""

    __slots__ = ("end", "name", "size", "start")

    def __init__(self, name: str, start: int, size: int) -> None:
        self.name = name
        self.start = start
        self.size = size
        self.end = start + size


def system_resources(system: SystemLike) -> list[Resource]:
    """What the hypervisor keeps or intercepts: no cell may map it (upstream config check)."""
    hv = system.hypervisor_memory
    resources = [Resource("the hypervisor memory", hv.phys_start, hv.size)]
    platform = system.platform
    if platform.pci_mmconfig_base:
        resources.append(
            Resource(
                "the PCI MMCONFIG window",
                platform.pci_mmconfig_base,
                (platform.pci_mmconfig_end_bus + 1) * 256 * PAGE_SIZE,
            )
        )
    resources += [
        Resource(f"IOMMU unit {i}", unit.base, unit.size)
        for i, unit in enumerate(platform.iommu_units)
        if unit.type != IOMMU_UNUSED
    ]
    arm = _arm_info(system)
    if system.arch == ARCH_X86:
        resources.append(Resource("the xAPIC", _XAPIC_BASE, PAGE_SIZE))
        resources += [
            Resource(f"the IOAPIC of root irqchips[{i}]", chip.address, PAGE_SIZE)
            for i, chip in enumerate(system.root_cell.irqchips)
        ]
    elif arm is not None:
        if arm.gic_version == 2:
            resources += [
                Resource("the GIC distributor (GICD)", arm.gicd_base, 0x1000),
                Resource("the GIC CPU interface (GICC)", arm.gicc_base, 0x2000),
                Resource("the GIC hypervisor interface (GICH)", arm.gich_base, 0x2000),
                Resource("the GIC virtual CPU interface (GICV)", arm.gicv_base, 0x2000),
            ]
        elif arm.gic_version == 3:
            resources += [
                Resource("the GIC distributor (GICD)", arm.gicd_base, 0x10000),
                Resource("the GIC redistributor (GICR)", arm.gicr_base, 0x20000),
            ]
    return resources


def _check_cell_against_system(
    system: SystemLike, cell: CellLike, report: Report, resources: Sequence[Resource]
) -> None:
    for i, region in enumerate(cell.mem_regions):
        start, size = region.phys_start, region.size
        if not size or int(region.flags) & MEM_COMM_REGION:
            continue  # a comm region's phys_start is ignored: the hypervisor supplies the page
        end = start + size
        for res in resources:
            if res.size and start < res.end and res.start < end:  # _overlaps, inlined
                report.error(
                    f"mem_regions[{i}].phys_start",
                    region.phys_start,
                    f"{_span(region.phys_start, region.size)} overlaps {res.name} "
                    f"({_span(res.start, res.size)}), which the hypervisor keeps or intercepts",
                )
    arm = _arm_info(system)
    if system.arch in (ARCH_ARM, ARCH_ARM64) and arm is not None:
        for i, chip in enumerate(cell.irqchips):
            if chip.address != arm.gicd_base:
                report.warn(
                    f"irqchips[{i}].address",
                    chip.address,
                    f"only irqchips at the GIC distributor ({arm.gicd_base:#x}) are used; "
                    "this one is ignored",
                )
    units = [u for u in system.platform.iommu_units if u.type != IOMMU_UNUSED]
    if system.arch == ARCH_X86 and units:
        for d, dev in enumerate(cell.pci_devices):
            if dev.type != PCI_IVSHMEM and dev.iommu >= len(units):
                report.error(
                    f"pci_devices[{d}].iommu",
                    dev.iommu,
                    f"the system has {len(units)} IOMMU unit(s); the index is not checked by "
                    "the hypervisor",
                )


# -- the partitioning ---------------------------------------------------------------------------


def _check_partitioning(
    system: SystemLike,
    cells: Sequence[CellLike],
    report: Report,
    root_spans: Sequence[tuple[int, int]],
    groups: Sequence[dict[int, tuple[int, int]]],
) -> None:
    """Check the rules of the set; ``groups`` holds :func:`shmem_groups` of each cell."""
    root = system.root_cell
    root_report = report.scoped("root_cell.", root.name)
    names = {root.name: "the root cell"}
    taken: dict[int, str] = {}
    for cell in cells:
        r = report.scoped("", cell.name)
        if cell.name in names:
            r.error(
                "name",
                cell.name,
                f"{names[cell.name]} has the same name; CREATE fails with EEXIST",
            )
        else:
            names[cell.name] = f"cell {cell.name!r}"
        foreign = cell.cpus - root.cpus
        if foreign:
            r.error(
                "cpus",
                format_cpus(foreign),
                f"not in the root cell's CPU set ({format_cpus(root.cpus) or 'empty'}); "
                "CREATE fails with EBUSY",
            )
        shared = sorted(cpu for cpu in cell.cpus if cpu in taken)
        if shared:
            owners = ", ".join(sorted({repr(taken[cpu]) for cpu in shared}))
            r.error(
                "cpus",
                format_cpus(frozenset(shared)),
                f"also assigned to {owners}; both cells cannot run at the same time",
            )
        for cpu in cell.cpus:
            taken.setdefault(cpu, cell.name)
    if cells and root.cpus and root.cpus <= set(taken):
        root_report.error(
            "cpus",
            format_cpus(root.cpus),
            "no CPU is left to the root cell when all non-root cells run; keep at least one",
        )
    for cell, shmem in zip(cells, groups, strict=True):
        _check_memory_from_root(root_spans, cell, shmem, report.scoped("", cell.name))
    for j, b in enumerate(cells):
        for i, a in enumerate(cells[:j]):
            _check_memory_between((a, groups[i]), (b, groups[j]), report.scoped("", b.name))
    _check_ivshmem_links([root, *cells], report)


def _covered(start: int, size: int, spans: Iterable[tuple[int, int]]) -> bool:
    """Whether ``[start, start+size)`` lies inside the union of ``spans`` (sorted by start)."""
    pos, end = start, start + size
    for s_start, s_end in spans:
        if s_start > pos:
            break
        pos = max(pos, s_end)
        if pos >= end:
            return True
    return pos >= end


def _check_memory_from_root(
    spans: Sequence[tuple[int, int]],
    cell: CellLike,
    shmem: dict[int, tuple[int, int]],
    report: Report,
) -> None:
    for i, region in enumerate(cell.mem_regions):
        if (
            int(region.flags) & (MEM_COMM_REGION | MEM_IO)
            or not region.size
            or i in shmem
            or _covered(region.phys_start, region.size, spans)
        ):
            continue
        where = _span(region.phys_start, region.size)
        if int(region.flags) & MEM_LOADABLE:
            report.error(
                f"mem_regions[{i}].phys_start",
                region.phys_start,
                f"{where} is LOADABLE but not inside the root cell's memory regions: "
                "CELL_LOAD writes images through the root cell, which does not map it",
            )
        else:
            report.warn(
                f"mem_regions[{i}].phys_start",
                region.phys_start,
                f"{where} is not inside the root cell's memory regions; non-root memory is "
                "normally carved out of memory the root cell describes (and reserves from Linux)",
            )


def _shared_by_design(
    region: RegionLike, in_shmem: bool, other: RegionLike, other_shmem: bool
) -> bool:
    if in_shmem and other_shmem:
        return True  # ivshmem peers map the same pages on purpose
    return bool(int(region.flags) & int(other.flags) & MEM_ROOTSHARED)


def _check_memory_between(
    a_groups: tuple[CellLike, dict[int, tuple[int, int]]],
    b_groups: tuple[CellLike, dict[int, tuple[int, int]]],
    report: Report,
) -> None:
    (a, a_shmem), (b, b_shmem) = a_groups, b_groups
    for j, rb in enumerate(b.mem_regions):
        if int(rb.flags) & MEM_COMM_REGION:
            continue
        for i, ra in enumerate(a.mem_regions):
            if int(ra.flags) & MEM_COMM_REGION or not _overlaps(
                ra.phys_start, ra.size, rb.phys_start, rb.size
            ):
                continue
            if _shared_by_design(ra, i in a_shmem, rb, j in b_shmem):
                continue
            text = (
                f"{_span(rb.phys_start, rb.size)} overlaps cell {a.name!r} mem_regions[{i}] "
                f"({_span(ra.phys_start, ra.size)})"
            )
            if (int(ra.flags) | int(rb.flags)) & MEM_IO:
                report.warn(
                    f"mem_regions[{j}].phys_start",
                    rb.phys_start,
                    f"{text}: a device is given to both cells; mark it ROOTSHARED in both "
                    "if it is meant to be shared",
                )
            else:
                report.error(
                    f"mem_regions[{j}].phys_start",
                    rb.phys_start,
                    f"{text}: two non-root cells would own the same memory",
                )


def _check_ivshmem_links(cells: Sequence[CellLike], report: Report) -> None:
    """Check that the peers of each ivshmem link (same bdf) agree."""
    first: dict[int, tuple[CellLike, int]] = {}
    ids: dict[tuple[int, int], str] = {}
    for c_index, cell in enumerate(cells):
        r = report.scoped("root_cell." if c_index == 0 else "", cell.name)
        for d, dev in enumerate(cell.pci_devices):
            if dev.type != PCI_IVSHMEM:
                continue
            path = f"pci_devices[{d}]"
            link = bdf_text(dev.domain, dev.bdf)
            owner = ids.get((dev.bdf, dev.shmem_dev_id))
            if owner is not None:
                r.error(
                    f"{path}.shmem_dev_id",
                    dev.shmem_dev_id,
                    f"cell {owner!r} is already peer {dev.shmem_dev_id} of the ivshmem link at "
                    f"{link}; CREATE fails with EBUSY",
                )
            else:
                ids[dev.bdf, dev.shmem_dev_id] = cell.name
            if dev.bdf not in first:
                first[dev.bdf] = (cell, d)
                continue
            ref_cell, ref_d = first[dev.bdf]
            ref = ref_cell.pci_devices[ref_d]
            if dev.shmem_peers != ref.shmem_peers:
                r.warn(
                    f"{path}.shmem_peers",
                    dev.shmem_peers,
                    f"cell {ref_cell.name!r} declares {ref.shmem_peers} peers for the ivshmem "
                    f"link at {link}; all peers should agree",
                )
                continue
            count = 2 + dev.shmem_peers
            mine = cell.mem_regions[dev.shmem_regions_start :][:count]
            theirs = ref_cell.mem_regions[ref.shmem_regions_start :][:count]
            for pos, (m, t) in enumerate(zip(mine, theirs, strict=False)):
                if (m.phys_start, m.size) != (t.phys_start, t.size):
                    index = dev.shmem_regions_start + pos
                    r.error(
                        f"mem_regions[{index}].phys_start",
                        m.phys_start,
                        f"{_group_part(pos)} of the ivshmem link at {link} is "
                        f"{_span(m.phys_start, m.size) if m.size else 'empty'} here but "
                        f"{_span(t.phys_start, t.size) if t.size else 'empty'} in cell "
                        f"{ref_cell.name!r}; peers must map the same memory",
                    )


def _group_part(pos: int) -> str:
    if pos == 0:
        return "the state table"
    if pos == 1:
        return "the read/write section"
    return f"the output section of peer {pos - 2}"
