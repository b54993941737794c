"""Redis connections: one place that decides timeouts, retries and how errors read.

redis-py 8 retries failed commands 10 times and sets a 5 s socket timeout. Blocking reads
(dequeue, channel waits) need a longer timeout, and every Plankton write is idempotent (Lua
compare-and-set with attempt and sequence numbers), so retries cannot apply a write twice.
"""

from __future__ import annotations

import re
import time
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from .errors import ConnectionFailed

_AUTH = re.compile(r"(rediss?://)([^@/]*)@")

#: Socket timeout of connections that block (BLMOVE, XREAD BLOCK) (s); blocks stay shorter.
BLOCKING_SOCKET_TIMEOUT = 30.0


def redact(url: str) -> str:
    """The URL with any user:password replaced by ***, for messages and logs."""
    return _AUTH.sub(lambda m: f"{m.group(1)}***@", url)


def connect(url: str, *, blocking: bool = False, **kwargs: Any) -> redis.Redis:
    """A client for ``url`` that retries transient errors with jittered backoff.

    LOADING (Redis reading its AOF after a restart) is retried like a connection error.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries=8)
    options: dict[str, Any] = dict(
        retry=retry,
        retry_on_error=[redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError,
                        redis.exceptions.TimeoutError],
        socket_connect_timeout=5,
        socket_timeout=BLOCKING_SOCKET_TIMEOUT if blocking else 10,
        health_check_interval=30,
    )
    options.update(kwargs)
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConnectionFailed(f"bad Redis URL {redact(url)}: {exc}", redact(url)) from None


#: Longest time check() keeps trying an unreachable Redis (s).
CHECK_WITHIN = 8.0


def check(conn: redis.Redis, url: str, attempts: int = 5) -> None:
    """Ping Redis, retrying with backoff; ConnectionFailed with a clear message if it stays down.

    The client's own retries (8 per command, backoff up to 2 s) are off while checking:
    nested in these attempts they made an unreachable Redis take about 30 s to report.
    Gives up after ``attempts`` pings or CHECK_WITHIN seconds, whichever comes first."""
    saved = conn.get_retry()
    conn.set_retry(Retry(NoBackoff(), 0))
    try:
        _check(conn, url, attempts)
    finally:
        if saved is not None:
            conn.set_retry(saved)


def _check(conn: redis.Redis, url: str, attempts: int) -> None:
    delay = 0.2
    give_up = time.monotonic() + CHECK_WITHIN
    for attempt in range(1, attempts + 1):
        try:
            conn.ping()
            return
        except redis.exceptions.AuthenticationError as exc:
            raise ConnectionFailed(
                f"Redis at {redact(url)} refused the credentials: {exc}", redact(url)) from None
        except redis.exceptions.ResponseError as exc:
            raise ConnectionFailed(
                f"Redis at {redact(url)} refused the connection: {exc}", redact(url)) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if attempt == attempts or time.monotonic() + delay >= give_up:
                raise ConnectionFailed(
                    f"cannot reach Redis at {redact(url)} after {attempt} attempts: "
                    f"{redact(str(exc))}", redact(url)
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
