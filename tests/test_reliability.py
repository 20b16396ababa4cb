"""Reliability: damaged configs, generated and hostile XML, and device errors.

Two profiles.  The CI profile (the default) runs 20,000 mutated configs and 3,000
generated domain documents and keeps the whole reliability suite within about a minute.
The tests marked ``slow`` grow in the long profile,
``JAILHOUSE_LONG=1 python -m pytest -m slow tests/test_reliability*.py``: 100,000 mutated
config blobs and 100,000 generated domain documents.  (They are not skipped without it: a
CI run must not skip anything but hardware tests.)
``JAILHOUSE_FUZZ_SEED`` picks another seed; every failure names the seed and the index
of the input, which rebuilds it exactly (:func:`mutate_blob`, :func:`mutate_domain`).

What every input must do:

- raise only the documented exception (:class:`~jailhouse.errors.InvalidConfigError` for
  bytes, :class:`~jailhouse.errors.TranslationError` for XML), with a message of one
  bounded line, or succeed with a result that packs, validates and round-trips;
- finish: a watchdog (``SIGALRM``) fails the test when one input runs for more than
  :data:`HANG_SECONDS` -- a guard against hangs, not a timing assertion, as it sits
  hundreds of times above the real cost;
- stay within :data:`MEMORY_BUDGET` of extra resident memory (the process's RSS peak is
  reset through ``/proc/self/clear_refs`` before the run).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
from lxml import etree

from jailhouse.config.model import (
    Arch,
    ArmPlatform,
    CacheRegion,
    CacheType,
    CellConfig,
    Console,
    ConsoleFlag,
    ConsoleType,
    IommuType,
    IommuUnit,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PciCapability,
    PciDevice,
    PciType,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    X86Platform,
    load_config,
)
from jailhouse.config.validate import check_configs, validate_cell, validate_system
from jailhouse.domxml import MAX_DOCUMENT_BYTES, cell_to_domain, domain_to_cell
from jailhouse.errors import (
    ConfigError,
    DeviceError,
    DeviceNotFoundError,
    InvalidConfigError,
    NotEnabledError,
    PermissionDeniedError,
    TranslationError,
)
from jailhouse.examples import example_system
from jailhouse.hypervisor import Hypervisor
from jailhouse.sim import SimHost

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from backends import Backend

LONG: Final = os.environ.get("JAILHOUSE_LONG") == "1"
"""Whether the long profile was asked for."""
SEED: Final = int(os.environ.get("JAILHOUSE_FUZZ_SEED", "20250101"))
"""Seed of every generator in this file."""
HANG_SECONDS: Final = 20.0
"""One input running longer than this counts as a hang."""
MEMORY_BUDGET: Final = 256 << 20
"""Extra resident memory a whole fuzz run may take."""
MESSAGE_LIMIT: Final = 2000
"""Longest error message accepted: one line a person can read."""
REPO: Final = Path(__file__).resolve().parent.parent
FIXTURES: Final = REPO / "fixtures"


# -- guards ---------------------------------------------------------------------------------


class HangError(BaseException):
    """An input ran past :data:`HANG_SECONDS`.

    A ``BaseException``, so that no ``except Exception`` on the way swallows it.
    """


@contextlib.contextmanager
def watchdog(describe: Callable[[], str], seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise :class:`HangError` naming the current input if the block runs too long."""

    def expired(_signum: int, _frame: object) -> None:
        raise HangError(f"still running after {seconds} s: {describe()}")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def memory_guard(budget: int = MEMORY_BUDGET) -> Iterator[None]:
    """Fail if the block raises the process's resident peak more than ``budget`` bytes."""
    Path("/proc/self/clear_refs").write_text("5", encoding="ascii")  # reset VmHWM to VmRSS
    start = _status_kib("VmRSS") * 1024
    yield
    grown = _status_kib("VmHWM") * 1024 - start
    assert grown <= budget, f"resident memory peaked {grown >> 20} MiB above the start"


def check_message(exc: BaseException) -> None:
    """Assert that an error reads as one bounded line (a translation error also says where)."""
    text = str(exc)
    assert text, f"{type(exc).__name__} with an empty message"
    assert "\n" not in text, f"multi-line message: {text[:200]!r}"
    assert len(text) <= MESSAGE_LIMIT, f"{len(text)}-character message: {text[:200]!r}..."
    if isinstance(exc, TranslationError):
        assert exc.element.startswith("/"), exc.element
        assert exc.reason, "a TranslationError without a reason"


# -- a corpus of configs ----------------------------------------------------------------------


