"""The binary codec: round trips, known sizes and offsets, parse errors, fuzz, pack errors."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from strategies import cell_configs, mutations, system_configs

from jailhouse.config.codec import pack_cell, pack_system, parse_cell, parse_system
from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CacheRegion,
    CellConfig,
    Console,
    ConsoleType,
    IommuType,
    IommuUnit,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PciCapability,
    PciDevice,
    PciType,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    X86Platform,
    load_config,
)
from jailhouse.config.validate import check_configs, validate_cell, validate_system
from jailhouse.errors import ConfigError, InvalidConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("*/*.cell"))
FIXTURE_BLOBS = [path.read_bytes() for path in FIXTURE_FILES]

RAM = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA


def two_region_cell() -> CellConfig:
    """Return a cell with one RAM region and a comm region."""
    return CellConfig(
        name="two",
        arch=Arch.ARM64,
        cpus=frozenset({1}),
        mem_regions=(
            MemoryRegion(0x7FA00000, 0, 0x10000, RAM | MemFlag.LOADABLE),
            MemoryRegion(0, 0x80000000, 0x1000, MemFlag.READ | MemFlag.WRITE | MemFlag.COMM_REGION),
        ),
    )


def small_system(arch: Arch = Arch.X86) -> SystemConfig:
    """Return a system config with a one-region root cell."""
    info = X86Platform() if arch == Arch.X86 else ArmPlatform(gic_version=3)
    return SystemConfig(
        arch=arch,
        hypervisor_memory=MemoryRegion(0x3A000000, 0, 0x600000),
        platform=PlatformInfo(arch_info=info),
        root_cell=CellConfig(
            name="root",
            arch=arch,
            cpus=frozenset(range(4)),
            mem_regions=(MemoryRegion(0, 0, 0x3A000000, RAM),),
        ),
    )


# -- round trips -------------------------------------------------------------------------------


@given(cell_configs())
def test_cell_round_trip(cell: CellConfig) -> None:
    """A generated cell config parses back equal to itself."""
    data = pack_cell(cell)
    assert len(data) == cell.size + len(cell.trailing)
    assert parse_cell(data) == cell


@given(system_configs())
def test_system_round_trip(system: SystemConfig) -> None:
    """A generated system config parses back equal to itself."""
    data = pack_system(system)
    assert len(data) == system.size + len(system.root_cell.trailing)
    assert parse_system(data) == system


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_parses_and_packs_back_byte_exactly(path: Path) -> None:
    """Each checked-in fixture parses and packs back to the very same bytes."""
    data = path.read_bytes()
    config = load_config(path)
    assert config.to_bytes() == data
    assert load_config(data) == config
    assert not (config.trailing if isinstance(config, CellConfig) else config.root_cell.trailing)


def test_fixtures_exist() -> None:
    """Both architectures have a system and two cell fixtures to fuzz."""
    assert {p.parent.name for p in FIXTURE_FILES} == {"x86", "arm64"}
    assert len(FIXTURE_FILES) == 6


def test_trailing_bytes_are_kept_and_repacked() -> None:
    """Bytes after the declared arrays land in ``trailing`` and are packed again."""
    data = pack_cell(two_region_cell())
    parsed = parse_cell(data + b"\x01\x02\x03")
    assert parsed.trailing == b"\x01\x02\x03"
    assert parsed.replace(trailing=b"") == two_region_cell()
    assert pack_cell(parsed) == data + b"\x01\x02\x03"

    system_data = pack_system(small_system())
    parsed_system = parse_system(system_data + bytes(5))
    assert parsed_system.root_cell.trailing == bytes(5)
    assert pack_system(parsed_system) == system_data + bytes(5)


@settings(max_examples=50, deadline=None)
@given(cell_configs(), st.data())
def test_a_built_cell_packs_once_and_its_copies_pack_their_own_fields(
    cell: CellConfig, data: st.DataObject
) -> None:
    """The packed bytes a cell keeps after its first pack are the bytes of that cell alone.

    A translation packs its cell to check it, and the caller packs it again to write it:
    the second pack reuses the first.  A copy made with ``replace`` is a new config and
    packs its own fields, never the original's bytes.
    """
    fresh = cell.replace()  # nothing packed yet
    first = pack_cell(fresh)
    assert pack_cell(fresh) == first == pack_cell(cell.replace())
    assert parse_cell(first) == cell
    name = data.draw(st.text("abcxyz", min_size=1, max_size=8).filter(lambda n: n != cell.name))
    renamed = fresh.replace(name=name)
    assert pack_cell(renamed) != first
    assert parse_cell(pack_cell(renamed)).name == name
    assert pack_cell(fresh) == first


# -- known answers --------------------------------------------------------------------------------


def test_two_region_cell_size() -> None:
    """A two-region cell is 204 bytes."""
    # ABI sheet §3 and style guide: 132-byte header + 8-byte cpu set + 2 regions * 32
    assert len(pack_cell(two_region_cell())) == 204


def test_apic_demo_shaped_cell_size() -> None:
    """A cell shaped like upstream's apic-demo is 228 bytes."""
    # research notes §3.1: apic-demo (2 regions, 1 cache region, 3 PIO regions) is 228 bytes
    cell = CellConfig(
        name="apic-demo-shape",
        arch=Arch.X86,
        cpus=frozenset({3}),
        mem_regions=(MemoryRegion(0, 0, 0x1000),) * 2,
        cache_regions=(CacheRegion(0, 2),),
        pio_regions=(PioRegion(0x3F8, 8),) * 3,
    )
    assert len(pack_cell(cell)) == 228


