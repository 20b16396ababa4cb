"""Generate an x86 system config from ``/proc/iomem``, sysfs and the ACPI tables.

What is read, and what becomes of it:

- ``/proc/cmdline`` and ``/proc/iomem``: the ``memmap=SIZE$START`` area (shown as
  ``Reserved``) holds the hypervisor memory (its first :data:`HV_SIZE` bytes), then the
  inmate pool and at its end the root cell's ivshmem link; the rest follows upstream's
  generator (see :func:`_memory`): System RAM, device BARs, the HPET and the ROMs are
  mapped, the MSI-X table pages, MMCONFIG, (IO)APICs and IOMMU registers are not.
- ``/sys/devices/system/cpu/online``: the root cell's CPUs.
- ``/sys/bus/pci/devices/*/{config,resource}``: PCI devices, BAR masks, MSI/MSI-X and
  the capability list (see :mod:`jailhouse.configgen._pci`).
- ``/sys/firmware/acpi/tables``: MCFG (MMCONFIG base, last bus), DMAR or IVRS (IOMMU units,
  which unit covers each device, the IOAPICs' source IDs, RMRR/IVMD memory mapped as RAM),
  APIC (the IOAPICs), FACP (the PM timer port; ``/proc/ioports`` when it is missing).
- Port I/O: what upstream's root-cell template grants: PIT, keyboard controller and NMI
  status, RTC, the port-0x80 delay, VGA, and every port from 0xd00 up (PCI devices).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import (
    ApicMode,
    Arch,
    CellConfig,
    Console,
    ConsoleType,
    IommuType,
    IommuUnit,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    SystemFlag,
    X86Platform,
    format_cpus,
    parse_cpus,
)
from jailhouse.configgen._acpi import (
    parse_dmar,
    parse_dmar_rmrr,
    parse_fadt_pm_timer,
    parse_ivrs,
    parse_ivrs_memory,
    parse_madt,
    parse_mcfg,
)
from jailhouse.configgen._common import MIB, Generated, Note, NoteKind, RegionMap, size_text
from jailhouse.configgen._pci import place_caps, read_pci_devices
from jailhouse.configgen._shared import (
    IVSHMEM_LINK_SIZE,
    cmdline_args,
    ivshmem_device,
    ivshmem_regions,
    memmap_reserved,
)
from jailhouse.errors import ConfigError
from jailhouse.hostcheck import IomemEntry, parse_iomem

if TYPE_CHECKING:
    from jailhouse.configgen._common import HostTree
    from jailhouse.configgen._pci import ProbedPci

__all__ = ["HV_SIZE", "PIO_GRANTS", "probe_x86"]

HV_SIZE: Final = 6 * MIB
"""Hypervisor memory on x86: 6 MiB, the default of upstream's config generator."""
RESERVE_DEFAULT: Final = 82 * MIB
"""What to reserve with memmap= when nothing is: hypervisor, inmates, shared memory."""
PIO_GRANTS: Final = (
    (0x40, 4, "PIT"),
    (0x60, 2, "keyboard controller, NMI status/control"),
    (0x64, 1, "keyboard controller"),
    (0x70, 2, "RTC"),
    (0x80, 1, "port-0x80 delay"),
    (0x3B0, 0x30, "VGA"),
    (0xD00, 0xF300, "PCI devices"),
)
"""The ports upstream's root-cell template grants the root cell, as ``(base, length, what)``."""
_TABLES: Final = "/sys/firmware/acpi/tables"
_RWXD: Final = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA
_RW: Final = MemFlag.READ | MemFlag.WRITE
_FIRMWARE: Final = frozenset(
    {
        "reserved",
        "acpi tables",
        "acpi non-volatile storage",
        "video rom",
        "adapter rom",
        "system rom",
    }
)
_ROMS: Final = (0xC0000, 0xE0000)
_SERIAL_PORTS: Final = (0x3F8, 0x2F8, 0x3E8, 0x2E8)
_IVSHMEM_BDF: Final = 0x0E << 3  # 00:0e.0, where upstream's QEMU configs put it
_AMD_IOMMU_SIZE: Final = 0x80000


