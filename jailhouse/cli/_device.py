"""Upstream ``jailhouse`` verbs on a device: enable, disable, console and ``cell ...``."""

from __future__ import annotations

import argparse
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
    parse_address,
    parse_image_spec,
    to_json,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path
    from typing import Any, Final

    from jailhouse.config.model import CellConfig
    from jailhouse.hypervisor import Cell, Hypervisor
    from jailhouse.linux import LoadPlan
    from jailhouse.sysfs import CellStatus

__all__ = [
    "cell_document",
    "cell_table",
    "load_items",
    "read_images",
    "register",
    "stats_table",
]

_READ_CHUNK: Final = 1 << 20
_PROGRESS_MIN: Final = 8 << 20
"""Images smaller than this load in a moment: no progress bar."""
_CLEAR: Final = "\x1b[H\x1b[2J"


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
        help="print the hypervisor console (-f: follow until Ctrl-C; DOMAIN: attach, ^] ends)",
        description="Print the hypervisor console (what this open of the device has not "
        "read yet, which is everything on a fresh start).  With -f, keep printing what "
        "the hypervisor writes until Ctrl-C, which exits 0.  With DOMAIN, attach to the "
        "domain's console as virsh does, until Ctrl-] or the domain stops: on a Jailhouse "
        "host that is the hypervisor console too, with what every cell prints.",
        examples=[
            "jhctl console",
            "jhctl console -f",
            "jhctl console --json | jq -r .text",
            "jhctl console demo",
        ],
    )
    p.add_argument("domain", nargs="?", metavar="DOMAIN", help="a domain: id, UUID or name")
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
        "image is FILE, FILE@ADDR or, as upstream's tool writes it, FILE -a ADDR; "
        "-s STRING [-a ADDR] loads a string with its terminating NUL.  ADDR is hex (0x...) "
        "or decimal, in the cell's address space; the default address is 0.",
        examples=[
            "jhctl cell load demo inmate.bin",
            "jhctl cell load 1 kernel.bin@0x0 dtb.bin@0x100000",
            "jhctl cell load demo inmate.bin -a 0x0 -s 'answer=42' -a 0x1000",
        ],
    )
    _cell_arg(p)
    p.add_argument(
        "images",
        metavar="IMAGE[@ADDR]",
        nargs="*",
        action=_LoadItems,
        help="image files",
    )
    p.add_argument(
        "-a",
        "--address",
        metavar=("ADDR", "IMAGE"),
        nargs="+",
        action=_LoadItems,
        help="load the image (or string) before this option at ADDR (upstream syntax)",
    )
    p.add_argument(
        "-s",
        "--string",
        metavar=("STRING", "IMAGE"),
        nargs="+",
        action=_LoadItems,
        help="load STRING and its NUL (upstream syntax); -a after it gives the address",
    )
    _register_linux(cell)
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


def _register_linux(cell: Verbs) -> None:
    p = cell.add(
        "linux",
        _cell_linux,
        help="boot Linux in a new cell (kernel, initrd, command line, device tree)",
        description="Create a cell, load a loader stub, the kernel, the initrd and the boot "
        "parameters into its loadable RAM, and start it, as upstream's `jailhouse cell "
        "linux` does (same arguments).  Everything is checked before the device is "
        "touched.  On arm64 the device tree is generated from the cell config (and "
        "--system, for the interrupt controller and UART) unless -d gives one.  Here -c "
        "is the command line, as upstream has it: give the connection as `jhctl -c URI "
        "cell linux ...` or `--connect URI`.",
        short_connect=False,
        examples=[
            "jhctl cell linux linux.cell Image -i rootfs.cpio -c 'console=ttyAMA0'",
            "jhctl cell linux linux.cell Image --system sys.cell --dry-run",
            "jhctl cell linux linux.cell Image -d board.dtb -w params.bin",
            "jhctl -c sim:///tmp/jh cell linux linux.cell bzImage -c 'console=ttyS0' --json",
        ],
    )
    p.add_argument("config", metavar="CELLCONFIG", help="the cell config")
    p.add_argument("kernel", metavar="KERNEL", help="the kernel (arm64 Image, x86 bzImage)")
    p.add_argument(
        "-d", "--dtb", metavar="DTB", help="device tree blob (arm64); default: generated"
    )
    p.add_argument("-i", "--initrd", metavar="FILE", help="initrd/initramfs for the kernel")
    p.add_argument("-c", "--cmdline", metavar='"STRING"', help="kernel command line")
    p.add_argument(
        "-w",
        "--write-params",
        metavar="FILE",
        help="touch no device: write the boot parameters to FILE (and the loader stub to "
        "FILE.loader) and print the jhctl commands that boot with them",
    )
    p.add_argument("-a", "--arch", metavar="ARCH", help="target architecture; must be the cell's")
    p.add_argument(
        "-k",
        "--kernel-decomp-factor",
        metavar="FACTOR",
        help="accepted for upstream scripts and ignored: the kernel header's sizes decide",
    )
    p.add_argument(
        "--system",
        metavar="SYSTEM.cell",
        help="the system config, for the generated device tree (GIC, UART); when booting "
        "on a simulated host, the one it was enabled with is the default (a board's driver "
        "keeps no readable copy, and --dry-run/-w touch no device: give it there)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="touch no device: check everything and print the load plan",
    )


