"""Benchmark: CSV files into PostgreSQL, the csv_to_postgres example against ``psql \\copy``.

    python benchmarks/csv_load.py [--files 3] [--rows 1000000] [--repeat 3] [--dsn DSN]
                                  [--url REDIS_URL] [--json PATH]

Why these lines: ``psql \\copy`` of the same files is the floor any loader stands on (the
server parses the CSV itself, nothing else runs). The loader library line runs exactly what
the DAG's tasks run (plan, read and check, encode, COPY in one transaction), as 2 processes,
an extractor feeding a loader through a pipe as msgpack, like the DAG on 2 workers minus
Redis and scheduling; the two stage lines show where its time goes. ``run_plankton`` is the
same load through the engine, measured once ``--url`` names a Redis with workers running.

Data (MovieLens-like ratings from ``examples/make_csvs.py``) is cached under
``benchmarks/.data/``. Without ``--dsn`` a private PostgreSQL is started with the test
fixture's settings (``fsync=off``: the same for every line). All tables live in the schema
``plankton_bench``, dropped and re-made before each timed run. Each figure is the median and
min-max of ``--repeat`` runs, and counts only if the table then holds every row (``checked``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import make_csvs  # noqa: E402
from examples.csvload import (  # noqa: E402
    Batch,
    TableSpec,
    columns_from_message,
    columns_to_message,
    load_table,
    loaded_rows,
    plan_tables,
    read_batches,
)

DATA_DIR = Path(__file__).resolve().parent / ".data"
#: Schema holding every table the benchmark makes; dropped and re-made before each run.
SCHEMA = "plankton_bench"
TABLE = "ratings"
FLOOR_TABLE = "ratings_floor"
#: Longest a single timed run may take before the benchmark gives up, in seconds.
RUN_TIMEOUT_S = 900


@dataclass
class Figure:
    """One line of the table: wall seconds of each repeat, and whether each was checked."""

    name: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    checked: bool = True
    note: str = ""

    def add(self, seconds: float, ok: bool) -> None:
        self.seconds.append(seconds)
        self.checked = self.checked and ok

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        """``{"median", "min", "max", "unit", "checked"}`` in rows/s, as BENCHMARKS.md asks."""
        if not self.seconds:
            return {"skipped": self.note or "not run", "checked": False}
        rates = [self.rows / s for s in self.seconds]
        return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
                "unit": "rows/s", "checked": self.checked, "seconds": self.seconds}


# ----------------------------------------------------------------------------- set-up


def ensure_data(files: int, rows: int, seed: int = 1) -> Path:
    """The cached directory of ``files`` ratings files of ``rows`` rows, made if missing."""
    directory = DATA_DIR / f"ratings-{files}x{rows}-seed{seed}"
    if (directory / ".complete").exists():
        return directory
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="partial-", dir=DATA_DIR))
    print(f"writing {files} x {rows:,} rows to {directory} ...", flush=True)
    make_csvs.write_files(partial, files, rows, "ratings", seed)
    (partial / ".complete").touch()
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def bench_dsn(dsn: str) -> str:
    """``dsn`` with ``search_path`` set to the benchmark's own schema."""
    return make_conninfo(dsn, options=f"-c search_path={SCHEMA}")


def reset_schema(dsn: str) -> None:
    """Drop and re-make the benchmark schema, then checkpoint so runs start alike."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass


def table_count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def timed(dsn: str, run: Callable[[], bool]) -> tuple[float, bool]:
    """Reset the schema, then time ``run`` (which returns whether its output checked out)."""
    reset_schema(dsn)
    start = time.perf_counter()
    ok = run()
    return time.perf_counter() - start, ok


# ----------------------------------------------------------------------------- the floor


def psql_copy(dsn: str, files: Sequence[Path], sessions: int, total: int) -> bool:
    """``\\copy`` every file into one plain table, from ``sessions`` psql processes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {FLOOR_TABLE} (user_id bigint, movie_id bigint, "
                     "rating double precision, timestamp bigint)")
    procs = [subprocess.Popen(psql_args(dsn, files[i::sessions])) for i in range(sessions)]
    codes = [p.wait(RUN_TIMEOUT_S) for p in procs]
    return codes == [0] * sessions and table_count(dsn, FLOOR_TABLE) == total


def psql_args(dsn: str, files: Sequence[Path]) -> list[str]:
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    for path in files:
        args += ["-c", f"\\copy {FLOOR_TABLE} FROM '{path}' WITH (FORMAT csv, HEADER true)"]
    return args


# ----------------------------------------------------------------------------- the library


def extract_into(pipe: Connection, files: Sequence[str], columns: list[list[str]]) -> None:
    """Process 1: what the ExtractCsv tasks do, each batch sent as one msgpack value."""
    parsed = columns_from_message(columns)
    for path in files:
        for batch in read_batches(Path(path), parsed):
            pipe.send_bytes(msgpack.packb(batch.to_message(), use_bin_type=True))
    pipe.send_bytes(b"")
    pipe.close()


def received(pipe: Connection) -> Iterator[Batch]:
    while data := pipe.recv_bytes():
        yield Batch.from_message(msgpack.unpackb(data))


def load_from(pipe: Connection, dsn: str, table: str, columns: list[list[str]],
              run_id: str) -> None:
    """Process 2: what the LoadTable task does."""
    load_table(dsn, table, columns_from_message(columns), run_id, received(pipe))


