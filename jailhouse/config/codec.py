"""Pack and parse the binary config format, byte-exactly.

The formats below mirror the packed structs of ``cell-config.h`` (revision 14);
``tests/test_layout.py`` checks every size and offset against the structs the C compiler
lays out in the cffi shim.  Parsing never raises anything but
:class:`~jailhouse.errors.InvalidConfigError`, naming the field, its byte offset and the
value; packing raises :class:`~jailhouse.errors.ConfigError` naming the field path.
"""

from __future__ import annotations

import struct

from jailhouse.config._builders import (
    new_cache,
    new_cell,
    new_console,
    new_iommu,
    new_irqchip,
    new_memory,
    new_pci_cap,
    new_pci_device,
    new_pio,
    new_platform,
    new_system,
    new_x86_platform,
)
from jailhouse.config._format import ARM_PLATFORM as _ARM_PLATFORM
from jailhouse.config._format import CACHE as _CACHE
from jailhouse.config._format import CELL_DESC as _CELL_DESC
from jailhouse.config._format import CELL_DESC_SIZE, SYSTEM_HEADER_SIZE, cpu_set
from jailhouse.config._format import CONSOLE as _CONSOLE
from jailhouse.config._format import COUNT_OFFSETS as _COUNT_OFFSETS
from jailhouse.config._format import IOMMU as _IOMMU
from jailhouse.config._format import IOMMU_AMD as _IOMMU_AMD
from jailhouse.config._format import IOMMU_PVU as _IOMMU_PVU
from jailhouse.config._format import IRQCHIP as _IRQCHIP
from jailhouse.config._format import MEMORY as _MEMORY
from jailhouse.config._format import NUM_IOMMUS as _NUM_IOMMUS
from jailhouse.config._format import PCI_CAP as _PCI_CAP
from jailhouse.config._format import PCI_DEVICE as _PCI_DEVICE
from jailhouse.config._format import PIO as _PIO
from jailhouse.config._format import PLATFORM_PCI as _PLATFORM_PCI
from jailhouse.config._format import STREAM_ID as _STREAM_ID
from jailhouse.config._format import SYSTEM_HEAD as _SYSTEM_HEAD
from jailhouse.config._format import X86_PLATFORM as _X86_PLATFORM
from jailhouse.config._record import PackedArray
from jailhouse.config.model import (
    CELL_SIGNATURE,
    CONFIG_REVISION,
    SYSTEM_SIGNATURE,
    ApicMode,
    Arch,
    ArmPlatform,
    CacheFlag,
    CacheType,
    CellConfig,
    CellFlag,
    Console,
    ConsoleFlag,
    ConsoleType,
    IommuType,
    IommuUnit,
    IrqChip,
    MemFlag,
    MemoryRegion,
    PciCapability,
    PciCapFlag,
    PciDevice,
    PciType,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    SystemFlag,
    X86Platform,
)
from jailhouse.errors import ConfigError, InvalidConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import enum
    from collections.abc import Callable, Sequence
    from typing import Any, Final, TypeVar

    _E = TypeVar("_E", bound=enum.Enum)
    _V = TypeVar("_V")

__all__ = [
    "CELL_DESC_SIZE",
    "SYSTEM_HEADER_SIZE",
    "pack_cell",
    "pack_system",
    "parse_cell",
    "parse_system",
]

# The layouts live in jailhouse.config._format, with the plain codes the checker reads.
_ROOT_CELL_OFFSET: Final = SYSTEM_HEADER_SIZE
_IOMMUS_SIZE: Final = _NUM_IOMMUS * _IOMMU.size
_NO_IOMMUS: Final = bytes(_IOMMUS_SIZE)
_DEBUG_CONSOLE_OFFSET: Final = _SYSTEM_HEAD.size - _CONSOLE.size
_SIGNATURE_LEN: Final = 5

# -- fast construction -------------------------------------------------------------------
#
# A parse builds a dozen model objects per config, through the positional builders of
# jailhouse.config._builders (slot descriptors, no __init__).  The enum caches turn a
# raw field into its flag or enum member with one dict lookup instead of an Enum call.

_MEMBER_CACHE_LIMIT: Final = 4096
"""Distinct raw values one enum cache keeps (a hostile file cannot grow it further)."""


class _Members(dict[int, "_E"]):
    """Raw field value -> enum member, computed by the enum on a miss and then kept."""

    __slots__ = ("_enum",)

    def __init__(self, enum_type: type[_E]) -> None:
        super().__init__()
        self._enum = enum_type

    def __missing__(self, value: int) -> _E:
        member = self._enum(value)
        if len(self) < _MEMBER_CACHE_LIMIT:
            self[value] = member
        return member


