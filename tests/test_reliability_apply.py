"""Reliability of declarative apply: a fault at every step, and a process killed mid-run.

The run under test moves a simulated arm64 host from one set of domain files to another
with every kind of action: a re-created domain (stop, update, start), a pruned one (stop,
undefine), a new one (define, start) and an unchanged one.  An errno is injected into
each driver call the run makes, one at a time -- the n-th destroy, create, load or start
-- and the failed run must leave the host and the definitions exactly as they were
(:func:`jailhouse.apply.apply` undoes what it did).  When the undo fails too, the host
must still be whole (every CPU with the root cell or one cell, no half-made cell, every
definition file readable).

A process killed at a random instant of a run leaves no undo behind; the host must be
whole all the same, and the next run must bring it to the files' state.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import time
from typing import TYPE_CHECKING, Final

import pytest

import jailhouse
import jailhouse.virt as libvirt
from jailhouse.apply import plan, reconcile
from jailhouse.examples import example_system
from jailhouse.hypervisor import Hypervisor
from jailhouse.sim import SimHost
from jailhouse.store import DefinitionStore

if TYPE_CHECKING:
    from pathlib import Path

LONG: Final = os.environ.get("JAILHOUSE_LONG") == "1"
"""Whether the long profile was asked for."""
SEED: Final = int(os.environ.get("JAILHOUSE_FUZZ_SEED", "20250101"))
"""Seed of the kill times."""
OPS: Final = ("destroy", "create", "load", "start")
"""The driver calls an apply makes (a stop is a destroy, a start is create, load, start)."""

XML: Final = """<domain type="jailhouse">
  <name>{name}</name>
  <memory unit="KiB">{memory}</memory>
  <vcpu>1</vcpu>
  <os><type arch="aarch64">hvm</type></os>
</domain>
"""


def write_set(directory: Path, domains: dict[str, int]) -> Path:
    """Write one domain file per name (with its memory in KiB) into a fresh directory."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, memory in domains.items():
        (directory / f"{name}.xml").write_text(XML.format(name=name, memory=memory), "utf-8")
    return directory


FIRST: Final = {"keep": 64, "change": 64, "gone": 64}
"""The files the host starts from, all running."""
SECOND: Final = {"keep": 64, "change": 128, "new": 64}
"""The files the run moves to: re-create ``change``, prune ``gone``, start ``new``."""


def build_world(root: Path) -> None:
    """Enable a 4-CPU arm64 host under ``root`` and bring it to :data:`FIRST`."""
    uri = f"sim://{root / 'host'}?arch=arm64&cpus=4"
    with jailhouse.open(uri) as hv:
        hv.enable(example_system("arm64"))
    conn = libvirt.open(uri)
    try:
        conn.setSystemConfig(example_system("arm64"))
        reconcile(conn, [write_set(root / "first", FIRST)])
    finally:
        conn.close()
    write_set(root / "second", SECOND)


def connect(root: Path) -> libvirt.virConnect:
    """Open a connection to the world under ``root``."""
    conn = libvirt.open(f"sim://{root / 'host'}")
    conn.setSystemConfig(example_system("arm64"))
    return conn


def world_state(root: Path) -> tuple[str, object, object]:
    """Return what a rolled-back run must restore: definitions, domains, cells."""
    conn = connect(root)
    try:
        domains = sorted((d.name(), d.state()[0], d.isActive()) for d in conn.listAllDomains())
        fingerprint = conn.driver.store.fingerprint()
    finally:
        conn.close()
    cells = sorted(
        (c.name, c.state.text, c.cpus, c.images) for c in SimHost(root / "host").snapshot().cells
    )
    return fingerprint, domains, cells


def assert_world_whole(root: Path) -> None:
    """Every CPU with the root cell or one cell, sysfs as the driver, definitions readable."""
    host = SimHost(root / "host")
    snap = host.snapshot()
    assert snap.enabled
    held = [c.cpus for c in snap.cells[1:]]
    assert sum(map(len, held)) == len(frozenset().union(*held)), f"a CPU in two cells: {snap}"
    assert snap.root_cpus == frozenset(range(4)) - frozenset().union(*held), str(snap)
    with Hypervisor(host.device()) as hv:
        seen = sorted((c.id, c.name, c.state, c.cpus_assigned) for c in hv.cells())
    assert seen == sorted((c.id, c.name, c.state, c.cpus) for c in snap.cells)
    store = DefinitionStore(root / "host" / "domains", readonly=True)
    store.definitions()  # StoreError on a truncated or malformed file
    store.live_records()


