"""Place a Linux boot in a cell's loadable RAM: the :class:`LoadPlan`.

A plan says what goes where in the cell's (guest) address space, and holds the final
bytes of each image: the loader stub with its parameter block filled in, the kernel,
the initrd and the boot parameters (arm64: the device tree).  It is computed from the
cell config alone, before any device is touched, and checks what the driver would
refuse (an image outside a WRITE+LOADABLE region, ABI fact sheet, ``CELL_LOAD``) and
what the kernel's boot protocol needs.

arm64 layout (``Documentation/arch/arm64/booting.rst``), all in the lowest free stretch
of one WRITE+LOADABLE region that holds everything:

- the loader stub at ``cpu_reset_address`` (where the cell's CPU starts);
- the kernel ``text_offset`` above a 2 MiB aligned base, with ``image_size`` bytes kept
  free from its start (its BSS), as low as possible (the protocol prefers the base near
  the start of RAM);
- the initrd on the next page boundary after it, inside the 1 GiB aligned 32 GiB window
  that also holds the kernel;
- the device tree last (its contents name the initrd), 8-byte aligned (we take a page),
  at most 2 MiB, and not crossing a 2 MiB boundary.  Without a given one it is
  generated from the cell and system configs (:mod:`jailhouse.linux._devicetree`); a
  given one gets ``bootargs`` and the initrd in ``/chosen``
  (:func:`jailhouse.linux.fdt.set_chosen`), as upstream's tool sets them.

x86 layout (``Documentation/arch/x86/boot.rst``; the contract in
:mod:`jailhouse.linux._x86`), all below 4 GiB:

- the loader stub (28 KiB with its page tables) at ``cpu_reset_address``, which must be
  64 KiB aligned and below 1 MiB;
- the protected-mode kernel (the bzImage after its setup sectors) at ``pref_address``
  when ``init_size`` bytes are free there, else (a relocatable kernel) at the lowest
  ``kernel_alignment`` boundary above 1 MiB with that room; the kernel decompresses
  inside it;
- the initrd on the first page after that, below ``initrd_addr_max``;
- ``boot_params`` (zero page, Jailhouse setup_data, the stub's block) and the command
  line in the lowest free loadable RAM (for the example cells: the loader region).

Upstream's ``jailhouse cell linux`` puts the device tree first in the region and leaves
4 times the kernel's file size free before the initrd, because it does not read
``image_size``; reading it, we keep exactly what the kernel uses.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from jailhouse.config.flags import PAGE_SIZE, Arch, MemFlag
from jailhouse.errors import BootError
from jailhouse.linux._arm64 import ARM64_LOADER, KERNEL_ALIGN, Arm64Image
from jailhouse.linux._devicetree import generate_device_tree
from jailhouse.linux._kernel import X86Kernel, parse_kernel
from jailhouse.linux._x86 import (
    PARAMS_IMAGE_SIZE,
    X86_LOADER,
    boot_params_for_cell,
    check_reset_address,
)
from jailhouse.linux.fdt import parse, set_chosen

if TYPE_CHECKING:
    from jailhouse.config.model import CellConfig, MemoryRegion, SystemConfig
    from jailhouse.linux._loader import LoaderStub

__all__ = ["COMMAND_LINE_SIZE", "LoadEntry", "LoadPlan", "plan_linux"]

COMMAND_LINE_SIZE: Final = 2048
"""arm64's ``COMMAND_LINE_SIZE``: the command line's bytes plus its NUL."""
DTB_MAX: Final = 0x200000
"""The arm64 boot protocol's largest device tree, and the window it must not cross."""
FDT_MAGIC: Final = b"\xd0\x0d\xfe\xed"
_LOADABLE: Final = MemFlag.WRITE | MemFlag.LOADABLE
_GIB: Final = 1 << 30
_ONE_MIB: Final = 1 << 20
_FOUR_GIB: Final = 1 << 32
_INITRD_WINDOW: Final = 32 << 30


