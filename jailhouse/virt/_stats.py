"""Domain statistics: ``getAllDomainStats``, ``vcpus()``, ``vcpuPinInfo()`` and the like.

A cell owns physical CPUs, so a vCPU *is* a host CPU: vCPU ``n`` is the cell's ``n``-th
CPU by number.  Jailhouse keeps no CPU time (times are 0, as in ``info()``); what it does
count are the exits to the hypervisor per CPU (``cells/<id>/statistics``), which the
stats records carry under libvirt's hypervisor-specific ``vm.`` prefix
(``VIR_DOMAIN_STATS_VM``): ``vm.exits.total``, ``vm.exits.mmio`` ... summed over the
cell's CPUs, and ``vm.vcpu.<n>.exits.<name>`` per vCPU.

Stats records, by group:

- ``VIR_DOMAIN_STATS_STATE``: ``state.state``, ``state.reason``.
- ``VIR_DOMAIN_STATS_BALLOON``: ``balloon.current``, ``balloon.maximum`` (KiB, equal:
  a cell cannot balloon).
- ``VIR_DOMAIN_STATS_VCPU``: ``vcpu.current``, ``vcpu.maximum``, ``vcpu.<n>.state``.
- ``VIR_DOMAIN_STATS_VM``: the exit counters, for active domains.
"""

# ruff: noqa: N802 - method and argument names are libvirt-python's

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Final

from jailhouse.sysfs import CellState
from jailhouse.virt import _constants as c
from jailhouse.virt._driver import check_flags
from jailhouse.virt._errors import make_error
from jailhouse.virt._host import topology
from jailhouse.virt._libvirt_api import CONSTANTS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jailhouse.virt._api import virConnect, virDomain
    from jailhouse.virt._driver import DomainView, Driver

__all__ = ["ConnectStats", "DomainStats", "stats_record"]


def _k(name: str) -> int:
    return int(CONSTANTS[name])


STATS_STATE: Final = _k("VIR_DOMAIN_STATS_STATE")
STATS_BALLOON: Final = _k("VIR_DOMAIN_STATS_BALLOON")
STATS_VCPU: Final = _k("VIR_DOMAIN_STATS_VCPU")
STATS_VM: Final = _k("VIR_DOMAIN_STATS_VM")
_SUPPORTED: Final = STATS_STATE | STATS_BALLOON | STATS_VCPU | STATS_VM
_ENFORCE: Final = _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS")
_LIST_FLAGS: Final = {
    "ACTIVE": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE"),
    "INACTIVE": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE"),
    "PERSISTENT": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_PERSISTENT"),
    "TRANSIENT": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_TRANSIENT"),
    "RUNNING": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING"),
    "PAUSED": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_PAUSED"),
    "SHUTOFF": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_SHUTOFF"),
    "OTHER": _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_OTHER"),
}
_ALL_FLAGS: Final = (
    sum(_LIST_FLAGS.values())
    | _ENFORCE
    | _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT")
    | _k("VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING")
)
VCPU_OFFLINE: Final = _k("VIR_VCPU_OFFLINE")
VCPU_RUNNING: Final = _k("VIR_VCPU_RUNNING")


def vcpu_cpus(view: DomainView) -> list[int]:
    """Return the host CPU of each vCPU: the cell's CPUs (or the definition's) by number."""
    if view.cell is not None:
        return sorted(view.cell.cpus_assigned)
    definition = view.current
    return [] if definition is None else sorted(definition.config.cpus)


def _vcpu_state(view: DomainView, cpu: int) -> int:
    cell = view.cell
    if cell is None or cpu in cell.cpus_failed:
        return VCPU_OFFLINE
    if cell.state in {CellState.RUNNING, CellState.RUNNING_LOCKED}:
        return VCPU_RUNNING
    return VCPU_OFFLINE


