"""Example DAG: many CSV files into their PostgreSQL tables, streaming, safe to retry.

    python examples/make_csvs.py data/ --files 3 --rows 100000
    plankton up --import examples.csv_to_postgres --workers 2 --run csv_to_postgres \\
        --param directory=data --param dsn=postgresql://user@localhost/db

or all of it, with a throwaway PostgreSQL: ``python examples/csv_demo.py``.

The tree, for ``ratings_1.csv``, ``ratings_2.csv`` and ``users_1.csv``::

    Report                                   -> {"ratings": 200000, "users": 100000}
    ├── LoadTable(table="ratings")           one COPY, one transaction
    │   ├── ExtractCsv(path=".../ratings_1.csv")   batches of COPY text, streamed
    │   └── ExtractCsv(path=".../ratings_2.csv")
    └── LoadTable(table="users")
        └── ExtractCsv(path=".../users_1.csv")

Extractors parse and check rows in parallel and emit one value per few thousand rows; each
loader streams its children's batches into COPY as they arrive. The DAG function plans the
tables (names, columns, types) once, so every task of a run works from the same columns, and
the plan is recorded with the run's params. All the work is in ``examples/csvload``; the
tasks here only move values between it and the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import plankton as pk
from examples.csvload import (
    DEFAULT_BATCH_BYTES,
    Batch,
    RejectFile,
    TableSpec,
    columns_from_message,
    columns_to_message,
    load_table,
    plan_tables,
    read_batches,
)


class ExtractCsv(pk.Task):
    """Read one CSV file and emit its rows as batches (``Batch.to_message()`` dicts).

    Retrying is safe: nothing is written but the reject file, which is replaced whole.
    No retries on errors, though: what fails here is the file itself (a bad row, a header
    that changed), and reading it again gives the same error, only later. A lost worker is
    another matter: the engine retries that whatever ``retries`` says (PLANKTON_MAX_LOST).
    """

    path = pk.Param(str)
    columns = pk.Param(list)  # [[name, type], ...] from the plan
    skip_bad_rows = pk.Param(bool, default=False)
    batch_bytes = pk.Param(int, default=DEFAULT_BATCH_BYTES)

    retries = 0
    timeout = 3600

    def run(self) -> dict[str, int]:
        path = Path(self.path)
        columns = columns_from_message(self.columns)
        rejects = RejectFile(path, columns) if self.skip_bad_rows else None
        rows = 0
        with rejects if rejects is not None else nullcontext():
            on_bad_row = rejects.write if rejects is not None else None
            for batch in read_batches(path, columns, batch_bytes=self.batch_bytes,
                                      on_bad_row=on_bad_row):
                self.emit(batch.to_message())
                rows += batch.rows
        rejected = rejects.count if rejects is not None else 0
        if rejected:
            self.log.info("%s: %d bad rows written to %s", path, rejected, rejects.path)
        return {"rows": rows, "rejected": rejected}


class LoadTable(pk.Task):
    """COPY every batch its extractors emit into one table, in one transaction.

    Emits ``{"table": ..., "rows": ...}`` after commit. A retry, or a restart after an
    extractor failed mid-stream, replaces this run's rows instead of adding to them.
    Retried on errors, as most of them here are the server's (restart, lock timeout); the
    rare value that passed the extractor's checks but not PostgreSQL's is retried too, in
    vain, as a task cannot yet tell the engine that an error is permanent.
    """

    table = pk.Param(str)
    dsn = pk.Param(str)
    columns = pk.Param(list)

    retries = 2
    timeout = 3600

    def run(self) -> int:
        columns = columns_from_message(self.columns)
        rows = load_table(self.dsn, self.table, columns, self.run_id, self.batches())
        self.log.info("loaded %d rows into %s for run %s", rows, self.table, self.run_id)
        self.emit({"table": self.table, "rows": rows})
        return rows

    def batches(self) -> Iterator[Batch]:
        return (Batch.from_message(message) for message in self.results())


class Report(pk.Task):
    """The root: rows loaded per table, as ``{table: rows}``."""

    def run(self) -> dict[str, int]:
        loaded: dict[str, Any] = {}
        for message in self.results():
            loaded[message["table"]] = message["rows"]
        return dict(sorted(loaded.items()))


def loader_for(spec: TableSpec, dsn: str, skip_bad_rows: bool) -> LoadTable:
    """A LoadTable for ``spec`` with one ExtractCsv per file."""
    columns = columns_to_message(spec.columns)
    extractors = [ExtractCsv(path=str(path), columns=columns, skip_bad_rows=skip_bad_rows)
                  for path in spec.files]
    return LoadTable(table=spec.name, dsn=dsn, columns=columns).add_children(*extractors)


@pk.dag
def csv_to_postgres(directory: str, dsn: str, skip_bad_rows: bool = False) -> pk.Task:
    """Load every ``*.csv`` in ``directory`` into the table its name gives, on ``dsn``."""
    specs = plan_tables(Path(directory).resolve())
    return Report().add_children(*(loader_for(spec, dsn, skip_bad_rows) for spec in specs))
