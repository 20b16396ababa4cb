"""Host information for ``virConnect``: capabilities, node info, CPU map and statistics.

Everything is read from the connection's sysfs root (``/sys``, or the simulator's
``sys`` directory) and the ``proc`` directory beside it, as libvirt reads the host's:

- CPUs: ``devices/system/cpu/{present,online}`` and ``cpuN/topology/*`` (socket, die,
  core, thread siblings); a CPU without topology files counts as its own core.
- NUMA: ``devices/system/node/nodeN/{cpulist,meminfo}``; without a ``node`` directory
  the host is one node holding every CPU and ``proc/meminfo``'s memory.
- CPU time: ``proc/stat``; memory: ``proc/meminfo`` (the host) or the node's ``meminfo``.

On hardware the driver takes a cell's CPUs offline in Linux, so
:meth:`ConnectHost.getCPUMap` shows them offline and ``proc/stat`` has no time for them
(the simulator keeps them online).
"""

# ruff: noqa: N802, N803 - method and argument names are libvirt-python's

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from lxml import etree

from jailhouse import __version__
from jailhouse.config.flags import parse_cpus
from jailhouse.virt import _constants as c
from jailhouse.virt._driver import check_flags
from jailhouse.virt._errors import make_error
from jailhouse.virt._libvirt_api import CONSTANTS

if TYPE_CHECKING:
    from pathlib import Path

    from jailhouse.hypervisor import Hypervisor
    from jailhouse.virt._driver import Driver

__all__ = [
    "LIBVIRT_VERSION",
    "ConnectHost",
    "HostTopology",
    "capabilities_xml",
    "getVersion",
    "topology",
    "virInitialize",
]

LIBVIRT_VERSION: Final = 9_000_000
"""The libvirt release whose API the facade follows (9.0.0), as ``getLibVersion()`` says."""
_NODE_CPU_STATS_ALL: Final = -1
_MEMINFO_LINE: Final = re.compile(r"(?:Node \d+ )?(\w+):\s+(\d+)(?: kB)?")
_STAT_FIELDS: Final = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")
_USER_HZ: Final = 100
"""Linux reports ``/proc/stat`` in USER_HZ ticks: 100 per second on every architecture."""
_NS: Final = 1_000_000_000
_WORDSIZE: Final = {"x86_64": 64, "aarch64": 64, "armv7l": 32}


def getVersion() -> int:
    """Return the libvirt version whose API the facade follows (:data:`LIBVIRT_VERSION`)."""
    return LIBVIRT_VERSION


def virInitialize() -> None:
    """Do nothing: the facade needs no initialisation (libvirt-python's is automatic too)."""


@dataclass(frozen=True, slots=True)
class CpuTopology:
    """Where one CPU sits.

    Attributes:
        id: The CPU number.
        socket: Its package.
        die: Its die in the package.
        core: Its core in the package.
        siblings: The CPUs sharing its core (itself included), as a CPU list.
    """

    id: int
    socket: int
    die: int
    core: int
    siblings: str


