"""Check configs as the driver and hypervisor would, and as upstream's config checker does.

Every problem is a :class:`Finding` that names the field path (``mem_regions[3].virt_start``),
the value and the reason.  Nothing here raises for a bad config: callers decide.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jailhouse.config.model import CellConfig, SystemConfig

__all__ = ["Finding", "Severity", "check_configs", "validate_cell", "validate_system"]


class Severity(enum.Enum):
    """How bad a finding is."""

    ERROR = "error"
    """The driver or hypervisor rejects the config, or the partitioning is broken."""
    WARNING = "warning"
    """Accepted, but probably not what was meant (such as bytes after the arrays)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in a config.

    Attributes:
        field: Path of the field, such as ``mem_regions[3].virt_start``.
        value: The offending value.
        reason: Why it is wrong, in one sentence.
        severity: ERROR or WARNING.
        cell: Name of the cell the field belongs to, where a check spans several configs.
    """

    field: str
    value: object
    reason: str
    severity: Severity = Severity.ERROR
    cell: str | None = None

    def __str__(self) -> str:
        """Render as ``error: cell 'x': mem_regions[3].size = 0x1001: reason``."""
        from jailhouse.errors import _show  # noqa: PLC0415 - one renderer for values

        where = f"cell {self.cell!r}: " if self.cell is not None else ""
        return f"{self.severity.value}: {where}{self.field} = {_show(self.value)}: {self.reason}"


def validate_cell(cell: CellConfig) -> list[Finding]:
    """Check one non-root cell config on its own."""
    raise NotImplementedError  # filled in by the validation change


def validate_system(system: SystemConfig) -> list[Finding]:
    """Check a system config and its root cell on their own."""
    raise NotImplementedError  # filled in by the validation change


def check_configs(system: SystemConfig, *cells: CellConfig) -> list[Finding]:
    """Check a whole partitioned system: the system config and the cells to run on it."""
    raise NotImplementedError  # filled in by the validation change
