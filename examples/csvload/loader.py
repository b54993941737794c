"""Load a table's batches into PostgreSQL with COPY, so that a re-run never duplicates.

The identity of a load is what it loads, not the run that does it: the table and its source
files (:func:`load_key`), or, with a ``time_column``, the table and a ``[since, to)`` window.
One load is ONE transaction: lock the table against other loads of it; delete what the same
load wrote before (rows carrying its number in ``_plankton_load``, or for a window every row of
the table in the window); COPY the batches (for a window with ``COPY ... WHERE``, so that
only the rows in it are kept); record the load in ``plankton_loads`` with the content hash of
its files; commit. A loader killed at any point has its transaction rolled back by the
server, and a retry, a rerun, a resume or a fresh run of the same load replaces it: exactly
one copy is ever visible. :func:`is_loaded` tells a loader's ``complete()`` that the same
load of the same bytes is already there.

Why not a staging table and a swap: copying into a staging table and then
``INSERT ... SELECT`` writes every row twice and measured ~2x slower, while a swap replaces
the whole table and so cannot keep the rows of other loads. Why the lock: two live attempts
of one task (a worker that was presumed lost but was not) would otherwise both commit.

COPY text is passed through unchanged, the load's number (``plankton_loads.load_id``, from a
sequence) appended to each line with one ``bytes.replace``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from examples.csvload.columns import ColumnType, parse_type, widen
from examples.csvload.errors import BadRowError, SchemaError
from examples.csvload.reader import Batch
from examples.csvload.schema import LOAD_COLUMN, LOADS_TABLE, Column

#: How long a load waits for another attempt of the same (table, run) to finish, in seconds.
DEFAULT_LOCK_TIMEOUT_S = 600

_CONTEXT_RE = re.compile(r"line (\d+)(?:, column ([^:]+))?")

_CREATE_LOADS = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {} (load_key text NOT NULL, table_name text NOT NULL, "
    "run text NOT NULL, rows bigint NOT NULL, content_hash text NOT NULL, "
    'time_column text, since timestamptz, "to" timestamptz, '
    "loaded_at timestamptz NOT NULL DEFAULT now(), load_id bigint, "
    "PRIMARY KEY (table_name, load_key))"
).format(sql.Identifier(LOADS_TABLE))
#: Numbers each committed load; its number, not its 32-character key, is what every row
#: carries in ``_plankton_load``: the key on each of 3M rows cost PostgreSQL's one COPY
#: session a third of its time (1.56 s against 0.99 s with no load column; 8-byte ids ~1.1 s).
LOAD_IDS = "plankton_load_ids"
_CREATE_LOAD_IDS = sql.SQL("CREATE SEQUENCE IF NOT EXISTS {}").format(sql.Identifier(LOAD_IDS))


@dataclass(frozen=True)
class Window:
    """The ``[since, to)`` window of ``time_column`` that a load replaces; open ends None."""

    time_column: str
    since: dt.datetime | None = None
    to: dt.datetime | None = None

    def condition(self) -> sql.Composable:
        """SQL selecting the window's rows (all rows when both ends are open)."""
        column = sql.Identifier(self.time_column)
        parts: list[sql.Composable] = []
        if self.since is not None:
            parts.append(sql.SQL("{} >= {}").format(column, sql.Literal(self.since)))
        if self.to is not None:
            parts.append(sql.SQL("{} < {}").format(column, sql.Literal(self.to)))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def describe(self) -> list[str | None]:
        return [self.time_column, _iso(self.since), _iso(self.to)]


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.timezone.utc).isoformat()


def load_key(table: str, files: Sequence[str | Path], window: Window | None = None) -> str:
    """What a load is: the table and its files, or the table and its window."""
    what: list[object] = [table]
    what += [window.describe()] if window is not None else sorted(map(str, files))
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]


