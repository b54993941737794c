"""The command group and the commands that read and write runs (run, show, runs, logs, ...).

The commands of the other modules are added to the group in ``plankton/cli/__init__.py``,
so no command module imports another (no import cycle).
"""

from __future__ import annotations

import sys

import click

from plankton import states
from plankton.cli.common import (
    EXIT_RUN_FAILED,
    import_option,
    is_tty,
    parse_iso,
    parse_params,
    url_option,
)
from plankton.cli.follow import follow
from plankton.client import Client
from plankton.views import render
from plankton.views.catalog import describe_dags


@click.group(help="Plankton: a simple, fast ETL framework on Redis and RQ.")
@click.version_option("0.1.0", prog_name="plankton")
def cli() -> None:
    pass


def _client(url: str | None, imports: tuple[str, ...]) -> Client:
    return Client(url, imports=imports)


@cli.command("run")
@click.argument("dag")
@click.option("--param", "params", multiple=True, metavar="K=V", help="DAG parameter.")
@click.option("--since", help="Window start (ISO date or datetime).")
@click.option("--to", "to", help="Window end (ISO date or datetime).")
@click.option("--wait", is_flag=True, help="Follow the run; exit 0 iff it succeeded.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@url_option
@import_option
def run_cmd(
    dag: str,
    params: tuple[str, ...],
    since: str | None,
    to: str | None,
    wait: bool,
    as_json: bool,
    url: str | None,
    imports: tuple[str, ...],
) -> None:
    """Start a run of DAG and print its run id."""
    since_dt, to_dt = parse_iso(since, "--since"), parse_iso(to, "--to")
    if since_dt and to_dt and since_dt > to_dt:
        raise click.BadParameter("--since is after --to", param_hint="--since")
    texts = parse_params(params)
    client = _client(url, imports)
    run_id = client.submit_parsed(dag, texts, since_dt, to_dt)
    if not wait:
        if as_json:
            render.print_json({"run_id": run_id, "dag": dag, "status": "queued"})
        else:
            click.echo(run_id)
        return
    click.echo(run_id, err=as_json or not is_tty())
    final = follow(client, run_id, is_tty(), out=sys.stderr if as_json else None)
    if as_json:  # one JSON document on stdout; the progress went to stderr
        render.print_json(final)
    sys.exit(0 if final and final.get("status") == "succeeded" else EXIT_RUN_FAILED)


@cli.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@url_option
def show_cmd(run_id: str, as_json: bool, url: str | None) -> None:
    """The run's task tree: state, times, processed, result, error per task."""
    run = Client(url).status(run_id)
    if as_json:
        render.print_json(run)
    else:
        render.print_run(run)


@cli.command("runs")
@click.option("--dag")
@click.option("--status", type=click.Choice(states.RUN_STATES))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@url_option
def runs_cmd(
    dag: str | None, status: str | None, limit: int, as_json: bool, url: str | None
) -> None:
    """Recent runs, newest first."""
    found = Client(url).runs(dag=dag, limit=limit, status=status)
    if as_json:
        render.print_json(found)
        return
    for r in found:
        click.echo(
            f"{r['run_id']}  {r['dag']:<20} {r['status']:<10} "
            f"{r['submitted_at'] or '':<30} {r['ended_at'] or ''}"
        )


@cli.command("logs")
@click.argument("run_id")
@click.argument("task", required=False)
@url_option
def logs_cmd(run_id: str, task: str | None, url: str | None) -> None:
    """Lines the run's tasks wrote with task.log (optionally one task, by id or name)."""
    for line in Client(url).logs(run_id, task):
        click.echo(f"{line['at']} {line['name']}#{line['task']} {line['level']}: {line['line']}")


@cli.command("cancel")
@click.argument("run_id")
@url_option
def cancel_cmd(run_id: str, url: str | None) -> None:
    """Stop a run: queued tasks are dropped, running ones stopped."""
    status = Client(url).cancel(run_id)
    click.echo(f"{run_id} {status}")


@cli.command("dags")
@click.option("--json", "as_json", is_flag=True)
@url_option
@import_option
def dags_cmd(as_json: bool, url: str | None, imports: tuple[str, ...]) -> None:
    """The DAGs found in the imports, with schedule and next fire time."""
    client = _client(url, imports)
    found = describe_dags(client)
    if as_json:
        render.print_json(found)
        return
    if not found:
        click.echo("no DAGs found (use --import MODULE or PLANKTON_IMPORTS)")
    for d in found:
        params = ", ".join(f"{k}: {v['type']}" for k, v in d["params"].items())
        line = f"{d['name']}({params})"
        if d.get("schedule"):
            line += f"  schedule {d['schedule']} ({d['timezone']}) next {d.get('next_fire')}"
        if d.get("last_run"):
            lr = d["last_run"]
            line += f"  last run {lr['run_id']} {lr['status']}"
        click.echo(line)
