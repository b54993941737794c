"""The task state transitions, Python side: one method per Lua script of ``scripts``.

Scheduler, workers and clients all go through this class, so each state change is one
round trip and one atomic compare-and-set in Redis.
"""

from __future__ import annotations

import random
import secrets
import socket
from dataclasses import dataclass
from typing import Any, Sequence

import redis

from plankton import codec, keys
from plankton.engine import durable, script_cache, scripts

_s = codec.text


@dataclass
class Claimed:
    """An attempt a worker has claimed: what it needs to run the task."""

    run_id: str
    task_id: str
    attempt: int
    family: str
    params: bytes
    parent: str
    n_children: int
    timeout: float | None
    name: str
    queue: str
    #: The claim token START wrote in the task's ``claim`` (unique per claim).
    token: str = ""

    @property
    def fence(self) -> str:
        """How this claim names its attempt in its writes: ``N.TOKEN`` (see scripts.fence):
        if a Redis rollback lets the attempt be claimed again, only the newest claim writes."""
        return f"{self.attempt}.{self.token}" if self.token else str(self.attempt)


def _finish_keys(run_id: str, parent: str, task: str) -> list[str]:
    """KEYS of FINISH: the run, the parent's channel and the task's own."""
    return [keys.run(run_id), keys.channel(run_id, parent), keys.channel(run_id, task)]


def _emit_keys(run_id: str, parent: str) -> list[str]:
    """KEYS of EMIT: the run and the parent's channel."""
    return [keys.run(run_id), keys.channel(run_id, parent)]


def _adopt_arg(bound: bool) -> int | str:
    """EMIT's adopt_after_ms argument."""
    return scripts.ADOPT_AFTER_MS if bound else ""


def backoff_ms(attempt: int, base: float, cap: float) -> int:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, times 0.5-1.0."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return int(delay * 1000 * (0.5 + random.random() / 2))


@dataclass
class InFlight:
    """An EMIT sent and not yet answered: the connection holding its reply, and its args."""

    conn: Any
    args: tuple[Any, ...]


