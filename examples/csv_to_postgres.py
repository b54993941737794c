"""Example DAG: many CSV files into their PostgreSQL tables, streaming, safe to retry.

    python examples/make_csvs.py data/ --files 3 --rows 100000
    export PG_DSN=postgresql://user@localhost/db     # read where the tasks run
    plankton up --import examples.csv_to_postgres --workers 2 --run csv_to_postgres \\
        --param directory=data --param dsn=env:PG_DSN

With ``--param time_column=at`` a run loads only the rows of its ``[since, to)`` window
(``--since/--to``, a cron interval of ``csv_to_postgres_daily``, or a ``plankton backfill``
step) and replaces that window of the table. Missing-value markers (``NA``, ``NaN``,
``NULL``, ``\\N``...) load as NULL; see docs/etl-example.md.

or all of it, with a throwaway PostgreSQL: ``python examples/csv_demo.py``.

The tree, for ``ratings_1.csv`` to ``ratings_3.csv`` and ``users_1.csv``::

    Report                                   -> {"ratings": 300000, "users": 100000}
    ├── LoadTable(table="ratings")           one COPY, one transaction
    │   ├── ExtractCsv(paths=[".../ratings_1.csv", ".../ratings_3.csv"])   COPY text, streamed
    │   └── ExtractCsv(paths=[".../ratings_2.csv"])
    └── LoadTable(table="users")
        └── ExtractCsv(paths=[".../users_1.csv"])

Up to ``extractors`` (2) extractors per table parse and check rows in parallel, the files
dealt out among them, and emit one value per few thousand rows; each
loader streams its children's batches into COPY as they arrive. The DAG function plans the
tables (names, columns, types) once, so every task of a run works from the same columns, and
the plan is recorded with the run's params. All the work is in ``examples/csvload``; the
tasks here only move values between it and the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import plankton as pk
from examples.csvload import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_NULL_MARKERS,
    Batch,
    RejectFile,
    TableSpec,
    Window,
    columns_from_message,
    columns_to_message,
    content_hash,
    is_loaded,
    load_key,
    load_table,
    plan_tables,
    read_batches,
)


class ExtractCsv(pk.Task):
    """Read CSV files, one after the other, and emit their rows as batches
    (``Batch.to_message()`` dicts).

    Retrying is safe: nothing is written but the reject files, each replaced whole.
    No retries on errors, though: what fails here is the file itself (a bad row, a header
    that changed), and reading it again gives the same error, only later. A lost worker is
    another matter: the engine retries that whatever ``retries`` says (PLANKTON_MAX_LOST).
    """

    paths = pk.Param(list)
    columns = pk.Param(list)  # [[name, type], ...] from the plan
    skip_bad_rows = pk.Param(bool, default=False)
    batch_bytes = pk.Param(int, default=DEFAULT_BATCH_BYTES)
    null_markers = pk.Param(list, default=list(DEFAULT_NULL_MARKERS))
    markers_in_text = pk.Param(bool, default=False)
    fixed = pk.Param(list, default=[])  # columns typed by schema.json: they never widen

    retries = 0
    timeout = 3600

    def run(self) -> dict[str, int]:
        rows = rejected = 0
        for path in map(Path, self.paths):
            file_rows, file_rejected = self.extract(path)
            rows += file_rows
            rejected += file_rejected
        return {"rows": rows, "rejected": rejected}

    def extract(self, path: Path) -> tuple[int, int]:
        """Emit one file's batches; (rows emitted, rows rejected)."""
        columns = columns_from_message(self.columns)
        rejects = RejectFile(path, columns) if self.skip_bad_rows else None
        rows = 0
        with rejects if rejects is not None else nullcontext():
            on_bad_row = rejects.write if rejects is not None else None
            for batch in read_batches(
                path,
                columns,
                batch_bytes=self.batch_bytes,
                on_bad_row=on_bad_row,
                markers=self.null_markers,
                markers_in_text=self.markers_in_text,
                fixed=self.fixed,
            ):
                self.emit(batch.to_message())
                rows += batch.rows
        rejected = rejects.count if rejects is not None else 0
        if rejects is not None and rejected:
            self.log.info("%s: %d bad rows written to %s", path, rejected, rejects.path)
        return rows, rejected


class LoadTable(pk.Task):
    """COPY every batch its extractors emit into one table, in one transaction.

    The load is keyed by what it loads (the table and its files, or with ``time_column``
    the table and the run's ``[since, to)`` window), not by the run: a retry, a rerun, a
    resume or a fresh run replaces what the same load wrote before, in the same transaction.
    ``complete()`` is true when the same load of the same bytes is already committed, so an
    unchanged file is not read at all. Emits ``{"table": ..., "rows": ...}`` after commit.
    Retried on errors, as most of them here are the server's (restart, lock timeout).
    """

    table = pk.Param(str)
    dsn = pk.Param(pk.Secret)  # env:PG_DSN or file:/run/secrets/pg_dsn, read where it runs
    columns = pk.Param(list)
    files = pk.Param(list)  # the source files, for the load's identity and content hash
    time_column = pk.Param(str, default="")
    null_markers = pk.Param(list, default=list(DEFAULT_NULL_MARKERS))
    markers_in_text = pk.Param(bool, default=False)
    reload = pk.Param(bool, default=False)  # load even when complete() would say it is there

    retries = 2
    timeout = 3600

    def window(self) -> Window | None:
        """The rows this load replaces: a window of ``time_column``, or None (its files)."""
        if not self.time_column:
            return None
        return Window(self.time_column, self.since, self.to)

    def key(self) -> str:
        return load_key(self.table, self.files, self.window())

    def digest(self) -> str:
        return content_hash(
            self.files,
            columns_from_message(self.columns),
            [self.null_markers, self.markers_in_text, self.key()],
        )

    def complete(self) -> bool:
        return not self.reload and is_loaded(self.dsn.reveal(), self.key(), self.digest())

    def run(self) -> int:
        columns = columns_from_message(self.columns)
        # The content hash reads every file (0.15 s for 82 MB): hashed beside the COPY, not
        # before it (hashlib and file reads release the GIL), and needed only at commit.
        with ThreadPoolExecutor(1, thread_name_prefix="digest") as pool:
            digest = pool.submit(self.digest)
            rows = load_table(
                self.dsn.reveal(),
                self.table,
                columns,
                self.key(),
                self.batches(),
                run_id=self.run_id,
                window=self.window(),
                digest=digest.result,
            )
        self.log.info("loaded %d rows into %s (load %s)", rows, self.table, self.key())
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


