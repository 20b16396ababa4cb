"""Domain XML to cell config and back (jailhouse.domxml), against the example systems."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from strategies import (
    ROOT_LINK_ARM64,
    ROOT_LINK_X86,
    cell_configs,
    dom,
    domains,
    mutated_domains,
    shmem,
)

from jailhouse.config.model import (
    PAGE_SIZE,
    Arch,
    CellConfig,
    CellFlag,
    Console,
    ConsoleType,
    MemFlag,
    PciCapability,
    PciCapFlag,
    PciDevice,
    PciType,
    PioRegion,
    SystemConfig,
)
from jailhouse.config.validate import Severity, check_configs
from jailhouse.domxml import (
    MAX_DOCUMENT_BYTES,
    NS,
    BootImage,
    BootSpec,
    DomainTranslation,
    cell_to_domain,
    domain_to_cell,
    memory_kib,
)
from jailhouse.domxml._xml import (
    LIBVIRT_MAX_CPU,
    MAX_CELL_CPU,
    numbering,
    parse_cpuset,
    path_of,
    scaled_bytes,
)
from jailhouse.errors import TranslationError
from jailhouse.examples import example_cells, example_system

ROOT = Path(__file__).resolve().parent.parent
XML_FIXTURES = ROOT / "fixtures" / "xml"
REALWORLD = XML_FIXTURES / "realworld"

R, W, X, D = MemFlag.READ, MemFlag.WRITE, MemFlag.EXECUTE, MemFlag.DMA
L, RS, IO, COMM = MemFlag.LOADABLE, MemFlag.ROOTSHARED, MemFlag.IO, MemFlag.COMM_REGION
RAM = R | W | X | D | L


def _x86_host() -> SystemConfig:
    """Return the example x86 system with an AHCI controller and an e1000e NIC added."""
    system = example_system("x86")
    root = system.root_cell
    caps = (
        PciCapability(0x12, 0xA8, 2),  # SATA
        PciCapability(0x05, 0x80, 14, PciCapFlag.WRITE),  # MSI
    )
    devices = (
        PciDevice(
            PciType.DEVICE,
            bdf=0xFA,  # 00:1f.2
            caps_start=len(root.pci_caps),
            num_caps=2,
            num_msi_vectors=1,
            msi_64bits=True,
        ),
        PciDevice(PciType.DEVICE, bdf=0x10),  # 00:02.0, legacy INTx only
    )
    return system.replace(
        root_cell=root.replace(
            pci_devices=root.pci_devices + devices, pci_caps=root.pci_caps + caps
        )
    )


def _arm_host() -> SystemConfig:
    """Return the example arm64 system relabelled as a 32-bit ARM one."""
    system = example_system("arm64")
    return system.replace(arch=Arch.ARM, root_cell=system.root_cell.replace(arch=Arch.ARM))


X86 = _x86_host()
ARM64 = example_system("arm64")
SYSTEMS = {Arch.X86: X86, Arch.ARM64: ARM64, Arch.ARM: _arm_host()}


def to_cell(xml: str | bytes, system: SystemConfig = X86, **kwargs: object) -> DomainTranslation:
    """Translate with the test systems as the default target."""
    return domain_to_cell(xml, system, **kwargs)  # type: ignore[arg-type]


def errors_of(system: SystemConfig, *cells: CellConfig) -> list[str]:
    """Return check_configs' error findings for a set of cells."""
    return [str(f) for f in check_configs(system, *cells) if f.severity == Severity.ERROR]


def attempt(xml: str | bytes, system: SystemConfig) -> DomainTranslation | TranslationError:
    """Translate, returning the TranslationError instead of raising it."""
    try:
        return domain_to_cell(xml, system)
    except TranslationError as exc:
        return exc


def error_at(xml: str | bytes, system: SystemConfig = X86, **kwargs: object) -> TranslationError:
    """Translate and return the TranslationError it raises."""
    with pytest.raises(TranslationError) as info:
        domain_to_cell(xml, system, **kwargs)  # type: ignore[arg-type]
    return info.value


def note_paths(result: DomainTranslation) -> list[str]:
    """Return the XPaths of a translation's notes."""
    return [n.element for n in result.notes]


# -- parsing: hostile and broken input --------------------------------------------------------


class _OpenWatch:
    """Record opens of one file through Linux inotify (no timing involved)."""

    IN_OPEN = 0x20
    IN_NONBLOCK = 0o4000

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK)
        if self.fd < 0:
            pytest.skip("inotify is not available")
        if libc.inotify_add_watch(self.fd, str(path).encode(), self.IN_OPEN) < 0:
            os.close(self.fd)
            pytest.skip("inotify cannot watch the file")

    def opened(self) -> bool:
        """Return whether the file was opened since the last call."""
        try:
            return bool(os.read(self.fd, 4096))
        except BlockingIOError:
            return False

    def close(self) -> None:
        """Stop watching."""
        os.close(self.fd)


