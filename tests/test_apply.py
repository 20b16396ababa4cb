"""Declarative apply: plans, idempotence, exact dry runs, re-creation, pruning and rollback."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import pytest

import jailhouse
import jailhouse.virt as libvirt
from jailhouse.apply import (
    ActionKind,
    DesiredDomain,
    DesiredState,
    apply,
    load_desired,
    plan,
    reconcile,
)
from jailhouse.examples import example_system
from jailhouse.jobs import Job, JobOutcome, JobProgress
from jailhouse.sim import SimHost

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

XML = """<domain type="jailhouse">
  <name>{name}</name>
  <memory unit="KiB">{memory}</memory>
  <vcpu>1</vcpu>
  <os><type arch="aarch64">hvm</type></os>{extra}
</domain>
"""


def write(directory: Path, name: str, memory: int = 64, extra: str = "") -> Path:
    """Write a domain file for the arm64 example system."""
    path = directory / f"{name}.xml"
    path.write_text(XML.format(name=name, memory=memory, extra=extra), encoding="utf-8")
    return path


class World:
    """An enabled simulated arm64 host, a connection to it, and a directory of domain files."""

    def __init__(self, tmp_path: Path) -> None:
        """Enable the host and open a connection."""
        self.root = tmp_path / "host"
        self.files = tmp_path / "domains"
        self.files.mkdir()
        self.uri = f"sim://{self.root}?arch=arm64&cpus=4"
        system = example_system("arm64")
        with jailhouse.open(self.uri) as hv:
            hv.enable(system)
        self.conn = libvirt.open(self.uri)
        self.conn.setSystemConfig(system)

    def states(self) -> dict[str, tuple[int, int]]:
        """Each domain's state and cell id."""
        return {d.name(): (d.state()[0], d.ID()) for d in self.conn.listAllDomains()}

    def cells(self) -> list[str]:
        """The non-root cells on the host, by name."""
        return sorted(c.name for c in SimHost(self.root).snapshot().cells[1:])

    def fingerprint(self) -> str:
        """The store's digest."""
        return self.conn.driver.store.fingerprint()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A fresh world per test."""
    w = World(tmp_path)
    yield w
    w.conn.close()


def kinds(the_plan: object) -> list[tuple[str, str]]:
    """The plan's actions as (kind, name) pairs."""
    return [(a.kind.value, a.name) for a in the_plan.actions]  # type: ignore[attr-defined]


def test_first_apply_defines_and_starts(world: World) -> None:
    """Files for two new domains define and start both, in that order."""
    write(world.files, "a")
    write(world.files, "b")
    the_plan, result = reconcile(world.conn, [world.files])
    assert kinds(the_plan) == [("define", "a"), ("define", "b"), ("start", "a"), ("start", "b")]
    assert result is not None
    assert result.performed == the_plan.actions
    assert {n: s for n, (s, _) in world.states().items()} == {"a": 1, "b": 1}
    assert world.cells() == ["a", "b"]


def test_second_run_does_nothing_and_says_so(world: World) -> None:
    """Applying the same files again changes nothing and reports that."""
    write(world.files, "a")
    reconcile(world.conn, [world.files])
    before = (world.fingerprint(), world.states())
    again, result = reconcile(world.conn, [world.files])
    assert again.empty
    assert result is not None
    assert result.performed == ()
    assert str(result) == "nothing to do (1 unchanged)"
    assert "nothing to do" in again.render()
    assert (world.fingerprint(), world.states()) == before


def test_dry_run_is_exact(world: World) -> None:
    """A dry run changes nothing, and the real run then performs exactly its actions."""
    write(world.files, "a")
    write(world.files, "b", memory=128)
    before = world.fingerprint()
    dry, nothing = reconcile(world.conn, [world.files], dry_run=True)
    assert nothing is None
    assert world.fingerprint() == before
    assert world.cells() == []
    real, result = reconcile(world.conn, [world.files])
    assert result is not None
    assert real.render() == dry.render()
    assert real.to_json() == dry.to_json()
    assert [str(a) for a in result.performed] == [
        line for line in dry.render().splitlines() if line[:2] in {"+ ", "> ", "~ ", "- ", "< "}
    ]
    uuids = {a.name: a.uuid for a in dry.actions}
    assert {d.name(): d.UUIDString() for d in world.conn.listAllDomains()} == uuids


