"""``--wait``: follow a run to its end with live progress."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .. import keys, runs
from ..client import Client
from . import render

#: Runs with more tasks than this are shown as counts per state, not as a tree.
TREE_LIMIT = 200


def _summary(client: Client, run_id: str) -> Text:
    run = runs.read_run(client.conn, run_id) or {}
    n = run.get("n_tasks", 0)
    pipe = client.conn.pipeline(transaction=False)
    for i in range(n):
        pipe.hget(keys.task(run_id, str(i)), "state")
    counts = Counter(s.decode() if s else "?" for s in pipe.execute())
    text = Text(f"run {run_id} {run.get('dag')} {run.get('status')}: ")
    text.append(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return text


def follow(client: Client, run_id: str, tty: bool) -> dict[str, Any]:
    """Show progress until the run ends; returns the final run."""
    n_tasks = (runs.read_run(client.conn, run_id) or {}).get("n_tasks", 0)
    big = n_tasks > TREE_LIMIT
    if tty:
        console = Console()
        with Live(console=console, refresh_per_second=8, transient=True) as live:
            def update(_: Any = None) -> None:
                live.update(_summary(client, run_id) if big else
                            render.tree(client.status(run_id)))

            while client.run_status(run_id) not in runs.ENDED:
                update()
                client.await_end(run_id, 0.2)
        final = client.status(run_id) if not big else runs.read_run(client.conn, run_id)
        if big:
            console.print(_summary(client, run_id))
            render.print_run({**final, "tasks": []}, console) if final else None
        else:
            render.print_run(final, console)
        return final
    seen: dict[str, str] = {}
    last = 0.0
    while True:
        ended = client.run_status(run_id) in runs.ENDED
        if big:
            if ended or time.monotonic() - last > 2:
                print(_summary(client, run_id).plain, flush=True)
                last = time.monotonic()
        else:
            for line in render.plain_changes(client.status(run_id), seen):
                print(line, flush=True)
        if ended:
            if big:
                final = runs.read_run(client.conn, run_id) or {}
                print(f"result: {render._short(final.get('result'))}" if final.get("status")
                      == "succeeded" else f"error: {final.get('error')}", flush=True)
            else:
                final = client.status(run_id)
                render.print_run(final, Console(no_color=True, width=200))
            return final
        client.await_end(run_id, 0.2)