def rich_cell(arch: Arch) -> CellConfig:
    """Return a cell with an element in every array, so mutations reach each one."""
    return CellConfig(
        name="rich",
        arch=arch,
        cpus=frozenset({2, 3}),
        mem_regions=(
            MemoryRegion(0x3B000000, 0, 0x10000, MemFlag.READ | MemFlag.WRITE | MemFlag.LOADABLE),
            MemoryRegion(0x3B010000, 0x80000000, 0x1000, MemFlag.READ | MemFlag.COMM_REGION),
            MemoryRegion(0x09000000, 0x09000000, 0x1000, MemFlag.READ | MemFlag.IO),
        ),
        cache_regions=(CacheRegion(0, 2, CacheType.L3), CacheRegion(4, 4, CacheType.L3_CODE)),
        irqchips=(IrqChip(0x08000000, 0, 32, (1, 2, 0, 0x80000000)),),
        pio_regions=(PioRegion(0x3F8, 8), PioRegion(0x2F8, 8)),
        pci_devices=(
            PciDevice(PciType.IVSHMEM, 0x70, num_msix_vectors=2, shmem_peers=2, shmem_dev_id=1),
            PciDevice(PciType.DEVICE, 0x18, caps_start=0, num_caps=2, msi_64bits=True),
        ),
        pci_caps=(PciCapability(0x05, 0x50, 14), PciCapability(0x8001, 0x100, 4)),
        stream_ids=(1, 2, 0x10000),
        console=Console(0x09000000, 0x1000, ConsoleType.PL011, ConsoleFlag.ACCESS_MMIO),
        vpci_irq_base=100,
    )


def rich_systems() -> list[SystemConfig]:
    """Return systems with IOMMU units of every union member, on x86 and arm64."""
    x86 = example_system("x86")
    arm = example_system("arm64")
    x86 = x86.replace(
        platform=PlatformInfo(
            pci_mmconfig_base=0xE0000000,
            pci_mmconfig_end_bus=0xFF,
            iommu_units=(
                IommuUnit(IommuType.AMD, 0xFEB80000, 0x80000, 0x2, 0x40, 0x54, 0x8000),
                IommuUnit(IommuType.INTEL, 0xFED90000, 0x1000),
            ),
            arch_info=X86Platform(0x608, 0, 256, 2_000_000, 1_000_000),
        )
    )
    arm = arm.replace(
        platform=PlatformInfo(
            iommu_units=(
                IommuUnit(IommuType.PVU, 0x30F80000, 0x1000, tipvu_tlb_base=0x36000000,
                          tipvu_tlb_size=0x40000),
                IommuUnit(IommuType.SMMUV3, 0x09050000, 0x20000),
            ),
            arch_info=ArmPlatform(25, 3, 0x08000000, 0, 0, 0, 0x080A0000),
        ),
    )  # fmt: skip
    return [x86, arm]


def corpus() -> list[bytes]:
    """Return the config files the mutations start from."""
    blobs = [p.read_bytes() for p in sorted(FIXTURES.glob("*/*.cell"))]
    blobs += [rich_cell(arch).to_bytes() for arch in (Arch.X86, Arch.ARM64, Arch.ARM)]
    blobs += [s.to_bytes() for s in rich_systems()]
    return blobs


_COUNT_FIELDS: Final = tuple(range(48, 80, 4))
"""Offsets of cpu_set_size and the seven array counts in a descriptor (ABI sheet §3)."""
_ROOT_CELL: Final = 356
"""Offset of the root cell's descriptor in a system config (ABI sheet §3)."""


