"""The base of the config model's records: frozen, slotted value classes without dataclasses.

The model's classes used to be ``@dataclass(frozen=True, slots=True)``; making thirteen of
them at import took longer than the rest of ``jhctl config check``, and ``dataclasses``
itself pulls in ``inspect``.  A :class:`Record` subclass writes its ``__init__`` by hand
and names its fields in ``_fields``; this base gives it what the dataclass decorator gave:

- immutability (assigning or deleting a field raises
  :class:`dataclasses.FrozenInstanceError`, as before);
- ``==`` by class and field values, ``hash`` of the field tuple, the same ``repr``;
- ``replace(**changes)``, pickling and copying;
- ``__dataclass_fields__``, built on first use, so :func:`dataclasses.fields`,
  :func:`dataclasses.replace`, :func:`dataclasses.asdict` and
  :func:`dataclasses.is_dataclass` keep working on model objects.

Nothing here is imported by a caller directly: it is the model's implementation.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import Field
    from typing import Any, ClassVar, Self

__all__ = ["PackedArray", "Record", "decoded"]

_MISSING = object()
"""Default marker: the field has no default."""


class _DataclassFields:
    """Build ``__dataclass_fields__`` for a record class on first access, then cache it."""

    def __get__(self, obj: object, owner: type[Record]) -> dict[str, Field[Any]]:
        import dataclasses  # noqa: PLC0415 - only when a caller uses dataclasses' functions

        out: dict[str, Field[Any]] = {}
        hints = {}
        for klass in reversed(owner.__mro__):
            hints.update(vars(klass).get("__annotations__", {}))
        for name in owner._fields:
            default: Any = owner._defaults.get(name, _MISSING)  # noqa: SLF001 - the record protocol
            kw_only = owner._kw_only  # noqa: SLF001 - the record protocol
            spec: Field[Any] = (
                dataclasses.field(kw_only=kw_only)
                if default is _MISSING
                else dataclasses.field(default=default, kw_only=kw_only)
            )
            spec.name = name
            spec.type = hints.get(name, "object")
            spec._field_type = dataclasses._FIELD  # type: ignore[attr-defined]  # noqa: SLF001
            out[name] = spec
        type.__setattr__(owner, "__dataclass_fields__", out)
        return out


class Record:
    """A frozen value with named fields; a subclass writes ``__slots__`` and ``__init__``.

    The constructor's parameters are the fields, in order, with their defaults; its
    ``__init__`` stores each through ``object.__setattr__``.  The class attributes below
    are read off it when the subclass is made.

    A field may be kept in a slot named ``_<field>`` behind a property of the field's
    name (the config model decodes a parsed config's arrays only when they are read);
    everything here reads fields by name and writes slots by :attr:`_slot_names`.  Other
    private slots (a cache) are no fields: a subclass sets them in ``__init__`` and again
    in ``__setstate__``.

    Attributes:
        _fields: The field names, in order (``repr``, ``==`` and ``hash`` use it).
        _slot_names: The slot that holds each field, in the same order.
        _defaults: Field name -> default value, for the fields that have one.
        _kw_only: Whether the constructor takes keywords only.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _slot_names: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, object]] = {}
    _kw_only: ClassVar[bool] = False

    def __init_subclass__(cls) -> None:
        """Read the fields, their defaults and keyword-onliness off the subclass's ``__init__``.

        Raises:
            TypeError: ``__slots__`` does not name exactly the constructor's parameters.
        """
        init = cls.__init__
        code = init.__code__
        positional = code.co_varnames[1 : code.co_argcount]
        names = code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]
        slots: set[str] = set(cls.__slots__)
        slot_names = tuple(name if name in slots else f"_{name}" for name in names)
        extra = slots.difference(slot_names)
        if len(set(slot_names) & slots) != len(names) or any(not s.startswith("_") for s in extra):
            raise TypeError(f"{cls.__name__}: __slots__ must name the fields of __init__")
        defaults = dict(init.__kwdefaults__ or {})
        if init.__defaults__:
            defaults.update(
                zip(positional[-len(init.__defaults__) :], init.__defaults__, strict=True)
            )
        cls._fields = names
        cls._slot_names = slot_names
        cls._defaults = defaults
        cls._kw_only = not positional
        type.__setattr__(cls, "__match_args__", positional)

    if TYPE_CHECKING:
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    else:
        __dataclass_fields__ = _DataclassFields()

    def __setattr__(self, name: str, value: object) -> None:
        """Refuse: records are immutable (use :meth:`replace`)."""
        from dataclasses import FrozenInstanceError  # noqa: PLC0415 - only on the error

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        """Refuse: records are immutable."""
        from dataclasses import FrozenInstanceError  # noqa: PLC0415 - only on the error

        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[object, ...]:
        """Return the field values in order."""
        return tuple([getattr(self, name) for name in self._fields])

    def __eq__(self, other: object) -> bool:
        """Compare by class and field values, as a dataclass does."""
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        """Hash the field values, as a frozen dataclass does."""
        return hash(self._values())

    def __repr__(self) -> str:
        """Render as ``ClassName(field=value, ...)``, as a dataclass does."""
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({body})"

    def replace(self, **changes: object) -> Self:
        """Return a copy with some fields changed.

        Raises:
            TypeError: A name is not a field of the record.
        """
        values = {name: getattr(self, name) for name in self._fields}
        values.update(changes)
        return self.__class__(**values)

    def __getstate__(self) -> tuple[object, ...]:
        """Pickle the field values."""
        return self._values()

    def __setstate__(self, state: tuple[object, ...]) -> None:
        """Restore the field values after unpickling."""
        for slot, value in zip(self._slot_names, state, strict=True):
            object.__setattr__(self, slot, value)


class PackedArray:
    """An array of a parsed config kept as its bytes, decoded into a tuple when first read.

    Only arrays whose bytes and values map one to one (no padding, no spare bits) are kept
    this way, so packing the bytes again gives what packing the decoded values would.

    Attributes:
        raw: The array's bytes in the file.
        count: How many elements they hold.
        decode: Turns ``raw`` into the tuple of elements.
    """

    __slots__ = ("count", "decode", "raw")

    def __init__(self, raw: bytes, count: int, decode: Callable[[bytes], tuple[Any, ...]]) -> None:
        """Keep the bytes until the array is read."""
        self.raw = raw
        self.count = count
        self.decode = decode

    def __len__(self) -> int:
        """Return the number of elements, without decoding them."""
        return self.count


def decoded(record: Record, slot: str, array: PackedArray) -> Any:  # noqa: ANN401 - the field's
    """Decode ``array``, store the tuple in ``record``'s ``slot`` and return it."""
    value = array.decode(array.raw)
    object.__setattr__(record, slot, value)
    return value
