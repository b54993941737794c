"""Parameter types ("kinds"): how each declared type checks, parses, reads and writes values.

:class:`plankton.authoring.params.Param` compiles its declared type once, with
:func:`kind_for`, into a :class:`Kind`: an object that checks Python values, parses
command-line text, reads JSON and writes/reads the msgpack wire form of a run's metadata.
A value that does not fit raises :class:`Invalid`, which ``Param`` turns into a
:class:`~plankton.errors.ParamError`.

Deliberately strict, because a loose check changes the hash of "the same" task: ``True`` is
not an int, a datetime is not a date, a naive datetime is refused, and the only coercion is
int -> float for float parameters.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import enum
import json
import types
import typing
from collections.abc import Callable
from typing import Any

from plankton.authoring.secret import FORMS as secret_forms
from plankton.authoring.secret import Secret

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "SUPPORTED",
    "Invalid",
    "Kind",
    "kind_for",
    "short",
    "type_repr",
]

#: msgpack's integer range; params outside it could not be recorded in a run's metadata.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: Nesting limit of bare list/dict values (also stops self-referencing lists).
MAX_DEPTH = 100

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_BASE64 = "base64:"


class Invalid(Exception):
    """A value does not fit a kind; ``path`` locates it inside nested lists and dicts."""

    def __init__(self, reason: str, value: Any = None) -> None:
        super().__init__(reason)
        self.reason, self.value = reason, value
        self.path: list[str] = []

    def at(self, segment: str) -> Invalid:
        self.path.insert(0, segment)
        return self


def _mismatch(expected: str, value: Any) -> Invalid:
    hint = " (declare it as T | None to allow None)" if value is None else ""
    return Invalid(f"expected {expected}, got {type(value).__name__}{hint}", value)


def short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters for error messages."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


class Kind:
    """How one declared type checks, parses and converts values (see module docstring)."""

    name = "?"
    #: What a good text looks like, for parse errors.
    example = ""
    #: Errors must not echo a value given for this type (a secret given by mistake).
    masks_values = False

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def convert(self, text: str) -> Any:
        return text

    def parse(self, text: str) -> Any:
        try:
            return self.convert(text)
        except (ValueError, OverflowError) as exc:
            detail = f"; {exc}" if isinstance(exc, json.JSONDecodeError) else ""
            raise Invalid(f"expected {self.name}: {self.example}{detail}", text) from None

    def from_json(self, value: Any) -> Any:
        return value

    def to_wire(self, value: Any) -> Any:
        return value

    def from_wire(self, data: Any) -> Any:
        return data

    def to_json(self, value: Any) -> Any:
        return self.to_wire(value)

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError


class _Int(Kind):
    name, example = "int", "an integer like 42"

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _mismatch("int", value)
        if not INT_MIN <= value <= INT_MAX:
            raise Invalid("int out of range: must fit msgpack (-2**63 .. 2**64-1)", value)
        return int(value)

    def convert(self, text: str) -> int:
        return int(text)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer"}


class _Float(Kind):
    name, example = "float", "a number like 2.5"

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch("float", value)
        try:
            return float(value)
        except OverflowError:
            raise Invalid("int too large to be a float", value) from None

    def convert(self, text: str) -> float:
        return float(text)

    def schema(self) -> dict[str, Any]:
        return {"type": "number"}


class _Str(Kind):
    name, example = "str", "any text"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _mismatch("str", value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("str is not valid Unicode (lone surrogate)", value) from None
        return str.__str__(value)  # a plain str, even from a str subclass or StrEnum member

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}


class _Secret(Kind):
    """A reference to a secret (plankton.authoring.secret): stored and shown as the reference."""

    name, example = "secret", "env:VARIABLE or file:/path"
    masks_values = True

    def check(self, value: Any) -> Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise Invalid(
                f"expected a secret reference ({secret_forms}), got {type(value).__name__}", "***"
            )
        try:
            return Secret(value)
        except ValueError as exc:
            raise Invalid(str(exc), "***") from None

    def parse(self, text: str) -> Secret:
        return self.check(text)

    def from_json(self, value: Any) -> Any:
        return self.check(value)

    def to_wire(self, value: Any) -> str:
        return str.__str__(value)

    def from_wire(self, data: Any) -> Any:
        return Secret(data.decode() if isinstance(data, bytes) else data)

    def to_json(self, value: Any) -> str:
        return str.__str__(value)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "secret-reference", "pattern": "^(env|file):.+"}


class _Bool(Kind):
    name, example = "bool", "one of true/false/1/0/yes/no"

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _mismatch("bool", value)
        return value

    def convert(self, text: str) -> bool:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(text)

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


class _Bytes(Kind):
    name, example = "bytes", "UTF-8 text, or base64 after a 'base64:' prefix"

    def check(self, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise _mismatch("bytes", value)
        return bytes(value)

    def convert(self, text: str) -> bytes:
        if text.startswith(_BASE64):
            try:
                return base64.b64decode(text[len(_BASE64) :], validate=True)
            except binascii.Error as exc:
                raise ValueError(str(exc)) from exc
        return text.encode("utf-8")

    def from_json(self, value: Any) -> Any:
        return self.parse(value) if isinstance(value, str) else value

    def from_wire(self, data: Any) -> Any:
        return self.from_json(data)

    def to_json(self, value: bytes) -> str:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = _BASE64
        if text.startswith(_BASE64):
            return _BASE64 + base64.b64encode(value).decode("ascii")
        return text

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "description": self.example}


class _Date(Kind):
    name, example = "date", "an ISO date like 2024-01-31"

    def check(self, value: Any) -> _dt.date:
        if isinstance(value, _dt.datetime) or not isinstance(value, _dt.date):
            raise _mismatch("date", value)
        return value

    def convert(self, text: str) -> _dt.date:
        return _dt.date.fromisoformat(text.strip())

    def from_json(self, value: Any) -> Any:
        return self.parse(value) if isinstance(value, str) else value

    def from_wire(self, data: Any) -> Any:
        return self.from_json(data)

    def to_wire(self, value: _dt.date) -> str:
        return value.isoformat()

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


class _DateTime(_Date):
    name = "datetime"
    example = "an ISO datetime with an offset, like 2024-01-31T12:00:00+00:00 or ...Z"

    def check(self, value: Any) -> _dt.datetime:
        if not isinstance(value, _dt.datetime):
            raise _mismatch("datetime", value)
        if value.utcoffset() is None:
            raise Invalid("naive datetime: give it a time zone (tzinfo, +00:00 or Z)", value)
        try:
            value.astimezone(_dt.timezone.utc)
        except OverflowError:
            raise Invalid("datetime out of range once converted to UTC", value) from None
        return value

    def convert(self, text: str) -> _dt.datetime:
        return _dt.datetime.fromisoformat(text.strip())

    def to_wire(self, value: _dt.datetime) -> _dt.datetime:  # type: ignore[override]
        return value  # msgpack timestamp; comes back as the same instant in UTC

    def to_json(self, value: _dt.datetime) -> str:
        return value.isoformat()

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}


class _Enum(Kind):
    def __init__(self, cls: type[enum.Enum]) -> None:
        self.cls, self.name = cls, cls.__name__
        self.names = list(cls.__members__)
        self.example = "one of " + ", ".join(self.names)

    def check(self, value: Any) -> enum.Enum:
        if not isinstance(value, self.cls):
            raise _mismatch(f"{self.name} ({self.example})", value)
        return value

    def convert(self, text: str) -> enum.Enum:
        if text in self.cls.__members__:
            return self.cls[text]
        for member in self.cls:
            if str(member.value) == text:
                return member
        raise ValueError(text)

    def from_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.parse(value)
        for member in self.cls:
            if type(member.value) is type(value) and member.value == value:
                return member
        return value

    def to_wire(self, value: enum.Enum) -> str:
        return value.name

    def from_wire(self, data: Any) -> Any:
        if isinstance(data, str):
            if data not in self.cls.__members__:
                raise Invalid(f"{self.name} has no member named {data!r} ({self.example})", data)
            return self.cls[data]
        return data

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": self.names, "title": self.name}


def _each(items: Any, fn: Callable[[Any], Any]) -> list[Any]:
    out = []
    for index, item in enumerate(items):
        try:
            out.append(fn(item))
        except Invalid as exc:
            raise exc.at(f"[{index}]") from None
    return out


def _each_value(mapping: dict[Any, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    out = {}
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise Invalid(f"keys must be str, got {type(key).__name__} {short(key)}", key)
        try:
            out[str.__str__(key)] = fn(item)
        except Invalid as exc:
            raise exc.at(f"[{key!r}]") from None
    return out


class _Container(Kind):
    """Base of the list and dict kinds: text is JSON, and every conversion maps the items."""

    shape: type | tuple[type, ...] = ()

    def __init__(self, item: Kind, name: str) -> None:
        self.item, self.name = item, name

    def each(self, value: Any, fn: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def check(self, value: Any) -> Any:
        if not isinstance(value, self.shape):
            raise _mismatch(self.name, value)
        return self.each(value, self.item.check)

    def convert(self, text: str) -> Any:
        return self.from_json(json.loads(text))

    def _map(self, value: Any, fn: Callable[[Any], Any]) -> Any:
        # A value of the wrong shape is left for check() to report.
        return self.each(value, fn) if isinstance(value, self.shape) else value

    def from_json(self, value: Any) -> Any:
        return self._map(value, self.item.from_json)

    def to_wire(self, value: Any) -> Any:
        return self._map(value, self.item.to_wire)

    def from_wire(self, data: Any) -> Any:
        return self._map(data, self.item.from_wire)

    def to_json(self, value: Any) -> Any:
        return self._map(value, self.item.to_json)


class _List(_Container):
    shape, example = (list, tuple), "a JSON array like [1, 2]"

    def __init__(self, item: Kind, name: str = "") -> None:
        super().__init__(item, name or f"list[{item.name}]")

    def each(self, value: Any, fn: Callable[[Any], Any]) -> list[Any]:
        return _each(value, fn)

    def schema(self) -> dict[str, Any]:
        item = self.item.schema()
        return {"type": "array", "items": item} if item else {"type": "array"}


class _Dict(_Container):
    shape, example = dict, 'a JSON object like {"a": 1}'

    def __init__(self, item: Kind, name: str = "") -> None:
        super().__init__(item, name or f"dict[str, {item.name}]")

    def each(self, value: Any, fn: Callable[[Any], Any]) -> dict[str, Any]:
        return _each_value(value, fn)

    def schema(self) -> dict[str, Any]:
        item = self.item.schema()
        return {"type": "object", "additionalProperties": item} if item else {"type": "object"}


_DATA = "msgpack data (None, bool, int, float, str, bytes, aware datetime, list, dict)"


class _Data(Kind):
    """An item of a bare ``list`` or ``dict``: any msgpack data, which round-trips untyped."""

    name = "data"

    def check(self, value: Any, depth: int = 0) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, float):
            return float(value)
        if depth > MAX_DEPTH:
            raise Invalid(f"nested deeper than {MAX_DEPTH} levels", value)
        checker = _DATA_CHECKS.get(type(value))
        if checker is not None:
            return checker.check(value)
        if isinstance(value, (list, tuple)):
            return _each(value, lambda item: self.check(item, depth + 1))
        if isinstance(value, dict):
            return _each_value(value, lambda item: self.check(item, depth + 1))
        hint = " (declare a typed list[T] or dict[str, T] for it)"
        typed = isinstance(value, (_dt.date, enum.Enum))
        reason = f"expected {_DATA}, got {type(value).__name__}{hint if typed else ''}"
        raise Invalid(reason, value)

    def to_json(self, value: Any) -> Any:
        kind = _DATA_CHECKS.get(type(value))
        if kind is not None:
            return kind.to_json(value)
        if isinstance(value, list):
            return [self.to_json(item) for item in value]
        if isinstance(value, dict):
            return {key: self.to_json(item) for key, item in value.items()}
        return value

    def schema(self) -> dict[str, Any]:
        return {}


_DATA_CHECKS: dict[type, Kind] = {
    int: _Int(),
    str: _Str(),
    bytes: _Bytes(),
    _dt.datetime: _DateTime(),
}


class _Optional(Kind):
    def __init__(self, inner: Kind) -> None:
        self.inner, self.name = inner, f"{inner.name} | None"
        self.masks_values = inner.masks_values

    def check(self, value: Any) -> Any:
        return None if value is None else self.inner.check(value)

    def parse(self, text: str) -> Any:
        # "null" always means None; "" too, unless it is a valid value of the inner type.
        empty_is_value = isinstance(self.inner, (_Str, _Bytes))
        if text == "null" or (text == "" and not empty_is_value):
            return None
        return self.inner.parse(text)

    def from_json(self, value: Any) -> Any:
        return None if value is None else self.inner.from_json(value)

    def to_wire(self, value: Any) -> Any:
        return None if value is None else self.inner.to_wire(value)

    def from_wire(self, data: Any) -> Any:
        return None if data is None else self.inner.from_wire(data)

    def to_json(self, value: Any) -> Any:
        return None if value is None else self.inner.to_json(value)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [self.inner.schema() or {}, {"type": "null"}]}


_SCALARS: dict[Any, type[Kind]] = {
    int: _Int,
    float: _Float,
    str: _Str,
    bool: _Bool,
    bytes: _Bytes,
    _dt.date: _Date,
    _dt.datetime: _DateTime,
    Secret: _Secret,
}
#: The declared types a Param accepts, as error messages list them.
SUPPORTED = (
    "int, float, str, bool, bytes, datetime.date, datetime.datetime, plankton.Secret, "
    "an enum.Enum subclass, "
    "list, dict, list[T], dict[str, T] or T | None"
)


def kind_for(declared: Any) -> Kind:
    """Compile a declared type into its kind; TypeError names an unsupported type."""
    if isinstance(declared, type) and declared in _SCALARS:
        return _SCALARS[declared]()
    if isinstance(declared, type) and issubclass(declared, enum.Enum):
        return _Enum(declared)
    if declared is list or declared is dict:
        return _List(_Data(), "list") if declared is list else _Dict(_Data(), "dict")
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if origin is list and len(args) == 1:
        return _List(kind_for(args[0]))
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            raise TypeError(f"unsupported parameter type {declared!r}: dict keys must be str")
        return _Dict(kind_for(args[1]))
    if origin in (typing.Union, types.UnionType):
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return _Optional(kind_for(others[0]))
    raise TypeError(_unsupported(declared))


def type_repr(declared: Any) -> str:
    """A declared type as users write it in messages: ``int``, not ``<class 'int'>``."""
    return declared.__name__ if isinstance(declared, type) else repr(declared)


def _unsupported(declared: Any) -> str:
    msg = f"unsupported parameter type {type_repr(declared)}; supported: {SUPPORTED}"
    if isinstance(declared, str):
        msg += " (got a string: resolve annotations with typing.get_type_hints)"
    return msg
