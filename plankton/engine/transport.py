"""RQ as the transport: queues, a msgpack serializer, and atomic batch enqueue.

Plankton owns attempts, leases, retries and fencing; an RQ job only carries a batch of
(task, attempt) pairs of one run to a worker. Every job names the one fixed entry
:data:`ENTRY`; workers refuse any other function, instance or callback before importing
anything (RQ itself would import whatever dotted path a job names).

Enqueueing is one Lua script (``scripts.ENQUEUE``) that moves the tasks from ``ready`` to
``queued`` *and* writes the RQ job hash and pushes its id, so a scheduler or worker that dies
half-way cannot leave a task queued in Plankton but absent from RQ, or enqueued twice.
"""

from __future__ import annotations

import math
import uuid
import zlib
from typing import Any, Sequence

import redis
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.utils import now, utcformat
from rq.worker import Worker

from plankton import codec, keys
from plankton.engine import script_cache, scripts
from plankton.errors import PlanktonError

#: The only func_name a Plankton worker accepts. It is a label, never imported.
ENTRY = "plankton.entry"

#: Largest number of tasks carried by one RQ job.
MAX_BATCH = 64

#: RQ's own keys (``rq:*``), named here from RQ's constants so that no other module spells
#: them: the set of queue keys, a job's hash, and a queue's list of jobs being dequeued.
RQ_QUEUES = Queue.redis_queues_keys


def rq_job(jid: str) -> str:
    """Key of RQ's hash for job ``jid``."""
    return Job.redis_job_namespace_prefix + jid


def rq_worker(name: str) -> str:
    """Key of RQ's hash for worker ``name`` (hostname, pid, queues, ...)."""
    return str(Worker.redis_worker_namespace_prefix) + name


def rq_intermediate(queue_key: str) -> str:
    """Key of RQ's list of the jobs of ``queue_key`` a worker has dequeued (BLMOVE)."""
    return str(IntermediateQueue.get_intermediate_queue_key(queue_key))


#: Largest RQ job payload a worker or scheduler will inflate (bytes). A Plankton job carries a
#: run id and at most MAX_BATCH (task, attempt) pairs: a few KB.
MAX_JOB_BYTES = 1024 * 1024

#: What a job's arguments must be, said in every refusal about them.
_ARGS_SHAPE = "refused: job arguments are not [run_id, [[task, attempt], ...]]"


class RefusedJob(PlanktonError):
    """A job that is not a Plankton batch; the message says why."""


def inflate_job(data: bytes) -> bytes | None:
    """A job hash's ``data`` decompressed, never past MAX_JOB_BYTES (RQ would inflate
    whatever it holds: a 200 KB zlib bomb became 200 MB); None if it is not zlib data.
    RefusedJob if it is larger than that, before or after inflating."""
    if len(data) > MAX_JOB_BYTES:
        raise RefusedJob(
            f"refused: job payload of {len(data)} bytes is over the limit of {MAX_JOB_BYTES}"
        )
    try:
        out = zlib.decompressobj().decompress(data, MAX_JOB_BYTES + 1)
    except zlib.error:
        return None
    if len(out) > MAX_JOB_BYTES:
        raise RefusedJob(f"refused: job payload inflates to over {MAX_JOB_BYTES} bytes")
    return out


def entry_args(
    func_name: Any, instance: Any, args: Any, kwargs: Any
) -> tuple[str, list[tuple[str, int]]]:
    """(run id, [(task, attempt)]) of a job's call, checked without importing anything:
    RefusedJob unless it calls :data:`ENTRY` with exactly [run_id, [[task, attempt], ...]]."""
    if func_name != ENTRY:
        raise RefusedJob(f"refused: job names {func_name!r}, not a Plankton task entry")
    if instance is not None:
        raise RefusedJob("refused: job carries an instance")
    if kwargs:
        raise RefusedJob("refused: job has keyword arguments")
    try:
        run_id, pairs = args
        parsed = [(str(t), int(a)) for t, a in pairs]
    except (TypeError, ValueError):
        raise RefusedJob(_ARGS_SHAPE) from None
    if not isinstance(run_id, str) or not parsed:
        raise RefusedJob(_ARGS_SHAPE)
    return run_id, parsed


def job_pairs(data: Any) -> tuple[str, list[tuple[str, int]]] | None:
    """(run id, [(task, attempt)]) of a Plankton job hash's ``data``; None for anything else.
    Decoded with bounded inflation and msgpack only; nothing named in it is imported."""
    if not isinstance(data, bytes):
        return None
    try:
        raw = inflate_job(data)
        if raw is None:
            return None
        func, instance, args, kwargs = codec.loads(raw)
        return entry_args(func, instance, args, kwargs)
    except Exception:
        return None


class MsgpackSerializer:
    """RQ serializer: msgpack in, msgpack out; no pickle anywhere."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return codec.dumps(obj)

    @staticmethod
    def loads(data: bytes) -> Any:
        return codec.loads(data)


def rq_queue(name: str, conn: redis.Redis) -> Queue:
    """The RQ queue ``name`` with Plankton's serializer."""
    return Queue(name, connection=conn, serializer=MsgpackSerializer)


