"""Tests for the host validator: each probe on small fake /proc, /sys, /dev and /lib trees."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import jailhouse
from jailhouse.config.model import Arch, CellConfig, MemFlag, MemoryRegion, SystemConfig
from jailhouse.hostcheck import (
    AddressRange,
    CheckStatus,
    HostCheck,
    MemmapEntry,
    MemmapKind,
    detect_arch,
    firmware_names,
    firmware_search_path,
    parse_cmdline,
    parse_iomem,
    parse_memmap,
    parse_memsize,
    summarize,
    validate_host,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

# -- fake hosts -------------------------------------------------------------------
# /proc/cpuinfo excerpts in the layout of the kernel's show_cpuinfo() (x86: key, tabs,
# ": "; arm64 and arm: the same keys as arch/arm{,64}/kernel/cpuinfo.c prints).

INTEL_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush \
mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc vmx x2apic hypervisor
vmx flags\t: vnmi preemption_timer invvpid ept_x_only ept_ad ept_1gb flexpriority tsc_offset \
vtpr mtf vapic ept vpid unrestricted_guest
bugs\t\t: spectre_v1 spectre_v2

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic vmx x2apic hypervisor
"""

AMD_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 7313 16-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat svm extapic \
cr8_legacy abm npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists
"""

ARM64_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 125.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd07
CPU revision\t: 4
"""

ARM_CPUINFO = """\
processor\t: 0
model name\t: ARMv7 Processor rev 5 (v7l)
BogoMIPS\t: 48.00
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae
CPU implementer\t: 0x41
CPU architecture: 7
"""

RISCV_CPUINFO = "processor\t: 0\nhart\t\t: 0\nisa\t\t: rv64imafdc\nmmu\t\t: sv39\n"

# /proc/iomem of a 1 GiB x86 QEMU guest booted with memmap=82M$0x3a000000 (the Jailhouse
# README's setup): the kernel marks the range "Reserved" in its e820 map.
X86_IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-39ffffff : System RAM
  01000000-01e00000 : Kernel code
  01e00000-0220ffff : Kernel rodata
3a000000-3f1fffff : Reserved
3f200000-3ffdffff : System RAM
3ffe0000-3fffffff : Reserved
fed00000-fed003ff : HPET 0
"""

# The same map as a user without CAP_SYS_ADMIN reads it: every address is zero.
X86_IOMEM_HIDDEN = "".join(
    ("  " if line.startswith("  ") else "")
    + "00000000-00000000 : "
    + line.split(" : ", 1)[1]
    + "\n"
    for line in X86_IOMEM.splitlines()
)

# 1 GiB arm64 QEMU virt machine booted with mem=768M: RAM at 0x40000000, Linux stops at
# 0x6fffffff and the rest is in no resource.
ARM64_IOMEM_MEM_LIMIT = """\
09000000-09000fff : pl011@9000000
  09000000-09000fff : 9000000.pl011 pl011@9000000
40000000-6fffffff : System RAM
  40210000-4136ffff : Kernel code
  41370000-4164ffff : reserved
"""

# The same machine with a reserved-memory node (no-map) instead of mem=: arm64 lists
# no-map memory as a top-level "reserved" resource.
ARM64_IOMEM_NOMAP = """\
09000000-09000fff : pl011@9000000
40000000-7fbfffff : System RAM
  40210000-4136ffff : Kernel code
7fc00000-7fffffff : reserved
"""

RWXD = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE | MemFlag.DMA


def image(core: int = 0x20000, percpu: int = 0x8000, size: int = 0x30000, word: int = 8) -> bytes:
    """Build a hypervisor image: the JAILHOUS header (core and per-CPU sizes), then padding."""
    fmt = "<QQ" if word == 8 else "<II"
    head = b"JAILHOUS" + struct.pack(fmt, core, percpu)
    return head + bytes(size - len(head))


def make_host(
    root: Path,
    *,
    cpuinfo: str,
    online: str | None = "0-3",
    present: str | None = "0-3",
    cmdline: str = "root=/dev/vda1 console=ttyS0",
    iomem: str | None = None,
    firmware: dict[str, bytes] | None = None,
    driver: bool = True,
    device: bool = True,
    enabled: str = "0\n",
    kvm: bool = False,
    release: str | None = "6.1.0-jh",
) -> Path:
    """Write a fake host tree under ``root`` and return it."""
    files: dict[str, str | bytes] = {"proc/cpuinfo": cpuinfo, "proc/cmdline": cmdline + "\n"}
    if online is not None:
        files["sys/devices/system/cpu/online"] = online + "\n"
    if present is not None:
        files["sys/devices/system/cpu/present"] = present + "\n"
    if iomem is not None:
        files["proc/iomem"] = iomem
    if release is not None:
        files["proc/sys/kernel/osrelease"] = release + "\n"
    if driver:
        files["sys/devices/jailhouse/enabled"] = enabled
        (root / "sys/devices/jailhouse/cells").mkdir(parents=True)
    if device:
        files["dev/jailhouse"] = b""  # a regular file stands in for the character device
    if kvm:
        files["dev/kvm"] = b""
    for host_path, data in (firmware or {}).items():
        files[host_path.lstrip("/")] = data
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    return root


def x86_system(
    cpus: frozenset[int] = frozenset(range(4)),
    hv: tuple[int, int] = (0x3A000000, 0x600000),
    arch: Arch = Arch.X86,
) -> SystemConfig:
    """Build a system config like upstream's QEMU x86 one: hypervisor at 0x3a000000 + 6 MiB."""
    root_cell = CellConfig(
        name="RootCell",
        arch=arch,
        cpus=cpus,
        mem_regions=(MemoryRegion(0x0, 0x0, 0x3A000000, RWXD),),
    )
    return SystemConfig(
        arch=arch,
        hypervisor_memory=MemoryRegion(hv[0], 0, hv[1]),
        root_cell=root_cell,
    )


