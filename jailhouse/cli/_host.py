"""Whole-host verbs: ``demo`` (the lifecycle on a simulated host), ``host-validate``, selftest."""

from __future__ import annotations

from jailhouse.cli._base import (
    EXIT_FINDINGS,
    EXIT_OK,
    CliError,
    Context,
    Verbs,
    load_system_file,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, Final

    from jailhouse.examples import ExampleArch
    from jailhouse.hostcheck import HostCheck
    from jailhouse.hypervisor import Cell

__all__ = ["register"]

_XML_PREVIEW_LINES: Final = 14


def register(verbs: Verbs) -> None:
    """Add ``demo``, ``host-validate`` and ``selftest``."""
    p = verbs.add(
        "demo",
        _demo,
        help="run the whole cell lifecycle on a fresh simulated host (no hardware)",
        description="Run the whole story on a fresh, temporary simulated host with the "
        "example configs: enable, translate a cell to libvirt XML and back, create, load "
        "a tiny image, start, list, read the console, shut down, destroy, disable.  Each "
        "step prints the jhctl command that does the same.",
        examples=["jhctl demo", "jhctl demo --arch x86", "jhctl demo --keep /tmp/jh-demo"],
    )
    p.add_argument("--arch", choices=("arm64", "x86"), default="arm64", help="the example machine")
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="build the simulated host in DIR (new or empty) and keep it afterwards",
    )
    p = verbs.add(
        "host-validate",
        _host_validate,
        help="check that this host can run Jailhouse (like virt-host-validate)",
        description="Check that this host can run Jailhouse: device, driver, firmware, "
        "virtualisation support, reserved memory, root cell CPUs.  Exits 1 when any check "
        "FAILs (WARN and SKIP alone exit 0).",
        examples=[
            "jhctl host-validate",
            "jhctl host-validate --system /etc/jailhouse/sys.cell",
            "jhctl host-validate --root /mnt/target --json",
        ],
    )
    p.add_argument("--system", metavar="SYSTEM.cell", help="also check this system config")
    p.add_argument(
        "--root", default="/", metavar="DIR", help="the directory that plays / (default /)"
    )
    _register_selftest(verbs)


# -- host-validate ------------------------------------------------------------------------------


def _check_line(check: HostCheck) -> str:
    line = f"{check.status.name:<4}  {check.name:<15} {check.detail}"
    if check.hint:
        line += f"\n{'':<21} hint: {check.hint}"
    return line


def _host_validate(args: argparse.Namespace, ctx: Context) -> int:
    from pathlib import Path  # noqa: PLC0415 - kept off the cold start

    from jailhouse.hostcheck import CheckStatus, summarize, validate_host  # noqa: PLC0415

    root = Path(args.root)
    if not root.is_dir():
        raise CliError(f"host-validate: --root {args.root}: not a directory")
    system = load_system_file(args.system) if args.system else None
    checks = validate_host(root, system=system)
    failed = sum(1 for c in checks if c.status is CheckStatus.FAIL)
    warned = sum(1 for c in checks if c.status is CheckStatus.WARN)
    ctx.emit(
        {"root": str(root), "failed": failed, "checks": [c.to_dict() for c in checks]},
        lambda: (
            "\n".join(_check_line(c) for c in checks)
            + f"\nhost-validate: {len(checks)} checks, {failed} failed, {warned} warned"
        ),
    )
    return summarize(checks)


# -- selftest -----------------------------------------------------------------------------------


