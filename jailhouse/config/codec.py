"""Pack and parse the binary config format, byte-exactly.

The formats below mirror the packed structs of ``cell-config.h`` (revision 14);
``tests/test_layout.py`` checks every size and offset against the structs the C compiler
lays out in the cffi shim.  Parsing never raises anything but
:class:`~jailhouse.errors.InvalidConfigError`, naming the field, its byte offset and the
value; packing raises :class:`~jailhouse.errors.ConfigError` naming the field path.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import (
    CELL_SIGNATURE,
    CONFIG_REVISION,
    SYSTEM_SIGNATURE,
    ApicMode,
    Arch,
    ArmPlatform,
    CacheFlag,
    CacheRegion,
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

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "CELL_DESC_SIZE",
    "SYSTEM_HEADER_SIZE",
    "pack_cell",
    "pack_system",
    "parse_cell",
    "parse_system",
]

# struct jailhouse_cell_desc: signature, architecture, revision, name, then eleven u32
# (id, flags, cpu_set_size, the eight counts, vpci_irq_base), cpu_reset_address,
# msg_reply_timeout, and the embedded struct jailhouse_console.
_CELL_DESC: Final = struct.Struct("<5sBH32s11IQQ" + "QIHHIIQ")
CELL_DESC_SIZE: Final = _CELL_DESC.size
_CONSOLE: Final = struct.Struct("<QIHHIIQ")
_MEMORY: Final = struct.Struct("<QQQQ")
_CACHE: Final = struct.Struct("<IIBxH")
_IRQCHIP: Final = struct.Struct("<QII4I")
_PIO: Final = struct.Struct("<HH")
_PCI_DEVICE: Final = struct.Struct("<BBHH6IHHBBHHQIBBH")
_PCI_CAP: Final = struct.Struct("<HHHH")
_STREAM_ID: Final = struct.Struct("<I")
# struct jailhouse_system up to platform_info: signature, architecture, revision, flags,
# hypervisor_memory, debug_console.
_SYSTEM_HEAD: Final = struct.Struct("<5sBHI" + "QQQQ" + "QIHHIIQ")
_PLATFORM_PCI: Final = struct.Struct("<QBBH")
_IOMMU: Final = struct.Struct("<IQI12s")
_IOMMU_AMD: Final = struct.Struct("<HBBI4x")
_IOMMU_PVU: Final = struct.Struct("<QI")
_X86_PLATFORM: Final = struct.Struct("<HBxIII28x")
_ARM_PLATFORM: Final = struct.Struct("<BB2xQQQQQ")
_NUM_IOMMUS: Final = 8
SYSTEM_HEADER_SIZE: Final = (
    _SYSTEM_HEAD.size + _PLATFORM_PCI.size + _NUM_IOMMUS * _IOMMU.size + _ARM_PLATFORM.size
)
_ROOT_CELL_OFFSET: Final = SYSTEM_HEADER_SIZE
_SIGNATURE_LEN: Final = 5

# Offsets of the descriptor's count fields, for error messages.
_COUNT_OFFSETS: Final = {
    "cpu_set_size": 48,
    "num_memory_regions": 52,
    "num_cache_regions": 56,
    "num_irqchips": 60,
    "num_pio_regions": 64,
    "num_pci_devices": 68,
    "num_pci_caps": 72,
    "num_stream_ids": 76,
}


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
    cell, end = _parse_cell_at(data, 0, arch)
    return cell if end == len(data) else _with_trailing(cell, data[end:])


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
    flags = SystemFlag(head[3])
    hv_mem = MemoryRegion(head[4], head[5], head[6], MemFlag(head[7]))
    debug_console = _console(head[8:15])
    offset = _SYSTEM_HEAD.size
    mmconfig_base, end_bus, is_virtual, pci_domain = _PLATFORM_PCI.unpack_from(data, offset)
    offset += _PLATFORM_PCI.size
    units = [_parse_iommu(data, offset + i * _IOMMU.size) for i in range(_NUM_IOMMUS)]
    while units and units[-1] == IommuUnit(IommuType.UNUSED):
        units.pop()
    offset += _NUM_IOMMUS * _IOMMU.size
    arch_info: X86Platform | ArmPlatform
    if arch == Arch.X86:
        pm_timer, apic_mode, vtd_limit, tsc_khz, apic_khz = _X86_PLATFORM.unpack_from(data, offset)
        arch_info = X86Platform(pm_timer, ApicMode(apic_mode), vtd_limit, tsc_khz, apic_khz)
    else:
        arch_info = ArmPlatform(*_ARM_PLATFORM.unpack_from(data, offset))
    platform = PlatformInfo(
        pci_mmconfig_base=mmconfig_base,
        pci_mmconfig_end_bus=end_bus,
        pci_is_virtual=is_virtual,
        pci_domain=pci_domain,
        iommu_units=tuple(units),
        arch_info=arch_info,
    )
    root, end = _parse_cell_at(data, _ROOT_CELL_OFFSET, arch, prefix="root_cell.")
    if end != len(data):
        root = _with_trailing(root, data[end:])
    return SystemConfig(
        arch=arch,
        flags=flags,
        hypervisor_memory=hv_mem,
        debug_console=debug_console,
        platform=platform,
        root_cell=root,
        root_header=data[_ROOT_CELL_OFFSET : _ROOT_CELL_OFFSET + 8],
    )


def _check_header(data: bytes, signature: bytes, *, old: bytes, what: str) -> Arch:
    """Check signature, revision and architecture; return the architecture."""
    (revision,) = struct.unpack_from("<H", data, 6)
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
    arch = Arch(data[5])
    if not arch.known:
        raise InvalidConfigError(
            "architecture", data[5], "unknown architecture (0 x86, 1 arm, 2 arm64)", offset=5
        )
    return arch


def _parse_cell_at(
    data: bytes, base: int, arch: Arch, *, prefix: str = ""
) -> tuple[CellConfig, int]:
    """Parse the descriptor at ``base`` and its arrays; return the cell and its end."""
    f = _CELL_DESC.unpack_from(data, base)
    (
        cell_id,
        flags,
        cpu_set_size,
        n_mem,
        n_cache,
        n_irq,
        n_pio,
        n_pci,
        n_caps,
        n_streams,
        vpci_irq_base,
    ) = f[4:15]
    offset = base + CELL_DESC_SIZE
    extents = (
        ("cpu_set_size", cpu_set_size, 1),
        ("num_memory_regions", n_mem, _MEMORY.size),
        ("num_cache_regions", n_cache, _CACHE.size),
        ("num_irqchips", n_irq, _IRQCHIP.size),
        ("num_pio_regions", n_pio, _PIO.size),
        ("num_pci_devices", n_pci, _PCI_DEVICE.size),
        ("num_pci_caps", n_caps, _PCI_CAP.size),
        ("num_stream_ids", n_streams, _STREAM_ID.size),
    )
    starts: list[int] = []
    for name, count, item in extents:
        starts.append(offset)
        offset += count * item
        if offset > len(data):
            raise InvalidConfigError(
                prefix + name,
                count,
                f"the arrays it declares run to byte {offset} but the config has {len(data)} bytes",
                offset=base + _COUNT_OFFSETS[name],
            )
    s_cpu, s_mem, s_cache, s_irq, s_pio, s_pci, s_caps, s_streams = starts
    bits = int.from_bytes(data[s_cpu : s_cpu + cpu_set_size], "little")
    cpus: set[int] = set()
    while bits:
        low = bits & -bits
        cpus.add(low.bit_length() - 1)
        bits ^= low
    cell = CellConfig(
        name=_name(f[3]),
        arch=arch,
        id=cell_id,
        flags=CellFlag(flags),
        cpus=frozenset(cpus),
        cpu_set_size=cpu_set_size,
        mem_regions=tuple(
            MemoryRegion(p, v, s, MemFlag(fl))
            for p, v, s, fl in _items(_MEMORY, data, s_mem, n_mem)
        ),
        cache_regions=tuple(
            CacheRegion(st, sz, CacheType(t), CacheFlag(fl))
            for st, sz, t, fl in _items(_CACHE, data, s_cache, n_cache)
        ),
        irqchips=tuple(
            IrqChip(a, i, pb, (b0, b1, b2, b3))
            for a, i, pb, b0, b1, b2, b3 in _items(_IRQCHIP, data, s_irq, n_irq)
        ),
        pio_regions=tuple(PioRegion(b, n) for b, n in _items(_PIO, data, s_pio, n_pio)),
        pci_devices=tuple(_pci_device(v) for v in _items(_PCI_DEVICE, data, s_pci, n_pci)),
        pci_caps=tuple(
            PciCapability(i, st, ln, PciCapFlag(fl))
            for i, st, ln, fl in _items(_PCI_CAP, data, s_caps, n_caps)
        ),
        stream_ids=tuple(v for (v,) in _items(_STREAM_ID, data, s_streams, n_streams)),
        vpci_irq_base=vpci_irq_base,
        cpu_reset_address=f[15],
        msg_reply_timeout=f[16],
        console=_console(f[17:24]),
    )
    return cell, offset


def _items(fmt: struct.Struct, data: bytes, start: int, count: int) -> Iterable[tuple[int, ...]]:
    if not count:
        return ()
    return fmt.iter_unpack(data[start : start + count * fmt.size])


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _console(v: Sequence[int]) -> Console:
    address, size, con_type, flags, divider, gate_nr, clock_reg = v
    return Console(
        address, size, ConsoleType(con_type), ConsoleFlag(flags), divider, gate_nr, clock_reg
    )


def _pci_device(v: tuple[int, ...]) -> PciDevice:
    msi_bits = v[13]
    return PciDevice(
        type=PciType(v[0]),
        iommu=v[1],
        domain=v[2],
        bdf=v[3],
        bar_mask=(v[4], v[5], v[6], v[7], v[8], v[9]),
        caps_start=v[10],
        num_caps=v[11],
        num_msi_vectors=v[12],
        msi_64bits=bool(msi_bits & 1),
        msi_maskable=bool(msi_bits & 2),
        num_msix_vectors=v[14],
        msix_region_size=v[15],
        msix_address=v[16],
        shmem_regions_start=v[17],
        shmem_dev_id=v[18],
        shmem_peers=v[19],
        shmem_protocol=v[20],
    )


def _parse_iommu(data: bytes, offset: int) -> IommuUnit:
    unit_type, base, size, union = _IOMMU.unpack_from(data, offset)
    kind = IommuType(unit_type)
    if kind == IommuType.PVU:
        tlb_base, tlb_size = _IOMMU_PVU.unpack(union)
        return IommuUnit(kind, base, size, tipvu_tlb_base=tlb_base, tipvu_tlb_size=tlb_size)
    bdf, base_cap, msi_cap, features = _IOMMU_AMD.unpack(union)
    return IommuUnit(kind, base, size, bdf, base_cap, msi_cap, features)


def _with_trailing(cell: CellConfig, trailing: bytes) -> CellConfig:
    return cell.replace(trailing=trailing)


# -- packing -------------------------------------------------------------------------------


def pack_cell(cell: CellConfig) -> bytes:
    """Pack a cell config, with its signature, into the ``.cell`` format.

    Raises:
        ConfigError: A value does not fit its field; the error names the field path.
    """
    head = CELL_SIGNATURE + _u8("arch", cell.arch) + struct.pack("<H", CONFIG_REVISION)
    return _pack_cell_body(cell, head, prefix="")


def pack_system(system: SystemConfig) -> bytes:
    """Pack a system config and its root cell into the format ENABLE takes.

    Raises:
        ConfigError: A value does not fit its field; the error names the field path.
    """
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
