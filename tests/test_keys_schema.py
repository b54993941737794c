"""The key schema of ``plankton/keys.py`` against what the scripts actually write.

Runs a few DAGs on real processes (success, streaming, retries, failure for good, cancel),
then reads every hash of those runs: each field found must be listed in ``keys``' tables, and
each field listed must be found (except the few written only on paths these runs do not take,
named in ``NOT_EXERCISED`` with the reason).
"""

from __future__ import annotations

import pytest

from plankton import keys
from plankton.states import RunStatus, TaskState
from tests.dags import fault_tasks as ft
from tests.dags import tasks

#: Fields of the tables no run here writes, and why.
NOT_EXERCISED: dict[str, str] = {
    "overrides": "rerun only (tests/test_rerun.py)",
    "trigger": "cron and backfill runs only (tests/test_cron.py)",
    "fire_time": "cron and backfill runs only (tests/test_cron.py)",
    "alerted": "with webhooks configured only (tests/test_alerts.py)",
    "reused_from": "resumed runs only (tests/test_resume.py)",
    "restarts": "a child failing after its parent read its values "
    "(tests/reliability/test_channels.py)",
    "mtag": "runs created on a Redis Cluster only (tests/test_cluster_slots.py)",
}


def _hashes(conn, pattern: str) -> list[dict[str, str]]:
    out = []
    for key in conn.scan_iter(pattern, count=1000):
        if conn.type(key) == b"hash":
            out.append(
                {k.decode(): v.decode("utf-8", "replace") for k, v in conn.hgetall(key).items()}
            )
    return out


@pytest.fixture
def written(cluster, client):
    """{"run": run hashes, "task": task hashes} after the runs."""
    cluster.start(workers=2, env={"PLANKTON_RETRY_BASE": "0.05", "PLANKTON_RETRY_CAP": "0.1"})
    ids = [
        client.submit(tasks.Collect().add_children(ft.FailsTwice(key="schema"), tasks.Leaf(i=1))),
        client.submit("failing"),
        client.submit("stream3", params={"n": 300, "leaves": 2}),
    ]
    slow = client.submit(tasks.Collect().add_children(tasks.Slow(seconds=30.0)))
    for run_id in ids:
        client.wait(run_id, timeout=60)
    client.cancel(slow)
    client.wait(slow, timeout=60)
    conn = client.conn
    out: dict[str, list[dict[str, str]]] = {"run": [], "task": []}
    for run_id in [*ids, slow]:
        out["run"] += _hashes(conn, keys.run(run_id))
        out["task"] += _hashes(conn, keys.task(run_id, "*"))
    return out


def test_every_field_written_is_in_the_schema_and_every_field_in_it_is_written(written):
    for kind, table in (("run", keys.RUN_FIELDS), ("task", keys.TASK_FIELDS)):
        fields = {f for h in written[kind] for f in h}
        assert fields - set(table) == set(), f"{kind} hash fields missing from keys.py"
        unseen = set(table) - fields - set(NOT_EXERCISED)
        assert unseen == set(), f"keys.py lists {kind} fields nothing wrote"
    # and the states the scripts wrote are the Enums' values (the contract strings)
    assert {h["status"] for h in written["run"]} == {"succeeded", "failed", "cancelled"}
    assert {h["status"] for h in written["run"]} <= set(RunStatus)
    assert {h["state"] for h in written["task"]} <= set(TaskState)
