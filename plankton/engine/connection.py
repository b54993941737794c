"""Redis connections: one place that parses URLs and decides timeouts, retries and errors.

redis-py 8 retries failed commands 10 times and sets a 5 s socket timeout. Blocking reads
(dequeue, channel waits) need a longer timeout, and every Plankton write is idempotent (Lua
compare-and-set with attempt and sequence numbers), so retries cannot apply a write twice.

Every process (worker, scheduler, API, ``plankton up``, the CLI) and ``pk.Client`` get their
connections from :func:`connect`, so every URL form below works everywhere, RQ included (it is
handed the same client):

- ``redis://[user:pw@]host:port/db`` and ``rediss://`` (TLS): redis-py's own forms;
- ``redis+sentinel://[user:pw@]host:26379,host:26380/MASTER/DB`` and ``rediss+sentinel://``
  (TLS to the sentinels and the master): the master named MASTER is found through the
  listed Sentinels (:func:`parse_sentinel`), and every connection asks them again after a
  failover. ``user:pw`` authenticate to the master; ``?sentinel_username=&sentinel_password=``
  to the sentinels, when they have a password of their own.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from plankton.engine import resp
from plankton.errors import ConnectionFailed

_AUTH = re.compile(r"(rediss?(?:\+sentinel)?://)([^@/]*)@")
_QUERY_SECRET = re.compile(r"((?:^|[?&])sentinel_password=)[^&#]*")
#: URL schemes that name Sentinels rather than a Redis server.
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
#: Port of a sentinel given without one.
SENTINEL_PORT = 26379
#: Timeouts of the connections to the sentinels themselves (s): a dead sentinel must not
#: hold up master discovery, which moves on to the next one.
SENTINEL_TIMEOUT = 2.0

#: One command packer for every connection (stateless); None without hiredis.
_PACKER = resp.packer()

#: Longest wait for a free connection of a bounded pool (s): far beyond any command.
POOL_WAIT = 60.0

#: Socket timeout of connections that block (BLMOVE, XREAD BLOCK) (s); blocks stay shorter.
BLOCKING_SOCKET_TIMEOUT = 30.0


def redact(url: str) -> str:
    """The URL with any user:password (and sentinel_password) replaced by ***."""
    return _QUERY_SECRET.sub(r"\1***", _AUTH.sub(lambda m: f"{m.group(1)}***@", url))


@dataclass(frozen=True)
class SentinelURL:
    """What a ``redis[s]+sentinel://`` URL says: where the sentinels are, which master, and
    the options of the connections to the master (``master_kwargs``: db, user, password, TLS
    and redis-py's query options) and to the sentinels (``sentinel_kwargs``)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    tls: bool
    master_kwargs: dict[str, Any] = field(default_factory=dict)
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)


def is_sentinel(url: str) -> bool:
    """True if ``url`` names Sentinels (``redis+sentinel://`` or ``rediss+sentinel://``)."""
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel(url: str) -> SentinelURL:
    """Parse ``redis[s]+sentinel://[user:pw@]host[:port][,host[:port]...]/MASTER[/DB][?opts]``.

    ``opts`` are redis-py's URL options (``ssl_ca_certs``, ``socket_timeout``, ...) for the
    master connections, plus ``sentinel_username`` and ``sentinel_password`` for the
    sentinels. TLS options apply to both. ConnectionFailed names what is wrong."""
    shown = redact(url)

    def bad(why: str) -> ConnectionFailed:
        return ConnectionFailed(
            f"bad Redis URL {shown}: {why} (expected redis+sentinel://[user:pw@]host:26379"
            f"[,host:port...]/MASTER[/DB], or rediss+sentinel:// for TLS)",
            shown,
        )

    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SENTINEL_SCHEMES:
        raise bad(f"scheme {scheme!r} is not a Sentinel scheme")
    tls = scheme.lower().startswith("rediss")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    sentinels = _sentinel_hosts(hostlist, bad)
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise bad("the master's name is missing")
    if len(parts) > 2:
        raise bad(f"too many path parts {'/'.join(parts)!r}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "socket_timeout": SENTINEL_TIMEOUT,
    }
    for key in ("sentinel_username", "sentinel_password"):
        if key in options:
            sentinel_kwargs[key.removeprefix("sentinel_")] = options.pop(key)
    if len(parts) == 2:
        if "db" in options:
            raise bad("the db is given twice (path and ?db=)")
        options["db"] = parts[1]
    # redis-py parses and converts the master's options (db, user, password, ssl_*, ...)
    auth = userinfo + "@" if userinfo else ""
    plain = f"{'rediss' if tls else 'redis'}://{auth}sentinel/?{urlencode(options)}"
    try:
        master_kwargs: dict[str, Any] = parse_url(plain)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise bad(str(exc)) from None
    for key in ("host", "port", "connection_class", "path"):
        master_kwargs.pop(key, None)
    if tls:
        master_kwargs["ssl"] = True
        sentinel_kwargs["ssl"] = True
        sentinel_kwargs.update({k: v for k, v in master_kwargs.items() if k.startswith("ssl_")})
    return SentinelURL(tuple(sentinels), parts[0], tls, master_kwargs, sentinel_kwargs)


