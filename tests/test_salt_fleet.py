"""A two-board fleet under real Salt: a salt-master and two salt-minions on 127.0.0.1.

Each minion manages its own simulated board; ``salt-run jailhouse.migrate`` moves
domains between them through the master.  The daemons start once for the module and
are always stopped (their whole process groups) when it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from saltharness import NEEDS_SALT, fleet, run

import jailhouse
import jailhouse.virt as libvirt
from jailhouse.examples import example_system

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.salt, NEEDS_SALT]

BOARDS = ("board1", "board2")


class Fleet:
    """The master's config directory and the two boards' URIs."""

    def __init__(self, master: Path, uris: dict[str, str]) -> None:
        """Remember where everything is."""
        self.master = master
        self.uris = uris

    def salt(self, target: str, *args: str) -> object:
        """Run an execution function on minions through the master; return their answers."""
        result = run(["salt", "-c", str(self.master), "--static", "--timeout=60", target, *args])
        assert result.returncode == 0, result
        return result.data

    def run(self, *args: str) -> tuple[int, dict[str, object]]:
        """Run a runner function; return the exit status and its return."""
        result = run(["salt-run", "-c", str(self.master), *args])
        assert isinstance(result.data, dict), result
        return result.returncode, result.data

    def domains(self, board: str) -> dict[str, tuple[int, bool]]:
        """``{name: (state, persistent)}`` on a board, read through the library."""
        with libvirt.open(self.uris[board]) as conn:
            return {d.name(): (d.state()[0], bool(d.isPersistent())) for d in conn.listAllDomains()}


@pytest.fixture(scope="module")
def salt_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two enabled boards, each with a minion, and a master that accepts them."""
    root = tmp_path_factory.mktemp("fleet")
    uris = {name: f"sim://{root / name / 'board'}?arch=arm64&cpus=4" for name in BOARDS}
    for uri in uris.values():
        with jailhouse.open(uri) as hv:
            hv.enable(example_system("arm64"))
        with libvirt.open(uri) as conn:
            conn.setSystemConfig(example_system("arm64"))
    with fleet(root, uris) as master:
        yield Fleet(master, uris)


@pytest.fixture
def clean(salt_fleet: Fleet) -> Fleet:
    """The fleet with no domain on either board."""
    for board in BOARDS:
        with libvirt.open(salt_fleet.uris[board]) as conn:
            for dom in conn.listAllDomains():
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
    return salt_fleet


def xml(name: str, pin: int | None = None) -> str:
    """A small arm64 domain, its vCPU pinned if asked."""
    tune = f"<cputune><vcpupin vcpu='0' cpuset='{pin}'/></cputune>" if pin is not None else ""
    return (
        f"<domain type='jailhouse'><name>{name}</name><memory unit='KiB'>64</memory>"
        f"<vcpu>1</vcpu>{tune}<os><type arch='aarch64'>hvm</type></os></domain>"
    )


RUNNING = libvirt.VIR_DOMAIN_RUNNING
SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF


def test_minions_see_their_own_boards(clean: Fleet) -> None:
    """Each minion's jailhouse.node_info describes its own simulated board."""
    nodes = clean.salt("*", "jailhouse.node_info")
    assert isinstance(nodes, dict)
    assert {name: nodes[name]["uri"] for name in BOARDS} == clean.uris


def test_runner_moves_a_definition_offline(clean: Fleet) -> None:
    """Without cold the definition moves; the source is undefined once the target holds it."""
    assert clean.salt("board1", "jailhouse.define_xml_str", xml("worker")) == {"board1": True}
    status, ret = clean.run("jailhouse.migrate", "worker", "board1", "board2")
    assert status == 0, ret
    assert ret["result"] is True
    assert clean.domains("board1") == {}
    assert clean.domains("board2") == {"worker": (SHUTOFF, True)}


def test_runner_cold_move_restarts_the_cell_on_the_target(clean: Fleet) -> None:
    """cold=True stops the cell on board1 and starts it on board2."""
    clean.salt("board1", "jailhouse.define_xml_str", xml("worker"))
    clean.salt("board1", "jailhouse.start", "worker")
    status, ret = clean.run("jailhouse.migrate", "worker", "board1", "board2", "cold=True")
    assert status == 0, ret
    assert (ret["source_stopped"], ret["source_undefined"]) == (True, True)
    assert clean.domains("board1") == {}
    assert clean.domains("board2") == {"worker": (RUNNING, True)}


def test_failing_target_leaves_the_source_intact(clean: Fleet) -> None:
    """A target whose cell owns the pinned CPU refuses; the source keeps running, defined."""
    clean.salt("board2", "jailhouse.define_xml_str", xml("resident", pin=3))
    clean.salt("board1", "jailhouse.define_xml_str", xml("worker", pin=3))
    clean.salt("board1", "jailhouse.start", "worker")
    status, ret = clean.run("jailhouse.migrate", "worker", "board1", "board2", "cold=True")
    assert status == 1
    assert ret["result"] is False
    assert "board2" in ret["comment"]
    assert "host CPU 3 belongs to cell 'resident'" in ret["comment"]
    assert clean.domains("board1") == {"worker": (RUNNING, True)}
    assert clean.domains("board2") == {"resident": (SHUTOFF, True)}
