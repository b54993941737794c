"""Commands of later capabilities: rerun and backfill."""

from __future__ import annotations

import sys

import click

from ..client import Client
from . import render
from .common import EXIT_RUN_FAILED, import_option, is_tty, parse_params, url_option
from .follow import follow
from .main import cli


@cli.command("rerun")
@click.argument("run_id")
@click.option("--param", "params", multiple=True, metavar="TASK.PARAM=V",
              help="Override a param of every task named TASK (or the task with id TASK).")
@click.option("--dry-run", is_flag=True, help="Show which tasks' hashes would change; "
              "submit nothing.")
@click.option("--wait", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@url_option
@import_option
def rerun_cmd(run_id: str, params: tuple[str, ...], dry_run: bool, wait: bool, as_json: bool,
              url: str | None, imports: tuple[str, ...]) -> None:
    """Re-create a past run from its metadata with today's code, then submit it."""
    client = Client(url, imports=imports)
    overrides = parse_params(params)
    result = client.rerun(run_id, overrides, dry_run=dry_run)
    if dry_run:
        assert isinstance(result, dict)
        if as_json:
            render.print_json(result)
        else:
            _print_diff(result)
        return
    assert isinstance(result, str)
    if not wait:
        render.print_json({"run_id": result, "rerun_of": run_id}) if as_json else \
            click.echo(result)
        return
    click.echo(result, err=not is_tty())
    final = follow(client, result, is_tty())
    sys.exit(0 if final and final.get("status") == "succeeded" else EXIT_RUN_FAILED)


def _print_diff(result: dict) -> None:
    changed = result["changed"]
    click.echo(f"rerun of {result['run_id']}: {len(changed)} task(s) would change, "
               f"{result['unchanged']} unchanged")
    for c in changed:
        what = "params" if c["params_changed"] else "subtree"
        click.echo(f"  {c['name']}#{c['id']}: {what} changed  param_hash "
                   f"{c['param_hash']['old'][:12]} -> {c['param_hash']['new'][:12]}  tree_hash "
                   f"{c['tree_hash']['old'][:12]} -> {c['tree_hash']['new'][:12]}")
    code = result.get("code_changed")
    if code:
        click.echo(f"code version changed: {code['recorded']} -> {code['today']} "
                   f"(families: {', '.join(code['families'])})")
    click.echo("nothing submitted (--dry-run)")
