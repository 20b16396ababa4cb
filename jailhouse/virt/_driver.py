"""The facade's engine: domains as the definitions store and the hypervisor show them.

A domain is *defined* when the store holds a definition for it and *active* when a cell
of its name exists.  Every query reads both afresh (:meth:`Driver.domains`); every change
holds the store's lock from the first read to the last write, so processes sharing a
connection URI take turns.

State mapping (:meth:`DomainView.state`):

==========================================  ==============================================
cell                                        libvirt state, reason
==========================================  ==============================================
none                                        ``SHUTOFF``, ``SHUTDOWN`` after shutdown()
                                            then destroy(), ``DESTROYED`` after destroy()
                                            alone, else ``UNKNOWN``; ID -1
``running``, ``running/locked``             ``RUNNING``, ``BOOTED`` after create(),
                                            ``UNPAUSED`` after resume(), else ``UNKNOWN``
``shut down`` (created, loaded, or shut     ``PAUSED``, ``SHUTTING_DOWN`` after
down: CPUs parked, CPUs and memory held)    shutdown(), ``USER`` after create(START_PAUSED),
                                            else ``UNKNOWN``
``failed``, ``Comm ABI mismatch``           ``CRASHED``, ``UNKNOWN``
``invalid``                                 ``NOSTATE``, ``UNKNOWN``
==========================================  ==============================================

A shut-down cell is PAUSED, not SHUTOFF: it still exists, has an id and holds its CPUs
and memory, which is what libvirt means by an active domain, and every libvirt client
assumes SHUTOFF means inactive with ID -1.  ``resume()`` starts it again from its reset
address (memory as it was); ``create()`` reloads its images and starts it.
"""

from __future__ import annotations

import os
import threading
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from lxml import etree

from jailhouse.config.model import CellFlag, SystemConfig, load_config
from jailhouse.domxml import cell_to_domain, domain_to_cell, memory_kib, parse_document
from jailhouse.errors import BootError, JailhouseError
from jailhouse.hypervisor import Image
from jailhouse.inmates import default_load_address, park_inmate
from jailhouse.store import Definition, LiveRecord
from jailhouse.sysfs import CellState
from jailhouse.virt import _constants as c
from jailhouse.virt._errors import libvirtError, make_error

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from jailhouse.config.model import CellConfig
    from jailhouse.hypervisor import Cell, Hypervisor
    from jailhouse.jobs import Job
    from jailhouse.store import DefinitionStore
    from jailhouse.sysfs import CellStatus

__all__ = ["DomainView", "Driver", "foreign_uuid"]

FOREIGN_NAMESPACE: Final = uuidlib.UUID("ff9a5c6f-7d16-4c35-8cf1-e77457be57e7")
"""UUID namespace of cells created outside the facade: their UUID is uuid5(this, name)."""
_READ_CHUNK: Final = 1 << 20
_ROOT_ID: Final = 0

_RUNNING_REASONS: Final = {
    "booted": c.VIR_DOMAIN_RUNNING_BOOTED,
    "resumed": c.VIR_DOMAIN_RUNNING_UNPAUSED,
}
_PAUSED_REASONS: Final = {
    "paused": c.VIR_DOMAIN_PAUSED_USER,
    "shutdown": c.VIR_DOMAIN_PAUSED_SHUTTING_DOWN,
}
_SHUTOFF_REASONS: Final = {
    "destroyed": c.VIR_DOMAIN_SHUTOFF_DESTROYED,
    "shutdown": c.VIR_DOMAIN_SHUTOFF_SHUTDOWN,
}

_JOBS: dict[str, Job] = {}
_JOBS_LOCK = threading.Lock()


def foreign_uuid(name: str) -> str:
    """Return the UUID of a cell created outside the facade: stable for its name."""
    return str(uuidlib.uuid5(FOREIGN_NAMESPACE, name))


