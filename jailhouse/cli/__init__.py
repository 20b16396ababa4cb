"""``jhctl``: drive Jailhouse from the shell, with upstream's verbs and virsh's.

Usage: ``jhctl [-c URI] [--json] [--debug] VERB ...``; ``jhctl VERB --help`` shows each
verb with examples.

Exit codes:

=====  ===================================================================================
0      success (``config check``: no errors; warnings alone still exit 0)
1      ``config check`` found an error, ``host-validate`` a failed check, or the driver
       refused an operation (busy CPU, cell exists, not enabled ...)
2      usage or input error: bad arguments, a missing or unreadable file, a config or XML
       that does not parse, a bad URI, no ``/dev/jailhouse``
130    interrupted with Ctrl-C (``console -f`` and ``cell stats`` end with 0 instead: Ctrl-C
       is how they are meant to stop)
=====  ===================================================================================

Errors are one line on stderr, naming the problem and what to do; ``--debug`` adds the
traceback.  With ``--json`` a verb prints one JSON document on stdout, and errors still go
to stderr, so stdout is either parseable or empty.

Verbs come in groups, each registered by a ``register(verbs)`` function of one module named
in :data:`VERB_MODULES`; a new group is a module with such a function plus one entry there.
A new verb in an existing group needs nothing here: its group's ``register`` adds it.

Start-up: importing this package imports nothing but :mod:`os` and :mod:`sys`.  The verb
modules (and argparse) are imported when a parser is built; ``jhctl --version``, a plain
``jhctl config check FILE...`` (no options) and a plain ``jhctl cell list`` (see
:mod:`jailhouse.cli._quick`) take fast paths that build no parser, with the same output
and exit codes (anything else, ``--help`` included, goes through argparse).  A plain
``config check`` of a clean set does not import the config model (or :mod:`enum`) either;
a set with findings is checked again through the model, which names them.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: `jhctl --version` should import nothing it does not use
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Final

    from jailhouse.cli._base import Verbs
    from jailhouse.cli._parser import ArgumentParser

__all__ = [
    "DEFAULT_URI",
    "EXIT_FINDINGS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "URI_ENV",
    "VERB_GROUPS",
    "VERB_MODULES",
    "build_parser",
    "main",
]

EXIT_OK: Final = 0
"""Success."""
EXIT_FINDINGS: Final = 1
"""``config check`` found an error, or the driver refused an operation."""
EXIT_USAGE: Final = 2
"""Bad usage or input: a missing file, a bad config or XML, no device."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted with Ctrl-C (128 + SIGINT), as shells report it."""

URI_ENV: Final = "JAILHOUSE_URI"
"""Environment variable naming the default connection URI."""
DEFAULT_URI: Final = "jailhouse:///system"
"""The kernel driver: ``/dev/jailhouse`` and ``/sys``."""

VERB_MODULES: Final = (
    "jailhouse.cli._device",  # enable, disable, status, console, cell ...
    "jailhouse.cli._config",  # config show/check/from-xml/to-xml
    "jailhouse.cli._host",  # demo, host-validate, selftest
    "jailhouse.cli._virsh",  # define, undefine, start, shutdown, destroy, list, dominfo, ...
)
"""The modules whose ``register(verbs)`` adds verbs to the parser, in ``--help`` order."""

_VERSION_WIDTH: Final = 37
"""Narrowest terminal in which argparse prints the ``--version`` line unwrapped."""


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module-level lazy attribute hook
    """Give :data:`VERB_GROUPS`: the ``register`` functions, imported on first use."""
    if name == "VERB_GROUPS":
        return _verb_groups()
    raise AttributeError(f"module 'jailhouse.cli' has no attribute {name!r}")


def _verb_groups() -> list[Callable[[Verbs], None]]:
    """Import the verb modules and return their ``register`` functions, in order."""
    from importlib import import_module  # noqa: PLC0415 - only when a parser is built

    return [import_module(module).register for module in VERB_MODULES]


def _common_options(*, short_connect: bool = True) -> ArgumentParser:
    """Build the options every verb takes; SUPPRESS keeps a verb from resetting them.

    Args:
        short_connect: Offer ``-c`` for ``--connect``; ``cell linux`` takes ``-c`` as
            upstream's ``--cmdline`` and gets the options without it.
    """
    import argparse  # noqa: PLC0415 - only when a parser is built

    from jailhouse.cli._base import DEFAULT_URI, URI_ENV  # noqa: PLC0415
    from jailhouse.cli._parser import ArgumentParser  # noqa: PLC0415

    common = ArgumentParser(add_help=False)
    common.add_argument(
        *(("-c", "--connect") if short_connect else ("--connect",)),
        metavar="URI",
        default=argparse.SUPPRESS,
        help=f"jailhouse:///system (the device) or sim:///PATH (a simulated host); "
        f"default ${URI_ENV}, else {DEFAULT_URI}",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document on stdout",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print a traceback on errors",
    )
    return common


