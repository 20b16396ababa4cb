"""Salt runner ``jailhouse``: move a domain from one minion's board to another's.

.. code-block:: bash

    salt-run jailhouse.migrate worker board1 board2            # offline: the definition moves
    salt-run jailhouse.migrate worker board1 board2 cold=True  # stop on board1, start on board2

The runner only sequences execution functions on the two minions through the master's
client; each minion works on its own board:

1. ``jailhouse.migrate_export`` on the source: the definition, its boot files, whether it runs.
2. ``jailhouse.migrate_check`` on the target: placed on the target's system config and
   checked against its domains.  Nothing has changed anywhere if this fails.
3. cold: ``jailhouse.destroy`` on the source, then ``jailhouse.migrate_import`` with
   ``start=True`` on the target; if that fails the target has rolled back and the source
   is started again.  offline: ``jailhouse.migrate_import`` on the target (a running
   source keeps running).
4. ``jailhouse.undefine`` on the source, only once the target holds the domain
   (``undefinesource=False`` keeps it).
"""

from __future__ import annotations

from typing import Any, Final

import salt.client
from salt.exceptions import CommandExecutionError

__virtualname__: Final = "jailhouse"

# Salt's loader replaces these when it loads the file (merging its options into __opts__).
__opts__: dict[str, Any] = {}
__context__: dict[str, Any] = {}


def __virtual__() -> str:
    """Always load: the runner itself touches no board."""
    return __virtualname__


class _Minions:
    """Calls of execution functions on minions, failing on any error they report."""

    def __init__(self, timeout: int) -> None:
        self.client = salt.client.get_local_client(mopts=__opts__)
        self.timeout = timeout

    def call(self, minion: str, fun: str, *args: object, **kwargs: object) -> Any:  # noqa: ANN401 - whatever the function returns
        returns = self.client.cmd(
            minion,
            fun,
            arg=list(args),
            kwarg=kwargs,
            timeout=self.timeout,
            full_return=True,
        )
        if minion not in returns:
            raise CommandExecutionError(f"minion {minion!r} did not answer {fun} in time")
        answer = returns[minion]
        value = answer.get("ret") if isinstance(answer, dict) else answer
        failed = isinstance(answer, dict) and answer.get("retcode", 0) != 0
        if failed or (isinstance(value, str) and value.endswith("is not available.")):
            text = str(value).removeprefix("ERROR: ")
            raise CommandExecutionError(f"{minion}: {fun} failed: {text}")
        return value


def migrate(
    name: str,
    source: str,
    target: str,
    cold: bool = False,
    dname: str | None = None,
    xml: str | None = None,
    undefinesource: bool = True,
    timeout: int = 60,
) -> dict[str, Any]:
    """Move domain ``name`` from minion ``source`` to minion ``target``.

    Without ``cold`` this is an offline migration: the definition and its boot files
    move, the target places the cell on its own system config, and a running source
    keeps running (transient once undefined).  ``cold=True`` stops the cell on the
    source and starts it on the target: its state is lost.

    Returns:
        ``result: True`` with the domain on the target and whether the source was
        stopped and undefined; or ``result: False`` (exit status 1) with a ``comment``
        naming the minion and the step that failed, and what was undone.  The source is
        intact then unless the comment says otherwise.
    """
    try:
        done = _migrate(
            name,
            source,
            target,
            cold=cold,
            dname=dname,
            xml=xml,
            undefinesource=undefinesource,
            timeout=timeout,
        )
    except CommandExecutionError as exc:
        __context__["retcode"] = 1
        # salt-run exits with a returned dict's "retcode"
        return {"result": False, "comment": str(exc), "retcode": 1}
    return {"result": True, "comment": f"{name} moved from {source} to {target}", **done}


def _migrate(
    name: str,
    source: str,
    target: str,
    *,
    cold: bool,
    dname: str | None,
    xml: str | None,
    undefinesource: bool,
    timeout: int,
) -> dict[str, Any]:
    if source == target:
        raise CommandExecutionError(f"source and target are the same minion ({source!r})")
    minions = _Minions(timeout)
    package = minions.call(source, "jailhouse.migrate_export", name)
    if not isinstance(package, dict):
        raise CommandExecutionError(f"{source}: jailhouse.migrate_export returned {package!r}")
    options = {"dname": dname, "xml": xml}
    minions.call(target, "jailhouse.migrate_check", package, **options)
    stopped = False
    if cold and package.get("active"):
        minions.call(source, "jailhouse.destroy", name)
        stopped = True
        try:
            info = minions.call(target, "jailhouse.migrate_import", package, start=True, **options)
        except CommandExecutionError as exc:
            try:
                minions.call(source, "jailhouse.start", name)
            except CommandExecutionError as restart:
                raise CommandExecutionError(
                    f"{exc}; starting {name!r} on {source} again failed too: {restart}"
                ) from exc
            raise CommandExecutionError(f"{exc}; {name!r} runs on {source} again") from exc
    else:
        info = minions.call(target, "jailhouse.migrate_import", package, **options)
    undefined = False
    if undefinesource:
        try:
            minions.call(source, "jailhouse.undefine", name)
        except CommandExecutionError as exc:
            raise CommandExecutionError(
                f"{target} holds {dname or name!r} now, but undefining it on {source} failed: {exc}"
            ) from exc
        undefined = True
    return {
        "name": dname or name,
        "source": source,
        "target": target,
        "cold": bool(cold),
        "source_stopped": stopped,
        "source_undefined": undefined,
        "target_domain": info,
    }
