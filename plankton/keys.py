"""The Redis key schema: every key and channel name Plankton uses is built here.

All keys start with ``plankton:`` so one ACL pattern (``~plankton:* ~rq:* &rq:*``) covers
them. Every key of one run carries the hash tag ``{run_id}``: each per-run Lua script touches
one slot, so runs can later be spread over Redis Cluster shards without a redesign.

Per run (hash tag ``{R}``):

==============================  ======  ==============================================  =========
key                             type    contents                                        writer
==============================  ======  ==============================================  =========
plankton:{R}:run                hash    the run: fields in RUN_FIELDS below            client,
                                                                                        scripts
plankton:{R}:t:{T}              hash    one task: fields in TASK_FIELDS below           client,
                                                                                        scripts
plankton:{R}:ch:{T}             stream  results channel of parent T: entries with       emit /
                                        c (child), a (attempt), k (kind v|end),          finish
                                        v (msgpack batch), n (count); kept              scripts,
                                        PLANKTON_RESUME_KEEP_DAYS if the run fails      client
                                                                                        (prefill)
plankton:{R}:leases             zset    "T" -> lease deadline, ms of Redis TIME         scripts
plankton:{R}:retry              zset    "T" -> due time of the next attempt, ms         scripts
plankton:{R}:logs               list    msgpack [task, ms, level, line]                 workers
plankton:{R}:done               list    one element pushed when the run ends (waiters)  scripts
plankton:{R}:ready              zset    "T" -> ms since ready (rank for first leaves)    scripts
plankton:{R}:enq                hash    "T:attempt" -> times enqueued (audit, always 1) scripts
plankton:{R}:chg                zset    "T" -> run 'ver' of its last change (delta reads) scripts
plankton:{R}:alerts             hash    webhook destination -> delivery state (alerts)  scheduler
==============================  ======  ==============================================  =========

Global:

==============================  ======  ==============================================
plankton:submitted              list    run ids waiting for a scheduler
plankton:runs                   zset    run id -> submitted ms (all runs, by time)
plankton:dag:{D}:runs           zset    run id -> submitted ms (runs of one DAG)
plankton:active                 set     run ids not yet ended (the scheduler's work list)
plankton:workers                zset    worker name -> last heartbeat ms
plankton:wake:{W}               stream  worker W's wake stream (shared_read; a few
                                        entries, expires an hour after the last)
plankton:redis_id               string  run_id of the Redis server the leader last saw (a
                                        different one: restart, restore, failover)
plankton:leader                 string  the leading scheduler's token (PX lease)
plankton:leader:epoch           string  fencing counter, INCR on each new leadership
plankton:cron:{D}               hash    last_fire: the last fire time handled (epoch s)
plankton:cron:{D}:{TS}          string  run id fired for DAG D at fire time TS (SET NX)
plankton:idem:{K}               string  run id created for an Idempotency-Key
plankton:metrics                hash    counters and histogram buckets (metrics.py)
plankton:waiting:{Q}            zset    "R/T" -> ms queued, tasks queued not started
plankton:waiting                set     queue names that have a waiting zset
plankton:metrics:tags           set     Redis Cluster only: slot tags in use (below)
==============================  ======  ==============================================

Per slot, Redis Cluster only (``slots``): the three metric keys above, once per hash slot that
holds a run, tagged with the short tag ``{S}`` of that slot (the run hash's ``mtag``), so
that the per-run scripts count without leaving their run's slot; the collector sums them.

==============================  ======  ==============================================
plankton:metrics:{S}            hash    as plankton:metrics, for the runs of slot S
plankton:waiting:{S}:{Q}        zset    as plankton:waiting:{Q}
plankton:waiting:{S}            set     as plankton:waiting
plankton:outbox                 zset    webhook delivery (JSON) -> next try, ms (alerts)
==============================  ======  ==============================================

Run and task records expire ``PLANKTON_KEEP_DAYS`` after their run ends. The results
channels of a run that did not succeed are kept ``PLANKTON_RESUME_KEEP_DAYS`` (resume from
failure reuses the values in them); those of a succeeded run are dropped when it ends.
"""

from __future__ import annotations

