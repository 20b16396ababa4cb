"""Progress and cancellation of long operations (booting a cell, applying a set of domains).

A :class:`Job` is handed to an operation that may take a while.  The operation reports
its steps and the bytes it reads through :meth:`Job.step` and :meth:`Job.advance`; each
report reaches the job's callback as a frozen :class:`JobProgress`.  Anyone may call
:meth:`Job.cancel` (another thread, a signal handler, a progress callback): the operation
notices it at its next step or chunk of bytes, undoes what it did, and raises
:class:`JobCancelledError`.  Nothing is cancelled in the middle of an ioctl, so an abort
never leaves a half-created or half-loaded cell behind.

    >>> seen = []
    >>> job = Job(lambda p: seen.append(str(p)))
    >>> with job.running("copy", steps=2):
    ...     job.step("read")
    ...     job.add_bytes(4096)
    ...     job.advance(4096)
    ...     job.step("write")
    >>> seen[-1]
    'copy: step 2/2 write (4096/4096 bytes) [completed]'

:func:`cancel_on_interrupt` turns Ctrl-C into :meth:`Job.cancel` for the duration of a
``with`` block, so the operation stops at a step boundary and cleans up instead of being
torn apart by ``KeyboardInterrupt``.
"""

from __future__ import annotations

import enum
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jailhouse.errors import JailhouseError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

__all__ = [
    "Job",
    "JobCancelledError",
    "JobOutcome",
    "JobProgress",
    "cancel_on_interrupt",
]


class JobCancelledError(JailhouseError):
    """A job was cancelled; the operation undid its work before raising this.

    Attributes:
        operation: The operation, such as ``"create 'demo'"``.
        step: The step it would have begun next, or was reading bytes for.
        began: Whether that step had begun (it was reading bytes).
    """

    def __init__(self, operation: str, step: str, *, began: bool = False) -> None:
        """Record where the job stopped."""
        self.operation = operation
        self.step = step
        self.began = began
        where = "during" if began else "before"
        super().__init__(f"{operation}: cancelled {where} {step!r}")


