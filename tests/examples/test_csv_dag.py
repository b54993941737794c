"""The csv_to_postgres DAG through the real engine: scheduler and 2 worker processes, Redis,
and a real PostgreSQL (the session's ``postgres_server``).

What the library tests (``test_csvload.py``) show for the loader alone, shown here for the
DAG a user runs: contents and run tracing, a loader SIGKILLed mid-COPY and retried by the
engine, bad rows failing the run (at once, naming file, line and column) or going to the
reject file.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import plankton as pk
from examples import make_csvs
from examples.csvload import LOADS_TABLE, plan_tables
from tests.examples.test_csvload import copied_so_far, file_rows, sort_key, table_rows
from tests.servers import wait_for

DAG_MODULE = "examples.csv_to_postgres"
DSN_REF = "env:CSV_TEST_DSN"
KILL_ROWS = 2 * 300_000  # rows of the table whose loader is killed: seconds of COPY


@pytest.fixture
def dsn(postgres_server) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL, dropped after the test."""
    name = f"csvdag_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(postgres_server.dsn, dbname=name)
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def workers(cluster, dsn, monkeypatch):
    """A scheduler and 2 workers running the example; {worker name: process}. The DSN is
    passed as the secret reference env:CSV_TEST_DSN, set here and in every process."""
    monkeypatch.setenv("CSV_TEST_DSN", dsn)  # complete() runs where the run is written
    cluster.env_extra["CSV_TEST_DSN"] = dsn
    cluster.imports = [DAG_MODULE]
    cluster.scheduler()
    return {name: cluster.worker(name) for name in ("csv-w1", "csv-w2")}


@pytest.fixture
def client(redis_url) -> Iterator[pk.Client]:
    made = pk.Client(redis_url, imports=[DAG_MODULE])
    yield made
    made.close()


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory) -> Path:
    """One table whose load takes long enough to be killed mid-COPY (made once)."""
    directory = tmp_path_factory.mktemp("big")
    make_csvs.write_files(directory, files=2, rows=KILL_ROWS // 2, shape="ratings")
    return directory


def query(dsn: str, statement: str, *args: object) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement, args).fetchall()


def tasks_named(run: dict, name: str) -> list[dict]:
    return [t for t in run["tasks"] if t["name"] == name]


def typed_dir(directory: Path, body: str) -> Path:
    """``m_1.csv`` with ``body`` under a header, types fixed by schema.json; its path."""
    (directory / "schema.json").write_text(
        json.dumps(
            {
                "m": {
                    "id": "bigint",
                    "note": "text",
                    "score": "double precision",
                    "at": "timestamptz",
                }
            }
        )
    )
    path = directory / "m_1.csv"
    path.write_text("id,note,score,at\n" + body, encoding="utf-8")
    return path


BAD_BODY = (
    "1,ok,1.5,2024-01-01\n"
    "2,short,2.5\n"  # line 3: a field missing
    '3,"two\nlines",3.5,2024-01-03\n'  # lines 4-5: fine
    "4,bad,high,2024-01-04\n"  # line 6: not a number
    "5,ok,5,2024-01-05T10:11:12+02:00\n"
)


# ----------------------------------------------------------------------------- contents


def test_every_table_holds_its_files_rows_each_traced_to_the_run(
    workers, client, dsn, tmp_path: Path
) -> None:
    make_csvs.write_files(tmp_path, files=3, rows=2000, shape="ratings")
    make_csvs.write_files(tmp_path, files=1, rows=2000, shape="users")
    make_csvs.write_files(tmp_path, files=2, rows=1500, shape="events")
    run_id = client.submit("csv_to_postgres", params={"directory": str(tmp_path), "dsn": DSN_REF})
    run = client.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == {"events": 3000, "ratings": 6000, "users": 2000}
    for spec in plan_tables(tmp_path):
        expected = sorted(file_rows(spec), key=sort_key)
        assert sorted(table_rows(dsn, spec), key=sort_key) == expected, spec.name
        assert query(dsn, f"SELECT count(DISTINCT _plankton_load), count(*) FROM {spec.name}") == [
            (1, len(expected))
        ]
    assert query(
        dsn, f"SELECT table_name, rows FROM {LOADS_TABLE} WHERE run = %s ORDER BY 1", run_id
    ) == [("events", 3000), ("ratings", 6000), ("users", 2000)]
    # At most 2 extractors per table: ratings_1 and ratings_3 share one.
    extracted = sorted(t["result"]["rows"] for t in tasks_named(run, "ExtractCsv"))
    assert extracted == [1500, 1500, 2000, 2000, 4000]


# ----------------------------------------------------------------------------- worker loss


