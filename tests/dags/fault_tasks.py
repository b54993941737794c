"""Task code for the fault tests (``--import tests.dags.fault_tasks``) and the soak script.

Tasks write what they did to Redis under ``pk:test:*`` keys (the test reads them back):
attempt start times, the PID that ran an attempt, executions, and "stopped" markers written
from ``finally`` blocks, so a test can see when an attempt really stopped.
"""

from __future__ import annotations

import os
import time

import redis

import plankton as pk
from tests.dags.tasks import env_redis

_conn = env_redis


def _ms(conn: redis.Redis) -> int:
    sec, usec = conn.time()
    return int(sec) * 1000 + int(usec) // 1000


def wait_flag(conn: redis.Redis, key: str, what: str, timeout: float = 20) -> None:
    """Wait until the test (or the parent task) sets ``key``; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not conn.exists(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} never happened")
        time.sleep(0.005)


def _note_start(task: pk.Task, key: str) -> redis.Redis:
    """Record one attempt's start: Redis time (ms), attempt, PID; count the execution."""
    conn = _conn()
    conn.rpush(f"pk:test:starts:{key}", f"{_ms(conn)}:{task.attempt}:{os.getpid()}")
    conn.incr(f"pk:test:exec:{key}")
    conn.set(f"pk:test:pid:{key}:{task.attempt}", os.getpid())
    return conn


# -- retries and timeouts ---------------------------------------------------------------
class AlwaysFails(pk.Task):
    """Fails every attempt; records each attempt's start time."""

    retries = 3
    key = pk.Param(str)

    def run(self):
        _note_start(self, self.key)
        raise ValueError(f"attempt {self.attempt} fails")


class FailsTwice(pk.Task):
    """Fails its first two attempts, then succeeds with its attempt number."""

    retries = 3
    key = pk.Param(str)

    def run(self):
        _note_start(self, self.key)
        if self.attempt <= 2:
            raise RuntimeError(f"transient failure in attempt {self.attempt}")
        self.emit(self.attempt)
        return self.attempt


class Naps(pk.Task):
    """Times out: sleeps in short naps (async exceptions land between them)."""

    timeout = 1.0
    retries = 1
    key = pk.Param(str)
    seconds = pk.Param(float, default=30.0)

    def run(self):
        conn = _note_start(self, self.key)
        try:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                time.sleep(0.02)
            return "slept"
        finally:
            conn.rpush(f"pk:test:stopped:{self.key}", f"{_ms(conn)}:{self.attempt}")


class Stubborn(pk.Task):
    """Times out inside one long C call (time.sleep): it cannot be interrupted in-process,
    so the worker must restart itself. Attempts after ``long_attempts`` are quick."""

    timeout = 1.0
    retries = 1
    key = pk.Param(str)
    seconds = pk.Param(float, default=30.0)
    long_attempts = pk.Param(int, default=99)

    def run(self):
        _note_start(self, self.key)
        if self.attempt <= self.long_attempts:
            time.sleep(self.seconds)
        return f"attempt {self.attempt}"


# -- worker loss -------------------------------------------------------------------------
class Drip(pk.Task):
    """Emits ``n`` values ``[tag, k]`` in small batches with pauses (kills land mid-stream)."""

    tag = pk.Param(str)
    n = pk.Param(int, default=200)
    pause = pk.Param(float, default=0.02)
    every = pk.Param(int, default=10)

    def run(self):
        for k in range(self.n):
            self.emit([self.tag, k])
            if self.pause and k % self.every == self.every - 1:
                time.sleep(self.pause)
        return self.n


class Pass(pk.Task):
    """Relays every value it reads."""

    def run(self):
        for value in self.results():
            self.emit(value)


class Bag(pk.Task):
    """Returns every value it read (the multiset the test compares)."""

    def run(self):
        return list(self.results())


class LongBeat(pk.Task):
    """Runs ``seconds`` in short naps (attempts after the first are quick), emitting
    ``[attempt, k]`` as it goes; records its PID per attempt."""

    key = pk.Param(str)
    seconds = pk.Param(float, default=20.0)

    def run(self):
        conn = _note_start(self, self.key)
        span = self.seconds if self.attempt == 1 else 0.2
        end = time.monotonic() + span
        k = 0
        try:
            while time.monotonic() < end:
                self.emit([self.attempt, k])
                k += 1
                time.sleep(0.05)
            return k
        finally:
            conn.rpush(f"pk:test:stopped:{self.key}", f"{_ms(conn)}:{self.attempt}")


class LongSleep(pk.Task):
    """One long C-level sleep in attempt 1 (cannot be interrupted); later attempts quick."""

    key = pk.Param(str)
    seconds = pk.Param(float, default=20.0)

    def run(self):
        _note_start(self, self.key)
        if self.attempt == 1:
            time.sleep(self.seconds)
        return f"attempt {self.attempt}"


class SleepyParent(pk.Task):
    """A task with children (so it runs on a pool thread): reads them, then attempt 1 sleeps
    in one long C call."""

    key = pk.Param(str)
    seconds = pk.Param(float, default=20.0)

    def run(self):
        _note_start(self, self.key)
        got = list(self.results())
        if self.attempt == 1:
            time.sleep(self.seconds)
        return got


class Warm(pk.Task):
    """Works ``seconds`` (short naps), then returns; base of the per-queue variants below."""

    key = pk.Param(str)
    seconds = pk.Param(float, default=2.0)

    def run(self):
        conn = _note_start(self, self.key)
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            time.sleep(0.02)
        conn.set(f"pk:test:finished:{self.key}", self.attempt)
        return f"done {self.key}"


