"""The self-test battery: golden transcripts, backends, interruption, injected faults, refusals.

The golden files ``tests/data/selftest-<arch>.json`` hold the host-independent part of the
battery's transcript for the example configs (``jailhouse.examples``), run on a fresh
simulated host.  They were generated once and reviewed by hand step by step against the
ABI fact sheet (§2: EBUSY for a second enable, EEXIST for a duplicate name, EBUSY for CPUs
the root cell no longer holds, EINVAL for a load outside WRITE+LOADABLE memory, ENOENT for
an unknown cell, EINVAL for starting or destroying the root cell, EINVAL for every cell
operation and for disable while disabled; §4 and §8 for the CPU sets, states and
statistics directories).  After a deliberate change of the battery, regenerate them with
:func:`jailhouse.selftest.simulate_selftest` on the same example configs, write
``to_json(host=False)`` with ``indent=2``, and review the diff the same way before
committing it.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from backends import Backend, cell_config, system_config
from kernels import arm64_image, bzimage

import jailhouse
from jailhouse.cli import main as cli_main
from jailhouse.config.model import Arch, CellFlag, MemFlag, MemoryRegion, format_cpus
from jailhouse.errors import BootError, ConfigError
from jailhouse.examples import example_cells, example_files, example_system
from jailhouse.inmates import default_load_address, loadable_region, park_inmate
from jailhouse.selftest import (
    LinuxBoot,
    SelftestError,
    Step,
    Transcript,
    run_selftest,
    simulate_selftest,
)
from jailhouse.sim import SimHost

if TYPE_CHECKING:
    from jailhouse.config.model import CellConfig, SystemConfig
    from jailhouse.hypervisor import Hypervisor
    from jailhouse.sim import HostSnapshot

DATA = Path(__file__).resolve().parent / "data"
EXAMPLE_ARCHES = ("arm64", "x86")
STEP_COUNT = 24
"""Steps of the battery when it enables the hypervisor itself (see the golden files)."""


def _arch_name(arch: Arch) -> str:
    """Return the example name of an arch."""
    return "x86" if arch == Arch.X86 else "arm64"


def _examples(arch: str) -> tuple[SystemConfig, CellConfig]:
    """Return the example system and its bare-metal demo cell."""
    return example_system(arch), example_cells(arch)[f"{arch}-demo"]  # type: ignore[arg-type]


def _golden(arch: str) -> dict[str, object]:
    """Load a stored transcript."""
    return json.loads((DATA / f"selftest-{arch}.json").read_text())


def _open(tmp_path: Path, arch: str) -> Hypervisor:
    """Open a fresh 4-CPU simulated host of an arch by URI."""
    return jailhouse.open(f"sim://{tmp_path / 'host'}?arch={arch}&cpus=4")


def _shape(snap: HostSnapshot) -> tuple[object, ...]:
    """Return what a snapshot says about ownership and state (not the console)."""
    cells = tuple((c.id, c.name, c.state, c.cpus, c.failed_cpus) for c in snap.cells)
    return snap.enabled, snap.online, snap.root_cpus, cells


# -- the park-loop inmates ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "assembler", "flags", "source"),
    [
        (Arch.X86, "x86_64-linux-gnu-as", ["--32"], ".code16\ncli\n1: hlt\njmp 1b\n"),
        (Arch.ARM64, "aarch64-linux-gnu-as", [], "1: wfi\nb 1b\n"),
    ],
    ids=["x86", "arm64"],
)
def test_park_inmate_matches_assembler(
    arch: Arch, assembler: str, flags: list[str], source: str, tmp_path: Path
) -> None:
    """The hand-encoded park loop is byte for byte what GNU as makes of its assembly."""
    tool = shutil.which(assembler)
    objcopy = shutil.which(assembler.removesuffix("as") + "objcopy")
    if tool is None or objcopy is None:
        pytest.skip(f"{assembler} is not installed (binutils for {arch.name})")
    (tmp_path / "p.s").write_text(source)
    subprocess.run([tool, *flags, "p.s", "-o", "p.o"], cwd=tmp_path, check=True)
    subprocess.run(
        [objcopy, "-O", "binary", "-j", ".text", "p.o", "p.bin"], cwd=tmp_path, check=True
    )
    assert park_inmate(arch) == (tmp_path / "p.bin").read_bytes()


def test_park_inmate_refuses_32_bit_arm() -> None:
    """There is no park loop for 32-bit ARM; asking names the arch."""
    with pytest.raises(ValueError, match="ARM"):
        park_inmate(Arch.ARM)


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_default_load_address_is_reset_address_in_loadable_ram(arch: str) -> None:
    """The example demo cells load the park loop at their reset address, 0, in their RAM."""
    _, cell = _examples(arch)
    address = default_load_address(cell)
    assert address == cell.cpu_reset_address == 0
    region = loadable_region(cell, address)
    assert region is not None
    assert MemFlag.LOADABLE in region.flags
    assert MemFlag.WRITE in region.flags


def test_default_load_address_refuses_unloadable_reset_address() -> None:
    """A reset address outside WRITE+LOADABLE memory is a config error naming the field."""
    _, cell = _examples("arm64")
    moved = cell.replace(cpu_reset_address=0x80000000)  # the comm region: not loadable
    with pytest.raises(ConfigError) as info:
        default_load_address(moved)
    assert info.value.field == "cpu_reset_address"
    assert info.value.value == 0x80000000


def test_default_load_address_first_region_wins() -> None:
    """A non-loadable region listed before a loadable one hides it, as in the driver."""
    ram = MemoryRegion(0x1000000, 0, 0x10000, MemFlag.READ | MemFlag.WRITE | MemFlag.LOADABLE)
    rom = MemoryRegion(0x2000000, 0, 0x1000, MemFlag.READ)
    cell = cell_config(Arch.ARM64).replace(mem_regions=(rom, ram))
    assert loadable_region(cell, 0) is None
    assert loadable_region(cell.replace(mem_regions=(ram, rom)), 0) == ram


def test_default_load_address_refuses_aarch32_cell_for_park_loop() -> None:
    """An AArch32 cell cannot run the A64 park loop, but may load an image of its own."""
    _, cell = _examples("arm64")
    aarch32 = cell.replace(flags=cell.flags | CellFlag.AARCH32)
    with pytest.raises(ConfigError, match="AArch32"):
        default_load_address(aarch32)
    assert default_load_address(aarch32, 16) == 0


def test_default_load_address_refuses_x86_segment_crossing() -> None:
    """On x86 the real-mode loop must not straddle a 64 KiB segment boundary."""
    _, cell = _examples("x86")
    near_end = cell.replace(cpu_reset_address=0xFFFE)
    with pytest.raises(ConfigError, match="64 KiB"):
        default_load_address(near_end)
    assert default_load_address(cell.replace(cpu_reset_address=0xFFFC)) == 0xFFFC


def test_default_load_address_refuses_image_that_does_not_fit() -> None:
    """An image running past the end of its region is refused."""
    _, cell = _examples("arm64")
    with pytest.raises(ConfigError, match="does not fit"):
        default_load_address(cell, 0x10001)


# -- golden transcripts -------------------------------------------------------------------


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_transcript_matches_golden_file(arch: str, tmp_path: Path) -> None:
    """On a fresh simulated host the battery's transcript is the stored, reviewed one."""
    system, cell = _examples(arch)
    with _open(tmp_path, arch) as hv:
        transcript = run_selftest(hv, system, cell)
    assert transcript.passed, str(transcript)
    assert transcript.to_json(host=False) == _golden(arch)
    assert len(transcript.steps) == STEP_COUNT


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_golden_file_expects_the_fact_sheet_errnos(arch: str) -> None:
    """The stored transcript expects the driver's errno for each error path (ABI fact sheet §2)."""
    expected = {s["op"]: s["expected"]["result"] for s in _golden(arch)["steps"]}  # type: ignore[index, union-attr]
    assert expected == {
        "enable": "ok",
        "enable-again": "EBUSY",
        "create": "ok",
        "create-duplicate": "EEXIST",
        "create-cpus-taken": "EBUSY",
        "statistics": "ok",
        "load-outside": "EINVAL",
        "load": "ok",
        "start": "ok",
        "statistics-after-start": "ok",
        "console": "ok",
        "start-unknown": "ENOENT",
        "destroy-unknown": "ENOENT",
        "start-root": "EINVAL",
        "destroy-root": "EINVAL",
        "restart": "ok",
        "shutdown": "ok",
        "destroy": "ok",
        "disable": "ok",
        "create-disabled": "EINVAL",
        "load-disabled": "EINVAL",
        "start-disabled": "EINVAL",
        "destroy-disabled": "EINVAL",
        "disable-again": "EINVAL",
    }


