"""Booting Linux in a non-root cell, as ``jailhouse cell linux`` does.

The pieces: kernel image headers (arm64 ``Image``, x86 ``bzImage``), loader stubs of our
own (:mod:`jailhouse.linux._loader`), the boot parameters each architecture's kernel
expects (a device tree on arm64, a ``boot_params`` page on x86), and the load plan that
places them in the cell's loadable RAM.  Nothing here touches a device.
"""

from __future__ import annotations

from jailhouse.linux import fdt
from jailhouse.linux._devicetree import (
    DeviceTreeNote,
    GeneratedDeviceTree,
    build_device_tree,
    generate_device_tree,
)
from jailhouse.linux._loader import LoaderStub

__all__ = [
    "DeviceTreeNote",
    "GeneratedDeviceTree",
    "LoaderStub",
    "build_device_tree",
    "fdt",
    "generate_device_tree",
]
