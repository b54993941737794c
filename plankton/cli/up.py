"""``plankton up``: the embedded default for one machine.

Starts a private ``redis-server`` (data under ``./.plankton/``, loopback only, a generated
password, AOF on), one scheduler, N workers and the API as child processes; stops all of them
on Ctrl-C or SIGTERM, so no process is left behind. With ``--run`` it runs one DAG with live
progress, prints the tree and result, stops everything, and exits 0 iff the run succeeded.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from plankton import settings as settings_mod
from plankton.authoring.registry import Registry
from plankton.cli.common import parse_params
from plankton.cli.follow import follow
from plankton.client import Client
from plankton.engine.connection import connect
from plankton.errors import PlanktonError
from plankton.operations import logsetup

log = logging.getLogger(__name__)


def _say(message: str, err: bool = False) -> None:
    """A status line: printed as it is, or logged as one JSON object with
    PLANKTON_LOG_FORMAT=json (the children inherit the variable and log JSON too)."""
    if logsetup.log_format() == "json":
        (log.warning if err else log.info)(message.strip())
    else:
        click.echo(message, err=err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Stack:
    """The child processes of ``plankton up``, stopped in reverse order."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise click.ClickException(
                "redis-server is not installed; install it with: "
                "sudo apt-get install -y redis-server"
            )
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port, password = free_port(), secrets.token_hex(16)
        self.redis = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(redis_dir),
                "--requirepass",
                password,
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"redis://:{password}@127.0.0.1:{port}/0"
        conn = connect(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                conn.ping()
                break
            except Exception:
                if self.redis.poll() is not None or time.monotonic() > deadline:
                    raise click.ClickException("the private redis-server did not start") from None
                time.sleep(0.05)
        (self.data_dir / "url").write_text(self.url + "\n")
        os.chmod(self.data_dir / "url", 0o600)
        return self.url

    def start(self, label: str, args: list[str], quiet: bool) -> None:
        env = dict(os.environ, PLANKTON_REDIS_URL=self.url)
        out = subprocess.DEVNULL if quiet else None
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=out, stderr=out, start_new_session=True
        )
        self.procs.append((label, proc))

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        # each process bounds its own stop (PLANKTON_STOP_GRACE + 2 s); a second more,
        # then whatever is left is killed
        deadline = time.monotonic() + _stop_grace() + 3
        for _, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.redis is not None and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGTERM)
            try:
                self.redis.wait(10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait()


def up(
    imports: tuple[str, ...],
    n_workers: int,
    port: int,
    run_dag: str | None,
    params: tuple[str, ...],
    data_dir: str,
) -> int:
    imports = imports or tuple(m for m in os.environ.get("PLANKTON_IMPORTS", "").split(",") if m)
    if not imports:
        raise click.UsageError("give the task code with --import MODULE (or PLANKTON_IMPORTS)")
    logsetup.configure("up")
    registry = Registry(imports)
    if run_dag is not None:
        registry.dag(run_dag)
    texts = parse_params(params)
    stack = Stack(Path(data_dir).resolve())
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C / kill -INT must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        url = stack.start_redis()
        quiet = run_dag is not None
        imp = [a for m in imports for a in ("--import", m)]
        stack.start("scheduler", ["-m", "scheduler", *imp, "--log-level", "WARNING"], quiet)
        for i in range(n_workers):
            stack.start(
                f"worker-{i}",
                ["-m", "workers", *imp, "--name", f"{socket.gethostname()}-up-{i}"],
                quiet,
            )
        with_api = bool(port) and _has_api()
        if with_api:
            stack.start("api", ["-m", "plankton.api", *imp, "--port", str(port)], quiet)
        if run_dag is None:
            _banner(url, data_dir, n_workers, port if with_api else 0)
            while all(p.poll() is None for _, p in stack.procs):
                time.sleep(0.5)
            for label, proc in stack.procs:
                if proc.poll() is not None:
                    _say(
                        f"plankton up: the {label} process exited with code "
                        f"{proc.returncode}; stopping everything",
                        err=True,
                    )
            return 1
        return _run_once(url, imports, run_dag, texts)
    except KeyboardInterrupt:
        _say("\nstopping...", err=True)
        return 130 if run_dag else 0
    finally:
        stack.stop()


def _stop_grace() -> float:
    try:
        return settings_mod.load().stop_grace
    except PlanktonError:
        return settings_mod.Settings.stop_grace


def _banner(url: str, data_dir: str, n_workers: int, api_port: int) -> None:
    """What ``plankton up`` prints once everything started: where Redis is, and the URL of
    the web console (``api_port`` 0: no API)."""
    _say(
        f"plankton up: Redis {url.split('@')[-1]} (URL in {data_dir}/url), "
        f"scheduler, {n_workers} workers" + (f", API on :{api_port}" if api_port else "")
    )
    if api_port:
        _say(
            f"  web console: http://127.0.0.1:{api_port}/  (JSON API beside it, "
            f"docs at http://127.0.0.1:{api_port}/docs)"
        )
    _say(f"  export PLANKTON_REDIS_URL=$(cat {data_dir}/url)")
    _say("Ctrl-C stops everything.")


def _has_api() -> bool:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from plankton import api  # noqa: F401
    except ImportError as exc:
        _say(
            f"plankton up: no API or web console: {exc} (reinstall with pip install -e .)", err=True
        )
        return False
    return True


def _run_once(url: str, imports: tuple[str, ...], dag: str, texts: dict[str, str]) -> int:
    client = Client(url, imports=imports)
    run_id = client.submit_parsed(dag, texts)
    click.echo(f"run {run_id} of {dag} submitted")
    final = follow(client, run_id, sys.stdout.isatty())
    return 0 if final and final.get("status") == "succeeded" else 1
