"""Configs read into plain records for the checker: ``jhctl config check`` without enums.

``jhctl config check`` runs in build scripts and CI for every config set, so what it costs
is the interpreter's start-up plus what it imports.  The typed model costs :mod:`enum` and
the records of :mod:`jailhouse.config.model`; a check needs neither when the set is clean,
since a clean set prints one line.  So :func:`check_set` reads the files into the plain
records below (ints where the model has enum members), runs the rules of
:mod:`jailhouse.config._rules` on them and stops at the first finding.

It vouches only for what it reads the way :mod:`jailhouse.config.codec` does: a file that
cannot be read, that is not a revision-14 config of the kind its place asks for, whose
arrays run past its end, or any finding returns ``None``, and the caller checks the set
through the model, which gives the errors and the findings.  ``tests/test_lean.py`` holds
the records to the model's values and the verdicts to :func:`~jailhouse.config.validate.
check_configs`, on every config the codec parses.
"""

from __future__ import annotations

from jailhouse.config._format import (
    ARM_PLATFORM,
    CACHE,
    CELL_DESC,
    CELL_DESC_SIZE,
    CELL_SIGNATURE,
    CONFIG_REVISION,
    CONSOLE,
    ENTRY_SIZES,
    IOMMU,
    IRQCHIP,
    MEMORY,
    NUM_IOMMUS,
    PCI_CAP,
    PCI_DEVICE,
    PIO,
    PLATFORM_PCI,
    SYSTEM_HEAD,
    SYSTEM_HEADER_SIZE,
    SYSTEM_SIGNATURE,
    X86_PLATFORM,
    cpu_set,
)
from jailhouse.config._rules import (
    Report,
    check_cells,
    check_system,
    root_spans,
    system_resources,
)

TYPE_CHECKING = False  # not typing's: this module is on the cold start of `config check`
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Final

__all__ = ["LeanCell", "LeanSystem", "check_set", "parse_cell", "parse_system"]

_ARCH_CODES: Final = (0, 1, 2)
_CONSOLE_TYPE_OFFSET: Final = CELL_DESC_SIZE - CONSOLE.size + 12  # u64 address, u32 size
_IOMMU_AMD_FIELDS: Final = 8  # the AMD member's bytes that are fields; the rest is padding


class _Plain:
    """A record of named fields; subclasses list them in ``__slots__``, in struct order."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, *values: object) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class LeanRegion(_Plain):
    """``struct jailhouse_memory``; ``flags`` is an int."""

    __slots__ = ("phys_start", "virt_start", "size", "flags")  # noqa: RUF023 - struct order
    phys_start: int
    virt_start: int
    size: int
    flags: int


class LeanCache(_Plain):
    """``struct jailhouse_cache``."""

    __slots__ = ("start", "size", "type", "flags")  # noqa: RUF023 - struct order
    start: int
    size: int
    type: int
    flags: int


class LeanIrqChip(_Plain):
    """``struct jailhouse_irqchip``; ``pin_bitmap`` holds the four u32 words."""

    __slots__ = ("address", "id", "pin_base", "pin_bitmap")
    address: int
    id: int
    pin_base: int
    pin_bitmap: tuple[int, ...]


class LeanPio(_Plain):
    """``struct jailhouse_pio``."""

    __slots__ = ("base", "length")
    base: int
    length: int


class LeanPciDevice(_Plain):
    """The fields of ``struct jailhouse_pci_device`` the rules read."""

    __slots__ = (  # noqa: RUF023 - the order _pci_device passes them in
        "type",
        "iommu",
        "domain",
        "bdf",
        "caps_start",
        "num_caps",
        "num_msix_vectors",
        "shmem_regions_start",
        "shmem_dev_id",
        "shmem_peers",
    )
    type: int
    iommu: int
    domain: int
    bdf: int
    caps_start: int
    num_caps: int
    num_msix_vectors: int
    shmem_regions_start: int
    shmem_dev_id: int
    shmem_peers: int


class LeanConsole(_Plain):
    """The console's type code, all the rules read of it."""

    __slots__ = ("type",)
    type: int


