"""Backends for lifecycle and error-path tests: write a test once, run it on every backend.

A *backend* is a :class:`~jailhouse.hypervisor.Hypervisor` on some device, plus the
:class:`~jailhouse.sim.SimHost` behind that device, whose controls (``script_cell``,
``inject_fault``, ``tick``, ``set_cpu_online``, ``snapshot``) set up the situation a
test needs and check the outcome.  Tests take the :func:`backend` fixture (or
:func:`enabled`, the same with the hypervisor enabled) and never look at which device
is underneath, so a new backend runs every one of them.

Backends today:

- ``sim``: the simulator's :class:`~jailhouse.sim.FakeDevice`, in process.
- ``fuse``: the unchanged kernel backend (:class:`~jailhouse.device.KernelDevice`, opened
  by ``jailhouse.open("jailhouse:///system?device=...&console=...&sysfs=...")``) on a
  FUSE-mocked ``/dev/jailhouse`` (:class:`jailhouse.testing.FuseDevice`) serving the same
  kind of simulated host from another process, so every ioctl and console read goes
  through the kernel.  Marked ``fuse``; skipped, with the reason, where ``/dev/fuse`` or
  ``fusermount3`` is missing or the tests do not run as root.

A new backend adds a factory to :data:`BACKENDS`: a context manager that takes
``(root, arch, cpus)``, starts its device around a ``SimHost(root, arch=arch, cpus=cpus)``,
yields a :class:`Backend`, and tears everything down on exit; plus the marks it needs.

Each backend runs on an arm64 and an x86 host with 4 CPUs (test ids such as
``sim-arm64``).  Test cells use CPUs 1-3 only: x86 cannot give CPU 0 away.

Wiring: the tests run with ``--import-mode=importlib``, so this file is not importable
by default; ``pyproject.toml`` puts ``tests/`` on ``sys.path``
(``pythonpath = ["tests"]``) and loads this module as a plugin (``-p backends`` in
``addopts``), which makes its fixtures visible to every test file.  Test files import
the helpers they call (``from backends import Backend, cell_config``) the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias

import pytest

from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CellConfig,
    CellFlag,
    MemFlag,
    MemoryRegion,
    PlatformInfo,
    SystemConfig,
    SystemFlag,
    X86Platform,
)
from jailhouse.hypervisor import Hypervisor
from jailhouse.sim import SimHost

if TYPE_CHECKING:
    from _pytest.mark.structures import MarkDecorator

    from jailhouse.device import Device
    from jailhouse.sim import HostSnapshot

__all__ = [
    "ARCHES",
    "BACKENDS",
    "CELL_RAM",
    "HOST_CPUS",
    "Backend",
    "BackendFactory",
    "backend",
    "cell_config",
    "enabled",
    "system_config",
]

HOST_CPUS: Final = 4
"""CPUs of every backend's host."""
ARCHES: Final = (Arch.ARM64, Arch.X86)
"""Host architectures every backend runs on."""
CELL_RAM: Final = 0x0
"""Guest address of a test cell's loadable RAM (64 KiB)."""
_CELL_RAM_SIZE: Final = 0x10000
_RAM_FLAGS: Final = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA | MemFlag.LOADABLE


def system_config(
    arch: Arch,
    cpus: frozenset[int] | None = None,
    *,
    console: bool = True,
    name: str = "root",
) -> SystemConfig:
    """Build a system config that a simulated host of ``arch`` accepts.

    Args:
        arch: The architecture.
        cpus: The root cell's CPUs; all of the host's by default.
        console: Set ``VIRTUAL_DEBUG_CONSOLE``, so the root cell may read the console.
        name: The root cell's name.
    """
    root = CellConfig(
        name=name,
        arch=arch,
        cpus=frozenset(range(HOST_CPUS)) if cpus is None else cpus,
        mem_regions=(MemoryRegion(0x0, 0x0, 0x3A000000, _RAM_FLAGS & ~MemFlag.LOADABLE),),
    )
    platform = PlatformInfo(
        arch_info=ArmPlatform(gic_version=3) if arch != Arch.X86 else X86Platform()
    )
    return SystemConfig(
        arch=arch,
        hypervisor_memory=MemoryRegion(0x3F000000, 0x3F000000, 0x600000),
        root_cell=root,
        flags=SystemFlag.VIRTUAL_DEBUG_CONSOLE if console else SystemFlag(0),
        platform=platform,
    )


