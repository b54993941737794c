"""Reading runs back: one run, its tasks, what changed since a cursor, pages of runs, logs.

The JSON shapes of ``show --json``, ``GET /runs/{id}`` and the console come from here
(``task_view``, ``changes``). Nothing here writes.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, cast

import redis

from plankton import codec, keys, states
from plankton.runs.planning import gc_paused
from plankton.states import TaskState
from plankton.views import redact

_s = codec.text


def _int(value: Any) -> int | None:
    text = _s(value)
    return int(text) if text.lstrip("-").isdigit() else None


def ms_iso(value: Any) -> str | None:
    """A millisecond timestamp (as Redis holds it) as an ISO 8601 UTC string, or None."""
    ms = _int(value)
    if ms is None:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(
        timespec="milliseconds"
    )


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
        "submitted_at": ms_iso(r.get("submitted_at")),
        "started_at": ms_iso(r.get("started_at")),
        "ended_at": ms_iso(r.get("ended_at")),
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


def read_task_ids(
    conn: redis.Redis, run_id: str, ids: list[str], chunk: int = 10_000
) -> list[dict[str, Any]]:
    """The tasks ``ids`` of the run (pipelined HMGETs, in chunks to bound memory)."""
    out = []
    with gc_paused():
        for start in range(0, len(ids), chunk):
            out += _read_chunk(conn, run_id, ids[start : start + chunk])
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
#: packing the field names (plankton.engine.resp) they beat a script holding the names, 7.0 against
#: 9.5 ms for 1,001 tasks.
VIEW_FIELDS = (
    "name",
    "family",
    "parent",
    "children",
    "params",
    "param_hash",
    "tree_hash",
    "priority",
    "queue",
    "state",
    "attempts",
    "worker",
    "host",
    "started_at",
    "ended_at",
    "emitted",
    "consumed",
    "result",
    "error",
    "reused_from",
)


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
        "started_at": ms_iso(r.get("started_at")),
        "ended_at": ms_iso(r.get("ended_at")) if state in states.TASK_FINAL else None,
        "processed": {
            "emitted": _int(r.get("emitted")) or 0,
            "consumed": _int(r.get("consumed")) or 0,
        },
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
        return {
            "cursor": cursor,
            "full": True,
            "run": run,
            "tasks": read_tasks(conn, run_id, run["n_tasks"]),
        }
    ids = [_s(t) for t in replies[1]]
    ids.sort(key=int)
    return {"cursor": cursor, "full": False, "run": run, "tasks": read_task_ids(conn, run_id, ids)}


def active_runs(conn: redis.Redis, dag: str) -> int:
    """Runs of ``dag`` not yet ended (read from the active set): bounds max_active_runs."""
    ids = [codec.text(i) for i in conn.smembers(keys.ACTIVE)]
    pipe = conn.pipeline(transaction=False)
    for rid in ids:
        pipe.hmget(keys.run(rid), "dag", "status")
    return sum(
        1
        for d, s in pipe.execute()
        if codec.text(d) == dag and s is not None and codec.text(s) not in states.RUN_ENDED
    )


def page_runs(
    conn: redis.Redis, dag: str | None, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
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
        rows = conn.zrevrangebyscore(
            index, top, "-inf", start=offset, num=max(limit * 2, 50), withscores=True
        )
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


def list_runs(
    conn: redis.Redis,
    dag: str | None = None,
    limit: int = 20,
    before: float | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
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
            out.append(
                {"task": tid, "name": names[tid], "at": ms_iso(ms), "level": level, "line": line}
            )
    return out


def iter_task_ids(n_tasks: int) -> Iterable[str]:
    return (str(i) for i in range(n_tasks))
