"""jailhouse.virt: libvirt-python's API over cells of a simulated host."""

from __future__ import annotations

import errno
import multiprocessing
from typing import TYPE_CHECKING

import pytest

import jailhouse
import jailhouse.virt as libvirt
from jailhouse.config.model import Arch
from jailhouse.examples import example_system
from jailhouse.inmates import park_inmate
from jailhouse.jobs import Job, JobOutcome, JobProgress
from jailhouse.sim import SimHost
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from jailhouse.examples import ExampleArch

ARCH_NAMES = {"arm64": "aarch64", "x86": "x86_64"}
UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


def domain_xml(
    name: str,
    arch: ExampleArch = "arm64",
    *,
    uuid: str | None = None,
    memory_kib: int = 64,
    vcpus: int = 1,
    os_extra: str = "",
    metadata: str = "",
) -> str:
    """A small domain for the example system of ``arch``."""
    uuid_el = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (
        f"<domain type='jailhouse'><name>{name}</name>{uuid_el}{metadata}"
        f"<memory unit='KiB'>{memory_kib}</memory><vcpu>{vcpus}</vcpu>"
        f"<os><type arch='{ARCH_NAMES[arch]}'>hvm</type>{os_extra}</os></domain>"
    )


def error_of(call: Callable[[], object]) -> tuple[int | None, str]:
    """Run a call that must fail; return its libvirt error code and message."""
    with pytest.raises(libvirt.libvirtError) as info:
        call()
    return info.value.get_error_code(), info.value.get_error_message() or ""


class Host:
    """A simulated host enabled with an example system, and its URI."""

    def __init__(self, root: Path, arch: ExampleArch) -> None:
        """Enable the host and remember its URI."""
        self.arch: ExampleArch = arch
        self.root = root
        self.system = example_system(arch)
        self.uri = f"sim://{root}?arch={arch}&cpus=4"
        with jailhouse.open(self.uri) as hv:
            hv.enable(self.system)

    def connect(self, *, record_system: bool = True) -> libvirt.virConnect:
        """Open a connection, recording the system config in the store."""
        conn = libvirt.open(self.uri)
        if record_system:
            conn.setSystemConfig(self.system)
        return conn

    def xml(self, name: str, **kwargs: object) -> str:
        """A domain XML for this host's arch."""
        return domain_xml(name, self.arch, **kwargs)  # type: ignore[arg-type]

    def snapshot(self) -> jailhouse.sim.HostSnapshot:
        """The simulator's view of the host."""
        return SimHost(self.root).snapshot()


