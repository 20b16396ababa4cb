"""The event loop functions and domain lifecycle events, without a daemon.

Event loop: :func:`virEventRegisterDefaultImpl` installs a ``poll(2)`` loop that
:func:`virEventRunDefaultImpl` runs one iteration of; :func:`virEventRegisterImpl`
installs a program's own loop instead (the six functions libvirt-python takes, so
``libvirtaio``-style adapters work: timer callbacks are called as ``cb(timer, opaque)``,
handle callbacks as ``cb(watch, fd, events, opaque)``).  ``virEventAdd/Update/Remove
Handle/Timeout`` go to whichever loop is installed.

Domain events: there is no libvirtd to tell a connection what another process did, so
each connection with a registration watches for itself: a timer of
:data:`EVENT_POLL_MS` on the installed loop reads the definitions store and the cells in
sysfs, compares them with the last reading and calls the callbacks for the difference.
A change by anyone (this process, ``jhctl``, another connection, a cell that fails)
reaches the callbacks at the first tick after it: within :data:`EVENT_POLL_MS` plus the
time the program takes to run its loop.  Changes undone between two ticks are not seen.

Lifecycle events, as libvirt's constants:

=================================  =================================================
change between two readings        event, detail
=================================  =================================================
a definition appears / changes     ``DEFINED``, ``ADDED`` / ``UPDATED``
a definition goes                  ``UNDEFINED``, ``REMOVED``
a cell appears                     ``STARTED``, ``BOOTED`` (then ``SUSPENDED`` if it
                                   is created paused, ``CRASHED`` if it failed)
a cell goes                        ``STOPPED``: ``SHUTDOWN`` after shutdown(),
                                   ``CRASHED`` if it had failed, else ``DESTROYED``
running -> paused (shut down)      ``SUSPENDED``, ``PAUSED``
paused -> running                  ``RESUMED``, ``UNPAUSED``
-> failed                          ``CRASHED``, ``PANICKED``
failed -> running                  ``STARTED``, ``BOOTED`` (the cell was reloaded)
=================================  =================================================

Other domain event ids (disks, graphics, agents ...) and the event kinds of objects a
Jailhouse host lacks (networks, storage pools, node devices, secrets) are accepted and
never fire.
"""

# ruff: noqa: N802, N803 - function and argument names are libvirt-python's

from __future__ import annotations

import contextlib
import itertools
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from jailhouse.virt import _constants as c
from jailhouse.virt._errors import make_error
from jailhouse.virt._libvirt_api import CONSTANTS

if TYPE_CHECKING:
    from jailhouse.virt._api import virConnect, virDomain
    from jailhouse.virt._driver import DomainView, Driver

__all__ = [
    "EVENT_POLL_MS",
    "ConnectEvents",
    "EventCB",
    "TimerCB",
    "add_timeout",
    "remove_timeout",
    "virEventAddHandle",
    "virEventAddTimeout",
    "virEventInvokeFreeCallback",
    "virEventRegisterDefaultImpl",
    "virEventRegisterImpl",
    "virEventRemoveHandle",
    "virEventRemoveTimeout",
    "virEventRunDefaultImpl",
    "virEventUpdateHandle",
    "virEventUpdateTimeout",
]

EVENT_POLL_MS: Final = 250
"""How often a connection with event registrations reads the store and sysfs (ms)."""

_T = TypeVar("_T")
EventCB = Callable[[int, int, int, _T], None]
"""A handle callback, ``cb(watch, fd, events, opaque)`` (libvirt-python's ``_EventCB``)."""
TimerCB = Callable[[int, _T], None]
"""A timer callback, ``cb(timer, opaque)`` (libvirt-python's ``_TimerCB``)."""


def _k(name: str) -> int:
    return int(CONSTANTS[name])


_READABLE: Final = _k("VIR_EVENT_HANDLE_READABLE")
_WRITABLE: Final = _k("VIR_EVENT_HANDLE_WRITABLE")
_ERROR: Final = _k("VIR_EVENT_HANDLE_ERROR")
_HANGUP: Final = _k("VIR_EVENT_HANDLE_HANGUP")
_LIFECYCLE: Final = _k("VIR_DOMAIN_EVENT_ID_LIFECYCLE")

