"""Device trees for Linux in an arm64 or arm cell, generated from the cell and system configs.

Upstream Jailhouse ships a hand-written ``.dts`` per board and cell; here the tree is
derived from what the configs already say:

- ``/memory@...``: one node per RAM region of the cell (readable and writable, not IO,
  not the comm region, not ivshmem shared memory, not ROOTSHARED), at its guest address;
- ``/cpus``: one ``cpu`` node per cell CPU with ``enable-method = "psci"``, and ``/psci``
  with ``method = "smc"`` (the hypervisor traps PSCI calls made by SMC);
- the GIC of the system's platform info (GICv2: distributor and CPU interface, GICv3:
  distributor and the redistributors of every CPU, as the hypervisor exposes them all),
  the architected ``/timer`` on PPIs 13, 14, 11 and 10, and ``interrupt-parent``;
- the cell's console UART (PL011 or 8250) with a fixed clock, the ``serial0`` alias and
  ``stdout-path``;
- a ``pci-host-ecam-generic`` host bridge over the system's virtual ECAM window when the
  cell has ivshmem devices, their INTx pins mapped to SPI ``vpci_irq_base + pin - 1``;
- ``/chosen`` with ``bootargs`` and ``linux,initrd-start``/``-end``.

What the configs do not decide is left out, and :attr:`GeneratedDeviceTree.notes` says
what and why: the CPUs' MPIDRs (the configs hold CPU indices; pass ``mpidrs=`` when the
board's differ), the UART's interrupt and clock, a console type with no binding here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from jailhouse.config.flags import Arch, CellFlag, ConsoleFlag, ConsoleType, MemFlag, PciType
from jailhouse.config.model import ArmPlatform
from jailhouse.errors import BootError
from jailhouse.linux.fdt import DeviceTree, Node

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jailhouse.config.model import CellConfig, SystemConfig

__all__ = [
    "DeviceTreeNote",
    "GeneratedDeviceTree",
    "build_device_tree",
    "generate_device_tree",
]

DEFAULT_UART_CLOCK: Final = 24_000_000
"""UART input clock assumed when none is given (QEMU's ``virt`` PL011 clock)."""

_GIC_SPI: Final = 0
_GIC_PPI: Final = 1
_IRQ_EDGE_RISING: Final = 1
_IRQ_LEVEL_HIGH: Final = 4
_TIMER_PPIS: Final = (13, 14, 11, 10)  # secure, non-secure physical, virtual, hypervisor
_GICD_V2_SIZE: Final = 0x1000
_GICC_V2_SIZE: Final = 0x2000  # the hypervisor maps GICV over the whole 8 KiB GICC
_GICD_V3_SIZE: Final = 0x10000
_GICR_V3_STRIDE: Final = 0x20000  # RD_base + SGI_base frames per CPU (GICv3 without vLPIs)
_ECAM_BUS_SIZE: Final = 1 << 20
_PCI_MEM32: Final = 0x02000000  # phys.hi of a 32-bit non-prefetchable memory range
_PCI_WINDOW_MIN: Final = 0x10000
_FOUR_GIB: Final = 1 << 32
_MPIDR_AFF_ARM64: Final = 0xFF00FFFFFF
_MPIDR_AFF_ARM: Final = 0xFFFFFF
_UART_SIZE: Final = 0x1000


@dataclass(frozen=True, slots=True)
class DeviceTreeNote:
    """Something the generated tree leaves out or assumes, and why.

    Attributes:
        node: The node concerned (``/serial@9000000``, ``/cpus``).
        reason: What was left out or assumed, and what would decide it.
    """

    node: str
    reason: str

    def __str__(self) -> str:
        """Render as ``/cpus: ...``."""
        return f"{self.node}: {self.reason}"


@dataclass(frozen=True, slots=True)
class GeneratedDeviceTree:
    """A generated device tree blob and the notes on what it leaves out or assumes.

    Attributes:
        blob: The flattened device tree (version 17).
        notes: One note per node left out or value assumed, in tree order.
    """

    blob: bytes
    notes: tuple[DeviceTreeNote, ...] = ()

    def __str__(self) -> str:
        """Summarise as ``device tree, 1234 bytes, 2 notes``, one note per further line."""
        lines = [f"device tree, {len(self.blob)} bytes, {len(self.notes)} notes"]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def build_device_tree(
    system: SystemConfig | None,
    cell: CellConfig,
    *,
    bootargs: str | None = None,
    initrd: tuple[int, int] | None = None,
    mpidrs: Mapping[int, int] | None = None,
    console_interrupt: int | None = None,
    uart_clock: int | None = None,
) -> bytes:
    """Return the device tree blob for Linux in ``cell``; see :func:`generate_device_tree`.

    Raises:
        BootError: As :func:`generate_device_tree`.
    """
    return generate_device_tree(
        system,
        cell,
        bootargs=bootargs,
        initrd=initrd,
        mpidrs=mpidrs,
        console_interrupt=console_interrupt,
        uart_clock=uart_clock,
    ).blob


def generate_device_tree(
    system: SystemConfig | None,
    cell: CellConfig,
    *,
    bootargs: str | None = None,
    initrd: tuple[int, int] | None = None,
    mpidrs: Mapping[int, int] | None = None,
    console_interrupt: int | None = None,
    uart_clock: int | None = None,
) -> GeneratedDeviceTree:
    """Generate the device tree for Linux in an arm64 or arm cell.

    Args:
        system: The system config the cell runs on; without it the GIC, timer and PCI
            host bridge are left out (noted).
        cell: The cell config.
        bootargs: The kernel command line for ``/chosen``.
        initrd: ``(start, end)`` guest addresses of the initrd, end exclusive.
        mpidrs: MPIDR of each cell CPU, by CPU index; without it each ``cpu`` node's
            ``reg`` is the CPU index (noted), which is right on QEMU's ``virt`` board.
        console_interrupt: GIC interrupt ID (32 and up) of the console UART; without it
            the one SPI the cell's irqchip grants besides the ivshmem lines is taken
            (noted), or the UART gets no interrupt (noted).
        uart_clock: Input clock of the console UART in Hz; without it
            :data:`DEFAULT_UART_CLOCK` (noted).

    Returns:
        The blob and the notes.

    Raises:
        BootError: The cell is not an arm64 or arm cell or has no RAM, the system config
            is of another architecture, ``mpidrs`` misses a cell CPU, the console
            interrupt is not the cell's, or the initrd is not inside the cell's RAM.
    """
    return _Builder(system, cell, mpidrs, console_interrupt, uart_clock).build(bootargs, initrd)


def _unit(address: int) -> str:
    return f"{address:x}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "cell"


class _Builder:
    """Builds one tree; keeps the notes and the phandles while it does."""

    def __init__(
        self,
        system: SystemConfig | None,
        cell: CellConfig,
        mpidrs: Mapping[int, int] | None,
        console_interrupt: int | None,
        uart_clock: int | None,
    ) -> None:
        if cell.arch not in (Arch.ARM64, Arch.ARM):
            raise BootError(
                "cell.arch", cell.arch.name, "device trees are generated for arm64 and arm cells"
            )
        if system is not None and system.arch != cell.arch:
            raise BootError(
                "system.arch",
                system.arch.name,
                f"the system config is not for the cell's architecture {cell.arch.name}",
            )
        if uart_clock is not None and not 0 < uart_clock < 1 << 32:
            raise BootError("uart_clock", uart_clock, "not a clock rate in Hz that fits 32 bits")
        self.system = system
        self.cell = cell
        self.mpidrs = mpidrs
        self.console_interrupt = console_interrupt
        self.uart_clock_given = uart_clock is not None
        self.uart_clock = DEFAULT_UART_CLOCK if uart_clock is None else uart_clock
        self.aarch32 = cell.arch == Arch.ARM or CellFlag.AARCH32 in cell.flags
        self.tree = DeviceTree()
        self.root = self.tree.root
        self.notes: list[DeviceTreeNote] = []
        self.gic: Node | None = None
        self.gic_version = 0
        self.ram: list[tuple[int, int]] = []
        self.ivshmem = [d for d in cell.pci_devices if d.type == PciType.IVSHMEM]
        self.arm = (
            system.platform.arch_info
            if system is not None and isinstance(system.platform.arch_info, ArmPlatform)
            else None
        )

    def note(self, node: str, reason: str) -> None:
        self.notes.append(DeviceTreeNote(node, reason))

    def build(self, bootargs: str | None, initrd: tuple[int, int] | None) -> GeneratedDeviceTree:
        root = self.root
        root.set_u32("#address-cells", 2)
        root.set_u32("#size-cells", 2)
        root.set_string("model", f"Jailhouse cell {self.cell.name}")
        root.set_strings("compatible", f"jailhouse,cell-{_slug(self.cell.name)}")
        root.add_child("hypervisor").set_string("compatible", "jailhouse,cell")
        self.add_memory()
        self.add_cpus()
        self.add_gic()
        self.add_timer()
        serial = self.add_console()
        self.add_pci()
        chosen = root.add_child("chosen")
        if serial is not None:
            root.add_child("aliases").set_string("serial0", serial)
            chosen.set_string("stdout-path", "serial0")
        if bootargs is not None:
            chosen.set_string("bootargs", bootargs)
        if initrd is not None:
            self.add_initrd(chosen, initrd)
        return GeneratedDeviceTree(self.tree.to_bytes(), tuple(self.notes))

    # -- memory ------------------------------------------------------------------------------

    def add_memory(self) -> None:
        shared: dict[int, str] = {}
        for device in self.ivshmem:
            count = 2 + device.shmem_peers  # state table, R/W section, one output per peer
            for index in range(device.shmem_regions_start, device.shmem_regions_start + count):
                shared[index] = device.bdf_text
        rw = MemFlag.READ | MemFlag.WRITE
        for index, region in enumerate(self.cell.mem_regions):
            flags = region.flags
            if flags & (MemFlag.IO | MemFlag.COMM_REGION) or not region.size:
                continue
            where = f"/memory@{_unit(region.virt_start)}"
            if index in shared:
                continue  # ivshmem shared memory: the device's driver maps it
            if flags & rw != rw:
                self.note(where, f"mem_regions[{index}] is not read-write RAM; left out")
                continue
            if MemFlag.ROOTSHARED in flags:
                self.note(
                    where,
                    f"mem_regions[{index}] is ROOTSHARED (shared with the root "
                    "cell), not RAM of the cell; left out",
                )
                continue
            self.ram.append((region.virt_start, region.size))
        if not self.ram:
            raise BootError(
                "cell.mem_regions",
                len(self.cell.mem_regions),
                "the cell has no RAM region (read-write, not IO, comm region or shared) for Linux",
            )
        for start, size in sorted(self.ram):
            node = self.root.add_child(f"memory@{_unit(start)}")
            node.set_string("device_type", "memory")
            node.set_cells("reg", (start, 2), (size, 2))

    # -- CPUs and PSCI -----------------------------------------------------------------------

    def add_cpus(self) -> None:
        cpus = self.root.add_child("cpus")
        cells = 1 if self.aarch32 else 2
        cpus.set_u32("#address-cells", cells)
        cpus.set_u32("#size-cells", 0)
        mask = _MPIDR_AFF_ARM if self.aarch32 else _MPIDR_AFF_ARM64
        if self.mpidrs is None:
            self.note(
                "/cpus",
                "cpu reg values are the cell's CPU indices: the configs hold no MPIDRs; pass "
                "mpidrs= when the board's differ (the root's /proc/device-tree/cpus/*/reg)",
            )
        for cpu in sorted(self.cell.cpus):
            if self.mpidrs is None:
                reg = cpu
            elif cpu not in self.mpidrs:
                raise BootError("mpidrs", sorted(self.mpidrs), f"has no MPIDR for cell CPU {cpu}")
            else:
                reg = self.mpidrs[cpu] & mask
            node = cpus.add_child(f"cpu@{_unit(reg)}")
            node.set_string("device_type", "cpu")
            if not self.aarch32:
                node.set_string("compatible", "arm,armv8")
            node.set_cells("reg", (reg, cells))
            node.set_string("enable-method", "psci")
        psci = self.root.add_child("psci")
        psci.set_string("compatible", "arm,psci-0.2")
        psci.set_string("method", "smc")

    # -- interrupt controller and timer ------------------------------------------------------

    def add_gic(self) -> None:
        arm = self.arm
        if arm is None:
            self.note(
                "/interrupt-controller",
                "no system config with ARM platform info: the "
                "GIC, timer and PCI host bridge are left out",
            )
            return
        gicd = arm.gicd_base or next(
            (chip.address for chip in self.cell.irqchips if chip.address), 0
        )
        if arm.gic_version not in (2, 3) or not gicd:
            self.note(
                "/interrupt-controller",
                f"platform gic_version {arm.gic_version} with distributor {gicd:#x} is not a "
                "GICv2 or GICv3 this builder describes; GIC and timer left out",
            )
            return
        gic = self.root.add_child(f"interrupt-controller@{_unit(gicd)}")
        gic.set_u32("#interrupt-cells", 3)
        gic.set_u32("#address-cells", 0)
        gic.set_empty("interrupt-controller")
        if arm.gic_version == 2:
            gic.set_string("compatible", "arm,gic-400")
            gic.set_cells(
                "reg",
                (gicd, 2),
                (_GICD_V2_SIZE, 2),
                (arm.gicc_base, 2),
                (_GICC_V2_SIZE, 2),
            )
        else:
            assert self.system is not None  # noqa: S101 - arm comes from the system
            last_cpu = max(self.system.root_cell.cpus, default=max(self.cell.cpus, default=0))
            gic.set_string("compatible", "arm,gic-v3")
            gic.set_cells(
                "reg",
                (gicd, 2),
                (_GICD_V3_SIZE, 2),
                (arm.gicr_base, 2),
                ((last_cpu + 1) * _GICR_V3_STRIDE, 2),
            )
        self.gic = gic
        self.gic_version = arm.gic_version
        self.root.set_u32("interrupt-parent", self.tree.phandle(gic))

    def add_timer(self) -> None:
        if self.gic is None:
            return
        flags = _IRQ_LEVEL_HIGH
        if self.gic_version == 2:  # GICv2 PPIs name their target CPUs in bits 8-15
            flags |= ((1 << min(len(self.cell.cpus), 8)) - 1) << 8
        timer = self.root.add_child("timer")
        timer.set_string("compatible", "arm,armv7-timer" if self.aarch32 else "arm,armv8-timer")
        timer.set_u32("interrupts", *(v for ppi in _TIMER_PPIS for v in (_GIC_PPI, ppi, flags)))

    # -- console -----------------------------------------------------------------------------

    def add_console(self) -> str | None:
        console = self.cell.console
        if console.type == ConsoleType.NONE:
            self.note("/serial", "the cell config names no console; no UART node")
            return None
        path = f"/serial@{_unit(console.address)}"
        if console.type not in (ConsoleType.PL011, ConsoleType.UART_8250):
            self.note(
                path,
                f"console type {console.type.name} has no binding here (PL011 and "
                "8250 have); no UART node",
            )
            return None
        if ConsoleFlag.ACCESS_MMIO not in console.flags:
            self.note(path, "the console is port I/O, which arm has not; no UART node")
            return None
        size = console.size or _UART_SIZE
        mapped = any(
            MemFlag.IO in r.flags
            and r.virt_start <= console.address
            and console.address + size <= r.virt_end
            for r in self.cell.mem_regions
        )
        if not mapped:
            self.note(
                path,
                f"the console at {console.address:#x}+{size:#x} is not an IO region "
                "of the cell; no UART node",
            )
            return None
        clock = self.root.add_child("uart-clock")
        clock.set_string("compatible", "fixed-clock")
        clock.set_u32("#clock-cells", 0)
        clock.set_u32("clock-frequency", self.uart_clock)
        if not self.uart_clock_given:
            self.note(
                "/uart-clock",
                f"UART clock assumed {DEFAULT_UART_CLOCK} Hz; pass uart_clock= with the board's",
            )
        uart = self.root.add_child(path[1:])
        reg_shift = ConsoleFlag.REGDIST_4 in console.flags
        if console.type == ConsoleType.PL011:
            uart.set_strings("compatible", "arm,pl011", "arm,primecell")
        else:
            uart.set_string("compatible", "ns16550a")
        uart.set_cells("reg", (console.address, 2), (size, 2))
        irq = self.uart_interrupt(path)
        if irq is not None and self.gic is not None:
            uart.set_u32("interrupts", _GIC_SPI, irq - 32, _IRQ_LEVEL_HIGH)
        phandle = self.tree.phandle(clock)
        if console.type == ConsoleType.PL011:
            uart.set_u32("clocks", phandle, phandle)
            uart.set_strings("clock-names", "uartclk", "apb_pclk")
        else:
            uart.set_u32("clock-frequency", self.uart_clock)
            if reg_shift:
                uart.set_u32("reg-shift", 2)
                uart.set_u32("reg-io-width", 4)
        return path

    def granted_spis(self) -> set[int]:
        return {pin for chip in self.cell.irqchips for pin in chip.pins if pin >= 32}

    def intx_ids(self) -> list[int]:
        """GIC interrupt IDs of the ivshmem devices' INTx lines, by device."""
        return [32 + self.cell.vpci_irq_base + (d.bdf >> 3 & 3) for d in self.ivshmem]

    def uart_interrupt(self, path: str) -> int | None:
        granted = self.granted_spis()
        irq = self.console_interrupt
        if irq is not None:
            if irq not in granted:
                raise BootError(
                    "console_interrupt",
                    irq,
                    "not an SPI (32 and up) that the cell's irqchips grant",
                )
            return irq
        candidates = sorted(granted - set(self.intx_ids()))
        if len(candidates) == 1:
            self.note(
                path,
                f"interrupt {candidates[0]} assumed: the only SPI the cell's "
                "irqchips grant besides ivshmem; pass console_interrupt= otherwise",
            )
            return candidates[0]
        self.note(
            path,
            f"the UART's interrupt is unknown ({len(candidates)} candidate SPIs); "
            "no interrupts property, so Linux polls it; pass console_interrupt=",
        )
        return None

    # -- ivshmem PCI host bridge -------------------------------------------------------------

    def add_pci(self) -> None:
        if not self.ivshmem:
            return
        system = self.system
        if system is None or self.gic is None:
            self.note("/pci", "no system config or GIC: the ivshmem host bridge is left out")
            return
        platform = system.platform
        base = platform.pci_mmconfig_base
        if not base:
            self.note(
                "/pci", "the system config has no pci_mmconfig_base; ivshmem devices are left out"
            )
            return
        ecam_size = (platform.pci_mmconfig_end_bus + 1) * _ECAM_BUS_SIZE
        window = self.pci_window(base + ecam_size)
        path = f"/pci@{_unit(base)}"
        if window is None:
            self.note(
                path, "no free guest range below 4 GiB for the ivshmem BARs; host bridge left out"
            )
            return
        pci = self.root.add_child(path[1:])
        pci.set_string("compatible", "pci-host-ecam-generic")
        pci.set_string("device_type", "pci")
        pci.set_u32("bus-range", 0, platform.pci_mmconfig_end_bus)
        pci.set_u32("#address-cells", 3)
        pci.set_u32("#size-cells", 2)
        pci.set_u32("#interrupt-cells", 1)
        pci.set_cells("reg", (base, 2), (ecam_size, 2))
        start, size = window
        pci.set_cells("ranges", (_PCI_MEM32, 1), (start, 2), (start, 2), (size, 2))
        pci.set_u32("interrupt-map-mask", 0, 0, 0, 7)
        gic = self.tree.phandle(self.gic)
        spi = self.cell.vpci_irq_base
        entries = [
            (0, 0, 0, pin, gic, _GIC_SPI, spi + pin - 1, _IRQ_EDGE_RISING) for pin in range(1, 5)
        ]
        pci.set_u32("interrupt-map", *(v for entry in entries for v in entry))
        granted = self.granted_spis()
        for device, irq in zip(self.ivshmem, self.intx_ids(), strict=True):
            if irq not in granted:
                self.note(
                    path,
                    f"ivshmem {device.bdf_text} signals interrupt {irq}, which the "
                    "cell's irqchips do not grant",
                )
            if device.num_msix_vectors:
                self.note(
                    path,
                    f"ivshmem {device.bdf_text} has MSI-X vectors, but no MSI "
                    "controller is described; Linux uses INTx",
                )

    def pci_window(self, after: int) -> tuple[int, int] | None:
        """Return a free, naturally aligned guest range after ``after`` for the ivshmem BARs.

        The BARs are emulated: an access to a guest address the cell does not map traps to
        the hypervisor, so any range clear of the cell's regions, the GIC and the ECAM
        window serves.
        """
        need = sum(
            (~mask & 0xFFFFFFFF) + 1
            for device in self.ivshmem
            for mask in device.bar_mask
            if mask and not mask & 1  # memory BARs only
        )
        size = _PCI_WINDOW_MIN
        while size < need:
            size <<= 1
        assert self.gic is not None  # noqa: S101 - checked by the caller
        busy = [(r.virt_start, r.virt_end) for r in self.cell.mem_regions]
        busy += [(base, base + length) for base, length in self.gic.get_cells("reg", 2, 2)]
        assert self.system is not None  # noqa: S101 - checked by the caller
        busy.append((self.system.platform.pci_mmconfig_base, after))
        start = -(-after // size) * size
        moved = True
        while moved:
            moved = False
            for low, high in busy:
                if low < start + size and start < high:
                    start = -(-high // size) * size
                    moved = True
        if start + size > _FOUR_GIB:
            return None
        return start, size

    # -- chosen ------------------------------------------------------------------------------

    def add_initrd(self, chosen: Node, initrd: tuple[int, int]) -> None:
        start, end = initrd
        if not 0 <= start < end:
            raise BootError("initrd", f"{start:#x}-{end:#x}", "not a non-empty address range")
        if not any(base <= start and end <= base + size for base, size in self.ram):
            raise BootError(
                "initrd", f"{start:#x}-{end:#x}", "not inside one RAM region of the cell"
            )
        chosen.set_u64("linux,initrd-start", start)
        chosen.set_u64("linux,initrd-end", end)
