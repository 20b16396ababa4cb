"""Domain XML to cell config: :func:`domain_to_cell`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import (
    IVSHMEM_BAR_MASK_INTX,
    IVSHMEM_BAR_MASK_MSIX,
    NAME_MAXLEN,
    PAGE_SIZE,
    Arch,
    ArmPlatform,
    CellConfig,
    CellFlag,
    Console,
    ConsoleFlag,
    ConsoleType,
    MemFlag,
    MemoryRegion,
    PciCapability,
    PciDevice,
    PciType,
    PioRegion,
    ShmemProtocol,
    format_cpus,
)
from jailhouse.domxml._meta import Metadata, format_flags, read_metadata
from jailhouse.domxml._placement import MemoryPool, is_ram, pool_for
from jailhouse.domxml._types import BootSpec, DomainTranslation, TranslationNote
from jailhouse.domxml._xml import (
    MAX_CELL_CPU,
    Where,
    XPath,
    attr_path,
    children,
    numbering,
    parse_cpuset,
    parse_decimal,
    parse_document,
    parse_pci_number,
    parse_scaled,
    path_of,
    scaled_bytes,
    text_of,
)
from jailhouse.errors import ConfigError, TranslationError, _show

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from lxml import etree

    from jailhouse.config.model import SystemConfig

__all__ = [
    "COMM_REGION_VIRT",
    "MAX_MEMORY_KIB",
    "MAX_VCPUS",
    "domain_to_cell",
    "has_console",
    "memory_kib",
    "ram_bytes",
    "vcpu_count",
]

MAX_VCPUS: Final = 0xFFFF
"""libvirt's largest ``<vcpu>`` count (an unsigned short)."""
MAX_MEMORY_KIB: Final = (1 << 53) - 1
"""libvirt's largest ``<memory>`` in KiB."""
COMM_REGION_VIRT: Final = {Arch.X86: 0x100000, Arch.ARM: 0x80000000, Arch.ARM64: 0x80000000}
"""Where the inmate library expects the comm region, per architecture."""
_X86_LOW_RAM: Final = 0x100000
"""x86 layout: RAM at guest 0 up to the comm region (loader, boot parameters, real mode)."""
_X86_HIGH_RAM_VIRT: Final = 0x200000
"""x86 layout: the rest of the RAM starts here, after the comm region."""
_ARM_LOADER_RAM: Final = 0x10000
"""ARM Linux layout: the loader's RAM at guest 0 (not DMA, so not listed to Linux as RAM)."""
_IVSHMEM_MAX_MSIX: Final = 16
_IVSHMEM_DEFAULT_PEERS: Final = 2
_SHMEM_DEFAULT_SIZE: Final = 4 << 20
"""libvirt/QEMU default size of an ivshmem region without ``<size>``."""
_UART_PIO_LENGTH: Final = 8
_UUID: Final = re.compile(r"[0-9a-fA-F]{32}")
_LIBVIRT_ARCHES: Final = {"x86_64": Arch.X86, "aarch64": Arch.ARM64, "armv7l": Arch.ARM}

_RWX: Final = MemFlag.READ | MemFlag.WRITE | MemFlag.EXECUTE
_RAM: Final = "the cell's RAM"
_RAM_FLAGS: Final = _RWX | MemFlag.DMA | MemFlag.LOADABLE
_VCON: Final = int(CellFlag.VIRTUAL_CONSOLE_PERMITTED | CellFlag.VIRTUAL_CONSOLE_ACTIVE)

# Top-level elements and devices a cell has no use for, with the reason given in the note.
_TOP_LEVEL_REASONS: Final = {
    "maxMemory": "memory hot-plug is not supported: a cell's memory is fixed when it is created",
    "memoryBacking": "memory backing options do not apply: cell memory is host RAM reserved "
    "for inmates",
    "numatune": "NUMA memory policy does not apply: cell memory comes from the inmate pool",
    "blkiotune": "I/O tuning does not apply: a cell has no emulated block devices",
    "memtune": "memory tuning does not apply: a cell owns its memory outright",
    "iothreads": "no I/O threads: nothing emulates devices for a cell",
    "iothreadids": "no I/O threads: nothing emulates devices for a cell",
    "resource": "resource partitions do not apply: a cell is not a host process",
    "seclabel": "security labels do not apply: a cell is not a host process",
    "sysinfo": "no firmware tables are built for a cell",
    "idmap": "ID maps apply to containers only",
    "pm": "no power-management states: a cell runs or is shut down",
    "perf": "no host perf events for a cell",
}
_DEVICE_REASONS: Final = {
    "emulator": "no device model runs for a cell",
    "disk": "virtual disks are not supported: assign a storage controller with <hostdev> "
    "or use an ivshmem <shmem> link (virtio-blk)",
    "interface": "virtual network interfaces are not supported: use an ivshmem <shmem> link "
    "(virtual Ethernet) or assign a NIC with <hostdev>",
    "graphics": "no virtual display: assign a graphics device with <hostdev>",
    "video": "no virtual display: assign a graphics device with <hostdev>",
    "memballoon": "no memory balloon: a cell's memory is fixed",
    "iommu": "no virtual IOMMU: DMA isolation comes from the system config's IOMMU units",
    "controller": "controllers are emulated; a cell sees only the PCI devices it is given",
    "memory": "memory hot-plug is not supported: a cell's memory is fixed when it is created",
    "watchdog": "no emulated watchdog",
    "rng": "no emulated random number generator",
    "tpm": "no emulated TPM",
}


@dataclass(slots=True)
class _Shmem:
    """One ``<shmem>`` element, parsed."""

    el: etree._Element
    model: str
    size: int | None
    vectors: int | None
    address: tuple[int, int] | None  # (domain, bdf)


@dataclass(slots=True)
class _Built:
    """Memory regions and PCI devices derived from the standard elements."""

    regions: list[MemoryRegion] = field(default_factory=list)
    devices: list[PciDevice] = field(default_factory=list)
    caps: list[PciCapability] = field(default_factory=list)


def domain_to_cell(
    xml: str | bytes,
    system: SystemConfig,
    *,
    defined: Iterable[CellConfig] = (),
    strict: bool = False,
    pool: Sequence[tuple[int, int]] | None = None,
) -> DomainTranslation:
    """Translate a libvirt domain XML into a cell config for ``system``.

    Args:
        xml: The domain XML.
        system: The system config the cell will run on.
        defined: Cells already defined on the system; the new cell gets none of their CPUs
            or memory and links to their ivshmem devices.
        strict: Turn every note (something ignored or approximated) into an error.
        pool: Host memory reserved for inmates as ``(start, size)`` ranges; by default the
            root-cell RAM region nearest to the hypervisor memory (see
            :mod:`jailhouse.domxml`).

    Returns:
        The cell config, the boot spec and the notes.

    Raises:
        TranslationError: The XML is not a domain, asks for something a cell cannot have,
            or (strict) has anything that would be a note; the error names the element.
    """
    with numbering():  # the translator only reads the tree
        root = parse_document(xml)
        result = _Translator(root, system, tuple(defined), pool).run()
    if strict and result.notes:
        note = result.notes[0]
        raise TranslationError(note.element, note.value, f"{note.reason} (strict mode)")
    return result