@pytest.mark.parametrize(
    "template",
    [
        '<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file://{path}">]>{body}',
        '<!DOCTYPE domain [<!ENTITY % xxe SYSTEM "{path}"> %xxe;]>{body}',
        '<!DOCTYPE domain SYSTEM "{path}">{body}',
    ],
)
def test_external_entities_are_refused_and_never_read(tmp_path: Path, template: str) -> None:
    """XXE documents are one TranslationError, and the named file is never even opened."""
    secret = tmp_path / "secret.txt"
    secret.write_text('<!ENTITY xxe "TOP-SECRET-4711">')
    body = (
        "<domain type='kvm'><name>&xxe;</name><memory>1024</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    watch = _OpenWatch(secret)
    try:
        error = error_at(template.format(path=secret, body=body))
        assert not watch.opened()
        secret.read_bytes()  # control: the watch does see an open
        assert watch.opened()
    finally:
        watch.close()
    assert error.element == "/"
    assert "TOP-SECRET" not in str(error)


def test_billion_laughs_is_refused() -> None:
    """Nested entity definitions are refused as a document type, not expanded."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    xml = f"<!DOCTYPE domain [{entities}]><domain><name>&lol9;</name></domain>"
    error = error_at(xml)
    assert error.element == "/"


def test_external_dtd_is_not_fetched() -> None:
    """A DOCTYPE with a network DTD is refused without loading it."""
    xml = (
        '<!DOCTYPE domain SYSTEM "http://203.0.113.1/domain.dtd">'
        "<domain type='kvm'><name>x</name></domain>"
    )
    error = error_at(xml)
    assert error.element == "/"
    assert "document type" in error.reason or "network" in error.reason


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "<domain>",
        "<domain><name>x</domain>",
        "not xml at all",
        "<domain type='kvm'><name>x</name></domain><extra/>",
        b"\xff\xfe\x00<",
    ],
)
def test_malformed_documents_are_one_clear_error(xml: str | bytes) -> None:
    """Input that is not well-formed XML raises TranslationError naming the document."""
    error = error_at(xml)
    assert error.element == "/"
    assert "well-formed" in error.reason or "empty" in error.reason


def test_wrong_root_element_is_refused() -> None:
    """A libvirt network document is not a domain."""
    error = error_at("<network><name>default</name></network>")
    assert error.element == "/network"
    assert "<domain>" in error.reason


def test_oversized_document_is_refused() -> None:
    """Input above the size cap is refused before parsing."""
    xml = dom() + " " * MAX_DOCUMENT_BYTES
    assert "larger than" in error_at(xml).reason


def test_input_must_be_text_or_bytes() -> None:
    """A non-string input is a TranslationError, not a TypeError from lxml."""
    error = error_at(12345)  # type: ignore[arg-type]
    assert error.value == "int"


def test_text_with_an_encoding_declaration_is_accepted() -> None:
    """A str that starts with an XML declaration naming an encoding parses."""
    xml = "<?xml version='1.0' encoding='UTF-8'?>\n" + dom()
    assert to_cell(xml).config.name == "guest"


def test_importing_jailhouse_does_not_load_lxml() -> None:
    """Lxml is imported only when the translator is used."""
    code = (
        "import sys, jailhouse; assert 'lxml' not in sys.modules; "
        "jailhouse.domain_to_cell; assert 'lxml' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- memory sizes and units ---------------------------------------------------------------------

# libvirt 9.0.0 test driver, measured (/tmp/research/libvirt-facts.md §1): value, unit -> KiB
LIBVIRT_KIB = [
    ("1", "b", 1),
    ("1025", "bytes", 2),
    ("1000", "KB", 977),
    ("1001", "KB", 978),
    ("1", "MB", 977),
    ("1", "GB", 976563),
    ("1", "TB", 976562500),
    ("64", "k", 64),
    ("64", "KiB", 64),
    ("3", "M", 3072),
    ("3", "mib", 3072),
    ("2", "G", 2097152),
    ("1", "T", 1 << 30),
    ("1", "P", 1 << 40),
    ("5", None, 5),
    ("5", "", 5),
]


@pytest.mark.parametrize(("value", "unit", "kib"), LIBVIRT_KIB)
def test_memory_units_scale_and_round_like_libvirt(value: str, unit: str | None, kib: int) -> None:
    """Each libvirt unit scales and rounds up to KiB exactly as libvirt stores it."""
    size = scaled_bytes(value, unit, where="/m", unit_where="/m/@unit", default_unit=1024)
    assert -(-size // 1024) == kib


@pytest.mark.parametrize(
    ("value", "unit", "kib"), [(v, u, k) for v, u, k in LIBVIRT_KIB if k < 4096]
)
def test_cell_ram_is_the_libvirt_size_in_whole_pages(
    value: str, unit: str | None, kib: int
) -> None:
    """The cell's RAM is libvirt's KiB figure rounded up to 4 KiB pages."""
    unit_attr = "" if unit is None else f" unit='{unit}'"
    result = to_cell(dom(memory=f"<memory{unit_attr}>{value}</memory>"))
    ram = sum(r.size for r in result.config.mem_regions if r.flags & L)
    assert ram == -(-kib * 1024 // PAGE_SIZE) * PAGE_SIZE
    rounded = kib * 1024 % PAGE_SIZE != 0
    assert ("/domain/memory" in note_paths(result)) == rounded


@pytest.mark.parametrize("unit", ["Mi", "MiBs", "gibibytes", "Z", "iB", "kB2"])
def test_unknown_units_name_the_attribute(unit: str) -> None:
    """A unit libvirt does not know is an error on @unit."""
    error = error_at(dom(memory=f"<memory unit='{unit}'>1</memory>"))
    assert error.element == "/domain/memory/@unit"
    assert error.value == unit


@pytest.mark.parametrize("text", ["-1", "1.5", " 64 ", "64\n", "0x10", "abc", "", "+", " ", "++1"])
def test_memory_values_are_plain_decimals(text: str) -> None:
    """A minus, fractions, trailing spaces and hex are refused, as libvirt refuses them."""
    error = error_at(dom(memory=f"<memory>{text}</memory>"))
    assert error.element == "/domain/memory"
    assert error.value == text


@pytest.mark.parametrize("text", [" 2048", "+2048", "\t\n+2048", "002048"])
def test_numbers_libvirt_reads_with_strtoul_are_read(text: str) -> None:
    """Leading white space and a plus sign, which libvirt's strtoul skips, are accepted."""
    link = ROOT_LINK_X86.replace("bus='0x01'", "bus=' +0x01'").replace("slot='", "slot='&#9;")
    xml = dom(shmem(link), memory=f"<memory>{text}</memory>", vcpu="<vcpu> +1</vcpu>")
    result = to_cell(xml)
    assert memory_kib(result.config.mem_regions) == 2048
    assert len(result.config.cpus) == 1
    assert [d.bdf for d in result.config.pci_devices] == [1 << 8 | 0x0E << 3]


def test_memory_beyond_libvirts_limit_is_refused() -> None:
    """More than 2**63 - 1 bytes is refused."""
    error = error_at(dom(memory="<memory unit='EiB'>8</memory>"))
    assert "limit" in error.reason


def test_zero_memory_without_numa_is_refused() -> None:
    """A domain needs some memory."""
    assert error_at(dom(memory="<memory>0</memory>")).element == "/domain/memory"
    assert error_at(dom(memory="")).element == "/domain/memory"


def test_numa_cells_give_the_size_when_memory_is_zero() -> None:
    """Like libvirt, the guest NUMA cells' total stands in for a missing <memory>."""
    numa = (
        "<cpu><numa><cell id='0' cpus='0' memory='1' unit='MiB'/>"
        "<cell id='1' cpus='0' memory='1024'/></numa></cpu>"
    )
    result = to_cell(dom(memory="", extra=numa))
    ram = sum(r.size for r in result.config.mem_regions if r.flags & L)
    assert ram == 2 << 20
    assert "/domain/cpu" in note_paths(result)


def test_current_memory_below_memory_is_a_note() -> None:
    """A balloon target is noted; the cell gets all of <memory>."""
    result = to_cell(dom(extra="<currentMemory unit='MiB'>1</currentMemory>"))
    assert "/domain/currentMemory" in note_paths(result)
    assert sum(r.size for r in result.config.mem_regions if r.flags & L) == 2 << 20


# -- CPUs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "count", "cpus"),
    [(X86, 1, {3}), (X86, 2, {2, 3}), (X86, 3, {1, 2, 3}), (ARM64, 1, {3}), (ARM64, 3, {1, 2, 3})],
)
def test_free_cpus_are_picked_highest_first(
    system: SystemConfig, count: int, cpus: set[int]
) -> None:
    """Unpinned vCPUs take the root cell's highest free CPUs."""
    arch = "x86_64" if system.arch == Arch.X86 else "aarch64"
    result = to_cell(dom(arch=arch, vcpu=f"<vcpu>{count}</vcpu>"), system)
    assert result.config.cpus == frozenset(cpus)
    assert result.config.cpu_set_size == 8


def test_x86_never_takes_cpu0_and_arm64_never_the_last_root_cpu() -> None:
    """Four vCPUs fit neither 4-CPU example: x86 keeps CPU 0, arm64 keeps one CPU."""
    for system, arch in ((X86, "x86_64"), (ARM64, "aarch64")):
        error = error_at(dom(arch=arch, vcpu="<vcpu>4</vcpu>"), system)
        assert error.element == "/domain/vcpu"
        assert "root cell keeps at least one CPU" in error.reason
    assert "CPU 0 stays" in error_at(dom(vcpu="<vcpu>4</vcpu>")).reason


def test_cpus_of_defined_cells_are_skipped() -> None:
    """A defined cell's CPUs are never given out again."""
    demo = example_cells("x86")["x86-demo"]  # CPU 3
    result = to_cell(dom(vcpu="<vcpu>2</vcpu>"), defined=[demo])
    assert result.config.cpus == {1, 2}
    linux = example_cells("x86")["x86-linux"]  # CPUs 1-2
    error = error_at(dom(), defined=[demo, linux])
    assert "taken: 3 by 'x86-demo'" in error.reason or "by 'x86-demo'" in error.reason


def test_cpuset_restricts_the_choice() -> None:
    """<vcpu cpuset> limits which host CPUs unpinned vCPUs may get."""
    assert to_cell(dom(vcpu="<vcpu cpuset='1-2'>1</vcpu>")).config.cpus == {2}
    assert to_cell(dom(vcpu="<vcpu cpuset='0-3,^3,^2'>1</vcpu>")).config.cpus == {1}
    error = error_at(dom(vcpu="<vcpu cpuset='0'>1</vcpu>"))
    assert "cpuset allows 0" in error.reason


def test_pins_map_vcpus_one_to_one() -> None:
    """Each <vcpupin> gives its vCPU that host CPU; the rest are picked."""
    pins = "<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='2' cpuset='2'/></cputune>"
    result = to_cell(dom(vcpu="<vcpu>3</vcpu>", extra=pins))
    assert result.config.cpus == {1, 2, 3}
    assert result.notes == ()


@pytest.mark.parametrize(
    ("pins", "element", "words"),
    [
        ("<vcpupin vcpu='0' cpuset='0'/>", "vcpupin/@cpuset", "CPU 0"),
        ("<vcpupin vcpu='0' cpuset='7'/>", "vcpupin/@cpuset", "not in the root cell"),
        ("<vcpupin vcpu='0' cpuset='1-2'/>", "vcpupin/@cpuset", "exactly one CPU"),
        ("<vcpupin vcpu='0' cpuset='^1'/>", "vcpupin/@cpuset", "at least one CPU"),
        (
            "<vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='2'/>",
            "vcpupin[2]/@cpuset",
            "1:1",
        ),
        (
            "<vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='0' cpuset='3'/>",
            "vcpupin[2]/@vcpu",
            "second",
        ),
        ("<vcpupin vcpu='0'/>", "vcpupin", "needs vcpu and cpuset"),
    ],
)
def test_bad_pins_are_errors_naming_the_pin(pins: str, element: str, words: str) -> None:
    """Pins to CPU 0 (x86), foreign CPUs, several CPUs or a shared CPU are refused."""
    error = error_at(dom(vcpu="<vcpu>2</vcpu>", extra=f"<cputune>{pins}</cputune>"))
    assert error.element == f"/domain/cputune/{element}"
    assert words in error.reason


def test_pin_to_a_defined_cells_cpu_is_refused() -> None:
    """A pinned CPU another cell owns is an error naming that cell."""
    demo = example_cells("x86")["x86-demo"]
    error = error_at(dom(extra="<cputune><vcpupin vcpu='0' cpuset='3'/></cputune>"), defined=[demo])
    assert "'x86-demo'" in error.reason


def test_pins_may_not_take_the_root_cells_last_cpu() -> None:
    """Pinning every root CPU on arm64 leaves the root cell none: refused."""
    pins = "".join(f"<vcpupin vcpu='{i}' cpuset='{i}'/>" for i in range(4))
    error = error_at(
        dom(arch="aarch64", vcpu="<vcpu>4</vcpu>", extra=f"<cputune>{pins}</cputune>"), ARM64
    )
    assert error.element == "/domain/cputune"