DEFINED: Final = (_k("VIR_DOMAIN_EVENT_DEFINED"), _k("VIR_DOMAIN_EVENT_DEFINED_ADDED"))
UPDATED: Final = (_k("VIR_DOMAIN_EVENT_DEFINED"), _k("VIR_DOMAIN_EVENT_DEFINED_UPDATED"))
UNDEFINED: Final = (_k("VIR_DOMAIN_EVENT_UNDEFINED"), _k("VIR_DOMAIN_EVENT_UNDEFINED_REMOVED"))
STARTED: Final = (_k("VIR_DOMAIN_EVENT_STARTED"), _k("VIR_DOMAIN_EVENT_STARTED_BOOTED"))
SUSPENDED: Final = (_k("VIR_DOMAIN_EVENT_SUSPENDED"), _k("VIR_DOMAIN_EVENT_SUSPENDED_PAUSED"))
RESUMED: Final = (_k("VIR_DOMAIN_EVENT_RESUMED"), _k("VIR_DOMAIN_EVENT_RESUMED_UNPAUSED"))
CRASHED: Final = (_k("VIR_DOMAIN_EVENT_CRASHED"), _k("VIR_DOMAIN_EVENT_CRASHED_PANICKED"))
STOPPED_SHUTDOWN: Final = (_k("VIR_DOMAIN_EVENT_STOPPED"), _k("VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN"))
STOPPED_DESTROYED: Final = (
    _k("VIR_DOMAIN_EVENT_STOPPED"),
    _k("VIR_DOMAIN_EVENT_STOPPED_DESTROYED"),
)
STOPPED_CRASHED: Final = (_k("VIR_DOMAIN_EVENT_STOPPED"), _k("VIR_DOMAIN_EVENT_STOPPED_CRASHED"))


def _report(exc: BaseException) -> None:
    """Show an exception a callback raised and go on, as libvirt-python prints it."""
    sys.excepthook(type(exc), exc, exc.__traceback__)


# -- the default loop ----------------------------------------------------------------------


@dataclass
class _Handle:
    fd: int
    events: int
    cb: Callable[[int, int, int, Any], object]
    opaque: Any
    ff: Callable[[Any], object] | None


@dataclass
class _Timer:
    interval: int
    cb: Callable[[int, Any], object]
    opaque: Any
    ff: Callable[[Any], object] | None
    due: float


class _PollLoop:
    """libvirt's default loop: ``poll(2)`` on the handles, timers by the monotonic clock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.handles: dict[int, _Handle] = {}
        self.timers: dict[int, _Timer] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
            os.write(self._wake_w, b"x")

    def add_handle(self, fd: int, events: int, cb: Any, opaque: Any, ff: Any = None) -> int:  # noqa: ANN401 - callbacks of any type
        with self._lock:
            watch = next(self._ids)
            self.handles[watch] = _Handle(fd, events, cb, opaque, ff)
        self._wake()
        return watch

    def update_handle(self, watch: int, events: int) -> None:
        with self._lock:
            if watch in self.handles:
                self.handles[watch].events = events
        self._wake()

    def remove_handle(self, watch: int) -> int:
        with self._lock:
            handle = self.handles.pop(watch, None)
        if handle is None:
            return -1
        if handle.ff is not None:
            handle.ff(handle.opaque)
        self._wake()
        return 0

    def add_timeout(self, interval: int, cb: Any, opaque: Any, ff: Any = None) -> int:  # noqa: ANN401 - callbacks of any type
        with self._lock:
            timer = next(self._ids)
            self.timers[timer] = _Timer(
                interval, cb, opaque, ff, time.monotonic() + interval / 1000
            )
        self._wake()
        return timer

    def update_timeout(self, timer: int, interval: int) -> None:
        with self._lock:
            if timer in self.timers:
                self.timers[timer].interval = interval
                self.timers[timer].due = time.monotonic() + max(interval, 0) / 1000
        self._wake()

    def remove_timeout(self, timer: int) -> int:
        with self._lock:
            entry = self.timers.pop(timer, None)
        if entry is None:
            return -1
        if entry.ff is not None:
            entry.ff(entry.opaque)
        self._wake()
        return 0

    def run_once(self) -> None:
        """Wait for the first handle event or due timer, and dispatch what is ready."""
        with self._lock:
            now = time.monotonic()
            dues = [t.due for t in self.timers.values() if t.interval >= 0]
            wait = None if not dues else max(min(dues) - now, 0.0)
            fds = [(w, h.fd, h.events) for w, h in self.handles.items() if h.events]
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for _watch, fd, events in fds:
            mask = (select.POLLIN if events & _READABLE else 0) | (
                select.POLLOUT if events & _WRITABLE else 0
            )
            poller.register(fd, mask)
        ready = poller.poll(None if wait is None else int(wait * 1000) + 1)
        fired: dict[int, int] = {}
        for fd, revents in ready:
            if fd == self._wake_r:
                while True:
                    try:
                        if not os.read(self._wake_r, 64):
                            break
                    except BlockingIOError:
                        break
                continue
            fired[fd] = (
                (_READABLE if revents & select.POLLIN else 0)
                | (_WRITABLE if revents & select.POLLOUT else 0)
                | (_ERROR if revents & (select.POLLERR | select.POLLNVAL) else 0)
                | (_HANGUP if revents & select.POLLHUP else 0)
            )
        self._dispatch_timers()
        for watch, fd, _events in fds:
            with self._lock:
                handle = self.handles.get(watch)
            if handle is not None and fd in fired and fired[fd]:
                try:
                    handle.cb(watch, fd, fired[fd], handle.opaque)
                except Exception as exc:  # noqa: BLE001 - a callback's error is shown, the loop goes on
                    _report(exc)

    def _dispatch_timers(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [(k, t) for k, t in self.timers.items() if t.interval >= 0 and t.due <= now]
            for _timer, entry in due:
                entry.due = now + entry.interval / 1000
        for timer, entry in due:
            with self._lock:
                if timer not in self.timers:
                    continue
            try:
                entry.cb(timer, entry.opaque)
            except Exception as exc:  # noqa: BLE001 - as above
                _report(exc)


@dataclass
class _AppLoop:
    """A program's own loop, given to :func:`virEventRegisterImpl`."""

    add_handle: Callable[..., int]
    update_handle: Callable[[int, int], object]
    remove_handle: Callable[[int], object]
    add_timeout: Callable[..., int]
    update_timeout: Callable[[int, int], object]
    remove_timeout: Callable[[int], object]


