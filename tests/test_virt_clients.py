"""jailhouse.virt for libvirt-python clients: every name, host info, stats, console, events."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from lxml import etree

import jailhouse
import jailhouse.virt as jv
from jailhouse.config.model import CellFlag, load_config
from jailhouse.domxml import cell_to_domain
from jailhouse.examples import example_system
from jailhouse.sim import SimHost
from jailhouse.virt import _gen
from jailhouse.virt._libvirt_api import METHODS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from types import ModuleType

    from backends import Backend

XML = (
    "<domain type='jailhouse'><name>{name}</name><memory unit='KiB'>64</memory>"
    "<vcpu>1</vcpu><os><type arch='aarch64'>hvm</type></os></domain>"
)
WAIT = 20.0
"""Generous bound for an event or console text to arrive (not a performance target)."""


def _libvirt() -> ModuleType:
    return pytest.importorskip("libvirt", reason="libvirt-python is not installed")


def _public(obj: object) -> list[str]:
    return [name for name in dir(obj) if not name.startswith("_")]


@pytest.fixture
def board(tmp_path: Path) -> tuple[str, Path]:
    """An enabled arm64 simulated host with its system config recorded; yields (uri, root)."""
    root = tmp_path / "host"
    uri = f"sim://{root}?arch=arm64&cpus=4"
    system = example_system("arm64")
    with jailhouse.open(uri) as hv:
        hv.enable(system)
    with jv.open(uri) as conn:
        conn.setSystemConfig(system)
    return uri, root


@pytest.fixture
def conn(board: tuple[str, Path]) -> Iterator[jv.virConnect]:
    """A connection to the board."""
    with jv.open(board[0]) as c:
        yield c


# -- every name ------------------------------------------------------------------------------


@pytest.mark.libvirt
def test_generated_list_is_current() -> None:
    """The shipped name list is exactly what the generator makes of the installed libvirt-python."""
    libvirt = _libvirt()
    assert _gen.OUTPUT.read_text(encoding="utf-8") == _gen.render(libvirt)


@pytest.mark.libvirt
def test_module_has_every_public_name() -> None:
    """Every function, class and constant of libvirt-python is a name of jailhouse.virt."""
    libvirt = _libvirt()
    names = [
        name
        for name in _public(libvirt)
        if getattr(getattr(libvirt, name), "__module__", "libvirt") == "libvirt"
        and not inspect.ismodule(getattr(libvirt, name))
    ]
    assert len(names) > 1000
    missing = [name for name in names if not hasattr(jv, name)]
    assert missing == []
    constants = [n for n in names if isinstance(getattr(libvirt, n), int | str)]
    assert {n: getattr(jv, n) for n in constants} == {n: getattr(libvirt, n) for n in constants}


@pytest.mark.libvirt
@pytest.mark.parametrize(
    "cls",
    [
        "virConnect",
        "virDomain",
        "virStream",
        "virNetwork",
        "virStoragePool",
        "virStorageVol",
        "virNodeDevice",
        "virSecret",
        "virDomainSnapshot",
        "virDomainCheckpoint",
        "virInterface",
        "virNWFilter",
        "virNWFilterBinding",
        "virNetworkPort",
    ],
)
def test_class_has_every_public_method(cls: str) -> None:
    """Every public method of a libvirt-python class exists on ours."""
    libvirt = _libvirt()
    ours = getattr(jv, cls)
    assert [name for name in _public(getattr(libvirt, cls)) if not hasattr(ours, name)] == []


def _unsupported(cls: type) -> list[tuple[str, str]]:
    return [
        (name, getattr(getattr(cls, name), jv._nosupport.UNSUPPORTED))
        for name in sorted(METHODS[cls.__name__])
        if hasattr(getattr(cls, name), jv._nosupport.UNSUPPORTED)
    ]


def test_every_missing_method_raises_no_support(conn: jv.virConnect) -> None:
    """A call the facade lacks raises VIR_ERR_NO_SUPPORT naming its C function, any arguments."""
    dom = conn.defineXML(XML.format(name="probe"))
    stream = conn.newStream(0)
    checked = 0
    for obj in (conn, dom, stream):
        for name, function in _unsupported(type(obj)):
            for args in ((), ("x", 1, 2)):
                with pytest.raises(jv.libvirtError) as info:
                    getattr(obj, name)(*args)
                assert info.value.get_error_code() == jv.VIR_ERR_NO_SUPPORT
                assert info.value.get_error_message() == (
                    f"this function is not supported by the connection driver: {function}"
                )
                checked += 1
    assert checked > 200
    assert dict(_unsupported(jv.virDomain))["blockStats"] == "virDomainBlockStats"


def test_absent_object_kinds_exist_and_never_come_back(conn: jv.virConnect) -> None:
    """Network and storage classes exist for annotations; none is listed, lookups are NO_SUPPORT."""
    assert issubclass(jv.virNetwork, object)
    assert conn.listAllNetworks() == conn.listAllStoragePools(0) == conn.listSecrets() == []
    assert conn.numOfNetworks() == 0
    dom = conn.defineXML(XML.format(name="plain"))
    assert (dom.snapshotNum(), dom.hasManagedSaveImage(0), dom.listAllSnapshots()) == (0, 0, [])
    assert dom.numaParameters() == {
        "numa_mode": jv.VIR_DOMAIN_NUMATUNE_MEM_STRICT,
        "numa_nodeset": "",
    }
    assert (conn.setKeepAlive(5, 3), conn.isSecure(), conn.isEncrypted()) == (1, 1, 0)
    for call in (
        lambda: conn.networkLookupByName("default"),
        lambda: conn.storagePoolLookupByName("default"),
        lambda: conn.secretLookupByUUIDString("x"),
    ):
        with pytest.raises(jv.libvirtError) as info:
            call()
        assert info.value.get_error_code() == jv.VIR_ERR_NO_SUPPORT


def test_last_error_functions(conn: jv.virConnect) -> None:
    """virGetLastErrorCode/Domain/Message report the error just raised; reset forgets it."""
    with pytest.raises(jv.libvirtError):
        conn.lookupByName("nothing")
    assert jv.virGetLastErrorCode() == jv.VIR_ERR_NO_DOMAIN
    assert jv.virGetLastErrorDomain() == jv.VIR_FROM_DOM
    assert "nothing" in jv.virGetLastErrorMessage()
    jv.virResetLastError()
    assert jv.virGetLastErrorCode() == jv.VIR_ERR_OK
    assert jv.virGetLastErrorMessage() == "no error"


# -- host information ----------------------------------------------------------------------


def test_capabilities_describe_sim_topology(conn: jv.virConnect, board: tuple[str, Path]) -> None:
    """getCapabilities() has the simulated CPUs, the NUMA node and the jailhouse guest."""
    caps = etree.fromstring(conn.getCapabilities().encode())
    assert caps.findtext("host/cpu/arch") == "aarch64"
    cells = caps.find("host/topology/cells")
    assert cells is not None
    assert cells.get("num") == "1"
    assert [c.get("id") for c in cells.iter("cpu")] == ["0", "1", "2", "3"]
    assert caps.findtext("host/topology/cells/cell/memory") == str(1 << 20)
    assert caps.xpath("guest/arch/@name") == ["aarch64"]
    assert caps.xpath("guest/arch/domain/@type") == ["jailhouse"]
    # a second NUMA node appears once sysfs shows one
    node1 = board[1] / "sys/devices/system/node/node1"
    node1.mkdir()
    (node1 / "cpulist").write_text("2-3\n")
    (node1 / "meminfo").write_text("Node 1 MemTotal: 2048 kB\nNode 1 MemFree: 1024 kB\n")
    caps = etree.fromstring(conn.getCapabilities().encode())
    assert caps.xpath("host/topology/cells/@num") == ["2"]
    assert caps.xpath("host/topology/cells/cell[@id='1']/cpus/cpu/@id") == ["2", "3"]
    assert conn.getCellsFreeMemory(0, 2) == [(1 << 19) * 1024, 1024 * 1024]
    assert conn.getMemoryStats(1) == {"total": 2048, "free": 1024}


def test_node_info_and_cpu_map_follow_sysfs(conn: jv.virConnect, board: tuple[str, Path]) -> None:
    """getInfo() counts the host's CPUs; getCPUMap() follows the CPUs Linux has online."""
    model, memory, cpus, _mhz, nodes, sockets, cores, threads = conn.getInfo()
    assert (model, memory, cpus, nodes, sockets, cores, threads) == ("aarch64", 1024, 4, 1, 1, 4, 1)
    assert conn.getCPUMap() == (4, [True, True, True, True], 4)
    SimHost(board[1]).set_cpu_online(2, online=False)
    assert conn.getCPUMap() == (4, [True, True, False, True], 3)
    assert conn.getMaxVcpus(None) == 3
    assert conn.getMaxVcpus("jailhouse") == 3
    with pytest.raises(jv.libvirtError) as info:
        conn.getMaxVcpus("kvm")
    assert info.value.get_error_code() == jv.VIR_ERR_INVALID_ARG
    assert conn.getFreeMemory() == (1 << 19) * 1024
    assert conn.getLibVersion() == jv.getVersion() == 9_000_000