_ARCHES: Final = _Members(Arch)
_CELL_FLAGS: Final = _Members(CellFlag)
_MEM_FLAGS: Final = _Members(MemFlag)
_CACHE_TYPES: Final = _Members(CacheType)
_CACHE_FLAGS: Final = _Members(CacheFlag)
_PCI_TYPES: Final = _Members(PciType)
_PCI_CAP_FLAGS: Final = _Members(PciCapFlag)
_CONSOLE_TYPES: Final = _Members(ConsoleType)
_CONSOLE_FLAGS: Final = _Members(ConsoleFlag)
_IOMMU_TYPES: Final = _Members(IommuType)
_APIC_MODES: Final = _Members(ApicMode)
_SYSTEM_FLAGS: Final = _Members(SystemFlag)


# -- parsing -------------------------------------------------------------------------------


def parse_cell(data: bytes) -> CellConfig:
    """Parse a cell config (``JHCLL``, revision 14).

    Args:
        data: The whole ``.cell`` file.

    Returns:
        The config; bytes after the declared arrays land in ``trailing``.

    Raises:
        InvalidConfigError: The bytes are not such a config; the error names the field,
            its byte offset and the value.
    """
    data = bytes(data)
    if len(data) < CELL_DESC_SIZE:
        raise InvalidConfigError(
            "size", len(data), f"a cell config is at least {CELL_DESC_SIZE} bytes", offset=0
        )
    arch = _check_header(data, CELL_SIGNATURE, old=b"JHCELL", what="cell")
    return _parse_cell_at(data, 0, arch)[0]


def parse_system(data: bytes) -> SystemConfig:
    """Parse a system config (``JHSYS``, revision 14) with its embedded root cell.

    Args:
        data: The whole system ``.cell`` file.

    Returns:
        The config; bytes after the root cell's arrays land in ``root_cell.trailing``.

    Raises:
        InvalidConfigError: The bytes are not such a config; the error names the field,
            its byte offset and the value.
    """
    data = bytes(data)
    minimum = _ROOT_CELL_OFFSET + CELL_DESC_SIZE
    if len(data) < minimum:
        raise InvalidConfigError(
            "size", len(data), f"a system config is at least {minimum} bytes", offset=0
        )
    arch = _check_header(data, SYSTEM_SIGNATURE, old=b"JHSYST", what="system")
    head = _SYSTEM_HEAD.unpack_from(data, 0)
    cache = _X86_PLATFORMS if arch == Arch.X86 else _ARM_PLATFORMS
    platform, canonical = cache[data[_SYSTEM_HEAD.size : _ROOT_CELL_OFFSET]]
    root_cell = _parse_cell_at(data, _ROOT_CELL_OFFSET, arch, prefix="root_cell.")[0]
    system = new_system(
        arch,
        _SYSTEM_FLAGS[head[3]],
        new_memory(head[4], head[5], head[6], _MEM_FLAGS[head[7]]),  # hypervisor_memory
        _CONSOLES[data[_DEBUG_CONSOLE_OFFSET : _SYSTEM_HEAD.size]],
        platform,
        root_cell,
        data[_ROOT_CELL_OFFSET : _ROOT_CELL_OFFSET + 8],  # root_header
    )
    _set_system_packed(system, data if canonical and root_cell._packed is not None else None)  # noqa: SLF001
    return system


def _x86_platform(raw: bytes) -> tuple[PlatformInfo, bool]:
    return _parse_platform(raw, x86=True)


def _arm_platform(raw: bytes) -> tuple[PlatformInfo, bool]:
    return _parse_platform(raw, x86=False)


def _parse_platform(data: bytes, *, x86: bool) -> tuple[PlatformInfo, bool]:
    """Parse the platform info (PCI, IOMMUs, arch info); tell whether its bytes are canonical.

    Canonical as for cells: the AMD member's padding and the arch info's are zero.
    """
    mmconfig_base, end_bus, is_virtual, pci_domain = _PLATFORM_PCI.unpack_from(data, 0)
    offset = _PLATFORM_PCI.size
    canonical = True
    if data[offset : offset + _IOMMUS_SIZE] == _NO_IOMMUS:
        slots, used = [], 0
    else:
        slots = [_IOMMU.unpack_from(data, offset + i * _IOMMU.size) for i in range(_NUM_IOMMUS)]
        used = len(slots)
        while used and _iommu_is_empty(slots[used - 1]):
            used -= 1
        canonical = all(
            slot[0] == IommuType.PVU or slot[3][_AMD_FIELD_BYTES:] == _AMD_PAD for slot in slots
        )
    offset += _IOMMUS_SIZE
    arch_info: X86Platform | ArmPlatform
    if x86:
        canonical = canonical and not data[offset + 3] and not any(data[offset + 16 : offset + 44])
        pm_timer, apic_mode, vtd_limit, tsc_khz, apic_khz = _X86_PLATFORM.unpack_from(data, offset)
        arch_info = new_x86_platform(pm_timer, _APIC_MODES[apic_mode], vtd_limit, tsc_khz, apic_khz)
    else:
        canonical = canonical and not any(data[offset + 2 : offset + 4])
        arch_info = ArmPlatform(*_ARM_PLATFORM.unpack_from(data, offset))
    platform = new_platform(
        mmconfig_base,
        end_bus,
        is_virtual,
        pci_domain,
        tuple([_parse_iommu(slot) for slot in slots[:used]]),
        arch_info,
    )
    return platform, canonical


