/*
 * Stand-in for Jailhouse's <jailhouse/cell-config.h> (config revision 14): the
 * struct, member and macro names a C config uses, declared for the tests of
 * jailhouse.configgen's C output.  Written for this project from the layout
 * in cffi_build/ioctl.csrc.c (which the compiler checks against our codec);
 * the MSI bits are the two one-bit fields a C config names.
 *
 * Copyright (c) python-jailhouse developers.  SPDX-License-Identifier: MIT
 */
#ifndef JH_TEST_CELL_CONFIG_H
#define JH_TEST_CELL_CONFIG_H

#define JH_PACKED __attribute__((packed))

#define JAILHOUSE_CONFIG_REVISION 14
#define JAILHOUSE_X86 0
#define JAILHOUSE_ARM 1
#define JAILHOUSE_ARM64 2
#define JAILHOUSE_CELL_DESC_SIGNATURE "JHCLL"
#define JAILHOUSE_SYSTEM_SIGNATURE "JHSYS"

#define JAILHOUSE_CELL_PASSIVE_COMMREG 0x00000001
#define JAILHOUSE_CELL_TEST_DEVICE 0x00000002
#define JAILHOUSE_CELL_AARCH32 0x00000004
#define JAILHOUSE_CELL_VIRTUAL_CONSOLE_PERMITTED 0x40000000
#define JAILHOUSE_CELL_VIRTUAL_CONSOLE_ACTIVE 0x80000000
#define JAILHOUSE_SYS_VIRTUAL_DEBUG_CONSOLE 0x0001

#define JAILHOUSE_MEM_READ 0x0001
#define JAILHOUSE_MEM_WRITE 0x0002
#define JAILHOUSE_MEM_EXECUTE 0x0004
#define JAILHOUSE_MEM_DMA 0x0008
#define JAILHOUSE_MEM_IO 0x0010
#define JAILHOUSE_MEM_COMM_REGION 0x0020
#define JAILHOUSE_MEM_LOADABLE 0x0040
#define JAILHOUSE_MEM_ROOTSHARED 0x0080
#define JAILHOUSE_MEM_NO_HUGEPAGES 0x0100
#define JAILHOUSE_MEM_IO_UNALIGNED 0x8000
#define JAILHOUSE_MEM_IO_8 0x10000
#define JAILHOUSE_MEM_IO_16 0x20000
#define JAILHOUSE_MEM_IO_32 0x40000
#define JAILHOUSE_MEM_IO_64 0x80000

#define JAILHOUSE_CON_TYPE_NONE 0x0000
#define JAILHOUSE_CON_TYPE_EFIFB 0x0001
#define JAILHOUSE_CON_TYPE_8250 0x0002
#define JAILHOUSE_CON_TYPE_PL011 0x0003
#define JAILHOUSE_CON_TYPE_XUARTPS 0x0004
#define JAILHOUSE_CON_TYPE_MVEBU 0x0005
#define JAILHOUSE_CON_TYPE_HSCIF 0x0006
#define JAILHOUSE_CON_TYPE_SCIFA 0x0007
#define JAILHOUSE_CON_TYPE_IMX 0x0008
#define JAILHOUSE_CON_TYPE_IMX_LPUART 0x0009
#define JAILHOUSE_CON_TYPE_SCIF 0x000a
#define JAILHOUSE_CON_ACCESS_MMIO 0x0001
#define JAILHOUSE_CON_REGDIST_4 0x0002
#define JAILHOUSE_CON_FB_1920x1080 0x0004
#define JAILHOUSE_CON_INVERTED_GATE 0x1000
#define JAILHOUSE_CON_MDR_QUIRK 0x2000

#define JAILHOUSE_PCI_TYPE_DEVICE 0x01
#define JAILHOUSE_PCI_TYPE_BRIDGE 0x02
#define JAILHOUSE_PCI_TYPE_IVSHMEM 0x03
#define JAILHOUSE_PCI_EXT_CAP 0x8000
#define JAILHOUSE_PCICAPS_WRITE 0x0001

#define JAILHOUSE_IOMMU_AMD 1
#define JAILHOUSE_IOMMU_INTEL 2
#define JAILHOUSE_IOMMU_SMMUV3 3
#define JAILHOUSE_IOMMU_PVU 4
#define JAILHOUSE_IOMMU_ARM_MMU500 5