def _table(host: HostTree, name: str) -> bytes | None:
    return host.bytes(f"{_TABLES}/{name}")


def _reservation(
    host: HostTree, iomem: tuple[IomemEntry, ...], notes: list[Note]
) -> tuple[int, int, str]:
    """Return the memmap= area ``(start, end, how)``, proposing one when there is none."""
    source, args = cmdline_args(host)
    for start, end, text in memmap_reserved(args):
        if end - start < HV_SIZE + IVSHMEM_LINK_SIZE:
            notes.append(
                Note(
                    NoteKind.WARNING,
                    source,
                    f"{text} reserves only {size_text(end - start)}; the hypervisor needs "
                    f"{size_text(HV_SIZE)} and the ivshmem link {IVSHMEM_LINK_SIZE:#x} more",
                    f"reserve at least {size_text(RESERVE_DEFAULT)} (memmap="
                    f"{size_text(RESERVE_DEFAULT)}${start:#x})",
                )
            )
            continue
        shown = [e for e in iomem if e.depth == 0 and e.range.start <= start < e.range.end]
        if shown and shown[0].name.lower() != "reserved":
            notes.append(
                Note(
                    NoteKind.WARNING,
                    "/proc/iomem",
                    f"{text} is on the command line but {start:#x} shows as {shown[0].name!r}",
                    "check that the boot loader passed the $ (escape it as \\$ in grub.cfg)",
                )
            )
        return start, end, text
    ram = [e for e in iomem if e.depth == 0 and e.name == "System RAM" and e.range.end <= 1 << 32]
    if not ram:
        raise ConfigError("/proc/iomem", None, "no System RAM below 4 GiB")
    big = max(ram, key=lambda e: e.range.size)
    end = big.range.end & ~(2 * MIB - 1)
    start = end - RESERVE_DEFAULT
    notes.append(
        Note(
            NoteKind.WARNING,
            f"{source}, /proc/iomem",
            "no reserved memory found (no memmap=SIZE$START on the kernel command line): the "
            f"config assumes {start:#x}-{end - 1:#x} is kept from Linux",
            f"add memmap={size_text(RESERVE_DEFAULT)}${start:#x} to the kernel command line "
            "(\\$ in grub.cfg) and reboot",
        )
    )
    return start, end, f"memmap={size_text(RESERVE_DEFAULT)}${start:#x} (to be added)"


@dataclass(slots=True)
class _Iommus:
    units: list[IommuUnit] = field(default_factory=list)
    vendor: IommuType | None = None
    ioapic_source: dict[int, int] = field(default_factory=dict)
    devices: dict[int, int] = field(default_factory=dict)
    bridges: list[tuple[int, int]] = field(default_factory=list)
    include_all: int | None = None
    ram: list[tuple[int, int, str]] = field(default_factory=list)


