"""Exceptions raised by python-jailhouse.

The tree::

    JailhouseError                       base, never raised itself
    +- DeviceError(OSError)              .errno .op .cell .hint
    |  +- DeviceNotFoundError(FileNotFoundError)    no /dev/jailhouse: driver not loaded
    |  +- CellNotFoundError(LookupError)            ENOENT: no such cell
    |  +- CellExistsError(FileExistsError)          EEXIST: a cell of that name exists
    |  +- BusyError                                 EBUSY: CPU not free, already enabled
    |  +- NotEnabledError                           EINVAL while the hypervisor is disabled
    |  +- PermissionDeniedError(PermissionError)    EPERM / EACCES
    |  `- ConfigTooLargeError                       E2BIG: config over 16 pages
    +- ConfigError(ValueError)           .field .value .reason
    |  `- InvalidConfigError             bytes that do not parse; also .offset
    +- TranslationError(ValueError)      .element .value .reason
    +- BootError(ValueError)             a Linux boot that cannot work; .field .value .reason
    `- StatusParseError(ValueError)      a sysfs file with unexpected text; .path .text

Every leaf also subclasses a builtin, so callers can catch either
(``except LookupError`` catches a missing cell).  Device errors come from one
table, :data:`ERRNO_ERRORS`, through :func:`raise_for_errno`; the kernel device
and the simulated host share it, so both raise the same classes.
"""

from __future__ import annotations

import errno as _errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "ERRNO_ERRORS",
    "BootError",
    "BusyError",
    "CellExistsError",
    "CellNotFoundError",
    "ConfigError",
    "ConfigTooLargeError",
    "DeviceError",
    "DeviceNotFoundError",
    "InvalidConfigError",
    "JailhouseError",
    "NotEnabledError",
    "PermissionDeniedError",
    "StatusParseError",
    "TranslationError",
    "error_for_errno",
    "raise_for_errno",
]


class JailhouseError(Exception):
    """Base of every python-jailhouse exception; never raised itself."""


class DeviceError(JailhouseError, OSError):
    """An operation on the hypervisor device failed.

    Attributes:
        errno: The errno the driver (or the simulated host) returned.
        op: The operation, such as ``"cell create"``.
        cell: The cell's name or id, where the operation names one.
        hint: One sentence on what to do about it.
    """

    def __init__(
        self,
        errno: int,
        *,
        op: str,
        cell: str | int | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record the errno and its context."""
        super().__init__(errno, detail or os.strerror(errno))
        self.op = op
        self.cell = cell
        self.hint = hint

    def __str__(self) -> str:
        """Say in one line what failed, why, and what to do."""
        name = _errno.errorcode.get(self.errno or 0, str(self.errno))
        where = self.op if self.cell is None else f"{self.op} {self.cell!r}"
        text = f"{where}: {self.strerror} ({name})"
        return f"{text}; {self.hint}" if self.hint else text


class DeviceNotFoundError(DeviceError, FileNotFoundError):
    """The device node is missing: the jailhouse driver is not loaded."""


class CellNotFoundError(DeviceError, LookupError):
    """No cell has that name or id (ENOENT)."""


class CellExistsError(DeviceError, FileExistsError):
    """A cell of that name already exists (EEXIST)."""


class BusyError(DeviceError):
    """A resource is taken: a CPU another cell holds, or the hypervisor is already enabled."""


class NotEnabledError(DeviceError):
    """The hypervisor is not enabled (the driver's EINVAL for every cell operation)."""


class PermissionDeniedError(DeviceError, PermissionError):
    """Not allowed: a running/locked cell, a refused shutdown, or no access to the device."""


class ConfigTooLargeError(DeviceError):
    """The cell config needs more than the hypervisor's 16 temporary pages (E2BIG)."""


class _FieldError(JailhouseError, ValueError):
    """A value of a named field is wrong: the shared shape of ConfigError and BootError."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        """Record the field, its value and the reason."""
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        """Name the field and the value, then the reason."""
        return f"{self.field} = {_show(self.value)}: {_show_reason(self.reason)}"


class ConfigError(_FieldError):
    """A config value is wrong.

    Attributes:
        field: Path of the field, such as ``mem_regions[2].size``.
        value: The offending value.
        reason: Why it is wrong.
    """


class InvalidConfigError(ConfigError):
    """Bytes that are not a valid config of the supported revision.

    Attributes:
        offset: Byte offset of the field in the blob.
    """

    def __init__(self, field: str, value: object, reason: str, *, offset: int) -> None:
        """Record the field, its value, the reason and the byte offset."""
        self.offset = offset
        super().__init__(field, value, reason)

    def __str__(self) -> str:
        """Name the field, the byte offset and the value, then the reason."""
        where = f"{self.field} (offset {self.offset})"
        return f"{where} = {_show(self.value)}: {_show_reason(self.reason)}"


class TranslationError(JailhouseError, ValueError):
    """Domain XML that cannot be turned into a cell config (or the reverse).

    Attributes:
        element: XPath of the element or attribute, such as ``/domain/vcpu``.
        value: The offending value, if any.
        reason: Why it cannot be honoured.
    """

    def __init__(self, element: str, value: object, reason: str) -> None:
        """Record the element, its value and the reason."""
        self.element = element
        self.value = value
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        """Name the element and the value, then the reason."""
        element, reason = _show_path(self.element), _show_reason(self.reason)
        if self.value is None:
            return f"{element}: {reason}"
        return f"{element} = {_show(self.value)}: {reason}"


class BootError(_FieldError):
    """A Linux boot that cannot work: a bad kernel, initrd, command line or device tree.

    Raised before the device is touched, so nothing is left to roll back.

    Attributes:
        field: What is wrong, such as ``kernel.magic``, ``cmdline`` or ``initrd``.
        value: The offending value.
        reason: Why it cannot boot, and what would.
    """


class StatusParseError(JailhouseError, ValueError):
    """A sysfs status file holds text the driver does not write.

    Attributes:
        path: The file.
        text: What it held.
    """

    def __init__(self, path: str, text: str, reason: str) -> None:
        """Record the file, its text and the reason."""
        self.path = path
        self.text = text
        super().__init__(f"{path}: {_show(text)}: {_show_reason(reason)}")


SHOWN_CHARS: Final = 60
"""How much of a long text value a message quotes; the exception keeps the whole value."""
_REPR_CHARS: Final = 200
"""How much of any other value's ``repr`` a message quotes."""
_PATH_CHARS: Final = 300
"""Longest element path a message quotes whole (deep nesting gets its middle cut)."""
_REASON_CHARS: Final = 1000
"""Longest reason a message quotes whole."""


def _show(value: object) -> str:
    """Render a field value for a one-line message of bounded length.

    Integers are written in hex as the C configs write them (from ``0x1000`` up).  A string
    or bytes value longer than :data:`SHOWN_CHARS` is cut after that many characters and
    followed by its length: ``'AAAA...' (900000 characters)``.  Control characters are
    escaped by ``repr``, so the result never spans lines.
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        small = -0x1000 < value < 0x1000 or (value < 0 and value.bit_length() <= 64)
        shown = str(value) if small else hex(value)  # addresses and sizes in hex
        return _cut(shown, _REPR_CHARS, "digits")
    if isinstance(value, str | bytes | bytearray) and len(value) > SHOWN_CHARS:
        quoted = repr(value[:SHOWN_CHARS])
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{quoted[:-1]}...{quoted[-1]} ({len(value)} {unit})"
    return _cut(repr(value), _REPR_CHARS, "characters")


def _cut(text: str, limit: int, unit: str) -> str:
    """Keep the first ``limit`` characters of ``text``, then ``...`` and its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} {unit})"