def mutate_blob(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """Damage a config: bit flips, truncation, count inflation, overwrites, splices.

    One to three damages are applied in a row; the same ``rng`` state gives the same bytes.
    """
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(7)
        if kind == 0 and buf:  # bit flips, half of them in the first 140 bytes
            for _ in range(rng.randint(1, 8)):
                limit = len(buf) if rng.random() < 0.5 else min(len(buf), 140)
                bit = rng.randrange(8 * limit)
                buf[bit // 8] ^= 1 << (bit % 8)
        elif kind == 1 and buf:  # truncation
            del buf[rng.randrange(len(buf)) :]
        elif kind == 2:  # count or cpu_set_size inflation
            base = _ROOT_CELL if buf[:5] == b"JHSYS" else 0
            offset = base + rng.choice(_COUNT_FIELDS)
            if offset + 4 <= len(buf):
                old = int.from_bytes(buf[offset : offset + 4], "little")
                new = rng.choice(
                    [old + 1, old + rng.randint(2, 64), 2 * old + 1, len(buf), 0xFFFF_FFFF,
                     0x8000_0000, 0x7FFF_FFFF, 0x10000, rng.getrandbits(32), 0]
                )  # fmt: skip
                buf[offset : offset + 4] = (new & 0xFFFF_FFFF).to_bytes(4, "little")
        elif kind == 3 and buf:  # random bytes over a stretch
            start = rng.randrange(len(buf))
            buf[start : start + rng.randint(1, 48)] = rng.randbytes(rng.randint(1, 48))
        elif kind == 4:  # a stretch of another config spliced in
            other = rng.choice(others)
            start = rng.randrange(len(other))
            chunk = other[start : start + rng.randint(1, 200)]
            at = rng.randrange(len(buf) + 1)
            buf[at : at + (len(chunk) if rng.random() < 0.5 else 0)] = chunk
        elif kind == 5:  # bytes appended
            buf += rng.randbytes(rng.randint(1, 96))
        else:  # a valid 8-byte header over random bytes
            buf = buf[:8] + bytearray(rng.randbytes(rng.randint(0, len(data) + 64)))
    return bytes(buf)


class Failures:
    """The failures of a fuzz run: it goes on after one, so a long run finds them all."""

    LIMIT: Final = 10

    def __init__(self, what: str, seed: int) -> None:
        """Name the inputs (``config``, ``domain``...) and the seed, for the report."""
        self.what = what
        self.seed = seed
        self.count = 0
        self.examples: list[str] = []

    def add(self, index: int, exc: BaseException) -> None:
        """Record the failure of input ``index``."""
        self.count += 1
        if len(self.examples) < self.LIMIT:
            kind = "" if isinstance(exc, AssertionError) else f"undocumented {type(exc).__name__}: "
            self.examples.append(f"{self.what} #{index} of seed {self.seed}: {kind}{exc}")

    def check(self) -> None:
        """Fail with every recorded example if anything failed."""
        assert self.count == 0, f"{self.count} failures:\n" + "\n".join(self.examples)


def _item_rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)  # noqa: S311 - reproducible, not secret


# -- mutated configs ---------------------------------------------------------------------------


def _systems_by_arch() -> dict[Arch, SystemConfig]:
    return {Arch.X86: example_system("x86"), Arch.ARM64: example_system("arm64")}


def check_blob(blob: bytes, systems: dict[Arch, SystemConfig], *, xml: bool) -> str:
    """Parse a damaged blob and use the result; return what happened.

    Raises:
        AssertionError: Anything but a documented outcome.
    """
    try:
        config = load_config(blob)
    except InvalidConfigError as exc:
        _check_invalid_config(exc, len(blob))
        return "rejected"
    packed = config.to_bytes()  # whatever parses must pack ...
    assert load_config(packed) == config  # ... and parse back to the same config
    if isinstance(config, SystemConfig):
        validate_system(config)
        return "system"
    validate_cell(config)
    system = systems.get(Arch(config.arch))
    if system is not None:
        check_configs(system, config)
    if xml:
        _round_trip_xml(config, system)
    return "cell"


def _check_invalid_config(exc: InvalidConfigError, size: int) -> None:
    """Assert that a parse error names a field and an offset inside the blob."""
    check_message(exc)
    assert exc.field, "an InvalidConfigError without a field"
    assert 0 <= exc.offset <= max(size, 8), (exc.offset, size)


def _round_trip_xml(config: CellConfig, system: SystemConfig | None) -> None:
    """Write a parsed cell as XML and read it back: same bytes, or a documented refusal."""
    try:
        document = cell_to_domain(config)
    except TranslationError as exc:  # a name no XML can carry, for one
        check_message(exc)
        return
    if system is None:
        return
    try:
        back = domain_to_cell(document, system)
    except TranslationError as exc:  # standard elements that disagree with the system
        check_message(exc)
        return
    assert back.config.to_bytes() == config.to_bytes()


def run_blob_fuzz(count: int, seed: int) -> dict[str, int]:
    """Check ``count`` damaged configs; return how many ended each way."""
    blobs = corpus()
    systems = _systems_by_arch()
    outcomes: dict[str, int] = {}
    failures = Failures("config", seed)
    index = 0
    with memory_guard(), watchdog(lambda: f"config #{index} of seed {seed}"):
        for index in range(count):
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)  # re-arm: per input
            rng = _item_rng(seed, index)
            blob = mutate_blob(rng, rng.choice(blobs), blobs)
            try:
                outcome = check_blob(blob, systems, xml=index % 16 == 0)
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                failures.add(index, exc)
                outcome = "failed"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    failures.check()
    return outcomes


def test_corpus_is_clean() -> None:
    """The undamaged corpus parses, packs back byte for byte and round-trips through XML."""
    systems = _systems_by_arch()
    for blob in corpus():
        assert load_config(blob).to_bytes() == blob
        assert check_blob(blob, systems, xml=True) in ("cell", "system")


@pytest.mark.slow
def test_mutated_configs() -> None:
    """20,000 damaged configs (long: 100,000): InvalidConfigError, or a sound config."""
    outcomes = run_blob_fuzz(100_000 if LONG else 20_000, SEED)
    # The mutations must exercise both paths, or the test proves little.
    assert outcomes.get("rejected", 0) > 2_000
    assert outcomes.get("cell", 0) + outcomes.get("system", 0) > 2_000


def run_create_fuzz(tmp_path: Path, count: int, seed: int) -> dict[str, int]:
    """Hand damaged cell configs to a simulated host through the API.

    After a failure the run goes on with a fresh host, so a long run finds every kind.
    """
    blobs = [b for b in corpus() if b[:5] == b"JHCLL"]
    system = example_system("arm64")
    outcomes: dict[str, int] = {}
    failures = Failures("create", seed)
    hosts = 0

    def fresh() -> tuple[SimHost, Hypervisor]:
        nonlocal hosts
        hosts += 1
        host = SimHost(tmp_path / f"host{hosts}", arch=Arch.ARM64, cpus=4)
        hv = Hypervisor(host.device())
        hv.enable(system)
        return host, hv

    host, hv = fresh()
    index = 0
    with memory_guard(), watchdog(lambda: f"create #{index} of seed {seed}"):
        for index in range(count):
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
            rng = _item_rng(seed, index)
            blob = mutate_blob(rng, rng.choice(blobs), blobs)
            try:
                outcome = _create_one(hv, host, blob)
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                failures.add(index, exc)
                outcome = "failed"
                hv.close()
                host, hv = fresh()
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    hv.close()
    failures.check()
    return outcomes


