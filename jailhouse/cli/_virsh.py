"""virsh's verbs over :mod:`jailhouse.virt`: define, start, list, dumpxml, apply ...

Domains are named as virsh takes them: a cell id, a UUID, or a name (tried in that order).
Errors are libvirt's messages; the exit code follows the CLI's conventions: 2 for input
errors (XML, configuration, arguments, files, the connection), 1 for refused operations
(no such domain, not running, already defined ...), 130 for an operation cancelled with
Ctrl-C (which stops at the next step and undoes what it did).
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from jailhouse.cli._base import (
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Context,
    Verbs,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from typing import Any, Final

    from jailhouse.jobs import Job, JobProgress
    from jailhouse.virt import virConnect, virDomain

__all__ = ["console_domain", "register"]

# virsh's words for states (tools/virsh-domain-monitor.c, virshDomainStateToString)
_STATES: Final = {
    0: "no state",
    1: "running",
    2: "idle",
    3: "paused",
    4: "in shutdown",
    5: "shut off",
    6: "crashed",
    7: "pmsuspended",
}
# (state, reason) -> virsh's word for the reason, for the reasons the facade reports
_REASONS: Final = {
    (1, 1): "booted",
    (1, 5): "unpaused",
    (3, 1): "user",
    (3, 8): "shutting down",
    (5, 1): "shutdown",
    (5, 2): "destroyed",
}
_USAGE_CODES: Final = frozenset({5, 6, 8, 21, 27, 31, 35, 38, 67})
"""NO_CONNECT, INVALID_CONN, INVALID_ARG, NO_NAME, XML_ERROR, READ_FAILED, XML_DETAIL,
SYSTEM_ERROR, CONFIG_UNSUPPORTED: the input or the environment is wrong (exit 2)."""
_ABORTED: Final = 78
_OPERATION_INVALID: Final = 55
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
_BAR: Final = 24


def register(verbs: Verbs) -> None:
    """Add ``define``, ``undefine``, ``start``, ``shutdown``, ``destroy``, ``list``, ``dominfo``, ``dumpxml``, ``apply``."""  # noqa: E501 - one line for the verb list
    p = verbs.add(
        "define",
        _define,
        help="define a domain from libvirt XML (placed clear of the other definitions)",
        description="Define a domain from libvirt domain XML, or update the definition "
        "of the same name and UUID.  The XML becomes a cell config at once, placed clear "
        "of every other definition; the definition is kept in the connection's store.  "
        "--system records the system config the hypervisor runs (needed once per store).",
        examples=[
            "jhctl define demo.xml",
            "jhctl -c sim:///tmp/jh define demo.xml --system sys.cell",
        ],
    )
    p.add_argument("file", metavar="DOMAIN.xml", help="the domain XML")
    _system_option(p)
    p = verbs.add(
        "undefine",
        _undefine,
        help="remove a domain's definition (a running one keeps running, transient)",
        examples=["jhctl undefine demo"],
    )
    _domain_arg(p)
    p = verbs.add(
        "start",
        _start,
        help="boot a defined domain: create its cell, load its images, start it",
        description="Boot a defined domain: create its cell, load its images (or the "
        "park-loop inmate when it has none) and start it.  Ctrl-C stops at the next "
        "step and removes the cell again.  --paused loads it without starting it.",
        examples=["jhctl start demo", "jhctl start demo --paused"],
    )
    _domain_arg(p)
    p.add_argument("--paused", action="store_true", help="load the cell but do not start it")
    p = verbs.add(
        "shutdown",
        _shutdown,
        help="stop a domain's cell; it keeps its CPUs and memory until destroyed",
        description="Stop a domain's cell (jailhouse cell shutdown): its CPUs are parked "
        "and it keeps them and its memory; the domain is then paused.  `jhctl destroy` "
        "returns them to the root cell, `jhctl start` boots it again.",
        examples=["jhctl shutdown demo"],
    )
    _domain_arg(p)
    p = verbs.add(
        "destroy",
        _destroy,
        help="destroy a domain's cell; its CPUs and memory return to the root cell",
        examples=["jhctl destroy demo"],
    )
    _domain_arg(p)
    p = verbs.add(
        "list",
        _list,
        help="list the active domains (--all: the defined ones too)",
        examples=["jhctl list", "jhctl list --all", "jhctl list --all --json"],
    )
    p.add_argument("--all", action="store_true", help="also list inactive domains")
    p = verbs.add(
        "dominfo",
        _dominfo,
        help="show a domain's state, CPUs, memory and boot images",
        examples=["jhctl dominfo demo", "jhctl dominfo 1 --json"],
    )
    _domain_arg(p)
    p = verbs.add(
        "dumpxml",
        _dumpxml,
        help="print a domain's XML (the running cell's while active)",
        description="Print a domain's XML: the running cell's config while it is active, "
        "else its definition (--inactive: the definition always).  The jailhouse metadata "
        "holds the whole cell config, so `jhctl define` of the output gives the same cell.",
        examples=["jhctl dumpxml demo", "jhctl dumpxml demo --inactive > demo.xml"],
    )
    _domain_arg(p)
    p.add_argument("--inactive", action="store_true", help="print the definition")
    _register_host(verbs)
    _register_apply(verbs)


def _register_host(verbs: Verbs) -> None:
    verbs.add(
        "nodeinfo",
        _nodeinfo,
        help="show the host's CPUs, NUMA nodes and memory (virsh nodeinfo)",
        examples=["jhctl nodeinfo", "jhctl nodeinfo --json"],
    )
    verbs.add(
        "capabilities",
        _capabilities,
        help="print the host's capabilities XML: CPU topology, NUMA cells, the jailhouse guest",
        examples=["jhctl capabilities"],
    )
    verbs.add(
        "domcapabilities",
        _domcapabilities,
        help="print the domain capabilities XML of jailhouse domains",
        examples=["jhctl domcapabilities"],
    )
    p = verbs.add(
        "domstats",
        _domstats,
        help="print the stats records of domains: state, vCPUs, memory, exit counters",
        description="Print libvirt's stats records (getAllDomainStats): state, balloon "
        "(the cell's RAM), vcpu, and the cell's exits to the hypervisor as vm.exits.* "
        "(summed) and vm.vcpu.N.exits.* (per vCPU).  Without DOMAIN: every domain.",
        examples=["jhctl domstats", "jhctl domstats demo --json"],
    )
    p.add_argument("domains", nargs="*", metavar="DOMAIN", help="id, UUID or name")


def _register_apply(verbs: Verbs) -> None:
    p = verbs.add(
        "apply",
        _apply,
        help="make the defined and running domains match a set of domain XMLs",
        description="Reconcile domain XMLs (files, or every *.xml of directories) with "
        "what is defined and running: define new domains, update changed definitions, "
        "start domains that do not run (--state running, the default), and with --prune "
        "stop and undefine defined domains no file describes.  A running cell whose "
        "definition changed keeps running its old config until re-created, which "
        "--recreate does.  --dry-run prints the plan and changes nothing; a run with "
        "nothing to change says so.  If an action fails, or on Ctrl-C, everything the run "
        "did is undone.",
        examples=[
            "jhctl apply --dry-run domains/",
            "jhctl apply domains/",
            "jhctl apply --prune --recreate domains/ extra.xml",
            "jhctl apply --state defined --json domains/",
        ],
    )
    p.add_argument("paths", metavar="DIR|FILE", nargs="+", help="domain XML files or directories")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument(
        "--prune", action="store_true", help="stop and undefine domains no file describes"
    )
    p.add_argument(
        "--recreate",
        action="store_true",
        help="stop and start running cells whose definition changed",
    )
    p.add_argument(
        "--state",
        choices=("running", "defined", "stopped"),
        default="running",
        help="what the described domains should be (default running)",
    )
    _system_option(p)


def _domain_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("domain", metavar="DOMAIN", help="the domain's id, UUID or name")


def _system_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--system",
        metavar="SYSTEM.cell",
        help="record this system config (the one the hypervisor was enabled with) first",
    )


# -- plumbing ---------------------------------------------------------------------------------


class _Session:
    """An open connection whose libvirt errors become one-line CLI errors."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.conn: virConnect | None = None

    def __enter__(self) -> virConnect:
        import jailhouse.virt  # noqa: PLC0415 - loads the shim and lxml

        try:
            self.conn = jailhouse.virt.open(self.ctx.uri)
        except jailhouse.virt.libvirtError as exc:
            raise _cli_error(exc) from exc
        return self.conn

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self.conn is not None:
            self.conn.close()
        from jailhouse.virt import libvirtError  # noqa: PLC0415

        if isinstance(exc, libvirtError):
            raise _cli_error(exc) from exc


