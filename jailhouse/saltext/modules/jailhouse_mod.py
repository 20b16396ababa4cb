"""Salt execution module ``jailhouse``: Jailhouse cells as libvirt-style domains.

Functions follow Salt's ``virt`` module (``list_domains``, ``vm_info``, ``start``,
``stop``...) and run over python-jailhouse's API (:mod:`jailhouse.virt`), never over
upstream's ``jailhouse`` tool.  The connection is ``jailhouse:connection`` from the
minion config, else from the pillar, else ``jailhouse:///system``; every function takes
``connection=`` to override it.  Errors come back as ``CommandExecutionError`` carrying
python-jailhouse's message.

.. code-block:: bash

    salt board1 jailhouse.list_domains
    salt board1 jailhouse.define_xml_path /srv/cells/worker.xml
    salt board1 jailhouse.start worker
    salt board1 jailhouse.migrate worker sim:///var/lib/board2 offline=True
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from salt.exceptions import CommandExecutionError

from jailhouse.errors import JailhouseError
from jailhouse.saltext import _common

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from jailhouse.virt import virConnect, virDomain

__virtualname__: Final = "jailhouse"

# Salt's loader replaces these when it loads the file (merging its options into __opts__).
__opts__: dict[str, Any] = {}
__pillar__: dict[str, Any] = {}


def __virtual__() -> str | tuple[bool, str]:
    """Load when python-jailhouse can work: a ``sim:///`` connection, or ``/dev/jailhouse``."""
    return _common.virtual(__virtualname__, __opts__, __pillar__)


# -- plumbing ---------------------------------------------------------------------------------


def _uri(connection: str | None) -> str:
    return _common.connection_uri(__opts__, __pillar__, connection)


def _failure(exc: BaseException) -> CommandExecutionError:
    return CommandExecutionError(str(exc))


@contextlib.contextmanager
def _connect(connection: str | None) -> Iterator[virConnect]:
    """Open the connection; every python-jailhouse error leaves as CommandExecutionError."""
    import jailhouse.virt as libvirt  # noqa: PLC0415 - loads the cffi shim on first use

    try:
        conn = libvirt.open(_uri(connection))
    except (libvirt.libvirtError, JailhouseError, ValueError, TypeError, OSError) as exc:
        raise _failure(exc) from exc
    try:
        yield conn
    except (libvirt.libvirtError, JailhouseError, ValueError, TypeError, OSError) as exc:
        raise _failure(exc) from exc
    finally:
        conn.close()


def _domain(conn: virConnect, name: str) -> virDomain:
    return conn.lookupByName(name)


def _act(name: str, connection: str | None, action: Callable[[virDomain], object]) -> bool:
    with _connect(connection) as conn:
        action(_domain(conn, name))
    return True


# -- listing and describing -------------------------------------------------------------------


def list_domains(connection: str | None = None) -> list[str]:
    """Return the names of every domain, active or only defined.

    CLI Example:

    .. code-block:: bash

        salt '*' jailhouse.list_domains
    """
    with _connect(connection) as conn:
        return sorted(dom.name() for dom in conn.listAllDomains())


def list_active_vms(connection: str | None = None) -> list[str]:
    """Return the names of the domains whose cell exists (running, paused or crashed)."""
    with _connect(connection) as conn:
        return sorted(dom.name() for dom in conn.listAllDomains() if dom.isActive())


def list_inactive_vms(connection: str | None = None) -> list[str]:
    """Return the names of the defined domains without a cell."""
    with _connect(connection) as conn:
        return sorted(dom.name() for dom in conn.listAllDomains() if not dom.isActive())


def vm_info(name: str | None = None, connection: str | None = None) -> dict[str, Any]:
    """Return ``{name: info}`` for one domain or all: state, CPUs, memory, images, statistics.

    CLI Example:

    .. code-block:: bash

        salt '*' jailhouse.vm_info worker
    """
    with _connect(connection) as conn:
        domains = [_domain(conn, name)] if name else conn.listAllDomains()
        return {dom.name(): _common.domain_info(dom) for dom in domains}


