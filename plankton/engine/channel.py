"""The results channel: how a value gets from a child's ``emit()`` to its parent's ``results()``.

A parent's channel is one Redis stream (``keys.channel``). Its two ends live here, each usable
on its own against a real Redis (no worker process needed):

- :class:`Writer`, one per attempt of a child: ``emit()`` buffers values and sends them in
  batches (one msgpack array per batch, encoded by ``codec``) through the EMIT script, which
  fences by attempt, de-duplicates by sequence number and bounds the channel: FULL means wait
  (backpressure), never drop. The last batch rides on FINISH with the result.
- :class:`Reader`, one per attempt of a parent: iterates over the values of its children's
  current attempts, read straight from the stream (XREAD, one round trip per wait with the
  ACK script riding along; consumption is validated at FINISH), and raises
  :class:`~plankton.errors.UpstreamFailed` (from the ``upstream`` field the scripts write:
  data, not text) or :class:`~plankton.errors.Fenced`.

Waiting (a full channel, an empty one) calls the owner's ``begin_wait``/``end_wait`` hooks,
so a worker can give its CPU slot back meanwhile. Every Redis call rides through outages
(:func:`ride_through`): each one is idempotent or fenced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import redis

from plankton import codec, keys
from plankton.engine.shared_read import SharedReader
from plankton.engine.transitions import InFlight, Transitions
from plankton.errors import Fenced, UpstreamFailed
from plankton.states import TaskState

log = logging.getLogger("plankton.channel")

#: Most values per emitted batch, and bytes, before a batch is sent. Each batch costs an
#: EMIT round trip and a wake-up of the parent; 1,000 values per batch left a
#: 100,000-value stream at 305 ms and 4,096 took it to 210 ms (benchmarks/README.md).
BATCH_VALUES = 4096
BATCH_BYTES = 256 * 1024
#: A buffered value waits at most this long before ``flush_if_old`` sends it (s).
FLUSH_AFTER = 0.01
#: Channel entries read per XREAD.
READ_COUNT = 200
#: Values emit() buffers as they are and packs with their batch, in one C call: ASCII str
#: up to this length (packing it cannot fail, and it adds at most BATCH_VALUES * (SMALL + 9)
#: bytes to a batch), 64-bit ints, floats, None and bools. Anything else, bytes included, is
#: checked and encoded at once, so a bad value fails the emit() that gave it and a container
#: changed after emit() is sent as it was; a ``bytes`` item of the buffer is therefore
#: always a value encoded already, joined into its batch as it is.
SMALL = 64
_TINY = frozenset((float, type(None), bool))
_INT_MIN, _INT_END = -(2**63), 2**64
_monotonic = time.monotonic


def batch_values(cap: int) -> int:
    """Values per batch under a channel cap: at most half the cap, so a producer can fill
    one batch while its parent reads the previous one, and unread values stay within
    ``cap + batch_values(cap)`` (the final batch, appended by FINISH, does not wait)."""
    return min(BATCH_VALUES, max(1, cap // 2))


def ride_through(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, retried while Redis is unreachable (restart, failover, partition).

    Every call made through here is idempotent or fenced (EMIT de-duplicates by sequence
    number; ACK + XREAD from the same entry returns the same entries; FINISH of an attempt
    that already finished is FENCED), so retrying is safe. How long to wait is not this
    loop's business: if the outage outlasts the lease, the attempt is superseded and its
    next call, once Redis is back, is FENCED. Without this, a Redis restart longer than
    redis-py's own retries (a few seconds) failed healthy tasks for good."""
    delay = 0.05
    while True:
        try:
            return fn(*args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("Redis unavailable (%s); retrying in %.2fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class Waits(Protocol):
    """What an end of a channel tells its owner around a wait (full or empty channel)."""

    def begin_wait(self) -> None:
        """About to block: a worker gives its CPU slot back here."""

    def end_wait(self) -> None:
        """The wait is over (the slot is not taken again: a fed consumer always runs)."""


class NoWaits:
    """Hooks that do nothing (a channel end used outside a worker, as in tests)."""

    def begin_wait(self) -> None:
        pass

    def end_wait(self) -> None:
        pass


#: ``adopt(run_id, parent, attempt, queue)``: the writer's worker starts that queued attempt of
#: the parent itself (as a worker does at once with ``PLANKTON_CLAIM_PARENTS=2``); returns
#: whether it tried (``workers.executor.Executor.adopt``).
Adopt = Callable[[str, str, int, str], bool]


class Writer:
    """The sending end of one attempt of a task: values go to its parent's channel.

    Parameters: ``transitions`` (the scripts), ``run_id``, ``parent`` ('' for a root: its
    values go nowhere), ``task_id``, ``attempt``, ``cap`` (the channel's bound, unread
    values), ``max_bytes`` (largest encoded value), ``where`` (names the task in errors),
    ``waits`` (hooks around a wait on a full channel), ``fence`` (how the worker's claim
    names the attempt in its writes, ``Claimed.fence``; the bare number by default) and
    ``adopt`` (see :data:`Adopt`: with it, this writer's worker starts a parent released to
    RQ that no worker took within ``scripts.ADOPT_AFTER_MS``; until then the cap holds).
    """

    def __init__(
        self,
        transitions: Transitions,
        run_id: str,
        parent: str,
        task_id: str,
        attempt: int,
        *,
        cap: int,
        max_bytes: int,
        where: str,
        waits: Waits | None = None,
        fence: str | None = None,
        adopt: Adopt | None = None,
    ) -> None:
        self.transitions = transitions
        self.run_id, self.parent, self.task_id, self.attempt = run_id, parent, task_id, attempt
        self.fence = fence or str(attempt)
        self.cap = cap
        self.batch_values = batch_values(cap)
        self.max_bytes = max_bytes
        self.where = where
        self.waits: Waits = waits or NoWaits()
        #: Guards the buffer: the task's thread emits, the flusher thread sends old batches.
        self.lock = threading.Lock()
        #: Never replaced (batches are taken from its head in place): the fast emit() holds it.
        self.buffer: list[Any] = []
        self.buffer_bytes = 0
        #: Items of the buffer encoded at emit() (bytes); 0: pack the list in one call.
        self.packed_items = 0
        #: A limit under any small scalar's size sends every value through the full check.
        self.small_ok = max_bytes >= 2 * SMALL
        self.buffer_since = 0.0
        #: Sequence number of the last batch taken from the buffer, and values in batches.
        self.seq = 0
        self.sent_values = 0
        #: A batch taken from the buffer and not yet accepted by EMIT: (seq, n, blob).
        self.pending: tuple[int, int, bytes] | None = None
        #: A batch whose EMIT is sent and not yet answered (the producer fills the next one
        #: meanwhile): (the send, the batch), and when it was sent.
        self.inflight: tuple[InFlight, tuple[int, int, bytes]] | None = None
        self.inflight_at = 0.0
        #: Set once EMIT refused this attempt (or its owner says it was superseded).
        self.fenced = False
        self.adopt = adopt
        #: EMIT answers QUEUED for a parent waiting in RQ (until the first adoption try).
        self.bound = adopt is not None
        #: emit() sends the buffer when it holds this many values: a batch, or 0 while a
        #: batch refused without waiting (the flusher's) is still to send.
        self.limit = self.batch_values
        self.emit: Callable[[Any], None] = (
            self._fast_emit() if self.small_ok else self._emit_checked
        )

    @property
    def emitted(self) -> int:
        """Every value handed to emit(), buffered or sent."""
        return self.sent_values + len(self.buffer)

    def _fast_emit(self) -> Callable[[Any], None]:
        """``emit(value)`` for the hot path of a stream: buffer ``value``; send a batch when
        full; wait (never drop) on a full channel.

        Small immutable scalars (see SMALL) are appended as they are, without the lock: the
        task's thread is the only one that appends, and a flusher that takes a batch meanwhile
        (under the lock) takes the first ``n`` values in place, so a value appended during
        the take stays for the next batch. Everything else goes through ``_emit_checked``.
        A closure over locals: 0.09 µs per value instead of 0.18 µs (a third of a
        100,000-value stream's producer CPU was this call)."""
        buffer, append, checked, writer = self.buffer, self.buffer.append, self._emit_checked, self
        monotonic, tiny, small, int_min, int_end = _monotonic, _TINY, SMALL, _INT_MIN, _INT_END

        def emit(value: Any) -> None:
            kind = type(value)
            if kind is str:
                if len(value) > small or not value.isascii():
                    return checked(value)
            elif kind is int:
                if not int_min <= value < int_end:
                    return checked(value)
            elif kind not in tiny:
                return checked(value)
            if not buffer:
                writer.buffer_since = monotonic()
            append(value)
            if len(buffer) >= writer.limit:
                writer._full()
            return None

        return emit

    def _emit_checked(self, value: Any) -> None:
        """emit() of any other value: encoded now (a bad value fails the emit() that gave it;
        a container changed after emit() is sent as it was), under the lock."""
        item = codec.check_value(value, self.where, self.max_bytes)
        with self.lock:
            buffer = self.buffer
            if not buffer:
                self.buffer_since = _monotonic()
            buffer.append(item)
            self.packed_items += 1
            self.buffer_bytes += len(item)
            if len(buffer) >= self.limit or self.buffer_bytes >= BATCH_BYTES:
                self._flush_locked(block=True, overlap=True)

    def _full(self) -> None:
        with self.lock:
            self._flush_locked(block=True, overlap=True)

    def flush(self) -> None:
        """Send buffered values; waits (never drops) while the parent's channel is full."""
        with self.lock:
            self._flush_locked(block=True)

    def due_at(self) -> float | None:
        """When ``flush_if_old`` has something to do (monotonic s), or None: a buffer to
        send, or the reply of a batch sent ahead to read (its connection goes back to the
        pool then, even if the task computes for long before its next emit())."""
        if self.fenced:
            return None
        due = self.inflight_at + FLUSH_AFTER if self.inflight is not None else None
        if self.buffer or self.pending is not None:
            since = self.buffer_since + FLUSH_AFTER
            due = since if due is None else min(due, since)
        return due

    def flush_if_old(self, now: float) -> None:
        """Flusher thread: send a batch that waited long enough; never blocks on FULL."""
        due = self.due_at()
        if due is not None and now >= due and self.lock.acquire(False):
            try:
                self._flush_locked(block=False)
            except Fenced:
                pass
            finally:
                self.lock.release()

    def drop(self) -> None:
        """The attempt is over without FINISH (failed, fenced): give back the connection
        of a batch sent ahead, its reply unread."""
        with self.lock:
            if self.inflight is not None:
                sent, self.pending = self.inflight
                self.inflight = None
                self.limit = 0
                self.transitions.emit_drop(sent)

    def final_batch(self) -> tuple[int, int, bytes]:
        """What FINISH appends: (seq, n, blob) of the last batch (pending ones sent first)."""
        with self.lock:
            self._settle(block=True)
            self._send_pending(block=True)
            if not self.buffer:
                return self.seq + 1, 0, b""
            self._take_batch()
            assert self.pending is not None
            batch, self.pending = self.pending, None
            return batch

    def finish_args(self, result: bytes, consumed: int, took: bytes = b"") -> tuple[Any, ...]:
        """The arguments of ``Transitions.finish``/``finish_many`` ending this attempt with
        ``result`` (encoded) and its last batch; ``consumed`` and ``took`` are what the
        attempt's reader read (:meth:`Reader.finish_info`), validated by FINISH."""
        seq, n, blob = self.final_batch()
        return (
            self.run_id,
            self.parent,
            self.task_id,
            self.fence,
            seq,
            n,
            blob,
            result,
            consumed,
            took,
        )

    def finish(self, args: tuple[Any, ...]) -> None:
        """End the attempt now: FINISH with ``args`` (from :meth:`finish_args`); Fenced if the
        attempt was superseded."""
        if ride_through(self.transitions.finish, *args) == "FENCED":
            self.fenced = True
            raise Fenced(self.where, "FINISH refused: the attempt is no longer current")

    def _take_batch(self) -> None:
        """Move the buffer into ``pending`` as one msgpack array (items are encoded already)."""
        buffer = self.buffer
        n = len(buffer)
        items = buffer[:n]
        del buffer[:n]  # in place: see _fast_emit
        blob = codec.pack_batch(items, self.packed_items)
        self.buffer_bytes = self.packed_items = 0
        self.seq += 1
        self.pending = (self.seq, n, blob)
        self.sent_values += n

    def _flush_locked(self, block: bool, overlap: bool = False) -> None:
        """Send what is buffered. ``overlap`` (a full batch in emit()): send it without
        waiting for the reply, read at the next flush; otherwise the values are in the
        channel (or refused) on return."""
        try:
            if not self._settle(block) or not self._send_pending(block):
                return
            if self.buffer:
                self._take_batch()
                if overlap:
                    self._send_ahead()
                else:
                    self._send_pending(block)
        finally:
            self.limit = 0 if self.pending is not None else self.batch_values

    def _send_ahead(self) -> None:
        """EMIT the pending batch and return before Redis answers (``_settle`` reads it)."""
        assert self.pending is not None
        seq, n, blob = self.pending
        try:
            sent = self.transitions.emit_send(
                self.run_id,
                self.parent,
                self.task_id,
                self.fence,
                seq,
                n,
                blob,
                self.cap,
                self.bound,
            )
        except (redis.ConnectionError, redis.TimeoutError):
            self._send_pending(block=True)  # the ordinary way, riding through the outage
            return
        self.inflight, self.pending = (sent, self.pending), None
        self.inflight_at = _monotonic()

    def _settle(self, block: bool) -> bool:
        """Read the reply of the batch sent ahead, if any; True when it was accepted (or
        there was none). Without ``block``, a reply that has not arrived is left."""
        if self.inflight is None:
            return True
        sent, batch = self.inflight
        if not block and not self.transitions.emit_ready(sent):
            return False
        self.inflight = None
        try:
            reply = self.transitions.emit_reply(sent)
        except (redis.ConnectionError, redis.TimeoutError):
            reply = "LOST"  # sent again below: EMIT de-duplicates by seq
        if self._accepted(reply):
            return True
        self.pending = batch  # FULL, QUEUED or lost: sent again the ordinary way
        return self._send_pending(block)

    def _accepted(self, reply: str) -> bool:
        """What an EMIT reply means: True for OK or DUP; FENCED raises; QUEUED adopts the
        parent (then the batch is sent again); FULL (or a lost reply) is False."""
        if reply in ("OK", "DUP"):
            return True
        if reply == "FENCED":
            self.fenced = True
            raise Fenced(self.where, "EMIT refused: the attempt is no longer current")
        if reply.startswith("QUEUED"):
            self._adopt(reply)
        return False

    def _adopt(self, reply: str) -> None:
        """No worker has started the parent, released to RQ ``scripts.ADOPT_AFTER_MS`` ago
        (every worker busy): ask the owner to start it here, then send again (it runs now:
        OK or FULL). Asked once: if it cannot (its queue is not served here) or the parent
        is still queued after that, the channel is not bounded before the parent starts
        (DESIGN guarantee 2 bounds it while the parent runs), so a producer never waits on a
        consumer that no worker here may start."""
        _, attempt, queue = reply.split(":", 2)
        self.bound = False
        if self.adopt is not None:
            self.adopt(self.run_id, self.parent, int(attempt), queue)

    def _send_pending(self, block: bool) -> bool:
        """Send the pending batch; True when nothing is left pending."""
        wait = 0.001
        blocked = False
        try:
            while self.pending is not None:
                seq, n, blob = self.pending
                args = (
                    self.run_id,
                    self.parent,
                    self.task_id,
                    self.fence,
                    seq,
                    n,
                    blob,
                    self.cap,
                    self.bound,
                )
                if block:
                    reply = ride_through(self.transitions.emit, *args)
                else:
                    try:
                        reply = self.transitions.emit(*args)
                    except (redis.ConnectionError, redis.TimeoutError):
                        return False  # the flusher never waits on Redis; the task will
                if self._accepted(reply):
                    self.pending = None
                    return True
                if reply.startswith("QUEUED"):
                    continue  # adopted: sent again at once
                if not block:
                    return False
                if not blocked:
                    blocked = True
                    self.waits.begin_wait()
                time.sleep(wait)
                wait = min(wait * 2, 0.05)
            return True
        finally:
            if blocked:
                self.waits.end_wait()


class Reader:
    """The receiving end of one attempt of a parent: its children's values, as they arrive.

    Parameters: ``transitions``, ``blocking_conn`` (a connection whose reads may block: the
    wait on the stream), ``run_id``, ``task_id`` (the parent), ``attempt``, ``n_children``,
    ``max_bytes``, ``where``, ``waits`` (hooks around a wait on an empty channel), ``fence``
    (as :class:`Writer`'s) and ``shared`` (a worker's :class:`SharedReader`: waits for
    entries there instead of blocking a connection of its own). Iterating yields every value
    of each child's current attempt once, and ends when every child has finished.

    Optimistic: the reader takes entries straight from the stream (XREAD), keeping those of
    each child's current attempt as it knows it (the ACK script gives the children not on
    attempt 1 when it starts; a later attempt seen in the stream supersedes an earlier one).
    Each XREAD rides in one pipeline with an ACK (fencing, the channel's read count for the
    bound): one round trip per wait, none per value. What it took is validated when the
    attempt ends (FINISH, see :meth:`finish_info`); a child attempt superseded after this
    reader took its values hands this attempt back at once (a retry reads again).
    """

    def __init__(
        self,
        transitions: Transitions,
        blocking_conn: redis.Redis,
        run_id: str,
        task_id: str,
        attempt: int,
        n_children: int,
        *,
        max_bytes: int,
        where: str,
        waits: Waits | None = None,
        fence: str | None = None,
        shared: SharedReader | None = None,
    ) -> None:
        self.transitions = transitions
        self.blocking_conn = blocking_conn
        self.shared = shared
        self.run_id, self.task_id, self.attempt = run_id, task_id, attempt
        self.fence = fence or str(attempt)
        self.n_children = n_children
        self.max_bytes = max_bytes
        self.where = where
        self.waits: Waits = waits or NoWaits()
        self.key = keys.channel(run_id, task_id)
        #: Values taken from the channel so far (``processed["consumed"]``).
        self.consumed = 0
        #: Child -> the attempt whose values this reader took; children whose end it read.
        self.took: dict[str, int] = {}
        self.ended: set[str] = set()
        #: Set once ACK refused this attempt.
        self.fenced = False

    def __iter__(self) -> Iterator[Any]:
        return self.values()

    def finish_info(self) -> tuple[int, bytes]:
        """(consumed, took) for FINISH (``Writer.finish_args``), which checks that every
        child attempt in ``took`` is still current."""
        took = self.took
        blob = codec.dumps([x for c, a in took.items() for x in (c, a)]) if took else b""
        return self.consumed, blob

    def values(self) -> Iterator[Any]:
        """The children's values in arrival order; UpstreamFailed if one failed for good."""
        if self.n_children == 0:
            return
        took, ended = self.took, self.ended
        attempts: dict[str, int] | None = None
        after = "0-0"
        read = 0
        loads, max_bytes = codec.loads, self.max_bytes * 2
        while True:
            first = attempts is None
            status, info, entries = self._ack_and_read(read, first, after)
            if status != "OK":
                self._raise_fenced(*info)
            if first:
                attempts = info
            assert attempts is not None
            for entry_id, f in entries:
                after = entry_id
                child = f[b"c"].decode()
                a = int(f[b"a"])
                value = f[b"k"] == b"v"
                if value:
                    read += int(f[b"n"])
                current = attempts.get(child, 1)
                if a != current:
                    if a < current:
                        continue  # an attempt superseded before: void
                    if child in took or child in ended:
                        self._superseded(child, current)
                    attempts[child] = a  # retried before it sent anything
                if value:
                    values = loads(f[b"v"], max_bytes)
                    took[child] = a
                    self.consumed += len(values)
                    yield from values
                else:
                    ended.add(child)
            if len(ended) >= self.n_children:
                return

    def _ack_and_read(self, read: int, first: bool, after: Any) -> tuple[str, Any, Any]:
        """ACK + XREAD in one round trip; an empty channel is waited on up to 1 s (off the
        CPU slot): in an XREAD BLOCK of its own, or in the worker's shared read."""
        if self.shared is not None:
            status, info, entries = ride_through(
                self.transitions.ack_and_read,
                self.transitions.conn,
                self.run_id,
                self.task_id,
                self.fence,
                read,
                self.consumed,
                first,
                after,
                READ_COUNT,
                None,
            )
            if status != "OK" or entries:
                return status, info, entries
            self.waits.begin_wait()
            try:
                return status, info, self.shared.wait(self.key, codec.text(after), READ_COUNT, 1.0)
            finally:
                self.waits.end_wait()
        self.waits.begin_wait()
        try:
            reply: tuple[str, Any, Any] = ride_through(
                self.transitions.ack_and_read,
                self.blocking_conn,
                self.run_id,
                self.task_id,
                self.fence,
                read,
                self.consumed,
                first,
                after,
                READ_COUNT,
                1000,
            )
            return reply
        finally:
            self.waits.end_wait()

    def _superseded(self, child: str, attempt: int) -> None:
        """The reader took values (or the end) of ``child``'s ``attempt``, and a later attempt
        of that child has written since: this attempt of the parent must start over."""
        self.fenced = True
        ride_through(
            self.transitions.fail,
            self.run_id,
            self.task_id,
            self.fence,
            "handback",
            f"attempt {self.attempt} of task {self.task_id} read values "
            f"of attempt {attempt} of child {child}, superseded; retried",
            0,
            0,
        )
        raise Fenced(
            self.where,
            f"attempt {attempt} of child {child} was superseded after this attempt read its values",
        )

    def _raise_fenced(self, state: str, error: str, upstream: str) -> None:
        self.fenced = True
        if state == TaskState.FAILED and upstream:
            # the script's error text is "UpstreamFailed: child task C failed: <C's error>"
            raise UpstreamFailed(
                upstream, error.removeprefix(f"UpstreamFailed: child task {upstream} failed: ")
            )
        raise Fenced(self.where, f"ACK refused: attempt {self.attempt} is no longer current")
