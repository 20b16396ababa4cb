"""Several processes drive one simulated host: every update lands, none is lost.

Four processes (``fork``) share one host directory, each through its own
:class:`~jailhouse.sim.SimHost` and :class:`~jailhouse.sim.FakeDevice`.  Each runs 50
operations: it cycles its own cell through create, load, start, tick and destroy, and all
of them race to create one shared cell.  The final state must be exactly what the
successful operations imply, and the root CPU that never moves must carry the exit
counts of every tick, as a host that ran the same ticks alone does.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
from typing import TYPE_CHECKING

from jailhouse import _abi
from jailhouse.config.model import Arch, CellConfig
from jailhouse.examples import example_cells, example_system
from jailhouse.sim import FakeDevice, SimHost

if TYPE_CHECKING:
    from pathlib import Path

WORKERS = 4
ROUNDS = 10  # five operations a round: 50 per worker
CPUS = WORKERS + 1  # CPU 0 stays with the root cell; worker n borrows CPU n + 1


def worker_cell(index: int) -> CellConfig:
    """Worker ``index``'s cell: the arm64 demo cell on its own CPU."""
    demo = example_cells("arm64")["arm64-demo"]
    return demo.replace(name=f"worker-{index}", cpus=frozenset({index + 1}))


def shared_cell() -> CellConfig:
    """The cell every worker tries to create; it takes no CPU."""
    return example_cells("arm64")["arm64-demo"].replace(name="shared", cpus=frozenset())


def work(root: str, index: int, out: str) -> None:
    """Run one worker's 50 operations and record what each returned."""
    host = SimHost(root)
    results: dict[str, list[int]] = {"create": [], "load": [], "start": [], "destroy": []}
    ticks = 0
    with FakeDevice(host) as dev:
        shared = _abi.cell_create_arg(shared_cell().to_bytes())
        results["shared"] = [dev.ioctl(_abi.CELL_CREATE, shared.address)]
        own = _abi.cell_create_arg(worker_cell(index).to_bytes())
        name = f"worker-{index}"
        for _ in range(ROUNDS):
            results["create"].append(dev.ioctl(_abi.CELL_CREATE, own.address))
            load = _abi.cell_load_arg(name=name, images=[(b"\x00" * 256, 0x0)])
            results["load"].append(dev.ioctl(_abi.CELL_LOAD, load.address))
            results["start"].append(dev.ioctl(_abi.CELL_START, _abi.cell_id_arg(name=name).address))
            host.tick(1)
            ticks += 1
            results["destroy"].append(
                dev.ioctl(_abi.CELL_DESTROY, _abi.cell_id_arg(name=name).address)
            )
    with open(out, "w", encoding="utf-8") as f:  # noqa: PTH123 - a path string from the parent
        json.dump({"results": results, "ticks": ticks}, f)


def root_cpu0_counters(host: SimHost) -> dict[str, int]:
    """Read the exit counters of CPU 0, which never leaves the root cell."""
    directory = host.sysfs_root / "devices/jailhouse/cells/0/statistics/cpu0"
    return {p.name: int(p.read_text()) for p in directory.iterdir()}


def test_four_processes_lose_no_update(tmp_path: Path) -> None:
    """Four processes x 50 operations on one host: the final state is what they imply."""
    system = example_system("arm64")
    system = system.replace(root_cell=system.root_cell.replace(cpus=frozenset(range(CPUS))))
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=CPUS)
    host.enable(system.to_bytes())

    ctx = multiprocessing.get_context("fork")
    outs = [str(tmp_path / f"worker-{i}.json") for i in range(WORKERS)]
    procs = [ctx.Process(target=work, args=(str(host.root), i, outs[i])) for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    reports = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(WORKERS)]

    # Exactly one process created the shared cell; the others found it there.
    shared = sorted(r["results"]["shared"][0] for r in reports)
    assert shared == [-errno.EEXIST] * (WORKERS - 1) + [0]
    # Nobody locks a cell, and each worker's cell and CPU are its own: every op succeeds.
    for report in reports:
        for op in ("create", "load", "start", "destroy"):
            assert report["results"][op] == [0] * ROUNDS, (op, report["results"][op])

    snap = host.snapshot()
    assert [(c.id, c.name, c.cpus) for c in snap.cells] == [
        (0, "arm64-root", frozenset(range(CPUS))),
        (1, "shared", frozenset()),
    ]
    assert snap.online == frozenset(range(CPUS))
    online = (host.sysfs_root / "devices/system/cpu/online").read_text()
    assert online == f"0-{CPUS - 1}\n"
    cells_dir = host.sysfs_root / "devices/jailhouse/cells"
    assert sorted(p.name for p in cells_dir.iterdir()) == ["0", "1"]
    scratch = host.root / ".scratch"  # where cell directories are built and discarded
    assert not scratch.exists() or not list(scratch.iterdir())

    # CPU 0 ran through every tick of every worker: compare with a host that ran them alone.
    reference = SimHost(tmp_path / "reference", arch=Arch.ARM64, cpus=CPUS)
    reference.enable(system.to_bytes())
    reference.tick(sum(r["ticks"] for r in reports))
    assert root_cpu0_counters(host) == root_cpu0_counters(reference)
