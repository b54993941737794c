"""PostgreSQL COPY text format: checking CSV rows against column types and encoding them.

COPY's text format is one row per line, fields separated by tabs, ``\\N`` for NULL, and
backslash escapes for tab, newline, CR and backslash inside values. Why it rather than COPY's
CSV or binary formats: CSV that holds no quotes, tabs or backslashes becomes COPY text by
turning commas into tabs, one ``str.replace``, and a whole batch of such text is checked by
one C-level regular-expression match. Rows the csv module had to parse are joined with
control characters as separators (\x00 between fields, which good data never holds as
PostgreSQL cannot store it, and \x01 between rows), checked the same way, then escaped and
turned into tabs and newlines by a few ``str.replace`` passes. Only a batch that fails
either check is handled row by row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from examples.csvload.columns import (
    DEFAULT_NULL_MARKERS,
    ColumnType,
    nan_is_value,
    value_pattern,
    value_problem,
)
from examples.csvload.schema import Column

# Characters that make CSV text need the csv module (quotes) or COPY escaping.
_NOT_PLAIN = ('"', "\\", "\t", "\x00")
# A text value in plain CSV: nothing COPY would need to escape.
_PLAIN_TEXT = r"[^\t\n\r\\\x00]"
# A text value parsed by the csv module, before escaping: anything but the separators below.
_PARSED_TEXT = r"[^\x00\x01]"
_FIELD_SEP, _ROW_END = "\x00", "\x01"


def plain_text(block: str, width: int) -> str | None:
    """``block`` with ``\\n`` line ends if it needs no CSV parsing nor escaping, else None.

    CRLF line ends are fine; a lone CR is a line end the csv module must handle.
    """
    if any(ch in block for ch in _NOT_PLAIN):
        return None
    if "\r" in block:
        if block.count("\r") != block.count("\r\n"):
            return None
        block = block.replace("\r\n", "\n")
    # A blank line is a skipped row for the csv module, but would be a NULL in one column.
    if width == 1 and (block.startswith("\n") or "\n\n" in block):
        return None
    return block if block.endswith("\n") else block + "\n"


def escape_text(value: str) -> str:
    """``value`` escaped for COPY's text format (backslash first, then the separators)."""
    if not any(ch in value for ch in "\\\t\n\r"):
        return value
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def fill_nulls(text: str, width: int) -> str:
    """Mark empty fields of COPY text as ``\\N`` (NULL): a CSV empty value is a NULL.

    Plain ``str.replace`` passes rather than a regular expression: they run at memory speed.
    Two passes over a doubled separator are enough, as the first leaves no run of three.
    """
    sep = "\n" if width == 1 else "\t"
    for _ in range(2):
        text = text.replace(sep + sep, sep + "\\N" + sep)
    if width > 1:
        text = text.replace("\n\t", "\n\\N\t").replace("\t\n", "\t\\N\n")
    return "\\N" + text if text.startswith(sep) else text


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def row_pattern(
    columns: Sequence[Column],
    text: str,
    optional: bool,
    sep: str,
    markers: Sequence[str] = (),
    nan: bool = True,
) -> str:
    """Regex source of one row: fields of ``columns`` joined by ``sep``.

    No field pattern matches a separator, so a match has exactly one field per column.
    ``text`` is the character class of a text value; ``optional`` admits empty fields
    (NULLs); ``markers`` admits missing-value markers in the columns that are not text.
    """
    return sep.join(
        text + ("*+" if optional else "++")
        if c.type is ColumnType.TEXT
        else value_pattern(c.type, optional=optional, markers=markers, nan=nan)
        for c in columns
    )


Patterns = tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]


def batch_patterns(
    columns: Sequence[Column], text: str, sep: str, end: str, markers: Sequence[str], nan: bool
) -> Patterns:
    """Patterns of a whole batch of rows, each followed by ``end``: without empty fields
    (tried first: when it matches there is no NULL to mark), with them, and with
    missing-value markers too (which then need replacing)."""
    return tuple(
        re.compile(f"(?:{row_pattern(columns, text, opt, sep, marks, nan)}{end})*+")
        for opt, marks in ((False, ()), (True, ()), (True, markers))
    )  # type: ignore


