"""Hypothesis strategies for every config model type, and for libvirt domain XML.

Every strategy draws values that fit their binary fields, so what it builds packs; and the
cell and system strategies build only configs that parse back equal (``parse(pack(c)) ==
c``).  That excludes what the format cannot carry: names with a NUL byte or longer than
31 bytes, CPUs outside the CPU set, trailing all-zero unused IOMMU slots (packed as
zeros, dropped on parse), AMD fields on a PVU unit and PVU fields on any other, and an
arch union that does not match the architecture.

The domain strategies draw documents for the example systems (valid for a cell or not) and
damaged copies of them; :func:`dom` and :func:`shmem` build such documents by hand.
"""

from __future__ import annotations

from typing import TypeVar

from hypothesis import strategies as st
from lxml import etree

from jailhouse.config.model import (
    NAME_MAXLEN,
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
from jailhouse.linux.fdt import DeviceTree, Node

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)

arches = st.sampled_from([Arch.X86, Arch.ARM, Arch.ARM64])
"""The architectures a config may declare."""

MAX_ITEMS = 4
"""Longest array a generated cell carries, to keep examples small."""


T = TypeVar("T")


def _items(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[tuple[T, ...]]:
    return st.lists(strategy, max_size=MAX_ITEMS).map(tuple)


names = st.text(
    st.characters(min_codepoint=1, max_codepoint=0xFF), min_size=0, max_size=NAME_MAXLEN
)
"""Cell names the 32-byte field carries: latin-1 characters, no NUL, at most 31."""


@st.composite
def consoles(draw: st.DrawFn) -> Console:
    """Draw a console struct with any type code and flag bits."""
    return Console(
        address=draw(u64),
        size=draw(u32),
        type=ConsoleType(draw(st.sampled_from([*ConsoleType]) | u16)),
        flags=ConsoleFlag(draw(u16)),
        divider=draw(u32),
        gate_nr=draw(u32),
        clock_reg=draw(u64),
    )


@st.composite
def memory_regions(draw: st.DrawFn) -> MemoryRegion:
    """Draw a memory region with any addresses and flag bits."""
    flags = draw(st.sampled_from([MemFlag(0), MemFlag.READ | MemFlag.WRITE]) | u64)
    return MemoryRegion(draw(u64), draw(u64), draw(u64), MemFlag(flags))


@st.composite
def cache_regions(draw: st.DrawFn) -> CacheRegion:
    """Draw a cache region with any type code."""
    return CacheRegion(draw(u32), draw(u32), CacheType(draw(u8)), CacheFlag(draw(u16)))


@st.composite
def irqchips(draw: st.DrawFn) -> IrqChip:
    """Draw an irqchip entry."""
    bitmap = (draw(u32), draw(u32), draw(u32), draw(u32))
    return IrqChip(draw(u64), draw(u32), draw(u32), bitmap)


@st.composite
def pio_regions(draw: st.DrawFn) -> PioRegion:
    """Draw an x86 port I/O range."""
    return PioRegion(draw(u16), draw(u16))


@st.composite
def pci_devices(draw: st.DrawFn) -> PciDevice:
    """Draw a PCI device entry with any type code."""
    return PciDevice(
        type=PciType(draw(st.sampled_from([*PciType]) | u8)),
        iommu=draw(u8),
        domain=draw(u16),
        bdf=draw(u16),
        bar_mask=(draw(u32), draw(u32), draw(u32), draw(u32), draw(u32), draw(u32)),
        caps_start=draw(u16),
        num_caps=draw(u16),
        num_msi_vectors=draw(u8),
        msi_64bits=draw(st.booleans()),
        msi_maskable=draw(st.booleans()),
        num_msix_vectors=draw(u16),
        msix_region_size=draw(u16),
        msix_address=draw(u64),
        shmem_regions_start=draw(u32),
        shmem_dev_id=draw(u8),
        shmem_peers=draw(u8),
        shmem_protocol=draw(u16),
    )


@st.composite
def pci_capabilities(draw: st.DrawFn) -> PciCapability:
    """Draw a PCI capability entry."""
    return PciCapability(draw(u16), draw(u16), draw(u16), PciCapFlag(draw(u16)))


@st.composite
def cell_configs(draw: st.DrawFn, arch: Arch | None = None) -> CellConfig:
    """Draw a cell config that packs and parses back equal.

    Args:
        draw: Hypothesis' draw function.
        arch: The architecture; drawn when None.
    """
    cpu_set_size = draw(st.sampled_from([8, 8, 16, 0, 1, 12]))
    cpus = (
        draw(st.frozensets(st.integers(0, 8 * cpu_set_size - 1), max_size=8))
        if cpu_set_size
        else frozenset()
    )
    return CellConfig(
        name=draw(names),
        arch=draw(arches) if arch is None else arch,
        id=draw(u32),
        flags=CellFlag(draw(u32)),
        cpu_set_size=cpu_set_size,
        cpus=cpus,
        mem_regions=draw(_items(memory_regions())),
        cache_regions=draw(_items(cache_regions())),
        irqchips=draw(_items(irqchips())),
        pio_regions=draw(_items(pio_regions())),
        pci_devices=draw(_items(pci_devices())),
        pci_caps=draw(_items(pci_capabilities())),
        stream_ids=draw(_items(u32)),
        vpci_irq_base=draw(u32),
        cpu_reset_address=draw(u64),
        msg_reply_timeout=draw(u64),
        console=draw(consoles()),
        trailing=draw(st.binary(max_size=40)),
    )


@st.composite
def iommu_units(draw: st.DrawFn) -> IommuUnit:
    """Draw an IOMMU unit whose union member matches its type."""
    kind = IommuType(draw(st.sampled_from([*IommuType]) | u32))
    base, size = draw(u64), draw(u32)
    if kind == IommuType.PVU:
        return IommuUnit(kind, base, size, tipvu_tlb_base=draw(u64), tipvu_tlb_size=draw(u32))
    return IommuUnit(kind, base, size, draw(u16), draw(u8), draw(u8), draw(u32))


@st.composite
def x86_platforms(draw: st.DrawFn) -> X86Platform:
    """Draw the x86 member of the platform info."""
    return X86Platform(draw(u16), ApicMode(draw(u8)), draw(u32), draw(u32), draw(u32))


@st.composite
def arm_platforms(draw: st.DrawFn) -> ArmPlatform:
    """Draw the ARM member of the platform info."""
    return ArmPlatform(draw(u8), draw(u8), draw(u64), draw(u64), draw(u64), draw(u64), draw(u64))


@st.composite
def platform_infos(draw: st.DrawFn, arch: Arch) -> PlatformInfo:
    """Draw platform info for ``arch`` with at most 8 IOMMU units, no empty one last."""
    units = draw(st.lists(iommu_units(), max_size=8))
    while units and units[-1] == IommuUnit(IommuType.UNUSED):
        units.pop()
    return PlatformInfo(
        pci_mmconfig_base=draw(u64),
        pci_mmconfig_end_bus=draw(u8),
        pci_is_virtual=draw(u8),
        pci_domain=draw(u16),
        iommu_units=tuple(units),
        arch_info=draw(x86_platforms() if arch == Arch.X86 else arm_platforms()),
    )


@st.composite
def system_configs(draw: st.DrawFn) -> SystemConfig:
    """Draw a system config that packs and parses back equal."""
    arch = draw(arches)
    return SystemConfig(
        arch=arch,
        flags=SystemFlag(draw(u32)),
        hypervisor_memory=draw(memory_regions()),
        debug_console=draw(consoles()),
        platform=draw(platform_infos(arch)),
        root_cell=draw(cell_configs(arch)),
        root_header=draw(st.binary(min_size=8, max_size=8)),
    )


# -- mutations of valid config files, for the parser fuzz ----------------------------------------

_COUNT_OFFSETS = tuple(range(48, 80, 4))
"""Offsets of cpu_set_size and the seven array counts in a cell descriptor (ABI sheet §3)."""
_ROOT_CELL_OFFSET = 356
"""Offset of the root cell descriptor in a system config (ABI sheet §3)."""


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Draw a damaged copy of a config file.

    One of: flipped bits, truncation, an inflated array count (or CPU set size), random
    bytes written over a stretch, random bytes after a valid 8-byte header, or bytes
    appended.
    """
    buf = bytearray(data)
    kind = draw(st.sampled_from(["flip", "truncate", "count", "overwrite", "random", "append"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            bit = draw(st.integers(0, 8 * len(buf) - 1))
            buf[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        del buf[draw(st.integers(0, len(buf) - 1)) :]
    elif kind == "count":
        base = _ROOT_CELL_OFFSET if data[:5] == b"JHSYS" else 0
        offset = base + draw(st.sampled_from(_COUNT_OFFSETS))
        old = int.from_bytes(buf[offset : offset + 4], "little")
        new = draw(
            st.sampled_from([old + 1, old + 2, len(data), 0xFFFF_FFFF, 0x8000_0000, 0]) | u32
        )
        buf[offset : offset + 4] = new.to_bytes(4, "little")
    elif kind == "overwrite":
        start = draw(st.integers(0, len(buf) - 1))
        chunk = draw(st.binary(min_size=1, max_size=64))
        buf[start : start + len(chunk)] = chunk
    elif kind == "random":
        buf = buf[:8] + bytearray(draw(st.binary(max_size=len(data) + 64)))
    else:
        buf += draw(st.binary(min_size=1, max_size=64))
    return bytes(buf)


# -- libvirt domain XML ----------------------------------------------------------------------

LIBVIRT_ARCH = {"x86": "x86_64", "arm64": "aarch64"}


def dom(
    devices: str = "",
    *,
    name: str = "guest",
    arch: str | None = "x86_64",
    memory: str = "<memory unit='MiB'>2</memory>",
    vcpu: str = "<vcpu>1</vcpu>",
    os: str = "",
    extra: str = "",
) -> str:
    """Build a small domain XML; each part can be replaced."""
    arch_attr = f" arch='{arch}'" if arch is not None else ""
    return (
        f"<domain type='kvm'><name>{name}</name>{memory}{vcpu}{extra}"
        f"<os><type{arch_attr}>hvm</type>{os}</os><devices>{devices}</devices></domain>"
    )


def shmem(address: str = "", model: str = "", size: str = "", extra: str = "") -> str:
    """Build a <shmem> device from its parts."""
    return f"<shmem name='s'>{model}{size}{extra}{address}</shmem>"


# The PCI addresses of the root cells' ivshmem devices in the example systems.
ROOT_LINK_X86 = "<address type='pci' domain='0x0000' bus='0x01' slot='0x0e' function='0x0'/>"
ROOT_LINK_ARM64 = "<address type='pci' domain='0x0001' bus='0x00' slot='0x00' function='0x0'/>"


UNITS = [("b", 4 << 20), ("bytes", 4 << 20), ("KB", 4000), ("k", 4096), ("KiB", 4096),
         ("MB", 4), ("M", 4), ("MiB", 4), (None, 4096)]  # fmt: skip
JUNK = [
    "<disk type='file' device='disk'><source file='/d.img'/><target dev='vda'/></disk>",
    "<interface type='network'><source network='default'/></interface>",
    "<graphics type='vnc' port='-1'/>",
    "<memballoon model='virtio'/>",
    "<input type='tablet' bus='usb'/>",
    "<controller type='usb' index='0'/>",
]
NAME_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="/<>&'\"")


@st.composite
def domains(draw: st.DrawFn, arch: str) -> str:
    """Draw a libvirt domain for one of the example systems, valid or not for a cell."""
    unit, top = draw(st.sampled_from(UNITS))
    value = draw(st.integers(1, top))
    unit_attr = "" if unit is None else f" unit='{unit}'"
    count = draw(st.integers(1, 3))
    free = [1, 2, 3]
    pinned = draw(st.lists(st.sampled_from(free), unique=True, max_size=count))
    pins = "".join(f"<vcpupin vcpu='{i}' cpuset='{c}'/>" for i, c in enumerate(pinned))
    os = ""
    if draw(st.booleans()):
        os = "<kernel>/boot/kernel</kernel>" + draw(
            st.sampled_from(["", "<cmdline>console=ttyS0 quiet</cmdline>", "<initrd>/i</initrd>"])
        )
        if arch == "arm64":
            os += "<dtb>/boot/board.dtb</dtb>"
    devices = draw(st.sampled_from(["", "<console type='pty'/>", "<serial type='pty'/>"]))
    link = ROOT_LINK_X86 if arch == "x86" else ROOT_LINK_ARM64
    devices += draw(st.sampled_from(["", shmem(link), shmem(size="<size unit='KiB'>64</size>")]))
    devices += "".join(draw(st.lists(st.sampled_from(JUNK), max_size=3)))
    extra = f"<cputune>{pins}</cputune>" if pins else ""
    if draw(st.booleans()):
        extra += f"<uuid>{draw(st.uuids())}</uuid>"
    name = draw(st.text(NAME_CHARS, min_size=1, max_size=31))
    return dom(
        devices,
        name=name,
        arch=LIBVIRT_ARCH[arch],
        memory=f"<memory{unit_attr}>{value}</memory>",
        vcpu=f"<vcpu>{count}</vcpu>",
        os=os,
        extra=extra,
    )


MUTATION_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=12
)


@st.composite
def mutated_domains(draw: st.DrawFn) -> bytes:
    """Draw a generated domain with one element's text or attribute replaced, or removed."""
    arch = draw(st.sampled_from(["x86", "arm64"]))
    root = etree.fromstring(draw(domains(arch)).encode())
    elements = list(root.iter())
    target = draw(st.sampled_from(elements))
    kind = draw(st.sampled_from(["text", "attr", "new-attr", "drop", "copy"]))
    if kind == "text":
        target.text = draw(MUTATION_TEXT)
    elif kind == "attr" and target.attrib:
        target.set(draw(st.sampled_from(sorted(target.attrib))), draw(MUTATION_TEXT))
    elif kind == "new-attr":
        target.set(draw(st.sampled_from(["unit", "cpuset", "current", "bus", "arch"])),
                   draw(MUTATION_TEXT))  # fmt: skip
    elif kind == "drop" and target.getparent() is not None:
        target.getparent().remove(target)  # type: ignore[union-attr]
    elif kind == "copy" and target.getparent() is not None:
        target.getparent().append(etree.fromstring(etree.tostring(target)))  # type: ignore[union-attr]
    return etree.tostring(root)


# -- flattened device trees ------------------------------------------------------------------

_FDT_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+-"
fdt_node_names = st.builds(
    lambda base, unit: f"{base}@{unit:x}" if unit is not None else base,
    st.text(_FDT_NAME_CHARS, min_size=1, max_size=12),
    st.none() | u64,
)
"""Node names the devicetree specification allows, some with a unit address."""
fdt_property_names = st.text(_FDT_NAME_CHARS + "?#", min_size=1, max_size=31)
"""Property names the devicetree specification allows."""


@st.composite
def fdt_nodes(draw: st.DrawFn, depth: int = 3, name: str | None = None) -> Node:
    """Draw a device tree node: raw, cell and string properties, then unique children."""
    node = Node(draw(fdt_node_names) if name is None else name)
    for prop in draw(st.lists(fdt_property_names, max_size=5, unique=True)):
        kind = draw(st.sampled_from(["raw", "u32", "u64", "strings", "empty"]))
        if kind == "raw":
            node.set(prop, draw(st.binary(max_size=20)))
        elif kind == "u32":
            node.set_u32(prop, *draw(st.lists(u32, min_size=1, max_size=4)))
        elif kind == "u64":
            node.set_u64(prop, *draw(st.lists(u64, min_size=1, max_size=2)))
        elif kind == "strings":
            text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10)
            node.set_strings(prop, *draw(st.lists(text, min_size=1, max_size=3)))
        else:
            node.set_empty(prop)
    if depth > 0:
        for child in draw(st.lists(fdt_node_names, max_size=3, unique=True)):
            node.children.append(draw(fdt_nodes(depth - 1, child)))
    return node


@st.composite
def device_trees(draw: st.DrawFn) -> DeviceTree:
    """Draw a whole device tree: a root node, memory reservations and a boot CPU id."""
    return DeviceTree(
        root=draw(fdt_nodes(name="")),
        reservations=draw(st.lists(st.tuples(u64, u64.filter(bool)), max_size=3)),
        boot_cpuid_phys=draw(u32),
    )