def stats_record(view: DomainView, groups: int) -> dict[str, Any]:
    """Return one domain's stats record for the ``VIR_DOMAIN_STATS_*`` groups asked."""
    record: dict[str, Any] = {}
    if groups & STATS_STATE:
        state, reason = view.state()
        record["state.state"] = state
        record["state.reason"] = reason
    if groups & STATS_BALLOON:
        memory = view.memory_kib()
        record["balloon.current"] = memory
        record["balloon.maximum"] = memory
    cpus = vcpu_cpus(view)
    if groups & STATS_VCPU:
        record["vcpu.current"] = len(cpus)
        record["vcpu.maximum"] = len(cpus)
        if view.cell is not None:
            for index, cpu in enumerate(cpus):
                record[f"vcpu.{index}.state"] = _vcpu_state(view, cpu)
    if groups & STATS_VM and view.cell is not None:
        for name, value in view.cell.statistics.items():
            record[f"vm.exits.{name}"] = value
        for index, cpu in enumerate(cpus):
            for name, value in view.cell.per_cpu.get(cpu, {}).items():
                record[f"vm.vcpu.{index}.exits.{name}"] = value
    return record


def _listed(view: DomainView, flags: int) -> bool:
    state = view.state()[0]
    groups = [
        {_LIST_FLAGS["ACTIVE"]: view.active, _LIST_FLAGS["INACTIVE"]: not view.active},
        {
            _LIST_FLAGS["PERSISTENT"]: view.persistent is not None,
            _LIST_FLAGS["TRANSIENT"]: view.persistent is None,
        },
        {
            _LIST_FLAGS["RUNNING"]: state == c.VIR_DOMAIN_RUNNING,
            _LIST_FLAGS["PAUSED"]: state == c.VIR_DOMAIN_PAUSED,
            _LIST_FLAGS["SHUTOFF"]: state == c.VIR_DOMAIN_SHUTOFF,
            _LIST_FLAGS["OTHER"]: state
            not in {c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_PAUSED, c.VIR_DOMAIN_SHUTOFF},
        },
    ]
    for group in groups:
        asked = [flag for flag in group if flags & flag]
        if asked and not any(group[flag] for flag in asked):
            return False
    return True


def _groups(stats: int, flags: int, function: str) -> int:
    check_flags(flags, _ALL_FLAGS, function)
    if stats < 0:
        raise make_error(c.VIR_ERR_INVALID_ARG, f"stats {stats:#x} in {function}")
    if stats & ~_SUPPORTED and flags & _ENFORCE:
        raise make_error(
            c.VIR_ERR_OPERATION_UNSUPPORTED,
            f"stats types {stats & ~_SUPPORTED:#x} are not supported by this daemon",
            domain=c.VIR_FROM_NONE,
        )
    return stats & _SUPPORTED if stats else _SUPPORTED


class ConnectStats:
    """The statistics half of ``virConnect`` (a mixin)."""

    if TYPE_CHECKING:

        def _live(self, function: str) -> Driver: ...

    def getAllDomainStats(
        self, stats: int = 0, flags: int = 0
    ) -> list[tuple[virDomain, dict[str, Any]]]:
        """Return ``[(domain, record)]`` for every domain the list flags select.

        Args:
            stats: ``VIR_DOMAIN_STATS_*`` groups; 0 for every group the driver has
                (state, balloon, vcpu, vm); others are ignored unless ``flags`` has
                ``ENFORCE_STATS``.
            flags: ``VIR_CONNECT_GET_ALL_DOMAINS_STATS_*``.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for unknown flags,
                ``VIR_ERR_OPERATION_UNSUPPORTED`` for enforced groups it lacks.
        """
        from jailhouse.virt._api import _call, virDomain  # noqa: PLC0415 - avoid a cycle

        driver = self._live("virConnectGetAllDomainStats")
        groups = _groups(stats, flags, "virConnectGetAllDomainStats")
        views = _call(driver.domains)
        conn: virConnect = self  # type: ignore[assignment] # a mixin of virConnect
        return [
            (virDomain(conn, view), stats_record(view, groups))
            for view in views
            if _listed(view, flags)
        ]

    def domainListGetStats(
        self, doms: Sequence[virDomain], stats: int = 0, flags: int = 0
    ) -> list[tuple[virDomain, dict[str, Any]]]:
        """Return ``[(domain, record)]`` for the given domains, in their order.

        Raises:
            libvirtError: As :meth:`getAllDomainStats`; ``VIR_ERR_NO_DOMAIN`` for a
                domain that is gone; ``VIR_ERR_INVALID_ARG`` for one of another connection.
        """
        from jailhouse.virt._api import _call  # noqa: PLC0415 - avoid a cycle

        driver = self._live("virDomainListGetStats")
        groups = _groups(stats, flags, "virDomainListGetStats")
        out: list[tuple[virDomain, dict[str, Any]]] = []
        for dom in doms:
            if dom.connect() is not self:
                raise make_error(
                    c.VIR_ERR_INVALID_ARG,
                    "domains from different connections in virDomainListGetStats",
                )
            view = _call(partial(driver.find_uuid, dom.UUIDString(), dom.name()))
            if _listed(view, flags):
                out.append((dom, stats_record(view, groups)))
        return out