def content_hash(
    files: Sequence[str | Path], columns: Sequence[Column], options: object = None
) -> str:
    """SHA-256 over the files' bytes, the columns and any other ``options`` (markers...)
    that change what a load writes: equal hashes, equal rows."""
    digest = hashlib.sha256(
        json.dumps([[[c.name, c.type.value] for c in columns], options], default=str).encode()
    )
    for path in sorted(map(str, files)):
        digest.update(f"\0{path}\0".encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


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


def ensure_table(
    conn: psycopg.Connection, table: str, columns: Sequence[Column]
) -> tuple[Column, ...]:
    """Create the log table and ``table`` if missing; return ``table``'s columns as they are
    (an earlier load may have widened some). SchemaError if its column names differ, or a
    type is not one a load makes."""
    with conn.transaction():
        # CREATE TABLE IF NOT EXISTS races with itself; one lock for all loaders' DDL.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('plankton:ddl', 0))")
        conn.execute(_CREATE_LOADS)
        if "load_id" not in dict(table_columns(conn, LOADS_TABLE)):  # made by an earlier
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN load_id bigint").format(  # version
                    sql.Identifier(LOADS_TABLE)
                )
            )
        conn.execute(_CREATE_LOAD_IDS)
        existing = table_columns(conn, table)
        if not existing:
            conn.execute(create_table_sql(table, columns))
            return tuple(columns)
    expected = [(c.name, c.type.value) for c in columns] + [(LOAD_COLUMN, "bigint")]
    names = [name for name, _ in existing]
    refused = SchemaError(
        f"table {table!r} exists with columns {existing}; this load needs "
        f"{expected}: drop or rename the table, or declare the types "
        "in schema.json"
    )
    if names != [name for name, _ in expected] or existing[-1][1] != "bigint":
        raise refused
    try:
        return tuple(Column(name, parse_type(kind)) for name, kind in existing[:-1])
    except ValueError:
        raise refused from None


def widen_table(
    conn: psycopg.Connection,
    table: str,
    current: Sequence[Column],
    types: Sequence[ColumnType | str],
) -> tuple[Column, ...]:
    """ALTER the columns of ``table`` (now typed ``current``) that values of ``types`` do not
    fit to the narrowest type holding both; return the new columns. In the load's
    transaction: a load that fails leaves the table as it was."""
    widened = tuple(
        Column(c.name, widen(c.type, ColumnType(kind))) for c, kind in zip(current, types)
    )
    changes = [
        sql.SQL("ALTER COLUMN {0} TYPE {1} USING {0}::{1}").format(
            sql.Identifier(new.name), sql.SQL(new.type.value)
        )
        for old, new in zip(current, widened)
        if old.type is not new.type
    ]
    if changes:
        conn.execute(
            sql.SQL("ALTER TABLE {} {}").format(sql.Identifier(table), sql.SQL(", ").join(changes))
        )
    return widened


def create_table_sql(table: str, columns: Sequence[Column]) -> sql.Composed:
    """CREATE TABLE for ``columns`` plus the load column."""
    fields = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type.value)) for c in columns
    ]
    fields.append(sql.SQL("{} bigint NOT NULL").format(sql.Identifier(LOAD_COLUMN)))
    return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(", ").join(fields))


