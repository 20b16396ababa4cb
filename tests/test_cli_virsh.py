"""jhctl's virsh verbs (define, start, list, dominfo, dumpxml, destroy, undefine, apply)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from jailhouse.cli import main
from jailhouse.examples import example_files
from jailhouse.sim import SimHost

if TYPE_CHECKING:
    from pathlib import Path

XML = """<domain type="jailhouse">
  <name>{name}</name>
  <memory unit="KiB">64</memory>
  <vcpu>1</vcpu>
  <os><type arch="aarch64">hvm</type>{os}</os>{extra}
</domain>
"""


@dataclass
class Run:
    """One jhctl run's exit code and output."""

    code: int
    out: str
    err: str

    def json(self) -> object:
        """Parse stdout as one JSON document."""
        return json.loads(self.out)


@dataclass
class Board:
    """An enabled simulated arm64 host, its system config file and a directory for XML."""

    uri: str
    root: Path
    system: Path
    xml_dir: Path

    def xml(self, name: str, *, os_extra: str = "", extra: str = "") -> Path:
        """Write a domain file and return its path."""
        path = self.xml_dir / f"{name}.xml"
        path.write_text(XML.format(name=name, os=os_extra, extra=extra), encoding="utf-8")
        return path

    @property
    def cells(self) -> dict[str, str]:
        """The non-root cells and their states."""
        return {c.name: c.state.text for c in SimHost(self.root).snapshot().cells[1:]}


