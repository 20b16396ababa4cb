"""Declarative apply: make the defined and running domains match a set of domain XMLs.

The idea of Salt's ``virt.defined``/``virt.running``, for cells: given the domain XMLs
that should exist, :func:`plan` compares them with what a connection has defined and
running and lists the actions that would close the gap; :func:`apply` performs exactly
those actions, and :func:`reconcile` does both under one lock.

- A described domain that is not defined is **defined**; one whose XML differs from its
  definition is **updated** (the XMLs are compared without whitespace, comments and the
  ``<uuid>``, which the file may leave out).
- With the desired state ``running`` (the default) a domain without a running cell is
  **started**; with ``stopped`` a running one is **stopped** (its cell destroyed);
  ``defined`` leaves cells alone.
- A running cell whose definition now makes a different cell (CPUs, memory, devices...)
  keeps running its old config: Jailhouse cannot change a cell in place.  The plan says
  so, naming the changes; with ``recreate`` it stops and starts the cell instead.
- Defined domains that no file describes are kept and named, unless ``prune`` stops and
  undefines them.  Cells without a definition (made by other tools) are left alone.

Actions run in a fixed order, releasing before taking: stops, undefines, defines and
updates, starts.  If one fails or the job is cancelled, everything this run did is undone
in reverse order (definitions restored, started cells destroyed, stopped cells started
again) before the error is raised.  A plan is bound to the state it was made from: if
another process changes a definition or a cell in between, :func:`apply` refuses it.

A second run with nothing changed finds nothing to do, and says so.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import hashlib
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lxml import etree

from jailhouse.config.model import format_cpus
from jailhouse.domxml import memory_kib, parse_document
from jailhouse.errors import JailhouseError, TranslationError
from jailhouse.jobs import Job
from jailhouse.virt import _constants as c
from jailhouse.virt._api import _call
from jailhouse.virt._driver import DomainView, boot_images, foreign_uuid
from jailhouse.virt._errors import from_exception, libvirtError, make_error

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Sequence

    from jailhouse.store import Definition, LiveRecord
    from jailhouse.virt._api import virConnect
    from jailhouse.virt._driver import Driver

__all__ = [
    "Action",
    "ActionKind",
    "ApplyResult",
    "Change",
    "DesiredDomain",
    "DesiredState",
    "Plan",
    "apply",
    "load_desired",
    "plan",
    "reconcile",
]

_ORDER: Final = ("stop", "undefine", "define", "update", "start")


class DesiredState(enum.StrEnum):
    """What the described domains should be."""

    RUNNING = "running"
    """Defined, with a running cell."""
    DEFINED = "defined"
    """Defined; cells are neither started nor stopped."""
    STOPPED = "stopped"
    """Defined, without a cell."""


class ActionKind(enum.StrEnum):
    """One kind of step of a plan."""

    STOP = "stop"
    """Destroy the domain's cell (its CPUs and memory return to the root cell)."""
    UNDEFINE = "undefine"
    """Remove a definition no file describes (``prune``)."""
    DEFINE = "define"
    """Store the definition of a domain that has none."""
    UPDATE = "update"
    """Replace a definition whose XML changed."""
    START = "start"
    """Boot the domain: create, load and start its cell."""

    @property
    def sign(self) -> str:
        """The character the plan's text puts before the action."""
        return {"stop": "<", "undefine": "-", "define": "+", "update": "~", "start": ">"}[
            self.value
        ]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a definition's cell and the one it would become.

    Attributes:
        field: What differs, such as ``cpus`` or ``memory``.
        old: The current value, as text.
        new: The new value, as text.
        recreate: Whether a running cell must be created again for it to take effect
            (everything of the cell config; not the boot images).
    """

    field: str
    old: str
    new: str
    recreate: bool = True

    def __str__(self) -> str:
        """Render as ``cpus: 3 -> 2-3``."""
        return f"{self.field}: {self.old} -> {self.new}"


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a plan.

    Attributes:
        kind: What it does.
        name: The domain.
        uuid: Its UUID (a new domain's is chosen when the plan is made).
        reason: Why, in a few words.
        changes: For an update, what changes in the cell.
        diff: For an update, a unified diff of the definition's XML.
    """

    kind: ActionKind
    name: str
    uuid: str
    reason: str
    changes: tuple[Change, ...] = ()
    diff: str = ""

    def __str__(self) -> str:
        """Render as ``+ define demo (new)``."""
        return f"{self.kind.sign} {self.kind.value} {self.name} ({self.reason})"

    def to_json(self) -> dict[str, Any]:
        """Return the action as a JSON-ready dict."""
        return {
            "action": self.kind.value,
            "name": self.name,
            "uuid": self.uuid,
            "reason": self.reason,
            "changes": [
                {"field": ch.field, "old": ch.old, "new": ch.new, "recreate": ch.recreate}
                for ch in self.changes
            ],
            "diff": self.diff,
        }


