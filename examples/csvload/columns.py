"""Column types: which PostgreSQL types a CSV column can load as, and what text each accepts.

One module holds both the per-value checks (used to infer types from a sample and to name the
exact bad value of a rejected row) and the regular-expression fragments that the reader joins
into one pattern per table, so that a whole batch is validated by a single C-level match.
The checks are deliberately a little stricter than PostgreSQL's input functions (no
surrounding blanks, no year-less dates): everything that passes here loads, and a value that
PostgreSQL would take but these checks refuse is reported, never silently changed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from enum import Enum


class ColumnType(str, Enum):
    """A column's PostgreSQL type; the value is the SQL spelling used in CREATE TABLE."""

    BIGINT = "bigint"
    DOUBLE = "double precision"
    BOOLEAN = "boolean"
    TIMESTAMPTZ = "timestamptz"
    TEXT = "text"


#: Spellings accepted in schema.json, beside the canonical values above.
ALIASES: dict[str, ColumnType] = {
    "int": ColumnType.BIGINT, "integer": ColumnType.BIGINT, "int8": ColumnType.BIGINT,
    "float": ColumnType.DOUBLE, "double": ColumnType.DOUBLE, "float8": ColumnType.DOUBLE,
    "bool": ColumnType.BOOLEAN, "timestamp": ColumnType.TIMESTAMPTZ,
    "datetime": ColumnType.TIMESTAMPTZ, "string": ColumnType.TEXT, "str": ColumnType.TEXT,
}

# One regular expression per type for a single non-empty value. Possessive quantifiers: the
# reader matches thousands of rows at once and must never backtrack into an earlier field.
_BIGINT = r"[+-]?+[0-9]{1,18}+"  # 19-digit values take the slow path (exact range check)
_DOUBLE = (r"(?:[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++)?+"
           r"|(?i:nan|[+-]?inf(?:inity)?))")
_BOOLEAN = r"(?i:true|false|t|f|yes|no|y|n|on|off|1|0)"
_TIMESTAMP = (r"(?P<y>[0-9]{4})-(?P<m>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12][0-9]|3[01])"
              r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?)?"
              r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?")
_VALUE_RE = {
    ColumnType.BIGINT: re.compile(_BIGINT),
    ColumnType.DOUBLE: re.compile(_DOUBLE),
    ColumnType.BOOLEAN: re.compile(_BOOLEAN),
    ColumnType.TIMESTAMPTZ: re.compile(_TIMESTAMP),
}
_BIGINT_SLOW_RE = re.compile(r"[+-]?[0-9]+")
_INFERRED_BOOLEAN_RE = re.compile(r"(?i:true|false|t|f|yes|no)")

#: Order in which inference tries types: the first that accepts every sampled value wins.
#: Booleans are tried with the narrow spellings only, so that 0/1 columns stay integers.
_INFERENCE_ORDER = (ColumnType.BIGINT, ColumnType.DOUBLE, ColumnType.TIMESTAMPTZ)


def parse_type(spelling: str) -> ColumnType:
    """The ColumnType named by ``spelling`` (canonical or alias), or ValueError listing both."""
    text = " ".join(spelling.lower().split())
    for member in ColumnType:
        if member.value == text:
            return member
    if text in ALIASES:
        return ALIASES[text]
    known = sorted({m.value for m in ColumnType} | set(ALIASES))
    raise ValueError(f"unknown column type {spelling!r} (known: {', '.join(known)})")


def value_pattern(column_type: ColumnType, *, optional: bool = True) -> str:
    """Regex source matching one field of ``column_type``; empty too (NULL) if ``optional``.

    Not for TEXT, whose pattern depends on the escaping around it (see ``copytext``).
    Named groups are dropped so that the fragments can be joined into one row pattern.
    """
    if column_type is ColumnType.TEXT:
        raise ValueError("text fields have no value pattern of their own")
    source = re.sub(r"\(\?P<\w+>", "(?:", _VALUE_RE[column_type].pattern)
    return f"(?:{source})" + ("?+" if optional else "")


def value_problem(value: str, column_type: ColumnType) -> str | None:
    """Why ``value`` (non-empty) cannot load as ``column_type``, or None when it can."""
    if column_type is ColumnType.TEXT:
        return _text_problem(value)
    if column_type is ColumnType.BIGINT:
        return _bigint_problem(value)
    if column_type is ColumnType.TIMESTAMPTZ:
        return _timestamp_problem(value)
    if _VALUE_RE[column_type].fullmatch(value) is None:
        return f"{_shown(value)} is not a valid {column_type.value}"
    return None


def _bigint_problem(value: str) -> str | None:
    if _BIGINT_SLOW_RE.fullmatch(value) is None:
        return f"{_shown(value)} is not a valid bigint"
    if not -(2**63) <= int(value) < 2**63:
        return f"{_shown(value)} is out of range for bigint"
    return None


def _timestamp_problem(value: str) -> str | None:
    match = _VALUE_RE[ColumnType.TIMESTAMPTZ].fullmatch(value)
    if match is None:
        return f"{_shown(value)} is not a valid ISO 8601 timestamp"
    try:
        dt.date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError as exc:
        return f"{_shown(value)} is not a valid date ({exc})"
    return None


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "text contains a NUL character, which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "text is not valid UTF-8"
    return None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:60] + "...")


def infer_type(values: Iterable[str]) -> ColumnType:
    """The narrowest type accepting every non-empty value; TEXT when there are none."""
    sample = [v for v in values if v != ""]
    if not sample:
        return ColumnType.TEXT
    if all(_INFERRED_BOOLEAN_RE.fullmatch(v) for v in sample):
        return ColumnType.BOOLEAN
    for candidate in _INFERENCE_ORDER:
        if all(value_problem(v, candidate) is None for v in sample):
            return candidate
    return ColumnType.TEXT


def widen(a: ColumnType, b: ColumnType) -> ColumnType:
    """The narrowest type holding values of both ``a`` and ``b`` (for files of one table)."""
    if a is b:
        return a
    if {a, b} == {ColumnType.BIGINT, ColumnType.DOUBLE}:
        return ColumnType.DOUBLE
    return ColumnType.TEXT
