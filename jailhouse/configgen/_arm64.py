"""Generate an arm64 system config from the device tree under ``ROOT/proc/device-tree``.

What is read, and what becomes of it:

- ``memory`` nodes: the RAM banks; ``/reserved-memory`` children with ``no-map``, or the
  RAM beyond ``mem=`` (``/proc/cmdline``, else ``/chosen/bootargs``): where the hypervisor
  memory (the top :data:`HV_SIZE` bytes) and the inmate pool (the rest) go.
- ``/cpus``: one root-cell CPU per ``cpu`` node, in the order Linux numbers them; the MPIDRs
  are reported in a note.
- the GIC (``arm,gic-v3`` or a GICv2 compatible): distributor, redistributor (v3) or CPU,
  hypervisor and virtual CPU interfaces (v2), the maintenance interrupt, an ITS child.
- ``/chosen/stdout-path``: the UART for the debug console (PL011 or 8250).
- PCI host bridges (``pci-host-ecam-generic``): ECAM and windows are mapped for the root
  cell; Jailhouse's virtual PCI host for ivshmem goes into a free 1 MiB of the address map
  with the next PCI domain.
- SMMUs (``arm,smmu-v3``, ``arm,mmu-500``): IOMMU units.
- every other node with ``reg``: MMIO for the root cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CellConfig,
    Console,
    ConsoleFlag,
    ConsoleType,
    IommuType,
    IommuUnit,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PciDevice,
    PlatformInfo,
    SystemConfig,
    SystemFlag,
    format_cpus,
    parse_cpus,
)
from jailhouse.configgen._common import (
    MIB,
    Generated,
    Note,
    NoteKind,
    RegionMap,
    size_text,
)
from jailhouse.configgen._devicetree import DeviceTree, DtNode
from jailhouse.configgen._shared import (
    IVSHMEM_LINK_SIZE,
    cmdline_args,
    ivshmem_device,
    ivshmem_regions,
    mem_limit,
)
from jailhouse.errors import ConfigError

if TYPE_CHECKING:
    from jailhouse.configgen._common import HostTree

__all__ = ["HV_SIZE", "probe_arm64"]

HV_SIZE: Final = 4 * MIB
"""Hypervisor memory on arm64: 4 MiB, as upstream's arm64 board configs reserve."""
POOL_DEFAULT: Final = 256 * MIB
"""RAM kept from Linux when nothing reserves any: the hypervisor and the inmate pool."""
VPCI_IRQ_BASE_DEFAULT: Final = 96
"""Upstream's arm64 sample configs put the virtual PCI INTx lines at SPI 96 (INTID 128)."""

_GICV2: Final = ("arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic", "arm,cortex-a7-gic")
_ECAM: Final = ("pci-host-ecam-generic", "pci-host-cam-generic")
_RWX: Final = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE
_MMIO: Final = MemFlag.READ | MemFlag.WRITE | MemFlag.IO
_IVSHMEM_BDF: Final = 0x00  # device 00.0 on the virtual PCI host


def _ram_banks(dt: DeviceTree) -> list[tuple[int, int, DtNode]]:
    banks = [
        (start, start + size, node)
        for node in dt.root.children()
        if node.string("device_type") == "memory" or node.name.startswith("memory@")
        for start, size in node.reg()
        if size
    ]
    return sorted(banks, key=lambda b: b[0])


def _linux_ram_end(banks: list[tuple[int, int, DtNode]], limit: int) -> int:
    """Return the first address Linux does not use when ``mem=limit`` caps its RAM size."""
    left = limit
    for start, end, _ in banks:
        if left <= end - start:
            return start + left
        left -= end - start
    return banks[-1][1]


def _reserved(dt: DeviceTree) -> list[tuple[int, int, DtNode]]:
    node = dt.node("/reserved-memory")
    if node is None:
        return []
    return [
        (start, start + size, child)
        for child in node.children()
        if child.has("no-map")
        for start, size in child.reg()
        if size
    ]


