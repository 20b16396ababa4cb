/*
 * C side of jailhouse._native, the cffi shim of python-jailhouse.
 *
 * Copyright (c) python-jailhouse developers.  SPDX-License-Identifier: MIT
 *
 * Written for this project from its Jailhouse ABI fact sheet (sections 1
 * and 3); no upstream Jailhouse source was copied.  Everything
 * here uses fixed-width <stdint.h> types and the generic <linux/ioctl.h>
 * macros, so the same file builds for x86-64 and arm64 (the two
 * architectures whose layouts the fact sheet lists as identical).
 *
 * Two groups of declarations:
 *   - the /dev/jailhouse ioctl argument structs: natural alignment with
 *     explicit padding, exactly like the driver's header;
 *   - the cell and system config format (config revision 14): every struct
 *     is packed and little-endian.
 * Each size and a few key offsets are pinned with _Static_assert, and cffi
 * checks the Python-side cdef against this file's layout as well.
 */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/ioctl.h>

/* ------------------------------------------------------------------------ */
/* ioctl ABI (fact sheet section 1)                                          */
/* ------------------------------------------------------------------------ */

#define JAILHOUSE_CELL_ID_NAMELEN 31
#define JAILHOUSE_CELL_ID_UNUSED (-1)

struct jailhouse_cell_create {
    uint64_t config_address; /* user pointer to the cell config blob */
    uint32_t config_size;    /* its length in bytes */
    uint32_t padding;
};

struct jailhouse_cell_id {
    int32_t id; /* a cell id, or JAILHOUSE_CELL_ID_UNUSED to look up by name */
    uint32_t padding;
    char name[JAILHOUSE_CELL_ID_NAMELEN + 1];
};

struct jailhouse_preload_image {
    uint64_t source_address; /* user pointer to the image bytes */
    uint64_t size;
    uint64_t target_address; /* where the image goes in the cell */
    uint64_t padding;
};

struct jailhouse_cell_load {
    struct jailhouse_cell_id cell_id;
    uint32_t num_preload_images;
    uint32_t padding;
    struct jailhouse_preload_image image[]; /* num_preload_images entries */
};

/* The type ("magic") of every Jailhouse request is 0. */
#define JAILHOUSE_IOCTL_TYPE 0

#define JAILHOUSE_ENABLE _IOW(JAILHOUSE_IOCTL_TYPE, 0, void *)
#define JAILHOUSE_DISABLE _IO(JAILHOUSE_IOCTL_TYPE, 1)
#define JAILHOUSE_CELL_CREATE _IOW(JAILHOUSE_IOCTL_TYPE, 2, struct jailhouse_cell_create)
#define JAILHOUSE_CELL_LOAD _IOW(JAILHOUSE_IOCTL_TYPE, 3, struct jailhouse_cell_load)
#define JAILHOUSE_CELL_START _IOW(JAILHOUSE_IOCTL_TYPE, 4, struct jailhouse_cell_id)
#define JAILHOUSE_CELL_DESTROY _IOW(JAILHOUSE_IOCTL_TYPE, 5, struct jailhouse_cell_id)

/* The generic request encoding, under names that Python may use. */
#define JH_IOC_NONE _IOC_NONE
#define JH_IOC_WRITE _IOC_WRITE
#define JH_IOC_READ _IOC_READ

_Static_assert(sizeof(struct jailhouse_cell_create) == 16, "jailhouse_cell_create");
_Static_assert(sizeof(struct jailhouse_cell_id) == 40, "jailhouse_cell_id");
_Static_assert(offsetof(struct jailhouse_cell_id, name) == 8, "jailhouse_cell_id.name");
_Static_assert(sizeof(struct jailhouse_preload_image) == 32, "jailhouse_preload_image");
_Static_assert(sizeof(struct jailhouse_cell_load) == 48, "jailhouse_cell_load");
_Static_assert(offsetof(struct jailhouse_cell_load, num_preload_images) == 40,
               "jailhouse_cell_load.num_preload_images");
_Static_assert(offsetof(struct jailhouse_cell_load, image) == 48, "jailhouse_cell_load.image");

