"""Which tables a directory of CSV files makes, with their columns and types.

A file's stem up to a trailing ``_N`` names its table (``ratings_1.csv`` and ``ratings_2.csv``
both load ``ratings``); the header names the columns. Names are turned into plain lower-case
SQL identifiers so that nobody has to quote them later. Types come from an optional
``schema.json`` beside the files, else from the first rows of each file, widened over the
files of one table. That is only the start: the extractors, which read every block of the
file anyway, widen a column when a block does not fit it (a first ``NA``, decimal, or id
beyond 64 bits at line 200,000), and the loader widens the table's column before it COPYs
that block (see ``reader.BatchEncoder`` and ``loader``). Declared types never widen: a value
that does not fit one is a bad row. Planning happens once, when the DAG is built, and reads
only the first rows of each file, so the run starts at once.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from examples.csvload.columns import (
    DEFAULT_NULL_MARKERS,
    ColumnType,
    infer_present,
    infer_type,
    parse_type,
    value_problem,
    widen,
)
from examples.csvload.errors import SchemaError

#: Optional file beside the CSVs: {"table": {"column": "type", ...}, ...}.
SCHEMA_FILE = "schema.json"
#: Column added to every loaded table: the key of the load that wrote the row (what was
#: loaded: the table and its files, or the table and a time window; never the run).
LOAD_COLUMN = "_plankton_load"
#: Table recording every committed load (load_key, table_name, run, rows, content_hash, ...).
LOADS_TABLE = "plankton_loads"
#: Rows per file read to infer column types.
DEFAULT_SAMPLE_ROWS = 1000
#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63

_TRAILING_NUMBER = re.compile(r"^(.+?)_[0-9]+$")


@dataclass(frozen=True)
class Column:
    """One table column: a sanitised SQL identifier and its type."""

    name: str
    type: ColumnType


@dataclass(frozen=True)
class TableSpec:
    """A table to load: its name, its columns in file order, the files that feed it, and
    the columns whose type schema.json declares (``fixed``: they never widen)."""

    name: str
    columns: tuple[Column, ...]
    files: tuple[Path, ...]
    fixed: tuple[str, ...] = ()


def columns_to_message(columns: Sequence[Column]) -> list[list[str]]:
    """Columns as msgpack data (task params): ``[[name, type], ...]``."""
    return [[c.name, c.type.value] for c in columns]


def columns_from_message(message: Sequence[Sequence[str]]) -> tuple[Column, ...]:
    """The inverse of :func:`columns_to_message`."""
    return tuple(Column(name, parse_type(type_name)) for name, type_name in message)


def open_csv(path: Path) -> IO[str]:
    """Open a CSV file the way every reader of this package does.

    ``utf-8-sig`` drops a byte-order mark; ``surrogateescape`` keeps undecodable bytes as
    markers so that the bad row, not the whole file, is reported with its line number.
    """
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def sanitize_identifier(text: str, fallback: str) -> str:
    """``text`` as a lower-case SQL identifier: camelCase split, other characters as ``_``."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text.strip())
    name = re.sub(r"[^0-9A-Za-z]+", "_", snake).strip("_").lower() or fallback
    if name[0].isdigit():
        name = "_" + name
    return name[:MAX_IDENTIFIER_BYTES]


def table_name(path: Path) -> str:
    """The table a CSV file loads: its stem without a trailing ``_N``, sanitised."""
    stem = path.stem
    match = _TRAILING_NUMBER.match(stem)
    return sanitize_identifier(match.group(1) if match else stem, "table")


def column_names(header: Sequence[str]) -> list[str]:
    """Sanitised, unique column names for a header.

    Sanitised names never start with ``_`` unless a digit follows, so none can clash with
    the loader's ``_plankton_load`` (a re-imported export gets ``plankton_load``).
    """
    names: list[str] = []
    for index, raw in enumerate(header, start=1):
        name = sanitize_identifier(raw, f"column_{index}")
        base, n = name, 1
        while name in names:
            n += 1
            name = f"{base[: MAX_IDENTIFIER_BYTES - 4]}_{n}"
        names.append(name)
    return names


def read_header(path: Path) -> list[str]:
    """The sanitised column names of ``path``'s header; SchemaError when it has none."""
    with open_csv(path) as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise SchemaError(f"{path}: empty file, expected a header line with column names")
    return column_names(header)


def sample_rows(path: Path, width: int, limit: int) -> list[list[str]]:
    """Up to ``limit`` well-formed data rows of ``path`` (bad ones are the reader's job)."""
    with open_csv(path) as handle:
        reader = csv.reader(handle)
        next(reader, None)
        try:
            rows = [row for row in itertools.islice(reader, limit * 2) if len(row) == width]
        except csv.Error as exc:
            raise SchemaError(f"{path}, line {reader.line_num}: {exc}") from exc
    return rows[:limit]


