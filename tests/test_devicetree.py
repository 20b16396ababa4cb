"""Device trees generated from cell and system configs, parsed back and checked by ``dtc``."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CellConfig,
    CellFlag,
    Console,
    ConsoleFlag,
    ConsoleType,
    IrqChip,
    MemFlag,
    MemoryRegion,
    SystemConfig,
)
from jailhouse.errors import BootError
from jailhouse.examples import example_cells, example_system
from jailhouse.linux import build_device_tree, generate_device_tree
from jailhouse.linux.fdt import DeviceTree, parse

DTC = shutil.which("dtc")
needs_dtc = pytest.mark.skipif(DTC is None, reason="dtc (apt: device-tree-compiler) is missing")

SYSTEM = example_system("arm64")
CELLS = example_cells("arm64")
LINUX = CELLS["arm64-linux"]
DEMO = CELLS["arm64-demo"]
INITRD = (0x7200_0000, 0x7210_0000)

# Hand-derived from jailhouse/examples.py: node paths and the property names of each node.
_COMMON = {
    "/": {"#address-cells", "#size-cells", "model", "compatible", "interrupt-parent"},
    "/hypervisor": {"compatible"},
    "/cpus": {"#address-cells", "#size-cells"},
    "/psci": {"compatible", "method"},
    "/interrupt-controller@8000000": {
        "compatible",
        "reg",
        "interrupt-controller",
        "#interrupt-cells",
        "#address-cells",
        "phandle",
    },
    "/timer": {"compatible", "interrupts"},
    "/uart-clock": {"compatible", "#clock-cells", "clock-frequency", "phandle"},
    "/aliases": {"serial0"},
}
_CPU = {"device_type", "compatible", "reg", "enable-method"}
_MEMORY = {"device_type", "reg"}
_PL011 = {"compatible", "reg", "clocks", "clock-names"}
EXPECTED = {
    "arm64-linux": {
        **_COMMON,
        "/memory@0": _MEMORY,
        "/memory@70000000": _MEMORY,
        "/cpus/cpu@1": _CPU,
        "/cpus/cpu@2": _CPU,
        "/serial@9000000": _PL011 | {"interrupts"},
        "/chosen": {"bootargs", "stdout-path", "linux,initrd-start", "linux,initrd-end"},
    },
    "arm64-demo": {
        **_COMMON,
        "/memory@0": _MEMORY,
        "/cpus/cpu@3": _CPU,
        "/serial@9000000": _PL011,  # its only SPI is the ivshmem line: no UART interrupt
        "/pci@8e00000": {
            "compatible",
            "device_type",
            "bus-range",
            "#address-cells",
            "#size-cells",
            "#interrupt-cells",
            "reg",
            "ranges",
            "interrupt-map-mask",
            "interrupt-map",
        },
        "/chosen": {"bootargs", "stdout-path"},
    },
}


def dtc(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run dtc on ``data`` (stdin) and return the finished process."""
    assert DTC is not None
    return subprocess.run([DTC, *args, "-"], input=data, capture_output=True, check=True)


def tree_of(cell: CellConfig, system: SystemConfig | None = SYSTEM, **kwargs) -> DeviceTree:
    """Generate the tree of ``cell`` and parse it back with our reader."""
    return parse(build_device_tree(system, cell, **kwargs))


def shape(tree: DeviceTree) -> dict[str, set[str]]:
    """Return each node path with the names of its properties."""
    return {path: set(node.properties) for path, node in tree.root.walk()}


def regs(tree: DeviceTree, path: str) -> list[tuple[int, ...]]:
    """Return the (address, size) pairs of a node's reg (2 + 2 cells)."""
    return tree.node(path).get_cells("reg", 2, 2)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_cells_have_the_expected_nodes_and_properties(name: str) -> None:
    """Each example cell's tree has exactly the nodes and properties derived by hand."""
    initrd = INITRD if name == "arm64-linux" else None
    tree = tree_of(CELLS[name], bootargs="console=ttyAMA0", initrd=initrd)
    assert shape(tree) == EXPECTED[name]