_loop: _PollLoop | _AppLoop | None = None
_default: _PollLoop | None = None


def _current(function: str) -> _PollLoop | _AppLoop:
    if _loop is None:
        raise make_error(
            c.VIR_ERR_INTERNAL_ERROR,
            f"{function}: no event loop is registered; call virEventRegisterDefaultImpl() "
            "or virEventRegisterImpl() first",
            domain=c.VIR_FROM_NONE,
        )
    return _loop


def virEventRegisterDefaultImpl() -> int:
    """Install the default ``poll(2)`` event loop (again: the same one).

    Returns:
        0.
    """
    global _loop, _default  # noqa: PLW0603 - one event loop per process, as libvirt's
    if _default is None:
        _default = _PollLoop()
    _loop = _default
    return 0


def virEventRunDefaultImpl() -> int:
    """Run one iteration of the default loop: wait, then dispatch what is ready.

    Raises:
        libvirtError: The default loop is not installed.
    """
    if _default is None:
        raise make_error(
            c.VIR_ERR_INTERNAL_ERROR,
            "virEventRunDefaultImpl: call virEventRegisterDefaultImpl() first",
            domain=c.VIR_FROM_NONE,
        )
    _default.run_once()
    return 0


def virEventRegisterImpl(  # noqa: PLR0917 - libvirt-python's signature
    addHandle: Callable[..., int],
    updateHandle: Callable[[int, int], object],
    removeHandle: Callable[[int], object],
    addTimeout: Callable[..., int],
    updateTimeout: Callable[[int, int], object],
    removeTimeout: Callable[[int], object],
) -> None:
    """Install a program's own event loop (``addHandle(fd, events, cb, opaque)`` ...)."""
    global _loop  # noqa: PLW0603 - one event loop per process
    _loop = _AppLoop(
        addHandle, updateHandle, removeHandle, addTimeout, updateTimeout, removeTimeout
    )


def virEventAddHandle(
    fd: int,
    events: int,
    cb: Callable[[int, int, int, Any], object],
    opaque: Any,  # noqa: ANN401 - the caller's
) -> int:
    """Watch a file descriptor; ``cb(watch, fd, events, opaque)`` runs when it is ready.

    Raises:
        libvirtError: No event loop is registered.
    """
    loop = _current("virEventAddHandle")
    return int(loop.add_handle(fd, events, cb, opaque))


def virEventUpdateHandle(watch: int, events: int) -> None:
    """Change the events a handle waits for."""
    _current("virEventUpdateHandle").update_handle(watch, events)


