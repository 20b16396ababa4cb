"""``jhctl config ...``: show, check and translate config files; no device is touched."""

from __future__ import annotations

from jailhouse.cli._base import (
    EXIT_FINDINGS,
    EXIT_OK,
    Context,
    Verbs,
    flag_names,
    load_cell_file,
    load_config_file,
    load_system_file,
    to_json,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from jailhouse.config.model import CellConfig, MemoryRegion, SystemConfig
    from jailhouse.config.validate import Finding

__all__ = ["check_handler", "config_document", "describe_config", "register"]


def register(verbs: Verbs) -> None:
    """Add ``config show``, ``check``, ``from-xml``, ``to-xml``, ``create`` and ``new-cell``."""
    config = verbs.group(
        "config",
        help="show, check and translate config files (no device needed)",
        examples=["jhctl config show demo.cell", "jhctl config check sys.cell demo.cell"],
    )
    p = config.add(
        "show",
        _show,
        help="summarise a cell or system config (--json: every field)",
        description="Summarise a cell or system config: CPUs, memory regions with their "
        "flags, interrupt lines, devices.  With --json, every field of the config; numbers "
        "(addresses too) are integers, flag words have a <field>_names list beside them.",
        examples=["jhctl config show demo.cell", "jhctl config show --json sys.cell | jq .arch"],
    )
    p.add_argument("file", metavar="FILE", help="a .cell file (cell or system config)")
    p = config.add(
        "check",
        _check,
        help="check a system config and the cells meant to run on it",
        description="Check a system config and the cells meant to run on it at the same "
        "time, as upstream's `jailhouse config check` does, plus the rules the driver and "
        "hypervisor enforce.  Prints one finding per line with its field path.  Exits 1 "
        "when any finding is an error; warnings alone exit 0.",
        examples=[
            "jhctl config check sys.cell",
            "jhctl config check sys.cell demo.cell linux.cell",
            "jhctl config check --json sys.cell demo.cell | jq '.findings[].field'",
        ],
    )
    p.add_argument("system", metavar="SYSTEM.cell", help="the system config")
    p.add_argument("cells", metavar="CELL.cell", nargs="*", help="non-root cell configs")
    p = config.add(
        "from-xml",
        _from_xml,
        help="translate libvirt domain XML into a cell config",
        description="Translate a libvirt domain XML into a binary cell config for the "
        "system config given with --system (which knows the machine's memory, CPUs and "
        "interrupt controller).",
        examples=[
            "jhctl config from-xml demo.xml --system sys.cell -o demo.cell",
            "jhctl config from-xml linux.xml --system sys.cell --defined demo.cell -o linux.cell",
        ],
    )
    p.add_argument("xml", metavar="DOMAIN.xml", help="the domain XML ('-' for stdin)")
    p.add_argument("--system", required=True, metavar="SYSTEM.cell", help="the system config")
    p.add_argument(
        "-o", "--output", required=True, metavar="CELL.cell", help="where to write the cell"
    )
    p.add_argument(
        "--defined",
        action="append",
        default=[],
        metavar="CELL.cell",
        help="a cell already on the system: the new cell gets none of its CPUs or memory "
        "and joins its ivshmem links (repeatable)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse anything the translation would ignore or approximate",
    )
    p = config.add(
        "to-xml",
        _to_xml,
        help="describe a cell config as libvirt domain XML",
        examples=["jhctl config to-xml demo.cell > demo.xml"],
    )
    p.add_argument("file", metavar="CELL.cell", help="a cell config")
    _register_generators(config)


# -- show -------------------------------------------------------------------------------------


def _show(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.config.model import SystemConfig  # noqa: PLC0415

    config = load_config_file(args.file)
    kind = "system" if isinstance(config, SystemConfig) else "cell"
    ctx.emit(
        config_document(config), lambda: f"{kind} config {args.file}\n" + describe_config(config)
    )
    return EXIT_OK


def config_document(config: CellConfig | SystemConfig) -> dict[str, Any]:
    """Dump a config as a JSON-ready dict: ``kind``, ``size`` and every field."""
    from jailhouse.config.model import SystemConfig  # noqa: PLC0415

    doc: dict[str, Any] = {
        "kind": "system" if isinstance(config, SystemConfig) else "cell",
        "size": config.size,
    }
    doc.update(to_json(config))
    return doc


def describe_config(config: CellConfig | SystemConfig) -> str:
    """Render a config for people: header fields, then one line per array entry."""
    from jailhouse.config.model import SystemConfig  # noqa: PLC0415

    if isinstance(config, SystemConfig):
        return _describe_system(config)
    return _describe_cell(config, indent="")


def _names(flags: Any) -> str:  # noqa: ANN401 - any IntFlag
    return "|".join(flag_names(flags)) or "-"


def _field(label: str, value: object, indent: str) -> str:
    return f"{indent}{label + ':':<19} {value}\n"


def _describe_system(system: SystemConfig) -> str:
    from jailhouse.config.model import ArmPlatform, IommuType  # noqa: PLC0415

    hv = system.hypervisor_memory
    platform = system.platform
    info = platform.arch_info
    out = _field("arch", system.arch.name, "")
    out += _field("size", f"{system.size} bytes", "")
    out += _field("hypervisor memory", f"{hv.phys_start:#x}+{hv.size:#x}", "")
    out += _field("flags", _names(system.flags), "")
    out += _field("debug console", system.debug_console, "")
    if platform.pci_mmconfig_base:
        out += _field(
            "PCI MMCONFIG",
            f"{platform.pci_mmconfig_base:#x}, buses 0-{platform.pci_mmconfig_end_bus}, "
            f"domain {platform.pci_domain}{' (virtual)' if platform.pci_is_virtual else ''}",
            "",
        )
    if isinstance(info, ArmPlatform):
        gic = f"GICv{info.gic_version} GICD {info.gicd_base:#x}"
        gic += (
            f" GICR {info.gicr_base:#x}"
            if info.gic_version == 3
            else f" GICC {info.gicc_base:#x} GICH {info.gich_base:#x} GICV {info.gicv_base:#x}"
        )
        out += _field("interrupts", f"{gic}, maintenance IRQ {info.maintenance_irq}", "")
    else:
        out += _field(
            "x86 platform",
            f"PM timer {info.pm_timer_address:#x}, APIC mode {info.apic_mode.name}, "
            f"TSC {info.tsc_khz} kHz, APIC {info.apic_khz} kHz",
            "",
        )
    units = [u for u in platform.iommu_units if u.type != IommuType.UNUSED]
    if units:
        out += f"IOMMU units ({len(units)}):\n"
        for i, unit in enumerate(units):
            out += f"  [{i}] {unit.type.name} {unit.base:#x}+{unit.size:#x}\n"
    out += f"root cell {system.root_cell.name!r}:\n"
    return out + _describe_cell(system.root_cell, indent="  ")


def _region_line(i: int, region: MemoryRegion) -> str:
    return (
        f"[{i}] phys {region.phys_start:#012x} virt {region.virt_start:#012x} "
        f"size {region.size:#010x} {_names(region.flags)}"
    )


def _describe_cell(cell: CellConfig, *, indent: str) -> str:
    from jailhouse.config.flags import format_cpus  # noqa: PLC0415

    out = _field("name", cell.name, indent)
    if not indent:
        out += _field("arch", cell.arch.name, indent)
        out += _field("size", f"{cell.size} bytes", indent)
    out += _field("CPUs", format_cpus(cell.cpus) or "none", indent)
    out += _field("flags", _names(cell.flags), indent)
    out += _field("reset address", f"{cell.cpu_reset_address:#x}", indent)
    out += _field("console", cell.console, indent)
    if cell.vpci_irq_base:
        out += _field("vPCI IRQ base", cell.vpci_irq_base, indent)
    if cell.msg_reply_timeout:
        out += _field("reply timeout", cell.msg_reply_timeout, indent)
    sections: list[tuple[str, list[str]]] = [
        ("memory regions", [_region_line(i, r) for i, r in enumerate(cell.mem_regions)]),
        (
            "cache regions",
            [
                f"[{i}] {c.type.name} start {c.start} size {c.size} {_names(c.flags)}"
                for i, c in enumerate(cell.cache_regions)
            ],
        ),
        (
            "irqchips",
            [
                f"[{i}] {chip.address:#x} id {chip.id:#x} pins {format_cpus(chip.pins) or 'none'}"
                for i, chip in enumerate(cell.irqchips)
            ],
        ),
        (
            "PIO regions",
            [
                f"[{i}] ports {p.base:#x}-{p.base + p.length - 1:#x}"
                if p.length
                else f"[{i}] ports {p.base:#x} (empty)"
                for i, p in enumerate(cell.pio_regions)
            ],
        ),
        ("PCI devices", [_pci_line(i, d) for i, d in enumerate(cell.pci_devices)]),
        (
            "PCI capabilities",
            [
                f"[{i}] id {c.id:#x} start {c.start:#x} len {c.len} {_names(c.flags)}"
                for i, c in enumerate(cell.pci_caps)
            ],
        ),
        ("stream ids", [f"[{i}] {s:#x}" for i, s in enumerate(cell.stream_ids)]),
    ]
    for title, lines in sections:
        if lines:
            out += f"{indent}{title} ({len(lines)}):\n"
            out += "".join(f"{indent}  {line}\n" for line in lines)
    if cell.trailing:
        out += f"{indent}trailing bytes:    {len(cell.trailing)} (ignored by the driver)\n"
    return out


def _pci_line(i: int, dev: Any) -> str:  # noqa: ANN401 - PciDevice
    from jailhouse.config.model import PciType  # noqa: PLC0415

    line = f"[{i}] {dev.type.name} {dev.bdf_text}"
    if dev.type == PciType.IVSHMEM:
        line += (
            f" peer {dev.shmem_dev_id}/{dev.shmem_peers} regions from "
            f"[{dev.shmem_regions_start}] protocol {dev.shmem_protocol:#x}"
        )
    elif dev.num_caps:
        line += f" caps [{dev.caps_start}..{dev.caps_start + dev.num_caps - 1}]"
    return line


# -- check ------------------------------------------------------------------------------------


def _check(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.config.validate import Severity, check_configs  # noqa: PLC0415

    system = load_system_file(args.system)
    cells = [load_cell_file(path) for path in args.cells]
    findings = check_configs(system, *cells)
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    warnings = len(findings) - errors
    doc = {
        "system": args.system,
        "cells": list(args.cells),
        "errors": errors,
        "warnings": warnings,
        "findings": [_finding_document(f) for f in findings],
    }

    def text() -> str:
        from jailhouse.cli._quick import check_summary  # noqa: PLC0415 - one line, one place

        names = [system.root_cell.name, *(c.name for c in cells)]
        return "\n".join([*(str(f) for f in findings), check_summary(names, errors, warnings)])

    ctx.emit(doc, text)
    return EXIT_FINDINGS if errors else EXIT_OK


check_handler = _check
"""The handler of ``config check``, which :func:`jailhouse.cli.main` runs without a parser."""


def _finding_document(finding: Finding) -> dict[str, Any]:
    return {
        "severity": finding.severity.value,
        "cell": finding.cell,
        "field": finding.field,
        "value": to_json(finding.value),
        "reason": finding.reason,
    }


# -- XML ----------------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415 - kept off the cold start

    if path == "-":
        return sys.stdin.read()
    return Path(path).read_text(encoding="utf-8")


def _from_xml(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.config.flags import format_cpus  # noqa: PLC0415
    from jailhouse.domxml import domain_to_cell  # noqa: PLC0415 - lxml loads here only
    from jailhouse.store import write_atomically  # noqa: PLC0415

    system = load_system_file(args.system)
    defined = [load_cell_file(path) for path in args.defined]
    xml = _read_text(args.xml)
    result = domain_to_cell(xml, system, defined=defined, strict=args.strict)
    cell = result.config
    blob = cell.to_bytes()
    write_atomically(args.output, blob)
    doc = {
        "output": args.output,
        "name": cell.name,
        "size": len(blob),
        "cpus": sorted(cell.cpus),
        "memory_regions": len(cell.mem_regions),
        "boot": to_json(result.boot),
        "uuid": result.uuid,
        "notes": [str(note) for note in result.notes],
    }
    for note in result.notes:
        ctx.note(f"note: {note}")
    boot = "" if result.boot.is_empty else f"; boot: {result.boot}"
    ctx.emit(
        doc,
        f"wrote {args.output}: cell {cell.name!r}, CPUs {format_cpus(cell.cpus) or 'none'}, "
        f"{len(cell.mem_regions)} memory regions, {len(blob)} bytes{boot}\n"
        f"check it with: jhctl config check {args.system} {args.output}",
    )
    return EXIT_OK


def _to_xml(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.domxml import cell_to_domain  # noqa: PLC0415 - lxml loads here only

    cell = load_cell_file(args.file)
    xml = cell_to_domain(cell)
    ctx.emit({"name": cell.name, "xml": xml}, xml)
    return EXIT_OK


# -- create, new-cell ---------------------------------------------------------------------------


def _register_generators(config: Verbs) -> None:
    p = config.add(
        "create",
        _create,
        help="generate the system config of this host (or of a recorded host tree)",
        description="Generate a system config from what the host shows: on x86 /proc/iomem, "
        "the kernel command line, the CPU and PCI sysfs and the ACPI tables (MCFG, DMAR or "
        "IVRS, APIC, FACP); on arm64 the device tree under /proc/device-tree.  Every file is "
        "read below --root, so a recorded tree works as well as the running host.  Warnings "
        "name the file or node and what to supply (such as the memmap= or mem= setting that "
        "keeps the hypervisor memory from Linux); they go to stderr.  Without -o, --xml or "
        "--c the config is summarised.  Exits 1 when the result fails `config check`.",
        examples=[
            "jhctl config create -o sys.cell",
            "jhctl config create --root fixtures/hosts/qemu-arm64-virt -o sys.cell",
            "jhctl config create --c > sys.c",
            "jhctl config create --xml --root fixtures/hosts/qemu-q35",
            "jhctl config create --json --root fixtures/hosts/qemu-q35 | jq '.notes[]'",
        ],
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument("--xml", action="store_true", help="print the root cell as domain XML")
    form.add_argument("--c", action="store_true", help="print C source in upstream's config format")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write there (the .cell, or the --xml/--c text)"
    )
    p.add_argument("--root", default="/", metavar="DIR", help="the directory that plays / ")
    p.add_argument("--arch", choices=["x86", "arm64"], help="the host's architecture")
    p.add_argument("--name", default="root", help="the root cell's name (default: root)")
    p.add_argument(
        "--no-ivshmem",
        action="store_true",
        help="leave out the root cell's ivshmem link (device 00:0e.0 on x86, 0001:00:00.0 on "
        "arm64) that `config new-cell --ivshmem` joins",
    )
    p = config.add(
        "new-cell",
        _new_cell,
        help="make a cell for N CPUs and M MiB from what the system leaves free",
        description="Make a non-root cell config for a system config and the cells already "
        "defined on it: CPUs of the root cell no other cell has, RAM from the inmate pool, "
        "the comm region, the debug console and, with --ivshmem, the second peer of the "
        "root cell's ivshmem link (on ARM with its INTx line).  The result is ready for "
        "`cell create` (-o) or `define` (--xml).",
        examples=[
            "jhctl config new-cell sys.cell --cpus 1 --mem 16 --ivshmem -o demo.cell",
            "jhctl config new-cell sys.cell --cells demo.cell --cpus 2 --mem 128 --xml > l.xml",
            "jhctl config new-cell sys.cell --cpus 1 --mem 8 --root / --console-irq auto -o c.cell",
        ],
    )
    p.add_argument("system", metavar="SYSTEM.cell", help="the system config")
    p.add_argument(
        "--cells", nargs="*", default=[], metavar="CELL.cell", help="cells already defined"
    )
    p.add_argument("--cpus", type=int, required=True, metavar="N", help="how many CPUs")
    p.add_argument("--mem", type=int, required=True, metavar="MIB", help="RAM in MiB")
    p.add_argument("--name", help="the cell's name (default: cell, or cell2, cell3... when taken)")
    p.add_argument(
        "--ivshmem", action="store_true", help="join the root cell's ivshmem link as peer 1"
    )
    p.add_argument(
        "--console-irq",
        metavar="IRQ|auto",
        help="ARM: grant the debug UART's interrupt (it leaves the root cell while the cell "
        "runs); auto reads it from the device tree under --root",
    )
    p.add_argument(
        "--root",
        metavar="DIR",
        help="a host tree whose device tree names the interrupts in use (ARM)",
    )
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="CELL.cell", help="write the cell config")
    out.add_argument("--xml", action="store_true", help="print the cell as domain XML")


def _notes_out(notes: Any, ctx: Context) -> list[dict[str, str | None]]:  # noqa: ANN401
    for note in notes:
        ctx.note(str(note))
    return [note.to_dict() for note in notes]


def _system_comment(system: SystemConfig) -> str:
    hv = system.hypervisor_memory
    p = system.platform
    text = (
        f"Jailhouse system config ({system.arch.libvirt_name}): hypervisor memory "
        f"{hv.phys_start:#x}+{hv.size:#x}, debug console {system.debug_console}, PCI "
        f"MMCONFIG {p.pci_mmconfig_base:#x} (buses 0-{p.pci_mmconfig_end_bus}, domain "
        f"{p.pci_domain}{', virtual' if p.pci_is_virtual else ''}), "
        f"{len(p.iommu_units)} IOMMU unit(s); the root cell follows"
    )
    return f"<!-- {text.replace('--', '-')} -->\n"


def _create(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.config.model import Arch  # noqa: PLC0415
    from jailhouse.config.validate import Severity, check_configs  # noqa: PLC0415
    from jailhouse.configgen import generate_system, to_c_source  # noqa: PLC0415
    from jailhouse.store import write_atomically  # noqa: PLC0415

    arch = Arch.from_name(args.arch) if args.arch else None
    result = generate_system(args.root, arch=arch, name=args.name, ivshmem=not args.no_ivshmem)
    system = result.config
    findings = check_configs(system)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    notes = _notes_out(result.notes, ctx)
    for finding in findings:
        ctx.note(f"config check: {finding}")
    doc: dict[str, Any] = {
        "root": args.root,
        "output": args.output,
        "format": "xml" if args.xml else "c" if args.c else "cell",
        "notes": notes,
        "findings": [_finding_document(f) for f in findings],
        "config": config_document(system),
    }
    if args.xml or args.c:
        from jailhouse.domxml import cell_to_domain  # noqa: PLC0415 - lxml loads here only

        text = (
            _system_comment(system) + cell_to_domain(system.root_cell)
            if args.xml
            else to_c_source(
                system,
                comments=result.region_comments,
                title=f"Generated by jhctl config create from {args.root}.",
            )
        )
        if args.output:
            write_atomically(args.output, text.encode())
            ctx.emit(doc, f"wrote {args.output}")
        else:
            doc["text"] = text
            ctx.emit(doc, text)
    elif args.output:
        blob = system.to_bytes()
        write_atomically(args.output, blob)
        ctx.emit(
            doc,
            f"wrote {args.output}: {system}, {len(blob)} bytes\n"
            f"check the host with: jhctl host-validate --system {args.output}",
        )
    else:
        ctx.emit(doc, lambda: describe_config(system))
    return EXIT_FINDINGS if errors else EXIT_OK


def _new_cell(args: argparse.Namespace, ctx: Context) -> int:
    from jailhouse.configgen import (  # noqa: PLC0415
        device_tree_spis,
        device_tree_uart_irq,
        new_cell,
    )
    from jailhouse.errors import ConfigError  # noqa: PLC0415
    from jailhouse.store import write_atomically  # noqa: PLC0415

    system = load_system_file(args.system)
    cells = [load_cell_file(path) for path in args.cells]
    console_irq: int | None = None
    if args.console_irq == "auto":
        if args.root is None:
            raise ConfigError("--console-irq", "auto", "needs --root to read the device tree")
        console_irq = device_tree_uart_irq(args.root, system.debug_console.address)
        if console_irq is None:
            raise ConfigError(
                "--console-irq",
                "auto",
                f"no device-tree node at {system.debug_console.address:#x} names an interrupt",
            )
    elif args.console_irq is not None:
        try:
            console_irq = int(args.console_irq, 0)
        except ValueError:
            raise ConfigError("--console-irq", args.console_irq, "not a number or auto") from None
    spis = device_tree_spis(args.root) if args.root else frozenset()
    name = args.name
    if name is None:
        taken = {system.root_cell.name, *(c.name for c in cells)}
        name = next(n for n in ("cell", *(f"cell{i}" for i in range(2, 99))) if n not in taken)
    result = new_cell(
        system,
        cpus=args.cpus,
        mem_mib=args.mem,
        name=name,
        cells=cells,
        ivshmem=args.ivshmem,
        console_irq=console_irq,
        device_spis=spis,
    )
    cell = result.config
    notes = _notes_out(result.notes, ctx)
    doc: dict[str, Any] = {
        "output": args.output,
        "name": cell.name,
        "cpus": sorted(cell.cpus),
        "notes": notes,
        "config": config_document(cell),
    }
    if args.xml:
        from jailhouse.domxml import cell_to_domain  # noqa: PLC0415 - lxml loads here only

        xml = cell_to_domain(cell)
        doc["xml"] = xml
        ctx.emit(doc, xml)
    else:
        from jailhouse.config.flags import format_cpus  # noqa: PLC0415

        blob = cell.to_bytes()
        write_atomically(args.output, blob)
        ctx.emit(
            doc,
            f"wrote {args.output}: cell {cell.name!r}, CPUs {format_cpus(cell.cpus)}, "
            f"{len(cell.mem_regions)} memory regions, {len(blob)} bytes\n"
            f"check it with: jhctl config check {args.system} "
            + " ".join([*args.cells, args.output]),
        )
    failed = any(
        n.kind.value == "warning" and n.source.startswith("config check") for n in result.notes
    )
    return EXIT_FINDINGS if failed else EXIT_OK
