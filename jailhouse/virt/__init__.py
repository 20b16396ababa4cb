"""A libvirt-python compatible API over Jailhouse cells.

Code written for libvirt-python runs with ``import jailhouse.virt as libvirt`` and a
``sim:///`` or ``jailhouse:///system`` URI: the same class, method and constant names,
the same return values, and :class:`libvirtError` with libvirt's error codes.
libvirt-python itself is not needed.

>>> import tempfile
>>> import jailhouse.virt as libvirt
>>> from jailhouse.examples import example_system
>>> xml = '''<domain type="jailhouse"><name>demo</name><memory unit="KiB">64</memory>
...   <vcpu>1</vcpu><os><type arch="aarch64">hvm</type></os></domain>'''
>>> with tempfile.TemporaryDirectory() as tmp:
...     conn = libvirt.open(f"sim://{tmp}?arch=arm64&cpus=4")
...     conn.driver.hv.enable(example_system("arm64"))
...     conn.setSystemConfig(example_system("arm64"))
...     dom = conn.defineXML(xml)
...     print(dom.name(), dom.state(), dom.ID(), dom.isPersistent())
...     _ = dom.create()
...     running = [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED]
...     print(dom.state() == running, dom.ID())
...     _ = dom.destroy()
...     _ = dom.undefine()
...     try:
...         conn.lookupByName("demo")
...     except libvirt.libvirtError as e:
...         print(e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)
...     conn.close()
demo [5, 0] -1 1
True 1
True
0

Mapping:

- **Defined** is a stored definition: the domain XML, the cell config the translator
  made of it (placed clear of every other defined cell) and a UUID that stays the same
  for the definition's life, kept per connection in a :class:`~jailhouse.store.DefinitionStore`
  (``PATH/domains`` for ``sim:///PATH``, ``/var/lib/jailhouse/domains`` for
  ``jailhouse:///system``; ``?domains=DIR`` overrides both).
- **Active** is a cell that exists; ``ID()`` is its cell id, -1 when there is none.  The
  root cell is the host itself, not a domain.
- States: ``running`` and ``running/locked`` are RUNNING; ``failed`` is CRASHED; a cell
  that is created, loaded or shut down (CPUs parked, resources held) is **PAUSED**, never
  SHUTOFF, because it is active and has an id.  SHUTOFF is a definition without a cell.
- ``shutdown()`` asks the cell to stop: ``jailhouse cell shutdown``, a load of no
  images; the cell stays, PAUSED.  ``destroy()`` removes the cell and returns its CPUs
  and memory to the root cell.
- ``create()`` loads the definition's images, or the park-loop inmate when it has none,
  and starts the cell.  Linux boots (``<os><kernel>``) load the plan of
  :func:`jailhouse.linux.plan_linux` (as ``jhctl cell linux``); one that cannot work is
  ``VIR_ERR_CONFIG_UNSUPPORTED``, naming why.
- Migration raises ``VIR_ERR_OPERATION_UNSUPPORTED``: a partitioning hypervisor cannot
  move a cell off the machine whose CPUs and memory it owns.  ``suspend()`` does too.
- Domain XML needs the system config the hypervisor was enabled with, to place cells:
  ``?system=PATH`` in the URI or :meth:`virConnect.setSystemConfig`.
"""

from __future__ import annotations

from jailhouse.virt import _constants
from jailhouse.virt._api import (
    DEFAULT_STORE,
    STORE_ENV,
    URI_ENV,
    open,  # noqa: A004 - libvirt-python's name
    openReadOnly,
    virConnect,
    virDomain,
)
from jailhouse.virt._constants import *  # noqa: F403 - libvirt's constants, as libvirt-python
from jailhouse.virt._errors import libvirtError, registerErrorHandler, virGetLastError

__all__ = [
    "DEFAULT_STORE",
    "STORE_ENV",
    "URI_ENV",
    "libvirtError",
    "open",
    "openReadOnly",
    "registerErrorHandler",
    "virConnect",
    "virDomain",
    "virGetLastError",
]
__all__ += _constants.__all__