@dataclass(frozen=True, slots=True)
class DomainView:
    """One domain as the store and sysfs show it at one moment.

    Attributes:
        uuid: The domain's UUID.
        name: Its name (the cell's).
        persistent: Its definition, if it is defined.
        live: What its cell was created from, if it is active and that is known.
        record: Its live record, if any.
        cell: Its cell, if it is active.
    """

    uuid: str
    name: str
    persistent: Definition | None
    live: Definition | None
    record: LiveRecord | None
    cell: CellStatus | None

    @property
    def active(self) -> bool:
        """Whether the cell exists."""
        return self.cell is not None

    @property
    def id(self) -> int:
        """The cell id, -1 when inactive."""
        return -1 if self.cell is None else self.cell.id

    @property
    def current(self) -> Definition | None:
        """The definition that describes the domain now: the live one while active."""
        if self.cell is not None and self.live is not None:
            return self.live
        return self.persistent

    def state(self) -> tuple[int, int]:
        """Return ``(VIR_DOMAIN_* state, reason)`` (see the module docstring)."""
        action = "" if self.record is None else self.record.last_action
        if self.cell is None:
            return c.VIR_DOMAIN_SHUTOFF, _SHUTOFF_REASONS.get(action, c.VIR_DOMAIN_SHUTOFF_UNKNOWN)
        state = self.cell.state
        if state in {CellState.RUNNING, CellState.RUNNING_LOCKED}:
            return c.VIR_DOMAIN_RUNNING, _RUNNING_REASONS.get(action, c.VIR_DOMAIN_RUNNING_UNKNOWN)
        if state == CellState.SHUT_DOWN:
            return c.VIR_DOMAIN_PAUSED, _PAUSED_REASONS.get(action, c.VIR_DOMAIN_PAUSED_UNKNOWN)
        if state in {CellState.FAILED, CellState.FAILED_COMM_REV}:
            return c.VIR_DOMAIN_CRASHED, c.VIR_DOMAIN_CRASHED_UNKNOWN
        return c.VIR_DOMAIN_NOSTATE, c.VIR_DOMAIN_NOSTATE_UNKNOWN

    def memory_kib(self) -> int:
        """Return the RAM of the cell (or definition) in KiB, 0 when unknown."""
        definition = self.current
        return 0 if definition is None else memory_kib(definition.config.mem_regions)

    def vcpus(self) -> int:
        """Return the number of CPUs of the cell (or definition)."""
        if self.cell is not None:
            return len(self.cell.cpus_assigned)
        return 0 if self.persistent is None else len(self.persistent.config.cpus)


