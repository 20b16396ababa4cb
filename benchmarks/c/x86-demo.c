/*
 * The x86-demo cell of jailhouse/examples.py, written as a C config: what the
 * upstream route compiles with gcc and extracts with objcopy, one process pair
 * per config.  benchmarks/run.py times that route against our translator and
 * checks that both give the same bytes as fixtures/x86/x86-demo.cell.
 *
 * Copyright (c) python-jailhouse developers.  SPDX-License-Identifier: MIT
 *
 * Written for this project on our own struct declarations
 * (cffi_build/ioctl.csrc.c, config revision 14); no upstream config was
 * copied.  Build: gcc -O2 -I cffi_build -c x86-demo.c -o x86-demo.o &&
 * objcopy -O binary --remove-section=.note.gnu.property x86-demo.o x86-demo.cell
 */

#include "ioctl.csrc.c"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define MEM_READ 0x0001
#define MEM_WRITE 0x0002
#define MEM_EXECUTE 0x0004
#define MEM_COMM_REGION 0x0020
#define MEM_LOADABLE 0x0040
#define MEM_ROOTSHARED 0x0080

#define CELL_PASSIVE_COMMREG 0x00000001
#define CELL_VIRTUAL_CONSOLE_PERMITTED 0x40000000

#define CON_TYPE_8250 2
#define PCI_TYPE_IVSHMEM 3

struct {
    struct jailhouse_cell_desc cell;
    uint8_t cpus[8];
    struct jailhouse_memory mem_regions[6];
    struct jailhouse_pio pio_regions[1];
    struct jailhouse_pci_device pci_devices[1];
} JH_PACKED config = {
    .cell = {
        .signature = JAILHOUSE_CELL_DESC_SIGNATURE,
        .architecture = JAILHOUSE_X86,
        .revision = JAILHOUSE_CONFIG_REVISION,
        .name = "x86-demo",
        .flags = CELL_PASSIVE_COMMREG | CELL_VIRTUAL_CONSOLE_PERMITTED,
        .cpu_set_size = sizeof(config.cpus),
        .num_memory_regions = ARRAY_SIZE(config.mem_regions),
        .num_pio_regions = ARRAY_SIZE(config.pio_regions),
        .num_pci_devices = ARRAY_SIZE(config.pci_devices),
        .console = {
            .address = 0x3f8,
            .type = CON_TYPE_8250,
        },
    },

    .cpus = { 0x08 }, /* CPU 3 */

    .mem_regions = {
        /* ivshmem link at 0x3f000000, this cell is peer 1 of 2 */
        { 0x3f000000, 0x3f000000, 0x1000, MEM_READ | MEM_ROOTSHARED },
        { 0x3f001000, 0x3f001000, 0x9000, MEM_READ | MEM_WRITE | MEM_ROOTSHARED },
        { 0x3f00a000, 0x3f00a000, 0x2000, MEM_READ | MEM_ROOTSHARED },
        { 0x3f00c000, 0x3f00c000, 0x2000, MEM_READ | MEM_WRITE | MEM_ROOTSHARED },
        /* 1 MiB of RAM at guest 0, the image goes there */
        { 0x3ef00000, 0x0, 0x100000,
          MEM_READ | MEM_WRITE | MEM_EXECUTE | MEM_LOADABLE },
        /* communication region */
        { 0x0, 0x100000, 0x1000, MEM_READ | MEM_WRITE | MEM_COMM_REGION },
    },

    .pio_regions = {
        { 0x3f8, 8 }, /* the serial port */
    },

    .pci_devices = {
        {
            .type = PCI_TYPE_IVSHMEM,
            .bdf = 0x0170, /* 01:0e.0 */
            .bar_mask = { 0xfffff000, 0xfffff000, 0, 0, 0, 0 },
            .num_msix_vectors = 2,
            .shmem_regions_start = 0,
            .shmem_dev_id = 1,
            .shmem_peers = 2,
        },
    },
};
