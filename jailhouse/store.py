"""Persistent domain definitions: a directory of small files, each replaced atomically.

A :class:`DefinitionStore` keeps what libvirt calls *defined* domains for one connection:
for each, the domain XML it was defined from, the cell config the translator made of it
(byte-exact), the boot spec and its UUID.  It also keeps what a running cell was created
from (*live records*), which may differ from the definition once that is updated.

Layout::

    ROOT/.lock               flock()ed by every change, so processes take turns
    ROOT/system.cell         the system config the definitions are placed on (optional)
    ROOT/defined/UUID.json   one definition each
    ROOT/live/UUID.json      one live record each

Every file is written to a temporary file in the same directory, flushed with
``fsync``, renamed over the old one with :func:`os.replace` and the directory is synced,
so a reader, or a process killed at any instant, sees either the old file or the new
one, never a truncated one.  Temporary files a killed writer left behind start with a
dot, are never read, and are removed by the next change.

The store does not interpret the domain XML; :mod:`jailhouse.virt` does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jailhouse.config.codec import parse_cell, parse_system
from jailhouse.domxml import BootImage, BootSpec
from jailhouse.errors import ConfigError, JailhouseError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jailhouse.config.model import CellConfig, SystemConfig

__all__ = [
    "Definition",
    "DefinitionStore",
    "LiveRecord",
    "StoreError",
    "write_atomically",
]

FORMAT: Final = "python-jailhouse domain"
"""The ``format`` field of every definition and live record file."""
VERSION: Final = 1
"""The file format's version."""
_DEFINED: Final = "defined"
_LIVE: Final = "live"
_SYSTEM: Final = "system.cell"
_LOCK: Final = ".lock"
_UUID_CHARS: Final = frozenset("0123456789abcdef-")


