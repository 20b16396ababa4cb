"""Booting Linux in a cell end to end: the library API on every backend."""

from __future__ import annotations

import errno
import json
from typing import TYPE_CHECKING

import pytest
from backends import HOST_CPUS, Backend
from kernels import arm64_image, bzimage

from jailhouse.config.model import Arch, CellConfig, CellFlag, MemFlag, MemoryRegion
from jailhouse.errors import BootError, DeviceError
from jailhouse.linux.fdt import DeviceTree
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from pathlib import Path

_RWXDL = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA | MemFlag.LOADABLE
LINUX_CPUS = frozenset({2, 3})


def linux_cell(arch: Arch, name: str = "linux") -> CellConfig:
    """Return a Linux cell for a backend host: loader RAM at 0, 32 MiB of RAM at 16 MiB."""
    return CellConfig(
        name=name,
        arch=arch,
        cpus=LINUX_CPUS,
        flags=CellFlag.VIRTUAL_CONSOLE_PERMITTED,
        mem_regions=(
            MemoryRegion(0x3B000000, 0x0, 0x100000, _RWXDL),
            MemoryRegion(0x3C000000, 0x1000000, 0x2000000, _RWXDL),
            MemoryRegion(
                0x3B100000, 0x80000000, 0x1000, MemFlag.READ | MemFlag.WRITE | MemFlag.COMM_REGION
            ),
        ),
    )


def tiny_dtb() -> bytes:
    """Return a minimal device tree blob (a root node with its address and size cells)."""
    tree = DeviceTree()
    tree.root.set_u32("#address-cells", 2)
    tree.root.set_u32("#size-cells", 2)
    return tree.to_bytes()


def kernel_for(arch: Arch) -> bytes:
    """Return a tiny valid kernel image for a cell of ``arch``."""
    return arm64_image(0x40000) if arch == Arch.ARM64 else bzimage(0x40000)


def boot_extras(arch: Arch) -> dict[str, bytes]:
    """Return what a boot needs besides the kernel on ``arch`` (arm64: a device tree)."""
    return {"dtb": tiny_dtb()} if arch == Arch.ARM64 else {}


def assert_no_cell_left(backend: Backend) -> None:
    """Assert that only the root cell exists and that it holds every CPU."""
    snap = backend.snapshot()
    assert [c.name for c in snap.cells] == ["root"]
    assert snap.root_cpus == frozenset(range(HOST_CPUS))


def test_boot_linux_runs_the_cell(enabled: Backend) -> None:
    """boot_linux creates, loads the plan's images in one request and starts the cell."""
    cell_config = linux_cell(enabled.arch)
    kernel = kernel_for(enabled.arch)
    extras = boot_extras(enabled.arch)
    plan = enabled.hv.plan_linux(
        cell_config, kernel, b"\x07" * 0x5000, "console=ttyS0 quiet", **extras
    )
    cell = enabled.hv.boot_linux(
        cell_config, kernel, b"\x07" * 0x5000, "console=ttyS0 quiet", **extras
    )
    status = cell.status()
    assert status.state == CellState.RUNNING
    assert status.cpus_assigned == LINUX_CPUS
    snap = enabled.snapshot()
    assert snap.root_cpus == frozenset(range(HOST_CPUS)) - LINUX_CPUS
    assert snap.cell("linux").images == tuple((e.address, e.size) for e in plan.entries)
    assert [e.what for e in plan.entries][:2] == ["loader", "kernel"]
    cell.destroy()
    assert_no_cell_left(enabled)


def test_kernel_from_a_file(enabled: Backend, tmp_path: Path) -> None:
    """Kernel, initrd and device tree may be paths; the cell config too."""
    kernel = tmp_path / "kernel"
    kernel.write_bytes(kernel_for(enabled.arch))
    config = tmp_path / "linux.cell"
    config.write_bytes(linux_cell(enabled.arch).to_bytes())
    extras = {}
    if enabled.arch == Arch.ARM64:
        (tmp_path / "board.dtb").write_bytes(tiny_dtb())
        extras["dtb"] = str(tmp_path / "board.dtb")
    cell = enabled.hv.boot_linux(str(config), kernel, **extras)
    assert cell.status().state == CellState.RUNNING