def test_whitespace_comments_and_missing_uuid_are_no_change(world: World) -> None:
    """Reformatting a file, adding a comment or dropping the UUID is not a change."""
    path = write(world.files, "a")
    reconcile(world.conn, [world.files])
    text = path.read_text(encoding="utf-8")
    path.write_text("<!-- managed -->\n" + text.replace("\n  ", "\n\t\t"), encoding="utf-8")
    again, _ = reconcile(world.conn, [world.files])
    assert again.empty


def test_text_only_update(world: World) -> None:
    """A change the cell does not see updates the definition and says the cell stays the same."""
    write(world.files, "a")
    reconcile(world.conn, [world.files])
    dom = world.conn.lookupByName("a")
    cell_id = dom.ID()
    write(world.files, "a", extra="\n  <numatune><memory mode='strict' nodeset='0'/></numatune>")
    the_plan, _ = reconcile(world.conn, [world.files])
    [action] = the_plan.actions
    assert action.kind == ActionKind.UPDATE
    assert action.reason == "definition text only; the cell stays the same"
    assert action.changes == ()
    assert "+  <numatune>" in action.diff
    assert dom.ID() == cell_id
    assert dom.isUpdated() == 0
    assert reconcile(world.conn, [world.files])[0].empty


def test_running_cell_keeps_its_config_until_recreated(world: World) -> None:
    """A memory change to a running domain updates the definition and says it needs re-creating."""
    write(world.files, "a")
    reconcile(world.conn, [world.files])
    dom = world.conn.lookupByName("a")
    cell_id = dom.ID()
    write(world.files, "a", memory=128)
    the_plan, _ = reconcile(world.conn, [world.files])
    [action] = the_plan.actions
    assert action.kind == ActionKind.UPDATE
    assert action.reason == "the cell changes; needs re-create"
    assert [str(ch) for ch in action.changes] == ["memory: 64 KiB -> 128 KiB"]
    assert dom.ID() == cell_id
    assert dom.maxMemory() == 64
    assert dom.isUpdated() == 1
    again, _ = reconcile(world.conn, [world.files])
    assert again.empty
    [notice] = again.notices
    assert "needs re-creating" in notice
    assert "memory: 64 KiB -> 128 KiB" in notice


def test_recreate(world: World) -> None:
    """With recreate, a running domain whose cell changed is stopped and started again."""
    write(world.files, "a")
    reconcile(world.conn, [world.files])
    write(world.files, "a", memory=128)
    the_plan, _ = reconcile(world.conn, [world.files], recreate=True)
    assert kinds(the_plan) == [("stop", "a"), ("update", "a"), ("start", "a")]
    dom = world.conn.lookupByName("a")
    assert dom.maxMemory() == 128
    assert dom.isUpdated() == 0
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert reconcile(world.conn, [world.files], recreate=True)[0].empty


def test_defined_state_leaves_cells_alone(world: World) -> None:
    """With state 'defined' domains are defined but not started, and running ones not stopped."""
    write(world.files, "a")
    the_plan, _ = reconcile(world.conn, [world.files], state="defined")
    assert kinds(the_plan) == [("define", "a")]
    assert world.states() == {"a": (libvirt.VIR_DOMAIN_SHUTOFF, -1)}
    world.conn.lookupByName("a").create()
    assert reconcile(world.conn, [world.files], state=DesiredState.DEFINED)[0].empty


def test_stopped_state_stops(world: World) -> None:
    """With state 'stopped' running domains are destroyed; inactive ones stay as they are."""
    write(world.files, "a")
    write(world.files, "b")
    reconcile(world.conn, [world.files])
    world.conn.lookupByName("b").destroy()
    the_plan, _ = reconcile(world.conn, [world.files], state="stopped")
    assert kinds(the_plan) == [("stop", "a")]
    assert world.cells() == []


def test_extra_domains_are_kept_unless_pruned(world: World) -> None:
    """A defined domain no file describes is named and kept; prune stops and undefines it."""
    write(world.files, "a")
    extra = write(world.files, "b")
    reconcile(world.conn, [world.files])
    extra.unlink()
    kept, _ = reconcile(world.conn, [world.files])
    assert kept.empty
    assert kept.notices == ("'b' is defined but no file describes it; kept (prune undefines it)",)
    pruned, _ = reconcile(world.conn, [world.files], prune=True)
    assert kinds(pruned) == [("stop", "b"), ("undefine", "b")]
    assert list(world.states()) == ["a"]
    assert world.cells() == ["a"]