class StoreError(JailhouseError, ValueError):
    """A store file that cannot be read as what it should hold.

    Attributes:
        path: The file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        """Record the file and the reason."""
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Definition:
    """A domain as defined: its XML, the cell config made of it, and its identity.

    Attributes:
        uuid: The domain's UUID, lower-case with dashes; stable for the definition's life.
        xml: The domain XML as it was given (it may lack the ``<uuid>``).
        config: The cell config the XML translated to.
        boot: What to load into the cell when it starts.
        domain_type: The ``type`` attribute of the XML's ``<domain>``.
        notes: What the translator ignored or approximated, one sentence each.
    """

    uuid: str
    xml: str
    config: CellConfig
    boot: BootSpec = field(default_factory=BootSpec)
    domain_type: str = "jailhouse"
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The domain's (and cell's) name."""
        return self.config.name

    def same_cell(self, other: Definition) -> bool:
        """Tell whether two definitions make the same cell and boot it the same way."""
        return self.config.to_bytes() == other.config.to_bytes() and self.boot == other.boot

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored in a file."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "uuid": self.uuid,
            "name": self.name,
            "domain_type": self.domain_type,
            "config": self.config.to_bytes().hex(),
            "boot": _boot_to_json(self.boot),
            "notes": list(self.notes),
            "xml": self.xml,
        }

    @classmethod
    def from_json(cls, data: Any, where: str | os.PathLike[str]) -> Definition:  # noqa: ANN401 - parsed JSON
        """Rebuild a definition from its JSON form.

        Raises:
            StoreError: The data is not a definition of this format version.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StoreError(where, f"not a {FORMAT} file")
        if data.get("version") != VERSION:
            raise StoreError(where, f"format version {data.get('version')!r}; this reads {VERSION}")
        try:
            config = parse_cell(bytes.fromhex(data["config"]))
            definition = cls(
                uuid=_check_uuid(data["uuid"], where),
                xml=str(data["xml"]),
                config=config,
                boot=_boot_from_json(data["boot"]),
                domain_type=str(data["domain_type"]),
                notes=tuple(str(n) for n in data["notes"]),
            )
        except ConfigError as exc:
            raise StoreError(where, f"the stored cell config does not parse: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(where, f"malformed field: {exc!r}") from exc
        if data.get("name") != definition.name:
            raise StoreError(
                where, f"name {data.get('name')!r} differs from the config's {definition.name!r}"
            )
        return definition


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveRecord:
    """What the facade knows of a domain's cell beyond sysfs.

    Attributes:
        definition: The definition the cell was created from (for a transient domain,
            its only one).
        cell_id: The cell's id when it was created; ``None`` once the cell is gone (the
            record then only remembers :attr:`last_action` of a persistent domain).
        last_action: The last lifecycle action on the domain: ``"booted"``, ``"paused"``
            (created without starting), ``"resumed"``, ``"shutdown"``, ``"destroyed"``.
    """

    definition: Definition
    cell_id: int | None
    last_action: str

    @property
    def uuid(self) -> str:
        """The domain's UUID."""
        return self.definition.uuid

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored in a file."""
        return {
            **self.definition.to_json(),
            "cell_id": self.cell_id,
            "last_action": self.last_action,
        }

    @classmethod
    def from_json(cls, data: Any, where: str | os.PathLike[str]) -> LiveRecord:  # noqa: ANN401 - parsed JSON
        """Rebuild a live record from its JSON form.

        Raises:
            StoreError: The data is not a live record of this format version.
        """
        definition = Definition.from_json(data, where)
        cell_id = data.get("cell_id")
        if cell_id is not None and (not isinstance(cell_id, int) or cell_id < 0):
            raise StoreError(where, f"cell_id {cell_id!r} is not a cell id")
        return cls(
            definition=definition, cell_id=cell_id, last_action=str(data.get("last_action", ""))
        )


class DefinitionStore:
    """The definitions and live records of one connection, in one directory.

    Reads take no lock: every file is replaced whole, so a reader sees a complete old or
    new version.  Changes take an exclusive ``flock`` on ``ROOT/.lock``; :meth:`locked`
    holds it across a read-decide-write sequence.  The lock is re-entrant within the
    store object (across its threads too), so the facade can hold it around a whole
    lifecycle operation while the store's own writes take it again.

    Args:
        root: The directory; created (with its parents) on the first change.
        readonly: Refuse every change (the directory is never created).

    Attributes:
        root: The directory.
        readonly: Whether changes are refused.
    """

    def __init__(self, root: str | os.PathLike[str], *, readonly: bool = False) -> None:
        """Remember the directory; nothing is read or created yet."""
        self.root = Path(root)
        self.readonly = readonly
        self._mutex = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __repr__(self) -> str:
        """Name the directory."""
        return f"DefinitionStore({str(self.root)!r})"

    # -- locking ------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive lock for the duration of the block.

        On first taking it, temporary files a killed writer left behind are removed.

        Raises:
            PermissionError: The store is read-only.
            OSError: The directory cannot be created or the lock file opened.
        """
        self._check_writable()
        with self._mutex:
            if self._depth == 0:
                for sub in (self.root, self.root / _DEFINED, self.root / _LIVE):
                    sub.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
                self._remove_leftovers()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    os.close(self._fd)  # closing the descriptor releases the flock
                    self._fd = None

    def _check_writable(self) -> None:
        if self.readonly:
            raise PermissionError(f"{self.root}: the definitions store is opened read-only")

    def _remove_leftovers(self) -> None:
        for sub in (self.root, self.root / _DEFINED, self.root / _LIVE):
            for leftover in sub.glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    # -- definitions ----------------------------------------------------------------------

    def definitions(self) -> list[Definition]:
        """Read every definition, by name.

        Raises:
            StoreError: A definition file is malformed (it names the file).
        """
        out = [
            Definition.from_json(data, path) for path, data in self._read_dir(self.root / _DEFINED)
        ]
        return sorted(out, key=lambda d: d.name)

    def get(self, uuid: str) -> Definition | None:
        """Read the definition with this UUID, or ``None``.

        Raises:
            StoreError: Its file is malformed.
        """
        path = self._path(_DEFINED, uuid)
        data = _read_json(path)
        return None if data is None else Definition.from_json(data, path)

    def find(self, name: str) -> Definition | None:
        """Return the definition of this name, or ``None``.

        Raises:
            StoreError: A definition file is malformed.
        """
        return next((d for d in self.definitions() if d.name == name), None)

    def put(self, definition: Definition) -> None:
        """Write a definition, replacing the one with the same UUID.

        Raises:
            PermissionError: The store is read-only.
            OSError: Writing failed (the old file, if any, is intact).
        """
        with self.locked():
            write_atomically(self._path(_DEFINED, definition.uuid), _dump(definition.to_json()))

    def remove(self, uuid: str) -> bool:
        """Remove a definition; tell whether there was one.

        Raises:
            PermissionError: The store is read-only.
        """
        with self.locked():
            return _unlink(self._path(_DEFINED, uuid))

    # -- live records ---------------------------------------------------------------------

    def live_records(self) -> list[LiveRecord]:
        """Read every live record, by name.

        Raises:
            StoreError: A record file is malformed.
        """
        out = [LiveRecord.from_json(data, path) for path, data in self._read_dir(self.root / _LIVE)]
        return sorted(out, key=lambda r: r.definition.name)

    def get_live(self, uuid: str) -> LiveRecord | None:
        """Read the live record of this UUID, or ``None``.

        Raises:
            StoreError: Its file is malformed.
        """
        path = self._path(_LIVE, uuid)
        data = _read_json(path)
        return None if data is None else LiveRecord.from_json(data, path)

    def put_live(self, record: LiveRecord) -> None:
        """Write a live record, replacing the one with the same UUID.

        Raises:
            PermissionError: The store is read-only.
            OSError: Writing failed (the old file, if any, is intact).
        """
        with self.locked():
            write_atomically(self._path(_LIVE, record.uuid), _dump(record.to_json()))

    def remove_live(self, uuid: str) -> bool:
        """Remove a live record; tell whether there was one.

        Raises:
            PermissionError: The store is read-only.
        """
        with self.locked():
            return _unlink(self._path(_LIVE, uuid))

    # -- the system config ----------------------------------------------------------------

    @property
    def system_path(self) -> Path:
        """Where the system config is kept: ``ROOT/system.cell``."""
        return self.root / _SYSTEM

    def system(self) -> SystemConfig | None:
        """Read the recorded system config, or ``None`` if none is recorded.

        Raises:
            StoreError: The file is not a system config.
        """
        try:
            data = self.system_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return parse_system(data)
        except ConfigError as exc:
            raise StoreError(self.system_path, f"not a system config: {exc}") from exc

    def set_system(self, system: SystemConfig) -> None:
        """Record the system config the definitions are placed on.

        Raises:
            PermissionError: The store is read-only.
            OSError: Writing failed.
        """
        with self.locked():
            write_atomically(self.system_path, system.to_bytes())

    # -- whole-store views ----------------------------------------------------------------

    def fingerprint(self) -> str:
        """Return a digest of every definition and live record file's bytes.

        Two equal fingerprints mean nothing was defined, changed, undefined, started or
        stopped through the store in between.
        """
        digest = hashlib.sha256()
        for sub in (_DEFINED, _LIVE):
            for path in _record_paths(self.root / sub):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                digest.update(f"{sub}/{path.name}\0{len(data)}\0".encode())
                digest.update(data)
        return digest.hexdigest()

    # -- plumbing -------------------------------------------------------------------------

    def _path(self, sub: str, uuid: str) -> Path:
        return self.root / sub / f"{_check_uuid(uuid, self.root / sub)}.json"

    @staticmethod
    def _read_dir(directory: Path) -> list[tuple[Path, Any]]:
        out: list[tuple[Path, Any]] = []
        for path in _record_paths(directory):
            data = _read_json(path)
            if data is None:  # removed since the listing
                continue
            if isinstance(data, dict) and data.get("uuid") != path.stem:
                raise StoreError(path, "the file name is not the UUID it holds")
            out.append((path, data))
        return out