def _check_header(data: bytes, signature: bytes, *, old: bytes, what: str) -> Arch:
    """Check signature, revision and architecture; return the architecture."""
    revision = data[6] | data[7] << 8  # u16 little-endian
    # "JHSYST" starts with "JHSYS": an old six-byte signature is told apart by its revision
    # (with revision 14 the "T" is an architecture byte, which is what the driver sees).
    if data[:_SIGNATURE_LEN] != signature or (
        data[: len(old)] == old and revision != CONFIG_REVISION
    ):
        if data[: len(old)] == old:
            reason = (
                f"this is a {what} config of revision 13 or older ({old.decode()!r}); "
                f"rebuild it with a revision-{CONFIG_REVISION} Jailhouse"
            )
        elif data[:_SIGNATURE_LEN] in (CELL_SIGNATURE, SYSTEM_SIGNATURE):
            kind = "cell" if data[:_SIGNATURE_LEN] == CELL_SIGNATURE else "system"
            reason = f"this is a {kind} config, not a {what} config"
        else:
            reason = f"not a Jailhouse {what} config (expected {signature.decode()!r})"
        raise InvalidConfigError("signature", data[:_SIGNATURE_LEN], reason, offset=0)
    if revision != CONFIG_REVISION:
        raise InvalidConfigError(
            "revision",
            revision,
            f"only config revision {CONFIG_REVISION} is supported",
            offset=6,
        )
    arch = _ARCHES[data[5]]
    if not arch.known:
        raise InvalidConfigError(
            "architecture", data[5], "unknown architecture (0 x86, 1 arm, 2 arm64)", offset=5
        )
    return arch


def _parse_cell_at(
    data: bytes, base: int, arch: Arch, *, prefix: str = ""
) -> tuple[CellConfig, int]:
    """Parse the descriptor at ``base`` and its arrays; return the cell and its end.

    Bytes after the arrays become the cell's ``trailing``.
    """
    f = _CELL_DESC.unpack_from(data, base)
    cpu_set_size, n_mem, n_cache, n_irq, n_pio, n_pci, n_caps, n_streams = f[6:14]
    s_mem = base + CELL_DESC_SIZE + cpu_set_size
    s_cache = s_mem + n_mem * _MEMORY_SIZE
    s_irq = s_cache + n_cache * _CACHE_SIZE
    s_pio = s_irq + n_irq * _IRQCHIP_SIZE
    s_pci = s_pio + n_pio * _PIO_SIZE
    s_caps = s_pci + n_pci * _PCI_DEVICE_SIZE
    s_streams = s_caps + n_caps * _PCI_CAP_SIZE
    end = s_streams + n_streams * _STREAM_ID_SIZE
    if end > len(data):
        _raise_overrun(data, base, f, prefix)
    # Canonical: the bytes that values do not keep (the name after its NUL, a cache entry's
    # pad byte, the spare bits of a PCI device's MSI byte) are zero, so packing the values
    # gives these bytes again and packing may return them as they are.
    raw_name = f[3]
    canonical = b"\0" not in raw_name.rstrip(b"\0")
    if n_cache and canonical:
        canonical = not any(data[s_cache + 9 : s_irq : _CACHE_SIZE])
    pci_rows: list[tuple[Any, ...]] = []
    if n_pci:
        pci_rows = list(_PCI_DEVICE.iter_unpack(data[s_pci:s_caps]))
        canonical = canonical and not any(row[13] & ~3 for row in pci_rows)
    cell = new_cell(
        _name(raw_name),
        arch,
        f[4],  # id
        _CELL_FLAGS[f[5]],
        cpu_set_size,
        _CPU_SETS[data[s_mem - cpu_set_size : s_mem]],
        PackedArray(data[s_mem:s_cache], n_mem, _decode_memory) if n_mem else (),
        tuple(
            [
                new_cache(start, size, _CACHE_TYPES[kind], _CACHE_FLAGS[flags])
                for start, size, kind, flags in _CACHE.iter_unpack(data[s_cache:s_irq])
            ]
        )
        if n_cache
        else (),
        PackedArray(data[s_irq:s_pio], n_irq, _decode_irqchips) if n_irq else (),
        PackedArray(data[s_pio:s_pci], n_pio, _decode_pio) if n_pio else (),
        tuple([_pci_device(v) for v in pci_rows]) if n_pci else (),
        PackedArray(data[s_caps:s_streams], n_caps, _decode_pci_caps) if n_caps else (),
        PackedArray(data[s_streams:end], n_streams, _decode_stream_ids) if n_streams else (),
        f[14],  # vpci_irq_base
        f[15],  # cpu_reset_address
        f[16],  # msg_reply_timeout
        _CONSOLES[data[base + _CONSOLE_OFFSET : base + CELL_DESC_SIZE]],
        data[end:],  # trailing
    )
    _set_cell_packed(cell, data[base + 8 :] if canonical else None)
    return cell, end