def arm64_system(cpus: frozenset[int] = frozenset({0, 1})) -> SystemConfig:
    """Build a system config like upstream's QEMU arm64 one: hypervisor at 0x7fc00000 + 4 MiB."""
    return x86_system(cpus=cpus, hv=(0x7FC00000, 0x400000), arch=Arch.ARM64)


def by_name(checks: list[HostCheck]) -> dict[str, HostCheck]:
    """Index checks by name, checking that no name repeats."""
    table = {check.name: check for check in checks}
    assert len(table) == len(checks)
    return table


def statuses(checks: list[HostCheck]) -> dict[str, CheckStatus]:
    """Map each check's name to its status."""
    return {check.name: check.status for check in checks}


@pytest.fixture
def intel_host(tmp_path: Path) -> Path:
    """A ready x86 Intel host: driver loaded, image installed, memmap= reservation."""
    return make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        cmdline="root=/dev/sda1 intel_iommu=off memmap=82M$0x3a000000",
        iomem=X86_IOMEM,
        firmware={"/lib/firmware/jailhouse-intel.bin": image()},
    )


# -- whole hosts ------------------------------------------------------------------


def test_intel_host_passes_with_its_system_config(intel_host: Path) -> None:
    """A prepared Intel host passes every check; only the stand-in device node warns."""
    checks = validate_host(intel_host, system=x86_system())
    assert [c.name for c in checks] == [
        "architecture",
        "device",
        "driver",
        "enabled",
        "firmware",
        "virtualization",
        "memory",
        "memory-size",
        "root-cpus",
    ]
    table = by_name(checks)
    assert table["device"].status is CheckStatus.WARN
    assert "not a character device" in table["device"].detail
    others = {name: s for name, s in statuses(checks).items() if name != "device"}
    assert set(others.values()) == {CheckStatus.PASS}
    assert "jailhouse-intel.bin" in table["firmware"].detail
    assert "0x3a000000-0x3f1fffff" in table["memory"].detail
    assert summarize(checks) == 0


def test_shipped_examples_validate_on_matching_hosts(intel_host: Path, tmp_path: Path) -> None:
    """The library's example system configs pass on fake hosts laid out like upstream's QEMU."""
    examples = pytest.importorskip("jailhouse.examples")
    x86 = validate_host(intel_host, system=examples.example_system("x86"))
    assert summarize(x86) == 0
    arm_root = make_host(
        tmp_path / "arm64",
        cpuinfo=ARM64_CPUINFO,
        cmdline="mem=768M",
        iomem=ARM64_IOMEM_MEM_LIMIT,
        firmware={"/lib/firmware/jailhouse.bin": image()},
        kvm=True,
    )
    arm64 = validate_host(arm_root, system=examples.example_system("arm64"))
    assert set(statuses(arm64).values()) == {CheckStatus.PASS, CheckStatus.WARN}
    assert [c.name for c in arm64 if c.status is CheckStatus.WARN] == ["device"]


def test_intel_host_without_system_config_skips_config_checks(intel_host: Path) -> None:
    """Without a system config the config-dependent checks are SKIP and the rest still run."""
    table = by_name(validate_host(intel_host))
    assert table["memory-size"].status is CheckStatus.SKIP
    assert table["root-cpus"].status is CheckStatus.SKIP
    assert "0-3" in table["root-cpus"].detail
    assert table["memory"].status is CheckStatus.PASS
    assert "memmap=82M$0x3a000000 reserves 0x3a000000-0x3f1fffff" in table["memory"].detail


def test_amd_host_needs_the_amd_image(tmp_path: Path) -> None:
    """On an SVM CPU the driver asks for jailhouse-amd.bin; the Intel image does not count."""
    make_host(
        tmp_path,
        cpuinfo=AMD_CPUINFO,
        cmdline="memmap=82M$0x3a000000",
        firmware={"/lib/firmware/jailhouse-intel.bin": image()},
    )
    table = by_name(validate_host(tmp_path))
    assert table["virtualization"].status is CheckStatus.PASS
    assert "AMD SVM" in table["virtualization"].detail
    assert table["firmware"].status is CheckStatus.FAIL
    assert "jailhouse-amd.bin" in table["firmware"].detail
    assert "ENOENT" in table["firmware"].detail
    (tmp_path / "lib/firmware/jailhouse-amd.bin").write_bytes(image())
    assert by_name(validate_host(tmp_path))["firmware"].status is CheckStatus.PASS


def test_amd_host_without_npt_fails(tmp_path: Path) -> None:
    """An SVM CPU without nested page tables cannot run Jailhouse."""
    make_host(tmp_path, cpuinfo=AMD_CPUINFO.replace(" npt", ""))
    check = by_name(validate_host(tmp_path))["virtualization"]
    assert check.status is CheckStatus.FAIL
    assert "NPT" in check.detail


def test_intel_host_without_ept_fails(tmp_path: Path) -> None:
    """A VMX CPU whose 'vmx flags' line lacks ept and unrestricted_guest fails."""
    cpuinfo = INTEL_CPUINFO.replace(" ept vpid unrestricted_guest", " vpid")
    make_host(tmp_path, cpuinfo=cpuinfo)
    check = by_name(validate_host(tmp_path))["virtualization"]
    assert check.status is CheckStatus.FAIL
    assert "ept, unrestricted_guest" in check.detail