def file_sums(directory: Path) -> tuple:
    """count and per-column sums of the ratings files, as the table should give them."""
    n, sums = 0, [0, 0, 0.0, 0]
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            for user, movie, rating, when in reader:
                n += 1
                sums[0] += int(user)
                sums[1] += int(movie)
                sums[2] += float(rating)
                sums[3] += int(when)
    return (n, *sums)


def test_a_loader_killed_mid_copy_is_retried_and_leaves_exactly_one_copy(
    workers, client, dsn, big_dir: Path
) -> None:
    run_id = client.submit("csv_to_postgres", params={"directory": str(big_dir), "dsn": DSN_REF})

    def loader_copying() -> tuple[str, int] | None:
        (loader,) = tasks_named(client.status(run_id), "LoadTable")
        assert loader["state"] in ("pending", "queued", "running"), loader
        copied = copied_so_far(dsn)
        if loader["state"] == "running" and loader["worker"] and copied >= 20_000:
            return loader["worker"], copied
        return None

    worker, copied = wait_for(loader_copying, timeout=30, what="the loader's COPY to be under way")
    os.killpg(workers[worker].pid, signal.SIGKILL)  # the worker and its supervisor
    assert copied < KILL_ROWS, "the COPY was over before the loader was killed"

    run = client.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    (loader,) = tasks_named(run, "LoadTable")
    assert loader["attempts"] >= 2 and loader["worker"] != worker
    assert run["result"] == {"ratings": KILL_ROWS}
    # Exactly one copy: every row once, all of this run, one load recorded.
    assert query(
        dsn,
        "SELECT count(*), sum(user_id), sum(movie_id), sum(rating), sum(timestamp) FROM ratings",
    )[0] == file_sums(big_dir)
    assert query(dsn, "SELECT count(DISTINCT _plankton_load), count(*) FROM ratings") == [
        (1, KILL_ROWS)
    ]
    assert query(dsn, f"SELECT run, rows FROM {LOADS_TABLE}") == [(run_id, KILL_ROWS)]


# ----------------------------------------------------------------------------- bad rows


def test_a_malformed_row_fails_the_run_at_once_naming_file_line_and_column(
    workers, client, dsn, tmp_path: Path
) -> None:
    path = typed_dir(tmp_path, BAD_BODY)
    run = client.wait(
        client.submit("csv_to_postgres", params={"directory": str(tmp_path), "dsn": DSN_REF}),
        timeout=60,
    )
    assert run["status"] == "failed"
    (extractor,) = tasks_named(run, "ExtractCsv")
    assert extractor["state"] == "failed"
    assert extractor["error"].startswith(
        f"BadRowError: {path}, line 3, column 'at': expected 4 fields, found 3"
    )
    assert extractor["attempts"] == 1  # a bad file is not read again (retries = 0)
    assert f"{path}, line 3" in run["error"]
    for parent in ("LoadTable", "Report"):
        (task,) = tasks_named(run, parent)
        assert task["state"] == "failed" and "UpstreamFailed" in task["error"]
    # The loader's transaction is rolled back: nothing of the run is in the table.
    wait_for(lambda: copied_so_far(dsn) == 0, timeout=15, what="the loader's COPY to end")
    if query(dsn, "SELECT to_regclass('m')")[0][0] is not None:
        assert query(dsn, "SELECT count(*) FROM m") == [(0,)]
    assert not (tmp_path / "rejects").exists()