def infer_columns(
    path: Path, names: Sequence[str], limit: int, markers: Sequence[str] = DEFAULT_NULL_MARKERS
) -> list[Column]:
    """Columns of one file with the types its first ``limit`` rows fit: a first guess, which
    the extractors widen as they read the rest (see the module docstring)."""
    rows = sample_rows(path, len(names), limit)
    values = list(zip(*rows)) if rows else [() for _ in names]
    return [Column(name, infer_type(col, markers)) for name, col in zip(names, values)]


def widen_columns(
    columns: list[Column], rows: list[list[str]], markers: Sequence[str]
) -> list[Column]:
    """``columns`` widened to hold the values of ``rows`` too (a block that did not fit)."""
    missing = {"", *markers}
    out = []
    for column, values in zip(columns, zip(*rows)):
        kind = column.type
        if kind is not ColumnType.TEXT and any(
            v not in missing and value_problem(v, kind) is not None for v in values
        ):
            found = infer_present(values, markers)
            kind = kind if found is None else widen(kind, found)
        out.append(Column(column.name, kind))
    return out


def load_declared_types(directory: Path) -> dict[str, dict[str, ColumnType]]:
    """Types declared in ``directory/schema.json``, keyed by sanitised table and column."""
    path = directory / SCHEMA_FILE
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise SchemaError(f'{path}: expected {{"table": {{"column": "type", ...}}, ...}}')
    return {
        sanitize_identifier(table, "table"): _declared_columns(path, table, columns)
        for table, columns in document.items()
    }


def _declared_columns(path: Path, table: str, columns: dict) -> dict[str, ColumnType]:
    declared = {}
    for column, spelling in columns.items():
        try:
            declared[sanitize_identifier(column, column)] = parse_type(str(spelling))
        except ValueError as exc:
            raise SchemaError(f"{path}: table {table!r}, column {column!r}: {exc}") from exc
    return declared


def merge_columns(table: str, per_file: dict[Path, list[Column]]) -> tuple[Column, ...]:
    """One column list for a table: same names in every file, types widened."""
    (first, columns), *others = per_file.items()
    for path, other in others:
        if [c.name for c in other] != [c.name for c in columns]:
            raise SchemaError(
                f"table {table!r}: {path.name} has columns {[c.name for c in other]} but "
                f"{first.name} has {[c.name for c in columns]}; files of one table need "
                "the same header"
            )
        columns = [Column(c.name, widen(c.type, o.type)) for c, o in zip(columns, other)]
    return tuple(columns)


def apply_declared(
    table: str, columns: tuple[Column, ...], declared: dict[str, ColumnType]
) -> tuple[Column, ...]:
    """Override inferred types with those of schema.json; unknown columns are an error."""
    names = {c.name for c in columns}
    unknown = sorted(set(declared) - names)
    if unknown:
        raise SchemaError(
            f"{SCHEMA_FILE}: table {table!r} has no column(s) {unknown} "
            f"(its columns: {sorted(names)})"
        )
    return tuple(Column(c.name, declared.get(c.name, c.type)) for c in columns)


def find_csv_files(directory: Path) -> list[Path]:
    """The ``*.csv`` files directly in ``directory``, sorted; SchemaError when none."""
    if not directory.is_dir():
        raise SchemaError(f"{directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not files:
        raise SchemaError(f"{directory}: no .csv files found")
    return files


def group_by_table(files: Sequence[Path]) -> Iterator[tuple[str, list[Path]]]:
    """(table, files) pairs in table-name order."""
    tables: dict[str, list[Path]] = {}
    for path in files:
        tables.setdefault(table_name(path), []).append(path)
    for name in sorted(tables):
        if name == LOADS_TABLE:
            raise SchemaError(
                f"{tables[name][0]}: table name {name!r} is the loader's own "
                "log table; rename the file"
            )
        yield name, tables[name]


def plan_tables(
    directory: Path,
    sample_rows_per_file: int = DEFAULT_SAMPLE_ROWS,
    markers: Sequence[str] = DEFAULT_NULL_MARKERS,
) -> list[TableSpec]:
    """Every table that ``directory``'s CSV files load, with columns, types and files."""
    declared = load_declared_types(directory)
    specs = []
    for name, files in group_by_table(find_csv_files(directory)):
        per_file = {
            p: infer_columns(p, read_header(p), sample_rows_per_file, markers) for p in files
        }
        fixed = declared.pop(name, {})
        columns = apply_declared(name, merge_columns(name, per_file), fixed)
        specs.append(TableSpec(name, columns, tuple(files), tuple(sorted(fixed))))
    if declared:
        raise SchemaError(
            f"{directory / SCHEMA_FILE}: no CSV files for table(s) "
            f"{sorted(declared)} (tables found: {[s.name for s in specs]})"
        )
    return specs
