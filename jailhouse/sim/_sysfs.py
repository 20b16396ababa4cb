"""Render the simulated host's state as a real sysfs tree, and bring the disk in line.

The tree has the driver's files and text formats (ABI fact sheet §4) under
``sys/devices/jailhouse/`` and Linux's CPU lists under ``sys/devices/system/cpu/``, with
each CPU's topology (one socket, one thread per core) and one NUMA node of
:data:`SIM_MEMORY_KIB` under ``sys/devices/system/node/``.
:func:`render` turns a state into ``{path: Entry}``; :func:`apply` writes the
difference between two renderings.  Each file is replaced atomically (written beside it,
then renamed over it) and a new cell directory is built aside and renamed into
``cells/``, so a reader never sees half a file or a cell without its ``name``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from typing import TYPE_CHECKING, Final, NamedTuple

from jailhouse.config.flags import format_cpus
from jailhouse.sim._state import COUNTER_MASK, CellRecord, HostInfo, State, stat_names
from jailhouse.sysfs import CellState

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DRIVER_DIR",
    "SIM_MEMORY_KIB",
    "Entry",
    "Tree",
    "apply",
    "cpu_bitmap",
    "read_tree",
    "remove_strays",
    "render",
    "skeleton",
]

DRIVER_DIR: Final = "devices/jailhouse"
_CELLS: Final = f"{DRIVER_DIR}/cells/"
_CPU_DIR: Final = "devices/system/cpu"
_NODE_DIR: Final = "devices/system/node"
_CORE: Final = f"{DRIVER_DIR}/core"
_RO: Final = 0o444
_OWNED: Final = (DRIVER_DIR, _CPU_DIR, _NODE_DIR)
_KEEP_DIRS: Final = frozenset({DRIVER_DIR, f"{DRIVER_DIR}/cells", _CPU_DIR, _NODE_DIR})
SIM_MEMORY_KIB: Final = 1 << 20
"""RAM of the simulated host's single NUMA node (``node0/meminfo``): 1 GiB, half of it free."""


class Entry(NamedTuple):
    """One file of the tree.

    Attributes:
        data: Its bytes.
        mode: Its permission bits.
        size: For a sparse binary file (``core``): its size; ``data`` is then empty.
    """

    data: bytes
    mode: int = _RO
    size: int | None = None


Tree = dict[str, Entry]
"""Paths relative to the ``sys`` directory, mapped to their files."""


