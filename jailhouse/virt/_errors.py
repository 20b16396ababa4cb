"""``libvirtError`` with libvirt-python's shape, and the mapping of our exceptions onto it.

libvirt builds each message as ``<generic prefix>: <detail>`` from a table per error
code (``virErrorMsg`` in libvirt's ``src/util/virerror.c``); the prefixes below are that
table's, for the codes the facade raises, so ``get_error_message()`` reads as libvirt's.

Error domains: libvirt has no Jailhouse driver and so no error domain of its own for
it.  The facade reports ``VIR_FROM_DOMAIN`` (20, "domain config") for XML and
translation errors, ``VIR_FROM_DOM`` (6, "operating on a domain") for lookups and
lifecycle errors, and ``VIR_FROM_NONE`` (0) for connection and system errors.  Compare
error *codes* across drivers, not domains: libvirt's own drivers report their driver's
domain (``VIR_FROM_TEST``, ``VIR_FROM_QEMU``).
"""

from __future__ import annotations

import errno as _errno
import threading
from typing import TYPE_CHECKING, Any, Final

from jailhouse.errors import (
    BusyError,
    CellExistsError,
    CellNotFoundError,
    ConfigError,
    ConfigTooLargeError,
    DeviceError,
    DeviceNotFoundError,
    JailhouseError,
    NotEnabledError,
    PermissionDeniedError,
    StatusParseError,
    TranslationError,
)
from jailhouse.virt import _constants as c

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "from_exception",
    "libvirtError",
    "make_error",
    "registerErrorHandler",
    "virGetLastError",
    "virGetLastErrorCode",
    "virGetLastErrorDomain",
    "virGetLastErrorMessage",
    "virResetLastError",
]

ErrorTuple = list[Any]
"""``[code, domain, message, level, str1, str2, str3, int1, int2]``, as libvirt-python's ``err``."""

_PREFIX: Final[dict[int, str]] = {
    c.VIR_ERR_INTERNAL_ERROR: "internal error: %s",
    c.VIR_ERR_NO_SUPPORT: "this function is not supported by the connection driver: %s",
    c.VIR_ERR_NO_CONNECT: "no connection driver available for %s",
    c.VIR_ERR_INVALID_CONN: "invalid connection pointer in %s",
    c.VIR_ERR_INVALID_ARG: "invalid argument: %s",
    c.VIR_ERR_OPERATION_FAILED: "operation failed: %s",
    c.VIR_ERR_NO_NAME: "missing name information in %s",
    c.VIR_ERR_XML_ERROR: "XML error: %s",
    c.VIR_ERR_OPERATION_DENIED: "operation forbidden: %s",
    c.VIR_ERR_READ_FAILED: "failed to read configuration file %s",
    c.VIR_ERR_WRITE_FAILED: "failed to write configuration file: %s",
    c.VIR_ERR_XML_DETAIL: "%s",
    c.VIR_ERR_SYSTEM_ERROR: "%s",
    c.VIR_ERR_NO_DOMAIN: "Domain not found: %s",
    c.VIR_ERR_OPERATION_INVALID: "Requested operation is not valid: %s",
    c.VIR_ERR_CONFIG_UNSUPPORTED: "unsupported configuration: %s",
    c.VIR_ERR_OPERATION_ABORTED: "operation aborted: %s",
    c.VIR_ERR_OPERATION_UNSUPPORTED: "Operation not supported: %s",
    c.VIR_ERR_RESOURCE_BUSY: "resource busy: %s",
}

_handler: tuple[Callable[[Any, ErrorTuple], object], Any] | None = None
_last = threading.local()


class libvirtError(JailhouseError):  # noqa: N801 - libvirt-python's name
    """An error with libvirt's code, domain and message, shaped like libvirt-python's.

    ``str(error)`` is the message.  The underlying python-jailhouse exception, if any,
    is the ``__cause__``.

    Args:
        defmsg: The message, used when ``err`` is not given (as libvirt-python does).
        err: ``[code, domain, message, level, str1, str2, str3, int1, int2]``.

    Attributes:
        err: The error list, as libvirt-python keeps it.
    """

    def __init__(self, defmsg: str, err: ErrorTuple | None = None) -> None:
        """Keep the error list; the message is its third item (else ``defmsg``)."""
        super().__init__(defmsg if err is None else err[2])
        self.err = err

    def get_error_code(self) -> int | None:
        """Return the ``VIR_ERR_*`` code."""
        return None if self.err is None else int(self.err[0])

    def get_error_domain(self) -> int | None:
        """Return the ``VIR_FROM_*`` domain."""
        return None if self.err is None else int(self.err[1])

    def get_error_message(self) -> str | None:
        """Return the whole message: the code's generic prefix and the detail."""
        return None if self.err is None else str(self.err[2])

    def get_error_level(self) -> int | None:
        """Return the level (``VIR_ERR_ERROR``)."""
        return None if self.err is None else int(self.err[3])

    def get_str1(self) -> str | None:
        """Return the message format of the code (libvirt's ``str1``)."""
        return None if self.err is None else self.err[4]

    def get_str2(self) -> str | None:
        """Return the detail alone (libvirt's ``str2``)."""
        return None if self.err is None else self.err[5]

    def get_str3(self) -> str | None:
        """Return libvirt's ``str3`` (unused: ``None``)."""
        return None if self.err is None else self.err[6]

    def get_int1(self) -> int | None:
        """Return the errno of a system error, else -1 (libvirt's ``int1``)."""
        return None if self.err is None else int(self.err[7])

    def get_int2(self) -> int | None:
        """Return libvirt's ``int2`` (unused: -1)."""
        return None if self.err is None else int(self.err[8])