_set_cell_packed: Final = vars(CellConfig)["_packed"].__set__
_set_system_packed: Final = vars(SystemConfig)["_packed"].__set__


class _Decoded(dict[bytes, "_V"]):
    """Raw bytes -> the immutable value they decode to, decoded on a miss and then kept.

    Configs repeat the same CPU sets and consoles; the values are immutable, so parsed
    configs may share them.
    """

    __slots__ = ("_decode",)

    def __init__(self, decode: Callable[[bytes], _V]) -> None:
        super().__init__()
        self._decode = decode

    def __missing__(self, raw: bytes) -> _V:
        value = self._decode(raw)
        if len(self) < _MEMBER_CACHE_LIMIT:
            self[raw] = value
        return value


def _raw_console(raw: bytes) -> Console:
    return _console(_CONSOLE.unpack(raw))


_CONSOLE_OFFSET: Final = CELL_DESC_SIZE - _CONSOLE.size
_CPU_SETS: Final = _Decoded(cpu_set)
_CONSOLES: Final = _Decoded(_raw_console)
_X86_PLATFORMS: Final = _Decoded(_x86_platform)
_ARM_PLATFORMS: Final = _Decoded(_arm_platform)


# The arrays whose bytes and values map one to one are decoded only when read (see
# PackedArray); a config packed before they are read packs their bytes as they were.


def _decode_memory(raw: bytes) -> tuple[MemoryRegion, ...]:
    mem_flags = _MEM_FLAGS
    return tuple(
        [
            new_memory(phys, virt, size, mem_flags[flags])
            for phys, virt, size, flags in _MEMORY.iter_unpack(raw)
        ]
    )


def _decode_irqchips(raw: bytes) -> tuple[IrqChip, ...]:
    return tuple(
        [
            new_irqchip(v[0], v[1], v[2], v[3:])  # address, id, pin_base, pin_bitmap
            for v in _IRQCHIP.iter_unpack(raw)
        ]
    )


def _decode_pio(raw: bytes) -> tuple[PioRegion, ...]:
    return tuple([new_pio(*v) for v in _PIO.iter_unpack(raw)])


def _decode_pci_caps(raw: bytes) -> tuple[PciCapability, ...]:
    cap_flags = _PCI_CAP_FLAGS
    return tuple(
        [
            new_pci_cap(cap_id, start, length, cap_flags[flags])
            for cap_id, start, length, flags in _PCI_CAP.iter_unpack(raw)
        ]
    )


def _decode_stream_ids(raw: bytes) -> tuple[int, ...]:
    return tuple([v for (v,) in _STREAM_ID.iter_unpack(raw)])


_MEMORY_SIZE: Final = _MEMORY.size
_CACHE_SIZE: Final = _CACHE.size
_IRQCHIP_SIZE: Final = _IRQCHIP.size
_PIO_SIZE: Final = _PIO.size
_PCI_DEVICE_SIZE: Final = _PCI_DEVICE.size
_PCI_CAP_SIZE: Final = _PCI_CAP.size
_STREAM_ID_SIZE: Final = _STREAM_ID.size


def _raise_overrun(data: bytes, base: int, desc: tuple[Any, ...], prefix: str) -> None:
    """Raise for the first count whose array runs past the end of ``data``."""
    offset = base + CELL_DESC_SIZE
    extents = zip(
        _COUNT_OFFSETS,
        desc[6:14],
        (1, _MEMORY_SIZE, _CACHE_SIZE, _IRQCHIP_SIZE, _PIO_SIZE, _PCI_DEVICE_SIZE,
         _PCI_CAP_SIZE, _STREAM_ID_SIZE),
        strict=True,
    )  # fmt: skip
    for name, count, item in extents:
        offset += count * item
        if offset > len(data):
            raise InvalidConfigError(
                prefix + name,
                count,
                f"the arrays it declares run to byte {offset} but the config has {len(data)} bytes",
                offset=base + _COUNT_OFFSETS[name],
            )


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _console(v: Sequence[int]) -> Console:
    address, size, con_type, flags, divider, gate_nr, clock_reg = v
    return new_console(
        address, size, _CONSOLE_TYPES[con_type], _CONSOLE_FLAGS[flags], divider, gate_nr, clock_reg
    )


def _pci_device(v: tuple[int, ...]) -> PciDevice:
    msi_bits = v[13]
    return new_pci_device(
        _PCI_TYPES[v[0]],
        v[1],  # iommu
        v[2],  # domain
        v[3],  # bdf
        v[4:10],  # bar_mask
        v[10],  # caps_start
        v[11],  # num_caps
        v[12],  # num_msi_vectors
        bool(msi_bits & 1),  # msi_64bits
        bool(msi_bits & 2),  # msi_maskable
        *v[14:],  # num_msix_vectors ... shmem_protocol, in the order of the struct
    )


