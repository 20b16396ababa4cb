"""Reliability: faults at every step, and processes killed in the middle of a write.

After any failure -- an errno injected where the real stack calls the hypervisor, or a
process killed at a random instant -- the host must be whole:

- the root cell owns every CPU no other cell holds, and no CPU is in two cells;
- no cell is half-made: every cell sysfs shows is one the simulated driver has, with the
  same state, CPUs and images, and nothing is left in the scratch directory;
- the state and definition files parse (none is truncated) and no write lock is stuck.

A model of the cells (what each successful operation does, and that a failed one changes
nothing or is rolled back) predicts the host after every step of a random run; the run
grows in the long profile (``JAILHOUSE_LONG=1``, tests marked ``slow``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import pytest
from backends import HOST_CPUS, Backend

from jailhouse.config.model import Arch, CellConfig
from jailhouse.errors import DeviceError, JailhouseError
from jailhouse.hypervisor import Hypervisor
from jailhouse.sim import SimHost
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

LONG: Final = os.environ.get("JAILHOUSE_LONG") == "1"
"""Whether the long profile was asked for."""
SEED: Final = int(os.environ.get("JAILHOUSE_FUZZ_SEED", "20250101"))
"""Seed of the random runs."""
ERRNOS: Final = (
    errno.EIO,
    errno.ENOMEM,
    errno.EBUSY,
    errno.EPERM,
    errno.EINVAL,
    errno.EFAULT,
    errno.EINTR,
    errno.E2BIG,
    errno.ENODEV,
)
"""Errnos injected: every one the driver or hypervisor can return on these paths."""
IMAGE: Final = bytes(range(256)) * 4
"""An image for the cells' loadable RAM at guest address 0."""
NAMES: Final = ("one", "two", "three")
"""The cells of the random runs; cell ``NAMES[i]`` takes CPU ``i + 1`` and slot ``i``."""
GREEDY: Final = "greedy"
"""A cell that wants CPUs 2 and 3, so it collides with ``two`` and ``three``."""


class Boom(Exception):  # noqa: N818 - the body of a temporary cell failing on purpose
    """Raised inside a ``temporary_cell`` block."""


# -- the invariants ------------------------------------------------------------------------------


def assert_whole(host: SimHost, hv: Hypervisor | None = None, *, swept: bool = True) -> None:
    """Assert the invariants of the module docstring on a simulated host.

    Args:
        host: The host (its snapshot is the ground truth).
        hv: A hypervisor on the host's device, to compare what sysfs says.
        swept: Also require no scratch entries or temporary files (a killed writer
            leaves some; the next open or change sweeps them, see
            :func:`test_leftovers_of_a_killed_process_are_swept`).
    """
    raw = (host.root / "state.json").read_text(encoding="utf-8")
    json.loads(raw)  # not truncated
    snap = host.snapshot()
    cpus = frozenset(range(host.cpus or 0))
    if snap.enabled:
        root, others = snap.cells[0], snap.cells[1:]
        held = [c.cpus for c in others]
        assert sum(len(c) for c in held) == len(frozenset().union(*held)), f"shared CPU: {snap}"
        assert root.cpus == cpus - frozenset().union(*held), f"root lacks free CPUs: {snap}"
        for cell in others:
            assert cell.cpus, f"a cell without CPUs: {snap}"
            assert cell.state in (CellState.SHUT_DOWN, CellState.RUNNING, CellState.FAILED), snap
    else:
        assert snap.cells == ()
    if swept:
        assert not _leftovers(host.root), "half-built sysfs or temporary files left over"
    if hv is not None:
        seen = [(c.id, c.name, c.state, c.cpus_assigned, c.cpus_failed) for c in hv.cells()]
        expected = sorted((c.id, c.name, c.state, c.cpus, c.failed_cpus) for c in snap.cells)
        assert seen == expected, f"sysfs says {seen}, the driver has {expected}"
        assert hv.enabled() == snap.enabled


def _leftovers(root: Path) -> list[Path]:
    """Return what a writer leaves only while it works: scratch entries, temporary files."""
    scratch = root / ".scratch"
    found = list(scratch.iterdir()) if scratch.exists() else []
    return found + list(root.glob(".*.tmp"))