def test_cpu_stats_read_proc_stat(conn: jv.virConnect, board: tuple[str, Path]) -> None:
    """getCPUStats() converts proc/stat ticks to ns; without proc/stat it is unsupported."""
    with pytest.raises(jv.libvirtError) as info:
        conn.getCPUStats(-1)
    assert info.value.get_error_code() == jv.VIR_ERR_OPERATION_UNSUPPORTED
    proc = board[1] / "proc"
    proc.mkdir()
    (proc / "stat").write_text(
        "cpu  10 2 30 400 5 6 7 0 0 0\ncpu0 10 2 30 400 5 6 7 0 0 0\nintr 1\n"
    )
    ns = 10_000_000  # one USER_HZ tick
    assert conn.getCPUStats(-1) == {
        "kernel": 36 * ns,
        "user": 12 * ns,
        "idle": 400 * ns,
        "iowait": 5 * ns,
    }
    with pytest.raises(jv.libvirtError) as info:
        conn.getCPUStats(3)  # not in proc/stat: Linux does not run it
    assert info.value.get_error_code() == jv.VIR_ERR_INVALID_ARG


def test_sysinfo_needs_smbios(conn: jv.virConnect, board: tuple[str, Path]) -> None:
    """getSysinfo() reports SMBIOS entries from class/dmi/id, and refuses without them."""
    with pytest.raises(jv.libvirtError) as info:
        conn.getSysinfo()
    assert info.value.get_error_code() == jv.VIR_ERR_OPERATION_UNSUPPORTED
    dmi = board[1] / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("Siemens\n")
    xml = etree.fromstring(conn.getSysinfo().encode())
    assert xml.xpath("system/entry[@name='manufacturer']/text()") == ["Siemens"]


