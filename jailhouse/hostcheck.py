"""Check that a Linux host can run Jailhouse, in the spirit of libvirt's ``virt-host-validate``.

:func:`validate_host` runs one probe per requirement of ``JAILHOUSE_ENABLE`` (ABI fact
sheet §2) and returns one :class:`HostCheck` per probe, in a fixed order:

=====================  ===============================================================
``architecture``       the host's architecture (``proc/cpuinfo`` or ``uname``), and the
                       system config's
``device``             ``dev/jailhouse`` exists, is a character device and opens
``driver``             ``sys/devices/jailhouse`` exists (the module is loaded)
``enabled``            ``sys/devices/jailhouse/enabled``
``firmware``           the hypervisor image where the kernel's firmware loader looks
``virtualization``     x86: ``vmx``/``svm`` in ``proc/cpuinfo``; ARM: ``dev/kvm``
``memory``             the hypervisor memory is kept from Linux (``proc/cmdline``,
                       ``proc/iomem``)
``memory-size``        image, per-CPU data and config fit the hypervisor memory
``root-cpus``          the root cell's CPUs equal ``sys/devices/system/cpu/online``
=====================  ===============================================================

Every path is read below ``root``, so the probes run as well on a copied or made-up
tree as on ``/``.  Nothing is written; ``dev/jailhouse`` is opened and closed once.
Probes never raise for the host's state: what cannot be read becomes a WARN or SKIP.
"""

from __future__ import annotations

import enum
import errno
import gzip
import os
import re
import stat
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import Arch, format_cpus, parse_cpus
from jailhouse.errors import StatusParseError
from jailhouse.sysfs import SysfsReader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from jailhouse.config.model import SystemConfig

__all__ = [
    "AddressRange",
    "CheckStatus",
    "HostCheck",
    "IomemEntry",
    "MemmapEntry",
    "MemmapKind",
    "detect_arch",
    "firmware_names",
    "firmware_search_path",
    "parse_cmdline",
    "parse_iomem",
    "parse_memmap",
    "parse_memsize",
    "summarize",
    "validate_host",
]

# Driver facts (ABI fact sheet §2, driver/main.c): the image names and its header.
_FW_INTEL: Final = "jailhouse-intel.bin"
_FW_AMD: Final = "jailhouse-amd.bin"
_FW_ARM: Final = "jailhouse.bin"
_FW_SIGNATURE: Final = b"JAILHOUS"
# The kernel's firmware loader tries the plain name in every directory, then ``.zst``,
# then ``.xz`` (drivers/base/firmware_loader, CONFIG_FW_LOADER_COMPRESS_{ZSTD,XZ}).
_FW_SUFFIXES: Final = ("", ".zst", ".xz")
_FW_COMPRESS_OPTIONS: Final = {
    ".zst": ("CONFIG_FW_LOADER_COMPRESS_ZSTD",),
    # Kernels 5.3-5.18 had only XZ, under the plain option name.
    ".xz": ("CONFIG_FW_LOADER_COMPRESS_XZ", "CONFIG_FW_LOADER_COMPRESS"),
}
# Names a hypervisor range may overlap in /proc/iomem: request_mem_region() nests into
# these (not busy), and the second is the running hypervisor's own claim.
_IOMEM_FREE: Final = frozenset({"reserved", "jailhouse hypervisor"})
_IOMEM_JAILHOUSE: Final = "jailhouse hypervisor"
_IOMEM_LINE: Final = re.compile(r"( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)")
_MEMSIZE: Final = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_MEMSIZE_SHIFT: Final = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
# x86 VMX sub-features the hypervisor refuses to start without (its CPU init returns
# EIO); the kernel lists them on the "vmx flags" line of /proc/cpuinfo since Linux 5.8.
_VMX_REQUIRED: Final = ("ept", "unrestricted_guest", "preemption_timer")
_ARM_PAGE_MASK: Final = ~0xFFF


class CheckStatus(enum.IntEnum):
    """Outcome of one host check, ordered from best to worst."""

    PASS = 0
    """The requirement is met."""
    SKIP = 1
    """The check does not apply (no system config given, unknown architecture ...)."""
    WARN = 2
    """Probably fine, or the host does not show enough to tell."""
    FAIL = 3
    """``JAILHOUSE_ENABLE`` will fail, or hang the machine, on this host."""


@dataclass(frozen=True, slots=True)
class HostCheck:
    """The result of one host check.

    Attributes:
        name: Stable identifier of the check, such as ``"firmware"``.
        status: PASS, WARN, FAIL or SKIP.
        detail: What was found, in one sentence.
        hint: What to do about it; set for every FAIL and for most WARNs.
    """

    name: str
    status: CheckStatus
    detail: str
    hint: str | None = None

    def __str__(self) -> str:
        """Render as ``PASS  /dev/jailhouse present and openable``, the hint on a second line."""
        line = f"{self.status.name:<4}  {self.detail}"
        if self.hint:
            line += f"\n      hint: {self.hint}"
        return line

    def to_dict(self) -> dict[str, str | None]:
        """Return the check as a JSON-ready dict (``status`` is the name, ``"PASS"`` ...)."""
        return {
            "name": self.name,
            "status": self.status.name,
            "detail": self.detail,
            "hint": self.hint,
        }