def pending_faults(host: SimHost) -> list[object]:
    """Return the injected faults not used yet (the simulator's own record)."""
    return list(host._read_state().faults)


# -- a model of the cells -------------------------------------------------------------------------


@dataclass
class Model:
    """What the cells should be: name -> (state, images)."""

    cells: dict[str, tuple[CellState, tuple[tuple[int, int], ...]]] = field(default_factory=dict)
    cpus: dict[str, frozenset[int]] = field(default_factory=dict)

    def free(self, cpus: frozenset[int]) -> bool:
        """Tell whether no modelled cell holds any of these CPUs."""
        return not any(cpus & self.cpus[name] for name in self.cells)

    def check(self, host: SimHost, step: str) -> None:
        """Compare the host with the model."""
        snap = host.snapshot()
        seen = {c.name: (c.state, c.images) for c in snap.cells[1:]}
        assert seen == self.cells, f"after {step}: host {seen}, model {self.cells}"


def configs(backend: Backend) -> dict[str, CellConfig]:
    """Return the configs of the random runs' cells."""
    out = {name: backend.cell(name, frozenset({i + 1}), slot=i) for i, name in enumerate(NAMES)}
    out[GREEDY] = backend.cell(GREEDY, frozenset({2, 3}), slot=3)
    return out


LOADED: Final = ((0, len(IMAGE)),)


@dataclass
class Step:
    """One operation of a random run, and the faults to inject before it."""

    op: str
    name: str
    faults: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        """Render as ``run three (faults: start EIO)``."""
        faults = ", ".join(f"{op} {errno.errorcode[e]}" for op, e in self.faults)
        return f"{self.op} {self.name}" + (f" (faults: {faults})" if faults else "")


def plan(rng: random.Random, model: Model, cfgs: dict[str, CellConfig]) -> Step:
    """Draw the next operation; inject faults only where the operation will reach them."""
    op = rng.choice(("create", "load", "start", "shutdown", "destroy", "run", "run", "temp"))
    name = rng.choice((*NAMES, *NAMES, GREEDY))
    exists = name in model.cells
    makes = not exists and model.free(cfgs[name].cpus)
    if rng.random() < 0.6:
        return Step(op, name)
    err = rng.choice(ERRNOS)
    if op == "create" and makes:
        return Step(op, name, (("create", err),))
    if op in ("load", "shutdown") and exists:
        return Step(op, name, (("load", err),))
    if op in ("start", "destroy") and exists:
        return Step(op, name, ((op, err),))
    if op in ("run", "temp") and makes:
        at = rng.choice(
            ("create", "load", "start", "destroy") if op == "temp" else ("create", "load", "start")
        )
        faults = [(at, err)]
        if at in ("load", "start") and rng.random() < 0.3:
            faults.append(("destroy", rng.choice(ERRNOS)))  # the rollback fails too
        return Step(op, name, tuple(faults))
    return Step(op, name)


def execute(step: Step, hv: Hypervisor, cfgs: dict[str, CellConfig]) -> BaseException | None:
    """Run one step through the API; return the exception it raised, if any."""
    images = [(IMAGE, 0)]
    try:
        if step.op == "create":
            hv.create_cell(cfgs[step.name])
        elif step.op == "load":
            hv.cell(step.name).load(images)
        elif step.op == "start":
            hv.cell(step.name).start()
        elif step.op == "shutdown":
            hv.cell(step.name).shutdown()
        elif step.op == "destroy":
            hv.cell(step.name).destroy()
        elif step.op == "run":
            hv.run_cell(cfgs[step.name], images)
        else:
            with hv.temporary_cell(cfgs[step.name], images):
                _fail(step.name)
    except (JailhouseError, Boom) as exc:
        return exc
    return None


def _fail(name: str) -> None:
    raise Boom(name)


