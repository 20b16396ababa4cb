"""Tests of the Linux load plan: where the loader, kernel, initrd and device tree go."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernels import arm64_image

from jailhouse.config.model import Arch, CellConfig, MemFlag, MemoryRegion
from jailhouse.errors import BootError
from jailhouse.examples import example_cells
from jailhouse.linux import ARM64_LOADER, COMMAND_LINE_SIZE, LoadPlan, plan_linux

LINUX = example_cells("arm64")["arm64-linux"]
"""Loader RAM 0x0+0x10000 and RAM 0x70000000+0x8000000, both WRITE|LOADABLE."""
_RAM = (0x70000000, 0x78000000)
_MIB2 = 0x200000


def tiny_dtb(size: int = 0x40) -> bytes:
    """Return a blob with an FDT header of ``size`` bytes (enough for the plan's checks)."""
    return b"\xd0\x0d\xfe\xed" + size.to_bytes(4, "big") + bytes(size - 8)


def check_invariants(cell: CellConfig, plan: LoadPlan) -> None:
    """Assert what every arm64 plan must satisfy, from the entries alone."""
    loadable = [r for r in cell.mem_regions if r.flags & (MemFlag.WRITE | MemFlag.LOADABLE) == 0x42]
    for entry in plan.entries:
        assert entry.reserved >= entry.size
        assert any(
            r.virt_start <= entry.address and entry.end <= r.virt_start + r.size for r in loadable
        ), entry
    spans = sorted((e.address, e.end) for e in plan.entries)
    assert all(a_end <= b for (_, a_end), (b, _) in itertools.pairwise(spans))
    loader, kernel, dtb = plan.entry("loader"), plan.entry("kernel"), plan.entry("dtb")
    assert loader.address == cell.cpu_reset_address
    image = kernel.data
    text_offset = int.from_bytes(image[8:16], "little")
    assert (kernel.address - text_offset) % _MIB2 == 0
    assert kernel.reserved >= int.from_bytes(image[16:24], "little")
    assert dtb.address % 8 == 0
    assert dtb.address // _MIB2 == (dtb.address + dtb.size - 1) // _MIB2
    assert dtb.size <= _MIB2
    assert loader.data[0x20:0x28] == kernel.address.to_bytes(8, "little")
    assert loader.data[0x28:0x30] == dtb.address.to_bytes(8, "little")
    assert (plan.kernel_entry, plan.boot_arg) == (kernel.address, dtb.address)
    if "initrd" in [e.what for e in plan.entries]:
        assert plan.entry("initrd").address % 0x1000 == 0


def test_plan_of_the_example_cell() -> None:
    """The example Linux cell gets the loader at 0 and the rest low in its big RAM."""
    kernel = arm64_image(0x30000)
    plan = plan_linux(
        LINUX, kernel, initrd=b"\x01" * 5000, cmdline="console=ttyAMA0", dtb=tiny_dtb()
    )
    assert [(e.what, e.address, e.size) for e in plan.entries] == [
        ("loader", 0x0, 48),
        ("kernel", 0x70000000, 0x30000),
        ("initrd", 0x70040000, 5000),  # after image_size 0x40000 (BSS included)
        ("dtb", 0x70042000, 0x40),
    ]
    assert plan.entry("kernel").data is kernel
    assert plan.entry("loader").data == ARM64_LOADER.with_params(0x70000000, 0x70042000)
    check_invariants(LINUX, plan)
    assert "0x70042000" in str(plan)
    doc = plan.to_dict()
    assert doc["images"][1] == {
        "what": "kernel",
        "address": 0x70000000,
        "size": 0x30000,
        "reserved": 0x40000,
    }


def test_given_dtb_is_loaded_unchanged_with_a_note() -> None:
    """A user's device tree wins: loaded as given; the plan says what /chosen must hold."""
    dtb = tiny_dtb(0x80)
    plan = plan_linux(LINUX, arm64_image(), cmdline="root=/dev/vda", dtb=dtb)
    assert plan.entry("dtb").data == dtb
    assert not plan.generated_dtb
    assert any("root=/dev/vda" in note for note in plan.notes)


def test_text_offset_is_honoured() -> None:
    """A kernel with text_offset 0x80000 starts that far above a 2 MiB boundary."""
    plan = plan_linux(LINUX, arm64_image(text_offset=0x80000), dtb=tiny_dtb())
    assert plan.entry("kernel").address == 0x70080000


def test_dtb_is_moved_past_a_2mib_boundary() -> None:
    """A device tree that would straddle a 2 MiB boundary starts on the boundary instead."""
    # kernel 0x70000000 + 0x1FF000 reserved: the dtb would start 0x1000 before 0x70200000
    kernel = arm64_image(0x1000, image_size=0x1FF000)
    plan = plan_linux(LINUX, kernel, dtb=tiny_dtb(0x1800))
    assert plan.entry("dtb").address == 0x70200000
    small = plan_linux(LINUX, kernel, dtb=tiny_dtb(0x800))
    assert small.entry("dtb").address == 0x701FF000


@given(
    file_size=st.integers(64, 0x80000),
    bss=st.integers(0, 0x4000000),
    text_offset=st.sampled_from([0, 0x80000, 0x1000, 0x1FF000]),
    initrd=st.integers(0, 0x3000000),
    dtb=st.integers(0x40, 0x200000),
)
def test_every_plan_keeps_the_boot_protocol(
    file_size: int, bss: int, text_offset: int, initrd: int, dtb: int
) -> None:
    """Any kernel/initrd/dtb sizes give a plan obeying every rule, or one BootError."""
    kernel = arm64_image(file_size, text_offset=text_offset, image_size=file_size + bss)
    needed = text_offset + file_size + bss + initrd + dtb
    if needed > 0x8000000 - 0x3000:  # near or over the 128 MiB RAM: may not fit
        try:
            plan = plan_linux(LINUX, kernel, initrd=b"\x02" * initrd or None, dtb=tiny_dtb(dtb))
        except BootError as exc:
            failed = exc
        else:
            check_invariants(LINUX, plan)
            return
        assert failed.field in {"kernel.image_size", "initrd", "dtb"}
        return
    plan = plan_linux(LINUX, kernel, initrd=b"\x02" * initrd or None, dtb=tiny_dtb(dtb))
    check_invariants(LINUX, plan)


def _cell(**changes: object) -> CellConfig:
    return dataclasses.replace(LINUX, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        pytest.param(
            {"kernel": arm64_image(0x1000, image_size=0x9000000)},
            "kernel.image_size",
            "no WRITE.LOADABLE region",
            id="kernel-too-big",
        ),
        pytest.param({"initrd": bytes(0x8000000)}, "initrd", "does not fit", id="initrd-too-big"),
        pytest.param(
            {"cmdline": "x" * COMMAND_LINE_SIZE}, "cmdline", "at most 2047", id="cmdline-long"
        ),
        pytest.param({"cmdline": "a\0b"}, "cmdline", "NUL", id="cmdline-nul"),
        pytest.param({"dtb": b"\0" * 64}, "dtb.magic", "0xd00dfeed", id="dtb-magic"),
        pytest.param({"dtb": tiny_dtb(0x200008)}, "dtb.size", "at most", id="dtb-big"),
        pytest.param({"dtb": tiny_dtb()[:20]}, "dtb.magic", "0xd00dfeed", id="dtb-short"),
        pytest.param(
            {"kernel": arm64_image(0x1000, magic=b"XXXX")}, "kernel.magic", "not a kernel"
        ),
    ],
)
def test_bad_input_is_one_boot_error(kwargs: dict[str, object], field: str, words: str) -> None:
    """Each impossible boot is one BootError naming the field, with the reason."""
    args: dict[str, object] = {"kernel": arm64_image(), "dtb": tiny_dtb()} | kwargs
    kernel = args.pop("kernel")
    assert isinstance(kernel, bytes)
    with pytest.raises(BootError, match=words) as info:
        plan_linux(LINUX, kernel, **args)  # type: ignore[arg-type]
    assert info.value.field == field