/* ------------------------------------------------------------------------ */
/* Config format, revision 14 (fact sheet section 3): all packed             */
/* ------------------------------------------------------------------------ */

#define JH_PACKED __attribute__((packed))

#define JAILHOUSE_CONFIG_REVISION 14
#define JAILHOUSE_X86 0
#define JAILHOUSE_ARM 1
#define JAILHOUSE_ARM64 2
#define JAILHOUSE_SIGNATURE_LEN 5
#define JAILHOUSE_CELL_DESC_SIGNATURE "JHCLL"
#define JAILHOUSE_SYSTEM_SIGNATURE "JHSYS"
#define JAILHOUSE_CELL_NAME_MAXLEN 31
#define JAILHOUSE_MAX_IOMMU_UNITS 8

struct jailhouse_console {
    uint64_t address;
    uint32_t size;
    uint16_t type;
    uint16_t flags;
    uint32_t divider;
    uint32_t gate_nr;
    uint64_t clock_reg;
} JH_PACKED;

struct jailhouse_memory {
    uint64_t phys_start;
    uint64_t virt_start;
    uint64_t size;
    uint64_t flags;
} JH_PACKED;

struct jailhouse_cache {
    uint32_t start;
    uint32_t size;
    uint8_t type;
    uint8_t padding;
    uint16_t flags;
} JH_PACKED;

struct jailhouse_irqchip {
    uint64_t address;
    uint32_t id;
    uint32_t pin_base;
    uint32_t pin_bitmap[4];
} JH_PACKED;

struct jailhouse_pio {
    uint16_t base;
    uint16_t length;
} JH_PACKED;

/*
 * Upstream declares byte 35 as two one-bit fields; a plain byte keeps the
 * layout independent of how a compiler (or cffi) places bitfields.
 * Bit 0 is msi_64bits, bit 1 is msi_maskable.
 */
#define JAILHOUSE_PCI_MSI_64BITS 0x01
#define JAILHOUSE_PCI_MSI_MASKABLE 0x02

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
} JH_PACKED;

struct jailhouse_pci_capability {
    uint16_t id;
    uint16_t start;
    uint16_t len;
    uint16_t flags;
} JH_PACKED;

/* A stream id: one u32, or for an Arm MMU-500 a 16-bit id and its mask. */
union jailhouse_stream_id {
    uint32_t id;
    struct {
        uint16_t id;
        uint16_t mask_out;
    } JH_PACKED mmu500;
} JH_PACKED;

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
        } JH_PACKED amd;
        struct {
            uint64_t tlb_base;
            uint32_t tlb_size;
        } JH_PACKED tipvu;
    } JH_PACKED;
} JH_PACKED;

struct jailhouse_cell_desc {
    char signature[JAILHOUSE_SIGNATURE_LEN];
    uint8_t architecture;
    uint16_t revision;
    char name[JAILHOUSE_CELL_NAME_MAXLEN + 1];
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
} JH_PACKED;

/*
 * Upstream nests this struct unnamed inside jailhouse_system; the name lets
 * cffi take the offsets of its anonymous arch union from the compiler.
 */
struct jailhouse_platform_info {
    uint64_t pci_mmconfig_base;
    uint8_t pci_mmconfig_end_bus;
    uint8_t pci_is_virtual;
    uint16_t pci_domain;
    struct jailhouse_iommu iommu_units[JAILHOUSE_MAX_IOMMU_UNITS];
    union {
        struct {
            uint16_t pm_timer_address;
            uint8_t apic_mode;
            uint8_t padding;
            uint32_t vtd_interrupt_limit;
            uint32_t tsc_khz;
            uint32_t apic_khz;
        } JH_PACKED x86;
        struct {
            uint8_t maintenance_irq;
            uint8_t gic_version;
            uint8_t padding[2];
            uint64_t gicd_base;
            uint64_t gicc_base;
            uint64_t gich_base;
            uint64_t gicv_base;
            uint64_t gicr_base;
        } JH_PACKED arm;
    } JH_PACKED;
} JH_PACKED;

