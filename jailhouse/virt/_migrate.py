"""Migration as a partitioning hypervisor can honestly do it: the definition moves.

A cell owns physical CPUs and memory of one machine, so its running state cannot move
(live migration raises ``VIR_ERR_OPERATION_UNSUPPORTED``).  What can move is what
defines it:

- ``VIR_MIGRATE_OFFLINE`` (with ``VIR_MIGRATE_PERSIST_DEST``, as libvirt requires): the
  domain XML it was defined from and the files it boots (images, kernel, initrd, dtb)
  go to the destination, which places the cell on *its own* system config and checks the
  result against its other domains before it writes anything.  Image files are copied to
  ``IMAGES/NAME/`` next to the destination's definitions (``DOMAINS/../images``) and the
  XML names the copies.  The source keeps running if it ran, as in libvirt.
- ``cold=True`` (an extension): stop the cell here, start it there.  The cell's state is
  lost, so this is only done when asked; if the destination cannot start it, the
  destination's definition is removed and the source is started again.
- ``VIR_MIGRATE_UNDEFINE_SOURCE`` removes the source definition, only once the
  destination holds the domain; ``dname`` renames it, a destination XML replaces the
  definition's (same UUID).

:class:`MigrationPackage` is the moving part as a value; the Salt runner carries it from
one minion to another through the master, as JSON.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jailhouse.config.validate import Severity, check_configs
from jailhouse.domxml import NS, parse_document
from jailhouse.errors import JailhouseError
from jailhouse.store import write_atomically
from jailhouse.virt import _constants as c
from jailhouse.virt._errors import from_exception, libvirtError, make_error

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lxml import etree

    from jailhouse.store import Definition
    from jailhouse.virt._api import virConnect, virDomain

__all__ = [
    "VIR_MIGRATE_ABORT_ON_ERROR",
    "VIR_MIGRATE_AUTO_CONVERGE",
    "VIR_MIGRATE_CHANGE_PROTECTION",
    "VIR_MIGRATE_COMPRESSED",
    "VIR_MIGRATE_LIVE",
    "VIR_MIGRATE_NON_SHARED_DISK",
    "VIR_MIGRATE_NON_SHARED_INC",
    "VIR_MIGRATE_OFFLINE",
    "VIR_MIGRATE_PARAM_BANDWIDTH",
    "VIR_MIGRATE_PARAM_DEST_NAME",
    "VIR_MIGRATE_PARAM_DEST_XML",
    "VIR_MIGRATE_PARAM_PERSIST_XML",
    "VIR_MIGRATE_PARAM_URI",
    "VIR_MIGRATE_PAUSED",
    "VIR_MIGRATE_PEER2PEER",
    "VIR_MIGRATE_PERSIST_DEST",
    "VIR_MIGRATE_POSTCOPY",
    "VIR_MIGRATE_TUNNELLED",
    "VIR_MIGRATE_UNDEFINE_SOURCE",
    "VIR_MIGRATE_UNSAFE",
]

# libvirt's virDomainMigrateFlags values (libvirt-domain.h).
VIR_MIGRATE_LIVE: Final = 1
VIR_MIGRATE_PEER2PEER: Final = 2
VIR_MIGRATE_TUNNELLED: Final = 4
VIR_MIGRATE_PERSIST_DEST: Final = 8
VIR_MIGRATE_UNDEFINE_SOURCE: Final = 16
VIR_MIGRATE_PAUSED: Final = 32
VIR_MIGRATE_NON_SHARED_DISK: Final = 64
VIR_MIGRATE_NON_SHARED_INC: Final = 128
VIR_MIGRATE_CHANGE_PROTECTION: Final = 256
VIR_MIGRATE_UNSAFE: Final = 512
VIR_MIGRATE_OFFLINE: Final = 1024
VIR_MIGRATE_COMPRESSED: Final = 2048
VIR_MIGRATE_ABORT_ON_ERROR: Final = 4096
VIR_MIGRATE_AUTO_CONVERGE: Final = 8192
VIR_MIGRATE_POSTCOPY: Final = 32768
# Typed-parameter names of migrate3() / migrateToURI3().
VIR_MIGRATE_PARAM_URI: Final = "migrate_uri"
VIR_MIGRATE_PARAM_DEST_NAME: Final = "destination_name"
VIR_MIGRATE_PARAM_DEST_XML: Final = "destination_xml"
VIR_MIGRATE_PARAM_PERSIST_XML: Final = "persistent_xml"
VIR_MIGRATE_PARAM_BANDWIDTH: Final = "bandwidth"

_LIVE_REASON: Final = (
    "a Jailhouse cell cannot migrate live: a partitioning hypervisor gives a running cell "
    "physical CPUs and memory of this machine, and its state cannot move to another; use "
    "VIR_MIGRATE_OFFLINE (the definition moves, the cell keeps running here) or a cold "
    "move (stop here, start there: the cell's state is lost)"
)
_STATEFUL: Final = VIR_MIGRATE_LIVE | VIR_MIGRATE_POSTCOPY | VIR_MIGRATE_PAUSED
# Flags that change nothing when only files move: transports and disk copying (images
# are always copied), safety checks.
_HARMLESS: Final = (
    VIR_MIGRATE_PEER2PEER
    | VIR_MIGRATE_TUNNELLED
    | VIR_MIGRATE_NON_SHARED_DISK
    | VIR_MIGRATE_NON_SHARED_INC
    | VIR_MIGRATE_CHANGE_PROTECTION
    | VIR_MIGRATE_UNSAFE
    | VIR_MIGRATE_COMPRESSED
    | VIR_MIGRATE_ABORT_ON_ERROR
    | VIR_MIGRATE_AUTO_CONVERGE
)
_KNOWN: Final = (
    _STATEFUL
    | _HARMLESS
    | VIR_MIGRATE_OFFLINE
    | VIR_MIGRATE_PERSIST_DEST
    | VIR_MIGRATE_UNDEFINE_SOURCE
)
_PARAMS: Final = frozenset(
    {
        VIR_MIGRATE_PARAM_URI,
        VIR_MIGRATE_PARAM_DEST_NAME,
        VIR_MIGRATE_PARAM_DEST_XML,
        VIR_MIGRATE_PARAM_PERSIST_XML,
        VIR_MIGRATE_PARAM_BANDWIDTH,
    }
)
_FILE_TAGS: Final = ("kernel", "initrd", "dtb")


@dataclass(frozen=True, slots=True)
class MigrationFile:
    """A file a definition boots, with its contents.

    Attributes:
        path: Where the source has it (the path its XML names).
        data: Its bytes.
    """

    path: str
    data: bytes


@dataclass(frozen=True, slots=True)
class MigrationPackage:
    """What a migration moves: the definition's XML, its boot files, and where it ran.

    Attributes:
        name: The domain's name on the source.
        uuid: Its UUID (kept on the destination).
        xml: The domain XML it was defined from (not the placed cell: the destination
            places it on its own system config).
        files: The files its XML names for booting.
        active: Whether its cell exists on the source.
        source: The source connection's URI.
    """

    name: str
    uuid: str
    xml: str
    files: tuple[MigrationFile, ...]
    active: bool
    source: str

    def to_json(self) -> dict[str, Any]:
        """Return the package as JSON-ready data, file contents in base64."""
        return {
            "name": self.name,
            "uuid": self.uuid,
            "xml": self.xml,
            "files": [
                {"path": f.path, "data": base64.b64encode(f.data).decode("ascii")}
                for f in self.files
            ],
            "active": self.active,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: object) -> MigrationPackage:
        """Read a package made by :meth:`to_json`.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` naming the field that is wrong.
        """
        if not isinstance(data, dict):
            raise _invalid(f"a migration package is a dict, not {type(data).__name__}")
        try:
            files = tuple(
                MigrationFile(str(f["path"]), base64.b64decode(f["data"], validate=True))
                for f in data["files"]
            )
            return cls(
                name=str(data["name"]),
                uuid=str(data["uuid"]),
                xml=str(data["xml"]),
                files=files,
                active=bool(data["active"]),
                source=str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _invalid(f"malformed migration package: {exc!r}") from exc


def _invalid(detail: str) -> libvirtError:
    return make_error(c.VIR_ERR_INVALID_ARG, detail)


# -- the source side --------------------------------------------------------------------------


def _boot_paths(definition: Definition) -> list[str]:
    boot = definition.boot
    paths = [image.path for image in boot.images]
    paths += [p for p in (boot.kernel, boot.initrd, boot.dtb) if p is not None]
    return list(dict.fromkeys(paths))


def export_package(dom: virDomain) -> MigrationPackage:
    """Collect what moving a defined domain takes; change nothing.

    Raises:
        libvirtError: ``VIR_ERR_OPERATION_INVALID`` for a transient domain (there is no
            definition to move); ``VIR_ERR_SYSTEM_ERROR`` when a boot file cannot be read.
    """
    from jailhouse.virt._api import _call  # noqa: PLC0415 - _api imports this module

    conn = dom.connect()
    view = _call(lambda: conn.driver.find_uuid(dom.UUIDString(), dom.name()))
    definition = view.persistent
    if definition is None:
        raise make_error(
            c.VIR_ERR_OPERATION_INVALID,
            f"domain '{view.name}' is transient: only its cell exists here, and there is no "
            "definition to move",
        )
    files: list[MigrationFile] = []
    for path in _boot_paths(definition):
        try:
            files.append(MigrationFile(path, Path(path).read_bytes()))
        except OSError as exc:
            exc.add_note(f"domain '{view.name}' boots {path}, which must move with it")
            raise from_exception(exc) from exc
    return MigrationPackage(
        name=view.name,
        uuid=view.uuid,
        xml=definition.xml,
        files=tuple(files),
        active=view.active,
        source=conn.getURI(),
    )


# -- the destination side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    name: str
    xml: str
    copies: dict[str, Path]  # destination path -> source path (for messages)
    contents: dict[Path, bytes]


def images_dir(dconn: virConnect, name: str) -> Path:
    """Return where a destination keeps the boot files of a migrated domain."""
    return dconn.driver.store.root.parent / "images" / name


def _prepare(
    dconn: virConnect, package: MigrationPackage, *, dname: str | None, dxml: str | None
) -> _Prepared:
    """Make the destination's XML: the new name, the UUID, the copies' paths."""
    root = parse_document(dxml if dxml is not None else package.xml)
    name_el = root.find("name")
    if name_el is None or not (name_el.text or "").strip():
        raise make_error(c.VIR_ERR_XML_ERROR, "the destination XML has no <name>")
    name = dname or (name_el.text or "").strip()
    name_el.text = name
    uuid_el = root.find("uuid")
    if uuid_el is None:
        uuid_el = _insert_after(name_el, "uuid")
        uuid_el.text = package.uuid
    elif (uuid_el.text or "").strip().replace("-", "").lower() != package.uuid.replace("-", ""):
        raise make_error(
            c.VIR_ERR_INVALID_ARG,
            f"the destination XML has uuid {uuid_el.text}, the domain has {package.uuid}: "
            "a migrated domain keeps its UUID",
        )
    target = images_dir(dconn, name)
    copies: dict[str, Path] = {}
    contents: dict[Path, bytes] = {}
    for index, item in enumerate(package.files):
        copy = target / f"{index}-{Path(item.path).name}"
        copies[item.path] = copy
        contents[copy] = item.data
    for image in root.iter(f"{{{NS}}}image"):
        source = image.get("file")
        if source in copies:
            image.set("file", str(copies[source]))
    os_el = root.find("os")
    if os_el is not None:
        for tag in _FILE_TAGS:
            el = os_el.find(tag)
            if el is not None and (el.text or "").strip() in copies:
                el.text = str(copies[(el.text or "").strip()])
    from lxml import etree  # noqa: PLC0415

    xml = etree.tostring(root, encoding="unicode")
    return _Prepared(name, xml, {str(k): Path(v) for k, v in copies.items()}, contents)


def _insert_after(anchor: etree._Element, tag: str) -> etree._Element:
    from lxml import etree  # noqa: PLC0415

    el = etree.Element(tag)
    el.tail = anchor.tail
    anchor.addnext(el)
    return el


def check_package(
    dconn: virConnect,
    package: MigrationPackage,
    *,
    dname: str | None = None,
    dxml: str | None = None,
) -> str:
    """Check that the destination can take the domain; change nothing.

    The XML is placed on the destination's system config, clear of its other domains,
    and the result is checked with them (``check_configs``).

    Returns:
        The XML the destination would define.

    Raises:
        libvirtError: The name or UUID exists there (``VIR_ERR_OPERATION_INVALID``), the
            cell cannot be placed or fails the checks (the translator's code, or
            ``VIR_ERR_CONFIG_UNSUPPORTED`` naming the findings), the destination is
            read-only or knows no system config.
    """
    return _check(dconn, _prepare(dconn, package, dname=dname, dxml=dxml), package).xml


def _check(dconn: virConnect, prepared: _Prepared, package: MigrationPackage) -> _Prepared:
    from jailhouse.virt._api import _call  # noqa: PLC0415

    driver = dconn.driver
    driver.check_writable("virDomainMigratePrepare3")
    uri = dconn.getURI()

    def run() -> None:
        views = driver.domains()
        for view in views:
            if view.name == prepared.name:
                raise make_error(
                    c.VIR_ERR_OPERATION_INVALID,
                    f"domain '{prepared.name}' already exists on {uri} (uuid {view.uuid})",
                )
            if view.uuid == package.uuid:
                raise make_error(
                    c.VIR_ERR_OPERATION_INVALID,
                    f"a domain with uuid {package.uuid} already exists on {uri} ('{view.name}')",
                )
        definition = driver.translate(prepared.xml, uuid=package.uuid, others=views)
        others = [
            d.config
            for v in views
            for d in (v.persistent, v.live)
            if d is not None and d.name != prepared.name
        ]
        errors = [
            f
            for f in check_configs(driver.system(), *dict.fromkeys(others), definition.config)
            if f.severity == Severity.ERROR
        ]
        if errors:
            raise make_error(
                c.VIR_ERR_CONFIG_UNSUPPORTED,
                f"domain '{prepared.name}' does not fit on {uri}: "
                + "; ".join(str(f) for f in errors),
            )

    _call(run)
    return prepared


def import_package(
    dconn: virConnect,
    package: MigrationPackage,
    *,
    dname: str | None = None,
    dxml: str | None = None,
    start: bool = False,
) -> virDomain:
    """Define a migrated domain on the destination (checked first), and start it if asked.

    Nothing is left behind on failure: copied files are removed, the definition is
    undefined again when the start fails.

    Raises:
        libvirtError: As :func:`check_package`; the start's error.
    """
    dom, written = _import(dconn, package, dname=dname, dxml=dxml)
    if start:
        try:
            dom.create()
        except BaseException as exc:
            _undo_define(dom, written, exc)
            raise
    return dom


def _import(
    dconn: virConnect, package: MigrationPackage, *, dname: str | None, dxml: str | None
) -> tuple[virDomain, list[Path]]:
    """Check, copy the files, define; return the domain and the files written."""
    prepared = _check(dconn, _prepare(dconn, package, dname=dname, dxml=dxml), package)
    written: list[Path] = []
    try:
        for path, data in prepared.contents.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
            written.append(path)
        dom = dconn.defineXML(prepared.xml)
    except BaseException as exc:
        _remove(written, exc)
        if isinstance(exc, OSError):
            raise from_exception(exc) from exc
        raise
    return dom, written


def _remove(paths: list[Path], exc: BaseException) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as cleanup:
            exc.add_note(f"rollback: removing {path} failed too: {cleanup}")
    for parent in {p.parent for p in paths}:
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty: files put there by hand stay


def _undo_define(dom: virDomain, written: list[Path], exc: BaseException) -> None:
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except (libvirtError, JailhouseError, OSError) as cleanup:
        exc.add_note(f"rollback: undefining '{dom.name()}' on the destination failed: {cleanup}")
    _remove(written, exc)


# -- the whole move ---------------------------------------------------------------------------


def migrate(
    dom: virDomain,
    dconn: virConnect,
    flags: int,
    *,
    dname: str | None = None,
    dxml: str | None = None,
    cold: bool = False,
) -> virDomain:
    """Move a domain to ``dconn`` (see the module docstring for what moves when).

    Returns:
        The domain on the destination.

    Raises:
        libvirtError: ``VIR_ERR_OPERATION_UNSUPPORTED`` for live migration (a running
            domain without ``VIR_MIGRATE_OFFLINE`` or ``cold``);
            ``VIR_ERR_INVALID_ARG`` for unknown flags, ``OFFLINE`` without
            ``PERSIST_DEST``, ``OFFLINE`` with ``LIVE``; ``VIR_ERR_OPERATION_INVALID``
            for the same connection twice or an inactive domain without ``OFFLINE`` or
            ``cold``; the destination's errors (nothing changed on either side then).
    """
    precheck(dom, flags, cold=cold)
    src = dom.connect()
    if src.driver.store.root.resolve() == dconn.driver.store.root.resolve():
        raise make_error(
            c.VIR_ERR_OPERATION_INVALID,
            f"source and destination are the same host ({src.getURI()}): nothing to move",
        )
    active = bool(dom.isActive())
    package = export_package(dom)
    if cold and active:
        moved = _cold(dom, dconn, package, dname=dname, dxml=dxml)
    else:
        moved = import_package(dconn, package, dname=dname, dxml=dxml)
    if flags & VIR_MIGRATE_UNDEFINE_SOURCE:
        try:
            dom.undefine()
        except libvirtError as exc:
            exc.add_note(
                f"the destination {dconn.getURI()} holds '{moved.name()}' already; the "
                "source definition is still there"
            )
            raise
    return moved


def precheck(dom: virDomain, flags: int, *, cold: bool) -> None:
    """Check the flags against the source domain, before any destination is opened.

    Raises:
        libvirtError: As :func:`migrate`, for everything the source alone decides.
    """
    if flags < 0 or flags & ~_KNOWN:
        raise _invalid(f"unsupported flags ({flags & ~_KNOWN:#x}) in function virDomainMigrate3")
    offline = bool(flags & VIR_MIGRATE_OFFLINE)
    if offline and flags & _STATEFUL:
        raise _invalid("VIR_MIGRATE_OFFLINE cannot be combined with LIVE, POSTCOPY or PAUSED")
    if offline and not flags & VIR_MIGRATE_PERSIST_DEST:
        raise _invalid("offline migration requires VIR_MIGRATE_PERSIST_DEST")
    active = bool(dom.isActive())
    if flags & _STATEFUL or (active and not offline and not cold):
        raise make_error(c.VIR_ERR_OPERATION_UNSUPPORTED, _LIVE_REASON)
    if not active and not offline and not cold:
        raise make_error(
            c.VIR_ERR_OPERATION_INVALID,
            "domain is not running: move its definition with VIR_MIGRATE_OFFLINE",
        )


def _cold(
    dom: virDomain,
    dconn: virConnect,
    package: MigrationPackage,
    *,
    dname: str | None,
    dxml: str | None,
) -> virDomain:
    """Define there, stop here, start there; on failure start here again."""
    moved, written = _import(dconn, package, dname=dname, dxml=dxml)
    try:
        dom.destroy()
    except BaseException as exc:
        _undo_define(moved, written, exc)
        raise
    try:
        moved.create()
    except BaseException as exc:
        _undo_define(moved, written, exc)
        try:
            dom.create()
        except (libvirtError, JailhouseError, OSError) as restart:
            exc.add_note(f"rollback: starting '{dom.name()}' on the source failed: {restart}")
        raise
    return moved


def migrate_params(
    params: Mapping[str, object] | None, function: str
) -> tuple[str | None, str | None]:
    """Return ``(dname, dxml)`` from migrate3()'s typed parameters.

    Raises:
        libvirtError: ``VIR_ERR_INVALID_ARG`` for an unknown parameter or a name or XML
            that is not a string.
    """
    params = params or {}
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise _invalid(f"unsupported parameter '{unknown[0]}' in function {function}")
    out: list[str | None] = []
    for key in (VIR_MIGRATE_PARAM_DEST_NAME, VIR_MIGRATE_PARAM_DEST_XML):
        value = params.get(key)
        if key == VIR_MIGRATE_PARAM_DEST_XML and value is None:
            value = params.get(VIR_MIGRATE_PARAM_PERSIST_XML)
        if value is not None and not isinstance(value, str):
            raise _invalid(f"parameter '{key}' of {function} must be a string, not {value!r}")
        out.append(value or None)
    return out[0], out[1]


def migrate_to_uri(
    dom: virDomain,
    duri: str,
    flags: int,
    *,
    dname: str | None = None,
    dxml: str | None = None,
    cold: bool = False,
) -> None:
    """Open the destination URI and :func:`migrate` there (the peer-to-peer form).

    Raises:
        libvirtError: As :func:`migrate`, or the destination cannot be opened.
    """
    from jailhouse.virt._api import open as open_uri  # noqa: PLC0415

    precheck(dom, flags, cold=cold)
    with open_uri(duri) as dconn:
        migrate(dom, dconn, flags, dname=dname, dxml=dxml, cold=cold)
