"""The definitions store: round trips, atomic replacement, crash safety and the process lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from typing import TYPE_CHECKING

import pytest

from jailhouse.domxml import BootImage, BootSpec
from jailhouse.examples import example_cells, example_system
from jailhouse.store import Definition, DefinitionStore, LiveRecord, StoreError, write_atomically

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from pathlib import Path

UUID_A = "6695eb01-f6a4-8304-79aa-97f2502e193f"
UUID_B = "0a973ccf-087b-4968-b208-3cd0f738e034"


def definition(
    uuid: str = UUID_A, name: str = "arm64-demo", *, xml: str = "<domain/>"
) -> Definition:
    """A definition of the arm64 demo cell under another name."""
    config = example_cells("arm64")["arm64-demo"].replace(name=name)
    boot = BootSpec(images=(BootImage("/srv/inmate.bin", 0x0),))
    return Definition(uuid=uuid, xml=xml, config=config, boot=boot, notes=("a note",))


def test_definition_round_trip(tmp_path: Path) -> None:
    """A stored definition reads back equal, with the cell config's exact bytes."""
    store = DefinitionStore(tmp_path / "store")
    original = definition()
    store.put(original)
    again = store.get(UUID_A)
    assert again == original
    assert again is not None
    assert again.config.to_bytes() == original.config.to_bytes()
    assert store.find("arm64-demo") == original
    assert store.find("nonesuch") is None
    assert store.get(UUID_B) is None


def test_definitions_are_listed_by_name(tmp_path: Path) -> None:
    """definitions() returns every definition, sorted by name, whatever the UUIDs."""
    store = DefinitionStore(tmp_path)
    store.put(definition(UUID_A, "zeta"))
    store.put(definition(UUID_B, "alpha"))
    assert [d.name for d in store.definitions()] == ["alpha", "zeta"]


def test_put_replaces_and_remove_reports(tmp_path: Path) -> None:
    """put() replaces the definition of the same UUID; remove() tells whether one existed."""
    store = DefinitionStore(tmp_path)
    store.put(definition(xml="<domain>old</domain>"))
    store.put(definition(xml="<domain>new</domain>"))
    assert [d.xml for d in store.definitions()] == ["<domain>new</domain>"]
    assert store.remove(UUID_A) is True
    assert store.remove(UUID_A) is False
    assert store.definitions() == []


def test_live_record_round_trip(tmp_path: Path) -> None:
    """Live records keep the definition, the cell id (or None) and the last action."""
    store = DefinitionStore(tmp_path)
    running = LiveRecord(definition=definition(), cell_id=3, last_action="booted")
    gone = LiveRecord(definition=definition(UUID_B, "other"), cell_id=None, last_action="destroyed")
    store.put_live(running)
    store.put_live(gone)
    assert store.live_records() == [running, gone]
    assert store.get_live(UUID_A) == running
    assert store.remove_live(UUID_A) is True
    assert store.get_live(UUID_A) is None


def test_system_config_round_trip(tmp_path: Path) -> None:
    """The recorded system config reads back equal; without one, system() is None."""
    store = DefinitionStore(tmp_path)
    assert store.system() is None
    system = example_system("x86")
    store.set_system(system)
    assert store.system() == system


def test_readonly_store_refuses_changes_and_creates_nothing(tmp_path: Path) -> None:
    """A read-only store raises PermissionError on changes and never makes its directory."""
    root = tmp_path / "absent"
    store = DefinitionStore(root, readonly=True)
    assert store.definitions() == []
    with pytest.raises(PermissionError, match="read-only"):
        store.put(definition())
    with pytest.raises(PermissionError):
        store.set_system(example_system("x86"))
    assert not root.exists()


def test_malformed_file_names_itself(tmp_path: Path) -> None:
    """A definition file that is not JSON raises StoreError naming the file."""
    store = DefinitionStore(tmp_path)
    store.put(definition())
    path = tmp_path / "defined" / f"{UUID_A}.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError, match=str(path)):
        store.definitions()


def test_file_name_must_be_its_uuid(tmp_path: Path) -> None:
    """A definition copied under another UUID's file name is refused, not silently doubled."""
    store = DefinitionStore(tmp_path)
    store.put(definition())
    source = tmp_path / "defined" / f"{UUID_A}.json"
    (tmp_path / "defined" / f"{UUID_B}.json").write_bytes(source.read_bytes())
    with pytest.raises(StoreError, match="not the UUID it holds"):
        store.definitions()


def test_corrupt_config_is_reported(tmp_path: Path) -> None:
    """A definition whose cell config bytes do not parse names the file and the problem."""
    store = DefinitionStore(tmp_path)
    store.put(definition())
    path = tmp_path / "defined" / f"{UUID_A}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["config"] = "00" * 8
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StoreError, match="does not parse"):
        store.get(UUID_A)


