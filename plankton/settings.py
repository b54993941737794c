"""One settings object, resolved at start-up: flags, then PLANKTON_* variables, then defaults.

Nothing reads the environment at import time; processes build a Settings once and pass it
down. Every default is documented here with its unit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from plankton.errors import ConfigError

#: Redis URL used when neither --url nor PLANKTON_REDIS_URL is given.
DEFAULT_URL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class Settings:
    """Knobs shared by the scheduler, workers, API and clients.

    Times are in seconds unless the name says ``_ms``.
    """

    url: str = DEFAULT_URL
    imports: tuple[str, ...] = ()
    #: A running attempt whose lease is not renewed for this long is declared lost (ms).
    lease_ms: int = 20_000
    #: How often a worker renews the leases of the attempts it runs (s).
    heartbeat: float = 5.0
    #: How often the leading scheduler looks for lost leases, due retries and stuck tasks (s).
    reaper_interval: float = 1.0
    #: Unread values a results channel holds while its parent runs before producers wait.
    channel_cap: int = 10_000
    #: Largest emitted value, result or param, encoded (bytes): 64 MiB.
    max_value_bytes: int = 64 * 1024 * 1024
    #: Days a run's records are kept after it ends.
    keep_days: float = 30.0
    #: Days the results channels of a run that did not succeed are kept after it ends, so that
    #: ``rerun --from-failure`` can reuse the values of its succeeded tasks (0: drop them at
    #: once, like a succeeded run's; a resume then needs a full rerun). See docs/resume.md.
    resume_keep_days: float = 7.0
    #: Attempts a task may lose to worker loss, on top of its own ``retries``.
    max_lost: int = 3
    #: Exponential backoff of retries: first delay and cap (s).
    retry_base: float = 1.0
    retry_cap: float = 300.0
    #: Leader lease of the scheduler (ms).
    leader_lease_ms: int = 5_000
    #: Grace after a timeout or cancel before the worker process restarts itself (s).
    kill_grace: float = 2.0
    #: Bound on a clean stop (SIGTERM) of a worker, scheduler or ``plankton up`` (s): running
    #: tasks get this long to finish; then they are handed back for an immediate retry
    #: elsewhere and the process exits. An idle process exits at once.
    stop_grace: float = 10.0
    #: How many tasks a worker runs at once (tasks waiting on a channel do not count).
    concurrency: int = 1
    #: Redis connections a worker's task threads share (non-blocking commands; a thread
    #: waits for a free one). Waits on channels share one more connection (shared_read),
    #: dequeue and heartbeat a few more: a worker holds about this + 4, whatever it runs.
    worker_connections: int = 16
    #: Connect attempts before a command gives up on an unreachable Redis.
    connect_attempts: int = 5
    #: Most tasks one run may have: a DAG building more raises DagError while it builds.
    max_tasks: int = 1_000_000
    #: Which parents a worker runs itself when its task starts release them (no RQ trip):
    #: 1 (default) parents of parents; a leaf's consumer goes through RQ to a free worker, so
    #: it runs beside its producer, not under the same GIL; if the producer fills the channel
    #: before any worker took the consumer, the producer's worker starts it (the channel
    #: stays bounded); 2 all, at once (a worker alone does this too); 0 none (a producer then
    #: streams on unbounded until its consumer starts).
    claim_parents: int = 1
    #: Replicas that must hold a FINISH or a new run before it counts as done (``WAIT``
    #: after those writes, docs/ha.md): 0 off. Bounds what a failover can roll back.
    wait_replicas: int = 0
    #: Longest ``WAIT`` for those replicas (ms); past it the write stands, with a warning.
    wait_ms: int = 1000
    #: Webhook that gets a POST when any run fails (DAGs add their own with on_failure=).
    webhook_url: str = ""
    #: When set, webhooks carry ``X-Plankton-Signature: sha256=HMAC-SHA256(secret, body)``.
    webhook_secret: str = field(default="", repr=False)
    #: Delivery attempts of one webhook before it is given up (logged and counted).
    webhook_attempts: int = 10
    #: Backoff between webhook attempts: first delay (s), doubled each time, capped at 300 s.
    webhook_backoff: float = 2.0
    #: Timeout of one webhook POST (s).
    webhook_timeout: float = 10.0
    #: Base URL of the console, for the run link in webhooks (e.g. https://plankton.example).
    console_url: str = ""

    def with_(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_ENV: dict[str, str] = {
    "url": "PLANKTON_REDIS_URL",
    "imports": "PLANKTON_IMPORTS",
    "lease_ms": "PLANKTON_LEASE_MS",
    "heartbeat": "PLANKTON_HEARTBEAT",
    "reaper_interval": "PLANKTON_REAPER_INTERVAL",
    "channel_cap": "PLANKTON_CHANNEL_CAP",
    "max_value_bytes": "PLANKTON_MAX_VALUE_BYTES",
    "keep_days": "PLANKTON_KEEP_DAYS",
    "resume_keep_days": "PLANKTON_RESUME_KEEP_DAYS",
    "max_lost": "PLANKTON_MAX_LOST",
    "retry_base": "PLANKTON_RETRY_BASE",
    "retry_cap": "PLANKTON_RETRY_CAP",
    "leader_lease_ms": "PLANKTON_LEADER_LEASE_MS",
    "kill_grace": "PLANKTON_KILL_GRACE",
    "stop_grace": "PLANKTON_STOP_GRACE",
    "concurrency": "PLANKTON_CONCURRENCY",
    "connect_attempts": "PLANKTON_CONNECT_ATTEMPTS",
    "worker_connections": "PLANKTON_WORKER_CONNECTIONS",
    "claim_parents": "PLANKTON_CLAIM_PARENTS",
    "max_tasks": "PLANKTON_MAX_TASKS",
    "wait_replicas": "PLANKTON_WAIT_REPLICAS",
    "wait_ms": "PLANKTON_WAIT_MS",
    "webhook_url": "PLANKTON_WEBHOOK_URL",
    "webhook_secret": "PLANKTON_WEBHOOK_SECRET",
    "webhook_attempts": "PLANKTON_WEBHOOK_ATTEMPTS",
    "webhook_backoff": "PLANKTON_WEBHOOK_BACKOFF",
    "webhook_timeout": "PLANKTON_WEBHOOK_TIMEOUT",
    "console_url": "PLANKTON_CONSOLE_URL",
}


def _parse(name: str, var: str, text: str, kind: Any) -> Any:
    try:
        if name == "imports":
            return tuple(m.strip() for m in text.split(",") if m.strip())
        value: float
        if kind in (int, "int"):
            value = int(text)
        elif kind in (float, "float"):
            value = float(text)
        else:
            return text
    except ValueError:
        raise ConfigError(var, text, "expected a number") from None
    if value < 0:
        raise ConfigError(var, text, "must not be negative")
    return value


def load(env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """Resolve settings: explicit flags win over PLANKTON_* variables, which win over defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        var = _ENV.get(f.name)
        if var and env.get(var, "") != "":
            values[f.name] = _parse(f.name, var, env[var], f.type)
    for name, value in flags.items():
        if value is None or value == ():
            continue
        if name == "imports":
            value = tuple(m.strip() for item in value for m in item.split(",") if m.strip())
        values[name] = value
    return Settings(**values)
