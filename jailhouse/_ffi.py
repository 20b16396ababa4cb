"""The one importer of the compiled cffi shim ``jailhouse._native``.

Everything else in python-jailhouse takes ``ffi`` and ``lib`` from here, typed by the
hand-written ``_native.pyi`` stub (as pygit2's ``ffi.py`` is for ``_libgit2``), so
cffi's ``Any`` stays out of typed code.  Importing this module loads the extension and
nothing more: no device is opened.

``CData`` is cffi's cdata base class at run time.  The other cdata shapes the stub
names (``CellCreate``, ``CellId``, ``CellLoad``, ``PreloadImage``, ``CellDesc``,
``SystemHeader``, ``CharArray``, ``CInteger``, ``CBuffer``) exist for the type checker
only: import them from here inside ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from jailhouse._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a source tree that was never built
    raise ImportError(
        "the compiled module jailhouse._native is missing: install python-jailhouse "
        "(pip install .) or build it in place with 'python cffi_build/build_ioctl.py'"
    ) from exc

if TYPE_CHECKING:
    from typing import TypeAlias

    from jailhouse import _native

    CData: TypeAlias = _native.CData
    CBuffer: TypeAlias = _native.CBuffer
    CellCreate: TypeAlias = _native.CellCreate
    CellDesc: TypeAlias = _native.CellDesc
    CellId: TypeAlias = _native.CellId
    CellLoad: TypeAlias = _native.CellLoad
    CharArray: TypeAlias = _native.CharArray
    CInteger: TypeAlias = _native.CInteger
    PreloadImage: TypeAlias = _native.PreloadImage
    SystemHeader: TypeAlias = _native.SystemHeader
else:
    CData = ffi.CData

__all__ = ["CData", "ffi", "lib"]
