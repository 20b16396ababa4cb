"""``virConnect`` and ``virDomain``: libvirt-python's classes over Jailhouse cells."""

# ruff: noqa: N802, N803 - method and argument names are libvirt-python's (camelCase)

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from jailhouse.config.model import SystemConfig, load_config
from jailhouse.jobs import Job
from jailhouse.store import DefinitionStore
from jailhouse.virt import _constants as c
from jailhouse.virt._driver import DomainView, Driver, check_flags
from jailhouse.virt._errors import from_exception, libvirtError, make_error
from jailhouse.virt._events import ConnectEvents
from jailhouse.virt._habits import ConnectHabits, DomainHabits
from jailhouse.virt._host import ConnectHost
from jailhouse.virt._nosupport import complete
from jailhouse.virt._stats import ConnectStats, DomainStats
from jailhouse.virt._stream import ConnectStreams, DomainConsole

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from jailhouse.hypervisor import Hypervisor

__all__ = [
    "DEFAULT_STORE",
    "STORE_ENV",
    "URI_ENV",
    "open",
    "openAuth",
    "openReadOnly",
    "virConnect",
    "virDomain",
]

URI_ENV: Final = "JAILHOUSE_URI"
"""Environment variable naming the URI :func:`open` uses when given none (as the CLI)."""
STORE_ENV: Final = "JAILHOUSE_DOMAINS_DIR"
"""Environment variable overriding the store directory of ``jailhouse:///system``."""
DEFAULT_STORE: Final = Path("/var/lib/jailhouse/domains")
"""The store directory of ``jailhouse:///system``."""
_DEFAULT_URI: Final = "jailhouse:///system"
_LIBVIRT_URI_ENV: Final = "LIBVIRT_DEFAULT_URI"
"""libvirt's variable; used when it names one of our schemes, so libvirt programs run unchanged."""
_T = TypeVar("_T")
_UUID_TEXT: Final = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)

_MIGRATION: Final = (
    "a Jailhouse cell cannot migrate: a partitioning hypervisor gives each cell physical "
    "CPUs, memory and devices of this machine, and there is nothing to move them to"
)
_SUSPEND: Final = (
    "a Jailhouse cell cannot be suspended: the hypervisor can only park its CPUs "
    "(shutdown), and a parked cell restarts from its reset address"
)

_LIST_ALL: Final = (
    c.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    | c.VIR_CONNECT_LIST_DOMAINS_INACTIVE
    | c.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
    | c.VIR_CONNECT_LIST_DOMAINS_TRANSIENT
    | c.VIR_CONNECT_LIST_DOMAINS_RUNNING
    | c.VIR_CONNECT_LIST_DOMAINS_PAUSED
    | c.VIR_CONNECT_LIST_DOMAINS_SHUTOFF
    | c.VIR_CONNECT_LIST_DOMAINS_OTHER
    | c.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE
    | c.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE
    | c.VIR_CONNECT_LIST_DOMAINS_AUTOSTART
    | c.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART
    | c.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT
    | c.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT
    | c.VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT
    | c.VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT
)
_START_FLAGS: Final = (
    c.VIR_DOMAIN_START_PAUSED
    | c.VIR_DOMAIN_START_BYPASS_CACHE
    | c.VIR_DOMAIN_START_FORCE_BOOT
    | c.VIR_DOMAIN_START_VALIDATE
    | c.VIR_DOMAIN_START_RESET_NVRAM
)
_UNDEFINE_FLAGS: Final = (
    c.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | c.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | c.VIR_DOMAIN_UNDEFINE_NVRAM
    | c.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
    | c.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | c.VIR_DOMAIN_UNDEFINE_TPM
    | c.VIR_DOMAIN_UNDEFINE_KEEP_TPM
)
_XML_FLAGS: Final = (
    c.VIR_DOMAIN_XML_SECURE
    | c.VIR_DOMAIN_XML_INACTIVE
    | c.VIR_DOMAIN_XML_UPDATE_CPU
    | c.VIR_DOMAIN_XML_MIGRATABLE
)
_REBOOT_FLAGS: Final = (
    c.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN
    | c.VIR_DOMAIN_REBOOT_GUEST_AGENT
    | c.VIR_DOMAIN_REBOOT_INITCTL
    | c.VIR_DOMAIN_REBOOT_SIGNAL
    | c.VIR_DOMAIN_REBOOT_PARAVIRT
)


def _call(function: Callable[[], _T]) -> _T:
    """Run a facade call, turning every python-jailhouse or OS error into ``libvirtError``."""
    try:
        return function()
    except libvirtError:
        raise
    except Exception as exc:  # every error leaves as a libvirtError, the cause chained
        raise from_exception(exc) from exc