def info(name: str, connection: str | None = None) -> dict[str, Any]:
    """Return the information on one domain (``vm_info`` without the outer dict)."""
    described: dict[str, Any] = vm_info(name, connection)[name]
    return described


def vm_state(name: str | None = None, connection: str | None = None) -> dict[str, str]:
    """Return ``{name: state}``: ``running``, ``paused``, ``shutoff``, ``crashed``..."""
    return {key: value["state"] for key, value in vm_info(name, connection).items()}


def get_xml(name: str, inactive: bool = False, connection: str | None = None) -> str:
    """Return a domain's XML: the running cell's, or with ``inactive`` the definition's."""
    import jailhouse.virt as libvirt  # noqa: PLC0415

    with _connect(connection) as conn:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return _domain(conn, name).XMLDesc(flags)


def node_info(connection: str | None = None) -> dict[str, Any]:
    """Return the host: architecture, CPUs, whether the hypervisor runs, its pools and cells."""
    with _connect(connection) as conn:
        return _node_info(conn)


def _node_info(conn: virConnect) -> dict[str, Any]:
    """Build the host's description from the hypervisor's status and sysfs."""
    hv = conn.driver.hv
    status = hv.status()
    try:
        online = sorted(hv.sysfs.online_cpus())
    except KeyError:
        online = []
    cells = hv.cells(statistics=False)
    root = next((cell for cell in cells if cell.id == 0), None)
    return {
        "uri": conn.getURI(),
        "hostname": conn.getHostname(),
        "arch": None if hv.arch is None else hv.arch.libvirt_name,
        "cpus": len(online),
        "online_cpus": online,
        "enabled": status.enabled,
        "root_cell": None if root is None else root.name,
        "root_cpus": [] if root is None else sorted(root.cpus_assigned),
        "cells": len([cell for cell in cells if cell.id != 0]),
        "mem_pool_pages": [status.mem_pool_used, status.mem_pool_size],
        "remap_pool_pages": [status.remap_pool_used, status.remap_pool_size],
    }


def capabilities(connection: str | None = None) -> dict[str, Any]:
    """Return what the host offers domains: architecture, domain type, CPUs, features."""
    with _connect(connection) as conn:
        node = _node_info(conn)
        return {
            "host": {"arch": node["arch"], "cpus": node["online_cpus"], "uri": node["uri"]},
            "guests": [
                {
                    "os_type": "hvm",
                    "arch": node["arch"],
                    "domain_type": "jailhouse",
                    "features": {
                        "offline_migration": True,
                        "live_migration": False,
                        "suspend": False,
                        "balloon": False,
                        "vcpu_hotplug": False,
                        "linux_boot": False,
                    },
                }
            ],
        }


def cell_stats(name: str | None = None, connection: str | None = None) -> dict[str, Any]:
    """Return the exit counters of one cell or every active one, summed and per CPU."""
    with _connect(connection) as conn:
        cells = [
            c for c in conn.driver.hv.cells() if c.id != 0 and (name is None or c.name == name)
        ]
        if name is not None and not cells:
            raise CommandExecutionError(f"no active domain named {name!r}")
        return {
            c.name: {
                "total": dict(c.statistics),
                "per_cpu": {str(cpu): dict(v) for cpu, v in c.per_cpu.items()},
            }
            for c in cells
        }


def console(size: int = 4096, connection: str | None = None) -> str:
    """Return the last ``size`` bytes of the hypervisor console (the ring's contents)."""
    if size < 0:
        raise CommandExecutionError(f"size = {size!r}: expected a number of bytes >= 0")
    with _connect(connection) as conn:
        data = conn.driver.hv.sysfs.console()
    return data[-size:].decode("utf-8", errors="replace") if size else ""


# -- defining ---------------------------------------------------------------------------------


def define_xml_str(xml: str, connection: str | None = None) -> bool:
    """Define (or update) a domain from its XML.

    CLI Example:

    .. code-block:: bash

        salt '*' jailhouse.define_xml_str '<domain>...</domain>'
    """
    with _connect(connection) as conn:
        conn.defineXML(xml)
    return True