@pytest.fixture(params=["arm64", "x86"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Host:
    """An enabled simulated host of each example arch."""
    return Host(tmp_path / "host", request.param)


@pytest.fixture
def conn(host: Host) -> Iterator[libvirt.virConnect]:
    """A connection to the host, with its system config recorded."""
    with host.connect() as c:
        yield c


# -- connection ---------------------------------------------------------------------------


def test_unknown_scheme_is_no_connect() -> None:
    """A URI of another driver fails as libvirt does without one: VIR_ERR_NO_CONNECT."""
    code, message = error_of(lambda: libvirt.open("qemu:///system"))
    assert code == libvirt.VIR_ERR_NO_CONNECT
    assert message == "no connection driver available for qemu:///system"


def test_malformed_uri_is_invalid_arg(tmp_path: Path) -> None:
    """A sim URI with a host name or an unknown parameter is VIR_ERR_INVALID_ARG."""
    assert error_of(lambda: libvirt.open("sim://host/x"))[0] == libvirt.VIR_ERR_INVALID_ARG
    bogus = f"sim://{tmp_path}?colour=red"
    code, message = error_of(lambda: libvirt.open(bogus))
    assert code == libvirt.VIR_ERR_INVALID_ARG
    assert "colour" in message


def test_missing_device_is_a_system_error(tmp_path: Path) -> None:
    """jailhouse:///system without the device node is VIR_ERR_SYSTEM_ERROR naming it."""
    uri = f"jailhouse:///system?device={tmp_path}/nope&sysfs={tmp_path}&arch=arm64"
    code, message = error_of(lambda: libvirt.open(uri))
    assert code == libvirt.VIR_ERR_SYSTEM_ERROR
    assert "nope" in message


def test_store_lives_under_the_simulated_host(host: Host) -> None:
    """A sim connection keeps its definitions in PATH/domains."""
    with host.connect() as conn:
        dom = conn.defineXML(host.xml("a"))
    assert (host.root / "domains" / "defined" / f"{dom.UUIDString()}.json").is_file()


def test_domains_parameter_moves_the_store(host: Host, tmp_path: Path) -> None:
    """?domains=DIR keeps the definitions there, and another store does not see them."""
    elsewhere = tmp_path / "elsewhere"
    with libvirt.open(f"{host.uri}&domains={elsewhere}") as conn:
        conn.setSystemConfig(host.system)
        conn.defineXML(host.xml("a"))
        assert conn.listDefinedDomains() == ["a"]
    assert (elsewhere / "system.cell").is_file()
    with host.connect(record_system=False) as plain:
        assert plain.listDefinedDomains() == []


def test_system_parameter_names_the_system_config(host: Host, tmp_path: Path) -> None:
    """?system=PATH places domains on that config without recording one in the store."""
    path = tmp_path / "sys.cell"
    path.write_bytes(host.system.to_bytes())
    with libvirt.open(f"{host.uri}&system={path}") as conn:
        assert conn.defineXML(host.xml("a")).name() == "a"
        assert conn.systemConfig() == host.system
    assert not (host.root / "domains" / "system.cell").exists()


def test_define_needs_a_system_config(host: Host) -> None:
    """Without a system config, defineXML says how to give one (VIR_ERR_OPERATION_INVALID)."""
    with host.connect(record_system=False) as conn:
        code, message = error_of(lambda: conn.defineXML(host.xml("a")))
    assert code == libvirt.VIR_ERR_OPERATION_INVALID
    assert "setSystemConfig" in message
    assert "?system=PATH" in message


def test_system_config_of_another_hypervisor_is_refused(host: Host) -> None:
    """A recorded system config whose root cell is not the running one is refused."""
    renamed = host.system.replace(root_cell=host.system.root_cell.replace(name="elsewhere"))
    with host.connect(record_system=False) as conn:
        conn.setSystemConfig(renamed)
        code, message = error_of(lambda: conn.defineXML(host.xml("a")))
        assert code == libvirt.VIR_ERR_OPERATION_INVALID
        assert "'elsewhere'" in message


def test_set_system_config_refuses_a_cell_config(conn: libvirt.virConnect, host: Host) -> None:
    """A cell config's bytes given to setSystemConfig fail, naming what they are."""
    from jailhouse.examples import example_cells

    cell = next(iter(example_cells(host.arch).values()))
    code, message = error_of(lambda: conn.setSystemConfig(cell.to_bytes()))
    assert code == libvirt.VIR_ERR_CONFIG_UNSUPPORTED
    assert repr(cell.name) in message


def test_connection_identity(conn: libvirt.virConnect, host: Host) -> None:
    """getType, getURI and isAlive answer as libvirt's do for an open connection."""
    assert conn.getType() == "JAILHOUSE"
    assert conn.getURI() == host.uri
    assert conn.isAlive() == 1
    assert conn.getHostname()


def test_closed_connection_is_invalid_conn(host: Host) -> None:
    """After close(), calls fail with VIR_ERR_INVALID_CONN; close() itself may repeat."""
    conn = host.connect()
    dom = conn.defineXML(host.xml("a"))
    assert conn.close() == 0
    assert conn.close() == 0
    assert conn.isAlive() == 0
    code, message = error_of(conn.listAllDomains)
    assert code == libvirt.VIR_ERR_INVALID_CONN
    assert message == "invalid connection pointer in virConnectListAllDomains"
    assert error_of(dom.state)[0] == libvirt.VIR_ERR_INVALID_CONN


def test_readonly_connection_refuses_changes(conn: libvirt.virConnect, host: Host) -> None:
    """A read-only connection lists domains but every change is VIR_ERR_OPERATION_DENIED."""
    conn.defineXML(host.xml("a"))
    with libvirt.openReadOnly(host.uri) as ro:
        assert [d.name() for d in ro.listAllDomains()] == ["a"]
        code, message = error_of(lambda: ro.defineXML(host.xml("b")))
        assert code == libvirt.VIR_ERR_OPERATION_DENIED
        assert message == "operation forbidden: read only access prevents virDomainDefineXML"
        dom = ro.lookupByName("a")
        for call in (dom.create, dom.undefine, dom.destroy, dom.shutdown):
            assert error_of(call)[0] == libvirt.VIR_ERR_OPERATION_DENIED


# -- defining -----------------------------------------------------------------------------


def test_defined_domain_is_shut_off(conn: libvirt.virConnect, host: Host) -> None:
    """A new definition is persistent, inactive, SHUTOFF with ID -1, like libvirt's."""
    dom = conn.defineXML(host.xml("a"))
    assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN]
    assert dom.ID() == -1
    assert (dom.isActive(), dom.isPersistent()) == (0, 1)
    assert conn.listDefinedDomains() == ["a"]
    assert (conn.numOfDefinedDomains(), conn.numOfDomains()) == (1, 0)
    assert conn.listDomainsID() == []
    assert dom.info() == [libvirt.VIR_DOMAIN_SHUTOFF, 64, 64, 1, 0]
    assert host.snapshot().cells[1:] == ()


def test_uuid_is_generated_once_and_kept(host: Host) -> None:
    """A definition without a UUID gets one that outlives the connection and redefinition."""
    with host.connect() as conn:
        dom = conn.defineXML(host.xml("a"))
        uuid = dom.UUIDString()
        assert conn.lookupByUUIDString(uuid).name() == "a"
        conn.defineXML(host.xml("a", uuid=uuid, memory_kib=32))
    with host.connect() as again:
        dom2 = again.lookupByName("a")
        assert dom2.UUIDString() == uuid
        assert dom2.UUID() == bytes.fromhex(uuid.replace("-", ""))
        assert dom2.maxMemory() == 32


def test_uuid_from_the_xml_is_used(conn: libvirt.virConnect, host: Host) -> None:
    """A <uuid> in the XML becomes the domain's UUID; lookups accept any spelling of it."""
    conn.defineXML(host.xml("a", uuid=UUID.upper()))
    assert conn.lookupByUUIDString(UUID).name() == "a"
    assert conn.lookupByUUIDString(UUID.replace("-", "").upper()).name() == "a"
    assert conn.lookupByUUID(bytes.fromhex(UUID.replace("-", ""))).name() == "a"


def test_duplicate_name_without_or_with_other_uuid(conn: libvirt.virConnect, host: Host) -> None:
    """Redefining a name without its UUID, or with another, is VIR_ERR_OPERATION_FAILED."""
    dom = conn.defineXML(host.xml("a"))
    code, message = error_of(lambda: conn.defineXML(host.xml("a")))
    assert code == libvirt.VIR_ERR_OPERATION_FAILED
    assert message == f"operation failed: domain 'a' already exists with uuid {dom.UUIDString()}"
    other = "0a973ccf-087b-4968-b208-3cd0f738e034"
    assert error_of(lambda: conn.defineXML(host.xml("a", uuid=other)))[0] == 9


def test_same_uuid_under_another_name_is_refused(conn: libvirt.virConnect, host: Host) -> None:
    """A second name for a defined UUID is VIR_ERR_OPERATION_FAILED naming the first."""
    conn.defineXML(host.xml("a", uuid=UUID))
    code, message = error_of(lambda: conn.defineXML(host.xml("b", uuid=UUID)))
    assert code == libvirt.VIR_ERR_OPERATION_FAILED
    assert message == f"operation failed: domain 'a' is already defined with uuid {UUID}"


def test_definitions_do_not_collide(conn: libvirt.virConnect, host: Host) -> None:
    """Unpinned definitions get distinct CPUs and memory, so all of them can run at once."""
    doms = [conn.defineXML(host.xml(name)) for name in ("a", "b", "c")]
    configs = [conn.driver.store.get(d.UUIDString()) for d in doms]
    cpus = [c.config.cpus for c in configs if c is not None]
    assert len(cpus) == 3
    assert len(frozenset().union(*cpus)) == 3
    for dom in doms:
        dom.create()
    assert sorted(c.name for c in host.snapshot().cells[1:]) == ["a", "b", "c"]


def test_xml_errors_carry_libvirt_codes(conn: libvirt.virConnect, host: Host) -> None:
    """Malformed XML is 35, a foreign root 27, no name 21, an impossible cell 67."""
    assert error_of(lambda: conn.defineXML("<domain"))[0] == libvirt.VIR_ERR_XML_DETAIL
    assert error_of(lambda: conn.defineXML("<foo/>"))[0] == libvirt.VIR_ERR_XML_ERROR
    no_name = host.xml("x").replace("<name>x</name>", "")
    assert error_of(lambda: conn.defineXML(no_name))[0] == libvirt.VIR_ERR_NO_NAME
    too_many = host.xml("big", vcpus=64)
    code, message = error_of(lambda: conn.defineXML(too_many))
    assert code == libvirt.VIR_ERR_CONFIG_UNSUPPORTED
    assert message.startswith("unsupported configuration: /domain/vcpu")
    assert conn.listAllDomains() == []


def test_define_flags(conn: libvirt.virConnect, host: Host) -> None:
    """The define flags: VALIDATE is taken, unknown bits are VIR_ERR_INVALID_ARG."""
    conn.defineXMLFlags(host.xml("a"), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    code, message = error_of(lambda: conn.defineXMLFlags(host.xml("b"), 1 << 20))
    assert code == libvirt.VIR_ERR_INVALID_ARG
    assert (
        message
        == "invalid argument: unsupported flags (0x100000) in function virDomainDefineXMLFlags"
    )


def test_dumpxml_defines_the_same_cell(conn: libvirt.virConnect, host: Host) -> None:
    """Defining XMLDesc() again changes nothing: the metadata carries the exact config."""
    dom = conn.defineXML(host.xml("a"))
    before = conn.driver.store.get(dom.UUIDString())
    xml = dom.XMLDesc(0)
    assert f"<uuid>{dom.UUIDString()}</uuid>" in xml
    conn.defineXML(xml)
    after = conn.driver.store.get(dom.UUIDString())
    assert before is not None
    assert after is not None
    assert after.config.to_bytes() == before.config.to_bytes()
    assert after.boot == before.boot


def test_define_keeps_the_domain_type(conn: libvirt.virConnect, host: Host) -> None:
    """A domain defined with type='kvm' (as a libvirt tool writes it) dumps as kvm."""
    dom = conn.defineXML(host.xml("a").replace("type='jailhouse'", "type='kvm'"))
    assert dom.XMLDesc(0).startswith('<domain type="kvm">')


# -- lifecycle ----------------------------------------------------------------------------


def test_create_runs_the_park_loop(conn: libvirt.virConnect, host: Host) -> None:
    """create() of a definition without images loads the park-loop inmate and starts it."""
    dom = conn.defineXML(host.xml("a"))
    assert dom.create() == 0
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED]
    cell = host.snapshot().cell("a")
    assert dom.ID() == cell.id
    assert cell.state == CellState.RUNNING
    assert cell.images == ((0, len(park_inmate(host.system.arch))),)
    assert conn.listDomainsID() == [cell.id]
    assert conn.listDefinedDomains() == []
    assert conn.lookupByID(cell.id).name() == "a"


def test_create_loads_metadata_images(conn: libvirt.virConnect, host: Host, tmp_path: Path) -> None:
    """Boot images from the jailhouse metadata are read and loaded at their addresses."""
    image = tmp_path / "inmate.bin"
    image.write_bytes(bytes(range(256)) * 16)
    metadata = (
        "<metadata><jailhouse:cell xmlns:jailhouse='urn:x-python-jailhouse:domain:1'>"
        f"<jailhouse:boot><jailhouse:image file='{image}' address='0x100'/></jailhouse:boot>"
        "</jailhouse:cell></metadata>"
    )
    dom = conn.defineXML(host.xml("a", metadata=metadata))
    dom.create()
    assert host.snapshot().cell("a").images == ((0x100, 4096),)


def test_missing_image_creates_nothing(
    conn: libvirt.virConnect, host: Host, tmp_path: Path
) -> None:
    """An image file that is gone fails with VIR_ERR_SYSTEM_ERROR before any cell exists."""
    metadata = (
        "<metadata><jailhouse:cell xmlns:jailhouse='urn:x-python-jailhouse:domain:1'>"
        f"<jailhouse:boot><jailhouse:image file='{tmp_path}/gone.bin' address='0x0'/>"
        "</jailhouse:boot></jailhouse:cell></metadata>"
    )
    dom = conn.defineXML(host.xml("a", metadata=metadata))
    code, message = error_of(dom.create)
    assert code == libvirt.VIR_ERR_SYSTEM_ERROR
    assert "gone.bin" in message
    assert host.snapshot().cells[1:] == ()


def test_linux_domain_boots(conn: libvirt.virConnect, host: Host, tmp_path: Path) -> None:
    """<os><kernel>/<initrd>/<cmdline> boot a Linux cell; dumpxml shows them back."""
    from kernels import arm64_image, bzimage

    kernel, initrd = tmp_path / "kernel", tmp_path / "initrd"
    kernel.write_bytes(arm64_image() if host.snapshot().arch == Arch.ARM64 else bzimage())
    initrd.write_bytes(b"\x01" * 0x2000)
    extra = f"<kernel>{kernel}</kernel><initrd>{initrd}</initrd><cmdline>quiet</cmdline>"
    dom = conn.defineXML(host.xml("lin", memory_kib=65536, os_extra=extra))
    dom.create()
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    images = host.snapshot().cell("lin").images
    assert len(images) >= 3  # loader, kernel, initrd and the boot parameters
    xml = dom.XMLDesc(0)
    for text in (f"<kernel>{kernel}</kernel>", f"<initrd>{initrd}</initrd>", "<cmdline>quiet"):
        assert text in xml


def test_linux_domain_with_missing_kernel_fails_at_define(
    conn: libvirt.virConnect, host: Host, tmp_path: Path
) -> None:
    """A kernel path that does not exist fails defineXML, naming the path."""
    extra = f"<kernel>{tmp_path}/gone/Image</kernel>"
    code, message = error_of(
        lambda: conn.defineXML(host.xml("lin", memory_kib=65536, os_extra=extra))
    )
    assert code == libvirt.VIR_ERR_OPERATION_FAILED
    assert f"{tmp_path}/gone/Image" in message
    assert conn.listDefinedDomains() == []


def test_linux_domain_with_bad_kernel_creates_nothing(
    conn: libvirt.virConnect, host: Host, tmp_path: Path
) -> None:
    """A file that is no kernel is defined, but create() fails CONFIG_UNSUPPORTED, no cell."""
    kernel = tmp_path / "Image"
    kernel.write_bytes(bytes(0x1000))
    dom = conn.defineXML(host.xml("lin", memory_kib=65536, os_extra=f"<kernel>{kernel}</kernel>"))
    code, message = error_of(dom.create)
    assert code == libvirt.VIR_ERR_CONFIG_UNSUPPORTED
    assert "kernel.magic" in message
    assert host.snapshot().cells[1:] == ()


def test_create_twice_is_operation_invalid(conn: libvirt.virConnect, host: Host) -> None:
    """create() of a running domain is VIR_ERR_OPERATION_INVALID (as QEMU's driver)."""
    dom = conn.defineXML(host.xml("a"))
    dom.create()
    assert error_of(dom.create) == (
        libvirt.VIR_ERR_OPERATION_INVALID,
        "Requested operation is not valid: domain is already running",
    )


def test_shutdown_parks_the_cell_which_stays(conn: libvirt.virConnect, host: Host) -> None:
    """shutdown() stops the cell but keeps it: PAUSED (SHUTTING_DOWN), same ID, CPUs held."""
    dom = conn.defineXML(host.xml("a"))
    dom.create()
    cell_id = dom.ID()
    dom.shutdown()
    assert dom.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN]
    assert dom.ID() == cell_id
    assert dom.isActive() == 1
    cell = host.snapshot().cell("a")
    assert cell.state == CellState.SHUT_DOWN
    assert cell.cpus
    assert error_of(dom.shutdown)[0] == libvirt.VIR_ERR_OPERATION_INVALID
    listed = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)
    assert [d.name() for d in listed] == ["a"]