class JobOutcome(enum.Enum):
    """How the last operation of a job ended."""

    NONE = "none"
    """No operation has run yet."""
    RUNNING = "running"
    """An operation is running."""
    COMPLETED = "completed"
    """The operation finished."""
    FAILED = "failed"
    """The operation raised an error (and undid its work)."""
    CANCELLED = "cancelled"
    """The operation was cancelled (and undid its work)."""


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Where a job stands.

    Attributes:
        operation: What runs, such as ``"create 'demo'"`` or ``"apply"``.
        step: The current step, such as ``"load images"`` (empty before the first).
        step_index: The current step's number, from 1 (0 before the first step).
        steps: How many steps the operation expects (at least ``step_index``).
        bytes_done: Bytes read so far.
        bytes_total: Bytes the operation expects to read so far (it may grow as later
            steps learn their sizes).
        outcome: Whether the operation runs or how it ended.
        elapsed: Seconds since the operation began.
    """

    operation: str
    step: str
    step_index: int
    steps: int
    bytes_done: int = 0
    bytes_total: int = 0
    outcome: JobOutcome = JobOutcome.RUNNING
    elapsed: float = 0.0

    @property
    def fraction(self) -> float:
        """Return the share done, from 0.0 to 1.0, by steps and within a step by bytes.

        While bytes are still being read, the current step counts as the share of them
        read; otherwise it counts as done.
        """
        if self.outcome == JobOutcome.COMPLETED:
            return 1.0
        if not self.steps:
            return 0.0
        done = float(self.step_index)
        if self.step_index and self.bytes_total and self.bytes_done < self.bytes_total:
            done += self.bytes_done / self.bytes_total - 1
        return min(done / self.steps, 1.0)

    def __str__(self) -> str:
        """Render as ``create 'demo': step 2/4 load images (1048576/4194304 bytes)``."""
        text = self.operation
        if self.step_index:
            text += f": step {self.step_index}/{self.steps} {self.step}"
        if self.bytes_total:
            text += f" ({self.bytes_done}/{self.bytes_total} bytes)"
        if self.outcome not in {JobOutcome.RUNNING, JobOutcome.NONE}:
            text += f" [{self.outcome.value}]"
        return text


class Job:
    """Progress reporting and cancellation for one long operation at a time.

    An operation wraps its work in :meth:`running`; operations it calls (an apply that
    boots cells) report into the same job without resetting it, so the caller sees one
    sequence of steps.

    Args:
        progress: Called with a :class:`JobProgress` after every step, every chunk of
            bytes, and when the operation ends.  It runs in the operation's thread and
            may call :meth:`cancel`.

    Attributes:
        progress: The callback.
    """

    def __init__(self, progress: Callable[[JobProgress], None] | None = None) -> None:
        """Make an idle job."""
        self.progress = progress
        self._cancelled = False  # a plain bool: set from a signal handler, read between steps
        self._lock = threading.Lock()
        self._depth = 0
        self._operation = ""
        self._step = ""
        self._step_index = 0
        self._steps = 0
        self._bytes_done = 0
        self._bytes_total = 0
        self._outcome = JobOutcome.NONE
        self._started = 0.0
        self._ended = 0.0

    def __repr__(self) -> str:
        """Show the current progress."""
        return f"Job({self.snapshot()})"

    # -- control ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the running operation to stop at its next step or chunk; safe from any thread.

        A job cancelled before its operation begins cancels that operation at its first
        step.  The request stays until the operation ends; the job can then run again.
        """
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called and no operation has ended since."""
        return self._cancelled

    def check(self) -> None:
        """Raise :class:`JobCancelledError` if the job was cancelled.

        Raises:
            JobCancelledError: :meth:`cancel` was called.
        """
        self._check(began=False)

    def _check(self, *, began: bool) -> None:
        if self._cancelled:
            raise JobCancelledError(
                self._operation or "job", self._step or "the first step", began=began
            )

    # -- reporting (called by operations) --------------------------------------------

    @contextmanager
    def running(self, operation: str, *, steps: int) -> Iterator[Job]:
        """Run an operation of ``steps`` steps in this job.

        The outermost operation resets the counters and names the job; a nested one adds
        its steps to the total and reports into it.  When the outermost one ends, the
        outcome is recorded and reported, and a pending cancellation is cleared.

        Args:
            operation: What runs, such as ``"create 'demo'"``.
            steps: How many :meth:`step` calls it will make.

        Yields:
            The job itself.
        """
        with self._lock:
            outer = self._depth == 0
            self._depth += 1
            if not outer:
                self._steps += steps
            else:
                self._operation = operation
                self._step = ""
                self._step_index = 0
                self._steps = steps
                self._bytes_done = 0
                self._bytes_total = 0
                self._outcome = JobOutcome.RUNNING
                self._started = time.monotonic()
        outcome = JobOutcome.FAILED
        try:
            yield self
            outcome = JobOutcome.COMPLETED
        except BaseException:
            if self._cancelled:
                outcome = JobOutcome.CANCELLED
            raise
        finally:
            with self._lock:
                self._depth -= 1
                done = self._depth == 0
                if done:
                    self._outcome = outcome
                    self._ended = time.monotonic()
                    self._cancelled = False
            if done:
                self._report()

    def step(self, name: str) -> None:
        """Begin the next step, after checking for a cancellation.

        Raises:
            JobCancelledError: The job was cancelled.
        """
        with self._lock:
            self._step = name
        self.check()
        with self._lock:
            self._step_index += 1
            self._steps = max(self._steps, self._step_index)
        self._report()

    def add_steps(self, count: int) -> None:
        """Expect ``count`` more steps than the operation announced."""
        with self._lock:
            self._steps += count

    def add_bytes(self, count: int) -> None:
        """Expect ``count`` more bytes to be read."""
        with self._lock:
            self._bytes_total += count

    def advance(self, count: int) -> None:
        """Record ``count`` bytes read, report, and check for a cancellation.

        Raises:
            JobCancelledError: The job was cancelled.
        """
        with self._lock:
            self._bytes_done += count
            self._bytes_total = max(self._bytes_total, self._bytes_done)
        self._report()
        self._check(began=True)

    # -- state ---------------------------------------------------------------------------

    def snapshot(self) -> JobProgress:
        """Return where the job stands now."""
        with self._lock:
            end = self._ended if self._outcome != JobOutcome.RUNNING else time.monotonic()
            return JobProgress(
                operation=self._operation,
                step=self._step,
                step_index=self._step_index,
                steps=self._steps,
                bytes_done=self._bytes_done,
                bytes_total=self._bytes_total,
                outcome=self._outcome,
                elapsed=max(end - self._started, 0.0) if self._started else 0.0,
            )

    @property
    def active(self) -> bool:
        """Whether an operation runs in this job."""
        return self._depth > 0

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.snapshot())


@contextmanager
def cancel_on_interrupt(job: Job, on_cancel: Callable[[], None] | None = None) -> Iterator[Job]:
    """Turn Ctrl-C (SIGINT) into :meth:`Job.cancel` while the block runs.

    Only the main thread can install signal handlers; elsewhere the block runs with the
    default behaviour.  The previous handler is restored on the way out.

    Args:
        job: The job to cancel.
        on_cancel: Called (in the signal handler) on each Ctrl-C, to tell the user that
            the operation stops at the next step.

    Yields:
        The job.
    """
    if threading.current_thread() is not threading.main_thread():
        yield job
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        job.cancel()
        if on_cancel is not None:
            on_cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield job
    finally:
        signal.signal(signal.SIGINT, previous)