@dataclass(frozen=True, slots=True)
class HostTopology:
    """The host's CPUs and NUMA nodes.

    Attributes:
        cpus: Every present CPU, by id.
        online: The CPUs Linux has online (those of the root cell).
        nodes: NUMA node id -> (its CPU ids, its memory in KiB).
    """

    cpus: tuple[CpuTopology, ...]
    online: frozenset[int]
    nodes: dict[int, tuple[tuple[int, ...], int]]

    @property
    def sockets(self) -> int:
        """The number of packages."""
        return len({cpu.socket for cpu in self.cpus}) or 1

    def cores_per_socket(self) -> int:
        """The most cores any package has."""
        counts: dict[int, set[tuple[int, int]]] = {}
        for cpu in self.cpus:
            counts.setdefault(cpu.socket, set()).add((cpu.die, cpu.core))
        return max((len(v) for v in counts.values()), default=1)

    def threads_per_core(self) -> int:
        """The most CPUs any core has."""
        counts: dict[tuple[int, int, int], int] = {}
        for cpu in self.cpus:
            key = (cpu.socket, cpu.die, cpu.core)
            counts[key] = counts.get(key, 0) + 1
        return max(counts.values(), default=1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def _read_int(path: Path, default: int) -> int:
    text = _read(path)
    return int(text) if text is not None and text.lstrip("-").isdigit() else default


def meminfo(path: Path) -> dict[str, int]:
    """Parse ``/proc/meminfo`` or a node's ``meminfo``: field -> KiB (missing file: empty)."""
    text = _read(path)
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        match = _MEMINFO_LINE.fullmatch(line.strip())
        if match:
            out[match.group(1)] = int(match.group(2))
    return out


def topology(sys_root: Path) -> HostTopology:
    """Read the CPUs and NUMA nodes of the host whose sysfs is ``sys_root``."""
    cpu_dir = sys_root / "devices/system/cpu"
    present_text = _read(cpu_dir / "present") or _read(cpu_dir / "possible") or ""
    present = sorted(parse_cpus(present_text)) if present_text else []
    online_text = _read(cpu_dir / "online")
    online = frozenset(parse_cpus(online_text)) if online_text else frozenset(present)
    cpus = tuple(
        CpuTopology(
            id=cpu,
            socket=_read_int(cpu_dir / f"cpu{cpu}/topology/physical_package_id", 0),
            die=_read_int(cpu_dir / f"cpu{cpu}/topology/die_id", 0),
            core=_read_int(cpu_dir / f"cpu{cpu}/topology/core_id", cpu),
            siblings=_read(cpu_dir / f"cpu{cpu}/topology/thread_siblings_list") or str(cpu),
        )
        for cpu in present
    )
    nodes: dict[int, tuple[tuple[int, ...], int]] = {}
    node_dir = sys_root / "devices/system/node"
    if node_dir.is_dir():
        for entry in sorted(node_dir.iterdir(), key=lambda p: p.name):
            if not (entry.name.startswith("node") and entry.name[4:].isdigit()):
                continue
            cpulist = _read(entry / "cpulist") or ""
            members = tuple(sorted(parse_cpus(cpulist))) if cpulist else ()
            nodes[int(entry.name[4:])] = (members, meminfo(entry / "meminfo").get("MemTotal", 0))
    if not nodes:
        total = meminfo(sys_root.parent / "proc/meminfo").get("MemTotal", 0)
        nodes[0] = (tuple(present), total)
    return HostTopology(cpus, online, dict(sorted(nodes.items())))


def capabilities_xml(hv: Hypervisor, topo: HostTopology) -> str:
    """Return libvirt's capabilities XML for a Jailhouse host.

    The host part has the CPU's arch and topology and the NUMA cells; the single guest
    type is ``hvm`` on the host's own arch with domain type ``jailhouse``: a cell runs
    on the host's CPUs, so it has the host's architecture.
    """
    arch = _arch_name(hv)
    root = etree.Element("capabilities")
    host = etree.SubElement(root, "host")
    cpu = etree.SubElement(host, "cpu")
    etree.SubElement(cpu, "arch").text = arch
    etree.SubElement(
        cpu,
        "topology",
        sockets=str(topo.sockets),
        dies="1",
        cores=str(topo.cores_per_socket()),
        threads=str(topo.threads_per_core()),
    )
    etree.SubElement(host, "power_management")
    numa = etree.SubElement(etree.SubElement(host, "topology"), "cells", num=str(len(topo.nodes)))
    by_id = {cpu.id: cpu for cpu in topo.cpus}
    for node, (members, memory) in topo.nodes.items():
        cell = etree.SubElement(numa, "cell", id=str(node))
        etree.SubElement(cell, "memory", unit="KiB").text = str(memory)
        cpus = etree.SubElement(cell, "cpus", num=str(len(members)))
        for member in members:
            info = by_id.get(member, CpuTopology(member, 0, 0, member, str(member)))
            etree.SubElement(
                cpus,
                "cpu",
                id=str(member),
                socket_id=str(info.socket),
                die_id=str(info.die),
                core_id=str(info.core),
                siblings=info.siblings,
            )
    guest = etree.SubElement(root, "guest")
    etree.SubElement(guest, "os_type").text = "hvm"
    arch_el = etree.SubElement(guest, "arch", name=arch)
    etree.SubElement(arch_el, "wordsize").text = str(_WORDSIZE.get(arch, 64))
    etree.SubElement(arch_el, "domain", type="jailhouse")
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def domain_capabilities_xml(hv: Hypervisor, topo: HostTopology) -> str:
    """Return libvirt's domain capabilities XML for ``jailhouse`` domains."""
    root = etree.Element("domainCapabilities")
    etree.SubElement(root, "domain").text = "jailhouse"
    etree.SubElement(root, "arch").text = _arch_name(hv)
    etree.SubElement(root, "vcpu", max=str(max_vcpus(topo)))
    os_el = etree.SubElement(root, "os", supported="yes")
    loader = etree.SubElement(os_el, "loader", supported="no")
    del loader
    cpu = etree.SubElement(root, "cpu")
    etree.SubElement(cpu, "mode", name="host-passthrough", supported="yes")
    etree.SubElement(cpu, "mode", name="host-model", supported="no")
    etree.SubElement(cpu, "mode", name="custom", supported="no")
    devices = etree.SubElement(root, "devices")
    for name in ("disk", "graphics", "video", "hostdev"):
        etree.SubElement(devices, name, supported="no")
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def max_vcpus(topo: HostTopology) -> int:
    """The most CPUs one cell can have: all but one (the root cell keeps at least one)."""
    return max(len(topo.cpus) - 1, 1)


def _arch_name(hv: Hypervisor) -> str:
    return hv.arch.libvirt_name if hv.arch is not None else platform.machine()


def _encode_version(text: str) -> int:
    numbers = [int(part) for part in re.findall(r"\d+", text)[:3]]
    numbers += [0] * (3 - len(numbers))
    return numbers[0] * 1_000_000 + numbers[1] * 1000 + numbers[2]


def _cpu_mhz(sys_root: Path) -> int:
    khz = _read_int(sys_root / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", 0)
    if khz:
        return khz // 1000
    text = _read(sys_root.parent / "proc/cpuinfo") or ""
    match = re.search(r"cpu MHz\s*:\s*([0-9.]+)", text)
    return int(float(match.group(1))) if match else 0


class ConnectHost:
    """The host half of ``virConnect`` (a mixin; see :class:`jailhouse.virt.virConnect`)."""

    if TYPE_CHECKING:

        def _live(self, function: str) -> Driver: ...

    def _sys_root(self, function: str) -> tuple[Driver, Path]:
        driver = self._live(function)
        return driver, driver.hv.sysfs.root

    def getCapabilities(self) -> str:
        """Return the capabilities XML: host CPU topology, NUMA cells, the ``jailhouse`` guest."""
        driver, root = self._sys_root("virConnectGetCapabilities")
        return capabilities_xml(driver.hv, topology(root))

    def getDomainCapabilities(
        self,
        emulatorbin: str | None = None,
        arch: str | None = None,
        machine: str | None = None,
        virttype: str | None = None,
        flags: int = 0,
    ) -> str:
        """Return the domain capabilities XML of ``jailhouse`` domains on the host's arch.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for an emulator, a machine, another
                arch or another virt type (a cell has none of these).
        """
        driver, root = self._sys_root("virConnectGetDomainCapabilities")
        check_flags(flags, 0, "virConnectGetDomainCapabilities")
        own = _arch_name(driver.hv)
        for what, value, allowed in (
            ("emulator", emulatorbin, None),
            ("machine", machine, None),
            ("arch", arch, own),
            ("virttype", virttype, "jailhouse"),
        ):
            if value is not None and value != allowed:
                raise make_error(
                    c.VIR_ERR_INVALID_ARG,
                    f"{what} {value!r}: a Jailhouse host runs only {allowed or 'no ' + what}",
                    domain=c.VIR_FROM_NONE,
                )
        return domain_capabilities_xml(driver.hv, topology(root))

    def getInfo(self) -> list[object]:
        """Return ``[model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]``, as libvirt.

        ``cpus`` counts every present CPU (those given to cells too: they are the
        hypervisor's); sockets are per node, cores per socket, threads per core.
        """
        driver, root = self._sys_root("virNodeGetInfo")
        topo = topology(root)
        memory = sum(mem for _cpus, mem in topo.nodes.values())
        nodes = len(topo.nodes)
        return [
            _arch_name(driver.hv),
            memory // 1024,
            len(topo.cpus),
            _cpu_mhz(root),
            nodes,
            max(topo.sockets // nodes, 1),
            topo.cores_per_socket(),
            topo.threads_per_core(),
        ]

    def getVersion(self) -> int:
        """Return python-jailhouse's version as libvirt encodes one (major * 1e6 + minor * 1e3 + micro)."""  # noqa: E501 - one line
        self._live("virConnectGetVersion")
        return _encode_version(__version__)

    def getLibVersion(self) -> int:
        """Return the libvirt version whose API the facade follows (:data:`LIBVIRT_VERSION`)."""
        self._live("virConnectGetLibVersion")
        return LIBVIRT_VERSION

    def getMaxVcpus(self, type: str | None) -> int:  # noqa: A002 - libvirt-python's name
        """Return the most CPUs a cell can have: every CPU but one, which the root cell keeps.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for a type other than ``jailhouse``.
        """
        _driver, root = self._sys_root("virConnectGetMaxVcpus")
        if type is not None and type.lower() != "jailhouse":
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                f"unknown type '{type}': a Jailhouse host runs only 'jailhouse' domains",
                domain=c.VIR_FROM_NONE,
            )
        return max_vcpus(topology(root))

    def getFreeMemory(self) -> int:
        """Return the host's free memory in bytes (the NUMA nodes' ``MemFree``, else ``proc/meminfo``)."""  # noqa: E501 - one line
        _driver, root = self._sys_root("virNodeGetFreeMemory")
        return sum(self._node_free(root, node) for node in topology(root).nodes) * 1024

    def getCellsFreeMemory(self, startCell: int, maxCells: int) -> list[int]:
        """Return the free memory in bytes of ``maxCells`` NUMA nodes from ``startCell``.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for a start beyond the last node.
        """
        _driver, root = self._sys_root("virNodeGetCellsFreeMemory")
        nodes = sorted(topology(root).nodes)
        if startCell < 0 or maxCells <= 0 or startCell > (nodes[-1] if nodes else -1):
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                f"start cell {startCell} out of range (0-{nodes[-1] if nodes else 0})",
                domain=c.VIR_FROM_NONE,
            )
        wanted = [n for n in nodes if n >= startCell][:maxCells]
        return [self._node_free(root, node) * 1024 for node in wanted]

    @staticmethod
    def _node_free(root: Path, node: int) -> int:
        info = meminfo(root / f"devices/system/node/node{node}/meminfo")
        if not info:
            info = meminfo(root.parent / "proc/meminfo")
        return info.get("MemFree", 0)

    def getMemoryStats(self, cellNum: int, flags: int = 0) -> dict[str, int]:
        """Return ``{"total", "free"}`` (node) or also ``"buffers", "cached"`` (host), in KiB.

        ``cellNum`` -1 (``VIR_NODE_MEMORY_STATS_ALL_CELLS``) asks for the whole host.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for a node that does not exist.
        """
        _driver, root = self._sys_root("virNodeGetMemoryStats")
        check_flags(flags, 0, "virNodeGetMemoryStats")
        if cellNum == CONSTANTS["VIR_NODE_MEMORY_STATS_ALL_CELLS"]:
            info = meminfo(root.parent / "proc/meminfo")
            if info:
                return {
                    "total": info.get("MemTotal", 0),
                    "free": info.get("MemFree", 0),
                    "buffers": info.get("Buffers", 0),
                    "cached": info.get("Cached", 0),
                }
            nodes = topology(root).nodes
            return {
                "total": sum(mem for _cpus, mem in nodes.values()),
                "free": sum(self._node_free(root, node) for node in nodes),
            }
        if cellNum not in topology(root).nodes:
            raise make_error(
                c.VIR_ERR_INVALID_ARG, f"NUMA node {cellNum} does not exist", domain=c.VIR_FROM_NONE
            )
        info = meminfo(root / f"devices/system/node/node{cellNum}/meminfo")
        return {"total": info.get("MemTotal", 0), "free": info.get("MemFree", 0)}

    def getCPUMap(self, flags: int = 0) -> tuple[int, list[bool], int]:
        """Return ``(cpus, [online per CPU], online count)``, as Linux has them online."""
        _driver, root = self._sys_root("virNodeGetCPUMap")
        check_flags(flags, 0, "virNodeGetCPUMap")
        topo = topology(root)
        count = max((cpu.id for cpu in topo.cpus), default=-1) + 1
        online = [cpu in topo.online for cpu in range(count)]
        return count, online, sum(online)

    def getCPUStats(self, cpuNum: int, flags: int = 0) -> dict[str, int]:
        """Return ``{"kernel", "user", "idle", "iowait"}`` in ns from ``proc/stat``.

        ``cpuNum`` -1 (``VIR_NODE_CPU_STATS_ALL_CPUS``) sums every CPU Linux runs.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for a CPU Linux does not run (it belongs
                to a cell, or does not exist); ``VIR_ERR_OPERATION_UNSUPPORTED`` when the
                host has no ``proc/stat`` (the simulator).
        """
        _driver, root = self._sys_root("virNodeGetCPUStats")
        check_flags(flags, 0, "virNodeGetCPUStats")
        stat_path = root.parent / "proc/stat"
        text = _read(stat_path)
        if text is None:
            raise make_error(
                c.VIR_ERR_OPERATION_UNSUPPORTED,
                f"{stat_path} does not exist: this host keeps no CPU time",
                domain=c.VIR_FROM_NONE,
            )
        label = "cpu" if cpuNum == _NODE_CPU_STATS_ALL else f"cpu{cpuNum}"
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == label:
                ticks = dict(zip(_STAT_FIELDS, (int(v) for v in fields[1:]), strict=False))
                scale = _NS // _USER_HZ
                return {
                    "kernel": (ticks.get("system", 0) + ticks.get("irq", 0)) * scale,
                    "user": (ticks.get("user", 0) + ticks.get("nice", 0)) * scale,
                    "idle": ticks.get("idle", 0) * scale,
                    "iowait": ticks.get("iowait", 0) * scale,
                }
        raise make_error(
            c.VIR_ERR_INVALID_ARG,
            f"Invalid cpuNum {cpuNum}: Linux does not run it (offline, or a cell's CPU)",
            domain=c.VIR_FROM_NONE,
        )

    def getSysinfo(self, flags: int = 0) -> str:
        """Return the SMBIOS sysinfo XML from ``class/dmi/id`` (BIOS and system entries).

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_UNSUPPORTED`` when the host has no SMBIOS
                data (arm64 boards with a device tree, the simulator).
        """
        _driver, root = self._sys_root("virConnectGetSysinfo")
        check_flags(flags, 0, "virConnectGetSysinfo")
        dmi = root / "class/dmi/id"
        if not dmi.is_dir():
            raise make_error(
                c.VIR_ERR_OPERATION_UNSUPPORTED,
                f"{dmi} does not exist: the host has no SMBIOS data",
                domain=c.VIR_FROM_NONE,
            )
        sysinfo = etree.Element("sysinfo", type="smbios")
        for section, names in (
            ("bios", {"vendor": "bios_vendor", "version": "bios_version", "date": "bios_date"}),
            (
                "system",
                {
                    "manufacturer": "sys_vendor",
                    "product": "product_name",
                    "version": "product_version",
                    "family": "product_family",
                },
            ),
        ):
            element = etree.SubElement(sysinfo, section)
            for name, file in names.items():
                value = _read(dmi / file)
                if value:
                    etree.SubElement(element, "entry", name=name).text = value
        return etree.tostring(sysinfo, encoding="unicode", pretty_print=True)