def test_intel_host_without_vmx_sub_feature_line_passes(tmp_path: Path) -> None:
    """Kernels before 5.8 print no 'vmx flags' line: VMX alone passes, and the detail says so."""
    cpuinfo = "\n".join(
        line for line in INTEL_CPUINFO.splitlines() if not line.startswith("vmx flags")
    )
    make_host(tmp_path, cpuinfo=cpuinfo)
    check = by_name(validate_host(tmp_path))["virtualization"]
    assert check.status is CheckStatus.PASS
    assert "not checked" in check.detail


def test_x86_host_without_vmx_or_svm_fails_with_enodev(tmp_path: Path) -> None:
    """No vmx and no svm flag: ENABLE answers ENODEV, and no image is looked for."""
    cpuinfo = INTEL_CPUINFO.replace(" vmx", "")
    make_host(tmp_path, cpuinfo=cpuinfo)
    table = by_name(validate_host(tmp_path))
    assert table["virtualization"].status is CheckStatus.FAIL
    assert "ENODEV" in table["virtualization"].detail
    assert table["firmware"].status is CheckStatus.SKIP


def test_arm64_host_with_kvm_and_mem_limit(tmp_path: Path) -> None:
    """An arm64 host booted with mem=768M and /dev/kvm passes with the QEMU arm64 layout."""
    make_host(
        tmp_path,
        cpuinfo=ARM64_CPUINFO,
        online="0-1",
        present="0-1",
        cmdline="root=/dev/vda1 mem=768M",
        iomem=ARM64_IOMEM_MEM_LIMIT,
        firmware={"/lib/firmware/jailhouse.bin": image()},
        kvm=True,
    )
    checks = validate_host(tmp_path, system=arm64_system())
    table = by_name(checks)
    assert "aarch64" in table["architecture"].detail
    assert table["firmware"].detail == "/lib/firmware/jailhouse.bin present"
    assert table["virtualization"].status is CheckStatus.PASS
    assert "EL2" in table["virtualization"].detail
    assert table["memory"].status is CheckStatus.PASS
    assert "mem=768M" in table["memory"].detail
    assert summarize(checks) == 0


def test_arm64_host_without_kvm_cannot_tell_el2(tmp_path: Path) -> None:
    """Without /dev/kvm user space cannot see the boot exception level: WARN, not a guess."""
    make_host(tmp_path, cpuinfo=ARM64_CPUINFO, kvm=False)
    check = by_name(validate_host(tmp_path))["virtualization"]
    assert check.status is CheckStatus.WARN
    assert "cannot tell" in check.detail
    assert check.hint is not None
    assert "started at EL" in check.hint


def test_arm64_host_with_nomap_reserved_memory(tmp_path: Path) -> None:
    """A reserved-memory node shows as top-level 'reserved' in iomem; the hypervisor fits it."""
    make_host(
        tmp_path,
        cpuinfo=ARM64_CPUINFO,
        online="0-1",
        present="0-1",
        iomem=ARM64_IOMEM_NOMAP,
        firmware={"/lib/firmware/jailhouse.bin": image()},
        kvm=True,
    )
    with_config = by_name(validate_host(tmp_path, system=arm64_system()))["memory"]
    assert with_config.status is CheckStatus.PASS
    assert "reserved memory (0x7fc00000-0x7fffffff)" in with_config.detail
    without = by_name(validate_host(tmp_path))["memory"]
    assert without.status is CheckStatus.WARN
    assert "0x7fc00000-0x7fffffff" in without.detail


def test_arm_host_uses_the_single_image_and_32_bit_header(tmp_path: Path) -> None:
    """A 32-bit ARM host looks for jailhouse.bin and reads 4-byte header words."""
    make_host(
        tmp_path,
        cpuinfo=ARM_CPUINFO,
        online="0-1",
        present="0-1",
        cmdline="mem=768M",
        firmware={"/lib/firmware/jailhouse.bin": image(core=0x3FF000, percpu=0x1000, word=4)},
    )
    system = x86_system(cpus=frozenset({0, 1}), hv=(0x7FC00000, 0x400000), arch=Arch.ARM)
    table = by_name(validate_host(tmp_path, system=system))
    assert "armv7l" in table["architecture"].detail
    # 4-byte words: core 0x3ff000 + 2 CPUs * 0x1000 = 0x401000, over the 4 MiB.
    assert table["memory-size"].status is CheckStatus.FAIL
    assert "0x401000" in table["memory-size"].detail


def test_host_without_the_driver_fails(tmp_path: Path) -> None:
    """No module: the device and driver checks fail with a modprobe hint, enabled is skipped."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        driver=False,
        device=False,
        cmdline="memmap=82M$0x3a000000",
        firmware={"/lib/firmware/jailhouse-intel.bin": image()},
    )
    checks = validate_host(tmp_path)
    table = by_name(checks)
    assert table["device"].status is CheckStatus.FAIL
    assert table["device"].detail == "/dev/jailhouse missing: the jailhouse driver is not loaded"
    assert table["driver"].status is CheckStatus.FAIL
    assert table["enabled"].status is CheckStatus.SKIP
    for name in ("device", "driver"):
        hint = table[name].hint
        assert hint is not None
        assert "modprobe jailhouse" in hint
    assert summarize(checks) == 1


def test_loaded_module_without_device_node(tmp_path: Path) -> None:
    """Module loaded but no /dev node points at devtmpfs/udev, not at loading the module."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, device=False)
    check = by_name(validate_host(tmp_path))["device"]
    assert check.status is CheckStatus.FAIL
    assert check.hint is not None
    assert "devtmpfs" in check.hint


