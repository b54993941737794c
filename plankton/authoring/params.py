"""Typed task and DAG parameters: one meaning for a value on every path it takes.

A parameter value enters Plankton from Python (``Task(n=3)``), from the command line
(``--param n=3``), from the HTTP API (JSON) and from a past run's metadata (msgpack), and it
must mean the same on each: a rerun restores exactly the recorded value, and the task's
identity hash (:mod:`plankton.authoring.hashing`) depends on its type as well as its value.
So each declared type is compiled once, at ``Param(...)``, into a *kind*
(:mod:`plankton.authoring.paramtypes`) that
checks Python values, parses text, reads JSON and writes/reads the msgpack wire form;
:class:`Param` adds the name, the default and the error reporting
(:class:`~plankton.errors.ParamError`, naming the task, the parameter, the value and the
expected type).

Deliberately strict (the paramtypes module says why): ``True`` is not an int, a datetime is not a
date, a naive datetime is refused, and the only coercion is int -> float for float parameters.
"""

from __future__ import annotations

import copy
import datetime as _dt
import enum
from collections.abc import Callable, Mapping
from typing import Any

from plankton.authoring.paramtypes import (
    INT_MAX as INT_MAX,  # re-exported: the bounds were defined here
)
from plankton.authoring.paramtypes import INT_MIN as INT_MIN
from plankton.authoring.paramtypes import MAX_DEPTH as MAX_DEPTH
from plankton.authoring.paramtypes import Invalid, kind_for, short, type_repr
from plankton.errors import ParamError

__all__ = ["MISSING", "Param"]


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


#: The default of a required parameter. A one-member enum: compared by identity, and
#: ``copy.deepcopy`` keeps it the same object.
MISSING = _Missing.MISSING


#: Types whose values need no copy (a default of one of these is shared).
_IMMUTABLE = frozenset({type(None), bool, int, float, str, bytes, _dt.date, _dt.datetime})


class Param:
    """A typed parameter of a task (a class attribute of ``pk.Task``) or of a DAG.

    Parameters:
        type: the declared type (one of :data:`plankton.authoring.paramtypes.SUPPORTED`); an
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
            self._kind = kind_for(type)
        except TypeError as exc:
            raise TypeError(f"Param({type_repr(type)}): {exc}") from None
        self._default = default if default is MISSING else self._check_default(default)

    def __set_name__(self, owner: type, name: str) -> None:
        self.set_name(name)

    def set_name(self, name: str) -> None:
        """Name the parameter (done by ``__set_name__`` for class attributes)."""
        self.name = name

    @property
    def default(self) -> Any:
        """The default (:data:`MISSING` if required); a fresh copy on every read (immutable
        values are their own copy: building 100,000 tasks reads defaults 200,000 times)."""
        default = self._default
        if type(default) in _IMMUTABLE:
            return default
        return copy.deepcopy(default)

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
        except Invalid as exc:
            owner = f"Param({self._kind.name})"
            shown = "***" if self._kind.masks_values else default
            raise ParamError(owner, "default", shown, self._reason(exc)) from None

    def _guard(self, owner: str, shown: Any, fn: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return fn(arg)
        except Invalid as exc:
            if self._kind.masks_values:
                shown = "***"
            raise ParamError(owner, self.name, shown, self._reason(exc)) from None

    def _reason(self, exc: Invalid) -> str:
        if not exc.path:
            return exc.reason
        where = "".join(exc.path)
        return f"expected {self._kind.name}; item {where} = {short(exc.value)}: {exc.reason}"

    def __repr__(self) -> str:
        default = "" if self.required else f", default={self._default!r}"
        return f"Param({self._kind.name}{default})"


def check_known(owner: str, declared: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """ParamError naming ``owner`` (a task or DAG) and the first name of ``given`` that is
    not one of its ``declared`` params, with the names that would be right."""
    for key, value in given.items():
        if key not in declared:
            raise ParamError(
                owner, key, value, f"unknown parameter; known: {', '.join(declared) or 'none'}"
            )
