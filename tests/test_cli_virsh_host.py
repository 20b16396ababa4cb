"""jhctl's host and monitoring verbs: nodeinfo, capabilities, domcapabilities, domstats, console."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from lxml import etree

from jailhouse.cli import main
from jailhouse.examples import example_files
from jailhouse.sim import SimHost

if TYPE_CHECKING:
    from pathlib import Path

XML = (
    "<domain type='jailhouse'><name>{name}</name><memory unit='KiB'>64</memory>"
    "<vcpu>1</vcpu><os><type arch='aarch64'>hvm</type></os>"
    "<devices><console type='pty'/></devices></domain>"
)


@pytest.fixture
def uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """An enabled arm64 simulated host with domain 'a' defined; its URI."""
    system = tmp_path / "arm64-root.cell"
    system.write_bytes(example_files("arm64")["arm64-root.cell"])
    xml = tmp_path / "a.xml"
    xml.write_text(XML.format(name="a"), encoding="utf-8")
    value = f"sim://{tmp_path / 'host'}?arch=arm64&cpus=4"
    assert main(["-c", value, "enable", str(system)]) == 0
    assert main(["-c", value, "define", str(xml), "--system", str(system)]) == 0
    capsys.readouterr()
    return value


def run(capsys: pytest.CaptureFixture[str], uri: str, *argv: str) -> tuple[int, str, str]:
    """Run jhctl in-process; return the exit code, stdout and stderr."""
    code = main(["-c", uri, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_nodeinfo(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Nodeinfo prints virsh's labels; --json the same figures."""
    code, out, _err = run(capsys, uri, "nodeinfo")
    assert code == 0
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["CPU model"].strip() == "aarch64"
    assert lines["CPU(s)"].strip() == "4"
    assert lines["Memory size"].strip() == f"{1 << 20} KiB"
    code, out, _err = run(capsys, uri, "nodeinfo", "--json")
    doc = json.loads(out)
    assert (doc["cpus"], doc["numa_cells"], doc["memory_kib"]) == (4, 1, 1 << 20)


def test_capabilities_verbs(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Capabilities and domcapabilities print well-formed XML naming the jailhouse type."""
    code, out, _err = run(capsys, uri, "capabilities")
    assert code == 0
    assert etree.fromstring(out.encode()).xpath("guest/arch/domain/@type") == ["jailhouse"]
    code, out, _err = run(capsys, uri, "domcapabilities")
    assert code == 0
    assert etree.fromstring(out.encode()).findtext("domain") == "jailhouse"


def test_domstats(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Domstats prints each domain's record; a running one has its exit counters."""
    assert run(capsys, uri, "start", "a")[0] == 0
    code, out, _err = run(capsys, uri, "domstats")
    assert code == 0
    assert out.startswith("Domain: 'a'\n")
    assert "  state.state=1\n" in out
    code, out, _err = run(capsys, uri, "domstats", "a", "--json")
    [doc] = json.loads(out)
    assert doc["name"] == "a"
    assert doc["stats"]["vm.exits.total"] > 0
    code, _out, err = run(capsys, uri, "domstats", "nothing")
    assert code == 1
    assert "nothing" in err


def test_console_without_domain_is_unchanged(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`jhctl console` still prints the hypervisor console and exits."""
    code, out, _err = run(capsys, uri, "console")
    assert code == 0
    assert "Hypervisor enabled" in out


def _jhctl_process(uri: str, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "jailhouse", "-c", uri, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_console_domain_ends_with_ctrl_bracket(
    uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jhctl console DOMAIN` prints what the cell writes and exits 0 on Ctrl-]."""
    root = uri.removeprefix("sim://").split("?")[0]
    SimHost(root).script_cell("a", console=b"a says hello\n")
    assert run(capsys, uri, "start", "a")[0] == 0
    proc = _jhctl_process(uri, "console", "a")
    try:
        time.sleep(1.0)  # let it attach; the text is in the ring either way
        assert proc.stdin is not None
        proc.stdin.write(b"\x1d")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert b"a says hello\n" in out
    assert b"Connected to domain 'a'" in err
    assert b"Escape character is ^]" in err


def test_console_domain_ends_when_the_domain_stops(
    uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jhctl console DOMAIN` ends by itself once the domain is destroyed by someone else."""
    assert run(capsys, uri, "start", "a")[0] == 0
    proc = _jhctl_process(uri, "console", "a")
    try:
        time.sleep(1.0)
        assert run(capsys, uri, "destroy", "a")[0] == 0
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert b"domain 'a' is no longer active" in err


def test_console_domain_errors(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An inactive domain exits 1; --json is refused with exit 2."""
    code, _out, err = run(capsys, uri, "console", "a")
    assert code == 1
    assert "domain is not running" in err
    code, _out, err = run(capsys, uri, "console", "a", "--json")
    assert code == 2