#define PIO_RANGE(__base, __length) { .base = __base, .length = __length }

struct jailhouse_console {
	__u64 address;
	__u32 size;
	__u16 type;
	__u16 flags;
	__u32 divider;
	__u32 gate_nr;
	__u64 clock_reg;
} JH_PACKED;

struct jailhouse_memory {
	__u64 phys_start;
	__u64 virt_start;
	__u64 size;
	__u64 flags;
} JH_PACKED;

struct jailhouse_cache {
	__u32 start;
	__u32 size;
	__u8 type;
	__u8 padding;
	__u16 flags;
} JH_PACKED;

struct jailhouse_irqchip {
	__u64 address;
	__u32 id;
	__u32 pin_base;
	__u32 pin_bitmap[4];
} JH_PACKED;

struct jailhouse_pio {
	__u16 base;
	__u16 length;
} JH_PACKED;

struct jailhouse_pci_device {
	__u8 type;
	__u8 iommu;
	__u16 domain;
	__u16 bdf;
	__u32 bar_mask[6];
	__u16 caps_start;
	__u16 num_caps;
	__u8 num_msi_vectors;
	__u8 msi_64bits:1;
	__u8 msi_maskable:1;
	__u16 num_msix_vectors;
	__u16 msix_region_size;
	__u64 msix_address;
	__u32 shmem_regions_start;
	__u8 shmem_dev_id;
	__u8 shmem_peers;
	__u16 shmem_protocol;
} JH_PACKED;

struct jailhouse_pci_capability {
	__u16 id;
	__u16 start;
	__u16 len;
	__u16 flags;
} JH_PACKED;

union jailhouse_stream_id {
	__u32 id;
	struct {
		__u16 id;
		__u16 mask_out;
	} JH_PACKED mmu500;
} JH_PACKED;

struct jailhouse_iommu {
	__u32 type;
	__u64 base;
	__u32 size;
	union {
		struct {
			__u16 bdf;
			__u8 base_cap;
			__u8 msi_cap;
			__u32 features;
		} JH_PACKED amd;
		struct {
			__u64 tlb_base;
			__u32 tlb_size;
		} JH_PACKED tipvu;
	};
} JH_PACKED;

struct jailhouse_cell_desc {
	char signature[5];
	__u8 architecture;
	__u16 revision;
	char name[32];
	__u32 id;
	__u32 flags;
	__u32 cpu_set_size;
	__u32 num_memory_regions;
	__u32 num_cache_regions;
	__u32 num_irqchips;
	__u32 num_pio_regions;
	__u32 num_pci_devices;
	__u32 num_pci_caps;
	__u32 num_stream_ids;
	__u32 vpci_irq_base;
	__u64 cpu_reset_address;
	__u64 msg_reply_timeout;
	struct jailhouse_console console;
} JH_PACKED;

struct jailhouse_system {
	char signature[5];
	__u8 architecture;
	__u16 revision;
	__u32 flags;
	struct jailhouse_memory hypervisor_memory;
	struct jailhouse_console debug_console;
	struct {
		__u64 pci_mmconfig_base;
		__u8 pci_mmconfig_end_bus;
		__u8 pci_is_virtual;
		__u16 pci_domain;
		struct jailhouse_iommu iommu_units[8];
		union {
			struct {
				__u16 pm_timer_address;
				__u8 apic_mode;
				__u8 padding;
				__u32 vtd_interrupt_limit;
				__u32 tsc_khz;
				__u32 apic_khz;
			} JH_PACKED x86;
			struct {
				__u8 maintenance_irq;
				__u8 gic_version;
				__u8 padding[2];
				__u64 gicd_base;
				__u64 gicc_base;
				__u64 gich_base;
				__u64 gicv_base;
				__u64 gicr_base;
			} JH_PACKED arm;
		} JH_PACKED;
	} JH_PACKED platform_info;
	struct jailhouse_cell_desc root_cell;
} JH_PACKED;

_Static_assert(sizeof(struct jailhouse_pci_device) == 56, "jailhouse_pci_device");
_Static_assert(sizeof(struct jailhouse_iommu) == 28, "jailhouse_iommu");
_Static_assert(sizeof(struct jailhouse_cell_desc) == 132, "jailhouse_cell_desc");
_Static_assert(sizeof(struct jailhouse_system) == 488, "jailhouse_system");

#endif