def test_resume_and_create_restart_a_shut_down_cell(conn: libvirt.virConnect, host: Host) -> None:
    """resume() restarts a shut-down cell in place; create() reloads it and starts it."""
    dom = conn.defineXML(host.xml("a"))
    dom.create()
    cell_id = dom.ID()
    dom.shutdown()
    dom.resume()
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED]
    assert error_of(dom.resume)[0] == libvirt.VIR_ERR_OPERATION_INVALID
    dom.shutdown()
    dom.create()
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED]
    assert dom.ID() == cell_id


def test_destroy_returns_the_cpus(conn: libvirt.virConnect, host: Host) -> None:
    """destroy() removes the cell: SHUTOFF (DESTROYED), ID -1, the root cell has its CPUs."""
    root_before = host.snapshot().root_cpus
    dom = conn.defineXML(host.xml("a"))
    dom.create()
    assert host.snapshot().root_cpus < root_before
    dom.destroy()
    assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED]
    assert dom.ID() == -1
    assert host.snapshot().root_cpus == root_before
    assert error_of(dom.destroy) == (
        libvirt.VIR_ERR_OPERATION_INVALID,
        "Requested operation is not valid: domain is not running",
    )


def test_undefine_running_makes_it_transient(conn: libvirt.virConnect, host: Host) -> None:
    """undefine() of a running domain keeps it running as a transient one; destroy ends it."""
    dom = conn.defineXML(host.xml("a"))
    dom.create()
    xml = dom.XMLDesc(0)
    dom.undefine()
    assert (dom.isActive(), dom.isPersistent()) == (1, 0)
    assert dom.XMLDesc(0) == xml
    transient = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
    assert [d.name() for d in transient] == ["a"]
    assert error_of(dom.undefine) == (
        libvirt.VIR_ERR_OPERATION_INVALID,
        "Requested operation is not valid: cannot undefine transient domain",
    )
    dom.destroy()
    code, message = error_of(dom.state)
    assert code == libvirt.VIR_ERR_NO_DOMAIN
    assert message == f"Domain not found: no domain with matching uuid '{dom.UUIDString()}' (a)"
    assert dom.ID() == -1
    assert dom.name() == "a"
    assert conn.listAllDomains() == []


