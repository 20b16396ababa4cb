"""libvirt habits beyond lifecycle: autostart, native config translation, legacy names.

- ``setAutostart()``/``autostart()`` keep a flag per definition in the store
  (``STORE/autostart/<uuid>``).  Nothing boots cells when the machine boots (the
  hypervisor is not even enabled then); the flag is honoured by
  :meth:`ConnectHabits.enableHypervisor`, which enables the hypervisor through the
  facade and then starts every autostart domain that is not active.
- ``domainXMLFromNative("jailhouse-config", CONFIG)`` describes a cell config as domain
  XML, ``domainXMLToNative("jailhouse-config", XML)`` translates domain XML into one
  (placed on the connection's system config).  libvirt passes native configs as text,
  a cell config is binary: the text is the config's base64, or the path of a ``.cell``
  file (``FromNative`` only).
- ``createLinux`` is libvirt's old name of ``createXML``.
- Objects a Jailhouse host does not have: listing networks, storage pools, node devices,
  secrets, interfaces or network filters gives ``[]`` and counting them 0 (there are
  none); a domain has no snapshots, checkpoints or managed save image.  Looking one up
  raises ``VIR_ERR_NO_SUPPORT``.
- ``setKeepAlive()`` returns 1, libvirt's answer when the other side does not do
  keepalives: there is no daemon connection to keep alive.  ``isSecure()`` is 1 (a
  local connection), ``isEncrypted()`` 0, ``getSecurityModel()`` ``["", ""]`` (no
  security driver labels cells).
"""

# ruff: noqa: N802, N803 - method and argument names are libvirt-python's

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jailhouse.virt import _constants as c
from jailhouse.virt._driver import check_flags
from jailhouse.virt._errors import make_error

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from jailhouse.config.model import SystemConfig
    from jailhouse.virt._api import virDomain
    from jailhouse.virt._driver import DomainView, Driver

__all__ = ["NATIVE_FORMAT", "ConnectHabits", "DomainHabits", "autostart_path"]

_EMPTY_LISTS: Final = {
    "listAllDevices": "virConnectListAllNodeDevices",
    "listAllInterfaces": "virConnectListAllInterfaces",
    "listAllNWFilterBindings": "virConnectListAllNWFilterBindings",
    "listAllNWFilters": "virConnectListAllNWFilters",
    "listAllNetworks": "virConnectListAllNetworks",
    "listAllSecrets": "virConnectListAllSecrets",
    "listAllStoragePools": "virConnectListAllStoragePools",
    "listDefinedInterfaces": "virConnectListDefinedInterfaces",
    "listDefinedNetworks": "virConnectListDefinedNetworks",
    "listDefinedStoragePools": "virConnectListDefinedStoragePools",
    "listDevices": "virNodeListDevices",
    "listInterfaces": "virConnectListInterfaces",
    "listNWFilters": "virConnectListNWFilters",
    "listNetworks": "virConnectListNetworks",
    "listSecrets": "virConnectListSecrets",
    "listStoragePools": "virConnectListStoragePools",
}
_ZERO_COUNTS: Final = {
    "numOfDefinedInterfaces": "virConnectNumOfDefinedInterfaces",
    "numOfDefinedNetworks": "virConnectNumOfDefinedNetworks",
    "numOfDefinedStoragePools": "virConnectNumOfDefinedStoragePools",
    "numOfDevices": "virNodeNumOfDevices",
    "numOfInterfaces": "virConnectNumOfInterfaces",
    "numOfNWFilters": "virConnectNumOfNWFilters",
    "numOfNetworks": "virConnectNumOfNetworks",
    "numOfSecrets": "virConnectNumOfSecrets",
    "numOfStoragePools": "virConnectNumOfStoragePools",
}
_DOMAIN_EMPTY_LISTS: Final = {
    "listAllSnapshots": "virDomainListAllSnapshots",
    "listAllCheckpoints": "virDomainListAllCheckpoints",
    "snapshotListNames": "virDomainSnapshotListNames",
}
_DOMAIN_ZEROS: Final = {
    "snapshotNum": "virDomainSnapshotNum",
    "hasCurrentSnapshot": "virDomainHasCurrentSnapshot",
    "hasManagedSaveImage": "virDomainHasManagedSaveImage",
}