@dataclass(frozen=True, slots=True)
class DesiredDomain:
    """A domain XML that should be defined.

    Attributes:
        xml: The domain XML.
        origin: Where it came from (a file name), for messages.
    """

    xml: str
    origin: str = "<xml>"


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`apply` would do, and what it leaves alone.

    Attributes:
        actions: The steps, in the order they run.
        unchanged: Described domains that are already as described.
        notices: Things the plan does not act on, one sentence each.
        state: The desired state.
        uri: The connection the plan was made for.
        token: A digest of the definitions and cells the plan was made from.
        definitions: The definitions to write, by UUID (for defines and updates).
    """

    actions: tuple[Action, ...]
    unchanged: tuple[str, ...]
    notices: tuple[str, ...]
    state: DesiredState
    uri: str
    token: str
    definitions: dict[str, Definition] = field(default_factory=dict, compare=False)

    @property
    def empty(self) -> bool:
        """Whether there is nothing to do."""
        return not self.actions

    def summary(self) -> str:
        """Count the actions: ``3 actions: 1 define, 2 start; 1 unchanged``."""
        unchanged = f"{len(self.unchanged)} unchanged"
        if self.empty:
            return f"nothing to do ({unchanged})"
        counts = [
            f"{sum(1 for a in self.actions if a.kind == kind)} {kind}"
            for kind in _ORDER
            if any(a.kind == kind for a in self.actions)
        ]
        noun = "action" if len(self.actions) == 1 else "actions"
        return f"{len(self.actions)} {noun}: {', '.join(counts)}; {unchanged}"

    def render(self) -> str:
        """Render the plan as text: a line per action, update diffs indented, then notes."""
        lines = [f"plan for {self.uri} (desired state: {self.state.value})"]
        for action in self.actions:
            lines.append(str(action))
            lines.extend(f"    {change}" for change in action.changes)
            lines.extend(f"    {line}" for line in action.diff.splitlines())
        if self.unchanged:
            lines.append(f"= unchanged: {', '.join(self.unchanged)}")
        lines.extend(f"! {notice}" for notice in self.notices)
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """Return the plan as a JSON-ready dict."""
        return {
            "uri": self.uri,
            "state": self.state.value,
            "actions": [a.to_json() for a in self.actions],
            "unchanged": list(self.unchanged),
            "notices": list(self.notices),
            "empty": self.empty,
            "summary": self.summary(),
        }


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :func:`apply` did.

    Attributes:
        plan: The plan it followed.
        performed: The actions it performed: all of the plan's.
    """

    plan: Plan
    performed: tuple[Action, ...]

    def __str__(self) -> str:
        """Summarise: ``applied 3 actions ...`` or ``nothing to do ...``."""
        if self.plan.empty:
            return self.plan.summary()
        return f"applied {self.plan.summary()}"

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return {
            **self.plan.to_json(),
            "applied": True,
            "performed": [a.to_json() for a in self.performed],
        }


# -- reading the desired domains ----------------------------------------------------------


