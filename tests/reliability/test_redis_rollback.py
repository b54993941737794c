"""RELIABILITY §7 #5b: Redis rolls back (lost tail writes, as after an OS crash or a failover).

A scheduler and two workers run several streaming runs (leaves emit ``[child, k]``, relays
pass them on, the root returns the multiset it read). Mid-run: ``SAVE`` and keep a copy of
``dump.rdb``; let the runs move on for three seconds past it; SIGKILL redis-server; put the
old ``dump.rdb`` back (AOF off, so the RDB is what loads) and restart redis-server on the
same port and directory. Redis has then forgotten three seconds of acknowledged writes, while
the workers and the scheduler remember them: runs that had ended are ``running`` again with
attempts no worker holds, jobs already dequeued are back on their queue with their tasks
``queued``, channels lost their tail, attempts still running lost their last emits.

Two shapes of rollback:

- *a run ended after the snapshot*: runs go one after the other; the snapshot catches the
  first one streaming into its root, the kill comes after it succeeded (and while later
  runs' leaves, queued at the snapshot, run): the ended run is live again, and queued jobs
  that were being run come back;
- *streams span the rollback*: every leaf of every run streams from before the snapshot to
  after the restart, so attempts survive the rollback in the workers' memory while Redis lost
  three seconds of their emits and their parents' reads.

Contract (DESIGN guarantees 3 and 7; §3.2 "the scheduler must reconcile"): every run ends,
and succeeds, within DEADLINE of Redis being back (none left ``running``); each root returns
exactly the expected multiset (no value twice, none lost); no scheduler or worker process
died, restarted or lost a thread. Reported (``pytest -s``): run and task states in the
snapshot and at the kill, tasks re-run because of the rollback (``attempts`` > 1 in Redis,
and executions counted outside Redis, see ``tests/dags/rollback_tasks.py``), executions of one
attempt that overlapped, and the time from Redis back to every run ended.
"""

from __future__ import annotations

import collections
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis

import plankton as pk
from plankton import codec, keys
from tests.dags import rollback_tasks as rt
from tests.reliability import helpers as h
from tests.servers import RedisServer, wait_for

ENDED = ("succeeded", "failed", "cancelled")
#: How long the runs go on past the snapshot before Redis is killed (s).
MOVE_ON = 3.0
#: Every run must have ended this long after Redis is back (s).
DEADLINE = 30.0


def _statuses(r: redis.Redis, run_ids: dict[str, str]) -> dict[str, str]:
    return {
        name: h.s(h.safe(lambda rid=rid: r.hget(keys.run(rid), "status"), ""))
        for name, rid in run_ids.items()
    }


def _task_states(r: redis.Redis, run_ids: dict[str, str]) -> dict[tuple[str, str], str]:
    """(run name, task id) -> state, for every task of the runs."""
    out = {}
    for name, rid in run_ids.items():
        n = int(r.hget(keys.run(rid), "n_tasks") or 0)
        for tid in map(str, range(n)):
            out[(name, tid)] = h.s(r.hget(keys.task(rid, tid), "state"))
    return out


def _peek_snapshot(rdb: Path, where: Path, run_ids: dict[str, str]) -> dict[str, Any]:
    """Run statuses, task states and queued RQ jobs inside an RDB file, read from a
    throw-away redis-server (the restarted one is busy with workers at once)."""
    where.mkdir(parents=True)
    shutil.copy(rdb, where / "dump.rdb")
    peek = RedisServer(where).start()
    try:
        conn = redis.Redis.from_url(peek.url)
        out = {
            "runs": _statuses(conn, run_ids),
            "tasks": _task_states(conn, run_ids),
            "jobs": sum(conn.llen(h.s(q)) for q in conn.smembers("rq:queues")),
        }
        conn.close()
    finally:
        peek.stop()
    return out


def _describe(r: redis.Redis, run_id: str) -> dict[str, Any]:
    """What Redis holds about a run that does not end: its unfinished tasks, leases, ready
    and retry sets, and every RQ job (queued or dequeued) that names it."""
    n = int(r.hget(keys.run(run_id), "n_tasks") or 0)
    tasks = {tid: h.task(r, run_id, tid) for tid in map(str, range(n))}
    jobs = {}
    for q in r.smembers("rq:queues"):
        for key in (h.s(q), h.s(q) + ":intermediate"):
            for jid in map(h.s, r.lrange(key, 0, -1)):
                if run_id in jid:
                    jobs[jid] = (key, bool(r.exists(f"rq:job:{jid}")))
    return {
        "tasks": {
            tid: {
                k: t.get(k)
                for k in (
                    "name",
                    "state",
                    "attempt",
                    "attempts",
                    "worker",
                    "lost",
                    "n_started",
                    "n_done",
                )
            }
            for tid, t in tasks.items()
            if t.get("state") != "succeeded"
        },
        "leases": r.zrange(keys.leases(run_id), 0, -1, withscores=True),
        "ready": r.zrange(keys.ready(run_id), 0, -1),
        "retry": r.zrange(keys.retries(run_id), 0, -1),
        "jobs": jobs,
    }