def test_pin_beyond_the_vcpu_count_is_a_note() -> None:
    """Like libvirt, a pin for a vCPU that does not exist is ignored (noted)."""
    result = to_cell(dom(extra="<cputune><vcpupin vcpu='5' cpuset='1'/></cputune>"))
    assert result.config.cpus == {3}
    assert note_paths(result) == ["/domain/cputune/vcpupin"]


@pytest.mark.parametrize(
    ("vcpu", "element"),
    [
        ("<vcpu current='1'>2</vcpu>", "/domain/vcpu/@current"),
        ("<vcpu placement='auto'>1</vcpu>", "/domain/vcpu/@placement"),
        ("<vcpu placement='bogus'>1</vcpu>", "/domain/vcpu/@placement"),
        ("<vcpu>0</vcpu>", "/domain/vcpu"),
        ("<vcpu>two</vcpu>", "/domain/vcpu"),
        (
            (
                "<vcpu>2</vcpu><vcpus><vcpu id='0' enabled='yes'/>"
                "<vcpu id='1' enabled='no' hotpluggable='yes'/></vcpus>"
            ),
            "/domain/vcpus/vcpu[2]/@enabled",
        ),
    ],
)
def test_hotplug_and_automatic_placement_are_refused(vcpu: str, element: str) -> None:
    """Hot-plug (current below max, disabled vCPUs) and numad placement are errors."""
    assert error_at(dom(vcpu=vcpu)).element == element


def test_equal_current_is_fine_and_hotpluggable_is_a_note() -> None:
    """A current count equal to the maximum is accepted; hotpluggable vCPUs are only noted."""
    vcpus = "<vcpus><vcpu id='0' enabled='yes' hotpluggable='yes'/></vcpus>"
    result = to_cell(dom(vcpu=f"<vcpu current='1'>1</vcpu>{vcpus}"))
    assert note_paths(result) == ["/domain/vcpus"]


# -- memory placement and layout -----------------------------------------------------------------


def test_x86_ram_comes_from_the_inmate_region_with_the_upstream_layout() -> None:
    """x86: the block starts at the inmate region; 1 MiB at 0, comm at 1 MiB, rest at 2 MiB."""
    result = to_cell(dom(memory="<memory unit='MiB'>3</memory>"))
    regions = result.config.mem_regions
    assert regions == (
        regions[0].__class__(0x3A600000, 0x0, 0x100000, RAM),
        regions[0].__class__(0, 0x100000, 0x1000, R | W | COMM),
        regions[0].__class__(0x3A700000, 0x200000, 0x200000, RAM),
    )
    assert errors_of(X86, result.config) == []


def test_arm64_ram_comes_from_the_top_of_ram_below_the_hypervisor() -> None:
    """arm64: a 4 MiB block is placed 2 MiB-aligned as high as it fits below 0x7fa10000."""
    result = to_cell(dom(arch="aarch64", memory="<memory unit='MiB'>4</memory>"), ARM64)
    ram, comm = result.config.mem_regions
    assert (ram.phys_start, ram.virt_start, ram.size, ram.flags) == (0x7F600000, 0, 4 << 20, RAM)
    assert (comm.virt_start, comm.flags) == (0x80000000, R | W | COMM)
    assert errors_of(ARM64, result.config) == []


def test_arm_linux_gets_a_loader_ram_and_a_one_to_one_main_ram() -> None:
    """An ARM Linux cell: 64 KiB loader RAM at 0 (no DMA), the rest mapped 1:1, comm region."""
    os = "<kernel>/Image</kernel><dtb>/x.dtb</dtb>"
    result = to_cell(dom(arch="aarch64", memory="<memory unit='MiB'>4</memory>", os=os), ARM64)
    loader, main, comm = result.config.mem_regions
    assert (loader.virt_start, loader.size, loader.flags) == (0, 0x10000, R | W | X | L)
    assert main.virt_start == main.phys_start
    assert (main.size, main.flags) == ((4 << 20) - 0x10000, RAM)
    assert loader.phys_start == main.phys_end
    assert comm.virt_start == 0x80000000
    assert result.config.cpu_reset_address == 0


def test_tiny_arm_linux_cell_is_refused() -> None:
    """A Linux cell needs more than the loader's 64 KiB."""
    os = "<kernel>/Image</kernel><dtb>/x.dtb</dtb>"
    error = error_at(dom(arch="aarch64", memory="<memory>64</memory>", os=os), ARM64)
    assert error.element == "/domain/memory"


def test_arm_ram_that_would_cover_the_uart_page_says_how_much_fits() -> None:
    """An inmate's RAM from guest 0 may not reach the UART page mapped 1:1 at 0x9000000."""
    console = "<console type='pty'/>"
    fits = dom(console, arch="aarch64", memory="<memory unit='MiB'>144</memory>")
    assert errors_of(ARM64, to_cell(fits, ARM64).config) == []
    error = error_at(fits.replace(">144<", ">145<"), ARM64)
    assert error.element == "/domain/memory"
    assert error.value == "145"
    assert "a device page the cell maps 1:1 at 0x9000000" in error.reason
    assert "at most 147456 KiB fit: lower <memory>" in error.reason
    linux = "<kernel>/Image</kernel><dtb>/x.dtb</dtb>"
    big_linux = dom(console, arch="aarch64", memory="<memory unit='MiB'>145</memory>", os=linux)
    assert errors_of(ARM64, to_cell(big_linux, ARM64).config) == []


@pytest.mark.parametrize(
    ("xml", "system", "pool", "covered"),
    [
        # a Linux cell's RAM is mapped 1:1: from a pool across 0x80000000 it covers the comm region
        (dom(arch="aarch64", memory="<memory unit='MiB'>64</memory>",
             os="<kernel>/Image</kernel><dtb>/x.dtb</dtb>"),
         ARM64, [(0x7FF00000, 0x10000000)], "the comm region at 0x80000000"),
        # an ivshmem region mapped 1:1 from a pool at 0 lands on the x86 layout's guest range
        (dom(shmem(size="<size unit='KiB'>64</size>"), memory="<memory>1024</memory>"),
         X86, [(0, 0x4000000)], "a shared-memory region the cell maps 1:1 at 0x100000"),
    ],
)  # fmt: skip
def test_a_layout_clash_from_the_pool_asks_for_another_pool(
    xml: str, system: SystemConfig, pool: list[tuple[int, int]], covered: str
) -> None:
    """Where no smaller <memory> would help, the error says what is covered and asks for pool=."""
    error = error_at(xml, system, pool=pool)
    assert error.element == "/domain/memory"
    assert covered in error.reason
    assert error.reason.endswith("pass pool= to place the cell's memory elsewhere")


def test_memory_of_defined_cells_is_avoided() -> None:
    """With the example cells defined only the 1 MiB hole between them is left in the pool."""
    cells = [c.replace(cpus=frozenset()) for c in example_cells("x86").values()]
    result = to_cell(dom(memory="<memory unit='MiB'>1</memory>"), defined=cells)
    assert result.config.mem_regions[0].phys_start == 0x3EE00000
    assert errors_of(X86, *cells, result.config) == []
    error = error_at(dom(memory="<memory unit='MiB'>2</memory>"), defined=cells)
    assert error.element == "/domain/memory"
    assert error.value == "2"
    assert "largest free block is 1024 KiB; lower <memory>, pass pool=" in error.reason


def test_an_explicit_pool_is_used_as_given() -> None:
    """pool= names the host memory reserved for inmates."""
    result = to_cell(dom(), pool=[(0x10000000, 0x400000)])
    assert result.config.mem_regions[0].phys_start == 0x10000000
    error = error_at(dom(memory="<memory unit='MiB'>8</memory>"), pool=[(0x10000000, 0x400000)])
    assert "the given pool" in error.reason


def test_cells_translated_one_after_another_fit_together() -> None:
    """Three arm64 domains, each defined before the next, share nothing and pass the checks."""
    cells: list[CellConfig] = []
    for i in range(3):
        xml = dom(name=f"c{i}", arch="aarch64", memory="<memory unit='MiB'>3</memory>")
        cells.append(to_cell(xml, ARM64, defined=cells).config)
    assert [c.cpus for c in cells] == [{3}, {2}, {1}]
    assert errors_of(ARM64, *cells) == []


# -- console -------------------------------------------------------------------------------------


def test_x86_console_is_the_debug_uart_with_its_ports() -> None:
    """A console gives the hypervisor console flag, the system's UART and its 8 ports."""
    result = to_cell(dom("<console type='pty'/>"))
    cell = result.config
    assert cell.flags == CellFlag.PASSIVE_COMMREG | CellFlag.VIRTUAL_CONSOLE_PERMITTED
    assert cell.console == X86.debug_console
    assert cell.pio_regions == (PioRegion(0x3F8, 8),)
    assert result.notes == ()