def table_columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """(name, type) of ``table``'s columns in order, as PostgreSQL spells the types."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        [sql.Identifier(table).as_string(conn)],
    ).fetchall()
    return [(name, _canonical(type_name)) for name, type_name in rows]


def _canonical(type_name: str) -> str:
    return "timestamptz" if type_name == "timestamp with time zone" else type_name


def load_table(
    dsn: str,
    table: str,
    columns: Sequence[Column],
    key: str,
    batches: Iterable[Batch],
    *,
    run_id: str = "",
    window: Window | None = None,
    digest: str | Callable[[], str] = "",
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> int:
    """Load ``batches`` into ``table`` as the only copy of load ``key``; return rows loaded.

    Creates the table if needed. What the same load (or, with ``window``, any load) wrote
    before is replaced in the same transaction; with ``window`` only the rows inside it are
    kept. ``digest`` (:func:`content_hash`, or a callable giving it, called only once the
    rows are copied) is recorded for :func:`is_loaded`. A value
    PostgreSQL refuses raises BadRowError naming the file, line and column it came from.
    """
    with connect(dsn) as conn:
        existing = ensure_table(conn, table, columns)
        conn.execute(
            sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_s * 1000)}ms"))
        )
        with conn.transaction():
            lock_load(conn, table)
            current = widen_table(conn, table, existing, [c.type for c in columns])
            forget_earlier_load(conn, table, key, window)
            load_id = next_load_id(conn)
            rows = copy_batches(conn, table, current, load_id, batches, window)
            record_load(
                conn,
                table,
                key,
                run_id,
                rows,
                digest() if callable(digest) else digest,
                window,
                load_id,
            )
    return rows


def lock_load(conn: psycopg.Connection, table: str) -> None:
    """Wait (up to lock_timeout) until no other load of ``table`` is under way.

    One lock per table, not per load: a window and a whole-file load of one table may
    overlap, and two attempts of one load must not both commit.
    """
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"plankton:load:{table}"]
    )


def forget_earlier_load(
    conn: psycopg.Connection, table: str, key: str, window: Window | None
) -> int:
    """Delete what the same load wrote before (or a window's rows); return rows deleted.

    The log row and the data commit together, so without a window the log says exactly when
    there is something to delete, and the common first load never scans the table.
    """
    done = conn.execute(
        sql.SQL(
            "DELETE FROM {} WHERE table_name = %s AND load_key = %s RETURNING rows, load_id"
        ).format(sql.Identifier(LOADS_TABLE)),
        [table, key],
    ).fetchone()
    if window is not None:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(table), window.condition())
            )
            return cur.rowcount
    if done is None:
        return 0
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE {} = %s").format(
            sql.Identifier(table), sql.Identifier(LOAD_COLUMN)
        ),
        [done[1]],
    )
    return int(done[0])


def next_load_id(conn: psycopg.Connection) -> int:
    """A new number for this load (rolled back loads just leave a gap)."""
    found = conn.execute(sql.SQL("SELECT nextval({})").format(sql.Literal(LOAD_IDS))).fetchone()
    assert found is not None
    return int(found[0])


def copy_batches(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[Column],
    load_id: int,
    batches: Iterable[Batch],
    window: Window | None = None,
) -> int:
    """COPY every batch into ``table`` with ``load_id`` appended; return rows kept (only those
    inside ``window`` when given: ``COPY ... WHERE``, PostgreSQL 12+).

    A batch whose ``types`` a column does not hold (its file widened a type past the
    planned one) ends the COPY; the columns are widened (:func:`widen_table`) and a new
    COPY goes on from that batch, all in the caller's transaction."""
    names = [sql.Identifier(c.name) for c in columns] + [sql.Identifier(LOAD_COLUMN)]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(names)
    )
    if window is not None:
        statement = sql.SQL("{} WHERE {}").format(statement, window.condition())
    suffix = b"\t%d\n" % load_id
    current = tuple(columns)
    wider: Batch | None = None
    remaining: Iterator[Batch] = iter(batches)
    total = 0
    while True:
        sent: list[_Sent] = []
        rows = 0
        try:
            # The queued writer sends to the server from its own thread: while this thread
            # waits for the next batch (from Redis, in the DAG), the server is still fed.
            with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
                for batch in remaining:
                    if batch.types is not None and not holds(current, batch.types):
                        wider = batch
                        break
                    sent.append(_Sent.of(rows, batch))
                    copy.write(batch.data.replace(b"\n", suffix))
                    rows += batch.rows
                # (the COPY ends on leaving this block)
        except psycopg.errors.DataError as exc:
            raise bad_row_from(exc, sent) from exc
        total += rows
        if wider is None:
            break
        assert wider.types is not None
        current = widen_table(conn, table, current, wider.types)
        remaining, wider = itertools.chain([wider], remaining), None
    # The rows COPY's WHERE kept: psycopg does not report COPY's own count.
    return total if window is None else copied_rows(conn, table, load_id)


def holds(columns: Sequence[Column], types: Sequence[str]) -> bool:
    """Whether every column's type already holds the values of the matching ``types``."""
    return all(widen(c.type, ColumnType(kind)) is c.type for c, kind in zip(columns, types))


def copied_rows(conn: psycopg.Connection, table: str, load_id: int) -> int:
    """Rows of ``table`` of load ``load_id`` (after a windowed COPY: the rows it kept)."""
    found = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
            sql.Identifier(table), sql.Identifier(LOAD_COLUMN)
        ),
        [load_id],
    ).fetchone()
    return int(found[0]) if found else 0


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


def record_load(
    conn: psycopg.Connection,
    table: str,
    key: str,
    run_id: str,
    rows: int,
    digest: str,
    window: Window | None,
    load_id: int,
) -> None:
    """Log the load; commits (or not) with the rows themselves."""
    bounds = [window.time_column, window.since, window.to] if window else [None, None, None]
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (load_key, table_name, run, rows, content_hash, time_column, since, "
            '"to", load_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)'
        ).format(sql.Identifier(LOADS_TABLE)),
        [key, table, run_id, rows, digest, *bounds, load_id],
    )


def loaded_rows(dsn: str, key: str) -> int | None:
    """Rows the committed load ``key`` recorded, or None if there is none."""
    found = _load_row(dsn, key)
    return None if found is None else int(found[0])


def is_loaded(dsn: str, key: str, digest: str) -> bool:
    """Whether load ``key`` is committed with content hash ``digest`` (nothing to do)."""
    found = _load_row(dsn, key)
    return found is not None and found[1] == digest


def _load_row(dsn: str, key: str) -> tuple | None:
    with connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", [LOADS_TABLE]).fetchone() == (None,):
            return None
        return conn.execute(
            sql.SQL("SELECT rows, content_hash FROM {} WHERE load_key = %s").format(
                sql.Identifier(LOADS_TABLE)
            ),
            [key],
        ).fetchone()