def test_skip_bad_rows_writes_the_rejects_file_and_loads_the_rest(
    workers, cluster, dsn, tmp_path: Path
) -> None:
    typed_dir(tmp_path, BAD_BODY)
    done = cluster.cli(
        "run",
        "csv_to_postgres",
        "--param",
        f"directory={tmp_path}",
        "--param",
        f"dsn={DSN_REF}",
        "--param",
        "skip_bad_rows=true",
        "--wait",
        "--import",
        DAG_MODULE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(dsn, "SELECT id, note FROM m ORDER BY id") == [
        (1, "ok"),
        (3, "two\nlines"),
        (5, "ok"),
    ]
    with open(tmp_path / "rejects" / "m_1.rejects.csv", newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [
            ["_line", "_column", "_reason", "id", "note", "score", "at"],
            ["3", "at", "expected 4 fields, found 3", "2", "short", "2.5"],
            [
                "6",
                "score",
                "'high' is not a valid double precision",
                "4",
                "bad",
                "high",
                "2024-01-04",
            ],
        ]
    run_id = done.stderr.strip().splitlines()[0]
    run = json.loads(cluster.cli("show", run_id, "--json").stdout)
    assert run["result"] == {"m": 3}
    (extractor,) = tasks_named(run, "ExtractCsv")
    assert extractor["result"] == {"rows": 3, "rejected": 2}


# ----------------------------------------------------------------------------- idempotence


def test_reruns_never_duplicate_and_an_unchanged_file_is_skipped_by_complete(
    workers, client, dsn, tmp_path: Path
) -> None:
    make_csvs.write_files(tmp_path, files=2, rows=1000, shape="ratings")
    params = {"directory": str(tmp_path), "dsn": DSN_REF}
    first = client.wait(client.submit("csv_to_postgres", params=params), timeout=60)
    assert first["status"] == "succeeded", first["error"]
    sums = file_sums(tmp_path)
    # A fresh run over the same bytes: complete() says the load is there; nothing runs.
    again = client.wait(client.submit("csv_to_postgres", params=params), timeout=60)
    assert again["status"] == "succeeded", again["error"]
    assert {t["state"] for t in again["tasks"] if t["name"] != "Report"} == {"skipped"}
    # A forced fresh run, and a rerun of it, replace the load: still exactly one copy.
    forced = client.wait(
        client.submit("csv_to_postgres", params={**params, "reload": True}), timeout=60
    )
    assert forced["status"] == "succeeded" and forced["result"] == {"ratings": 2000}
    rerun = client.wait(client.rerun(forced["run_id"]), timeout=60)
    assert rerun["status"] == "succeeded" and rerun["result"] == {"ratings": 2000}
    assert (
        query(
            dsn,
            "SELECT count(*), sum(user_id), sum(movie_id), sum(rating), "
            "sum(timestamp) FROM ratings",
        )[0]
        == sums
    )
    assert query(dsn, f"SELECT run FROM {LOADS_TABLE}") == [(rerun["run_id"],)]
    # A changed file is loaded again (its content hash differs), replacing the old rows.
    make_csvs.write_files(tmp_path, files=2, rows=1500, shape="ratings")
    changed = client.wait(client.submit("csv_to_postgres", params=params), timeout=60)
    assert changed["result"] == {"ratings": 3000}
    assert query(
        dsn,
        "SELECT count(*), sum(user_id), sum(movie_id), sum(rating), sum(timestamp) FROM ratings",
    )[0] == file_sums(tmp_path)


def test_a_windowed_run_loads_and_replaces_only_its_window(
    workers, client, dsn, tmp_path: Path
) -> None:
    path = tmp_path / "obs_1.csv"
    path.write_text(
        "id,at,v\n" + "".join(f"{i},2024-{1 + i % 12:02d}-15T12:00:00Z,{i}\n" for i in range(600))
    )
    params = {"directory": str(tmp_path), "dsn": DSN_REF, "time_column": "at"}
    utc = dt.timezone.utc
    # March, April, March again (complete(): skipped), March forced (replaced, not doubled).
    for month, reload, result in ((3, False, 50), (4, False, 50), (3, False, None), (3, True, 50)):
        since = dt.datetime(2024, month, 1, tzinfo=utc)
        to = dt.datetime(2024, month + 1, 1, tzinfo=utc)
        run = client.wait(
            client.submit(
                "csv_to_postgres", params={**params, "reload": reload}, since=since, to=to
            ),
            timeout=60,
        )
        assert run["status"] == "succeeded", run["error"]
        assert run["result"] == ({} if result is None else {"obs": result})
    assert query(
        dsn, "SELECT extract(month FROM at)::int, count(*) FROM obs GROUP BY 1 ORDER BY 1"
    ) == [(3, 50), (4, 50)]


def test_a_resumed_run_leaves_exactly_one_copy(workers, client, dsn, tmp_path: Path) -> None:
    make_csvs.write_files(tmp_path, files=2, rows=1000, shape="ratings")
    path = typed_dir(tmp_path, BAD_BODY)  # table m fails; ratings loads
    params = {"directory": str(tmp_path), "dsn": DSN_REF}
    failed = client.wait(client.submit("csv_to_postgres", params=params), timeout=60)
    assert failed["status"] == "failed"  # ratings may or may not have committed by then
    path.write_text(
        "id,note,score,at\n"
        + BAD_BODY.replace("2,short,2.5\n", "2,ok,2.5,\n").replace("4,bad,high,", "4,ok,4,"),
        encoding="utf-8",
    )
    resumed = client.wait(client.rerun(failed["run_id"], from_failure=True), timeout=60)
    assert resumed["status"] == "succeeded", resumed["error"]
    assert query(dsn, "SELECT count(*) FROM ratings") == [(2000,)]
    assert query(dsn, "SELECT count(*) FROM m") == [(5,)]
    # And resuming again, or a full rerun, still leaves one copy of each.
    again = client.wait(client.rerun(resumed["run_id"]), timeout=60)
    assert again["status"] == "succeeded", again["error"]
    assert query(dsn, "SELECT count(*), sum(user_id) FROM ratings")[0] == (
        2000,
        sum(
            int(line.split(",")[0])
            for p in sorted(tmp_path.glob("ratings_*.csv"))
            for line in p.read_text().splitlines()[1:]
        ),
    )
    assert query(dsn, "SELECT count(*) FROM m") == [(5,)]
