"""A fixed self-test battery that compares a hypervisor with what the driver should answer.

:func:`run_selftest` drives one connected hypervisor (a real board's ``/dev/jailhouse``,
the simulator, or the simulator behind a FUSE device) through the same sequence every
time: enable, create a cell, move its CPUs out of the root cell, load a park-loop inmate,
start it, read the statistics and the console, shut it down, destroy it, and between
those the error paths, each with the errno the kernel driver returns (ABI fact sheet §2
and §8).  Each step records what was expected and what happened in a :class:`Transcript`.

What makes two transcripts comparable: every field outside ``host`` follows from the
configs, the image and the driver's rules, never from the machine.  CPU sets are the
configs' sets; states are the driver's state texts; results are ``ok`` or an errno name;
statistics and the console are recorded as checks that hold on every correct host
(readable; the per-CPU statistic directories follow the CPUs; counters never go down).
Timings, counter values, console text, error messages and the device are host data.
So a correct board and the simulator give the same transcript for the same configs and
the same starting state, and ``transcript.to_json(host=False)`` can be stored and
compared.

What is *not* asserted, on purpose:

- That counters rise after start.  Real Jailhouse counts the management exits of a
  start on the cell's CPUs, and the simulator bumps them too, but no documented rule
  promises it; the battery checks only that a start does not lower them (the fact sheet:
  they are reset only when a CPU moves into a cell) and keeps the values as host data.
- What the console says.  The park-loop inmate writes nothing, and the hypervisor's
  own lines differ between a board and the simulator; the battery checks that the
  console can be read (EPERM when the system config lacks the virtual debug console).

State is restored: if the battery enabled the hypervisor it disables it at the end, and a
cell it created is destroyed even when a step fails or the run is interrupted
(``KeyboardInterrupt`` included).  It refuses to start on a hypervisor enabled with a
different system config or holding other cells, since those would change the answers.
"""

from __future__ import annotations

import errno
import hashlib
import os
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from jailhouse.config.model import Arch, CellFlag, SystemFlag, format_cpus
from jailhouse.errors import ConfigError, DeviceError, JailhouseError
from jailhouse.hypervisor import Cell, Hypervisor
from jailhouse.inmates import default_load_address, loadable_region, park_inmate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from jailhouse.config.model import CellConfig, SystemConfig
    from jailhouse.sysfs import CellStatus

__all__ = [
    "FORMAT",
    "LinuxBoot",
    "Observation",
    "SelftestError",
    "Step",
    "Transcript",
    "run_selftest",
    "simulate_selftest",
]

FORMAT: Final = "python-jailhouse selftest 1"
"""The ``format`` field of a transcript; it changes when the battery changes."""

OK: Final = "ok"
"""The result of a step that succeeded."""
SKIPPED: Final = "skipped"
"""The result of a step the battery did not run (its note says why)."""
MISMATCH: Final = "mismatch"
"""The result of a check whose values differ from the rule (its note says how)."""

# ABI fact sheet §4: the statistic files of every cell, per architecture.
_COMMON_STATS: Final = ("total", "mmio", "management", "hypercall")
_STATS: Final[dict[Arch, frozenset[str]]] = {
    Arch.X86: frozenset(
        (
            *_COMMON_STATS,
            "pio",
            "xapic",
            "cr",
            "cpuid",
            "xsetbv",
            "exception",
            "msr_other",
            "msr_x2apic_icr",
        )
    ),
    Arch.ARM64: frozenset((*_COMMON_STATS, "maintenance", "virt_irq", "virt_sgi", "psci", "smccc")),
    Arch.ARM: frozenset(
        (*_COMMON_STATS, "maintenance", "virt_irq", "virt_sgi", "psci", "smccc", "cp15")
    ),
}
_NAME_MAX: Final = 31
_PAGE: Final = 0x1000
_ADDRESS_LIMIT: Final = 1 << 64