def _sentinel_hosts(hostlist: str, bad: Any) -> list[tuple[str, int]]:
    """``host[:port],...`` (``[v6]:port`` too) as (host, port) pairs."""
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            raise bad("no sentinel host" if not sentinels else "an empty sentinel host")
        if item.startswith("["):  # [IPv6]:port
            host, _, tail = item[1:].partition("]")
            port_text = tail.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else SENTINEL_PORT
        except ValueError:
            raise bad(f"sentinel port {port_text!r} is not a number") from None
        if not host or not 0 < port < 65536:
            raise bad(f"bad sentinel address {item!r}")
        sentinels.append((host, port))
    return sentinels


_managers: dict[str, Sentinel] = {}
_managers_lock = threading.Lock()


def _sentinel_manager(url: str, parsed: SentinelURL) -> Sentinel:
    """One Sentinel manager per URL and process: its few sentinel connections are shared by
    every master client made from that URL (a worker makes three)."""
    with _managers_lock:
        manager = _managers.get(url)
        if manager is None:
            manager = _managers[url] = Sentinel(
                list(parsed.sentinels), sentinel_kwargs=parsed.sentinel_kwargs
            )
        return manager


def _connect_sentinel(url: str, options: dict[str, Any]) -> redis.Redis:
    parsed = parse_sentinel(url)
    kwargs = {**parsed.master_kwargs, **options}
    # a master demoted to a replica answers READONLY: SentinelManagedConnection turns that
    # (and the unblocking of a blocked read) into a ConnectionError, which is retried on the
    # new master, found by asking the sentinels again
    client: redis.Redis = _sentinel_manager(url, parsed).master_for(parsed.service, **kwargs)
    return client


def client_name(worker: str) -> str:
    """The name a worker's connections carry (``CLIENT LIST`` shows who holds what)."""
    return "plankton-worker:" + re.sub(r"\s", "_", worker)


def connect(
    url: str, *, blocking: bool = False, pool_size: int | None = None, **kwargs: Any
) -> redis.Redis:
    """A client for ``url`` that retries transient errors with jittered backoff.

    ``url`` is any form of the module docstring; a Sentinel URL gives a client of the
    current master that follows a failover (ConnectionFailed for a malformed URL).
    LOADING (Redis reading its AOF after a restart) is retried like a connection error.
    ``pool_size``: at most this many connections, a thread waiting for a free one (a
    worker's threads share one such client); redis-py's Sentinel pools cannot wait, so a
    Sentinel URL ignores it.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries=8)
    options: dict[str, Any] = dict(
        retry=retry,
        retry_on_error=[
            redis.exceptions.BusyLoadingError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        ],
        socket_connect_timeout=5,
        socket_timeout=BLOCKING_SOCKET_TIMEOUT if blocking else 10,
        health_check_interval=30,
    )
    if _PACKER is not None:
        options["command_packer"] = _PACKER  # hiredis packs whole commands (plankton.engine.resp)
    options.update(kwargs)
    if is_sentinel(url):
        return _connect_sentinel(url, options)
    try:
        if pool_size is not None:
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=pool_size, timeout=POOL_WAIT, **options
            )
            return redis.Redis(connection_pool=pool)
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
                f"Redis at {redact(url)} refused the credentials: {exc}", redact(url)
            ) from None
        except redis.exceptions.ResponseError as exc:
            raise ConnectionFailed(
                f"Redis at {redact(url)} refused the connection: {exc}", redact(url)
            ) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if attempt == attempts or time.monotonic() + delay >= give_up:
                raise ConnectionFailed(
                    f"cannot reach Redis at {redact(url)} after {attempt} attempts: "
                    f"{redact(str(exc))}",
                    redact(url),
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