def test_device_argument_names_another_node(tmp_path: Path) -> None:
    """The device path is taken relative to the root, with or without a leading slash."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, device=False)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/jh0").write_bytes(b"")
    for device in ("dev/jh0", "/dev/jh0"):
        check = by_name(validate_host(tmp_path, device=device))["device"]
        assert check.status is CheckStatus.WARN
        assert check.detail.startswith("/dev/jh0 opens")


def test_device_that_is_a_directory_is_not_openable(tmp_path: Path) -> None:
    """A directory at the device path fails to open read-write (EISDIR)."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, device=False)
    (tmp_path / "dev/jailhouse").mkdir(parents=True)
    check = by_name(validate_host(tmp_path))["device"]
    assert check.status is CheckStatus.FAIL
    assert "not openable" in check.detail


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="hostcheck-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _check_as_nobody(root: Path) -> tuple[str, str, str]:
    """Run the device check in a forked child that dropped to uid/gid 65534."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(reader)
            os.setgid(65534)
            os.setuid(65534)
            check = by_name(validate_host(root))["device"]
            os.write(writer, json.dumps(check.to_dict()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    result = json.loads(data)
    return result["status"], result["detail"], result["hint"]


def test_unopenable_device_fails_with_run_as_root_hint(shared_dir: Path) -> None:
    """A node the user may not open (EACCES) fails and says to run as root."""
    make_host(shared_dir, cpuinfo=INTEL_CPUINFO)
    for path in [shared_dir, *shared_dir.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o644)
    (shared_dir / "dev/jailhouse").chmod(0o600)
    if os.geteuid() == 0:
        status, detail, hint = _check_as_nobody(shared_dir)
    else:
        (shared_dir / "dev/jailhouse").chmod(0)
        check = by_name(validate_host(shared_dir))["device"]
        status, detail, hint = check.status.name, check.detail, check.hint or ""
    assert status == "FAIL"
    assert "permission denied" in detail
    assert "run as root" in hint


def test_enabled_is_reported(tmp_path: Path) -> None:
    """enabled=1 passes alone, and warns (EBUSY) when a system config is to be enabled."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, enabled="1\n", cmdline="memmap=82M$0x3a000000")
    alone = by_name(validate_host(tmp_path))["enabled"]
    assert alone.status is CheckStatus.PASS
    assert alone.detail == "the hypervisor is enabled"
    with_config = by_name(validate_host(tmp_path, system=x86_system()))["enabled"]
    assert with_config.status is CheckStatus.WARN
    assert "EBUSY" in with_config.detail


def test_malformed_enabled_file_warns(tmp_path: Path) -> None:
    """An enabled file with text other than 0 or 1 is a WARN naming the file."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, enabled="yes\n")
    check = by_name(validate_host(tmp_path))["enabled"]
    assert check.status is CheckStatus.WARN
    assert "enabled" in check.detail


# -- architecture -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpuinfo", "arch"),
    [
        (INTEL_CPUINFO, Arch.X86),
        (AMD_CPUINFO, Arch.X86),
        (ARM64_CPUINFO, Arch.ARM64),
        (ARM_CPUINFO, Arch.ARM),
        (RISCV_CPUINFO, None),
        ("", None),
    ],
)
def test_detect_arch(cpuinfo: str, arch: Arch | None) -> None:
    """The architecture comes from the keys the kernel writes, never from a default."""
    assert detect_arch(cpuinfo) is arch


def test_unknown_architecture_is_not_assumed_to_be_x86(tmp_path: Path) -> None:
    """A tree whose cpuinfo names no supported architecture skips the arch-specific checks."""
    make_host(tmp_path, cpuinfo=RISCV_CPUINFO)
    table = by_name(validate_host(tmp_path))
    assert table["architecture"].status is CheckStatus.WARN
    assert table["firmware"].status is CheckStatus.SKIP
    assert table["virtualization"].status is CheckStatus.SKIP


def test_given_arch_overrides_detection(tmp_path: Path) -> None:
    """arch= wins over /proc/cpuinfo."""
    make_host(tmp_path, cpuinfo=RISCV_CPUINFO, kvm=True)
    table = by_name(validate_host(tmp_path, arch=Arch.ARM64))
    assert table["architecture"].detail == "aarch64 host (given)"
    assert table["virtualization"].status is CheckStatus.PASS


def test_system_config_for_another_architecture_fails(intel_host: Path) -> None:
    """An arm64 system config on an x86 host is refused by ENABLE with EINVAL."""
    check = by_name(validate_host(intel_host, system=arm64_system()))["architecture"]
    assert check.status is CheckStatus.FAIL
    assert "aarch64" in check.detail
    assert "EINVAL" in check.detail


# -- firmware search path ---------------------------------------------------------


def test_firmware_search_path_order() -> None:
    """The loader's order: custom path, updates/<release>, updates, <release>, plain."""
    assert firmware_search_path("6.1.0", "/opt/jh/") == (
        "/opt/jh",
        "/lib/firmware/updates/6.1.0",
        "/lib/firmware/updates",
        "/lib/firmware/6.1.0",
        "/lib/firmware",
    )
    assert firmware_search_path(None) == ("/lib/firmware/updates", "/lib/firmware")


