"""Run the self-test battery on a real Jailhouse board and compare it with the simulator.

Skipped unless both environment variables name config files:

- ``JAILHOUSE_HW_SYSTEM``: the system config the board is (or will be) enabled with;
- ``JAILHOUSE_HW_CELL``: a cell config for the test cell (its CPUs a proper subset of the
  root cell's, a WRITE+LOADABLE region at its ``cpu_reset_address``, ``PASSIVE_COMMREG``
  for the built-in park-loop inmate).

Optional:

- ``JAILHOUSE_HW_URI``: the hypervisor to open (default ``jailhouse:///system``);
- ``JAILHOUSE_HW_IMAGE`` and ``JAILHOUSE_HW_ADDRESS``: an inmate of your own and where to
  load it (hex or decimal), instead of the park loop at the reset address;
- ``JAILHOUSE_HW_TRANSCRIPT``: a path to write the transcript to as JSON, host data included.

Run as root on the board: ``JAILHOUSE_HW_SYSTEM=... JAILHOUSE_HW_CELL=... pytest -m hardware``.
The architecture comes from the machine (``uname -m``) and the configs; nothing here
assumes one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import jailhouse
from jailhouse.config.model import CellConfig, SystemConfig, load_config
from jailhouse.selftest import run_selftest, simulate_selftest

pytestmark = pytest.mark.hardware


def _config_path(variable: str) -> Path:
    """Return the config file an environment variable names, or skip."""
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is not set: no hardware to test")
    return Path(value)


@pytest.fixture(scope="module")
def configs() -> tuple[SystemConfig, CellConfig]:
    """Load the board's system config and the test cell's config."""
    system = load_config(_config_path("JAILHOUSE_HW_SYSTEM"))
    cell = load_config(_config_path("JAILHOUSE_HW_CELL"))
    assert isinstance(system, SystemConfig), "JAILHOUSE_HW_SYSTEM must name a system config"
    assert isinstance(cell, CellConfig), "JAILHOUSE_HW_CELL must name a cell config"
    return system, cell


def _image() -> tuple[bytes | None, int | None]:
    """Return the optional image and load address from the environment."""
    path = os.environ.get("JAILHOUSE_HW_IMAGE")
    address = os.environ.get("JAILHOUSE_HW_ADDRESS")
    return (
        Path(path).read_bytes() if path else None,
        int(address, 0) if address else None,
    )


def test_board_passes_selftest_like_the_simulator(configs: tuple[SystemConfig, CellConfig]) -> None:
    """The board passes the battery, and its transcript is the simulator's for the same configs."""
    system, cell = configs
    image, address = _image()
    uri = os.environ.get("JAILHOUSE_HW_URI", "jailhouse:///system")
    with jailhouse.open(uri) as hv:
        transcript = run_selftest(hv, system, cell, image=image, address=address)
    out = os.environ.get("JAILHOUSE_HW_TRANSCRIPT")
    if out:
        Path(out).write_text(json.dumps(transcript.to_json(), indent=2) + "\n")
    reference = simulate_selftest(
        system, cell, image=image, address=address, enabled=transcript.started_enabled
    )
    assert transcript.passed, str(transcript)
    assert transcript.compare(reference) == [], str(transcript)
