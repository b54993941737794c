"""The results channel's two ends against a real Redis, with no worker process.

A run is submitted (its jobs stay on RQ: nothing dequeues them), its attempts are claimed with
the START script as a worker would, and the test drives ``channel.Writer`` and
``channel.Reader`` itself.
"""

from __future__ import annotations

import threading
import time

import pytest

import plankton as pk
from plankton import codec, keys
from plankton.client import Client
from plankton.engine.channel import Reader, Writer, batch_values
from plankton.engine.transitions import Claimed, Transitions
from plankton.errors import Fenced

MAX_BYTES = 1 << 20


class Leaf(pk.Task):
    tag = pk.Param(str)

    def run(self):  # never run here: the test plays the worker
        raise NotImplementedError


class Parent(pk.Task):
    def run(self):
        raise NotImplementedError


class Waits:
    """Counts the waits a channel end reports."""

    def __init__(self) -> None:
        self.begun = threading.Event()
        self.count = 0

    def begin_wait(self) -> None:
        self.count += 1
        self.begun.set()

    def end_wait(self) -> None:
        pass


@pytest.fixture
def claimed(redis_url):
    """A run Parent(Leaf a, Leaf b) with all three attempts claimed: {name: Claimed}."""
    client = Client(redis_url)
    run_id = client.submit(Parent().add_children(Leaf(tag="a"), Leaf(tag="b")))
    transitions = Transitions(client.conn)
    tasks = client.status(run_id)["tasks"]
    leaves = [(t["id"], 1) for t in tasks if t["parent"]]
    claims, released = transitions.start(
        run_id, "test", 60_000, leaves, ("default",), local_budget=1, alone=True
    )
    assert not released and len(claims) == 3
    by_tag = {}
    for c, t in ((c, next(t for t in tasks if t["id"] == c.task_id)) for c in claims):
        by_tag[t["params"].get("tag", "parent")] = c
    yield client, transitions, by_tag
    client.close()


def writer(transitions: Transitions, c: Claimed, cap: int = 10_000, waits=None) -> Writer:
    return Writer(
        transitions,
        c.run_id,
        c.parent,
        c.task_id,
        c.attempt,
        cap=cap,
        max_bytes=MAX_BYTES,
        where=c.name,
        waits=waits,
    )


def reader(client: Client, transitions: Transitions, c: Claimed, waits=None) -> Reader:
    return Reader(
        transitions,
        client._blocking_conn(),
        c.run_id,
        c.task_id,
        c.attempt,
        c.n_children,
        max_bytes=MAX_BYTES,
        where=c.name,
        waits=waits,
    )


def finish(w: Writer, result=None) -> None:
    w.finish(w.finish_args(codec.dumps(result), 0))


def test_values_from_two_writers_reach_the_reader_once_each_in_each_writers_order(claimed):
    client, transitions, c = claimed
    a, b = writer(transitions, c["a"]), writer(transitions, c["b"])
    for i in range(5000):
        a.emit(["a", i])
        if i < 300:
            b.emit({"b": i, "when": "x" * 100})
    finish(a)
    finish(b)
    r = reader(client, transitions, c["parent"])
    got = list(r)
    assert [v for v in got if isinstance(v, list)] == [["a", i] for i in range(5000)]
    assert [v["b"] for v in got if isinstance(v, dict)] == list(range(300))
    assert r.consumed == 5300 and a.emitted == 5000 and b.emitted == 300


def test_a_full_channel_makes_the_writer_wait_until_the_reader_reads(claimed):
    client, transitions, c = claimed
    cap = 8
    waits = Waits()
    a = writer(transitions, c["a"], cap=cap, waits=waits)
    done = threading.Event()

    def produce() -> None:
        for i in range(100):
            a.emit(i)
        finish(a)
        done.set()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    assert waits.begun.wait(10), "the writer never waited on the full channel"
    assert not done.is_set()
    # nothing was read yet: every value produced is unread
    unread = int(client.conn.hget(keys.task(c["a"].run_id, c["parent"].task_id), "produced"))
    assert unread <= cap + batch_values(cap)
    finish(writer(transitions, c["b"]))
    assert list(reader(client, transitions, c["parent"])) == list(range(100))
    thread.join(10)
    assert done.is_set()


