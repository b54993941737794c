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
from collections.abc import Iterable, Sequence
from enum import Enum


class ColumnType(str, Enum):
    """A column's PostgreSQL type; the value is the SQL spelling used in CREATE TABLE."""

    BIGINT = "bigint"
    DOUBLE = "double precision"
    NUMERIC = "numeric"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMPTZ = "timestamptz"
    TEXT = "text"


#: Spellings accepted in schema.json, beside the canonical values above.
ALIASES: dict[str, ColumnType] = {
    "int": ColumnType.BIGINT,
    "integer": ColumnType.BIGINT,
    "int8": ColumnType.BIGINT,
    "float": ColumnType.DOUBLE,
    "double": ColumnType.DOUBLE,
    "float8": ColumnType.DOUBLE,
    "decimal": ColumnType.NUMERIC,
    "bool": ColumnType.BOOLEAN,
    "timestamp": ColumnType.TIMESTAMPTZ,
    "datetime": ColumnType.TIMESTAMPTZ,
    "string": ColumnType.TEXT,
    "str": ColumnType.TEXT,
}

# One regular expression per type for a single non-empty value. Possessive quantifiers: the
# reader matches thousands of rows at once and must never backtrack into an earlier field.
_BIGINT = r"[+-]?+[0-9]{1,18}+"  # 19-digit values take the slow path (exact range check)
_DOUBLE = (
    r"(?:[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++)?+"
    r"|(?i:nan|[+-]?inf(?:inity)?))"
)
_DOUBLE_NO_NAN = (
    r"(?:[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++)?+"
    r"|(?i:[+-]?inf(?:inity)?))"
)
_NUMERIC = r"[+-]?+[0-9]++(?:\.[0-9]++)?+"
_DATE = r"(?P<y>[0-9]{4})-(?P<m>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12][0-9]|3[01])"
_BOOLEAN = r"(?i:true|false|t|f|yes|no|y|n|on|off|1|0)"
_TIMESTAMP = (
    r"(?P<y>[0-9]{4})-(?P<m>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"
)
_VALUE_RE = {
    ColumnType.BIGINT: re.compile(_BIGINT),
    ColumnType.DOUBLE: re.compile(_DOUBLE),
    ColumnType.NUMERIC: re.compile(_NUMERIC),
    ColumnType.BOOLEAN: re.compile(_BOOLEAN),
    ColumnType.DATE: re.compile(_DATE),
    ColumnType.TIMESTAMPTZ: re.compile(_TIMESTAMP),
}
_BIGINT_SLOW_RE = re.compile(r"[+-]?[0-9]+")
_INFERRED_BOOLEAN_RE = re.compile(r"(?i:true|false|t|f|yes|no)")

#: Order in which inference tries types: the first that accepts every sampled value wins.
#: Booleans are tried with the narrow spellings only, so that 0/1 columns stay integers.
_INFERENCE_ORDER = (
    ColumnType.BIGINT,
    ColumnType.NUMERIC,
    ColumnType.DOUBLE,
    ColumnType.DATE,
    ColumnType.TIMESTAMPTZ,
)
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")

#: Values that mean "no value" in real exports: R writes NA, pandas NaN (and N/A on input),
#: database dumps NULL or \N. They load as NULL in every column that is not text. ``NaN``
#: among them means a float column's NaN is NULL, not IEEE NaN (see docs/etl-example.md).
DEFAULT_NULL_MARKERS: tuple[str, ...] = ("NA", "N/A", "NaN", "NULL", "null", "\\N")


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


def nan_is_value(markers: Iterable[str]) -> bool:
    """Whether a float column reads ``NaN`` as IEEE NaN: only when no marker spells it."""
    return not any(m.lower() == "nan" for m in markers)