def _register_selftest(verbs: Verbs) -> None:
    """Add ``selftest``; :mod:`jailhouse.selftest` loads only when it runs."""
    p = verbs.add(
        "selftest",
        _selftest,
        help="run the fixed self-test battery (lifecycle and error paths) on the host",
        description="Run the fixed self-test battery: enable (unless already enabled with "
        "this system config), create the cell, load a park-loop inmate (or IMAGE@ADDR), "
        "start, read statistics and console, shut down, destroy, and every documented "
        "error path with the errno the driver returns.  The hypervisor is left as it was "
        "found.  Exits 0 when every step saw what the driver should answer, else 1.",
        examples=[
            "jhctl selftest sys.cell demo.cell",
            "jhctl selftest sys.cell demo.cell inmate.bin@0x0 --json > board.json",
            "jhctl selftest sys.cell demo.cell --compare-sim",
            "jhctl selftest sys.cell linux.cell --linux-kernel Image --linux-cmdline quiet",
        ],
    )
    p.add_argument("system", metavar="SYSTEM.cell", help="the system config")
    p.add_argument("cell", metavar="CELL.cell", help="the test cell's config")
    p.add_argument(
        "image",
        metavar="IMAGE[@ADDR]",
        nargs="?",
        help="the image to load (default: a park-loop inmate at the reset address)",
    )
    p.add_argument(
        "--compare-sim",
        action="store_true",
        help="also run the battery on a simulated host and list every difference",
    )
    p.add_argument(
        "--linux-kernel",
        metavar="KERNEL",
        help="also boot this kernel (arm64 Image, x86 bzImage) in the test cell, as "
        "`cell linux` does, check that it runs, and destroy it (steps linux-boot, "
        "linux-destroy); the cell needs loadable RAM for it",
    )
    p.add_argument("--linux-initrd", metavar="FILE", help="initrd for --linux-kernel")
    p.add_argument("--linux-cmdline", metavar='"STRING"', help="command line for --linux-kernel")


