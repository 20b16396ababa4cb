#!/usr/bin/env python3
"""Measure python-jailhouse against what a user would use instead.

Usage::

    python benchmarks/run.py [--quick] [--upstream PATH] [--only NAME ...] [--json FILE]

The package is measured as users get it: the script first builds a virtual environment
with ``pip install .`` (no editable install: an editable install's import hook slows the
bare interpreter and hides most of our own start-up), cached per state of the sources in
the temporary directory, and runs itself again in it.  ``--no-venv`` measures the
interpreter that runs the script instead; start-up figures (``check`` and ``cli``) are
then refused unless that interpreter has the package installed non-editable.

Every figure is a ratio between two things measured in the same run, on the same files,
with the same interpreter (``sys.executable``): these machines are noisy, so absolute
times mean little.  Whole-process measures start a fresh process for every sample
("cold" means a new interpreter, not an empty page cache: two warm-up runs come first);
samples of the two sides alternate, and the table shows their medians.  Both sides use a
bytecode cache (written to the scratch directory, as ``pip install`` compiles an installed
package), also where ``PYTHONDONTWRITEBYTECODE`` is set; ``--no-bytecode-cache`` measures
processes that compile every module from source instead.

Measures (``--only`` takes these names):

``check``
    ``jhctl config check`` on a system and 4 cells against upstream's
    ``tools/jailhouse-config-check`` on the same files, as whole processes.  Upstream's
    tool is GPLv2 and never part of this repository: point ``--upstream`` or
    ``JAILHOUSE_SRC`` at a Jailhouse checkout (config revision 14, i.e. master or next),
    or the measure is skipped.  Both tools must give the same verdict (exit 0 or 1) on
    a clean set and on two sets with an error that both tools look for.
``translate``
    Domain XML to a packed cell config in one process (read the XML, translate, pack,
    write the ``.cell``) against the upstream route of one ``gcc`` and one ``objcopy``
    per C config (``benchmarks/c/x86-demo.c``, the same cell; both give the same bytes).
``codec``
    Parse and pack 10,000 configs (the fixture files in turn) against the floor: a bare
    ``struct.unpack_from`` loop over the same bytes that unpacks the same fields (the
    header and every element of every array) into tuples and builds no objects.
``lifecycle``
    Create, load, start and destroy a cell through :class:`jailhouse.Hypervisor` on the
    FUSE-mocked device against a minimal script of raw ``fcntl.ioctl`` calls with
    prebuilt argument bytes on the same mount (needs root, ``/dev/fuse``, ``fusermount3``
    and the ``fuse`` extra; skipped otherwise).
``cli``
    ``jhctl --version`` and ``jhctl cell list --json`` on a simulated host against
    ``python -c pass``.
``memory``
    Peak memory of translating 200 domains for one system and checking the whole set,
    in a child process: peak RSS, what the interpreter and imports alone take, and the
    Python heap's peak (``tracemalloc``).  There is no reference and no goal.

The table has one row per figure: the measure, ours, the reference, the ratio in the
goal's terms (``ours/ref`` for times, ``ref/ours`` or rate ratios for speed-ups), the
goal and whether it is met.  A goal that is not met is printed as not met.  The exit code
is 0, or 1 when a check of correctness failed (verdicts or bytes that differ), or with
``--strict`` when a goal is not met.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import gc
import hashlib
import itertools
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
C_CONFIG = Path(__file__).resolve().parent / "c" / "x86-demo.c"

try:
    import jailhouse  # noqa: F401 - only to learn whether it is importable
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(REPO))

from jailhouse.config.model import (  # noqa: E402 - after the path fix above
    Arch,
    CellConfig,
    MemFlag,
    MemoryRegion,
    SystemConfig,
    load_config,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

MEASURES = ("check", "translate", "codec", "lifecycle", "cli", "memory")


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A goal on a ratio: ``at most`` or ``at least`` a bound."""

    bound: float
    at_most: bool
    terms: str

    def met(self, ratio: float) -> bool:
        """Tell whether ``ratio`` meets the goal."""
        return ratio <= self.bound if self.at_most else ratio >= self.bound

    def __str__(self) -> str:
        """Render as ``<= 2x (ours/floor)``."""
        return f"{'<=' if self.at_most else '>='} {self.bound:g}x ({self.terms})"