def test_undefine_inactive_removes_it(conn: libvirt.virConnect, host: Host) -> None:
    """undefine() of an inactive domain removes it and its files."""
    dom = conn.defineXML(host.xml("a"))
    dom.create()
    dom.destroy()
    dom.undefine()
    assert error_of(lambda: conn.lookupByName("a"))[0] == libvirt.VIR_ERR_NO_DOMAIN
    assert list((host.root / "domains" / "defined").iterdir()) == []
    assert list((host.root / "domains" / "live").iterdir()) == []


def test_create_xml_makes_a_transient_domain(conn: libvirt.virConnect, host: Host) -> None:
    """createXML() boots a domain that is not defined; destroying it makes it disappear."""
    dom = conn.createXML(host.xml("t"), 0)
    assert (dom.isActive(), dom.isPersistent()) == (1, 0)
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED]
    dom.destroy()
    assert error_of(lambda: conn.lookupByName("t"))[0] == libvirt.VIR_ERR_NO_DOMAIN


def test_create_xml_paused(conn: libvirt.virConnect, host: Host) -> None:
    """createXML(START_PAUSED) creates and loads the cell without starting it (PAUSED, USER)."""
    dom = conn.createXML(host.xml("t"), libvirt.VIR_DOMAIN_START_PAUSED)
    assert dom.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER]
    assert host.snapshot().cell("t").state == CellState.SHUT_DOWN
    dom.resume()
    assert host.snapshot().cell("t").state == CellState.RUNNING


