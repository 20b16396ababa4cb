"""Generate an x86 system config from ``/proc/iomem``, sysfs and the ACPI tables.

What is read, and what becomes of it:

- ``/proc/cmdline`` and ``/proc/iomem``: the ``memmap=SIZE$START`` area (shown as
  ``Reserved``) holds the hypervisor memory (its first :data:`HV_SIZE` bytes), then the
  inmate pool and at its end the root cell's ivshmem link; ``System RAM`` is root-cell RAM;
  firmware ranges below the top of low RAM are mapped read/write (ACPI tables read-only);
  device BARs under ``PCI Bus`` and the HPET are MMIO, without the MSI-X table pages (the
  hypervisor emulates them); the MMCONFIG, IOAPIC, local APIC and IOMMU ranges are left
  to the hypervisor.
- ``/sys/devices/system/cpu/online``: the root cell's CPUs.
- ``/sys/bus/pci/devices/*/{config,resource}``: PCI devices, BAR masks, MSI/MSI-X and
  the capability list (see :mod:`jailhouse.configgen._pci`).
- ``/sys/firmware/acpi/tables``: MCFG (MMCONFIG base, last bus), DMAR or IVRS (IOMMU units,
  which unit covers each device, the IOAPICs' source IDs), APIC (the IOAPICs), FACP (the
  PM timer port; ``/proc/ioports`` when it is missing).
- Port I/O: what upstream's root-cell template grants: PIT, keyboard controller and NMI
  status, RTC, the port-0x80 delay, VGA, and every port from 0xd00 up (PCI devices).
"""

from __future__ import annotations

import re
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
    parse_fadt_pm_timer,
    parse_ivrs,
    parse_madt,
    parse_mcfg,
)
from jailhouse.configgen._common import MIB, Generated, Note, NoteKind, RegionMap, size_text
from jailhouse.configgen._pci import read_pci_devices
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
_HYPERVISOR_OWNED: Final = re.compile(r"(?i)^(ioapic|local apic|dmar|amd_iommu|pci mmconfig)")
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


def _iommus(
    host: HostTree, notes: list[Note]
) -> tuple[list[IommuUnit], dict[int, int], dict[int, int], IommuType | None]:
    """Return the IOMMU units, the unit per device, the IOAPIC source IDs, and the vendor."""
    units: list[IommuUnit] = []
    device_unit: dict[int, int] = {}
    ioapic_source: dict[int, int] = {}
    dmar = _table(host, "DMAR")
    ivrs = _table(host, "IVRS")
    if dmar is not None:
        drhds = parse_dmar(dmar)
        # The include-all unit goes last, as the VT-d spec orders it.
        for index, unit in enumerate(sorted(drhds, key=lambda u: u.include_all)):
            units.append(IommuUnit(IommuType.INTEL, base=unit.base, size=unit.size))
            for bdf in unit.devices:
                device_unit.setdefault(unit.segment << 16 | bdf, index)
            if unit.include_all:
                device_unit.setdefault(-1, index)
            for io_id, bdf in unit.ioapics:
                ioapic_source[io_id] = index << 16 | bdf
        return units, device_unit, ioapic_source, IommuType.INTEL
    if ivrs is not None:
        for index, ivhd in enumerate(parse_ivrs(ivrs)):
            units.append(
                IommuUnit(
                    IommuType.AMD,
                    base=ivhd.base,
                    size=_AMD_IOMMU_SIZE,
                    amd_bdf=ivhd.bdf,
                    amd_base_cap=ivhd.cap_offset,
                    amd_features=ivhd.features,
                )
            )
            device_unit.setdefault(-1, index)
            for io_id, bdf in ivhd.ioapics:
                ioapic_source[io_id] = index << 16 | bdf
        return units, device_unit, ioapic_source, IommuType.AMD
    notes.append(
        Note(
            NoteKind.WARNING,
            f"{_TABLES}/DMAR, {_TABLES}/IVRS",
            "no DMAR or IVRS table: no IOMMU units, so cells are not kept from each "
            "other's memory by DMA, and IOAPIC source IDs are unknown (left 0)",
            "enable VT-d or AMD-Vi in the firmware (QEMU: -device intel-iommu) for isolation",
        )
    )
    return units, device_unit, ioapic_source, None


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


def _memory(
    iomem: tuple[IomemEntry, ...],
    reservation: tuple[int, int],
    devices: list[ProbedPci],
    *,
    ivshmem: bool,
) -> tuple[RegionMap, MemoryRegion, int, tuple[MemoryRegion, ...]]:
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
    # Firmware ranges count up to the first PCI window above 1 MiB (the 32-bit PCI hole).
    low_ram_top = min(
        (
            e.range.start
            for e in iomem
            if e.depth == 0 and e.name.startswith("PCI Bus") and e.range.start >= MIB
        ),
        default=1 << 32,
    )
    for entry in iomem:
        if entry.depth == 0 and entry.name == "System RAM":
            regions.add(entry.range.start, entry.range.end, _RWXD, "RAM", ram=True)
    for entry in iomem:
        name = entry.name.lower()
        r = entry.range
        if _HYPERVISOR_OWNED.match(entry.name):
            regions.add(r.start, r.end, MemFlag(0), entry.name, ram=False, hole=True)
            continue
        if entry.depth == 0 and name in _FIRMWARE and r.end <= low_ram_top:
            flags = MemFlag.READ if name == "acpi tables" else _RW
            regions.add(r.start, r.end, flags, entry.name, ram=False)
        elif entry.depth == 0 and name.startswith("hpet"):
            regions.add(r.start, r.end, _RW, entry.name, ram=False)
    for entry in iomem:
        if entry.depth == 1 and re.fullmatch(
            r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", entry.name
        ):
            r = entry.range
            regions.add(r.start, r.end, _RW, f"PCI BAR {entry.name}", ram=False)
    return regions, hv, link_base, link


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

    units, device_unit, ioapic_source, vendor = _iommus(host, notes)
    probed = read_pci_devices(host, device_unit)
    if not probed:
        notes.append(
            Note(
                NoteKind.WARNING,
                "/sys/bus/pci/devices",
                "no PCI device found: the root cell gets none",
                "run on the host itself (or record its sysfs) to list them",
            )
        )
    kept = []
    for index, unit in enumerate(units):
        own = next(
            (p for p in probed if unit.type is IommuType.AMD and p.device.bdf == unit.amd_bdf), None
        )
        msi = next((c.start for c in own.caps if c.id == 0x05), 0) if own else 0
        if msi:
            from dataclasses import replace  # noqa: PLC0415

            units[index] = replace(unit, amd_msi_cap=msi)
    for p in probed:
        if p.class_code >> 8 == 0x0806:  # an IOMMU's own function: the hypervisor's
            notes.append(
                Note(
                    NoteKind.NOTE,
                    f"/sys/bus/pci/devices/{p.name}",
                    "the IOMMU's own function is left to the hypervisor",
                )
            )
            continue
        kept.append(p)
    from jailhouse.configgen._pci import place_caps  # noqa: PLC0415

    pci_devices, pci_caps = place_caps(kept)
    regions, hv, link_base, link = _memory(iomem, (start, end), kept, ivshmem=ivshmem)
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
