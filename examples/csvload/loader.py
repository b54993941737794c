"""Load a table's batches into PostgreSQL with COPY, so that a retried load never duplicates.

One load is ONE transaction: take a lock on (table, run); if an earlier attempt of this run
already committed rows for the table (it is in ``plankton_loads``), delete them; COPY every
batch straight into the table; record the load in ``plankton_loads``; commit. A loader killed
at any point (SIGKILL mid-COPY, lost worker) has its transaction rolled back by the server,
and a retry finds either nothing or a complete earlier load that it replaces: exactly one
copy of the run's rows is ever visible.

Why not a staging table and a swap: copying into a staging table and then
``INSERT ... SELECT`` writes every row twice and measured ~2x slower, while a swap replaces
the whole table and so cannot keep the rows of other runs. Why the lock: two live attempts
of one task (a worker that was presumed lost but was not) would otherwise both commit.

Each row carries the run id in ``_plankton_run``; COPY text is passed through unchanged, the
run id appended to each line with one ``bytes.replace``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from .errors import BadRowError, SchemaError
from .reader import Batch
from .schema import LOADS_TABLE, RUN_COLUMN, Column

#: How long a load waits for another attempt of the same (table, run) to finish, in seconds.
DEFAULT_LOCK_TIMEOUT_S = 600

_CONTEXT_RE = re.compile(r"line (\d+)(?:, column ([^:]+))?")

_CREATE_LOADS = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {} (run text NOT NULL, table_name text NOT NULL, "
    "rows bigint NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(), "
    "PRIMARY KEY (run, table_name))").format(sql.Identifier(LOADS_TABLE))


@dataclass(frozen=True)
class _Sent:
    """Where a batch sat in the COPY stream (its data dropped), to map errors to lines."""

    rows_before: int
    batch: Batch

    @classmethod
    def of(cls, rows_before: int, batch: Batch) -> _Sent:
        return cls(rows_before, replace(batch, data=b""))


def connect(dsn: str) -> psycopg.Connection:
    """An autocommit connection, so each ``transaction()`` block is a real transaction.

    The session is in UTC: a timestamp without an offset in a file means UTC, whatever the
    server's or the worker's time zone.
    """
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def ensure_table(conn: psycopg.Connection, table: str, columns: Sequence[Column]) -> None:
    """Create the log table and ``table`` if missing; SchemaError if ``table`` differs."""
    with conn.transaction():
        # CREATE TABLE IF NOT EXISTS races with itself; one lock for all loaders' DDL.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('plankton:ddl', 0))")
        conn.execute(_CREATE_LOADS)
        existing = table_columns(conn, table)
        if not existing:
            conn.execute(create_table_sql(table, columns))
            return
    expected = [(c.name, c.type.value) for c in columns] + [(RUN_COLUMN, "text")]
    if existing != expected:
        raise SchemaError(f"table {table!r} exists with columns {existing}; this load needs "
                          f"{expected}: drop or rename the table, or declare the types "
                          "in schema.json")


def create_table_sql(table: str, columns: Sequence[Column]) -> sql.Composed:
    """CREATE TABLE for ``columns`` plus the run column."""
    fields = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type.value))
              for c in columns]
    fields.append(sql.SQL("{} text NOT NULL").format(sql.Identifier(RUN_COLUMN)))
    return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table),
                                                  sql.SQL(", ").join(fields))


def table_columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """(name, type) of ``table``'s columns in order, as PostgreSQL spells the types."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum", [sql.Identifier(table).as_string(conn)]).fetchall()
    return [(name, _canonical(type_name)) for name, type_name in rows]


def _canonical(type_name: str) -> str:
    return "timestamptz" if type_name == "timestamp with time zone" else type_name