def _selftest(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.cli._base import load_cell_file, parse_image_spec  # noqa: PLC0415
    from jailhouse.cli._device import _read_file  # noqa: PLC0415
    from jailhouse.errors import BootError  # noqa: PLC0415
    from jailhouse.selftest import LinuxBoot, run_selftest, simulate_selftest  # noqa: PLC0415

    system = load_system_file(args.system)
    cell = load_cell_file(args.cell)
    image: bytes | None = None
    address: int | None = None
    if args.image:
        path, address = parse_image_spec(args.image)
        image = path.read_bytes()
    linux: LinuxBoot | None = None
    if args.linux_kernel is not None:
        linux = LinuxBoot(
            _read_file(args.linux_kernel, "kernel"),
            None if args.linux_initrd is None else _read_file(args.linux_initrd, "initrd"),
            args.linux_cmdline,
        )
    elif args.linux_initrd is not None or args.linux_cmdline is not None:
        raise CliError("selftest: --linux-initrd and --linux-cmdline need --linux-kernel")

    def progress(step: Any) -> None:  # noqa: ANN401 - a selftest Step
        if not ctx.interactive:
            return
        mark = "ok" if step.passed else "FAIL"
        ctx.note(f"step {step.index:2d} {step.op:<24} {step.observed.result:<8} {mark}")

    try:
        with ctx.connect() as hv:
            transcript = run_selftest(
                hv, system, cell, image=image, address=address, progress=progress, linux=linux
            )
    except BootError as exc:
        raise CliError(f"selftest: --linux-kernel: {exc}") from exc
    diffs: list[str] | None = None
    if args.compare_sim:
        reference = simulate_selftest(system, cell, image=image, address=address, linux=linux)
        diffs = transcript.compare(reference)
    doc = transcript.to_json()
    if diffs is not None:
        doc["differences_from_sim"] = diffs

    def text() -> str:
        out = str(transcript)
        if diffs is not None:
            out += "\n" + (
                "\n".join(f"differs from the simulator: {d}" for d in diffs)
                if diffs
                else "same answers as the simulator"
            )
        return out

    ctx.emit(doc, text)
    return EXIT_OK if transcript.passed and not diffs else EXIT_FINDINGS


# -- demo ---------------------------------------------------------------------------------------


class _Story:
    """Prints the demo's steps as they happen, or collects them for ``--json``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.steps: list[dict[str, Any]] = []

    def step(self, title: str, command: str, run: Callable[[], str]) -> None:
        """Run one step, printing its title, the equivalent command and what it showed."""
        number = len(self.steps) + 1
        if not self.ctx.json:
            self.ctx.stdout.write(f"\n== {number}. {title}\n$ {command}\n")
            self.ctx.stdout.flush()
        output = run()
        if not self.ctx.json and output:
            self.ctx.stdout.write(output if output.endswith("\n") else output + "\n")
            self.ctx.stdout.flush()
        self.steps.append({"step": number, "title": title, "command": command, "output": output})


def _prepare_dir(keep: str | None) -> tuple[Path, bool]:
    """Return the demo's directory and whether to remove it afterwards."""
    import tempfile  # noqa: PLC0415 - kept off the cold start
    from pathlib import Path  # noqa: PLC0415

    if keep is None:
        return Path(tempfile.mkdtemp(prefix="jhctl-demo-")), True
    path = Path(keep).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CliError(f"demo: --keep {keep}: exists and is not an empty directory; name a new one")
    path.mkdir(parents=True, exist_ok=True)
    return path, False


def _demo(args: argparse.Namespace, ctx: Context) -> int:
    import shutil  # noqa: PLC0415 - kept off the cold start

    workdir, remove = _prepare_dir(args.keep)
    try:
        _run_demo(args.arch, workdir, ctx, kept=not remove)
    finally:
        if remove:
            shutil.rmtree(workdir, ignore_errors=True)
    return EXIT_OK


def xml_preview(xml: str) -> str:
    """Shorten domain XML for the demo: the ``<metadata>`` block collapses to one line."""
    out: list[str] = []
    hidden = 0
    inside = False
    for line in xml.splitlines():
        stripped = line.strip()
        if stripped == "</metadata>":
            indent = line[: len(line) - len(line.lstrip())]
            out.append(
                f"{indent}  <!-- {hidden} lines: the exact cell config, for the way back -->"
            )
            inside = False
        elif inside:
            hidden += 1
            continue
        elif stripped == "<metadata>":
            inside = True
        out.append(line)
    return "\n".join(out)


def _run_demo(arch: str, workdir: Path, ctx: Context, *, kept: bool) -> None:
    import jailhouse  # noqa: PLC0415
    from jailhouse.cli._device import cell_document, cell_table  # noqa: PLC0415
    from jailhouse.config.flags import format_cpus  # noqa: PLC0415
    from jailhouse.domxml import cell_to_domain, domain_to_cell  # noqa: PLC0415
    from jailhouse.examples import example_cells, example_files, example_system  # noqa: PLC0415
    from jailhouse.inmates import default_load_address, park_inmate  # noqa: PLC0415
    from jailhouse.sim import SimHost  # noqa: PLC0415
    from jailhouse.store import write_atomically  # noqa: PLC0415

    arch_name: ExampleArch = "arm64" if arch == "arm64" else "x86"
    for name, blob in example_files(arch_name).items():
        write_atomically(workdir / name, blob)
    system = example_system(arch_name)
    original = example_cells(arch_name)[f"{arch_name}-demo"]
    cpus = max(system.root_cell.cpus) + 1
    host_dir = workdir / "host"
    sim = SimHost(host_dir, arch=system.arch, cpus=cpus)
    uri = f"sim://{host_dir}"
    story = _Story(ctx)
    system_file = f"{system.root_cell.name}.cell"
    cell_file = f"{original.name}.cell"
    xml_file = f"{original.name}.xml"
    translated_file = f"{original.name}-from-xml.cell"
    image_file = "inmate.bin"
    greeting = (
        f"Hello from {original.name}! A bare-metal inmate on CPU "
        f"{format_cpus(original.cpus)}, started by python-jailhouse.\n"
    ).encode()
    if not ctx.json:
        ctx.stdout.write(
            f"python-jailhouse demo: the cell lifecycle on a simulated {arch_name} host with "
            f"{cpus} CPUs.\nEach step runs through the library and shows the jhctl command "
            f"that does the same, run in\n  {workdir}\nwith\n  export JAILHOUSE_URI={uri}\n"
        )
    cells_while_running: list[dict[str, Any]] = []

    with jailhouse.open(uri) as hv:

        def enable() -> str:
            hv.enable(workdir / system_file)
            return f"hypervisor: {hv.status()}"

        story.step("enable the hypervisor", f"jhctl enable {system_file}", enable)

        translated: list[Any] = []

        def translate() -> str:
            xml = cell_to_domain(original)
            (workdir / xml_file).write_text(xml, encoding="utf-8")
            back = domain_to_cell(xml, system).config
            write_atomically(workdir / translated_file, back.to_bytes())
            translated.append(back)
            same = "the same bytes as" if back.to_bytes() == original.to_bytes() else "differs from"
            return f"{xml_preview(xml)}\nback from XML: {back}; {same} {cell_file}"

        story.step(
            "describe the demo cell as libvirt domain XML, and translate it back",
            f"jhctl config to-xml {cell_file} > {xml_file}\n$ jhctl config from-xml {xml_file} "
            f"--system {system_file} -o {translated_file}",
            translate,
        )
        config = translated[0]
        created: list[Cell] = []

        def create() -> str:
            new = hv.create_cell(workdir / translated_file)
            created.append(new)
            return f"cell {new.name!r} has id {new.id}; state: {new.status().state}"

        story.step("create the cell", f"jhctl cell create {translated_file}", create)
        cell = created[0]
        image = park_inmate(config.arch)
        address = default_load_address(config, len(image))
        (workdir / image_file).write_bytes(image)
        # The simulated inmate: what it prints on the hypervisor console when started.
        sim.script_cell(cell.name, console=greeting)

        def load() -> str:
            cell.load([(image, address)])
            return (
                f"loaded the {len(image)}-byte park-loop inmate at {address:#x}; "
                f"state: {cell.status().state}"
            )

        story.step(
            "load a tiny image", f"jhctl cell load {cell.name} {image_file}@{address:#x}", load
        )

        def start() -> str:
            cell.start()
            return f"state: {cell.status().state}"

        story.step("start the cell", f"jhctl cell start {cell.name}", start)

        def listing() -> str:
            cells = hv.cells()
            cells_while_running.extend(cell_document(c) for c in cells)
            return cell_table(cells)

        story.step("list the cells", "jhctl cell list", listing)
        story.step(
            "read the hypervisor console",
            "jhctl console",
            lambda: hv.console().read().rstrip("\n"),
        )

        def shutdown() -> str:
            cell.shutdown()
            return f"state: {cell.status().state}"

        story.step("shut the cell down", f"jhctl cell shutdown {cell.name}", shutdown)

        def destroy() -> str:
            cell.destroy()
            return "cells left: " + ", ".join(c.name for c in hv.cells())

        story.step("destroy the cell", f"jhctl cell destroy {cell.name}", destroy)

        def disable() -> str:
            hv.disable()
            return f"hypervisor: {hv.status()}"

        story.step("disable the hypervisor", "jhctl disable", disable)

    if ctx.json:
        ctx.emit(
            {
                "arch": arch_name,
                "directory": str(workdir),
                "kept": kept,
                "uri": uri,
                "cells_while_running": cells_while_running,
                "steps": story.steps,
            },
            "",
        )
        return
    tail = (
        f"The host and the files stay in {workdir}: cd there, export JAILHOUSE_URI={uri}, "
        "and run the steps yourself."
        if kept
        else "The temporary host is gone; `jhctl demo --keep DIR` keeps one to try the commands on."
    )
    ctx.stdout.write(f"\ndone. {tail}\n")