def virEventRemoveHandle(watch: int) -> int:
    """Stop watching a handle.

    Raises:
        libvirtError: No such handle, or no event loop.
    """
    result = _current("virEventRemoveHandle").remove_handle(watch)
    if result == -1:
        raise make_error(c.VIR_ERR_INVALID_ARG, f"no handle {watch}", domain=c.VIR_FROM_NONE)
    return 0


def virEventAddTimeout(timeout: int, cb: Callable[[int, Any], object], opaque: Any) -> int:  # noqa: ANN401 - the caller's
    """Add a timer of ``timeout`` ms (-1: disabled, 0: every iteration); ``cb(timer, opaque)``.

    Raises:
        libvirtError: No event loop is registered.
    """
    return add_timeout(timeout, cb, opaque)


def virEventUpdateTimeout(timer: int, timeout: int) -> None:
    """Change a timer's interval (ms; -1 disables it)."""
    _current("virEventUpdateTimeout").update_timeout(timer, timeout)


def virEventRemoveTimeout(timer: int) -> int:
    """Remove a timer.

    Raises:
        libvirtError: No such timer, or no event loop.
    """
    result = remove_timeout(timer)
    if result == -1:
        raise make_error(c.VIR_ERR_INVALID_ARG, f"no timer {timer}", domain=c.VIR_FROM_NONE)
    return 0


def virEventInvokeFreeCallback(opaque: Any) -> None:  # noqa: ANN401
    """Do nothing: the facade's opaque values need no freeing (for ``libvirtaio``-style loops)."""


def add_timeout(interval: int, cb: Callable[[int, Any], object], opaque: Any) -> int:  # noqa: ANN401 - the caller's
    """Add a timer on the installed loop (for the facade's own watchers)."""
    loop = _current("virEventAddTimeout")
    return int(loop.add_timeout(interval, cb, opaque))


def remove_timeout(timer: int) -> int:
    """Remove a timer from the installed loop; -1 when it is unknown."""
    loop = _current("virEventRemoveTimeout")
    result = loop.remove_timeout(timer)
    return -1 if result == -1 else 0


# -- domain events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a watcher remembers of one domain."""

    name: str
    xml: str | None
    cell_id: int
    state: int
    reason: int


def _seen(view: DomainView) -> _Seen:
    xml = None if view.persistent is None else view.persistent.xml
    state, reason = view.state()
    return _Seen(view.name, xml, view.id, state, reason)


def lifecycle_changes(before: _Seen | None, after: _Seen | None) -> list[tuple[int, int]]:
    """Return the lifecycle events, in order, that take one domain from ``before`` to ``after``."""
    events: list[tuple[int, int]] = []
    was_defined = before is not None and before.xml is not None
    is_defined = after is not None and after.xml is not None
    if is_defined and not was_defined:
        events.append(DEFINED)
    elif is_defined and before is not None and after is not None and before.xml != after.xml:
        events.append(UPDATED)
    was_active = before is not None and before.cell_id >= 0
    is_active = after is not None and after.cell_id >= 0
    if was_active and before is not None and (not is_active or after_id(after) != before.cell_id):
        if before.state == c.VIR_DOMAIN_CRASHED:
            events.append(STOPPED_CRASHED)
        elif after is not None and after.reason == c.VIR_DOMAIN_SHUTOFF_SHUTDOWN:
            events.append(STOPPED_SHUTDOWN)
        else:
            events.append(STOPPED_DESTROYED)
        was_active = False
    if is_active and after is not None:
        if not was_active:
            events.append(STARTED)
            events.extend(_state_entered(after.state))
        elif before is not None and before.state != after.state:
            if after.state == c.VIR_DOMAIN_RUNNING:
                events.append(STARTED if before.state == c.VIR_DOMAIN_CRASHED else RESUMED)
            else:
                events.extend(_state_entered(after.state))
    if was_defined and not is_defined:
        events.append(UNDEFINED)
    return events


def after_id(after: _Seen | None) -> int:
    """The cell id of a reading, -1 for none."""
    return -1 if after is None else after.cell_id


def _state_entered(state: int) -> list[tuple[int, int]]:
    if state == c.VIR_DOMAIN_PAUSED:
        return [SUSPENDED]
    if state == c.VIR_DOMAIN_CRASHED:
        return [CRASHED]
    return []


