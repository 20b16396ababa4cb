"""Positional constructors of the config records, for the codec's parser (generated code).

A parse builds a dozen records per config.  A record's own ``__init__`` stores each field
through ``object.__setattr__``, which looks the name up again each time; these builders
store through the slot descriptors instead (the same slots and values, so equality,
hashing and repr are the records' own), taking the fields in the order the binary layout
gives them.

They used to be generated with ``exec`` at first use, which cost 70-170 us of compiling
per builder: about 1 ms of every ``jhctl config check``.  As source they are compiled once,
into the bytecode cache, like the rest of the package.  Everything below the marker line is
written from :data:`ORDERS` by ``tests/test_records.py`` (set ``JAILHOUSE_REGENERATE=1`` and
run ``python3 -m pytest tests/test_records.py -k builders``); the same test fails when the
file, the table and the records' fields disagree.
"""

from __future__ import annotations

from jailhouse.config.model import (
    CacheRegion,
    CellConfig,
    Console,
    IommuUnit,
    IrqChip,
    MemoryRegion,
    PciCapability,
    PciDevice,
    PioRegion,
    PlatformInfo,
    SystemConfig,
    X86Platform,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from jailhouse.config._record import Record

__all__ = [
    "ORDERS",
    "new_cache",
    "new_cell",
    "new_console",
    "new_iommu",
    "new_irqchip",
    "new_memory",
    "new_pci_cap",
    "new_pci_device",
    "new_pio",
    "new_platform",
    "new_system",
    "new_x86_platform",
]

ORDERS: Final[dict[str, tuple[type[Record], str]]] = {
    "new_memory": (MemoryRegion, "phys_start virt_start size flags"),
    "new_cache": (CacheRegion, "start size type flags"),
    "new_irqchip": (IrqChip, "address id pin_base pin_bitmap"),
    "new_pio": (PioRegion, "base length"),
    "new_pci_device": (
        PciDevice,
        (
            "type iommu domain bdf bar_mask caps_start num_caps num_msi_vectors msi_64bits "
            "msi_maskable num_msix_vectors msix_region_size msix_address shmem_regions_start "
            "shmem_dev_id shmem_peers shmem_protocol"
        ),
    ),
    "new_pci_cap": (PciCapability, "id start len flags"),
    "new_console": (Console, "address size type flags divider gate_nr clock_reg"),
    "new_cell": (
        CellConfig,
        (
            "name arch id flags cpu_set_size cpus mem_regions cache_regions irqchips pio_regions "
            "pci_devices pci_caps stream_ids vpci_irq_base cpu_reset_address msg_reply_timeout "
            "console trailing"
        ),
    ),
    "new_iommu": (
        IommuUnit,
        (
            "type base size amd_bdf amd_base_cap amd_msi_cap amd_features tipvu_tlb_base "
            "tipvu_tlb_size"
        ),
    ),
    "new_x86_platform": (
        X86Platform,
        "pm_timer_address apic_mode vtd_interrupt_limit tsc_khz apic_khz",
    ),
    "new_platform": (
        PlatformInfo,
        "pci_mmconfig_base pci_mmconfig_end_bus pci_is_virtual pci_domain iommu_units arch_info",
    ),
    "new_system": (
        SystemConfig,
        "arch flags hypervisor_memory debug_console platform root_cell root_header",
    ),
}
"""Builder name -> the record it builds and its fields, space-separated, in layout order."""

# -- generated from ORDERS below this line: do not edit by hand ------------------------------

_new = object.__new__


def new_memory(
    phys_start: object,
    virt_start: object,
    size: object,
    flags: object,
) -> MemoryRegion:
    """Build a :class:`~jailhouse.config.model.MemoryRegion` from its fields in layout order."""
    obj = _new(MemoryRegion)
    _set_memory_phys_start(obj, phys_start)
    _set_memory_virt_start(obj, virt_start)
    _set_memory_size(obj, size)
    _set_memory_flags(obj, flags)
    return obj


def new_cache(
    start: object,
    size: object,
    type: object,
    flags: object,
) -> CacheRegion:
    """Build a :class:`~jailhouse.config.model.CacheRegion` from its fields in layout order."""
    obj = _new(CacheRegion)
    _set_cache_start(obj, start)
    _set_cache_size(obj, size)
    _set_cache_type(obj, type)
    _set_cache_flags(obj, flags)
    return obj


def new_irqchip(
    address: object,
    id: object,
    pin_base: object,
    pin_bitmap: object,
) -> IrqChip:
    """Build a :class:`~jailhouse.config.model.IrqChip` from its fields in layout order."""
    obj = _new(IrqChip)
    _set_irqchip_address(obj, address)
    _set_irqchip_id(obj, id)
    _set_irqchip_pin_base(obj, pin_base)
    _set_irqchip_pin_bitmap(obj, pin_bitmap)
    return obj


def new_pio(
    base: object,
    length: object,
) -> PioRegion:
    """Build a :class:`~jailhouse.config.model.PioRegion` from its fields in layout order."""
    obj = _new(PioRegion)
    _set_pio_base(obj, base)
    _set_pio_length(obj, length)
    return obj


def new_pci_device(  # noqa: PLR0917 - the layout's fields, positionally
    type: object,
    iommu: object,
    domain: object,
    bdf: object,
    bar_mask: object,
    caps_start: object,
    num_caps: object,
    num_msi_vectors: object,
    msi_64bits: object,
    msi_maskable: object,
    num_msix_vectors: object,
    msix_region_size: object,
    msix_address: object,
    shmem_regions_start: object,
    shmem_dev_id: object,
    shmem_peers: object,
    shmem_protocol: object,
) -> PciDevice:
    """Build a :class:`~jailhouse.config.model.PciDevice` from its fields in layout order."""
    obj = _new(PciDevice)
    _set_pci_device_type(obj, type)
    _set_pci_device_iommu(obj, iommu)
    _set_pci_device_domain(obj, domain)
    _set_pci_device_bdf(obj, bdf)
    _set_pci_device_bar_mask(obj, bar_mask)
    _set_pci_device_caps_start(obj, caps_start)
    _set_pci_device_num_caps(obj, num_caps)
    _set_pci_device_num_msi_vectors(obj, num_msi_vectors)
    _set_pci_device_msi_64bits(obj, msi_64bits)
    _set_pci_device_msi_maskable(obj, msi_maskable)
    _set_pci_device_num_msix_vectors(obj, num_msix_vectors)
    _set_pci_device_msix_region_size(obj, msix_region_size)
    _set_pci_device_msix_address(obj, msix_address)
    _set_pci_device_shmem_regions_start(obj, shmem_regions_start)
    _set_pci_device_shmem_dev_id(obj, shmem_dev_id)
    _set_pci_device_shmem_peers(obj, shmem_peers)
    _set_pci_device_shmem_protocol(obj, shmem_protocol)
    return obj


def new_pci_cap(
    id: object,
    start: object,
    len: object,
    flags: object,
) -> PciCapability:
    """Build a :class:`~jailhouse.config.model.PciCapability` from its fields in layout order."""
    obj = _new(PciCapability)
    _set_pci_cap_id(obj, id)
    _set_pci_cap_start(obj, start)
    _set_pci_cap_len(obj, len)
    _set_pci_cap_flags(obj, flags)
    return obj


def new_console(  # noqa: PLR0917 - the layout's fields, positionally
    address: object,
    size: object,
    type: object,
    flags: object,
    divider: object,
    gate_nr: object,
    clock_reg: object,
) -> Console:
    """Build a :class:`~jailhouse.config.model.Console` from its fields in layout order."""
    obj = _new(Console)
    _set_console_address(obj, address)
    _set_console_size(obj, size)
    _set_console_type(obj, type)
    _set_console_flags(obj, flags)
    _set_console_divider(obj, divider)
    _set_console_gate_nr(obj, gate_nr)
    _set_console_clock_reg(obj, clock_reg)
    return obj


def new_cell(  # noqa: PLR0917 - the layout's fields, positionally
    name: object,
    arch: object,
    id: object,
    flags: object,
    cpu_set_size: object,
    cpus: object,
    mem_regions: object,
    cache_regions: object,
    irqchips: object,
    pio_regions: object,
    pci_devices: object,
    pci_caps: object,
    stream_ids: object,
    vpci_irq_base: object,
    cpu_reset_address: object,
    msg_reply_timeout: object,
    console: object,
    trailing: object,
) -> CellConfig:
    """Build a :class:`~jailhouse.config.model.CellConfig` from its fields in layout order."""
    obj = _new(CellConfig)
    _set_cell_name(obj, name)
    _set_cell_arch(obj, arch)
    _set_cell_id(obj, id)
    _set_cell_flags(obj, flags)
    _set_cell_cpu_set_size(obj, cpu_set_size)
    _set_cell_cpus(obj, cpus)
    _set_cell_mem_regions(obj, mem_regions)
    _set_cell_cache_regions(obj, cache_regions)
    _set_cell_irqchips(obj, irqchips)
    _set_cell_pio_regions(obj, pio_regions)
    _set_cell_pci_devices(obj, pci_devices)
    _set_cell_pci_caps(obj, pci_caps)
    _set_cell_stream_ids(obj, stream_ids)
    _set_cell_vpci_irq_base(obj, vpci_irq_base)
    _set_cell_cpu_reset_address(obj, cpu_reset_address)
    _set_cell_msg_reply_timeout(obj, msg_reply_timeout)
    _set_cell_console(obj, console)
    _set_cell_trailing(obj, trailing)
    return obj


def new_iommu(  # noqa: PLR0917 - the layout's fields, positionally
    type: object,
    base: object,
    size: object,
    amd_bdf: object,
    amd_base_cap: object,
    amd_msi_cap: object,
    amd_features: object,
    tipvu_tlb_base: object,
    tipvu_tlb_size: object,
) -> IommuUnit:
    """Build a :class:`~jailhouse.config.model.IommuUnit` from its fields in layout order."""
    obj = _new(IommuUnit)
    _set_iommu_type(obj, type)
    _set_iommu_base(obj, base)
    _set_iommu_size(obj, size)
    _set_iommu_amd_bdf(obj, amd_bdf)
    _set_iommu_amd_base_cap(obj, amd_base_cap)
    _set_iommu_amd_msi_cap(obj, amd_msi_cap)
    _set_iommu_amd_features(obj, amd_features)
    _set_iommu_tipvu_tlb_base(obj, tipvu_tlb_base)
    _set_iommu_tipvu_tlb_size(obj, tipvu_tlb_size)
    return obj


def new_x86_platform(
    pm_timer_address: object,
    apic_mode: object,
    vtd_interrupt_limit: object,
    tsc_khz: object,
    apic_khz: object,
) -> X86Platform:
    """Build a :class:`~jailhouse.config.model.X86Platform` from its fields in layout order."""
    obj = _new(X86Platform)
    _set_x86_platform_pm_timer_address(obj, pm_timer_address)
    _set_x86_platform_apic_mode(obj, apic_mode)
    _set_x86_platform_vtd_interrupt_limit(obj, vtd_interrupt_limit)
    _set_x86_platform_tsc_khz(obj, tsc_khz)
    _set_x86_platform_apic_khz(obj, apic_khz)
    return obj


def new_platform(  # noqa: PLR0917 - the layout's fields, positionally
    pci_mmconfig_base: object,
    pci_mmconfig_end_bus: object,
    pci_is_virtual: object,
    pci_domain: object,
    iommu_units: object,
    arch_info: object,
) -> PlatformInfo:
    """Build a :class:`~jailhouse.config.model.PlatformInfo` from its fields in layout order."""
    obj = _new(PlatformInfo)
    _set_platform_pci_mmconfig_base(obj, pci_mmconfig_base)
    _set_platform_pci_mmconfig_end_bus(obj, pci_mmconfig_end_bus)
    _set_platform_pci_is_virtual(obj, pci_is_virtual)
    _set_platform_pci_domain(obj, pci_domain)
    _set_platform_iommu_units(obj, iommu_units)
    _set_platform_arch_info(obj, arch_info)
    return obj


def new_system(  # noqa: PLR0917 - the layout's fields, positionally
    arch: object,
    flags: object,
    hypervisor_memory: object,
    debug_console: object,
    platform: object,
    root_cell: object,
    root_header: object,
) -> SystemConfig:
    """Build a :class:`~jailhouse.config.model.SystemConfig` from its fields in layout order."""
    obj = _new(SystemConfig)
    _set_system_arch(obj, arch)
    _set_system_flags(obj, flags)
    _set_system_hypervisor_memory(obj, hypervisor_memory)
    _set_system_debug_console(obj, debug_console)
    _set_system_platform(obj, platform)
    _set_system_root_cell(obj, root_cell)
    _set_system_root_header(obj, root_header)
    return obj


_set_memory_phys_start = vars(MemoryRegion)["phys_start"].__set__
_set_memory_virt_start = vars(MemoryRegion)["virt_start"].__set__
_set_memory_size = vars(MemoryRegion)["size"].__set__
_set_memory_flags = vars(MemoryRegion)["flags"].__set__
_set_cache_start = vars(CacheRegion)["start"].__set__
_set_cache_size = vars(CacheRegion)["size"].__set__
_set_cache_type = vars(CacheRegion)["type"].__set__
_set_cache_flags = vars(CacheRegion)["flags"].__set__
_set_irqchip_address = vars(IrqChip)["address"].__set__
_set_irqchip_id = vars(IrqChip)["id"].__set__
_set_irqchip_pin_base = vars(IrqChip)["pin_base"].__set__
_set_irqchip_pin_bitmap = vars(IrqChip)["pin_bitmap"].__set__
_set_pio_base = vars(PioRegion)["base"].__set__
_set_pio_length = vars(PioRegion)["length"].__set__
_set_pci_device_type = vars(PciDevice)["type"].__set__
_set_pci_device_iommu = vars(PciDevice)["iommu"].__set__
_set_pci_device_domain = vars(PciDevice)["domain"].__set__
_set_pci_device_bdf = vars(PciDevice)["bdf"].__set__
_set_pci_device_bar_mask = vars(PciDevice)["bar_mask"].__set__
_set_pci_device_caps_start = vars(PciDevice)["caps_start"].__set__
_set_pci_device_num_caps = vars(PciDevice)["num_caps"].__set__
_set_pci_device_num_msi_vectors = vars(PciDevice)["num_msi_vectors"].__set__
_set_pci_device_msi_64bits = vars(PciDevice)["msi_64bits"].__set__
_set_pci_device_msi_maskable = vars(PciDevice)["msi_maskable"].__set__
_set_pci_device_num_msix_vectors = vars(PciDevice)["num_msix_vectors"].__set__
_set_pci_device_msix_region_size = vars(PciDevice)["msix_region_size"].__set__
_set_pci_device_msix_address = vars(PciDevice)["msix_address"].__set__
_set_pci_device_shmem_regions_start = vars(PciDevice)["shmem_regions_start"].__set__
_set_pci_device_shmem_dev_id = vars(PciDevice)["shmem_dev_id"].__set__
_set_pci_device_shmem_peers = vars(PciDevice)["shmem_peers"].__set__
_set_pci_device_shmem_protocol = vars(PciDevice)["shmem_protocol"].__set__
_set_pci_cap_id = vars(PciCapability)["id"].__set__
_set_pci_cap_start = vars(PciCapability)["start"].__set__
_set_pci_cap_len = vars(PciCapability)["len"].__set__
_set_pci_cap_flags = vars(PciCapability)["flags"].__set__
_set_console_address = vars(Console)["address"].__set__
_set_console_size = vars(Console)["size"].__set__
_set_console_type = vars(Console)["type"].__set__
_set_console_flags = vars(Console)["flags"].__set__
_set_console_divider = vars(Console)["divider"].__set__
_set_console_gate_nr = vars(Console)["gate_nr"].__set__
_set_console_clock_reg = vars(Console)["clock_reg"].__set__
_set_cell_name = vars(CellConfig)["name"].__set__
_set_cell_arch = vars(CellConfig)["arch"].__set__
_set_cell_id = vars(CellConfig)["id"].__set__
_set_cell_flags = vars(CellConfig)["flags"].__set__
_set_cell_cpu_set_size = vars(CellConfig)["cpu_set_size"].__set__
_set_cell_cpus = vars(CellConfig)["cpus"].__set__
_set_cell_mem_regions = vars(CellConfig)["_mem_regions"].__set__
_set_cell_cache_regions = vars(CellConfig)["cache_regions"].__set__
_set_cell_irqchips = vars(CellConfig)["_irqchips"].__set__
_set_cell_pio_regions = vars(CellConfig)["_pio_regions"].__set__
_set_cell_pci_devices = vars(CellConfig)["pci_devices"].__set__
_set_cell_pci_caps = vars(CellConfig)["_pci_caps"].__set__
_set_cell_stream_ids = vars(CellConfig)["_stream_ids"].__set__
_set_cell_vpci_irq_base = vars(CellConfig)["vpci_irq_base"].__set__
_set_cell_cpu_reset_address = vars(CellConfig)["cpu_reset_address"].__set__
_set_cell_msg_reply_timeout = vars(CellConfig)["msg_reply_timeout"].__set__
_set_cell_console = vars(CellConfig)["console"].__set__
_set_cell_trailing = vars(CellConfig)["trailing"].__set__
_set_iommu_type = vars(IommuUnit)["type"].__set__
_set_iommu_base = vars(IommuUnit)["base"].__set__
_set_iommu_size = vars(IommuUnit)["size"].__set__
_set_iommu_amd_bdf = vars(IommuUnit)["amd_bdf"].__set__
_set_iommu_amd_base_cap = vars(IommuUnit)["amd_base_cap"].__set__
_set_iommu_amd_msi_cap = vars(IommuUnit)["amd_msi_cap"].__set__
_set_iommu_amd_features = vars(IommuUnit)["amd_features"].__set__
_set_iommu_tipvu_tlb_base = vars(IommuUnit)["tipvu_tlb_base"].__set__
_set_iommu_tipvu_tlb_size = vars(IommuUnit)["tipvu_tlb_size"].__set__
_set_x86_platform_pm_timer_address = vars(X86Platform)["pm_timer_address"].__set__
_set_x86_platform_apic_mode = vars(X86Platform)["apic_mode"].__set__
_set_x86_platform_vtd_interrupt_limit = vars(X86Platform)["vtd_interrupt_limit"].__set__
_set_x86_platform_tsc_khz = vars(X86Platform)["tsc_khz"].__set__
_set_x86_platform_apic_khz = vars(X86Platform)["apic_khz"].__set__
_set_platform_pci_mmconfig_base = vars(PlatformInfo)["pci_mmconfig_base"].__set__
_set_platform_pci_mmconfig_end_bus = vars(PlatformInfo)["pci_mmconfig_end_bus"].__set__
_set_platform_pci_is_virtual = vars(PlatformInfo)["pci_is_virtual"].__set__
_set_platform_pci_domain = vars(PlatformInfo)["pci_domain"].__set__
_set_platform_iommu_units = vars(PlatformInfo)["iommu_units"].__set__
_set_platform_arch_info = vars(PlatformInfo)["arch_info"].__set__
_set_system_arch = vars(SystemConfig)["arch"].__set__
_set_system_flags = vars(SystemConfig)["flags"].__set__
_set_system_hypervisor_memory = vars(SystemConfig)["hypervisor_memory"].__set__
_set_system_debug_console = vars(SystemConfig)["debug_console"].__set__
_set_system_platform = vars(SystemConfig)["platform"].__set__
_set_system_root_cell = vars(SystemConfig)["root_cell"].__set__
_set_system_root_header = vars(SystemConfig)["root_header"].__set__
