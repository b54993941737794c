"""Benchmark: CSV files into PostgreSQL, the csv_to_postgres example against ``psql \\copy``.

    python -m benchmarks.csv_load [--files 3] [--rows 1000000] [--repeat 3]
                                  [--lines floor,plankton,...] [--dsn DSN] [--url REDIS_URL]
                                  [--json PATH]

One command: without ``--dsn`` a private PostgreSQL is started (``fsync=off``, the same for
every line), and without ``--url`` a private ``plankton up --workers 2`` stack (its own Redis,
a scheduler, 2 workers) runs the DAG line. Lines, each run ``--repeat`` times, one after the
other in every repeat (so \\copy and Plankton alternate on a shared, noisy machine):

- ``floor``: ``psql \\copy`` of the same files into a plain table, the floor any loader
  stands on (the server parses the CSV itself, nothing else runs); ``floor2``: 2 sessions;
- ``plankton``: the csv_to_postgres DAG through the engine (submit -> succeeded, planning
  included), on 2 workers;
- ``library``: exactly what the DAG's tasks run (plan, read and check, encode, COPY in one
  transaction) as 2 processes, an extractor feeding a loader through a pipe as msgpack: the
  DAG minus Redis and scheduling; ``extract`` and ``copy`` are its two stages alone.

Data (MovieLens-like ratings from ``examples/make_csvs.py``) is cached under
``benchmarks/.data/``. All tables live in the schema ``plankton_bench``, dropped and re-made
before each timed run. Each figure is the median and min-max of the repeats, and counts only
if the table then holds every row (``checked``). ``CPU s`` is the median CPU time the line
used in every process involved (this one and its children, the PostgreSQL server, the
Plankton stack): unlike wall time it hardly depends on what else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
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
from examples.csv_demo import ThrowawayPostgres  # noqa: E402
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
from examples.csvload.schema import table_name  # noqa: E402

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
    cpu: list[float] = field(default_factory=list)

    def add(self, seconds: float, ok: bool, cpu: float | None = None) -> None:
        self.seconds.append(seconds)
        self.checked = self.checked and ok
        if cpu is not None:
            self.cpu.append(cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        """``{"median", "min", "max", "unit", "checked"}`` in rows/s, as BENCHMARKS.md asks."""
        if not self.seconds:
            return {"skipped": self.note or "not run", "checked": False}
        rates = [self.rows / s for s in self.seconds]
        out = {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "unit": "rows/s",
            "checked": self.checked,
            "seconds": self.seconds,
        }
        if self.cpu:
            out["cpu_seconds"] = self.cpu
        return out


# ----------------------------------------------------------------------------- set-up


def ensure_data(files: int, rows: int, seed: int = 1, shape: str = "ratings") -> Path:
    """The cached directory of ``files`` files of ``shape`` of ``rows`` rows, made if missing."""
    directory = DATA_DIR / f"{shape}-{files}x{rows}-seed{seed}"
    if (directory / ".complete").exists():
        return directory
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="partial-", dir=DATA_DIR))
    print(f"writing {files} x {rows:,} rows to {directory} ...", flush=True)
    make_csvs.write_files(partial, files, rows, shape, seed)
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


def timed(
    dsn: str, run: Callable[[], bool], meter: CpuMeter | None = None
) -> tuple[float, bool, float | None]:
    """Reset the schema, then time ``run`` (which returns whether its output checked out).

    Returns wall seconds, the check, and the CPU seconds ``meter`` saw (None without one).
    """
    reset_schema(dsn)
    cpu = meter.total() if meter else None
    start = time.perf_counter()
    ok = run()
    wall = time.perf_counter() - start
    if meter is None or cpu is None:
        return wall, ok, None
    time.sleep(0.2)  # let processes that just ended be reaped into their parents' totals
    return wall, ok, meter.total() - cpu


# ----------------------------------------------------------------------------- the floor


def psql_copy(dsn: str, files: Sequence[Path], sessions: int, total: int) -> bool:
    """``\\copy`` every file into one plain table, from ``sessions`` psql processes.

    Ratings go into their types; other shapes (with NA, NaN, NULL markers, which \\copy
    cannot all take as NULL) into text columns: the floor of moving the same bytes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if files[0].name.startswith("ratings"):
            conn.execute(
                f"CREATE TABLE {FLOOR_TABLE} (user_id bigint, movie_id bigint, "
                "rating double precision, timestamp bigint)"
            )
        else:
            with open(files[0], encoding="utf-8") as handle:
                names = handle.readline().strip().split(",")
            conn.execute(
                f"CREATE TABLE {FLOOR_TABLE} (" + ", ".join(f'"{n}" text' for n in names) + ")"
            )
    procs = [subprocess.Popen(psql_args(dsn, files[i::sessions])) for i in range(sessions)]
    codes = [p.wait(RUN_TIMEOUT_S) for p in procs]
    return codes == [0] * sessions and table_count(dsn, FLOOR_TABLE) == total


