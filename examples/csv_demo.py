"""The README's CSV demo in one command: CSV files into a throwaway PostgreSQL with Plankton.

    python examples/csv_demo.py [--files 3] [--rows 100000] [--workers 2]

What it does, all under one temporary directory that is removed at the end:

1. starts a private PostgreSQL (``initdb`` + ``pg_ctl`` from Debian's ``postgresql``
   package, on a free loopback port; as the ``postgres`` user when run as root);
2. writes ``--files`` MovieLens-like ratings files of ``--rows`` rows, plus one ``users`` and
   one ``events`` file of a tenth as many (``examples/make_csvs.py``);
3. runs ``plankton up --import examples.csv_to_postgres --run csv_to_postgres --param
   directory=... --param dsn=...`` as a child process, so you see its live progress and the
   final task tree;
4. prints the rows of each table as PostgreSQL counts them, stops PostgreSQL, and exits
   with the run's status (0 iff it succeeded).

Needs ``redis-server`` and ``postgresql`` (``apt-get install -y redis-server postgresql``)
and the Plankton package with psycopg (``pip install -e '.[postgres]'``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import make_csvs  # noqa: E402

INSTALL_HINT = "apt-get install -y postgresql"


class DemoError(Exception):
    """Something the demo needs is missing or failed; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """A PostgreSQL cluster made by ``initdb`` in a temporary directory, on a free port.

    Loopback only, trust authentication for the single user ``plankton``, ``fsync=off``
    (nothing here is worth keeping). ``stop()`` shuts it down and removes the directory.
    """

    def __init__(self, directory: Path | None = None, user: str = "plankton") -> None:
        self.directory = directory
        self.user = user
        self.port = 0
        self.bindir = self.find_bindir()
        self._made_directory = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def find_bindir() -> Path:
        """Where ``initdb`` and ``pg_ctl`` are: Debian's newest version, else the PATH."""
        base = Path("/usr/lib/postgresql")
        if base.is_dir():
            versions = sorted(
                (p for p in base.iterdir() if (p / "bin" / "initdb").exists()),
                key=lambda p: int(p.name) if p.name.isdigit() else 0,
            )
            if versions:
                return versions[-1] / "bin"
        found = shutil.which("initdb")
        if found and shutil.which("pg_ctl"):
            return Path(found).parent
        raise DemoError(
            f"PostgreSQL's initdb and pg_ctl were not found; install them with:\n    {INSTALL_HINT}"
        )

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run its tools as the 'postgres' user.
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise DemoError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")

    def start(self) -> ThrowawayPostgres:
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise DemoError(
                    "running as root, but there is no 'postgres' user to run "
                    f"PostgreSQL as (it comes with: {INSTALL_HINT})"
                ) from None
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="plankton-pg-"))
            self._made_directory = True
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.port = free_port()
        data = self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8")
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        return self

    @property
    def postmaster_pid(self) -> int | None:
        """PID of the server process, or None when it is not running."""
        try:
            assert self.directory is not None
            return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError, AssertionError):
            return None

    def stop(self) -> None:
        if self.directory is None:
            return
        if (self.directory / "data" / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
            except DemoError:
                self._run_quietly(
                    "pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "stop"
                )
        if self._made_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _run_quietly(self, *args: str) -> None:
        try:
            self._run(*args)
        except DemoError:
            pass


def write_data(directory: Path, files: int, rows: int) -> list[Path]:
    """The demo's CSV files: ``files`` ratings files, one users and one events file."""
    small = max(1, rows // 10)
    paths = make_csvs.write_files(directory, files, rows, "ratings")
    paths += make_csvs.write_files(directory, 1, small, "users")
    paths += make_csvs.write_files(directory, 1, small, "events")
    return paths


def plankton_up(directory: Path, dsn: str, workers: int, state_dir: Path) -> int:
    """Run the DAG with ``plankton up --run`` in a child process; return its exit code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("PLANKTON_REDIS_URL", None)  # up starts its own Redis
    env["CSV_DEMO_DSN"] = dsn  # the dsn param is a secret reference, read by the workers
    args = [
        sys.executable,
        "-m",
        "plankton.cli",
        "up",
        "--import",
        "examples.csv_to_postgres",
        "--workers",
        str(workers),
        "--port",
        "0",
        "--dir",
        str(state_dir),
        "--run",
        "csv_to_postgres",
        "--param",
        f"directory={directory}",
        "--param",
        "dsn=env:CSV_DEMO_DSN",
        "--param",
        "reload=true",
    ]
    print(
        f"$ CSV_DEMO_DSN={dsn} plankton up --import examples.csv_to_postgres --run "
        f"csv_to_postgres --param directory={directory} --param dsn=env:CSV_DEMO_DSN "
        "--param reload=true",
        flush=True,
    )
    proc = subprocess.Popen(args, cwd=ROOT, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the child too; give it time to stop its processes.
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            return proc.wait()


def print_tables(dsn: str) -> None:
    """Rows per table as PostgreSQL counts them, beside what the load log recorded."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('plankton_loads')").fetchone()[0]
        if exists is None:
            print("no table was loaded")
            return
        loads = conn.execute(
            "SELECT table_name, rows, run, load_id FROM plankton_loads ORDER BY table_name"
        ).fetchall()
        print(f"\n{'table':<12} {'rows':>10}  loaded by run")
        for table, rows, run, load_id in loads:
            counted = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE _plankton_load = %s").format(
                    sql.Identifier(table)
                ),
                [load_id],
            ).fetchone()[0]
            note = "" if counted == rows else f"  (log says {rows:,})"
            print(f"{table:<12} {counted:>10,}  {run}{note}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3, help="ratings files (default 3)")
    parser.add_argument(
        "--rows", type=int, default=100_000, help="rows per ratings file (default 100000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Plankton workers (default 2)")
    args = parser.parse_args(argv)
    if args.files < 1 or args.rows < 1 or args.workers < 1:
        parser.error("--files, --rows and --workers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="plankton-csv-demo-"))
    server: ThrowawayPostgres | None = None
    try:
        server = ThrowawayPostgres()
        started = time.monotonic()
        server.start()
        print(
            f"PostgreSQL on 127.0.0.1:{server.port} "
            f"({time.monotonic() - started:.1f}s, data in {server.directory})",
            flush=True,
        )
        data = work / "csv"
        paths = write_data(data, args.files, args.rows)
        print(f"wrote {len(paths)} CSV files to {data}", flush=True)
        code = plankton_up(data, server.dsn, args.workers, work / "plankton")
        print_tables(server.dsn)
        print("\nrun " + ("succeeded" if code == 0 else f"failed (exit {code})"))
        return code
    except DemoError as exc:
        print(f"csv_demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