@dataclass
class Row:
    """One line of the table."""

    measure: str
    ours: str = "-"
    reference: str = "-"
    ratio: float | None = None
    goal: Goal | None = None
    skipped: str | None = None
    failed: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; ``None`` without a goal or a figure."""
        if self.failed is not None:
            return False
        if self.goal is None or self.ratio is None:
            return None
        return self.goal.met(self.ratio)

    def cells(self) -> list[str]:
        """Return the table cells of the row."""
        if self.skipped is not None:
            return [self.measure, "-", "-", "-", str(self.goal or "-"), "skipped"]
        met = {True: "yes", False: "NO", None: "-"}[self.met]
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        return [self.measure, self.ours, self.reference, ratio, str(self.goal or "-"), met]

    def to_json(self) -> dict[str, object]:
        """Return the row as a JSON object."""
        return {
            "measure": self.measure,
            "ours": self.ours,
            "reference": self.reference,
            "ratio": self.ratio,
            "goal": str(self.goal) if self.goal else None,
            "met": self.met,
            "skipped": self.skipped,
            "failed": self.failed,
            "notes": self.notes,
        }


def print_table(rows: Sequence[Row]) -> None:
    """Print the rows as an aligned table, then their notes."""
    head = ["measure", "ours", "reference", "ratio", "goal", "met?"]
    body = [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    extra = [
        (row.measure, text)
        for row in rows
        for text in (
            ([f"skipped: {row.skipped}"] if row.skipped else [])
            + ([f"FAILED: {row.failed}"] if row.failed else [])
            + row.notes
        )
    ]
    if extra:
        print()
        for measure, text in extra:
            print(f"- {measure}: {text}")


def fmt_time(seconds: float) -> str:
    """Render a duration with a unit that keeps 3 significant digits."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def fmt_bytes(size: float) -> str:
    """Render a byte count in MiB."""
    return f"{size / (1 << 20):.1f} MiB"


# -- helpers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    quick: bool
    upstream: Path | None
    workdir: Path
    bytecode_cache: bool = True
    startup_refused: str | None = None
    """Why start-up figures are not taken in this interpreter (``None``: they are)."""

    def pick(self, quick: int, full: int) -> int:
        """Choose a repetition count by profile."""
        return quick if self.quick else full

    def env(self) -> dict[str, str]:
        """Return the environment of every measured process, the same for both sides.

        With the bytecode cache (the default) each side's modules are compiled once, into
        a cache in the scratch directory, as ``pip install`` does at install time, even
        where ``PYTHONDONTWRITEBYTECODE`` is set.  Without it every start compiles every
        module from source.
        """
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPYCACHEPREFIX", None)
        if self.bytecode_cache:
            env["PYTHONPYCACHEPREFIX"] = str(self.workdir / "pycache")
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env