def value_pattern(
    column_type: ColumnType, *, optional: bool = True, markers: Sequence[str] = (), nan: bool = True
) -> str:
    """Regex source matching one field of ``column_type``; empty too (NULL) if ``optional``,
    or one of ``markers``. ``nan``: whether a double accepts NaN spellings.

    Not for TEXT, whose pattern depends on the escaping around it (see ``copytext``).
    Named groups are dropped so that the fragments can be joined into one row pattern.
    """
    if column_type is ColumnType.TEXT:
        raise ValueError("text fields have no value pattern of their own")
    raw = _VALUE_RE[column_type].pattern
    if column_type is ColumnType.DOUBLE and not nan:
        raw = _DOUBLE_NO_NAN
    source = re.sub(r"\(\?P<\w+>", "(?:", raw)
    if markers:
        # Markers first, each only as a whole field: the group is possessive, so a value
        # alternative matching a marker's prefix (boolean "n" of "NA") must not win first.
        listed = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
        source = f"(?:{listed})(?=[\t\n\x00\x01]|\\Z)|{source}"
    return f"(?:{source})" + ("?+" if optional else "")


def value_problem(value: str, column_type: ColumnType) -> str | None:
    """Why ``value`` (non-empty) cannot load as ``column_type``, or None when it can."""
    if column_type is ColumnType.TEXT:
        return _text_problem(value)
    if column_type is ColumnType.BIGINT:
        return _bigint_problem(value)
    if column_type in (ColumnType.TIMESTAMPTZ, ColumnType.DATE):
        return _timestamp_problem(value, column_type)
    if _VALUE_RE[column_type].fullmatch(value) is None:
        return f"{_shown(value)} is not a valid {column_type.value}"
    return None


def _bigint_problem(value: str) -> str | None:
    if _BIGINT_SLOW_RE.fullmatch(value) is None:
        return f"{_shown(value)} is not a valid bigint"
    if not -(2**63) <= int(value) < 2**63:
        return f"{_shown(value)} is out of range for bigint"
    return None


def _timestamp_problem(value: str, column_type: ColumnType) -> str | None:
    match = _VALUE_RE[column_type].fullmatch(value)
    if match is None:
        kind = "date" if column_type is ColumnType.DATE else "timestamp"
        return f"{_shown(value)} is not a valid ISO 8601 {kind}"
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


def infer_type(values: Iterable[str], markers: Iterable[str] = DEFAULT_NULL_MARKERS) -> ColumnType:
    """The narrowest type accepting every value that is neither empty nor a missing-value
    marker; TEXT when there are none."""
    found = infer_present(values, markers)
    return ColumnType.TEXT if found is None else found


def infer_present(
    values: Iterable[str], markers: Iterable[str] = DEFAULT_NULL_MARKERS
) -> ColumnType | None:
    """:func:`infer_type`, but None when every value is missing (nothing to widen with)."""
    missing = {"", *markers}
    sample = [v for v in values if v not in missing]
    if not sample:
        return None
    if all(_INFERRED_BOOLEAN_RE.fullmatch(v) for v in sample):
        return ColumnType.BOOLEAN
    for candidate in _INFERENCE_ORDER:
        if candidate is ColumnType.NUMERIC:
            # Only integers too wide for bigint: decimals load as double precision.
            if all(_INTEGER_RE.fullmatch(v) for v in sample):
                return candidate
            continue
        if all(value_problem(v, candidate) is None for v in sample):
            return candidate
    return ColumnType.TEXT


_WIDER = {
    frozenset({ColumnType.BIGINT, ColumnType.DOUBLE}): ColumnType.DOUBLE,
    frozenset({ColumnType.BIGINT, ColumnType.NUMERIC}): ColumnType.NUMERIC,
    frozenset({ColumnType.NUMERIC, ColumnType.DOUBLE}): ColumnType.DOUBLE,
    frozenset({ColumnType.DATE, ColumnType.TIMESTAMPTZ}): ColumnType.TIMESTAMPTZ,
}


def widen(a: ColumnType, b: ColumnType) -> ColumnType:
    """The narrowest type holding values of both ``a`` and ``b`` (files of one table, or
    a later part of a file that the first rows did not predict)."""
    if a is b:
        return a
    return _WIDER.get(frozenset({a, b}), ColumnType.TEXT)