class Driver:
    """Domains of one hypervisor and one definitions store.

    Args:
        hv: The hypervisor; the driver closes it.
        store: The definitions store.
        uri: The connection URI, for messages.
        system_path: A system config file given in the URI; else the store's.
        readonly: Refuse every change.

    Attributes:
        hv: The hypervisor.
        store: The store.
        uri: The URI.
        readonly: Whether changes are refused.
    """

    def __init__(
        self,
        hv: Hypervisor,
        store: DefinitionStore,
        *,
        uri: str,
        system_path: Path | None = None,
        readonly: bool = False,
    ) -> None:
        """Wrap the hypervisor and the store."""
        self.hv = hv
        self.store = store
        self.uri = uri
        self.readonly = readonly
        self._system_path = system_path
        self._system: SystemConfig | None = None

    def use_system(self, system: SystemConfig) -> None:
        """Place domains on this system config for the connection's life, recording nothing."""
        self._system = system

    def close(self) -> None:
        """Close the hypervisor."""
        self.hv.close()

    # -- the system config ----------------------------------------------------------------

    def system(self) -> SystemConfig:
        """Return the system config definitions are placed on.

        Raises:
            libvirtError: None is known (``VIR_ERR_OPERATION_INVALID``), or it does not
                describe the hypervisor that runs.
        """
        if self._system is not None:
            system = self._system
        elif self._system_path is not None:
            config = load_config(self._system_path)
            if not isinstance(config, SystemConfig):
                raise make_error(
                    c.VIR_ERR_CONFIG_UNSUPPORTED,
                    f"{self._system_path}: is the cell config {config.name!r}, not a system config",
                    domain=c.VIR_FROM_NONE,
                )
            system = config
        else:
            recorded = self.store.system()
            if recorded is None:
                raise make_error(
                    c.VIR_ERR_OPERATION_INVALID,
                    f"no system config is known for {self.uri}, so a domain cannot be placed: "
                    f"record it with `jhctl define --system SYSTEM.cell ...` (or "
                    f"setSystemConfig()), put it at {self.store.system_path}, or add "
                    f"?system=PATH to the URI",
                )
            system = recorded
        root = next((cell for cell in self.hv.cells() if cell.id == _ROOT_ID), None)
        if root is not None and root.name != system.root_cell.name:
            raise make_error(
                c.VIR_ERR_OPERATION_INVALID,
                f"the hypervisor runs the root cell {root.name!r}, but the system config of "
                f"{self.uri} describes {system.root_cell.name!r}; record the system config "
                f"the hypervisor was enabled with",
            )
        return system

    def _system_or_none(self) -> SystemConfig | None:
        """Return the system config when one is known (a Linux cell's device tree uses it)."""
        try:
            return self.system()
        except libvirtError:
            return None

    def set_system(self, system: SystemConfig) -> None:
        """Record the system config in the store.

        Raises:
            libvirtError: The connection is read-only.
        """
        self.check_writable("setSystemConfig")
        self.store.set_system(system)

    # -- reading --------------------------------------------------------------------------

    def domains(self, *, statistics: bool = True) -> list[DomainView]:
        """Read every domain: active ones by id, then inactive ones by name.

        Args:
            statistics: Also read the cells' exit counters (the event watcher does not).
        """
        definitions = self.store.definitions()
        records = self.store.live_records()
        cells = [cell for cell in self.hv.cells(statistics=statistics) if cell.id != _ROOT_ID]
        by_uuid = {d.uuid: d for d in definitions}
        by_name = {d.name: d for d in definitions}
        record_of = {r.definition.name: r for r in records}
        views: list[DomainView] = []
        taken: set[str] = set()
        for cell in cells:
            record = record_of.get(cell.name)
            if record is not None and not _describes(record, cell):
                record = None
            if record is not None:
                persistent = by_uuid.get(record.uuid)
                view = DomainView(
                    record.uuid, cell.name, persistent, record.definition, record, cell
                )
            elif cell.name in by_name:
                persistent = by_name[cell.name]
                view = DomainView(persistent.uuid, cell.name, persistent, persistent, None, cell)
            else:
                view = DomainView(foreign_uuid(cell.name), cell.name, None, None, None, cell)
            taken.add(view.uuid)
            views.append(view)
        inactive_records = {r.uuid: r for r in records if r.cell_id is None}
        views.extend(
            DomainView(d.uuid, d.name, d, None, inactive_records.get(d.uuid), None)
            for d in definitions
            if d.uuid not in taken and d.name not in {v.name for v in views}
        )
        return views

    def find_uuid(self, uuid: str, name: str | None = None) -> DomainView:
        """Return the domain with this UUID.

        Raises:
            libvirtError: There is none (``VIR_ERR_NO_DOMAIN``).
        """
        for view in self.domains():
            if view.uuid == uuid:
                return view
        suffix = f" ({name})" if name else ""
        raise make_error(c.VIR_ERR_NO_DOMAIN, f"no domain with matching uuid '{uuid}'{suffix}")

    def find_name(self, name: str) -> DomainView:
        """Return the domain of this name.

        Raises:
            libvirtError: There is none (``VIR_ERR_NO_DOMAIN``).
        """
        for view in self.domains():
            if view.name == name:
                return view
        raise make_error(c.VIR_ERR_NO_DOMAIN, f"no domain with matching name '{name}'")

    def find_id(self, cell_id: int) -> DomainView:
        """Return the active domain whose cell has this id (the root cell is none).

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for a negative id, else
                ``VIR_ERR_NO_DOMAIN`` when no domain has it.
        """
        if cell_id < 0:
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                "id in virDomainLookupByID must be zero or greater",
                domain=c.VIR_FROM_DOMAIN,
            )
        for view in self.domains():
            if view.id == cell_id:
                return view
        detail = f"no domain with matching id {cell_id}"
        if cell_id == _ROOT_ID:
            detail += " (cell 0 is the root cell: the host itself, not a domain)"
        raise make_error(c.VIR_ERR_NO_DOMAIN, detail)

    # -- defining -------------------------------------------------------------------------

    def check_writable(self, function: str) -> None:
        """Refuse a change on a read-only connection.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_DENIED``.
        """
        if self.readonly:
            raise make_error(
                c.VIR_ERR_OPERATION_DENIED,
                f"read only access prevents {function}",
                domain=c.VIR_FROM_NONE,
            )

    def translate(self, xml: str, *, uuid: str, others: Iterable[DomainView]) -> Definition:
        """Translate domain XML into a definition placed clear of ``others``.

        Raises:
            TranslationError: The XML cannot be a cell.
            libvirtError: No system config is known.
        """
        system = self.system()
        defined: list[CellConfig] = []
        for view in others:
            for definition in (view.persistent, view.live):
                if definition is not None and definition.config not in defined:
                    defined.append(definition.config)
        result = domain_to_cell(xml, system, defined=defined)
        return Definition(
            uuid=uuid,
            xml=xml,
            config=result.config,
            boot=result.boot,
            domain_type=_domain_type(xml),
            notes=tuple(str(note) for note in result.notes),
        )

    def probe(self, xml: str) -> tuple[str, str | None]:
        """Return the name and the UUID (if any) a domain XML gives its cell.

        Raises:
            TranslationError: The XML cannot be a cell.
            libvirtError: No system config is known.
        """
        result = domain_to_cell(xml, self.system())
        return result.config.name, result.uuid

    def claim(
        self, name: str, xml_uuid: str | None, views: Sequence[DomainView]
    ) -> DomainView | None:
        """Apply libvirt's rules for a new XML's name and UUID against existing domains.

        Returns:
            The existing domain of that name (same UUID), or ``None`` for a new one.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_FAILED`` when the name exists with another
                UUID (or the XML gives none), or the UUID exists under another name.
        """
        same_name = next((v for v in views if v.name == name), None)
        if same_name is not None:
            if xml_uuid != same_name.uuid:
                raise make_error(
                    c.VIR_ERR_OPERATION_FAILED,
                    f"domain '{name}' already exists with uuid {same_name.uuid}",
                )
            return same_name
        if xml_uuid is not None:
            same_uuid = next((v for v in views if v.uuid == xml_uuid), None)
            if same_uuid is not None:
                raise make_error(
                    c.VIR_ERR_OPERATION_FAILED,
                    f"domain '{same_uuid.name}' is already defined with uuid {xml_uuid}",
                )
        return None

    def define(self, xml: str) -> DomainView:
        """Define (or redefine) a domain from XML (``virDomainDefineXML``).

        Raises:
            libvirtError: The XML is refused, the name or UUID clash, the connection is
                read-only.
            TranslationError: The XML cannot be a cell.
        """
        self.check_writable("virDomainDefineXML")
        with self.store.locked():
            self.sweep()
            name, xml_uuid = self.probe(xml)
            views = self.domains()
            existing = self.claim(name, xml_uuid, views)
            uuid = xml_uuid if xml_uuid is not None else str(uuidlib.uuid4())
            others = [v for v in views if v.uuid != uuid]
            definition = self.translate(xml, uuid=uuid, others=others)
            check_linux_files(definition)
            self.store_definition(existing, definition)
        return self.find_uuid(uuid)

    def store_definition(self, existing: DomainView | None, definition: Definition) -> None:
        """Write a (translated) definition, keeping a running cell's live config apart.

        Call with the store locked, after :meth:`claim`.
        """
        self.check_writable("virDomainDefineXML")
        if (
            existing is not None
            and existing.cell is not None
            and existing.record is None
            and existing.persistent is not None
        ):
            # keep what the running cell was made of: XMLDesc(0) shows it until re-created
            self.store.put_live(
                LiveRecord(definition=existing.persistent, cell_id=existing.cell.id, last_action="")
            )
        self.store.put(definition)

    def undefine(self, uuid: str, name: str) -> None:
        """Remove a domain's definition; a running one becomes transient.

        Raises:
            libvirtError: No such domain, or it is transient.
        """
        self.check_writable("virDomainUndefine")
        with self.store.locked():
            self.sweep()
            view = self.find_uuid(uuid, name)
            if view.persistent is None:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "cannot undefine transient domain")
            if view.cell is None:
                self.store.remove(uuid)
                self.store.remove_live(uuid)
                return
            if view.record is None:
                self.store.put_live(
                    LiveRecord(definition=view.persistent, cell_id=view.cell.id, last_action="")
                )
            self.store.remove(uuid)

    # -- lifecycle ------------------------------------------------------------------------

    def create_xml(self, xml: str, *, paused: bool, job: Job) -> DomainView:
        """Create and start a domain from XML without defining it (``virDomainCreateXML``).

        A defined, inactive domain of that name and UUID starts with this XML as its live
        config and stays defined.

        Raises:
            libvirtError: The XML is refused, the name or UUID clash, the domain is
                already active, booting failed (everything undone).
        """
        self.check_writable("virDomainCreateXML")
        with self.store.locked():
            self.sweep()
            name, xml_uuid = self.probe(xml)
            views = self.domains()
            existing = self.claim(name, xml_uuid, views)
            if existing is not None and existing.active:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, f"domain '{name}' is already active")
            uuid = xml_uuid if xml_uuid is not None else str(uuidlib.uuid4())
            definition = self.translate(xml, uuid=uuid, others=[v for v in views if v.uuid != uuid])
            with self._tracked(uuid, job):
                self.boot(definition, None, start=not paused, job=job)
        return self.find_uuid(uuid)

    def start(self, uuid: str, name: str, *, paused: bool, job: Job) -> None:
        """Boot a defined domain (``virDomainCreate``).

        On an active domain whose cell is not running, the cell is loaded again and
        started; if the definition changed since the cell was created, the cell is
        destroyed and created again from the definition first.

        Raises:
            libvirtError: No such domain, it runs already, its config is unknown, booting
                failed (everything this call did is undone).
        """
        self.check_writable("virDomainCreate")
        with self.store.locked():
            self.sweep()
            view = self.find_uuid(uuid, name)
            if view.cell is not None and view.state()[0] == c.VIR_DOMAIN_RUNNING:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is already running")
            definition = view.persistent or view.live
            if definition is None:
                raise make_error(
                    c.VIR_ERR_OPERATION_INVALID,
                    f"cell '{view.name}' was created outside python-jailhouse's definitions; "
                    "its config is unknown, so it cannot be loaded",
                )
            with self._tracked(uuid, job):
                existing = view.cell
                if existing is not None and (
                    view.live is not None and not view.live.same_cell(definition)
                ):
                    self.hv.cell(existing.name).destroy()
                    existing = None
                self.boot(definition, existing, start=not paused, job=job)

    def reboot(self, uuid: str, name: str, *, job: Job) -> None:
        """Load an active domain's images again and restart it (``virDomainReboot``).

        Raises:
            libvirtError: No such domain, it is not active, or loading failed.
        """
        self.check_writable("virDomainReboot")
        with self.store.locked():
            self.sweep()
            view = self.find_uuid(uuid, name)
            if view.cell is None:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
            with self._tracked(uuid, job):
                definition = view.live
                if definition is None:
                    with job.running(f"reboot {name!r}", steps=1):
                        job.step("start cell")
                        self.hv.cell(view.cell.name).start()
                    return
                self.boot(definition, view.cell, start=True, job=job)

    def shutdown(self, uuid: str, name: str) -> None:
        """Stop a running cell and park its CPUs; it stays created (``virDomainShutdown``).

        Raises:
            libvirtError: No such domain, it is not running, or the cell refused.
        """
        self.check_writable("virDomainShutdown")
        with self.store.locked():
            self.sweep()
            view = self.find_uuid(uuid, name)
            if view.cell is None or view.state()[0] != c.VIR_DOMAIN_RUNNING:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
            self.hv.cell(view.cell.name).shutdown()
            self._note(view, "shutdown")

    def resume(self, uuid: str, name: str) -> None:
        """Start a shut-down (PAUSED) cell again from its reset address (``virDomainResume``).

        Raises:
            libvirtError: No such domain, it is not active or not paused.
        """
        self.check_writable("virDomainResume")
        with self.store.locked():
            self.sweep()
            view = self.find_uuid(uuid, name)
            if view.cell is None:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
            state = view.state()[0]
            if state == c.VIR_DOMAIN_RUNNING:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is already running")
            if state != c.VIR_DOMAIN_PAUSED:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is not paused")
            self.hv.cell(view.cell.name).start()
            self._note(view, "resumed")

    def destroy(self, uuid: str, name: str) -> None:
        """Destroy a domain's cell, returning its CPUs and memory (``virDomainDestroy``).

        A transient domain is gone afterwards; a defined one is inactive.

        Raises:
            libvirtError: No such domain, it is not active, or the driver refused.
        """
        self.check_writable("virDomainDestroy")
        with self.store.locked():
            self.sweep()
            view = self.find_uuid(uuid, name)
            if view.cell is None:
                raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
            shut_down = view.state() == (
                c.VIR_DOMAIN_PAUSED,
                c.VIR_DOMAIN_PAUSED_SHUTTING_DOWN,
            )
            self.hv.cell(view.cell.name).destroy()
            self._forget_cell(view, "shutdown" if shut_down else "destroyed")

    def sweep(self) -> None:
        """Remove live records of cells that are gone (call with the store locked).

        A record stays while its cell exists and, for a defined domain whose cell was
        destroyed through the facade, as the memory of that (``cell_id`` ``None``).
        """
        cells = {cell.name: cell for cell in self.hv.cells() if cell.id != _ROOT_ID}
        defined = {d.uuid for d in self.store.definitions()}
        for record in self.store.live_records():
            if record.cell_id is None:
                stale = record.uuid not in defined
            else:
                cell = cells.get(record.definition.name)
                stale = cell is None or not _describes(record, cell)
            if stale:
                self.store.remove_live(record.uuid)

    def _forget_cell(self, view: DomainView, action: str) -> None:
        """Record that a domain's cell is gone: ``destroyed``, or ``shutdown`` if it was."""
        if view.persistent is not None:
            self.store.put_live(
                LiveRecord(definition=view.persistent, cell_id=None, last_action=action)
            )
        else:
            self.store.remove_live(view.uuid)

    def _note(self, view: DomainView, action: str) -> None:
        """Record the last lifecycle action of an active domain."""
        assert view.cell is not None  # noqa: S101 - the callers checked
        definition = view.live or view.persistent
        if definition is None:
            return  # a cell created outside the facade: nothing to record it with
        self.store.put_live(
            LiveRecord(definition=definition, cell_id=view.cell.id, last_action=action)
        )

    def boot(
        self,
        definition: Definition,
        existing: CellStatus | None,
        *,
        start: bool,
        job: Job,
    ) -> None:
        """Create a cell (unless ``existing``), load its images and start it (unless not ``start``).

        Call with the store locked.  Steps: read images, create cell, load images, start
        cell, reported to ``job``; a failure or a cancellation destroys the cell this call
        created before the error propagates.  The live record is written last.

        Raises:
            libvirtError: The definition cannot boot (see :func:`boot_images`).
            JobCancelledError: The job was cancelled between two steps.
            JailhouseError: The driver refused a step.
            OSError: An image file cannot be read.
        """
        specs = boot_images(definition, self._system_or_none())
        sizes = [len(s) if isinstance(s, bytes) else _file_size(s) for s, _ in specs]
        steps = 2 + (existing is None) + start
        name = definition.name
        with job.running(f"create {name!r}", steps=steps):
            job.step("read images")
            job.add_bytes(sum(sizes))
            images = [Image(_read_image(source, job), address) for source, address in specs]
            cell: Cell | None = None
            created = False
            try:
                if existing is None:
                    job.step("create cell")
                    cell = self.hv.create_cell(definition.config)
                    created = True
                else:
                    cell = self.hv.cell(existing.name)
                job.step("load images")
                cell.load(images)
                if start:
                    job.step("start cell")
                    cell.start()
                self.store.put_live(
                    LiveRecord(
                        definition=definition,
                        cell_id=cell.id,
                        last_action="booted" if start else "paused",
                    )
                )
            except BaseException as exc:
                if created and cell is not None:
                    _destroy_noting(cell, exc)
                raise

    # -- jobs -----------------------------------------------------------------------------

    @contextmanager
    def _tracked(self, uuid: str, job: Job) -> Iterator[None]:
        with _JOBS_LOCK:
            _JOBS[uuid] = job
        try:
            yield
        finally:
            with _JOBS_LOCK:
                if _JOBS.get(uuid) is job:
                    del _JOBS[uuid]

    @staticmethod
    def job_of(uuid: str) -> Job | None:
        """Return the job running on a domain in this process, if any."""
        with _JOBS_LOCK:
            return _JOBS.get(uuid)

    # -- XML ------------------------------------------------------------------------------

    def xml_desc(self, view: DomainView, *, inactive: bool) -> str:
        """Return a domain's XML: the live config while active, else (or if asked) the definition.

        Raises:
            TranslationError: A stored config cannot be written as XML (never for one the
                translator made).
        """
        definition = view.persistent if inactive and view.persistent is not None else view.current
        if definition is None:
            return _foreign_xml(view, self.hv)
        domain_type = definition.domain_type
        return cell_to_domain(
            definition.config, domain_type=domain_type, boot=definition.boot, uuid=view.uuid
        )