def _create_one(hv: Hypervisor, host: SimHost, blob: bytes) -> str:
    """Create (and destroy) a cell from a damaged config; assert nothing is left behind."""
    try:
        cell = hv.create_cell(blob)
    except (ConfigError, DeviceError) as exc:  # documented by create_cell
        check_message(exc)
        outcome = type(exc).__name__
    else:
        cell.destroy()
        outcome = "created"
    snap = host.snapshot()
    assert [c.name for c in snap.cells] == ["arm64-root"], f"left behind: {snap}"
    assert snap.root_cpus == frozenset(range(4)), f"root lacks CPUs: {snap}"
    return outcome


@pytest.mark.slow
def test_mutated_cells_on_a_simulated_host(tmp_path: Path) -> None:
    """150 damaged cells (long: 5,000) handed to create_cell: documented errors, no leftovers."""
    outcomes = run_create_fuzz(tmp_path, 5_000 if LONG else 150, SEED + 2)
    assert outcomes.get("InvalidConfigError", 0) > 0


def test_a_latin1_cell_name_survives_create(tmp_path: Path) -> None:
    """A cell named 'caf\u00e9' is created, found and destroyed through the API."""
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=4)
    with Hypervisor(host.device()) as hv:
        hv.enable(example_system("arm64"))
        demo = load_config(FIXTURES / "arm64" / "arm64-demo.cell")
        assert isinstance(demo, CellConfig)
        try:
            cell = hv.create_cell(demo.replace(name="caf\u00e9"))
        finally:
            leftovers = [c.name for c in host.snapshot().cells[1:]]
        assert cell.name == "caf\u00e9"
        cell.destroy()
    assert leftovers == ["caf\u00e9"]
    assert host.snapshot().root_cpus == frozenset(range(4))


# -- generated domain XML ----------------------------------------------------------------------

_VALUES: Final = (
    "0", "1", "-1", "+1", "007", "0x10", "0X1F", "0x", "x", "", " ", "1 ", "1e3", "nan", "inf",
    "4294967295", "4294967296", "18446744073709551615", "18446744073709551616",
    "9223372036854775807", "99999999999999999999999999", "0-3", "3-0", "0-3,^2", "^1", "1,,2",
    "0-1048575", "KiB", "MiB", "GiB", "PiB", "b", "k", "yes", "no", "on", "static", "auto",
    "x86_64", "aarch64", "armv7l", "riscv64", "pci", "ivshmem-doorbell", "ivshmem-plain",
    "pty", "serial", "0000:00:1f.7", "0xffff", "0x100", "caf\u00e9", "\u2603", "a" * 40,
    "READ|WRITE", "READ|BOGUS", "IVSHMEM", "UART_8250", "0x3f000000",
)  # fmt: skip
_TAGS: Final = (
    "vcpu", "memory", "currentMemory", "cputune", "vcpupin", "os", "type", "kernel", "initrd",
    "cmdline", "dtb", "devices", "console", "serial", "target", "shmem", "model", "size",
    "address", "hostdev", "source", "numa", "cell", "name", "uuid", "metadata", "msi",
    "memballoon", "features", "disk", "interface",
)  # fmt: skip
_ATTRS: Final = (
    "unit", "cpuset", "placement", "current", "arch", "type", "vcpu", "port", "domain", "bus",
    "slot", "function", "vectors", "name", "mode", "managed", "memory", "cpus", "id", "phys",
    "virt", "size", "flags", "address", "cpu-set-size", "bdf", "bar-mask",
)  # fmt: skip


def domain_corpus() -> list[bytes]:
    """Return the domain documents the mutations start from."""
    paths = sorted((FIXTURES / "xml").glob("*.xml")) + sorted(
        (FIXTURES / "xml" / "realworld").glob("*.xml")
    )
    return [p.read_bytes() for p in paths]


def _tree_mutation(rng: random.Random, root: etree._Element) -> None:
    elements = [el for el in root.iter() if isinstance(el.tag, str)]
    el = rng.choice(elements)
    kind = rng.randrange(8)
    parent = el.getparent()
    if kind == 0 and parent is not None:  # drop an element
        parent.remove(el)
    elif kind == 1 and parent is not None:  # duplicate one
        parent.insert(parent.index(el), etree.fromstring(etree.tostring(el)))
    elif kind == 2:  # change an attribute
        name = rng.choice(list(el.attrib) or list(_ATTRS))
        el.set(name, rng.choice(_VALUES))
    elif kind == 3:  # add an attribute
        el.set(rng.choice(_ATTRS), rng.choice(_VALUES))
    elif kind == 4:  # change the text
        el.text = rng.choice(_VALUES)
    elif kind == 5:  # add an element somewhere
        child = etree.SubElement(el, rng.choice(_TAGS))
        if rng.random() < 0.5:
            child.set(rng.choice(_ATTRS), rng.choice(_VALUES))
        if rng.random() < 0.5:
            child.text = rng.choice(_VALUES)
    elif kind == 6 and len(el):  # shuffle the children
        kids = list(el)
        rng.shuffle(kids)
        el[:] = kids
    elif el.attrib:  # drop an attribute
        del el.attrib[rng.choice(list(el.attrib))]


