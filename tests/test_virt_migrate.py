"""jailhouse.virt migration: the definition moves offline, a cold move restarts the cell there."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import jailhouse
import jailhouse.virt as libvirt
from jailhouse.examples import example_system
from jailhouse.sim import SimHost
from jailhouse.virt import _migrate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

NS = "urn:x-python-jailhouse:domain:1"


def domain_xml(name: str, *, vcpus: int = 1, images: str = "", pin: str = "") -> str:
    """A small arm64 domain, with boot images in the jailhouse metadata if given."""
    metadata = (
        f"<metadata><jailhouse:cell xmlns:jailhouse='{NS}'><jailhouse:boot>{images}"
        "</jailhouse:boot></jailhouse:cell></metadata>"
        if images
        else ""
    )
    return (
        f"<domain type='jailhouse'><name>{name}</name>{metadata}"
        f"<memory unit='KiB'>64</memory><vcpu>{vcpus}</vcpu>{pin}"
        "<os><type arch='aarch64'>hvm</type></os></domain>"
    )


def error_of(call: Callable[[], object]) -> tuple[int | None, str]:
    """Run a call that must fail; return its libvirt error code and message."""
    with pytest.raises(libvirt.libvirtError) as info:
        call()
    return info.value.get_error_code(), info.value.get_error_message() or ""


def board(root: Path, cpus: int = 4) -> libvirt.virConnect:
    """Enable a simulated arm64 board and open a connection with its system recorded."""
    uri = f"sim://{root}?arch=arm64&cpus={cpus}"
    with jailhouse.open(uri) as hv:
        hv.enable(example_system("arm64"))
    conn = libvirt.open(uri)
    conn.setSystemConfig(example_system("arm64"))
    return conn


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[tuple[libvirt.virConnect, libvirt.virConnect]]:
    """Two simulated boards: the source and the destination."""
    with board(tmp_path / "a") as a, board(tmp_path / "b") as b:
        yield a, b


OFFLINE = libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PERSIST_DEST


def test_offline_moves_definition_and_images(
    boards: tuple[libvirt.virConnect, libvirt.virConnect], tmp_path: Path
) -> None:
    """OFFLINE|PERSIST_DEST|UNDEFINE_SOURCE copies the image, defines there, undefines here."""
    src, dst = boards
    image = tmp_path / "inmate.bin"
    image.write_bytes(b"\x01\x02inmate")
    dom = src.defineXML(
        domain_xml("worker", images=f"<jailhouse:image file='{image}' address='0x0'/>")
    )
    uuid = dom.UUIDString()
    moved = dom.migrate(dst, OFFLINE | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    assert moved.UUIDString() == uuid
    assert moved.isPersistent() == 1
    assert moved.isActive() == 0
    assert src.listDefinedDomains() == []
    copy = _migrate.images_dir(dst, "worker") / "0-inmate.bin"
    assert copy.read_bytes() == b"\x01\x02inmate"
    assert f'file="{copy}"' in moved.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_offline_keeps_a_running_source_running(
    boards: tuple[libvirt.virConnect, libvirt.virConnect],
) -> None:
    """An offline move of a running domain leaves its cell running, transient once undefined."""
    src, dst = boards
    dom = src.defineXML(domain_xml("worker"))
    dom.create()
    moved = dom.migrate(dst, OFFLINE | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert dom.isPersistent() == 0
    assert moved.isActive() == 0


def test_offline_replaces_the_cell_on_the_destination_system(tmp_path: Path) -> None:
    """The destination places the cell clear of its own domains: other CPUs than the source's."""
    with board(tmp_path / "a") as src, board(tmp_path / "b") as dst:
        dst.defineXML(domain_xml("resident", vcpus=1))
        dom = src.defineXML(domain_xml("worker"))
        before = dst.driver.find_name("resident").persistent
        assert before is not None
        moved = dom.migrate(dst, OFFLINE)
        placed = dst.driver.find_name(moved.name()).persistent
        assert placed is not None
        assert not placed.config.cpus & before.config.cpus
        assert src.lookupByName("worker").isPersistent() == 1  # no UNDEFINE_SOURCE


