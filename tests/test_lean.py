"""The lean check reads what the codec reads and finds what the model's check finds.

``jhctl config check`` checks a clean set through :mod:`jailhouse.config._lean` (plain
records, no enum) and everything else through the model.  These tests hold the two to
each other on the example sets, on the configs of the rule tests, on drawn configs and on
damaged files: the lean reader refuses exactly the bytes the codec refuses, the rules give
the same findings on its records as on the model, and the CLI prints the same either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import cell_configs, mutations, system_configs
from test_validate import CELL_CASES, SYSTEM_CASES, x86_demo

import jailhouse
from jailhouse.cli import main
from jailhouse.config import _format, _lean, _rules
from jailhouse.config.codec import parse_cell, parse_system
from jailhouse.config.model import (
    ApicMode,
    Arch,
    CacheType,
    CellFlag,
    ConsoleType,
    IommuType,
    MemFlag,
    MemoryRegion,
    PciType,
    SystemFlag,
)
from jailhouse.config.validate import _Report, check_configs
from jailhouse.errors import ConfigError, InvalidConfigError
from jailhouse.examples import EXAMPLE_ARCHES, example_cells, example_system

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from jailhouse.config.model import CellConfig, SystemConfig


def _codes(enum_type: type[object]) -> frozenset[int]:
    return frozenset(int(member) for member in enum_type)  # type: ignore[attr-defined]


def test_plain_codes_are_the_enums_values() -> None:
    """Each code the rules compare with is the value its enum member has."""
    assert tuple(member.name for member in Arch) == _format.ARCH_MEMBERS
    assert (_format.ARCH_X86, _format.ARCH_ARM, _format.ARCH_ARM64) == (
        Arch.X86,
        Arch.ARM,
        Arch.ARM64,
    )
    for code in range(6):
        assert _format.arch_name(code) == Arch(code).name
    assert sum(_codes(CellFlag)) == _format.CELL_FLAGS_KNOWN
    assert _format.CELL_PASSIVE_COMMREG == CellFlag.PASSIVE_COMMREG
    assert sum(_codes(SystemFlag)) == _format.SYSTEM_FLAGS_KNOWN
    assert sum(_codes(MemFlag)) == _format.MEM_FLAGS_KNOWN
    bits = {
        _format.MEM_WRITE: MemFlag.WRITE,
        _format.MEM_IO: MemFlag.IO,
        _format.MEM_COMM_REGION: MemFlag.COMM_REGION,
        _format.MEM_LOADABLE: MemFlag.LOADABLE,
        _format.MEM_ROOTSHARED: MemFlag.ROOTSHARED,
        _format.MEM_IO_WIDTHS: MemFlag.IO_8 | MemFlag.IO_16 | MemFlag.IO_32 | MemFlag.IO_64,
    }
    assert all(code == member for code, member in bits.items())
    assert _codes(ConsoleType) == _format.CONSOLE_TYPES
    assert _codes(PciType) == _format.PCI_TYPES
    assert _codes(IommuType) == _format.IOMMU_TYPES
    assert _codes(ApicMode) == _format.APIC_MODES
    assert (_format.CACHE_L3, _format.PCI_IVSHMEM, _format.IOMMU_UNUSED) == (
        CacheType.L3,
        PciType.IVSHMEM,
        IommuType.UNUSED,
    )


# -- the differential --------------------------------------------------------------------------


def _model(data: bytes, *, system: bool) -> SystemConfig | CellConfig | None:
    """What the full path reads from a file in a system or a cell position, or None."""
    is_system = data[:5] == _format.SYSTEM_SIGNATURE  # as load_config dispatches
    if is_system != system:
        return None  # the CLI refuses a config of the other kind in this position
    try:
        return parse_system(data) if system else parse_cell(data)
    except InvalidConfigError:
        return None


def _lean_findings(system: _lean.LeanSystem, cells: list[_lean.LeanCell]) -> list[object]:
    """The findings of the rules on lean records, collected as the model's check does."""
    report = _Report(cell=system.root_cell.name)
    resources = _rules.system_resources(system)
    _rules.check_system(system, report, resources)
    _rules.check_cells(system, cells, report, resources, _rules.root_spans(system))
    return report.findings


