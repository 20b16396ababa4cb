"""The Salt extension's plain-Python helpers: connection lookup, sizes, domain XML."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

import pytest

from jailhouse.domxml import domain_to_cell
from jailhouse.examples import example_system
from jailhouse.saltext import _common

if TYPE_CHECKING:
    from pathlib import Path


def test_connection_precedence() -> None:
    """The argument wins, then the minion config, then the pillar, then the default."""
    opts = {"jailhouse": {"connection": "sim:///opts"}}
    pillar = {"jailhouse": {"connection": "sim:///pillar"}}
    assert _common.connection_uri(opts, pillar, "sim:///arg") == "sim:///arg"
    assert _common.connection_uri(opts, pillar) == "sim:///opts"
    assert _common.connection_uri({}, pillar) == "sim:///pillar"
    assert _common.connection_uri({}, MappingProxyType(pillar)) == "sim:///pillar"
    assert _common.connection_uri({"jailhouse:connection": "sim:///flat"}, None) == "sim:///flat"
    assert _common.connection_uri(None, None) == "jailhouse:///system"
    with pytest.raises(ValueError, match="must be a URI string"):
        _common.connection_uri({"jailhouse": {"connection": 5}}, None)


def test_availability(tmp_path: Path) -> None:
    """A sim URI always works; jailhouse:/// needs the device; other schemes never."""
    assert _common.availability("sim:///x") == (True, "")
    ok, reason = _common.availability("jailhouse:///system", tmp_path / "jailhouse")
    assert not ok
    assert "does not exist" in reason
    (tmp_path / "jailhouse").touch()
    assert _common.availability("jailhouse:///system", tmp_path / "jailhouse") == (True, "")
    assert not _common.availability("qemu:///system")[0]


def test_memory_refusals_name_the_field() -> None:
    """Bad sizes, unknown keys and a balloon are refused naming what is wrong."""
    assert _common.memory_kib(16) == 16 * 1024
    assert _common.memory_kib({"boot": "1GiB", "max": "1024m"}) == 1 << 20
    with pytest.raises(ValueError, match=r"mem = '16q'.*unknown unit"):
        _common.memory_kib("16q")
    with pytest.raises(ValueError, match="mem:hard_limit"):
        _common.memory_kib({"current": 16, "hard_limit": 32})
    with pytest.raises(ValueError, match="cannot balloon"):
        _common.memory_kib({"current": 16, "max": 32})
    with pytest.raises(TypeError, match="mem = True"):
        _common.memory_kib(True)  # noqa: FBT003 - the value under test


def test_domain_xml_translates_to_the_cell_asked_for() -> None:
    """The XML the states build becomes a cell with those pins and that memory."""
    system = example_system("arm64")
    xml = _common.domain_xml(
        "worker",
        arch="aarch64",
        cpu={"maximum": 2, "tuning": {"vcpupin": {0: "2", 1: 3}}},
        mem="16m",
        images=[{"path": "/srv/w.bin", "address": "0x1000"}],
    )
    result = domain_to_cell(xml, system)
    assert result.config.cpus == frozenset({2, 3})
    assert [(i.path, i.address) for i in result.boot.images] == [("/srv/w.bin", 0x1000)]
    assert sum(r.size for r in result.config.mem_regions if r.virt_start == 0) >= 16 << 20


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cpu": 0}, "at least one CPU"),
        ({"cpu": {"current": 1, "maximum": 2}}, "cannot hot-plug"),
        ({"cpu": {"model": "x"}}, "cpu:model"),
        ({"cpu": 1, "vcpupin": {0: "1-2"}}, "exactly one"),
        ({"cpu": 1, "cpuset": "3-1"}, "runs backwards"),
        ({"cpu": 1, "images": [{"path": "rel.bin"}]}, "absolute path"),
        ({"cpu": 1, "images": [{"path": "/a", "address": "zz"}]}, r"images\[0\]:address"),
    ],
)
def test_domain_xml_refusals(kwargs: dict[str, object], match: str) -> None:
    """Malformed tuning arguments fail before any XML exists, naming the argument."""
    with pytest.raises(ValueError, match=match):
        _common.domain_xml("w", arch="aarch64", mem=16, **kwargs)  # type: ignore[arg-type]
