"""Task code for the Redis rollback test (``--import tests.dags.rollback_tasks``).

A rollback (an old RDB restored) erases whatever the tasks wrote to Redis after the
snapshot, ``pk:test:*`` counters included, so these tasks keep their own record outside
Redis: one line per attempt start and stop ("end" when ``run`` returned, "stop" when it
raised: fenced, cancelled), appended to the file named by ``PK_RB_JOURNAL``
(``O_APPEND`` writes of one short line do not interleave). The test reads it back to count
how often each (run, task, attempt) really started, and whether two executions of one
attempt overlapped, whatever Redis remembers.

The tree is the duplicate detector of RELIABILITY §7: leaves emit ``[tag, k]`` pairs, relays
pass them on, and the root returns every value it read, so the test can compare the root's
multiset with the expected one exactly.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Iterator

import plankton as pk

JOURNAL_ENV = "PK_RB_JOURNAL"


def _journal(task: pk.Task, event: str) -> None:
    path = os.environ.get(JOURNAL_ENV)
    if not path:
        return
    line = (
        f"{time.time():.3f} {task.run_id} {task.task_id} {task.attempt} "
        f"{os.getpid()}.{threading.get_ident()} {event}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@contextlib.contextmanager
def _journaled(task: pk.Task) -> Iterator[None]:
    """Journal the attempt's start, and its end or stop (whatever was raised, even the
    BaseExceptions a worker raises in a fenced task's thread)."""
    _journal(task, "start")
    event = "stop"
    try:
        yield
        event = "end"
    finally:
        _journal(task, event)


class RbLeaf(pk.Task):
    """Emits ``n`` values ``[tag, k]`` spread over about ``seconds``."""

    tag = pk.Param(str)
    n = pk.Param(int, default=100)
    seconds = pk.Param(float, default=1.0)

    def run(self):
        with _journaled(self):
            every = 5
            pause = self.seconds * every / max(1, self.n)
            for k in range(self.n):
                self.emit([self.tag, k])
                if k % every == every - 1:
                    time.sleep(pause)
            return self.n


class RbPass(pk.Task):
    """Relays every value it reads. A slow one waits ``delay`` seconds before its first
    read and naps ``nap`` seconds after each value (a consumer behind its producers:
    unread values pile up in its channel)."""

    nap = pk.Param(float, default=0.0)
    delay = pk.Param(float, default=0.0)

    def run(self):
        with _journaled(self):
            time.sleep(self.delay)
            n = 0
            for value in self.results():
                self.emit(value)
                n += 1
                if self.nap:
                    time.sleep(self.nap)
            return n


class RbBag(pk.Task):
    """Returns every value it read: the multiset the test compares."""

    def run(self):
        with _journaled(self):
            return list(self.results())


def tree(
    name: str,
    groups: int = 2,
    per: int = 2,
    n: int = 100,
    seconds: float = 1.0,
    nap: float = 0.0,
    delay: float = 0.0,
) -> RbBag:
    """RbBag <- ``groups`` x RbPass <- ``per`` x RbLeaf: three levels, streaming."""
    return RbBag().add_children(
        *(
            RbPass(nap=nap, delay=delay).add_children(
                *(RbLeaf(tag=f"{name}.c{g}.{i}", n=n, seconds=seconds) for i in range(per))
            )
            for g in range(groups)
        )
    )


def expected(name: str, groups: int = 2, per: int = 2, n: int = 100) -> list[tuple[str, int]]:
    """The multiset the root of ``tree(name, ...)`` must return, as sorted tuples."""
    return sorted(
        (f"{name}.c{g}.{i}", k) for g in range(groups) for i in range(per) for k in range(n)
    )


class RbSleep(pk.Task):
    """Sleeps ``seconds`` and returns 1: an attempt that writes nothing but lease renewals
    (test_lease_restore: a restore then loses none of its writes, only its lease's age)."""

    seconds = pk.Param(float, default=10.0)

    def run(self):
        with _journaled(self):
            time.sleep(self.seconds)
            return 1
