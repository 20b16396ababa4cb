"""Test doubles for code that drives Jailhouse, usable in your own CI.

:class:`FuseDevice` mounts a userspace filesystem that answers the ``/dev/jailhouse``
ioctls and console reads like the kernel driver, backed by a simulated host
(:class:`jailhouse.sim.SimHost`).  Code under test opens it with the unchanged
:class:`jailhouse.device.KernelDevice`, so every request goes through the kernel's
syscall path: the ioctl structs are built by the cffi shim, copied in by the kernel, and
the memory they point at is read from the calling process.  It needs ``/dev/fuse``,
``fusermount3``, root, and the ``fuse`` extra (``pip install 'python-jailhouse[fuse]'``);
:func:`fuse_unavailable` says which of these is missing.

Importing this package loads nothing beyond the standard library; ``mfusepy`` is imported
only by the server process.
"""

from jailhouse.testing.fusedev import FuseDevice, fuse_unavailable, mount_fuse_device

__all__ = ["FuseDevice", "fuse_unavailable", "mount_fuse_device"]