#: One Warm subclass per queue, so a test can place a task on one chosen worker.
WARM_QUEUES = 4
for _i in range(WARM_QUEUES):
    globals()[f"Warm{_i}"] = type(
        f"Warm{_i}",
        (Warm,),
        {"queue": f"warm{_i}", "__module__": __name__, "__qualname__": f"Warm{_i}"},
    )


# -- effectively-once channels -----------------------------------------------------------
class PartialThenFail(pk.Task):
    """Attempt 1 emits ``k`` values, waits until the parent consumed one (flag), then
    raises. Attempt 2 emits ``n`` distinct values and succeeds."""

    retries = 1
    tag = pk.Param(str)
    k = pk.Param(int)
    n = pk.Param(int, default=1000)

    def run(self):
        if self.attempt == 1:
            for i in range(self.k):
                self.emit([self.tag, "a1", i])
            if self.k:
                self._ctx.flush()
                wait_flag(
                    _conn(),
                    f"pk:test:seen:{self.run_id}:{self.tag}",
                    "the parent consuming a value",
                )
            raise ValueError(f"{self.tag}: attempt 1 fails after {self.k} values")
        for i in range(self.n):
            self.emit([self.tag, f"a{self.attempt}", i])
        return self.n


class Tally(pk.Task):
    """Returns the values it read; flags the first one so the child knows it was consumed."""

    tag = pk.Param(str)

    def run(self):
        conn = _conn()
        out = []
        for value in self.results():
            if not out:
                conn.set(f"pk:test:seen:{self.run_id}:{self.tag}", 1)
            out.append(value)
        conn.rpush(f"pk:test:tally:{self.run_id}:{self.tag}", self.attempt)
        return out


class TallyQ(Tally):
    """Tally on queue ``pq`` (its own worker), so it runs while its child waits for it."""

    queue = "pq"


class SlowPass(pk.Task):
    """Relays values slowly (a parent killed mid-read); on queue ``pq``."""

    queue = "pq"
    key = pk.Param(str)
    delay = pk.Param(float, default=0.01)

    def run(self):
        conn = _note_start(self, self.key)
        n = 0
        for value in self.results():
            self.emit(value)
            n += 1
            if n == 50:
                conn.set(f"pk:test:midread:{self.key}:{self.attempt}", n)
            time.sleep(self.delay)
        return n


# -- channel bounds ----------------------------------------------------------------------
def _wait_parent_running(task: pk.Task, timeout: float = 15) -> None:
    """Block until this task's parent is running (DESIGN guarantee 2 bounds a channel while
    its parent runs; before that a producer may run ahead)."""
    conn = _conn()
    prefix = f"plankton:{{{task.run_id}}}:t:"
    parent = conn.hget(prefix + task.task_id, "parent").decode()
    deadline = time.monotonic() + timeout
    while conn.hget(prefix + parent, "state") != b"running":
        if time.monotonic() > deadline:
            raise TimeoutError("parent never started")
        time.sleep(0.005)


class Burst(pk.Task):
    """Emits ``n`` ints as fast as it can, once its parent runs."""

    n = pk.Param(int)
    wait = pk.Param(bool, default=True)

    def run(self):
        if self.wait:
            _wait_parent_running(self)
        for k in range(self.n):
            self.emit(k)
        return self.n


class Sip(pk.Task):
    """A slow parent: sleeps ``nap`` seconds every ``every`` values; returns count and sum."""

    nap = pk.Param(float, default=0.001)
    every = pk.Param(int, default=25)

    def run(self):
        count = total = 0
        for value in self.results():
            count += 1
            total += value
            if count % self.every == 0:
                time.sleep(self.nap)
        return [count, total]


class SipElsewhere(Sip):
    """A slow parent on a queue of its own (no worker serves it unless told)."""

    queue = "elsewhere"


# -- hostile input -----------------------------------------------------------------------
class Big(pk.Task):
    """Emits (or returns) one bytes value of ``size`` bytes."""

    size = pk.Param(int)
    mode = pk.Param(str, default="emit")

    def run(self):
        blob = b"x" * self.size
        if self.mode == "emit":
            self.emit(blob)
            return "emitted"
        return blob


def evil_callback(*args, **kwargs):
    """NOT a task: a forged job naming this as a callback must never make a worker call it."""
    path = os.environ.get("PK_TEST_MARKER")
    if path:
        with open(path, "w") as fh:
            fh.write("callback ran\n")


@pk.dag
def drip_tree(leaves: int = 6, n: int = 200, pause: float = 0.02):
    """root Bag <- Pass <- Drip leaves (three levels, streaming)."""
    mids = []
    for j in range(0, leaves, 2):
        mid = Pass()
        mid.add_children(
            *(Drip(tag=f"t{i}", n=n, pause=pause) for i in range(j, min(j + 2, leaves)))
        )
        mids.append(mid)
    return Bag().add_children(*mids)


@pk.dag
def wide(groups: int = 20, per: int = 9, pause: float = 0.02):
    """root Bag <- groups x Pass <- per x Drip(n=5): about 200 tasks."""
    return Bag().add_children(
        *(
            Pass().add_children(
                *(Drip(tag=f"g{g}l{i}", n=5, pause=pause, every=1) for i in range(per))
            )
            for g in range(groups)
        )
    )


def expected_drip(leaves: int, n: int) -> list:
    return sorted([f"t{i}", k] for i in range(leaves) for k in range(n))