@pytest.mark.parametrize("cell", [LINUX, DEMO], ids=lambda c: c.name)
def test_every_ram_region_and_nothing_else_is_memory(cell: CellConfig) -> None:
    """The memory nodes are the cell's plain RAM regions at their guest addresses."""
    tree = tree_of(cell)
    memory = sorted(
        reg
        for path, node in tree.root.walk()
        if node.properties.get("device_type") == b"memory\0"
        for reg in regs(tree, path)
    )
    expected = {
        "arm64-linux": [(0x0, 0x10000), (0x70000000, 0x08000000)],  # loader RAM, kernel RAM
        "arm64-demo": [(0x0, 0x10000)],  # shared memory, UART and comm region are not RAM
    }
    assert memory == expected[cell.name]
    for start, size in memory:
        region = next(r for r in cell.mem_regions if r.virt_start == start)
        assert region.size == size
        assert not region.flags & (MemFlag.IO | MemFlag.COMM_REGION | MemFlag.ROOTSHARED)


@pytest.mark.parametrize("cell", [LINUX, DEMO], ids=lambda c: c.name)
def test_one_psci_cpu_per_cell_cpu(cell: CellConfig) -> None:
    """/cpus has one cpu per cell CPU, reg = CPU index, enable-method psci; PSCI uses smc."""
    tree = tree_of(cell)
    cpus = tree.node("/cpus")
    assert cpus.get_u32("#address-cells") == 2
    assert [c.get_cells("reg", 2)[0][0] for c in cpus.children] == sorted(cell.cpus)
    assert {c.get_string("enable-method") for c in cpus.children} == {"psci"}
    assert tree.node("/psci").get_string("method") == "smc"
    assert tree.node("/psci").get_string("compatible") == "arm,psci-0.2"


def test_gicv3_addresses_are_the_system_configs() -> None:
    """The GICv3 node has the platform's GICD and a redistributor frame per system CPU."""
    tree = tree_of(LINUX)
    arm = SYSTEM.platform.arch_info
    assert isinstance(arm, ArmPlatform)
    gic = tree.node(f"/interrupt-controller@{arm.gicd_base:x}")
    assert gic.get_string("compatible") == "arm,gic-v3"
    assert regs(tree, f"/interrupt-controller@{arm.gicd_base:x}") == [
        (arm.gicd_base, 0x10000),
        (arm.gicr_base, len(SYSTEM.root_cell.cpus) * 0x20000),
    ]
    assert SYSTEM.root_cell.irqchips[0].address == arm.gicd_base
    assert gic.get_u32("#interrupt-cells") == 3
    assert tree.root.get_u32("interrupt-parent") == gic.get_u32("phandle")


def test_timer_uses_the_architected_ppis() -> None:
    """The timer lists PPIs 13, 14, 11 and 10, level-high."""
    timer = tree_of(LINUX).node("/timer")
    assert timer.get_string("compatible") == "arm,armv8-timer"
    assert timer.get_cells("interrupts", 1, 1, 1) == [
        (1, 13, 4),
        (1, 14, 4),
        (1, 11, 4),
        (1, 10, 4),
    ]


def test_console_uart_is_the_cells_pl011() -> None:
    """The PL011 sits at the console's address with SPI 1 (interrupt 33), clocks and alias."""
    tree = tree_of(LINUX)
    uart = tree.node("/serial@9000000")
    assert uart.get_strings("compatible") == ["arm,pl011", "arm,primecell"]
    assert regs(tree, "/serial@9000000") == [(LINUX.console.address, LINUX.console.size)]
    assert uart.get_u32s("interrupts") == (0, 33 - 32, 4)
    clock = tree.node("/uart-clock")
    assert uart.get_u32s("clocks") == (clock.get_u32("phandle"),) * 2
    assert uart.get_strings("clock-names") == ["uartclk", "apb_pclk"]
    assert clock.get_u32("clock-frequency") == 24_000_000
    assert tree.node("/aliases").get_string("serial0") == "/serial@9000000"
    assert tree.node("/chosen").get_string("stdout-path") == "serial0"


def test_chosen_carries_bootargs_and_initrd() -> None:
    """/chosen holds the command line and the initrd's start and end as 64-bit values."""
    chosen = tree_of(LINUX, bootargs="root=/dev/ram0 rw", initrd=INITRD).node("/chosen")
    assert chosen.get_string("bootargs") == "root=/dev/ram0 rw"
    assert chosen.get_u64("linux,initrd-start") == INITRD[0]
    assert chosen.get_u64("linux,initrd-end") == INITRD[1]