def test_create_xml_clashes(conn: libvirt.virConnect, host: Host) -> None:
    """A created XML of an existing name: 9 without its UUID, 55 with it while it runs."""
    dom = conn.defineXML(host.xml("a"))
    assert error_of(lambda: conn.createXML(host.xml("a"), 0))[0] == 9
    dom.create()
    same = host.xml("a", uuid=dom.UUIDString())
    assert error_of(lambda: conn.createXML(same, 0)) == (
        libvirt.VIR_ERR_OPERATION_INVALID,
        "Requested operation is not valid: domain 'a' is already active",
    )


def test_create_xml_of_a_defined_domain_keeps_it_defined(
    conn: libvirt.virConnect, host: Host
) -> None:
    """A created XML with a defined domain's name and UUID starts it; it stays defined."""
    dom = conn.defineXML(host.xml("a"))
    started = conn.createXML(host.xml("a", uuid=dom.UUIDString()), 0)
    assert started.UUIDString() == dom.UUIDString()
    assert (dom.isActive(), dom.isPersistent()) == (1, 1)


def test_redefining_a_running_domain(conn: libvirt.virConnect, host: Host) -> None:
    """A running domain keeps its live XML; the new definition takes effect at the next create."""
    dom = conn.defineXML(host.xml("a", memory_kib=64))
    dom.create()
    live = dom.XMLDesc(0)
    conn.defineXML(host.xml("a", uuid=dom.UUIDString(), memory_kib=32))
    assert dom.isUpdated() == 1
    assert dom.XMLDesc(0) == live
    assert dom.maxMemory() == 64
    assert '<memory unit="KiB">32</memory>' in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    dom.destroy()
    dom.create()
    assert dom.maxMemory() == 32
    assert dom.isUpdated() == 0


def test_create_after_redefinition_recreates_a_parked_cell(
    conn: libvirt.virConnect, host: Host
) -> None:
    """create() of a shut-down cell whose definition changed makes the cell afresh."""
    dom = conn.defineXML(host.xml("a", memory_kib=64))
    dom.create()
    dom.shutdown()
    conn.defineXML(host.xml("a", uuid=dom.UUIDString(), memory_kib=32))
    dom.create()
    assert dom.maxMemory() == 32
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_failed_start_leaves_no_cell(conn: libvirt.virConnect, host: Host) -> None:
    """When the driver refuses the start, create() destroys the cell it made and says why."""
    dom = conn.defineXML(host.xml("a"))
    SimHost(host.root).inject_fault("start", errno.EIO)
    code, message = error_of(dom.create)
    assert code == libvirt.VIR_ERR_OPERATION_FAILED
    assert "cell start 'a'" in message
    assert host.snapshot().cells[1:] == ()
    assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN]


def test_busy_cpu_is_resource_busy(conn: libvirt.virConnect, host: Host) -> None:
    """A CPU another cell holds fails create() with VIR_ERR_RESOURCE_BUSY."""
    dom = conn.defineXML(host.xml("a"))
    config = conn.driver.store.get(dom.UUIDString())
    assert config is not None
    with jailhouse.open(host.uri) as hv:
        hv.create_cell(config.config.replace(name="squatter"))
    assert error_of(dom.create)[0] == libvirt.VIR_ERR_RESOURCE_BUSY


def test_disabled_hypervisor_is_operation_invalid(conn: libvirt.virConnect, host: Host) -> None:
    """create() while the hypervisor is disabled is VIR_ERR_OPERATION_INVALID."""
    dom = conn.defineXML(host.xml("a"))
    conn.driver.hv.disable()
    code, message = error_of(dom.create)
    assert code == libvirt.VIR_ERR_OPERATION_INVALID
    assert "enable the hypervisor" in message


def test_failed_and_locked_cells(conn: libvirt.virConnect, host: Host) -> None:
    """A failed cell is CRASHED; a running/locked one RUNNING, and it blocks destroying others."""
    sim = SimHost(host.root)
    sim.script_cell("bad", on_start="fail")
    sim.script_cell("lock", on_start="lock")
    bad = conn.defineXML(host.xml("bad"))
    bad.create()
    assert bad.state() == [libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_UNKNOWN]
    other = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_OTHER)
    assert [d.name() for d in other] == ["bad"]
    lock = conn.defineXML(host.xml("lock"))
    lock.create()
    assert lock.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert error_of(bad.destroy)[0] == libvirt.VIR_ERR_OPERATION_FAILED


