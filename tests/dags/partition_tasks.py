"""Task code for the network-partition test (``--import tests.dags.partition_tasks``).

RELIABILITY §7 #8. The tasks write what they did under ``pk:test:part:*`` keys, which the
test reads back: where each attempt ran (network namespace and host name), how it ended,
and every reply the EMIT script gave to it (OK, DUP, FULL or FENCED).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable

import redis

import plankton as pk
from tests.dags.fault_tasks import _ms, wait_flag
from tests.dags.tasks import env_redis


def _conn() -> redis.Redis:
    return env_redis(socket_timeout=5, socket_connect_timeout=2)


def _persist(conn: redis.Redis, write: Callable[[redis.Redis], Any], within: float = 30) -> Any:
    """``write(conn)``, retried while Redis is unreachable from here (for a record that must
    land even if it is made just as the partition heals)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return write(conn)
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def where() -> str:
    """This process's network namespace and host name: ``net:[inode]|hostname``."""
    return f"{os.readlink('/proc/self/ns/net')}|{socket.gethostname()}"


def replies_key(key: str, attempt: int) -> str:
    return f"pk:test:part:replies:{key}:{attempt}"


class _CountingEngine:
    """Stands in for one attempt's engine inside its runtime: passes every call through and
    counts the EMIT script's replies in Redis, so the test can see the old attempt's late
    writes being refused (FENCED). Only instrumentation: the reply is returned unchanged."""

    def __init__(self, engine: Any, conn: redis.Redis, key: str) -> None:
        self._engine = engine
        self._conn = conn
        self._key = key

    def emit(self, *args: Any) -> str:
        reply = self._engine.emit(*args)
        if reply == "FENCED":
            _persist(self._conn, lambda c: c.hincrby(self._key, reply, 1))
        else:
            try:
                self._conn.hincrby(self._key, str(reply), 1)
            except redis.RedisError:
                pass  # a count lost to the partition itself; the stream is the truth
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class Stream(pk.Task):
    """A streaming leaf. Attempt 1 emits ``[1, k]`` every ``pause`` s for ``seconds``.
    Later attempts emit ``[attempt, k]`` for k < ``n``, then hold until the test opens the
    gate ``pk:test:part:gate:{key}`` (so the run is still live, with this attempt current,
    when the old attempt's late writes arrive), then return ``n``."""

    key = pk.Param(str)
    seconds = pk.Param(float, default=20.0)
    pause = pk.Param(float, default=0.05)
    n = pk.Param(int, default=100)
    hold = pk.Param(float, default=40.0)

    def run(self):
        conn = _conn()
        _persist(
            conn,
            lambda c: c.rpush(
                f"pk:test:part:starts:{self.key}", f"{_ms(c)}|{self.attempt}|{where()}"
            ),
        )
        ctx = getattr(self, "_ctx", None)
        if ctx is not None and hasattr(ctx, "writer"):
            ctx.writer.transitions = _CountingEngine(
                ctx.writer.transitions, conn, replies_key(self.key, self.attempt)
            )
        handed = 0
        outcome = "returned"
        try:
            if self.attempt == 1:
                end = time.monotonic() + self.seconds
                while time.monotonic() < end:
                    self.emit([1, handed])
                    handed += 1
                    time.sleep(self.pause)
                return handed
            for k in range(self.n):
                self.emit([self.attempt, k])
                handed += 1
            self._ctx.flush()
            gate = f"pk:test:part:gate:{self.key}"
            deadline = time.monotonic() + self.hold
            while not conn.exists(gate):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gate {gate} never opened")
                time.sleep(0.02)
            return self.n
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            _persist(
                conn,
                lambda c: c.rpush(
                    f"pk:test:part:ends:{self.key}",
                    f"{_ms(c)}|{self.attempt}|{outcome}|{handed}|{where()}",
                ),
            )


class Gather(pk.Task):
    """The consumer, on queue ``pq`` (served by the host worker only): returns every value
    it read, the multiset the test compares."""

    queue = "pq"

    def run(self):
        return list(self.results())


class Probe(pk.Task):
    """A quick task on the shared queue; returns where it ran."""

    tag = pk.Param(str)

    def run(self):
        return where()


class ProbeA(Probe):
    """Probe on queue ``pa``, served by the partitioned worker only."""

    queue = "pa"


# -- two attempts of one consumer on one worker ---------------------------------------------
class Relapse(pk.Task):
    """Attempt 1 emits ``k`` values, waits until its parent consumed one, then raises.
    Attempt 2 emits ``n`` values, then stays busy ``hold`` s (in short naps) and returns."""

    retries = 1
    key = pk.Param(str)
    k = pk.Param(int, default=5)
    n = pk.Param(int, default=20)
    hold = pk.Param(float, default=7.0)

    def run(self):
        if self.attempt == 1:
            for i in range(self.k):
                self.emit([1, i])
            self._ctx.flush()
            wait_flag(_conn(), f"pk:test:part:seen:{self.key}", "the parent consuming a value")
            raise ValueError("attempt 1 fails after its parent consumed a value")
        for i in range(self.n):
            self.emit([self.attempt, i])
        self._ctx.flush()
        end = time.monotonic() + self.hold
        while time.monotonic() < end:
            time.sleep(0.02)
        return self.n


class DozyGather(pk.Task):
    """A consumer whose attempt 1, on its first value, flags it and then computes for ``nap``
    s in one C call: it learns that it was superseded only afterwards, by which time its
    worker has claimed attempt 2. Records when each attempt stopped and how."""

    key = pk.Param(str)
    nap = pk.Param(float, default=2.0)

    def run(self):
        conn = _conn()
        out: list = []
        outcome = "returned"
        try:
            for value in self.results():
                if not out and self.attempt == 1:
                    conn.set(f"pk:test:part:seen:{self.key}", 1)
                    time.sleep(self.nap)
                out.append(value)
            return out
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            _persist(
                conn,
                lambda c: c.rpush(
                    f"pk:test:part:gather:{self.key}", f"{_ms(c)}|{self.attempt}|{outcome}"
                ),
            )