def write_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace a file's contents so that it is never seen (or left) half-written.

    The bytes go to a temporary file in the same directory (a dot-name ending in
    ``.tmp``), which is flushed to disk, renamed over ``path`` and followed by a sync of
    the directory, so the rename itself survives a crash.

    Args:
        path: The file.
        data: Its new contents.
        mode: Its permission bits.

    Raises:
        OSError: Writing failed; ``path`` is unchanged and the temporary file is gone.
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _sync_dir(target.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _sync_dir(path.parent)
    return True


def _record_paths(directory: Path) -> list[Path]:
    """List a directory's record files by name; a missing directory has none."""
    try:
        return sorted(p for p in directory.iterdir() if _is_record(p.name))
    except FileNotFoundError:
        return []


def _is_record(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def _read_json(path: Path) -> Any:  # noqa: ANN401 - parsed JSON
    """Read a JSON file; ``None`` when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise StoreError(path, f"not UTF-8 text: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(path, f"not JSON: {exc}") from exc


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=False) + "\n").encode("utf-8")


def _check_uuid(uuid: object, where: str | os.PathLike[str]) -> str:
    text = str(uuid)
    if len(text) != 36 or not set(text) <= _UUID_CHARS or text.count("-") != 4:
        raise StoreError(where, f"{text!r} is not a lower-case UUID with dashes")
    return text


def _boot_to_json(boot: BootSpec) -> dict[str, Any]:
    return {
        "images": [{"path": image.path, "address": image.address} for image in boot.images],
        "kernel": boot.kernel,
        "initrd": boot.initrd,
        "cmdline": boot.cmdline,
        "dtb": boot.dtb,
    }


def _boot_from_json(data: Any) -> BootSpec:  # noqa: ANN401 - parsed JSON
    return BootSpec(
        images=tuple(BootImage(str(i["path"]), int(i["address"])) for i in data["images"]),
        kernel=_opt_str(data["kernel"]),
        initrd=_opt_str(data["initrd"]),
        cmdline=_opt_str(data["cmdline"]),
        dtb=_opt_str(data["dtb"]),
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
