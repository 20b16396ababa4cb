"""Check configs as the driver and hypervisor would, and as upstream's config checker does.

Every problem is a :class:`Finding` that names the field path (``mem_regions[3].virt_start``),
the value and the reason.  Nothing here raises for a bad config: callers decide.

Three entry points, from narrow to wide:

- :func:`validate_cell`: one non-root cell on its own (what CELL_CREATE and the hypervisor
  refuse, plus mistakes they let through, such as a sub-page region no access can use).
- :func:`validate_system`: a system config and its root cell (what ENABLE refuses, and
  upstream ``jailhouse config check`` with the system config alone).
- :func:`check_configs`: a whole partitioned system, like ``jailhouse config check SYSTEM
  CELL...``, plus the cross-cell rules the hypervisor does not check: CPUs the root cell
  does not own, memory two cells both claim, images loaded where the root cell cannot
  write, ivshmem peers that do not agree.

Severity: ERROR when the driver or hypervisor refuses the config or the partitioning is
broken (overlaps, a cell that faults on first access); WARNING when it is accepted but
probably not what was meant.
"""

from __future__ import annotations

import enum

from jailhouse.config._record import Record
from jailhouse.config.model import (
    NAME_MAXLEN,
    PAGE_SIZE,
    ApicMode,
    Arch,
    ArmPlatform,
    CacheType,
    CellFlag,
    ConsoleType,
    IommuType,
    MemFlag,
    PciType,
    SystemFlag,
    X86Platform,
    format_cpus,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Final

    from jailhouse.config.model import CellConfig, MemoryRegion, SystemConfig

__all__ = ["Finding", "Severity", "check_configs", "validate_cell", "validate_system"]


class Severity(enum.Enum):
    """How bad a finding is."""

    ERROR = "error"
    """The driver or hypervisor rejects the config, or the partitioning is broken."""
    WARNING = "warning"
    """Accepted, but probably not what was meant (such as bytes after the arrays)."""


class Finding(Record):
    """One problem in a config.

    Attributes:
        field: Path of the field, such as ``mem_regions[3].virt_start``.
        value: The offending value.
        reason: Why it is wrong, in one sentence.
        severity: ERROR or WARNING.
        cell: Name of the cell the field belongs to, where a check spans several configs.
    """

    __slots__ = ("cell", "field", "reason", "severity", "value")
    field: str
    value: object
    reason: str
    severity: Severity
    cell: str | None

    def __init__(
        self,
        field: str,
        value: object,
        reason: str,
        severity: Severity = Severity.ERROR,
        cell: str | None = None,
    ) -> None:
        """Record a finding."""
        _set = object.__setattr__
        _set(self, "field", field)
        _set(self, "value", value)
        _set(self, "reason", reason)
        _set(self, "severity", severity)
        _set(self, "cell", cell)

    def __str__(self) -> str:
        """Render as ``error: cell 'x': mem_regions[3].size = 0x1001: reason``."""
        from jailhouse.errors import _show  # noqa: PLC0415 - one renderer for values

        where = f"cell {self.cell!r}: " if self.cell is not None else ""
        return f"{self.severity.value}: {where}{self.field} = {_show(self.value)}: {self.reason}"


# -- limits and constants (ABI fact sheet §2 and §3; upstream config checker) -----------------

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

# Plain ints: ``~`` on an IntFlag complements only up to its highest member.
_KNOWN_MEM_FLAGS: Final = sum(f.value for f in MemFlag)
_KNOWN_CELL_FLAGS: Final = sum(f.value for f in CellFlag)
_KNOWN_SYSTEM_FLAGS: Final = sum(f.value for f in SystemFlag)
_IO_WIDTHS: Final = int(MemFlag.IO_8 | MemFlag.IO_16 | MemFlag.IO_32 | MemFlag.IO_64)
# Single bits as plain ints for the per-region loops: ``int(flags) & bit`` is a tenth of
# the cost of ``bit in flags`` (Flag.__contains__) or ``flags & bit`` (Flag.__and__).
_MEM_IO: Final = int(MemFlag.IO)
_MEM_WRITE: Final = int(MemFlag.WRITE)
_MEM_LOADABLE: Final = int(MemFlag.LOADABLE)
_MEM_ROOTSHARED: Final = int(MemFlag.ROOTSHARED)

# Trailing-array entry sizes, largest first, with the counts that declare them.
_ENTRY_SIZES: Final = (
    (56, "num_pci_devices"),
    (32, "num_memory_regions or num_irqchips"),
    (12, "num_cache_regions"),
    (8, "num_pci_caps"),
    (4, "num_pio_regions or num_stream_ids"),
)


class _Report:
    """Collects findings under one field prefix and cell name."""

    __slots__ = ("cell", "findings", "prefix")

    def __init__(
        self, findings: list[Finding] | None = None, prefix: str = "", cell: str | None = None
    ) -> None:
        self.findings: list[Finding] = [] if findings is None else findings
        self.prefix = prefix
        self.cell = cell

    def error(self, path: str, value: object, reason: str) -> None:
        self.findings.append(Finding(self.prefix + path, value, reason, Severity.ERROR, self.cell))

    def warn(self, path: str, value: object, reason: str) -> None:
        self.findings.append(
            Finding(self.prefix + path, value, reason, Severity.WARNING, self.cell)
        )

    def scoped(self, prefix: str, cell: str | None) -> _Report:
        """Return a report that adds to the same list under another prefix and cell."""
        return _Report(self.findings, prefix, cell)


# -- entry points ---------------------------------------------------------------------------


def validate_cell(cell: CellConfig) -> list[Finding]:
    """Check one non-root cell config on its own.

    Covers what CELL_CREATE and the hypervisor refuse (name, CPU set, size over 16 pages,
    ivshmem region counts, irqchip pin bases, x86 cache regions...) and what they accept
    but cannot work (regions overlapping each other, sub-page regions without an access
    width, bytes after the declared arrays).

    Args:
        cell: The cell config.

    Returns:
        The findings, in field order; empty when the config is clean.
    """
    report = _Report()
    _check_cell(cell, report, root=False, end_offset=cell.size)
    return report.findings


def validate_system(system: SystemConfig) -> list[Finding]:
    """Check a system config and its root cell on their own.

    Covers what ENABLE refuses (unknown architecture or GIC version, an empty root CPU
    set...), the root cell's own rules, and upstream ``jailhouse config check`` run on the
    system config alone: root regions overlapping each other, the hypervisor memory, the
    PCI MMCONFIG window, IOMMU registers and the interrupt controllers.

    Args:
        system: The system config.

    Returns:
        The findings; root-cell fields are prefixed ``root_cell.``.
    """
    report = _Report()
    _check_system(system, report, _system_resources(system))
    return report.findings


def check_configs(system: SystemConfig, *cells: CellConfig) -> list[Finding]:
    """Check a whole partitioned system: the system config and the cells to run on it.

    Runs :func:`validate_system` and :func:`validate_cell` on each config, the resource
    checks of upstream ``jailhouse config check`` on every cell, and the rules that only
    hold for the set as a whole: matching architectures, unique names, CPUs the root cell
    owns, no CPU in two non-root cells, at least one CPU left to the root cell, no memory
    in two non-root cells unless it is shared by design (ivshmem, ROOTSHARED), loadable
    memory the root cell maps, and ivshmem peers that agree.

    What the system alone yields is worked out once per system object and kept for the
    last few: configs are immutable, so a system must not be built around a list (or
    anything else) that changes afterwards.

    Args:
        system: The system config.
        *cells: The non-root cell configs, all meant to run at the same time.

    Returns:
        The findings; each names the cell it belongs to.
    """
    memo = _memo(system)
    report = _Report(list(memo.findings), cell=system.root_cell.name)
    groups: list[dict[int, tuple[int, int]]] = []
    for cell in cells:
        cell_report = report.scoped("", cell.name)
        if cell.arch != system.arch:
            cell_report.error(
                "arch",
                Arch(cell.arch).name,
                f"the system is {Arch(system.arch).name}; the driver answers a CREATE of another "
                "architecture with success and creates nothing",
            )
        shmem = _shmem_groups(cell)  # once per cell, for its own checks and the set's
        groups.append(shmem)
        _check_cell(cell, cell_report, root=False, end_offset=cell.size, shmem=shmem)
        _check_cell_against_system(system, cell, cell_report, memo.resources)
    _check_partitioning(system, cells, report, memo.root_spans, groups)
    return report.findings


class _SystemMemo:
    """What :func:`check_configs` derives from a system alone.

    Attributes:
        system: The system.
        findings: The system's own findings (root-cell fields prefixed ``root_cell.``).
        resources: What no cell may map (:func:`_system_resources`).
        root_spans: The root cell's non-empty regions as sorted ``(phys_start, phys_end)``.
    """

    __slots__ = ("findings", "resources", "root_spans", "system")

    def __init__(
        self,
        system: SystemConfig,
        findings: tuple[Finding, ...],
        resources: tuple[_Resource, ...],
        root_spans: tuple[tuple[int, int], ...],
    ) -> None:
        self.system = system
        self.findings = findings
        self.resources = resources
        self.root_spans = root_spans


_MEMO_SIZE: Final = 4
_memos: tuple[_SystemMemo, ...] = ()


def _memo(system: SystemConfig) -> _SystemMemo:
    """Return what the system alone yields, from the last few systems checked if it is one.

    A system config is immutable, so its findings never change, and a translator or a
    ``jhctl`` run checks many cell sets against one system.  The systems are matched by
    identity: hashing a whole system would cost about as much as checking it again.
    """
    global _memos  # noqa: PLW0603 - one tuple swapped whole, safe between threads
    for memo in _memos:
        if memo.system is system:
            return memo
    report = _Report(cell=system.root_cell.name)
    resources = tuple(_system_resources(system))
    _check_system(system, report, resources)
    memo = _SystemMemo(
        system,
        tuple(report.findings),
        resources,
        tuple(sorted((r.phys_start, r.phys_end) for r in system.root_cell.mem_regions if r.size)),
    )
    _memos = (memo, *_memos[: _MEMO_SIZE - 1])
    return memo


# -- the system config ------------------------------------------------------------------------


def _check_system(system: SystemConfig, report: _Report, resources: Sequence[_Resource]) -> None:
    arch = Arch(system.arch)
    if not arch.known:
        report.error("arch", int(arch), "unknown architecture (0 x86, 1 arm, 2 arm64)")
    unknown = int(system.flags) & ~_KNOWN_SYSTEM_FLAGS
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
        if not IommuType(unit.type).known:
            report.error(
                f"platform.iommu_units[{i}].type",
                int(unit.type),
                "unknown IOMMU type (0 unused, 1 AMD, 2 Intel, 3 SMMUv3, 4 TI PVU, 5 MMU-500); "
                "upstream's config checker refuses the file",
            )

    info = platform.arch_info
    if arch == Arch.X86:
        if not isinstance(info, X86Platform):
            report.error(
                "platform.arch_info", type(info).__name__, "an x86 system needs X86Platform"
            )
        elif not ApicMode(info.apic_mode).known:
            report.warn(
                "platform.arch_info.apic_mode",
                int(info.apic_mode),
                "unknown APIC mode (0 auto, 1 xAPIC, 2 x2APIC)",
            )
    elif arch.known:
        if not isinstance(info, ArmPlatform):
            report.error(
                "platform.arch_info",
                type(info).__name__,
                f"an {arch.name} system needs ArmPlatform",
            )
        elif info.gic_version not in (2, 3):
            report.error(
                "platform.arch_info.gic_version",
                info.gic_version,
                "the hypervisor supports GICv2 and GICv3 only; ENABLE fails with EINVAL",
            )

    root_report = report.scoped("root_cell.", report.cell)
    if system.root_cell.arch != system.arch:
        root_report.warn(
            "arch",
            int(system.root_cell.arch),
            f"differs from the system's {arch.name}; the packed config carries only the "
            "system's architecture",
        )
    _check_cell(system.root_cell, root_report, root=True, end_offset=system.size)
    _check_cell_against_system(system, system.root_cell, root_report, resources)


# -- one cell on its own ------------------------------------------------------------------------


def _check_cell(
    cell: CellConfig,
    report: _Report,
    *,
    root: bool,
    end_offset: int,
    shmem: dict[int, tuple[int, int]] | None = None,
) -> None:
    """Check the rules that hold for one cell descriptor and its arrays.

    ``shmem`` is :func:`_shmem_groups` of the cell, where the caller has it already.
    """
    arch = Arch(cell.arch)
    if not arch.known and not root:
        report.error("arch", int(arch), "unknown architecture (0 x86, 1 arm, 2 arm64)")
    _check_name(cell.name, report)
    _check_cpus(cell, report, root=root)
    unknown = int(cell.flags) & ~_KNOWN_CELL_FLAGS
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
        shmem = _shmem_groups(cell)
    _check_regions(cell, report, shmem, root=root)
    _check_overlaps_within(cell, report)
    _check_caches(cell, report)
    _check_irqchips(cell, report)
    _check_pio(cell, report)
    _check_pci(cell, report)
    if not root:
        if arch == Arch.X86 and cell.cpu_reset_address:
            report.warn(
                "cpu_reset_address",
                cell.cpu_reset_address,
                "the field was added for ARM entry points and x86 cells do not use it; "
                "`jailhouse cell linux` refuses anything but 0",
            )
        if cell.comm_region is None and CellFlag.PASSIVE_COMMREG not in cell.flags:
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


def _check_name(name: str, report: _Report) -> None:
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


def _check_cpus(cell: CellConfig, report: _Report, *, root: bool) -> None:
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
    elif not root and cell.arch == Arch.X86 and 0 in cell.cpus:
        report.error(
            "cpus",
            format_cpus(cell.cpus),
            "CPU 0 cannot leave the root cell on x86; CREATE fails with EINVAL",
        )


def _check_console(con_type: int, path: str, report: _Report) -> None:
    if not ConsoleType(con_type).known:
        report.warn(path, int(con_type), "unknown console type; nothing will drive it")


def _shmem_groups(cell: CellConfig) -> dict[int, tuple[int, int]]:
    """Map region index to (PCI device index, position in its ivshmem group)."""
    groups: dict[int, tuple[int, int]] = {}
    for d, dev in enumerate(cell.pci_devices):
        if dev.type != PciType.IVSHMEM:
            continue
        length = 2 + dev.shmem_peers
        for pos in range(length):
            index = dev.shmem_regions_start + pos
            if index >= len(cell.mem_regions):
                break
            groups.setdefault(index, (d, pos))
    return groups


def _check_regions(
    cell: CellConfig, report: _Report, shmem: dict[int, tuple[int, int]], *, root: bool
) -> None:
    comm_seen = False
    for i, region in enumerate(cell.mem_regions):
        path = f"mem_regions[{i}]"
        flags = int(region.flags)
        unknown = flags & ~_KNOWN_MEM_FLAGS
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
        if region.is_comm_region:
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
        if region.is_subpage:
            if not flags & _IO_WIDTHS:
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
        if flags & _MEM_LOADABLE and not flags & _MEM_WRITE:
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


def _check_overlaps_within(cell: CellConfig, report: _Report) -> None:
    regions = cell.mem_regions
    comm = [r.is_comm_region for r in regions]
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


def _check_caches(cell: CellConfig, report: _Report) -> None:
    if not cell.cache_regions:
        return
    if cell.arch != Arch.X86:
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
        if cache.type != CacheType.L3:  # also catches unknown codes
            report.error(
                f"{path}.type",
                int(cache.type),
                "only a unified L3 region (type 3) is supported; CREATE fails with EINVAL",
            )
        if cache.size == 0:
            report.error(f"{path}.size", 0, "an empty cache partition is refused with EINVAL")


def _check_irqchips(cell: CellConfig, report: _Report) -> None:
    for i, chip in enumerate(cell.irqchips):
        path = f"irqchips[{i}].pin_base"
        if cell.arch == Arch.X86:
            if chip.pin_base != 0:
                report.error(
                    path, chip.pin_base, "an x86 IOAPIC entry needs pin_base 0; EINVAL otherwise"
                )
        elif Arch(cell.arch).known:
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


def _check_pio(cell: CellConfig, report: _Report) -> None:
    if not cell.pio_regions:
        return
    if cell.arch != Arch.X86:
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


def _check_pci(cell: CellConfig, report: _Report) -> None:
    n_regions = len(cell.mem_regions)
    pins: frozenset[int] | None = None
    for d, dev in enumerate(cell.pci_devices):
        path = f"pci_devices[{d}]"
        if not PciType(dev.type).known:
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
        if dev.type != PciType.IVSHMEM:
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
                if peer != dev.shmem_dev_id and region.size and int(region.flags) & _MEM_WRITE:
                    report.warn(
                        f"mem_regions[{index}].flags",
                        int(region.flags),
                        f"output section of ivshmem peer {peer} is writable here, but this cell "
                        f"is peer {dev.shmem_dev_id}; only the owner should write it",
                    )
        if cell.arch in (Arch.ARM, Arch.ARM64) and dev.num_msix_vectors == 0:
            if pins is None:
                pins = frozenset().union(*(chip.pins for chip in cell.irqchips))
            spi = 32 + cell.vpci_irq_base + ((dev.bdf >> 3) & 3)
            if spi not in pins:
                report.warn(
                    f"{path}.bdf",
                    dev.bdf,
                    f"the device raises INTx on SPI {spi} (32 + vpci_irq_base + slot), which no "
                    "irqchip of the cell grants; its interrupts never arrive",
                )


def _report_trailing(trailing: bytes, offset: int, report: _Report) -> None:
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


class _Resource:
    """A range no cell may map; ``end`` is worked out once, as the system's memo keeps it."""

    __slots__ = ("end", "name", "size", "start")

    def __init__(self, name: str, start: int, size: int) -> None:
        self.name = name
        self.start = start
        self.size = size
        self.end = start + size


def _system_resources(system: SystemConfig) -> list[_Resource]:
    """What the hypervisor keeps or intercepts: no cell may map it (upstream config check)."""
    hv = system.hypervisor_memory
    resources = [_Resource("the hypervisor memory", hv.phys_start, hv.size)]
    platform = system.platform
    if platform.pci_mmconfig_base:
        resources.append(
            _Resource(
                "the PCI MMCONFIG window",
                platform.pci_mmconfig_base,
                (platform.pci_mmconfig_end_bus + 1) * 256 * PAGE_SIZE,
            )
        )
    resources += [
        _Resource(f"IOMMU unit {i}", unit.base, unit.size)
        for i, unit in enumerate(platform.iommu_units)
        if unit.type != IommuType.UNUSED
    ]
    info = platform.arch_info
    if system.arch == Arch.X86:
        resources.append(_Resource("the xAPIC", _XAPIC_BASE, PAGE_SIZE))
        resources += [
            _Resource(f"the IOAPIC of root irqchips[{i}]", chip.address, PAGE_SIZE)
            for i, chip in enumerate(system.root_cell.irqchips)
        ]
    elif isinstance(info, ArmPlatform):
        if info.gic_version == 2:
            resources += [
                _Resource("the GIC distributor (GICD)", info.gicd_base, 0x1000),
                _Resource("the GIC CPU interface (GICC)", info.gicc_base, 0x2000),
                _Resource("the GIC hypervisor interface (GICH)", info.gich_base, 0x2000),
                _Resource("the GIC virtual CPU interface (GICV)", info.gicv_base, 0x2000),
            ]
        elif info.gic_version == 3:
            resources += [
                _Resource("the GIC distributor (GICD)", info.gicd_base, 0x10000),
                _Resource("the GIC redistributor (GICR)", info.gicr_base, 0x20000),
            ]
    return resources


def _check_cell_against_system(
    system: SystemConfig, cell: CellConfig, report: _Report, resources: Sequence[_Resource]
) -> None:
    for i, region in enumerate(cell.mem_regions):
        start, size = region.phys_start, region.size
        if not size or region.is_comm_region:
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
    info = system.platform.arch_info
    if system.arch in (Arch.ARM, Arch.ARM64) and isinstance(info, ArmPlatform):
        for i, chip in enumerate(cell.irqchips):
            if chip.address != info.gicd_base:
                report.warn(
                    f"irqchips[{i}].address",
                    chip.address,
                    f"only irqchips at the GIC distributor ({info.gicd_base:#x}) are used; "
                    "this one is ignored",
                )
    units = [u for u in system.platform.iommu_units if u.type != IommuType.UNUSED]
    if system.arch == Arch.X86 and units:
        for d, dev in enumerate(cell.pci_devices):
            if dev.type != PciType.IVSHMEM and dev.iommu >= len(units):
                report.error(
                    f"pci_devices[{d}].iommu",
                    dev.iommu,
                    f"the system has {len(units)} IOMMU unit(s); the index is not checked by "
                    "the hypervisor",
                )


# -- the partitioning ---------------------------------------------------------------------------


def _check_partitioning(
    system: SystemConfig,
    cells: Sequence[CellConfig],
    report: _Report,
    root_spans: Sequence[tuple[int, int]],
    groups: Sequence[dict[int, tuple[int, int]]],
) -> None:
    """Check the rules of the set; ``groups`` holds :func:`_shmem_groups` of each cell."""
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
    cell: CellConfig,
    shmem: dict[int, tuple[int, int]],
    report: _Report,
) -> None:
    for i, region in enumerate(cell.mem_regions):
        if (
            region.is_comm_region
            or int(region.flags) & _MEM_IO
            or not region.size
            or i in shmem
            or _covered(region.phys_start, region.size, spans)
        ):
            continue
        where = _span(region.phys_start, region.size)
        if int(region.flags) & _MEM_LOADABLE:
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
    region: MemoryRegion, in_shmem: bool, other: MemoryRegion, other_shmem: bool
) -> bool:
    if in_shmem and other_shmem:
        return True  # ivshmem peers map the same pages on purpose
    return bool(int(region.flags) & int(other.flags) & _MEM_ROOTSHARED)