class _LoadItems(argparse.Action):
    """Collect ``cell load`` items in command-line order into ``load_items``.

    ``-a`` and ``-s`` take one or more values so that images after them (upstream's
    ``IMAGE -a ADDR IMAGE -a ADDR``) stay in order: the first value is the option's, the
    rest are further images.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,  # noqa: ARG002 - argparse's signature
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items: list[tuple[str, str]] = list(getattr(namespace, "load_items", None) or [])
        words = [values] if isinstance(values, str) else list(values or [])
        if option_string in {"-a", "--address"}:
            items.append(("address", words[0]))
            words = words[1:]
        elif option_string in {"-s", "--string"}:
            items.append(("string", words[0]))
            words = words[1:]
        items += [("image", word) for word in words]
        namespace.load_items = items
        setattr(namespace, self.dest, None)


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
    if args.domain is not None:
        if ctx.json:
            raise CliError("console DOMAIN: prints text as it comes; it does not take --json")
        from jailhouse.cli._virsh import console_domain  # noqa: PLC0415

        return console_domain(args.domain, ctx)
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
    from jailhouse._listing import listing_table  # noqa: PLC0415

    return listing_table(
        (c.id, c.name, c.state.text, c.cpus_assigned, c.cpus_failed) for c in cells
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


def load_items(items: Sequence[tuple[str, str]]) -> list[tuple[Path | bytes, int]]:
    """Turn ``cell load`` items into images: a path or a string's bytes, and an address.

    Items are ``("image", "FILE[@ADDR]")``, ``("string", TEXT)`` and ``("address",
    ADDR)``, in command-line order; an address applies to the item before it.

    Raises:
        CliError: An address follows nothing or an item that has one, or is no number.
    """
    from pathlib import Path  # noqa: PLC0415 - kept off the cold start

    out: list[tuple[Path | bytes, int]] = []
    explicit: list[bool] = []
    for kind, text in items:
        if kind == "image":
            path, sep, _ = text.rpartition("@")
            spec = parse_image_spec(text)
            out.append(spec)
            explicit.append(bool(sep and path) and spec[0] != Path(text))
        elif kind == "string":
            out.append((text.encode() + b"\0", 0))
            explicit.append(False)
        else:
            if not out:
                raise CliError(f"-a {text}: give the IMAGE or -s STRING it is the address of first")
            if explicit[-1]:
                what = out[-1][0]
                raise CliError(
                    f"-a {text}: {what if isinstance(what, Path) else 'the string'} has an "
                    "address already (FILE@ADDR or -a)"
                )
            try:
                out[-1] = (out[-1][0], parse_address(text))
            except ValueError as exc:
                raise CliError(f"-a {text}: {exc}") from exc
            explicit[-1] = True
    return out


def _cell_load(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.hypervisor import Image  # noqa: PLC0415

    items = load_items(getattr(args, "load_items", None) or [])
    if not items:
        raise CliError("cell load: give at least one IMAGE[@ADDR] or -s STRING")
    specs = [(source, address) for source, address in items if not isinstance(source, bytes)]
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
    read = iter(read_images(specs, progress))
    images = [
        (source, address) if isinstance(source, bytes) else next(read) for source, address in items
    ]
    with ctx.connect() as hv:
        cell = _find(hv, args)
        if progress.enabled:
            ctx.note(f"loading {len(images)} image(s) into cell {cell.name!r} ...")
        cell.load([Image(data, address) for data, address in images])
    loaded = [
        {"file": str(source), "address": address, "size": len(data)}
        if not isinstance(source, bytes)
        else {"string": source[:-1].decode(), "address": address, "size": len(data)}
        for (source, address), (data, _) in zip(items, images, strict=True)
    ]
    text = "".join(
        f"loaded {image.get('file') or repr(image['string'])} ({image['size']} bytes) at "
        f"{image['address']:#x}\n"
        for image in loaded
    )
    ctx.emit(
        {"id": cell.id, "name": cell.name, "images": loaded},
        f"{text}cell {cell.name!r} is shut down with its images; start it with: "
        f"jhctl cell start {cell.name}",
    )
    return EXIT_OK


def _read_file(path: str, what: str) -> bytes:
    """Read a whole input file of ``cell linux``, naming it in the error."""
    from pathlib import Path  # noqa: PLC0415 - kept off the cold start

    file = Path(path)
    if file.is_dir():
        raise CliError(f"{what} {path}: is a directory, not a file")
    return file.read_bytes()


def _cell_linux(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.config.flags import Arch, format_cpus  # noqa: PLC0415
    from jailhouse.errors import BootError  # noqa: PLC0415
    from jailhouse.linux import plan_linux  # noqa: PLC0415

    config = load_cell_file(args.config)
    if args.arch is not None:
        try:
            wanted = Arch.from_name(args.arch)
        except ValueError as exc:
            raise CliError(f"cell linux: --arch {args.arch}: {exc}") from exc
        if wanted != config.arch:
            raise CliError(
                f"cell linux: --arch {args.arch}: the cell config {args.config} is for "
                f"{config.arch.name}"
            )
    if args.dry_run and args.write_params:
        raise CliError("cell linux: --dry-run and -w both only plan; give one of them")
    kernel = _read_file(args.kernel, "kernel")
    initrd = None if args.initrd is None else _read_file(args.initrd, "initrd")
    dtb = None if args.dtb is None else _read_file(args.dtb, "device tree")
    system = None if args.system is None else load_system_file(args.system)
    if args.kernel_decomp_factor is not None:
        ctx.note("cell linux: -k is ignored: the kernel header's sizes place the images")
    try:
        if args.dry_run or args.write_params:
            plan = plan_linux(
                config, kernel, initrd=initrd, cmdline=args.cmdline, dtb=dtb, system=system
            )
        else:
            with ctx.connect() as hv:
                plan = hv.plan_linux(config, kernel, initrd, args.cmdline, dtb, system=system)
                cell = hv.boot_plan(config, plan)
                status = cell.status()
    except BootError as exc:
        raise CliError(f"cell linux: {exc}") from exc
    if not args.dry_run:  # the dry run's plan lists its notes
        for note in plan.notes:
            ctx.note(f"cell linux: note: {note}")
    if args.write_params:
        return _write_params(args, ctx, config, plan)
    if args.dry_run:
        ctx.emit(plan.to_dict(), lambda: str(plan))
        return EXIT_OK
    ctx.emit(
        {**cell_document(status), "plan": plan.to_dict()},
        f"started Linux in cell {cell.name!r} (id {cell.id}) on CPUs "
        f"{format_cpus(status.cpus_assigned) or '-'}: {plan.kernel_format} at "
        f"{plan.kernel_entry:#x}, boot argument {plan.boot_arg:#x}",
    )
    return EXIT_OK


def _write_params(
    args: argparse.Namespace, ctx: Context, config: CellConfig, plan: LoadPlan
) -> int:
    """Write the plan's generated images and print the ``jhctl`` commands that boot it."""
    import shlex  # noqa: PLC0415 - kept off the cold start
    from pathlib import Path  # noqa: PLC0415

    out = Path(args.write_params)
    given = {"kernel": args.kernel, "initrd": args.initrd, "dtb": args.dtb}
    loads: list[tuple[str, int]] = []
    written: list[str] = []
    for entry in plan.entries:
        source = given.get(entry.what)
        params = entry.address == plan.boot_arg
        if not params and source is not None and Path(source).read_bytes() == entry.data:
            loads.append((source, entry.address))
            continue
        path = out if params else Path(f"{out}.{entry.what}")
        path.write_bytes(entry.data)
        written.append(str(path))
        loads.append((str(path), entry.address))
    commands = [
        f"jhctl cell create {shlex.quote(args.config)}",
        f"jhctl cell load {shlex.quote(config.name)} "
        + " ".join(f"{shlex.quote(path)} -a {address:#x}" for path, address in loads),
        f"jhctl cell start {shlex.quote(config.name)}",
    ]
    ctx.emit(
        {"written": written, "commands": commands, "plan": plan.to_dict()},
        f"boot parameters written to {', '.join(written)}; boot Linux with:\n\n"
        + "\n".join(commands),
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
