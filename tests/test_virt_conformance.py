"""The same scenarios on libvirt's test:///default driver and on jailhouse.virt, compared.

Each scenario is one function that drives an API module (``libvirt`` or ``jailhouse.virt``)
through a connection and records every step's outcome: a value, or the libvirt error code.
Both traces must be equal, except for the steps listed in :data:`DIVERGENCES`, where each
side must give exactly the value listed there, with the reason.  Both sides get the same
domain XML (type ``test``, which libvirt accepts and the translator ignores; libvirt refuses
type ``jailhouse``).

libvirt side: test:///default keeps its state per process and resets it (to the single
running domain ``test``) when the last connection closes, so every scenario opens one
connection, works only on domains it creates, and closes it.  jailhouse side: a fresh
simulated x86 host per scenario, enabled with the example system.
"""

from __future__ import annotations

import contextlib
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pytest

import jailhouse
import jailhouse.virt
from jailhouse.examples import example_system

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from types import ModuleType

pytestmark = pytest.mark.libvirt

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

Outcome = tuple[str, Any]

# Steps whose outcome differs on purpose: label -> (libvirt's test driver, ours, why).
DIVERGENCES: Final[dict[str, tuple[Outcome, Outcome, str]]] = {
    "create while running": (
        ("error", 1),
        ("error", 55),
        (
            "the test driver reports VIR_ERR_INTERNAL_ERROR; libvirt's QEMU driver, like ours, "
            "reports VIR_ERR_OPERATION_INVALID ('domain is already running')"
        ),
    ),
    "shutdown inactive": (
        ("error", 1),
        ("error", 55),
        "test driver: internal error 'not running'; QEMU and ours: VIR_ERR_OPERATION_INVALID",
    ),
    "resume running": (
        ("error", 1),
        ("error", 55),
        (
            "test driver: internal error 'not paused'; QEMU and ours: VIR_ERR_OPERATION_INVALID "
            "('domain is already running')"
        ),
    ),
    "state after shutdown": (
        ("ok", [5, 1]),
        ("ok", [3, 8]),
        "a shut-down cell still exists and holds its CPUs: PAUSED (SHUTTING_DOWN), active",
    ),
    "active after shutdown": (
        ("ok", 0),
        ("ok", 1),
        "same reason: the cell exists until destroy()",
    ),
    "id after shutdown": (
        ("ok", False),
        ("ok", True),
        "same reason: the cell keeps its id",
    ),
    "undefine transient": (
        ("ok", 0),
        ("error", 55),
        (
            "the test driver lets a transient domain be undefined; QEMU, libxl, bhyve and VMware "
            "refuse with VIR_ERR_OPERATION_INVALID ('cannot undefine transient domain'), as we do"
        ),
    ),
    "suspend running": (
        ("ok", 0),
        ("error", 84),
        "a cell cannot be suspended and resumed where it was",
    ),
    "migrate": (
        ("error", 3),
        ("error", 84),
        (
            "the test driver lacks the call (VIR_ERR_NO_SUPPORT); a Jailhouse cell can never "
            "migrate, which VIR_ERR_OPERATION_UNSUPPORTED says"
        ),
    ),
}


@dataclass
class Trace:
    """Record each step of a scenario as ``("ok", value)`` or ``("error", code)``."""

    api: ModuleType
    steps: list[tuple[str, Outcome]] = field(default_factory=list)

    def do(self, label: str, call: Callable[[], object]) -> Any:
        """Run a step; record and return its value (``None`` after an error)."""
        try:
            value = call()
        except self.api.libvirtError as exc:
            self.steps.append((label, ("error", exc.get_error_code())))
            return None
        self.steps.append((label, ("ok", _plain(value))))
        return value


def _plain(value: object) -> object:
    """Make a value comparable across the two APIs (domains by name)."""
    if hasattr(value, "UUIDString"):
        return f"domain {value.name()}"  # type: ignore[attr-defined]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def xml(name: str, uuid: str | None = None) -> str:
    """The scenario XML both drivers take."""
    uuid_el = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (
        f"<domain type='test'><name>{name}</name>{uuid_el}<memory unit='KiB'>64</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
    )


def names(conn: Any, flags: int = 0) -> list[str]:
    """List the names a scenario created (test:///default's own 'test' domain left out)."""
    return sorted(d.name() for d in conn.listAllDomains(flags) if d.name() != "test")


# -- scenarios ---------------------------------------------------------------------------


def lookups(t: Trace, conn: Any) -> None:
    """Look up domains that do not exist, and malformed keys."""
    t.do("by name", lambda: conn.lookupByName("nope"))
    t.do("by uuid", lambda: conn.lookupByUUIDString(str(uuidlib.uuid4())))
    t.do("by raw uuid", lambda: conn.lookupByUUID(uuidlib.uuid4().bytes))
    t.do("by id", lambda: conn.lookupByID(4242))
    t.do("by negative id", lambda: conn.lookupByID(-1))
    t.do("by malformed uuid", lambda: conn.lookupByUUIDString("zz"))


