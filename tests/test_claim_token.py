"""Per-claim tokens (issue 18): after a Redis rollback, one attempt claimed twice writes once.

A rollback (a restore of an older snapshot, or a failover to a replica that missed the last
writes) can forget that an attempt was claimed: its job is delivered again and a second
worker claims the *same attempt number* while the first still runs it. Attempt numbers alone
cannot tell the two apart. Each START now writes a claim token, a worker names its attempt
``N.TOKEN`` in every write, and only the current claim's writes are accepted.

The rollback is real Redis state: every key of the run is DUMPed before the first claim and
RESTOREd after it (what a snapshot restore does to those keys); the scripts, the channel and
the worker's own ``channel.Writer``/``Reader`` are the real ones. No worker process: the test
plays both workers, so the interleaving is exact.
"""

from __future__ import annotations

import pytest

from plankton import codec, keys
from plankton.client import Client
from plankton.engine.channel import Reader, Writer
from plankton.engine.transitions import Claimed, Transitions
from plankton.engine.transport import Enqueuer
from plankton.errors import Fenced
from tests.dags.inert_tasks import Leaf, Parent

MAX_BYTES = 1 << 20


def _snapshot(conn, run_id: str) -> dict[bytes, bytes]:
    return {k: conn.dump(k) for k in conn.scan_iter(match=f"plankton:{{{run_id}}}:*")}


def _roll_back(conn, run_id: str, snap: dict[bytes, bytes]) -> None:
    """Every key of the run back as it was in ``snap`` (keys made since are gone)."""
    for k in conn.scan_iter(match=f"plankton:{{{run_id}}}:*"):
        if k not in snap:
            conn.delete(k)
    for k, blob in snap.items():
        conn.restore(k, 0, blob, replace=True)


def _writer(t: Transitions, c: Claimed) -> Writer:
    return Writer(
        t,
        c.run_id,
        c.parent,
        c.task_id,
        c.attempt,
        cap=10_000,
        max_bytes=MAX_BYTES,
        where=c.name,
        fence=c.fence,
    )


@pytest.fixture
def run(redis_url):
    client = Client(redis_url)
    run_id = client.submit(Parent().add_children(Leaf()))
    tasks = client.status(run_id)["tasks"]
    leaf = next(t["id"] for t in tasks if t["parent"])
    parent = next(t["id"] for t in tasks if not t["parent"])
    yield client, Transitions(client.conn), run_id, leaf, parent
    client.close()


def _channel_values(conn, run_id: str, parent: str) -> list:
    out = []
    for _, f in conn.xrange(keys.channel(run_id, parent)):
        if f[b"k"] == b"v":
            out += codec.loads(f[b"v"])
    return out


def test_the_first_holder_of_an_attempt_claimed_again_is_fenced(run):
    client, t, run_id, leaf, parent = run
    snap = _snapshot(client.conn, run_id)
    (first,), _ = t.start(run_id, "w1", 60_000, [(leaf, 1)])
    _roll_back(client.conn, run_id, snap)  # Redis forgot the claim: the job comes back
    (second,), _ = t.start(run_id, "w2", 60_000, [(leaf, 1)])
    assert first.attempt == second.attempt == 1 and first.token != second.token
    assert client.conn.hget(keys.task(run_id, leaf), "claim") == second.token.encode()

    # w1 had sent nothing before the rollback, so its batch 1 fits the sequence numbers:
    # before the token, EMIT took it and then dropped w2's batch 1 as a duplicate
    old, new = _writer(t, first), _writer(t, second)
    old.emit("from w1")
    with pytest.raises(Fenced):
        old.flush()
    new.emit("from w2")
    new.flush()
    # w1's other writes are refused too, and none of them disturbs w2's attempt
    assert t.fail(run_id, leaf, first.fence, "error", "w1 failed", 0, 3) == "FENCED"
    assert t.renew(run_id, 60_000, [(leaf, first.fence)]) == [leaf]
    with pytest.raises(Fenced):
        old.finish(old.finish_args(codec.dumps(None), 0))
    assert t.renew(run_id, 60_000, [(leaf, second.fence)]) == []
    new.finish(new.finish_args(codec.dumps(None), 0))

    assert _channel_values(client.conn, run_id, parent) == ["from w2"]
    task = client.conn.hgetall(keys.task(run_id, leaf))
    assert task[b"state"] == b"succeeded" and task[b"attempt"] == b"1"
    assert task[b"worker"] == b"w2" and task[b"fails"] == b"0"


def test_a_reader_claimed_twice_reads_for_the_newest_claim_only(run):
    client, t, run_id, leaf, parent = run
    (leaf_claim,), released = t.start(run_id, "w0", 60_000, [(leaf, 1)])
    assert released and released[0][0] == parent
    Enqueuer(client.conn).enqueue_many(run_id, released, batch=1)
    snap = _snapshot(client.conn, run_id)
    (first,), _ = t.start(run_id, "w1", 60_000, [(parent, 1)])
    _roll_back(client.conn, run_id, snap)
    (second,), _ = t.start(run_id, "w2", 60_000, [(parent, 1)])
    w = _writer(t, leaf_claim)
    w.emit(7)
    w.finish(w.finish_args(codec.dumps(None), 0))

    def reader(c: Claimed) -> Reader:
        return Reader(
            t,
            client._blocking_conn(),
            c.run_id,
            c.task_id,
            c.attempt,
            c.n_children,
            max_bytes=MAX_BYTES,
            where=c.name,
            fence=c.fence,
        )

    with pytest.raises(Fenced):
        list(reader(first))
    assert list(reader(second)) == [7]


def test_writes_naming_the_attempt_by_number_only_are_still_fenced_by_number(run):
    """Tools and tests may write with a bare attempt number: checked as before."""
    client, t, run_id, leaf, _ = run
    t.start(run_id, "w1", 60_000, [(leaf, 1)])
    assert t.renew(run_id, 60_000, [(leaf, 1)]) == []
    assert t.renew(run_id, 60_000, [(leaf, 2)]) == [leaf]
