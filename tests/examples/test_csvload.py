"""The CSV loader library against a real PostgreSQL: planning, contents, retries, bad rows.

These tests need neither Redis nor the engine: they run the same calls the example's tasks
make (plan, read batches, load) directly, and a subprocess where a load must be killed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psycopg
import pytest
from psycopg import sql

from examples import make_csvs
from examples.csvload import (
    LOADS_TABLE,
    BadRowError,
    Batch,
    ColumnType,
    RejectFile,
    SchemaError,
    TableSpec,
    Window,
    load_key,
    load_table,
    loaded_rows,
    plan_tables,
    read_batches,
)
from examples.csvload.reader import fill_nulls
from examples.csvload.schema import column_names, sanitize_identifier, table_name
from tests.servers import wait_for

ROOT = Path(__file__).resolve().parents[2]
B, D, T, TS, BOOL = (
    ColumnType.BIGINT,
    ColumnType.DOUBLE,
    ColumnType.TEXT,
    ColumnType.TIMESTAMPTZ,
    ColumnType.BOOLEAN,
)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def dsn(postgres_server) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL, dropped after the test."""
    name = f"csvload_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(postgres_server.dsn, dbname=name)
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def batches_of(spec: TableSpec, **options) -> Iterator[Batch]:
    """What a LoadTable receives: every file's batches, through msgpack as over Redis."""
    for path in spec.files:
        for batch in read_batches(path, spec.columns, fixed=spec.fixed, **options):
            message = msgpack.unpackb(msgpack.packb(batch.to_message(), use_bin_type=True))
            yield Batch.from_message(message)


def load_directory(dsn: str, directory: Path, key: str, **options) -> dict[str, int]:
    """The DAG's work without the engine: plan, then extract and load each table (as load
    ``key``, recorded as run ``key`` too)."""
    return {
        spec.name: load_table(
            dsn, spec.name, spec.columns, key, batches_of(spec, **options), run_id=key
        )
        for spec in plan_tables(directory)
    }


def query(dsn: str, statement: str, *args: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, args).fetchall()


#: Each row's load key, through the load number it carries.
BY_KEY = (
    f"SELECT l.load_key, count(*) FROM {{}} t JOIN {LOADS_TABLE} l "
    "ON l.load_id = t._plankton_load GROUP BY 1 ORDER BY 1"
)


def count(dsn: str, table: str, key: str | None = None) -> int:
    """Rows of ``table``, or of its load ``key``."""
    if key is None:
        return query(dsn, f"SELECT count(*) FROM {table}")[0][0]
    return dict(query(dsn, BY_KEY.format(table))).get(key, 0)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _timestamp(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


_CONVERT = {
    B: int,
    D: float,
    T: str,
    TS: _timestamp,
    BOOL: lambda v: v.lower() in ("t", "true", "y", "yes", "on", "1"),
}


def file_rows(spec: TableSpec) -> list[tuple]:
    """The table's expected contents, read from its files with the csv module."""
    rows = []
    for path in spec.files:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            rows += [
                tuple(_CONVERT[c.type](v) if v != "" else None for v, c in zip(row, spec.columns))
                for row in reader
            ]
    return rows


def table_rows(dsn: str, spec: TableSpec) -> list[tuple]:
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.columns)
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            sql.SQL("SELECT {} FROM {}").format(names, sql.Identifier(spec.name))
        ).fetchall()


def sort_key(row: tuple) -> tuple:
    return tuple((v is None, str(v)) for v in row)


# ----------------------------------------------------------------------------- schema


def test_identifiers_are_sanitised_from_file_names_and_headers() -> None:
    assert sanitize_identifier("userId", "x") == "user_id"
    assert sanitize_identifier(" Movie ID (imdb) ", "x") == "movie_id_imdb"
    assert sanitize_identifier("2nd", "x") == "_2nd"
    assert sanitize_identifier("---", "fallback") == "fallback"
    assert len(sanitize_identifier("a" * 100, "x")) == 63
    assert table_name(Path("ratings_12.csv")) == "ratings"
    assert table_name(Path("Daily Sales_2024_1.csv")) == "daily_sales_2024"
    assert table_name(Path("users.csv")) == "users"
    assert column_names(["a b", "a_b", "", "A-B"]) == ["a_b", "a_b_2", "column_3", "a_b_3"]
    assert column_names(["id", "_plankton_load"]) == ["id", "plankton_load"]  # no clash


