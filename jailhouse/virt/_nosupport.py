"""libvirt-python's names the facade does not implement: each raises ``VIR_ERR_NO_SUPPORT``.

libvirt answers a call its driver lacks with ``VIR_ERR_NO_SUPPORT`` ("this function is
not supported by the connection driver: virDomainBlockStats"), and programs written for
several drivers catch that.  :func:`complete` gives a class every method libvirt-python's
class of that name has (from :mod:`jailhouse.virt._libvirt_api`), each missing one
raising that error with the C function's name, so nothing ends in ``AttributeError``.

The object kinds a Jailhouse host does not have (networks, storage, node devices,
secrets, interfaces, network filters, snapshots, checkpoints) get classes here so that
annotations and ``isinstance`` checks resolve; no call returns one.
"""

# ruff: noqa: N801 - the class names are libvirt-python's

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from jailhouse.virt import _constants as c
from jailhouse.virt._errors import make_error
from jailhouse.virt._libvirt_api import FUNCTIONS, METHODS

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "UNSUPPORTED",
    "complete",
    "unsupported_function",
    "virDomainCheckpoint",
    "virDomainSnapshot",
    "virInterface",
    "virNWFilter",
    "virNWFilterBinding",
    "virNetwork",
    "virNetworkPort",
    "virNodeDevice",
    "virSecret",
    "virStoragePool",
    "virStorageVol",
]

UNSUPPORTED = "__jailhouse_unsupported__"
"""Attribute set on every generated method, naming the C function it stands for."""


def no_support(function: str) -> Exception:
    """Build libvirt's error for a call the driver lacks."""
    return make_error(c.VIR_ERR_NO_SUPPORT, function, domain=c.VIR_FROM_NONE)


def _method(name: str, function: str) -> Callable[..., NoReturn]:
    def method(self: object, *args: object, **kwargs: object) -> NoReturn:  # noqa: ARG001 - any
        raise no_support(function)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Raise ``VIR_ERR_NO_SUPPORT``: a Jailhouse host has no {function}."
    setattr(method, UNSUPPORTED, function)
    return method


def unsupported_function(name: str) -> Callable[..., NoReturn]:
    """Return a module function that raises ``VIR_ERR_NO_SUPPORT`` naming its C function."""
    function = FUNCTIONS.get(name, name)

    def call(*args: object, **kwargs: object) -> NoReturn:  # noqa: ARG001 - any arguments
        raise no_support(function)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Raise ``VIR_ERR_NO_SUPPORT``: a Jailhouse host has no {function}."
    setattr(call, UNSUPPORTED, function)
    return call


def complete(cls: type, name: str | None = None) -> None:
    """Add every method libvirt-python's class ``name`` has and ``cls`` lacks, as NO_SUPPORT."""
    for attr, function in METHODS.get(name or cls.__name__, {}).items():
        if not hasattr(cls, attr):
            setattr(cls, attr, _method(attr, function))


class _Absent:
    """An object of a kind a Jailhouse host does not have; never returned by a call."""

    def __init__(self, conn: Any, _obj: object = None) -> None:  # noqa: ANN401 - a virConnect
        """Keep the connection, as libvirt-python's constructor."""
        self._conn = conn
        self._o = _obj

    def connect(self) -> Any:  # noqa: ANN401 - a virConnect
        """Return the connection."""
        return self._conn


class virNetwork(_Absent):
    """A virtual network: a Jailhouse host has none (cells own physical devices)."""


class virNetworkPort(_Absent):
    """A port of a virtual network: a Jailhouse host has none."""


class virInterface(_Absent):
    """A host interface managed by libvirt: python-jailhouse manages none."""


class virStoragePool(_Absent):
    """A storage pool: a Jailhouse host has none (images are plain files)."""


class virStorageVol(_Absent):
    """A storage volume: a Jailhouse host has none."""

    streamBufSize = 262120  # noqa: N815 - libvirt-python's name and value
    """Buffer size of libvirt-python's ``recvAll``/``sendAll``."""


class virNodeDevice(_Absent):
    """A node device: python-jailhouse does not enumerate host devices."""


class virSecret(_Absent):
    """A secret: a Jailhouse host keeps none."""


class virNWFilter(_Absent):
    """A network filter: a Jailhouse host has none."""


class virNWFilterBinding(_Absent):
    """A network filter binding: a Jailhouse host has none."""


class virDomainSnapshot(_Absent):
    """A domain snapshot: a cell cannot be snapshotted (its memory is the machine's)."""


class virDomainCheckpoint(_Absent):
    """A domain checkpoint: a cell has none."""


for _cls in (
    virNetwork,
    virNetworkPort,
    virInterface,
    virStoragePool,
    virStorageVol,
    virNodeDevice,
    virSecret,
    virNWFilter,
    virNWFilterBinding,
    virDomainSnapshot,
    virDomainCheckpoint,
):
    complete(_cls)
