"""WAIT for replicas after the writes that must survive a failover (PLANKTON_WAIT_REPLICAS).

Replication is asynchronous: a master may acknowledge a write and die before a replica has
it; the promoted replica then lacks it (a rollback, docs/ha.md). The engine survives
rollbacks, but a lost FINISH re-runs an attempt and a lost submit loses a run the client was
told exists. With ``wait_replicas`` N > 0 those writes are followed by ``WAIT N wait_ms`` on
the same connection (WAIT covers the writes of the connection it is sent on), which
returns once N replicas hold them. A replica that does not answer in time is logged, not
raised: the write is on the master, and work goes on without the extra guarantee.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from plankton import keys

log = logging.getLogger("plankton.durable")

_warned_at = -1e9


def short(acked: Any, want: int, what: str) -> None:
    """Log (at most once a minute) that ``what`` reached fewer replicas than ``want``."""
    global _warned_at
    if int(acked) >= want:
        return
    now = time.monotonic()
    if now - _warned_at >= 60:
        _warned_at = now
        log.warning(
            "%s reached %s of %d replicas within the WAIT timeout "
            "(PLANKTON_WAIT_REPLICAS): a failover now could roll it back",
            what,
            acked,
            want,
        )


def add_wait(pipe: Any, replicas: int, timeout_ms: int) -> None:
    """Queue ``WAIT`` at the end of ``pipe`` (a pipeline holds one connection: it covers
    the pipeline's writes)."""
    pipe.execute_command("WAIT", replicas, timeout_ms)


def settle(conn: redis.Redis, replicas: int, timeout_ms: int, what: str) -> None:
    """WAIT for writes already made, maybe on other connections of ``conn``'s pool: a
    PUBLISH (replicated, no key) gives this connection a write later than theirs, and WAIT
    on it covers them all (Redis replicates in order). One round trip."""
    if replicas <= 0:
        return
    pipe = conn.pipeline(transaction=False)
    pipe.publish(keys.DURABLE, b"")
    add_wait(pipe, replicas, timeout_ms)
    short(pipe.execute()[-1], replicas, what)