def _iommus(host: HostTree, notes: list[Note]) -> _Iommus:
    """Read DMAR (Intel) or IVRS (AMD): units, scopes, IOAPIC source IDs, reserved RAM."""
    out = _Iommus()
    dmar = _table(host, "DMAR")
    ivrs = _table(host, "IVRS")
    if dmar is not None:
        out.vendor = IommuType.INTEL
        # The include-all unit goes last, as the VT-d spec orders them.
        for index, unit in enumerate(sorted(parse_dmar(dmar), key=lambda u: u.include_all)):
            out.units.append(IommuUnit(IommuType.INTEL, base=unit.base, size=unit.size))
            for bdf in unit.devices:
                out.devices.setdefault(unit.segment << 16 | bdf, index)
            out.bridges.extend((unit.segment << 16 | bdf, index) for bdf in unit.bridges)
            if unit.include_all and out.include_all is None:
                out.include_all = index
            for io_id, bdf in unit.ioapics:
                out.ioapic_source[io_id] = index << 16 | bdf
        out.ram = [(a, b, "DMAR RMRR") for a, b in parse_dmar_rmrr(dmar)]
        return out
    if ivrs is not None:
        out.vendor = IommuType.AMD
        for index, ivhd in enumerate(parse_ivrs(ivrs)):
            # Upstream's generator: 512 KiB of registers when the IVHD reports performance
            # counters, else 16 KiB; a type 0x10 block's feature word is kept with bit 0
            # set (the value is in use), a type 0x11 block's EFR copy is not.
            counters = ivhd.features & (0xF << 13) and ivhd.features & (0x3F << 17)
            out.units.append(
                IommuUnit(
                    IommuType.AMD,
                    base=ivhd.base,
                    size=0x80000 if counters else 0x4000,
                    amd_bdf=ivhd.bdf,
                    amd_base_cap=ivhd.cap_offset,
                    amd_features=ivhd.features | 1 if ivhd.block_type == 0x10 else 0,
                )
            )
            if out.include_all is None:
                out.include_all = index
            for io_id, bdf in ivhd.ioapics:
                out.ioapic_source[io_id] = index << 16 | bdf
        out.ram = [(a, b, "IVRS IVMD") for a, b in parse_ivrs_memory(ivrs)]
        return out
    notes.append(
        Note(
            NoteKind.WARNING,
            f"{_TABLES}/DMAR, {_TABLES}/IVRS",
            "no DMAR or IVRS table: no IOMMU units, so cells are not kept from each "
            "other's memory by DMA, and IOAPIC source IDs are unknown (left 0)",
            "enable VT-d or AMD-Vi in the firmware (QEMU: -device intel-iommu) for isolation",
        )
    )
    return out


def _assign_iommus(probed: list[ProbedPci], iommus: _Iommus, notes: list[Note]) -> list[ProbedPci]:
    """Set each device's IOMMU: its own scope, a bridge's sub-hierarchy, else include-all."""
    if iommus.vendor is None:
        return probed
    by_bus: dict[tuple[int, int], int] = {}
    for key, index in iommus.bridges:
        bridge = next((p for p in probed if p.device.domain << 16 | p.device.bdf == key), None)
        if bridge is not None:
            first, last = bridge.secondary_buses
            for bus in range(first, last + 1):
                by_bus.setdefault((key >> 16, bus), index)
    out: list[ProbedPci] = []
    for p in probed:
        dev = p.device
        key = dev.domain << 16 | dev.bdf
        found: int | None = iommus.devices.get(key, by_bus.get((dev.domain, dev.bdf >> 8)))
        if found is None:
            found = iommus.include_all
        index = found if found is not None else 0
        if found is None and dev.bdf != 0:  # the root complex may stay outside (upstream)
            notes.append(
                Note(
                    NoteKind.WARNING,
                    f"{_TABLES}/DMAR",
                    f"PCI device {p.name} is in no IOMMU's scope; iommu left 0",
                    "check the firmware's DMAR table, or drop the device",
                )
            )
        out.append(replace(p, device=replace(dev, iommu=index)))
    return out


def _pm_timer(host: HostTree, notes: list[Note]) -> int:
    fadt = _table(host, "FACP")
    if fadt is not None:
        port = parse_fadt_pm_timer(fadt)
        if port:
            return port
    for line in (host.text("/proc/ioports") or "").splitlines():
        first, _, name = line.strip().partition(" : ")
        if name == "ACPI PM_TMR":
            return int(first.split("-")[0], 16)
    notes.append(
        Note(
            NoteKind.WARNING,
            f"{_TABLES}/FACP, /proc/ioports",
            "no ACPI PM timer found",
            "set platform.arch_info.pm_timer_address (the PM_TMR port, often 0x408 or 0x1808)",
        )
    )
    return 0