def check_linux_files(definition: Definition) -> None:
    """Refuse a Linux boot whose kernel, initrd or device tree file cannot be read.

    Raises:
        libvirtError: ``VIR_ERR_OPERATION_FAILED`` naming the path.
    """
    boot = definition.boot
    for what, path in (("kernel", boot.kernel), ("initrd", boot.initrd), ("dtb", boot.dtb)):
        if path is None:
            continue
        file = Path(path)
        if not file.is_file() or not os.access(file, os.R_OK):
            problem = "does not exist" if not file.exists() else "is not a readable file"
            raise make_error(
                c.VIR_ERR_OPERATION_FAILED,
                f"domain '{definition.name}': <os><{what}> {path}: {problem}",
                domain=c.VIR_FROM_DOMAIN,
            )


def _linux_images(
    definition: Definition, system: SystemConfig | None
) -> list[tuple[bytes | Path, int]]:
    """Plan a Linux boot (``<os><kernel>``) and return the plan's images."""
    from jailhouse.linux import plan_linux  # noqa: PLC0415 - only for Linux domains

    boot = definition.boot
    check_linux_files(definition)
    try:
        plan = plan_linux(
            definition.config,
            Path(boot.kernel or "").read_bytes(),
            initrd=None if boot.initrd is None else Path(boot.initrd).read_bytes(),
            cmdline=boot.cmdline,
            dtb=None if boot.dtb is None else Path(boot.dtb).read_bytes(),
            system=system,
        )
    except (BootError, OSError) as exc:
        raise make_error(
            c.VIR_ERR_CONFIG_UNSUPPORTED,
            f"domain '{definition.name}' cannot boot its Linux kernel ({boot.kernel}): {exc}",
            domain=c.VIR_FROM_DOMAIN,
        ) from exc
    return [(data, address) for data, address in plan.images()]