def test_firmware_names_follow_the_driver() -> None:
    """SVM is checked before VMX, as driver/main.c does; ARM has one image."""
    assert firmware_names(Arch.X86, ["vmx", "svm"]) == ("jailhouse-amd.bin",)
    assert firmware_names(Arch.X86, ["vmx"]) == ("jailhouse-intel.bin",)
    assert firmware_names(Arch.X86, ["sse2"]) == ()
    assert firmware_names(Arch.ARM64) == ("jailhouse.bin",)
    assert firmware_names(Arch.ARM) == ("jailhouse.bin",)


@pytest.mark.parametrize(
    "where",
    [
        "/lib/firmware/updates/6.1.0-jh/jailhouse-intel.bin",
        "/lib/firmware/updates/jailhouse-intel.bin",
        "/lib/firmware/6.1.0-jh/jailhouse-intel.bin",
        "/lib/firmware/jailhouse-intel.bin",
    ],
)
def test_firmware_found_in_every_searched_directory(tmp_path: Path, where: str) -> None:
    """The image is found in each directory the kernel searches."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, firmware={where: image()})
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.status is CheckStatus.PASS
    assert check.detail == f"{where} present"


def test_firmware_first_hit_wins(tmp_path: Path) -> None:
    """With copies in two directories, the one the kernel tries first is reported."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        firmware={
            "/lib/firmware/jailhouse-intel.bin": image(),
            "/lib/firmware/updates/jailhouse-intel.bin": image(),
        },
    )
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.detail == "/lib/firmware/updates/jailhouse-intel.bin present"


def test_firmware_in_another_directory_is_not_found(tmp_path: Path) -> None:
    """The kernel does not search /usr/local/lib/firmware or another release's directory."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        firmware={
            "/usr/local/lib/firmware/jailhouse-intel.bin": image(),
            "/lib/firmware/5.10.0/jailhouse-intel.bin": image(),
        },
    )
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.status is CheckStatus.FAIL
    assert check.hint is not None
    assert "firmware_class/parameters/path" in check.hint


def test_firmware_class_path_parameter_is_searched(tmp_path: Path) -> None:
    """A directory written to firmware_class's path parameter is searched first."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        firmware={
            "/sys/module/firmware_class/parameters/path": b"/home/dev/jailhouse/hypervisor/",
            "/home/dev/jailhouse/hypervisor/jailhouse-intel.bin": image(),
        },
    )
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.detail == "/home/dev/jailhouse/hypervisor/jailhouse-intel.bin present"


def test_firmware_with_wrong_signature_fails(tmp_path: Path) -> None:
    """A file without the JAILHOUS header signature is refused with EINVAL."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        firmware={"/lib/firmware/jailhouse-intel.bin": b"\x7fELF" + bytes(60)},
    )
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.status is CheckStatus.FAIL
    assert "EINVAL" in check.detail


def test_compressed_firmware_needs_kernel_support(tmp_path: Path) -> None:
    """Only an .xz image: WARN unless the kernel config has CONFIG_FW_LOADER_COMPRESS_XZ=y."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        firmware={"/lib/firmware/jailhouse-intel.bin.xz": b"\xfd7zXZ\x00"},
    )
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.status is CheckStatus.WARN
    assert "CONFIG_FW_LOADER_COMPRESS_XZ" in check.detail
    config = b"CONFIG_FW_LOADER=y\nCONFIG_FW_LOADER_COMPRESS_XZ=y\n"
    (tmp_path / "proc/config.gz").write_bytes(gzip.compress(config))
    assert by_name(validate_host(tmp_path))["firmware"].status is CheckStatus.PASS