def _cli_error(exc: Any) -> CliError:  # noqa: ANN401 - a libvirtError
    code = exc.get_error_code()
    if code == _ABORTED:
        exit_code = EXIT_INTERRUPTED
    elif code in _USAGE_CODES:
        exit_code = EXIT_USAGE
    else:
        exit_code = EXIT_FINDINGS
    error = CliError(exc.get_error_message() or str(exc), exit_code)
    for note in getattr(exc, "__notes__", ()):
        error.add_note(note)
    return error


def _lookup(conn: virConnect, text: str) -> virDomain:
    """Find a domain by id, UUID or name, as virsh does."""
    from jailhouse.virt import VIR_ERR_NO_DOMAIN, libvirtError  # noqa: PLC0415

    if text.isdigit():
        try:
            return conn.lookupByID(int(text))
        except libvirtError as exc:
            if exc.get_error_code() != VIR_ERR_NO_DOMAIN:
                raise
    if _UUID.fullmatch(text):
        try:
            return conn.lookupByUUIDString(text)
        except libvirtError as exc:
            if exc.get_error_code() != VIR_ERR_NO_DOMAIN:
                raise
    return conn.lookupByName(text)


def _record_system(conn: virConnect, args: argparse.Namespace, *, record: bool = True) -> None:
    """Record ``--system`` (or only use it); without it, make sure one is known (else exit 2)."""
    if args.system:
        from jailhouse.cli._base import load_system_file  # noqa: PLC0415

        system = load_system_file(args.system)
        if record:
            conn.setSystemConfig(system)
        else:
            conn.driver.use_system(system)
        return
    from jailhouse.virt import libvirtError  # noqa: PLC0415

    try:
        conn.systemConfig()
    except libvirtError as exc:
        if exc.get_error_code() != _OPERATION_INVALID:
            raise
        raise CliError(
            f"{exc.get_error_message()}"
            if "runs the root cell" in str(exc)
            else f"no system config is known for {conn.getURI()}: give --system SYSTEM.cell "
            "(the config the hypervisor was enabled with); it is recorded for later commands"
        ) from exc


