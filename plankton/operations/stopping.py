"""A bound on how long a process takes to stop once asked to.

Every long-lived Plankton process (worker, scheduler, ``plankton up``) stops cleanly on
SIGTERM: it finishes or hands back its work and exits. Clean stops go through code that
can block on things outside the process (a task that keeps computing, Redis that stopped
answering, a library thread join such as rq/rq#1613's pub/sub hang), so the first signal
also arms a :class:`StopDeadline`: a daemon thread that, when the bound passes, runs a last
hand-back and ends the process with ``os._exit``. Daemon threads keep running while the
interpreter joins its other threads at exit, so the bound holds there too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["StopDeadline"]

log = logging.getLogger("plankton.stop")


class StopDeadline:
    """Ends the process ``seconds`` after :meth:`arm`, unless it has ended by then.

    ``last_words`` runs first (best effort: e.g. hand running attempts back for an immediate
    retry); its own failure or hang cannot stop the exit, which comes at most one second
    after the bound.
    """

    def __init__(
        self, seconds: float, role: str, last_words: Callable[[], None] | None = None, code: int = 0
    ) -> None:
        self.seconds = max(0.0, seconds)
        self.role = role
        self.last_words = last_words
        self.code = code
        self.armed_at: float | None = None
        self._lock = threading.Lock()

    def arm(self) -> None:
        """Start the countdown (idempotent: a second signal does not extend it)."""
        with self._lock:
            if self.armed_at is not None:
                return
            self.armed_at = time.monotonic()
        threading.Thread(target=self._expire, name="stop-deadline", daemon=True).start()

    def remaining(self) -> float | None:
        """Seconds left before the forced exit, or None if not armed."""
        if self.armed_at is None:
            return None
        return max(0.0, self.armed_at + self.seconds - time.monotonic())

    def _expire(self) -> None:
        time.sleep(self.seconds)
        log.error(
            "%s did not stop within %.1f s (PLANKTON_STOP_GRACE); forcing the exit",
            self.role,
            self.seconds,
        )
        if self.last_words is not None:
            done = threading.Event()

            def speak() -> None:
                try:
                    self.last_words()  # type: ignore[misc]
                except Exception:
                    log.exception("%s: last hand-back failed", self.role)
                finally:
                    done.set()

            threading.Thread(target=speak, name="stop-last-words", daemon=True).start()
            done.wait(1.0)
        logging.shutdown()
        os._exit(self.code)