def test_arm64_console_maps_the_uart_page_shared_with_root() -> None:
    """An MMIO console adds its register page, shared with the root cell."""
    cell = to_cell(dom("<serial type='pty'/>", arch="aarch64"), ARM64).config
    assert cell.console.type == ConsoleType.PL011
    uart = cell.mem_regions[0]
    assert (uart.phys_start, uart.virt_start, uart.size) == (0x09000000, 0x09000000, 0x1000)
    assert uart.flags == R | W | IO | RS
    assert errors_of(ARM64, cell) == []


def test_no_console_no_console_flags() -> None:
    """Without <console> or <serial> the cell gets no console and no UART access."""
    cell = to_cell(dom()).config
    assert cell.flags == CellFlag.PASSIVE_COMMREG
    assert cell.console == Console()
    assert cell.pio_regions == ()


def test_console_variants_are_noted() -> None:
    """Host backends, virtio targets, second ports and extra serials are notes."""
    devices = (
        "<serial type='file'><source path='/tmp/log'/><target port='0'/></serial>"
        "<console type='pty'><target type='virtio' port='1'/></console>"
        "<serial type='pty'><target port='1'/></serial>"
    )
    assert note_paths(to_cell(dom(devices))) == [
        "/domain/devices/serial[1]/@type",
        "/domain/devices/console/target/@type",
        "/domain/devices/console/target/@port",
        "/domain/devices/serial[2]",
    ]


# -- PCI host devices ----------------------------------------------------------------------------


def _hostdev(bus: str, slot: str, function: str, domain: str = "0x0000") -> str:
    return (
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        f"<address domain='{domain}' bus='{bus}' slot='{slot}' function='{function}'/>"
        "</source></hostdev>"
    )


def test_hostdev_assigns_the_system_device_with_its_capabilities() -> None:
    """00:1f.2 is copied from the root cell with its two capabilities, renumbered from 0."""
    result = to_cell(dom(_hostdev("0x00", "0x1f", "0x2")))
    (device,) = result.config.pci_devices
    assert (device.type, device.bdf, device.caps_start, device.num_caps) == (
        PciType.DEVICE,
        0xFA,
        0,
        2,
    )
    assert result.config.pci_caps == X86.root_cell.pci_caps[-2:]
    assert note_paths(result) == ["/domain/devices/hostdev"]  # its BARs are not known
    assert errors_of(X86, result.config) == []


def test_hostdev_numbers_as_libvirt_parses_them() -> None:
    """Octal and decimal PCI numbers mean what libvirt makes of them (slot='037' is 0x1f)."""
    result = to_cell(dom(_hostdev("0", "037", "2", domain="0")))
    assert result.config.pci_devices[0].bdf == 0xFA


def test_intx_only_hostdev_asks_for_an_irqchip() -> None:
    """A device without MSI or MSI-X needs an IOAPIC pin: noted."""
    result = to_cell(dom(_hostdev("0x00", "0x02", "0x0")))
    assert any("IOAPIC pin" in n.reason for n in result.notes)


@pytest.mark.parametrize(
    ("devices", "element", "words"),
    [
        (_hostdev("0x03", "0x00", "0x0"), "/domain/devices/hostdev/source/address", "not a PCI"),
        (_hostdev("0x01", "0x0e", "0x0"), "/domain/devices/hostdev/source/address", "ivshmem"),
        (
            _hostdev("0x00", "0x1f", "0x2") * 2,
            "/domain/devices/hostdev[2]/source/address",
            "twice",
        ),
        (_hostdev("0x100", "0x00", "0x0"), "/domain/devices/hostdev/source/address/@bus", "0xff"),
        (_hostdev("0x00", "0x20", "0x0"), "/domain/devices/hostdev/source/address/@slot", "0x1f"),
        (_hostdev("0x00", "0x00", "8"), "/domain/devices/hostdev/source/address/@function", "0x7"),
        (
            "<hostdev mode='subsystem' type='pci'/>",
            "/domain/devices/hostdev/source",
            "<source><address>",
        ),
    ],
)
def test_bad_hostdevs_are_errors(devices: str, element: str, words: str) -> None:
    """Unknown, virtual, doubled or malformed PCI addresses name the element."""
    error = error_at(dom(devices))
    assert error.element == element
    assert words in error.reason


def test_hostdev_of_a_defined_cell_is_refused() -> None:
    """A device already assigned to another cell cannot be assigned again."""
    first = to_cell(dom(_hostdev("0x00", "0x1f", "0x2"), name="first")).config
    error = error_at(dom(_hostdev("0x00", "0x1f", "0x2")), defined=[first])
    assert "'first'" in error.reason


def test_non_pci_hostdev_is_a_note() -> None:
    """USB host devices cannot be given to a cell: noted."""
    usb = "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/></source></hostdev>"
    assert note_paths(to_cell(dom(usb))) == ["/domain/devices/hostdev"]


# -- ivshmem -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "arch", "address"),
    [(X86, "x86_64", ROOT_LINK_X86), (ARM64, "aarch64", ROOT_LINK_ARM64)],
)
def test_shmem_joins_the_root_cells_link(system: SystemConfig, arch: str, address: str) -> None:
    """A <shmem> at the root's ivshmem address becomes peer 1 mapping the root's memory."""
    cell = to_cell(dom(shmem(address), arch=arch), system).config
    root_dev = system.root_cell.pci_devices[0]
    device = cell.pci_devices[0]
    assert (device.bdf, device.domain) == (root_dev.bdf, root_dev.domain)
    assert (device.shmem_dev_id, device.shmem_peers) == (1, 2)
    assert device.bar_mask == root_dev.bar_mask
    group = cell.mem_regions[device.shmem_regions_start : device.shmem_regions_start + 4]
    root_group = system.root_cell.mem_regions[:4]
    assert [(r.phys_start, r.size) for r in group] == [(r.phys_start, r.size) for r in root_group]
    assert [r.flags for r in group] == [R | RS, R | W | RS, R | RS, R | W | RS]
    assert errors_of(system, cell) == []


def test_a_full_link_is_refused() -> None:
    """With x86-demo defined both peers of the root's link are taken."""
    demo = example_cells("x86")["x86-demo"]
    error = error_at(dom(shmem(ROOT_LINK_X86), vcpu="<vcpu cpuset='2'>1</vcpu>"), defined=[demo])
    assert error.element == "/domain/devices/shmem"
    assert "all 2 peers" in error.reason


def test_a_new_link_is_shared_by_two_domains() -> None:
    """The first domain creates a link in the pool; the second joins it by its address."""
    address = "<address type='pci' bus='0x00' slot='0x05' function='0x0'/>"
    doorbell = "<model type='ivshmem-doorbell'/><server/><msi vectors='4'/>"
    size = "<size unit='M'>1</size>"
    first = to_cell(dom(shmem(address, doorbell, size), name="a")).config
    second = to_cell(dom(shmem(address, doorbell, size), name="b"), defined=[first]).config
    a, b = first.pci_devices[0], second.pci_devices[0]
    assert (a.bdf, a.shmem_dev_id, a.num_msix_vectors) == (0x28, 0, 4)
    assert (b.bdf, b.shmem_dev_id, b.num_msix_vectors) == (0x28, 1, 4)
    group_a = first.mem_regions[:4]
    group_b = second.mem_regions[:4]
    assert [(r.phys_start, r.size) for r in group_a] == [(r.phys_start, r.size) for r in group_b]
    assert group_a[1].size == 1 << 20
    assert errors_of(X86, first, second) == []


def test_a_new_link_without_address_takes_a_free_slot() -> None:
    """Without <address> the link gets the lowest bus-0 slot no device uses."""
    cell = to_cell(dom(shmem())).config
    assert cell.pci_devices[0].bdf == 0x00
    assert cell.mem_regions[1].size == 4 << 20  # libvirt's default shmem size
    arm = to_cell(dom(shmem(), arch="aarch64"), ARM64).config
    assert arm.pci_devices[0].bdf == 0x08  # 00:00.0 is the root's link
    assert arm.pci_devices[0].domain == 1


def test_shmem_details_that_cannot_be_honoured_are_notes() -> None:
    """A server path, ioeventfd, a role and a size other than the link's are notes."""
    extra = "<server path='/run/s.sock'/><msi vectors='2' ioeventfd='on'/>"
    devices = (
        "<shmem name='s' role='peer'><model type='ivshmem-doorbell'/>"
        f"<size unit='M'>1</size>{extra}{ROOT_LINK_X86}</shmem>"
    )
    assert note_paths(to_cell(dom(devices))) == [
        "/domain/devices/shmem/@role",
        "/domain/devices/shmem/size",
        "/domain/devices/shmem/server",
        "/domain/devices/shmem/msi/@ioeventfd",
    ]


