"""The RQ worker class: RQ dequeues, Plankton validates and runs.

RQ's SimpleWorker loop is kept (queues, BLMOVE dequeue, worker registration, signals), but
job execution is Plankton's: a job must name :data:`plankton.engine.transport.ENTRY` with no
instance and no callbacks, and carry ``[run_id, [[task, attempt], ...]]``. Anything else —
a forged job naming ``os.system``, a pickle or JSON payload, a malformed hash — is refused
before anything is imported, recorded failed, and the worker keeps serving.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from rq import worker_registration
from rq.exceptions import StopRequested
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.utils import current_timestamp, now, utcformat
from rq.worker import SimpleWorker, WorkerStatus

from plankton.engine import transport
from plankton.engine.transitions import Transitions
from plankton.engine.transport import MsgpackSerializer, RefusedJob, entry_args, inflate_job
from plankton.operations.stopping import StopDeadline
from workers.executor import Executor

log = logging.getLogger(__name__)

#: How long a refused job stays in RQ's failed registry (s).
REFUSED_TTL = 7 * 86400


class PlanktonJob(Job):
    """RQ's Job, but a payload is inflated only up to ``transport.MAX_JOB_BYTES``: RQ would
    zlib-decompress whatever a job hash holds (a 200 KB zlib bomb became 200 MB)."""

    def restore(self, raw_data: Any) -> Any:
        data = raw_data.get(b"data", raw_data.get("data")) if hasattr(raw_data, "get") else None
        if isinstance(data, bytes):
            inflate_job(data)  # RefusedJob past MAX_JOB_BYTES; RQ then inflates it itself
        return super().restore(raw_data)


def parse_job(job: Job) -> tuple[str, list[tuple[str, int]]]:
    """Validate a job without importing anything; RefusedJob if it is not ours."""
    try:
        func_name = job.func_name
        args = job.args
        instance = job._instance
    except Exception as exc:  # any decode error is a refusal
        raise RefusedJob(f"undecodable job payload ({type(exc).__name__}: {exc})") from None
    run_id, pairs = entry_args(func_name, instance, args, job.kwargs)
    for name in ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name"):
        if getattr(job, name, None):
            raise RefusedJob(f"refused: job names a callback ({getattr(job, name)!r})")
    return run_id, pairs


class PlanktonWorker(SimpleWorker):
    """SimpleWorker whose jobs are Plankton batches run by an :class:`Executor`."""

    serializer = MsgpackSerializer
    job_class = PlanktonJob
    #: RQ doubles its wait after each failed dequeue up to 60 s, so a worker could resume
    #: up to a minute after Redis came back; Plankton's leases want it back in seconds.
    max_connection_wait_time = 2.0
    executor: Executor
    #: Plankton heartbeat (ms, local clock) of this worker name, read before this process
    #: began to beat, and the age after which that holder counts as dead.
    previous_beat_ms: float | None = None
    stale_after_ms: float = 15_000

    def register_birth(self) -> None:
        """RQ refuses a name whose worker key has no death recorded, for up to 8 minutes
        (its TTL). A worker SIGKILLed, or restarted by its supervisor after a task would not
        stop, never records its death, so its successor under the same name would crash-loop.
        Take the name over when its holder is provably dead."""
        if (
            self.connection.exists(self.key)
            and not self.connection.hexists(self.key, "death")
            and self._holder_is_dead()
        ):
            log.warning(
                "worker %s: the previous process with this name is dead; taking over", self.name
            )
            self.connection.hset(self.key, "death", utcformat(now()))
        super().register_birth()  # type: ignore[no-untyped-call]  # rq leaves it unannotated

    def _holder_is_dead(self) -> bool:
        host, pid = self.connection.hmget(self.key, "hostname", "pid")
        host = host.decode() if isinstance(host, bytes) else host
        if host == self.hostname and pid is not None and pid.isdigit():
            old = int(pid)
            if old == os.getpid():
                return True  # a PID namespace reused the PID: that process is gone
            try:
                os.kill(old, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        beat = self.previous_beat_ms
        return beat is None or time.time() * 1000 - beat > self.stale_after_ms

    def execute_job(self, job: Job, queue: Any) -> None:
        self.set_state(WorkerStatus.BUSY)
        try:
            run_id, pairs = parse_job(job)
        except RefusedJob as exc:
            self._refuse(job, queue, str(exc))
            return
        try:
            self.executor.run_batch(run_id, pairs)
        finally:
            self._forget(job, queue, run_id, pairs)
            self.set_state(WorkerStatus.IDLE)

    #: Least time between two of RQ's worker-hash heartbeats (s); see :meth:`heartbeat`.
    rq_beat_every: float = 10.0

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ beats its worker hash three times per job (before and after the dequeue, after
        the job), an HSET and an EXPIRE each: 6 of a job's ~12 round trips. The hash lives
        ``worker_ttl + 60`` s (8 minutes) and only RQ's own tools read its ``last_heartbeat``
        (the scheduler reads Plankton's ``plankton:workers``), so one beat every
        :attr:`rq_beat_every` s keeps it alive; a beat with a timeout or a pipeline (RQ's
        own special cases) always goes out."""
        last = self.last_heartbeat
        if (
            timeout is None
            and pipeline is None
            and last is not None
            and (now() - last).total_seconds() < self.rq_beat_every
        ):
            return
        super().heartbeat(timeout, pipeline)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        # Kept in memory: RQ would write the worker hash twice per job, and Plankton's own
        # worker heartbeat (plankton:workers) is what the scheduler reads.
        self._state = state

    def _forget(self, job: Job, queue: Any, run_id: str, pairs: list[tuple[str, int]]) -> None:
        """Drop the job, unless Redis lost the claims of its batch (a rollback to an older
        snapshot restores the job on its queue and its tasks to queued while this batch
        ran): deleting its hash then would strand those tasks for good."""
        if self.executor.transitions.forget(
            run_id, job.id, job.key, queue.intermediate_queue_key, queue.key, pairs
        ):
            log.warning(
                "worker %s: job %s names attempts still queued after its batch "
                "(Redis lost their claims); left on its queue",
                self.name,
                job.id,
            )

    def _refuse(self, job: Job, queue: Any, reason: str) -> None:
        """Record a refused job as failed (RQ's failed registry and, if it names Plankton
        tasks, those tasks) and carry on serving. The registry's add() saves the whole job
        hash from the Job object, so the object must say failed too (it said queued, and RQ's
        own tools showed a refused job as queued)."""
        log.error("worker %s refused job %s: %s", self.name, job.id, reason)
        job._status = JobStatus.FAILED
        pipe = self.connection.pipeline(transaction=False)
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.hset(job.key, mapping={"status": "failed", "exc_info": reason.encode()})
        FailedJobRegistry(queue=queue).add(job, ttl=REFUSED_TTL, exc_string=reason, pipeline=pipe)
        pipe.execute()
        self._fail_named_tasks(job, reason)

    def _fail_named_tasks(self, job: Job, reason: str) -> None:
        try:
            run_id, pairs = job.args
            transitions = Transitions(self.connection)
            for t, a in pairs:
                transitions.fail(str(run_id), str(t), int(a), "refused", reason, 0, 0)
        except Exception:  # a forged job may name nothing real
            pass

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, but a job whose hash cannot even be loaded is refused, not fatal,
        and a stop asked for before it blocks returns at once (see :attr:`_in_dequeue`)."""
        while True:
            try:
                self._in_dequeue = True
                if self._stop_requested:
                    return None
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except Exception as exc:
                job_id = getattr(exc, "job_id", None)
                queue = getattr(exc, "queue", None)
                if job_id is None or queue is None:
                    raise
                log.error("worker %s refused malformed job %s: %s", self.name, job_id, exc)
                pipe = self.connection.pipeline(transaction=False)
                pipe.lrem(queue.intermediate_queue_key, 1, job_id)
                pipe.hset(transport.rq_job(job_id), "status", "failed")
                pipe.zadd(
                    FailedJobRegistry(queue=queue).key, {job_id: current_timestamp() + REFUSED_TTL}
                )
                pipe.execute()
                if self._stop_requested:
                    return None
            finally:
                self._in_dequeue = False

    def run_maintenance_tasks(self) -> None:
        """RQ's periodic maintenance, minus every step that acts on what a job hash names.

        RQ's StartedJobRegistry.cleanup imports and calls the failure callback named by any
        expired entry's job hash, and its intermediate-queue cleanup runs the job's failure
        handling (webhooks, dependents): a forged hash plus one ZADD made a worker import and
        call an arbitrary function at start-up. Plankton never uses the started registry, so
        its expired entries are simply dropped; jobs left in the intermediate queue by a
        worker that died are the scheduler's (it re-delivers or drops them)."""
        for queue in self.queues:
            if not queue.acquire_maintenance_lock():
                continue
            try:
                stamp = current_timestamp()
                self.connection.zremrangebyscore(
                    StartedJobRegistry(queue.name, connection=self.connection).key, 0, stamp
                )
                FinishedJobRegistry(queue.name, connection=self.connection).cleanup(stamp)
                FailedJobRegistry(queue.name, connection=self.connection).cleanup(stamp)
                worker_registration.clean_worker_registry(queue)
            finally:
                queue.release_maintenance_lock()  # type: ignore[no-untyped-call]  # rq: unannotated
        self.last_cleaned_at = now()  # type: ignore[assignment]  # rq declares it None

    def clean_registries(self) -> None:
        self.run_maintenance_tasks()

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    # -- stopping ------------------------------------------------------------------------
    #: True only while the main thread waits in RQ's blocking dequeue: the one place a
    #: signal handler may raise StopRequested. RQ raises it wherever the main thread is
    #: when idle, which can land inside a Redis call or a lock of the executor.
    _in_dequeue: bool = False
    stop_deadline: StopDeadline | None = None
    _stop_asked_at: float = float("-inf")

    def request_stop(self, signum: int, frame: Any) -> None:
        """First SIGTERM/SIGINT: a warm stop, bounded by ``PLANKTON_STOP_GRACE``.

        No new job is taken and no new leaf of the current batch starts (the rest of the
        batch is handed back); running tasks may finish within the grace; then
        :meth:`Executor.shutdown` hands back what is left and the process exits. The
        deadline armed here ends the process at the bound whatever blocks it."""
        log.info("worker %s: warm stop requested (signal %d)", self.name, signum)
        self._shutdown_requested_date = now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self._stop_requested = True
        self._stop_asked_at = time.monotonic()
        self.executor.stop_asked.set()
        if self.stop_deadline is not None:
            self.stop_deadline.arm()
        if self._in_dequeue:
            raise StopRequested()

    def subscribe(self) -> None:
        """No RQ pub/sub thread. It only serves RQ's remote commands (shutdown, kill-horse,
        stop-job), which Plankton does not use (stop with SIGTERM, cancel with
        ``plankton cancel``), and stopping it was the hang of rq/rq#1613: redis-py's
        ``PubSubWorkerThread.stop()`` joins a thread blocked in ``get_message(timeout=60)``.
        It also cost one Redis connection and one thread per worker."""

    def unsubscribe(self) -> None:
        """Nothing to undo: see :meth:`subscribe`."""

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """Second signal: hand every attempt back for an immediate retry, then exit now.

        Tasks are threads of this process, so only leaving the process stops them: a
        SystemExit would be caught by the leaf running on this thread, or leave the process
        waiting on its pool threads until their tasks end."""
        if time.monotonic() - self._stop_asked_at < 1.0:
            return  # the same request twice (the process group's signal and the forwarded one)
        log.warning("worker %s: cold shutdown, handing back running attempts", self.name)
        self.executor.hand_back_all("worker cold shutdown")
        try:
            self.register_death()  # type: ignore[no-untyped-call]  # rq leaves it unannotated
        except Exception:  # best effort; a successor takes the name over anyway
            pass
        logging.shutdown()
        os._exit(0)