def open(name: str | None = None) -> virConnect:  # noqa: A001 - libvirt-python's name
    """Open a connection, as ``libvirt.open``.

    URIs:

    - ``sim:///ABS/PATH[?arch=arm64&cpus=4]``: a simulated host in that directory; its
      definitions are kept in ``/ABS/PATH/domains``.
    - ``jailhouse:///system``: ``/dev/jailhouse``; definitions in
      ``/var/lib/jailhouse/domains`` (or ``$JAILHOUSE_DOMAINS_DIR``).

    Two more query parameters work with both: ``domains=DIR`` puts the definitions in
    ``DIR``, and ``system=PATH`` names the system config domains are placed on (else the
    one recorded in the store, see :meth:`virConnect.setSystemConfig`).  Every other
    parameter is the hypervisor's (:func:`jailhouse.open`).

    Args:
        name: The URI; by default ``$JAILHOUSE_URI``, else ``$LIBVIRT_DEFAULT_URI`` when
            it is a ``sim:`` or ``jailhouse:`` URI, else ``jailhouse:///system``.

    Raises:
        libvirtError: ``VIR_ERR_NO_CONNECT`` for an unknown scheme,
            ``VIR_ERR_INVALID_ARG`` for a malformed URI, ``VIR_ERR_SYSTEM_ERROR`` when
            the device cannot be opened.
    """
    return virConnect(_open_driver(name, readonly=False))


def openReadOnly(name: str | None = None) -> virConnect:
    """Open a connection that refuses every change (``VIR_ERR_OPERATION_DENIED``).

    Raises:
        libvirtError: As :func:`open`.
    """
    return virConnect(_open_driver(name, readonly=True))


def openAuth(name: str | None, auth: object = None, flags: int = 0) -> virConnect:
    """Open a connection; ``VIR_CONNECT_RO`` makes it read-only.

    A local Jailhouse host asks for no credentials, so ``auth`` (libvirt's
    ``[credtypes, callback, opaque]``) is never called.

    Raises:
        libvirtError: As :func:`open`; ``VIR_ERR_INVALID_ARG`` for unknown flags.
    """
    del auth
    connect_ro = 1  # VIR_CONNECT_RO
    no_aliases = 2  # VIR_CONNECT_NO_ALIASES: there are no URI aliases to skip
    check_flags(flags, connect_ro | no_aliases, "virConnectOpenAuth")
    return virConnect(_open_driver(name, readonly=bool(flags & connect_ro)))


def _open_driver(name: str | None, *, readonly: bool) -> Driver:
    libvirt_uri = os.environ.get(_LIBVIRT_URI_ENV, "")
    from_libvirt = libvirt_uri if libvirt_uri.startswith(("sim:", "jailhouse:")) else None
    uri = name or os.environ.get(URI_ENV) or from_libvirt or _DEFAULT_URI
    parts = urlsplit(uri)
    if parts.scheme not in {"sim", "jailhouse"}:
        raise make_error(c.VIR_ERR_NO_CONNECT, uri, domain=c.VIR_FROM_NONE)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise make_error(
            c.VIR_ERR_INVALID_ARG, f"URI {uri!r}: malformed query", domain=c.VIR_FROM_NONE
        ) from exc
    ours = {key: value for key, value in pairs if key in {"domains", "system"}}
    for key, value in ours.items():
        if not value:
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                f"URI {uri!r}: parameter {key!r} is empty",
                domain=c.VIR_FROM_NONE,
            )
    rest = urlencode([(k, v) for k, v in pairs if k not in ours])
    hv_uri = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    from jailhouse.hypervisor import open as open_hypervisor  # noqa: PLC0415 - loads the shim

    try:
        hv: Hypervisor = open_hypervisor(hv_uri)
    except ValueError as exc:
        raise make_error(c.VIR_ERR_INVALID_ARG, str(exc), domain=c.VIR_FROM_NONE) from exc
    except Exception as exc:
        raise from_exception(exc) from exc
    if "domains" in ours:
        root = Path(ours["domains"])
    elif parts.scheme == "sim":
        root = Path(unquote(parts.path)) / "domains"
    else:
        root = Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)
    system = Path(ours["system"]) if "system" in ours else None
    store = DefinitionStore(root, readonly=readonly)
    return Driver(hv, store, uri=uri, system_path=system, readonly=readonly)


