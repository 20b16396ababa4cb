"""``jhctl cell list`` and ``config check`` without argparse or the model: the quick paths.

:func:`cell_list` takes the plain command lines of ``cell list`` (the verb, ``--json``,
``--debug`` and one ``-c``/``--connect URI``, options before ``cell`` or after ``list``) on
``jailhouse:///system`` and on ``sim:///PATH`` without a query, and reads the cells with
:func:`jailhouse._listing.read_cells`.  Whatever it does not vouch for returns ``None``
before anything is printed, and :func:`jailhouse.cli.main` runs the command through the
full path, which gives the same output for what this path accepts and the errors for the
rest: another command line, a missing device, an unsupported machine, a new or
half-written simulated host, sysfs contents that are torn or malformed.

:func:`config_check` takes ``config check SYSTEM [CELL...]`` (:func:`jailhouse.cli.main`
hands it the files of the plain form only) and checks the set through
:func:`jailhouse.config._lean.check_set`, which reads plain records instead of the model:
a clean set prints its one line from here, and anything else (a finding, a file that does
not read, a config the codec refuses) goes through the full path, which reports it.
"""

from __future__ import annotations

import os

from jailhouse._listing import (
    ARCH_NAMES,
    listing_json,
    listing_table,
    read_cells,
    read_sim_cells,
)
from jailhouse.cli import DEFAULT_URI, URI_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Final

    from jailhouse._listing import Listed

__all__ = ["cell_list", "check_summary", "config_check", "parse_cell_list"]
_DEVICE: Final = "/dev/jailhouse"
_FLAGS: Final = frozenset({"--json", "--debug"})


def parse_cell_list(words: Sequence[str]) -> tuple[str | None, bool] | None:
    """Return the ``--connect`` value and ``--json`` of a plain ``cell list`` command line.

    Returns:
        ``(uri or None, json)``, or ``None`` for any command line argparse might read
        otherwise: another verb, an option this path does not know or an abbreviated one,
        ``--connect`` twice or with a value that starts with ``-``.
    """
    try:
        at = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["cell", "list"])
    except StopIteration:
        return None
    uri: str | None = None
    json = False
    for part in (words[:at], words[at + 2 :]):
        i = 0
        while i < len(part):
            word = part[i]
            if word in _FLAGS:
                json = json or word == "--json"
            elif word in {"-c", "--connect"} or word.startswith("--connect="):
                if uri is not None:
                    return None
                if word.startswith("--connect="):
                    uri = word.removeprefix("--connect=")
                elif i + 1 < len(part) and not part[i + 1].startswith("-"):
                    i += 1
                    uri = part[i]
                else:
                    return None
            else:
                return None
            i += 1
    return uri, json


def cell_list(words: Sequence[str]) -> str | None:
    """Run a plain ``cell list`` command line; return what to print, or ``None``.

    ``None`` means "take the full path": nothing was printed and nothing changed.
    """
    parsed = parse_cell_list(words)
    if parsed is None:
        return None
    uri = parsed[0] or os.environ.get(URI_ENV) or DEFAULT_URI
    cells = _read(uri)
    if cells is None:
        return None
    return listing_json(cells) if parsed[1] else listing_table(cells)


def _read(uri: str) -> list[Listed] | None:
    """Read the cells of the host ``uri`` names, if it is one this path knows."""
    if uri == DEFAULT_URI:
        # What KernelDevice checks when the full path opens the device: a supported
        # machine, and a node that opens read-write.
        if os.uname().machine.lower() not in ARCH_NAMES:
            return None
        try:
            os.close(os.open(_DEVICE, os.O_RDWR | os.O_CLOEXEC))
        except OSError:
            return None
        return read_cells("/sys")
    if not uri.startswith("sim:///") or not uri.isprintable() or uri != uri.strip():
        return None
    path = uri.removeprefix("sim://")
    if any(c in path for c in "?#%;"):
        return None  # a query, a fragment or a quoted byte: urllib's reading decides
    return read_sim_cells(path)


def config_check(system: str, cells: Sequence[str]) -> str | None:
    """Check a set of config files; return the line a clean set prints, or ``None``.

    ``None`` means "take the full path": the set has findings or does not read.
    """
    from jailhouse.config._lean import check_set  # noqa: PLC0415 - only for this verb

    names = check_set(system, cells)
    return None if names is None else check_summary(names, 0, 0)


def check_summary(names: Sequence[str], errors: int, warnings: int) -> str:
    """The last line of ``config check``: the cells checked and what was found."""
    shown = ", ".join(repr(name) for name in names)
    if not errors and not warnings:
        return f"config check: {shown}: no findings"
    tail = " (warnings alone exit 0)" if not errors else ""
    return f"config check: {shown}: {errors} error(s), {warnings} warning(s){tail}"