def _debug_console(host: HostTree, notes: list[Note]) -> Console:
    _, args = cmdline_args(host)
    index = 0
    for name, value in args:
        if name == "console" and value and value.startswith("ttyS") and value[4:5].isdigit():
            index = int(value[4:].split(",")[0])
    serial = []
    for line in (host.text("/proc/ioports") or "").splitlines():
        first, _, name = line.strip().partition(" : ")
        if name == "serial":
            serial.append(int(first.split("-")[0], 16))
    port = _SERIAL_PORTS[index] if index < len(_SERIAL_PORTS) else _SERIAL_PORTS[0]
    if serial and port not in serial:
        port = serial[0]
    if not serial:
        notes.append(
            Note(
                NoteKind.WARNING,
                "/proc/ioports",
                f"no serial port claimed; the debug console assumes the 8250 at {port:#x}",
                "check debug_console.address",
            )
        )
    return Console(address=port, type=ConsoleType.UART_8250)


def _iomem_children(iomem: tuple[IomemEntry, ...]) -> list[list[int]]:
    """Index each entry's direct children (``/proc/iomem`` nests by indentation)."""
    children: list[list[int]] = [[] for _ in iomem]
    stack: list[int] = []
    for i, entry in enumerate(iomem):
        while stack and iomem[stack[-1]].depth >= entry.depth:
            stack.pop()
        if stack:
            children[stack[-1]].append(i)
        stack.append(i)
    return children


def _memory(
    iomem: tuple[IomemEntry, ...],
    reservation: tuple[int, int],
    devices: list[ProbedPci],
    extra_ram: list[tuple[int, int, str]],
    *,
    ivshmem: bool,
) -> tuple[RegionMap, MemoryRegion, int, tuple[MemoryRegion, ...]]:
    """Lay out the root cell's memory, by upstream's rules for ``/proc/iomem``.

    Top-level System RAM is RAM (from address 0 when it starts at 0x1000: the first page is
    needed for CPU start-up); ranges whose name has ``PCI MMCONFIG`` or ``APIC`` are left
    out, and so are ``Reserved`` ones except the HPET below them (the ``dmar`` registers
    are the hypervisor's); other leaves are MMIO, except empty ``PCI Bus`` windows, the
    MSI-X table pages and the ROMs, for which one region spans 0xc0000-0xdffff.
    Beyond upstream, ``Reserved`` firmware ranges below the 32-bit PCI window (the ACPI
    tables, the BIOS area) are mapped read/write, as upstream's hand-written q35 config
    maps QEMU's ACPI tables.
    """
    regions = RegionMap()
    start, end = reservation
    hv = MemoryRegion(start, 0, HV_SIZE)
    link_base = end - IVSHMEM_LINK_SIZE if ivshmem else end
    link: tuple[MemoryRegion, ...] = ()
    regions.add(hv.phys_start, hv.phys_end, MemFlag(0), "hypervisor", ram=True, hole=True)
    if ivshmem:
        link = ivshmem_regions(link_base, 0, root=True)
        for part in link:
            regions.add(
                part.phys_start, part.phys_end, part.flags, "ivshmem link", ram=False, keep=True
            )
    regions.add(hv.phys_end, link_base, _RWXD, "RAM (inmates)", ram=True, keep=True)
    for probed in devices:
        dev = probed.device
        if dev.msix_address:
            regions.add(
                dev.msix_address,
                dev.msix_address + dev.msix_region_size,
                MemFlag(0),
                "MSI-X table",
                ram=False,
                hole=True,
            )
    top = [e for e in iomem if e.depth == 0]
    for entry in top:
        if entry.name == "System RAM":
            first = 0 if entry.start == 0x1000 else entry.start
            regions.add(first, entry.range.end, _RWXD, "RAM", ram=True)
    for a, b, what in extra_ram:
        regions.add(a, b, _RWXD, what, ram=True)
    children = _iomem_children(iomem)
    rom = False

    def walk(indexes: list[int]) -> None:
        nonlocal rom
        for i in indexes:
            entry = iomem[i]
            r = entry.range
            if entry.depth == 0 and entry.name == "System RAM":
                continue
            if "PCI MMCONFIG" in entry.name or "APIC" in entry.name:
                continue
            if entry.name.lower() == "reserved":
                for j in _descendants(children, i):
                    sub = iomem[j]
                    if "HPET" in sub.name:
                        regions.add(sub.start, sub.last + 1, _RW, sub.name, ram=False)
                continue
            if children[i]:
                walk(children[i])
                continue
            if "dmar" in entry.name or entry.name.startswith("PCI Bus"):
                continue
            if _ROMS[0] <= r.start and r.end <= _ROMS[1]:
                rom = True
                continue
            regions.add(r.start, r.end, _RW, entry.name, ram=False)

    walk([i for i, e in enumerate(iomem) if e.depth == 0])
    if rom:
        regions.add(_ROMS[0], _ROMS[1], _RW, "ROMs", ram=False)
    hole = min(
        (e.start for e in top if e.name.startswith("PCI Bus") and e.start >= MIB),
        default=1 << 32,
    )
    for entry in top:
        if entry.name.lower() in _FIRMWARE and entry.range.end <= hole:
            regions.add(entry.start, entry.last + 1, _RW, f"firmware ({entry.name})", ram=False)
    return regions, hv, link_base, link


