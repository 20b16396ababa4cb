"""What every verb shares: the verb registry, the run context, output and argument helpers.

Nothing heavy is imported here: a verb imports lxml, the cffi shim or the hypervisor inside
its handler, so ``jhctl --version`` and ``jhctl --help`` start fast.  Not even argparse:
the parser classes (:class:`ArgumentParser`, :class:`DeferredParser`, :class:`Handler`)
live in :mod:`jailhouse.cli._parser` and are imported from here on first use, so the fast
path of ``jhctl config check`` runs a handler without building a parser.
"""

from __future__ import annotations

import enum
import os
import sys

from jailhouse.cli import (
    DEFAULT_URI,
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    URI_ENV,
)

TYPE_CHECKING = False  # not typing's: a verb that needs no typing does not import it
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable
    from pathlib import Path
    from typing import Any, Final, TextIO

    from jailhouse.cli._parser import ArgumentParser, DeferredParser, Handler
    from jailhouse.config.model import CellConfig, SystemConfig
    from jailhouse.hypervisor import Hypervisor

__all__ = [
    "DEFAULT_URI",
    "EXIT_FINDINGS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "URI_ENV",
    "CliError",
    "Context",
    "DeferredParser",
    "Handler",
    "Progress",
    "Verbs",
    "cell_ref",
    "load_cell_file",
    "load_config_file",
    "load_system_file",
    "parse_address",
    "parse_image_spec",
    "to_json",
]

SIM_SUGGESTION: Final = (
    "without hardware, try `jhctl demo` or a simulated host: "
    "jhctl -c 'sim:///tmp/jh-sim?arch=arm64&cpus=4' ..."
)
"""Appended to the error when the device node is missing."""


class CliError(Exception):
    """A problem the CLI reports in one line, with its exit code.

    Attributes:
        message: What is wrong and what to do.
        code: The exit code.
    """

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        """Record the message and the exit code."""
        super().__init__(message)
        self.message = message
        self.code = code


