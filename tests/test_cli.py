"""Tests of ``jhctl`` in-process (``main()``) and as ``python -m jailhouse``, on simulated hosts."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from jailhouse.cli import build_parser, main
from jailhouse.cli._base import Progress, cell_ref, parse_address, parse_image_spec
from jailhouse.cli._device import read_images
from jailhouse.config.model import CellConfig, MemFlag, format_cpus, load_config
from jailhouse.examples import example_cells, example_files, example_system
from jailhouse.sim import SimHost

# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one ``jhctl`` run left behind."""

    code: int
    out: str
    err: str

    def json(self) -> object:
        """Parse stdout as the one JSON document it must be."""
        return json.loads(self.out)


def jhctl(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """Run ``jhctl argv`` in-process and capture its output."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Run(code, out, err)


def jhctl_process(*argv: str, env: dict[str, str] | None = None) -> Run:
    """Run ``python -m jailhouse argv`` as a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "jailhouse", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Board:
    """A simulated arm64 host and the example configs written next to it."""

    uri: str
    root: Path
    system: Path
    demo: Path
    linux: Path

    @property
    def sim(self) -> SimHost:
        """The simulated host, for scripting inmates and looking at its state."""
        return SimHost(self.root)


@pytest.fixture
def board(tmp_path: Path) -> Board:
    """Write the arm64 example configs and name a fresh simulated host for them."""
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, blob in example_files("arm64").items():
        (configs / name).write_bytes(blob)
    root = tmp_path / "host"
    return Board(
        uri=f"sim://{root}?arch=arm64&cpus=4",
        root=root,
        system=configs / "arm64-root.cell",
        demo=configs / "arm64-demo.cell",
        linux=configs / "arm64-linux.cell",
    )


def one_line(text: str) -> str:
    """Assert that ``text`` is exactly one line and return it."""
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def leaf_verbs(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """List every runnable verb path of a parser, such as ``("cell", "list")``."""
    out: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = leaf_verbs(sub, (*prefix, name))
                out.extend(nested or [(*prefix, name)])
    return out


# -- framework ----------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` prints the package version and exits 0."""
    import jailhouse

    run = jhctl(capsys, "--version")
    assert run.code == 0
    assert jailhouse.__version__ in run.out


def test_every_verb_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """Every verb answers ``--help`` with exit 0 and at least one example command line."""
    verbs = leaf_verbs(build_parser())
    assert {("enable",), ("cell", "list"), ("config", "check"), ("demo",)} <= set(verbs)
    for path in verbs:
        run = jhctl(capsys, *path, "--help")
        assert run.code == 0, path
        examples = run.out.split("examples:", 1)[1]
        assert f"jhctl {' '.join(path)}" in examples, path


def test_import_does_not_load_heavy_modules() -> None:
    """``import jailhouse.cli`` and ``jhctl --version`` load neither lxml nor the cffi shim."""
    script = (
        "import json, sys, io, contextlib\n"
        "import jailhouse.cli\n"
        "after_import = sorted(sys.modules)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    jailhouse.cli.main(['--version'])\n"
        "print(json.dumps([after_import, sorted(sys.modules)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    for loaded in json.loads(proc.stdout):
        heavy = [
            m
            for m in loaded
            if m.split(".")[0] in {"lxml", "cffi", "_cffi_backend"}
            or m
            in {
                "jailhouse._native",
                "jailhouse._ffi",
                "jailhouse._abi",
                "jailhouse.hypervisor",
                "jailhouse.sim",
                "jailhouse.domxml",
            }
        ]
        assert heavy == []


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing argument exits 2 with one stderr line that points at --help."""
    run = jhctl(capsys, "cell", "load")
    assert run.code == 2
    assert run.out == ""
    line = one_line(run.err)
    assert "IMAGE" in line
    assert "jhctl cell load --help" in line


def test_unknown_verb_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown verb is a usage error."""
    run = jhctl(capsys, "frobnicate")
    assert run.code == 2
    assert "frobnicate" in one_line(run.err)


def test_json_option_is_accepted_before_and_after_the_verb(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """``--json`` and ``-c`` work before the verb and after it."""
    before = jhctl(capsys, "--json", "config", "show", str(board.demo))
    after = jhctl(capsys, "config", "show", str(board.demo), "--json")
    assert before.code == after.code == 0
    assert before.json() == after.json()
    listed = jhctl(capsys, "cell", "list", "-c", board.uri, "--json")
    assert listed.code == 0
    assert listed.json() == []


# -- argument helpers ---------------------------------------------------------------------------


def test_parse_address_accepts_hex_and_decimal() -> None:
    """Addresses are hex with 0x or decimal, leading zeros included."""
    assert parse_address("0x7fa00000") == 0x7FA00000
    assert parse_address("4096") == 4096
    assert parse_address("010") == 10
    assert parse_address("0") == 0
    for bad in ("-1", "zz", "0x", str(1 << 64)):
        with pytest.raises(ValueError, match="address"):
            parse_address(bad)


def test_parse_image_spec(tmp_path: Path) -> None:
    """IMAGE@ADDR splits at the last @; a file name with @ is kept whole when it exists."""
    assert parse_image_spec("a.bin") == (Path("a.bin"), 0)
    assert parse_image_spec("a.bin@0x100") == (Path("a.bin"), 0x100)
    assert parse_image_spec("dir@x/a.bin@256") == (Path("dir@x/a.bin"), 256)
    odd = tmp_path / "v1@final"
    odd.write_bytes(b"x")
    assert parse_image_spec(str(odd)) == (odd, 0)
    from jailhouse.cli._base import CliError

    with pytest.raises(CliError, match="not a number"):
        parse_image_spec("a.bin@final")


def test_cell_ref() -> None:
    """All-digit arguments are ids unless --name says otherwise."""
    assert cell_ref("3") == 3
    assert cell_ref("demo") == "demo"
    assert cell_ref("3", by_name=True) == "3"


def test_progress_draws_only_when_enabled(tmp_path: Path) -> None:
    """The progress bar reaches 100% and ends its line when enabled, and prints nothing when not."""
    image = tmp_path / "big.bin"
    image.write_bytes(bytes(3 << 20))
    shown = io.StringIO()
    data = read_images([(image, 0)], Progress("reading", 3 << 20, stream=shown, enabled=True))
    assert len(data[0][0]) == 3 << 20
    text = shown.getvalue()
    assert "100%" in text
    assert "3.0/3.0 MiB" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    read_images([(image, 0)], Progress("reading", 3 << 20, stream=quiet, enabled=False))
    assert quiet.getvalue() == ""


# -- config verbs -------------------------------------------------------------------------------


def test_config_show_cell_text(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """``config show`` lists the cell's CPUs and each memory region with its flags."""
    cell = load_config(board.demo)
    assert isinstance(cell, CellConfig)
    run = jhctl(capsys, "config", "show", str(board.demo))
    assert run.code == 0
    assert f"CPUs:               {format_cpus(cell.cpus)}" in run.out
    assert f"memory regions ({len(cell.mem_regions)}):" in run.out
    loadable = next(r for r in cell.mem_regions if MemFlag.LOADABLE in r.flags)
    line = next(
        line for line in run.out.splitlines() if f"virt {loadable.virt_start:#012x}" in line
    )
    assert f"phys {loadable.phys_start:#012x}" in line
    assert "LOADABLE" in line


def test_config_show_json_dumps_every_field(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """``config show --json`` gives integers for addresses and flag names beside flag words."""
    cell = load_config(board.demo)
    assert isinstance(cell, CellConfig)
    doc = jhctl(capsys, "config", "show", "--json", str(board.demo)).json()
    assert isinstance(doc, dict)
    assert doc["kind"] == "cell"
    assert doc["size"] == cell.size == board.demo.stat().st_size
    assert doc["name"] == cell.name
    assert doc["arch"] == "ARM64"
    assert doc["cpus"] == sorted(cell.cpus)
    assert len(doc["mem_regions"]) == len(cell.mem_regions)
    for got, region in zip(doc["mem_regions"], cell.mem_regions, strict=True):
        assert (got["phys_start"], got["virt_start"], got["size"], got["flags"]) == (
            region.phys_start,
            region.virt_start,
            region.size,
            int(region.flags),
        )
        assert got["flags_names"] == [f.name for f in MemFlag if f in region.flags]


def test_config_show_system(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """``config show`` of a system config shows the hypervisor memory and the root cell."""
    system = example_system("arm64")
    run = jhctl(capsys, "config", "show", str(board.system))
    assert run.code == 0
    hv = system.hypervisor_memory
    assert f"hypervisor memory:  {hv.phys_start:#x}+{hv.size:#x}" in run.out
    assert f"root cell {system.root_cell.name!r}:" in run.out
    assert "GICv3" in run.out
    doc = jhctl(capsys, "config", "show", "--json", str(board.system)).json()
    assert isinstance(doc, dict)
    assert doc["kind"] == "system"
    assert doc["root_cell"]["name"] == system.root_cell.name
    assert doc["hypervisor_memory"]["phys_start"] == hv.phys_start


def test_config_show_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing file exits 2 naming it, with stdout empty even with --json."""
    missing = tmp_path / "nope.cell"
    run = jhctl(capsys, "config", "show", "--json", str(missing))
    assert run.code == 2
    assert run.out == ""
    assert str(missing) in one_line(run.err)


def test_config_show_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file that is not a config exits 2, naming the file and the field."""
    bad = tmp_path / "bad.cell"
    bad.write_bytes(b"JHCLL\x02\x0d\x00" + bytes(20))
    run = jhctl(capsys, "config", "show", str(bad))
    assert run.code == 2
    line = one_line(run.err)
    assert str(bad) in line
    assert "not a valid config" in line


def test_config_check_clean_set(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """The example set checks clean and exits 0."""
    run = jhctl(capsys, "config", "check", str(board.system), str(board.demo), str(board.linux))
    assert run.code == 0
    assert "no findings" in run.out
    doc = jhctl(capsys, "config", "check", "--json", str(board.system), str(board.demo)).json()
    assert doc == {
        "system": str(board.system),
        "cells": [str(board.demo)],
        "errors": 0,
        "warnings": 0,
        "findings": [],
    }


def test_config_check_error_exits_1(
    capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path
) -> None:
    """A cell on a CPU the root cell does not own is an error line with its field path; exit 1."""
    demo = example_cells("arm64")["arm64-demo"].replace(cpus=frozenset({6}))
    bad = tmp_path / "foreign.cell"
    bad.write_bytes(demo.to_bytes())
    run = jhctl(capsys, "config", "check", str(board.system), str(bad))
    assert run.code == 1
    finding = next(line for line in run.out.splitlines() if line.startswith("error:"))
    assert "cell 'arm64-demo': cpus = '6'" in finding
    doc = jhctl(capsys, "config", "check", "--json", str(board.system), str(bad)).json()
    assert isinstance(doc, dict)
    assert doc["errors"] >= 1
    errors = [f for f in doc["findings"] if f["severity"] == "error"]
    assert {"cell": "arm64-demo", "field": "cpus", "value": "6"}.items() <= errors[0].items()


def test_config_check_warnings_alone_exit_0(
    capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path
) -> None:
    """Bytes after the arrays are only a warning, so the check still exits 0 and says why."""
    padded = tmp_path / "padded.cell"
    padded.write_bytes(board.demo.read_bytes() + bytes(8))
    run = jhctl(capsys, "config", "check", str(board.system), str(padded))
    assert run.code == 0
    assert any(line.startswith("warning:") and "trailing" in line for line in run.out.splitlines())
    assert "warnings alone exit 0" in run.out


def test_config_check_wants_the_system_first(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """A cell config where the system config belongs is an input error."""
    run = jhctl(capsys, "config", "check", str(board.demo))
    assert run.code == 2
    assert "not a system config" in one_line(run.err)
    run = jhctl(capsys, "config", "check", str(board.system), str(board.system))
    assert run.code == 2
    assert "is a system config" in one_line(run.err)


def test_xml_round_trip(capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path) -> None:
    """``config to-xml`` then ``config from-xml`` gives back a cell config that checks clean."""
    run = jhctl(capsys, "config", "to-xml", str(board.demo))
    assert run.code == 0
    assert run.out.lstrip().startswith("<domain")
    xml = tmp_path / "demo.xml"
    xml.write_text(run.out, encoding="utf-8")
    out = tmp_path / "back.cell"
    run = jhctl(
        capsys, "config", "from-xml", str(xml), "--system", str(board.system), "-o", str(out)
    )
    assert run.code == 0, run.err
    assert str(out) in run.out
    back = load_config(out)
    assert isinstance(back, CellConfig)
    assert back.name == "arm64-demo"
    assert jhctl(capsys, "config", "check", str(board.system), str(out)).code == 0
    doc = jhctl(capsys, "config", "to-xml", "--json", str(board.demo)).json()
    assert isinstance(doc, dict)
    assert doc["name"] == "arm64-demo"
    assert doc["xml"].lstrip().startswith("<domain")


def test_from_xml_bad_xml(capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path) -> None:
    """XML that does not parse exits 2 and writes no output file."""
    xml = tmp_path / "bad.xml"
    xml.write_text("<domain type='jailhouse'><name>x</name>", encoding="utf-8")
    out = tmp_path / "out.cell"
    run = jhctl(
        capsys, "config", "from-xml", str(xml), "--system", str(board.system), "-o", str(out)
    )
    assert run.code == 2
    one_line(run.err)
    assert not out.exists()
    assert list(tmp_path.glob(".out.cell*")) == []


def test_from_xml_notes_and_strict(
    capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path
) -> None:
    """What the translation ignores is a note on stderr (and in --json); --strict refuses it."""
    xml = jhctl(capsys, "config", "to-xml", str(board.demo)).out
    disk = "<disk type='file' device='disk'><source file='/x.img'/><target dev='vda'/></disk>"
    domain = tmp_path / "disk.xml"
    domain.write_text(xml.replace("<devices>", "<devices>" + disk, 1), encoding="utf-8")
    out = tmp_path / "disk.cell"
    args = ("config", "from-xml", str(domain), "--system", str(board.system), "-o", str(out))
    run = jhctl(capsys, *args)
    assert run.code == 0
    assert one_line(run.err).startswith("note: /domain/devices/disk")
    doc = jhctl(capsys, "--json", *args).json()
    assert isinstance(doc, dict)
    assert [note.split(":")[0] for note in doc["notes"]] == ["/domain/devices/disk"]
    out.unlink()
    run = jhctl(capsys, *args, "--strict")
    assert run.code == 2
    assert "/domain/devices/disk" in one_line(run.err)
    assert not out.exists()


def test_from_xml_interrupted_exits_130(
    capsys: pytest.CaptureFixture[str],
    board: Board,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C while reading the XML from stdin exits 130 without a message."""

    class InterruptedStdin(io.StringIO):
        def read(self, _size: int | None = -1) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", InterruptedStdin())
    run = jhctl(
        capsys, "config", "from-xml", "-", "--system", str(board.system), "-o", str(tmp_path / "o")
    )
    assert run.code == 130
    assert run.err == ""


def test_debug_adds_a_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Errors print a traceback only with --debug, and still end with the one-line message."""
    missing = str(tmp_path / "gone.cell")
    quiet = jhctl(capsys, "config", "show", missing)
    assert "Traceback" not in quiet.err
    loud = jhctl(capsys, "--debug", "config", "show", missing)
    assert loud.code == 2
    assert "Traceback" in loud.err
    assert loud.err.splitlines()[-1] == quiet.err.strip()


# -- device verbs on a simulated host -------------------------------------------------------------


def test_missing_device_suggests_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    """Without the device node, every device verb exits 2 with one line suggesting sim://."""
    for verb in (("cell", "list"), ("status",), ("enable", "x.cell"), ("console",)):
        run = jhctl(
            capsys, "-c", "jailhouse:///system?device=/nonexistent/jailhouse", "--json", *verb
        )
        assert run.code == 2, verb
        assert run.out == ""
        line = one_line(run.err)
        assert "jailhouse driver is not loaded" in line or "x.cell" in line
        if verb != ("enable", "x.cell"):
            assert "sim:///" in line


def test_bad_uri_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A URI with an unknown scheme is an input error."""
    run = jhctl(capsys, "-c", "qemu:///system", "cell", "list")
    assert run.code == 2
    assert "qemu" in one_line(run.err)


def test_uri_from_environment(
    capsys: pytest.CaptureFixture[str], board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$JAILHOUSE_URI`` names the host when -c is not given; -c wins over it."""
    monkeypatch.setenv("JAILHOUSE_URI", board.uri)
    assert jhctl(capsys, "enable", str(board.system)).code == 0
    doc = jhctl(capsys, "status", "--json").json()
    assert isinstance(doc, dict)
    assert doc["enabled"] is True
    run = jhctl(capsys, "-c", "jailhouse:///system?device=/nonexistent", "status")
    assert run.code == 2


def test_lifecycle_json(capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path) -> None:
    """Every device verb works on a simulated host with --json; the states follow the driver's."""
    c = ("-c", board.uri, "--json")
    assert jhctl(capsys, *c, "enable", str(board.system)).json() == {
        "enabled": True,
        "system": "arm64-root",
        "arch": "ARM64",
    }
    created = jhctl(capsys, *c, "cell", "create", str(board.demo)).json()
    assert created == {"id": 1, "name": "arm64-demo"}
    listed = jhctl(capsys, *c, "cell", "list").json()
    assert listed == [
        {
            "id": 0,
            "name": "arm64-root",
            "state": "running",
            "cpus_assigned": [0, 1, 2],
            "cpus_failed": [],
        },
        {
            "id": 1,
            "name": "arm64-demo",
            "state": "shut down",
            "cpus_assigned": [3],
            "cpus_failed": [],
        },
    ]
    image = tmp_path / "inmate.bin"
    image.write_bytes(bytes(range(16)))
    loaded = jhctl(
        capsys, *c, "cell", "load", "arm64-demo", f"{image}@0x100", f"{image}@512"
    ).json()
    assert loaded == {
        "id": 1,
        "name": "arm64-demo",
        "images": [
            {"file": str(image), "address": 0x100, "size": 16},
            {"file": str(image), "address": 512, "size": 16},
        ],
    }
    assert board.sim.snapshot().cell("arm64-demo").images == ((0x100, 16), (512, 16))
    started = jhctl(capsys, *c, "cell", "start", "1").json()
    assert started == {"id": 1, "name": "arm64-demo", "action": "start", "state": "running"}
    stats = jhctl(capsys, *c, "cell", "stats", "arm64-demo").json()
    assert isinstance(stats, dict)
    assert stats["cpus_assigned"] == [3]
    assert set(stats["per_cpu"]) == {"3"}
    assert stats["statistics"]["total"] == stats["per_cpu"]["3"]["total"]
    status = jhctl(capsys, *c, "status").json()
    assert isinstance(status, dict)
    assert status["enabled"] is True
    assert status["cells"] == 2
    assert 0 < status["mem_pool_used"] <= status["mem_pool_size"]
    down = jhctl(capsys, *c, "cell", "shutdown", "arm64-demo").json()
    assert down == {"id": 1, "name": "arm64-demo", "action": "shutdown", "state": "shut down"}
    gone = jhctl(capsys, *c, "cell", "destroy", "arm64-demo").json()
    assert gone == {"id": 1, "name": "arm64-demo", "action": "destroy", "state": None}
    assert [cell["name"] for cell in jhctl(capsys, *c, "cell", "list").json()] == ["arm64-root"]
    assert jhctl(capsys, *c, "disable").json() == {"enabled": False}
    assert jhctl(capsys, *c, "cell", "list").json() == []


def test_cell_list_table_has_upstream_columns(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """``cell list`` prints upstream's headings and column widths (%-8s%-24s%-18s%-24s%-24s)."""
    jhctl(capsys, "-c", board.uri, "enable", str(board.system))
    jhctl(capsys, "-c", board.uri, "cell", "create", str(board.demo))
    run = jhctl(capsys, "-c", board.uri, "cell", "list")
    assert run.code == 0
    header, root, demo = run.out.splitlines()
    assert header == f"{'ID':<8}{'Name':<24}{'State':<18}{'Assigned CPUs':<24}Failed CPUs"
    assert root == f"{'0':<8}{'arm64-root':<24}{'running':<18}0-2"
    assert demo == f"{'1':<8}{'arm64-demo':<24}{'shut down':<18}3"


_LOADED_CONFIG_MODULES = """
import sys
from jailhouse.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.startswith("jailhouse.config."))
print(" ".join(loaded), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_cell_list_builds_no_config_model(
    capsys: pytest.CaptureFixture[str], board: Board, json_flag: list[str]
) -> None:
    """A cold ``cell list``, as a table or JSON, imports neither the config model nor the codec."""
    jhctl(capsys, "-c", board.uri, "enable", str(board.system))
    jhctl(capsys, "-c", board.uri, "cell", "create", str(board.demo))
    run = subprocess.run(
        [sys.executable, "-c", _LOADED_CONFIG_MODULES, "-c", board.uri, *json_flag, "cell", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "arm64-demo" in run.stdout
    assert run.stderr.split() == ["jailhouse.config._format", "jailhouse.config.flags"]


def test_refused_operations_exit_1(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """What the driver refuses exits 1 with one line naming the operation and what to do."""
    c = ("-c", board.uri)
    run = jhctl(capsys, *c, "cell", "create", str(board.demo))
    assert run.code == 1
    assert "enable the hypervisor first" in one_line(run.err)
    jhctl(capsys, *c, "enable", str(board.system))
    run = jhctl(capsys, *c, "enable", str(board.system))
    assert run.code == 1
    assert "EBUSY" in one_line(run.err)
    jhctl(capsys, *c, "cell", "create", str(board.demo))
    run = jhctl(capsys, *c, "--json", "cell", "create", str(board.demo))
    assert run.code == 1
    assert run.out == ""
    assert "EEXIST" in one_line(run.err)
    run = jhctl(capsys, *c, "cell", "start", "no-such-cell")
    assert run.code == 1
    assert "no-such-cell" in one_line(run.err)


def test_cell_config_with_foreign_arch_exits_2(
    capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path
) -> None:
    """A cell config of another architecture is an input error, caught before the driver."""
    jhctl(capsys, "-c", board.uri, "enable", str(board.system))
    x86 = tmp_path / "x86-demo.cell"
    x86.write_bytes(example_files("x86")["x86-demo.cell"])
    run = jhctl(capsys, "-c", board.uri, "cell", "create", str(x86))
    assert run.code == 2
    assert "arch" in one_line(run.err)
    assert [c["name"] for c in jhctl(capsys, "-c", board.uri, "--json", "cell", "list").json()] == [
        "arm64-root"
    ]


def test_cell_named_by_digits(
    capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path
) -> None:
    """An all-digit argument is an id; --name makes it a name."""
    jhctl(capsys, "-c", board.uri, "enable", str(board.system))
    named = example_cells("arm64")["arm64-demo"].replace(name="42")
    path = tmp_path / "42.cell"
    path.write_bytes(named.to_bytes())
    assert jhctl(capsys, "-c", board.uri, "cell", "create", str(path)).code == 0
    assert jhctl(capsys, "-c", board.uri, "cell", "destroy", "42").code == 1
    run = jhctl(capsys, "-c", board.uri, "--json", "cell", "destroy", "--name", "42")
    assert run.code == 0
    assert run.json() == {"id": 1, "name": "42", "action": "destroy", "state": None}


def test_cell_load_input_errors(
    capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path
) -> None:
    """A bad address or a missing image exits 2 before anything is loaded."""
    c = ("-c", board.uri)
    jhctl(capsys, *c, "enable", str(board.system))
    jhctl(capsys, *c, "cell", "create", str(board.demo))
    image = tmp_path / "i.bin"
    image.write_bytes(b"\x00" * 8)
    run = jhctl(capsys, *c, "cell", "load", "arm64-demo", f"{image}@0xzz")
    assert run.code == 2
    assert "0xzz" in one_line(run.err)
    missing = tmp_path / "missing.bin"
    run = jhctl(capsys, *c, "cell", "load", "arm64-demo", str(image), str(missing))
    assert run.code == 2
    assert str(missing) in one_line(run.err)
    assert board.sim.snapshot().cell("arm64-demo").images == ()
    run = jhctl(capsys, *c, "cell", "load", "arm64-demo", f"{image}@0x7fff0000")
    assert run.code == 1  # the driver refuses an address outside the loadable memory
    assert "EINVAL" in one_line(run.err)


def test_console_shows_what_the_inmate_printed(
    capsys: pytest.CaptureFixture[str], board: Board, tmp_path: Path
) -> None:
    """``console`` prints the hypervisor console, and --json puts the text in one document."""
    c = ("-c", board.uri)
    jhctl(capsys, *c, "enable", str(board.system))
    jhctl(capsys, *c, "cell", "create", str(board.demo))
    board.sim.script_cell("arm64-demo", console=b"hello from the test inmate\n")
    image = tmp_path / "i.bin"
    image.write_bytes(b"\x00" * 8)
    jhctl(capsys, *c, "cell", "load", "arm64-demo", str(image))
    jhctl(capsys, *c, "cell", "start", "arm64-demo")
    run = jhctl(capsys, *c, "console")
    assert run.code == 0
    assert "hello from the test inmate\n" in run.out
    doc = jhctl(capsys, *c, "console", "--json").json()
    assert isinstance(doc, dict)
    assert "hello from the test inmate\n" in doc["text"]
    assert doc["missed_bytes"] == 0
    run = jhctl(capsys, *c, "console", "-f", "--json")
    assert run.code == 2


def test_cell_stats_refreshes(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """``cell stats`` prints a frame per refresh with a rate column; --once prints one without."""
    c = ("-c", board.uri)
    jhctl(capsys, *c, "enable", str(board.system))
    jhctl(capsys, *c, "cell", "create", str(board.demo))
    jhctl(capsys, *c, "cell", "start", "arm64-demo")
    run = jhctl(capsys, *c, "cell", "stats", "arm64-demo", "--count", "3", "--interval", "0")
    assert run.code == 0
    assert run.out.count("cell 'arm64-demo' (id 1): running, CPUs 3") == 3
    header = next(line for line in run.out.splitlines() if line.startswith("COUNTER"))
    assert header.split() == ["COUNTER", "TOTAL", "PER", "SEC", "cpu3"]
    once = jhctl(capsys, *c, "cell", "stats", "1", "--once")
    assert once.code == 0
    rows = once.out.splitlines()
    assert rows[2].split() == ["COUNTER", "TOTAL", "cpu3"]
    assert rows[3].split()[0] == "total"
    doc = jhctl(capsys, *c, "--json", "cell", "stats", "1").json()
    assert isinstance(doc, dict)
    assert rows[3].split()[1] == str(doc["statistics"]["total"])


def test_stats_of_unknown_cell(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """``cell stats`` of a cell that does not exist exits 1."""
    jhctl(capsys, "-c", board.uri, "enable", str(board.system))
    run = jhctl(capsys, "-c", board.uri, "cell", "stats", "7", "--once")
    assert run.code == 1
    assert "7" in one_line(run.err)


# -- as a subprocess ----------------------------------------------------------------------------


def test_subprocess_lifecycle(board: Board, tmp_path: Path) -> None:
    """``python -m jailhouse`` drives the host named by $JAILHOUSE_URI, one process per call."""
    env = {"JAILHOUSE_URI": board.uri}
    assert jhctl_process("enable", str(board.system), env=env).code == 0
    run = jhctl_process("--json", "cell", "create", str(board.demo), env=env)
    assert run.code == 0, run.err
    assert json.loads(run.out) == {"id": 1, "name": "arm64-demo"}
    image = tmp_path / "i.bin"
    image.write_bytes(b"\x01" * 8)
    assert jhctl_process("cell", "load", "arm64-demo", f"{image}@0", env=env).code == 0
    assert jhctl_process("cell", "start", "arm64-demo", env=env).code == 0
    run = jhctl_process("cell", "list", "--json", env=env)
    assert [(c["name"], c["state"]) for c in json.loads(run.out)] == [
        ("arm64-root", "running"),
        ("arm64-demo", "running"),
    ]
    run = jhctl_process("cell", "create", str(board.demo), env=env)
    assert run.code == 1
    assert "Traceback" not in run.err
    one_line(run.err)
    assert jhctl_process("disable", env=env).code == 0


def test_subprocess_errors() -> None:
    """As a process: the missing device exits 2, a usage error exits 2, each with one line."""
    run = jhctl_process("-c", "jailhouse:///system?device=/nonexistent", "cell", "list")
    assert run.code == 2
    assert run.out == ""
    assert "sim:///" in one_line(run.err)
    run = jhctl_process("cell", "start")
    assert run.code == 2
    one_line(run.err)


def test_console_follow_stops_cleanly_on_ctrl_c(board: Board) -> None:
    """``console -f`` prints what the inmate writes and exits 0 on SIGINT."""
    main(["-c", board.uri, "enable", str(board.system)])
    main(["-c", board.uri, "cell", "create", str(board.demo)])
    board.sim.script_cell("arm64-demo", console=b"greetings, follower\n")
    main(["-c", board.uri, "cell", "start", "arm64-demo"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "jailhouse", "-c", board.uri, "console", "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line == "greetings, follower\n":
            break
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert "greetings, follower\n" in seen
    assert proc.returncode == 0
    assert err == ""
    del rest


def test_cell_stats_stops_cleanly_on_ctrl_c(board: Board) -> None:
    """``cell stats`` keeps refreshing until SIGINT, then exits 0 without a traceback."""
    main(["-c", board.uri, "enable", str(board.system)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "jailhouse", "-c", board.uri, "cell", "stats", "0", "-i", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    frames = 0
    for line in proc.stdout:
        if line.startswith("cell 'arm64-root'"):
            frames += 1
            if frames == 2:
                break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert frames == 2
    assert proc.returncode == 0
    assert err == ""


def test_large_load_shows_progress_only_on_a_terminal(board: Board, tmp_path: Path) -> None:
    """Loading a 9 MiB image draws a progress bar on a terminal and nothing when piped."""
    import pty

    main(["-c", board.uri, "enable", str(board.system)])
    main(["-c", board.uri, "cell", "create", str(board.linux)])
    image = tmp_path / "kernel.bin"
    image.write_bytes(bytes(9 << 20))
    argv = [sys.executable, "-m", "jailhouse", "-c", board.uri, "cell", "load"]
    argv += ["arm64-linux", f"{image}@0x70000000"]
    piped = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    controller, terminal = pty.openpty()
    with subprocess.Popen(argv, stdout=terminal, stderr=terminal) as proc:
        os.close(terminal)
        chunks = []
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(controller)
    assert proc.returncode == 0
    shown = b"".join(chunks).decode()
    assert "reading images [" in shown
    assert "100% 9.0/9.0 MiB" in shown
    assert f"loaded {image} (9437184 bytes) at 0x70000000" in shown
    assert board.sim.snapshot().cell("arm64-linux").images == ((0x70000000, 9 << 20),)


# -- host-validate and demo ---------------------------------------------------------------------


def test_host_validate_on_an_empty_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """On a root with no device, host-validate reports FAIL and exits 1; --json lists the checks."""
    run = jhctl(capsys, "host-validate", "--root", str(tmp_path))
    assert run.code == 1
    device = next(line for line in run.out.splitlines() if line.split()[1:2] == ["device"])
    assert device.startswith("FAIL")
    doc = jhctl(capsys, "host-validate", "--root", str(tmp_path), "--json").json()
    assert isinstance(doc, dict)
    statuses = {check["name"]: check["status"] for check in doc["checks"]}
    assert statuses["device"] == "FAIL"
    assert doc["failed"] == sum(1 for s in statuses.values() if s == "FAIL")
    run = jhctl(capsys, "host-validate", "--root", str(tmp_path / "missing"))
    assert run.code == 2


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """``jhctl demo`` runs every step on a temporary simulated host, shows the greeting, exits 0."""
    run = jhctl(capsys, "demo")
    assert run.code == 0, run.err
    titles = [line for line in run.out.splitlines() if line.startswith("== ")]
    assert len(titles) == 10
    assert "Hello from arm64-demo" in run.out
    assert f"{'1':<8}{'arm64-demo':<24}{'running':<18}3" in run.out
    assert "<domain" in run.out
    lines = run.out.splitlines()
    directory = Path(lines[lines.index(next(x for x in lines if x.endswith("run in"))) + 1].strip())
    assert directory.name.startswith("jhctl-demo-")
    assert not directory.exists()


def test_demo_x86_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``jhctl demo --arch x86 --json`` prints one document with every step."""
    run = jhctl(capsys, "demo", "--arch", "x86", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert isinstance(doc, dict)
    assert doc["arch"] == "x86"
    assert [step["step"] for step in doc["steps"]] == list(range(1, 11))
    assert [(c["name"], c["state"]) for c in doc["cells_while_running"]] == [
        ("x86-root", "running"),
        ("x86-demo", "running"),
    ]
    assert doc["kept"] is False
    assert not Path(doc["directory"]).exists()
    console = next(step for step in doc["steps"] if step["command"] == "jhctl console")
    assert "Hello from x86-demo" in console["output"]


def test_demo_keep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``demo --keep DIR`` leaves host and configs for jhctl to use; a non-empty DIR is refused."""
    keep = tmp_path / "kept"
    assert jhctl(capsys, "demo", "--keep", str(keep)).code == 0
    uri = f"sim://{keep / 'host'}"
    run = jhctl(capsys, "-c", uri, "enable", str(keep / "arm64-root.cell"))
    assert run.code == 0, run.err
    assert jhctl(capsys, "-c", uri, "--json", "cell", "list").json()[0]["name"] == "arm64-root"
    again = jhctl(capsys, "demo", "--keep", str(keep))
    assert again.code == 2
    assert "not an empty directory" in one_line(again.err)


def test_demo_subprocess() -> None:
    """``python -m jailhouse demo`` works as a fresh process, as the README's main command."""
    run = jhctl_process("demo")
    assert run.code == 0, run.err
    assert "Hello from arm64-demo" in run.out
    assert run.err == ""


def test_selftest_on_a_simulated_host(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """``selftest`` passes on a fresh simulated host, agrees with the simulator, and disables it."""
    run = jhctl(
        capsys,
        "-c",
        board.uri,
        "selftest",
        str(board.system),
        str(board.demo),
        "--compare-sim",
        "--json",
    )
    assert run.code == 0, run.err
    doc = run.json()
    assert isinstance(doc, dict)
    assert all(step["passed"] for step in doc["steps"])
    assert doc["differences_from_sim"] == []
    assert jhctl(capsys, "-c", board.uri, "--json", "status").json()["enabled"] is False


def test_selftest_refuses_a_busy_host(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """``selftest`` on a hypervisor holding another cell exits 1 and changes nothing."""
    jhctl(capsys, "-c", board.uri, "enable", str(board.system))
    jhctl(capsys, "-c", board.uri, "cell", "create", str(board.linux))
    run = jhctl(capsys, "-c", board.uri, "selftest", str(board.system), str(board.demo))
    assert run.code == 1
    one_line(run.err)
    names = [c["name"] for c in jhctl(capsys, "-c", board.uri, "--json", "cell", "list").json()]
    assert names == ["arm64-root", "arm64-linux"]
