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
- Live migration raises ``VIR_ERR_OPERATION_UNSUPPORTED``: a partitioning hypervisor
  cannot move a running cell off the machine whose CPUs and memory it owns.
  ``VIR_MIGRATE_OFFLINE`` moves the definition and its boot files, and ``cold=True``
  stops the cell here and starts it there (see :mod:`jailhouse.virt._migrate`).
  ``suspend()`` raises ``VIR_ERR_OPERATION_UNSUPPORTED`` too.
- Domain XML needs the system config the hypervisor was enabled with, to place cells:
  ``?system=PATH`` in the URI or :meth:`virConnect.setSystemConfig`.

For programs written for libvirt-python:

- Every public name of libvirt-python is here (generated, see ``_gen``); a call the
  facade does not implement raises ``VIR_ERR_NO_SUPPORT`` naming its C function.
- Host information (``getCapabilities``, ``getInfo``, ``getCPUMap`` ...) comes from the
  connection's sysfs root (``_host``); stats records carry the cell's exit counters as
  ``vm.exits.*`` (``_stats``).
- ``openConsole`` attaches a :class:`virStream` to the hypervisor console, the only
  console a Jailhouse host has (``_stream``).
- Lifecycle events reach callbacks on the registered event loop from any process: each
  connection with registrations reads the store and sysfs every :data:`EVENT_POLL_MS`
  (``_events``).
- ``setAutostart`` is honoured by :meth:`virConnect.enableHypervisor` (``_habits``).
"""

from __future__ import annotations

from jailhouse.virt import _constants, _migrate
from jailhouse.virt._api import (
    DEFAULT_STORE,
    STORE_ENV,
    URI_ENV,
    open,  # noqa: A004 - libvirt-python's name
    openAuth,
    openReadOnly,
    virConnect,
    virDomain,
)
from jailhouse.virt._constants import *  # noqa: F403 - libvirt's constants, as libvirt-python
from jailhouse.virt._errors import (
    libvirtError,
    registerErrorHandler,
    virGetLastError,
    virGetLastErrorCode,
    virGetLastErrorDomain,
    virGetLastErrorMessage,
    virResetLastError,
)
from jailhouse.virt._events import (
    EVENT_POLL_MS,
    virEventAddHandle,
    virEventAddTimeout,
    virEventInvokeFreeCallback,
    virEventRegisterDefaultImpl,
    virEventRegisterImpl,
    virEventRemoveHandle,
    virEventRemoveTimeout,
    virEventRunDefaultImpl,
    virEventUpdateHandle,
    virEventUpdateTimeout,
)
from jailhouse.virt._events import EventCB as _EventCB  # noqa: F401 - libvirtaio's annotations
from jailhouse.virt._events import TimerCB as _TimerCB  # noqa: F401
from jailhouse.virt._host import getVersion, virInitialize
from jailhouse.virt._libvirt_api import CONSTANTS as _CONSTANTS
from jailhouse.virt._libvirt_api import FUNCTIONS as _FUNCTIONS
from jailhouse.virt._migrate import *  # noqa: F403 - libvirt's migration flags and parameters
from jailhouse.virt._nosupport import (
    unsupported_function,
    virDomainCheckpoint,
    virDomainSnapshot,
    virInterface,
    virNetwork,
    virNetworkPort,
    virNodeDevice,
    virNWFilter,
    virNWFilterBinding,
    virSecret,
    virStoragePool,
    virStorageVol,
)
from jailhouse.virt._stream import STREAM_POLL_MS, virStream

__all__ = [
    "DEFAULT_STORE",
    "EVENT_POLL_MS",
    "STORE_ENV",
    "STREAM_POLL_MS",
    "URI_ENV",
    "getVersion",
    "libvirtError",
    "open",
    "openAuth",
    "openReadOnly",
    "registerErrorHandler",
    "virConnect",
    "virDomain",
    "virDomainCheckpoint",
    "virDomainSnapshot",
    "virEventAddHandle",
    "virEventAddTimeout",
    "virEventInvokeFreeCallback",
    "virEventRegisterDefaultImpl",
    "virEventRegisterImpl",
    "virEventRemoveHandle",
    "virEventRemoveTimeout",
    "virEventRunDefaultImpl",
    "virEventUpdateHandle",
    "virEventUpdateTimeout",
    "virGetLastError",
    "virGetLastErrorCode",
    "virGetLastErrorDomain",
    "virGetLastErrorMessage",
    "virInitialize",
    "virInterface",
    "virNWFilter",
    "virNWFilterBinding",
    "virNetwork",
    "virNetworkPort",
    "virNodeDevice",
    "virResetLastError",
    "virSecret",
    "virStoragePool",
    "virStorageVol",
    "virStream",
]
__all__ += _constants.__all__
__all__ += _migrate.__all__


# Every constant and function libvirt-python has (see ``_libvirt_api``): constants the
# hand-written table lacks get libvirt's values; functions the facade does not implement
# raise VIR_ERR_NO_SUPPORT.
_MISSING_CONSTANTS = [name for name in _CONSTANTS if name not in globals()]
_MISSING_FUNCTIONS = [name for name in _FUNCTIONS if name not in globals()]
globals().update({name: _CONSTANTS[name] for name in _MISSING_CONSTANTS})
globals().update({name: unsupported_function(name) for name in _MISSING_FUNCTIONS})
__all__ += _MISSING_CONSTANTS + _MISSING_FUNCTIONS  # noqa: PLE0605 - generated names