def psql_args(dsn: str, files: Sequence[Path]) -> list[str]:
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    for path in files:
        args += ["-c", f"\\copy {FLOOR_TABLE} FROM '{path}' WITH (FORMAT csv, HEADER true)"]
    return args


# ----------------------------------------------------------------------------- CPU time


def _proc_table() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, CPU seconds of it and of its reaped children)} from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is ppid; utime, stime, cutime, cstime are fields 14-17 of stat(5)
        table[int(entry)] = (int(fields[1]), sum(map(int, fields[11:15])) / tick)
    return table


class CpuMeter:
    """CPU seconds used so far by this process, its children, and given process trees.

    A process counts with its reaped children (cutime), so a PostgreSQL backend that ended
    is still counted through the postmaster. Linux only; elsewhere ``total()`` is None.
    """

    def __init__(self) -> None:
        self.roots: list[Callable[[], int | None]] = []

    def watch(self, pid: Callable[[], int | None]) -> None:
        """Also count the process tree rooted at ``pid()`` (looked up at each reading)."""
        self.roots.append(pid)

    def total(self) -> float | None:
        if not os.path.isdir("/proc/self"):
            return None
        mine = os.times()
        total = mine.user + mine.system + mine.children_user + mine.children_system
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        seen = {os.getpid()}
        todo = list(children.get(os.getpid(), []))  # live children of ours not yet reaped
        todo += [pid for root in self.roots if (pid := root()) is not None]
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            total += table[pid][1]
            todo += children.get(pid, [])
        return total


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


def load_from(
    pipe: Connection, dsn: str, table: str, columns: list[list[str]], run_id: str
) -> None:
    """Process 2: what the LoadTable task does."""
    load_table(dsn, table, columns_from_message(columns), run_id, received(pipe), run_id=run_id)