def test_foreign_cell_is_a_transient_domain(conn: libvirt.virConnect, host: Host) -> None:
    """A cell made outside the facade is listed, with a UUID derived from its name."""
    dom = conn.defineXML(host.xml("a"))
    definition = conn.driver.store.get(dom.UUIDString())
    assert definition is not None
    dom.undefine()
    with jailhouse.open(host.uri) as hv:
        hv.create_cell(definition.config.replace(name="outsider"))
    found = conn.lookupByName("outsider")
    assert (found.isActive(), found.isPersistent()) == (1, 0)
    assert found.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN]
    assert conn.lookupByUUIDString(found.UUIDString()).name() == "outsider"
    with host.connect() as other:
        assert other.lookupByName("outsider").UUIDString() == found.UUIDString()
    xml = found.XMLDesc(0)
    assert "<name>outsider</name>" in xml
    assert "created outside" in xml
    assert error_of(found.create)[0] == libvirt.VIR_ERR_OPERATION_INVALID
    found.destroy()
    assert conn.listAllDomains() == []


def test_root_cell_is_not_a_domain(conn: libvirt.virConnect) -> None:
    """The root cell (id 0) is the host: lookupByID(0) is VIR_ERR_NO_DOMAIN."""
    code, message = error_of(lambda: conn.lookupByID(0))
    assert code == libvirt.VIR_ERR_NO_DOMAIN
    assert "root cell" in message
    assert conn.listAllDomains() == []


def test_lookup_errors(conn: libvirt.virConnect) -> None:
    """Missing domains are 42; a negative id or a malformed UUID is 8."""
    assert error_of(lambda: conn.lookupByName("none")) == (
        libvirt.VIR_ERR_NO_DOMAIN,
        "Domain not found: no domain with matching name 'none'",
    )
    assert error_of(lambda: conn.lookupByID(7))[0] == libvirt.VIR_ERR_NO_DOMAIN
    assert error_of(lambda: conn.lookupByUUIDString(UUID))[0] == libvirt.VIR_ERR_NO_DOMAIN
    assert error_of(lambda: conn.lookupByID(-1))[0] == libvirt.VIR_ERR_INVALID_ARG
    assert error_of(lambda: conn.lookupByUUIDString("zz"))[0] == libvirt.VIR_ERR_INVALID_ARG
    assert error_of(lambda: conn.lookupByUUID(b"short"))[0] == libvirt.VIR_ERR_INVALID_ARG


def test_list_flags(conn: libvirt.virConnect, host: Host) -> None:
    """The list flags are OR'd within a group and AND'd across groups, as libvirt documents."""
    off = conn.defineXML(host.xml("off"))
    run = conn.defineXML(host.xml("run"))
    run.create()
    trans = conn.createXML(host.xml("trans"), 0)
    trans.shutdown()
    assert off.isActive() == 0

    def names(flags: int) -> list[str]:
        return sorted(d.name() for d in conn.listAllDomains(flags))

    f = libvirt
    assert names(0) == ["off", "run", "trans"]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_ACTIVE) == ["run", "trans"]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_INACTIVE) == ["off"]
    both = f.VIR_CONNECT_LIST_DOMAINS_ACTIVE | f.VIR_CONNECT_LIST_DOMAINS_INACTIVE
    assert names(both) == ["off", "run", "trans"]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_PERSISTENT) == ["off", "run"]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_ACTIVE | f.VIR_CONNECT_LIST_DOMAINS_PERSISTENT) == [
        "run"
    ]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_RUNNING) == ["run"]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_PAUSED | f.VIR_CONNECT_LIST_DOMAINS_SHUTOFF) == [
        "off",
        "trans",
    ]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE) == []
    assert names(f.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART) == ["off", "run", "trans"]
    assert names(f.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT) == []
    assert error_of(lambda: conn.listAllDomains(1 << 16))[0] == libvirt.VIR_ERR_INVALID_ARG


def test_migration_and_suspend_are_unsupported(conn: libvirt.virConnect, host: Host) -> None:
    """Every migration call and suspend() are VIR_ERR_OPERATION_UNSUPPORTED with a reason."""
    dom = conn.defineXML(host.xml("a"))
    dom.create()
    calls: list[Callable[[], object]] = [
        lambda: dom.migrate(conn, 0, None, None, 0),
        lambda: dom.migrate2(conn),
        lambda: dom.migrate3(conn, {}, 0),
        lambda: dom.migrateToURI("sim:///elsewhere", 0, None, 0),
        dom.migrateToURI2,
        lambda: dom.migrateToURI3("sim:///elsewhere", {}, 0),
        lambda: dom.migrateSetMaxDowntime(10),
        lambda: dom.migrateSetMaxSpeed(10),
    ]
    for call in calls:
        code, message = error_of(call)
        assert code == libvirt.VIR_ERR_OPERATION_UNSUPPORTED
        assert message.startswith("Operation not supported: a Jailhouse cell cannot migrate")
        assert "partitioning hypervisor" in message
    code, message = error_of(dom.suspend)
    assert code == libvirt.VIR_ERR_OPERATION_UNSUPPORTED
    assert "suspended" in message