def test_column_types_are_inferred_for_each_shape(tmp_path: Path) -> None:
    for shape in make_csvs.SHAPES:
        make_csvs.write_files(tmp_path, files=2, rows=300, shape=shape)
    specs = {s.name: s for s in plan_tables(tmp_path)}
    assert {n: [(c.name, c.type) for c in s.columns] for n, s in specs.items()} == {
        "ratings": [("user_id", B), ("movie_id", B), ("rating", D), ("timestamp", B)],
        "users": [
            ("user_id", B),
            ("name", T),
            ("email", T),
            ("age", B),
            ("is_active", BOOL),
            ("signup_at", TS),
            ("country", T),
        ],
        "events": [
            ("event_id", B),
            ("user_id", B),
            ("kind", T),
            ("occurred_at", TS),
            ("amount", D),
            ("payload", T),
        ],
        "wide": list(
            zip(
                make_csvs.SHAPES["wide"].header,
                [B, B, B, D, D, D, ColumnType.DATE, TS, BOOL, T, T, T, B, D, B, B, T, D, B, T],
            )
        ),
    }
    assert [p.name for p in specs["ratings"].files] == ["ratings_1.csv", "ratings_2.csv"]


def test_types_widen_across_files_and_schema_json_overrides_them(tmp_path: Path) -> None:
    write(tmp_path / "m_1.csv", "id,score,flag,code\n1,2,true,7\n")
    write(tmp_path / "m_2.csv", "id,score,flag,code\n2,2.5,maybe,8\n")
    (spec,) = plan_tables(tmp_path)
    assert [c.type for c in spec.columns] == [B, D, T, B]
    write(tmp_path / "schema.json", json.dumps({"m": {"code": "text", "Score": "float"}}))
    (spec,) = plan_tables(tmp_path)
    assert [c.type for c in spec.columns] == [B, D, T, T]


@pytest.mark.parametrize(
    "document, message",
    [
        ({"m": {"nope": "text"}}, r"table 'm' has no column\(s\) \['nope'\]"),
        ({"m": {"id": "varchar"}}, r"column 'id': unknown column type 'varchar' \(known: "),
        ({"other": {"id": "text"}}, r"no CSV files for table\(s\) \['other'\]"),
        (["not", "a", "map"], r"expected \{"),
    ],
)
def test_a_bad_schema_json_is_refused_with_what_would_be_right(
    tmp_path: Path, document: object, message: str
) -> None:
    write(tmp_path / "m_1.csv", "id\n1\n")
    write(tmp_path / "schema.json", json.dumps(document))
    with pytest.raises(SchemaError, match=message):
        plan_tables(tmp_path)


def test_files_of_one_table_must_share_a_header(tmp_path: Path) -> None:
    write(tmp_path / "m_1.csv", "id,name\n1,a\n")
    write(tmp_path / "m_2.csv", "id,label\n2,b\n")
    with pytest.raises(SchemaError, match="m_2.csv has columns .*same header"):
        plan_tables(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match="no .csv files found"):
        plan_tables(tmp_path / "empty")


# ----------------------------------------------------------------------------- encoding


def test_empty_fields_become_nulls_wherever_they_are() -> None:
    assert fill_nulls("\t\t\n1\t\t\t2\n\t3\n", 4) == "\\N\t\\N\t\\N\n1\t\\N\t\\N\t2\n\\N\t3\n"
    assert fill_nulls("\n\n1\n\n", 1) == "\\N\n\\N\n1\n\\N\n"
    assert fill_nulls("1\t2\n", 2) == "1\t2\n"


def test_batches_cross_msgpack_unchanged(tmp_path: Path) -> None:
    make_csvs.write_files(tmp_path, files=1, rows=50, shape="events")
    (spec,) = plan_tables(tmp_path)
    for batch in read_batches(spec.files[0], spec.columns, batch_bytes=300):
        packed = msgpack.packb(batch.to_message(), use_bin_type=True)
        assert Batch.from_message(msgpack.unpackb(packed)) == batch