class virConnect(  # noqa: N801 - libvirt-python's name
    ConnectHost, ConnectStats, ConnectEvents, ConnectStreams, ConnectHabits
):
    """A connection to a Jailhouse hypervisor and its definitions, like libvirt's.

    Get one from :func:`open`.  Methods keep libvirt-python's names, arguments, return
    values and errors (:class:`libvirtError` with libvirt's codes).  Beyond libvirt:
    :meth:`systemConfig`, :meth:`setSystemConfig`, :meth:`enableHypervisor`, and the
    ``job`` keyword of :meth:`createXML` (progress and cancellation, see
    :mod:`jailhouse.jobs`).

    ``close()`` may be called again (libvirt raises ``VIR_ERR_INVALID_CONN`` then);
    every other call on a closed connection raises ``VIR_ERR_INVALID_CONN``.
    """

    def __init__(self, driver: Driver) -> None:
        """Wrap a driver; use :func:`open`."""
        self._driver: Driver | None = driver
        self._uri = driver.uri
        self._events_init()

    def __repr__(self) -> str:
        """Name the URI."""
        return f"virConnect({self._uri!r})"

    def __enter__(self) -> Self:
        """Return the connection."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection."""
        self.close()

    def _live(self, function: str) -> Driver:
        if self._driver is None:
            raise make_error(c.VIR_ERR_INVALID_CONN, function, domain=c.VIR_FROM_NONE)
        return self._driver

    @property
    def driver(self) -> Driver:
        """The engine behind the connection (for :mod:`jailhouse.apply` and the CLI).

        Raises:
            libvirtError: The connection is closed.
        """
        return self._live("driver")

    # -- the connection ------------------------------------------------------------------

    def close(self) -> int:
        """Close the connection and its device; closing again does nothing.

        Returns:
            0.
        """
        self._events_close()
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()
        return 0

    def isAlive(self) -> int:
        """Return 1 while the connection is open, else 0."""
        return int(self._driver is not None)

    def getType(self) -> str:
        """Return the driver name, ``"JAILHOUSE"``."""
        self._live("virConnectGetType")
        return "JAILHOUSE"

    def getURI(self) -> str:
        """Return the URI the connection was opened with."""
        self._live("virConnectGetURI")
        return self._uri

    def getHostname(self) -> str:
        """Return the host's name."""
        self._live("virConnectGetHostname")
        return socket.gethostname()

    # -- domains ---------------------------------------------------------------------------

    def defineXML(self, xml: str) -> virDomain:
        """Define a domain, or update the definition of one with the same name and UUID.

        The XML is translated into a cell config at once (placed clear of every other
        defined cell) and stored with it; a running domain keeps its cell until it is
        created again.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_FAILED`` when the name exists with another
                UUID (or the XML gives none) or the UUID under another name; XML and
                translation errors (27, 35, 21, 67); ``VIR_ERR_OPERATION_INVALID`` when
                no system config is known; ``VIR_ERR_OPERATION_DENIED`` when read-only.
        """
        return self.defineXMLFlags(xml, 0)

    def defineXMLFlags(self, xml: str, flags: int = 0) -> virDomain:
        """Define a domain; ``VIR_DOMAIN_DEFINE_VALIDATE`` is accepted (the translator validates).

        Raises:
            libvirtError: As :meth:`defineXML`; ``VIR_ERR_INVALID_ARG`` for other flags.
        """
        driver = self._live("virDomainDefineXMLFlags")
        check_flags(flags, c.VIR_DOMAIN_DEFINE_VALIDATE, "virDomainDefineXMLFlags")
        view = _call(lambda: driver.define(xml))
        return virDomain(self, view)

    def createXML(self, xmlDesc: str, flags: int = 0, *, job: Job | None = None) -> virDomain:
        """Create and start a transient domain (``VIR_DOMAIN_START_PAUSED``: do not start).

        Args:
            xmlDesc: The domain XML.
            flags: ``VIR_DOMAIN_START_*`` flags.
            job: Reports progress and can cancel (an extension of libvirt's signature).

        Raises:
            libvirtError: As :meth:`defineXML`; ``VIR_ERR_OPERATION_INVALID`` when the
                domain is active; ``VIR_ERR_OPERATION_ABORTED`` when cancelled; a driver
                error when booting fails.  A failed or cancelled create leaves no cell.
        """
        driver = self._live("virDomainCreateXML")
        check_flags(flags, _START_FLAGS, "virDomainCreateXML")
        paused = bool(flags & c.VIR_DOMAIN_START_PAUSED)
        view = _call(lambda: driver.create_xml(xmlDesc, paused=paused, job=job or Job()))
        return virDomain(self, view)

    def lookupByName(self, name: str) -> virDomain:
        """Return the domain of this name.

        Raises:
            libvirtError: ``VIR_ERR_NO_DOMAIN``.
        """
        driver = self._live("virDomainLookupByName")
        return virDomain(self, _call(lambda: driver.find_name(name)))

    def lookupByUUIDString(self, uuidstr: str) -> virDomain:
        """Return the domain with this UUID (dashes optional, any case).

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for a malformed UUID,
                ``VIR_ERR_NO_DOMAIN`` when none has it.
        """
        driver = self._live("virDomainLookupByUUIDString")
        if not _UUID_TEXT.fullmatch(str(uuidstr)):
            raise make_error(
                c.VIR_ERR_INVALID_ARG, f"Invalid UUID {uuidstr!r}", domain=c.VIR_FROM_DOMAIN
            )
        digits = uuidstr.replace("-", "").lower()
        canonical = f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
        return virDomain(self, _call(lambda: driver.find_uuid(canonical)))

    def lookupByUUID(self, uuid: bytes) -> virDomain:
        """Return the domain with this raw 16-byte UUID.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` unless 16 bytes, ``VIR_ERR_NO_DOMAIN``.
        """
        self._live("virDomainLookupByUUID")
        if len(uuid) != 16:
            raise make_error(c.VIR_ERR_INVALID_ARG, "Invalid UUID", domain=c.VIR_FROM_DOMAIN)
        return self.lookupByUUIDString(bytes(uuid).hex())

    def lookupByID(self, id: int) -> virDomain:  # noqa: A002 - libvirt-python's name
        """Return the active domain whose cell has this id; the root cell (0) is not one.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for a negative id, else
                ``VIR_ERR_NO_DOMAIN``.
        """
        driver = self._live("virDomainLookupByID")
        return virDomain(self, _call(lambda: driver.find_id(id)))

    def listAllDomains(self, flags: int = 0) -> list[virDomain]:
        """List domains, filtered by ``VIR_CONNECT_LIST_DOMAINS_*`` flags.

        Flags of one group are OR'd, groups are AND'd; a group with no flag set does not
        filter.  There is no managed save, autostart, snapshot or checkpoint, so
        ``MANAGEDSAVE``, ``AUTOSTART``, ``HAS_SNAPSHOT`` and ``HAS_CHECKPOINT`` match
        nothing and their ``NO_`` twins match everything.

        Returns:
            Active domains by cell id, then inactive ones by name.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for unknown flags.
        """
        driver = self._live("virConnectListAllDomains")
        check_flags(flags, _LIST_ALL, "virConnectListAllDomains")
        views = _call(driver.domains)
        return [virDomain(self, v) for v in views if _matches(v, flags)]

    def listDomainsID(self) -> list[int]:
        """Return the cell ids of the active domains."""
        driver = self._live("virConnectListDomains")
        return [v.id for v in _call(driver.domains) if v.active]

    def listDefinedDomains(self) -> list[str]:
        """Return the names of the defined domains that are not active."""
        driver = self._live("virConnectListDefinedDomains")
        return [v.name for v in _call(driver.domains) if not v.active and v.persistent]

    def numOfDomains(self) -> int:
        """Return the number of active domains."""
        return len(self.listDomainsID())

    def numOfDefinedDomains(self) -> int:
        """Return the number of defined domains that are not active."""
        return len(self.listDefinedDomains())

    # -- extensions -----------------------------------------------------------------------

    def systemConfig(self) -> SystemConfig:
        """Return the system config domains are placed on (not in libvirt).

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` when none is known.
        """
        driver = self._live("systemConfig")
        return _call(driver.system)

    def setSystemConfig(self, system: SystemConfig | bytes | str | os.PathLike[str]) -> None:
        """Record the system config of this connection's hypervisor (not in libvirt).

        Args:
            system: The config, its bytes, or its file.

        Raises:
            libvirtError: It is not a system config, or the connection is read-only.
        """
        driver = self._live("setSystemConfig")

        def run() -> None:
            config = system if isinstance(system, SystemConfig) else _load_system(system)
            driver.set_system(config)

        _call(run)


