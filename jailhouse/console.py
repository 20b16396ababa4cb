"""Read the hypervisor console through the device.

``read()`` on ``/dev/jailhouse`` returns the hypervisor's console ring (ABI fact sheet §1):
each open file keeps its own position, one read returns at most 2048 bytes, and a reader
that the writer lapped gets the line ``<missed N bytes of console log>`` instead of data,
then the data after the gap.  Non-blocking reads return nothing when there is no new text
and fail with EAGAIN while the hypervisor is disabled.

:class:`ConsoleReader` turns that into text: :meth:`ConsoleReader.read` for what is there
now and :meth:`ConsoleReader.follow` for ``jailhouse console -f``.  The missed-bytes line
is passed through as text (the user should see the gap) and also counted in
:attr:`ConsoleReader.missed_bytes`.
"""

from __future__ import annotations

import codecs
import errno
import re
import time
from typing import TYPE_CHECKING, Final

from jailhouse.errors import DeviceError, PermissionDeniedError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from jailhouse.device import Device

__all__ = ["CONSOLE_SIZE", "ConsoleReader"]

CONSOLE_SIZE: Final = 2048
"""Size of the hypervisor's console ring; one read returns at most this much."""

_MISSED_RE: Final = re.compile(rb"<missed ([0-9]+) bytes of console log>\n")
# The driver cuts the marker to the read size (and has already skipped the lost bytes), so
# a read shorter than the longest marker could lose its tail: never read less than this.
_MIN_READ: Final = 64


class ConsoleReader:
    """Text reads of the hypervisor console from one open device.

    The reader does not own the device: close the device (or the
    :class:`~jailhouse.hypervisor.Hypervisor`) when done.  The driver keeps the read
    position per open file, so a reader on a fresh device starts at the beginning of
    the ring.  Non-blocking reads never reset that position: a file kept open across
    a disable and the next enable reads a bogus missed-bytes line (a u32 underflow)
    and stale bytes (ABI fact sheet §1), so open the device afresh after re-enabling.

    Args:
        device: The open device.
        chunk: Bytes to ask for per read (at least 64, at most 2048 are returned).

    Attributes:
        missed_bytes: Console bytes the writer overwrote before this reader got them,
            summed over every missed-bytes marker seen.
        missed_events: How many markers were seen.
    """

    def __init__(self, device: Device, *, chunk: int = CONSOLE_SIZE) -> None:
        """Remember the device; nothing is read yet."""
        if chunk < _MIN_READ:
            raise ValueError(f"chunk = {chunk}: must be at least {_MIN_READ} bytes")
        self.device = device
        self.chunk = chunk
        self.missed_bytes = 0
        self.missed_events = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read_bytes(self, *, nonblock: bool = True) -> bytes:
        """Read one chunk of console bytes, as the driver returns it.

        Args:
            nonblock: Return at once when there is nothing new (the default).  A blocking
                read waits until the hypervisor writes, even while it is disabled.

        Returns:
            The bytes; empty when there is nothing new, or when the hypervisor is
            disabled and the read does not block.  A missed-bytes marker is returned as
            it is and counted.

        Raises:
            PermissionDeniedError: The system config lacks the virtual debug console flag.
            DeviceError: Another errno from the driver (EINTR on a signal).
        """
        try:
            data = self.device.read(self.chunk, nonblock=nonblock)
        except DeviceError as exc:
            if exc.errno == errno.EAGAIN:
                return b""  # the hypervisor is disabled: nothing to read
            if exc.errno == errno.EPERM:
                raise PermissionDeniedError(
                    errno.EPERM,
                    op="console read",
                    hint="the system config lacks the VIRTUAL_DEBUG_CONSOLE flag, so the "
                    "root cell may not read the hypervisor console",
                ) from exc
            raise
        marker = _MISSED_RE.fullmatch(data)
        if marker:
            self.missed_bytes += int(marker.group(1))
            self.missed_events += 1
        return data

    def read(self, *, nonblock: bool = True) -> str:
        """Read the console text there is now.

        Non-blocking, this reads until a read comes back short (so it also drains a
        marker and the data after it); blocking, it waits for one chunk.

        Args:
            nonblock: See :meth:`read_bytes`.

        Returns:
            The text; bytes that are not UTF-8 become U+FFFD, and a character cut by
            the chunk boundary is completed by the next read.

        Raises:
            PermissionDeniedError: The system config lacks the virtual debug console flag.
            DeviceError: Another errno from the driver.
        """
        if not nonblock:
            return self._decoder.decode(self.read_bytes(nonblock=False))
        parts: list[str] = []
        while True:
            data = self.read_bytes(nonblock=True)
            parts.append(self._decoder.decode(data))
            # A short read was everything there was; a full one or a marker may have more.
            if len(data) < self.chunk and not _MISSED_RE.fullmatch(data):
                return "".join(parts)

    def follow(self, poll: float = 0.1, stop: Callable[[], bool] | None = None) -> Iterator[str]:
        """Yield console text as the hypervisor writes it, like ``jailhouse console -f``.

        Reads never block: when there is nothing new, or the hypervisor is disabled,
        the generator sleeps ``poll`` seconds and asks ``stop`` again.

        Args:
            poll: Seconds to sleep when there is nothing to read.
            stop: Called before each read; the generator ends when it returns True
                (``threading.Event().is_set`` works).  None follows until the caller
                stops iterating.

        Yields:
            Pieces of text, each non-empty.

        Raises:
            PermissionDeniedError: The system config lacks the virtual debug console flag.
            DeviceError: Another errno from the driver.
        """
        while stop is None or not stop():
            text = self._decoder.decode(self.read_bytes(nonblock=True))
            if text:
                yield text
            else:
                time.sleep(poll)