def assert_same_reading(system_data: bytes, *cell_data: bytes) -> bool:
    """Assert the lean path reads and checks a set as the model does; return its verdict."""
    model_system = _model(system_data, system=True)
    lean_system = _lean.parse_system(system_data)
    assert (lean_system is None) == (model_system is None)
    model_cells = [_model(data, system=False) for data in cell_data]
    lean_cells = [_lean.parse_cell(data) for data in cell_data]
    for lean, model in zip(lean_cells, model_cells, strict=True):
        assert (lean is None) == (model is None)
    if lean_system is None or any(cell is None for cell in lean_cells):
        return False
    assert model_system is not None
    findings = check_configs(model_system, *model_cells)  # type: ignore[arg-type]
    lean = _lean_findings(lean_system, lean_cells)  # type: ignore[arg-type]
    assert lean == findings
    return not findings


def _check_files(tmp_path: Path, system: bytes, *cells: bytes) -> list[str] | None:
    paths = []
    for i, data in enumerate((system, *cells)):
        path = tmp_path / f"{i}.cell"
        path.write_bytes(data)
        paths.append(str(path))
    return _lean.check_set(paths[0], paths[1:])


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_example_sets_are_clean_on_both_paths(arch: str, tmp_path: Path) -> None:
    """The example sets read the same through both and are clean: the lean path vouches."""
    system = example_system(arch)  # type: ignore[arg-type]
    cells = list(example_cells(arch).values())  # type: ignore[arg-type]
    blobs = [cell.to_bytes() for cell in cells]
    assert assert_same_reading(system.to_bytes(), *blobs)
    names = _check_files(tmp_path, system.to_bytes(), *blobs)
    assert names == [system.root_cell.name, *(cell.name for cell in cells)]


def _packed(make: Callable[[], object]) -> bytes | None:
    try:
        return make().to_bytes()  # type: ignore[attr-defined,no-any-return]
    except ConfigError:
        return None  # a value that does not fit its field: no file holds it


