"""The config model's records behave as the frozen dataclasses they replaced."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import os
import pickle
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from jailhouse.cli import main
from jailhouse.config import _builders
from jailhouse.config.model import (
    ArmPlatform,
    CacheRegion,
    CellConfig,
    Console,
    IommuUnit,
    IrqChip,
    MemoryRegion,
    PciCapability,
    PciDevice,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    X86Platform,
    load_config,
)
from jailhouse.config.validate import Finding, Severity
from jailhouse.examples import example_cells, example_system

RECORDS = [
    ArmPlatform,
    CacheRegion,
    CellConfig,
    Console,
    Finding,
    IommuUnit,
    IrqChip,
    MemoryRegion,
    PciCapability,
    PciDevice,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    X86Platform,
]


def test_dataclass_protocol_lists_fields_in_order_with_defaults() -> None:
    """``dataclasses.fields`` gives each record's fields in constructor order, with defaults."""
    names = [f.name for f in dataclasses.fields(MemoryRegion)]
    assert names == ["phys_start", "virt_start", "size", "flags"]
    defaults = {f.name: f.default for f in dataclasses.fields(MemoryRegion)}
    assert defaults["flags"] == 0
    assert defaults["size"] is dataclasses.MISSING
    cell_fields = dataclasses.fields(CellConfig)
    assert [f.name for f in cell_fields][:4] == ["name", "arch", "cpus", "cpu_set_size"]
    assert all(f.kw_only for f in cell_fields)
    assert not any(f.kw_only for f in dataclasses.fields(PciDevice))
    for record in RECORDS:
        assert dataclasses.is_dataclass(record)
        params = list(inspect.signature(record).parameters)
        assert [f.name for f in dataclasses.fields(record)] == params


def test_dataclasses_replace_and_asdict_work_on_records() -> None:
    """``dataclasses.replace`` and ``asdict`` accept model objects, as other modules use them."""
    region = MemoryRegion(0x1000, 0, 0x2000)
    moved = dataclasses.replace(region, virt_start=0x4000)
    assert moved == MemoryRegion(0x1000, 0x4000, 0x2000)
    assert region.replace(virt_start=0x4000) == moved
    assert dataclasses.asdict(moved) == {
        "phys_start": 0x1000,
        "virt_start": 0x4000,
        "size": 0x2000,
        "flags": 0,
    }
    with pytest.raises(TypeError, match="unexpected keyword"):
        region.replace(colour="red")