@pytest.mark.parametrize(
    ("devices", "element"),
    [
        (shmem(model="<model type='ivshmem-doorbell'/>", extra="<msi vectors='17'/>"),
         "/domain/devices/shmem/msi/@vectors"),
        (shmem(model="<model type='virtio'/>"), "/domain/devices/shmem/model/@type"),
        ("<shmem><size>4096</size></shmem>", "/domain/devices/shmem/@name"),
        (shmem(size="<size unit='M'>100</size>"), "/domain/devices/shmem"),
        (shmem("<address type='drive' bus='0'/>"), "/domain/devices/shmem/address/@type"),
    ],
)  # fmt: skip
def test_bad_shmem_elements_are_errors(devices: str, element: str) -> None:
    """Too many vectors, unknown models, no name, no room or a non-PCI address are errors."""
    assert error_at(dom(devices)).element == element


# -- identity, architecture, boot ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("x" * 32, "at most 31 bytes"),
        ("caf\u00e9", "printable ASCII"),
        ("", "must not be empty"),
        ("a/b", "'/'"),
        ("x86-root", "the root cell"),
    ],
)
def test_bad_names_are_refused(name: str, words: str) -> None:
    """Names the driver or libvirt cannot carry, or the root's name, are errors on <name>."""
    error = error_at(dom(name=name))
    assert error.element == "/domain/name"
    assert words in error.reason


def test_name_of_a_defined_cell_is_refused() -> None:
    """Cell names are unique on the system."""
    demo = example_cells("x86")["x86-demo"]
    assert "cell 'x86-demo'" in error_at(dom(name="x86-demo"), defined=[demo]).reason


def test_thirty_one_byte_name_is_accepted() -> None:
    """The longest name the driver keeps is fine."""
    assert to_cell(dom(name="n" * 31)).config.name == "n" * 31


def test_uuid_is_kept_in_canonical_form() -> None:
    """<uuid> with or without dashes comes back lower-case and dashed."""
    result = to_cell(dom(extra="<uuid>4DEA22B31D52D8F32516782E98AB3FA0</uuid>"))
    assert result.uuid == "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
    assert error_at(dom(extra="<uuid>not-a-uuid</uuid>")).element == "/domain/uuid"


@pytest.mark.parametrize(
    ("system", "arch", "element"),
    [
        (X86, "aarch64", "/domain/os/type/@arch"),
        (ARM64, "x86_64", "/domain/os/type/@arch"),
        (ARM64, "arm64", "/domain/os/type/@arch"),
        (X86, "riscv64", "/domain/os/type/@arch"),
    ],
)
def test_architecture_must_match_the_system(system: SystemConfig, arch: str, element: str) -> None:
    """The domain's arch must be the system's, by its libvirt name."""
    error = error_at(dom(arch=arch), system)
    assert error.element == element
    assert error.value == arch


def test_armv7l_on_arm64_is_an_aarch32_cell() -> None:
    """A 32-bit ARM domain on an arm64 system sets the AARCH32 flag."""
    cell = to_cell(dom(arch="armv7l"), ARM64).config
    assert CellFlag.AARCH32 in cell.flags
    assert cell.arch == Arch.ARM64


def test_i686_on_x86_is_a_note_and_a_missing_arch_means_the_systems() -> None:
    """i686 runs in an x86-64 cell (noted); without arch the system's is assumed."""
    assert note_paths(to_cell(dom(arch="i686"))) == ["/domain/os/type/@arch"]
    assert to_cell(dom(arch=None), ARM64).config.arch == Arch.ARM64


@pytest.mark.parametrize(
    ("xml", "element"),
    [
        ("<domain><name>x</name><memory>1024</memory></domain>", "/domain/os"),
        ("<domain><name>x</name><memory>1024</memory><os/></domain>", "/domain/os/type"),
        (dom().replace(">hvm<", ">exe<"), "/domain/os/type"),
        (dom().replace("<name>guest</name>", ""), "/domain/name"),
    ],
)
def test_missing_or_wrong_os_and_name_are_errors(xml: str, element: str) -> None:
    """A domain needs a name and an hvm <os><type>."""
    assert error_at(xml).element == element


def test_linux_boot_spec_from_os() -> None:
    """<kernel>, <initrd>, <cmdline> and <dtb> form a Linux boot spec."""
    os = "<kernel>/k</kernel><initrd>/i</initrd><cmdline>console=ttyAMA0</cmdline><dtb>/d</dtb>"
    result = to_cell(dom(arch="aarch64", os=os), ARM64)
    assert result.boot == BootSpec(kernel="/k", initrd="/i", cmdline="console=ttyAMA0", dtb="/d")
    assert result.boot.is_linux


def test_arm_linux_without_device_tree_is_a_note_and_initrd_needs_a_kernel() -> None:
    """No <dtb> on ARM is noted; an <initrd> alone is an error."""
    result = to_cell(dom(arch="aarch64", os="<kernel>/k</kernel>"), ARM64)
    assert note_paths(result) == ["/domain/os"]
    assert error_at(dom(os="<initrd>/i</initrd>")).element == "/domain/os/kernel"


def test_firmware_and_boot_order_are_notes() -> None:
    """Firmware selection, loaders and boot devices other than libvirt's default are notes."""
    xml = dom(os="<loader>/ovmf.fd</loader><boot dev='network'/>").replace(
        "<os>", "<os firmware='efi'>"
    )
    assert note_paths(to_cell(xml)) == [
        "/domain/os/@firmware",
        "/domain/os/loader",
        "/domain/os/boot",
    ]


# -- notes and strict mode -----------------------------------------------------------------------

DESKTOP_DEVICES = (
    "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
    "<disk type='file' device='disk'><source file='/v.qcow2'/><target dev='vda'/></disk>"
    "<interface type='network'><source network='default'/></interface>"
    "<graphics type='vnc'/><memballoon model='virtio'/><iommu model='intel'/>"
)


def test_unsupported_devices_become_notes_in_document_order() -> None:
    """Disks, interfaces, graphics, balloon and vIOMMU are each noted by XPath."""
    result = to_cell(dom(DESKTOP_DEVICES))
    assert note_paths(result) == [
        "/domain/devices/emulator",
        "/domain/devices/disk",
        "/domain/devices/interface",
        "/domain/devices/graphics",
        "/domain/devices/memballoon",
        "/domain/devices/iommu",
    ]
    assert all(n.reason for n in result.notes)


def test_strict_mode_turns_the_first_note_into_an_error() -> None:
    """strict=True raises for the first note, naming its element."""
    error = error_at(dom(DESKTOP_DEVICES), strict=True)
    assert error.element == "/domain/devices/emulator"
    assert "strict" in error.reason


def test_strict_mode_accepts_a_domain_without_notes() -> None:
    """A domain that translates exactly passes strict mode."""
    result = to_cell(dom("<console type='pty'/><memballoon model='none'/>"), strict=True)
    assert result.notes == ()


def test_libvirt_defaults_are_not_noted() -> None:
    """What libvirt adds on its own (utc clock, default lifecycle, boot hd) makes no note."""
    extra = (
        "<clock offset='utc'/><on_poweroff>destroy</on_poweroff>"
        "<on_reboot>restart</on_reboot><on_crash>destroy</on_crash>"
        "<features><apic/><pae/></features><cpu mode='host-passthrough'/>"
    )
    assert to_cell(dom(extra=extra, os="<boot dev='hd'/>")).notes == ()


def test_non_default_lifecycle_and_tuning_are_notes() -> None:
    """Lifecycle actions and tuning elements a cell cannot honour are noted."""
    extra = (
        "<on_crash>preserve</on_crash><memtune><hard_limit>1</hard_limit></memtune>"
        "<cputune><emulatorpin cpuset='0'/><period>1000</period></cputune>"
    )
    assert note_paths(to_cell(dom(extra=extra))) == [
        "/domain/on_crash",
        "/domain/memtune",
        "/domain/cputune/emulatorpin",
        "/domain/cputune/period",
    ]


# -- metadata ------------------------------------------------------------------------------------


def meta(body: str = "", **attrs: str) -> str:
    """Build a <metadata> block with one jailhouse:cell element."""
    attr_text = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return (
        f'<metadata><jailhouse:cell xmlns:jailhouse="{NS}"{attr_text}>{body}'
        "</jailhouse:cell></metadata>"
    )


def test_metadata_parts_override_what_is_derived() -> None:
    """Flags, vpci_irq_base, irqchips and timeouts from the metadata are taken verbatim."""
    body = (
        "<jailhouse:irqchips><jailhouse:irqchip address='0x8000000' pin-base='32'"
        " pin-bitmap='0x2 0 0 0x1000'/></jailhouse:irqchips>"
    )
    extra = meta(body, flags="VIRTUAL_CONSOLE_PERMITTED|0x100", vpci_irq_base="108",
                 msg_reply_timeout="0x10", id="7")  # fmt: skip
    cell = to_cell(dom("<console type='pty'/>", arch="aarch64", extra=extra), ARM64).config
    assert cell.flags == CellFlag.VIRTUAL_CONSOLE_PERMITTED | CellFlag(0x100)
    assert (cell.vpci_irq_base, cell.msg_reply_timeout, cell.id) == (108, 16, 7)
    assert cell.irqchips[0].pin_bitmap == (2, 0, 0, 0x1000)
    assert cell.irqchips[0].pins == {33, 140}