def _wait_all_ended(
    r: redis.Redis, run_ids: dict[str, str], since: float, timeout: float
) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds from ``since`` until each run was first seen ended, and what Redis holds
    about the runs still live once ``timeout`` passed (none, normally)."""
    ended_at: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(ended_at) < len(run_ids):
        for name, status in _statuses(r, run_ids).items():
            if status in ENDED and name not in ended_at:
                ended_at[name] = time.monotonic() - since
        if len(ended_at) < len(run_ids) and time.monotonic() > deadline:
            return ended_at, {
                name: _describe(r, rid) for name, rid in run_ids.items() if name not in ended_at
            }
        time.sleep(0.05)
    return ended_at, {}


def _missing(got: collections.Counter, want: collections.Counter) -> str:
    """The values lost, as child: k ranges (a rollback loses a contiguous stretch)."""
    ks: dict[str, list[int]] = collections.defaultdict(list)
    for child, k in sorted(want - got):
        ks[child].append(k)
    spans = []
    for child, seq in ks.items():
        start = prev = seq[0]
        for k in seq[1:] + [None]:
            if k != prev + 1:
                spans.append(f"{child} k={start}..{prev}")
                start = k
            prev = k if k is not None else prev
    return ", ".join(spans)


def _executions(path: Path) -> dict[tuple[str, str, int], list[tuple[float, float]]]:
    """(run id, task, attempt) -> [(start, stop)] of every execution the tasks journaled
    (outside Redis); stop is inf for one that never recorded its end."""
    out: dict[tuple[str, str, int], list[tuple[float, float]]] = collections.defaultdict(list)
    open_: dict[tuple[str, str, int, str], list[float]] = collections.defaultdict(list)
    for line in path.read_text().splitlines() if path.exists() else []:
        at, run_id, task_id, attempt, who, event = line.split()
        key = (run_id, task_id, int(attempt))
        if event == "start":
            open_[(*key, who)].append(float(at))
        elif open_[(*key, who)]:
            out[key].append((open_[(*key, who)].pop(0), float(at)))
    for (run_id, task_id, attempt, _), begun in open_.items():
        out[(run_id, task_id, attempt)] += [(b, float("inf")) for b in begun]
    return out


@dataclass
class Outcome:
    """What one rollback did, read back once every run ended."""

    names: list[str]
    snap: dict[str, Any]
    at_kill: dict[str, str]
    kill_tasks: dict[tuple[str, str], str]
    lost_window: float
    statuses: dict[str, str]
    ended_at: dict[str, float]
    results: dict[str, Any]
    attempts: dict[str, int]
    runs_twice: dict[str, list[int]]
    overlapped: list[str]
    stuck: dict[str, Any]
    died: list[Any]
    restarts: int
    thread_deaths: int
    wall: float
    dup: int = 0
    lost: int = 0
    per_run: dict[str, str] = field(default_factory=dict)

    def changed(self, snapshot: str, kill: str) -> list[str]:
        """Tasks in state ``snapshot`` in the snapshot and ``kill`` at the kill."""
        return sorted(
            f"{n}/{t}"
            for (n, t), s in self.snap["tasks"].items()
            if s == snapshot and self.kill_tasks.get((n, t)) == kill
        )

    def report(self, title: str) -> str:
        spanned = self.changed("running", "running")
        unclaimed = self.changed("queued", "running")
        revived = [
            n for n in self.names if self.at_kill[n] in ENDED and self.snap["runs"][n] not in ENDED
        ]
        states = collections.Counter(self.snap["tasks"].values())
        done = f"{max(self.ended_at.values(), default=0):.1f}s"
        if self.stuck:
            done = f"never: {sorted(self.stuck)} still live after {DEADLINE:.0f}s"
        return "\n".join(
            [
                f"\n{title}: {self.lost_window:.1f}s of writes rolled back",
                f"  snapshot: runs {self.snap['runs']}; tasks {dict(states)}; "
                f"{self.snap['jobs']} jobs queued",
                f"  at kill:  runs {self.at_kill}; ended runs made live again {revived}; "
                f"attempts running in both {len(spanned)}; queued in the snapshot but running "
                f"at the kill (claims lost) {len(unclaimed)}",
                f"  runs succeeded {list(self.statuses.values()).count('succeeded')}/"
                f"{len(self.names)}; in their results: duplicates {self.dup}, "
                f"values lost {self.lost} "
                f"{self.per_run or ''}",
                f"  tasks re-run because of the rollback: {len(self.attempts)} with attempts > 1 "
                f"{self.attempts}; {len(self.runs_twice)} executed more than once "
                f"(attempt numbers {self.runs_twice}); same attempt executing twice at once "
                f"{self.overlapped}",
                f"  time to complete after restart: {done} "
                f"(per run {', '.join(f'{k} {v:.1f}s' for k, v in sorted(self.ended_at.items()))});"
                f" processes died {self.died}; worker process restarts {self.restarts}; "
                f"threads died {self.thread_deaths}; wall {self.wall:.1f}s",
            ]
        )

    def check(self) -> None:
        assert not self.stuck, f"runs still live {DEADLINE}s after Redis came back: {self.stuck}"
        assert not self.died, f"processes died: {self.died}"
        assert self.statuses == {n: "succeeded" for n in self.names}, self.statuses
        assert self.dup == 0 and self.lost == 0, (
            f"duplicates {self.dup}, values lost {self.lost}: {self.per_run}"
        )
        assert self.restarts == 0, "a worker process exited and was restarted"
        assert self.thread_deaths == 0, "an uncaught exception ended a thread (see logs)"


def _rollback(
    tmp_path: Path,
    private_cluster: Any,
    rconn: Any,
    *,
    runs: int,
    shape: dict[str, int],
    seconds: float,
    relay: dict[str, float] | None = None,
    snap_when: Callable[[redis.Redis, dict[str, str]], bool],
    kill_when: Callable[[redis.Redis, dict[str, str]], bool],
) -> Outcome:
    """Start the cluster and the runs; SAVE once ``snap_when`` holds; once MOVE_ON passed
    and ``kill_when`` holds, SIGKILL Redis, restore the snapshot, restart; wait for every run
    to end and read back what happened."""
    t_start = time.monotonic()
    journal = tmp_path / "journal.txt"
    data = tmp_path / "redis"
    server = RedisServer(data).start()  # --save '' --appendonly no: RDB only
    try:
        fc = private_cluster(server.url, **{rt.JOURNAL_ENV: str(journal)})
        fc.imports = [rt.__name__]
        procs = [fc.scheduler("s0"), fc.worker("wa"), fc.worker("wb")]
        r = rconn(server.url)
        h.worker_ready(r, "wa")
        h.worker_ready(r, "wb")
        c = pk.Client(server.url, imports=[rt.__name__])
        names = [f"r{i}" for i in range(runs)]
        run_ids = {
            name: c.submit(rt.tree(name, seconds=seconds, **shape, **(relay or {})))
            for name in names
        }
        c.close()

        wait_for(lambda: snap_when(r, run_ids), 20, what="the moment to snapshot")
        r.save()
        backup = tmp_path / "snapshot.rdb"
        shutil.copy(data / "dump.rdb", backup)
        snapped = time.monotonic()
        wait_for(
            lambda: time.monotonic() - snapped >= MOVE_ON and kill_when(r, run_ids),
            20,
            what="the moment to kill Redis",
        )
        at_kill, kill_tasks = _statuses(r, run_ids), _task_states(r, run_ids)
        server.kill()  # SIGKILL, by PID
        lost_window = time.monotonic() - snapped
        shutil.copy(backup, data / "dump.rdb")  # the rollback
        snap = _peek_snapshot(backup, tmp_path / "peek", run_ids)
        server.start()  # same port, same directory
        back = time.monotonic()

        ended_at, stuck = _wait_all_ended(r, run_ids, back, DEADLINE)
        c = pk.Client(server.url, imports=[rt.__name__])
        shown = {name: c.status(rid) for name, rid in run_ids.items()}
        c.close()
        by_id = {rid: name for name, rid in run_ids.items()}
        execs = _executions(journal)
        runs_twice: dict[str, list[int]] = collections.defaultdict(list)
        overlapped = []
        for (rid, tid, attempt), spans in sorted(execs.items()):
            runs_twice[f"{by_id[rid]}/{tid}"] += [attempt] * len(spans)
            spans.sort()
            if any(b[0] < a[1] for a, b in zip(spans, spans[1:])):
                overlapped.append(f"{by_id[rid]}/{tid}@{attempt}")
        logs = h.log_text(tmp_path)
        out = Outcome(
            names=names,
            snap=snap,
            at_kill=at_kill,
            kill_tasks=kill_tasks,
            lost_window=lost_window,
            statuses=_statuses(r, run_ids),
            ended_at=ended_at,
            results={name: run["result"] for name, run in shown.items()},
            attempts={
                f"{name}/{t['id']}": t["attempts"]
                for name, run in shown.items()
                for t in run["tasks"]
                if t["attempts"] > 1
            },
            runs_twice={k: v for k, v in runs_twice.items() if len(v) > 1},
            overlapped=overlapped,
            stuck=stuck,
            died=[p.args for p in procs if p.poll() is not None],
            restarts=logs.count("restarting (restart"),
            thread_deaths=logs.count("Exception in thread"),
            wall=time.monotonic() - t_start,
        )
        for name in names:
            if out.statuses[name] != "succeeded":
                continue  # no result to count (check() reports the run)
            got = collections.Counter(tuple(v) for v in out.results[name] or [])
            want = collections.Counter(rt.expected(name, **shape))
            dup, lost = sum((got - want).values()), sum((want - got).values())
            out.dup, out.lost = out.dup + dup, out.lost + lost
            if dup or lost:
                out.per_run[name] = f"+{dup}/-{lost}" + (
                    f" ({_missing(got, want)})" if lost else ""
                )
        return out
    finally:
        server.stop()


def _tasks_named(r: redis.Redis, run_ids: dict[str, str], name: str) -> list[tuple[str, str]]:
    return [(rid, tid) for rid in run_ids.values() for tid in h.task_ids(r, rid, name)]


def _streaming(r: redis.Redis, run_ids: dict[str, str]) -> bool:
    """Some leaf is running with at least a third of its values still to emit."""
    for rid, tid in _tasks_named(r, run_ids, "RbLeaf"):
        state, emitted, params = r.hmget(keys.task(rid, tid), "state", "emitted", "params")
        n = codec.loads(params)["n"] if params else 0
        if h.s(state) == "running" and int(emitted or 0) < n * 2 // 3:
            return True
    return False


def _root_running(r: redis.Redis, run_id: str) -> bool:
    root = h.s(r.hget(keys.run(run_id), "root"))
    return h.s(r.hget(keys.task(run_id, root), "state")) == "running"


def test_rollback_revives_a_run_that_had_ended_and_jobs_already_taken(
    tmp_path, private_cluster, rconn, capsys
):
    """Five runs of four 1 s leaves; a worker runs one leaf at a time, so the runs go one
    after the other. Snapshot while the first streams into its root; kill once it has
    succeeded (3 s or more on) while a leaf of a later run, queued in the snapshot, is
    mid-stream: its claim, its emits and its job's dequeue are all lost."""
    out = _rollback(
        tmp_path,
        private_cluster,
        rconn,
        runs=5,
        shape={"groups": 2, "per": 2, "n": 100},
        seconds=1.0,
        snap_when=lambda r, ids: _root_running(r, ids["r0"]),
        kill_when=lambda r, ids: _statuses(r, ids)["r0"] == "succeeded" and _streaming(r, ids),
    )
    with capsys.disabled():
        print(out.report("redis rollback, a run ended after the snapshot"))
    assert out.snap["runs"]["r0"] == "running" and out.at_kill["r0"] == "succeeded", (
        "the first run did not end between the snapshot and the kill"
    )
    assert out.changed("queued", "running"), "no task claimed after the snapshot ran at the kill"
    out.check()


