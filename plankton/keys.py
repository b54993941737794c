"""The Redis key schema: every key and channel name Plankton uses is built here.

All keys start with ``plankton:`` so one ACL pattern (``~plankton:* ~rq:* &rq:*``) covers
them. Every key of one run carries the hash tag ``{run_id}``: each per-run Lua script touches
one slot, so runs can later be spread over Redis Cluster shards without a redesign.

Per run (hash tag ``{R}``):

==============================  ======  ==============================================  =========
key                             type    contents                                        writer
==============================  ======  ==============================================  =========
plankton:{R}:run                hash    dag, status, params, since, to, submitted_at,   client,
                                        started_at, ended_at, version, rerun_of,        scripts
                                        tree_hash, root, result, error, n_tasks,
                                        ver (bumped by each script that changes it)
plankton:{R}:t:{T}              hash    one task: family, name, params, param_hash,     client,
                                        tree_hash, parent, children, priority, queue,   scripts
                                        state, attempt, attempts, lost, worker,
                                        started_at, ended_at, emitted, consumed,
                                        result, error, n_children, n_started, n_done,
                                        seq, produced, ch_consumed, took:{C}
plankton:{R}:ch:{T}             stream  results channel of parent T: entries with       emit /
                                        c (child), a (attempt), k (kind v|end),          finish
                                        v (msgpack batch), n (count)                    scripts
plankton:{R}:leases             zset    "T" -> lease deadline, ms of Redis TIME         scripts
plankton:{R}:retry              zset    "T" -> due time of the next attempt, ms         scripts
plankton:{R}:logs               list    msgpack [task, ms, level, line]                 workers
plankton:{R}:done               list    one element pushed when the run ends (waiters)  scripts
plankton:{R}:ready              zset    "T" -> ms since ready (rank for first leaves)    scripts
plankton:{R}:took:{T}           hash    child -> attempt whose values parent T read     scripts
plankton:{R}:enq                hash    "T:attempt" -> times enqueued (audit, always 1) scripts
plankton:{R}:chg                zset    "T" -> run 'ver' of its last change (delta reads) scripts
==============================  ======  ==============================================  =========

Global:

==============================  ======  ==============================================
plankton:submitted              list    run ids waiting for a scheduler
plankton:runs                   zset    run id -> submitted ms (all runs, by time)
plankton:dag:{D}:runs           zset    run id -> submitted ms (runs of one DAG)
plankton:active                 set     run ids not yet ended (the scheduler's work list)
plankton:workers                zset    worker name -> last heartbeat ms
plankton:leader                 string  the leading scheduler's token (PX lease)
plankton:leader:epoch           string  fencing counter, INCR on each new leadership
plankton:cron:{D}               hash    last_fire (ISO), next_fire, last_run
plankton:cron:{D}:{TS}          string  run id fired for DAG D at fire time TS (SET NX)
plankton:idem:{K}               string  run id created for an Idempotency-Key
plankton:metrics                hash    counters and histogram buckets (metrics.py)
plankton:waiting:{Q}            zset    "R/T" -> ms queued, tasks queued not started
plankton:waiting                set     queue names that have a waiting zset
plankton:outbox                 zset    webhook delivery (JSON) -> next try, ms (alerts)
==============================  ======  ==============================================

Run and task records expire ``PLANKTON_KEEP_DAYS`` after their run ends.
"""

from __future__ import annotations

PREFIX = "plankton"


def run(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:run"


def task(run_id: str, task_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:t:{task_id}"


def task_prefix(run_id: str) -> str:
    """Prefix of every task hash of a run (Lua scripts append the task id)."""
    return f"{PREFIX}:{{{run_id}}}:t:"


def channel(run_id: str, parent_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:ch:{parent_id}"


def channel_prefix(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:ch:"


def leases(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:leases"


def retries(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:retry"


def logs(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:logs"


def done(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:done"


def enqueue_log(run_id: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:enq"


def changes(run_id: str) -> str:
    """zset: task id -> the run's ``ver`` at the task's last change (runs.changes)."""
    return f"{PREFIX}:{{{run_id}}}:chg"


def run_pattern(run_id: str) -> str:
    """SCAN pattern matching every key of one run."""
    return f"{PREFIX}:{{{run_id}}}:*"


SUBMITTED = f"{PREFIX}:submitted"
RUNS = f"{PREFIX}:runs"
ACTIVE = f"{PREFIX}:active"
WORKERS = f"{PREFIX}:workers"
LEADER = f"{PREFIX}:leader"
LEADER_EPOCH = f"{PREFIX}:leader:epoch"


#: Counters and histogram buckets, HINCRBY'd by the scripts (see metrics.py).
METRICS = f"{PREFIX}:metrics"
#: Names of the queues that have a ``waiting`` zset.
WAITING_QUEUES = f"{PREFIX}:waiting"
#: Webhook deliveries to make: JSON [run id, destination] -> ms of the next try.
OUTBOX = f"{PREFIX}:outbox"


def waiting(queue: str) -> str:
    """zset: "run/task" -> ms it was queued, for tasks queued and not yet started."""
    return f"{PREFIX}:waiting:{queue}"


def alerts(run_id: str) -> str:
    """hash: webhook destination -> delivery state of the run's end (alerts.py)."""
    return f"{PREFIX}:{{{run_id}}}:alerts"


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
    return f"{PREFIX}:{{{run_id}}}:ready"


def took(run_id: str, parent_id: str) -> str:
    """hash: child id -> the child attempt whose values the parent's attempt consumed."""
    return f"{PREFIX}:{{{run_id}}}:took:{parent_id}"
