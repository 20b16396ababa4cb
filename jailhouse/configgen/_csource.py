"""Write a cell or system config as C source in upstream's config format (revision 14).

The source includes ``<jailhouse/types.h>`` and ``<jailhouse/cell-config.h>`` and uses the
struct, member and macro names of upstream's ``cell-config.h``, so it builds in a Jailhouse
tree's ``configs/`` like a hand-written config; ``gcc -c`` and ``objcopy -O binary`` of it
give the bytes :meth:`~jailhouse.config.model.SystemConfig.to_bytes` gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from jailhouse.config.model import (
    Arch,
    CellConfig,
    CellFlag,
    ConsoleFlag,
    ConsoleType,
    IommuType,
    MemFlag,
    PciCapFlag,
    PciType,
    SystemConfig,
    SystemFlag,
    X86Platform,
    format_cpus,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jailhouse.config.model import Console

__all__ = ["to_c_source"]

_ARCH: Final = {Arch.X86: "JAILHOUSE_X86", Arch.ARM: "JAILHOUSE_ARM", Arch.ARM64: "JAILHOUSE_ARM64"}
_PCI_TYPE: Final = {
    PciType.DEVICE: "JAILHOUSE_PCI_TYPE_DEVICE",
    PciType.BRIDGE: "JAILHOUSE_PCI_TYPE_BRIDGE",
    PciType.IVSHMEM: "JAILHOUSE_PCI_TYPE_IVSHMEM",
}
_IOMMU: Final = {
    IommuType.AMD: "JAILHOUSE_IOMMU_AMD",
    IommuType.INTEL: "JAILHOUSE_IOMMU_INTEL",
    IommuType.SMMUV3: "JAILHOUSE_IOMMU_SMMUV3",
    IommuType.PVU: "JAILHOUSE_IOMMU_PVU",
    IommuType.ARM_MMU500: "JAILHOUSE_IOMMU_ARM_MMU500",
}


def _flags(
    value: int, members: type[MemFlag | CellFlag | ConsoleFlag | SystemFlag], prefix: str
) -> str:
    names = []
    rest = int(value)
    for member in members:
        if member.name and int(member) & rest == int(member):
            names.append(prefix + member.name)
            rest &= ~int(member)
    if rest:
        names.append(f"{rest:#x}")
    return " | ".join(names) or "0"


def _con_type(kind: ConsoleType) -> str:
    if not kind.known:
        return str(int(kind))
    return "JAILHOUSE_CON_TYPE_" + ("8250" if kind == ConsoleType.UART_8250 else kind.name)


def _console(con: Console, indent: str) -> list[str]:
    i = indent + "\t"
    lines = [f"{i}.address = {con.address:#x},"]
    if con.size:
        lines.append(f"{i}.size = {con.size:#x},")
    lines.append(f"{i}.type = {_con_type(con.type)},")
    lines.append(f"{i}.flags = {_flags(con.flags, ConsoleFlag, 'JAILHOUSE_CON_')},")
    lines.extend(
        f"{i}.{name} = {getattr(con, name):#x},"
        for name in ("divider", "gate_nr", "clock_reg")
        if getattr(con, name)
    )
    return lines


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _members(cell: CellConfig) -> list[tuple[str, str, int]]:
    """Return ``(declaration type, member, count)`` of the non-empty arrays."""
    size = cell.cpu_set_size
    cpu_decl = ("__u64", "cpus", size // 8) if size % 8 == 0 else ("__u8", "cpus", size)
    arrays = [
        cpu_decl,
        ("struct jailhouse_memory", "mem_regions", len(cell.mem_regions)),
        ("struct jailhouse_cache", "cache_regions", len(cell.cache_regions)),
        ("struct jailhouse_irqchip", "irqchips", len(cell.irqchips)),
        ("struct jailhouse_pio", "pio_regions", len(cell.pio_regions)),
        ("struct jailhouse_pci_device", "pci_devices", len(cell.pci_devices)),
        ("struct jailhouse_pci_capability", "pci_caps", len(cell.pci_caps)),
        ("union jailhouse_stream_id", "stream_ids", len(cell.stream_ids)),
    ]
    return [a for a in arrays if a[2]]


_COUNTS: Final = {
    "mem_regions": "num_memory_regions",
    "cache_regions": "num_cache_regions",
    "irqchips": "num_irqchips",
    "pio_regions": "num_pio_regions",
    "pci_devices": "num_pci_devices",
    "pci_caps": "num_pci_caps",
    "stream_ids": "num_stream_ids",
}


def _cell_desc(cell: CellConfig, indent: str, *, root: bool) -> list[str]:
    i = indent + "\t"
    lines: list[str] = []
    if not root:
        lines += [
            f"{i}.signature = JAILHOUSE_CELL_DESC_SIGNATURE,",
            f"{i}.architecture = {_ARCH.get(cell.arch, str(int(cell.arch)))},",
            f"{i}.revision = JAILHOUSE_CONFIG_REVISION,",
        ]
    lines.append(f"{i}.name = {_c_string(cell.name)},")
    if cell.id:
        lines.append(f"{i}.id = {cell.id},")
    if cell.flags:
        lines.append(f"{i}.flags = {_flags(cell.flags, CellFlag, 'JAILHOUSE_CELL_')},")
    lines.append(f"{i}.cpu_set_size = sizeof(config.cpus),")
    lines += [
        f"{i}.{_COUNTS[member]} = ARRAY_SIZE(config.{member}),"
        for _, member, _ in _members(cell)
        if member != "cpus"
    ]
    if cell.vpci_irq_base:
        lines.append(f"{i}.vpci_irq_base = {cell.vpci_irq_base},")
    if cell.cpu_reset_address:
        lines.append(f"{i}.cpu_reset_address = {cell.cpu_reset_address:#x},")
    if cell.msg_reply_timeout:
        lines.append(f"{i}.msg_reply_timeout = {cell.msg_reply_timeout},")
    if cell.console.type != ConsoleType.NONE or cell.console.address:
        lines += [f"{i}.console = {{", *_console(cell.console, i), f"{i}}},"]
    return lines


def _platform(system: SystemConfig, indent: str) -> list[str]:
    i = indent + "\t"
    p = system.platform
    lines = [
        f"{i}.pci_mmconfig_base = {p.pci_mmconfig_base:#x},",
        f"{i}.pci_mmconfig_end_bus = {p.pci_mmconfig_end_bus:#x},",
    ]
    if p.pci_is_virtual:
        lines.append(f"{i}.pci_is_virtual = {p.pci_is_virtual},")
    if p.pci_domain:
        lines.append(f"{i}.pci_domain = {p.pci_domain},")
    if p.iommu_units:
        lines.append(f"{i}.iommu_units = {{")
        for unit in p.iommu_units:
            j = i + "\t\t"
            body = [
                f"{j}.type = {_IOMMU.get(unit.type, str(int(unit.type)))},",
                f"{j}.base = {unit.base:#x},",
                f"{j}.size = {unit.size:#x},",
            ]
            if unit.type == IommuType.AMD:
                body += [
                    f"{j}.amd.bdf = {unit.amd_bdf:#x},",
                    f"{j}.amd.base_cap = {unit.amd_base_cap:#x},",
                    f"{j}.amd.msi_cap = {unit.amd_msi_cap:#x},",
                    f"{j}.amd.features = {unit.amd_features:#x},",
                ]
            elif unit.type == IommuType.PVU:
                body += [
                    f"{j}.tipvu.tlb_base = {unit.tipvu_tlb_base:#x},",
                    f"{j}.tipvu.tlb_size = {unit.tipvu_tlb_size:#x},",
                ]
            lines += [f"{i}\t{{", *body, f"{i}\t}},"]
        lines.append(f"{i}}},")
    a = p.arch_info
    if isinstance(a, X86Platform):
        lines += [
            f"{i}.x86 = {{",
            f"{i}\t.pm_timer_address = {a.pm_timer_address:#x},",
            f"{i}\t.apic_mode = {int(a.apic_mode)},",
            f"{i}\t.vtd_interrupt_limit = {a.vtd_interrupt_limit},",
            f"{i}\t.tsc_khz = {a.tsc_khz},",
            f"{i}\t.apic_khz = {a.apic_khz},",
            f"{i}}},",
        ]
    else:
        lines += [
            f"{i}.arm = {{",
            f"{i}\t.maintenance_irq = {a.maintenance_irq},",
            f"{i}\t.gic_version = {a.gic_version},",
            f"{i}\t.gicd_base = {a.gicd_base:#x},",
            f"{i}\t.gicc_base = {a.gicc_base:#x},",
            f"{i}\t.gich_base = {a.gich_base:#x},",
            f"{i}\t.gicv_base = {a.gicv_base:#x},",
            f"{i}\t.gicr_base = {a.gicr_base:#x},",
            f"{i}}},",
        ]
    return lines


def _arrays(cell: CellConfig, comments: Sequence[str]) -> list[str]:
    out: list[str] = []
    size = cell.cpu_set_size
    bits = sum(1 << cpu for cpu in cell.cpus)
    if size % 8 == 0:
        words = [(bits >> (64 * n)) & (2**64 - 1) for n in range(size // 8)]
        values = ", ".join(f"{w:#x}" for w in words)
    else:
        values = ", ".join(f"{(bits >> (8 * n)) & 0xFF:#x}" for n in range(size))
    out += ["", f"\t.cpus = {{ {values} }}, /* CPUs {format_cpus(cell.cpus) or 'none'} */"]
    if cell.mem_regions:
        out += ["", "\t.mem_regions = {"]
        for n, r in enumerate(cell.mem_regions):
            note = f" /* {comments[n]} */" if n < len(comments) and comments[n] else ""
            out += [
                f"\t\t{{{note}",
                f"\t\t\t.phys_start = {r.phys_start:#x},",
                f"\t\t\t.virt_start = {r.virt_start:#x},",
                f"\t\t\t.size = {r.size:#x},",
                f"\t\t\t.flags = {_flags(r.flags, MemFlag, 'JAILHOUSE_MEM_')},",
                "\t\t},",
            ]
        out.append("\t},")
    if cell.cache_regions:
        out += ["", "\t.cache_regions = {"]
        out += [
            f"\t\t{{ .start = {c.start}, .size = {c.size}, .type = {int(c.type)}, "
            f".flags = {int(c.flags)} }},"
            for c in cell.cache_regions
        ]
        out.append("\t},")
    if cell.irqchips:
        out += ["", "\t.irqchips = {"]
        for chip in cell.irqchips:
            bitmap = ", ".join(f"{w:#x}" for w in chip.pin_bitmap)
            out += [
                "\t\t{",
                f"\t\t\t.address = {chip.address:#x},",
                f"\t\t\t.id = {chip.id:#x},",
                f"\t\t\t.pin_base = {chip.pin_base},",
                f"\t\t\t.pin_bitmap = {{ {bitmap} }},",
                "\t\t},",
            ]
        out.append("\t},")
    if cell.pio_regions:
        out += ["", "\t.pio_regions = {"]
        out += [f"\t\tPIO_RANGE({p.base:#x}, {p.length:#x})," for p in cell.pio_regions]
        out.append("\t},")
    if cell.pci_devices:
        out += ["", "\t.pci_devices = {"]
        for d in cell.pci_devices:
            masks = ", ".join(f"{m:#010x}" for m in d.bar_mask)
            body = [
                f".type = {_PCI_TYPE.get(d.type, str(int(d.type)))},",
                f".iommu = {d.iommu},",
                f".domain = {d.domain:#06x},",
                f".bdf = {d.bdf:#06x},",
                f".bar_mask = {{ {masks} }},",
                f".caps_start = {d.caps_start},",
                f".num_caps = {d.num_caps},",
                f".num_msi_vectors = {d.num_msi_vectors},",
                f".msi_64bits = {int(d.msi_64bits)},",
                f".msi_maskable = {int(d.msi_maskable)},",
                f".num_msix_vectors = {d.num_msix_vectors},",
                f".msix_region_size = {d.msix_region_size:#x},",
                f".msix_address = {d.msix_address:#x},",
                f".shmem_regions_start = {d.shmem_regions_start},",
                f".shmem_dev_id = {d.shmem_dev_id},",
                f".shmem_peers = {d.shmem_peers},",
                f".shmem_protocol = {d.shmem_protocol:#x},",
            ]
            out += [f"\t\t{{ /* {d.bdf_text} */", *(f"\t\t\t{b}" for b in body), "\t\t},"]
        out.append("\t},")
    if cell.pci_caps:
        out += ["", "\t.pci_caps = {"]
        for c in cell.pci_caps:
            cap_id = f"{c.id & 0x7FFF:#x} | JAILHOUSE_PCI_EXT_CAP" if c.extended else f"{c.id:#x}"
            flags = "JAILHOUSE_PCICAPS_WRITE" if PciCapFlag.WRITE in c.flags else str(int(c.flags))
            out.append(
                f"\t\t{{ .id = {cap_id}, .start = {c.start:#x}, .len = {c.len}, "
                f".flags = {flags} }},"
            )
        out.append("\t},")
    if cell.stream_ids:
        out += ["", "\t.stream_ids = {"]
        out += [f"\t\t{{ .id = {s:#x} }}," for s in cell.stream_ids]
        out.append("\t},")
    return out


def to_c_source(
    config: SystemConfig | CellConfig, *, comments: Sequence[str] = (), title: str = ""
) -> str:
    """Write ``config`` as C source in upstream's config format.

    Args:
        config: A system or cell config.
        comments: One comment per memory region of the (root) cell, written beside it.
        title: A line for the file's header comment (what generated it, from where).

    Returns:
        The C source; it packs to ``config.to_bytes()`` when compiled and extracted.
    """
    cell = config.root_cell if isinstance(config, SystemConfig) else config
    if cell.trailing:
        raise ValueError("a config with trailing bytes has no C form")
    head = [
        "/*",
        (
            f" * Jailhouse {'system' if isinstance(config, SystemConfig) else 'cell'} config "
            f"{cell.name!r}, config revision 14."
        ),
    ]
    if title:
        head.append(f" * {title}")
    head += [
        " */",
        "",
        "#include <jailhouse/types.h>",
        "#include <jailhouse/cell-config.h>",
        "",
        "#ifndef ARRAY_SIZE",
        "#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))",
        "#endif",
        "",
        "struct {",
    ]
    top = "header" if isinstance(config, SystemConfig) else "cell"
    kind = (
        "struct jailhouse_system"
        if isinstance(config, SystemConfig)
        else "struct jailhouse_cell_desc"
    )
    head.append(f"\t{kind} {top};")
    head += [f"\t{decl} {member}[{count}];" for decl, member, count in _members(cell)]
    head += ["} __attribute__((packed)) config = {", f"\t.{top} = {{"]
    if isinstance(config, SystemConfig):
        hv = config.hypervisor_memory
        body = [
            "\t\t.signature = JAILHOUSE_SYSTEM_SIGNATURE,",
            f"\t\t.architecture = {_ARCH.get(config.arch, str(int(config.arch)))},",
            "\t\t.revision = JAILHOUSE_CONFIG_REVISION,",
        ]
        if config.flags:
            body.append(f"\t\t.flags = {_flags(config.flags, SystemFlag, 'JAILHOUSE_SYS_')},")
        body += [
            "\t\t.hypervisor_memory = {",
            f"\t\t\t.phys_start = {hv.phys_start:#x},",
            f"\t\t\t.size = {hv.size:#x},",
            *([f"\t\t\t.virt_start = {hv.virt_start:#x},"] if hv.virt_start else []),
            *(
                [f"\t\t\t.flags = {_flags(hv.flags, MemFlag, 'JAILHOUSE_MEM_')},"]
                if hv.flags
                else []
            ),
            "\t\t},",
            "\t\t.debug_console = {",
            *_console(config.debug_console, "\t\t"),
            "\t\t},",
            "\t\t.platform_info = {",
            *_platform(config, "\t\t"),
            "\t\t},",
            "\t\t.root_cell = {",
            *_cell_desc(cell, "\t\t", root=True),
            "\t\t},",
        ]
    else:
        body = _cell_desc(cell, "\t", root=False)
    return "\n".join([*head, *body, "\t},", *_arrays(cell, comments), "};", ""])