class Transitions:
    """Registered scripts on one connection."""

    def __init__(self, conn: redis.Redis, wait_replicas: int = 0, wait_ms: int = 1000) -> None:
        """``wait_replicas`` > 0: every FINISH is followed by ``WAIT wait_replicas wait_ms``
        in its round trip (plankton/engine/durable.py, PLANKTON_WAIT_REPLICAS)."""
        self.conn = conn
        self.wait_replicas, self.wait_ms = wait_replicas, wait_ms
        self._start = conn.register_script(scripts.START)
        self._emit = conn.register_script(scripts.EMIT)
        self._finish = conn.register_script(scripts.FINISH)
        self._ack = conn.register_script(scripts.ACK)
        self._fail = conn.register_script(scripts.FAIL)
        self._renew = conn.register_script(scripts.RENEW)
        self._reap = conn.register_script(scripts.REAP)
        self._cancel = conn.register_script(scripts.CANCEL)
        self._settle = conn.register_script(scripts.SETTLE)
        self._forget = conn.register_script(scripts.FORGET)

    def start(
        self,
        run_id: str,
        worker: str,
        lease_ms: int,
        pairs: Sequence[tuple[str, int]],
        queues: Sequence[str] = ("default",),
        local_budget: int = 0,
        host: str = "",
        alone: bool = False,
    ) -> tuple[list[Claimed], list[tuple[str, int, str]]]:
        """Claim queued attempts; parents they release are claimed too, up to
        ``local_budget``, when their queue is in ``queues``; the rest are returned."""
        token = secrets.token_hex(4)
        args: list[Any] = [
            worker,
            lease_ms,
            local_budget,
            "," + ",".join(queues) + ",",
            host or socket.gethostname(),
            1 if alone else 0,
            token,
        ]
        for t, a in pairs:
            args += [t, a]
        claimed_raw, released_raw = self._start(keys=[keys.run(run_id)], args=args)
        claimed = []
        for row in claimed_raw:
            t, attempt, fam, params, parent, n_children, timeout, name, queue = row
            claimed.append(
                Claimed(
                    run_id,
                    _s(t),
                    int(attempt),
                    _s(fam),
                    params or b"",
                    _s(parent),
                    int(n_children or 0),
                    float(timeout) if _s(timeout) else None,
                    _s(name),
                    _s(queue),
                    token,
                )
            )
        released = [(_s(p), int(a), _s(q)) for p, a, q in released_raw]
        return claimed, released

    def emit(
        self,
        run_id: str,
        parent: str,
        task: str,
        attempt: int | str,
        seq: int,
        n: int,
        blob: bytes,
        cap: int,
        bound: bool = False,
    ) -> str:
        """Append a batch to ``parent``'s channel: OK | DUP | FULL | FENCED, or (``bound``)
        ``QUEUED:attempt:queue``: the parent has waited ``scripts.ADOPT_AFTER_MS`` in RQ;
        nothing appended, the caller may start it (until then, FULL past the cap).
        ``attempt``: a number, or a claim's ``fence`` (as every write of a worker)."""
        return _s(
            self._emit(
                keys=_emit_keys(run_id, parent),
                args=[task, attempt, seq, n, blob, cap, _adopt_arg(bound)],
            )
        )

    def emit_send(
        self,
        run_id: str,
        parent: str,
        task: str,
        attempt: int | str,
        seq: int,
        n: int,
        blob: bytes,
        cap: int,
        bound: bool = False,
    ) -> "InFlight":
        """EMIT without waiting for its reply: the command is written to a connection taken
        from the pool, held until :meth:`emit_reply` reads the answer. A producer sends a
        full batch this way and fills the next one while Redis appends it (the round trip
        of a 4,096-value batch was a third of a 100,000-value stream's wall time)."""
        args = (run_id, parent, task, attempt, seq, n, blob, cap, bound)
        pool = self.conn.connection_pool
        conn: Any = pool.get_connection()  # redis-py types its Connection methods loosely
        try:
            conn.send_command(
                "EVALSHA",
                self._emit.sha,
                2,
                *_emit_keys(run_id, parent),
                task,
                attempt,
                seq,
                n,
                blob,
                cap,
                _adopt_arg(bound),
            )
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return InFlight(conn, args)

    def emit_ready(self, sent: "InFlight") -> bool:
        """Whether the reply of ``sent`` has arrived (reading it would not wait)."""
        try:
            return bool(sent.conn.can_read(timeout=0))
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return True  # emit_reply finds the error and releases

    def emit_reply(self, sent: "InFlight") -> str:
        """The reply of an :meth:`emit_send` (as :meth:`emit`'s); the connection goes
        back to the pool whatever happens. A script Redis no longer knows (restart, failover)
        is sent again the ordinary way, which loads it; a lost connection raises redis-py's
        ConnectionError (the caller sends again: EMIT de-duplicates by sequence number)."""
        pool = self.conn.connection_pool
        conn = sent.conn
        try:
            reply = conn.read_response()
        except redis.exceptions.NoScriptError:  # sent again through the Script: it loads
            pool.release(conn)
            return self.emit(*sent.args)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        pool.release(conn)
        if isinstance(reply, redis.ResponseError):
            raise reply
        return _s(reply)

    def emit_drop(self, sent: "InFlight") -> None:
        """Give the connection of an unanswered :meth:`emit_send` back, its reply unread."""
        sent.conn.disconnect()
        self.conn.connection_pool.release(sent.conn)

    def finish(
        self,
        run_id: str,
        parent: str,
        task: str,
        attempt: int | str,
        seq: int,
        n: int,
        blob: bytes,
        result: bytes,
        consumed: int,
        took: bytes = b"",
    ) -> str:
        """End the attempt with its last batch and result: OK | FENCED. ``took``: the child
        attempts its reader took values from (``channel.Reader.finish_info``), validated."""
        if self.wait_replicas > 0:
            return self.finish_many(
                [(run_id, parent, task, attempt, seq, n, blob, result, consumed, took)]
            )[0]
        return _s(
            self._finish(
                keys=_finish_keys(run_id, parent, task),
                args=[task, attempt, seq, n, blob, result, consumed, took],
            )
        )

    def finish_many(self, calls: Sequence[tuple[Any, ...]]) -> list[str]:
        """Several FINISH calls in one pipeline (one round trip)."""

        def fill(pipe: Any) -> None:
            for run_id, parent, task, attempt, seq, n, blob, result, consumed, took in calls:
                pipe.evalsha(
                    self._finish.sha,
                    3,
                    *_finish_keys(run_id, parent, task),
                    task,
                    attempt,
                    seq,
                    n,
                    blob,
                    result,
                    consumed,
                    took,
                )
            if self.wait_replicas > 0:
                durable.add_wait(pipe, self.wait_replicas, self.wait_ms)

        replies = script_cache.execute(self.conn, fill, self._finish)
        if self.wait_replicas > 0:
            durable.short(replies.pop(), self.wait_replicas, "a FINISH")
        return [_s(r) for r in replies]

    def ack_and_read(
        self,
        conn: redis.Redis,
        run_id: str,
        task: str,
        attempt: int | str,
        ch_read: int,
        consumed: int,
        first: bool,
        after: str,
        count: int,
        block_ms: int | None,
    ) -> tuple[str, Any, list[tuple[bytes, dict[bytes, bytes]]]]:
        """The ACK script, then XREAD of ``task``'s own channel after ``after`` (waiting up to
        ``block_ms`` for an entry; None: not at all), in one pipeline on ``conn`` (a
        connection whose reads may block): one round trip, none while entries are there.

        Returns ``('OK', {child: attempt}, entries)`` (the children whose attempt is not 1 if
        ``first``) or ``('FENCED', (state, error, upstream), [])``."""
        key = keys.channel(run_id, task)

        def fill(pipe: Any) -> None:
            pipe.evalsha(
                self._ack.sha,
                2,
                keys.run(run_id),
                key,
                task,
                attempt,
                ch_read,
                consumed,
                1 if first else 0,
            )
            pipe.xread({key: after}, count=count, block=block_ms)

        ack, got = script_cache.execute(conn, fill, self._ack)
        if _s(ack[0]) != "OK":
            return "FENCED", (_s(ack[1]), _s(ack[2]), _s(ack[3])), []
        att = ack[1]
        children = {_s(att[i]): int(att[i + 1]) for i in range(0, len(att), 2)}
        if not got:
            return "OK", children, []
        if isinstance(got, dict):  # RESP3
            return "OK", children, next(iter(got.values()))[0]
        return "OK", children, got[0][1]

    def fail(
        self,
        run_id: str,
        task: str,
        attempt: int | str,
        kind: str,
        error: str,
        backoff: int,
        max_lost: int,
    ) -> str:
        return _s(
            self._fail(
                keys=[keys.run(run_id)],
                args=[task, attempt, kind, error[:20000], backoff, max_lost],
            )
        )

    def renew(
        self, run_id: str, lease_ms: int, pairs: Sequence[tuple[str, int | str]]
    ) -> list[str]:
        args: list[Any] = [lease_ms]
        for t, a in pairs:
            args += [t, a]
        return [_s(t) for t in self._renew(keys=[keys.run(run_id)], args=args)]

    def reap(
        self, run_id: str, backoff: int, max_lost: int, leases: bool = True
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """Declare lost the attempts whose lease expired (unless ``leases`` is False: a grace
        after Redis came back) and make due retries ready."""
        lost, promoted = self._reap(
            keys=[keys.run(run_id)], args=[backoff, max_lost, 1 if leases else 0]
        )
        return [(_s(t), _s(r)) for t, r in lost], [_s(t) for t in promoted]

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> str:
        return _s(self._cancel(keys=[keys.run(run_id)], args=[reason]))

    def forget(
        self,
        run_id: str,
        job_id: str,
        job_key: str,
        intermediate_key: str,
        queue_key: str,
        pairs: Sequence[tuple[str, int]],
    ) -> bool:
        """Drop a job whose batch is over, unless one of its attempts is still queued
        (then it stays on its queue); True if it was kept."""
        args: list[Any] = [job_id]
        for t, a in pairs:
            args += [t, a]
        return bool(
            self._forget(keys=[keys.run(run_id), job_key, intermediate_key, queue_key], args=args)
        )

    def settle(self, run_id: str, task_ids: Sequence[str]) -> int:
        return int(self._settle(keys=[keys.run(run_id)], args=list(task_ids)))
