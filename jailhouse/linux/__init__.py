"""Booting Linux in a non-root cell, as ``jailhouse cell linux`` does.

The pieces: kernel image headers (arm64 ``Image``, x86 ``bzImage``), loader stubs of our
own (:mod:`jailhouse.linux._loader`), the boot parameters each architecture's kernel
expects (a device tree on arm64, a ``boot_params`` page on x86), and the load plan that
places them in the cell's loadable RAM.  Nothing here touches a device.
"""

from __future__ import annotations

from jailhouse.linux._loader import LoaderStub

__all__ = ["LoaderStub"]
