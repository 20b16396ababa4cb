"""``jhctl cell linux`` and upstream's ``cell load`` syntax, on simulated hosts and through FUSE."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from kernels import arm64_image, bzimage

import jailhouse
from jailhouse.cli import main
from jailhouse.config.model import Arch
from jailhouse.examples import example_files
from jailhouse.linux.fdt import parse
from jailhouse.sim import SimHost
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from pathlib import Path


@dataclass
class Run:
    """What one ``jhctl`` run left behind."""

    code: int
    out: str
    err: str


def jhctl(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """Run ``jhctl argv`` in-process and capture its output."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Run(code, out, err)


@dataclass
class Board:
    """A simulated host of one arch, its example configs, and tiny boot files."""

    arch: str
    uri: str
    root: Path
    dir: Path

    def path(self, name: str) -> str:
        """Return the path of a file beside the configs."""
        return str(self.dir / name)

    @property
    def sim(self) -> SimHost:
        """The simulated host."""
        return SimHost(self.root)


def make_board(tmp_path: Path, arch: str) -> Board:
    """Write the example configs of ``arch``, a kernel and an initrd; name a fresh host."""
    files = tmp_path / "files"
    files.mkdir()
    for name, blob in example_files(arch).items():  # type: ignore[arg-type]
        (files / name).write_bytes(blob)
    (files / "kernel").write_bytes(arm64_image(0x40000) if arch == "arm64" else bzimage(0x40000))
    (files / "initrd").write_bytes(b"\x5a" * 0x3000)
    root = tmp_path / "host"
    return Board(arch, f"sim://{root}?arch={arch}&cpus=4", root, files)


@pytest.fixture(params=["arm64", "x86"])
def board(request: pytest.FixtureRequest, tmp_path: Path) -> Board:
    """An enabled simulated host of each architecture, with its example configs."""
    value = make_board(tmp_path, request.param)
    assert main(["-c", value.uri, "enable", value.path(f"{value.arch}-root.cell")]) == 0
    return value


def _linux_args(board: Board, *more: str) -> list[str]:
    return [
        "cell",
        "linux",
        board.path(f"{board.arch}-linux.cell"),
        board.path("kernel"),
        "-i",
        board.path("initrd"),
        *more,
    ]


