"""A simulated Jailhouse host: the driver and hypervisor, without the hardware.

:class:`SimHost` keeps a whole host under one directory: the machine (``host.json``),
the driver and hypervisor state (``state.json``), and a real sysfs tree (``sys/``) with
the driver's files in their exact formats.  Its operations (:meth:`SimHost.enable`,
:meth:`SimHost.cell_create`, ...) fail with the errno the real driver and hypervisor
return, in their check order (ABI fact sheet §2).  Every operation locks the directory,
so several processes can drive one host.

:class:`FakeDevice` is an open file of the simulated ``/dev/jailhouse``: it implements
:class:`jailhouse.device.Device`, taking ioctl arguments as user-space addresses and
reading them from process memory as the kernel does.  :func:`dispatch_ioctl` is the
request dispatch on its own, for a device node served from another process.

The simulation also plays the inmates (:meth:`SimHost.script_cell`), lets time pass for
the exit counters (:meth:`SimHost.tick`), takes CPUs offline
(:meth:`SimHost.set_cpu_online`) and injects failures (:meth:`SimHost.inject_fault`).

Example::

    host = SimHost(tmp_path, arch=Arch.ARM64, cpus=4)
    host.script_cell("arm64-demo", console=b"Hello")
    with Hypervisor(host.device()) as hv:   # or jailhouse.open(f"sim://{tmp_path}")
        hv.enable(example_system("arm64"))
"""

from jailhouse.sim._device import FakeDevice
from jailhouse.sim._host import (
    CellSnapshot,
    ConsoleCursor,
    HostSnapshot,
    SimHost,
    dispatch_ioctl,
)

__all__ = [
    "CellSnapshot",
    "ConsoleCursor",
    "FakeDevice",
    "HostSnapshot",
    "SimHost",
    "dispatch_ioctl",
]