def _state_words(state: list[int]) -> tuple[str, str]:
    return _STATES.get(state[0], "no state"), _REASONS.get((state[0], state[1]), "unknown")


def _progress_printer(ctx: Context) -> Callable[[JobProgress], None]:
    """Draw a job's progress on one stderr line (only when a person watches)."""
    drawn = [False]

    def show(p: JobProgress) -> None:
        from jailhouse.jobs import JobOutcome  # noqa: PLC0415

        if not ctx.interactive:
            return
        if p.outcome != JobOutcome.RUNNING:
            if drawn[0]:
                ctx.stderr.write("\n")
                ctx.stderr.flush()
            return
        filled = int(p.fraction * _BAR)
        size = f" {p.bytes_done >> 10}/{p.bytes_total >> 10} KiB" if p.bytes_total else ""
        ctx.stderr.write(
            f"\r\x1b[K[{'#' * filled}{'.' * (_BAR - filled)}] {p.step_index}/{p.steps} "
            f"{p.step[:60]}{size}"
        )
        ctx.stderr.flush()
        drawn[0] = True

    return show


@contextmanager
def _cancellable(ctx: Context) -> Iterator[Job]:
    """A job that Ctrl-C cancels at the next step, telling the user so."""
    from jailhouse.jobs import Job, cancel_on_interrupt  # noqa: PLC0415

    def told() -> None:
        ctx.stderr.write("\ncancelling at the next step; what was done is undone ...\n")
        ctx.stderr.flush()

    job = Job(_progress_printer(ctx))
    with cancel_on_interrupt(job, told):
        yield job


# -- verbs --------------------------------------------------------------------------------------


