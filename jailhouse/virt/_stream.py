"""``virStream`` and ``virDomain.openConsole`` over the hypervisor console.

A Jailhouse host has one console a program can read: the hypervisor's (``read()`` on
``/dev/jailhouse``, :mod:`jailhouse.console`).  Cells with ``VIRTUAL_CONSOLE_PERMITTED``
print there, interleaved with each other and with the hypervisor's own messages, and
nothing tells which cell printed what; a cell's UART belongs to the cell, not to Linux.
So ``openConsole()`` of any domain attaches the stream to that console and passes
through everything on it, and the console has no input: bytes sent to the stream are
dropped (``send()`` still returns their count, so interactive clients keep working).

The stream reads the connection's device without blocking; ``recv()`` on a blocking
stream polls it every :data:`STREAM_POLL_MS`.  It reaches end of file (``recv()``
returns ``b""``, the callback gets ``HANGUP``) once the domain is no longer active.
"""

# ruff: noqa: N802 - method and argument names are libvirt-python's

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Final

from jailhouse.virt import _constants as c
from jailhouse.virt._driver import check_flags
from jailhouse.virt._errors import libvirtError, make_error
from jailhouse.virt._events import add_timeout, remove_timeout
from jailhouse.virt._libvirt_api import CONSTANTS
from jailhouse.virt._nosupport import complete

if TYPE_CHECKING:
    from collections.abc import Callable

    from jailhouse.console import ConsoleReader
    from jailhouse.virt._api import virConnect
    from jailhouse.virt._driver import DomainView, Driver

__all__ = ["STREAM_POLL_MS", "ConnectStreams", "DomainConsole", "virStream"]

STREAM_POLL_MS: Final = 100
"""How often a stream looks for new console text (ms)."""
_NONBLOCK: Final = int(CONSTANTS["VIR_STREAM_NONBLOCK"])
_READABLE: Final = int(CONSTANTS["VIR_STREAM_EVENT_READABLE"])
_WRITABLE: Final = int(CONSTANTS["VIR_STREAM_EVENT_WRITABLE"])
_ERROR: Final = int(CONSTANTS["VIR_STREAM_EVENT_ERROR"])
_HANGUP: Final = int(CONSTANTS["VIR_STREAM_EVENT_HANGUP"])
_CONSOLE_FLAGS: Final = int(CONSTANTS["VIR_DOMAIN_CONSOLE_FORCE"]) | int(
    CONSTANTS["VIR_DOMAIN_CONSOLE_SAFE"]
)
_DEVICES: Final = frozenset({"console0", "serial0"})
_WOULD_BLOCK: Final = -2


def _stream_error(detail: str, code: int = c.VIR_ERR_OPERATION_INVALID) -> libvirtError:
    return make_error(code, detail, domain=c.VIR_FROM_STREAMS)