def mutate_domain(rng: random.Random, data: bytes) -> bytes:
    """Damage a domain document: tree edits (mostly), or raw byte damage."""
    if rng.random() < 0.8:
        root = etree.fromstring(data)
        for _ in range(rng.randint(1, 4)):
            _tree_mutation(rng, root)
        return etree.tostring(root)
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(4)
        at = rng.randrange(len(buf) + 1)
        if kind == 0:
            buf[at:at] = rng.choice(
                [b"<", b">", b"&", b"'", b'"', b"]]>", b"\xff", b"\0", b"&amp;"]
            )
        elif kind == 1:
            del buf[at : at + rng.randint(1, 40)]
        elif kind == 2 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        else:
            del buf[at:]
    return bytes(buf)


def check_domain(document: bytes, systems: dict[Arch, SystemConfig]) -> str:
    """Translate a generated document; return what happened.

    Raises:
        AssertionError: Anything but a documented outcome.
    """
    system = systems[Arch.ARM64 if b"aarch64" in document else Arch.X86]
    try:
        result = domain_to_cell(document, system)
    except TranslationError as exc:
        check_message(exc)
        return "refused"
    config = result.config
    assert config.arch == system.arch
    packed = config.to_bytes()  # a translated cell always packs
    assert load_config(packed) == config
    check_configs(system, config)
    again = domain_to_cell(cell_to_domain(config, boot=result.boot), system)
    assert again.config.to_bytes() == packed, "the cell written as XML reads back differently"
    return "translated"


def run_domain_fuzz(count: int, seed: int) -> dict[str, int]:
    """Translate ``count`` generated domain documents; return how many ended each way."""
    documents = domain_corpus()
    systems = _systems_by_arch()
    outcomes: dict[str, int] = {}
    failures = Failures("domain", seed)
    index = 0
    with memory_guard(), watchdog(lambda: f"domain #{index} of seed {seed}"):
        for index in range(count):
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
            rng = _item_rng(seed, index)
            document = mutate_domain(rng, rng.choice(documents))
            try:
                outcome = check_domain(document, systems)
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                failures.add(index, exc)
                outcome = "failed"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    failures.check()
    return outcomes


@pytest.mark.slow
def test_generated_domains() -> None:
    """3,000 generated domains (long: 100,000): TranslationError, or a sound cell."""
    outcomes = run_domain_fuzz(100_000 if LONG else 3_000, SEED + 4)
    assert outcomes.get("refused", 0) > 100
    assert outcomes.get("translated", 0) > 100


def test_metadata_cpu_set_too_small_is_refused() -> None:
    """A metadata CPU set size that cannot hold the cell's CPUs is a TranslationError."""
    document = (FIXTURES / "xml" / "x86-demo.xml").read_text(encoding="utf-8")
    document = document.replace('cpu-set-size="8"', 'cpu-set-size="0"')
    try:
        result = domain_to_cell(document, example_system("x86"))
    except TranslationError:
        return
    result.config.to_bytes()


# -- hostile XML -------------------------------------------------------------------------------

_BODY: Final = (
    "<memory unit='KiB'>1024</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
)


def _domain(name: str = "h", body: str = _BODY, head: str = "", attrs: str = "") -> str:
    return f"{head}<domain type='kvm'{attrs}><name>{name}</name>{body}</domain>"


class Watchers:
    """What a hostile document might reach for: a secret file, a FIFO and a TCP port.

    Attributes:
        secret: A file whose text must never show up anywhere.
        fifo: A named pipe; opening it for reading blocks, so a parser that opens it is
            seen (and released) by a thread that keeps trying to open the write end.
        url: An ``http://`` URL of a listening socket nobody may connect to.
    """

    TOKEN: Final = "TOP-SECRET-d41d8cd9"  # noqa: S105 - a marker to look for, not a secret

    def __init__(self, root: Path) -> None:
        """Create the file, the FIFO and the listening socket under ``root``."""
        self.secret = root / "secret.txt"
        self.secret.write_text(self.TOKEN, encoding="ascii")
        self.fifo = root / "pipe"
        os.mkfifo(self.fifo)
        self.server = socket.create_server(("127.0.0.1", 0), backlog=8)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/domain.dtd"
        self.fifo_opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._release_fifo, daemon=True)
        self._thread.start()

    def _release_fifo(self) -> None:
        while not self._stop.wait(0.02):
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody has it open for reading
                if exc.errno != errno.ENXIO:
                    raise
                continue
            self.fifo_opened = True
            with contextlib.suppress(OSError):
                os.write(fd, self.TOKEN.encode())
            os.close(fd)

    def connections(self) -> int:
        """Count the connections made to the socket so far."""
        self.server.setblocking(False)  # noqa: FBT003 - socket API
        count = 0
        while True:
            try:
                conn, _ = self.server.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        self._thread.join()
        self.server.close()

    def fill(self, template: str) -> str:
        """Put the paths and URL into a document template."""
        return template.format(secret=self.secret, fifo=self.fifo, url=self.url)


