"""Commands that run the past again: ``rerun`` (one past run) and ``backfill`` (a range of
schedule intervals)."""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any

import click

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


@click.command("rerun")
@click.argument("run_id")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="TASK.PARAM=V",
    help="Override a param of every task named TASK (or the task with id TASK).",
)
@click.option(
    "--from-failure",
    is_flag=True,
    help="Resume: run only the tasks that failed, "
    "were cancelled or never finished (and their ancestors, and tasks whose subtree "
    "changed); reuse the values of the others.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show which tasks' hashes would change (with "
    "--from-failure: which tasks run and which are reused, and why); submit nothing.",
)
@click.option("--wait", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@url_option
@import_option
def rerun_cmd(
    run_id: str,
    params: tuple[str, ...],
    from_failure: bool,
    dry_run: bool,
    wait: bool,
    as_json: bool,
    url: str | None,
    imports: tuple[str, ...],
) -> None:
    """Re-create a past run from its metadata with today's code, then submit it."""
    client = Client(url, imports=imports)
    overrides = parse_params(params)
    result = client.rerun(run_id, overrides, dry_run=dry_run, from_failure=from_failure)
    if dry_run:
        assert isinstance(result, dict)
        if as_json:
            render.print_json(result)
        elif from_failure:
            _print_resume(result)
        else:
            _print_diff(result)
        return
    assert isinstance(result, str)
    if not wait:
        render.print_json({"run_id": result, "rerun_of": run_id}) if as_json else click.echo(result)
        return
    click.echo(result, err=as_json or not is_tty())
    final = follow(client, result, is_tty(), out=sys.stderr if as_json else None)
    if as_json:  # one JSON document on stdout; the progress went to stderr
        render.print_json(final)
    sys.exit(0 if final and final.get("status") == "succeeded" else EXIT_RUN_FAILED)


def _print_resume(result: dict[str, Any]) -> None:
    click.echo(
        f"resume of {result['run_id']}: {result['run']} task(s) run, {result['reuse']} reused"
    )
    for t in result["tasks"]:
        click.echo(f"  {t['action']:<5}  {t['name']}#{t['id']}: {t['reason']}")
    code = result.get("code_changed")
    if code:
        click.echo(
            f"code version changed: {code['recorded']} -> {code['today']} (reused "
            "values were made by the recorded version)"
        )
    click.echo("nothing submitted (--dry-run)")


def _print_diff(result: dict[str, Any]) -> None:
    changed = result["changed"]
    click.echo(
        f"rerun of {result['run_id']}: {len(changed)} task(s) would change, "
        f"{result['unchanged']} unchanged"
    )
    for c in changed:
        what = "params" if c["params_changed"] else "subtree"
        click.echo(
            f"  {c['name']}#{c['id']}: {what} changed  param_hash "
            f"{c['param_hash']['old'][:12]} -> {c['param_hash']['new'][:12]}  tree_hash "
            f"{c['tree_hash']['old'][:12]} -> {c['tree_hash']['new'][:12]}"
        )
    code = result.get("code_changed")
    if code:
        click.echo(
            f"code version changed: {code['recorded']} -> {code['today']} "
            f"(families: {', '.join(code['families'])})"
        )
    click.echo("nothing submitted (--dry-run)")


@click.command("backfill")
@click.argument("dag")
@click.option("--since", required=True, help="Range start (ISO).")
@click.option("--to", "to", required=True, help="Range end (ISO).")
@click.option("--param", "params", multiple=True, metavar="K=V")
@click.option("--force", is_flag=True, help="Also re-run intervals that already succeeded.")
@click.option("--wait", is_flag=True, help="Wait for every run; exit 0 iff all succeeded.")
@url_option
@import_option
def backfill_cmd(
    dag: str,
    since: str,
    to: str,
    params: tuple[str, ...],
    force: bool,
    wait: bool,
    url: str | None,
    imports: tuple[str, ...],
) -> None:
    """One run per schedule interval in the range (respecting max_active_runs)."""
    since_dt, to_dt = parse_iso(since, "--since"), parse_iso(to, "--to")
    assert since_dt is not None and to_dt is not None
    client = Client(url, imports=imports)
    d = client.find_dag(dag)
    typed = d.parse_params(parse_params(params))

    def report(rid: str, s: _dt.datetime, t: _dt.datetime) -> None:
        click.echo(f"{rid}  {s.isoformat()} -> {t.isoformat()}")

    ids = client.backfill(dag, since_dt, to_dt, force=force, params=typed, on_submit=report)
    click.echo(f"{len(ids)} run(s) submitted")
    if wait:
        statuses = [client.wait(rid)["status"] for rid in ids]
        failed = [rid for rid, st in zip(ids, statuses) if st != "succeeded"]
        for rid in failed:
            click.echo(f"{rid} did not succeed", err=True)
        sys.exit(EXIT_RUN_FAILED if failed else 0)
