"""Salt state module ``jailhouse``: cells as declared domains, like ``virt.defined``.

.. code-block:: yaml

    hypervisor:
      jailhouse.enabled:
        - system: /etc/jailhouse/board.cell

    worker:
      jailhouse.running:
        - cpu: 2
        - vcpupin: {0: 2, 1: 3}
        - mem: 16m
        - images:
          - path: /srv/inmates/worker.bin
            address: 0x0
        - require:
          - jailhouse: hypervisor

Every state honours ``test=True`` (it predicts the changes without touching the board)
and reports no changes on a second run.  A domain is described by the tuning arguments
(``cpu``, ``cpuset``, ``vcpupin``, ``mem``, ``images``, ``kernel``/``initrd``/``cmdline``)
or by a whole domain XML (``xml``, or ``source``: a file or ``salt://`` URL).  Changing a
running domain updates its definition; its cell keeps running the old one until
``restart=True`` re-creates it (the comment says when that is needed).

``autostart`` (default ``False``, as in ``virt.defined``) marks the definition to start
when ``jailhouse.enabled`` enables the hypervisor, e.g. in the board's boot-time state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jailhouse.errors import JailhouseError
from jailhouse.saltext import _common, _states

if TYPE_CHECKING:
    from collections.abc import Callable

    from jailhouse.config.model import CellConfig
    from jailhouse.virt import virConnect

__virtualname__: Final = "jailhouse"

# Salt's loader replaces these when it loads the file (merging its options into __opts__).
__opts__: dict[str, Any] = {}
__pillar__: dict[str, Any] = {}
__salt__: dict[str, Callable[..., Any]] = {}


def __virtual__() -> str | tuple[bool, str]:
    """Load when python-jailhouse can work: a ``sim:///`` connection, or ``/dev/jailhouse``."""
    return _common.virtual(__virtualname__, __opts__, __pillar__)


def _uri(connection: str | None) -> str:
    return _common.connection_uri(__opts__, __pillar__, connection)


def _test() -> bool:
    return bool(__opts__.get("test", False))


def _run(
    name: str, connection: str | None, body: Callable[[virConnect], dict[str, Any]]
) -> dict[str, Any]:
    """Open the connection and run a state body; every error becomes ``result: False``."""
    import jailhouse.virt as libvirt  # noqa: PLC0415 - loads the cffi shim on first use

    try:
        with libvirt.open(_uri(connection)) as conn:
            return body(conn)
    except (libvirt.libvirtError, JailhouseError, ValueError, TypeError, OSError) as exc:
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        return _states.ret(name, result=False, comment=f"{exc}{notes}")


def _xml(conn: virConnect, name: str, args: dict[str, Any]) -> str:
    """The domain XML the state describes: given whole, or built from the tuning arguments."""
    xml, source = args.pop("xml"), args.pop("source")
    numatune = args.pop("numatune")
    if (xml is not None or source is not None) and any(v is not None for v in args.values()):
        given = sorted(k for k, v in args.items() if v is not None)
        raise ValueError(
            f"{name}: give either xml/source or the tuning arguments, not both ({given[0]})"
        )
    if xml is not None:
        return str(xml)
    if source is not None:
        path = str(source)
        if path.startswith("salt://"):
            cached = __salt__["cp.cache_file"](path)
            if not cached:
                raise ValueError(f"source = {path!r}: not found on the file server")
            path = str(cached)
        return Path(path).read_text(encoding="utf-8")
    system = conn.systemConfig()
    if numatune is not None:
        from jailhouse.saltext import _numa  # noqa: PLC0415

        args["cpuset"] = _numa.cpuset_for(conn, numatune, args.get("cpuset"), system)
    return _common.domain_xml(name, arch=system.arch.libvirt_name, **args)


