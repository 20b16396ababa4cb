"""``numatune`` for cells: keep a cell's CPUs and memory on the host NUMA nodes asked for.

The host's topology is read from its sysfs (``devices/system/node/nodeN/cpulist`` and
the ``memoryM`` blocks of each node, ``devices/system/memory/block_size_bytes`` long),
under the connection's sysfs root (``/sys``, or a simulated host's ``sys/``).  The CPUs
become a ``cpuset`` for the placement; the memory the placement chose is then checked
block by block.  What cannot be kept on the nodes (no topology published, a node that
does not exist, no free CPU there, RAM outside them) fails with the reason.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from jailhouse.config.model import MemFlag
from jailhouse.saltext._common import parse_cpus

if TYPE_CHECKING:
    from pathlib import Path

    from jailhouse.config.model import CellConfig, SystemConfig
    from jailhouse.virt import virConnect

__all__ = ["check_memory", "cpuset_for", "host_nodes", "wanted_nodes"]

_NODE_DIR: Final = "devices/system/node"
_BLOCK_SIZE: Final = "devices/system/memory/block_size_bytes"
_NODE: Final = re.compile(r"node([0-9]+)")
_BLOCK: Final = re.compile(r"memory([0-9]+)")


def host_nodes(sysfs_root: Path) -> dict[int, frozenset[int]]:
    """Return ``{node: CPUs}`` as the host's sysfs lists them (empty: no topology)."""
    nodes: dict[int, frozenset[int]] = {}
    base = sysfs_root / _NODE_DIR
    if not base.is_dir():
        return nodes
    for entry in base.iterdir():
        match = _NODE.fullmatch(entry.name)
        cpulist = entry / "cpulist"
        if match is None or not cpulist.is_file():
            continue
        text = cpulist.read_text(encoding="ascii").strip()
        nodes[int(match[1])] = frozenset(parse_cpus(text, str(cpulist))) if text else frozenset()
    return nodes


def wanted_nodes(numatune: object) -> tuple[list[int], str]:
    """Return the nodes and the mode of Salt's ``numatune`` argument.

    Raises:
        ValueError: Guest NUMA cells (``memnodes``), or no ``memory:nodeset``.
    """
    if not isinstance(numatune, dict) or set(numatune) - {"memory", "memnodes"}:
        raise ValueError(f"numatune = {numatune!r}: expected {{memory: {{mode, nodeset}}}}")
    if numatune.get("memnodes"):
        raise ValueError(
            "numatune:memnodes: a cell has no guest NUMA cells; give numatune:memory:nodeset"
        )
    memory = numatune.get("memory") or {}
    if not isinstance(memory, dict) or memory.get("nodeset") is None:
        raise ValueError("numatune:memory:nodeset is required: the host node(s) to stay on")
    mode = str(memory.get("mode", "strict"))
    if mode not in {"strict", "preferred", "interleave", "restrictive"}:
        raise ValueError(f"numatune:memory:mode = {mode!r}: expected strict or preferred")
    return parse_cpus(memory["nodeset"], "numatune:memory:nodeset"), mode


def cpuset_for(conn: virConnect, numatune: object, cpuset: object, system: SystemConfig) -> str:
    """Return the cpuset that keeps the cell's CPUs on the wanted nodes.

    Raises:
        ValueError: The host publishes no topology, a node does not exist, or the nodes
            have no CPU the root cell can give (within ``cpuset``, if given).
    """
    nodes_wanted, _ = wanted_nodes(numatune)
    root = conn.driver.hv.sysfs.root
    nodes = host_nodes(root)
    if not nodes:
        raise ValueError(
            f"numatune: the host publishes no NUMA topology ({root / _NODE_DIR}), so the "
            f"cell cannot be kept on node(s) {_show(nodes_wanted)}"
        )
    missing = [n for n in nodes_wanted if n not in nodes]
    if missing:
        raise ValueError(
            f"numatune:memory:nodeset: node {missing[0]} does not exist (the host has "
            f"{_show(sorted(nodes))})"
        )
    cpus = set().union(*(nodes[n] for n in nodes_wanted)) & system.root_cell.cpus
    if cpuset is not None:
        cpus &= set(parse_cpus(cpuset, "cpuset"))
    if not cpus:
        raise ValueError(
            f"numatune: node(s) {_show(nodes_wanted)} have no CPU the root cell can give"
            + (f" within cpuset {cpuset}" if cpuset is not None else "")
        )
    return ",".join(str(cpu) for cpu in sorted(cpus))


def check_memory(sysfs_root: Path, config: CellConfig, numatune: object) -> None:
    """Check that the cell's RAM lies in memory blocks of the wanted nodes.

    ``preferred`` accepts RAM elsewhere; the other modes do not.

    Raises:
        ValueError: A RAM region lies (partly) outside the nodes, or the host does not
            say which node its memory blocks belong to.
    """
    nodes_wanted, mode = wanted_nodes(numatune)
    if mode == "preferred":
        return
    size_file = sysfs_root / _BLOCK_SIZE
    if not size_file.is_file():
        raise ValueError(
            f"numatune: the host does not say where its memory is ({size_file} is missing), "
            f"so the cell's memory cannot be kept on node(s) {_show(nodes_wanted)}; "
            "mode 'preferred' keeps only the CPUs there"
        )
    block = int(size_file.read_text(encoding="ascii").strip(), 16)
    allowed: set[int] = set()
    for node in nodes_wanted:
        node_dir = sysfs_root / _NODE_DIR / f"node{node}"
        for entry in node_dir.iterdir() if node_dir.is_dir() else ():
            match = _BLOCK.fullmatch(entry.name)
            if match is not None:
                allowed.add(int(match[1]))
    for index, region in enumerate(config.mem_regions):
        if MemFlag.COMM_REGION in region.flags or region.size == 0:
            continue
        if not MemFlag.LOADABLE & region.flags and not MemFlag.DMA & region.flags:
            continue  # device memory (MMIO), not RAM
        first, last = region.phys_start // block, (region.phys_start + region.size - 1) // block
        outside = [b for b in range(first, last + 1) if b not in allowed]
        if outside:
            raise ValueError(
                f"numatune: mem_regions[{index}] (RAM at {region.phys_start:#x}, "
                f"{region.size:#x} bytes) lies in memory block {outside[0]}, which is not on "
                f"node(s) {_show(nodes_wanted)}"
            )


def _show(numbers: list[int]) -> str:
    return ",".join(str(n) for n in numbers)