def test_unsupported_flags(conn: libvirt.virConnect, host: Host) -> None:
    """Unknown flag bits are refused with VIR_ERR_INVALID_ARG naming libvirt's function."""
    dom = conn.defineXML(host.xml("a"))
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: dom.XMLDesc(1 << 20), "virDomainGetXMLDesc"),
        (lambda: dom.state(1), "virDomainGetState"),
        (lambda: dom.createWithFlags(1 << 20), "virDomainCreateWithFlags"),
        (lambda: dom.undefineFlags(1 << 20), "virDomainUndefineFlags"),
        (lambda: dom.destroyFlags(1 << 20), "virDomainDestroyFlags"),
        (
            lambda: conn.createXML(host.xml("b"), libvirt.VIR_DOMAIN_START_AUTODESTROY),
            "virDomainCreateXML",
        ),
    ]
    for call, function in cases:
        code, message = error_of(call)
        assert code == libvirt.VIR_ERR_INVALID_ARG
        assert message.endswith(f"in function {function}")


def test_error_shape_and_handler(conn: libvirt.virConnect) -> None:
    """Errors have libvirt-python's accessors; the registered handler sees each error."""
    seen: list[tuple[object, list[object]]] = []
    libvirt.registerErrorHandler(lambda ctx, err: seen.append((ctx, err)), "ctx")
    try:
        with pytest.raises(libvirt.libvirtError) as info:
            conn.lookupByName("none")
    finally:
        libvirt.registerErrorHandler(None, None)
    e = info.value
    assert str(e) == e.get_error_message()
    assert e.get_error_domain() == libvirt.VIR_FROM_DOM
    assert e.get_error_level() == libvirt.VIR_ERR_ERROR
    assert e.get_str1() == "Domain not found: %s"
    assert e.get_str2() == "no domain with matching name 'none'"
    assert e.get_str3() is None
    assert (e.get_int1(), e.get_int2()) == (-1, -1)
    assert seen == [("ctx", e.err)]
    assert libvirt.virGetLastError() == e.err
    assert isinstance(e, jailhouse.JailhouseError)


def test_system_error_carries_the_errno(
    conn: libvirt.virConnect, host: Host, tmp_path: Path
) -> None:
    """A system error keeps the errno in int1, as libvirt's virReportSystemError does."""
    metadata = (
        "<metadata><jailhouse:cell xmlns:jailhouse='urn:x-python-jailhouse:domain:1'>"
        f"<jailhouse:boot><jailhouse:image file='{tmp_path}/gone' address='0x0'/>"
        "</jailhouse:boot></jailhouse:cell></metadata>"
    )
    dom = conn.defineXML(host.xml("a", metadata=metadata))
    with pytest.raises(libvirt.libvirtError) as info:
        dom.create()
    assert info.value.get_int1() == errno.ENOENT
    assert isinstance(info.value.__cause__, FileNotFoundError)


# -- jobs ---------------------------------------------------------------------------------


def test_create_reports_progress(conn: libvirt.virConnect, host: Host, tmp_path: Path) -> None:
    """create() reports its four steps in order and the image bytes it reads."""
    image = tmp_path / "big.bin"
    image.write_bytes(b"\x01" * (3 << 20))
    address = 0 if host.arch == "arm64" else 0x200000  # x86: RAM above the comm region
    metadata = (
        "<metadata><jailhouse:cell xmlns:jailhouse='urn:x-python-jailhouse:domain:1'>"
        f"<jailhouse:boot><jailhouse:image file='{image}' address='{address:#x}'/>"
        "</jailhouse:boot></jailhouse:cell></metadata>"
    )
    memory = 4096 if host.arch == "arm64" else 8192
    dom = conn.defineXML(host.xml("a", metadata=metadata, memory_kib=memory))
    seen: list[JobProgress] = []
    dom.create(job=Job(seen.append))
    steps = [p.step for p in seen if p.bytes_done == 0 or p.step != "read images"]
    assert [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s] == [
        "read images",
        "create cell",
        "load images",
        "start cell",
    ]
    reads = [p.bytes_done for p in seen if p.step == "read images" and p.bytes_done]
    assert reads == [1 << 20, 2 << 20, 3 << 20]
    assert seen[-1].outcome == JobOutcome.COMPLETED
    assert seen[-1].bytes_total == 3 << 20


@pytest.mark.parametrize("stop_at", ["read images", "create cell", "load images"])
def test_cancel_between_steps_undoes_everything(
    conn: libvirt.virConnect, host: Host, stop_at: str
) -> None:
    """A job cancelled in any step but the last ends in VIR_ERR_OPERATION_ABORTED, no cell."""
    dom = conn.defineXML(host.xml("a"))
    job = Job()

    def progress(p: JobProgress) -> None:
        if p.step == stop_at and p.outcome == JobOutcome.RUNNING:
            job.cancel()

    job.progress = progress
    code, message = error_of(lambda: dom.create(job=job))
    assert code == libvirt.VIR_ERR_OPERATION_ABORTED
    assert "undone" in message
    assert host.snapshot().cells[1:] == ()
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert job.snapshot().outcome == JobOutcome.CANCELLED
    assert not job.cancelled
    job.progress = None
    dom.create(job=job)  # the job can run again
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_cancel_during_the_last_step_completes(conn: libvirt.virConnect, host: Host) -> None:
    """A cancel that arrives while the cell starts is too late: the create completes."""
    dom = conn.defineXML(host.xml("a"))
    job = Job()

    def progress(p: JobProgress) -> None:
        if p.step == "start cell" and p.outcome == JobOutcome.RUNNING:
            job.cancel()

    job.progress = progress
    dom.create(job=job)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert job.snapshot().outcome == JobOutcome.COMPLETED
    assert not job.cancelled