class LeanCell(_Plain):
    """A cell descriptor and its arrays, as the rules read them."""

    __slots__ = (  # noqa: RUF023 - the order _parse_cell_at passes them in
        "name",
        "arch",
        "flags",
        "cpus",
        "cpu_set_size",
        "mem_regions",
        "cache_regions",
        "irqchips",
        "pio_regions",
        "pci_devices",
        "pci_caps",
        "vpci_irq_base",
        "cpu_reset_address",
        "msg_reply_timeout",
        "console",
        "trailing",
        "size",
    )
    name: str
    arch: int
    flags: int
    cpus: frozenset[int]
    cpu_set_size: int
    mem_regions: tuple[LeanRegion, ...]
    cache_regions: tuple[LeanCache, ...]
    irqchips: tuple[LeanIrqChip, ...]
    pio_regions: tuple[LeanPio, ...]
    pci_devices: tuple[LeanPciDevice, ...]
    pci_caps: tuple[bytes, ...]
    vpci_irq_base: int
    cpu_reset_address: int
    msg_reply_timeout: int
    console: LeanConsole
    trailing: bytes
    size: int
    """Bytes of the descriptor and its arrays, without :attr:`trailing`."""


class LeanIommu(_Plain):
    """The fields of ``struct jailhouse_iommu`` the rules read."""

    __slots__ = ("type", "base", "size")  # noqa: RUF023 - struct order
    type: int
    base: int
    size: int


class LeanX86(_Plain):
    """``platform_info.x86``."""

    __slots__ = ("pm_timer_address", "apic_mode", "vtd_interrupt_limit", "tsc_khz", "apic_khz")  # noqa: RUF023
    pm_timer_address: int
    apic_mode: int
    vtd_interrupt_limit: int
    tsc_khz: int
    apic_khz: int


class LeanArm(_Plain):
    """``platform_info.arm``."""

    __slots__ = (  # noqa: RUF023 - struct order
        "maintenance_irq",
        "gic_version",
        "gicd_base",
        "gicc_base",
        "gich_base",
        "gicv_base",
        "gicr_base",
    )
    maintenance_irq: int
    gic_version: int
    gicd_base: int
    gicc_base: int
    gich_base: int
    gicv_base: int
    gicr_base: int


class LeanPlatform(_Plain):
    """``platform_info``: the PCI window, the IOMMU units in use and the arch part."""

    __slots__ = ("pci_mmconfig_base", "pci_mmconfig_end_bus", "iommu_units", "arch_info")  # noqa: RUF023
    pci_mmconfig_base: int
    pci_mmconfig_end_bus: int
    iommu_units: tuple[LeanIommu, ...]
    arch_info: LeanX86 | LeanArm


class LeanSystem(_Plain):
    """A system config with its root cell, as the rules read it."""

    __slots__ = ("arch", "flags", "hypervisor_memory", "debug_console", "platform", "root_cell")  # noqa: RUF023
    arch: int
    flags: int
    hypervisor_memory: LeanRegion
    debug_console: LeanConsole
    platform: LeanPlatform
    root_cell: LeanCell

    @property
    def size(self) -> int:
        """Bytes of the config, without the root cell's trailing bytes."""
        return SYSTEM_HEADER_SIZE + self.root_cell.size


# -- parsing: None wherever jailhouse.config.codec raises -----------------------------------


def parse_cell(data: bytes) -> LeanCell | None:
    """Read a cell config as :func:`jailhouse.config.codec.parse_cell` does, or ``None``."""
    if len(data) < CELL_DESC_SIZE or not _header_ok(data, CELL_SIGNATURE):
        return None
    return _cell_at(data, 0, data[5])


def parse_system(data: bytes) -> LeanSystem | None:
    """Read a system config as :func:`jailhouse.config.codec.parse_system` does, or ``None``."""
    if len(data) < SYSTEM_HEADER_SIZE + CELL_DESC_SIZE or not _header_ok(data, SYSTEM_SIGNATURE):
        return None
    arch = data[5]
    root = _cell_at(data, SYSTEM_HEADER_SIZE, arch)
    if root is None:
        return None
    head = SYSTEM_HEAD.unpack_from(data, 0)
    offset = SYSTEM_HEAD.size
    mmconfig_base, end_bus, _, _ = PLATFORM_PCI.unpack_from(data, offset)
    offset += PLATFORM_PCI.size
    slots = [IOMMU.unpack_from(data, offset + i * IOMMU.size) for i in range(NUM_IOMMUS)]
    used = NUM_IOMMUS
    while used and _unused(slots[used - 1]):  # the model keeps the slots up to the last used
        used -= 1
    offset += NUM_IOMMUS * IOMMU.size
    info: LeanX86 | LeanArm = (
        LeanX86(*X86_PLATFORM.unpack_from(data, offset))
        if arch == 0
        else LeanArm(*ARM_PLATFORM.unpack_from(data, offset))
    )
    return LeanSystem(
        arch,
        head[3],  # flags
        LeanRegion(*head[4:8]),  # hypervisor_memory
        LeanConsole(head[10]),  # debug_console.type
        LeanPlatform(
            mmconfig_base,
            end_bus,
            tuple([LeanIommu(*slot[:3]) for slot in slots[:used]]),
            info,
        ),
        root,
    )