def library_load(dsn: str, directory: Path, total: int) -> bool:
    """Plan, then extract and load in 2 processes; check the committed row count."""
    (spec,) = plan_tables(directory)
    columns, run_id = columns_to_message(spec.columns), f"bench-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("fork")
    receiving, sending = ctx.Pipe(duplex=False)
    procs = [
        ctx.Process(target=extract_into, args=(sending, [str(f) for f in spec.files], columns)),
        ctx.Process(target=load_from, args=(receiving, dsn, spec.name, columns, run_id)),
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(RUN_TIMEOUT_S)
    ok = [p.exitcode for p in procs] == [0, 0]
    return ok and loaded_rows(dsn, run_id) == total == table_count(dsn, spec.name)


def extract_only(spec: TableSpec, total: int) -> bool:
    """Stage 1 alone, in this process: read, check and encode every file."""
    rows = sum(b.rows for path in spec.files for b in read_batches(path, spec.columns))
    return rows == total


def copy_only(dsn: str, spec: TableSpec, batches: list[Batch], total: int) -> bool:
    """Stage 2 alone, in this process: COPY batches encoded beforehand (not timed)."""
    return load_table(dsn, spec.name, spec.columns, "bench-copy", iter(batches)) == total


# ----------------------------------------------------------------------------- plankton


class PlanktonStack:
    """A private ``plankton up --workers N`` (its own Redis, scheduler, workers), no API."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self.directory = Path(tempfile.mkdtemp(prefix="plankton-bench-up-"))
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 60) -> PlanktonStack:
        from plankton import keys
        from plankton.engine.connection import connect

        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        log = open(self.directory / "up.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plankton.cli",
                "up",
                "--import",
                "examples.csv_to_postgres",
                "--workers",
                str(self.workers),
                "--port",
                "0",
                "--dir",
                str(self.directory / "state"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        url_file = self.directory / "state" / "url"
        deadline = time.monotonic() + timeout
        while not (url_file.exists() and url_file.read_text().strip()):
            self._check_alive(deadline)
            time.sleep(0.05)
        self.url = url_file.read_text().strip()
        conn = connect(self.url)
        try:
            while conn.zcount(keys.WORKERS, time.time() * 1000 - 10_000, "+inf") < self.workers:
                self._check_alive(deadline)
                time.sleep(0.05)
        finally:
            conn.close()
        return self

    def _check_alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.monotonic() > deadline:
            log = (self.directory / "up.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"plankton up did not start its workers:\n{log}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # up stops its processes, then exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def run_plankton(url: str, directory: Path, dsn: str, total: int) -> bool:
    """Submit ``csv_to_postgres`` for ``directory``, wait, and check every row landed.

    The DAG function (which plans the tables) runs in this process at submit, as it does
    in ``plankton run``; its time counts.
    """
    import plankton as pk  # here, not at the top: the other lines must run without the engine

    client = pk.Client(url, imports=["examples.csv_to_postgres"])
    try:
        run_id = client.submit(
            "csv_to_postgres",
            params={"directory": str(directory), "dsn": f"env:{DSN_VAR}", "reload": True},
        )
        run = client.wait(run_id, timeout=RUN_TIMEOUT_S)
    finally:
        client.close()
    return run["status"] == "succeeded" and run_rows(dsn, run_id) == total == table_count(
        dsn, table_name(sorted(directory.glob("*.csv"))[0])
    )


def run_rows(dsn: str, run_id: str) -> int | None:
    """Rows the loads of ``run_id`` recorded in the load log, or None if none did."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT sum(rows) FROM plankton_loads WHERE run = %s", [run_id]
        ).fetchone()
    return None if found is None or found[0] is None else int(found[0])


# ----------------------------------------------------------------------------- running

#: The environment variable holding the DSN for the DAG's secret param (workers inherit it).
DSN_VAR = "CSV_BENCH_DSN"

LINES = {
    "floor": "psql \\copy, 1 session (floor)",
    "plankton": "plankton DAG, 2 workers",
    "floor2": "psql \\copy, 2 sessions",
    "library": "loader library, 2 processes",
    "extract": "  stage: extract only, 1 process",
    "copy": "  stage: COPY only, pre-encoded",
}


def measure(
    dsn: str,
    directory: Path,
    total: int,
    repeat: int,
    lines: Sequence[str],
    url: str | None,
    meter: CpuMeter,
) -> list[Figure]:
    """Every line of the table, each run ``repeat`` times, lines alternating."""
    files = sorted(directory.glob("*.csv"))
    (spec,) = plan_tables(directory)
    batches = (
        [b for path in spec.files for b in read_batches(path, spec.columns)]
        if "copy" in lines
        else []
    )
    runs: dict[str, Callable[[], bool]] = {
        "floor": lambda: psql_copy(dsn, files, 1, total),
        "plankton": lambda: run_plankton(url or "", directory, dsn, total),
        "floor2": lambda: psql_copy(dsn, files, 2, total),
        "library": lambda: library_load(dsn, directory, total),
        "extract": lambda: extract_only(spec, total),
        "copy": lambda: copy_only(dsn, spec, batches, total),
    }
    figures = {name: Figure(LINES[name], total) for name in lines}
    for i in range(repeat):
        for name in lines:
            figures[name].add(*timed(dsn, runs[name], meter))
        print(
            f"  repeat {i + 1}/{repeat}: "
            + ", ".join(f"{name} {figures[name].seconds[-1]:.2f}s" for name in lines),
            flush=True,
        )
    return list(figures.values())


