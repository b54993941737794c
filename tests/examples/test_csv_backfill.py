"""The windowed backfill as a user runs it: ``plankton backfill`` (the real CLI) of
``csv_to_postgres_monthly`` over a year, with a real scheduler, 2 worker processes and a real
PostgreSQL, against a one-shot load of the same file.

What must hold: the 12 monthly windows together load exactly the source rows of the year
(none outside it, none twice, a timestamp with an offset in the window its UTC instant falls
in), the same rows a single run over the whole year loads; re-running one window in the
middle, skipped by ``complete()`` or forced with ``reload``, changes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from examples.csvload import LOADS_TABLE

DAG_MODULE = "examples.csv_to_postgres"
UTC = dt.timezone.utc


def make_database(server_dsn: str) -> str:
    name = f"csvbf_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


@pytest.fixture
def databases(postgres_server) -> Iterator[tuple[str, str]]:
    """Two fresh databases: one for the backfill, one for the one-shot load."""
    names = [make_database(postgres_server.dsn) for _ in range(2)]
    yield tuple(
        psycopg.conninfo.make_conninfo(postgres_server.dsn, dbname=n)  # type: ignore
        for n in names
    )
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def stack(cluster, databases, monkeypatch):
    """A scheduler and 2 workers running the example; the DSNs as env: secret references."""
    backfill_dsn, oneshot_dsn = databases
    for env, value in (("BF_DSN", backfill_dsn), ("ONESHOT_DSN", oneshot_dsn)):
        monkeypatch.setenv(env, value)  # complete() runs in the CLI that submits
        cluster.env_extra[env] = value
    return cluster.start(["bf-w1", "bf-w2"], imports=[DAG_MODULE])


def write_source(directory: Path) -> list[tuple]:
    """``sales_1.csv``: rows from mid-December 2023 to mid-January 2025 (some outside the
    year), amounts with ``NA``, a few timestamps with an offset across a month boundary.
    Returns the rows of 2024 (UTC) as the table should hold them."""
    start = dt.datetime(2023, 12, 15, tzinfo=UTC)
    lines, expected = [], []
    for i in range(800):
        at = start + dt.timedelta(hours=13 * i)
        amount = None if i % 17 == 0 else Decimal(i) / 4
        text = at.isoformat().replace("+00:00", "Z")
        if i % 29 == 0:  # the same instant written with +02:00
            text = (at.astimezone(dt.timezone(dt.timedelta(hours=2)))).isoformat()
        lines.append(f"{i},{text},{'NA' if amount is None else amount}\n")
        if dt.datetime(2024, 1, 1, tzinfo=UTC) <= at < dt.datetime(2025, 1, 1, tzinfo=UTC):
            expected.append((i, at, None if amount is None else float(amount)))
    (directory / "sales_1.csv").write_text("id,at,amount\n" + "".join(lines))
    return expected


def table(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, at, amount::float8 FROM sales ORDER BY id").fetchall()


def loads(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f'SELECT since, "to", rows, run FROM {LOADS_TABLE} ORDER BY since'
        ).fetchall()


def backfill(stack, directory: Path, since: str, to: str, *extra: str) -> list[str]:
    """``plankton backfill csv_to_postgres_monthly ... --wait``; the run lines it printed."""
    done = stack.cli(
        "backfill",
        "csv_to_postgres_monthly",
        "--since",
        since,
        "--to",
        to,
        "--param",
        f"directory={directory}",
        "--param",
        "dsn=env:BF_DSN",
        *extra,
        "--wait",
        "--import",
        DAG_MODULE,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if " -> " in line]


def test_a_monthly_backfill_over_a_year_loads_the_source_rows_exactly_once(
    stack, databases, tmp_path: Path
) -> None:
    backfill_dsn, oneshot_dsn = databases
    expected = write_source(tmp_path)
    runs = backfill(stack, tmp_path, "2024-01-01", "2025-01-01")
    assert len(runs) == 12
    assert runs[0].endswith("2024-01-01T00:00:00+00:00 -> 2024-02-01T00:00:00+00:00")
    assert table(backfill_dsn) == expected
    months = loads(backfill_dsn)
    assert [(s.month, t.month) for s, t, _, _ in months] == [(m, m % 12 + 1) for m in range(1, 13)]
    assert sum(rows for _, _, rows, _ in months) == len(expected)

    # The one-shot load: a single run of the windowed DAG over the whole year.
    done = stack.cli(
        "run",
        "csv_to_postgres",
        "--param",
        f"directory={tmp_path}",
        "--param",
        "dsn=env:ONESHOT_DSN",
        "--param",
        "time_column=at",
        "--since",
        "2024-01-01",
        "--to",
        "2025-01-01",
        "--wait",
        "--import",
        DAG_MODULE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert table(oneshot_dsn) == table(backfill_dsn)

    # Re-running June: skipped by complete() (same bytes), then forced to load again.
    assert len(backfill(stack, tmp_path, "2024-06-01", "2024-07-01", "--force")) == 1
    assert loads(backfill_dsn) == months
    (june,) = backfill(
        stack, tmp_path, "2024-06-01", "2024-07-01", "--force", "--param", "reload=true"
    )
    assert table(backfill_dsn) == expected
    again = loads(backfill_dsn)
    assert [row[:3] for row in again] == [row[:3] for row in months]
    changed = [(s.month, run) for (s, _, _, run), old in zip(again, months) if run != old[3]]
    assert changed == [(6, june.split()[0])]  # June was loaded again, and only June
