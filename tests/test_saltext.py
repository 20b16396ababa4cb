"""The Salt extension under real Salt: ``salt-call --local`` on a simulated board.

Each test writes a masterless minion config whose ``jailhouse:connection`` is a fresh
``sim:///`` host, runs execution functions and states through ``salt-call``, and checks
the board through the library itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from typing import TYPE_CHECKING

import pytest
from saltharness import NEEDS_SALT, REPO, SALTEXT, LocalMinion, env

import jailhouse
import jailhouse.virt as libvirt
from jailhouse.config.flags import parse_cpus
from jailhouse.examples import example_files, example_system
from jailhouse.saltext import _common

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.salt, NEEDS_SALT]


class Board:
    """A simulated arm64 board, its system config file and a minion pointed at it."""

    def __init__(self, tmp: Path) -> None:
        """Write the example configs and the minion config."""
        self.path = tmp / "board"
        self.uri = f"sim://{self.path}?arch=arm64&cpus=4"
        self.system = tmp / "system.cell"
        self.system.write_bytes(example_files("arm64")["arm64-root.cell"])
        self.minion = LocalMinion(tmp / "minion", self.uri)

    def enable(self) -> None:
        """Enable the hypervisor and record the system config, through the library."""
        with jailhouse.open(self.uri) as hv:
            hv.enable(example_system("arm64"))
        with libvirt.open(self.uri) as conn:
            conn.setSystemConfig(example_system("arm64"))

    def cells(self) -> dict[str, list[int]]:
        """The non-root cells and their CPUs, as the hypervisor has them."""
        with jailhouse.open(self.uri) as hv:
            return {c.name: sorted(c.cpus_assigned) for c in hv.cells() if c.id != 0}

    def defined(self) -> list[str]:
        """The names of the defined domains."""
        with libvirt.open(self.uri) as conn:
            return sorted(d.name() for d in conn.listAllDomains() if d.isPersistent())


@pytest.fixture
def board(tmp_path: Path) -> Board:
    """A fresh board and minion."""
    return Board(tmp_path)


def xml(name: str, vcpus: int = 1) -> str:
    """A small arm64 domain."""
    return (
        f"<domain type='jailhouse'><name>{name}</name><memory unit='KiB'>64</memory>"
        f"<vcpu>{vcpus}</vcpu><os><type arch='aarch64'>hvm</type></os></domain>"
    )


# -- loading --------------------------------------------------------------------------------


def test_entry_point_declares_the_extension_package() -> None:
    """The salt.loader entry point names a package with modules/, states/ and runners/."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["salt.loader"] == {"jailhouse": "jailhouse.saltext"}
    for sub, name in (("modules", "jailhouse_mod"), ("states", "jailhouse_state")):
        assert (SALTEXT / sub / f"{name}.py").is_file()
    assert (SALTEXT / "runners" / "jailhouse_runner.py").is_file()
    assert "salt" in project["optional-dependencies"]


def test_salt_loader_finds_the_modules_through_the_entry_point(tmp_path: Path) -> None:
    """Salt's own loader, given no *_dirs, finds our directories through the entry point.

    The entry point is the one pyproject.toml declares, installed as distribution
    metadata on the subprocess's path (as pip writes it), so the check does not depend
    on how this tree was installed.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dist = tmp_path / "site" / "jailhouse_probe-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: jailhouse-probe\nVersion: 0\n")
    lines = [f"{k} = {v}" for k, v in project["entry-points"]["salt.loader"].items()]
    (dist / "entry_points.txt").write_text("[salt.loader]\n" + "\n".join(lines) + "\n")
    probe = (
        "import json, salt.config, salt.loader\n"
        "opts = salt.config.minion_config(None)\n"
        "print(json.dumps([salt.loader._module_dirs(opts, t, t[:-1]) "
        "for t in ('modules', 'states', 'runners')]))\n"
    )
    environment = env()
    environment["PYTHONPATH"] = f"{tmp_path / 'site'}:{environment['PYTHONPATH']}"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=environment, check=True
    )
    found = json.loads(proc.stdout.splitlines()[-1])
    for dirs, sub in zip(found, ("modules", "states", "runners"), strict=True):
        assert str(SALTEXT / sub) in dirs, (sub, dirs)


@pytest.mark.skipif(_common.DEVICE.exists(), reason="this machine has /dev/jailhouse")
def test_virtual_refuses_without_device_or_sim(tmp_path: Path) -> None:
    """Without /dev/jailhouse and without a sim:/// connection the module is not loaded."""
    minion = LocalMinion(tmp_path, None)
    result = minion.call("jailhouse.list_domains")
    assert result.returncode != 0
    assert "/dev/jailhouse does not exist" in result.stderr
    assert "sim:///PATH" in result.stderr