def duplicate_defines(t: Trace, conn: Any) -> None:
    """Define a name twice, with and without its UUID, and its UUID under another name."""
    dom = t.do("define a", lambda: conn.defineXML(xml("a")))
    uuid = dom.UUIDString()
    t.do("define a again", lambda: conn.defineXML(xml("a")))
    t.do("define a with another uuid", lambda: conn.defineXML(xml("a", str(uuidlib.uuid4()))))
    t.do("define a with its uuid", lambda: conn.defineXML(xml("a", uuid)))
    t.do("define b with a's uuid", lambda: conn.defineXML(xml("b", uuid)))
    t.do("same uuid kept", lambda: conn.lookupByName("a").UUIDString() == uuid)
    t.do("defined list", lambda: sorted(conn.listDefinedDomains()))
    t.do("undefine", dom.undefine)
    t.do("gone", lambda: conn.lookupByName("a"))


def lifecycle(t: Trace, conn: Any) -> None:
    """Walk a defined domain through create, destroy, create, shutdown and undefine."""
    dom = t.do("define", lambda: conn.defineXML(xml("life")))
    t.do("state defined", dom.state)
    t.do("id defined", dom.ID)
    t.do("active defined", dom.isActive)
    t.do("persistent defined", dom.isPersistent)
    t.do("destroy inactive", dom.destroy)
    t.do("shutdown inactive", dom.shutdown)
    t.do("create", dom.create)
    t.do("state running", dom.state)
    t.do("id running", lambda: dom.ID() > 0)
    t.do("in id list", lambda: dom.ID() in conn.listDomainsID())
    t.do("create while running", dom.create)
    t.do("resume running", dom.resume)
    t.do("destroy", dom.destroy)
    t.do("state destroyed", dom.state)
    t.do("id destroyed", dom.ID)
    t.do("create again", dom.create)
    t.do("shutdown", dom.shutdown)
    t.do("state after shutdown", dom.state)
    t.do("active after shutdown", dom.isActive)
    t.do("id after shutdown", lambda: dom.ID() > 0)
    with contextlib.suppress(Exception):
        dom.destroy()  # a PAUSED cell here; libvirt's is shut off already
    t.do("state at the end", dom.state)
    t.do("undefine", dom.undefine)
    t.do("stale handle", dom.state)
    t.do("stale id", dom.ID)
    t.do("stale name", dom.name)


def undefine_running(t: Trace, conn: Any) -> None:
    """Undefine a running domain: it stays, transient, until destroyed."""
    dom = t.do("define", lambda: conn.defineXML(xml("u")))
    t.do("create", dom.create)
    t.do("undefine running", dom.undefine)
    t.do("persistent", dom.isPersistent)
    t.do("active", dom.isActive)
    t.do("state", dom.state)
    t.do("transient list", lambda: names(conn, t.api.VIR_CONNECT_LIST_DOMAINS_TRANSIENT))
    t.do("defined list", lambda: sorted(conn.listDefinedDomains()))
    t.do("destroy", dom.destroy)
    t.do("lookup after destroy", lambda: conn.lookupByName("u"))
    t.do("stale handle", dom.isActive)


def transient(t: Trace, conn: Any) -> None:
    """Create transient domains and clash with existing names and UUIDs."""
    dom = t.do("createXML", lambda: conn.createXML(xml("t"), 0))
    t.do("state", dom.state)
    t.do("persistent", dom.isPersistent)
    t.do("createXML same name", lambda: conn.createXML(xml("t"), 0))
    t.do("createXML same uuid", lambda: conn.createXML(xml("t", dom.UUIDString()), 0))
    t.do("define same name", lambda: conn.defineXML(xml("t")))
    t.do("define makes it persistent", lambda: conn.defineXML(xml("t", dom.UUIDString())))
    t.do("persistent now", dom.isPersistent)
    t.do("destroy", dom.destroy)
    t.do("state after destroy", dom.state)
    d = t.do("define d", lambda: conn.defineXML(xml("d")))
    t.do("createXML of defined without uuid", lambda: conn.createXML(xml("d"), 0))
    t.do("createXML of defined with uuid", lambda: conn.createXML(xml("d", d.UUIDString()), 0))
    t.do("d state", d.state)
    t.do("d persistent", d.isPersistent)
    t.do("undefine transient", lambda: _undefine_transient(conn))
    d.destroy()
    d.undefine()
    dom.undefine()


def _undefine_transient(conn: Any) -> object:
    dom = conn.createXML(xml("only-live"), 0)
    try:
        return dom.undefine()
    finally:
        dom.destroy()


