"""``plankton show``'s tree: wide sibling lists are grouped, the tasks worth a look shown."""

from __future__ import annotations

import io

from rich.console import Console

from plankton.views import render


def _task(tid: int, name: str, state: str, children: list[int] = ()) -> dict:
    return {
        "id": str(tid),
        "name": name,
        "state": state,
        "params": {},
        "attempts": 1,
        "processed": {"emitted": 1, "consumed": 0},
        "children": list(children),
        "started_at": None,
        "ended_at": None,
        "error": "boom" if state == "failed" else None,
    }


def _text(run: dict) -> str:
    out = io.StringIO()
    render.print_run(run, Console(file=out, width=200, no_color=True))
    return out.getvalue()


def test_a_wide_parent_shows_notable_children_and_groups_the_rest():
    n = 100_000
    states = {7: "failed", 99_000: "running"}
    leaves = [_task(i, "Leaf", states.get(i, "succeeded")) for i in range(n)]
    run = {
        "run_id": "r1",
        "dag": "flat",
        "status": "failed",
        "root": str(n),
        "error": "x",
        "tasks": [*leaves, _task(n, "Count", "failed", list(range(n)))],
    }
    text = _text(run)
    lines = text.splitlines()
    assert len(lines) < 20
    assert "Leaf() #7 failed" in text and "Leaf() #99000 running" in text
    assert "99,998 × Leaf succeeded" in text and "#0 … #99999" in text
    # The shown children come before the groups.
    assert text.index("#7 failed") < text.index("× Leaf succeeded")


def test_a_small_tree_shows_every_task():
    run = {
        "run_id": "r2",
        "dag": "fanin",
        "status": "succeeded",
        "root": "3",
        "result": 3,
        "tasks": [
            _task(0, "Leaf", "succeeded"),
            _task(1, "Leaf", "succeeded"),
            _task(2, "Mid", "succeeded", [0, 1]),
            _task(3, "Top", "succeeded", [2]),
        ],
    }
    text = _text(run)
    for i, name in enumerate(["Leaf", "Leaf", "Mid", "Top"]):
        assert f"{name}() #{i} succeeded" in text
    assert (
        text.index("Top()")
        < text.index("Mid()")
        < text.index("Leaf() #0")
        < text.index("Leaf() #1")
    )
