"""The key schema of ``plankton/keys.py`` against what the scripts actually write.

Runs a few DAGs on real processes (success, streaming, retries, failure for good, cancel),
then reads every hash of those runs: each field found must be listed in ``keys``' tables, and
each field listed must be found (except the few written only on paths these runs do not take,
named in ``NOT_EXERCISED`` with the reason).
"""

from __future__ import annotations

import pytest

from plankton import keys
from tests import fault_tasks as ft
from tests import tasks

#: Fields of the tables no run here writes, and why.
NOT_EXERCISED: dict[str, str] = {
    "overrides": "rerun only (tests/test_rerun.py)",
    "trigger": "cron and backfill runs only (tests/test_cron.py)",
    "fire_time": "cron and backfill runs only (tests/test_cron.py)",
    "alerted": "with webhooks configured only (tests/test_alerts.py)",
    "restarts": "a child failing after its parent read its values "
                "(tests/reliability/test_channels.py)",
}


def _hash_fields(conn, pattern: str) -> set[str]:
    found: set[str] = set()
    for key in conn.scan_iter(pattern, count=1000):
        if conn.type(key) == b"hash":
            found.update(f.decode() for f in conn.hkeys(key))
    return found


@pytest.fixture
def written(cluster, client):
    """{"run": fields of run hashes, "task": fields of task hashes} after the runs."""
    cluster.env_extra = {"PLANKTON_RETRY_BASE": "0.05", "PLANKTON_RETRY_CAP": "0.1"}
    cluster.scheduler()
    cluster.worker()
    cluster.worker()
    ids = [client.submit(tasks.Collect().add_children(ft.FailsTwice(key="schema"),
                                                      tasks.Leaf(i=1))),
           client.submit("failing"),
           client.submit("stream3", params={"n": 300, "leaves": 2})]
    slow = client.submit(tasks.Collect().add_children(tasks.Slow(seconds=30.0)))
    for run_id in ids:
        client.wait(run_id, timeout=60)
    client.cancel(slow)
    client.wait(slow, timeout=60)
    conn = client.conn
    out = {"run": set(), "task": set()}
    for run_id in [*ids, slow]:
        out["run"] |= _hash_fields(conn, keys.run(run_id))
        out["task"] |= _hash_fields(conn, keys.task_prefix(run_id) + "*")
    return out


def test_every_field_written_is_in_the_schema_and_every_field_in_it_is_written(written):
    for kind, table in (("run", keys.RUN_FIELDS), ("task", keys.TASK_FIELDS)):
        assert written[kind] - set(table) == set(), f"{kind} hash fields missing from keys.py"
        unseen = set(table) - written[kind] - set(NOT_EXERCISED)
        assert unseen == set(), f"keys.py lists {kind} fields nothing wrote"