def cpu_bitmap(cpus: set[int] | frozenset[int], nbits: int) -> str:
    """Format a CPU set as the kernel's ``%*pb``: hex, 32-bit groups, comma-separated.

    The first group has as many digits as its bits need, the others eight, so a 4-CPU
    host writes ``f`` and a 64-CPU host ``00000000,0000000f``.
    """
    value = sum(1 << cpu for cpu in cpus if cpu < nbits)
    groups = max(1, (nbits + 31) // 32)
    top_bits = nbits - 32 * (groups - 1)
    parts = []
    for index in reversed(range(groups)):
        word = (value >> (32 * index)) & 0xFFFF_FFFF
        width = (top_bits + 3) // 4 if index == groups - 1 else 8
        parts.append(f"{word:0{width}x}")
    return ",".join(parts)


def _line(value: object) -> bytes:
    return f"{value}\n".encode()


def render(info: HostInfo, state: State) -> Tree:
    """Return the sysfs files for a state (ABI fact sheet §4).

    The ``console`` file is empty while disabled.  While enabled without the virtual
    console flag the driver fails its reads with EPERM, which a regular file cannot do:
    the simulator leaves it empty with mode 000 (so it fails for non-root readers).
    """
    tree: Tree = {}
    d = DRIVER_DIR
    tree[f"{d}/enabled"] = Entry(_line(int(state.enabled)))
    tree[f"{d}/uevent"] = Entry(b"", 0o644)
    enabled = state.enabled
    tree[f"{d}/mem_pool_size"] = Entry(_line(state.mem_pool_size if enabled else 0))
    tree[f"{d}/mem_pool_used"] = Entry(_line(state.mem_pool_used if enabled else 0))
    tree[f"{d}/remap_pool_size"] = Entry(_line(state.remap_pool_size if enabled else 0))
    tree[f"{d}/remap_pool_used"] = Entry(_line(state.remap_pool_base if enabled else 0))
    if not enabled:
        tree[f"{d}/console"] = Entry(b"")
    elif state.console_available:
        tree[f"{d}/console"] = Entry(state.ring.text())
    else:
        tree[f"{d}/console"] = Entry(b"", 0o000)
    if state.core_size is not None:
        tree[_CORE] = Entry(b"", 0o400, state.core_size)
    if info.cpus is not None:
        everything = format_cpus(set(range(info.cpus)))
        tree[f"{_CPU_DIR}/possible"] = Entry(_line(everything))
        tree[f"{_CPU_DIR}/present"] = Entry(_line(everything))
        tree[f"{_CPU_DIR}/online"] = Entry(_line(format_cpus(state.online)))
        _render_topology(tree, info.cpus, state.online)
    if enabled and info.cpus is not None and info.arch is not None:
        names = stat_names(info.arch)
        for cell in state.cells:
            _render_cell(tree, info.cpus, names, state, cell)
    return tree


def _render_topology(tree: Tree, cpus: int, online: set[int] | frozenset[int]) -> None:
    """Add each CPU's topology and the single NUMA node, as Linux lays them out."""
    everything = format_cpus(set(range(cpus)))
    for cpu in range(cpus):
        base = f"{_CPU_DIR}/cpu{cpu}"
        if cpu:  # Linux has no online switch for the boot CPU
            tree[f"{base}/online"] = Entry(_line(int(cpu in online)))
        tree[f"{base}/topology/physical_package_id"] = Entry(_line(0))
        tree[f"{base}/topology/die_id"] = Entry(_line(0))
        tree[f"{base}/topology/core_id"] = Entry(_line(cpu))
        tree[f"{base}/topology/thread_siblings_list"] = Entry(_line(cpu))
        tree[f"{base}/topology/core_siblings_list"] = Entry(_line(everything))
    tree[f"{_NODE_DIR}/possible"] = Entry(_line(0))
    tree[f"{_NODE_DIR}/online"] = Entry(_line(0))
    tree[f"{_NODE_DIR}/node0/cpulist"] = Entry(_line(everything))
    tree[f"{_NODE_DIR}/node0/meminfo"] = Entry(
        f"Node 0 MemTotal:       {SIM_MEMORY_KIB} kB\n"
        f"Node 0 MemFree:        {SIM_MEMORY_KIB // 2} kB\n".encode()
    )


def _render_cell(
    tree: Tree, nbits: int, names: tuple[str, ...], state: State, cell: CellRecord
) -> None:
    base = f"{_CELLS}{cell.id}"
    tree[f"{base}/name"] = Entry(cell.name + b"\n")
    tree[f"{base}/state"] = Entry(_line(CellState(cell.state).text))
    tree[f"{base}/cpus_assigned"] = Entry(_line(cpu_bitmap(cell.cpus, nbits)))
    tree[f"{base}/cpus_assigned_list"] = Entry(_line(format_cpus(cell.cpus)))
    tree[f"{base}/cpus_failed"] = Entry(_line(cpu_bitmap(cell.failed, nbits)))
    tree[f"{base}/cpus_failed_list"] = Entry(_line(format_cpus(cell.failed)))
    sums = [0] * len(names)
    for cpu in sorted(cell.cpus):
        row = state.cpu_stats.get(cpu, [0] * len(names))
        for index, name in enumerate(names):
            value = row[index] & COUNTER_MASK
            sums[index] += value
            tree[f"{base}/statistics/cpu{cpu}/vmexits_{name}"] = Entry(_line(value))
    for index, name in enumerate(names):
        tree[f"{base}/statistics/vmexits_{name}"] = Entry(_line(sums[index]))


def _cell_of(path: str) -> str | None:
    if not path.startswith(_CELLS):
        return None
    return path[len(_CELLS) :].split("/", 1)[0]


def _write(path: Path, entry: Entry) -> None:
    """Replace one file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a crash's leftover may be read-only
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        if entry.size is not None:
            os.ftruncate(fd, entry.size)
        else:
            os.write(fd, entry.data)
        os.fchmod(fd, entry.mode)
    finally:
        os.close(fd)
    tmp.replace(path)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def apply(sys_root: Path, scratch: Path, old: Tree, new: Tree) -> None:
    """Change the tree on disk from ``old`` to ``new``, touching only what differs.

    Args:
        sys_root: The ``sys`` directory.
        scratch: A directory on the same file system for building and discarding cell
            directories.
        old: What the disk holds now.
        new: What it should hold.
    """
    old_cells = {c for c in map(_cell_of, old) if c is not None}
    new_cells = {c for c in map(_cell_of, new) if c is not None}
    added = new_cells - old_cells
    removed = old_cells - new_cells
    for path, entry in new.items():
        if _cell_of(path) not in added and old.get(path) != entry:
            _write(sys_root / path, entry)
    new_dirs = {parent for path in new for parent in _parents(path)} | _KEEP_DIRS
    emptied: set[str] = set()
    for path in old:
        if path not in new and _cell_of(path) not in removed:
            with contextlib.suppress(FileNotFoundError):
                (sys_root / path).unlink()
            emptied.update(p for p in _parents(path) if p not in new_dirs)
    for directory in sorted(emptied, key=len, reverse=True):
        with contextlib.suppress(OSError):  # not empty (a stray file): leave it
            (sys_root / directory).rmdir()
    for cell in sorted(removed):
        _discard(sys_root / f"{_CELLS}{cell}", scratch)
    for cell in sorted(added):
        stage = scratch / f"cell-{cell}-{_unique()}"
        prefix = f"{_CELLS}{cell}/"
        for path, entry in new.items():
            if path.startswith(prefix):
                _write(stage / path[len(prefix) :], entry)
        target = sys_root / f"{_CELLS}{cell}"
        if target.exists():
            _discard(target, scratch)
        target.parent.mkdir(parents=True, exist_ok=True)
        stage.rename(target)


def _discard(directory: Path, scratch: Path) -> None:
    """Move a directory out of the tree in one rename, then delete it."""
    scratch.mkdir(parents=True, exist_ok=True)
    trash = scratch / f"trash-{_unique()}"
    try:
        directory.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _unique() -> str:
    """Return 32 random hex digits for a scratch name (uuid4's length, without uuid's import)."""
    return os.urandom(16).hex()


def read_tree(sys_root: Path) -> Tree:
    """Read the files the simulator owns from disk, for :func:`apply` to repair them.

    Regular files only: symlinks and anything else are left out, as is a file that
    vanishes while the tree is read.
    """
    tree: Tree = {}
    root = os.fspath(sys_root)
    for owned in _OWNED:
        for dirpath, _dirs, files in os.walk(f"{root}/{owned}"):
            rel_dir = os.path.relpath(dirpath, root)
            for name in files:
                full = f"{dirpath}/{name}"
                try:
                    info = os.lstat(full)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                rel = f"{rel_dir}/{name}"
                mode = info.st_mode & 0o777
                if rel == _CORE:
                    tree[rel] = Entry(b"", mode, info.st_size)
                    continue
                try:
                    with open(full, "rb") as f:  # noqa: PTH123 - string paths, no Path per file
                        tree[rel] = Entry(f.read(), mode)
                except PermissionError:  # a mode-000 console, not running as root
                    tree[rel] = Entry(b"\0unreadable", mode)  # differs from any rendering
    return tree


def remove_strays(sys_root: Path, scratch: Path, tree: Tree) -> None:
    """Remove directories under ``cells/`` that ``tree`` does not have (a crash's leftovers)."""
    cells = sys_root / _CELLS
    wanted = {c for c in map(_cell_of, tree) if c is not None}
    if cells.is_dir():
        for entry in cells.iterdir():
            if entry.name not in wanted:
                if entry.is_dir() and not entry.is_symlink():
                    _discard(entry, scratch)
                else:
                    entry.unlink()


def skeleton(sys_root: Path) -> None:
    """Create what exists while the driver module is loaded, whatever the state."""
    (sys_root / _CELLS).mkdir(parents=True, exist_ok=True)
    (sys_root / _CPU_DIR).mkdir(parents=True, exist_ok=True)
    (sys_root / _NODE_DIR).mkdir(parents=True, exist_ok=True)
    (sys_root / "module/jailhouse").mkdir(parents=True, exist_ok=True)
    link = sys_root / DRIVER_DIR / "module"
    if not link.is_symlink():
        link.symlink_to("../../module/jailhouse")