def load_desired(paths: Iterable[str | os.PathLike[str]]) -> list[DesiredDomain]:
    """Read domain XMLs from files, and from every ``*.xml`` file of directories.

    Directories are read one level deep, files in name order.

    Raises:
        libvirtError: ``VIR_ERR_SYSTEM_ERROR`` when a path cannot be read,
            ``VIR_ERR_INVALID_ARG`` for a directory without XML files.
    """
    out: list[DesiredDomain] = []
    for item in paths:
        path = Path(item)
        try:
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix == ".xml" and p.is_file())
                if not files:
                    raise make_error(
                        c.VIR_ERR_INVALID_ARG,
                        f"{path}: the directory holds no .xml file",
                        domain=c.VIR_FROM_NONE,
                    )
            else:
                files = [path]
            out.extend(DesiredDomain(f.read_text(encoding="utf-8"), str(f)) for f in files)
        except OSError as exc:
            raise from_exception(exc) from exc
        except UnicodeDecodeError as exc:
            raise make_error(
                c.VIR_ERR_XML_ERROR, f"{path}: not UTF-8 text: {exc}", domain=c.VIR_FROM_XML
            ) from exc
    return out


# -- planning -----------------------------------------------------------------------------


@dataclass
class _Target:
    desired: DesiredDomain
    name: str
    uuid: str
    existing: DomainView | None
    definition: Definition | None = None  # None: the existing definition stays


def plan(
    conn: virConnect,
    desired: Iterable[DesiredDomain | str | os.PathLike[str]],
    *,
    state: DesiredState | str = DesiredState.RUNNING,
    prune: bool = False,
    recreate: bool = False,
) -> Plan:
    """Compare desired domains with the connection's and list what to do; change nothing.

    Args:
        conn: A connection from :func:`jailhouse.virt.open`.
        desired: The domains, as :class:`DesiredDomain` or paths (files or directories).
        state: What the described domains should be.
        prune: Stop and undefine defined domains no file describes.
        recreate: Stop and start running cells whose definition changed.

    Returns:
        The plan; :meth:`Plan.render` shows it, :func:`apply` performs it.

    Raises:
        libvirtError: A file cannot be read or translated (the message names it), two
            files describe the same domain, a file's UUID contradicts the definition's.
    """
    driver = conn.driver
    wanted = DesiredState(state)
    items = _desired_list(desired)
    with _locked_for_reading(driver):
        return _call(lambda: _plan(driver, items, wanted, prune=prune, recreate=recreate))


def _desired_list(
    desired: Iterable[DesiredDomain | str | os.PathLike[str]],
) -> list[DesiredDomain]:
    items: list[DesiredDomain] = []
    paths: list[str | os.PathLike[str]] = []
    for item in desired:
        if isinstance(item, DesiredDomain):
            items.append(item)
        else:
            paths.append(item)
    return items + load_desired(paths)


def _locked_for_reading(driver: Driver) -> contextlib.AbstractContextManager[None]:
    """Hold the store lock when the connection may write; a read-only one plans without it."""
    return contextlib.nullcontext() if driver.readonly else driver.store.locked()