def test_conflicting_pin_on_destination_changes_nothing(
    boards: tuple[libvirt.virConnect, libvirt.virConnect],
) -> None:
    """A pin to a CPU a destination cell owns fails naming it; both sides stay as they were."""
    src, dst = boards
    dst.defineXML(domain_xml("resident", pin="<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>"))
    dom = src.defineXML(
        domain_xml("worker", pin="<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>")
    )
    code, message = error_of(
        lambda: dom.migrate(dst, OFFLINE | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    )
    assert code == libvirt.VIR_ERR_CONFIG_UNSUPPORTED
    assert "belongs to cell 'resident'" in message
    assert src.listDefinedDomains() == ["worker"]
    assert dst.listDefinedDomains() == ["resident"]
    assert not _migrate.images_dir(dst, "worker").exists()


def test_name_taken_on_destination_is_refused(
    boards: tuple[libvirt.virConnect, libvirt.virConnect],
) -> None:
    """A destination that has a domain of that name refuses before anything changes."""
    src, dst = boards
    dst.defineXML(domain_xml("worker"))
    dom = src.defineXML(domain_xml("worker"))
    code, message = error_of(lambda: dom.migrate(dst, OFFLINE))
    assert code == libvirt.VIR_ERR_OPERATION_INVALID
    assert "already exists" in message
    assert src.lookupByName("worker").isPersistent() == 1


def test_dname_and_destination_xml(boards: tuple[libvirt.virConnect, libvirt.virConnect]) -> None:
    """A dname renames the domain there; a destination XML with another UUID is refused."""
    src, dst = boards
    dom = src.defineXML(domain_xml("worker"))
    code, message = error_of(
        lambda: dom.migrate2(
            dst,
            domain_xml("worker").replace(
                "<name>worker</name>",
                "<name>worker</name><uuid>00000000-0000-0000-0000-000000000001</uuid>",
            ),
            OFFLINE,
        )
    )
    assert code == libvirt.VIR_ERR_INVALID_ARG
    assert "keeps its UUID" in message
    moved = dom.migrate3(dst, {libvirt.VIR_MIGRATE_PARAM_DEST_NAME: "worker-b"}, OFFLINE)
    assert moved.name() == "worker-b"
    assert moved.UUIDString() == dom.UUIDString()


def test_live_migration_is_unsupported(
    boards: tuple[libvirt.virConnect, libvirt.virConnect],
) -> None:
    """A running domain without OFFLINE or cold, or with LIVE, cannot move: the reason is given."""
    src, dst = boards
    dom = src.defineXML(domain_xml("worker"))
    dom.create()
    for flags in (0, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST):
        code, message = error_of(lambda flags=flags: dom.migrate(dst, flags))
        assert code == libvirt.VIR_ERR_OPERATION_UNSUPPORTED
        assert "cannot migrate live" in message
    assert dst.listAllDomains() == []


def test_flag_rules(boards: tuple[libvirt.virConnect, libvirt.virConnect]) -> None:
    """OFFLINE needs PERSIST_DEST and refuses LIVE; inactive needs OFFLINE; same host fails."""
    src, dst = boards
    dom = src.defineXML(domain_xml("worker"))
    assert error_of(lambda: dom.migrate(dst, libvirt.VIR_MIGRATE_OFFLINE))[0] == (
        libvirt.VIR_ERR_INVALID_ARG
    )
    assert error_of(lambda: dom.migrate(dst, OFFLINE | libvirt.VIR_MIGRATE_LIVE))[0] == (
        libvirt.VIR_ERR_INVALID_ARG
    )
    assert error_of(lambda: dom.migrate(dst, libvirt.VIR_MIGRATE_PERSIST_DEST))[0] == (
        libvirt.VIR_ERR_OPERATION_INVALID
    )
    assert error_of(lambda: dom.migrate(src, OFFLINE))[0] == libvirt.VIR_ERR_OPERATION_INVALID
    assert error_of(lambda: dom.migrate(dst, 1 << 30))[0] == libvirt.VIR_ERR_INVALID_ARG
    assert dst.listAllDomains() == []


def test_cold_move_stops_here_and_starts_there(
    boards: tuple[libvirt.virConnect, libvirt.virConnect],
) -> None:
    """cold=True destroys the source cell, starts the destination's, then undefines the source."""
    src, dst = boards
    dom = src.defineXML(domain_xml("worker"))
    dom.create()
    moved = dom.migrate(dst, libvirt.VIR_MIGRATE_UNDEFINE_SOURCE, cold=True)
    assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert src.listAllDomains() == []
    assert [c.name for c in src.driver.hv.cells()] == ["arm64-root"]


def test_cold_move_failing_start_restarts_source(tmp_path: Path) -> None:
    """When the destination cannot start the cell, its definition goes and the source runs again."""
    with board(tmp_path / "a") as src, board(tmp_path / "b") as dst:
        dom = src.defineXML(domain_xml("worker"))
        dom.create()
        SimHost(tmp_path / "b").inject_fault("start", 5)
        with pytest.raises(libvirt.libvirtError):
            dom.migrate(dst, libvirt.VIR_MIGRATE_UNDEFINE_SOURCE, cold=True)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dom.isPersistent() == 1
        assert dst.listAllDomains() == []


def test_migrate_to_uri_opens_the_destination(tmp_path: Path) -> None:
    """migrateToURI3 opens the destination URI itself (peer to peer) and moves the definition."""
    with board(tmp_path / "a") as src, board(tmp_path / "b") as dst:
        dom = src.defineXML(domain_xml("worker"))
        assert (
            dom.migrateToURI3(dst.getURI(), {}, OFFLINE | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE) == 0
        )
        assert dst.listDefinedDomains() == ["worker"]
        assert src.listDefinedDomains() == []


def test_package_round_trips_through_json(
    boards: tuple[libvirt.virConnect, libvirt.virConnect], tmp_path: Path
) -> None:
    """A migration package survives JSON (as the Salt runner carries it); junk is refused."""
    src, _ = boards
    image = tmp_path / "i.bin"
    image.write_bytes(bytes(range(256)))
    dom = src.defineXML(
        domain_xml("worker", images=f"<jailhouse:image file='{image}' address='0x0'/>")
    )
    package = _migrate.export_package(dom)
    assert _migrate.MigrationPackage.from_json(package.to_json()) == package
    code, message = error_of(lambda: _migrate.MigrationPackage.from_json({"name": "x"}))
    assert code == libvirt.VIR_ERR_INVALID_ARG
    assert "malformed migration package" in message


@pytest.mark.libvirt
def test_flag_values_match_libvirt_python() -> None:
    """The migration flags and parameter names are libvirt-python's."""
    real = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    for name in _migrate.__all__:
        assert getattr(real, name) == getattr(libvirt, name), name
