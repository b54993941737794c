"""The one rule for "a worker is alive": its heartbeat was seen in the last three periods.

Workers beat into ``keys.WORKERS`` (a zset scored by the beat's ms) every ``heartbeat``
seconds. The scheduler (whether a run may start), the client (how to cut jobs), metrics
(``plankton_workers``), the console's workers page and a worker starting under a name seen
before all ask the same question; they ask it here.
"""

from __future__ import annotations

import time

import redis

from plankton import keys

#: Heartbeat periods a worker may miss before it is no longer counted alive.
MISSED_BEATS = 3


def stale_after_ms(heartbeat: float) -> float:
    """How old (ms) a worker's last beat may be while it still counts as alive."""
    return MISSED_BEATS * heartbeat * 1000


def alive_since_ms(heartbeat: float, now_ms: float) -> int:
    """The oldest beat (ms) that still counts as alive at ``now_ms``: a ZCOUNT lower bound."""
    return int(now_ms - stale_after_ms(heartbeat))


def is_alive(age_s: float, heartbeat: float) -> bool:
    """True if a worker whose last beat is ``age_s`` seconds old counts as alive."""
    return age_s * 1000 < stale_after_ms(heartbeat)


def live_workers(conn: redis.Redis, heartbeat: float, now: float | None = None) -> int:
    """Workers alive at ``now`` (epoch seconds; default the local clock)."""
    at = time.time() if now is None else now
    return int(conn.zcount(keys.WORKERS, alive_since_ms(heartbeat, at * 1000), "+inf"))