def registerErrorHandler(  # noqa: N802 - libvirt-python's name
    f: Callable[[Any, ErrorTuple], object] | None,
    ctx: Any,  # noqa: ANN401 - any user context
) -> int:
    """Call ``f(ctx, err)`` for every error the facade raises, as libvirt-python does.

    libvirt prints errors to stderr unless a handler is registered; the facade never
    prints, so a handler is only needed to see errors as they happen.  ``f=None``
    removes the handler.

    Returns:
        1, as libvirt-python.
    """
    global _handler  # noqa: PLW0603 - one handler per process, like libvirt's
    _handler = None if f is None else (f, ctx)
    return 1


def virGetLastError() -> ErrorTuple | None:  # noqa: N802 - libvirt-python's name
    """Return the last error raised in this thread, as an error list, or ``None``."""
    err: ErrorTuple | None = getattr(_last, "err", None)
    return None if err is None else list(err)


def virGetLastErrorCode() -> int:  # noqa: N802 - libvirt-python's name
    """Return the code of this thread's last error, ``VIR_ERR_OK`` (0) when none."""
    err = virGetLastError()
    return c.VIR_ERR_OK if err is None else int(err[0])


def virGetLastErrorDomain() -> int:  # noqa: N802 - libvirt-python's name
    """Return the domain of this thread's last error, ``VIR_FROM_NONE`` (0) when none."""
    err = virGetLastError()
    return c.VIR_FROM_NONE if err is None else int(err[1])


def virGetLastErrorMessage() -> str:  # noqa: N802 - libvirt-python's name
    """Return the message of this thread's last error, ``"no error"`` when none (as libvirt)."""
    err = virGetLastError()
    return "no error" if err is None else str(err[2])


def virResetLastError() -> None:  # noqa: N802 - libvirt-python's name
    """Forget this thread's last error."""
    _last.err = None


def make_error(
    code: int, detail: str, *, domain: int = c.VIR_FROM_DOM, errno: int = -1
) -> libvirtError:
    """Build the error for a code and a detail, with libvirt's message prefix.

    Records it as this thread's last error and passes it to the registered handler.

    Args:
        code: A ``VIR_ERR_*`` code.
        detail: What went wrong (libvirt's ``%s``).
        domain: A ``VIR_FROM_*`` domain.
        errno: The errno of a system error.

    Returns:
        The exception; the caller raises it.
    """
    template = _PREFIX.get(code, "%s")
    message = template.replace("%s", detail)
    err: ErrorTuple = [code, domain, message, c.VIR_ERR_ERROR, template, detail, None, errno, -1]
    _last.err = err
    if _handler is not None:
        func, ctx = _handler
        func(ctx, list(err))
    return libvirtError(message, err)


def from_exception(exc: BaseException) -> libvirtError:
    """Map a python-jailhouse (or OS) exception to the libvirt error a caller expects.

    ==================================  ==========================================
    exception                           code
    ==================================  ==========================================
    ``JobCancelledError``               ``VIR_ERR_OPERATION_ABORTED`` (78)
    ``DeviceNotFoundError``             ``VIR_ERR_SYSTEM_ERROR`` (38)
    ``NotEnabledError``                 ``VIR_ERR_OPERATION_INVALID`` (55)
    ``CellNotFoundError``               ``VIR_ERR_NO_DOMAIN`` (42)
    ``BusyError``                       ``VIR_ERR_RESOURCE_BUSY`` (87)
    ``ConfigTooLargeError``             ``VIR_ERR_CONFIG_UNSUPPORTED`` (67)
    ``PermissionDeniedError`` EACCES    ``VIR_ERR_SYSTEM_ERROR`` (38)
    other ``DeviceError``               ``VIR_ERR_OPERATION_FAILED`` (9)
    ``TranslationError``                27, 35, 21 or 67 (see :func:`_translation_code`)
    ``ConfigError``                     ``VIR_ERR_CONFIG_UNSUPPORTED`` (67)
    ``StoreError``                      ``VIR_ERR_READ_FAILED`` (31)
    ``StatusParseError``                ``VIR_ERR_INTERNAL_ERROR`` (1)
    ``PermissionError`` (read-only)     ``VIR_ERR_OPERATION_DENIED`` (29)
    other ``OSError``                   ``VIR_ERR_SYSTEM_ERROR`` (38)
    ==================================  ==========================================

    Notes added to ``exc`` (``add_note``) are carried over.

    Returns:
        The libvirt error (``exc`` itself if it already is one); raise it ``from exc``.
    """
    if isinstance(exc, libvirtError):
        return exc
    error = _map(exc)
    for note in getattr(exc, "__notes__", ()):
        error.add_note(note)
    return error


