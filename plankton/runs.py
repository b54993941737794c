"""Run and task metadata in Redis hashes: written at submission, read by show/rerun/API.

A run's record is enough to re-create it: every task's family, typed params (in their wire
form), parent and children, plus the run's DAG, params, window and code version.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Iterable, cast

import redis

from . import codec, keys, prefill, redact, scripts, skip, slots, states
from .bulk import BulkWriter
from .errors import Fenced
from .hashing import tree_digest
from .states import RunStatus, TaskState
from .task import Task

#: Contract status strings of a run, and those of an ended run (``states`` defines them).
RUN_STATES = states.RUN_STATES
ENDED = states.RUN_ENDED


def new_run_id() -> str:
    """Time-sortable, URL- and RQ-safe run id, e.g. ``r20261125T120102-9f3a1c``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"r{stamp}-{secrets.token_hex(3)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(value: _dt.datetime | None) -> str:
    return value.isoformat() if value is not None else ""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big tree is built, written or read.

    Those steps create a few objects per task that all stay alive; each allocation burst
    makes the collector walk every live object again, which cost ~10 % of a 100,000-task
    submit and grows with the heap (per-task cost no longer flat). Nothing here makes
    reference cycles that need collecting while paused."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class Plan:
    """A validated tree flattened for Redis: tasks in post-order, ids are their indexes."""

    tasks: list[Task]
    ids: dict[int, str]

    @classmethod
    def of(cls, order: list[Task]) -> "Plan":
        return cls(order, {id(t): str(i) for i, t in enumerate(order)})

    def tid(self, task: Task) -> str:
        return self.ids[id(task)]

    def enqueue_order(self, finished: "dict[str, prefill.Finished] | None" = None
                      ) -> list[Task]:
        """Leaves first by priority (higher first), then depth-first post-order; with
        ``finished`` (tasks written finished), the tasks whose children all are."""
        return prefill.first_tasks(self, finished or {})


