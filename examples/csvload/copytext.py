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

from .columns import ColumnType, value_pattern, value_problem
from .schema import Column

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
    return (value.replace("\\", "\\\\").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


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


def row_pattern(columns: Sequence[Column], text: str, optional: bool, sep: str) -> str:
    """Regex source of one row: fields of ``columns`` joined by ``sep``.

    No field pattern matches a separator, so a match has exactly one field per column.
    ``text`` is the character class of a text value; ``optional`` admits empty fields
    (NULLs).
    """
    return sep.join(text + ("*+" if optional else "++") if c.type is ColumnType.TEXT
                    else value_pattern(c.type, optional=optional) for c in columns)


Patterns = tuple[re.Pattern[str], re.Pattern[str]]


def batch_patterns(columns: Sequence[Column], text: str, sep: str, end: str) -> Patterns:
    """Patterns of a whole batch of rows, each followed by ``end``: without empty fields
    (tried first: when it matches there is no NULL to mark), and with them."""
    return (re.compile(f"(?:{row_pattern(columns, text, False, sep)}{end})*+"),
            re.compile(f"(?:{row_pattern(columns, text, True, sep)}{end})*+"))


class RowCodec:
    """Checks rows of one table's columns and encodes them as COPY text."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        self.width = len(self.columns)
        self._row_re = re.compile(row_pattern(columns, _PLAIN_TEXT, True, "\t"))
        self._text_res = batch_patterns(columns, _PLAIN_TEXT, "\t", "\n")
        self._parsed_res = batch_patterns(columns, _PARSED_TEXT, _FIELD_SEP, _ROW_END)

    def encode_text(self, text: str) -> bytes | None:
        """Plain ``text`` (tab separated, every line ending in ``\\n``) as COPY data if good.

        None sends the caller to the row by row path, which names the problem.
        """
        nulls = _check(self._text_res, text)
        if nulls is None:
            return None
        return _utf8(fill_nulls(text, self.width) if nulls else text)

    def encode_rows(self, rows: list[list[str]]) -> bytes | None:
        """COPY data for rows parsed by the csv module if every one is good, else None."""
        if set(map(len, rows)) != {self.width}:  # blank lines, which the csv module yields
            return None
        text = _ROW_END.join(map(_FIELD_SEP.join, rows)) + _ROW_END
        nulls = _check(self._parsed_res, text)
        if nulls is None:
            return None
        text = escape_text(text).replace(_FIELD_SEP, "\t").replace(_ROW_END, "\n")
        return _utf8(fill_nulls(text, self.width) if nulls else text)

    def encode_row(self, row: list[str]) -> str | tuple[str | None, str]:
        """One row's COPY line (without NULL markers or newline), or (column, reason)."""
        line = "\t".join(row)
        if (len(row) == self.width and self._row_re.fullmatch(line)
                and (line.isascii() or _is_utf8(line))):
            return line
        problem = self.row_problem(row)
        if problem is not None:
            return problem
        return "\t".join(escape_text(v) if c.type is ColumnType.TEXT else v
                         for v, c in zip(row, self.columns))

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


def _check(patterns: Patterns, text: str) -> bool | None:
    """None if ``text`` fails; else whether it has empty fields (the strict pattern failed)."""
    if patterns[0].fullmatch(text) is not None:
        return False
    return True if patterns[1].fullmatch(text) is not None else None


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None
