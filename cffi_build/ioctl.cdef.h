/*
 * cffi declarations of jailhouse._native; build_ioctl.py splits this file
 * at the marker line below that opens the config-format part.  SPDX-License-Identifier: MIT
 *
 * Every number comes from the C compiler ("..."), and every struct is
 * declared field by field: in API mode cffi compares each offset and size
 * with what the compiler laid out for ioctl.csrc.c and refuses the struct
 * on any difference.  Keep the fields in step with ioctl.csrc.c.
 */

/* ---- ioctl ABI: natural alignment ---- */

#define JAILHOUSE_CELL_ID_NAMELEN ...
#define JAILHOUSE_CELL_ID_UNUSED ...

#define JAILHOUSE_IOCTL_TYPE ...
#define JAILHOUSE_ENABLE ...
#define JAILHOUSE_DISABLE ...
#define JAILHOUSE_CELL_CREATE ...
#define JAILHOUSE_CELL_LOAD ...
#define JAILHOUSE_CELL_START ...
#define JAILHOUSE_CELL_DESTROY ...

#define JH_IOC_NONE ...
#define JH_IOC_WRITE ...
#define JH_IOC_READ ...

#define JAILHOUSE_CONFIG_REVISION ...
#define JAILHOUSE_X86 ...
#define JAILHOUSE_ARM ...
#define JAILHOUSE_ARM64 ...
#define JAILHOUSE_SIGNATURE_LEN ...
#define JAILHOUSE_CELL_NAME_MAXLEN ...
#define JAILHOUSE_MAX_IOMMU_UNITS ...
#define JAILHOUSE_PCI_MSI_64BITS ...
#define JAILHOUSE_PCI_MSI_MASKABLE ...
static const char *const JAILHOUSE_CELL_DESC_SIGNATURE;
static const char *const JAILHOUSE_SYSTEM_SIGNATURE;

struct jailhouse_cell_create {
    uint64_t config_address;
    uint32_t config_size;
    uint32_t padding;
};

struct jailhouse_cell_id {
    int32_t id;
    uint32_t padding;
    char name[32];
};

struct jailhouse_preload_image {
    uint64_t source_address;
    uint64_t size;
    uint64_t target_address;
    uint64_t padding;
};

struct jailhouse_cell_load {
    struct jailhouse_cell_id cell_id;
    uint32_t num_preload_images;
    uint32_t padding;
    struct jailhouse_preload_image image[];
};

int jh_ioctl(int fd, unsigned long request, uintptr_t arg);
unsigned int jh_ioc_dir(unsigned long request);
unsigned int jh_ioc_type(unsigned long request);
unsigned int jh_ioc_nr(unsigned long request);
unsigned int jh_ioc_size(unsigned long request);

/* @packed: config format, revision 14; declared with cdef(..., packed=True) */

struct jailhouse_console {
    uint64_t address;
    uint32_t size;
    uint16_t type;
    uint16_t flags;
    uint32_t divider;
    uint32_t gate_nr;
    uint64_t clock_reg;
};

struct jailhouse_memory {
    uint64_t phys_start;
    uint64_t virt_start;
    uint64_t size;
    uint64_t flags;
};

struct jailhouse_cache {
    uint32_t start;
    uint32_t size;
    uint8_t type;
    uint8_t padding;
    uint16_t flags;
};

struct jailhouse_irqchip {
    uint64_t address;
    uint32_t id;
    uint32_t pin_base;
    uint32_t pin_bitmap[4];
};

struct jailhouse_pio {
    uint16_t base;
    uint16_t length;
};

struct jailhouse_pci_device {
    uint8_t type;
    uint8_t iommu;
    uint16_t domain;
    uint16_t bdf;
    uint32_t bar_mask[6];
    uint16_t caps_start;
    uint16_t num_caps;
    uint8_t num_msi_vectors;
    uint8_t msi_flags;
    uint16_t num_msix_vectors;
    uint16_t msix_region_size;
    uint64_t msix_address;
    uint32_t shmem_regions_start;
    uint8_t shmem_dev_id;
    uint8_t shmem_peers;
    uint16_t shmem_protocol;
};

struct jailhouse_pci_capability {
    uint16_t id;
    uint16_t start;
    uint16_t len;
    uint16_t flags;
};

union jailhouse_stream_id {
    uint32_t id;
    struct {
        uint16_t id;
        uint16_t mask_out;
    } mmu500;
};

struct jailhouse_iommu {
    uint32_t type;
    uint64_t base;
    uint32_t size;
    union {
        struct {
            uint16_t bdf;
            uint8_t base_cap;
            uint8_t msi_cap;
            uint32_t features;
        } amd;
        struct {
            uint64_t tlb_base;
            uint32_t tlb_size;
        } tipvu;
    };
};

struct jailhouse_cell_desc {
    char signature[5];
    uint8_t architecture;
    uint16_t revision;
    char name[32];
    uint32_t id;
    uint32_t flags;
    uint32_t cpu_set_size;
    uint32_t num_memory_regions;
    uint32_t num_cache_regions;
    uint32_t num_irqchips;
    uint32_t num_pio_regions;
    uint32_t num_pci_devices;
    uint32_t num_pci_caps;
    uint32_t num_stream_ids;
    uint32_t vpci_irq_base;
    uint64_t cpu_reset_address;
    uint64_t msg_reply_timeout;
    struct jailhouse_console console;
};

/*
 * Upstream nests this struct unnamed inside jailhouse_system; the name lets
 * cffi take the offsets of its anonymous arch union from the compiler.
 */
struct jailhouse_platform_info {
    uint64_t pci_mmconfig_base;
    uint8_t pci_mmconfig_end_bus;
    uint8_t pci_is_virtual;
    uint16_t pci_domain;
    struct jailhouse_iommu iommu_units[8];
    union {
        struct {
            uint16_t pm_timer_address;
            uint8_t apic_mode;
            uint8_t padding;
            uint32_t vtd_interrupt_limit;
            uint32_t tsc_khz;
            uint32_t apic_khz;
        } x86;
        struct {
            uint8_t maintenance_irq;
            uint8_t gic_version;
            uint8_t padding[2];
            uint64_t gicd_base;
            uint64_t gicc_base;
            uint64_t gich_base;
            uint64_t gicv_base;
            uint64_t gicr_base;
        } arm;
    };
};

struct jailhouse_system {
    char signature[5];
    uint8_t architecture;
    uint16_t revision;
    uint32_t flags;
    struct jailhouse_memory hypervisor_memory;
    struct jailhouse_console debug_console;
    struct jailhouse_platform_info platform_info;
    struct jailhouse_cell_desc root_cell;
};