@pytest.fixture
def board(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Board:
    """An enabled simulated host, with no system config recorded yet."""
    system = tmp_path / "arm64-root.cell"
    system.write_bytes(example_files("arm64")["arm64-root.cell"])
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    b = Board(f"sim://{tmp_path / 'host'}?arch=arm64&cpus=4", tmp_path / "host", system, xml_dir)
    assert jhctl(capsys, b, "enable", str(system)).code == 0
    return b


@pytest.fixture
def defined(board: Board, capsys: pytest.CaptureFixture[str]) -> Board:
    """The board with domain 'a' defined (and the system config recorded)."""
    run = jhctl(capsys, board, "define", str(board.xml("a")), "--system", str(board.system))
    assert run.code == 0, run.err
    return board


def jhctl(capsys: pytest.CaptureFixture[str], board: Board, *argv: str) -> Run:
    """Run jhctl in-process against the board's host."""
    code = main(["-c", board.uri, *argv])
    out, err = capsys.readouterr()
    return Run(code, out, err)


def one_line(text: str) -> str:
    """Assert that ``text`` is one line and return it."""
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- define -------------------------------------------------------------------------------


def test_define_needs_the_system_once(board: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a recorded system config, define exits 2 asking for --system; then it works."""
    path = str(board.xml("a"))
    run = jhctl(capsys, board, "define", path)
    assert run.code == 2
    assert "give --system SYSTEM.cell" in one_line(run.err)
    run = jhctl(capsys, board, "define", path, "--system", str(board.system))
    assert run.code == 0
    assert run.out.startswith("Domain 'a' defined from ")
    assert jhctl(capsys, board, "define", str(board.xml("b"))).code == 0


def test_define_json(board: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """With --json, define prints the name, UUID, size and translation notes."""
    path = board.xml("n", extra="\n  <numatune><memory mode='strict' nodeset='0'/></numatune>")
    run = jhctl(capsys, board, "define", str(path), "--system", str(board.system), "--json")
    assert run.code == 0
    doc = run.json()
    assert isinstance(doc, dict)
    assert (doc["name"], doc["vcpus"], doc["memory_kib"]) == ("n", 1, 64)
    assert len(doc["uuid"]) == 36
    assert any("numatune" in note for note in doc["notes"])
    assert run.err == ""


def test_define_errors(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """A duplicate exits 1, bad XML and a non-XML file exit 2, each with one stderr line."""
    run = jhctl(capsys, defined, "define", str(defined.xml("a")))
    assert run.code == 1
    assert "operation failed: domain 'a' already exists with uuid" in one_line(run.err)
    broken = defined.xml_dir / "broken.xml"
    broken.write_text("<domain", encoding="utf-8")
    run = jhctl(capsys, defined, "define", str(broken))
    assert run.code == 2
    one_line(run.err)
    run = jhctl(capsys, defined, "define", str(defined.system))
    assert run.code == 2
    assert "not UTF-8" in one_line(run.err)
    run = jhctl(capsys, defined, "define", str(defined.xml_dir / "missing.xml"))
    assert run.code == 2


# -- lifecycle ----------------------------------------------------------------------------


def test_lifecycle(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """Start, list, shutdown, destroy and undefine show the states virsh would."""
    run = jhctl(capsys, defined, "list")
    assert run.out.splitlines()[0].split() == ["Id", "Name", "State"]
    assert len(run.out.splitlines()) == 2
    run = jhctl(capsys, defined, "list", "--all")
    assert run.out.splitlines()[2].split() == ["-", "a", "shut", "off"]

    run = jhctl(capsys, defined, "start", "a")
    assert (run.code, run.out) == (0, "Domain 'a' started, id 1\n")
    assert defined.cells == {"a": "running"}
    assert jhctl(capsys, defined, "list").out.splitlines()[2].split() == ["1", "a", "running"]

    run = jhctl(capsys, defined, "shutdown", "a")
    assert run.code == 0
    assert "keeps its CPUs" in run.out
    assert defined.cells == {"a": "shut down"}
    assert jhctl(capsys, defined, "list").out.splitlines()[2].split() == ["1", "a", "paused"]

    run = jhctl(capsys, defined, "destroy", "a", "--json")
    assert run.json() == {"name": "a", "id": None, "state": "shut off", "reason": "shutdown"}
    assert defined.cells == {}

    run = jhctl(capsys, defined, "undefine", "a")
    assert (run.code, run.out) == (0, "Domain 'a' has been undefined\n")
    assert jhctl(capsys, defined, "list", "--all", "--json").json() == []


def test_start_paused_and_again(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """Starting with --paused loads without starting; starting a running domain exits 1."""
    run = jhctl(capsys, defined, "start", "a", "--paused", "--json")
    assert run.json() == {"name": "a", "id": 1, "state": "paused", "reason": "user"}
    assert defined.cells == {"a": "shut down"}
    assert jhctl(capsys, defined, "start", "a").code == 0
    run = jhctl(capsys, defined, "start", "a")
    assert run.code == 1
    assert one_line(run.err) == (
        "jhctl: error: Requested operation is not valid: domain is already running"
    )


def test_undefine_running_domain(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """Undefining a running domain says it keeps running; destroying it then removes it."""
    jhctl(capsys, defined, "start", "a")
    run = jhctl(capsys, defined, "undefine", "a")
    assert "keeps running as a transient domain" in run.out
    rows = jhctl(capsys, defined, "list", "--json").json()
    assert isinstance(rows, list)
    assert [(r["name"], r["persistent"]) for r in rows] == [("a", False)]
    run = jhctl(capsys, defined, "destroy", "a", "--json")
    assert run.json() == {"name": "a", "id": None, "state": "gone", "reason": "destroyed"}


def test_domains_by_id_uuid_and_name(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """A domain is found by its cell id, its UUID (any case) or its name."""
    jhctl(capsys, defined, "start", "a")
    info = jhctl(capsys, defined, "dominfo", "1", "--json").json()
    assert isinstance(info, dict)
    uuid = info["uuid"]
    for ref in (uuid, uuid.upper(), uuid.replace("-", ""), "a"):
        assert jhctl(capsys, defined, "dominfo", ref, "--json").json() == info
    run = jhctl(capsys, defined, "dominfo", "nosuch")
    assert run.code == 1
    assert one_line(run.err) == (
        "jhctl: error: Domain not found: no domain with matching name 'nosuch'"
    )


def test_dominfo(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """The domain info shows virsh's fields plus the cell's CPUs and boot images."""
    jhctl(capsys, defined, "start", "a")
    text = jhctl(capsys, defined, "dominfo", "a").out
    fields = dict(line.split(":", 1) for line in text.splitlines())
    assert {k: v.strip() for k, v in fields.items()} | {"UUID": "-"} == {
        "Id": "1",
        "Name": "a",
        "UUID": "-",
        "OS Type": "hvm",
        "State": "running (booted)",
        "CPU(s)": "1",
        "Max memory": "64 KiB",
        "Used memory": "64 KiB",
        "Persistent": "yes",
        "Autostart": "disable",
        "Cell CPUs": "3",
        "Boot": "park-loop inmate",
    }


def test_dumpxml_round_trip(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """The dumped XML defines the same domain again."""
    xml = jhctl(capsys, defined, "dumpxml", "a").out
    assert xml.startswith('<domain type="jailhouse">')
    path = defined.xml_dir / "dumped.xml"
    path.write_text(xml, encoding="utf-8")
    assert jhctl(capsys, defined, "define", str(path)).code == 0
    assert jhctl(capsys, defined, "dumpxml", "a", "--inactive").out == xml
    doc = jhctl(capsys, defined, "dumpxml", "a", "--json").json()
    assert isinstance(doc, dict)
    assert doc["xml"].rstrip("\n") == xml.rstrip("\n")


def test_refused_start_exit_codes(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """A Linux boot that cannot work exits 2; a driver refusal exits 1; no cell is left."""
    kernel = defined.xml_dir / "Image"
    kernel.write_bytes(bytes(0x1000))  # not a kernel: no magic
    linux = defined.xml("lin", os_extra=f"<kernel>{kernel}</kernel>")
    linux.write_text(linux.read_text().replace(">64<", ">65536<"), encoding="utf-8")
    assert jhctl(capsys, defined, "define", str(linux)).code == 0
    run = jhctl(capsys, defined, "start", "lin")
    assert run.code == 2
    assert "kernel.magic" in one_line(run.err)
    SimHost(defined.root).inject_fault("start", errno.EIO)
    run = jhctl(capsys, defined, "start", "a")
    assert run.code == 1
    assert "cell start 'a'" in one_line(run.err)
    assert defined.cells == {}


def test_ctrl_c_during_start(defined: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while the image is read cancels start: exit 130, no cell, the domain kept."""
    fifo = defined.xml_dir / "image.fifo"
    os.mkfifo(fifo)
    metadata = (
        "\n  <metadata><jailhouse:cell xmlns:jailhouse='urn:x-python-jailhouse:domain:1'>"
        f"<jailhouse:boot><jailhouse:image file='{fifo}' address='0x0'/></jailhouse:boot>"
        "</jailhouse:cell></metadata>"
    )
    assert jhctl(capsys, defined, "define", str(defined.xml("slow", extra=metadata))).code == 0
    child = subprocess.Popen(
        [sys.executable, "-m", "jailhouse", "-c", defined.uri, "start", "slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        # Opening the FIFO for writing returns once the child opened it for reading, which
        # it does inside the cancellable step: the Ctrl-C handler is in place by then.
        with fifo.open("wb") as writer:
            child.send_signal(signal.SIGINT)
            writer.write(b"\x00" * 64)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err
    assert out == ""
    assert "cancelled during 'read images'" in err
    assert defined.cells == {}
    rows = jhctl(capsys, defined, "list", "--all", "--json").json()
    assert isinstance(rows, list)
    assert {r["name"]: r["state"] for r in rows} == {"a": "shut off", "slow": "shut off"}


def test_progress_is_silent_without_a_terminal(
    defined: Board, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal no progress bar is drawn, so stderr stays empty."""
    run = jhctl(capsys, defined, "start", "a")
    assert run.err == ""


# -- apply --------------------------------------------------------------------------------


def test_apply_dry_run_then_apply_then_nothing(
    board: Board, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run changes nothing; the apply does what it printed; a rerun has nothing to do."""
    board.xml("a")
    board.xml("b")
    xml_dir, system = str(board.xml_dir), str(board.system)
    dry = jhctl(capsys, board, "apply", "--dry-run", "--system", system, xml_dir)
    assert dry.code == 0
    lines = dry.out.splitlines()
    assert [line.split(" (")[0] for line in lines[1:-1]] == [
        "+ define a",
        "+ define b",
        "> start a",
        "> start b",
    ]
    assert lines[-1] == "4 actions: 2 define, 2 start; 0 unchanged"
    assert board.cells == {}
    assert not (board.root / "domains" / "system.cell").exists()
    real = jhctl(capsys, board, "apply", "--system", system, xml_dir)
    assert real.code == 0
    assert real.out == dry.out + "applied 4 actions: 2 define, 2 start; 0 unchanged\n"
    assert board.cells == {"a": "running", "b": "running"}
    again = jhctl(capsys, board, "apply", xml_dir)
    assert again.code == 0
    assert again.out.splitlines()[-1] == "nothing to do (2 unchanged)"


def test_apply_json_and_prune(board: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """With --json, apply prints the plan and what was done; --prune removes unnamed ones."""
    board.xml("a")
    extra = board.xml("b")
    args = ("apply", "--system", str(board.system), str(board.xml_dir), "--json")
    first = jhctl(capsys, board, *args).json()
    assert isinstance(first, dict)
    assert first["applied"] is True
    assert [a["action"] for a in first["performed"]] == ["define", "define", "start", "start"]
    extra.unlink()
    kept = jhctl(capsys, board, *args).json()
    assert isinstance(kept, dict)
    assert kept["empty"] is True
    assert kept["notices"] == ["'b' is defined but no file describes it; kept (prune undefines it)"]
    pruned = jhctl(capsys, board, *args, "--prune").json()
    assert isinstance(pruned, dict)
    assert [(a["action"], a["name"]) for a in pruned["performed"]] == [
        ("stop", "b"),
        ("undefine", "b"),
    ]
    assert board.cells == {"a": "running"}


def test_apply_failure_rolls_back(board: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """A failing apply exits 1 with one line naming the rollback, and leaves nothing behind."""
    board.xml("a")
    board.xml("b")
    SimHost(board.root).inject_fault("start", errno.EIO, nth=2)
    run = jhctl(capsys, board, "apply", "--system", str(board.system), str(board.xml_dir))
    assert run.code == 1
    line = one_line(run.err)
    assert "rollback: undid 3 of 3 action(s)" in line
    assert board.cells == {}
    assert jhctl(capsys, board, "list", "--all", "--json").json() == []


def test_apply_state_and_recreate(board: Board, capsys: pytest.CaptureFixture[str]) -> None:
    """--state defined only defines; a changed running cell needs --recreate to change."""
    path = board.xml("a")
    base = ("apply", "--system", str(board.system), str(board.xml_dir))
    run = jhctl(capsys, board, *base, "--state", "defined")
    assert run.out.splitlines()[1].startswith("+ define a")
    assert board.cells == {}
    jhctl(capsys, board, *base)
    path.write_text(path.read_text().replace(">64<", ">128<"), encoding="utf-8")
    run = jhctl(capsys, board, *base)
    assert "~ update a (the cell changes; needs re-create)" in run.out
    assert "memory: 64 KiB -> 128 KiB" in run.out
    run = jhctl(capsys, board, *base, "--recreate")
    assert run.out.splitlines()[1:3] == [
        "< stop a (re-create: memory changed)",
        "> start a (re-create: memory changed)",
    ]
    info = jhctl(capsys, board, "dominfo", "a", "--json").json()
    assert isinstance(info, dict)
    assert info["max_memory_kib"] == 128


def test_concurrent_starts_are_serialised(
    defined: Board, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two threads starting the same domain: one wins, the other is told it runs already."""
    codes: list[int] = []

    def start() -> None:
        codes.append(main(["-c", defined.uri, "start", "a"]))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    capsys.readouterr()
    assert sorted(codes) == [0, 1]
    assert defined.cells == {"a": "running"}
