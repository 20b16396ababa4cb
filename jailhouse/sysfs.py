"""Read the hypervisor's state from the driver's sysfs files.

The driver publishes its state under ``/sys/devices/jailhouse/`` (ABI fact sheet §4):
``enabled``, the page-pool counters, and one ``cells/<id>/`` directory per cell with its
name, state, CPU sets and exit statistics.  :class:`SysfsReader` reads them through typed
accessors, as pyudev's ``asint``/``asbool`` do: a missing file raises :class:`KeyError`,
text the driver does not write raises :class:`~jailhouse.errors.StatusParseError`, and a
missing ``devices/jailhouse`` directory (module not loaded) raises
:class:`~jailhouse.errors.DeviceNotFoundError`.  The root is a constructor argument, so
the same reader works on ``/sys``, on a simulated host's tree and on a copied snapshot.
"""

from __future__ import annotations

import enum
import errno
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from jailhouse._listing import STATE_TEXT, format_cpus, parse_cpu_bitmap, parse_cpu_list
from jailhouse.errors import DeviceNotFoundError, StatusParseError, error_for_errno

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

__all__ = [
    "CellState",
    "CellStatus",
    "HypervisorStatus",
    "SysfsReader",
    "parse_cpu_bitmap",
    "parse_cpu_list",
]

_DRIVER_DIR: Final = "devices/jailhouse"
_ONLINE_CPUS: Final = "devices/system/cpu/online"
_STAT_PREFIX: Final = "vmexits_"
_ATTEMPTS: Final = 6
"""Readings of one cell (and of the whole listing) before a change under the reader is an error.

The driver changes a cell's files one by one while a cell is created or destroyed next
to it (the root cell's CPU sets, its ``statistics/cpuN`` directories), so a reader may see
a file vanish or the bitmap and the list disagree; reading the cell again sees it whole.
"""
_FIRST_PAUSE: Final = 0.001
"""Seconds to wait before the second reading; each later wait doubles (31 ms in all), so a
writer that was descheduled half-way through its files gets to finish them."""


class CellState(enum.IntEnum):
    """State of a cell, as the hypervisor keeps it in the cell's comm region.

    The values are the hypervisor's ``JAILHOUSE_CELL_*`` numbers; :attr:`text` is what the
    driver writes to ``cells/<id>/state``.
    """

    RUNNING = 0
    """The cell runs."""
    RUNNING_LOCKED = 1
    """The cell runs and forbids creating or destroying other cells."""
    SHUT_DOWN = 2
    """Created, loaded or shut down: the cell's CPUs are parked."""
    FAILED = 3
    """Every CPU of the cell failed, or it missed a message-reply timeout."""
    FAILED_COMM_REV = 4
    """The inmate found a comm-region revision it does not speak."""
    INVALID = -1
    """The hypervisor answered with a value or error the driver does not know."""

    @property
    def text(self) -> str:
        """The text the driver writes to ``cells/<id>/state`` for this state."""
        return _STATE_TEXT[self]

    @classmethod
    def from_text(cls, text: str) -> CellState:
        """Map the text of ``cells/<id>/state`` (with or without its newline) to a state.

        Raises:
            ValueError: The text is none of the six the driver writes.
        """
        stripped = text.removesuffix("\n")
        for state, known in _STATE_TEXT.items():
            if stripped == known:
                return state
        choices = ", ".join(repr(t) for t in _STATE_TEXT.values())
        raise ValueError(f"cell state {text!r} is not one of {choices}")

    def __str__(self) -> str:
        """Return the sysfs text, such as ``running/locked``."""
        return self.text


_STATE_TEXT: Final = {CellState(value): text for value, text in STATE_TEXT.items()}


@dataclass(frozen=True, slots=True)
class HypervisorStatus:
    """The hypervisor's global state.

    Attributes:
        enabled: Whether the hypervisor runs.
        mem_pool_size: Pages of the hypervisor's memory pool (0 while disabled).
        mem_pool_used: Pages of it in use.
        remap_pool_size: Pages of the hypervisor's remap pool (0 while disabled).
        remap_pool_used: Pages of it in use.
    """

    enabled: bool
    mem_pool_size: int = 0
    mem_pool_used: int = 0
    remap_pool_size: int = 0
    remap_pool_used: int = 0

    def __str__(self) -> str:
        """Summarise as ``enabled, memory pool 120/1520 pages, remap pool 14/256 pages``."""
        if not self.enabled:
            return "disabled"
        return (
            f"enabled, memory pool {self.mem_pool_used}/{self.mem_pool_size} pages, "
            f"remap pool {self.remap_pool_used}/{self.remap_pool_size} pages"
        )