class virDomain(DomainStats, DomainConsole, DomainHabits):  # noqa: N801 - libvirt-python's name
    """A handle on one domain, by UUID; get it from a :class:`virConnect` lookup.

    ``name()``, ``UUIDString()`` and ``UUID()`` answer from the handle; ``ID()`` reads the
    cell id (-1 when inactive or gone); every other method finds the domain afresh and
    raises ``VIR_ERR_NO_DOMAIN`` once it is gone, as libvirt does for a stale handle.
    """

    def __init__(self, conn: virConnect, view: DomainView) -> None:
        """Make a handle; use the connection's lookups."""
        self._conn = conn
        self._uuid = view.uuid
        self._name = view.name

    @classmethod
    def _from_parts(cls, conn: virConnect, uuid: str, name: str) -> virDomain:
        """Make a handle from a UUID and a name (for event callbacks about a gone domain)."""
        dom = cls.__new__(cls)
        dom._conn, dom._uuid, dom._name = conn, uuid, name  # noqa: SLF001 - its own fields
        return dom

    def __eq__(self, other: object) -> bool:
        """Handles are equal when they name the same domain on the same connection."""
        if not isinstance(other, virDomain):
            return NotImplemented
        return self._conn is other._conn and self._uuid == other._uuid

    def __hash__(self) -> int:
        """Hash by UUID."""
        return hash(self._uuid)

    def __repr__(self) -> str:
        """Name the domain."""
        return f"virDomain({self._name!r}, {self._uuid!r})"

    def _view(self, function: str) -> tuple[Driver, DomainView]:
        driver = self._conn._live(function)  # noqa: SLF001 - the connection's own handle
        return driver, _call(lambda: driver.find_uuid(self._uuid, self._name))

    def _driver(self, function: str) -> Driver:
        return self._conn._live(function)  # noqa: SLF001

    # -- identity ------------------------------------------------------------------------

    def connect(self) -> virConnect:
        """Return the connection."""
        return self._conn

    def name(self) -> str:
        """Return the domain's name."""
        return self._name

    def UUIDString(self) -> str:
        """Return the UUID, lower-case with dashes."""
        return self._uuid

    def UUID(self) -> bytes:
        """Return the UUID's 16 bytes."""
        return bytes.fromhex(self._uuid.replace("-", ""))

    def ID(self) -> int:
        """Return the cell id, or -1 when the domain is inactive or gone."""
        driver = self._driver("virDomainGetID")
        try:
            return _call(lambda: driver.find_uuid(self._uuid)).id
        except libvirtError:
            return -1

    def OSType(self) -> str:
        """Return ``"hvm"``: a cell runs whatever runs on bare hardware."""
        self._view("virDomainGetOSType")
        return "hvm"

    # -- state -----------------------------------------------------------------------------

    def isActive(self) -> int:
        """Return 1 while the cell exists, else 0."""
        return int(self._view("virDomainIsActive")[1].active)

    def isPersistent(self) -> int:
        """Return 1 when the domain is defined, else 0."""
        return int(self._view("virDomainIsPersistent")[1].persistent is not None)

    def isUpdated(self) -> int:
        """Return 1 when the definition differs from what the running cell was made of."""
        view = self._view("virDomainIsUpdated")[1]
        return int(
            view.active
            and view.persistent is not None
            and view.live is not None
            and not view.live.same_cell(view.persistent)
        )

    def state(self, flags: int = 0) -> list[int]:
        """Return ``[state, reason]`` (see :mod:`jailhouse.virt` for the mapping).

        Raises:
            libvirtError: ``VIR_ERR_NO_DOMAIN``; ``VIR_ERR_INVALID_ARG`` for flags.
        """
        check_flags(flags, 0, "virDomainGetState")
        state, reason = self._view("virDomainGetState")[1].state()
        return [state, reason]

    def info(self) -> list[int]:
        """Return ``[state, maxMem KiB, memory KiB, nrVirtCpu, cpuTime ns]``.

        Memory is the cell's RAM (both values: a cell cannot balloon); the vCPUs are its
        CPUs; the CPU time is 0, as the driver does not publish it.
        """
        view = self._view("virDomainGetInfo")[1]
        memory = view.memory_kib()
        return [view.state()[0], memory, memory, view.vcpus(), 0]

    def maxMemory(self) -> int:
        """Return the cell's RAM in KiB."""
        return self._view("virDomainGetMaxMemory")[1].memory_kib()

    def maxVcpus(self) -> int:
        """Return the number of CPUs of the cell."""
        return self._view("virDomainGetMaxVcpus")[1].vcpus()

    def XMLDesc(self, flags: int = 0) -> str:
        """Return the domain XML: the running cell's while active, else the definition.

        ``VIR_DOMAIN_XML_INACTIVE`` asks for the definition even while active.  The
        jailhouse metadata holds the whole cell config, so defining the result again
        gives the same cell.

        Raises:
            libvirtError: ``VIR_ERR_NO_DOMAIN``; ``VIR_ERR_INVALID_ARG`` for flags.
        """
        check_flags(flags, _XML_FLAGS, "virDomainGetXMLDesc")
        driver, view = self._view("virDomainGetXMLDesc")
        inactive = bool(flags & c.VIR_DOMAIN_XML_INACTIVE)
        return _call(lambda: driver.xml_desc(view, inactive=inactive))

    # -- lifecycle ---------------------------------------------------------------------------

    def create(self, *, job: Job | None = None) -> int:
        """Boot the domain: create its cell, load its images and start it.

        The images are the definition's boot images; a definition without any runs the
        park-loop inmate (:func:`jailhouse.inmates.park_inmate`) at the cell's reset
        address, which keeps the CPUs idle and proves the cell works.  A domain whose
        cell exists but does not run (PAUSED, CRASHED) is loaded again and started.

        Args:
            job: Reports progress and can cancel (an extension of libvirt's signature).

        Returns:
            0.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` when it runs already or the
                hypervisor is not enabled; ``VIR_ERR_CONFIG_UNSUPPORTED`` for a Linux
                boot; ``VIR_ERR_OPERATION_ABORTED`` when cancelled; the driver's error.
                A failed or cancelled create leaves no cell it made.
        """
        return self.createWithFlags(0, job=job)

    def createWithFlags(self, flags: int = 0, *, job: Job | None = None) -> int:
        """Boot the domain; ``VIR_DOMAIN_START_PAUSED`` loads it without starting it.

        Raises:
            libvirtError: As :meth:`create`; ``VIR_ERR_INVALID_ARG`` for other flags.
        """
        check_flags(flags, _START_FLAGS, "virDomainCreateWithFlags")
        driver = self._driver("virDomainCreateWithFlags")
        paused = bool(flags & c.VIR_DOMAIN_START_PAUSED)
        _call(lambda: driver.start(self._uuid, self._name, paused=paused, job=job or Job()))
        return 0

    def shutdown(self) -> int:
        """Ask the cell to stop: its CPUs are parked, it keeps them and its memory.

        This is ``jailhouse cell shutdown`` (a load of no images).  The domain stays
        active, in state PAUSED (reason ``SHUTTING_DOWN``); ``destroy()`` then returns
        the CPUs and memory to the root cell, ``resume()`` or ``create()`` start it again.

        Returns:
            0.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless it runs;
                ``VIR_ERR_OPERATION_FAILED`` when the cell refuses (running/locked or
                an inmate that denies the shutdown).
        """
        driver = self._driver("virDomainShutdown")
        _call(lambda: driver.shutdown(self._uuid, self._name))
        return 0

    def shutdownFlags(self, flags: int = 0) -> int:
        """Shut down; every ``VIR_DOMAIN_SHUTDOWN_*`` method means the same for a cell."""
        check_flags(flags, 0x1F, "virDomainShutdownFlags")
        return self.shutdown()

    def destroy(self) -> int:
        """Destroy the cell: its CPUs and memory go back to the root cell at once.

        A defined domain becomes inactive (SHUTOFF, reason ``DESTROYED``, ID -1); a
        transient one is gone.

        Returns:
            0.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless active; the driver's
                error (another cell is running/locked, the cell refused).
        """
        driver = self._driver("virDomainDestroy")
        _call(lambda: driver.destroy(self._uuid, self._name))
        return 0

    def destroyFlags(self, flags: int = 0) -> int:
        """Destroy; ``GRACEFUL`` and ``REMOVE_LOGS`` change nothing for a cell."""
        check_flags(
            flags,
            c.VIR_DOMAIN_DESTROY_GRACEFUL | c.VIR_DOMAIN_DESTROY_REMOVE_LOGS,
            "virDomainDestroyFlags",
        )
        return self.destroy()

    def resume(self) -> int:
        """Start a PAUSED (shut down) cell again, from its reset address.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless PAUSED.
        """
        driver = self._driver("virDomainResume")
        _call(lambda: driver.resume(self._uuid, self._name))
        return 0

    def suspend(self) -> int:
        """Refuse: a cell cannot be suspended and resumed where it was.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_UNSUPPORTED``, always.
        """
        self._view("virDomainSuspend")
        raise make_error(c.VIR_ERR_OPERATION_UNSUPPORTED, _SUSPEND)

    def reboot(self, flags: int = 0, *, job: Job | None = None) -> int:
        """Load the cell's images again and restart it (every reboot method is the same).

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless active; as :meth:`create`.
        """
        check_flags(flags, _REBOOT_FLAGS, "virDomainReboot")
        driver = self._driver("virDomainReboot")
        _call(lambda: driver.reboot(self._uuid, self._name, job=job or Job()))
        return 0

    def undefine(self) -> int:
        """Remove the definition; a running domain keeps running, as a transient one.

        Returns:
            0.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` for a transient domain,
                ``VIR_ERR_NO_DOMAIN`` when it is gone.
        """
        driver = self._driver("virDomainUndefine")
        _call(lambda: driver.undefine(self._uuid, self._name))
        return 0

    def undefineFlags(self, flags: int = 0) -> int:
        """Undefine; the ``VIR_DOMAIN_UNDEFINE_*`` flags name things a cell does not have."""
        check_flags(flags, _UNDEFINE_FLAGS, "virDomainUndefineFlags")
        return self.undefine()

    # -- jobs ------------------------------------------------------------------------------

    def abortJob(self) -> int:
        """Cancel the create or reboot running on this domain in this process.

        The operation stops at its next step, undoes what it did and raises
        ``VIR_ERR_OPERATION_ABORTED``.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` when no job runs.
        """
        self._driver("virDomainAbortJob")
        job = Driver.job_of(self._uuid)
        if job is None or not job.active:
            raise make_error(c.VIR_ERR_OPERATION_INVALID, "no job is active on the domain")
        job.cancel()
        return 0

    def jobInfo(self) -> list[int]:
        """Return libvirt's job info list for the job running on this domain in this process.

        ``[type, timeElapsed ms, timeRemaining, dataTotal, dataProcessed, dataRemaining,
        memTotal, memProcessed, memRemaining, fileTotal, fileProcessed, fileRemaining]``:
        the data fields count image bytes; the file fields count steps.  The type is
        ``VIR_DOMAIN_JOB_NONE`` when no job runs.
        """
        self._driver("virDomainGetJobInfo")
        job = Driver.job_of(self._uuid)
        if job is None or not job.active:
            return [c.VIR_DOMAIN_JOB_NONE] + [0] * 11
        p = job.snapshot()
        return [
            c.VIR_DOMAIN_JOB_BOUNDED,
            int(p.elapsed * 1000),
            0,
            p.bytes_total,
            p.bytes_done,
            p.bytes_total - p.bytes_done,
            0,
            0,
            0,
            p.steps,
            p.step_index,
            p.steps - p.step_index,
        ]

    # -- migration -------------------------------------------------------------

    def _no_migration(self, function: str) -> libvirtError:
        self._view(function)
        return make_error(c.VIR_ERR_OPERATION_UNSUPPORTED, _MIGRATION)

    # Offline and cold moves are jailhouse.virt._migrate's; live migration is refused there.

    def migrate(
        self,
        dconn: virConnect,
        flags: int = 0,
        dname: str | None = None,
        uri: str | None = None,  # noqa: ARG002 - a data channel: nothing streams
        bandwidth: int = 0,  # noqa: ARG002 - same reason
        *,
        cold: bool = False,
    ) -> virDomain:
        """Move the domain to ``dconn``: offline (the definition), or cold (stop, start there).

        See :mod:`jailhouse.virt._migrate`; ``cold`` is an extension of libvirt's
        signature.  Live migration raises ``VIR_ERR_OPERATION_UNSUPPORTED``.
        """
        from jailhouse.virt import _migrate  # noqa: PLC0415 - it imports this module

        self._view("virDomainMigrate")
        return _migrate.migrate(self, dconn, flags, dname=dname, cold=cold)

    def migrate2(  # noqa: PLR0917 - libvirt-python's signature
        self,
        dconn: virConnect,
        dxml: str | None = None,
        flags: int = 0,
        dname: str | None = None,
        uri: str | None = None,  # noqa: ARG002 - a data channel: nothing streams
        bandwidth: int = 0,  # noqa: ARG002 - same reason
        *,
        cold: bool = False,
    ) -> virDomain:
        """Move the domain as :meth:`migrate`, defining it there from ``dxml`` if given."""
        from jailhouse.virt import _migrate  # noqa: PLC0415

        self._view("virDomainMigrate2")
        return _migrate.migrate(self, dconn, flags, dname=dname, dxml=dxml, cold=cold)

    def migrate3(
        self,
        dconn: virConnect,
        params: Mapping[str, object] | None = None,
        flags: int = 0,
        *,
        cold: bool = False,
    ) -> virDomain:
        """Move the domain as :meth:`migrate`; ``params`` may name the destination and XML."""
        from jailhouse.virt import _migrate  # noqa: PLC0415

        self._view("virDomainMigrate3")
        dname, dxml = _migrate.migrate_params(params, "virDomainMigrate3")
        return _migrate.migrate(self, dconn, flags, dname=dname, dxml=dxml, cold=cold)

    def migrateToURI(
        self,
        duri: str,
        flags: int = 0,
        dname: str | None = None,
        bandwidth: int = 0,  # noqa: ARG002 - a data channel: nothing streams
        *,
        cold: bool = False,
    ) -> int:
        """Move the domain to the connection ``duri`` opens (peer to peer); return 0."""
        from jailhouse.virt import _migrate  # noqa: PLC0415

        self._view("virDomainMigrateToURI")
        _migrate.migrate_to_uri(self, duri, flags, dname=dname, cold=cold)
        return 0

    def migrateToURI2(  # noqa: PLR0917 - libvirt-python's signature
        self,
        dconnuri: str | None = None,
        miguri: str | None = None,  # noqa: ARG002 - a data channel: nothing streams
        dxml: str | None = None,
        flags: int = 0,
        dname: str | None = None,
        bandwidth: int = 0,  # noqa: ARG002 - same reason
        *,
        cold: bool = False,
    ) -> int:
        """Move the domain to the connection ``dconnuri`` opens, as :meth:`migrate2`."""
        from jailhouse.virt import _migrate  # noqa: PLC0415

        self._view("virDomainMigrateToURI2")
        _migrate.precheck(self, flags, cold=cold)
        if not dconnuri:
            raise make_error(c.VIR_ERR_INVALID_ARG, "virDomainMigrateToURI2 needs dconnuri")
        _migrate.migrate_to_uri(self, dconnuri, flags, dname=dname, dxml=dxml, cold=cold)
        return 0

    def migrateToURI3(
        self,
        dconnuri: str,
        params: Mapping[str, object] | None = None,
        flags: int = 0,
        *,
        cold: bool = False,
    ) -> int:
        """Move the domain to the connection ``dconnuri`` opens, as :meth:`migrate3`."""
        from jailhouse.virt import _migrate  # noqa: PLC0415

        self._view("virDomainMigrateToURI3")
        dname, dxml = _migrate.migrate_params(params, "virDomainMigrateToURI3")
        _migrate.migrate_to_uri(self, dconnuri, flags, dname=dname, dxml=dxml, cold=cold)
        return 0

    def migrateSetMaxDowntime(self, *args: object, **kwargs: object) -> int:  # noqa: ARG002 - any arguments
        """Refuse: a cell cannot migrate (``VIR_ERR_OPERATION_UNSUPPORTED``)."""
        raise self._no_migration("virDomainMigrateSetMaxDowntime")

    def migrateSetMaxSpeed(self, *args: object, **kwargs: object) -> int:  # noqa: ARG002 - any arguments
        """Refuse: a cell cannot migrate (``VIR_ERR_OPERATION_UNSUPPORTED``)."""
        raise self._no_migration("virDomainMigrateSetMaxSpeed")

    def migrateGetMaxSpeed(self, *args: object, **kwargs: object) -> int:  # noqa: ARG002 - any arguments
        """Refuse: a cell cannot migrate (``VIR_ERR_OPERATION_UNSUPPORTED``)."""
        raise self._no_migration("virDomainMigrateGetMaxSpeed")

    def migrateGetMaxDowntime(self, *args: object, **kwargs: object) -> int:  # noqa: ARG002 - any arguments
        """Refuse: a cell cannot migrate (``VIR_ERR_OPERATION_UNSUPPORTED``)."""
        raise self._no_migration("virDomainMigrateGetMaxDowntime")

    def migrateStartPostCopy(self, *args: object, **kwargs: object) -> int:  # noqa: ARG002 - any arguments
        """Refuse: a cell cannot migrate (``VIR_ERR_OPERATION_UNSUPPORTED``)."""
        raise self._no_migration("virDomainMigrateStartPostCopy")