class virStream:  # noqa: N801 - libvirt-python's name
    """A data stream; here only the console of a domain can feed one.

    Get one from :meth:`ConnectStreams.newStream`, attach it with
    :meth:`DomainConsole.openConsole`.  With ``VIR_STREAM_NONBLOCK``, ``recv()``
    returns -2 when there is nothing to read.
    """

    def __init__(self, conn: virConnect, flags: int = 0) -> None:
        """Make an unattached stream; use ``conn.newStream(flags)``."""
        self._conn = conn
        self._nonblock = bool(flags & _NONBLOCK)
        self._lock = threading.RLock()
        self._source: Callable[[], bytes] | None = None
        self._alive: Callable[[], bool] | None = None
        self._pending = b""
        self._eof = False
        self._closed = False
        self._timer: int | None = None
        self._events = 0
        self._cb: Callable[[virStream, int, Any], object] | None = None
        self._opaque: Any = None

    def __repr__(self) -> str:
        """Say what the stream is attached to."""
        state = "closed" if self._closed else "attached" if self._source else "unattached"
        return f"virStream({state})"

    def connect(self) -> virConnect:
        """Return the connection."""
        return self._conn

    def _attach(self, source: Callable[[], bytes], alive: Callable[[], bool]) -> None:
        with self._lock:
            if self._source is not None:
                raise _stream_error("the stream is already attached")
            self._source = source
            self._alive = alive

    def _fill(self) -> None:
        """Read what the console has now into the buffer; note end of file."""
        if self._pending or self._eof or self._source is None:
            return
        data = self._source()
        if data:
            self._pending = data
        elif self._alive is not None and not self._alive():
            self._eof = True

    def _check_open(self, function: str) -> None:
        if self._closed:
            raise _stream_error(f"{function}: the stream is finished or aborted")
        if self._source is None:
            raise _stream_error(f"{function}: the stream is not attached to anything")

    def recv(self, nbytes: int) -> bytes | int:
        """Return up to ``nbytes`` of console output; ``b""`` at end of file.

        Returns:
            The bytes; -2 on a non-blocking stream when there is nothing yet.

        Raises:
            libvirtError: The stream is not attached, finished or aborted.
        """
        while True:
            with self._lock:
                self._check_open("virStreamRecv")
                self._fill()
                if self._pending:
                    data, self._pending = self._pending[:nbytes], self._pending[nbytes:]
                    return data
                if self._eof:
                    return b""
                if self._nonblock:
                    return _WOULD_BLOCK
            time.sleep(STREAM_POLL_MS / 1000)

    def recvFlags(self, nbytes: int, flags: int = 0) -> bytes | int:
        """Receive as :meth:`recv`; ``VIR_STREAM_RECV_STOP_AT_HOLE`` changes nothing (no holes)."""
        check_flags(flags, int(CONSTANTS["VIR_STREAM_RECV_STOP_AT_HOLE"]), "virStreamRecvFlags")
        return self.recv(nbytes)

    def send(self, data: bytes) -> int:
        """Drop the bytes: the hypervisor console takes no input; return their count.

        Raises:
            libvirtError: The stream is not attached, finished or aborted.
        """
        with self._lock:
            self._check_open("virStreamSend")
        return len(data)

    def recvAll(self, handler: Callable[[virStream, bytes, Any], object], opaque: Any) -> None:  # noqa: ANN401 - the caller's
        """Call ``handler(stream, data, opaque)`` for everything until end of file.

        Raises:
            libvirtError: On a non-blocking stream (as libvirt-python).
        """
        while True:
            got = self.recv(262120)
            if isinstance(got, int):
                raise make_error(
                    c.VIR_ERR_OPERATION_INVALID,
                    "cannot use recvAll with nonblocking stream",
                    domain=c.VIR_FROM_STREAMS,
                )
            if not got:
                return
            result = handler(self, got, opaque)
            if isinstance(result, int) and result < 0:
                self.abort()
                msg = f"recvAll handler returned {result}"
                raise RuntimeError(msg)

    def eventAddCallback(
        self,
        events: int,
        cb: Callable[[virStream, int, Any], object],
        opaque: Any,  # noqa: ANN401 - the caller's
    ) -> None:
        """Call ``cb(stream, events, opaque)`` from the event loop while the stream is ready.

        READABLE fires while console text is waiting (or at end of file, with HANGUP);
        WRITABLE always (input is dropped at once).

        Raises:
            libvirtError: A callback is registered already; no event loop is registered.
        """
        with self._lock:
            self._check_open("virStreamEventAddCallback")
            if self._timer is not None:
                raise _stream_error("virStreamEventAddCallback: a callback is registered already")
            self._events, self._cb, self._opaque = events, cb, opaque
            self._timer = add_timeout(STREAM_POLL_MS, self._tick, None)

    def eventUpdateCallback(self, events: int) -> None:
        """Change the events the callback waits for.

        Raises:
            libvirtError: No callback is registered.
        """
        with self._lock:
            if self._timer is None:
                raise _stream_error("virStreamEventUpdateCallback: no callback is registered")
            self._events = events

    def eventRemoveCallback(self) -> None:
        """Remove the callback.

        Raises:
            libvirtError: No callback is registered.
        """
        with self._lock:
            if self._timer is None:
                raise _stream_error("virStreamEventRemoveCallback: no callback is registered")
            timer, self._timer = self._timer, None
            self._cb = None
        remove_timeout(timer)

    def _tick(self, _timer: int, _opaque: object) -> None:
        with self._lock:
            cb = self._cb
            if cb is None or self._closed:
                return
            ready = 0
            if self._events & _READABLE:
                try:
                    self._fill()
                except libvirtError:
                    ready |= _ERROR
                if self._pending:
                    ready |= _READABLE
                elif self._eof:
                    ready |= _READABLE | _HANGUP
            if self._events & _WRITABLE:
                ready |= _WRITABLE
            opaque = self._opaque
        if ready:
            cb(self, ready, opaque)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
            self._cb = None
        if timer is not None:
            remove_timeout(timer)

    def finish(self) -> int:
        """End the stream after end of file.

        Returns:
            0.

        Raises:
            libvirtError: The stream is already finished or aborted.
        """
        with self._lock:
            if self._closed:
                raise _stream_error("virStreamFinish: the stream is finished or aborted")
        self._close()
        return 0

    def abort(self) -> int:
        """End the stream at once, dropping unread text.

        Returns:
            0.

        Raises:
            libvirtError: The stream is already finished or aborted.
        """
        with self._lock:
            if self._closed:
                raise _stream_error("virStreamAbort: the stream is finished or aborted")
            self._pending = b""
        self._close()
        return 0