def _cpus(dt: DeviceTree, notes: list[Note]) -> list[tuple[int, DtNode]]:
    node = dt.node("/cpus")
    if node is None:
        raise ConfigError("/proc/device-tree/cpus", None, "the device tree has no /cpus node")
    cpus: list[tuple[int, DtNode]] = []
    for child in node.children():
        if child.string("device_type") != "cpu":
            continue
        words = child.cells("reg")
        mpidr = 0
        for word in words:
            mpidr = mpidr << 32 | word
        cpus.append((mpidr, child))
        method = child.string("enable-method")
        if method != "psci":
            notes.append(
                Note(
                    NoteKind.WARNING,
                    child.source,
                    f"enable-method is {method!r}, not 'psci': Jailhouse takes CPUs through PSCI",
                    "boot with firmware that provides PSCI (or check the cell's CPUs by hand)",
                )
            )
    if not cpus:
        raise ConfigError(node.source, None, "no cpu nodes under /cpus")
    # Linux numbers CPUs in device-tree order, which the exported directory does not keep;
    # firmware lists them by MPIDR.
    return sorted(cpus, key=lambda c: c[0])


def _gic(dt: DeviceTree, notes: list[Note]) -> tuple[DtNode, ArmPlatform, list[tuple[int, int]]]:
    """Find the GIC; return it, the platform fields and the ranges the hypervisor keeps."""
    for node in dt.walk():
        if node.compatible("arm,gic-v3"):
            reg = node.reg()
            if len(reg) < 2:
                raise ConfigError(node.source + "/reg", reg, "a GICv3 needs GICD and GICR")
            version, gicd, gicr = 3, reg[0], reg[1]
            platform = ArmPlatform(gic_version=3, gicd_base=gicd[0], gicr_base=gicr[0])
            kept = [(gicd[0], gicd[0] + gicd[1]), (gicr[0], gicr[0] + gicr[1])]
        elif node.compatible(*_GICV2):
            reg = node.reg()
            if len(reg) < 4:
                raise ConfigError(
                    node.source + "/reg",
                    reg,
                    "a GICv2 needs GICD, GICC, GICH and GICV (the virtualization extensions)",
                )
            version = 2
            platform = ArmPlatform(
                gic_version=2,
                gicd_base=reg[0][0],
                gicc_base=reg[1][0],
                gich_base=reg[2][0],
                gicv_base=reg[3][0],
            )
            kept = [(a, a + s) for a, s in reg[:4]]
        else:
            continue
        irqs = [i for i in node.interrupts() if 16 <= i < 32]
        if irqs:
            maintenance = irqs[0]
        else:
            maintenance = 25
            notes.append(
                Note(
                    NoteKind.WARNING,
                    node.source + "/interrupts",
                    "the GIC names no maintenance interrupt; assumed PPI 9 (interrupt 25)",
                    "check maintenance_irq against the board's manual",
                )
            )
        platform = ArmPlatform(
            maintenance_irq=maintenance,
            gic_version=version,
            gicd_base=platform.gicd_base,
            gicc_base=platform.gicc_base,
            gich_base=platform.gich_base,
            gicv_base=platform.gicv_base,
            gicr_base=platform.gicr_base,
        )
        return node, platform, kept
    raise ConfigError(
        "/proc/device-tree", None, "no GIC (arm,gic-v3 or a GICv2 compatible) in the device tree"
    )