@pytest.fixture
def watchers(tmp_path: Path) -> Iterator[Watchers]:
    """Yield a secret file, a FIFO and a listening socket, watched."""
    value = Watchers(tmp_path)
    yield value
    value.close()


_HOSTILE: Final = {
    "xxe-file": _domain("&x;", head='<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>'),
    "xxe-fifo": _domain("&x;", head='<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{fifo}">]>'),
    "parameter-entity-fifo": _domain(head='<!DOCTYPE domain [<!ENTITY % p SYSTEM "{fifo}"> %p;]>'),
    "external-dtd-network": _domain(head='<!DOCTYPE domain SYSTEM "{url}">'),
    "external-dtd-fifo": _domain(head='<!DOCTYPE domain SYSTEM "{fifo}">'),
    "doctype-after-declaration": _domain(
        "&x;",
        head='<?xml version="1.0" encoding="UTF-8"?>\n<!-- c -->\n'
        '<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>',
    ),
    "billion-laughs": _domain(
        "&l9;",
        head="<!DOCTYPE domain ["
        '<!ENTITY l0 "lol">'
        + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
        + "]>",
    ),
    "quadratic-blowup": _domain(
        "&a;" * 20_000, head=f'<!DOCTYPE domain [<!ENTITY a "{"x" * 40_000}">]>'
    ),
    "undeclared-entity": _domain("&x;"),
    "xinclude-file": _domain(
        "<xi:include href='{secret}' parse='text'/>",
        attrs=" xmlns:xi='http://www.w3.org/2001/XInclude'",
    ),
    "xinclude-fifo": _domain(
        "h",
        body=_BODY + "<metadata><xi:include href='{fifo}' parse='text'/></metadata>",
        attrs=" xmlns:xi='http://www.w3.org/2001/XInclude'",
    ),
    "stylesheet-pi": _domain(head='<?xml-stylesheet type="text/xsl" href="{url}"?>'),
    "schema-location": _domain(
        attrs=" xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'"
        " xsi:noNamespaceSchemaLocation='{url}'"
    ),
    "deep-nesting": _domain(
        body=_BODY + "<metadata>" + "<a>" * 100_000 + "</a>" * 100_000 + "</metadata>"
    ),
    "deep-nesting-under-limit": _domain(
        body=_BODY + "<devices>" + "<a>" * 250 + "</a>" * 250 + "</devices>"
    ),
    "huge-attribute-over-cap": _domain(attrs=f" id='{'A' * (MAX_DOCUMENT_BYTES + 1)}'"),
    "huge-attribute-ignored": _domain(attrs=f" id='{'A' * 900_000}'"),
    "huge-name": _domain("n" * 900_000),
    "many-attributes": _domain(attrs="".join(f" a{i}='{i}'" for i in range(40_000))),
    "many-elements": _domain(
        body=_BODY + "<cputune>" + "<vcpupin vcpu='0' cpuset='1'/>" * 30_000 + "</cputune>"
    ),
    "cdata-doctype": _domain("<![CDATA[<!DOCTYPE domain>]]>"),
    "nul-byte": _domain("a\0b"),
    "big-cpuset": _domain(body=_BODY.replace("<vcpu>", "<vcpu cpuset='0-1048575'>")),
}


def _assert_outcome(result: object, watchers: Watchers) -> None:
    """Check a hostile document's outcome: documented, bounded, nothing leaked or touched."""
    assert not watchers.fifo_opened, "the parser opened the FIFO"
    assert watchers.connections() == 0, "the parser connected to the network"
    if isinstance(result, TranslationError):
        check_message(result)
        assert Watchers.TOKEN not in str(result)
        return
    assert not isinstance(result, BaseException), f"undocumented {type(result).__name__}: {result}"
    config = result.config  # type: ignore[attr-defined]
    config.to_bytes()
    assert Watchers.TOKEN not in repr(result)
    assert Watchers.TOKEN not in cell_to_domain(config)


def _translate(document: str | bytes) -> object:
    """Translate for the x86 example system; return the result or the exception."""
    try:
        return domain_to_cell(document, example_system("x86"))
    except Exception as exc:  # noqa: BLE001 - the caller checks which exception it is
        return exc