def test_metadata_images_are_the_boot_spec() -> None:
    """<jailhouse:boot> images are a bare-metal boot spec with load addresses."""
    body = (
        "<jailhouse:boot><jailhouse:image file='/demo.bin' address='0x0'/>"
        "<jailhouse:image file='/args' address='4096'/></jailhouse:boot>"
    )
    result = to_cell(dom(extra=meta(body)))
    assert result.boot.images == (BootImage("/demo.bin", 0), BootImage("/args", 0x1000))
    assert not result.boot.is_linux


@pytest.mark.parametrize(
    ("extra", "element"),
    [
        (meta(flavour="x"), "/domain/metadata/jailhouse:cell/@flavour"),
        (meta(flags="READ"), "/domain/metadata/jailhouse:cell/@flags"),
        (meta(id="-1"), "/domain/metadata/jailhouse:cell/@id"),
        (meta(id="0x100000000"), "/domain/metadata/jailhouse:cell/@id"),
        (meta("<jailhouse:cpu>1</jailhouse:cpu>"), "/domain/metadata/jailhouse:cell/jailhouse:cpu"),
        (meta("<jailhouse:trailing>xyz</jailhouse:trailing>"),
         "/domain/metadata/jailhouse:cell/jailhouse:trailing"),
        (meta("<jailhouse:memory-regions><jailhouse:region phys='1' bogus='2'/>"
              "</jailhouse:memory-regions>"),
         "/domain/metadata/jailhouse:cell/jailhouse:memory-regions/jailhouse:region/@bogus"),
        (meta("<jailhouse:pci-devices><jailhouse:pci-device type='DEVICE' bdf='00:20.0'/>"
              "</jailhouse:pci-devices>"),
         "/domain/metadata/jailhouse:cell/jailhouse:pci-devices/jailhouse:pci-device/@bdf"),
        (meta("<jailhouse:cpus>1</jailhouse:cpus><jailhouse:cpus>2</jailhouse:cpus>"),
         "/domain/metadata/jailhouse:cell/jailhouse:cpus[2]"),
        (meta(name_hex="41" * 33), "/domain/metadata/jailhouse:cell/@name-hex"),
        (meta("<jailhouse:memory-regions><jailhouse:region phys='1'/>"
              "<jailhouse:region flags='READ|BOGUS'/></jailhouse:memory-regions>"),
         "/domain/metadata/jailhouse:cell/jailhouse:memory-regions/jailhouse:region[2]/@flags"),
        (meta("<jailhouse:memory-regions><jailhouse:region size='0x10000000000000000'/>"
              "</jailhouse:memory-regions>"),
         "/domain/metadata/jailhouse:cell/jailhouse:memory-regions/jailhouse:region/@size"),
        (meta("<jailhouse:cache-regions><jailhouse:cache flags='0x10000'/>"
              "</jailhouse:cache-regions>"),
         "/domain/metadata/jailhouse:cell/jailhouse:cache-regions/jailhouse:cache/@flags"),
        (meta("<jailhouse:irqchips><jailhouse:irqchip pin-bitmap='1 2 3 0x100000000'/>"
              "</jailhouse:irqchips>"),
         "/domain/metadata/jailhouse:cell/jailhouse:irqchips/jailhouse:irqchip/@pin-bitmap"),
        (meta("<jailhouse:pci-devices><jailhouse:pci-device type='BOGUS' bdf='00:01.0'/>"
              "</jailhouse:pci-devices>"),
         "/domain/metadata/jailhouse:cell/jailhouse:pci-devices/jailhouse:pci-device/@type"),
        (f"<metadata><jailhouse:bogus xmlns:jailhouse='{NS}'/></metadata>",
         "/domain/metadata/jailhouse:bogus"),
    ],
)  # fmt: skip
def test_bad_metadata_is_an_error_naming_the_part(extra: str, element: str) -> None:
    """Unknown parts, attributes and malformed values in our namespace are errors."""
    assert error_at(dom(extra=extra)).element == element


def test_metadata_numbers_and_flags_in_every_spelling() -> None:
    """Leading zeros, long numbers, spaced flags and numbers among flags read as written."""
    regions = (
        "<jailhouse:memory-regions>"
        f"<jailhouse:region phys='{'0' * 26}1' virt='0x00000000000000000002' size='0x1000'"
        " flags='READ | WRITE|0x100'/>"
        "</jailhouse:memory-regions>"
    )
    result = to_cell(dom(memory="<memory unit='KiB'>1</memory>", extra=meta(regions)))
    (region,) = result.config.mem_regions
    assert (region.phys_start, region.virt_start, region.size) == (1, 2, 0x1000)
    assert region.flags == MemFlag.READ | MemFlag.WRITE | 0x100


@pytest.mark.parametrize(
    ("xml", "element"),
    [
        (dom(vcpu="<vcpu>2</vcpu>", extra=meta("<jailhouse:cpus>3</jailhouse:cpus>")),
         "/domain/vcpu"),
        (dom(extra=meta("<jailhouse:cpus>3</jailhouse:cpus>")
             + "<cputune><vcpupin vcpu='0' cpuset='2'/></cputune>"),
         "/domain/cputune/vcpupin/@cpuset"),
        (dom(extra=meta("<jailhouse:memory-regions/>")), "/domain/memory"),
        (dom(_hostdev("0x00", "0x1f", "0x2"), extra=meta("<jailhouse:pci-devices/>")),
         "/domain/devices/hostdev"),
        (dom(shmem(), extra=meta("<jailhouse:pci-devices/>")), "/domain/devices"),
        (dom(extra=meta(flags="VIRTUAL_CONSOLE_PERMITTED")), "/domain/devices"),
        (dom(extra=meta(flags="AARCH32"), arch="aarch64"),
         "/domain/metadata/jailhouse:cell/@flags"),
        (dom(os="<kernel>/k</kernel>",
             extra=meta("<jailhouse:boot><jailhouse:image file='/x' address='0'/>"
                        "</jailhouse:boot>")),
         "/domain/metadata/jailhouse:cell/jailhouse:boot"),
    ],
)  # fmt: skip
def test_metadata_and_standard_elements_must_agree(xml: str, element: str) -> None:
    """A vCPU count, pin, memory size, device list or console the metadata contradicts fails."""
    system = ARM64 if "aarch64" in xml else X86
    assert error_at(xml, system).element == element


def test_explicit_metadata_conflicts_with_the_system_are_notes() -> None:
    """Verbatim metadata that breaks a config rule (CPU 0 on x86) is noted, strict fails."""
    xml = dom(extra=meta("<jailhouse:cpus>0</jailhouse:cpus>"))
    result = to_cell(xml)
    assert result.config.cpus == {0}
    assert note_paths(result) == ["/domain/metadata/jailhouse:cell"]
    assert "CPU 0" in result.notes[0].reason
    assert error_at(xml, strict=True).element == "/domain/metadata/jailhouse:cell"


def test_a_second_jailhouse_element_is_a_note() -> None:
    """Like libvirt, only the first element of our namespace is read."""
    second = f'<jailhouse:cell xmlns:jailhouse="{NS}" flags="0"/>'
    xml = dom(extra=meta().replace("</metadata>", second + "</metadata>"))
    assert note_paths(to_cell(xml)) == ["/domain/metadata/jailhouse:cell[2]"]


# -- cell to domain ------------------------------------------------------------------------------


def test_example_cells_round_trip_byte_exactly() -> None:
    """Every example cell written as XML and read back gives the same bytes and no note."""
    for arch, system in (("x86", example_system("x86")), ("arm64", ARM64)):
        for cell in example_cells(arch).values():  # type: ignore[arg-type]
            result = to_cell(cell_to_domain(cell), system)
            assert result.config.to_bytes() == cell.to_bytes()
            assert result.notes == ()


def test_xml_fixtures_equal_a_fresh_generation_and_read_back_exactly() -> None:
    """fixtures/xml holds cell_to_domain of each example cell; each reads back to its bytes."""
    cells = {**example_cells("x86"), **example_cells("arm64")}
    on_disk = sorted(p.stem for p in XML_FIXTURES.glob("*.xml"))
    assert on_disk == sorted(cells), "run `python fixtures/xml/generate.py`"
    for name, cell in cells.items():
        text = (XML_FIXTURES / f"{name}.xml").read_text(encoding="utf-8")
        system = ARM64 if cell.arch == Arch.ARM64 else example_system("x86")
        result = to_cell(text, system)
        assert result.config.to_bytes() == cell.to_bytes()
        assert cell_to_domain(cell, boot=result.boot) == text
        assert not result.boot.is_empty