def predict(
    step: Step, model: Model, cfgs: dict[str, CellConfig], exc: BaseException | None
) -> None:
    """Check the step's outcome against the model and move the model on."""
    name, faults = step.name, dict(step.faults)
    exists = name in model.cells
    makes = not exists and model.free(cfgs[name].cpus)
    injected = step.faults[0][1] if step.faults else None
    if step.op == "temp":
        assert isinstance(exc, Boom | DeviceError), f"{step}: {exc!r}"
        if isinstance(exc, Boom):
            assert makes, f"{step}: the body ran although the cell cannot be made"
            if "destroy" in faults:  # the cleanup failed: noted, the cell stays
                assert any("rollback" in n for n in getattr(exc, "__notes__", ())), step
                model.cells[name] = (CellState.RUNNING, LOADED)
                model.cpus[name] = cfgs[name].cpus
            return
        _expect_device_error(step, exc, injected if makes else None)
        _after_failed_run(step, model, cfgs, faults)
        return
    if step.op in ("create", "run"):
        if not makes:
            assert isinstance(exc, DeviceError), f"{step}: {exc!r}"
            return
        if faults:
            _expect_device_error(step, exc, injected)
            if step.op == "run":
                _after_failed_run(step, model, cfgs, faults)
            return
        assert exc is None, f"{step}: {exc!r}"
        model.cpus[name] = cfgs[name].cpus
        model.cells[name] = (
            (CellState.SHUT_DOWN, ()) if step.op == "create" else (CellState.RUNNING, LOADED)
        )
        return
    if not exists:
        assert isinstance(exc, DeviceError), f"{step}: {exc!r}"
        assert exc.errno == errno.ENOENT, f"{step}: {exc!r}"
        return
    if faults:
        _expect_device_error(step, exc, injected)
        return  # a failed load, start or destroy changes nothing
    assert exc is None, f"{step}: {exc!r}"
    state, images = model.cells[name]
    if step.op == "load":
        model.cells[name] = (CellState.SHUT_DOWN, LOADED)
    elif step.op == "shutdown":
        model.cells[name] = (CellState.SHUT_DOWN, ())
    elif step.op == "start":
        model.cells[name] = (CellState.RUNNING, images)
    else:
        del model.cells[name], model.cpus[name]
    del state


def _expect_device_error(step: Step, exc: BaseException | None, err: int | None) -> None:
    assert isinstance(exc, DeviceError), f"{step}: {exc!r}"
    text = str(exc)
    assert text, step
    assert "\n" not in text, f"{step}: {text!r}"
    if err is not None:
        assert exc.errno == err, f"{step}: errno {exc.errno}, injected {err}"


def _after_failed_run(
    step: Step, model: Model, cfgs: dict[str, CellConfig], faults: dict[str, int]
) -> None:
    """A failed run_cell is rolled back, unless the rollback's destroy failed too."""
    if "destroy" not in faults or "create" in faults:
        return
    # The cell stays, as the failing step left it: a failed load changes nothing, a failed
    # start leaves it loaded and shut down.
    loaded = "start" in faults
    model.cells[step.name] = (CellState.SHUT_DOWN, LOADED if loaded else ())
    model.cpus[step.name] = cfgs[step.name].cpus


def random_run(backend: Backend, steps: int, seed: int) -> dict[str, int]:
    """Run random steps with random faults; check the model and the invariants after each."""
    hv, host = backend.hv, backend.host
    hv.enable(backend.system())
    cfgs = configs(backend)
    model = Model()
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    counts: dict[str, int] = {}
    for index in range(steps):
        step = plan(rng, model, cfgs)
        for op, err in step.faults:
            host.inject_fault(op, err)
        exc = execute(step, hv, cfgs)
        where = f"step {index} of seed {seed}: {step}"
        try:
            predict(step, model, cfgs, exc)
            assert pending_faults(host) == [], "an injected fault was not reached"
            model.check(host, str(step))
            assert_whole(host, hv)
        except AssertionError as failure:
            raise AssertionError(f"{where}: {failure}") from failure
        outcome = "ok" if exc is None else "faulted" if step.faults else type(exc).__name__
        counts[outcome] = counts.get(outcome, 0) + 1
    hv.disable()
    assert_whole(host, hv)
    return counts


@pytest.mark.slow
def test_random_operations_with_faults(backend: Backend) -> None:
    """120 random steps (long: 2,000) with faults injected: each outcome is the model's."""
    counts = random_run(backend, 2_000 if LONG else 120, SEED)
    assert counts.get("faulted", 0) > 10
    assert counts.get("ok", 0) > 10


# -- each step, systematically -----------------------------------------------------------------