@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_simulate_selftest_gives_golden_transcript(arch: str) -> None:
    """The reference run on a throwaway simulated host is the stored transcript too."""
    transcript = simulate_selftest(*_examples(arch))
    assert transcript.to_json(host=False) == _golden(arch)


def test_transcript_identical_on_every_backend(backend: Backend) -> None:
    """Every backend's device gives the same host-independent transcript as the golden file."""
    arch = _arch_name(backend.arch)
    before = _shape(backend.snapshot())
    transcript = run_selftest(backend.hv, *_examples(arch))
    assert transcript.to_json(host=False) == _golden(arch)
    assert _shape(backend.snapshot()) == before


def test_transcript_json_round_trip(tmp_path: Path) -> None:
    """A transcript survives to_json/from_json with its host data, and compares equal."""
    with _open(tmp_path, "arm64") as hv:
        transcript = run_selftest(hv, *_examples("arm64"))
    data = json.loads(json.dumps(transcript.to_json()))
    again = Transcript.from_json(data)
    assert again == transcript
    assert again.compare(transcript) == []
    assert "elapsed_ms" in again.steps[0].host
    assert "host" not in transcript.to_json(host=False)


def test_compare_names_the_differing_step() -> None:
    """compare() reports a changed observation by step number and name."""
    golden = Transcript.from_json(_golden("x86"))
    data = _golden("x86")
    data["steps"][3]["observed"]["result"] = "ok"  # type: ignore[index]
    changed = Transcript.from_json(data)
    diffs = golden.compare(changed)
    assert len(diffs) == 1
    assert diffs[0].startswith("step 4 (create-duplicate) observed")
    assert not changed.passed
    assert [s.op for s in changed.failures] == ["create-duplicate"]


