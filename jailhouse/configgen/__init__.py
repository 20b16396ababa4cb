"""Generate Jailhouse configs from what a host shows; nothing here touches a device.

:func:`generate_system` reads a host below ``root`` (``/`` for the running host, or a
recorded tree such as ``fixtures/hosts/qemu-q35``) and returns a
:class:`~jailhouse.config.model.SystemConfig` with :class:`Note` s: warnings that name the
file or device-tree node and what the user must supply (the ``memmap=``/``mem=`` setting,
with a value, when no memory is reserved), and notes on the choices made.

- x86: ``/proc/iomem``, ``/proc/cmdline``, ``/proc/ioports``, the CPU sysfs, the PCI
  devices' config space and the ACPI tables (MCFG, DMAR or IVRS, APIC, FACP); see
  :mod:`jailhouse.configgen._x86`.
- arm64: the device tree under ``/proc/device-tree``; see :mod:`jailhouse.configgen._arm64`.

:func:`new_cell` makes a non-root cell for N CPUs and M MiB from what a system config and
the cells already defined leave free; :func:`to_c_source` writes any config as C source in
upstream's config format.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from jailhouse.config.model import Arch
from jailhouse.configgen._common import Generated, HostTree, Note, NoteKind
from jailhouse.configgen._csource import to_c_source
from jailhouse.configgen._newcell import new_cell
from jailhouse.errors import ConfigError

if TYPE_CHECKING:
    from jailhouse.config.model import SystemConfig

__all__ = [
    "Generated",
    "Note",
    "NoteKind",
    "detect_host_arch",
    "device_tree_spis",
    "device_tree_uart_irq",
    "generate_system",
    "new_cell",
    "to_c_source",
]


def detect_host_arch(root: str | Path = "/") -> Arch:
    """Tell a host tree's architecture: ``proc/cpuinfo`` first, else what is there.

    Raises:
        ConfigError: Neither ``proc/cpuinfo`` nor a device tree or ``proc/iomem`` tells.
    """
    from jailhouse.hostcheck import detect_arch  # noqa: PLC0415

    host = HostTree(root)
    cpuinfo = host.text("/proc/cpuinfo")
    arch = detect_arch(cpuinfo) if cpuinfo is not None else None
    if arch is not None:
        return arch
    if host.exists("/proc/device-tree"):
        return Arch.ARM64
    if host.exists("/sys/firmware/acpi/tables") or host.exists("/proc/iomem"):
        return Arch.X86
    raise ConfigError(f"{Path(root) / 'proc/cpuinfo'}", None, "cannot tell the host's architecture")


def generate_system(
    root: str | Path = "/", *, arch: Arch | None = None, name: str = "root", ivshmem: bool = True
) -> Generated[SystemConfig]:
    """Generate the system config of the host whose files lie below ``root``.

    Args:
        root: The directory that plays ``/``.
        arch: The host's architecture; by default :func:`detect_host_arch`.
        name: The root cell's name.
        ivshmem: Give the root cell a two-peer ivshmem link a new cell can join.

    Returns:
        The config, its notes and one comment per root-cell memory region.

    Raises:
        ConfigError: Something every config needs cannot be found; the field names the
            file or node.
    """
    from jailhouse.configgen._arm64 import probe_arm64  # noqa: PLC0415
    from jailhouse.configgen._x86 import probe_x86  # noqa: PLC0415

    host = HostTree(root)
    arch = arch if arch is not None else detect_host_arch(root)
    if arch == Arch.X86:
        return probe_x86(host, name=name, ivshmem=ivshmem)
    if arch == Arch.ARM64:
        return probe_arm64(host, name=name, ivshmem=ivshmem)
    raise ConfigError("arch", arch.name, "configs are generated for x86 and arm64 hosts only")


def device_tree_spis(root: str | Path = "/") -> frozenset[int]:
    """Return every GIC interrupt ID (SPIs, from 32) the host's device tree names."""
    from jailhouse.configgen._devicetree import DeviceTree  # noqa: PLC0415

    dt = DeviceTree(HostTree(root))
    if not dt.exists():
        return frozenset()
    return frozenset(i for node in dt.walk() for i in node.interrupts() if i >= 32)


def device_tree_uart_irq(root: str | Path, address: int) -> int | None:
    """Return the interrupt ID of the device-tree UART whose registers are at ``address``."""
    from jailhouse.configgen._devicetree import DeviceTree  # noqa: PLC0415

    dt = DeviceTree(HostTree(root))
    if not dt.exists():
        return None
    for node in dt.walk():
        if any(a == address for a, _ in node.reg()):
            irqs = [i for i in node.interrupts() if i >= 32]
            return irqs[0] if irqs else None
    return None