def test_connection_from_the_pillar(board: Board, tmp_path: Path) -> None:
    """Without jailhouse:connection in the minion config, the pillar's is used."""
    board.enable()
    minion = LocalMinion(tmp_path / "pillared", None)
    pillar = tmp_path / "pillar"
    pillar.mkdir()
    (pillar / "top.sls").write_text("base:\n  '*':\n    - board\n", encoding="utf-8")
    connection = json.dumps({"jailhouse": {"connection": board.uri}})
    (pillar / "board.sls").write_text(connection + "\n", encoding="utf-8")
    config = minion.root / "minion"
    config.write_text(
        config.read_text(encoding="utf-8")
        + f"pillar_roots: {json.dumps({'base': [str(pillar)]})}\n",
        encoding="utf-8",
    )
    assert minion.call("jailhouse.node_info").data["uri"] == board.uri


def test_units_match_salt(tmp_path: Path) -> None:
    """Sizes convert to the bytes Salt's virt module would compute for them."""
    sizes = ["512", "16m", "16M", "1g", "2GiB", "64KiB", "1gb", "500MB", "4096b", "1.5g"]
    probe = (
        "import json, sys, salt.utils.stringutils as s\n"
        "print(json.dumps([s.human_to_bytes(v, default_unit='m', handle_metric=True) "
        "for v in json.loads(sys.argv[1])]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(sizes)],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
        cwd=tmp_path,
    )
    expected = json.loads(proc.stdout.splitlines()[-1])
    assert [_common.to_bytes(v, "mem") for v in sizes] == expected


# -- the execution module -------------------------------------------------------------------


def test_execution_lifecycle(board: Board, tmp_path: Path) -> None:
    """Enable, define, start, inspect, shut down, destroy and undefine through salt-call."""
    call = board.minion.call
    assert call("jailhouse.enable", str(board.system)).data is True
    assert call("jailhouse.status").data["enabled"] is True
    path = tmp_path / "worker.xml"
    path.write_text(xml("worker"), encoding="utf-8")
    assert call("jailhouse.define_xml_path", str(path)).data is True
    assert call("jailhouse.list_inactive_vms").data == ["worker"]
    assert call("jailhouse.start", "worker").data is True
    assert board.cells() == {"worker": [3]}
    info = call("jailhouse.vm_info", "worker").data["worker"]
    assert (info["state"], info["cpus"], info["mem"]) == ("running", [3], 64)
    assert call("jailhouse.list_active_vms").data == ["worker"]
    assert "<name>worker</name>" in call("jailhouse.get_xml", "worker").data
    stats = call("jailhouse.cell_stats", "worker").data["worker"]
    assert stats["total"]["total"] > 0
    assert set(stats["per_cpu"]) == {"3"}
    assert call("jailhouse.shutdown", "worker").data is True
    assert call("jailhouse.vm_state", "worker").data == {"worker": "paused"}
    assert call("jailhouse.destroy", "worker").data is True
    assert board.cells() == {}
    assert call("jailhouse.undefine", "worker").data is True
    assert call("jailhouse.list_domains").data == []


def test_host_functions(board: Board) -> None:
    """node_info, capabilities, console and config_check describe the board."""
    board.enable()
    call = board.minion.call
    node = call("jailhouse.node_info").data
    assert (node["arch"], node["cpus"], node["root_cell"]) == ("aarch64", 4, "arm64-root")
    caps = call("jailhouse.capabilities").data["guests"][0]
    assert caps["features"]["live_migration"] is False
    assert caps["features"]["offline_migration"] is True
    assert call("jailhouse.define_xml_str", xml("worker")).data is True
    assert call("jailhouse.start", "worker").data is True
    console = call("jailhouse.console", "200").data
    assert 'Cell "worker" started' in console
    assert len(console.encode()) <= 200
    assert call("jailhouse.config_check").data == {"ok": True, "findings": []}


def test_errors_come_back_as_command_execution_errors(board: Board) -> None:
    """A failing function exits 1 with our message, not a traceback."""
    board.enable()
    result = board.minion.call("jailhouse.start", "missing")
    assert result.returncode == 1
    assert "no domain with matching name 'missing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_between_two_connections(board: Board, tmp_path: Path) -> None:
    """jailhouse.migrate moves a definition to another connection the minion can open."""
    board.enable()
    other = tmp_path / "other"
    with jailhouse.open(f"sim://{other}?arch=arm64&cpus=4") as hv:
        hv.enable(example_system("arm64"))
    with libvirt.open(f"sim://{other}") as conn:
        conn.setSystemConfig(example_system("arm64"))
    call = board.minion.call
    assert call("jailhouse.define_xml_str", xml("worker")).data is True
    moved = call("jailhouse.migrate", "worker", f"sim://{other}").data
    assert (moved["name"], moved["state"], moved["persistent"]) == ("worker", "shutoff", True)
    assert board.defined() == []
    with libvirt.open(f"sim://{other}") as conn:
        assert conn.listDefinedDomains() == ["worker"]


