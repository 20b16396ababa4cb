"""Read PCI devices from ``ROOT/sys/bus/pci/devices``: header, BARs and capabilities.

Capability lengths and write permissions follow what upstream's config generator grants
(facts, reimplemented): power management 8 bytes, writable; MSI 10 bytes plus 4 for 64-bit
addresses plus 10 for per-vector masking, writable; MSI-X 12 bytes, writable; PCI Express
20 bytes (version 1) or 60 (version 2), read-only; every other standard capability 2 bytes,
read-only.  Extended capabilities are walked only behind a PCI Express capability and are
read-only, with the lengths of :data:`EXT_CAP_LENGTHS` (4 bytes for the rest).  A function
of class 0x0604 is a bridge; one whose vendor/device word reads all ones is left out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import PciCapability, PciCapFlag, PciDevice, PciType

if TYPE_CHECKING:
    from jailhouse.configgen._common import HostTree

__all__ = ["ProbedPci", "read_pci_devices"]

CAP_PM: Final = 0x01
CAP_MSI: Final = 0x05
CAP_EXP: Final = 0x10
CAP_MSIX: Final = 0x11
EXT_CAP: Final = 0x8000
EXT_CAP_LENGTHS: Final = {
    0x01: 64,  # advanced error reporting
    0x02: 16,  # virtual channel (its first four dwords)
    0x03: 12,  # device serial number
    0x04: 16,  # power budgeting
    0x08: 4,  # multi-function virtual channel
    0x09: 16,  # virtual channel (MFVC present)
    0x0E: 8,  # alternative routing-ID
    0x10: 64,  # SR-IOV
    0x12: 48,  # multicast
    0x18: 8,  # latency tolerance reporting
    0x19: 16,  # secondary PCI Express
    0x1B: 8,  # PASID
    0x1F: 12,  # precision time measurement
}
"""Bytes of the extended capabilities upstream's generator sizes (PCI spec IDs)."""
EXT_CAP_VNDR: Final = 0x0B
EXT_CAP_ACS: Final = 0x0D
_IORESOURCE_IO: Final = 0x100
_IORESOURCE_MEM: Final = 0x200
_IORESOURCE_MEM_64: Final = 0x00100000


@dataclass(frozen=True, slots=True)
class ProbedPci:
    """One PCI function as read from sysfs.

    Attributes:
        name: The sysfs name, ``0000:00:1f.2``.
        device: The config entry (caps_start still 0; :func:`place_caps` sets it).
        caps: The capabilities the cell may see.
        class_code: The 24-bit class code.
        bars: ``(start, end, flags)`` of the six BARs (zeros when unused).
    """

    name: str
    device: PciDevice
    caps: tuple[PciCapability, ...]
    class_code: int
    bars: tuple[tuple[int, int, int], ...]
    secondary_buses: tuple[int, int] = (0, 0)


def _parse_name(name: str) -> tuple[int, int]:
    """Return ``(domain, bdf)`` of a sysfs name ``DDDD:BB:DD.F``."""
    domain, bus, devfn = name.split(":")
    dev, fn = devfn.split(".")
    return int(domain, 16), int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn, 16)


def _resources(text: str | None) -> list[tuple[int, int, int]]:
    rows: list[tuple[int, int, int]] = []
    for line in (text or "").splitlines()[:6]:
        parts = line.split()
        if len(parts) == 3:
            rows.append((int(parts[0], 16), int(parts[1], 16), int(parts[2], 16)))
    rows += [(0, 0, 0)] * (6 - len(rows))
    return rows


def _bar_masks(rows: list[tuple[int, int, int]]) -> tuple[int, int, int, int, int, int]:
    masks = [0] * 6
    i = 0
    while i < 6:
        start, end, flags = rows[i]
        if end > start and flags & (_IORESOURCE_IO | _IORESOURCE_MEM):
            mask = ~(end - start) & 0xFFFFFFFFFFFFFFFF
            masks[i] = mask & 0xFFFFFFFF
            if flags & _IORESOURCE_MEM_64 and i < 5:
                masks[i + 1] = mask >> 32
                i += 1
        i += 1
    return (masks[0], masks[1], masks[2], masks[3], masks[4], masks[5])