def test_cell_linux_boots_with_upstreams_arguments(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """-c after `cell linux` is the command line; -c before the verb the connection."""
    capsys.readouterr()
    run = jhctl(
        capsys,
        "-c",
        board.uri,
        "--json",
        *_linux_args(
            board,
            "-c",
            "console=ttyS0 root=/dev/ram0",
            "--system",
            board.path(f"{board.arch}-root.cell"),
        ),
    )
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    name = f"{board.arch}-linux"
    assert (doc["name"], doc["state"]) == (name, "running")
    assert doc["plan"]["cmdline"] == "console=ttyS0 root=/dev/ram0"
    snap = board.sim.snapshot()
    cell = snap.cell(name)
    assert cell.state == CellState.RUNNING
    assert snap.root_cpus == frozenset({0, 3})  # the example Linux cells take CPUs 1-2
    assert cell.images == tuple((i["address"], i["size"]) for i in doc["plan"]["images"])


def test_connect_after_the_verb_still_works(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """--connect (long form) after `cell linux` connects; the text output names the cell."""
    capsys.readouterr()
    run = jhctl(capsys, *_linux_args(board, "--connect", board.uri, "-c", "quiet"))
    assert run.code == 0, run.err
    assert f"started Linux in cell '{board.arch}-linux'" in run.out


def test_dry_run_touches_no_device(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--dry-run prints the plan, as a table or JSON, and never opens the device."""
    board = make_board(tmp_path, "arm64")
    run = jhctl(capsys, "-c", board.uri, *_linux_args(board, "-c", "console=ttyAMA0", "--dry-run"))
    assert run.code == 0, run.err
    assert "Linux boot plan for cell 'arm64-linux' (arm64 Image)" in run.out
    assert "0x70000000" in run.out
    assert not board.root.exists()  # the simulated host was never opened
    run = jhctl(capsys, *_linux_args(board, "--dry-run", "--json"))
    doc = json.loads(run.out)
    assert [i["what"] for i in doc["images"]] == ["loader", "kernel", "initrd", "dtb"]
    assert doc["generated_dtb"] is True


def test_write_params_prints_commands_that_boot(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """-w writes the parameters; the printed create/load -a/start commands boot the cell."""
    out = board.path("params.bin")
    capsys.readouterr()
    run = jhctl(capsys, *_linux_args(board, "-c", "console=ttyS0", "-w", out))
    assert run.code == 0, run.err
    commands = [line for line in run.out.splitlines() if line.startswith("jhctl ")]
    assert [shlex.split(c)[1:3] for c in commands] == [
        ["cell", "create"],
        ["cell", "load"],
        ["cell", "start"],
    ]
    assert board.sim.snapshot().cells[1:] == ()  # -w booted nothing
    params = (board.dir / "params.bin").read_bytes()
    if board.arch == "arm64":
        assert parse(params).node("/chosen").get_string("bootargs") == "console=ttyS0"
    else:
        assert params[0x202:0x206] == b"HdrS"  # the zero page holds the setup header
    for command in commands:
        ran = jhctl(capsys, "-c", board.uri, *shlex.split(command)[1:])
        assert ran.code == 0, ran.err
    assert board.sim.snapshot().cell(f"{board.arch}-linux").state == CellState.RUNNING


@pytest.mark.parametrize(
    ("kernel", "words"),
    [
        pytest.param(b"\x1f\x8b\x08" + bytes(0x2000), "gzip", id="gzip"),
        pytest.param(bytes(32), "kernel.size", id="truncated"),
        pytest.param(b"\x7fELF" + bytes(0x2000), "ELF", id="elf"),
    ],
)
def test_bad_kernel_is_one_line_and_no_cell(
    capsys: pytest.CaptureFixture[str], board: Board, kernel: bytes, words: str
) -> None:
    """A kernel that cannot boot exits 2 with one line naming it; nothing is created."""
    (board.dir / "kernel").write_bytes(kernel)
    capsys.readouterr()
    run = jhctl(capsys, "-c", board.uri, *_linux_args(board))
    assert run.code == 2
    lines = run.err.splitlines()
    assert len(lines) == 1
    assert words in lines[0]
    assert lines[0].startswith("jhctl: error: cell linux: kernel.")
    assert board.sim.snapshot().cells[1:] == ()


def test_other_architectures_kernel(capsys: pytest.CaptureFixture[str], board: Board) -> None:
    """The other architecture's kernel, or --arch naming another, exits 2."""
    other = bzimage() if board.arch == "arm64" else arm64_image()
    (board.dir / "kernel").write_bytes(other)
    capsys.readouterr()
    run = jhctl(capsys, "-c", board.uri, *_linux_args(board))
    assert run.code == 2
    assert "kernel.arch" in run.err
    other_arch = "x86" if board.arch == "arm64" else "arm64"
    run = jhctl(capsys, "-c", board.uri, *_linux_args(board, "-a", other_arch))
    assert run.code == 2
    assert "--arch" in run.err
    assert board.sim.snapshot().cells[1:] == ()


def test_too_long_cmdline_and_missing_initrd(
    capsys: pytest.CaptureFixture[str], board: Board
) -> None:
    """A too long command line and a missing initrd file each exit 2 naming the problem."""
    capsys.readouterr()
    run = jhctl(capsys, "-c", board.uri, *_linux_args(board, "-c", "x" * 5000))
    assert run.code == 2
    assert "cmdline" in run.err
    args = _linux_args(board)
    args[args.index("-i") + 1] = board.path("missing.cpio")
    run = jhctl(capsys, "-c", board.uri, *args)
    assert run.code == 2
    assert "missing.cpio" in run.err
    assert board.sim.snapshot().cells[1:] == ()


def test_help_shows_upstreams_options(capsys: pytest.CaptureFixture[str]) -> None:
    """`cell linux --help` lists -c as --cmdline and --connect without -c."""
    run = jhctl(capsys, "cell", "linux", "--help")
    assert run.code == 0
    assert '-c "STRING", --cmdline' in run.out
    for option in ("-i FILE, --initrd", "-d DTB, --dtb", "-w FILE, --write-params", "--connect"):
        assert option in run.out
    assert "-c URI, --connect" not in run.out
    assert "--connect URI" in run.out


# -- cell load, upstream syntax --------------------------------------------------------------


@pytest.fixture
def arm64(tmp_path: Path) -> Board:
    """An enabled arm64 host with the demo cell created."""
    value = make_board(tmp_path, "arm64")
    assert main(["-c", value.uri, "enable", value.path("arm64-root.cell")]) == 0
    assert main(["-c", value.uri, "cell", "create", value.path("arm64-demo.cell")]) == 0
    return value


def test_cell_load_takes_upstreams_address_and_string_options(
    capsys: pytest.CaptureFixture[str], arm64: Board
) -> None:
    """IMAGE -a ADDR, -s STRING -a ADDR and IMAGE@ADDR mix, in command-line order."""
    image = arm64.path("initrd")  # 0x3000 bytes
    capsys.readouterr()
    run = jhctl(
        capsys,
        "-c",
        arm64.uri,
        "--json",
        "cell",
        "load",
        "arm64-demo",
        image,
        "-a",
        "0x1000",
        "-s",
        "kernel=0x0 dtb=0x8000",
        "-a",
        "0x6000",
        f"{image}@0x8000",
        image,
    )
    assert run.code == 0, run.err
    assert arm64.sim.snapshot().cell("arm64-demo").images == (
        (0x1000, 0x3000),
        (0x6000, len("kernel=0x0 dtb=0x8000") + 1),  # with its NUL, as upstream loads it
        (0x8000, 0x3000),
        (0x0, 0x3000),
    )
    doc = json.loads(run.out)
    assert doc["images"][1] == {"string": "kernel=0x0 dtb=0x8000", "address": 0x6000, "size": 22}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["-a", "0x1000", "X"], "give the IMAGE", id="address-first"),
        pytest.param(["X@0x10", "-a", "0x20"], "has an address already", id="twice"),
        pytest.param(["X", "-a", "nope"], "not a number", id="bad-number"),
        pytest.param([], "at least one", id="nothing"),
    ],
)
def test_cell_load_syntax_errors(
    capsys: pytest.CaptureFixture[str], arm64: Board, args: list[str], words: str
) -> None:
    """A misplaced or malformed -a exits 2 before anything is loaded."""
    image = arm64.path("initrd")
    argv = [image if a == "X" else a.replace("X@", f"{image}@") for a in args]
    capsys.readouterr()
    run = jhctl(capsys, "-c", arm64.uri, "cell", "load", "arm64-demo", *argv)
    assert run.code == 2
    assert words in run.err
    assert arm64.sim.snapshot().cell("arm64-demo").images == ()


