"""One blocking read per worker process, shared by every consumer waiting on its channel.

Why: a consumer (a parent iterating ``results()``) that finds its channel empty must wait for
its children's next entries. When each consumer waited in its own ``XREAD BLOCK``, each held a
Redis connection for the whole wait, so a worker running a deep tree (chain-100: 99 parents
waiting at once) or many wide ones held one connection per waiting parent: ~150 connections
per worker after a few benchmark rounds, and Redis's default ``maxclients`` (10,000) reached
by ~66 such workers (issue 18). Here one thread per worker holds one connection and waits on
the channels of every consumer that is waiting, in a single ``XREAD BLOCK`` over all of them;
when entries arrive it hands them to the consumers that asked, which go on as if their own
XREAD had returned them (``channel.Reader`` checks and acknowledges them as before).

A consumer that starts waiting wakes the read so it includes the new channel: it appends to
the worker's *wake stream* (``keys.wake``), which the read always includes after the last
entry it saw, so a wake sent at any moment (during the read, or between two reads) ends the
current read or the next one at once: no wake is lost.

Redis Cluster: one XREAD may name keys of one hash slot only; channels of different runs are
in different slots, so on a Cluster this read must be split per node (docs/scaling.md). Plankton
runs on one Redis (or Sentinel) today, where one read covers every channel.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

log = logging.getLogger("plankton.shared_read")

#: Longest single wait of the shared XREAD (ms): a consumer's own timeout is shorter or equal.
BLOCK_MS = 1000
#: The wake stream keeps this many entries (only the newest matters).
WAKE_MAXLEN = 8
#: A worker's wake stream outlives it by this long (ms) when it dies without cleaning up.
WAKE_TTL_MS = 3_600_000

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass
class _Waiter:
    key: str
    after: str
    count: int
    done: threading.Event = field(default_factory=threading.Event)
    entries: list[Entry] = field(default_factory=list)


def _id(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = _s(entry_id).partition("-")
    return int(ms), int(seq or 0)


class SharedReader:
    """Waits on many channels with one connection (``blocking_conn``: its socket timeout
    outlasts ``BLOCK_MS``; only this reader's thread uses it). ``conn`` sends the wakes."""

    def __init__(self, blocking_conn: redis.Redis, conn: redis.Redis, wake_key: str) -> None:
        self.blocking_conn = blocking_conn
        self.conn = conn
        self.wake_key = wake_key
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        #: A wake was sent that the read has not yet taken into account (set by a consumer
        #: that registered, cleared when the read gathers the channels under the lock): the
        #: waiters registered meanwhile need no wake of their own. A tall tree's consumers
        #: all start waiting at once; one wake each cost a read each.
        self._wake_pending = False

    def wait(self, key: str, after: str, count: int, timeout: float) -> list[Entry]:
        """Entries of stream ``key`` after ``after`` (at most ``count``, as XREAD COUNT), or
        [] if none came within ``timeout`` s. Called by consumer threads."""
        waiter = _Waiter(key, after, count)
        with self._lock:
            self._waiters.append(waiter)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="shared-read", daemon=True)
                self._thread.start()
            wake, self._wake_pending = not self._wake_pending, True
        try:
            if wake:
                self._wake()
            waiter.done.wait(timeout)
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return waiter.entries

    def stop(self) -> None:
        self._stopped.set()

    def _wake(self) -> None:
        pipe = self.conn.pipeline(transaction=False)
        pipe.xadd(self.wake_key, {"w": 1}, maxlen=WAKE_MAXLEN, approximate=False)
        pipe.pexpire(self.wake_key, WAKE_TTL_MS)
        pipe.execute()

    def _loop(self) -> None:
        wake_after = "0-0"
        while not self._stopped.is_set():
            with self._lock:
                self._wake_pending = False
                streams: dict[Any, Any] = {}
                count = 1
                for w in self._waiters:
                    old = streams.get(w.key)
                    if old is None or _id(w.after) < _id(old):
                        streams[w.key] = w.after
                    count = max(count, w.count)
            streams[self.wake_key] = wake_after
            try:
                reply = self.blocking_conn.xread(streams, count=count, block=BLOCK_MS)
            except redis.RedisError as exc:  # Redis away: consumers time out and retry
                log.warning("shared channel read failed (retrying): %s", exc)
                self._stopped.wait(0.2)
                continue
            if not reply:
                continue
            by_key = dict(_streams(reply))
            wakes = by_key.pop(self.wake_key, None)
            if wakes:
                wake_after = _s(wakes[-1][0])
            if by_key and self._deliver(by_key):
                # let the consumers just woken run before this thread packs the next read
                # (else they wait for the GIL: a chain's every edge goes through here)
                time.sleep(0)

    def _deliver(self, by_key: dict[str, list[Entry]]) -> int:
        """Hand the entries to their waiters; how many were woken."""
        woken = 0
        with self._lock:
            for w in self._waiters:
                entries = by_key.get(w.key)
                if not entries or w.done.is_set():
                    continue
                after = _id(w.after)
                mine = [e for e in entries if _id(e[0]) > after][: w.count]
                if mine:
                    w.entries = mine
                    w.done.set()
                    woken += 1
        return woken


def _streams(reply: Any) -> list[tuple[str, list[Entry]]]:
    """XREAD's reply as (key, entries): RESP2 ``[[key, entries]]``, RESP3
    ``{key: [entries]}``."""
    if isinstance(reply, dict):
        return [(_s(k), v[0]) for k, v in reply.items()]
    return [(_s(k), v) for k, v in reply]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