def define_xml_path(path: str, connection: str | None = None) -> bool:
    """Define (or update) a domain from an XML file on the minion."""
    try:
        xml = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandExecutionError(f"{path}: cannot be read: {exc}") from exc
    return define_xml_str(xml, connection)


def undefine(name: str, connection: str | None = None) -> bool:
    """Remove a domain's definition; a running cell keeps running (transient)."""
    return _act(name, connection, lambda dom: dom.undefine())


# -- lifecycle --------------------------------------------------------------------------------


def start(name: str, connection: str | None = None) -> bool:
    """Boot a defined domain: create its cell, load its images and start it."""
    return _act(name, connection, lambda dom: dom.create())


def shutdown(name: str, connection: str | None = None) -> bool:
    """Ask the cell to stop: its CPUs are parked, it keeps them (the domain is PAUSED)."""
    return _act(name, connection, lambda dom: dom.shutdown())


def destroy(name: str, connection: str | None = None) -> bool:
    """Destroy the cell: its CPUs and memory return to the root cell at once."""
    return _act(name, connection, lambda dom: dom.destroy())


def stop(name: str, connection: str | None = None) -> bool:
    """Stop a domain as ``virt.stop`` does: destroy its cell."""
    return destroy(name, connection)


def reboot(name: str, connection: str | None = None) -> bool:
    """Load the cell's images again and restart it."""
    return _act(name, connection, lambda dom: dom.reboot())


# -- the hypervisor ---------------------------------------------------------------------------


def set_autostart(name: str, state: str | bool = "on", connection: str | None = None) -> bool:
    """Mark (``on``) or unmark (``off``) a domain to start when ``enable`` enables the board.

    Salt's command line reads ``on``/``off`` as YAML booleans: both forms are taken.

    CLI Example:

    .. code-block:: bash

        salt '*' jailhouse.set_autostart worker off
    """
    wanted = {"on": True, "off": False, True: True, False: False}.get(state)
    if wanted is None:
        raise CommandExecutionError(f"state = {state!r}: give 'on' or 'off'")
    return _act(name, connection, lambda dom: dom.setAutostart(int(wanted)))


def get_autostart(name: str, connection: str | None = None) -> bool:
    """Return whether a domain is marked to start when ``enable`` enables the board."""
    with _connect(connection) as conn:
        return bool(_domain(conn, name).autostart())


def status(connection: str | None = None) -> dict[str, Any]:
    """Return whether the hypervisor is enabled, its pools and its cells."""
    with _connect(connection) as conn:
        hv = conn.driver.hv
        hv_status = hv.status()
        return {
            "enabled": hv_status.enabled,
            "summary": str(hv_status),
            "cells": [
                {
                    "id": cell.id,
                    "name": cell.name,
                    "state": str(cell.state),
                    "cpus": sorted(cell.cpus_assigned),
                }
                for cell in hv.cells(statistics=False)
            ],
        }


def enable(system: str, connection: str | None = None) -> bool:
    """Enable the hypervisor with a system config file and record it for placing domains.

    The domains marked with :func:`set_autostart` are started then.
    """
    from jailhouse.config.model import SystemConfig, load_config  # noqa: PLC0415

    with _connect(connection) as conn:
        config = load_config(Path(system))
        if not isinstance(config, SystemConfig):
            raise CommandExecutionError(
                f"{system}: is the cell config {config.name!r}, not a system config"
            )
        conn.enableHypervisor(config)
    return True


def disable(connection: str | None = None) -> bool:
    """Disable the hypervisor (every non-root cell must be destroyed first)."""
    with _connect(connection) as conn:
        conn.driver.hv.disable()
    return True


