"""Tests of the Linux load plan: where the loader, kernel, initrd and device tree go."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernels import arm64_image, bzimage

from jailhouse.config.model import Arch, CellConfig, MemFlag, MemoryRegion
from jailhouse.errors import BootError
from jailhouse.examples import example_cells
from jailhouse.linux import ARM64_LOADER, COMMAND_LINE_SIZE, LoadPlan, plan_linux
from jailhouse.linux.fdt import DeviceTree, parse

LINUX = example_cells("arm64")["arm64-linux"]
"""Loader RAM 0x0+0x10000 and RAM 0x70000000+0x8000000, both WRITE|LOADABLE."""
_RAM = (0x70000000, 0x78000000)
_MIB2 = 0x200000


def tiny_dtb(size: int = 0) -> bytes:
    """Return a valid device tree blob of at least ``size`` bytes, a few more at most."""

    def blob(pad: int) -> bytes:
        tree = DeviceTree()
        tree.root.set_u32("#address-cells", 2)
        tree.root.set_u32("#size-cells", 2)
        if pad:
            tree.root.set("pad", bytes(pad))
        return tree.to_bytes()

    pad = 0
    if size <= len(blob(0)):
        return blob(0)
    while len(blob(pad)) < size:
        pad += max(size - len(blob(pad)) - 16, 1)
    assert len(blob(pad)) < max(size + 4, 152)
    return blob(pad)


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
        ("dtb", 0x70042000, len(plan.entry("dtb").data)),
    ]
    chosen = parse(plan.entry("dtb").data).node("/chosen")
    assert chosen.get_string("bootargs") == "console=ttyAMA0"
    assert chosen.get_u64("linux,initrd-start") == 0x70040000
    assert chosen.get_u64("linux,initrd-end") == 0x70040000 + 5000
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


def test_given_dtb_wins_with_chosen_set() -> None:
    """A user's device tree is loaded as given, but for /chosen, as upstream sets it."""
    dtb = tiny_dtb(0x200)
    plain = plan_linux(LINUX, arm64_image(), dtb=dtb)
    assert plain.entry("dtb").data == dtb
    assert not plain.generated_dtb
    plan = plan_linux(LINUX, arm64_image(), cmdline="root=/dev/vda", dtb=dtb)
    tree = parse(plan.entry("dtb").data)
    assert tree.node("/chosen").get_string("bootargs") == "root=/dev/vda"
    assert tree.root.get("pad") == parse(dtb).root.get("pad")


def test_generated_dtb_describes_the_cell() -> None:
    """Without a device tree, one is generated: the cell's RAM, CPUs, /chosen, the GIC."""
    from jailhouse.examples import example_system

    plan = plan_linux(
        LINUX,
        arm64_image(),
        initrd=bytes(0x3000),
        cmdline="console=ttyAMA0",
        system=example_system("arm64"),
    )
    assert plan.generated_dtb
    tree = parse(plan.entry("dtb").data)
    paths = [path for path, _node in tree.root.walk()]
    assert "/memory@70000000" in paths
    assert sum(1 for p in paths if p.startswith("/cpus/cpu@")) == len(LINUX.cpus)
    assert any(p.startswith("/interrupt-controller@") for p in paths)
    chosen = tree.node("/chosen")
    assert chosen.get_string("bootargs") == "console=ttyAMA0"
    initrd = plan.entry("initrd")
    assert chosen.get_u64("linux,initrd-start") == initrd.address
    assert chosen.get_u64("linux,initrd-end") == initrd.address + initrd.size


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
    small = plan_linux(LINUX, kernel, dtb=tiny_dtb(0xF00))
    assert small.entry("dtb").address == 0x701FF000