# -- the states -----------------------------------------------------------------------------

RUNNING = """
worker:
  jailhouse.running:
    - cpu: {cpu}
    - mem: 16m
    - restart: {restart}
"""


def changes(result: list[dict[str, object]]) -> list[object]:
    """The changes of each state, in run order."""
    return [r["changes"] for r in result]


def test_enabled_state_test_mode_then_idempotent(board: Board) -> None:
    """jailhouse.enabled predicts with test=True, enables, and then reports nothing to do."""
    minion = board.minion
    minion.sls("hv", f"hypervisor:\n  jailhouse.enabled:\n    - system: {board.system}\n")
    predicted = minion.apply("hv", "test=True")
    assert predicted.data[0]["result"] is None
    assert predicted.data[0]["changes"]["enabled"] == str(board.system)
    with jailhouse.open(board.uri) as hv:
        assert not hv.enabled()
    done = minion.apply("hv")
    assert done.returncode == 0
    assert done.data[0]["result"] is True
    assert "enabled" in done.data[0]["changes"]
    again = minion.apply("hv")
    assert (again.data[0]["result"], again.data[0]["changes"]) == (True, {})


def test_running_state_test_mode_apply_and_idempotence(board: Board) -> None:
    """test=True predicts define and start and touches nothing; a second run changes nothing."""
    board.enable()
    minion = board.minion
    minion.sls("fleet", RUNNING.format(cpu=2, restart=False))
    predicted = minion.apply("fleet", "test=True")
    assert predicted.data[0]["result"] is None
    assert set(predicted.data[0]["changes"]) == {"definition", "started"}
    assert board.defined() == []
    assert board.cells() == {}
    done = minion.apply("fleet")
    assert done.returncode == 0, done
    assert done.data[0]["result"] is True
    assert done.data[0]["changes"]["started"] is True
    assert board.cells() == {"worker": [2, 3]}
    again = minion.apply("fleet")
    assert (again.data[0]["result"], again.data[0]["changes"]) == (True, {})


def test_tuning_a_running_domain_restarts_only_when_asked(board: Board) -> None:
    """A new vCPU count updates the definition; the cell keeps its CPUs until restart=True."""
    board.enable()
    minion = board.minion
    minion.sls("fleet", RUNNING.format(cpu=1, restart=False))
    assert minion.apply("fleet").returncode == 0
    assert board.cells() == {"worker": [3]}
    minion.sls("fleet", RUNNING.format(cpu=2, restart=False))
    updated = minion.apply("fleet").data[0]
    assert updated["result"] is True
    assert "definition" in updated["changes"]
    assert "restart" in updated["comment"]
    assert board.cells() == {"worker": [3]}
    second = minion.apply("fleet").data[0]
    assert second["changes"] == {}
    assert "needs a restart" in second["comment"]
    minion.sls("fleet", RUNNING.format(cpu=2, restart=True))
    predicted = minion.apply("fleet", "test=True").data[0]
    assert predicted["result"] is None
    assert predicted["changes"] == {"restarted": True}
    assert board.cells() == {"worker": [3]}
    restarted = minion.apply("fleet").data[0]
    assert restarted["changes"] == {"restarted": True}
    assert len(board.cells()["worker"]) == 2


def test_pin_to_another_cells_cpu_fails_naming_it(board: Board) -> None:
    """Pinning a vCPU to a CPU another cell owns fails, naming the cell; nothing changes."""
    board.enable()
    minion = board.minion
    minion.sls(
        "pins",
        "first:\n  jailhouse.running:\n    - vcpupin: {0: 3}\n    - mem: 16m\n"
        "second:\n  jailhouse.running:\n    - cpu: {maximum: 1, tuning: {vcpupin: {0: '3'}}}\n"
        "    - mem: {boot: 16m, current: 16MiB}\n",
    )
    result = minion.apply("pins")
    assert result.returncode != 0
    first, second = result.data
    assert first["result"] is True
    assert second["result"] is False
    assert "host CPU 3 belongs to cell 'first'" in second["comment"]
    assert board.cells() == {"first": [3]}
    assert board.defined() == ["first"]