class DomainStats:
    """The statistics half of ``virDomain`` (a mixin)."""

    if TYPE_CHECKING:

        def _view(self, function: str) -> tuple[Driver, DomainView]: ...

    def _active(self, function: str) -> tuple[Driver, DomainView]:
        driver, view = self._view(function)
        if view.cell is None:
            raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        return driver, view

    def vcpus(self) -> tuple[list[tuple[int, int, int, int]], list[tuple[bool, ...]]]:
        """Return ``([(vcpu, state, cpuTime, cpu)], [cpumap per vcpu])``, as libvirt.

        Each vCPU is one host CPU of the cell and runs only there; the CPU time is 0
        (Jailhouse keeps none).

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless active.
        """
        driver, view = self._active("virDomainGetVcpus")
        host = _host_cpus(driver)
        cpus = vcpu_cpus(view)
        info = [(index, _vcpu_state(view, cpu), 0, cpu) for index, cpu in enumerate(cpus)]
        maps = [tuple(other == cpu for other in range(host)) for cpu in cpus]
        return info, maps

    def vcpuPinInfo(self, flags: int = 0) -> list[tuple[bool, ...]]:
        """Return, per vCPU, the host CPUs it may run on: exactly its own CPU.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for unknown flags.
        """
        check_flags(
            flags,
            c.VIR_DOMAIN_AFFECT_LIVE | c.VIR_DOMAIN_AFFECT_CONFIG,
            "virDomainGetVcpuPinInfo",
        )
        driver, view = self._view("virDomainGetVcpuPinInfo")
        host = _host_cpus(driver)
        return [tuple(other == cpu for other in range(host)) for cpu in vcpu_cpus(view)]

    def getCPUStats(self, total: bool, flags: int = 0) -> list[dict[str, int]]:
        """Return ``[{"cpu_time": 0}]`` (total) or one ``{"cpu_time", "vcpu_time"}`` per host CPU.

        Jailhouse keeps no CPU time, so every time is 0; the shapes are libvirt's.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless active.
        """
        check_flags(flags, 0, "virDomainGetCPUStats")
        driver, _view = self._active("virDomainGetCPUStats")
        if total:
            return [{"cpu_time": 0, "user_time": 0, "system_time": 0}]
        return [{"cpu_time": 0, "vcpu_time": 0} for _cpu in range(_host_cpus(driver))]

    def memoryStats(self) -> dict[str, int]:
        """Return ``{"actual", "rss"}`` in KiB: the cell's RAM, all of it its own.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless active.
        """
        _driver, view = self._active("virDomainMemoryStats")
        memory = view.memory_kib()
        return {"actual": memory, "rss": memory}


def _host_cpus(driver: Driver) -> int:
    topo = topology(driver.hv.sysfs.root)
    return max((cpu.id for cpu in topo.cpus), default=-1) + 1