def _console(dt: DeviceTree, notes: list[Note]) -> tuple[Console, DtNode | None]:
    chosen = dt.node("/chosen")
    node: DtNode | None = None
    if chosen is not None:
        spec = chosen.string("stdout-path") or chosen.string("linux,stdout-path")
        if spec:
            node = dt.resolve(spec)
    if node is None:
        node = next(
            (n for n in dt.walk() if n.compatible("arm,pl011", "ns16550a", "snps,dw-apb-uart")),
            None,
        )
        if node is not None:
            notes.append(
                Note(
                    NoteKind.NOTE,
                    "/proc/device-tree/chosen",
                    f"no stdout-path: the debug console is the first UART, {node.name}",
                )
            )
    if node is None or not node.reg():
        notes.append(
            Note(
                NoteKind.WARNING,
                "/proc/device-tree/chosen/stdout-path",
                "no UART found for the debug console",
                "set debug_console (address, type PL011 or 8250) by hand",
            )
        )
        return Console(), None
    address, _size = node.reg()[0]
    if node.compatible("arm,pl011"):
        kind, flags = ConsoleType.PL011, ConsoleFlag.ACCESS_MMIO | ConsoleFlag.REGDIST_4
    elif node.compatible("ns16550a", "ns16550", "snps,dw-apb-uart"):
        shift = node.cells("reg-shift")
        kind = ConsoleType.UART_8250
        flags = ConsoleFlag.ACCESS_MMIO | (
            ConsoleFlag.REGDIST_4 if shift and shift[0] == 2 else ConsoleFlag(0)
        )
    elif node.compatible("xlnx,xuartps", "cdns,uart-r1p12"):
        kind, flags = ConsoleType.XUARTPS, ConsoleFlag.ACCESS_MMIO | ConsoleFlag.REGDIST_4
    else:
        notes.append(
            Note(
                NoteKind.WARNING,
                node.source + "/compatible",
                f"UART {node.strings('compatible')} is of no type Jailhouse drives",
                "set debug_console.type by hand",
            )
        )
        return Console(), node
    return Console(address=address, size=0x1000, type=kind, flags=flags), node


def _interrupt_map_spis(node: DtNode, gic_address_cells: int) -> list[int]:
    """Return the SPIs a PCI host's ``interrupt-map`` routes INTx to."""
    words = node.cells("interrupt-map")
    width = 3 + 1 + 1 + gic_address_cells + 3
    return [
        words[i + 5 + gic_address_cells + 1] + 32
        for i in range(0, len(words) - width + 1, width)
        if words[i + 5 + gic_address_cells] == 0
    ]


def _free_window(used: list[tuple[int, int]], size: int, below: int) -> int | None:
    """Return the lowest ``size``-aligned start of ``size`` bytes clear of ``used``."""
    start = size
    for a, b in sorted(used):
        if start + size <= a:
            break
        if b > start:
            start = (b + size - 1) // size * size
    return start if start + size <= below else None