def _header_ok(data: bytes, signature: bytes) -> bool:
    """Whether signature, revision and architecture are what the codec accepts."""
    revision = data[6] | data[7] << 8
    return data[:5] == signature and revision == CONFIG_REVISION and data[5] in _ARCH_CODES


def _unused(slot: tuple[int, int, int, bytes]) -> bool:
    return not (slot[0] or slot[1] or slot[2] or any(slot[3][:_IOMMU_AMD_FIELDS]))


def _cell_at(data: bytes, base: int, arch: int) -> LeanCell | None:
    f = CELL_DESC.unpack_from(data, base)
    cpu_set_size = f[6]
    s_mem = base + CELL_DESC_SIZE + cpu_set_size
    ends = [s_mem]
    for count, entry in zip(f[7:14], ENTRY_SIZES, strict=True):
        ends.append(ends[-1] + count * entry)
    end = ends[-1]
    if end > len(data):
        return None
    s_cache, s_irq, s_pio, s_pci, s_caps = ends[1:6]
    return LeanCell(
        f[3].split(b"\0", 1)[0].decode("latin-1"),  # name
        arch,
        f[5],  # flags
        cpu_set(data[s_mem - cpu_set_size : s_mem]),
        cpu_set_size,
        tuple([LeanRegion(*v) for v in MEMORY.iter_unpack(data[s_mem:s_cache])]),
        tuple([LeanCache(*v) for v in CACHE.iter_unpack(data[s_cache:s_irq])]),
        tuple([LeanIrqChip(*v[:3], v[3:]) for v in IRQCHIP.iter_unpack(data[s_irq:s_pio])]),
        tuple([LeanPio(*v) for v in PIO.iter_unpack(data[s_pio:s_pci])]),
        tuple([_pci_device(v) for v in PCI_DEVICE.iter_unpack(data[s_pci:s_caps])]),
        tuple([data[i : i + PCI_CAP.size] for i in range(s_caps, ends[6], PCI_CAP.size)]),
        f[14],  # vpci_irq_base
        f[15],  # cpu_reset_address
        f[16],  # msg_reply_timeout
        LeanConsole(data[base + _CONSOLE_TYPE_OFFSET] | data[base + _CONSOLE_TYPE_OFFSET + 1] << 8),
        data[end:],  # trailing
        end - base,  # size
    )


def _pci_device(v: tuple[int, ...]) -> LeanPciDevice:
    # type, iommu, domain, bdf, bar_mask[6], caps_start, num_caps, num_msi_vectors, msi bits,
    # num_msix_vectors, msix_region_size, msix_address, shmem_regions_start, shmem_dev_id,
    # shmem_peers, shmem_protocol
    return LeanPciDevice(v[0], v[1], v[2], v[3], v[10], v[11], v[14], v[17], v[18], v[19])


# -- the check -------------------------------------------------------------------------------


class _Found(Exception):  # noqa: N818 - a private signal, not an error anyone sees
    """The rules found something: the set is not clean."""


class _FirstFinding(Report):
    """A report that stops the rules at the first finding."""

    __slots__ = ()

    def add(self, severity: str, path: str, value: object, reason: str) -> None:  # noqa: ARG002
        raise _Found


def check_set(system_path: str, cell_paths: Sequence[str]) -> list[str] | None:
    """Check the files of a set; return the cell names (root first) if it is clean.

    Returns:
        The names, when every file reads as its place asks (a system config first, then
        cell configs) and the rules find nothing; ``None`` otherwise, with nothing printed.
    """
    system_data = _read(system_path)
    system = parse_system(system_data) if system_data is not None else None
    if system is None:
        return None
    cells: list[LeanCell] = []
    for path in cell_paths:
        data = _read(path)
        cell = parse_cell(data) if data is not None else None
        if cell is None:
            return None
        cells.append(cell)
    report = _FirstFinding(cell=system.root_cell.name)
    try:
        resources = system_resources(system)
        check_system(system, report, resources)
        check_cells(system, cells, report, resources, root_spans(system))
    except _Found:
        return None
    return [system.root_cell.name, *(cell.name for cell in cells)]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:  # noqa: PTH123 - pathlib is not imported for this
            return f.read()
    except OSError:
        return None
