"""Decode the ACPI tables the x86 probe needs: MCFG, DMAR, IVRS, MADT (APIC) and FADT.

Layouts are those of the ACPI specification (MCFG from the PCI Firmware spec, DMAR from
Intel's VT-d spec, IVRS from AMD's IOMMU spec); every table starts with the 36-byte
standard header.  A table that is too short raises :class:`ValueError` naming it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DmarUnit",
    "IoApic",
    "IvrsUnit",
    "McfgEntry",
    "parse_dmar",
    "parse_dmar_rmrr",
    "parse_fadt_pm_timer",
    "parse_ivrs",
    "parse_ivrs_memory",
    "parse_madt",
    "parse_mcfg",
]

HEADER: Final = 36


def _check(data: bytes, name: str, minimum: int) -> int:
    if len(data) < minimum or data[:4] != name.encode():
        raise ValueError(f"{name} table of {len(data)} bytes is not a valid {name} table")
    length: int = struct.unpack_from("<I", data, 4)[0]
    return min(length, len(data))


@dataclass(frozen=True, slots=True)
class McfgEntry:
    """One MMCONFIG (ECAM) window."""

    base: int
    segment: int
    start_bus: int
    end_bus: int


def parse_mcfg(data: bytes) -> list[McfgEntry]:
    """Return the MCFG's windows (header, 8 reserved bytes, then 16 bytes each)."""
    end = _check(data, "MCFG", HEADER + 8)
    return [
        McfgEntry(*struct.unpack_from("<QHBB", data, pos))
        for pos in range(HEADER + 8, end - 15, 16)
    ]


@dataclass(frozen=True, slots=True)
class DmarUnit:
    """A DMA remapping hardware unit (DRHD) of the DMAR table.

    Attributes:
        base: Register base address.
        size: Register set size (the DRHD's size field, 4 KiB pages as a power of two).
        segment: PCI segment.
        include_all: Covers every device of the segment not claimed by another unit.
        devices: BDFs of the PCI endpoints in its scope.
        bridges: BDFs of the bridges whose whole sub-hierarchy is in its scope.
        ioapics: ``(ioapic_id, source_bdf)`` of the IOAPICs in its scope.
    """

    base: int
    size: int
    segment: int
    include_all: bool
    devices: tuple[int, ...] = ()
    bridges: tuple[int, ...] = ()
    ioapics: tuple[tuple[int, int], ...] = field(default=())


def parse_dmar_rmrr(data: bytes) -> list[tuple[int, int]]:
    """Return the reserved memory regions (RMRR, type 1) of a DMAR table as ``[start, end)``."""
    end = _check(data, "DMAR", HEADER + 12)
    out: list[tuple[int, int]] = []
    pos = HEADER + 12
    while pos + 4 <= end:
        kind, length = struct.unpack_from("<HH", data, pos)
        if length < 4:
            break
        if kind == 1 and length >= 24:
            base, limit = struct.unpack_from("<QQ", data, pos + 8)
            out.append((base, limit + 1))
        pos += length
    return out


def _scope_bdf(data: bytes, pos: int, length: int) -> int:
    bus = data[pos + 5]
    path = data[pos + 6 : pos + length]
    dev, fn = (path[-2], path[-1]) if len(path) >= 2 else (0, 0)
    return bus << 8 | dev << 3 | fn


def parse_dmar(data: bytes) -> list[DmarUnit]:
    """Return the DRHD units of a DMAR table (48-byte header, then remapping structures)."""
    end = _check(data, "DMAR", HEADER + 12)
    units: list[DmarUnit] = []
    pos = HEADER + 12
    while pos + 4 <= end:
        kind, length = struct.unpack_from("<HH", data, pos)
        if length < 4:
            break
        if kind == 0 and length >= 16:
            flags, size, segment, base = struct.unpack_from("<BBHQ", data, pos + 4)
            devices: list[int] = []
            bridges: list[int] = []
            ioapics: list[tuple[int, int]] = []
            scope = pos + 16
            while scope + 6 <= pos + length:
                s_type, s_len = data[scope], data[scope + 1]
                if s_len < 6:
                    break
                bdf = _scope_bdf(data, scope, s_len)
                if s_type == 1:
                    devices.append(bdf)
                elif s_type == 2:
                    bridges.append(bdf)
                elif s_type == 3:
                    ioapics.append((data[scope + 4], bdf))
                scope += s_len
            units.append(
                DmarUnit(
                    base=base,
                    size=0x1000 << (size & 0xF),
                    segment=segment,
                    include_all=bool(flags & 1),
                    devices=tuple(devices),
                    bridges=tuple(bridges),
                    ioapics=tuple(ioapics),
                )
            )
        pos += length
    return units


