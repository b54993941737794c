"""Errors of the CSV loader, with the fields a user needs to find and fix the bad input.

    CsvLoadError
    ├── SchemaError     files, headers, schema.json or an existing table do not fit together
    └── BadRowError     one row cannot load: file, line, column and reason

The package is user code for Plankton, not part of it, so the tree does not derive from
``pk.PlanktonError``: a task failure crosses Redis as text either way, and the library stays
usable (and testable) without the engine.
"""

from __future__ import annotations


class CsvLoadError(Exception):
    """Root of every error the CSV loader raises on purpose."""


class SchemaError(CsvLoadError):
    """Files, headers, a schema.json or an existing table disagree; the message says how."""


class BadRowError(CsvLoadError):
    """A row cannot load.

    Fields: ``path`` (the CSV file), ``line`` (1-based line where the row starts; the header
    is line 1), ``column`` (column name, or None when the row as a whole is bad) and
    ``reason``.
    """

    def __init__(self, path: str, line: int, column: str | None, reason: str) -> None:
        self.path, self.line, self.column, self.reason = path, line, column, reason
        where = f"{path}, line {line}" + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {reason}")