def _packing(cases: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rule-test cases whose broken config packs into a file (``(id, make)``)."""
    return [(case[0], case[1]) for case in cases if _packed(case[1]) is not None]


_PACKED_CELL_CASES = _packing(CELL_CASES)
_PACKED_SYSTEM_CASES = _packing(SYSTEM_CASES)


def test_most_rule_cases_make_files() -> None:
    """The two tests below see most of the rule tests' broken configs (not just a few)."""
    assert len(_PACKED_CELL_CASES) >= len(CELL_CASES) - 5
    assert len(_PACKED_SYSTEM_CASES) >= len(SYSTEM_CASES) - 5


@pytest.mark.parametrize(
    "make", [case[1] for case in _PACKED_CELL_CASES], ids=[case[0] for case in _PACKED_CELL_CASES]
)
def test_each_cell_rule_fires_on_lean_records_too(make: Callable[[], CellConfig]) -> None:
    """Every rule test's broken cell gets the model's findings on the lean path as well."""
    cell = make().to_bytes()
    system = example_system("x86" if make().arch == Arch.X86 else "arm64")
    clean = assert_same_reading(system.to_bytes(), cell)
    # the file holds the broken value, unless packing loses it (a name cut at a NUL)
    if _model(cell, system=False) == make():
        assert not clean


@pytest.mark.parametrize(
    "make",
    [case[1] for case in _PACKED_SYSTEM_CASES],
    ids=[case[0] for case in _PACKED_SYSTEM_CASES],
)
def test_each_system_rule_fires_on_lean_records_too(make: Callable[[], SystemConfig]) -> None:
    """Every rule test's broken system gets the model's findings on the lean path as well."""
    system = make().to_bytes()
    clean = assert_same_reading(system)
    if _model(system, system=True) == make():
        assert not clean


def test_partitioning_findings_stop_the_lean_path(tmp_path: Path) -> None:
    """Set rules (a CPU two cells claim, shared RAM) are found on lean records too."""
    system = example_system("x86")
    demo = x86_demo()
    ram = demo.mem_regions[0]
    twin = demo.replace(
        name="twin",
        mem_regions=(MemoryRegion(ram.phys_start, 0x40000000, ram.size, ram.flags),),
    )
    assert not assert_same_reading(system.to_bytes(), demo.to_bytes(), twin.to_bytes())
    assert _check_files(tmp_path, system.to_bytes(), demo.to_bytes(), twin.to_bytes()) is None


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(system_configs(), st.lists(cell_configs(), max_size=2))
def test_drawn_sets_read_and_check_alike(system: SystemConfig, cells: list[CellConfig]) -> None:
    """On drawn configs, both read the same and the rules find the same."""
    assert_same_reading(system.to_bytes(), *(cell.to_bytes() for cell in cells))


_EXAMPLE_FILES = [
    example_system("x86").to_bytes(),
    example_system("arm64").to_bytes(),
    *(cell.to_bytes() for arch in EXAMPLE_ARCHES for cell in example_cells(arch).values()),
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_files_read_and_check_alike(data: st.DataObject) -> None:
    """On damaged files, the lean reader refuses what the codec refuses, and finds alike."""
    arch = data.draw(st.sampled_from(EXAMPLE_ARCHES))
    system = example_system(arch).to_bytes()
    cells = [cell.to_bytes() for cell in example_cells(arch).values()]
    target = data.draw(st.integers(0, len(cells)))
    files = [system, *cells]
    files[target] = data.draw(mutations(files[target]))
    if data.draw(st.booleans()):
        files.append(data.draw(st.sampled_from(_EXAMPLE_FILES)))  # perhaps the wrong kind
    assert_same_reading(*files)


# -- the command line --------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_clean_check_imports_no_model(tmp_path: Path) -> None:
    """A clean plain ``config check`` imports no enum, model, codec or validate module."""
    system = _write(tmp_path, "sys.cell", example_system("arm64").to_bytes())
    cells = [
        _write(tmp_path, f"{name}.cell", cell.to_bytes())
        for name, cell in example_cells("arm64").items()
    ]
    script = (
        "import sys\n"
        "from jailhouse.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "mods = ('enum', 'jailhouse.config.model', 'jailhouse.config.codec',"
        " 'jailhouse.config.validate', 'jailhouse.cli._base')\n"
        "print(sorted(m for m in mods if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    # -S: no site, whose editable-install finder imports enum itself
    env = {**os.environ, "PYTHONPATH": str(Path(jailhouse.__file__).parent.parent)}
    run = subprocess.run(
        [sys.executable, "-S", "-c", script, "config", "check", system, *cells],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == "[]"
    assert run.stdout.endswith(": no findings\n")


def _full_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], words: list[str]
) -> tuple[int, str, str]:
    """Run ``jhctl`` with the lean check turned off: what the model's path prints."""
    with monkeypatch.context() as patch:
        patch.setattr(_lean, "check_set", lambda *_: None)
        code = main(words)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "case",
    ["clean", "finding", "warning only", "wrong kind", "truncated", "missing", "directory"],
)
def test_both_paths_print_the_same(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever the set, ``config check`` prints and exits as the model's path does."""
    system = example_system("x86")
    demo = x86_demo()
    files = [_write(tmp_path, "sys.cell", system.to_bytes())]
    if case == "clean":
        files.append(_write(tmp_path, "demo.cell", demo.to_bytes()))
    elif case == "finding":
        files.append(_write(tmp_path, "a.cell", demo.to_bytes()))
        files.append(_write(tmp_path, "b.cell", demo.replace(name="b").to_bytes()))
    elif case == "warning only":
        files.append(_write(tmp_path, "w.cell", demo.replace(cpu_reset_address=0x1000).to_bytes()))
    elif case == "wrong kind":
        files.append(files[0])
    elif case == "truncated":
        files.append(_write(tmp_path, "t.cell", demo.to_bytes()[:200]))
    elif case == "missing":
        files.append(str(tmp_path / "nowhere.cell"))
    else:
        files.append(str(tmp_path))
    words = ["config", "check", *files]
    code = main(words)
    out, err = capsys.readouterr()
    assert (code, out, err) == _full_path(monkeypatch, capsys, words)
    if case == "clean":
        assert _lean.check_set(files[0], files[1:]) is not None  # the lean path printed it
        assert code == 0
        assert out == "config check: 'x86-root', 'x86-demo': no findings\n"
    elif case == "warning only":
        assert code == 0
        assert "1 warning(s) (warnings alone exit 0)" in out
    else:
        assert code != 0