@pytest.mark.parametrize("step", ["create", "load", "start"])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOMEM, errno.EBUSY, errno.EPERM])
def test_fault_at_each_step_of_run_cell(enabled: Backend, step: str, err: int) -> None:
    """A fault at any step of run_cell: the error names it; the cells around are untouched."""
    hv, host = enabled.hv, enabled.host
    running = hv.run_cell(enabled.cell("running", frozenset({1}), slot=1), [(IMAGE, 0)])
    parked = hv.create_cell(enabled.cell("parked", frozenset({2}), slot=2))
    before = {c.name: (c.state, c.images, c.cpus) for c in host.snapshot().cells}
    host.inject_fault(step, err)
    with pytest.raises(DeviceError) as info:
        hv.run_cell(enabled.cell("doomed", frozenset({3}), slot=3), [(IMAGE, 0)])
    assert info.value.errno == err
    assert "\n" not in str(info.value)
    assert info.value.cell == "doomed"
    after = {c.name: (c.state, c.images, c.cpus) for c in host.snapshot().cells}
    assert after == before
    assert_whole(host, hv)
    assert pending_faults(host) == []
    running.destroy()
    parked.destroy()
    assert_whole(host, hv)


def test_fault_on_enable(backend: Backend) -> None:
    """A failed enable leaves the hypervisor disabled, with no cells, and a retry works."""
    backend.host.inject_fault("enable", errno.ENOMEM)
    with pytest.raises(DeviceError) as info:
        backend.hv.enable(backend.system())
    assert info.value.errno == errno.ENOMEM
    assert_whole(backend.host, backend.hv)
    assert not backend.snapshot().enabled
    backend.hv.enable(backend.system())
    assert_whole(backend.host, backend.hv)


def test_fault_on_disable(enabled: Backend) -> None:
    """A failed disable has destroyed the cells already; the root cell has every CPU back."""
    enabled.hv.run_cell(enabled.cell("one", frozenset({1}), slot=1), [(IMAGE, 0)])
    enabled.hv.create_cell(enabled.cell("two", frozenset({2, 3}), slot=2))
    enabled.host.inject_fault("disable", errno.EIO)
    with pytest.raises(DeviceError) as info:
        enabled.hv.disable()
    assert info.value.errno == errno.EIO
    snap = enabled.snapshot()
    assert snap.enabled
    assert [c.name for c in snap.cells] == ["root"]
    assert_whole(enabled.host, enabled.hv)
    enabled.hv.disable()
    assert_whole(enabled.host, enabled.hv)


# -- processes killed in the middle -------------------------------------------------------------