def test_plain_firmware_beats_compressed_and_zstd_beats_xz(tmp_path: Path) -> None:
    """The loader tries the plain name in every directory, then .zst, then .xz."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        firmware={
            "/lib/firmware/updates/jailhouse-intel.bin.xz": b"\xfd7zXZ\x00",
            "/lib/firmware/jailhouse-intel.bin.zst": b"\x28\xb5\x2f\xfd",
            "/boot/config-6.1.0-jh": b"CONFIG_FW_LOADER_COMPRESS_ZSTD=y\n",
        },
    )
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.status is CheckStatus.PASS
    assert check.detail.startswith("/lib/firmware/jailhouse-intel.bin.zst ")
    (tmp_path / "lib/firmware/jailhouse-intel.bin").write_bytes(image())
    check = by_name(validate_host(tmp_path))["firmware"]
    assert check.detail == "/lib/firmware/jailhouse-intel.bin present"


# -- hypervisor memory size --------------------------------------------------------


def test_memory_size_too_small_for_the_image(intel_host: Path) -> None:
    """Core plus per-CPU data for max_cpus CPUs must fit below the hypervisor memory size."""
    (intel_host / "lib/firmware/jailhouse-intel.bin").write_bytes(
        image(core=0x500000, percpu=0x40000)
    )
    check = by_name(validate_host(intel_host, system=x86_system()))["memory-size"]
    # driver/main.c: 0x500000 + 4 * 0x40000 = 0x600000 >= 0x600000 is EINVAL.
    assert check.status is CheckStatus.FAIL
    assert "0x600000" in check.detail
    assert check.hint is not None
    assert "hypervisor_memory.size" in check.hint


def test_memory_size_counts_the_highest_cpu(intel_host: Path) -> None:
    """max_cpus is the highest root CPU plus one, not the number of CPUs."""
    (intel_host / "lib/firmware/jailhouse-intel.bin").write_bytes(
        image(core=0x400000, percpu=0x40000)
    )
    fits = x86_system(cpus=frozenset({0, 1}))
    sparse = x86_system(cpus=frozenset({0, 7}))
    assert by_name(validate_host(intel_host, system=fits))["memory-size"].status is (
        CheckStatus.PASS
    )
    # 0x400000 + 8 * 0x40000 = 0x600000: no room left.
    assert by_name(validate_host(intel_host, system=sparse))["memory-size"].status is (
        CheckStatus.FAIL
    )


# -- memory reservation -------------------------------------------------------------


def test_hypervisor_memory_in_system_ram_fails(intel_host: Path) -> None:
    """A hypervisor range inside System RAM cannot be requested: EINVAL."""
    system = x86_system(hv=(0x30000000, 0x600000))
    check = by_name(validate_host(intel_host, system=system))["memory"]
    assert check.status is CheckStatus.FAIL
    assert "'System RAM' 0x100000-0x39ffffff" in check.detail
    assert check.hint is not None
    assert "memmap=6M$0x30000000" in check.hint


def test_hypervisor_memory_straddling_the_reservation_fails(intel_host: Path) -> None:
    """A range that runs past the reserved region into System RAM fails."""
    system = x86_system(hv=(0x3F000000, 0x400000))
    check = by_name(validate_host(intel_host, system=system))["memory"]
    assert check.status is CheckStatus.FAIL
    assert "0x3f200000-0x3ffdffff" in check.detail


def test_hypervisor_memory_claimed_by_running_hypervisor(tmp_path: Path) -> None:
    """While enabled, iomem shows the range as 'Jailhouse hypervisor' inside the reservation."""
    iomem = X86_IOMEM.replace(
        "3a000000-3f1fffff : Reserved\n",
        "3a000000-3f1fffff : Reserved\n  3a000000-3a5fffff : Jailhouse hypervisor\n",
    )
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, iomem=iomem, cmdline="memmap=82M$0x3a000000")
    check = by_name(validate_host(tmp_path, system=x86_system()))["memory"]
    assert check.status is CheckStatus.PASS
    assert "running hypervisor" in check.detail


def test_hidden_iomem_falls_back_to_memmap(tmp_path: Path) -> None:
    """With zeroed iomem (non-root) the memmap= reservation on the command line decides."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        iomem=X86_IOMEM_HIDDEN,
        cmdline="memmap=82M$0x3a000000",
    )
    inside = by_name(validate_host(tmp_path, system=x86_system()))["memory"]
    assert inside.status is CheckStatus.PASS
    assert "memmap=82M$0x3a000000" in inside.detail
    outside = by_name(validate_host(tmp_path, system=x86_system(hv=(0x39F00000, 0x600000))))
    assert outside["memory"].status is CheckStatus.FAIL


def test_hidden_iomem_x86_mem_limit(tmp_path: Path) -> None:
    """On x86, mem=SIZE leaves every address from SIZE up to the hypervisor."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, iomem=X86_IOMEM_HIDDEN, cmdline="mem=928M")
    above = by_name(validate_host(tmp_path, system=x86_system()))["memory"]
    # 928 MiB = 0x3a000000: the hypervisor at 0x3a000000 is just above.
    assert above.status is CheckStatus.PASS
    assert "mem=928M (0x3a000000)" in above.detail
    below = by_name(validate_host(tmp_path, system=x86_system(hv=(0x39000000, 0x600000))))
    assert below["memory"].status is CheckStatus.FAIL


def test_hidden_iomem_arm64_mem_limit_cannot_tell(tmp_path: Path) -> None:
    """On arm64, mem= is an amount of RAM: without iomem addresses the cut is unknown."""
    make_host(
        tmp_path,
        cpuinfo=ARM64_CPUINFO,
        online="0-1",
        iomem="00000000-00000000 : System RAM\n",
        cmdline="mem=0x30000fff",
    )
    check = by_name(validate_host(tmp_path, system=arm64_system()))["memory"]
    assert check.status is CheckStatus.WARN
    # arm64 early_mem() rounds the amount down to a page.
    assert "first 0x30000000 bytes" in check.detail
    assert "run as root" in (check.hint or "")


def test_memmap_is_ignored_on_arm64(tmp_path: Path) -> None:
    """memmap= is an x86 parameter; on arm64 it reserves nothing."""
    make_host(
        tmp_path,
        cpuinfo=ARM64_CPUINFO,
        online="0-1",
        iomem=ARM64_IOMEM_MEM_LIMIT.replace("6fffffff", "7fffffff"),
        cmdline="memmap=4M$0x7fc00000",
    )
    check = by_name(validate_host(tmp_path, system=arm64_system()))["memory"]
    assert check.status is CheckStatus.FAIL
    assert "System RAM" in check.detail


def test_no_reservation_at_all_fails_on_x86(tmp_path: Path) -> None:
    """An x86 host with nothing on the command line cannot give the hypervisor memory."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, iomem=X86_IOMEM_HIDDEN)
    check = by_name(validate_host(tmp_path))["memory"]
    assert check.status is CheckStatus.FAIL
    assert check.hint is not None
    assert "memmap=SIZE$START" in check.hint


