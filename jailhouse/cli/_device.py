"""Upstream ``jailhouse`` verbs on a device: enable, disable, console and ``cell ...``."""

from __future__ import annotations

import time

from jailhouse.cli._base import (
    EXIT_OK,
    CliError,
    Context,
    Progress,
    Verbs,
    cell_ref,
    load_cell_file,
    load_system_file,
    parse_image_spec,
    to_json,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path
    from typing import Any, Final

    from jailhouse.hypervisor import Cell, Hypervisor
    from jailhouse.sysfs import CellStatus

__all__ = ["cell_document", "cell_table", "read_images", "register", "stats_table"]

_READ_CHUNK: Final = 1 << 20
_PROGRESS_MIN: Final = 8 << 20
"""Images smaller than this load in a moment: no progress bar."""
_CLEAR: Final = "\x1b[H\x1b[2J"
# Upstream `jailhouse cell list`: printf("%-8s%-24s%-18s%-24s%-24s\n", ...)
_LIST_WIDTHS: Final = (8, 24, 18, 24, 24)
_LIST_HEADINGS: Final = ("ID", "Name", "State", "Assigned CPUs", "Failed CPUs")


def register(verbs: Verbs) -> None:
    """Add ``enable``, ``disable``, ``status``, ``console`` and the ``cell`` verbs."""
    p = verbs.add(
        "enable",
        _enable,
        help="enable the hypervisor with a system config",
        description="Enable the hypervisor with a system config.  The root cell's CPUs "
        "must be exactly the online CPUs, and the config's arch the host's.",
        examples=[
            "jhctl enable /etc/jailhouse/sys.cell",
            "jhctl -c 'sim:///tmp/jh?arch=arm64&cpus=4' enable arm64-root.cell",
        ],
    )
    p.add_argument("file", metavar="SYSTEM.cell", help="the system config")
    verbs.add(
        "disable",
        _disable,
        help="disable the hypervisor (destroys every non-root cell)",
        examples=["jhctl disable"],
    )
    verbs.add(
        "status",
        _status,
        help="show whether the hypervisor is enabled, and its memory pools",
        examples=["jhctl status", "jhctl status --json"],
    )
    p = verbs.add(
        "console",
        _console,
        help="print the hypervisor console (-f: follow until Ctrl-C)",
        description="Print the hypervisor console (what this open of the device has not "
        "read yet, which is everything on a fresh start).  With -f, keep printing what "
        "the hypervisor writes until Ctrl-C, which exits 0.",
        examples=["jhctl console", "jhctl console -f", "jhctl console --json | jq -r .text"],
    )
    p.add_argument("-f", "--follow", action="store_true", help="follow until Ctrl-C")
    _register_cell(verbs)


def _register_cell(verbs: Verbs) -> None:
    cell = verbs.group(
        "cell",
        help="create, load, start, stop and inspect cells",
        examples=["jhctl cell list", "jhctl cell create demo.cell"],
    )
    p = cell.add(
        "create",
        _cell_create,
        help="create a cell from its config; it starts out shut down",
        examples=["jhctl cell create demo.cell"],
    )
    p.add_argument("file", metavar="CELL.cell", help="the cell config")
    cell.add(
        "list",
        _cell_list,
        help="list the cells (ID, Name, State, Assigned CPUs, Failed CPUs)",
        examples=["jhctl cell list", "jhctl cell list --json | jq '.[].name'"],
    )
    p = cell.add(
        "load",
        _cell_load,
        help="shut a cell down and load images into its memory",
        description="Shut a cell down and copy images into its loadable memory.  Each "
        "image is FILE or FILE@ADDR, ADDR in hex (0x...) or decimal, in the cell's address "
        "space; the default address is 0.",
        examples=[
            "jhctl cell load demo inmate.bin",
            "jhctl cell load 1 kernel.bin@0x0 dtb.bin@0x100000",
        ],
    )
    _cell_arg(p)
    p.add_argument("images", metavar="IMAGE[@ADDR]", nargs="+", help="image files")
    for name, handler, text in (
        ("start", _cell_start, "start a loaded cell (or restart a running one)"),
        ("shutdown", _cell_shutdown, "stop a cell and park its CPUs; it stays created"),
        ("destroy", _cell_destroy, "destroy a cell; its CPUs and memory return to the root"),
    ):
        p = cell.add(name, handler, help=text, examples=[f"jhctl cell {name} demo"])
        _cell_arg(p)
    p = cell.add(
        "stats",
        _cell_stats,
        help="show a cell's exit statistics, refreshed until Ctrl-C (--once: one shot)",
        description="Show a cell's VM-exit counters, summed and per CPU, with the rate "
        "since the last refresh; Ctrl-C ends it with exit 0.  --json prints one snapshot.",
        examples=[
            "jhctl cell stats demo",
            "jhctl cell stats 1 --once",
            "jhctl cell stats demo --json | jq .statistics.total",
        ],
    )
    _cell_arg(p)
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument(
        "-i",
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes (default 1)",
    )
    p.add_argument(
        "-n",
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="stop after N refreshes (default: until Ctrl-C)",
    )


def _cell_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("cell", metavar="NAME|ID", help="the cell's name, or its id (all digits)")
    p.add_argument(
        "--name", action="store_true", help="take NAME|ID as a name even if it is all digits"
    )


def _find(hv: Hypervisor, args: argparse.Namespace) -> Cell:
    return hv.cell(cell_ref(args.cell, by_name=args.name))


# -- hypervisor -------------------------------------------------------------------------------


def _enable(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.config.flags import format_cpus  # noqa: PLC0415

    system = load_system_file(args.file)
    with ctx.connect() as hv:
        hv.enable(args.file)
    ctx.emit(
        {"enabled": True, "system": system.root_cell.name, "arch": system.arch.name},
        f"enabled: system {system.root_cell.name!r} ({system.arch.name}, root cell CPUs "
        f"{format_cpus(system.root_cell.cpus)})",
    )
    return EXIT_OK


def _disable(_args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as hv:
        hv.disable()
    ctx.emit({"enabled": False}, "disabled")
    return EXIT_OK


def _status(_args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as hv:
        status = hv.status()
        cells = hv.cells()
    doc = to_json(status)
    doc["cells"] = len(cells)
    ctx.emit(doc, f"hypervisor: {status}; {len(cells)} cell(s)")
    return EXIT_OK


def _console(args: argparse.Namespace, ctx: Context) -> int:
    if args.follow and ctx.json:
        raise CliError("console: --follow prints text as it comes; it does not take --json")
    with ctx.connect() as hv:
        reader = hv.console()
        if not args.follow:
            text = reader.read()
            if ctx.json:
                ctx.emit({"text": text, "missed_bytes": reader.missed_bytes}, "")
            else:
                ctx.stdout.write(text)
            return EXIT_OK
        try:
            for piece in reader.follow():
                ctx.stdout.write(piece)
                ctx.stdout.flush()
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK


# -- cells ------------------------------------------------------------------------------------


def _cell_create(args: argparse.Namespace, ctx: Context) -> int:
    load_cell_file(args.file)  # name the file in a parse error
    with ctx.connect() as hv:
        cell = hv.create_cell(args.file)
    ctx.emit(
        {"id": cell.id, "name": cell.name},
        f"created cell {cell.name!r} (id {cell.id}); load it with: jhctl cell load "
        f"{cell.name} IMAGE[@ADDR]",
    )
    return EXIT_OK


def cell_document(status: CellStatus) -> dict[str, Any]:
    """Turn a cell's status into the JSON of ``cell list``."""
    return {
        "id": status.id,
        "name": status.name,
        "state": status.state.text,
        "cpus_assigned": sorted(status.cpus_assigned),
        "cpus_failed": sorted(status.cpus_failed),
    }


def cell_table(cells: Sequence[CellStatus]) -> str:
    """Render cells as upstream's ``jailhouse cell list`` does (same columns and widths)."""
    from jailhouse.config.flags import format_cpus  # noqa: PLC0415

    rows = [_LIST_HEADINGS] + [
        (
            str(c.id),
            c.name,
            c.state.text,
            format_cpus(c.cpus_assigned),
            format_cpus(c.cpus_failed),
        )
        for c in cells
    ]
    return "\n".join(
        "".join(f"{cell:<{width}}" for cell, width in zip(row, _LIST_WIDTHS, strict=True)).rstrip()
        for row in rows
    )


def _cell_list(_args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as hv:
        cells = hv.cells(statistics=False)
    ctx.emit([cell_document(c) for c in cells], lambda: cell_table(cells))
    return EXIT_OK


def read_images(
    specs: Sequence[tuple[Path, int]], progress: Progress | None = None
) -> list[tuple[bytes, int]]:
    """Read image files whole, advancing ``progress`` by the bytes read.

    Raises:
        OSError: A file cannot be read.
    """
    out: list[tuple[bytes, int]] = []
    for path, address in specs:
        parts: list[bytes] = []
        with path.open("rb") as f:
            while chunk := f.read(_READ_CHUNK):
                parts.append(chunk)
                if progress is not None:
                    progress.advance(len(chunk))
        out.append((b"".join(parts), address))
    if progress is not None:
        progress.finish()
    return out


def _cell_load(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.hypervisor import Image  # noqa: PLC0415

    specs = [parse_image_spec(text) for text in args.images]
    for path, _ in specs:
        if path.is_dir():
            raise CliError(f"image {path}: is a directory, not an image file")
    total = sum(path.stat().st_size for path, _ in specs)
    progress = Progress(
        "reading images",
        total,
        stream=ctx.stderr,
        enabled=ctx.interactive and total >= _PROGRESS_MIN,
    )
    images = read_images(specs, progress)
    with ctx.connect() as hv:
        cell = _find(hv, args)
        if progress.enabled:
            ctx.note(f"loading {len(images)} image(s) into cell {cell.name!r} ...")
        cell.load([Image(data, address) for data, address in images])
    loaded = [
        {"file": str(path), "address": address, "size": len(data)}
        for (path, address), (data, _) in zip(specs, images, strict=True)
    ]
    text = "".join(
        f"loaded {image['file']} ({image['size']} bytes) at {image['address']:#x}\n"
        for image in loaded
    )
    ctx.emit(
        {"id": cell.id, "name": cell.name, "images": loaded},
        f"{text}cell {cell.name!r} is shut down with its images; start it with: "
        f"jhctl cell start {cell.name}",
    )
    return EXIT_OK


def _act(args: argparse.Namespace, ctx: Context, action: str, run: Callable[[Cell], None]) -> int:
    """Find the cell, run ``action`` on it and report its state afterwards."""
    with ctx.connect() as hv:
        cell = _find(hv, args)
        run(cell)
        state = None if cell.destroyed else cell.status().state.text
    past = {"start": "started", "shutdown": "shut down", "destroy": "destroyed"}[action]
    ctx.emit(
        {"id": cell.id, "name": cell.name, "action": action, "state": state},
        f"{past} cell {cell.name!r} (id {cell.id})" + (f", now {state}" if state else ""),
    )
    return EXIT_OK


def _cell_start(args: argparse.Namespace, ctx: Context) -> int:
    return _act(args, ctx, "start", lambda cell: cell.start())


def _cell_shutdown(args: argparse.Namespace, ctx: Context) -> int:
    return _act(args, ctx, "shutdown", lambda cell: cell.shutdown())


def _cell_destroy(args: argparse.Namespace, ctx: Context) -> int:
    return _act(args, ctx, "destroy", lambda cell: cell.destroy())


# -- statistics ---------------------------------------------------------------------------------


def stats_table(
    status: CellStatus,
    previous: Mapping[str, int] | None = None,
    elapsed: float = 0.0,
    *,
    rates: bool = True,
) -> str:
    """Render a cell's counters: the sum, a per-second rate, then one column per CPU.

    Args:
        status: The cell's status with its statistics.
        previous: The summed counters of the last refresh, for the rate column.
        elapsed: Seconds since the last refresh.
        rates: Whether to show the rate column (``-`` until there is a previous refresh).
    """
    from jailhouse.config.flags import format_cpus  # noqa: PLC0415

    cpus = sorted(status.per_cpu)
    header = ["COUNTER", "TOTAL", *(["PER SEC"] if rates else []), *(f"cpu{cpu}" for cpu in cpus)]
    rows = [header]
    # "total" first, as upstream's jailhouse-cell-stats does; the rest by name
    for name in sorted(status.statistics, key=lambda n: (n != "total", n)):
        total = status.statistics[name]
        row = [name, str(total)]
        if rates:
            rate = "-"
            if previous is not None and name in previous and elapsed > 0:
                delta = (total - previous[name]) % (1 << 31)  # the hypervisor wraps at 2**31
                rate = f"{delta / elapsed:.0f}"
            row.append(rate)
        rows.append(row + [str(status.per_cpu[cpu].get(name, "")) for cpu in cpus])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        (
            f"cell {status.name!r} (id {status.id}): {status.state.text}, CPUs "
            f"{format_cpus(status.cpus_assigned) or '-'}"
        ),
        "",
    ]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
    if len(rows) == 1:
        lines.append("(no statistics: the driver publishes none for this cell)")
    return "\n".join(lines)


def _stats_document(status: CellStatus) -> dict[str, Any]:
    doc = cell_document(status)
    doc["statistics"] = dict(status.statistics)
    doc["per_cpu"] = {str(cpu): dict(c) for cpu, c in status.per_cpu.items()}
    return doc


def _cell_stats(args: argparse.Namespace, ctx: Context) -> int:
    if args.interval < 0:
        raise CliError(f"cell stats: --interval {args.interval}: must not be negative")
    if args.count < 0:
        raise CliError(f"cell stats: --count {args.count}: must not be negative")
    with ctx.connect() as hv:
        cell = _find(hv, args)
        if args.once or ctx.json:
            status = cell.status()
            ctx.emit(_stats_document(status), lambda: stats_table(status, rates=False))
            return EXIT_OK
        clear = _CLEAR if ctx.interactive else ""
        previous: Mapping[str, int] | None = None
        last = time.monotonic()
        shown = 0
        try:
            while True:
                status = cell.status()
                now = time.monotonic()
                frame = stats_table(status, previous, now - last)
                footer = f"\n\nevery {args.interval:g}s; Ctrl-C to quit" if clear else ""
                separator = "" if clear or shown == 0 else "\n"
                ctx.stdout.write(f"{clear}{separator}{frame}{footer}\n")
                ctx.stdout.flush()
                previous, last = status.statistics, now
                shown += 1
                if args.count and shown >= args.count:
                    break
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK
