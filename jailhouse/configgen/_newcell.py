"""Make a non-root cell from what a system config leaves free.

The cell is described as a small libvirt domain and placed by :mod:`jailhouse.domxml`
(CPUs of the root cell no other cell has, RAM from the inmate pool, the comm region, the
debug console, joining the root cell's ivshmem link); then the interrupt lines are added:
on ARM the ivshmem device's INTx SPI (the cell's ``vpci_irq_base`` picks a group of four
SPIs no other cell has, and no device of the device tree when one is given) and, when asked,
the console UART's SPI.  On x86 ivshmem signals by MSI-X and needs no IOAPIC pin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from xml.sax.saxutils import quoteattr

from jailhouse.config.model import Arch, IrqChip, PciType
from jailhouse.configgen._common import Generated, Note, NoteKind
from jailhouse.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from jailhouse.config.model import CellConfig, PciDevice, SystemConfig

__all__ = ["new_cell"]

MAX_SPI: Final = 1019


def _root_link(system: SystemConfig, cells: Sequence[CellConfig]) -> PciDevice | None:
    """Return the root cell's two-peer ivshmem device no defined cell has joined."""
    for dev in system.root_cell.pci_devices:
        if dev.type != PciType.IVSHMEM or dev.shmem_dev_id != 0:
            continue
        joined = any(
            d.type == PciType.IVSHMEM and d.bdf == dev.bdf and d.domain == dev.domain
            for c in cells
            for d in c.pci_devices
        )
        if not joined:
            return dev
    return None


def _gic_words(pins: Iterable[int]) -> tuple[int, int, int, int]:
    words = [0, 0, 0, 0]
    for pin in pins:
        words[(pin - 32) // 32] |= 1 << ((pin - 32) % 32)
    return words[0], words[1], words[2], words[3]


def _taken_spis(system: SystemConfig, cells: Sequence[CellConfig]) -> set[int]:
    taken: set[int] = set()
    for cell in cells:
        for chip in cell.irqchips:
            taken |= chip.pins
        if any(d.type == PciType.IVSHMEM for d in cell.pci_devices):
            taken.update(32 + cell.vpci_irq_base + i for i in range(4))
    taken.update(32 + system.root_cell.vpci_irq_base + i for i in range(4))
    return taken


def new_cell(
    system: SystemConfig,
    *,
    cpus: int,
    mem_mib: int,
    name: str = "cell",
    cells: Sequence[CellConfig] = (),
    ivshmem: bool = False,
    console_irq: int | None = None,
    device_spis: Iterable[int] = (),
) -> Generated[CellConfig]:
    """Make a cell for ``cpus`` CPUs and ``mem_mib`` MiB that fits beside ``cells``.

    Args:
        system: The system config.
        cpus: How many CPUs the cell gets (taken from the root cell).
        mem_mib: RAM in MiB, from the inmate pool.
        name: The cell's name.
        cells: The cells already defined on the system.
        ivshmem: Join the root cell's ivshmem link as its second peer.
        console_irq: On ARM, the debug UART's interrupt ID to grant (it leaves the root
            cell while the cell runs); None for a polled console.
        device_spis: Interrupt IDs devices use (from the device tree), kept clear of the
            cell's virtual PCI interrupts.

    Returns:
        The cell config and notes (including any check finding against the system).

    Raises:
        ConfigError: Too few free CPUs or memory, no free ivshmem link, or a bad argument;
            the field names the option.
    """
    from jailhouse.config.validate import Severity, check_configs  # noqa: PLC0415
    from jailhouse.domxml import domain_to_cell  # noqa: PLC0415 - lxml loads here only
    from jailhouse.errors import TranslationError  # noqa: PLC0415

    if cpus < 1:
        raise ConfigError("cpus", cpus, "a cell needs at least one CPU")
    if mem_mib < 1:
        raise ConfigError("mem", mem_mib, "a cell needs at least 1 MiB of RAM")
    arm = system.arch != Arch.X86
    link = _root_link(system, cells) if ivshmem else None
    if ivshmem and link is None:
        raise ConfigError(
            "ivshmem",
            True,  # noqa: FBT003 - the option's value
            "the root cell has no ivshmem link left to join (generate the system config "
            "with its link, or leave --ivshmem out)",
        )
    shmem = ""
    if link is not None:
        bus, slot, fn = link.bdf >> 8, link.bdf >> 3 & 0x1F, link.bdf & 7
        shmem = (
            "<shmem name='root-link'><model type='ivshmem-plain'/>"
            f"<address type='pci' domain='{link.domain:#06x}' bus='{bus:#04x}' "
            f"slot='{slot:#04x}' function='{fn:#x}'/></shmem>"
        )
    xml = (
        f"<domain type='jailhouse'><name>{_text(name)}</name>"
        f"<memory unit='MiB'>{mem_mib}</memory><vcpu>{cpus}</vcpu>"
        f"<os><type arch={quoteattr(system.arch.libvirt_name)}>hvm</type></os>"
        f"<devices><console type='pty'/>{shmem}</devices></domain>"
    )
    try:
        result = domain_to_cell(xml, system, defined=cells)
    except TranslationError as exc:
        last = exc.element.rstrip("/").rsplit("/", 1)[-1].split("[")[0]
        field = {"vcpu": "cpus", "memory": "mem", "name": "name"}.get(last, exc.element)
        value = {"cpus": cpus, "mem": mem_mib, "name": name}.get(field, exc.value)
        raise ConfigError(field, value, exc.reason) from exc
    cell = result.config
    notes = [Note(NoteKind.NOTE, "domain placement", str(n)) for n in result.notes]
    if arm:
        pins: set[int] = set()
        if any(d.type == PciType.IVSHMEM for d in cell.pci_devices):
            taken = _taken_spis(system, cells) | set(device_spis)
            base = system.root_cell.vpci_irq_base + 16
            while any(32 + base + i in taken for i in range(4)):
                base += 4
            if 32 + base + 3 > MAX_SPI:
                raise ConfigError("vpci_irq_base", base, "no free group of four SPIs")
            for dev in cell.pci_devices:
                if dev.type == PciType.IVSHMEM:
                    pins.add(32 + base + (dev.bdf >> 3 & 3))
            cell = cell.replace(vpci_irq_base=base)
            notes.append(
                Note(
                    NoteKind.NOTE,
                    "vpci_irq_base",
                    f"virtual PCI INTx on SPIs {32 + base}-{32 + base + 3} (interrupt IDs)",
                )
            )
        if console_irq is not None:
            if console_irq in _taken_spis(system, cells) - {
                p for c in (system.root_cell,) for ch in c.irqchips for p in ch.pins
            }:
                raise ConfigError("console_irq", console_irq, "another cell has this interrupt")
            pins.add(console_irq)
        if pins:
            gicd = system.platform.arch_info
            address = getattr(gicd, "gicd_base", 0)
            base_pin = 32 + (min(pins) - 32) // 128 * 128
            if max(pins) >= base_pin + 128:
                raise ConfigError("irqchips", sorted(pins), "interrupts span two GIC chips")
            cell = cell.replace(
                irqchips=(
                    IrqChip(
                        address,
                        pin_base=base_pin,
                        pin_bitmap=_gic_words(p - base_pin + 32 for p in pins),
                    ),
                )
            )
    elif console_irq is not None:
        raise ConfigError("console_irq", console_irq, "x86 cells use the console polled")
    for finding in check_configs(system, *cells, cell):
        if finding.cell not in {cell.name, None}:
            continue
        kind = NoteKind.WARNING if finding.severity is Severity.ERROR else NoteKind.NOTE
        notes.append(Note(kind, f"config check: {finding.field}", finding.reason))
    return Generated(cell, tuple(notes))


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