def test_from_json_refuses_other_format() -> None:
    """A dict of another format is refused, naming the format field."""
    data = _golden("arm64")
    data["format"] = "something else"
    with pytest.raises(ValueError, match="format"):
        Transcript.from_json(data)


def test_table_shows_every_step_and_verdict(tmp_path: Path) -> None:
    """The human table has a row per step and a PASSED line."""
    with _open(tmp_path, "x86") as hv:
        text = str(run_selftest(hv, *_examples("x86")))
    lines = text.splitlines()
    assert len(lines) == 1 + STEP_COUNT + 1
    assert lines[-1] == "selftest PASSED: cell 'x86-demo' on system 'x86-root' (x86)"
    assert "create-cpus-taken" in text
    assert "x86-demo-twin" in text


# -- state is restored --------------------------------------------------------------------


@pytest.mark.parametrize("stop_at", range(1, STEP_COUNT + 1))
@pytest.mark.parametrize("arch", EXAMPLE_ARCHES)
def test_interrupt_at_any_step_restores_disabled_host(
    arch: str, stop_at: int, tmp_path: Path
) -> None:
    """A KeyboardInterrupt from the progress callback at step N leaves the host as found."""
    host = SimHost(tmp_path / "host", arch=Arch.from_name(arch), cpus=4)
    before = _shape(host.snapshot())
    seen: list[int] = []

    def progress(step: Step) -> None:
        seen.append(step.index)
        if step.index == stop_at:
            raise KeyboardInterrupt

    with jailhouse.Hypervisor(host.device()) as hv, pytest.raises(KeyboardInterrupt):
        run_selftest(hv, *_examples(arch), progress=progress)
    assert seen == list(range(1, stop_at + 1))
    assert _shape(host.snapshot()) == before