def _load_system(source: bytes | str | os.PathLike[str]) -> SystemConfig:
    config = load_config(source if isinstance(source, bytes) else Path(source))
    if not isinstance(config, SystemConfig):
        raise make_error(
            c.VIR_ERR_CONFIG_UNSUPPORTED,
            f"{source if not isinstance(source, bytes) else 'the bytes'}: is the cell config "
            f"{config.name!r}, not a system config",
            domain=c.VIR_FROM_NONE,
        )
    return config


def _group(flags: int, members: dict[int, bool]) -> bool:
    """Whether a view passes one flag group: no flag of it set, or one that matches."""
    asked = [flag for flag in members if flags & flag]
    return not asked or any(members[flag] for flag in asked)


def _matches(view: DomainView, flags: int) -> bool:
    state = view.state()[0]
    groups: list[dict[int, bool]] = [
        {
            c.VIR_CONNECT_LIST_DOMAINS_ACTIVE: view.active,
            c.VIR_CONNECT_LIST_DOMAINS_INACTIVE: not view.active,
        },
        {
            c.VIR_CONNECT_LIST_DOMAINS_PERSISTENT: view.persistent is not None,
            c.VIR_CONNECT_LIST_DOMAINS_TRANSIENT: view.persistent is None,
        },
        {
            c.VIR_CONNECT_LIST_DOMAINS_RUNNING: state == c.VIR_DOMAIN_RUNNING,
            c.VIR_CONNECT_LIST_DOMAINS_PAUSED: state == c.VIR_DOMAIN_PAUSED,
            c.VIR_CONNECT_LIST_DOMAINS_SHUTOFF: state == c.VIR_DOMAIN_SHUTOFF,
            c.VIR_CONNECT_LIST_DOMAINS_OTHER: state
            not in {c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_PAUSED, c.VIR_DOMAIN_SHUTOFF},
        },
        {
            c.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE: False,
            c.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE: True,
        },
        {
            c.VIR_CONNECT_LIST_DOMAINS_AUTOSTART: False,
            c.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART: True,
        },
        {
            c.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT: False,
            c.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT: True,
        },
        {
            c.VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT: False,
            c.VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT: True,
        },
    ]
    return all(_group(flags, group) for group in groups)


complete(virConnect)
complete(virDomain)