#: Fields of a run hash (``plankton:{R}:run``) -> what they hold. tests/test_keys_schema.py
#: checks this against what the client and the scripts write: add a field here when you
#: write a new one.
RUN_FIELDS: dict[str, str] = {
    "run_id": "the run's id",
    "dag": "DAG name (or the root task's name for a tree submitted as is)",
    "status": "queued | running | succeeded | failed | cancelled (states.RunStatus)",
    "params": "msgpack: the DAG's params, wire form",
    "since": "window start, ISO ('' if none)",
    "to": "window end, ISO ('' if none)",
    "submitted_at": "ms",
    "started_at": "ms, set by the first START",
    "ended_at": "ms",
    "version": "code version of the DAG's module at submit",
    "rerun_of": "the run this one re-creates ('' if none)",
    "overrides": "msgpack: param overrides of a rerun",
    "trigger": "cron | backfill (absent for runs started by hand)",
    "fire_time": "ISO: the schedule's fire time (cron and backfill runs)",
    "tree_hash": "Merkle hash of the whole tree",
    "root": "task id of the root",
    "n_tasks": "number of tasks",
    "result": "msgpack: the root's return value",
    "error": "why the run failed or was cancelled",
    "ver": "bumped by each script that changes the run (delta reads)",
    "alerted": "ms: the run's end webhooks were recorded (alerts outbox)",
    "mtag": "Redis Cluster only: tag of the run's slot, carried by the metric keys its "
    "scripts count into (slots.run_tag); absent on one Redis (global keys)",
}

#: Fields of a task hash (``plankton:{R}:t:{T}``) -> what they hold (same check as above).
TASK_FIELDS: dict[str, str] = {
    "family": "the task class (module.qualname), resolved through the worker's registry",
    "name": "the class name shown to users",
    "params": "msgpack: params, wire form",
    "param_hash": "SHA-256 of (family, params)",
    "tree_hash": "Merkle hash of the subtree",
    "parent": "parent task id ('' for the root)",
    "children": "msgpack: child task ids",
    "n_children": "number of children",
    "order": "position in the default (depth-first post-order) order",
    "priority": "class priority ('' if none)",
    "queue": "RQ queue name",
    "timeout": "seconds ('' if none)",
    "retries": "retries allowed after a failed attempt",
    "state": "pending | ready | queued | running | retrying | succeeded | failed | cancelled "
    "| skipped (states.TaskState)",
    "attempt": "the current attempt number (fencing: writes of other attempts are refused)",
    "attempts": "attempts started",
    "fails": "attempts that failed (counted against retries)",
    "lost": "attempts lost with their worker (counted against PLANKTON_MAX_LOST)",
    "restarts": "attempts restarted because a child's consumed values were withdrawn",
    "counted": "1 once this task's start was counted in its parent's n_started",
    "n_started": "children started (the parent is released when all have)",
    "n_done": "children succeeded",
    "queued_at": "ms the current attempt was queued",
    "started_at": "ms the current attempt started",
    "ended_at": "ms",
    "worker": "name of the worker running the current attempt",
    "claim": "token of the current claim (START): a worker names its attempt N.TOKEN in "
    "its writes, and only the current claim may write (scripts.fence)",
    "host": "host of that worker",
    "seq": "sequence number of the last batch EMIT accepted (de-duplication)",
    "emitted": "values this attempt emitted",
    "produced": "values appended to this task's own channel by its children",
    "ch_read": "channel values READ has passed (produced - ch_read = unread, the bound)",
    "consumed": "values of current child attempts this attempt took",
    "result": "msgpack: the return value",
    "error": "why the last attempt failed (type, message, traceback)",
    "upstream": "name of the child whose failure for good failed this task",
    "reused_from": "run whose values this task reuses (resume from failure; it did not run)",
}


PREFIX = "plankton"

#: What follows ``plankton:{R}:`` in each key of run R. The Lua scripts derive a run's keys
#: from its run hash (KEYS[1]) with these same suffixes (``scripts._PRELUDE``), so the
#: schema is spelled once, here.
RUN_SFX = "run"
TASK_SFX = "t:"
CHANNEL_SFX = "ch:"
LEASES_SFX = "leases"
RETRY_SFX = "retry"
LOGS_SFX = "logs"
DONE_SFX = "done"
ENQ_SFX = "enq"
CHANGES_SFX = "chg"
READY_SFX = "ready"
ALERTS_SFX = "alerts"