def job_id(run_id: str, tasks: Sequence[tuple[str, int]]) -> str:
    """A readable, unique job id: run, first task and attempt, and a random suffix."""
    task, attempt = tasks[0]
    return f"{run_id}-{task}-a{attempt}-{uuid.uuid4().hex[:8]}"


def _job_fields(
    conn: redis.Redis, queue: str, jid: str, run_id: str, tasks: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    job = Job.create(
        ENTRY,
        args=[run_id, [[t, a] for t, a in tasks]],
        connection=conn,
        id=jid,
        origin=queue,
        serializer=MsgpackSerializer,
        timeout=-1,
        result_ttl=0,
        failure_ttl=3600,
        description=f"plankton {run_id}",
    )
    fields = job.to_dict()
    fields["status"] = "queued"
    fields["enqueued_at"] = utcformat(now())
    return fields


class Enqueuer:
    """Puts ready attempts of one run on their RQ queues, in batches."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn
        self._script = conn.register_script(scripts.ENQUEUE)
        # Loaded now, so that pipelines can EVALSHA it without a SCRIPT EXISTS round trip.
        self.reload()

    def reload(self) -> None:
        """Load the script again: Redis forgets scripts when it restarts, and a replica
        promoted by a failover never had them (SCRIPT LOAD is not replicated)."""
        script_cache.load(self.conn, self._script)

    def enqueue(self, run_id: str, queue: str, tasks: Sequence[tuple[str, int]]) -> list[str]:
        """Enqueue ``tasks`` (task id, attempt) as one RQ job; returns the tasks enqueued.

        Tasks no longer ready at that attempt (another process got there first) are dropped.
        """
        pending = list(tasks)
        while pending:
            status, bad = self._call(run_id, queue, pending)
            if status == b"OK":
                return [t for t, _ in pending]
            if status == b"ENDED":
                return []
            refused = {b.decode() for b in bad}
            pending = [(t, a) for t, a in pending if t not in refused]
        return []

    def enqueue_many_in(
        self, pipe: Any, run_id: str, items: Sequence[tuple[str, int, str]], batch: float
    ) -> None:
        """Add the ENQUEUE calls of ``items`` to ``pipe`` (tasks known to be ready: they
        are being created in the same transaction)."""
        for q, todo in _by_queue(items).items():
            for part in cut(todo, batch):
                self._call(run_id, q, part, client=pipe)

    def _call(
        self, run_id: str, queue: str, tasks: Sequence[tuple[str, int]], client: Any = None
    ) -> Any:
        q = rq_queue(queue, self.conn)
        jid = job_id(run_id, tasks)
        fields = _job_fields(self.conn, queue, jid, run_id, tasks)
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        args: list[Any] = [jid, q.key, len(fields), *flat]
        for t, a in tasks:
            args += [t, a]
        script_keys = [keys.run(run_id), rq_job(jid), q.key, RQ_QUEUES]
        if client is not None:
            return client.evalsha(self._script.sha, len(script_keys), *script_keys, *args)
        return self._script(keys=script_keys, args=args)

    def enqueue_many(self, run_id: str, items: Sequence[tuple[str, int, str]], batch: float) -> int:
        """Enqueue (task, attempt, queue) items in order, about ``batch`` tasks per RQ job
        (:func:`cut`)."""
        done = 0
        for q, todo in _by_queue(items).items():
            for part in cut(todo, batch):
                done += len(self.enqueue(run_id, q, part))
        return done


def _by_queue(items: Sequence[tuple[str, int, str]]) -> dict[str, list[tuple[str, int]]]:
    """Group (task, attempt, queue) items by queue, keeping their order."""
    out: dict[str, list[tuple[str, int]]] = {}
    for t, a, q in items:
        out.setdefault(q, []).append((t, a))
    return out


def batch_size(n_ready: int, n_workers: int) -> float:
    """Mean tasks per RQ job: enough jobs that every worker gets several (even load), but few
    enough that RQ's per-job cost is spread over many tasks. Not rounded: :func:`cut` makes
    ``16 x n_workers`` jobs of it (2,000 tasks for 16 workers: 256 jobs of 7 or 8, not 250 of
    8, which left 6 of 16 workers idle for the last job's length, 6% of scale-io's wall)."""
    return max(1.0, min(float(MAX_BATCH), n_ready / (16 * max(1, n_workers))))


def cut(todo: Sequence[tuple[str, int]], batch: float) -> list[Sequence[tuple[str, int]]]:
    """``todo`` in order, in ``ceil(len / batch)`` parts (``batch`` capped to 1..MAX_BATCH)
    whose sizes differ by at most one, the larger first: the parts taken last are the
    smallest, so the workers finish close together."""
    batch = max(1.0, min(float(MAX_BATCH), batch))
    n = len(todo)
    parts = max(1, math.ceil(n / batch - 1e-9)) if n else 0
    out: list[Sequence[tuple[str, int]]] = []
    i = 0
    for k in range(parts):
        size = n // parts + (1 if k < n % parts else 0)
        out.append(todo[i : i + size])
        i += size
    return out