def test_rollback_under_streams_that_span_it(tmp_path, private_cluster, rconn, capsys):
    """Two runs of one 6 s leaf (50 values/s) under a relay that starts reading after 1.5 s
    and then reads 40 values/s; one leaf per worker. Snapshot once every leaf emitted a
    tenth of its values and no relay has read yet; kill 3 s later, every leaf still
    streaming. Every attempt runs on in the workers across the rollback, but Redis lost
    what the leaves emitted and every read the relays made: a leaf that goes on leaves a
    hole in its channel, and a relay that goes on holds values Redis does not know it read
    (a restart of the leaf would then not restart the relay)."""
    n = 300

    def streaming(r, ids):
        return (
            all(_root_running(r, rid) for rid in ids.values())
            and all(
                int(r.hget(keys.task(rid, tid), "emitted") or 0) >= n // 10
                for rid, tid in _tasks_named(r, ids, "RbLeaf")
            )
            and all(
                int(r.hget(keys.task(rid, tid), "ch_read") or 0) == 0
                for rid, tid in _tasks_named(r, ids, "RbPass")
            )
        )

    def still_running(r, ids):
        return all(
            h.s(r.hget(keys.task(rid, tid), "state")) == "running"
            for rid, tid in _tasks_named(r, ids, "RbLeaf")
        )

    out = _rollback(
        tmp_path,
        private_cluster,
        rconn,
        runs=2,
        shape={"groups": 1, "per": 1, "n": n},
        seconds=6.0,
        relay={"delay": 1.5, "nap": 1 / 40},
        snap_when=streaming,
        kill_when=still_running,
    )
    with capsys.disabled():
        print(out.report("redis rollback, streams span it"))
    assert all(s == "running" for s in out.at_kill.values()), out.at_kill
    assert len(out.changed("running", "running")) == len(out.snap["tasks"]), (
        "some task did not run from the snapshot to the kill"
    )
    out.check()
