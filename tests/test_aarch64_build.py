"""The cffi shim's C source builds for arm64, with the request numbers and layouts of x86-64.

The shim (``cffi_build/ioctl.csrc.c``) is compiled as it is, by the build, only for the
machine it runs on.  These tests cross-compile that same source for aarch64 with
``aarch64-linux-gnu-gcc``, so its ``_Static_assert`` size and offset pins are checked
for the target, and then compile small files that include it and assert, at compile time,
the request numbers of the ABI fact sheet (§1) and the offset of every struct field as
the host's compiled shim reports it.  Nothing is run: ``-c`` only.

Needs ``gcc-aarch64-linux-gnu`` and ``libc6-dev-arm64-cross`` (the shim includes
``<errno.h>`` and ``<sys/ioctl.h>``; that package pulls in ``linux-libc-dev-arm64-cross``
for ``<linux/ioctl.h>``).  Each test skips, naming the missing package, when they are
absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jailhouse._ffi import ffi

if TYPE_CHECKING:
    from collections.abc import Iterator

CROSS_GCC = "aarch64-linux-gnu-gcc"
SHIM_SOURCE = Path(__file__).resolve().parent.parent / "cffi_build" / "ioctl.csrc.c"

# The flags cffi_build/build_ioctl.py hands the compiler, plus -Werror so that a warning
# about a type mismatch on the target fails here too.
SHIM_FLAGS = [
    "-std=gnu11",
    "-Werror=incompatible-pointer-types",
    "-Wno-address-of-packed-member",
]

# ABI fact sheet, section 1: "The values are identical on both" (x86-64 and arm64).
FACT_SHEET_REQUESTS = {
    "JAILHOUSE_ENABLE": 0x40080000,
    "JAILHOUSE_DISABLE": 0x00000001,
    "JAILHOUSE_CELL_CREATE": 0x40100002,
    "JAILHOUSE_CELL_LOAD": 0x40300003,
    "JAILHOUSE_CELL_START": 0x40280004,
    "JAILHOUSE_CELL_DESTROY": 0x40280005,
}


@pytest.fixture(scope="module")
def cross_gcc(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Return the aarch64 cross compiler; skip when it or the arm64 libc headers are missing."""
    path = shutil.which(CROSS_GCC)
    if path is None:
        pytest.skip(
            f"{CROSS_GCC} is not installed (apt-get install gcc-aarch64-linux-gnu "
            "libc6-dev-arm64-cross)"
        )
    probe = tmp_path_factory.mktemp("probe") / "probe.c"
    probe.write_text("#include <errno.h>\n#include <sys/ioctl.h>\n#include <linux/ioctl.h>\n")
    result = _compile(path, probe)
    if result.returncode != 0:
        pytest.skip(
            "the arm64 libc and kernel headers are missing (apt-get install "
            f"libc6-dev-arm64-cross): {_first_error(result.stderr)}"
        )
    return path