def test_domain_capabilities(conn: jv.virConnect) -> None:
    """getDomainCapabilities() names the jailhouse type and refuses another arch."""
    xml = etree.fromstring(conn.getDomainCapabilities().encode())
    assert xml.findtext("domain") == "jailhouse"
    assert xml.xpath("vcpu/@max") == ["3"]
    with pytest.raises(jv.libvirtError) as info:
        conn.getDomainCapabilities(arch="x86_64")
    assert info.value.get_error_code() == jv.VIR_ERR_INVALID_ARG


# -- domain statistics ---------------------------------------------------------------------


def test_stats_carry_exit_counters(conn: jv.virConnect, board: tuple[str, Path]) -> None:
    """getAllDomainStats() has state, vcpus, memory and the cell's exit counters from sysfs."""
    dom = conn.defineXML(XML.format(name="counted"))
    idle = conn.defineXML(XML.format(name="idle"))
    dom.create()
    host = SimHost(board[1])
    host.tick(5)
    snapshot = host.snapshot().cell("counted")
    stats_dir = board[1] / f"sys/devices/jailhouse/cells/{snapshot.id}/statistics"
    total = int((stats_dir / "vmexits_total").read_text())
    active = jv.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    records = {d.name(): r for d, r in conn.getAllDomainStats(0, active)}
    assert list(records) == ["counted"]
    record = records["counted"]
    assert record["state.state"] == jv.VIR_DOMAIN_RUNNING
    assert record["vcpu.current"] == 1
    assert record["vcpu.0.state"] == jv.VIR_VCPU_RUNNING
    assert record["balloon.maximum"] == 64
    assert record["vm.exits.total"] == total > 0
    cpu = min(snapshot.cpus)
    per_cpu = int((stats_dir / f"cpu{cpu}/vmexits_mmio").read_text())
    assert record["vm.vcpu.0.exits.mmio"] == per_cpu
    [(_d, idle_record)] = conn.domainListGetStats([idle], jv.VIR_DOMAIN_STATS_STATE)
    assert idle_record == {"state.state": jv.VIR_DOMAIN_SHUTOFF, "state.reason": 0}
    cpus = sorted(snapshot.cpus)
    info, maps = dom.vcpus()
    assert info == [(0, jv.VIR_VCPU_RUNNING, 0, cpus[0])]
    assert maps == [tuple(cpu == cpus[0] for cpu in range(4))]
    assert dom.vcpuPinInfo() == maps
    with pytest.raises(jv.libvirtError) as err:
        idle.vcpus()
    assert err.value.get_error_code() == jv.VIR_ERR_OPERATION_INVALID