def summarize(checks: Iterable[HostCheck]) -> int:
    """Turn checks into an exit code: 1 when any check failed, else 0."""
    return int(any(check.status is CheckStatus.FAIL for check in checks))


# -- address ranges, memmap=, mem=, /proc/iomem ------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class AddressRange:
    """A physical address range ``[start, end)``; ``end`` is the first address after it."""

    start: int
    end: int

    @property
    def size(self) -> int:
        """Number of bytes in the range."""
        return self.end - self.start

    def overlaps(self, other: AddressRange) -> bool:
        """Tell whether the two ranges share an address."""
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        """Render inclusively, as ``/proc/iomem`` does: ``0x3a000000-0x3f1fffff``."""
        return f"{self.start:#x}-{max(self.end - 1, self.start):#x}"


class MemmapKind(enum.Enum):
    """What an x86 ``memmap=`` entry does; the value is its operator character."""

    RAM = "@"
    """``nn@ss``: use the range as RAM."""
    ACPI = "#"
    """``nn#ss``: mark the range as ACPI data (busy: the hypervisor cannot claim it)."""
    RESERVED = "$"
    """``nn$ss``: mark the range reserved; this is how x86 hosts keep RAM for Jailhouse."""
    PROTECTED = "!"
    """``nn!ss``: mark the range as legacy persistent memory (the pmem driver may claim it)."""
    RETYPE = "%"
    """``nn%ss-old+new``: change the type of a range."""
    LIMIT = ""
    """``nn`` alone: like ``mem=nn``, Linux uses no RAM from address ``nn`` up."""
    EXACTMAP = "exactmap"
    """``exactmap``: forget the firmware's map; further entries define all memory."""


@dataclass(frozen=True, slots=True)
class MemmapEntry:
    r"""One comma-separated entry of an x86 ``memmap=`` kernel parameter.

    Attributes:
        text: The entry as written.
        kind: What it does.
        size: The size (for LIMIT: the address limit), in bytes.
        start: The start address; None for LIMIT and EXACTMAP.
        trailing: Text after the entry that the kernel did not parse.  The kernel acts
            on the entry anyway and then reports -EINVAL: ``82M\\$0x3a000000`` (a
            boot-loader escape that reached the kernel) limits RAM to 82 MiB.
    """

    text: str
    kind: MemmapKind
    size: int
    start: int | None = None
    trailing: str = ""

    @property
    def range(self) -> AddressRange | None:
        """The address range the entry names, or None for LIMIT and EXACTMAP."""
        if self.start is None:
            return None
        return AddressRange(self.start, self.start + self.size)