@pytest.mark.fuse
def test_cell_linux_through_the_fuse_device(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`jhctl cell linux` boots an x86 bzImage through a FUSE-mocked /dev/jailhouse."""
    from jailhouse.testing import fuse_unavailable, mount_fuse_device

    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(reason)
    board = make_board(tmp_path, "x86")
    with mount_fuse_device(tmp_path / "host", tmp_path / "mnt", arch=Arch.X86, cpus=4) as fuse:
        assert main(["-c", fuse.uri, "enable", board.path("x86-root.cell")]) == 0
        capsys.readouterr()
        run = jhctl(capsys, "-c", fuse.uri, *_linux_args(board, "-c", "console=ttyS1"))
        assert run.code == 0, run.err
        snap = SimHost(tmp_path / "host").snapshot()
        assert snap.cell("x86-linux").state == CellState.RUNNING
        assert snap.root_cpus == frozenset({0, 3})
        assert main(["-c", fuse.uri, "disable"]) == 0


def test_simulated_host_supplies_its_system_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without --system, booting on a simulated host uses the config it was enabled with."""
    board = make_board(tmp_path, "arm64")
    linux = board.path("arm64-linux.cell")
    assert main(["-c", board.uri, "enable", board.path("arm64-root.cell")]) == 0
    assert board.sim.system_config() == (board.dir / "arm64-root.cell").read_bytes()
    capsys.readouterr()
    run = jhctl(capsys, "-c", board.uri, "--json", *_linux_args(board))
    assert run.code == 0, run.err
    dtb = next(i for i in json.loads(run.out)["plan"]["images"] if i["what"] == "dtb")
    with jailhouse.open(board.uri) as hv:
        plan = hv.plan_linux(linux, board.path("kernel"))
        tree = parse(plan.entry("dtb").data)
        assert any("interrupt-controller" in path for path, _node in tree.root.walk())
    assert main(["-c", board.uri, "cell", "destroy", "arm64-linux"]) == 0
    assert main(["-c", board.uri, "disable"]) == 0
    assert board.sim.system_config() is None
    with jailhouse.open(board.uri) as hv:
        bare = parse(hv.plan_linux(linux, board.path("kernel")).entry("dtb").data)
    assert not any("interrupt-controller" in path for path, _node in bare.root.walk())
    assert dtb["size"] > 0