class Verbs:
    """Registers verbs on the parser; each verb group's ``register(verbs)`` calls :meth:`add`.

    Args:
        subparsers: The argparse sub-command action to add to.
        common: The parent parser with the options every verb takes (``--json``,
            ``--connect``, ``--debug``).
        prefix: The words before these verbs (``"jhctl cell"``), for examples.
        common_long: The same options without the short ``-c`` for ``--connect``, for a
            verb that takes ``-c`` itself (``cell linux``, as upstream's tool does).
    """

    def __init__(
        self,
        subparsers: argparse._SubParsersAction[Any],
        common: ArgumentParser,
        prefix: str = "jhctl",
        *,
        common_long: ArgumentParser | None = None,
    ) -> None:
        """Wrap the sub-command action."""
        self._sub = subparsers
        self._common = common
        self._common_long = common_long or common
        self.prefix = prefix
        self.names: list[str] = []

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        help: str,  # noqa: A002 - argparse's own keyword
        examples: Iterable[str],
        description: str | None = None,
        short_connect: bool = True,
    ) -> ArgumentParser:
        """Add a verb.

        Args:
            name: The verb, such as ``"create"``.
            handler: What runs it.
            help: One line for the verb list.
            examples: Command lines shown in ``--help`` (at least one).
            description: Longer text for ``--help``; ``help`` by default.
            short_connect: Whether ``-c`` means ``--connect`` after the verb; False
                leaves ``-c`` to the verb (``--connect``, and ``-c`` before the verb,
                still connect).

        Returns:
            The verb's parser, to add arguments to.

        Raises:
            ValueError: No example is given.
        """
        import argparse  # noqa: PLC0415 - only when a parser is built

        lines = list(examples)
        if not lines:
            raise ValueError(f"verb {name!r}: give at least one example for --help")
        epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
        parser: ArgumentParser = self._sub.add_parser(
            name,
            help=help,
            description=description or help,
            epilog=epilog,
            parents=[self._common if short_connect else self._common_long],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(handler=handler)
        self.names.append(name)
        return parser

    def group(self, name: str, *, help: str, examples: Iterable[str]) -> Verbs:  # noqa: A002
        """Add a verb that takes sub-verbs (``jhctl cell ...``) and return their registry."""
        import argparse  # noqa: PLC0415 - only when a parser is built

        from jailhouse.cli._parser import DeferredParser  # noqa: PLC0415

        lines = list(examples)
        parser = self._sub.add_parser(
            name,
            help=help,
            description=help,
            epilog="examples:\n" + "\n".join(f"  {line}" for line in lines),
            parents=[self._common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub = parser.add_subparsers(
            dest=f"{name}_verb", metavar="VERB", required=True, parser_class=DeferredParser
        )
        self.names.append(name)
        return Verbs(sub, self._common, f"{self.prefix} {name}", common_long=self._common_long)


class Context:
    """What a verb needs besides its arguments: where to print, and how to connect.

    Attributes:
        uri: The connection URI (``--connect``, else ``$JAILHOUSE_URI``, else the device).
        json: Print one JSON document on stdout instead of text.
        debug: Print tracebacks.
        stdout: Where results go.
        stderr: Where errors, notes and progress go.
    """

    def __init__(
        self,
        uri: str,
        *,
        json: bool = False,
        debug: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        """Remember the options; the streams default to the current ``sys.stdout``/``stderr``."""
        self.uri = uri
        self.json = json
        self.debug = debug
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr

    def connect(self) -> Hypervisor:
        """Open the hypervisor named by :attr:`uri`.

        Raises:
            DeviceNotFoundError: The device node is missing.
            ValueError: The URI is malformed.
        """
        from jailhouse.hypervisor import open as open_uri  # noqa: PLC0415 - loads the cffi shim

        return open_uri(self.uri)

    @property
    def interactive(self) -> bool:
        """Whether a person watches: stdout and stderr are terminals and no JSON is asked for."""
        return not self.json and _isatty(self.stdout) and _isatty(self.stderr)

    def emit(self, data: object, text: str | Callable[[], str]) -> None:
        """Print a result: ``data`` as JSON with ``--json``, else ``text``.

        Args:
            data: A JSON-ready value.
            text: The text for people (a callable is called only without ``--json``).
        """
        if self.json:
            import json  # noqa: PLC0415 - kept off the cold start

            json.dump(data, self.stdout, indent=2)
            self.stdout.write("\n")
            return
        body = text() if callable(text) else text
        if body:
            self.stdout.write(body if body.endswith("\n") else body + "\n")

    def note(self, message: str) -> None:
        """Print a line for people on stderr (never with ``--json``)."""
        if not self.json:
            self.stderr.write(message + "\n")
            self.stderr.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line progress bar on stderr, redrawn in place; silent unless enabled.

    Args:
        label: What is being done.
        total: Units of work (bytes).
        stream: Where to draw.
        enabled: Whether to draw at all (the caller decides: a terminal, big work).
    """

    WIDTH: Final = 30

    def __init__(self, label: str, total: int, *, stream: TextIO, enabled: bool) -> None:
        """Start at zero; nothing is drawn yet."""
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.enabled = enabled
        self._drawn = -1

    def advance(self, amount: int) -> None:
        """Add ``amount`` units of finished work and redraw when the percentage changed."""
        self.done = min(self.done + amount, self.total)
        percent = self.done * 100 // self.total
        if self.enabled and percent != self._drawn:
            filled = self.done * self.WIDTH // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {percent:3d}% {_mib(self.done)}/{_mib(self.total)} MiB"
            )
            self.stream.flush()
            self._drawn = percent

    def finish(self) -> None:
        """End the line if anything was drawn."""
        if self.enabled and self._drawn >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


# -- argument parsing helpers ---------------------------------------------------------------


def parse_address(text: str) -> int:
    """Parse an address given as hex (``0x1000``) or decimal (``4096``).

    Raises:
        ValueError: The text is not a number from 0 to 2**64 - 1.
    """
    stripped = text.strip()
    try:
        value = int(stripped, 0)
    except ValueError:
        if not stripped.isdigit():  # int(, 0) refuses decimal with leading zeros
            raise ValueError(
                f"address {text!r} is not a number (hex like 0x1000, or decimal)"
            ) from None
        value = int(stripped, 10)
    if not 0 <= value < 1 << 64:
        raise ValueError(f"address {text!r} is outside 0 .. 2**64-1")
    return value


def parse_image_spec(text: str) -> tuple[Path, int]:
    """Split ``IMAGE[@ADDR]`` into a path and an address (0 when none is given).

    A path that itself contains ``@`` is taken whole when the part after the last ``@``
    is not a number and the whole text names an existing file.

    Raises:
        CliError: The address is not a number (exit 2).
    """
    from pathlib import Path  # noqa: PLC0415 - kept off the cold start

    path, sep, addr = text.rpartition("@")
    if not sep:
        return Path(text), 0
    if not path:
        raise CliError(f"image {text!r}: no file before '@'; write IMAGE@ADDR")
    try:
        return Path(path), parse_address(addr)
    except ValueError as exc:
        if Path(text).exists():
            return Path(text), 0
        raise CliError(f"image {text!r}: {exc}") from exc


def cell_ref(text: str, *, by_name: bool = False) -> int | str:
    """Turn a ``NAME|ID`` argument into an id (all digits) or a name.

    Args:
        text: The argument.
        by_name: Take it as a name even if it is all digits (``--name``).
    """
    if not by_name and text.isdigit():
        return int(text)
    return text


# -- loading input files ----------------------------------------------------------------------


def load_config_file(path: str | os.PathLike[str]) -> CellConfig | SystemConfig:
    """Load a cell or system config file, naming the file in every error.

    Raises:
        CliError: The file is not a valid config (exit 2).
        OSError: It cannot be read.
    """
    from jailhouse.config.model import load_config  # noqa: PLC0415
    from jailhouse.errors import ConfigError  # noqa: PLC0415

    try:
        return load_config(os.fspath(path))  # a str: pathlib is not imported for this
    except ConfigError as exc:
        raise CliError(f"{os.fspath(path)}: not a valid config: {exc}") from exc
    except IsADirectoryError as exc:
        raise CliError(f"{os.fspath(path)}: is a directory, not a config file") from exc


def load_system_file(path: str | os.PathLike[str]) -> SystemConfig:
    """Load a system config file.

    Raises:
        CliError: The file is not a valid system config (exit 2).
        OSError: It cannot be read.
    """
    from jailhouse.config.model import SystemConfig  # noqa: PLC0415

    config = load_config_file(path)
    if not isinstance(config, SystemConfig):
        raise CliError(
            f"{os.fspath(path)}: is the cell config {config.name!r}, not a system config "
            "(signature JHSYS); give the system config here"
        )
    return config


def load_cell_file(path: str | os.PathLike[str]) -> CellConfig:
    """Load a (non-root) cell config file.

    Raises:
        CliError: The file is not a valid cell config (exit 2).
        OSError: It cannot be read.
    """
    from jailhouse.config.model import SystemConfig  # noqa: PLC0415

    config = load_config_file(path)
    if isinstance(config, SystemConfig):
        raise CliError(
            f"{os.fspath(path)}: is a system config ({config.root_cell.name!r}), not a cell "
            "config; give a cell config here (signature JHCLL)"
        )
    return config


# -- JSON ---------------------------------------------------------------------------------------


def to_json(value: object) -> Any:  # noqa: ANN401 - JSON values are any of six types
    """Turn configs, statuses and their parts into JSON-ready values.

    The rules, documented for ``--json`` users:

    - numbers, addresses and sizes included, are JSON integers (JSON has no hex; the
      text output prints addresses in hex);
    - a flag word is its integer, with a ``<field>_names`` list of flag names beside it
      (unknown bits appear as a hex string, such as ``"0x200"``);
    - enumerations (arch, console type, PCI type, cell state) are their names;
    - CPU sets are sorted lists of CPU numbers; bytes are hex strings;
    - dataclasses become objects with their fields in order.
    """
    from dataclasses import fields, is_dataclass  # noqa: PLC0415 - kept off the cold start

    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, enum.IntFlag):
        return int(value)
    if isinstance(value, enum.Enum):
        return str(value.name)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, frozenset | set):
        return sorted(to_json(v) for v in value)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): to_json(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in fields(value):
            item = getattr(value, f.name)
            out[f.name] = to_json(item)
            if isinstance(item, enum.IntFlag):
                out[f"{f.name}_names"] = flag_names(item)
        return out
    return str(value)


def flag_names(flags: enum.IntFlag) -> list[str]:
    """List the names of the set flags, unknown bits last as one hex string."""
    names: list[str] = []
    known = 0
    for member in type(flags):
        if member.value and member.value & flags.value == member.value:
            names.append(str(member.name))
            known |= member.value
    rest = flags.value & ~known
    if rest:
        names.append(hex(rest))
    return names


_PARSER_NAMES: Final = frozenset({"ArgumentParser", "DeferredParser", "Handler"})


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module-level lazy attribute hook
    """Import the parser classes from :mod:`jailhouse.cli._parser` on first use."""
    if name not in _PARSER_NAMES:
        raise AttributeError(f"module 'jailhouse.cli._base' has no attribute {name!r}")
    from jailhouse.cli import _parser  # noqa: PLC0415 - argparse only when a parser is built

    value = getattr(_parser, name)
    globals()[name] = value
    return value