def _check_memory_between(
    a_groups: tuple[CellConfig, dict[int, tuple[int, int]]],
    b_groups: tuple[CellConfig, dict[int, tuple[int, int]]],
    report: _Report,
) -> None:
    (a, a_shmem), (b, b_shmem) = a_groups, b_groups
    for j, rb in enumerate(b.mem_regions):
        if rb.is_comm_region:
            continue
        for i, ra in enumerate(a.mem_regions):
            if ra.is_comm_region or not _overlaps(ra.phys_start, ra.size, rb.phys_start, rb.size):
                continue
            if _shared_by_design(ra, i in a_shmem, rb, j in b_shmem):
                continue
            text = (
                f"{_span(rb.phys_start, rb.size)} overlaps cell {a.name!r} mem_regions[{i}] "
                f"({_span(ra.phys_start, ra.size)})"
            )
            if (int(ra.flags) | int(rb.flags)) & _MEM_IO:
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


def _check_ivshmem_links(cells: Sequence[CellConfig], report: _Report) -> None:
    """Check that the peers of each ivshmem link (same bdf) agree."""
    first: dict[int, tuple[CellConfig, int]] = {}
    ids: dict[tuple[int, int], str] = {}
    for c_index, cell in enumerate(cells):
        r = report.scoped("root_cell." if c_index == 0 else "", cell.name)
        for d, dev in enumerate(cell.pci_devices):
            if dev.type != PciType.IVSHMEM:
                continue
            path = f"pci_devices[{d}]"
            owner = ids.get((dev.bdf, dev.shmem_dev_id))
            if owner is not None:
                r.error(
                    f"{path}.shmem_dev_id",
                    dev.shmem_dev_id,
                    f"cell {owner!r} is already peer {dev.shmem_dev_id} of the ivshmem link at "
                    f"{dev.bdf_text}; CREATE fails with EBUSY",
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
                    f"link at {dev.bdf_text}; all peers should agree",
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
                        f"{_group_part(pos)} of the ivshmem link at {dev.bdf_text} is "
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