def _iommu_is_empty(raw: tuple[int, int, int, bytes]) -> bool:
    """Tell whether an IOMMU slot parses to ``IommuUnit(IommuType.UNUSED)``.

    That is type 0 with every field zero; the AMD member's trailing padding is not a field.
    """
    unit_type, base, size, union = raw
    return (
        unit_type == 0
        and base == 0
        and size == 0
        and union[:_AMD_FIELD_BYTES] == bytes(_AMD_FIELD_BYTES)
    )


_AMD_FIELD_BYTES: Final = _IOMMU_AMD.size - 4  # the last 4 bytes are padding, not a field
_AMD_PAD: Final = bytes(4)


def _parse_iommu(raw: tuple[Any, ...]) -> IommuUnit:
    unit_type, base, size, union = raw
    kind = _IOMMU_TYPES[unit_type]
    if kind == IommuType.PVU:
        tlb_base, tlb_size = _IOMMU_PVU.unpack(union)
        return new_iommu(kind, base, size, 0, 0, 0, 0, tlb_base, tlb_size)
    bdf, base_cap, msi_cap, features = _IOMMU_AMD.unpack(union)
    return new_iommu(kind, base, size, bdf, base_cap, msi_cap, features, 0, 0)


# -- packing -------------------------------------------------------------------------------


def pack_cell(cell: CellConfig) -> bytes:
    """Pack a cell config, with its signature, into the ``.cell`` format.

    Raises:
        ConfigError: A value does not fit its field; the error names the field path.
    """
    try:
        data = _pack_cell_fast(cell, CELL_SIGNATURE + bytes((cell.arch,)) + _REVISION)
    except Exception:  # noqa: BLE001 - the named path below raises what is wrong, or packs
        head = CELL_SIGNATURE + _u8("arch", cell.arch) + _REVISION
        return _pack_cell_body(cell, head, prefix="")
    if cell._packed is None:  # noqa: SLF001 - a config is immutable: pack it once
        _set_cell_packed(cell, data[_CELL_HEAD_SIZE:])
    return data


def pack_system(system: SystemConfig) -> bytes:
    """Pack a system config and its root cell into the format ENABLE takes.

    Raises:
        ConfigError: A value does not fit its field; the error names the field path.
    """
    packed = system._packed  # noqa: SLF001 - parsed from canonical bytes: those bytes
    if packed is not None:
        return packed
    try:
        return _pack_system_fast(system)
    except Exception:  # noqa: BLE001 - the named path below raises what is wrong, or packs
        return _pack_system_named(system)


# Packing runs a fast path first: one struct call per element and no field names.  Any
# exception there (a value that does not fit, a wrong type, a bad length) sends the config
# through the named path, which packs field by field as the fast path does and raises the
# error that names the first field in file order.  So the fast path only has to give the
# same bytes whenever the named path would succeed, and fail whenever it would fail.

_REVISION: Final = struct.pack("<H", CONFIG_REVISION)
_CELL_HEAD_SIZE: Final = len(CELL_SIGNATURE) + 1 + len(_REVISION)
"""Signature, arch byte and revision: what ``_packed`` leaves out."""
_NAME_LEN: Final = 32


class _NeedsNames(Exception):  # noqa: N818 - a private signal, not an error anyone sees
    """The fast path found something the named path has to report."""