def test_leftover_temporary_files_are_ignored_then_removed(tmp_path: Path) -> None:
    """A temporary file a killed writer left is never read and goes with the next change."""
    store = DefinitionStore(tmp_path)
    store.put(definition())
    leftover = tmp_path / "defined" / f".{UUID_B}.json.abc123.tmp"
    leftover.write_text("{truncat", encoding="utf-8")
    assert [d.uuid for d in store.definitions()] == [UUID_A]
    store.put(definition(UUID_B, "second"))
    assert not leftover.exists()


def test_failed_replace_keeps_the_old_file(tmp_path: Path) -> None:
    """When the rename fails, the target is unchanged and no temporary file is left."""
    target = tmp_path / "target"
    target.mkdir()
    (target / "inside").write_text("kept", encoding="utf-8")
    with pytest.raises(OSError, match="directory"):
        write_atomically(target, b"new contents")
    assert (target / "inside").read_text(encoding="utf-8") == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["target"]


def test_written_file_has_the_mode_asked_for(tmp_path: Path) -> None:
    """write_atomically sets the permission bits (mkstemp alone would give 0600)."""
    path = tmp_path / "f"
    write_atomically(path, b"x", mode=0o640)
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.read_bytes() == b"x"


def test_fingerprint_follows_changes(tmp_path: Path) -> None:
    """The fingerprint changes with every put and remove, and only then."""
    store = DefinitionStore(tmp_path)
    empty = store.fingerprint()
    store.put(definition())
    one = store.fingerprint()
    assert one != empty
    assert store.fingerprint() == one
    store.put_live(LiveRecord(definition=definition(), cell_id=1, last_action="booted"))
    assert store.fingerprint() != one
    store.remove_live(UUID_A)
    assert store.fingerprint() == one
    store.remove(UUID_A)
    assert store.fingerprint() == empty


def test_lock_is_reentrant(tmp_path: Path) -> None:
    """Nested locked() blocks and writes inside them do not deadlock the store object."""
    store = DefinitionStore(tmp_path)
    with store.locked(), store.locked():
        store.put(definition())
    assert store.get(UUID_A) is not None


# -- crash safety and processes ----------------------------------------------------------


def _write_forever(root: str, written: Synchronized[int]) -> None:
    """Replace one definition again and again with texts of varying size; never returns."""
    store = DefinitionStore(root)
    n = 0
    while True:
        size = (1 << 20) + (n * 1_037_129) % (2 << 20)  # 1 to 3 MiB: writes take a while
        store.put(definition(xml="<domain>" + "x" * size + "</domain>"))
        store.put_live(LiveRecord(definition=definition(), cell_id=n % 7, last_action="booted"))
        n += 1
        written.value = n


@pytest.mark.parametrize("delay_ms", [0, 3, 6, 9, 12, 15, 18, 24, 30, 40])
def test_sigkill_during_writes_leaves_every_file_whole(tmp_path: Path, delay_ms: int) -> None:
    """A writer killed with SIGKILL at any moment leaves only complete, parseable files.

    A write takes some 15 ms here, so the spread of kill points lands several kills in the
    middle of writing a temporary file (the test asserts the outcome, not where it hit).
    """
    ctx = multiprocessing.get_context("fork")
    written = ctx.Value("i", 0)
    writer = ctx.Process(target=_write_forever, args=(str(tmp_path), written))
    writer.start()
    try:
        while written.value < 2 and writer.is_alive():
            os.sched_yield()
        time.sleep(delay_ms / 1000)
    finally:
        os.kill(writer.pid or 0, signal.SIGKILL)
        writer.join()
    assert writer.exitcode == -signal.SIGKILL
    store = DefinitionStore(tmp_path)
    [only] = store.definitions()
    assert only.xml.startswith("<domain>x")
    assert only.xml.endswith("</domain>")
    [record] = store.live_records()
    assert record.last_action == "booted"
    store.put(definition(UUID_B, "after"))  # the next change sweeps temporary files
    assert not list((tmp_path / "defined").glob(".*.tmp"))


def _increment(root: str, times: int) -> None:
    """Read a counter kept in a definition's notes and write it back plus one, under the lock."""
    store = DefinitionStore(root)
    for _ in range(times):
        with store.locked():
            current = store.get(UUID_A)
            assert current is not None
            count = int(current.notes[0])
            store.put(
                Definition(
                    uuid=current.uuid,
                    xml=current.xml,
                    config=current.config,
                    boot=current.boot,
                    notes=(str(count + 1),),
                )
            )


def test_lock_serialises_processes(tmp_path: Path) -> None:
    """Four processes each adding 25 to a stored counter under the lock end at exactly 100."""
    store = DefinitionStore(tmp_path)
    base = definition()
    store.put(Definition(uuid=base.uuid, xml=base.xml, config=base.config, notes=("0",)))
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_increment, args=(str(tmp_path), 25)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    final = store.get(UUID_A)
    assert final is not None
    assert final.notes == ("100",)