def _shape(value: object) -> object:
    """The structure of a value: container kinds, lengths and element types."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, len(value), tuple(_shape(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _shape(v)) for k, v in value.items())))
    return type(value).__name__


@pytest.mark.libvirt
def test_return_shapes_match_libvirt(conn: jv.virConnect) -> None:
    """info(), getInfo(), vcpus(), stats records and friends have libvirt-python's shapes."""
    libvirt = _libvirt()
    theirs_conn = libvirt.open("test:///default")
    try:
        xml = XML.replace("'jailhouse'", "'test'").format(name="shape")
        theirs = theirs_conn.createXML(xml.replace("<vcpu>1", "<vcpu>1"), 0)
        ours = conn.createXML(xml, 0)
        # element types and lengths match; list lengths follow each host's CPU count
        assert _shape(ours.info()) == _shape(theirs.info())
        assert _shape(conn.getInfo()) == _shape(theirs_conn.getInfo())
        assert [_shape(v) for v in ours.vcpus()[0]] == [_shape(v) for v in theirs.vcpus()[0]]
        assert len(ours.vcpus()) == len(theirs.vcpus()) == 2
        assert {type(b) for m in ours.vcpus()[1] for b in m} == {
            type(b) for m in theirs.vcpus()[1] for b in m
        }
        assert type(ours.vcpuPinInfo()) is type(theirs.vcpuPinInfo())
        their_total = theirs.getCPUStats(True)  # noqa: FBT003 - libvirt's signature
        their_per_cpu = theirs.getCPUStats(False)  # noqa: FBT003
        assert _shape(ours.getCPUStats(total=True)) == _shape(their_total)
        assert set(ours.getCPUStats(total=False)[0]) == set(their_per_cpu[0])
        cpumap, their_map = conn.getCPUMap(), theirs_conn.getCPUMap()
        assert (type(cpumap), len(cpumap), type(cpumap[1][0])) == (
            type(their_map),
            len(their_map),
            type(their_map[1][0]),
        )
        # the test driver has statistics only for its own domain "test"
        their_memory = theirs_conn.lookupByName("test").memoryStats()
        assert set(ours.memoryStats()) <= set(their_memory)
        assert {type(v) for v in ours.memoryStats().values()} == {
            type(v) for v in their_memory.values()
        }
        state = libvirt.VIR_DOMAIN_STATS_STATE
        [(dom, record)] = conn.domainListGetStats([ours], state)
        [(their_dom, their_record)] = theirs_conn.domainListGetStats([theirs], state)
        assert _shape(record) == _shape(their_record)
        assert type(dom).__name__ == type(their_dom).__name__
        for (_d, rec), (_t, their) in zip(
            conn.getAllDomainStats(state), theirs_conn.getAllDomainStats(state), strict=False
        ):
            assert _shape(rec) == _shape(their)
        assert type(conn.getFreeMemory()) is type(theirs_conn.getFreeMemory())
        assert type(conn.getVersion()) is type(theirs_conn.getVersion())
    finally:
        theirs_conn.close()