def test_ivshmem_host_bridge_follows_the_configs() -> None:
    """The demo's host bridge has the system's ECAM window and the cell's vPCI SPIs."""
    tree = tree_of(DEMO)
    base = SYSTEM.platform.pci_mmconfig_base
    pci = tree.node(f"/pci@{base:x}")
    assert regs(tree, f"/pci@{base:x}") == [(base, 0x100000)]  # end bus 0: one 1 MiB bus
    assert pci.get_u32s("bus-range") == (0, SYSTEM.platform.pci_mmconfig_end_bus)
    gic = tree.node("/interrupt-controller@8000000").get_u32("phandle")
    entries = pci.get_cells("interrupt-map", 1, 1, 1, 1, 1, 1, 1, 1)
    spi = DEMO.vpci_irq_base
    assert entries == [(0, 0, 0, pin, gic, 0, spi + pin - 1, 1) for pin in (1, 2, 3, 4)]
    # the demo's device 00:00.0 signals INTA, which its irqchip grants
    assert 32 + spi in DEMO.irqchips[0].pins
    ((space, child, parent, size),) = pci.get_cells("ranges", 1, 2, 2, 2)
    assert space == 0x02000000
    assert child == parent
    assert size >= 0x1000
    assert child + size <= 1 << 32
    busy = [(r.virt_start, r.virt_end) for r in DEMO.mem_regions]
    busy += [(a, a + s) for a, s in regs(tree, "/interrupt-controller@8000000")]
    busy.append((base, base + 0x100000))
    assert all(not (lo < child + size and child < hi) for lo, hi in busy)


def test_no_host_bridge_without_ivshmem() -> None:
    """A cell without ivshmem devices gets no PCI node."""
    assert not [p for p, _ in tree_of(LINUX).root.walk() if p.startswith("/pci")]


def test_build_device_tree_returns_the_generated_blob() -> None:
    """build_device_tree returns generate_device_tree's blob."""
    assert build_device_tree(SYSTEM, LINUX) == generate_device_tree(SYSTEM, LINUX).blob


# -- dtc ------------------------------------------------------------------------------------


@needs_dtc
@pytest.mark.parametrize("cell", [LINUX, DEMO], ids=lambda c: c.name)
def test_dtc_accepts_the_tree_without_warnings(cell: CellConfig) -> None:
    """The tree passes dtc's checks (reg, unit addresses, interrupts, PCI) without a warning."""
    blob = build_device_tree(SYSTEM, cell, bootargs="console=ttyAMA0")
    out = dtc("-I", "dtb", "-O", "dts", data=blob)
    assert out.stderr == b""
    dts = out.stdout.decode()
    assert 'compatible = "arm,gic-v3";' in dts
    assert "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x80000>;" in dts
    assert 'enable-method = "psci";' in dts
    rewritten = dtc("-I", "dtb", "-O", "dtb", data=blob)
    assert rewritten.stderr == b""
    assert rewritten.stdout == blob
    # the decompiled source compiles back to the same bytes (-q: a decompiled source has
    # numbers where phandle references were, which dtc's clocks check warns about)
    assert dtc("-q", "-I", "dts", "-O", "dtb", data=out.stdout).stdout == blob


# -- what the configs do not decide ----------------------------------------------------------


def test_notes_name_the_assumptions() -> None:
    """The notes say that MPIDRs, the UART clock and its interrupt were assumed."""
    notes = generate_device_tree(SYSTEM, LINUX).notes
    assert [n.node for n in notes] == ["/cpus", "/uart-clock", "/serial@9000000"]
    assert "mpidrs=" in notes[0].reason
    assert "interrupt 33 assumed" in notes[2].reason
    explicit = generate_device_tree(
        SYSTEM, LINUX, mpidrs={1: 0x100, 2: 0x101}, console_interrupt=33, uart_clock=48_000_000
    )
    assert explicit.notes == ()


def test_mpidrs_become_cpu_reg() -> None:
    """Given MPIDRs, cpu reg is their affinity bits; a missing CPU is refused."""
    tree = tree_of(LINUX, mpidrs={1: 0x8000_0100, 2: 0x8000_0101})
    assert [c.name for c in tree.node("/cpus").children] == ["cpu@100", "cpu@101"]
    assert tree.node("/cpus/cpu@101").get_cells("reg", 2) == [(0x101,)]
    with pytest.raises(BootError, match=r"mpidrs = .*has no MPIDR for cell CPU 2"):
        build_device_tree(SYSTEM, LINUX, mpidrs={1: 0x100})