def probe_arm64(
    host: HostTree, *, name: str = "root", ivshmem: bool = True
) -> Generated[SystemConfig]:
    """Build the system config of an arm64 host from its device tree.

    Args:
        host: The host tree to read.
        name: The root cell's name.
        ivshmem: Give the root cell a two-peer ivshmem link (device 00.0 of the virtual
            PCI host) that a new cell can join.

    Returns:
        The system config, its notes and a comment per root-cell memory region.

    Raises:
        ConfigError: The tree has no device tree, RAM, CPUs or GIC.
    """
    notes: list[Note] = []
    dt = DeviceTree(host)
    if not dt.exists():
        raise ConfigError(dt.base, None, "no device tree here (is this an arm64 host?)")
    banks = _ram_banks(dt)
    if not banks:
        raise ConfigError(dt.base, None, "no memory node with a reg property")
    chosen = dt.node("/chosen")
    bootargs = chosen.string("bootargs") if chosen is not None else None
    cmd_source, args = cmdline_args(host, bootargs)
    total = sum(end - start for start, end, _ in banks)

    # -- hypervisor memory and inmate pool -------------------------------------------------
    reserved = [r for r in _reserved(dt) if r[1] - r[0] >= HV_SIZE + IVSHMEM_LINK_SIZE]
    limit = mem_limit(args)
    if reserved:
        start, end, node = max(reserved, key=lambda r: r[1] - r[0])
        pool_start, top = start, end
        how = f"the no-map reserved-memory node {node.name}"
        source = node.source
    elif limit is not None and _linux_ram_end(banks, limit[0]) < banks[-1][1]:
        pool_start, top = _linux_ram_end(banks, limit[0]), banks[-1][1]
        how = f"the RAM beyond {limit[1]}"
        source = cmd_source
    else:
        keep = min(POOL_DEFAULT, total // 4)
        pool_start, top = banks[-1][1] - keep, banks[-1][1]
        how = "the top of RAM, which nothing reserves yet"
        source = "/proc/device-tree/reserved-memory"
        notes.append(
            Note(
                NoteKind.WARNING,
                source,
                f"no reserved memory found (no no-map /reserved-memory node, no mem= on "
                f"{cmd_source}): the config assumes Linux keeps off {pool_start:#x}-{top - 1:#x}",
                f"boot with mem={size_text(total - keep)} (or add a no-map reserved-memory "
                f"node for {pool_start:#x}+{keep:#x})",
            )
        )
    hv = MemoryRegion(top - HV_SIZE, 0, HV_SIZE)
    link_base = hv.phys_start - IVSHMEM_LINK_SIZE if ivshmem else hv.phys_start
    notes.append(
        Note(
            NoteKind.NOTE,
            source,
            f"hypervisor memory {hv.phys_start:#x}+{size_text(HV_SIZE)} and the inmate pool "
            f"{pool_start:#x}-{link_base - 1:#x} come from {how}",
        )
    )

    cpus = _cpus(dt, notes)
    notes.append(
        Note(
            NoteKind.NOTE,
            "/proc/device-tree/cpus",
            "CPUs by Linux number: "
            + ", ".join(f"{i}=MPIDR {mpidr:#x}" for i, (mpidr, _) in enumerate(cpus)),
        )
    )
    online = host.text("/sys/devices/system/cpu/online")
    cpu_set = frozenset(range(len(cpus)))
    if online is not None:
        seen = parse_cpus(online)
        if seen != cpu_set:
            notes.append(
                Note(
                    NoteKind.WARNING,
                    "/sys/devices/system/cpu/online",
                    f"online CPUs {format_cpus(seen)} differ from the device tree's "
                    f"{format_cpus(cpu_set)}; the root cell takes the online ones",
                    "bring every CPU online before enabling, or fix the root cell's CPUs",
                )
            )
            cpu_set = seen

    gic_node, platform, gic_kept = _gic(dt, notes)
    console, uart = _console(dt, notes)

    # -- memory map --------------------------------------------------------------------
    regions = RegionMap()
    link_regions: tuple[MemoryRegion, ...] = ()
    if ivshmem:
        link_regions = ivshmem_regions(link_base, 0, root=True)
        for r in link_regions:
            regions.add(r.phys_start, r.phys_end, r.flags, "ivshmem link", ram=False, keep=True)
    regions.add(hv.phys_start, hv.phys_end, MemFlag(0), "hypervisor", ram=True, hole=True)
    regions.add(pool_start, link_base, _RWX, "RAM (inmates)", ram=True, keep=True)
    for start, end, node in banks:
        regions.add(start, end, _RWX, f"RAM ({node.name})", ram=True)

    used: list[tuple[int, int]] = [(s, e) for s, e, _ in banks]
    used += gic_kept
    ecams: list[tuple[int, int, int]] = []
    iommus: list[IommuUnit] = []
    spis: set[int] = set()
    gic_cells = gic_node.address_cells()
    domains: list[int] = []
    skip = {"/cpus", "/reserved-memory", gic_node.path}
    for node in dt.walk():
        if any(node.path == s or node.path.startswith(s + "/") for s in skip):
            continue
        spis.update(i for i in node.interrupts() if i >= 32)
        if node.string("device_type") == "memory" or node.path == "/":
            continue
        if node.compatible(*_ECAM):
            ecam = node.reg()[0]
            bus = node.cells("bus-range") or (0, 255)
            dom = node.cells("linux,pci-domain")
            domains.append(dom[0] if dom else len(domains))
            ecams.append((ecam[0], ecam[1], bus[1]))
            regions.add(ecam[0], ecam[0] + ecam[1], _MMIO, f"PCI ECAM ({node.name})", ram=False)
            used.append((ecam[0], ecam[0] + ecam[1]))
            words = node.cells("ranges")
            pa = node.parent.address_cells() if node.parent is not None else 2
            step = 3 + pa + 2
            for i in range(0, len(words) - step + 1, step):
                space = words[i] >> 24 & 3
                cpu = 0
                for w in words[i + 3 : i + 3 + pa]:
                    cpu = cpu << 32 | w
                size = words[i + 3 + pa] << 32 | words[i + 4 + pa]
                label = {1: "I/O", 2: "MMIO", 3: "MMIO 64-bit"}.get(space, "window")
                regions.add(cpu, cpu + size, _MMIO, f"PCI {label} ({node.name})", ram=False)
                used.append((cpu, cpu + size))
            spis.update(_interrupt_map_spis(node, gic_cells))
            continue
        reg = node.reg()
        if node.compatible("arm,smmu-v3", "arm,mmu-500", "arm,smmu-v2"):
            kind = IommuType.SMMUV3 if node.compatible("arm,smmu-v3") else IommuType.ARM_MMU500
            iommus.extend(IommuUnit(kind, base=a, size=s) for a, s in reg[:1])
            used += [(a, a + s) for a, s in reg]
            notes.append(
                Note(
                    NoteKind.WARNING,
                    node.source,
                    f"{kind.name} at {reg[0][0]:#x}: the hypervisor takes it over; the "
                    "devices' stream IDs are not collected",
                    "add the stream IDs of each cell's devices (stream_ids) by hand",
                )
            )
            continue
        for a, s in reg:
            if s:
                regions.add(a, a + s, _MMIO, node.name, ram=False)
                used.append((a, a + s))
    its = [n for n in gic_node.children() if n.compatible("arm,gic-v3-its")]
    for node in its:
        for a, s in node.reg():
            regions.add(a, a + s, _MMIO, node.name, ram=False)
            used.append((a, a + s))
        notes.append(
            Note(
                NoteKind.NOTE,
                node.source,
                "GICv3 ITS mapped for the root cell as MMIO; non-root cells get no MSIs through it",
            )
        )

    # -- virtual PCI host for ivshmem ------------------------------------------------------
    vdomain = max(domains) + 1 if domains else 0
    vpci_base = _free_window(used, MIB, banks[0][0])
    if vpci_base is None:
        vpci_base = 0
        notes.append(
            Note(
                NoteKind.WARNING,
                "/proc/device-tree",
                "no free 1 MiB below RAM for Jailhouse's virtual PCI host",
                "set platform.pci_mmconfig_base to a free, 1 MiB aligned MMIO address",
            )
        )
    else:
        notes.append(
            Note(
                NoteKind.NOTE,
                "/proc/device-tree",
                f"virtual PCI host (ivshmem) at {vpci_base:#x}, PCI domain {vdomain}: the "
                "first free 1 MiB of the address map",
            )
        )
    vpci_irq_base = VPCI_IRQ_BASE_DEFAULT
    while any(32 + vpci_irq_base + i in spis for i in range(4)):
        vpci_irq_base += 4
    top_irq = max([*spis, 32 + vpci_irq_base + 3])
    chips = tuple(
        IrqChip(platform.gicd_base, pin_base=32 + 128 * i, pin_bitmap=(0xFFFFFFFF,) * 4)
        for i in range((top_irq - 32) // 128 + 1)
    )
    if len(ecams) > 1:
        notes.append(
            Note(
                NoteKind.NOTE,
                "/proc/device-tree",
                f"{len(ecams)} PCI host bridges: all are mapped for the root cell",
            )
        )
    mapped = regions.regions()
    mem_regions = tuple(r for r, _ in mapped)
    devices: tuple[PciDevice, ...] = ()
    if ivshmem:
        start = mem_regions.index(link_regions[0])
        devices = (ivshmem_device(_IVSHMEM_BDF, vdomain, start, msix=False),)
    root = CellConfig(
        name=name,
        arch=Arch.ARM64,
        cpus=cpu_set,
        mem_regions=mem_regions,
        irqchips=chips,
        pci_devices=devices,
        vpci_irq_base=vpci_irq_base,
    )
    if (
        uart is not None
        and console.type != ConsoleType.NONE
        and not regions.covered(console.address, console.address + console.size)
    ):
        notes.append(Note(NoteKind.WARNING, uart.source, "the UART is not mapped"))
    system = SystemConfig(
        arch=Arch.ARM64,
        flags=SystemFlag.VIRTUAL_DEBUG_CONSOLE,
        hypervisor_memory=hv,
        debug_console=console,
        platform=PlatformInfo(
            pci_mmconfig_base=vpci_base,
            pci_mmconfig_end_bus=0,
            pci_is_virtual=1,
            pci_domain=vdomain,
            iommu_units=tuple(iommus[:8]),
            arch_info=platform,
        ),
        root_cell=root,
    )
    return Generated(system, tuple(notes), tuple(c for _, c in mapped))
