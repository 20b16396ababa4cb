"""The simulated host's persistent state and its JSON form.

Everything a simulated host knows lives in two files under its root: ``host.json`` (the
machine: architecture and number of CPUs, fixed once known) and ``state.json`` (the
driver and hypervisor: enabled or not, the cells, CPU ownership, counters, the console
ring, inmate scripts and pending faults).  The classes here are the in-memory form of
those files; :mod:`jailhouse.sim._host` loads them under the host's lock, changes them
and writes them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from jailhouse.config.flags import Arch
from jailhouse.sysfs import CellState

__all__ = [
    "CONSOLE_SIZE",
    "COUNTER_MASK",
    "ON_START",
    "OPS",
    "CellRecord",
    "Fault",
    "HostInfo",
    "Ring",
    "Script",
    "State",
    "start_burst",
    "stat_names",
    "tick_profile",
]

STATE_VERSION: Final = 1
"""Version of the ``state.json`` layout."""
CONSOLE_SIZE: Final = 2048
"""Bytes in the hypervisor's console ring (``struct jailhouse_virt_console.content``)."""
U32: Final = 0xFFFF_FFFF
"""The console ``tail`` and a reader's ``head`` are ``unsigned int``: they wrap here."""
COUNTER_MASK: Final = 0x7FFF_FFFF
"""The hypervisor masks exit counters to 31 bits."""

OPS: Final = ("enable", "disable", "create", "load", "start", "destroy", "console")
"""The operations :meth:`SimHost.inject_fault` can make fail."""
ON_START: Final = ("run", "lock", "fail", "shutdown")
"""What a scripted inmate does when its cell is started."""

_COMMON_STATS: Final = ("total", "mmio", "management", "hypercall")
_X86_STATS: Final = (
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
_ARM64_STATS: Final = (*_COMMON_STATS, "maintenance", "virt_irq", "virt_sgi", "psci", "smccc")
_ARM_STATS: Final = (*_ARM64_STATS, "cp15")

# Exits one CPU of a running cell takes per tick, and when its cell is started; the
# total is the sum of the categories.  Invented, but shaped like a quiet guest: timer
# and interrupt traffic while running, identification and mode switches at boot.
_TICK: Final[dict[Arch, dict[str, int]]] = {
    Arch.X86: {"mmio": 2, "pio": 3, "xapic": 4, "cr": 1, "msr_other": 1, "msr_x2apic_icr": 1},
    Arch.ARM64: {"mmio": 1, "maintenance": 1, "virt_irq": 3, "virt_sgi": 1},
    Arch.ARM: {"mmio": 1, "maintenance": 1, "virt_irq": 3, "virt_sgi": 1, "cp15": 1},
}
_START: Final[dict[Arch, dict[str, int]]] = {
    Arch.X86: {
        "management": 1,
        "cpuid": 12,
        "cr": 6,
        "xsetbv": 1,
        "msr_other": 9,
        "pio": 4,
        "exception": 1,
    },
    Arch.ARM64: {"management": 1, "psci": 1, "smccc": 2, "mmio": 3, "hypercall": 1},
    Arch.ARM: {"management": 1, "psci": 1, "smccc": 2, "mmio": 3, "hypercall": 1, "cp15": 4},
}


def stat_names(arch: Arch) -> tuple[str, ...]:
    """Return the statistic names of an architecture, without the ``vmexits_`` prefix.

    The order is the hypervisor's index order (ABI fact sheet §4).
    """
    if arch == Arch.X86:
        return _X86_STATS
    if arch == Arch.ARM:
        return _ARM_STATS
    return _ARM64_STATS


def _increments(arch: Arch, profile: dict[str, int], times: int) -> list[int]:
    names = stat_names(arch)
    row = [profile.get(name, 0) * times for name in names]
    row[0] = sum(row[1:])
    return row


def tick_profile(arch: Arch, times: int) -> list[int]:
    """Return the per-CPU counter increments of ``times`` ticks, in stat order."""
    return _increments(arch, _TICK[arch], times)


def start_burst(arch: Arch) -> list[int]:
    """Return the per-CPU counter increments of starting a cell, in stat order."""
    return _increments(arch, _START[arch], 1)


def _text(data: bytes) -> str:
    """Bytes to a JSON-safe string (latin-1 maps every byte to one code point)."""
    return data.decode("latin-1")


def _bytes(text: str) -> bytes:
    return text.encode("latin-1")


@dataclass
class Ring:
    """The hypervisor's console ring: 2048 bytes and a running ``tail`` (u32)."""

    content: bytearray = field(default_factory=lambda: bytearray(CONSOLE_SIZE))
    tail: int = 0

    def write(self, data: bytes) -> None:
        """Append bytes, overwriting the oldest ones once the ring is full."""
        for byte in data:
            self.content[self.tail % CONSOLE_SIZE] = byte
            self.tail = (self.tail + 1) & U32

    def text(self) -> bytes:
        """Return the ring from its oldest byte: what sysfs ``console`` shows."""
        if self.tail <= CONSOLE_SIZE:
            return bytes(self.content[: self.tail])
        cut = self.tail % CONSOLE_SIZE
        return bytes(self.content[cut:] + self.content[:cut])

    def copy(self) -> Ring:
        """Return an independent copy."""
        return Ring(bytearray(self.content), self.tail)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"content": _text(bytes(self.content)), "tail": self.tail}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ring:
        """Rebuild from the JSON form."""
        return cls(bytearray(_bytes(data["content"])), int(data["tail"]))