@pytest.mark.parametrize("stop_at", [3, 9, 16, 18])
def test_interrupt_restores_enabled_host(stop_at: int, tmp_path: Path) -> None:
    """Interrupted on a host it found enabled, the battery leaves it enabled with the root alone."""
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=4)
    system, cell = _examples("arm64")
    with jailhouse.Hypervisor(host.device()) as hv:
        hv.enable(system)
        before = _shape(host.snapshot())

        def progress(step: Step) -> None:
            if step.index == stop_at:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_selftest(hv, system, cell, progress=progress)
    assert _shape(host.snapshot()) == before


def test_found_enabled_skips_enable_and_disabled_steps(tmp_path: Path) -> None:
    """On a hypervisor enabled with the same config, enable and the disabled steps are skipped."""
    system, cell = _examples("x86")
    with _open(tmp_path, "x86") as hv:
        hv.enable(system)
        transcript = run_selftest(hv, system, cell)
        assert hv.enabled()
        assert [c.name for c in hv.cells()] == ["x86-root"]
    assert transcript.passed, str(transcript)
    assert transcript.started_enabled
    skipped = [s.op for s in transcript.steps if s.observed.result == "skipped"]
    assert skipped == [
        "enable",
        "disable",
        "create-disabled",
        "load-disabled",
        "start-disabled",
        "destroy-disabled",
        "disable-again",
    ]
    golden = {s["op"]: s for s in _golden("x86")["steps"]}  # type: ignore[union-attr]
    for step in transcript.steps:
        if step.op not in skipped:
            assert step.to_json(host=False) == golden[step.op]
    assert simulate_selftest(system, cell, enabled=True).compare(transcript) == []
    assert simulate_selftest(system, cell).compare(transcript) != []


# -- the battery can fail -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "err", "nth", "failing_step"),
    [
        ("create", errno.ENOMEM, 1, "create"),
        ("load", errno.EIO, 2, "load"),
        ("start", errno.EPERM, 1, "start"),
        ("console", errno.EIO, 1, "console"),
        ("destroy", errno.EIO, 3, "destroy"),
        ("disable", errno.EBUSY, 1, "disable"),
    ],
)
def test_injected_fault_makes_battery_fail(
    op: str, err: int, nth: int, failing_step: str, tmp_path: Path
) -> None:
    """A host that fails one operation makes the battery report that step, and is restored."""
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=4)
    before = _shape(host.snapshot())
    host.inject_fault(op, err, nth=nth)
    with jailhouse.Hypervisor(host.device()) as hv:
        transcript = run_selftest(hv, *_examples("arm64"))
    assert not transcript.passed
    step = next(s for s in transcript.steps if s.op == failing_step)
    assert step.observed.result == errno.errorcode[err]
    assert not step.passed
    assert "FAILED" in str(transcript).splitlines()[-1]
    assert transcript.to_json(host=False) != _golden("arm64")
    assert _shape(host.snapshot()) == before