def _one_line(text: str) -> str:
    """Join the lines of a multi-line text (such as libxml2's messages) into one."""
    lines = [line.strip() for line in text.splitlines()]
    out = ""
    for line in lines:
        if not line:
            continue
        glue = "" if not out or line[0] in ",.;:)" else " "
        out += glue + line
    return out


def _show_reason(reason: str) -> str:
    """Render a reason as one line of bounded length."""
    return _cut(_one_line(reason), _REASON_CHARS, "characters")


def _show_path(path: str) -> str:
    """Render an XPath with overlong steps (element or attribute names) shortened."""
    steps = [
        step if len(step) <= SHOWN_CHARS else _cut(step, SHOWN_CHARS, "characters")
        for step in path.split("/")
    ]
    shown = _one_line("/".join(steps))
    if len(shown) <= _PATH_CHARS:
        return shown
    head, tail = _PATH_CHARS // 3, _PATH_CHARS - _PATH_CHARS // 3
    return f"{shown[:head]}...{shown[-tail:]}"


#: errno -> (exception class, default hint)
ERRNO_ERRORS: Final[dict[int, tuple[type[DeviceError], str]]] = {
    _errno.ENOENT: (CellNotFoundError, "list the cells with `jhctl cell list`"),
    _errno.EEXIST: (CellExistsError, "destroy the existing cell or choose another name"),
    _errno.EBUSY: (
        BusyError,
        "a CPU or the hypervisor is taken; check `jhctl cell list` for who holds it",
    ),
    _errno.EPERM: (
        PermissionDeniedError,
        "a cell is running/locked or refused to shut down; stop it from inside first",
    ),
    _errno.EACCES: (PermissionDeniedError, "run as root or get access to the device node"),
    _errno.E2BIG: (ConfigTooLargeError, "the config must fit in 16 pages; use fewer regions"),
}


def error_for_errno(
    err: int,
    *,
    op: str,
    cell: str | int | None = None,
    enabled: bool | None = None,
    detail: str | None = None,
) -> DeviceError:
    """Build the exception for an errno the driver returned.

    Args:
        err: A positive errno (a negative one is taken as ``-errno``).
        op: The operation, such as ``"cell create"``.
        cell: The cell's name or id, where the operation names one.
        enabled: Whether the hypervisor was enabled, if known; an EINVAL while it
            is disabled becomes :class:`NotEnabledError`.
        detail: A more precise message than ``strerror``.

    Returns:
        The exception; the caller raises it.
    """
    err = abs(err)
    if err == _errno.EINVAL and enabled is False and op != "enable":
        return NotEnabledError(
            err, op=op, cell=cell, hint="enable the hypervisor first", detail=detail
        )
    cls, hint = ERRNO_ERRORS.get(err, (DeviceError, None))
    return cls(err, op=op, cell=cell, hint=hint, detail=detail)


def raise_for_errno(
    rv: int,
    *,
    op: str,
    cell: str | int | None = None,
    enabled: bool | None = None,
) -> int:
    """Raise the mapped exception for a negative return value, else return it.

    Args:
        rv: A C shim's return value: ``-errno`` on failure.
        op: The operation, such as ``"cell create"``.
        cell: The cell's name or id, where the operation names one.
        enabled: Whether the hypervisor was enabled, if known.

    Returns:
        ``rv`` when it is not negative.

    Raises:
        DeviceError: The subclass that :data:`ERRNO_ERRORS` maps ``-rv`` to.
    """
    if rv < 0:
        raise error_for_errno(-rv, op=op, cell=cell, enabled=enabled)
    return rv