@dataclass(frozen=True, slots=True)
class IvrsUnit:
    """An AMD IOMMU (IVHD block of the IVRS table).

    Attributes:
        bdf: The IOMMU's own PCI function.
        cap_offset: Its capability block in that function's config space.
        base: Register base address.
        segment: PCI segment.
        features: The IVHD's feature reporting field (type 0x10) or EFR image (0x11, 0x40).
        block_type: 0x10, 0x11 or 0x40.
        ioapics: ``(ioapic_id, source_bdf)`` of IOAPIC special entries.
    """

    bdf: int
    cap_offset: int
    base: int
    segment: int
    features: int
    block_type: int = 0x10
    ioapics: tuple[tuple[int, int], ...] = ()


_IVHD_ENTRY_SIZE: Final = {
    0: 4,
    1: 4,
    2: 4,
    3: 4,
    4: 4,
    0x42: 8,
    0x43: 8,
    0x46: 8,
    0x47: 8,
    0x48: 8,
}


def parse_ivrs(data: bytes) -> list[IvrsUnit]:
    """Return the IVHD units of an IVRS table (48-byte header, then IVHD/IVMD blocks).

    When a type 0x11/0x40 block describes the same IOMMU as a type 0x10 block, the first
    block of that IOMMU wins, as the kernel's driver picks one type per IOMMU.
    """
    end = _check(data, "IVRS", HEADER + 12)
    units: dict[tuple[int, int], IvrsUnit] = {}
    pos = HEADER + 12
    while pos + 4 <= end:
        kind, _flags, length = struct.unpack_from("<BBH", data, pos)
        if length < 4:
            break
        if kind in {0x10, 0x11, 0x40} and length >= 24:
            bdf, cap, base, segment, _info = struct.unpack_from("<HHQHH", data, pos + 4)
            if kind == 0x10:
                features = struct.unpack_from("<I", data, pos + 20)[0]
                entries = pos + 24
            else:
                features = struct.unpack_from("<Q", data, pos + 24)[0]
                entries = pos + 40
            ioapics: list[tuple[int, int]] = []
            while entries + 4 <= pos + length:
                e_type = data[entries]
                size = _IVHD_ENTRY_SIZE.get(e_type, 4 if e_type < 0x40 else 8)
                if e_type == 0xF0:  # ACPI HID device: variable length
                    size = 22 + data[entries + 21] if entries + 22 <= pos + length else 4
                if e_type == 0x48 and data[entries + 7] == 1:
                    source = struct.unpack_from("<H", data, entries + 5)[0]
                    ioapics.append((data[entries + 4], source))
                entries += size
            units.setdefault(
                (segment, bdf),
                IvrsUnit(bdf, cap, base, segment, features, kind, tuple(ioapics)),
            )
        pos += length
    return list(units.values())


def parse_ivrs_memory(data: bytes) -> list[tuple[int, int]]:
    """Return the IVMD blocks' (types 0x20-0x22) memory ranges of an IVRS table."""
    end = _check(data, "IVRS", HEADER + 12)
    out: list[tuple[int, int]] = []
    pos = HEADER + 12
    while pos + 4 <= end:
        kind, _flags, length = struct.unpack_from("<BBH", data, pos)
        if length < 4:
            break
        if kind in {0x20, 0x21, 0x22} and length >= 32:
            start, size = struct.unpack_from("<QQ", data, pos + 16)
            out.append((start, start + size))
        pos += length
    return out


@dataclass(frozen=True, slots=True)
class IoApic:
    """An IOAPIC entry of the MADT."""

    id: int
    address: int
    gsi_base: int


def parse_madt(data: bytes) -> tuple[list[IoApic], list[int]]:
    """Return the MADT's IOAPICs and the APIC IDs of its enabled local (x2)APICs."""
    end = _check(data, "APIC", HEADER + 8)
    ioapics: list[IoApic] = []
    apic_ids: list[int] = []
    pos = HEADER + 8
    while pos + 2 <= end:
        kind, length = data[pos], data[pos + 1]
        if length < 2:
            break
        if kind == 0 and length >= 8:
            _proc, apic_id, flags = struct.unpack_from("<BBI", data, pos + 2)
            if flags & 1:
                apic_ids.append(apic_id)
        elif kind == 1 and length >= 12:
            io_id, _res, address, gsi = struct.unpack_from("<BBII", data, pos + 2)
            ioapics.append(IoApic(io_id, address, gsi))
        elif kind == 9 and length >= 16:
            _res2, x2apic_id, flags = struct.unpack_from("<HII", data, pos + 2)
            if flags & 1:
                apic_ids.append(x2apic_id)
        pos += length
    return ioapics, apic_ids


def parse_fadt_pm_timer(data: bytes) -> int:
    """Return the ACPI PM timer port (FADT ``PM_TMR_BLK`` at offset 76), or 0."""
    end = _check(data, "FACP", 80)
    return struct.unpack_from("<I", data, 76)[0] if end >= 80 else 0