def boot_images(
    definition: Definition, system: SystemConfig | None = None
) -> list[tuple[bytes | Path, int]]:
    """Return what a definition loads at boot: its images, a Linux plan's, or the park loop.

    Args:
        definition: The domain's definition.
        system: The system config, for a Linux cell's generated device tree.

    Raises:
        libvirtError: ``VIR_ERR_CONFIG_UNSUPPORTED`` for a Linux boot that cannot work
            (the error says why), or for a cell that needs the park loop but could not
            run it; ``VIR_ERR_OPERATION_FAILED`` for an unreadable kernel file.
    """
    boot, config = definition.boot, definition.config
    if boot.is_linux:
        return _linux_images(definition, system)
    if boot.images:
        return [(Path(image.path), image.address) for image in boot.images]
    if CellFlag.PASSIVE_COMMREG not in config.flags:
        raise make_error(
            c.VIR_ERR_CONFIG_UNSUPPORTED,
            f"domain '{definition.name}' has no images, and the park-loop inmate that runs "
            "instead does not answer the hypervisor's messages: the cell needs the "
            "PASSIVE_COMMREG flag, or images of its own",
            domain=c.VIR_FROM_DOMAIN,
        )
    try:
        return [(park_inmate(config.arch), default_load_address(config))]
    except ValueError as exc:
        raise make_error(
            c.VIR_ERR_CONFIG_UNSUPPORTED,
            f"domain '{definition.name}' has no images and cannot run the park-loop inmate: {exc}",
            domain=c.VIR_FROM_DOMAIN,
        ) from exc