def cell_config(
    arch: Arch,
    name: str = "inmate",
    cpus: frozenset[int] = frozenset({3}),
    *,
    console: bool = False,
    slot: int = 0,
) -> CellConfig:
    """Build a non-root cell config with 64 KiB of loadable RAM at :data:`CELL_RAM`.

    Args:
        arch: The architecture.
        name: The cell name.
        cpus: The cell's CPUs.
        console: Let the cell write to the hypervisor console.
        slot: Which physical memory to use, so several cells do not overlap.
    """
    phys = 0x3B000000 + slot * 0x100000
    return CellConfig(
        name=name,
        arch=arch,
        cpus=cpus,
        flags=CellFlag.VIRTUAL_CONSOLE_PERMITTED if console else CellFlag(0),
        mem_regions=(
            MemoryRegion(phys, CELL_RAM, _CELL_RAM_SIZE, _RAM_FLAGS),
            MemoryRegion(
                phys + _CELL_RAM_SIZE,
                0x80000000,
                0x1000,
                MemFlag.READ | MemFlag.WRITE | MemFlag.COMM_REGION,
            ),
        ),
    )


@dataclass
class Backend:
    """A hypervisor on one backend's device, and the simulated host behind it.

    Attributes:
        name: The backend's name (``sim`` ...).
        hv: The hypervisor under test.
        host: The simulated host: controls and ground truth.
        arch: The host's architecture.
        open_device: Opens another file of the same device (a fresh console position,
            as a new ``open()`` of ``/dev/jailhouse`` has); the caller closes it.
        uri: The URI that opens this backend's device again (``jailhouse.open``).
    """

    name: str
    hv: Hypervisor
    host: SimHost
    arch: Arch
    open_device: Callable[[], Device]
    uri: str = ""

    def system(self, cpus: frozenset[int] | None = None, *, console: bool = True) -> SystemConfig:
        """Return a system config for this host (see :func:`system_config`)."""
        return system_config(self.arch, cpus, console=console)

    def cell(
        self,
        name: str = "inmate",
        cpus: frozenset[int] = frozenset({3}),
        *,
        console: bool = False,
        slot: int = 0,
    ) -> CellConfig:
        """Return a cell config for this host (see :func:`cell_config`)."""
        return cell_config(self.arch, name, cpus, console=console, slot=slot)

    def snapshot(self) -> HostSnapshot:
        """Return the simulated host's state."""
        return self.host.snapshot()


BackendFactory: TypeAlias = Callable[[Path, Arch, int], AbstractContextManager[Backend]]
"""Makes a backend: takes the host root, its arch and its CPU count; a context manager."""


@contextmanager
def _sim_backend(root: Path, arch: Arch, cpus: int) -> Iterator[Backend]:
    """Run the hypervisor on the simulator's in-process FakeDevice."""
    host = SimHost(root, arch=arch, cpus=cpus)
    with Hypervisor(host.device()) as hv:
        yield Backend("sim", hv, host, arch, host.device, f"sim://{root}")


@contextmanager
def _fuse_backend(root: Path, arch: Arch, cpus: int) -> Iterator[Backend]:
    """Run the unchanged kernel backend on a FUSE-mocked device (another process)."""
    import jailhouse
    from jailhouse.testing import FuseDevice, fuse_unavailable

    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(f"FUSE backend: {reason}")
    host = SimHost(root, arch=arch, cpus=cpus)
    with FuseDevice(root, root.parent / "mnt") as fuse, jailhouse.open(fuse.uri) as hv:
        yield Backend("fuse", hv, host, arch, fuse.open_device, fuse.uri)


BACKENDS: dict[str, tuple[BackendFactory, tuple[MarkDecorator, ...]]] = {
    "sim": (_sim_backend, ()),
    "fuse": (_fuse_backend, (pytest.mark.fuse,)),
}
"""Backend name -> (factory, marks).  A factory takes the host root, arch and CPU count."""


@pytest.fixture(
    params=[
        pytest.param((name, arch), marks=marks, id=f"{name}-{arch.name.lower()}")
        for name, (_factory, marks) in BACKENDS.items()
        for arch in ARCHES
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Yield a fresh backend on a disabled 4-CPU host; it is closed afterwards."""
    name, arch = request.param
    factory = BACKENDS[name][0]
    with factory(tmp_path / "host", arch, HOST_CPUS) as value:
        yield value


@pytest.fixture
def enabled(backend: Backend) -> Backend:
    """Return the backend with the hypervisor enabled on every CPU."""
    backend.hv.enable(backend.system())
    return backend
