"""What Plankton claims slot-local is slot-local, on a real Redis Cluster (docs/scaling.md).

A 3-master Redis Cluster is started on free loopback ports (``redis-server --cluster-enabled
yes`` x3, slots assigned by hand with CLUSTER ADDSLOTSRANGE and the nodes joined with CLUSTER
MEET). Runs whose keys land on different masters are created through a
``redis.cluster.RedisCluster`` with the real creation code (``writing.write_run``) and driven
through every per-run script with the keys a real run uses (``Transitions``): claim, renew,
emit, ack + read, finish, fail and hand back, reap, cancel, settle; ENQUEUE and FORGET with
RQ keys tagged to the run's slot (the design of docs/scaling.md; RQ's own key names are
what is cross-slot today).

Two witnesses for "each touches only its slot". Keyspace notifications of every node name
every key written: each must be in the run's slot. And the server itself: Redis refuses a
script declaring keys of two slots (CROSSSLOT), but a script without flags may touch
undeclared keys of other slots of the same node (Redis 7 keeps that legacy behaviour), so
the sequence runs a second time with the very same script bodies given Redis 7's ``#!lua``
shebang (no ``allow-cross-slot-keys`` flag): Redis then refuses any key, read or written,
declared or not, outside the run's slot. A negative control checks that it really does.

The scripts that are global (leader, fenced scheduler writes, webhooks outbox, ENQUEUE and
FORGET with RQ's key names) are listed below, called with the keys their callers use, and
must answer CROSSSLOT (or touch one fixed global key); docs/scaling.md must list the same.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from plankton import codec, keys
from plankton.authoring.task import place
from plankton.engine import counters, scripts, slots, transport
from plankton.engine.transitions import Transitions
from plankton.operations import metrics
from plankton.runs import planning, writing
from plankton.views import reading
from tests.dags import tasks
from tests.servers import RedisClusterNodes

DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"

#: The per-run transition scripts: every key they touch carries the run's hash tag (or is
#: the run slot's copy of a metric key). Each is called below.
PER_RUN = {"START", "EMIT", "FINISH", "ACK", "FAIL", "RENEW", "REAP", "CANCEL", "SETTLE"}

#: Scripts that touch keys no run owns, with the KEYS their callers pass today (``R`` stands
#: for a run id). ENQUEUE and FORGET are per-run scripts whose RQ keys are global.
GLOBAL: dict[str, list[str]] = {
    "ENQUEUE": [
        keys.run("R"),
        transport.rq_job("R-0-a1-0000"),
        "rq:queue:default",
        transport.RQ_QUEUES,
    ],
    "FORGET": [
        keys.run("R"),
        transport.rq_job("R-0-a1-0000"),
        transport.rq_intermediate("rq:queue:default"),
        "rq:queue:default",
    ],
    "LEADER_ACQUIRE_OR_RENEW": [keys.LEADER, keys.LEADER_EPOCH],
    "LEADER_RELEASE": [keys.LEADER],
    "CREATE_RUN_FENCED": [keys.LEADER_EPOCH, keys.run("R")],
    "CRON_ADVANCE": [keys.LEADER_EPOCH, keys.cron("nightly")],
    "OUTBOX_ENQUEUE": [keys.LEADER_EPOCH, keys.run("R"), keys.alerts("R"), keys.OUTBOX],
    "OUTBOX_CLAIM": [keys.LEADER_EPOCH, keys.OUTBOX],
    "OUTBOX_RECORD": [keys.OUTBOX, keys.alerts("R")],
}

#: Lua fragments prepended to scripts, not scripts of their own.
FRAGMENTS = {"FENCE_CHECK", "FENCED_PRELUDE"}

#: Global keys a run's creation writes besides its own (the indexes; docs/scaling.md).
CREATION_GLOBALS = {
    keys.RUNS,
    keys.dag_runs("slots"),
    keys.ACTIVE,
    keys.SUBMITTED,
    keys.METRIC_TAGS,
}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    made = RedisClusterNodes(tmp_path_factory.mktemp("rcluster"))
    try:
        yield made.start()
    finally:
        made.stop()


@pytest.fixture
def rc(nodes):
    conn = nodes.client()
    conn.flushall()
    yield conn
    conn.close()


class Writes:
    """Every key written on every node (keyspace notifications), read up to a marker."""

    def __init__(self, nodes: RedisClusterNodes) -> None:
        self.conns = [redis.Redis(port=s.port) for s in nodes.servers]
        self.subs = []
        self.markers = []
        for c in self.conns:
            c.config_set("notify-keyspace-events", "EA")
            me = c.execute_command("CLUSTER", "MYID").decode()
            slot = next(
                int(line.split()[8].split("-")[0])
                for line in c.execute_command("CLUSTER", "NODES").decode().splitlines()
                if line.startswith(me)
            )
            self.markers.append(f"marker:{{{slots.tag_of_slot(slot)}}}")
            sub = c.pubsub(ignore_subscribe_messages=True)
            sub.psubscribe("__keyevent@0__:*")
            self.subs.append(sub)

    def take(self) -> set[str]:
        """Keys written since the last call (the markers left out)."""
        seen: set[str] = set()
        for c, sub, marker in zip(self.conns, self.subs, self.markers):
            c.set(marker, "1")
            deadline = time.monotonic() + 10
            while True:
                msg = sub.get_message(timeout=1.0)
                if msg and msg["type"] == "pmessage":
                    key = codec.text(msg["data"])
                    if key == marker:
                        break
                    seen.add(key)
                assert time.monotonic() < deadline, "no keyspace notification of the marker"
        return seen

    def close(self) -> None:
        for sub in self.subs:
            sub.close()
        for c in self.conns:
            c.config_set("notify-keyspace-events", "")
            c.close()


def _runs_on_every_master(rc: RedisCluster, n: int = 3) -> list[str]:
    """Run ids whose keys land on ``n`` different masters."""
    by_node: dict[str, str] = {}
    while len(by_node) < n:
        rid = planning.new_run_id()
        node = rc.get_node_from_key(keys.run(rid)).name
        by_node.setdefault(node, rid)
    return list(by_node.values())


def _tree():
    """root Collect <- [mid Collect <- [Leaf 1, Leaf 2], Leaf 3]; ids in post-order:
    0, 1 leaves, 2 mid, 3 leaf, 4 root."""
    mid = tasks.Collect().add_children(tasks.Leaf(i=1), tasks.Leaf(i=2))
    return tasks.Collect().add_children(mid, tasks.Leaf(i=3))


class RunDriver:
    """One run driven by hand through its scripts, as a worker and scheduler would."""

    def __init__(self, rc: RedisCluster, rid: str) -> None:
        self.rc, self.rid = rc, rid
        self.tr = Transitions(rc)
        self.tag = slots.run_tag(rid)
        self._enqueue = rc.register_script(scripts.ENQUEUE)
        self._forget = rc.register_script(scripts.FORGET)
        self.jobs = 0

    def rq_keys(self) -> tuple[str, str, str]:
        """RQ's queue list, its intermediate list and the queues set, tagged with the run
        slot's tag as the design of docs/scaling.md does (job hashes too, below)."""
        q = f"rq:queue:{{{self.tag}}}:default"
        return q, transport.rq_intermediate(q), f"rq:queues:{{{self.tag}}}"

    def enqueue(self, pairs: list[tuple[str, int]]) -> str:
        q, inter, queues = self.rq_keys()
        self.jobs += 1
        job = f"rq:job:{{{self.tag}}}:{self.rid}-{self.jobs}"
        args: list = [job, q, 2, "status", "queued", "origin", "default"]
        for t, a in pairs:
            args += [t, a]
        status, _ = self._enqueue(keys=[keys.run(self.rid), job, q, queues], args=args)
        assert status == b"OK"
        assert self.rc.lmove(q, inter, "LEFT", "RIGHT") == job.encode()  # a worker's dequeue
        return job

    def forget(self, job: str, pairs: list[tuple[str, int]]) -> int:
        q, inter, _ = self.rq_keys()
        args: list = [job]
        for t, a in pairs:
            args += [t, a]
        return int(self._forget(keys=[keys.run(self.rid), job, inter, q], args=args))

    def claim(self, pairs: list[tuple[str, int]]) -> list:
        job = self.enqueue(pairs)
        claimed, released = self.tr.start(
            self.rid, "w1", 30_000, pairs, queues=("default",), host="h1"
        )
        assert [c.task_id for c in claimed] == [t for t, _ in pairs]
        assert self.forget(job, pairs) == 0
        return released

    def emit(self, parent: str, task: str, attempt: int, seq: int, value: str) -> None:
        blob = codec.pack_batch([value], 0)
        assert self.tr.emit(self.rid, parent, task, attempt, seq, 1, blob, 1000) == "OK"

    def finish(self, calls: list[tuple]) -> None:
        assert self.tr.finish_many(calls) == ["OK"] * len(calls)