def test_memory_arguments_follow_virt_defined(board: Board) -> None:
    """The mem argument takes Salt's units and dict; a balloon (current < max) is refused."""
    board.enable()
    minion = board.minion
    minion.sls(
        "mem",
        "small:\n  jailhouse.defined:\n    - mem: {current: 8MiB, max: 8m}\n"
        "balloon:\n  jailhouse.defined:\n    - mem: {current: 8m, max: 16m}\n",
    )
    small, balloon = minion.apply("mem").data
    assert small["result"] is True
    assert balloon["result"] is False
    assert "cannot balloon" in balloon["comment"]
    info = minion.call("jailhouse.info", "small").data
    assert info["mem"] == 8192


def test_stopped_and_absent_are_idempotent(board: Board) -> None:
    """The stopped state destroys the cell, absent undefines; each second run changes nothing."""
    board.enable()
    minion = board.minion
    minion.sls("up", RUNNING.format(cpu=1, restart=False))
    assert minion.apply("up").returncode == 0
    minion.sls("down", "worker:\n  jailhouse.stopped: []\n")
    assert minion.apply("down").data[0]["changes"] == {"stopped": True}
    assert board.cells() == {}
    assert minion.apply("down").data[0]["changes"] == {}
    minion.sls("gone", "worker:\n  jailhouse.absent: []\n")
    assert minion.apply("gone", "test=True").data[0]["changes"] == {"undefined": True}
    assert board.defined() == ["worker"]
    assert minion.apply("gone").data[0]["changes"] == {"undefined": True}
    assert board.defined() == []
    assert minion.apply("gone").data[0]["changes"] == {}


def test_numatune_keeps_cpus_on_the_node_or_fails(board: Board) -> None:
    """The numatune argument keeps CPUs on the node; without topology or for RAM it fails."""
    board.enable()
    minion = board.minion
    sls = (
        "worker:\n  jailhouse.defined:\n    - cpu: 1\n    - mem: 16m\n"
        "    - numatune: {{memory: {{mode: {mode}, nodeset: {node}}}}}\n"
    )
    # The simulator publishes one NUMA node (node0, every CPU): node 5 is not there.
    minion.sls("numa", sls.format(mode="preferred", node=5))
    failed = minion.apply("numa").data[0]
    assert failed["result"] is False
    assert "node 5 does not exist" in failed["comment"]
    minion.sls("numa", sls.format(mode="preferred", node=0))
    placed = minion.apply("numa").data[0]
    assert placed["result"] is True, placed
    node0 = board.path / "sys" / "devices" / "system" / "node" / "node0" / "cpulist"
    cpus = minion.call("jailhouse.info", "worker").data["cpus"]
    assert cpus
    assert set(cpus) <= parse_cpus(node0.read_text(encoding="ascii").strip())


AUTOSTART = """
worker:
  jailhouse.defined:
    - cpu: 1
    - mem: 16m
    - autostart: {autostart}
"""


def test_autostart_marks_the_domain_and_enabled_starts_it(board: Board) -> None:
    """autostart=True is predicted, set once, honoured by jailhouse.enabled, then turned off."""
    board.enable()
    minion = board.minion
    minion.sls("auto", AUTOSTART.format(autostart=True))
    predicted = minion.apply("auto", "test=True").data[0]
    assert predicted["result"] is None
    assert predicted["changes"]["autostart"] == {"old": False, "new": True}
    assert board.defined() == []
    done = minion.apply("auto").data[0]
    assert done["result"] is True, done
    assert done["changes"]["autostart"] == {"old": False, "new": True}
    assert minion.call("jailhouse.get_autostart", "worker").data is True
    assert minion.call("jailhouse.info", "worker").data["autostart"] == 1
    again = minion.apply("auto").data[0]
    assert (again["result"], again["changes"]) == (True, {})
    assert board.cells() == {}

    # A defined (not running) autostart domain starts when the state enables the board.
    with jailhouse.open(board.uri) as hv:
        hv.disable()
    minion.sls("hv", f"hypervisor:\n  jailhouse.enabled:\n    - system: {board.system}\n")
    enabled = minion.apply("hv").data[0]
    assert enabled["result"] is True, enabled
    assert enabled["changes"]["autostarted"] == ["worker"]
    assert list(board.cells()) == ["worker"]

    minion.sls("auto", AUTOSTART.format(autostart=False))
    off = minion.apply("auto").data[0]
    assert off["changes"]["autostart"] == {"old": True, "new": False}
    assert minion.call("jailhouse.get_autostart", "worker").data is False
    assert minion.call("jailhouse.set_autostart", "worker", "on").data is True
    assert minion.call("jailhouse.get_autostart", "worker").data is True
    bad = minion.call("jailhouse.set_autostart", "worker", "maybe")
    assert bad.returncode != 0
    assert "state = 'maybe'" in bad.stdout + bad.stderr