def vcpu_count(cpus: frozenset[int]) -> int:
    """Return the ``<vcpu>`` count written for a CPU set (libvirt needs 1 to 65535)."""
    return min(max(len(cpus), 1), MAX_VCPUS)


def ram_bytes(regions: Iterable[MemoryRegion]) -> int:
    """Return the RAM a cell's regions hold (read, write, execute; not IO, comm, shared)."""
    return sum(r.size for r in regions if is_ram(r))


def memory_kib(regions: Iterable[MemoryRegion]) -> int:
    """Return the ``<memory>`` value in KiB written for some regions (libvirt needs > 0)."""
    return min(max(-(-ram_bytes(regions) // 1024), 1), MAX_MEMORY_KIB)


def has_console(flags: CellFlag, console: Console) -> bool:
    """Whether a cell has a console: the hypervisor console or a UART of its own."""
    return bool(int(flags) & _VCON) or console.type != ConsoleType.NONE


def _page_up(value: int) -> int:
    return -(-value // PAGE_SIZE) * PAGE_SIZE


class _Translator:
    """One translation: walks the domain and builds the cell."""

    def __init__(
        self,
        root: etree._Element,
        system: SystemConfig,
        defined: tuple[CellConfig, ...],
        pool: Sequence[tuple[int, int]] | None,
    ) -> None:
        self.root = root
        self.system = system
        self.defined = defined
        self.pool_arg = pool
        self._notes: list[tuple[int, int, TranslationNote]] = []
        self._order: dict[etree._Element, int] | None = None  # built for the first note
        self.devices = root.find("devices")
        self.meta, ignored = read_metadata(root)
        for el, reason in ignored:
            self.note(el, reason)

    # -- helpers ---------------------------------------------------------------------------

    def note(
        self,
        where: etree._Element,
        reason: str,
        value: object = None,
        *,
        attr: str | None = None,
        child: str | None = None,
    ) -> None:
        """Record a note on an element, one of its attributes or a child path under it."""
        path = attr_path(where, attr) if attr is not None else path_of(where)
        if child is not None:
            path = f"{path}/{child}"
        if self._order is None:
            self._order = {el: i for i, el in enumerate(self.root.iter())}
        position = self._order.get(where, len(self._order))
        note = TranslationNote(path, reason, None if value is None else str(value))
        self._notes.append((position, len(self._notes), note))

    @property
    def notes(self) -> tuple[TranslationNote, ...]:
        """The notes so far, in document order."""
        return tuple(note for _, _, note in sorted(self._notes, key=lambda n: n[:2]))

    def device_list(self, tag: str) -> list[etree._Element]:
        if self.devices is None:
            return []
        return [el for el in children(self.devices) if el.tag == tag]

    # -- the whole translation -------------------------------------------------------------

    def run(self) -> DomainTranslation:
        meta = self.meta
        self._sweep()
        name = self._name()
        uuid = self._uuid()
        os_el = self.root.find("os")
        if os_el is None:
            raise TranslationError("/domain/os", None, "a domain needs <os><type>hvm</type></os>")
        arch_flags = self._arch(os_el)
        boot = self._boot(os_el)
        console_wanted = self._console_elements()

        flags = meta.flags
        if flags is None:
            flags = CellFlag.PASSIVE_COMMREG | arch_flags
            if console_wanted:
                flags |= CellFlag.VIRTUAL_CONSOLE_PERMITTED
        elif self.system.arch == Arch.ARM64 and (CellFlag.AARCH32 in flags) != bool(arch_flags):
            raise TranslationError(
                meta.path("flags"),
                format_flags(flags, CellFlag),
                "AARCH32 goes with <os><type arch='armv7l'> (on an arm64 system) and only "
                "with it; the flags and the architecture disagree",
            )

        console = meta.console
        if console is None:
            console = self.system.debug_console if console_wanted else Console()
        if has_console(flags, console) != console_wanted:
            if console_wanted:
                reason = (
                    "the domain has a <console> or <serial>, but the metadata's flags and "
                    "console give the cell none"
                )
            else:
                reason = (
                    "the metadata gives the cell a console, but the domain has no <console> "
                    "or <serial>"
                )
            raise TranslationError("/domain/devices", None, reason)

        cpus = self._cpus()
        if meta.cpu_set_size is not None:
            cpu_set_size = self._meta_cpu_set_size(meta.cpu_set_size, cpus)
        else:
            top = max(cpus, default=0)
            cpu_set_size = max(8, -(-(top + 1) // 64) * 8)

        shmems = self._shmem_elements()
        hostdevs = self._hostdev_elements()
        kib, ram = self._memory_size(meta)
        built = self._memory_and_devices(
            meta,
            boot=boot,
            console=console,
            memory_size=(kib, ram),
            shmems=shmems,
            hostdevs=hostdevs,
        )

        pio = meta.pio_regions
        if pio is None:
            pio = ()
            if (
                self.system.arch == Arch.X86
                and console.type == ConsoleType.UART_8250
                and ConsoleFlag.ACCESS_MMIO not in console.flags
                and console.address + _UART_PIO_LENGTH <= 0x10000
            ):
                pio = (PioRegion(console.address, _UART_PIO_LENGTH),)

        cell = CellConfig(
            name=name,
            arch=self.system.arch,
            cpus=cpus,
            cpu_set_size=cpu_set_size,
            flags=flags,
            mem_regions=tuple(built.regions),
            cache_regions=meta.cache_regions or (),
            irqchips=meta.irqchips or (),
            pio_regions=pio,
            pci_devices=tuple(built.devices),
            pci_caps=tuple(built.caps),
            stream_ids=meta.stream_ids or (),
            vpci_irq_base=meta.vpci_irq_base or 0,
            cpu_reset_address=meta.cpu_reset_address or 0,
            msg_reply_timeout=meta.msg_reply_timeout or 0,
            console=console,
            id=meta.id or 0,
            trailing=meta.trailing or b"",
        )
        self._check_packs(cell)
        self._check(cell)
        return DomainTranslation(config=cell, boot=boot, notes=self.notes, uuid=uuid)

    # -- what is not translated ------------------------------------------------------------

    def _sweep(self) -> None:
        """Note every element a cell has no use for."""
        handled = {"name", "uuid", "title", "description", "metadata", "genid"}
        handled |= {"memory", "currentMemory", "vcpu", "vcpus", "cputune", "os", "devices"}
        for el in children(self.root):
            tag = el.tag
            if tag in handled:
                continue
            if tag == "clock":
                if el.get("offset", "utc") != "utc" or len(el):
                    self.note(el, "the cell keeps the host's clock; clock settings are ignored")
            elif tag in ("on_poweroff", "on_reboot", "on_crash"):
                default = "restart" if tag == "on_reboot" else "destroy"
                if text_of(el).strip() != default:
                    self.note(
                        el,
                        "lifecycle actions other than libvirt's defaults are not honoured: "
                        "a stopped cell stays shut down",
                        text_of(el).strip(),
                    )
            elif tag == "features":
                self._features(el)
            elif tag == "cpu":
                if el.get("mode") != "host-passthrough" or len(el):
                    self.note(el, "CPU model and topology are ignored: a cell runs on host CPUs")
            else:
                reason = _TOP_LEVEL_REASONS.get(tag, "not supported by Jailhouse cells; ignored")
                self.note(el, reason)
        cputune = self.root.find("cputune")
        for el in children(cputune) if cputune is not None else ():
            if el.tag == "vcpupin":
                continue
            if el.tag == "emulatorpin":
                self.note(el, "no emulator thread runs for a cell")
            elif el.tag == "cachetune":
                self.note(el, "cache allocation: use <jailhouse:cache-regions> (Intel CAT)")
            else:
                self.note(el, "CPU scheduling tuning does not apply: a cell owns its CPUs")
        if self.devices is not None:
            for el in children(self.devices):
                tag = el.tag
                if tag in ("console", "serial", "shmem", "hostdev"):
                    continue
                if tag == "memballoon" and el.get("model") == "none":
                    continue
                reason = _DEVICE_REASONS.get(
                    tag, "emulated devices are not supported by Jailhouse cells; ignored"
                )
                self.note(el, reason)

    def _features(self, el: etree._Element) -> None:
        info = self.system.platform.arch_info
        for feature in children(el):
            tag = feature.tag
            if self.system.arch == Arch.X86 and tag in ("apic", "pae"):
                continue
            if tag == "gic" and isinstance(info, ArmPlatform):
                version = feature.get("version")
                if version is None or version == str(info.gic_version):
                    continue
                self.note(
                    feature,
                    f"the system's GIC is version {info.gic_version}; the cell gets that one",
                    version,
                )
                continue
            self.note(feature, "hypervisor features are not configurable for a cell; ignored")

    # -- identity --------------------------------------------------------------------------

    def _name(self) -> str:
        el = self.root.find("name")
        where: Where
        if self.meta.name is not None:
            name = self.meta.name
            where = self.meta.path("name")
        else:
            if el is None:
                raise TranslationError("/domain/name", None, "a domain needs a <name>")
            name = text_of(el)
            where = XPath(el)
            raw = name.encode("utf-8", "surrogatepass")
            if not name:
                raise TranslationError(str(where), name, "the cell name must not be empty")
            if not all(0x20 <= b < 0x7F for b in raw):
                raise TranslationError(
                    str(where),
                    name,
                    "a cell name must be printable ASCII (the driver stores bytes)",
                )
            if len(raw) > NAME_MAXLEN:
                raise TranslationError(
                    str(where),
                    name,
                    f"a cell name is at most {NAME_MAXLEN} bytes; this one has {len(raw)}",
                )
            if "/" in name:
                raise TranslationError(str(where), name, "libvirt forbids '/' in domain names")
        taken = {self.system.root_cell.name: "the root cell"}
        taken.update({c.name: f"cell {c.name!r}" for c in self.defined})
        if name in taken:
            raise TranslationError(
                str(where), name, f"{taken[name]} has this name already; cell names are unique"
            )
        return name

    def _uuid(self) -> str | None:
        el = self.root.find("uuid")
        if el is None:
            return None
        text = text_of(el).strip()
        digits = text.replace("-", "")
        if not _UUID.fullmatch(digits):
            raise TranslationError(path_of(el), text, "not a UUID (32 hex digits)")
        d = digits.lower()
        return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:]}"

    def _arch(self, os_el: etree._Element) -> CellFlag:
        """Check the domain's architecture against the system's; return AARCH32 if needed."""
        type_el = os_el.find("type")
        if type_el is None:
            raise TranslationError(
                path_of(os_el) + "/type", None, "a domain needs <os><type>hvm</type></os>"
            )
        os_type = text_of(type_el).strip()
        if os_type != "hvm":
            raise TranslationError(
                path_of(type_el),
                os_type,
                "a cell runs a whole machine's software: only the 'hvm' OS type fits",
            )
        if type_el.get("machine") is not None:
            self.note(
                type_el,
                "machine types do not apply: the cell sees the host's real hardware",
                type_el.get("machine"),
                attr="machine",
            )
        system_arch = self.system.arch
        if self.meta.arch is not None and self.meta.arch != int(system_arch):
            raise TranslationError(
                self.meta.path("arch"),
                self.meta.arch,
                f"the system is {system_arch.name} ({int(system_arch)})",
            )
        name = type_el.get("arch")
        if name is None:
            return CellFlag(0)
        where = XPath(type_el, "arch")
        if system_arch == Arch.ARM64 and name == "armv7l":
            return CellFlag.AARCH32
        if system_arch == Arch.X86 and name == "i686":
            self.note(type_el, "a 32-bit guest runs in an x86-64 cell", name, attr="arch")
            return CellFlag(0)
        if _LIBVIRT_ARCHES.get(name) != system_arch:
            want = system_arch.libvirt_name if system_arch.known else "(none)"
            raise TranslationError(
                str(where), name, f"the system is {system_arch.name}: the domain must say {want}"
            )
        return CellFlag(0)

    # -- boot --------------------------------------------------------------------------------

    def _boot(self, os_el: etree._Element) -> BootSpec:
        if os_el.get("firmware") is not None:
            self.note(
                os_el,
                "no firmware runs in a cell: it starts at its reset address",
                os_el.get("firmware"),
                attr="firmware",
            )
        values: dict[str, str] = {}
        boots = 0
        for el in children(os_el):
            tag = el.tag
            if tag == "type":
                continue
            if tag in ("kernel", "initrd", "cmdline", "dtb"):
                values[tag] = text_of(el)
            elif tag == "boot":
                boots += 1
                if el.get("dev") != "hd" or boots > 1:
                    self.note(el, "boot devices do not apply: a cell boots what is loaded")
            else:
                self.note(el, "firmware and boot-menu settings do not apply to a cell")
        images = self.meta.images
        if images is not None and values:
            raise TranslationError(
                self.meta.path("boot"),
                None,
                "give either <os><kernel> (Linux) or <jailhouse:boot> images, not both",
            )
        if images is not None:
            return BootSpec(images=images)
        if not values:
            return BootSpec()
        kernel = values.get("kernel")
        if kernel is None:
            raise TranslationError(
                "/domain/os/kernel",
                None,
                "<initrd>, <cmdline> and <dtb> need a <kernel> to boot",
            )
        if self.system.arch in (Arch.ARM, Arch.ARM64) and "dtb" not in values:
            self.note(
                os_el,
                "no <dtb>: the Linux boot generates the device tree from the cell and "
                "system configs (upstream's `jailhouse cell linux` refuses to start without one)",
            )
        return BootSpec(
            kernel=kernel,
            initrd=values.get("initrd"),
            cmdline=values.get("cmdline"),
            dtb=values.get("dtb"),
        )

    # -- CPUs --------------------------------------------------------------------------------

    def _cpus(self) -> frozenset[int]:
        vcpu = self.root.find("vcpu")
        count = 1
        cpuset: frozenset[int] | None = None
        if vcpu is not None:
            where = XPath(vcpu)
            count = parse_decimal(text_of(vcpu), where, limit=MAX_VCPUS)
            if count == 0:
                raise TranslationError(str(where), "0", "a domain needs at least one vCPU")
            placement = vcpu.get("placement", "static")
            if placement == "auto":
                raise TranslationError(
                    attr_path(vcpu, "placement"),
                    placement,
                    "automatic (numad) placement is not possible: a cell owns fixed CPUs; "
                    "use placement='static' and a cpuset or <vcpupin>",
                )
            if placement != "static":
                raise TranslationError(
                    attr_path(vcpu, "placement"), placement, "expected 'static' or 'auto'"
                )
            current = vcpu.get("current")
            if current is not None:
                n = parse_decimal(current, XPath(vcpu, "current"), limit=MAX_VCPUS)
                if n != count:
                    raise TranslationError(
                        attr_path(vcpu, "current"),
                        current,
                        f"vCPU hot-plug is not possible: a cell has all its {count} CPUs "
                        "from the start; drop 'current' or make it equal",
                    )
            text = vcpu.get("cpuset")
            if text is not None:
                cpuset = parse_cpuset(text, XPath(vcpu, "cpuset"))
        self._vcpus_element(count)
        pins = self._pins(count)

        explicit = self.meta.cpus
        if explicit is not None:
            return self._check_explicit_cpus(explicit, count, cpuset, pins)
        return self._pick_cpus(count, cpuset, pins)

    def _vcpus_element(self, count: int) -> None:
        vcpus = self.root.find("vcpus")
        if vcpus is None:
            return
        for el in children(vcpus):
            if el.get("enabled") == "no":
                raise TranslationError(
                    attr_path(el, "enabled"),
                    "no",
                    f"vCPU hot-plug is not possible: all {count} CPUs of a cell run from the start",
                )
        if any(el.get("hotpluggable") == "yes" for el in children(vcpus)):
            self.note(vcpus, "vCPU hot-plug is not possible; the vCPUs are fixed")

    def _pins(self, count: int) -> dict[int, tuple[int, etree._Element]]:
        pins: dict[int, tuple[int, etree._Element]] = {}
        cputune = self.root.find("cputune")
        if cputune is None:
            return pins
        for el in cputune.findall("vcpupin"):
            vcpu_text = el.get("vcpu")
            cpuset_text = el.get("cpuset")
            if vcpu_text is None or cpuset_text is None:
                raise TranslationError(path_of(el), None, "<vcpupin> needs vcpu and cpuset")
            vcpu = parse_decimal(vcpu_text, XPath(el, "vcpu"))
            host = parse_cpuset(cpuset_text, XPath(el, "cpuset"))
            if vcpu >= count:
                self.note(el, f"the domain has only {count} vCPU(s); the pin is ignored", vcpu)
                continue
            if vcpu in pins:
                raise TranslationError(
                    attr_path(el, "vcpu"), vcpu_text, "a second <vcpupin> for the same vCPU"
                )
            if len(host) != 1:
                raise TranslationError(
                    attr_path(el, "cpuset"),
                    cpuset_text,
                    "each vCPU is one host CPU in a cell: pin it to exactly one CPU",
                )
            pins[vcpu] = (next(iter(host)), el)
        return pins

    def _check_explicit_cpus(
        self,
        cpus: frozenset[int],
        count: int,
        cpuset: frozenset[int] | None,
        pins: dict[int, tuple[int, etree._Element]],
    ) -> frozenset[int]:
        where = self.meta.where("cpus")  # a path is built only to raise
        if count != vcpu_count(cpus):
            raise TranslationError(
                "/domain/vcpu",
                count,
                f"<jailhouse:cpus> lists {len(cpus)} CPU(s) ({format_cpus(cpus) or 'none'}); "
                "the vCPU count must match",
            )
        if cpuset is not None and not cpus <= cpuset:
            raise TranslationError(
                "/domain/vcpu/@cpuset",
                format_cpus(cpuset),
                f"does not contain the CPUs of {where} ({format_cpus(cpus)})",
            )
        seen: set[int] = set()
        for cpu, el in pins.values():
            if cpu not in cpus or cpu in seen:
                raise TranslationError(
                    attr_path(el, "cpuset"),
                    str(cpu),
                    f"pins must map the vCPUs 1:1 onto the CPUs of {where} "
                    f"({format_cpus(cpus) or 'none'})",
                )
            seen.add(cpu)
        return cpus

    def _pick_cpus(
        self,
        count: int,
        cpuset: frozenset[int] | None,
        pins: dict[int, tuple[int, etree._Element]],
    ) -> frozenset[int]:
        root = self.system.root_cell.cpus
        owner = {cpu: cell.name for cell in self.defined for cpu in cell.cpus}
        x86 = self.system.arch == Arch.X86
        chosen: set[int] = set()
        for _, (cpu, el) in sorted(pins.items()):
            where = XPath(el, "cpuset")
            if cpu not in root:
                raise TranslationError(
                    str(where),
                    str(cpu),
                    f"host CPU {cpu} is not in the root cell's CPU set "
                    f"({format_cpus(root) or 'empty'})",
                )
            if cpu in owner:
                raise TranslationError(
                    str(where), str(cpu), f"host CPU {cpu} belongs to cell {owner[cpu]!r}"
                )
            if x86 and cpu == 0:
                raise TranslationError(str(where), "0", "CPU 0 cannot leave the root cell on x86")
            if cpu in chosen:
                raise TranslationError(
                    str(where),
                    str(cpu),
                    f"two vCPUs are pinned to host CPU {cpu}; pins must be 1:1",
                )
            chosen.add(cpu)
        free_root = root - owner.keys()
        missing = count - len(pins)
        if missing:
            candidates = sorted(free_root - chosen - ({0} if x86 else set()), reverse=True)
            if cpuset is not None:
                candidates = [cpu for cpu in candidates if cpu in cpuset]
            # never take the root cell's last CPU
            room = min(len(candidates), len(free_root - chosen) - 1)
            if room < missing:
                taken = ", ".join(
                    f"{format_cpus(frozenset(c for c, n in owner.items() if n == name))} "
                    f"by {name!r}"
                    for name in sorted(set(owner.values()))
                )
                raise TranslationError(
                    "/domain/vcpu",
                    count,
                    f"not enough free CPUs for {count} vCPU(s): the root cell has "
                    f"{format_cpus(root) or 'none'}"
                    + (f", taken: {taken}" if taken else "")
                    + (", CPU 0 stays with the root cell on x86" if x86 else "")
                    + (f", the cpuset allows {format_cpus(cpuset)}" if cpuset is not None else "")
                    + "; the root cell keeps at least one CPU",
                )
            chosen.update(candidates[:missing])
        if not free_root - chosen:
            raise TranslationError(
                "/domain/cputune",
                format_cpus(frozenset(chosen)),
                "the pins take the root cell's last CPU; it must keep at least one",
            )
        return frozenset(chosen)

    # -- console -----------------------------------------------------------------------------

    def _console_elements(self) -> bool:
        elements = self.device_list("console") + self.device_list("serial")
        first_console = next((el for el in elements if el.tag == "console"), None)
        first_serial = next((el for el in elements if el.tag == "serial"), None)
        for el in elements:
            if el is not first_console and el is not first_serial:
                self.note(el, "a cell has one console; this one is ignored")
                continue
            backend = el.get("type", "pty")
            if backend != "pty":
                self.note(
                    el,
                    "the cell's console is its UART and the hypervisor console "
                    "(`jhctl console`); the host-side backend is ignored",
                    backend,
                    attr="type",
                )
            target = el.find("target")
            if target is None:
                continue
            kind = target.get("type")
            if el.tag == "console" and kind not in (None, "serial"):
                self.note(
                    target,
                    "only a serial console exists; approximated by the cell's UART",
                    kind,
                    attr="type",
                )
            port = target.get("port", "0")
            if port != "0":
                self.note(target, "the cell's console is its first port", port, attr="port")
        return bool(elements)

    # -- memory ------------------------------------------------------------------------------

    def _memory_size(self, meta: Metadata) -> tuple[int, int]:
        """Return the memory the domain asks for: in KiB, and in bytes rounded to pages.

        As libvirt: ``<memory>`` in any unit, rounded up to KiB; when it is missing or 0,
        the total of the guest NUMA cells.
        """
        el = self.root.find("memory")
        kib = 0 if el is None else -(-parse_scaled(el, default_unit=1024) // 1024)
        source = el
        if kib == 0:
            kib, source = self._numa_kib()
        if kib == 0 or source is None:
            raise TranslationError(
                "/domain/memory",
                None if el is None else text_of(el),
                "a domain needs a memory size: <memory> above 0, or NUMA cells with memory",
            )
        if kib > MAX_MEMORY_KIB:
            raise TranslationError(
                path_of(source), kib, f"larger than libvirt's limit of {MAX_MEMORY_KIB} KiB"
            )
        current = self.root.find("currentMemory")
        if current is not None:
            cur = -(-parse_scaled(current, default_unit=1024) // 1024)
            if cur < kib:
                self.note(
                    current,
                    "no balloon: the cell gets all of <memory> from the start",
                    text_of(current),
                )
        size = kib * 1024
        if meta.mem_regions is None and size % PAGE_SIZE:
            self.note(
                source,
                f"rounded up to whole 4 KiB pages ({_page_up(size) // 1024} KiB)",
                f"{kib} KiB",
            )
        return kib, _page_up(size)

    def _numa_kib(self) -> tuple[int, etree._Element | None]:
        """Return the KiB total of the guest NUMA cells and the ``<numa>`` element."""
        numa = self.root.find("cpu/numa")
        if numa is None:
            return 0, None
        total = 0
        for cell in numa.findall("cell"):
            memory = cell.get("memory")
            if memory is None:
                continue
            size = scaled_bytes(
                memory,
                cell.get("unit"),
                where=XPath(cell, "memory"),
                unit_where=XPath(cell, "unit"),
                default_unit=1024,
            )
            total += -(-size // 1024)
        return total, numa

    def _memory_and_devices(
        self,
        meta: Metadata,
        *,
        boot: BootSpec,
        console: Console,
        memory_size: tuple[int, int],
        shmems: list[_Shmem],
        hostdevs: list[tuple[etree._Element, int, int]],
    ) -> _Built:
        built = _Built()
        explicit_mem = meta.mem_regions
        explicit_pci = meta.pci_devices
        if explicit_pci is not None:
            self._check_explicit_pci(explicit_pci, shmems, hostdevs)
            built.devices = list(explicit_pci)
            built.caps = list(meta.pci_caps or ())
            if explicit_mem is None and any(d.type == PciType.IVSHMEM for d in explicit_pci):
                raise TranslationError(
                    meta.path("pci-devices"),
                    None,
                    "ivshmem devices given in the metadata point into the memory regions; "
                    "give <jailhouse:memory-regions> too",
                )
        if explicit_mem is not None:
            if shmems and explicit_pci is None:
                raise TranslationError(
                    path_of(shmems[0].el),
                    None,
                    "with <jailhouse:memory-regions> the ivshmem regions are explicit; give "
                    "<jailhouse:pci-devices> for the <shmem> devices too",
                )
            built.regions = list(explicit_mem)
            want = memory_kib(built.regions)
            if memory_size[0] != want:
                raise TranslationError(
                    "/domain/memory",
                    memory_size[0],
                    f"the RAM regions of <jailhouse:memory-regions> hold {want} KiB; "
                    "<memory> must say the same",
                )
            if explicit_pci is None:
                self._hostdevs(hostdevs, built, note_memory=False)
            return built

        memory = pool_for(self.system, self.defined, self.pool_arg)
        size = memory_size[1]
        base = self._allocate(memory, size, self.root.find("memory"), _RAM)
        if explicit_pci is None:
            self._shmem_devices(shmems, memory, built)
            self._hostdevs(hostdevs, built, note_memory=True)
        self._console_region(console, built)
        self._ram_layout(base, size, boot, built)
        return built

    def _allocate(
        self, memory: MemoryPool, size: int, where: etree._Element | None, what: str
    ) -> int:
        start = memory.allocate(size)
        if start is None:
            raise TranslationError(
                "/domain/memory" if where is None else path_of(where),
                None if where is None else where.get("name", text_of(where)),
                f"no room for {what} ({size // 1024} KiB) in the inmate pool, "
                f"{memory.source}: the largest free block is {memory.largest() // 1024} KiB; "
                f"{'lower <memory>, ' if what == _RAM else ''}pass pool= or give "
                "<jailhouse:memory-regions>",
            )
        return start

    def _ram_layout(self, base: int, size: int, boot: BootSpec, built: _Built) -> None:
        """Lay the RAM block at host ``base`` out as the architecture's boot code expects."""
        arch = self.system.arch
        where = "/domain/memory"
        comm = MemoryRegion(0, COMM_REGION_VIRT.get(arch, 0x80000000), PAGE_SIZE,
                            MemFlag.READ | MemFlag.WRITE | MemFlag.COMM_REGION)  # fmt: skip
        first = len(built.regions)
        grows: MemoryRegion | None
        if arch == Arch.X86:
            low = min(size, _X86_LOW_RAM)
            grows = MemoryRegion(base, 0, low, _RAM_FLAGS)
            built.regions += [grows, comm]
            if size > low:
                grows = MemoryRegion(base + low, _X86_HIGH_RAM_VIRT, size - low, _RAM_FLAGS)
                built.regions.append(grows)
            self._check_guest_room(built.regions, first, grows=grows, hint="")
            return
        if boot.is_linux:
            if size <= _ARM_LOADER_RAM:
                raise TranslationError(
                    where,
                    size // 1024,
                    f"a Linux cell needs more than the {_ARM_LOADER_RAM // 1024} KiB its "
                    "loader takes",
                )
            main = size - _ARM_LOADER_RAM
            built.regions.append(
                MemoryRegion(base + main, 0, _ARM_LOADER_RAM, _RWX | MemFlag.LOADABLE)
            )
            built.regions.append(MemoryRegion(base, base, main, _RAM_FLAGS))
            grows = None  # mapped 1:1: where it lands depends on the pool, not its size
        else:
            built.regions.append(MemoryRegion(base, 0, size, _RAM_FLAGS))
            grows = built.regions[-1]
        built.regions.append(comm)
        hint = ", or boot a Linux <kernel> (its RAM is mapped 1:1)"
        self._check_guest_room(built.regions, first, grows=grows, hint=hint)

    def _check_guest_room(
        self,
        regions: Sequence[MemoryRegion],
        first: int,
        *,
        grows: MemoryRegion | None,
        hint: str,
    ) -> None:
        """Refuse a region of the RAM layout (``regions[first:]``) over another one's guest range.

        When ``grows`` (the RAM that starts at a fixed guest address and grows with
        ``<memory>``) runs into something above its start, the error says how much fits;
        otherwise the memory has to be placed elsewhere.

        Raises:
            TranslationError: At ``/domain/memory``, naming what is in the way.
        """
        for region in regions[first:]:
            for other in regions:
                if other is region or not (
                    region.size
                    and other.size
                    and other.virt_start < region.virt_end
                    and region.virt_start < other.virt_end
                ):
                    continue
                if region is grows and other.virt_start > region.virt_start:
                    overflow = region.virt_end - other.virt_start
                    fits = ram_bytes(regions[first:]) - overflow
                    advice = f"at most {fits // 1024} KiB fit: lower <memory>{hint}"
                else:
                    advice = "pass pool= to place the cell's memory elsewhere"
                memory = self.root.find("memory")
                raise TranslationError(
                    "/domain/memory",
                    None if memory is None else text_of(memory),
                    f"{_guest_name(region)} at guest {region.virt_start:#x}-"
                    f"{region.virt_end - 1:#x} would cover {_guest_name(other)} at "
                    f"{other.virt_start:#x}; {advice}",
                )

    def _console_region(self, console: Console, built: _Built) -> None:
        if console.type == ConsoleType.NONE or ConsoleFlag.ACCESS_MMIO not in console.flags:
            return
        start = console.address // PAGE_SIZE * PAGE_SIZE
        end = _page_up(console.address + max(console.size, 1))
        built.regions.append(
            MemoryRegion(
                start,
                start,
                end - start,
                MemFlag.READ | MemFlag.WRITE | MemFlag.IO | MemFlag.ROOTSHARED,
            )
        )

    # -- PCI ---------------------------------------------------------------------------------

    def _hostdev_elements(self) -> list[tuple[etree._Element, int, int]]:
        out: list[tuple[etree._Element, int, int]] = []
        seen: dict[tuple[int, int], etree._Element] = {}
        for el in self.device_list("hostdev"):
            mode = el.get("mode", "subsystem")
            kind = el.get("type")
            if mode != "subsystem" or kind != "pci":
                self.note(el, "only PCI host devices can be assigned to a cell", kind or mode)
                continue
            address = el.find("source/address")
            if address is None:
                raise TranslationError(
                    path_of(el) + "/source", None, "a PCI <hostdev> needs <source><address>"
                )
            domain, bdf = self._pci_address(address)
            if (domain, bdf) in seen:
                raise TranslationError(
                    path_of(address), _bdf_text(domain, bdf), "the device is assigned twice"
                )
            seen[domain, bdf] = el
            guest = el.find("address")
            if guest is not None:
                self.note(guest, "the device keeps its host address in the cell")
            out.append((el, domain, bdf))
        return out

    def _pci_address(self, el: etree._Element) -> tuple[int, int]:
        kind = el.get("type")
        if kind not in (None, "pci"):
            raise TranslationError(attr_path(el, "type"), kind, "expected a PCI address")
        domain = parse_pci_number(el.get("domain", "0"), XPath(el, "domain"), limit=0xFFFF)
        bus = parse_pci_number(el.get("bus", "0"), XPath(el, "bus"), limit=0xFF)
        slot = parse_pci_number(el.get("slot", "0"), XPath(el, "slot"), limit=0x1F)
        function = parse_pci_number(el.get("function", "0"), XPath(el, "function"), limit=7)
        return domain, bus << 8 | slot << 3 | function

    def _hostdevs(
        self,
        hostdevs: list[tuple[etree._Element, int, int]],
        built: _Built,
        *,
        note_memory: bool,
    ) -> None:
        root = self.system.root_cell
        owners = {
            (d.domain, d.bdf): cell.name
            for cell in self.defined
            for d in cell.pci_devices
            if d.type != PciType.IVSHMEM
        }
        irq_given = self.meta.irqchips is not None
        for el, domain, bdf in hostdevs:
            where = path_of(el) + "/source/address"
            text = _bdf_text(domain, bdf)
            device = next(
                (d for d in root.pci_devices if d.domain == domain and d.bdf == bdf), None
            )
            if device is None:
                known = ", ".join(
                    _bdf_text(d.domain, d.bdf)
                    for d in root.pci_devices
                    if d.type != PciType.IVSHMEM
                )
                raise TranslationError(
                    where,
                    text,
                    "not a PCI device of the system config; "
                    + (
                        f"the root cell can give {known}: pick one or remove the <hostdev>"
                        if known
                        else "the root cell has no physical PCI device: remove the <hostdev>"
                    ),
                )
            if device.type == PciType.IVSHMEM:
                raise TranslationError(
                    where, text, "a virtual ivshmem device; connect to it with <shmem>"
                )
            if (domain, bdf) in owners:
                raise TranslationError(
                    where, text, f"already assigned to cell {owners[domain, bdf]!r}"
                )
            caps = root.pci_caps[device.caps_start : device.caps_start + device.num_caps]
            start = len(built.caps) if caps else 0
            built.caps.extend(caps)
            built.devices.append(replace(device, caps_start=start, num_caps=len(caps)))
            if note_memory:
                self.note(
                    el,
                    f"the system config does not say which MMIO ranges the BARs of {text} "
                    "use; add them to <jailhouse:memory-regions>",
                )
            if not irq_given:
                if self.system.arch != Arch.X86:
                    self.note(
                        el,
                        f"grant the interrupts of {text} in <jailhouse:irqchips> (GIC SPIs)",
                    )
                elif not device.num_msi_vectors and not device.num_msix_vectors:
                    self.note(
                        el,
                        f"{text} has no MSI or MSI-X: grant its IOAPIC pin in <jailhouse:irqchips>",
                    )

    def _shmem_elements(self) -> list[_Shmem]:
        out: list[_Shmem] = []
        for el in self.device_list("shmem"):
            if not el.get("name"):
                raise TranslationError(
                    attr_path(el, "name"), None, "a <shmem> needs a name attribute"
                )
            model_el = el.find("model")
            model = "ivshmem" if model_el is None else model_el.get("type", "ivshmem")
            if model not in ("ivshmem", "ivshmem-plain", "ivshmem-doorbell"):
                raise TranslationError(
                    attr_path(model_el, "type") if model_el is not None else path_of(el),
                    model,
                    "expected ivshmem, ivshmem-plain or ivshmem-doorbell",
                )
            size_el = el.find("size")
            size = None if size_el is None else parse_scaled(size_el, default_unit=1)
            vectors: int | None = None
            msi = el.find("msi")
            if msi is not None:
                if msi.get("vectors") is not None:
                    vectors = parse_decimal(msi.get("vectors", ""), XPath(msi, "vectors"))
                if msi.get("ioeventfd") is not None:
                    self.note(msi, "no ioeventfd: no host process", attr="ioeventfd")
            server = el.find("server")
            if server is not None and server.get("path") is not None:
                self.note(
                    server,
                    "no ivshmem server: the hypervisor rings the doorbells",
                    server.get("path"),
                )
            if el.get("role") is not None:
                self.note(el, "migration roles do not apply", el.get("role"), attr="role")
            address_el = el.find("address")
            address = None
            if address_el is not None and set(address_el.attrib) - {"type"}:
                address = self._pci_address(address_el)  # libvirt drops "unassigned" ones
            out.append(_Shmem(el, model, size, vectors, address))
        return out

    def _shmem_devices(self, shmems: list[_Shmem], memory: MemoryPool, built: _Built) -> None:
        cells = (self.system.root_cell, *self.defined)
        used_bdfs = {d.bdf for c in cells for d in c.pci_devices}
        for shmem in shmems:
            peers = (
                [
                    (c, d)
                    for c in cells
                    for d in c.pci_devices
                    if d.type == PciType.IVSHMEM and d.bdf == shmem.address[1]
                ]
                if shmem.address is not None
                else []
            )
            if peers:
                self._join_link(shmem, peers, built)
            else:
                self._new_link(shmem, memory, built, used_bdfs)
            used_bdfs.add(built.devices[-1].bdf)

    def _join_link(
        self, shmem: _Shmem, peers: list[tuple[CellConfig, PciDevice]], built: _Built
    ) -> None:
        where = path_of(shmem.el)
        ref_cell, ref = peers[0]
        n = ref.shmem_peers
        group = ref_cell.mem_regions[ref.shmem_regions_start : ref.shmem_regions_start + 2 + n]
        text = _bdf_text(ref.domain, ref.bdf)
        if len(group) != 2 + n:
            raise TranslationError(
                where,
                text,
                f"cell {ref_cell.name!r} declares the ivshmem link at {text} with regions "
                "it does not have",
            )
        taken = {d.shmem_dev_id for _, d in peers}
        free = [i for i in range(n) if i not in taken]
        if not free:
            raise TranslationError(
                where, text, f"all {n} peers of the ivshmem link at {text} are taken"
            )
        dev_id = free[0]
        start = len(built.regions)
        for pos, region in enumerate(group):
            if not region.size:
                built.regions.append(MemoryRegion(0, 0, 0))
                continue
            flags = MemFlag.READ | MemFlag.ROOTSHARED
            if pos == 1 or pos == 2 + dev_id:
                flags |= MemFlag.WRITE
            built.regions.append(
                MemoryRegion(region.phys_start, region.phys_start, region.size, flags)
            )
        protocol = ref.shmem_protocol
        if protocol >= ShmemProtocol.VIRTIO_BACK:
            protocol -= ShmemProtocol.VIRTIO_BACK - ShmemProtocol.VIRTIO_FRONT
        elif protocol >= ShmemProtocol.VIRTIO_FRONT:
            protocol += ShmemProtocol.VIRTIO_BACK - ShmemProtocol.VIRTIO_FRONT
        domain = shmem.address[0] if shmem.address is not None else ref.domain
        built.devices.append(
            PciDevice(
                type=PciType.IVSHMEM,
                domain=domain,
                bdf=ref.bdf,
                bar_mask=ref.bar_mask,
                num_msix_vectors=ref.num_msix_vectors,
                shmem_regions_start=start,
                shmem_dev_id=dev_id,
                shmem_peers=n,
                shmem_protocol=protocol,
            )
        )
        rw = group[1].size
        if shmem.size is not None and _page_up(shmem.size) != rw:
            self.note(
                shmem.el,
                f"the link at {text} has a {rw // 1024} KiB read/write section; that is used",
                shmem.size,
                child="size",
            )
        doorbell = shmem.model == "ivshmem-doorbell"
        if doorbell != bool(ref.num_msix_vectors) or (
            shmem.vectors is not None and shmem.vectors != ref.num_msix_vectors
        ):
            self.note(
                shmem.el,
                f"the link at {text} uses {ref.num_msix_vectors} MSI-X vector(s); that is used",
                shmem.model,
            )

    def _new_link(
        self, shmem: _Shmem, memory: MemoryPool, built: _Built, used_bdfs: set[int]
    ) -> None:
        where = path_of(shmem.el)
        if shmem.address is not None:
            domain, bdf = shmem.address
        else:
            domain = self.system.platform.pci_domain
            free = [slot << 3 for slot in range(32) if slot << 3 not in used_bdfs]
            if not free:
                raise TranslationError(where, None, "no free PCI slot on bus 0 for ivshmem")
            bdf = free[0]
        doorbell = shmem.model == "ivshmem-doorbell"
        vectors = 0
        if doorbell:
            vectors = 1 if shmem.vectors is None else shmem.vectors
            if not 1 <= vectors <= _IVSHMEM_MAX_MSIX:
                raise TranslationError(
                    path_of(shmem.el) + "/msi/@vectors",
                    vectors,
                    f"ivshmem offers 1 to {_IVSHMEM_MAX_MSIX} MSI-X vectors",
                )
        elif shmem.vectors is not None:
            self.note(shmem.el, "interrupts need ivshmem-doorbell", child="msi")
        rw = shmem.size if shmem.size is not None else (0 if doorbell else _SHMEM_DEFAULT_SIZE)
        if rw % PAGE_SIZE:
            self.note(
                shmem.el,
                f"rounded up to whole 4 KiB pages ({_page_up(rw)} bytes)",
                rw,
                child="size",
            )
            rw = _page_up(rw)
        what = f"the ivshmem link {_show(shmem.el.get('name'))}"
        base = self._allocate(memory, PAGE_SIZE + rw, shmem.el, what)
        start = len(built.regions)
        shared = MemFlag.READ | MemFlag.ROOTSHARED
        built.regions.append(MemoryRegion(base, base, PAGE_SIZE, shared))
        if rw:
            built.regions.append(
                MemoryRegion(base + PAGE_SIZE, base + PAGE_SIZE, rw, shared | MemFlag.WRITE)
            )
        else:
            built.regions.append(MemoryRegion(0, 0, 0))
        built.regions.extend(MemoryRegion(0, 0, 0) for _ in range(_IVSHMEM_DEFAULT_PEERS))
        built.devices.append(
            PciDevice(
                type=PciType.IVSHMEM,
                domain=domain,
                bdf=bdf,
                bar_mask=IVSHMEM_BAR_MASK_MSIX if vectors else IVSHMEM_BAR_MASK_INTX,
                num_msix_vectors=vectors,
                shmem_regions_start=start,
                shmem_dev_id=0,
                shmem_peers=_IVSHMEM_DEFAULT_PEERS,
                shmem_protocol=ShmemProtocol.UNDEFINED,
            )
        )
        if doorbell and self.system.arch != Arch.X86 and self.meta.irqchips is None:
            self.note(
                shmem.el,
                "ivshmem interrupts arrive on GIC SPIs: set vpci-irq-base and grant them in "
                "<jailhouse:irqchips>",
            )

    def _check_explicit_pci(
        self,
        devices: Sequence[PciDevice],
        shmems: list[_Shmem],
        hostdevs: list[tuple[etree._Element, int, int]],
    ) -> None:
        where = self.meta.where("pci-devices")  # a path is built only to raise
        physical = {(d.domain, d.bdf) for d in devices if d.type != PciType.IVSHMEM}
        listed = {(domain, bdf) for _, domain, bdf in hostdevs}
        for el, domain, bdf in hostdevs:
            if (domain, bdf) not in physical:
                raise TranslationError(
                    path_of(el),
                    _bdf_text(domain, bdf),
                    f"no such device in {where}; the metadata and <hostdev> must agree",
                )
        for domain, bdf in sorted(physical - listed):
            raise TranslationError(
                "/domain/devices",
                _bdf_text(domain, bdf),
                f"{where} lists this device but there is no <hostdev> for it",
            )
        ivshmem = [d for d in devices if d.type == PciType.IVSHMEM]
        if len(ivshmem) != len(shmems):
            raise TranslationError(
                "/domain/devices",
                len(shmems),
                f"{where} lists {len(ivshmem)} ivshmem device(s); the domain must have as "
                "many <shmem> elements",
            )
        bdfs = {d.bdf for d in ivshmem}
        for shmem in shmems:
            if shmem.address is not None and shmem.address[1] not in bdfs:
                raise TranslationError(
                    path_of(shmem.el) + "/address",
                    _bdf_text(*shmem.address),
                    f"no ivshmem device at this address in {where}",
                )

    # -- final check -----------------------------------------------------------------------

    def _meta_cpu_set_size(self, size: int, cpus: frozenset[int]) -> int:
        """Return the metadata's CPU-set size if it holds ``cpus`` and the driver may take it.

        A size of 0 packs only for a cell without CPUs (kept, so every config that packs
        translates back; the config checks note it); above one page the driver refuses
        it with EINVAL, and packing it could take gigabytes, so it is refused here.
        """
        where = self.meta.where("cpu-set-size")  # a path is built only to raise
        most = (MAX_CELL_CPU + 1) // 8
        if size > most:
            raise TranslationError(
                str(where),
                size,
                f"a CPU set is at most {most} bytes: the driver refuses more with EINVAL "
                "(upstream uses 8)",
            )
        outside = frozenset(cpu for cpu in cpus if cpu >= 8 * size)
        if outside:
            raise TranslationError(
                str(where),
                size,
                f"a CPU set of {size} byte(s) holds "
                f"{f'CPUs 0-{8 * size - 1}' if size else 'no CPU'}; the cell's "
                f"CPU(s) {format_cpus(outside)} do not fit",
            )
        return size

    def _check_packs(self, cell: CellConfig) -> None:
        """Pack the cell once, so a config the codec refuses is a TranslationError here."""
        try:
            cell.to_bytes()
        except ConfigError as exc:
            if self.meta.element is None:
                where = "/domain"
            else:
                top = re.split(r"[.\[]", exc.field, maxsplit=1)[0]
                where = self.meta.path(top.replace("_", "-"))
            raise TranslationError(
                where, exc.value, f"the translated cell config does not pack: {exc}"
            ) from exc

    def _check(self, cell: CellConfig) -> None:
        from jailhouse.config.validate import Severity, check_configs  # noqa: PLC0415

        errors = [
            finding
            for finding in check_configs(self.system, *self.defined, cell)
            if finding.severity == Severity.ERROR
        ]
        if not errors:
            return  # the usual case: no need to know what the set without the cell breaks
        before = {str(f) for f in check_configs(self.system, *self.defined)}
        for finding in errors:
            if str(finding) in before:
                continue
            if self.meta.element is None:
                raise TranslationError(
                    "/domain",
                    None,
                    f"the translated cell does not pass the config checks: {finding}",
                )
            self.note(self.meta.element, f"the cell breaks a config rule: {finding}")


def _guest_name(region: MemoryRegion) -> str:
    """Name a region of the cell for a message about its guest addresses."""
    if region.is_comm_region:
        return "the comm region"
    if is_ram(region):
        return "the cell's RAM"
    if MemFlag.IO in region.flags:
        return "a device page the cell maps 1:1"
    return "a shared-memory region the cell maps 1:1"


def _bdf_text(domain: int, bdf: int) -> str:
    return f"{domain:04x}:{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7:x}"