def test_qemu_shaped_system_sizes() -> None:
    """Systems with the array counts of upstream's QEMU configs have their sizes."""
    # research notes §3.1: qemu-x86 (31 regions, 1 irqchip, 13 PIO, 12 PCI, 16 caps) = 2372
    root = CellConfig(
        name="QEMU-VM",
        arch=Arch.X86,
        cpus=frozenset(range(4)),
        mem_regions=(MemoryRegion(0, 0, 0),) * 31,
        irqchips=(IrqChip(0xFEC00000),),
        pio_regions=(PioRegion(0, 1),) * 13,
        pci_devices=(PciDevice(PciType.DEVICE, 0),) * 12,
        pci_caps=(PciCapability(5, 0x60, 14),) * 16,
    )
    x86 = small_system(Arch.X86).replace(root_cell=root)
    assert len(pack_system(x86)) == 2372
    # research notes §3.2: qemu-arm64 (12 regions, 1 irqchip, 2 PCI devices) = 1024
    arm_root = CellConfig(
        name="qemu-arm64",
        arch=Arch.ARM64,
        cpus=frozenset(range(16)),
        mem_regions=(MemoryRegion(0, 0, 0),) * 12,
        irqchips=(IrqChip(0x08000000, pin_base=32),),
        pci_devices=(PciDevice(PciType.IVSHMEM, 0),) * 2,
    )
    arm64 = small_system(Arch.ARM64).replace(root_cell=arm_root)
    assert len(pack_system(arm64)) == 1024


def test_descriptor_field_offsets() -> None:
    """Header fields sit at the offsets of the ABI sheet's cell-descriptor table."""
    cell = two_region_cell().replace(
        vpci_irq_base=0x11223344,
        cpu_reset_address=0x5566778899AABBCC,
        console=Console(address=0x09000000, type=ConsoleType.PL011),
    )
    data = pack_cell(cell)
    # ABI sheet §3: signature 0, architecture 5, revision 6, name 8, cpu_set_size 48,
    # num_memory_regions 52, vpci_irq_base 80, cpu_reset_address 84, console 100,
    # CPU set right after the 132-byte descriptor
    assert data[0:5] == b"JHCLL"
    assert data[5] == 2
    assert struct.unpack_from("<H", data, 6) == (14,)
    assert data[8:12] == b"two\0"
    assert struct.unpack_from("<II", data, 48) == (8, 2)
    assert struct.unpack_from("<IQ", data, 80) == (0x11223344, 0x5566778899AABBCC)
    assert struct.unpack_from("<Q", data, 100) == (0x09000000,)
    assert struct.unpack_from("<H", data, 112) == (3,)
    assert data[132:140] == (1 << 1).to_bytes(8, "little")