def test_records_are_immutable() -> None:
    """Assigning or deleting a field raises dataclasses' FrozenInstanceError, as before."""
    cell = example_cells("arm64")["arm64-demo"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del cell.mem_regions[0].size  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cell.colour = "red"  # type: ignore[attr-defined]
    assert not hasattr(cell, "__dict__")


def test_equality_hash_and_repr_follow_the_fields() -> None:
    """Records compare and hash by class and values, and repr as a dataclass would."""
    a = PioRegion(0x3F8, 8)
    assert a == PioRegion(base=0x3F8, length=8)
    assert hash(a) == hash((0x3F8, 8))
    assert a != PioRegion(0x3F8, 16)
    assert a != (0x3F8, 8)
    assert repr(a) == "PioRegion(base=1016, length=8)"
    system = example_system("x86")
    assert system == load_config(system.to_bytes())
    assert len({system, load_config(system.to_bytes())}) == 1


def test_keyword_constructors_keep_the_defaults() -> None:
    """The keyword constructors take the same names, with the same defaults, as before."""
    cell = CellConfig(name="c", arch=example_system("x86").arch)
    assert cell.cpu_set_size == 8
    assert cell.console == Console()
    assert cell.mem_regions == ()
    platform = PlatformInfo()
    assert platform.arch_info == X86Platform()
    with pytest.raises(TypeError):
        CellConfig("c", example_system("x86").arch)  # type: ignore[misc]
    assert MemoryRegion.__match_args__ == ("phys_start", "virt_start", "size", "flags")
    assert CellConfig.__match_args__ == ()


def test_pickle_and_copy_round_trip() -> None:
    """A pickled or copied config equals the original and packs to the same bytes."""
    for config in [example_system("arm64"), *example_cells("x86").values()]:
        copies = (pickle.loads(pickle.dumps(config)), copy.deepcopy(config))  # noqa: S301 - ours
        for again in copies:
            assert again == config
            assert again.to_bytes() == config.to_bytes()
    finding = Finding("mem_regions[0].size", 3, "odd", Severity.WARNING, "demo")
    assert pickle.loads(pickle.dumps(finding)) == finding  # noqa: S301 - our own bytes


def test_parsed_arrays_are_decoded_when_read_and_pack_back_unread() -> None:
    """A parsed config keeps some arrays as bytes until read; either way it packs the same."""
    for config in [example_system("x86"), *example_cells("arm64").values()]:
        data = config.to_bytes()
        unread = load_config(data)
        assert unread.to_bytes() == data  # packed before any array is read
        assert unread == config  # reading compares the decoded values
        assert unread.to_bytes() == data
        cell = unread.root_cell if isinstance(unread, SystemConfig) else unread
        assert isinstance(cell.mem_regions, tuple)
        assert all(isinstance(r, MemoryRegion) for r in cell.mem_regions)
        changed = cell.replace(mem_regions=cell.mem_regions[:1])
        assert load_config(changed.to_bytes()) == changed


def test_version_fast_path_prints_what_argparse_prints() -> None:
    """``--version`` without a parser prints the line argparse's version action prints."""
    from jailhouse.cli import build_parser

    fast = io.StringIO()
    with redirect_stdout(fast):
        assert main(["--version"]) == 0
    slow = io.StringIO()
    with redirect_stdout(slow), pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--version"])
    assert stop.value.code == 0
    assert fast.getvalue() == slow.getvalue()


def test_config_check_fast_path_builds_no_parser(tmp_path: Path) -> None:
    """A plain ``config check FILE...`` imports neither argparse nor the other verb modules."""
    system = tmp_path / "sys.cell"
    system.write_bytes(example_system("x86").to_bytes())
    demo = tmp_path / "demo.cell"
    demo.write_bytes(example_cells("x86")["x86-demo"].to_bytes())
    script = (
        "import sys\n"
        "from jailhouse.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(sorted(m for m in ('argparse', 'jailhouse.cli._parser', 'jailhouse.cli._device',"
        " 'jailhouse.cli._virsh') if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "config", "check", str(system), str(demo)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == "[]"
    assert "'x86-root', 'x86-demo': no findings" in run.stdout


def test_non_canonical_bytes_pack_as_their_values() -> None:
    """Bytes the values do not keep (padding, spare bits, name tail) pack as zeros, as before."""
    arch = example_system("x86").arch
    cell = CellConfig(
        name="pads",
        arch=arch,
        cpus=frozenset({1}),
        mem_regions=(MemoryRegion(0x1000, 0, 0x1000),),
        cache_regions=(CacheRegion(0, 4),),
        pci_devices=(PciDevice(example_cells("x86")["x86-demo"].pci_devices[0].type, 0x10),),
    )
    clean = cell.to_bytes()
    cache_pad = 132 + 8 + 32 + 9  # descriptor, CPU set, one region, then the pad byte
    msi_byte = 132 + 8 + 32 + 12 + 35  # ... one cache entry, then the PCI device's MSI byte
    pokes = {
        "name tail": (8 + 6, 0x41),  # a byte after the name's NUL
        "cache pad": (cache_pad, 0xFF),
        "msi spare bits": (msi_byte, 0xFC),
    }
    for what, (offset, value) in pokes.items():
        dirty = bytearray(clean)
        dirty[offset] = value
        parsed = load_config(bytes(dirty))
        assert parsed == cell, what
        assert parsed.to_bytes() == clean, what
    system = example_system("x86")
    clean = system.to_bytes()
    dirty = bytearray(clean)
    dirty[76 + 12 + 8 * 28 + 3] = 0x7F  # the x86 arch info's pad byte
    parsed = load_config(bytes(dirty))
    assert parsed == system
    assert parsed.to_bytes() == clean


# -- the codec's generated builders ------------------------------------------------------------

_GENERATED_MARKER = (
    "# -- generated from ORDERS below this line: do not edit by hand "
    "------------------------------\n"
)


def builders_source(orders: dict[str, tuple[type, str]]) -> str:
    """Write the source of :mod:`jailhouse.config._builders` that follows its marker line.

    Raises:
        AssertionError: An order does not name each field of its record exactly once.
    """
    functions: list[str] = ["", "_new = object.__new__", ""]
    setters: list[str] = []
    for name, (cls, order) in orders.items():
        fields = order.split()
        assert sorted(fields) == sorted(cls._fields), f"{name}: {order!r} vs {cls._fields}"
        slots = dict(zip(cls._fields, cls._slot_names, strict=True))
        noqa = "  # noqa: PLR0917 - the layout's fields, positionally" if len(fields) > 5 else ""
        functions += ["", f"def {name}({noqa}"]
        functions += [f"    {field}: object," for field in fields]
        functions += [
            f") -> {cls.__name__}:",
            (
                f'    """Build a :class:`~jailhouse.config.model.{cls.__name__}` from its '
                'fields in layout order."""'
            ),
            f"    obj = _new({cls.__name__})",
        ]
        prefix = f"_set_{name[len('new_') :]}"
        functions += [f"    {prefix}_{field}(obj, {field})" for field in fields]
        functions += ["    return obj", ""]
        setters += [
            f'{prefix}_{field} = vars({cls.__name__})["{slots[field]}"].__set__' for field in fields
        ]
    return "\n".join([*functions, "", *setters]) + "\n"


def test_builders_module_is_generated_from_its_orders() -> None:
    """The builders below the marker are what ``ORDERS`` and the records' slots give.

    With ``JAILHOUSE_REGENERATE=1`` the test rewrites the file instead of failing.
    """
    path = Path(_builders.__file__)
    text = path.read_text(encoding="utf-8")
    head, marker, _ = text.partition(_GENERATED_MARKER)
    assert marker, "the marker line is missing"
    expected = head + marker + builders_source(_builders.ORDERS)
    if os.environ.get("JAILHOUSE_REGENERATE") == "1":
        path.write_text(expected, encoding="utf-8")
    assert text == expected or os.environ.get("JAILHOUSE_REGENERATE") == "1"


@pytest.mark.parametrize("name", sorted(_builders.ORDERS))
def test_each_builder_builds_what_the_constructor_builds(name: str) -> None:
    """A builder stores each field it is given in that field's slot, none swapped."""
    cls, order = _builders.ORDERS[name]
    fields = order.split()
    values = {field: object() for field in fields}  # distinct markers: a swap shows
    built = getattr(_builders, name)(*(values[field] for field in fields))
    assert type(built) is cls
    for field in fields:
        slot = dict(zip(cls._fields, cls._slot_names, strict=True))[field]
        assert object.__getattribute__(built, slot) is values[field], field