def test_memmap_without_address_warns_about_eaten_dollar(tmp_path: Path) -> None:
    """memmap=82M alone (GRUB expanded $0x3a000000 to nothing) limits RAM like mem=82M."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, iomem=X86_IOMEM_HIDDEN, cmdline="memmap=82M")
    check = by_name(validate_host(tmp_path))["memory"]
    assert check.status is CheckStatus.WARN
    assert "mem=82M" in check.detail
    assert check.hint is not None
    assert "ate the '$'" in check.hint


# -- parsers: known answers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "rest"),
    [
        ("82M", 82 << 20, ""),
        ("82m$", 82 << 20, "$"),
        ("0x3a000000", 0x3A000000, ""),
        ("4G", 4 << 30, ""),
        ("1k", 1024, ""),
        ("2T!", 2 << 40, "!"),
        ("010M", 8 << 20, ""),  # memparse() uses base 0: a leading 0 is octal
        ("0", 0, ""),
        ("0x", 0, "x"),  # strtoull() takes the "0" and stops at the x
        ("768M,", 768 << 20, ","),
    ],
)
def test_parse_memsize_follows_memparse(text: str, value: int, rest: str) -> None:
    """Sizes parse as the kernel's memparse() does: C integer, one 1024-power suffix."""
    assert parse_memsize(text) == (value, rest)


def test_parse_memsize_rejects_non_numbers() -> None:
    """Text that does not start with a digit is not a size."""
    with pytest.raises(ValueError, match="does not start with a size"):
        parse_memsize("M82")


def test_parse_memmap_readme_example() -> None:
    """memmap=82M$0x3a000000 (Jailhouse README, QEMU x86) reserves 0x3a000000-0x3f1fffff."""
    (entry,) = parse_memmap("82M$0x3a000000")
    assert entry == MemmapEntry("82M$0x3a000000", MemmapKind.RESERVED, 0x5200000, 0x3A000000)
    assert entry.range == AddressRange(0x3A000000, 0x3F200000)
    assert str(entry.range) == "0x3a000000-0x3f1fffff"


def test_parse_memmap_every_operator() -> None:
    """Comma-separated entries with @, #, $, !, % and none parse to their kinds."""
    entries = parse_memmap("100M@2G,100M#3G,0x5200000$0x3a000000,1G!4G,64K%0x1000-1+2,512M")
    assert [e.kind for e in entries] == [
        MemmapKind.RAM,
        MemmapKind.ACPI,
        MemmapKind.RESERVED,
        MemmapKind.PROTECTED,
        MemmapKind.RETYPE,
        MemmapKind.LIMIT,
    ]
    assert entries[1].range == AddressRange(3 << 30, (3 << 30) + (100 << 20))
    assert entries[2].range == AddressRange(0x3A000000, 0x3F200000)
    assert entries[3].range == AddressRange(4 << 30, 5 << 30)
    assert entries[5].range is None
    assert entries[5].size == 512 << 20


def test_parse_memmap_escaped_dollar_reaching_the_kernel() -> None:
    """A literal backslash stops memparse(): the kernel then treats the entry as a limit."""
    (entry,) = parse_memmap("82M\\$0x3a000000")
    assert entry.kind is MemmapKind.LIMIT
    assert entry.size == 82 << 20
    assert entry.trailing == "\\$0x3a000000"


def test_parse_memmap_exactmap_and_errors() -> None:
    """The exactmap entry is its own kind; an operator without an address is an error."""
    assert parse_memmap("exactmap")[0].kind is MemmapKind.EXACTMAP
    with pytest.raises(ValueError, match="no address after"):
        parse_memmap("82M$")
    with pytest.raises(ValueError, match="memmap entry 'junk'"):
        parse_memmap("junk")


def test_parse_cmdline_like_the_kernel() -> None:
    """Quotes group words and are dropped; parsing stops at '--'."""
    text = 'root=/dev/sda1 quiet memmap=82M$0x3a000000 foo="a b" "bar=c d" -- init=/x\n'
    assert parse_cmdline(text) == [
        ("root", "/dev/sda1"),
        ("quiet", None),
        ("memmap", "82M$0x3a000000"),
        ("foo", "a b"),
        ("bar", "c d"),
    ]


def test_last_mem_parameter_counts(tmp_path: Path) -> None:
    """The kernel keeps the last mem= it sees."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, iomem=X86_IOMEM_HIDDEN, cmdline="mem=512M mem=928M")
    check = by_name(validate_host(tmp_path, system=x86_system()))["memory"]
    assert check.status is CheckStatus.PASS
    assert "mem=928M" in check.detail


def test_parse_iomem_depth_and_ranges() -> None:
    """Lines parse to inclusive addresses, a name and a depth of two spaces per level."""
    entries = parse_iomem(X86_IOMEM)
    assert entries[4].name == "System ROM"
    assert entries[4].depth == 1
    reserved = entries[8]
    assert (reserved.start, reserved.last, reserved.name, reserved.depth) == (
        0x3A000000,
        0x3F1FFFFF,
        "Reserved",
        0,
    )
    assert reserved.range == AddressRange(0x3A000000, 0x3F200000)
    assert parse_iomem("") == ()


def test_parse_iomem_rejects_other_text() -> None:
    """A line that is not 'start-end : name' names its line number."""
    with pytest.raises(ValueError, match="line 2"):
        parse_iomem("00000000-00000fff : Reserved\nnot iomem\n")


def test_unparsable_iomem_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    """A probe that cannot parse what it reads reports WARN instead of raising."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, iomem="garbage\n")
    check = by_name(validate_host(tmp_path, system=x86_system()))["memory"]
    assert check.status is CheckStatus.WARN
    assert "garbage" in check.detail


# -- root cell CPU set ----------------------------------------------------------------