# -- console streams ----------------------------------------------------------------------------


def _read_until(stream: jv.virStream, needle: bytes) -> bytes:
    got = b""
    deadline = time.monotonic() + WAIT
    while needle not in got and time.monotonic() < deadline:
        data = stream.recv(4096)
        if data == -2:
            time.sleep(0.05)
            continue
        assert isinstance(data, bytes)
        if not data:
            break
        got += data
    return got


def test_console_stream_reads_what_cells_print(enabled: Backend, tmp_path: Path) -> None:
    """openConsole() passes through what a cell prints, on the simulator and the FUSE device."""
    sep = "&" if "?" in enabled.uri else "?"
    uri = f"{enabled.uri}{sep}domains={tmp_path / 'domains'}"
    config = dataclasses.replace(
        enabled.cell("talker", console=True),
        flags=CellFlag.VIRTUAL_CONSOLE_PERMITTED | CellFlag.PASSIVE_COMMREG,
    )
    enabled.host.script_cell("talker", console=b"hello from the talker cell\n")
    with jv.open(uri) as conn:
        conn.setSystemConfig(enabled.system())
        dom = conn.createXML(cell_to_domain(config), 0)
        stream = conn.newStream(jv.VIR_STREAM_NONBLOCK)
        assert dom.openConsole(None, stream, 0) == 0
        assert b"hello from the talker cell\n" in _read_until(stream, b"talker cell\n")
        assert stream.recv(100) == -2  # nothing new, non-blocking
        assert stream.send(b"ignored") == len(b"ignored")
        dom.destroy()
        assert b"" in {stream.recv(100) for _ in range(200)}  # end of file once gone
        assert stream.finish() == 0
        with pytest.raises(jv.libvirtError):
            stream.recv(10)


def test_console_needs_an_active_domain(conn: jv.virConnect) -> None:
    """openConsole() refuses an inactive domain and a device other than the console."""
    dom = conn.defineXML(XML.format(name="quiet"))
    stream = conn.newStream(0)
    with pytest.raises(jv.libvirtError) as info:
        dom.openConsole(None, stream, 0)
    assert info.value.get_error_code() == jv.VIR_ERR_OPERATION_INVALID
    dom.create()
    with pytest.raises(jv.libvirtError) as info:
        dom.openConsole("serial1", stream, 0)
    assert info.value.get_error_code() == jv.VIR_ERR_INVALID_ARG
    assert dom.openConsole("console0", stream, 0) == 0
    assert isinstance(stream.recv(64), bytes)  # blocking: the ring's text is there


def test_stream_callback_runs_from_the_event_loop(
    conn: jv.virConnect, board: tuple[str, Path]
) -> None:
    """eventAddCallback() fires READABLE from virEventRunDefaultImpl while text waits."""
    jv.virEventRegisterDefaultImpl()
    SimHost(board[1]).script_cell("chatty", console=b"chatty says hi\n")
    # <console> lets the cell write to the hypervisor console (VIRTUAL_CONSOLE_PERMITTED)
    xml = XML.format(name="chatty").replace(
        "</os>", "</os><devices><console type='pty'/></devices>"
    )
    dom = conn.createXML(xml, 0)
    stream = conn.newStream(jv.VIR_STREAM_NONBLOCK)
    dom.openConsole(None, stream, 0)
    got: list[bytes] = []

    def readable(st: jv.virStream, events: int, opaque: list[bytes]) -> None:
        assert events & jv.VIR_STREAM_EVENT_READABLE
        data = st.recv(4096)
        if isinstance(data, bytes):
            opaque.append(data)

    stream.eventAddCallback(jv.VIR_STREAM_EVENT_READABLE, readable, got)
    deadline = time.monotonic() + WAIT
    while b"chatty says hi" not in b"".join(got) and time.monotonic() < deadline:
        jv.virEventRunDefaultImpl()
    assert b"chatty says hi\n" in b"".join(got)
    stream.eventRemoveCallback()
    stream.abort()


