"""What a running task talks to: its results channel (emit) and its children's (results).

Emits are buffered and sent in batches through the EMIT script (fenced by attempt,
de-duplicated by sequence number, bounded by the channel cap: FULL means wait, never drop).
``results()`` reads through the READ script, which keeps only values of each child's current
attempt and records what was consumed, so a parent never sees a failed attempt's values.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

import msgpack
import redis

from plankton import codec, keys
from plankton.errors import Fenced, UpstreamFailed
from plankton.states import TaskState
from plankton.task import TaskContext

if TYPE_CHECKING:  # pragma: no cover
    from plankton.transitions import Claimed

    from .executor import Executor

#: Most values per emitted batch, and bytes, before a batch is sent. Each batch costs an
#: EMIT round trip, a wake-up of the parent and its READ; 1,000 values per batch left a
#: 100,000-value stream at 305 ms and 4,096 took it to 210 ms (benchmarks/README.md).
BATCH_VALUES = 4096
BATCH_BYTES = 256 * 1024


def batch_values(cap: int) -> int:
    """Values per batch under a channel cap: at most half the cap, so a producer can fill
    one batch while its parent reads the previous one, and unread values stay within
    ``cap + batch_values(cap)`` (the final batch, appended by FINISH, does not wait)."""
    return min(BATCH_VALUES, max(1, cap // 2))

#: A buffered value waits at most this long before the flusher sends it (s).
FLUSH_AFTER = 0.01
_array_header = msgpack.Packer().pack_array_header
_pack = msgpack.Packer(use_bin_type=True, datetime=True).pack
_monotonic = time.monotonic
#: Values emit() buffers as they are and packs with their batch, in one C call: ASCII str
#: up to this length (packing it cannot fail, and it adds at most BATCH_VALUES * (SMALL + 9)
#: bytes to a batch), 64-bit ints, floats, None and bools. Anything else, bytes included, is
#: checked and encoded at once, so a bad value fails the emit() that gave it and a container
#: changed after emit() is sent as it was; a ``bytes`` item of the buffer is therefore
#: always a value encoded already, joined into its batch as it is.
SMALL = 64
_TINY = frozenset((float, type(None), bool))
_INT_MIN, _INT_END = -(2**63), 2**64

#: Channel entries read per READ call.
READ_COUNT = 200

log = logging.getLogger(__name__)


def ride_through(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, retried while Redis is unreachable (restart, failover, partition).

    Every call made through here is idempotent or fenced (EMIT de-duplicates by sequence
    number; READ from the same checkpoint returns the same entries; FINISH of an attempt
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


class SlotHold:
    """One claim on a worker's CPU slots. A task gives its slot back when it starts waiting
    on a channel and does not queue for it again when the wait ends: a consumer that was
    fed always gets to run, so a tree can never deadlock on slots."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self.slots = slots
        self.held = False

    def acquire(self) -> None:
        if not self.held:
            self.slots.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()


