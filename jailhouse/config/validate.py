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

from jailhouse.config import _rules
from jailhouse.config._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from jailhouse.config.model import CellConfig, SystemConfig

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


class _Report(_rules.Report):
    """Collects the rules' findings as :class:`Finding` objects."""

    __slots__ = ()

    def add(self, severity: str, path: str, value: object, reason: str) -> None:
        self.findings.append(
            Finding(self.prefix + path, value, reason, Severity(severity), self.cell)
        )


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
    _rules.check_cell(cell, report, root=False, end_offset=cell.size)
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
    _rules.check_system(system, report, _rules.system_resources(system))
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
    _rules.check_cells(system, cells, report, memo.resources, memo.root_spans)
    return report.findings


class _SystemMemo:
    """What :func:`check_configs` derives from a system alone.

    Attributes:
        system: The system.
        findings: The system's own findings (root-cell fields prefixed ``root_cell.``).
        resources: What no cell may map (:func:`jailhouse.config._rules.system_resources`).
        root_spans: The root cell's non-empty regions as sorted ``(phys_start, phys_end)``.
    """

    __slots__ = ("findings", "resources", "root_spans", "system")

    def __init__(
        self,
        system: SystemConfig,
        findings: tuple[Finding, ...],
        resources: tuple[_rules.Resource, ...],
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
    resources = tuple(_rules.system_resources(system))
    _rules.check_system(system, report, resources)
    memo = _SystemMemo(system, tuple(report.findings), resources, _rules.root_spans(system))
    _memos = (memo, *_memos[: _MEMO_SIZE - 1])
    return memo
