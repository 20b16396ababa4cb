"""Shared test setup: Hypothesis profiles and the import path of ``tests/strategies.py``.

Profiles, chosen by the ``HYPOTHESIS_PROFILE`` environment variable (default ``ci``):

- ``ci``: 200 examples per property; the mutation fuzz of the fixture files multiplies
  that by 10, so it runs 2,000 examples.
- ``dev``: 25 examples per property, for quick local runs.

No deadline in either: timing depends on the machine, and no test asserts on time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TESTS_DIR = Path(__file__).resolve().parent
"""This directory; ``strategies`` is imported from here (tests run with importlib mode)."""

if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- CI strictness ---------------------------------------------------------------------------
#
# With JAILHOUSE_CI_STRICT=1 (set by .ci/run) the session fails when any test other than a
# `hardware` one was skipped, or when no `fuse` or no `libvirt` test passed: on CI those
# peers (the kernel's ioctl path through FUSE, libvirt itself) are installed and must run.

_STRICT = os.environ.get("JAILHOUSE_CI_STRICT") == "1"
_MUST_RUN = ("fuse", "libvirt")
_passed: dict[str, int] = dict.fromkeys(_MUST_RUN, 0)
_bad_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count passed `fuse`/`libvirt` tests and skips of anything but `hardware` tests."""
    if not _STRICT:
        return
    if report.skipped and "hardware" not in report.keywords:
        _bad_skips.append(report.nodeid)
    if report.when == "call" and report.passed:
        for marker in _MUST_RUN:
            if marker in report.keywords:
                _passed[marker] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a strict session whose required peers did not run."""
    if not _STRICT or exitstatus not in (0, pytest.ExitCode.OK):
        return
    problems = [f"no test marked {m!r} passed" for m, n in _passed.items() if n == 0]
    if _bad_skips:
        problems.append(f"{len(_bad_skips)} tests were skipped: " + ", ".join(_bad_skips[:5]))
    if problems:
        sys.stderr.write("JAILHOUSE_CI_STRICT: " + "; ".join(problems) + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say, in strict mode, how many tests of each required peer passed."""
    if _STRICT:
        counts = ", ".join(f"{m}: {n} passed" for m, n in _passed.items())
        terminalreporter.write_line(
            f"JAILHOUSE_CI_STRICT: {counts}; non-hardware skips: {len(_bad_skips)}"
        )
