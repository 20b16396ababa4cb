"""Booting Linux in a non-root cell, as ``jailhouse cell linux`` does.

The pieces: kernel image headers (arm64 ``Image``, x86 ``bzImage``), loader stubs of our
own (:mod:`jailhouse.linux._loader`), the boot parameters each architecture's kernel
expects (a device tree on arm64, a ``boot_params`` page on x86), and the load plan that
places them in the cell's loadable RAM (:func:`plan_linux`).  Nothing here touches a
device: :meth:`jailhouse.hypervisor.Hypervisor.boot_linux` loads and starts a plan.
"""

from __future__ import annotations

from jailhouse.linux import fdt
from jailhouse.linux._arm64 import (
    ARM64_LOADER,
    ARM64_LOADER_SOURCE,
    Arm64Image,
    parse_arm64_image,
)
from jailhouse.linux._devicetree import (
    DeviceTreeNote,
    GeneratedDeviceTree,
    build_device_tree,
    generate_device_tree,
)
from jailhouse.linux._kernel import KernelImage, detect_format, parse_kernel
from jailhouse.linux._loader import LoaderStub
from jailhouse.linux._plan import COMMAND_LINE_SIZE, LoadEntry, LoadPlan, plan_linux

__all__ = [
    "ARM64_LOADER",
    "ARM64_LOADER_SOURCE",
    "COMMAND_LINE_SIZE",
    "Arm64Image",
    "DeviceTreeNote",
    "GeneratedDeviceTree",
    "KernelImage",
    "LoadEntry",
    "LoadPlan",
    "LoaderStub",
    "build_device_tree",
    "detect_format",
    "fdt",
    "generate_device_tree",
    "parse_arm64_image",
    "parse_kernel",
    "plan_linux",
]
