"""Domain XML against libvirt itself: its RelaxNG schema and libvirt-python's test driver.

Skipped, with the reason, when libvirt-python or the schemas are not installed (CI installs
them: apt ``libvirt-dev libvirt-daemon libvirt-clients``, pip ``libvirt-python``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from strategies import cell_configs

from jailhouse.config.model import Arch, CellConfig, SystemConfig, format_cpus
from jailhouse.domxml import cell_to_domain, domain_to_cell
from jailhouse.domxml._xml import parse_cpuset, scaled_bytes
from jailhouse.errors import TranslationError
from jailhouse.examples import example_cells, example_system

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.libvirt

SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")
REALWORLD = Path(__file__).resolve().parent.parent / "fixtures" / "xml" / "realworld"
SYSTEMS: dict[Arch, SystemConfig] = {
    Arch.X86: example_system("x86"),
    Arch.ARM64: example_system("arm64"),
}


def _libvirt() -> Any:  # libvirt-python ships no type information
    return pytest.importorskip("libvirt", reason="libvirt-python is not installed")


@pytest.fixture(scope="module")
def schema() -> etree.RelaxNG:
    """Load libvirt's domain schema, or skip."""
    if not SCHEMA.exists():
        pytest.skip(f"libvirt's RelaxNG schemas are not installed ({SCHEMA} is missing)")
    return etree.RelaxNG(file=str(SCHEMA))


class _Libvirt:
    """A test:///default connection with libvirt's stderr error printing silenced."""

    def __init__(self) -> None:
        self.libvirt = _libvirt()
        self.libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.conn = self.libvirt.open("test:///default")

    def round_trip(self, xml: str) -> str:
        """Define a domain, return libvirt's XML for it, and undefine it again."""
        dom = self.conn.defineXML(xml)
        try:
            return str(dom.XMLDesc(0))
        finally:
            dom.undefine()

    def error(self, xml: str) -> Any:  # libvirt.libvirtError or None
        """Return the libvirtError defining ``xml`` raises, or None (and undefine it)."""
        try:
            self.round_trip(xml)
        except self.libvirt.libvirtError as exc:
            return exc
        return None


@pytest.fixture(scope="module")
def libvirt_conn() -> Iterator[_Libvirt]:
    """Open libvirt's test driver for the module, or skip; close it afterwards."""
    conn = _Libvirt()
    yield conn
    conn.conn.close()


def _system_for(cell: CellConfig) -> SystemConfig:
    if cell.arch == Arch.ARM:
        system = SYSTEMS[Arch.ARM64]
        return system.replace(arch=Arch.ARM, root_cell=system.root_cell.replace(arch=Arch.ARM))
    return SYSTEMS[cell.arch]


@pytest.mark.parametrize("domain_type", ["kvm", "test", "qemu"])
@pytest.mark.parametrize("arch", ["x86", "arm64"])
def test_example_cells_validate_define_and_read_back(
    schema: etree.RelaxNG, libvirt_conn: _Libvirt, domain_type: str, arch: str
) -> None:
    """Example cells as kvm/test/qemu XML pass the schema, define, and read back exactly."""
    system = example_system(arch)  # type: ignore[arg-type]
    for cell in example_cells(arch).values():  # type: ignore[arg-type]
        xml = cell_to_domain(cell, domain_type=domain_type)
        assert schema.validate(etree.fromstring(xml)), schema.error_log
        back = domain_to_cell(libvirt_conn.round_trip(xml), system)
        assert back.config.to_bytes() == cell.to_bytes()
        assert back.notes == ()


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cell_configs())
def test_any_cell_validates_and_survives_libvirt(
    schema: etree.RelaxNG, libvirt_conn: _Libvirt, cell: CellConfig
) -> None:
    """Any cell written with a libvirt domain type validates, defines, and reads back exactly."""
    xml = cell_to_domain(cell, domain_type="kvm")
    assert schema.validate(etree.fromstring(xml)), schema.error_log
    back = domain_to_cell(libvirt_conn.round_trip(xml), _system_for(cell))
    assert back.config.to_bytes() == cell.to_bytes()