def file_data(path: Path, columns, **options) -> bytes:
    return b"".join(b.data for b in read_batches(path, columns, **options))


def test_plain_crlf_and_quoted_csv_encode_the_same(tmp_path: Path) -> None:
    (plain,) = make_csvs.write_files(tmp_path / "a", files=1, rows=2000, shape="ratings")
    (spec,) = plan_tables(tmp_path / "a")
    text = plain.read_text(encoding="utf-8")
    crlf = write(tmp_path / "b" / "ratings_1.csv", "")
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    quoted = write(tmp_path / "c" / "ratings_1.csv", "")  # quotes force the csv module
    quoted.write_text(text.replace(",5.0,", ',"5.0",'), encoding="utf-8")
    lone_cr = write(tmp_path / "d" / "ratings_1.csv", "")
    lone_cr.write_bytes(text.replace("\n", "\r").encode())
    expected = file_data(plain, spec.columns)
    assert expected.count(b"\n") == 2000
    for path in (crlf, quoted, lone_cr):
        for size in (100, 4096, 1 << 20):
            assert file_data(path, spec.columns, batch_bytes=size) == expected, (path, size)


def test_rows_spanning_block_ends_keep_their_line_numbers(typed_dir: Path) -> None:
    rows = "".join(f'{i},"note {i}\nsecond line",1.5,2024-01-01\n' for i in range(50))
    path = write(typed_dir / "m_1.csv", "id,note,score,at\n" + rows + "50,x,bad,2024-01-01\n")
    (spec,) = plan_tables(typed_dir)
    for size in (1, 17, 100, 1 << 16):
        batches = []
        with pytest.raises(BadRowError) as caught:
            batches.extend(read_batches(path, spec.columns, fixed=spec.fixed, batch_bytes=size))
        assert (caught.value.line, caught.value.column) == (102, "score"), size
    good = list(
        read_batches(
            path, spec.columns, fixed=spec.fixed, batch_bytes=40, on_bad_row=lambda bad: None
        )
    )
    assert sum(b.rows for b in good) == 50
    assert [b.line_of(i) for b in good for i in range(b.rows)] == list(range(2, 102, 2))


# ----------------------------------------------------------------------------- loading


def test_loaded_tables_hold_exactly_the_rows_of_their_files(tmp_path: Path, dsn: str) -> None:
    make_csvs.write_files(tmp_path, files=2, rows=3000, shape="ratings")
    make_csvs.write_files(tmp_path, files=1, rows=2000, shape="users")
    make_csvs.write_files(tmp_path, files=2, rows=1500, shape="events")
    assert load_directory(dsn, tmp_path, "run-1", batch_bytes=20_000) == {
        "events": 3000,
        "ratings": 6000,
        "users": 2000,
    }
    for spec in plan_tables(tmp_path):
        expected = sorted(file_rows(spec), key=sort_key)
        assert sorted(table_rows(dsn, spec), key=sort_key) == expected, spec.name
        assert count(dsn, spec.name, "run-1") == len(expected)
    assert query(dsn, f"SELECT count(*) FROM {LOADS_TABLE} WHERE run = 'run-1'") == [(3,)]