def _of_run(run_id: str, suffix: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:{suffix}"


def run(run_id: str) -> str:
    return _of_run(run_id, RUN_SFX)


def task(run_id: str, task_id: str) -> str:
    return _of_run(run_id, TASK_SFX + task_id)


def channel(run_id: str, parent_id: str) -> str:
    return _of_run(run_id, CHANNEL_SFX + parent_id)


def leases(run_id: str) -> str:
    return _of_run(run_id, LEASES_SFX)


def retries(run_id: str) -> str:
    return _of_run(run_id, RETRY_SFX)


def wake(worker: str) -> str:
    """A worker's wake stream: a consumer starting to wait appends to it so that the worker's
    shared channel read (``shared_read``) includes its channel at once."""
    return f"{PREFIX}:wake:{worker}"


def logs(run_id: str) -> str:
    return _of_run(run_id, LOGS_SFX)


def done(run_id: str) -> str:
    return _of_run(run_id, DONE_SFX)


def enqueue_log(run_id: str) -> str:
    return _of_run(run_id, ENQ_SFX)


def changes(run_id: str) -> str:
    """zset: task id -> the run's ``ver`` at the task's last change (reading.changes)."""
    return _of_run(run_id, CHANGES_SFX)


SUBMITTED = f"{PREFIX}:submitted"
RUNS = f"{PREFIX}:runs"
ACTIVE = f"{PREFIX}:active"
WORKERS = f"{PREFIX}:workers"
#: The scheduler's memory of which Redis server it worked on (scheduler.loop: a restored
#: snapshot or a promoted replica has another ``run_id``: leases get a grace before reaping).
REDIS_ID = f"{PREFIX}:redis_id"
#: Pub/sub channel nobody reads: a PUBLISH to it gives a connection a replicated write to
#: WAIT on after writes made on another pooled connection (plankton/engine/durable.py).
DURABLE = f"{PREFIX}:durable"
LEADER = f"{PREFIX}:leader"
LEADER_EPOCH = f"{PREFIX}:leader:epoch"


#: Counters and histogram buckets, HINCRBY'd by the scripts (see metrics.py).
METRICS = f"{PREFIX}:metrics"
#: Names of the queues that have a ``waiting`` zset.
WAITING_QUEUES = f"{PREFIX}:waiting"
#: Redis Cluster only: the slot tags whose metric keys exist (``slots``; summed by metrics.py).
METRIC_TAGS = f"{PREFIX}:metrics:tags"
#: Webhook deliveries to make: JSON [run id, destination] -> ms of the next try.
OUTBOX = f"{PREFIX}:outbox"


def _tagged(key: str, tag: str) -> str:
    return f"{key}:{{{tag}}}" if tag else key


def metrics(tag: str = "") -> str:
    """The metrics hash: ``METRICS``, or on a Cluster the copy of slot tag ``tag``."""
    return _tagged(METRICS, tag)


def waiting_queues(tag: str = "") -> str:
    """The set of queue names with a waiting zset (``tag``: as in :func:`metrics`)."""
    return _tagged(WAITING_QUEUES, tag)


def waiting(queue: str, tag: str = "") -> str:
    """zset: "run/task" -> ms it was queued, for tasks queued and not yet started."""
    return f"{waiting_queues(tag)}:{queue}"


def alerts(run_id: str) -> str:
    """hash: webhook destination -> delivery state of the run's end (alerts.py)."""
    return _of_run(run_id, ALERTS_SFX)


def dag_runs(dag: str) -> str:
    return f"{PREFIX}:dag:{dag}:runs"


def cron(dag: str) -> str:
    return f"{PREFIX}:cron:{dag}"


def cron_fire(dag: str, fire_ts: int) -> str:
    return f"{PREFIX}:cron:{dag}:{fire_ts}"


def idempotency(key: str) -> str:
    return f"{PREFIX}:idem:{key}"


def ready(run_id: str) -> str:
    """zset: task id -> ms since it is ready (or its rank, for the first leaves)."""
    return _of_run(run_id, READY_SFX)
