"""The quick ``jhctl cell list``: same answers as the full path, or it steps aside.

The quick path (:mod:`jailhouse.cli._quick`, :mod:`jailhouse._listing`) reads sysfs with
nothing but ``os``.  Each test holds it to a real peer: argparse for the command line,
:class:`~jailhouse.sysfs.SysfsReader` for the tree, ``json.dumps`` for the document, and
the full ``jhctl`` path (parser, hypervisor, simulator) for the whole command.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jailhouse._listing import (
    SIM_TREE_PENDING,
    STATE_TEXT,
    listing_json,
    read_cells,
    read_sim_cells,
)
from jailhouse.cli import _run, build_parser, main
from jailhouse.cli._quick import cell_list, parse_cell_list
from jailhouse.config.model import Arch
from jailhouse.errors import DeviceNotFoundError, StatusParseError
from jailhouse.examples import example_cells, example_system
from jailhouse.sim import SimHost
from jailhouse.sysfs import SysfsReader

if TYPE_CHECKING:
    from pathlib import Path

# ABI sheet §4: the driver's files for one cell (QEMU x86 example, apic-demo on CPU 3).
TREE: Final = {
    "devices/jailhouse/enabled": "1\n",
    "devices/jailhouse/cells/0/name": "QEMU-VM\n",
    "devices/jailhouse/cells/0/state": "running\n",
    "devices/jailhouse/cells/0/cpus_assigned": "7\n",
    "devices/jailhouse/cells/0/cpus_assigned_list": "0-2\n",
    "devices/jailhouse/cells/0/cpus_failed": "0\n",
    "devices/jailhouse/cells/0/cpus_failed_list": "\n",
    "devices/jailhouse/cells/1/name": "apic-demo\n",
    "devices/jailhouse/cells/1/state": "shut down\n",
    "devices/jailhouse/cells/1/cpus_assigned": "8\n",
    "devices/jailhouse/cells/1/cpus_assigned_list": "3\n",
    "devices/jailhouse/cells/1/cpus_failed": "0\n",
    "devices/jailhouse/cells/1/cpus_failed_list": "\n",
}
"""A whole tree; the property test below damages copies of it."""

# What a damaged file may hold instead: what the driver writes and what it never does.
REPLACEMENTS: Final = (
    None,  # the file is missing
    "\n",
    "f\n",
    "8\n",
    "c\n",
    "0c\n",
    "00000000,00000008\n",
    "0000008\n",
    "3\n",
    "0-3\n",
    "3-\n",
    " 3\n",
    "2,3\n",
    "failed\n",
    "running/locked\n",
    "Comm ABI mismatch\n",
    "failed/OS\n",
    "Running\n",
    "caf\xe9\n",
    "x\n",
    "",
)


def write_tree(root: Path, files: dict[str, str | None]) -> None:
    """Create (or, for ``None``, leave out) the files below ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is not None:
            path.write_bytes(text.encode("latin-1"))


def full_reading(root: Path) -> list[tuple[int, str, str, frozenset[int], frozenset[int]]]:
    """Read the cells as the full path does, in the quick path's tuples."""
    return [
        (c.id, c.name, c.state.text, c.cpus_assigned, c.cpus_failed)
        for c in SysfsReader(root).cells(statistics=False)
    ]


@settings(max_examples=150, deadline=None)
@given(
    damage=st.dictionaries(st.sampled_from(sorted(TREE)), st.sampled_from(REPLACEMENTS), max_size=3)
)
def test_quick_reading_agrees_with_the_reader_or_steps_aside(
    tmp_path_factory: pytest.TempPathFactory, damage: dict[str, str | None]
) -> None:
    """On any damaged tree the quick reading equals SysfsReader's, or it returns None.

    Where the reader raises (a malformed or missing file, CPU files that disagree), the
    quick reading must have returned None, so ``jhctl`` reports the reader's error.
    """
    root = tmp_path_factory.mktemp("sys")
    write_tree(root, {**TREE, **damage})
    quick = read_cells(str(root))
    try:
        full: object = full_reading(root)
    except (StatusParseError, KeyError, DeviceNotFoundError) as exc:
        full = exc
    if quick is not None:
        assert quick == full
    elif not damage:
        pytest.fail("the quick reading refused a whole tree")


