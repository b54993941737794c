"""Runs claimed task attempts on threads, with CPU slots, leases, timeouts and fencing.

A worker has ``concurrency`` slots (default 1). A task holds a slot while it computes and
gives it back while it waits on a channel (results() with nothing to read, or emit() into a
full channel), so a single worker can run a whole streaming tree without deadlock. A monitor
thread renews leases, flushes emit buffers that waited too long, enforces timeouts and stops
attempts that were fenced (cancel, restart); a task that will not stop makes the worker
process hand back its other attempts and exit, and the supervisor starts a fresh one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import redis

from plankton import codec, keys
from plankton.authoring.registry import Registry
from plankton.authoring.task import attach
from plankton.engine import liveness, scripts
from plankton.engine.channel import ride_through
from plankton.engine.connection import client_name, connect
from plankton.engine.shared_read import SharedReader
from plankton.engine.transitions import Claimed, Transitions, backoff_ms
from plankton.engine.transport import Enqueuer
from plankton.errors import Fenced, NotFoundError, PlanktonError
from plankton.operations import logsetup
from plankton.settings import Settings
from workers.runtime import Runtime, SlotHold

log = logging.getLogger(__name__)

#: Most tasks a worker runs at once (most of them waiting on channels); parents released
#: beyond this go through RQ to another worker.
MAX_LOCAL_THREADS = 512

#: Threads started with the worker (consumers waiting on their channels, leaves): creating
#: them while a tall tree starts cost the first chain-100 on each worker ~0.8 ms per edge.
PRESTART_THREADS = 128

#: Exit code asking the supervisor for a fresh worker process (a task would not stop).
EXIT_RESTART = 75


class TaskTimeout(BaseException):
    """Raised inside a task's thread when it overruns its ``timeout``.

    A BaseException so that a task's own ``except Exception`` does not swallow it.
    """


class FencedStop(BaseException):
    """Raised inside a task's thread when its attempt was superseded or cancelled."""


def _async_raise(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
        )


class Finisher:
    """Pipelines the FINISH calls of leaves run back to back on one thread.

    A deferred FINISH only delays when the parent sees the leaf's last values and end; the
    attempt keeps its lease until then, and a worker lost before the flush means the leaf
    runs again (its writes from this attempt are then fenced)."""

    #: Flush after this many finished leaves, or when the oldest waited this long (s).
    MAX_TASKS = 64
    MAX_WAIT = 0.02

    def __init__(self, transitions: Transitions) -> None:
        self.transitions = transitions
        self.pending: list[tuple[Any, ...]] = []
        self.since = 0.0

    def add(self, args: tuple[Any, ...]) -> None:
        if not self.pending:
            self.since = time.monotonic()
        self.pending.append(args)

    def flush_if_due(self) -> None:
        if self.pending and (
            len(self.pending) >= self.MAX_TASKS or time.monotonic() - self.since >= self.MAX_WAIT
        ):
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        replies = ride_through(self.transitions.finish_many, batch)
        for args, reply in zip(batch, replies):
            if reply == "FENCED":
                log.info("run %s task %s attempt %s: finish fenced", args[0], args[2], args[3])