def test_written_xml_uses_standard_elements_where_libvirt_has_them() -> None:
    """Name, memory, pinned vCPUs, arch, console, shmem and boot are standard elements."""
    cell = example_cells("arm64")["arm64-demo"]
    boot = BootSpec(kernel="/Image", cmdline="console=ttyAMA0", dtb="/x.dtb")
    root = etree.fromstring(cell_to_domain(cell, domain_type="kvm", boot=boot, uuid="0" * 32))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "arm64-demo"
    assert root.findtext("uuid") == "0" * 32
    assert root.find("memory").get("unit") == "KiB"  # type: ignore[union-attr]
    assert root.findtext("memory") == "64"
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.iter("vcpupin")] == [("0", "3")]
    assert root.find("os/type").get("arch") == "aarch64"  # type: ignore[union-attr]
    assert [root.findtext(f"os/{t}") for t in ("kernel", "cmdline", "dtb")] == [
        "/Image",
        "console=ttyAMA0",
        "/x.dtb",
    ]
    assert root.find("devices/console") is not None
    shmem = root.find("devices/shmem")
    assert shmem is not None
    address = shmem.find("address")
    assert address is not None
    assert (address.get("domain"), address.get("bus"), address.get("slot")) == (
        "0x0001",
        "0x00",
        "0x00",
    )


def test_unrepresentable_names_travel_in_the_metadata() -> None:
    """A name libvirt cannot carry gets a placeholder <name> and comes back exactly."""
    for name in ("", "a/b", "tab\there", "x" * 32, "\u00e9t\u00e9"):
        cell = CellConfig(name=name, arch=Arch.X86)
        xml = cell_to_domain(cell)
        assert etree.fromstring(xml).findtext("name", "").startswith("cell-")
        assert to_cell(xml).config.to_bytes() == cell.to_bytes()


@pytest.mark.parametrize(
    ("kwargs", "element"),
    [
        ({"domain_type": "KVM!"}, "/domain/@type"),
        ({"uuid": "xyz"}, "/domain/uuid"),
        ({"boot": BootSpec(kernel="/a\x01b")}, "/domain/os"),
        ({"name": "\u20ac"}, "/domain/name"),
    ],
)
def test_cell_to_domain_refuses_what_xml_cannot_say(
    kwargs: dict[str, object], element: str
) -> None:
    """A malformed domain type or uuid, a non-latin-1 name or a control character fail."""
    cell = example_cells("x86")["x86-demo"]
    if "name" in kwargs:
        cell = cell.replace(name=kwargs.pop("name"))
    with pytest.raises(TranslationError) as info:
        cell_to_domain(cell, **kwargs)  # type: ignore[arg-type]
    assert info.value.element == element


def _system_for(cell: CellConfig) -> SystemConfig:
    return SYSTEMS[cell.arch]


@given(cell_configs())
def test_any_cell_round_trips_byte_exactly(cell: CellConfig) -> None:
    """Any cell the codec packs, written as XML and read back, gives the same bytes."""
    assume(cell.arch in SYSTEMS)
    result = to_cell(cell_to_domain(cell), _system_for(cell))
    assert result.config.to_bytes() == cell.to_bytes()


# -- XPaths ---------------------------------------------------------------------------------------


def test_paths_follow_a_tree_changed_outside_a_translation() -> None:
    """Outside a translation every path is worked out afresh, so it follows changes."""
    root = etree.fromstring("<domain><devices><disk/><disk/><console/></devices></domain>")
    devices, disk = root[0], root[0][1]
    assert path_of(disk) == "/domain/devices/disk[2]"
    devices.insert(0, etree.Element("disk"))
    assert path_of(disk) == "/domain/devices/disk[3]"
    devices.remove(devices[0])
    devices.remove(devices[0])
    assert path_of(disk) == "/domain/devices/disk"
    disk.tag = "console"
    assert path_of(disk) == "/domain/devices/console[1]"


def test_numbered_paths_hold_past_eviction_and_across_threads() -> None:
    """Inside numbering(), with more parents than it keeps and four threads, paths stay right."""
    parents = "".join("<p><c/><c/><!-- x --><?pi y?><c/></p>" for _ in range(100))
    root = etree.fromstring(f"<domain><q/>{parents}<q/></domain>")
    leaves = list(root.iter("c"))
    expected = [path_of(leaf) for leaf in leaves]
    assert expected[:3] == ["/domain/p[1]/c[1]", "/domain/p[1]/c[2]", "/domain/p[1]/c[3]"]
    assert expected[-1] == "/domain/p[100]/c[3]"

    def walk(_: int) -> list[str]:
        with numbering():
            return [path_of(leaf) for leaf in leaves + leaves[::-1]]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(walk, range(4)))
    assert results == [expected + expected[::-1]] * 4


