"""Every ``--json`` flag prints exactly one JSON document on stdout (progress on stderr)."""

from __future__ import annotations

import json
import subprocess


def _one(proc: subprocess.CompletedProcess, code: int = 0):
    """The single JSON document of stdout (json.loads refuses a second one or stray lines)."""
    assert proc.returncode == code, proc.stderr
    return json.loads(proc.stdout)


def test_each_json_flag_prints_one_document(stack):
    imp = ("--import", "tests.dags.tasks")
    started = _one(stack.cli("run", "fanin", "--param", "n=3", "--json", *imp))
    assert started["status"] == "queued"
    waited = stack.cli("run", "fanin", "--param", "n=3", "--wait", "--json", *imp)
    run = _one(waited)
    assert run["status"] == "succeeded" and run["result"] == 3 and len(run["tasks"]) == 4
    assert f"run {run['run_id']} succeeded" in waited.stderr  # the progress went to stderr
    shown = _one(stack.cli("show", run["run_id"], "--json"))
    assert shown["run_id"] == run["run_id"] and len(shown["tasks"]) == 4
    listed = _one(stack.cli("runs", "--json"))
    assert {r["run_id"] for r in listed} >= {run["run_id"], started["run_id"]}
    assert any(d["name"] == "fanin" for d in _one(stack.cli("dags", "--json", *imp)))
    plan = _one(
        stack.cli("rerun", run["run_id"], "--param", "Leaf.i=9", "--dry-run", "--json", *imp)
    )
    assert plan["changed"]
    again = _one(stack.cli("rerun", run["run_id"], "--json", *imp))
    assert again["rerun_of"] == run["run_id"]
    rerun = stack.cli("rerun", run["run_id"], "--wait", "--json", *imp)
    final = _one(rerun)
    assert final["status"] == "succeeded" and final["rerun_of"] == run["run_id"]
    assert "succeeded" in rerun.stderr