def test_cells_made_elsewhere_are_left_alone(world: World) -> None:
    """A cell without a definition is noted and left alone, even with prune."""
    write(world.files, "a")
    reconcile(world.conn, [world.files], state="defined")
    definition = world.conn.driver.store.find("a")
    assert definition is not None
    with jailhouse.open(world.uri) as hv:
        hv.create_cell(definition.config.replace(name="outsider", cpus=frozenset({1})))
    the_plan, _ = reconcile(world.conn, [world.files], prune=True, state="defined")
    assert the_plan.empty
    assert the_plan.notices == (
        "cell 'outsider' has no definition (made by another tool); left alone",
    )


def test_adopting_a_transient_domain_keeps_its_uuid(world: World) -> None:
    """A file describing a running transient domain defines it under the UUID it has."""
    transient = world.conn.createXML(XML.format(name="t", memory=64, extra=""), 0)
    write(world.files, "t")
    the_plan, _ = reconcile(world.conn, [world.files])
    assert kinds(the_plan) == [("define", "t")]
    assert the_plan.actions[0].uuid == transient.UUIDString()
    assert transient.isPersistent() == 1


def test_duplicate_names_are_refused(world: World, tmp_path: Path) -> None:
    """Two files describing one domain are refused, naming both; nothing changes."""
    write(world.files, "a")
    other = tmp_path / "other"
    other.mkdir()
    (other / "copy.xml").write_text(XML.format(name="a", memory=32, extra=""), encoding="utf-8")
    with pytest.raises(libvirt.libvirtError) as info:
        reconcile(world.conn, [world.files, other])
    assert info.value.get_error_code() == libvirt.VIR_ERR_INVALID_ARG
    assert "a.xml" in str(info.value)
    assert "copy.xml" in str(info.value)
    assert world.states() == {}


def test_bad_file_is_named(world: World) -> None:
    """A file that is not a domain fails the plan with its name in a note; nothing changes."""
    write(world.files, "a")
    (world.files / "broken.xml").write_text("<domain", encoding="utf-8")
    with pytest.raises(libvirt.libvirtError) as info:
        reconcile(world.conn, [world.files])
    assert info.value.get_error_code() == libvirt.VIR_ERR_XML_DETAIL
    assert any("broken.xml" in note for note in info.value.__notes__)
    assert world.states() == {}


def test_directory_without_xml_is_refused(world: World) -> None:
    """A directory with no .xml file is an error rather than an empty desired set."""
    with pytest.raises(libvirt.libvirtError, match=r"no \.xml file"):
        load_desired([world.files])


def test_uuid_contradicting_the_definition_is_refused(world: World) -> None:
    """A file whose <uuid> differs from the defined domain's is refused."""
    write(world.files, "a")
    reconcile(world.conn, [world.files])
    uuid = "0a973ccf-087b-4968-b208-3cd0f738e034"
    write(world.files, "a", extra=f"\n  <uuid>{uuid}</uuid>")
    with pytest.raises(libvirt.libvirtError) as info:
        reconcile(world.conn, [world.files])
    assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED
    assert uuid in str(info.value)


def test_partial_failure_rolls_back_everything(world: World) -> None:
    """When the second start fails, the run undoes its defines and its first start."""
    write(world.files, "keep")
    reconcile(world.conn, [world.files])
    before = (world.fingerprint(), world.states(), world.cells())
    write(world.files, "a")
    write(world.files, "b")
    SimHost(world.root).inject_fault("start", errno.EIO, nth=2)
    with pytest.raises(libvirt.libvirtError) as info:
        reconcile(world.conn, [world.files])
    assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED
    assert "rollback: undid 3 of 3 action(s) this run performed" in info.value.__notes__
    assert (world.fingerprint(), world.states(), world.cells()) == before


def test_failed_recreate_restores_the_old_cell(world: World) -> None:
    """A re-create whose start fails starts the old config again and restores the definition."""
    write(world.files, "a")
    reconcile(world.conn, [world.files])
    old_xml = world.conn.lookupByName("a").XMLDesc(0)
    write(world.files, "a", memory=128)
    SimHost(world.root).inject_fault("start", errno.EIO)
    with pytest.raises(libvirt.libvirtError):
        reconcile(world.conn, [world.files], recreate=True)
    dom = world.conn.lookupByName("a")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert dom.XMLDesc(0) == old_xml
    assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == old_xml