def _file_size(path: Path) -> int:
    return path.stat().st_size


def _read_image(source: bytes | Path, job: Job) -> bytes:
    """Read an image file in chunks, reporting bytes to the job (bytes pass through)."""
    if isinstance(source, bytes):
        job.advance(len(source))
        return source
    parts: list[bytes] = []
    with source.open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            parts.append(chunk)
            job.advance(len(chunk))
    return b"".join(parts)


def _destroy_noting(cell: Cell, exc: BaseException) -> None:
    try:
        cell.destroy()
    except (JailhouseError, OSError) as cleanup:
        exc.add_note(f"rollback: destroying cell {cell.name!r} failed too: {cleanup}")


def _describes(record: LiveRecord, cell: CellStatus) -> bool:
    """Whether a live record is about this cell (and not an older cell of that name)."""
    return (
        record.cell_id == cell.id
        and record.definition.name == cell.name
        and record.definition.config.cpus == cell.cpus_assigned
    )


def _domain_type(xml: str) -> str:
    root = parse_document(xml)
    value = root.get("type") or "jailhouse"
    return (
        value
        if value.replace("-", "").replace("_", "").isalnum() and value.islower()
        else "jailhouse"
    )


def _foreign_xml(view: DomainView, hv: Hypervisor) -> str:
    """Describe a cell created outside the facade: only what sysfs tells."""
    assert view.cell is not None  # noqa: S101 - inactive domains always have a definition
    domain = etree.Element("domain", type="jailhouse")
    etree.SubElement(domain, "name").text = view.name
    etree.SubElement(domain, "uuid").text = view.uuid
    etree.SubElement(
        domain, "description"
    ).text = (
        "a cell created outside python-jailhouse's definitions: only its name and CPUs are known"
    )
    cpus = sorted(view.cell.cpus_assigned)
    etree.SubElement(domain, "vcpu", placement="static").text = str(max(len(cpus), 1))
    if cpus:
        cputune = etree.SubElement(domain, "cputune")
        for index, cpu in enumerate(cpus):
            etree.SubElement(cputune, "vcpupin", vcpu=str(index), cpuset=str(cpu))
    os_el = etree.SubElement(domain, "os")
    type_el = etree.SubElement(os_el, "type")
    if hv.arch is not None:
        type_el.set("arch", hv.arch.libvirt_name)
    type_el.text = "hvm"
    return etree.tostring(domain, encoding="unicode", pretty_print=True)


def check_flags(flags: int, allowed: int, function: str) -> None:
    """Refuse flag bits a function does not know, as libvirt does.

    Raises:
        libvirtError: ``VIR_ERR_INVALID_ARG`` naming the bits and the function.
    """
    extra = flags & ~allowed
    if flags < 0 or extra:
        raise make_error(
            c.VIR_ERR_INVALID_ARG,
            f"unsupported flags ({extra if flags >= 0 else flags:#x}) in function {function}",
        )