def load_table(dsn: str, table: str, columns: Sequence[Column], run_id: str,
               batches: Iterable[Batch], *,
               lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> int:
    """Load ``batches`` into ``table`` as run ``run_id``'s only copy; return the row count.

    Creates the table if needed. Rows an earlier attempt of the same run committed are
    replaced in the same transaction. A value PostgreSQL refuses raises BadRowError naming
    the file, line and column it came from.
    """
    with connect(dsn) as conn:
        ensure_table(conn, table, columns)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(
            sql.Literal(f"{int(lock_timeout_s * 1000)}ms")))
        with conn.transaction():
            lock_load(conn, table, run_id)
            forget_earlier_load(conn, table, run_id)
            rows = copy_batches(conn, table, columns, run_id, batches)
            record_load(conn, table, run_id, rows)
    return rows


def lock_load(conn: psycopg.Connection, table: str, run_id: str) -> None:
    """Wait (up to lock_timeout) until no other attempt loads ``table`` for ``run_id``."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                 [f"plankton:load:{table}:{run_id}"])


def forget_earlier_load(conn: psycopg.Connection, table: str, run_id: str) -> int:
    """Delete what an earlier, committed attempt of this run loaded; return its row count.

    The log row and the data commit together, so the log says exactly when there is
    something to delete, and the common first attempt never scans the table.
    """
    done = conn.execute(
        sql.SQL("DELETE FROM {} WHERE run = %s AND table_name = %s RETURNING rows")
        .format(sql.Identifier(LOADS_TABLE)), [run_id, table]).fetchone()
    if done is None:
        return 0
    conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(
        sql.Identifier(table), sql.Identifier(RUN_COLUMN)), [run_id])
    return int(done[0])


def copy_batches(conn: psycopg.Connection, table: str, columns: Sequence[Column],
                 run_id: str, batches: Iterable[Batch]) -> int:
    """COPY every batch into ``table`` with ``run_id`` appended; return rows copied."""
    names = [sql.Identifier(c.name) for c in columns] + [sql.Identifier(RUN_COLUMN)]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table),
                                                          sql.SQL(", ").join(names))
    suffix = b"\t" + run_id_text(run_id) + b"\n"
    sent: list[_Sent] = []
    rows = 0
    try:
        # The queued writer sends to the server from its own thread: while this thread
        # waits for the next batch (from Redis, in the DAG), the server is still fed.
        with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
            for batch in batches:
                sent.append(_Sent.of(rows, batch))
                copy.write(batch.data.replace(b"\n", suffix))
                rows += batch.rows
    except psycopg.errors.DataError as exc:
        raise bad_row_from(exc, sent) from exc
    return rows


def run_id_text(run_id: str) -> bytes:
    """``run_id`` as a COPY text field (run ids are plain, but escape to be safe)."""
    return (run_id.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").encode("utf-8"))


def bad_row_from(exc: psycopg.errors.DataError, sent: Sequence[_Sent]) -> Exception:
    """A BadRowError for a value PostgreSQL refused, traced to its file and line."""
    match = _CONTEXT_RE.search(exc.diag.context or "")
    reason = exc.diag.message_primary or str(exc)
    if match is None or not sent:
        return exc
    copy_line, column = int(match.group(1)), match.group(2)
    for item in reversed(sent):
        if item.rows_before < copy_line:
            index = copy_line - 1 - item.rows_before
            return BadRowError(item.batch.source, item.batch.line_of(index), column, reason)
    return exc


def record_load(conn: psycopg.Connection, table: str, run_id: str, rows: int) -> None:
    """Log the load; commits (or not) with the rows themselves."""
    conn.execute(sql.SQL("INSERT INTO {} (run, table_name, rows) VALUES (%s, %s, %s)")
                 .format(sql.Identifier(LOADS_TABLE)), [run_id, table, rows])


def loaded_rows(dsn: str, table: str, run_id: str) -> int | None:
    """Rows a committed load of ``table`` recorded for ``run_id``, or None if none did."""
    with connect(dsn) as conn:
        found = conn.execute(
            sql.SQL("SELECT rows FROM {} WHERE run = %s AND table_name = %s")
            .format(sql.Identifier(LOADS_TABLE)), [run_id, table]).fetchone()
    return None if found is None else int(found[0])