def test_system_root_cell_offset() -> None:
    """The root cell descriptor starts at byte 356 of a 488-byte system header."""
    system = small_system(Arch.ARM64)
    data = pack_system(system)
    # ABI sheet §3: struct jailhouse_system is 488 bytes with root_cell at offset 356;
    # upstream leaves the embedded root cell's signature bytes zero
    assert data[0:5] == b"JHSYS"
    assert data[356:364] == bytes(8)
    assert data[364:368] == b"root"
    assert len(data) == 488 + 8 + 32


# -- parse errors ---------------------------------------------------------------------------------


def parse_error(parse: object, data: bytes) -> InvalidConfigError:
    """Parse ``data`` and return the InvalidConfigError it raises."""
    with pytest.raises(InvalidConfigError) as info:
        parse(data)  # type: ignore[operator]
    return info.value


@pytest.mark.parametrize(
    ("parse", "minimum", "cut"),
    [
        (parse_cell, 132, 0),
        (parse_cell, 132, 5),
        (parse_cell, 132, 131),
        (parse_system, 488, 0),
        (parse_system, 488, 131),
        (parse_system, 488, 487),
    ],
)
def test_truncated_header(parse: object, minimum: int, cut: int) -> None:
    """A blob shorter than the descriptor names the size and offset 0."""
    data = (pack_cell(two_region_cell()) + bytes(600))[:cut]
    err = parse_error(parse, data)
    assert (err.field, err.value, err.offset) == ("size", cut, 0)
    assert str(minimum) in err.reason


@pytest.mark.parametrize(
    ("parse", "head", "expect"),
    [
        (parse_cell, b"JHSYS\x00", "this is a system config"),
        (parse_system, b"JHCLL\x00", "this is a cell config"),
        (parse_cell, b"ELF\x7f\x02\x01", "not a Jailhouse cell config"),
        (parse_system, b"\x00" * 6, "not a Jailhouse system config"),
    ],
)
def test_wrong_signature(parse: object, head: bytes, expect: str) -> None:
    """A foreign or old signature names the signature field at offset 0."""
    data = bytearray(pack_system(small_system()))
    data[: len(head)] = head
    err = parse_error(parse, bytes(data))
    assert (err.field, err.offset) == ("signature", 0)
    assert err.value == bytes(data[:5])
    assert expect in err.reason


def test_old_six_byte_signatures() -> None:
    """Revision-13 files (``JHCELL``/``JHSYST`` and revision 13) are refused by field."""
    # ABI sheet §0: up to revision 13 the signatures were "JHCELL" and "JHSYST"
    cell = bytearray(pack_cell(two_region_cell()))
    cell[0:8] = b"JHCELL" + struct.pack("<H", 13)
    err = parse_error(parse_cell, bytes(cell))
    assert (err.field, err.value, err.offset) == ("signature", b"JHCEL", 0)
    assert "revision 13 or older" in err.reason

    # "JHSYST" starts with "JHSYS": the revision field tells the old format apart
    system = bytearray(pack_system(small_system()))
    system[0:8] = b"JHSYST" + struct.pack("<H", 13)
    err = parse_error(parse_system, bytes(system))
    assert (err.field, err.value, err.offset) == ("signature", b"JHSYS", 0)
    assert "revision 13 or older" in err.reason

    # with revision 14 bytes the "T" lands in the architecture byte, as in the driver
    # (ABI sheet §8.13)
    system[6:8] = struct.pack("<H", 14)
    err = parse_error(parse_system, bytes(system))
    assert (err.field, err.value, err.offset) == ("architecture", ord("T"), 5)