def test_the_jailhouse_type_is_not_libvirts(schema: etree.RelaxNG, libvirt_conn: _Libvirt) -> None:
    """The default type='jailhouse' is ours: libvirt 9's schema and parser both refuse it."""
    xml = cell_to_domain(example_cells("x86")["x86-demo"])
    assert not schema.validate(etree.fromstring(xml))
    assert libvirt_conn.error(xml) is not None


@pytest.mark.parametrize("name", sorted(p.name for p in REALWORLD.glob("*.xml")))
def test_realworld_domains_mean_the_same_after_libvirt(
    schema: etree.RelaxNG, libvirt_conn: _Libvirt, name: str
) -> None:
    """Each realistic domain is valid libvirt XML and translates alike after libvirt rewrites it."""
    text = (REALWORLD / name).read_text(encoding="utf-8")
    assert schema.validate(etree.fromstring(text.encode())), schema.error_log
    libvirt_text = libvirt_conn.round_trip(text)
    system = SYSTEMS[Arch.ARM64 if "aarch64" in text or "armv7l" in text else Arch.X86]
    outcomes = []
    for candidate in (text, libvirt_text):
        try:
            outcomes.append(domain_to_cell(candidate, system).config.to_bytes())
        except TranslationError as exc:
            outcomes.append(exc.element.encode())
    assert outcomes[0] == outcomes[1]


# -- our parsing of libvirt's grammars against libvirt's --------------------------------------

UNIT_NAMES = ["b", "bytes", "byte", "KB", "k", "KiB", "kib", "MB", "M", "MiB", "mb", "GB",
              "G", "GiB", "T", "TiB", "TB", "", "Mi", "MiBs", "x", "KIB", "gB"]  # fmt: skip


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 1 << 40), st.sampled_from(UNIT_NAMES))
def test_memory_scaling_matches_libvirt(libvirt_conn: _Libvirt, value: int, unit: str) -> None:
    """For any value and unit, our KiB figure (or refusal) is libvirt's."""
    xml = (
        f"<domain type='test'><name>units</name><memory unit='{unit}'>{value}</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    error = libvirt_conn.error(xml)
    try:
        ours: int | None = -(-scaled_bytes(
            str(value), unit, where="/", unit_where="/", default_unit=1024
        ) // 1024)  # fmt: skip
    except TranslationError:
        ours = None
    if ours is not None and not 0 < ours <= (1 << 53) - 1:
        ours = None  # libvirt refuses 0 and sizes beyond 2**53 - 1 KiB as we do
    if error is not None:
        assert ours is None, error.get_error_message()
        return
    theirs = re.search(r"<memory unit='KiB'>(\d+)</memory>", libvirt_conn.round_trip(xml))
    assert theirs is not None
    assert ours == int(theirs.group(1))


CPUSET_ITEMS = st.one_of(
    st.integers(0, 40).map(str),
    st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda t: f"{min(t)}-{max(t)}"),
    st.integers(0, 40).map(lambda n: f"^{n}"),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(CPUSET_ITEMS, min_size=1, max_size=5).map(",".join))
def test_cpuset_grammar_matches_libvirt(libvirt_conn: _Libvirt, cpuset: str) -> None:
    """Ranges and exclusions applied left to right give the CPU set libvirt computes."""
    xml = (
        f"<domain type='test'><name>cpus</name><memory>4096</memory>"
        f"<vcpu cpuset='{cpuset}'>1</vcpu><os><type>hvm</type></os></domain>"
    )
    error = libvirt_conn.error(xml)
    try:
        ours: frozenset[int] | None = parse_cpuset(cpuset, "/")
    except TranslationError:
        ours = None
    if error is not None or ours is None:
        assert error is not None
        assert ours is None or not ours  # libvirt refuses what leaves no CPU, as we do
        return
    theirs = re.search(r"cpuset='([^']*)'", libvirt_conn.round_trip(xml))
    assert theirs is not None
    assert format_cpus(ours) == theirs.group(1)
