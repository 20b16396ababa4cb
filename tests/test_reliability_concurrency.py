"""Reliability: eight processes hammer one simulated host; nothing is lost.

Eight processes (``fork``) share one host directory, each through its own
:class:`~jailhouse.sim.SimHost`, and run random operations (60 each in the CI profile,
500 in the long one, ``JAILHOUSE_LONG=1``):

- on a cell of its own, on a CPU of its own: create, load, start, shut down, destroy;
- on two shared cells without CPUs: create and destroy, racing the others (losers get
  EEXIST or ENOENT);
- on a "floater" cell of its own that wants CPU 9, which every process's floater wants
  (losers get EBUSY);
- ticks, which every running CPU counts.

Afterwards the host must equal a replay of the successful operations on a fresh host:
each process's own-cell operations replayed alone give the same outcome, one by one, and
the same final cell; each shared cell exists exactly when its successful creates
outnumber its successful destroys (by one, never more); at no moment did two floaters
certainly hold CPU 9 at once (judged from the monotonic clock around each call, which all
processes share); and CPU 0, which never leaves the root cell, counted every tick.
The operations are raw ioctls naming the cell, so each outcome is exactly the driver's.

Meanwhile, readers in more processes go through the :class:`~jailhouse.Hypervisor` API
(``cells()``, ``cell(name)``), which reads sysfs while the writers change it.
"""

from __future__ import annotations

import errno
import itertools
import json
import multiprocessing
import multiprocessing.synchronize
import os
import random
import time
from typing import TYPE_CHECKING, Final

import pytest
from backends import cell_config, system_config

from jailhouse import _abi
from jailhouse.config.model import Arch, CellConfig
from jailhouse.hypervisor import Hypervisor
from jailhouse.sim import FakeDevice, SimHost

if TYPE_CHECKING:
    from pathlib import Path

LONG: Final = os.environ.get("JAILHOUSE_LONG") == "1"
"""Whether the long profile was asked for."""
SEED: Final = int(os.environ.get("JAILHOUSE_FUZZ_SEED", "20250101"))
"""Seed of the workers' random choices."""
WORKERS: Final = 8
OPS: Final = 500 if LONG else 60
"""Operations per worker."""
FLOAT_CPU: Final = WORKERS + 1
"""The CPU every worker's floater cell wants."""
CPUS: Final = WORKERS + 2
"""CPU 0 stays with the root cell, worker n owns CPU n + 1, and one CPU is contested."""
SHARED: Final = ("shared0", "shared1")
IMAGE: Final = bytes(range(256))
OWN_OPS: Final = ("create", "load", "start", "shutdown", "destroy")


def own_cell(index: int) -> CellConfig:
    """Worker ``index``'s own cell, on CPU ``index + 1``."""
    return cell_config(Arch.ARM64, f"own{index}", frozenset({index + 1}), slot=index)


def floater(index: int) -> CellConfig:
    """Worker ``index``'s floater, on the contested CPU."""
    return cell_config(Arch.ARM64, f"float{index}", frozenset({FLOAT_CPU}), slot=WORKERS + index)


def shared_cell(name: str) -> CellConfig:
    """A shared cell, without CPUs."""
    return cell_config(Arch.ARM64, name, frozenset(), slot=2 * WORKERS + SHARED.index(name))


def own_op(dev: FakeDevice, index: int, op: str) -> int:
    """Run one own-cell operation by raw ioctl, the cell named; return 0 or the errno."""
    name = f"own{index}"
    if op == "create":
        arg = _abi.cell_create_arg(own_cell(index).to_bytes())
        rv = dev.ioctl(_abi.CELL_CREATE, arg.address)
    elif op == "load":
        arg = _abi.cell_load_arg(name=name, images=[(IMAGE, 0)])
        rv = dev.ioctl(_abi.CELL_LOAD, arg.address)
    elif op == "shutdown":  # a load without images
        arg = _abi.cell_load_arg(name=name)
        rv = dev.ioctl(_abi.CELL_LOAD, arg.address)
    else:
        request = _abi.CELL_START if op == "start" else _abi.CELL_DESTROY
        arg = _abi.cell_id_arg(name=name)
        rv = dev.ioctl(request, arg.address)
    return -rv if rv < 0 else rv