def _define(args: argparse.Namespace, ctx: Context) -> int:
    from pathlib import Path  # noqa: PLC0415 - kept off the cold start

    try:
        xml = Path(args.file).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{args.file}: not UTF-8 text: {exc}") from exc
    with _Session(ctx) as conn:
        _record_system(conn, args)
        dom = conn.defineXML(xml)
        definition = conn.driver.store.get(dom.UUIDString())
        notes = list(definition.notes) if definition is not None else []
        info = dom.info()
    for note in notes:
        ctx.note(f"note: {note}")
    ctx.emit(
        {
            "name": dom.name(),
            "uuid": dom.UUIDString(),
            "vcpus": info[3],
            "memory_kib": info[1],
            "notes": notes,
        },
        f"Domain '{dom.name()}' defined from {args.file} (uuid {dom.UUIDString()}, "
        f"{info[3]} CPU(s), {info[1]} KiB)",
    )
    return EXIT_OK


def _undefine(args: argparse.Namespace, ctx: Context) -> int:
    with _Session(ctx) as conn:
        dom = _lookup(conn, args.domain)
        dom.undefine()
        active = dom.ID() >= 0  # -1 once gone: it was inactive
    tail = "; it keeps running as a transient domain until destroyed" if active else ""
    ctx.emit(
        {"name": dom.name(), "uuid": dom.UUIDString(), "active": active},
        f"Domain '{dom.name()}' has been undefined{tail}",
    )
    return EXIT_OK