def _descendants(children: list[list[int]], i: int) -> list[int]:
    out: list[int] = []
    todo = list(children[i])
    while todo:
        j = todo.pop()
        out.append(j)
        todo.extend(children[j])
    return out


def probe_x86(
    host: HostTree, *, name: str = "root", ivshmem: bool = True
) -> Generated[SystemConfig]:
    """Build the system config of an x86 host.

    Args:
        host: The host tree to read.
        name: The root cell's name.
        ivshmem: Give the root cell a two-peer ivshmem link (device 00:0e.0) that a new
            cell can join.

    Returns:
        The system config, its notes and a comment per root-cell memory region.

    Raises:
        ConfigError: ``/proc/iomem`` is missing, hidden (not read as root) or has no RAM.
    """
    notes: list[Note] = []
    text = host.text("/proc/iomem")
    if text is None:
        raise ConfigError("/proc/iomem", None, "missing: cannot find RAM")
    iomem = parse_iomem(text)
    if iomem and all(e.start == 0 and e.last == 0 for e in iomem):
        raise ConfigError("/proc/iomem", None, "shows no addresses to this user: run as root")
    start, end, how = _reservation(host, iomem, notes)

    iommus = _iommus(host, notes)
    units, vendor, ioapic_source = iommus.units, iommus.vendor, iommus.ioapic_source
    probed = read_pci_devices(host)
    if not probed:
        notes.append(
            Note(
                NoteKind.WARNING,
                "/sys/bus/pci/devices",
                "no PCI device found: the root cell gets none",
                "run on the host itself (or record its sysfs) to list them",
            )
        )
    own: set[int] = set()
    for index, unit in enumerate(units):
        if unit.type is not IommuType.AMD:
            continue
        function = next((p for p in probed if p.device.bdf == unit.amd_bdf), None)
        msi = next((c.start for c in function.caps if c.id == 0x05), 0) if function else 0
        units[index] = replace(unit, amd_msi_cap=msi)
        own.add(unit.amd_bdf)
        if not msi:
            notes.append(
                Note(
                    NoteKind.WARNING,
                    f"/sys/bus/pci/devices (IOMMU {unit.amd_bdf:#06x})",
                    "the AMD IOMMU's function has no MSI capability; amd_msi_cap left 0",
                    "Jailhouse needs the IOMMU's MSI: check the firmware",
                )
            )
    kept = []
    for p in _assign_iommus(probed, iommus, notes):
        if p.device.bdf in own and p.device.domain == 0:
            notes.append(
                Note(
                    NoteKind.NOTE,
                    f"/sys/bus/pci/devices/{p.name}",
                    "the IOMMU's own function is left to the hypervisor",
                )
            )
            continue
        kept.append(p)
    pci_devices, pci_caps = place_caps(kept)
    regions, hv, link_base, link = _memory(iomem, (start, end), kept, iommus.ram, ivshmem=ivshmem)
    notes.append(
        Note(
            NoteKind.NOTE,
            "/proc/iomem",
            f"hypervisor memory {hv.phys_start:#x}+{size_text(HV_SIZE)}, the inmate pool "
            f"{hv.phys_end:#x}-{link_base - 1:#x}"
            + (f" and the ivshmem link at {link_base:#x}" if ivshmem else "")
            + f" come from {how}",
        )
    )

    madt = _table(host, "APIC")
    irqchips: list[IrqChip] = []
    if madt is None:
        notes.append(
            Note(
                NoteKind.WARNING,
                f"{_TABLES}/APIC",
                "no MADT: no IOAPIC known",
                "add the IOAPIC (address 0xfec00000 on most PCs) to irqchips",
            )
        )
    else:
        ioapics, _apic_ids = parse_madt(madt)
        for io in ioapics:
            source = ioapic_source.get(io.id)
            if source is None and vendor is not None:
                notes.append(
                    Note(
                        NoteKind.WARNING,
                        f"{_TABLES}/{'DMAR' if vendor is IommuType.INTEL else 'IVRS'}",
                        f"no source ID for IOAPIC {io.id}; irqchip id left 0",
                        "set the irqchip's id to (iommu << 16) | the IOAPIC's BDF",
                    )
                )
            irqchips.append(
                IrqChip(io.address, id=source or 0, pin_base=0, pin_bitmap=(0xFFFFFF, 0, 0, 0))
            )

    mcfg = _table(host, "MCFG")
    mmconfig_base, end_bus = 0, 0
    if mcfg is None or not parse_mcfg(mcfg):
        notes.append(
            Note(
                NoteKind.WARNING,
                f"{_TABLES}/MCFG",
                "no MCFG table: the MMCONFIG base is unknown",
                "set platform.pci_mmconfig_base and pci_mmconfig_end_bus",
            )
        )
    else:
        entries = parse_mcfg(mcfg)
        mmconfig_base, end_bus = entries[0].base, entries[0].end_bus
        if len(entries) > 1:
            notes.append(
                Note(
                    NoteKind.WARNING,
                    f"{_TABLES}/MCFG",
                    f"{len(entries)} MMCONFIG windows: only segment {entries[0].segment} is used",
                    "Jailhouse supports one PCI segment on x86",
                )
            )

    online = host.text("/sys/devices/system/cpu/online")
    if online is None:
        raise ConfigError("/sys/devices/system/cpu/online", None, "missing: cannot find CPUs")
    cpus = parse_cpus(online)
    notes.append(Note(NoteKind.NOTE, "/sys/devices/system/cpu/online", f"CPUs {format_cpus(cpus)}"))

    mapped = regions.regions()
    mem_regions = tuple(r for r, _ in mapped)
    devices = pci_devices
    if ivshmem:
        starts = [i for i, r in enumerate(mem_regions) if r == link[0]]
        devices = (*pci_devices, ivshmem_device(_IVSHMEM_BDF, 0, starts[0], msix=True))
        used = {d.bdf for d in pci_devices if d.domain == 0}
        if _IVSHMEM_BDF in used:
            raise ConfigError("pci_devices", "00:0e.0", "a physical device sits at the ivshmem BDF")
    root = CellConfig(
        name=name,
        arch=Arch.X86,
        cpus=cpus,
        mem_regions=mem_regions,
        irqchips=tuple(irqchips),
        pio_regions=tuple(PioRegion(base, length) for base, length, _ in PIO_GRANTS),
        pci_devices=devices,
        pci_caps=pci_caps,
    )
    system = SystemConfig(
        arch=Arch.X86,
        flags=SystemFlag.VIRTUAL_DEBUG_CONSOLE,
        hypervisor_memory=hv,
        debug_console=_debug_console(host, notes),
        platform=PlatformInfo(
            pci_mmconfig_base=mmconfig_base,
            pci_mmconfig_end_bus=end_bus,
            iommu_units=tuple(units[:8]),
            arch_info=X86Platform(
                pm_timer_address=_pm_timer(host, notes),
                apic_mode=ApicMode.AUTO,
                vtd_interrupt_limit=256 if vendor is IommuType.INTEL else 0,
            ),
        ),
        root_cell=root,
    )
    return Generated(system, tuple(notes), tuple(c for _, c in mapped))