struct jailhouse_system {
    char signature[JAILHOUSE_SIGNATURE_LEN];
    uint8_t architecture;
    uint16_t revision;
    uint32_t flags;
    struct jailhouse_memory hypervisor_memory;
    struct jailhouse_console debug_console;
    struct jailhouse_platform_info platform_info;
    struct jailhouse_cell_desc root_cell;
} JH_PACKED;

_Static_assert(sizeof(struct jailhouse_console) == 32, "jailhouse_console");
_Static_assert(sizeof(struct jailhouse_memory) == 32, "jailhouse_memory");
_Static_assert(sizeof(struct jailhouse_cache) == 12, "jailhouse_cache");
_Static_assert(sizeof(struct jailhouse_irqchip) == 32, "jailhouse_irqchip");
_Static_assert(sizeof(struct jailhouse_pio) == 4, "jailhouse_pio");
_Static_assert(sizeof(struct jailhouse_pci_device) == 56, "jailhouse_pci_device");
_Static_assert(offsetof(struct jailhouse_pci_device, msi_flags) == 35,
               "jailhouse_pci_device.msi_flags");
_Static_assert(sizeof(struct jailhouse_pci_capability) == 8, "jailhouse_pci_capability");
_Static_assert(sizeof(union jailhouse_stream_id) == 4, "jailhouse_stream_id");
_Static_assert(sizeof(struct jailhouse_iommu) == 28, "jailhouse_iommu");
_Static_assert(offsetof(struct jailhouse_iommu, amd) == 16, "jailhouse_iommu.amd");
_Static_assert(sizeof(struct jailhouse_cell_desc) == 132, "jailhouse_cell_desc");
_Static_assert(sizeof(struct jailhouse_platform_info) == 280, "jailhouse_platform_info");
_Static_assert(offsetof(struct jailhouse_cell_desc, name) == 8, "jailhouse_cell_desc.name");
_Static_assert(offsetof(struct jailhouse_cell_desc, cpu_reset_address) == 84,
               "jailhouse_cell_desc.cpu_reset_address");
_Static_assert(offsetof(struct jailhouse_cell_desc, console) == 100,
               "jailhouse_cell_desc.console");
_Static_assert(sizeof(struct jailhouse_system) == 488, "jailhouse_system");
_Static_assert(offsetof(struct jailhouse_system, platform_info) == 76,
               "jailhouse_system.platform_info");
_Static_assert(offsetof(struct jailhouse_system, platform_info.iommu_units) == 88,
               "jailhouse_system.platform_info.iommu_units");
_Static_assert(offsetof(struct jailhouse_system, platform_info.x86) == 312,
               "jailhouse_system.platform_info arch union");
_Static_assert(offsetof(struct jailhouse_system, platform_info.x86.apic_khz) == 324,
               "jailhouse_system.platform_info.x86.apic_khz");
_Static_assert(offsetof(struct jailhouse_system, platform_info.arm.gicr_base) == 348,
               "jailhouse_system.platform_info.arm.gicr_base");
_Static_assert(offsetof(struct jailhouse_system, root_cell) == 356, "jailhouse_system.root_cell");

/* ------------------------------------------------------------------------ */
/* Helpers called from Python                                                */
/* ------------------------------------------------------------------------ */

/*
 * Issue one ioctl whose argument is the user-space address "arg" (0 for
 * none).  Returns the driver's non-negative result, or -errno on failure,
 * so Python reads errno from the return value and never from a thread-local
 * that another call may have overwritten.  cffi releases the GIL around the
 * call, so a long JAILHOUSE_ENABLE does not stall other threads.
 */
static int jh_ioctl(int fd, unsigned long request, uintptr_t arg)
{
    int rv = ioctl(fd, request, (void *)arg);
    return rv < 0 ? -errno : rv;
}

/* Fields of an ioctl request number, decoded by the compiler's macros. */
static unsigned int jh_ioc_dir(unsigned long request)
{
    return _IOC_DIR(request);
}

static unsigned int jh_ioc_type(unsigned long request)
{
    return _IOC_TYPE(request);
}

static unsigned int jh_ioc_nr(unsigned long request)
{
    return _IOC_NR(request);
}

static unsigned int jh_ioc_size(unsigned long request)
{
    return _IOC_SIZE(request);
}