def raw_op(dev: FakeDevice, op: str, config: CellConfig) -> int:
    """Create or destroy a cell by raw ioctl; return 0 or the errno."""
    if op == "create":
        arg = _abi.cell_create_arg(config.to_bytes())
        rv = dev.ioctl(_abi.CELL_CREATE, arg.address)
    else:
        arg = _abi.cell_id_arg(name=config.name)
        rv = dev.ioctl(_abi.CELL_DESTROY, arg.address)
    return -rv if rv < 0 else rv


def work(root: str, index: int, out: str) -> None:
    """Run one worker's random operations and record each outcome and its time."""
    rng = random.Random(SEED * 31 + index)  # noqa: S311 - reproducible, not secret
    host = SimHost(root)
    log: list[dict[str, object]] = []
    with host.device() as dev:
        for _ in range(OPS):
            kind = rng.choice(("own", "own", "own", "shared", "float", "tick"))
            start = time.monotonic_ns()
            if kind == "own":
                target, op = "own", rng.choice(OWN_OPS)
                result = own_op(dev, index, op)
            elif kind == "shared":
                target, op = rng.choice(SHARED), rng.choice(("create", "destroy"))
                result = raw_op(dev, op, shared_cell(target))
            elif kind == "float":
                target, op = "float", rng.choice(("create", "destroy"))
                result = raw_op(dev, op, floater(index))
            else:
                target, op, result = "tick", "tick", 0
                host.tick(1)
            log.append(
                {"target": target, "op": op, "result": result,
                 "start": start, "end": time.monotonic_ns()}
            )  # fmt: skip
    with open(out, "w", encoding="utf-8") as f:  # noqa: PTH123 - a path string from the parent
        json.dump(log, f)


def cpu0_counters(host: SimHost) -> dict[str, int]:
    """Read the exit counters of CPU 0, which never leaves the root cell."""
    directory = host.sysfs_root / "devices/jailhouse/cells/0/statistics/cpu0"
    return {p.name: int(p.read_text()) for p in directory.iterdir()}


def cells_of(host: SimHost) -> set[tuple[str, str, frozenset[int], tuple[tuple[int, int], ...]]]:
    """Return the non-root cells as (name, state, CPUs, images), without their ids."""
    return {(c.name, c.state.text, c.cpus, c.images) for c in host.snapshot().cells[1:]}


@pytest.mark.slow
def test_eight_processes_lose_nothing(tmp_path: Path) -> None:
    """8 processes x 60 random operations (long: 500): the host equals their replay."""
    system = system_config(Arch.ARM64, frozenset(range(CPUS)))
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=CPUS)
    host.enable(system.to_bytes())

    ctx = multiprocessing.get_context("fork")
    outs = [str(tmp_path / f"worker-{i}.json") for i in range(WORKERS)]
    procs = [ctx.Process(target=work, args=(str(host.root), i, outs[i])) for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
        assert proc.exitcode == 0, f"a worker failed (exit code {proc.exitcode})"
    logs = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(WORKERS)]
    final = cells_of(host)

    # The replay, on a fresh host.
    replay = SimHost(tmp_path / "replay", arch=Arch.ARM64, cpus=CPUS)
    replay.enable(system.to_bytes())
    with replay.device() as dev:
        # Own cells: each worker's operations alone give the same outcome, one by one.
        for index, log in enumerate(logs):
            for number, entry in enumerate(e for e in log if e["target"] == "own"):
                again = own_op(dev, index, str(entry["op"]))
                assert again == entry["result"], (
                    f"worker {index}, own operation {number} ({entry['op']}): "
                    f"{entry['result']} concurrently, {again} replayed"
                )
        # Shared cells: created exactly when successful creates outnumber destroys by one.
        for name in SHARED:
            entries = [e for log in logs for e in log if e["target"] == name]
            made = sum(1 for e in entries if e["op"] == "create" and e["result"] == 0)
            gone = sum(1 for e in entries if e["op"] == "destroy" and e["result"] == 0)
            assert made - gone in (0, 1), f"{name}: {made} creates and {gone} destroys succeeded"
            for e in entries:
                lost = errno.EEXIST if e["op"] == "create" else errno.ENOENT
                assert e["result"] in (0, lost), f"{name}: {e}"
            if made - gone:
                assert raw_op(dev, "create", shared_cell(name)) == 0
        # Floaters: never two certainly on the contested CPU at once; the last one stays.
        holders = []
        for index, log in enumerate(logs):
            held_since: int | None = None
            for e in (e for e in log if e["target"] == "float"):
                assert e["result"] in (0, errno.EBUSY, errno.EEXIST, errno.ENOENT), (
                    f"float{index}: {e}"
                )
                if e["result"] != 0:
                    continue
                if e["op"] == "create":
                    held_since = int(e["end"])  # type: ignore[call-overload]
                else:
                    assert held_since is not None, f"float{index} destroyed but never created"
                    holders.append((held_since, int(e["start"]), index))  # type: ignore[call-overload]
                    held_since = None
            if held_since is not None:
                holders.append((held_since, 2**63, index))
                assert raw_op(dev, "create", floater(index)) == 0
        holders.sort()
        for (_, a_end, a), (b_start, _, b) in itertools.pairwise(holders):
            assert b_start >= a_end, f"float{a} and float{b} held CPU {FLOAT_CPU} at once"
        replay.tick(sum(1 for log in logs for e in log if e["target"] == "tick"))

    assert final == cells_of(replay)
    snap, again = host.snapshot(), replay.snapshot()
    assert snap.root_cpus == again.root_cpus
    assert snap.online == again.online  # the CPUs cells hold are offline in Linux
    assert cpu0_counters(host) == cpu0_counters(replay)
    scratch = host.root / ".scratch"
    assert not scratch.exists() or not list(scratch.iterdir())


