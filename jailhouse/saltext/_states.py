"""The states' logic in plain Python: each returns Salt's ``name/result/changes/comment``.

``result`` is ``True`` (done, or nothing to do), ``False`` (failed, nothing changed: the
library rolls back) or ``None`` (``test=True`` and something would change).  A second
run with the same arguments finds nothing to do and reports no changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jailhouse.apply import ActionKind, DesiredDomain, DesiredState, apply, plan

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from jailhouse.apply import Plan
    from jailhouse.config.model import CellConfig
    from jailhouse.virt import virConnect

__all__ = ["absent", "autostart", "domain", "enabled", "ret", "stopped"]


def ret(
    name: str, *, result: bool | None, comment: str, changes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build a state return in Salt's contract."""
    return {"name": name, "result": result, "changes": changes or {}, "comment": comment}


def _changes(the_plan: Plan, name: str) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    kinds = [a.kind for a in the_plan.actions if a.name == name]
    for action in the_plan.actions:
        if action.name != name:
            continue
        if action.kind == ActionKind.DEFINE:
            changes["definition"] = f"new: {action.reason}"
        elif action.kind == ActionKind.UPDATE:
            changes["definition"] = {
                "reason": action.reason,
                "cell": [str(ch) for ch in action.changes],
                "diff": action.diff,
            }
    if ActionKind.STOP in kinds and ActionKind.START in kinds:
        changes["restarted"] = True
    elif ActionKind.STOP in kinds:
        changes["stopped"] = True
    elif ActionKind.START in kinds:
        changes["started"] = True
    return changes


def domain(
    conn: virConnect,
    name: str,
    xml: str,
    *,
    state: DesiredState,
    restart: bool,
    test: bool,
    check: Callable[[CellConfig], None] | None = None,
) -> dict[str, Any]:
    """Make one domain defined as ``xml`` and in ``state`` (``running``, ``defined``).

    A running cell whose definition changes keeps running its old config unless
    ``restart``: the comment names what needs the restart.  ``check`` sees the cell
    config the domain will have before anything changes, and raises to refuse it.
    """
    the_plan = plan(conn, [DesiredDomain(xml, f"state {name}")], state=state, recreate=restart)
    if check is not None:
        uuid = next((a.uuid for a in the_plan.actions if a.name == name), None)
        new = the_plan.definitions.get(uuid) if uuid is not None else None
        if new is None:
            new = conn.driver.find_name(name).persistent
        if new is not None:
            check(new.config)
    notices = [n for n in the_plan.notices if n.startswith(f"'{name}' runs")]
    restart_note = (
        f"; {name} runs a cell made from its previous definition and needs a restart for "
        "the change to take effect (restart=True does it): "
        + "; ".join(n.split("(", 1)[1].split(")", 1)[0] for n in notices)
        if notices
        else ""
    )
    if the_plan.empty:
        return ret(
            name, result=True, comment=f"{name} is as described ({state.value}){restart_note}"
        )
    changes = _changes(the_plan, name)
    if test:
        return ret(
            name,
            result=None,
            comment=f"{name} would change: {the_plan.summary()}{restart_note}",
            changes=changes,
        )
    done = apply(conn, the_plan)
    after = plan(conn, [DesiredDomain(xml, f"state {name}")], state=state, recreate=False)
    stale = any(n.startswith(f"'{name}' runs") for n in after.notices)
    note = (
        f"; {name} keeps running its previous cell until restarted (restart=True)" if stale else ""
    )
    return ret(name, result=True, comment=f"{name}: {done}{note}", changes=changes)


def autostart(
    conn: virConnect, done: dict[str, Any], wanted: bool, *, test: bool
) -> dict[str, Any]:
    """Bring a domain state's autostart flag to ``wanted``, adding to its return ``done``.

    A failed state is returned as it is.  With ``test``, a domain that is not defined
    yet counts as not marked, so ``autostart=True`` is predicted as a change.
    """
    import jailhouse.virt as libvirt  # noqa: PLC0415

    if done["result"] is False:
        return done
    name = done["name"]
    try:
        dom = conn.lookupByName(name)
        current = bool(dom.autostart())
    except libvirt.libvirtError as exc:
        if not (test and exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN):
            raise
        dom, current = None, False
    if current == wanted:
        return done
    word = "on" if wanted else "off"
    done["changes"]["autostart"] = {"old": current, "new": wanted}
    if test or dom is None:
        done["result"] = None
        done["comment"] += f"; autostart would be turned {word}"
        return done
    dom.setAutostart(int(wanted))
    done["comment"] += f"; autostart turned {word}"
    return done


def stopped(conn: virConnect, name: str, *, test: bool) -> dict[str, Any]:
    """Make a defined domain have no cell (its CPUs and memory back with the root cell)."""
    dom = conn.lookupByName(name)
    if not dom.isActive():
        return ret(name, result=True, comment=f"{name} is stopped")
    if test:
        return ret(
            name,
            result=None,
            comment=f"{name} would be stopped (its cell destroyed)",
            changes={"stopped": True},
        )
    dom.destroy()
    return ret(
        name,
        result=True,
        comment=f"{name} stopped: its cell is destroyed",
        changes={"stopped": True},
    )


def absent(conn: virConnect, name: str, *, test: bool) -> dict[str, Any]:
    """Make a domain neither run nor be defined."""
    import jailhouse.virt as libvirt  # noqa: PLC0415

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return ret(name, result=True, comment=f"{name} is absent")
        raise
    changes: dict[str, Any] = {}
    if dom.isActive():
        changes["stopped"] = True
    if dom.isPersistent():
        changes["undefined"] = True
    if test:
        return ret(name, result=None, comment=f"{name} would be removed", changes=changes)
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        dom.undefine()
    return ret(name, result=True, comment=f"{name} removed", changes=changes)


def enabled(conn: virConnect, name: str, system: Path, *, test: bool) -> dict[str, Any]:
    """Make the hypervisor run with a system config, and record it for placing domains."""
    from jailhouse.config.model import SystemConfig, load_config  # noqa: PLC0415

    config = load_config(system)
    if not isinstance(config, SystemConfig):
        return ret(
            name,
            result=False,
            comment=f"{system}: is the cell config {config.name!r}, not a system config",
        )
    hv = conn.driver.hv
    changes: dict[str, Any] = {}
    if hv.enabled():
        root = next((cell for cell in hv.cells(statistics=False) if cell.id == 0), None)
        if root is not None and root.name != config.root_cell.name:
            return ret(
                name,
                result=False,
                comment=f"the hypervisor runs with the root cell {root.name!r}, not "
                f"{config.root_cell.name!r} of {system}: disable it first (jailhouse.disable)",
            )
    else:
        changes["enabled"] = str(system)
    recorded = conn.driver.store.system()
    if recorded is None or recorded.to_bytes() != config.to_bytes():
        changes["system_config"] = str(system)
    if not changes:
        return ret(name, result=True, comment=f"the hypervisor is enabled with {system}")
    if test:
        return ret(
            name,
            result=None,
            comment=f"the hypervisor would be enabled with {system}",
            changes=changes,
        )
    if "enabled" in changes:
        started = conn.enableHypervisor(config)
        if started:
            changes["autostarted"] = sorted(dom.name() for dom in started)
    else:
        conn.setSystemConfig(config)
    return ret(
        name, result=True, comment=f"the hypervisor is enabled with {system}", changes=changes
    )