def _plan(
    driver: Driver,
    items: Sequence[DesiredDomain],
    state: DesiredState,
    *,
    prune: bool,
    recreate: bool,
) -> Plan:
    # The token is taken before the views are read: a cell changed from outside the
    # store (jhctl cell create ...) while the plan is made then fails the token check
    # at apply time instead of slipping past a plan built from the older views.
    token = _token(driver)
    views = driver.domains()
    targets = _targets(driver, items, views)
    described = {t.name for t in targets}
    extras = [v for v in views if v.persistent is not None and v.name not in described]
    notices: list[str] = []
    actions: list[Action] = []

    # Placement: the definitions that stay, then the new ones in name order.
    pruned = {v.uuid for v in extras} if prune else set()
    placed: list[DomainView] = [
        v for v in views if v.name not in described and v.uuid not in pruned
    ]
    changing: list[_Target] = []
    unchanged: list[str] = []
    for target in targets:
        current = target.existing.persistent if target.existing is not None else None
        if current is not None and _same_source(current.xml, target.desired.xml):
            placed.append(target.existing)  # type: ignore[arg-type]
            unchanged.append(target.name)
        else:
            changing.append(target)
    # Running cells of described domains keep their CPUs and memory until re-created.
    holders = {
        t.uuid: DomainView(t.uuid, t.name, None, t.existing.live, None, t.existing.cell)
        for t in changing
        if t.existing is not None and t.existing.live is not None
    }
    for target in changing:
        others = placed + [h for uuid, h in holders.items() if uuid != target.uuid]
        try:
            target.definition = driver.translate(
                target.desired.xml, uuid=target.uuid, others=others
            )
        except (TranslationError, libvirtError) as exc:
            exc.add_note(f"in {target.desired.origin}")
            raise
        placed.append(DomainView(target.uuid, target.name, target.definition, None, None, None))

    definitions: dict[str, Definition] = {}
    for target in targets:
        existing = target.existing
        old = existing.persistent if existing is not None else None
        new = target.definition
        if new is not None:
            definitions[target.uuid] = new
            if old is None:
                actions.append(_define_action(target, new))
            else:
                actions.append(_update_action(target, old, new))
        final = new or old
        assert final is not None  # noqa: S101 - a described domain ends with a definition
        actions.extend(_runtime_actions(target, final, state, recreate, notices))
    unchanged = [n for n in unchanged if not any(a.name == n for a in actions)]

    for view in extras:
        if not prune:
            notices.append(
                f"'{view.name}' is defined but no file describes it; kept (prune undefines it)"
            )
            continue
        if view.active:
            actions.append(Action(ActionKind.STOP, view.name, view.uuid, "pruned"))
        actions.append(Action(ActionKind.UNDEFINE, view.name, view.uuid, "no file describes it"))
    notices.extend(
        f"cell '{v.name}' has no definition (made by another tool); left alone"
        for v in views
        if v.persistent is None and v.name not in described
    )
    actions.sort(key=lambda a: (_ORDER.index(a.kind.value), a.name))
    return Plan(
        actions=tuple(actions),
        unchanged=tuple(sorted(unchanged)),
        notices=tuple(notices),
        state=state,
        uri=driver.uri,
        token=token,
        definitions=definitions,
    )


def _targets(
    driver: Driver, items: Sequence[DesiredDomain], views: Sequence[DomainView]
) -> list[_Target]:
    by_name = {v.name: v for v in views}
    seen: dict[str, str] = {}
    targets: list[_Target] = []
    for item in items:
        try:
            name, xml_uuid = driver.probe(item.xml)
        except (TranslationError, libvirtError) as exc:
            exc.add_note(f"in {item.origin}")
            raise
        if name in seen:
            raise make_error(
                c.VIR_ERR_INVALID_ARG,
                f"domain '{name}' is described twice: in {seen[name]} and in {item.origin}",
                domain=c.VIR_FROM_NONE,
            )
        seen[name] = item.origin
        existing = by_name.get(name)
        if existing is not None and xml_uuid is not None and xml_uuid != existing.uuid:
            raise make_error(
                c.VIR_ERR_OPERATION_FAILED,
                f"domain '{name}' exists with uuid {existing.uuid}, but {item.origin} gives "
                f"{xml_uuid}; remove the <uuid> or undefine the domain first",
            )
        if existing is None and xml_uuid is not None:
            other = next((v for v in views if v.uuid == xml_uuid), None)
            if other is not None:
                raise make_error(
                    c.VIR_ERR_OPERATION_FAILED,
                    f"{item.origin} gives domain '{name}' the uuid {xml_uuid} of '{other.name}'",
                )
        uuid = existing.uuid if existing is not None else (xml_uuid or _new_uuid(name, views))
        targets.append(_Target(item, name, uuid, existing))
    return sorted(targets, key=lambda t: t.name)


def _new_uuid(name: str, views: Sequence[DomainView]) -> str:
    """Choose a new domain's UUID: derived from its name, so a dry run shows the real one.

    It is the UUID the facade gives a cell of that name made by another tool, so adopting
    such a cell keeps its identity; if another domain already has it, a random one is used.
    """
    uuid = foreign_uuid(name)
    if any(v.uuid == uuid for v in views):
        return str(uuidlib.uuid4())
    return uuid