def _map(exc: BaseException) -> libvirtError:
    from jailhouse.jobs import JobCancelledError  # noqa: PLC0415 - avoid a cycle at import
    from jailhouse.store import StoreError  # noqa: PLC0415

    if isinstance(exc, JobCancelledError):
        return make_error(
            c.VIR_ERR_OPERATION_ABORTED,
            f"{exc}; what it had done is undone",
            domain=c.VIR_FROM_DOM,
        )
    if isinstance(exc, DeviceError):
        return _device_error(exc)
    if isinstance(exc, TranslationError):
        code, domain = _translation_code(exc)
        return make_error(code, str(exc), domain=domain)
    if isinstance(exc, ConfigError):
        return make_error(c.VIR_ERR_CONFIG_UNSUPPORTED, str(exc), domain=c.VIR_FROM_DOMAIN)
    if isinstance(exc, StoreError):
        return make_error(
            c.VIR_ERR_READ_FAILED, f"{exc.path}: {exc.reason}", domain=c.VIR_FROM_NONE
        )
    if isinstance(exc, StatusParseError):
        return make_error(c.VIR_ERR_INTERNAL_ERROR, f"unexpected sysfs contents: {exc}")
    if isinstance(exc, PermissionError) and exc.errno is None:
        return make_error(c.VIR_ERR_OPERATION_DENIED, str(exc), domain=c.VIR_FROM_NONE)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return make_error(
            c.VIR_ERR_SYSTEM_ERROR,
            f"{where}{exc.strerror or exc}",
            domain=c.VIR_FROM_NONE,
            errno=exc.errno if exc.errno is not None else -1,
        )
    return make_error(c.VIR_ERR_INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _device_error(exc: DeviceError) -> libvirtError:
    err = exc.errno if exc.errno is not None else -1
    if isinstance(exc, DeviceNotFoundError):
        return make_error(
            c.VIR_ERR_SYSTEM_ERROR,
            f"{exc}; the jailhouse driver is not loaded (modprobe jailhouse)",
            domain=c.VIR_FROM_NONE,
            errno=err,
        )
    if isinstance(exc, PermissionDeniedError) and exc.errno == _errno.EACCES:
        return make_error(c.VIR_ERR_SYSTEM_ERROR, str(exc), domain=c.VIR_FROM_NONE, errno=err)
    code = c.VIR_ERR_OPERATION_FAILED
    if isinstance(exc, NotEnabledError):
        code = c.VIR_ERR_OPERATION_INVALID
    elif isinstance(exc, CellNotFoundError):
        code = c.VIR_ERR_NO_DOMAIN
    elif isinstance(exc, BusyError):
        code = c.VIR_ERR_RESOURCE_BUSY
    elif isinstance(exc, ConfigTooLargeError):
        code = c.VIR_ERR_CONFIG_UNSUPPORTED
    elif isinstance(exc, CellExistsError):
        code = c.VIR_ERR_OPERATION_FAILED
    return make_error(code, str(exc), errno=err)


def _translation_code(exc: TranslationError) -> tuple[int, int]:
    """Choose the code of a translation error, as libvirt's parser would report it.

    - XML that is not well-formed: ``VIR_ERR_XML_DETAIL`` (35), as libxml2's errors;
    - a document libvirt could not read either (no ``<domain>`` root, a DOCTYPE, an
      unreadable encoding, a malformed number or UUID): ``VIR_ERR_XML_ERROR`` (27);
    - no ``<name>``: ``VIR_ERR_NO_NAME`` (21);
    - anything a cell cannot honour: ``VIR_ERR_CONFIG_UNSUPPORTED`` (67).
    """
    reason = exc.reason
    if exc.element == "/" and reason.startswith("not well-formed"):
        return c.VIR_ERR_XML_DETAIL, c.VIR_FROM_DOMAIN
    if not exc.element.startswith("/domain"):
        return c.VIR_ERR_XML_ERROR, c.VIR_FROM_XML
    if exc.element == "/domain/name" and exc.value is None:
        return c.VIR_ERR_NO_NAME, c.VIR_FROM_DOMAIN
    if reason.startswith(("expected", "not a UUID")):
        return c.VIR_ERR_XML_ERROR, c.VIR_FROM_DOMAIN
    return c.VIR_ERR_CONFIG_UNSUPPORTED, c.VIR_FROM_DOMAIN
