"""Typed task and DAG parameters: one meaning for a value on every path it takes.

A parameter value enters Plankton from Python (``Task(n=3)``), from the command line
(``--param n=3``), from the HTTP API (JSON) and from a past run's metadata (msgpack), and it
must mean the same on each: a rerun restores exactly the recorded value, and the task's
identity hash (:mod:`plankton.hashing`) depends on its type as well as its value. So each
declared type is compiled once, at ``Param(...)``, into a *kind* that checks Python values,
parses text, reads JSON and writes/reads the msgpack wire form; :class:`Param` adds the
name, the default and the error reporting (:class:`~plankton.errors.ParamError`, naming the
task, the parameter, the value and the expected type).

Deliberately strict, because a loose check changes the hash of "the same" task: ``True`` is
not an int, a datetime is not a date, a naive datetime is refused, and the only coercion is
int -> float for float parameters.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as _dt
import enum
import json
import types
import typing
from collections.abc import Callable
from typing import Any

from .errors import ParamError

__all__ = ["MISSING", "Param", "parse_assignment"]


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


#: The default of a required parameter. A one-member enum: compared by identity, and
#: ``copy.deepcopy`` keeps it the same object.
MISSING = _Missing.MISSING

#: msgpack's integer range; params outside it could not be recorded in a run's metadata.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: Nesting limit of bare list/dict values (also stops self-referencing lists).
MAX_DEPTH = 100

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_BASE64 = "base64:"


class _Invalid(Exception):
    """A value does not fit a kind; ``path`` locates it inside nested lists and dicts."""

    def __init__(self, reason: str, value: Any = None) -> None:
        super().__init__(reason)
        self.reason, self.value, self.path = reason, value, []

    def at(self, segment: str) -> _Invalid:
        self.path.insert(0, segment)
        return self


def _mismatch(expected: str, value: Any) -> _Invalid:
    hint = " (declare it as T | None to allow None)" if value is None else ""
    return _Invalid(f"expected {expected}, got {type(value).__name__}{hint}", value)


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


class _Kind:
    """How one declared type checks, parses and converts values (see module docstring)."""

    name = "?"
    #: What a good text looks like, for parse errors.
    example = ""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def convert(self, text: str) -> Any:
        return text

    def parse(self, text: str) -> Any:
        try:
            return self.convert(text)
        except (ValueError, OverflowError) as exc:
            detail = f"; {exc}" if isinstance(exc, json.JSONDecodeError) else ""
            raise _Invalid(f"expected {self.name}: {self.example}{detail}", text) from None

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


class _Int(_Kind):
    name, example = "int", "an integer like 42"

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _mismatch("int", value)
        if not INT_MIN <= value <= INT_MAX:
            raise _Invalid("int out of range: must fit msgpack (-2**63 .. 2**64-1)", value)
        return int(value)

    def convert(self, text: str) -> int:
        return int(text)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer"}


class _Float(_Kind):
    name, example = "float", "a number like 2.5"

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch("float", value)
        try:
            return float(value)
        except OverflowError:
            raise _Invalid("int too large to be a float", value) from None

    def convert(self, text: str) -> float:
        return float(text)

    def schema(self) -> dict[str, Any]:
        return {"type": "number"}


class _Str(_Kind):
    name, example = "str", "any text"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _mismatch("str", value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid("str is not valid Unicode (lone surrogate)", value) from None
        return str.__str__(value)  # a plain str, even from a str subclass or StrEnum member

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}


class _Bool(_Kind):
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


class _Bytes(_Kind):
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

    from_wire = from_json

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


class _Date(_Kind):
    name, example = "date", "an ISO date like 2024-01-31"

    def check(self, value: Any) -> _dt.date:
        if isinstance(value, _dt.datetime) or not isinstance(value, _dt.date):
            raise _mismatch("date", value)
        return value

    def convert(self, text: str) -> _dt.date:
        return _dt.date.fromisoformat(text.strip())

    def from_json(self, value: Any) -> Any:
        return self.parse(value) if isinstance(value, str) else value

    from_wire = from_json

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
            raise _Invalid("naive datetime: give it a time zone (tzinfo, +00:00 or Z)", value)
        try:
            value.astimezone(_dt.timezone.utc)
        except OverflowError:
            raise _Invalid("datetime out of range once converted to UTC", value) from None
        return value

    def convert(self, text: str) -> _dt.datetime:
        return _dt.datetime.fromisoformat(text.strip())

    def to_wire(self, value: _dt.datetime) -> _dt.datetime:
        return value  # msgpack timestamp; comes back as the same instant in UTC

    def to_json(self, value: _dt.datetime) -> str:
        return value.isoformat()

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}


class _Enum(_Kind):
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
                raise _Invalid(f"{self.name} has no member named {data!r} ({self.example})", data)
            return self.cls[data]
        return data

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": self.names, "title": self.name}


def _each(items: Any, fn: Callable[[Any], Any]) -> list[Any]:
    out = []
    for index, item in enumerate(items):
        try:
            out.append(fn(item))
        except _Invalid as exc:
            raise exc.at(f"[{index}]") from None
    return out


def _each_value(mapping: dict[Any, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    out = {}
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise _Invalid(f"keys must be str, got {type(key).__name__} {_short(key)}", key)
        try:
            out[str.__str__(key)] = fn(item)
        except _Invalid as exc:
            raise exc.at(f"[{key!r}]") from None
    return out


class _Container(_Kind):
    """Base of the list and dict kinds: text is JSON, and every conversion maps the items."""

    shape: type | tuple[type, ...] = ()

    def __init__(self, item: _Kind, name: str) -> None:
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

    def __init__(self, item: _Kind, name: str = "") -> None:
        super().__init__(item, name or f"list[{item.name}]")

    def each(self, value: Any, fn: Callable[[Any], Any]) -> list[Any]:
        return _each(value, fn)

    def schema(self) -> dict[str, Any]:
        item = self.item.schema()
        return {"type": "array", "items": item} if item else {"type": "array"}


class _Dict(_Container):
    shape, example = dict, 'a JSON object like {"a": 1}'

    def __init__(self, item: _Kind, name: str = "") -> None:
        super().__init__(item, name or f"dict[str, {item.name}]")

    def each(self, value: Any, fn: Callable[[Any], Any]) -> dict[str, Any]:
        return _each_value(value, fn)

    def schema(self) -> dict[str, Any]:
        item = self.item.schema()
        return {"type": "object", "additionalProperties": item} if item else {"type": "object"}


_DATA = "msgpack data (None, bool, int, float, str, bytes, aware datetime, list, dict)"


class _Data(_Kind):
    """An item of a bare ``list`` or ``dict``: any msgpack data, which round-trips untyped."""

    name = "data"

    def check(self, value: Any, depth: int = 0) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, float):
            return float(value)
        if depth > MAX_DEPTH:
            raise _Invalid(f"nested deeper than {MAX_DEPTH} levels", value)
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
        raise _Invalid(reason, value)

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


_DATA_CHECKS: dict[type, _Kind] = {
    int: _Int(),
    str: _Str(),
    bytes: _Bytes(),
    _dt.datetime: _DateTime(),
}


class _Optional(_Kind):
    def __init__(self, inner: _Kind) -> None:
        self.inner, self.name = inner, f"{inner.name} | None"

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


_SCALARS: dict[Any, type[_Kind]] = {
    int: _Int,
    float: _Float,
    str: _Str,
    bool: _Bool,
    bytes: _Bytes,
    _dt.date: _Date,
    _dt.datetime: _DateTime,
}
_SUPPORTED = (
    "int, float, str, bool, bytes, datetime.date, datetime.datetime, an enum.Enum subclass, "
    "list, dict, list[T], dict[str, T] or T | None"
)


def _kind_for(declared: Any) -> _Kind:
    """Compile a declared type into its kind; TypeError names an unsupported type."""
    if isinstance(declared, type) and declared in _SCALARS:
        return _SCALARS[declared]()
    if isinstance(declared, type) and issubclass(declared, enum.Enum):
        return _Enum(declared)
    if declared is list or declared is dict:
        return _List(_Data(), "list") if declared is list else _Dict(_Data(), "dict")
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if origin is list and len(args) == 1:
        return _List(_kind_for(args[0]))
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            raise TypeError(f"unsupported parameter type {declared!r}: dict keys must be str")
        return _Dict(_kind_for(args[1]))
    if origin in (typing.Union, types.UnionType):
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return _Optional(_kind_for(others[0]))
    raise TypeError(_unsupported(declared))


def _type_repr(declared: Any) -> str:
    return declared.__name__ if isinstance(declared, type) else repr(declared)


def _unsupported(declared: Any) -> str:
    msg = f"unsupported parameter type {_type_repr(declared)}; supported: {_SUPPORTED}"
    if isinstance(declared, str):
        msg += " (got a string: resolve annotations with typing.get_type_hints)"
    return msg


class Param:
    """A typed parameter of a task (a class attribute of ``pk.Task``) or of a DAG.

    Parameters:
        type: the declared type (see the module docstring and ``_SUPPORTED``); an
            unsupported one raises TypeError here.
        default: the value used when none is given; :data:`MISSING` makes the parameter
            required. It is validated here (ParamError if wrong) and copied on every read.
        doc: a one-line description, shown in the CLI and the OpenAPI schema.
    """

    def __init__(self, type: Any, default: Any = MISSING, *, doc: str = "") -> None:
        self.type = type
        self.doc = doc
        self.name = ""
        try:
            self._kind = _kind_for(type)
        except TypeError as exc:
            raise TypeError(f"Param({_type_repr(type)}): {exc}") from None
        self._default = default if default is MISSING else self._check_default(default)

    def __set_name__(self, owner: type, name: str) -> None:
        self.set_name(name)

    def set_name(self, name: str) -> None:
        """Name the parameter (done by ``__set_name__`` for class attributes)."""
        self.name = name

    @property
    def default(self) -> Any:
        """The default (:data:`MISSING` if required); a fresh copy on every read."""
        return copy.deepcopy(self._default)

    @property
    def required(self) -> bool:
        return self._default is MISSING

    def validate(self, value: Any, owner: str) -> Any:
        """Check ``value`` for this parameter of ``owner`` and return it (lists/dicts copied).

        The only coercion is int -> float for float parameters; anything else of the
        wrong type raises ParamError naming ``owner``, the parameter, the value and the type.
        """
        return self._guard(owner, value, self._kind.check, value)

    def parse(self, text: str, owner: str) -> Any:
        """Read a value from command-line or API text (see docs of each type), then validate."""
        if not isinstance(text, str):
            raise ParamError(owner, self.name, text, f"expected text to parse as {self._kind.name}")
        return self._guard(owner, text, lambda raw: self._kind.check(self._kind.parse(raw)), text)

    def coerce_json(self, value: Any, owner: str) -> Any:
        """Read a value decoded from JSON: native JSON types as they are, ISO strings for
        date/datetime, member names (or values) for enums, text or ``base64:...`` for bytes."""
        return self._guard(owner, value, lambda v: self._kind.check(self._kind.from_json(v)), value)

    def to_wire(self, value: Any) -> Any:
        """The msgpack-safe form of a valid value, for a run's metadata."""
        return self._kind.to_wire(value)

    def from_wire(self, data: Any, owner: str) -> Any:
        """Inverse of :meth:`to_wire` (guided by the declared type), then validate."""
        return self._guard(owner, data, lambda d: self._kind.check(self._kind.from_wire(d)), data)

    def to_json(self, value: Any) -> Any:
        """The JSON form of a valid value; :meth:`coerce_json` reads it back."""
        return self._kind.to_json(value)

    def type_name(self) -> str:
        """The declared type as users write it: ``int``, ``list[int]``, ``int | None``."""
        return self._kind.name

    def json_schema(self) -> dict[str, Any]:
        """JSON schema of the parameter's JSON form (for the OpenAPI document)."""
        schema = dict(self._kind.schema())
        if self.doc:
            schema["description"] = self.doc
        if not self.required:
            schema["default"] = self.to_json(self._default)
        return schema

    def _check_default(self, default: Any) -> Any:
        try:
            return self._kind.check(default)
        except _Invalid as exc:
            owner = f"Param({self._kind.name})"
            raise ParamError(owner, "default", default, self._reason(exc)) from None

    def _guard(self, owner: str, shown: Any, fn: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return fn(arg)
        except _Invalid as exc:
            raise ParamError(owner, self.name, shown, self._reason(exc)) from None

    def _reason(self, exc: _Invalid) -> str:
        if not exc.path:
            return exc.reason
        where = "".join(exc.path)
        return f"expected {self._kind.name}; item {where} = {_short(exc.value)}: {exc.reason}"

    def __repr__(self) -> str:
        default = "" if self.required else f", default={self._default!r}"
        return f"Param({self._kind.name}{default})"


def parse_assignment(text: str) -> tuple[str, str]:
    """Split a ``NAME=VALUE`` command-line assignment at the first ``=``."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=VALUE, got {text!r} (no '=')")
    if not name.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r} (empty name)")
    return name.strip(), value
