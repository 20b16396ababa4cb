"""Build ``jailhouse._native``, the cffi shim over the /dev/jailhouse ioctls.

setuptools loads this file through ``setup(cffi_modules=...)`` and uses
:data:`ffibuilder`; running it directly (``python cffi_build/build_ioctl.py``)
compiles the module into ``jailhouse/`` of the source tree.

The declarations live beside this file as plain C: ``ioctl.csrc.c`` is the
source handed to the compiler and ``ioctl.cdef.h`` what cffi exposes to
Python.  The cdef is split at the line that starts with ``/* @packed``: the ioctl argument
structs above it have natural alignment, the config-format structs below it
are declared with ``packed=True`` to match their ``__attribute__((packed))``.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
MODULE_NAME = "jailhouse._native"
PACKED_MARKER = "/* @packed"


def _read(name: str) -> str:
    """Return the text of a file that sits beside this script."""
    return (HERE / name).read_text(encoding="utf-8")


def _split_cdef(text: str) -> tuple[str, str]:
    """Split the cdef text into its natural and its packed part.

    Raises:
        ValueError: The marker line is missing or appears more than once.
    """
    lines = text.splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if line.startswith(PACKED_MARKER)]
    if len(marks) != 1:
        raise ValueError(f"ioctl.cdef.h: expected one {PACKED_MARKER!r} line, found {len(marks)}")
    cut = marks[0]
    return "".join(lines[:cut]), "".join(lines[cut + 1 :])


def make_builder() -> FFI:
    """Return a configured FFI builder for ``jailhouse._native``."""
    natural, packed = _split_cdef(_read("ioctl.cdef.h"))
    builder = FFI()
    builder.cdef(natural)
    builder.cdef(packed, packed=True)
    builder.set_source(
        MODULE_NAME,
        _read("ioctl.csrc.c"),
        extra_compile_args=[
            "-std=gnu11",
            # A field whose type differs between cdef and C is a build error,
            # not a warning (cffi checks offsets at import, types only here).
            "-Werror=incompatible-pointer-types",
            # cffi's type check takes the address of each array field; in a
            # packed struct that pointer is never dereferenced.
            "-Wno-address-of-packed-member",
        ],
    )
    return builder


ffibuilder = make_builder()


if __name__ == "__main__":
    # Compile into the source tree, next to jailhouse/__init__.py.
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)