def _define_action(target: _Target, new: Definition) -> Action:
    existing = target.existing
    if existing is not None and existing.active:
        reason = f"new definition of the running cell; {_describe(new)}"
    else:
        reason = f"new; {_describe(new)}"
    return Action(ActionKind.DEFINE, target.name, target.uuid, reason)


def _update_action(target: _Target, old: Definition, new: Definition) -> Action:
    changes = _changes(old, new)
    diff = "".join(
        difflib.unified_diff(
            _pretty(old.xml).splitlines(keepends=True),
            _pretty(new.xml).splitlines(keepends=True),
            fromfile=f"{target.name} (defined)",
            tofile=f"{target.name} ({target.desired.origin})",
            n=1,
        )
    )
    if not changes:
        reason = "definition text only; the cell stays the same"
    elif any(ch.recreate for ch in changes):
        reason = "the cell changes"
        if target.existing is not None and target.existing.active:
            reason += "; needs re-create"
    else:
        reason = "the boot images change"
    return Action(ActionKind.UPDATE, target.name, target.uuid, reason, tuple(changes), diff)


def _runtime_actions(
    target: _Target,
    final: Definition,
    state: DesiredState,
    recreate: bool,
    notices: list[str],
) -> list[Action]:
    existing = target.existing
    cell_state = existing.state()[0] if existing is not None else c.VIR_DOMAIN_SHUTOFF
    active = existing is not None and existing.active
    live = existing.live if existing is not None else None
    stale = active and live is not None and not live.same_cell(final)
    name, uuid = target.name, target.uuid
    if state == DesiredState.STOPPED:
        return [Action(ActionKind.STOP, name, uuid, "desired state: stopped")] if active else []
    if state == DesiredState.RUNNING and not active:
        return [Action(ActionKind.START, name, uuid, "not running")]
    if state == DesiredState.RUNNING and cell_state != c.VIR_DOMAIN_RUNNING:
        return [Action(ActionKind.START, name, uuid, "its cell exists but does not run")]
    if stale and recreate:
        assert live is not None  # noqa: S101 - stale implies it
        changed = ", ".join(ch.field for ch in _changes(live, final) if ch.recreate) or "boot"
        reason = f"re-create: {changed} changed"
        return [
            Action(ActionKind.STOP, name, uuid, reason),
            Action(ActionKind.START, name, uuid, reason),
        ]
    if stale:
        assert live is not None  # noqa: S101
        changed = "; ".join(str(ch) for ch in _changes(live, final)) or "boot images"
        notices.append(
            f"'{name}' runs a cell made from an older definition ({changed}); it needs "
            "re-creating for that to take effect (recreate does it)"
        )
    return []


def _describe(definition: Definition) -> str:
    config = definition.config
    boot = str(definition.boot) if not definition.boot.is_empty else "park-loop inmate"
    return (
        f"CPUs {format_cpus(config.cpus) or '-'}, {memory_kib(config.mem_regions)} KiB, "
        f"boot: {boot}"
    )


def _changes(old: Definition, new: Definition) -> list[Change]:
    """List what differs between two definitions' cells, field by field."""
    a, b = old.config, new.config
    out: list[Change] = []

    def add(name: str, x: object, y: object, *, recreate: bool = True) -> None:
        if x != y:
            out.append(Change(name, str(x), str(y), recreate))

    add("cpus", format_cpus(a.cpus) or "-", format_cpus(b.cpus) or "-")
    add("memory", f"{memory_kib(a.mem_regions)} KiB", f"{memory_kib(b.mem_regions)} KiB")
    if memory_kib(a.mem_regions) == memory_kib(b.mem_regions):
        add("memory regions", _regions(a.mem_regions), _regions(b.mem_regions))
    add("flags", a.flags, b.flags)
    add("console", a.console, b.console)
    add("pci devices", _pci(a.pci_devices), _pci(b.pci_devices))
    add("irqchips", len(a.irqchips), len(b.irqchips))
    add("pio regions", len(a.pio_regions), len(b.pio_regions))
    add("cpu reset address", hex(a.cpu_reset_address), hex(b.cpu_reset_address))
    if not out and a.to_bytes() != b.to_bytes():
        out.append(Change("cell config", "(other fields)", "(differ)"))
    add("boot", old.boot, new.boot, recreate=False)
    return out