@dataclass(frozen=True, slots=True)
class LoadEntry:
    """One image of a plan.

    Attributes:
        what: ``loader``, ``kernel``, ``initrd``, ``dtb`` ...
        address: Where it is loaded, in the cell's address space.
        data: Its final bytes.
        reserved: Bytes kept free from :attr:`address` (more than the data for a kernel,
            which uses its BSS beyond the file).
    """

    what: str
    address: int
    data: bytes = field(repr=False)
    reserved: int

    @property
    def size(self) -> int:
        """Bytes loaded."""
        return len(self.data)

    @property
    def end(self) -> int:
        """First address after the reserved bytes."""
        return self.address + self.reserved

    def __str__(self) -> str:
        """Render as ``kernel 0x74000000 +0x1200000``."""
        return f"{self.what} {self.address:#x} +{self.size:#x}"


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Where each image of a Linux boot goes, and the bytes to load.

    Attributes:
        cell: The cell's name.
        arch: The cell's architecture.
        kernel_format: The kernel image's format, such as ``arm64 Image``.
        entries: The images, in load order (loader first).
        kernel_entry: The address the loader jumps to.
        boot_arg: The address the loader passes to the kernel (arm64: of the device tree,
            in ``x0``).
        cmdline: The kernel command line, if any.
        generated_dtb: Whether the device tree was generated from the configs.
        notes: What the user should know, such as a given device tree loaded unchanged.
    """

    cell: str
    arch: Arch
    kernel_format: str
    entries: tuple[LoadEntry, ...]
    kernel_entry: int
    boot_arg: int
    cmdline: str | None = None
    generated_dtb: bool = False
    notes: tuple[str, ...] = ()

    def entry(self, what: str) -> LoadEntry:
        """Return the entry named ``what``.

        Raises:
            KeyError: The plan has none.
        """
        for item in self.entries:
            if item.what == what:
                return item
        raise KeyError(what)

    def images(self) -> list[tuple[bytes, int]]:
        """Return ``(data, address)`` of every image, in load order."""
        return [(item.data, item.address) for item in self.entries]

    def to_dict(self) -> dict[str, object]:
        """Return the plan as JSON-ready values (addresses and sizes as integers)."""
        return {
            "cell": self.cell,
            "arch": self.arch.name,
            "kernel_format": self.kernel_format,
            "kernel_entry": self.kernel_entry,
            "boot_arg": self.boot_arg,
            "cmdline": self.cmdline,
            "generated_dtb": self.generated_dtb,
            "notes": list(self.notes),
            "images": [
                {"what": e.what, "address": e.address, "size": e.size, "reserved": e.reserved}
                for e in self.entries
            ],
        }

    def __str__(self) -> str:
        """Render a table: one line per image, then the entry and the command line."""
        arg = "x0" if self.arch == Arch.ARM64 else "rsi"
        lines = [
            f"Linux boot plan for cell {self.cell!r} ({self.kernel_format}):",
            f"  {'IMAGE':<12}{'ADDRESS':>20}{'SIZE':>12}{'RESERVED':>12}",
        ]
        lines += [
            f"  {e.what:<12}{e.address:>#20x}{e.size:>#12x}{e.reserved:>#12x}" for e in self.entries
        ]
        lines.append(f"  entry {self.kernel_entry:#x}, {arg} = {self.boot_arg:#x}")
        if self.generated_dtb:
            lines.append("  device tree generated from the cell and system configs")
        lines.append(f"  cmdline: {self.cmdline!r}" if self.cmdline else "  cmdline: (none)")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# -- free space ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Span:
    """A free stretch ``[start, end)`` of one loadable region."""

    start: int
    end: int
    region: int


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _loadable(cell: CellConfig) -> list[tuple[int, MemoryRegion]]:
    regions = [
        (index, r)
        for index, r in enumerate(cell.mem_regions)
        if r.flags & _LOADABLE == _LOADABLE and r.size
    ]
    if not regions:
        raise BootError(
            "mem_regions",
            len(cell.mem_regions),
            f"cell {cell.name!r} has no memory region with both WRITE and LOADABLE, so "
            "nothing can be loaded into it",
        )
    return regions


def _driver_region(cell: CellConfig, address: int) -> tuple[int, MemoryRegion] | None:
    """Return the region the driver picks for a target: the first one containing it."""
    for index, r in enumerate(cell.mem_regions):
        if r.virt_start <= address < r.virt_start + r.size:
            return index, r
    return None


def _place_stub(cell: CellConfig, stub: LoaderStub) -> int:
    """Return the loader stub's address, checked to lie in a loadable region."""
    if stub.load_address is not None:
        address, where = stub.load_address, f"its fixed address {stub.load_address:#x}"
        field_name, value = "cpu_reset_address", cell.cpu_reset_address
        if cell.cpu_reset_address != address + stub.entry_offset:
            raise BootError(
                field_name,
                value,
                f"the {stub.arch.name} loader stub is entered at "
                f"{address + stub.entry_offset:#x}; set cpu_reset_address to that",
            )
    else:
        address = cell.cpu_reset_address - stub.entry_offset
        where, field_name, value = "cpu_reset_address", "cpu_reset_address", address
    found = _driver_region(cell, address)
    if found is None or found[1].flags & _LOADABLE != _LOADABLE:
        raise BootError(
            field_name,
            value,
            f"the loader stub ({len(stub.code)} bytes) goes at {where}, which lies in no "
            "WRITE+LOADABLE memory region of the cell; add one there (or move "
            "cpu_reset_address into loadable RAM)",
        )
    _index, region = found
    if address + len(stub.code) > region.virt_start + region.size:
        raise BootError(
            field_name,
            value,
            f"the loader stub ({len(stub.code)} bytes) does not fit before the end of its "
            f"region at {region.virt_start + region.size:#x}",
        )
    return address