def test_a_superseded_attempt_is_refused_at_both_ends(claimed):
    client, transitions, c = claimed
    a = writer(transitions, c["a"])
    a.emit(1)
    a.flush()
    client.cancel(c["a"].run_id)
    a.emit(2)
    with pytest.raises(Fenced):
        a.flush()
    assert a.fenced
    with pytest.raises(Fenced):
        list(reader(client, transitions, c["parent"]))


def test_a_child_failed_for_good_reaches_the_reader_as_upstream_failed_naming_it(claimed):
    client, transitions, c = claimed
    waits = Waits()
    r = reader(client, transitions, c["parent"], waits=waits)
    failing = c["b"]

    def fail_later() -> None:
        assert waits.begun.wait(10)
        transitions.fail(
            failing.run_id, failing.task_id, failing.attempt, "fatal", "ValueError: bad row 7", 0, 0
        )

    threading.Thread(target=fail_later, daemon=True).start()
    with pytest.raises(pk.UpstreamFailed) as info:
        list(r)
    assert info.value.child == failing.name
    assert info.value.error == "ValueError: bad row 7"


def _in_use(transitions: Transitions) -> int:
    """Connections of the writer's pool checked out (a batch sent ahead holds one)."""
    return len(transitions.conn.connection_pool._in_use_connections)


def _batch_out(transitions: Transitions, c: Claimed) -> tuple[Writer, int]:
    """A writer of leaf "a" that has filled one batch (sent ahead); and the batch size."""
    a = writer(transitions, c)
    for i in range(a.batch_values):
        a.emit(i)
    return a, a.batch_values


def test_a_full_batch_goes_out_ahead_and_its_reply_is_read_at_the_next_flush(claimed):
    client, transitions, c = claimed
    a, size = _batch_out(transitions, c["a"])
    # the batch is on its way; the producer goes on while Redis appends it
    assert a.inflight is not None and a.pending is None and _in_use(transitions) == 1
    for i in range(size, 2 * size + 10):
        a.emit(i)
    # the first reply was read when the second batch left; only the second is out
    assert a.inflight is not None and a.inflight[1][0] == 2 and _in_use(transitions) == 1
    finish(a, "done")
    assert a.inflight is None and _in_use(transitions) == 0
    finish(writer(transitions, c["b"]))
    assert list(reader(client, transitions, c["parent"])) == list(range(2 * size + 10))


def test_a_batch_sent_ahead_whose_connection_dies_is_sent_again_and_kept_once(claimed):
    client, transitions, c = claimed
    a, size = _batch_out(transitions, c["a"])
    sent = a.inflight[0]
    sent.conn.read_response()  # Redis appended the batch; its reply is lost with the socket
    sent.conn.disconnect()
    for i in range(size, 2 * size):
        a.emit(i)  # reads the lost reply: sends batch 1 again (DUP), then 2
    finish(a)
    finish(writer(transitions, c["b"]))
    assert list(reader(client, transitions, c["parent"])) == list(range(2 * size))
    assert _in_use(transitions) == 0


def test_the_flusher_reads_a_reply_left_out_and_an_ended_attempt_gives_its_connection_back(claimed):
    client, transitions, c = claimed
    a, _ = _batch_out(transitions, c["a"])
    assert a.inflight is not None
    due = a.due_at()
    assert due is not None
    a.flush_if_old(due - 0.001)  # too early: left
    assert a.inflight is not None
    # the task computes for long before its next emit: the flusher takes the reply
    deadline = due + 5
    while a.inflight is not None and time.monotonic() < deadline:
        a.flush_if_old(time.monotonic())
    assert a.inflight is None and a.pending is None and _in_use(transitions) == 0
    b, _ = _batch_out(transitions, c["b"])
    assert _in_use(transitions) == 1
    b.drop()  # the attempt failed: nothing more will be sent
    assert b.inflight is None and _in_use(transitions) == 0
