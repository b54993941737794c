"""Run records expire PLANKTON_KEEP_DAYS after the run ends; indexes drop old runs."""

from __future__ import annotations

import time

import plankton as pk
from plankton import keys
from tests.servers import wait_for


def test_ended_run_keys_get_the_retention_ttl_and_channels_go(cluster, redis_url, r):
    cluster.start(env={"PLANKTON_KEEP_DAYS": "0.001"})  # 86.4 s
    client = pk.Client(redis_url, imports=["tests.dags.tasks"])
    run_id = client.submit("stream3", params={"n": 10, "leaves": 2})
    assert client.wait(run_id, timeout=60)["status"] == "succeeded"
    wait_for(lambda: not r.sismember(keys.ACTIVE, run_id), 10, what="run settled")
    run_keys = [k.decode() for k in r.scan_iter(match=f"{keys.PREFIX}:{{{run_id}}}:*")]
    assert keys.run(run_id) in run_keys and keys.task(run_id, "0") in run_keys
    for key in run_keys:
        ttl = r.ttl(key)
        assert 0 < ttl <= 87, (key, ttl)
    assert not any(":ch:" in k or ":leases" in k or ":ready" in k for k in run_keys)


def test_index_entries_older_than_retention_are_dropped(cluster, redis_url, r):
    cluster.env_extra = {"PLANKTON_KEEP_DAYS": "1"}
    client = pk.Client(redis_url, imports=["tests.dags.tasks"])
    old = client.submit("fanin", params={"n": 1})
    r.zadd(keys.RUNS, {old: (time.time() - 2 * 86400) * 1000})
    fresh = client.submit("fanin", params={"n": 1})
    cluster.start()
    wait_for(lambda: r.zscore(keys.RUNS, old) is None, 10, what="old index entry dropped")
    assert r.zscore(keys.RUNS, fresh) is not None