def _domain_state(
    state: str,
    name: str,
    connection: str | None,
    restart: bool,
    autostart: bool,
    args: dict[str, Any],
) -> dict[str, Any]:
    from jailhouse.apply import DesiredState  # noqa: PLC0415

    numatune = args.get("numatune")

    def body(conn: virConnect) -> dict[str, Any]:
        xml = _xml(conn, name, args)
        check = None
        if numatune is not None:
            from jailhouse.saltext import _numa  # noqa: PLC0415

            root = conn.driver.hv.sysfs.root

            def check(config: CellConfig) -> None:
                _numa.check_memory(root, config, numatune)

        done = _states.domain(
            conn, name, xml, state=DesiredState(state), restart=restart, test=_test(), check=check
        )
        return _states.autostart(conn, done, bool(autostart), test=_test())

    return _run(name, connection, body)


# -- the states -------------------------------------------------------------------------------


def enabled(name: str, system: str | None = None, connection: str | None = None) -> dict[str, Any]:
    """Enable the hypervisor with a system config (``name`` is its file unless ``system``).

    The config is recorded for the connection, so domains are placed on it.  An
    enabled hypervisor with another root cell is a failure: disable it first.
    """
    path = Path(system or name)
    return _run(name, connection, lambda conn: _states.enabled(conn, name, path, test=_test()))


def defined(
    name: str,
    cpu: Any = None,  # noqa: ANN401 - a count or Salt's cpu dict
    mem: Any = None,  # noqa: ANN401 - a size or Salt's mem dict
    cpuset: Any = None,  # noqa: ANN401 - a CPU list, as text or a number
    vcpupin: dict[Any, Any] | None = None,
    images: list[dict[str, Any]] | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    cmdline: str | None = None,
    numatune: dict[str, Any] | None = None,
    xml: str | None = None,
    source: str | None = None,
    autostart: bool = False,
    restart: bool = False,
    connection: str | None = None,
) -> dict[str, Any]:
    """Define a domain as described; a running cell is left alone unless ``restart``.

    ``mem`` takes Salt's units (a number is MiB; ``16m``, ``1GiB``, ``512MB``) or the dict
    ``{boot, current, max}`` (all equal: a cell cannot balloon).  ``cpu`` is a vCPU count or
    Salt's dict (``maximum``, ``cpuset``, ``tuning: {vcpupin: ...}``).  A pin to a CPU
    another cell owns fails, naming that cell.
    """
    args = _tuning(
        cpu, mem, cpuset, vcpupin, images, kernel, initrd, cmdline, numatune, xml, source
    )
    return _domain_state("defined", name, connection, restart, autostart, args)


def running(
    name: str,
    cpu: Any = None,  # noqa: ANN401 - a count or Salt's cpu dict
    mem: Any = None,  # noqa: ANN401 - a size or Salt's mem dict
    cpuset: Any = None,  # noqa: ANN401 - a CPU list, as text or a number
    vcpupin: dict[Any, Any] | None = None,
    images: list[dict[str, Any]] | None = None,
    kernel: str | None = None,
    initrd: str | None = None,
    cmdline: str | None = None,
    numatune: dict[str, Any] | None = None,
    xml: str | None = None,
    source: str | None = None,
    autostart: bool = False,
    restart: bool = False,
    connection: str | None = None,
) -> dict[str, Any]:
    """Define a domain as described (see :func:`defined`) and make its cell run."""
    args = _tuning(
        cpu, mem, cpuset, vcpupin, images, kernel, initrd, cmdline, numatune, xml, source
    )
    return _domain_state("running", name, connection, restart, autostart, args)


def stopped(name: str, connection: str | None = None) -> dict[str, Any]:
    """Make a defined domain have no cell: its CPUs and memory go back to the root cell."""
    return _run(name, connection, lambda conn: _states.stopped(conn, name, test=_test()))


def absent(name: str, connection: str | None = None) -> dict[str, Any]:
    """Destroy a domain's cell if it has one, and remove its definition."""
    return _run(name, connection, lambda conn: _states.absent(conn, name, test=_test()))


def _tuning(*values: Any) -> dict[str, Any]:  # noqa: ANN401 - the states' arguments as given
    keys = (
        "cpu",
        "mem",
        "cpuset",
        "vcpupin",
        "images",
        "kernel",
        "initrd",
        "cmdline",
        "numatune",
        "xml",
        "source",
    )
    return dict(zip(keys, values, strict=True))