def test_cancel_before_the_first_step(conn: libvirt.virConnect, host: Host) -> None:
    """A job cancelled before create() begins stops it at once: nothing is read or made."""
    dom = conn.defineXML(host.xml("a"))
    job = Job()
    job.cancel()
    assert error_of(lambda: dom.create(job=job))[0] == libvirt.VIR_ERR_OPERATION_ABORTED
    assert job.snapshot().step_index == 0
    assert host.snapshot().cells[1:] == ()


def test_abort_job_and_job_info(conn: libvirt.virConnect, host: Host) -> None:
    """abortJob() cancels the running create; jobInfo() shows it while it runs."""
    dom = conn.defineXML(host.xml("a"))
    assert dom.jobInfo() == [libvirt.VIR_DOMAIN_JOB_NONE] + [0] * 11
    assert error_of(dom.abortJob)[0] == libvirt.VIR_ERR_OPERATION_INVALID
    infos: list[list[int]] = []

    def progress(p: JobProgress) -> None:
        if p.step == "load images" and p.outcome == JobOutcome.RUNNING and not infos:
            infos.append(dom.jobInfo())
            dom.abortJob()

    assert error_of(lambda: dom.create(job=Job(progress)))[0] == libvirt.VIR_ERR_OPERATION_ABORTED
    [info] = infos
    assert info[0] == libvirt.VIR_DOMAIN_JOB_BOUNDED
    assert info[9:] == [4, 3, 1]  # steps: total, done, remaining
    assert host.snapshot().cells[1:] == ()
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE


def test_interrupt_rolls_back(conn: libvirt.virConnect, host: Host) -> None:
    """A KeyboardInterrupt in the middle of create() destroys the cell before it propagates."""
    dom = conn.defineXML(host.xml("a"))

    def progress(p: JobProgress) -> None:
        if p.step == "start cell":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dom.create(job=Job(progress))
    assert host.snapshot().cells[1:] == ()


def test_nested_operations_report_into_one_job() -> None:
    """An operation inside another adds its steps to the job instead of resetting it."""
    seen: list[JobProgress] = []
    job = Job(seen.append)
    with job.running("apply", steps=2):
        job.step("define a")
        with job.running("create 'a'", steps=2):
            job.step("create cell")
            job.step("start cell")
        job.step("done")
    assert [(p.operation, p.step_index, p.steps) for p in seen[:-1]] == [
        ("apply", 1, 2),
        ("apply", 2, 4),
        ("apply", 3, 4),
        ("apply", 4, 4),
    ]
    assert seen[-1].outcome == JobOutcome.COMPLETED
    assert seen[-1].fraction == 1.0


def test_progress_fraction() -> None:
    """The fraction counts steps, and within a step that reads bytes, the bytes read."""
    p = JobProgress("op", "read", 1, 4, bytes_done=25, bytes_total=100)
    assert p.fraction == 0.25 / 4
    assert JobProgress("op", "load", 2, 4, bytes_done=100, bytes_total=100).fraction == 0.5
    assert str(p) == "op: step 1/4 read (25/100 bytes)"


def test_ctrl_c_cancels_instead_of_interrupting() -> None:
    """Under cancel_on_interrupt, SIGINT cancels the job; the old handler comes back after."""
    import os
    import signal

    from jailhouse.jobs import JobCancelledError, cancel_on_interrupt

    job = Job()
    notes: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with cancel_on_interrupt(job, lambda: notes.append("stopping")), job.running("op", steps=2):
        job.step("first")
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(JobCancelledError, match="cancelled before 'second'"):
            job.step("second")
    assert notes == ["stopping"]
    assert signal.getsignal(signal.SIGINT) is before


# -- processes ----------------------------------------------------------------------------


def _define_one(uri: str, name: str, arch: ExampleArch) -> None:
    with libvirt.open(uri) as conn:
        conn.defineXML(domain_xml(name, arch))


def test_processes_defining_at_once_do_not_collide(host: Host) -> None:
    """Three processes defining unpinned domains at once get three different CPUs."""
    with host.connect():
        pass
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_define_one, args=(host.uri, f"p{i}", host.arch)) for i in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0, 0, 0]
    with host.connect() as conn:
        definitions = conn.driver.store.definitions()
        for dom in conn.listAllDomains():
            dom.create()
    assert len({frozenset(d.config.cpus) for d in definitions}) == 3
    assert len(host.snapshot().cells) == 4


# -- the kernel device --------------------------------------------------------------------


@pytest.mark.fuse
def test_kernel_uri_through_a_fuse_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A jailhouse:///system URI drives the kernel backend; the store follows its override."""
    from jailhouse.config.model import Arch
    from jailhouse.testing import FuseDevice, fuse_unavailable

    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(f"FUSE: {reason}")
    root = tmp_path / "host"
    SimHost(root, arch=Arch.ARM64, cpus=4)
    monkeypatch.setenv(libvirt.STORE_ENV, str(tmp_path / "env-store"))
    system = example_system("arm64")
    with FuseDevice(root, tmp_path / "mnt") as fuse:
        assert fuse.uri.startswith("jailhouse:///system?")
        with jailhouse.open(fuse.uri) as hv:
            hv.enable(system)
        with libvirt.open(fuse.uri) as conn:
            conn.setSystemConfig(system)
            dom = conn.defineXML(domain_xml("k"))
            dom.create()
            assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED]
            assert SimHost(root).snapshot().cell("k").state == CellState.RUNNING
            dom.destroy()
        assert (tmp_path / "env-store" / "defined" / f"{dom.UUIDString()}.json").is_file()
        with libvirt.open(f"{fuse.uri}&domains={tmp_path / 'param-store'}") as conn:
            assert conn.listAllDomains() == []


def test_docstring_examples_run() -> None:
    """The examples in jailhouse.virt's and jailhouse.jobs's docstrings run as shown."""
    import doctest

    import jailhouse.jobs

    for module in (libvirt, jailhouse.jobs):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__
