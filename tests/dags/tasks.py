"""Task code that test workers import (``--import tests.dags.tasks``)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

import plankton as pk


def env_redis(**options: Any) -> redis.Redis:
    """The test Redis from inside a task (its worker has PLANKTON_REDIS_URL); ``options`` go
    to redis-py (timeouts)."""
    return redis.Redis.from_url(os.environ["PLANKTON_REDIS_URL"], **options)


_conn = env_redis


class Leaf(pk.Task):
    """Emits its index as a short string, and returns it."""

    i = pk.Param(int)

    def run(self):
        self.emit(str(self.i))
        return self.i


class Count(pk.Task):
    """Counts the values its children emit."""

    def run(self):
        return sum(1 for _ in self.results())


class Collect(pk.Task):
    """Returns the sorted values its children emitted."""

    def run(self):
        return sorted(self.results())


class Link(pk.Task):
    """A chain link: passes its child's int on + 1 (a leaf link emits 1)."""

    k = pk.Param(int, default=0)

    def run(self):
        got = list(self.results())
        value = (got[0] + 1) if got else 1
        self.emit(value)
        return value


class Boom(pk.Task):
    """Always fails."""

    def run(self):
        raise ValueError("boom")


class EmitSet(pk.Task):
    def run(self):
        self.emit({1, 2})


class ReturnObject(pk.Task):
    def run(self):
        return object()


class Gate(pk.Task):
    """Emits one value, then waits until its parent has seen it (a Redis flag)."""

    flag = pk.Param(str)

    def run(self):
        self.emit("first")
        conn = _conn()
        deadline = time.monotonic() + 15
        while not conn.exists(self.flag):
            if time.monotonic() > deadline:
                raise TimeoutError("parent did not see the first value while I ran")
            time.sleep(0.01)
        self.emit("second")
        return "done"


class Watcher(pk.Task):
    """Sets the flag when it sees the first value."""

    flag = pk.Param(str)

    def run(self):
        out = []
        conn = _conn()
        for value in self.results():
            if value == "first":
                conn.set(self.flag, 1)
            out.append(value)
        return out


class Many(pk.Task):
    """Emits n distinct values (tag, k)."""

    n = pk.Param(int)
    tag = pk.Param(str, default="v")

    def run(self):
        for k in range(self.n):
            self.emit([self.tag, k])


class Relay(pk.Task):
    """Passes every value on."""

    def run(self):
        for value in self.results():
            self.emit(value)


class Slow(pk.Task):
    """Sleeps, then emits and returns its tag."""

    seconds = pk.Param(float)
    tag = pk.Param(str, default="slow")

    def run(self):
        time.sleep(self.seconds)
        self.emit(self.tag)
        return self.tag


class Logger(pk.Task):
    def run(self):
        self.log.info("hello from %s", "a task")
        self.log.warning("second line")
        return 1


@pk.dag
def fanin(n: int = 10):
    return Count().add_children(*(Leaf(i=i) for i in range(n)))


@pk.dag
def chain(depth: int = 5):
    node = Link(k=0)
    for k in range(1, depth):
        node = Link(k=k).add_children(node)
    return node


@pk.dag
def failing():
    return Collect().add_children(Leaf(i=1), Boom(), Collect().add_children(Leaf(i=2)))


@pk.dag
def stream3(n: int = 3000, leaves: int = 3):
    return Count().add_children(
        *(Relay().add_children(Many(n=n, tag=f"t{j}")) for j in range(leaves))
    )


class Stamp(pk.Task):
    """Records the order in which leaves run (a Redis list)."""

    label = pk.Param(str)

    def run(self):
        _conn().rpush("pk:test:order", self.label)
        self.emit(self.label)


class UrgentStamp(Stamp):
    priority = 10


class FatalBoom(pk.Task):
    """Retries would be allowed, but its error says retrying cannot help."""

    retries = 3
    fatal_errors = (KeyError,)

    def run(self):
        _conn().incr("pk:test:fatal-attempts")
        raise KeyError("missing column")


#: Every kind of value, in the order EmitMixed emits them: small scalars (buffered as they
#: are and packed with their batch) mixed with values encoded at emit().
MIXED = [
    "a",
    7,
    -(2**63),
    2**64 - 1,
    1.5,
    None,
    True,
    b"raw",
    "é" * 3,
    "x" * 65,
    b"y" * 65,
    [1, "two", [3.0]],
    {"k": [None, False]},
    "",
    0,
]


class EmitMixed(pk.Task):
    """Emits MIXED twice, then a list it changes after emit() (sent as it was)."""

    def run(self):
        for value in MIXED + MIXED:
            self.emit(value)
        late = [1, 2]
        self.emit(late)
        late.append(3)


class InOrder(pk.Task):
    """Returns the repr of its children's values in arrival order (bytes stay bytes)."""

    def run(self):
        return [repr(v) for v in self.results()]


class EmitBadScalar(pk.Task):
    """Emits good values, then one msgpack cannot encode (a lone surrogate, a huge int)."""

    kind = pk.Param(str)

    def run(self):
        self.emit("fine")
        self.emit("\ud800" if self.kind == "surrogate" else 2**64)


class UsesSecret(pk.Task):
    """Reads a secret param where it runs; returns only a digest of it, never the value."""

    dsn = pk.Param(pk.Secret)
    note = pk.Param(str, default="")

    def run(self):
        import hashlib

        value = self.dsn.reveal()
        print(f"connecting with {self.dsn!r}")
        return hashlib.sha256(value.encode()).hexdigest()


@pk.dag
def secret_dag(dsn: pk.Secret = pk.Secret("env:PK_TEST_DSN")):
    return UsesSecret(dsn=dsn)


class FailWith(pk.Task):
    """Fails with its own ``msg`` as the error text."""

    msg = pk.Param(str)

    def run(self):
        raise ValueError(self.msg)