def build_parser() -> ArgumentParser:
    """Build the ``jhctl`` parser with every verb group of :data:`VERB_MODULES`."""
    import argparse  # noqa: PLC0415 - only when a parser is built

    from jailhouse import __version__  # noqa: PLC0415 - the package root is cheap
    from jailhouse.cli._base import Verbs  # noqa: PLC0415
    from jailhouse.cli._parser import ArgumentParser, DeferredParser  # noqa: PLC0415

    common = _common_options()
    parser = ArgumentParser(
        prog="jhctl",
        parents=[common],
        description="Drive the Jailhouse partitioning hypervisor: upstream's `jailhouse` "
        "verbs and virsh's, on /dev/jailhouse or on a simulated host.",
        epilog="examples:\n"
        "  jhctl demo                      the whole cell lifecycle on a simulated host\n"
        "  jhctl enable sys.cell && jhctl cell create demo.cell\n"
        "  jhctl -c sim:///tmp/jh cell list --json\n"
        "  jhctl config check sys.cell demo.cell\n\n"
        "exit codes: 0 ok, 1 findings or a refused operation, 2 usage or input error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"jhctl (python-jailhouse) {__version__}"
    )
    sub = parser.add_subparsers(
        dest="verb", metavar="VERB", required=True, parser_class=DeferredParser
    )
    verbs = Verbs(sub, common, common_long=_common_options(short_connect=False))
    for register in _verb_groups():
        register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jhctl`` with ``argv`` (``sys.argv[1:]`` by default) and return the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words == ["--version"] and _terminal_width() >= _VERSION_WIDTH:
        from jailhouse import __version__  # noqa: PLC0415 - the package root is cheap

        sys.stdout.write(f"jhctl (python-jailhouse) {__version__}\n")
        return 0
    if "list" in words:
        from jailhouse.cli._quick import cell_list  # noqa: PLC0415 - imports only os

        listing = cell_list(words)
        if listing is not None:
            return _write(listing)
    args: Any  # argparse's Namespace, or a SimpleNamespace with what it would hold
    files = _plain_check(words)
    if files is not None:
        from jailhouse.cli._quick import config_check  # noqa: PLC0415 - imports only os

        clean = config_check(files[0], files[1:])
        if clean is not None:
            return _write(clean)
        from types import SimpleNamespace  # noqa: PLC0415 - what argparse.Namespace is, cheaper

        from jailhouse.cli._config import check_handler  # noqa: PLC0415

        handler, args = check_handler, SimpleNamespace(system=files[0], cells=files[1:])
    else:
        try:
            args = build_parser().parse_args(words)
        except SystemExit as exc:  # --help, --version, usage errors
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
        handler = args.handler
    return _run(handler, args)


def _terminal_width() -> int:
    """Return the width argparse formats ``--version`` for (``shutil.get_terminal_size``)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return columns or 80


def _plain_check(words: list[str]) -> list[str] | None:
    """Return the files of ``config check FILE...``, which runs without a parser.

    Only the plain form qualifies: ``config check`` and at least one file, no word that
    starts with ``-``.  Any other command line returns ``None`` and goes through argparse,
    which gives the check handler the same arguments for these.  A clean set is checked
    without the model (:func:`jailhouse.cli._quick.config_check`); the rest goes to the
    handler, as from argparse.
    """
    if len(words) < 3 or words[:2] != ["config", "check"]:  # verb, sub-verb, a file
        return None
    files = words[2:]
    if any(word.startswith("-") for word in files):
        return None
    return files


def _write(text: str) -> int:
    """Print a quick path's result as :func:`_run` prints a handler's: a reader gone is 1."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FINDINGS
    return EXIT_OK


def _run(handler: Callable[..., int], args: Any) -> int:  # noqa: ANN401 - a Namespace
    """Run a verb's handler with the context the options give; map errors to exit codes."""
    from jailhouse.cli._base import Context  # noqa: PLC0415

    ctx = Context(
        uri=getattr(args, "connect", None) or os.environ.get(URI_ENV) or DEFAULT_URI,
        json=getattr(args, "json", False),
        debug=getattr(args, "debug", False),
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    try:
        code: int = handler(args, ctx)
        ctx.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FINDINGS
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        code, message = _describe(exc)
        if ctx.debug:
            import traceback  # noqa: PLC0415 - kept off the cold start

            traceback.print_exception(exc, file=ctx.stderr)
        ctx.stderr.write(f"jhctl: error: {message}\n")
        return code
    return code


def _describe(exc: BaseException) -> tuple[int, str]:
    """Map an exception to its exit code and one line of text."""
    from jailhouse.cli._base import SIM_SUGGESTION, CliError  # noqa: PLC0415
    from jailhouse.errors import (  # noqa: PLC0415 - cheap, but only needed on errors
        ConfigError,
        DeviceError,
        DeviceNotFoundError,
        StatusParseError,
        TranslationError,
    )

    notes = "; ".join(getattr(exc, "__notes__", ()))
    code = EXIT_FINDINGS
    if isinstance(exc, CliError):
        code, text = exc.code, exc.message
    elif isinstance(exc, DeviceNotFoundError):
        code = EXIT_USAGE
        text = (
            f"{exc.op}: {exc.strerror}; the jailhouse driver is not loaded (modprobe "
            f"jailhouse); {SIM_SUGGESTION}"
        )
    elif isinstance(exc, DeviceError):
        text = str(exc)
    elif isinstance(exc, StatusParseError):
        text = f"unexpected sysfs contents: {exc}"
    elif isinstance(exc, ConfigError | TranslationError):
        code, text = EXIT_USAGE, str(exc)
    elif isinstance(exc, OSError):
        code = EXIT_USAGE
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror or exc}"
    elif isinstance(exc, ValueError):
        code, text = EXIT_USAGE, str(exc)
    else:
        text = f"internal error: {type(exc).__name__}: {exc}; rerun with --debug and report it"
    if notes:
        text = f"{text} ({notes})"
    return code, " ".join(text.split())


def _silence_stdout() -> None:
    """Point stdout at /dev/null after the reader went away, so the exit flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