def test_console_interrupt_must_be_the_cells() -> None:
    """An explicit console interrupt is used; one the cell's irqchips do not grant is refused."""
    tree = tree_of(LINUX, console_interrupt=33)
    assert tree.node("/serial@9000000").get_u32s("interrupts") == (0, 1, 4)
    with pytest.raises(BootError, match="console_interrupt = 40: not an SPI"):
        build_device_tree(SYSTEM, LINUX, console_interrupt=40)


def test_no_console_means_no_uart() -> None:
    """Without a console there is no serial node, alias or stdout-path, and a note says so."""
    cell = LINUX.replace(console=Console())
    result = generate_device_tree(SYSTEM, cell)
    tree = parse(result.blob)
    assert not [p for p, _ in tree.root.walk() if p.startswith(("/serial", "/aliases"))]
    assert "stdout-path" not in tree.node("/chosen").properties
    assert any("names no console" in n.reason for n in result.notes)


def test_unmapped_or_unsupported_console_is_left_out() -> None:
    """A console the cell does not map, or of a type without a binding, is noted, not built."""
    unmapped = LINUX.replace(mem_regions=LINUX.mem_regions[1:])
    imx = LINUX.replace(console=replace(LINUX.console, type=ConsoleType.IMX))
    for cell, reason in [
        (unmapped, "is not an IO region of the cell"),
        (imx, "IMX has no binding"),
    ]:
        result = generate_device_tree(SYSTEM, cell)
        assert not [p for p, _ in parse(result.blob).root.walk() if p.startswith("/serial")]
        assert any(reason in n.reason for n in result.notes)


def test_8250_console() -> None:
    """An 8250 console with 4-byte register distance is an ns16550a with reg-shift 2."""
    console = Console(
        address=0x09000000,
        size=0x1000,
        type=ConsoleType.UART_8250,
        flags=ConsoleFlag.ACCESS_MMIO | ConsoleFlag.REGDIST_4,
    )
    uart = tree_of(LINUX.replace(console=console), uart_clock=1_843_200).node("/serial@9000000")
    assert uart.get_string("compatible") == "ns16550a"
    assert uart.get_u32("reg-shift") == 2
    assert uart.get_u32("reg-io-width") == 4
    assert uart.get_u32("clock-frequency") == 1_843_200


def test_without_system_config_the_gic_is_noted() -> None:
    """Without a system config the GIC and timer are left out, and a note says so."""
    result = generate_device_tree(None, LINUX)
    tree = parse(result.blob)
    paths = {p for p, _ in tree.root.walk()}
    assert "/timer" not in paths
    assert not [p for p in paths if p.startswith("/interrupt-controller")]
    assert "interrupt-parent" not in tree.root.properties
    assert "/memory@70000000" in paths
    assert any(n.node == "/interrupt-controller" for n in result.notes)


def _gicv2_arm_system() -> tuple[SystemConfig, CellConfig]:
    """Return a 32-bit ARM system with a GICv2, and the Linux cell moved onto it."""
    arm = ArmPlatform(maintenance_irq=25, gic_version=2, gicd_base=0x2C001000, gicc_base=0x2C002000)
    root = SYSTEM.root_cell.replace(
        arch=Arch.ARM, irqchips=(IrqChip(0x2C001000, pin_base=32, pin_bitmap=(0xFFFFFFFF,) * 4),)
    )
    system = SYSTEM.replace(
        arch=Arch.ARM, root_cell=root, platform=replace(SYSTEM.platform, arch_info=arm)
    )
    cell = LINUX.replace(
        arch=Arch.ARM, irqchips=(IrqChip(0x2C001000, pin_base=32, pin_bitmap=(2, 0, 0, 0)),)
    )
    return system, cell


