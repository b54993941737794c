"""Rendering runs for people: a rich task tree on a terminal, plain lines when piped."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

STATE_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "running": "yellow",
    "queued": "cyan",
    "ready": "cyan",
    "pending": "dim",
    "retrying": "magenta",
    "cancelled": "dim red",
    "skipped": "blue",
}


def _duration(task: dict[str, Any]) -> str:
    start, end = task.get("started_at"), task.get("ended_at")
    if not start:
        return ""
    t0 = _dt.datetime.fromisoformat(start)
    t1 = _dt.datetime.fromisoformat(end) if end else _dt.datetime.now(_dt.timezone.utc)
    return f"{(t1 - t0).total_seconds():.2f}s"


def _label(task: dict[str, Any]) -> Text:
    state = task["state"]
    p = task["processed"]
    params = {
        k: v
        for k, v in (task.get("params") or {}).items()
        if v is not None and k not in ("since", "to")
    }
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    text = Text()
    text.append(f"{task['name']}({shown}) ", style="bold")
    text.append(f"#{task['id']} ", style="dim")
    text.append(state, style=STATE_STYLE.get(state, ""))
    if task.get("reused_from"):
        text.append(f" (reused from {task['reused_from']})", style="green")
    extra = f"  emitted {p['emitted']} consumed {p['consumed']}"
    if task.get("attempts", 0) > 1:
        extra += f"  attempts {task['attempts']}"
    dur = _duration(task)
    if dur:
        extra += f"  {dur}"
    text.append(extra, style="dim")
    if task.get("error") and state in ("failed", "retrying"):
        text.append("\n" + task["error"].splitlines()[0][:200], style="red")
    return text


#: A parent with more children than this shows only the ones worth a look (failed, running,
#: retrying: up to this many) and one line per (name, state) for the rest, so that
#: ``plankton show`` of a 100,000-leaf run prints a screenful, fast.
GROUP_LIMIT = 20
_NOTABLE = ("failed", "retrying", "running")


def tree(run: dict[str, Any]) -> Tree:
    """The run's task tree as a rich Tree (wide sibling lists grouped, see GROUP_LIMIT)."""
    status = run["status"]
    head = Text()
    head.append(f"run {run['run_id']} ", style="bold")
    head.append(f"{run['dag']} ")
    head.append(status, style=STATE_STYLE.get(status, ""))
    root = Tree(head)
    by_id = {t["id"]: t for t in run["tasks"]}
    if not by_id or run.get("root") not in by_id:
        return root
    stack: list[tuple[Tree, Any]] = [(root, run["root"])]
    while stack:  # iterative: a 30,000-deep chain must not hit the recursion limit
        node, tid = stack.pop()
        if isinstance(tid, list):  # the grouped siblings, after the ones shown
            _add_groups(node, tid)
            continue
        task = by_id[tid]
        branch = node.add(_label(task))
        children = [by_id[str(c)] for c in task.get("children") or [] if str(c) in by_id]
        if len(children) <= GROUP_LIMIT:
            shown, rest = children, []
        else:
            notable = [c for c in children if c["state"] in _NOTABLE]
            shown = notable[:GROUP_LIMIT]
            picked = {id(c) for c in shown}
            rest = [c for c in children if id(c) not in picked]
        if rest:
            stack.append((branch, rest))
        for child in reversed(shown):
            stack.append((branch, child["id"]))
    return root


def _add_groups(branch: Tree, rest: list[dict[str, Any]]) -> None:
    """One line per (name, state) of siblings not shown one by one."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for task in rest:
        groups.setdefault((task["name"], task["state"]), []).append(task)
    for (name, state), members in groups.items():
        line = Text()
        line.append(f"{len(members):,} × {name} ", style="bold")
        line.append(state, style=STATE_STYLE.get(state, ""))
        ids = [m["id"] for m in members]
        span = f"#{ids[0]}" if len(ids) == 1 else f"#{ids[0]} … #{ids[-1]}"
        emitted = sum(m["processed"]["emitted"] for m in members)
        line.append(f"  {span}  emitted {emitted:,}", style="dim")
        branch.add(line)


def print_run(run: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(tree(run))
    if run.get("error"):
        console.print(Text(f"error: {run['error'].splitlines()[0]}", style="red"))
    if run["status"] == "succeeded":
        console.print(Text("result: ", style="bold") + Text(short(run.get("result"))))


def short(value: Any, limit: int = 2000) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def plain_changes(run: dict[str, Any], seen: dict[str, str]) -> list[str]:
    """Plain progress lines: one per task state change since the last call."""
    lines = []
    if seen.get("__run__") != run["status"]:
        seen["__run__"] = run["status"]
        lines.append(f"run {run['run_id']} {run['status']}")
    for task in run["tasks"]:
        key = task["id"]
        mark = f"{task['state']}:{task['attempts']}"
        if seen.get(key) != mark:
            seen[key] = mark
            p = task["processed"]
            reused = f" reused_from={task['reused_from']}" if task.get("reused_from") else ""
            lines.append(
                f"task {task['id']} {task['name']} {task['state']}{reused} "
                f"attempts={task['attempts']} emitted={p['emitted']} "
                f"consumed={p['consumed']}"
            )
    return lines


def print_json(value: Any) -> None:
    """One JSON document on stdout: indented when small; compact when large, as Python's
    json writes indented text with its pure-Python encoder (5x slower: 10,000 tasks)."""
    text = json.dumps(value, default=str)
    if len(text) < 200_000:
        text = json.dumps(value, default=str, indent=2)
    print(text)
