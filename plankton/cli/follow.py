"""``--wait``: follow a run to its end with live progress.

Each refresh is a delta read (``Client.changes``): it costs what changed since the last one,
not the whole tree, so following a 100,000-task run stays cheap. The tasks read so far are
kept here and patched with each delta.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from plankton import states
from plankton.client import Client
from plankton.views import render

#: Runs with more tasks than this are shown as counts per state, not as a tree.
TREE_LIMIT = 200


class Tracker:
    """The run as last read: the run record and every task, patched by delta reads."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.cursor: int | None = None
        self.run: dict[str, Any] = {}
        self.tasks: dict[str, dict[str, Any]] = {}

    def refresh(self) -> list[dict[str, Any]]:
        """Read what changed; returns the tasks that did."""
        delta = self.client.changes(self.run_id, self.cursor)
        if delta["full"]:
            self.tasks = {}
        self.cursor, self.run = delta["cursor"], delta["run"]
        for task in delta["tasks"]:
            self.tasks[task["id"]] = task
        tasks: list[dict[str, Any]] = delta["tasks"]
        return tasks

    def snapshot(self) -> dict[str, Any]:
        """The run as ``show --json`` gives it (tasks in id order)."""
        return {**self.run, "tasks": sorted(self.tasks.values(), key=lambda t: int(t["id"]))}

    def summary(self) -> Text:
        counts = Counter(t["state"] for t in self.tasks.values())
        text = Text(f"run {self.run_id} {self.run.get('dag')} {self.run.get('status')}: ")
        text.append(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return text

    @property
    def ended(self) -> bool:
        return self.run.get("status") in states.RUN_ENDED


def follow(client: Client, run_id: str, tty: bool, out: Any = None) -> dict[str, Any]:
    """Show progress until the run ends; returns the final run (with its tasks).

    ``out``: where plain progress goes (stderr under ``--json``, whose stdout holds one JSON
    document only)."""
    track = Tracker(client, run_id)
    track.refresh()
    big = len(track.tasks) > TREE_LIMIT
    if tty and out is None:
        console = Console()
        with Live(console=console, refresh_per_second=8, transient=True) as live:
            while not track.ended:
                live.update(track.summary() if big else render.tree(track.snapshot()))
                client.await_end(run_id, 0.2)
                track.refresh()
        final = track.snapshot()
        if big:
            console.print(track.summary())
            render.print_run({**final, "tasks": []}, console)
        else:
            render.print_run(final, console)
        return final
    return _follow_plain(client, track, big, out)


def _follow_plain(client: Client, track: Tracker, big: bool, out: Any = None) -> dict[str, Any]:
    """Plain lines (not a terminal): one per task change, or counts every 2 s for big runs."""
    import time

    out = out or sys.stdout
    seen: dict[str, str] = {}
    last = 0.0
    changed = list(track.tasks.values())
    while True:
        if big:
            if track.ended or time.monotonic() - last > 2:
                print(track.summary().plain, file=out, flush=True)
                last = time.monotonic()
        else:
            for line in render.plain_changes({**track.run, "tasks": changed}, seen):
                print(line, file=out, flush=True)
        if track.ended:
            final = track.snapshot()
            if big:
                print(
                    f"result: {render.short(final.get('result'))}"
                    if final.get("status") == "succeeded"
                    else f"error: {final.get('error')}",
                    file=out,
                    flush=True,
                )
            else:
                render.print_run(final, Console(file=out, no_color=True, width=200))
            return final
        client.await_end(track.run_id, 0.2)
        changed = track.refresh()
