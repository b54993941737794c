"""Commands that start long-running processes: worker, scheduler, api, up."""

from __future__ import annotations

import os
import sys

import click

from plankton.cli.common import import_option, url_option
from plankton.cli.up import up


def _exec_module(module: str, args: list[str]) -> None:
    """Replace this process with ``python -m module args`` (same PID, signals go straight
    to it). The CLI never imports the process packages: they import plankton, not back."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def _common(url: str | None, imports: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    if url:
        args += ["--url", url]
    for m in imports:
        args += ["--import", m]
    return args


@click.command("worker")
@click.option("--queues", default="default", show_default=True, help="Comma-separated queues.")
@click.option("--name", help="Worker name (default host-pid).")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Tasks computing at once.")
@url_option
@import_option
def worker_cmd(
    queues: str,
    name: str | None,
    burst: bool,
    concurrency: int | None,
    url: str | None,
    imports: tuple[str, ...],
) -> None:
    """Run one worker process (start as many as you like, on any host)."""
    args = _common(url, imports) + ["--queues", queues]
    if name:
        args += ["--name", name]
    if burst:
        args.append("--burst")
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    _exec_module("workers", args)


@click.command("scheduler")
@click.option("--name", help="Scheduler name (default host-pid).")
@url_option
@import_option
def scheduler_cmd(name: str | None, url: str | None, imports: tuple[str, ...]) -> None:
    """Run the scheduler; several may run, exactly one leads at a time."""
    args = _common(url, imports)
    if name:
        args += ["--name", name]
    _exec_module("scheduler", args)


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@url_option
@import_option
def api_cmd(host: str, port: int, url: str | None, imports: tuple[str, ...]) -> None:
    """Serve the HTTP API."""
    from plankton.api.serve import serve

    raise SystemExit(serve(host, port, url, imports))


@click.command("up")
@click.option("--workers", "n_workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="API port (0: no API).",
)
@click.option("--run", "run_dag", metavar="DAG", help="Run this DAG, print it, stop, exit.")
@click.option("--param", "params", multiple=True, metavar="K=V")
@click.option(
    "--dir",
    "data_dir",
    default=".plankton",
    show_default=True,
    help="Where the private Redis keeps its data.",
)
@import_option
def up_cmd(
    n_workers: int,
    port: int,
    run_dag: str | None,
    params: tuple[str, ...],
    data_dir: str,
    imports: tuple[str, ...],
) -> None:
    """Start a private Redis, a scheduler, N workers and the API on this machine."""
    raise SystemExit(up(imports, n_workers, port, run_dag, params, data_dir))
