"""What the console's pages show, read from Redis: run history strips, workers, queues,
the leader, and a task log's tail. Each function is one small batch of pipelined reads, so a
page costs a few round trips whatever the number of runs kept.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import redis

from plankton import codec, keys
from plankton.engine import liveness
from plankton.engine.transport import rq_worker
from plankton.views import reading, redact

#: Runs shown in each DAG's history strip.
STRIP_RUNS = 25
#: Log lines returned by one tail read (the page asks again for the rest).
LOG_CHUNK = 2000


def duration(start: str | None, end: str | None, now: float | None = None) -> float | None:
    """Seconds from ``start`` to ``end`` (ISO strings), or to now while it runs."""
    if not start:
        return None
    began = _dt.datetime.fromisoformat(start).timestamp()
    ended = _dt.datetime.fromisoformat(end).timestamp() if end else (now or time.time())
    return max(0.0, ended - began)


def human_duration(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``4 m 05 s``, ``2 h 03 m``; '' for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """A run as a row of the runs table: its record plus a duration."""
    seconds = duration(run.get("started_at") or run.get("submitted_at"), run.get("ended_at"))
    # the history strip's bar grows with the duration (square root: 1 s and 1 h both show)
    strip_px = min(32, 8 + int((seconds or 0) ** 0.5 * 3))
    return {
        **run,
        "duration": seconds,
        "duration_text": human_duration(seconds),
        "strip_px": strip_px,
    }


def history(
    conn: redis.Redis, dags: list[str], n: int = STRIP_RUNS
) -> dict[str, list[dict[str, Any]]]:
    """Per DAG its last ``n`` runs, oldest first (the strip reads left to right)."""
    pipe = conn.pipeline(transaction=False)
    for dag in dags:
        pipe.zrevrange(keys.dag_runs(dag), 0, n - 1)
    ids = [[codec.text(i) for i in found] for found in pipe.execute()]
    for found in ids:
        for run_id in found:  # only what a cell shows: a run's result may be large
            pipe.hmget(keys.run(run_id), _STRIP_FIELDS)
    records = iter(pipe.execute())
    out: dict[str, list[dict[str, Any]]] = {}
    for dag, found in zip(dags, ids):
        strip = []
        for run_id in found:
            status, *times = next(records)
            if status is not None:
                at = dict(zip(_STRIP_FIELDS[1:], (reading.ms_iso(t) for t in times)))
                strip.append(run_row({"run_id": run_id, "status": codec.text(status), **at}))
        out[dag] = strip[::-1]
    return out


_STRIP_FIELDS = ("status", "submitted_at", "started_at", "ended_at")


def tail_logs(conn: redis.Redis, run_id: str, task: str | None, after: int) -> dict[str, Any]:
    """Log lines of the run (of ``task``, an id, if given) from list index ``after`` on:
    ``{"lines": [...], "next": index to ask from next time, "more": whether lines past this
    chunk exist}``. A live tail asks again with ``next`` (at once while ``more``), so each
    poll reads only lines it has not seen."""
    pipe = conn.pipeline(transaction=False)
    pipe.lrange(keys.logs(run_id), after, after + LOG_CHUNK - 1)
    pipe.llen(keys.logs(run_id))
    raw, total = pipe.execute()
    names: dict[str, str] = {}
    lines = []
    for blob in raw:
        tid, ms, level, line = codec.loads(blob)
        tid = str(tid)
        if task is not None and tid != task:
            continue
        if tid not in names:
            names[tid] = codec.text(conn.hget(keys.task(run_id, tid), "name"))
        lines.append(
            {
                "task": tid,
                "name": names[tid],
                "at": reading.ms_iso(ms),
                "level": level,
                "line": redact.text(str(line)),
            }
        )
    return {"lines": lines, "next": after + len(raw), "more": after + len(raw) < total}


def workers(conn: redis.Redis, heartbeat: float) -> dict[str, Any]:
    """Workers (heartbeat age, host, queues, the tasks they run now), queue depths, leader.

    A worker is listed while its last heartbeat is under 20 periods old (``alive`` while
    under three, the rule the scheduler and metrics use). Current tasks come from the
    leases of active runs, each lease's task naming its worker.
    """
    pipe = conn.pipeline(transaction=False)
    pipe.time()
    pipe.zrevrangebyscore(keys.WORKERS, "+inf", "-inf", withscores=True)
    pipe.smembers(keys.WAITING_QUEUES)
    pipe.get(keys.LEADER)
    pipe.pttl(keys.LEADER)
    pipe.get(keys.LEADER_EPOCH)
    pipe.smembers(keys.ACTIVE)
    (now_s, now_us), beats, queues, leader, pttl, epoch, active = pipe.execute()
    now_ms = now_s * 1000 + now_us // 1000
    listed = [
        (codec.text(name), int(ms)) for name, ms in beats if now_ms - ms < 20 * heartbeat * 1000
    ]
    queue_names = sorted(codec.text(q) for q in queues)
    active_ids = sorted(codec.text(r) for r in active)
    for name, _ in listed:
        pipe.hmget(rq_worker(name), "hostname", "pid", "queues")
    for q in queue_names:
        pipe.zcard(keys.waiting(q))
    for run_id in active_ids:
        pipe.zrange(keys.leases(run_id), 0, -1)
    second = pipe.execute()
    infos, depths, leases = (
        second[: len(listed)],
        second[len(listed) : len(listed) + len(queues)],
        second[len(listed) + len(queues) :],
    )
    running: list[tuple[str, str]] = [
        (run_id, codec.text(t)) for run_id, found in zip(active_ids, leases) for t in found
    ]
    for run_id, tid in running:
        pipe.hmget(keys.task(run_id, tid), "worker", "name", "started_at")
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for (run_id, tid), (worker, name, started) in zip(running, pipe.execute()):
        by_worker.setdefault(codec.text(worker), []).append(
            {
                "run_id": run_id,
                "task": tid,
                "name": codec.text(name),
                "started_at": reading.ms_iso(started),
            }
        )
    rows = []
    for (name, ms), (host, pid, qs) in zip(listed, infos):
        age = max(0.0, (now_ms - ms) / 1000)
        rows.append(
            {
                "name": name,
                "host": codec.text(host) if host else "",
                "pid": codec.text(pid) if pid else "",
                "queues": codec.text(qs).split(",") if qs else [],
                "heartbeat_age": age,
                "alive": liveness.is_alive(age, heartbeat),
                "tasks": by_worker.get(name, []),
            }
        )
    return {
        "workers": rows,
        "queues": [{"name": q, "waiting": int(n)} for q, n in zip(queue_names, depths)],
        "leader": {
            "token": codec.text(leader) if leader else None,
            "lease_ms": int(pttl) if pttl and int(pttl) > 0 else None,
            "epoch": int(epoch or 0),
        },
        "active_runs": len(active_ids),
    }