def library_load(dsn: str, directory: Path, total: int) -> bool:
    """Plan, then extract and load in 2 processes; check the committed row count."""
    (spec,) = plan_tables(directory)
    columns, run_id = columns_to_message(spec.columns), f"bench-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("fork")
    receiving, sending = ctx.Pipe(duplex=False)
    procs = [ctx.Process(target=extract_into, args=(sending, [str(f) for f in spec.files],
                                                    columns)),
             ctx.Process(target=load_from, args=(receiving, dsn, spec.name, columns, run_id))]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(RUN_TIMEOUT_S)
    ok = [p.exitcode for p in procs] == [0, 0]
    return ok and loaded_rows(dsn, spec.name, run_id) == total == table_count(dsn, spec.name)


def extract_only(spec: TableSpec, total: int) -> bool:
    """Stage 1 alone, in this process: read, check and encode every file."""
    rows = sum(b.rows for path in spec.files for b in read_batches(path, spec.columns))
    return rows == total


def time_copy_only(dsn: str, spec: TableSpec, total: int) -> tuple[float, bool]:
    """Stage 2 alone, in this process: COPY batches encoded beforehand (not timed)."""
    batches = [b for path in spec.files for b in read_batches(path, spec.columns)]
    return timed(dsn, lambda: load_table(dsn, spec.name, spec.columns, "bench-copy",
                                         iter(batches)) == total)


# =====================================================================================
# PLANKTON END TO END: the wire-in point for the engine.
# Runs the csv_to_postgres DAG through Redis + RQ workers and times submit -> succeeded
# (the DAG function, which plans the tables, runs in this process at submit, as it does in
# `plankton run`). Expects a scheduler and 2 workers already running against ``url``, e.g.
#     plankton up --import examples.csv_to_postgres --workers 2 --port 0   (cwd = repo root)
# =====================================================================================
def run_plankton(url: str, directory: Path, dsn: str, total: int) -> bool:
    """Submit ``csv_to_postgres`` for ``directory``, wait, and check every row landed."""
    import plankton as pk  # here, not at the top: the other lines must run without the engine

    client = pk.Client(url, imports=["examples.csv_to_postgres"])
    run_id = client.submit("csv_to_postgres",
                           params={"directory": str(directory), "dsn": dsn})
    run = client.wait(run_id, timeout=RUN_TIMEOUT_S)
    status = run["status"] if isinstance(run, dict) else getattr(run, "status", None)
    return (str(getattr(status, "value", status)) == "succeeded"
            and loaded_rows(dsn, TABLE, run_id) == total == table_count(dsn, TABLE))


# ----------------------------------------------------------------------------- running


def measure(dsn: str, directory: Path, total: int, repeat: int,
            url: str | None) -> list[Figure]:
    """Every line of the table, each run ``repeat`` times."""
    files = sorted(directory.glob("*.csv"))
    figures = {
        "floor": Figure("psql \\copy, 1 session (floor)", total),
        "floor2": Figure("psql \\copy, 2 sessions", total),
        "library": Figure("loader library, 2 processes", total),
        "extract": Figure("  stage: extract only, 1 process", total),
        "copy": Figure("  stage: COPY only, pre-encoded", total),
        "plankton": Figure("plankton DAG, 2 workers", total,
                           note="" if url else "not run: pass --url with 2 workers up"),
    }
    (spec,) = plan_tables(directory)
    for _ in range(repeat):
        figures["floor"].add(*timed(dsn, lambda: psql_copy(dsn, files, 1, total)))
        figures["floor2"].add(*timed(dsn, lambda: psql_copy(dsn, files, 2, total)))
        figures["library"].add(*timed(dsn, lambda: library_load(dsn, directory, total)))
        figures["extract"].add(*timed(dsn, lambda: extract_only(spec, total)))
        figures["copy"].add(*time_copy_only(dsn, spec, total))
        if url:
            figures["plankton"].add(*timed(dsn, lambda: run_plankton(url, directory, dsn,
                                                                     total)))
    return list(figures.values())


def print_table(figures: Sequence[Figure], title: str) -> None:
    floor = figures[0].median if figures[0].seconds else None
    print(title)
    vs_copy = "vs \\copy"
    print(f"{'method':<36} {'median s':>9} {'min-max s':>13} {'rows/s':>11} {vs_copy:>8}  "
          "checked")
    for fig in figures:
        if not fig.seconds:
            print(f"{fig.name:<36} {'-':>9} {'-':>13} {'-':>11} {'-':>8}  ({fig.note})")
            continue
        span = f"{min(fig.seconds):.2f}-{max(fig.seconds):.2f}"
        ratio = f"{floor / fig.median:.0%}" if floor else "-"
        print(f"{fig.name:<36} {fig.median:>9.2f} {span:>13} {fig.rows / fig.median:>11,.0f} "
              f"{ratio:>8}  {'yes' if fig.checked else 'NO'}")


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a private one)")
    parser.add_argument("--url", help="Redis URL of a running Plankton (enables the DAG line)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    directory = ensure_data(args.files, args.rows)
    server = None
    if args.dsn is None:
        from tests.servers import PostgresServer  # the test fixture's server, when asked

        server = PostgresServer(Path(tempfile.mkdtemp(prefix="plankton-bench-pg-"))).start()
    try:
        base = args.dsn or server.dsn
        dsn, total = bench_dsn(base), args.files * args.rows
        figures = measure(dsn, directory, total, args.repeat, args.url)
        print_table(figures, f"csv_load: {args.files} files x {args.rows:,} rows = {total:,} "
                             f"rows, PostgreSQL {server_version(dsn)}"
                             f"{' (private, fsync=off)' if server else ''}, "
                             f"median of {args.repeat}")
    finally:
        if server is not None:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps({f.name.strip(): f.as_dict() for f in figures},
                                        indent=2))
    return 0 if all(f.checked for f in figures if f.seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