@given(
    file_size=st.integers(64, 0x80000),
    bss=st.integers(0, 0x4000000),
    text_offset=st.sampled_from([0, 0x80000, 0x1000, 0x1FF000]),
    initrd=st.integers(0, 0x3000000),
    dtb=st.integers(0x40, 0x1F0000),
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
        pytest.param({"dtb": tiny_dtb()[:100]}, "dtb.totalsize", "truncated", id="dtb-cut"),
        pytest.param(
            {"dtb": tiny_dtb()[:40] + bytes(91)}, "dtb", "not a valid device tree", id="dtb-bad"
        ),
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


# -- x86 -----------------------------------------------------------------------------------------

X86_LINUX = example_cells("x86")["x86-linux"]
"""Loader RAM 0x0+0x100000 and RAM 0x200000+0x4700000, both WRITE|LOADABLE."""


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def test_x86_plan_of_the_example_cell() -> None:
    """The x86 example cell: stub at 0, payload at pref_address, boot_params naming the rest."""
    kernel = bzimage(0x4000, setup_sects=3)
    plan = plan_linux(X86_LINUX, kernel, initrd=b"\x03" * 9000, cmdline="console=ttyS1")
    loader, payload = plan.entry("loader"), plan.entry("kernel")
    params, line, initrd = plan.entry("boot_params"), plan.entry("cmdline"), plan.entry("initrd")
    assert loader.address == X86_LINUX.cpu_reset_address == 0
    assert payload.address == 0x1000000  # pref_address
    assert payload.data == kernel[4 * 512 :]  # the protected-mode part only
    assert payload.reserved == 0x400000  # init_size
    assert initrd.address == 0x1400000  # the first page after init_size
    assert line.data == b"console=ttyS1\0"
    # boot.rst: cmd_line_ptr at 0x228, ramdisk_image 0x218, ramdisk_size 0x21c
    assert _u32(params.data, 0x228) == line.address
    assert (_u32(params.data, 0x218), _u32(params.data, 0x21C)) == (initrd.address, 9000)
    assert params.address % 0x1000 == 0
    assert plan.kernel_entry == 0x1000200  # the 64-bit entry, 0x200 into the payload
    assert loader.data[0x1A8:0x1B8] == (
        plan.kernel_entry.to_bytes(8, "little") + params.address.to_bytes(8, "little")
    )
    spans = sorted((e.address, e.end) for e in plan.entries)
    assert all(a_end <= b for (_, a_end), (b, _) in itertools.pairwise(spans))


def test_x86_kernel_moves_when_pref_address_is_taken() -> None:
    """A relocatable kernel whose pref_address is outside the RAM goes at an aligned address."""
    plan = plan_linux(X86_LINUX, bzimage(pref_address=0x80000000))
    assert plan.entry("kernel").address == 0x200000  # the RAM's first 2 MiB boundary
    with pytest.raises(BootError, match="fixed 0x80000000") as info:
        plan_linux(X86_LINUX, bzimage(pref_address=0x80000000, relocatable=False))
    assert info.value.field == "kernel.init_size"


@pytest.mark.parametrize(
    ("kernel", "kwargs", "field"),
    [
        pytest.param(bzimage(init_size=0x5000000), {}, "kernel.init_size", id="too-big"),
        pytest.param(bzimage(), {"initrd": bytes(0x4000000)}, "initrd", id="initrd"),
        pytest.param(
            bzimage(initrd_addr_max=0x1FFFFF), {"initrd": bytes(0x2000)}, "initrd", id="max"
        ),
        pytest.param(bzimage(cmdline_size=255), {"cmdline": "z" * 256}, "cmdline", id="cmdline"),
        pytest.param(bzimage(), {"dtb": tiny_dtb()}, "dtb", id="dtb"),
        pytest.param(arm64_image(), {}, "kernel.arch", id="arm64-image"),
        pytest.param(bzimage(xloadflags=0), {}, "kernel.xloadflags", id="32-bit"),
    ],
)
def test_x86_bad_boots(kernel: bytes, kwargs: dict[str, object], field: str) -> None:
    """Each impossible x86 boot is one BootError naming the field."""
    with pytest.raises(BootError) as info:
        plan_linux(X86_LINUX, kernel, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_x86_reset_address_must_suit_the_stub() -> None:
    """The x86 stub needs a 64 KiB aligned reset address below 1 MiB."""
    with pytest.raises(BootError) as info:
        plan_linux(dataclasses.replace(X86_LINUX, cpu_reset_address=0x1000), bzimage())
    assert info.value.field == "cpu_reset_address"