def _run_mid(d: RunDriver) -> None:
    """The mid task reads its channel (ACK + XREAD in one pipeline) and finishes."""
    rid, tr = d.rid, d.tr
    state = d.rc.hget(keys.task(rid, "2"), "state")
    assert state == b"ready"
    assert d.claim([("2", 1)]) == [("4", 1, "default")]
    status, children, entries = tr.ack_and_read(d.rc, rid, "2", 1, 0, 0, True, "0-0", 100, 100)
    assert status == "OK" and children == {"1": 2}
    assert len(entries) == 4  # a's batch, a's end, b's batch, b's end
    took = codec.dumps(["0", 1, "1", 2])
    d.finish(
        [(rid, "4", "2", 1, 1, 1, codec.pack_batch(["ab"], 0), codec.dumps(["a", "b"]), 2, took)]
    )


#: Redis 7's script flags line: no ``allow-cross-slot-keys``, so Redis checks every key.
STRICT = "#!lua\n"


def _strict(monkeypatch) -> None:
    """Give the scripts the run drives the ``#!lua`` shebang (bodies unchanged)."""
    for name in PER_RUN | {"ENQUEUE", "FORGET"}:
        monkeypatch.setattr(scripts, name, STRICT + getattr(scripts, name))


@pytest.mark.parametrize("strict", [False, True], ids=["as-shipped", "redis-checks-slots"])
def test_every_per_run_script_stays_in_its_run_slot(nodes, rc, strict, monkeypatch):
    if strict:
        _strict(monkeypatch)
    writes = Writes(nodes)
    try:
        ids = _runs_on_every_master(rc)
        assert len({rc.get_node_from_key(keys.run(r)).name for r in ids}) == 3
        for rid, end in zip(ids, ("succeed", "cancel", "fail")):
            root = _tree()
            order = place(root, None, None)
            writes.take()
            writing.write_run(rc, rid, root, order, dag="slots", params={}, since=None, to=None)
            slot = slots.key_slot(keys.run(rid))
            created = writes.take()
            assert {k for k in created if slots.key_slot(k) != slot} == CREATION_GLOBALS
            assert rc.hget(keys.run(rid), "mtag") == slots.run_tag(rid).encode()
            assert slots.key_slot(keys.metrics(slots.run_tag(rid))) == slot

            d = RunDriver(rc, rid)
            _drive_run(d, end)
            written = writes.take()
            assert written, "the scripts wrote nothing?"
            outside = {k for k in written if slots.key_slot(k) != slot}
            assert outside == set(), f"run {rid} (slot {slot}) wrote keys of other slots"
            assert keys.metrics(d.tag) in written  # counted, in the run's slot
        statuses = [codec.text(rc.hget(keys.run(r), "status")) for r in ids]
        assert statuses == ["succeeded", "cancelled", "failed"]

        # The collector sums the slots' copies (3 masters) into the same series.
        snap = metrics.PlanktonCollector(rc)._read()
        ended = {}
        for k, v in snap["hash"].items():
            name, *labels = codec.text(k).split(counters.SEP)
            if name == "runs_ended":
                ended[labels[1]] = float(v)
        assert ended == {"succeeded": 1.0, "cancelled": 1.0, "failed": 1.0}
        assert snap["waiting"].get("default", (0, 0.0))[0] == 0
    finally:
        writes.close()