def pending(root: Path) -> list[object]:
    """Return the injected faults the run did not reach (the simulator's record)."""
    return list(SimHost(root / "host")._read_state().faults)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a world at :data:`FIRST`, built once; each case works on a copy."""
    root = tmp_path_factory.mktemp("apply-template")
    build_world(root)
    return root


def _copy(template: Path, tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(template, root, symlinks=True)
    return root


def test_the_run_succeeds_without_faults(template: Path, tmp_path: Path) -> None:
    """Without faults the run reaches SECOND, and a second run finds nothing to do."""
    root = _copy(template, tmp_path, "clean")
    conn = connect(root)
    try:
        the_plan, result = reconcile(conn, [root / "second"], prune=True, recreate=True)
        kinds = sorted({a.kind.value for a in the_plan.actions})
        assert kinds == ["define", "start", "stop", "undefine", "update"]
        assert result is not None
        assert plan(conn, [root / "second"], prune=True, recreate=True).empty
    finally:
        conn.close()
    assert_world_whole(root)


STEPS: Final = [(op, nth) for op in OPS for nth in (1, 2)]
"""Every driver call of the run: it stops two cells and starts two (create, load, start)."""


def _failed_run(template: Path, tmp_path: Path, op: str, nth: int) -> tuple[Path, object]:
    """Copy the world, fail the nth ``op`` of the run; return the copy and the state before."""
    root = _copy(template, tmp_path, f"{op}-{nth}")
    before = world_state(root)
    SimHost(root / "host").inject_fault(op, errno.EIO, nth=nth)
    conn = connect(root)
    try:
        with pytest.raises(libvirt.libvirtError) as info:
            reconcile(conn, [root / "second"], prune=True, recreate=True)
    finally:
        conn.close()
    assert "\n" not in str(info.value)
    assert pending(root) == [], "the injected fault was not reached"
    return root, before


@pytest.mark.parametrize(("op", "nth"), STEPS, ids=[f"{op}-{nth}" for op, nth in STEPS])
def test_a_fault_at_every_step_of_apply_is_rolled_back(
    template: Path, tmp_path: Path, op: str, nth: int
) -> None:
    """The n-th destroy/create/load/start failing: the run raises; cells and domains are back."""
    root, before = _failed_run(template, tmp_path, op, nth)
    after = world_state(root)
    assert after[1:] == before[1:]  # type: ignore[index]
    assert_world_whole(root)


@pytest.mark.parametrize(
    ("op", "nth"),
    STEPS,
    ids=[f"{op}-{nth}" for op, nth in STEPS],
)
def test_a_fault_at_every_step_of_apply_restores_the_store(
    template: Path, tmp_path: Path, op: str, nth: int
) -> None:
    """The n-th destroy/create/load/start failing: every definition and live record is back."""
    root, before = _failed_run(template, tmp_path, op, nth)
    assert world_state(root)[0] == before[0]  # type: ignore[index]


@pytest.mark.parametrize("op", OPS)
def test_the_run_makes_two_calls_of_each_kind(template: Path, tmp_path: Path, op: str) -> None:
    """A fault on the third call of any kind is never reached: STEPS covers every call."""
    root = _copy(template, tmp_path, f"{op}-3")
    SimHost(root / "host").inject_fault(op, errno.EIO, nth=3)
    conn = connect(root)
    try:
        reconcile(conn, [root / "second"], prune=True, recreate=True)
    finally:
        conn.close()
    assert len(pending(root)) == 1


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param((("start", 1), ("create", 2)), id="start-then-restart-create"),
        pytest.param((("start", 2), ("destroy", 3)), id="start-then-undo-destroy"),
        pytest.param((("load", 1), ("load", 2)), id="load-twice"),
    ],
)
def test_a_failed_rollback_leaves_a_whole_host(
    template: Path, tmp_path: Path, faults: tuple[tuple[str, int], ...]
) -> None:
    """A fault in the run and another in its undo: an error, and the host still whole."""
    root = _copy(template, tmp_path, "double")
    host = SimHost(root / "host")
    for op, nth in faults:
        host.inject_fault(op, errno.EIO, nth=nth)
    conn = connect(root)
    try:
        with pytest.raises(libvirt.libvirtError) as info:
            reconcile(conn, [root / "second"], prune=True, recreate=True)
    finally:
        conn.close()
    assert "\n" not in str(info.value)
    assert_world_whole(root)


def _apply_forever(root: Path, index: int) -> None:
    """Alternate between the two sets of files until killed."""
    conn = connect(root)
    for turn in range(1000):
        target = root / ("second" if (index + turn) % 2 == 0 else "first")
        with contextlib.suppress(libvirt.libvirtError):
            reconcile(conn, [target], prune=True, recreate=True)


@pytest.mark.slow
def test_killed_in_the_middle_of_apply(template: Path, tmp_path: Path) -> None:
    """SIGKILL at a random instant of runs (20; long: 200): whole host, next run converges."""
    rng = random.Random(SEED)  # noqa: S311 - reproducible, not secret
    root = _copy(template, tmp_path, "killed")
    killed = 0
    for index in range(200 if LONG else 20):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _apply_forever(root, index)
            except BaseException:  # noqa: BLE001 - a child only reports by exit code
                code = 1
            os._exit(code)
        time.sleep(rng.uniform(0.005, 0.25))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0, f"round {index}"
        killed += os.WIFSIGNALED(status)
        assert_world_whole(root)
        target = root / ("first" if index % 2 else "second")
        conn = connect(root)
        try:
            reconcile(conn, [target], prune=True, recreate=True)
            assert plan(conn, [target], prune=True, recreate=True).empty, f"round {index}"
        finally:
            conn.close()
        assert_world_whole(root)
    assert killed > 0