def _subtract(pieces: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Remove ``[lo, hi)`` from intervals."""
    out: list[tuple[int, int]] = []
    for start, end in pieces:
        if hi <= start or lo >= end:
            out.append((start, end))
            continue
        out += [(a, b) for a, b in ((start, lo), (hi, end)) if b > a]
    return out


def _free_spans(cell: CellConfig, taken: tuple[int, int]) -> list[_Span]:
    """Return the loadable regions' stretches outside ``taken``, lowest first.

    A stretch that an earlier region also covers is left out: the driver picks the first
    region containing an image's address, which would be that one.
    """
    spans: list[_Span] = []
    for index, r in _loadable(cell):
        pieces = [(r.virt_start, r.virt_start + r.size)]
        for earlier in cell.mem_regions[:index]:
            pieces = _subtract(pieces, earlier.virt_start, earlier.virt_start + earlier.size)
        pieces = _subtract(pieces, *taken)
        spans += [_Span(a, b, index) for a, b in pieces]
    return sorted(spans, key=lambda s: (s.start, s.region))


# -- checks ----------------------------------------------------------------------------------


def _check_cmdline(cmdline: str | None, limit: int) -> None:
    if cmdline is None:
        return
    if "\0" in cmdline:
        raise BootError("cmdline", cmdline, "contains a NUL character, which would end it early")
    size = len(cmdline.encode())
    if size + 1 > limit:
        raise BootError(
            "cmdline",
            cmdline,
            f"is {size} bytes; the kernel takes at most {limit - 1} (COMMAND_LINE_SIZE "
            f"{limit} with the NUL)",
        )


def _check_dtb(dtb: bytes) -> None:
    if len(dtb) < 40 or dtb[:4] != FDT_MAGIC:  # the FDT header's size
        raise BootError(
            "dtb.magic",
            dtb[:4],
            "a device tree blob starts with 0xd00dfeed; compile a .dts with "
            "`dtc -O dtb -o board.dtb board.dts`",
        )
    total = int.from_bytes(dtb[4:8], "big")
    if total > len(dtb):
        raise BootError(
            "dtb.totalsize",
            total,
            f"the header says the blob is longer than the file's {len(dtb):#x} bytes; a "
            "truncated file?",
        )
    if len(dtb) > DTB_MAX:
        raise BootError(
            "dtb.size",
            len(dtb),
            f"the arm64 boot protocol takes a device tree of at most {DTB_MAX:#x} bytes",
        )
    try:
        parse(dtb)
    except ValueError as exc:
        raise BootError("dtb", len(dtb), f"not a valid device tree blob: {exc}") from exc


def _check_against_driver(cell: CellConfig, entries: list[LoadEntry]) -> None:
    """Check every entry as ``CELL_LOAD`` would, and that none overlap."""
    for item in entries:
        found = _driver_region(cell, item.address)
        if (
            found is None
            or found[1].flags & _LOADABLE != _LOADABLE
            or item.end > found[1].virt_start + found[1].size
        ):
            raise BootError(
                item.what,
                item.address,
                f"{item.reserved:#x} bytes from there are not inside one WRITE+LOADABLE "
                "memory region (the driver checks the first region containing the address)",
            )
    ordered = sorted(entries, key=lambda e: e.address)
    for low, high in itertools.pairwise(ordered):
        if low.end > high.address:
            raise BootError(
                high.what,
                high.address,
                f"overlaps the {low.what} at {low.address:#x}+{low.reserved:#x}",
            )


# -- arm64 -----------------------------------------------------------------------------------


def _kernel_start(span: _Span, kernel: Arm64Image) -> int:
    """Return the lowest kernel start in ``span``: ``text_offset`` above a 2 MiB boundary."""
    base = max(_align_up(span.start - kernel.text_offset, KERNEL_ALIGN), 0)
    return base + kernel.text_offset


def _plan_arm64(  # noqa: PLR0917 - plan_linux's arguments, passed on
    cell: CellConfig,
    kernel: Arm64Image,
    initrd: bytes | None,
    cmdline: str | None,
    dtb: bytes | None,
    system: SystemConfig | None,
) -> LoadPlan:
    _check_cmdline(cmdline, COMMAND_LINE_SIZE)
    if dtb is not None:
        _check_dtb(dtb)
    stub = ARM64_LOADER
    stub_at = _place_stub(cell, stub)
    spans = _free_spans(cell, (stub_at, stub_at + len(stub.code)))
    reserved = _align_up(kernel.image_size, PAGE_SIZE)
    fits = [s for s in spans if _kernel_start(s, kernel) + reserved <= s.end]
    if not fits:
        largest = max(s.end - s.start for s in spans)
        raise BootError(
            "kernel.image_size",
            kernel.image_size,
            f"no WRITE+LOADABLE region of cell {cell.name!r} has room for the kernel "
            f"at {kernel.text_offset:#x} above a 2 MiB boundary (largest free stretch "
            f"{largest:#x} bytes)",
        )
    initrd_size = _align_up(len(initrd), PAGE_SIZE) if initrd else 0
    # room for the device tree: its size is known only once the initrd is placed
    dtb_room = _align_up(len(dtb), PAGE_SIZE) if dtb is not None else PAGE_SIZE
    span = next(
        (s for s in fits if _kernel_start(s, kernel) + reserved + initrd_size + dtb_room <= s.end),
        None,
    )
    if span is None:
        best = max(fits, key=lambda s: s.end - _kernel_start(s, kernel) - reserved)
        room = best.end - _kernel_start(best, kernel) - reserved
        what, value = ("initrd", len(initrd)) if initrd else ("dtb", dtb_room)
        raise BootError(
            what,
            value,
            f"does not fit after the kernel in cell {cell.name!r}: {room:#x} bytes are "
            f"free after it, {initrd_size + dtb_room:#x} needed for the initrd and the "
            "device tree",
        )
    kernel_at = _kernel_start(span, kernel)
    cursor = kernel_at + reserved
    entries = [LoadEntry("kernel", kernel_at, kernel.data, reserved)]
    initrd_range: tuple[int, int] | None = None
    if initrd:
        initrd_range = (cursor, cursor + len(initrd))
        window = kernel_at // _GIB * _GIB
        if cursor + len(initrd) > window + _INITRD_WINDOW:
            raise BootError(
                "initrd",
                len(initrd),
                "the arm64 boot protocol wants the initrd and the kernel inside one "
                "1 GiB aligned window of 32 GiB",
            )
        entries.append(LoadEntry("initrd", cursor, initrd, initrd_size))
        cursor += initrd_size
    generated = dtb is None
    if dtb is None:
        tree = generate_device_tree(system, cell, bootargs=cmdline, initrd=initrd_range)
        blob = tree.blob
        notes = [f"device tree: {note}" for note in tree.notes]
    else:
        blob, notes = dtb, []
        if cmdline is not None or initrd_range is not None:
            try:
                blob = set_chosen(dtb, bootargs=cmdline, initrd=initrd_range)
            except ValueError as exc:
                raise BootError("dtb", len(dtb), f"cannot set /chosen in it: {exc}") from exc
            notes.append("the given device tree's /chosen got the bootargs and initrd")
    _check_dtb(blob)
    dtb_at = cursor
    if dtb_at // DTB_MAX != (dtb_at + len(blob) - 1) // DTB_MAX:
        dtb_at = _align_up(dtb_at, DTB_MAX)
    dtb_reserved = _align_up(len(blob), 8)
    if dtb_at + dtb_reserved > span.end:
        raise BootError(
            "dtb",
            len(blob),
            f"the device tree does not fit after the kernel and initrd, at {dtb_at:#x} "
            f"before the region's end {span.end:#x}",
        )
    entries.append(LoadEntry("dtb", dtb_at, blob, dtb_reserved))
    loader = LoadEntry("loader", stub_at, stub.with_params(kernel_at, dtb_at), len(stub.code))
    entries.insert(0, loader)
    _check_against_driver(cell, entries)
    return LoadPlan(
        cell=cell.name,
        arch=Arch.ARM64,
        kernel_format=kernel.format,
        entries=tuple(entries),
        kernel_entry=kernel_at,
        boot_arg=dtb_at,
        cmdline=cmdline,
        generated_dtb=generated,
        notes=tuple(notes),
    )


# -- x86 -------------------------------------------------------------------------------------


class _Free:
    """Free stretches of loadable memory, handed out lowest address first."""

    def __init__(self, spans: list[_Span]) -> None:
        self.spans = [(s.start, s.end) for s in spans]

    def fits(self, address: int, size: int) -> bool:
        """Tell whether ``[address, address + size)`` is free in one stretch."""
        return any(a <= address and address + size <= b for a, b in self.spans)

    def find(self, size: int, align: int, *, low: int = 0, high: int = _FOUR_GIB) -> int | None:
        """Return the lowest ``align``-aligned address in ``[low, high)`` with room for ``size``."""
        for a, b in self.spans:
            address = _align_up(max(a, low), align)
            if address + size <= min(b, high):
                return address
        return None

    def take(self, address: int, size: int) -> None:
        """Mark ``[address, address + size)`` used."""
        pieces: list[tuple[int, int]] = []
        for a, b in self.spans:
            pieces += _subtract([(a, b)], address, address + size)
        self.spans = pieces

    def largest(self) -> int:
        """Return the size of the largest free stretch."""
        return max((b - a for a, b in self.spans), default=0)


def _plan_x86(  # noqa: PLR0917 - plan_linux's arguments, passed on
    cell: CellConfig,
    kernel: X86Kernel,
    initrd: bytes | None,
    cmdline: str | None,
    dtb: bytes | None,
    system: SystemConfig | None,
) -> LoadPlan:
    image = kernel.header
    if dtb is not None:
        raise BootError(
            "dtb",
            len(dtb),
            "an x86 kernel takes its boot parameters in boot_params, not in a device tree",
        )
    _check_cmdline(cmdline, image.cmdline_size + 1)
    check_reset_address(cell.cpu_reset_address)
    stub = X86_LOADER
    stub_at = _place_stub(cell, stub)
    free = _Free(_free_spans(cell, (stub_at, stub_at + len(stub.code))))
    payload = kernel.data[image.payload_offset :][: image.payload_size]
    reserved = _align_up(max(image.init_size, len(payload)), PAGE_SIZE)
    if free.fits(image.pref_address, reserved):
        kernel_at: int | None = image.pref_address
    elif image.relocatable_kernel:
        kernel_at = free.find(reserved, image.kernel_alignment, low=_ONE_MIB)
    else:
        kernel_at = None
    if kernel_at is None:
        where = "" if image.relocatable_kernel else f" at its fixed {image.pref_address:#x}"
        raise BootError(
            "kernel.init_size",
            image.init_size,
            f"no WRITE+LOADABLE region of cell {cell.name!r} below 4 GiB has room for the "
            f"kernel{where} ({reserved:#x} bytes, {image.kernel_alignment:#x} aligned; "
            f"largest free stretch {free.largest():#x} bytes)",
        )
    free.take(kernel_at, reserved)
    entries = [LoadEntry("kernel", kernel_at, payload, reserved)]
    initrd_range: tuple[int, int] | None = None
    if initrd:
        size = _align_up(len(initrd), PAGE_SIZE)
        limit = min(image.initrd_addr_max + 1, _FOUR_GIB)
        after = free.find(size, PAGE_SIZE, low=kernel_at + reserved, high=limit)
        initrd_at = (
            after if after is not None else free.find(size, PAGE_SIZE, low=_ONE_MIB, high=limit)
        )
        if initrd_at is None:
            raise BootError(
                "initrd",
                len(initrd),
                f"does not fit in cell {cell.name!r}: no free page-aligned stretch of "
                f"{size:#x} bytes in WRITE+LOADABLE RAM between 1 MiB and the kernel's "
                f"initrd_addr_max {image.initrd_addr_max:#x} (largest free "
                f"{free.largest():#x} bytes)",
            )
        free.take(initrd_at, size)
        initrd_range = (initrd_at, len(initrd))
        entries.append(LoadEntry("initrd", initrd_at, initrd, size))
    params_at = free.find(PARAMS_IMAGE_SIZE, PAGE_SIZE)
    line = (cmdline or "").encode() + b"\0"
    if params_at is None:
        raise BootError(
            "boot_params",
            PARAMS_IMAGE_SIZE,
            f"no free page-aligned stretch of {PARAMS_IMAGE_SIZE:#x} bytes is left in the "
            f"loadable RAM of cell {cell.name!r} for the boot parameters",
        )
    free.take(params_at, PARAMS_IMAGE_SIZE)
    cmdline_at = free.find(len(line), 16)
    if cmdline_at is None:
        raise BootError(
            "cmdline", cmdline, "no free loadable RAM below 4 GiB is left for the command line"
        )
    free.take(cmdline_at, len(line))
    params = boot_params_for_cell(
        image,
        cell,
        system,
        params_address=params_at,
        cmdline_address=cmdline_at,
        cmdline=line[:-1],
        initrd=initrd_range,
    )
    entries.append(LoadEntry("boot_params", params_at, params, len(params)))
    entries.append(LoadEntry("cmdline", cmdline_at, line, len(line)))
    kernel_entry = kernel_at + image.entry_64_offset
    loader = LoadEntry("loader", stub_at, stub.with_params(kernel_entry, params_at), len(stub.code))
    entries.insert(0, loader)
    _check_against_driver(cell, entries)
    return LoadPlan(
        cell=cell.name,
        arch=Arch.X86,
        kernel_format=kernel.format,
        entries=tuple(entries),
        kernel_entry=kernel_entry,
        boot_arg=params_at,
        cmdline=cmdline,
    )


# -- entry point -----------------------------------------------------------------------------


def plan_linux(
    cell: CellConfig,
    kernel: bytes,
    *,
    initrd: bytes | None = None,
    cmdline: str | None = None,
    dtb: bytes | None = None,
    system: SystemConfig | None = None,
) -> LoadPlan:
    """Plan a Linux boot in a cell: check everything and place every image.

    Args:
        cell: The cell config.
        kernel: The kernel image (arm64 ``Image`` or x86 ``bzImage``, matching the
            cell's architecture).
        initrd: The initial ramdisk, if any.
        cmdline: The kernel command line, if any.
        dtb: arm64: the device tree blob; when ``None``, one is generated from the cell
            config and ``system``.  A given one is loaded as it is, except that
            ``/chosen`` gets ``cmdline`` and the initrd's addresses, as upstream's tool
            sets them.
        system: The system config, for the generated device tree (interrupt controller,
            console UART); optional.

    Returns:
        The plan; nothing has been loaded.

    Raises:
        BootError: The kernel, initrd, command line or device tree cannot boot in this
            cell; the error names the field (``kernel.magic``, ``initrd``, ``cmdline``
            ...), its value and why.
    """
    image = parse_kernel(kernel, cell.arch, cell=cell.name)
    if isinstance(image, Arm64Image):
        return _plan_arm64(cell, image, initrd, cmdline, dtb, system)
    if isinstance(image, X86Kernel):
        return _plan_x86(cell, image, initrd, cmdline, dtb, system)
    raise BootError("kernel", image.format, "booting this format is not available")