class Executor:
    """Owns the task threads and the monitor of one worker process."""

    def __init__(
        self, settings: Settings, registry: Registry, name: str, conn: redis.Redis | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.name = name
        self.queues: list[str] = ["default"]
        self._alone_at, self._alone_value = -10.0, False
        self.host = socket.gethostname()
        # one bounded pool for every task thread: a worker's connections do not grow with
        # the trees it runs (issue 18)
        tag = client_name(name)
        self.conn = conn or connect(
            settings.url, pool_size=max(2, settings.worker_connections), client_name=tag
        )
        self.blocking_conn = connect(
            settings.url, blocking=True, lib_name=None, lib_version=None, client_name=tag
        )
        #: Every consumer waiting on an empty channel waits in this one read (one connection).
        self.shared_reader = SharedReader(self.blocking_conn, self.conn, keys.wake(name))
        self.transitions = Transitions(self.conn, settings.wait_replicas, settings.wait_ms)
        self.enqueuer = Enqueuer(self.conn)
        self.slots = threading.Semaphore(max(1, settings.concurrency))
        self.pool = ThreadPoolExecutor(max_workers=4096, thread_name_prefix="task")
        self._prestart(PRESTART_THREADS)
        #: Running attempts by (run, task, attempt): two attempts of one task can be here at
        #: once (a superseded one still winding down, and its successor, claimed here too).
        self.active: dict[tuple[str, str, int], Runtime] = {}
        #: Attempts claimed by START and not yet ended here (waiting for their turn in a
        #: batch, or finished with a FINISH not yet flushed): their leases are renewed too.
        self.held: set[tuple[str, str, int]] = set()
        #: How each claim held here names its attempt in writes (``Claimed.fence``: number and
        #: claim token), by (run, task, attempt).
        self.fences: dict[tuple[str, str, int], str] = {}
        self.active_lock = threading.Lock()
        self.stopping = threading.Event()
        #: Set by the first SIGTERM: no new leaf starts; see :meth:`shutdown`.
        self.stop_asked = threading.Event()
        self.parent_pid = os.getppid()
        self._kill_at: dict[tuple[str, str, int], float] = {}
        self.monitor = threading.Thread(target=self._monitor, name="monitor", daemon=True)
        self.monitor.start()

    def _prestart(self, n: int) -> None:
        """Start ``n`` pool threads now (each waits until all are up, so none is reused)."""
        go = threading.Event()
        futures = [self.pool.submit(go.wait, 5.0) for _ in range(n)]
        go.set()
        for future in futures:
            future.result()

    # -- slots ---------------------------------------------------------------------------
    def acquire_slot(self) -> None:
        self.slots.acquire()

    def release_slot(self) -> None:
        self.slots.release()

    # -- batches -------------------------------------------------------------------------
    def run_batch(self, run_id: str, pairs: Sequence[tuple[str, int]]) -> None:
        """Claim a batch, release parents whose children all started, run the claimed tasks.

        Tasks with children run on their own threads without taking a CPU slot (they are
        consumers and mostly wait on channels). Leaves take the slot and run right here, one
        after the other, and their FINISH calls go out pipelined in groups: a batch of short
        leaves costs a fraction of a round trip each. Returns once every task of the batch
        has finished or is waiting on a channel.
        """
        budget = (
            max(0, MAX_LOCAL_THREADS - self.running_count()) if self.settings.claim_parents else 0
        )
        claimed, released = self.transitions.start(
            run_id,
            self.name,
            self.settings.lease_ms,
            pairs,
            self.queues,
            budget,
            self.host,
            self.settings.claim_parents >= 2 or self._alone(),
        )
        leaves = self._take(run_id, claimed, released)
        if leaves:
            finisher = Finisher(self.transitions)
            hold = SlotHold(self.slots)
            try:
                for i, claim in enumerate(leaves):
                    if self.stop_asked.is_set():
                        # a warm stop runs no new leaf: the rest of the batch is handed
                        # back now, for another worker to retry at once
                        self._hand_back(
                            [(c.run_id, c.task_id, c.attempt) for c in leaves[i:]], "worker stopped"
                        )
                        break
                    hold.acquire()
                    self._execute(claim, hold, finisher)
                    finisher.flush_if_due()
            finally:
                finisher.flush()
                hold.release()
                with self.active_lock:
                    for claim in leaves:
                        key = (claim.run_id, claim.task_id, claim.attempt)
                        self.held.discard(key)
                        self.fences.pop(key, None)
        self.acquire_slot()
        self.release_slot()

    def _take(
        self, run_id: str, claimed: list[Claimed], released: list[tuple[str, int, str]]
    ) -> list[Claimed]:
        """Hold what START claimed, enqueue the parents it released, start the consumers on
        their threads; returns the leaves (the caller runs them)."""
        with self.active_lock:
            for claim in claimed:
                key = (claim.run_id, claim.task_id, claim.attempt)
                self.held.add(key)
                self.fences[key] = claim.fence
        if released:
            self.enqueuer.enqueue_many(run_id, released, batch=len(released))
        leaves = []
        for claim in claimed:
            if claim.n_children == 0:
                leaves.append(claim)
                continue
            # A task with children is a consumer: it starts without a CPU slot (it would only
            # wait on its channel), so starting a tall tree never queues behind itself.
            self.pool.submit(self._execute, claim, SlotHold(self.slots))
        return leaves

    def adopt(self, run_id: str, parent: str, attempt: int, queue: str) -> bool:
        """Start a queued consumer here: a producer running here emits, and no worker has
        taken the consumer from RQ for ``scripts.ADOPT_AFTER_MS`` (``channel.Adopt``).

        Why: a leaf's parent goes through RQ (``PLANKTON_CLAIM_PARENTS=1``), so that an idle
        worker runs it in another process, beside its producer rather than under the same
        GIL (stream-100k: 1.3M -> 2.2M values/s on 2 workers). When every worker is busy, it
        waits in RQ (its producers up to the channel's cap); once it has waited
        ``scripts.ADOPT_AFTER_MS`` the producer's worker starts it on a thread of its own (as
        ``PLANKTON_CLAIM_PARENTS=2`` does at once), so the channel stays bounded and streaming
        and no producer waits for a consumer that no worker is free to start. False: not
        here (a warm stop, claiming off, or a queue this worker does not serve)."""
        if (
            self.settings.claim_parents < 1
            or queue not in self.queues
            or self.stop_asked.is_set()
            or self.stopping.is_set()
        ):
            return False
        budget = max(0, MAX_LOCAL_THREADS - self.running_count())
        claimed, released = self.transitions.start(
            run_id,
            self.name,
            self.settings.lease_ms,
            [(parent, attempt)],
            self.queues,
            budget,
            self.host,
            False,
        )
        self._take(run_id, claimed, released)  # parents only: each starts on its own thread
        if claimed:
            log.info(
                "run %s: started consumer %s here (no worker took it from RQ within %d ms)",
                run_id,
                parent,
                scripts.ADOPT_AFTER_MS,
            )
        return True

    def _alone(self) -> bool:
        """No other live worker (checked at most once a second)."""
        now = time.monotonic()
        if now - self._alone_at > 1.0:
            try:
                self._alone_value = liveness.live_workers(self.conn, self.settings.heartbeat) <= 1
            except redis.RedisError:
                self._alone_value = False
            self._alone_at = now
        return self._alone_value

    def _execute(self, claim: Claimed, hold: SlotHold, finisher: "Finisher | None" = None) -> None:
        """Run one attempt; a leaf's ``hold`` is the batch loop's and stays with it."""
        rt = Runtime(
            claim,
            self.transitions,
            self.blocking_conn,
            self.settings,
            hold,
            self.shared_reader,
            self.adopt,
        )
        rt.thread = threading.current_thread()
        key = (claim.run_id, claim.task_id, claim.attempt)
        with self.active_lock:
            self.active[key] = rt
        tagged = logsetup.tag(
            run_id=claim.run_id, task_id=claim.task_id, attempt=claim.attempt, task=claim.name
        )
        try:
            self._run_attempt(rt, finisher)
        except (Fenced, FencedStop):
            log.info("%s: attempt %d stopped (fenced)", rt.where, claim.attempt)
        except BaseException as exc:  # every failure is recorded, then we go on
            if finisher is not None:
                # the leaves before this one in the batch succeeded first: their deferred
                # FINISHes go out before this failure (which may end the run), not after it
                finisher.flush()
            self._record_failure(rt, exc)
        finally:
            rt.writer.drop()  # a batch sent ahead by an attempt that did not finish
            with self.active_lock:
                self.active.pop(key, None)
                self._kill_at.pop(key, None)
                if finisher is None:
                    self.held.discard(key)
                    self.fences.pop(key, None)
            self._push_logs(rt)
            if finisher is None:
                hold.release()
            logsetup.untag(tagged)

    def _run_attempt(self, rt: Runtime, finisher: "Finisher | None" = None) -> None:
        claim = rt.claim
        task = self._build_task(claim)
        attach(task, rt)
        # the channel ends themselves: one call level less per value
        task.emit, task.results = rt.writer.emit, rt.reader.values
        task.run_id, task.task_id, task.attempt = claim.run_id, claim.task_id, claim.attempt
        if claim.timeout:
            rt.deadline = time.monotonic() + claim.timeout
        result = task.run()
        rt.deadline = None
        blob = codec.check_value(result, f"{rt.where} result", self.settings.max_value_bytes)
        args = rt.writer.finish_args(blob, *rt.reader.finish_info())
        self._push_logs(rt)
        if finisher is not None:
            finisher.add(args)
            return
        rt.writer.finish(args)

    def _build_task(self, claim: Claimed) -> Any:
        try:
            cls = self.registry.task_class(claim.family)
        except NotFoundError:
            raise PlanktonError(
                f"task family {claim.family} is not registered on worker {self.name}; "
                f"imports: {', '.join(self.registry.modules) or 'none'}"
            ) from None
        wire = codec.loads(claim.params) if claim.params else {}
        params = {
            k: cls._params[k].from_wire(v, claim.name) for k, v in wire.items() if k in cls._params
        }
        unknown = set(wire) - set(cls._params)
        if unknown:
            raise PlanktonError(f"{claim.family} no longer has param(s) {sorted(unknown)}")
        return cls(**params)

    def _record_failure(self, rt: Runtime, exc: BaseException) -> None:
        if rt.fenced:
            return
        claim = rt.claim
        kind = "timeout" if isinstance(exc, TaskTimeout) else "error"
        cls = self.registry.tasks.get(claim.family)
        if cls is not None and cls.fatal_errors and isinstance(exc, cls.fatal_errors):
            kind = "fatal"  # the task says retrying cannot help (bad input data, say)
        text = self._describe(exc, rt)
        log.warning("%s attempt %d failed: %s", rt.where, claim.attempt, text.splitlines()[0])
        rt.fenced = True
        ride_through(
            self.transitions.fail,
            claim.run_id,
            claim.task_id,
            claim.fence,
            kind,
            text,
            backoff_ms(claim.attempt, self.settings.retry_base, self.settings.retry_cap),
            self.settings.max_lost,
        )

    @staticmethod
    def _describe(exc: BaseException, rt: Runtime) -> str:
        if isinstance(exc, TaskTimeout):
            return (
                f"TimeoutError: attempt {rt.claim.attempt} ran over its timeout of "
                f"{rt.claim.timeout}s"
            )
        head = f"{type(exc).__name__}: {exc}"
        return head + "\n" + "".join(traceback.format_exception(exc))[-8000:]

    def _push_logs(self, rt: Runtime) -> None:
        lines = rt.take_logs()
        if lines:
            try:
                self.conn.rpush(keys.logs(rt.claim.run_id), *lines)
            except redis.RedisError:
                log.warning("could not store %d log lines of %s", len(lines), rt.where)

    # -- monitor -------------------------------------------------------------------------
    def _monitor(self) -> None:
        next_renew = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            with self.active_lock:
                runtimes = list(self.active.values())
            if os.getppid() != self.parent_pid:
                log.error("supervisor is gone; handing back attempts and exiting")
                self.hand_back_all("worker orphaned")
                os._exit(EXIT_RESTART)
            try:
                for rt in runtimes:
                    rt.writer.flush_if_old(now)
                self._check_deadlines(runtimes, now)
                if now >= next_renew:
                    next_renew = now + self.settings.heartbeat
                    self._renew(runtimes)
            except Exception:  # the monitor must outlive any one failure
                log.exception("worker monitor: error (carrying on)")
                time.sleep(0.1)
            # Never negative: this thread may wait longer than _next_wake's 2 ms margin for
            # the GIL, and the ValueError of a negative sleep would end the monitor (no more
            # lease renewals, so every attempt of this worker would be declared lost).
            time.sleep(max(0.0, self._next_wake(runtimes, next_renew) - time.monotonic()))

    def _next_wake(self, runtimes: list[Runtime], next_renew: float) -> float:
        """When the monitor has something to do: a buffer to flush, a deadline, a renewal.

        Sleeping until then (at most 0.1 s, for the orphan check) instead of polling keeps
        many idle or sleeping tasks from costing CPU on a crowded host."""
        now = time.monotonic()
        wake = min(next_renew, now + 0.1)
        for rt in runtimes:
            due = rt.writer.due_at()
            if due is not None and not rt.fenced:
                wake = min(wake, due)
            if rt.deadline is not None:
                wake = min(wake, rt.deadline)
        for at in list(self._kill_at.values()):
            wake = min(wake, at)
        return max(wake, now + 0.002)

    def _renew(self, runtimes: list[Runtime]) -> None:
        with self.active_lock:
            attempts = set(self.held)
        attempts.update((rt.claim.run_id, rt.claim.task_id, rt.claim.attempt) for rt in runtimes)
        newest: dict[tuple[str, str], int] = {}
        for run_id, task_id, attempt in attempts:
            newest[(run_id, task_id)] = max(attempt, newest.get((run_id, task_id), 0))
        for run_id, task_id, attempt in attempts:
            if attempt < newest[(run_id, task_id)]:
                # this worker holds a newer attempt of the task: this one was superseded
                self._stop((run_id, task_id, attempt), FencedStop)
        by_run: dict[str, list[tuple[str, int | str]]] = {}
        for (run_id, task_id), attempt in newest.items():
            by_run.setdefault(run_id, []).append((task_id, self._fence((run_id, task_id, attempt))))
        try:
            self.conn.zadd(keys.WORKERS, {self.name: int(time.time() * 1000)})
            for run_id, pairs in by_run.items():
                for task_id in self.transitions.renew(run_id, self.settings.lease_ms, pairs):
                    self._stop((run_id, task_id, newest[(run_id, task_id)]), FencedStop)
        except redis.RedisError as exc:
            log.warning("lease renewal failed (will retry): %s", exc)

    def _check_deadlines(self, runtimes: list[Runtime], now: float) -> None:
        for rt in runtimes:
            if rt.deadline is not None and now > rt.deadline and not rt.fenced:
                claim = rt.claim
                # recorded first: if Redis is unreachable this raises, and the next pass of
                # the monitor tries again (the task must not run on unrecorded)
                self.transitions.fail(
                    claim.run_id,
                    claim.task_id,
                    claim.fence,
                    "timeout",
                    self._describe(TaskTimeout(), rt),
                    backoff_ms(claim.attempt, self.settings.retry_base, self.settings.retry_cap),
                    self.settings.max_lost,
                )
                rt.fenced = True
                self._stop((claim.run_id, claim.task_id, claim.attempt), TaskTimeout)
        for key, at in list(self._kill_at.items()):
            if now > at and key in self.active:
                log.error(
                    "task %s did not stop within %.1fs; restarting worker",
                    key,
                    self.settings.kill_grace,
                )
                self.hand_back_all("worker restarted: a task would not stop", skip=key)
                os._exit(EXIT_RESTART)

    def _stop(self, key: tuple[str, str, int], exc_type: type[BaseException]) -> None:
        rt = self.active.get(key)
        if rt is None or rt.thread is None or key in self._kill_at:
            return  # raise once: a second, late exception could hit the thread's next task
        rt.fenced = True
        self._kill_at[key] = time.monotonic() + self.settings.kill_grace
        _async_raise(rt.thread, exc_type)

    def hand_back_all(self, reason: str, skip: tuple[str, str, int] | None = None) -> None:
        """Give every running attempt (and every claimed one not started yet) back for an
        immediate retry elsewhere."""
        with self.active_lock:
            runtimes = [rt for k, rt in self.active.items() if k != skip and not rt.fenced]
            waiting = [k for k in self.held if k != skip and k not in self.active]
        todo = [(rt.claim.run_id, rt.claim.task_id, rt.claim.attempt) for rt in runtimes]
        todo += waiting
        for rt in runtimes:
            rt.fenced = True
        self._hand_back(todo, reason)

    def _hand_back(self, attempts: Sequence[tuple[str, str, int]], reason: str) -> None:
        """Fail each (run, task, attempt) as handed back: retried at once, not a failure."""
        for run_id, task_id, attempt in attempts:
            try:
                self.transitions.fail(
                    run_id,
                    task_id,
                    self._fence((run_id, task_id, attempt)),
                    "handback",
                    reason,
                    0,
                    self.settings.max_lost,
                )
            except redis.RedisError:
                pass

    def _fence(self, key: tuple[str, str, int]) -> str:
        """The fence of a claim held here (the bare attempt number if unknown)."""
        fence = self.fences.get(key)
        return fence if fence is not None else str(key[2])

    def running_count(self) -> int:
        with self.active_lock:
            return len(self.active)

    def _computing(self) -> int:
        with self.active_lock:
            return sum(1 for rt in self.active.values() if not rt.waiting)

    def shutdown(self, wait: float | None = None) -> None:
        """Warm stop: let computing tasks finish, hand back those waiting on channels."""
        deadline = None if wait is None else time.monotonic() + wait
        while self._computing():
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.hand_back_all("worker stopped")
        self.stopping.set()
        self.shared_reader.stop()
