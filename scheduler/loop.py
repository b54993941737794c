"""The scheduler's loop. State lives in Redis; this process keeps none that matters.

Only the leader acts (a lease with a fencing epoch). Each tick it: takes submitted runs and
enqueues their ready tasks; for every active run, declares lost the attempts whose lease
expired and makes due retries ready (one REAP script per run); enqueues ready tasks nobody
enqueued (a worker that released a parent and died); and settles ended runs (marks unfinished
tasks cancelled, drops channels, sets the retention expiry). Every enqueue is a compare-and-
set on the task's state and attempt, so a second scheduler, a restarted one, or a paused old
leader can never enqueue the same attempt twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import redis

from plankton import codec, keys
from plankton.authoring.registry import Registry
from plankton.engine import liveness, transport
from plankton.engine.connection import connect
from plankton.engine.transitions import Transitions, backoff_ms
from plankton.engine.transport import Enqueuer, batch_size
from plankton.operations import logsetup
from plankton.operations.alerts import Outbox
from plankton.operations.leader import Leadership
from plankton.settings import Settings
from plankton.states import RUN_ENDED, RunStatus, TaskState

if TYPE_CHECKING:  # pragma: no cover
    from scheduler.cron import CronFirer

log = logging.getLogger("plankton.scheduler")

#: How often the leader checks that Redis is still the server it last worked on (s).
IDENTITY_EVERY = 1.0
#: A task ready this long without being enqueued by the worker that released it is
#: enqueued by the scheduler (ms).
READY_GRACE_MS = 2000
#: Ended runs settled per tick.
SETTLE_PER_TICK = 20
_s = codec.text


class Scheduler:
    """One scheduler process; several may run, one leads."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.name = name
        self.clock = clock
        self.conn = connect(settings.url)
        self.blocking = connect(settings.url, blocking=True)
        self.transitions = Transitions(self.conn)
        #: Runs whose records could not be read: logged once each, skipped.
        self.bad_runs: set[str] = set()
        self.enqueuer = Enqueuer(self.conn)
        self.stop_requested = False
        self.leader: Leadership | None = None
        self.epoch: int | None = None
        #: Fires the scheduled DAGs (set by main; None: no cron firing).
        self.cron: CronFirer | None = None
        #: Webhook outbox: ended runs' deliveries are recorded when settled (set by main).
        self.outbox: Outbox | None = None
        #: Redis was unreachable on the last pass (the next one reconciles first).
        self._redis_down = False
        #: When reaping may resume after Redis came back (monotonic s): a lease outage is
        #: not a lost worker.
        self._reap_after = 0.0
        #: Job ids seen on an intermediate list -> when first seen (monotonic s).
        self._intermediate_seen: dict[str, float] = {}

    # -- leadership ----------------------------------------------------------------------
    def _lead(self) -> bool:
        if self.leader is None:
            token = f"{self.name}-{uuid.uuid4().hex[:8]}"
            self.leader = Leadership(self.conn, token, self.settings.leader_lease_ms)
        epoch = self.leader.acquire_or_renew()
        if epoch != self.epoch:
            if epoch is not None:
                log.info("scheduler %s leads (epoch %s)", self.name, epoch)
            elif self.epoch is not None:
                log.warning("scheduler %s lost the lead", self.name)
            self.epoch = epoch
        return epoch is not None

    # -- loop ----------------------------------------------------------------------------
    def run_forever(self) -> None:
        next_tick = 0.0
        next_lead = 0.0
        next_identity = 0.0
        leading = False
        while not self.stop_requested:
            try:
                now = time.monotonic()
                if now >= next_lead:
                    leading = self._lead()
                    next_lead = now + self.settings.leader_lease_ms / 3000
                    if self._redis_down:
                        # Redis is back. Leases are Redis-time deadlines no worker could
                        # renew meanwhile: give them one lease, from now, before reaping.
                        self._reap_after = time.monotonic() + self.settings.lease_ms / 1000
                        self._redis_down = False
                if not leading:
                    time.sleep(min(0.2, self.settings.leader_lease_ms / 5000))
                    continue
                if now >= next_identity:
                    self._check_identity()
                    next_identity = now + IDENTITY_EVERY
                self._take_submissions(timeout=min(0.2, self.settings.reaper_interval))
                if time.monotonic() - now > max(1.0, self.settings.lease_ms / 2000):
                    # a 0.2 s poll took half a lease: Redis hung or restarted under the
                    # client's own retries (or this process was paused); same grace
                    self._reap_after = time.monotonic() + self.settings.lease_ms / 1000
                if time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + self.settings.reaper_interval
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                log.warning("Redis unavailable (%s); retrying", exc)
                self._redis_down = True
                leading = False
                next_lead = 0.0
                time.sleep(0.5)
            except Exception:  # e.g. Redis OOM or a script error: log, go on
                log.exception("scheduler tick failed; retrying")
                time.sleep(0.5)
        if self.leader is not None and self.epoch is not None:
            try:
                self.leader.release()
            except redis.RedisError:
                pass

    def _check_identity(self) -> None:
        """Give every lease one more lease of time if this Redis is not the server the
        leader last worked on.

        A Redis restarted from a snapshot, or a replica promoted by a failover, holds lease
        deadlines written up to a snapshot's age (or a replication lag) ago, while the workers
        that hold them are alive and renewing: reaping at once would declare them lost. The
        outage loop above gives the same grace when this scheduler saw Redis go away; this
        covers the cases it did not (a failover within its client's retries, a scheduler
        started after the restore). The evidence is in Redis: ``keys.REDIS_ID`` holds the
        ``run_id`` of the server it was written on, and a restored or replicated copy of it
        names another server than the one answering."""
        server = str(self.conn.info("server").get("run_id", ""))
        seen = self.conn.get(keys.REDIS_ID)
        if seen is not None and _s(seen) == server:
            return
        if seen is not None:  # None: a Redis Plankton never used, nothing to protect
            log.warning(
                "Redis server changed (run_id %s -> %s: restart, restore or "
                "failover); leases get %.1fs before any is declared lost",
                _s(seen)[:8],
                server[:8],
                self.settings.lease_ms / 1000,
            )
            self._reap_after = max(
                self._reap_after, time.monotonic() + self.settings.lease_ms / 1000
            )
        self.conn.set(keys.REDIS_ID, server)

    def _take_submissions(self, timeout: float) -> None:
        item = self.blocking.blpop([keys.SUBMITTED], timeout=timeout)
        raw: Any = item[1] if item is not None else None
        while raw is not None:
            self.schedule_ready(_s(raw), grace_ms=None)
            raw = self.conn.lpop(keys.SUBMITTED)

    def tick(self) -> None:
        """One pass over every active run (also callable from tests)."""
        settled = 0
        for raw in self.conn.smembers(keys.ACTIVE):
            run_id = _s(raw)
            try:
                with logsetup.task_context(run_id=run_id):  # JSON logs: lines name the run
                    settled += self._tick_run(run_id, settled < SETTLE_PER_TICK)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception as exc:  # one bad run must not stop the others
                if run_id not in self.bad_runs:
                    self.bad_runs.add(run_id)
                    log.error(
                        "run %s: skipped, its records in Redis are malformed: %s", run_id, exc
                    )
        if self.cron is not None:
            self.cron.tick()
        self._reconcile_intermediate()
        self._expire_indexes()

    def _tick_run(self, run_id: str, may_settle: bool) -> int:
        """Reap, promote and enqueue one live run, or settle an ended one (returns 1)."""
        status = self.conn.hget(keys.run(run_id), "status")
        if status is None:
            self.conn.srem(keys.ACTIVE, run_id)
            return 0
        if _s(status) in RUN_ENDED:
            if may_settle:
                self.settle(run_id)
                return 1
            return 0
        # During a grace (Redis came back) leases are not reaped; due retries still move.
        _, promoted = self.transitions.reap(
            run_id,
            backoff_ms(1, self.settings.retry_base, self.settings.retry_cap),
            self.settings.max_lost,
            leases=time.monotonic() >= self._reap_after,
        )
        # Retries made ready just now have no one else to enqueue them: no grace.
        self.schedule_ready(run_id, grace_ms=READY_GRACE_MS, also=promoted)
        return 0

    # -- reconcile -----------------------------------------------------------------------
    def _reconcile_intermediate(self) -> None:
        """Re-deliver jobs whose worker died between dequeue and START.

        A worker's BLMOVE puts the job id on ``<queue>:intermediate``; it claims the job's
        attempts (START) a few ms later and removes the id when done. If it dies in between,
        nothing else would ever run those attempts: they stay 'queued' with no lease, and the
        run hangs. An id seen there for longer than a lease is looked at: if an attempt it
        names is still queued, the job goes back on its queue (START is a compare-and-set,
        so a late original cannot claim twice); otherwise, or if it is not a Plankton job,
        the id is dropped (its attempts hold leases, or ended)."""
        seen = self._intermediate_seen
        now = time.monotonic()
        stuck_after = self.settings.lease_ms / 1000
        current: dict[str, float] = {}
        for raw in self.conn.smembers(transport.RQ_QUEUES):
            qkey = _s(raw)
            ikey = transport.rq_intermediate(qkey)
            for rid in self.conn.lrange(ikey, 0, 999):
                jid = _s(rid)
                first = current[jid] = seen.get(jid, now)
                if now - first >= stuck_after:
                    self._settle_intermediate(qkey, ikey, jid)
                    current.pop(jid, None)
        self._intermediate_seen = current

    def _settle_intermediate(self, qkey: str, ikey: str, jid: str) -> None:
        pairs = transport.job_pairs(self.conn.hget(transport.rq_job(jid), "data"))
        waiting = False
        if pairs is not None:
            run_id, tasks = pairs
            pipe = self.conn.pipeline(transaction=False)
            for t, _ in tasks:
                pipe.hmget(keys.task(run_id, t), "state", "attempt")
            for (_, a), (state, attempt) in zip(tasks, pipe.execute()):
                if _s(state) == TaskState.QUEUED and _s(attempt) == str(a):
                    waiting = True
        tx = self.conn.pipeline(transaction=True)
        tx.lrem(ikey, 1, jid)
        if waiting:
            log.warning(
                "job %s was dequeued by a worker that died before starting it; delivering it again",
                jid,
            )
            tx.rpush(qkey, jid)
        elif pairs is not None:
            tx.delete(transport.rq_job(jid))
        tx.execute()

    # -- enqueue -------------------------------------------------------------------------
    def workers_alive(self) -> int:
        return liveness.live_workers(self.conn, self.settings.heartbeat, self.clock())

    def schedule_ready(
        self, run_id: str, grace_ms: int | None, also: list[str] | tuple[str, ...] = ()
    ) -> int:
        """Enqueue the run's ready tasks (all, or those ready for longer than grace_ms,
        plus the tasks in ``also``)."""
        hi = "+inf" if grace_ms is None else int(self.clock() * 1000) - grace_ms
        ready = [_s(t) for t in self.conn.zrangebyscore(keys.ready(run_id), "-inf", hi)]
        ready += [t for t in also if t not in ready]
        if not ready:
            return 0
        pipe = self.conn.pipeline(transaction=False)
        for t in ready:
            pipe.hmget(keys.task(run_id, t), "attempt", "queue", "state")
        items = [
            (t, int(a), _s(q))
            for t, (a, q, st) in zip(ready, pipe.execute())
            if _s(st) == TaskState.READY and a is not None
        ]
        size = batch_size(len(items), self.workers_alive())
        done = self.enqueuer.enqueue_many(run_id, items, size)
        log.debug(
            "run %s: enqueued %d of %d ready tasks (batch %d)", run_id, done, len(items), size
        )
        return done

    # -- retention -----------------------------------------------------------------------
    def settle(self, run_id: str) -> None:
        """Finish the books of an ended run and start its retention clock."""
        if self.outbox is not None and self.epoch is not None:
            self.outbox.enqueue(run_id, self.epoch)  # once per run end, fenced
        n = int(self.conn.hget(keys.run(run_id), "n_tasks") or 0)
        ids = [str(i) for i in range(n)]
        for i in range(0, n, 500):
            self.transitions.settle(run_id, ids[i : i + 500])
        ttl = max(1, int(self.settings.keep_days * 86400))
        # A run that did not succeed keeps its channels a while: a resume reuses the values
        # of its succeeded tasks from them (plankton/runs/resume.py, docs/resume.md).
        keep = (
            max(1, int(self.settings.resume_keep_days * 86400))
            if self.settings.resume_keep_days > 0
            else 0
        )
        if keep > 0 and _s(self.conn.hget(keys.run(run_id), "status")) == RunStatus.SUCCEEDED:
            keep = 0
        pipe = self.conn.pipeline(transaction=False)
        pipe.delete(keys.leases(run_id), keys.retries(run_id), keys.ready(run_id))
        for chunk_start in range(0, n, 1000):
            for tid in ids[chunk_start : chunk_start + 1000]:
                if keep > 0:
                    pipe.expire(keys.channel(run_id, tid), min(keep, ttl))
                else:
                    pipe.unlink(keys.channel(run_id, tid))
                pipe.expire(keys.task(run_id, tid), ttl)
            pipe.execute()
        for key in (
            keys.run(run_id),
            keys.logs(run_id),
            keys.done(run_id),
            keys.enqueue_log(run_id),
            keys.changes(run_id),
        ):
            pipe.expire(key, ttl)
        pipe.srem(keys.ACTIVE, run_id)
        dag = self.conn.hget(keys.run(run_id), "dag")
        if dag:
            cutoff = int((self.clock() - self.settings.keep_days * 86400) * 1000)
            pipe.zremrangebyscore(keys.dag_runs(_s(dag)), "-inf", cutoff)
        pipe.execute()

    def _expire_indexes(self) -> None:
        cutoff = int((self.clock() - self.settings.keep_days * 86400) * 1000)
        self.conn.zremrangebyscore(keys.RUNS, "-inf", cutoff)