@dataclass(frozen=True, slots=True)
class CellStatus:
    """One cell as sysfs shows it.

    Attributes:
        id: The cell id (the root cell is 0).
        name: The cell name.
        state: The cell's state.
        cpus_assigned: The CPUs the cell owns.
        cpus_failed: The cell's CPUs in the FAILED state.
        statistics: Exit counters summed over the cell's CPUs, keyed without the
            ``vmexits_`` prefix (``total``, ``mmio``, ``hypercall`` ...).
        per_cpu: The same counters per CPU: ``{cpu: {"total": n, ...}}``.
    """

    id: int
    name: str
    state: CellState
    cpus_assigned: frozenset[int] = frozenset()
    cpus_failed: frozenset[int] = frozenset()
    statistics: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    per_cpu: Mapping[int, Mapping[str, int]] = field(default_factory=lambda: MappingProxyType({}))

    def __str__(self) -> str:
        """Summarise as ``1 apic-demo: running, CPUs 3``, naming failed CPUs if any."""
        text = f"{self.id} {self.name}: {self.state}, CPUs {format_cpus(self.cpus_assigned) or '-'}"
        if self.cpus_failed:
            text += f" (failed: {format_cpus(self.cpus_failed)})"
        return text


def _read_bytes(path: Path) -> bytes:
    """Read a sysfs file whole.

    Raises:
        KeyError: The file (or a directory above it) does not exist.
        DeviceError: Reading failed with another errno (such as EPERM or EISDIR).
    """
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise KeyError(str(path)) from None
    except OSError as exc:
        raise error_for_errno(
            exc.errno or errno.EIO, op=f"read {path}", detail=exc.strerror
        ) from exc


def _pause(attempt: int) -> None:
    """Wait before reading again: nothing before the first reading, then 1, 2, 4 ... ms."""
    if attempt:
        time.sleep(_FIRST_PAUSE * 2 ** (attempt - 1))


