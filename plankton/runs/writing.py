"""Writing a run: every task hash, then the run hash and the indexes that make it visible.

The one place every run is created (the client, the API, the leading scheduler's cron and
``after`` runs, backfills and reruns all call ``write_run``). Reading a run back is
``reading``; the records written come from ``planning``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import Any

import redis

from plankton import codec, keys
from plankton.authoring.task import Task
from plankton.engine import scripts, slots
from plankton.engine.bulk import BulkWriter
from plankton.errors import Fenced
from plankton.runs import prefill, skip
from plankton.runs.planning import Plan, iso, now_ms, task_record, tree_hashes
from plankton.states import RunStatus


class FencedPipe:
    """Collects writes and applies them with ``scripts.CREATE_RUN_FENCED`` (the interface of a
    pipeline)."""

    def __init__(self, conn: redis.Redis, run_id: str, fence: tuple[str, int]) -> None:
        self.script = conn.register_script(scripts.CREATE_RUN_FENCED)
        self.run_id = run_id
        self.keys = [fence[0], keys.run(run_id)]
        self.epoch = fence[1]
        self.args: list[Any] = []
        self.count = 0

    def _add(self, op: str, key: str, *args: Any) -> None:
        self.args += [key, len(args), op, *args]
        self.count += 1

    def hset(self, key: str, mapping: dict[str, Any]) -> None:
        flat: list[Any] = []
        for k, v in mapping.items():
            flat += [k, v]
        self._add("HSET", key, *flat)

    def zadd(self, key: str, mapping: dict[str, Any]) -> None:
        flat: list[Any] = []
        for member, score in mapping.items():
            flat += [score, member]
        self._add("ZADD", key, *flat)

    def sadd(self, key: str, member: str) -> None:
        self._add("SADD", key, member)

    def xadd(self, key: str, fields: dict[str, Any]) -> None:
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        self._add("XADD", key, "*", *flat)

    def hincrby(self, key: str, name: str, amount: int = 1) -> None:
        self._add("HINCRBY", key, name, amount)

    def rpush(self, key: str, value: str) -> None:
        self._add("RPUSH", key, value)

    def __len__(self) -> int:
        return self.count

    def execute(self) -> int:
        if not self.args:
            return 1
        ok = int(self.script(keys=self.keys, args=[self.epoch, *self.args]))
        self.args, self.count = [], 0
        if not ok:
            raise Fenced(
                f"scheduler creating run {self.run_id}", "leader epoch moved on or run exists"
            )
        return ok


def _indexes(pipe: Any, run_id: str, dag: str, submitted: int, notify: bool, tag: str) -> Any:
    """Add the run to the global indexes (and its slot tag on a Cluster) in ``pipe``."""
    pipe.zadd(keys.RUNS, {run_id: submitted})
    pipe.zadd(keys.dag_runs(dag), {run_id: submitted})
    pipe.sadd(keys.ACTIVE, run_id)
    if notify:
        pipe.rpush(keys.SUBMITTED, run_id)
    if tag:
        pipe.sadd(keys.METRIC_TAGS, tag)
    return pipe


def write_run(
    conn: redis.Redis,
    run_id: str,
    root: Task,
    order: list[Task],
    *,
    dag: str,
    params: dict[str, Any],
    since: _dt.datetime | None,
    to: _dt.datetime | None,
    version: str = "",
    rerun_of: str = "",
    extra: dict[str, Any] | None = None,
    chunk: int = 2000,
    fence: tuple[str, int] | None = None,
    notify: bool = True,
    then: Any = None,
    finished: dict[str, prefill.Finished] | None = None,
) -> list[Any]:
    """Write every task hash, then the run hash and indexes in one transaction.

    With ``fence`` (leader-epoch key, epoch), every write is checked against the epoch and
    against the run not existing yet (cron runs: exactly once per fire time).
    ``finished``: tasks written already finished (``prefill``: reused by a resume, skipped
    by ``complete()``); None evaluates ``complete()`` here (``skip.check``).

    On a Redis Cluster (``conn`` a ``RedisCluster``; docs/scaling.md) the transaction holds
    the run's keys only, which share one slot; the run records the tag of its slot
    (``mtag``: its scripts count metrics there) and the global indexes are written after
    it, in a second round trip. ``fence`` and a ``then`` that enqueues are cross-slot there.
    """
    plan = Plan.of(order)
    hashes = tree_hashes(plan)
    finished = skip.check(plan, finished, run_complete=finished is None)
    leaves = prefill.first_tasks(plan, finished)
    rank = {id(t): i for i, t in enumerate(leaves)}
    small = fence is None and len(order) <= chunk
    tx: Any
    if fence or small or slots.is_cluster(conn):
        # small: one transaction, one round trip: tasks, run, indexes, and (``then``) the
        # first enqueue; nobody can see the run before its tasks. fence: every write checked.
        # A Cluster's client has no one connection to stream on.
        pipe: Any = FencedPipe(conn, run_id, fence) if fence else conn.pipeline(transaction=True)
        if small:
            tx = pipe
        ready: dict[str, int] = {}
        for task, tid, record in _records(plan, order, hashes, finished):
            pipe.hset(keys.task(run_id, tid), mapping=record)
            if id(task) in rank:
                ready[tid] = rank[id(task)]
            if len(ready) >= chunk or (not small and len(pipe) >= chunk):
                pipe.zadd(keys.ready(run_id), ready)  # one ZADD per chunk of leaves
                ready = {}
                if not small:
                    pipe.execute()
        if ready:
            pipe.zadd(keys.ready(run_id), ready)
        if not small:
            pipe.execute()
    else:
        # chunks on one connection, Redis running each while the next is built (bulk.py);
        # the run hash that makes the run visible follows in a transaction of its own
        _write_tasks_bulk(conn, run_id, plan, order, hashes, finished, rank, chunk)
    submitted = now_ms()
    run = {
        "run_id": run_id,
        "dag": dag,
        "status": RunStatus.QUEUED,
        "params": codec.dumps(params),
        "since": iso(since),
        "to": iso(to),
        "submitted_at": submitted,
        "version": version,
        "rerun_of": rerun_of,
        "tree_hash": hashes[plan.tid(root)],
        "root": plan.tid(root),
        "n_tasks": len(order),
    }
    run.update(extra or {})
    tag = slots.run_tag(run_id) if slots.is_cluster(conn) else ""
    run.update({"mtag": tag} if tag else {})
    if not small:
        tx = FencedPipe(conn, run_id, fence) if fence else conn.pipeline(transaction=True)
    run.update(prefill.write_extras(tx, run_id, plan, finished, dag, submitted, tag))
    tx.hset(keys.run(run_id), mapping=run)
    index = _indexes(
        conn.pipeline(transaction=False) if tag else tx, run_id, dag, submitted, notify, tag
    )
    if then is not None:
        then(tx)
    replies: list[Any] = tx.execute()
    if index is not tx:
        replies += index.execute()
    return replies


def _records(
    plan: Plan, order: list[Task], hashes: dict[str, str], finished: dict[str, prefill.Finished]
) -> Iterator[tuple[Task, str, dict[str, Any]]]:
    """(task, id, hash fields) of every task of a run being written, in order."""
    consts: dict[type, dict[str, Any]] = {}
    for i, task in enumerate(order):
        tid = plan.tid(task)
        record = task_record(plan, task, i, consts)
        record["tree_hash"] = hashes[tid]
        record.update(prefill.task_fields(plan, task, finished))
        yield task, tid, record


def _write_tasks_bulk(
    conn: redis.Redis,
    run_id: str,
    plan: Plan,
    order: list[Task],
    hashes: dict[str, str],
    finished: dict[str, prefill.Finished],
    rank: dict[int, int],
    chunk: int,
) -> None:
    """The task hashes and the ready set of a big run, as ``write_run``'s pipeline would
    write them, through a ``bulk.BulkWriter`` (one ZADD per chunk of leaves)."""
    ready: list[Any] = []
    ready_key = keys.ready(run_id)
    with BulkWriter(conn, chunk) as bulk:
        add = bulk.add
        for task, tid, record in _records(plan, order, hashes, finished):
            add("HSET", keys.task(run_id, tid), *[x for kv in record.items() for x in kv])
            if id(task) in rank:
                ready += (rank[id(task)], tid)
                if len(ready) >= 2 * chunk:
                    add("ZADD", ready_key, *ready)
                    ready = []
        if ready:
            add("ZADD", ready_key, *ready)