@dataclass
class _Registration:
    callback_id: int
    event_id: int
    uuid: str | None
    cb: Callable[..., object]
    opaque: Any
    legacy: bool = False


class _Watcher:
    """The timer of one connection: read, compare, call back."""

    def __init__(self, conn: virConnect, driver: Driver) -> None:
        self.conn = conn
        self.driver = driver
        self.seen = self._read()
        self.timer = add_timeout(EVENT_POLL_MS, self._tick, None)

    def _read(self) -> dict[str, _Seen]:
        return {view.uuid: _seen(view) for view in self.driver.domains(statistics=False)}

    def _tick(self, _timer: int, _opaque: object) -> None:
        from jailhouse.virt._api import virDomain  # noqa: PLC0415 - avoid a cycle

        if self.conn._driver is None:  # noqa: SLF001 - closed under us
            return
        try:
            now = self._read()
        except Exception as exc:  # noqa: BLE001 - a failed reading is shown; the next tick retries
            _report(exc)
            return
        before, self.seen = self.seen, now
        registrations = list(self.conn._registrations.values())  # noqa: SLF001 - its own table
        for uuid in list(before) + [u for u in now if u not in before]:
            changes = lifecycle_changes(before.get(uuid), now.get(uuid))
            if not changes:
                continue
            seen = now.get(uuid) or before[uuid]
            dom = virDomain._from_parts(self.conn, uuid, seen.name)  # noqa: SLF001
            for event, detail in changes:
                for reg in registrations:
                    if reg.event_id != _LIFECYCLE or (reg.uuid is not None and reg.uuid != uuid):
                        continue
                    try:
                        reg.cb(self.conn, dom, event, detail, reg.opaque)
                    except Exception as exc:  # noqa: BLE001 - shown, as libvirt-python does
                        _report(exc)

    def stop(self) -> None:
        """Remove the timer."""
        remove_timeout(self.timer)