def test_longest_cmdline_fits() -> None:
    """2047 bytes plus the NUL is exactly COMMAND_LINE_SIZE: accepted."""
    plan = plan_linux(LINUX, arm64_image(), cmdline="x" * 2047, dtb=tiny_dtb())
    assert plan.cmdline is not None
    assert len(plan.cmdline) == 2047


def test_reset_address_outside_loadable_memory() -> None:
    """A cpu_reset_address in no loadable region cannot take the loader stub."""
    with pytest.raises(BootError, match="WRITE\\+LOADABLE") as info:
        plan_linux(_cell(cpu_reset_address=0x9000000), arm64_image(), dtb=tiny_dtb())
    assert info.value.field == "cpu_reset_address"
    with pytest.raises(BootError, match="does not fit") as info:
        plan_linux(_cell(cpu_reset_address=0xFFF0), arm64_image(), dtb=tiny_dtb())


def test_cell_without_loadable_memory() -> None:
    """A cell with no WRITE+LOADABLE region is refused, naming mem_regions."""
    regions = tuple(
        dataclasses.replace(r, flags=r.flags & ~MemFlag.LOADABLE) for r in LINUX.mem_regions
    )
    with pytest.raises(BootError) as info:
        plan_linux(_cell(mem_regions=regions), arm64_image(), dtb=tiny_dtb())
    assert info.value.field in {"mem_regions", "cpu_reset_address"}


def test_first_matching_region_decides_as_the_driver() -> None:
    """An image inside a loadable region that a read-only region shadows is refused."""
    shadow = MemoryRegion(0x0, 0x70000000, 0x1000, MemFlag.READ)
    cell = _cell(mem_regions=(shadow, *LINUX.mem_regions))
    plan = plan_linux(cell, arm64_image(), dtb=tiny_dtb())
    assert plan.entry("kernel").address >= 0x70000000 + 0x1000  # moved past the shadow
    check_invariants(cell, plan)


def test_wrong_architecture() -> None:
    """A bzImage for an arm64 cell, or an arm64 Image for an ARM cell, is refused."""
    bz = bytearray(0x1000)
    bz[0x1FE:0x200] = b"\x55\xaa"
    bz[0x202:0x206] = b"HdrS"
    with pytest.raises(BootError, match="give an arm64 Image") as info:
        plan_linux(LINUX, bytes(bz), dtb=tiny_dtb())
    assert info.value.field == "kernel.arch"
    with pytest.raises(BootError, match="arm64 and x86") as info:
        plan_linux(_cell(arch=Arch.ARM), arm64_image(), dtb=tiny_dtb())
    assert info.value.field == "arch"
