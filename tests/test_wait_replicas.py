"""PLANKTON_WAIT_REPLICAS (issue 18): a FINISH and a new run are on a replica when they return.

A real master and a real replica (``replicaof``). With the setting, what ``submit`` and
FINISH wrote is read back from the replica the moment they return; with the replica stopped
(SIGSTOP: connected but silent) they return after the WAIT timeout with a warning, the write
standing on the master; ``durable.settle`` after a write made on another connection too.
"""

from __future__ import annotations

import logging
import signal

import pytest
import redis

from plankton import codec, keys
from plankton.client import Client
from plankton.engine import durable
from plankton.engine.channel import Writer
from plankton.settings import load
from tests.dags.inert_tasks import Leaf, Parent
from tests.servers import RedisServer, wait_for


@pytest.fixture
def pair(tmp_path):
    master = RedisServer(tmp_path / "m", extra=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer(tmp_path / "r", extra=["--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    rconn = redis.Redis(port=replica.port)
    mconn = redis.Redis(port=master.port)
    mconn.set("plankton:test", "synced")  # online on the master, acknowledging writes
    wait_for(lambda: mconn.wait(1, 100) == 1, what="the replica to sync")
    mconn.close()
    client = Client(settings=load(url=master.url, wait_replicas=1, wait_ms=300))
    yield client, replica, rconn
    replica.proc.send_signal(signal.SIGCONT)
    client.close()
    rconn.close()
    replica.kill()
    master.kill()


def _finish_leaf(client: Client, run_id: str) -> None:
    leaf = next(t["id"] for t in client.status(run_id)["tasks"] if t["parent"])
    (c,), _ = client.transitions.start(run_id, "w1", 60_000, [(leaf, 1)])
    w = Writer(
        client.transitions,
        c.run_id,
        c.parent,
        c.task_id,
        c.attempt,
        cap=100,
        max_bytes=1 << 20,
        where=c.name,
        fence=c.fence,
    )
    w.emit(1)
    w.finish(w.finish_args(codec.dumps(None), 0))
    return leaf


def test_submit_and_finish_are_on_the_replica_when_they_return(pair, caplog):
    client, _, rconn = pair
    with caplog.at_level(logging.WARNING, logger="plankton.durable"):
        run_id = client.submit(Parent().add_children(Leaf()))
        assert rconn.exists(keys.run(run_id))  # no wait for the replica: it has it
        leaf = _finish_leaf(client, run_id)
        assert rconn.hget(keys.task(run_id, leaf), "state") == b"succeeded"
    assert not caplog.records


def test_a_silent_replica_delays_by_the_timeout_and_warns(pair, caplog):
    client, replica, _ = pair
    replica.proc.send_signal(signal.SIGSTOP)
    durable._warned_at = -1e9
    with caplog.at_level(logging.WARNING, logger="plankton.durable"):
        run_id = client.submit(Parent().add_children(Leaf()))
    assert "a new run reached 0 of 1 replicas" in caplog.text
    assert client.conn.exists(keys.run(run_id))  # the write stands on the master
    durable._warned_at = -1e9
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="plankton.durable"):
        leaf = _finish_leaf(client, run_id)
    assert "a FINISH reached 0 of 1 replicas" in caplog.text
    assert client.conn.hget(keys.task(run_id, leaf), "state") == b"succeeded"


def test_settle_covers_a_write_made_on_another_connection(pair, caplog):
    client, replica, _ = pair
    other = redis.Redis.from_url(client.settings.url)
    replica.proc.send_signal(signal.SIGSTOP)
    other.set("plankton:test", "x")
    durable._warned_at = -1e9
    with caplog.at_level(logging.WARNING, logger="plankton.durable"):
        durable.settle(redis.Redis.from_url(client.settings.url), 1, 200, "a test write")
    assert "a test write reached 0 of 1 replicas" in caplog.text
    other.close()