# -- generated domains ---------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["x86", "arm64"]).flatmap(lambda a: st.tuples(st.just(a), domains(a))))
def test_generated_domains_translate_and_keep_their_meaning(case: tuple[str, str]) -> None:
    """A generated domain becomes a checked cell, and XML -> cell -> XML -> cell is stable."""
    arch, xml = case
    system = X86 if arch == "x86" else ARM64
    root = etree.fromstring(xml.encode())
    result = attempt(xml, system)
    if isinstance(result, TranslationError):
        event(f"refused at {result.element}")
        assert result.element.startswith("/domain")
        return
    event("translated")
    cell = result.config
    assert cell.name == root.findtext("name")
    assert len(cell.cpus) == int(root.findtext("vcpu", "1"))
    memory = root.find("memory")
    assert memory is not None
    size = scaled_bytes(
        memory.text or "",
        memory.get("unit"),
        where="",
        unit_where="",
        default_unit=1024,
    )
    ram = sum(r.size for r in cell.mem_regions if r.flags & L)
    assert ram == -(-(-(-size // 1024) * 1024) // PAGE_SIZE) * PAGE_SIZE
    assert errors_of(system, cell) == []
    again = to_cell(cell_to_domain(cell, boot=result.boot, uuid=result.uuid), system)
    assert again.config.to_bytes() == cell.to_bytes()
    assert (again.boot, again.uuid, again.notes) == (result.boot, result.uuid, ())


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(mutated_domains())
def test_mutated_domains_translate_or_fail_cleanly(xml: bytes) -> None:
    """A damaged domain either translates to a cell that passes the checks or fails cleanly."""
    for system in (X86, ARM64):
        result = attempt(xml, system)
        if isinstance(result, TranslationError):
            event("refused")
            assert result.element.startswith("/")
            assert result.reason
        else:
            event("translated")
            assert errors_of(system, result.config) == []


@given(st.binary(max_size=200))
def test_random_bytes_fail_cleanly(data: bytes) -> None:
    """Arbitrary bytes are a TranslationError, never another exception."""
    with pytest.raises(TranslationError):
        to_cell(data)


# -- realistic domains (fixtures/xml/realworld) -------------------------------------------------

# file -> (system, expected CPUs or the XPath of the error)
REALWORLD_OUTCOMES: dict[str, tuple[SystemConfig, frozenset[int] | str]] = {
    "kvm-desktop.xml": (X86, frozenset({3})),
    "kvm-pinned.xml": (X86, frozenset({1, 2})),
    "kvm-numa.xml": (X86, frozenset({2, 3})),
    "kvm-hostdev.xml": (X86, frozenset({3})),
    "kvm-hostdev-unknown.xml": (X86, "/domain/devices/hostdev/source/address"),
    "kvm-ivshmem-root.xml": (X86, frozenset({3})),
    "kvm-hotplug.xml": (X86, "/domain/vcpu/@current"),
    "kvm-numad.xml": (X86, "/domain/vcpu/@placement"),
    "aarch64-direct-kernel.xml": (ARM64, frozenset({2, 3})),
    "aarch64-no-dtb.xml": (ARM64, frozenset({3})),
    "aarch64-ivshmem-new.xml": (ARM64, frozenset({3})),
    "armv7l-guest.xml": (ARM64, frozenset({3})),
    "x86-i686-serial.xml": (X86, frozenset({3})),
    "riscv64-virt.xml": (ARM64, "/domain/os/type/@arch"),
    "lxc-container.xml": (X86, "/domain/os/type"),
}


def test_every_realworld_file_has_an_expected_outcome() -> None:
    """The outcome table covers exactly the files in fixtures/xml/realworld."""
    assert sorted(p.name for p in REALWORLD.glob("*.xml")) == sorted(REALWORLD_OUTCOMES)


@pytest.mark.parametrize("name", sorted(REALWORLD_OUTCOMES))
def test_realworld_domains_translate_or_fail_as_expected(name: str) -> None:
    """Each realistic domain becomes the expected cell, or fails naming the expected element."""
    system, expected = REALWORLD_OUTCOMES[name]
    data = (REALWORLD / name).read_bytes()
    if isinstance(expected, str):
        assert error_at(data, system).element == expected
        return
    result = to_cell(data, system)
    assert result.config.cpus == expected
    assert errors_of(system, result.config) == []
    again = to_cell(cell_to_domain(result.config, boot=result.boot), system)
    assert again.config.to_bytes() == result.config.to_bytes()


def test_realworld_details() -> None:
    """Spot checks: the desktop's devices are notes, the hostdev has its caps, boot specs."""
    desktop = to_cell((REALWORLD / "kvm-desktop.xml").read_bytes())
    paths = note_paths(desktop)
    for part in ("disk[1]", "disk[2]", "interface", "graphics", "video", "memballoon", "rng"):
        assert f"/domain/devices/{part}" in paths
    assert desktop.uuid == "5a1c2e44-7d0f-4c8e-9b7a-1f2e3d4c5b6a"
    hostdev = to_cell((REALWORLD / "kvm-hostdev.xml").read_bytes()).config
    assert [d.bdf for d in hostdev.pci_devices] == [0xFA]
    assert len(hostdev.pci_caps) == 2
    edge = to_cell((REALWORLD / "aarch64-direct-kernel.xml").read_bytes(), ARM64)
    assert edge.boot.dtb == "/srv/edge/edge.dtb"
    assert (
        CellFlag.AARCH32
        in to_cell((REALWORLD / "armv7l-guest.xml").read_bytes(), ARM64).config.flags
    )
    hub = to_cell((REALWORLD / "aarch64-ivshmem-new.xml").read_bytes(), ARM64).config
    assert [(d.bdf, d.shmem_dev_id, d.num_msix_vectors) for d in hub.pci_devices] == [
        (0x00, 1, 0),
        (0x08, 0, 4),
    ]


# -- bounded numbers, cpusets and messages ----------------------------------------------------

MESSAGE_LIMIT = 2000
"""Longest message accepted (the reliability suite's bound)."""


@pytest.mark.parametrize(
    ("xml", "element"),
    [
        (dom(memory=f"<memory unit='KiB'>{'9' * 5000}</memory>"), "/domain/memory"),
        (dom(vcpu=f"<vcpu>{'1' * 31}</vcpu>"), "/domain/vcpu"),
        (dom(_hostdev("0x00", "1" * 5000, "0x2")),
         "/domain/devices/hostdev/source/address/@slot"),
        (dom(extra=meta(id="0x" + "f" * 5000)), "/domain/metadata/jailhouse:cell/@id"),
    ],
    ids=["memory", "vcpu", "pci-slot", "metadata-hex"],
)  # fmt: skip
def test_absurdly_long_numbers_are_refused_naming_the_element(xml: str, element: str) -> None:
    """A number of more than 30 significant digits is a TranslationError, never int()'s error."""
    error = error_at(xml)
    assert error.element == element
    assert "digits" in error.reason
    assert len(str(error)) <= 300


def test_leading_zeros_do_not_count_as_digits() -> None:
    """A size written with 40 leading zeros is the same size (libvirt's strtoull reads it so)."""
    padded = dom(memory=f"<memory unit='MiB'>{'0' * 40}2</memory>")
    assert to_cell(padded).config.to_bytes() == to_cell(dom()).config.to_bytes()


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        # left to right, each CPU as the last item naming it says (libvirt-facts.md §2)
        ("0-3,^2", {0, 1, 3}),
        ("1-5,^3,^4", {1, 2, 5}),
        ("^1,0-3", {0, 1, 2, 3}),
        ("0-3,^1,1", {0, 1, 2, 3}),
        ("0-3,", {0, 1, 2, 3}),
        ("0,^0", set()),
        (",".join(["0-16383"] * 50_000), set(range(16384))),
        (",".join(["1-16383", "^9"] * 20_000 + ["^0"]), set(range(1, 16384)) - {9}),
    ],
    ids=["exclude", "two-exclusions", "re-added", "re-added-single", "trailing-comma",
         "empty", "repeated-full-ranges", "repeated-with-exclusions"],
)  # fmt: skip
def test_cpusets_apply_items_left_to_right(text: str, cpus: set[int]) -> None:
    """Ranges and exclusions give libvirt's set, however often the ranges repeat."""
    assert parse_cpuset(text, "/domain/vcpu/@cpuset") == cpus


def test_cpu_numbers_are_bounded_by_libvirt_and_by_the_cell_format() -> None:
    """Cpusets of libvirt end at CPU 16383; a cell's own CPU set (metadata) ends at 32767."""
    assert max(parse_cpuset("16383", "/")) == LIBVIRT_MAX_CPU == 16383
    assert max(parse_cpuset("32767", "/", limit=MAX_CELL_CPU)) == 32767
    for text, limit in (("0-16384", LIBVIRT_MAX_CPU), ("^32768,0", MAX_CELL_CPU)):
        with pytest.raises(TranslationError, match=f"above {limit}"):
            parse_cpuset(text, "/", limit=limit)
    error = error_at(dom(vcpu=f"<vcpu cpuset='{','.join(['0-1048575'] * 80_000)}'>1</vcpu>"))
    assert error.element == "/domain/vcpu/@cpuset"
    assert "above 16383" in error.reason
    assert len(str(error)) <= 300
    assert len(error.value) == 80_000 * 10 - 1  # the exception keeps the whole value


def test_a_huge_ignored_value_is_shortened_in_its_note() -> None:
    """A note on a 900 KB attribute quotes its start and length; the note's value keeps it."""
    result = to_cell(dom(f"<serial type='{'A' * 900_000}'/>"))
    (note,) = [n for n in result.notes if n.value is not None and len(n.value) == 900_000]
    assert f"'{'A' * 60}...' (900000 characters)" in str(note)
    assert len(str(note)) <= 300


def test_a_huge_element_name_is_shortened_in_its_note() -> None:
    """A note on an element with a 40,000-character name stays bounded."""
    result = to_cell(dom(f"<{'x' * 40_000}/>"))
    assert result.notes
    assert all(len(str(note)) <= 300 for note in result.notes)


def test_a_huge_name_is_refused_with_a_bounded_message() -> None:
    """A 900,000-character name is refused in a short message that still names <name>."""
    error = error_at(dom(name="n" * 900_000))
    assert error.element == "/domain/name"
    assert len(str(error)) <= MESSAGE_LIMIT
    assert "(900000 characters)" in str(error)


def test_libxml2_syntax_errors_are_one_line() -> None:
    """A NUL character is refused in one line that keeps libxml2's position."""
    error = error_at(dom(name="a\0b"))
    assert "\n" not in str(error)
    assert "out of allowed range, line 1, column" in error.reason


@pytest.mark.parametrize(
    "bdf",
    ["0_0:1f.2", " 00:1f.2", "00:1f.+2", "00:1f.2" + "0" * 5000],
    ids=["underscore", "space", "sign", "long"],
)
def test_metadata_bdf_is_hex_hex_decimal_only(bdf: str) -> None:
    """A bdf with an underscore, a space, a sign or thousands of digits is refused."""
    extra = meta(
        f"<jailhouse:pci-devices><jailhouse:pci-device type='DEVICE' bdf='{bdf}'/>"
        "</jailhouse:pci-devices>"
    )
    error = error_at(dom(extra=extra))
    assert error.element.endswith("jailhouse:pci-device/@bdf")
    assert len(str(error)) <= 300


@pytest.mark.parametrize(
    ("size", "cpus", "count", "reason"),
    [
        ("0", "3", 1, "a CPU set of 0 byte(s) holds no CPU; the cell's CPU(s) 3 do not fit"),
        ("4097", "3", 1, "a CPU set is at most 4096 bytes"),
        ("0xffffffff", "3", 1, "a CPU set is at most 4096 bytes"),
        ("1", "9", 1, "a CPU set of 1 byte(s) holds CPUs 0-7; the cell's CPU(s) 9 do not fit"),
        ("1", "7-9", 3, "the cell's CPU(s) 8-9 do not fit"),
    ],
)
def test_metadata_cpu_set_size_must_hold_the_cpus(
    size: str, cpus: str, count: int, reason: str
) -> None:
    """A metadata CPU-set size the driver refuses or too small for the CPUs is refused by name."""
    system = X86.replace(root_cell=X86.root_cell.replace(cpus=frozenset(range(16))))
    body = f"<jailhouse:cpus>{cpus}</jailhouse:cpus>"
    xml = dom(vcpu=f"<vcpu>{count}</vcpu>", extra=meta(body, cpu_set_size=size))
    error = error_at(xml, system)
    assert error.element == "/domain/metadata/jailhouse:cell/@cpu-set-size"
    assert error.value == int(size, 0)
    assert reason in error.reason


def test_metadata_cpu_set_size_that_holds_the_cpus_is_kept_and_packs() -> None:
    """A metadata CPU-set size of 1 byte holds CPU 3: it is taken verbatim and the config packs."""
    xml = dom(extra=meta("<jailhouse:cpus>3</jailhouse:cpus>", cpu_set_size="1"))
    config = to_cell(xml).config
    assert config.cpu_set_size == 1
    # ABI sheet: 132-byte header + cpu_set_size bytes of CPU bitmap, then the arrays
    assert config.to_bytes()[132] == 1 << 3