def print_table(figures: Sequence[Figure], title: str) -> None:
    floor = next((f.median for f in figures if f.name == LINES["floor"] and f.seconds), None)
    print(title)
    vs_copy = "vs \\copy"
    print(
        f"{'method':<34} {'median s':>9} {'min-max s':>12} {'rows/s':>11} {vs_copy:>8} "
        f"{'CPU s':>6}  checked"
    )
    for fig in figures:
        if not fig.seconds:
            print(f"{fig.name:<34} {'-':>9} {'-':>12} {'-':>11} {'-':>8} {'-':>6}  ({fig.note})")
            continue
        span = f"{min(fig.seconds):.2f}-{max(fig.seconds):.2f}"
        ratio = f"{floor / fig.median:.0%}" if floor else "-"
        cpu = f"{statistics.median(fig.cpu):.2f}" if fig.cpu else "-"
        print(
            f"{fig.name:<34} {fig.median:>9.2f} {span:>12} {fig.rows / fig.median:>11,.0f} "
            f"{ratio:>8} {cpu:>6}  {'yes' if fig.checked else 'NO'}"
        )


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.csv_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--shape",
        choices=("ratings", "wide"),
        default="ratings",
        help="ratings (4 numeric columns) or wide (20 columns of every "
        "type, with missing values: NA, NaN, NULL, empty)",
    )
    parser.add_argument(
        "--lines", default=",".join(LINES), help="comma-separated subset of: " + ", ".join(LINES)
    )
    parser.add_argument("--dsn", help="PostgreSQL to use (default: start a private one)")
    parser.add_argument(
        "--url",
        help="Redis URL of a running Plankton with 2 workers "
        "(default: start a private plankton up)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    args.lines = [name.strip() for name in args.lines.split(",") if name.strip()]
    unknown = sorted(set(args.lines) - set(LINES))
    if unknown:
        parser.error(f"unknown line(s) {unknown}; known: {', '.join(LINES)}")
    if args.files < 1 or args.rows < 1 or args.repeat < 1:
        parser.error("--files, --rows and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    directory = ensure_data(args.files, args.rows, shape=args.shape)
    meter = CpuMeter()
    server: ThrowawayPostgres | None = None
    stack: PlanktonStack | None = None
    try:
        if args.dsn is None:
            server = ThrowawayPostgres().start()
            meter.watch(lambda: server.postmaster_pid if server else None)
        base = args.dsn or server.dsn
        dsn, total = bench_dsn(base), args.files * args.rows
        os.environ[DSN_VAR] = dsn  # the DAG's dsn is a secret reference: env:CSV_BENCH_DSN
        url = args.url
        if url is None and "plankton" in args.lines:
            stack = PlanktonStack(workers=2).start()
            meter.watch(lambda: stack.pid if stack else None)
            url = stack.url
        load = os.getloadavg()
        figures = measure(dsn, directory, total, args.repeat, args.lines, url, meter)
        print_table(
            figures,
            f"csv_load: {args.files} files x {args.rows:,} rows = {total:,} "
            f"rows, PostgreSQL {server_version(dsn)}"
            f"{' (private, fsync=off)' if server else ''}, "
            f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before / "
            f"{os.getloadavg()[0]:.1f} after, median of {args.repeat}",
        )
        if server is None or (args.url and "plankton" in args.lines):
            print("(CPU s counts only the processes this benchmark started)")
    finally:
        if stack is not None:
            stack.stop()
        if server is not None:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps({f.name.strip(): f.as_dict() for f in figures}, indent=2))
    return 0 if all(f.checked for f in figures if f.seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