def list_flags(t: Trace, conn: Any) -> None:
    """List with every flag group against inactive, running and transient domains."""
    api = t.api
    conn.defineXML(xml("off"))
    conn.defineXML(xml("run")).create()
    conn.createXML(xml("trans"), 0)
    flag_sets = {
        "none": 0,
        "active": api.VIR_CONNECT_LIST_DOMAINS_ACTIVE,
        "inactive": api.VIR_CONNECT_LIST_DOMAINS_INACTIVE,
        "active|inactive": api.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        | api.VIR_CONNECT_LIST_DOMAINS_INACTIVE,
        "persistent": api.VIR_CONNECT_LIST_DOMAINS_PERSISTENT,
        "transient": api.VIR_CONNECT_LIST_DOMAINS_TRANSIENT,
        "active&persistent": api.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        | api.VIR_CONNECT_LIST_DOMAINS_PERSISTENT,
        "inactive&transient": api.VIR_CONNECT_LIST_DOMAINS_INACTIVE
        | api.VIR_CONNECT_LIST_DOMAINS_TRANSIENT,
        "running": api.VIR_CONNECT_LIST_DOMAINS_RUNNING,
        "shutoff": api.VIR_CONNECT_LIST_DOMAINS_SHUTOFF,
        "paused|other": api.VIR_CONNECT_LIST_DOMAINS_PAUSED | api.VIR_CONNECT_LIST_DOMAINS_OTHER,
        "running|shutoff&persistent": api.VIR_CONNECT_LIST_DOMAINS_RUNNING
        | api.VIR_CONNECT_LIST_DOMAINS_SHUTOFF
        | api.VIR_CONNECT_LIST_DOMAINS_PERSISTENT,
        "no_managedsave": api.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE,
        "managedsave": api.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE,
        "no_autostart": api.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART,
        "no_snapshot": api.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT,
        "has_snapshot": api.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT,
    }
    for label, flags in flag_sets.items():
        t.do(f"list {label}", lambda flags=flags: names(conn, flags))
    t.do("list unknown flag", lambda: conn.listAllDomains(1 << 30))
    t.do("ids", lambda: len(conn.listDomainsID()) - conn.numOfDomains())
    t.do("defined names", lambda: sorted(conn.listDefinedDomains()))
    t.do("number defined", conn.numOfDefinedDomains)


def xml_errors(t: Trace, conn: Any) -> None:
    """Define XML that is malformed, not a domain, or nameless."""
    t.do("malformed", lambda: conn.defineXML("<domain"))
    t.do("wrong root", lambda: conn.defineXML("<foo/>"))
    t.do("no name", lambda: conn.defineXML(xml("x").replace("<name>x</name>", "")))
    t.do("define flags", lambda: conn.defineXMLFlags(xml("f"), 1 << 20))
    t.do("nothing defined", lambda: names(conn))


def unsupported(t: Trace, conn: Any) -> None:
    """Suspend and migrate a running domain."""
    dom = conn.defineXML(xml("m"))
    dom.create()
    t.do("suspend running", dom.suspend)
    t.do("migrate", lambda: dom.migrate3(conn, {}, 0))
    dom.destroy()
    dom.undefine()


SCENARIOS: Final = [
    lookups,
    duplicate_defines,
    lifecycle,
    undefine_running,
    transient,
    list_flags,
    xml_errors,
    unsupported,
]


# -- running them -------------------------------------------------------------------------


@contextlib.contextmanager
def libvirt_connection() -> Iterator[Any]:
    """A test:///default connection on the driver's initial state, closed afterwards."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open("test:///default")
    try:
        assert [d.name() for d in conn.listAllDomains()] == ["test"], "state was not reset"
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def jailhouse_connection(root: Path) -> Iterator[jailhouse.virt.virConnect]:
    """A connection to a fresh simulated x86 host, enabled with the example system."""
    uri = f"sim://{root}?arch=x86&cpus=4"
    with jailhouse.open(uri) as hv:
        hv.enable(example_system("x86"))
    with jailhouse.virt.open(uri) as conn:
        conn.setSystemConfig(example_system("x86"))
        yield conn


def run_both(
    scenario: Callable[[Trace, Any], None], root: Path
) -> tuple[list[tuple[str, Outcome]], list[tuple[str, Outcome]]]:
    """Run one scenario on each side and return both traces."""
    theirs = Trace(libvirt)
    with libvirt_connection() as conn:
        scenario(theirs, conn)
    ours = Trace(jailhouse.virt)
    with jailhouse_connection(root) as conn:
        scenario(ours, conn)
    return theirs.steps, ours.steps


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_scenario_matches_libvirt(scenario: Callable[[Trace, Any], None], tmp_path: Path) -> None:
    """Every step gives libvirt's result, or exactly the documented divergence."""
    theirs, ours = run_both(scenario, tmp_path)
    assert [label for label, _ in ours] == [label for label, _ in theirs]
    for (label, expected), (_, got) in zip(theirs, ours, strict=True):
        if label in DIVERGENCES:
            libvirt_side, our_side, _why = DIVERGENCES[label]
            assert (label, expected) == (label, libvirt_side)
            assert (label, got) == (label, our_side)
        else:
            assert (label, got) == (label, expected)