def _start(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.virt import VIR_DOMAIN_START_PAUSED  # noqa: PLC0415

    with _Session(ctx) as conn:
        dom = _lookup(conn, args.domain)
        with _cancellable(ctx) as job:
            dom.createWithFlags(VIR_DOMAIN_START_PAUSED if args.paused else 0, job=job)
        state = dom.state()
        cell_id = dom.ID()
    words, reason = _state_words(state)
    verb = "loaded (paused)" if args.paused else "started"
    ctx.emit(
        {"name": dom.name(), "id": cell_id, "state": words, "reason": reason},
        f"Domain '{dom.name()}' {verb}, id {cell_id}",
    )
    return EXIT_OK


def _simple(
    args: argparse.Namespace, ctx: Context, action: str, run: Callable[[virDomain], object]
) -> int:
    with _Session(ctx) as conn:
        dom = _lookup(conn, args.domain)
        run(dom)
        gone = not any(d.UUIDString() == dom.UUIDString() for d in conn.listAllDomains())
        state = None if gone else dom.state()
        cell_id = dom.ID()
    words, reason = ("gone", "destroyed") if state is None else _state_words(state)
    text = {
        "shutdown": f"Domain '{dom.name()}' is shut down: its cell keeps its CPUs and memory "
        f"(paused) until `jhctl destroy {dom.name()}`",
        "destroy": f"Domain '{dom.name()}' destroyed",
    }[action]
    ctx.emit(
        {
            "name": dom.name(),
            "id": None if cell_id < 0 else cell_id,
            "state": words,
            "reason": reason,
        },
        text,
    )
    return EXIT_OK


def _shutdown(args: argparse.Namespace, ctx: Context) -> int:
    return _simple(args, ctx, "shutdown", lambda dom: dom.shutdown())


def _destroy(args: argparse.Namespace, ctx: Context) -> int:
    return _simple(args, ctx, "destroy", lambda dom: dom.destroy())


def _list(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.virt import VIR_CONNECT_LIST_DOMAINS_ACTIVE  # noqa: PLC0415

    with _Session(ctx) as conn:
        flags = 0 if args.all else VIR_CONNECT_LIST_DOMAINS_ACTIVE
        rows = []
        for dom in conn.listAllDomains(flags):
            state = dom.state()
            words, reason = _state_words(state)
            rows.append(
                {
                    "id": None if dom.ID() < 0 else dom.ID(),
                    "name": dom.name(),
                    "uuid": dom.UUIDString(),
                    "state": words,
                    "reason": reason,
                    "persistent": bool(dom.isPersistent()),
                }
            )
    ctx.emit(rows, lambda: _table(rows))
    return EXIT_OK


def _table(rows: list[dict[str, Any]]) -> str:
    """Render ``virsh list``'s table: `` Id   Name   State`` and a rule."""
    cells = [("Id", "Name", "State")] + [
        ("-" if r["id"] is None else str(r["id"]), r["name"], r["state"]) for r in rows
    ]
    w_id = max(len(c[0]) for c in cells)
    w_name = max(len(c[1]) for c in cells)
    lines = [f" {a:<{w_id}}   {b:<{w_name}}   {c}".rstrip() for a, b, c in cells]
    lines.insert(1, "-" * (max(len(line) for line in lines) + 1))
    return "\n".join(lines)


def _dominfo(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.config.flags import format_cpus  # noqa: PLC0415

    with _Session(ctx) as conn:
        dom = _lookup(conn, args.domain)
        view = conn.driver.find_uuid(dom.UUIDString())
        info = dom.info()
        state = dom.state()
        updated = bool(dom.isUpdated())
        autostart = dom.autostart()
    words, reason = _state_words(state)
    current = view.current
    cpus = (
        view.cell.cpus_assigned
        if view.cell is not None
        else (current.config.cpus if current is not None else frozenset())
    )
    boot = "unknown"
    if current is not None:
        boot = "park-loop inmate" if current.boot.is_empty else str(current.boot)
    doc = {
        "id": None if view.id < 0 else view.id,
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "os_type": "hvm",
        "state": words,
        "reason": reason,
        "vcpus": info[3],
        "max_memory_kib": info[1],
        "used_memory_kib": info[2],
        "persistent": view.persistent is not None,
        "autostart": bool(autostart),
        "cell_cpus": sorted(cpus),
        "boot": boot,
        "updated": updated,
    }
    lines = [
        ("Id", "-" if view.id < 0 else str(view.id)),
        ("Name", dom.name()),
        ("UUID", dom.UUIDString()),
        ("OS Type", "hvm"),
        ("State", f"{words} ({reason})"),
        ("CPU(s)", str(info[3])),
        ("Max memory", f"{info[1]} KiB"),
        ("Used memory", f"{info[2]} KiB"),
        ("Persistent", "yes" if view.persistent is not None else "no"),
        ("Autostart", "enable" if autostart else "disable"),
        ("Cell CPUs", format_cpus(cpus) or "-"),
        ("Boot", boot),
    ]
    if updated:
        lines.append(("Updated", "yes: the definition changed; re-create the cell to apply it"))
    ctx.emit(doc, "\n".join(f"{label + ':':<16}{value}" for label, value in lines))
    return EXIT_OK


def _dumpxml(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.virt import VIR_DOMAIN_XML_INACTIVE  # noqa: PLC0415

    with _Session(ctx) as conn:
        dom = _lookup(conn, args.domain)
        xml = dom.XMLDesc(VIR_DOMAIN_XML_INACTIVE if args.inactive else 0)
    ctx.emit({"name": dom.name(), "uuid": dom.UUIDString(), "xml": xml}, xml.rstrip("\n"))
    return EXIT_OK


_NODEINFO_LABELS: Final = (
    "CPU model",
    "CPU(s)",
    "CPU frequency",
    "CPU socket(s)",
    "Core(s) per socket",
    "Thread(s) per core",
    "NUMA cell(s)",
    "Memory size",
)


def _nodeinfo(_args: argparse.Namespace, ctx: Context) -> int:
    with _Session(ctx) as conn:
        model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
    doc = {
        "model": model,
        "cpus": cpus,
        "mhz": mhz,
        "sockets": sockets,
        "cores_per_socket": cores,
        "threads_per_core": threads,
        "numa_cells": nodes,
        "memory_kib": int(str(memory_mib)) * 1024,
    }
    values = [
        str(model),
        str(cpus),
        f"{mhz} MHz",
        str(sockets),
        str(cores),
        str(threads),
        str(nodes),
        f"{doc['memory_kib']} KiB",
    ]
    text = "\n".join(
        f"{label + ':':<20}{value}" for label, value in zip(_NODEINFO_LABELS, values, strict=True)
    )
    ctx.emit(doc, text)
    return EXIT_OK


def _capabilities(_args: argparse.Namespace, ctx: Context) -> int:
    with _Session(ctx) as conn:
        xml = conn.getCapabilities()
    ctx.emit({"xml": xml}, xml.rstrip("\n"))
    return EXIT_OK


def _domcapabilities(_args: argparse.Namespace, ctx: Context) -> int:
    with _Session(ctx) as conn:
        xml = conn.getDomainCapabilities()
    ctx.emit({"xml": xml}, xml.rstrip("\n"))
    return EXIT_OK


def _domstats(args: argparse.Namespace, ctx: Context) -> int:
    with _Session(ctx) as conn:
        if args.domains:
            doms = [_lookup(conn, text) for text in args.domains]
            records = conn.domainListGetStats(doms)
        else:
            records = conn.getAllDomainStats()
    doc = [{"name": dom.name(), "stats": record} for dom, record in records]
    blocks = [
        "\n".join(
            [f"Domain: '{dom.name()}'", *(f"  {key}={value}" for key, value in record.items())]
        )
        for dom, record in records
    ]
    ctx.emit(doc, "\n\n".join(blocks))
    return EXIT_OK


_ESCAPE: Final = b"\x1d"
"""Ctrl-], virsh's escape character: it ends ``jhctl console DOMAIN``."""


def console_domain(domain: str, ctx: Context) -> int:
    """Attach to a domain's console (the hypervisor's) until Ctrl-] or the domain stops.

    Prints what the console holds and then what comes, as ``virsh console`` does; input
    is read only to see Ctrl-] (the hypervisor console takes none).  On a terminal the
    input is switched to cbreak mode for the session.
    """
    import codecs  # noqa: PLC0415
    import os  # noqa: PLC0415
    import select  # noqa: PLC0415

    import jailhouse.virt as libvirt  # noqa: PLC0415

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with _Session(ctx) as conn:
        dom = _lookup(conn, domain)
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, stream, 0)
        ctx.stderr.write(f"Connected to domain '{dom.name()}'\nEscape character is ^] (Ctrl + ])\n")
        ctx.stderr.flush()
        stdin = _stdin_fd()
        with _cbreak(stdin):
            try:
                while True:
                    data = stream.recv(4096)
                    if data == b"":
                        ctx.stderr.write(f"\ndomain '{dom.name()}' is no longer active\n")
                        break
                    if isinstance(data, bytes):
                        ctx.stdout.write(decoder.decode(data))
                        ctx.stdout.flush()
                        continue
                    if stdin is None:
                        select.select([], [], [], libvirt.STREAM_POLL_MS / 1000)
                        continue
                    ready, _w, _x = select.select([stdin], [], [], libvirt.STREAM_POLL_MS / 1000)
                    if ready:
                        typed = os.read(stdin, 1024)
                        if not typed:
                            stdin = None  # end of input: keep printing until the domain stops
                        elif _ESCAPE in typed:
                            break
            except KeyboardInterrupt:
                pass
            finally:
                stream.abort()
        ctx.stdout.write(decoder.decode(b"", final=True))
        ctx.stdout.flush()
    return EXIT_OK


def _stdin_fd() -> int | None:
    import sys  # noqa: PLC0415

    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Deliver keys one by one (so Ctrl-] is seen at once) while on a terminal."""
    import os  # noqa: PLC0415

    if fd is None or not os.isatty(fd):
        yield
        return
    import termios  # noqa: PLC0415
    import tty  # noqa: PLC0415

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _apply(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.apply import reconcile  # noqa: PLC0415

    with _Session(ctx) as conn:
        # a dry run changes nothing, not even the recorded system config
        _record_system(conn, args, record=not args.dry_run)
        with _cancellable(ctx) as job:
            the_plan, result = reconcile(
                conn,
                args.paths,
                state=args.state,
                prune=args.prune,
                recreate=args.recreate,
                dry_run=args.dry_run,
                job=job,
            )
    if result is None:
        ctx.emit({**the_plan.to_json(), "applied": False}, the_plan.render())
    elif the_plan.empty:
        ctx.emit(result.to_json(), the_plan.render())
    else:
        ctx.emit(result.to_json(), lambda: the_plan.render() + str(result))
    return EXIT_OK