@dataclass
class Script:
    """What the inmate of a cell of a given name does (see :meth:`SimHost.script_cell`)."""

    console: bytes = b""
    on_start: str = "run"
    refuse_shutdown: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "console": _text(self.console),
            "on_start": self.on_start,
            "refuse_shutdown": self.refuse_shutdown,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Script:
        """Rebuild from the JSON form."""
        return cls(_bytes(data["console"]), data["on_start"], bool(data["refuse_shutdown"]))


@dataclass
class Fault:
    """A pending injected failure: the ``remaining``-th next call of ``op`` fails."""

    op: str
    errno: int
    remaining: int

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"op": self.op, "errno": self.errno, "remaining": self.remaining}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Rebuild from the JSON form."""
        return cls(data["op"], int(data["errno"]), int(data["remaining"]))


@dataclass
class CellRecord:
    """One cell as the driver and hypervisor know it.

    Attributes:
        name: The name's bytes as the driver keeps them (at most 31, no NUL).
        cpus: The CPUs the cell holds; for the root cell, its current set.
        failed: The cell's CPUs in the hypervisor's failed state.
        regions: ``(phys_start, virt_start, size, flags)`` of each memory region.
        pool_pages: Hypervisor memory-pool pages the cell occupies.
        loadable: Whether its loadable regions are mapped back to the root cell.
        images: ``(target_address, size)`` of the images the last load copied.
    """

    id: int
    name: bytes
    cpus: set[int]
    state: CellState = CellState.SHUT_DOWN
    failed: set[int] = field(default_factory=set)
    flags: int = 0
    regions: list[tuple[int, int, int, int]] = field(default_factory=list)
    pool_pages: int = 0
    loadable: bool = False
    images: list[tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "id": self.id,
            "name": _text(self.name),
            "cpus": sorted(self.cpus),
            "state": int(self.state),
            "failed": sorted(self.failed),
            "flags": self.flags,
            "regions": [list(r) for r in self.regions],
            "pool_pages": self.pool_pages,
            "loadable": self.loadable,
            "images": [list(i) for i in self.images],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellRecord:
        """Rebuild from the JSON form."""
        return cls(
            id=int(data["id"]),
            name=_bytes(data["name"]),
            cpus=set(data["cpus"]),
            state=CellState(data["state"]),
            failed=set(data["failed"]),
            flags=int(data["flags"]),
            regions=[(r[0], r[1], r[2], r[3]) for r in data["regions"]],
            pool_pages=int(data["pool_pages"]),
            loadable=bool(data["loadable"]),
            images=[(i[0], i[1]) for i in data["images"]],
        )


@dataclass
class HostInfo:
    """The simulated machine (``host.json``): each field is fixed once it is known."""

    arch: Arch | None = None
    cpus: int | None = None

    def to_json(self) -> str:
        """Return the file's text."""
        arch = None if self.arch is None else self.arch.libvirt_name
        return json.dumps({"arch": arch, "cpus": self.cpus}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HostInfo:
        """Parse the file's text."""
        data = json.loads(text)
        arch = None if data.get("arch") is None else Arch.from_name(data["arch"])
        cpus = data.get("cpus")
        return cls(arch, None if cpus is None else int(cpus))


@dataclass
class State:
    """The driver and hypervisor state (``state.json``).

    Attributes:
        enabled: Whether the hypervisor runs.
        online: The CPUs Linux has online.
        offlined: CPUs the driver took offline for a cell (it brings them back on destroy).
        console_available: The last enable's system config let the root cell read the
            console (``JAILHOUSE_SYS_VIRTUAL_DEBUG_CONSOLE``); the driver keeps it after
            disable.
        cells: The cells in the driver's list order; the root cell (id 0) first.
        cpu_stats: Per-CPU exit counters in :func:`stat_names` order.
        ring: The console ring of the current (or last) hypervisor.
        snapshot: The console page the driver copied on disable or failed enable.
        snapshot_valid: Whether :attr:`snapshot` holds data.
        snapshot_id: Bumped on every snapshot; readers remember the one they drained.
        core_size: Size of the ``core`` attribute, ``None`` while it does not exist.
        mem_pool_size: Pages of the hypervisor's memory pool.
        mem_pool_base: Pages the hypervisor itself uses of it.
        remap_pool_size: Pages of the remapping pool.
        remap_pool_base: Pages of it in use.
        scripts: Inmate scripts by cell name.
        faults: Pending injected failures.
        system_config: The bytes of the system config the running hypervisor was
            enabled with, ``None`` while disabled.  The driver keeps no such copy
            that user space can read; the simulator keeps it so that tools on a
            simulated host can generate device trees without being given the file.
    """

    enabled: bool = False
    online: set[int] = field(default_factory=set)
    offlined: set[int] = field(default_factory=set)
    console_available: bool = False
    cells: list[CellRecord] = field(default_factory=list)
    cpu_stats: dict[int, list[int]] = field(default_factory=dict)
    ring: Ring = field(default_factory=Ring)
    snapshot: Ring = field(default_factory=Ring)
    snapshot_valid: bool = False
    snapshot_id: int = 0
    core_size: int | None = None
    mem_pool_size: int = 0
    mem_pool_base: int = 0
    remap_pool_size: int = 0
    remap_pool_base: int = 0
    scripts: dict[bytes, Script] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    system_config: bytes | None = None

    @property
    def root(self) -> CellRecord:
        """The root cell; only while enabled."""
        return self.cells[0]

    @property
    def mem_pool_used(self) -> int:
        """Pages in use of the memory pool."""
        return self.mem_pool_base + sum(c.pool_pages for c in self.cells[1:])

    def to_json(self) -> str:
        """Return the file's text."""
        data = {
            "version": STATE_VERSION,
            "enabled": self.enabled,
            "online": sorted(self.online),
            "offlined": sorted(self.offlined),
            "console_available": self.console_available,
            "cells": [c.to_json() for c in self.cells],
            "cpu_stats": {str(cpu): row for cpu, row in sorted(self.cpu_stats.items())},
            "ring": self.ring.to_json(),
            "snapshot": self.snapshot.to_json(),
            "snapshot_valid": self.snapshot_valid,
            "snapshot_id": self.snapshot_id,
            "core_size": self.core_size,
            "mem_pool_size": self.mem_pool_size,
            "mem_pool_base": self.mem_pool_base,
            "remap_pool_size": self.remap_pool_size,
            "remap_pool_base": self.remap_pool_base,
            "scripts": {_text(k): v.to_json() for k, v in sorted(self.scripts.items())},
            "faults": [f.to_json() for f in self.faults],
            "system_config": None if self.system_config is None else self.system_config.hex(),
        }
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        """Parse the file's text.

        Raises:
            ValueError: The file is of another layout version.
        """
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise ValueError(
                f"state.json version = {data.get('version')!r}: this simulator reads "
                f"version {STATE_VERSION}"
            )
        return cls(
            enabled=bool(data["enabled"]),
            online=set(data["online"]),
            offlined=set(data["offlined"]),
            console_available=bool(data["console_available"]),
            cells=[CellRecord.from_json(c) for c in data["cells"]],
            cpu_stats={int(k): list(v) for k, v in data["cpu_stats"].items()},
            ring=Ring.from_json(data["ring"]),
            snapshot=Ring.from_json(data["snapshot"]),
            snapshot_valid=bool(data["snapshot_valid"]),
            snapshot_id=int(data["snapshot_id"]),
            core_size=data["core_size"],
            mem_pool_size=int(data["mem_pool_size"]),
            mem_pool_base=int(data["mem_pool_base"]),
            remap_pool_size=int(data["remap_pool_size"]),
            remap_pool_base=int(data["remap_pool_base"]),
            scripts={_bytes(k): Script.from_json(v) for k, v in data["scripts"].items()},
            faults=[Fault.from_json(f) for f in data["faults"]],
            system_config=(
                None if data.get("system_config") is None else bytes.fromhex(data["system_config"])
            ),
        )