def test_rollback_restarts_stopped_cells_with_their_ids(world: World) -> None:
    """A failed run that stopped cells starts them again with their ids and live records."""
    for name in ("keep", "change", "gone"):
        write(world.files, name)
    reconcile(world.conn, [world.files])
    before = (world.fingerprint(), world.states())
    (world.files / "gone.xml").unlink()
    write(world.files, "change", memory=128)
    write(world.files, "new")
    SimHost(world.root).inject_fault("start", errno.EIO)
    with pytest.raises(libvirt.libvirtError) as info:
        reconcile(world.conn, [world.files], prune=True, recreate=True)
    assert "rollback: undid 5 of 5 action(s) this run performed" in info.value.__notes__
    assert (world.fingerprint(), world.states()) == before


def test_unbootable_domain_fails_before_anything(world: World) -> None:
    """A Linux boot in the desired set fails the apply before any action runs."""
    write(world.files, "a")
    kernel = world.files.parent / "Image"
    kernel.write_bytes(bytes(0x1000))  # no kernel: its magic is missing
    (world.files / "lin.xml").write_text(
        XML.format(name="lin", memory=65536, extra="").replace(
            "hvm</type></os>", f"hvm</type><kernel>{kernel}</kernel></os>"
        ),
        encoding="utf-8",
    )
    with pytest.raises(libvirt.libvirtError) as info:
        reconcile(world.conn, [world.files])
    assert info.value.get_error_code() == libvirt.VIR_ERR_CONFIG_UNSUPPORTED
    assert world.states() == {}


def test_cancel_rolls_back(world: World) -> None:
    """Cancelling between actions undoes what the run did and raises OPERATION_ABORTED."""
    write(world.files, "a")
    write(world.files, "b")
    job = Job()

    def progress(p: JobProgress) -> None:
        if p.step.startswith("> start a") and p.outcome == JobOutcome.RUNNING:
            job.cancel()

    job.progress = progress
    with pytest.raises(libvirt.libvirtError) as info:
        reconcile(world.conn, [world.files], job=job)
    assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED
    assert world.states() == {}
    assert world.cells() == []


def test_progress_names_each_action(world: World) -> None:
    """The job reports each action as a step, and the boot steps of each start inside it."""
    write(world.files, "a")
    seen: list[JobProgress] = []
    reconcile(world.conn, [world.files], job=Job(seen.append))
    steps = [p.step for p in seen if p.outcome == JobOutcome.RUNNING]
    assert steps[0] == "+ define a (new; CPUs 3, 64 KiB, boot: park-loop inmate)"
    assert steps[1] == "> start a (not running)"
    assert "start cell" in steps
    assert seen[-1].outcome == JobOutcome.COMPLETED
    assert seen[-1].steps == 2 + 4  # two actions, four boot steps


def test_stale_plan_is_refused(world: World) -> None:
    """A plan made before another change is refused instead of applied blindly."""
    write(world.files, "a")
    the_plan = plan(world.conn, [world.files])
    world.conn.defineXML(XML.format(name="other", memory=64, extra=""))
    with pytest.raises(libvirt.libvirtError) as info:
        apply(world.conn, the_plan)
    assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED
    assert "make the plan again" in str(info.value)
    assert "a" not in world.states()


def test_readonly_connection_plans_but_does_not_apply(world: World) -> None:
    """A read-only connection can show a plan; applying it is VIR_ERR_OPERATION_DENIED."""
    write(world.files, "a")
    with libvirt.openReadOnly(world.uri) as ro:
        the_plan, _ = reconcile(ro, [world.files], dry_run=True)
        assert kinds(the_plan) == [("define", "a"), ("start", "a")]
        with pytest.raises(libvirt.libvirtError) as info:
            reconcile(ro, [world.files])
    assert info.value.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED


def test_desired_domains_from_strings(world: World) -> None:
    """The API takes XML documents directly as DesiredDomain values."""
    desired = [DesiredDomain(XML.format(name="s", memory=64, extra=""), "inline")]
    the_plan = plan(world.conn, desired, state="defined")
    result = apply(world.conn, the_plan)
    assert [a.kind for a in result.performed] == [ActionKind.DEFINE]
    assert world.states() == {"s": (libvirt.VIR_DOMAIN_SHUTOFF, -1)}