def config_check(
    system: str | None = None, cells: list[str] | None = None, connection: str | None = None
) -> dict[str, Any]:
    """Check a system config and cells together, as ``jailhouse config check`` does.

    Without arguments, checks the connection's system config with every defined domain.

    Returns:
        ``{"ok": bool, "findings": [text, ...]}``; warnings do not make it fail.
    """
    from jailhouse.config.model import CellConfig, SystemConfig, load_config  # noqa: PLC0415
    from jailhouse.config.validate import Severity, check_configs  # noqa: PLC0415

    with _connect(connection) as conn:
        if system is None:
            system_config = conn.systemConfig()
        else:
            loaded = load_config(Path(system))
            if not isinstance(loaded, SystemConfig):
                raise CommandExecutionError(f"{system}: is a cell config, not a system config")
            system_config = loaded
        configs: list[CellConfig] = []
        if cells is None:
            configs = [d.config for d in conn.driver.store.definitions()]
        else:
            for path in cells:
                loaded_cell = load_config(Path(path))
                if not isinstance(loaded_cell, CellConfig):
                    raise CommandExecutionError(f"{path}: is a system config, not a cell config")
                configs.append(loaded_cell)
        findings = check_configs(system_config, *configs)
    return {
        "ok": not any(f.severity == Severity.ERROR for f in findings),
        "findings": [str(f) for f in findings],
    }


# -- migration --------------------------------------------------------------------------------


def migrate(
    name: str,
    target: str,
    offline: bool = True,
    cold: bool = False,
    undefinesource: bool = True,
    dname: str | None = None,
    xml: str | None = None,
    connection: str | None = None,
) -> dict[str, Any]:
    """Move a domain to another connection (another board's URI, reachable from here).

    ``offline`` moves the definition and its images (the target places the cell on its
    own system config and checks it first); a running source keeps running until
    ``cold=True`` stops it here and starts it there.  Live migration is not possible.

    CLI Example:

    .. code-block:: bash

        salt board1 jailhouse.migrate worker sim:///var/lib/board2
    """
    import jailhouse.virt as libvirt  # noqa: PLC0415

    with _connect(connection) as conn, _connect(target) as dconn:
        flags = libvirt.VIR_MIGRATE_PERSIST_DEST
        if offline:
            flags |= libvirt.VIR_MIGRATE_OFFLINE
        if undefinesource:
            flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        moved = _domain(conn, name).migrate3(
            dconn,
            {libvirt.VIR_MIGRATE_PARAM_DEST_NAME: dname or name}
            | ({libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml} if xml else {}),
            flags,
            cold=cold,
        )
        return {"name": moved.name(), "target": dconn.getURI(), **_common.domain_info(moved)}


def migrate_export(name: str, connection: str | None = None) -> dict[str, Any]:
    """Return what moving a domain takes (definition, images as base64, state); change nothing.

    The ``jailhouse.migrate`` runner calls this on the source minion.
    """
    from jailhouse.virt import _migrate  # noqa: PLC0415

    with _connect(connection) as conn:
        return _migrate.export_package(_domain(conn, name)).to_json()


def migrate_import(
    package: dict[str, Any],
    dname: str | None = None,
    xml: str | None = None,
    start: bool = False,
    connection: str | None = None,
) -> dict[str, Any]:
    """Define a domain exported by ``migrate_export`` here, checked first; start it if asked.

    The ``jailhouse.migrate`` runner calls this on the target minion.  A failure leaves
    nothing behind here.
    """
    from jailhouse.virt import _migrate  # noqa: PLC0415

    with _connect(connection) as conn:
        dom = _migrate.import_package(
            conn, _migrate.MigrationPackage.from_json(package), dname=dname, dxml=xml, start=start
        )
        return _common.domain_info(dom)


def migrate_check(
    package: dict[str, Any],
    dname: str | None = None,
    xml: str | None = None,
    connection: str | None = None,
) -> bool:
    """Check that a domain exported by ``migrate_export`` can be placed here; change nothing."""
    from jailhouse.virt import _migrate  # noqa: PLC0415

    with _connect(connection) as conn:
        _migrate.check_package(
            conn, _migrate.MigrationPackage.from_json(package), dname=dname, dxml=xml
        )
    return True
