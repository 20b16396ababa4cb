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