def _regions(regions: Sequence[Any]) -> str:
    return ", ".join(f"{r.phys_start:#x}+{r.size:#x}" for r in regions)


def _pci(devices: Sequence[Any]) -> str:
    return (
        ", ".join(
            f"{d.domain:04x}:{d.bdf >> 8:02x}:{d.bdf >> 3 & 0x1F:02x}.{d.bdf & 7}" for d in devices
        )
        or "-"
    )


def _canonical(xml: str) -> bytes:
    """Return a domain XML's canonical form without whitespace, comments and ``<uuid>``."""
    root = parse_document(xml)
    for el in root.findall("uuid"):
        root.remove(el)
    _drop_blank_text(root)
    return etree.tostring(root, method="c14n")


def _same_source(a: str, b: str) -> bool:
    try:
        return _canonical(a) == _canonical(b)
    except TranslationError:
        return a == b


def _drop_blank_text(root: etree._Element) -> None:
    """Remove whitespace-only text and tails, so layout does not count."""
    for el in root.iter():
        if el.text is not None and not el.text.strip():
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None


def _pretty(xml: str) -> str:
    try:
        root = parse_document(xml)
    except TranslationError:
        return xml
    _drop_blank_text(root)
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def _token(driver: Driver) -> str:
    """Digest the store and the cells: a plan holds only while this stays the same."""
    digest = hashlib.sha256(driver.store.fingerprint().encode())
    for cell in driver.hv.cells():
        digest.update(
            f"{cell.id}\0{cell.name}\0{cell.state.text}\0{format_cpus(cell.cpus_assigned)}\n".encode()
        )
    return digest.hexdigest()


# -- applying -----------------------------------------------------------------------------


def apply(conn: virConnect, the_plan: Plan, *, job: Job | None = None) -> ApplyResult:
    """Perform a plan's actions, in order; undo all of them if one fails or is cancelled.

    Args:
        conn: The connection the plan was made for.
        the_plan: The plan from :func:`plan`.
        job: Reports each action (and each cell's boot steps) and can cancel between them.

    Returns:
        What was done.

    Raises:
        libvirtError: The definitions or cells changed since the plan was made
            (``VIR_ERR_OPERATION_FAILED``); an action failed (its error, with notes on
            what the rollback did); the job was cancelled (``VIR_ERR_OPERATION_ABORTED``).
    """
    driver = conn.driver
    job = job or Job()
    return _call(lambda: _apply(driver, the_plan, job))


def reconcile(
    conn: virConnect,
    desired: Iterable[DesiredDomain | str | os.PathLike[str]],
    *,
    state: DesiredState | str = DesiredState.RUNNING,
    prune: bool = False,
    recreate: bool = False,
    dry_run: bool = False,
    job: Job | None = None,
) -> tuple[Plan, ApplyResult | None]:
    """Plan and (unless ``dry_run``) apply, holding the store lock throughout.

    Returns:
        The plan, and what was done (``None`` for a dry run).

    Raises:
        libvirtError: As :func:`plan` and :func:`apply`.
    """
    driver = conn.driver
    if not dry_run:
        driver.check_writable("apply")
    items = _desired_list(desired)
    with _locked_for_reading(driver):
        the_plan = plan(conn, items, state=state, prune=prune, recreate=recreate)
        if dry_run:
            return the_plan, None
        return the_plan, apply(conn, the_plan, job=job)


def _apply(driver: Driver, the_plan: Plan, job: Job) -> ApplyResult:
    driver.check_writable("apply")
    with driver.store.locked():
        if _token(driver) != the_plan.token:
            raise make_error(
                c.VIR_ERR_OPERATION_FAILED,
                "the definitions or cells changed since the plan was made (another apply "
                "or jhctl command ran in between); make the plan again",
            )
        if the_plan.empty:
            return ApplyResult(the_plan, ())
        for action in the_plan.actions:  # fail before doing anything if a boot cannot work
            definition = the_plan.definitions.get(action.uuid)
            if action.kind == ActionKind.START and definition is not None:
                boot_images(definition, driver._system_or_none())  # noqa: SLF001
        done: list[Action] = []
        undo: list[_Undo] = []
        try:
            with job.running("apply", steps=len(the_plan.actions)):
                for action in the_plan.actions:
                    job.step(str(action))
                    undo.append(_perform(driver, the_plan, action, job))
                    done.append(action)
        except BaseException as exc:
            _roll_back(undo, exc)
            raise
        return ApplyResult(the_plan, tuple(done))