#: Extractors per table by default. One COPY session takes ~2.5M rows/s, one extractor makes
#: ~6M rows/s (ratings, measured by benchmarks/csv_load.py): more extractors than this only
#: wait on the loader, and delay its start (a parent starts once all its children have
#: started, so with more extractors than free workers the COPY would wait for a file to end).
DEFAULT_EXTRACTORS = 2


def loader_for(
    spec: TableSpec,
    dsn: str,
    skip_bad_rows: bool,
    time_column: str = "",
    null_markers: list[str] | None = None,
    markers_in_text: bool = False,
    reload: bool = False,
    extractors: int = DEFAULT_EXTRACTORS,
) -> LoadTable:
    """A LoadTable for ``spec`` with up to ``extractors`` ExtractCsv, the files dealt out
    among them in turn."""
    if extractors < 1:
        raise pk.ParamError(f"extractors must be at least 1, got {extractors}")
    columns = columns_to_message(spec.columns)
    markers = list(DEFAULT_NULL_MARKERS) if null_markers is None else list(null_markers)
    shares = [spec.files[i::extractors] for i in range(min(extractors, len(spec.files)))]
    children = [
        ExtractCsv(
            paths=[str(p) for p in share],
            columns=columns,
            skip_bad_rows=skip_bad_rows,
            null_markers=markers,
            markers_in_text=markers_in_text,
            fixed=list(spec.fixed),
        )
        for share in shares
    ]
    names = [c.name for c in spec.columns]
    if time_column and time_column not in names:
        raise pk.ParamError(
            f"time_column {time_column!r}: table {spec.name!r} has no such "
            f"column (its columns: {names})"
        )
    return LoadTable(
        table=spec.name,
        dsn=dsn,
        columns=columns,
        files=[str(p) for p in spec.files],
        time_column=time_column,
        null_markers=markers,
        markers_in_text=markers_in_text,
        reload=reload,
    ).add_children(*children)


def build(
    directory: str,
    dsn: str,
    skip_bad_rows: bool,
    time_column: str,
    null_markers: list[str] | None,
    markers_in_text: bool,
    reload: bool = False,
    extractors: int = DEFAULT_EXTRACTORS,
) -> pk.Task:
    """The tree of every DAG here: plan the tables once, one loader per table."""
    markers = list(DEFAULT_NULL_MARKERS) if null_markers is None else list(null_markers)
    specs = plan_tables(Path(directory).resolve(), markers=markers)
    return Report().add_children(
        *(
            loader_for(
                spec, dsn, skip_bad_rows, time_column, markers, markers_in_text, reload, extractors
            )
            for spec in specs
        )
    )


@pk.dag
def csv_to_postgres(
    directory: str,
    dsn: pk.Secret,
    skip_bad_rows: bool = False,
    time_column: str = "",
    null_markers: list | None = None,
    markers_in_text: bool = False,
    reload: bool = False,
    extractors: int = DEFAULT_EXTRACTORS,
) -> pk.Task:
    """Load every ``*.csv`` in ``directory`` into the table its name gives, on ``dsn`` (a
    secret reference such as ``env:PG_DSN``). ``null_markers`` replaces the missing-value
    list; ``markers_in_text`` makes text columns take them as NULL too; ``time_column``
    loads only the run's ``[since, to)`` window and replaces that window of the table;
    ``reload`` loads even a load already present with the same content hash; ``extractors``
    caps the extractor tasks per table (files are dealt out among them)."""
    return build(
        directory,
        dsn,
        skip_bad_rows,
        time_column,
        null_markers,
        markers_in_text,
        reload,
        extractors,
    )


@pk.dag(schedule="@daily")
def csv_to_postgres_daily(
    directory: str = "data",
    dsn: pk.Secret = pk.Secret("env:PG_DSN"),
    time_column: str = "at",
    skip_bad_rows: bool = False,
    reload: bool = False,
) -> pk.Task:
    """The scheduled variant: each day's run (and each ``plankton backfill`` step) loads the
    rows of its day from ``directory`` and replaces that day of the table."""
    return build(directory, dsn, skip_bad_rows, time_column, None, False, reload)


@pk.dag(schedule="@monthly", max_active_runs=2)
def csv_to_postgres_monthly(
    directory: str = "data",
    dsn: pk.Secret = pk.Secret("env:PG_DSN"),
    time_column: str = "at",
    skip_bad_rows: bool = False,
    reload: bool = False,
) -> pk.Task:
    """The monthly variant (``plankton backfill`` over a year: 12 windows). Two windows may
    load at once: each load takes the table's lock only for its own transaction."""
    return build(directory, dsn, skip_bad_rows, time_column, None, False, reload)