def test_failing_inmate_makes_battery_fail(tmp_path: Path) -> None:
    """An inmate that faults on start leaves state 'failed', which the battery reports."""
    host = SimHost(tmp_path / "host", arch=Arch.X86, cpus=4)
    host.script_cell("x86-demo", on_start="fail")
    with jailhouse.Hypervisor(host.device()) as hv:
        transcript = run_selftest(hv, *_examples("x86"))
    start = next(s for s in transcript.steps if s.op == "start")
    assert start.observed.result == "ok"
    assert start.observed.state == "failed"
    assert start.expected.state == "running"
    assert not transcript.passed
    assert not host.snapshot().enabled


def test_hypervisor_left_enabled_is_disabled_and_reported(tmp_path: Path) -> None:
    """When both disable steps fail, the battery disables afterwards and lists that as cleanup."""
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=4)
    before = _shape(host.snapshot())
    host.inject_fault("disable", errno.EIO, nth=1)  # the disable step
    host.inject_fault("disable", errno.EIO, nth=2)  # the disable-again step
    with jailhouse.Hypervisor(host.device()) as hv:
        transcript = run_selftest(hv, *_examples("arm64"))
    assert [s.op for s in transcript.failures] == [
        "disable",
        "create-disabled",
        "load-disabled",
        "start-disabled",
        "destroy-disabled",
        "disable-again",
    ]
    assert transcript.cleanup == ("disabled the hypervisor the self-test had enabled",)
    assert not transcript.passed
    assert "cleanup: disabled the hypervisor" in str(transcript)
    assert _shape(host.snapshot()) == before


# -- refusals: nothing is touched ---------------------------------------------------------


def test_refuses_hypervisor_enabled_with_other_config(tmp_path: Path) -> None:
    """Enabled with another root cell, the battery refuses and changes nothing."""
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=4)
    with jailhouse.Hypervisor(host.device()) as hv:
        hv.enable(system_config(Arch.ARM64, name="other-root"))
        before = _shape(host.snapshot())
        with pytest.raises(SelftestError, match="other-root"):
            run_selftest(hv, *_examples("arm64"))
    assert _shape(host.snapshot()) == before


def test_refuses_hypervisor_with_other_cells(tmp_path: Path) -> None:
    """With another non-root cell present, the battery refuses and names it."""
    system, cell = _examples("arm64")
    host = SimHost(tmp_path / "host", arch=Arch.ARM64, cpus=4)
    with jailhouse.Hypervisor(host.device()) as hv:
        hv.enable(system)
        hv.create_cell(example_cells("arm64")["arm64-linux"])
        before = _shape(host.snapshot())
        with pytest.raises(SelftestError, match="arm64-linux"):
            run_selftest(hv, system, cell)
    assert _shape(host.snapshot()) == before


def test_refuses_cell_without_passive_commreg(tmp_path: Path) -> None:
    """The park loop answers no shutdown request, so a cell without PASSIVE_COMMREG is refused."""
    system, cell = _examples("arm64")
    with _open(tmp_path, "arm64") as hv:
        with pytest.raises(ConfigError) as info:
            run_selftest(hv, system, cell.replace(flags=CellFlag(0)))
        assert info.value.field == "flags"
        assert not hv.enabled()


@pytest.mark.parametrize(
    ("arch", "cpus", "match"),
    [
        ("arm64", frozenset({0, 1, 2, 3}), "proper subset"),
        ("arm64", frozenset(), "at least one CPU"),
        ("x86", frozenset({0}), "CPU 0"),
    ],
)
def test_refuses_unusable_cpu_sets(
    arch: str, cpus: frozenset[int], match: str, tmp_path: Path
) -> None:
    """Cell CPU sets the battery cannot use are refused before anything happens."""
    system, cell = _examples(arch)
    with _open(tmp_path, arch) as hv:
        with pytest.raises(ConfigError, match=match):
            run_selftest(hv, system, cell.replace(cpus=cpus))
        assert not hv.enabled()