def _pack_cell_fast(cell: CellConfig, head: bytes) -> bytes:
    """Pack a cell descriptor after ``head`` and its arrays, naming no field on failure."""
    packed = cell._packed  # noqa: SLF001 - parsed from canonical bytes: those bytes
    if packed is not None:
        return head + packed
    name = cell.name.encode("latin-1")
    if len(name) > _NAME_LEN:
        raise _NeedsNames
    # The arrays as held: a tuple, or a parsed config's bytes not yet decoded.
    mems, caches, chips, pios = (
        cell._mem_regions,  # noqa: SLF001 - the codec packs what the model holds
        cell.cache_regions,
        cell._irqchips,  # noqa: SLF001
        cell._pio_regions,  # noqa: SLF001
    )
    devices = cell.pci_devices
    caps, streams = cell._pci_caps, cell._stream_ids  # noqa: SLF001
    con = cell.console
    parts = [
        head,
        _BODY.pack(
            name,
            cell.id,
            cell.flags,
            cell.cpu_set_size,
            len(mems),
            len(caches),
            len(chips),
            len(pios),
            len(devices),
            len(caps),
            len(streams),
            cell.vpci_irq_base,
            cell.cpu_reset_address,
            cell.msg_reply_timeout,
            con.address,
            con.size,
            con.type,
            con.flags,
            con.divider,
            con.gate_nr,
            con.clock_reg,
        ),
        _pack_cpus(cell, ""),
    ]
    if isinstance(mems, PackedArray):
        parts.append(mems.raw)
    elif mems:
        pack = _MEMORY.pack
        parts += [pack(r.phys_start, r.virt_start, r.size, r.flags) for r in mems]
    if caches:
        pack = _CACHE.pack
        parts += [pack(c.start, c.size, c.type, c.flags) for c in caches]
    if isinstance(chips, PackedArray):
        parts.append(chips.raw)
    else:
        for chip in chips:
            bitmap = chip.pin_bitmap
            if len(bitmap) != len(_ZERO_BITMAP):
                raise _NeedsNames
            parts.append(_IRQCHIP.pack(chip.address, chip.id, chip.pin_base, *bitmap))
    if isinstance(pios, PackedArray):
        parts.append(pios.raw)
    elif pios:
        pack = _PIO.pack
        parts += [pack(p.base, p.length) for p in pios]
    for dev in devices:
        bar_mask = dev.bar_mask
        if len(bar_mask) != len(_ZERO_BAR_MASK):
            raise _NeedsNames
        parts.append(
            _PCI_DEVICE.pack(
                dev.type,
                dev.iommu,
                dev.domain,
                dev.bdf,
                *bar_mask,
                dev.caps_start,
                dev.num_caps,
                dev.num_msi_vectors,
                int(dev.msi_64bits) | int(dev.msi_maskable) << 1,
                dev.num_msix_vectors,
                dev.msix_region_size,
                dev.msix_address,
                dev.shmem_regions_start,
                dev.shmem_dev_id,
                dev.shmem_peers,
                dev.shmem_protocol,
            )
        )
    if isinstance(caps, PackedArray):
        parts.append(caps.raw)
    elif caps:
        pack = _PCI_CAP.pack
        parts += [pack(c.id, c.start, c.len, c.flags) for c in caps]
    if isinstance(streams, PackedArray):
        parts.append(streams.raw)
    elif streams:
        pack = _STREAM_ID.pack
        parts += [pack(s) for s in streams]
    parts.append(cell.trailing)
    return b"".join(parts)


_ZERO_BITMAP: Final = (0, 0, 0, 0)
_ZERO_BAR_MASK: Final = (0, 0, 0, 0, 0, 0)


def _pack_system_fast(system: SystemConfig) -> bytes:
    """Pack a system config and its root cell, naming no field on failure."""
    hv = system.hypervisor_memory
    con = system.debug_console
    platform = system.platform
    units = platform.iommu_units
    if len(units) > _NUM_IOMMUS or len(system.root_header) != len(_ZERO_ROOT_HEADER):
        raise _NeedsNames
    parts = [
        _SYSTEM_HEAD.pack(
            SYSTEM_SIGNATURE,
            system.arch,
            CONFIG_REVISION,
            system.flags,
            hv.phys_start,
            hv.virt_start,
            hv.size,
            hv.flags,
            con.address,
            con.size,
            con.type,
            con.flags,
            con.divider,
            con.gate_nr,
            con.clock_reg,
        ),
        _PLATFORM_PCI.pack(
            platform.pci_mmconfig_base,
            platform.pci_mmconfig_end_bus,
            platform.pci_is_virtual,
            platform.pci_domain,
        ),
    ]
    for unit in units:
        if unit.type == IommuType.PVU:
            union = _IOMMU_PVU.pack(unit.tipvu_tlb_base, unit.tipvu_tlb_size)
        else:
            union = _IOMMU_AMD.pack(
                unit.amd_bdf, unit.amd_base_cap, unit.amd_msi_cap, unit.amd_features
            )
        parts.append(_IOMMU.pack(unit.type, unit.base, unit.size, union))
    parts.append(bytes(_IOMMU.size * (_NUM_IOMMUS - len(units))))
    parts.append(_pack_arch_info(system.arch, platform.arch_info))
    parts.append(_pack_cell_fast(system.root_cell, system.root_header))
    return b"".join(parts)


_ZERO_ROOT_HEADER: Final = bytes(8)


def _pack_system_named(system: SystemConfig) -> bytes:
    """Pack a system config field by field, naming the first field whose value does not fit."""
    hv = system.hypervisor_memory
    con = system.debug_console
    platform = system.platform
    parts = [
        _pack(
            _SYSTEM_HEAD,
            "",
            (
                "signature",
                "architecture",
                "revision",
                "flags",
                *(f"hypervisor_memory.{n}" for n in _MEMORY_FIELDS),
                *(f"debug_console.{n}" for n in _CONSOLE_FIELDS),
            ),
            (
                SYSTEM_SIGNATURE,
                system.arch,
                CONFIG_REVISION,
                system.flags,
                *_memory_values(hv),
                *_console_values(con),
            ),
        ),
        _pack(
            _PLATFORM_PCI,
            "platform.",
            ("pci_mmconfig_base", "pci_mmconfig_end_bus", "pci_is_virtual", "pci_domain"),
            (
                platform.pci_mmconfig_base,
                platform.pci_mmconfig_end_bus,
                platform.pci_is_virtual,
                platform.pci_domain,
            ),
        ),
    ]
    if len(platform.iommu_units) > _NUM_IOMMUS:
        raise ConfigError(
            "platform.iommu_units",
            len(platform.iommu_units),
            f"at most {_NUM_IOMMUS} IOMMU units fit in a system config",
        )
    for i in range(_NUM_IOMMUS):
        unit = platform.iommu_units[i] if i < len(platform.iommu_units) else None
        parts.append(_pack_iommu(unit, f"platform.iommu_units[{i}]."))
    parts.append(_pack_arch_info(system.arch, platform.arch_info))
    if len(system.root_header) != 8:
        raise ConfigError("root_header", system.root_header, "must be exactly 8 bytes")
    parts.append(_pack_cell_body(system.root_cell, system.root_header, prefix="root_cell."))
    return b"".join(parts)