@pytest.mark.parametrize("revision", [13, 15, 0, 0xFFFF])
def test_wrong_revision(revision: int) -> None:
    """Any revision but 14 names the revision field at offset 6 and its value."""
    for data, parse in ((pack_cell(two_region_cell()), parse_cell),
                        (pack_system(small_system()), parse_system)):  # fmt: skip
        bad = data[:6] + struct.pack("<H", revision) + data[8:]
        err = parse_error(parse, bad)
        assert (err.field, err.value, err.offset) == ("revision", revision, 6)


@pytest.mark.parametrize("arch", [3, 0x54, 0xFF])
def test_unknown_architecture(arch: int) -> None:
    """An architecture byte above 2 names the architecture field at offset 5."""
    for data, parse in ((pack_cell(two_region_cell()), parse_cell),
                        (pack_system(small_system()), parse_system)):  # fmt: skip
        bad = data[:5] + bytes([arch]) + data[6:]
        err = parse_error(parse, bad)
        assert (err.field, err.value, err.offset) == ("architecture", arch, 5)


COUNTS = [
    ("cpu_set_size", 48),
    ("num_memory_regions", 52),
    ("num_cache_regions", 56),
    ("num_irqchips", 60),
    ("num_pio_regions", 64),
    ("num_pci_devices", 68),
    ("num_pci_caps", 72),
    ("num_stream_ids", 76),
]


@pytest.mark.parametrize(("name", "offset"), COUNTS)
@pytest.mark.parametrize("value", [1000, 0xFFFF_FFFF])
def test_count_running_past_the_end(name: str, offset: int, value: int) -> None:
    """A count whose array runs past the end names that count, its offset and value."""
    cell = pack_cell(two_region_cell())
    bad = cell[:offset] + struct.pack("<I", value) + cell[offset + 4 :]
    err = parse_error(parse_cell, bad)
    assert (err.field, err.value, err.offset) == (name, value, offset)
    assert f"the config has {len(bad)} bytes" in err.reason

    system = pack_system(small_system())
    at = 356 + offset  # ABI sheet §3: root_cell at offset 356
    bad = system[:at] + struct.pack("<I", value) + system[at + 4 :]
    err = parse_error(parse_system, bad)
    assert (err.field, err.value, err.offset) == (f"root_cell.{name}", value, at)


def test_count_one_too_many_by_one_byte() -> None:
    """Cutting the last byte of the last array names the last non-empty array's count."""
    data = pack_cell(two_region_cell())
    err = parse_error(parse_cell, data[:-1])
    assert (err.field, err.value, err.offset) == ("num_memory_regions", 2, 52)


# -- fuzz -----------------------------------------------------------------------------------------


@settings(max_examples=10 * settings.default.max_examples)
@given(st.sampled_from(FIXTURE_BLOBS).flatmap(mutations))
def test_damaged_files_raise_only_invalid_config_error(data: bytes) -> None:
    """Damaged fixture bytes raise only InvalidConfigError, or parse, repack and validate."""
    try:
        config = load_config(data)
    except InvalidConfigError as err:
        error: InvalidConfigError | None = err
    else:
        error = None
    if error is not None:
        event(f"rejected: {error.field.removeprefix('root_cell.')}")
        assert error.field
        assert 0 <= error.offset <= max(len(data), 8)
        return
    event("parsed")
    again = load_config(config.to_bytes())
    assert again == config
    if isinstance(config, SystemConfig):
        validate_system(config)
        check_configs(config, *(c for c in map(load_config, FIXTURE_BLOBS)
                                if isinstance(c, CellConfig)))  # fmt: skip
    else:
        validate_cell(config)
        systems = [c for c in map(load_config, FIXTURE_BLOBS) if isinstance(c, SystemConfig)]
        check_configs(systems[0], config, config)


# -- pack errors -----------------------------------------------------------------------------------


def pack_error(config: CellConfig | SystemConfig) -> ConfigError:
    """Pack ``config`` and return the ConfigError it raises."""
    with pytest.raises(ConfigError) as info:
        config.to_bytes()
    assert not isinstance(info.value, InvalidConfigError)
    return info.value