READERS: Final = 2
WRITERS: Final = 4
WRITER_OPS: Final = 400 if LONG else 30


def churn(root: str, index: int) -> None:
    """Create and destroy a writer's own cell (on its own CPU) by raw ioctl, in a loop."""
    host = SimHost(root)
    with host.device() as dev:
        for turn in range(WRITER_OPS):
            own_op(dev, index, "create" if turn % 2 == 0 else "destroy")


def read_loop(root: str, out: str, stop: multiprocessing.synchronize.Event) -> None:
    """Read the cells through the API until told to stop; record every failure."""
    from jailhouse.errors import CellNotFoundError

    problems: list[str] = []
    reads = 0
    with Hypervisor(SimHost(root).device()) as hv:
        while not stop.is_set() or reads == 0:
            reads += 1
            try:
                cells = hv.cells()
                held = [c.cpus_assigned for c in cells]
                if sum(map(len, held)) != len(frozenset().union(*held)):
                    problems.append(f"a CPU in two cells: {[str(c) for c in cells]}")
                hv.cell(f"own{reads % WRITERS}")
            except CellNotFoundError:
                pass  # documented: the writer destroyed it
            except Exception as exc:  # noqa: BLE001 - every other failure is recorded
                problems.append(f"{type(exc).__name__}: {exc}")
    with open(out, "w", encoding="utf-8") as f:  # noqa: PTH123 - a path string from the parent
        json.dump({"reads": reads, "problems": problems}, f)


@pytest.mark.slow
def test_readers_see_consistent_cells_while_writers_work(tmp_path: Path) -> None:
    """API reads racing 4 writers: every read is consistent or a documented CellNotFoundError."""
    system = system_config(Arch.ARM64, frozenset(range(CPUS)))
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=CPUS)
    host.enable(system.to_bytes())
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    outs = [str(tmp_path / f"reader-{i}.json") for i in range(READERS)]
    readers = [ctx.Process(target=read_loop, args=(str(host.root), o, stop)) for o in outs]
    writers = [ctx.Process(target=churn, args=(str(host.root), i)) for i in range(WRITERS)]
    for proc in readers + writers:
        proc.start()
    for proc in writers:
        proc.join(timeout=600)
        assert proc.exitcode == 0
    stop.set()
    for proc in readers:
        proc.join(timeout=600)
        assert proc.exitcode == 0
    reports = [json.loads((tmp_path / f"reader-{i}.json").read_text()) for i in range(READERS)]
    problems = [p for r in reports for p in r["problems"]]
    assert all(r["reads"] > 0 for r in reports)
    assert problems == [], f"{len(problems)} failed reads, e.g. {problems[:3]}"