_CONSOLE_FIELDS: Final = ("address", "size", "type", "flags", "divider", "gate_nr", "clock_reg")


def _console_values(con: Console) -> tuple[int, ...]:
    return (con.address, con.size, con.type, con.flags, con.divider, con.gate_nr, con.clock_reg)


def _pack_cell_body(cell: CellConfig, head: bytes, *, prefix: str) -> bytes:
    name = _encode_name(cell.name, prefix + "name")
    desc_fields = (
        "name",
        "id",
        "flags",
        "cpu_set_size",
        "num_memory_regions",
        "num_cache_regions",
        "num_irqchips",
        "num_pio_regions",
        "num_pci_devices",
        "num_pci_caps",
        "num_stream_ids",
        "vpci_irq_base",
        "cpu_reset_address",
        "msg_reply_timeout",
        *(f"console.{n}" for n in _CONSOLE_FIELDS),
    )
    desc_values = (
        name,
        cell.id,
        cell.flags,
        cell.cpu_set_size,
        len(cell.mem_regions),
        len(cell.cache_regions),
        len(cell.irqchips),
        len(cell.pio_regions),
        len(cell.pci_devices),
        len(cell.pci_caps),
        len(cell.stream_ids),
        cell.vpci_irq_base,
        cell.cpu_reset_address,
        cell.msg_reply_timeout,
        *_console_values(cell.console),
    )
    desc = _pack(_BODY, prefix, desc_fields, desc_values)
    parts = [head, desc, _pack_cpus(cell, prefix)]
    parts += [
        _pack(_MEMORY, f"{prefix}mem_regions[{i}].", _MEMORY_FIELDS, _memory_values(r))
        for i, r in enumerate(cell.mem_regions)
    ]
    parts += [
        _pack(
            _CACHE,
            f"{prefix}cache_regions[{i}].",
            ("start", "size", "type", "flags"),
            (c.start, c.size, c.type, c.flags),
        )
        for i, c in enumerate(cell.cache_regions)
    ]
    parts += [
        _pack(
            _IRQCHIP,
            f"{prefix}irqchips[{i}].",
            ("address", "id", "pin_base", *(f"pin_bitmap[{w}]" for w in range(4))),
            (
                c.address,
                c.id,
                c.pin_base,
                *_exact(c.pin_bitmap, 4, f"{prefix}irqchips[{i}].pin_bitmap"),
            ),
        )
        for i, c in enumerate(cell.irqchips)
    ]
    parts += [
        _pack(_PIO, f"{prefix}pio_regions[{i}].", ("base", "length"), (p.base, p.length))
        for i, p in enumerate(cell.pio_regions)
    ]
    parts += [
        _pack(_PCI_DEVICE, f"{prefix}pci_devices[{i}].", _PCI_FIELDS, _pci_values(d, prefix, i))
        for i, d in enumerate(cell.pci_devices)
    ]
    parts += [
        _pack(
            _PCI_CAP,
            f"{prefix}pci_caps[{i}].",
            ("id", "start", "len", "flags"),
            (c.id, c.start, c.len, c.flags),
        )
        for i, c in enumerate(cell.pci_caps)
    ]
    parts += [
        _pack(_STREAM_ID, f"{prefix}stream_ids[{i}]", ("",), (s,))
        for i, s in enumerate(cell.stream_ids)
    ]
    parts.append(cell.trailing)
    return b"".join(parts)


# The descriptor after its 8 header bytes.
_BODY: Final = struct.Struct("<" + _CELL_DESC.format.removeprefix("<5sBH"))
_MEMORY_FIELDS: Final = ("phys_start", "virt_start", "size", "flags")
_PCI_FIELDS: Final = (
    "type",
    "iommu",
    "domain",
    "bdf",
    *(f"bar_mask[{i}]" for i in range(6)),
    "caps_start",
    "num_caps",
    "num_msi_vectors",
    "msi_64bits/msi_maskable",
    "num_msix_vectors",
    "msix_region_size",
    "msix_address",
    "shmem_regions_start",
    "shmem_dev_id",
    "shmem_peers",
    "shmem_protocol",
)


def _memory_values(r: MemoryRegion) -> tuple[int, ...]:
    return (r.phys_start, r.virt_start, r.size, r.flags)