def test_refuses_foreign_arch(tmp_path: Path) -> None:
    """Configs of another arch than the host's are refused, naming the arch."""
    with _open(tmp_path, "x86") as hv, pytest.raises(ConfigError, match="ARM64"):
        run_selftest(hv, *_examples("arm64"))


def test_caller_image_is_recorded(tmp_path: Path) -> None:
    """A caller's image is loaded where asked and recorded by size, address and hash."""
    system, cell = _examples("arm64")
    image = bytes(range(64))
    with _open(tmp_path, "arm64") as hv:
        transcript = run_selftest(hv, system, cell, image=image, address=0x100)
    assert transcript.passed, str(transcript)
    assert transcript.image["kind"] == "caller"
    assert transcript.image["size"] == 64
    assert transcript.image["address"] == "0x100"
    load = next(s for s in transcript.steps if s.op == "load")
    assert load.action == "load the image at 0x100"


# -- the Linux-cell step ----------------------------------------------------------------------


def _linux(arch: str) -> LinuxBoot:
    """A tiny valid kernel of the arch, an initrd and a command line."""
    kernel = arm64_image(0x4000) if arch == "arm64" else bzimage(0x4000)
    return LinuxBoot(kernel, b"\x5a" * 0x1000, "console=ttyS0 quiet")


def test_linux_step_boots_and_destroys_on_every_backend(backend: Backend) -> None:
    """With a kernel, two steps follow the lifecycle; the rest is the plain battery's."""
    arch = _arch_name(backend.arch)
    system, cell = example_system(arch), example_cells(arch)[f"{arch}-linux"]
    before = _shape(backend.snapshot())
    plain = simulate_selftest(system, cell)
    transcript = run_selftest(backend.hv, system, cell, linux=_linux(arch))
    assert transcript.passed, str(transcript)
    assert _shape(backend.snapshot()) == before
    ops = [s.op for s in transcript.steps]
    assert len(ops) == len(plain.steps) + 2
    at = ops.index("destroy") + 1
    assert ops[at : at + 2] == ["linux-boot", "linux-destroy"]
    boot, gone = transcript.steps[at], transcript.steps[at + 1]
    root = system.root_cell.cpus
    assert boot.observed.state == "running"
    assert boot.observed.cell_cpus == format_cpus(cell.cpus)
    assert boot.observed.root_cpus == format_cpus(root - cell.cpus)
    assert (gone.observed.state, gone.observed.root_cpus) == (None, format_cpus(root))
    others = [s.op for s in transcript.steps if not s.op.startswith("linux-")]
    assert others == [s.op for s in plain.steps]
    assert transcript.compare(simulate_selftest(system, cell, linux=_linux(arch))) == []


def test_linux_step_refuses_a_kernel_that_does_not_fit_before_touching(tmp_path: Path) -> None:
    """A cell without room for the kernel fails with BootError; the host stays disabled."""
    with _open(tmp_path, "arm64") as hv:
        system, cell = _examples("arm64")
        with pytest.raises(BootError, match=r"kernel\.image_size"):
            run_selftest(hv, system, cell, linux=_linux("arm64"))
        assert not hv.enabled()


def test_cli_selftest_linux_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`jhctl selftest --linux-kernel` adds the steps; the other options need the kernel."""
    files = example_files("x86")
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    (tmp_path / "bzImage").write_bytes(bzimage(0x4000))
    uri = f"sim://{tmp_path / 'host'}?arch=x86&cpus=4"
    args = ["-c", uri, "--json", "selftest", str(tmp_path / "x86-root.cell")]
    args.append(str(tmp_path / "x86-linux.cell"))
    capsys.readouterr()
    assert cli_main([*args, "--linux-kernel", str(tmp_path / "bzImage"), "--compare-sim"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "linux-boot" in [s["op"] for s in doc["steps"]]
    assert doc["differences_from_sim"] == []
    assert cli_main([*args, "--linux-cmdline", "quiet"]) == 2
    assert "need --linux-kernel" in capsys.readouterr().err