class SysfsReader:
    """Typed reads of the jailhouse driver's sysfs files.

    Every read goes to the files; nothing is cached.

    Args:
        root: The directory that plays ``/sys``.

    Attributes:
        root: The directory that plays ``/sys``.
    """

    def __init__(self, root: str | os.PathLike[str] = "/sys") -> None:
        """Remember the sysfs root; nothing is read yet."""
        self.root = Path(root)

    @property
    def driver_dir(self) -> Path:
        """The driver's directory, ``root/devices/jailhouse``."""
        return self.root / _DRIVER_DIR

    def __repr__(self) -> str:
        """Name the root."""
        return f"SysfsReader({str(self.root)!r})"

    # -- raw typed accessors ------------------------------------------------------

    def read_text(self, relpath: str, encoding: str = "ascii") -> str:
        """Read a driver file as text.

        Args:
            relpath: Path below ``devices/jailhouse``, such as ``cells/1/state``.
            encoding: How to decode its bytes; the driver writes ASCII everywhere but in
                ``cells/<id>/name`` (the name bytes as the config holds them: latin-1).
                Bytes that do not decode become U+FFFD.

        Returns:
            The file's text, newline included.

        Raises:
            KeyError: The file does not exist.
            DeviceNotFoundError: The driver directory does not exist (module not loaded).
            DeviceError: Reading failed with another errno (such as EPERM).
        """
        path = self.driver_dir / relpath
        try:
            return _read_bytes(path).decode(encoding, errors="replace")
        except KeyError:
            self._check_loaded()
            raise

    def read_int(self, relpath: str) -> int:
        """Read a file that holds one decimal integer (``%ld``, ``%lu``, ``%d``).

        Raises:
            KeyError: The file does not exist.
            StatusParseError: It holds something else.
        """
        text = self.read_text(relpath)
        digits = text.removesuffix("\n")
        digits = digits.removeprefix("-")
        if not (digits.isascii() and digits.isdigit()):
            raise StatusParseError(str(self.driver_dir / relpath), text, "expected an integer")
        return int(text)

    def read_bool(self, relpath: str) -> bool:
        """Read a file that holds ``0`` or ``1``.

        Raises:
            KeyError: The file does not exist.
            StatusParseError: It holds something else.
        """
        text = self.read_text(relpath)
        value = text.removesuffix("\n")
        if value not in {"0", "1"}:
            raise StatusParseError(str(self.driver_dir / relpath), text, "expected 0 or 1")
        return value == "1"

    def read_cpus(self, relpath: str) -> frozenset[int]:
        """Read a CPU set from its bitmap file and its ``_list`` twin, checking they agree.

        Args:
            relpath: The bitmap file, such as ``cells/0/cpus_assigned``.  The range list
                is read from ``relpath + "_list"``.  Either may be missing, not both.

        Raises:
            KeyError: Neither file exists.
            StatusParseError: A file is malformed, or the two name different CPUs.
        """
        sets: dict[str, frozenset[int]] = {}
        texts: dict[str, str] = {}
        for name, parse in ((relpath, parse_cpu_bitmap), (relpath + "_list", parse_cpu_list)):
            try:
                text = texts[name] = self.read_text(name)
            except KeyError:
                continue
            try:
                sets[name] = parse(text)
            except ValueError as exc:
                raise StatusParseError(str(self.driver_dir / name), text, str(exc)) from exc
        if not sets:
            raise KeyError(str(self.driver_dir / relpath))
        if len(set(sets.values())) > 1:
            bitmap, ranges = sets[relpath], sets[relpath + "_list"]
            raise StatusParseError(
                str(self.driver_dir / relpath),
                texts[relpath],
                f"bitmap names CPUs {format_cpus(bitmap) or 'none'} but "
                f"{relpath}_list names {format_cpus(ranges) or 'none'}",
            )
        return next(iter(sets.values()))

    # -- global state -------------------------------------------------------------

    def is_loaded(self) -> bool:
        """Tell whether the driver's directory exists (the module is loaded)."""
        return self.driver_dir.is_dir()

    def enabled(self) -> bool:
        """Tell whether the hypervisor is enabled.

        Raises:
            DeviceNotFoundError: The module is not loaded.
            KeyError: ``enabled`` is missing.
            StatusParseError: It holds neither 0 nor 1.
        """
        return self.read_bool("enabled")

    def status(self) -> HypervisorStatus:
        """Read the hypervisor's global state.

        Raises:
            DeviceNotFoundError: The module is not loaded.
            KeyError: A file is missing.
            StatusParseError: A file is malformed.
        """
        return HypervisorStatus(
            enabled=self.read_bool("enabled"),
            mem_pool_size=self.read_int("mem_pool_size"),
            mem_pool_used=self.read_int("mem_pool_used"),
            remap_pool_size=self.read_int("remap_pool_size"),
            remap_pool_used=self.read_int("remap_pool_used"),
        )

    def online_cpus(self) -> frozenset[int]:
        """Read the CPUs Linux has online (``devices/system/cpu/online``).

        Raises:
            KeyError: The file is missing.
            StatusParseError: It is not a range list.
            DeviceError: Reading it failed with another errno (such as EACCES or EISDIR).
        """
        path = self.root / _ONLINE_CPUS
        text = _read_bytes(path).decode("ascii", errors="replace")
        try:
            return parse_cpu_list(text)
        except ValueError as exc:
            raise StatusParseError(str(path), text, str(exc)) from exc

    def console(self) -> bytes:
        """Read the ``console`` file: the ring's current contents, empty while disabled.

        Raises:
            DeviceNotFoundError: The module is not loaded.
            KeyError: The file is missing.
            PermissionDeniedError: The system config lacks the virtual debug console flag.
        """
        path = self.driver_dir / "console"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self._check_loaded()
            raise KeyError(str(path)) from None
        except OSError as exc:
            raise error_for_errno(exc.errno or errno.EIO, op="console read") from exc

    # -- cells --------------------------------------------------------------------

    def cell_ids(self) -> list[int]:
        """List the ids of the cells, in ascending order (empty while disabled).

        Raises:
            DeviceNotFoundError: The module is not loaded.
        """
        cells = self.driver_dir / "cells"
        try:
            entries = [p.name for p in cells.iterdir()]
        except FileNotFoundError:
            self._check_loaded()
            return []
        return sorted(int(name) for name in entries if name.isdigit())

    def cell(self, cell_id: int, *, statistics: bool = True) -> CellStatus:
        """Read one cell, again if it changed under the reader.

        A file that vanishes or CPU files that disagree while the cell still exists are
        what a concurrent create or destroy leaves for a moment, so the cell is read again
        (up to six times, waiting a little longer each time) until one reading is whole.

        Args:
            cell_id: The cell's id.
            statistics: Read the exit counters too (a few dozen files per cell); with
                False, ``statistics`` and ``per_cpu`` are left empty.

        Raises:
            DeviceNotFoundError: The module is not loaded.
            KeyError: There is no such cell (it may have been destroyed meanwhile), or
                one of its files is missing on every reading.
            StatusParseError: A file is malformed on every reading.
        """
        base = self.driver_dir / f"cells/{cell_id}"
        for attempt in range(_ATTEMPTS):
            _pause(attempt)
            if not base.is_dir():
                self._check_loaded()
                raise KeyError(str(base))
            try:
                return self._read_cell(cell_id, statistics=statistics)
            except (KeyError, StatusParseError, FileNotFoundError, NotADirectoryError) as exc:
                if not base.is_dir():
                    self._check_loaded()
                    raise KeyError(str(base)) from None
                if attempt == _ATTEMPTS - 1:
                    if isinstance(exc, OSError):  # a statistics directory vanished each time
                        raise KeyError(exc.filename or str(base)) from None
                    raise
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _read_cell(self, cell_id: int, *, statistics: bool) -> CellStatus:
        """Read a cell's files once; a concurrent change may make them disagree."""
        base = f"cells/{cell_id}"
        name = self.read_text(f"{base}/name", encoding="latin-1").removesuffix("\n")
        state_text = self.read_text(f"{base}/state")
        try:
            state = CellState.from_text(state_text)
        except ValueError as exc:
            raise StatusParseError(
                str(self.driver_dir / base / "state"), state_text, str(exc)
            ) from exc
        assigned = self.read_cpus(f"{base}/cpus_assigned")
        try:
            failed = self.read_cpus(f"{base}/cpus_failed")
        except KeyError:
            failed = frozenset()
        if not statistics:
            return CellStatus(cell_id, name, state, assigned, failed)
        totals, per_cpu = self._statistics(f"{base}/statistics")
        return CellStatus(
            id=cell_id,
            name=name,
            state=state,
            cpus_assigned=assigned,
            cpus_failed=failed,
            statistics=totals,
            per_cpu=per_cpu,
        )

    def cells(self, *, statistics: bool = True) -> list[CellStatus]:
        """Read every cell, by ascending id; a cell destroyed meanwhile is left out.

        Each cell is read as :meth:`cell` does (``statistics`` as there).  A listing in
        which two cells hold the same CPU saw a create or destroy half-way (the new cell
        already holds a CPU the root cell read earlier still had), so the whole listing is
        read again, up to six times in all; the last one is returned whatever it shows.

        Raises:
            DeviceNotFoundError: The module is not loaded.
            KeyError: A file is missing from a cell that still exists, on every reading.
            StatusParseError: A file is malformed on every reading.
        """
        out: list[CellStatus] = []
        for attempt in range(_ATTEMPTS):
            _pause(attempt)
            out = []
            torn = False
            for cell_id in self.cell_ids():
                try:
                    out.append(self.cell(cell_id, statistics=statistics))
                except KeyError:
                    if not (self.driver_dir / f"cells/{cell_id}").is_dir():
                        continue  # destroyed meanwhile
                    if attempt == _ATTEMPTS - 1:
                        raise  # a file is missing from a cell that still exists
                    torn = True  # the id was destroyed and reused while it was read
                    break
            if torn:
                continue
            held = [cell.cpus_assigned for cell in out]
            if sum(map(len, held)) == len(frozenset().union(*held)):
                break
        return out

    def find_cell(self, name: str) -> CellStatus | None:
        """Find a cell by name, reading only the names of the others.

        A cell destroyed while it is looked at is passed over, and so is an id reused
        meanwhile by a cell of another name.

        Returns:
            The cell, or None if no cell has that name.

        Raises:
            DeviceNotFoundError: The module is not loaded.
            StatusParseError: A file of the matching cell is malformed.
        """
        for cell_id in self.cell_ids():
            try:
                seen = self.read_text(f"cells/{cell_id}/name", encoding="latin-1")
                if seen.removesuffix("\n") != name:
                    continue
                status = self.cell(cell_id)
            except KeyError:
                continue  # destroyed meanwhile
            if status.name == name:
                return status
        return None

    # -- helpers ------------------------------------------------------------------

    def _statistics(
        self, relpath: str
    ) -> tuple[Mapping[str, int], Mapping[int, Mapping[str, int]]]:
        """Read a ``statistics`` directory: the summed counters and the ``cpu<N>`` ones."""
        directory = self.driver_dir / relpath
        totals: dict[str, int] = {}
        per_cpu: dict[int, Mapping[str, int]] = {}
        try:
            entries = sorted(directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return MappingProxyType(totals), MappingProxyType(per_cpu)
        for entry in entries:
            if entry.name.startswith(_STAT_PREFIX):
                totals[entry.name.removeprefix(_STAT_PREFIX)] = self.read_int(
                    f"{relpath}/{entry.name}"
                )
            elif entry.name.startswith("cpu") and entry.name[3:].isdigit():
                counters: dict[str, int] = {}
                for stat in sorted(entry.iterdir()):
                    if stat.name.startswith(_STAT_PREFIX):
                        counters[stat.name.removeprefix(_STAT_PREFIX)] = self.read_int(
                            f"{relpath}/{entry.name}/{stat.name}"
                        )
                per_cpu[int(entry.name[3:])] = MappingProxyType(counters)
        return MappingProxyType(totals), MappingProxyType(dict(sorted(per_cpu.items())))

    def _check_loaded(self) -> None:
        """Raise DeviceNotFoundError if the driver's directory is missing."""
        if not self.is_loaded():
            raise DeviceNotFoundError(
                errno.ENOENT,
                op="read sysfs",
                detail=f"{self.driver_dir} does not exist",
                hint="the jailhouse driver is not loaded (modprobe jailhouse)",
            )
