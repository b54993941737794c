"""Many CSV files into their PostgreSQL tables, fast and safe to retry (engine-free library).

The Plankton example ``examples/csv_to_postgres.py`` wires these pieces into a DAG; they are
kept apart from it so that each can be used, tested and benchmarked without Redis:

- ``schema``: which tables a directory makes, their columns and types;
- ``reader``: a CSV file as validated batches of COPY text, bad rows raised or rejected;
- ``loader``: batches into a table with COPY, one transaction per (table, run).
"""

from .columns import ColumnType
from .errors import BadRowError, CsvLoadError, SchemaError
from .loader import load_table, loaded_rows
from .reader import DEFAULT_BATCH_BYTES, BadRow, Batch, RejectFile, read_batches
from .schema import (
    LOADS_TABLE,
    RUN_COLUMN,
    Column,
    TableSpec,
    columns_from_message,
    columns_to_message,
    plan_tables,
)

__all__ = [
    # schema
    "Column", "ColumnType", "TableSpec", "plan_tables", "columns_to_message",
    "columns_from_message", "RUN_COLUMN", "LOADS_TABLE",
    # reading
    "Batch", "BadRow", "RejectFile", "read_batches", "DEFAULT_BATCH_BYTES",
    # loading
    "load_table", "loaded_rows",
    # errors
    "CsvLoadError", "SchemaError", "BadRowError",
]