def test_root_cell_leaving_out_an_online_cpu_fails_with_hang_warning(intel_host: Path) -> None:
    """A root set without online CPU 3 would hang the machine at ENABLE (ABI sheet §2.10)."""
    check = by_name(validate_host(intel_host, system=x86_system(cpus=frozenset({0, 1, 2}))))[
        "root-cpus"
    ]
    assert check.status is CheckStatus.FAIL
    assert "leaves out online CPU(s) 3" in check.detail
    assert "HANGS" in check.detail
    assert check.hint is not None
    assert "add CPU(s) 3" in check.hint


def test_root_cell_with_cpus_the_machine_lacks_fails(intel_host: Path) -> None:
    """CPUs beyond the present ones are refused with EINVAL."""
    system = x86_system(cpus=frozenset(range(16)))
    check = by_name(validate_host(intel_host, system=system))["root-cpus"]
    assert check.status is CheckStatus.FAIL
    assert "has no CPU(s) 4-15" in check.detail
    assert "EINVAL" in check.detail


def test_root_cell_with_an_offline_cpu_fails(tmp_path: Path) -> None:
    """A present but offline CPU in the root set makes ENABLE return EINVAL."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, online="0-2", present="0-3")
    check = by_name(validate_host(tmp_path, system=x86_system()))["root-cpus"]
    assert check.status is CheckStatus.FAIL
    assert "CPU(s) 3 are offline" in check.detail
    assert check.hint is not None
    assert "online" in check.hint


def test_root_cell_with_no_cpu_fails(intel_host: Path) -> None:
    """An empty root set is EINVAL."""
    check = by_name(validate_host(intel_host, system=x86_system(cpus=frozenset())))["root-cpus"]
    assert check.status is CheckStatus.FAIL


def test_missing_online_file(tmp_path: Path) -> None:
    """Without the online file the CPU check warns given a config, and skips without one."""
    make_host(tmp_path, cpuinfo=INTEL_CPUINFO, online=None)
    assert by_name(validate_host(tmp_path))["root-cpus"].status is CheckStatus.SKIP
    check = by_name(validate_host(tmp_path, system=x86_system()))["root-cpus"]
    assert check.status is CheckStatus.WARN


# -- results --------------------------------------------------------------------------


def test_every_fail_has_a_hint(tmp_path: Path) -> None:
    """Every FAIL any probe produced on a thoroughly broken host carries a hint."""
    make_host(
        tmp_path,
        cpuinfo=INTEL_CPUINFO,
        driver=False,
        device=False,
        online="0-3",
        present="0-3",
        iomem=X86_IOMEM,
        firmware={"/lib/firmware/jailhouse-intel.bin": image(core=0x800000)},
    )
    system = x86_system(cpus=frozenset({0, 1, 9}), hv=(0x30000000, 0x600000), arch=Arch.X86)
    checks = validate_host(tmp_path, system=system)
    failed = [c for c in checks if c.status is CheckStatus.FAIL]
    assert {c.name for c in failed} == {"device", "driver", "memory", "memory-size", "root-cpus"}
    for broken in (
        checks,
        validate_host(tmp_path, system=arm64_system()),
        validate_host(make_host(tmp_path / "amd", cpuinfo=AMD_CPUINFO.replace(" npt", ""))),
    ):
        for check in broken:
            if check.status is CheckStatus.FAIL:
                assert check.hint, check


def test_host_check_renders_and_serialises() -> None:
    """str() gives the status column and the detail; to_dict() is JSON-ready."""
    ok = HostCheck("device", CheckStatus.PASS, "/dev/jailhouse present and openable")
    assert str(ok) == "PASS  /dev/jailhouse present and openable"
    bad = HostCheck("driver", CheckStatus.FAIL, "module not loaded", "modprobe jailhouse")
    assert str(bad) == "FAIL  module not loaded\n      hint: modprobe jailhouse"
    assert json.loads(json.dumps(bad.to_dict())) == {
        "name": "driver",
        "status": "FAIL",
        "detail": "module not loaded",
        "hint": "modprobe jailhouse",
    }


def test_summarize_exit_code() -> None:
    """summarize() is 1 when any check failed, else 0 (WARN and SKIP do not count)."""
    warn = HostCheck("a", CheckStatus.WARN, "w", "h")
    skip = HostCheck("b", CheckStatus.SKIP, "s")
    fail = HostCheck("c", CheckStatus.FAIL, "f", "h")
    assert summarize([]) == 0
    assert summarize([warn, skip]) == 0
    assert summarize([warn, fail]) == 1


def test_host_check_is_frozen() -> None:
    """A result cannot be changed after the fact."""
    check = HostCheck("a", CheckStatus.PASS, "ok")
    with pytest.raises(AttributeError):
        check.status = CheckStatus.FAIL  # type: ignore[misc]


def test_validator_reads_only(intel_host: Path) -> None:
    """Validation leaves the tree as it was: no file written, no mode changed."""

    def snapshot() -> dict[str, tuple[int, bytes]]:
        return {
            str(p.relative_to(intel_host)): (p.stat().st_mode, p.read_bytes())
            for p in intel_host.rglob("*")
            if p.is_file()
        }

    before = snapshot()
    validate_host(intel_host, system=x86_system())
    assert snapshot() == before
    assert stat.S_ISREG((intel_host / "dev/jailhouse").stat().st_mode)


def test_package_exports() -> None:
    """validate_host, HostCheck and CheckStatus are public names of the package."""
    assert jailhouse.validate_host is validate_host
    assert jailhouse.HostCheck is HostCheck
    assert jailhouse.CheckStatus is CheckStatus
    assert {"validate_host", "HostCheck", "CheckStatus"} <= set(jailhouse.__all__)