NATIVE_FORMAT: Final = "jailhouse-config"
"""The native format name of a Jailhouse cell config."""


def autostart_path(driver: Driver, uuid: str) -> Path:
    """The marker file that says a definition starts with the hypervisor."""
    return driver.store.root / "autostart" / uuid


def _check_format(nativeFormat: str, function: str) -> None:
    if nativeFormat != NATIVE_FORMAT:
        raise make_error(
            c.VIR_ERR_CONFIG_UNSUPPORTED,
            f"unsupported config type {nativeFormat} in {function}: the one native format "
            f"of a Jailhouse host is '{NATIVE_FORMAT}'",
            domain=c.VIR_FROM_NONE,
        )


def _native_bytes(text: str) -> bytes:
    candidate = Path(text) if "\n" not in text and len(text) < 4096 else None
    if candidate is not None and candidate.is_file():
        return candidate.read_bytes()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise make_error(
            c.VIR_ERR_INVALID_ARG,
            "nativeConfig: neither a .cell file nor the base64 of a cell config",
            domain=c.VIR_FROM_NONE,
        ) from exc


class ConnectHabits:
    """The habits half of ``virConnect`` (a mixin)."""

    if TYPE_CHECKING:

        def _live(self, function: str) -> Driver: ...

        def createXML(self, xmlDesc: str, flags: int = 0) -> virDomain: ...

        def setSystemConfig(
            self, system: SystemConfig | bytes | str | os.PathLike[str]
        ) -> None: ...

        def listAllDomains(self, flags: int = 0) -> list[virDomain]: ...

    def domainXMLFromNative(self, nativeFormat: str, nativeConfig: str, flags: int = 0) -> str:
        """Describe a cell config (base64 text, or a ``.cell`` path) as domain XML.

        Raises:
            libvirtError: ``VIR_ERR_CONFIG_UNSUPPORTED`` for another format or a system
                config; ``VIR_ERR_INVALID_ARG`` for text that is no config.
        """
        from jailhouse.config.model import CellConfig, load_config  # noqa: PLC0415
        from jailhouse.domxml import cell_to_domain  # noqa: PLC0415
        from jailhouse.virt._api import _call  # noqa: PLC0415 - avoid a cycle

        self._live("virConnectDomainXMLFromNative")
        check_flags(flags, 0, "virConnectDomainXMLFromNative")
        _check_format(nativeFormat, "virConnectDomainXMLFromNative")
        data = _native_bytes(nativeConfig)
        config = _call(lambda: load_config(data))
        if not isinstance(config, CellConfig):
            raise make_error(
                c.VIR_ERR_CONFIG_UNSUPPORTED,
                "nativeConfig: is a system config, not a cell config",
                domain=c.VIR_FROM_NONE,
            )
        return _call(lambda: cell_to_domain(config))

    def domainXMLToNative(self, nativeFormat: str, domainXml: str, flags: int = 0) -> str:
        """Translate domain XML into a cell config for the system config; return its base64.

        Raises:
            libvirtError: ``VIR_ERR_CONFIG_UNSUPPORTED`` for another format; the
                translator's errors; ``VIR_ERR_OPERATION_INVALID`` without a system config.
        """
        from jailhouse.domxml import domain_to_cell  # noqa: PLC0415
        from jailhouse.virt._api import _call  # noqa: PLC0415 - avoid a cycle

        driver = self._live("virConnectDomainXMLToNative")
        check_flags(flags, 0, "virConnectDomainXMLToNative")
        _check_format(nativeFormat, "virConnectDomainXMLToNative")
        system = _call(driver.system)
        result = _call(lambda: domain_to_cell(domainXml, system))
        return base64.b64encode(result.config.to_bytes()).decode("ascii")

    def createLinux(self, xmlDesc: str, flags: int = 0) -> virDomain:
        """Create and start a transient domain: libvirt's old name of :meth:`createXML`."""
        return self.createXML(xmlDesc, flags)

    def enableHypervisor(
        self, system: SystemConfig | bytes | str | os.PathLike[str]
    ) -> list[virDomain]:
        """Enable the hypervisor, record the system config, start the autostart domains.

        Not in libvirt: the way to honour ``setAutostart()``.  A domain that fails to
        start does not stop the others; its error is raised after all were tried.

        Returns:
            The domains it started.

        Raises:
            libvirtError: Enabling failed, or the first start that failed.
        """
        from jailhouse.virt._api import _call  # noqa: PLC0415 - avoid a cycle

        driver = self._live("enableHypervisor")
        driver.check_writable("enableHypervisor")
        self.setSystemConfig(system)
        _call(lambda: driver.hv.enable(driver.system()))
        started: list[virDomain] = []
        first_error: Exception | None = None
        for dom in self.listAllDomains(c.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
            if not autostart_path(driver, dom.UUIDString()).exists():
                continue
            try:
                dom.create()
            except Exception as exc:  # noqa: BLE001 - the others still start; raised below
                first_error = first_error or exc
            else:
                started.append(dom)
        if first_error is not None:
            raise first_error
        return started

    def setKeepAlive(self, interval: int, count: int) -> int:
        """Return 1: there is no daemon connection to send keepalives on."""
        del interval, count
        self._live("virConnectSetKeepAlive")
        return 1

    def isEncrypted(self) -> int:
        """Return 0: a local connection is not encrypted (nothing travels)."""
        self._live("virConnectIsEncrypted")
        return 0

    def isSecure(self) -> int:
        """Return 1: a local connection cannot be eavesdropped."""
        self._live("virConnectIsSecure")
        return 1

    def getSecurityModel(self) -> list[str]:
        """Return ``["", ""]``: no security driver labels cells."""
        self._live("virNodeGetSecurityModel")
        return ["", ""]


def _answer(name: str, function: str, value: Callable[[], Any], *, on_domain: bool) -> Any:  # noqa: ANN401 - a method
    what = "domain" if on_domain else "host"

    def method(self: Any, *args: object, **kwargs: object) -> Any:  # noqa: ANN401 - any arguments
        del args, kwargs
        if on_domain:
            self._view(function)
        else:
            self._live(function)
        return value()

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Return {value()!r}: a Jailhouse {what} has none ({function})."
    return method


for _name, _function in _EMPTY_LISTS.items():
    setattr(ConnectHabits, _name, _answer(_name, _function, list, on_domain=False))
for _name, _function in _ZERO_COUNTS.items():
    setattr(ConnectHabits, _name, _answer(_name, _function, int, on_domain=False))


class DomainHabits:
    """The habits half of ``virDomain`` (a mixin)."""

    if TYPE_CHECKING:

        def _view(self, function: str) -> tuple[Driver, DomainView]: ...

    def autostart(self) -> int:
        """Return 1 when the domain starts with :meth:`ConnectHabits.enableHypervisor`, else 0."""
        driver, view = self._view("virDomainGetAutostart")
        return int(autostart_path(driver, view.uuid).exists())

    def setAutostart(self, autostart: int) -> int:
        """Mark (1) or unmark (0) the definition to start when the facade enables the hypervisor.

        Returns:
            0.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` for a transient domain;
                ``VIR_ERR_OPERATION_DENIED`` when read-only.
        """
        from jailhouse.store import write_atomically  # noqa: PLC0415

        driver, view = self._view("virDomainSetAutostart")
        driver.check_writable("virDomainSetAutostart")
        if view.persistent is None:
            raise make_error(
                c.VIR_ERR_OPERATION_INVALID, "cannot set autostart for transient domain"
            )
        path = autostart_path(driver, view.uuid)
        if autostart:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, f"{view.name}\n".encode())
        else:
            path.unlink(missing_ok=True)
        return 0

    def numaParameters(self, flags: int = 0) -> dict[str, Any]:
        """Return libvirt's answer for a domain without a NUMA policy (strict, no nodeset).

        A cell's memory is the physical memory its config names; nothing moves it.
        """
        check_flags(
            flags,
            c.VIR_DOMAIN_AFFECT_LIVE | c.VIR_DOMAIN_AFFECT_CONFIG,
            "virDomainGetNumaParameters",
        )
        self._view("virDomainGetNumaParameters")
        return {"numa_mode": 0, "numa_nodeset": ""}  # VIR_DOMAIN_NUMATUNE_MEM_STRICT


for _name, _function in _DOMAIN_EMPTY_LISTS.items():
    setattr(DomainHabits, _name, _answer(_name, _function, list, on_domain=True))
for _name, _function in _DOMAIN_ZEROS.items():
    setattr(DomainHabits, _name, _answer(_name, _function, int, on_domain=True))