@pytest.mark.parametrize("name", sorted(_HOSTILE))
def test_hostile_domain(name: str, watchers: Watchers) -> None:
    """A hostile document is refused or translated harmlessly: no read, no network, no hang."""
    document = watchers.fill(_HOSTILE[name]) if "{" in _HOSTILE[name][:4000] else _HOSTILE[name]
    with memory_guard(128 << 20), watchdog(lambda: name, seconds=10):
        result = _translate(document)
    _assert_outcome(result, watchers)
    if "doctype" in name or "entity" in name or "xxe" in name or "laughs" in name:
        assert isinstance(result, TranslationError)


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig", "utf-7", "latin-1"]
)
def test_hostile_domain_in_other_encodings(encoding: str, watchers: Watchers) -> None:
    """An entity declaration is refused in every encoding the document may declare."""
    text = watchers.fill(
        f'<?xml version="1.0" encoding="{encoding.removesuffix("-sig")}"?>'
        + _domain("&x;", head='<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>')
    )
    with watchdog(lambda: encoding, seconds=10):
        result = _translate(text.encode(encoding))
    _assert_outcome(result, watchers)
    assert isinstance(result, TranslationError)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param(b"\xff\xfe\xff", id="bad-utf16"),
        pytest.param(b"", id="empty"),
        pytest.param(" \n", id="blank"),
        pytest.param(b"<?xml version='1.0' encoding='no-such-codec'?><domain/>", id="codec"),
        pytest.param('<?xml version="1.0" encoding="UTF-8"?>' + _domain(), id="str-declared"),
    ],
)
def test_odd_inputs(document: str | bytes, watchers: Watchers) -> None:
    """Odd inputs end in TranslationError or a translation, never another exception."""
    with watchdog(repr, seconds=10):
        result = _translate(document)
    _assert_outcome(result, watchers)


def test_hostile_long_number(watchers: Watchers) -> None:
    """A 5,000-digit number is refused with TranslationError."""
    result = _translate(_domain(body=_BODY.replace(">1024<", f">{'9' * 5000}<")))
    _assert_outcome(result, watchers)


def test_hostile_value_in_a_note_is_shortened() -> None:
    """A huge ignored value does not come back whole in a translation note."""
    body = _BODY + f"<devices><serial type='{'A' * 900_000}'/></devices>"
    result = domain_to_cell(_domain(body=body), example_system("x86"))
    assert result.notes
    for note in result.notes:
        assert len(str(note)) <= MESSAGE_LIMIT


def test_hostile_repeated_cpuset(watchers: Watchers) -> None:
    """A cpuset of many huge ranges is refused or translated within the hang guard."""
    cpuset = ",".join(["0-1048575"] * 80_000)
    document = _domain(body=_BODY.replace("<vcpu>", f"<vcpu cpuset='{cpuset}'>"))
    with watchdog(lambda: "repeated cpuset", seconds=5):
        result = _translate(document)
    _assert_outcome(result, watchers)


@pytest.mark.parametrize(
    ("element", "parent"),
    [
        ("<vcpupin vcpu='{i}' cpuset='2'/>", "cputune"),
        ("<console type='pty'/>", "devices"),
        ("<disk type='file' device='disk'><target dev='vd{i}'/></disk>", "devices"),
    ],
)
def test_a_document_of_repeated_elements_is_read_in_one_pass(element: str, parent: str) -> None:
    """Up to 1 MiB of one repeated element gets a numbered note each, within the hang guard."""
    # Counting the siblings of every element that gets a note was quadratic: 31,000 vCPU
    # pins took 111 s.
    budget = MAX_DOCUMENT_BYTES - len(_domain(body=_BODY + f"<{parent}></{parent}>")) - 64
    items: list[str] = []
    size = 0
    while size + len(element) + 8 < budget:
        items.append(element.format(i=len(items) + 1))
        size += len(items[-1])
    body = _BODY + f"<{parent}>{''.join(items)}</{parent}>"
    with watchdog(lambda: f"{len(items)} x {element}", seconds=30):
        result = domain_to_cell(_domain(body=body), example_system("x86"))
    last = f"/domain/{parent}/{etree.QName(etree.fromstring(element.format(i=0))).localname}"
    assert len(items) > 10_000
    assert result.notes[-1].element == f"{last}[{len(items)}]"


def test_translation_errors_are_one_line() -> None:
    """A document with a NUL character is refused with a one-line message."""
    with pytest.raises(TranslationError) as info:
        domain_to_cell(_domain("a\0b"), example_system("x86"))
    assert "\n" not in str(info.value)


def test_translation_errors_shorten_values() -> None:
    """A 900,000-character name is refused with a message of bounded length."""
    with pytest.raises(TranslationError) as info:
        domain_to_cell(_domain("n" * 900_000), example_system("x86"))
    assert len(str(info.value)) <= MESSAGE_LIMIT