def _caps(config: bytes) -> tuple[list[PciCapability], dict[str, int]]:
    """Walk the standard and extended capability lists."""
    caps: list[PciCapability] = []
    info: dict[str, int] = {}
    status = struct.unpack_from("<H", config, 0x06)[0] if len(config) >= 8 else 0
    pos = config[0x34] & 0xFC if status & 0x10 and len(config) > 0x34 else 0
    seen: set[int] = set()
    while pos and pos not in seen and pos + 2 <= len(config):
        seen.add(pos)
        cap_id, nxt = config[pos], config[pos + 1]
        flags = PciCapFlag.WRITE
        if cap_id == CAP_PM:
            length = 8
        elif cap_id == CAP_MSI:
            ctrl = struct.unpack_from("<H", config, pos + 2)[0]
            is64, maskable = bool(ctrl & 0x80), bool(ctrl & 0x100)
            length = 10 + (4 if is64 else 0) + (10 if maskable else 0)
            info["msi_vectors"] = 1 << (ctrl >> 1 & 7)
            info["msi_64"] = int(is64)
            info["msi_mask"] = int(maskable)
        elif cap_id == CAP_MSIX:
            ctrl, table = struct.unpack_from("<HI", config, pos + 2)
            length = 12
            info["msix_vectors"] = (ctrl & 0x7FF) + 1
            info["msix_bir"] = table & 7
            info["msix_offset"] = table & ~7
        elif cap_id == CAP_EXP:
            length = 20 if config[pos + 2] & 0xF < 2 else 60
            flags = PciCapFlag(0)
            info["express"] = 1
        else:
            length, flags = 2, PciCapFlag(0)
        caps.append(PciCapability(cap_id, pos, length, flags))
        pos = nxt & 0xFC
    pos = 0x100 if info.get("express") else 0
    seen.clear()
    while 0x100 <= pos <= len(config) - 4 and pos not in seen:
        seen.add(pos)
        header = struct.unpack_from("<I", config, pos)[0]
        ext_id = header & 0xFFFF
        if header in {0, 0xFFFFFFFF} or ext_id & EXT_CAP:
            break
        length = EXT_CAP_LENGTHS.get(ext_id, 4)
        if ext_id == EXT_CAP_VNDR and pos + 8 <= len(config):
            length = 4 + (struct.unpack_from("<I", config, pos + 4)[0] >> 20)
        elif ext_id == EXT_CAP_ACS and pos + 8 <= len(config):
            acs_cap, acs_ctrl = struct.unpack_from("<HH", config, pos + 4)
            length = 8
            if acs_cap & 0x20 and acs_ctrl & 0x20:  # egress control: a vector follows
                bits = acs_cap >> 8 or 256
                length += (bits + 31) // 32
        caps.append(PciCapability(EXT_CAP | ext_id, pos, length, PciCapFlag(0)))
        pos = header >> 20 & 0xFFC
    return caps, info


def read_pci_devices(host: HostTree) -> list[ProbedPci]:
    """Read every function under ``/sys/bus/pci/devices`` (``iommu`` left 0).

    Returns:
        The functions by domain and BDF.
    """
    out: list[ProbedPci] = []
    base = "/sys/bus/pci/devices"
    for name in host.listdir(base):
        try:
            domain, bdf = _parse_name(name)
        except ValueError:
            continue
        config = host.bytes(f"{base}/{name}/config") or b""
        if len(config) < 64 or config[:4] == b"\xff\xff\xff\xff":
            continue
        kind = PciType.BRIDGE if config[0x0A:0x0C] == b"\x04\x06" else PciType.DEVICE
        rows = _resources(host.text(f"{base}/{name}/resource"))
        caps, info = _caps(config)
        msix_address = 0
        msix_size = 0
        if "msix_vectors" in info:
            bar_start = rows[info["msix_bir"]][0]
            msix_address = bar_start + info["msix_offset"] if bar_start else 0
            msix_size = (info["msix_vectors"] * 16 + 0xFFF) & ~0xFFF
        class_code = struct.unpack_from("<I", config, 0x08)[0] >> 8
        device = PciDevice(
            type=kind,
            bdf=bdf,
            domain=domain,
            bar_mask=_bar_masks(rows),
            num_caps=len(caps),
            num_msi_vectors=info.get("msi_vectors", 0),
            msi_64bits=bool(info.get("msi_64", 0)),
            msi_maskable=bool(info.get("msi_mask", 0)),
            num_msix_vectors=info.get("msix_vectors", 0),
            msix_region_size=msix_size,
            msix_address=msix_address,
        )
        buses = (config[0x19], config[0x1A]) if kind is PciType.BRIDGE else (0, 0)
        out.append(ProbedPci(name, device, tuple(caps), class_code, tuple(rows), buses))
    return sorted(out, key=lambda p: (p.device.domain, p.device.bdf))


def place_caps(devices: list[ProbedPci]) -> tuple[tuple[PciDevice, ...], tuple[PciCapability, ...]]:
    """Lay the devices' capabilities out in one array, sharing equal lists.

    Returns:
        The devices with ``caps_start`` set, and the capability array.
    """
    from dataclasses import replace  # noqa: PLC0415

    table: list[PciCapability] = []
    starts: dict[tuple[PciCapability, ...], int] = {}
    placed: list[PciDevice] = []
    for probed in devices:
        caps = probed.caps
        if caps and caps not in starts:
            starts[caps] = len(table)
            table.extend(caps)
        placed.append(replace(probed.device, caps_start=starts.get(caps, 0)))
    return tuple(placed), tuple(table)