complete(virStream)


class ConnectStreams:
    """The streams half of ``virConnect`` (a mixin)."""

    if TYPE_CHECKING:

        def _live(self, function: str) -> Driver: ...

    def newStream(self, flags: int = 0) -> virStream:
        """Return a new stream; ``VIR_STREAM_NONBLOCK`` makes ``recv()`` return -2 at once.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for other flags.
        """
        self._live("virStreamNew")
        check_flags(flags, _NONBLOCK, "virStreamNew")
        conn: virConnect = self  # type: ignore[assignment] # a mixin of virConnect
        return virStream(conn, flags)


class DomainConsole:
    """The console half of ``virDomain`` (a mixin)."""

    if TYPE_CHECKING:

        def _view(self, function: str) -> tuple[Driver, DomainView]: ...

        _uuid: str

    def openConsole(self, dev_name: str | None, st: virStream, flags: int = 0) -> int:
        """Attach ``st`` to the hypervisor console, the only console of a Jailhouse host.

        Every cell allowed to print writes there, as does the hypervisor; the stream
        passes all of it through, from what this connection has not read yet.

        Args:
            dev_name: ``None``, ``"console0"`` or ``"serial0"`` (all the same console).
            st: A stream of this connection.
            flags: ``VIR_DOMAIN_CONSOLE_FORCE`` and ``_SAFE`` are accepted.

        Returns:
            0.

        Raises:
            libvirtError: ``VIR_ERR_OPERATION_INVALID`` unless the domain is active;
                ``VIR_ERR_INVALID_ARG`` for another device or a stream of another
                connection; ``VIR_ERR_OPERATION_DENIED`` when the system config lacks
                the virtual debug console flag.
        """
        check_flags(flags, _CONSOLE_FLAGS, "virDomainOpenConsole")
        driver, view = self._view("virDomainOpenConsole")
        if dev_name is not None and dev_name not in _DEVICES:
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                f"cannot find character device {dev_name}: a Jailhouse host has one console, "
                "the hypervisor's (console0)",
            )
        if view.cell is None:
            raise make_error(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        reader = driver.hv.console()
        uuid = self._uuid

        def source() -> bytes:
            return _read_console(reader)

        def alive() -> bool:
            try:
                return driver.find_uuid(uuid).active
            except libvirtError:
                return False

        st._attach(source, alive)  # noqa: SLF001 - the stream's own attach point
        return 0


def _read_console(reader: ConsoleReader) -> bytes:
    from jailhouse.errors import DeviceError, PermissionDeniedError  # noqa: PLC0415

    try:
        return reader.read_bytes(nonblock=True)
    except PermissionDeniedError as exc:
        raise make_error(c.VIR_ERR_OPERATION_DENIED, str(exc), domain=c.VIR_FROM_STREAMS) from exc
    except DeviceError as exc:
        raise make_error(c.VIR_ERR_SYSTEM_ERROR, str(exc), domain=c.VIR_FROM_STREAMS) from exc
