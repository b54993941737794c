"""The context of one running attempt inside a worker: its channel ends, logs and slot.

A task's ``emit()`` goes to a :class:`plankton.engine.channel.Writer` and its ``results()`` to a
:class:`plankton.engine.channel.Reader`; this module only ties them to the worker: a wait on a
channel gives the attempt's CPU slot back (:class:`SlotHold`), and log lines are kept until
the executor stores them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

import redis

from plankton import codec
from plankton.authoring.task import TaskContext
from plankton.engine.channel import Adopt, Reader, Writer
from plankton.engine.shared_read import SharedReader
from plankton.engine.transitions import Claimed, Transitions
from plankton.settings import Settings


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
    """The context of one attempt of one task inside a worker.

    The executor owns its lifecycle and reads only the attributes documented here:
    ``claim``, ``where``, ``writer`` (``due_at``, ``flush_if_old``, ``finish_args``,
    ``finish``), ``thread`` and ``deadline`` (set by the executor), ``waiting`` (the attempt
    waits on a channel, off its slot) and ``fenced``.
    """

    def __init__(
        self,
        claim: Claimed,
        transitions: Transitions,
        blocking_conn: redis.Redis,
        settings: Settings,
        hold: SlotHold,
        shared: SharedReader | None = None,
        adopt: Adopt | None = None,
    ) -> None:
        """``adopt``: the executor's, which starts this attempt's parent here when it has
        waited ``scripts.ADOPT_AFTER_MS`` in RQ (``channel.Adopt``)."""
        self.claim = claim
        self.hold = hold
        self.where = f"{claim.name} (run {claim.run_id}, task {claim.task_id})"
        self.writer = Writer(
            transitions,
            claim.run_id,
            claim.parent,
            claim.task_id,
            claim.attempt,
            cap=settings.channel_cap,
            max_bytes=settings.max_value_bytes,
            where=self.where,
            waits=self,
            fence=claim.fence,
            adopt=adopt if claim.parent else None,
        )
        self.reader = Reader(
            transitions,
            blocking_conn,
            claim.run_id,
            claim.task_id,
            claim.attempt,
            claim.n_children,
            max_bytes=settings.max_value_bytes,
            where=self.where,
            waits=self,
            fence=claim.fence,
            shared=shared,
        )
        self.waiting = False
        self.thread: threading.Thread | None = None
        self.deadline: float | None = None
        self.log_lines: list[bytes] = []
        self._log_lock = threading.Lock()
        self._fenced = False

    # -- what the task calls -------------------------------------------------------------
    def emit(self, value: Any) -> None:
        self.writer.emit(value)

    def results(self) -> Iterator[Any]:
        return self.reader.values()

    def flush(self) -> None:
        """Send what emit() buffered (tests use it to order events)."""
        self.writer.flush()

    @property
    def processed(self) -> dict[str, int]:
        """Emitted counts every value handed to emit(), buffered or sent."""
        return {"emitted": self.writer.emitted, "consumed": self.reader.consumed}

    def log(self, level: int, message: str) -> None:
        line = codec.dumps(
            [self.claim.task_id, int(time.time() * 1000), logging.getLevelName(level), message]
        )
        with self._log_lock:
            self.log_lines.append(line)

    def take_logs(self) -> list[bytes]:
        with self._log_lock:
            lines, self.log_lines = self.log_lines, []
        return lines

    # -- channel waits (channel.Waits) ---------------------------------------------------
    def begin_wait(self) -> None:
        self.hold.release()
        self.waiting = True

    def end_wait(self) -> None:
        self.waiting = False

    # -- fencing -------------------------------------------------------------------------
    @property
    def fenced(self) -> bool:
        """The attempt was superseded (its owner said so, or a channel end was refused)."""
        return self._fenced or self.writer.fenced or self.reader.fenced

    @fenced.setter
    def fenced(self, value: bool) -> None:
        self._fenced = value
        self.writer.fenced = value