def _drive_run(d: RunDriver, end: str) -> None:
    """Claim the leaves (releasing the mid task), renew, emit, hand one back, reap it, claim
    it again, finish the leaves, run the mid task (ACK + XREAD, FINISH validating what it
    took); then the root succeeds, or the run is cancelled and settled, or fails for good."""
    rid, tr = d.rid, d.tr
    assert d.claim([("0", 1), ("1", 1), ("3", 1)]) == [("2", 1, "default")]
    assert tr.renew(rid, 30_000, [("0", 1), ("1", 1), ("3", 1)]) == []
    d.emit("2", "0", 1, 1, "a")
    assert tr.fail(rid, "1", 1, "handback", "handed back", 0, 3) == "RETRY"
    lost, promoted = tr.reap(rid, 0, 3)
    assert lost == [] and promoted == ["1"]
    d.claim([("1", 2)])
    d.finish(
        [
            (rid, "2", "0", 1, 2, 0, b"", codec.dumps(1), 0, b""),
            (rid, "2", "1", 2, 1, 1, codec.pack_batch(["b"], 0), codec.dumps(2), 0, b""),
        ]
    )
    if end == "cancel":
        assert tr.cancel(rid, "stop") == "cancelled"
        assert tr.settle(rid, ["2", "3", "4"]) >= 1
        return
    if end == "fail":
        assert tr.fail(rid, "3", 1, "fatal", "boom", 0, 3) == "FAILED"
        return
    _run_mid(d)
    d.finish([(rid, "4", "3", 1, 1, 1, codec.pack_batch(["c"], 0), codec.dumps(3), 0, b"")])
    assert d.claim([("4", 1)]) == []
    d.finish([(rid, "", "4", 1, 1, 0, b"", codec.dumps(["ab", "c"]), 2, b"")])