def test_quick_reading_of_the_whole_tree(tmp_path: Path) -> None:
    """The fact sheet's tree reads as the two cells it shows."""
    write_tree(tmp_path, dict(TREE))
    assert read_cells(str(tmp_path)) == [
        (0, "QEMU-VM", "running", frozenset({0, 1, 2}), frozenset()),
        (1, "apic-demo", "shut down", frozenset({3}), frozenset()),
    ]


def test_quick_reading_refuses_cells_that_share_a_cpu(tmp_path: Path) -> None:
    """Two cells on one CPU is a create half-way: the full reader reads again."""
    write_tree(
        tmp_path,
        {
            **TREE,
            "devices/jailhouse/cells/0/cpus_assigned": "f\n",
            "devices/jailhouse/cells/0/cpus_assigned_list": "0-3\n",
        },
    )
    assert read_cells(str(tmp_path)) is None


def test_quick_reading_while_disabled_and_without_the_driver(tmp_path: Path) -> None:
    """No cells/ directory lists nothing; no driver directory steps aside."""
    assert read_cells(str(tmp_path)) is None
    (tmp_path / "devices/jailhouse").mkdir(parents=True)
    assert read_cells(str(tmp_path)) == []


cpu_sets = st.frozensets(st.integers(0, 255), max_size=6)
listed = st.lists(
    st.tuples(
        st.integers(0, 1000),
        st.text(max_size=12),
        st.sampled_from(sorted(STATE_TEXT.values())),
        cpu_sets,
        cpu_sets,
    ),
    max_size=4,
)


@given(cells=listed)
def test_listing_json_is_what_json_dumps_writes(
    cells: list[tuple[int, str, str, frozenset[int], frozenset[int]]],
) -> None:
    """The document is byte for byte ``json.dumps(documents, indent=2)``."""
    documents = [
        {
            "id": cell_id,
            "name": name,
            "state": state,
            "cpus_assigned": sorted(assigned),
            "cpus_failed": sorted(failed),
        }
        for cell_id, name, state, assigned, failed in cells
    ]
    assert listing_json(cells) == json.dumps(documents, indent=2)


# -- the command line against argparse ---------------------------------------------------

URIS: Final = ("sim:///tmp/h", "jailhouse:///system", "x", "")
option = st.one_of(
    st.sampled_from([["--json"], ["--debug"], ["--js"], ["-x"], ["-c"], ["--connect"], ["-j"]]),
    st.sampled_from(URIS).map(lambda uri: ["-c", uri]),
    st.sampled_from(URIS).map(lambda uri: ["--connect", uri]),
    st.sampled_from(URIS).map(lambda uri: [f"--connect={uri}"]),
    st.sampled_from(URIS).map(lambda uri: [f"-c{uri}"]),
)
options = st.lists(option, max_size=3).map(lambda parts: [w for part in parts for w in part])


@settings(max_examples=300, deadline=None)
@given(
    before=options,
    middle=st.sampled_from([["cell", "list"], ["cell", "--json", "list"], ["list"], ["cell"]]),
    after=options,
)
def test_command_lines_the_quick_path_takes_parse_the_same_in_argparse(
    before: list[str], middle: list[str], after: list[str]
) -> None:
    """What the quick path accepts, argparse accepts too, with the same URI and --json."""
    words = before + middle + after
    quick = parse_cell_list(words)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(words)
    except SystemExit:
        assert quick is None, words
        return
    if quick is not None:
        assert getattr(args, "handler", None) is not None
        assert (args.verb, args.handler.__name__) == ("cell", "_cell_list"), words
        assert quick == (getattr(args, "connect", None), getattr(args, "json", False)), words


def test_plain_forms_are_taken() -> None:
    """The forms scripts write go the quick way."""
    for words in (
        ["cell", "list"],
        ["cell", "list", "--json"],
        ["--json", "cell", "list"],
        ["-c", "sim:///tmp/h", "cell", "list", "--json"],
        ["cell", "list", "--connect=sim:///tmp/h"],
    ):
        assert parse_cell_list(words) is not None, words


# -- whole commands against the full path ------------------------------------------------