class Runtime(TaskContext):
    """The context of one attempt of one task inside a worker."""

    def __init__(self, executor: "Executor", claim: "Claimed", hold: "SlotHold") -> None:
        self.executor = executor
        self.hold = hold
        self.claim = claim
        self.engine = executor.engine
        self.cap = executor.settings.channel_cap
        self.batch_values = batch_values(self.cap)
        self.max_bytes = executor.settings.max_value_bytes
        self.where = f"{claim.name} (run {claim.run_id}, task {claim.task_id})"
        self.processed = {"emitted": 0, "consumed": 0}
        self.lock = threading.Lock()
        self.buffer: list[Any] = []
        self.buffer_bytes = 0
        #: Items of the buffer encoded at emit() (bytes); 0: pack the list in one call.
        self.packed_items = 0
        #: A limit under any small scalar's size sends every value through the full check.
        self.small_ok = self.max_bytes >= 2 * SMALL
        self.buffer_since = 0.0
        self.seq = 0
        self.pending: tuple[int, int, bytes] | None = None
        self.fenced = False
        self.waiting = False
        self.thread: threading.Thread | None = None
        self.deadline: float | None = None
        self.log_lines: list[bytes] = []

    # -- emit ----------------------------------------------------------------------------
    def emit(self, value: Any) -> None:
        # The hot path of a stream: small immutable scalars are buffered as they are (see
        # SMALL), then an uncontended lock (the flusher thread only tries it without waiting).
        kind = type(value)
        if ((kind is str and len(value) <= SMALL and value.isascii())
                or kind in _TINY or (kind is int and _INT_MIN <= value < _INT_END)) \
                and self.small_ok:
            item, size = value, 0
        else:
            item = codec.check_value(value, self.where, self.max_bytes)
            size = len(item)
        lock = self.lock
        lock.acquire()
        try:
            buffer = self.buffer
            if not buffer:
                self.buffer_since = _monotonic()
            buffer.append(item)
            if size:
                self.packed_items += 1
                size = self.buffer_bytes = self.buffer_bytes + size
            if len(buffer) >= self.batch_values or size >= BATCH_BYTES or self.pending is not None:
                self._flush_locked(block=True)
        finally:
            lock.release()

    @property
    def processed(self) -> dict[str, int]:
        """Emitted counts every value handed to emit(), buffered or sent."""
        return {"emitted": self.seq_values + len(self.buffer), "consumed": self.consumed}

    @processed.setter
    def processed(self, value: dict[str, int]) -> None:
        self.seq_values, self.consumed = value["emitted"], value["consumed"]

    def _take_batch(self) -> None:
        """Move the buffer into ``pending`` as one msgpack array (items are encoded already)."""
        buffer = self.buffer
        n = len(buffer)
        if self.packed_items:
            blob = _array_header(n) + b"".join(
                item if type(item) is bytes else _pack(item) for item in buffer)
        else:
            blob = _pack(buffer)        # only small scalars: one C call for the batch
        self.buffer, self.buffer_bytes, self.packed_items = [], 0, 0
        self.seq += 1
        self.pending = (self.seq, n, blob)
        self.seq_values += n

    def flush(self) -> None:
        """Send buffered values; waits (never drops) while the parent's channel is full."""
        with self.lock:
            self._flush_locked(block=True)

    def flush_if_old(self, now: float) -> None:
        """Flusher thread: send a batch that waited long enough; never blocks on FULL."""
        if (self.buffer or self.pending) and not self.fenced \
                and now - self.buffer_since >= FLUSH_AFTER and self.lock.acquire(False):
            try:
                self._flush_locked(block=False)
            except Fenced:
                pass
            finally:
                self.lock.release()

    def _flush_locked(self, block: bool) -> None:
        if not self._send_pending(block):
            return
        if self.buffer:
            self._take_batch()
            self._send_pending(block)

    def _send_pending(self, block: bool) -> bool:
        """Send the pending batch; True when nothing is left pending."""
        wait = 0.001
        blocked = False
        try:
            while self.pending is not None:
                seq, n, blob = self.pending
                args = (self.claim.run_id, self.claim.parent, self.claim.task_id,
                        self.claim.attempt, seq, n, blob, self.cap)
                if block:
                    reply = ride_through(self.engine.emit, *args)
                else:
                    try:
                        reply = self.engine.emit(*args)
                    except (redis.ConnectionError, redis.TimeoutError):
                        return False      # the flusher never waits on Redis; the task will
                if reply in ("OK", "DUP"):
                    self.pending = None
                    return True
                if reply == "FENCED":
                    self.fenced = True
                    raise Fenced(self.where)
                if not block:
                    return False
                if not blocked:
                    self.hold.release()
                    blocked = self.waiting = True
                time.sleep(wait)
                wait = min(wait * 2, 0.05)
            return True
        finally:
            if blocked:
                self.waiting = False

    def final_batch(self) -> tuple[int, int, bytes]:
        """What the FINISH script appends: the last batch (pending ones are sent first)."""
        with self.lock:
            self._send_pending(block=True)
            if not self.buffer:
                return self.seq + 1, 0, b""
            self._take_batch()
            assert self.pending is not None
            batch, self.pending = self.pending, None
            return batch

    # -- results -------------------------------------------------------------------------
    def results(self) -> Iterator[Any]:
        claim = self.claim
        if claim.n_children == 0:
            return
        ended: set[str] = set()
        after = "0-0"
        channel = keys.channel(claim.run_id, claim.task_id)
        while True:
            status, last, blobs, ends = ride_through(self.engine.read, claim.run_id,
                                                     claim.task_id, claim.attempt, after,
                                                     READ_COUNT)
            if status != "OK":
                self._raise_fenced(last, blobs, ends)
            moved = last != after
            after = last
            for blob in blobs:
                values = codec.loads(blob, self.max_bytes * 2)
                self.consumed += len(values)
                yield from values
            ended.update(ends)
            if len(ended) >= claim.n_children:
                return
            if not moved:
                self._wait_for(channel, after)

    def _raise_fenced(self, state: str, error: str, upstream: str) -> None:
        self.fenced = True
        if state == TaskState.FAILED and upstream:
            # the script's error text is "UpstreamFailed: child task C failed: <C's error>"
            raise UpstreamFailed(upstream, error.removeprefix(
                f"UpstreamFailed: child task {upstream} failed: "))
        raise Fenced(self.where, f"attempt {self.claim.attempt} is no longer current")

    def _wait_for(self, channel: str, after: str) -> None:
        """Block until the channel has an entry after ``after`` (or 1 s), off the CPU slot."""
        self.hold.release()
        self.waiting = True
        try:
            self.executor.blocking_conn.xread({channel: after}, count=1, block=1000)
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.2)                 # the READ that follows rides the outage through
        finally:
            self.waiting = False

    # -- logs ----------------------------------------------------------------------------
    def log(self, level: int, message: str) -> None:
        line = codec.dumps([self.claim.task_id, int(time.time() * 1000),
                            logging.getLevelName(level), message])
        with self.lock:
            self.log_lines.append(line)

    def take_logs(self) -> list[bytes]:
        with self.lock:
            lines, self.log_lines = self.log_lines, []
        return lines