def test_pack_error_names_region_field() -> None:
    """A region size beyond 64 bits names ``mem_regions[1].size`` and the value."""
    cell = two_region_cell()
    regions = (cell.mem_regions[0], MemoryRegion(0, 0, 1 << 64))
    err = pack_error(cell.replace(mem_regions=regions))
    assert (err.field, err.value) == ("mem_regions[1].size", 1 << 64)
    assert "64-bit" in err.reason


def test_pack_error_names_root_cell_field() -> None:
    """A negative root region address names ``root_cell.mem_regions[0].phys_start``."""
    system = small_system()
    root = system.root_cell.replace(mem_regions=(MemoryRegion(-1, 0, 0x1000),))
    err = pack_error(system.replace(root_cell=root))
    assert (err.field, err.value) == ("root_cell.mem_regions[0].phys_start", -1)


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"name": "x" * 33}, "name", "x" * 33),
        ({"name": "cell-\u20ac"}, "name", "cell-\u20ac"),
        ({"cpus": frozenset({64})}, "cpus", 64),
        ({"console": Console(type=ConsoleType(0x10000))}, "console.type", 0x10000),
        ({"vpci_irq_base": 1 << 32}, "vpci_irq_base", 1 << 32),
        ({"stream_ids": (1, 1 << 32)}, "stream_ids[1]", 1 << 32),
        ({"pio_regions": (PioRegion(0x10000, 1),)}, "pio_regions[0].base", 0x10000),
        ({"irqchips": (IrqChip(0, pin_bitmap=(0, 0, 0)),)}, "irqchips[0].pin_bitmap", (0, 0, 0)),  # type: ignore[arg-type]
        (
            {"pci_devices": (PciDevice(PciType.IVSHMEM, 0, shmem_peers=256),)},
            "pci_devices[0].shmem_peers",
            256,
        ),
        (
            {"pci_devices": (PciDevice(PciType.DEVICE, 0, bar_mask=(0,)),)},  # type: ignore[arg-type]
            "pci_devices[0].bar_mask",
            (0,),
        ),
    ],
)
def test_pack_error_names_cell_fields(change: dict[str, object], field: str, value: object) -> None:
    """A value that does not fit names its field path and the value."""
    err = pack_error(two_region_cell().replace(**change))
    assert (err.field, err.value) == (field, value)


def test_pack_error_names_system_fields() -> None:
    """System-level values that do not fit name their paths."""
    system = small_system()
    units = (IommuUnit(IommuType.INTEL),) * 9
    err = pack_error(system.replace(platform=PlatformInfo(iommu_units=units)))
    assert (err.field, err.value) == ("platform.iommu_units", 9)

    units = (IommuUnit(IommuType.INTEL, base=1 << 64),)
    err = pack_error(system.replace(platform=PlatformInfo(iommu_units=units)))
    assert (err.field, err.value) == ("platform.iommu_units[0].base", 1 << 64)

    err = pack_error(system.replace(platform=PlatformInfo(arch_info=ArmPlatform())))
    assert (err.field, err.value) == ("platform.arch_info", "ArmPlatform")

    err = pack_error(system.replace(root_header=b"JHCLL"))
    assert (err.field, err.value) == ("root_header", b"JHCLL")

    err = pack_error(system.replace(hypervisor_memory=MemoryRegion(0, 0, 0x1000, MemFlag(1 << 64))))
    assert (err.field, err.value) == ("hypervisor_memory.flags", 1 << 64)


def test_config_package_loads_only_what_a_name_needs() -> None:
    """``jailhouse.config`` gives enums without building the model, and submodules as attributes."""
    code = (
        "import sys, jailhouse.config as c; c.Arch, c.MemFlag, c.format_cpus; "
        "print('jailhouse.config.model' in sys.modules, end=' '); c.CellConfig; "
        "print('jailhouse.config.model' in sys.modules, c.codec.__name__, 'validate' in dir(c))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "True", "jailhouse.config.codec", "True"]