@dataclass(frozen=True, slots=True)
class _Undo:
    """How to undo one action.

    Attributes:
        run: Undoes it.
        restart_id: For a stop, the id the stopped cell had: stopped cells are started
            again last, in the order of these ids, so that they get them back (the driver
            gives a new cell the lowest free id).
    """

    run: Callable[[], None]
    restart_id: int | None = None


def _perform(driver: Driver, the_plan: Plan, action: Action, job: Job) -> _Undo:
    """Do one action; return how to undo it."""
    uuid, name = action.uuid, action.name
    files = _FileState.capture(driver, uuid)
    view = next((v for v in driver.domains() if v.uuid == uuid), None)
    if action.kind == ActionKind.STOP:
        assert view is not None  # noqa: S101 - the token check guarantees it
        live = view.live
        was_running = view.state()[0] == c.VIR_DOMAIN_RUNNING
        driver.destroy(uuid, name)

        def restart() -> None:
            if live is None:
                files.restore(driver)
                raise make_error(
                    c.VIR_ERR_OPERATION_FAILED,
                    f"cell '{name}' was made by another tool; it cannot be created again",
                )
            driver.boot(live, None, start=was_running, job=Job())
            files.restore(driver)
            if files.record is not None:  # the record as it was, with the cell's new id
                cell = driver.hv.cell(name).id
                driver.store.put_live(replace(files.record, cell_id=cell))

        return _Undo(restart, view.id)
    if action.kind == ActionKind.UNDEFINE:
        driver.undefine(uuid, name)
        return _Undo(lambda: files.restore(driver))
    if action.kind in {ActionKind.DEFINE, ActionKind.UPDATE}:
        driver.store_definition(view, the_plan.definitions[uuid])
        return _Undo(lambda: files.restore(driver))
    # START
    was_active = view is not None and view.active
    driver.start(uuid, name, paused=False, job=job)

    def stop() -> None:
        current = next((v for v in driver.domains() if v.uuid == uuid), None)
        if current is not None and current.cell is not None:
            cell = driver.hv.cell(current.cell.name)
            if was_active:
                cell.shutdown()
            else:
                cell.destroy()
        files.restore(driver)

    return _Undo(stop)


@dataclass(frozen=True, slots=True)
class _FileState:
    """A domain's definition and live record as they were before an action."""

    uuid: str
    definition: Definition | None
    record: LiveRecord | None

    @classmethod
    def capture(cls, driver: Driver, uuid: str) -> _FileState:
        return cls(uuid, driver.store.get(uuid), driver.store.get_live(uuid))

    def restore(self, driver: Driver) -> None:
        if self.definition is None:
            driver.store.remove(self.uuid)
        else:
            driver.store.put(self.definition)
        if self.record is None:
            driver.store.remove_live(self.uuid)
        else:
            driver.store.put_live(self.record)


def _roll_back(undo: list[_Undo], exc: BaseException) -> None:
    """Undo the performed actions, noting failures on the original error.

    Everything but the restarts of stopped cells is undone newest first; then the stopped
    cells are started again in the order of the ids they had, which gives them those ids
    back once everything this run created is gone.
    """
    restarts = sorted(
        (u for u in undo if u.restart_id is not None), key=lambda u: u.restart_id or 0
    )
    ordered = [u for u in reversed(undo) if u.restart_id is None] + restarts
    failures = 0
    for step in ordered:
        try:
            step.run()
        except (JailhouseError, OSError) as cleanup:
            failures += 1
            exc.add_note(f"rollback: {cleanup}")
    if undo:
        exc.add_note(
            f"rollback: undid {len(undo) - failures} of {len(undo)} action(s) this run performed"
        )