class Done(tasks.Leaf):
    """A leaf whose output exists already: ``complete()`` skips it at the run's creation."""

    def complete(self):
        return True


def test_creation_with_skipped_tasks_and_reads_stay_in_the_run_slot(nodes, rc):
    """complete() at creation (prefill: skipped task, its end in the parent's channel, its
    metric count) writes only the run's slot; show and the change log read it there."""
    writes = Writes(nodes)
    try:
        rid = _runs_on_every_master(rc, 1)[0]
        root = tasks.Collect().add_children(Done(i=9), tasks.Leaf(i=1))
        writes.take()
        writing.write_run(
            rc, rid, root, place(root, None, None), dag="slots", params={}, since=None, to=None
        )
        slot = slots.key_slot(keys.run(rid))
        created = writes.take()
        assert {k for k in created if slots.key_slot(k) != slot} == CREATION_GLOBALS
        assert keys.channel(rid, "2") in created and keys.metrics(slots.run_tag(rid)) in created
        skipped = counters.field("tasks_ended", Done.family(), "skipped")
        assert rc.hget(keys.metrics(slots.run_tag(rid)), skipped) == b"1"
        shown = reading.show(rc, rid)
        assert shown is not None
        assert [t["state"] for t in shown["tasks"]] == ["skipped", "ready", "pending"]
        assert reading.changes(rc, rid) is not None
        assert writes.take() == set()  # reads write nothing
    finally:
        writes.close()


def _script_names() -> set[str]:
    return {
        n
        for n, v in vars(scripts).items()
        if n.isupper() and not n.startswith("_") and isinstance(v, str)
    }


def test_every_script_is_classified_and_the_global_ones_are_cross_slot(nodes, rc):
    assert _script_names() - FRAGMENTS == PER_RUN | set(GLOBAL), (
        "a script is neither per-run nor listed as global: classify it here and in the doc"
    )
    node = redis.Redis(port=nodes.servers[0].port)
    try:
        for name, ks in GLOBAL.items():
            if len({slots.key_slot(k) for k in ks}) == 1:
                assert not any("{" in k for k in ks), f"{name}: one global key"
                continue
            with pytest.raises(redis.exceptions.ClusterCrossSlotError):  # the CROSSSLOT reply
                node.eval(getattr(scripts, name), len(ks), *ks, *(["0"] * 4))
    finally:
        node.close()


def test_an_undeclared_key_of_another_slot_is_refused(nodes, rc, monkeypatch):
    """The negative control: under ``#!lua``, Redis refuses what the per-run scripts never
    do."""
    rid = next(
        r
        for r in iter(planning.new_run_id, "")
        if slots.key_slot(keys.run(r)) != slots.key_slot(keys.METRICS)
    )
    other = next(
        t
        for t in ("a", "b", "c", "d")
        if slots.key_slot(keys.metrics(t)) != slots.key_slot(keys.run(rid))
    )
    body = STRICT + "return redis.call('HINCRBY', ARGV[1], 'f', 1)"
    with pytest.raises(redis.ResponseError, match="slot|non local"):
        rc.eval(body, 1, keys.run(rid), keys.metrics(other))
    _strict(monkeypatch)
    # and a run without its slot tag (as created on one Redis) counting into the global
    # metric keys is refused the same way: what mtag is for.
    root = _tree()
    writing.write_run(
        rc, rid, root, place(root, None, None), dag="slots", params={}, since=None, to=None
    )
    assert slots.key_slot(keys.METRICS) != slots.key_slot(keys.run(rid))
    rc.hdel(keys.run(rid), "mtag")
    with pytest.raises(redis.ResponseError, match="slot|non local"):
        Transitions(rc).cancel(rid)


def test_the_doc_lists_the_same_scripts():
    text = DOC.read_text()
    local = text.split("## What is slot-local", 1)[1].split("\n## ", 1)[0]
    cross = text.split("## What stays cross-slot", 1)[1].split("\n## ", 1)[0]
    for name in PER_RUN:
        assert re.search(rf"\b{name}\b", local), f"{name} missing from the slot-local list"
    for name in GLOBAL:
        assert re.search(rf"\b{name}\b", cross), f"{name} missing from the cross-slot list"