def time_processes(
    commands: dict[str, list[str]],
    runs: int,
    *,
    env: dict[str, str],
    warmup: int = 2,
) -> dict[str, float]:
    """Run each command ``warmup + runs`` times, alternating them; return the median times.

    The order of the commands is reversed every other round, so neither side always
    runs right after the other.
    """
    samples: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for index in range(warmup + runs):
        for name in names if index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            subprocess.run(
                commands[name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                check=False,
            )
            elapsed = time.perf_counter() - start
            if index >= warmup:
                samples[name].append(elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def time_rounds(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Time each in-process callable ``rounds`` times, alternating; return the medians."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            gc.collect()
            start = time.perf_counter()
            sides[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def jhctl_command() -> list[str]:
    """Return how to run ``jhctl`` with this interpreter: the installed script, else ``-m``."""
    script = Path(sysconfig.get_path("scripts")) / "jhctl"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "jailhouse"]


def upstream_tool(opts: Options) -> Path | None:
    """Return upstream's ``jailhouse-config-check`` from the given checkout, if present."""
    if opts.upstream is None:
        return None
    tool = opts.upstream / "tools" / "jailhouse-config-check"
    return tool if tool.is_file() else None


# -- the measured installation ---------------------------------------------------------------

_VENV_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "jailhouse", "cffi_build")


def source_digest() -> str:
    """Hash what ``pip install .`` builds from, so a venv is reused only for the same sources."""
    digest = hashlib.sha256()
    for name in _VENV_INPUTS:
        top = REPO / name
        paths = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".so":
                digest.update(str(path.relative_to(REPO)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_venv() -> Path:
    """Return the interpreter of a venv with this checkout installed by ``pip install .``.

    The venv is kept in the temporary directory under the hash of the sources, so runs on
    the same sources (CI's, a developer's repeated ones) build it once.

    Raises:
        RuntimeError: The venv or the install failed (pip's last lines say why).
    """
    venv = Path(tempfile.gettempdir()) / f"jh-bench-venv-{source_digest()}"
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file() and python.is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    print(f"building {venv} (pip install .[fuse]) ...", file=sys.stderr, flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{REPO}[fuse]"],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"{' '.join(step[:4])} failed: {' / '.join(tail)}")
    (venv / ".complete").write_text("ok\n")
    return python


def machine_summary() -> str:
    """Describe the machine: CPU model, CPU count, memory and kernel."""
    import platform  # noqa: PLC0415

    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / (1 << 20):.0f} GiB"
    return f"{model}, {os.cpu_count()} CPUs{memory}, {platform.system()} {platform.release()}"


def install_kind() -> str | None:
    """Tell how this interpreter has the package: ``None`` for a regular install, else why not.

    Start-up is only measured on a regular (non-editable) install: an editable install
    adds an import hook to every start, and a source tree on ``sys.path`` is not what
    users run.
    """
    from importlib import metadata  # noqa: PLC0415

    try:
        dist = metadata.distribution("python-jailhouse")
    except metadata.PackageNotFoundError:
        return "python-jailhouse is not installed in this interpreter (run from the source tree)"
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        return "python-jailhouse is an editable install here"
    import jailhouse as jh  # noqa: PLC0415

    located = Path(jh.__file__).resolve()
    if located.is_relative_to(REPO):
        return f"jailhouse is imported from the source tree ({located.parent})"
    return None


# -- the configs --------------------------------------------------------------------------


def bench_system(cpus: int) -> SystemConfig:
    """Return the example x86 system, its root cell widened to ``cpus`` CPUs."""
    from jailhouse.examples import example_system  # noqa: PLC0415

    system = example_system("x86")
    size = max(8, -(-cpus // 64) * 8)
    root = system.root_cell.replace(cpus=frozenset(range(cpus)), cpu_set_size=size)
    return system.replace(root_cell=root)


def minimal_domain(name: str, memory_kib: int) -> str:
    """Return a small libvirt domain: one vCPU, some RAM, nothing else."""
    return (
        f"<domain type='kvm'><name>{name}</name>"
        f"<memory unit='KiB'>{memory_kib}</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )


def check_set(system: SystemConfig) -> list[CellConfig]:
    """Return 4 cells that fit ``system`` together: the x86 demo cell and 3 translated ones."""
    from jailhouse.domxml import domain_to_cell  # noqa: PLC0415

    demo = load_config(FIXTURES / "x86" / "x86-demo.cell")
    if not isinstance(demo, CellConfig):
        raise TypeError("fixtures/x86/x86-demo.cell is not a cell config")
    cells = [demo]
    for index in range(3):
        xml = minimal_domain(f"bench{index}", 4096)
        cells.append(domain_to_cell(xml, system, defined=cells).config)
    return cells


def write_set(directory: Path, system: SystemConfig, cells: Sequence[CellConfig]) -> list[str]:
    """Write a system and its cells as ``.cell`` files; return the paths, system first."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{system.root_cell.name}.cell"]
    paths[0].write_bytes(system.to_bytes())
    for cell in cells:
        path = directory / f"{cell.name}.cell"
        path.write_bytes(cell.to_bytes())
        paths.append(path)
    return [str(p) for p in paths]


# -- check: jhctl config check against jailhouse-config-check ------------------------------


def measure_check(opts: Options) -> list[Row]:
    """Time ``jhctl config check`` against upstream's checker on a root + 4 cells."""
    row = Row(
        "config check, root + 4 cells (process)",
        goal=Goal(1.5, at_most=False, terms="upstream/ours"),
    )
    tool = upstream_tool(opts)
    if opts.startup_refused is not None:
        row.skipped = f"start-up not measured: {opts.startup_refused}"
        return [row]
    if tool is None:
        row.skipped = (
            "upstream's tools/jailhouse-config-check not found; set JAILHOUSE_SRC or "
            "--upstream to a Jailhouse checkout (config revision 14)"
        )
        return [row]
    system = bench_system(8)
    cells = check_set(system)
    ram = cells[1].mem_regions[0]
    hv = system.hypervisor_memory
    sets = {
        "clean": cells,
        # a region that overlaps another of the same cell physically (both tools look)
        "overlap in a cell": [
            cells[0],
            cells[1].replace(
                mem_regions=(
                    *cells[1].mem_regions,
                    MemoryRegion(ram.phys_start, 0x40000000, ram.size, ram.flags),
                )
            ),
            *cells[2:],
        ],
        # a region in the hypervisor's memory (both tools look)
        "overlap with hypervisor": [
            *cells[:2],
            cells[2].replace(
                mem_regions=(
                    *cells[2].mem_regions,
                    MemoryRegion(hv.phys_start, 0x50000000, 0x1000, MemFlag.READ | MemFlag.WRITE),
                )
            ),
            cells[3],
        ],
    }
    ours_cmd = [*jhctl_command(), "config", "check"]
    ref_cmd = [sys.executable, str(tool)]
    verdicts: list[str] = []
    timed: dict[str, float] = {}
    for label, cell_set in sets.items():
        files = write_set(opts.workdir / "check" / label.replace(" ", "-"), system, cell_set)
        ours = subprocess.run(
            [*ours_cmd, *files], capture_output=True, env=opts.env(), check=False
        ).returncode
        ref = subprocess.run(
            [*ref_cmd, *files], capture_output=True, env=opts.env(), check=False
        ).returncode
        verdicts.append(f"{label}: jhctl exit {ours}, upstream exit {ref}")
        if ours != ref:
            row.failed = f"different verdicts on the {label!r} set (jhctl {ours}, upstream {ref})"
        if label == "clean":
            timed = time_processes(
                {"ours": [*ours_cmd, *files], "ref": [*ref_cmd, *files]},
                opts.pick(5, 21),
                env=opts.env(),
            )
    row.ours, row.reference = fmt_time(timed["ours"]), fmt_time(timed["ref"])
    row.ratio = timed["ref"] / timed["ours"]
    row.notes.append("verdicts: " + "; ".join(verdicts))
    return [row]


# -- translate: domain XML -> .cell against gcc + objcopy -----------------------------------


def measure_translate(opts: Options) -> list[Row]:
    """Time the translator against one gcc + objcopy run per C config."""
    row = Row(
        "translate XML -> .cell (configs/s)", goal=Goal(40, at_most=False, terms="ours/gcc rate")
    )
    gcc, objcopy = shutil.which("gcc"), shutil.which("objcopy")
    if gcc is None or objcopy is None:
        row.skipped = "gcc and objcopy are needed for the upstream route"
        return [row]
    with memory_directory(opts.workdir, "translate") as (work, where):
        rows = _measure_translate(opts, row, work, (gcc, objcopy))
        row.notes.append(f"outputs of both routes written to {where}")
        return rows


@contextlib.contextmanager
def memory_directory(fallback: Path, name: str) -> Iterator[tuple[Path, str]]:
    """Yield a scratch directory on tmpfs (``/dev/shm``) if there is one, else in ``fallback``.

    Creating a file on this machine's ext4 costs 0.2-0.5 ms, varying two-fold from one run
    to the next with the journal; on tmpfs it costs microseconds.  The translation measure
    is about translating, so both routes write their outputs there.
    """
    shm = Path("/dev/shm")  # noqa: S108 - a private directory below it, removed afterwards
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix=f"jh-bench-{name}-", dir=shm) as tmp:
            yield Path(tmp), "tmpfs (/dev/shm)"
        return
    directory = fallback / name
    directory.mkdir(parents=True, exist_ok=True)
    yield directory, f"{directory} (no writable /dev/shm)"


def _measure_translate(opts: Options, row: Row, work: Path, tools: tuple[str, str]) -> list[Row]:
    """Check that both routes give the fixture's bytes, then time batches of each."""
    gcc, objcopy = tools
    from jailhouse.domxml import domain_to_cell  # noqa: PLC0415
    from jailhouse.examples import example_system  # noqa: PLC0415

    system = example_system("x86")
    xml_path = FIXTURES / "xml" / "x86-demo.xml"
    include = str(REPO / "cffi_build")

    def ours_one(out: Path) -> None:
        xml = xml_path.read_bytes()
        out.write_bytes(domain_to_cell(xml, system).config.to_bytes())

    def gcc_one(obj: Path, out: Path) -> None:
        subprocess.run([gcc, "-O2", "-I", include, "-c", str(C_CONFIG), "-o", str(obj)], check=True)
        subprocess.run(
            [objcopy, "-O", "binary", "--remove-section=.note.gnu.property", str(obj), str(out)],
            check=True,
        )

    ours_one(work / "ours.cell")
    gcc_one(work / "x86-demo.o", work / "gcc.cell")
    expected = (FIXTURES / "x86" / "x86-demo.cell").read_bytes()
    if {(work / "ours.cell").read_bytes(), (work / "gcc.cell").read_bytes()} != {expected}:
        row.failed = "the two routes do not give fixtures/x86/x86-demo.cell byte for byte"
        return [row]
    row.notes.append(
        "both routes give fixtures/x86/x86-demo.cell byte for byte; each config of a batch is "
        "written to a new file, as translating a batch of domains would (overwriting one file "
        "again and again makes ext4 flush it at every close)"
    )
    ours_n, gcc_n = opts.pick(100, 1000), opts.pick(5, 40)
    batches = itertools.count()

    def fresh_directory(side: str) -> Path:
        directory = work / f"{side}-{next(batches)}"
        directory.mkdir()
        return directory

    def ours_batch() -> None:
        out = fresh_directory("ours")
        for i in range(ours_n):
            ours_one(out / f"{i}.cell")

    def gcc_batch() -> None:
        out = fresh_directory("gcc")
        for i in range(gcc_n):
            gcc_one(out / f"{i}.o", out / f"{i}.cell")

    times = time_rounds({"ours": ours_batch, "gcc": gcc_batch}, opts.pick(3, 5))
    ours_rate, gcc_rate = ours_n / times["ours"], gcc_n / times["gcc"]
    row.ours = f"{ours_rate:,.0f}/s ({fmt_time(1 / ours_rate)})"
    row.reference = f"{gcc_rate:,.1f}/s ({fmt_time(1 / gcc_rate)})"
    row.ratio = ours_rate / gcc_rate
    return [row]


# -- codec: parse + pack against a bare struct.unpack_from loop ----------------------------

# The packed layouts of config revision 14 (ABI fact sheet section 3), for the floor.
_DESC = struct.Struct("<5sBH32s11IQQ QIHHIIQ")  # jailhouse_cell_desc, 132 bytes
_ARRAYS = (  # after the CPU set, in file order
    struct.Struct("<QQQQ"),  # jailhouse_memory
    struct.Struct("<IIBxH"),  # jailhouse_cache
    struct.Struct("<QII4I"),  # jailhouse_irqchip
    struct.Struct("<HH"),  # jailhouse_pio
    struct.Struct("<BBHH6IHHBBHHQIBBH"),  # jailhouse_pci_device
    struct.Struct("<HHHH"),  # jailhouse_pci_capability
    struct.Struct("<I"),  # stream id
)
_SYS_HEAD = struct.Struct("<5sBHI QQQQ QIHHIIQ")  # up to platform_info, 76 bytes
_PLATFORM_PCI = struct.Struct("<QBBH")
_IOMMU_AMD = struct.Struct("<IQIHBBI4x")  # jailhouse_iommu, AMD member of the union
_IOMMU_PVU = struct.Struct("<IQIQI")  # jailhouse_iommu, TI PVU member
_IOMMU_PVU_TYPE = 4
_X86_INFO = struct.Struct("<HBxIII28x")
_ARM_INFO = struct.Struct("<BB2xQQQQQ")
_ROOT_CELL = 356


def floor_cell(data: bytes, base: int) -> list[object]:
    """Unpack a cell descriptor and every element of its arrays into tuples."""
    head = _DESC.unpack_from(data, base)
    out: list[object] = [head]
    offset = base + _DESC.size
    cpu_set_size = head[6]
    out.append(data[offset : offset + cpu_set_size])
    offset += cpu_set_size
    for fmt, count in zip(_ARRAYS, head[7:14], strict=True):
        size = fmt.size
        for _ in range(count):
            out.append(fmt.unpack_from(data, offset))
            offset += size
    return out


def floor_system(data: bytes) -> list[object]:
    """Unpack a system config, its platform info and its root cell into tuples."""
    out: list[object] = [_SYS_HEAD.unpack_from(data, 0)]
    offset = _SYS_HEAD.size
    out.append(_PLATFORM_PCI.unpack_from(data, offset))
    offset += _PLATFORM_PCI.size
    for _ in range(8):
        kind = int.from_bytes(data[offset : offset + 4], "little")
        out.append(
            (_IOMMU_PVU if kind == _IOMMU_PVU_TYPE else _IOMMU_AMD).unpack_from(data, offset)
        )
        offset += 28
    out.append((_X86_INFO if data[5] == 0 else _ARM_INFO).unpack_from(data, offset))
    out.extend(floor_cell(data, _ROOT_CELL))
    return out


def floor(data: bytes) -> list[object]:
    """Unpack any config by its signature: the floor of parsing."""
    return floor_system(data) if data[:5] == b"JHSYS" else floor_cell(data, 0)


def floor_pack(fields: list[object]) -> bytes:
    """Pack what :func:`floor` unpacked back into bytes: the floor of packing."""
    head = fields[0]
    if not isinstance(head, tuple):
        raise TypeError("not what floor() returns")
    if head[0] != b"JHSYS":
        return b"".join(_floor_pack_cell(fields, 0))
    out = [_SYS_HEAD.pack(*head), _PLATFORM_PCI.pack(*fields[1])]  # type: ignore[misc]
    for unit in fields[2:10]:
        fmt = _IOMMU_PVU if unit[0] == _IOMMU_PVU_TYPE else _IOMMU_AMD  # type: ignore[index]
        out.append(fmt.pack(*unit))  # type: ignore[misc]
    out.append((_X86_INFO if head[1] == 0 else _ARM_INFO).pack(*fields[10]))  # type: ignore[misc]
    out.extend(_floor_pack_cell(fields, 11))
    return b"".join(out)


def _floor_pack_cell(fields: list[object], start: int) -> list[bytes]:
    head = fields[start]
    if not isinstance(head, tuple):
        raise TypeError("not what floor() returns")
    out = [_DESC.pack(*head), fields[start + 1]]
    index = start + 2
    for fmt, count in zip(_ARRAYS, head[7:14], strict=True):
        for _ in range(count):
            out.append(fmt.pack(*fields[index]))  # type: ignore[misc]
            index += 1
    return out  # type: ignore[return-value]


def codec_corpus(count: int) -> list[bytes]:
    """Return ``count`` config files: the fixtures in turn, each a distinct bytes object."""
    files = sorted(FIXTURES.glob("*/*.cell"))
    blobs = [p.read_bytes() for p in files]
    return [bytes(bytearray(blobs[i % len(blobs)])) for i in range(count)]


def measure_codec(opts: Options) -> list[Row]:
    """Time parse + pack of 10,000 configs against the struct.unpack_from floor."""
    count = 10_000
    corpus = codec_corpus(count)
    parsed = [load_config(b) for b in corpus]
    if any(c.to_bytes() != b for c, b in zip(parsed, corpus, strict=True)):
        return [Row("parse + pack", failed="a fixture does not pack back to its bytes")]
    # The floor must cover what the parser builds: one tuple per array element.
    items = sum(_model_items(c) for c in parsed[:6])
    floor_items = sum(len(floor(b)) for b in corpus[:6])
    unpacked = [floor(b) for b in corpus]
    if any(floor_pack(f) != b for f, b in zip(unpacked[:6], corpus, strict=False)):
        return [Row("parse + pack", failed="the floor does not pack the fixtures back")]

    def ours_both() -> None:
        for blob in corpus:
            load_config(blob).to_bytes()

    def ours_parse() -> None:
        for blob in corpus:
            load_config(blob)

    def ours_pack() -> None:
        for config in parsed:
            config.to_bytes()

    # Copies made through the constructor: no bytes kept from a parse, every value packed.
    rebuilt = [
        c.replace(root_cell=c.root_cell.replace()) if isinstance(c, SystemConfig) else c.replace()
        for c in parsed
    ]
    if any(c.to_bytes() != b for c, b in zip(rebuilt, corpus, strict=True)):
        return [Row("parse + pack", failed="a rebuilt config does not pack to the fixture")]

    def ours_pack_values() -> None:
        for config in rebuilt:
            config.to_bytes()

    def floor_parse() -> None:
        for blob in corpus:
            floor(blob)

    def floor_unpack_pack() -> None:
        for fields in unpacked:
            floor_pack(fields)

    rounds = opts.pick(3, 7)
    both = time_rounds({"ours": ours_both, "floor": floor_parse}, rounds)
    parse = time_rounds({"ours": ours_parse, "floor": floor_parse}, rounds)
    pack = time_rounds({"ours": ours_pack, "floor": floor_unpack_pack}, rounds)
    values = time_rounds({"ours": ours_pack_values, "floor": floor_unpack_pack}, rounds)
    rows = [
        Row(
            f"parse + pack, {count:,} configs",
            fmt_time(both["ours"]),
            fmt_time(both["floor"]) + " (unpack floor)",
            both["ours"] / both["floor"],
            Goal(2, at_most=True, terms="ours/floor"),
        ),
        Row(
            "  of which parse (info)",
            fmt_time(parse["ours"]),
            fmt_time(parse["floor"]) + " (unpack floor)",
            parse["ours"] / parse["floor"],
        ),
        Row(
            "  of which pack (info)",
            fmt_time(pack["ours"]),
            fmt_time(pack["floor"]) + " (Struct.pack per element)",
            pack["ours"] / pack["floor"],
        ),
        Row(
            "  pack from values (info)",
            fmt_time(values["ours"]),
            fmt_time(values["floor"]) + " (Struct.pack per element)",
            values["ours"] / values["floor"],
        ),
    ]
    rows[0].notes.append(
        "a parsed config decodes its padding-free arrays when they are first read, and "
        "packs back the bytes it was parsed from when those were canonical (every pad "
        "byte zero; checked at parse), so 'pack' after a parse copies bytes; 'pack from "
        "values' packs copies made with .replace(), which keep no bytes; CPU sets, consoles "
        "and platform infos are shared between configs with the same bytes, which a corpus "
        "of 6 files repeated favours"
    )
    rows[0].notes.append(
        f"the floor unpacks {floor_items} headers, CPU sets and array elements for the 6 "
        f"fixture files, where the models hold {items}"
    )
    return rows


def _model_items(config: CellConfig | SystemConfig) -> int:
    """Count the descriptor, the CPU set and the array elements a parsed config holds."""
    if isinstance(config, SystemConfig):
        # head, PCI info, 8 IOMMU slots, arch info, then the root cell
        return 11 + _model_items(config.root_cell)
    return (
        2
        + len(config.mem_regions)
        + len(config.cache_regions)
        + len(config.irqchips)
        + len(config.pio_regions)
        + len(config.pci_devices)
        + len(config.pci_caps)
        + len(config.stream_ids)
    )


# -- lifecycle: our API on the FUSE device against raw ioctls ------------------------------

# The driver's request numbers (ABI fact sheet section 1), as a minimal script has them.
_RAW_CREATE, _RAW_LOAD, _RAW_START, _RAW_DESTROY = 0x40100002, 0x40300003, 0x40280004, 0x40280005


def measure_lifecycle(opts: Options) -> list[Row]:
    """Time create/load/start/destroy through the API against raw ioctls, on one mount."""
    row = Row("lifecycle on FUSE device (per cell)", goal=Goal(1.2, at_most=True, terms="ours/raw"))
    from jailhouse.testing import fuse_unavailable, mount_fuse_device  # noqa: PLC0415

    reason = fuse_unavailable()
    if reason is None:
        try:
            import mfusepy  # noqa: F401, PLC0415
        except ImportError:
            reason = "mfusepy is not installed (pip install 'python-jailhouse[fuse]')"
    if reason is not None:
        row.skipped = reason
        return [row]

    import jailhouse as jh  # noqa: PLC0415
    from jailhouse.examples import example_cells, example_system  # noqa: PLC0415

    system = example_system("arm64")
    demo = example_cells("arm64")["arm64-demo"]
    image = bytes(range(256)) * 16  # 4 KiB at guest address 0, in the cell's loadable RAM
    work = opts.workdir / "lifecycle"
    with (
        mount_fuse_device(work / "host", work / "mnt", arch=Arch.ARM64, cpus=4) as fuse,
        jh.open(fuse.uri) as hv,
    ):
        hv.enable(system)

        def ours() -> None:
            cell = hv.create_cell(demo)
            cell.load([jh.Image(image, 0)])
            cell.start()
            cell.destroy()

        raw = _raw_lifecycle(str(fuse.device_path), demo.to_bytes(), demo.name, image)
        try:
            ours()
            raw()
            times = time_rounds({"ours": ours, "raw": raw}, opts.pick(12, 60))
        finally:
            raw.close()  # type: ignore[attr-defined]
        hv.disable()
    row.ours, row.reference = fmt_time(times["ours"]), fmt_time(times["raw"])
    row.ratio = times["ours"] / times["raw"]
    row.notes.append(
        "ours from a CellConfig (packs it, reads sysfs for the new id); raw: 4 ioctls with "
        "bytes built beforehand; medians of alternating cycles"
    )
    return [row]


def _raw_lifecycle(device: str, config: bytes, name: str, image: bytes) -> Callable[[], None]:
    """Build the minimal raw-ioctl script: every argument prebuilt, four ioctls a cycle."""
    fd = os.open(device, os.O_RDONLY)
    config_buf = ctypes.create_string_buffer(config, len(config))
    image_buf = ctypes.create_string_buffer(image, len(image))
    cell_id = struct.pack("<iI32s", -1, 0, name.encode())
    create = bytearray(struct.pack("<QII", ctypes.addressof(config_buf), len(config), 0))
    load = bytearray(
        cell_id
        + struct.pack("<II", 1, 0)
        + struct.pack("<QQQQ", ctypes.addressof(image_buf), len(image), 0, 0)
    )
    start, destroy = bytearray(cell_id), bytearray(cell_id)

    def cycle() -> None:
        for request, arg in (
            (_RAW_CREATE, create),
            (_RAW_LOAD, load),
            (_RAW_START, start),
            (_RAW_DESTROY, destroy),
        ):
            if fcntl.ioctl(fd, request, arg) != 0:
                raise RuntimeError(f"raw ioctl {request:#x} returned non-zero")

    def close() -> None:
        os.close(fd)

    cycle.close = close  # type: ignore[attr-defined]
    cycle.buffers = (config_buf, image_buf)  # type: ignore[attr-defined] - the ioctls point here
    return cycle


# -- cli: cold jhctl against python -c pass --------------------------------------------------


def measure_cli(opts: Options) -> list[Row]:
    """Time ``jhctl --version`` and ``jhctl cell list --json`` against ``python -c pass``."""
    from jailhouse.examples import example_cells, example_system  # noqa: PLC0415
    from jailhouse.sim import SimHost  # noqa: PLC0415

    rows = [
        Row("jhctl --version (process)", goal=Goal(1.3, at_most=True, terms="ours/python -c pass")),
        Row(
            "jhctl cell list --json (process)",
            goal=Goal(2, at_most=True, terms="ours/python -c pass"),
        ),
    ]
    if opts.startup_refused is not None:
        for row in rows:
            row.skipped = f"start-up not measured: {opts.startup_refused}"
        return rows
    host_dir = opts.workdir / "cli-host"
    shutil.rmtree(host_dir, ignore_errors=True)  # a --workdir kept from an earlier run
    host = SimHost(host_dir, arch=Arch.X86, cpus=4)
    host.enable(example_system("x86").to_bytes())
    for cell in example_cells("x86").values():
        host.cell_create(cell.to_bytes())
    uri = f"sim://{host.root}"
    jhctl = jhctl_command()
    listing = subprocess.run(
        [*jhctl, "-c", uri, "cell", "list", "--json"],
        capture_output=True,
        env=opts.env(),
        check=False,
    )
    if listing.returncode != 0 or len(json.loads(listing.stdout)) != 3:
        rows[1].failed = f"cell list failed: {listing.stderr.decode(errors='replace').strip()}"
    wrapper = opts.workdir / "console-script-floor.py"
    wrapper.write_text(CONSOLE_SCRIPT_FLOOR)
    times = time_processes(
        {
            "pass": [sys.executable, "-c", "pass"],
            "floor": [sys.executable, str(wrapper)],
            "version": [*jhctl, "--version"],
            "list": [*jhctl, "-c", uri, "cell", "list", "--json"],
        },
        opts.pick(9, 31),
        env=opts.env(),
    )
    for row, key in zip(rows, ("version", "list"), strict=True):
        row.ours, row.reference = (
            fmt_time(times[key]),
            fmt_time(times["pass"]) + " (python -c pass)",
        )
        row.ratio = times[key] / times["pass"]
    rows.append(
        Row(
            "  entry-point wrapper's floor (info)",
            fmt_time(times["floor"]),
            fmt_time(times["pass"]) + " (python -c pass)",
            times["floor"] / times["pass"],
        )
    )
    rows[0].notes.append(f"ran as: {' '.join(Path(a).name for a in jhctl)}")
    rows[2].notes.append(
        "the wrapper pip writes for a [project.scripts] entry point runs `import re` and a "
        "re.sub before it imports anything; this row is that wrapper with no import of ours, "
        "which is why jhctl is a script file instead; ours/that floor: "
        f"--version {times['version'] / times['floor']:.2f}x, "
        f"cell list {times['list'] / times['floor']:.2f}x"
    )
    return rows


CONSOLE_SCRIPT_FLOOR = """\
import re
import sys
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(0)
"""
"""pip's console-script template (distlib's) with the import and call of ``main`` left out."""


# -- memory: translate and check a 200-cell system ----------------------------------------


def memory_child(cells: int, *, trace: bool) -> dict[str, float]:
    """Translate ``cells`` domains for one system and check the set; report memory.

    Runs in a child process: the RSS high-water mark is the process's.
    """
    import tracemalloc  # noqa: PLC0415

    from jailhouse.config.validate import check_configs  # noqa: PLC0415
    from jailhouse.domxml import domain_to_cell  # noqa: PLC0415

    system = bench_system(cells + 1)
    xmls = [minimal_domain(f"cell{i:03d}", 256) for i in range(cells)]
    before = _vm_hwm()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    defined: list[CellConfig] = []
    for xml in xmls:
        defined.append(domain_to_cell(xml, system, defined=defined).config)
    blobs = [c.to_bytes() for c in defined]
    findings = check_configs(system, *defined)
    elapsed = time.perf_counter() - start
    result = {
        "baseline_hwm": before,
        "peak_hwm": _vm_hwm(),
        "seconds": elapsed,
        "errors": sum(1 for f in findings if f.severity.name == "ERROR"),
        "bytes": sum(len(b) for b in blobs),
    }
    if trace:
        result["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result


def _vm_hwm() -> float:
    """Return the process's RSS high-water mark in bytes (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    return float("nan")


def measure_memory(opts: Options) -> list[Row]:
    """Report the peak memory of translating and checking a 200-cell system."""
    cells = 200
    row = Row(f"peak memory, translate + check {cells} cells")
    results = []
    for trace in (False,) if opts.quick else (False, True):
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child-memory",
                str(cells),
                *(["--trace"] if trace else []),
            ],
            capture_output=True,
            env=opts.env(),
            check=False,
        )
        if child.returncode != 0:
            row.failed = f"child failed: {child.stderr.decode(errors='replace').strip()[-400:]}"
            return [row]
        results.append(json.loads(child.stdout))
    plain = results[0]
    grown = plain["peak_hwm"] - plain["baseline_hwm"]
    row.ours = f"{fmt_bytes(plain['peak_hwm'])} RSS (+{fmt_bytes(grown)} by the work)"
    row.reference = "- (no reference)"
    heap = (
        f"Python heap peak {fmt_bytes(results[1]['traced_peak'])} (tracemalloc)"
        if len(results) > 1
        else "no tracemalloc run in --quick"
    )
    row.notes.append(
        f"peak RSS {fmt_bytes(plain['peak_hwm'])}, of which {fmt_bytes(plain['baseline_hwm'])} "
        f"before the work (interpreter, imports, system); {heap}; {plain['seconds']:.2f} s for "
        f"{cells} translations and the check; {plain['errors']} errors found"
    )
    if plain["errors"]:
        row.failed = f"the 200-cell set has {plain['errors']} errors"
    return [row]


# -- main ---------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Options], list[Row]]] = {
    "check": measure_check,
    "translate": measure_translate,
    "codec": measure_codec,
    "lifecycle": measure_lifecycle,
    "cli": measure_cli,
    "memory": measure_memory,
}


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    """Yield a scratch directory, removed afterwards unless one was given."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="jh-bench-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for CI)")
    parser.add_argument(
        "--upstream",
        type=Path,
        default=os.environ.get("JAILHOUSE_SRC") or None,
        help="an upstream Jailhouse checkout (default $JAILHOUSE_SRC); never committed here",
    )
    parser.add_argument("--only", nargs="+", choices=MEASURES, help="run only these measures")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    parser.add_argument("--workdir", type=Path, help="keep scratch files here")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="measured processes compile every module from source at each start "
        "(PYTHONDONTWRITEBYTECODE=1), instead of using a bytecode cache as an installed "
        "package does",
    )
    parser.add_argument(
        "--no-venv",
        action="store_true",
        help="measure this interpreter's installation instead of a venv made with "
        "`pip install .` (start-up figures are refused unless it is a regular install)",
    )
    parser.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_memory is not None:
        print(json.dumps(memory_child(args.child_memory, trace=args.trace)))
        return 0

    if not (args.no_venv or args.in_venv):
        try:
            python = build_venv()
        except RuntimeError as exc:
            print(f"no venv ({exc}); measuring this interpreter", file=sys.stderr)
        else:
            words = list(sys.argv[1:] if argv is None else argv)
            return subprocess.run(
                [str(python), str(Path(__file__).resolve()), *words, "--in-venv"], check=False
            ).returncode
    refused = install_kind()
    cache = "no bytecode cache" if args.no_bytecode_cache else "bytecode cached"
    print(
        f"python-jailhouse benchmarks ({'quick' if args.quick else 'full'} profile), "
        f"{Path(sys.executable).name} {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"processes {cache}"
    )
    print(f"machine: {machine_summary()}")
    print(
        f"interpreter: {sys.executable} ({sys.implementation.name} {sys.version.split()[0]}); "
        f"package: {refused or 'regular install (pip install .)'}"
    )
    script = Path(__file__).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    print(f"command: python {' '.join([str(shown), *(argv or sys.argv[1:])])}\n")
    rows: list[Row] = []
    with workdir(args.workdir) as work:
        opts = Options(
            quick=args.quick,
            upstream=args.upstream,
            workdir=work,
            bytecode_cache=not args.no_bytecode_cache,
            startup_refused=refused,
        )
        for name in args.only or MEASURES:
            try:
                rows.extend(RUNNERS[name](opts))
            except Exception as exc:  # noqa: BLE001 - report the measure as failed, go on
                rows.append(Row(name, failed=f"{type(exc).__name__}: {exc}"))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
    if any(r.failed for r in rows):
        return 1
    return 1 if args.strict and any(r.met is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