def _pci_values(d: PciDevice, prefix: str, i: int) -> tuple[int, ...]:
    return (
        d.type,
        d.iommu,
        d.domain,
        d.bdf,
        *_exact(d.bar_mask, 6, f"{prefix}pci_devices[{i}].bar_mask"),
        d.caps_start,
        d.num_caps,
        d.num_msi_vectors,
        int(d.msi_64bits) | int(d.msi_maskable) << 1,
        d.num_msix_vectors,
        d.msix_region_size,
        d.msix_address,
        d.shmem_regions_start,
        d.shmem_dev_id,
        d.shmem_peers,
        d.shmem_protocol,
    )


def _pack_cpus(cell: CellConfig, prefix: str) -> bytes:
    size = cell.cpu_set_size
    bits = 0
    for cpu in cell.cpus:
        if not 0 <= cpu < 8 * size:
            raise ConfigError(
                prefix + "cpus",
                cpu,
                f"CPU {cpu} does not fit in a CPU set of cpu_set_size {size} bytes",
            )
        bits |= 1 << cpu
    return bits.to_bytes(size, "little")


def _pack_iommu(unit: IommuUnit | None, prefix: str) -> bytes:
    if unit is None:
        return bytes(_IOMMU.size)
    if unit.type == IommuType.PVU:
        union = _pack(
            _IOMMU_PVU,
            prefix,
            ("tipvu_tlb_base", "tipvu_tlb_size"),
            (unit.tipvu_tlb_base, unit.tipvu_tlb_size),
        )
    else:
        union = _pack(
            _IOMMU_AMD,
            prefix,
            ("amd_bdf", "amd_base_cap", "amd_msi_cap", "amd_features"),
            (unit.amd_bdf, unit.amd_base_cap, unit.amd_msi_cap, unit.amd_features),
        )
    return _pack(
        _IOMMU, prefix, ("type", "base", "size", "union"), (unit.type, unit.base, unit.size, union)
    )


def _pack_arch_info(arch: Arch, info: X86Platform | ArmPlatform) -> bytes:
    if arch == Arch.X86:
        if not isinstance(info, X86Platform):
            raise ConfigError(
                "platform.arch_info", type(info).__name__, "an x86 system needs X86Platform"
            )
        return _pack(
            _X86_PLATFORM,
            "platform.arch_info.",
            ("pm_timer_address", "apic_mode", "vtd_interrupt_limit", "tsc_khz", "apic_khz"),
            (info.pm_timer_address, info.apic_mode, info.vtd_interrupt_limit, info.tsc_khz,
             info.apic_khz),
        )  # fmt: skip
    if not isinstance(info, ArmPlatform):
        raise ConfigError(
            "platform.arch_info", type(info).__name__, f"an {arch.name} system needs ArmPlatform"
        )
    return _pack(
        _ARM_PLATFORM,
        "platform.arch_info.",
        ("maintenance_irq", "gic_version", "gicd_base", "gicc_base", "gich_base", "gicv_base",
         "gicr_base"),
        (info.maintenance_irq, info.gic_version, info.gicd_base, info.gicc_base, info.gich_base,
         info.gicv_base, info.gicr_base),
    )  # fmt: skip


def _encode_name(name: str, path: str) -> bytes:
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(path, name, "cell names are bytes; use ASCII") from None
    if len(raw) > 32:
        raise ConfigError(path, name, "longer than the 32-byte name field")
    return raw


def _u8(path: str, value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ConfigError(path, value, "does not fit in 8 bits")
    return bytes((value,))


def _exact(values: Sequence[int], count: int, path: str) -> Sequence[int]:
    if len(values) != count:
        raise ConfigError(path, tuple(values), f"needs exactly {count} values")
    return values


def _pack(fmt: struct.Struct, prefix: str, names: Sequence[str], values: Sequence[object]) -> bytes:
    """Pack ``values``; on a value that does not fit, name its field."""
    try:
        return fmt.pack(*values)
    except (struct.error, TypeError, OverflowError):
        codes = _codes(fmt.format)
        for name, code, value in zip(names, codes, values, strict=True):
            try:
                struct.pack("<" + code, value)
            except (struct.error, TypeError, OverflowError):
                bits = struct.calcsize(code) * 8
                reason = (
                    f"does not fit in {bits // 8} bytes"
                    if code.endswith("s")
                    else f"does not fit in an unsigned {bits}-bit field"
                )
                raise ConfigError(prefix + name, value, reason) from None
        raise  # pragma: no cover - every failure above names a field


def _codes(fmt: str) -> list[str]:
    """Split a struct format into one code per value (``"5s"``, ``"I"`` ...), padding dropped."""
    codes: list[str] = []
    count = ""
    for ch in fmt.lstrip("<"):
        if ch.isdigit():
            count += ch
            continue
        if ch == "x":
            pass
        elif ch == "s":
            codes.append(count + "s")
        else:
            codes.extend([ch] * int(count or "1"))
        count = ""
    return codes
