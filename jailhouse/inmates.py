"""Tiny park-loop inmates: a few instruction bytes that keep a cell's CPUs idle.

The self-test (:mod:`jailhouse.selftest`) needs an image that a real board can start
without building anything: it must run from the cell's reset address with no stack, no
data and no comm-region protocol, and it must never fault.  These images are a handful
of position-independent instructions that stop the CPU and loop back if it wakes up.
The bytes were written for this project from the architecture manuals (cited below) and
are checked against the GNU assembler by ``tests/test_selftest.py`` when one is present.

How a Jailhouse non-root CPU enters an inmate (ABI fact sheet and the research notes
on inmate conventions, both taken from the hypervisor's vCPU reset code):

- x86: every CPU of the cell starts in **real mode** (CR0.PE = 0, paging off, caches
  disabled: CR0.CD and NW set), with ``CS.base = cpu_reset_address & ~0xffff`` and
  ``IP = cpu_reset_address & 0xffff``.  A cell start or reset gives all of them that
  address (the hypervisor's x86 reset uses a pseudo startup vector for each CPU, not a
  wait for a startup IPI), so an inmate for more than one CPU must tell the CPUs apart
  itself, by APIC id; the park loop here is safe on any number.  Upstream x86 cells use
  ``cpu_reset_address = 0``, so the inmate's first byte sits at guest address 0.
- arm64: the first CPU starts at ``cpu_reset_address`` in AArch64 EL1 with the MMU off and
  every interrupt masked (DAIF set); the others stay off until a PSCI ``CPU_ON``.

Either way the image goes at ``cpu_reset_address``, inside a region the root cell may
load into (WRITE and LOADABLE): :func:`default_load_address` finds it.

A park-loop inmate does not answer the hypervisor's comm-region messages, so the cell
must have ``PASSIVE_COMMREG``; otherwise a shutdown or destroy of the running cell waits
for a reply that never comes (with ``msg_reply_timeout`` 0, forever).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from jailhouse.config.model import Arch, CellFlag, MemFlag
from jailhouse.errors import ConfigError

if TYPE_CHECKING:
    from jailhouse.config.model import CellConfig, MemoryRegion

__all__ = ["PARK_INMATES", "default_load_address", "loadable_region", "park_inmate"]

# x86, 16-bit real mode (Intel SDM vol. 2, instruction reference; the same encodings in
# 16-, 32- and 64-bit code):
#   0: fa       cli            ; CLI: opcode FA - mask maskable interrupts
#   1: f4       hlt            ; HLT: opcode F4 - stop until NMI/SMI/INIT or reset
#   2: eb fd    jmp 1          ; JMP rel8: EB cb; next IP is 4, 1 - 4 = -3 = 0xfd
# Relative jump only, so it runs at any address.
_X86_PARK: Final = bytes((0xFA, 0xF4, 0xEB, 0xFD))

# arm64, A64, little-endian words (Arm ARM DDI 0487, C6.2 "WFI" and C6.2 "B"):
#   0: d503207f  wfi            ; HINT #3: 1101 0101 0000 0011 0010 0000 0111 1111
#   4: 17ffffff  b    0         ; B imm26: 0x14000000 | (imm26 & 0x3ffffff), imm26 in
#                               ; words from this instruction: -1 -> 0x3ffffff
# Relative branch only, so it runs at any address.
_ARM64_PARK: Final = (0xD503207F).to_bytes(4, "little") + (0x17FFFFFF).to_bytes(4, "little")

PARK_INMATES: Final[dict[Arch, bytes]] = {Arch.X86: _X86_PARK, Arch.ARM64: _ARM64_PARK}
"""The park-loop image of each architecture that has one."""

_LOADABLE: Final = MemFlag.WRITE | MemFlag.LOADABLE
_X86_SEGMENT: Final = 0x10000


def park_inmate(arch: Arch) -> bytes:
    """Return the park-loop image of an architecture.

    Args:
        arch: The cell's architecture.

    Returns:
        The image's bytes (4 on x86, 8 on arm64).

    Raises:
        ValueError: There is no park-loop image for ``arch`` (32-bit ARM).
    """
    try:
        return PARK_INMATES[arch]
    except KeyError:
        raise ValueError(
            f"no park-loop inmate for {arch.name}; pass an image of your own"
        ) from None


def loadable_region(cell: CellConfig, address: int) -> MemoryRegion | None:
    """Return the region the driver would load an image at ``address`` into.

    The driver checks the cell's regions in config order and takes the first whose guest
    range contains the address; the load succeeds only if that region has WRITE and
    LOADABLE (ABI fact sheet, ``JAILHOUSE_CELL_LOAD``).

    Args:
        cell: The cell config.
        address: A guest address.

    Returns:
        That region, or None when the first region containing ``address`` is not
        loadable or no region contains it.
    """
    for region in cell.mem_regions:
        if region.virt_start <= address < region.virt_end:
            return region if (region.flags & _LOADABLE) == _LOADABLE else None
    return None


def default_load_address(cell: CellConfig, size: int | None = None) -> int:
    """Return where an inmate goes in a cell: its reset address, where its CPU starts.

    Args:
        cell: The cell config.
        size: The image size; by default that of :func:`park_inmate` for the cell's arch,
            and then the cell must also be able to run that image (not AArch32).

    Returns:
        ``cell.cpu_reset_address``.

    Raises:
        ConfigError: The reset address is not in a WRITE+LOADABLE region, the image does
            not fit there, the park-loop image is meant and the cell runs AArch32, or (x86)
            the image would cross a 64 KiB real-mode segment.
        ValueError: There is no park-loop image for the cell's arch and ``size`` is None.
    """
    address = cell.cpu_reset_address
    park = size is None
    if size is None:
        size = len(park_inmate(cell.arch))
    if park and cell.arch == Arch.ARM64 and CellFlag.AARCH32 in cell.flags:
        raise ConfigError(
            "flags",
            str(cell.flags),
            "the cell's CPUs start in AArch32 and the park-loop inmate is A64 code; "
            "pass an image of your own",
        )
    region = loadable_region(cell, address)
    if region is None:
        raise ConfigError(
            "cpu_reset_address",
            address,
            f"cell {cell.name!r} has no WRITE+LOADABLE region at its reset address, so no "
            "image can be loaded where its CPU starts",
        )
    if address + size > region.virt_end:
        raise ConfigError(
            "cpu_reset_address",
            address,
            f"a {size}-byte image does not fit in region {region} of cell {cell.name!r}",
        )
    if cell.arch == Arch.X86 and (address % _X86_SEGMENT) + size > _X86_SEGMENT:
        raise ConfigError(
            "cpu_reset_address",
            address,
            f"a {size}-byte real-mode image there would cross a 64 KiB segment boundary",
        )
    return address