def _compile(compiler: str, source: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Compile one C file to an object file next to it, without linking."""
    return subprocess.run(
        [compiler, *SHIM_FLAGS, *flags, "-c", str(source), "-o", str(source.with_suffix(".o"))],
        capture_output=True,
        text=True,
        check=False,
    )


def _first_error(stderr: str) -> str:
    """Return the first line of compiler output that reports an error."""
    return next((line for line in stderr.splitlines() if "error" in line), stderr.strip())


def _machine(obj: Path) -> int:
    """Return the ELF e_machine field of an object file."""
    header = obj.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{obj} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def _including_shim(body: str) -> str:
    """Return C source that includes the shim's source and then ``body``."""
    return f'#include "{SHIM_SOURCE}"\n\n{body}\n'


def _request_asserts(requests: dict[str, int]) -> str:
    """Return one compile-time assertion per request number."""
    return "\n".join(
        f'_Static_assert({name} == {value:#x}UL, "{name} is {value:#010x}");'
        for name, value in requests.items()
    )


def _field_paths(outer: str, prefix: str = "") -> Iterator[tuple[str, int]]:
    """Yield ``(member designator, offset)`` for every field of a shim struct, recursively.

    Nested structs and unions, named or anonymous, are descended into, so a designator
    may be dotted (``platform_info.arm.gicr_base``); offsets count from the start of
    ``outer``, as ``offsetof(outer, designator)`` does in C.
    """
    inner = ffi.typeof(outer) if not prefix else _member_type(outer, prefix)
    start = ffi.offsetof(outer, *prefix.split(".")) if prefix else 0
    for name, field in inner.fields or ():
        path = f"{prefix}.{name}" if prefix else name
        yield path, start + field.offset
        if field.type.kind == "struct":  # cffi's kind for structs and unions alike
            yield from _field_paths(outer, path)


def _member_type(outer: str, path: str) -> Any:
    """Return the cffi type of the member at a dotted designator."""
    ctype = ffi.typeof(outer)
    for name in path.split("."):
        ctype = dict(ctype.fields)[name].type
    return ctype


def _layout_asserts() -> str:
    """Return compile-time assertions of every shim struct's size, alignment and field offsets.

    The numbers are what the host's compiled shim reports through cffi, so compiling the
    result for arm64 checks that arm64 lays every struct out as the host does.
    """
    _, structs, unions = ffi.list_types()
    lines = []
    for cname in [f"struct {n}" for n in structs] + [f"union {n}" for n in unions]:
        if cname.split()[1].startswith("$"):
            continue  # anonymous: covered through the struct that holds it
        tag = cname.replace(" ", "_")
        lines.append(f'_Static_assert(sizeof({cname}) == {ffi.sizeof(cname)}, "{tag} size");')
        lines.append(f'_Static_assert(_Alignof({cname}) == {ffi.alignof(cname)}, "{tag} align");')
        for path, offset in _field_paths(cname):
            lines.append(f'_Static_assert(offsetof({cname}, {path}) == {offset}, "{tag}.{path}");')
    return "\n".join(lines)


def test_shim_source_compiles_for_arm64(cross_gcc: str, tmp_path: Path) -> None:
    """The shim's C source, with its _Static_assert layout pins, compiles to an AArch64 object."""
    source = tmp_path / "shim.c"
    source.write_text(_including_shim(""))
    result = _compile(cross_gcc, source, "-Wall", "-Wno-unused-function", "-Werror")
    assert result.returncode == 0, result.stderr
    assert _machine(source.with_suffix(".o")) == 183  # EM_AARCH64, ELF specification


def test_request_numbers_on_arm64_match_fact_sheet(cross_gcc: str, tmp_path: Path) -> None:
    """The arm64 compiler computes the fact sheet's six request numbers from the shim's macros."""
    source = tmp_path / "requests.c"
    source.write_text(_including_shim(_request_asserts(FACT_SHEET_REQUESTS)))
    result = _compile(cross_gcc, source)
    assert result.returncode == 0, result.stderr


def test_wrong_request_number_fails_to_compile(cross_gcc: str, tmp_path: Path) -> None:
    """A request number that is off by one is rejected by the arm64 compile, naming it."""
    wrong = {"JAILHOUSE_CELL_CREATE": FACT_SHEET_REQUESTS["JAILHOUSE_CELL_CREATE"] + 1}
    source = tmp_path / "wrong.c"
    source.write_text(_including_shim(_request_asserts(wrong)))
    result = _compile(cross_gcc, source)
    assert result.returncode != 0
    assert "JAILHOUSE_CELL_CREATE is 0x40100003" in result.stderr


def test_struct_layouts_on_arm64_match_host(cross_gcc: str, tmp_path: Path) -> None:
    """Every struct of the shim has on arm64 the size, alignment and field offsets it has here."""
    asserts = _layout_asserts()
    assert "platform_info.arm.gicr_base" in asserts  # nested anonymous members are covered
    source = tmp_path / "layout.c"
    source.write_text(_including_shim(asserts))
    result = _compile(cross_gcc, source)
    assert result.returncode == 0, result.stderr


def test_layout_asserts_catch_a_moved_field(cross_gcc: str, tmp_path: Path) -> None:
    """A field offset that differs from the compiler's fails the arm64 compile."""
    bad = _layout_asserts().replace(
        "offsetof(struct jailhouse_cell_desc, cpu_reset_address) == 84",
        "offsetof(struct jailhouse_cell_desc, cpu_reset_address) == 88",
    )
    assert bad != _layout_asserts()
    source = tmp_path / "moved.c"
    source.write_text(_including_shim(bad))
    result = _compile(cross_gcc, source)
    assert result.returncode != 0
    assert "jailhouse_cell_desc.cpu_reset_address" in result.stderr