class ConnectEvents:
    """The events half of ``virConnect`` (a mixin)."""

    if TYPE_CHECKING:

        def _live(self, function: str) -> Driver: ...

        _driver: Driver | None

    _registrations: dict[int, _Registration]
    _watcher: _Watcher | None
    _other_ids: set[int]
    _callback_ids = itertools.count(1)

    def _events_init(self) -> None:
        self._registrations = {}
        self._watcher = None
        self._other_ids = set()

    def _register(
        self,
        function: str,
        event_id: int,
        uuid: str | None,
        cb: Callable[..., object],
        opaque: Any,  # noqa: ANN401 - the caller's
        *,
        legacy: bool = False,
    ) -> int:
        driver = self._live(function)
        if self._watcher is None:
            conn: virConnect = self  # type: ignore[assignment] # a mixin of virConnect
            self._watcher = _Watcher(conn, driver)
        callback_id = next(self._callback_ids)
        self._registrations[callback_id] = _Registration(
            callback_id, event_id, uuid, cb, opaque, legacy
        )
        return callback_id

    def _unregister(self, callback_id: int) -> None:
        self._registrations.pop(callback_id, None)
        if not self._registrations and self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def _events_close(self) -> None:
        self._registrations.clear()
        if self._watcher is not None:
            with contextlib.suppress(Exception):  # the loop may be gone at close
                self._watcher.stop()
            self._watcher = None

    def domainEventRegister(self, cb: Callable[..., object], opaque: Any) -> None:  # noqa: ANN401 - the caller's
        """Call ``cb(conn, dom, event, detail, opaque)`` for every lifecycle event (legacy API).

        Raises:
            libvirtError: No event loop is registered.
        """
        self._register("virConnectDomainEventRegister", _LIFECYCLE, None, cb, opaque, legacy=True)

    def domainEventDeregister(self, cb: Callable[..., object]) -> None:
        """Remove a callback registered with :meth:`domainEventRegister`.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` when it is not registered.
        """
        self._live("virConnectDomainEventDeregister")
        for callback_id, reg in list(self._registrations.items()):
            if reg.legacy and reg.cb == cb:
                self._unregister(callback_id)
                return
        raise make_error(
            c.VIR_ERR_INVALID_ARG,
            "could not find event callback for removal",
            domain=c.VIR_FROM_NONE,
        )

    def domainEventRegisterAny(
        self,
        dom: virDomain | None,
        eventID: int,
        cb: Callable[..., object],
        opaque: Any,  # noqa: ANN401 - the caller's
    ) -> int:
        """Register a domain event callback; only ``VIR_DOMAIN_EVENT_ID_LIFECYCLE`` ever fires.

        Lifecycle callbacks are called as ``cb(conn, dom, event, detail, opaque)``; ``dom``
        limits them to one domain.  Other ids are accepted: a cell has no disks,
        graphics or agent, so they never fire.

        Returns:
            The callback id.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for an unknown event id; the event loop
                is not registered.
        """
        known = {v for k, v in CONSTANTS.items() if k.startswith("VIR_DOMAIN_EVENT_ID_")}
        if eventID not in known:
            raise make_error(
                c.VIR_ERR_INVALID_ARG, f"unsupported event ID {eventID}", domain=c.VIR_FROM_NONE
            )
        uuid = None if dom is None else dom.UUIDString()
        return self._register("virConnectDomainEventRegisterAny", eventID, uuid, cb, opaque)

    def domainEventDeregisterAny(self, callbackID: int) -> None:
        """Remove a callback registered with :meth:`domainEventRegisterAny`.

        Raises:
            libvirtError: ``VIR_ERR_INVALID_ARG`` for an unknown id.
        """
        self._live("virConnectDomainEventDeregisterAny")
        reg = self._registrations.get(callbackID)
        if reg is None or reg.legacy:
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                f"could not find event callback {callbackID} for deletion",
                domain=c.VIR_FROM_NONE,
            )
        self._unregister(callbackID)

    def _register_absent(self, function: str) -> int:
        self._live(function)
        _current(function)
        callback_id = next(self._callback_ids)
        self._other_ids.add(callback_id)
        return callback_id

    def _deregister_absent(self, function: str, callbackID: int) -> None:
        self._live(function)
        if callbackID not in self._other_ids:
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                f"could not find event callback {callbackID} for deletion",
                domain=c.VIR_FROM_NONE,
            )
        self._other_ids.discard(callbackID)

    def networkEventRegisterAny(self, net: object, eventID: int, cb: object, opaque: object) -> int:
        """Accept a network event callback; it never fires (a Jailhouse host has no networks)."""
        del net, eventID, cb, opaque  # it never fires
        return self._register_absent("virConnectNetworkEventRegisterAny")

    def networkEventDeregisterAny(self, callbackID: int) -> None:
        """Remove a network event callback."""
        self._deregister_absent("virConnectNetworkEventDeregisterAny", callbackID)

    def storagePoolEventRegisterAny(
        self,
        pool: object,
        eventID: int,
        cb: object,
        opaque: object,
    ) -> int:
        """Accept a storage pool event callback; it never fires (no storage pools)."""
        del pool, eventID, cb, opaque  # it never fires
        return self._register_absent("virConnectStoragePoolEventRegisterAny")

    def storagePoolEventDeregisterAny(self, callbackID: int) -> None:
        """Remove a storage pool event callback."""
        self._deregister_absent("virConnectStoragePoolEventDeregisterAny", callbackID)

    def nodeDeviceEventRegisterAny(
        self, dev: object, eventID: int, cb: object, opaque: object
    ) -> int:
        """Accept a node device event callback; it never fires (no node devices)."""
        del dev, eventID, cb, opaque  # it never fires
        return self._register_absent("virConnectNodeDeviceEventRegisterAny")

    def nodeDeviceEventDeregisterAny(self, callbackID: int) -> None:
        """Remove a node device event callback."""
        self._deregister_absent("virConnectNodeDeviceEventDeregisterAny", callbackID)

    def secretEventRegisterAny(
        self, secret: object, eventID: int, cb: object, opaque: object
    ) -> int:
        """Accept a secret event callback; it never fires (no secrets)."""
        del secret, eventID, cb, opaque  # it never fires
        return self._register_absent("virConnectSecretEventRegisterAny")

    def secretEventDeregisterAny(self, callbackID: int) -> None:
        """Remove a secret event callback."""
        self._deregister_absent("virConnectSecretEventDeregisterAny", callbackID)

    def registerCloseCallback(self, cb: object, opaque: object) -> int:
        """Accept a close callback; it never fires (no daemon connection can drop).

        Returns:
            0.
        """
        del cb, opaque  # it never fires
        self._live("virConnectRegisterCloseCallback")
        return 0

    def unregisterCloseCallback(self) -> int:
        """Remove the close callback.

        Returns:
            0.
        """
        self._live("virConnectUnregisterCloseCallback")
        return 0
