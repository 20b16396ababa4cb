"""The ``jhctl`` parser classes: argparse with one-line errors, and verbs built on first use.

Kept apart from :mod:`jailhouse.cli._base` so that importing a verb module does not import
argparse; :mod:`jailhouse.cli._base` re-exports these names.
"""

from __future__ import annotations

import argparse

from jailhouse.cli._base import EXIT_USAGE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn, Protocol

    from jailhouse.cli._base import Context
else:
    Protocol = object

__all__ = ["ArgumentParser", "DeferredParser", "Handler"]


class Handler(Protocol):
    """A verb's implementation: gets the parsed arguments and the context, returns an exit code."""

    def __call__(self, args: argparse.Namespace, ctx: Context, /) -> int:
        """Run the verb."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors that point at ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Print ``jhctl VERB: error: ...; see `jhctl VERB --help``` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


class DeferredParser(ArgumentParser):
    """A verb's parser that builds itself on first use, so a run builds only its own verb's.

    argparse builds the parser of every sub-command up front, and ``jhctl`` has about
    thirty: building them all took longer than the rest of ``jhctl --version``.  Made by
    ``add_parser`` (it is the ``parser_class`` of every verb list), this parser keeps its
    constructor's arguments and records :meth:`add_argument` and :meth:`set_defaults`;
    anything else (parsing, help, :meth:`add_subparsers`, reading an attribute) first
    builds the real parser and replays the recorded calls in order, so it ends up
    exactly as an eager parser would be.

    While the parser is not built, :meth:`add_argument` returns ``None``: the action
    does not exist yet.
    """

    def __init__(self, **kwargs: Any) -> None:  # noqa: ANN401 - ArgumentParser's keywords
        """Keep the arguments for later; ``add_parser`` passes only keywords."""
        self.__dict__["_deferred"] = (kwargs, [])

    def add_argument(  # type: ignore[override]  # None while deferred (see the class)
        self,
        *args: str,
        **kwargs: Any,  # noqa: ANN401 - add_argument's keywords
    ) -> argparse.Action | None:
        """Record an argument, or add it once the parser is built."""
        deferred = self.__dict__.get("_deferred")
        if deferred is None:
            return super().add_argument(*args, **kwargs)
        deferred[1].append((ArgumentParser.add_argument, args, kwargs))
        return None

    def set_defaults(self, **kwargs: Any) -> None:  # noqa: ANN401 - any default values
        """Record defaults, or set them once the parser is built."""
        deferred = self.__dict__.get("_deferred")
        if deferred is None:
            super().set_defaults(**kwargs)
            return
        deferred[1].append((ArgumentParser.set_defaults, (), kwargs))

    def add_subparsers(
        self,
        **kwargs: Any,  # noqa: ANN401 - add_subparsers' keywords
    ) -> argparse._SubParsersAction[Any]:
        """Build the parser, then add a sub-command list to it."""
        self._build()
        return super().add_subparsers(**kwargs)

    def _build(self) -> None:
        deferred = self.__dict__.pop("_deferred", None)
        if deferred is None:
            return
        kwargs, calls = deferred
        ArgumentParser.__init__(self, **kwargs)
        for method, args, call_kwargs in calls:
            method(self, *args, **call_kwargs)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the built parser has
        """Build the parser on the first read of an attribute it does not have yet."""
        if "_deferred" not in self.__dict__:
            raise AttributeError(name)
        self._build()
        return getattr(self, name)