def full_path(capsys: pytest.CaptureFixture[str], words: list[str]) -> tuple[int, str, str]:
    """Run ``jhctl words`` through the parser and the hypervisor, never the quick path."""
    args = build_parser().parse_args(words)
    code = _run(args.handler, args)
    out, err = capsys.readouterr()
    return code, out, err


def quick_path(capsys: pytest.CaptureFixture[str], words: list[str]) -> tuple[int, str, str]:
    """Run ``jhctl words`` as ``main`` does, asserting that the quick path took it."""
    assert cell_list(words) is not None, "the quick path stepped aside"
    capsys.readouterr()
    code = main(words)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def host(tmp_path: Path) -> SimHost:
    """A simulated x86 host with the example cells created and one of them running."""
    sim = SimHost(tmp_path / "host", arch=Arch.X86, cpus=4)
    sim.enable(example_system("x86").to_bytes())
    for cell in example_cells("x86").values():
        sim.cell_create(cell.to_bytes())
    sim.cell_start("x86-demo")
    return sim


def test_whole_commands_print_what_the_full_path_prints(
    capsys: pytest.CaptureFixture[str], host: SimHost
) -> None:
    """Text and JSON, enabled and disabled: the same bytes and exit code both ways."""
    uri = f"sim://{host.root}"
    for words in (["-c", uri, "cell", "list"], ["cell", "list", "-c", uri, "--json"]):
        quick = quick_path(capsys, words)
        assert quick == full_path(capsys, words)
        assert quick[0] == 0
    assert "running" in quick_path(capsys, ["-c", uri, "cell", "list"])[1]
    host.disable()
    for words in (["-c", uri, "cell", "list"], ["-c", uri, "cell", "list", "--json"]):
        assert quick_path(capsys, words) == full_path(capsys, words)


def test_a_new_host_takes_the_full_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A directory that is no host yet is made one by the full path, as before."""
    uri = f"sim://{tmp_path / 'new'}"
    assert cell_list(["-c", uri, "cell", "list", "--json"]) is None
    assert main(["-c", uri, "cell", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cell_list(["-c", uri, "cell", "list", "--json"]) == "[]"


def test_a_writer_that_died_sends_readers_the_full_way(
    capsys: pytest.CaptureFixture[str], host: SimHost
) -> None:
    """The pending mark of a dead writer: the full path renders the tree again and clears it."""
    root = host.root
    assert not (root / SIM_TREE_PENDING).exists()  # every writer clears it
    state = root / "sys/devices/jailhouse/cells/1/state"
    truth = state.read_text()
    (root / SIM_TREE_PENDING).touch()
    state.write_text("failed\n")  # the tree lags the state
    assert read_sim_cells(str(root)) is None
    words = ["-c", f"sim://{root}", "cell", "list", "--json"]
    assert main(words) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing[1]["state"] == truth.strip()
    assert not (root / SIM_TREE_PENDING).exists()
    assert state.read_text() == truth
    assert cell_list(words) is not None


def test_uris_the_quick_path_leaves_to_the_full_one(host: SimHost) -> None:
    """Queries, quoted bytes, other schemes and a missing device are not the quick path's."""
    for uri in (
        f"sim://{host.root}?arch=x86",
        f"sim://{host.root}%20",
        f"sim:{host.root}",
        "qemu:///system",
        "jailhouse:///system?sysfs=/tmp",
    ):
        assert cell_list(["-c", uri, "cell", "list"]) is None, uri
    if not os.path.exists("/dev/jailhouse"):  # noqa: PTH110 - what the quick path checks
        assert cell_list(["-c", "jailhouse:///system", "cell", "list"]) is None


def test_the_quick_path_imports_neither_argparse_nor_the_simulator(host: SimHost) -> None:
    """A plain ``cell list`` on a simulated host loads only the listing modules."""
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from jailhouse.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(sorted(set(sys.modules) - before), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "-c", f"sim://{host.root}", "cell", "list", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    loaded = set(ast.literal_eval(run.stderr.strip()))
    ours = {"jailhouse", "jailhouse._listing", "jailhouse.cli", "jailhouse.cli._quick"}
    assert ours <= loaded
    assert loaded - ours <= {"__future__", "fcntl", "_json"}
    assert [cell["name"] for cell in json.loads(run.stdout)] == [
        "x86-root",
        "x86-demo",
        "x86-linux",
    ]