class RowCodec:
    """Checks rows of one table's columns and encodes them as COPY text."""

    def __init__(
        self,
        columns: Sequence[Column],
        markers: Sequence[str] = DEFAULT_NULL_MARKERS,
        markers_in_text: bool = False,
        nulled_as: Sequence[Column] | None = None,
    ) -> None:
        self.columns = tuple(columns)
        self.width = len(self.columns)
        self.markers = frozenset(m for m in markers if m)
        nan = nan_is_value(self.markers)
        listed = sorted(self.markers)
        #: Columns whose markers become NULL: all but text, or every one. Decided by the
        #: planned types (``nulled_as``) when given, so that a column widened to text part
        #: way through a file goes on taking markers as NULL, as its earlier rows did.
        typed = self.columns if nulled_as is None else tuple(nulled_as)
        self.nulled = [
            i for i, c in enumerate(typed) if markers_in_text or c.type is not ColumnType.TEXT
        ]
        self._row_re = re.compile(row_pattern(columns, _PLAIN_TEXT, True, "\t", (), nan))
        self._text_res = batch_patterns(columns, _PLAIN_TEXT, "\t", "\n", listed, nan)
        self._parsed_res = batch_patterns(columns, _PARSED_TEXT, _FIELD_SEP, _ROW_END, listed, nan)
        self._text_markers = bool(self.markers) and any(
            c.type is ColumnType.TEXT for i, c in enumerate(self.columns) if i in self.nulled
        )

    def encode_text(self, text: str) -> bytes | None:
        """Plain ``text`` (tab separated, every line ending in ``\\n``) as COPY data if good.

        None sends the caller to the row by row path, which names the problem.
        """
        nulls = _check(self._text_res, text)
        if nulls is None:
            return None
        if nulls == 2 or self._text_markers:
            rows = [line.split("\t") for line in text[:-1].split("\n")]
            return self.encode_rows(rows)
        return _utf8(fill_nulls(text, self.width) if nulls else text)

    def fits_text(self, text: str) -> bool:
        """Whether plain ``text`` (as for :meth:`encode_text`) holds only good rows."""
        return _check(self._text_res, text) is not None

    def fits_rows(self, rows: list[list[str]]) -> bool:
        """Whether parsed ``rows`` of the right width hold only good values."""
        text = _ROW_END.join(map(_FIELD_SEP.join, rows)) + _ROW_END
        return _check(self._parsed_res, text) is not None

    def blank_markers(self, rows: list[list[str]]) -> list[list[str]]:
        """``rows`` with missing-value markers emptied in the nulled columns (column-wise:
        one comprehension per column instead of a Python step per field of every row)."""
        markers = self.markers
        columns = list(map(list, zip(*rows)))
        for i in self.nulled:
            if markers.intersection(columns[i]):
                columns[i] = ["" if v in markers else v for v in columns[i]]
        return list(map(list, zip(*columns)))

    def encode_rows(self, rows: list[list[str]]) -> bytes | None:
        """COPY data for rows parsed by the csv module if every one is good, else None."""
        if set(map(len, rows)) != {self.width}:  # blank lines, which the csv module yields
            return None
        text = _ROW_END.join(map(_FIELD_SEP.join, rows)) + _ROW_END
        nulls = _check(self._parsed_res, text)
        if nulls is None:
            return None
        if nulls == 2 or self._text_markers:
            rows = self.blank_markers(rows)
            text = _ROW_END.join(map(_FIELD_SEP.join, rows)) + _ROW_END
            nulls = 1
        text = escape_text(text).replace(_FIELD_SEP, "\t").replace(_ROW_END, "\n")
        return _utf8(fill_nulls(text, self.width) if nulls else text)

    def encode_row(self, row: list[str]) -> str | tuple[str | None, str]:
        """One row's COPY line (without NULL markers or newline), or (column, reason)."""
        if len(row) == self.width and self.markers:
            markers = self.markers
            row = (
                [
                    ("" if row[i] in markers else row[i]) if i in self.nulled else row[i]
                    for i in range(self.width)
                ]
                if markers.intersection(row)
                else row
            )
        line = "\t".join(row)
        if (
            len(row) == self.width
            and self._row_re.fullmatch(line)
            and (line.isascii() or _is_utf8(line))
        ):
            return line
        problem = self.row_problem(row)
        if problem is not None:
            return problem
        return "\t".join(
            escape_text(v) if c.type is ColumnType.TEXT else v for v, c in zip(row, self.columns)
        )

    def row_problem(self, row: list[str]) -> tuple[str | None, str] | None:
        """(column name or None, reason) for the first problem of ``row``, or None."""
        if len(row) != self.width:
            column = self.columns[len(row)].name if len(row) < self.width else None
            return column, f"expected {self.width} fields, found {len(row)}"
        for value, column in zip(row, self.columns):
            problem = value_problem(value, column.type) if value else None
            if problem is not None:
                return column.name, problem
        return None


def _check(patterns: Patterns, text: str) -> int | None:
    """None if ``text`` fails; else 0 (no empty field), 1 (empty fields) or 2 (markers too)."""
    for level, pattern in enumerate(patterns):
        if pattern.fullmatch(text) is not None:
            return level
    return None


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None