# -- event loop and lifecycle events ----------------------------------------------------------


def test_default_loop_runs_handles_and_timers() -> None:
    """VirEventAddHandle fires on a readable pipe; timers fire and can be disabled and removed."""
    jv.virEventRegisterDefaultImpl()
    r, w = os.pipe()
    seen: list[tuple[str, int]] = []
    try:
        watch = jv.virEventAddHandle(
            r, jv.VIR_EVENT_HANDLE_READABLE, lambda _w, _fd, ev, op: op.append(("fd", ev)), seen
        )
        timer = jv.virEventAddTimeout(0, lambda t, op: op.append(("timer", t)), seen)
        jv.virEventRunDefaultImpl()
        assert seen == [("timer", timer)]
        os.write(w, b"x")
        jv.virEventUpdateTimeout(timer, -1)
        jv.virEventRunDefaultImpl()
        assert seen[-1] == ("fd", jv.VIR_EVENT_HANDLE_READABLE)
        assert ("timer", timer) not in seen[1:]
        jv.virEventUpdateHandle(watch, 0)
        assert jv.virEventRemoveHandle(watch) == 0
        assert jv.virEventRemoveTimeout(timer) == 0
        with pytest.raises(jv.libvirtError):
            jv.virEventRemoveTimeout(timer)
    finally:
        os.close(r)
        os.close(w)


def _jhctl(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "jailhouse", "-c", uri, *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )


def _wait_for(events: list[tuple[str, int, int]], want: tuple[str, int, int]) -> None:
    deadline = time.monotonic() + WAIT
    while want not in events and time.monotonic() < deadline:
        jv.virEventRunDefaultImpl()
    assert want in events


