"""Cell config to domain XML: :func:`cell_to_domain`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from lxml import etree

from jailhouse.config.model import NAME_MAXLEN, Arch, CellFlag, PciType
from jailhouse.domxml._meta import build_metadata
from jailhouse.domxml._to_cell import has_console, memory_kib, vcpu_count
from jailhouse.errors import TranslationError

if TYPE_CHECKING:
    from jailhouse.config.model import CellConfig, PciDevice
    from jailhouse.domxml._types import BootSpec

__all__ = ["cell_to_domain"]

MAX_PINNED_CPU: Final = 16383
"""libvirt parses cpusets into bitmaps of 16384 CPUs."""
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
_DOMAIN_TYPE: Final = re.compile(r"[a-z][a-z0-9_-]*")
_ARCH_NAMES: Final = {Arch.X86: "x86_64", Arch.ARM: "armv7l", Arch.ARM64: "aarch64"}


def _clean_name(name: str) -> bool:
    """Whether a name can be a libvirt ``<name>`` that reads back as the same cell name."""
    raw = name.encode("latin-1", "replace")
    return (
        0 < len(raw) <= NAME_MAXLEN and all(0x20 <= ord(c) < 0x7F for c in name) and "/" not in name
    )


def _arch_name(cell: CellConfig) -> str | None:
    if cell.arch == Arch.ARM64 and CellFlag.AARCH32 in cell.flags:
        return "armv7l"
    return _ARCH_NAMES.get(cell.arch)


def _size_element(parent: etree._Element, size: int) -> None:
    el = etree.SubElement(parent, "size")
    for unit, factor in (("M", 1 << 20), ("KiB", 1 << 10)):
        if size % factor == 0:
            el.set("unit", unit)
            el.text = str(size // factor)
            return
    el.set("unit", "b")
    el.text = str(size)


def _pci_address(parent: etree._Element, tag: str, device: PciDevice) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if tag == "address" and parent.tag == "shmem":
        el.set("type", "pci")
    el.set("domain", f"{device.domain:#06x}")
    el.set("bus", f"{device.bdf >> 8:#04x}")
    el.set("slot", f"{(device.bdf >> 3) & 0x1F:#04x}")
    el.set("function", f"{device.bdf & 7:#x}")
    return el


def cell_to_domain(
    config: CellConfig,
    *,
    domain_type: str = "jailhouse",
    boot: BootSpec | None = None,
    uuid: str | None = None,
) -> str:
    """Describe a cell config as libvirt domain XML.

    Standard elements carry what libvirt can say (name, vCPUs pinned 1:1 to the cell's
    CPUs, the RAM, architecture, Linux boot, console, PCI host devices, ivshmem links); the
    ``jailhouse`` metadata carries the whole config exactly, so
    :func:`~jailhouse.domxml.domain_to_cell` gives the same bytes back.

    Args:
        config: The cell config.
        domain_type: The domain's ``type``; with one libvirt knows (``kvm``, ``test``...)
            the XML validates against libvirt's schema and libvirt accepts it.
        boot: A boot spec to record (``<os><kernel>``... or metadata images).
        uuid: A ``<uuid>`` to write.

    Returns:
        The XML document.

    Raises:
        TranslationError: ``domain_type`` or ``uuid`` is malformed, the name is not
            latin-1 (no cell config could hold it), or a boot path holds characters XML
            cannot carry.
    """
    if not _DOMAIN_TYPE.fullmatch(domain_type):
        raise TranslationError(
            "/domain/@type", domain_type, "expected a lower-case word such as jailhouse or kvm"
        )
    if uuid is not None and not _UUID.fullmatch(uuid):
        raise TranslationError("/domain/uuid", uuid, "not a UUID (32 hex digits)")
    try:
        config.name.encode("latin-1")
    except UnicodeEncodeError:
        raise TranslationError(
            "/domain/name", config.name, "a cell name is bytes: use latin-1 characters"
        ) from None
    domain = etree.Element("domain", type=domain_type)
    clean = _clean_name(config.name)
    name = etree.SubElement(domain, "name")
    name.text = (
        config.name if clean else "cell-" + (config.name.encode("latin-1").hex() or "unnamed")
    )
    if uuid is not None:
        etree.SubElement(domain, "uuid").text = uuid.lower()
    arch = _arch_name(config)
    metadata = etree.SubElement(domain, "metadata")
    images = boot.images if boot is not None else ()
    metadata.append(build_metadata(config, images, name_hex=not clean, arch=arch is None))
    memory = etree.SubElement(domain, "memory", unit="KiB")
    memory.text = str(memory_kib(config.mem_regions))
    vcpu = etree.SubElement(domain, "vcpu", placement="static")
    vcpu.text = str(vcpu_count(config.cpus))
    cpus = sorted(config.cpus)
    if cpus and len(cpus) <= vcpu_count(config.cpus) and cpus[-1] <= MAX_PINNED_CPU:
        cputune = etree.SubElement(domain, "cputune")
        for index, cpu in enumerate(cpus):
            etree.SubElement(cputune, "vcpupin", vcpu=str(index), cpuset=str(cpu))
    os_el = etree.SubElement(domain, "os")
    type_el = etree.SubElement(os_el, "type")
    if arch is not None:
        type_el.set("arch", arch)
    type_el.text = "hvm"
    try:
        if boot is not None and boot.kernel is not None:
            for tag in ("kernel", "initrd", "cmdline", "dtb"):
                value = getattr(boot, tag)
                if value is not None:
                    etree.SubElement(os_el, tag).text = value
        devices = etree.SubElement(domain, "devices")
        if has_console(config.flags, config.console):
            console = etree.SubElement(devices, "console", type="pty")
            etree.SubElement(console, "target", type="serial", port="0")
        seen: set[tuple[int, int]] = set()
        for device in config.pci_devices:
            if device.type == PciType.IVSHMEM or (device.domain, device.bdf) in seen:
                continue
            seen.add((device.domain, device.bdf))
            hostdev = etree.SubElement(devices, "hostdev", mode="subsystem", type="pci")
            _pci_address(etree.SubElement(hostdev, "source"), "address", device)
        etree.SubElement(devices, "memballoon", model="none")
        names: set[str] = set()
        for device in config.pci_devices:
            if device.type != PciType.IVSHMEM:
                continue
            bus, slot, function = device.bdf >> 8, (device.bdf >> 3) & 0x1F, device.bdf & 7
            base = f"jailhouse-ivshmem-{bus:02x}:{slot:02x}.{function:x}"
            shmem_name, n = base, 1
            while shmem_name in names:
                n += 1
                shmem_name = f"{base}-{n}"
            names.add(shmem_name)
            shmem = etree.SubElement(devices, "shmem", name=shmem_name)
            doorbell = device.num_msix_vectors > 0
            etree.SubElement(
                shmem, "model", type="ivshmem-doorbell" if doorbell else "ivshmem-plain"
            )
            index = device.shmem_regions_start + 1
            if index < len(config.mem_regions) and config.mem_regions[index].size:
                _size_element(shmem, config.mem_regions[index].size)
            if doorbell:
                etree.SubElement(shmem, "server")
                etree.SubElement(shmem, "msi", vectors=str(device.num_msix_vectors))
            _pci_address(shmem, "address", device)
    except ValueError as exc:  # lxml refuses text XML cannot carry (control characters)
        raise TranslationError("/domain/os", None, f"cannot be written as XML: {exc}") from exc
    return etree.tostring(domain, encoding="unicode", pretty_print=True)