def test_hostile_domain_through_the_cli(tmp_path: Path, watchers: Watchers) -> None:
    """The CLI (config from-xml) refuses an XXE document with one line and exit code 2."""
    document = tmp_path / "evil.xml"
    document.write_text(watchers.fill(_HOSTILE["xxe-file"]), encoding="utf-8")
    system = tmp_path / "sys.cell"
    system.write_bytes(example_system("x86").to_bytes())
    run = subprocess.run(
        [sys.executable, "-m", "jailhouse", "config", "from-xml", "--system", str(system),
         "-o", str(tmp_path / "out.cell"), str(document)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    _one_error_line(run.stderr)
    assert Watchers.TOKEN not in run.stdout + run.stderr
    assert not (tmp_path / "out.cell").exists()


# -- device errors -----------------------------------------------------------------------------


def _kernel_uri(device: Path, sysfs: Path) -> str:
    return f"jailhouse:///system?device={device}&sysfs={sysfs}&arch=x86"


def _cli(argv: list[str]) -> tuple[int, str, str]:
    """Run jhctl's main() in this process; return the exit code, stdout and stderr."""
    from jailhouse.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _one_error_line(stderr: str) -> None:
    assert stderr.endswith("\n"), repr(stderr)
    assert stderr.count("\n") == 1, repr(stderr)
    assert stderr.startswith("jhctl: error: "), repr(stderr)
    assert "Traceback" not in stderr


def test_missing_device(tmp_path: Path) -> None:
    """No /dev/jailhouse: DeviceNotFoundError (ENOENT) in one line, from the API and jhctl."""
    import jailhouse

    (tmp_path / "sys").mkdir()
    uri = _kernel_uri(tmp_path / "absent", tmp_path / "sys")
    with pytest.raises(DeviceNotFoundError) as info:
        jailhouse.open(uri)
    assert info.value.errno == errno.ENOENT
    check_message(info.value)
    cell = tmp_path / "demo.cell"
    cell.write_bytes((FIXTURES / "x86" / "x86-demo.cell").read_bytes())
    for argv in (["cell", "list"], ["status"], ["cell", "create", str(cell)], ["disable"]):
        code, out, err = _cli(["-c", uri, *argv])
        assert code == 2, (argv, err)
        assert out == ""
        _one_error_line(err)
        assert "driver is not loaded" in err


def _run_as_nobody(work: Callable[[], dict[str, object]]) -> dict[str, object]:
    """Run ``work`` in a forked child that dropped root for uid/gid 65534; return its dict."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, report, exit without cleanup
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = work()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"child_error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, repr(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    import ast

    return dict(ast.literal_eval(data.decode()))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges in a child")
def test_device_not_accessible_when_not_root() -> None:
    """A node only root may open: PermissionDeniedError (EACCES) in one line, API and jhctl."""
    import tempfile

    import jailhouse

    base = Path(tempfile.mkdtemp(prefix="jh-eacces-"))  # under /tmp: others may enter it
    try:
        base.chmod(0o755)
        node = base / "jailhouse"
        node.touch(mode=0o600)  # root's, like the driver's node (crw-------)
        (base / "sys").mkdir(mode=0o755)
        cell = base / "demo.cell"
        cell.write_bytes((FIXTURES / "x86" / "x86-demo.cell").read_bytes())
        cell.chmod(0o644)
        uri = _kernel_uri(node, base / "sys")

        def work() -> dict[str, object]:
            try:
                jailhouse.open(uri)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                api = (type(exc).__name__, getattr(exc, "errno", None), str(exc))
            else:
                api = ("opened", None, "")
            code, out, err = _cli(["-c", uri, "cell", "create", str(cell)])
            return {"api": api, "cli": (code, out, err), "uid": os.getuid()}

        result = _run_as_nobody(work)
    finally:
        for path in sorted(base.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        base.rmdir()
    assert "child_error" not in result, result
    assert result["uid"] == 65534
    name, err, text = result["api"]  # type: ignore[misc]
    assert (name, err) == (PermissionDeniedError.__name__, errno.EACCES), result
    assert text
    assert "\n" not in text
    assert len(text) <= MESSAGE_LIMIT
    code, out, stderr = result["cli"]  # type: ignore[misc]
    assert code != 0
    assert out == ""
    _one_error_line(stderr)
    assert "EACCES" in stderr or "Permission denied" in stderr


def test_driver_present_but_disabled(backend: Backend) -> None:
    """A disabled hypervisor: NotEnabledError in one line for every cell operation."""
    hv = backend.hv
    config = backend.cell()
    for action in (
        lambda: hv.create_cell(config),
        hv.disable,
    ):
        with pytest.raises(NotEnabledError) as info:
            action()
        check_message(info.value)
        assert info.value.errno == errno.EINVAL
    snap = backend.snapshot()
    assert not snap.enabled
    assert snap.cells == ()


def test_driver_present_but_disabled_through_the_cli(tmp_path: Path) -> None:
    """The CLI on a disabled host: exit 1 and one line naming what to do, for each verb."""
    uri = f"sim://{tmp_path / 'host'}?arch=x86&cpus=4"
    cell = tmp_path / "demo.cell"
    cell.write_bytes((FIXTURES / "x86" / "x86-demo.cell").read_bytes())
    for argv in (["cell", "create", str(cell)], ["disable"], ["cell", "start", "x86-demo"]):
        code, out, err = _cli(["-c", uri, *argv])
        assert code == 1, (argv, err)
        assert out == ""
        _one_error_line(err)
        if argv[0] != "cell" or argv[1] == "create":
            assert "enable the hypervisor first" in err
    assert stat.S_ISDIR((tmp_path / "host").stat().st_mode)