class SelftestError(JailhouseError, RuntimeError):
    """The battery cannot run on this hypervisor in its current state; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What a step returned and how the hypervisor looked after it.

    Every field is host-independent for the same configs.

    Attributes:
        result: ``"ok"``, an errno name such as ``"EEXIST"``, ``"skipped"``,
            ``"mismatch"`` (a check whose values break its rule), or the name of an
            exception that carries no errno.
        state: The test cell's state text (``"shut down"``, ``"running"`` ...), or None
            when it does not exist (or the hypervisor is disabled).
        root_cpus: The root cell's CPUs as a range list (``"0-2"``), or None while the
            hypervisor is disabled.
        cell_cpus: The test cell's CPUs as a range list, or None when it does not exist.
    """

    result: str
    state: str | None = None
    root_cpus: str | None = None
    cell_cpus: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """Return the fields as a JSON-ready dict."""
        return {
            "result": self.result,
            "state": self.state,
            "root_cpus": self.root_cpus,
            "cell_cpus": self.cell_cpus,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Observation:
        """Rebuild an observation from :meth:`to_json` output.

        Raises:
            ValueError: A field is missing or of the wrong type.
        """
        values = {}
        for key in ("result", "state", "root_cpus", "cell_cpus"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"observation field {key!r} = {value!r}: expected a string")
            values[key] = value
        if values["result"] is None:
            raise ValueError("observation field 'result' is missing")
        return cls(
            result=values["result"],
            state=values["state"],
            root_cpus=values["root_cpus"],
            cell_cpus=values["cell_cpus"],
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the battery.

    Attributes:
        index: Position in the battery, from 1.
        op: A short stable name, such as ``"create-duplicate"``.
        action: What the step does, in words.
        cell: The cell the operation names ("" for enable and disable).
        expected: What the kernel driver answers and leaves (ABI fact sheet).
        observed: What this hypervisor answered and left.
        note: Host-independent remarks: why a step was skipped, how a check failed.
        host: Host-dependent data: ``elapsed_ms``, an error's ``message``, counter values.
    """

    index: int
    op: str
    action: str
    cell: str
    expected: Observation
    observed: Observation
    note: str = ""
    host: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the observation is the expected one."""
        return self.observed == self.expected

    def to_json(self, *, host: bool = True) -> dict[str, Any]:
        """Return the step as a JSON-ready dict; ``host=False`` leaves out the host data."""
        out: dict[str, Any] = {
            "index": self.index,
            "op": self.op,
            "action": self.action,
            "cell": self.cell,
            "expected": self.expected.to_json(),
            "observed": self.observed.to_json(),
            "passed": self.passed,
            "note": self.note,
        }
        if host:
            out["host"] = dict(self.host)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        """Rebuild a step from :meth:`to_json` output.

        Raises:
            ValueError: A field is missing or of the wrong type.
        """
        try:
            return cls(
                index=int(data["index"]),
                op=str(data["op"]),
                action=str(data["action"]),
                cell=str(data["cell"]),
                expected=Observation.from_json(data["expected"]),
                observed=Observation.from_json(data["observed"]),
                note=str(data.get("note", "")),
                host=dict(data.get("host", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"step {data.get('index', '?')}: malformed ({exc!r})") from exc


@dataclass(frozen=True, slots=True)
class Transcript:
    """The record of one run of the battery.

    Attributes:
        arch: The configs' architecture (``"x86"``, ``"arm64"``).
        system: The root cell's name.
        cell: The test cell's name.
        image: What was loaded: ``kind`` (``"park-loop"`` or ``"caller"``), ``size``,
            ``address`` (hex) and ``sha256``.
        started_enabled: Whether the hypervisor was enabled before the battery.
        steps: The steps, in order.
        cleanup: What the battery had to undo after a failed step (empty when it passed).
        host: Host-dependent data: device, kernel, library version, start time, duration.
    """

    arch: str
    system: str
    cell: str
    image: Mapping[str, Any]
    started_enabled: bool
    steps: tuple[Step, ...]
    cleanup: tuple[str, ...] = ()
    host: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every step observed what was expected and nothing needed cleaning up."""
        return all(step.passed for step in self.steps) and not self.cleanup

    @property
    def failures(self) -> list[Step]:
        """The steps whose observation differs from the expectation."""
        return [step for step in self.steps if not step.passed]

    def to_json(self, *, host: bool = True) -> dict[str, Any]:
        """Return the transcript as a JSON-ready dict.

        Args:
            host: Include the host-dependent data.  Without it the dict is the same on
                every correct host for the same configs and starting state: store it
                and compare it.
        """
        out: dict[str, Any] = {
            "format": FORMAT,
            "arch": self.arch,
            "system": self.system,
            "cell": self.cell,
            "image": dict(self.image),
            "started_enabled": self.started_enabled,
            "passed": self.passed,
            "steps": [step.to_json(host=host) for step in self.steps],
            "cleanup": list(self.cleanup),
        }
        if host:
            out["host"] = dict(self.host)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transcript:
        """Rebuild a transcript from :meth:`to_json` output (with or without host data).

        Raises:
            ValueError: The dict is not a transcript of this format.
        """
        if data.get("format") != FORMAT:
            raise ValueError(f"format = {data.get('format')!r}: expected {FORMAT!r}")
        try:
            return cls(
                arch=str(data["arch"]),
                system=str(data["system"]),
                cell=str(data["cell"]),
                image=dict(data["image"]),
                started_enabled=bool(data["started_enabled"]),
                steps=tuple(Step.from_json(s) for s in data["steps"]),
                cleanup=tuple(str(c) for c in data.get("cleanup", ())),
                host=dict(data.get("host", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a selftest transcript: {exc!r}") from exc

    def compare(self, other: Transcript) -> list[str]:
        """List the host-independent differences from another transcript, one line each.

        Returns:
            Empty when both are the same apart from host data.
        """
        diffs: list[str] = []
        mine, theirs = self.to_json(host=False), other.to_json(host=False)
        keys = ("format", "arch", "system", "cell", "image", "started_enabled", "cleanup")
        diffs.extend(
            f"{key}: {mine[key]!r} != {theirs[key]!r}" for key in keys if mine[key] != theirs[key]
        )
        ours = {s.index: s for s in self.steps}
        others = {s.index: s for s in other.steps}
        for index in sorted(ours.keys() | others.keys()):
            a, b = ours.get(index), others.get(index)
            if a is None or b is None:
                present = a or b
                side = "only here" if b is None else "only in the other"
                diffs.append(f"step {index} ({present.op if present else '?'}): {side}")
                continue
            for key in ("op", "cell", "expected", "observed", "note"):
                va, vb = getattr(a, key), getattr(b, key)
                if va != vb:
                    diffs.append(f"step {index} ({a.op}) {key}: {_show(va)} != {_show(vb)}")
        return diffs

    def __str__(self) -> str:
        """Render a table of the steps and a verdict line."""
        header = ("#", "step", "cell", "expected", "observed", "state", "root CPUs", "cell CPUs")
        rows = [header]
        for step in self.steps:
            mark = "" if step.passed else "  <-- FAIL"
            rows.append(
                (
                    str(step.index),
                    step.op,
                    step.cell or "-",
                    step.expected.result,
                    step.observed.result + mark,
                    step.observed.state or "-",
                    _cpus_text(step.observed.root_cpus),
                    _cpus_text(step.observed.cell_cpus),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = [
            "  ".join(col.ljust(width) for col, width in zip(row[:-1], widths, strict=True))
            + "  "
            + row[-1]
            for row in rows
        ]
        lines.extend(
            f"step {step.index} ({step.op}): expected {_brief(step.expected)}; "
            f"observed {_brief(step.observed)}" + (f"; {step.note}" if step.note else "")
            for step in self.failures
        )
        lines.extend(f"cleanup: {item}" for item in self.cleanup)
        failed = len(self.failures)
        verdict = "PASSED" if self.passed else f"FAILED ({failed} of {len(self.steps)} steps)"
        lines.append(
            f"selftest {verdict}: cell {self.cell!r} on system {self.system!r} ({self.arch})"
        )
        return "\n".join(lines)


def _show(value: object) -> str:
    """Render a differing value for :meth:`Transcript.compare`."""
    if isinstance(value, Observation):
        return str(value.to_json())
    return repr(value)


def _brief(obs: Observation) -> str:
    """Render an observation in one phrase for a failure line."""
    return (
        f"{obs.result}, state {obs.state or '-'}, root CPUs {_cpus_text(obs.root_cpus)}, "
        f"cell CPUs {_cpus_text(obs.cell_cpus)}"
    )


def _cpus_text(cpus: str | None) -> str:
    """Render a CPU field of an observation for the table."""
    if cpus is None:
        return "-"
    return cpus or "none"


@dataclass(frozen=True)
class LinuxBoot:
    """The Linux-cell step's inputs: boot this kernel in the test cell, then destroy it.

    Attributes:
        kernel: The kernel image (arm64 ``Image``, x86 ``bzImage``) for the cell's arch.
        initrd: The initial ramdisk, if any.
        cmdline: The kernel command line, if any.
    """

    kernel: bytes
    initrd: bytes | None = None
    cmdline: str | None = None


# -- the battery --------------------------------------------------------------------------


@dataclass
class _World:
    """What the steps expect the hypervisor to look like (the model the battery keeps)."""

    enabled: bool
    cell_exists: bool
    state: str | None
    root_all: frozenset[int]
    cell_cpus: frozenset[int]

    def expect(self, result: str) -> Observation:
        """Return the observation a step with ``result`` should leave."""
        if not self.enabled:
            return Observation(result)
        root = self.root_all - self.cell_cpus if self.cell_exists else self.root_all
        return Observation(
            result,
            state=self.state if self.cell_exists else None,
            root_cpus=format_cpus(root),
            cell_cpus=format_cpus(self.cell_cpus) if self.cell_exists else None,
        )


class _Battery:
    """One run of the battery on one hypervisor."""

    def __init__(
        self,
        hv: Hypervisor,
        *,
        system: SystemConfig,
        cell: CellConfig,
        image: bytes,
        address: int,
        progress: Callable[[Step], None] | None,
        linux: LinuxBoot | None = None,
    ) -> None:
        self.hv = hv
        self.linux = linux
        self.system = system
        self.config = cell
        self.image = image
        self.address = address
        self.progress = progress
        self.steps: list[Step] = []
        self.cleanup: list[str] = []
        names = {system.root_cell.name, cell.name}
        self.twin = _free_name(cell.name[: _NAME_MAX - 5] + "-twin", names)
        self.absent = _free_name("selftest-absent", {*names, self.twin})
        self.world = _World(
            enabled=False,
            cell_exists=False,
            state=None,
            root_all=system.root_cell.cpus,
            cell_cpus=cell.cpus,
        )
        self.enabled_by_us = False
        self.stats_before: int | None = None

    # -- plumbing ------------------------------------------------------------------

    def handle(self, name: str) -> Cell:
        """Return a handle that acts on a cell by name (the driver looks names up itself)."""
        return Cell(self.hv, -1, name)

    def observe(self, result: str) -> tuple[Observation, CellStatus | None]:
        """Read the hypervisor's state after a step."""
        if not self.hv.enabled():
            return Observation(result), None
        cells = self.hv.cells()
        root = next((c for c in cells if c.id == 0), None)
        mine = next((c for c in cells if c.name == self.config.name), None)
        return (
            Observation(
                result,
                state=mine.state.text if mine is not None else None,
                root_cpus=format_cpus(root.cpus_assigned) if root is not None else None,
                cell_cpus=format_cpus(mine.cpus_assigned) if mine is not None else None,
            ),
            mine,
        )

    def record(
        self,
        op: str,
        action: str,
        cell: str,
        expected: Observation,
        observed: Observation,
        *,
        note: str = "",
        host: dict[str, Any] | None = None,
    ) -> Step:
        """Append a step and report it to the progress callback."""
        step = Step(
            index=len(self.steps) + 1,
            op=op,
            action=action,
            cell=cell,
            expected=expected,
            observed=observed,
            note=note,
            host=host or {},
        )
        self.steps.append(step)
        if self.progress is not None:
            self.progress(step)
        return step

    def call(
        self,
        op: str,
        action: str,
        cell: str,
        expected_result: str,
        fn: Callable[[], object],
        *,
        note: str = "",
        after: Callable[[str], None] | None = None,
    ) -> Step:
        """Run one operation, update the model by ``after``, observe and record it."""
        started = time.monotonic()
        host: dict[str, Any] = {}
        try:
            extra = fn()
        except DeviceError as exc:
            result = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            host["message"] = str(exc)
        except JailhouseError as exc:
            result = type(exc).__name__
            host["message"] = str(exc)
        else:
            result = OK
            if isinstance(extra, dict):
                host.update(extra)
        host["elapsed_ms"] = round((time.monotonic() - started) * 1000, 3)
        if after is not None:
            after(result)
        expected = self.world.expect(expected_result)
        observed, _ = self.observe(result)
        return self.record(op, action, cell, expected, observed, note=note, host=host)

    def skip(self, op: str, action: str, cell: str, reason: str) -> Step:
        """Record a step the battery does not run."""
        expected = self.world.expect(SKIPPED)
        observed, _ = self.observe(SKIPPED)
        return self.record(op, action, cell, expected, observed, note=reason)

    # -- the steps -----------------------------------------------------------------

    def run(self) -> None:
        """Run every step in order."""
        cell = self.config.name
        root = self.system.root_cell.name
        world = self.world
        started_enabled = self.hv.enabled()

        # enable
        if started_enabled:
            world.enabled = True
            self.skip(
                "enable",
                "enable the hypervisor with the system config",
                "",
                "the hypervisor was already enabled with this system config",
            )
        else:
            world.enabled = True
            self.call(
                "enable",
                "enable the hypervisor with the system config",
                "",
                OK,
                lambda: self.hv.enable(self.system),
                after=lambda _result: setattr(self, "enabled_by_us", self.hv.enabled()),
            )
        self.call(
            "enable-again",
            "enable while enabled",
            "",
            "EBUSY",
            lambda: self.hv.enable(self.system),
        )

        # create, and the create error paths
        world.cell_exists, world.state = True, "shut down"
        self.call(
            "create",
            "create the cell; its CPUs leave the root cell",
            cell,
            OK,
            lambda: self.hv.create_cell(self.config),
        )
        self.call(
            "create-duplicate",
            "create a cell of the same name",
            cell,
            "EEXIST",
            lambda: self.hv.create_cell(self.config),
        )
        twin = self.config.replace(name=self.twin)
        self.call(
            "create-cpus-taken",
            f"create a copy named {self.twin!r} that wants the same CPUs",
            self.twin,
            "EBUSY",
            lambda: self.hv.create_cell(twin),
            after=lambda _result: self.remove_twin(),
        )
        self.check_statistics("statistics", after_start=False)

        # load and start
        bad = _unloadable_address(self.config)
        self.call(
            "load-outside",
            f"load the image at {bad:#x}, outside every WRITE+LOADABLE region",
            cell,
            "EINVAL",
            lambda: self.handle(cell).load([(self.image, bad)]),
        )
        self.call(
            "load",
            f"load the image at {self.address:#x}",
            cell,
            OK,
            lambda: self.handle(cell).load([(self.image, self.address)]),
        )
        world.state = "running"
        self.call("start", "start the cell", cell, OK, lambda: self.handle(cell).start())
        self.check_statistics("statistics-after-start", after_start=True)
        self.check_console()

        # operations on cells that do not exist or may not be managed
        self.call(
            "start-unknown",
            "start a cell that does not exist",
            self.absent,
            "ENOENT",
            lambda: self.handle(self.absent).start(),
        )
        self.call(
            "destroy-unknown",
            "destroy a cell that does not exist",
            self.absent,
            "ENOENT",
            lambda: self.handle(self.absent).destroy(),
        )
        self.call(
            "start-root",
            "start the root cell",
            root,
            "EINVAL",
            lambda: self.handle(root).start(),
        )
        self.call(
            "destroy-root",
            "destroy the root cell",
            root,
            "EINVAL",
            lambda: self.handle(root).destroy(),
        )

        # restart, shut down, destroy
        self.call(
            "restart", "start the running cell again", cell, OK, lambda: self.handle(cell).start()
        )
        world.state = "shut down"
        self.call(
            "shutdown",
            "shut the cell down (a load of no images); it keeps its CPUs",
            cell,
            OK,
            lambda: self.handle(cell).shutdown(),
        )
        world.cell_exists, world.state = False, None
        self.call(
            "destroy",
            "destroy the cell; its CPUs return to the root cell",
            cell,
            OK,
            lambda: self.handle(cell).destroy(),
        )
        if self.linux is not None:
            self.boot_linux()

        # disable, and cell operations while disabled
        while_disabled = [
            (
                "create-disabled",
                "create the cell while disabled",
                lambda: self.hv.create_cell(self.config),
            ),
            (
                "load-disabled",
                "load the cell while disabled",
                lambda: self.handle(cell).load([(self.image, self.address)]),
            ),
            ("start-disabled", "start the cell while disabled", lambda: self.handle(cell).start()),
            (
                "destroy-disabled",
                "destroy the cell while disabled",
                lambda: self.handle(cell).destroy(),
            ),
        ]
        if started_enabled:
            reason = "the hypervisor was enabled before the self-test, so it stays enabled"
            self.skip("disable", "disable the hypervisor", "", reason)
            for op, action, _fn in while_disabled:
                self.skip(op, action, cell, reason)
            self.skip("disable-again", "disable while disabled", "", reason)
            return
        world.enabled = False
        self.call("disable", "disable the hypervisor", "", OK, self.hv.disable)
        for op, action, fn in while_disabled:
            self.call(op, action, cell, "EINVAL", fn)
        self.call("disable-again", "disable while disabled", "", "EINVAL", self.hv.disable)

    def boot_linux(self) -> None:
        """Boot Linux in the test cell (created anew), check it runs, and destroy it."""
        linux = self.linux
        assert linux is not None  # noqa: S101 - only called with a kernel
        cell, world = self.config.name, self.world

        def boot() -> dict[str, Any]:
            booted = self.hv.boot_linux(
                self.config, linux.kernel, linux.initrd, linux.cmdline, system=self.system
            )
            return {"cell_id": booted.id}

        world.cell_exists, world.state = True, "running"
        self.call(
            "linux-boot",
            f"boot Linux ({len(linux.kernel)}-byte kernel) in a new cell; its CPUs leave "
            "the root cell",
            cell,
            OK,
            boot,
        )
        world.cell_exists, world.state = False, None
        self.call(
            "linux-destroy",
            "destroy the Linux cell; its CPUs return to the root cell",
            cell,
            OK,
            lambda: self.handle(cell).destroy(),
        )

    def remove_twin(self) -> None:
        """Destroy the twin cell if the host wrongly created it."""
        if self.hv.enabled() and self.hv.sysfs.find_cell(self.twin) is not None:
            self.handle(self.twin).destroy()
            self.cleanup.append(f"destroyed cell {self.twin!r}, which should not have been created")

    def check_statistics(self, op: str, *, after_start: bool) -> None:
        """Check the statistic files of the cell and the root cell."""
        started = time.monotonic()
        observed, mine = self.observe(OK)
        problems: list[str] = []
        host: dict[str, Any] = {}
        if mine is None:
            problems.append("the cell does not exist")
        else:
            names = set(mine.statistics)
            want = _STATS.get(self.config.arch, frozenset())
            if names != want:
                problems.append(
                    f"statistics names {sorted(names)} are not the driver's {sorted(want)}"
                )
            if set(mine.per_cpu) != set(self.config.cpus):
                problems.append(
                    f"statistics/cpu<N> of CPUs {format_cpus(frozenset(mine.per_cpu)) or 'none'}, "
                    f"not the cell's {format_cpus(self.config.cpus) or 'none'}"
                )
            total = mine.statistics.get("total")
            host["vmexits_total"] = total
            host["statistics"] = dict(mine.statistics)
            if after_start:
                before = self.stats_before
                host["vmexits_total_before_start"] = before
                if total is not None and before is not None and total < before:
                    problems.append(f"vmexits_total went down from {before} to {total}")
            else:
                self.stats_before = total
        roots = [c for c in self.hv.cells() if c.id == 0] if self.hv.enabled() else []
        if roots:
            root_cpus = frozenset(roots[0].per_cpu)
            want_root = self.world.root_all - self.config.cpus
            if root_cpus != want_root:
                problems.append(
                    f"the root cell's statistics/cpu<N> are of CPUs "
                    f"{format_cpus(root_cpus) or 'none'}, not {format_cpus(want_root) or 'none'}"
                )
        host["elapsed_ms"] = round((time.monotonic() - started) * 1000, 3)
        if problems:
            observed = Observation(MISMATCH, observed.state, observed.root_cpus, observed.cell_cpus)
        action = (
            "read the statistics after start: per-CPU directories follow the CPUs, "
            "vmexits_total does not go down"
            if after_start
            else "read the statistics: per-CPU directories moved with the CPUs"
        )
        self.record(
            op,
            action,
            self.config.name,
            self.world.expect(OK),
            observed,
            note="; ".join(problems),
            host=host,
        )

    def check_console(self) -> None:
        """Read the hypervisor console without waiting."""
        permitted = SystemFlag.VIRTUAL_DEBUG_CONSOLE in self.system.flags

        def read() -> dict[str, Any]:
            return {"console_bytes": len(self.hv.console().read_bytes(nonblock=True))}

        self.call(
            "console",
            "read the hypervisor console without waiting",
            "",
            OK if permitted else "EPERM",
            read,
            note="" if permitted else "the system config lacks VIRTUAL_DEBUG_CONSOLE",
        )

    # -- restoring ---------------------------------------------------------------

    def restore(self, exc: BaseException | None) -> None:
        """Destroy what the battery made and disable if it enabled; note failures on ``exc``."""
        try:
            if not self.hv.enabled():
                return
            for name in (self.config.name, self.twin):
                if self.hv.sysfs.find_cell(name) is not None:
                    self.handle(name).destroy()
                    self.cleanup.append(f"destroyed leftover cell {name!r}")
            if self.enabled_by_us:
                self.hv.disable()
                self.cleanup.append("disabled the hypervisor the self-test had enabled")
        except (JailhouseError, OSError) as cleanup_error:
            message = f"self-test cleanup failed: {cleanup_error}"
            if exc is None:
                raise SelftestError(message) from cleanup_error
            exc.add_note(message)


def _free_name(base: str, taken: set[str]) -> str:
    """Return ``base``, or ``base`` with a number appended, that is none of ``taken``.

    The result fits the driver's 31-byte names.
    """
    for n in range(1000):
        suffix = "" if n == 0 else f"-{n}"
        name = base[: _NAME_MAX - len(suffix)] + suffix
        if name not in taken:
            return name
    raise ValueError(f"cannot derive a free cell name from {base!r}")  # pragma: no cover


def _unloadable_address(cell: CellConfig) -> int:
    """Return a page-aligned guest address that no region of the cell contains.

    Raises:
        ConfigError: The cell's regions leave no such address below 2**64.
    """
    end = max((r.virt_end for r in cell.mem_regions if r.size), default=0)
    address = -(-end // _PAGE) * _PAGE
    if address + _PAGE <= _ADDRESS_LIMIT and loadable_region(cell, address) is None:
        return address
    for region in cell.mem_regions:
        candidate = region.virt_start
        if region.size and loadable_region(cell, candidate) is None:
            return candidate
    raise ConfigError(
        "mem_regions",
        len(cell.mem_regions),
        "every guest address is loadable, so a load outside a loadable region cannot be tried",
    )


def _preflight(
    hv: Hypervisor,
    system: SystemConfig,
    cell: CellConfig,
    image: bytes | None,
    address: int | None,
) -> tuple[bytes, int]:
    """Check the configs and the hypervisor before touching anything; return image and address."""
    if hv.arch is not None and system.arch != hv.arch:
        raise ConfigError(
            "arch", system.arch.name, f"the system config is not for this {hv.arch.name} host"
        )
    if cell.arch != system.arch:
        raise ConfigError(
            "arch", cell.arch.name, f"the cell config is not for the {system.arch.name} system"
        )
    root_cpus = system.root_cell.cpus
    if not cell.cpus:
        raise ConfigError("cpus", "none", "the test cell needs at least one CPU to run on")
    if not cell.cpus < root_cpus:
        raise ConfigError(
            "cpus",
            format_cpus(cell.cpus),
            f"must be a proper subset of the root cell's CPUs {format_cpus(root_cpus)}, "
            "so the root cell keeps one",
        )
    if system.arch == Arch.X86 and 0 in cell.cpus:
        raise ConfigError("cpus", format_cpus(cell.cpus), "x86 cannot give CPU 0 to a cell")
    if cell.name == system.root_cell.name:
        raise ConfigError("name", cell.name, "the test cell must not be named like the root cell")
    if image is None:
        if CellFlag.PASSIVE_COMMREG not in cell.flags:
            raise ConfigError(
                "flags",
                str(cell.flags),
                "the park-loop inmate does not answer shutdown requests, so the cell needs "
                "PASSIVE_COMMREG (or pass an image that does)",
            )
        image = park_inmate(cell.arch)
        load_at = default_load_address(cell) if address is None else address
    else:
        if not image:
            raise ConfigError("image", 0, "an empty image is skipped by the driver")
        load_at = default_load_address(cell, len(image)) if address is None else address
    if loadable_region(cell, load_at) is None:
        raise ConfigError(
            "address", load_at, f"not in a WRITE+LOADABLE region of cell {cell.name!r}"
        )
    _unloadable_address(cell)

    if hv.enabled():
        cells = hv.cells()
        others = [c for c in cells if c.id != 0]
        if others:
            raise SelftestError(
                "the hypervisor holds other cells ("
                + ", ".join(f"{c.id} {c.name!r}" for c in others)
                + "); destroy them first, the self-test needs the root cell alone"
            )
        root = next((c for c in cells if c.id == 0), None)
        if root is None or root.name != system.root_cell.name or root.cpus_assigned != root_cpus:
            found = (
                f"root cell {root.name!r} on CPUs {format_cpus(root.cpus_assigned) or 'none'}"
                if root is not None
                else "no root cell"
            )
            raise SelftestError(
                f"the hypervisor is enabled with another system config ({found}, expected "
                f"{system.root_cell.name!r} on CPUs {format_cpus(root_cpus)}); disable it "
                "first or pass the config it was enabled with"
            )
    else:
        online = hv.sysfs.online_cpus()
        if online != root_cpus:
            raise ConfigError(
                "root_cell.cpus",
                format_cpus(root_cpus),
                f"must equal the online CPUs {format_cpus(online) or 'none'} to enable",
            )
    return image, load_at


def run_selftest(
    hv: Hypervisor,
    system: SystemConfig,
    cell: CellConfig,
    *,
    image: bytes | None = None,
    address: int | None = None,
    progress: Callable[[Step], None] | None = None,
    linux: LinuxBoot | None = None,
) -> Transcript:
    """Run the fixed self-test battery on a hypervisor and return its transcript.

    The battery enables the hypervisor with ``system`` (unless it is already enabled with
    it), creates ``cell``, loads and starts an image in it, checks statistics and the
    console, shuts the cell down and destroys it, and tries each error path the driver
    documents: enable twice (EBUSY), a duplicate name (EEXIST), CPUs another cell holds
    (EBUSY), a load outside every loadable region (EINVAL), start and destroy of a cell
    that does not exist (ENOENT), start and destroy of the root cell (EINVAL), and, if it
    enabled the hypervisor itself, disable and every cell operation while disabled
    (EINVAL).  The hypervisor is left as it was found, even when a step fails or the run
    is interrupted.

    Args:
        hv: The hypervisor; it stays open.
        system: The system config (the one the hypervisor is or will be enabled with).
        cell: The test cell's config.  Its CPUs must be a proper subset of the root
            cell's; with the default image it needs ``PASSIVE_COMMREG``.
        image: The image to load; by default the park-loop inmate of the cell's arch
            (:func:`jailhouse.inmates.park_inmate`).
        address: Where to load it; by default the cell's ``cpu_reset_address``, which
            must lie in a WRITE+LOADABLE region.
        progress: Called with each :class:`Step` as soon as it is recorded (for a CLI's
            progress lines).  An exception it raises stops the battery; the state is
            restored and the exception propagates.
        linux: Also boot this Linux kernel in the test cell after the lifecycle steps
            (``linux-boot``, checked running with its CPUs gone from the root cell, and
            ``linux-destroy``).  The cell needs loadable RAM for it; everything is checked
            (:meth:`Hypervisor.plan_linux`) before the battery touches the hypervisor.

    Returns:
        The transcript; check :attr:`Transcript.passed`.

    Raises:
        ConfigError: The configs cannot run the battery on this host (arch, CPUs, no
            loadable region at the address, no ``PASSIVE_COMMREG`` for the park loop).
        BootError: ``linux`` cannot boot in the test cell (the error names the field).
        SelftestError: The hypervisor is enabled with another system config or holds
            other cells (nothing was changed); or restoring the state failed.
        DeviceNotFoundError: The driver is not loaded.
    """
    image_bytes, load_at = _preflight(hv, system, cell, image, address)
    if linux is not None:
        hv.plan_linux(cell, linux.kernel, linux.initrd, linux.cmdline, system=system)
    battery = _Battery(
        hv,
        system=system,
        cell=cell,
        image=image_bytes,
        address=load_at,
        progress=progress,
        linux=linux,
    )
    started_enabled = hv.enabled()
    began = time.time()
    clock = time.monotonic()
    try:
        battery.run()
    except BaseException as exc:
        battery.restore(exc)
        raise
    battery.restore(None)
    return Transcript(
        arch=_arch_name(cell.arch),
        system=system.root_cell.name,
        cell=cell.name,
        image={
            "kind": "park-loop" if image is None else "caller",
            "size": len(image_bytes),
            "address": f"{load_at:#x}",
            "sha256": hashlib.sha256(image_bytes).hexdigest(),
        },
        started_enabled=started_enabled,
        steps=tuple(battery.steps),
        cleanup=tuple(battery.cleanup),
        host={
            "device": repr(hv.device),
            "machine": platform.machine(),
            "kernel": platform.release(),
            "python_jailhouse": _version(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(began)),
            "duration_ms": round((time.monotonic() - clock) * 1000, 3),
            "pid": os.getpid(),
        },
    )


def simulate_selftest(
    system: SystemConfig,
    cell: CellConfig,
    *,
    image: bytes | None = None,
    address: int | None = None,
    enabled: bool = False,
    linux: LinuxBoot | None = None,
) -> Transcript:
    """Run the battery on a fresh simulated host that fits ``system``: the reference answer.

    The simulated host has the system's arch and exactly its root cell's CPUs online, in
    a temporary directory removed afterwards.  Compare a board's transcript with this one
    through :meth:`Transcript.compare`.

    Args:
        system: The system config.
        cell: The test cell's config.
        image: As :func:`run_selftest`.
        address: As :func:`run_selftest`.
        linux: As :func:`run_selftest`.
        enabled: Enable the simulated hypervisor with ``system`` first, to match a board
            that was enabled before its run (``Transcript.started_enabled``).

    Raises:
        ConfigError: As :func:`run_selftest`.
    """
    import tempfile  # noqa: PLC0415 - only this helper needs it

    from jailhouse.sim import SimHost  # noqa: PLC0415 - the simulator loads only when asked

    cpus = system.root_cell.cpus
    if not cpus:
        raise ConfigError("root_cell.cpus", "none", "the root cell needs CPUs")
    with tempfile.TemporaryDirectory(prefix="jailhouse-selftest-") as tmp:
        host = SimHost(tmp, arch=system.arch, cpus=max(cpus) + 1)
        for cpu in sorted(set(range(max(cpus) + 1)) - cpus, reverse=True):
            host.set_cpu_online(cpu, online=False)
        with Hypervisor(host.device()) as hv:
            if enabled:
                hv.enable(system)
            return run_selftest(hv, system, cell, image=image, address=address, linux=linux)


def _arch_name(arch: Arch) -> str:
    """Return the short arch name used in transcripts (``x86``, ``arm64``, ``arm``)."""
    return {Arch.X86: "x86", Arch.ARM64: "arm64", Arch.ARM: "arm"}.get(arch, arch.name.lower())


def _version() -> str:
    """Return the library's version without importing anything heavy."""
    import jailhouse  # noqa: PLC0415 - the package is loaded already

    return str(jailhouse.__version__)