def test_gicv2_on_arm() -> None:
    """A GICv2 system gives a gic-400 (GICD 4 KiB, GICC 8 KiB), an armv7 timer, 1-cell CPUs."""
    system, cell = _gicv2_arm_system()
    tree = tree_of(cell, system)
    assert tree.node("/interrupt-controller@2c001000").get_string("compatible") == "arm,gic-400"
    assert regs(tree, "/interrupt-controller@2c001000") == [
        (0x2C001000, 0x1000),
        (0x2C002000, 0x2000),
    ]
    timer = tree.node("/timer")
    assert timer.get_string("compatible") == "arm,armv7-timer"
    # two cell CPUs: GICv2 PPI flags carry the CPU mask 0b11 in bits 8-15
    assert timer.get_cells("interrupts", 1, 1, 1)[0] == (1, 13, 0x304)
    cpus = tree.node("/cpus")
    assert cpus.get_u32("#address-cells") == 1
    assert [c.get_u32("reg") for c in cpus.children] == [1, 2]
    assert "compatible" not in cpus.children[0].properties


def test_aarch32_cell_on_arm64_uses_armv7_bindings() -> None:
    """An arm64 cell with the AARCH32 flag gets 32-bit CPU and timer bindings."""
    tree = tree_of(LINUX.replace(flags=LINUX.flags | CellFlag.AARCH32))
    assert tree.node("/timer").get_string("compatible") == "arm,armv7-timer"
    assert tree.node("/cpus").get_u32("#address-cells") == 1


# -- refusals --------------------------------------------------------------------------------


def test_refuses_non_arm_cells_and_mismatched_systems() -> None:
    """An x86 cell, or an arm64 cell with an x86 system, is refused naming the arch."""
    with pytest.raises(BootError, match=r"cell\.arch = 'X86'"):
        build_device_tree(None, example_cells("x86")["x86-linux"])
    with pytest.raises(BootError, match=r"system\.arch = 'X86'"):
        build_device_tree(example_system("x86"), LINUX)


def test_refuses_initrd_outside_ram() -> None:
    """An initrd that is reversed or not inside one RAM region is refused with its range."""
    with pytest.raises(BootError, match="initrd = '0x80000000-0x80001000': not inside"):
        build_device_tree(SYSTEM, LINUX, initrd=(0x8000_0000, 0x8000_1000))
    with pytest.raises(BootError, match="not a non-empty address range"):
        build_device_tree(SYSTEM, LINUX, initrd=(0x7300_0000, 0x7200_0000))


def test_refuses_cell_without_ram() -> None:
    """A cell with no RAM region cannot boot Linux and is refused."""
    cell = LINUX.replace(
        mem_regions=(
            LINUX.mem_regions[0],
            MemoryRegion(0x7F900000, 0, 0x10000, MemFlag.READ | MemFlag.ROOTSHARED),
        )
    )
    with pytest.raises(BootError, match=r"cell\.mem_regions = 2: the cell has no RAM"):
        build_device_tree(SYSTEM, cell)


def test_pci_window_moves_past_the_cells_regions() -> None:
    """A cell region right after the ECAM window pushes the BAR window past it."""
    io = MemoryRegion(0x08F00000, 0x08F00000, 0x18000, MemFlag.READ | MemFlag.WRITE | MemFlag.IO)
    tree = tree_of(DEMO.replace(mem_regions=(*DEMO.mem_regions, io)))
    ((_, child, _, size),) = tree.node("/pci@8e00000").get_cells("ranges", 1, 2, 2, 2)
    assert (child, size) == (0x08F20000, 0x10000)


def test_ungranted_intx_and_rootshared_ram_are_noted() -> None:
    """An ivshmem line the irqchip does not grant, and ROOTSHARED RAM, each get a note."""
    shared_ram = MemoryRegion(
        0x7F800000, 0x00100000, 0x10000, MemFlag.READ | MemFlag.WRITE | MemFlag.ROOTSHARED
    )
    cell = DEMO.replace(irqchips=(), mem_regions=(*DEMO.mem_regions, shared_ram))
    result = generate_device_tree(SYSTEM, cell)
    reasons = [str(n) for n in result.notes]
    assert any("/memory@100000: mem_regions[7] is ROOTSHARED" in r for r in reasons)
    assert any("ivshmem 0001:00:00.0 signals interrupt 144" in r for r in reasons)
    assert "/memory@100000" not in {p for p, _ in parse(result.blob).root.walk()}


def test_refuses_a_uart_clock_that_does_not_fit() -> None:
    """A UART clock of 0 Hz or one beyond 32 bits is refused with its value."""
    for clock in (0, 1 << 32):
        with pytest.raises(BootError, match=r"uart_clock = .*not a clock rate"):
            build_device_tree(SYSTEM, LINUX, uart_clock=clock)