def bad_kernel(arch: Arch, kind: str) -> bytes:
    """Return a kernel for ``arch`` that is broken in one way."""
    good = kernel_for(arch)
    if kind == "truncated":
        return good[:40]
    if kind == "magic":  # gzip's magic in front, the format's own magic gone
        return b"\x1f\x8b" + bytes(0x300) + good[0x302:]
    if arch == Arch.ARM64:
        return arm64_image(0x1000, image_size=0x4000000)
    return bzimage(0x1000, init_size=0x4000000)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("truncated", {"kernel.size", "kernel.magic"}),
        ("magic", {"kernel.magic"}),
        ("big", {"kernel.image_size", "kernel.init_size"}),
    ],
)
def test_bad_kernels_leave_no_cell(enabled: Backend, kind: str, fields: set[str]) -> None:
    """A truncated, unrecognised or too big kernel is one BootError; no cell is created."""
    kernel = bad_kernel(enabled.arch, kind)
    with pytest.raises(BootError) as info:
        enabled.hv.boot_linux(linux_cell(enabled.arch), kernel, **boot_extras(enabled.arch))
    assert info.value.field in fields
    assert_no_cell_left(enabled)


def test_wrong_arch_kernel_leaves_no_cell(enabled: Backend) -> None:
    """The other architecture's kernel is refused naming kernel.arch."""
    other = bzimage() if enabled.arch == Arch.ARM64 else arm64_image()
    with pytest.raises(BootError) as info:
        enabled.hv.boot_linux(linux_cell(enabled.arch), other, **boot_extras(enabled.arch))
    assert info.value.field == "kernel.arch"
    assert_no_cell_left(enabled)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"cmdline": "y" * 4096}, "cmdline", id="cmdline"),
        pytest.param({"initrd": bytes(0x2000000)}, "initrd", id="initrd"),
    ],
)
def test_bad_boot_parameters_leave_no_cell(
    enabled: Backend, kwargs: dict[str, object], field: str
) -> None:
    """A too long command line or an initrd that does not fit: one error, no cell."""
    kernel = kernel_for(enabled.arch)
    with pytest.raises(BootError) as info:
        enabled.hv.boot_linux(
            linux_cell(enabled.arch),
            kernel,
            **boot_extras(enabled.arch),
            **kwargs,  # type: ignore[arg-type]
        )
    assert info.value.field == field
    assert_no_cell_left(enabled)


def test_failed_start_rolls_back(enabled: Backend) -> None:
    """When the driver fails the start, the cell is destroyed and the root has its CPUs."""
    enabled.host.inject_fault("start", errno.EIO)
    with pytest.raises(DeviceError) as info:
        enabled.hv.boot_linux(
            linux_cell(enabled.arch), kernel_for(enabled.arch), **boot_extras(enabled.arch)
        )
    assert info.value.errno == errno.EIO
    assert_no_cell_left(enabled)


def test_foreign_cell_is_refused_before_the_device(enabled: Backend) -> None:
    """A cell config of the other architecture is a ConfigError from plan_linux."""
    other = Arch.X86 if enabled.arch == Arch.ARM64 else Arch.ARM64
    from jailhouse.errors import ConfigError

    with pytest.raises(ConfigError):
        enabled.hv.plan_linux(linux_cell(other), arm64_image(), dtb=tiny_dtb())
    assert_no_cell_left(enabled)


def test_plan_json_is_plain(enabled: Backend) -> None:
    """The plan's dict is JSON with integer addresses."""
    plan = enabled.hv.plan_linux(
        linux_cell(enabled.arch), kernel_for(enabled.arch), **boot_extras(enabled.arch)
    )
    doc = json.loads(json.dumps(plan.to_dict()))
    assert doc["cell"] == "linux"
    assert all(isinstance(i["address"], int) for i in doc["images"])