def test_every_divergence_is_exercised(tmp_path: Path) -> None:
    """Each documented divergence is a step some scenario takes (no stale entries)."""
    labels: set[str] = set()
    for index, scenario in enumerate(SCENARIOS):
        theirs, _ = run_both(scenario, tmp_path / str(index))
        labels.update(label for label, _ in theirs)
    assert set(DIVERGENCES) <= labels


def test_constants_equal_libvirts() -> None:
    """Every constant jailhouse.virt defines has libvirt-python's value."""
    ours = {name: getattr(jailhouse.virt, name) for name in jailhouse.virt.__all__}
    constants = {name: value for name, value in ours.items() if name.startswith("VIR_")}
    assert len(constants) > 250
    mismatched = {
        name: (value, getattr(libvirt, name, None))
        for name, value in constants.items()
        if getattr(libvirt, name, None) != value
    }
    assert mismatched == {}


def test_errors_read_like_libvirts(tmp_path: Path) -> None:
    """Messages for the same failure begin with libvirt's prefix for the code."""
    with libvirt_connection() as conn:
        dom = conn.defineXML(xml("p"))
        with pytest.raises(libvirt.libvirtError) as theirs:
            dom.destroy()
        dom.undefine()
    with jailhouse_connection(tmp_path) as conn:
        dom = conn.defineXML(xml("p"))
        with pytest.raises(jailhouse.virt.libvirtError) as ours:
            dom.destroy()
    assert ours.value.get_error_message() == theirs.value.get_error_message()
    assert ours.value.get_error_code() == theirs.value.get_error_code()


# -- a libvirt-python script, unchanged ---------------------------------------------------

SCRIPT: Final = """\
import sys

import libvirt

uri, xml_path = sys.argv[1], sys.argv[2]
libvirt.registerErrorHandler(lambda ctx, err: None, None)
conn = libvirt.open(uri)
print("before:", sorted(d.name() for d in conn.listAllDomains(0) if d.name() != "test"))
with open(xml_path) as f:
    dom = conn.defineXML(f.read())
print("defined:", dom.name(), dom.isActive(), dom.isPersistent(),
      dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF, dom.ID())
dom.create()
print("started:", dom.isActive(), dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING, dom.ID() > 0)
xml = dom.XMLDesc(0)
print("dumpxml:", "<name>%s</name>" % dom.name() in xml, dom.UUIDString() in xml)
active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
print("active:", [d.name() for d in active if d.name() != "test"])
dom.destroy()
print("destroyed:", dom.isActive(), dom.ID(), conn.listDefinedDomains())
dom.undefine()
try:
    conn.lookupByName(dom.name())
except libvirt.libvirtError as e:
    print("lookup after undefine:", e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)
conn.close()
"""
"""A script written for libvirt-python: list, define, start, dumpxml, destroy, undefine."""

SCRIPT_OUTPUT: Final = """\
before: []
defined: script-demo 0 1 True -1
started: 1 True True
dumpxml: True True
active: ['script-demo']
destroyed: 0 -1 ['script-demo']
lookup after undefine: True
"""


def run_script(tmp_path: Path, uri: str, *, shim: bool) -> str:
    """Run SCRIPT against a URI; with ``shim``, ``import libvirt`` finds jailhouse.virt."""
    import os
    import subprocess
    import sys

    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    domain = tmp_path / "domain.xml"
    domain.write_text(xml("script-demo"), encoding="utf-8")
    env = dict(os.environ)
    if shim:
        shim_dir = tmp_path / "shim"
        shim_dir.mkdir()
        (shim_dir / "libvirt.py").write_text(
            "from jailhouse.virt import *  # noqa: F403\n", encoding="utf-8"
        )
        env["PYTHONPATH"] = os.pathsep.join([str(shim_dir), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script), uri, str(domain)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_libvirt_script_runs_unchanged(tmp_path: Path) -> None:
    """The same libvirt-python script prints the same lines on test:///default and sim:///."""
    theirs = run_script(tmp_path / "libvirt", "test:///default", shim=False)
    root = tmp_path / "host"
    with jailhouse_connection(root):
        pass
    ours = run_script(tmp_path / "jailhouse", f"sim://{root}", shim=True)
    assert theirs == SCRIPT_OUTPUT
    assert ours == SCRIPT_OUTPUT