def test_events_from_another_process(board: tuple[str, Path], tmp_path: Path) -> None:
    """Jhctl in a subprocess defines, starts and destroys a domain; the callbacks see each step."""
    uri, _root = board
    jv.virEventRegisterDefaultImpl()
    events: list[tuple[str, int, int]] = []
    legacy: list[int] = []
    with jv.open(uri) as conn:
        conn.domainEventRegisterAny(
            None,
            jv.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda _c, d, e, det, op: op.append((d.name(), e, det)),
            events,
        )
        conn.domainEventRegister(lambda _c, _d, e, _det, op: op.append(e), legacy)
        xml = tmp_path / "far.xml"
        xml.write_text(XML.format(name="far"), encoding="utf-8")
        _jhctl(uri, "define", str(xml))
        _wait_for(events, ("far", jv.VIR_DOMAIN_EVENT_DEFINED, jv.VIR_DOMAIN_EVENT_DEFINED_ADDED))
        _jhctl(uri, "start", "far")
        _wait_for(events, ("far", jv.VIR_DOMAIN_EVENT_STARTED, jv.VIR_DOMAIN_EVENT_STARTED_BOOTED))
        _jhctl(uri, "destroy", "far")
        _wait_for(
            events, ("far", jv.VIR_DOMAIN_EVENT_STOPPED, jv.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
        )
        _jhctl(uri, "undefine", "far")
        _wait_for(
            events, ("far", jv.VIR_DOMAIN_EVENT_UNDEFINED, jv.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED)
        )
        assert [e for _n, e, _d in events] == legacy


def test_crash_and_pause_events(conn: jv.virConnect, board: tuple[str, Path]) -> None:
    """A cell that fails gives CRASHED; shutdown and resume give SUSPENDED and RESUMED."""
    jv.virEventRegisterDefaultImpl()
    events: list[tuple[str, int, int]] = []
    dom = conn.defineXML(XML.format(name="fragile"))
    conn.domainEventRegisterAny(
        dom,
        jv.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
        lambda _c, d, e, det, op: op.append((d.name(), e, det)),
        events,
    )
    other = conn.defineXML(XML.format(name="other").replace("64<", "64<"))
    dom.create()
    _wait_for(events, ("fragile", jv.VIR_DOMAIN_EVENT_STARTED, 0))
    dom.shutdown()
    _wait_for(
        events, ("fragile", jv.VIR_DOMAIN_EVENT_SUSPENDED, jv.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
    )
    dom.resume()
    _wait_for(
        events, ("fragile", jv.VIR_DOMAIN_EVENT_RESUMED, jv.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)
    )
    dom.shutdown()
    dom.destroy()  # after a shutdown: libvirt's STOPPED/SHUTDOWN, not DESTROYED
    _wait_for(
        events, ("fragile", jv.VIR_DOMAIN_EVENT_STOPPED, jv.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)
    )
    SimHost(board[1]).script_cell("fragile", on_start="fail")
    dom.create()
    _wait_for(
        events, ("fragile", jv.VIR_DOMAIN_EVENT_CRASHED, jv.VIR_DOMAIN_EVENT_CRASHED_PANICKED)
    )
    other.undefine()
    for _ in range(3):
        jv.virEventRunDefaultImpl()
    assert all(name == "fragile" for name, _e, _d in events)  # the filter on one domain


def test_own_event_loop_and_absent_kinds(conn: jv.virConnect) -> None:
    """A program's own loop (virEventRegisterImpl) runs the watcher's timer; others never fire."""
    timers: dict[int, tuple[int, Callable[[int, Any], object], Any]] = {}

    def add_timeout(interval: int, cb: Callable[[int, Any], object], opaque: Any) -> int:
        timers[len(timers) + 1] = (interval, cb, opaque)
        return len(timers)

    def remove_timeout(timer: int) -> int:
        timers.pop(timer)
        return 0

    unused = lambda *_a: 0  # noqa: E731 - the handle functions are never called here
    jv.virEventRegisterImpl(unused, unused, unused, add_timeout, unused, remove_timeout)
    try:
        events: list[int] = []
        cid = conn.domainEventRegisterAny(
            None, jv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda _c, _d, e, _det, op: op.append(e), events
        )
        [(interval, cb, opaque)] = timers.values()
        assert interval == jv.EVENT_POLL_MS
        conn.defineXML(XML.format(name="mine"))
        cb(1, opaque)
        assert events == [jv.VIR_DOMAIN_EVENT_DEFINED]
        nid = conn.networkEventRegisterAny(None, 0, lambda *_a: None, None)
        sid = conn.storagePoolEventRegisterAny(None, 0, lambda *_a: None, None)
        conn.networkEventDeregisterAny(nid)
        conn.storagePoolEventDeregisterAny(sid)
        with pytest.raises(jv.libvirtError):
            conn.networkEventDeregisterAny(nid)
        conn.domainEventDeregisterAny(cid)
        assert timers == {}
    finally:
        jv.virEventRegisterDefaultImpl()


# -- habits ----------------------------------------------------------------------------------


def test_autostart_is_honoured_when_enabling(tmp_path: Path) -> None:
    """setAutostart(1) marks a definition; enableHypervisor() starts it."""
    uri = f"sim://{tmp_path / 'host'}?arch=arm64&cpus=4"
    system = example_system("arm64")
    with jv.open(uri) as conn:
        conn.setSystemConfig(system)
        eager = conn.defineXML(XML.format(name="eager"))
        lazy = conn.defineXML(XML.format(name="lazy"))
        assert eager.setAutostart(1) == 0
        assert (eager.autostart(), lazy.autostart()) == (1, 0)
        started = conn.enableHypervisor(system)
        assert [d.name() for d in started] == ["eager"]
        assert (eager.isActive(), lazy.isActive()) == (1, 0)
        eager.setAutostart(0)
        assert eager.autostart() == 0
        transient = conn.createXML(XML.format(name="brief"), 0)
        with pytest.raises(jv.libvirtError) as info:
            transient.setAutostart(1)
        assert info.value.get_error_code() == jv.VIR_ERR_OPERATION_INVALID


def test_native_config_translation(conn: jv.virConnect, tmp_path: Path) -> None:
    """The native format is the cell config: XML to config and back through the facade."""
    native = conn.domainXMLToNative("jailhouse-config", XML.format(name="native"))

    config = load_config(base64.b64decode(native))
    assert config.name == "native"
    back = conn.domainXMLFromNative("jailhouse-config", native)
    assert etree.fromstring(back.encode()).findtext("name") == "native"
    path = tmp_path / "native.cell"
    path.write_bytes(base64.b64decode(native))
    assert conn.domainXMLFromNative("jailhouse-config", str(path)) == back
    with pytest.raises(jv.libvirtError) as info:
        conn.domainXMLFromNative("qemu-argv", native)
    assert info.value.get_error_code() == jv.VIR_ERR_CONFIG_UNSUPPORTED


def test_open_none_takes_libvirt_default_uri(
    board: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """open(None) uses $LIBVIRT_DEFAULT_URI when it is ours, as libvirt programs expect."""
    monkeypatch.delenv("JAILHOUSE_URI", raising=False)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", board[0])
    with jv.openReadOnly(None) as conn:
        assert conn.getURI() == board[0]
    monkeypatch.setenv("JAILHOUSE_URI", f"{board[0]}&domains={board[1] / 'other'}")
    with jv.openReadOnly(None) as conn:
        assert conn.getURI().endswith("/other")


def test_open_auth_and_legacy_names(board: tuple[str, Path]) -> None:
    """openAuth() honours VIR_CONNECT_RO; createLinux() is createXML()."""
    with jv.openAuth(board[0], [[jv.VIR_CRED_AUTHNAME], None, None], jv.VIR_CONNECT_RO) as ro:
        with pytest.raises(jv.libvirtError) as info:
            ro.defineXML(XML.format(name="nope"))
        assert info.value.get_error_code() == jv.VIR_ERR_OPERATION_DENIED
    with jv.openAuth(board[0], [[], None, None], 0) as conn:
        dom = conn.createLinux(XML.format(name="legacy"), 0)
        assert dom.isActive() == 1
        assert dom.isPersistent() == 0


@pytest.mark.libvirt
def test_libvirtaio_drives_the_events(
    board: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libvirt-python's own asyncio adapter runs the facade's events, with the facade as libvirt."""
    _libvirt()
    monkeypatch.setitem(sys.modules, "libvirt", jv)
    monkeypatch.delitem(sys.modules, "libvirtaio", raising=False)
    import importlib

    libvirtaio = importlib.import_module("libvirtaio")
    events: list[tuple[str, int, int]] = []

    async def scenario() -> None:
        libvirtaio.virEventRegisterAsyncIOImpl()
        with jv.open(board[0]) as conn:
            conn.domainEventRegisterAny(
                None,
                jv.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                lambda _c, d, e, det, op: op.append((d.name(), e, det)),
                events,
            )
            dom = conn.defineXML(XML.format(name="async"))
            dom.create()
            deadline = time.monotonic() + WAIT
            while len(events) < 2 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a list
                await asyncio.sleep(0.05)
        await libvirtaio.getCurrentImpl().drain()

    try:
        asyncio.run(scenario())
    finally:
        jv.virEventRegisterDefaultImpl()
        sys.modules.pop("libvirtaio", None)  # bound to the facade: never leave it for others
    assert events[:2] == [
        ("async", jv.VIR_DOMAIN_EVENT_DEFINED, jv.VIR_DOMAIN_EVENT_DEFINED_ADDED),
        ("async", jv.VIR_DOMAIN_EVENT_STARTED, jv.VIR_DOMAIN_EVENT_STARTED_BOOTED),
    ]