def _kill_rounds(
    rounds: int, seed: int, child: Callable[[int], None], after: Callable[[int], None]
) -> int:
    """Fork ``child(round)`` and SIGKILL it after a random moment; then call ``after``.

    Returns:
        How many children were killed before they finished on their own.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    killed = 0
    for index in range(rounds):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(index)
            except BaseException:  # noqa: BLE001 - a child only reports by exit code
                code = 1
            os._exit(code)
        time.sleep(rng.uniform(0.002, 0.06))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            killed += 1
        else:
            assert os.WEXITSTATUS(status) == 0, f"round {index}: the child failed on its own"
        after(index)
    return killed


def _churn(root: Path, index: int) -> None:
    """Create, load, start and destroy cells in a loop until killed."""
    host = SimHost(root)
    with Hypervisor(host.device()) as hv:
        for turn in range(1000):
            name = NAMES[(index + turn) % len(NAMES)]
            cpus = frozenset({NAMES.index(name) + 1})
            with contextlib.suppress(JailhouseError):
                hv.run_cell(_cell(name, cpus), [(IMAGE, 0)])
            with contextlib.suppress(JailhouseError):
                hv.cell(NAMES[(index + turn + 1) % len(NAMES)]).destroy()


def _cell(name: str, cpus: frozenset[int]) -> CellConfig:
    from backends import cell_config

    return cell_config(Arch.ARM64, name, cpus, slot=NAMES.index(name))


@pytest.mark.slow
def test_killed_while_driving_a_simulated_host(tmp_path: Path) -> None:
    """A process killed at random during cell operations never leaves the host broken."""
    from backends import system_config

    root = tmp_path / "host"
    host = SimHost(root, arch=Arch.ARM64, cpus=HOST_CPUS)
    host.enable(system_config(Arch.ARM64).to_bytes())

    def after(_index: int) -> None:
        reopened = SimHost(root)  # takes the lock: a dead holder released it
        with Hypervisor(reopened.device()) as hv:
            assert_whole(reopened, hv, swept=False)

    killed = _kill_rounds(200 if LONG else 20, SEED, lambda i: _churn(root, i), after)
    assert killed > 0


def test_leftovers_of_a_killed_process_are_swept(tmp_path: Path) -> None:
    """After kills, reopening the host and one operation leave no scratch or temporary files."""
    from backends import system_config

    root = tmp_path / "host"
    host = SimHost(root, arch=Arch.ARM64, cpus=HOST_CPUS)
    host.enable(system_config(Arch.ARM64).to_bytes())
    killed = _kill_rounds(20, SEED + 2, lambda i: _churn(root, i), lambda _i: None)
    assert killed > 0
    reopened = SimHost(root)
    with Hypervisor(reopened.device()) as hv:
        for status in hv.cells()[1:]:
            hv.cell(status.id).destroy()
        hv.run_cell(_cell("one", frozenset({1})), [(IMAGE, 0)]).destroy()
    assert _leftovers(root) == []


def test_quick_listing_after_a_killed_writer_is_right_or_steps_aside(tmp_path: Path) -> None:
    """After a writer is killed at random, the quick ``cell list`` never shows a stale tree.

    It reads ``sys/`` without opening the host; what it shows must be what ``state.json``
    holds, or it must step aside (the pending mark of the dead writer) for the full path.
    """
    from backends import system_config

    from jailhouse._listing import read_sim_cells

    root = tmp_path / "host"
    host = SimHost(root, arch=Arch.ARM64, cpus=HOST_CPUS)
    host.enable(system_config(Arch.ARM64).to_bytes())
    outcomes: list[bool] = []

    def after(_index: int) -> None:
        quick = read_sim_cells(str(root))  # before anything repairs the tree
        outcomes.append(quick is not None)
        truth = host.snapshot()  # state.json, read under the lock without a repair
        if quick is not None:
            expected = sorted(
                (c.id, c.name, c.state.text, c.cpus, c.failed_cpus) for c in truth.cells
            )
            assert quick == expected
        SimHost(root)  # the full path's open: repairs the tree, clears the mark

    killed = _kill_rounds(20, SEED + 3, lambda i: _churn(root, i), after)
    assert killed > 0
    assert any(outcomes), "the quick path never read the tree"
    assert read_sim_cells(str(root)) is not None


@pytest.mark.slow
def test_killed_while_writing_definitions(tmp_path: Path) -> None:
    """A process killed at random while it rewrites definitions never leaves one truncated."""
    from jailhouse.examples import example_cells
    from jailhouse.store import Definition, DefinitionStore

    demo = example_cells("x86")["x86-demo"]
    uuids = [f"00000000-0000-4000-8000-{i:012x}" for i in range(4)]
    root = tmp_path / "store"
    filler = "<!-- x -->" * 20_000  # large: a write takes a while, so kills land inside one
    whole = re.compile(rf"<domain type='kvm'><name>v[0-9]+</name>{re.escape(filler)}</domain>")

    def child(index: int) -> None:
        store = DefinitionStore(root)
        for turn in range(10_000):
            slot = turn % len(uuids)
            xml = f"<domain type='kvm'><name>v{index * 10_000 + turn}</name>{filler}</domain>"
            store.put(Definition(uuid=uuids[slot], xml=xml, config=demo.replace(name=f"c{slot}")))

    def after(_index: int) -> None:
        definitions = DefinitionStore(root).definitions()  # StoreError on a truncated file
        for definition in definitions:
            assert whole.fullmatch(definition.xml), "a definition holds a cut-off text"
        for path in (root / "defined").iterdir():
            if not path.name.startswith("."):
                json.loads(path.read_text(encoding="utf-8"))

    killed = _kill_rounds(200 if LONG else 20, SEED + 1, child, after)
    assert killed > 0
    with DefinitionStore(root).locked():  # the lock is free, and leftovers are swept
        pass
    assert not [p for p in (root / "defined").iterdir() if p.name.startswith(".")]