def task_record(plan: Plan, task: Task, order: int,
                consts: dict[type, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The task hash written for ``task``. ``consts``: a cache, for one write, of the fields
    that depend only on the task's class (most of them: a wide tree has few classes)."""
    cls = type(task)
    base = consts.get(cls) if consts is not None else None
    if base is None:
        base = {
            "family": cls.family(),
            "n_started": 0,
            "n_done": 0,
            "priority": cls.priority if cls.priority is not None else "",
            "queue": cls.queue,
            "timeout": cls.timeout if cls.timeout is not None else "",
            "retries": cls.retries,
            "attempt": 1,
            "attempts": 0,
            "fails": 0,
            "lost": 0,
        }
        if consts is not None:
            consts[cls] = base
    specs = cls._params
    ids = plan.ids
    children = task.children
    return {
        **base,
        "name": task.task_name,
        "params": codec.dumps({k: specs[k].to_wire(v) for k, v in task._values.items()}),
        "param_hash": task.param_hash,
        "parent": ids[id(task.parent)] if task.parent is not None else "",
        "children": codec.dumps([ids[id(c)] for c in children]),
        "n_children": len(children),
        "state": TaskState.PENDING if children else TaskState.READY,
        "order": order,
    }


def tree_hashes(plan: Plan) -> dict[str, str]:
    """Tree hash of every task, computed bottom-up once (post-order) instead of recursively."""
    raw: dict[int, bytes] = {}
    out: dict[str, str] = {}
    for task in plan.tasks:
        digest = raw[id(task)] = tree_digest(bytes.fromhex(task.param_hash),
                                              [raw[id(c)] for c in task.children])
        out[plan.tid(task)] = digest.hex()
    return out




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
            raise Fenced(f"scheduler creating run {self.run_id}",
                         "leader epoch moved on or run exists")
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


def write_run(conn: redis.Redis, run_id: str, root: Task, order: list[Task], *, dag: str,
              params: dict[str, Any], since: _dt.datetime | None, to: _dt.datetime | None,
              version: str = "", rerun_of: str = "", extra: dict[str, Any] | None = None,
              chunk: int = 2000, fence: tuple[str, int] | None = None,
              notify: bool = True, then: Any = None,
              finished: dict[str, prefill.Finished] | None = None) -> list[Any]:
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
        "run_id": run_id, "dag": dag, "status": RunStatus.QUEUED, "params": codec.dumps(params),
        "since": iso(since), "to": iso(to), "submitted_at": submitted, "version": version,
        "rerun_of": rerun_of, "tree_hash": hashes[plan.tid(root)], "root": plan.tid(root),
        "n_tasks": len(order),
    }
    run.update(extra or {})
    tag = slots.run_tag(run_id) if slots.is_cluster(conn) else ""
    run.update({"mtag": tag} if tag else {})
    if not small:
        tx = FencedPipe(conn, run_id, fence) if fence else conn.pipeline(transaction=True)
    run.update(prefill.write_extras(tx, run_id, plan, finished, dag, submitted, tag))
    tx.hset(keys.run(run_id), mapping=run)
    index = _indexes(conn.pipeline(transaction=False) if tag else tx, run_id, dag, submitted,
                     notify, tag)
    if then is not None:
        then(tx)
    replies: list[Any] = tx.execute()
    if index is not tx:
        replies += index.execute()
    return replies


def _records(plan: Plan, order: list[Task], hashes: dict[str, str],
             finished: dict[str, prefill.Finished]) -> Iterator[tuple[Task, str, dict[str, Any]]]:
    """(task, id, hash fields) of every task of a run being written, in order."""
    consts: dict[type, dict[str, Any]] = {}
    for i, task in enumerate(order):
        tid = plan.tid(task)
        record = task_record(plan, task, i, consts)
        record["tree_hash"] = hashes[tid]
        record.update(prefill.task_fields(plan, task, finished))
        yield task, tid, record


def _write_tasks_bulk(conn: redis.Redis, run_id: str, plan: Plan, order: list[Task],
                      hashes: dict[str, str], finished: dict[str, prefill.Finished],
                      rank: dict[int, int], chunk: int) -> None:
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


_s = codec.text


def _int(value: Any) -> int | None:
    text = _s(value)
    return int(text) if text.lstrip("-").isdigit() else None


def _ms_iso(value: Any) -> str | None:
    ms = _int(value)
    if ms is None:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(
        timespec="milliseconds")


def _value(blob: Any) -> Any:
    if blob in (None, b""):
        return None
    return codec.loads(blob)


jsonable = codec.jsonable


def read_run(conn: redis.Redis, run_id: str) -> dict[str, Any] | None:
    """The run record alone (no tasks), decoded; None if unknown."""
    raw = conn.hgetall(keys.run(run_id))
    if not raw:
        return None
    return _run_view(run_id, {_s(k): v for k, v in raw.items()})


def _run_view(run_id: str, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "dag": _s(r.get("dag")),
        "status": _s(r.get("status")),
        "params": _params_view(r.get("params")),
        "since": _s(r.get("since")) or None,
        "to": _s(r.get("to")) or None,
        "submitted_at": _ms_iso(r.get("submitted_at")),
        "started_at": _ms_iso(r.get("started_at")),
        "ended_at": _ms_iso(r.get("ended_at")),
        "version": _s(r.get("version")),
        "rerun_of": _s(r.get("rerun_of")) or None,
        "tree_hash": _s(r.get("tree_hash")),
        "root": _s(r.get("root")),
        "n_tasks": _int(r.get("n_tasks")) or 0,
        "result": jsonable(_value(r.get("result"))),
        "error": redact.text(_s(r.get("error"))) or None,
    }


def read_tasks(conn: redis.Redis, run_id: str, n_tasks: int) -> list[dict[str, Any]]:
    """Every task of the run, in id order (one pipelined HGETALL per task)."""
    return read_task_ids(conn, run_id, [str(i) for i in range(n_tasks)])


def read_task_ids(conn: redis.Redis, run_id: str, ids: list[str],
                  chunk: int = 10_000) -> list[dict[str, Any]]:
    """The tasks ``ids`` of the run (pipelined HMGETs, in chunks to bound memory)."""
    out = []
    with gc_paused():
        for start in range(0, len(ids), chunk):
            out += _read_chunk(conn, run_id, ids[start:start + chunk])
    return out


def _read_chunk(conn: redis.Redis, run_id: str, part: list[str]) -> list[dict[str, Any]]:
    out = []
    if part:
        pipe = conn.pipeline(transaction=False)
        for tid in part:
            pipe.hmget(keys.task(run_id, tid), VIEW_FIELDS)
        for tid, values in zip(part, pipe.execute()):
            out.append(task_view(tid, dict(zip(VIEW_FIELDS, values))))
    return out


#: The task-hash fields ``task_view`` reads (of all those in keys.TASK_FIELDS). Reads fetch
#: only these (HMGET): a finished task's hash holds twice as many (cursors, counters), and
#: parsing the replies is most of the cost of reading 10,000 tasks. A field ``task_view``
#: reads must be listed here (tests/test_changes.py checks it). Plain HMGETs: with hiredis
#: packing the field names (plankton.resp) they beat a script holding the names, 7.0 against
#: 9.5 ms for 1,001 tasks.
VIEW_FIELDS = ("name", "family", "parent", "children", "params", "param_hash", "tree_hash",
               "priority", "queue", "state", "attempts", "worker", "host", "started_at",
               "ended_at", "emitted", "consumed", "result", "error", "reused_from")


_PLAIN = frozenset({int, float, bool, type(None)})


def _params_view(raw: Any) -> Any:
    """A task's params, JSON-ready and redacted: scalars straight through (the common case,
    and most of the cost of reading 10,000 tasks), anything else through jsonable."""
    params = _value(raw)
    if type(params) is dict:
        out: dict[str, Any] = {}
        for k, v in params.items():
            t = type(v)
            if type(k) is not str:
                break
            if t is str:
                out[k] = redact.text(v)
            elif t in _PLAIN:
                out[k] = v
            else:
                break
        else:
            return out
    return redact.value(jsonable(params))


def task_view(tid: str, r: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of one task in ``show --json``."""
    state = _s(r.get("state"))
    return {
        "id": tid,
        "name": _s(r.get("name")),
        "family": _s(r.get("family")),
        "parent": _s(r.get("parent")) or None,
        "children": _value(r.get("children")) or [],
        "params": _params_view(r.get("params")),
        "param_hash": _s(r.get("param_hash")),
        "tree_hash": _s(r.get("tree_hash")),
        "priority": _int(r.get("priority")),
        "queue": _s(r.get("queue")),
        "state": state,
        "attempts": _int(r.get("attempts")) or 0,
        "worker": _s(r.get("worker")) or None,
        "host": _s(r.get("host")) or None,
        "started_at": _ms_iso(r.get("started_at")),
        "ended_at": _ms_iso(r.get("ended_at")) if state in states.TASK_FINAL
        else None,
        "processed": {"emitted": _int(r.get("emitted")) or 0,
                      "consumed": _int(r.get("consumed")) or 0},
        "result": jsonable(_value(r.get("result"))) if state == TaskState.SUCCEEDED else None,
        "error": redact.text(_s(r.get("error"))) or None,
        "reused_from": _s(r.get("reused_from")) or None,
    }


def show(conn: redis.Redis, run_id: str) -> dict[str, Any] | None:
    """The full ``show --json`` object: the run and its task tree."""
    run = read_run(conn, run_id)
    if run is None:
        return None
    run["tasks"] = read_tasks(conn, run_id, run["n_tasks"])
    return run


def changes(conn: redis.Redis, run_id: str, since: int | None = None) -> dict[str, Any] | None:
    """What changed in a run since ``since`` (a cursor from the previous call): the delta
    read that ``run --wait`` and the console follow a run with, at a cost per call of what
    changed, not of the whole tree.

    Returns ``{"cursor": int, "full": bool, "run": <run record>, "tasks": [<task>, ...]}``
    (records shaped as in ``show``), or None for an unknown run. Every transition script
    bumps the run's ``ver`` once and scores each task it changed with it (keys.changes);
    ``tasks`` holds the tasks changed after ``since``, each once, in its current state.
    Without ``since`` (or with a cursor the run never had, e.g. after a Redis rollback)
    every task is returned and ``full`` is true. Pass the returned ``cursor`` next time; a
    task changed while this call ran may come again next time (its newer state).
    """
    tx = conn.pipeline(transaction=True)
    tx.hgetall(keys.run(run_id))
    if since:
        tx.zrangebyscore(keys.changes(run_id), f"({int(since)}", "+inf")
    replies = tx.execute()
    raw = replies[0]
    if not raw:
        return None
    run = _run_view(run_id, {_s(k): v for k, v in raw.items()})
    cursor = _int(raw.get(b"ver")) or 0
    if not since or since > cursor:
        return {"cursor": cursor, "full": True, "run": run,
                "tasks": read_tasks(conn, run_id, run["n_tasks"])}
    ids = [_s(t) for t in replies[1]]
    ids.sort(key=int)
    return {"cursor": cursor, "full": False, "run": run, "tasks": read_task_ids(conn, run_id, ids)}


def live_workers(conn: redis.Redis, heartbeat: float, now: float | None = None) -> int:
    """Workers whose heartbeat (every ``heartbeat`` s) was seen in the last three periods."""
    at = time.time() if now is None else now
    return int(conn.zcount(keys.WORKERS, int((at - 3 * heartbeat) * 1000), "+inf"))


def active_runs(conn: redis.Redis, dag: str) -> int:
    """Runs of ``dag`` not yet ended (read from the active set): bounds max_active_runs."""
    ids = [codec.text(i) for i in conn.smembers(keys.ACTIVE)]
    pipe = conn.pipeline(transaction=False)
    for rid in ids:
        pipe.hmget(keys.run(rid), "dag", "status")
    return sum(1 for d, s in pipe.execute()
               if codec.text(d) == dag and s is not None and codec.text(s) not in ENDED)


def page_runs(conn: redis.Redis, dag: str | None, status: str | None, limit: int,
              cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs, newest first, and the cursor of the next page (None on the last).

    The cursor is ``<submitted ms>:<run id>`` of the page's last run: runs submitted in the
    same millisecond are ordered by id, so none is skipped or repeated at a page boundary,
    and runs submitted meanwhile do not shift later pages.
    """
    index = keys.dag_runs(dag) if dag else keys.RUNS
    top: str | int = "+inf"
    after: str | None = None
    if cursor is not None:
        ms, after = cursor.split(":", 1)
        top = int(ms)
    found: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    offset = 0
    while len(found) <= limit:
        rows = conn.zrevrangebyscore(index, top, "-inf", start=offset, num=max(limit * 2, 50),
                                     withscores=True)
        if not rows:
            break
        offset += len(rows)
        for member, score in cast(list[tuple[bytes, float]], rows):
            run_id = _s(member)
            if run_id in seen or (after is not None and int(score) == top and run_id >= after):
                continue
            seen.add(run_id)
            run = read_run(conn, run_id)
            if run is not None and (status is None or run["status"] == status):
                found.append((int(score), run))
                if len(found) > limit:
                    break
    page = found[:limit]
    more = len(found) > limit
    return [run for _, run in page], (f"{page[-1][0]}:{page[-1][1]['run_id']}" if more else None)


def list_runs(conn: redis.Redis, dag: str | None = None, limit: int = 20,
              before: float | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Recent runs, newest first; ``before`` (a submitted-ms cursor) keeps runs submitted
    strictly before it. One page of :func:`page_runs`."""
    cursor = None if before is None else f"{int(before)}:"
    return page_runs(conn, dag, status, limit, cursor)[0]


def read_logs(conn: redis.Redis, run_id: str, task: str | None = None) -> list[dict[str, Any]]:
    """Log lines tasks wrote with ``task.log``, optionally of one task (id or name)."""
    out = []
    names: dict[str, str] = {}
    for blob in conn.lrange(keys.logs(run_id), 0, -1):
        tid, ms, level, line = codec.loads(blob)
        if tid not in names:
            names[tid] = _s(conn.hget(keys.task(run_id, tid), "name"))
        if task is None or task in (tid, names[tid]):
            out.append({"task": tid, "name": names[tid], "at": _ms_iso(ms), "level": level,
                        "line": line})
    return out


def iter_task_ids(n_tasks: int) -> Iterable[str]:
    return (str(i) for i in range(n_tasks))