def test_text_with_separators_quotes_and_unicode_round_trips(tmp_path: Path, dsn: str) -> None:
    awkward = [
        "a\tb",
        "line\nbreak",
        "cr\r\nlf",
        "back\\slash\\N",
        'say "hi", ok',
        "✓ ünï",
        "\\t literal",
        "",
    ]
    with open(tmp_path / "notes_1.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "note"])
        writer.writerows([i, text] for i, text in enumerate(awkward))
    load_directory(dsn, tmp_path, "run-1")
    stored = query(dsn, "SELECT note FROM notes ORDER BY id")
    assert [r[0] for r in stored] == awkward[:-1] + [None]


def test_loading_a_table_twice_for_one_run_leaves_one_copy(tmp_path: Path, dsn: str) -> None:
    make_csvs.write_files(tmp_path, files=2, rows=1000, shape="ratings")
    for _ in range(3):
        assert load_directory(dsn, tmp_path, "run-1") == {"ratings": 2000}
    assert count(dsn, "ratings") == 2000
    assert load_directory(dsn, tmp_path, "run-2") == {"ratings": 2000}
    assert query(dsn, BY_KEY.format("ratings")) == [("run-1", 2000), ("run-2", 2000)]
    assert query(dsn, f"SELECT run, table_name, rows FROM {LOADS_TABLE} ORDER BY run") == [
        ("run-1", "ratings", 2000),
        ("run-2", "ratings", 2000),
    ]
    assert loaded_rows(dsn, "run-2") == 2000
    assert loaded_rows(dsn, "run-3") is None


def test_two_live_attempts_of_one_load_take_turns(tmp_path: Path, dsn: str) -> None:
    make_csvs.write_files(tmp_path, files=1, rows=1000, shape="ratings")
    (spec,) = plan_tables(tmp_path)
    holding, release, outcome = threading.Event(), threading.Event(), []

    def stalled() -> Iterator[Batch]:
        yield from batches_of(spec)
        holding.set()  # the first attempt has copied everything and holds the lock
        release.wait(10)

    def first_attempt() -> None:
        outcome.append(load_table(dsn, "ratings", spec.columns, "run-1", stalled()))

    thread = threading.Thread(target=first_attempt)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            load_table(dsn, "ratings", spec.columns, "run-1", batches_of(spec), lock_timeout_s=0.2)
    finally:
        release.set()
        thread.join(10)
    assert outcome == [1000] and count(dsn, "ratings") == 1000
    assert load_table(dsn, "ratings", spec.columns, "run-1", batches_of(spec)) == 1000
    assert count(dsn, "ratings") == 1000


def test_an_existing_table_with_other_columns_is_refused(tmp_path: Path, dsn: str) -> None:
    query_and_commit(dsn, "CREATE TABLE m (id bigint, name text)")
    write(tmp_path / "m_1.csv", "id,name\n1,a\n")
    with pytest.raises(SchemaError, match=r"table 'm' exists with columns \[\('id', 'bigint'\)"):
        load_directory(dsn, tmp_path, "run-1")


def query_and_commit(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


# A loader in its own process, throttled (10 ms per ~1,000-row batch) so that the test can
# SIGKILL it while its COPY is surely in progress.
_KILLABLE_LOADER = """
import sys, time
sys.path.insert(0, sys.argv[4])
from pathlib import Path
from examples.csvload import plan_tables, read_batches, load_table

dsn, directory, run_id = sys.argv[1:4]
(spec,) = plan_tables(Path(directory))

def slowly():
    for path in spec.files:
        for batch in read_batches(path, spec.columns, batch_bytes=28_000):
            yield batch
            time.sleep(0.01)

load_table(dsn, spec.name, spec.columns, run_id, slowly())
"""


def copied_so_far(dsn: str) -> int:
    rows = query(
        dsn,
        "SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy "
        "WHERE datname = current_database()",
    )
    return int(rows[0][0])


def kill_loader_mid_copy(dsn: str, directory: Path, run_id: str) -> int:
    """Start the loader, SIGKILL it once 20,000 rows are in its COPY; return rows seen."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_LOADER, dsn, str(directory), run_id, str(ROOT)], cwd=ROOT
    )
    try:
        seen = wait_for(
            lambda: copied_so_far(dsn) >= 20_000 or proc.poll() is not None,
            timeout=20,
            what="the loader's COPY to be under way",
        )
        assert proc.poll() is None, "the loader finished before it could be killed"
        copied = copied_so_far(dsn)
        proc.send_signal(signal.SIGKILL)
        assert seen
    finally:
        proc.kill()
        proc.wait(10)
    wait_for(lambda: copied_so_far(dsn) == 0, timeout=10, what="the server to drop the COPY")
    return copied


def test_a_load_killed_mid_copy_leaves_one_copy_once_retried(tmp_path: Path, dsn: str) -> None:
    make_csvs.write_files(tmp_path, files=1, rows=100_000, shape="ratings")
    (spec,) = plan_tables(tmp_path)
    # First attempt dies mid-COPY: nothing of it is visible.
    assert 20_000 <= kill_loader_mid_copy(dsn, tmp_path, "run-1") < 100_000
    assert count(dsn, "ratings") == 0
    assert loaded_rows(dsn, "run-1") is None
    # The retry loads everything once.
    assert load_directory(dsn, tmp_path, "run-1") == {"ratings": 100_000}
    # A later attempt of the same run dies mid-COPY after deleting the earlier rows in its
    # transaction: the earlier copy is still whole.
    kill_loader_mid_copy(dsn, tmp_path, "run-1")
    assert count(dsn, "ratings") == 100_000
    assert load_directory(dsn, tmp_path, "run-1") == {"ratings": 100_000}
    assert count(dsn, "ratings", "run-1") == 100_000
    assert sorted(table_rows(dsn, spec)) == sorted(file_rows(spec))


# ----------------------------------------------------------------------------- bad rows


@pytest.fixture
def typed_dir(tmp_path: Path) -> Path:
    """A directory whose schema.json fixes the types, so bad values cannot widen them."""
    write(
        tmp_path / "schema.json",
        json.dumps(
            {
                "m": {
                    "id": "bigint",
                    "note": "text",
                    "score": "double precision",
                    "at": "timestamptz",
                }
            }
        ),
    )
    return tmp_path


@pytest.mark.parametrize(
    "body, line, column, reason",
    [
        ("1,a,1.5,2024-01-01\n2,b,2.5\n", 3, "at", "expected 4 fields, found 3"),
        ("1,a,1.5,2024-01-01,extra\n", 2, None, "expected 4 fields, found 5"),
        (
            "1,a,1.5,2024-01-01\n2,b,high,2024-01-01\n",
            3,
            "score",
            "'high' is not a valid double precision",
        ),
        (
            '1,"two\nlines",1.5,2024-01-01\n\n2,b,2,2024-13-01\n',
            5,
            "at",
            "'2024-13-01' is not a valid ISO 8601 timestamp",
        ),
        ("99999999999999999999,a,1,2024-01-01\n", 2, "id", "out of range for bigint"),
    ],
)
def test_a_malformed_row_fails_naming_file_line_and_column(
    typed_dir: Path, dsn: str, body: str, line: int, column: str | None, reason: str
) -> None:
    path = write(typed_dir / "m_1.csv", "id,note,score,at\n" + body)
    with pytest.raises(BadRowError) as caught:
        load_directory(dsn, typed_dir, "run-1")
    error = caught.value
    assert (error.path, error.line, error.column) == (str(path), line, column)
    assert reason in error.reason and f"line {line}" in str(error)
    assert count(dsn, "m") == 0


def test_a_value_postgres_refuses_is_traced_to_its_line(typed_dir: Path, dsn: str) -> None:
    good = "".join(f"{i},n,1.0,2024-01-0{i % 9 + 1} 10:00:00Z\n" for i in range(5000))
    path = write(
        typed_dir / "m_1.csv", "id,note,score,at\n" + good + "5000,n,1.0,2023-02-30 10:00:00Z\n"
    )
    with pytest.raises(BadRowError) as caught:
        load_directory(dsn, typed_dir, "run-1", batch_bytes=30_000)
    assert (caught.value.path, caught.value.line, caught.value.column) == (str(path), 5002, "at")
    assert "out of range" in caught.value.reason
    assert count(dsn, "m") == 0


def test_skip_bad_rows_loads_the_rest_and_writes_rejects(typed_dir: Path, dsn: str) -> None:
    source = write(
        typed_dir / "m_1.csv",
        """
        id,note,score,at
        1,ok,1.5,2024-01-01
        2,short,2.5
        3,"multi
        line",3.5,2024-01-03
        4,bad,x,2024-01-04
        5,ok,5,2024-01-05T10:11:12+02:00
        """,
    )
    (spec,) = plan_tables(typed_dir)
    with RejectFile(source, spec.columns) as rejects:
        batches = read_batches(source, spec.columns, fixed=spec.fixed, on_bad_row=rejects.write)
        assert load_table(dsn, "m", spec.columns, "run-1", batches) == 3
    assert rejects.path == typed_dir / "rejects" / "m_1.rejects.csv"
    with open(rejects.path, newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [
            ["_line", "_column", "_reason", "id", "note", "score", "at"],
            ["3", "at", "expected 4 fields, found 3", "2", "short", "2.5"],
            ["6", "score", "'x' is not a valid double precision", "4", "bad", "x", "2024-01-04"],
        ]
    assert query(dsn, "SELECT id, note FROM m ORDER BY id") == [
        (1, "ok"),
        (3, "multi\nline"),
        (5, "ok"),
    ]
    # Fixed data, retried: the stale reject file goes away.
    write(source, "id,note,score,at\n1,ok,1.5,2024-01-01\n")
    with RejectFile(source, spec.columns) as rejects:
        load_table(
            dsn,
            "m",
            spec.columns,
            "run-1",
            read_batches(source, spec.columns, fixed=spec.fixed, on_bad_row=rejects.write),
        )
    assert not rejects.path.exists() and not list(rejects.path.parent.iterdir())


# ----------------------------------------------------------------------------- generator


def test_make_csvs_writes_deterministic_files_of_each_shape(tmp_path: Path) -> None:
    argv = ["--files", "2", "--rows", "25", "--shape", "users", "--seed", "7"]
    assert make_csvs.main([str(tmp_path / "a"), *argv]) == 0
    assert make_csvs.main([str(tmp_path / "b"), *argv]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["users_1.csv", "users_2.csv"]
    for name in names:
        text = (tmp_path / "a" / name).read_text(encoding="utf-8")
        assert text == (tmp_path / "b" / name).read_text(encoding="utf-8")
        with open(tmp_path / "a" / name, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == list(make_csvs.SHAPES["users"].header) and len(rows) == 26


# ----------------------------------------------------------------------------- issue 17


def test_types_fit_the_whole_file_and_markers_load_as_null(tmp_path: Path, dsn: str) -> None:
    # The first NA, decimal and wide integers come after the 1,000-row inference sample.
    rows = [f"{i},{i},{i},2024-01-02,2024-01-02T03:04:05Z,true,x{i}" for i in range(1500)]
    rows[1200] = "1200,NA,2.5,NA,NA,NA,NA"
    rows[1300] = "9223372036854775808,4294967296,NaN,2024-02-29,2024-01-02T03:04:05+05:30,FALSE,y"
    write(tmp_path / "wide_1.csv", "id,n,x,d,ts,ok,note\n" + "\n".join(rows) + "\n")
    (spec,) = plan_tables(tmp_path)  # the sample's guess; the extractor widens the rest
    assert [c.type.value for c in spec.columns] == [
        "bigint",
        "bigint",
        "bigint",
        "date",
        "timestamptz",
        "boolean",
        "text",
    ]
    # Small batches: rows 1200 and 1300 widen in different batches, two ALTERs mid-load.
    assert load_directory(dsn, tmp_path, "k", batch_bytes=4096) == {"wide": 1500}
    assert query(
        dsn,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
        "attrelid = 'wide'::regclass AND attnum > 0 ORDER BY attnum",
    ) == [
        ("numeric",),
        ("bigint",),
        ("double precision",),
        ("date",),
        ("timestamp with time zone",),
        ("boolean",),
        ("text",),
        ("bigint",),
    ]  # then the load number
    assert query(dsn, "SELECT n, x, d, ts, ok, note FROM wide WHERE id = 1200") == [
        (None, 2.5, None, None, None, "NA")
    ]  # text keeps NA by default
    assert query(dsn, "SELECT n, x, ts, ok FROM wide WHERE id = 9223372036854775808") == [
        (4294967296, None, dt.datetime(2024, 1, 1, 21, 34, 5, tzinfo=dt.timezone.utc), False)
    ]
    assert query(dsn, "SELECT sum(n), count(x) FROM wide")[0] == (
        sum(range(1500)) - 1200 - 1300 + 4294967296,
        1499,
    )


MARKERS = ["", "NA", "N/A", "NaN", "NULL", "null", "\\N"]


@pytest.mark.parametrize("in_text", [False, True])
def test_every_marker_in_every_column_type(tmp_path: Path, dsn: str, in_text: bool) -> None:
    header = "i,b,f,d,ts,ok,t\n"
    good = "0,7,1.5,2024-01-01,2024-01-01T00:00:00Z,true,text\n"
    body = "".join(
        f'{n},{m},{m},{m},{m},{m},"{m}"\n'.replace('"\\N"', "\\N")
        for n, m in enumerate(MARKERS, start=1)
    )
    write(tmp_path / "m_1.csv", header + good + body)
    (spec,) = plan_tables(tmp_path)
    assert [c.type for c in spec.columns] == [B, B, D, ColumnType.DATE, TS, BOOL, T]
    load_table(
        dsn,
        "m",
        spec.columns,
        "k",
        (b for p in spec.files for b in read_batches(p, spec.columns, markers_in_text=in_text)),
    )
    stored = query(dsn, "SELECT i, b, f, d, ts, ok, t FROM m WHERE i > 0 ORDER BY i")
    for (i, *values), marker in zip(stored, MARKERS):
        assert values[:5] == [None] * 5, (marker, values)
        assert values[5] == (None if in_text or marker == "" else marker), marker


def test_a_bad_value_after_widening_still_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "m_1.csv", "id,v\n" + "1,2\n" * 1500 + "2\n")
    (spec,) = plan_tables(tmp_path)
    with pytest.raises(BadRowError, match=r"m_1\.csv, line 1502, column 'v'"):
        list(read_batches(path, spec.columns, fixed=spec.fixed))


def test_twelve_monthly_windows_equal_a_one_shot_load(tmp_path: Path, dsn: str) -> None:
    utc = dt.timezone.utc
    write(
        tmp_path / "obs_1.csv",
        "id,at,v\n"
        + "".join(
            f"{i},"
            f"{dt.datetime(2024, 1, 1, tzinfo=utc) + dt.timedelta(hours=7 * i):%Y-%m-%dT%H:%M:%S}"
            f"{'Z' if i % 2 else '+00:00'},{i}\n"
            for i in range(1250)
        ),
    )
    (spec,) = plan_tables(tmp_path)
    months = [dt.datetime(2024, m, 1, tzinfo=utc) for m in range(1, 13)]
    months.append(dt.datetime(2025, 1, 1, tzinfo=utc))
    windows = [Window("at", a, b) for a, b in zip(months, months[1:])]

    def load(window: Window | None, table: str = "obs") -> int:
        key = load_key(table, spec.files, window)
        return load_table(dsn, table, spec.columns, key, batches_of(spec), window=window)

    total = sum(load(w) for w in reversed(windows))  # any order
    assert total == 1250 == count(dsn, "obs")
    rows_and_keys = (
        f"SELECT o.id, o.at, o.v, l.load_key FROM obs o JOIN {LOADS_TABLE} l "
        "ON l.load_id = o._plankton_load ORDER BY o.id"
    )
    snapshot = query(dsn, rows_and_keys)
    assert load(windows[5]) == count(dsn, "obs", load_key("obs", [], windows[5])) > 0
    assert query(dsn, rows_and_keys) == snapshot
    assert load(None, "obs_all") == 1250
    assert query(dsn, "SELECT id, at, v FROM obs ORDER BY id") == query(
        dsn, "SELECT id, at, v FROM obs_all ORDER BY id"
    )


def test_widening_mid_file_keeps_markers_null_and_a_wider_table_takes_later_loads(
    tmp_path: Path, dsn: str
) -> None:
    # v: integers for the sample, an NA, then a value only text holds (at line 1,202).
    rows = [f"{i},{i}" for i in range(1500)]
    rows[1100], rows[1200] = "1100,NA", "1200,abc"
    write(tmp_path / "a" / "m_1.csv", "id,v\n" + "\n".join(rows) + "\n")
    write(tmp_path / "b" / "m_1.csv", "id,v\n1,2\n")  # plans v as bigint again
    assert load_directory(dsn, tmp_path / "a", "a", batch_bytes=1024) == {"m": 1500}
    assert query(dsn, "SELECT v FROM m WHERE id IN (1100, 1200, 7) ORDER BY id") == [
        ("7",),
        (None,),
        ("abc",),
    ]  # NA stays NULL: the column was planned bigint
    assert load_directory(dsn, tmp_path / "b", "b") == {"m": 1}
    assert query(dsn, BY_KEY.format("m")) == [("a", 1500), ("b", 1)]
