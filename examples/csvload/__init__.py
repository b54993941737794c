"""Many CSV files into their PostgreSQL tables, fast and safe to retry (engine-free library).

The Plankton example ``examples/csv_to_postgres.py`` wires these pieces into a DAG; they are
kept apart from it so that each can be used, tested and benchmarked without Redis:

- ``schema``: which tables a directory makes, their columns and types;
- ``reader``: a CSV file as validated batches of COPY text, bad rows raised or rejected;
- ``loader``: batches into a table with COPY, one transaction per load (table + files, or
  table + time window), replacing what the same load wrote before.
"""

from examples.csvload.columns import DEFAULT_NULL_MARKERS, ColumnType
from examples.csvload.errors import BadRowError, CsvLoadError, SchemaError
from examples.csvload.loader import (
    Window,
    content_hash,
    is_loaded,
    load_key,
    load_table,
    loaded_rows,
)
from examples.csvload.reader import DEFAULT_BATCH_BYTES, BadRow, Batch, RejectFile, read_batches
from examples.csvload.schema import (
    LOAD_COLUMN,
    LOADS_TABLE,
    Column,
    TableSpec,
    columns_from_message,
    columns_to_message,
    plan_tables,
)

__all__ = [
    # schema
    "Column",
    "ColumnType",
    "TableSpec",
    "plan_tables",
    "columns_to_message",
    "columns_from_message",
    "LOAD_COLUMN",
    "LOADS_TABLE",
    # reading
    "Batch",
    "BadRow",
    "RejectFile",
    "read_batches",
    "DEFAULT_BATCH_BYTES",
    # loading
    "load_table",
    "loaded_rows",
    "load_key",
    "content_hash",
    "is_loaded",
    "Window",
    "DEFAULT_NULL_MARKERS",
    # errors
    "CsvLoadError",
    "SchemaError",
    "BadRowError",
]
