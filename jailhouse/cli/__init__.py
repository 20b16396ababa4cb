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

Verbs come in groups, each registered by a ``register(verbs)`` function listed in
:data:`VERB_GROUPS`; a new group is a module with such a function plus one entry there.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Final

from jailhouse.cli import _config, _device, _host, _virsh
from jailhouse.cli._base import (
    DEFAULT_URI,
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    SIM_SUGGESTION,
    URI_ENV,
    ArgumentParser,
    CliError,
    Context,
    DeferredParser,
    Verbs,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["VERB_GROUPS", "build_parser", "main"]

VERB_GROUPS: Final[list[Callable[[Verbs], None]]] = [
    _device.register,  # enable, disable, status, console, cell ...
    _config.register,  # config show/check/from-xml/to-xml
    _host.register,  # demo, host-validate, selftest
    _virsh.register,  # define, undefine, start, shutdown, destroy, list, dominfo, dumpxml, apply
]
"""The functions that add verbs to the parser, in ``--help`` order."""


def _common_options(*, short_connect: bool = True) -> ArgumentParser:
    """Build the options every verb takes; SUPPRESS keeps a verb from resetting them.

    Args:
        short_connect: Offer ``-c`` for ``--connect``; ``cell linux`` takes ``-c`` as
            upstream's ``--cmdline`` and gets the options without it.
    """
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
    """Build the ``jhctl`` parser with every verb group of :data:`VERB_GROUPS`."""
    from jailhouse import __version__  # noqa: PLC0415 - the package root is cheap

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
    for register in VERB_GROUPS:
        register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jhctl`` with ``argv`` (``sys.argv[1:]`` by default) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    ctx = Context(
        uri=getattr(args, "connect", None) or os.environ.get(URI_ENV) or DEFAULT_URI,
        json=getattr(args, "json", False),
        debug=getattr(args, "debug", False),
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    try:
        code: int = args.handler(args, ctx)
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