def parse_memsize(text: str) -> tuple[int, str]:
    """Parse a size or address the way the kernel's ``memparse()`` does.

    A C integer (``0x`` hex, a leading ``0`` octal, else decimal), then at most one
    suffix letter K, M, G, T, P or E (either case), each a factor of 1024 more.

    Args:
        text: Text that starts with the number.

    Returns:
        The value and the text after it.

    Raises:
        ValueError: The text does not start with a number.
    """
    match = _MEMSIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} does not start with a size (like 82M or 0x3a000000)")
    digits = match.group()
    if digits[:2].lower() == "0x":
        value = int(digits, 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    rest = text[match.end() :]
    shift = _MEMSIZE_SHIFT.get(rest[:1].lower())
    if shift is not None:
        value <<= shift
        rest = rest[1:]
    return value, rest


def parse_memmap(value: str) -> tuple[MemmapEntry, ...]:
    """Parse the value of an x86 ``memmap=`` parameter (comma-separated entries).

    ``memmap=82M$0x3a000000`` reserves ``[0x3a000000, 0x3f200000)``.

    Raises:
        ValueError: An entry does not start with a size, or an operator lacks its address.
    """
    entries: list[MemmapEntry] = []
    operators = {kind.value: kind for kind in MemmapKind if len(kind.value) == 1}
    for part in value.split(","):
        if part.startswith("exactmap"):
            entries.append(MemmapEntry(part, MemmapKind.EXACTMAP, 0, trailing=part[8:]))
            continue
        try:
            size, rest = parse_memsize(part)
        except ValueError as exc:
            raise ValueError(f"memmap entry {part!r}: {exc}") from exc
        kind = operators.get(rest[:1])
        if kind is None:
            entries.append(MemmapEntry(part, MemmapKind.LIMIT, size, trailing=rest))
            continue
        try:
            start, rest = parse_memsize(rest[1:])
        except ValueError as exc:
            raise ValueError(f"memmap entry {part!r}: no address after {kind.value!r}") from exc
        if kind is MemmapKind.RETYPE:
            rest = ""  # "-oldtype+newtype" follows; the type numbers do not matter here
        entries.append(MemmapEntry(part, kind, size, start, rest))
    return tuple(entries)


def parse_cmdline(text: str) -> list[tuple[str, str | None]]:
    """Split a kernel command line into ``(name, value)`` pairs as the kernel does.

    Words are separated by white space outside double quotes; the quotes around a word
    or a value are dropped.  Parsing stops at ``--`` (what follows goes to init).  A word
    without ``=`` has the value None.
    """
    words: list[str] = []
    word: list[str] = []
    quoted = False
    started = False
    for char in text:
        if char == '"':
            quoted = not quoted
            started = True
            continue
        if char.isspace() and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
            continue
        word.append(char)
        started = True
    if started:
        words.append("".join(word))
    pairs: list[tuple[str, str | None]] = []
    for item in words:
        if item == "--":
            break
        name, sep, val = item.partition("=")
        pairs.append((name, val if sep else None))
    return pairs


@dataclass(frozen=True, slots=True)
class IomemEntry:
    """One line of ``/proc/iomem``.

    Attributes:
        start: First address (0 for readers without CAP_SYS_ADMIN).
        last: Last address, inclusive as the file shows it.
        name: What claims the range (``System RAM``, ``Reserved``, a driver ...).
        depth: Nesting level: two spaces of indentation per level.
    """

    start: int
    last: int
    name: str
    depth: int = 0

    @property
    def range(self) -> AddressRange:
        """The entry as an address range."""
        return AddressRange(self.start, self.last + 1)


def parse_iomem(text: str) -> tuple[IomemEntry, ...]:
    """Parse ``/proc/iomem``.

    Raises:
        ValueError: A line is not ``<indent><start>-<last> : <name>``.
    """
    entries: list[IomemEntry] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _IOMEM_LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"/proc/iomem line {number} {line!r} is not 'start-end : name'")
        indent, first, last, name = match.groups()
        entries.append(IomemEntry(int(first, 16), int(last, 16), name, len(indent) // 2))
    return tuple(entries)


def _iomem_hidden(entries: tuple[IomemEntry, ...]) -> bool:
    """Tell whether the kernel zeroed the addresses (reader without CAP_SYS_ADMIN)."""
    return all(entry.start == 0 and entry.last == 0 for entry in entries)


def _covers(ranges: Iterable[AddressRange], target: AddressRange) -> bool:
    """Tell whether the union of ``ranges`` contains every address of ``target``."""
    position = target.start
    for item in sorted(ranges):
        if item.start > position:
            break
        position = max(position, item.end)
        if position >= target.end:
            return True
    return position >= target.end


def _size_text(size: int) -> str:
    """Render a size the way memparse() reads it back: ``82M``, ``6M``, ``0x1800``."""
    for suffix, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{suffix}"
    return f"{size:#x}"


# -- architecture and firmware --------------------------------------------------


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """Map each ``key : value`` of ``/proc/cpuinfo`` to its first value (the boot CPU's)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def detect_arch(cpuinfo: str) -> Arch | None:
    """Tell the architecture from the text of ``/proc/cpuinfo``.

    x86 kernels write ``vendor_id`` and ``flags``; ARM kernels write ``CPU architecture``,
    8 on arm64 (also for 32-bit tasks) and 7 on 32-bit ARM kernels.

    Returns:
        The architecture, or None when the text is from none of the three.
    """
    fields = _cpuinfo_fields(cpuinfo)
    if "vendor_id" in fields or "flags" in fields:
        return Arch.X86
    level = fields.get("CPU architecture", "")
    if level in {"8", "AArch64"}:
        return Arch.ARM64
    if level.isdigit() and int(level) <= 7:
        return Arch.ARM
    return None


def firmware_names(arch: Arch, cpu_flags: Iterable[str] = ()) -> tuple[str, ...]:
    """Name the hypervisor image the driver requests on this host.

    The driver picks by its boot CPU: SVM first, then VMX, on x86; one image on ARM.

    Args:
        arch: The host's architecture.
        cpu_flags: The ``flags`` of ``/proc/cpuinfo`` (x86 only).

    Returns:
        The image name, or nothing when an x86 CPU has neither flag (the driver then
        answers ENODEV before loading any image).
    """
    if arch is not Arch.X86:
        return (_FW_ARM,)
    flags = set(cpu_flags)
    if "svm" in flags:
        return (_FW_AMD,)
    if "vmx" in flags:
        return (_FW_INTEL,)
    return ()


def firmware_search_path(release: str | None, custom: str | None = None) -> tuple[str, ...]:
    """List the directories the kernel's firmware loader searches, in its order.

    Args:
        release: The kernel release (``uname -r``); None leaves out the per-release
            directories.
        custom: The ``firmware_class.path`` parameter, searched first when set.
    """
    dirs = [custom.rstrip("/")] if custom else []
    if release:
        dirs.append(f"/lib/firmware/updates/{release}")
    dirs.append("/lib/firmware/updates")
    if release:
        dirs.append(f"/lib/firmware/{release}")
    dirs.append("/lib/firmware")
    return tuple(dirs)


# -- the host ------------------------------------------------------------------


class _Host:
    """Cached reads of one host tree."""

    def __init__(self, root: Path, arch: Arch | None, device: str) -> None:
        self.root = root
        self.is_live = root.resolve() == Path("/")
        self.device = "/" + device.lstrip("/")
        self.sysfs = SysfsReader(self.path("/sys"))
        self.given_arch = arch

    def path(self, host_path: str) -> Path:
        """Map an absolute host path to the tree."""
        return self.root / host_path.lstrip("/")

    def read(self, host_path: str) -> str | None:
        """Read a text file of the host; None when it does not exist."""
        try:
            return self.path(host_path).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None

    @cached_property
    def cpuinfo_text(self) -> str | None:
        return self.read("/proc/cpuinfo")

    @cached_property
    def cpuinfo(self) -> dict[str, str]:
        return _cpuinfo_fields(self.cpuinfo_text or "")

    @cached_property
    def cpu_flags(self) -> frozenset[str]:
        return frozenset(self.cpuinfo.get("flags", "").split())

    @cached_property
    def arch_and_source(self) -> tuple[Arch | None, str]:
        if self.given_arch is not None:
            return self.given_arch, "given"
        if self.is_live:
            machine = os.uname().machine
            try:
                return Arch.from_name(machine), "uname"
            except ValueError:
                return None, f"uname says {machine}"
        text = self.cpuinfo_text
        if text is None:
            return None, "no /proc/cpuinfo"
        return detect_arch(text), "/proc/cpuinfo"

    @property
    def arch(self) -> Arch | None:
        return self.arch_and_source[0]

    @cached_property
    def release(self) -> str | None:
        text = self.read("/proc/sys/kernel/osrelease")
        if text is not None and text.strip():
            return text.strip()
        return os.uname().release if self.is_live else None

    @cached_property
    def cmdline(self) -> list[tuple[str, str | None]]:
        return parse_cmdline(self.read("/proc/cmdline") or "")

    @cached_property
    def iomem(self) -> tuple[IomemEntry, ...] | None:
        """The entries of /proc/iomem with real addresses; None when missing or zeroed."""
        text = self.read("/proc/iomem")
        if text is None:
            return None
        entries = parse_iomem(text)
        return None if not entries or _iomem_hidden(entries) else entries

    def kernel_config(self) -> str | None:
        """The kernel's build configuration, from /boot or /proc/config.gz."""
        if self.release:
            text = self.read(f"/boot/config-{self.release}")
            if text is not None:
                return text
        try:
            packed = self.path("/proc/config.gz").read_bytes()
            return gzip.decompress(packed).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            return None


_Result = tuple[CheckStatus, str, str | None]
_ENABLE: Final = "JAILHOUSE_ENABLE"


def _ok(detail: str) -> _Result:
    return CheckStatus.PASS, detail, None


def _skip(detail: str) -> _Result:
    return CheckStatus.SKIP, detail, None


def _warn(detail: str, hint: str | None) -> _Result:
    return CheckStatus.WARN, detail, hint


def _fail(detail: str, hint: str) -> _Result:
    return CheckStatus.FAIL, detail, hint


def _reserve_hint(arch: Arch | None, want: AddressRange | None = None) -> str:
    """Say how to keep memory from Linux on this architecture."""
    x86 = (
        f"memmap={_size_text(want.size)}${want.start:#x}"
        if want is not None
        else "memmap=SIZE$START"
    )
    x86 = (
        f"add {x86} to the kernel command line (escape the $ for the boot loader: \\$ in "
        "grub.cfg, \\\\\\$ in GRUB_CMDLINE_LINUX of /etc/default/grub)"
    )
    arm = (
        "boot with mem= so Linux stops short of the range, or add a reserved-memory "
        "device-tree node with no-map for it"
    )
    if arch is Arch.X86:
        return x86
    if arch in {Arch.ARM, Arch.ARM64}:
        return arm
    return f"x86: {x86}; ARM: {arm}"


def _arch_text(arch: Arch) -> str:
    """Name an architecture byte, known or not."""
    return arch.libvirt_name if arch.known else arch.name


def _check_architecture(host: _Host, system: SystemConfig | None) -> _Result:
    arch, source = host.arch_and_source
    if arch is None:
        if host.is_live:
            return _fail(
                f"this host's architecture is not one Jailhouse supports ({source})",
                "Jailhouse runs on x86_64, aarch64 and 32-bit ARM (armv7l) hosts",
            )
        return _warn(
            f"cannot tell the host's architecture ({source}); architecture checks skipped",
            "pass arch= to validate_host",
        )
    if system is not None and system.arch != arch:
        return _fail(
            f"the system config is for {_arch_text(system.arch)}, the host is "
            f"{arch.libvirt_name}: {_ENABLE} returns EINVAL",
            f"use a system config built for {arch.libvirt_name}",
        )
    matches = ", as is the system config" if system is not None else ""
    return _ok(f"{arch.libvirt_name} host ({source}){matches}")


def _check_device(host: _Host, _system: SystemConfig | None) -> _Result:
    shown = host.device
    node = host.path(shown)
    loaded = host.sysfs.is_loaded()
    try:
        mode = node.stat().st_mode
    except FileNotFoundError:
        if loaded:
            return _fail(
                f"{shown} missing although the jailhouse module is loaded",
                "the kernel made no device node: mount devtmpfs on /dev, or check udev",
            )
        return _fail(
            f"{shown} missing: the jailhouse driver is not loaded",
            "load the driver: modprobe jailhouse (or insmod the jailhouse.ko you built)",
        )
    except PermissionError:
        return _fail(
            f"{shown}: permission denied",
            "run as root, or give your user access to the device",
        )
    try:
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in {errno.EACCES, errno.EPERM}:
            return _fail(
                f"{shown} present but not openable: permission denied",
                "run as root, or give your user read and write access to the device",
            )
        if exc.errno in {errno.ENXIO, errno.ENODEV}:
            return _fail(
                f"{shown} present but no driver answers it (a stale node)",
                "load the driver: modprobe jailhouse",
            )
        return _fail(
            f"{shown} present but not openable: {exc.strerror}",
            "check the device node and the driver (dmesg)",
        )
    os.close(fd)
    if not stat.S_ISCHR(mode):
        return _warn(
            f"{shown} opens but is not a character device (a stand-in, not the driver's node)",
            "the driver's node is a character device: remove the file and reload the module",
        )
    return _ok(f"{shown} present and openable")


def _check_driver(host: _Host, _system: SystemConfig | None) -> _Result:
    if host.sysfs.is_loaded():
        return _ok("/sys/devices/jailhouse present: the module is loaded")
    return _fail(
        "/sys/devices/jailhouse missing: the jailhouse module is not loaded",
        "load it: modprobe jailhouse (or insmod the jailhouse.ko you built)",
    )


def _check_enabled(host: _Host, system: SystemConfig | None) -> _Result:
    if not host.sysfs.is_loaded():
        return _skip("the module is not loaded")
    try:
        enabled = host.sysfs.enabled()
    except KeyError:
        return _warn(
            "/sys/devices/jailhouse/enabled missing",
            "the driver should publish it; reload the module",
        )
    except StatusParseError as exc:
        return _warn(str(exc), "reload the module")
    if not enabled:
        return _ok("the hypervisor is not enabled")
    if system is None:
        return _ok("the hypervisor is enabled")
    return _warn(
        f"the hypervisor is already enabled: {_ENABLE} returns EBUSY until it is disabled",
        "disable it first (jailhouse disable) to enable it with this system config",
    )


def _find_firmware(host: _Host, name: str) -> tuple[str, list[str]]:
    """Find an image as the firmware loader would; return its host path ('' if none)."""
    custom = host.read("/sys/module/firmware_class/parameters/path")
    dirs = firmware_search_path(host.release, (custom or "").strip() or None)
    for suffix in _FW_SUFFIXES:
        for directory in dirs:
            candidate = f"{directory}/{name}{suffix}"
            if host.path(candidate).is_file():
                return candidate, list(dirs)
    return "", list(dirs)


def _check_firmware(host: _Host, _system: SystemConfig | None) -> _Result:
    arch = host.arch
    if arch is None:
        return _skip("unknown architecture: cannot tell which image to look for")
    names = firmware_names(arch, host.cpu_flags)
    if not names:
        return _skip("no vmx or svm CPU flag: the driver refuses before it loads an image")
    name = names[0]
    found, dirs = _find_firmware(host, name)
    if not found:
        return _fail(
            f"{name} not found in the firmware search path ({', '.join(dirs)}): "
            f"{_ENABLE} returns ENOENT",
            f"install {name} into /lib/firmware (make firmware_install in the Jailhouse tree), "
            "or write its directory to /sys/module/firmware_class/parameters/path",
        )
    suffix = next((s for s in _FW_SUFFIXES[1:] if found.endswith(s)), "")
    if suffix:
        config = host.kernel_config() or ""
        options = _FW_COMPRESS_OPTIONS[suffix]
        if any(re.search(rf"^{option}=y$", config, re.MULTILINE) for option in options):
            return _ok(f"{found} (compressed; the kernel decompresses it)")
        return _warn(
            f"only the compressed {found} exists; the kernel loads it only if built with "
            f"{options[0]}=y, which its config does not confirm",
            f"install the uncompressed {name} next to it",
        )
    with host.path(found).open("rb") as image:
        signature = image.read(len(_FW_SIGNATURE))
    if signature != _FW_SIGNATURE:
        return _fail(
            f"{found} is not a Jailhouse hypervisor image (starts {signature!r}, not "
            f"{_FW_SIGNATURE!r}): {_ENABLE} returns EINVAL",
            "reinstall the image from the same Jailhouse build as the driver",
        )
    return _ok(f"{found} present")


def _check_virtualization(host: _Host, _system: SystemConfig | None) -> _Result:
    arch = host.arch
    if arch is None:
        return _skip("unknown architecture")
    if arch is not Arch.X86:
        mode = "EL2" if arch is Arch.ARM64 else "HYP mode"
        if host.path("/dev/kvm").exists():
            return _ok(f"/dev/kvm exists, so Linux started in {mode} (KVM registers it only then)")
        return _warn(
            f"cannot tell from user space whether Linux started in {mode}: there is no "
            "/dev/kvm (KVM absent, disabled, or no hypervisor mode)",
            "check the boot log (dmesg | grep -i 'started at EL' on arm64, 'HYP mode' on arm); "
            f"the boot loader must start Linux in {mode}",
        )
    if "flags" not in host.cpuinfo:
        return _warn("/proc/cpuinfo has no flags line", "check /proc/cpuinfo")
    vendor = host.cpuinfo.get("vendor_id", "unknown vendor")
    flags = host.cpu_flags
    if "svm" in flags:
        if "npt" not in flags:
            return _fail(
                f"AMD SVM without nested page tables ({vendor}); Jailhouse requires NPT",
                "enable NPT in the firmware setup, or in a VM give the guest a CPU with npt",
            )
        if "decodeassists" not in flags:
            return _warn(
                f"AMD SVM with NPT ({vendor}) but without decode assists, which Jailhouse "
                "recommends",
                "in a VM, give the guest a CPU model with decodeassists",
            )
        return _ok(f"AMD SVM with NPT and decode assists ({vendor})")
    if "vmx" in flags:
        sub = host.cpuinfo.get("vmx flags")
        if sub is None:
            return _ok(
                f"Intel VMX ({vendor}); this kernel lists no VMX sub-features, so EPT and "
                "unrestricted guest were not checked"
            )
        missing = [name for name in _VMX_REQUIRED if name not in sub.split()]
        if missing:
            return _fail(
                f"Intel VMX ({vendor}) without {', '.join(missing)}, which the hypervisor requires",
                "use a CPU (or, in a VM, a CPU model) with EPT, unrestricted guest and the "
                "VMX preemption timer",
            )
        return _ok(f"Intel VMX with EPT, unrestricted guest and preemption timer ({vendor})")
    return _fail(
        f"no vmx or svm flag in /proc/cpuinfo ({vendor}): {_ENABLE} returns ENODEV",
        "enable VT-x or AMD-V in the firmware setup (Linux hides the flag when it is off); "
        "in a VM, enable nested virtualisation and give the guest vmx or svm",
    )


@dataclass(frozen=True, slots=True)
class _Reservations:
    """What the kernel command line keeps from Linux."""

    reserved: tuple[MemmapEntry, ...]
    limit: int | None
    limit_text: str
    eaten: tuple[MemmapEntry, ...]
    ignored: bool


def _cmdline_reservations(host: _Host) -> _Reservations:
    """Collect memmap= (x86 only) and mem= (the last one counts) from the command line."""
    x86 = host.arch is Arch.X86
    entries: list[MemmapEntry] = []
    limit: int | None = None
    limit_text = ""
    memmap_seen = False
    for name, value in host.cmdline:
        if name == "memmap" and value:
            memmap_seen = True
            try:
                entries.extend(parse_memmap(value))
            except ValueError:
                continue
        elif name == "mem" and value and value != "nopentium":
            try:
                size, _ = parse_memsize(value)
            except ValueError:
                continue
            limit, limit_text = (size if x86 else size & _ARM_PAGE_MASK), f"mem={value}"
    eaten: tuple[MemmapEntry, ...] = ()
    reserved: tuple[MemmapEntry, ...] = ()
    if x86:
        reserved = tuple(
            e for e in entries if e.kind in {MemmapKind.RESERVED, MemmapKind.PROTECTED}
        )
        eaten = tuple(e for e in entries if e.kind is MemmapKind.LIMIT)
        for entry in eaten:
            if limit is None or entry.size < limit:
                limit, limit_text = entry.size, f"memmap={entry.text}"
    return _Reservations(reserved, limit, limit_text, eaten, memmap_seen and not x86)


def _describe_reserved(entries: Iterable[MemmapEntry]) -> str:
    return ", ".join(f"memmap={e.text} reserves {e.range}" for e in entries)


def _check_memory(host: _Host, system: SystemConfig | None) -> _Result:
    arch = host.arch
    cmd = _cmdline_reservations(host)
    notes = " (memmap= has no effect on ARM)" if cmd.ignored else ""
    if cmd.eaten:
        entry = cmd.eaten[0]
        eaten = _warn(
            f"memmap={entry.text} has no start address: the kernel takes it as "
            f"mem={_size_text(entry.size)} and uses no RAM from {entry.size:#x} up",
            "if you meant memmap=SIZE$START, the boot loader ate the '$' (escape it: \\$ in "
            "grub.cfg, \\\\\\$ in /etc/default/grub); "
            "if a backslash reached the kernel, write the $ without it",
        )
        if system is None:
            return eaten
        status, detail, hint = _check_hypervisor_range(host, system, cmd, notes)
        if status is CheckStatus.FAIL:
            return status, f"{detail}; {eaten[1]}", f"{hint}; {eaten[2]}"
        return eaten
    if system is not None:
        return _check_hypervisor_range(host, system, cmd, notes)
    if cmd.reserved or cmd.limit is not None:
        parts = [_describe_reserved(cmd.reserved)] if cmd.reserved else []
        if cmd.limit is not None:
            parts.append(f"{cmd.limit_text} keeps Linux off RAM beyond {cmd.limit:#x}")
        return _ok("kernel command line: " + "; ".join(parts) + notes)
    iomem = host.iomem
    if arch in {Arch.ARM, Arch.ARM64}:
        if iomem is None:
            return _warn(
                "no mem= on the kernel command line, and /proc/iomem shows no addresses to "
                "this user: cannot tell whether a reserved-memory node keeps RAM free" + notes,
                "run as root, or pass the system config to check its hypervisor memory",
            )
        reserved = [e for e in iomem if e.depth == 0 and e.name.lower() == "reserved"]
        if reserved:
            ranges = ", ".join(str(e.range) for e in reserved)
            return _warn(
                f"no mem= on the kernel command line; /proc/iomem lists reserved (no-map) "
                f"memory at {ranges}" + notes,
                "pass the system config to check that its hypervisor memory lies there",
            )
    return _fail(
        "nothing keeps memory from Linux for the hypervisor: no memmap= or mem= on the "
        f"kernel command line{notes}; {_ENABLE} returns EINVAL (request_mem_region fails)",
        _reserve_hint(arch),
    )


def _check_hypervisor_range(
    host: _Host, system: SystemConfig, cmd: _Reservations, notes: str
) -> _Result:
    arch = host.arch
    hv = system.hypervisor_memory
    want = AddressRange(hv.phys_start, hv.phys_end)
    failed = f"{_ENABLE} returns EINVAL (request_mem_region fails)"
    iomem = host.iomem
    if iomem is not None:
        overlapping = [e for e in iomem if e.range.overlaps(want)]
        claimed = [e for e in overlapping if e.name.lower() == _IOMEM_JAILHOUSE]
        if claimed and _covers((e.range for e in claimed), want):
            return _ok(
                f"hypervisor memory {want} is claimed by the running hypervisor "
                "('Jailhouse hypervisor' in /proc/iomem)"
            )
        busy = [e for e in overlapping if e.name.lower() not in _IOMEM_FREE]
        if busy:
            first = busy[0]
            return _fail(
                f"hypervisor memory {want} overlaps {first.name!r} {first.range} in "
                f"/proc/iomem: {failed}",
                _reserve_hint(arch, want),
            )
        if overlapping:
            ranges = ", ".join(str(e.range) for e in overlapping)
            return _ok(
                f"hypervisor memory {want} lies in reserved memory ({ranges}) per /proc/iomem"
            )
        if cmd.limit is not None:
            return _ok(
                f"hypervisor memory {want} is outside every /proc/iomem resource: "
                f"{cmd.limit_text} keeps Linux off it"
            )
        return _warn(
            f"hypervisor memory {want} is in no /proc/iomem resource: Linux does not use "
            "it, but no RAM is known there either",
            "check the address against the board's memory map",
        )
    hidden = "/proc/iomem shows no addresses to this user"
    if arch is Arch.X86:
        reserved = [e.range for e in cmd.reserved if e.range is not None]
        if reserved and _covers(reserved, want):
            return _ok(f"hypervisor memory {want} lies in {_describe_reserved(cmd.reserved)}")
        if cmd.limit is not None and want.start >= cmd.limit:
            return _ok(
                f"hypervisor memory {want} lies above {cmd.limit_text} ({cmd.limit:#x}): "
                "Linux does not use it"
            )
        if reserved or cmd.limit is not None:
            said = [_describe_reserved(cmd.reserved)] if cmd.reserved else []
            if cmd.limit is not None:
                said.append(f"{cmd.limit_text} ends Linux's RAM at {cmd.limit:#x}")
            return _fail(
                f"hypervisor memory {want} is not kept from Linux ({'; '.join(said)}): {failed}",
                _reserve_hint(arch, want),
            )
        return _fail(
            f"nothing on the kernel command line keeps hypervisor memory {want} from Linux "
            f"({hidden}): {failed}",
            _reserve_hint(arch, want),
        )
    if cmd.limit is not None:
        return _warn(
            f"{cmd.limit_text} keeps Linux to its first {cmd.limit:#x} bytes of RAM; whether "
            f"hypervisor memory {want} lies beyond depends on the RAM layout, and {hidden}" + notes,
            "run as root for an exact check",
        )
    return _warn(
        f"cannot tell whether hypervisor memory {want} is kept from Linux: no mem= on the "
        f"kernel command line, and {hidden}" + notes,
        "run as root for an exact check",
    )


def _check_memory_size(host: _Host, system: SystemConfig | None) -> _Result:
    if system is None:
        return _skip("no system config given")
    arch = host.arch
    names = firmware_names(arch, host.cpu_flags) if arch is not None else ()
    if not names:
        return _skip("no hypervisor image to size")
    found, _ = _find_firmware(host, names[0])
    if not found or not found.endswith(".bin"):
        return _skip(f"no uncompressed {names[0]} to read the sizes from")
    image = host.path(found).read_bytes()
    # struct jailhouse_header: char signature[8], then unsigned long core_size, percpu_size.
    word, header = (4, "<II") if arch is Arch.ARM else (8, "<QQ")
    if image[: len(_FW_SIGNATURE)] != _FW_SIGNATURE or len(image) < 8 + 2 * word:
        return _skip(f"{found} has no Jailhouse header")
    core_size, percpu_size = struct.unpack_from(header, image, 8)
    cpus = system.root_cell.cpus
    if not cpus:
        return _skip("the root cell has no CPU")
    max_cpus = max(cpus) + 1
    hv_size = system.hypervisor_memory.size
    core_total = core_size + percpu_size * max_cpus
    config_size = system.size
    # driver/main.c, jailhouse_cmd_enable: each of these is EINVAL.
    needed = max(len(image), core_total + config_size) + 1
    if len(image) >= hv_size or core_total >= hv_size or config_size >= hv_size - core_total:
        return _fail(
            f"hypervisor memory of {hv_size:#x} bytes is too small for the image "
            f"({len(image):#x}), the core and per-CPU data for {max_cpus} CPUs "
            f"({core_total:#x}) and the {config_size}-byte config: {_ENABLE} returns EINVAL",
            f"make hypervisor_memory.size at least {needed:#x} (page-aligned: "
            f"{-(-needed // 0x1000) * 0x1000:#x})",
        )
    return _ok(
        f"hypervisor memory of {hv_size:#x} bytes holds the core and per-CPU data for "
        f"{max_cpus} CPUs ({core_total:#x}) and the {config_size}-byte config"
    )


def _check_root_cpus(host: _Host, system: SystemConfig | None) -> _Result:
    try:
        online = host.sysfs.online_cpus()
    except KeyError:
        missing = "/sys/devices/system/cpu/online missing: cannot tell the online CPUs"
        if system is None:
            return _skip(missing)
        return _warn(missing, "check that sysfs is mounted on /sys")
    except StatusParseError as exc:
        return _warn(str(exc), "check /sys/devices/system/cpu/online")
    if system is None:
        return _skip(f"no system config given (online CPUs: {format_cpus(online)})")
    cpus = system.root_cell.cpus
    if not cpus:
        return _fail(
            f"the root cell has no CPU: {_ENABLE} returns EINVAL",
            f"give the root cell exactly the online CPUs ({format_cpus(online)})",
        )
    present_text = host.read("/sys/devices/system/cpu/present")
    try:
        present = parse_cpus(present_text) if present_text is not None else None
    except ValueError:
        present = None
    left_out = online - cpus
    extra = cpus - online
    absent = extra - present if present is not None else frozenset()
    offline = extra - absent
    problems: list[str] = []
    hints: list[str] = []
    if left_out:
        problems.append(
            f"the root cell leaves out online CPU(s) {format_cpus(left_out)}: "
            f"{_ENABLE} HANGS the machine"
        )
        hints.append(f"add CPU(s) {format_cpus(left_out)} to the root cell")
    if offline:
        problems.append(
            f"root cell CPU(s) {format_cpus(offline)} are offline: {_ENABLE} returns EINVAL"
        )
        hints.append(
            f"bring CPU(s) {format_cpus(offline)} online "
            "(echo 1 > /sys/devices/system/cpu/cpuN/online) or drop them from the root cell"
        )
    if absent:
        problems.append(
            f"this machine has no CPU(s) {format_cpus(absent)}: {_ENABLE} returns EINVAL"
        )
        hints.append(f"drop CPU(s) {format_cpus(absent)} from the root cell")
    if problems:
        hints.append(f"the root cell's CPUs must equal the online CPUs ({format_cpus(online)})")
        return _fail("; ".join(problems), "; ".join(hints))
    return _ok(f"the root cell's CPUs {format_cpus(cpus)} equal the online CPUs")


_PROBES: Final[tuple[tuple[str, Callable[[_Host, SystemConfig | None], _Result]], ...]] = (
    ("architecture", _check_architecture),
    ("device", _check_device),
    ("driver", _check_driver),
    ("enabled", _check_enabled),
    ("firmware", _check_firmware),
    ("virtualization", _check_virtualization),
    ("memory", _check_memory),
    ("memory-size", _check_memory_size),
    ("root-cpus", _check_root_cpus),
)


def validate_host(
    root: str | Path = "/",
    *,
    system: SystemConfig | None = None,
    device: str = "dev/jailhouse",
    arch: Arch | None = None,
) -> list[HostCheck]:
    """Check whether a host can run Jailhouse, and with a system config, run that config.

    Args:
        root: The directory that plays ``/``: every probe reads below it.
        system: The system config to be enabled.  Adds the checks that compare it with
            the host: architecture, hypervisor memory, image sizes, root cell CPUs.
        device: The device node, relative to ``root``.
        arch: The host's architecture.  By default it comes from ``uname`` when ``root``
            is ``/``, else from ``root/proc/cpuinfo``; it is never assumed.

    Returns:
        One :class:`HostCheck` per probe, in the order of the module's table.
    """
    host = _Host(Path(root), arch, device)
    checks: list[HostCheck] = []
    for name, probe in _PROBES:
        try:
            status, detail, hint = probe(host, system)
        except (OSError, ValueError) as exc:
            status, detail = CheckStatus.WARN, f"could not read the host: {exc}"
            hint = "check the paths and permissions named above"
        checks.append(HostCheck(name, status, detail, hint))
    return checks
